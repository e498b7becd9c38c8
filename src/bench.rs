//! `powerfleet bench`: sampling throughput on one core against all cores (`sample`), the fleet's
//! Redis cost and end-to-end throughput (`fleet`), the fleet against an inference server
//! (`server`), the results collector with and without benchmark grading (`collector`), and the
//! OpenAI-compatible endpoint (`openai`, in `bench_openai.rs`), MH against Power-SMC
//! (`frontier`, in `bench_frontier.rs`), and an inference-server restart (`outage`, in
//! `bench_outage.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::producer::{self, Submission};
use powerfleet_fleet::request::{ModelPolicy, RequestLimits, SubmitRequest};
use powerfleet_fleet::worker::{self, WorkerConfig};
use powerfleet_jobs::{CorrelationId, Prompt};
use powerfleet_models::resolve_toy;
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_queue::{ClaimOutcome, Progress, Queue, QueueOptions};
use powerfleet_sampler::{Chain, ChainOutput, Method, SamplerConfig, run as run_chain};
use tokio_util::sync::CancellationToken;

use crate::sample::run_chains;

/// What to measure.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Sampling throughput on a toy model: one thread against all cores.
    Sample(SampleBenchArgs),
    /// The fleet on a private redis-server: Redis commands and bytes per block, checkpoint write
    /// latency, and jobs per second with 1, 2 and 4 worker processes.
    Fleet(FleetBenchArgs),
    /// The fleet against an inference server: tokens per second at increasing concurrency beside
    /// the server's own capacity under a plain load with the same settings, and the cost
    /// multiplier at the paper's settings scaled down.
    Server(ServerBenchArgs),
    /// Storing results: per second into SQLite and PostgreSQL, one result per transaction against
    /// one transaction per batch, and through the results collector on a private redis-server;
    /// then the collector with and without benchmark grading, grading alone on one thread, and
    /// building a batch's report.
    Collector(CollectorBenchArgs),
    /// The cost of an inference-server restart: a batch against a llama-server of its own, once
    /// without and once with an outage that cuts a chosen generation request mid-batch; jobs in
    /// SQL, identical tokens, deliveries, and the server's work redone beside the cut request's.
    Outage(crate::bench_outage::OutageBenchArgs),
    /// The OpenAI-compatible endpoint's overhead: requests/s and latency beside the job API for
    /// the same jobs, and one sample at a time beside llama-server's own /v1/completions.
    Openai(crate::bench_openai::OpenAiBenchArgs),
    /// MH power sampling and Power-SMC on one cost frontier: TV to p^α on the toy models and
    /// accuracy on the built-in suite against tokens generated per final token, and wall time per
    /// job on a llama-server.
    Frontier(crate::bench_frontier::FrontierBenchArgs),
    /// Grading throughput: completions per second by the `math` grader and by the `humaneval`
    /// grader (a sandboxed python3 per completion) per grading executor.
    Grading(crate::bench_grading::GradingBenchArgs),
}

/// Arguments of `powerfleet bench collector`.
#[derive(Args, Debug)]
pub struct CollectorBenchArgs {
    /// Results per measurement.
    #[arg(long, default_value_t = 5_000)]
    pub results: u64,
    /// Results per transaction in the batched measurements (the collector's default read).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// A PostgreSQL database to measure too, e.g. postgres://postgres@127.0.0.1/bench. The
    /// benchmark adds its results there (under new batch ids) and leaves them: use a scratch
    /// database (`createdb powerfleet_bench`). Without it, only SQLite is measured.
    #[arg(long, env = "POWERFLEET_BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
}

/// Arguments of `powerfleet bench server`.
#[derive(Args, Debug)]
pub struct ServerBenchArgs {
    /// The server, e.g. llamacpp+http://127.0.0.1:8080?k=64.
    #[arg(long)]
    pub model: String,
    /// Prompt text, tokenized by the server.
    #[arg(long, default_value = "hello")]
    pub prompt: String,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub concurrency: Vec<usize>,
    /// Seconds of plain load per level.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Chains per concurrency slot in the fleet run.
    #[arg(long, default_value_t = 3)]
    pub chains_per_slot: u64,
    /// Token budget of a chain (the paper's 3072 scaled down); 16 blocks as in the paper.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: u32,
}

