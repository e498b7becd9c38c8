//! Enqueueing a checked submission: its prompts stored once, its jobs in chunks (idempotent
//! under a submission key), the batch's record published, and the receipt.

use powerfleet_datasets::Template;
use powerfleet_jobs::{BatchId, CorrelationId, Grader, JobId, JobSpec, now_ms};
use powerfleet_queue::{Queue, QueueError};
use serde::{Deserialize, Serialize};

use super::{InvalidSubmission, StoredJobs, Submission};

/// Jobs per enqueue round trip.
const ENQUEUE_CHUNK: usize = 500;

impl Submission {
    /// What this submission asked for, as its record keeps it: settings, counts and the jobs'
    /// fingerprint, without secrets or the problems' text.
    fn request_record(&self, jobs: &[JobSpec]) -> powerfleet_jobs::SubmissionRequest {
        let graded = self.graded_run.as_ref().map(|run| {
            let template_text = match &run.template {
                Template::User(text) if text.len() <= powerfleet_jobs::MAX_KEPT_TEMPLATE_BYTES => {
                    Some(text.clone())
                }
                _ => None,
            };
            powerfleet_jobs::GradedRequest {
                template: run.template.name().to_string(),
                template_text,
                grader: run.grader.as_ref().map(|g| match g {
                    Grader::Regex { pattern } => format!("regex:{pattern}"),
                    g => g.name().to_string(),
                }),
                price_per_mtok: run.price_per_mtok,
            }
        });
        let problems = match &self.graded_run {
            Some(run) => run.problems.len(),
            None => self.problems.len(),
        };
        powerfleet_jobs::SubmissionRequest {
            config: self.config.clone(),
            seeds: if self.seeds.len() <= powerfleet_jobs::MAX_KEPT_SEEDS {
                self.seeds.clone()
            } else {
                Vec::new()
            },
            seed_count: self.seeds.len() as u64,
            chains: self.chains,
            problems: problems as u64,
            jobs_fingerprint: fingerprint(jobs),
            stop: self.stop.clone(),
            chat: self.chat,
            fallback_single_sample: self.fallback_single_sample,
            graded,
            submission_key: self.submission_key.is_some(),
        }
    }
}

/// Ids of what was submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The correlation id of every job.
    pub correlation_id: CorrelationId,
    /// The batch, if one was made.
    pub batch_id: Option<BatchId>,
    /// The jobs, in submission order.
    pub job_ids: Vec<JobId>,
}

/// A submission that cannot be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Invalid input; nothing was enqueued.
    #[error(transparent)]
    Invalid(#[from] InvalidSubmission),
    /// The submission key was used for a different request; nothing was enqueued.
    #[error("{0}")]
    Conflict(String),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A fingerprint of what a submission asks for: every job's spec without the ids and times that
/// differ between two sends of the same request (FNV-1a 64 over their JSON, with the count).
fn fingerprint(jobs: &[JobSpec]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&(jobs.len() as u64).to_le_bytes());
    for job in jobs {
        let mut v = serde_json::to_value(job).expect("a job spec serializes");
        if let Some(o) = v.as_object_mut() {
            for k in ["job_id", "correlation_id", "batch_id", "submitted_at_ms"] {
                o.remove(k);
            }
        }
        feed(v.to_string().as_bytes());
        feed(b"\n");
    }
    format!("fnv1a64:{h:016x}")
}

/// Checks the whole submission, then enqueues it. With a submission key, a repeated submission
/// returns the ids of the first one and enqueues nothing new.
pub async fn submit(queue: &Queue, submission: &Submission) -> Result<Receipt, SubmitError> {
    let mut correlation_id = submission
        .correlation_id
        .clone()
        .unwrap_or_else(CorrelationId::generate);
    let mut batch_id = submission.batch.then(BatchId::new);
    // Build and check every job before anything is written.
    let StoredJobs {
        specs: mut jobs,
        prompts,
    } = submission.stored_jobs(&correlation_id, batch_id)?;
    if let Some(key) = &submission.submission_key {
        if key.is_empty() || key.len() > 200 || key.chars().any(char::is_whitespace) {
            return Err(InvalidSubmission(format!(
                "submission key must be 1 to 200 characters without white space, got {key:?}"
            ))
            .into());
        }
        let fingerprint = fingerprint(&jobs);
        let (b, c, first) = queue
            .begin_submission(
                key,
                batch_id.unwrap_or_default(),
                &correlation_id,
                &fingerprint,
            )
            .await?;
        if first != fingerprint {
            return Err(SubmitError::Conflict(format!(
                "submission key {key:?} was used for a different request (other jobs, prompts, methods, seeds or settings); resubmit the same request to get its ids, or use a new key"
            )));
        }
        correlation_id = c;
        if submission.batch {
            batch_id = Some(b);
        }
        // A repeated key keeps the first submission's ids.
        for job in &mut jobs {
            job.correlation_id = correlation_id.clone();
            job.batch_id = batch_id;
        }
    }
    // Each distinct prompt once, before any job that references it can be claimed.
    queue.store_prompts(&prompts).await?;
    drop(prompts);
    let mut job_ids = Vec::with_capacity(jobs.len());
    for (i, chunk) in jobs.chunks(ENQUEUE_CHUNK).enumerate() {
        let key = submission
            .submission_key
            .as_deref()
            .map(|k| (k, i * ENQUEUE_CHUNK));
        let ids = queue.enqueue(chunk, key).await?;
        crate::metrics::JOBS_SUBMITTED.increment(ids.len() as u64);
        job_ids.extend(ids);
    }
    // What the batch scheduled, for the report once Redis has forgotten it: published after
    // its jobs, so a record always has its jobs (a failure in between leaves a batch without
    // one, which the report shows as of unknown size, never as partial forever).
    if let Some(batch_id) = batch_id {
        let mut models: Vec<String> = jobs
            .iter()
            .map(|j| powerfleet_jobs::redact_http_url(&j.model))
            .collect();
        models.sort();
        models.dedup();
        queue
            .publish_submission(&powerfleet_jobs::SubmissionRecord {
                batch_id,
                correlation_id: correlation_id.clone(),
                label: submission.label.clone(),
                models,
                methods: submission.methods.clone(),
                scheduled: job_ids.len() as u64,
                created_at_ms: now_ms(),
                request: Some(submission.request_record(&jobs)),
            })
            .await?;
    }
    // The receipt promises these jobs: on a replicated Redis they must survive a failover.
    queue.confirm_replicated("submission").await?;
    Ok(Receipt {
        correlation_id,
        batch_id,
        job_ids,
    })
}
