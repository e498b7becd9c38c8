//! The results store: finished jobs and per-batch aggregates in SQL, SQLite by default (one file)
//! and PostgreSQL for fleets with several collectors.
//!
//! Recording is idempotent by job id: a redelivered result is stored once and counted once in the
//! batch aggregates, also when two collectors record it at the same time (the job rows are inserted
//! with `ON CONFLICT DO NOTHING`, and the aggregates are updated in the same transaction with the
//! rows that insert took effect for). A batch of results is recorded in one transaction
//! (`record.rs`).

mod csv;
mod error;
#[cfg(test)]
mod schema_tests;
mod summary;

use std::str::FromStr;
use std::time::Duration;

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobStatus, Label};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use crate::csv::{CSV_COLUMNS, write_csv};
use crate::error::sanitize;
pub use crate::error::{StoreError, StoreErrorClass};
pub use crate::record::Recorded;
use crate::summary::{AggregateRow, summarize};
pub use crate::summary::{BatchSummary, MethodSummary};
pub use powerfleet_grade::percentile;
pub use powerfleet_jobs::redact_url;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Errors of a SQLite open that another process's concurrent open or migration explains.
fn is_transient_sqlite(e: &StoreError) -> bool {
    match e {
        StoreError::Migrate { .. } => true,
        StoreError::Connect { cause, .. } => cause.contains("locked") || cause.contains("busy"),
        _ => false,
    }
}

/// How long a SQLite writer waits for another one (several collectors may share a file), unless
/// [`StoreOptions`] say otherwise.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a query waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to PostgreSQL (TCP, TLS, startup and authentication) may take: a peer that
/// accepts the connection and never answers would otherwise hang the command for good.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The server-side `statement_timeout` of every PostgreSQL connection, unless the URL's `options`
/// set one: no query (migrations included) holds a connection and its locks longer than this.
const PG_STATEMENT_TIMEOUT: &str = "300s";

/// The most job ids one query binds (SQLite allows 32,766 parameters, Postgres 65,535).
pub const MAX_IDS_PER_QUERY: usize = 1000;

/// Settings of a store beyond its URL.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a SQLite write waits for another connection's write lock (another collector, or
    /// any process with the file open) before it fails with SQLITE_BUSY. Unused for PostgreSQL.
    pub sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sqlite_busy_timeout: SQLITE_BUSY_TIMEOUT,
        }
    }
}

/// The results database: a pool of connections to SQLite or PostgreSQL, migrated at connect.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// The database URL with any password redacted, for messages.
    url: String,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool of either dialect; the body is written once and
/// type-checked for each. Both dialects accept the `$N` placeholders used throughout.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

// After `on_pool!`, which it uses.
mod record;
mod submissions;

const SELECT_AGGREGATES: &str = "SELECT method, jobs, completed, failed, cancelled, dead, \
    proposals, acceptances, tokens_generated, completed_tokens_generated, final_tokens, \
    model_calls, first_submitted_at_ms, last_finished_at_ms \
    FROM batch_aggregates WHERE batch_id = $1";

