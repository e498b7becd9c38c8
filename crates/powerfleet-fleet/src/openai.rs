//! The OpenAI-compatible endpoints of `powerfleet serve`: `POST /v1/completions`,
//! `POST /v1/chat/completions` and `GET /v1/models`, so that eval harnesses and the OpenAI SDKs
//! reach power sampling unchanged.
//!
//! A request becomes a [`SubmitRequest`] (each prompt a problem, `n` chains of one seed) and
//! takes the one submission path; its jobs run on the fleet like any others, under a
//! correlation id the response names in the `x-powerfleet-correlation-id` header. The handler
//! then watches the correlation's tally in Redis (`watch::watch`: a sleep between polls, no
//! thread held, no clock of its own; the log says what it waits for when nothing moves), reads
//! the results and answers in OpenAI's shape. If the client goes away first (it disconnects, or
//! the server's completion timeout passes), the handler's future is dropped and the jobs are
//! cancelled.
//!
//! Which sampler runs: the server's defaults for the model (`serve --openai-defaults`), with the
//! request's `power_sampling` object laid over them field by field; `max_tokens` sets the token
//! budget. `temperature` and `top_p` other than 1 are refused, not ignored: the target is p^α
//! of the base model at temperature 1, and the method's own options are what change it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use powerfleet_jobs::{ChatMessage, CorrelationId, ErrorCode, JobId, JobResult, JobStatus, now_ms};
use powerfleet_sampler::{Method, SamplerConfig, TokenId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::producer::BatchLine;
use crate::request::{RequestError, SubmitRequest, quote};
use crate::watch::{WatchPolicy, Watched};

/// The response header that names the correlation id of a completion's jobs.
pub const CORRELATION_HEADER: &str = "x-powerfleet-correlation-id";
/// Default most chains (`n`) per prompt.
pub const DEFAULT_MAX_N: u32 = 64;
/// Default most completions served at once (read, submitted, waited for or answered); more get
/// 503 with `Retry-After`.
pub const DEFAULT_MAX_WAITING: usize = 64;
/// What a completion refused for want of a slot is told to wait before it tries again, in
/// seconds.
const BUSY_RETRY_AFTER_S: u64 = 2;
/// Default longest wait for a completion's jobs, after which they are cancelled.
pub const DEFAULT_COMPLETION_TIMEOUT: Duration = Duration::from_secs(3600);
/// First and longest pause between two reads of a waiting completion's tally.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How long a completion's jobs may stand still before the log says what it waits for (and
/// again after each further such stretch).
const STANDSTILL_NOTICE: Duration = Duration::from_secs(60);

/// How the OpenAI-compatible endpoints sample: per-model defaults and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiSettings {
    /// The sampler of a model that `defaults` does not name: method `power` with every option
    /// at its default, unless `serve --openai-defaults '*=...'` sets another.
    pub default: SamplerConfig,
    /// Per model name, the sampler an unmodified client gets.
    pub defaults: BTreeMap<String, SamplerConfig>,
    /// Most chains (`n`) per prompt.
    pub max_n: u32,
    /// How long the request body may take to arrive (the completion itself may take up to the
    /// server's completion timeout).
    pub body_timeout: Duration,
    /// The slots of completions served at once (`serve --openai-max-waiting`).
    pub slots: Slots,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            default: SamplerConfig::new(Method::Power),
            defaults: BTreeMap::new(),
            max_n: DEFAULT_MAX_N,
            body_timeout: Duration::from_secs(30),
            slots: Slots::new(DEFAULT_MAX_WAITING),
        }
    }
}

/// The slots of the completions a server handles at once: a request takes one before it reads
/// its body and gives it back once answered, so what all completions hold together is at most
/// this many times what one holds. Clones share the slots.
#[derive(Clone, Debug)]
pub struct Slots {
    semaphore: std::sync::Arc<tokio::sync::Semaphore>,
    capacity: usize,
}

impl Slots {
    /// `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Slots {
        let capacity = capacity.max(1);
        Slots {
            semaphore: std::sync::Arc::new(tokio::sync::Semaphore::new(capacity)),
            capacity,
        }
    }

    /// How many completions may be served at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A slot, or `None` when every slot is taken.
    fn try_take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }
}

impl PartialEq for Slots {
    fn eq(&self, other: &Slots) -> bool {
        self.capacity == other.capacity
    }
}

impl OpenAiSettings {
    /// Settings from the values of `serve --openai-defaults MODEL=JSON` (`*` for every model),
    /// each JSON a job configuration such as `{"method": "power", "alpha": 4, "n_mcmc": 10}`.
    pub fn from_flags(entries: &[String], max_n: u32) -> Result<OpenAiSettings, RequestError> {
        let mut settings = OpenAiSettings {
            max_n,
            ..OpenAiSettings::default()
        };
        for entry in entries {
            let Some((model, config)) = entry.split_once('=') else {
                return Err(RequestError::BadRequest(format!(
                    "--openai-defaults must be MODEL=JSON (or *=JSON for every model), such as toy:pivot={{\"method\":\"power\",\"alpha\":4}}; got {}",
                    quote(entry)
                )));
            };
            let config: SamplerConfig = serde_json::from_str(config).map_err(|e| {
                RequestError::BadRequest(format!(
                    "--openai-defaults {model}: not a job configuration ({e}); give JSON such as {{\"method\":\"power\",\"alpha\":4,\"n_mcmc\":10}}"
                ))
            })?;
            config
                .validate()
                .map_err(|e| RequestError::BadRequest(format!("--openai-defaults {model}: {e}")))?;
            if model == "*" {
                settings.default = config;
            } else {
                settings.defaults.insert(model.to_string(), config);
            }
        }
        Ok(settings)
    }

