//! The queue on a real Redis Cluster (three masters with a replica each, on loopback): every
//! operation works whichever node the URL names, submissions wait for a replica, and a failover
//! and a reshard of the namespace's slot are survived.

use powerfleet_jobs::{CorrelationId, JobId, JobResult, JobSpec, JobStatus};
use powerfleet_queue::local_cluster::LocalCluster;
use powerfleet_queue::{ClaimOutcome, LeaseState, Progress, Queue, QueueOptions};

fn cluster() -> LocalCluster {
    LocalCluster::start(3, 1).unwrap_or_else(|e| {
        panic!("{e}; these tests need redis-server and redis-cli on PATH (scripts/test.sh installs them)")
    })
}

async fn queue(url: &str, ns: &str) -> Queue {
    Queue::connect(
        url,
        QueueOptions {
            namespace: ns.to_string(),
            ..QueueOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn spec(corr: &CorrelationId, seed: u64) -> JobSpec {
    powerfleet_testkit::spec()
        .correlation_id(corr.clone())
        .seed(seed)
        .build()
}

/// Reads, claims, checkpoints and finishes one job through `q`.
async fn run_one(q: &Queue, consumer: &str) -> JobId {
    let d = q
        .read_jobs(consumer, 1, 2000)
        .await
        .unwrap()
        .pop()
        .expect("a job is waiting");
    let spec = d.spec.clone().unwrap();
    let ClaimOutcome::Claimed { lease, .. } = q.claim(spec.job_id, &d, consumer).await.unwrap()
    else {
        panic!("no claim")
    };
    assert!(matches!(
        q.checkpoint(&lease, &Progress::default(), b"ckpt")
            .await
            .unwrap(),
        LeaseState::Owned { .. }
    ));
    let r = JobResult::for_spec(&spec, JobStatus::Completed, 1, None);
    assert!(q.finish(&lease, &r, None).await.unwrap());
    spec.job_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_whole_queue_and_submissions_reach_a_replica() {
    let cluster = cluster();
    // The namespace's slot lives on one master; every node's URL must work all the same.
    for i in 0..cluster.ports().len() {
        let q = queue(&cluster.url(i), "ns").await;
        assert!(q.is_cluster());
        let corr = CorrelationId::generate();
        let s = spec(&corr, i as u64);
        q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
        q.confirm_replicated("submission").await.unwrap();
        assert_eq!(run_one(&q, &format!("w{i}")).await, s.job_id);
        let results = q.read_results("c", 10, 1000).await.unwrap();
        assert_eq!(results.len(), 1, "node {i}");
        q.ack_result(&results[0].entry_id).await.unwrap();
        assert_eq!(q.correlation_jobs(&corr).await.unwrap(), vec![s.job_id]);
        assert_eq!(
            q.job_state(s.job_id).await.unwrap().unwrap().status,
            JobStatus::Completed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_follows_a_failover_and_a_reshard_of_its_slot() {
    let mut cluster = cluster();
    let q = queue(&cluster.url(0), "moving").await;
    let slot = cluster.slot_of(&q.keys().jobs()).unwrap();
    let corr = CorrelationId::generate();
    let specs: Vec<JobSpec> = (0..3).map(|i| spec(&corr, i)).collect();
    q.enqueue(&specs, None).await.unwrap();
    q.confirm_replicated("submission").await.unwrap();
    run_one(&q, "w").await;

    // Fail the namespace's master over to its replica and kill the old master.
    cluster.fail_over(slot).unwrap();
    cluster.wait_ok(powerfleet_testkit::PATIENCE).unwrap();
    run_one(&q, "w").await;

    // Move the slot to another master.
    let here = cluster.master_of(slot).unwrap().port;
    let there = cluster
        .topology()
        .unwrap()
        .into_iter()
        .find(|n| {
            n.master
                && n.port != here
                && !n.slots.is_empty()
                && cluster.live_ports().contains(&n.port)
        })
        .unwrap()
        .port;
    cluster.move_slot(slot, there).unwrap();
    assert_eq!(cluster.master_of(slot).unwrap().port, there);
    run_one(&q, "w").await;
    let done: Vec<_> = futures_states(&q, &specs).await;
    assert!(done.iter().all(|s| *s == JobStatus::Completed), "{done:?}");
}

/// A client seeded with one node only, which then fails over and is shut down, still makes the
/// new connections its blocking reads need: it seeds them from the nodes the cluster has now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reads_get_new_connections_after_the_only_seed_node_is_gone() {
    let mut cluster = cluster();
    let probe = queue(&cluster.url(0), "seedless").await;
    let slot = cluster.slot_of(&probe.keys().jobs()).unwrap();
    let seed = cluster.master_of(slot).unwrap().port;
    let q = queue(&format!("redis://127.0.0.1:{seed}/"), "seedless").await;
    let corr = CorrelationId::generate();
    q.enqueue(&[spec(&corr, 0)], None).await.unwrap();
    q.confirm_replicated("submission").await.unwrap();
    run_one(&q, "w").await;

    // The seed node hands its slots to its replica and is killed.
    cluster.fail_over(slot).unwrap();
    cluster.wait_ok(powerfleet_testkit::PATIENCE).unwrap();
    assert!(!cluster.live_ports().contains(&seed));

    // Three reads of an empty queue block at once, each on a connection of its own: new ones.
    let (a, b, c) = tokio::join!(
        q.read_jobs("r0", 1, 300),
        q.read_jobs("r1", 1, 300),
        q.read_jobs("r2", 1, 300)
    );
    for read in [a, b, c] {
        let read = read.unwrap_or_else(|e| panic!("a blocking read after the seed left: {e}"));
        assert!(read.is_empty(), "nothing is queued");
    }
    q.enqueue(&[spec(&corr, 1)], None).await.unwrap();
    run_one(&q, "w").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_leave_the_lag_autoscalers_read_true_on_a_cluster() {
    let cluster = cluster();
    let q = queue(&cluster.url(1), "lag").await;
    assert!(q.is_cluster());
    crate::routing::cancels_leave_the_reported_lag_true(&q).await;
}

#[tokio::test]
async fn removals_of_the_newest_delivered_entry_leave_the_lag_true_on_a_cluster() {
    let cluster = cluster();
    let q = queue(&cluster.url(1), "lag2").await;
    assert!(q.is_cluster());
    crate::routing::removals_of_the_newest_delivered_entry_leave_the_reported_lag_true(&q).await;
}

async fn futures_states(q: &Queue, specs: &[JobSpec]) -> Vec<JobStatus> {
    let mut out = Vec::new();
    for s in specs {
        out.push(q.job_state(s.job_id).await.unwrap().unwrap().status);
    }
    out
}
