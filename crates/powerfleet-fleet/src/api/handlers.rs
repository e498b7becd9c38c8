//! The job API's handlers: thin, they parse and check the request, then call the producer,
//! status and control functions the CLI calls too.

use super::*;

/// The body of the answer to `POST /v1/jobs/{id}/cancel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// The job.
    pub job_id: JobId,
    /// `cancelled` (it was queued), `requested` (it is running and stops between MCMC steps), or
    /// `already_<status>` (it had finished with that status).
    pub outcome: String,
}

/// `POST /v1/jobs`: checks the request, then enqueues its jobs; 201 with the receipt.
pub(super) async fn submit_jobs(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                limit: state.limits.max_body_bytes,
            }
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {}", source_of(&e)))
        }
    })?;
    let mut request = parse_submit_request(&body)?;
    state.datasets.resolve(&mut request)?;
    let submission = request.into_submission(&state.limits, &state.models)?;
    let receipt: Receipt = crate::producer::submit(&state.queue, &submission).await?;
    tracing::info!(
        correlation_id = %receipt.correlation_id,
        batch_id = ?receipt.batch_id,
        jobs = receipt.job_ids.len(),
        "jobs submitted"
    );
    let mut response = (StatusCode::CREATED, Json(&receipt)).into_response();
    if let Some(batch) = receipt.batch_id
        && let Ok(location) = HeaderValue::from_str(&format!("/v1/batches/{batch}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The innermost message of an error (axum's rejections prefix theirs with a capitalised title).
pub(super) fn source_of(e: &dyn std::error::Error) -> String {
    e.source()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// Parses the body of `POST /v1/jobs`; errors name the field (`config.n_mcmc: invalid type ...`).
pub fn parse_submit_request(body: &[u8]) -> Result<SubmitRequest, ApiError> {
    match Json::<SubmitRequest>::from_bytes(body) {
        Ok(Json(request)) => Ok(request),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest(format!(
            "request body is not valid JSON: {}",
            source_of(&e)
        ))),
        Err(JsonRejection::JsonDataError(e)) => Err(ApiError::BadRequest(format!(
            "invalid request body: {}",
            source_of(&e)
        ))),
        Err(e) => Err(ApiError::BadRequest(format!(
            "invalid request body: {}",
            source_of(&e)
        ))),
    }
}

/// A path parameter, or 400 if it cannot be decoded.
pub(super) fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", source_of(&e))))
}

pub(super) fn parse_id<T>(raw: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = powerfleet_jobs::IdError>,
{
    raw.parse::<T>().map_err(|e| {
        ApiError::BadRequest(format!(
            "{} must be {}, got {}",
            e.what,
            e.allowed,
            quote(&e.got)
        ))
    })
}

/// `GET /v1/jobs/{id}`: the job's view.
pub(super) async fn get_job(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let id: JobId = parse_id(&path_param(path)?)?;
    status::job_view(&state.queue, Some(&state.store), id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no job {id} is known to Redis (this namespace) or the results database; check the id"
            ))
        })
}

/// `GET /v1/workers`: the live workers, each with the model names it serves (references
/// redacted), its concurrency, jobs in flight, start and last renewal.
pub(super) async fn get_workers(
    State(state): State<ApiState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let live = state.queue.live_workers().await?;
    Ok(Json(serde_json::json!({ "workers": live })))
}

/// `GET /v1/datasets`: the datasets the operator registered (`serve --dataset NAME=PATH`), which a
/// graded run names as `"bench": {"dataset": NAME}`: name, format, problem count and grader.
pub(super) async fn get_datasets(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "datasets": state.datasets.list() }))
}

/// Jobs a batch or correlation listing shows when the request does not say.
pub const DEFAULT_PAGE_JOBS: usize = 100;
/// The most jobs one listing shows.
pub const MAX_PAGE_JOBS: usize = 1000;

