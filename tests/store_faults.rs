//! The collector when the results database fails: a private redis-server, the collector run
//! in-process, and a real PostgreSQL database (created per test on POWERFLEET_TEST_POSTGRES_URL,
//! dropped after) or SQLite file.
//!
//! A failure that is not the result's fault (a read-only standby, a restart, a locked file) must
//! neither lose nor dead-letter a result: it is kept, retried, and stored exactly once when the
//! database takes writes again, and meanwhile `/readyz` says why the collector is not ready. A
//! result that is its own fault is dead-lettered with its whole payload.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use powerfleet_fleet::collector::{self, CollectorConfig, CollectorReport};
use powerfleet_fleet::ops::{self, OpsState, StoreHealth};
use powerfleet_jobs::{BatchId, JobId, JobResult};
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_queue::{COLLECTOR_GROUP, Queue, QueueOptions};
use powerfleet_store::{Recorded, Store, StoreOptions};
use powerfleet_testkit::{
    INJECTED_DISK_FULL, PATIENCE, postgres_admin, postgres_admin_url, wait_until, with_database,
};
use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio_util::sync::CancellationToken;

/// Runs `sql` on the admin database.
async fn admin_execute(sql: &str) {
    let mut admin = postgres_admin().await;
    admin
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = admin.close().await;
}

