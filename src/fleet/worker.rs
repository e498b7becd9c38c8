//! `powerfleet worker`: take jobs from the queue, run their chains, checkpoint every block.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::worker::{self, WorkerConfig};

use super::*;

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
