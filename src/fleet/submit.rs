//! `powerfleet submit`: one prompt times chains, or a batch file or a graded run times methods
//! times seeds, onto the queue; with `--wait`, until the jobs finish.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Args;
use powerfleet_datasets::Template;
use powerfleet_fleet::producer::{self, BatchLine, GradedProblem, GradedRun, Submission};
use powerfleet_fleet::request::{GradedRunRequest, ModelPolicy, RequestLimits, SubmitRequest};
use powerfleet_fleet::watch::Watched;
use powerfleet_jobs::{CorrelationId, Grader, ReasoningMarkers};
use powerfleet_sampler::Method;

use crate::options::SamplerArgs;

use super::*;

/// Arguments of `powerfleet submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Model reference, resolved by the workers (toy:NAME, toy:PATH, or a name registered with
    /// the workers' --model NAME=REFERENCE).
    #[arg(long, default_value = "toy:pivot")]
    pub model: String,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Methods, comma-separated; each problem runs with each (overrides --method).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Prompt as text.
    #[arg(long, conflicts_with_all = ["prompt_tokens", "batch_file", "bench"])]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long, conflicts_with_all = ["batch_file", "bench"])]
    pub prompt_tokens: Option<String>,
    /// JSONL file of problems: {"id": "...", "prompt": "..."} or {"prompt_tokens": [...]}.
    #[arg(long, conflicts_with = "bench")]
    pub batch_file: Option<std::path::PathBuf>,
    /// A benchmark dataset with reference answers (JSONL, a MATH500 JSON array,
    /// multiple-choice JSONL or HumanEval's programming problems, also `.jsonl.gz`; see
    /// --dataset-format), or `builtin:suite` for the built-in suite
    /// on its toy models. One batch: a job per problem, method and seed, graded by the collector.
    #[arg(long)]
    pub bench: Option<String>,
    /// Format of the --bench file: auto (from its name and first record), jsonl, math500,
    /// multiple-choice, code (HumanEval: task_id, prompt, test, entry_point).
    #[arg(long, default_value = "auto", requires = "bench")]
    pub dataset_format: String,
    /// Prompt template of --bench problems: plain, math-cot, multiple-choice, or a file holding
    /// {question} (and optionally {choices}). Default: math-cot for math500, multiple-choice for
    /// multiple-choice datasets, plain otherwise (for code, the prompt itself, which the
    /// completion continues).
    #[arg(long, requires = "bench")]
    pub template: Option<String>,
    /// Grader of --bench completions: math (the reference MATH grader's verdicts), math-lenient
    /// (also reordered sets, unreduced fractions, rounded decimals), choice, exact,
    /// regex:PATTERN (one capture group around the answer), or humaneval (runs the completion
    /// against the problem's tests in the collector's sandbox). Default: choice for
    /// multiple-choice problems, humaneval for code
    /// problems, math for the others.
    #[arg(long, requires = "bench")]
    pub grader: Option<String>,
    /// Price of the model's generated tokens, US dollars per million, recorded with --bench jobs
    /// for the money column of `powerfleet report`.
    #[arg(long, requires = "bench")]
    pub price_per_mtok: Option<f64>,
    /// The markers around a reasoning trace, as OPEN,CLOSE. Completions are graded on what
    /// follows the trace; one that never closes its trace has no answer. Default:
    /// '<think>,</think>'.
    #[arg(long, requires = "bench", value_name = "OPEN,CLOSE")]
    pub reasoning_markers: Option<String>,
    /// Largest --bench dataset file read, in bytes (uncompressed); a larger one (or an endless
    /// one such as /dev/zero) is refused as soon as it passes this, before anything else is read.
    #[arg(long, env = "POWERFLEET_MAX_DATASET_BYTES", default_value_t = powerfleet_datasets::DEFAULT_MAX_DATASET_BYTES)]
    pub max_dataset_bytes: u64,
    /// Largest --template file read, in bytes.
    #[arg(long, default_value_t = powerfleet_datasets::template::MAX_TEMPLATE_FILE_BYTES)]
    pub max_template_bytes: u64,
    /// Largest --batch-file read, in bytes (each line holds at most 1 MiB).
    #[arg(long, env = "POWERFLEET_MAX_BATCH_FILE_BYTES", default_value_t = producer::DEFAULT_MAX_BATCH_FILE_BYTES)]
    pub max_batch_file_bytes: u64,
    /// Format text prompts through the model's chat template (llama.cpp and vLLM servers) as
    /// one user message.
    #[arg(long)]
    pub chat: bool,
    /// Chains per problem, method and seed (streams 0..N of the seed).
    #[arg(long, default_value_t = 1)]
    pub chains: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of seeds per problem and method: --seed, --seed+1, ...
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Correlation id for all jobs (default: a new one).
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Client key: submitting again with the same key creates no new jobs.
    #[arg(long)]
    pub submission_key: Option<String>,
    /// A label recorded with every result of the submission (1 to 200 printable characters),
    /// such as the experiment it belongs to.
    #[arg(long, value_parser = parse_label)]
    pub label: Option<powerfleet_jobs::Label>,
    /// Where the model cannot run MCMC (a hosted chat API), run power and max-swap jobs as one
    /// sample at the proposal temperature instead of refusing them; each result records it.
    #[arg(long)]
    pub fallback_single_sample: bool,
    /// Cut each finished completion's text at the first match of this string (repeatable).
    /// Applied after sampling, so outside the p^α target; the sampled tokens are kept and each
    /// result records the cut.
    #[arg(long = "stop", value_name = "STRING")]
    pub stop: Vec<String>,
    /// Wait for every job to finish, showing progress on stderr (a bar on a terminal, else a
    /// line every 10 s, and at once when a model of the jobs gets its first live worker or loses
    /// its last); exit 1 if any did not complete. With --database-url, also wait for the
    /// collector to store every result.
    #[arg(long)]
    pub wait: bool,
    /// List the job ids too, one a line (text output; JSON always has them).
    #[arg(long)]
    pub jobs: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
    /// With --wait: the results database the collector writes to; the wait then lasts until
    /// every result is stored there. Without it, --wait follows the jobs in Redis only and
    /// opens no database.
    #[arg(long, env = "POWERFLEET_DATABASE_URL")]
    pub database_url: Option<String>,
}

