//! Cancellation of jobs, batches and correlation ids.

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobStatus, now_ms};
use powerfleet_queue::{CancelOutcome, Queue, QueueError};
use powerfleet_sampler::ChainStats;

/// Cancels one job: at once if it is queued; between MCMC steps if it is running.
pub async fn cancel_job(queue: &Queue, id: JobId) -> Result<CancelOutcome, QueueError> {
    let Some(state) = queue.job_state(id).await? else {
        return Ok(CancelOutcome::Missing);
    };
    let Some(spec) = state.spec else {
        return Err(QueueError::Invalid(format!(
            "job {id} has no readable spec in Redis; it cannot be cancelled here"
        )));
    };
    let now = now_ms();
    let result = JobResult {
        job_id: spec.job_id,
        correlation_id: spec.correlation_id.clone(),
        batch_id: spec.batch_id,
        problem_id: spec.problem_id.clone(),
        model: spec.model.clone(),
        method: spec.method(),
        seed: spec.seed,
        stream: spec.stream,
        status: JobStatus::Cancelled,
        tokens: Vec::new(),
        text: None,
        log_p: None,
        ends_with_eos: false,
        stats: ChainStats::default(),
        attempts: state.deliveries,
        error: Some("cancelled before it started".into()),
        submitted_at_ms: spec.submitted_at_ms,
        started_at_ms: None,
        finished_at_ms: now,
        exactness: None,
    };
    queue.cancel(id, &result).await
}

/// Cancels every job of a batch; returns each job's outcome.
pub async fn cancel_batch(
    queue: &Queue,
    id: BatchId,
) -> Result<Vec<(JobId, CancelOutcome)>, QueueError> {
    let mut out = Vec::new();
    for job in queue.batch_jobs(id).await? {
        out.push((job, cancel_job(queue, job).await?));
    }
    Ok(out)
}

/// Cancels every job under a correlation id; returns each job's outcome.
pub async fn cancel_correlation(
    queue: &Queue,
    id: &CorrelationId,
) -> Result<Vec<(JobId, CancelOutcome)>, QueueError> {
    let mut out = Vec::new();
    for job in queue.correlation_jobs(id).await? {
        out.push((job, cancel_job(queue, job).await?));
    }
    Ok(out)
}
