//! `powerfleet collector`: store finished jobs in SQL exactly once, grading benchmark results.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use powerfleet_fleet::collector::{self, CollectorConfig};

use super::*;

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
    /// Gradings that read the answer (math, choice, exact, regex) run at once, each on a thread
    /// of its own; further results wait for one to end, and a grading given up at its budget
    /// keeps its place until its thread ends. Results that need no grading are stored meanwhile.
    #[arg(long, env = "POWERFLEET_ANSWER_GRADERS", value_name = "N", default_value_t = collector::DEFAULT_ANSWER_GRADERS as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub answer_graders: u16,
    #[command(flatten)]
    pub ops: crate::observe::OpsArgs,
}

pub async fn collector(args: CollectorArgs) -> Result<()> {
    let stop = crate::observe::shutdown_token();
    let queue = args.redis.connect_waiting(&stop).await?;
    let store = args.database.connect_waiting(&stop).await?;
    let config = config_of(&args);
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

/// The collector's configuration from its flags.
pub(super) fn config_of(args: &CollectorArgs) -> CollectorConfig {
    let mut config = CollectorConfig::new(
        args.consumer
            .clone()
            .unwrap_or_else(|| default_consumer("collector")),
    );
    config.grading_executors = usize::from(args.grading_executors);
    let grading_timeout = args.grading_timeout_secs.unwrap_or(args.grading_timeout);
    config.sandbox.timeout = std::time::Duration::from_secs(grading_timeout);
    config.sandbox.cpu_seconds = grading_timeout;
    if let Some(python) = &args.grading_python {
        config.sandbox.python = python.clone();
    }
    if let Some(bwrap) = &args.grading_bwrap {
        config.sandbox.bwrap = bwrap.clone();
    }
    config.sandbox.unisolated = args.grading_unisolated;
    config.answer_grading_budget =
        millis_or(args.answer_grading_budget, args.answer_grading_budget_ms);
    config.answer_graders = usize::from(args.answer_graders);
    config
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