/// A count or time as a SQL BIGINT (saturating; no count or time of a job comes near it).
pub(crate) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A BIGINT count or time back as u64 (a negative one can only be a corrupt row: read as 0).
fn unbig(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Connects to `database_url` and applies the schema migrations.
    ///
    /// Accepted forms: `sqlite://PATH` (relative or, with a third slash, absolute; the file and its
    /// directory are created if missing; WAL journal and a busy timeout so several collectors can
    /// write) and `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` or `postgresql://...`.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        Self::connect_with(database_url, &StoreOptions::default()).await
    }

    /// [`Store::connect`] with `options`.
    pub async fn connect_with(
        database_url: &str,
        options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let url = redact_url(database_url);
        let lower = database_url.to_ascii_lowercase();
        if lower.starts_with("sqlite:") {
            Self::connect_sqlite(database_url, url, options).await
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Self::connect_postgres(database_url, url).await
        } else {
            Err(StoreError::UnsupportedUrl { url })
        }
    }

    /// Opens a SQLite store, retrying while another process holds the file's lock to create or
    /// migrate it (several collectors starting together).
    async fn connect_sqlite(
        database_url: &str,
        url: String,
        store_options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let mut attempt = 0u64;
        loop {
            match Self::connect_sqlite_once(database_url, url.clone(), store_options).await {
                Err(e) if attempt < 10 && is_transient_sqlite(&e) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn connect_sqlite_once(
        database_url: &str,
        url: String,
        store_options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let connect_err = |cause: String| StoreError::Connect {
            url: url.clone(),
            cause: sanitize(&cause, database_url),
        };
        let options = SqliteConnectOptions::from_str(database_url)
            .map_err(|e| connect_err(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A commit is synced to disk before it returns: the collector acknowledges a result
            // in Redis after its commit, so a commit lost to a power loss would be a lost result.
            // NORMAL would sync only at WAL checkpoints. Batching pays the sync once per batch.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(store_options.sqlite_busy_timeout);
        let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
        if !in_memory
            && let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                connect_err(format!(
                    "cannot create the directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let mut pool_options = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if in_memory {
            // The database lives as long as one of its connections does.
            pool_options = pool_options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // SQLite has no migration lock: two processes migrating a new file race, the loser fails,
        // and `connect_sqlite` retries, finding the migration applied.
        Store::migrated(Pool::Sqlite(pool), url, database_url).await
    }

    async fn connect_postgres(database_url: &str, url: String) -> Result<Store, StoreError> {
        let connect_err = |cause: String| StoreError::Connect {
            url: url.clone(),
            cause: sanitize(&cause, database_url),
        };
        let mut options =
            PgConnectOptions::from_str(database_url).map_err(|e| connect_err(e.to_string()))?;
        if !options
            .get_options()
            .is_some_and(|o| o.contains("statement_timeout"))
        {
            options = options.options([("statement_timeout", PG_STATEMENT_TIMEOUT)]);
        }
        // One direct connection first: the pool retries refused connections until its acquire
        // timeout, which would turn a wrong port into a long silent wait.
        {
            use sqlx::{ConnectOptions, Connection};
            let conn = tokio::time::timeout(PG_CONNECT_TIMEOUT, options.connect())
                .await
                .map_err(|_| {
                    connect_err(format!(
                        "no answer from {}:{} within {} s (connect timeout): something accepted the \
                         connection but did not speak the PostgreSQL protocol; check the host and \
                         port, that a PostgreSQL server (not another service) listens there, and \
                         that it is not overloaded",
                        options.get_host(),
                        options.get_port(),
                        PG_CONNECT_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| connect_err(e.to_string()))?;
            let _ = conn.close().await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // Also bounds making a new pooled connection while a query waits for it.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        Store::migrated(Pool::Postgres(pool), url, database_url).await
    }

    /// The store over `pool` once the migrations of its database have run. `url` is the
    /// redacted `database_url`, which errors name.
    async fn migrated(pool: Pool, url: String, database_url: &str) -> Result<Store, StoreError> {
        let migrated = match &pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        };
        migrated.map_err(|e| StoreError::Migrate {
            url: url.clone(),
            cause: sanitize(&e.to_string(), database_url),
        })?;
        Ok(Store { pool, url })
    }

    /// The database URL with any password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this store is backed by PostgreSQL (otherwise SQLite).
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Closes every pooled connection, waiting for running queries; later calls fail.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    pub(crate) fn query_err(&self, action: impl Into<String>, e: sqlx::Error) -> StoreError {
        StoreError::Query {
            url: self.url.clone(),
            action: action.into(),
            class: StoreErrorClass::of(&e),
            cause: e.to_string(),
        }
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>, cause: impl ToString) -> StoreError {
        StoreError::Corrupt {
            url: self.url.clone(),
            what: what.into(),
            cause: cause.to_string(),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| self.query_err("answer a ping", e)))
    }

    /// Fetches the `result_json` column of the rows `sql` selects with `key` bound to `$1`.
    async fn result_jsons(
        &self,
        sql: &str,
        keys: &[&str],
        action: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.text_rows(sql, keys, &["result_json"], action).await?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// Runs `sql` with `keys` bound to `$1`, `$2`, ... and reads the text `columns` of each row,
    /// in that order; a column that cannot be read is corrupt.
    async fn text_rows(
        &self,
        sql: &str,
        keys: &[&str],
        columns: &[&str],
        action: &str,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        on_pool!(self, |pool| {
            let mut query = sqlx::query(sql);
            for key in keys {
                query = query.bind(*key);
            }
            let rows = query
                .fetch_all(pool)
                .await
                .map_err(|e| self.query_err(action, e))?;
            rows.iter()
                .map(|r| {
                    columns
                        .iter()
                        .map(|&c| r.try_get::<String, _>(c).map_err(|e| self.corrupt(c, e)))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()
        })
    }

    fn decode(&self, json: &str) -> Result<JobResult, StoreError> {
        serde_json::from_str(json).map_err(|e| self.corrupt("result_json of a job_results row", e))
    }

    fn decode_sorted(&self, jsons: Vec<String>) -> Result<Vec<JobResult>, StoreError> {
        let mut results = jsons
            .iter()
            .map(|j| self.decode(j))
            .collect::<Result<Vec<_>, _>>()?;
        // Sorted here rather than in SQL: text collation in PostgreSQL depends on the locale.
        results.sort_by_key(|r| r.job_id);
        Ok(results)
    }

    /// The stored result of a job, if any.
    pub async fn job(&self, id: JobId) -> Result<Option<JobResult>, StoreError> {
        let jsons = self
            .result_jsons(
                "SELECT result_json FROM job_results WHERE job_id = $1",
                &[&id.to_string()],
                &format!("read job {id}"),
            )
            .await?;
        jsons.first().map(|j| self.decode(j)).transpose()
    }

    /// The stored results of a batch, ordered by job id (that is, by submission).
    pub async fn jobs_by_batch(&self, id: BatchId) -> Result<Vec<JobResult>, StoreError> {
        let jsons = self
            .result_jsons(
                "SELECT result_json FROM job_results WHERE batch_id = $1",
                &[&id.to_string()],
                &format!("read the jobs of batch {id}"),
            )
            .await?;
        self.decode_sorted(jsons)
    }

    /// The stored results with a correlation id, ordered by job id.
    pub async fn jobs_by_correlation(
        &self,
        id: &CorrelationId,
    ) -> Result<Vec<JobResult>, StoreError> {
        let jsons = self
            .result_jsons(
                "SELECT result_json FROM job_results WHERE correlation_id = $1",
                &[id.as_str()],
                &format!("read the jobs of correlation id {id}"),
            )
            .await?;
        self.decode_sorted(jsons)
    }

    /// The stored results of every batch submitted with a label, ordered by job id.
    pub async fn jobs_by_label(&self, label: &Label) -> Result<Vec<JobResult>, StoreError> {
        let jsons = self
            .result_jsons(
                "SELECT result_json FROM job_results WHERE label = $1",
                &[label.as_str()],
                &format!("read the jobs labelled {label}"),
            )
            .await?;
        self.decode_sorted(jsons)
    }

    /// The id and status of every stored job of a batch, ordered by job id: what a status page
    /// needs to count and page a batch without reading its results.
    pub async fn statuses_by_batch(
        &self,
        id: BatchId,
    ) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        self.statuses(
            "SELECT job_id, status FROM job_results WHERE batch_id = $1",
            &id.to_string(),
            &format!("read the job statuses of batch {id}"),
        )
        .await
    }

    /// The id and status of every stored job with a correlation id, ordered by job id.
    pub async fn statuses_by_correlation(
        &self,
        id: &CorrelationId,
    ) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        self.statuses(
            "SELECT job_id, status FROM job_results WHERE correlation_id = $1",
            id.as_str(),
            &format!("read the job statuses of correlation id {id}"),
        )
        .await
    }

    async fn statuses(
        &self,
        sql: &str,
        key: &str,
        action: &str,
    ) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        let rows = self
            .text_rows(sql, &[key], &["job_id", "status"], action)
            .await?;
        let mut out = rows
            .iter()
            .map(|row| {
                Ok((
                    row[0].parse().map_err(|e| self.corrupt("job_id", e))?,
                    row[1].parse().map_err(|e| self.corrupt("status", e))?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// The stored results of the given jobs (at most [`MAX_IDS_PER_QUERY`] of them), ordered by
    /// job id; jobs without a stored result are left out.
    pub async fn jobs_in(&self, ids: &[JobId]) -> Result<Vec<JobResult>, StoreError> {
        let mut jsons = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_QUERY) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT result_json FROM job_results WHERE job_id IN ({})",
                placeholders.join(", ")
            );
            let ids: Vec<String> = chunk.iter().map(JobId::to_string).collect();
            let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
            let action = format!("read {} jobs", chunk.len());
            jsons.extend(self.result_jsons(&sql, &keys, &action).await?);
        }
        self.decode_sorted(jsons)
    }

    /// What a batch cost and how it went; `None` when no job of the batch is stored.
    pub async fn batch_summary(&self, id: BatchId) -> Result<Option<BatchSummary>, StoreError> {
        let key = id.to_string();
        let action = format!("summarize batch {id}");
        let (aggregates, latencies) = on_pool!(self, |pool| {
            // One transaction, so that the aggregates and the latencies see the same jobs.
            let mut tx = pool.begin().await.map_err(|e| self.query_err(&action, e))?;
            let rows = sqlx::query(SELECT_AGGREGATES)
                .bind(&key)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.query_err(&action, e))?;
            let aggregates = rows
                .iter()
                .map(|r| {
                    let n = |col: &str| r.try_get::<i64, _>(col).map(unbig);
                    Ok(AggregateRow {
                        method: r.try_get("method")?,
                        jobs: n("jobs")?,
                        completed: n("completed")?,
                        failed: n("failed")?,
                        cancelled: n("cancelled")?,
                        dead: n("dead")?,
                        proposals: n("proposals")?,
                        acceptances: n("acceptances")?,
                        tokens_generated: n("tokens_generated")?,
                        completed_tokens_generated: n("completed_tokens_generated")?,
                        final_tokens: n("final_tokens")?,
                        model_calls: n("model_calls")?,
                        first_submitted_at_ms: n("first_submitted_at_ms")?,
                        last_finished_at_ms: n("last_finished_at_ms")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(|e| self.corrupt("batch_aggregates row", e))?;
            let rows =
                sqlx::query("SELECT method, latency_ms FROM job_results WHERE batch_id = $1")
                    .bind(&key)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.query_err(&action, e))?;
            let latencies = rows
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<String, _>("method")?,
                        unbig(r.try_get("latency_ms")?),
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(|e| self.corrupt("job_results latency", e))?;
            tx.commit().await.map_err(|e| self.query_err(&action, e))?;
            (aggregates, latencies)
        });
        Ok(summarize(id, &aggregates, &latencies))
    }
}
