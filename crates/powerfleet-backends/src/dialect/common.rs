//! What the dialects' answers share: [`AnswerError`], which says whether a retry can help;
//! [`RawGeneration`], tokens and raw top-K lists before the exactness recipe; and the field,
//! token-id and terminal-token checks every parser uses; and how an answer that cannot be used
//! becomes a [`BackendError`].

use powerfleet_sampler::{Generation, OwnedRequest, TokenId};
use serde_json::{Value, json};

use crate::error::BackendError;
use crate::recipe::{CLAMPED_NEG_INF, exact_log_p_q};

/// Why an answer cannot be used. Each check that refuses an answer picks the class itself: there
/// is no conversion from a bare message, which would pick one for it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// The server's configuration rules out exact sampling, and every retry will say the same: a
    /// sampler setting it overrode, a stop string it applies, a context that filled up, a stop
    /// at a token outside the terminal set. The job fails with the message.
    #[error("{0}")]
    Refused(String),
    /// This answer is malformed, incomplete or inconsistent; another attempt may succeed.
    #[error("{0}")]
    Unusable(String),
}

impl AnswerError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            AnswerError::Refused(m) | AnswerError::Unusable(m) => m,
        }
    }

    /// Whether every retry will fail the same way.
    pub fn is_permanent(&self) -> bool {
        matches!(self, AnswerError::Refused(_))
    }
}

/// What a server answered, before the exactness recipe: tokens, the raw top-K list at each
/// position, and whether a terminal token (EOS or another end-of-generation token) ended the
/// generation.
#[derive(Clone, Debug, PartialEq)]
pub struct RawGeneration {
    /// Generated token ids, the terminal token included when one ended the generation.
    pub tokens: Vec<TokenId>,
    /// Per position, (token, raw log-probability) of the top K.
    pub top: Vec<Vec<(TokenId, f64)>>,
    /// Whether a terminal token ended the generation (it is the last of `tokens`).
    pub eos: bool,
}

impl RawGeneration {
    /// Exact log p and log q per token (see `recipe`).
    pub fn into_generation(self, temperature: f64) -> Result<Generation, AnswerError> {
        if self.top.len() != self.tokens.len() {
            return Err(AnswerError::Unusable(format!(
                "the server returned {} tokens but log-probabilities for {}",
                self.tokens.len(),
                self.top.len()
            )));
        }
        let mut g = Generation {
            log_p: Vec::with_capacity(self.tokens.len()),
            log_q: Vec::with_capacity(self.tokens.len()),
            tokens: self.tokens,
            eos: self.eos,
            candidates: Vec::new(),
        };
        for (i, (top, &t)) in self.top.iter().zip(&g.tokens).enumerate() {
            let (lp, lq) = exact_log_p_q(top, t, temperature)
                .map_err(|e| AnswerError::Unusable(format!("token {i}: {e}")))?;
            g.log_p.push(lp);
            g.log_q.push(lq);
        }
        Ok(g)
    }

    /// Checks that no position lists more than `k` candidates. vLLM lists the sampled token
    /// besides the top K (OpenAI's "logprobs + 1"), so K + 1 entries mean the sampled token was
    /// outside the top K, and the list is not the set sampled from.
    pub fn check_top_k(&self, k: u32) -> Result<(), AnswerError> {
        match self.top.iter().position(|t| t.len() > k as usize) {
            Some(i) => Err(AnswerError::Unusable(format!(
                "position {i} lists {} candidates for a top-{k} proposal: the sampled token was not among the top {k}, so the server did not sample from the top-K it reported",
                self.top[i].len()
            ))),
            None => Ok(()),
        }
    }
}

/// The top-K used for a request: the job's proposal top-k, else the backend's default; for a
/// request of K > 0 candidates (power-lookahead), at least K, so that the raw list at the first
/// position holds the K likeliest tokens. Sampling and the list use the same K, so the sampled
/// token's log q follows the recipe unchanged (that token is not used by the chain).
pub fn effective_k(request: &OwnedRequest, default_k: u32) -> u32 {
    request.top_k.unwrap_or(default_k).max(request.candidates)
}

/// The answer to a request of `n` candidates: the raw list at the first generated position,
/// which is the top of the full-vocabulary distribution at temperature 1 after the prefix,
/// sorted by log p descending (ties by ascending id), without tokens of probability 0 (the
/// server's stand-in for −∞), cut to `n`. An answer without a first position, or whose list has
/// an entry that is not a raw log-probability or lists a token twice, is unusable.
pub fn candidates_of(raw: &RawGeneration, n: u32) -> Result<Vec<(TokenId, f64)>, AnswerError> {
    let first = raw.top.first().ok_or_else(|| {
        AnswerError::Unusable(
            "the server returned no log-probabilities for a candidate request".into(),
        )
    })?;
    if let Some(&(token, lp)) = first
        .iter()
        .find(|(_, lp)| !(lp.is_finite() && *lp <= 1e-6))
    {
        return Err(AnswerError::Unusable(format!(
            "candidate {token} has log-probability {lp}; raw log-probabilities are finite and <= 0"
        )));
    }
    let mut list: Vec<(TokenId, f64)> = first
        .iter()
        .copied()
        .filter(|&(_, lp)| lp > CLAMPED_NEG_INF)
        .collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut ids: Vec<TokenId> = list.iter().map(|&(t, _)| t).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(AnswerError::Unusable(
            "the first position's log-probabilities list a token twice".into(),
        ));
    }
    if list.is_empty() {
        return Err(AnswerError::Unusable(
            "the first position lists no token of probability > 0".into(),
        ));
    }
    list.truncate(n as usize);
    Ok(list)
}