    /// The sampler for `model`, with `overlay` (the request's `power_sampling`) laid over the
    /// model's defaults field by field. An overlay that names another method starts from that
    /// method's own defaults instead, so that no option of the model's method carries over.
    pub fn config_for(
        &self,
        model: &str,
        overlay: Option<&serde_json::Map<String, Value>>,
    ) -> Result<SamplerConfig, OpenAiError> {
        let base = self.defaults.get(model).unwrap_or(&self.default);
        let Some(overlay) = overlay else {
            return Ok(base.clone());
        };
        let mut merged = match serde_json::to_value(base) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a sampler configuration serializes as an object"),
        };
        if let Some(method) = overlay.get("method")
            && Some(method) != merged.get("method")
        {
            merged = serde_json::Map::from_iter([("method".to_string(), method.clone())]);
        }
        for (key, value) in overlay {
            merged.insert(key.clone(), value.clone());
        }
        let config: SamplerConfig = serde_json::from_value(Value::Object(merged))
            .map_err(|e| OpenAiError::invalid("power_sampling", format!("power_sampling: {e}")))?;
        config
            .validate()
            .map_err(|e| OpenAiError::invalid("power_sampling", format!("power_sampling: {e}")))?;
        Ok(config)
    }
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiError {
    /// The status code.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// OpenAI's error type: `invalid_request_error`, `server_error`, ...
    pub kind: &'static str,
    /// OpenAI's machine-readable `code` where one names the cause
    /// (`context_length_exceeded`, `model_not_found`, ...).
    pub code: Option<&'static str>,
}

impl OpenAiError {
    /// 400 naming `param`.
    pub fn invalid(param: &str, message: String) -> OpenAiError {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message,
            param: Some(param.to_string()),
            kind: "invalid_request_error",
            code: None,
        }
    }

    /// The same error, naming `param` as the field at fault.
    fn at(self, param: &str) -> OpenAiError {
        OpenAiError {
            param: Some(param.to_string()),
            ..self
        }
    }

    fn server(status: StatusCode, message: String) -> OpenAiError {
        OpenAiError {
            status,
            message,
            param: None,
            kind: "server_error",
            code: None,
        }
    }
}

/// The status the job API gives it (400 or 422), as an `invalid_request_error`.
impl From<RequestError> for OpenAiError {
    fn from(e: RequestError) -> Self {
        crate::api::ApiError::from(e).into()
    }
}

impl From<crate::api::ApiError> for OpenAiError {
    fn from(e: crate::api::ApiError) -> Self {
        let status = e.status();
        let mut message = e.to_string();
        if status.is_client_error() {
            message = crate::api::shorten_inputs(&message);
        }
        OpenAiError {
            status,
            message,
            param: None,
            kind: if status.is_client_error() {
                "invalid_request_error"
            } else {
                "server_error"
            },
            code: None,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let busy = self.status == StatusCode::SERVICE_UNAVAILABLE && self.param.is_none();
        if self.status.is_server_error() && !busy {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "openai request failed");
        }
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if busy {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_S));
        }
        response
    }
}

/// `prompt` of a completion request: text, token ids, or a list of either (a batch of prompts).
/// `[]` is one empty token-id prompt (the toy models' usual prompt).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum PromptInput {
    Text(String),
    Tokens(Vec<TokenId>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<TokenId>>),
}

/// `stop`: one string or a list.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum StopInput {
    One(String),
    Many(Vec<String>),
}

impl StopInput {
    fn into_vec(self) -> Vec<String> {
        match self {
            StopInput::One(s) => vec![s],
            StopInput::Many(v) => v,
        }
    }
}

/// The fields both request kinds share.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<StopInput>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    power_sampling: Option<serde_json::Map<String, Value>>,
    /// vLLM's name: also return each choice's token ids.
    #[serde(default)]
    return_token_ids: Option<bool>,
    /// OpenAI's string key-value pairs about the request; its `label` becomes the submission's
    /// label, recorded with every result. Other keys are ignored.
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// The body of `POST /v1/completions` (unknown fields are refused by [`parse_body`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct CompletionRequest {
    prompt: Option<PromptInput>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    logprobs: Option<u32>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    best_of: Option<u32>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    logit_bias: Option<serde_json::Map<String, Value>>,
}

/// One message of a chat request: `content` as text or as a list of text parts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct MessageInput {
    role: String,
    content: ContentInput,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum ContentInput {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// The body of `POST /v1/chat/completions` (unknown fields are refused by [`parse_body`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct ChatRequest {
    messages: Option<Vec<MessageInput>>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u32>,
    #[serde(default)]
    logit_bias: Option<serde_json::Map<String, Value>>,
}

