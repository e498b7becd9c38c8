//! `powerfleet serve`: the HTTP API (jobs, status, cancel, datasets) and the OpenAI-compatible
//! endpoints.

use anyhow::{Context, Result, bail};
use clap::Args;

use super::*;

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