/// The page a listing's query asks for: `limit=N` (1 to [`MAX_PAGE_JOBS`], default
/// [`DEFAULT_PAGE_JOBS`]) and `after=JOB_ID` (the previous page's `next_after`), within
/// `max_bytes` (the server's `max_page_bytes`).
pub(super) fn page_of(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    max_bytes: usize,
) -> Result<Page, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut page = Page {
        after: None,
        limit: DEFAULT_PAGE_JOBS,
        max_bytes,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => {
                page.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_JOBS).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "query parameter limit is {}; it must be a whole number from 1 to {MAX_PAGE_JOBS} (default {DEFAULT_PAGE_JOBS})",
                            quote(&value)
                        ))
                    })?;
            }
            "after" => {
                page.after = Some(value.parse().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "query parameter after is {}; it must be a job id, the next_after of the previous page",
                        quote(&value)
                    ))
                })?);
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {}; the parameters are limit (1 to {MAX_PAGE_JOBS}) and after (a job id)",
                    quote(&key)
                )));
            }
        }
    }
    Ok(page)
}

/// `GET /v1/batches/{id}[?limit=N&after=JOB_ID]`: the batch's status, with one page of its jobs.
pub(super) async fn get_batch(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<StatusReport>, ApiError> {
    let id: BatchId = parse_id(&path_param(path)?)?;
    let page = page_of(query, state.limits.max_page_bytes)?;
    status::batch_status(&state.queue, Some(&state.store), id, page.into())
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no batch {id} is known to Redis (this namespace) or the results database; check the id"
            ))
        })
}

/// `GET /v1/batches/{id}/report[?price=USD&price=MODEL=USD]`: the benchmark report of the
/// batch's stored results, as `powerfleet report` computes it.
pub(super) async fn get_batch_report(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<powerfleet_report::Report>, ApiError> {
    let id: BatchId = parse_id(&path_param(path)?)?;
    let Query(pairs) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let prices: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| match key.as_str() {
            "price" => Ok(value),
            _ => Err(ApiError::BadRequest(format!(
                "unknown query parameter {}; the only parameter is price=USD or price=MODEL=USD (repeatable)",
                quote(&key)
            ))),
        })
        .collect::<Result<_, _>>()?;
    let prices = powerfleet_report::Prices::parse(prices.iter().map(String::as_str))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let results = state.store.jobs_by_batch(id).await?;
    let scheduled = state.store.submission(id).await?.map(|s| s.scheduled);
    if results.is_empty() && scheduled.is_none() {
        return Err(ApiError::NotFound(format!(
            "no stored results for batch {id}; check the id, or wait until the collector has stored some (GET /v1/batches/{id} shows progress)"
        )));
    }
    let mut report = powerfleet_report::build(&id.to_string(), &results, &prices);
    // Partial: how many of the jobs not stored are still queued or running, if Redis knows.
    let unfinished = match scheduled {
        Some(s) if s > results.len() as u64 => state
            .queue
            .tally(powerfleet_queue::TallyOf::Batch(id))
            .await
            .ok()
            .flatten()
            .map(|t| t.total.saturating_sub(t.finished)),
        _ => None,
    };
    report.set_progress(scheduled, unfinished);
    Ok(Json(report))
}

/// `GET /v1/correlations/{id}[?limit=N&after=JOB_ID]`: the status of the jobs under the
/// correlation id, with one page of them.
pub(super) async fn get_correlation(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<StatusReport>, ApiError> {
    let id: CorrelationId = parse_id(&path_param(path)?)?;
    let page = page_of(query, state.limits.max_page_bytes)?;
    status::correlation_status(&state.queue, Some(&state.store), &id, page.into())
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no job with correlation id {:?} is known to Redis (this namespace) or the results database; check the id",
                id.as_str()
            ))
        })
}

/// `POST /v1/jobs/{id}/cancel`: cancels the job.
pub(super) async fn cancel(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CancelResponse>, ApiError> {
    let id: JobId = parse_id(&path_param(path)?)?;
    let outcome = match cancel_job(&state.queue, id).await? {
        CancelOutcome::Cancelled => "cancelled".to_string(),
        CancelOutcome::Requested => "requested".to_string(),
        CancelOutcome::AlreadyFinal(status) => format!("already_{status}"),
        CancelOutcome::Missing => {
            return Err(ApiError::NotFound(format!(
                "no job {id} is in Redis (this namespace); it is unknown or finished long enough ago to have expired, so there is nothing to cancel"
            )));
        }
    };
    tracing::info!(job_id = %id, outcome = %outcome, "cancel");
    Ok(Json(CancelResponse {
        job_id: id,
        outcome,
    }))
}
