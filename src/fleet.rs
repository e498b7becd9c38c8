//! Fleet subcommands: submit, worker, collector, status, cancel and results: their flags and
//! flows (text output in `output`, live progress in `progress`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use powerfleet_datasets::Template;
use powerfleet_fleet::collector::{self, CollectorConfig};
use powerfleet_fleet::producer::{self, BatchLine, GradedProblem, GradedRun, Submission};
use powerfleet_fleet::request::{GradedRunRequest, ModelPolicy, RequestLimits, SubmitRequest};
use powerfleet_fleet::status::{self, Page, StatusQuery, StatusReport};
use powerfleet_fleet::watch::{WatchPolicy, Watched};
use powerfleet_fleet::worker::{self, WorkerConfig};
use powerfleet_fleet::{ModelRegistry, control};
use powerfleet_jobs::{BatchId, CorrelationId, Grader, JobId, JobResult, ReasoningMarkers};
use powerfleet_queue::{CancelOutcome, Queue, QueueError, QueueOptions, TallyOf};
use powerfleet_sampler::Method;
use powerfleet_store::Store;

use crate::options::SamplerArgs;
use tokio_util::sync::CancellationToken;

/// Where the queue lives.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis URL (redis:// or rediss://). For a Redis Cluster (found by asking the server), any
    /// of its nodes, or several comma-separated, to start from.
    #[arg(
        long,
        env = "POWERFLEET_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis: String,
    /// Deployment namespace: fleets with different namespaces share a Redis without seeing each
    /// other's jobs.
    #[arg(long, env = "POWERFLEET_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// How long a finished job's state, a batch's and a correlation id's job sets, a submission
    /// key and a dead letter stay in Redis (results live on in SQL).
    #[arg(
        long,
        env = "POWERFLEET_RETENTION",
        default_value = "7d",
        value_parser = crate::options::parse_positive_duration
    )]
    pub retention: Duration,
    /// --retention in seconds (the older spelling, still accepted).
    #[arg(long, env = "POWERFLEET_RETENTION_SECS", conflicts_with = "retention", value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_secs: Option<u64>,
    /// Replicas a submission must reach (Redis WAIT) before its job ids are returned; by default
    /// one on a Redis Cluster whose namespace master has a replica, none otherwise.
    #[arg(long, env = "POWERFLEET_REDIS_WAIT_REPLICAS")]
    pub redis_wait_replicas: Option<usize>,
    /// How long a submission waits for those replicas before it fails, in milliseconds.
    #[arg(long, env = "POWERFLEET_REDIS_REPLICA_TIMEOUT", default_value = "2s", value_parser = crate::options::parse_duration)]
    pub redis_replica_timeout: Duration,
    /// --redis-replica-timeout in milliseconds (the older spelling, still accepted).
    #[arg(
        long,
        env = "POWERFLEET_REDIS_REPLICA_TIMEOUT_MS",
        conflicts_with = "redis_replica_timeout"
    )]
    pub redis_replica_timeout_ms: Option<u64>,
}

impl RedisArgs {
    pub async fn connect(&self) -> Result<Queue> {
        Queue::connect(&self.redis, self.options())
            .await
            .context("cannot use the queue")
    }

    /// The queue's settings from these flags.
    fn options(&self) -> QueueOptions {
        QueueOptions {
            namespace: self.namespace.clone(),
            retention_s: self
                .retention_secs
                .unwrap_or_else(|| self.retention.as_secs().max(1)),
            wait_replicas: self.redis_wait_replicas,
            replica_timeout_ms: millis_or(self.redis_replica_timeout, self.redis_replica_timeout_ms)
                .as_millis() as u64,
            ..QueueOptions::default()
        }
    }

    /// [`RedisArgs::connect`] for a long-running role: while Redis cannot be reached (not up
    /// yet, restarting), it says so and tries again with backoff, until `stop`. Settings that
    /// can never work (a bad namespace) fail at once.
    pub async fn connect_waiting(&self, stop: &CancellationToken) -> Result<Queue> {
        let options = self.options();
        retry_connect(
            "Redis",
            stop,
            || Queue::connect(&self.redis, options.clone()),
            // Down, restarting or not up yet: wait. Refused credentials or a certificate that
            // does not verify stay so: fail at once with the reason.
            |e| matches!(e, QueueError::Redis { message, .. } if !redis_refuses_us(message)),
        )
        .await
        .context("cannot use the queue")
    }
}

