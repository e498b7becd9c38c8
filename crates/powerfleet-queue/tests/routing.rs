//! Jobs reach only workers that serve their model: a stream per model name, the shared stream
//! for model references, reads that never take more than asked, jobs of the old layout moved to
//! their name's stream, the backlog after cancellation, and workers' registrations. Against a
//! real, private redis-server.

use std::collections::BTreeSet;

use powerfleet_jobs::{CorrelationId, JobId, JobSpec, JobStatus, now_ms};
use powerfleet_queue::local::LocalRedis;
use powerfleet_queue::{
    CancelOutcome, ClaimOutcome, Delivery, Queue, ServedModel, Subscription, WorkerRegistration,
    context_tokens, served,
};

fn server() -> LocalRedis {
    powerfleet_testkit::redis_server(false)
}

async fn queue(server: &LocalRedis, ns: &str) -> Queue {
    powerfleet_testkit::queue_on(server, ns).await
}

fn spec(corr: &CorrelationId, model: &str, seed: u64) -> JobSpec {
    powerfleet_testkit::spec()
        .correlation_id(corr.clone())
        .model(model)
        .seed(seed)
        .build()
}

fn models_of(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.spec.as_ref().unwrap().model.clone())
        .collect()
}

#[tokio::test]
async fn a_worker_reads_only_the_names_it_maps_and_the_references() {
    let server = server();
    let q = queue(&server, "r1").await;
    let corr = CorrelationId::generate();
    let specs: Vec<JobSpec> = ["m1", "m2", "toy:pivot", "m1", "m2", "m3"]
        .iter()
        .enumerate()
        .map(|(i, m)| spec(&corr, m, i as u64))
        .collect();
    q.enqueue(&specs, None).await.unwrap();

    let only_m1 = q.subscription(&["m1".to_string()]);
    let mut read = Vec::new();
    for _ in 0..4 {
        read.extend(q.read_subscribed(&only_m1, "w1", 10, 50).await.unwrap());
    }
    let mut models = models_of(&read);
    models.sort();
    assert_eq!(models, ["m1", "m1", "toy:pivot"]);
    // The others wait on their own streams for the workers that map them.
    let m2_m3 = q.subscription(&["m2".to_string(), "m3".to_string()]);
    let mut models = models_of(&q.read_subscribed(&m2_m3, "w2", 10, 50).await.unwrap());
    models.sort();
    assert_eq!(models, ["m2", "m2", "m3"]);
    let backlog = q.backlog_by_stream().await.unwrap();
    let by_model: Vec<(Option<&str>, u64, u64)> = backlog
        .iter()
        .map(|b| (b.model.as_deref(), b.queued, b.pending))
        .collect();
    assert_eq!(
        by_model,
        [
            (None, 0, 1),
            (Some("m1"), 0, 2),
            (Some("m2"), 0, 2),
            (Some("m3"), 0, 1)
        ]
    );
    assert_eq!(backlog[1].stream, "pf:{r1}:jobs:model:m1");
}

#[tokio::test]
async fn a_read_never_takes_more_than_asked_and_every_stream_gets_its_turn() {
    let server = server();
    let q = queue(&server, "r2").await;
    let corr = CorrelationId::generate();
    let names: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
    let specs: Vec<JobSpec> = (0..12)
        .map(|i| spec(&corr, &names[i % 4], i as u64))
        .collect();
    q.enqueue(&specs, None).await.unwrap();
    let sub = q.subscription(&names);
    let mut first_of_each_read = Vec::new();
    let mut total = 0;
    loop {
        let read = q.read_subscribed(&sub, "w", 1, 50).await.unwrap();
        assert!(read.len() <= 1, "asked for one, got {}", read.len());
        let Some(d) = read.first() else { break };
        first_of_each_read.push(d.spec.as_ref().unwrap().model.clone());
        total += 1;
    }
    assert_eq!(total, 12, "every job is read once");
    // Reads start at the next stream in turn (five: the shared one and four names'), so any
    // five reads in a row take from every model that still has jobs.
    let first_five: BTreeSet<&String> = first_of_each_read[..5].iter().collect();
    assert_eq!(first_five.len(), 4, "{first_of_each_read:?}");
}

