//! Sampler configuration: what the user asks for, and its validated, resolved form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::lookahead::LookaheadConfig;
pub use crate::method::{Family, Method};
pub use crate::smc::{AlphaSchedule, MAX_REJUVENATION_STEPS, Resampling, SmcConfig};

/// Default exponent α (the paper's setting for MATH500).
pub const DEFAULT_ALPHA: f64 = 4.0;
/// Default number of Metropolis-Hastings steps per block.
pub const DEFAULT_N_MCMC: u32 = 10;
/// Default block length in tokens (3072 / 16, as in the paper).
pub const DEFAULT_BLOCK_SIZE: u32 = 192;
/// Default token budget of a completion, EOS included.
pub const DEFAULT_MAX_NEW_TOKENS: u32 = 3072;
/// Proposal temperature of the max-swap variant (α = ∞) when none is given, as in the reference.
pub const MAX_SWAP_PROPOSAL_TEMP: f64 = 0.25;
/// Largest accepted `max_new_tokens`: it guards against a typo that would run for days, and keeps
/// a finished job's result (token ids, text and statistics) well inside the 1 MiB stream entry
/// limit of the queue.
pub const MAX_MAX_NEW_TOKENS: u32 = 65_536;
/// Most blocks a chain may have (the paper uses 16); bounds the per-block statistics.
pub const MAX_BLOCKS: u32 = 4096;
/// Default particles of power-smc.
pub const DEFAULT_PARTICLES: u32 = 16;
/// Most particles of power-smc.
pub const MAX_PARTICLES: u32 = 4096;
/// Default ESS share below which power-smc resamples.
pub const DEFAULT_ESS_THRESHOLD: f64 = 0.5;
/// Default candidates K of power-lookahead.
pub const DEFAULT_LOOKAHEAD_CANDIDATES: u32 = 8;
/// Most candidates K of power-lookahead.
pub const MAX_LOOKAHEAD_CANDIDATES: u32 = 64;
/// Default rollouts M per candidate of power-lookahead.
pub const DEFAULT_LOOKAHEAD_ROLLOUTS: u32 = 8;
/// Most rollouts M per candidate of power-lookahead.
pub const MAX_LOOKAHEAD_ROLLOUTS: u32 = 1024;

/// Which acceptance ratio the Metropolis-Hastings step uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ratio {
    /// Whole suffixes compared, EOS probability and the cut-point correction log(L/L') included.
    /// Targets p^α exactly.
    #[default]
    Exact,
    /// The reference implementation's ratio: suffixes cut to the shorter one, no cut-point
    /// correction. Biased whenever EOS changes lengths; kept to reproduce published numbers.
    Reference,
}

impl Ratio {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Ratio::Exact => "exact",
            Ratio::Reference => "reference",
        }
    }
}

impl FromStr for Ratio {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(Ratio::Exact),
            "reference" => Ok(Ratio::Reference),
            _ => Err(ConfigError::single(
                "ratio",
                "one of exact, reference",
                s.to_string(),
            )),
        }
    }
}

/// The sharpening exponent α: a positive number or infinity.
///
/// In JSON it is a number, or the string `"inf"` for infinity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Alpha(f64);

impl Alpha {
    /// α = ∞, the max-swap variant.
    pub const INFINITE: Alpha = Alpha(f64::INFINITY);

    /// Validates a finite or infinite α.
    pub fn new(value: f64) -> Result<Alpha, ConfigError> {
        if value > 0.0 {
            Ok(Alpha(value))
        } else {
            Err(ConfigError::single(
                "alpha",
                "> 0 or inf",
                format_number(value),
            ))
        }
    }

    /// The value; `f64::INFINITY` for α = ∞.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether α = ∞.
    pub fn is_infinite(self) -> bool {
        self.0.is_infinite()
    }
}

impl fmt::Display for Alpha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_infinite() {
            f.write_str("inf")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl FromStr for Alpha {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        match trimmed.to_ascii_lowercase().as_str() {
            "inf" | "infinity" | "+inf" | "∞" => Ok(Alpha::INFINITE),
            lower => match lower.parse::<f64>() {
                Ok(v) if !v.is_nan() => Alpha::new(v),
                _ => Err(ConfigError::single("alpha", "> 0 or inf", s.to_string())),
            },
        }
    }
}

