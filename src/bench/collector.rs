//! `powerfleet bench collector`: storing results into SQLite and PostgreSQL, through the results
//! collector, with and without benchmark grading, and a verdict per database on the collector's
//! goal ([`GOALS`]: 20,000 results/s on SQLite, 10,000 on PostgreSQL).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_jobs::Prompt;
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_sampler::{Method, SamplerConfig};
use tokio_util::sync::CancellationToken;

use super::queue_on;

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
    use powerfleet_jobs::{Grader, Grading, JobResult, JobStatus, ReferenceAnswer};
    let (reference, answer) = MATH_CASES[(i % MATH_CASES.len() as u64) as usize];
    let spec = powerfleet_jobs::JobSpec {
        batch_id: Some(batch),
        problem_id: Some(format!("p{}", i / 8)),
        seed: i % 8,
        submitted_at_ms: powerfleet_jobs::now_ms(),
        grading: graded.then(|| Grading {
            template: "math-cot".into(),
            grader: Grader::Math,
            reference: ReferenceAnswer::Text(reference.into()),
            price_per_mtok: None,
            reasoning_markers: None,
        }),
        ..powerfleet_jobs::JobSpec::new(
            "bench",
            Prompt::Text(String::new()),
            SamplerConfig::new(Method::Power),
        )
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
    // The stragglers: given up on only when none has been stored for a minute (a hung
    // collector), never while storing goes on.
    let mut stored = store.batch_summary(batch_id).await?.map_or(0, |s| s.jobs);
    let mut moved_at = Instant::now();
    while stored < results.len() as u64 && moved_at.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now = store.batch_summary(batch_id).await?.map_or(0, |s| s.jobs);
        if now > stored {
            stored = now;
            moved_at = Instant::now();
        }
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

/// The collector's goals: results stored per second through one collector (one transaction per
/// read), per database.
const GOALS: [(&str, f64); 2] = [("SQLite", 20_000.0), ("PostgreSQL", 10_000.0)];

/// The verdict line of `database`'s collector rate against its goal, if it has one: "goal,
/// SQLite collector >= 20,000 results/s: met (22,748 results/s)".
fn verdict(database: &str, rate: f64) -> Option<String> {
    let (_, goal) = GOALS.iter().find(|(name, _)| *name == database)?;
    let thousands = |x: f64| powerfleet_fleet::watch::thousands(x.round() as u64);
    Some(format!(
        "goal, {database} collector >= {} results/s: {} ({} results/s)",
        thousands(*goal),
        if rate >= *goal { "met" } else { "not met" },
        thousands(rate)
    ))
}

pub(super) async fn collector_bench(args: CollectorBenchArgs) -> Result<()> {
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
    let mut verdicts = Vec::new();
    for (name, db) in databases {
        let (one, many) = store_rates(db, args.results, args.batch).await?;
        let plain = batch(false);
        let namespace = format!("bench-{}", name.to_lowercase());
        let seconds = collect_all(&redis, db, &namespace, &plain, args.batch).await?;
        plain_s.get_or_insert(seconds);
        let rate = args.results as f64 / seconds;
        println!(
            "| {name} | {one:.0} | {many:.0} | {:.1}x | {rate:.0} |",
            many / one,
        );
        verdicts.extend(verdict(name, rate));
    }
    let plain_s = plain_s.context("SQLite is always measured")?;
    println!();
    for line in verdicts {
        println!("{line}");
    }
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

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn each_database_is_judged_against_its_own_goal() {
        assert_eq!(
            verdict("SQLite", 22_748.4).as_deref(),
            Some("goal, SQLite collector >= 20,000 results/s: met (22,748 results/s)")
        );
        assert_eq!(
            verdict("SQLite", 13_600.0).as_deref(),
            Some("goal, SQLite collector >= 20,000 results/s: not met (13,600 results/s)")
        );
        assert_eq!(
            verdict("PostgreSQL", 14_451.0).as_deref(),
            Some("goal, PostgreSQL collector >= 10,000 results/s: met (14,451 results/s)")
        );
        assert_eq!(
            verdict("PostgreSQL", 9_600.0).as_deref(),
            Some("goal, PostgreSQL collector >= 10,000 results/s: not met (9,600 results/s)")
        );
        assert_eq!(verdict("MySQL", 1.0), None);
    }
}
