//! Tests of the results store against real databases: every case runs on a SQLite file in a
//! temporary directory and on a fresh PostgreSQL database (created per test, dropped after).

use std::collections::BTreeMap;

use powerfleet_jobs::{
    BatchId, CorrelationId, GradeRecord, GradedRequest, Grader, Grading, JobId, JobResult,
    JobStatus, ReferenceAnswer, SubmissionRecord, SubmissionRequest,
};
use powerfleet_sampler::{BlockStats, ChainStats, Method, SamplerConfig};
use powerfleet_store::{
    CSV_COLUMNS, Recorded, Store, StoreError, StoreErrorClass, StoreOptions, redact_url, write_csv,
};
use powerfleet_testkit::{
    INJECTED_DISK_FULL, execute_raw, postgres_admin, postgres_admin_url, with_database,
};
use sqlx::{Connection, Row};

/// A fresh PostgreSQL database for one test.
struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let mut admin = postgres_admin().await;
        let name = format!("pf_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create the test database {name} at {}: {e}; the user of \
                     POWERFLEET_TEST_POSTGRES_URL must be allowed to create databases",
                    redact_url(&postgres_admin_url())
                )
            });
        let _ = admin.close().await;
        let url = with_database(&postgres_admin_url(), &name);
        PgDatabase { name, url }
    }

    async fn drop_database(&self) {
        let mut admin = postgres_admin().await;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot drop the test database {}: {e}", self.name));
        let _ = admin.close().await;
    }
}

/// Each name is an `async fn(&Store, &str)` (the store and its URL); this makes a `sqlite` and a
/// `postgres` test of it in a module of the same name.
macro_rules! both_dialects {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::TempDir::new().unwrap();
                let url = format!("sqlite://{}", dir.path().join("results.db").display());
                let store = powerfleet_store::Store::connect(&url).await.unwrap();
                super::$body(&store, &url).await;
                store.close().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = super::PgDatabase::create().await;
                let url = db.url.clone();
                // In a task, so that the database is dropped even when the body panics.
                let outcome = tokio::spawn(async move {
                    let store = powerfleet_store::Store::connect(&url).await.unwrap();
                    super::$body(&store, &url).await;
                    store.close().await;
                })
                .await;
                db.drop_database().await;
                if let Err(e) = outcome {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    )*};
}

both_dialects!(
    round_trip_keeps_every_field,
    recording_twice_stores_once,
    concurrent_records_store_once,
    unfinished_and_failed_results,
    lookups_by_batch_and_correlation,
    batch_summary_matches_hand_computation,
    unknown_batch_has_no_summary,
    ping_answers,
    grades_have_their_own_columns,
    nul_characters_read_back_identically,
    a_constraint_violation_is_the_result_s_fault,
    a_batch_stores_each_job_once,
    batched_aggregates_equal_one_by_one_aggregates,
    a_refused_result_leaves_the_rest_of_its_batch_stored,
    a_batch_that_fails_midway_stores_nothing,
    a_results_manifest_has_its_own_columns,
    a_row_of_the_old_shape_reads_back_without_a_manifest,
    submissions_are_stored_once_and_read_back,
);

fn stats(proposals: u64, acceptances: u64, tokens_generated: u64, model_calls: u64) -> ChainStats {
    ChainStats {
        proposals,
        acceptances,
        blocks: vec![
            BlockStats {
                proposals: proposals as u32 / 2,
                acceptances: acceptances as u32 / 2,
            },
            BlockStats {
                proposals: proposals as u32 - proposals as u32 / 2,
                acceptances: acceptances as u32 - acceptances as u32 / 2,
            },
        ],
        tokens_generated,
        model_calls,
        smc: None,
        lookahead: None,
    }
}

/// A completed result with every optional field set.
fn completed(batch: Option<BatchId>, correlation: &str) -> JobResult {
    powerfleet_testkit::result()
        .correlation_id(correlation.parse().unwrap())
        .batch_id(batch)
        .problem_id("problem-7")
        .model("toy:pivot")
        .seed(u64::MAX - 12_345)
        .stream(u64::MAX)
        .tokens(vec![5, 0, 42, u32::MAX])
        .text("caf\u{e9}, \"quoted\"\nsecond line")
        .log_p(f64::from_bits(0xC02A_BCDE_F012_3457))
        .ends_with_eos(true)
        .stats(stats(7, 3, 91, 12))
        .attempts(2)
        .submitted_at_ms(1_700_000_000_123)
        .started_at_ms(1_700_000_000_456)
        .finished_at_ms(1_700_000_001_789)
        .build()
}

fn failed(batch: Option<BatchId>, status: JobStatus, error: &str) -> JobResult {
    JobResult {
        status,
        tokens: vec![],
        text: None,
        log_p: None,
        ends_with_eos: false,
        stats: stats(2, 1, 17, 3),
        error: Some(error.into()),
        ..completed(batch, "failures")
    }
}

/// Reads one column of a job's row straight from the database, bypassing the store.
async fn raw_column<T>(store: &Store, url: &str, job: JobId, column: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>,
{
    let sql = format!("SELECT {column} FROM job_results WHERE job_id = $1");
    if store.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let row = sqlx::query(&sql)
            .bind(job.to_string())
            .fetch_one(&mut conn)
            .await
            .unwrap();
        row.get(0)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let row = sqlx::query(&sql)
            .bind(job.to_string())
            .fetch_one(&mut conn)
            .await
            .unwrap();
        row.get(0)
    }
}

async fn round_trip_keeps_every_field(store: &Store, url: &str) {
    let full = completed(Some(BatchId::new()), "exp-1.run:2");
    assert!(store.record(&full).await.unwrap());
    assert_eq!(store.job(full.job_id).await.unwrap().as_ref(), Some(&full));

    // The query columns hold the same values, exactly.
    let log_p: Option<f64> = raw_column(store, url, full.job_id, "log_p").await;
    assert_eq!(log_p.map(f64::to_bits), full.log_p.map(f64::to_bits));
    let seed: i64 = raw_column(store, url, full.job_id, "seed").await;
    assert_eq!(seed as u64, full.seed);
    let stream: i64 = raw_column(store, url, full.job_id, "stream").await;
    assert_eq!(stream as u64, full.stream);
    let cost: Option<f64> = raw_column(store, url, full.job_id, "cost_multiplier").await;
    assert_eq!(cost, Some(91.0 / 4.0));
    let latency: i64 = raw_column(store, url, full.job_id, "latency_ms").await;
    assert_eq!(latency, 1666);
    let stats_json: String = raw_column(store, url, full.job_id, "stats_json").await;
    assert_eq!(
        serde_json::from_str::<ChainStats>(&stats_json).unwrap(),
        full.stats
    );

    // And a result with every optional field empty.
    let sparse = JobResult {
        batch_id: None,
        problem_id: None,
        text: None,
        log_p: None,
        started_at_ms: None,
        seed: 0,
        stream: 0,
        stats: ChainStats::default(),
        ..completed(None, "sparse")
    };
    assert!(store.record(&sparse).await.unwrap());
    assert_eq!(store.job(sparse.job_id).await.unwrap(), Some(sparse));
    assert_eq!(store.job(JobId::new()).await.unwrap(), None);
}

