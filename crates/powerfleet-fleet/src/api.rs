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

use std::collections::BTreeSet;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use powerfleet_jobs::{BatchId, CorrelationId, JobId, Prompt};
use powerfleet_queue::{CancelOutcome, Queue, QueueError};
use powerfleet_sampler::{Method, SamplerConfig, TokenId};
use powerfleet_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tower_http::limit::RequestBodyLimitLayer;

use crate::control::cancel_job;
use crate::producer::{self, BatchLine, Problem, Receipt, Submission, SubmitError};
use crate::status::{self, JobView, Page, StatusError, StatusReport};

/// Default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default largest number of jobs one request may create.
pub const DEFAULT_MAX_JOBS_PER_REQUEST: usize = 10_000;
/// Default largest prompt (text bytes, or 4 bytes per token id) or dataset record: 256 KiB.
pub const DEFAULT_MAX_PROMPT_BYTES: usize = 256 << 10;
/// Default most characters of a problem id, dataset record id or submission key.
pub const DEFAULT_MAX_ID_CHARS: usize = 200;
/// Default largest user template (`bench.template_text`): 64 KiB.
pub const DEFAULT_MAX_TEMPLATE_BYTES: usize = 64 << 10;
/// Default largest total of prompt bytes over the jobs of one request (each prompt counted once
/// per job it is sent with): 64 MiB.
pub const DEFAULT_MAX_REQUEST_PROMPT_BYTES: usize = 64 << 20;
/// Default most proposal tokens one job may generate, `n_mcmc × max_new_tokens`: 10 million.
pub const DEFAULT_MAX_JOB_TOKENS: u64 = 10_000_000;
/// Default requests per minute per bearer token.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
/// Most problem errors reported for one request.
const MAX_REPORTED_PROBLEMS: usize = 20;
/// Most characters of one input value a client error quotes.
pub const MAX_QUOTED_CHARS: usize = 200;
/// Most characters of a client error message.
const MAX_MESSAGE_CHARS: usize = 4096;

/// Limits on what one request may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest number of jobs (problems × methods × seeds × chains) one request may create.
    pub max_jobs_per_request: usize,
    /// Largest prompt in bytes (`prompt`, each `problems[i].prompt`, each `bench.records[i]` as
    /// JSON); token-id prompts count 4 bytes per id.
    pub max_prompt_bytes: usize,
    /// Most characters of a problem id (`problems[i].id`, a dataset record's id) and of
    /// `submission_key`. Correlation ids are held to [`powerfleet_jobs`]'s own limit.
    pub max_id_chars: usize,
    /// Largest `bench.template_text` in bytes.
    pub max_template_bytes: usize,
    /// Largest sum over the jobs of a request of the bytes of their prompts (what the request
    /// writes to Redis, roughly).
    pub max_request_prompt_bytes: usize,
    /// Most proposal tokens one job may generate: `n_mcmc × max_new_tokens` for MCMC methods,
    /// `max_new_tokens` for the others.
    pub max_job_tokens: u64,
    /// Requests per minute per bearer token (with no tokens configured: for all callers
    /// together); 0 turns the limit off. Over it: 429 with `Retry-After`.
    pub rate_limit_per_minute: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_jobs_per_request: DEFAULT_MAX_JOBS_PER_REQUEST,
            max_prompt_bytes: DEFAULT_MAX_PROMPT_BYTES,
            max_id_chars: DEFAULT_MAX_ID_CHARS,
            max_template_bytes: DEFAULT_MAX_TEMPLATE_BYTES,
            max_request_prompt_bytes: DEFAULT_MAX_REQUEST_PROMPT_BYTES,
            max_job_tokens: DEFAULT_MAX_JOB_TOKENS,
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
        }
    }
}

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
}

