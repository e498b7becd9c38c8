//! The results collector: moves results from the results stream into SQL, exactly once.
//!
//! Several collectors may share the consumer group. Each round stores the results it has in one
//! transaction ([`Store::record_batch`]): what one read returned (up to `batch`), or the results
//! whose programs have run, or those a failed round kept. Their entries are acknowledged only
//! after that transaction commits; storing is idempotent by job id, so a redelivered result (a
//! collector that died between the commit and the acknowledgement) never counts twice.
//!
//! A result the database refuses for a reason of its own (a constraint it violates, a value out
//! of range) or that cannot be decoded is moved to the dead-letter stream whole; the rest of its
//! batch is stored. Every other failure (the database down, restarting, read-only, out of disk
//! space, locked, too slow) is the database's: the transaction stores nothing, and the collector
//! keeps the whole batch unacknowledged, retries it with backoff before it reads anything new, and
//! reports itself unready on `/readyz` until a batch is stored again.
//!
//! Completed benchmark jobs are graded here, against the reference their job carries, before they
//! are stored: the extracted answer and the verdict go into the result and their own columns.
//! A result that cannot be graded is stored without a grade and with the reason
//! (`grade_error`): a grading failure, never a wrong answer.
//!
//! Graders that read the answer (math, choice, exact, regex) are linear in their input and take
//! microseconds to milliseconds, but grading never holds up storing: each runs on a blocking
//! thread, and the round waits for them for at most [`READ_BLOCK_WHILE_GRADING`]; a grading still
//! running is picked up by a later round, while the others are stored. One that takes longer than
//! `answer_grading_budget` is stored without a grade, with the reason in `grade_error`. At most
//! `answer_graders` such threads run at once (a semaphore; a grading given up keeps its permit
//! until its thread ends): further results wait for a permit, and once
//! `answer_graders * GRADING_BACKLOG_PER_EXECUTOR` wait, no more are read until some are graded.
//! Graders that run it (`humaneval`) take up to the sandbox's time limit, so they run off the
//! main loop: each such result goes to a pool of `grading_executors` sandboxed runs (a
//! semaphore over blocking threads), and the loop goes on reading and storing the other
//! results. A result is stored only once it is graded (in a later round's batch than the one it
//! was read with), and acknowledged only after it is stored, as every other result: until then it
//! stays pending in the consumer group, so a collector that dies mid-grading leaves it to be
//! reclaimed and graded again (grading is deterministic up to the program's own behaviour, and
//! storing is idempotent by job id). The loop skips reclaimed entries it is grading already, and
//! stops reading new results while more than [`GRADING_BACKLOG_PER_EXECUTOR`] results per
//! executor wait for the sandbox.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use powerfleet_jobs::JobResult;
use powerfleet_queue::{Queue, ResultDelivery};
use powerfleet_sandbox::{Isolation, Sandbox, SandboxConfig};
use powerfleet_store::{Recorded, Store};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ops::StoreHealth;

/// Collector settings.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// This collector's consumer name.
    pub consumer: String,
    /// Results read per round, and so stored per transaction.
    pub batch: usize,
    /// How long one read waits for results.
    pub read_block: Duration,
    /// Results left unacknowledged this long (a collector died) are taken over.
    pub reclaim_idle: Duration,
    /// How often the streams are trimmed (never past a pending entry).
    pub trim_every: Duration,
    /// Set while results cannot be stored, for `/readyz`; share it with the ops endpoints.
    pub store_health: StoreHealth,
    /// Programs graded at once in the sandbox (`humaneval` results).
    pub grading_executors: usize,
    /// How graded programs are run.
    pub sandbox: SandboxConfig,
    /// The longest a grader that reads the answer (math, choice, exact, regex) may take for one
    /// result; past it the result is stored without a grade, with the reason (`grade_error`).
    pub answer_grading_budget: Duration,
    /// Gradings that read the answer run at once, each on its own blocking thread; further
    /// results wait for one of them to end (a grading given up at its budget keeps its place
    /// until its thread ends). At least 1.
    pub answer_graders: usize,
    /// A seam for tests: called on the grading thread before each grading that reads the answer
    /// (it may block, to hold that grading back). `None` outside tests.
    pub grading_hook: Option<GradingHook>,
}

