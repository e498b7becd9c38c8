//! The worker: reads jobs from the queue, runs their chains, and checkpoints after every block.
//!
//! Workers are stateless: everything a job needs is in Redis (its spec and last checkpoint), and
//! every write is fenced, so any number of workers can come and go. Chains run through the one
//! chain driver (`driver.rs`) on the async runtime; toy models answer inline (microseconds per
//! block), inference servers over HTTP. A job whose model is unavailable goes back to the queue
//! to wait for it, keeping its checkpoint, up to the operator's patience.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerfleet_jobs::{JobResult, JobSpec, JobStatus, Prompt, now_ms};
use powerfleet_queue::{
    ClaimOutcome, Deferral, Delivery, Lease, LeaseState, Progress, Queue, QueueError, Wait,
};
use powerfleet_sampler::{Chain, Checkpoint};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::driver::{self, Called, RetryPolicy, Stop, backoff};
use crate::metrics;
use crate::models::{Backend, ModelRegistry};
use powerfleet_backends::reference::redact_reference;

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This worker's consumer name; unique in the fleet.
    pub consumer: String,
    /// Chains in flight at once.
    pub concurrency: usize,
    /// A job whose lease was not renewed for this long is taken over by another worker.
    pub lease: Duration,
    /// How often leases are renewed (well below `lease`).
    pub heartbeat: Duration,
    /// Claims after which a job goes to the dead-letter stream.
    pub max_deliveries: u32,
    /// Attempts per model request before the job fails.
    pub model_attempts: u32,
    /// First retry delay after a model error; doubles per attempt, with jitter.
    pub retry_backoff: Duration,
    /// How long one read of the jobs stream waits for work.
    pub read_block: Duration,
    /// On shutdown, how long to wait for in-flight chains to reach a safe point.
    pub grace: Duration,
    /// How long a job may wait for its model (every attempt failing as unavailable, on one
    /// claim after another) before it fails with the model's last error.
    pub patience: Duration,
    /// First delay before a job that waits for its model is tried again; doubles per wait,
    /// with jitter, up to `max_wait`.
    pub wait_backoff: Duration,
    /// Longest delay between two tries of a job that waits for its model.
    pub max_wait: Duration,
}

impl WorkerConfig {
    /// Defaults for a worker named `consumer`.
    pub fn new(consumer: String) -> WorkerConfig {
        WorkerConfig {
            consumer,
            concurrency: 4,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            max_deliveries: 5,
            model_attempts: 5,
            retry_backoff: Duration::from_millis(200),
            read_block: Duration::from_millis(1000),
            grace: Duration::from_secs(10),
            patience: Duration::from_secs(2 * 3600),
            wait_backoff: Duration::from_secs(1),
            max_wait: Duration::from_secs(30),
        }
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), WorkerConfigError> {
        if self.concurrency == 0 {
            return Err(WorkerConfigError::NoConcurrency);
        }
        if self.heartbeat >= self.lease {
            return Err(WorkerConfigError::HeartbeatNotShorter {
                heartbeat: self.heartbeat,
                lease: self.lease,
            });
        }
        if self.max_deliveries == 0 {
            return Err(WorkerConfigError::NoDeliveries);
        }
        if self.model_attempts == 0 {
            return Err(WorkerConfigError::NoModelAttempts);
        }
        Ok(())
    }
}

/// Worker settings that contradict each other ([`WorkerConfig::validate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkerConfigError {
    /// `concurrency` is 0.
    #[error("concurrency must be >= 1, got 0")]
    NoConcurrency,
    /// The heartbeat is not shorter than the lease, which would expire between heartbeats.
    #[error(
        "heartbeat ({} ms) must be shorter than the lease ({} ms)",
        .heartbeat.as_millis(),
        .lease.as_millis()
    )]
    HeartbeatNotShorter {
        /// The heartbeat interval.
        heartbeat: Duration,
        /// The lease.
        lease: Duration,
    },
    /// `max_deliveries` is 0.
    #[error("max_deliveries must be >= 1, got 0")]
    NoDeliveries,
    /// `model_attempts` is 0.
    #[error("model_attempts must be >= 1, got 0")]
    NoModelAttempts,
}

/// What a worker did before it stopped.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Jobs completed.
    pub completed: AtomicU64,
    /// Jobs failed.
    pub failed: AtomicU64,
    /// Jobs cancelled.
    pub cancelled: AtomicU64,
    /// Jobs and entries dead-lettered.
    pub dead: AtomicU64,
    /// Jobs handed back on shutdown.
    pub handed_back: AtomicU64,
    /// Jobs abandoned because another worker took them over.
    pub lost: AtomicU64,
    /// Jobs put back to wait for their model (claimed or not).
    pub waited: AtomicU64,
    /// Blocks completed: each one checkpointed, or its chain's result published.
    pub blocks: AtomicU64,
}

/// What every job a worker runs shares: its settings, queue, models, report and stop token.
struct WorkerContext {
    config: WorkerConfig,
    queue: Queue,
    models: Arc<ModelRegistry>,
    stop: CancellationToken,
    report: Arc<WorkerReport>,
}

