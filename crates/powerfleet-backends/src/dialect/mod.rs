//! What differs between inference servers: one [`Dialect`] per server, each in its own file
//! (`llamacpp.rs`, `vllm.rs`, `sglang.rs`), reached through [`ServerKind::dialect`].
//!
//! A dialect builds the server's request bodies and reads its answers (generation, tokenize,
//! detokenize, chat templates), knows its names, limits and context rule, and says what its
//! requests pin on the server and how to fix it when it is not raw or not deterministic.
//! Everything else is one code for every server: the client's transport, concurrency limits
//! and circuit breakers (`client.rs`), the exactness recipe (`recipe.rs`), and the probe's
//! checks (`probe.rs`).
//!
//! A new server is a file here implementing [`Dialect`] and one registration below: its
//! [`ServerKind`] variant, with its arm in [`ServerKind::dialect`] and its place in
//! [`ServerKind::ALL`]. (Its scheme also goes into `powerfleet_jobs::route::REMOTE_SCHEMES`, a
//! lower crate; a test checks that every kind's is there.)

use futures_util::future::BoxFuture;
use powerfleet_sampler::{OwnedRequest, TokenId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BackendError;
use crate::probe::{ServerInfo, check_raw_logprobs};
use crate::reference::{HttpReference, ProposalError};
use common::{answer_error, parse_models, tokens_of};

pub mod common;
pub mod llamacpp;
pub mod sglang;
pub mod vllm;

pub use common::{AnswerError, RawGeneration};

/// Which server speaks at the URLs: the closed set of dialects, and their one registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// llama.cpp `llama-server` (`/completion`, `/tokenize`, `/detokenize`).
    LlamaCpp,
    /// vLLM (`/v1/completions`, `/tokenize`, `/detokenize`).
    Vllm,
    /// SGLang (`/generate`, `/tokenize`, `/detokenize`).
    Sglang,
}

impl ServerKind {
    /// Every server kind, in the order messages list them.
    pub const ALL: [ServerKind; 3] = [ServerKind::LlamaCpp, ServerKind::Vllm, ServerKind::Sglang];

    /// What this server does its own way: request bodies, answers, names, limits, the probe.
    /// The one registration of a server: a new kind is a variant with its arm here and its
    /// place in [`ServerKind::ALL`], and its file in this module.
    pub fn dialect(self) -> &'static dyn Dialect {
        match self {
            ServerKind::LlamaCpp => &llamacpp::LlamaCpp,
            ServerKind::Vllm => &vllm::Vllm,
            ServerKind::Sglang => &sglang::Sglang,
        }
    }

    /// The scheme prefix in references, which is also the kind's serialized form.
    pub fn prefix(self) -> &'static str {
        self.dialect().facts().prefix
    }

    /// The server's name, for messages.
    pub fn name(self) -> &'static str {
        self.dialect().facts().name
    }

    /// The top-K used when neither the reference (`k=`) nor the job sets one. It fits each
    /// server's default limit on returned log-probabilities ([`DialectFacts::default_k`]).
    pub fn default_k(self) -> u32 {
        self.dialect().facts().default_k
    }

    /// Whether the server samples at proposal temperature `temperature` exactly: a finite
    /// number > 0 (0 is greedy) within the server's limits ([`Dialect::check_temperature`]).
    /// Called at submission and at job start; the error names the server's limits.
    pub fn check_proposal(self, temperature: f64) -> Result<(), ProposalError> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ProposalError::NotPositive { temperature });
        }
        self.dialect().check_temperature(temperature)
    }
}

/// How a server turns chat messages into a prompt's token ids.
#[derive(Clone, Debug)]
pub enum ChatTemplate {
    /// The server renders the template as text: POST `body` to `path`, `text` reads the answer,
    /// and the text is then tokenized as any prompt is (`/tokenize` with special tokens).
    Text {
        /// Where the body goes.
        path: &'static str,
        /// The messages, with the generation prompt asked for.
        body: Value,
        /// The templated text of the answer.
        text: fn(&Value) -> Result<String, AnswerError>,
    },
    /// The server tokenizes the templated messages itself: POST `body` to `path`, whose answer
    /// is a `/tokenize` answer.
    Tokens {
        /// Where the body goes.
        path: &'static str,
        /// The messages, with the generation prompt asked for.
        body: Value,
    },
}

