//! The chain: a sans-IO state machine that runs one power-sampling chain, block by block.
//!
//! The chain emits a [`Request`] ("generate after this prefix"), its driver answers with a
//! [`Generation`], and [`Chain::advance`] consumes it. The whole state, RNG included, serializes to
//! a [`Checkpoint`]; a chain restored from one continues exactly as the original would have.

use serde::{Deserialize, Serialize};

use crate::accept::{Decision, Suffix, decide};
use crate::config::ValidConfig;
use crate::lookahead::{LookaheadState, LookaheadStats, candidate_probabilities, pick};
use crate::model::{Generation, LanguageModel, OwnedRequest, Request, TokenId};
use crate::rng::ChainRng;
use crate::smc::SmcState;
use crate::stats::{BlockStats, ChainOutput, ChainStats};

mod check;
mod lookahead;
mod smc;

/// Where a chain stands: which request it is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for the proposal to extend the completion to the block's length limit (for
    /// power-lookahead: for the pending candidate or rollout request of the next token).
    Extend {
        /// The block being built (0-based).
        block_idx: u32,
        /// Seed of the request.
        seed: u64,
    },
    /// Waiting for a proposed suffix that regenerates the completion from `cut` on.
    Propose {
        /// The block being refined (0-based).
        block_idx: u32,
        /// The MCMC step within the block (0-based).
        step_idx: u32,
        /// The first regenerated position of the completion.
        cut: u32,
        /// Seed of the request.
        seed: u64,
    },
    /// Done: [`Chain::output`] holds the result.
    Finished,
}

/// Where a chain is, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Current block (0-based); equals `n_blocks` once finished.
    pub block_idx: u32,
    /// Number of blocks.
    pub n_blocks: u32,
    /// Current MCMC step within the block (0-based).
    pub step_idx: u32,
    /// MCMC steps per block.
    pub n_mcmc: u32,
    /// Whether the chain is finished.
    pub finished: bool,
}

/// What one [`Chain::advance`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advance {
    /// For an MCMC step: whether the proposal was accepted.
    pub accepted: Option<bool>,
    /// The block that this generation completed, if any: a natural checkpoint.
    pub block_finished: Option<u32>,
    /// Whether the chain is now finished.
    pub finished: bool,
}

/// A generation that a chain cannot use. The chain is unchanged: retry the same request.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GenerationError {
    /// The chain was already finished.
    #[error("the chain is finished and takes no more generations")]
    Finished,
    /// No tokens came back.
    #[error("the model returned no tokens; a generation must hold at least one")]
    Empty,
    /// More tokens than asked for came back.
    #[error("the model returned {got} tokens, at most {max} were asked for")]
    TooMany {
        /// Tokens returned.
        got: usize,
        /// Tokens asked for.
        max: u32,
    },
    /// Fewer tokens than asked for, without EOS.
    #[error(
        "the model stopped after {got} of {max} tokens without EOS; only EOS may end a generation early"
    )]
    StoppedEarly {
        /// Tokens returned.
        got: usize,
        /// Tokens asked for.
        max: u32,
    },
    /// `log_p` or `log_q` has a different length than `tokens`.
    #[error("the model returned {tokens} tokens but {log_p} log p and {log_q} log q values")]
    LengthMismatch {
        /// Number of tokens.
        tokens: usize,
        /// Number of log p values.
        log_p: usize,
        /// Number of log q values.
        log_q: usize,
    },
    /// The candidate list of a request that asked for K candidates is not 1 to K distinct tokens
    /// with finite log p <= 0 in descending order, or a list came that nobody asked for.
    #[error("the model's candidate list is unusable: {0}")]
    BadCandidates(String),
    /// A log-probability that is not a finite number <= 0.
    #[error(
        "{which}[{index}] is {value}; log-probabilities of sampled tokens must be finite and <= 0"
    )]
    BadLogProb {
        /// `log_p` or `log_q`.
        which: &'static str,
        /// Position in the generation.
        index: usize,
        /// The value.
        value: f64,
    },
}

/// Tolerance for log-probabilities slightly above 0 from floating-point rounding.
const LOG_PROB_SLACK: f64 = 1e-6;

/// The chain's whole state; serialized, it is the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainState {
    config: ValidConfig,
    prompt_len: usize,
    /// Prompt followed by the current completion.
    sequence: Vec<TokenId>,
    /// Per completion token, log p under the base model.
    log_p: Vec<f64>,
    /// Per completion token, log q under the proposal.
    log_q: Vec<f64>,
    ends_with_eos: bool,
    rng: ChainRng,
    phase: Phase,
    stats: ChainStats,
    /// power-smc's particles; the chain's own completion stays empty until the returned particle
    /// is drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    smc: Option<SmcState>,
    /// power-lookahead's token in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lookahead: Option<LookaheadState>,
}

