//! `HttpModel`: one or more inference servers behind one model reference, with per-server
//! concurrency limits, a circuit breaker per server, and chain-to-server affinity.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use powerfleet_jobs::ServerPin;
use powerfleet_sampler::{Generation, OwnedRequest, TokenId};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::dialect::common::{answer_error, effective_k, snippet, tokens_of};
use crate::dialect::{ChatTemplate, Dialect, Exchange, PROBE_SEED, RawGeneration, explained};
// Their paths from before `error` held them; kept for callers.
pub use crate::error::{BackendError, classify_status};
use crate::error::{error_chain, in_context};
use crate::probe::{self, ServerInfo};
use crate::redact::redact_url;
use crate::reference::HttpReference;

// Declared in `metrics` with the crate's other metrics; kept at its path for callers.
pub use crate::metrics::CIRCUIT_OPEN;

/// Consecutive failures after which a server is skipped.
pub const BREAKER_THRESHOLD: u32 = 5;
/// How long a tripped server is skipped before one trial request.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// The latest failure, quoted while the circuit is open.
    last_error: String,
}

struct Server {
    /// The base URL requests go to, credentials included.
    url: String,
    /// The base URL as every message, log field and metric label shows it: [`redact_url`].
    shown: String,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.shown)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl Server {
    fn new(url: &str, max_in_flight: usize) -> Server {
        Server {
            url: url.to_string(),
            shown: redact_url(url),
            permits: Semaphore::new(max_in_flight),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    /// The circuit gauge of this server, labelled with its redacted URL.
    fn circuit_gauge(&self) -> metrics::Gauge {
        CIRCUIT_OPEN.with([self.shown.clone()])
    }

    fn available(&self, now: Instant) -> bool {
        let b = self.breaker.lock().expect("breaker");
        b.open_until.is_none_or(|t| now >= t)
    }

    fn succeeded(&self) {
        *self.breaker.lock().expect("breaker") = Breaker::default();
        self.circuit_gauge().set(0.0);
    }

    /// When the circuit is open, how long until the next trial request.
    fn open_for(&self, now: Instant) -> Option<Duration> {
        let b = self.breaker.lock().expect("breaker");
        b.open_until.filter(|t| *t > now).map(|t| t - now)
    }

    fn failed(&self, error: &str) {
        let mut b = self.breaker.lock().expect("breaker");
        b.failures += 1;
        b.last_error = error.to_string();
        if b.failures >= BREAKER_THRESHOLD {
            if b.open_until.is_none() || b.open_until.is_some_and(|t| Instant::now() >= t) {
                tracing::warn!(server = %self.shown, failures = b.failures, "circuit open: server skipped for a while");
            }
            b.open_until = Some(Instant::now() + BREAKER_COOLDOWN);
            self.circuit_gauge().set(1.0);
        }
    }
}

/// The prompt of the determinism probe: long enough that a server's batching and caching
/// reach its numbers (about 130 tokens of a character vocabulary, 30 of a subword one), and
/// printable ASCII only, which every vocabulary can tokenize.
const DETERMINISM_TEXT: &str = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump, said the sphinx of black quartz.";
/// Tokens each determinism probe generation draws: one, whose top-K log-probabilities carry
/// what the server's batching and caching change; and so the probe costs the server the same
/// work every time (a longer generation ends at EOS sooner or later depending on its prompt,
/// which holds the time).
const DETERMINISM_TOKENS: u32 = 1;
/// Determinism probe requests sent one after the other.
const DETERMINISM_SEQUENTIAL: usize = 2;
/// Determinism probe requests then sent at once.
const DETERMINISM_CONCURRENT: usize = 4;

/// Whether a request's failure counts towards its server's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breaking {
    /// It does: the request is a job's (or its probe's).
    Counts,
    /// It does not: the request checks whether the server is ready.
    Ignored,
}

/// Inference servers behind one model reference.
#[derive(Debug)]
pub struct HttpModel {
    reference: HttpReference,
    client: reqwest::Client,
    servers: Vec<Server>,
    /// What the start-up probe learned, once it succeeded.
    info: OnceLock<Arc<ServerInfo>>,
    /// One probe at a time.
    probing: tokio::sync::Mutex<()>,
}

impl HttpModel {
    /// A client for the reference's servers (no request is made yet).
    pub fn new(reference: HttpReference) -> HttpModel {
        powerfleet_common::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(reference.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client with timeouts builds");
        let servers = reference
            .servers
            .iter()
            .map(|url| Server::new(url, reference.max_in_flight))
            .collect();
        HttpModel {
            reference,
            client,
            servers,
            info: OnceLock::new(),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// The parsed reference.
    pub fn reference(&self) -> &HttpReference {
        &self.reference
    }

    /// What the reference's server kind does its own way.
    fn dialect(&self) -> &'static dyn Dialect {
        self.reference.kind.dialect()
    }

    /// Where the numbers come from, recorded with every result.
    pub fn exactness(&self, top_k: Option<u32>) -> powerfleet_jobs::Exactness {
        powerfleet_jobs::Exactness::Server {
            top_k: top_k.unwrap_or(self.reference.k),
            source: self.dialect().facts().logprob_source.to_string(),
        }
    }

    /// While every server's circuit is open, how long until the first one takes a trial request;
    /// `None` while any server is available. Workers stop claiming the model's jobs meanwhile.
    pub fn unavailable_for(&self) -> Option<Duration> {
        let now = Instant::now();
        self.servers
            .iter()
            .map(|s| s.open_for(now))
            .collect::<Option<Vec<_>>>()
            .and_then(|waits| waits.into_iter().min())
    }

    /// Servers in the order to try for chain `affinity`: its own server first while it is healthy.
    fn order(&self, affinity: u64) -> Vec<&Server> {
        let n = self.servers.len();
        let start = (affinity % n as u64) as usize;
        (0..n).map(|i| &self.servers[(start + i) % n]).collect()
    }

    async fn post(&self, affinity: u64, path: &str, body: &Value) -> Result<Value, BackendError> {
        let now = Instant::now();
        let Some(server) = self.order(affinity).into_iter().find(|s| s.available(now)) else {
            let last = self
                .servers
                .iter()
                .map(|s| s.breaker.lock().expect("breaker").last_error.clone())
                .next_back()
                .unwrap_or_default();
            return Err(BackendError::Unavailable(format!(
                "all {} servers of {} failed {BREAKER_THRESHOLD} times in a row; retrying after their cool-down (last failure: {last})",
                self.servers.len(),
                self.reference.kind.prefix()
            )));
        };
        self.call(server, path, Some(body)).await
    }

    /// One request to `server`: POST `body` as JSON, or GET when `body` is `None`. Waits for a
    /// permit of the server's concurrency limit, classifies failures ([`BackendError`]) and
    /// keeps the server's circuit breaker.
    async fn call(
        &self,
        server: &Server,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, BackendError> {
        self.call_as(server, path, body, Breaking::Counts).await
    }

    /// [`HttpModel::call`], with `breaking` saying whether a failure counts towards the server's
    /// circuit.
    async fn call_as(
        &self,
        server: &Server,
        path: &str,
        body: Option<&Value>,
        breaking: Breaking,
    ) -> Result<Value, BackendError> {
        let _permit = server.permits.acquire().await.expect("never closed");
        // Requests go to the URL with its credentials; messages name it redacted.
        let target = format!("{}{path}", server.url);
        let url = format!("{}{path}", server.shown);
        let method = if body.is_some() { "POST" } else { "GET" };
        let overloaded = AtomicBool::new(false);
        let result = async {
            let request = match body {
                Some(body) => self.client.post(&target).json(body),
                None => self.client.get(&target),
            };
            let response = request.send().await.map_err(|e| {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                // The message names the URL (redacted) itself.
                let chain = error_chain(&e.without_url());
                // A certificate that does not verify is a configuration error, not an outage:
                // waiting for it would never end.
                if chain.to_lowercase().contains("certificate") {
                    return BackendError::Rejected(format!(
                        "{method} {url} {what}: {chain}; the server's certificate does not verify (set SSL_CERT_FILE to its CA)"
                    ));
                }
                BackendError::Unavailable(format!("{method} {url} {what}: {chain}"))
            })?;
            let status = response.status();
            let text = response.text().await.map_err(|e| {
                BackendError::Unavailable(format!(
                    "{method} {url}: reading the answer failed: {}",
                    error_chain(&e.without_url())
                ))
            })?;
            if !status.is_success() {
                overloaded.store(status.as_u16() == 429, Ordering::Relaxed);
                return Err(classify_status(
                    status,
                    format!("{method} {url} answered {status}: {}", snippet(&text)),
                ));
            }
            serde_json::from_str::<Value>(&text).map_err(|e| {
                BackendError::Transient(format!(
                    "{method} {url} answered malformed JSON ({e}): {}",
                    snippet(&text)
                ))
            })
        }
        .await;
        // Only failures that say something about the server count towards its circuit: a
        // request the server answered, however badly, shows it alive. 429 is overload, not an
        // outage. A readiness check's failures do not count ([`HttpModel::probe_for_readiness`]).
        match &result {
            Err(BackendError::Unavailable(m)) if !overloaded.load(Ordering::Relaxed) => {
                if breaking == Breaking::Counts {
                    server.failed(m);
                }
            }
            _ => server.succeeded(),
        }
        result
    }

    /// The `/tokenize` body of `text` for this server kind (special tokens such as BOS added).
    fn tokenize_body(&self, text: &str) -> Value {
        self.dialect()
            .tokenize_body(self.reference.model.as_deref(), text)
    }

    /// Token ids of `text`, by the server's own tokenizer (special tokens such as BOS added).
    pub async fn tokenize(&self, text: &str) -> Result<Vec<TokenId>, BackendError> {
        let answer = self.post(0, "/tokenize", &self.tokenize_body(text)).await?;
        tokens_of(&answer, "/tokenize")
    }

    /// Token ids of `user_text` formatted by the server's chat template as one user message,
    /// with the generation prompt (the assistant turn's opening) appended: the prompt the
    /// server's own chat completions would start from, BOS included once. How, or why not, is
    /// each server's [`Dialect::chat_template`].
    pub async fn tokenize_chat(&self, user_text: &str) -> Result<Vec<TokenId>, BackendError> {
        self.tokenize_messages(&[powerfleet_jobs::ChatMessage {
            role: "user".into(),
            content: user_text.into(),
        }])
        .await
    }

    /// Token ids of a conversation formatted through the server's chat template, with the
    /// generation prompt appended: as [`HttpModel::tokenize_chat`], for any messages.
    pub async fn tokenize_messages(
        &self,
        messages: &[powerfleet_jobs::ChatMessage],
    ) -> Result<Vec<TokenId>, BackendError> {
        let messages = serde_json::to_value(messages).expect("chat messages serialize");
        match self
            .dialect()
            .chat_template(self.reference.model.as_deref(), messages)?
        {
            ChatTemplate::Text { path, body, text } => {
                let answer = self.post(0, path, &body).await?;
                let text = text(&answer).map_err(|e| {
                    BackendError::Transient(format!(
                        "{path} answered without the templated prompt ({e}): {}",
                        snippet(&answer.to_string())
                    ))
                })?;
                self.tokenize(&text).await
            }
            ChatTemplate::Tokens { path, body } => {
                let answer = self.post(0, path, &body).await?;
                tokens_of(&answer, &format!("{path} (chat)"))
            }
        }
    }

    /// Text of `tokens`, by the server's own tokenizer.
    pub async fn detokenize(&self, tokens: &[TokenId]) -> Result<String, BackendError> {
        let dialect = self.dialect();
        let body = dialect.detokenize_body(self.reference.model.as_deref(), tokens);
        let field = dialect.facts().detokenized_field;
        let answer = self.post(0, "/detokenize", &body).await?;
        answer
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                BackendError::Transient(format!("/detokenize answered without `{field}`"))
            })
    }

    /// What the start-up probe learned, once it has succeeded.
    pub fn server_info(&self) -> Option<Arc<ServerInfo>> {
        self.info.get().cloned()
    }

    /// The start-up probe of every server of the reference, run once and cached after it
    /// succeeds (a failure is not cached: the next call probes again). [`HttpModel::generate`]
    /// runs it first if nobody has. Per server it:
    ///
    /// 1. learns the served model and its context length: llama.cpp `GET /props`
    ///    (`model_alias`, `default_generation_settings.n_ctx`), vLLM and SGLang
    ///    `GET /v1/models` (`id`, `max_model_len`); a vLLM server must serve `?model=`, an
    ///    SGLang server the `?model=` given, if any;
    /// 2. learns the terminal tokens where the server tells: llama.cpp's EOS (`/props`
    ///    `eos_token` through `/tokenize` with `parse_special`) and every end-of-generation
    ///    token (see `dialect::llamacpp::llamacpp_eog_body`); SGLang's `eos_token_ids` when
    ///    `/get_model_info` lists them; plus the reference's `eos=`. vLLM does not expose its
    ///    `generation_config` EOS ids over HTTP: give them with `eos=`;
    /// 3. generates one token after the same prefix with the same seed at temperatures 1 and
    ///    0.5, with the reference's K: the top log-probabilities must be identical (up to the
    ///    server's noise), else the server is in a processed-logprobs mode, refused with the fix
    ///    (`probe::check_raw_logprobs`). A vLLM 400 for K beyond its `--max-logprobs` is
    ///    refused with the fix too. For llama.cpp, the answers' echoed sampler settings are
    ///    checked, and the same request with `post_sampling_probs` must report the recipe's q
    ///    (`dialect::llamacpp::check_post_sampling`);
    /// 4. for SGLang, refuses speculative decoding (`/get_server_info`) and
    ///    `--preferred-sampling-params` that requests do not override.
    ///
    /// Steps 1, 2 and 4 and the requests of step 3 are the server's [`Dialect::probe`]. All
    /// servers must agree on model, context and terminal tokens. Errors keep their class:
    /// a server that is down gives [`BackendError::Unavailable`] (wait and probe again), a
    /// configuration that rules out exact sampling [`BackendError::Rejected`].
    pub async fn probe(&self) -> Result<Arc<ServerInfo>, BackendError> {
        self.probe_as(Breaking::Counts).await
    }

    /// [`HttpModel::probe`] for a readiness check rather than for a job: its failures do not
    /// count towards the servers' circuits, which hold the model's jobs back. A worker checking
    /// a server that is down, again and again while nothing else asks for it, would otherwise
    /// keep its circuit open, and its jobs would never be claimed, so never fail once they have
    /// waited past the worker's patience. An answer still closes a server's circuit.
    pub async fn probe_for_readiness(&self) -> Result<Arc<ServerInfo>, BackendError> {
        self.probe_as(Breaking::Ignored).await
    }

    async fn probe_as(&self, breaking: Breaking) -> Result<Arc<ServerInfo>, BackendError> {
        if let Some(info) = self.info.get() {
            return Ok(info.clone());
        }
        let _one_at_a_time = self.probing.lock().await;
        if let Some(info) = self.info.get() {
            return Ok(info.clone());
        }
        let mut infos = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            let probed = async {
                let mut info = self
                    .dialect()
                    .probe(&OneServer {
                        model: self,
                        server,
                        breaking,
                    })
                    .await?;
                if let Some(seen) = self.probe_determinism(server, &info, breaking).await? {
                    info.nondeterministic.push(probe::NondeterministicServer {
                        server: server.shown.clone(),
                        seen,
                    });
                }
                Ok(info)
            };
            let info = probed
                .await
                .map_err(|e| in_context(e, &format!("start-up probe of {}", server.shown)))?;
            infos.push((server.shown.clone(), info));
        }
        let info = Arc::new(probe::merge(infos)?);
        tracing::info!(
            reference = %self.reference.kind.prefix(),
            model = %info.served_model,
            context = ?info.context_len,
            terminal = ?info.terminal_tokens,
            deterministic = info.deterministic(),
            "inference servers probed"
        );
        for server in &info.nondeterministic {
            tracing::warn!(
                server = %server.server,
                seen = %server.seen,
                fix = self.dialect().facts().determinism_fix,
                "the server is not deterministic: the same request gives other log-probabilities, and now and then other tokens, from one time to the next; results record it (pin.deterministic false), a resumed chain may not repeat an uninterrupted one, and a study run twice differs"
            );
        }
        Ok(self.info.get_or_init(|| info).clone())
    }

    /// What the start-up probe learned, once it has succeeded; `None` before.
    pub fn probed(&self) -> Option<Arc<ServerInfo>> {
        self.info.get().cloned()
    }

    /// Everything log q depends on besides the chain's config, for checkpoints and results:
    /// server kind, served model, the reference's default K, terminal tokens and what the
    /// requests pin.
    pub fn pin(&self, info: &ServerInfo) -> ServerPin {
        ServerPin {
            kind: info.kind.prefix().to_string(),
            served_model: info.served_model.clone(),
            k: self.reference.k,
            terminal_tokens: info.terminal_tokens.clone(),
            sampler: info.kind.dialect().facts().sampler_recipe.to_string(),
            deterministic: Some(info.deterministic()),
        }
    }

    /// Whether a prompt of `prompt_len` tokens and up to `max_new_tokens` generated tokens fit
    /// the server's context ([`Dialect::fits`]); [`BackendError::Rejected`] naming both numbers
    /// when not. Unknown contexts fit.
    pub fn check_fits(
        &self,
        info: &ServerInfo,
        prompt_len: usize,
        max_new_tokens: u32,
    ) -> Result<(), BackendError> {
        let dialect = info.kind.dialect();
        match info.context_len {
            Some(ctx) if !dialect.fits(ctx, prompt_len, max_new_tokens) => {
                Err(BackendError::Rejected(format!(
                    "prompt of {prompt_len} tokens plus max_new_tokens {max_new_tokens} exceeds the server's context of {ctx} tokens ({}); shorten the prompt, lower max_new_tokens, or serve a longer context",
                    dialect.facts().context_setting
                )))
            }
            _ => Ok(()),
        }
    }

    /// The path and body of a generation request with top-K `k` on this reference's servers.
    fn generation_body(&self, request: &OwnedRequest, k: u32) -> (&'static str, Value) {
        let dialect = self.dialect();
        let body = dialect.generation_body(request, k, self.reference.model.as_deref());
        (dialect.facts().generation_path, body)
    }

    /// The raw generation in a server's `answer` to `body` (sent to `path`).
    fn parse_generation(
        &self,
        body: &Value,
        answer: &Value,
        terminal: &[TokenId],
        path: &str,
    ) -> Result<RawGeneration, BackendError> {
        self.dialect()
            .parse_generation(body, answer, terminal)
            .map_err(answer_error(path))
    }

    /// Whether `server` answers one request the same way every time ([`probe::compare_repeats`]):
    /// a generation of [`DETERMINISM_TOKENS`] tokens after [`DETERMINISM_TEXT`] behind a prefix
    /// no earlier request had ("Probe <ms since the epoch>: "; cut to half the context), at
    /// temperature 1 with the reference's K and a fixed seed, as chains send it (llama.cpp's with
    /// `cache_prompt`), sent [`DETERMINISM_SEQUENTIAL`] times one after the other (the first
    /// evaluates the whole prompt, since no cache holds it; the next finds it in the server's
    /// prompt cache and evaluates only its last token) and then [`DETERMINISM_CONCURRENT`] times
    /// at once (the server batches them with each other, in other slots). Those are the two ways
    /// a server's numbers come to depend on what else it computes: how much of a prompt is
    /// cached, and what shares its batches. `None` when every answer is bit for bit the first.
    async fn probe_determinism(
        &self,
        server: &Server,
        info: &ServerInfo,
        breaking: Breaking,
    ) -> Result<Option<probe::Nondeterminism>, BackendError> {
        let answer = self
            .call_as(
                server,
                "/tokenize",
                Some(&self.tokenize_body(&format!(
                    "Probe {}: {DETERMINISM_TEXT}",
                    powerfleet_jobs::now_ms()
                ))),
                breaking,
            )
            .await?;
        let mut prefix = tokens_of(&answer, "/tokenize")?;
        if let Some(ctx) = info.context_len {
            prefix.truncate((ctx / 2).max(1) as usize);
        }
        let k = self.reference.k;
        let request = OwnedRequest {
            prompt_len: prefix.len(),
            prefix,
            max_tokens: DETERMINISM_TOKENS,
            temperature: 1.0,
            top_k: Some(k),
            seed: PROBE_SEED,
            candidates: 0,
        };
        let (path, body) = self.generation_body(&request, k);
        let ask = || async {
            let answer = self
                .call_as(server, path, Some(&body), breaking)
                .await
                .map_err(|e| self.explain(e, k))?;
            self.parse_generation(&body, &answer, &info.terminal_tokens, path)
        };
        let mut answers = Vec::with_capacity(DETERMINISM_SEQUENTIAL + DETERMINISM_CONCURRENT);
        for _ in 0..DETERMINISM_SEQUENTIAL {
            answers.push(ask().await?);
        }
        let together =
            futures_util::future::join_all((0..DETERMINISM_CONCURRENT).map(|_| ask())).await;
        for answer in together {
            answers.push(answer?);
        }
        Ok(probe::compare_repeats(&answers))
    }

    /// A refusal with what to do about it, where the server's dialect knows
    /// ([`Dialect::explain_refusal`]: vLLM's K beyond its `--max-logprobs`).
    fn explain(&self, e: BackendError, k: u32) -> BackendError {
        explained(self.dialect(), e, k)
    }

    /// Samples a continuation of `request.prefix` with exact log p and log q per token; for a
    /// request of K > 0 candidates, with the K likeliest next tokens ([`Dialect::candidates`]:
    /// the raw list at the first position, asked for with at least K entries). `affinity` keeps one chain on one server while that server is healthy. Runs the
    /// start-up probe first if it has not succeeded yet: its terminal tokens check every stop.
    pub async fn generate(
        &self,
        request: &OwnedRequest,
        affinity: u64,
    ) -> Result<Generation, BackendError> {
        let info = self.probe().await?;
        let k = effective_k(request, self.reference.k);
        let (path, body) = self.generation_body(request, k);
        let answer = self
            .post(affinity, path, &body)
            .await
            .map_err(|e| self.explain(e, k))
            .map_err(|e| match (e, request.candidates) {
                (BackendError::Rejected(m), c) if c > 0 => {
                    BackendError::Rejected(self.dialect().explain_candidates(&m, c))
                }
                (e, _) => e,
            })?;
        let raw = self.parse_generation(&body, &answer, &info.terminal_tokens, path)?;
        raw.check_top_k(k)
            .map_err(|e| BackendError::Transient(format!("{path}: {e}")))?;
        let candidates = match request.candidates {
            0 => Vec::new(),
            c => self
                .dialect()
                .candidates(&raw, c)
                .map_err(answer_error(path))?,
        };
        let mut generation = raw
            .into_generation(request.temperature)
            .map_err(|e| BackendError::Transient(format!("{path}: {e}")))?;
        generation.candidates = candidates;
        Ok(generation)
    }
}

/// One server of a model, as its dialect's probe talks to it.
struct OneServer<'s> {
    model: &'s HttpModel,
    server: &'s Server,
    breaking: Breaking,
}

