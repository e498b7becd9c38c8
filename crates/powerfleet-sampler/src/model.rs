//! What a chain asks of a language model, what it gets back, and the synchronous
//! [`LanguageModel`] trait for in-process models.

use serde::{Deserialize, Serialize};

/// A token id in the model's vocabulary.
pub type TokenId = u32;

/// "Generate at most `max_tokens` tokens after `prefix`, sampling from the proposal."
///
/// Borrowed from the chain, so issuing a request copies nothing; [`Request::to_owned`] makes an
/// [`OwnedRequest`] for drivers that send it elsewhere.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request<'a> {
    /// Prompt token ids followed by the completion up to the cut point.
    pub prefix: &'a [TokenId],
    /// How many leading tokens of `prefix` are the prompt.
    pub prompt_len: usize,
    /// Upper bound on the number of tokens to generate (>= 1). Generation stops earlier only at EOS.
    pub max_tokens: u32,
    /// The proposal's temperature (> 0).
    pub temperature: f64,
    /// The proposal's top-k restriction, if any.
    pub top_k: Option<u32>,
    /// Seed for the model's sampler, drawn from the chain's RNG: a replayed request samples the
    /// same tokens from a deterministic model.
    pub seed: u64,
    /// 0: none. K > 0: the answer's [`Generation::candidates`] lists the K likeliest next tokens
    /// after `prefix` by log p at temperature 1 over the full vocabulary (power-lookahead).
    pub candidates: u32,
}

/// A `$request` ([`Request`] or [`OwnedRequest`]) with the fields of `$from`, the other one, and
/// `prefix`, the one field whose type differs between them.
macro_rules! with_prefix {
    ($request:ident, $from:expr, $prefix:expr) => {
        $request {
            prefix: $prefix,
            prompt_len: $from.prompt_len,
            max_tokens: $from.max_tokens,
            temperature: $from.temperature,
            top_k: $from.top_k,
            seed: $from.seed,
            candidates: $from.candidates,
        }
    };
}

impl Request<'_> {
    /// An owned copy, for drivers that move the request across threads or the network.
    pub fn to_owned(&self) -> OwnedRequest {
        with_prefix!(OwnedRequest, self, self.prefix.to_vec())
    }
}

/// An owned [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnedRequest {
    /// Prompt token ids followed by the completion up to the cut point.
    pub prefix: Vec<TokenId>,
    /// How many leading tokens of `prefix` are the prompt.
    pub prompt_len: usize,
    /// Upper bound on the number of tokens to generate.
    pub max_tokens: u32,
    /// The proposal's temperature.
    pub temperature: f64,
    /// The proposal's top-k restriction, if any.
    pub top_k: Option<u32>,
    /// Seed for the model's sampler.
    pub seed: u64,
    /// How many of the likeliest next tokens the answer lists (0: none); see
    /// [`Request::candidates`].
    #[serde(default)]
    pub candidates: u32,
}

impl OwnedRequest {
    /// Borrows it back as a [`Request`].
    pub fn as_request(&self) -> Request<'_> {
        with_prefix!(Request, self, &self.prefix)
    }
}

/// A model's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated token ids, EOS included when it ended the generation.
    pub tokens: Vec<TokenId>,
    /// Per token, log p under the base model at temperature 1 over the full vocabulary.
    pub log_p: Vec<f64>,
    /// Per token, log q under the distribution actually sampled from (the proposal).
    pub log_q: Vec<f64>,
    /// Whether the last token is EOS.
    pub eos: bool,
    /// When the request asked for K > 0 candidates: the K likeliest next tokens after the
    /// request's prefix with their log p at temperature 1 over the full vocabulary, descending by
    /// log p, ties by ascending token id. Fewer than K only when fewer tokens have p > 0 (a toy
    /// model's zeros). Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<(TokenId, f64)>,
}

/// An in-process language model that drives a chain synchronously.
///
/// `generate` must sample from the proposal that the request describes, and report exact log p and
/// log q for every sampled token, EOS included.
pub trait LanguageModel {
    /// Why a generation failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Samples up to `request.max_tokens` tokens after `request.prefix`, stopping at EOS.
    fn generate(&self, request: &Request<'_>) -> Result<Generation, Self::Error>;

    /// The tokens that end a completion (EOS). [`run`](crate::run) gives them to power-lookahead
    /// chains, which must know whether a candidate token ends the completion. None by default.
    fn terminal_tokens(&self) -> Vec<TokenId> {
        Vec::new()
    }
}

impl<M: LanguageModel + ?Sized> LanguageModel for &M {
    type Error = M::Error;

    fn generate(&self, request: &Request<'_>) -> Result<Generation, Self::Error> {
        (**self).generate(request)
    }

    fn terminal_tokens(&self) -> Vec<TokenId> {
        (**self).terminal_tokens()
    }
}