/// A versioned, serializable chain state. A checkpoint outlives a deploy: new versions are added
/// as new variants, and old ones keep loading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum Checkpoint {
    /// Format version 1.
    #[serde(rename = "1")]
    V1(ChainState),
}

/// A checkpoint that cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not valid checkpoint JSON (or a version this build does not know).
    #[error("checkpoint is not valid checkpoint JSON (known versions: 1): {0}")]
    Decode(#[from] serde_json::Error),
    /// Decoded, but its fields contradict each other.
    #[error("checkpoint is inconsistent: {0}")]
    Inconsistent(String),
}

impl Checkpoint {
    /// Encodes as JSON. Floats round-trip exactly.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a chain state always serializes")
    }

    /// Decodes and checks a checkpoint written by [`Checkpoint::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let checkpoint: Checkpoint = serde_json::from_slice(bytes)?;
        let Checkpoint::V1(state) = &checkpoint;
        state.check().map_err(CheckpointError::Inconsistent)?;
        Ok(checkpoint)
    }
}

/// One power-sampling chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    state: ChainState,
}

impl Chain {
    /// A new chain after `prompt`. Chains with the same `seed` and different `stream`s draw
    /// independent random numbers; the same (`seed`, `stream`) always gives the same chain.
    pub fn new(config: ValidConfig, prompt: &[TokenId], seed: u64, stream: u64) -> Chain {
        let rng = ChainRng::new(seed, stream);
        let smc = config.smc().map(|c| SmcState::new(c.particles, prompt));
        let lookahead = config.lookahead().map(|_| LookaheadState::default());
        let stats = ChainStats {
            lookahead: lookahead.as_ref().map(|_| LookaheadStats::default()),
            ..ChainStats::default()
        };
        let mut chain = Chain {
            state: ChainState {
                smc,
                lookahead,
                config,
                prompt_len: prompt.len(),
                sequence: prompt.to_vec(),
                log_p: Vec::new(),
                log_q: Vec::new(),
                ends_with_eos: false,
                rng,
                phase: Phase::Finished,
                stats,
            },
        };
        chain.state.start_block(0);
        chain
    }

    /// Restores a chain from a checkpoint.
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Result<Chain, CheckpointError> {
        let Checkpoint::V1(mut state) = checkpoint;
        state.check().map_err(CheckpointError::Inconsistent)?;
        if let Some(la) = &mut state.lookahead {
            la.refresh_prefix(&state.sequence);
        }
        Ok(Chain { state })
    }

    /// Gives a power-lookahead chain the tokens that end a completion (the model's EOS tokens):
    /// a candidate among them has ζ = 1 and no rollouts, and choosing it ends the completion.
    /// [`run`] sets them from [`LanguageModel::terminal_tokens`]; other drivers set them before
    /// the first [`Chain::advance`] (they are kept in the checkpoint). Without them no candidate
    /// ends the completion, which then always runs to `max_new_tokens`. Other methods ignore
    /// them.
    pub fn set_terminal_tokens(&mut self, tokens: &[TokenId]) {
        if let Some(la) = &mut self.state.lookahead {
            la.terminal = tokens.to_vec();
        }
    }

