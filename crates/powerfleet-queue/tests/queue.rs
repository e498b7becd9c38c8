//! The queue against a real, private redis-server: claims, fencing, hand-back, cancellation,
//! dead letters, idempotent submission, trimming, and a restart with AOF.

use std::time::Duration;

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobSpec, JobStatus, now_ms};
use powerfleet_queue::local::LocalRedis;
use powerfleet_queue::{
    CancelOutcome, ClaimOutcome, Deferral, LeaseState, Progress, Queue, QueueOptions, TallyOf, Wait,
};

fn server(aof: bool) -> LocalRedis {
    powerfleet_testkit::redis_server(aof)
}

async fn queue(server: &LocalRedis, ns: &str) -> Queue {
    powerfleet_testkit::queue_on(server, ns).await
}

fn spec(corr: &CorrelationId, batch: Option<BatchId>, seed: u64) -> JobSpec {
    powerfleet_testkit::spec()
        .correlation_id(corr.clone())
        .batch_id(batch)
        .seed(seed)
        .build()
}

fn result(spec: &JobSpec, status: JobStatus) -> JobResult {
    powerfleet_testkit::result_for(spec)
        .status(status)
        .tokens(vec![0, 2])
        .log_p(-1.0)
        .ends_with_eos(true)
        .build()
}