async fn grades_have_their_own_columns(store: &Store, url: &str) {
    let graded = JobResult {
        grading: Some(Grading {
            template: "math-cot".into(),
            grader: Grader::Math,
            reference: ReferenceAnswer::Text("\\frac{1}{2}".into()),
            price_per_mtok: Some(0.2),
            reasoning_markers: None,
        }),
        grade: Some(GradeRecord {
            grader: "math".into(),
            extracted: Some("0.5".into()),
            answer_key: Some("0.5".into()),
            correct: true,
        }),
        ..completed(Some(BatchId::new()), "graded")
    };
    assert!(store.record(&graded).await.unwrap());
    assert_eq!(
        store.job(graded.job_id).await.unwrap().as_ref(),
        Some(&graded)
    );
    let grader: Option<String> = raw_column(store, url, graded.job_id, "grader").await;
    let extracted: Option<String> = raw_column(store, url, graded.job_id, "extracted").await;
    let correct: Option<bool> = raw_column(store, url, graded.job_id, "correct").await;
    assert_eq!(
        (grader.as_deref(), extracted.as_deref(), correct),
        (Some("math"), Some("0.5"), Some(true))
    );
    // Ungraded jobs leave them NULL.
    let plain = completed(None, "plain");
    assert!(store.record(&plain).await.unwrap());
    let correct: Option<bool> = raw_column(store, url, plain.job_id, "correct").await;
    assert_eq!(correct, None);
}

async fn recording_twice_stores_once(store: &Store, _url: &str) {
    let batch = BatchId::new();
    let first = completed(Some(batch), "c");
    assert!(store.record(&first).await.unwrap());
    assert!(!store.record(&first).await.unwrap());
    // A redelivery that differs (a later attempt) changes nothing either.
    let changed = JobResult {
        attempts: 9,
        ..first.clone()
    };
    assert!(!store.record(&changed).await.unwrap());
    assert_eq!(store.job(first.job_id).await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.jobs_by_batch(batch).await.unwrap(),
        vec![first.clone()]
    );
    let summary = store.batch_summary(batch).await.unwrap().unwrap();
    assert_eq!(summary.jobs, 1);
    assert_eq!(summary.by_status["completed"], 1);
    assert_eq!(summary.proposals, first.stats.proposals);
    assert_eq!(summary.tokens_generated, first.stats.tokens_generated);
    assert_eq!(summary.final_tokens, first.tokens.len() as u64);
}

async fn concurrent_records_store_once(store: &Store, url: &str) {
    // A second store on the same database plays a second collector.
    let other = Store::connect(url).await.unwrap();
    let batch = BatchId::new();
    let results: Vec<JobResult> = (0..8).map(|_| completed(Some(batch), "race")).collect();
    for r in &results {
        let (a, b) = tokio::join!(store.record(r), other.record(r));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a ^ b, "exactly one record must insert, got {a} and {b}");
        let (a, b) = tokio::join!(store.record(r), store.record(r));
        assert!(!a.unwrap() && !b.unwrap());
    }
    let summary = store.batch_summary(batch).await.unwrap().unwrap();
    assert_eq!(summary.jobs, 8);
    assert_eq!(summary.proposals, 8 * 7);
    assert_eq!(summary.model_calls, 8 * 12);
    assert_eq!(store.jobs_by_batch(batch).await.unwrap().len(), 8);
    other.close().await;
}

async fn unfinished_and_failed_results(store: &Store, _url: &str) {
    let batch = BatchId::new();
    let stored: Vec<JobResult> = [
        (JobStatus::Failed, "model toy:pivot not found"),
        (JobStatus::Cancelled, "cancelled by user"),
        (JobStatus::Dead, "delivered 5 times, \"gave up\""),
    ]
    .into_iter()
    .map(|(status, error)| failed(Some(batch), status, error))
    .collect();
    for r in &stored {
        assert!(store.record(r).await.unwrap());
        assert_eq!(store.job(r.job_id).await.unwrap().as_ref(), Some(r));
    }
    let summary = store.batch_summary(batch).await.unwrap().unwrap();
    let expected: BTreeMap<String, u64> = [
        ("completed", 0),
        ("failed", 1),
        ("cancelled", 1),
        ("dead", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(summary.by_status, expected);
    assert_eq!(summary.final_tokens, 0);
    assert_eq!(summary.cost_multiplier, None);
    assert_eq!(summary.tokens_generated, 3 * 17);

    for status in [JobStatus::Queued, JobStatus::Running] {
        let running = JobResult {
            status,
            ..failed(Some(batch), JobStatus::Failed, "x")
        };
        let err = store.record(&running).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFinished { .. }), "{err}");
        assert!(err.to_string().contains("only finished jobs"), "{err}");
        assert_eq!(store.job(running.job_id).await.unwrap(), None);
    }
    assert_eq!(store.batch_summary(batch).await.unwrap().unwrap().jobs, 3);
}

async fn lookups_by_batch_and_correlation(store: &Store, _url: &str) {
    let (b1, b2) = (BatchId::new(), BatchId::new());
    let c1: CorrelationId = "exp-a".parse().unwrap();
    let c2: CorrelationId = "exp-b".parse().unwrap();
    // Made in id order, recorded out of order.
    let all: Vec<JobResult> = [
        (Some(b1), &c1),
        (Some(b2), &c1),
        (Some(b1), &c2),
        (None, &c2),
        (Some(b1), &c1),
    ]
    .into_iter()
    .map(|(b, c)| completed(b, c.as_str()))
    .collect();
    // Two labelled across both correlation ids.
    let mut all = all;
    for i in [1, 2] {
        all[i].label = Some("study 1".parse().unwrap());
    }
    for i in [3, 0, 4, 2, 1] {
        assert!(store.record(&all[i]).await.unwrap());
    }
    let pick = |idx: &[usize]| idx.iter().map(|&i| all[i].clone()).collect::<Vec<_>>();
    assert_eq!(store.jobs_by_batch(b1).await.unwrap(), pick(&[0, 2, 4]));
    assert_eq!(store.jobs_by_batch(b2).await.unwrap(), pick(&[1]));
    assert_eq!(store.jobs_by_batch(BatchId::new()).await.unwrap(), vec![]);
    assert_eq!(
        store.jobs_by_correlation(&c1).await.unwrap(),
        pick(&[0, 1, 4])
    );
    assert_eq!(store.jobs_by_correlation(&c2).await.unwrap(), pick(&[2, 3]));
    let none: CorrelationId = "nobody".parse().unwrap();
    assert_eq!(store.jobs_by_correlation(&none).await.unwrap(), vec![]);
    let label = "study 1".parse().unwrap();
    assert_eq!(store.jobs_by_label(&label).await.unwrap(), pick(&[1, 2]));
    let other = "study 2".parse().unwrap();
    assert_eq!(store.jobs_by_label(&other).await.unwrap(), vec![]);
}