/// What a request asks the fleet for, whichever endpoint it came through.
#[derive(Debug)]
struct Asked {
    model: String,
    prompts: Vec<BatchLine>,
    config: SamplerConfig,
    n: u32,
    seed: u64,
    stop: Vec<String>,
    logprobs: bool,
    token_ids: bool,
    stream: bool,
    include_usage: bool,
    /// From the request's `x-powerfleet-correlation-id` header; generated when absent.
    correlation_id: Option<CorrelationId>,
    /// The field that holds the prompt (`prompt`, chat: `messages`), named when it does not
    /// fit the context.
    prompt_field: &'static str,
    /// Whether the request set the token budget (`max_tokens`, or `power_sampling`'s
    /// `max_new_tokens`); when not, the budget is made to fit the model's context.
    budget_given: bool,
    /// From `metadata.label`.
    label: Option<powerfleet_jobs::Label>,
}

/// Parses a body into `T`, naming the field at fault; a field that is neither [`Common`]'s nor
/// `T`'s ([`struct_fields`]) is refused rather than ignored, since it may change what is sampled. The body is
/// read straight into the typed fields, never into a JSON tree (which would take many times
/// the body's size for a list of token ids).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(Common, T), OpenAiError> {
    let (common, fields) = (struct_fields::<Common>(), struct_fields::<T>());
    use serde::de::IgnoredAny;
    serde_json::from_slice::<IgnoredAny>(body).map_err(|e| {
        OpenAiError::invalid(
            "body",
            crate::api::shorten_inputs(&format!("request body is not valid JSON: {e}")),
        )
    })?;
    let Ok(object) = serde_json::from_slice::<BTreeMap<String, IgnoredAny>>(body) else {
        return Err(OpenAiError::invalid(
            "body",
            "request body must be a JSON object".into(),
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !common.contains(&k.as_str()) && !fields.contains(&k.as_str()))
    {
        let mut known: Vec<&str> = common.iter().chain(fields).copied().collect();
        known.sort_unstable();
        return Err(OpenAiError::invalid(
            unknown,
            format!(
                "unknown field {}: this server does not serve it (refused rather than ignored, since it could change what is sampled); the fields are {}",
                quote(unknown),
                known.join(", ")
            ),
        ));
    }
    Ok((deserialize(body)?, deserialize(body)?))
}

/// `T` from the fields of the JSON object `body` (fields of the other part are skipped), naming
/// the field at fault.
fn deserialize<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, OpenAiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            format!("request body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        };
        OpenAiError::invalid(&path, crate::api::shorten_inputs(&message))
    })
}

/// The field names of the struct `T` as its derived `Deserialize` declares them (serde passes
/// them to `deserialize_struct`), so the fields a body may hold come from the wire types
/// themselves.
fn struct_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("only a struct's field names are read")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Stop {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields
        .0
        .expect("a request body type is a struct with named fields")
}

/// Checks the options both endpoints share and resolves the sampler; `max_tokens` is the budget.
fn asked_common(
    settings: &crate::openai::OpenAiSettings,
    common: Common,
    max_tokens: Option<u32>,
) -> Result<Asked, OpenAiError> {
    if common.model.is_empty() {
        return Err(OpenAiError::invalid(
            "model",
            "model must name a model; GET /v1/models lists them".into(),
        ));
    }
    for (field, value) in [("temperature", common.temperature), ("top_p", common.top_p)] {
        if let Some(v) = value
            && v != 1.0
        {
            return Err(OpenAiError::invalid(
                field,
                format!(
                    "{field} must be 1 (or absent), got {v}: power sampling targets p^alpha of the base model at temperature 1, and another {field} would silently change that target. Sharpen with power_sampling.alpha (method power, or low-temp for p^alpha token by token), or choose power_sampling.method standard for plain samples"
                ),
            ));
        }
    }
    for (field, value) in [
        ("presence_penalty", common.presence_penalty),
        ("frequency_penalty", common.frequency_penalty),
    ] {
        if let Some(v) = value
            && v != 0.0
        {
            return Err(OpenAiError::invalid(
                field,
                format!(
                    "{field} must be 0 (or absent), got {v}: a penalty would change the target distribution p^alpha"
                ),
            ));
        }
    }
    let n = common.n.unwrap_or(1);
    if n == 0 || n > settings.max_n {
        return Err(OpenAiError::invalid(
            "n",
            format!(
                "n must be between 1 and {} (serve --openai-max-n), got {n}",
                settings.max_n
            ),
        ));
    }
    let mut config = settings.config_for(&common.model, common.power_sampling.as_ref())?;
    if let Some(max) = max_tokens {
        if max == 0 {
            return Err(OpenAiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1: scoring a prompt without generating (loglikelihood requests) is not served; powerfleet only samples".into(),
            ));
        }
        config.max_new_tokens = max;
        config
            .validate()
            .map_err(|e| OpenAiError::invalid("max_tokens", format!("max_tokens: {e}")))?;
    }
    let budget_given = max_tokens.is_some()
        || common
            .power_sampling
            .as_ref()
            .is_some_and(|o| o.contains_key("max_new_tokens"));
    let seed = common.seed.unwrap_or_else(random_seed);
    let include_usage = common
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(user) = &common.user {
        tracing::debug!(user = %quote(user), "openai request");
    }
    let label = common
        .metadata
        .as_ref()
        .and_then(|m| m.get("label"))
        .map(|l| l.parse())
        .transpose()
        .map_err(|e| OpenAiError::invalid("metadata.label", format!("metadata.label: {e}")))?;
    Ok(Asked {
        model: common.model,
        prompts: Vec::new(),
        config,
        n,
        seed,
        stop: common.stop.map(StopInput::into_vec).unwrap_or_default(),
        logprobs: false,
        token_ids: common.return_token_ids.unwrap_or(false),
        stream: common.stream.unwrap_or(false),
        include_usage,
        correlation_id: None,
        prompt_field: "prompt",
        budget_given,
        label,
    })
}