/// Whether a Redis error says the server refuses this client for good (credentials, TLS), rather
/// than that it cannot be reached yet.
fn redis_refuses_us(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "wrongpass",
        "noauth",
        "certificate",
        "invalid username",
        "tls",
        "ssl",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// Runs `attempt` until it succeeds, backing off (up to 10 s) after each error that
/// `retryable` accepts, with a log line that says what is awaited and why; gives up on any
/// other error, or when `stop` is cancelled.
async fn retry_connect<T, E, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    mut attempt: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Err(e) if retryable(&e) && !stop.is_cancelled() => {
                failures += 1;
                let delay = powerfleet_fleet::backoff::Backoff::START_UP.delay(failures);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    attempt = failures,
                    "waiting for {what}"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Err(e),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            other => return other,
        }
    }
}

/// Where results are stored.
#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// Results database: sqlite://FILE (created if missing) or postgres://...
    #[arg(
        long,
        env = "POWERFLEET_DATABASE_URL",
        default_value = "sqlite://powerfleet.db"
    )]
    pub database_url: String,
}

impl DatabaseArgs {
    pub async fn connect(&self) -> Result<Store> {
        Store::connect(&self.database_url)
            .await
            .context("cannot use the results database")
    }

    /// [`DatabaseArgs::connect`] for a long-running role: while the database cannot be reached,
    /// it says so and tries again with backoff, until `stop`.
    pub async fn connect_waiting(&self, stop: &CancellationToken) -> Result<Store> {
        retry_connect(
            "the results database",
            stop,
            || Store::connect(&self.database_url),
            |e| matches!(e, powerfleet_store::StoreError::Connect { .. }),
        )
        .await
        .context("cannot use the results database")
    }
}

/// Output format of status and submit.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    /// Human-readable text.
    Text,
    /// JSON, for scripts.
    Json,
}

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
    /// line every 10 s); exit 1 if any did not complete. With --database-url, also wait for the
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
        let store = match &args.database_url {
            Some(url) => Some(
                Store::connect(url)
                    .await
                    .context("--database-url: cannot use the results database")?,
            ),
            None => None,
        };
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

/// Watches `watched` until it is done, with live progress on stderr (see `progress`): for as
/// long as jobs finish or the collector stores results.
async fn wait(
    queue: &Queue,
    store: Option<&Store>,
    watched: &Watched,
) -> Result<powerfleet_fleet::watch::Snapshot> {
    let target = crate::progress::Target {
        queue,
        store,
        watched,
    };
    crate::progress::watch(&target, &WatchPolicy::default()).await
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
        problems: problems
            .into_iter()
            .map(|problem| GradedProblem {
                problem,
                model: None,
            })
            .collect(),
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

/// Arguments of `powerfleet worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Chains in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Register a model name: NAME=REFERENCE (repeatable), e.g. small=toy:pivot.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Consumer name, unique in the fleet (default: host-pid).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Lease: a job not renewed for this long is taken over by another worker.
    #[arg(long, default_value = "30s", value_parser = crate::options::parse_duration)]
    pub lease: Duration,
    /// --lease in milliseconds (the older spelling, still accepted).
    #[arg(long, conflicts_with = "lease")]
    pub lease_ms: Option<u64>,
    /// Lease renewal interval.
    #[arg(long, default_value = "5s", value_parser = crate::options::parse_duration)]
    pub heartbeat: Duration,
    /// --heartbeat in milliseconds (the older spelling, still accepted).
    #[arg(long, conflicts_with = "heartbeat")]
    pub heartbeat_ms: Option<u64>,
    /// Claims after which a job is dead-lettered.
    #[arg(long, default_value_t = 5)]
    pub max_deliveries: u32,
    /// Attempts per model request. When they all fail because the server is unavailable, the
    /// job goes back to the queue to wait for it (keeping its checkpoint); when they all fail
    /// the same way though the server answered, the request is at fault and the job fails.
    #[arg(long, default_value_t = 5)]
    pub model_attempts: u32,
    /// How long a job may wait for an unavailable model before it fails with the model's last
    /// error, e.g. 2h, 30m, 90s, 500ms.
    #[arg(long, default_value = "2h", value_parser = crate::options::parse_duration)]
    pub model_patience: Duration,
    /// Longest delay between two tries of a job that waits for its model (the delay starts at
    /// 1 s and doubles, with jitter).
    #[arg(long, default_value = "30s", value_parser = crate::options::parse_duration)]
    pub max_wait: Duration,
    /// On SIGTERM, how long to wait for in-flight chains to be checkpointed and handed back.
    #[arg(long, default_value = "10s", value_parser = crate::options::parse_duration)]
    pub grace: Duration,
    /// --grace in milliseconds (the older spelling, still accepted).
    #[arg(long, conflicts_with = "grace")]
    pub grace_ms: Option<u64>,
    /// Refuse inference servers that answer the same request differently from one time to the
    /// next: before it starts, the worker probes every mapped server (waiting for those that are
    /// down) and exits with an error naming the server and the settings that fix it when one
    /// is not deterministic. Without it, such a server is logged with a warning, and results
    /// record it (`pin.deterministic` false).
    #[arg(long)]
    pub require_deterministic: bool,
    #[command(flatten)]
    pub ops: crate::observe::OpsArgs,
}

