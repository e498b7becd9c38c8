//! Fleet subcommands, a module each: submit, worker, collector, status, cancel, results and
//! serve: their flags and flows (text output in `output`, live progress in `progress`). This
//! module holds the flags and helpers they share.

mod cancel;
mod collector;
mod results;
mod serve;
mod status;
mod submit;
mod worker;

pub use cancel::*;
pub use collector::*;
pub use results::*;
pub use serve::*;
pub use status::*;
pub use submit::*;
pub use worker::*;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use powerfleet_fleet::watch::{WatchPolicy, Watched};
use powerfleet_queue::{Queue, QueueError, QueueOptions};
use powerfleet_store::Store;

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

/// The results database of `--database-url` for a command that reads it only when given (`submit
/// --wait`, `status`): `None` without one, so that nothing is created.
async fn optional_store(url: Option<&str>) -> Result<Option<Store>> {
    let Some(url) = url else {
        return Ok(None);
    };
    let store = Store::connect(url)
        .await
        .context("--database-url: cannot use the results database")?;
    Ok(Some(store))
}

/// Output format of status and submit.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    /// Human-readable text.
    Text,
    /// JSON, for scripts.
    Json,
}

/// `--label`, checked as the job API checks it.
fn parse_label(s: &str) -> Result<powerfleet_jobs::Label, String> {
    s.parse()
        .map_err(|e: powerfleet_jobs::IdError| e.to_string())
}

/// A duration flag's value: its older millisecond spelling when given, else the duration.
fn millis_or(duration: Duration, millis: Option<u64>) -> Duration {
    millis.map_or(duration, Duration::from_millis)
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

#[cfg(test)]
mod flag_tests {
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

    fn collector_args(flags: &[&str]) -> Result<CollectorArgs, clap::Error> {
        Collector::try_parse_from(std::iter::once("collector").chain(flags.iter().copied()))
            .map(|c| c.args)
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

        let budget =
            |a: CollectorArgs| millis_or(a.answer_grading_budget, a.answer_grading_budget_ms);
        assert_eq!(
            budget(collector_args(&[]).unwrap()),
            Duration::from_secs(10)
        );
        assert_eq!(
            budget(collector_args(&["--answer-grading-budget", "250ms"]).unwrap()),
            Duration::from_millis(250)
        );
        assert_eq!(
            budget(collector_args(&["--answer-grading-budget-ms", "250"]).unwrap()),
            Duration::from_millis(250)
        );
        assert!(collector_args(&["--answer-grading-budget", "0s"]).is_err());
        let timeout = |a: CollectorArgs| a.grading_timeout_secs.unwrap_or(a.grading_timeout);
        assert_eq!(timeout(collector_args(&[]).unwrap()), 10);
        assert_eq!(
            timeout(collector_args(&["--grading-timeout", "2m"]).unwrap()),
            120
        );
        assert_eq!(
            timeout(collector_args(&["--grading-timeout-secs", "3"]).unwrap()),
            3
        );
        let retention = |a: CollectorArgs| a.redis.options().retention_s;
        assert_eq!(retention(collector_args(&[]).unwrap()), 7 * 24 * 3600);
        assert_eq!(
            retention(collector_args(&["--retention", "90m"]).unwrap()),
            5400
        );
        assert_eq!(
            retention(collector_args(&["--retention-secs", "60"]).unwrap()),
            60
        );
        for bad in ["1.5s", "11m", "0s"] {
            let err = collector_args(&["--grading-timeout", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("whole seconds from 1s to 10m"), "{err}");
        }
    }

    #[test]
    fn answer_graders_reach_the_collector_and_out_of_range_counts_name_the_flag() {
        let default = collector::config_of(&collector_args(&[]).unwrap());
        assert_eq!(
            default.answer_graders,
            powerfleet_fleet::collector::DEFAULT_ANSWER_GRADERS
        );
        let set = collector::config_of(&collector_args(&["--answer-graders", "12"]).unwrap());
        assert_eq!(set.answer_graders, 12);
        assert_eq!(
            (set.grading_executors, set.answer_grading_budget),
            (default.grading_executors, default.answer_grading_budget),
            "only the graders change"
        );
        for bad in ["0", "257", "many"] {
            let err = collector_args(&["--answer-graders", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--answer-graders"), "{err}");
            if bad != "many" {
                assert!(err.contains("1..=256"), "{err}");
            }
        }
    }
}
