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
            ServerKind::LlamaCpp => wire::llamacpp_tokenize_body(text),
            ServerKind::Vllm => {
                json!({"model": self.reference.model, "prompt": text, "add_special_tokens": true})
            }
        };
        let answer = self.post(0, "/tokenize", &body).await?;
        wire::parse_tokens(&answer).map_err(|e| {
            BackendError::Transient(format!(
                "/tokenize answered without a token list ({e}): {}",
                snippet(&answer.to_string())
            ))
        })
    }

    /// Token ids of `user_text` formatted by the server's chat template as one user message,
    /// with the generation prompt (the assistant turn's opening) appended: the prompt the
    /// server's own chat completions would start from, BOS included once.
    ///
    /// - llama.cpp: `POST /apply-template`, then `/tokenize` of its text with `add_special`, as
    ///   `/v1/chat/completions` does. The server strips a BOS text the template writes at the
    ///   start when its tokenizer adds BOS, so BOS is not doubled. A model without a template
    ///   gets llama-server's ChatML fallback (docs/llama-server.md).
    /// - vLLM: `POST /tokenize` with `messages`, `add_generation_prompt` true and
    ///   `add_special_tokens` false (the template writes the special tokens), as vLLM's chat
    ///   completions do. A model without a chat template is refused with the server's message.
    pub async fn tokenize_chat(&self, user_text: &str) -> Result<Vec<TokenId>, BackendError> {
        match self.reference.kind {
            ServerKind::LlamaCpp => {
                let body = wire::llamacpp_apply_template_body(user_text);
                let answer = self.post(0, "/apply-template", &body).await?;
                let text = wire::parse_llamacpp_template(&answer).map_err(|e| {
                    BackendError::Transient(format!(
                        "/apply-template answered without the templated prompt ({e}): {}",
                        snippet(&answer.to_string())
                    ))
                })?;
                self.tokenize(&text).await
            }
            ServerKind::Vllm => {
                let body = wire::vllm_tokenize_chat_body(
                    self.reference.model.as_deref().unwrap_or_default(),
                    user_text,
                );
                let answer = self.post(0, "/tokenize", &body).await?;
                wire::parse_tokens(&answer).map_err(|e| {
                    BackendError::Transient(format!(
                        "/tokenize (chat) answered without a token list ({e}): {}",
                        snippet(&answer.to_string())
                    ))
                })
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;

    use super::*;

    /// Serves `app` on a free port; the base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn model(reference: &str) -> HttpModel {
        match crate::parse(reference).unwrap() {
            crate::Reference::Http(h) => HttpModel::new(h),
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
}
