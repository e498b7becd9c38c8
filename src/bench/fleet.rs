//! `powerfleet bench fleet`: the fleet on a private redis-server: Redis commands and bytes per
//! block, checkpoint latency, claims by model names, a Redis Cluster beside a single Redis, and
//! jobs per second with 1, 2 and 4 worker processes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::producer::{self};
use powerfleet_jobs::Prompt;
use powerfleet_models::resolve_toy;
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_queue::{ClaimOutcome, Progress};
use powerfleet_sampler::{Chain, Method, SamplerConfig, run as run_chain};
use tokio_util::sync::CancellationToken;

use super::{percentile, queue_on, spawn_worker, spawn_worker_mapping, submission};

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

pub(super) async fn fleet(args: FleetBenchArgs) -> Result<()> {
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