#[tokio::test]
async fn a_blocked_read_that_brings_more_than_asked_puts_the_rest_back() {
    let server = server();
    let q = queue(&server, "r3").await;
    let sub = q.subscription(&["a".to_string(), "b".to_string()]);
    // Make the groups, then block on every stream while two streams fill in one script.
    assert!(q.read_subscribed(&sub, "w", 1, 0).await.unwrap().is_empty());
    let corr = CorrelationId::generate();
    let (a, b) = (spec(&corr, "a", 1), spec(&corr, "b", 2));
    let reader = {
        let q = q.clone();
        tokio::spawn(async move {
            let sub = q.subscription(&["a".to_string(), "b".to_string()]);
            q.read_subscribed(&sub, "w", 1, 5000).await.unwrap()
        })
    };
    // Let the reader block before the jobs arrive (if it has not blocked yet, it finds them
    // with its first read, which also takes one: the assertions hold either way).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    q.enqueue(&[a.clone(), b.clone()], None).await.unwrap();
    let read = reader.await.unwrap();
    assert_eq!(read.len(), 1);
    // The other job is still there for the next read, queued, never delivered.
    let next = q.read_subscribed(&sub, "w2", 10, 100).await.unwrap();
    assert_eq!(next.len(), 1);
    let mut both = models_of(&read);
    both.extend(models_of(&next));
    both.sort();
    assert_eq!(both, ["a", "b"]);
    for job in [a.job_id, b.job_id] {
        let state = q.job_state(job).await.unwrap().unwrap();
        assert_eq!((state.status, state.deliveries), (JobStatus::Queued, 0));
    }
}

/// Writes a job as the layout before model streams did: its entry on the shared stream, and a
/// state hash without a stream.
async fn enqueue_old_layout(server: &LocalRedis, q: &Queue, s: &JobSpec) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let spec = serde_json::to_string(s).unwrap();
    let entry: String = redis::cmd("XADD")
        .arg(q.keys().jobs())
        .arg("*")
        .arg("job_id")
        .arg(s.job_id.to_string())
        .arg("spec")
        .arg(&spec)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(q.keys().job(s.job_id))
        .arg("spec")
        .arg(&spec)
        .arg("status")
        .arg("queued")
        .arg("fence")
        .arg(0)
        .arg("deliveries")
        .arg(0)
        .arg("entry")
        .arg(entry)
        .arg("correlation_id")
        .arg(s.correlation_id.as_str())
        .arg("batch_id")
        .arg("")
        .arg("method")
        .arg("power")
        .arg("submitted_at_ms")
        .arg(now_ms())
        .arg("updated_at_ms")
        .arg(now_ms())
        .arg("cancel")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// The one job `consumer` reads through `sub` (within 100 ms), which must come from `stream`.
async fn read_one(q: &Queue, sub: &Subscription, consumer: &str, stream: &str) -> Delivery {
    let mut read = q.read_subscribed(sub, consumer, 1, 100).await.unwrap();
    assert_eq!(read.len(), 1, "one job read");
    let d = read.pop().unwrap();
    assert_eq!(d.stream, stream);
    d
}