/// A seed for a request that gives none: a different one per request, as OpenAI's servers do.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

fn line(i: usize) -> BatchLine {
    BatchLine {
        id: Some(i.to_string()),
        prompt: None,
        prompt_tokens: None,
        messages: None,
    }
}

fn asked_completion(
    settings: &OpenAiSettings,
    common: Common,
    r: CompletionRequest,
) -> Result<Asked, OpenAiError> {
    if r.echo == Some(true) {
        return Err(OpenAiError::invalid(
            "echo",
            "echo is not served: scoring the prompt (loglikelihood requests) needs the prompt's log-probabilities, and powerfleet only samples completions; send echo false or leave it out".into(),
        ));
    }
    if let Some(k) = r.logprobs
        && k > 0
    {
        return Err(OpenAiError::invalid(
            "logprobs",
            format!(
                "logprobs must be 0 (the log-probability of each returned token under the base model), got {k}: the most likely alternatives are not computed"
            ),
        ));
    }
    if let Some(best_of) = r.best_of
        && Some(best_of) != common.n.or(Some(1))
    {
        return Err(OpenAiError::invalid(
            "best_of",
            format!(
                "best_of must equal n (or be absent), got {best_of}: powerfleet returns every chain it runs"
            ),
        ));
    }
    if r.suffix.is_some() {
        return Err(OpenAiError::invalid(
            "suffix",
            "suffix (insertion) is not served; leave it out".into(),
        ));
    }
    if r.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(OpenAiError::invalid(
            "logit_bias",
            "logit_bias must be empty: a bias would change the target distribution p^alpha".into(),
        ));
    }
    let prompts = match r.prompt {
        None => {
            return Err(OpenAiError::invalid(
                "prompt",
                "missing field `prompt`: text, a list of texts, token ids or a list of token-id lists".into(),
            ));
        }
        Some(PromptInput::Text(t)) => vec![t.into()],
        Some(PromptInput::Texts(ts)) => ts.into_iter().map(Into::into).collect(),
        Some(PromptInput::Tokens(ids)) => vec![ids.into()],
        Some(PromptInput::TokenLists(lists)) => lists.into_iter().map(Into::into).collect(),
    };
    if prompts.is_empty() {
        return Err(OpenAiError::invalid(
            "prompt",
            "prompt must hold at least one prompt, got an empty list".into(),
        ));
    }
    let mut asked = asked_common(settings, common, r.max_tokens)?;
    asked.logprobs = r.logprobs.is_some();
    asked.prompts = prompts
        .into_iter()
        .enumerate()
        .map(|(i, p): (usize, PromptOf)| {
            let mut l = line(i);
            match p {
                PromptOf::Text(t) => l.prompt = Some(t),
                PromptOf::Tokens(ids) => l.prompt_tokens = Some(ids),
            }
            l
        })
        .collect();
    Ok(asked)
}

/// One prompt of a completion request.
enum PromptOf {
    Text(String),
    Tokens(Vec<TokenId>),
}

impl From<String> for PromptOf {
    fn from(t: String) -> Self {
        PromptOf::Text(t)
    }
}

impl From<Vec<TokenId>> for PromptOf {
    fn from(ids: Vec<TokenId>) -> Self {
        PromptOf::Tokens(ids)
    }
}

fn asked_chat(
    settings: &OpenAiSettings,
    common: Common,
    r: ChatRequest,
) -> Result<Asked, OpenAiError> {
    if let Some(k) = r.top_logprobs
        && k > 0
    {
        return Err(OpenAiError::invalid(
            "top_logprobs",
            format!(
                "top_logprobs must be 0 (or absent), got {k}: the most likely alternatives are not computed; logprobs true gives each returned token's log-probability under the base model"
            ),
        ));
    }
    if r.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(OpenAiError::invalid(
            "logit_bias",
            "logit_bias must be empty: a bias would change the target distribution p^alpha".into(),
        ));
    }
    let Some(input) = r.messages else {
        return Err(OpenAiError::invalid(
            "messages",
            "missing field `messages`: a list of {\"role\", \"content\"}".into(),
        ));
    };
    let mut messages = Vec::with_capacity(input.len());
    for (i, m) in input.into_iter().enumerate() {
        let content = match m.content {
            ContentInput::Text(t) => t,
            ContentInput::Parts(parts) => {
                let mut text = String::new();
                for (j, part) in parts.into_iter().enumerate() {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(OpenAiError::invalid(
                                &format!("messages[{i}].content[{j}]"),
                                format!(
                                    "messages[{i}].content[{j}]: only parts of type text with a text field are served, got type {}",
                                    quote(kind)
                                ),
                            ));
                        }
                    }
                }
                text
            }
        };
        // OpenAI's newer name for the system role.
        let role = if m.role == "developer" {
            "system".to_string()
        } else {
            m.role
        };
        messages.push(ChatMessage { role, content });
    }
    crate::request::check_roles("messages", &messages)?;
    let model = common.model.clone();
    if model.starts_with("toy:") {
        return Err(OpenAiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!(
                "model {}: toy models have no chat template; use POST /v1/completions with a text prompt",
                quote(&model)
            ),
            param: Some("model".into()),
            kind: "invalid_request_error",
            code: None,
        });
    }
    let mut asked = asked_common(settings, common, r.max_completion_tokens.or(r.max_tokens))?;
    asked.logprobs = r.logprobs.unwrap_or(false);
    asked.prompt_field = "messages";
    let mut l = line(0);
    l.messages = Some(messages);
    asked.prompts = vec![l];
    Ok(asked)
}

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