async fn claim_one(q: &Queue, consumer: &str) -> (powerfleet_queue::Lease, Option<Vec<u8>>, u32) {
    let d = q
        .read_jobs(consumer, 1, 1000)
        .await
        .unwrap()
        .pop()
        .expect("a job is waiting");
    let spec = d.spec.clone().unwrap();
    match q.claim(spec.job_id, &d, consumer).await.unwrap() {
        ClaimOutcome::Claimed {
            lease,
            checkpoint,
            deliveries,
            ..
        } => (lease, checkpoint, deliveries),
        other => panic!("expected a claim, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lease_lost_to_a_reclaim_can_write_nothing() {
    let server = server(false);
    let q = queue(&server, "t1").await;
    let corr = CorrelationId::generate();
    let s = spec(&corr, None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();

    let (old, checkpoint, deliveries) = claim_one(&q, "worker-a").await;
    assert_eq!((checkpoint, deliveries), (None, 1));
    let progress = Progress::default();
    assert_eq!(
        q.checkpoint(&old, &progress, b"ckpt-1").await.unwrap(),
        LeaseState::Owned { cancel: false }
    );

    // worker-a stalls; its lease expires; worker-b reclaims and resumes from the checkpoint.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let reclaimed = q.reclaim_jobs("worker-b", 100, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    let new = match q.claim(s.job_id, &reclaimed[0], "worker-b").await.unwrap() {
        ClaimOutcome::Claimed {
            lease,
            checkpoint,
            deliveries,
            ..
        } => {
            assert_eq!(checkpoint.as_deref(), Some(&b"ckpt-1"[..]));
            assert_eq!(deliveries, 2);
            lease
        }
        other => panic!("{other:?}"),
    };
    assert!(new.fence > old.fence);

    // The old owner is fenced out of every write.
    assert_eq!(
        q.checkpoint(&old, &progress, b"stale").await.unwrap(),
        LeaseState::Lost
    );
    assert_eq!(
        q.heartbeat(&old, &progress).await.unwrap(),
        LeaseState::Lost
    );
    assert!(
        !q.finish(&old, &result(&s, JobStatus::Completed), None)
            .await
            .unwrap()
    );
    assert!(!q.hand_back(&old).await.unwrap());

    // The new owner writes and finishes exactly once.
    assert_eq!(
        q.checkpoint(&new, &progress, b"ckpt-2").await.unwrap(),
        LeaseState::Owned { cancel: false }
    );
    assert!(
        q.finish(&new, &result(&s, JobStatus::Completed), None)
            .await
            .unwrap()
    );
    assert!(
        !q.finish(&new, &result(&s, JobStatus::Completed), None)
            .await
            .unwrap(),
        "a second finish is refused"
    );

    let results = q.read_results("collector", 10, 100).await.unwrap();
    assert_eq!(
        results.len(),
        1,
        "one result, however many finishes were tried"
    );
    assert_eq!(results[0].result.as_ref().unwrap().job_id, s.job_id);
    let state = q.job_state(s.job_id).await.unwrap().unwrap();
    assert_eq!(state.status, JobStatus::Completed);
    assert_eq!(
        q.job_backlog().await.unwrap(),
        (0, 0),
        "the entry was acknowledged"
    );
}

#[tokio::test]
async fn hand_back_requeues_at_once_without_counting_a_delivery() {
    let server = server(false);
    let q = queue(&server, "t2").await;
    let s = spec(&CorrelationId::generate(), None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let (lease, _, _) = claim_one(&q, "a").await;
    q.checkpoint(&lease, &Progress::default(), b"half")
        .await
        .unwrap();
    assert!(q.hand_back(&lease).await.unwrap());
    assert_eq!(
        q.job_state(s.job_id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    // Another worker reads it immediately as a new entry, with the checkpoint.
    let (lease2, checkpoint, deliveries) = claim_one(&q, "b").await;
    assert_eq!(checkpoint.as_deref(), Some(&b"half"[..]));
    assert_eq!(deliveries, 1);
    assert_eq!(
        q.heartbeat(&lease, &Progress::default()).await.unwrap(),
        LeaseState::Lost
    );
    assert!(
        q.finish(&lease2, &result(&s, JobStatus::Completed), None)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn cancellation_of_queued_and_running_jobs() {
    let server = server(false);
    let q = queue(&server, "t3").await;
    let corr = CorrelationId::generate();
    let queued = spec(&corr, None, 1);
    let running = spec(&corr, None, 2);
    q.enqueue(&[running.clone(), queued.clone()], None)
        .await
        .unwrap();
    let (lease, _, _) = claim_one(&q, "w").await;
    assert_eq!(lease.job_id, running.job_id);

    let outcome = q
        .cancel(queued.job_id, &result(&queued, JobStatus::Cancelled))
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::Cancelled);
    // Its entry is gone: no worker reads it, however long after its state expires.
    assert!(q.read_jobs("w", 1, 100).await.unwrap().is_empty());
    assert_eq!(
        q.stream_lengths().await.unwrap().0,
        1,
        "only the running job's entry is left"
    );

    assert_eq!(
        q.cancel(running.job_id, &result(&running, JobStatus::Cancelled))
            .await
            .unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        q.heartbeat(&lease, &Progress::default()).await.unwrap(),
        LeaseState::Owned { cancel: true }
    );
    assert!(
        q.finish(&lease, &result(&running, JobStatus::Cancelled), None)
            .await
            .unwrap()
    );
    assert_eq!(
        q.cancel(running.job_id, &result(&running, JobStatus::Cancelled))
            .await
            .unwrap(),
        CancelOutcome::AlreadyFinal(JobStatus::Cancelled)
    );
    assert_eq!(
        q.cancel(JobId::new(), &result(&running, JobStatus::Cancelled))
            .await
            .unwrap(),
        CancelOutcome::Missing
    );
    assert_eq!(q.read_results("c", 10, 100).await.unwrap().len(), 2);
    assert_eq!(q.correlation_jobs(&corr).await.unwrap().len(), 2);
}

#[tokio::test]
async fn undecodable_entries_go_to_the_dead_letter_stream_with_the_reason() {
    let server = server(false);
    let q = queue(&server, "t4").await;
    q.push_raw_job_entry(&[("job_id", "x"), ("spec", "{not json")])
        .await
        .unwrap();
    q.push_raw_job_entry(&[("hello", "world")]).await.unwrap();
    let deliveries = q.read_jobs("w", 10, 100).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    for d in &deliveries {
        let reason = d.spec.as_ref().unwrap_err();
        q.dead_letter_job_entry(d, reason).await.unwrap();
    }
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead[0].1["reason"].contains("spec is not a valid job"),
        "{:?}",
        dead[0]
    );
    assert!(
        dead[1].1["reason"].contains("lacks the job_id and spec"),
        "{:?}",
        dead[1]
    );
    assert!(dead[0].1["payload"].contains("{not json"));
    assert_eq!(
        q.job_backlog().await.unwrap(),
        (0, 0),
        "dead-lettered entries are acknowledged"
    );
}

#[tokio::test]
async fn a_repeated_submission_key_creates_no_duplicates() {
    let server = server(false);
    let q = queue(&server, "t5").await;
    let (batch, corr, fingerprint) = q
        .begin_submission("key-1", BatchId::new(), &CorrelationId::generate(), "f1")
        .await
        .unwrap();
    assert_eq!(fingerprint, "f1");
    let specs: Vec<JobSpec> = (0..3).map(|i| spec(&corr, Some(batch), i)).collect();
    let first = q.enqueue(&specs, Some(("key-1", 0))).await.unwrap();
    // The client retries with fresh ids: it gets the same batch, correlation id and job ids.
    let (batch2, corr2, fingerprint2) = q
        .begin_submission("key-1", BatchId::new(), &CorrelationId::generate(), "f2")
        .await
        .unwrap();
    assert_eq!((batch2, &corr2), (batch, &corr));
    assert_eq!(
        fingerprint2, "f1",
        "the first request's fingerprint, for the caller to compare"
    );
    let retry: Vec<JobSpec> = (0..3).map(|i| spec(&corr, Some(batch), i)).collect();
    let second = q.enqueue(&retry, Some(("key-1", 0))).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        q.job_backlog().await.unwrap().0,
        3,
        "three entries, not six"
    );
    assert_eq!(q.batch_jobs(batch).await.unwrap().len(), 3);
}

#[tokio::test]
async fn every_read_carries_on_after_redis_lost_its_data() {
    let server = server(false);
    let q = queue(&server, "lost").await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    // Nothing there, and no NOGROUP: each read creates the group it needs.
    assert!(q.read_results("c", 10, 10).await.unwrap().is_empty());
    assert!(q.reclaim_results("c", 0, 10).await.unwrap().is_empty());
    assert!(q.read_jobs("w", 10, 10).await.unwrap().is_empty());
    assert!(q.reclaim_jobs("w", 0, 10).await.unwrap().is_empty());
    assert_eq!(q.trim_streams().await.unwrap().results, 0);
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    assert_eq!(
        q.trim_streams().await.unwrap().jobs,
        0,
        "a stream that is gone has nothing to trim"
    );
    // A result published meanwhile (XADD makes the stream, not the group) is read.
    let corr = CorrelationId::generate();
    let s = spec(&corr, None, 0);
    let r = result(&s, JobStatus::Completed);
    q.push_raw_result_entry(&[
        ("job_id", &r.job_id.to_string()),
        ("result", &serde_json::to_string(&r).unwrap()),
    ])
    .await
    .unwrap();
    let read = q.read_results("c", 10, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].result.as_ref().unwrap().job_id, r.job_id);
    // And a job submitted afterwards is read by a worker.
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    assert_eq!(q.read_jobs("w", 10, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn trimming_never_removes_pending_entries() {
    let server = server(false);
    let q = queue(&server, "t6").await;
    let corr = CorrelationId::generate();
    let specs: Vec<JobSpec> = (0..5).map(|i| spec(&corr, None, i)).collect();
    q.enqueue(&specs, None).await.unwrap();
    // Two are finished, one is in flight (pending), two were never read.
    for _ in 0..2 {
        let (lease, _, _) = claim_one(&q, "w").await;
        let s = specs.iter().find(|s| s.job_id == lease.job_id).unwrap();
        q.finish(&lease, &result(s, JobStatus::Completed), None)
            .await
            .unwrap();
    }
    let (in_flight, _, _) = claim_one(&q, "w").await;
    assert_eq!(
        q.stream_lengths().await.unwrap().0,
        3,
        "acknowledged entries are deleted at once; the pending one and the unread ones stay"
    );
    let report = q.trim_streams().await.unwrap();
    assert_eq!(
        report.jobs, 0,
        "nothing before the pending entry is left to trim"
    );
    // The pending entry is still there: its owner can finish it, and a reclaim still finds it.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(q.reclaim_jobs("w2", 50, 10).await.unwrap().len(), 1);
    assert_eq!(
        q.read_jobs("w", 10, 100).await.unwrap().len(),
        2,
        "unread entries stay"
    );
    assert!(in_flight.fence >= 1);
}

#[tokio::test]
async fn state_survives_a_redis_restart_with_aof() {
    let mut server = server(true);
    let q = queue(&server, "t7").await;
    let s = spec(&CorrelationId::generate(), None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let (lease, _, _) = claim_one(&q, "w").await;
    q.checkpoint(&lease, &Progress::default(), b"before-restart")
        .await
        .unwrap();
    server.restart().unwrap();
    // The pool reconnects; scripts are loaded again on NOSCRIPT.
    let mut state = None;
    for _ in 0..50 {
        match q
            .checkpoint(&lease, &Progress::default(), b"after-restart")
            .await
        {
            Ok(s) => {
                state = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(state, Some(LeaseState::Owned { cancel: false }));
    assert!(
        q.finish(&lease, &result(&s, JobStatus::Completed), None)
            .await
            .unwrap()
    );
    assert_eq!(q.read_results("c", 10, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn namespaces_do_not_see_each_other() {
    let server = server(false);
    let a = queue(&server, "team-a").await;
    let b = queue(&server, "team-b").await;
    a.enqueue(&[spec(&CorrelationId::generate(), None, 1)], None)
        .await
        .unwrap();
    assert!(b.read_jobs("w", 10, 50).await.unwrap().is_empty());
    assert_eq!(a.read_jobs("w", 10, 50).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_idle_blocking_read_waits_its_full_time_without_error() {
    let server = server(false);
    let q = queue(&server, "t8").await;
    let start = std::time::Instant::now();
    let got = q
        .read_jobs("idle", 1, 1500)
        .await
        .expect("an empty read is not an error");
    assert!(got.is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "it blocked: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn an_undecodable_entry_of_a_known_job_marks_the_job_dead() {
    // A job whose entry this worker cannot decode (written by a newer producer, say) must not
    // stay queued forever once its entry is dead-lettered.
    let server = server(false);
    let q = queue(&server, "t9").await;
    let s = spec(&CorrelationId::generate(), None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let mut d = q.read_jobs("old-worker", 1, 1000).await.unwrap().remove(0);
    d.spec = Err("unknown field `new_option`".into());
    q.dead_letter_job_entry(&d, "spec is not a valid job: unknown field `new_option`")
        .await
        .unwrap();
    let state = q.job_state(s.job_id).await.unwrap().unwrap();
    assert_eq!(state.status, JobStatus::Dead);
    assert!(state.error.unwrap().contains("new_option"));
    assert_eq!(q.job_backlog().await.unwrap(), (0, 0));
    // Its dead result is published, so the job reaches the results database.
    let results = q.read_results("collector", 10, 100).await.unwrap();
    assert_eq!(results.len(), 1);
    let r = results[0].result.as_ref().unwrap();
    assert_eq!((r.job_id, r.status), (s.job_id, JobStatus::Dead));
    assert!(r.error.as_deref().unwrap().contains("new_option"), "{r:?}");
}

#[tokio::test]
async fn an_entry_whose_job_state_is_gone_publishes_its_dead_result_and_expires_its_checkpoint() {
    let server = server(false);
    let q = queue(&server, "gone").await;
    let s = spec(&CorrelationId::generate(), None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let (lease, _, _) = claim_one(&q, "w").await;
    q.checkpoint(&lease, &Progress::default(), b"ckpt")
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(q.keys().job(s.job_id))
        .query_async(&mut c)
        .await
        .unwrap();
    // The next claim finds no state, and the worker dead-letters the entry.
    let d = q.reclaim_jobs("w2", 0, 10).await.unwrap().remove(0);
    assert_eq!(
        q.claim(s.job_id, &d, "w2").await.unwrap(),
        ClaimOutcome::Missing
    );
    q.dead_letter_job_entry(&d, "no state for the job")
        .await
        .unwrap();
    let results = q.read_results("collector", 10, 100).await.unwrap();
    assert_eq!(results.len(), 1);
    let r = results[0].result.as_ref().unwrap();
    assert_eq!((r.job_id, r.status), (s.job_id, JobStatus::Dead));
    let ttl: i64 = redis::cmd("TTL")
        .arg(q.keys().checkpoint(s.job_id))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        ttl > 0,
        "the checkpoint of a job without state must expire, TTL {ttl}"
    );
    assert_eq!(q.job_backlog().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn a_deferred_job_waits_out_its_delay_keeps_its_checkpoint_and_counts_no_delivery() {
    let server = server(false);
    let q = queue(&server, "defer").await;
    let corr = CorrelationId::generate();
    let s = spec(&corr, None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let (lease, _, deliveries) = claim_one(&q, "w").await;
    assert_eq!(deliveries, 1);
    q.checkpoint(&lease, &Progress::default(), b"ckpt")
        .await
        .unwrap();
    let since = now_ms() - 5_000;
    let wait = Wait {
        due_ms: now_ms() + 300,
        reason: "waiting for model m: connection refused",
        since_ms: Some(since),
    };
    assert_eq!(q.defer(&lease, &wait).await.unwrap(), Deferral::Deferred);
    // The old owner is fenced out.
    assert_eq!(
        q.checkpoint(&lease, &Progress::default(), b"stale")
            .await
            .unwrap(),
        LeaseState::Lost
    );
    let state = q.job_state(s.job_id).await.unwrap().unwrap();
    assert_eq!(state.status, JobStatus::Queued);
    assert_eq!(state.waiting.as_deref(), Some(wait.reason));
    assert_eq!(state.not_before_ms, Some(wait.due_ms));
    assert_eq!(q.delayed_len().await.unwrap(), 1);
    // Nothing to read or promote before the delay is over.
    assert!(q.read_jobs("w", 1, 50).await.unwrap().is_empty());
    assert_eq!(q.promote_due(10).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(q.promote_due(10).await.unwrap(), 1);
    assert_eq!(q.promote_due(10).await.unwrap(), 0, "moved once");
    let d = q.read_jobs("w", 1, 1000).await.unwrap().pop().unwrap();
    match q.claim(s.job_id, &d, "w").await.unwrap() {
        ClaimOutcome::Claimed {
            checkpoint,
            deliveries,
            waiting_since_ms,
            waits,
            lease,
            ..
        } => {
            assert_eq!(checkpoint.as_deref(), Some(&b"ckpt"[..]));
            assert_eq!(deliveries, 1, "a wait is not a delivery");
            assert_eq!(waiting_since_ms, Some(since));
            assert_eq!(waits, 1);
            assert!(lease.fence > 0);
        }
        other => panic!("{other:?}"),
    }
    let state = q.job_state(s.job_id).await.unwrap().unwrap();
    assert_eq!(state.waiting, None, "a running job is not waiting");
}

#[tokio::test]
async fn an_unclaimed_entry_is_deferred_only_if_current_and_a_cancelled_wait_is_dropped() {
    let server = server(false);
    let q = queue(&server, "defer2").await;
    let corr = CorrelationId::generate();
    let s = spec(&corr, None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let d = q.read_jobs("w", 1, 1000).await.unwrap().pop().unwrap();
    let wait = Wait {
        due_ms: now_ms(),
        reason: "waiting for model m: every server's circuit is open",
        since_ms: None,
    };
    let other_entry = powerfleet_queue::Delivery {
        entry_id: "0-1".to_string(),
        ..d.clone()
    };
    assert!(
        !q.defer_unclaimed(s.job_id, &other_entry, &wait)
            .await
            .unwrap()
    );
    assert!(q.defer_unclaimed(s.job_id, &d, &wait).await.unwrap());
    let state = q.job_state(s.job_id).await.unwrap().unwrap();
    assert_eq!((state.status, state.deliveries), (JobStatus::Queued, 0));
    // Cancelled while waiting: it finishes at once, and promote only drops it from the set.
    assert_eq!(
        q.cancel(s.job_id, &result(&s, JobStatus::Cancelled))
            .await
            .unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(q.promote_due(10).await.unwrap(), 0);
    assert_eq!(q.delayed_len().await.unwrap(), 0);
    assert!(q.read_jobs("w", 1, 50).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_job_with_a_cancellation_request_is_not_deferred() {
    let server = server(false);
    let q = queue(&server, "defer3").await;
    let corr = CorrelationId::generate();
    let s = spec(&corr, None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let (lease, _, _) = claim_one(&q, "w").await;
    assert_eq!(
        q.cancel(s.job_id, &result(&s, JobStatus::Cancelled))
            .await
            .unwrap(),
        CancelOutcome::Requested
    );
    let wait = Wait {
        due_ms: now_ms() + 60_000,
        reason: "waiting for model m",
        since_ms: None,
    };
    assert_eq!(
        q.defer(&lease, &wait).await.unwrap(),
        Deferral::CancelRequested
    );
    let state = q.job_state(s.job_id).await.unwrap().unwrap();
    assert_eq!(
        state.status,
        JobStatus::Running,
        "still the owner's to finish"
    );
    assert_eq!(q.delayed_len().await.unwrap(), 0);
}

/// Appends an entry with arbitrary bytes (not necessarily UTF-8) to a stream.
async fn xadd_bytes(server: &LocalRedis, stream: &str, fields: &[(&[u8], &[u8])]) -> String {
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(&mut c).await.unwrap()
}

/// Pending (delivered, unacknowledged) entries of a stream's group.
async fn pending(server: &LocalRedis, stream: &str, group: &str) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let summary: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut c)
        .await
        .unwrap();
    match &summary[0] {
        redis::Value::Int(n) => *n as u64,
        other => panic!("{other:?}"),
    }
}

/// The fields of a dead-letter payload (the entry's fields, rendered as JSON), sorted by name.
fn payload_fields(dead: &std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&dead["payload"]).unwrap();
    map.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn entries_that_are_not_utf8_are_dead_lettered_and_do_not_block_their_group() {
    use powerfleet_queue::{COLLECTOR_GROUP, WORKER_GROUP};
    let server = server(false);
    let q = queue(&server, "bytes").await;
    let (jobs, results) = (q.keys().jobs(), q.keys().results());
    let corr = CorrelationId::generate();
    let specs: Vec<JobSpec> = (0..3).map(|i| spec(&corr, None, i)).collect();

    // Jobs stream: a good job, a field name and a value that are not UTF-8, another good job.
    q.enqueue(&specs[..1], None).await.unwrap();
    let bad_name = xadd_bytes(
        &server,
        &jobs,
        &[
            (b"job_id", b"x"),
            (b"sp\xffec", b"{}"),
            (b"back\\slash", b"v"),
        ],
    )
    .await;
    let job_id = specs[1].job_id.to_string();
    let bad_value = xadd_bytes(
        &server,
        &jobs,
        &[
            (b"job_id", job_id.as_bytes()),
            (b"spec", b"{\"model\":\"\xfe\xff\"}"),
        ],
    )
    .await;
    q.enqueue(&specs[1..2], None).await.unwrap();
    let read = q
        .read_jobs("w", 10, 1000)
        .await
        .expect("the group is readable");
    assert_eq!(read.len(), 4, "{read:?}");
    assert_eq!(read[0].spec.as_ref().unwrap().job_id, specs[0].job_id);
    assert_eq!(read[3].spec.as_ref().unwrap().job_id, specs[1].job_id);
    assert_eq!(
        (read[1].entry_id.as_str(), read[2].entry_id.as_str()),
        (bad_name.as_str(), bad_value.as_str())
    );
    let name_reason = read[1].spec.as_ref().unwrap_err();
    assert!(name_reason.contains("not UTF-8"), "{name_reason}");
    assert!(name_reason.contains("sp\\xffec"), "{name_reason}");
    let value_reason = read[2].spec.as_ref().unwrap_err();
    assert!(
        value_reason.contains("field spec is not UTF-8"),
        "{value_reason}"
    );
    for d in &read[1..3] {
        q.dead_letter_job_entry(d, d.spec.as_ref().unwrap_err())
            .await
            .unwrap();
    }
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].1["entry"], bad_name);
    assert_eq!(&dead[0].1["reason"], name_reason);
    // The raw bytes survive, invalid bytes hex-escaped (and backslashes doubled in such a field).
    assert_eq!(
        payload_fields(&dead[0].1),
        [
            ("back\\slash".to_string(), "v".to_string()),
            ("job_id".to_string(), "x".to_string()),
            ("sp\\xffec".to_string(), "{}".to_string()),
        ]
    );
    assert_eq!(
        payload_fields(&dead[1].1),
        [
            ("job_id".to_string(), job_id.clone()),
            ("spec".to_string(), "{\"model\":\"\\xfe\\xff\"}".to_string()),
        ]
    );
    // Only the bad entries were acknowledged; the good ones stay pending for their claims.
    assert_eq!(pending(&server, &jobs, WORKER_GROUP).await, 2);
    for (d, s) in [(&read[0], &specs[0]), (&read[3], &specs[1])] {
        let ClaimOutcome::Claimed { lease, .. } = q.claim(s.job_id, d, "w").await.unwrap() else {
            panic!("not claimed")
        };
        assert!(
            q.finish(&lease, &result(s, JobStatus::Completed), None)
                .await
                .unwrap()
        );
    }
    assert_eq!(q.job_backlog().await.unwrap(), (0, 0));

    // A worker reads a bad entry and a good job, claims the job and dies: another worker
    // reclaims both, dead-letters the bad one and finishes the job.
    xadd_bytes(&server, &jobs, &[(b"\x80", b"\x81")]).await;
    q.enqueue(&specs[2..3], None).await.unwrap();
    let read = q.read_jobs("dies", 10, 1000).await.unwrap();
    assert_eq!(read.len(), 2);
    q.claim(specs[2].job_id, &read[1], "dies").await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let reclaimed = q
        .reclaim_jobs("heir", 100, 10)
        .await
        .expect("reclaim works");
    assert_eq!(reclaimed.len(), 2, "{reclaimed:?}");
    let reason = reclaimed[0].spec.as_ref().unwrap_err();
    assert!(
        reason.contains("\\x80") && reason.contains("not UTF-8"),
        "{reason}"
    );
    q.dead_letter_job_entry(&reclaimed[0], reason)
        .await
        .unwrap();
    let ClaimOutcome::Claimed { lease, .. } = q
        .claim(specs[2].job_id, &reclaimed[1], "heir")
        .await
        .unwrap()
    else {
        panic!("not claimed")
    };
    assert!(
        q.finish(&lease, &result(&specs[2], JobStatus::Completed), None)
            .await
            .unwrap()
    );
    assert_eq!(q.job_backlog().await.unwrap(), (0, 0));
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(
        payload_fields(&dead[2].1),
        [("\\x80".to_string(), "\\x81".to_string())]
    );

    // Results stream: bad entries before the three results, then a reclaim of a bad one.
    // (The three results are already in the stream; put two bad entries behind and one in front
    // of a fourth result.)
    let bad_results = [
        xadd_bytes(
            &server,
            &results,
            &[(b"job_id", b"r"), (b"res\xc3ult", b"{}")],
        )
        .await,
        xadd_bytes(
            &server,
            &results,
            &[(b"job_id", b"r"), (b"result", b"{\"a\":\xc3}")],
        )
        .await,
    ];
    let extra = spec(&corr, None, 9);
    let json = serde_json::to_string(&result(&extra, JobStatus::Completed)).unwrap();
    q.push_raw_result_entry(&[("job_id", &extra.job_id.to_string()), ("result", &json)])
        .await
        .unwrap();
    let read = q
        .read_results("c", 10, 1000)
        .await
        .expect("the group is readable");
    assert_eq!(read.len(), 6, "{read:?}");
    let ok: Vec<JobId> = read
        .iter()
        .filter_map(|d| d.result.as_ref().ok().map(|r| r.job_id))
        .collect();
    assert_eq!(
        ok,
        [
            specs[0].job_id,
            specs[1].job_id,
            specs[2].job_id,
            extra.job_id
        ]
    );
    for d in &read {
        match &d.result {
            Ok(_) => q.ack_result(&d.entry_id).await.unwrap(),
            Err(reason) => {
                assert!(bad_results.contains(&d.entry_id));
                assert!(reason.contains("not UTF-8"), "{reason}");
                q.dead_letter_result_entry(d, reason).await.unwrap();
            }
        }
    }
    assert_eq!(pending(&server, &results, COLLECTOR_GROUP).await, 0);
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 5);
    assert_eq!(
        payload_fields(&dead[3].1),
        [
            ("job_id".to_string(), "r".to_string()),
            ("res\\xc3ult".to_string(), "{}".to_string()),
        ]
    );

    // A collector reads a bad result and dies; another reclaims it and dead-letters it.
    let bad = xadd_bytes(&server, &results, &[(b"\xff", b"\xff")]).await;
    assert_eq!(q.read_results("dies", 10, 1000).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let reclaimed = q
        .reclaim_results("heir", 100, 10)
        .await
        .expect("reclaim works");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].entry_id, bad);
    let reason = reclaimed[0].result.as_ref().unwrap_err();
    q.dead_letter_result_entry(&reclaimed[0], reason)
        .await
        .unwrap();
    assert_eq!(pending(&server, &results, COLLECTOR_GROUP).await, 0);
    assert_eq!(q.dead_letters(10).await.unwrap().len(), 6);
}

#[tokio::test]
async fn entries_that_are_not_utf8_are_delivered_over_resp3_too() {
    let server = server(false);
    let q = Queue::connect(
        &format!("{}?protocol=resp3", server.url()),
        QueueOptions {
            namespace: "resp3".to_string(),
            ..QueueOptions::default()
        },
    )
    .await
    .unwrap();
    let s = spec(&CorrelationId::generate(), None, 1);
    xadd_bytes(&server, &q.keys().jobs(), &[(b"\xff", b"")]).await;
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let read = q.read_jobs("w", 10, 1000).await.unwrap();
    assert_eq!(read.len(), 2);
    assert!(read[0].spec.as_ref().unwrap_err().contains("not UTF-8"));
    assert_eq!(read[1].spec.as_ref().unwrap().job_id, s.job_id);
    q.dead_letter_job_entry(&read[0], "bad").await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let reclaimed = q.reclaim_jobs("heir", 50, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].spec.as_ref().unwrap().job_id, s.job_id);
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].1["payload"], r#"{"\\xff":""}"#);
}

#[tokio::test]
async fn two_claims_never_share_a_lease_even_when_a_fence_increment_is_lost() {
    // A failover can lose a claim that a worker already holds (replication is asynchronous):
    // the next claim then takes the same fence number. Its lease must still differ.
    let server = server(false);
    let q = queue(&server, "lost-fence").await;
    let s = spec(&CorrelationId::generate(), None, 1);
    q.enqueue(std::slice::from_ref(&s), None).await.unwrap();
    let (a, _, _) = claim_one(&q, "a").await;
    // The claim is undone as a lost write would leave it.
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(q.keys().job(s.job_id))
        .arg(&[("fence", "0"), ("deliveries", "0"), ("status", "queued")])
        .ignore()
        .cmd("HDEL")
        .arg(q.keys().job(s.job_id))
        .arg("lease")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
    let d = q.reclaim_jobs("b", 0, 10).await.unwrap().remove(0);
    let b = match q.claim(s.job_id, &d, "b").await.unwrap() {
        ClaimOutcome::Claimed { lease, .. } => lease,
        other => panic!("expected a claim, got {other:?}"),
    };
    assert_eq!(a.fence, b.fence, "the same fence number twice");
    assert_eq!(
        q.checkpoint(&a, &Progress::default(), b"from a")
            .await
            .unwrap(),
        LeaseState::Lost
    );
    assert!(matches!(
        q.checkpoint(&b, &Progress::default(), b"from b")
            .await
            .unwrap(),
        LeaseState::Owned { .. }
    ));
    let done = JobResult::for_spec(&s, JobStatus::Completed, 1, None);
    assert!(!q.finish(&a, &done, None).await.unwrap());
    assert!(q.finish(&b, &done, None).await.unwrap());
}

#[tokio::test]
async fn a_batch_tally_counts_its_jobs_as_they_finish_whatever_ends_them() {
    let server = server(false);
    let q = queue(&server, "tally").await;
    let corr = CorrelationId::generate();
    let batch = BatchId::new();
    let specs: Vec<JobSpec> = (0..4).map(|i| spec(&corr, Some(batch), i)).collect();
    q.enqueue(&specs, None).await.unwrap();
    let tally = q.tally(TallyOf::Batch(batch)).await.unwrap().unwrap();
    assert_eq!((tally.total, tally.finished), (4, 0));
    assert_eq!(tally.by_method.get("power"), Some(&(0, 4)));
    // One completes, one is cancelled while queued, one is dead-lettered as undecodable.
    let (lease, _, _) = claim_one(&q, "w").await;
    let done = specs.iter().find(|s| s.job_id == lease.job_id).unwrap();
    assert!(
        q.finish(&lease, &result(done, JobStatus::Completed), None)
            .await
            .unwrap()
    );
    let queued: Vec<&JobSpec> = specs.iter().filter(|s| s.job_id != done.job_id).collect();
    let cancelled = queued[0];
    assert_eq!(
        q.cancel(cancelled.job_id, &result(cancelled, JobStatus::Cancelled))
            .await
            .unwrap(),
        CancelOutcome::Cancelled
    );
    let mut d = q
        .read_jobs("w", 10, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.spec.as_ref().is_ok_and(|s| s.job_id == queued[1].job_id))
        .unwrap();
    d.spec = Err("unknown field `new_option`".into());
    q.dead_letter_job_entry(&d, "spec is not a valid job")
        .await
        .unwrap();
    let tally = q.tally(TallyOf::Batch(batch)).await.unwrap().unwrap();
    assert_eq!((tally.total, tally.finished), (4, 3));
    assert_eq!(tally.by_method.get("power"), Some(&(3, 4)));
    for status in ["completed", "cancelled", "dead"] {
        assert_eq!(tally.by_status.get(status), Some(&1), "{status}: {tally:?}");
    }
    assert!(!tally.done());
    // The correlation's tally counts the same jobs.
    let by_corr = q.tally(TallyOf::Correlation(&corr)).await.unwrap().unwrap();
    assert_eq!(by_corr, tally);
    // A batch never submitted has no tally.
    assert_eq!(q.tally(TallyOf::Batch(BatchId::new())).await.unwrap(), None);
}