fn default_consumer(role: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{role}-{host}-{}", std::process::id())
}

pub async fn worker(args: WorkerArgs) -> Result<()> {
    let mut config = WorkerConfig::new(args.consumer.unwrap_or_else(|| default_consumer("worker")));
    config.concurrency = args.concurrency;
    config.lease = millis_or(args.lease, args.lease_ms);
    config.heartbeat = millis_or(args.heartbeat, args.heartbeat_ms);
    config.max_deliveries = args.max_deliveries;
    config.model_attempts = args.model_attempts;
    config.patience = args.model_patience;
    config.max_wait = args.max_wait;
    config.grace = millis_or(args.grace, args.grace_ms);
    config.require_deterministic = args.require_deterministic;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid worker settings: {e}"))?;
    let models = Arc::new(ModelRegistry::new(&args.models).map_err(anyhow::Error::msg)?);
    models
        .check()
        .context("the worker does not start: fix the --model mapping")?;
    let stop = crate::observe::shutdown_token();
    if args.require_deterministic {
        models
            .require_deterministic(&stop)
            .await
            .context("the worker does not start")?;
        if stop.is_cancelled() {
            return Ok(());
        }
    }
    let queue = args.redis.connect_waiting(&stop).await?;
    args.ops
        .start(&queue, None, None, Some(&models), &stop)
        .await?;
    let report = worker::run(config, queue, models, stop.clone().cancelled_owned()).await;
    stop.cancel();
    eprintln!(
        "worker stopped: {} completed, {} failed, {} cancelled, {} dead, {} handed back, {} lost to other workers, {} put back to wait for their model",
        report.completed.load(std::sync::atomic::Ordering::Relaxed),
        report.failed.load(std::sync::atomic::Ordering::Relaxed),
        report.cancelled.load(std::sync::atomic::Ordering::Relaxed),
        report.dead.load(std::sync::atomic::Ordering::Relaxed),
        report
            .handed_back
            .load(std::sync::atomic::Ordering::Relaxed),
        report.lost.load(std::sync::atomic::Ordering::Relaxed),
        report.waited.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}

/// Arguments of `powerfleet collector`.
#[derive(Args, Debug)]
pub struct CollectorArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Consumer name, unique among collectors (default: host-pid).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Programs graded at once (humaneval results, each a sandboxed python3 process); other
    /// results are stored meanwhile.
    #[arg(long, env = "POWERFLEET_GRADING_EXECUTORS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub grading_executors: u16,
    /// Wall-clock limit of one graded program, whole seconds from 1s to 10m (also its CPU
    /// limit); a program still running then has failed.
    #[arg(long, env = "POWERFLEET_GRADING_TIMEOUT", default_value = "10s", value_parser = parse_grading_timeout)]
    pub grading_timeout: u64,
    /// --grading-timeout in seconds (the older spelling, still accepted).
    #[arg(long, env = "POWERFLEET_GRADING_TIMEOUT_SECS", conflicts_with = "grading_timeout", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub grading_timeout_secs: Option<u64>,
    /// The Python interpreter graded programs run in, mounted read-only in the sandbox with its
    /// prefix (run as root, one that user nobody can read: default /usr/bin/python3 where it
    /// exists, else python3 from PATH).
    #[arg(long, env = "POWERFLEET_GRADING_PYTHON")]
    pub grading_python: Option<std::path::PathBuf>,
    /// bubblewrap, which walls every graded program in (default /usr/bin/bwrap where it exists,
    /// else bwrap from PATH). Without a working one, humaneval results are stored with a
    /// grade_error that says what is missing.
    #[arg(long, env = "POWERFLEET_GRADING_BWRAP", value_name = "PATH")]
    pub grading_bwrap: Option<std::path::PathBuf>,
    /// Run graded programs without bubblewrap, as plain python3 processes behind Python-level
    /// guards only, which a hostile program gets past: for models you trust, on hosts where
    /// bubblewrap cannot run (docs/operations.md).
    #[arg(long, env = "POWERFLEET_GRADING_UNISOLATED", value_parser = clap::builder::BoolishValueParser::new())]
    pub grading_unisolated: bool,
    /// The longest a grader that reads the answer (math, choice, exact, regex) may take for one
    /// result; past it the result is stored without a grade, with the reason in grade_error.
    /// Other results are stored meanwhile.
    #[arg(long, env = "POWERFLEET_ANSWER_GRADING_BUDGET", default_value = "10s", value_parser = crate::options::parse_positive_duration)]
    pub answer_grading_budget: Duration,
    /// --answer-grading-budget in milliseconds (the older spelling, still accepted).
    #[arg(long, env = "POWERFLEET_ANSWER_GRADING_BUDGET_MS", conflicts_with = "answer_grading_budget", value_parser = clap::value_parser!(u64).range(1..))]
    pub answer_grading_budget_ms: Option<u64>,
    #[command(flatten)]
    pub ops: crate::observe::OpsArgs,
}

