//! Power-SMC: sequential Monte Carlo towards p^α (Azizi et al., arXiv 2602.10273).
//!
//! N particles grow block by block from the proposal q ∝ p^(1/τ) (τ = 1/α unless set, the
//! variance-optimal prefix-only proposal), each weighted by p^α / q:
//! log w += α · log p(x_t | x<t) − log q(x_t | x<t) for every sampled token, EOS included. A
//! particle that ends with EOS keeps its weight and stops growing. At each block boundary the
//! effective sample size ESS = (Σw)² / Σw² is recorded, and when it falls below
//! `ess_threshold × N` the particles are resampled (systematic by default) and their weights
//! reset. At the end one particle, drawn by its final weight, is the chain's completion.
//!
//! Resample-move (`rejuvenation_steps` R): after each resampling every particle takes R
//! Metropolis-Hastings moves with the MH method's block kernel (and its acceptance ratio, from
//! [`crate::accept`]) at the block's exponent and limit, which leaves the block's intermediate
//! target invariant; the weights stay equal.
//!
//! Annealing (`alpha_schedule`): block k targets p(x_{1:T_k})^{α_k}, α_k rising from 1 to α over
//! the first `anneal_blocks` blocks. Entering block k every particle's log weight gains
//! (α_k − α_{k−1}) · log p(x) (EOS-ended ones too), and each new token α_k · log p − log q; when the
//! particles stop early, a last (α − α_k) · log p(x) makes the final target p^α exactly.
//!
//! The state lives in the chain's checkpoint like the MCMC state: every particle's tokens, log p,
//! log q and log weight, the pending move's cuts and seeds, with the chain's RNG, so a resumed
//! chain gives bit-identical output. A block's extensions, and the N proposals of one move, are
//! listed together by `Chain::requests` and answered in order through `Chain::advance`.
//!
//! Consistency: E[f(returned)] = E[Σ W_i f(x_i)], a self-normalized importance estimate of
//! E_{p^α}[f] whose bias is O(1/N); N = 1 without resampling returns one proposal sample, the
//! `low-temp` law.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::accept::Suffix;
use crate::model::{Generation, TokenId};
use crate::rng::ChainRng;

/// How particles are resampled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resampling {
    /// One uniform draw, N evenly spaced positions: the lowest variance of the usual schemes.
    #[default]
    Systematic,
    /// N independent draws from the weights.
    Multinomial,
}

impl Resampling {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Resampling::Systematic => "systematic",
            Resampling::Multinomial => "multinomial",
        }
    }
}

impl std::str::FromStr for Resampling {
    type Err = crate::config::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "systematic" => Ok(Resampling::Systematic),
            "multinomial" => Ok(Resampling::Multinomial),
            _ => Err(crate::config::ConfigError::single(
                "resampling",
                "one of systematic, multinomial",
                s.to_string(),
            )),
        }
    }
}

/// Most Metropolis-Hastings moves each particle takes after a resampling.
pub const MAX_REJUVENATION_STEPS: u32 = 64;

/// How the exponent of the intermediate targets goes from 1 to α over the first blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlphaSchedule {
    /// Every block targets α.
    #[default]
    None,
    /// α_k = 1 + (α − 1) · k / (A − 1) for the first A blocks.
    Linear,
    /// α_k = α^(k / (A − 1)) for the first A blocks: equal ratios between blocks.
    Geometric,
}

impl AlphaSchedule {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlphaSchedule::None => "none",
            AlphaSchedule::Linear => "linear",
            AlphaSchedule::Geometric => "geometric",
        }
    }

    /// Whether α is not annealed.
    pub fn is_none(&self) -> bool {
        *self == AlphaSchedule::None
    }
}