/// Runs a worker until `shutdown` resolves; then stops reading, brings in-flight chains to a safe
/// point, checkpoints them and hands them back, waiting at most `config.grace`.
pub async fn run(
    config: WorkerConfig,
    queue: Queue,
    models: Arc<ModelRegistry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Arc<WorkerReport> {
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.cancel();
    });
    let report = Arc::new(WorkerReport::default());
    let ctx = Arc::new(WorkerContext {
        config: config.clone(),
        queue,
        models,
        stop: stop.clone(),
        report: report.clone(),
    });
    // Jobs whose wait for their model is over go back to the stream, however busy this worker is.
    let promoter = AbortOnDrop(tokio::spawn(promote_waiting(
        ctx.queue.clone(),
        config.read_block.min(Duration::from_secs(1)),
    )));
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let mut tasks = JoinSet::new();
    let mut last_reclaim: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    info!(consumer = %config.consumer, concurrency = config.concurrency, "worker started");
    while !stop.is_cancelled() {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        while tasks.try_join_next().is_some() {}
        let free = permits.available_permits() + 1;
        let fetched = fetch(&ctx, free, &mut last_reclaim).await;
        match fetched {
            Err(e) => {
                drop(permit);
                failures += 1;
                let delay = backoff(Duration::from_millis(100), failures, Duration::from_secs(5));
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read jobs");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Ok(deliveries) => {
                failures = 0;
                let mut first = Some(permit);
                for delivery in deliveries {
                    let permit = match first.take() {
                        Some(p) => p,
                        None => permits
                            .clone()
                            .try_acquire_owned()
                            .expect("no more entries are read than there are free slots"),
                    };
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        handle(&ctx, delivery).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(promoter);
    info!(
        in_flight = tasks.len(),
        "worker stopping: handing back in-flight jobs"
    );
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.grace, drain).await.is_err() {
        warn!(
            grace_ms = config.grace.as_millis() as u64,
            "grace period over; remaining jobs are reclaimed after their lease expires"
        );
        tasks.abort_all();
    }
    report
}

async fn fetch(
    ctx: &WorkerContext,
    free: usize,
    last_reclaim: &mut Option<tokio::time::Instant>,
) -> Result<Vec<Delivery>, QueueError> {
    let c = &ctx.config;
    let reclaim_every = (c.lease / 2).max(Duration::from_millis(50));
    if last_reclaim.is_none_or(|t| t.elapsed() >= reclaim_every) {
        *last_reclaim = Some(tokio::time::Instant::now());
        let reclaimed = ctx
            .queue
            .reclaim_jobs(&c.consumer, c.lease.as_millis() as u64, free)
            .await?;
        if !reclaimed.is_empty() {
            info!(
                count = reclaimed.len(),
                "reclaimed jobs whose lease expired"
            );
            return Ok(reclaimed);
        }
    }
    let read = ctx
        .queue
        .read_jobs(&c.consumer, free, c.read_block.as_millis() as u64)
        .await?;
    let mut ready = Vec::with_capacity(read.len());
    for delivery in read {
        if !leave_for_down_model(ctx, &delivery).await? {
            ready.push(delivery);
        }
    }
    Ok(ready)
}

/// Moves jobs whose wait is over back to the jobs stream, every `every`.
async fn promote_waiting(queue: Queue, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match queue.promote_due(256).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::add(metrics::JOBS_PROMOTED, n as u64);
                debug!(count = n, "jobs back from waiting for their model");
            }
            Err(e) => debug!(error = %e, "cannot move waiting jobs back yet"),
        }
    }
}

/// While every server of a delivery's model is down, puts the job back to wait without claiming
/// it, so a worker does not drain the queue into failures; returns whether it did.
async fn leave_for_down_model(
    ctx: &WorkerContext,
    delivery: &Delivery,
) -> Result<bool, QueueError> {
    let Ok(spec) = &delivery.spec else {
        return Ok(false);
    };
    let Ok(backend) = ctx.models.resolve(&spec.model) else {
        return Ok(false);
    };
    let Some(down_for) = backend.unavailable_for() else {
        return Ok(false);
    };
    let reason = format!(
        "waiting for model {}: every server is down (its circuit opened after repeated failures)",
        redact_reference(&spec.model)
    );
    // Not sooner than half the longest wait: while a model is down, its jobs should not cycle
    // through the stream every few seconds.
    let delay = down_for.max(ctx.config.max_wait / 2);
    let wait = Wait {
        due_ms: now_ms() + delay.as_millis() as u64,
        reason: &reason,
        since_ms: None,
    };
    // An error here only means the job is claimed as usual.
    let deferred = match ctx
        .queue
        .defer_unclaimed(spec.job_id, &delivery.entry_id, &wait)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, job_id = %spec.job_id, "cannot leave the job to wait; claiming it");
            false
        }
    };
    if deferred {
        metrics::job_waiting(backend.label(), false);
        ctx.report.waited.fetch_add(1, Ordering::Relaxed);
        debug!(job_id = %spec.job_id, "left unclaimed: its model is down");
    }
    Ok(deferred)
}

