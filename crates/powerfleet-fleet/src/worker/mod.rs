//! The worker: reads jobs from the queue, runs their chains, and checkpoints after every block.
//!
//! Workers are stateless: everything a job needs is in Redis (its spec and last checkpoint), and
//! every write is fenced, so any number of workers can come and go. Chains run through the one
//! chain driver (`driver.rs`) on the async runtime; toy models answer inline (microseconds per
//! block), inference servers over HTTP. A job whose model is unavailable goes back to the queue
//! to wait for it, keeping its checkpoint, up to the operator's patience.
//!
//! This module reads and dispatches jobs; a claimed job's life is in `claim` (from the claim to
//! its chain), `chain` (block by block, checkpointed), `lease` (the lease keeper and its signals)
//! and `settle` (how it ends or waits). What they do at each turn (after the claim, which
//! checkpoint to resume, after a block, after a failed call, how long to wait) is decided by the
//! pure functions of `decide`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerfleet_jobs::{JobResult, JobSpec, JobStatus, ModelRoute, Pin, Prompt, PromptRef, now_ms};
use powerfleet_queue::{
    ClaimOutcome, Deferral, Delivery, Lease, LeaseState, Progress, Queue, QueueError, Subscription,
    Wait, WorkerRegistration,
};
use powerfleet_sampler::{Chain, Checkpoint};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::backoff::Backoff;
use crate::driver::{self, Called, RetryPolicy, Stop};
use crate::metrics;
use crate::models::{Backend, ModelRegistry};
use powerfleet_backends::reference::redact_reference;

mod chain;
mod claim;
mod decide;
mod lease;
mod settle;

use chain::*;
use claim::*;
use decide::*;
use lease::*;
use settle::*;

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
    /// Run chains only on backends that answer the same request the same way every time: the
    /// binary checks the mapped models' servers before the worker starts
    /// ([`ModelRegistry::require_deterministic`]); a job naming a server reference that is not
    /// deterministic, or a hosted API, waits for another worker, as for an unavailable model.
    pub require_deterministic: bool,
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
            require_deterministic: false,
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
    /// The jobs streams it reads: the shared one and each mapped model name's.
    subscription: Subscription,
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
    let subscription = queue.subscription(&models.names());
    let ctx = Arc::new(WorkerContext {
        config: config.clone(),
        queue,
        subscription,
        models,
        stop: stop.clone(),
        report: report.clone(),
    });
    // Until the servers of each model name have answered the start-up probe, the name is not
    // ready (`/readyz` says why), and the probe is tried again; its jobs wait as for any outage.
    let server_checks = {
        let (models, stop) = (ctx.models.clone(), stop.clone());
        AbortOnDrop(tokio::spawn(
            async move { models.check_servers(&stop).await },
        ))
    };
    // Jobs whose wait for their model is over go back to the stream, however busy this worker is.
    let promoter = AbortOnDrop(tokio::spawn(promote_waiting(
        ctx.queue.clone(),
        config.read_block.min(Duration::from_secs(1)),
    )));
    let permits = Arc::new(Semaphore::new(config.concurrency));
    // Jobs being run: the permits the tasks hold, not the one the loop holds while it reads.
    let running = Arc::new(AtomicUsize::new(0));
    // Its registration, renewed every heartbeat, tells the fleet who serves what; the first is
    // written before the worker says it started.
    let registrar = Registrar::new(&ctx);
    if let Err(e) = ctx.queue.register_worker(&registrar.now(&running)).await {
        warn!(error = %e, "cannot register the worker yet; it keeps trying");
    }
    let registrar = AbortOnDrop(tokio::spawn(registrar.keep(ctx.clone(), running.clone())));
    let mut tasks = JoinSet::new();
    let mut last_reclaim: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    info!(
        consumer = %config.consumer,
        concurrency = config.concurrency,
        models = %ctx.subscription.names().join(","),
        "worker started"
    );
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
                let delay = Backoff::READ_JOBS.delay(failures);
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
                    let running = Running::start(&running);
                    tasks.spawn(async move {
                        handle(&ctx, delivery).await;
                        drop(running);
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(promoter);
    drop(registrar);
    drop(server_checks);
    if let Err(e) = ctx.queue.deregister_worker(&config.consumer).await {
        debug!(error = %e, "cannot remove the registration; it lapses by itself");
    }
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
            .reclaim_subscribed(
                &ctx.subscription,
                &c.consumer,
                c.lease.as_millis() as u64,
                free,
            )
            .await?;
        if !reclaimed.is_empty() {
            info!(
                count = reclaimed.len(),
                "reclaimed jobs whose lease expired"
            );
            let mut ready = Vec::with_capacity(reclaimed.len());
            for delivery in reclaimed {
                if !pass_on_reclaimed(ctx, &delivery).await? {
                    ready.push(delivery);
                }
            }
            return Ok(ready);
        }
    }
    let read = ctx
        .queue
        .read_subscribed(
            &ctx.subscription,
            &c.consumer,
            free,
            c.read_block.as_millis() as u64,
        )
        .await?;
    let mut ready = Vec::with_capacity(read.len());
    for delivery in read {
        if !route_elsewhere(ctx, &delivery).await? && !leave_for_down_model(ctx, &delivery).await? {
            ready.push(delivery);
        }
    }
    Ok(ready)
}