    /// The chain's state as a checkpoint. Any moment between [`Chain::advance`] calls is safe:
    /// a restored chain re-issues the pending request with the same seed.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::V1(self.state.clone())
    }

    /// The configuration the chain runs with.
    pub fn config(&self) -> &ValidConfig {
        &self.state.config
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    /// Where the chain is, for progress reports.
    pub fn position(&self) -> Position {
        let n_blocks = self.state.config.n_blocks();
        let n_mcmc = match self.state.config.smc() {
            Some(smc) => smc.rejuvenation_steps,
            None => self.state.config.n_mcmc(),
        };
        let (block_idx, step_idx, finished) = match self.state.phase {
            Phase::Extend { block_idx, .. } => (block_idx, 0, false),
            Phase::Propose {
                block_idx,
                step_idx,
                ..
            } => (block_idx, step_idx, false),
            Phase::Finished => (n_blocks, 0, true),
        };
        Position {
            block_idx,
            n_blocks,
            step_idx,
            n_mcmc,
            finished,
        }
    }

    /// Statistics so far.
    pub fn stats(&self) -> &ChainStats {
        &self.state.stats
    }

    /// The prompt the chain continues.
    pub fn prompt(&self) -> &[TokenId] {
        &self.state.sequence[..self.state.prompt_len]
    }

    /// The current completion (EOS included when it ended the completion).
    pub fn completion(&self) -> &[TokenId] {
        &self.state.sequence[self.state.prompt_len..]
    }

    /// Whether the chain is finished.
    pub fn is_finished(&self) -> bool {
        self.state.phase == Phase::Finished
    }

    /// The pending request, or `None` once the chain is finished. Calling it again before
    /// [`Chain::advance`] returns the same request.
    pub fn request(&self) -> Option<Request<'_>> {
        let s = &self.state;
        let (block_idx, cut, seed) = match s.phase {
            Phase::Extend { block_idx, seed } => (block_idx, s.completion_len(), seed),
            Phase::Propose {
                block_idx,
                cut,
                seed,
                ..
            } => (block_idx, cut as usize, seed),
            Phase::Finished => return None,
        };
        if let Some(la) = &s.lookahead {
            return Some(s.lookahead_request(la, seed));
        }
        let limit = s.config.block_limit(block_idx) as usize;
        let (sequence, from) = match &s.smc {
            Some(smc) => {
                let particle = &smc.particles[smc.current as usize];
                // An extension continues the whole particle; a move regenerates it from its cut.
                let from = match s.phase {
                    Phase::Propose { .. } => cut,
                    _ => particle.sequence.len() - s.prompt_len,
                };
                (&particle.sequence, from)
            }
            None => (&s.sequence, cut),
        };
        Some(Request {
            prefix: &sequence[..s.prompt_len + from],
            prompt_len: s.prompt_len,
            max_tokens: (limit - from) as u32,
            temperature: s.config.temperature(),
            top_k: s.config.top_k(),
            seed,
            candidates: 0,
        })
    }

    /// Every request the chain will make before its next block boundary that is already known:
    /// for power-smc, one per particle still to extend in this block, or, during a
    /// Metropolis-Hastings move after a resampling, one proposal per particle still to move; for
    /// power-lookahead, once a token's candidates are known, its rollouts still to run; each in
    /// the order [`Chain::advance`] takes their answers (so a driver may send them at once). For
    /// the other methods, and a lookahead token's candidate request, the pending request alone.
    pub fn requests(&self) -> Vec<OwnedRequest> {
        let Some(first) = self.request().map(|r| r.to_owned()) else {
            return Vec::new();
        };
        let s = &self.state;
        if let Some(la) = &s.lookahead {
            if la.candidates.is_empty() {
                return vec![first];
            }
            let base = &s.sequence;
            return la.rollouts[la.log_w.len()..]
                .iter()
                .map(|&(i, seed)| {
                    let mut prefix = Vec::with_capacity(base.len() + 1);
                    prefix.extend_from_slice(base);
                    prefix.push(la.candidates[i as usize].0);
                    OwnedRequest {
                        prefix,
                        seed,
                        ..first.clone()
                    }
                })
                .collect();
        }
        let Some(smc) = &s.smc else {
            return vec![first];
        };
        let block_idx = match s.phase {
            Phase::Extend { block_idx, .. } => block_idx,
            Phase::Propose { block_idx, .. } => {
                let limit = s.config.block_limit(block_idx) as usize;
                let moving = smc.moving.iter().map(|&(i, cut, seed)| {
                    let particle = &smc.particles[i as usize];
                    OwnedRequest {
                        prefix: particle.sequence[..s.prompt_len + cut as usize].to_vec(),
                        max_tokens: (limit - cut as usize) as u32,
                        seed,
                        ..first.clone()
                    }
                });
                return std::iter::once(first.clone()).chain(moving).collect();
            }
            Phase::Finished => unreachable!("a finished chain has no request"),
        };
        let limit = s.config.block_limit(block_idx) as usize;
        let queued = smc.queued.iter().map(|&(i, seed)| {
            let particle = &smc.particles[i as usize];
            OwnedRequest {
                prefix: particle.sequence.clone(),
                max_tokens: (limit - (particle.sequence.len() - s.prompt_len)) as u32,
                seed,
                ..first.clone()
            }
        });
        let mut all = vec![first.clone()];
        all.extend(queued);
        all
    }

    /// Consumes the model's answer to the pending request. An invalid generation leaves the
    /// chain unchanged.
    pub fn advance(&mut self, generation: Generation) -> Result<Advance, GenerationError> {
        let request = self.request().ok_or(GenerationError::Finished)?;
        validate_generation(&generation, request.max_tokens, request.candidates)?;
        Ok(self.state.advance(generation))
    }

    /// The result, once the chain is finished.
    pub fn output(&self) -> Option<ChainOutput> {
        self.is_finished().then(|| self.state.output())
    }
}