pub async fn submit(args: SubmitArgs) -> Result<()> {
    let submission = build_submission(&args)?;
    let queue = args.redis.connect().await?;
    let receipt = producer::submit(&queue, &submission).await?;
    {
        let mut out = std::io::stdout().lock();
        match args.format {
            OutFormat::Json => {
                serde_json::to_writer(&mut out, &receipt)?;
                writeln!(out)?;
            }
            OutFormat::Text => {
                crate::output::write_receipt(&mut out, &receipt, &submission, args.jobs)?
            }
        }
        out.flush()?;
    }
    if args.wait {
        let store = super::optional_store(args.database_url.as_deref()).await?;
        let watched = match receipt.batch_id {
            Some(b) => Watched::Batch(b),
            None => Watched::Correlation(receipt.correlation_id.clone()),
        };
        let snap = wait(&queue, store.as_ref(), &watched).await?;
        let completed = snap.tally.by_status.get("completed").copied().unwrap_or(0);
        let failed = snap.tally.total.saturating_sub(completed);
        if failed > 0 {
            bail!(
                "{failed} of {} jobs did not complete; see `powerfleet status {}`",
                receipt.job_ids.len(),
                receipt
                    .batch_id
                    .map_or(receipt.correlation_id.to_string(), |b| b.to_string())
            );
        }
    }
    Ok(())
}