/// What a completion holds of one finished job to answer with it: the returned text and
/// tokens, and the counts of its usage.
struct Choice {
    job_id: JobId,
    text: String,
    finish_reason: &'static str,
    /// The returned tokens, kept only when the request asks for them or their log p.
    tokens: Vec<TokenId>,
    /// Their log p, kept only when the request asks for log-probabilities.
    token_log_p: Vec<f64>,
    /// How many tokens the choice returns.
    completion_tokens: u64,
    prompt_tokens: u64,
    generated_tokens: u64,
}

impl Choice {
    /// The choice of a completed job's result, keeping what `asked` needs.
    fn of(mut r: JobResult, asked: &Asked) -> Choice {
        let kept = r.stop.as_ref().map_or(r.tokens.len(), |hit| hit.tokens);
        let kept = kept.min(r.tokens.len());
        let finish_reason = if r.stop.is_some() || r.ends_with_eos {
            "stop"
        } else {
            "length"
        };
        let text = r.answer_text().unwrap_or_default().to_string();
        let mut tokens = Vec::new();
        let mut token_log_p = Vec::new();
        if asked.token_ids || asked.logprobs {
            r.tokens.truncate(kept);
            tokens = std::mem::take(&mut r.tokens);
        }
        if asked.logprobs {
            r.token_log_p.truncate(kept);
            token_log_p = std::mem::take(&mut r.token_log_p);
        }
        Choice {
            job_id: r.job_id,
            text,
            finish_reason,
            tokens,
            token_log_p,
            completion_tokens: kept as u64,
            prompt_tokens: r.prompt_tokens.unwrap_or(0),
            generated_tokens: r.stats.tokens_generated,
        }
    }
}

/// The finished jobs of a completion, in choice order.
struct Finished {
    correlation_id: CorrelationId,
    choices: Vec<Choice>,
}

/// Submits what was asked (its prompts, taken out of `asked`, are not held while waiting),
/// waits for every job and reads what the answer needs of each.
async fn run(state: &ApiState, asked: &mut Asked) -> Result<Finished, OpenAiError> {
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

/// Per-message tokens a chat template may add around a message's text (role markers and
/// separators), and tokens it may add to a whole conversation (a default system prompt, the
/// assistant's opening), for the bound on a chat prompt's tokens.
const CHAT_TOKENS_PER_MESSAGE: usize = 8;
const CHAT_TOKENS_PER_CONVERSATION: usize = 64;
/// Tokens a tokenizer may add to a text beyond one per byte: BOS, EOS and a leading space marker.
const TEXT_SPECIAL_TOKENS: usize = 3;

/// Bounds on the tokens of one prompt, before the model's tokenizer has seen it: token ids
/// exactly; a text at least none and at most one per byte (each token of a text covers at
/// least a byte) plus [`TEXT_SPECIAL_TOKENS`]; chat messages as their texts plus what a
/// template may add.
fn prompt_token_bounds(line: &BatchLine) -> (usize, usize) {
    if let Some(ids) = &line.prompt_tokens {
        return (ids.len(), ids.len());
    }
    if let Some(messages) = &line.messages {
        let text: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len() + CHAT_TOKENS_PER_MESSAGE)
            .sum();
        return (0, text + CHAT_TOKENS_PER_CONVERSATION);
    }
    let text = line.prompt.as_ref().map_or(0, String::len);
    (0, text + TEXT_SPECIAL_TOKENS)
}

