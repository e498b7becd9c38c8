//! `powerfleet demo`: the whole fleet on one machine. A private redis-server if none answers,
//! workers and a collector in-process, progress, and two built-in batches on the toy models: an
//! exactness check (a table per method beside the exact p^α) and the built-in benchmark suite,
//! graded by the collector (power, low-temp and standard beside the exact probability of a
//! correct answer, then the suite's report).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_datasets::suite::{SUITE_ALPHA, SUITE_MAX_TOKENS};
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::collector::{self, CollectorConfig};
use powerfleet_fleet::producer::{self, BatchLine, Receipt};
use powerfleet_fleet::request::{GradedRunRequest, ModelPolicy, RequestLimits, SubmitRequest};
use powerfleet_fleet::watch::{self, WatchPolicy, Watched};
use powerfleet_fleet::worker::{self, WorkerConfig};
use powerfleet_jobs::{BatchId, CorrelationId, JobResult, JobStatus};
use powerfleet_models::exact::{Histogram, enumerate, tv_tolerance};
use powerfleet_models::resolve_toy;
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions, ping_addr};
use powerfleet_queue::{Queue, QueueOptions};
use powerfleet_report::Prices;
use powerfleet_sampler::{Alpha, Method, SamplerConfig, TokenId};
use powerfleet_store::Store;
use tokio_util::sync::CancellationToken;

/// Arguments of `powerfleet demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Redis to use; when none answers there, a private redis-server is started.
    #[arg(
        long,
        env = "POWERFLEET_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis: String,
    /// Results database.
    #[arg(long, default_value = "sqlite://powerfleet-demo.db")]
    pub database_url: String,
    /// Worker tasks.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Chains in flight per worker.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Chains per model, method and seed.
    #[arg(long, default_value_t = 50)]
    pub chains: u64,
    /// Seeds per model and method.
    #[arg(long, default_value_t = 4)]
    pub seeds: u64,
    /// MCMC steps per block (the paper's 10 by default; more steps bring power closer to p^α).
    #[arg(long, default_value_t = 10)]
    pub n_mcmc: u32,
}

const MODELS: [&str; 2] = ["toy:pivot", "toy:eos-lengths"];
const METHODS: [Method; 5] = [
    Method::Power,
    Method::MaxSwap,
    Method::LowTemp,
    Method::Standard,
    Method::PowerSmc,
];

fn demo_config(n_mcmc: u32) -> SamplerConfig {
    SamplerConfig {
        n_mcmc,
        block_size: 4,
        max_new_tokens: 8,
        ..SamplerConfig::new(Method::Power)
    }
}

/// The methods the built-in suite compares.
/// (power-smc is in the exactness check; the suite's table sets each method beside the exact
/// probability of a correct answer under its own target, which SMC at finite N does not have.)
const SUITE_METHODS: [Method; 3] = [Method::Power, Method::LowTemp, Method::Standard];

fn suite_config(n_mcmc: u32) -> SamplerConfig {
    SamplerConfig {
        n_mcmc,
        alpha: Some(Alpha::new(SUITE_ALPHA).expect("the suite's alpha is valid")),
        block_size: 3,
        max_new_tokens: SUITE_MAX_TOKENS,
        ..SamplerConfig::new(Method::Power)
    }
}