/// Arguments of `powerfleet bench sample`.
#[derive(Args, Debug)]
pub struct SampleBenchArgs {
    /// Model to sample from.
    #[arg(long, default_value = "toy:eos-lengths")]
    pub model: String,
    /// Chains per measurement.
    #[arg(long, default_value_t = 100_000)]
    pub chains: u64,
    /// MCMC steps per block.
    #[arg(long, default_value_t = 10)]
    pub n_mcmc: u32,
    /// Block length in tokens.
    #[arg(long, default_value_t = 4)]
    pub block_size: u32,
    /// Token budget per completion.
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: u32,
}

/// Arguments of `powerfleet bench fleet`.
#[derive(Args, Debug)]
pub struct FleetBenchArgs {
    /// Jobs for the per-block cost measurement.
    #[arg(long, default_value_t = 200)]
    pub block_jobs: u64,
    /// Checkpoint writes for the latency measurement.
    #[arg(long, default_value_t = 2000)]
    pub checkpoints: u64,
    /// Trivial jobs per throughput measurement.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: u64,
    /// Chains in flight per worker process.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Also run the per-block and checkpoint measurements on a private Redis Cluster (three
    /// masters with a replica each; needs redis-cli) beside the single Redis, as ratios.
    #[arg(long)]
    pub cluster: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Sample(args) => sample(args),
        BenchCommand::Fleet(args) => crate::block_on(fleet(args)),
        BenchCommand::Server(args) => crate::block_on(server(args)),
        BenchCommand::Outage(args) => crate::block_on(crate::bench_outage::run(args)),
        BenchCommand::Collector(args) => crate::block_on(collector_bench(args)),
        BenchCommand::Openai(args) => crate::block_on(crate::bench_openai::run(args)),
        BenchCommand::Frontier(args) => crate::bench_frontier::run_bench(args),
        BenchCommand::Grading(args) => crate::bench_grading::run(args),
    }
}

fn sample(args: SampleBenchArgs) -> Result<()> {
    let model = resolve_toy(&args.model).context("--model")?;
    let config = SamplerConfig {
        n_mcmc: args.n_mcmc,
        block_size: args.block_size,
        max_new_tokens: args.max_new_tokens,
        ..SamplerConfig::new(Method::Power)
    }
    .validate()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "benchmark: {} chains of power sampling on {} (n_mcmc {}, block_size {}, max_new_tokens {}), 1 thread then {cores}",
        args.chains, args.model, args.n_mcmc, args.block_size, args.max_new_tokens
    );
    run_chains(
        &model,
        &config,
        &[],
        1,
        args.chains / 10 + 1,
        Some(1),
        false,
    )?;
    println!("| threads | seconds | proposals/s | tokens/s | speed-up |");
    println!("|---:|---:|---:|---:|---:|");
    let mut base = None;
    for threads in [1, cores] {
        let start = Instant::now();
        let outputs = run_chains(&model, &config, &[], 7, args.chains, Some(threads), true)?;
        let seconds = start.elapsed().as_secs_f64();
        let sum = |f: fn(&ChainOutput) -> u64| outputs.iter().map(f).sum::<u64>();
        let base = *base.get_or_insert(seconds);
        println!(
            "| {threads} | {seconds:.3} | {:.0} | {:.0} | {:.2}x |",
            sum(|o| o.stats.proposals) as f64 / seconds,
            sum(|o| o.stats.tokens_generated) as f64 / seconds,
            base / seconds
        );
    }
    Ok(())
}

pub(crate) async fn queue_on(url: &str, namespace: &str) -> Result<Queue> {
    Ok(Queue::connect(
        url,
        QueueOptions {
            namespace: namespace.into(),
            max_connections: 32,
            ..QueueOptions::default()
        },
    )
    .await?)
}