/// A job of the summary test: (method, status, latency ms, submitted offset ms, proposals,
/// acceptances, tokens generated, model calls, completion tokens).
type PlannedJob = (Method, JobStatus, u64, u64, u64, u64, u64, u64, usize);

/// Nearest-rank percentile, written independently of the store's: the smallest value with at least
/// `pct` percent of the values at or below it.
fn nearest_rank(values: &[u64], pct: u64) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort();
    v.iter()
        .copied()
        .find(|&x| v.iter().filter(|&&y| y <= x).count() as u64 * 100 >= pct * v.len() as u64)
}

async fn batch_summary_matches_hand_computation(store: &Store, _url: &str) {
    let batch = BatchId::new();
    let base = 1_800_000_000_000u64;
    let plan: [PlannedJob; 10] = [
        (
            Method::Power,
            JobStatus::Completed,
            120,
            0,
            10,
            4,
            100,
            20,
            8,
        ),
        (
            Method::Power,
            JobStatus::Completed,
            50,
            10,
            12,
            6,
            80,
            15,
            10,
        ),
        (Method::Power, JobStatus::Failed, 300, 20, 3, 1, 30, 5, 0),
        (Method::Power, JobStatus::Completed, 80, 30, 8, 2, 64, 11, 4),
        (Method::Power, JobStatus::Dead, 1000, 40, 0, 0, 0, 0, 0),
        (Method::Power, JobStatus::Completed, 40, 50, 9, 9, 45, 9, 5),
        (
            Method::Standard,
            JobStatus::Completed,
            70,
            60,
            0,
            0,
            6,
            1,
            6,
        ),
        (
            Method::Standard,
            JobStatus::Completed,
            200,
            70,
            0,
            0,
            3,
            1,
            3,
        ),
        (
            Method::Standard,
            JobStatus::Cancelled,
            90,
            80,
            0,
            0,
            2,
            1,
            0,
        ),
        (
            Method::Standard,
            JobStatus::Completed,
            60,
            90,
            0,
            0,
            7,
            1,
            7,
        ),
    ];
    let results: Vec<JobResult> = plan
        .iter()
        .map(
            |&(method, status, latency, offset, p, a, tg, mc, n)| JobResult {
                method,
                status,
                tokens: (0..n as u32).collect(),
                stats: stats(p, a, tg, mc),
                submitted_at_ms: base + offset,
                started_at_ms: Some(base + offset + 1),
                finished_at_ms: base + offset + latency,
                error: (status != JobStatus::Completed).then(|| "no".into()),
                ..completed(Some(batch), "summary")
            },
        )
        .collect();
    for r in &results {
        assert!(store.record(r).await.unwrap());
    }
    // Jobs of other batches and without a batch do not count.
    store
        .record(&completed(Some(BatchId::new()), "summary"))
        .await
        .unwrap();
    store.record(&completed(None, "summary")).await.unwrap();

    let s = store.batch_summary(batch).await.unwrap().unwrap();
    assert_eq!(s.batch_id, batch);
    assert_eq!(s.jobs, 10);
    let by_status: BTreeMap<String, u64> = [
        ("completed", 7),
        ("failed", 1),
        ("cancelled", 1),
        ("dead", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(s.by_status, by_status);
    // Sums by hand: proposals 10+12+3+8+0+9 = 42, acceptances 4+6+1+2+0+9 = 22.
    assert_eq!((s.proposals, s.acceptances), (42, 22));
    assert_eq!(s.acceptance_rate, Some(22.0 / 42.0));
    // Tokens generated 100+80+30+64+0+45 + 6+3+2+7 = 337; model calls 60 + 4 = 64.
    assert_eq!(s.tokens_generated, 337);
    assert_eq!(s.model_calls, 64);
    // Completed: generated 100+80+64+45+6+3+7 = 305 for 8+10+4+5+6+3+7 = 43 final tokens.
    assert_eq!(s.final_tokens, 43);
    assert_eq!(s.cost_multiplier, Some(305.0 / 43.0));
    // Latencies sorted: 40 50 60 70 80 90 120 200 300 1000; p50 rank 5, p95 rank 10.
    assert_eq!(s.latency_p50_ms, Some(80));
    assert_eq!(s.latency_p95_ms, Some(1000));
    let latencies: Vec<u64> = plan.iter().map(|p| p.2).collect();
    assert_eq!(s.latency_p50_ms, nearest_rank(&latencies, 50));
    assert_eq!(s.latency_p95_ms, nearest_rank(&latencies, 95));
    // First submission at base, last finish at base + 40 + 1000.
    assert_eq!(s.first_submitted_at_ms, Some(base));
    assert_eq!(s.last_finished_at_ms, Some(base + 1040));
    assert_eq!(s.throughput_jobs_per_s, Some(10.0 / 1.04));

    let methods: Vec<&str> = s.by_method.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(methods, ["power", "standard"]);
    let power = &s.by_method[0];
    assert_eq!((power.jobs, power.completed), (6, 4));
    // Pooled over the power jobs, the failed (3 proposals, 1 accepted) and dead ones included.
    assert_eq!((power.proposals, power.acceptances), (42, 22));
    assert_eq!(power.acceptance_rate, Some(22.0 / 42.0));
    assert_eq!(power.tokens_generated, 319);
    // Completed power jobs: 100+80+64+45 = 289 generated for 8+10+4+5 = 27 tokens.
    assert_eq!(power.cost_multiplier, Some(289.0 / 27.0));
    // Power latencies sorted: 40 50 80 120 300 1000; p50 rank 3, p95 rank 6.
    assert_eq!(power.latency_p50_ms, Some(80));
    assert_eq!(power.latency_p95_ms, Some(1000));
    let standard = &s.by_method[1];
    assert_eq!((standard.jobs, standard.completed), (4, 3));
    assert_eq!(standard.acceptance_rate, None);
    assert_eq!(standard.tokens_generated, 18);
    // Completed standard jobs: 6+3+7 = 16 generated for 6+3+7 = 16 tokens.
    assert_eq!(standard.cost_multiplier, Some(1.0));
    // Standard latencies sorted: 60 70 90 200; p50 rank 2, p95 rank 4.
    assert_eq!(standard.latency_p50_ms, Some(70));
    assert_eq!(standard.latency_p95_ms, Some(200));

    // The summary is what the results say, computed without the store.
    let completed_results: Vec<&JobResult> = results
        .iter()
        .filter(|r| r.status == JobStatus::Completed)
        .collect();
    let generated: u64 = completed_results
        .iter()
        .map(|r| r.stats.tokens_generated)
        .sum();
    let final_tokens: u64 = completed_results
        .iter()
        .map(|r| r.tokens.len() as u64)
        .sum();
    assert_eq!(
        s.cost_multiplier,
        Some(generated as f64 / final_tokens as f64)
    );
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(
        serde_json::from_str::<powerfleet_store::BatchSummary>(&json).unwrap(),
        s
    );
}

async fn unknown_batch_has_no_summary(store: &Store, _url: &str) {
    assert_eq!(store.batch_summary(BatchId::new()).await.unwrap(), None);
    // Jobs without a batch make no summary either.
    store.record(&completed(None, "loose")).await.unwrap();
    assert_eq!(store.batch_summary(BatchId::new()).await.unwrap(), None);
}

async fn ping_answers(store: &Store, url: &str) {
    store.ping().await.unwrap();
    assert_eq!(store.url(), redact_url(url));
    // Connecting again to a migrated database applies nothing and works.
    let again = Store::connect(url).await.unwrap();
    again.ping().await.unwrap();
    again.close().await;
}

/// Parses RFC 4180 CSV (quoted fields may hold commas, doubled quotes and newlines).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "CSV must end with a newline"
    );
    rows
}