impl std::str::FromStr for AlphaSchedule {
    type Err = crate::config::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(AlphaSchedule::None),
            "linear" => Ok(AlphaSchedule::Linear),
            "geometric" => Ok(AlphaSchedule::Geometric),
            _ => Err(crate::config::ConfigError::single(
                "alpha_schedule",
                "one of none, linear, geometric",
                s.to_string(),
            )),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The resolved SMC settings of a [`crate::ValidConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmcConfig {
    /// Particles N.
    pub particles: u32,
    /// Resample when ESS < `ess_threshold × N`.
    pub ess_threshold: f64,
    /// The resampling scheme.
    pub resampling: Resampling,
    /// After each resampling, every particle takes this many Metropolis-Hastings moves that
    /// leave the block's intermediate target invariant (resample-move).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rejuvenation_steps: u32,
    /// How α is annealed over the first blocks.
    #[serde(default, skip_serializing_if = "AlphaSchedule::is_none")]
    pub alpha_schedule: AlphaSchedule,
    /// With a schedule, the number of blocks A whose last one (block A − 1, 0-based) reaches α;
    /// 0 without one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub anneal_blocks: u32,
}

impl Default for SmcConfig {
    fn default() -> SmcConfig {
        SmcConfig {
            particles: crate::config::DEFAULT_PARTICLES,
            ess_threshold: crate::config::DEFAULT_ESS_THRESHOLD,
            resampling: Resampling::Systematic,
            rejuvenation_steps: 0,
            alpha_schedule: AlphaSchedule::None,
            anneal_blocks: 0,
        }
    }
}

impl SmcConfig {
    /// α_k, the exponent of block `block_idx`'s intermediate target for the target exponent
    /// `alpha`: from α_0 = 1 (the base model itself) to α at block A − 1 and after.
    pub fn alpha_at(&self, alpha: f64, block_idx: u32) -> f64 {
        let last = self.anneal_blocks.saturating_sub(1);
        if block_idx >= last {
            return alpha;
        }
        let share = f64::from(block_idx) / f64::from(last);
        match self.alpha_schedule {
            AlphaSchedule::None => alpha,
            AlphaSchedule::Linear => 1.0 + (alpha - 1.0) * share,
            AlphaSchedule::Geometric => alpha.powf(share),
        }
    }
}

/// Most distinct completions a result records in its weighted set.
pub const MAX_WEIGHTED_SET: usize = 64;

/// What an SMC chain records besides its completion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SmcStats {
    /// Particles N.
    pub particles: u32,
    /// Per block boundary, the ESS (before any resampling) as a share of N.
    pub ess: Vec<f64>,
    /// How many times the particles were resampled.
    pub resamples: u32,
    /// The estimate of log Σ_x p(x)^α over completions (the normalizing constant of p^α).
    pub log_z: f64,
    /// The final particles' distinct completions with their normalized weights, heaviest first
    /// (at most [`MAX_WEIGHTED_SET`]).
    pub weighted: Vec<WeightedCompletion>,
    /// Metropolis-Hastings moves proposed after resamplings (`rejuvenation_steps`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub moves: u64,
    /// Of those, the accepted ones.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub accepted_moves: u64,
}

/// One completion of the final weighted set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedCompletion {
    /// Its tokens.
    pub tokens: Vec<TokenId>,
    /// Its share of the normalized weight.
    pub weight: f64,
}

/// One particle: a completion with its per-token log p and log q, and its log weight since the
/// last resampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Particle {
    /// Prompt followed by the completion.
    pub sequence: Vec<TokenId>,
    /// Per completion token, log p under the base model.
    pub log_p: Vec<f64>,
    /// Per completion token, log q under the proposal.
    pub log_q: Vec<f64>,
    /// log w since the last resampling.
    pub log_w: f64,
    /// Whether the completion ends with EOS.
    pub eos: bool,
}

/// The particle system of an SMC chain; part of the chain's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmcState {
    /// The particles.
    pub particles: Vec<Particle>,
    /// The particle the pending request extends.
    pub current: u32,
    /// The particles still to extend in this block after `current`, each with the seed of its
    /// request, drawn when the block began (so their requests may run in any order, or at once).
    #[serde(default)]
    pub queued: Vec<(u32, u64)>,
    /// log Ẑ of the epochs closed by resampling.
    pub log_z: f64,
    /// Resamplings so far.
    pub resamples: u32,
    /// ESS / N at each block boundary so far.
    pub ess: Vec<f64>,
    /// The particles still to move in the pending Metropolis-Hastings move after `current`,
    /// each with its cut and the seed of its request, drawn when the move began.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moving: Vec<(u32, u32, u64)>,
    /// Metropolis-Hastings moves proposed so far (one per particle per rejuvenation step).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub moves: u64,
    /// Of those, the accepted ones.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub accepted_moves: u64,
}

impl SmcState {
    /// N particles holding `prompt` and nothing else.
    pub fn new(particles: u32, prompt: &[TokenId]) -> SmcState {
        let particle = Particle {
            sequence: prompt.to_vec(),
            log_p: Vec::new(),
            log_q: Vec::new(),
            log_w: 0.0,
            eos: false,
        };
        SmcState {
            particles: vec![particle; particles as usize],
            current: 0,
            queued: Vec::new(),
            log_z: 0.0,
            resamples: 0,
            ess: Vec::new(),
            moving: Vec::new(),
            moves: 0,
            accepted_moves: 0,
        }
    }

    /// Moves every particle's weight from the target exponent `alpha - delta` to `alpha`:
    /// log w += delta · log p(x) over the particle's whole completion, EOS included.
    pub fn reweight(&mut self, delta: f64) {
        if delta == 0.0 {
            return;
        }
        for p in &mut self.particles {
            p.log_w += delta * p.log_p.iter().sum::<f64>();
        }
    }

    /// Begins a Metropolis-Hastings move of every particle: draws each particle's cut
    /// (uniform over its tokens) and its request's seed, in particle order; the first particle is
    /// current. Returns its cut and seed.
    pub fn start_move(&mut self, rng: &mut ChainRng, prompt_len: usize) -> (u32, u64) {
        let mut all: Vec<(u32, u32, u64)> = (0..self.particles.len())
            .map(|i| {
                let len = (self.particles[i].sequence.len() - prompt_len) as u32;
                let cut = rng.below(len);
                (i as u32, cut, rng.next_u64())
            })
            .collect();
        let (first, cut, seed) = all.remove(0);
        self.current = first;
        self.moving = all;
        (cut, seed)
    }

    /// The current particle's proposed suffix from `cut` on: accepted with the
    /// Metropolis-Hastings ratio at exponent `alpha` (the block's α_k); the weight is unchanged.
    pub fn move_answer(
        &mut self,
        config: &crate::config::ValidConfig,
        alpha: f64,
        (prompt_len, cut): (usize, usize),
        g: Generation,
        rng: &mut ChainRng,
    ) -> bool {
        let p = &mut self.particles[self.current as usize];
        let len = p.sequence.len() - prompt_len;
        let decision = crate::accept::decide_at(
            alpha,
            config.ratio(),
            Suffix::new(&p.log_p[cut..], &p.log_q[cut..], len),
            Suffix::new(&g.log_p, &g.log_q, cut + g.tokens.len()),
        );
        let accepted = match decision {
            crate::accept::Decision::Always(accept) => accept,
            crate::accept::Decision::LogRatio(log_a) => rng.uniform().ln() < log_a,
        };
        self.moves += 1;
        if accepted {
            self.accepted_moves += 1;
            let particle = (&mut p.sequence, &mut p.log_p, &mut p.log_q);
            p.eos = crate::chain::replace_suffix(particle, (prompt_len, cut), &g);
        }
        accepted
    }

    /// The particles that still grow in a block whose completions may reach `limit` tokens.
    pub fn to_extend(&self, prompt_len: usize, limit: usize) -> Vec<usize> {
        (0..self.particles.len())
            .filter(|&i| {
                let p = &self.particles[i];
                !p.eos && p.sequence.len() - prompt_len < limit
            })
            .collect()
    }

    /// Appends a generation to the current particle and adds its incremental log weight.
    pub fn extend(&mut self, alpha: f64, g: Generation) {
        let p = &mut self.particles[self.current as usize];
        p.log_w += g
            .log_p
            .iter()
            .zip(&g.log_q)
            .map(|(lp, lq)| alpha * lp - lq)
            .sum::<f64>();
        p.sequence.extend_from_slice(&g.tokens);
        p.log_p.extend_from_slice(&g.log_p);
        p.log_q.extend_from_slice(&g.log_q);
        p.eos = g.eos;
    }

    /// The normalized weights, and log of the mean unnormalized weight.
    fn weights(&self) -> (Vec<f64>, f64) {
        let max = self
            .particles
            .iter()
            .map(|p| p.log_w)
            .fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = self
            .particles
            .iter()
            .map(|p| (p.log_w - max).exp())
            .collect();
        let sum: f64 = w.iter().sum();
        let log_mean = max + (sum / w.len() as f64).ln();
        (w.into_iter().map(|x| x / sum).collect(), log_mean)
    }

    /// A block boundary: records the ESS and resamples when it is below `threshold × N`.
    /// Returns whether it resampled.
    pub fn boundary(&mut self, config: &SmcConfig, rng: &mut ChainRng) -> bool {
        let (w, log_mean) = self.weights();
        let n = w.len() as f64;
        let ess = 1.0 / w.iter().map(|x| x * x).sum::<f64>();
        self.ess.push(ess / n);
        if ess < config.ess_threshold * n {
            let picks = match config.resampling {
                Resampling::Systematic => systematic(&w, rng.uniform()),
                Resampling::Multinomial => (0..w.len())
                    .map(|_| pick(&w, rng.uniform()))
                    .collect::<Vec<_>>(),
            };
            self.particles = picks.iter().map(|&i| self.particles[i].clone()).collect();
            for p in &mut self.particles {
                p.log_w = 0.0;
            }
            self.log_z += log_mean;
            self.resamples += 1;
            return true;
        }
        false
    }

    /// Draws the returned particle by its final weight; with the statistics.
    pub fn finish(&self, rng: &mut ChainRng, prompt_len: usize) -> (usize, SmcStats) {
        let (w, log_mean) = self.weights();
        let chosen = pick(&w, rng.uniform());
        let mut by_completion: BTreeMap<&[TokenId], f64> = BTreeMap::new();
        for (p, wi) in self.particles.iter().zip(&w) {
            *by_completion.entry(&p.sequence[prompt_len..]).or_default() += wi;
        }
        let mut weighted: Vec<WeightedCompletion> = by_completion
            .into_iter()
            .map(|(tokens, weight)| WeightedCompletion {
                tokens: tokens.to_vec(),
                weight,
            })
            .collect();
        weighted.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        weighted.truncate(MAX_WEIGHTED_SET);
        let stats = SmcStats {
            particles: self.particles.len() as u32,
            ess: self.ess.clone(),
            resamples: self.resamples,
            log_z: self.log_z + log_mean,
            weighted,
            moves: self.moves,
            accepted_moves: self.accepted_moves,
        };
        (chosen, stats)
    }

    /// Checks the invariants a decoded checkpoint must satisfy.
    pub(crate) fn check(&self, config: &SmcConfig, prompt: &[TokenId]) -> Result<(), String> {
        if self.particles.len() != config.particles as usize {
            return Err(format!(
                "{} particles, but the configuration has {}",
                self.particles.len(),
                config.particles
            ));
        }
        if self.current as usize >= self.particles.len()
            || self
                .queued
                .iter()
                .any(|&(i, _)| i as usize >= self.particles.len())
            || self
                .moving
                .iter()
                .any(|&(i, _, _)| i as usize >= self.particles.len())
        {
            return Err(format!("current particle {} out of range", self.current));
        }
        if !self.queued.is_empty() && !self.moving.is_empty() {
            return Err("particles are queued both to extend and to move".to_string());
        }
        if self.accepted_moves > self.moves {
            return Err(format!(
                "{} of {} moves accepted",
                self.accepted_moves, self.moves
            ));
        }
        for (i, p) in self.particles.iter().enumerate() {
            let len = p.sequence.len().checked_sub(prompt.len());
            if !p.sequence.starts_with(prompt)
                || len != Some(p.log_p.len())
                || len != Some(p.log_q.len())
                || !p.log_w.is_finite()
            {
                return Err(format!("particle {i} is inconsistent"));
            }
        }
        for &(i, cut, _) in &self.moving {
            if cut as usize >= self.particles[i as usize].log_p.len() {
                return Err(format!("particle {i}'s move cuts past its end at {cut}"));
            }
        }
        Ok(())
    }

    /// Checks a pending move (`Phase::Propose`) of a decoded checkpoint: step `step_idx` of
    /// `steps`, cutting the current particle at `cut`, in a block of limit `limit`.
    pub(crate) fn check_move(
        &self,
        step_idx: u32,
        steps: u32,
        cut: u32,
        limit: usize,
    ) -> Result<(), String> {
        let len = self.particles[self.current as usize].log_p.len();
        if step_idx >= steps || cut as usize >= len || !self.queued.is_empty() {
            return Err(format!(
                "move {step_idx} of {steps} cuts at {cut} of a {len}-token particle"
            ));
        }
        if let Some(p) = self.particles.iter().find(|p| p.log_p.len() > limit) {
            return Err(format!(
                "a {}-token particle exceeds its block's limit {limit}",
                p.log_p.len()
            ));
        }
        Ok(())
    }
}

/// The index `u` in [0, 1) falls on in the cumulative `weights`.
fn pick(weights: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i;
        }
    }
    weights.len() - 1
}

/// Systematic resampling: positions (u + i) / N.
fn systematic(weights: &[f64], u: f64) -> Vec<usize> {
    let n = weights.len();
    let mut picks = Vec::with_capacity(n);
    let (mut j, mut acc) = (0, weights[0]);
    for i in 0..n {
        let position = (u + i as f64) / n as f64;
        while position >= acc && j + 1 < n {
            j += 1;
            acc += weights[j];
        }
        picks.push(j);
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systematic_resampling_keeps_each_particle_floor_or_ceiling_of_n_times_its_weight() {
        let w = [0.5, 0.25, 0.125, 0.125];
        for u in [0.0, 0.3, 0.99] {
            let picks = systematic(&w, u);
            for (i, wi) in w.iter().enumerate() {
                let count = picks.iter().filter(|&&p| p == i).count() as f64;
                let expected = wi * w.len() as f64;
                assert!(
                    count == expected.floor() || count == expected.ceil(),
                    "{u}: {picks:?}"
                );
            }
        }
    }

    #[test]
    fn equal_weights_never_resample_and_record_full_ess() {
        let mut s = SmcState::new(4, &[1]);
        let config = SmcConfig {
            particles: 4,
            ess_threshold: 0.5,
            resampling: Resampling::Systematic,
            ..SmcConfig::default()
        };
        let mut rng = ChainRng::new(1, 0);
        s.boundary(&config, &mut rng);
        assert_eq!(s.ess, [1.0]);
        assert_eq!(s.resamples, 0);
    }

    fn annealed(schedule: AlphaSchedule, anneal_blocks: u32) -> SmcConfig {
        SmcConfig {
            alpha_schedule: schedule,
            anneal_blocks,
            ..SmcConfig::default()
        }
    }

    #[test]
    fn schedules_start_at_one_and_reach_alpha_at_block_anneal_blocks() {
        let alphas = |c: SmcConfig| (0..6).map(|k| c.alpha_at(4.0, k)).collect::<Vec<_>>();
        assert_eq!(alphas(SmcConfig::default()), [4.0; 6]);
        assert_eq!(
            alphas(annealed(AlphaSchedule::Linear, 4)),
            [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]
        );
        let geometric = alphas(annealed(AlphaSchedule::Geometric, 3));
        for (got, want) in geometric.iter().zip([1.0, 2.0, 4.0, 4.0, 4.0, 4.0]) {
            assert!((got - want).abs() < 1e-12, "{geometric:?}");
        }
        assert_eq!(alphas(annealed(AlphaSchedule::Linear, 1)), [4.0; 6]);
        // Annealing works downwards too, from 1 to an alpha below it.
        let down = annealed(AlphaSchedule::Linear, 3);
        assert_eq!(down.alpha_at(0.5, 1), 0.75);
    }

    #[test]
    fn annealed_incremental_weights_reweight_the_prefix_and_weigh_new_tokens_at_alpha_k() {
        // Two particles: block 0 (alpha_0 = 1) gives both two tokens; the second ends with EOS.
        let mut s = SmcState::new(2, &[7]);
        let generation = |log_p: Vec<f64>, log_q: Vec<f64>, eos| Generation {
            tokens: vec![1; log_p.len()],
            log_p,
            log_q,
            eos,
            candidates: Vec::new(),
        };
        s.extend(1.0, generation(vec![-1.0, -2.0], vec![-0.5, -1.0], false));
        s.current = 1;
        s.extend(1.0, generation(vec![-0.5, -0.25], vec![-0.5, -0.5], true));
        assert_eq!(s.particles[0].log_w, -1.5);
        assert_eq!(s.particles[1].log_w, 0.25);
        // Block 1 at alpha_1 = 2.5: (alpha_1 - alpha_0) log p(prefix) for every particle, EOS or
        // not, then alpha_1 log p - log q for the new token of the one that grows.
        s.reweight(1.5);
        s.current = 0;
        s.extend(2.5, generation(vec![-0.4], vec![-0.2], false));
        let want_0 = -1.5 + 1.5 * -3.0 + (2.5 * -0.4 + 0.2);
        let want_1 = 0.25 + 1.5 * -0.75;
        assert!((s.particles[0].log_w - want_0).abs() < 1e-12);
        assert!((s.particles[1].log_w - want_1).abs() < 1e-12);
        // The whole path telescopes to alpha_1 log p(x) - log q(x).
        let p0 = &s.particles[0];
        let telescoped = 2.5 * p0.log_p.iter().sum::<f64>() - p0.log_q.iter().sum::<f64>();
        assert!((p0.log_w - telescoped).abs() < 1e-12);
    }
}