/// The suite's table: per problem and method, the share of correct samples beside the exact
/// probability of a correct answer under the distribution the method targets; then the report.
fn write_suite(out: &mut impl Write, batch: BatchId, results: &[JobResult]) -> Result<()> {
    let report = powerfleet_report::build(&batch.to_string(), results, &Prices::default());
    writeln!(
        out,
        "\nbuilt-in benchmark suite  batch {batch}  alpha {SUITE_ALPHA}  low-temp at 1/alpha\nshare of correct samples per method | exact probability of a correct answer under the method's target (p^alpha, tokens at 1/alpha, p)"
    )?;
    writeln!(
        out,
        "{:<10} {:>6}  {:>7} {:>7}  {:>8} {:>7}  {:>8} {:>7}",
        "problem",
        "answer",
        SUITE_METHODS[0].as_str(),
        "p^a",
        SUITE_METHODS[1].as_str(),
        "exact",
        SUITE_METHODS[2].as_str(),
        "exact"
    )?;
    let mut exact_sum = [0.0; 3];
    for item in powerfleet_datasets::builtin_suite() {
        let mass = item.exact_correct_mass().map_err(anyhow::Error::msg)?;
        let row = report
            .per_problem
            .iter()
            .find(|p| p.problem_id == item.problem.id);
        let share = |method: Method| {
            row.and_then(|p| p.methods.iter().find(|m| m.method == method.as_str()))
                .filter(|m| m.graded > 0)
                .map_or("-".to_string(), |m| {
                    format!("{:.3}", m.correct as f64 / m.graded as f64)
                })
        };
        exact_sum[0] += mass.power;
        exact_sum[1] += mass.low_temp;
        exact_sum[2] += mass.standard;
        writeln!(
            out,
            "{:<10} {:>6}  {:>7} {:>7.3}  {:>8} {:>7.3}  {:>8} {:>7.3}",
            item.problem.id,
            row.and_then(|p| p.reference.clone()).unwrap_or_default(),
            share(Method::Power),
            mass.power,
            share(Method::LowTemp),
            mass.low_temp,
            share(Method::Standard),
            mass.standard
        )?;
    }
    let n = powerfleet_datasets::builtin_suite().len() as f64;
    let accuracy = |method: Method| {
        report
            .methods
            .iter()
            .find(|m| m.row == method.as_str())
            .and_then(|m| m.accuracy)
            .map_or("-".to_string(), |a| format!("{a:.3}"))
    };
    writeln!(
        out,
        "{:<10} {:>6}  {:>7} {:>7.3}  {:>8} {:>7.3}  {:>8} {:>7.3}\n",
        "mean",
        "",
        accuracy(Method::Power),
        exact_sum[0] / n,
        accuracy(Method::LowTemp),
        exact_sum[1] / n,
        accuracy(Method::Standard),
        exact_sum[2] / n
    )?;
    writeln!(
        out,
        "The low-temp and standard shares match their exact columns up to sampling noise; power moves\ntowards the p^alpha column with more MCMC steps per block (--n-mcmc), at the cost shown below.\n"
    )?;
    powerfleet_report::write(&report, powerfleet_report::ReportFormat::Table, out)?;
    writeln!(out)?;
    Ok(())
}

fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    Some(if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    })
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    anyhow::ensure!(args.workers >= 1, "--workers must be >= 1, got 0");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be >= 1, got 0");
    anyhow::ensure!(
        args.chains >= 1 && args.seeds >= 1,
        "--chains and --seeds must be >= 1"
    );
    let mut private = None;
    let redis_url = if args.redis.starts_with("redis://")
        && host_port(&args.redis).is_some_and(|hp| ping_addr(&hp))
    {
        eprintln!(
            "using Redis at {}",
            powerfleet_queue::redact_url(&args.redis)
        );
        args.redis.clone()
    } else {
        let server = LocalRedis::start(LocalRedisOptions::default())
            .context("no Redis answered and a private one could not be started")?;
        eprintln!(
            "no Redis answered at {}; started a private redis-server on 127.0.0.1:{} (data in {}, removed at exit)",
            powerfleet_queue::redact_url(&args.redis),
            server.port(),
            server.dir().display()
        );
        let url = server.url();
        private = Some(server);
        url
    };
    let database_url = args.database_url.clone();
    // A fresh namespace: the demo never touches other jobs on a shared Redis.
    let namespace = format!("demo-{}", std::process::id());
    let queue = Queue::connect(
        &redis_url,
        QueueOptions {
            namespace: namespace.clone(),
            ..QueueOptions::default()
        },
    )
    .await?;
    let store = Store::connect(&database_url).await?;

    let stop = CancellationToken::new();
    let models = Arc::new(ModelRegistry::default());
    let mut roles = Vec::new();
    for i in 0..args.workers {
        let mut config = WorkerConfig::new(format!("demo-worker-{i}"));
        config.concurrency = args.concurrency;
        config.read_block = Duration::from_millis(200);
        let stop = stop.clone();
        roles.push(tokio::spawn({
            let (queue, models) = (queue.clone(), models.clone());
            async move {
                worker::run(config, queue, models, async move { stop.cancelled().await }).await;
            }
        }));
    }
    {
        let mut config = CollectorConfig::new("demo-collector".into());
        config.read_block = Duration::from_millis(200);
        let (queue, store, stop) = (queue.clone(), store.clone(), stop.clone());
        roles.push(tokio::spawn(async move {
            collector::run(config, queue, store, async move { stop.cancelled().await }).await;
        }));
    }

    let correlation_id = CorrelationId::generate();
    let mut receipts = Vec::new();
    for model in MODELS {
        let submission = SubmitRequest {
            model: model.to_string(),
            config: Some(demo_config(args.n_mcmc)),
            methods: Some(METHODS.to_vec()),
            problems: Some(vec![BatchLine {
                id: Some(model.trim_start_matches("toy:").to_string()),
                prompt: None,
                prompt_tokens: Some(vec![]),
                messages: None,
            }]),
            seeds: Some((0..args.seeds).collect()),
            chains: Some(args.chains),
            correlation_id: Some(correlation_id.clone()),
            ..SubmitRequest::default()
        }
        .into_submission(&RequestLimits::operator(), &ModelPolicy::operator())?;
        receipts.push((model, producer::submit(&queue, &submission).await?));
    }
    let exactness_jobs: usize = receipts.iter().map(|(_, r)| r.job_ids.len()).sum();
    let suite = SubmitRequest {
        model: "toy:suite-arith".to_string(),
        config: Some(suite_config(args.n_mcmc)),
        methods: Some(SUITE_METHODS.to_vec()),
        seeds: Some((0..args.seeds).collect()),
        chains: Some(args.chains),
        correlation_id: Some(correlation_id.clone()),
        bench: Some(GradedRunRequest {
            builtin: Some("suite".into()),
            ..GradedRunRequest::default()
        }),
        ..SubmitRequest::default()
    }
    .into_submission(&RequestLimits::operator(), &ModelPolicy::operator())?;
    let suite_problems = powerfleet_datasets::builtin_suite().len();
    receipts.push(("builtin:suite", producer::submit(&queue, &suite).await?));
    let total: usize = receipts.iter().map(|(_, r)| r.job_ids.len()).sum();
    eprintln!(
        "submitted {total} jobs under correlation id {correlation_id}: {exactness_jobs} for the exactness check ({} models x {} methods x {} seeds x {} chains) and {} for the built-in benchmark suite ({suite_problems} problems x {} methods x {} seeds x {} chains); {} workers x {} chains in flight",
        MODELS.len(),
        METHODS.len(),
        args.seeds,
        args.chains,
        total - exactness_jobs,
        SUITE_METHODS.len(),
        args.seeds,
        args.chains,
        args.workers,
        args.concurrency
    );

    let results = wait(&queue, &store, &correlation_id, &receipts).await?;
    stop.cancel();
    for r in roles {
        let _ = r.await;
    }
    let mut out = std::io::stdout().lock();
    let (suite_receipt, receipts) = receipts.split_last().expect("the suite was submitted");
    for (model, receipt) in receipts {
        let rows: Vec<&JobResult> = results
            .iter()
            .filter(|r| Some(r.batch_id) == Some(receipt.batch_id))
            .collect();
        write_table(&mut out, model, receipt, &rows, args.n_mcmc)?;
    }
    writeln!(
        out,
        "\nP(mode): share of chains that ended on the completion p^α favours most. TV to p^α: distance\nof all chains' completions from the exact p^α; below the noise column, sampling noise alone explains it."
    )?;
    let suite_batch = suite_receipt.1.batch_id.expect("demo batches");
    let suite_results: Vec<JobResult> = results
        .iter()
        .filter(|r| r.batch_id == Some(suite_batch))
        .cloned()
        .collect();
    write_suite(&mut out, suite_batch, &suite_results)?;
    writeln!(
        out,
        "{total} jobs in {:.1} s. Results: powerfleet results --batch BATCH --database-url {database_url}\nThe suite's report and figures: powerfleet report {suite_batch} --plot figures --database-url {database_url}",
        started.elapsed().as_secs_f64(),
    )?;
    out.flush()?;
    drop(private);
    Ok(())
}

/// How the demo watches its jobs: polls every 200 ms, and waits as long as jobs finish or the
/// collector stores results, however loaded the machine. Its workers and collector run in this
/// process, so nothing moving for ten minutes means something is broken: it then stops and says
/// what did not move.
const DEMO_WATCH: WatchPolicy = WatchPolicy {
    first_poll: Duration::from_millis(200),
    poll: Duration::from_millis(200),
    jobs_stall: Some(watch::STORE_STALL),
    store_stall: Some(watch::STORE_STALL),
};