/// Runs `body` with the URL of a fresh PostgreSQL database, dropped afterwards even when the body
/// panics.
async fn on_postgres<F, Fut>(body: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = format!("pf_faults_{}", JobId::new().to_string().replace('-', ""));
    admin_execute(&format!("CREATE DATABASE {name}")).await;
    let url = with_database(&postgres_admin_url(), &name);
    let outcome = tokio::spawn(body(url, name.clone())).await;
    admin_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs `body` with the URL of a SQLite file in a fresh directory.
async fn on_sqlite<F, Fut>(body: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("results.db").display());
    let outcome = tokio::spawn(body(url, String::new())).await;
    drop(dir);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Closes every connection to the test database `name` (not the admin's): what a server restart
/// or a failover does to the collector's pool, without touching other databases of the server.
async fn terminate_backends(name: &str) {
    let mut admin = postgres_admin().await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
}

/// A finished result of `batch` with `text`.
fn result(batch: BatchId, text: &str) -> JobResult {
    powerfleet_testkit::result()
        .batch_id(batch)
        .problem_id("p-1")
        .seed(1)
        .finished_at_eos(text, -1.25)
        .build()
}

/// A private redis-server, and a collector run in-process on it and the database, with its
/// `/readyz` served on a free port.
struct Collector {
    redis: LocalRedis,
    redis_url: String,
    queue: Queue,
    store: Store,
    health: StoreHealth,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Arc<CollectorReport>>,
    readyz: String,
}

impl Collector {
    async fn start(db_url: &str) -> Collector {
        Collector::start_with(db_url, &StoreOptions::default()).await
    }

    async fn start_with(db_url: &str, options: &StoreOptions) -> Collector {
        let (redis, queue, store) = Collector::parts(db_url, options).await;
        Collector::run(redis, queue, store, "c1").await
    }

    /// A private redis-server, a queue client on it and a store, for a collector to run on.
    async fn parts(db_url: &str, options: &StoreOptions) -> (LocalRedis, Queue, Store) {
        let redis = LocalRedis::start(LocalRedisOptions::default()).unwrap_or_else(|e| {
            panic!("{e}; these tests need redis-server on PATH (scripts/test.sh installs it)")
        });
        let queue = Queue::connect(
            &redis.url(),
            QueueOptions {
                namespace: "faults".into(),
                ..QueueOptions::default()
            },
        )
        .await
        .unwrap();
        queue.ensure_groups().await.unwrap();
        let store = Store::connect_with(db_url, options).await.unwrap();
        (redis, queue, store)
    }

    /// Runs a collector named `consumer` on `redis` and `store`.
    async fn run(redis: LocalRedis, queue: Queue, store: Store, consumer: &str) -> Collector {
        let mut config = CollectorConfig::new(consumer.into());
        config.batch = 10;
        config.read_block = Duration::from_millis(100);
        config.reclaim_idle = Duration::from_secs(2);
        let health = config.store_health.clone();
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let readyz = format!("http://{}/readyz", listener.local_addr().unwrap());
        let state = OpsState {
            render: Arc::new(String::new),
            queue: queue.clone(),
            store: Some(store.clone()),
            store_health: Some(health.clone()),
            models: None,
        };
        let ops_stop = stop.clone();
        tokio::spawn(async move {
            ops::serve(listener, state, async move { ops_stop.cancelled().await }).await
        });
        let collector_stop = stop.clone();
        let task = tokio::spawn(collector::run(
            config,
            queue.clone(),
            store.clone(),
            async move { collector_stop.cancelled().await },
        ));
        Collector {
            redis_url: redis.url(),
            redis,
            queue,
            store,
            health,
            stop,
            task,
            readyz,
        }
    }

    /// Publishes `r` as a worker does.
    async fn publish(&self, r: &JobResult) {
        let json = serde_json::to_string(r).unwrap();
        self.queue
            .push_raw_result_entry(&[("job_id", &r.job_id.to_string()), ("result", &json)])
            .await
            .unwrap();
    }

    /// `/readyz`: the status code and the JSON body.
    async fn readyz(&self) -> (u16, Value) {
        let response = reqwest::get(&self.readyz).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The stored results of `batch`; empty while the database cannot be read.
    async fn stored(&self, batch: BatchId) -> Vec<JobResult> {
        self.store.jobs_by_batch(batch).await.unwrap_or_default()
    }

    async fn wait_stored(&self, batch: BatchId, n: usize, timeout: Duration) {
        wait_until(&format!("{n} results are stored"), timeout, || async {
            self.stored(batch).await.len() >= n
        })
        .await;
        assert_eq!(
            self.stored(batch).await.len(),
            n,
            "more results than published"
        );
    }

    /// The dead-letter stream's entries.
    async fn dead(&self) -> Vec<HashMap<String, String>> {
        self.queue
            .dead_letters(100)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, fields)| fields)
            .collect()
    }

    /// Results delivered to a collector and not acknowledged.
    async fn pending(&self) -> u64 {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let reply: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(self.queue.keys().results())
            .arg(COLLECTOR_GROUP)
            .query_async(&mut c)
            .await
            .unwrap();
        match reply.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("unexpected XPENDING reply {other:?}"),
        }
    }

    /// Result entries not acknowledged: delivered and pending, or not delivered yet.
    async fn unacknowledged(&self) -> u64 {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.queue.keys().results())
            .query_async(&mut c)
            .await
            .unwrap();
        let group = groups
            .iter()
            .find(|g| g.get("name") == Some(&redis::Value::BulkString(COLLECTOR_GROUP.into())))
            .expect("the collectors' group exists");
        let lag = match group.get("lag") {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("XINFO GROUPS has no lag for the collectors' group: {other:?}"),
        };
        self.pending().await + lag
    }

    async fn stop(self) -> Arc<CollectorReport> {
        self.stop_and_keep_redis().await.0
    }

    async fn stop_and_keep_redis(self) -> (Arc<CollectorReport>, LocalRedis, Queue, Store) {
        self.stop.cancel();
        let report = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the collector stops after its shutdown (it hung)")
            .unwrap();
        (report, self.redis, self.queue, self.store)
    }

    /// Stops this collector and starts another one, named `consumer`, on the same Redis and
    /// database; returns the report of the one stopped.
    async fn replace(self, consumer: &str) -> (Arc<CollectorReport>, Collector) {
        let (report, redis, queue, store) = self.stop_and_keep_redis().await;
        (report, Collector::run(redis, queue, store, consumer).await)
    }
}

fn count(n: &std::sync::atomic::AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}

