//! How a claimed job ends or waits: its result published, handed back at shutdown, or put back
//! to wait for its model, as the chain driver's verdict says.

use super::*;

pub(super) async fn finish(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    result: JobResult,
    dead_reason: Option<&str>,
) -> Result<(), QueueError> {
    let status = result.status;
    if ctx.queue.finish(&run.lease, &result, dead_reason).await? {
        metrics::job_finished(status.as_str());
        if status == JobStatus::Dead {
            metrics::JOBS_DEAD_LETTERED.increment(1);
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

/// Publishes the job `cancelled`, with its chain as far as it got.
pub(super) async fn cancel(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    chain: Option<&Chain>,
    backend: &Backend,
) -> Result<(), QueueError> {
    let r = run.result(
        JobStatus::Cancelled,
        chain,
        Some(backend),
        Some("cancelled".into()),
    );
    finish(ctx, run, r, None).await
}

/// Gives the job back to the queue at once (shutdown). A hand-back is never a delivery.
pub(super) async fn hand_back(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    progress: Option<&Progress>,
) -> Result<(), QueueError> {
    if ctx.queue.hand_back(&run.lease).await? {
        ctx.report.handed_back.fetch_add(1, Ordering::Relaxed);
        metrics::JOBS_HANDED_BACK.increment(1);
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
pub(super) async fn wait_for_model(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    backend: &Backend,
    chain: Option<&Chain>,
    progressed: bool,
    why: &str,
) -> Result<(), QueueError> {
    let patience = ctx.config.patience;
    let backoff = Backoff::new(ctx.config.wait_backoff, ctx.config.max_wait).delay(run.waits + 1);
    let now = now_ms();
    let plan = plan_wait(
        now,
        progressed,
        run.waiting_since_ms,
        patience,
        backoff,
        backend.unavailable_for(),
    );
    let (since, waited, delay) = match plan {
        WaitPlan::GiveUp { waited } => {
            let error = format!(
                "model {} unavailable for {} s, longer than the worker's --model-patience of {} s: {why}",
                redact_reference(&run.spec.model),
                waited.as_secs(),
                patience.as_secs()
            );
            let r = run.result(JobStatus::Failed, chain, Some(backend), Some(error));
            return finish(ctx, run, r, None).await;
        }
        WaitPlan::Defer {
            since_ms,
            waited,
            delay,
        } => (since_ms, waited, delay),
    };
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
        Deferral::CancelRequested => return cancel(ctx, run, chain, backend).await,
        Deferral::Lost => {
            ctx.report.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// How a claimed job settles a model call that did not succeed.
pub(super) async fn settle(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    backend: &Backend,
    chain: Option<&Chain>,
    progressed: bool,
    outcome: Called<()>,
) -> Result<(), QueueError> {
    let lost = shared.lost.load(Ordering::Relaxed);
    let cancel_requested = shared.cancel.load(Ordering::Relaxed);
    match settlement(outcome, lost, cancel_requested) {
        Settlement::Nothing => Ok(()),
        Settlement::Fail(e) => {
            let mut r = run.result(JobStatus::Failed, chain, Some(backend), Some(e));
            r.error_code = Some(powerfleet_jobs::ErrorCode::RequestRefused);
            finish(ctx, run, r, None).await
        }
        Settlement::WaitForModel(why) => {
            wait_for_model(ctx, run, backend, chain, progressed, &why).await
        }
        Settlement::LeaseGone => lease_gone(ctx, run, shared).await,
        Settlement::Cancel => cancel(ctx, run, chain, backend).await,
        Settlement::HandBack => hand_back(ctx, run, None).await,
    }
}

/// `called` without its value, for [`settle`].
pub(super) fn unit<T>(called: &Called<T>) -> Called<()> {
    match called {
        Called::Done(_) => Called::Done(()),
        Called::Interrupted => Called::Interrupted,
        Called::Waiting(m) => Called::Waiting(m.clone()),
        Called::Failed(m) => Called::Failed(m.clone()),
    }
}