/// A function [`CollectorConfig::grading_hook`] calls before a grading that reads the answer.
#[derive(Clone)]
pub struct GradingHook(pub Arc<dyn Fn(&JobResult) + Send + Sync>);

impl std::fmt::Debug for GradingHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GradingHook")
    }
}

/// Default [`CollectorConfig::answer_grading_budget`]: 10 s, thousands of times what a grading
/// of the largest result takes.
pub const DEFAULT_ANSWER_GRADING_BUDGET: Duration = Duration::from_secs(10);

/// Default [`CollectorConfig::answer_graders`].
pub const DEFAULT_ANSWER_GRADERS: usize = 4;

/// Results per grading executor that may wait for the sandbox before the collector stops
/// reading new results (so a flood of programs holds bounded memory).
pub const GRADING_BACKLOG_PER_EXECUTOR: usize = 8;

/// How long a read waits while results are being graded, so a graded result is stored soon
/// after its program ends.
const READ_BLOCK_WHILE_GRADING: Duration = Duration::from_millis(50);

impl CollectorConfig {
    /// Defaults for a collector named `consumer`.
    pub fn new(consumer: String) -> CollectorConfig {
        CollectorConfig {
            consumer,
            batch: 100,
            read_block: Duration::from_millis(1000),
            reclaim_idle: Duration::from_secs(30),
            trim_every: Duration::from_secs(60),
            store_health: StoreHealth::default(),
            grading_executors: 2,
            sandbox: SandboxConfig::default(),
            answer_grading_budget: DEFAULT_ANSWER_GRADING_BUDGET,
            answer_graders: DEFAULT_ANSWER_GRADERS,
            grading_hook: None,
        }
    }
}

/// What a collector did.
#[derive(Debug, Default)]
pub struct CollectorReport {
    /// Results stored for the first time.
    pub stored: AtomicU64,
    /// Results that were already stored (redeliveries).
    pub duplicates: AtomicU64,
    /// Result entries moved to the dead-letter stream: undecodable, or refused by the database
    /// for a reason of their own.
    pub dead: AtomicU64,
    /// Times storing a batch of results failed for a reason of the database's (nothing of it was
    /// stored; it was kept and retried whole).
    pub store_failures: AtomicU64,
    /// Results graded by running them in the sandbox.
    pub executed: AtomicU64,
}

