//! The HTTP API: submit jobs, read the status of a job, a batch or a correlation id, and cancel
//! jobs, as JSON over HTTP. Handlers are thin: they parse and check the request, then call the
//! producer, status and control functions that the CLI calls too.
//!
//! Every error is an [`ApiError`]: a status code and a body `{"error": "<message>"}`. Client
//! errors (4xx) quote at most [`MAX_QUOTED_CHARS`] characters of any input value.
//!
//! What a caller may do is narrower than what the CLI may do: requests need a bearer token (when
//! tokens are configured), `POST`s need `Content-Type: application/json`, and a request names only
//! the models its operator configured ([`ModelPolicy`]), never a server URL, file or credential of
//! its own choosing.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use powerfleet_jobs::{BatchId, CorrelationId, JobId};
use powerfleet_queue::{CancelOutcome, Queue, QueueError};
use powerfleet_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tower_http::limit::RequestBodyLimitLayer;

use crate::control::cancel_job;
use crate::producer::{Receipt, SubmitError};
use crate::request::MAX_MESSAGE_CHARS;
pub use crate::request::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ID_CHARS, DEFAULT_MAX_JOB_TOKENS,
    DEFAULT_MAX_JOBS_PER_REQUEST, DEFAULT_MAX_PROMPT_BYTES, DEFAULT_MAX_REQUEST_PROMPT_BYTES,
    DEFAULT_MAX_TEMPLATE_BYTES, DEFAULT_RATE_LIMIT_PER_MINUTE, GradedRunRequest,
    Limits as ApiLimits, MAX_QUOTED_CHARS, ModelPolicy, RequestError, SubmitRequest, quote,
};
use crate::status::{self, JobView, Page, StatusError, StatusReport};

/// What every handler needs: the queue, the results store, the limits, the tokens and the models
/// requests may name.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The queue of this deployment (namespace).
    pub queue: Queue,
    /// The results database.
    pub store: Store,
    /// Request limits.
    pub limits: ApiLimits,
    /// Bearer tokens that may call the API; empty means no authentication (`powerfleet serve`
    /// refuses to start that way without `--insecure-no-auth`).
    pub tokens: std::sync::Arc<Vec<String>>,
    /// The models requests may name (default: the built-in toy models only).
    pub models: std::sync::Arc<ModelPolicy>,
    /// How the OpenAI-compatible endpoints sample.
    pub openai: std::sync::Arc<crate::openai::OpenAiSettings>,
}

/// A client error message with every quoted value (`"..."` or `` `...` ``) and every other run of
/// non-space characters cut to [`MAX_QUOTED_CHARS`] characters, and the whole to
/// [`MAX_MESSAGE_CHARS`]: messages from other crates (serde, ids, datasets) quote input whole.
pub fn shorten_inputs(message: &str) -> String {
    fn flush(word: &mut String, out: &mut String) {
        if word.chars().count() > MAX_QUOTED_CHARS {
            out.extend(word.chars().take(MAX_QUOTED_CHARS));
            out.push('…');
        } else {
            out.push_str(word);
        }
        word.clear();
    }
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::new();
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if c == '"' && chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            if j < chars.len() {
                flush(&mut word, &mut out);
                let inner = &chars[i + 1..j];
                out.push(c);
                if inner.len() > MAX_QUOTED_CHARS {
                    let mut keep = MAX_QUOTED_CHARS;
                    // Never end inside an escape.
                    while keep > 0
                        && c == '"'
                        && inner[..keep]
                            .iter()
                            .rev()
                            .take_while(|&&x| x == '\\')
                            .count()
                            % 2
                            == 1
                    {
                        keep -= 1;
                    }
                    out.extend(&inner[..keep]);
                    out.push(c);
                    out.push_str(&format!("… ({} characters)", inner.len()));
                } else {
                    out.extend(inner);
                    out.push(c);
                }
                i = j + 1;
                continue;
            }
        }
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
        i += 1;
    }
    flush(&mut word, &mut out);
    let n = out.chars().count();
    if n > MAX_MESSAGE_CHARS {
        let mut cut: String = out.chars().take(MAX_MESSAGE_CHARS).collect();
        cut.push_str(&format!("… (message cut, {n} characters)"));
        cut
    } else {
        out
    }
}

