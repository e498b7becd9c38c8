//! Cancellation of jobs, batches and correlation ids.

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobStatus};
use powerfleet_queue::{CancelOutcome, Queue, QueueError};

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
    let result = JobResult::for_spec(
        &spec,
        JobStatus::Cancelled,
        state.deliveries,
        Some("cancelled before it started".into()),
    );
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