#[test]
fn csv_has_a_header_and_quotes_fields() {
    let tricky = JobResult {
        text: Some("one, two \"three\"\nfour".into()),
        error: Some("a\r\nb".into()),
        ..completed(Some(BatchId::new()), "csv")
    };
    let sparse = failed(None, JobStatus::Dead, "plain");
    let mut out = Vec::new();
    write_csv(&[tricky.clone(), sparse.clone()], &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(&format!("{}\n", CSV_COLUMNS.join(","))),
        "{text}"
    );
    assert!(text.contains("\"one, two \"\"three\"\"\nfour\""), "{text}");

    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.len() == CSV_COLUMNS.len()));
    let col = |row: &Vec<String>, name: &str| {
        row[CSV_COLUMNS.iter().position(|c| *c == name).unwrap()].clone()
    };
    let t = &rows[1];
    assert_eq!(col(t, "job_id"), tricky.job_id.to_string());
    assert_eq!(col(t, "text"), tricky.text.clone().unwrap());
    assert_eq!(col(t, "error"), "a\r\nb");
    assert_eq!(col(t, "tokens"), "5 0 42 4294967295");
    assert_eq!(col(t, "seed"), tricky.seed.to_string());
    assert_eq!(col(t, "status"), "completed");
    assert_eq!(col(t, "method"), "power");
    let log_p: f64 = col(t, "log_p").parse().unwrap();
    assert_eq!(log_p.to_bits(), tricky.log_p.unwrap().to_bits());
    assert_eq!(col(t, "latency_ms"), "1666");
    let s = &rows[2];
    assert_eq!(col(s, "batch_id"), "");
    assert_eq!(col(s, "text"), "");
    assert_eq!(col(s, "log_p"), "");
    assert_eq!(col(s, "tokens"), "");
    assert_eq!(col(s, "status"), "dead");
    assert_eq!(col(s, "error"), "plain");

    let mut empty = Vec::new();
    write_csv(&[], &mut empty).unwrap();
    assert_eq!(parse_csv(&String::from_utf8(empty).unwrap()).len(), 1);
}

#[test]
fn csv_shows_formulas_as_text() {
    let hostile = JobResult {
        problem_id: Some("=HYPERLINK(\"http://evil\",\"open\")".into()),
        text: Some("@SUM(A1:A9)".into()),
        error: Some("-2+3".into()),
        ..completed(Some(BatchId::new()), "csv")
    };
    let mut out = Vec::new();
    write_csv(std::slice::from_ref(&hostile), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(",\"'=HYPERLINK(\"\"http://evil\"\",\"\"open\"\")\","),
        "{text}"
    );
    let rows = parse_csv(&text);
    let col = |name: &str| rows[1][CSV_COLUMNS.iter().position(|c| *c == name).unwrap()].clone();
    assert_eq!(col("problem_id"), "'=HYPERLINK(\"http://evil\",\"open\")");
    assert_eq!(col("text"), "'@SUM(A1:A9)");
    assert_eq!(col("error"), "'-2+3");
    // Numbers powerfleet wrote stay numbers.
    let log_p: f64 = col("log_p").parse().unwrap();
    assert_eq!(log_p.to_bits(), hostile.log_p.unwrap().to_bits());
}

#[test]
fn csv_of_a_graded_run_has_the_verdict_the_answer_key_and_grade_errors() {
    let grading = |reference: ReferenceAnswer| Grading {
        template: "plain".into(),
        grader: Grader::Exact,
        reference,
        price_per_mtok: None,
        reasoning_markers: None,
    };
    let right = JobResult {
        grading: Some(grading(ReferenceAnswer::Text("1, \"2\"".into()))),
        grade: Some(GradeRecord {
            grader: "exact".into(),
            extracted: Some("1, \"2\"".into()),
            answer_key: Some("1, \"2\"".into()),
            correct: true,
        }),
        ..completed(Some(BatchId::new()), "graded")
    };
    // Shown as C, B, A: the right option (A in the dataset) was shown third.
    let wrong = JobResult {
        grading: Some(grading(ReferenceAnswer::Choice {
            choices: vec!["x".into(), "y".into(), "z".into()],
            correct: 0,
            permutation: vec![2, 1, 0],
        })),
        grade: Some(GradeRecord {
            grader: "choice".into(),
            extracted: None,
            answer_key: None,
            correct: false,
        }),
        ..completed(Some(BatchId::new()), "graded")
    };
    let ungradable = JobResult {
        grading: Some(grading(ReferenceAnswer::Text("-4".into()))),
        grade_error: Some("the sandbox could not run, twice".into()),
        ..completed(Some(BatchId::new()), "graded")
    };
    let plain = completed(None, "plain");
    let mut out = Vec::new();
    write_csv(&[right, wrong, ungradable, plain], &mut out).unwrap();
    let rows = parse_csv(&String::from_utf8(out).unwrap());
    let cells = |row: &Vec<String>| -> Vec<String> {
        ["correct", "extracted", "reference", "grade_error"]
            .iter()
            .map(|name| row[CSV_COLUMNS.iter().position(|c| c == name).unwrap()].clone())
            .collect()
    };
    assert_eq!(cells(&rows[1]), ["true", "1, \"2\"", "1, \"2\"", ""]);
    assert_eq!(cells(&rows[2]), ["false", "", "C", ""]);
    assert_eq!(
        cells(&rows[3]),
        ["", "", "'-4", "the sandbox could not run, twice"]
    );
    assert_eq!(cells(&rows[4]), ["", "", "", ""]);
}