impl Serialize for Alpha {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_infinite() {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Alpha {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(v) => Alpha::new(v).map_err(serde::de::Error::custom),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The smallest proposal temperature: below it, log p / τ overflows the log-sum-exp of log q.
pub const MIN_PROPOSAL_TEMP: f64 = 1e-6;

/// What the user asks for; [`SamplerConfig::validate`] turns it into a [`ValidConfig`].
///
/// Unset options take the method's defaults; set options are never silently changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// The sampling method.
    pub method: Method,
    /// Sharpening exponent α; default 4 (∞ for max-swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<Alpha>,
    /// Metropolis-Hastings steps per block (>= 1).
    #[serde(default = "default_n_mcmc")]
    pub n_mcmc: u32,
    /// Block length in tokens (>= 1).
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// Token budget of a completion, EOS included (>= 1).
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: u32,
    /// Proposal temperature; default 1/α (0.25 for α = ∞). `standard` always samples at 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal_temp: Option<f64>,
    /// Restrict proposals to the k most likely tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Acceptance ratio; `exact` unless reproducing the reference implementation.
    #[serde(default)]
    pub ratio: Ratio,
    /// Finish the chain at the first block boundary where it ends with EOS, as the reference does.
    /// With `false`, later blocks keep running MCMC steps on the EOS-terminated completion.
    #[serde(default = "default_true")]
    pub finish_on_eos: bool,
    /// power-smc: particles N (>= 1); default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub particles: Option<u32>,
    /// power-smc: resample when the effective sample size falls below this share of N, in
    /// (0, 1]; default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ess_threshold: Option<f64>,
    /// power-smc: `systematic` (default) or `multinomial` resampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resampling: Option<Resampling>,
    /// power-smc: Metropolis-Hastings moves per particle after each resampling, between 0
    /// (default) and [`MAX_REJUVENATION_STEPS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejuvenation_steps: Option<u32>,
    /// power-smc: how α is annealed over the first blocks (default `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_schedule: Option<AlphaSchedule>,
    /// power-smc with an `alpha_schedule`: the block (1-based) at which α is reached; default
    /// the last block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anneal_blocks: Option<u32>,
    /// power-lookahead: candidates K per token, the K likeliest next tokens (1 to 64); default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead_candidates: Option<u32>,
    /// power-lookahead: rollouts M per candidate (>= 1); default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead_rollouts: Option<u32>,
    /// power-lookahead: rollouts stop after H tokens (>= 1); default none, the remaining budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead_horizon: Option<u32>,
    /// power-lookahead: jackknife the ratio estimate over the rollouts (needs M >= 2);
    /// default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead_jackknife: Option<bool>,
}

fn default_n_mcmc() -> u32 {
    DEFAULT_N_MCMC
}
fn default_block_size() -> u32 {
    DEFAULT_BLOCK_SIZE
}
fn default_max_new_tokens() -> u32 {
    DEFAULT_MAX_NEW_TOKENS
}
fn default_true() -> bool {
    true
}

impl SamplerConfig {
    /// This configuration, given to a batch of `methods`, as `method` runs it: max-swap drops
    /// α (it is α = ∞ by definition; the batch's α is the other methods'), and in a batch that
    /// also runs an SMC method the particle options are that method's, so the others drop
    /// them (alone, they are refused for a method that has no particles); likewise the
    /// lookahead options in a batch that runs power-lookahead.
    pub fn for_method(&self, method: Method, methods: &[Method]) -> SamplerConfig {
        let mut config = SamplerConfig {
            method,
            ..self.clone()
        };
        if method == Method::MaxSwap {
            config.alpha = None;
        }
        if !method.is_smc() && methods.iter().any(|m| m.is_smc()) {
            config.particles = None;
            config.ess_threshold = None;
            config.resampling = None;
            config.rejuvenation_steps = None;
            config.alpha_schedule = None;
            config.anneal_blocks = None;
        }
        if !method.is_lookahead() && methods.iter().any(|m| m.is_lookahead()) {
            config.lookahead_candidates = None;
            config.lookahead_rollouts = None;
            config.lookahead_horizon = None;
            config.lookahead_jackknife = None;
        }
        config
    }

    /// A configuration with every option at its default for `method`.
    pub fn new(method: Method) -> SamplerConfig {
        SamplerConfig {
            method,
            alpha: None,
            n_mcmc: DEFAULT_N_MCMC,
            block_size: DEFAULT_BLOCK_SIZE,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            proposal_temp: None,
            top_k: None,
            ratio: Ratio::Exact,
            finish_on_eos: true,
            particles: None,
            ess_threshold: None,
            resampling: None,
            rejuvenation_steps: None,
            alpha_schedule: None,
            anneal_blocks: None,
            lookahead_candidates: None,
            lookahead_rollouts: None,
            lookahead_horizon: None,
            lookahead_jackknife: None,
        }
    }

    /// Checks every field and resolves defaults. All problems are reported at once.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |field: &'static str, allowed: &str, got: String| {
            problems.push(FieldError {
                field,
                allowed: allowed.to_string(),
                got,
            })
        };