impl Exchange for OneServer<'_> {
    fn reference(&self) -> &HttpReference {
        &self.model.reference
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Value, BackendError>> {
        Box::pin(self.model.call_as(self.server, path, None, self.breaking))
    }

    fn post<'a>(
        &'a self,
        path: &'a str,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, BackendError>> {
        Box::pin(
            self.model
                .call_as(self.server, path, Some(body), self.breaking),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;
    use serde_json::json;

    use super::*;
    use crate::wire;

    /// Serves `app` on a free port; the base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn model(reference: &str) -> HttpModel {
        match crate::parse(reference).unwrap() {
            crate::ModelRef::Http(h) => HttpModel::new(h),
            other => panic!("{other:?}"),
        }
    }

    /// A fake vLLM `/tokenize` that records the bodies it got. With `template` false it answers
    /// like vLLM for a model without a chat template (400 with the reason).
    async fn fake_vllm(template: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = Router::new().route(
            "/tokenize",
            post(move |body: axum::Json<Value>| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(body.0.clone());
                    if !template {
                        let message = "As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat template if the tokenizer does not define one.";
                        let error = json!({"error": {"message": message, "type": "BadRequestError", "param": null, "code": 400}});
                        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
                    }
                    let tokens = if body.get("messages").is_some() {
                        vec![151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198]
                    } else {
                        vec![6023]
                    };
                    axum::Json(json!({"count": tokens.len(), "max_model_len": 4096, "tokens": tokens, "token_strs": null}))
                        .into_response()
                }
            }),
        );
        (serve(app).await, seen)
    }

    #[tokio::test]
    async fn a_readiness_probe_of_a_server_that_is_down_leaves_its_circuit_closed() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let m = model(&format!("llamacpp+http://{closed}"));
        for _ in 0..2 * BREAKER_THRESHOLD {
            let err = m.probe_for_readiness().await.unwrap_err();
            assert!(err.is_unavailable(), "{err}");
        }
        assert_eq!(
            m.unavailable_for(),
            None,
            "readiness checks do not hold the model's jobs back"
        );
        // A job's probe counts, as every request of a job does.
        for _ in 0..BREAKER_THRESHOLD {
            assert!(m.probe().await.unwrap_err().is_unavailable());
        }
        assert!(m.unavailable_for().is_some(), "the circuit opened");
    }

    #[tokio::test]
    async fn vllm_chat_tokenize_sends_one_user_message_without_extra_special_tokens() {
        let (url, seen) = fake_vllm(true).await;
        let m = model(&format!("vllm+{url}/v1?model=m"));
        let tokens = m.tokenize_chat("hi").await.unwrap();
        assert_eq!(
            tokens,
            vec![151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198]
        );
        assert_eq!(m.tokenize("hi").await.unwrap(), vec![6023]);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], wire::vllm_tokenize_chat_body("m", "hi"));
        assert_eq!(seen[0]["add_special_tokens"], false);
        assert_eq!(seen[0]["add_generation_prompt"], true);
    }

    #[tokio::test]
    async fn a_model_without_a_chat_template_is_refused_with_the_servers_message() {
        let (url, _) = fake_vllm(false).await;
        let err = model(&format!("vllm+{url}?model=m"))
            .tokenize_chat("hi")
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("400"), "{err}");
        assert!(
            err.to_string().contains("must provide a chat template"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn llamacpp_chat_tokenize_tokenizes_the_templated_text_with_bos() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log_a, log_t) = (seen.clone(), seen.clone());
        let app = Router::new()
            .route(
                "/apply-template",
                post(move |body: axum::Json<Value>| {
                    let log = log_a.clone();
                    async move {
                        log.lock().unwrap().push(("apply", body.0.clone()));
                        axum::Json(json!({"prompt": "[user] hi</s>[assistant] "}))
                    }
                }),
            )
            .route(
                "/tokenize",
                post(move |body: axum::Json<Value>| {
                    let log = log_t.clone();
                    async move {
                        log.lock().unwrap().push(("tokenize", body.0.clone()));
                        axum::Json(json!({"tokens": [1, 62, 75, 76]}))
                    }
                }),
            );
        let url = serve(app).await;
        let tokens = model(&format!("llamacpp+{url}"))
            .tokenize_chat("hi")
            .await
            .unwrap();
        assert_eq!(tokens, vec![1, 62, 75, 76]);
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![
                ("apply", wire::llamacpp_apply_template_body("hi")),
                (
                    "tokenize",
                    json!({"content": "[user] hi</s>[assistant] ", "add_special": true})
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_malformed_template_answer_is_transient() {
        let app = Router::new().route(
            "/apply-template",
            post(|| async { axum::Json(json!({"content": "x"})) }),
        );
        let url = serve(app).await;
        let err = model(&format!("llamacpp+{url}"))
            .tokenize_chat("hi")
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("/apply-template"), "{err}");
    }

    /// Records the metrics registered while it is the thread's recorder, as `name{k=v,...}`.
    #[derive(Clone, Default)]
    struct Registered(Arc<Mutex<Vec<String>>>);

    impl Registered {
        fn note(&self, key: &metrics::Key) {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            self.0
                .lock()
                .unwrap()
                .push(format!("{}{{{}}}", key.name(), labels.join(",")));
        }
    }

    impl metrics::Recorder for Registered {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            self.note(key);
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            self.note(key);
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            self.note(key);
            metrics::Histogram::noop()
        }
    }

    #[tokio::test]
    async fn server_credentials_never_appear_in_errors_logs_or_metric_labels() {
        const SECRET: &str = "SECRET-pw-5f1c";
        let registered = Registered::default();
        let _recorder = metrics::set_default_local_recorder(&registered);

        // A server that answers 500, and records the credentials it was sent.
        let auth = Arc::new(Mutex::new(Vec::new()));
        let log = auth.clone();
        let app = Router::new().route(
            "/tokenize",
            post(move |headers: axum::http::HeaderMap| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(
                        headers
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string()),
                    );
                    (StatusCode::INTERNAL_SERVER_ERROR, "tokenizer exploded")
                }
            }),
        );
        let url = serve(app).await;
        let with_secret = url.replacen("http://", &format!("http://user:{SECRET}@"), 1);
        let shown = url.replacen("http://", "http://user:***@", 1);
        let m = model(&format!("llamacpp+{with_secret}"));
        let err = m.tokenize("hi").await.unwrap_err();
        assert!(err.is_transient() && !err.is_unavailable(), "{err}");
        assert_eq!(
            err.message(),
            format!("POST {shown}/tokenize answered 500 Internal Server Error: tokenizer exploded")
        );
        // The request itself carried the credentials, as basic auth.
        // base64("user:SECRET-pw-5f1c")
        let expected = "Basic dXNlcjpTRUNSRVQtcHctNWYxYw==".to_string();
        assert_eq!(*auth.lock().unwrap(), vec![Some(expected)]);

        // A refused connection, until the circuit opens; the probe's context; the exactness.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let m = model(&format!("llamacpp+http://user:{SECRET}@{closed}"));
        let mut messages = Vec::new();
        for _ in 0..BREAKER_THRESHOLD {
            let err = m.tokenize("hi").await.unwrap_err();
            assert!(err.is_unavailable(), "{err}");
            assert!(
                err.message()
                    .starts_with(&format!("POST http://user:***@{closed}/tokenize failed")),
                "{err}"
            );
            messages.push(err.to_string());
        }
        let open = m.tokenize("hi").await.unwrap_err().to_string();
        assert!(open.contains("failed 5 times in a row"), "{open}");
        assert!(open.contains(&format!("user:***@{closed}")), "{open}");
        messages.push(open);
        let probe = m
            .generate(
                &OwnedRequest {
                    prefix: vec![1],
                    prompt_len: 1,
                    max_tokens: 1,
                    temperature: 1.0,
                    top_k: None,
                    seed: 1,
                    candidates: 0,
                },
                0,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            probe.starts_with(&format!("start-up probe of http://user:***@{closed}")),
            "{probe}"
        );
        messages.push(probe);
        messages.push(m.exactness(None).to_string());
        messages.push(format!("{m:?}"));
        for text in &messages {
            assert!(!text.contains(SECRET), "{text}");
        }

        // The circuit's gauge is labelled with the redacted URL.
        let labels = registered.0.lock().unwrap().clone();
        let circuit: Vec<&String> = labels
            .iter()
            .filter(|l| l.starts_with(CIRCUIT_OPEN.name))
            .collect();
        assert!(
            circuit.contains(&&format!(
                "{CIRCUIT_OPEN}{{server=http://user:***@{closed}}}"
            )),
            "{labels:?}"
        );
        assert!(
            circuit.contains(&&format!("{CIRCUIT_OPEN}{{server={shown}}}")),
            "{labels:?}"
        );
        assert!(labels.iter().all(|l| !l.contains(SECRET)), "{labels:?}");
    }
}
