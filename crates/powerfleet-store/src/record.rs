//! Recording finished results: a batch of them in one transaction, each stored once by job id
//! and counted once in its batch's aggregates.
//!
//! A batch's rows go in by multi-row `INSERT ... ON CONFLICT (job_id) DO NOTHING RETURNING
//! job_id`, in job id order, so the store learns which rows took effect; their aggregates are
//! summed per batch and method and added in the same transaction. One commit (one sync to disk)
//! stores the whole batch.
//!
//! A result the database refuses for a reason of its own (a constraint, a value out of range)
//! fails the statement that holds it, and with it the transaction. The batch is then written
//! again in one transaction with each row and its aggregates under a savepoint of its own, so only
//! that result is refused and every other one is stored. Any other failure (the database busy,
//! down, read-only, out of disk space) rolls the whole transaction back: nothing of the batch is
//! stored, and the caller retries it whole.
//!
//! Several writers may record the same results at once (collectors sharing a PostgreSQL
//! database): every transaction inserts job rows in job id order before it touches an aggregate
//! row, and aggregate rows in (batch, method) order, so two of them never wait for each other in
//! a cycle on the fast path.

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::OnceLock;

use powerfleet_jobs::csv::concat_columns;
use powerfleet_jobs::{JobId, JobResult, JobStatus};
use sqlx::Row;

use crate::{Pool, Store, StoreError, big};

/// What became of one result given to [`Store::record_batch`].
#[derive(Debug)]
pub enum Recorded {
    /// Stored now, and counted in its batch's aggregates.
    Stored,
    /// Nothing changed: a result of the same job was stored before, or comes earlier in the
    /// same batch.
    Duplicate,
    /// Refused for a reason of its own (its error is of class
    /// [`StoreErrorClass::ResultRefused`](crate::StoreErrorClass::ResultRefused)): not stored,
    /// and storing it again fails the same way. The other results of the batch are stored.
    Refused(StoreError),
}

/// The most rows one INSERT statement writes (a power of two). A batch is written by statements
/// of power-of-two sizes up to this, so a connection prepares at most a few distinct statements
/// (SQLite and PostgreSQL both cap a statement's parameters: 30 a row).
const MAX_ROWS_PER_INSERT: usize = 64;

/// What a result sampled, and from what: columns of `job_results` that the CSV export
/// ([`CSV_COLUMNS`](crate::CSV_COLUMNS)) has too, in the same order.
pub(crate) const SAMPLE_COLUMNS: [&str; 10] = [
    "problem_id",
    "model",
    "method",
    "seed",
    "stream",
    "status",
    "tokens",
    "text",
    "log_p",
    "ends_with_eos",
];

/// What a result cost and when it ran: columns of `job_results` that the CSV export has too, in
/// the same order.
pub(crate) const RUN_COLUMNS: [&str; 7] = [
    "cost_multiplier",
    "attempts",
    "error",
    "submitted_at_ms",
    "started_at_ms",
    "finished_at_ms",
    "latency_ms",
];

/// The columns of `job_results` a row binds, in order.
pub(crate) const RESULT_COLUMNS: [&str; 36] = concat_columns(&[
    &["job_id", "batch_id", "correlation_id"],
    &SAMPLE_COLUMNS,
    &[
        "proposals",
        "acceptances",
        "tokens_generated",
        "model_calls",
        "final_len",
    ],
    &RUN_COLUMNS,
    &[
        "stats_json",
        "result_json",
        "grader",
        "extracted",
        "correct",
        "config_json",
        "n_mcmc",
        "block_size",
        "max_new_tokens",
        "label",
        "version",
    ],
]);

/// How a statement's parameters are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholders {
    /// `$1`, `$2`, ...: PostgreSQL's only form.
    Numbered,
    /// `?`, bound in order. For SQLite: the driver looks up each numbered parameter's name, and
    /// SQLite finds it by walking the statement's list of names, which makes binding a
    /// statement of n numbered parameters cost n² (most of a batch's time at 64 rows).
    Anonymous,
}