async fn handle(ctx: &WorkerContext, delivery: Delivery) {
    let span = match &delivery.spec {
        Ok(s) => info_span!("job", job_id = %s.job_id, correlation_id = %s.correlation_id),
        Err(_) => info_span!("job", entry = %delivery.entry_id),
    };
    if let Err(e) = process(ctx, delivery).instrument(span.clone()).await {
        // The entry stays pending; after the lease it is reclaimed and retried.
        span.in_scope(
            || warn!(error = %e, "queue error while processing a job; it will be retried"),
        );
    }
}

/// A claimed job.
struct ClaimedJob {
    lease: Lease,
    spec: JobSpec,
    attempts: u32,
    started_at_ms: u64,
    /// Since when the job has waited for its model, from earlier claims.
    waiting_since_ms: Option<u64>,
    /// How often it waited before.
    waits: u32,
    /// The pin of the backend this claim runs with, once known.
    pin: Option<Value>,
}

impl ClaimedJob {
    fn result(
        &self,
        status: JobStatus,
        chain: Option<&Chain>,
        backend: Option<&Backend>,
        error: Option<String>,
    ) -> JobResult {
        let spec = &self.spec;
        let mut r = JobResult::for_spec(spec, status, self.attempts, error);
        r.stats = chain.map(|c| c.stats().clone()).unwrap_or_default();
        r.started_at_ms = Some(self.started_at_ms);
        r.exactness = backend.map(|b| b.exactness(spec.config.top_k));
        r.pin = self.pin.clone();
        if status == JobStatus::Completed
            && let Some(out) = chain.and_then(Chain::output)
        {
            r.tokens = out.tokens;
            r.log_p = Some(out.log_p);
            r.ends_with_eos = out.ends_with_eos;
            r.stats = out.stats;
        }
        r
    }
}

/// A chain checkpoint as the worker stores it: with the pin of the backend whose answers its log q
/// came from. Checkpoints written before pins existed are bare chain checkpoints and still load.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinnedCheckpoint {
    /// Format version of this envelope.
    pinned: u32,
    /// What the chain's log q depends on (see [`Backend::prepare`]).
    pin: Value,
    /// The chain's own checkpoint.
    chain: Checkpoint,
}

impl PinnedCheckpoint {
    fn encode(chain: &Chain, pin: &Value) -> Vec<u8> {
        serde_json::to_vec(&PinnedCheckpoint {
            pinned: 1,
            pin: pin.clone(),
            chain: chain.checkpoint(),
        })
        .expect("a checkpoint serializes")
    }

    /// The chain and, unless the checkpoint predates pins, its pin.
    fn decode(bytes: &[u8]) -> Result<(Chain, Option<Value>), String> {
        match serde_json::from_slice::<PinnedCheckpoint>(bytes) {
            Ok(p) => {
                let chain = Chain::from_checkpoint(p.chain).map_err(|e| e.to_string())?;
                Ok((chain, Some(p.pin)))
            }
            Err(_) => Checkpoint::from_json(bytes)
                .and_then(Chain::from_checkpoint)
                .map(|c| (c, None))
                .map_err(|e| e.to_string()),
        }
    }
}