/// Whether `given` equals one of `tokens`, comparing in time independent of where they differ.
pub fn token_matches(tokens: &[String], given: &str) -> bool {
    let mut any = false;
    for t in tokens {
        let (a, b) = (t.as_bytes(), given.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for i in 0..a.len().max(b.len()) {
            diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        }
        any |= diff == 0;
    }
    any
}

/// The fixed route name of a path, for metrics: never an id.
fn route_name(path: &str) -> &'static str {
    match path
        .split('/')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["v1", "jobs"] => "jobs",
        ["v1", "jobs", _] => "job",
        ["v1", "jobs", _, "cancel"] => "cancel",
        ["v1", "batches", _] => "batch",
        ["v1", "batches", _, "report"] => "batch_report",
        ["v1", "correlations", _] => "correlation",
        ["v1", "completions"] => "openai_completions",
        ["v1", "chat", "completions"] => "openai_chat_completions",
        ["v1", "models"] => "openai_models",
        _ => "other",
    }
}

/// The body of the answer to `POST /v1/jobs/{id}/cancel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// The job.
    pub job_id: JobId,
    /// `cancelled` (it was queued), `requested` (it is running and stops between MCMC steps), or
    /// `already_<status>` (it had finished with that status).
    pub outcome: String,
}

/// An error of the API: a status code and a message, sent as `{"error": "<message>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, an unknown field, a wrong type, a bad id (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing is known under the id, or no such route (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body is larger than the limit (413).
    #[error(
        "request body is larger than the limit of {limit} bytes (max_body_bytes); send fewer problems per request"
    )]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A `POST` without `Content-Type: application/json` (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well-formed but cannot be accepted (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The submission key was used for a different request (409).
    #[error("{0}")]
    Conflict(String),
    /// The queue failed: 503 if Redis is unreachable, 502 if it answered nonsense.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The results database failed: 503 if it is unreachable, 500 otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The status code of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Queue(QueueError::Redis { .. } | QueueError::NotReplicated { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Queue(QueueError::Protocol { .. }) => StatusCode::BAD_GATEWAY,
            ApiError::Queue(QueueError::Invalid(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(StoreError::Connect { .. } | StoreError::Query { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        match e {
            StatusError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StatusError::Queue(q) => ApiError::Queue(q),
            StatusError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::BadRequest(message) => ApiError::BadRequest(message),
            RequestError::Unprocessable(message) => ApiError::Unprocessable(message),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(message) => ApiError::Unprocessable(message),
            SubmitError::Conflict(message) => ApiError::Conflict(message),
            SubmitError::Queue(q) => ApiError::Queue(q),
        }
    }
}

/// The body of every error response.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut message = self.to_string();
        if status.is_client_error() {
            // A client error answers the caller: it quotes only a prefix of what was sent.
            message = shorten_inputs(&message);
        }
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %message, "http request failed");
        }
        (status, Json(ErrorBody { error: &message })).into_response()
    }
}