/// The INSERT of `rows` job rows (a power of two up to [`MAX_ROWS_PER_INSERT`]) that skips jobs
/// already stored and returns the ids of the rows it inserted.
fn insert_sql(rows: usize, placeholders: Placeholders) -> &'static str {
    static NUMBERED: OnceLock<Vec<String>> = OnceLock::new();
    static ANONYMOUS: OnceLock<Vec<String>> = OnceLock::new();
    let cache = match placeholders {
        Placeholders::Numbered => &NUMBERED,
        Placeholders::Anonymous => &ANONYMOUS,
    };
    let all = cache.get_or_init(|| {
        let columns = RESULT_COLUMNS.join(", ");
        (0..=MAX_ROWS_PER_INSERT.trailing_zeros())
            .map(|k| {
                let values: Vec<String> = (0..1usize << k)
                    .map(|row| {
                        let params: Vec<String> = (1..=RESULT_COLUMNS.len())
                            .map(|c| match placeholders {
                                Placeholders::Numbered => {
                                    format!("${}", row * RESULT_COLUMNS.len() + c)
                                }
                                Placeholders::Anonymous => "?".to_string(),
                            })
                            .collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO job_results ({columns}) VALUES {} \
                     ON CONFLICT (job_id) DO NOTHING RETURNING job_id",
                    values.join(", ")
                )
            })
            .collect()
    });
    debug_assert!(rows.is_power_of_two() && rows <= MAX_ROWS_PER_INSERT);
    &all[rows.trailing_zeros() as usize]
}

/// `0..n` cut into the ranges that one INSERT each writes: the largest power of two that fits,
/// up to [`MAX_ROWS_PER_INSERT`], then the same for the rest.
fn insert_chunks(n: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < n {
        let left = n - start;
        let len = (1usize << (usize::BITS - 1 - left.leading_zeros())).min(MAX_ROWS_PER_INSERT);
        chunks.push(start..start + len);
        start += len;
    }
    chunks
}

/// Adds the counts and sums of a batch and method; `jobs` rows of it were inserted now.
const UPSERT_AGGREGATE: &str = "INSERT INTO batch_aggregates (batch_id, method, jobs, completed, \
    failed, cancelled, dead, proposals, acceptances, tokens_generated, completed_tokens_generated, \
    final_tokens, model_calls, first_submitted_at_ms, last_finished_at_ms) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
    ON CONFLICT (batch_id, method) DO UPDATE SET \
    jobs = batch_aggregates.jobs + excluded.jobs, \
    completed = batch_aggregates.completed + excluded.completed, \
    failed = batch_aggregates.failed + excluded.failed, \
    cancelled = batch_aggregates.cancelled + excluded.cancelled, \
    dead = batch_aggregates.dead + excluded.dead, \
    proposals = batch_aggregates.proposals + excluded.proposals, \
    acceptances = batch_aggregates.acceptances + excluded.acceptances, \
    tokens_generated = batch_aggregates.tokens_generated + excluded.tokens_generated, \
    completed_tokens_generated = \
        batch_aggregates.completed_tokens_generated + excluded.completed_tokens_generated, \
    final_tokens = batch_aggregates.final_tokens + excluded.final_tokens, \
    model_calls = batch_aggregates.model_calls + excluded.model_calls, \
    first_submitted_at_ms = CASE \
        WHEN excluded.first_submitted_at_ms < batch_aggregates.first_submitted_at_ms \
        THEN excluded.first_submitted_at_ms ELSE batch_aggregates.first_submitted_at_ms END, \
    last_finished_at_ms = CASE \
        WHEN excluded.last_finished_at_ms > batch_aggregates.last_finished_at_ms \
        THEN excluded.last_finished_at_ms ELSE batch_aggregates.last_finished_at_ms END";

