//! `HttpModel`: one or more inference servers behind one model reference, with per-server
//! concurrency limits, a circuit breaker per server, and chain-to-server affinity.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use powerfleet_sampler::{Generation, OwnedRequest, TokenId};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::reference::{HttpReference, ServerKind};
use crate::wire;

/// 1 while a server's circuit is open (it is being skipped), 0 otherwise; labelled by `server`.
pub const CIRCUIT_OPEN: &str = "powerfleet_backend_circuit_open";

/// Consecutive failures after which a server is skipped.
pub const BREAKER_THRESHOLD: u32 = 5;
/// How long a tripped server is skipped before one trial request.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(10);

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// Worth retrying: network error, timeout, 5xx, malformed or incomplete answer, or every
    /// server's circuit open.
    #[error("{0}")]
    Transient(String),
    /// The server refused the request (4xx): retrying the same request will not help.
    #[error("{0}")]
    Rejected(String),
}

impl BackendError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient(_))
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug)]
struct Server {
    url: String,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
}

impl Server {
    fn available(&self, now: Instant) -> bool {
        let b = self.breaker.lock().expect("breaker");
        b.open_until.is_none_or(|t| now >= t)
    }

    fn succeeded(&self) {
        *self.breaker.lock().expect("breaker") = Breaker::default();
        metrics::gauge!(CIRCUIT_OPEN, "server" => self.url.clone()).set(0.0);
    }

    fn failed(&self) {
        let mut b = self.breaker.lock().expect("breaker");
        b.failures += 1;
        if b.failures >= BREAKER_THRESHOLD {
            if b.open_until.is_none() || b.open_until.is_some_and(|t| Instant::now() >= t) {
                tracing::warn!(server = %self.url, failures = b.failures, "circuit open: server skipped for a while");
            }
            b.open_until = Some(Instant::now() + BREAKER_COOLDOWN);
            metrics::gauge!(CIRCUIT_OPEN, "server" => self.url.clone()).set(1.0);
        }
    }
}

/// Inference servers behind one model reference.
#[derive(Debug)]
pub struct HttpModel {
    reference: HttpReference,
    client: reqwest::Client,
    servers: Vec<Server>,
}

impl HttpModel {
    /// A client for the reference's servers (no request is made yet).
    pub fn new(reference: HttpReference) -> HttpModel {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(reference.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client with timeouts builds");
        let servers = reference
            .servers
            .iter()
            .map(|url| Server {
                url: url.clone(),
                permits: Semaphore::new(reference.max_in_flight),
                breaker: Mutex::new(Breaker::default()),
            })
            .collect();
        HttpModel {
            reference,
            client,
            servers,
        }
    }

    /// The parsed reference.
    pub fn reference(&self) -> &HttpReference {
        &self.reference
    }

    /// Where the numbers come from, recorded with every result.
    pub fn exactness(&self, top_k: Option<u32>) -> String {
        let k = top_k.unwrap_or(self.reference.k);
        let server = match self.reference.kind {
            ServerKind::LlamaCpp => "llama.cpp /completion with raw n_probs",
            ServerKind::Vllm => "vLLM /v1/completions in raw-logprobs mode",
        };
        format!("exact: log p raw at temperature 1; log q of the top-{k} proposal ({server})")
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
            return Err(BackendError::Transient(format!(
                "all {} servers of {} failed {BREAKER_THRESHOLD} times in a row; retrying after their cool-down",
                self.servers.len(),
                self.reference.kind.prefix()
            )));
        };
        let _permit = server.permits.acquire().await.expect("never closed");
        let url = format!("{}{path}", server.url);
        let result = async {
            let response = self
                .client
                .post(&url)
                .json(body)
                .send()
                .await
                .map_err(|e| {
                    let what = if e.is_timeout() {
                        "timed out"
                    } else {
                        "failed"
                    };
                    BackendError::Transient(format!("POST {url} {what}: {}", error_chain(&e)))
                })?;
            let status = response.status();
            let text = response.text().await.map_err(|e| {
                BackendError::Transient(format!("POST {url}: reading the answer failed: {e}"))
            })?;
            if status.is_server_error() {
                return Err(BackendError::Transient(format!(
                    "POST {url} answered {status}: {}",
                    snippet(&text)
                )));
            }
            if !status.is_success() {
                return Err(BackendError::Rejected(format!(
                    "POST {url} answered {status}: {}",
                    snippet(&text)
                )));
            }
            serde_json::from_str::<Value>(&text).map_err(|e| {
                BackendError::Transient(format!(
                    "POST {url} answered malformed JSON ({e}): {}",
                    snippet(&text)
                ))
            })
        }
        .await;
        match &result {
            Ok(_) => server.succeeded(),
            Err(BackendError::Transient(_)) => server.failed(),
            Err(BackendError::Rejected(_)) => server.succeeded(),
        }
        result
    }

    /// Token ids of `text`, by the server's own tokenizer (special tokens such as BOS added).
    pub async fn tokenize(&self, text: &str) -> Result<Vec<TokenId>, BackendError> {
        let body = match self.reference.kind {
            ServerKind::LlamaCpp => json!({"content": text, "add_special": true}),
            ServerKind::Vllm => {
                json!({"model": self.reference.model, "prompt": text, "add_special_tokens": true})
            }
        };
        let answer = self.post(0, "/tokenize", &body).await?;
        answer
            .get("tokens")
            .and_then(Value::as_array)
            .and_then(|ts| {
                ts.iter()
                    .map(|t| t.as_u64().and_then(|t| TokenId::try_from(t).ok()))
                    .collect()
            })
            .ok_or_else(|| {
                BackendError::Transient(format!(
                    "/tokenize answered without a token list: {}",
                    snippet(&answer.to_string())
                ))
            })
    }

    /// Text of `tokens`, by the server's own tokenizer.
    pub async fn detokenize(&self, tokens: &[TokenId]) -> Result<String, BackendError> {
        let body = match self.reference.kind {
            ServerKind::LlamaCpp => json!({"tokens": tokens}),
            ServerKind::Vllm => json!({"model": self.reference.model, "tokens": tokens}),
        };
        let answer = self.post(0, "/detokenize", &body).await?;
        let field = match self.reference.kind {
            ServerKind::LlamaCpp => "content",
            ServerKind::Vllm => "prompt",
        };
        answer
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                BackendError::Transient(format!("/detokenize answered without `{field}`"))
            })
    }

    /// Samples a continuation of `request.prefix` with exact log p and log q per token.
    /// `affinity` keeps one chain on one server while that server is healthy.
    pub async fn generate(
        &self,
        request: &OwnedRequest,
        affinity: u64,
    ) -> Result<Generation, BackendError> {
        let k = wire::effective_k(request, self.reference.k);
        let (path, body) = match self.reference.kind {
            ServerKind::LlamaCpp => ("/completion", wire::llamacpp_body(request, k)),
            ServerKind::Vllm => (
                "/v1/completions",
                wire::vllm_body(
                    request,
                    k,
                    self.reference.model.as_deref().unwrap_or_default(),
                ),
            ),
        };
        let answer = self.post(affinity, path, &body).await?;
        let raw = match self.reference.kind {
            ServerKind::LlamaCpp => wire::parse_llamacpp(&answer),
            ServerKind::Vllm => wire::parse_vllm(&answer, None),
        }
        .map_err(|e| BackendError::Transient(format!("{path}: {e}")))?;
        raw.into_generation(request.temperature)
            .map_err(|e| BackendError::Transient(format!("{path}: {e}")))
    }
}

/// An error with its causes: reqwest's own message omits why a request failed (a refused
/// certificate, a reset connection).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}
