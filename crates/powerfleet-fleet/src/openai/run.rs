//! A completion's jobs: checked against the live workers and the model's context, submitted
//! on the one submission path, waited for (cancelled if the client goes away first), and their
//! results read as far as the answer needs them.

use std::time::Duration;

use axum::http::StatusCode;
use powerfleet_jobs::{CorrelationId, ErrorCode, JobId, JobStatus};

use super::context::fit_context;
use super::errors::context_length_exceeded;
use super::respond::{Choice, Finished};
use super::{Asked, CORRELATION_HEADER, OpenAiError};
use crate::api::ApiState;
use crate::request::{SubmitRequest, quote};
use crate::watch::{WatchPolicy, Watched};

/// First and longest pause between two reads of a waiting completion's tally.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How long a completion's jobs may stand still before the log says what it waits for (and
/// again after each further such stretch).
const STANDSTILL_NOTICE: Duration = Duration::from_secs(60);

/// Cancels a completion's own jobs when dropped armed: the client went away before the answer.
/// Only the jobs this request created, never others under the same correlation id.
struct CancelOnDrop {
    queue: powerfleet_queue::Queue,
    correlation_id: CorrelationId,
    jobs: Option<Vec<JobId>>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(jobs) = self.jobs.take() {
            let queue = self.queue.clone();
            let id = self.correlation_id.clone();
            tracing::info!(correlation_id = %id, jobs = jobs.len(), "client went away before its completion; cancelling its jobs");
            crate::metrics::openai_abandoned();
            tokio::spawn(async move {
                for job in jobs {
                    if let Err(e) = crate::control::cancel_job(&queue, job).await {
                        tracing::warn!(correlation_id = %id, job_id = %job, error = %e, "cannot cancel a job of an abandoned completion");
                    }
                }
            });
        }
    }
}