/// A job of the shared stream whose model is a name this worker does not map (enqueued before
/// jobs were routed by model name) moves to its name's stream, unclaimed, for the workers that
/// map it; returns whether it did.
async fn route_elsewhere(ctx: &WorkerContext, delivery: &Delivery) -> Result<bool, QueueError> {
    let Ok(spec) = &delivery.spec else {
        return Ok(false);
    };
    let ModelRoute::Name(name) = ModelRoute::of(&spec.model) else {
        return Ok(false);
    };
    if ctx.subscription.serves_name(name) || delivery.stream != ctx.queue.keys().jobs() {
        return Ok(false);
    }
    let to = ctx.queue.keys().model_jobs(name);
    let moved = ctx.queue.requeue(spec, delivery, &to).await?;
    info!(job_id = %spec.job_id, model = name, moved, "job moved to its model name's stream");
    Ok(true)
}

/// The shared-stream job of a model name this worker does not map (the old layout), taken over
/// after its owner died: running, so it cannot simply move. The worker claims it and hands it
/// back at once to the name's stream (a hand-back is not a delivery; the checkpoint stays), and
/// never runs or fails it; returns whether it did so.
async fn pass_on_reclaimed(ctx: &WorkerContext, delivery: &Delivery) -> Result<bool, QueueError> {
    let Ok(spec) = &delivery.spec else {
        return Ok(false);
    };
    let Some(name) = unmapped_name(ctx, delivery, spec) else {
        return Ok(false);
    };
    // Finished, stale or gone: the claim acknowledged the entry, and there is nothing to pass on.
    if let ClaimOutcome::Claimed { lease, .. } = ctx
        .queue
        .claim(spec.job_id, delivery, &ctx.config.consumer)
        .await?
    {
        let moved = ctx.queue.hand_back_to(&lease, Some(name)).await?;
        info!(job_id = %spec.job_id, model = name, moved, "taken-over job passed on to its model name's stream");
    }
    Ok(true)
}

