//! Credentials in a model server's URL (`llamacpp+http://user:PASSWORD@host`) reach the server
//! as basic auth, but never a job's error, a worker's log or a metric label.

use crate::common;

use std::time::{Duration, Instant};

use common::{BIN, Fleet, PATIENCE};
use powerfleet_jobs::JobStatus;

const SECRET: &str = "model-pw-planted-91ab";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_server_credentials_never_appear_in_job_errors_logs_or_metrics() {
    let mut fleet = Fleet::new(BIN, false);
    // A server that is down: every request is refused, the circuit opens, and past the patience
    // the job fails with the server's error.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let metrics = common::free_addr();
    let model = format!("m=llamacpp+http://user:{SECRET}@{down}");
    fleet.spawn_worker(
        &[
            ["--model", &model, "--metrics-listen", &metrics].as_slice(),
            &common::IMPATIENT,
        ]
        .concat(),
    );
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    let spec = common::spec()
        .model("m")
        .text_prompt("hello")
        .seed(1)
        .build();
    queue
        .enqueue(std::slice::from_ref(&spec), None)
        .await
        .unwrap();

    let deadline = Instant::now() + PATIENCE;
    let result = loop {
        if let Some(r) = store.job(spec.job_id).await.unwrap() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no result within {PATIENCE:?}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = result.error.clone().unwrap_or_default();
    assert_eq!(result.status, JobStatus::Failed, "{error}");
    let shown = format!("http://user:***@{down}");
    assert!(error.contains(&shown), "the server is named: {error}");

    let scraped = common::metrics_text(&metrics).await;
    let label = format!("powerfleet_backend_circuit_open{{server=\"{shown}\"}}");
    assert!(scraped.contains(&label), "{label} in\n{scraped}");

    let state = serde_json::to_string(&queue.job_state(spec.job_id).await.unwrap()).unwrap();
    let stored = serde_json::to_string(&result).unwrap();
    let mut logs = String::new();
    for entry in std::fs::read_dir(fleet.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "log") {
            logs.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    assert!(logs.contains(&shown), "the logs name the server:\n{logs}");
    for (what, text) in [
        ("the stored result", &stored),
        ("the job's state", &state),
        ("the metrics", &scraped),
        ("the logs", &logs),
    ] {
        assert!(
            !text.contains(SECRET),
            "{what} leak the model server's password:\n{text}"
        );
    }
}
