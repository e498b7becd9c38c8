//! The worker: reads jobs from the queue, runs their chains, and checkpoints after every block.
//!
//! Workers are stateless: everything a job needs is in Redis (its spec and last checkpoint), and
//! every write is fenced, so any number of workers can come and go. CPU-bound in-process models run
//! on tokio's blocking pool, one block at a time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerfleet_jobs::{JobResult, JobSpec, JobStatus, Prompt, now_ms};
use powerfleet_queue::{ClaimOutcome, Delivery, Lease, LeaseState, Progress, Queue, QueueError};
use powerfleet_sampler::{Chain, Checkpoint, LanguageModel, TokenId};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics;
use crate::models::{Backend, ModelRegistry};

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
        }
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be >= 1, got 0".into());
        }
        if self.heartbeat >= self.lease {
            return Err(format!(
                "heartbeat ({} ms) must be shorter than the lease ({} ms)",
                self.heartbeat.as_millis(),
                self.lease.as_millis()
            ));
        }
        if self.max_deliveries == 0 {
            return Err("max_deliveries must be >= 1, got 0".into());
        }
        if self.model_attempts == 0 {
            return Err("model_attempts must be >= 1, got 0".into());
        }
        Ok(())
    }
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
    /// Blocks completed: each one checkpointed, or its chain's result published.
    pub blocks: AtomicU64,
}

struct Ctx {
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
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        queue,
        models,
        stop: stop.clone(),
        report: report.clone(),
    });
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
    ctx: &Ctx,
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
    ctx.queue
        .read_jobs(&c.consumer, free, c.read_block.as_millis() as u64)
        .await
}

/// Exponential backoff with jitter: base·2^(attempt−1), at most `max`, times a factor in [0.5, 1).
pub(crate) fn backoff(base: Duration, attempt: u32, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(max);
    let jitter = 0.5 + 0.5 * (now_ms() % 1000) as f64 / 1000.0;
    capped.mul_f64(jitter)
}

async fn handle(ctx: &Ctx, delivery: Delivery) {
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

struct Running {
    lease: Lease,
    spec: JobSpec,
    attempts: u32,
    started_at_ms: u64,
}

impl Running {
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
        if status == JobStatus::Completed
            && let Some(out) = chain.and_then(Chain::output)
        {
            r.text = backend.and_then(|b| match b {
                Backend::Toy { model, .. } => Some(model.detokenize(&out.tokens)),
                // Filled in by the caller: detokenizing asks the server.
                Backend::Http { .. } | Backend::Hosted { .. } => None,
            });
            r.tokens = out.tokens;
            r.log_p = Some(out.log_p);
            r.ends_with_eos = out.ends_with_eos;
            r.stats = out.stats;
        }
        r
    }
}