/// What a server is called and what it says of itself: its names, limits and context rule, and
/// the texts of its exactness notes and fixes. Each dialect has one, a constant.
#[derive(Clone, Copy, Debug)]
pub struct DialectFacts {
    /// The scheme prefix in references (`llamacpp+http://...`), which is also the server kind's
    /// serialized form.
    pub prefix: &'static str,
    /// The server's name, for messages.
    pub name: &'static str,
    /// A reference of this kind as messages show one (`vllm+http://HOST:PORT?model=NAME`).
    pub reference_example: &'static str,
    /// Whether a reference must name the served model (`?model=NAME`).
    pub requires_model: bool,
    /// The top-K used when neither the reference (`k=`) nor the job sets one: it fits the
    /// server's default limit on returned log-probabilities.
    pub default_k: u32,
    /// Where generation requests go.
    pub generation_path: &'static str,
    /// The field of the `/detokenize` answer that holds the text.
    pub detokenized_field: &'static str,
    /// Where the numbers come from, for the exactness note of every result.
    pub logprob_source: &'static str,
    /// What the request bodies pin on the server, recorded in a `ServerPin`: a change of these
    /// bodies (a new sampler setting, another logprobs mode) changes the string, so a chain is
    /// never resumed under a different q.
    pub sampler_recipe: &'static str,
    /// Tokens of the context a prompt and its completion cannot use together: a prompt of
    /// `prompt_len` tokens and `max_new_tokens` fit a context of `context_len` when
    /// `prompt_len + max_new_tokens + reserve <= context_len`.
    pub context_reserve: u32,
    /// The server's name for its context length, for messages.
    pub context_setting: &'static str,
    /// The fix for a server whose log-probabilities are not raw.
    pub raw_logprobs_fix: &'static str,
    /// The fix for a server whose answers change from one request to the next.
    pub determinism_fix: &'static str,
    /// The server's own start-up probe ([`Dialect::probe`]).
    pub probe: ProbeFn,
}

/// A dialect's start-up probe of one server, every request sent through the server's
/// [`Exchange`].
pub type ProbeFn = for<'a> fn(&'a dyn Exchange) -> BoxFuture<'a, Result<ServerInfo, BackendError>>;

/// What one inference server does its own way. Apart from [`Dialect::probe`], which talks to one
/// server through an [`Exchange`], the methods are pure: the client sends what they build and
/// hands them what came back.
pub trait Dialect: Send + Sync {
    // ------------------------------------------------------------------ names and limits

    /// The server's names, limits, context rule and the texts of its notes and fixes.
    fn facts(&self) -> &'static DialectFacts;

    /// Whether the server samples at proposal temperature `temperature` (finite and > 0)
    /// exactly; the error names the server's limits.
    fn check_temperature(&self, _temperature: f64) -> Result<(), ProposalError> {
        Ok(())
    }

    // ------------------------------------------------------------------------ generation

    /// The body of a generation request with top-K `k`: every server-side setting that can
    /// change q is pinned. `model` is the reference's `?model=`.
    fn generation_body(&self, request: &OwnedRequest, k: u32, model: Option<&str>) -> Value;

    /// The raw generation in the `answer` to the generation body `sent`; `terminal` holds the
    /// model's end-of-generation tokens (empty when unknown).
    fn parse_generation(
        &self,
        sent: &Value,
        answer: &Value,
        terminal: &[TokenId],
    ) -> Result<RawGeneration, AnswerError>;

    /// A refusal of the server (`message`, for a request with top-K `k`) said with what to do
    /// about it; `None` leaves the message as the server gave it.
    fn explain_refusal(&self, _message: &str, _k: u32) -> Option<String> {
        None
    }