/// The API's routes, with the body limit and a log line per request.
pub fn router(state: ApiState) -> Router {
    let limit = state.limits.max_body_bytes;
    let routes = Router::new()
        .route("/v1/jobs", post(submit_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/v1/batches/{id}/report", get(get_batch_report))
        .route("/v1/correlations/{id}", get(get_correlation))
        .route("/v1/completions", post(crate::openai::completions))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route("/v1/models", get(crate::openai::models))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(require_json))
        // tower-http rejects a too-large Content-Length at once and limits streamed bodies;
        // axum's own (fixed 2 MB) limit would otherwise apply as well.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limit));
    // Inside authentication: only requests with a valid token (or, with none configured, all
    // requests under one key) reach the limiter, so it keeps one entry per configured token.
    let routes = with_rate_limit(routes, state.limits.rate_limit_per_minute, &state.tokens);
    routes
        .layer(middleware::from_fn_with_state(
            state.tokens.clone(),
            authenticate,
        ))
        .layer(middleware::from_fn_with_state(limit, log_and_fix_up))
        .with_state(state)
}

/// The rate-limit key of a request: its bearer token, or one key for every request when no tokens
/// are configured (authentication runs first, so only configured tokens ever become keys).
#[derive(Clone, Debug)]
struct BearerKey {
    tokens: std::sync::Arc<Vec<String>>,
}

impl tower_governor::key_extractor::KeyExtractor for BearerKey {
    type Key = String;

    fn extract<T>(
        &self,
        request: &axum::http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        if self.tokens.is_empty() {
            return Ok(String::new());
        }
        Ok(request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("")
            .to_string())
    }
}

/// A limit of `per_minute` requests per minute per token (a burst of a minute's worth, then one
/// every `60 s / per_minute`); over it, 429 with `Retry-After` and a JSON error. Off for 0.
fn with_rate_limit(
    routes: Router<ApiState>,
    per_minute: u32,
    tokens: &std::sync::Arc<Vec<String>>,
) -> Router<ApiState> {
    if per_minute == 0 {
        return routes;
    }
    let period = std::time::Duration::from_nanos(60_000_000_000 / u64::from(per_minute));
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .period(period)
        .burst_size(per_minute)
        .key_extractor(BearerKey {
            tokens: tokens.clone(),
        })
        .finish()
        .expect("a positive period and burst");
    routes.layer(
        tower_governor::GovernorLayer::new(config).error_handler(move |e| match e {
            tower_governor::GovernorError::TooManyRequests { wait_time, .. } => {
                let wait = wait_time.max(1);
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        error: &format!(
                            "too many requests: at most {per_minute} per minute per API token (rate_limit_per_minute, serve --rate-limit-per-minute); retry after {wait} s"
                        ),
                    }),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                response
            }
            other => ApiError::Unprocessable(format!("rate limit: {other}")).into_response(),
        }),
    )
}

/// The token of an `Authorization` header value: the `Bearer` scheme, in any case, then the
/// token after one or more spaces.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_matches(' ').split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// With tokens configured, every request needs `Authorization: Bearer TOKEN`; others get 401 and
/// nothing else.
async fn authenticate(
    State(tokens): State<std::sync::Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if token_matches(&tokens, given) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": "unauthorized: send Authorization: Bearer TOKEN with a token configured for this API"})),
        )
            .into_response()
    }
}

/// Whether the headers declare a JSON body: `Content-Type: application/json`, with or without
/// parameters such as `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The `POST` routes take JSON only: a browser form (or any request a page can send cross-site
/// without asking first) cannot use them. Others get 415.
async fn require_json(request: Request, next: Next) -> Response {
    let post_route = matches!(
        route_name(request.uri().path()),
        "jobs" | "cancel" | "openai_completions" | "openai_chat_completions"
    );
    if request.method() == axum::http::Method::POST && post_route && !is_json(request.headers()) {
        let got = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map_or("no Content-Type".to_string(), |v| {
                quote(&String::from_utf8_lossy(v.as_bytes()))
            });
        return ApiError::UnsupportedMediaType(format!(
            "POST {} needs the header Content-Type: application/json (the body, if any, is JSON), got {got}",
            quote(request.uri().path())
        ))
        .into_response();
    }
    next.run(request).await
}

/// Serves the API on `listener` until `shutdown` resolves, then drains requests in flight.
/// Clients that send their headers or their request too slowly are cut off after `timeouts`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    timeouts: crate::ops::HttpTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(address = %addr, "HTTP API listening");
    crate::ops::serve_router(listener, router(state), timeouts, shutdown).await?;
    tracing::info!(address = %addr, "HTTP API stopped");
    Ok(())
}

/// Logs one line per request, and turns tower-http's plain-text 413 into a JSON error.
async fn log_and_fix_up(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        response = ApiError::BodyTooLarge { limit }.into_response();
    }
    if route_name(&path).starts_with("openai_") {
        response = crate::openai::reshape_error(response).await;
    }
    crate::metrics::http_request(route_name(&path), response.status().as_u16());
    tracing::info!(
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "http request"
    );
    response
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; the routes are POST /v1/jobs, GET /v1/jobs/{{id}}, POST /v1/jobs/{{id}}/cancel, GET /v1/batches/{{id}}, GET /v1/batches/{{id}}/report, GET /v1/correlations/{{id}}, and the OpenAI-compatible POST /v1/completions, POST /v1/chat/completions and GET /v1/models",
        request.method(),
        quote(request.uri().path())
    ))
}