async fn finish(
    ctx: &Ctx,
    run: &Running,
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

async fn process(ctx: &Ctx, delivery: Delivery) -> Result<(), QueueError> {
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
    let (lease, attempts, cancel, checkpoint, started_at_ms) = match ctx
        .queue
        .claim(spec.job_id, &delivery.entry_id, consumer)
        .await?
    {
        ClaimOutcome::Claimed {
            lease,
            deliveries,
            cancel_requested,
            checkpoint,
            started_at_ms,
        } => (
            lease,
            deliveries,
            cancel_requested,
            checkpoint,
            started_at_ms,
        ),
        ClaimOutcome::Missing => {
            let reason = format!("no state for job {} in this namespace", spec.job_id);
            ctx.queue.dead_letter_job_entry(&delivery, &reason).await?;
            ctx.report.dead.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        ClaimOutcome::AlreadyFinal(_) | ClaimOutcome::Stale => return Ok(()),
    };
    let run = Running {
        lease,
        spec,
        attempts,
        started_at_ms,
    };
    metrics::add(metrics::JOBS_STARTED, 1);
    // The lease is renewed from the claim on, whatever the job does next (tokenizing, a hosted
    // call, the chain); the guard stops the renewals when this function returns or unwinds.
    let shared = Arc::new(Shared::default());
    let _keeper = AbortOnDrop(tokio::spawn(keep_lease(
        ctx.queue.clone(),
        run.lease.clone(),
        shared.clone(),
        ctx.config.heartbeat,
    )));
    if ctx.stop.is_cancelled() {
        ctx.queue.hand_back(&run.lease).await?;
        ctx.report.handed_back.fetch_add(1, Ordering::Relaxed);
        metrics::add(metrics::JOBS_HANDED_BACK, 1);
        return Ok(());
    }
    let max = ctx.config.max_deliveries;
    if attempts > max {
        let reason = format!(
            "delivered {attempts} times, more than the limit of {max}; the job keeps killing or stalling its workers"
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
        let r = hosted_sample(ctx, &run, model, &config, &backend).await;
        return finish(ctx, &run, r, None).await;
    }
    let retry = (ctx.config.model_attempts, ctx.config.retry_backoff);
    let prompt = match prompt_tokens(&backend, &run.spec.prompt, run.spec.chat, retry).await {
        Ok(p) => p,
        Err(e) => {
            let r = run.result(JobStatus::Failed, None, Some(&backend), Some(e));
            return finish(ctx, &run, r, None).await;
        }
    };
    let fresh = || Chain::new(config.clone(), &prompt, run.spec.seed, run.spec.stream);
    let chain = match checkpoint {
        None => fresh(),
        Some(bytes) => match Checkpoint::from_json(&bytes).and_then(Chain::from_checkpoint) {
            Ok(c) if c.config() == &config => {
                info!(
                    block_idx = c.position().block_idx,
                    "resuming from checkpoint"
                );
                c
            }
            Ok(_) => {
                warn!("checkpoint was written for another configuration; starting over");
                fresh()
            }
            Err(e) => {
                warn!(error = %e, "checkpoint unusable; starting over");
                fresh()
            }
        },
    };
    drive(ctx, run, chain, backend, shared).await
}

/// A job on a hosted chat API: one sample at the method's temperature. MCMC methods run this way
/// only with the job's explicit fallback option, and the result says so.
async fn hosted_sample(
    ctx: &Ctx,
    run: &Running,
    model: &powerfleet_backends::HostedModel,
    config: &powerfleet_sampler::ValidConfig,
    backend: &Backend,
) -> JobResult {
    let spec = &run.spec;
    let fail = |e: String| run.result(JobStatus::Failed, None, Some(backend), Some(e));
    let fallback = match (config.method().is_mcmc(), spec.fallback_single_sample) {
        (false, _) => None,
        (true, true) => Some(format!(
            "ran as one sample at the proposal temperature {}: {}",
            config.temperature(),
            powerfleet_backends::HOSTED_CHAT_REFUSAL
        )),
        (true, false) => return fail(powerfleet_backends::HOSTED_CHAT_REFUSAL.to_string()),
    };
    let Prompt::Text(prompt) = &spec.prompt else {
        return fail("hosted chat APIs take text prompts, not token ids".to_string());
    };
    let attempts = ctx.config.model_attempts;
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        match model
            .sample(
                prompt,
                config.temperature(),
                config.max_new_tokens(),
                spec.seed ^ spec.stream,
            )
            .await
        {
            Ok(text) => {
                let mut r = run.result(JobStatus::Completed, None, Some(backend), None);
                r.text = Some(text);
                r.fallback = fallback;
                return r;
            }
            Err(e) if !e.is_transient() => {
                return fail(format!("the API refused the request: {e}"));
            }
            Err(e) => last_error = e.to_string(),
        }
        if attempt < attempts {
            tokio::time::sleep(backoff(
                ctx.config.retry_backoff,
                attempt,
                Duration::from_secs(30),
            ))
            .await;
        }
    }
    fail(format!(
        "the API failed {attempts} times in a row: {last_error}"
    ))
}

/// Why a toy job with `chat` fails.
const TOY_CHAT_REFUSAL: &str = "toy models have no chat template; submit without chat";

/// The prompt's token ids: text is tokenized once, by the model's own tokenizer. With `chat`,
/// an inference server first formats the text through its chat template as one user message.
async fn prompt_tokens(
    backend: &Backend,
    prompt: &Prompt,
    chat: bool,
    retry: (u32, Duration),
) -> Result<Vec<TokenId>, String> {
    match (backend, prompt) {
        (Backend::Toy { .. }, _) if chat => Err(TOY_CHAT_REFUSAL.to_string()),
        (Backend::Toy { model, .. }, Prompt::Text(text)) => {
            model.tokenize(text).map_err(|e| e.to_string())
        }
        (Backend::Toy { model, .. }, Prompt::Tokens(ids)) => {
            model.check_tokens(ids)?;
            Ok(ids.clone())
        }
        (Backend::Http { model }, Prompt::Text(text)) => {
            let what = if chat {
                "formatting the prompt through the server's chat template"
            } else {
                "tokenizing the prompt"
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                let answer = if chat {
                    model.tokenize_chat(text).await
                } else {
                    model.tokenize(text).await
                };
                match answer {
                    Ok(tokens) => break Ok(tokens),
                    Err(e) if e.is_transient() && attempt < retry.0 => {
                        metrics::model_retry(backend.label());
                        tokio::time::sleep(backoff(retry.1, attempt, Duration::from_secs(30)))
                            .await;
                    }
                    Err(e) => break Err(format!("{what}: {e}")),
                }
            }
        }
        (Backend::Http { .. }, Prompt::Tokens(_)) if chat => Err(
            "chat formats a text prompt through the chat template; token-id prompts cannot be formatted"
                .to_string(),
        ),
        (Backend::Http { .. }, Prompt::Tokens(ids)) => Ok(ids.clone()),
        (Backend::Hosted { .. }, _) => Err("hosted chat APIs run no chains".to_string()),
    }
}

/// State shared between a job's driver and its lease keeper.
#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    cancel: AtomicBool,
    lost: AtomicBool,
}

impl Shared {
    /// Whether the chain must stop at this step boundary: cancelled, lease lost, or shutting down.
    fn interrupted(&self, stop: &CancellationToken) -> bool {
        self.lost.load(Ordering::Relaxed)
            || self.cancel.load(Ordering::Relaxed)
            || stop.is_cancelled()
    }
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

/// Why a stretch of chain work stopped.
enum Boundary {
    Finished,
    BlockDone,
    Interrupted,
    ModelFailed(String),
}

/// Runs the chain until the end of the current block, the end of the chain, or a flag (cancel,
/// lost lease, shutdown) seen between steps. Model errors are retried with backoff.
fn run_block(
    chain: &mut Chain,
    backend: &Backend,
    shared: &Shared,
    stop: &CancellationToken,
    attempts: u32,
    retry_backoff: Duration,
) -> Boundary {
    loop {
        if shared.interrupted(stop) {
            return Boundary::Interrupted;
        }
        let mut last_error = String::new();
        let mut generation = None;
        for attempt in 1..=attempts {
            let Some(request) = chain.request() else {
                return Boundary::Finished;
            };
            let call_started = std::time::Instant::now();
            let answer = generate(backend, &request, attempt);
            metrics::observe_backend(
                metrics::MODEL_CALL_DURATION,
                backend.label(),
                call_started.elapsed(),
            );
            match answer {
                Ok(g) => {
                    generation = Some(g);
                    break;
                }
                Err(e) => {
                    last_error = e;
                    if attempt < attempts {
                        metrics::model_retry(backend.label());
                        std::thread::sleep(backoff(
                            retry_backoff,
                            attempt,
                            Duration::from_secs(30),
                        ));
                    }
                }
            }
        }
        let Some(generation) = generation else {
            return Boundary::ModelFailed(format!(
                "the model failed {attempts} times in a row: {last_error}"
            ));
        };
        match chain.advance(generation) {
            Ok(a) => {
                *shared.progress.lock().expect("progress") = progress_of(chain);
                if a.finished {
                    return Boundary::Finished;
                }
                if a.block_finished.is_some() {
                    return Boundary::BlockDone;
                }
            }
            Err(e) => return Boundary::ModelFailed(format!("the model answered unusably: {e}")),
        }
    }
}

/// [`run_block`] for inference servers: each request is awaited on the runtime. Transient
/// errors are retried with backoff; a refused request fails the job at once.
#[allow(clippy::too_many_arguments)]
async fn run_block_http(
    label: &'static str,
    chain: &mut Chain,
    model: &powerfleet_backends::HttpModel,
    shared: &Shared,
    stop: &CancellationToken,
    attempts: u32,
    retry_backoff: Duration,
    affinity: u64,
) -> Boundary {
    loop {
        if shared.interrupted(stop) {
            return Boundary::Interrupted;
        }
        let Some(request) = chain.request().map(|r| r.to_owned()) else {
            return Boundary::Finished;
        };
        let mut last_error = String::new();
        let mut outcome = None;
        for attempt in 1..=attempts {
            let call_started = std::time::Instant::now();
            let answer = model.generate(&request, affinity).await;
            metrics::observe_backend(metrics::MODEL_CALL_DURATION, label, call_started.elapsed());
            match answer {
                Ok(g) => match chain.advance(g) {
                    Ok(a) => {
                        outcome = Some(a);
                        break;
                    }
                    Err(e) => last_error = format!("the server answered unusably: {e}"),
                },
                Err(e) if !e.is_transient() => {
                    return Boundary::ModelFailed(format!("the server refused the request: {e}"));
                }
                Err(e) => last_error = e.to_string(),
            }
            if attempt < attempts {
                metrics::model_retry(label);
                warn!(attempt, error = %last_error, "model request failed; retrying");
                tokio::time::sleep(backoff(retry_backoff, attempt, Duration::from_secs(30))).await;
            }
        }
        let Some(a) = outcome else {
            return Boundary::ModelFailed(format!(
                "the model failed {attempts} times in a row: {last_error}"
            ));
        };
        *shared.progress.lock().expect("progress") = progress_of(chain);
        if a.finished {
            return Boundary::Finished;
        }
        if a.block_finished.is_some() {
            return Boundary::BlockDone;
        }
    }
}

fn generate(
    backend: &Backend,
    request: &powerfleet_sampler::Request<'_>,
    attempt: u32,
) -> Result<powerfleet_sampler::Generation, String> {
    match backend {
        Backend::Toy {
            model,
            latency,
            fail_rate,
        } => {
            if !latency.is_zero() {
                std::thread::sleep(*latency);
            }
            if *fail_rate > 0.0 && chaos_draw(request.seed, attempt) < *fail_rate {
                return Err(format!(
                    "simulated transient failure of {} (fail_rate={fail_rate})",
                    model.name()
                ));
            }
            model.generate(request).map_err(|e| e.to_string())
        }
        Backend::Http { .. } | Backend::Hosted { .. } => {
            Err("HTTP backends run on the async path".to_string())
        }
    }
}

/// A uniform draw in [0, 1) from (seed, attempt): splitmix64.
fn chaos_draw(seed: u64, attempt: u32) -> f64 {
    let mut z = seed ^ (u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    powerfleet_sampler::rng::unit_interval(z)
}

async fn keep_lease(queue: Queue, lease: Lease, shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let progress = shared.progress.lock().expect("progress").clone();
        match queue.heartbeat(&lease, &progress).await {
            Ok(LeaseState::Owned { cancel }) => {
                if cancel {
                    shared.cancel.store(true, Ordering::Relaxed);
                }
            }
            Ok(LeaseState::Lost) => {
                shared.lost.store(true, Ordering::Relaxed);
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
    ctx: &Ctx,
    run: Running,
    chain: Chain,
    backend: Backend,
    shared: Arc<Shared>,
) -> Result<(), QueueError> {
    *shared.progress.lock().expect("progress") = progress_of(&chain);
    metrics::chains_in_flight(1.0);
    let outcome = drive_inner(ctx, &run, chain, backend, &shared).await;
    metrics::chains_in_flight(-1.0);
    outcome
}

async fn drive_inner(
    ctx: &Ctx,
    run: &Running,
    mut chain: Chain,
    backend: Backend,
    shared: &Arc<Shared>,
) -> Result<(), QueueError> {
    let (attempts, retry) = (ctx.config.model_attempts, ctx.config.retry_backoff);
    let label = backend.label();
    let mut counted = chain.stats().clone();
    loop {
        let block_started = std::time::Instant::now();
        let boundary = match &backend {
            Backend::Http { model } => {
                let affinity = run.spec.job_id.0.as_u64_pair().1;
                run_block_http(
                    label, &mut chain, model, shared, &ctx.stop, attempts, retry, affinity,
                )
                .await
            }
            Backend::Hosted { .. } => {
                Boundary::ModelFailed("hosted chat APIs run no chains".to_string())
            }
            Backend::Toy { .. } => {
                let (s, stop, b) = (shared.clone(), ctx.stop.clone(), backend.clone());
                let before = chain.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let boundary = run_block(&mut chain, &b, &s, &stop, attempts, retry);
                    (chain, boundary)
                })
                .await;
                match joined {
                    Ok((returned, boundary)) => {
                        chain = returned;
                        boundary
                    }
                    Err(e) => {
                        chain = before;
                        Boundary::ModelFailed(format!("the chain driver failed: {e}"))
                    }
                }
            }
        };
        if matches!(boundary, Boundary::BlockDone | Boundary::Finished) {
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
            ctx.report.lost.fetch_add(1, Ordering::Relaxed);
            info!("lease lost; another worker owns the job now");
            return Ok(());
        }
        match boundary {
            Boundary::Finished => {
                ctx.report.blocks.fetch_add(1, Ordering::Relaxed);
                metrics::add(metrics::BLOCKS, 1);
                let mut r = run.result(JobStatus::Completed, Some(&chain), Some(&backend), None);
                if let Backend::Http { model } = &backend {
                    r.text = match model.detokenize(&r.tokens).await {
                        Ok(t) => Some(t),
                        Err(e) => {
                            warn!(error = %e, "detokenizing the completion failed; the result keeps its token ids only");
                            None
                        }
                    };
                }
                return finish(ctx, run, r, None).await;
            }
            Boundary::ModelFailed(e) => {
                let r = run.result(JobStatus::Failed, Some(&chain), Some(&backend), Some(e));
                return finish(ctx, run, r, None).await;
            }
            Boundary::BlockDone | Boundary::Interrupted => {}
        }
        let progress = progress_of(&chain);
        let bytes = chain.checkpoint().to_json();
        let write_started = std::time::Instant::now();
        let written = ctx.queue.checkpoint(&run.lease, &progress, &bytes).await?;
        metrics::checkpoint_written(write_started.elapsed(), bytes.len());
        match written {
            LeaseState::Lost => {
                ctx.report.lost.fetch_add(1, Ordering::Relaxed);
                info!("lease lost at a checkpoint; another worker owns the job now");
                return Ok(());
            }
            LeaseState::Owned { cancel } => {
                if cancel {
                    shared.cancel.store(true, Ordering::Relaxed);
                }
            }
        }
        if matches!(boundary, Boundary::BlockDone) {
            ctx.report.blocks.fetch_add(1, Ordering::Relaxed);
            metrics::add(metrics::BLOCKS, 1);
            debug!(
                block_idx = progress.block_idx,
                bytes = bytes.len(),
                "block checkpointed"
            );
        }
        if shared.cancel.load(Ordering::Relaxed) {
            let r = run.result(
                JobStatus::Cancelled,
                Some(&chain),
                Some(&backend),
                Some("cancelled".into()),
            );
            return finish(ctx, run, r, None).await;
        }
        if ctx.stop.is_cancelled() {
            if ctx.queue.hand_back(&run.lease).await? {
                ctx.report.handed_back.fetch_add(1, Ordering::Relaxed);
                metrics::add(metrics::JOBS_HANDED_BACK, 1);
                info!(
                    block_idx = progress.block_idx,
                    step_idx = progress.step_idx,
                    "handed back"
                );
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..20 {
            let d = backoff(base, attempt, max);
            let ceiling = base.saturating_mul(1 << (attempt - 1).min(16)).min(max);
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
        }
    }

    #[tokio::test]
    async fn a_toy_job_with_chat_fails_with_the_reason() {
        let toy = crate::models::load("toy:tiny").unwrap();
        let retry = (3, Duration::from_millis(1));
        for prompt in [Prompt::Text(String::new()), Prompt::Tokens(Vec::new())] {
            assert_eq!(
                prompt_tokens(&toy, &prompt, true, retry).await.unwrap_err(),
                "toy models have no chat template; submit without chat"
            );
            assert_eq!(prompt_tokens(&toy, &prompt, false, retry).await, Ok(vec![]));
        }
    }

    #[tokio::test]
    async fn chat_with_a_token_id_prompt_on_a_server_fails_without_a_request() {
        // Nothing listens on port 9: any request would fail as a transient connection error.
        let server = crate::models::load("llamacpp+http://127.0.0.1:9").unwrap();
        let retry = (1, Duration::from_millis(1));
        let err = prompt_tokens(&server, &Prompt::Tokens(vec![1, 2]), true, retry)
            .await
            .unwrap_err();
        assert!(
            err.contains("token-id prompts cannot be formatted"),
            "{err}"
        );
        let err = prompt_tokens(&server, &Prompt::Text("hi".into()), true, retry)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("formatting the prompt through the server's chat template: "),
            "{err}"
        );
        assert!(err.contains("/apply-template"), "{err}");
    }

    #[test]
    fn config_checks_heartbeat_against_lease() {
        let mut c = WorkerConfig::new("w".into());
        assert!(c.validate().is_ok());
        c.heartbeat = c.lease;
        assert!(c.validate().unwrap_err().contains("shorter than the lease"));
        c = WorkerConfig::new("w".into());
        c.concurrency = 0;
        assert!(c.validate().is_err());
    }
}