/// A failover to a read-only standby: the database answers `SELECT 1` but refuses every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_only_keeps_results_until_it_takes_writes_again() {
    on_postgres(|url, name| async move {
        let c = Collector::start(&url).await;
        let batch = BatchId::new();
        c.publish(&result(batch, "before")).await;
        c.wait_stored(batch, 1, PATIENCE).await;
        assert_eq!(c.readyz().await.0, 200);

        admin_execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on"
        ))
        .await;
        terminate_backends(&name).await;
        let published: Vec<JobResult> = (0..20)
            .map(|i| result(batch, &format!("during {i}")))
            .collect();
        for r in &published {
            c.publish(r).await;
        }
        wait_until(
            "the collector reports that it cannot store",
            PATIENCE,
            || async { c.health.failure().is_some() },
        )
        .await;
        let (status, body) = c.readyz().await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["ready"], false, "{body}");
        let database = body["database"].as_str().unwrap();
        assert!(
            database.starts_with("cannot store results: ") && database.contains("read-only"),
            "{body}"
        );
        assert_eq!(body["redis"], "ok", "{body}");
        // Several retries fail meanwhile; none may give a result up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(c.dead().await, Vec::new(), "nothing is dead-lettered");
        assert_eq!(c.stored(batch).await.len(), 1);
        assert!(c.pending().await > 0, "the results are not acknowledged");
        assert!(c.health.failure().is_some());

        admin_execute(&format!(
            "ALTER DATABASE {name} RESET default_transaction_read_only"
        ))
        .await;
        terminate_backends(&name).await;
        c.wait_stored(batch, 21, PATIENCE).await;
        wait_until("/readyz answers 200 again", PATIENCE, || async {
            c.readyz().await.0 == 200
        })
        .await;
        assert_eq!(c.health.failure(), None);
        let stored = c.stored(batch).await;
        for r in &published {
            assert!(
                stored.iter().any(|s| s == r),
                "job {} is stored as published",
                r.job_id
            );
        }
        let summary = c.store.batch_summary(batch).await.unwrap().unwrap();
        assert_eq!(summary.jobs, 21, "every result counted once");
        wait_until("every result is acknowledged", PATIENCE, || async {
            c.pending().await == 0
        })
        .await;
        assert_eq!(c.dead().await, Vec::new());
        let report = c.stop().await;
        assert_eq!(count(&report.stored), 21);
        assert_eq!(count(&report.dead), 0);
        assert!(count(&report.store_failures) > 0);
    })
    .await;
}

/// The server restarting again and again while results arrive: the collector's connections are
/// closed under it (mid-transaction included) for as long as it takes to see it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_mid_batch_stores_every_result_once() {
    on_postgres(|url, name| async move {
        let c = Collector::start(&url).await;
        let batch = BatchId::new();
        let mut published = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while c.health.failures() < 3 || published.len() < 100 {
            assert!(
                Instant::now() < deadline,
                "after {PATIENCE:?} of restarts and {} results, the collector failed to store only {} \
                 times; the restarts do not reach it",
                published.len(),
                c.health.failures()
            );
            for _ in 0..5 {
                let r = result(batch, "restart");
                c.publish(&r).await;
                published.push(r);
            }
            terminate_backends(&name).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        let n = published.len();
        c.wait_stored(batch, n, PATIENCE).await;
        let summary = c.store.batch_summary(batch).await.unwrap().unwrap();
        assert_eq!(summary.jobs, n as u64, "every result counted once");
        wait_until(
            "every result is acknowledged",
            PATIENCE,
            || async { c.pending().await == 0 },
        )
        .await;
        assert_eq!(c.dead().await, Vec::new(), "nothing is dead-lettered");
        assert_eq!(c.readyz().await.0, 200);
        let report = c.stop().await;
        assert_eq!(count(&report.dead), 0);
        assert!(count(&report.store_failures) > 0);
        // A commit cut off after it took effect makes its retry a duplicate, never a second row.
        assert!(count(&report.stored) + count(&report.duplicates) >= n as u64);
        assert!(count(&report.stored) <= n as u64);
    })
    .await;
}

/// Another writer holds the SQLite file's lock for longer than the store's busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_writer_keeps_results_until_released() {
    on_sqlite(|url, _| async move {
        let c = Collector::start_with(
            &url,
            &StoreOptions {
                sqlite_busy_timeout: Duration::from_millis(200),
            },
        )
        .await;
        let batch = BatchId::new();
        c.publish(&result(batch, "before")).await;
        c.wait_stored(batch, 1, PATIENCE).await;

        let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        locker.execute("BEGIN EXCLUSIVE").await.unwrap();
        for i in 0..5 {
            c.publish(&result(batch, &format!("locked {i}"))).await;
        }
        wait_until(
            "the collector reports that it cannot store",
            PATIENCE,
            || async { c.health.failure().is_some() },
        )
        .await;
        let (status, body) = c.readyz().await;
        assert_eq!(status, 503, "{body}");
        let database = body["database"].as_str().unwrap();
        assert!(
            database.starts_with("cannot store results: ")
                && (database.contains("locked") || database.contains("busy")),
            "{body}"
        );
        // Held for many busy timeouts.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(c.dead().await, Vec::new(), "nothing is dead-lettered");
        assert_eq!(c.stored(batch).await.len(), 1);
        locker.execute("COMMIT").await.unwrap();
        locker.close().await.unwrap();

        c.wait_stored(batch, 6, PATIENCE).await;
        wait_until("/readyz answers 200 again", PATIENCE, || async {
            c.readyz().await.0 == 200
        })
        .await;
        assert_eq!(c.store.batch_summary(batch).await.unwrap().unwrap().jobs, 6);
        wait_until("every result is acknowledged", PATIENCE, || async {
            c.pending().await == 0
        })
        .await;
        let report = c.stop().await;
        assert_eq!(count(&report.stored), 6);
        assert_eq!(count(&report.dead), 0);
        assert!(count(&report.store_failures) > 0);
    })
    .await;
}