/// The column values of one `job_results` row.
///
/// `result_json` is the result, lossless: every read of the store decodes it. The other text
/// columns are there for queries and hold their values through [`column_text`].
struct ResultRow<'a> {
    job_id: String,
    batch_id: Option<String>,
    correlation_id: &'a str,
    problem_id: Option<Cow<'a, str>>,
    model: Cow<'a, str>,
    method: &'static str,
    seed: i64,
    stream: i64,
    status: &'static str,
    tokens: String,
    text: Option<Cow<'a, str>>,
    log_p: Option<f64>,
    ends_with_eos: bool,
    proposals: i64,
    acceptances: i64,
    tokens_generated: i64,
    model_calls: i64,
    final_len: i64,
    cost_multiplier: Option<f64>,
    attempts: i64,
    error: Option<Cow<'a, str>>,
    submitted_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: i64,
    latency_ms: i64,
    stats_json: String,
    result_json: String,
    completed: bool,
    grader: Option<Cow<'a, str>>,
    extracted: Option<Cow<'a, str>>,
    correct: Option<bool>,
    config_json: Option<String>,
    n_mcmc: Option<i64>,
    block_size: Option<i64>,
    max_new_tokens: Option<i64>,
    label: Option<Cow<'a, str>>,
    version: Option<Cow<'a, str>>,
    /// The job's status, for the aggregates.
    job_status: JobStatus,
}

/// `s` as a text column other than `result_json` holds it: the NUL character (0x00) becomes U+FFFD
/// (the replacement character). PostgreSQL's TEXT cannot hold NUL and refuses the whole row with
/// "invalid byte sequence for encoding \"UTF8\": 0x00", and SQLite's string functions (`length`,
/// `LIKE`, the sqlite3 shell) stop at it; both dialects store the same. Nothing is lost: the result
/// is read back from `result_json`, where JSON writes NUL as the escape `\u0000`.
fn column_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

impl<'a> ResultRow<'a> {
    fn new(r: &'a JobResult) -> Result<Self, serde_json::Error> {
        Ok(ResultRow {
            job_id: r.job_id.to_string(),
            batch_id: r.batch_id.map(|b| b.to_string()),
            correlation_id: r.correlation_id.as_str(),
            problem_id: r.problem_id.as_deref().map(column_text),
            model: column_text(&r.model),
            method: r.method.as_str(),
            // Bit-cast: seeds and streams use the full u64 range; `as u64` restores them.
            seed: r.seed as i64,
            stream: r.stream as i64,
            status: r.status.as_str(),
            tokens: serde_json::to_string(&r.tokens)?,
            text: r.text.as_deref().map(column_text),
            log_p: r.log_p,
            ends_with_eos: r.ends_with_eos,
            proposals: big(r.stats.proposals),
            acceptances: big(r.stats.acceptances),
            tokens_generated: big(r.stats.tokens_generated),
            model_calls: big(r.stats.model_calls),
            final_len: big(r.tokens.len() as u64),
            cost_multiplier: r.cost_multiplier(),
            attempts: i64::from(r.attempts),
            error: r.error.as_deref().map(column_text),
            submitted_at_ms: big(r.submitted_at_ms),
            started_at_ms: r.started_at_ms.map(big),
            finished_at_ms: big(r.finished_at_ms),
            latency_ms: big(r.latency_ms()),
            stats_json: serde_json::to_string(&r.stats)?,
            result_json: serde_json::to_string(r)?,
            completed: r.status == JobStatus::Completed,
            grader: r.grade.as_ref().map(|g| column_text(g.grader.as_str())),
            extracted: r
                .grade
                .as_ref()
                .and_then(|g| g.extracted.as_deref())
                .map(column_text),
            correct: r.grade.as_ref().map(|g| g.correct),
            config_json: r.config.as_ref().map(serde_json::to_string).transpose()?,
            n_mcmc: r.config.as_ref().map(|c| i64::from(c.n_mcmc)),
            block_size: r.config.as_ref().map(|c| i64::from(c.block_size)),
            max_new_tokens: r.config.as_ref().map(|c| i64::from(c.max_new_tokens)),
            label: r.label.as_ref().map(|l| column_text(l.as_str())),
            version: r.version.as_deref().map(column_text),
            job_status: r.status,
        })
    }
}

