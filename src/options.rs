//! Sampler options shared by subcommands: flags, with `POWER_SAMPLING_*` environment defaults.

use anyhow::{Context, Result, bail};
use clap::Args;
use powerfleet_models::ToyModel;
use powerfleet_sampler::{
    Alpha, AlphaSchedule, Method, Ratio, Resampling, SamplerConfig, TokenId, ValidConfig,
};

/// Flags that configure a chain. Unset flags fall back to `POWER_SAMPLING_*` environment
/// variables, then to the method's defaults.
#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Sampling method: power, max-swap, low-temp, standard, power-smc or power-lookahead.
    #[arg(long, default_value = "power")]
    pub method: String,
    /// Sharpening exponent α > 0, or `inf` [env: POWER_SAMPLING_ALPHA] [default: 4; inf for max-swap].
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<String>,
    /// MCMC steps per block, >= 1 [env: POWER_SAMPLING_N_MCMC] [default: 10].
    #[arg(long, allow_hyphen_values = true)]
    pub n_mcmc: Option<String>,
    /// Block length in tokens, >= 1 [env: POWER_SAMPLING_BLOCK_SIZE] [default: 192].
    #[arg(long, allow_hyphen_values = true)]
    pub block_size: Option<String>,
    /// Token budget of a completion, EOS included, >= 1 [env: POWER_SAMPLING_MAX_NEW_TOKENS] [default: 3072].
    #[arg(long, allow_hyphen_values = true)]
    pub max_new_tokens: Option<String>,
    /// Proposal temperature > 0 [env: POWER_SAMPLING_PROPOSAL_TEMP] [default: 1/α; 0.25 for α = inf].
    #[arg(long, allow_hyphen_values = true)]
    pub proposal_temp: Option<String>,
    /// Restrict proposals to the k most likely tokens, k >= 1.
    #[arg(long, allow_hyphen_values = true)]
    pub top_k: Option<String>,
    /// Acceptance ratio: exact, or reference (the reference implementation's biased ratio).
    #[arg(long, default_value = "exact")]
    pub ratio: String,
    /// Keep running MCMC steps in later blocks after the completion ends with EOS.
    #[arg(long)]
    pub continue_after_eos: bool,
    /// power-smc: particles, >= 1 [env: POWER_SAMPLING_PARTICLES] [default: 16].
    #[arg(long, allow_hyphen_values = true)]
    pub particles: Option<String>,
    /// power-smc: resample when the effective sample size falls below this share of the
    /// particles, in (0, 1] [env: POWER_SAMPLING_ESS_THRESHOLD] [default: 0.5].
    #[arg(long, allow_hyphen_values = true)]
    pub ess_threshold: Option<String>,
    /// power-smc: systematic or multinomial resampling [env: POWER_SAMPLING_RESAMPLING] [default: systematic].
    #[arg(long)]
    pub resampling: Option<String>,
    /// power-smc: Metropolis-Hastings moves per particle after each resampling, 0 to 64
    /// [env: POWER_SAMPLING_REJUVENATION_STEPS] [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    pub rejuvenation_steps: Option<String>,
    /// power-smc: anneal α from 1 over the first blocks: none, linear or geometric
    /// [env: POWER_SAMPLING_ALPHA_SCHEDULE] [default: none].
    #[arg(long)]
    pub alpha_schedule: Option<String>,
    /// power-smc with --alpha-schedule: the block (1-based) at which α is reached
    /// [env: POWER_SAMPLING_ANNEAL_BLOCKS] [default: the last block].
    #[arg(long, allow_hyphen_values = true)]
    pub anneal_blocks: Option<String>,
    /// power-lookahead: candidates per token, the K likeliest next tokens, 1 to 64
    /// [env: POWER_SAMPLING_LOOKAHEAD_CANDIDATES] [default: 8].
    #[arg(long, allow_hyphen_values = true)]
    pub lookahead_candidates: Option<String>,
    /// power-lookahead: rollouts per candidate, >= 1 [env: POWER_SAMPLING_LOOKAHEAD_ROLLOUTS]
    /// [default: 8].
    #[arg(long, allow_hyphen_values = true)]
    pub lookahead_rollouts: Option<String>,
    /// power-lookahead: rollouts stop after this many tokens, >= 1
    /// [env: POWER_SAMPLING_LOOKAHEAD_HORIZON] [default: the rest of the completion].
    #[arg(long, allow_hyphen_values = true)]
    pub lookahead_horizon: Option<String>,
    /// power-lookahead: jackknife the estimate over the rollouts, true or false
    /// [env: POWER_SAMPLING_LOOKAHEAD_JACKKNIFE] [default: true].
    #[arg(long)]
    pub lookahead_jackknife: Option<String>,
}