/// Submits what was asked (its prompts, taken out of `asked`, are not held while waiting),
/// waits for every job and reads what the answer needs of each.
pub(super) async fn run(state: &ApiState, asked: &mut Asked) -> Result<Finished, OpenAiError> {
    let method = asked.config.method;
    if method.needs_log_probs() && state.models.hosted.contains(&asked.model) {
        return Err(OpenAiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!(
                "model {} is a hosted chat API, which gives no log-probabilities, so method {method} cannot run on it; set power_sampling.method to standard or low-temp",
                quote(&asked.model)
            ),
            param: Some("power_sampling.method".into()),
            kind: "invalid_request_error",
            code: None,
        });
    }
    let live = check_served(state, &asked.model).await?;
    state
        .models
        .check("model", &asked.model)
        .map_err(|e| OpenAiError::from(e).at("model"))?;
    if let Some(context) = powerfleet_queue::context_tokens(&live, &asked.model) {
        fit_context(asked, context)?;
    }
    drop(live);
    let request = SubmitRequest {
        model: asked.model.clone(),
        correlation_id: asked.correlation_id.clone(),
        problems: Some(std::mem::take(&mut asked.prompts)),
        config: Some(asked.config.clone()),
        methods: Some(vec![method]),
        seeds: Some(vec![asked.seed]),
        chains: Some(u64::from(asked.n)),
        stop: (!asked.stop.is_empty()).then(|| asked.stop.clone()),
        label: asked.label.clone(),
        ..SubmitRequest::default()
    };
    let submission = request.into_submission(&state.limits, &state.models)?;
    // A correlation id the client chose must be new: the check and the claim are one step in
    // Redis, so of two concurrent requests naming it, one runs and the other gets 409.
    if let Some(id) = &asked.correlation_id
        && !state
            .queue
            .claim_correlation(id)
            .await
            .map_err(crate::api::ApiError::from)?
    {
        return Err(OpenAiError {
            status: StatusCode::CONFLICT,
            message: format!(
                "{CORRELATION_HEADER}: {id} already has jobs; a completion's correlation id must be new (leave the header out to get a generated one)"
            ),
            param: Some(CORRELATION_HEADER.into()),
            kind: "invalid_request_error",
            code: None,
        });
    }
    let submitted = crate::producer::submit(&state.queue, &submission).await;
    drop(submission);
    let receipt = match submitted {
        Ok(receipt) => receipt,
        Err(e) => {
            if let Some(id) = &asked.correlation_id
                && let Err(release) = state.queue.release_correlation(id).await
            {
                tracing::warn!(correlation_id = %id, error = %release, "cannot release the claim of a correlation id that got no jobs");
            }
            return Err(crate::api::ApiError::from(e).into());
        }
    };
    let correlation_id = receipt.correlation_id.clone();
    let job_ids = receipt.job_ids;
    let mut guard = CancelOnDrop {
        queue: state.queue.clone(),
        correlation_id: correlation_id.clone(),
        jobs: Some(job_ids.clone()),
    };
    tracing::info!(correlation_id = %correlation_id, jobs = job_ids.len(), "openai completion submitted");
    // Waits for as long as the jobs take (the server's completion timeout, or the client going
    // away, ends it from outside); no database: the results are read from Redis below. The
    // request's own batch is watched, so jobs that others add under the correlation id are
    // not waited for.
    let policy = WatchPolicy {
        first_poll: POLL_FIRST,
        poll: POLL_MAX,
        jobs_stall: None,
        store_stall: None,
    };
    let watched = match receipt.batch_id {
        Some(batch) => Watched::Batch(batch),
        None => Watched::Correlation(correlation_id.clone()),
    };
    let mut told = Duration::ZERO;
    crate::watch::watch(&state.queue, None, &watched, &policy, |poll| {
        // Say once a minute of standstill what the completion waits for.
        if poll.unmoved_for < told {
            told = Duration::ZERO;
        }
        if poll.unmoved_for >= told + STANDSTILL_NOTICE {
            told = poll.unmoved_for;
            tracing::info!(
                correlation_id = %correlation_id,
                unmoved_s = poll.unmoved_for.as_secs(),
                "openai completion {}; no job finished for {} s (is a worker serving model {} running?)",
                poll.waiting_for(),
                poll.unmoved_for.as_secs(),
                powerfleet_backends::reference::redact_reference(&asked.model)
            );
        }
    })
    .await
    .map_err(|e| match e {
        crate::watch::WatchError::Status(e) => OpenAiError::from(crate::api::ApiError::from(e)),
        e => OpenAiError::server(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot follow the jobs of correlation id {correlation_id}: {e}"),
        ),
    })?;
    guard.jobs = None;
    let mut choices = Vec::with_capacity(job_ids.len());
    // The results in pipelined reads of a chunk at a time, each kept only as far as the answer
    // needs it; the database only for a state already gone.
    for chunk in job_ids.chunks(RESULT_READ_CHUNK) {
        let live = state
            .queue
            .job_results(chunk)
            .await
            .map_err(crate::api::ApiError::from)?;
        for (&id, live) in chunk.iter().zip(live) {
            let result = match live {
                Some(result) => Some(result),
                None => state
                    .store
                    .job(id)
                    .await
                    .map_err(crate::api::ApiError::from)?,
            };
            let Some(result) = result else {
                return Err(OpenAiError::server(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "job {id} finished but its result is gone from Redis and the database; see powerfleet status {correlation_id}"
                    ),
                ));
            };
            // The request's own fault: 400, which clients do not retry (they do retry 5xx).
            if let Some(code) = result.error_code {
                let message = format!(
                    "{}; the request's job {id} failed without retries (see powerfleet status {correlation_id})",
                    result.error.as_deref().unwrap_or("no reason recorded")
                );
                return Err(match code {
                    ErrorCode::ContextLengthExceeded => {
                        context_length_exceeded(asked.prompt_field, message)
                    }
                    ErrorCode::RequestRefused => OpenAiError {
                        status: StatusCode::BAD_REQUEST,
                        message,
                        param: None,
                        kind: "invalid_request_error",
                        code: Some(code.as_str()),
                    },
                });
            }
            if result.status != JobStatus::Completed {
                return Err(OpenAiError::server(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "job {id} ended {}: {}; see powerfleet status {correlation_id}",
                        result.status,
                        result.error.as_deref().unwrap_or("no reason recorded")
                    ),
                ));
            }
            choices.push(Choice::of(result, asked));
        }
    }
    Ok(Finished {
        correlation_id,
        choices,
    })
}

/// Results read per round trip when a completion is answered.
const RESULT_READ_CHUNK: usize = 64;

/// The live workers' registrations when one serves `model`. A completion for a model no live
/// worker serves is answered at once instead of waiting for its timeout: 404 (`model_not_found`) when neither the operator's configuration nor any live
/// worker knows the name, 503 when the name is configured but nobody serves it right now.
async fn check_served(
    state: &ApiState,
    model: &str,
) -> Result<Vec<powerfleet_queue::WorkerRegistration>, OpenAiError> {
    let live = state
        .queue
        .live_workers()
        .await
        .map_err(crate::api::ApiError::from)?;
    if powerfleet_queue::served(&live, model) {
        return Ok(live);
    }
    if let Err(refused) = state.models.check("model", model) {
        // A URL or a reference the policy refuses gets the policy's own 400, which names why.
        let not_a_name = matches!(
            powerfleet_jobs::ModelRoute::of(model),
            powerfleet_jobs::ModelRoute::Reference
        ) || model.contains("://")
            || model.chars().any(|c| c.is_whitespace() || c == '?');
        if not_a_name {
            return Err(OpenAiError::from(refused).at("model"));
        }
        return Err(OpenAiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model {model:?} does not exist: no live worker serves it and the server is not configured with it; GET /v1/models lists the models served now"
            ),
            param: Some("model".into()),
            kind: "invalid_request_error",
            code: Some("model_not_found"),
        });
    }
    Err(OpenAiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: crate::status::unserved_reason(model),
        param: Some("model".into()),
        kind: "server_error",
        code: None,
    })
}