/// Watches the demo's jobs (one correlation id) until every one is stored, with live progress.
async fn wait(
    queue: &Queue,
    store: &Store,
    correlation_id: &CorrelationId,
    receipts: &[(&str, Receipt)],
) -> Result<Vec<JobResult>> {
    let total: usize = receipts.iter().map(|(_, r)| r.job_ids.len()).sum();
    let watched = Watched::Correlation(correlation_id.clone());
    let target = crate::progress::Target {
        queue,
        store: Some(store),
        watched: &watched,
    };
    let snap = crate::progress::watch(&target, &DEMO_WATCH)
        .await
        .context("the demo's jobs")?;
    anyhow::ensure!(
        snap.stored >= total as u64,
        "only {} of the demo's {total} jobs reached the results database; see the collector's log",
        snap.stored
    );
    let mut all = Vec::new();
    for (_, r) in receipts {
        all.extend(
            store
                .jobs_by_batch(r.batch_id.expect("demo batches"))
                .await?,
        );
    }
    Ok(all)
}

fn write_table(
    out: &mut impl Write,
    model: &str,
    receipt: &Receipt,
    rows: &[&JobResult],
    n_mcmc: u32,
) -> Result<()> {
    let toy = resolve_toy(model)?;
    let config = demo_config(n_mcmc).validate()?;
    let completions = enumerate(&toy, &[], config.max_new_tokens())?;
    let exact = completions.power(config.alpha().get());
    let mode = exact
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("a model has completions");
    let mode_tokens: &[TokenId] = &completions.entries[mode].tokens;
    writeln!(
        out,
        "\n{model}  batch {}  alpha {}  n_mcmc {}  block_size {}  max_new_tokens {}",
        receipt.batch_id.map(|b| b.to_string()).unwrap_or_default(),
        config.alpha(),
        config.n_mcmc(),
        config.block_size(),
        config.max_new_tokens()
    )?;
    writeln!(
        out,
        "most likely under p^α: \"{}\" with exact probability {:.4}",
        toy.detokenize(mode_tokens),
        exact[mode]
    )?;
    writeln!(
        out,
        "{:<10} {:>6} {:>10} {:>11} {:>10} {:>11} {:>9} {:>8}",
        "method", "jobs", "P(mode)", "TV to p^α", "noise <=", "accept/ESS", "cost x", "p50 ms"
    )?;
    let mut by_method: HashMap<Method, Vec<&JobResult>> = HashMap::new();
    for r in rows {
        by_method.entry(r.method).or_default().push(r);
    }
    for method in METHODS {
        let Some(jobs) = by_method.get(&method) else {
            continue;
        };
        let completed: Vec<&&JobResult> = jobs
            .iter()
            .filter(|r| r.status == JobStatus::Completed)
            .collect();
        let n = completed.len() as u64;
        let hist = Histogram::new(&completions, completed.iter().map(|r| r.tokens.as_slice()));
        let p_mode =
            completed.iter().filter(|r| r.tokens == mode_tokens).count() as f64 / n.max(1) as f64;
        // The acceptance rate as everywhere: pooled over all jobs, whatever their status.
        let (proposals, acceptances): (u64, u64) = jobs.iter().fold((0, 0), |(p, a), r| {
            (p + r.stats.proposals, a + r.stats.acceptances)
        });
        let generated: u64 = completed.iter().map(|r| r.stats.tokens_generated).sum();
        let final_tokens: u64 = completed.iter().map(|r| r.tokens.len() as u64).sum();
        let mut latencies: Vec<u64> = completed.iter().map(|r| r.latency_ms()).collect();
        latencies.sort_unstable();
        writeln!(
            out,
            "{:<10} {:>6} {:>10.3} {:>11.3} {:>10.3} {:>11} {:>9.2} {:>8}",
            method.as_str(),
            jobs.len(),
            p_mode,
            hist.total_variation(&exact),
            tv_tolerance(&exact, n.max(1), 1e-6),
            if proposals > 0 {
                format!("{:.3}", acceptances as f64 / proposals as f64)
            } else {
                mean_ess(jobs).map_or("-".into(), |e| format!("ESS {e:.2}"))
            },
            generated as f64 / final_tokens.max(1) as f64,
            latencies.get(latencies.len() / 2).copied().unwrap_or(0),
        )?;
    }
    Ok(())
}

/// power-smc's mean ESS (as a share of the particles) over the block boundaries of `jobs`.
fn mean_ess(jobs: &[&JobResult]) -> Option<f64> {
    let ess: Vec<f64> = jobs
        .iter()
        .filter_map(|r| r.stats.smc.as_ref())
        .flat_map(|s| s.ess.iter().copied())
        .collect();
    (!ess.is_empty()).then(|| ess.iter().sum::<f64>() / ess.len() as f64)
}