/// An in-process worker with `concurrency` chains in flight, until `stop` is cancelled.
fn spawn_worker(
    queue: &Queue,
    consumer: String,
    concurrency: usize,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Arc<worker::WorkerReport>> {
    spawn_worker_mapping(queue, consumer, concurrency, stop, Arc::default())
}

/// [`spawn_worker`] with the model names of `models`.
fn spawn_worker_mapping(
    queue: &Queue,
    consumer: String,
    concurrency: usize,
    stop: &CancellationToken,
    models: Arc<ModelRegistry>,
) -> tokio::task::JoinHandle<Arc<worker::WorkerReport>> {
    let mut config = WorkerConfig::new(consumer);
    config.concurrency = concurrency;
    config.read_block = Duration::from_millis(100);
    let (queue, stop) = (queue.clone(), stop.clone());
    tokio::spawn(async move {
        worker::run(config, queue, models, async move { stop.cancelled().await }).await
    })
}

/// `jobs` chains of one job of the configuration's method on `prompt`, as one batch.
pub(crate) fn submission(
    model: &str,
    config: SamplerConfig,
    jobs: u64,
    prompt: Prompt,
) -> Submission {
    let (text, tokens, messages) = match prompt {
        Prompt::Text(t) => (Some(t), None, None),
        Prompt::Tokens(ids) => (None, Some(ids), None),
        Prompt::Messages(m) => (None, None, Some(m)),
        Prompt::Stored(_) => (None, None, None),
    };
    SubmitRequest {
        model: model.into(),
        config: Some(config),
        prompt: text,
        prompt_tokens: tokens,
        messages,
        seeds: Some(vec![1]),
        chains: Some(jobs),
        correlation_id: Some(CorrelationId::generate()),
        ..SubmitRequest::default()
    }
    .into_submission(&RequestLimits::operator(), &ModelPolicy::operator())
    .expect("a benchmark's own submission is valid")
}

/// The `p`th percentile of sorted `values`.
fn percentile(values: &[u64], p: usize) -> u64 {
    values[(values.len() * p / 100).min(values.len() - 1)]
}

/// Latencies in µs, sorted, of `n` sequential fenced checkpoint writes of `checkpoint` under one
/// lease, on the Redis at `url`.
async fn checkpoint_latencies(url: &str, ns: &str, n: u64, checkpoint: &[u8]) -> Result<Vec<u64>> {
    let queue = queue_on(url, ns).await?;
    let receipt = producer::submit(
        &queue,
        &submission(
            "toy:tiny",
            SamplerConfig::new(Method::Power),
            1,
            Prompt::Tokens(vec![]),
        ),
    )
    .await?;
    let delivery = queue.read_jobs("bench", 1, 1000).await?.remove(0);
    let lease = match queue.claim(receipt.job_ids[0], &delivery, "bench").await? {
        ClaimOutcome::Claimed { lease, .. } => lease,
        other => anyhow::bail!("unexpected claim outcome {other:?}"),
    };
    let progress = Progress::default();
    let mut latencies = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        queue.checkpoint(&lease, &progress, checkpoint).await?;
        latencies.push(t.elapsed().as_micros() as u64);
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Round trips per block of `jobs` four-block power jobs on one in-process worker, on the Redis at
/// `url`; also the blocks run and the client's round trips.
async fn round_trips_per_block(
    url: &str,
    ns: &str,
    jobs: u64,
    concurrency: usize,
) -> Result<(u64, u64)> {
    let queue = queue_on(url, ns).await?;
    let requests_before = queue.requests();
    producer::submit(
        &queue,
        &submission(
            "toy:eos-lengths",
            block_config(),
            jobs,
            Prompt::Tokens(vec![]),
        ),
    )
    .await?;
    let stop = CancellationToken::new();
    let worker = spawn_worker(&queue, format!("{ns}-worker"), concurrency, &stop);
    while queue.stream_lengths().await?.1 < jobs {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let report = worker.await?;
    Ok((
        report.blocks.load(Ordering::Relaxed).max(1),
        queue.requests() - requests_before,
    ))
}

/// The per-block measurement's jobs: power, n_mcmc 10, block size 4, 16 tokens.
fn block_config() -> SamplerConfig {
    SamplerConfig {
        n_mcmc: 10,
        block_size: 4,
        max_new_tokens: 16,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::Power)
    }
}

/// A Redis Cluster (three masters with a replica each) beside a single Redis: round trips per
/// block, checkpoint latency, and the latency of a 100-job submission (which on the cluster waits
/// for a replica).
async fn cluster_beside_single(
    single: &str,
    args: &FleetBenchArgs,
    checkpoint: &[u8],
) -> Result<()> {
    eprintln!("benchmark: starting a private Redis Cluster (3 masters, 1 replica each)");
    let cluster = powerfleet_queue::local_cluster::LocalCluster::start(3, 1)
        .context("cannot start a private Redis Cluster (needs redis-server and redis-cli)")?;
    let cluster_url = cluster.url(0);
    let mut rows = Vec::new();
    for (name, url) in [
        ("single Redis", single.to_string()),
        ("Redis Cluster", cluster_url),
    ] {
        let (blocks, requests) =
            round_trips_per_block(&url, "bench-compare", args.block_jobs, args.concurrency).await?;
        let latencies =
            checkpoint_latencies(&url, "bench-compare-ckpt", args.checkpoints, checkpoint).await?;
        let queue = queue_on(&url, "bench-compare-submit").await?;
        let mut submits = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            producer::submit(
                &queue,
                &submission(
                    "toy:tiny",
                    SamplerConfig::new(Method::Power),
                    100,
                    Prompt::Tokens(vec![]),
                ),
            )
            .await?;
            submits.push(t.elapsed().as_micros() as u64);
        }
        submits.sort_unstable();
        rows.push((
            name,
            requests as f64 / blocks as f64,
            percentile(&latencies, 50),
            percentile(&latencies, 99),
            percentile(&submits, 50),
        ));
    }
    println!("\n## A Redis Cluster beside a single Redis\n");
    println!(
        "| Redis | round trips/block | checkpoint p50 | checkpoint p99 | 100-job submission p50 |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, rt, p50, p99, sub) in &rows {
        println!("| {name} | {rt:.2} | {p50} µs | {p99} µs | {sub} µs |");
    }
    let (single, cluster) = (&rows[0], &rows[1]);
    println!(
        "| cluster / single | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
        cluster.1 / single.1,
        cluster.2 as f64 / single.2.max(1) as f64,
        cluster.3 as f64 / single.3.max(1) as f64,
        cluster.4 as f64 / single.4.max(1) as f64
    );
    Ok(())
}

async fn fleet(args: FleetBenchArgs) -> Result<()> {
    let server = LocalRedis::start(LocalRedisOptions::default())?;
    let url = server.url();
    eprintln!("benchmark: private redis-server on port {}", server.port());

    // 1. Redis commands and bytes per block, all traffic included (claims, heartbeats, reads).
    let queue = queue_on(&url, "bench-blocks").await?;
    let config = block_config();
    let before = queue.server_stats().await?;
    let requests_before = queue.requests();
    producer::submit(
        &queue,
        &submission(
            "toy:eos-lengths",
            config.clone(),
            args.block_jobs,
            Prompt::Tokens(vec![]),
        ),
    )
    .await?;
    let stop = CancellationToken::new();
    let worker = spawn_worker(&queue, "bench-worker".into(), args.concurrency, &stop);
    while queue.stream_lengths().await?.1 < args.block_jobs {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let report = worker.await?;
    let requests = queue.requests() - requests_before;
    let after = queue.server_stats().await?;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let blocks = report.blocks.load(Ordering::Relaxed).max(1);
    let commands = delta("total_commands_processed");
    let bytes = delta("total_net_input_bytes") + delta("total_net_output_bytes");
    let model = resolve_toy("toy:eos-lengths")?;
    let mut chain = Chain::new(config.validate()?, &[], 1, 0);
    run_chain(&mut chain, &model).expect("toy models answer");
    let checkpoint = chain.checkpoint().to_json();
    println!("## Redis cost per block\n");
    println!(
        "{} jobs x {} blocks (n_mcmc 10, block size 4, 16 tokens), one worker:\n",
        args.block_jobs,
        config.max_new_tokens / config.block_size
    );
    println!(
        "| blocks | round trips | round trips/block | commands (with scripts' own) /block | bytes in+out /block | checkpoint size |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {blocks} | {requests} | {:.2} | {:.2} | {:.0} | {} bytes |",
        requests as f64 / blocks as f64,
        commands as f64 / blocks as f64,
        bytes as f64 / blocks as f64,
        checkpoint.len()
    );

    // 2. Checkpoint write latency: one lease, sequential writes.
    let latencies =
        checkpoint_latencies(&url, "bench-checkpoint", args.checkpoints, &checkpoint).await?;
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!("\n## Checkpoint write latency\n");
    println!("| writes | checkpoint size | p50 | p99 |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {} | {} bytes | {} µs | {} µs |",
        args.checkpoints,
        checkpoint.len(),
        pct(50),
        pct(99)
    );

    // 3. Jobs per second end to end (submitted -> result published), trivial chains.
    println!("\n## End-to-end throughput, trivial chains (one token, no MCMC)\n");
    println!("| worker processes | jobs | seconds | jobs/s | vs 1 process |");
    println!("|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().context("cannot find the powerfleet binary")?;
    let trivial = SamplerConfig {
        max_new_tokens: 1,
        block_size: 1,
        ..SamplerConfig::new(Method::Standard)
    };
    let mut base = None;
    for processes in [1usize, 2, 4] {
        let ns = format!("bench-e2e-{processes}");
        let queue = queue_on(&url, &ns).await?;
        let mut children = Vec::new();
        for _ in 0..processes {
            children.push(
                std::process::Command::new(&exe)
                    .args(["worker", "--redis", &url, "--namespace", &ns])
                    .args(["--concurrency", &args.concurrency.to_string()])
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .context("cannot start a worker process")?,
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sub = submission(
            "toy:tiny",
            trivial.clone(),
            args.jobs,
            Prompt::Tokens(vec![]),
        );
        let start = Instant::now();
        producer::submit(&queue, &sub).await?;
        while queue.stream_lengths().await?.1 < args.jobs {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = start.elapsed().as_secs_f64();
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let rate = args.jobs as f64 / seconds;
        let base = *base.get_or_insert(rate);
        println!(
            "| {processes} | {} | {seconds:.2} | {rate:.0} | {:.2}x |",
            args.jobs,
            rate / base
        );
    }
    claims_by_model_names(&url, &args, &trivial).await?;
    if args.cluster {
        cluster_beside_single(&url, &args, &checkpoint).await?;
    }
    Ok(())
}

/// Jobs claimed and run per second by one in-process worker, trivial chains: all jobs of one
/// model name, against the same jobs spread over several names the worker maps (each name a
/// stream of its own, read in turn).
async fn claims_by_model_names(
    url: &str,
    args: &FleetBenchArgs,
    trivial: &SamplerConfig,
) -> Result<()> {
    println!("\n## Claims per second with several model names in one namespace\n");
    println!("| model names | jobs | seconds | jobs claimed/s | vs one name |");
    println!("|---:|---:|---:|---:|---:|");
    let mut base = None;
    for names in [1u64, 8] {
        let ns = format!("bench-names-{names}");
        let queue = queue_on(url, &ns).await?;
        let mapping: Vec<String> = (0..names).map(|i| format!("m{i}=toy:tiny")).collect();
        let registry = Arc::new(ModelRegistry::new(&mapping).map_err(anyhow::Error::msg)?);
        let per_name = (args.jobs / names).max(1);
        let start = Instant::now();
        for i in 0..names {
            let sub = submission(
                &format!("m{i}"),
                trivial.clone(),
                per_name,
                Prompt::Tokens(vec![]),
            );
            producer::submit(&queue, &sub).await?;
        }
        let total = per_name * names;
        let stop = CancellationToken::new();
        let worker = spawn_worker_mapping(
            &queue,
            format!("bench-names-{names}"),
            args.concurrency,
            &stop,
            registry,
        );
        while queue.stream_lengths().await?.1 < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = start.elapsed().as_secs_f64();
        stop.cancel();
        worker.await?;
        let rate = total as f64 / seconds;
        let base = *base.get_or_insert(rate);
        println!(
            "| {names} | {total} | {seconds:.2} | {rate:.0} | {:.2}x |",
            rate / base
        );
    }
    Ok(())
}

async fn server(args: ServerBenchArgs) -> Result<()> {
    use powerfleet_backends::{HttpModel, ModelRef};
    let reference = match powerfleet_backends::parse(&args.model).map_err(anyhow::Error::msg)? {
        ModelRef::Http(h) => h,
        ModelRef::Hosted(h) => {
            anyhow::bail!(
                "{:?} {}: {}",
                h.provider,
                h.model,
                powerfleet_backends::HOSTED_CHAT_REFUSAL
            )
        }
    };
    anyhow::ensure!(
        args.max_new_tokens >= 16,
        "--max-new-tokens must be >= 16 (16 blocks)"
    );
    let model = Arc::new(HttpModel::new(reference));
    let prompt = model
        .tokenize(&args.prompt)
        .await
        .context("tokenizing --prompt")?;
    // The paper's settings (α = 4, 10 MCMC steps, 16 blocks), scaled down in length.
    let config = SamplerConfig {
        n_mcmc: 10,
        block_size: args.max_new_tokens / 16,
        max_new_tokens: args.max_new_tokens,
        finish_on_eos: true,
        ..SamplerConfig::new(Method::Power)
    };
    let valid = config.validate()?;
    let redis = LocalRedis::start(LocalRedisOptions::default())?;
    eprintln!(
        "benchmark: {} ({}), private redis-server on port {}",
        args.model,
        model.exactness(None),
        redis.port()
    );
    println!(
        "| concurrency | server alone: tokens/s | fleet: tokens/s | fleet / server | fleet cost multiplier |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for &c in &args.concurrency {
        anyhow::ensure!(c >= 1, "--concurrency levels must be >= 1");
        // Plain load: c clients sending block-sized requests with the chain's settings.
        let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..c {
            let (model, prompt) = (model.clone(), prompt.clone());
            let (temperature, block) = (valid.temperature(), valid.block_size());
            clients.spawn(async move {
                let mut tokens = 0u64;
                let mut seed = client as u64 * 1_000_000;
                while Instant::now() < deadline {
                    seed += 1;
                    let request = powerfleet_sampler::OwnedRequest {
                        prefix: prompt.clone(),
                        prompt_len: prompt.len(),
                        max_tokens: block,
                        temperature,
                        top_k: None,
                        seed,
                    };
                    if let Ok(g) = model.generate(&request, client as u64).await {
                        tokens += g.tokens.len() as u64;
                    }
                }
                tokens
            });
        }
        let start = Instant::now();
        let mut plain = 0u64;
        while let Some(t) = clients.join_next().await {
            plain += t?;
        }
        let plain_rate = plain as f64 / start.elapsed().as_secs_f64();

        // The fleet: one worker with c chains in flight, through Redis.
        let ns = format!("bench-server-{c}");
        let queue = queue_on(&redis.url(), &ns).await?;
        let jobs = c as u64 * args.chains_per_slot;
        let sub = submission(
            &args.model,
            config.clone(),
            jobs,
            Prompt::Tokens(prompt.clone()),
        );
        let stop = CancellationToken::new();
        let worker = spawn_worker(&queue, format!("bench-{c}"), c, &stop);
        let start = Instant::now();
        producer::submit(&queue, &sub).await?;
        let mut generated = 0u64;
        let mut final_tokens = 0u64;
        let mut seen = 0u64;
        while seen < jobs {
            for d in queue.read_results("bench", 100, 200).await? {
                let r = d.result.map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    r.status == powerfleet_jobs::JobStatus::Completed,
                    "a benchmark job ended {}: {:?}",
                    r.status,
                    r.error
                );
                generated += r.stats.tokens_generated;
                final_tokens += r.tokens.len() as u64;
                seen += 1;
            }
        }
        let fleet_rate = generated as f64 / start.elapsed().as_secs_f64();
        stop.cancel();
        worker.await?;
        println!(
            "| {c} | {plain_rate:.0} | {fleet_rate:.0} | {:.2} | {:.2} |",
            fleet_rate / plain_rate,
            generated as f64 / final_tokens.max(1) as f64
        );
    }
    Ok(())
}

/// MATH-style completions and their reference answers: fractions, radicals, intervals, units and
/// text, each answered right or in an equivalent or a wrong form.
const MATH_CASES: [(&str, &str); 8] = [
    ("\\frac{3}{4}", "0.75"),
    ("2\\sqrt{3}", "2\\sqrt3"),
    ("(-\\infty, 2]", "(-\\infty,2]"),
    ("10", "10\\text{ cm}"),
    ("\\text{Evelyn}", "Evelyn"),
    ("\\dfrac{1}{2}", "\\frac{1}{3}"),
    ("90^\\circ", "90"),
    ("1,000", "1000"),
];

/// `n` MATH gradings and completions, as [`synthetic_result`] makes them.
pub(crate) fn math_gradings(n: u64) -> Vec<(powerfleet_jobs::Grading, String)> {
    let batch = powerfleet_jobs::BatchId::new();
    (0..n)
        .map(|i| {
            let r = synthetic_result(batch, i, true);
            (
                r.grading.expect("graded"),
                r.text.expect("a completion's text"),
            )
        })
        .collect()
}

/// A completed benchmark result of `i`: a few hundred characters of reasoning, then a boxed answer.
fn synthetic_result(
    batch: powerfleet_jobs::BatchId,
    i: u64,
    graded: bool,
) -> powerfleet_jobs::JobResult {
    use powerfleet_jobs::{Grader, Grading, JobId, JobResult, JobStatus, ReferenceAnswer};
    let (reference, answer) = MATH_CASES[(i % MATH_CASES.len() as u64) as usize];
    let spec = powerfleet_jobs::JobSpec {
        job_id: JobId::new(),
        correlation_id: CorrelationId::generate(),
        batch_id: Some(batch),
        problem_id: Some(format!("p{}", i / 8)),
        model: "bench".into(),
        prompt: Prompt::Text(String::new()),
        config: SamplerConfig::new(Method::Power),
        seed: i % 8,
        stream: 0,
        submitted_at_ms: powerfleet_jobs::now_ms(),
        fallback_single_sample: false,
        stop: Vec::new(),
        chat: false,
        grading: graded.then(|| Grading {
            template: "math-cot".into(),
            grader: Grader::Math,
            reference: ReferenceAnswer::Text(reference.into()),
            price_per_mtok: None,
            reasoning_markers: None,
        }),
        label: None,
    };
    let mut r = JobResult::for_spec(&spec, JobStatus::Completed, 1, None);
    r.tokens = (0..256).collect();
    r.text = Some(format!(
        "{}So the final answer is $\\boxed{{{answer}}}$.",
        "We expand the expression, collect the terms and simplify step by step. ".repeat(6)
    ));
    r.stats.tokens_generated = 2_560;
    r
}

/// Stores `results` through a collector reading `batch` at a time; returns the seconds it took.
async fn collect_all(
    redis: &LocalRedis,
    store: &powerfleet_store::Store,
    namespace: &str,
    results: &[powerfleet_jobs::JobResult],
    batch: usize,
) -> Result<f64> {
    use powerfleet_fleet::collector::{self, CollectorConfig};
    let queue = queue_on(&redis.url(), namespace).await?;
    queue.ensure_groups().await?;
    for r in results {
        let json = serde_json::to_string(r)?;
        queue
            .push_raw_result_entry(&[("job_id", &r.job_id.to_string()), ("result", &json)])
            .await?;
    }
    let batch_id = results[0]
        .batch_id
        .context("benchmark results have a batch")?;
    let stop = CancellationToken::new();
    let mut config = CollectorConfig::new(format!("bench-{namespace}"));
    config.read_block = Duration::from_millis(50);
    config.batch = batch;
    let start = Instant::now();
    let role = tokio::spawn({
        let (queue, store, stop) = (queue.clone(), store.clone(), stop.clone());
        async move { collector::run(config, queue, store, async move { stop.cancelled().await }).await }
    });
    // One collector stores the entries in stream order (a grading that takes longer than a
    // round may come a round later), so the last one is stored last or nearly; a primary-key
    // lookup keeps the polling off the database's back, and the count is checked after it.
    let last = results[results.len() - 1].job_id;
    while store.job(last).await?.is_none() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut stored = store.batch_summary(batch_id).await?.map_or(0, |s| s.jobs);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored < results.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        stored = store.batch_summary(batch_id).await?.map_or(0, |s| s.jobs);
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.cancel();
    role.await?;
    anyhow::ensure!(
        stored == results.len() as u64,
        "the collector stored {stored} of {} results",
        results.len()
    );
    Ok(seconds)
}

/// Results per second stored into `store` one transaction per result, and one transaction per
/// `batch` results (each measured on `n` new results).
async fn store_rates(store: &powerfleet_store::Store, n: u64, batch: usize) -> Result<(f64, f64)> {
    let results = |b| {
        (0..n)
            .map(|i| synthetic_result(b, i, false))
            .collect::<Vec<_>>()
    };
    let (one_batch, many_batch) = (
        powerfleet_jobs::BatchId::new(),
        powerfleet_jobs::BatchId::new(),
    );
    let one = results(one_batch);
    let start = Instant::now();
    for r in &one {
        anyhow::ensure!(store.record(r).await?, "job {} was stored before", r.job_id);
    }
    let one_s = start.elapsed().as_secs_f64();
    let many = results(many_batch);
    let start = Instant::now();
    for chunk in many.chunks(batch) {
        for outcome in store.record_batch(chunk).await? {
            anyhow::ensure!(
                matches!(outcome, powerfleet_store::Recorded::Stored),
                "a benchmark result was not stored: {outcome:?}"
            );
        }
    }
    let many_s = start.elapsed().as_secs_f64();
    for b in [one_batch, many_batch] {
        let jobs = store.batch_summary(b).await?.map_or(0, |s| s.jobs);
        anyhow::ensure!(jobs == n, "batch {b} counts {jobs} jobs, not {n}");
    }
    Ok((n as f64 / one_s, n as f64 / many_s))
}

async fn collector_bench(args: CollectorBenchArgs) -> Result<()> {
    anyhow::ensure!(args.results >= 100, "--results must be >= 100");
    anyhow::ensure!(args.batch >= 1, "--batch must be >= 1");
    let redis = LocalRedis::start(LocalRedisOptions::default())?;
    // The SQLite file lives in the redis-server's temporary directory, removed with it.
    let dir = redis.dir().to_path_buf();
    let store =
        powerfleet_store::Store::connect(&format!("sqlite://{}", dir.join("bench.db").display()))
            .await?;
    let postgres = match &args.postgres {
        Some(url) => Some(
            powerfleet_store::Store::connect(url)
                .await
                .context("--postgres")?,
        ),
        None => None,
    };
    eprintln!(
        "benchmark: {} results per measurement, private redis-server on port {}, SQLite in {}{}",
        args.results,
        redis.port(),
        dir.display(),
        match &postgres {
            Some(pg) => format!(", PostgreSQL at {}", pg.url()),
            None => ", no PostgreSQL (--postgres URL measures one)".to_string(),
        }
    );
    let batch = |graded| {
        let b = powerfleet_jobs::BatchId::new();
        (0..args.results)
            .map(|i| synthetic_result(b, i, graded))
            .collect::<Vec<_>>()
    };

    println!(
        "| database | one result per transaction, results/s | one transaction per {} results, \
         results/s | batched vs one per transaction | collector, results/s |",
        args.batch
    );
    println!("|---|---:|---:|---:|---:|");
    let mut databases = vec![("SQLite", &store)];
    if let Some(pg) = &postgres {
        databases.push(("PostgreSQL", pg));
    }
    let mut plain_s = None;
    for (name, db) in databases {
        let (one, many) = store_rates(db, args.results, args.batch).await?;
        let plain = batch(false);
        let namespace = format!("bench-{}", name.to_lowercase());
        let seconds = collect_all(&redis, db, &namespace, &plain, args.batch).await?;
        plain_s.get_or_insert(seconds);
        println!(
            "| {name} | {one:.0} | {many:.0} | {:.1}x | {:.0} |",
            many / one,
            args.results as f64 / seconds
        );
    }
    let plain_s = plain_s.context("SQLite is always measured")?;
    println!();

    let graded = batch(true);
    let graded_s = collect_all(&redis, &store, "bench-graded", &graded, args.batch).await?;

    let start = Instant::now();
    let mut right = 0u64;
    for r in &graded {
        let grading = r
            .grading
            .as_ref()
            .context("graded results carry a reference")?;
        let g = powerfleet_grade::grade(grading, r.text.as_deref().unwrap_or(""))
            .map_err(anyhow::Error::msg)?;
        right += u64::from(g.correct);
    }
    let grade_s = start.elapsed().as_secs_f64();
    let stored = store
        .jobs_by_batch(graded[0].batch_id.context("a batch")?)
        .await?;
    let start = Instant::now();
    let report = powerfleet_report::build("bench", &stored, &powerfleet_report::Prices::default());
    let report_s = start.elapsed().as_secs_f64();
    let stored_right = stored
        .iter()
        .filter(|r| r.grade.as_ref().is_some_and(|g| g.correct))
        .count() as u64;
    anyhow::ensure!(
        report.graded == args.results && right == stored_right,
        "the collector graded {} of {} results, {stored_right} right; grading alone found {right} right",
        report.graded,
        args.results
    );
    let n = args.results as f64;
    println!("| measurement | seconds | results/s | vs collector without grading |");
    println!("|---|---:|---:|---:|");
    println!(
        "| collector, results without a reference | {plain_s:.2} | {:.0} | 1.00x |",
        n / plain_s
    );
    println!(
        "| collector, MATH results graded before storing | {graded_s:.2} | {:.0} | {:.2}x |",
        n / graded_s,
        plain_s / graded_s
    );
    println!(
        "| grading alone, one thread | {grade_s:.3} | {:.0} | {:.0}x |",
        n / grade_s,
        plain_s / grade_s
    );
    println!(
        "| building the batch's report | {report_s:.3} | {:.0} | {:.0}x |",
        n / report_s,
        plain_s / report_s
    );
    Ok(())
}
