//! The OpenAI-compatible endpoints of `powerfleet serve`: `POST /v1/completions`,
//! `POST /v1/chat/completions` and `GET /v1/models`, so that eval harnesses and the OpenAI SDKs
//! reach power sampling unchanged.
//!
//! A request becomes a [`SubmitRequest`](crate::request::SubmitRequest) (each prompt a problem,
//! `n` chains of one seed) and takes the one submission path; its jobs run on the fleet like any
//! others, under a correlation id the response names in the `x-powerfleet-correlation-id`
//! header. The handler then watches the correlation's tally in Redis (`watch::watch`: a sleep
//! between polls, no thread held, no clock of its own; the log says what it waits for when
//! nothing moves), reads the results and answers in OpenAI's shape. If the client goes away
//! first (it disconnects, or the server's completion timeout passes), the handler's future is
//! dropped and the jobs are cancelled.
//!
//! Which sampler runs: the server's defaults for the model (`serve --openai-defaults`), with the
//! request's `power_sampling` object laid over them field by field; `max_tokens` sets the token
//! budget. `temperature` and `top_p` other than 1 are refused, not ignored: the target is p^α
//! of the base model at temperature 1, and the method's own options are what change it.
//!
//! The endpoints' parts: `settings` (per-model defaults and limits, the completion slots),
//! `wire` (the request bodies and how they are parsed), `translate` (a request's checks and what
//! it asks the fleet for), `context` (the prompt and budget against the model's context), `run`
//! (submitting a completion's jobs, waiting for them and reading their results), `respond` (the
//! answer in OpenAI's shape, JSON or an event stream) and `errors` (errors in OpenAI's shape).
//! This module holds the handlers.

mod context;
mod errors;
mod respond;
mod run;
mod settings;
mod translate;
mod wire;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use powerfleet_jobs::CorrelationId;
use serde_json::{Value, json};

pub use errors::{OpenAiError, reshape_error};
pub use settings::{
    DEFAULT_COMPLETION_TIMEOUT, DEFAULT_MAX_N, DEFAULT_MAX_WAITING, OpenAiSettings, Slots,
};

use crate::api::ApiState;
use errors::busy;
use respond::respond;
use run::run;
use translate::{Asked, asked_chat, asked_completion};
use wire::{Common, parse_body};

/// The response header that names the correlation id of a completion's jobs.
pub const CORRELATION_HEADER: &str = "x-powerfleet-correlation-id";

/// The request body, within the body timeout and the body limit.
async fn read_body(state: &ApiState, request: Request) -> Result<Bytes, OpenAiError> {
    use axum::extract::FromRequest;
    let read = tokio::time::timeout(state.openai.body_timeout, Bytes::from_request(request, &()));
    match read.await {
        Err(_) => Err(OpenAiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {} ms; send the whole body at once",
                state.openai.body_timeout.as_millis()
            ),
            param: None,
            kind: "invalid_request_error",
            code: None,
        }),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(crate::api::ApiError::BodyTooLarge {
                limit: state.limits.max_body_bytes,
            }
            .into())
        }
        Ok(Err(rejection)) => Err(OpenAiError::invalid(
            "body",
            format!("cannot read the request body: {rejection}"),
        )),
        Ok(Ok(body)) => Ok(body),
    }
}

/// The correlation id a request names in its `x-powerfleet-correlation-id` header, if any.
fn correlation_of(request: &Request) -> Result<Option<CorrelationId>, OpenAiError> {
    let Some(value) = request.headers().get(CORRELATION_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    text.parse()
        .map(Some)
        .map_err(|e: powerfleet_jobs::IdError| {
            OpenAiError::invalid(
                CORRELATION_HEADER,
                crate::api::shorten_inputs(&format!("{CORRELATION_HEADER}: {e}")),
            )
        })
}

/// Serves a request of either endpoint: takes a slot (or answers 503), reads, parses and checks
/// the request (`fields` and `check` are the endpoint's), runs its jobs and answers (`chat`
/// picks the answer's shape).
async fn serve<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    request: Request,
    check: impl FnOnce(&OpenAiSettings, Common, T) -> Result<Asked, OpenAiError>,
    chat: bool,
) -> Result<Response, OpenAiError> {
    let Some(_slot) = state.openai.slots.try_take() else {
        crate::metrics::openai_busy();
        return Err(busy(state.openai.slots.capacity()));
    };
    let correlation_id = correlation_of(&request)?;
    let body = read_body(state, request).await?;
    let (common, own) = parse_body::<T>(&body)?;
    drop(body);
    let mut asked = check(&state.openai, common, own)?;
    asked.correlation_id = correlation_id;
    let finished = run(state, &mut asked).await?;
    Ok(respond(&finished, &asked, chat))
}

/// `POST /v1/completions`.
pub async fn completions(State(state): State<ApiState>, request: Request) -> Response {
    serve(&state, request, asked_completion, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(state): State<ApiState>, request: Request) -> Response {
    serve(&state, request, asked_chat, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/models`: the model names live workers serve that a request may name (the operator's
/// configured names; every served name with `--allow-model-references`), then, while any worker
/// is live, the built-in toy models, which every worker runs.
pub async fn models(State(state): State<ApiState>) -> Response {
    let live = match state.queue.live_workers().await {
        Ok(live) => live,
        Err(e) => return OpenAiError::from(crate::api::ApiError::from(e)).into_response(),
    };
    let served: std::collections::BTreeSet<String> = live
        .iter()
        .flat_map(|w| w.models.iter().map(|m| m.name.clone()))
        .filter(|name| state.models.check("model", name).is_ok())
        .collect();
    let toys: Vec<String> = if live.is_empty() {
        Vec::new()
    } else {
        powerfleet_models::builtin::names()
            .map(|n| format!("toy:{n}"))
            .collect()
    };
    let data: Vec<Value> = served
        .into_iter()
        .chain(toys)
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "powerfleet"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
