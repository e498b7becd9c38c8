//! The whole fleet on a real Redis Cluster started by the test (three masters with a replica
//! each, on loopback): workers, collector, the CLI's submit, status and cancel, and the HTTP API,
//! each through a different node. A failover of the namespace's master (its replica takes over,
//! then the old master is SIGKILLed) and a reshard of the namespace's slot, both mid-batch, lose
//! no job and double none: every job is stored once, with the tokens of a fault-free run.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    BIN, Fleet, PATIENCE, batch, fault_free_tokens, long_config, specs, stdout_of, submit_batch,
};
use powerfleet_jobs::JobStatus;
use powerfleet_queue::local_cluster::LocalCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_runs_on_a_redis_cluster_through_any_node_and_survives_failover_and_reshard() {
    let mut cluster = LocalCluster::start(3, 1).unwrap_or_else(|e| {
        panic!("{e}; this test needs redis-server and redis-cli on PATH (scripts/test.sh installs them)")
    });
    let mut fleet = Fleet::on_redis_url(BIN, cluster.url(1));
    fleet.spawn_worker(&[]);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    assert!(queue.is_cluster());
    let slot = cluster.slot_of(&queue.keys().jobs()).unwrap();

    let receipt = submit_batch(
        &queue,
        &batch("toy:eos-lengths?delay_ms=30")
            .config(long_config(4, 12))
            .problems(6)
            .seeds(2)
            .build(),
    )
    .await;
    let batch_id = receipt.batch_id.unwrap();
    let specs = specs(&queue, &receipt).await;
    let store = fleet.store().await;
    let progressed = |blocks: u32| {
        let queue = queue.clone();
        let receipt = receipt.clone();
        async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let mut moved = 0;
                for id in &receipt.job_ids {
                    if let Ok(Some(s)) = queue.job_state(*id).await
                        && (s.status.is_final()
                            || s.progress.is_some_and(|p| p.block_idx >= blocks))
                    {
                        moved += 1;
                    }
                }
                if moved >= 2 {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "no job reached block {blocks} within {PATIENCE:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Mid-batch, the namespace's master fails over to its replica and is then killed.
    progressed(1).await;
    let new_master = cluster.fail_over(slot).unwrap();
    cluster.wait_ok(PATIENCE).unwrap();

    // Later, the namespace's slot moves to another master.
    progressed(3).await;
    let other = cluster
        .topology()
        .unwrap()
        .into_iter()
        .find(|n| n.master && n.port != new_master && !n.slots.is_empty())
        .unwrap()
        .port;
    cluster.move_slot(slot, other).unwrap();

    let results = fleet
        .wait_for_results(batch_id, specs.len(), PATIENCE)
        .await;
    assert_eq!(results.len(), specs.len(), "each job stored once");
    for spec in &specs {
        let r = results.iter().find(|r| r.job_id == spec.job_id).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        assert_eq!(
            r.tokens,
            fault_free_tokens(spec),
            "job {} differs from a fault-free run",
            spec.job_id
        );
    }
    let summary = store.batch_summary(batch_id).await.unwrap().unwrap();
    assert_eq!(summary.jobs, specs.len() as u64, "{summary:?}");

    // The CLI through yet another node: submit and wait, status, cancel.
    let node = cluster
        .topology()
        .unwrap()
        .into_iter()
        .find(|n| !n.master && cluster.live_ports().contains(&n.port))
        .map(|n| format!("redis://127.0.0.1:{}/", n.port))
        .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .args(["--redis", &node, "--namespace", &fleet.namespace])
            .env("POWERFLEET_DATABASE_URL", &fleet.db_url)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "submit",
        "--model",
        "toy:pivot",
        "--prompt",
        "",
        "--seeds",
        "2",
        "--n-mcmc",
        "2",
        "--max-new-tokens",
        "4",
        "--wait",
        "--format",
        "json",
    ]);
    let receipt2: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(receipt2["job_ids"].as_array().unwrap().len(), 2);
    let out = cli(&["status", &batch_id.to_string(), "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(status["counts"]["completed"], specs.len(), "{status}");
    let long = submit_batch(
        &queue,
        &batch("toy:eos-lengths?delay_ms=200")
            .config(long_config(50, 40))
            .build(),
    )
    .await;
    let out = cli(&["cancel", &long.job_ids[0].to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cancelled = fleet
        .wait_for_results(long.batch_id.unwrap(), 1, PATIENCE)
        .await;
    assert_eq!(cancelled[0].status, JobStatus::Cancelled);

    // The HTTP API through a third node.
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = std::process::Command::new(BIN)
        .args([
            "serve",
            "--redis",
            &cluster.url(2),
            "--namespace",
            &fleet.namespace,
        ])
        .args(["--database-url", &fleet.db_url, "--listen", &listen])
        .env("POWERFLEET_API_TOKENS", "cluster-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    let reply = loop {
        match http
            .get(format!("http://{listen}/v1/batches/{batch_id}"))
            .bearer_auth("cluster-token")
            .send()
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "serve did not start: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(reply.status().as_u16(), 200);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["total"], specs.len());
    let _ = serve.kill();
    let _ = serve.wait();
}