#[tokio::test]
async fn unknown_url_scheme_names_the_accepted_forms() {
    for url in [
        "mysql://bob:pl4nted-pw@db/results",
        "results.db",
        "redis://127.0.0.1:6379",
    ] {
        let err = Store::connect(url).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{msg}");
        assert!(msg.contains("sqlite://PATH"), "{msg}");
        assert!(msg.contains("postgres://"), "{msg}");
        assert!(!msg.contains("pl4nted-pw"), "password leaked: {msg}");
    }
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    // Nothing listens on port 1.
    let url = "postgres://alice:pl4nted-secret@127.0.0.1:1/results";
    let err = Store::connect(url).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{msg}");
    assert!(!msg.contains("pl4nted-secret"), "password leaked: {msg}");
    assert!(
        msg.contains("postgres://alice:***@127.0.0.1:1/results"),
        "{msg}"
    );
    assert!(msg.contains("check --database-url"), "{msg}");
    let debug = format!("{err:?}");
    assert!(
        !debug.contains("pl4nted-secret"),
        "password leaked: {debug}"
    );

    // A real server, a database that does not exist, a password in the query string too.
    let missing = format!("pf_missing_{}", uuid::Uuid::now_v7().simple());
    let base = with_database(&postgres_admin_url(), &missing);
    postgres_admin().await; // fails with a clear message when PostgreSQL is down
    let with_password = match base.find("://") {
        Some(i) if base[i + 3..].contains('@') => {
            let at = i + 3 + base[i + 3..].rfind('@').unwrap();
            let user_end = base[i + 3..at].find(':').map_or(at, |c| i + 3 + c);
            format!(
                "{}:pl4nted-secret{}?password=pl4nted-secret",
                &base[..user_end],
                &base[at..]
            )
        }
        _ => format!("{base}?password=pl4nted-secret"),
    };
    let err = Store::connect(&with_password).await.unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("pl4nted-secret"), "password leaked: {msg}");
    assert!(msg.contains(&missing), "{msg}");
    assert!(msg.contains("***"), "{msg}");
}

#[tokio::test]
async fn a_connected_store_never_shows_the_password() {
    let db = PgDatabase::create().await;
    // The test server trusts local connections, so any password is accepted.
    let url = format!("{}?password=pl4nted-secret", db.url);
    let store = Store::connect(&url).await;
    db.drop_database().await;
    let store = store.unwrap();
    assert!(store.is_postgres());
    let shown = format!("{} {store:?}", store.url());
    assert!(
        !shown.contains("pl4nted-secret"),
        "password leaked: {shown}"
    );
    assert!(shown.contains("password=***"), "{shown}");
    store.close().await;
}

#[tokio::test]
async fn sqlite_creates_missing_file_and_directories() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("nested").join("deeper").join("results.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await.unwrap();
    assert!(path.exists());
    assert!(!store.is_postgres());
    let r = completed(None, "file");
    store.record(&r).await.unwrap();
    store.close().await;
    // The data survives a reconnect.
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.job(r.job_id).await.unwrap(), Some(r));
    store.close().await;
}

/// Several collectors starting at once on a fresh SQLite file all get a migrated store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_to_a_fresh_sqlite_file_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("race.db").display());
    let connects: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::connect(&url).await })
        })
        .collect();
    for handle in connects {
        let store = handle
            .await
            .unwrap()
            .expect("every concurrent connect succeeds");
        store.ping().await.unwrap();
    }
}

async fn nul_characters_read_back_identically(store: &Store, url: &str) {
    // PostgreSQL's TEXT cannot hold 0x00; every text of a result may carry one.
    let batch = BatchId::new();
    let result = JobResult {
        problem_id: Some("p\0roblem".into()),
        model: "toy:\0pivot".into(),
        text: Some("\0before, in\0side\0\0 and after\0".into()),
        error: Some("err\0or".into()),
        grade: Some(GradeRecord {
            grader: "exact".into(),
            extracted: Some("ans\0wer".into()),
            answer_key: Some("key\0".into()),
            correct: false,
        }),
        ..completed(Some(batch), "nul-bytes")
    };
    assert!(store.record(&result).await.unwrap());
    assert_eq!(
        store.job(result.job_id).await.unwrap().as_ref(),
        Some(&result)
    );
    assert_eq!(
        store.jobs_by_batch(batch).await.unwrap(),
        vec![result.clone()]
    );
    assert_eq!(
        store.jobs_in(&[result.job_id]).await.unwrap(),
        vec![result.clone()]
    );
    // Stored once: a redelivery is a duplicate like any other.
    assert!(!store.record(&result).await.unwrap());

    // result_json holds NUL as JSON's escape; the other text columns show U+FFFD in its place.
    let json: String = raw_column(store, url, result.job_id, "result_json").await;
    assert!(!json.contains('\0'));
    assert!(json.contains("\\u0000"), "{json}");
    let text: Option<String> = raw_column(store, url, result.job_id, "text").await;
    assert_eq!(
        text.as_deref(),
        Some("\u{FFFD}before, in\u{FFFD}side\u{FFFD}\u{FFFD} and after\u{FFFD}")
    );
    for (column, shown) in [
        ("problem_id", "p\u{FFFD}roblem"),
        ("model", "toy:\u{FFFD}pivot"),
        ("error", "err\u{FFFD}or"),
        ("extracted", "ans\u{FFFD}wer"),
    ] {
        let value: Option<String> = raw_column(store, url, result.job_id, column).await;
        assert_eq!(value.as_deref(), Some(shown), "{column}");
    }
}

async fn a_constraint_violation_is_the_result_s_fault(store: &Store, url: &str) {
    // A rule of the database that this result breaks, however often it is tried.
    if store.is_postgres() {
        execute_raw(
            url,
            "ALTER TABLE job_results ADD CONSTRAINT no_rejects \
             CHECK (text IS NULL OR text NOT LIKE 'REJECT%')",
        )
        .await;
    } else {
        execute_raw(
            url,
            "CREATE TRIGGER no_rejects BEFORE INSERT ON job_results \
             WHEN NEW.text LIKE 'REJECT%' BEGIN SELECT RAISE(ABORT, 'no rejects'); END",
        )
        .await;
    }
    let batch = BatchId::new();
    let refused = JobResult {
        text: Some("REJECT me".into()),
        ..completed(Some(batch), "refused")
    };
    let err = store.record(&refused).await.unwrap_err();
    assert_eq!(err.class(), StoreErrorClass::ResultRefused, "{err}");
    assert!(err.is_permanent_for_this_result(), "{err}");
    assert!(
        err.to_string()
            .contains("storing it again fails the same way"),
        "{err}"
    );
    // Nothing of it was stored, and other results still are.
    assert_eq!(store.job(refused.job_id).await.unwrap(), None);
    assert_eq!(store.batch_summary(batch).await.unwrap(), None);
    assert!(store.record(&completed(Some(batch), "fine")).await.unwrap());
    assert_eq!(store.batch_summary(batch).await.unwrap().unwrap().jobs, 1);
}

/// Runs `sql` on the admin database of POWERFLEET_TEST_POSTGRES_URL.
async fn admin_execute(sql: &str) {
    let mut admin = postgres_admin().await;
    sqlx::query(sql)
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = admin.close().await;
}

/// The database name of a PostgreSQL URL.
fn database_of(url: &str) -> String {
    let path = &url[url.find("://").unwrap() + 3..];
    let path = path.split('?').next().unwrap();
    path[path.rfind('/').unwrap() + 1..].to_string()
}

/// Closes every connection of the test database `url` names except the admin's own: what a
/// server restart or failover does to the store's pool.
async fn terminate_backends(url: &str) {
    let mut admin = postgres_admin().await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database_of(url))
    .execute(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
}