/// Which models an API request may name. The CLI's `submit` takes any model reference (its user
/// is the operator); a request to the API is a token holder's, so it may name only
///
/// - a model name the operator configured (`serve --model NAME`, as the workers register it with
///   `--model NAME=REFERENCE`), or
/// - a built-in toy model `toy:NAME` (no file path, no `?` options).
///
/// Anything else (an inference-server URL, a toy model file, toy options) would let a token
/// holder choose where workers send requests and what the API reads, and is refused unless the
/// operator allows references (`serve --allow-model-references`). Credentials never come from a
/// request: a reference with `key_env`, and any hosted-API reference (which would send the
/// workers' API key to a URL of the request's choosing), is refused even then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    /// Model names the operator configured; the workers resolve them.
    pub names: BTreeSet<String>,
    /// Whether requests may also name inference-server references, toy model files and toy
    /// options.
    pub allow_references: bool,
}

impl ModelPolicy {
    /// A policy from the values of `serve --model`: `NAME`, or `NAME=REFERENCE` as given to the
    /// workers (only the name matters to the API; the workers resolve it).
    pub fn from_flags(entries: &[String], allow_references: bool) -> Result<ModelPolicy, String> {
        let mut names = BTreeSet::new();
        for entry in entries {
            let name = match entry.split_once('=') {
                Some((name, reference)) if name.is_empty() || reference.is_empty() => {
                    return Err(format!(
                        "--model must be NAME or NAME=REFERENCE with both parts non-empty, got {}",
                        quote(entry)
                    ));
                }
                Some((name, _)) => name,
                None => entry.as_str(),
            };
            if name.is_empty()
                || name.starts_with("toy:")
                || powerfleet_backends::is_http_reference(name)
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '?')
            {
                return Err(format!(
                    "--model takes a model name as the workers register it (--model NAME=REFERENCE on the workers), such as qwen or qwen=vllm+http://gpu:8000?model=Qwen/Qwen2.5-7B; got {} (built-in toy models toy:NAME are always accepted; references are accepted with --allow-model-references)",
                    quote(entry)
                ));
            }
            names.insert(name.to_string());
        }
        Ok(ModelPolicy {
            names,
            allow_references,
        })
    }

    /// Checks the model a request names in `field`; 400 naming the field and what is allowed.
    pub fn check(&self, field: &str, model: &str) -> Result<(), ApiError> {
        if self.names.contains(model) {
            return Ok(());
        }
        if let Some(name) = model.strip_prefix("toy:")
            && powerfleet_models::builtin::names().any(|n| n == name)
        {
            return Ok(());
        }
        let lower = model.to_ascii_lowercase();
        if lower.contains("key_env") || lower.contains("key%5fenv") {
            return Err(ApiError::BadRequest(format!(
                "{field}: {} names a credential (key_env); credentials never come from a request. Name a model this API was started with ({})",
                quote(model),
                self.allowed()
            )));
        }
        if ["openai+", "anthropic+", "gemini+"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Err(ApiError::BadRequest(format!(
                "{field}: {} is a hosted-API reference, which would send the workers' API key to a URL of the request's choosing; the operator registers hosted models by name (serve --model NAME and the workers' --model NAME=REFERENCE). Allowed: {}",
                quote(model),
                self.allowed()
            )));
        }
        if self.allow_references {
            return Ok(());
        }
        Err(ApiError::BadRequest(format!(
            "{field}: {} is not allowed; name {}. Server URLs, toy model files and toy options are refused (the operator may allow them with serve --allow-model-references)",
            quote(model),
            self.allowed()
        )))
    }

    /// What a request may name, for error messages.
    fn allowed(&self) -> String {
        let toys = powerfleet_models::builtin::names()
            .map(|n| format!("toy:{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.names.is_empty() {
            format!(
                "a built-in toy model ({toys}); this API was started with no model names (serve --model NAME)"
            )
        } else {
            format!(
                "a model this API was started with ({}) or a built-in toy model ({toys})",
                self.names.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// `value` quoted, cut to its first [`MAX_QUOTED_CHARS`] characters: `"prefix"… (N characters)`.
pub fn quote(value: &str) -> String {
    let n = value.chars().count();
    if n <= MAX_QUOTED_CHARS {
        format!("{value:?}")
    } else {
        let prefix: String = value.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{prefix:?}… ({n} characters)")
    }
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
        _ => "other",
    }
}

/// The body of `POST /v1/jobs`. Exactly one of `prompt`, `prompt_tokens` and `problems` is given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Model reference, such as `toy:pivot`.
    pub model: String,
    /// One prompt as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// One prompt as token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<Vec<TokenId>>,
    /// Several problems, as the lines of a batch file (the id defaults to the 1-based index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<BatchLine>>,
    /// Base sampler configuration (default: every option at its default for method `power`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SamplerConfig>,
    /// Methods to run every problem with (default: the config's method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<Method>>,
    /// Seeds per problem and method (default: `[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    /// Chains per (problem, method, seed) (default: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<u64>,
    /// Correlation id (generated if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    /// Client key that makes resubmission idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_key: Option<String>,
    /// Let MCMC jobs run as one sample where the backend cannot run MCMC (default false).
    #[serde(default)]
    pub fallback_single_sample: bool,
    /// Format text prompts through the model's chat template (default false).
    #[serde(default)]
    pub chat: bool,
    /// A benchmark run instead of prompts: dataset records with reference answers, graded by the
    /// collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchRequest>,
}

/// The `bench` of a `POST /v1/jobs` request: the records of a dataset (or the built-in suite), a
/// template and a grader, as `powerfleet submit --bench` takes them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchRequest {
    /// Dataset records, as the lines of a JSONL or multiple-choice dataset file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<serde_json::Value>>,
    /// `suite` for the built-in suite on its toy models (instead of `records`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// `jsonl` or `multiple-choice` (default: `multiple-choice` when the first record has
    /// `choices`, else `jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// A built-in template: `plain`, `math-cot`, `multiple-choice` (default: `multiple-choice`
    /// for multiple-choice records, else `plain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A user template holding `{question}` (instead of `template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_text: Option<String>,
    /// The grader, e.g. `{"kind": "math"}` or `{"kind": "regex", "pattern": "answer: (\\d+)"}`
    /// (default: `choice` for multiple choice, else `math`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grader: Option<powerfleet_jobs::Grader>,
    /// Price of generated tokens in US dollars per million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_mtok: Option<f64>,
}

/// The benchmark run of a request; errors name the `bench` field and the record.
fn bench_of(bench: BenchRequest) -> Result<producer::BenchRun, ApiError> {
    use powerfleet_datasets::{Format, Template};
    let bad = |m: String| ApiError::Unprocessable(m);
    let mut run = match (bench.records, bench.builtin.as_deref()) {
        (None, Some("suite")) => {
            if bench.template.is_some() || bench.template_text.is_some() || bench.grader.is_some() {
                return Err(bad(
                    "bench.builtin suite has its own prompts and grader; drop bench.template, bench.template_text and bench.grader".into(),
                ));
            }
            producer::BenchRun::builtin_suite()
        }
        (None, Some(other)) => {
            return Err(bad(format!(
                "bench.builtin must be \"suite\", got {}",
                quote(other)
            )));
        }
        (Some(records), None) => {
            let text: String = records.iter().map(|r| format!("{r}\n")).collect();
            let format = match bench.format.as_deref() {
                // Multiple choice when the first record has `choices`, as for files.
                None if records.first().is_some_and(|r| r.get("choices").is_some()) => {
                    Format::MultipleChoice
                }
                None => Format::Jsonl,
                Some("jsonl") => Format::Jsonl,
                Some("multiple-choice") => Format::MultipleChoice,
                Some(other) => {
                    return Err(bad(format!(
                        "bench.format must be jsonl or multiple-choice, got {}",
                        quote(other)
                    )));
                }
            };
            let problems = powerfleet_datasets::parse(&text, format).map_err(|e| {
                bad(format!(
                    "bench.records (line N is record N, counting from 1): {e}"
                ))
            })?;
            let template = match (bench.template.as_deref(), bench.template_text) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "give bench.template or bench.template_text, not both".into()
                    ));
                }
                (None, Some(text)) => {
                    Template::user("bench.template_text", text).map_err(|e| bad(e.to_string()))?
                }
                (Some(name), None) => Template::builtin(name).ok_or_else(|| {
                    bad(format!(
                        "bench.template must be one of plain, math-cot, multiple-choice (or give bench.template_text), got {}",
                        quote(name)
                    ))
                })?,
                (None, None) => Template::default_for(format),
            };
            producer::BenchRun {
                problems: problems
                    .into_iter()
                    .map(|problem| producer::BenchProblem {
                        problem,
                        model: None,
                    })
                    .collect(),
                template,
                grader: bench.grader,
                price_per_mtok: None,
            }
        }
        _ => {
            return Err(bad(
                "bench needs exactly one of records (dataset records) and builtin (\"suite\")"
                    .into(),
            ));
        }
    };
    run.price_per_mtok = bench.price_per_mtok;
    Ok(run)
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
    let post_route = matches!(route_name(request.uri().path()), "jobs" | "cancel");
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
        "no route {} {}; the routes are POST /v1/jobs, GET /v1/jobs/{{id}}, POST /v1/jobs/{{id}}/cancel, GET /v1/batches/{{id}}, GET /v1/batches/{{id}}/report and GET /v1/correlations/{{id}}",
        request.method(),
        quote(request.uri().path())
    ))
}

