//! `powerfleet bench`: sampling throughput on one core against all cores (`sample`), the fleet's
//! Redis cost and end-to-end throughput (`fleet`), the fleet against an inference server
//! (`server`), the results collector with and without benchmark grading (`collector`), and the
//! OpenAI-compatible endpoint (`openai`), MH against Power-SMC
//! (`frontier`), and an inference-server restart (`outage`).
//! Each subcommand is a module of its own; this one dispatches and holds what they share.

mod collector;
mod fleet;
mod frontier;
mod grading;
mod openai;
mod outage;
mod sample;
mod server;

pub use collector::CollectorBenchArgs;
pub use fleet::FleetBenchArgs;
pub use sample::SampleBenchArgs;
pub use server::ServerBenchArgs;

pub(crate) use collector::math_gradings;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::producer::Submission;
use powerfleet_fleet::request::{ModelPolicy, RequestLimits, SubmitRequest};
use powerfleet_fleet::worker::{self, WorkerConfig};
use powerfleet_jobs::{CorrelationId, Prompt};
use powerfleet_queue::{Queue, QueueOptions};
use powerfleet_sampler::SamplerConfig;
use tokio_util::sync::CancellationToken;

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
    Outage(outage::OutageBenchArgs),
    /// The OpenAI-compatible endpoint's overhead: requests/s and latency beside the job API for
    /// the same jobs, and one sample at a time beside llama-server's own /v1/completions.
    Openai(openai::OpenAiBenchArgs),
    /// MH power sampling and Power-SMC on one cost frontier: TV to p^α on the toy models and
    /// accuracy on the built-in suite against tokens generated per final token, and wall time per
    /// job on a llama-server.
    Frontier(frontier::FrontierBenchArgs),
    /// Grading throughput: completions per second by the `math` grader and by the `humaneval`
    /// grader (a sandboxed python3 per completion) per grading executor.
    Grading(grading::GradingBenchArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Sample(args) => sample::sample(args),
        BenchCommand::Fleet(args) => crate::block_on(fleet::fleet(args)),
        BenchCommand::Server(args) => crate::block_on(server::server(args)),
        BenchCommand::Outage(args) => crate::block_on(outage::run(args)),
        BenchCommand::Collector(args) => crate::block_on(collector::collector_bench(args)),
        BenchCommand::Openai(args) => crate::block_on(openai::run(args)),
        BenchCommand::Frontier(args) => frontier::run_bench(args),
        BenchCommand::Grading(args) => grading::run(args),
    }
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