/// Runs a collector until `shutdown` resolves.
pub async fn run(
    config: CollectorConfig,
    queue: Queue,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Arc<CollectorReport> {
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.cancel();
    });
    let report = Arc::new(CollectorReport::default());
    let mut last_reclaim: Option<tokio::time::Instant> = None;
    let mut last_trim = tokio::time::Instant::now();
    let mut last_depth: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    // Results read (and graded) but not yet stored because the database failed: retried, in
    // order, before anything new is read. They stay pending in the group meanwhile, so should
    // this collector die, another one reclaims them.
    let mut unstored: VecDeque<ResultDelivery> = VecDeque::new();
    // Results being graded in the sandbox, by entry id; they come back through `grading`.
    let executors = config.grading_executors.max(1);
    let pool = Arc::new(Semaphore::new(executors));
    let sandbox = Sandbox::new(config.sandbox.clone());
    let mut grading: JoinSet<ResultDelivery> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    // Results being graded by a grader that reads the answer, on blocking threads.
    let mut reading = Reading::new(config.answer_graders);
    info!(consumer = %config.consumer, grading_executors = executors, "collector started");
    announce_sandbox(&config.sandbox).await;
    while !stop.is_cancelled() {
        let round = async {
            let mut deliveries: VecDeque<ResultDelivery> = std::mem::take(&mut unstored);
            // Results whose programs ran are stored first. Nothing is read while a result waits
            // to be stored, so a failed read never drops one from this round.
            deliveries.extend(finished(&mut grading, &mut in_flight, &report));
            deliveries.extend(reading.finished());
            if deliveries.is_empty() && in_flight.len() >= executors * GRADING_BACKLOG_PER_EXECUTOR
            {
                // The sandbox is behind: wait for a program instead of reading more.
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(config.read_block) => {}
                    Some(done) = grading.join_next() => {
                        deliveries.extend(settle(done, &mut in_flight, &report));
                    }
                }
            }
            let backlog_full = in_flight.len() >= executors * GRADING_BACKLOG_PER_EXECUTOR
                || reading.backlog_full();
            let mut fresh: Vec<ResultDelivery> = Vec::new();
            if deliveries.is_empty()
                && !backlog_full
                && last_reclaim.is_none_or(|t| t.elapsed() >= config.reclaim_idle / 2)
            {
                last_reclaim = Some(tokio::time::Instant::now());
                fresh = queue
                    .reclaim_results(
                        &config.consumer,
                        config.reclaim_idle.as_millis() as u64,
                        config.batch,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if deliveries.is_empty() && fresh.is_empty() && !backlog_full {
                let block = if in_flight.is_empty() && reading.is_empty() {
                    config.read_block
                } else {
                    config.read_block.min(READ_BLOCK_WHILE_GRADING)
                };
                fresh = queue
                    .read_results(&config.consumer, config.batch, block.as_millis() as u64)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for mut d in fresh {
                if in_flight.contains(&d.entry_id) || reading.contains(&d.entry_id) {
                    // Reclaimed while this collector grades it: it comes back graded.
                    continue;
                }
                match d.result.as_ref().ok().filter(|r| executes(r)).cloned() {
                    Some(result) => {
                        in_flight.insert(d.entry_id.clone());
                        crate::metrics::GRADING_IN_FLIGHT.set(in_flight.len() as f64);
                        let pool = Arc::clone(&pool);
                        let sandbox = sandbox.clone();
                        grading.spawn(async move {
                            let _permit = pool.acquire_owned().await;
                            let ran = tokio::task::spawn_blocking(move || {
                                graded(&result, Some(&sandbox))
                            })
                            .await;
                            d.result = Ok(match ran {
                                Ok(graded) => graded,
                                Err(e) => {
                                    let mut r = d
                                        .result
                                        .clone()
                                        .expect("a delivery with a result is graded");
                                    r.grade_error = Some(format!("grading did not finish: {e}"));
                                    r
                                }
                            });
                            d
                        });
                    }
                    None => {
                        let gradable = d
                            .result
                            .as_ref()
                            .ok()
                            .filter(|r| powerfleet_grade::gradable_text(r).is_some())
                            .cloned();
                        match gradable {
                            Some(result) => reading.spawn(d, result, &config),
                            None => deliveries.push_back(d),
                        }
                    }
                }
            }
            // The gradings of this round, most done in microseconds; any still running is
            // stored by a later round.
            deliveries.extend(reading.wait(READ_BLOCK_WHILE_GRADING).await);
            if let Err(e) = collect(
                &queue,
                &store,
                &config.store_health,
                &report,
                &mut deliveries,
            )
            .await
            {
                // Those not stored, or stored and not acknowledged, are kept for the next round.
                unstored = std::mem::take(&mut deliveries);
                return Err(e);
            }
            // No result waits for the database any more.
            config.store_health.recovered();
            store_submissions(&queue, &store, &config).await?;

            if last_depth.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                last_depth = Some(tokio::time::Instant::now());
                let streams = queue.backlog_by_stream().await.map_err(|e| e.to_string())?;
                let delayed = queue.delayed_len().await.map_err(|e| e.to_string())?;
                crate::metrics::queue_depth(&streams, delayed);
            }
            if last_trim.elapsed() >= config.trim_every {
                last_trim = tokio::time::Instant::now();
                let trimmed = queue.trim_streams().await.map_err(|e| e.to_string())?;
                if trimmed.jobs + trimmed.results > 0 {
                    info!(
                        jobs = trimmed.jobs,
                        results = trimmed.results,
                        "trimmed streams"
                    );
                }
            }
            Ok::<(), String>(())
        };
        match round.await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                // Jittered, so that collectors sharing a database that came back do not retry
                // in step.
                let delay = crate::backoff::Backoff::COLLECTOR_ROUND.delay(failures);
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "collector round failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    info!("collector stopped");
    report
}

/// Stores the submission records the producers published (how many jobs each batch
/// scheduled), then acknowledges them; an undecodable one is dropped with a warning (it holds no
/// result). Reads without waiting, so a round costs one more read when there are none.
async fn store_submissions(
    queue: &Queue,
    store: &Store,
    config: &CollectorConfig,
) -> Result<(), String> {
    let deliveries = queue
        .read_submissions(
            &config.consumer,
            config.reclaim_idle.as_millis() as u64,
            config.batch,
        )
        .await
        .map_err(|e| e.to_string())?;
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut records = Vec::with_capacity(deliveries.len());
    for d in &deliveries {
        match &d.record {
            Ok(r) => records.push(r.clone()),
            Err(reason) => {
                warn!(entry_id = %d.entry_id, reason = %reason, "undecodable submission record dropped")
            }
        }
    }
    store
        .record_submissions(&records)
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<String> = deliveries.into_iter().map(|d| d.entry_id).collect();
    queue.ack_submissions(&ids).await.map_err(|e| e.to_string())
}

/// What becomes of a delivery once its batch is stored.
enum Settle {
    /// Stored now or before: acknowledge it.
    Ack,
    /// Undecodable, or refused by the database for a reason of its own: dead-letter it whole.
    DeadLetter(String),
}

/// Stores the results of `deliveries` in one transaction, then acknowledges them, and
/// dead-letters those that are their own fault. `Err` when some must be kept and tried again:
/// they are left in `deliveries`. When the database fails, that is all of them, none stored and
/// none acknowledged; when Redis fails, those not yet acknowledged or dead-lettered (storing
/// them again finds them stored).
async fn collect(
    queue: &Queue,
    store: &Store,
    health: &StoreHealth,
    report: &CollectorReport,
    deliveries: &mut VecDeque<ResultDelivery>,
) -> Result<(), String> {
    resolve_prompts(queue, deliveries)
        .await
        .map_err(|e| e.to_string())?;
    let results: Vec<&JobResult> = deliveries
        .iter()
        .filter_map(|d| d.result.as_ref().ok())
        .collect();
    let recorded = if results.is_empty() {
        Vec::new()
    } else {
        match store.record_batch(&results).await {
            Ok(recorded) => {
                health.recovered();
                recorded
            }
            // The database is at fault: keep the whole batch (unacknowledged) and back off.
            Err(e) => {
                report.store_failures.fetch_add(1, Ordering::Relaxed);
                health.failing(&e);
                return Err(e.to_string());
            }
        }
    };
    let mut recorded = recorded.into_iter();
    let settles: Vec<Settle> = deliveries
        .iter()
        .map(|d| match &d.result {
            Ok(result) => match recorded.next() {
                Some(Recorded::Stored) => {
                    count_stored(result);
                    report.stored.fetch_add(1, Ordering::Relaxed);
                    Settle::Ack
                }
                Some(Recorded::Duplicate) => {
                    crate::metrics::RESULTS_DUPLICATE.increment(1);
                    report.duplicates.fetch_add(1, Ordering::Relaxed);
                    Settle::Ack
                }
                // The result is at fault: storing it again fails the same way, and the results
                // behind it must not wait.
                Some(Recorded::Refused(e)) => {
                    Settle::DeadLetter(format!("the results database refused it: {e}"))
                }
                None => unreachable!("record_batch answers for every result"),
            },
            Err(reason) => Settle::DeadLetter(reason.clone()),
        })
        .collect();
    // Acknowledgements go out together (the shared connection pipelines them); dead letters,
    // rare, one by one in stream order.
    let mut outcomes = futures_util::future::join_all(deliveries.iter().zip(&settles).map(
        |(d, settle)| async move {
            match settle {
                Settle::Ack => queue.ack_result(&d.entry_id).await,
                Settle::DeadLetter(_) => Ok(()),
            }
        },
    ))
    .await;
    for ((d, settle), outcome) in deliveries.iter().zip(&settles).zip(&mut outcomes) {
        if let Settle::DeadLetter(reason) = settle {
            warn!(entry = %d.entry_id, reason = %reason, "result moved to the dead-letter stream");
            report.dead.fetch_add(1, Ordering::Relaxed);
            crate::metrics::JOBS_DEAD_LETTERED.increment(1);
            // Whole: the entry may be the only copy of a result someone wants to republish.
            *outcome = queue.dead_letter_result_entry(d, reason).await;
        }
    }
    let mut first_error = None;
    let mut kept = VecDeque::new();
    for (d, outcome) in deliveries.drain(..).zip(outcomes) {
        if let Err(e) = outcome {
            first_error.get_or_insert(e.to_string());
            kept.push_back(d);
        }
    }
    *deliveries = kept;
    first_error.map_or(Ok(()), Err)
}

/// Puts each stored prompt that a result of `deliveries` references in place of the reference
/// (one pipelined read of the distinct prompts), so the database keeps what it kept before
/// prompts were stored by reference: each completed result with its prompt. A prompt that is
/// gone (its result waited longer than the retention) is left out, with a warning: the result is
/// stored without it.
async fn resolve_prompts(
    queue: &Queue,
    deliveries: &mut VecDeque<ResultDelivery>,
) -> Result<(), powerfleet_queue::QueueError> {
    let mut refs: Vec<powerfleet_jobs::PromptRef> = deliveries
        .iter()
        .filter_map(|d| d.result.as_ref().ok()?.prompt.as_ref()?.stored().cloned())
        .collect();
    refs.sort();
    refs.dedup();
    if refs.is_empty() {
        return Ok(());
    }
    let resolved = queue.prompts(&refs).await?;
    let by_hash: std::collections::HashMap<&str, &Result<_, _>> = refs
        .iter()
        .map(|r| r.sha256.as_str())
        .zip(&resolved)
        .collect();
    for d in deliveries.iter_mut() {
        let Ok(result) = &mut d.result else { continue };
        let Some(reference) = result.prompt.as_ref().and_then(|p| p.stored()) else {
            continue;
        };
        match by_hash.get(reference.sha256.as_str()) {
            Some(Ok(prompt)) => result.prompt = Some(prompt.clone()),
            Some(Err(e)) => {
                warn!(job = %result.job_id, error = %e, "result stored without its prompt");
                result.prompt = None;
            }
            None => unreachable!("every reference was read"),
        }
    }
    Ok(())
}

/// Says once, at start, how graded programs will run: in bubblewrap; not at all, with the reason
/// every `humaneval` result will be stored with (`grade_error`) until it is fixed; or
/// unisolated, because the operator accepted that risk.
async fn announce_sandbox(sandbox: &SandboxConfig) {
    if sandbox.unisolated {
        warn!(
            python = %sandbox.python.display(),
            "GRADED PROGRAMS RUN UNISOLATED (--grading-unisolated): humaneval completions run as plain python3 processes behind Python-level guards only, which a hostile program gets past (it can read the host's files and processes, reach its sockets, and outlive its run); use this only for models you trust"
        );
        return;
    }
    let probed = sandbox.clone();
    match tokio::task::spawn_blocking(move || Isolation::detect(&probed)).await {
        Ok(Ok(isolation)) => info!(
            bwrap = %sandbox.bwrap.display(),
            python = %isolation.python.display(),
            user_namespaces_disabled_inside = isolation.userns_disabled,
            memory_bound_bytes = sandbox.memory_bound_bytes(),
            "graded programs run in bubblewrap"
        ),
        Ok(Err(e)) => error!(
            error = %e,
            "GRADED PROGRAMS CANNOT BE ISOLATED: no humaneval completion will run; their results are stored without a grade and with this grade_error until it is fixed"
        ),
        Err(e) => warn!(error = %e, "the sandbox probe failed to run"),
    }
}

/// Counts a result stored for the first time (once per job) in the metrics.
fn count_stored(result: &JobResult) {
    crate::metrics::RESULTS_STORED.increment(1);
    if result.grade_error.is_some() {
        crate::metrics::GRADING_FAILED.increment(1);
    }
    if let Some(g) = &result.grade {
        if g.correct {
            crate::metrics::GRADED_CORRECT.increment(1);
        } else {
            crate::metrics::GRADED_INCORRECT.increment(1);
        }
    }
}

/// Whether `result` is graded by running it (in the sandbox, off the main loop).
fn executes(result: &JobResult) -> bool {
    powerfleet_grade::gradable_text(result).is_some_and(|(g, _)| g.grader.executes())
}

/// `result` with its grade, when it is a completed benchmark job (grading is deterministic, so a
/// redelivered result gets the same grade), or with the reason it cannot be graded; unchanged
/// otherwise. Executing graders run in `sandbox` (blocking); without one they cannot grade.
fn graded(result: &JobResult, sandbox: Option<&Sandbox>) -> JobResult {
    let outcome = match sandbox {
        Some(sandbox) => {
            powerfleet_sandbox::grade_result(sandbox, result).map(|r| r.map_err(|e| e.to_string()))
        }
        None => powerfleet_grade::grade_result(result).map(|r| r.map_err(|e| e.to_string())),
    };
    match outcome {
        None => result.clone(),
        Some(Ok(g)) => JobResult {
            grade: Some(g),
            grade_error: None,
            ..result.clone()
        },
        Some(Err(e)) => {
            warn!(job = %result.job_id, error = %e, "cannot grade the result; stored without a grade");
            JobResult {
                grade: None,
                grade_error: Some(e),
                ..result.clone()
            }
        }
    }
}

/// Results being graded by graders that read the answer, each on a blocking thread under the
/// budget, by entry id; at most `threads`' permits of them at once.
struct Reading {
    tasks: JoinSet<ResultDelivery>,
    /// The entry each task grades.
    entries: HashMap<tokio::task::Id, String>,
    /// One permit per grading thread, held until that thread ends (past the budget too).
    threads: Arc<Semaphore>,
    /// How many permits `threads` has.
    cap: usize,
}

impl Reading {
    fn new(cap: usize) -> Reading {
        let cap = cap.max(1);
        Reading {
            tasks: JoinSet::new(),
            entries: HashMap::new(),
            threads: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }

    /// Whether so many results wait for a grading thread that no more should be read.
    fn backlog_full(&self) -> bool {
        self.entries.len() >= self.cap * GRADING_BACKLOG_PER_EXECUTOR
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn contains(&self, entry_id: &str) -> bool {
        self.entries.values().any(|e| e == entry_id)
    }

    /// Grades `result`, `d`'s, on a blocking thread once one of the permits is free; past
    /// `config.answer_grading_budget` (counted from its start) it comes back ungraded, with the
    /// reason. (The thread itself ends when the grader does: graders are linear in their input.
    /// It keeps its permit until then.)
    fn spawn(&mut self, mut d: ResultDelivery, result: JobResult, config: &CollectorConfig) {
        let entry_id = d.entry_id.clone();
        let budget = config.answer_grading_budget;
        let hook = config.grading_hook.clone();
        let threads = Arc::clone(&self.threads);
        let handle = self.tasks.spawn(async move {
            let permit = threads
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let job = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                if let Some(hook) = hook {
                    (hook.0)(&result);
                }
                graded(&result, None)
            });
            let failed = |reason: String| {
                let mut r = d.result.clone().expect("checked above");
                warn!(job = %r.job_id, error = %reason, "cannot grade the result; stored without a grade");
                r.grade = None;
                r.grade_error = Some(reason);
                r
            };
            d.result = Ok(match tokio::time::timeout(budget, job).await {
                Ok(Ok(graded)) => graded,
                Ok(Err(e)) => failed(format!("grading did not finish: {e}")),
                Err(_) => failed(format!(
                    "grading took longer than its budget of {} ms and was given up (collector --answer-grading-budget)",
                    budget.as_millis()
                )),
            });
            d
        });
        self.entries.insert(handle.id(), entry_id);
    }

    /// The gradings done so far, without waiting.
    fn finished(&mut self) -> Vec<ResultDelivery> {
        let mut done = Vec::new();
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            done.extend(self.settle(joined));
        }
        done
    }

    /// The gradings done within `wait` (or until none is left).
    async fn wait(&mut self, wait: Duration) -> Vec<ResultDelivery> {
        let mut done = self.finished();
        let deadline = tokio::time::Instant::now() + wait;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => done.extend(self.settle(joined)),
                Ok(None) | Err(_) => break,
            }
        }
        done
    }

    fn settle(
        &mut self,
        joined: Result<(tokio::task::Id, ResultDelivery), tokio::task::JoinError>,
    ) -> Option<ResultDelivery> {
        match joined {
            Ok((id, d)) => {
                self.entries.remove(&id);
                Some(d)
            }
            // Its entry stays pending, to be reclaimed (and graded again).
            Err(e) => {
                self.entries.remove(&e.id());
                warn!(error = %e, "a grading task failed; its result stays pending and is reclaimed");
                None
            }
        }
    }
}

