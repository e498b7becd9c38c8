//! A power-lookahead chain's steps: a token's candidate request, its rollouts and the draw
//! ([`LookaheadState`] holds the token in progress).

use super::*;

impl ChainState {
    /// The pending request of a power-lookahead chain: the next token's candidates, or the
    /// pending rollout after its candidate.
    pub(super) fn lookahead_request<'a>(
        &'a self,
        la: &'a LookaheadState,
        seed: u64,
    ) -> Request<'a> {
        let config = self.config.lookahead().expect("a lookahead configuration");
        let base = Request {
            prefix: &self.sequence,
            prompt_len: self.prompt_len,
            max_tokens: 1,
            temperature: self.config.temperature(),
            top_k: self.config.top_k(),
            seed,
            candidates: config.candidates,
        };
        if la.pending_rollout().is_none() {
            return base;
        }
        // The rollout continues after the candidate, to the end of the completion or H tokens.
        let left = self.config.max_new_tokens() as usize - (self.completion_len() + 1);
        let max_tokens = config.horizon.map_or(left, |h| (h as usize).min(left));
        Request {
            prefix: &la.prefix,
            max_tokens: max_tokens as u32,
            candidates: 0,
            ..base
        }
    }

    /// power-lookahead enters block `block_idx`, or finishes when the completion is complete.
    pub(super) fn lookahead_start_block(&mut self, block_idx: u32) {
        let complete = self.ends_with_eos
            || self.completion_len() >= self.config.max_new_tokens() as usize
            || block_idx >= self.config.n_blocks();
        if complete {
            self.phase = Phase::Finished;
            return;
        }
        self.stats.blocks.push(BlockStats::default());
        self.lookahead_start_token(block_idx);
    }

    /// power-lookahead starts the next token: its candidate request, with a fresh seed.
    pub(super) fn lookahead_start_token(&mut self, block_idx: u32) {
        let la = self.lookahead.as_mut().expect("a lookahead chain");
        la.clear_step();
        let seed = self.rng.next_u64();
        self.phase = Phase::Extend { block_idx, seed };
    }

    /// power-lookahead consumes the answer to its pending request: the candidates (then the seeds
    /// of every rollout are drawn), or a rollout; after the last rollout, the token is drawn.
    pub(super) fn lookahead_advance(&mut self, block_idx: u32, g: Generation) -> Advance {
        let config = *self.config.lookahead().expect("a lookahead configuration");
        let alpha = self.config.alpha().get();
        let la = self.lookahead.as_mut().expect("a lookahead chain");
        let stats = self
            .stats
            .lookahead
            .get_or_insert_with(LookaheadStats::default);
        if la.candidates.is_empty() {
            la.candidates = g.candidates;
            // A candidate that ends the completion, or fills its budget, has ζ = 1 exactly.
            let fills =
                self.sequence.len() - self.prompt_len + 1 >= self.config.max_new_tokens() as usize;
            for i in 0..la.candidates.len() {
                if fills || la.is_terminal(la.candidates[i].0) {
                    stats.exact_candidates += 1;
                    continue;
                }
                for _ in 0..config.rollouts {
                    la.rollouts.push((i as u32, self.rng.next_u64()));
                }
            }
        } else {
            la.log_w.push(
                g.log_p
                    .iter()
                    .zip(&g.log_q)
                    .map(|(lp, lq)| alpha * lp - lq)
                    .sum(),
            );
            stats.rollouts += 1;
            stats.rollout_tokens += g.tokens.len() as u64;
        }
        if let Some((_, seed)) = la.pending_rollout() {
            la.refresh_prefix(&self.sequence);
            self.phase = Phase::Extend { block_idx, seed };
            return Advance {
                accepted: None,
                block_finished: None,
                finished: false,
            };
        }
        let log_p: Vec<f64> = la.candidates.iter().map(|&(_, lp)| lp).collect();
        let (probs, clipped) = candidate_probabilities(
            alpha,
            &log_p,
            &la.weights_by_candidate(),
            config.jackknifed(),
        );
        stats.clipped += u64::from(clipped);
        stats.tokens += 1;
        let chosen = pick(&probs, self.rng.uniform());
        let (token, lp) = la.candidates[chosen];
        self.ends_with_eos = la.is_terminal(token);
        la.clear_step();
        self.sequence.push(token);
        self.log_p.push(lp);
        self.log_q.push(probs[chosen].ln());
        let len = self.completion_len();
        if self.ends_with_eos || len >= self.config.block_limit(block_idx) as usize {
            self.lookahead_start_block(block_idx + 1);
            return Advance {
                accepted: None,
                block_finished: Some(block_idx),
                finished: self.phase == Phase::Finished,
            };
        }
        self.lookahead_start_token(block_idx);
        Advance {
            accepted: None,
            block_finished: None,
            finished: false,
        }
    }
}