/// Replaces a completion (the prompt's tokens and the completion's, then the completion's log p
/// and log q) from completion position `cut` on with the generation; whether it now ends with EOS.
pub(crate) fn replace_suffix(
    (sequence, log_p, log_q): (&mut Vec<TokenId>, &mut Vec<f64>, &mut Vec<f64>),
    (prompt_len, cut): (usize, usize),
    g: &Generation,
) -> bool {
    sequence.truncate(prompt_len + cut);
    log_p.truncate(cut);
    log_q.truncate(cut);
    sequence.extend_from_slice(&g.tokens);
    log_p.extend_from_slice(&g.log_p);
    log_q.extend_from_slice(&g.log_q);
    g.eos
}

fn validate_generation(
    g: &Generation,
    max_tokens: u32,
    candidates: u32,
) -> Result<(), GenerationError> {
    let n = g.tokens.len();
    if n == 0 {
        return Err(GenerationError::Empty);
    }
    if g.log_p.len() != n || g.log_q.len() != n {
        return Err(GenerationError::LengthMismatch {
            tokens: n,
            log_p: g.log_p.len(),
            log_q: g.log_q.len(),
        });
    }
    if n > max_tokens as usize {
        return Err(GenerationError::TooMany {
            got: n,
            max: max_tokens,
        });
    }
    if !g.eos && n < max_tokens as usize {
        return Err(GenerationError::StoppedEarly {
            got: n,
            max: max_tokens,
        });
    }
    for (which, values) in [("log_p", &g.log_p), ("log_q", &g.log_q)] {
        if let Some((index, &value)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v <= LOG_PROB_SLACK))
        {
            return Err(GenerationError::BadLogProb {
                which,
                index,
                value,
            });
        }
    }
    validate_candidates(&g.candidates, candidates).map_err(GenerationError::BadCandidates)
}

/// A candidate list answers a request for `k` candidates: 1 to k distinct tokens, log p finite
/// and <= 0, descending; none when none were asked for.
fn validate_candidates(list: &[(TokenId, f64)], k: u32) -> Result<(), String> {
    if k == 0 {
        return match list.len() {
            0 => Ok(()),
            n => Err(format!("{n} candidates came back, none were asked for")),
        };
    }
    if list.is_empty() || list.len() > k as usize {
        return Err(format!(
            "{} candidates came back, 1 to {k} were asked for",
            list.len()
        ));
    }
    if let Some((t, lp)) = list
        .iter()
        .find(|(_, lp)| !(lp.is_finite() && *lp <= LOG_PROB_SLACK))
    {
        return Err(format!(
            "candidate {t} has log p {lp}, not a finite log-probability <= 0"
        ));
    }
    if let Some(w) = list.windows(2).find(|w| w[1].1 > w[0].1) {
        return Err(format!(
            "candidate {} (log p {}) follows candidate {} (log p {}); the list must descend",
            w[1].0, w[1].1, w[0].0, w[0].1
        ));
    }
    let mut ids: Vec<TokenId> = list.iter().map(|&(t, _)| t).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("candidate {} is listed twice", w[0]));
    }
    Ok(())
}

impl ChainState {
    fn completion_len(&self) -> usize {
        self.sequence.len() - self.prompt_len
    }

    /// Enters block `block_idx`: extend the completion to the block's limit, or go straight to
    /// its MCMC steps when it already ends with EOS or fills the limit.
    fn start_block(&mut self, block_idx: u32) {
        if self.smc.is_some() {
            self.smc_start_block(block_idx);
            return;
        }
        if self.lookahead.is_some() {
            self.lookahead_start_block(block_idx);
            return;
        }
        let cfg = &self.config;
        let single_sample = cfg.n_mcmc() == 0;
        let done_at_eos = self.ends_with_eos && (cfg.finish_on_eos() || single_sample);
        if block_idx >= cfg.n_blocks() || done_at_eos {
            self.phase = Phase::Finished;
            return;
        }
        self.stats.blocks.push(BlockStats::default());
        let limit = cfg.block_limit(block_idx) as usize;
        if !self.ends_with_eos && self.completion_len() < limit {
            let seed = self.rng.next_u64();
            self.phase = Phase::Extend { block_idx, seed };
        } else {
            self.start_step(block_idx, 0);
        }
    }

