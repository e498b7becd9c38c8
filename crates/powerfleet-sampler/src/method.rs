//! The closed set of sampling methods: [`Method`] with its name, its [`Family`], its order in
//! tables and figures, and its job-token cost. Adding a method starts here (docs/ARCHITECTURE.md,
//! "How to add a method, a grader or a server").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::*;

/// The sampling method of a chain. All methods run behind the same [`crate::Chain`] interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Metropolis-Hastings on p^α, block by block, as in the paper.
    Power,
    /// The α = ∞ variant: a proposal is accepted iff its log p is higher.
    MaxSwap,
    /// One sample from the proposal at temperature 1/α.
    LowTemp,
    /// One sample at temperature 1 over the full vocabulary.
    Standard,
    /// Sequential Monte Carlo towards p^α: N weighted particles from the proposal, resampled
    /// when the effective sample size drops; one returned by its final weight.
    PowerSmc,
    /// Token by token from p^α: each of the K likeliest next tokens weighted by p^α times a
    /// rollout estimate of its future's sum of p^α (Scalable Power Sampling).
    PowerLookahead,
}

/// How a method's chain works, which decides its options and its cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Metropolis-Hastings over suffixes: `n_mcmc` proposals per block.
    Mcmc,
    /// Sequential Monte Carlo: `particles` proposals per block.
    Smc,
    /// One sample, no proposals beyond it.
    Single,
    /// Token by token: K candidates, M rollouts each, per final token.
    Lookahead,
}

impl Family {
    /// The settings that bound a job's proposal tokens ([`Method::job_tokens`]), for messages
    /// that ask to lower them: "n_mcmc or max_new_tokens", ...
    pub fn job_token_settings(self) -> &'static str {
        match self {
            Family::Mcmc => "n_mcmc or max_new_tokens",
            Family::Smc => "particles, rejuvenation_steps or max_new_tokens",
            Family::Single => "max_new_tokens",
            Family::Lookahead => {
                "lookahead_candidates, lookahead_rollouts, lookahead_horizon or max_new_tokens"
            }
        }
    }
}

impl Method {
    /// Every method, in the order tables and figures list them.
    pub const ALL: [Method; 6] = [
        Method::Power,
        Method::MaxSwap,
        Method::LowTemp,
        Method::Standard,
        Method::PowerSmc,
        Method::PowerLookahead,
    ];

    /// The method's name (on the command line and in JSON) and family: the one place a
    /// method is described; everything else about it derives from these and [`Method::ALL`].
    const fn describe(self) -> (&'static str, Family) {
        match self {
            Method::Power => ("power", Family::Mcmc),
            Method::MaxSwap => ("max-swap", Family::Mcmc),
            Method::LowTemp => ("low-temp", Family::Single),
            Method::Standard => ("standard", Family::Single),
            Method::PowerSmc => ("power-smc", Family::Smc),
            Method::PowerLookahead => ("power-lookahead", Family::Lookahead),
        }
    }

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        self.describe().0
    }

    /// How the method's chain works.
    pub fn family(self) -> Family {
        self.describe().1
    }

    /// Where the method comes in tables and figures: its index in [`Method::ALL`].
    pub fn rank(self) -> usize {
        Method::ALL
            .iter()
            .position(|&m| m == self)
            .expect("every method is in Method::ALL")
    }

    /// Every method's name, comma-separated, in [`Method::ALL`]'s order.
    pub fn names() -> String {
        Method::ALL.map(Method::as_str).join(", ")
    }

    /// Whether this method runs Metropolis-Hastings steps.
    pub fn is_mcmc(self) -> bool {
        self.family() == Family::Mcmc
    }

    /// Whether this method runs sequential Monte Carlo.
    pub fn is_smc(self) -> bool {
        self.family() == Family::Smc
    }

    /// Whether this method samples token by token with lookahead rollouts.
    pub fn is_lookahead(self) -> bool {
        self.family() == Family::Lookahead
    }

    /// The most proposal tokens one job of this method may generate under `config`, with the
    /// settings that multiply to it (for messages): `n_mcmc × max_new_tokens` for MCMC,
    /// `particles × max_new_tokens × (1 + rejuvenation_steps × (blocks − 1))` for SMC (the
    /// extensions, and at worst a resampling with its moves at every block boundary),
    /// `max_new_tokens` for one sample, and
    /// `max_new_tokens × (1 + K·M·min(H, max_new_tokens))` for lookahead (per final token, one
    /// candidate request and K·M rollouts of at most H tokens).
    pub fn job_tokens(self, config: &SamplerConfig) -> (u64, String) {
        let max_new = u64::from(config.max_new_tokens);
        match self.family() {
            Family::Mcmc => {
                let n = u64::from(config.n_mcmc);
                (
                    n.saturating_mul(max_new),
                    format!("config.n_mcmc x config.max_new_tokens = {n} x {max_new}"),
                )
            }
            Family::Smc => {
                let n = u64::from(config.particles.unwrap_or(DEFAULT_PARTICLES));
                let extensions = n.saturating_mul(max_new);
                match config.rejuvenation_steps.unwrap_or(0) {
                    0 => (
                        extensions,
                        format!("config.particles x config.max_new_tokens = {n} x {max_new}"),
                    ),
                    // At worst the particles are resampled at every one of the blocks - 1
                    // boundaries, and each of the N x R moves there regenerates up to
                    // max_new_tokens (the boundary's block limit, at most the budget).
                    r => {
                        let r = u64::from(r);
                        let boundaries =
                            u64::from(config.max_new_tokens.div_ceil(config.block_size.max(1)))
                                .saturating_sub(1);
                        (
                            extensions
                                .saturating_mul(r.saturating_mul(boundaries).saturating_add(1)),
                            format!(
                                "config.particles x config.max_new_tokens x (1 + \
                                 config.rejuvenation_steps x (blocks - 1)) = \
                                 {n} x {max_new} x (1 + {r} x {boundaries})"
                            ),
                        )
                    }
                }
            }
            Family::Single => (max_new, format!("config.max_new_tokens = {max_new}")),
            Family::Lookahead => {
                let k = u64::from(
                    config
                        .lookahead_candidates
                        .unwrap_or(DEFAULT_LOOKAHEAD_CANDIDATES),
                );
                let m = u64::from(
                    config
                        .lookahead_rollouts
                        .unwrap_or(DEFAULT_LOOKAHEAD_ROLLOUTS),
                );
                let h = config
                    .lookahead_horizon
                    .map_or(max_new, |h| u64::from(h).min(max_new));
                let per_token = k.saturating_mul(m).saturating_mul(h).saturating_add(1);
                (
                    max_new.saturating_mul(per_token),
                    format!(
                        "config.max_new_tokens x (1 + config.lookahead_candidates x config.lookahead_rollouts x min(config.lookahead_horizon, config.max_new_tokens)) = {max_new} x (1 + {k} x {m} x {h})"
                    ),
                )
            }
        }
    }

    /// Whether this method needs the model's log-probabilities (MCMC and SMC do; the
    /// single-sample methods do not).
    pub fn needs_log_probs(self) -> bool {
        self.is_mcmc() || self.is_smc() || self.is_lookahead()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                ConfigError::single(
                    "method",
                    &format!("one of {}", Method::names()),
                    s.to_string(),
                )
            })
    }
}