/// Reads an option from its flag, else from its environment variable; errors name the source.
fn option<T>(
    flag: &Option<String>,
    flag_name: &str,
    env: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    let (text, source) = match flag {
        Some(v) => (v.clone(), format!("--{flag_name}")),
        None => match std::env::var(env) {
            Ok(v) => (v, env.to_string()),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{env} is not valid UTF-8"),
        },
    };
    parse(text.trim())
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{source}: {e}"))
}

fn int(field: &'static str) -> impl Fn(&str) -> Result<u32, String> {
    move |s| {
        s.parse::<u32>()
            .map_err(|_| format!("{field} must be a whole number >= 1, got {s}"))
    }
}

impl SamplerArgs {
    /// The user's configuration, before validation.
    pub fn to_config(&self) -> Result<SamplerConfig> {
        let method: Method = self.method.parse().context("--method")?;
        let mut config = SamplerConfig::new(method);
        config.alpha = option(&self.alpha, "alpha", "POWER_SAMPLING_ALPHA", |s| {
            s.parse::<Alpha>().map_err(|e| e.to_string())
        })?;
        if let Some(v) = option(
            &self.n_mcmc,
            "n-mcmc",
            "POWER_SAMPLING_N_MCMC",
            int("n_mcmc"),
        )? {
            config.n_mcmc = v;
        }
        if let Some(v) = option(
            &self.block_size,
            "block-size",
            "POWER_SAMPLING_BLOCK_SIZE",
            int("block_size"),
        )? {
            config.block_size = v;
        }
        if let Some(v) = option(
            &self.max_new_tokens,
            "max-new-tokens",
            "POWER_SAMPLING_MAX_NEW_TOKENS",
            int("max_new_tokens"),
        )? {
            config.max_new_tokens = v;
        }
        config.proposal_temp = option(
            &self.proposal_temp,
            "proposal-temp",
            "POWER_SAMPLING_PROPOSAL_TEMP",
            |s| {
                s.parse::<f64>()
                    .map_err(|_| format!("proposal_temp must be a finite number > 0, got {s}"))
            },
        )?;
        config.top_k = match &self.top_k {
            Some(k) => Some(k.trim().parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "--top-k: top_k must be a whole number >= 1 (omit it for the full vocabulary), got {k}"
                )
            })?),
            None => None,
        };
        config.ratio = self.ratio.parse::<Ratio>().context("--ratio")?;
        config.particles = option(
            &self.particles,
            "particles",
            "POWER_SAMPLING_PARTICLES",
            int("particles"),
        )?;
        config.ess_threshold = option(
            &self.ess_threshold,
            "ess-threshold",
            "POWER_SAMPLING_ESS_THRESHOLD",
            |s| {
                s.parse::<f64>()
                    .map_err(|_| format!("ess_threshold must be a number in (0, 1], got {s}"))
            },
        )?;
        config.resampling = option(
            &self.resampling,
            "resampling",
            "POWER_SAMPLING_RESAMPLING",
            |s| s.parse::<Resampling>().map_err(|e| e.to_string()),
        )?;
        config.rejuvenation_steps = option(
            &self.rejuvenation_steps,
            "rejuvenation-steps",
            "POWER_SAMPLING_REJUVENATION_STEPS",
            |s| {
                s.parse::<u32>().map_err(|_| {
                    format!("rejuvenation_steps must be a whole number between 0 and 64, got {s}")
                })
            },
        )?;
        config.alpha_schedule = option(
            &self.alpha_schedule,
            "alpha-schedule",
            "POWER_SAMPLING_ALPHA_SCHEDULE",
            |s| s.parse::<AlphaSchedule>().map_err(|e| e.to_string()),
        )?;
        config.anneal_blocks = option(
            &self.anneal_blocks,
            "anneal-blocks",
            "POWER_SAMPLING_ANNEAL_BLOCKS",
            int("anneal_blocks"),
        )?;
        config.lookahead_candidates = option(
            &self.lookahead_candidates,
            "lookahead-candidates",
            "POWER_SAMPLING_LOOKAHEAD_CANDIDATES",
            int("lookahead_candidates"),
        )?;
        config.lookahead_rollouts = option(
            &self.lookahead_rollouts,
            "lookahead-rollouts",
            "POWER_SAMPLING_LOOKAHEAD_ROLLOUTS",
            int("lookahead_rollouts"),
        )?;
        config.lookahead_horizon = option(
            &self.lookahead_horizon,
            "lookahead-horizon",
            "POWER_SAMPLING_LOOKAHEAD_HORIZON",
            int("lookahead_horizon"),
        )?;
        config.lookahead_jackknife = option(
            &self.lookahead_jackknife,
            "lookahead-jackknife",
            "POWER_SAMPLING_LOOKAHEAD_JACKKNIFE",
            |s| match s {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!(
                    "lookahead_jackknife must be true or false, got {s}"
                )),
            },
        )?;
        config.finish_on_eos = !self.continue_after_eos;
        Ok(config)
    }

    /// The validated configuration.
    pub fn validate(&self) -> Result<ValidConfig> {
        let config = self.to_config()?;
        config
            .validate()
            .with_context(|| "invalid sampler configuration".to_string())
    }
}