/// A failover to a read-only standby: the database answers `SELECT 1` but refuses every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_postgres_is_not_the_result_s_fault() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let outcome = tokio::spawn(async move {
        let store = Store::connect(&url).await.unwrap();
        let name = database_of(&url);
        admin_execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on"
        ))
        .await;
        terminate_backends(&url).await;
        let result = completed(Some(BatchId::new()), "read-only");
        let err = store.record(&result).await.unwrap_err();
        assert_eq!(err.class(), StoreErrorClass::DatabaseUnavailable, "{err}");
        assert!(!err.is_permanent_for_this_result());
        assert!(err.to_string().contains("read-only"), "{err}");
        store
            .ping()
            .await
            .expect("a read-only database still answers");

        // From the admin database: a session of the read-only one could not change it back.
        admin_execute(&format!(
            "ALTER DATABASE {name} RESET default_transaction_read_only"
        ))
        .await;
        terminate_backends(&url).await;
        assert!(store.record(&result).await.unwrap());
        store.close().await;
    })
    .await;
    db.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A statement cut off by `statement_timeout` (here: waiting for a lock another session holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_statement_timeout_is_not_the_result_s_fault() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let outcome = tokio::spawn(async move {
        let store = Store::connect(&format!("{url}?options[statement_timeout]=300ms"))
            .await
            .unwrap();
        let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
        use sqlx::Executor;
        locker
            .execute("BEGIN; LOCK TABLE job_results IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let result = completed(Some(BatchId::new()), "timeout");
        let err = store.record(&result).await.unwrap_err();
        assert_eq!(err.class(), StoreErrorClass::DatabaseUnavailable, "{err}");
        assert!(err.to_string().contains("statement timeout"), "{err}");
        locker.execute("ROLLBACK").await.unwrap();
        locker.close().await.unwrap();
        assert!(store.record(&result).await.unwrap());
        store.close().await;
    })
    .await;
    db.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Another process holds the SQLite file's write lock for longer than the busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_not_the_result_s_fault() {
    use sqlx::Executor;
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("results.db").display());
    let store = Store::connect_with(
        &url,
        &StoreOptions {
            sqlite_busy_timeout: std::time::Duration::from_millis(200),
        },
    )
    .await
    .unwrap();
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let result = completed(Some(BatchId::new()), "locked");
    let err = store.record(&result).await.unwrap_err();
    assert_eq!(err.class(), StoreErrorClass::DatabaseUnavailable, "{err}");
    assert!(!err.is_permanent_for_this_result());
    locker.execute("COMMIT").await.unwrap();
    locker.close().await.unwrap();
    assert!(store.record(&result).await.unwrap());
    assert_eq!(store.job(result.job_id).await.unwrap(), Some(result));
    store.close().await;
}

/// The outcomes of `record_batch` as short names, for assertions.
fn outcome_names(outcomes: &[Recorded]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            Recorded::Stored => "stored",
            Recorded::Duplicate => "duplicate",
            Recorded::Refused(_) => "refused",
        })
        .collect()
}