/// The results whose programs have run, taken off the grading set without waiting.
fn finished(
    grading: &mut JoinSet<ResultDelivery>,
    in_flight: &mut HashSet<String>,
    report: &CollectorReport,
) -> VecDeque<ResultDelivery> {
    let mut done = VecDeque::new();
    while let Some(joined) = grading.try_join_next() {
        done.extend(settle(joined, in_flight, report));
    }
    done
}

/// One finished grading task: its delivery, now graded (a task that panicked leaves its entry
/// pending, to be reclaimed).
fn settle(
    joined: Result<ResultDelivery, tokio::task::JoinError>,
    in_flight: &mut HashSet<String>,
    report: &CollectorReport,
) -> Option<ResultDelivery> {
    let d = match joined {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "a grading task failed; its result stays pending and is reclaimed");
            return None;
        }
    };
    in_flight.remove(&d.entry_id);
    crate::metrics::GRADING_IN_FLIGHT.set(in_flight.len() as f64);
    report.executed.fetch_add(1, Ordering::Relaxed);
    Some(d)
}

#[cfg(test)]
mod tests {
    use powerfleet_jobs::{Grader, Grading, JobSpec, JobStatus, Prompt, ReferenceAnswer};
    use powerfleet_sampler::{Method, SamplerConfig};