pub async fn collector(args: CollectorArgs) -> Result<()> {
    let stop = crate::observe::shutdown_token();
    let queue = args.redis.connect_waiting(&stop).await?;
    let store = args.database.connect_waiting(&stop).await?;
    let mut config = CollectorConfig::new(
        args.consumer
            .unwrap_or_else(|| default_consumer("collector")),
    );
    config.grading_executors = usize::from(args.grading_executors);
    let grading_timeout = args.grading_timeout_secs.unwrap_or(args.grading_timeout);
    config.sandbox.timeout = std::time::Duration::from_secs(grading_timeout);
    config.sandbox.cpu_seconds = grading_timeout;
    if let Some(python) = args.grading_python {
        config.sandbox.python = python;
    }
    if let Some(bwrap) = args.grading_bwrap {
        config.sandbox.bwrap = bwrap;
    }
    config.sandbox.unisolated = args.grading_unisolated;
    config.answer_grading_budget =
        millis_or(args.answer_grading_budget, args.answer_grading_budget_ms);
    args.ops
        .start(
            &queue,
            Some(&store),
            Some(&config.store_health),
            None,
            &stop,
        )
        .await?;
    let report = collector::run(config, queue, store, stop.clone().cancelled_owned()).await;
    stop.cancel();
    eprintln!(
        "collector stopped: {} stored, {} duplicates ignored, {} dead-lettered, {} store failures retried",
        report.stored.load(std::sync::atomic::Ordering::Relaxed),
        report.duplicates.load(std::sync::atomic::Ordering::Relaxed),
        report.dead.load(std::sync::atomic::Ordering::Relaxed),
        report
            .store_failures
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}

/// Arguments of `powerfleet status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A job id, batch id or correlation id.
    pub id: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Output format. JSON lists every job unless --limit or --after is given.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
    /// Wait until every job is finished and stored, showing progress by method on stderr, then
    /// print the status.
    #[arg(long)]
    pub wait: bool,
    /// List every job of a batch or correlation id, one a line.
    #[arg(long, conflicts_with = "limit")]
    pub jobs: bool,
    /// List at most N jobs of a batch or correlation id.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// List the jobs after this job id (the previous listing's last).
    #[arg(long, value_name = "JOB_ID")]
    pub after: Option<String>,
}

pub async fn status_cmd(args: StatusArgs) -> Result<()> {
    let after = args
        .after
        .as_deref()
        .map(|a| a.parse::<JobId>().context("--after"))
        .transpose()?;
    let listed = args.jobs || args.limit.is_some() || after.is_some();
    let page = Page {
        after,
        limit: match (args.limit, args.format) {
            (Some(n), _) => n,
            (None, OutFormat::Json) => usize::MAX,
            (None, OutFormat::Text) if listed => usize::MAX,
            (None, OutFormat::Text) => 0,
        },
        max_bytes: usize::MAX,
    };
    let queue = args.redis.connect().await?;
    let store = args.database.connect().await?;
    if args.wait {
        let found = status::status(&queue, Some(&store), &args.id, Page::NONE.into()).await?;
        let watched = match &found {
            StatusReport::Job(j) => Watched::Job(j.job_id),
            StatusReport::Batch { batch_id, .. } => Watched::Batch(*batch_id),
            StatusReport::Correlation { correlation_id, .. } => {
                Watched::Correlation(correlation_id.clone())
            }
        };
        wait(&queue, Some(&store), &watched).await?;
    }
    let query = StatusQuery {
        page,
        problems: true,
    };
    let report = status::status(&queue, Some(&store), &args.id, query).await?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        OutFormat::Text => {
            let tally = match &report {
                StatusReport::Job(_) => None,
                StatusReport::Batch { batch_id, .. } => {
                    queue.tally(TallyOf::Batch(*batch_id)).await?
                }
                StatusReport::Correlation { correlation_id, .. } => {
                    queue.tally(TallyOf::Correlation(correlation_id)).await?
                }
            };
            crate::output::write_status(&mut out, &report, tally.as_ref())?
        }
    }
    Ok(())
}