async fn wrong_method(request: Request) -> Response {
    let path = request.uri().path();
    let allowed = if path.ends_with("/cancel") || path == "/v1/jobs" {
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
    let submission = build_submission(request, &state.limits, &state.models)?;
    let receipt: Receipt = producer::submit(&state.queue, &submission).await?;
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

/// Turns a request into a submission (a batch), checking what the producer does not: the models
/// it names (`models`), exactly one kind of prompt, complete problems, and the per-request job
/// limit.
pub fn build_submission(
    request: SubmitRequest,
    limits: &ApiLimits,
    models: &ModelPolicy,
) -> Result<Submission, ApiError> {
    models.check("model", &request.model)?;
    check_input_sizes(&request, limits)?;
    // Bytes of each problem's prompt, for the request total: for a benchmark, the record as JSON
    // plus the template.
    let mut prompt_bytes: Vec<usize> = Vec::new();
    let bench = match request.bench {
        Some(b) => {
            if request.prompt.is_some()
                || request.prompt_tokens.is_some()
                || request.problems.is_some()
            {
                return Err(ApiError::Unprocessable(
                    "give bench or prompts (prompt, prompt_tokens, problems), not both".into(),
                ));
            }
            let template_bytes = b.template_text.as_ref().map_or(0, String::len);
            if let Some(records) = &b.records {
                prompt_bytes = records
                    .iter()
                    .map(|r| json_len(r) + template_bytes)
                    .collect();
            }
            let run = bench_of(b)?;
            if prompt_bytes.is_empty() {
                prompt_bytes = run
                    .problems
                    .iter()
                    .map(|p| p.problem.question.len())
                    .collect();
            }
            for p in &run.problems {
                check_id(
                    &format!("bench.records: record id {}", quote(&p.problem.id)),
                    &p.problem.id,
                    limits,
                )?;
            }
            // The built-in suite names its own (toy) models, checked like the request's.
            for (i, p) in run.problems.iter().enumerate() {
                if let Some(model) = &p.model {
                    models.check(
                        &format!("bench problem {} (index {i}) model", quote(&p.problem.id)),
                        model,
                    )?;
                }
            }
            Some(run)
        }
        None => None,
    };
    let problems = match (request.prompt, request.prompt_tokens, request.problems) {
        _ if bench.is_some() => Vec::new(),
        (Some(text), None, None) => vec![Problem {
            id: None,
            prompt: Prompt::Text(text),
        }],
        (None, Some(tokens), None) => vec![Problem {
            id: None,
            prompt: Prompt::Tokens(tokens),
        }],
        (None, None, Some(lines)) => problems_of(lines)?,
        (prompt, tokens, lines) => {
            let given: Vec<&str> = [
                ("prompt", prompt.is_some()),
                ("prompt_tokens", tokens.is_some()),
                ("problems", lines.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            let got = if given.is_empty() {
                "none of them".to_string()
            } else {
                given.join(" and ")
            };
            return Err(ApiError::Unprocessable(format!(
                "give exactly one of prompt (text), prompt_tokens (token ids) or problems (a list of {{\"id\", \"prompt\" or \"prompt_tokens\"}}), got {got}"
            )));
        }
    };
    let config = request
        .config
        .unwrap_or_else(|| SamplerConfig::new(Method::Power));
    let methods = request.methods.unwrap_or_else(|| vec![config.method]);
    let seeds = request.seeds.unwrap_or_else(|| vec![0]);
    let chains = request.chains.unwrap_or(1);
    let n_problems = bench.as_ref().map_or(problems.len(), |b| b.problems.len());
    let per_problem = methods.len() as u128 * seeds.len() as u128 * u128::from(chains);
    let total = n_problems as u128 * per_problem;
    if total > limits.max_jobs_per_request as u128 {
        return Err(ApiError::Unprocessable(format!(
            "this request makes {total} jobs (problems x methods x seeds x chains = {} x {} x {} x {chains}); at most {} are accepted per request (max_jobs_per_request), split it into several requests",
            n_problems,
            methods.len(),
            seeds.len(),
            limits.max_jobs_per_request
        )));
    }
    if bench.is_none() {
        prompt_bytes = problems.iter().map(|p| prompt_len(&p.prompt)).collect();
    }
    let request_bytes: u128 = prompt_bytes.iter().map(|&b| b as u128).sum::<u128>() * per_problem;
    if request_bytes > limits.max_request_prompt_bytes as u128 {
        return Err(ApiError::Unprocessable(format!(
            "this request sends {request_bytes} prompt bytes in all (each prompt once per job: {} prompt bytes x {per_problem} jobs per problem, methods x seeds x chains); at most {} bytes are accepted per request (max_request_prompt_bytes), send fewer seeds, methods or chains per request or shorter prompts",
            prompt_bytes.iter().sum::<usize>(),
            limits.max_request_prompt_bytes
        )));
    }
    check_job_tokens(&config, &methods, limits)?;
    Ok(Submission {
        model: request.model,
        config,
        methods,
        problems,
        seeds,
        chains,
        correlation_id: request.correlation_id,
        batch: true,
        submission_key: request.submission_key,
        fallback_single_sample: request.fallback_single_sample,
        chat: request.chat,
        bench,
    })
}

/// Bytes of a prompt: its text, or 4 bytes per token id.
fn prompt_len(prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Text(t) => t.len(),
        Prompt::Tokens(ids) => ids.len().saturating_mul(4),
    }
}

/// Bytes of a JSON value as compact JSON.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// 422 if `id` (named by `field`) is longer than `max_id_chars`.
fn check_id(field: &str, id: &str, limits: &ApiLimits) -> Result<(), ApiError> {
    let n = id.chars().count();
    if n > limits.max_id_chars {
        return Err(ApiError::Unprocessable(format!(
            "{field} is {n} characters long ({}); at most {} are accepted (max_id_chars)",
            quote(id),
            limits.max_id_chars
        )));
    }
    Ok(())
}

/// 422 if a prompt named by `field` is larger than `max_prompt_bytes`.
fn check_prompt_size(field: &str, bytes: usize, limits: &ApiLimits) -> Result<(), ApiError> {
    if bytes > limits.max_prompt_bytes {
        return Err(ApiError::Unprocessable(format!(
            "{field} is {bytes} bytes (token ids count 4 bytes each); at most {} bytes are accepted (max_prompt_bytes)",
            limits.max_prompt_bytes
        )));
    }
    Ok(())
}

/// Checks the size of every input of a request before anything is built from it: prompts,
/// problem ids, the submission key, dataset records and the template text.
fn check_input_sizes(request: &SubmitRequest, limits: &ApiLimits) -> Result<(), ApiError> {
    if let Some(text) = &request.prompt {
        check_prompt_size("prompt", text.len(), limits)?;
    }
    if let Some(ids) = &request.prompt_tokens {
        check_prompt_size("prompt_tokens", ids.len().saturating_mul(4), limits)?;
    }
    for (i, line) in request.problems.iter().flatten().enumerate() {
        if let Some(id) = &line.id {
            check_id(&format!("problems[{i}].id"), id, limits)?;
        }
        if let Some(text) = &line.prompt {
            check_prompt_size(&format!("problems[{i}].prompt"), text.len(), limits)?;
        }
        if let Some(ids) = &line.prompt_tokens {
            check_prompt_size(
                &format!("problems[{i}].prompt_tokens"),
                ids.len().saturating_mul(4),
                limits,
            )?;
        }
    }
    if let Some(key) = &request.submission_key {
        check_id("submission_key", key, limits)?;
    }
    if let Some(bench) = &request.bench {
        if let Some(text) = &bench.template_text
            && text.len() > limits.max_template_bytes
        {
            return Err(ApiError::Unprocessable(format!(
                "bench.template_text is {} bytes; at most {} bytes are accepted (max_template_bytes)",
                text.len(),
                limits.max_template_bytes
            )));
        }
        for (i, record) in bench.records.iter().flatten().enumerate() {
            check_prompt_size(&format!("bench.records[{i}]"), json_len(record), limits)?;
        }
    }
    Ok(())
}

/// 422 if a job of `methods` under `config` may generate more than `max_job_tokens` proposal
/// tokens: `n_mcmc × max_new_tokens` for MCMC methods, `max_new_tokens` for the others.
fn check_job_tokens(
    config: &SamplerConfig,
    methods: &[Method],
    limits: &ApiLimits,
) -> Result<(), ApiError> {
    let n_mcmc = u64::from(config.n_mcmc);
    let max_new = u64::from(config.max_new_tokens);
    if let Some(m) = methods.iter().find(|m| m.is_mcmc())
        && n_mcmc.saturating_mul(max_new) > limits.max_job_tokens
    {
        return Err(ApiError::Unprocessable(format!(
            "config.n_mcmc x config.max_new_tokens = {n_mcmc} x {max_new} = {} proposal tokens per job (method {m}); at most {} are accepted per job (max_job_tokens, serve --max-job-tokens); lower n_mcmc or max_new_tokens",
            n_mcmc * max_new,
            limits.max_job_tokens
        )));
    }
    if max_new > limits.max_job_tokens {
        return Err(ApiError::Unprocessable(format!(
            "config.max_new_tokens = {max_new} tokens per job; at most {} are accepted per job (max_job_tokens, serve --max-job-tokens)",
            limits.max_job_tokens
        )));
    }
    Ok(())
}

/// The problems of a request, with batch-file semantics: each has exactly one of `prompt` and
/// `prompt_tokens`; the id defaults to the 1-based index.
fn problems_of(lines: Vec<BatchLine>) -> Result<Vec<Problem>, ApiError> {
    if lines.is_empty() {
        return Err(ApiError::Unprocessable(
            "problems must hold at least one problem, got an empty list".into(),
        ));
    }
    let mut problems = Vec::with_capacity(lines.len());
    let mut errors = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        let prompt = match (line.prompt, line.prompt_tokens) {
            (Some(text), None) => Prompt::Text(text),
            (None, Some(tokens)) => Prompt::Tokens(tokens),
            (Some(_), Some(_)) => {
                errors.push(format!(
                    "problems[{i}]: give prompt or prompt_tokens, not both"
                ));
                continue;
            }
            (None, None) => {
                errors.push(format!(
                    "problems[{i}]: missing field `prompt` (text) or `prompt_tokens` (token ids)"
                ));
                continue;
            }
        };
        problems.push(Problem {
            id: Some(line.id.unwrap_or_else(|| (i + 1).to_string())),
            prompt,
        });
        if errors.len() >= MAX_REPORTED_PROBLEMS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(problems)
    } else {
        Err(ApiError::Unprocessable(errors.join("; ")))
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
        .map_err(ApiError::BadRequest)?;
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
        let run = s.bench.as_ref().unwrap();
        assert_eq!(run.problems.len(), 2);
        assert_eq!(run.template, powerfleet_datasets::Template::MultipleChoice);
        assert_eq!(run.price_per_mtok, Some(0.5));
        let jobs = s.jobs(&CorrelationId::generate(), None).unwrap();
        assert_eq!(jobs.len(), 4);
        assert!(
            jobs.iter()
                .all(|j| j.bench.as_ref().unwrap().grader == powerfleet_jobs::Grader::Choice)
        );

        let s = request(serde_json::json!({"builtin": "suite"})).unwrap();
        assert_eq!(
            s.bench.unwrap().problems.len(),
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
            let e = policy.check("model", bad).unwrap_err();
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
        assert!(s.bench.is_some());
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