    use super::*;

    fn result(status: JobStatus, grader: Grader, text: &str) -> JobResult {
        let spec = JobSpec {
            problem_id: Some("q".into()),
            grading: Some(Grading {
                template: "multiple-choice".into(),
                grader,
                reference: ReferenceAnswer::Choice {
                    choices: vec!["x".into(), "y".into()],
                    correct: 0,
                    permutation: vec![1, 0],
                },
                price_per_mtok: None,
                reasoning_markers: None,
            }),
            ..JobSpec::new(
                "toy:pivot",
                Prompt::Text(String::new()),
                SamplerConfig::new(Method::Power),
            )
        };
        let mut r = JobResult::for_spec(&spec, status, 1, None);
        r.text = Some(text.into());
        r
    }

    #[test]
    fn completed_benchmark_results_are_graded_and_others_left_alone() {
        // Shown order y, x: the right option (original A) is shown as B.
        let copy = graded(
            &result(JobStatus::Completed, Grader::Choice, "Answer: B"),
            None,
        );
        let g = copy.grade.expect("graded");
        assert!(g.correct);
        assert_eq!(g.extracted.as_deref(), Some("B"));
        assert_eq!(g.answer_key.as_deref(), Some("A"));
        assert!(
            graded(
                &result(JobStatus::Failed, Grader::Choice, "Answer: B"),
                None
            )
            .grade
            .is_none(),
            "only completed jobs are graded"
        );
        let unfit = graded(
            &result(JobStatus::Completed, Grader::Math, "Answer: B"),
            None,
        );
        assert!(
            unfit.grade.is_none() && unfit.grade_error.is_some(),
            "a grader that does not fit leaves the result ungraded, with the reason"
        );
        let mut plain = result(JobStatus::Completed, Grader::Choice, "B");
        plain.grading = None;
        assert!(graded(&plain, None).grade.is_none());
    }
}
