//! Graded runs (dataset problems with reference answers) end to end: `submit --bench` through
//! real worker and collector processes on a private redis-server, grading in the collector, and
//! `report` (CLI and HTTP API) whose numbers are recomputed here from the stored job results,
//! and `report A B` comparing two such runs; broken datasets are refused before anything is
//! enqueued. The throughput command `powerfleet bench` is tested in `tests/bench.rs`.

use crate::common;

use std::collections::BTreeMap;

use common::{BIN, Fleet, PATIENCE, stdout_of};
use powerfleet_datasets::builtin_suite;
use powerfleet_jobs::{JobResult, JobStatus};
use serde_json::Value;

/// `1 - C(n - c, k) / C(n, k)` with exact integer binomials (the report uses a product form).
fn pass_at_k_by_binomials(n: u64, c: u64, k: u64) -> f64 {
    fn choose(n: u64, k: u64) -> u128 {
        if k > n {
            return 0;
        }
        (0..k).fold(1u128, |acc, i| acc * u128::from(n - i) / u128::from(i + 1))
    }
    1.0 - choose(n - c, k) as f64 / choose(n, k) as f64
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: report {a} vs recomputed {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benchmark_batch_reports_what_its_stored_results_say() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&["--concurrency", "8"]);
    fleet.spawn_collector();
    let (seeds, chains) = (4u64, 2u64);
    let receipt: Value = serde_json::from_str(&stdout_of(&fleet.cli(&[
        "submit",
        "--bench",
        "builtin:suite",
        "--methods",
        "power,low-temp,standard",
        "--seeds",
        &seeds.to_string(),
        "--chains",
        &chains.to_string(),
        "--n-mcmc",
        "4",
        "--block-size",
        "2",
        "--max-new-tokens",
        "6",
        "--price-per-mtok",
        "2.5",
        "--wait",
        "--format",
        "json",
    ])))
    .unwrap();
    let batch = receipt["batch_id"].as_str().unwrap().to_string();
    let suite = builtin_suite();
    let n_jobs = suite.len() as u64 * 3 * seeds * chains;
    assert_eq!(receipt["job_ids"].as_array().unwrap().len() as u64, n_jobs);

    // The stored results, graded by the collector: every grade agrees with the suite's own
    // answer check, and the verdict is in its own column too.
    let results: Vec<JobResult> =
        stdout_of(&fleet.cli(&["results", "--batch", &batch, "--format", "jsonl"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(results.len() as u64, n_jobs);
    for r in &results {
        assert_eq!(r.status, JobStatus::Completed, "{:?}", r.error);
        let item = suite
            .iter()
            .find(|i| Some(&i.problem.id) == r.problem_id.as_ref())
            .unwrap();
        assert_eq!(r.model, format!("toy:{}", item.model_name));
        let grade = r.grade.as_ref().expect("the collector graded it");
        let text = r.text.as_deref().unwrap();
        assert_eq!(grade.correct, item.is_correct(text), "{text:?}");
        assert_eq!(grade.grader, "regex");
    }
    let store = fleet.store().await;
    let correct_in_sql: i64 = {
        let pool = sqlx::SqlitePool::connect(&fleet.db_url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM job_results WHERE batch_id = $1 AND correct AND extracted IS NOT NULL",
        )
        .bind(&batch)
        .fetch_one(&pool)
        .await
        .unwrap();
        n
    };
    let correct_in_json = results
        .iter()
        .filter(|r| r.grade.as_ref().unwrap().correct)
        .count() as i64;
    assert_eq!(correct_in_sql, correct_in_json);
    drop(store);

    // The samples as chat-format training data: every completed one, or the correct ones.
    let sft = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["results", "--batch", &batch, "--format", "sft"];
        args.extend_from_slice(extra);
        stdout_of(&fleet.cli(&args))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let records = sft(&[]);
    assert_eq!(records.len() as u64, n_jobs);
    for record in &records {
        let job = results
            .iter()
            .find(|r| r.job_id.to_string() == record["job_id"].as_str().unwrap())
            .unwrap();
        let messages = record["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2, "{record}");
        assert_eq!(messages[0]["role"], "user");
        assert!(!messages[0]["content"].as_str().unwrap().is_empty());
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(messages[1]["content"].as_str(), job.text.as_deref());
        assert_eq!(record["method"], job.method.as_str());
        assert_eq!(record["problem_id"].as_str(), job.problem_id.as_deref());
        assert_eq!(record["correct"], job.grade.as_ref().unwrap().correct);
        // α is what a sample targeted: none for a standard sample, drawn from p itself.
        assert_eq!(
            record["alpha"].is_number(),
            job.method != powerfleet_sampler::Method::Standard,
            "{record}"
        );
    }
    let correct = sft(&["--correct-only"]);
    assert_eq!(correct.len() as i64, correct_in_json);
    assert!(correct.iter().all(|r| r["correct"] == true));

    // The report, recomputed from the stored results.
    let rows: Vec<Value> = stdout_of(&fleet.cli(&["report", &batch, "--format", "jsonl"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["row"], "batch");
    assert_eq!(rows[0]["jobs"], n_jobs);
    assert_eq!(rows[0]["problems"], suite.len());
    let methods: Vec<&Value> = rows.iter().filter(|r| r["row"] == "method").collect();
    assert_eq!(
        methods
            .iter()
            .map(|m| m["method"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["power", "low-temp", "standard"]
    );
    assert_eq!(rows[0]["missing"], 0);
    assert!(
        rows[0]["definitions"]["accuracy"]
            .as_str()
            .unwrap()
            .contains("scheduled"),
        "{}",
        rows[0]
    );
    let status: Value = serde_json::from_str(&stdout_of(
        &fleet.cli(&["status", &batch, "--format", "json"]),
    ))
    .unwrap();
    let mut accuracy = BTreeMap::new();
    for m in &methods {
        let method = m["method"].as_str().unwrap();
        let jobs: Vec<&JobResult> = results
            .iter()
            .filter(|r| r.method.as_str() == method)
            .collect();
        let correct = |r: &&&JobResult| r.grade.as_ref().unwrap().correct;
        // Accuracy: per sample (seed, chain), the share of problems right; mean and standard error.
        let mut per_sample: BTreeMap<(u64, u64), Vec<bool>> = BTreeMap::new();
        for r in &jobs {
            per_sample
                .entry((r.seed, r.stream))
                .or_default()
                .push(correct(&r));
        }
        assert_eq!(per_sample.len() as u64, seeds * chains);
        let shares: Vec<f64> = per_sample
            .values()
            .map(|v| v.iter().filter(|&&c| c).count() as f64 / v.len() as f64)
            .collect();
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        let var =
            shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (shares.len() - 1) as f64;
        close(m["accuracy"].as_f64().unwrap(), mean, "accuracy");
        close(
            m["accuracy_stderr"].as_f64().unwrap(),
            (var / shares.len() as f64).sqrt(),
            "standard error",
        );
        // Every scheduled sample completed and was graded: nothing is missing, and accuracy over
        // graded samples is the same number.
        assert_eq!(
            (
                m["scheduled"].as_u64(),
                m["graded"].as_u64(),
                m["missing"].as_u64()
            ),
            (Some(jobs.len() as u64), Some(jobs.len() as u64), Some(0))
        );
        assert_eq!(m["accuracy_graded"], m["accuracy"]);
        assert_eq!(m["accuracy_graded_stderr"], m["accuracy_stderr"]);
        accuracy.insert(method.to_string(), mean);
        // pass@k for k = 1..n, averaged over problems.
        let n = seeds * chains;
        let pass = m["pass_at_k"].as_array().unwrap();
        assert_eq!(pass.len() as u64, n);
        for k in 1..=n {
            let expected = suite
                .iter()
                .map(|item| {
                    let c = jobs
                        .iter()
                        .filter(|r| r.problem_id.as_deref() == Some(item.problem.id.as_str()))
                        .filter(correct)
                        .count() as u64;
                    pass_at_k_by_binomials(n, c, k)
                })
                .sum::<f64>()
                / suite.len() as f64;
            close(
                pass[k as usize - 1].as_f64().unwrap(),
                expected,
                &format!("{method} pass@{k}"),
            );
        }
        // Majority vote: right when the most common final answer is the reference (ties: either).
        let mut majority_right = (0u64, 0u64);
        for item in &suite {
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            for r in jobs
                .iter()
                .filter(|r| r.problem_id.as_deref() == Some(item.problem.id.as_str()))
            {
                if let Some(a) = r.grade.as_ref().unwrap().extracted.as_deref() {
                    *counts.entry(a).or_default() += 1;
                }
            }
            let top = counts.values().max().copied().unwrap_or(0);
            let winners: Vec<&str> = counts
                .iter()
                .filter(|(_, c)| **c == top)
                .map(|(a, _)| *a)
                .collect();
            let reference = &item.problem.answer;
            let right =
                |a: &str| matches!(reference, powerfleet_datasets::Answer::Text(t) if t == a);
            majority_right.0 += u64::from(winners.iter().all(|a| right(a)));
            majority_right.1 += u64::from(winners.iter().any(|a| right(a)));
        }
        let maj = m["majority_accuracy"].as_f64().unwrap() * suite.len() as f64;
        assert!(
            (majority_right.0 as f64) <= maj + 1e-9 && maj <= majority_right.1 as f64 + 1e-9,
            "{method}: majority {maj} outside {majority_right:?}"
        );
        // Cost, calls, acceptance, money.
        let generated: u64 = jobs.iter().map(|r| r.stats.tokens_generated).sum();
        let final_tokens: u64 = jobs.iter().map(|r| r.tokens.len() as u64).sum();
        assert_eq!(m["tokens_generated"], generated);
        assert_eq!(m["final_tokens"], final_tokens);
        assert_eq!(
            m["model_calls"],
            jobs.iter().map(|r| r.stats.model_calls).sum::<u64>()
        );
        close(
            m["cost_multiplier"].as_f64().unwrap(),
            generated as f64 / final_tokens as f64,
            "cost multiplier",
        );
        close(
            m["cost_usd"].as_f64().unwrap(),
            generated as f64 * 2.5 / 1e6,
            "money",
        );
        let rates: Vec<f64> = jobs
            .iter()
            .filter_map(|r| r.stats.acceptance_rate())
            .collect();
        let (proposals, acceptances) = jobs.iter().fold((0, 0), |(p, a), r| {
            (p + r.stats.proposals, a + r.stats.acceptances)
        });
        assert_eq!(m["proposals"], proposals);
        assert_eq!(m["acceptances"], acceptances);
        // The acceptance rate is the batch summary's: pooled over the method's jobs.
        let summary = &status["summary"]["by_method"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["method"] == method)
            .unwrap()["acceptance_rate"];
        assert_eq!(&m["acceptance_rate"], summary, "{method}");
        if method == "power" {
            assert_eq!(rates.len(), jobs.len());
            close(
                m["acceptance_rate"].as_f64().unwrap(),
                acceptances as f64 / proposals as f64,
                "acceptance",
            );
            close(
                m["mean_job_acceptance_rate"].as_f64().unwrap(),
                rates.iter().sum::<f64>() / rates.len() as f64,
                "mean job acceptance",
            );
            let by_block = m["acceptance_by_block"].as_array().unwrap();
            let blocks = jobs.iter().map(|r| r.stats.blocks.len()).max().unwrap();
            assert_eq!(by_block.len(), blocks);
            let (p, a) = jobs
                .iter()
                .filter_map(|r| r.stats.blocks.first())
                .fold((0, 0), |(p, a), b| (p + b.proposals, a + b.acceptances));
            close(
                by_block[0].as_f64().unwrap(),
                f64::from(a) / f64::from(p),
                "block 1",
            );
        } else {
            assert!(
                rates.is_empty()
                    && m["acceptance_rate"].is_null()
                    && m["mean_job_acceptance_rate"].is_null(),
                "{m}"
            );
        }
        let mut latencies: Vec<u64> = jobs.iter().map(|r| r.latency_ms()).collect();
        latencies.sort_unstable();
        let p50 = latencies[latencies.len().div_ceil(2) - 1];
        assert_eq!(m["latency_p50_ms"], p50);
    }
    // Per problem: who solved it.
    for p in rows.iter().filter(|r| r["row"] == "problem") {
        let id = p["problem_id"].as_str().unwrap();
        let solved: Vec<&str> = ["power", "low-temp", "standard"]
            .into_iter()
            .filter(|m| {
                results.iter().any(|r| {
                    r.problem_id.as_deref() == Some(id)
                        && r.method.as_str() == *m
                        && r.grade.as_ref().unwrap().correct
                })
            })
            .collect();
        assert_eq!(
            p["solved_by"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>(),
            solved
        );
    }
    assert!(
        accuracy["power"] > accuracy["low-temp"],
        "power sampling beats low temperature on the suite: {accuracy:?}"
    );

    // The same report over HTTP.
    let api = serve(&fleet).await;
    let body: Value = reqwest::get(format!("{api}/v1/batches/{batch}/report"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (http, cli_row) in body["methods"].as_array().unwrap().iter().zip(&methods) {
        for field in [
            "method",
            "accuracy",
            "accuracy_stderr",
            "accuracy_graded",
            "missing",
            "pass_at_k",
            "majority_accuracy",
            "acceptance_rate",
            "cost_usd",
        ] {
            assert_eq!(http[field], cli_row[field], "{field}");
        }
    }
    let priced: Value = reqwest::get(format!(
        "{api}/v1/batches/{batch}/report?price=toy%3Asuite-arith=1&price=0"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let arith_tokens: u64 = results
        .iter()
        .filter(|r| r.model == "toy:suite-arith")
        .map(|r| r.stats.tokens_generated)
        .sum();
    close(
        priced["cost_usd"].as_f64().unwrap(),
        arith_tokens as f64 / 1e6,
        "priced per model",
    );
    let bad = reqwest::get(format!("{api}/v1/batches/{batch}/report?price=cheap"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("USD per million tokens"));
    let unknown = reqwest::get(format!("{api}/v1/batches/{batch}/report?prices=1"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown query parameter \"prices\""),
        "{body}"
    );
    let missing = reqwest::get(format!(
        "{api}/v1/batches/{}/report",
        powerfleet_jobs::BatchId::new()
    ))
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);

    // A benchmark submitted over HTTP is graded and reported the same way.
    let client = reqwest::Client::new();
    let receipt: Value = client
        .post(format!("{api}/v1/jobs"))
        .json(&serde_json::json!({
            "model": "toy:suite-arith",
            "bench": {"builtin": "suite"},
            "methods": ["standard"],
            "seeds": [0, 1],
            "config": {"method": "standard", "max_new_tokens": 6},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let http_batch = receipt["batch_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{receipt}"));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let answer = reqwest::get(format!("{api}/v1/batches/{http_batch}/report"))
            .await
            .unwrap();
        if answer.status() == 200 {
            let report: Value = answer.json().await.unwrap();
            if report["graded"] == 2 * suite.len() {
                assert_eq!(report["methods"][0]["method"], "standard");
                assert_eq!(report["methods"][0]["samples"], 2);
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP batch was not graded in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Other formats and the figures.
    let csv = stdout_of(&fleet.cli(&["report", &batch, "--format", "csv"]));
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(&format!("pass_at_{}", seeds * chains))
    );
    assert_eq!(csv.lines().filter(|l| l.starts_with("method,")).count(), 3);
    // Trace and answer lengths beside each other: the suite's completions have no trace.
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (trace, answer) = (column("trace_chars"), column("answer_chars"));
    assert_eq!(answer, trace + 1);
    for row in csv.lines().filter(|l| l.starts_with("method,")) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[trace], "0", "{row}");
        assert!(cells[answer].parse::<f64>().unwrap() > 0.0, "{row}");
    }
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("problem,")).count(),
        suite.len() * 3
    );
    let md = stdout_of(&fleet.cli(&["report", &batch, "--format", "markdown"]));
    assert!(md.contains("| power |"), "{md}");
    let table = stdout_of(&fleet.cli(&["report", &batch]));
    assert!(table.lines().any(|l| l.starts_with("power ")), "{table}");
    let figures = fleet.dir.path().join("figures");
    let out = fleet.cli(&["report", &batch, "--plot", figures.to_str().unwrap()]);
    stdout_of(&out);
    for name in ["pass_at_k", "acceptance_by_block", "cost_vs_accuracy"] {
        let png = std::fs::read(figures.join(format!("{name}.png"))).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).expect("decodable");
        assert!(info.width >= 400 && info.height >= 300, "{name}: {info:?}");
        let distinct: std::collections::HashSet<&[u8]> = pixels.chunks(3).collect();
        assert!(distinct.len() > 8, "{name}.png is not blank");
        let svg = std::fs::read_to_string(figures.join(format!("{name}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("power"), "{name}.svg");
    }

    // Live status of the batch: `status --wait` returns once it is done, with the report's
    // acceptance rate of the whole batch.
    let status = stdout_of(&fleet.cli(&["status", &batch, "--wait"]));
    assert!(status.contains(&format!("completed {n_jobs}")), "{status}");
    let (proposals, acceptances) = results.iter().fold((0, 0), |(p, a), r| {
        (p + r.stats.proposals, a + r.stats.acceptances)
    });
    let line = format!(
        "acceptance rate {:.3} ({acceptances} of {proposals} proposals)",
        acceptances as f64 / proposals as f64
    );
    assert!(status.contains(&line), "{line:?} in:\n{status}");
}

/// The accuracy so far, as progress lines write it, of `results`: per method (by name), the
/// share of graded results that are correct, "power 0.500 (6 of 12 graded), standard ...".
fn accuracy_text(results: &[JobResult]) -> String {
    let mut by_method: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in results {
        let grade = r.grade.as_ref().expect("graded");
        let entry = by_method.entry(r.method.to_string()).or_default();
        entry.0 += u64::from(grade.correct);
        entry.1 += 1;
    }
    by_method
        .iter()
        .map(|(m, (c, n))| format!("{m} {:.3} ({c} of {n} graded)", *c as f64 / *n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Submits the built-in suite with `methods`, 2 seeds and small settings under `correlation`
/// (waiting for its results to be stored with `wait`); its batch id.
fn submit_suite(fleet: &Fleet, correlation: &str, methods: &str, wait: bool) -> String {
    let mut args = vec![
        "submit",
        "--bench",
        "builtin:suite",
        "--methods",
        methods,
        "--seeds",
        "2",
        "--n-mcmc",
        "2",
        "--block-size",
        "2",
        "--max-new-tokens",
        "6",
        "--correlation-id",
        correlation,
        "--format",
        "json",
    ];
    if wait {
        args.push("--wait");
    }
    let receipt: Value = serde_json::from_str(&stdout_of(&fleet.cli(&args))).unwrap();
    receipt["batch_id"].as_str().unwrap().to_string()
}

/// The stored results of `batch`, through `powerfleet results`.
fn stored_results(fleet: &Fleet, batch: &str) -> Vec<JobResult> {
    stdout_of(&fleet.cli(&["results", "--batch", batch, "--format", "jsonl"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// While a graded run is unfinished, its progress lines off a terminal say the accuracy so far,
/// read from the results stored until then; the last line says the accuracy of the whole run.
/// The run is two graded batches under one correlation id, watched with `status ID --wait`: the
/// first finished and stored, the second waiting for a worker, until one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_of_a_graded_run_say_the_accuracy_so_far() {
    let mut fleet = Fleet::new(BIN, false);
    let worker = fleet.spawn_worker(&["--concurrency", "4"]);
    fleet.spawn_collector();
    let correlation = powerfleet_jobs::CorrelationId::generate().to_string();
    // The first batch runs and is stored (`--wait` waits for the collector too).
    let first = submit_suite(&fleet, &correlation, "power,standard", true);
    let first_results = stored_results(&fleet, &first);
    // The second waits: no worker is left.
    fleet.kill_worker(worker);
    let second = submit_suite(&fleet, &correlation, "power", false);

    let mut command = fleet.cli_command(&["status", &correlation, "--wait"]);
    command.env("POWERFLEET_PROGRESS_EVERY", "100ms");
    let mut watching = common::Watching::start(command);
    let so_far = format!("; accuracy so far {}", accuracy_text(&first_results));
    let lines = watching
        .wait_for_lines("progress with the accuracy so far", 3, |l| {
            l.starts_with('[') && l.contains("accuracy so far")
        })
        .await;
    let unfinished = builtin_suite().len() * 2;
    for line in &lines {
        assert!(
            line.contains(&format!("waiting for {unfinished} of ")) && line.contains(&so_far),
            "{line:?} does not say {so_far:?}"
        );
    }

    fleet.spawn_worker(&["--concurrency", "4"]);
    let (status, stdout, lines) = watching.finish().await;
    let text = lines.join("\n");
    assert!(status.success(), "{stdout}\n{text}");
    // The last line: the whole run's accuracy, the second batch's results read as they came.
    let all: Vec<JobResult> = [
        stored_results(&fleet, &first),
        stored_results(&fleet, &second),
    ]
    .concat();
    let n_jobs = builtin_suite().len() * 2 * 3;
    assert_eq!(all.len(), n_jobs);
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("done in ")
            && last.ends_with(&format!(
                ": completed {n_jobs}; accuracy {}",
                accuracy_text(&all)
            )),
        "{text}"
    );
}

/// The 95% Wilson score interval of `c` correct of `n`, written out again here.
fn wilson(c: u64, n: u64) -> (f64, f64) {
    let z = 1.959_963_984_540_054f64;
    let (n, p) = (n as f64, c as f64 / n as f64);
    let d = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / d;
    let half = z / d * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (centre - half, centre + half)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_graded_batches_are_compared_side_by_side() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&["--concurrency", "8"]);
    fleet.spawn_collector();
    let seeds = 4u64;
    let submit = |alpha: &str, label: &str| -> String {
        let receipt: Value = serde_json::from_str(&stdout_of(&fleet.cli(&[
            "submit",
            "--bench",
            "builtin:suite",
            "--methods",
            "power,standard",
            "--seeds",
            &seeds.to_string(),
            "--alpha",
            alpha,
            "--n-mcmc",
            "2",
            "--block-size",
            "2",
            "--max-new-tokens",
            "6",
            "--label",
            label,
            "--wait",
            "--format",
            "json",
        ])))
        .unwrap();
        receipt["batch_id"].as_str().unwrap().to_string()
    };
    let a = submit("1", "alpha-1");
    let b = submit("4", "alpha-4");
    let stored = |batch: &str| -> Vec<JobResult> {
        stdout_of(&fleet.cli(&["results", "--batch", batch, "--format", "jsonl"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let runs = [("alpha-1", stored(&a)), ("alpha-4", stored(&b))];
    let suite = builtin_suite();

    // The first run by its batch id, the second by its label; both named by their labels.
    let args = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = ["report", a.as_str(), "label=alpha-4", "--require-complete"]
            .map(String::from)
            .to_vec();
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    let report = |extra: &[&str]| {
        let args = args(extra);
        stdout_of(&fleet.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let rows: Vec<Value> = report(&["--format", "jsonl"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["row"], "comparison");
    assert_eq!(rows[0]["baseline"], "alpha-1");
    assert_eq!(rows[0]["runs"], serde_json::json!(["alpha-1", "alpha-4"]));
    assert_eq!(rows[0]["pass_k"], seeds);
    assert_eq!(
        (&rows[1]["run"], &rows[1]["id"]),
        (&Value::from("alpha-1"), &Value::from(a.as_str()))
    );
    assert_eq!(rows[2]["id"], "label=alpha-4");
    assert_eq!(rows[2]["complete"], true);
    let compared: Vec<&Value> = rows.iter().filter(|r| r["row"] == "compared").collect();
    assert_eq!(compared.len(), 4);

    // Per problem, correct over graded samples of a run's method.
    let per_problem = |results: &[JobResult], method: &str| -> BTreeMap<String, (u64, u64)> {
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in results.iter().filter(|r| r.method.as_str() == method) {
            let e = by.entry(r.problem_id.clone().unwrap()).or_default();
            if let Some(g) = &r.grade {
                e.0 += u64::from(g.correct);
                e.1 += 1;
            }
        }
        by
    };
    for row in &compared {
        let (run, method) = (
            row["run"].as_str().unwrap(),
            row["method"].as_str().unwrap(),
        );
        let results = &runs.iter().find(|(name, _)| *name == run).unwrap().1;
        let jobs: Vec<&JobResult> = results
            .iter()
            .filter(|r| r.method.as_str() == method)
            .collect();
        assert_eq!(jobs.len(), suite.len() * seeds as usize);
        assert!(
            jobs.iter()
                .all(|r| r.status == JobStatus::Completed && r.grade.is_some())
        );
        let graded = jobs.len() as u64;
        let correct = jobs
            .iter()
            .filter(|r| r.grade.as_ref().unwrap().correct)
            .count() as u64;
        let what = format!("{run} {method}");
        assert_eq!(
            (row["graded"].as_u64(), row["correct"].as_u64()),
            (Some(graded), Some(correct)),
            "{what}"
        );
        close(
            row["sample_accuracy"].as_f64().unwrap(),
            correct as f64 / graded as f64,
            &what,
        );
        let (lo, hi) = wilson(correct, graded);
        close(
            row["sample_accuracy_ci95"]["lo"].as_f64().unwrap(),
            lo.max(0.0),
            &what,
        );
        close(
            row["sample_accuracy_ci95"]["hi"].as_f64().unwrap(),
            hi.min(1.0),
            &what,
        );
        let pass = suite
            .iter()
            .map(|item| {
                let c = jobs
                    .iter()
                    .filter(|r| r.problem_id.as_deref() == Some(item.problem.id.as_str()))
                    .filter(|r| r.grade.as_ref().unwrap().correct)
                    .count() as u64;
                pass_at_k_by_binomials(seeds, c, seeds)
            })
            .sum::<f64>()
            / suite.len() as f64;
        close(row["pass_at_common_k"].as_f64().unwrap(), pass, &what);
        let generated: u64 = jobs.iter().map(|r| r.stats.tokens_generated).sum();
        let final_tokens: u64 = jobs.iter().map(|r| r.tokens.len() as u64).sum();
        close(
            row["cost_multiplier"].as_f64().unwrap(),
            generated as f64 / final_tokens as f64,
            &what,
        );
        close(
            row["tokens_per_problem"].as_f64().unwrap(),
            generated as f64 / suite.len() as f64,
            &what,
        );
        if run == "alpha-1" {
            assert!(row["paired"].is_null(), "{row}");
            continue;
        }
        // alpha-4 minus alpha-1 per problem, the same method: mean, sd, and mean ± t(4) · sd /
        // sqrt 5 over the suite's five problems (t(4) = 2.7764451 from mpmath).
        let here = per_problem(results, method);
        let there = per_problem(&runs[0].1, method);
        let d: Vec<f64> = here
            .iter()
            .map(|(p, (c, n))| *c as f64 / *n as f64 - there[p].0 as f64 / there[p].1 as f64)
            .collect();
        assert_eq!(d.len(), 5);
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let half = 2.776_445_105_197_794 * sd / n.sqrt();
        let paired = &row["paired"];
        assert_eq!(
            (&paired["paired_with"], &paired["problems"]),
            (&Value::from(method), &Value::from(5))
        );
        close(paired["difference"].as_f64().unwrap(), mean, &what);
        close(paired["difference_sd"].as_f64().unwrap(), sd, &what);
        close(
            paired["difference_ci95"]["lo"].as_f64().unwrap(),
            mean - half,
            &what,
        );
        close(
            paired["difference_ci95"]["hi"].as_f64().unwrap(),
            mean + half,
            &what,
        );
    }

    // The other formats show the same rows.
    let table = report(&[]);
    assert!(table.contains(&format!("alpha-1 = {a}: ")), "{table}");
    assert!(table.contains("alpha-4 = label=alpha-4: "), "{table}");
    let power_b = compared
        .iter()
        .find(|r| r["run"] == "alpha-4" && r["method"] == "power")
        .unwrap();
    let shown = format!(
        "{:+.1}",
        100.0 * power_b["paired"]["difference"].as_f64().unwrap()
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alpha-4 ") && l.contains(" power ") && l.contains(&shown)),
        "{shown} in:\n{table}"
    );
    let md = report(&["--format", "markdown"]);
    assert!(md.contains("| alpha-4 | power |"), "{md}");
    let csv = report(&["--format", "csv"]);
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("alpha-")).count(),
        4,
        "{csv}"
    );

    // Figures: each run's own, titled by its label, and the comparison's.
    let figures = fleet.dir.path().join("compared");
    report(&["--plot", figures.to_str().unwrap()]);
    for run in ["alpha-1", "alpha-4"] {
        let svg = std::fs::read_to_string(figures.join(run).join("pass_at_k.svg")).unwrap();
        assert!(svg.contains(&format!("pass@k by method — {run}")), "{run}");
    }
    let png = std::fs::read(figures.join("compare_accuracy_vs_cost.png")).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut pixels).expect("decodable");
    let svg = std::fs::read_to_string(figures.join("compare_accuracy_vs_cost.svg")).unwrap();
    assert!(svg.contains("<svg"));
    for label in [
        "alpha-1 · power",
        "alpha-1 · standard",
        "alpha-4 · power",
        "alpha-4 · standard",
    ] {
        assert!(svg.contains(label), "{label} in the comparison figure");
    }

    // A run named twice is refused.
    let out = fleet.cli(&["report", &a, &a]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is given twice"));
}

/// Serves the HTTP API of `fleet` on a free port; returns its base URL.
async fn serve(fleet: &Fleet) -> String {
    use powerfleet_fleet::api::{self, ApiState, RequestLimits};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState {
        queue: fleet.queue().await,
        store: fleet.store().await,
        tokens: std::sync::Arc::new(Vec::new()),
        models: Default::default(),
        datasets: Default::default(),
        openai: Default::default(),
        limits: RequestLimits {
            max_body_bytes: 1 << 20,
            max_jobs_per_request: 1000,
            ..RequestLimits::default()
        },
    };
    tokio::spawn(api::serve(
        listener,
        state,
        Default::default(),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_datasets_are_refused_with_line_numbers_before_anything_is_enqueued() {
    let fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let dir = fleet.dir.path();
    let jsonl = dir.join("math.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\": \"ok\", \"prompt\": \"1 + 1\", \"answer\": \"2\"}\n\
         {\"id\": \"p2\", \"answer\": \"1\"}\n\
         \n\
         {\"id\": \"p4\", \"prompt\": \"y\"}\n\
         not json\n",
    )
    .unwrap();
    let out = fleet.cli(&[
        "submit",
        "--bench",
        jsonl.to_str().unwrap(),
        "--model",
        "llamacpp+http://127.0.0.1:1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has 3 errors"), "{stderr}");
    assert!(stderr.contains("line 2: missing `prompt`"), "{stderr}");
    assert!(stderr.contains("line 4: missing `answer`"), "{stderr}");
    assert!(stderr.contains("line 5: not valid JSON"), "{stderr}");

    let choice = dir.join("gpqa.jsonl");
    std::fs::write(
        &choice,
        "{\"question\": \"q1\", \"choices\": [\"a\", \"b\", \"c\"], \"answer\": \"B\"}\n\
         {\"question\": \"q2\", \"choices\": [\"a\", \"b\"], \"answer\": \"D\"}\n",
    )
    .unwrap();
    let out = fleet.cli(&[
        "submit",
        "--bench",
        choice.to_str().unwrap(),
        "--model",
        "llamacpp+http://127.0.0.1:1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("multiple-choice format"), "{stderr}");
    assert!(
        stderr.contains("line 2: `answer` \"D\" is out of range for 2 choices"),
        "{stderr}"
    );

    let math500 = dir.join("math500.json");
    std::fs::write(
        &math500,
        "[{\"prompt\": \"x\", \"answer\": \"1\"}, {\"prompt\": \"y\"}]",
    )
    .unwrap();
    let out = fleet.cli(&[
        "submit",
        "--bench",
        math500.to_str().unwrap(),
        "--model",
        "llamacpp+http://127.0.0.1:1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("index 1: missing `answer`"), "{stderr}");

    // A good dataset with a bad template, grader or model: refused, naming the option.
    std::fs::write(&jsonl, "{\"prompt\": \"1 + 1\", \"answer\": \"2\"}\n").unwrap();
    let bench = jsonl.to_str().unwrap();
    for (args, message) in [
        (
            vec!["--template", "nope"],
            "neither a built-in template (plain, math-cot, multiple-choice)",
        ),
        (
            vec!["--grader", "fuzzy"],
            "--grader must be one of math, math-lenient, choice, exact, regex:PATTERN",
        ),
        (
            vec!["--reasoning-markers", "<think>"],
            "--reasoning-markers must be OPEN,CLOSE",
        ),
        (
            vec!["--reasoning-markers", "<t>,<t>"],
            "reasoning markers must be two different non-blank strings",
        ),
        (
            vec!["--grader", "choice"],
            "grader choice needs a multiple-choice answer",
        ),
        (vec!["--model", "toy:tiny"], "unknown token"),
        (
            vec!["--chat", "--model", "toy:tiny"],
            "has no chat template",
        ),
    ] {
        let mut all = vec!["submit", "--bench", bench];
        if !args.contains(&"--model") {
            all.extend(["--model", "llamacpp+http://127.0.0.1:1"]);
        }
        all.extend(args.iter().copied());
        let out = fleet.cli(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert_eq!(
        queue.job_backlog().await.unwrap(),
        (0, 0),
        "nothing was enqueued"
    );
}

/// `powerfleet export ID --dir DIR`: a graded batch as a run directory. The manifest says what
/// was run and counts what is stored, `samples.jsonl` holds every job's sample as stored,
/// `results.json` is the report and `figures/` its figures; a used directory is refused without
/// `--force`, and an id with nothing stored fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graded_batch_exports_as_a_run_directory() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&["--concurrency", "4"]);
    fleet.spawn_collector();
    let receipt: Value = serde_json::from_str(&stdout_of(
        &fleet.cli(
            &[
                ["submit", "--bench", "builtin:suite"].as_slice(),
                &common::two_methods_two_seeds("2", "6"),
                &["--label", "export check", "--wait", "--format", "json"],
            ]
            .concat(),
        ),
    ))
    .unwrap();
    let batch = receipt["batch_id"].as_str().unwrap().to_string();
    let job_ids: std::collections::BTreeSet<&str> = receipt["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap())
        .collect();
    let n_jobs = job_ids.len();
    assert_eq!(n_jobs, builtin_suite().len() * 2 * 2);
    let store = fleet.store().await;
    let batch_id: powerfleet_jobs::BatchId = batch.parse().unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while store.submission(batch_id).await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the collector never stored the submission"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stored: BTreeMap<String, JobResult> =
        stdout_of(&fleet.cli(&["results", "--batch", &batch, "--format", "jsonl"]))
            .lines()
            .map(|l| serde_json::from_str::<JobResult>(l).unwrap())
            .map(|r| (r.job_id.to_string(), r))
            .collect();
    assert_eq!(stored.len(), n_jobs);

    let dir = fleet.dir.path().join("runs").join("suite");
    let dir_arg = dir.to_str().unwrap();
    let out = fleet.cli(&["export", &batch, "--dir", dir_arg]);
    stdout_of(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    for line in [
        format!("wrote {dir_arg}/samples.jsonl: {n_jobs} samples"),
        format!("wrote {dir_arg}/results.json: "),
        format!("wrote {dir_arg}/figures: 6 files"),
        format!("wrote {dir_arg}/manifest.json: "),
    ] {
        assert!(
            progress.lines().any(|l| l.starts_with(&line)),
            "{line:?} in:\n{progress}"
        );
    }

    // samples.jsonl: a line per job, every field present (null when it does not apply), each as
    // the results store has it.
    let samples: Vec<Value> = std::fs::read_to_string(dir.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), n_jobs);
    let fields = [
        "job_id",
        "batch_id",
        "correlation_id",
        "problem_id",
        "method",
        "config",
        "seed",
        "stream",
        "model",
        "label",
        "prompt",
        "text",
        "tokens",
        "correct",
        "extracted",
        "reference",
        "grade_error",
        "status",
        "error",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for s in &samples {
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = fields.to_vec();
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected, "{s}");
        let id = s["job_id"].as_str().unwrap();
        assert!(seen.insert(id.to_string()), "job {id} twice");
        let r = &stored[id];
        assert_eq!(s["batch_id"], batch);
        assert_eq!(s["correlation_id"], r.correlation_id.as_str());
        assert_eq!(s["problem_id"].as_str(), r.problem_id.as_deref());
        assert_eq!(s["method"], r.method.as_str());
        assert_eq!(s["config"], serde_json::to_value(&r.config).unwrap());
        assert!(s["config"]["n_mcmc"].is_number(), "{s}");
        assert_eq!(
            (s["seed"].as_u64(), s["stream"].as_u64()),
            (Some(r.seed), Some(r.stream))
        );
        assert_eq!(s["model"], r.model);
        assert_eq!(s["label"], "export check");
        let prompt = s["prompt"]["text"].as_str().expect("a text prompt");
        assert!(!prompt.is_empty());
        assert_eq!(s["prompt"], serde_json::to_value(&r.prompt).unwrap());
        assert_eq!(s["text"].as_str(), r.text.as_deref());
        assert_eq!(s["tokens"], serde_json::to_value(&r.tokens).unwrap());
        let grade = r.grade.as_ref().unwrap();
        assert_eq!(s["correct"], grade.correct);
        assert_eq!(s["extracted"].as_str(), grade.extracted.as_deref());
        assert_eq!(
            s["reference"],
            serde_json::to_value(&r.grading.as_ref().unwrap().reference).unwrap()
        );
        assert!(s["grade_error"].is_null() && s["error"].is_null(), "{s}");
        assert_eq!(s["status"], "completed");
    }
    assert_eq!(
        seen.iter()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        job_ids
    );

    // manifest.json: the selection, the submission, what ran and what made it, and the counts.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["selection"],
        serde_json::json!({"batch_id": batch})
    );
    assert_eq!(manifest["counts"]["scheduled"], n_jobs);
    assert_eq!(manifest["counts"]["stored"], n_jobs);
    assert_eq!(manifest["counts"]["completed"], n_jobs);
    assert_eq!(manifest["counts"]["complete"], true);
    let submissions = manifest["submissions"].as_array().unwrap();
    assert_eq!(submissions.len(), 1);
    assert_eq!(submissions[0]["batch_id"], batch);
    assert_eq!(submissions[0]["scheduled"], n_jobs);
    assert_eq!(submissions[0]["label"], "export check");
    assert_eq!(
        submissions[0]["request"]["seed_count"], 2,
        "{}",
        submissions[0]
    );
    let models: std::collections::BTreeSet<&str> =
        stored.values().map(|r| r.model.as_str()).collect();
    let configs = manifest["configs"].as_array().unwrap();
    assert_eq!(
        configs.len(),
        2,
        "one configuration per method: {configs:?}"
    );
    for (c, method) in configs.iter().zip(["power", "standard"]) {
        assert_eq!(c["config"]["method"], method);
        assert_eq!(c["methods"], serde_json::json!([method]));
        assert_eq!(
            c["models"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap())
                .collect::<std::collections::BTreeSet<_>>(),
            models
        );
        assert_eq!(c["samples"], n_jobs / 2);
    }
    let model_entries = manifest["models"].as_array().unwrap();
    assert_eq!(model_entries.len(), models.len());
    for m in model_entries {
        let name = m["model"].as_str().unwrap();
        let pins = m["pins"].as_array().unwrap();
        assert_eq!(pins.len(), 1, "{m}");
        let pin = stored
            .values()
            .find(|r| r.model == name)
            .unwrap()
            .pin
            .clone();
        assert_eq!(
            Some(&pins[0]["pin"]),
            pin.map(|p| serde_json::to_value(p).unwrap()).as_ref(),
            "{m}"
        );
        assert_eq!(pins[0]["samples"], m["samples"]);
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        manifest["produced_by"],
        serde_json::json!([{"powerfleet": version, "samples": n_jobs}])
    );
    assert_eq!(manifest["exported_by"]["powerfleet"], version);

    // results.json: the report, as `report --format jsonl` gives its batch row.
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["jobs"], n_jobs);
    assert_eq!(results["scheduled"], n_jobs);
    assert_eq!(results["complete"], true);
    let report_rows: Vec<Value> = stdout_of(&fleet.cli(&["report", &batch, "--format", "jsonl"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let report_methods: Vec<&Value> = report_rows
        .iter()
        .filter(|r| r["row"] == "method")
        .collect();
    for (a, b) in results["methods"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&report_methods)
    {
        for field in ["method", "accuracy", "pass_at_k", "acceptance_rate"] {
            assert_eq!(a[field], b[field], "{field}");
        }
    }
    for name in ["pass_at_k", "acceptance_by_block", "cost_vs_accuracy"] {
        for ext in ["png", "svg"] {
            let f = dir.join("figures").join(format!("{name}.{ext}"));
            assert!(std::fs::metadata(&f).unwrap().len() > 0, "{}", f.display());
        }
    }

    // A used directory is refused unless --force; nothing in it changes.
    let before = std::fs::read(dir.join("samples.jsonl")).unwrap();
    let out = fleet.cli(&["export", &batch, "--dir", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("samples.jsonl")).unwrap(), before);
    stdout_of(&fleet.cli(&["export", &batch, "--dir", dir_arg, "--force"]));
    assert_eq!(std::fs::read(dir.join("samples.jsonl")).unwrap(), before);

    // The same run by its label.
    let by_label = fleet.dir.path().join("by-label");
    stdout_of(&fleet.cli(&[
        "export",
        "label=export check",
        "--dir",
        by_label.to_str().unwrap(),
    ]));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(by_label.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["selection"],
        serde_json::json!({"label": "export check"})
    );
    assert_eq!(manifest["counts"]["scheduled"], n_jobs);
    assert_eq!(manifest["counts"]["stored"], n_jobs);

    // The same run by its correlation id, a generated UUID (which reads as a batch id first).
    let correlation = receipt["correlation_id"].as_str().unwrap();
    let by_correlation = fleet.dir.path().join("by-correlation");
    stdout_of(&fleet.cli(&[
        "export",
        correlation,
        "--dir",
        by_correlation.to_str().unwrap(),
    ]));
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(by_correlation.join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["selection"],
        serde_json::json!({"correlation_id": correlation})
    );
    assert_eq!(manifest["counts"]["stored"], n_jobs);

    // An id with nothing stored fails, says what to check, and leaves no directory behind.
    let nothing = fleet.dir.path().join("nothing");
    let unknown = powerfleet_jobs::BatchId::new().to_string();
    let out = fleet.cli(&["export", &unknown, "--dir", nothing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no stored results or submissions for {unknown}")),
        "{err}"
    );
    assert!(!nothing.exists());
}