async fn wrong_method(request: Request) -> Response {
    let path = request.uri().path();
    let allowed =
        if path.ends_with("/cancel") || path == "/v1/jobs" || path.ends_with("/completions") {
            "POST"
        } else {
            "GET"
        };
    let mut response = ApiError::MethodNotAllowed(format!(
        "method {} is not allowed on {}; use {allowed}",
        request.method(),
        quote(path)
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// `POST /v1/jobs`: checks the request, then enqueues its jobs; 201 with the receipt.
async fn submit_jobs(
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
    let request = parse_submit_request(&body)?;
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
fn source_of(e: &dyn std::error::Error) -> String {
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
fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", source_of(&e))))
}

fn parse_id<T>(raw: &str) -> Result<T, ApiError>
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
async fn get_job(
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

/// Jobs a batch or correlation listing shows when the request does not say.
pub const DEFAULT_PAGE_JOBS: usize = 100;
/// The most jobs one listing shows.
pub const MAX_PAGE_JOBS: usize = 1000;

/// The page a listing's query asks for: `limit=N` (1 to [`MAX_PAGE_JOBS`], default
/// [`DEFAULT_PAGE_JOBS`]) and `after=JOB_ID` (the previous page's `next_after`).
fn page_of(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Page, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut page = Page {
        after: None,
        limit: DEFAULT_PAGE_JOBS,
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
async fn get_batch(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<StatusReport>, ApiError> {
    let id: BatchId = parse_id(&path_param(path)?)?;
    let page = page_of(query)?;
    status::batch_status(&state.queue, Some(&state.store), id, page)
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
async fn get_batch_report(
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
    if results.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no stored results for batch {id}; check the id, or wait until the collector has stored some (GET /v1/batches/{id} shows progress)"
        )));
    }
    Ok(Json(powerfleet_report::build(
        &id.to_string(),
        &results,
        &prices,
    )))
}

/// `GET /v1/correlations/{id}[?limit=N&after=JOB_ID]`: the status of the jobs under the
/// correlation id, with one page of them.
async fn get_correlation(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<StatusReport>, ApiError> {
    let id: CorrelationId = parse_id(&path_param(path)?)?;
    let page = page_of(query)?;
    status::correlation_status(&state.queue, Some(&state.store), &id, page)
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
async fn cancel(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::Submission;
    use powerfleet_sampler::Method;

    /// A request's submission as the API makes it, with the API's error.
    fn build_submission(
        request: SubmitRequest,
        limits: &ApiLimits,
        models: &ModelPolicy,
    ) -> Result<Submission, ApiError> {
        request
            .into_submission(limits, models)
            .map_err(ApiError::from)
    }

    #[test]
    fn benchmark_requests_become_benchmark_submissions() {
        let limits = ApiLimits {
            max_body_bytes: 1 << 20,
            max_jobs_per_request: 1000,
            ..ApiLimits::default()
        };
        let request = |bench: serde_json::Value| -> Result<Submission, ApiError> {
            let r: SubmitRequest = serde_json::from_value(serde_json::json!({
                "model": "llamacpp+http://gpu:8080",
                "seeds": [0, 1],
                "bench": bench,
            }))
            .unwrap();
            let references = ModelPolicy {
                allow_references: true,
                ..ModelPolicy::default()
            };
            build_submission(r, &limits, &references)
        };
        let s = request(serde_json::json!({
            "records": [
                {"question": "q1", "choices": ["a", "b"], "answer": "B"},
                {"question": "q2", "choices": ["a", "b", "c"], "answer": 0}
            ],
            "price_per_mtok": 0.5
        }))
        .unwrap();
        let run = s.graded_run.as_ref().unwrap();
        assert_eq!(run.problems.len(), 2);
        assert_eq!(run.template, powerfleet_datasets::Template::MultipleChoice);
        assert_eq!(run.price_per_mtok, Some(0.5));
        let jobs = s.jobs(&CorrelationId::generate(), None).unwrap();
        assert_eq!(jobs.len(), 4);
        assert!(
            jobs.iter()
                .all(|j| j.grading.as_ref().unwrap().grader == powerfleet_jobs::Grader::Choice)
        );

        let s = request(serde_json::json!({"builtin": "suite"})).unwrap();
        assert_eq!(
            s.graded_run.unwrap().problems.len(),
            powerfleet_datasets::builtin_suite().len()
        );

        let message = |bench| match request(bench) {
            Err(ApiError::Unprocessable(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = message(serde_json::json!({"records": [
            {"prompt": "x", "answer": "1"}, {"prompt": "y"}
        ]}));
        assert!(
            m.contains("bench.records") && m.contains("line 2: missing `answer`"),
            "{m}"
        );
        let m = message(
            serde_json::json!({"records": [{"prompt": "x", "answer": "1"}], "template": "cot"}),
        );
        assert!(
            m.contains("bench.template must be one of plain, math-cot, multiple-choice"),
            "{m}"
        );
        let m = message(serde_json::json!({"builtin": "suite", "records": []}));
        assert!(m.contains("exactly one of records"), "{m}");
        let m = message(serde_json::json!({"builtin": "gsm8k"}));
        assert!(m.contains("bench.builtin must be \"suite\""), "{m}");
        let r: SubmitRequest = serde_json::from_value(serde_json::json!({
            "model": "toy:pivot", "prompt": "", "bench": {"builtin": "suite"}
        }))
        .unwrap();
        assert!(
            matches!(build_submission(r, &limits, &ModelPolicy::default()), Err(ApiError::Unprocessable(m)) if m.contains("not both"))
        );
    }

    fn request(json: &str) -> Result<SubmitRequest, ApiError> {
        parse_submit_request(json.as_bytes())
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = request(r#"{"model": "toy:pivot", "promt": "A"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `promt`"), "{e}");
        let e = request(r#"{"model": "toy:pivot", "prompt": "A", "config": {"method": "power", "n_mcmc": "x"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("config.n_mcmc"), "{e}");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = request(r#"{"model": "#).unwrap_err();
        assert!(
            e.to_string().starts_with("request body is not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn submissions_take_defaults_and_check_prompts() {
        let limits = ApiLimits::default();
        let s = build_submission(
            request(r#"{"model": "toy:pivot", "prompt": "A"}"#).unwrap(),
            &limits,
            &ModelPolicy::default(),
        )
        .unwrap();
        assert_eq!(s.methods, vec![Method::Power]);
        assert_eq!(s.seeds, vec![0]);
        assert_eq!(s.chains, 1);
        assert!(s.batch);
        let s = build_submission(
            request(r#"{"model": "toy:pivot", "problems": [{"id": "q1", "prompt": "A"}, {"prompt_tokens": [0]}]}"#)
                .unwrap(),
            &limits,
            &ModelPolicy::default(),
        )
        .unwrap();
        let ids: Vec<_> = s.problems.iter().map(|p| p.id.clone().unwrap()).collect();
        assert_eq!(ids, ["q1", "2"]);
        let e = build_submission(
            request(r#"{"model": "toy:pivot", "problems": [{"prompt": "A", "prompt_tokens": [0]}, {}]}"#)
                .unwrap(),
            &limits,
            &ModelPolicy::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("problems[0]: give prompt or prompt_tokens, not both"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("problems[1]: missing field `prompt`"),
            "{e}"
        );
        let e = build_submission(
            request(r#"{"model": "toy:pivot"}"#).unwrap(),
            &limits,
            &ModelPolicy::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("got none of them"), "{e}");
    }

    #[test]
    fn the_job_limit_is_checked_before_anything_else() {
        let limits = ApiLimits {
            max_jobs_per_request: 5,
            ..ApiLimits::default()
        };
        let e = build_submission(
            request(r#"{"model": "toy:pivot", "prompt": "A", "seeds": [0, 1, 2], "chains": 2}"#)
                .unwrap(),
            &limits,
            &ModelPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.to_string().contains("at most 5"), "{e}");
        assert!(e.to_string().contains("max_jobs_per_request"), "{e}");
    }

    #[test]
    fn requests_name_configured_models_and_builtin_toys_only() {
        let policy = ModelPolicy::from_flags(
            &[
                "small".to_string(),
                "qwen=vllm+http://gpu:8000?model=Q".to_string(),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            policy.names,
            ["qwen", "small"].map(String::from).into_iter().collect()
        );
        for ok in ["small", "qwen", "toy:pivot", "toy:tiny", "toy:suite-arith"] {
            policy.check("model", ok).unwrap();
        }
        for bad in [
            "llamacpp+http://10.0.0.1:8080",
            "vllm+http://attacker/v1?model=x",
            "sglang+http://attacker",
            "toy:/etc/passwd",
            "toy:../models/m.json",
            "toy:pivot?delay_ms=100000",
            "toy:nope",
            "qwen2",
            "",
        ] {
            let e = ApiError::from(policy.check("model", bad).unwrap_err());
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
            let m = e.to_string();
            assert!(
                m.starts_with("model: ")
                    && m.contains("qwen, small")
                    && m.contains("toy:pivot")
                    && m.contains("--allow-model-references"),
                "{m}"
            );
        }
        // With references allowed: servers, files and options, but never credentials.
        let open = ModelPolicy {
            allow_references: true,
            ..policy.clone()
        };
        for ok in [
            "llamacpp+http://gpu:8080",
            "toy:pivot?delay_ms=5",
            "vllm+http://g?model=m",
        ] {
            open.check("model", ok).unwrap();
        }
        for p in [&policy, &open] {
            for bad in [
                "openai+http://attacker/v1?model=x&key_env=POWERFLEET_REDIS_URL",
                "llamacpp+http://gpu:8080?KEY_ENV=X",
                "toy:pivot?key%5Fenv=X",
            ] {
                let m = p.check("model", bad).unwrap_err().to_string();
                assert!(m.contains("credentials never come from a request"), "{m}");
            }
            for hosted in [
                "openai+http://attacker/v1?model=x",
                "anthropic+https://api.anthropic.com?model=c",
                "Gemini+https://g?model=m",
            ] {
                let m = p.check("model", hosted).unwrap_err().to_string();
                assert!(m.contains("hosted-API reference"), "{m}");
            }
        }
        for bad in [
            "",
            "=toy:pivot",
            "x=",
            "toy:pivot",
            "llamacpp+http://a",
            "a b",
            "a?b",
        ] {
            assert!(
                ModelPolicy::from_flags(&[bad.to_string()], false).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn api_submissions_refuse_references_and_the_suite_passes() {
        let limits = ApiLimits::default();
        let policy = ModelPolicy::from_flags(&["small".into()], false).unwrap();
        let e = build_submission(
            request(r#"{"model": "toy:/etc/passwd", "prompt": "A"}"#).unwrap(),
            &limits,
            &policy,
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let s = build_submission(
            request(r#"{"model": "small", "bench": {"builtin": "suite"}}"#).unwrap(),
            &limits,
            &policy,
        )
        .unwrap();
        assert!(s.graded_run.is_some());
        let e = build_submission(
            request(r#"{"model": "llamacpp+http://x", "bench": {"builtin": "suite"}}"#).unwrap(),
            &limits,
            &policy,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("model: "), "{e}");
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn client_errors_quote_a_prefix_of_input() {
        let long = "x".repeat(5000);
        let q = quote(&long);
        assert!(
            q.starts_with(&format!("\"{}\"…", "x".repeat(MAX_QUOTED_CHARS))),
            "{q}"
        );
        assert!(q.ends_with("(5000 characters)"), "{q}");
        assert_eq!(quote("abc"), "\"abc\"");
        for message in [
            format!("invalid type: string {long:?}, expected u64"),
            format!("unknown field `{long}`, expected one of `model`"),
            format!("problem {long}: unknown token \"zz\""),
            format!("got \"{}\\\"{long}\"", "y".repeat(199)),
        ] {
            let short = shorten_inputs(&message);
            assert!(short.len() < 400, "{short}");
            assert!(
                short.contains(&"x".repeat(100)) || short.contains("yyy"),
                "{short}"
            );
        }
        let m = shorten_inputs(&format!("got \"{}\\\"{long}\", expected", "y".repeat(199)));
        assert!(
            m.starts_with(&format!("got \"{}\"…", "y".repeat(199))),
            "{m}"
        );
        assert!(m.ends_with(", expected"), "{m}");
        assert_eq!(
            shorten_inputs("no route GET \"/v2\"; use `x`"),
            "no route GET \"/v2\"; use `x`"
        );
        let many = "word ".repeat(5000);
        assert!(shorten_inputs(&many).chars().count() < MAX_MESSAGE_CHARS + 100);
    }
}