/// Checks the request against the model's context of `context` tokens (prompt and completion
/// together, as the live workers' probes of its servers learned it), before any job exists.
/// A prompt and budget certain not to fit get 400 `context_length_exceeded`; without a budget
/// from the request, the budget becomes what fits beside the longest prompt's bound (capped
/// by the default). What only the tokenizer can tell is left to the worker, which fails such
/// a job at once, unretried, and the answer is the same 400.
fn fit_context(asked: &mut Asked, context: u32) -> Result<(), OpenAiError> {
    let (least, most) = asked
        .prompts
        .iter()
        .map(prompt_token_bounds)
        .fold((0, 0), |(l, m), (pl, pm)| (l.max(pl), m.max(pm)));
    let budget = asked.config.max_new_tokens;
    let room = (context as usize).saturating_sub(least);
    if room == 0 || (asked.budget_given && budget as usize > room) {
        let field = if asked.budget_given && least < context as usize {
            "max_tokens"
        } else {
            asked.prompt_field
        };
        return Err(context_length_exceeded(
            field,
            format!(
                "the model's context holds {context} tokens of prompt and completion together, but the prompt has {least} tokens{}; shorten the prompt or lower max_tokens",
                if asked.budget_given {
                    format!(" and max_tokens asks for {budget} more")
                } else {
                    String::new()
                }
            ),
        ));
    }
    if !asked.budget_given {
        let fits = (context as usize).saturating_sub(most).max(1);
        asked.config.max_new_tokens = budget.min(u32::try_from(fits).unwrap_or(u32::MAX));
    }
    Ok(())
}

/// 400 `context_length_exceeded`: the prompt plus `max_tokens` does not fit the model's
/// context. The request's own fault, so not 5xx, which OpenAI's clients would retry.
fn context_length_exceeded(prompt_field: &str, message: String) -> OpenAiError {
    OpenAiError {
        code: Some(ErrorCode::ContextLengthExceeded.as_str()),
        ..OpenAiError::invalid(prompt_field, message)
    }
}

/// Results read per round trip when a completion is answered.
const RESULT_READ_CHUNK: usize = 64;

/// `usage`: prompt tokens once per prompt, the returned completion tokens, and (an extension)
/// the tokens the sampler really generated, its cost.
fn usage(f: &Finished, n: u32) -> Value {
    let prompt: u64 = f
        .choices
        .iter()
        .step_by(n.max(1) as usize)
        .map(|c| c.prompt_tokens)
        .sum();
    let completion: u64 = f.choices.iter().map(|c| c.completion_tokens).sum();
    let generated: u64 = f.choices.iter().map(|c| c.generated_tokens).sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "generated_tokens": generated,
    })
}

/// Extension fields every response carries: where the jobs can be looked up and what ran.
fn powerfleet_of(f: &Finished, asked: &Asked) -> Value {
    json!({
        "correlation_id": f.correlation_id,
        "job_ids": f.choices.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        "method": asked.config.method,
        "config": asked.config,
        "seed": asked.seed,
        "stop_applied_after_sampling": !asked.stop.is_empty(),
    })
}

fn token_strings(tokens: &[TokenId]) -> Vec<String> {
    tokens.iter().map(|t| format!("token_id:{t}")).collect()
}

fn completion_body(f: &Finished, asked: &Asked, created: u64) -> Value {
    let choices: Vec<Value> = f
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut choice = json!({
                "index": i,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": Value::Null,
            });
            if asked.logprobs {
                choice["logprobs"] = json!({
                    "tokens": token_strings(&c.tokens),
                    "token_logprobs": c.token_log_p,
                    "top_logprobs": Value::Null,
                    "text_offset": Value::Null,
                });
            }
            if asked.token_ids {
                choice["token_ids"] = json!(c.tokens);
            }
            choice
        })
        .collect();
    json!({
        "id": format!("cmpl-{}", f.correlation_id),
        "object": "text_completion",
        "created": created,
        "model": asked.model,
        "choices": choices,
        "usage": usage(f, asked.n),
        "powerfleet": powerfleet_of(f, asked),
    })
}

fn chat_logprobs(c: &Choice) -> Value {
    let content: Vec<Value> = c
        .tokens
        .iter()
        .zip(&c.token_log_p)
        .map(|(t, lp)| {
            json!({"token": format!("token_id:{t}"), "logprob": lp, "bytes": Value::Null, "top_logprobs": []})
        })
        .collect();
    json!({ "content": content })
}

fn chat_body(f: &Finished, asked: &Asked, created: u64, chunk: bool) -> Value {
    let choices: Vec<Value> = f
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let message = json!({"role": "assistant", "content": c.text});
            let mut choice = json!({
                "index": i,
                "finish_reason": c.finish_reason,
                "logprobs": if asked.logprobs { chat_logprobs(c) } else { Value::Null },
            });
            choice[if chunk { "delta" } else { "message" }] = message;
            if asked.token_ids {
                choice["token_ids"] = json!(c.tokens);
            }
            choice
        })
        .collect();
    let mut body = json!({
        "id": format!("chatcmpl-{}", f.correlation_id),
        "object": if chunk { "chat.completion.chunk" } else { "chat.completion" },
        "created": created,
        "model": asked.model,
        "choices": choices,
        "powerfleet": powerfleet_of(f, asked),
    });
    if !chunk {
        body["usage"] = usage(f, asked.n);
    }
    body
}

