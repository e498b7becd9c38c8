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
//! its own choosing; and it runs no code of its own: a graded run grades programming problems only
//! from a dataset the operator registered ([`crate::datasets::Datasets`], `GET /v1/datasets`).

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
    DEFAULT_MAX_JOBS_PER_REQUEST, DEFAULT_MAX_PAGE_BYTES, DEFAULT_MAX_PROMPT_BYTES,
    DEFAULT_MAX_REQUEST_JOB_BYTES, DEFAULT_MAX_REQUEST_PROMPT_BYTES, DEFAULT_MAX_TEMPLATE_BYTES,
    DEFAULT_RATE_LIMIT_PER_MINUTE, GradedRunRequest, MAX_QUOTED_CHARS, ModelPolicy, RequestError,
    RequestLimits, SubmitRequest, quote,
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
    pub limits: RequestLimits,
    /// Bearer tokens that may call the API; empty means no authentication (`powerfleet serve`
    /// refuses to start that way without `--insecure-no-auth`).
    pub tokens: std::sync::Arc<Vec<String>>,
    /// The models requests may name (default: the built-in toy models only).
    pub models: std::sync::Arc<ModelPolicy>,
    /// The datasets graded runs may name (`serve --dataset NAME=PATH`; default: none).
    pub datasets: std::sync::Arc<crate::datasets::Datasets>,
    /// How the OpenAI-compatible endpoints sample.
    pub openai: std::sync::Arc<crate::openai::OpenAiSettings>,
}

mod error;
mod guard;
mod handlers;

pub use error::{ApiError, shorten_inputs};
use guard::{authenticate, log_and_fix_up, no_route, require_json, with_rate_limit, wrong_method};
pub use guard::{bearer_token, token_matches};
pub use handlers::{CancelResponse, parse_submit_request};
use handlers::{
    cancel, get_batch, get_batch_report, get_correlation, get_datasets, get_job, get_workers,
    submit_jobs,
};

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
        ["v1", "datasets"] => "datasets",
        ["v1", "completions"] => "openai_completions",
        ["v1", "chat", "completions"] => "openai_chat_completions",
        ["v1", "models"] => "openai_models",
        _ => "other",
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
        .route("/v1/workers", get(get_workers))
        .route("/v1/datasets", get(get_datasets))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::Submission;
    use powerfleet_sampler::Method;

    /// A request's submission as the API makes it, with the API's error.
    fn build_submission(
        request: SubmitRequest,
        limits: &RequestLimits,
        models: &ModelPolicy,
    ) -> Result<Submission, ApiError> {
        request
            .into_submission(limits, models)
            .map_err(ApiError::from)
    }

    #[test]
    fn benchmark_requests_become_benchmark_submissions() {
        let limits = RequestLimits {
            max_body_bytes: 1 << 20,
            max_jobs_per_request: 1000,
            ..RequestLimits::default()
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
        assert!(
            m.contains("exactly one of dataset (a registered dataset), records"),
            "{m}"
        );
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
        let limits = RequestLimits::default();
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
        let limits = RequestLimits {
            max_jobs_per_request: 5,
            ..RequestLimits::default()
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
        let limits = RequestLimits::default();
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