    /// The answer to a request of `n` > 0 candidates (power-lookahead): the `n` likeliest next
    /// tokens after the prefix by raw log p, descending, ties by ascending id. The request was
    /// sent with top-K at least `n` ([`effective_k`](common::effective_k)), so the raw list at
    /// the first generated position holds them ([`candidates_of`](common::candidates_of)).
    fn candidates(&self, raw: &RawGeneration, n: u32) -> Result<Vec<(TokenId, f64)>, AnswerError> {
        common::candidates_of(raw, n)
    }

    /// A refusal of a request of `n` > 0 candidates (`message`, already explained by
    /// [`Dialect::explain_refusal`]) said with what power-lookahead can change.
    fn explain_candidates(&self, message: &str, n: u32) -> String {
        format!("{message} (power-lookahead asked for {n} candidates, lookahead_candidates)")
    }

    // ---------------------------------------------------------------- tokens and chats

    /// The `/tokenize` body of `text`, special tokens such as BOS added.
    fn tokenize_body(&self, model: Option<&str>, text: &str) -> Value;

    /// The `/detokenize` body of `tokens`.
    fn detokenize_body(&self, model: Option<&str>, tokens: &[TokenId]) -> Value;

    /// How `messages` (`[{"role", "content"}, ...]`) become a prompt through the model's chat
    /// template with the generation prompt appended, or why this server cannot do it.
    fn chat_template(
        &self,
        model: Option<&str>,
        messages: Value,
    ) -> Result<ChatTemplate, BackendError>;

    // --------------------------------------------------- exactness, pinning and contexts

    /// Whether a prompt of `prompt_len` tokens plus `max_new_tokens` fits `context_len`.
    fn fits(&self, context_len: u32, prompt_len: usize, max_new_tokens: u32) -> bool {
        prompt_len as u64 + u64::from(max_new_tokens) + u64::from(self.facts().context_reserve)
            <= u64::from(context_len)
    }

    /// The most tokens a prompt and its completion may hold together in a context of
    /// `context_len` tokens: the largest total [`Dialect::fits`] accepts.
    fn max_total_tokens(&self, context_len: u32) -> u32 {
        context_len.saturating_sub(self.facts().context_reserve)
    }

    // --------------------------------------------------------------------------- probe

    /// The start-up probe of one server, every request sent through `server`: what it serves,
    /// its context and terminal tokens, and the checks exactness needs of this server (raw
    /// log-probabilities at two temperatures, `probe_raw_logprobs`, and whatever else the
    /// server can get wrong). The determinism probe that follows is the same for every server.
    fn probe<'a>(
        &'a self,
        server: &'a dyn Exchange,
    ) -> BoxFuture<'a, Result<ServerInfo, BackendError>> {
        (self.facts().probe)(server)
    }
}

/// One server of a reference, as a dialect's probe talks to it. The client sends the requests
/// (within the server's concurrency limit, keeping its circuit breaker) and classifies their
/// failures.
pub trait Exchange: Sync {
    /// The reference the server belongs to.
    fn reference(&self) -> &HttpReference;

    /// GET `path`.
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Value, BackendError>>;

    /// POST `body` as JSON to `path`.
    fn post<'a>(
        &'a self,
        path: &'a str,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, BackendError>>;
}

/// `e` with what to do about it, where `dialect` knows ([`Dialect::explain_refusal`]).
pub(crate) fn explained(dialect: &dyn Dialect, e: BackendError, k: u32) -> BackendError {
    match e {
        BackendError::Rejected(m) => match dialect.explain_refusal(&m, k) {
            Some(explained) => BackendError::Rejected(explained),
            None => BackendError::Rejected(m),
        },
        other => other,
    }
}

// ------------------------------------------------------------- probe steps they share

/// The text the start-up probe tokenizes for its one-token generations.
const PROBE_TEXT: &str = "The";
/// The seed of the probe's generations.
pub(crate) const PROBE_SEED: u64 = 0x5eed;