/// Arguments of `powerfleet cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The job to cancel.
    pub job_id: Option<String>,
    /// Cancel every job under this correlation id.
    #[arg(long, conflicts_with_all = ["job_id", "batch"])]
    pub correlation: Option<String>,
    /// Cancel every job of this batch.
    #[arg(long, conflicts_with = "job_id")]
    pub batch: Option<String>,
    /// With --batch or --correlation: a line per job before the summary.
    #[arg(long)]
    pub jobs: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
}

pub async fn cancel(args: CancelArgs) -> Result<()> {
    let queue = args.redis.connect().await?;
    let outcomes = match (&args.job_id, &args.correlation, &args.batch) {
        (Some(id), None, None) => {
            let id: JobId = id.parse().context("JOB_ID")?;
            vec![(id, control::cancel_job(&queue, id).await?)]
        }
        (None, Some(c), None) => {
            let c: CorrelationId = c.parse().context("--correlation")?;
            control::cancel_correlation(&queue, &c).await?
        }
        (None, None, Some(b)) => {
            let b: BatchId = b.parse().context("--batch")?;
            control::cancel_batch(&queue, b).await?
        }
        _ => bail!("give a JOB_ID, --correlation ID or --batch ID"),
    };
    if outcomes.is_empty() {
        bail!("no jobs found to cancel; check the id and --namespace");
    }
    {
        let mut out = std::io::stdout().lock();
        crate::output::write_cancel(&mut out, &outcomes, args.job_id.is_some(), args.jobs)?;
        out.flush()?;
    }
    if outcomes.iter().all(|(_, o)| *o == CancelOutcome::Missing) {
        bail!(
            "no such job in Redis (namespace {}); check the id",
            args.redis.namespace
        );
    }
    Ok(())
}

/// Export format of `results`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// One JSON result per line.
    Jsonl,
    /// Comma-separated values with a header.
    Csv,
    /// Completed samples as chat-format training data, one JSON record per line: `messages`
    /// (the prompt as a user message, or the job's chat messages, then the completion as the
    /// assistant's), `method`, `alpha`, `problem_id`, `job_id`, `seed`, and `correct` and
    /// `extracted` for graded jobs.
    Sft,
}