async fn a_batch_stores_each_job_once(store: &Store, _url: &str) {
    let batch = BatchId::new();
    let earlier = completed(Some(batch), "batched");
    assert!(store.record(&earlier).await.unwrap());
    let (a, b) = (
        completed(Some(batch), "batched"),
        completed(Some(batch), "batched"),
    );
    let no_batch = completed(None, "batched");
    // A later copy of a job in the same batch, differing as a redelivery may (another attempt).
    let a_again = JobResult {
        attempts: 7,
        ..a.clone()
    };
    let outcomes = store
        .record_batch(&[&a, &earlier, &b, &a_again, &no_batch, &b])
        .await
        .unwrap();
    assert_eq!(
        outcome_names(&outcomes),
        [
            "stored",
            "duplicate",
            "stored",
            "duplicate",
            "stored",
            "duplicate"
        ]
    );
    // The first copy is the one stored.
    assert_eq!(store.job(a.job_id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.job(no_batch.job_id).await.unwrap(), Some(no_batch));
    let stored = store.jobs_by_batch(batch).await.unwrap();
    let mut expected = vec![earlier.clone(), a.clone(), b.clone()];
    expected.sort_by_key(|r| r.job_id);
    assert_eq!(stored, expected);
    let summary = store.batch_summary(batch).await.unwrap().unwrap();
    assert_eq!(summary.jobs, 3, "each job counted once");
    assert_eq!(summary.by_status["completed"], 3);
    assert_eq!(summary.proposals, 3 * 7);
    assert_eq!(summary.acceptances, 3 * 3);
    assert_eq!(summary.tokens_generated, 3 * 91);
    assert_eq!(summary.model_calls, 3 * 12);
    assert_eq!(summary.final_tokens, 3 * 4);

    // The whole batch again: nothing changes.
    let outcomes = store.record_batch(&[a, b, earlier]).await.unwrap();
    assert_eq!(outcome_names(&outcomes), ["duplicate"; 3]);
    assert_eq!(store.batch_summary(batch).await.unwrap(), Some(summary));
    assert!(
        store
            .record_batch::<JobResult>(&[])
            .await
            .unwrap()
            .is_empty()
    );
}

/// Results of several methods and statuses, with their own counts and times.
fn varied_results(batch: BatchId, n: u64) -> Vec<JobResult> {
    let methods = [Method::Power, Method::MaxSwap, Method::LowTemp];
    let statuses = [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Completed,
        JobStatus::Cancelled,
        JobStatus::Dead,
    ];
    (0..n)
        .map(|i| {
            let status = statuses[(i % 5) as usize];
            JobResult {
                method: methods[(i % 3) as usize],
                status,
                tokens: (0..(i % 9) as u32).collect(),
                stats: stats(i % 13, i % 5, 10 + i, 1 + i % 4),
                submitted_at_ms: 1_700_000_000_000 + (i * 7_919) % 1_000,
                finished_at_ms: 1_700_000_010_000 + (i * 104_729) % 5_000,
                error: (status != JobStatus::Completed).then(|| format!("error {i}")),
                ..completed(Some(batch), "varied")
            }
        })
        .collect()
}

async fn batched_aggregates_equal_one_by_one_aggregates(store: &Store, _url: &str) {
    // More results than one INSERT statement holds, with copies spread over the batches.
    let (one_by_one, batched) = (BatchId::new(), BatchId::new());
    let reference = varied_results(one_by_one, 150);
    for r in &reference {
        assert!(store.record(r).await.unwrap());
    }
    let results: Vec<JobResult> = reference
        .iter()
        .map(|r| JobResult {
            job_id: JobId::new(),
            batch_id: Some(batched),
            ..r.clone()
        })
        .collect();
    let mut first = results[..100].to_vec();
    first.extend_from_slice(&results[10..20]);
    let outcomes = store.record_batch(&first).await.unwrap();
    let names = outcome_names(&outcomes);
    assert_eq!(names[..100], ["stored"; 100]);
    assert_eq!(names[100..], ["duplicate"; 10]);
    let outcomes = store.record_batch(&results[90..]).await.unwrap();
    let names = outcome_names(&outcomes);
    assert_eq!(names[..10], ["duplicate"; 10]);
    assert_eq!(names[10..], ["stored"; 50]);

    let expected = store.batch_summary(one_by_one).await.unwrap().unwrap();
    let got = store.batch_summary(batched).await.unwrap().unwrap();
    assert_eq!(got.jobs, 150);
    assert_eq!(
        powerfleet_store::BatchSummary {
            batch_id: one_by_one,
            ..got
        },
        expected
    );
    assert_eq!(store.jobs_by_batch(batched).await.unwrap().len(), 150);
}

/// Makes the database refuse results whose text starts with REJECT, as a rule of its own.
async fn refuse_rejects(store: &Store, url: &str) {
    if store.is_postgres() {
        execute_raw(
            url,
            "ALTER TABLE job_results ADD CONSTRAINT no_rejects \
             CHECK (text IS NULL OR text NOT LIKE 'REJECT%')",
        )
        .await;
    } else {
        execute_raw(
            url,
            "CREATE TRIGGER no_rejects BEFORE INSERT ON job_results \
             WHEN NEW.text LIKE 'REJECT%' BEGIN SELECT RAISE(ABORT, 'no rejects'); END",
        )
        .await;
    }
}

async fn a_refused_result_leaves_the_rest_of_its_batch_stored(store: &Store, url: &str) {
    refuse_rejects(store, url).await;
    let batch = BatchId::new();
    let earlier = completed(Some(batch), "refusals");
    assert!(store.record(&earlier).await.unwrap());
    let mut results: Vec<JobResult> = (0..100)
        .map(|_| completed(Some(batch), "refusals"))
        .collect();
    // One refused result in the first INSERT statement's rows, one in the last one's.
    for at in [3, 97] {
        results[at].text = Some(format!("REJECT {at}"));
    }
    let unfinished = JobResult {
        status: JobStatus::Running,
        ..completed(Some(batch), "refusals")
    };
    results.push(unfinished.clone());
    results.push(earlier.clone());
    results.push(results[3].clone());
    results.push(results[50].clone());
    let outcomes = store.record_batch(&results).await.unwrap();
    let names = outcome_names(&outcomes);
    for (at, name) in names.iter().enumerate() {
        let expected = match at {
            3 | 97 | 100 | 102 => "refused",
            101 | 103 => "duplicate",
            _ => "stored",
        };
        assert_eq!(*name, expected, "result {at}");
    }
    for at in [3, 97, 102] {
        let Recorded::Refused(e) = &outcomes[at] else {
            unreachable!()
        };
        assert_eq!(e.class(), StoreErrorClass::ResultRefused, "{e}");
        assert!(
            e.to_string().contains(&results[at].job_id.to_string()),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("storing it again fails the same way"),
            "{e}"
        );
    }
    let Recorded::Refused(e) = &outcomes[100] else {
        unreachable!()
    };
    assert!(matches!(e, StoreError::NotFinished { .. }), "{e}");
    assert!(e.is_permanent_for_this_result());

    for at in [3, 97] {
        assert_eq!(store.job(results[at].job_id).await.unwrap(), None);
    }
    assert_eq!(store.job(unfinished.job_id).await.unwrap(), None);
    assert_eq!(store.jobs_by_batch(batch).await.unwrap().len(), 1 + 98);
    let summary = store.batch_summary(batch).await.unwrap().unwrap();
    assert_eq!(summary.jobs, 99, "the stored ones, each once");
    assert_eq!(summary.proposals, 99 * 7);
    assert_eq!(summary.final_tokens, 99 * 4);
}

/// Makes every later write to `table` fail for a reason of the database's, until
/// [`heal_writes`]: a disk-full error on PostgreSQL, an error of the engine on SQLite; `at_commit`
/// (PostgreSQL only) fails the commit instead, after every statement succeeded.
async fn fail_writes(store: &Store, url: &str, table: &str, at_commit: bool) {
    if store.is_postgres() {
        let trigger = if at_commit {
            format!(
                "CREATE CONSTRAINT TRIGGER injected_failure AFTER INSERT ON {table} \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION injected_failure()"
            )
        } else {
            format!(
                "CREATE TRIGGER injected_failure BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION injected_failure()"
            )
        };
        execute_raw(url, &format!("{INJECTED_DISK_FULL}{trigger}")).await;
    } else {
        assert!(!at_commit, "SQLite has no deferred triggers");
        // abs() of the smallest integer is an error of the engine (SQLITE_ERROR), as a full disk
        // or a broken file is: not the result's fault.
        execute_raw(
            url,
            &format!(
                "CREATE TABLE failing (x INT); INSERT INTO failing VALUES (1); \
                 CREATE TRIGGER injected_failure BEFORE INSERT ON {table} \
                 WHEN EXISTS (SELECT 1 FROM failing) \
                 BEGIN SELECT abs(-9223372036854775807 - 1); END"
            ),
        )
        .await;
    }
}

async fn heal_writes(url: &str) {
    execute_raw(url, "DELETE FROM failing").await;
}

async fn a_batch_that_fails_midway_stores_nothing(store: &Store, url: &str) {
    let batch = BatchId::new();
    let earlier = completed(Some(batch), "midway");
    assert!(store.record(&earlier).await.unwrap());
    let before = store.batch_summary(batch).await.unwrap();
    // The job rows go in; adding them to the aggregates fails.
    fail_writes(store, url, "batch_aggregates", false).await;
    let mut results: Vec<JobResult> = (0..80).map(|_| completed(Some(batch), "midway")).collect();
    results.push(earlier.clone());
    let err = store.record_batch(&results).await.unwrap_err();
    assert_eq!(err.class(), StoreErrorClass::DatabaseUnavailable, "{err}");
    assert!(!err.is_permanent_for_this_result());
    assert!(err.to_string().contains("then retry"), "{err}");
    for r in &results[..80] {
        assert_eq!(
            store.job(r.job_id).await.unwrap(),
            None,
            "nothing half-stored"
        );
    }
    assert_eq!(store.batch_summary(batch).await.unwrap(), before);
    assert_eq!(store.jobs_by_batch(batch).await.unwrap(), vec![earlier]);

    // Once the database takes writes again, the same batch is stored whole, each result for the
    // first time.
    heal_writes(url).await;
    let outcomes = store.record_batch(&results).await.unwrap();
    let names = outcome_names(&outcomes);
    assert_eq!(names[..80], ["stored"; 80]);
    assert_eq!(names[80], "duplicate");
    assert_eq!(store.batch_summary(batch).await.unwrap().unwrap().jobs, 81);
}

/// A commit that fails after every statement of the batch succeeded stores nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_fails_stores_nothing_on_postgres() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let outcome = tokio::spawn(async move {
        let store = Store::connect(&url).await.unwrap();
        fail_writes(&store, &url, "job_results", true).await;
        let batch = BatchId::new();
        let results: Vec<JobResult> = (0..20).map(|_| completed(Some(batch), "commit")).collect();
        let err = store.record_batch(&results).await.unwrap_err();
        assert_eq!(err.class(), StoreErrorClass::DatabaseUnavailable, "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(store.jobs_by_batch(batch).await.unwrap(), Vec::new());
        assert_eq!(store.batch_summary(batch).await.unwrap(), None);
        heal_writes(&url).await;
        let outcomes = store.record_batch(&results).await.unwrap();
        assert_eq!(outcome_names(&outcomes), ["stored"; 20]);
        assert_eq!(store.batch_summary(batch).await.unwrap().unwrap().jobs, 20);
        store.close().await;
    })
    .await;
    db.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A rule the database checks only at commit (a deferred constraint) refuses the batch without