/// The request the flags describe, made a submission on the one path every front-end takes
/// (`SubmitRequest::into_submission`), with the operator's limits and any model reference.
fn build_submission(args: &SubmitArgs) -> Result<Submission> {
    let config = args.sampler.to_config()?;
    let methods: Vec<Method> = if args.methods.is_empty() {
        vec![config.method]
    } else {
        args.methods
            .iter()
            .map(|m| m.trim().parse::<Method>().context("--methods"))
            .collect::<Result<_>>()?
    };
    let graded_run = args
        .bench
        .as_deref()
        .map(|b| graded_run(args, b))
        .transpose()?;
    let mut request = SubmitRequest {
        model: args.model.clone(),
        config: Some(config),
        methods: Some(methods),
        chains: Some(args.chains),
        submission_key: args.submission_key.clone(),
        fallback_single_sample: args.fallback_single_sample,
        stop: (!args.stop.is_empty()).then(|| args.stop.clone()),
        chat: args.chat,
        label: args.label.clone(),
        ..SubmitRequest::default()
    };
    match (&args.prompt, &args.prompt_tokens, &args.batch_file) {
        _ if graded_run.is_some() => {
            request.bench = Some(GradedRunRequest {
                loaded: graded_run,
                ..GradedRunRequest::default()
            });
        }
        (_, _, Some(path)) => {
            // Streamed line by line with a cap per line and on the lines: bounded memory.
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read --batch-file {}", path.display()))?;
            let cap = powerfleet_datasets::SizeCap {
                bytes: args.max_batch_file_bytes,
                setting: "--max-batch-file-bytes",
            };
            let problems = producer::read_batch_file(std::io::BufReader::new(file), cap)
                .map_err(|e| anyhow::anyhow!("--batch-file {}: {e}", path.display()))?;
            request.problems = Some(problems.into_iter().map(BatchLine::from).collect());
        }
        (_, Some(ids), _) => {
            request.prompt_tokens = Some(crate::options::parse_token_ids(ids)?);
        }
        (prompt, None, None) => request.prompt = Some(prompt.clone().unwrap_or_default()),
    }
    if args.seeds == 0 {
        bail!("--seeds must be >= 1, got 0");
    }
    // Checked before the seeds are allocated: each seed is at least one job.
    let most = powerfleet_fleet::producer::MAX_JOBS_PER_SUBMISSION as u64;
    if args.seeds > most {
        bail!(
            "--seeds must be at most {most} (one submission makes at most {most} jobs), got {}; split the run",
            args.seeds
        );
    }
    request.seeds = Some((0..args.seeds).map(|i| args.seed.wrapping_add(i)).collect());
    request.correlation_id = args
        .correlation_id
        .as_deref()
        .map(|c| c.parse::<CorrelationId>().context("--correlation-id"))
        .transpose()?;
    Ok(request.into_submission(&RequestLimits::operator(), &ModelPolicy::operator())?)
}

/// The value of `--bench` that names the built-in suite.
pub const BUILTIN_SUITE: &str = "builtin:suite";

/// Loads the `--bench` dataset with its template and grader; dataset errors list every broken
/// record with its line and field.
fn graded_run(args: &SubmitArgs, bench: &str) -> Result<GradedRun> {
    let grader = args
        .grader
        .as_deref()
        // The error reads `--grader must be one of math, ..., got "x"`.
        .map(|s| s.parse::<Grader>().map_err(|e| anyhow::anyhow!("--{e}")))
        .transpose()?;
    let reasoning_markers = args
        .reasoning_markers
        .as_deref()
        .map(parse_reasoning_markers)
        .transpose()?;
    if bench == BUILTIN_SUITE {
        if args.template.is_some() || args.dataset_format != "auto" {
            bail!(
                "--bench {BUILTIN_SUITE} has its own prompts; drop --template and --dataset-format"
            );
        }
        let mut run = GradedRun::builtin_suite();
        if grader.is_some() {
            bail!("--bench {BUILTIN_SUITE} has its own grader; drop --grader");
        }
        run.price_per_mtok = args.price_per_mtok;
        run.reasoning_markers = reasoning_markers;
        return Ok(run);
    }
    let path = std::path::Path::new(bench);
    let format = if args.dataset_format == "auto" {
        None
    } else {
        let format: powerfleet_datasets::DatasetFormat = args
            .dataset_format
            .parse()
            .map_err(|e| anyhow::anyhow!("--dataset-format: {e}"))?;
        Some(format)
    };
    let cap = powerfleet_datasets::SizeCap {
        bytes: args.max_dataset_bytes,
        setting: "--max-dataset-bytes",
    };
    let (format, problems) =
        powerfleet_datasets::load_capped(path, format, cap).context("--bench")?;
    let template = match &args.template {
        Some(t) => Template::parse_capped(
            t,
            powerfleet_datasets::SizeCap {
                bytes: args.max_template_bytes,
                setting: "--max-template-bytes",
            },
        )
        .context("--template")?,
        None => Template::default_for(format),
    };
    Ok(GradedRun {
        problems: GradedProblem::many(problems),
        template,
        grader,
        price_per_mtok: args.price_per_mtok,
        reasoning_markers,
    })
}

/// Parses `--reasoning-markers OPEN,CLOSE`.
fn parse_reasoning_markers(s: &str) -> Result<ReasoningMarkers> {
    match s.split_once(',') {
        Some((open, close)) if !open.is_empty() && !close.is_empty() => Ok(ReasoningMarkers {
            open: open.to_string(),
            close: close.to_string(),
        }),
        _ => bail!("--reasoning-markers must be OPEN,CLOSE (e.g. '<think>,</think>'), got {s:?}"),
    }
}