        let alpha = match (self.method, self.alpha) {
            (Method::MaxSwap, None) => Alpha::INFINITE,
            (Method::MaxSwap, Some(a)) if !a.is_infinite() => {
                bad(
                    "alpha",
                    "inf for method max-swap (omit it, or use method power for a finite alpha)",
                    a.to_string(),
                );
                a
            }
            (_, Some(a)) if a.get().is_nan() || a.get() <= 0.0 => {
                bad("alpha", "> 0 or inf", format_number(a.get()));
                a
            }
            (Method::LowTemp, Some(a)) if a.is_infinite() && self.proposal_temp.is_none() => {
                bad(
                    "alpha",
                    "a finite number > 0 for method low-temp (it samples at temperature 1/alpha)",
                    a.to_string(),
                );
                a
            }
            (_, Some(a)) => a,
            (_, None) => Alpha(DEFAULT_ALPHA),
        };
        // The single-sample methods run no MCMC steps, so their n_mcmc is 0 in a result's
        // manifest (`ValidConfig::manifest`); any value is ignored for them.
        if self.method.is_mcmc() && self.n_mcmc < 1 {
            bad("n_mcmc", ">= 1", self.n_mcmc.to_string());
        }
        if self.block_size < 1 {
            bad("block_size", ">= 1", self.block_size.to_string());
        }
        if self.max_new_tokens < 1 || self.max_new_tokens > MAX_MAX_NEW_TOKENS {
            bad(
                "max_new_tokens",
                &format!("between 1 and {MAX_MAX_NEW_TOKENS}"),
                self.max_new_tokens.to_string(),
            );
        }
        if self.block_size >= 1
            && self.max_new_tokens >= 1
            && self.max_new_tokens.div_ceil(self.block_size) > MAX_BLOCKS
        {
            bad(
                "block_size",
                &format!(
                    "at least max_new_tokens / {MAX_BLOCKS} = {} (at most {MAX_BLOCKS} blocks)",
                    self.max_new_tokens.div_ceil(MAX_BLOCKS)
                ),
                self.block_size.to_string(),
            );
        }
        if let Some(t) = self.proposal_temp
            && !(t.is_finite() && t > 0.0)
        {
            bad("proposal_temp", "a finite number > 0", format_number(t));
        }
        if self.method.is_lookahead() {
            if alpha.is_infinite() {
                bad(
                    "alpha",
                    "a finite number > 0 for method power-lookahead (its weights are alpha x log p)",
                    alpha.to_string(),
                );
            }
            if let Some(k) = self.lookahead_candidates
                && !(1..=MAX_LOOKAHEAD_CANDIDATES).contains(&k)
            {
                bad(
                    "lookahead_candidates",
                    &format!("between 1 and {MAX_LOOKAHEAD_CANDIDATES}"),
                    k.to_string(),
                );
            }
            if let Some(m) = self.lookahead_rollouts
                && !(1..=MAX_LOOKAHEAD_ROLLOUTS).contains(&m)
            {
                bad(
                    "lookahead_rollouts",
                    &format!("between 1 and {MAX_LOOKAHEAD_ROLLOUTS}"),
                    m.to_string(),
                );
            }
            if let Some(h) = self.lookahead_horizon
                && h < 1
            {
                bad(
                    "lookahead_horizon",
                    ">= 1 (omit it for the whole remaining budget)",
                    h.to_string(),
                );
            }
        } else {
            for (field, set) in [
                ("lookahead_candidates", self.lookahead_candidates.is_some()),
                ("lookahead_rollouts", self.lookahead_rollouts.is_some()),
                ("lookahead_horizon", self.lookahead_horizon.is_some()),
                ("lookahead_jackknife", self.lookahead_jackknife.is_some()),
            ] {
                if set {
                    bad(
                        field,
                        "unset for this method (it is an option of method power-lookahead)",
                        format!("a value with method {}", self.method),
                    );
                }
            }
        }
        if self.method.is_smc() {
            if alpha.is_infinite() {
                bad(
                    "alpha",
                    "a finite number > 0 for method power-smc (its weights are alpha x log p)",
                    alpha.to_string(),
                );
            }
            if let Some(n) = self.particles
                && !(1..=MAX_PARTICLES).contains(&n)
            {
                bad(
                    "particles",
                    &format!("between 1 and {MAX_PARTICLES}"),
                    n.to_string(),
                );
            }
            if let Some(t) = self.ess_threshold
                && !(t > 0.0 && t <= 1.0)
            {
                bad("ess_threshold", "in (0, 1]", format_number(t));
            }
            if let Some(r) = self.rejuvenation_steps
                && r > MAX_REJUVENATION_STEPS
            {
                bad(
                    "rejuvenation_steps",
                    &format!("between 0 and {MAX_REJUVENATION_STEPS}"),
                    r.to_string(),
                );
            }
            if let Some(a) = self.anneal_blocks {
                let n_blocks = self.max_new_tokens.div_ceil(self.block_size.max(1));
                if self.alpha_schedule.unwrap_or_default().is_none() {
                    bad(
                        "anneal_blocks",
                        "unset unless alpha_schedule is linear or geometric",
                        a.to_string(),
                    );
                } else if !(1..=n_blocks).contains(&a) {
                    bad(
                        "anneal_blocks",
                        &format!(
                            "between 1 and the number of blocks \
                             ceil(max_new_tokens / block_size) = {n_blocks}"
                        ),
                        a.to_string(),
                    );
                }
            }
        } else {
            for (field, set) in [
                ("particles", self.particles.is_some()),
                ("ess_threshold", self.ess_threshold.is_some()),
                ("resampling", self.resampling.is_some()),
                ("rejuvenation_steps", self.rejuvenation_steps.is_some()),
                ("alpha_schedule", self.alpha_schedule.is_some()),
                ("anneal_blocks", self.anneal_blocks.is_some()),
            ] {
                if set {
                    bad(
                        field,
                        "unset for this method (it is an option of method power-smc)",
                        format!("a value with method {}", self.method),
                    );
                }
            }
        }
        if let Some(k) = self.top_k
            && k < 1
        {
            bad(
                "top_k",
                ">= 1 (omit it for the full vocabulary)",
                k.to_string(),
            );
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }

