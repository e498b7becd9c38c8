//! A fleet of many models in one namespace: jobs reach only the workers that map their model
//! name, a model nobody serves waits and says so, the fleet lists who serves what, and roles
//! start the way operators expect (waiting for Redis; refusing a mapping that cannot work).

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Fleet, Serve, batch, long_config, stdout_of, submit_batch};
use powerfleet_jobs::{BatchId, JobStatus};
use powerfleet_sampler::Method;
use serde_json::Value;

/// Polls `check` every 100 ms until it holds; panics with `what` and the fleet's logs after
/// `patience` (a bound on a hung fleet, never on how fast a healthy one is).
async fn eventually(
    fleet: &Fleet,
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + patience;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn workers_json(fleet: &Fleet) -> Vec<Value> {
    let out = fleet.cli_without_database(&["workers", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str::<Vec<Value>>(&stdout_of(&out)).unwrap()
}

fn served_names(worker: &Value) -> Vec<String> {
    worker["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

async fn submit_for(fleet: &Fleet, model: &str) -> (BatchId, usize) {
    let queue = fleet.queue().await;
    let submission = batch(model)
        .config(long_config(2, 6))
        .methods(&[Method::Power, Method::Standard])
        .problems(3)
        .seeds(2)
        .build();
    let receipt = submit_batch(&queue, &submission).await;
    (receipt.batch_id.unwrap(), receipt.job_ids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_runs_on_the_workers_that_map_it_and_an_unserved_one_waits() {
    mixed_fleet(Fleet::new(BIN, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_runs_on_the_workers_that_map_it_on_a_redis_cluster() {
    let cluster = powerfleet_queue::local_cluster::LocalCluster::start(3, 1).unwrap_or_else(|e| {
        panic!("{e}; this test needs redis-server and redis-cli on PATH (scripts/test.sh installs them)")
    });
    let fleet = Fleet::on_redis_url(BIN, cluster.url(1));
    assert!(fleet.queue().await.is_cluster());
    mixed_fleet(fleet).await;
}

/// Three workers mapping {m1, m2}, {m2, m3} and {m3}, a collector, and jobs of m1 to m4: every
/// job of m1 to m3 completes, m4's wait and say why, and a fourth worker mapping m4 runs them.
async fn mixed_fleet(mut fleet: Fleet) {
    fleet.spawn_worker(&["--model", "m1=toy:pivot", "--model", "m2=toy:tiny"]);
    fleet.spawn_worker(&["--model", "m2=toy:tiny", "--model", "m3=toy:eos-lengths"]);
    fleet.spawn_worker(&["--model", "m3=toy:eos-lengths"]);
    fleet.spawn_collector();

    let listed = workers_json(&fleet);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let mut names: Vec<Vec<String>> = listed.iter().map(served_names).collect();
    names.sort();
    assert_eq!(names, [vec!["m1", "m2"], vec!["m2", "m3"], vec!["m3"]]);

    let mut served = Vec::new();
    for model in ["m1", "m2", "m3"] {
        served.push(submit_for(&fleet, model).await);
    }
    let (m4, m4_jobs) = submit_for(&fleet, "m4").await;
    for (batch, jobs) in &served {
        let results = fleet
            .wait_for_results(*batch, *jobs, Duration::from_secs(600))
            .await;
        for r in &results {
            assert_eq!(r.status, JobStatus::Completed, "{r:?}\n{}", fleet.logs());
        }
    }
    // Nobody maps m4: its jobs wait, none failed, and status says why.
    let out = fleet.cli(&["status", &m4.to_string()]);
    let text = stdout_of(&out);
    assert!(
        text.contains("no live worker serves model m4"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fleet.cli(&["status", &m4.to_string(), "--format", "json"]);
    let status: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(status["counts"]["queued"], m4_jobs as u64, "{status}");
    let queue = fleet.queue().await;
    let backlog = queue.backlog_by_stream().await.unwrap();
    let m4_backlog = backlog
        .iter()
        .find(|b| b.model.as_deref() == Some("m4"))
        .unwrap();
    assert_eq!((m4_backlog.queued, m4_backlog.pending), (m4_jobs as u64, 0));

    // A worker that maps m4, started later, runs them.
    fleet.spawn_worker(&["--model", "m4=toy:tiny"]);
    let results = fleet
        .wait_for_results(m4, m4_jobs, Duration::from_secs(600))
        .await;
    assert!(results.iter().all(|r| r.status == JobStatus::Completed));
    assert_eq!(queue.job_backlog().await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_leaves_the_listing_and_its_models_leave_v1_models() {
    let mut fleet = Fleet::new(BIN, false);
    let w = fleet.spawn_worker(&["--model", "m5=toy:tiny"]);
    fleet.spawn_worker(&["--model", "m6=toy:tiny"]);
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(
        &fleet,
        "serve",
        &["--listen", &listen, "--model", "m5", "--model", "m6"],
        Some("t0ken"),
    );
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth("t0ken")
            .send()
    };
    let listed = |workers: &Value| -> Vec<(String, Vec<String>)> {
        let mut listed: Vec<_> = workers
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["worker_id"].as_str().unwrap().to_string(),
                    served_names(w),
                )
            })
            .collect();
        listed.sort_by(|a, b| a.1.cmp(&b.1));
        listed
    };
    let workers: Value = get("/v1/workers").await.unwrap().json().await.unwrap();
    let before = listed(&workers["workers"]);
    assert_eq!(before.len(), 2, "{workers}");
    assert_eq!(before[0].1, ["m5"], "{workers}");
    assert_eq!(before[1].1, ["m6"], "{workers}");
    let survivor = before[1].clone();
    let model_ids = |models: &Value| -> Vec<String> {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    let ids = model_ids(&models);
    assert!(
        ids.contains(&"m5".into()) && ids.contains(&"m6".into()),
        "{models}"
    );

    fleet.kill_worker(w);
    // Its registration lapses (no renewal): it leaves the listing, and m5 leaves /v1/models;
    // the worker that still runs stays, with m6.
    eventually(
        &fleet,
        "the killed worker is still listed",
        Duration::from_secs(120),
        async || {
            let now = workers_json(&fleet);
            assert!(!now.is_empty(), "the surviving worker left the listing");
            now.len() == 1
        },
    )
    .await;
    assert_eq!(
        listed(&Value::Array(workers_json(&fleet))),
        std::slice::from_ref(&survivor)
    );
    let workers: Value = get("/v1/workers").await.unwrap().json().await.unwrap();
    assert_eq!(listed(&workers["workers"]), [survivor], "{workers}");
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    let ids = model_ids(&models);
    assert!(
        ids.contains(&"m6".into()) && !ids.contains(&"m5".into()),
        "{models}"
    );
    // A completion for m5 is answered at once: configured, but nobody serves it now.
    let post = |model: &str| {
        client
            .post(format!("{base}/v1/completions"))
            .bearer_auth("t0ken")
            .json(&serde_json::json!({"model": model, "prompt": []}))
            .send()
    };
    let answer = post("m5").await.unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no live worker serves model m5"),
        "{body}"
    );
    assert_eq!(body["error"]["param"], "model");
    // A name neither configured nor served: 404.
    let answer = post("nobody-knows").await.unwrap();
    assert_eq!(answer.status(), 404, "{}", serve.log());
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["param"], "model", "{body}");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
}

#[test]
fn a_worker_with_a_mapping_that_cannot_work_refuses_to_start() {
    let fleet = Fleet::new(BIN, false);
    let out = Command::new(BIN)
        .args([
            "worker",
            "--redis",
            &fleet.redis_url(),
            "--model",
            "qwen=toy:pivto",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--model qwen=") && err.contains("pivto"),
        "{err}"
    );
}

/// A child process killed when dropped.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_and_a_collector_started_before_redis_come_up_when_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let port = powerfleet_queue::local::free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    let db = format!("sqlite://{}", dir.path().join("results.db").display());
    let spawn = |role: &str, extra: &[&str]| {
        let log = std::fs::File::create(dir.path().join(format!("{role}.log"))).unwrap();
        Killed(
            Command::new(BIN)
                .arg(role)
                .args(["--redis", &url, "--namespace", "early"])
                .args(extra)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let mut worker = spawn("worker", &["--model", "m1=toy:tiny"]);
    let mut collector = spawn("collector", &["--database-url", &db]);
    let log = |role: &str| {
        std::fs::read_to_string(dir.path().join(format!("{role}.log"))).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(log("worker").contains("waiting for Redis")
        && log("collector").contains("waiting for Redis"))
    {
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            log("worker"),
            log("collector")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker exited:\n{}",
        log("worker")
    );
    assert!(
        collector.0.try_wait().unwrap().is_none(),
        "the collector exited:\n{}",
        log("collector")
    );

    let server_dir = tempfile::tempdir().unwrap();
    let _redis = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(server_dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs it)"),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(BIN)
        .args([
            "submit",
            "--redis",
            &url,
            "--namespace",
            "early",
            "--database-url",
            &db,
        ])
        .args([
            "--model",
            "m1",
            "--prompt-tokens",
            "0",
            "--chains",
            "3",
            "--wait",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log("worker"),
        log("collector")
    );
    let store = powerfleet_store::Store::connect(&db).await.unwrap();
    let receipt: Value = serde_json::from_str(stdout_of(&out).lines().next().unwrap()).unwrap();
    let batch: BatchId = receipt["batch_id"].as_str().unwrap().parse().unwrap();
    let stored = store.jobs_by_batch(batch).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|r| r.status == JobStatus::Completed));
}

/// Jobs enqueued by the layout before model streams (every job on the shared stream, whatever its
/// model) still run after an upgrade: a worker that does not map the job's name moves it to the
/// name's stream, and a worker that maps it runs it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_the_old_single_stream_layout_run_after_an_upgrade() {
    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let client = redis::Client::open(fleet.redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let specs = batch("m9")
        .problems(2)
        .seeds(2)
        .build()
        .jobs(
            &powerfleet_jobs::CorrelationId::generate(),
            Some(BatchId::new()),
        )
        .unwrap();
    let mut ids = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        // As the earlier enqueue script wrote them: the entry on the shared stream, and a state
        // hash without a stream. No tallies: status counts such jobs from their states. The
        // first one was running on a worker that died: its entry is pending under that worker.
        let json = serde_json::to_string(spec).unwrap();
        let entry: String = redis::cmd("XADD")
            .arg(queue.keys().jobs())
            .arg("*")
            .arg("job_id")
            .arg(spec.job_id.to_string())
            .arg("spec")
            .arg(&json)
            .query_async(&mut c)
            .await
            .unwrap();
        let now = powerfleet_jobs::now_ms();
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(queue.keys().job(spec.job_id))
            .arg(common::queued_job_state(
                &json,
                &entry,
                spec.correlation_id.as_str(),
                &[
                    ("batch_id", &spec.batch_id.unwrap().to_string()),
                    ("method", spec.method().as_str()),
                    ("submitted_at_ms", &now.to_string()),
                    ("updated_at_ms", &now.to_string()),
                    ("cancel", "0"),
                ],
            ))
            .ignore()
            .cmd("SADD")
            .arg(queue.keys().batch(spec.batch_id.unwrap()))
            .arg(spec.job_id.to_string())
            .ignore()
            .query_async(&mut c)
            .await
            .unwrap();
        if i == 0 {
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg(&["GROUP", "workers", "died", "COUNT", "1", "STREAMS"])
                .arg(queue.keys().jobs())
                .arg(">")
                .query_async(&mut c)
                .await
                .unwrap();
            let _: () = redis::cmd("HSET")
                .arg(queue.keys().job(spec.job_id))
                .arg(&[
                    ("status", "running"),
                    ("fence", "1"),
                    ("lease", "1:gone"),
                    ("deliveries", "1"),
                    ("owner", "died"),
                ])
                .query_async(&mut c)
                .await
                .unwrap();
        }
        ids.push(spec.job_id);
    }
    // The upgraded fleet: a worker of another name, then one that maps m9.
    fleet.spawn_worker(&["--model", "m1=toy:tiny"]);
    fleet.spawn_collector();
    eventually(
        &fleet,
        "the old jobs did not move to m9's stream",
        Duration::from_secs(120),
        async || {
            queue
                .backlog_by_stream()
                .await
                .unwrap()
                .iter()
                .any(|b| b.model.as_deref() == Some("m9") && b.queued == ids.len() as u64)
        },
    )
    .await;
    fleet.spawn_worker(&["--model", "m9=toy:tiny"]);
    let batch_id = specs[0].batch_id.unwrap();
    let results = fleet
        .wait_for_results(batch_id, ids.len(), Duration::from_secs(600))
        .await;
    for r in &results {
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        // A move is not a delivery: one claim each, and two for the job whose first owner died.
        let claims = if r.job_id == ids[0] { 2 } else { 1 };
        assert_eq!(r.attempts, claims, "{r:?}");
    }
}

/// The progress lines (`[CLOCK] ...`) a watch wrote to a non-terminal stderr.
fn progress_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with('[')).collect()
}

/// Checks that a watch's progress said `sentence` while nobody served the model, and said so
/// no more in a line after, before it ended.
fn said_until_served(what: &str, stderr: &str, sentence: &str) {
    let lines = progress_lines(stderr);
    let last = lines
        .iter()
        .rposition(|l| l.contains(sentence))
        .unwrap_or_else(|| panic!("{what}: no progress line says {sentence:?}:\n{stderr}"));
    assert!(
        lines[last + 1..].iter().any(|l| !l.contains(sentence)),
        "{what}: no progress line after the model was served:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("done in")),
        "{what}:\n{stderr}"
    );
}

/// Waits for `child` to exit (a bound on a hung fleet only); panics with the fleet's logs.
fn exit_of(fleet: &Fleet, child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not end\n{}",
            fleet.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_progress_and_the_batch_api_say_nobody_serves_a_model_until_a_worker_maps_it() {
    const SENTENCE: &str = "no live worker serves model ghost";
    let mut fleet = Fleet::new(BIN, false);
    // A live worker, of another name: jobs of ghost still have nobody to run them.
    fleet.spawn_worker(&["--model", "m1=toy:tiny"]);
    fleet.spawn_collector();
    let listen = common::free_addr();
    let mut serve = Serve::start(
        &fleet,
        "serve",
        &["--listen", &listen, "--model", "ghost"],
        Some("t0ken"),
    );
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    let (watched, jobs) = submit_for(&fleet, "ghost").await;
    let batch_api = format!("{base}/v1/batches/{watched}");

    // `submit --wait` and `status --wait`, their output to files (not a terminal).
    let dir = fleet.dir.path().to_path_buf();
    let output = |name: &str| std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
    let read =
        |name: &str| std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
    let run = |args: &[&str], name: &str| {
        Killed(
            Command::new(BIN)
                .args(args)
                .args(["--database-url", &fleet.db_url])
                .env("POWERFLEET_REDIS_URL", fleet.redis_url())
                .env("POWERFLEET_NAMESPACE", &fleet.namespace)
                .stdout(output(&format!("{name}-stdout")))
                .stderr(output(&format!("{name}-stderr")))
                .spawn()
                .unwrap(),
        )
    };
    let mut submitting = run(
        &[
            "submit",
            "--model",
            "ghost",
            "--prompt-tokens",
            "0",
            "--chains",
            "2",
            "--wait",
        ],
        "submit",
    );
    let watched_id = watched.to_string();
    let mut statusing = run(&["status", &watched_id, "--wait"], "status");
    eventually(
        &fleet,
        "the watches do not say that nobody serves ghost",
        Duration::from_secs(120),
        async || {
            read("submit-stderr").contains(SENTENCE) && read("status-stderr").contains(SENTENCE)
        },
    )
    .await;
    let report = common::get_json(&batch_api, Some("t0ken")).await;
    let unserved: Vec<&str> = report["unserved"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(unserved.len(), 1, "{report}");
    assert!(
        unserved[0].starts_with(SENTENCE) && unserved[0].contains("--model ghost="),
        "{report}"
    );
    assert_eq!(report["counts"]["queued"], jobs as u64, "{report}");

    // A worker that maps ghost: the jobs run, and nobody says it is unserved any more.
    fleet.spawn_worker(&["--model", "ghost=toy:tiny"]);
    for (name, child) in [("submit", &mut submitting), ("status", &mut statusing)] {
        let status = exit_of(&fleet, &mut child.0, name);
        let stderr = read(&format!("{name}-stderr"));
        assert!(status.success(), "{name} --wait: {status}\n{stderr}");
        said_until_served(&format!("{name} --wait"), &stderr, SENTENCE);
        let stdout = read(&format!("{name}-stdout"));
        assert!(!stdout.contains(SENTENCE), "{name}:\n{stdout}");
    }
    let results = fleet
        .wait_for_results(watched, jobs, Duration::from_secs(600))
        .await;
    assert!(results.iter().all(|r| r.status == JobStatus::Completed));
    let report = common::get_json(&batch_api, Some("t0ken")).await;
    assert_eq!(report["counts"]["completed"], jobs as u64, "{report}");
    assert!(report.get("unserved").is_none(), "{report}");
}

/// A process started with `args` (its standard error to `log`), killed when dropped.
fn spawn_logged(args: &[&str], env: &[(&str, &str)], log: &std::path::Path) -> Killed {
    Killed(
        Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits until the log at `path` says `what`, while `child` runs.
async fn until_logged(child: &mut Killed, path: &std::path::Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(what) {
            return;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the process exited before saying {what:?}:\n{log}"
        );
        assert!(Instant::now() < deadline, "no {what:?} in:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_before_redis_answers_once_redis_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = powerfleet_queue::local::free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    let db = format!("sqlite://{}", dir.path().join("results.db").display());
    let listen = common::free_addr();
    let log = dir.path().join("serve.log");
    let mut serve = spawn_logged(
        &[
            "serve",
            "--redis",
            &url,
            "--namespace",
            "early",
            "--database-url",
            &db,
            "--listen",
            &listen,
        ],
        &[("POWERFLEET_API_TOKENS", "t0ken")],
        &log,
    );
    until_logged(&mut serve, &log, "waiting for Redis").await;

    let server_dir = tempfile::tempdir().unwrap();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(server_dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs it)"),
    );
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let workers = loop {
        if let Ok(answer) = client
            .get(format!("{base}/v1/workers"))
            .bearer_auth("t0ken")
            .send()
            .await
        {
            assert_eq!(answer.status(), 200);
            break answer.json::<Value>().await.unwrap();
        }
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "serve exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "the API never answered:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(workers["workers"], serde_json::json!([]), "{workers}");
    // It takes jobs, into the Redis that came up.
    let answer = client
        .post(format!("{base}/v1/jobs"))
        .bearer_auth("t0ken")
        .json(&serde_json::json!({"model": "toy:tiny", "prompt": "a", "seeds": [0, 1]}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let receipt: Value = answer.json().await.unwrap();
    assert_eq!(status, 201, "{receipt}");
    let queue = powerfleet_queue::Queue::connect(
        &url,
        powerfleet_queue::QueueOptions {
            namespace: "early".into(),
            ..powerfleet_queue::QueueOptions::default()
        },
    )
    .await
    .unwrap();
    let batch: BatchId = receipt["batch_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(queue.batch_jobs(batch).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_started_before_its_database_exists_stores_results_once_it_does() {
    let name = format!(
        "pf_late_{}",
        powerfleet_jobs::JobId::new().to_string().replace('-', "")
    );
    let admin = |sql: String| async move {
        use sqlx::Executor;
        let mut admin = common::postgres_admin().await;
        admin.execute(sql.as_str()).await.unwrap();
    };
    let db = common::with_database(&common::postgres_admin_url(), &name);
    let created = name.clone();
    let body = async move {
        let mut fleet = Fleet::new(BIN, false);
        fleet.spawn_worker(&[]);
        let log = fleet.dir.path().join("late-collector.log");
        let mut collector = spawn_logged(
            &[
                "collector",
                "--redis",
                &fleet.redis_url(),
                "--namespace",
                &fleet.namespace,
                "--database-url",
                &db,
            ],
            &[],
            &log,
        );
        // No such database yet: the collector waits for it, saying so.
        until_logged(&mut collector, &log, "waiting for the results database").await;
        let queue = fleet.queue().await;
        let receipt = submit_batch(&queue, &batch("toy:tiny").problems(3).build()).await;
        admin(format!("CREATE DATABASE {created}")).await;
        let store = powerfleet_store::Store::connect(&db).await.unwrap();
        let batch_id = receipt.batch_id.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let stored = loop {
            let stored = store.jobs_by_batch(batch_id).await.unwrap();
            if stored.len() == 3 {
                break stored;
            }
            assert!(
                collector.0.try_wait().unwrap().is_none(),
                "the collector exited:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "{} of 3 results stored:\n{}",
                stored.len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(stored.iter().all(|r| r.status == JobStatus::Completed));
        store.close().await;
    };
    let outcome = tokio::spawn(body).await;
    admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `started_at_ms` as `date -u` writes it in RFC 3339 to the second.
fn utc_by_date(started_at_ms: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}", started_at_ms / 1000)])
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .expect("date runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_lists_each_worker_with_when_it_started_and_never_a_server_password() {
    const SECRET: &str = "workers-secret-91d2";
    let started = powerfleet_jobs::now_ms();
    let mut fleet = Fleet::new(BIN, false);
    // The server is down: what is listed does not depend on it.
    let port = powerfleet_queue::local::free_port().unwrap();
    let mapped = format!("m=llamacpp+http://user:{SECRET}@127.0.0.1:{port}?k=98");
    let shown = format!("m=llamacpp+http://user:***@127.0.0.1:{port}?k=98");
    fleet.spawn_worker(&["--model", &mapped, "--model", "t=toy:tiny"]);
    fleet.spawn_worker(&["--model", "t=toy:tiny", "--concurrency", "2"]);
    let listen = common::free_addr();
    let mut serve = Serve::start(&fleet, "serve", &["--listen", &listen], Some("t0ken"));
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;

    let json = fleet.cli_without_database(&["workers", "--format", "json"]);
    let json = stdout_of(&json);
    let listed: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.len(), 2, "{json}");
    let out = fleet.cli_without_database(&["workers"]);
    let text = stdout_of(&out);
    let api = common::get_json(&format!("{base}/v1/workers"), Some("t0ken")).await;
    for (what, shown_as) in [("text", &text), ("json", &json), ("api", &api.to_string())] {
        assert!(
            !shown_as.contains(SECRET),
            "{what} shows the password:\n{shown_as}"
        );
    }
    assert!(
        text.contains(&shown) && json.contains(&format!("user:***@127.0.0.1:{port}")),
        "{text}\n{json}"
    );
    assert_eq!(api["workers"].as_array().map(Vec::len), Some(2), "{api}");

    // The table: a header, a row per worker with what its registration says, and a summary.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let mut at = 0;
    for column in [
        "worker",
        "host",
        "version",
        "in flight",
        "last seen",
        "started at",
        "models",
    ] {
        let found = lines[0][at..]
            .find(column)
            .unwrap_or_else(|| panic!("no column {column:?} in order:\n{text}"));
        at += found + column.len();
    }
    for worker in &listed {
        let id = worker["worker_id"].as_str().unwrap();
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{text}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let started_at_ms = worker["started_at_ms"].as_u64().unwrap();
        assert!(
            (started..=powerfleet_jobs::now_ms()).contains(&started_at_ms),
            "{worker}"
        );
        let concurrency = worker["concurrency"].as_u64().unwrap();
        let models: Vec<String> = worker["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}={}",
                    m["name"].as_str().unwrap(),
                    m["reference"].as_str().unwrap()
                )
            })
            .collect();
        let models = models.join(", ");
        let mut expected = vec![
            id.to_string(),
            worker["host"].as_str().unwrap().to_string(),
            worker["version"].as_str().unwrap().to_string(),
            format!("0/{concurrency}"),
        ];
        // "N.Ns ago"
        assert!(cells[4].ends_with('s') && cells[5] == "ago", "{row}");
        expected.push(cells[4].to_string());
        expected.push("ago".into());
        expected.push(utc_by_date(started_at_ms));
        expected.extend(models.split_whitespace().map(str::to_string));
        assert_eq!(cells, expected, "{text}");
    }
    assert_eq!(
        lines[3],
        "2 live worker(s); model names served: m, t; every worker also runs model references (toy:..., server URLs)"
    );
    assert!(
        !fleet.worker_logs().contains(SECRET),
        "{}",
        fleet.worker_logs()
    );
}