/// The fields in which two pins differ, as "field: checkpoint X, this worker Y".
fn pin_differences(stored: &Value, mine: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        stored.as_object().unwrap_or(&empty),
        mine.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("none".to_string(), Value::to_string);
            format!(
                "{k}: checkpoint {}, this worker {}",
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect()
}

async fn finish(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    result: JobResult,
    dead_reason: Option<&str>,
) -> Result<(), QueueError> {
    let status = result.status;
    if ctx.queue.finish(&run.lease, &result, dead_reason).await? {
        metrics::job_finished(status.as_str());
        if status == JobStatus::Dead {
            metrics::add(metrics::JOBS_DEAD_LETTERED, 1);
        }
        let counter = match status {
            JobStatus::Completed => &ctx.report.completed,
            JobStatus::Failed => &ctx.report.failed,
            JobStatus::Cancelled => &ctx.report.cancelled,
            _ => &ctx.report.dead,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        info!(status = %status, error = result.error.as_deref().unwrap_or(""), "job finished");
    } else {
        ctx.report.lost.fetch_add(1, Ordering::Relaxed);
        info!("lease lost before the result was published; another worker owns the job");
    }
    Ok(())
}

/// Gives the job back to the queue at once (shutdown). A hand-back is never a delivery.
async fn hand_back(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    progress: Option<&Progress>,
) -> Result<(), QueueError> {
    if ctx.queue.hand_back(&run.lease).await? {
        ctx.report.handed_back.fetch_add(1, Ordering::Relaxed);
        metrics::add(metrics::JOBS_HANDED_BACK, 1);
        info!(
            block_idx = progress.map(|p| p.block_idx),
            step_idx = progress.map(|p| p.step_idx),
            "handed back"
        );
    }
    Ok(())
}

/// The job's model is unavailable: put it back to wait (keeping its checkpoint, without counting
/// a delivery), or fail it once it has waited longer than the operator's patience.
/// `progressed` says whether this claim got any answer from the model, which ends an earlier
/// wait.
async fn wait_for_model(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    backend: &Backend,
    chain: Option<&Chain>,
    progressed: bool,
    why: &str,
) -> Result<(), QueueError> {
    let now = now_ms();
    let since = if progressed {
        now
    } else {
        run.waiting_since_ms.unwrap_or(now)
    };
    let waited = Duration::from_millis(now.saturating_sub(since));
    let patience = ctx.config.patience;
    if waited >= patience {
        let error = format!(
            "model {} unavailable for {} s, longer than the worker's --model-patience of {} s: {why}",
            redact_reference(&run.spec.model),
            waited.as_secs(),
            patience.as_secs()
        );
        let r = run.result(JobStatus::Failed, chain, Some(backend), Some(error));
        return finish(ctx, run, r, None).await;
    }
    let mut delay = backoff(ctx.config.wait_backoff, run.waits + 1, ctx.config.max_wait);
    if let Some(down) = backend.unavailable_for() {
        delay = delay.max(down);
    }
    // Never wait past the patience: the job fails at the first try after it.
    delay = delay.min(patience - waited + Duration::from_millis(10));
    let reason = format!(
        "waiting for model {} (unavailable for {} s; patience {} s): {why}",
        redact_reference(&run.spec.model),
        waited.as_secs(),
        patience.as_secs()
    );
    let wait = Wait {
        due_ms: now + delay.as_millis() as u64,
        reason: &reason,
        since_ms: Some(since),
    };
    match ctx.queue.defer(&run.lease, &wait).await? {
        Deferral::Deferred => {
            metrics::job_waiting(backend.label(), true);
            ctx.report.waited.fetch_add(1, Ordering::Relaxed);
            info!(retry_in_ms = delay.as_millis() as u64, reason = %why, "waiting for the model");
        }
        Deferral::CancelRequested => {
            let r = run.result(
                JobStatus::Cancelled,
                chain,
                Some(backend),
                Some("cancelled".into()),
            );
            return finish(ctx, run, r, None).await;
        }
        Deferral::Lost => {
            ctx.report.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// How a claimed job settles a model call that did not succeed.
async fn settle(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    backend: &Backend,
    chain: Option<&Chain>,
    progressed: bool,
    outcome: Called<()>,
) -> Result<(), QueueError> {
    match outcome {
        Called::Done(()) => Ok(()),
        Called::Failed(e) => {
            let r = run.result(JobStatus::Failed, chain, Some(backend), Some(e));
            finish(ctx, run, r, None).await
        }
        Called::Waiting(why) => wait_for_model(ctx, run, backend, chain, progressed, &why).await,
        Called::Interrupted => {
            if shared.lost.load(Ordering::Relaxed) {
                lease_gone(ctx, run, shared).await
            } else if shared.cancel.load(Ordering::Relaxed) {
                let r = run.result(
                    JobStatus::Cancelled,
                    chain,
                    Some(backend),
                    Some("cancelled".into()),
                );
                finish(ctx, run, r, None).await
            } else {
                hand_back(ctx, run, None).await
            }
        }
    }
}

/// `called` without its value, for [`settle`].
fn unit<T>(called: &Called<T>) -> Called<()> {
    match called {
        Called::Done(_) => Called::Done(()),
        Called::Interrupted => Called::Interrupted,
        Called::Waiting(m) => Called::Waiting(m.clone()),
        Called::Failed(m) => Called::Failed(m.clone()),
    }
}

async fn process(ctx: &WorkerContext, delivery: Delivery) -> Result<(), QueueError> {
    let spec = match &delivery.spec {
        Ok(spec) => spec.clone(),
        Err(reason) => {
            warn!(reason = %reason, "undecodable job entry moved to the dead-letter stream");
            ctx.queue.dead_letter_job_entry(&delivery, reason).await?;
            ctx.report.dead.fetch_add(1, Ordering::Relaxed);
            metrics::add(metrics::JOBS_DEAD_LETTERED, 1);
            return Ok(());
        }
    };
    let consumer = &ctx.config.consumer;
    let claimed = ctx
        .queue
        .claim(spec.job_id, &delivery.entry_id, consumer)
        .await?;
    let (run, cancel, checkpoint) = match claimed {
        ClaimOutcome::Claimed {
            lease,
            deliveries,
            cancel_requested,
            checkpoint,
            started_at_ms,
            waiting_since_ms,
            waits,
        } => (
            ClaimedJob {
                lease,
                spec,
                attempts: deliveries,
                started_at_ms,
                waiting_since_ms,
                waits,
                pin: None,
            },
            cancel_requested,
            checkpoint,
        ),
        ClaimOutcome::Missing => {
            let reason = format!("no state for job {} in this namespace", spec.job_id);
            ctx.queue.dead_letter_job_entry(&delivery, &reason).await?;
            ctx.report.dead.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        ClaimOutcome::AlreadyFinal(_) | ClaimOutcome::Stale => return Ok(()),
    };
    metrics::add(metrics::JOBS_STARTED, 1);
    // The lease is renewed from the claim on, whatever the job does next (tokenizing, a hosted
    // call, the chain); the guard stops the renewals when this function returns or unwinds. The
    // job's interrupt fires on shutdown, on a cancellation request and when the lease is lost,
    // and abandons any model request in flight.
    let shared = Arc::new(JobSignals {
        interrupt: ctx.stop.child_token(),
        ..JobSignals::default()
    });
    let _keeper = AbortOnDrop(tokio::spawn(keep_lease(
        ctx.queue.clone(),
        run.lease.clone(),
        shared.clone(),
        ctx.config.heartbeat,
    )));
    if ctx.stop.is_cancelled() {
        return hand_back(ctx, &run, None).await;
    }
    let max = ctx.config.max_deliveries;
    if run.attempts > max {
        let reason = format!(
            "delivered {} times, more than the limit of {max}; the job keeps killing or stalling its workers",
            run.attempts
        );
        let r = run.result(JobStatus::Dead, None, None, Some(reason.clone()));
        return finish(ctx, &run, r, Some(&reason)).await;
    }
    if cancel {
        let r = run.result(JobStatus::Cancelled, None, None, Some("cancelled".into()));
        return finish(ctx, &run, r, None).await;
    }
    let config = match run.spec.validate() {
        Ok(c) => c,
        Err(e) => {
            let r = run.result(
                JobStatus::Failed,
                None,
                None,
                Some(format!("invalid job: {e}")),
            );
            return finish(ctx, &run, r, None).await;
        }
    };
    let backend = match ctx.models.resolve(&run.spec.model) {
        Ok(b) => b,
        Err(e) => {
            let r = run.result(JobStatus::Failed, None, None, Some(format!("model: {e}")));
            return finish(ctx, &run, r, None).await;
        }
    };
    if let Backend::Hosted { model } = &backend {
        return hosted_sample(ctx, &run, &shared, model, &config, &backend).await;
    }
    let policy = ctx.config.retry_policy();
    let interrupt = &shared.interrupt;
    let (prompt, chat) = (&run.spec.prompt, run.spec.chat);
    let tokenized = driver::call(&backend, policy, interrupt, || {
        backend.tokenize(prompt, chat)
    })
    .await;
    let Called::Done(prompt) = tokenized else {
        return settle(ctx, &run, &shared, &backend, None, false, unit(&tokenized)).await;
    };
    let prepared = driver::call(&backend, policy, interrupt, || {
        backend.prepare(&config, prompt.len())
    })
    .await;
    let Called::Done(pin) = prepared else {
        return settle(ctx, &run, &shared, &backend, None, false, unit(&prepared)).await;
    };
    let mut run = run;
    run.pin = Some(pin.clone());
    let fresh = || Chain::new(config.clone(), &prompt, run.spec.seed, run.spec.stream);
    let chain = match checkpoint.as_deref().map(PinnedCheckpoint::decode) {
        None => fresh(),
        Some(Ok((c, stored_pin))) if c.config() == &config => {
            // First the pin: a checkpoint of another backend is another worker's to resume,
            // not this one's to judge (its tokens may be outside this backend's vocabulary).
            if let Some(stored) = stored_pin.filter(|p| *p != pin) {
                // The stored log q came from another proposal: resuming would mix two proposals
                // in one acceptance ratio. Another worker (the old mapping, during a rolling
                // deploy) may resume it; this one waits, and says why.
                let why = format!(
                    "this worker's model {} is not the backend the checkpoint was made with ({}); resume it on a worker that maps the name as before, or cancel the job",
                    redact_reference(&run.spec.model),
                    pin_differences(&stored, &pin).join("; ")
                );
                warn!(reason = %why, "refusing to resume a checkpoint pinned to another backend");
                return wait_for_model(ctx, &run, &backend, None, false, &why).await;
            }
            match fits_the_job(&c, &prompt, &backend) {
                Ok(()) => {
                    info!(
                        block_idx = c.position().block_idx,
                        "resuming from checkpoint"
                    );
                    c
                }
                Err(e) => {
                    warn!(error = %e, "checkpoint does not fit the job; starting over");
                    fresh()
                }
            }
        }
        Some(Ok(_)) => {
            warn!("checkpoint was written for another configuration; starting over");
            fresh()
        }
        Some(Err(e)) => {
            warn!(error = %e, "checkpoint unusable; starting over");
            fresh()
        }
    };
    drive(ctx, &run, chain, &backend, &shared).await
}

/// Whether a decoded checkpoint belongs to this job: the same prompt, and (for toy models, whose
/// vocabulary is known) only tokens of the model's vocabulary. A checkpoint that does not is
/// discarded with the reason, and the chain starts over from its seed.
fn fits_the_job(
    chain: &Chain,
    prompt: &[powerfleet_sampler::TokenId],
    backend: &Backend,
) -> Result<(), String> {
    if chain.prompt() != prompt {
        return Err(format!(
            "the checkpoint continues another prompt ({} tokens, the job's has {})",
            chain.prompt().len(),
            prompt.len()
        ));
    }
    let mut toy = backend;
    while let Backend::Faulty { inner, .. } = toy {
        toy = inner;
    }
    if let Backend::Toy { model, .. } = toy {
        model
            .check_tokens(chain.completion())
            .map_err(|e| format!("the checkpoint's completion: {e}"))?;
    }
    Ok(())
}

/// A job on a hosted chat API: one sample at the method's temperature. MCMC methods run this way
/// only with the job's explicit fallback option, and the result says so.
async fn hosted_sample(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    model: &powerfleet_backends::HostedModel,
    config: &powerfleet_sampler::ValidConfig,
    backend: &Backend,
) -> Result<(), QueueError> {
    let spec = &run.spec;
    let fail = |e: String| run.result(JobStatus::Failed, None, Some(backend), Some(e));
    let fallback = match (config.method().is_mcmc(), spec.fallback_single_sample) {
        (false, _) => None,
        (true, true) => Some(format!(
            "ran as one sample at the proposal temperature {}: {}",
            config.temperature(),
            powerfleet_backends::HOSTED_CHAT_REFUSAL
        )),
        (true, false) => {
            let r = fail(powerfleet_backends::HOSTED_CHAT_REFUSAL.to_string());
            return finish(ctx, run, r, None).await;
        }
    };
    let Prompt::Text(prompt) = &spec.prompt else {
        let r = fail("hosted chat APIs take text prompts, not token ids".to_string());
        return finish(ctx, run, r, None).await;
    };
    let sampled = driver::call(
        backend,
        ctx.config.retry_policy(),
        &shared.interrupt,
        || {
            model.sample(
                prompt,
                config.temperature(),
                config.max_new_tokens(),
                spec.seed ^ spec.stream,
            )
        },
    )
    .await;
    match sampled {
        Called::Done(text) => {
            let mut r = run.result(JobStatus::Completed, None, Some(backend), None);
            r.text = Some(text);
            r.fallback = fallback;
            finish(ctx, run, r, None).await
        }
        Called::Failed(e) => {
            let r = fail(format!("the API refused the request: {e}"));
            finish(ctx, run, r, None).await
        }
        other => settle(ctx, run, shared, backend, None, false, unit(&other)).await,
    }
}

/// Signals between a job's driver and its lease keeper: progress one way; cancellation, a lost
/// lease, a vanished state and the interrupt the other.
#[derive(Default)]
struct JobSignals {
    progress: Mutex<Progress>,
    cancel: AtomicBool,
    lost: AtomicBool,
    /// The job's state vanished from Redis (set with `lost`).
    vanished: AtomicBool,
    /// Fires on shutdown (a child of the worker's stop token), cancellation and a lost lease.
    interrupt: CancellationToken,
}

fn progress_of(chain: &Chain) -> Progress {
    let p = chain.position();
    let s = chain.stats();
    Progress {
        block_idx: p.block_idx,
        n_blocks: p.n_blocks,
        step_idx: p.step_idx,
        n_mcmc: p.n_mcmc,
        proposals: s.proposals,
        acceptances: s.acceptances,
        tokens_generated: s.tokens_generated,
    }
}

async fn keep_lease(queue: Queue, lease: Lease, shared: Arc<JobSignals>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let progress = shared.progress.lock().expect("progress").clone();
        match queue.heartbeat(&lease, &progress).await {
            Ok(LeaseState::Owned { cancel }) => {
                if cancel {
                    shared.cancel.store(true, Ordering::Relaxed);
                    shared.interrupt.cancel();
                }
            }
            Ok(state @ (LeaseState::Lost | LeaseState::Vanished)) => {
                shared
                    .vanished
                    .store(state == LeaseState::Vanished, Ordering::Relaxed);
                shared.lost.store(true, Ordering::Relaxed);
                shared.interrupt.cancel();
                return;
            }
            Err(e) => warn!(error = %e, "heartbeat failed; retrying"),
        }
    }
}

/// Aborts a task when dropped, so a background task never outlives its job.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn drive(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    chain: Chain,
    backend: &Backend,
    shared: &JobSignals,
) -> Result<(), QueueError> {
    *shared.progress.lock().expect("progress") = progress_of(&chain);
    metrics::chains_in_flight(1.0);
    let outcome = drive_inner(ctx, run, chain, backend, shared).await;
    metrics::chains_in_flight(-1.0);
    outcome
}

async fn drive_inner(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    mut chain: Chain,
    backend: &Backend,
    shared: &JobSignals,
) -> Result<(), QueueError> {
    let policy = ctx.config.retry_policy();
    let label = backend.label();
    let pin = run.pin.clone().unwrap_or(Value::Null);
    let affinity = run.spec.job_id.0.as_u64_pair().1;
    let calls_at_claim = chain.stats().model_calls;
    // The chain's state as last stored (or as Chain::new makes it again): a checkpoint is written
    // only when the chain has moved on since, so one that records no progress never resets the
    // job's wait.
    let mut stored_calls = calls_at_claim;
    let mut counted = chain.stats().clone();
    loop {
        let block_started = std::time::Instant::now();
        let boundary = driver::run_block(
            &mut chain,
            backend,
            affinity,
            policy,
            &shared.interrupt,
            |c| *shared.progress.lock().expect("progress") = progress_of(c),
        )
        .await;
        if matches!(boundary, Called::Done(_)) {
            metrics::observe_backend(metrics::BLOCK_DURATION, label, block_started.elapsed());
        }
        let now = chain.stats();
        metrics::add(metrics::PROPOSALS, now.proposals - counted.proposals);
        metrics::add(metrics::ACCEPTANCES, now.acceptances - counted.acceptances);
        metrics::add(
            metrics::TOKENS_GENERATED,
            now.tokens_generated - counted.tokens_generated,
        );
        counted = now.clone();
        if shared.lost.load(Ordering::Relaxed) {
            return lease_gone(ctx, run, shared).await;
        }
        let progressed = chain.stats().model_calls > calls_at_claim;
        match boundary {
            Called::Done(Stop::Finished) => {
                return complete(ctx, run, shared, &chain, backend, &pin, progressed).await;
            }
            Called::Failed(e) => {
                let r = run.result(JobStatus::Failed, Some(&chain), Some(backend), Some(e));
                return finish(ctx, run, r, None).await;
            }
            Called::Done(Stop::BlockDone) | Called::Interrupted | Called::Waiting(_) => {}
        }
        // A checkpoint at a step boundary: the chain as of its last accepted answer.
        let progress = progress_of(&chain);
        if chain.stats().model_calls > stored_calls {
            if !store_checkpoint(ctx, run, shared, &chain, &pin).await? {
                return Ok(());
            }
            stored_calls = chain.stats().model_calls;
        }
        if matches!(boundary, Called::Done(Stop::BlockDone)) {
            ctx.report.blocks.fetch_add(1, Ordering::Relaxed);
            metrics::add(metrics::BLOCKS, 1);
            debug!(block_idx = progress.block_idx, "block checkpointed");
        }
        if shared.cancel.load(Ordering::Relaxed) {
            let r = run.result(
                JobStatus::Cancelled,
                Some(&chain),
                Some(backend),
                Some("cancelled".into()),
            );
            return finish(ctx, run, r, None).await;
        }
        if let Called::Waiting(why) = &boundary {
            return wait_for_model(ctx, run, backend, Some(&chain), progressed, why).await;
        }
        if ctx.stop.is_cancelled() {
            return hand_back(ctx, run, Some(&progress)).await;
        }
    }
}

/// Stops working on a job whose lease is gone. When another claim took it, that claim carries
/// on; when the job's state vanished from Redis, its entry is dead-lettered at once.
async fn lease_gone(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
) -> Result<(), QueueError> {
    ctx.report.lost.fetch_add(1, Ordering::Relaxed);
    if shared.vanished.load(Ordering::Relaxed) {
        warn!("the job's state vanished from Redis while it ran; dead-lettering its entry");
        ctx.queue
            .dead_letter_vanished(&run.lease, &run.spec)
            .await?;
        ctx.report.dead.fetch_add(1, Ordering::Relaxed);
        metrics::add(metrics::JOBS_DEAD_LETTERED, 1);
    } else {
        info!("lease lost; another worker owns the job now");
    }
    Ok(())
}

/// Stores the chain's checkpoint with its pin; false when the lease was lost.
async fn store_checkpoint(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    chain: &Chain,
    pin: &Value,
) -> Result<bool, QueueError> {
    let progress = progress_of(chain);
    let bytes = PinnedCheckpoint::encode(chain, pin);
    let write_started = std::time::Instant::now();
    let written = ctx.queue.checkpoint(&run.lease, &progress, &bytes).await?;
    metrics::checkpoint_written(write_started.elapsed(), bytes.len());
    match written {
        LeaseState::Lost | LeaseState::Vanished => {
            shared
                .vanished
                .store(written == LeaseState::Vanished, Ordering::Relaxed);
            shared.lost.store(true, Ordering::Relaxed);
            lease_gone(ctx, run, shared).await?;
            Ok(false)
        }
        LeaseState::Owned { cancel } => {
            if cancel {
                shared.cancel.store(true, Ordering::Relaxed);
            }
            Ok(true)
        }
    }
}

/// Publishes a finished chain's result with its text. The text comes from the model's own
/// tokenizer, retried like any model call; when the server refuses it, the result is stored
/// without text and ungraded, with the reason, never graded as empty.
async fn complete(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    chain: &Chain,
    backend: &Backend,
    pin: &Value,
    progressed: bool,
) -> Result<(), QueueError> {
    if progressed {
        ctx.report.blocks.fetch_add(1, Ordering::Relaxed);
        metrics::add(metrics::BLOCKS, 1);
    }
    let mut r = run.result(JobStatus::Completed, Some(chain), Some(backend), None);
    let tokens = r.tokens.clone();
    let text = driver::call(
        backend,
        ctx.config.retry_policy(),
        &shared.interrupt,
        || backend.detokenize(&tokens),
    )
    .await;
    match text {
        Called::Done(t) => r.text = Some(t),
        Called::Failed(e) => {
            warn!(error = %e, "the server refused to detokenize the completion; stored without text, ungraded");
            r.text_error = Some(e);
        }
        waiting_or_interrupted => {
            // Keep the finished chain so that the next claim only has to detokenize.
            if progressed && !store_checkpoint(ctx, run, shared, chain, pin).await? {
                return Ok(());
            }
            let outcome = unit(&waiting_or_interrupted);
            return settle(ctx, run, shared, backend, Some(chain), progressed, outcome).await;
        }
    }
    finish(ctx, run, r, None).await
}

impl WorkerConfig {
    /// The retry policy of model calls.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.model_attempts,
            backoff: self.retry_backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerfleet_backends::BackendError;

    #[tokio::test]
    async fn a_toy_job_with_chat_fails_with_the_reason() {
        let toy = crate::models::load("toy:tiny").unwrap();
        for prompt in [Prompt::Text(String::new()), Prompt::Tokens(Vec::new())] {
            assert_eq!(
                toy.tokenize(&prompt, true).await.unwrap_err(),
                BackendError::Rejected(crate::models::TOY_CHAT_REFUSAL.to_string())
            );
            assert_eq!(toy.tokenize(&prompt, false).await, Ok(vec![]));
        }
    }

    #[tokio::test]
    async fn chat_with_a_token_id_prompt_on_a_server_fails_without_a_request() {
        // Nothing listens on port 9: any request would fail as an unavailable server.
        let server = crate::models::load("llamacpp+http://127.0.0.1:9").unwrap();
        let err = server
            .tokenize(&Prompt::Tokens(vec![1, 2]), true)
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(
            err.message()
                .contains("token-id prompts cannot be formatted"),
            "{err}"
        );
        let err = server
            .tokenize(&Prompt::Text("hi".into()), true)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(
            err.message()
                .starts_with("formatting the prompt through the server's chat template: "),
            "{err}"
        );
        assert!(err.message().contains("/apply-template"), "{err}");
    }

    #[test]
    fn config_checks_heartbeat_against_lease() {
        let mut c = WorkerConfig::new("w".into());
        assert!(c.validate().is_ok());
        c.heartbeat = c.lease;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("shorter than the lease")
        );
        c = WorkerConfig::new("w".into());
        c.concurrency = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_checkpoint_of_another_prompt_or_vocabulary_does_not_fit_the_job() {
        use powerfleet_sampler::LanguageModel;
        let pivot = crate::models::load("toy:pivot").unwrap();
        let tiny = crate::models::load("toy:tiny").unwrap();
        let Backend::Toy { model, .. } = &pivot else {
            panic!()
        };
        let config = powerfleet_sampler::SamplerConfig::new(powerfleet_sampler::Method::Power)
            .validate()
            .unwrap();
        // A chain on toy:pivot (10 tokens) whose first block uses a token beyond toy:tiny's 3.
        let chain = (0..100)
            .map(|seed| {
                let mut chain = Chain::new(config.clone(), &[0], seed, 0);
                while let Some(r) = chain.request().map(|r| r.to_owned()) {
                    let g = model.generate(&r.as_request()).unwrap();
                    if chain.advance(g).unwrap().block_finished.is_some() {
                        break;
                    }
                }
                chain
            })
            .find(|c| c.completion().iter().any(|t| *t >= 3))
            .expect("some seed samples a token beyond toy:tiny's vocabulary");
        assert_eq!(fits_the_job(&chain, &[0], &pivot), Ok(()));
        let err = fits_the_job(&chain, &[1], &pivot).unwrap_err();
        assert!(err.contains("another prompt"), "{err}");
        let err = fits_the_job(&chain, &[0], &tiny).unwrap_err();
        assert!(err.contains("the checkpoint's completion"), "{err}");
    }

    #[test]
    fn a_pinned_checkpoint_round_trips_and_bare_ones_still_load() {
        let config = powerfleet_sampler::SamplerConfig::new(powerfleet_sampler::Method::Power)
            .validate()
            .unwrap();
        let chain = Chain::new(config, &[1, 2], 3, 4);
        let pin = serde_json::json!({"kind": "vllm", "model": "m", "k": 20});
        let (back, stored) =
            PinnedCheckpoint::decode(&PinnedCheckpoint::encode(&chain, &pin)).unwrap();
        assert_eq!((back, stored), (chain.clone(), Some(pin.clone())));
        let (bare, none) = PinnedCheckpoint::decode(&chain.checkpoint().to_json()).unwrap();
        assert_eq!((bare, none), (chain, None));
        assert!(PinnedCheckpoint::decode(b"{}").is_err());
        let other = serde_json::json!({"kind": "vllm", "model": "m", "k": 64});
        assert_eq!(
            pin_differences(&pin, &other),
            vec!["k: checkpoint 20, this worker 64".to_string()]
        );
    }
}