        let temperature = match self.method {
            Method::Standard => 1.0,
            _ => self.proposal_temp.unwrap_or(if alpha.is_infinite() {
                MAX_SWAP_PROPOSAL_TEMP
            } else {
                1.0 / alpha.get()
            }),
        };
        if temperature < MIN_PROPOSAL_TEMP {
            // log p / τ overflows for smaller temperatures: refuse here, not at the worker.
            let (field, got) = match self.proposal_temp {
                Some(t) => ("proposal_temp", format_number(t)),
                None => ("alpha", format_number(alpha.get())),
            };
            let allowed = match field {
                "proposal_temp" => {
                    format!(">= {MIN_PROPOSAL_TEMP} (smaller temperatures overflow log q)")
                }
                _ => format!(
                    "<= {} or inf (the proposal temperature 1/alpha must be >= {MIN_PROPOSAL_TEMP})",
                    1.0 / MIN_PROPOSAL_TEMP
                ),
            };
            return Err(ConfigError::single(field, &allowed, got));
        }
        let top_k = match self.method {
            Method::Standard => None,
            _ => self.top_k,
        };
        Ok(ValidConfig {
            method: self.method,
            alpha,
            n_mcmc: if self.method.is_mcmc() {
                self.n_mcmc
            } else {
                0
            },
            block_size: self.block_size,
            max_new_tokens: self.max_new_tokens,
            temperature,
            top_k,
            ratio: self.ratio,
            finish_on_eos: self.finish_on_eos,
            smc: self.method.is_smc().then(|| {
                let alpha_schedule = self.alpha_schedule.unwrap_or_default();
                SmcConfig {
                    particles: self.particles.unwrap_or(DEFAULT_PARTICLES),
                    ess_threshold: self.ess_threshold.unwrap_or(DEFAULT_ESS_THRESHOLD),
                    resampling: self.resampling.unwrap_or_default(),
                    rejuvenation_steps: self.rejuvenation_steps.unwrap_or(0),
                    alpha_schedule,
                    anneal_blocks: if alpha_schedule.is_none() {
                        0
                    } else {
                        self.anneal_blocks
                            .unwrap_or(self.max_new_tokens.div_ceil(self.block_size))
                    },
                }
            }),
            lookahead: self.method.is_lookahead().then(|| LookaheadConfig {
                candidates: self
                    .lookahead_candidates
                    .unwrap_or(DEFAULT_LOOKAHEAD_CANDIDATES),
                rollouts: self
                    .lookahead_rollouts
                    .unwrap_or(DEFAULT_LOOKAHEAD_ROLLOUTS),
                horizon: self.lookahead_horizon,
                jackknife: self.lookahead_jackknife.unwrap_or(true),
            }),
        })
    }
}

/// A validated configuration with every default resolved. Only [`SamplerConfig::validate`]
/// makes one, so a chain never runs with an invalid setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidConfig {
    method: Method,
    alpha: Alpha,
    n_mcmc: u32,
    block_size: u32,
    max_new_tokens: u32,
    temperature: f64,
    top_k: Option<u32>,
    ratio: Ratio,
    finish_on_eos: bool,
    /// power-smc's particle settings; absent for the other methods (and in checkpoints written
    /// before the method existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    smc: Option<SmcConfig>,
    /// power-lookahead's settings; absent for the other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lookahead: Option<LookaheadConfig>,
}