/// The answer: JSON, or with `stream` a server-sent event stream that sends the whole answer as
/// one chunk (then a usage chunk when `stream_options.include_usage`), then `[DONE]`.
fn respond(f: &Finished, asked: &Asked, chat: bool) -> Response {
    let created = now_ms() / 1000;
    let mut response = if asked.stream {
        let mut events = String::new();
        let mut push = |v: &Value| {
            events.push_str("data: ");
            events.push_str(&v.to_string());
            events.push_str("\n\n");
        };
        let mut first = if chat {
            chat_body(f, asked, created, true)
        } else {
            completion_body(f, asked, created)
        };
        if let Some(o) = first.as_object_mut() {
            o.remove("usage");
        }
        push(&first);
        if asked.include_usage {
            let mut last = first.clone();
            last["choices"] = json!([]);
            last["usage"] = usage(f, asked.n);
            push(&last);
        }
        events.push_str("data: [DONE]\n\n");
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/event-stream")],
            events,
        )
            .into_response()
    } else if chat {
        Json(chat_body(f, asked, created, false)).into_response()
    } else {
        Json(completion_body(f, asked, created)).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(f.correlation_id.as_str()) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}

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

/// 503 with `Retry-After`: every completion slot is taken. Not 429: the limit is this server's,
/// shared by every caller, not a rate the caller exceeded; OpenAI's clients retry both after
/// the time given, and a load balancer may send the retry to another replica.
fn busy(capacity: usize) -> OpenAiError {
    OpenAiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!(
            "this server is answering its most completions at once ({capacity}, serve --openai-max-waiting); retry in {BUSY_RETRY_AFTER_S} s"
        ),
        param: None,
        kind: "server_error",
        code: None,
    }
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