/// A GET that may be missing on some server versions: `None` when the server refuses it or
/// answers badly; an outage is still an error.
pub(crate) async fn optional_get(
    server: &dyn Exchange,
    path: &str,
) -> Result<Option<Value>, BackendError> {
    match server.get(path).await {
        Ok(v) => Ok(Some(v)),
        Err(e @ BackendError::Unavailable(_)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The probe's prefix: [`PROBE_TEXT`] tokenized by `server`.
pub(crate) async fn probe_prefix(server: &dyn Exchange) -> Result<Vec<TokenId>, BackendError> {
    let reference = server.reference();
    let body = reference
        .kind
        .dialect()
        .tokenize_body(reference.model.as_deref(), PROBE_TEXT);
    let answer = server.post("/tokenize", &body).await?;
    let tokens = tokens_of(&answer, "/tokenize")?;
    if tokens.is_empty() {
        return Err(BackendError::Transient(format!(
            "/tokenize of {PROBE_TEXT:?} returned no token"
        )));
    }
    Ok(tokens)
}

/// The probe's one-token request after `prefix`.
pub(crate) fn probe_request(prefix: &[TokenId], temperature: f64, k: u32) -> OwnedRequest {
    OwnedRequest {
        prefix: prefix.to_vec(),
        prompt_len: prefix.len(),
        max_tokens: 1,
        temperature,
        top_k: Some(k),
        seed: PROBE_SEED,
        candidates: 0,
    }
}

/// The served model `wanted` (without one, the first) of a server with an OpenAI-compatible
/// model list (`GET /v1/models`), and its context length. A model the server does not serve is
/// refused with the served ids and `advice`.
pub(crate) async fn served_model(
    server: &dyn Exchange,
    wanted: Option<&str>,
    advice: &str,
) -> Result<(String, Option<u32>), BackendError> {
    let answer = server.get("/v1/models").await?;
    let served =
        parse_models(&answer).map_err(|e| BackendError::Transient(format!("/v1/models: {e}")))?;
    match wanted {
        Some(model) => served.iter().find(|(id, _)| id == model).cloned(),
        None => served.first().cloned(),
    }
    .ok_or_else(|| {
        let ids: Vec<&str> = served.iter().map(|(id, _)| id.as_str()).collect();
        BackendError::Rejected(format!(
            "the server serves {ids:?}, not {:?}; {advice}",
            wanted.unwrap_or_default()
        ))
    })
}

/// The probe's check that `server`'s log-probabilities are raw: one token after `prefix`, with
/// the same seed and the reference's K, at temperatures 1 and 0.5, as chains send it; the two
/// top-K lists must agree ([`check_raw_logprobs`]). The lists at 1 and at 0.5.
pub(crate) async fn probe_raw_logprobs(
    server: &dyn Exchange,
    prefix: &[TokenId],
    terminal: &[TokenId],
) -> Result<[Vec<(TokenId, f64)>; 2], BackendError> {
    let at_1 = first_list(server, prefix, terminal, 1.0).await?;
    let at_half = first_list(server, prefix, terminal, 0.5).await?;
    check_raw_logprobs(server.reference().kind, &at_1, &at_half)?;
    Ok([at_1, at_half])
}

/// The raw top-K list of a one-token generation after `prefix` at `temperature`, with the
/// reference's K and the probe's seed, sent as chains send it.
async fn first_list(
    server: &dyn Exchange,
    prefix: &[TokenId],
    terminal: &[TokenId],
    temperature: f64,
) -> Result<Vec<(TokenId, f64)>, BackendError> {
    let reference = server.reference();
    let dialect = reference.kind.dialect();
    let (k, path) = (reference.k, dialect.facts().generation_path);
    let request = probe_request(prefix, temperature, k);
    let body = dialect.generation_body(&request, k, reference.model.as_deref());
    let answer = server
        .post(path, &body)
        .await
        .map_err(|e| explained(dialect, e, k))?;
    let raw = dialect
        .parse_generation(&body, &answer, terminal)
        .map_err(answer_error(path))?;
    raw.check_top_k(k)
        .map_err(|e| BackendError::Transient(format!("{path}: {e}")))?;
    raw.top.into_iter().next().ok_or_else(|| {
        BackendError::Transient(format!("{path}: the probe's generation returned no token"))
    })
}

/// "a, b or c".
pub(crate) fn either(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::common::request;
    use super::llamacpp::{llamacpp_body, llamacpp_seed};
    use super::sglang::{SGLANG_PINNED_PARAMS, sglang_body, sglang_seed};
    use super::vllm::{vllm_body, vllm_seed};
    use crate::reference::ServerKind;

    #[test]
    fn seeds_map_deterministically_into_each_servers_range() {
        // llama.cpp: u32, never LLAMA_DEFAULT_SEED (0xFFFFFFFF, "random").
        assert_eq!(llamacpp_seed(7), 7);
        assert_eq!(llamacpp_seed(0xFFFF_FFFF), u32::MAX - 1);
        assert_eq!(llamacpp_seed(0xFFFF_FFFF_0000_0000), u32::MAX - 1);
        assert_eq!(llamacpp_seed(1 << 32), 1);
        // vLLM: within [0, 2^63 - 1].
        assert_eq!(vllm_seed(u64::MAX), i64::MAX as u64);
        assert_eq!(vllm_seed(12345), 12345);
        // SGLang: 31 bits, which int32 and int64 tensors both hold.
        for seed in [0, 1, u64::MAX, 1 << 40, 0xDEAD_BEEF_CAFE_F00D] {
            assert!(sglang_seed(seed) <= i32::MAX as u64);
            assert_eq!(sglang_seed(seed), sglang_seed(seed));
        }
        assert_ne!(sglang_seed(1 << 40), sglang_seed(1 << 41));
        let body = llamacpp_body(&request(0xFFFF_FFFF), 4);
        assert_eq!(body["seed"], u32::MAX - 1);
        let body = vllm_body(&request(u64::MAX), 4, "m");
        assert_eq!(body["seed"], i64::MAX);
    }

    #[test]
    fn vllm_and_sglang_bodies_set_every_sampling_parameter() {
        let body = vllm_body(&request(3), 20, "m");
        for (key, value) in [
            ("top_k", json!(20)),
            ("logprobs", json!(20)),
            ("top_p", json!(1.0)),
            ("min_p", json!(0.0)),
            ("min_tokens", json!(0)),
            ("stop", json!([])),
            ("bad_words", json!([])),
            ("return_tokens_as_token_ids", json!(true)),
        ] {
            assert_eq!(body[key], value, "{key}");
        }
        let body = sglang_body(&request(3), 64);
        assert_eq!(body["input_ids"], json!([1, 75, 72]));
        assert_eq!(body["top_logprobs_num"], 64);
        assert_eq!(body["logprob_start_len"], -1);
        assert_eq!(body["return_logprob"], true);
        let params = body["sampling_params"].as_object().unwrap();
        assert_eq!(params["top_k"], 64);
        assert_eq!(params["no_stop_trim"], true);
        assert_eq!(params["sampling_seed"], sglang_seed(3));
        let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut pinned = SGLANG_PINNED_PARAMS.to_vec();
        pinned.sort_unstable();
        assert_eq!(keys, pinned, "every parameter sent is listed as pinned");
    }

    #[test]
    fn the_largest_total_is_the_largest_that_fits() {
        for kind in [ServerKind::LlamaCpp, ServerKind::Vllm, ServerKind::Sglang] {
            let max = kind.dialect().max_total_tokens(256);
            assert!(kind.dialect().fits(256, 10, max - 10), "{kind:?}");
            assert!(!kind.dialect().fits(256, 10, max - 9), "{kind:?}");
        }
    }

    #[test]
    fn context_limits_follow_each_server() {
        assert!(ServerKind::Vllm.dialect().fits(2048, 1000, 1048));
        assert!(!ServerKind::Vllm.dialect().fits(2048, 1000, 1049));
        assert!(!ServerKind::Sglang.dialect().fits(2048, 1000, 1048));
        assert!(ServerKind::Sglang.dialect().fits(2048, 1000, 1047));
        assert!(!ServerKind::LlamaCpp.dialect().fits(256, 6, 250));
        assert!(ServerKind::LlamaCpp.dialect().fits(256, 6, 249));
    }
}