impl ValidConfig {
    /// power-lookahead's settings.
    pub fn lookahead(&self) -> Option<&LookaheadConfig> {
        self.lookahead.as_ref()
    }
    /// power-smc's particle settings.
    pub fn smc(&self) -> Option<&SmcConfig> {
        self.smc.as_ref()
    }
    /// The sampling method.
    pub fn method(&self) -> Method {
        self.method
    }
    /// The target exponent α.
    pub fn alpha(&self) -> Alpha {
        self.alpha
    }
    /// MCMC steps per block; 0 for the single-sample methods.
    pub fn n_mcmc(&self) -> u32 {
        self.n_mcmc
    }
    /// Block length in tokens.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    /// Token budget of a completion, EOS included.
    pub fn max_new_tokens(&self) -> u32 {
        self.max_new_tokens
    }
    /// Temperature of the proposal (and of the single sample of `low-temp` and `standard`).
    pub fn temperature(&self) -> f64 {
        self.temperature
    }
    /// Top-k restriction of the proposal, if any.
    pub fn top_k(&self) -> Option<u32> {
        self.top_k
    }
    /// The acceptance ratio in use.
    pub fn ratio(&self) -> Ratio {
        self.ratio
    }
    /// Whether the chain finishes at the first block boundary where it ends with EOS.
    pub fn finish_on_eos(&self) -> bool {
        self.finish_on_eos
    }
    /// The configuration as a [`SamplerConfig`] with every default resolved and filled in: what
    /// a result records as the settings it ran with (its manifest). `n_mcmc` is 0 for the
    /// methods that run no MCMC steps; `top_k` is `None` for the full vocabulary; the power-smc
    /// options are set only for power-smc, the lookahead options (`lookahead_horizon` only when
    /// set) only for power-lookahead. Validating it gives this configuration back.
    pub fn manifest(&self) -> SamplerConfig {
        SamplerConfig {
            method: self.method,
            alpha: Some(self.alpha),
            n_mcmc: self.n_mcmc,
            block_size: self.block_size,
            max_new_tokens: self.max_new_tokens,
            proposal_temp: Some(self.temperature),
            top_k: self.top_k,
            ratio: self.ratio,
            finish_on_eos: self.finish_on_eos,
            particles: self.smc.map(|c| c.particles),
            ess_threshold: self.smc.map(|c| c.ess_threshold),
            resampling: self.smc.map(|c| c.resampling),
            rejuvenation_steps: self.smc.map(|c| c.rejuvenation_steps),
            alpha_schedule: self.smc.map(|c| c.alpha_schedule),
            anneal_blocks: self
                .smc
                .and_then(|c| (!c.alpha_schedule.is_none()).then_some(c.anneal_blocks)),
            lookahead_candidates: self.lookahead.map(|c| c.candidates),
            lookahead_rollouts: self.lookahead.map(|c| c.rollouts),
            lookahead_horizon: self.lookahead.and_then(|c| c.horizon),
            lookahead_jackknife: self.lookahead.map(|c| c.jackknife),
        }
    }
    /// Number of blocks: ⌈max_new_tokens / block_size⌉; the last one may be shorter.
    pub fn n_blocks(&self) -> u32 {
        self.max_new_tokens.div_ceil(self.block_size)
    }
    /// Re-checks a configuration that was decoded rather than validated (from a checkpoint).
    pub fn check(&self) -> Result<(), OutOfRange> {
        let ok = self.block_size >= 1
            && (1..=MAX_MAX_NEW_TOKENS).contains(&self.max_new_tokens)
            && self.n_blocks() <= MAX_BLOCKS
            && self.temperature.is_finite()
            && self.temperature > 0.0
            && self.alpha.get() > 0.0
            && self.top_k.is_none_or(|k| k >= 1)
            && (self.method.is_mcmc() == (self.n_mcmc >= 1))
            && (self.method.is_smc() == self.smc.is_some())
            && self.smc.is_none_or(|c| {
                (1..=MAX_PARTICLES).contains(&c.particles)
                    && c.ess_threshold > 0.0
                    && c.ess_threshold <= 1.0
                    && !self.alpha.is_infinite()
                    && c.rejuvenation_steps <= MAX_REJUVENATION_STEPS
                    && if c.alpha_schedule.is_none() {
                        c.anneal_blocks == 0
                    } else {
                        (1..=self.n_blocks()).contains(&c.anneal_blocks)
                    }
            })
            && (self.method.is_lookahead() == self.lookahead.is_some())
            && self.lookahead.is_none_or(|c| {
                (1..=MAX_LOOKAHEAD_CANDIDATES).contains(&c.candidates)
                    && (1..=MAX_LOOKAHEAD_ROLLOUTS).contains(&c.rollouts)
                    && c.horizon.is_none_or(|h| h >= 1)
                    && !self.alpha.is_infinite()
            });
        if ok {
            Ok(())
        } else {
            Err(OutOfRange(Box::new(self.clone())))
        }
    }

    /// Length limit of the completion during block `block_idx` (0-based).
    pub fn block_limit(&self, block_idx: u32) -> u32 {
        let end = (u64::from(block_idx) + 1) * u64::from(self.block_size);
        end.min(u64::from(self.max_new_tokens)) as u32
    }
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as in JSON (`alpha`, `n_mcmc`, ...).
    pub field: &'static str,
    /// What would be accepted.
    pub allowed: String,
    /// What was given.
    pub got: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} must be {}, got {}",
            self.field, self.allowed, self.got
        )
    }
}

/// A decoded [`ValidConfig`] outside the ranges [`SamplerConfig::validate`] allows (see
/// [`ValidConfig::check`]); it carries the configuration.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("the configuration is out of range: {0:?}")]
pub struct OutOfRange(pub Box<ValidConfig>);

/// An invalid sampler configuration, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Each invalid field.
    pub problems: Vec<FieldError>,
}

