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
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(
        &fleet,
        "serve",
        &["--listen", &listen, "--model", "m5"],
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
    let workers: Value = get("/v1/workers").await.unwrap().json().await.unwrap();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");
    assert_eq!(served_names(&workers["workers"][0]), ["m5"]);
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "m5", "{models}");

    fleet.kill_worker(w);
    // Its registration lapses (no renewal): it leaves the listing, and m5 leaves /v1/models.
    eventually(
        &fleet,
        "the killed worker is still listed",
        Duration::from_secs(120),
        async || workers_json(&fleet).is_empty(),
    )
    .await;
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    assert_eq!(models["data"], serde_json::json!([]), "{models}");
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