/// A model's text with NUL characters (0x00), which PostgreSQL's TEXT cannot hold.
async fn nul_characters_are_stored_and_read_back(url: String, _name: String) {
    let c = Collector::start(&url).await;
    let batch = BatchId::new();
    let r = JobResult {
        problem_id: Some("p\0".into()),
        error: Some("\0".into()),
        ..result(batch, "a\0b\0\0 c\0")
    };
    c.publish(&r).await;
    c.wait_stored(batch, 1, PATIENCE).await;
    assert_eq!(c.store.job(r.job_id).await.unwrap(), Some(r.clone()));
    assert_eq!(c.stored(batch).await, vec![r]);
    assert_eq!(c.dead().await, Vec::new());
    assert_eq!(c.readyz().await.0, 200);
    let report = c.stop().await;
    assert_eq!(count(&report.stored), 1);
    assert_eq!(count(&report.store_failures), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_stored_and_read_back_on_postgres() {
    on_postgres(nul_characters_are_stored_and_read_back).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_stored_and_read_back_on_sqlite() {
    on_sqlite(nul_characters_are_stored_and_read_back).await;
}

/// Results that are their own fault (undecodable, or refused by a constraint of the database) are
/// dead-lettered with their whole payload, and do not hold up the results behind them.
async fn results_at_fault_are_dead_lettered_whole(url: String, _name: String) {
    let c = Collector::start(&url).await;
    let rule = if c.store.is_postgres() {
        "ALTER TABLE job_results ADD CONSTRAINT no_rejects \
         CHECK (text IS NULL OR text NOT LIKE 'REJECT%')"
    } else {
        "CREATE TRIGGER no_rejects BEFORE INSERT ON job_results \
         WHEN NEW.text LIKE 'REJECT%' BEGIN SELECT RAISE(ABORT, 'no rejects'); END"
    };
    if c.store.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        conn.execute(rule).await.unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute(rule).await.unwrap();
        conn.close().await.unwrap();
    }
    let batch = BatchId::new();
    let big = "x".repeat(100 * 1024);
    let refused = result(batch, &format!("REJECT {big}"));
    let refused_json = serde_json::to_string(&refused).unwrap();
    c.publish(&refused).await;
    let undecodable = format!("{{\"not\": \"a result\", \"pad\": \"{big}\"}}");
    c.queue
        .push_raw_result_entry(&[
            ("job_id", &JobId::new().to_string()),
            ("result", &undecodable),
        ])
        .await
        .unwrap();
    let fine = result(batch, "fine");
    c.publish(&fine).await;

    c.wait_stored(batch, 1, PATIENCE).await;
    wait_until("two entries are dead-lettered", PATIENCE, || async {
        c.dead().await.len() >= 2
    })
    .await;
    assert_eq!(c.stored(batch).await, vec![fine]);
    let dead = c.dead().await;
    assert_eq!(
        dead.len(),
        2,
        "{:?}",
        dead.iter().map(|d| &d["reason"]).collect::<Vec<_>>()
    );
    for (entry, original, why) in [
        (&dead[0], &refused_json, "the results database refused it"),
        (&dead[1], &undecodable, "not a valid job result"),
    ] {
        assert!(entry["reason"].contains(why), "{}", entry["reason"]);
        let payload = &entry["payload"];
        assert!(
            payload.len() > 100 * 1024,
            "payload cut to {} bytes",
            payload.len()
        );
        let fields: HashMap<String, String> = serde_json::from_str(payload).unwrap();
        assert_eq!(&fields["result"], original, "the whole result is kept");
    }
    assert_eq!(c.readyz().await.0, 200);
    wait_until("every result is acknowledged", PATIENCE, || async {
        c.pending().await == 0
    })
    .await;
    let report = c.stop().await;
    assert_eq!(count(&report.dead), 2);
    assert_eq!(count(&report.stored), 1);
    assert_eq!(count(&report.store_failures), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_at_fault_are_dead_lettered_whole_on_postgres() {
    on_postgres(results_at_fault_are_dead_lettered_whole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_at_fault_are_dead_lettered_whole_on_sqlite() {
    on_sqlite(results_at_fault_are_dead_lettered_whole).await;
}

/// A collector that stops while it keeps results it could not store leaves them pending; another
/// collector takes them over (after the reclaim idle time) and stores them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_a_stopped_collector_kept_are_taken_over_by_another() {
    on_sqlite(|url, _| async move {
        let c = Collector::start_with(
            &url,
            &StoreOptions {
                sqlite_busy_timeout: Duration::from_millis(200),
            },
        )
        .await;
        let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        locker.execute("BEGIN EXCLUSIVE").await.unwrap();
        let batch = BatchId::new();
        for i in 0..5 {
            c.publish(&result(batch, &format!("kept {i}"))).await;
        }
        wait_until(
            "the collector reports that it cannot store",
            PATIENCE,
            || async { c.health.failure().is_some() },
        )
        .await;
        assert!(c.pending().await > 0, "the results it read are pending");
        let (first, c) = c.replace("c2").await;
        assert_eq!(count(&first.stored), 0);
        assert_eq!(count(&first.dead), 0);
        assert!(count(&first.store_failures) > 0);
        locker.execute("COMMIT").await.unwrap();
        locker.close().await.unwrap();

        c.wait_stored(batch, 5, PATIENCE).await;
        wait_until("every result is acknowledged", PATIENCE, || async {
            c.pending().await == 0
        })
        .await;
        assert_eq!(c.dead().await, Vec::new());
        assert_eq!(c.store.batch_summary(batch).await.unwrap().unwrap().jobs, 5);
        let second = c.stop().await;
        assert_eq!(count(&second.stored), 5);
    })
    .await;
}

/// Makes every write of `table` fail for a reason of the database's until the returned SQL runs:
/// a disk-full error on PostgreSQL (raised by a deferred trigger when `at_commit`: every
/// statement of the transaction succeeds and its commit fails), an error of the engine on SQLite.
async fn fail_writes(url: &str, table: &str, at_commit: bool) -> &'static str {
    let (sql, conn_sqlite) = if url.starts_with("sqlite:") {
        assert!(!at_commit, "SQLite has no deferred triggers");
        (
            format!(
                "CREATE TABLE failing (x INT); INSERT INTO failing VALUES (1); \
                 CREATE TRIGGER injected_failure BEFORE INSERT ON {table} \
                 WHEN EXISTS (SELECT 1 FROM failing) \
                 BEGIN SELECT abs(-9223372036854775807 - 1); END"
            ),
            true,
        )
    } else {
        let timing = if at_commit {
            "CONSTRAINT TRIGGER injected_failure AFTER INSERT ON TABLE DEFERRABLE INITIALLY DEFERRED"
        } else {
            "TRIGGER injected_failure BEFORE INSERT ON TABLE"
        }
        .replace("TABLE", table);
        (
            format!(
                "{INJECTED_DISK_FULL}CREATE {timing} FOR EACH ROW EXECUTE FUNCTION injected_failure()"
            ),
            false,
        )
    };
    execute_on(url, conn_sqlite, &sql).await;
    "DELETE FROM failing"
}

/// Runs `sql` on the database at `url`, bypassing the store.
async fn execute_on(url: &str, sqlite: bool, sql: &str) {
    assert_eq!(
        sqlite,
        url.starts_with("sqlite:"),
        "{url} is SQLite: {sqlite}"
    );
    powerfleet_testkit::execute_raw(url, sql).await;
}

/// A batch whose transaction fails after its rows are written (at the commit on PostgreSQL, at
/// the aggregates on SQLite) stores nothing and acknowledges nothing; once the database takes
/// writes again, every result is stored, for the first time, and only then acknowledged.
async fn a_batch_is_acknowledged_only_after_it_commits(url: String, _name: String) {
    let c = Collector::start(&url).await;
    let sqlite = url.starts_with("sqlite:");
    let batch = BatchId::new();
    c.publish(&result(batch, "before")).await;
    c.wait_stored(batch, 1, PATIENCE).await;
    wait_until("the first result is acknowledged", PATIENCE, || async {
        c.unacknowledged().await == 0
    })
    .await;

    let heal = if sqlite {
        fail_writes(&url, "batch_aggregates", false).await
    } else {
        fail_writes(&url, "job_results", true).await
    };
    let published: Vec<JobResult> = (0..25)
        .map(|i| result(batch, &format!("held {i}")))
        .collect();
    for r in &published {
        c.publish(r).await;
    }
    wait_until("storing a batch failed a few times", PATIENCE, || async {
        c.health.failures() >= 3
    })
    .await;
    assert_eq!(c.unacknowledged().await, 25, "nothing is acknowledged");
    assert_eq!(c.stored(batch).await.len(), 1, "nothing is stored");
    assert_eq!(
        c.store.batch_summary(batch).await.unwrap().unwrap().jobs,
        1,
        "nothing is counted"
    );
    assert_eq!(c.dead().await, Vec::new(), "nothing is dead-lettered");

    execute_on(&url, sqlite, heal).await;
    c.wait_stored(batch, 26, PATIENCE).await;
    wait_until("every result is acknowledged", PATIENCE, || async {
        c.unacknowledged().await == 0
    })
    .await;
    assert_eq!(
        c.store.batch_summary(batch).await.unwrap().unwrap().jobs,
        26
    );
    assert_eq!(c.dead().await, Vec::new());
    let report = c.stop().await;
    // Had a failed attempt committed anything, its retry would have found duplicates.
    assert_eq!(count(&report.stored), 26);
    assert_eq!(count(&report.duplicates), 0);
    assert!(count(&report.store_failures) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_only_after_it_commits_on_postgres() {
    on_postgres(a_batch_is_acknowledged_only_after_it_commits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_only_after_it_commits_on_sqlite() {
    on_sqlite(a_batch_is_acknowledged_only_after_it_commits).await;
}

/// A collector that died after its batch committed and before it acknowledged the entries: they
/// stay pending, another collector takes them over and finds every result stored already, counts
/// none twice, and acknowledges them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_a_collector_stored_and_died_before_acknowledging_are_stored_once() {
    on_sqlite(|url, _| async move {
        let (redis, queue, store) = Collector::parts(&url, &StoreOptions::default()).await;
        let batch = BatchId::new();
        let published: Vec<JobResult> = (0..12)
            .map(|i| result(batch, &format!("committed {i}")))
            .collect();
        for r in &published {
            let json = serde_json::to_string(r).unwrap();
            queue
                .push_raw_result_entry(&[("job_id", &r.job_id.to_string()), ("result", &json)])
                .await
                .unwrap();
        }
        // The collector that dies: it reads the entries and commits their batch, no more.
        let read = queue.read_results("died", 100, 100).await.unwrap();
        assert_eq!(read.len(), 12);
        let results: Vec<JobResult> = read.iter().map(|d| d.result.clone().unwrap()).collect();
        let recorded = store.record_batch(&results).await.unwrap();
        assert!(recorded.iter().all(|r| matches!(r, Recorded::Stored)));
        let before = store.batch_summary(batch).await.unwrap();
        let pending: Vec<redis::Value> = {
            let client = redis::Client::open(redis.url().as_str()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("XPENDING")
                .arg(queue.keys().results())
                .arg(COLLECTOR_GROUP)
                .query_async(&mut c)
                .await
                .unwrap()
        };
        assert_eq!(
            pending.first(),
            Some(&redis::Value::Int(12)),
            "the dead collector's entries are pending"
        );

        let c = Collector::run(redis, queue, store, "c2").await;
        wait_until(
            "the entries are taken over and acknowledged",
            PATIENCE,
            || async { c.unacknowledged().await == 0 },
        )
        .await;
        assert_eq!(c.stored(batch).await.len(), 12);
        assert_eq!(
            c.store.batch_summary(batch).await.unwrap(),
            before,
            "counted once"
        );
        assert_eq!(c.dead().await, Vec::new());
        let report = c.stop().await;
        assert_eq!(count(&report.stored), 0);
        assert_eq!(count(&report.duplicates), 12);
    })
    .await;
}