impl ConfigError {
    pub(crate) fn single(field: &'static str, allowed: &str, got: String) -> ConfigError {
        ConfigError {
            problems: vec![FieldError {
                field,
                allowed: allowed.to_string(),
                got,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

fn format_number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn power() -> SamplerConfig {
        SamplerConfig::new(Method::Power)
    }

    #[test]
    fn defaults_resolve_to_paper_settings() {
        let v = power().validate().unwrap();
        assert_eq!(v.alpha().get(), 4.0);
        assert_eq!(v.temperature(), 0.25);
        assert_eq!(v.n_blocks(), 16);
        assert_eq!(v.n_mcmc(), 10);
    }

    #[test]
    fn max_swap_defaults_to_infinite_alpha_and_quarter_temperature() {
        let v = SamplerConfig::new(Method::MaxSwap).validate().unwrap();
        assert!(v.alpha().is_infinite());
        assert_eq!(v.temperature(), MAX_SWAP_PROPOSAL_TEMP);
    }

    #[test]
    fn the_settings_to_lower_are_the_ones_a_jobs_tokens_multiply() {
        for method in Method::ALL {
            let config = SamplerConfig {
                rejuvenation_steps: Some(2),
                lookahead_horizon: Some(3),
                ..SamplerConfig::new(method)
            };
            let (_, product) = method.job_tokens(&config);
            let named = method.family().job_token_settings();
            let settings: Vec<&str> = named.split(", ").flat_map(|s| s.split(" or ")).collect();
            assert!(settings.contains(&"max_new_tokens"), "{method}: {named}");
            for setting in &settings {
                assert!(
                    product.contains(&format!("config.{setting}")),
                    "{method}: {setting} is not in {product}"
                );
            }
            let mut in_product: Vec<&str> = product
                .split("config.")
                .skip(1)
                .map(|rest| {
                    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap()
                })
                .collect();
            in_product.sort_unstable();
            in_product.dedup();
            assert_eq!(
                in_product.len(),
                settings.len(),
                "{method}: {product} multiplies a setting {named} does not name"
            );
        }
    }

    #[test]
    fn single_sample_methods_run_no_mcmc() {
        let low = SamplerConfig {
            alpha: Some(Alpha::new(2.0).unwrap()),
            ..SamplerConfig::new(Method::LowTemp)
        }
        .validate()
        .unwrap();
        assert_eq!(low.n_mcmc(), 0);
        assert_eq!(low.temperature(), 0.5);
        let std = SamplerConfig {
            top_k: Some(3),
            proposal_temp: Some(0.1),
            ..SamplerConfig::new(Method::Standard)
        }
        .validate()
        .unwrap();
        assert_eq!(std.temperature(), 1.0);
        assert_eq!(std.top_k(), None);
    }

    #[test]
    fn last_block_is_shorter_when_not_a_multiple() {
        let v = SamplerConfig {
            block_size: 4,
            max_new_tokens: 10,
            ..power()
        }
        .validate()
        .unwrap();
        assert_eq!(v.max_new_tokens(), 10);
        assert_eq!(v.n_blocks(), 3);
        assert_eq!(
            (0..3).map(|k| v.block_limit(k)).collect::<Vec<_>>(),
            vec![4, 8, 10]
        );
    }

    #[test]
    fn temperatures_that_would_overflow_log_q_are_refused_by_name() {
        let err = SamplerConfig {
            proposal_temp: Some(1e-320),
            ..power()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("proposal_temp must be >= 0.000001"), "{err}");
        let err = SamplerConfig {
            alpha: Some(Alpha(1e9)),
            ..power()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("alpha must be <= 1000000 or inf"), "{err}");
        assert!(
            SamplerConfig {
                alpha: Some(Alpha(1e6)),
                ..power()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn a_manifest_has_every_setting_and_validates_back_to_its_config() {
        let configs = [
            power(),
            SamplerConfig::new(Method::MaxSwap),
            SamplerConfig::new(Method::LowTemp),
            SamplerConfig::new(Method::Standard),
            SamplerConfig {
                top_k: Some(5),
                proposal_temp: Some(0.5),
                ratio: Ratio::Reference,
                ..power()
            },
            SamplerConfig::new(Method::PowerSmc),
            SamplerConfig::new(Method::PowerLookahead),
            SamplerConfig {
                lookahead_candidates: Some(3),
                lookahead_rollouts: Some(1),
                lookahead_horizon: Some(5),
                lookahead_jackknife: Some(false),
                ..SamplerConfig::new(Method::PowerLookahead)
            },
        ];
        for config in configs {
            let valid = config.validate().unwrap();
            let manifest = valid.manifest();
            assert!(manifest.alpha.is_some() && manifest.proposal_temp.is_some());
            assert_eq!(manifest.particles.is_some(), config.method.is_smc());
            assert_eq!(
                manifest.lookahead_rollouts.is_some(),
                config.method.is_lookahead()
            );
            assert_eq!(manifest.validate().unwrap(), valid, "{manifest:?}");
            let json = serde_json::to_string(&manifest).unwrap();
            let back: SamplerConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, manifest);
        }
        let low = SamplerConfig::new(Method::LowTemp)
            .validate()
            .unwrap()
            .manifest();
        assert_eq!(low.n_mcmc, 0);
    }

    #[test]
    fn errors_name_every_bad_field_and_the_allowed_range() {
        let err = SamplerConfig {
            alpha: Some(Alpha(-1.0)),
            n_mcmc: 0,
            block_size: 0,
            max_new_tokens: 0,
            proposal_temp: Some(0.0),
            top_k: Some(0),
            ..power()
        }
        .validate()
        .unwrap_err();
        let msg = err.to_string();
        for needle in [
            "alpha must be > 0 or inf, got -1",
            "n_mcmc must be >= 1, got 0",
            "block_size must be >= 1, got 0",
            "max_new_tokens must be between 1 and 65536, got 0",
            "proposal_temp must be a finite number > 0, got 0",
            "top_k must be >= 1",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg:?}");
        }
        assert_eq!(err.problems.len(), 6);
    }

    #[test]
    fn too_many_blocks_are_refused_naming_block_size() {
        let err = SamplerConfig {
            block_size: 1,
            max_new_tokens: 5000,
            ..power()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "block_size must be at least max_new_tokens / 4096 = 2 (at most 4096 blocks), got 1"
        );
    }

    #[test]
    fn max_swap_rejects_a_finite_alpha_and_low_temp_an_infinite_one() {
        let err = SamplerConfig {
            alpha: Some(Alpha::new(4.0).unwrap()),
            ..SamplerConfig::new(Method::MaxSwap)
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.problems[0].field, "alpha");
        assert!(err.to_string().contains("max-swap"));
        let err = SamplerConfig {
            alpha: Some(Alpha::INFINITE),
            ..SamplerConfig::new(Method::LowTemp)
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("low-temp"), "{err}");
    }

    #[test]
    fn alpha_parses_numbers_and_infinity() {
        assert_eq!("4".parse::<Alpha>().unwrap().get(), 4.0);
        assert!("inf".parse::<Alpha>().unwrap().is_infinite());
        assert!("Infinity".parse::<Alpha>().unwrap().is_infinite());
        for bad in ["0", "-2", "nan", "four", "-inf"] {
            let err = bad.parse::<Alpha>().unwrap_err();
            assert!(
                err.to_string().starts_with("alpha must be > 0 or inf"),
                "{err}"
            );
        }
    }

    #[test]
    fn method_and_ratio_parse_errors_list_allowed_values() {
        let err = "beam".parse::<Method>().unwrap_err().to_string();
        assert_eq!(
            err,
            "method must be one of power, max-swap, low-temp, standard, power-smc, power-lookahead, got beam"
        );
        assert!("exact".parse::<Ratio>().is_ok());
        assert!(
            "approx"
                .parse::<Ratio>()
                .unwrap_err()
                .to_string()
                .contains("one of exact, reference")
        );
    }

    fn smc_config() -> SamplerConfig {
        SamplerConfig {
            block_size: 4,
            max_new_tokens: 16,
            ..SamplerConfig::new(Method::PowerSmc)
        }
    }

    #[test]
    fn smc_moves_and_annealing_are_validated_naming_the_field_and_allowed_values() {
        let err = |config: SamplerConfig| config.validate().unwrap_err().to_string();
        assert_eq!(
            err(SamplerConfig {
                rejuvenation_steps: Some(65),
                ..smc_config()
            }),
            "rejuvenation_steps must be between 0 and 64, got 65"
        );
        assert_eq!(
            err(SamplerConfig {
                anneal_blocks: Some(2),
                ..smc_config()
            }),
            "anneal_blocks must be unset unless alpha_schedule is linear or geometric, got 2"
        );
        for bad in [0, 5] {
            assert_eq!(
                err(SamplerConfig {
                    alpha_schedule: Some(AlphaSchedule::Linear),
                    anneal_blocks: Some(bad),
                    ..smc_config()
                }),
                format!(
                    "anneal_blocks must be between 1 and the number of blocks \
                     ceil(max_new_tokens / block_size) = 4, got {bad}"
                )
            );
        }
        assert_eq!(
            "cosine".parse::<AlphaSchedule>().unwrap_err().to_string(),
            "alpha_schedule must be one of none, linear, geometric, got cosine"
        );
        let msg = err(SamplerConfig {
            rejuvenation_steps: Some(1),
            alpha_schedule: Some(AlphaSchedule::Geometric),
            anneal_blocks: Some(2),
            ..power()
        });
        for field in ["rejuvenation_steps", "alpha_schedule", "anneal_blocks"] {
            assert!(
                msg.contains(&format!(
                    "{field} must be unset for this method (it is an option of method power-smc)"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn smc_moves_and_annealing_resolve_defaults_and_are_stripped_for_other_methods() {
        let v = smc_config().validate().unwrap();
        let smc = v.smc().unwrap();
        assert_eq!(smc.rejuvenation_steps, 0);
        assert_eq!(smc.alpha_schedule, AlphaSchedule::None);
        assert_eq!(smc.anneal_blocks, 0);
        let annealed = SamplerConfig {
            rejuvenation_steps: Some(4),
            alpha_schedule: Some(AlphaSchedule::Linear),
            ..smc_config()
        };
        let v = annealed.validate().unwrap();
        assert_eq!(v.smc().unwrap().anneal_blocks, 4, "all blocks by default");
        assert_eq!(v.manifest().validate().unwrap(), v);
        let batch = [Method::Power, Method::PowerSmc];
        let power = annealed.for_method(Method::Power, &batch);
        assert_eq!(
            (
                power.rejuvenation_steps,
                power.alpha_schedule,
                power.anneal_blocks
            ),
            (None, None, None)
        );
        assert!(power.validate().is_ok());
        assert_eq!(annealed.for_method(Method::PowerSmc, &batch), annealed);
    }

    #[test]
    fn smc_job_tokens_count_the_moves_of_every_boundary() {
        let config = SamplerConfig {
            particles: Some(8),
            rejuvenation_steps: Some(2),
            ..smc_config()
        };
        let (tokens, product) = Method::PowerSmc.job_tokens(&config);
        // Extensions: 8 x 16; moves: at each of the 3 boundaries, 8 particles x 2 moves of at
        // most 4, 8 and 12 tokens (the block limits), bounded by 8 x 2 x 3 x 16.
        assert_eq!(tokens, 8 * 16 + 8 * 2 * 3 * 16);
        assert_eq!(
            product,
            "config.particles x config.max_new_tokens x (1 + config.rejuvenation_steps x \
             (blocks - 1)) = 8 x 16 x (1 + 2 x 3)"
        );
    }

    #[test]
    fn config_json_round_trips_and_rejects_unknown_fields() {
        let cfg = SamplerConfig {
            alpha: Some(Alpha::INFINITE),
            ..SamplerConfig::new(Method::Power)
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"alpha\":\"inf\""), "{json}");
        assert_eq!(serde_json::from_str::<SamplerConfig>(&json).unwrap(), cfg);
        let err = serde_json::from_str::<SamplerConfig>(r#"{"method":"power","alfa":2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `alfa`"), "{err}");
        let err = serde_json::from_str::<SamplerConfig>(r#"{"method":"power","alpha":-3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("alpha must be > 0 or inf"), "{err}");
    }

    fn lookahead() -> SamplerConfig {
        SamplerConfig::new(Method::PowerLookahead)
    }

    #[test]
    fn lookahead_defaults_resolve() {
        let v = lookahead().validate().unwrap();
        assert_eq!(v.n_mcmc(), 0);
        assert_eq!(v.temperature(), 0.25);
        assert_eq!(
            v.lookahead(),
            Some(&LookaheadConfig {
                candidates: 8,
                rollouts: 8,
                horizon: None,
                jackknife: true,
            })
        );
        assert!(Method::PowerLookahead.needs_log_probs());
        assert_eq!(Method::PowerLookahead.family(), Family::Lookahead);
        assert_eq!(
            "power-lookahead".parse::<Method>().unwrap(),
            Method::PowerLookahead
        );
    }

    #[test]
    fn lookahead_options_out_of_range_are_refused_by_name() {
        let err = SamplerConfig {
            lookahead_candidates: Some(65),
            lookahead_rollouts: Some(0),
            lookahead_horizon: Some(0),
            alpha: Some(Alpha::INFINITE),
            ..lookahead()
        }
        .validate()
        .unwrap_err();
        let msg = err.to_string();
        for needle in [
            "lookahead_candidates must be between 1 and 64, got 65",
            "lookahead_rollouts must be between 1 and 1024, got 0",
            "lookahead_horizon must be >= 1 (omit it for the whole remaining budget), got 0",
            "alpha must be a finite number > 0 for method power-lookahead",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg:?}");
        }
        assert_eq!(err.problems.len(), 4);
        let err = SamplerConfig {
            lookahead_candidates: Some(0),
            ..lookahead()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(err, "lookahead_candidates must be between 1 and 64, got 0");
    }

    #[test]
    fn lookahead_options_are_refused_for_other_methods_and_stripped_in_a_mixed_batch() {
        let with_options = SamplerConfig {
            lookahead_candidates: Some(4),
            lookahead_rollouts: Some(2),
            lookahead_horizon: Some(3),
            lookahead_jackknife: Some(false),
            ..power()
        };
        let err = with_options.validate().unwrap_err();
        assert_eq!(err.problems.len(), 4);
        assert_eq!(
            err.problems[0].to_string(),
            "lookahead_candidates must be unset for this method (it is an option of method power-lookahead), got a value with method power"
        );
        let methods = [Method::Power, Method::PowerLookahead];
        let power_config = with_options.for_method(Method::Power, &methods);
        assert!(power_config.validate().is_ok());
        assert_eq!(power_config.lookahead_rollouts, None);
        let la = with_options
            .for_method(Method::PowerLookahead, &methods)
            .validate()
            .unwrap();
        assert_eq!(la.lookahead().unwrap().rollouts, 2);
        // Alone, power keeps them and is refused.
        assert!(
            with_options
                .for_method(Method::Power, &[Method::Power])
                .validate()
                .is_err()
        );
        // And the other way round: particles are refused for power-lookahead.
        let err = SamplerConfig {
            particles: Some(4),
            ..lookahead()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("particles must be unset"), "{err}");
    }

    #[test]
    fn lookahead_job_tokens_count_candidates_and_rollouts_per_token() {
        let config = SamplerConfig {
            max_new_tokens: 100,
            lookahead_candidates: Some(4),
            lookahead_rollouts: Some(3),
            ..lookahead()
        };
        let (tokens, product) = Method::PowerLookahead.job_tokens(&config);
        assert_eq!(tokens, 100 * (1 + 4 * 3 * 100));
        assert_eq!(
            product,
            "config.max_new_tokens x (1 + config.lookahead_candidates x config.lookahead_rollouts x min(config.lookahead_horizon, config.max_new_tokens)) = 100 x (1 + 4 x 3 x 100)"
        );
        let horizon = SamplerConfig {
            lookahead_horizon: Some(10),
            ..config.clone()
        };
        assert_eq!(
            Method::PowerLookahead.job_tokens(&horizon).0,
            100 * (1 + 12 * 10)
        );
        let long = SamplerConfig {
            lookahead_horizon: Some(1000),
            ..config
        };
        assert_eq!(
            Method::PowerLookahead.job_tokens(&long).0,
            100 * (1 + 12 * 100)
        );
        // Defaults: K = M = 8.
        let (tokens, _) = Method::PowerLookahead.job_tokens(&SamplerConfig {
            max_new_tokens: 10,
            ..lookahead()
        });
        assert_eq!(tokens, 10 * (1 + 64 * 10));
    }

    #[test]
    fn lookahead_json_names_its_options_and_rejects_misspelt_ones() {
        let cfg: SamplerConfig = serde_json::from_str(
            r#"{"method":"power-lookahead","lookahead_candidates":2,"lookahead_rollouts":16,"lookahead_horizon":4,"lookahead_jackknife":false}"#,
        )
        .unwrap();
        let v = cfg.validate().unwrap();
        assert_eq!(
            v.lookahead(),
            Some(&LookaheadConfig {
                candidates: 2,
                rollouts: 16,
                horizon: Some(4),
                jackknife: false,
            })
        );
        let err = serde_json::from_str::<SamplerConfig>(
            r#"{"method":"power-lookahead","lookahead_rollout":2}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `lookahead_rollout`"), "{err}");
        // Other methods' configurations serialize as before.
        let json = serde_json::to_string(&power().validate().unwrap()).unwrap();
        assert!(!json.contains("lookahead"), "{json}");
    }
}