/// saying which result broke it: the results are then stored one transaction each, and only the
/// one that breaks it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_refused_at_commit_is_found_on_postgres() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let outcome = tokio::spawn(async move {
        let store = Store::connect(&url).await.unwrap();
        execute_raw(
            &url,
            "CREATE FUNCTION no_rejects() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF NEW.text LIKE 'REJECT%' THEN \
                 RAISE EXCEPTION 'no rejects' USING ERRCODE = 'check_violation'; \
               END IF; \
               RETURN NEW; \
             END $$; \
             CREATE CONSTRAINT TRIGGER no_rejects AFTER INSERT ON job_results \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION no_rejects()",
        )
        .await;
        let batch = BatchId::new();
        let mut results: Vec<JobResult> = (0..10)
            .map(|_| completed(Some(batch), "deferred"))
            .collect();
        results[6].text = Some("REJECT at commit".into());
        let outcomes = store.record_batch(&results).await.unwrap();
        let mut expected = ["stored"; 10];
        expected[6] = "refused";
        assert_eq!(outcome_names(&outcomes), expected);
        let Recorded::Refused(e) = &outcomes[6] else {
            unreachable!()
        };
        assert_eq!(e.class(), StoreErrorClass::ResultRefused, "{e}");
        assert_eq!(store.jobs_by_batch(batch).await.unwrap().len(), 9);
        assert_eq!(store.batch_summary(batch).await.unwrap().unwrap().jobs, 9);
        store.close().await;
    })
    .await;
    db.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn a_results_manifest_has_its_own_columns(store: &Store, url: &str) {
    let mut result = completed(Some(BatchId::new()), "manifest");
    let config = SamplerConfig {
        n_mcmc: 7,
        block_size: 5,
        max_new_tokens: 40,
        ..SamplerConfig::new(Method::Power)
    };
    result.config = Some(config.validate().unwrap().manifest());
    result.label = Some("sweep, n_mcmc 7".parse().unwrap());
    assert_eq!(result.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(store.record(&result).await.unwrap());
    assert_eq!(
        store.job(result.job_id).await.unwrap().as_ref(),
        Some(&result)
    );
    let id = result.job_id;
    let n_mcmc: Option<i64> = raw_column(store, url, id, "n_mcmc").await;
    let block_size: Option<i64> = raw_column(store, url, id, "block_size").await;
    let max_new_tokens: Option<i64> = raw_column(store, url, id, "max_new_tokens").await;
    assert_eq!(
        (n_mcmc, block_size, max_new_tokens),
        (Some(7), Some(5), Some(40))
    );
    let label: Option<String> = raw_column(store, url, id, "label").await;
    assert_eq!(label.as_deref(), Some("sweep, n_mcmc 7"));
    let version: Option<String> = raw_column(store, url, id, "version").await;
    assert_eq!(version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let config_json: Option<String> = raw_column(store, url, id, "config_json").await;
    let stored: SamplerConfig = serde_json::from_str(&config_json.unwrap()).unwrap();
    assert_eq!(Some(stored), result.config);
}

async fn a_row_of_the_old_shape_reads_back_without_a_manifest(store: &Store, url: &str) {
    // A row written before results carried a manifest: the new columns NULL, and a
    // result_json without the new fields.
    let mut old = completed(Some(BatchId::new()), "old-shape");
    old.config = None;
    old.label = None;
    old.version = None;
    let json = serde_json::to_string(&old).unwrap();
    assert!(!json.contains("\"config\"") && !json.contains("\"version\""));
    let mut recorded = old.clone();
    recorded.config = Some(
        SamplerConfig::new(Method::Power)
            .validate()
            .unwrap()
            .manifest(),
    );
    recorded.version = Some("0.0.1".into());
    assert!(store.record(&recorded).await.unwrap());
    execute_raw(
        url,
        &format!(
            "UPDATE job_results SET config_json = NULL, n_mcmc = NULL, block_size = NULL, \
             max_new_tokens = NULL, label = NULL, version = NULL, result_json = '{}' \
             WHERE job_id = '{}'",
            json.replace('\'', "''"),
            old.job_id
        ),
    )
    .await;
    let back = store.job(old.job_id).await.unwrap().unwrap();
    assert_eq!(back, old);
    assert_eq!((back.config, back.label, back.version), (None, None, None));
    let mut csv = Vec::new();
    write_csv(&[old], &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    // The manifest's six columns come last, and are empty.
    assert_eq!(CSV_COLUMNS[CSV_COLUMNS.len() - 6], "label");
    let last_line = csv.trim_end().rsplit('\n').next().unwrap();
    assert!(last_line.ends_with(",,,,,,"), "{csv}");
}

async fn submissions_are_stored_once_and_read_back(store: &Store, _url: &str) {
    let correlation_id: CorrelationId = "subs".parse().unwrap();
    let record = |scheduled, created_at_ms| SubmissionRecord {
        batch_id: BatchId::new(),
        correlation_id: correlation_id.clone(),
        label: Some("a label".parse().unwrap()),
        models: vec!["toy:pivot".into()],
        methods: vec![Method::Power, Method::LowTemp],
        scheduled,
        created_at_ms,
        request: None,
    };
    // One with what it asked for, one recorded without (as before the request was kept).
    let a = SubmissionRecord {
        request: Some(SubmissionRequest {
            config: SamplerConfig::new(Method::Power),
            seeds: vec![0, 7],
            seed_count: 2,
            chains: 3,
            problems: 1,
            jobs_fingerprint: "00ff".into(),
            stop: vec!["\n\n".into()],
            chat: true,
            fallback_single_sample: false,
            graded: Some(GradedRequest {
                template: "user".into(),
                template_text: Some("Q: {question}".into()),
                grader: Some("regex:(\\d+)".into()),
                price_per_mtok: Some(0.5),
            }),
            submission_key: true,
        }),
        ..record(6, 1_000)
    };
    let b = record(4, 2_000);
    store
        .record_submissions(std::slice::from_ref(&a))
        .await
        .unwrap();
    // Delivered twice: stored once, the first kept.
    let again = SubmissionRecord {
        scheduled: 99,
        ..a.clone()
    };
    store.record_submissions(&[again, b.clone()]).await.unwrap();
    assert_eq!(store.submission(a.batch_id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.submission(BatchId::new()).await.unwrap(), None);
    assert_eq!(
        store
            .submissions_by_correlation(&correlation_id)
            .await
            .unwrap(),
        [a.clone(), b]
    );
    let label = "a label".parse().unwrap();
    let by_label = store.submissions_by_label(&label).await.unwrap();
    assert_eq!(by_label.len(), 2, "{by_label:?}");
    assert_eq!(by_label[0], a);
    assert!(
        store
            .submissions_by_label(&"another".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}