/// The field `name` of `v`; an answer without it is malformed.
pub(crate) fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, AnswerError> {
    v.get(name)
        .ok_or_else(|| AnswerError::Unusable(format!("the response lacks the `{name}` field")))
}

/// `v` as a token id; anything else is a malformed answer.
pub(crate) fn token_id(v: &Value, what: &str) -> Result<TokenId, AnswerError> {
    v.as_u64()
        .and_then(|t| TokenId::try_from(t).ok())
        .ok_or_else(|| AnswerError::Unusable(format!("{what} is not a token id: {v}")))
}

/// A stop at a terminal token must end with one: the last token is in `terminal` (when it is
/// known).
pub(crate) fn check_terminal(tokens: &[TokenId], terminal: &[TokenId]) -> Result<(), AnswerError> {
    let Some(&last) = tokens.last() else {
        return Err(AnswerError::Unusable(
            "the server reports a stop at EOS but returned no token".into(),
        ));
    };
    if !terminal.is_empty() && !terminal.contains(&last) {
        return Err(AnswerError::Refused(format!(
            "the server stopped at token {last} as at EOS, but the terminal tokens learned at start-up are {terminal:?}; add it to the reference (eos=...) if it ends generations"
        )));
    }
    Ok(())
}

/// `/v1/models` (vLLM and SGLang): the served ids with their context length
/// (`ModelCard.max_model_len`).
pub fn parse_models(body: &Value) -> Result<Vec<(String, Option<u32>)>, AnswerError> {
    field(body, "data")?
        .as_array()
        .ok_or_else(|| AnswerError::Unusable("`data` is not an array".into()))?
        .iter()
        .map(|card| {
            let id = field(card, "id")?
                .as_str()
                .ok_or_else(|| AnswerError::Unusable("a model card's `id` is not a string".into()))?
                .to_string();
            let len = card
                .get("max_model_len")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            Ok((id, len))
        })
        .collect()
}

/// One user message holding `user_text`.
pub(crate) fn user_message(user_text: &str) -> Value {
    json!([{"role": "user", "content": user_text}])
}

/// The token ids of a `/tokenize` answer (llama.cpp and vLLM): `{"tokens": [ids], ...}`.
pub fn parse_tokens(body: &Value) -> Result<Vec<TokenId>, AnswerError> {
    field(body, "tokens")?
        .as_array()
        .ok_or_else(|| AnswerError::Unusable("`tokens` is not an array".into()))?
        .iter()
        .enumerate()
        .map(|(i, t)| token_id(t, &format!("tokens[{i}]")))
        .collect()
}

/// The token ids of a `/tokenize` answer, or a transient error naming `what`.
pub(crate) fn tokens_of(answer: &Value, what: &str) -> Result<Vec<TokenId>, BackendError> {
    parse_tokens(answer).map_err(|e| {
        BackendError::Transient(format!(
            "{what} answered without a token list ({e}): {}",
            snippet(&answer.to_string())
        ))
    })
}

/// An unusable answer as a [`BackendError`]: refusals are permanent, the rest transient.
pub(crate) fn answer_error(path: &str) -> impl Fn(AnswerError) -> BackendError + '_ {
    move |e| match e {
        AnswerError::Refused(m) => BackendError::Rejected(format!("{path}: {m}")),
        AnswerError::Unusable(m) => BackendError::Transient(format!("{path}: {m}")),
    }
}

/// The first 300 characters of an answer, for messages.
pub(crate) fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

/// The request the unit tests of the dialects build bodies for.
#[cfg(test)]
pub(crate) fn request(seed: u64) -> OwnedRequest {
    OwnedRequest {
        prefix: vec![1, 75, 72],
        prompt_len: 3,
        max_tokens: 8,
        temperature: 0.25,
        top_k: None,
        seed,
        candidates: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_lists_ids_and_context() {
        let body = json!({"object": "list", "data": [{"id": "Qwen/Qwen2.5-Math-7B", "object": "model",
            "created": 1, "owned_by": "vllm", "root": "Qwen/Qwen2.5-Math-7B", "parent": null,
            "max_model_len": 4096, "permission": []}]});
        assert_eq!(
            parse_models(&body).unwrap(),
            vec![("Qwen/Qwen2.5-Math-7B".to_string(), Some(4096))]
        );
        assert!(parse_models(&json!({"data": [{"object": "model"}]})).is_err());
    }
}