/// The model name of a shared-stream delivery's job that this worker does not map, if it is one.
fn unmapped_name<'a>(
    ctx: &WorkerContext,
    delivery: &Delivery,
    spec: &'a JobSpec,
) -> Option<&'a str> {
    match ModelRoute::of(&spec.model) {
        ModelRoute::Name(name)
            if !ctx.subscription.serves_name(name)
                && delivery.stream == ctx.queue.keys().jobs() =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// What a worker's registration says, and how often it is renewed.
struct Registrar {
    worker_id: String,
    host: String,
    models: Vec<powerfleet_queue::ServedModel>,
    concurrency: usize,
    started_at_ms: u64,
    every: Duration,
    ttl: Duration,
}

impl Registrar {
    fn new(ctx: &WorkerContext) -> Registrar {
        let c = &ctx.config;
        Registrar {
            worker_id: c.consumer.clone(),
            host: std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown".to_string()),
            models: ctx.models.served(),
            concurrency: c.concurrency,
            started_at_ms: now_ms(),
            every: c.heartbeat,
            // Three heartbeats, and never under 10 s: a renewal late on a busy machine does not
            // make a live worker look dead.
            ttl: (c.heartbeat * 3).max(REGISTRATION_MIN_TTL),
        }
    }

    /// The registration as of now, with `running` jobs.
    fn now(&self, running: &AtomicUsize) -> WorkerRegistration {
        let now = now_ms();
        WorkerRegistration {
            worker_id: self.worker_id.clone(),
            host: self.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            models: self.models.clone(),
            concurrency: self.concurrency,
            in_flight: running.load(Ordering::Relaxed),
            started_at_ms: self.started_at_ms,
            last_seen_ms: now,
            expires_at_ms: now + self.ttl.as_millis() as u64,
        }
    }

    /// Renews the registration every heartbeat, with the jobs the worker runs and the context
    /// of each model whose servers it has probed since.
    async fn keep(mut self, ctx: Arc<WorkerContext>, running: Arc<AtomicUsize>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.models = ctx.models.served();
            if let Err(e) = ctx.queue.register_worker(&self.now(&running)).await {
                debug!(error = %e, "cannot renew the registration yet");
            }
        }
    }
}

/// One job being run, counted in a worker's registration for as long as it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Running {
        count.fetch_add(1, Ordering::Relaxed);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The shortest life of a worker's registration without a renewal.
pub const REGISTRATION_MIN_TTL: Duration = Duration::from_secs(10);

/// Moves jobs whose wait is over back to the jobs stream, every `every`.
async fn promote_waiting(queue: Queue, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match queue.promote_due(256).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::JOBS_PROMOTED.increment(n as u64);
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
        .defer_unclaimed(spec.job_id, delivery, &wait)
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
        let pin = Pin::Server(powerfleet_jobs::ServerPin {
            kind: "vllm".into(),
            served_model: "m".into(),
            k: 20,
            terminal_tokens: vec![2],
            sampler: "vLLM /v1/completions v2".into(),
            deterministic: Some(false),
        });
        let (back, stored) =
            PinnedCheckpoint::decode(&PinnedCheckpoint::encode(&chain, &pin)).unwrap();
        assert_eq!((back, stored), (chain.clone(), Some(pin)));
        let (bare, none) = PinnedCheckpoint::decode(&chain.checkpoint().to_json()).unwrap();
        assert_eq!((bare, none), (chain, None));
        assert!(PinnedCheckpoint::decode(b"{}").is_err());
    }

    /// Checkpoints as workers stored them (`tests/fixtures/checkpoints/`, never edited): a
    /// checkpoint in Redis outlives a deploy, so every one keeps loading with the pin it was
    /// written with.
    #[test]
    fn stored_checkpoints_load_with_their_pins() {
        let fixture = |name: &str| {
            let path = format!(
                "{}/tests/fixtures/checkpoints/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let bare = fixture("bare.json");
        let chain = Chain::from_checkpoint(Checkpoint::from_json(&bare).unwrap()).unwrap();
        let (loaded, pin) = PinnedCheckpoint::decode(&bare).unwrap();
        assert_eq!((&loaded, pin.is_none()), (&chain, true));
        for name in [
            "pinned-toy.json",
            "pinned-llamacpp.json",
            "pinned-null.json",
        ] {
            let bytes = fixture(name);
            let written: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let (loaded, pin) = PinnedCheckpoint::decode(&bytes).unwrap();
            assert_eq!(loaded, chain, "{name}");
            let pin = serde_json::to_value(&pin).unwrap();
            assert_eq!(pin, written["pin"], "{name}");
        }
    }
}