/// What newly inserted rows add to one `batch_aggregates` row. Sums saturate: a sum past a
/// BIGINT is refused by PostgreSQL when it is added, as one result's own would be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AggregateDelta {
    jobs: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
    dead: i64,
    proposals: i64,
    acceptances: i64,
    tokens_generated: i64,
    completed_tokens_generated: i64,
    final_tokens: i64,
    model_calls: i64,
    first_submitted_at_ms: i64,
    last_finished_at_ms: i64,
}

impl AggregateDelta {
    fn add(&mut self, row: &ResultRow<'_>) {
        let count = |status: JobStatus| i64::from(row.job_status == status);
        if self.jobs == 0 {
            self.first_submitted_at_ms = row.submitted_at_ms;
            self.last_finished_at_ms = row.finished_at_ms;
        }
        self.jobs += 1;
        self.completed += count(JobStatus::Completed);
        self.failed += count(JobStatus::Failed);
        self.cancelled += count(JobStatus::Cancelled);
        self.dead += count(JobStatus::Dead);
        self.proposals = self.proposals.saturating_add(row.proposals);
        self.acceptances = self.acceptances.saturating_add(row.acceptances);
        self.tokens_generated = self.tokens_generated.saturating_add(row.tokens_generated);
        if row.completed {
            self.completed_tokens_generated = self
                .completed_tokens_generated
                .saturating_add(row.tokens_generated);
            self.final_tokens = self.final_tokens.saturating_add(row.final_len);
        }
        self.model_calls = self.model_calls.saturating_add(row.model_calls);
        self.first_submitted_at_ms = self.first_submitted_at_ms.min(row.submitted_at_ms);
        self.last_finished_at_ms = self.last_finished_at_ms.max(row.finished_at_ms);
    }
}

/// The aggregates the given rows add, by (batch, method), in that order; rows without a batch
/// add none.
fn aggregate_deltas<'r, 'a: 'r>(
    rows: impl IntoIterator<Item = &'r ResultRow<'a>>,
) -> BTreeMap<(&'r str, &'static str), AggregateDelta> {
    let mut deltas: BTreeMap<(&str, &'static str), AggregateDelta> = BTreeMap::new();
    for row in rows {
        if let Some(batch) = row.batch_id.as_deref() {
            deltas.entry((batch, row.method)).or_default().add(row);
        }
    }
    deltas
}

/// Binds the column values of `$row` to `$query`, in [`RESULT_COLUMNS`] order.
macro_rules! bind_row {
    ($query:expr, $row:expr) => {{
        let row = $row;
        $query
            .bind(&row.job_id)
            .bind(row.batch_id.as_deref())
            .bind(row.correlation_id)
            .bind(row.problem_id.as_deref())
            .bind(row.model.as_ref())
            .bind(row.method)
            .bind(row.seed)
            .bind(row.stream)
            .bind(row.status)
            .bind(&row.tokens)
            .bind(row.text.as_deref())
            .bind(row.log_p)
            .bind(row.ends_with_eos)
            .bind(row.proposals)
            .bind(row.acceptances)
            .bind(row.tokens_generated)
            .bind(row.model_calls)
            .bind(row.final_len)
            .bind(row.cost_multiplier)
            .bind(row.attempts)
            .bind(row.error.as_deref())
            .bind(row.submitted_at_ms)
            .bind(row.started_at_ms)
            .bind(row.finished_at_ms)
            .bind(row.latency_ms)
            .bind(&row.stats_json)
            .bind(&row.result_json)
            .bind(row.grader.as_deref())
            .bind(row.extracted.as_deref())
            .bind(row.correct)
            .bind(row.config_json.as_deref())
            .bind(row.n_mcmc)
            .bind(row.block_size)
            .bind(row.max_new_tokens)
            .bind(row.label.as_deref())
            .bind(row.version.as_deref())
    }};
}

/// Adds each of `$deltas` (by (batch, method)) to its aggregate row on `$tx`.
macro_rules! upsert_aggregates {
    ($tx:expr, $deltas:expr) => {{
        let mut done: Result<(), sqlx::Error> = Ok(());
        for ((batch, method), d) in $deltas {
            done = sqlx::query(UPSERT_AGGREGATE)
                .bind(batch)
                .bind(method)
                .bind(d.jobs)
                .bind(d.completed)
                .bind(d.failed)
                .bind(d.cancelled)
                .bind(d.dead)
                .bind(d.proposals)
                .bind(d.acceptances)
                .bind(d.tokens_generated)
                .bind(d.completed_tokens_generated)
                .bind(d.final_tokens)
                .bind(d.model_calls)
                .bind(d.first_submitted_at_ms)
                .bind(d.last_finished_at_ms)
                .execute(&mut *$tx)
                .await
                .map(|_| ());
            if done.is_err() {
                break;
            }
        }
        done
    }};
}

/// How [`Store::write_rows`] writes a batch's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writing {
    /// As few statements as possible; any refused row fails the whole transaction.
    Together,
    /// Each row and its aggregates under a savepoint of its own: a refused row is rolled back
    /// alone and reported, the others are committed.
    EachAlone,
}