/// The prompt as token ids: `--prompt` text through the model's vocabulary, or `--prompt-tokens`.
pub fn prompt_tokens(
    model: &ToyModel,
    text: Option<&str>,
    ids: Option<&str>,
) -> Result<Vec<TokenId>> {
    match (text, ids) {
        (Some(_), Some(_)) => bail!("give --prompt or --prompt-tokens, not both"),
        (Some(text), None) => Ok(model.tokenize(text).context("--prompt")?),
        (None, Some(ids)) => {
            let tokens = parse_token_ids(ids)?;
            model
                .check_tokens(&tokens)
                .map_err(|e| anyhow::anyhow!("--prompt-tokens: {e}"))?;
            Ok(tokens)
        }
        (None, None) => Ok(Vec::new()),
    }
}

/// Token ids given as `--prompt-tokens 1,2,3`.
pub fn parse_token_ids(ids: &str) -> Result<Vec<TokenId>> {
    ids.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim().parse::<TokenId>().map_err(|_| {
                anyhow::anyhow!("--prompt-tokens must be comma-separated token ids, got {s:?}")
            })
        })
        .collect()
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`), e.g. `2h`, `90s`, `500ms`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a duration; write e.g. 2h, 30m, 90s or 500ms"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!(
                "{text:?} has unit {other:?}; the units are ms, s, m, h and d (e.g. 2h, 90s)"
            ));
        }
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a duration like [`parse_duration`], refusing zero.
pub fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be longer than 0")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod duration_tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest_by_name() {
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(
            parse_duration("10")
                .unwrap_err()
                .contains("units are ms, s, m, h and d")
        );
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("is not a duration")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("is not a duration")
        );
    }
}
