//! `powerfleet sample`: many chains on all cores of this machine, printed as JSONL or a table.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use powerfleet_models::exact::{Histogram, enumerate, tv_tolerance};
use powerfleet_models::{ToyModel, resolve_toy};
use powerfleet_sampler::{Chain, ChainOutput, TokenId, ValidConfig, run as run_chain};
use rayon::prelude::*;
use serde::Serialize;

use crate::options::{SamplerArgs, prompt_tokens};

/// Most chains one `sample` runs: their outputs are kept in memory for the summary.
const MAX_CHAINS: u64 = 10_000_000;

/// Output format of `sample`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SampleOutput {
    /// One JSON object per chain.
    Jsonl,
    /// A summary: distinct completions beside their exact p^α probability.
    Table,
}

/// Arguments of `powerfleet sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Model: toy:NAME (built-in, see `powerfleet models`) or toy:PATH to a JSON file.
    #[arg(long, default_value = "toy:pivot")]
    pub model: String,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Number of independent chains.
    #[arg(long, default_value_t = 1)]
    pub chains: u64,
    /// Seed; chain i uses stream i of it, so output does not depend on the core count.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompt as white-space separated vocabulary words (default: empty).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long)]
    pub prompt_tokens: Option<String>,
    /// Format --prompt through the server's chat template, as one user message followed by the
    /// assistant turn's opening (llama.cpp and vLLM servers only).
    #[arg(long)]
    pub chat: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: SampleOutput,
    /// Worker threads (default: all cores); against inference servers, chains in flight
    /// (default 8).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Against inference servers: how long to wait for an unavailable server before giving up,
    /// e.g. 10m, 90s.
    #[arg(long, default_value = "10m", value_parser = crate::options::parse_duration)]
    pub model_patience: std::time::Duration,
}

/// One chain's JSONL record.
#[derive(Serialize)]
struct ChainRecord<'a> {
    chain: u64,
    tokens: &'a [TokenId],
    text: String,
    /// Why `text` is empty: the server could not detokenize the completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    text_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exactness: Option<powerfleet_jobs::Exactness>,
    log_p: f64,
    ends_with_eos: bool,
    final_len: usize,
    proposals: u64,
    acceptances: u64,
    acceptance_rate: Option<f64>,
    tokens_generated: u64,
    model_calls: u64,
    cost_multiplier: f64,
    block_acceptances: Vec<u32>,
    block_proposals: Vec<u32>,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let config = args.sampler.validate()?;
    if powerfleet_backends::is_remote_reference(&args.model) {
        return crate::block_on(run_http(args, config));
    }
    anyhow::ensure!(
        !args.chat,
        "--chat: toy models have no chat template; run without --chat"
    );
    let model = resolve_toy(&args.model).context("--model")?;
    let prompt = prompt_tokens(
        &model,
        args.prompt.as_deref(),
        args.prompt_tokens.as_deref(),
    )?;
    anyhow::ensure!(args.chains >= 1, "--chains must be >= 1, got 0");
    anyhow::ensure!(
        args.chains <= MAX_CHAINS,
        "--chains must be at most {MAX_CHAINS} (every chain's output is kept for the summary), got {}",
        args.chains
    );
    let outputs = run_chains(
        &model,
        &config,
        &prompt,
        args.seed,
        args.chains,
        args.threads,
        true,
    )?;
    let mut out = std::io::stdout().lock();
    match args.format {
        SampleOutput::Jsonl => {
            for (i, o) in outputs.iter().enumerate() {
                serde_json::to_writer(&mut out, &record(&model, i as u64, o))?;
                writeln!(out)?;
            }
        }
        SampleOutput::Table => write_table(&mut out, &model, &config, &prompt, &outputs)?,
    }
    Ok(())
}

fn record<'a>(model: &ToyModel, chain: u64, o: &'a ChainOutput) -> ChainRecord<'a> {
    ChainRecord {
        text: model.detokenize(o.text_tokens()),
        ..record_without_text(chain, o)
    }
}