    /// Enters MCMC step `step_idx` of block `block_idx`, or the next block after the last step.
    /// Returns the block that finished, if one did.
    fn start_step(&mut self, block_idx: u32, step_idx: u32) -> Option<u32> {
        if step_idx >= self.config.n_mcmc() {
            self.start_block(block_idx + 1);
            return Some(block_idx);
        }
        let len = self.completion_len() as u32;
        debug_assert!(
            len >= 1,
            "a block's MCMC steps start from a non-empty completion"
        );
        let cut = self.rng.below(len);
        let seed = self.rng.next_u64();
        self.phase = Phase::Propose {
            block_idx,
            step_idx,
            cut,
            seed,
        };
        None
    }

    fn advance(&mut self, g: Generation) -> Advance {
        let n = g.tokens.len() as u64;
        self.stats.model_calls += 1;
        self.stats.tokens_generated += n;
        match (&self.smc, self.phase) {
            (Some(_), Phase::Extend { block_idx, .. }) => return self.smc_advance(block_idx, g),
            (
                Some(_),
                Phase::Propose {
                    block_idx,
                    step_idx,
                    cut,
                    ..
                },
            ) => return self.smc_move_advance((block_idx, step_idx, cut), g),
            _ => {}
        }
        if let (Some(_), Phase::Extend { block_idx, .. }) = (&self.lookahead, self.phase) {
            return self.lookahead_advance(block_idx, g);
        }
        match self.phase {
            Phase::Extend { block_idx, .. } => {
                self.replace_suffix(self.completion_len(), g);
                let block_finished = self.start_step(block_idx, 0);
                Advance {
                    accepted: None,
                    block_finished,
                    finished: self.phase == Phase::Finished,
                }
            }
            Phase::Propose {
                block_idx,
                step_idx,
                cut,
                ..
            } => {
                let cut = cut as usize;
                let decision = decide(
                    &self.config,
                    Suffix::new(
                        &self.log_p[cut..],
                        &self.log_q[cut..],
                        self.completion_len(),
                    ),
                    Suffix::new(&g.log_p, &g.log_q, cut + g.tokens.len()),
                );
                let accepted = match decision {
                    Decision::Always(accept) => accept,
                    Decision::LogRatio(log_a) => self.rng.uniform().ln() < log_a,
                };
                self.stats.proposals += 1;
                let block = self.stats.blocks.last_mut().expect("a block is open");
                block.proposals += 1;
                if accepted {
                    self.stats.acceptances += 1;
                    block.acceptances += 1;
                    self.replace_suffix(cut, g);
                }
                let block_finished = self.start_step(block_idx, step_idx + 1);
                Advance {
                    accepted: Some(accepted),
                    block_finished,
                    finished: self.phase == Phase::Finished,
                }
            }
            Phase::Finished => unreachable!("Chain::advance checks for a pending request"),
        }
    }

    /// Replaces the completion from position `cut` on with the generation.
    fn replace_suffix(&mut self, cut: usize, g: Generation) {
        let completion = (&mut self.sequence, &mut self.log_p, &mut self.log_q);
        self.ends_with_eos = replace_suffix(completion, (self.prompt_len, cut), &g);
    }

    fn output(&self) -> ChainOutput {
        ChainOutput {
            tokens: self.sequence[self.prompt_len..].to_vec(),
            log_p: self.log_p.iter().sum(),
            ends_with_eos: self.ends_with_eos,
            stats: self.stats.clone(),
            token_log_p: self.log_p.clone(),
        }
    }
}

/// Why [`run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + 'static> {
    /// The model failed.
    #[error("model failed: {0}")]
    Model(#[source] E),
    /// The model answered with a generation the chain cannot use.
    #[error("model returned an unusable generation: {0}")]
    Generation(#[from] GenerationError),
}

/// Drives a chain to the end with an in-process model.
///
/// A power-lookahead chain gets the model's [`LanguageModel::terminal_tokens`] first.
pub fn run<M: LanguageModel>(
    chain: &mut Chain,
    model: &M,
) -> Result<ChainOutput, RunError<M::Error>> {
    if chain.config().lookahead().is_some() {
        chain.set_terminal_tokens(&model.terminal_tokens());
    }
    while let Some(request) = chain.request() {
        let generation = model.generate(&request).map_err(RunError::Model)?;
        chain.advance(generation)?;
    }
    Ok(chain
        .output()
        .expect("a chain without a request is finished"))
}