/// An error answer of the shared layers (authentication, rate limit, body limit, content type),
/// `{"error": "message"}`, in OpenAI's shape for the OpenAI-compatible routes; other answers
/// pass unchanged. Headers (`WWW-Authenticate`, `Retry-After`) stay.
pub async fn reshape_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 16).await else {
        return (status, "").into_response();
    };
    let message = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => match o.get("error") {
            Some(Value::String(m)) => m.clone(),
            _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
        },
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    let kind = match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_client_error() => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": Value::Null, "code": Value::Null}});
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_a_body_may_hold_are_the_wire_types_fields() {
        let sorted = |f: &'static [&'static str]| {
            let mut v = f.to_vec();
            v.sort_unstable();
            v
        };
        assert_eq!(
            sorted(struct_fields::<Common>()),
            [
                "frequency_penalty",
                "metadata",
                "model",
                "n",
                "power_sampling",
                "presence_penalty",
                "return_token_ids",
                "seed",
                "stop",
                "stream",
                "stream_options",
                "temperature",
                "top_p",
                "user"
            ]
        );
        assert_eq!(
            sorted(struct_fields::<CompletionRequest>()),
            [
                "best_of",
                "echo",
                "logit_bias",
                "logprobs",
                "max_tokens",
                "prompt",
                "suffix"
            ]
        );
        assert_eq!(
            sorted(struct_fields::<ChatRequest>()),
            [
                "logit_bias",
                "logprobs",
                "max_completion_tokens",
                "max_tokens",
                "messages",
                "top_logprobs"
            ]
        );
        let unknown =
            parse_body::<ChatRequest>(br#"{"model": "m", "messages": [], "prompt": "x"}"#)
                .unwrap_err();
        assert!(
            format!("{unknown:?}").contains("unknown field"),
            "{unknown:?}"
        );
    }

    fn overlay(json: Value) -> serde_json::Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn a_request_error_has_the_job_apis_status_as_an_invalid_request_error() {
        let errors: [(fn() -> RequestError, StatusCode); 2] = [
            (
                || RequestError::BadRequest("bad".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                || RequestError::Invalid("invalid".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (e, status) in errors {
            let message = e().to_string();
            let api = crate::api::ApiError::from(e()).status();
            let openai = OpenAiError::from(e());
            assert_eq!((openai.status, api), (status, status));
            assert_eq!(openai.message, message);
            assert_eq!(openai.kind, "invalid_request_error");
            assert_eq!((openai.param, openai.code), (None, None));
        }
    }

    #[test]
    fn a_submission_that_fails_validation_is_answered_422() {
        let invalid = crate::producer::InvalidSubmission("submission key must be ...".into());
        let submit = crate::producer::SubmitError::from(invalid.clone());
        assert_eq!(submit.to_string(), invalid.to_string());
        let api = crate::api::ApiError::from(submit);
        assert_eq!(api.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(api.to_string(), invalid.to_string());
    }

    #[test]
    fn power_sampling_is_laid_over_the_models_defaults_field_by_field() {
        let settings = OpenAiSettings::from_flags(
            &[
                r#"qwen={"method":"power","alpha":2,"n_mcmc":5}"#.to_string(),
                r#"*={"method":"low-temp","alpha":3}"#.to_string(),
            ],
            8,
        )
        .unwrap();
        let qwen = settings.config_for("qwen", None).unwrap();
        assert_eq!((qwen.method, qwen.n_mcmc), (Method::Power, 5));
        let other = settings.config_for("toy:pivot", None).unwrap();
        assert_eq!(other.method, Method::LowTemp);
        // One field changes; the model's others stay.
        let c = settings
            .config_for("qwen", Some(&overlay(json!({"n_mcmc": 3}))))
            .unwrap();
        assert_eq!((c.n_mcmc, c.alpha), (3, qwen.alpha));
        // Another method starts from its own defaults: the model's alpha does not carry over.
        let c = settings
            .config_for("qwen", Some(&overlay(json!({"method": "standard"}))))
            .unwrap();
        assert_eq!(c, SamplerConfig::new(Method::Standard));
        for bad in [
            json!({"alpha": -1}),
            json!({"n_mcmcs": 3}),
            json!({"n_mcmc": "x"}),
        ] {
            let e = settings
                .config_for("qwen", Some(&overlay(bad)))
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some("power_sampling"));
            assert!(e.message.starts_with("power_sampling: "), "{}", e.message);
        }
    }

    #[test]
    fn server_defaults_that_do_not_parse_name_the_flag_and_the_model() {
        for (flag, needle) in [
            ("qwen", "must be MODEL=JSON"),
            ("qwen={", "--openai-defaults qwen: not a job configuration"),
            (
                r#"qwen={"method":"power","n_mcmc":0}"#,
                "--openai-defaults qwen: ",
            ),
        ] {
            let e = OpenAiSettings::from_flags(&[flag.to_string()], 8).unwrap_err();
            assert!(e.to_string().contains(needle), "{flag}: {e}");
        }
    }

    fn prompts(prompt: Value) -> Result<Vec<BatchLine>, OpenAiError> {
        let body = json!({"model": "toy:pivot", "prompt": prompt}).to_string();
        let (common, request) = parse_body::<CompletionRequest>(body.as_bytes())?;
        asked_completion(&OpenAiSettings::default(), common, request).map(|a| a.prompts)
    }

    fn asked(body: Value) -> Asked {
        let body = body.to_string();
        let (common, request) = parse_body::<CompletionRequest>(body.as_bytes()).unwrap();
        asked_completion(&OpenAiSettings::default(), common, request).unwrap()
    }

    #[test]
    fn a_known_context_refuses_what_cannot_fit_and_fits_a_budget_left_out() {
        let default = SamplerConfig::new(Method::Power).max_new_tokens;
        // Without max_tokens: what fits beside the prompt's bound, capped by the default.
        let mut a = asked(json!({"model": "m", "prompt": vec![1u32; 10]}));
        fit_context(&mut a, 20).unwrap();
        assert_eq!(a.config.max_new_tokens, 10);
        let mut a = asked(json!({"model": "m", "prompt": ["hello", "hi"]}));
        fit_context(&mut a, 255).unwrap();
        assert_eq!(
            a.config.max_new_tokens,
            255 - 5 - 3,
            "the longest prompt's bound"
        );
        let mut a = asked(json!({"model": "m", "prompt": "hello"}));
        fit_context(&mut a, 1 << 20).unwrap();
        assert_eq!(a.config.max_new_tokens, default);
        // A budget the request sets is kept when it may fit: only the tokenizer can tell.
        let mut a = asked(json!({"model": "m", "prompt": "a ".repeat(200), "max_tokens": 100}));
        fit_context(&mut a, 255).unwrap();
        assert_eq!(a.config.max_new_tokens, 100);
        // Certain not to fit: 400 context_length_exceeded naming the field at fault.
        for (body, param) in [
            (
                json!({"model": "m", "prompt": "hi", "max_tokens": 300}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "prompt": vec![1u32; 10], "power_sampling": {"max_new_tokens": 16}}),
                "max_tokens",
            ),
            (json!({"model": "m", "prompt": vec![1u32; 20]}), "prompt"),
        ] {
            let mut a = asked(body.clone());
            let e = fit_context(&mut a, 20).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.code, Some("context_length_exceeded"), "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            assert!(e.message.contains("holds 20 tokens"), "{}", e.message);
        }
    }

    #[test]
    fn metadata_label_becomes_the_submissions_label() {
        let asked = |metadata: Value| {
            let body =
                json!({"model": "toy:pivot", "prompt": "A", "metadata": metadata}).to_string();
            let (common, request) = parse_body::<CompletionRequest>(body.as_bytes())?;
            asked_completion(&OpenAiSettings::default(), common, request)
        };
        let a = asked(json!({"label": "sweep 1", "team": "x"})).unwrap();
        assert_eq!(a.label.as_ref().map(|l| l.as_str()), Some("sweep 1"));
        assert_eq!(asked(json!({"team": "x"})).unwrap().label, None);
        let e = asked(json!({"label": "bad\nlabel"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("metadata.label"));
        assert!(
            e.message.starts_with("metadata.label: label must be"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_prompt_is_text_token_ids_or_a_list_of_either_one_problem_each() {
        let text = |i: usize, t: &str| BatchLine {
            prompt: Some(t.into()),
            ..line(i)
        };
        let tokens = |i: usize, t: Vec<TokenId>| BatchLine {
            prompt_tokens: Some(t),
            ..line(i)
        };
        assert_eq!(prompts(json!("a b")).unwrap(), [text(0, "a b")]);
        assert_eq!(
            prompts(json!(["a", "b"])).unwrap(),
            [text(0, "a"), text(1, "b")]
        );
        assert_eq!(prompts(json!([1, 2])).unwrap(), [tokens(0, vec![1, 2])]);
        assert_eq!(prompts(json!([])).unwrap(), [tokens(0, vec![])]);
        assert_eq!(
            prompts(json!([[1], [2, 3]])).unwrap(),
            [tokens(0, vec![1]), tokens(1, vec![2, 3])]
        );
        let e = prompts(json!([["a"]])).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