/// Runs `n` chains (streams `0..n` of `seed`) on `threads` threads, in chain order.
pub fn run_chains(
    model: &ToyModel,
    config: &ValidConfig,
    prompt: &[TokenId],
    seed: u64,
    n: u64,
    threads: Option<usize>,
    show_progress: bool,
) -> Result<Vec<ChainOutput>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .context("cannot start worker threads")?;
    let progress = if show_progress {
        let bar = ProgressBar::new(n);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} chains  {per_sec}  eta {eta}")
                .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let outputs = pool.install(|| {
        (0..n)
            .into_par_iter()
            .map(|stream| {
                let mut chain = Chain::new(config.clone(), prompt, seed, stream);
                let out = run_chain(&mut chain, model).expect("toy models always answer validly");
                progress.inc(1);
                out
            })
            .collect()
    });
    progress.finish_and_clear();
    Ok(outputs)
}

fn write_table(
    out: &mut impl Write,
    model: &ToyModel,
    config: &ValidConfig,
    prompt: &[TokenId],
    outputs: &[ChainOutput],
) -> Result<()> {
    let n = outputs.len() as u64;
    writeln!(
        out,
        "model {}  method {}  alpha {}  {}  block_size {}  max_new_tokens {}  proposal_temp {}  ratio {}",
        model.name(),
        config.method(),
        config.alpha(),
        match (config.smc(), config.lookahead()) {
            (Some(smc), _) => format!(
                "particles {}  ess_threshold {}  resampling {}{}{}",
                smc.particles,
                smc.ess_threshold,
                smc.resampling.as_str(),
                match smc.rejuvenation_steps {
                    0 => String::new(),
                    r => format!("  rejuvenation_steps {r}"),
                },
                match smc.alpha_schedule {
                    powerfleet_sampler::AlphaSchedule::None => String::new(),
                    schedule => format!(
                        "  alpha_schedule {}  anneal_blocks {}",
                        schedule.as_str(),
                        smc.anneal_blocks
                    ),
                }
            ),
            (None, Some(la)) => format!(
                "lookahead_candidates {}  lookahead_rollouts {}  lookahead_horizon {}  lookahead_jackknife {}",
                la.candidates,
                la.rollouts,
                la.horizon.map_or("none".to_string(), |h| h.to_string()),
                la.jackknife
            ),
            (None, None) => format!("n_mcmc {}", config.n_mcmc()),
        },
        config.block_size(),
        config.max_new_tokens(),
        config.temperature(),
        config.ratio().as_str()
    )?;
    let mut counts: HashMap<&[TokenId], u64> = HashMap::new();
    for o in outputs {
        *counts.entry(o.tokens.as_slice()).or_default() += 1;
    }
    let exact = enumerate(model, prompt, config.max_new_tokens())
        .ok()
        .map(|c| {
            let probs = c.power(config.alpha().get());
            (c, probs)
        });
    let exact_of: HashMap<&[TokenId], f64> = exact
        .as_ref()
        .map(|(c, p)| {
            c.entries
                .iter()
                .map(|e| e.tokens.as_slice())
                .zip(p.iter().copied())
                .collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<(&[TokenId], u64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    writeln!(out)?;
    writeln!(
        out,
        "{:<32} {:>8} {:>9} {:>11}",
        "completion", "count", "freq", "exact p^α"
    )?;
    const MAX_ROWS: usize = 20;
    for (tokens, count) in rows.iter().take(MAX_ROWS) {
        let exact = exact_of
            .get(tokens)
            .map_or("n/a".to_string(), |p| format!("{p:.4}"));
        writeln!(
            out,
            "{:<32} {:>8} {:>9.4} {:>11}",
            truncate(&model.detokenize(tokens), 32),
            count,
            *count as f64 / n as f64,
            exact
        )?;
    }
    if rows.len() > MAX_ROWS {
        let rest: u64 = rows[MAX_ROWS..].iter().map(|r| r.1).sum();
        writeln!(
            out,
            "... {} more distinct completions, {rest} chains",
            rows.len() - MAX_ROWS
        )?;
    }
    writeln!(out)?;
    let proposals: u64 = outputs.iter().map(|o| o.stats.proposals).sum();
    let acceptances: u64 = outputs.iter().map(|o| o.stats.acceptances).sum();
    let generated: u64 = outputs.iter().map(|o| o.stats.tokens_generated).sum();
    let final_tokens: u64 = outputs.iter().map(|o| o.tokens.len() as u64).sum();
    writeln!(out, "chains           {n}")?;
    writeln!(out, "distinct         {}", rows.len())?;
    if proposals > 0 {
        writeln!(
            out,
            "acceptance rate  {:.4} ({acceptances}/{proposals})",
            acceptances as f64 / proposals as f64
        )?;
    }
    if let Some(line) = smc_summary(outputs.iter()) {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "cost multiplier  {:.2} ({generated} tokens generated / {final_tokens} final tokens)",
        generated as f64 / final_tokens.max(1) as f64
    )?;
    match &exact {
        Some((completions, probs)) => {
            let hist = Histogram::new(completions, outputs.iter().map(|o| o.tokens.as_slice()));
            writeln!(
                out,
                "TV to exact p^α  {:.4} (sampling noise alone stays below {:.4} with probability 1 - 1e-6)",
                hist.total_variation(probs),
                tv_tolerance(probs, n, 1e-6)
            )?;
        }
        None => writeln!(
            out,
            "TV to exact p^α  n/a (too many completions to enumerate)"
        )?,
    }
    Ok(())
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let head: String = s.chars().take(width - 1).collect();
        format!("{head}…")
    }
}

/// `sample` against inference servers: `--threads` chains in flight on the async runtime,
/// driven by the fleet's chain driver; the prompt is tokenized and completions detokenized by the
/// server. An unavailable server is waited for, up to `--model-patience`.
async fn run_http(args: SampleArgs, config: ValidConfig) -> Result<()> {
    use powerfleet_fleet::driver::{self, Called, Stop};
    use powerfleet_jobs::Prompt;
    let backend = powerfleet_fleet::models::load(&args.model).map_err(anyhow::Error::msg)?;
    if let powerfleet_fleet::Backend::Hosted { model } = &backend {
        anyhow::bail!(
            "--model: {}: {}",
            model.exactness(),
            powerfleet_backends::HOSTED_CHAT_REFUSAL
        )
    }
    anyhow::ensure!(args.chains >= 1, "--chains must be >= 1, got 0");
    anyhow::ensure!(
        args.chains <= MAX_CHAINS,
        "--chains must be at most {MAX_CHAINS}, got {}",
        args.chains
    );
    let backend = std::sync::Arc::new(backend);
    let policy = SAMPLE_RETRY;
    let patience = args.model_patience;
    let never = tokio_util::sync::CancellationToken::new();
    let prompt = match (&args.prompt, &args.prompt_tokens) {
        (Some(_), Some(_)) => anyhow::bail!("give --prompt or --prompt-tokens, not both"),
        (None, _) if args.chat => {
            anyhow::bail!("--chat formats --prompt through the chat template; give --prompt")
        }
        (None, Some(ids)) => Prompt::Tokens(crate::options::parse_token_ids(ids)?),
        (text, None) => Prompt::Text(text.clone().unwrap_or_default()),
    };
    let prompt: Vec<TokenId> = patiently(&backend, "--prompt", patience, || {
        backend.tokenize(&prompt, args.chat)
    })
    .await?;
    patiently(&backend, "--model", patience, || {
        backend.prepare(&config, prompt.len())
    })
    .await?;
    let terminal = backend.terminal_tokens();
    let in_flight = args.threads.unwrap_or(8).max(1);
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
    let bar = ProgressBar::new(args.chains);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} chains  eta {eta}")
            .expect("valid template"),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for stream in 0..args.chains {
        let (backend, config, prompt, sem, bar, never, terminal) = (
            backend.clone(),
            config.clone(),
            prompt.clone(),
            semaphore.clone(),
            bar.clone(),
            never.clone(),
            terminal.clone(),
        );
        let seed = args.seed;
        tasks.spawn(async move {
            let _permit = sem.acquire().await.expect("never closed");
            let mut chain = Chain::new(config, &prompt, seed, stream);
            chain.set_terminal_tokens(&terminal);
            // The patience counts from the chain's last progress.
            let mut progress_at = std::time::Instant::now();
            loop {
                match driver::run_block(&mut chain, &backend, stream, policy, &never, |_| {}).await
                {
                    Called::Done(Stop::Finished) => break,
                    Called::Done(Stop::BlockDone) => progress_at = std::time::Instant::now(),
                    Called::Interrupted => {}
                    Called::Failed(e) => anyhow::bail!("chain {stream}: {e}"),
                    Called::Waiting(e) if progress_at.elapsed() >= patience => anyhow::bail!(
                        "chain {stream}: the server was unavailable for longer than --model-patience ({} s): {e}",
                        patience.as_secs()
                    ),
                    Called::Waiting(_) => {
                        // The chain keeps its state; it continues when the server is back.
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    }
                }
            }
            bar.inc(1);
            Ok::<_, anyhow::Error>((stream, chain.output().expect("finished")))
        });
    }
    let mut outputs = Vec::with_capacity(args.chains as usize);
    while let Some(joined) = tasks.join_next().await {
        outputs.push(joined.context("a chain task panicked")??);
    }
    bar.finish_and_clear();
    outputs.sort_by_key(|(i, _)| *i);
    let exactness = backend.exactness(config.top_k());
    let mut out = std::io::stdout().lock();
    let mut counts: HashMap<Vec<TokenId>, u64> = HashMap::new();
    for (i, o) in &outputs {
        let (text, text_error) = match detokenized(&backend, o.text_tokens(), patience).await {
            Ok(t) => (t, None),
            Err(e) => (String::new(), Some(format!("{e:#}"))),
        };
        match args.format {
            SampleOutput::Jsonl => {
                let mut r = ChainRecord {
                    text,
                    text_error,
                    exactness: Some(exactness.clone()),
                    ..record_without_text(*i, o)
                };
                r.chain = *i;
                serde_json::to_writer(&mut out, &r)?;
                writeln!(out)?;
            }
            SampleOutput::Table => *counts.entry(o.tokens.clone()).or_default() += 1,
        }
    }
    if let SampleOutput::Table = args.format {
        writeln!(
            out,
            "model {}  method {}  alpha {}  ({exactness})",
            args.model,
            config.method(),
            config.alpha()
        )?;
        let mut rows: Vec<_> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (tokens, count) in rows.iter().take(20) {
            match detokenized(&backend, tokens, patience).await {
                Ok(text) => writeln!(out, "{count:>6}  {:?}", truncate(&text, 60))?,
                Err(e) => writeln!(out, "{count:>6}  {tokens:?} (no text: {e:#})")?,
            }
        }
        let proposals: u64 = outputs.iter().map(|(_, o)| o.stats.proposals).sum();
        let acceptances: u64 = outputs.iter().map(|(_, o)| o.stats.acceptances).sum();
        if proposals > 0 {
            writeln!(
                out,
                "acceptance rate  {:.4}",
                acceptances as f64 / proposals as f64
            )?;
        }
        if let Some(line) = smc_summary(outputs.iter().map(|(_, o)| o)) {
            writeln!(out, "{line}")?;
        }
        let generated: u64 = outputs.iter().map(|(_, o)| o.stats.tokens_generated).sum();
        let final_tokens: u64 = outputs.iter().map(|(_, o)| o.tokens.len() as u64).sum();
        writeln!(
            out,
            "cost multiplier  {:.2}",
            generated as f64 / final_tokens.max(1) as f64
        )?;
    }
    Ok(())
}

/// How `sample` retries model calls.
const SAMPLE_RETRY: powerfleet_fleet::driver::RetryPolicy = powerfleet_fleet::driver::RetryPolicy {
    attempts: 5,
    backoff: std::time::Duration::from_millis(200),
};

/// Calls `op` through the chain driver's retry policy, waiting through outages of the server
/// up to `patience`.
async fn patiently<T, F, Fut>(
    backend: &powerfleet_fleet::Backend,
    what: &str,
    patience: std::time::Duration,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, powerfleet_backends::BackendError>>,
{
    use powerfleet_fleet::driver::{self, Called};
    let never = tokio_util::sync::CancellationToken::new();
    let started = std::time::Instant::now();
    loop {
        match driver::call(backend, SAMPLE_RETRY, &never, &mut op).await {
            Called::Done(v) => return Ok(v),
            Called::Failed(e) => anyhow::bail!("{what}: {e}"),
            Called::Waiting(e) if started.elapsed() >= patience => anyhow::bail!(
                "{what}: the server was unavailable for longer than --model-patience ({} s): {e}",
                patience.as_secs()
            ),
            Called::Waiting(e) => {
                eprintln!("{what}: waiting for the server: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            Called::Interrupted => unreachable!("never interrupted"),
        }
    }
}

/// The text of `tokens` by the server's tokenizer, retried like any model call: text is never
/// guessed, so a completion whose text cannot be had is reported with the reason, not as an
/// empty string.
async fn detokenized(
    backend: &powerfleet_fleet::Backend,
    tokens: &[TokenId],
    patience: std::time::Duration,
) -> Result<String> {
    patiently(backend, "detokenizing a completion", patience, || {
        backend.detokenize(tokens)
    })
    .await
}

fn record_without_text(chain: u64, o: &ChainOutput) -> ChainRecord<'_> {
    ChainRecord {
        chain,
        tokens: &o.tokens,
        text: String::new(),
        text_error: None,
        exactness: None,
        log_p: o.log_p,
        ends_with_eos: o.ends_with_eos,
        final_len: o.tokens.len(),
        proposals: o.stats.proposals,
        acceptances: o.stats.acceptances,
        acceptance_rate: o.stats.acceptance_rate(),
        tokens_generated: o.stats.tokens_generated,
        model_calls: o.stats.model_calls,
        cost_multiplier: o.cost_multiplier(),
        block_proposals: o.stats.blocks.iter().map(|b| b.proposals).collect(),
        block_acceptances: o.stats.blocks.iter().map(|b| b.acceptances).collect(),
    }
}

/// power-smc's line in place of the acceptance rate: the mean ESS (as a share of the particles)
/// over every block boundary, and resamplings per chain.
fn smc_summary<'a>(outputs: impl Iterator<Item = &'a ChainOutput>) -> Option<String> {
    let (mut ess, mut boundaries, mut resamples, mut chains) = (0.0, 0u64, 0u64, 0u64);
    let (mut moves, mut accepted) = (0u64, 0u64);
    for smc in outputs.filter_map(|o| o.stats.smc.as_ref()) {
        ess += smc.ess.iter().sum::<f64>();
        boundaries += smc.ess.len() as u64;
        resamples += u64::from(smc.resamples);
        moves += smc.moves;
        accepted += smc.accepted_moves;
        chains += 1;
    }
    (chains > 0).then(|| {
        let mean_ess = if boundaries > 0 {
            format!("{:.4}", ess / boundaries as f64)
        } else {
            "- (one block)".to_string()
        };
        let moves = if moves > 0 {
            format!(
                "  moves accepted {:.4} of {moves}",
                accepted as f64 / moves as f64
            )
        } else {
            String::new()
        };
        format!(
            "mean ESS / N     {mean_ess}  resamplings per chain {:.2}{moves}",
            resamples as f64 / chains as f64
        )
    })
}