/// What the rows `rows` are, for messages: "record job ID" or "record N results (jobs A to B)".
fn describe(rows: &[ResultRow<'_>]) -> String {
    match rows {
        [one] => format!("record job {}", one.job_id),
        [first, .., last] => format!(
            "record {} results (jobs {} to {})",
            rows.len(),
            first.job_id,
            last.job_id
        ),
        [] => "record no results".to_string(),
    }
}

impl Store {
    /// Stores a finished result; `Ok(true)` when newly stored, `Ok(false)` when a result of the same
    /// job was stored before (then nothing changes). The batch aggregates are updated in the same
    /// transaction, only when the job row was inserted, so a redelivered result never counts twice.
    /// One transaction per result: [`Store::record_batch`] stores many in one.
    pub async fn record(&self, result: &JobResult) -> Result<bool, StoreError> {
        let mut outcome = self.record_batch(std::slice::from_ref(result)).await?;
        match outcome.pop() {
            Some(Recorded::Stored) => Ok(true),
            Some(Recorded::Duplicate) => Ok(false),
            Some(Recorded::Refused(e)) => Err(e),
            None => unreachable!("record_batch answers for every result"),
        }
    }

    /// Stores finished results in one transaction, each exactly once by job id: a result whose job
    /// is stored already, or that comes again later in `results`, changes nothing and is not
    /// counted in the aggregates again.
    ///
    /// `Ok` has one [`Recorded`] per result, in order: stored, duplicate, or refused for a reason
    /// of its own (not final, or refused by the database: a constraint, a value out of range),
    /// in which case every other result is still stored. `Err` is a failure that is not the
    /// results' fault (class [`DatabaseUnavailable`](crate::StoreErrorClass::DatabaseUnavailable):
    /// the database busy, locked, down, read-only, out of disk space): the transaction was rolled
    /// back, nothing of the batch is stored, and the whole batch may be recorded again later.
    ///
    /// Only if the database refuses a batch at its commit (a deferred constraint), when no
    /// statement shows which result is at fault, are its results recorded one transaction each;
    /// an `Err` then may leave some of them stored, which is harmless: recording them again
    /// finds them duplicates.
    pub async fn record_batch<R>(&self, results: &[R]) -> Result<Vec<Recorded>, StoreError>
    where
        R: Borrow<JobResult> + Sync,
    {
        let mut outcomes: Vec<Option<Recorded>> = Vec::with_capacity(results.len());
        // The rows to write, with the position of their result; and later copies of a job's
        // result, with the position of its first copy.
        let mut rows: Vec<(usize, ResultRow<'_>)> = Vec::with_capacity(results.len());
        let mut first_copy: HashMap<JobId, usize> = HashMap::with_capacity(results.len());
        let mut copies: Vec<(usize, usize)> = Vec::new();
        for (at, result) in results.iter().enumerate() {
            let result = result.borrow();
            let outcome = if !result.status.is_final() {
                Some(Recorded::Refused(StoreError::NotFinished {
                    job_id: result.job_id.to_string(),
                    status: result.status.to_string(),
                }))
            } else if let Some(&first) = first_copy.get(&result.job_id) {
                copies.push((at, first));
                None
            } else {
                match ResultRow::new(result) {
                    Ok(row) => {
                        first_copy.insert(result.job_id, at);
                        rows.push((at, row));
                        None
                    }
                    Err(e) => Some(Recorded::Refused(
                        self.corrupt(format!("result of job {}", result.job_id), e),
                    )),
                }
            };
            outcomes.push(outcome);
        }
        // Job id order: concurrent writers take the rows' locks in the same order.
        rows.sort_by(|(_, a), (_, b)| a.job_id.cmp(&b.job_id));
        let (positions, rows): (Vec<usize>, Vec<ResultRow<'_>>) = rows.into_iter().unzip();

        let written = self.write_rows_isolating(&rows).await?;
        for (at, outcome) in positions.into_iter().zip(written) {
            outcomes[at] = Some(outcome);
        }
        for (at, first) in copies {
            outcomes[at] = Some(match &outcomes[first] {
                Some(Recorded::Refused(e)) => Recorded::Refused(e.clone()),
                _ => Recorded::Duplicate,
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every result has an outcome"))
            .collect())
    }

    /// Writes `rows` in one transaction; when the database refuses one of them, again with each
    /// row alone, and when it refuses that transaction's commit, one transaction per row.
    async fn write_rows_isolating(
        &self,
        rows: &[ResultRow<'_>],
    ) -> Result<Vec<Recorded>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match self.write_rows(rows, Writing::Together).await {
            Ok(written) => return Ok(written),
            Err(e) if !e.is_permanent_for_this_result() => return Err(e),
            Err(e) if rows.len() == 1 => return Ok(vec![Recorded::Refused(e)]),
            Err(_) => {}
        }
        match self.write_rows(rows, Writing::EachAlone).await {
            Ok(written) => return Ok(written),
            Err(e) if !e.is_permanent_for_this_result() => return Err(e),
            Err(_) => {}
        }
        let mut written = Vec::with_capacity(rows.len());
        for row in rows {
            let one = std::slice::from_ref(row);
            written.push(match self.write_rows(one, Writing::Together).await {
                Ok(mut one) => one.pop().expect("one outcome per row"),
                Err(e) if e.is_permanent_for_this_result() => Recorded::Refused(e),
                Err(e) => return Err(e),
            });
        }
        Ok(written)
    }

    /// One transaction that inserts `rows` (distinct jobs) where their jobs are not stored yet,
    /// and adds the inserted ones to the aggregates. `Err` rolls all of it back; with
    /// [`Writing::EachAlone`], a row the database refuses is rolled back alone and reported.
    async fn write_rows(
        &self,
        rows: &[ResultRow<'_>],
        writing: Writing,
    ) -> Result<Vec<Recorded>, StoreError> {
        let begin = match self.pool {
            // Take the write lock up front: a deferred transaction that must upgrade can fail with
            // SQLITE_BUSY without waiting for the busy timeout.
            Pool::Sqlite(_) => "BEGIN IMMEDIATE",
            Pool::Postgres(_) => "BEGIN",
        };
        let chunks = match writing {
            Writing::Together => insert_chunks(rows.len()),
            Writing::EachAlone => (0..rows.len()).map(|i| i..i + 1).collect(),
        };
        let placeholders = match self.pool {
            Pool::Sqlite(_) => Placeholders::Anonymous,
            Pool::Postgres(_) => Placeholders::Numbered,
        };
        let mut inserted = vec![false; rows.len()];
        let mut refused: Vec<Option<StoreError>> = (0..rows.len()).map(|_| None).collect();
        on_pool!(self, |pool| {
            let mut tx = pool
                .begin_with(begin)
                .await
                .map_err(|e| self.query_err(describe(rows), e))?;
            for chunk in chunks {
                let these = &rows[chunk.clone()];
                if writing == Writing::EachAlone {
                    sqlx::query("SAVEPOINT record_row")
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.query_err(describe(these), e))?;
                }
                let attempt: Result<(), sqlx::Error> = async {
                    let mut query = sqlx::query(insert_sql(these.len(), placeholders));
                    for row in these {
                        query = bind_row!(query, row);
                    }
                    for returned in query.fetch_all(&mut *tx).await? {
                        let id: String = returned.try_get(0)?;
                        if let Some(i) = these.iter().position(|r| r.job_id == id) {
                            inserted[chunk.start + i] = true;
                        }
                    }
                    if writing == Writing::EachAlone && inserted[chunk.start] {
                        upsert_aggregates!(tx, aggregate_deltas(these))?;
                    }
                    Ok(())
                }
                .await;
                match attempt {
                    Ok(()) if writing == Writing::EachAlone => {
                        sqlx::query("RELEASE SAVEPOINT record_row")
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.query_err(describe(these), e))?;
                    }
                    Ok(()) => {}
                    Err(e) => {
                        let e = self.query_err(describe(these), e);
                        if writing == Writing::Together || !e.is_permanent_for_this_result() {
                            // Dropping the transaction rolls it back.
                            return Err(e);
                        }
                        sqlx::query("ROLLBACK TO SAVEPOINT record_row")
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.query_err(describe(these), e))?;
                        sqlx::query("RELEASE SAVEPOINT record_row")
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.query_err(describe(these), e))?;
                        inserted[chunk.start] = false;
                        refused[chunk.start] = Some(e);
                    }
                }
            }
            if writing == Writing::Together {
                let new_rows = rows
                    .iter()
                    .zip(&inserted)
                    .filter(|(_, i)| **i)
                    .map(|(r, _)| r);
                upsert_aggregates!(tx, aggregate_deltas(new_rows))
                    .map_err(|e| self.query_err(describe(rows), e))?;
            }
            tx.commit()
                .await
                .map_err(|e| self.query_err(describe(rows), e))?;
        });
        Ok(inserted
            .into_iter()
            .zip(refused)
            .map(|(inserted, refused)| match (refused, inserted) {
                (Some(e), _) => Recorded::Refused(e),
                (None, true) => Recorded::Stored,
                (None, false) => Recorded::Duplicate,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_up_to_the_limit_and_cover_every_row() {
        for n in 0..300 {
            let chunks = insert_chunks(n);
            let mut next = 0;
            for c in &chunks {
                assert_eq!(c.start, next, "n = {n}: {chunks:?}");
                assert!(c.len().is_power_of_two() && c.len() <= MAX_ROWS_PER_INSERT);
                next = c.end;
            }
            assert_eq!(next, n, "n = {n}: {chunks:?}");
        }
        assert_eq!(insert_chunks(100), vec![0..64, 64..96, 96..100]);
    }

    #[test]
    fn insert_statements_bind_thirty_six_columns_a_row() {
        let one = insert_sql(1, Placeholders::Numbered);
        assert!(one.contains("($1, $2,"), "{one}");
        assert!(
            one.ends_with("$36) ON CONFLICT (job_id) DO NOTHING RETURNING job_id"),
            "{one}"
        );
        let most = insert_sql(MAX_ROWS_PER_INSERT, Placeholders::Numbered);
        let last = format!("${})", 36 * MAX_ROWS_PER_INSERT);
        assert!(most.contains(&last), "{most}");
        assert!(!most.contains(&format!("${}", 36 * MAX_ROWS_PER_INSERT + 1)));
        assert_eq!(
            insert_sql(4, Placeholders::Numbered)
                .matches("), (")
                .count(),
            3
        );
        let anonymous = insert_sql(MAX_ROWS_PER_INSERT, Placeholders::Anonymous);
        assert_eq!(anonymous.matches('?').count(), 36 * MAX_ROWS_PER_INSERT);
        assert!(!anonymous.contains('$'), "{anonymous}");
    }
}