/// Arguments of `powerfleet results`.
#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// The batch to export.
    #[arg(long, conflicts_with = "correlation")]
    pub batch: Option<String>,
    /// Export every job under a correlation id instead.
    #[arg(long)]
    pub correlation: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// With --format sft: only samples graded correct.
    #[arg(long)]
    pub correct_only: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn results(args: ResultsArgs) -> Result<()> {
    if args.correct_only && !matches!(args.format, ExportFormat::Sft) {
        bail!("--correct-only needs --format sft");
    }
    let store = args.database.connect().await?;
    let rows = match (&args.batch, &args.correlation) {
        (Some(b), None) => store.jobs_by_batch(b.parse().context("--batch")?).await?,
        (None, Some(c)) => {
            store
                .jobs_by_correlation(&c.parse().context("--correlation")?)
                .await?
        }
        _ => bail!("give --batch ID or --correlation ID"),
    };
    if rows.is_empty() {
        let (flag, id) = match (&args.batch, &args.correlation) {
            (Some(b), _) => ("batch", b),
            (_, Some(c)) => ("correlation id", c),
            _ => unreachable!("one of --batch and --correlation is given"),
        };
        bail!(
            "no results stored for {flag} {id}: its jobs may not have finished yet or the collector has not stored them, or the id is wrong or in another database; see powerfleet status {id}"
        );
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        ExportFormat::Jsonl => {
            for r in &rows {
                serde_json::to_writer(&mut out, r)?;
                writeln!(out)?;
            }
        }
        ExportFormat::Csv => powerfleet_store::write_csv(&rows, &mut out)?,
        ExportFormat::Sft => {
            let records = rows
                .iter()
                .filter_map(JobResult::sft_record)
                .filter(|r| !args.correct_only || r.correct == Some(true));
            let mut written = 0usize;
            for record in records {
                serde_json::to_writer(&mut out, &record)?;
                writeln!(out)?;
                written += 1;
            }
            eprintln!(
                "{written} of {} results written as SFT records (completed, with text and a text or chat prompt{})",
                rows.len(),
                if args.correct_only {
                    ", graded correct"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// Arguments of `powerfleet serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "POWERFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most jobs one request may create.
    #[arg(long, default_value_t = 10_000)]
    pub max_jobs_per_request: usize,
    /// Most bytes of prompts one request may store, as JSON: each distinct prompt once, a
    /// benchmark's rendered prompts once per record and seed (measured before rendering).
    #[arg(long, default_value_t = powerfleet_fleet::api::DEFAULT_MAX_REQUEST_PROMPT_BYTES)]
    pub max_request_prompt_bytes: usize,
    /// Most bytes of job specifications one request may create, as JSON: every job of every
    /// problem, method, seed and chain (prompts are stored once and referenced).
    #[arg(long, default_value_t = powerfleet_fleet::api::DEFAULT_MAX_REQUEST_JOB_BYTES)]
    pub max_request_job_bytes: usize,
    /// Most bytes of jobs one page of GET /v1/batches/{id} or /v1/correlations/{id} holds;
    /// past it the page ends early and next_after says where the next one starts.
    #[arg(long, default_value_t = powerfleet_fleet::api::DEFAULT_MAX_PAGE_BYTES)]
    pub max_page_bytes: usize,
    /// Most proposal tokens one job may generate: n_mcmc x max_new_tokens for MCMC methods,
    /// max_new_tokens for the others; larger requests get 422.
    #[arg(long, default_value_t = powerfleet_fleet::api::DEFAULT_MAX_JOB_TOKENS)]
    pub max_job_tokens: u64,
    /// Requests per minute per API token (a minute's worth may come at once); more get 429
    /// with Retry-After. 0 turns the limit off.
    #[arg(long, default_value_t = powerfleet_fleet::api::DEFAULT_RATE_LIMIT_PER_MINUTE)]
    pub rate_limit_per_minute: u32,
    /// File of bearer tokens allowed to call the API, one per line (# starts a comment), added
    /// to those in POWERFLEET_API_TOKENS (comma-separated). With no token in either, serve
    /// refuses to start unless --insecure-no-auth is given.
    #[arg(long, env = "POWERFLEET_API_TOKENS_FILE")]
    pub api_tokens_file: Option<std::path::PathBuf>,
    /// Start without any token: everyone who can reach --listen may submit, read and cancel
    /// jobs. Only for a trusted network.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// A model name requests may use (repeatable): NAME, or NAME=REFERENCE as given to the
    /// workers' --model (the workers resolve it; the API only checks the name). Requests may
    /// also name the built-in toy models (toy:NAME).
    #[arg(long = "model", value_name = "NAME[=REFERENCE]")]
    pub models: Vec<String>,
    /// Let requests name model references as well: inference servers by URL (llamacpp+, vllm+,
    /// sglang+), toy model files and toy options, so token holders choose where workers send
    /// requests. Hosted-API references and key_env are refused even so.
    #[arg(long)]
    pub allow_model_references: bool,
    /// A dataset graded runs over the API may name (repeatable; POWERFLEET_DATASETS takes them
    /// comma-separated): NAME=PATH, a file as `submit --bench` reads it (JSONL, MATH500,
    /// multiple choice, HumanEval's code problems, also .jsonl.gz). Requests name it as
    /// "bench": {"dataset": "NAME"}; GET /v1/datasets lists them. Only these datasets may be
    /// graded by running code (humaneval): records a request carries may hold no test code.
    #[arg(
        long = "dataset",
        value_name = "NAME=PATH",
        env = "POWERFLEET_DATASETS",
        value_delimiter = ','
    )]
    pub datasets: Vec<String>,
    /// Largest --dataset file read, in bytes (uncompressed).
    #[arg(long, env = "POWERFLEET_MAX_DATASET_BYTES", default_value_t = powerfleet_datasets::DEFAULT_MAX_DATASET_BYTES)]
    pub max_dataset_bytes: u64,
    /// The sampler the OpenAI-compatible endpoints run for a model when a request's
    /// power_sampling does not say (repeatable): MODEL=JSON, or *=JSON for every model, the JSON
    /// a job configuration such as {"method":"power","alpha":4,"n_mcmc":10,"block_size":192}.
    /// Default: method power with every option at its default.
    #[arg(long = "openai-defaults", value_name = "MODEL=JSON")]
    pub openai_defaults: Vec<String>,
    /// Most chains (n) per prompt of an OpenAI-compatible request.
    #[arg(long, default_value_t = powerfleet_fleet::openai::DEFAULT_MAX_N)]
    pub openai_max_n: u32,
    /// Most OpenAI-compatible completions served at once (read, waited for and answered); more
    /// get 503 with Retry-After. Bounds what the completions hold together.
    #[arg(long, default_value_t = powerfleet_fleet::openai::DEFAULT_MAX_WAITING)]
    pub openai_max_waiting: usize,
    /// How long an OpenAI-compatible completion may wait for its jobs; past it the client gets
    /// 408 and the jobs are cancelled (as when the client disconnects).
    #[arg(long, env = "POWERFLEET_COMPLETION_TIMEOUT", default_value = "1h", value_parser = crate::options::parse_duration)]
    pub completion_timeout: std::time::Duration,
    #[command(flatten)]
    pub ops: crate::observe::OpsArgs,
}

/// The largest `--api-tokens-file` read: 1 MiB.
const MAX_TOKENS_FILE_BYTES: u64 = 1 << 20;

/// The bearer tokens of `serve`: the lines of `--api-tokens-file` that are neither blank nor
/// comments, and the comma-separated entries of `POWERFLEET_API_TOKENS`.
fn api_tokens(file: Option<&std::path::Path>, env: Option<&str>) -> Result<Vec<String>> {
    let mut tokens: Vec<String> = match file {
        Some(path) => {
            use std::io::Read;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_TOKENS_FILE_BYTES + 1).read_to_string(&mut text))
                .with_context(|| format!("cannot read --api-tokens-file {}", path.display()))?;
            if text.len() as u64 > MAX_TOKENS_FILE_BYTES {
                bail!(
                    "--api-tokens-file {} is larger than {MAX_TOKENS_FILE_BYTES} bytes (1 MiB), the most a tokens file may hold (one token per line); is it the right file?",
                    path.display()
                );
            }
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        }
        None => Vec::new(),
    };
    if let Some(env) = env {
        tokens.extend(
            env.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    }
    Ok(tokens)
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    use powerfleet_fleet::api::{self, ApiState, ModelPolicy, RequestLimits};
    // Checked before anything is connected: a misconfigured API fails at once, and closed.
    let env = std::env::var("POWERFLEET_API_TOKENS").ok();
    let tokens = api_tokens(args.api_tokens_file.as_deref(), env.as_deref())?;
    if tokens.is_empty() && !args.insecure_no_auth {
        bail!(
            "no API tokens configured, so serve does not start: set POWERFLEET_API_TOKENS (comma-separated bearer tokens) or --api-tokens-file FILE (one token per line){}, or pass --insecure-no-auth to serve without authentication on a trusted network",
            match &args.api_tokens_file {
                Some(path) => format!(" ({} holds none)", path.display()),
                None => String::new(),
            }
        );
    }
    let models = ModelPolicy::from_flags(&args.models, args.allow_model_references)?;
    let datasets = powerfleet_fleet::datasets::Datasets::load(
        &args.datasets,
        powerfleet_datasets::SizeCap {
            bytes: args.max_dataset_bytes,
            setting: "--max-dataset-bytes",
        },
    )?;
    let openai = powerfleet_fleet::openai::OpenAiSettings::from_flags(
        &args.openai_defaults,
        args.openai_max_n,
    )
    .map_err(anyhow::Error::msg)?;
    if args.openai_max_waiting == 0 {
        bail!("--openai-max-waiting must be at least 1, got 0");
    }
    let openai = powerfleet_fleet::openai::OpenAiSettings {
        body_timeout: args.ops.http_request_timeout,
        slots: powerfleet_fleet::openai::Slots::new(args.openai_max_waiting),
        ..openai
    };
    let stop = crate::observe::shutdown_token();
    let queue = args.redis.connect_waiting(&stop).await?;
    let store = args.database.connect_waiting(&stop).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    if tokens.is_empty() {
        tracing::warn!(
            "INSECURE: --insecure-no-auth and no API tokens: everyone who can reach {} may submit, read and cancel jobs; set POWERFLEET_API_TOKENS or --api-tokens-file before exposing it",
            args.listen
        );
    } else if args.insecure_no_auth {
        tracing::warn!(
            "--insecure-no-auth is ignored: API tokens are configured, so every request needs one"
        );
    }
    if models.allow_references {
        tracing::warn!(
            "--allow-model-references: token holders may name inference servers by URL and toy model files, and workers send requests where they say"
        );
    }
    tracing::info!(
        models = ?models.names,
        "API requests may name these models and the built-in toy models"
    );
    for d in datasets.list() {
        tracing::info!(
            dataset = %d.name,
            format = %d.format,
            problems = d.problems,
            grader = %d.grader,
            "graded runs may name this dataset"
        );
    }
    args.ops
        .start(&queue, Some(&store), None, None, &stop)
        .await?;
    let state = ApiState {
        queue,
        store,
        tokens: std::sync::Arc::new(tokens),
        models: std::sync::Arc::new(models),
        datasets: std::sync::Arc::new(datasets),
        openai: std::sync::Arc::new(openai),
        limits: RequestLimits {
            max_body_bytes: args.max_body_bytes,
            max_jobs_per_request: args.max_jobs_per_request,
            max_request_prompt_bytes: args.max_request_prompt_bytes,
            max_request_job_bytes: args.max_request_job_bytes,
            max_page_bytes: args.max_page_bytes,
            max_job_tokens: args.max_job_tokens,
            rate_limit_per_minute: args.rate_limit_per_minute,
            ..RequestLimits::default()
        },
    };
    let mut timeouts = args.ops.http_timeouts();
    timeouts.completion = args.completion_timeout;
    api::serve(listener, state, timeouts, stop.clone().cancelled_owned())
        .await
        .context("http api")
}

/// `--label`, checked as the job API checks it.
fn parse_label(s: &str) -> Result<powerfleet_jobs::Label, String> {
    s.parse()
        .map_err(|e: powerfleet_jobs::IdError| e.to_string())
}

/// `--grading-timeout`: a duration of whole seconds from 1 s to 10 min, in seconds.
fn parse_grading_timeout(text: &str) -> Result<u64, String> {
    let d = crate::options::parse_duration(text)?;
    if d.subsec_nanos() != 0 || !(1..=600).contains(&d.as_secs()) {
        return Err(format!(
            "{text:?} must be whole seconds from 1s to 10m (it is also the program's CPU limit)"
        ));
    }
    Ok(d.as_secs())
}

/// A duration flag's value: its older millisecond spelling when given, else the duration.
fn millis_or(duration: Duration, millis: Option<u64>) -> Duration {
    millis.map_or(duration, Duration::from_millis)
}

#[cfg(test)]
mod duration_flag_tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Worker {
        #[command(flatten)]
        args: WorkerArgs,
    }

    #[derive(Parser)]
    struct Collector {
        #[command(flatten)]
        args: CollectorArgs,
    }

    fn worker(flags: &[&str]) -> Result<WorkerArgs, clap::Error> {
        Worker::try_parse_from(std::iter::once("worker").chain(flags.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn durations_are_written_with_units_and_the_millisecond_spellings_still_read() {
        let w = worker(&[]).unwrap();
        assert_eq!(
            (
                millis_or(w.lease, w.lease_ms),
                millis_or(w.grace, w.grace_ms)
            ),
            (Duration::from_secs(30), Duration::from_secs(10))
        );
        let w = worker(&["--lease", "45s", "--heartbeat", "1.5s", "--grace", "1m"]).unwrap();
        assert_eq!(millis_or(w.lease, w.lease_ms), Duration::from_secs(45));
        assert_eq!(
            millis_or(w.heartbeat, w.heartbeat_ms),
            Duration::from_millis(1500)
        );
        assert_eq!(millis_or(w.grace, w.grace_ms), Duration::from_secs(60));
        let w = worker(&[
            "--lease-ms",
            "45000",
            "--heartbeat-ms",
            "1500",
            "--grace-ms",
            "60000",
        ])
        .unwrap();
        assert_eq!(millis_or(w.lease, w.lease_ms), Duration::from_secs(45));
        assert_eq!(
            millis_or(w.heartbeat, w.heartbeat_ms),
            Duration::from_millis(1500)
        );
        assert_eq!(millis_or(w.grace, w.grace_ms), Duration::from_secs(60));
        let both = worker(&["--lease", "45s", "--lease-ms", "45000"]).unwrap_err();
        assert!(both.to_string().contains("cannot be used with"), "{both}");
        let unitless = worker(&["--lease", "45"]).unwrap_err();
        assert!(
            unitless.to_string().contains("units are ms, s, m, h and d"),
            "{unitless}"
        );

        let c = |flags: &[&str]| {
            Collector::try_parse_from(std::iter::once("collector").chain(flags.iter().copied()))
                .map(|c| c.args)
        };
        let budget =
            |a: CollectorArgs| millis_or(a.answer_grading_budget, a.answer_grading_budget_ms);
        assert_eq!(budget(c(&[]).unwrap()), Duration::from_secs(10));
        assert_eq!(
            budget(c(&["--answer-grading-budget", "250ms"]).unwrap()),
            Duration::from_millis(250)
        );
        assert_eq!(
            budget(c(&["--answer-grading-budget-ms", "250"]).unwrap()),
            Duration::from_millis(250)
        );
        assert!(c(&["--answer-grading-budget", "0s"]).is_err());
        let timeout = |a: CollectorArgs| a.grading_timeout_secs.unwrap_or(a.grading_timeout);
        assert_eq!(timeout(c(&[]).unwrap()), 10);
        assert_eq!(timeout(c(&["--grading-timeout", "2m"]).unwrap()), 120);
        assert_eq!(timeout(c(&["--grading-timeout-secs", "3"]).unwrap()), 3);
        let retention = |a: CollectorArgs| a.redis.options().retention_s;
        assert_eq!(retention(c(&[]).unwrap()), 7 * 24 * 3600);
        assert_eq!(retention(c(&["--retention", "90m"]).unwrap()), 5400);
        assert_eq!(retention(c(&["--retention-secs", "60"]).unwrap()), 60);
        for bad in ["1.5s", "11m", "0s"] {
            let err = c(&["--grading-timeout", bad]).unwrap_err().to_string();
            assert!(err.contains("whole seconds from 1s to 10m"), "{err}");
        }
    }
}
