//! The invariants a decoded checkpoint must satisfy.

use super::*;

impl ChainState {
    /// Checks the invariants that a decoded checkpoint must satisfy.
    pub(super) fn check(&self) -> Result<(), String> {
        self.config.check().map_err(|e| e.to_string())?;
        match (self.config.smc(), &self.smc) {
            (Some(config), Some(smc)) => smc.check(
                config,
                &self.sequence[..self.prompt_len.min(self.sequence.len())],
            )?,
            (None, None) => {}
            _ => return Err("the particle state does not match the method".to_string()),
        }
        match (self.config.lookahead(), &self.lookahead) {
            (Some(config), Some(la)) => {
                la.check(config)?;
                let len = self.completion_len_checked()?;
                if la.pending_rollout().is_some()
                    && len + 1 >= self.config.max_new_tokens() as usize
                {
                    return Err("a lookahead rollout is pending with no budget left".to_string());
                }
                if !la.candidates.is_empty() && !matches!(self.phase, Phase::Extend { .. }) {
                    return Err(
                        "lookahead candidates are kept but no request is pending".to_string()
                    );
                }
            }
            (None, None) => {}
            _ => return Err("the lookahead state does not match the method".to_string()),
        }
        let len = self.completion_len_checked()?;
        if self.log_p.len() != len || self.log_q.len() != len {
            return Err(format!(
                "completion has {len} tokens but {} log p and {} log q values",
                self.log_p.len(),
                self.log_q.len()
            ));
        }
        // The values a generation must have had to be accepted (see `check_generation`).
        for (which, values) in [("log p", &self.log_p), ("log q", &self.log_q)] {
            if let Some((i, v)) = values
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v <= LOG_PROB_SLACK))
            {
                return Err(format!(
                    "{which} of completion token {i} is {v}, not a finite log-probability <= 0"
                ));
            }
        }
        let cfg = &self.config;
        if len > cfg.max_new_tokens() as usize {
            return Err(format!(
                "completion has {len} tokens, more than max_new_tokens {}",
                cfg.max_new_tokens()
            ));
        }
        match self.phase {
            Phase::Extend { block_idx, .. } | Phase::Propose { block_idx, .. }
                if block_idx >= cfg.n_blocks() =>
            {
                Err(format!(
                    "block {block_idx} is past the last block {}",
                    cfg.n_blocks() - 1
                ))
            }
            Phase::Propose {
                block_idx,
                step_idx,
                cut,
                ..
            } if self.smc.is_some() => match (&self.smc, cfg.smc()) {
                (Some(smc), Some(c)) => smc.check_move(
                    step_idx,
                    c.rejuvenation_steps,
                    cut,
                    cfg.block_limit(block_idx) as usize,
                ),
                _ => Err("the particle state does not match the method".to_string()),
            },
            Phase::Extend { .. } if self.smc.as_ref().is_some_and(|s| !s.moving.is_empty()) => {
                Err("particles are queued to move during an extension".to_string())
            }
            Phase::Extend { block_idx, .. } if len >= cfg.block_limit(block_idx) as usize => {
                Err(format!(
                    "an extension is pending but the completion already fills block {block_idx}"
                ))
            }
            Phase::Propose { cut, step_idx, .. }
                if cut as usize >= len || step_idx >= cfg.n_mcmc() =>
            {
                Err(format!(
                    "MCMC step {step_idx} cuts at {cut} of a {len}-token completion"
                ))
            }
            Phase::Propose { block_idx, .. } if len > cfg.block_limit(block_idx) as usize => Err(
                format!("a {len}-token completion exceeds block {block_idx}'s limit"),
            ),
            Phase::Extend { .. } if self.ends_with_eos => {
                Err("an extension is pending after EOS".to_string())
            }
            Phase::Extend { .. } | Phase::Propose { .. } if self.stats.blocks.is_empty() => {
                Err("a block is running but no block statistics exist".to_string())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn completion_len_checked(&self) -> Result<usize, String> {
        self.sequence
            .len()
            .checked_sub(self.prompt_len)
            .ok_or_else(|| "prompt_len is longer than the sequence".to_string())
    }
}