#[tokio::test]
async fn a_job_of_the_old_layout_moves_to_its_name_stream_and_runs_there() {
    let server = server();
    let q = queue(&server, "r4").await;
    let s = spec(&CorrelationId::generate(), "m9", 1);
    enqueue_old_layout(&server, &q, &s).await;
    // A worker that does not map m9 reads it from the shared stream and moves it.
    let other = q.subscription(&["m1".to_string()]);
    let d = read_one(&q, &other, "w1", &q.keys().jobs()).await;
    assert!(q.requeue(&s, &d, &q.keys().model_jobs("m9")).await.unwrap());
    assert!(
        q.read_subscribed(&other, "w1", 1, 50)
            .await
            .unwrap()
            .is_empty()
    );
    // A worker that maps m9 runs it, and everything it writes goes to m9's stream.
    let m9 = q.subscription(&["m9".to_string()]);
    let d = read_one(&q, &m9, "w2", &q.keys().model_jobs("m9")).await;
    let ClaimOutcome::Claimed {
        lease, deliveries, ..
    } = q.claim(s.job_id, &d, "w2").await.unwrap()
    else {
        panic!("not claimed")
    };
    assert_eq!(deliveries, 1, "a move is not a delivery");
    let result = powerfleet_testkit::result_for(&s)
        .status(JobStatus::Completed)
        .tokens(vec![0])
        .log_p(-1.0)
        .build();
    assert!(q.finish(&lease, &result, None).await.unwrap());
    assert_eq!(q.job_backlog().await.unwrap(), (0, 0));
    // An old-layout job of a name the worker maps runs from the shared stream as it is.
    let t = spec(&CorrelationId::generate(), "m9", 2);
    enqueue_old_layout(&server, &q, &t).await;
    let d = read_one(&q, &m9, "w2", &q.keys().jobs()).await;
    assert!(matches!(
        q.claim(t.job_id, &d, "w2").await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
}

#[tokio::test]
async fn cancelled_queued_jobs_leave_no_backlog() {
    let server = server();
    let q = queue(&server, "r5").await;
    let corr = CorrelationId::generate();
    let specs: Vec<JobSpec> = (0..20)
        .map(|i| spec(&corr, if i % 2 == 0 { "m1" } else { "toy:tiny" }, i))
        .collect();
    q.enqueue(&specs, None).await.unwrap();
    assert_eq!(q.job_backlog().await.unwrap(), (20, 0));
    for s in &specs {
        let cancelled = powerfleet_testkit::result_for(s)
            .status(JobStatus::Cancelled)
            .build();
        assert_eq!(
            q.cancel(s.job_id, &cancelled).await.unwrap(),
            CancelOutcome::Cancelled
        );
    }
    assert_eq!(q.job_backlog().await.unwrap(), (0, 0));
    for b in q.backlog_by_stream().await.unwrap() {
        assert_eq!((b.queued, b.pending), (0, 0), "{b:?}");
    }
    assert_eq!(
        q.stream_lengths().await.unwrap().0,
        0,
        "nothing left to scale on"
    );
}

/// The lag of the workers' group on `model`'s stream as Redis reports it (what autoscalers
/// read), and the jobs really queued there.
async fn lag_of(q: &Queue, model: &str) -> (Option<u64>, u64) {
    let stream = q.keys().model_jobs(model);
    let queued = q
        .backlog_by_stream()
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.stream == stream)
        .map_or(0, |b| b.queued);
    (q.reported_lag(&stream).await.unwrap(), queued)
}

async fn cancel(q: &Queue, s: &JobSpec) -> CancelOutcome {
    let cancelled = powerfleet_testkit::result_for(s)
        .status(JobStatus::Cancelled)
        .build();
    q.cancel(s.job_id, &cancelled).await.unwrap()
}

/// Cancelling queued jobs anywhere in a model name's stream (before, between and after entries
/// delivered and still queued) leaves the lag Redis reports for the workers' group, which
/// autoscalers read, equal to the jobs still queued; reads and new jobs count on from it. The
/// cluster test runs it on a Redis Cluster.
pub(crate) async fn cancels_leave_the_reported_lag_true(q: &Queue) {
    let corr = CorrelationId::generate();
    let specs: Vec<JobSpec> = (0..20).map(|i| spec(&corr, "m1", i)).collect();
    q.enqueue(&specs, None).await.unwrap();
    assert_eq!(lag_of(q, "m1").await, (Some(20), 20));
    // A worker reads four and runs the last one it read to the end (the other three stay
    // pending: read, not claimed, as when their worker died).
    let sub = q.subscription(&["m1".to_string()]);
    let read = q.read_subscribed(&sub, "w", 4, 100).await.unwrap();
    assert_eq!(read.len(), 4);
    let last = read.last().unwrap();
    let s = last.spec.clone().unwrap();
    let ClaimOutcome::Claimed { lease, .. } = q.claim(s.job_id, last, "w").await.unwrap() else {
        panic!("not claimed")
    };
    let done = powerfleet_testkit::result_for(&s)
        .status(JobStatus::Completed)
        .build();
    assert!(q.finish(&lease, &done, None).await.unwrap());
    assert_eq!(lag_of(q, "m1").await, (Some(16), 16));
    // Every other queued job is cancelled: deleted entries lie between the ones still queued.
    let queued: Vec<&JobSpec> = specs
        .iter()
        .filter(|s| {
            !read
                .iter()
                .any(|d| d.spec.as_ref().unwrap().job_id == s.job_id)
        })
        .collect();
    assert_eq!(queued.len(), 16);
    for s in queued.iter().step_by(2) {
        assert_eq!(cancel(q, s).await, CancelOutcome::Cancelled);
        let (reported, really) = lag_of(q, "m1").await;
        assert_eq!(reported, Some(really), "after cancelling {}", s.job_id);
    }
    assert_eq!(lag_of(q, "m1").await, (Some(8), 8));
    // Reads count on from there.
    assert_eq!(q.read_subscribed(&sub, "w", 3, 100).await.unwrap().len(), 3);
    assert_eq!(lag_of(q, "m1").await, (Some(5), 5));
    // A job read but never claimed is cancelled too; what is queued does not change.
    let unclaimed = read[0].spec.as_ref().unwrap();
    assert_eq!(cancel(q, unclaimed).await, CancelOutcome::Cancelled);
    assert_eq!(lag_of(q, "m1").await, (Some(5), 5));
    // Cancelling every job left leaves nothing to scale on.
    for s in &specs {
        cancel(q, s).await;
    }
    assert_eq!(lag_of(q, "m1").await, (Some(0), 0));
    assert_eq!(q.job_backlog().await.unwrap(), (0, 0));
    // New jobs count from 0 again.
    let more: Vec<JobSpec> = (20..22).map(|i| spec(&corr, "m1", i)).collect();
    q.enqueue(&more, None).await.unwrap();
    assert_eq!(lag_of(q, "m1").await, (Some(2), 2));
    assert_eq!(q.read_subscribed(&sub, "w", 2, 100).await.unwrap().len(), 2);
    assert_eq!(lag_of(q, "m1").await, (Some(0), 0));
}

#[tokio::test]
async fn cancels_leave_the_lag_autoscalers_read_true() {
    let server = server();
    let q = queue(&server, "r7").await;
    cancels_leave_the_reported_lag_true(&q).await;
}

/// Every way a delivered entry leaves a model name's stream (finished, handed back, put back to
/// wait for its model with or without a claim, moved to the stream's end, dead-lettered), taken
/// on the newest entry delivered while older ones still run and newer ones are queued, leaves the
/// lag Redis reports (what autoscalers read) equal to the jobs still queued. Redis reports nil
/// there unless the group's counter is kept: it cannot count past a deleted entry at its
/// last-delivered id. The cluster test runs it on a Redis Cluster.
pub(crate) async fn removals_of_the_newest_delivered_entry_leave_the_reported_lag_true(q: &Queue) {
    let paths = [
        "finish",
        "hand back",
        "defer",
        "defer unclaimed",
        "requeue",
        "dead letter",
    ];
    for (i, path) in paths.into_iter().enumerate() {
        // A model name per path, so each has a stream of its own.
        let model = format!("m{i}");
        let corr = CorrelationId::generate();
        let specs: Vec<JobSpec> = (0..6).map(|s| spec(&corr, &model, s)).collect();
        q.enqueue(&specs, None).await.unwrap();
        let sub = q.subscription(std::slice::from_ref(&model));
        let read = q.read_subscribed(&sub, "w", 2, 100).await.unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(lag_of(q, &model).await, (Some(4), 4), "{path}: before");
        let newest = &read[1];
        let s = newest.spec.clone().unwrap();
        let claim = || async {
            match q.claim(s.job_id, newest, "w").await.unwrap() {
                ClaimOutcome::Claimed { lease, .. } => lease,
                other => panic!("{path}: not claimed: {other:?}"),
            }
        };
        let wait = powerfleet_queue::Wait {
            due_ms: now_ms() + 3_600_000,
            reason: "the model's server is down",
            since_ms: None,
        };
        let queued_after = match path {
            "finish" => {
                let lease = claim().await;
                let done = powerfleet_testkit::result_for(&s)
                    .status(JobStatus::Completed)
                    .build();
                assert!(q.finish(&lease, &done, None).await.unwrap());
                4
            }
            "hand back" => {
                let lease = claim().await;
                assert!(q.hand_back(&lease).await.unwrap());
                5
            }
            "defer" => {
                let lease = claim().await;
                assert_eq!(
                    q.defer(&lease, &wait).await.unwrap(),
                    powerfleet_queue::Deferral::Deferred
                );
                4
            }
            "defer unclaimed" => {
                assert!(q.defer_unclaimed(s.job_id, newest, &wait).await.unwrap());
                4
            }
            "requeue" => {
                assert!(q.requeue(&s, newest, &newest.stream).await.unwrap());
                5
            }
            "dead letter" => {
                q.dead_letter_job_entry(newest, "undecodable")
                    .await
                    .unwrap();
                4
            }
            _ => unreachable!(),
        };
        assert_eq!(
            lag_of(q, &model).await,
            (Some(queued_after), queued_after),
            "{path}: the lag Redis reports after the newest delivered entry left the stream"
        );
        // Reads count on from the true figure.
        assert_eq!(q.read_subscribed(&sub, "w", 1, 100).await.unwrap().len(), 1);
        assert_eq!(
            lag_of(q, &model).await,
            (Some(queued_after - 1), queued_after - 1),
            "{path}: after one more read"
        );
    }
}

#[tokio::test]
async fn every_removal_of_the_newest_delivered_entry_leaves_the_reported_lag_true() {
    let server = server();
    let q = queue(&server, "r8").await;
    removals_of_the_newest_delivered_entry_leave_the_reported_lag_true(&q).await;
}

fn registration(id: &str, names: &[&str], expires_at_ms: u64) -> WorkerRegistration {
    WorkerRegistration {
        worker_id: id.to_string(),
        host: "h".to_string(),
        version: "0".to_string(),
        models: names
            .iter()
            .map(|n| ServedModel {
                name: n.to_string(),
                reference: "toy:tiny".to_string(),
                context_tokens: None,
            })
            .collect(),
        concurrency: 2,
        in_flight: 0,
        started_at_ms: now_ms(),
        last_seen_ms: now_ms(),
        expires_at_ms,
    }
}

#[tokio::test]
async fn registrations_show_who_serves_what_until_they_lapse() {
    let server = server();
    let q = queue(&server, "r6").await;
    let later = now_ms() + 60_000;
    q.register_worker(&registration("a", &["m1", "m2"], later))
        .await
        .unwrap();
    q.register_worker(&registration("b", &["m3"], later))
        .await
        .unwrap();
    q.register_worker(&registration("dead", &["m4"], now_ms() - 1))
        .await
        .unwrap();
    let live = q.live_workers().await.unwrap();
    let ids: Vec<&str> = live.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"], "a lapsed registration is not live");
    assert!(served(&live, "m1") && served(&live, "m3") && served(&live, "toy:pivot"));
    assert!(!served(&live, "m4"));
    assert!(
        !served(&[], "toy:pivot"),
        "nobody runs anything without workers"
    );
    assert_eq!(
        q.served_names().await.unwrap(),
        ["m1", "m2", "m3"].map(String::from).into()
    );
    q.deregister_worker("a").await.unwrap();
    assert!(!served(&q.live_workers().await.unwrap(), "m1"));
    let _ = JobId::new();
}

#[test]
fn a_names_context_is_the_smallest_its_live_workers_know() {
    let later = now_ms() + 60_000;
    let with_context = |id: &str, name: &str, context: Option<u32>| {
        let mut r = registration(id, &[name], later);
        r.models[0].context_tokens = context;
        r
    };
    let live = [
        with_context("a", "m1", Some(4096)),
        with_context("b", "m1", None),
        with_context("c", "m1", Some(2048)),
        with_context("d", "m2", None),
    ];
    assert_eq!(context_tokens(&live, "m1"), Some(2048));
    assert_eq!(context_tokens(&live, "m2"), None, "not probed yet");
    assert_eq!(context_tokens(&live, "m3"), None, "nobody serves it");
    assert_eq!(context_tokens(&live, "toy:pivot"), None, "a reference");
    // Registrations written before the field read as unknown.
    let old = r#"{"name": "m1", "reference": "toy:tiny"}"#;
    let old: ServedModel = serde_json::from_str(old).unwrap();
    assert_eq!(old.context_tokens, None);
}
