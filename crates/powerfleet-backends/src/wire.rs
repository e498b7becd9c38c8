//! Request bodies and response parsing for llama.cpp's `llama-server`, vLLM and SGLang, at the
//! paths their callers know: each server's live in its file of `dialect/`.
//!
//! Every request pins every server-side setting that can change the sampled distribution q, so
//! that q is the "top-K at temperature τ" the recipe assumes, whatever the server's own defaults.
//! Answers are checked before use; [`AnswerError`] says whether a retry can help.

pub use crate::dialect::common::{
    AnswerError, RawGeneration, effective_k, parse_models, parse_tokens,
};
pub use crate::dialect::llamacpp::{
    LLAMACPP_SAMPLERS, LlamaCppProps, check_llamacpp_settings, llamacpp_apply_template_body,
    llamacpp_apply_template_messages_body, llamacpp_body, llamacpp_eog_body,
    llamacpp_post_sampling_body, llamacpp_seed, llamacpp_tokenize_body, parse_llamacpp,
    parse_llamacpp_eog, parse_llamacpp_post_sampling, parse_llamacpp_props,
    parse_llamacpp_template,
};
pub use crate::dialect::sglang::{
    SGLANG_PINNED_PARAMS, parse_sglang, sglang_body, sglang_detokenize_body, sglang_seed,
    sglang_tokenize_body,
};
pub use crate::dialect::vllm::{
    parse_vllm, vllm_body, vllm_logprob_limit, vllm_seed, vllm_tokenize_chat_body,
    vllm_tokenize_messages_body,
};
use crate::reference::ServerKind;

/// What the request bodies of `kind` pin on the server, recorded in a `ServerPin`: a change of
/// these bodies (a new sampler setting, another logprobs mode) changes the string, so a chain is
/// never resumed under a different q.
pub fn sampler_recipe(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::LlamaCpp => {
            "llama.cpp /completion v2: samplers [top_k, temperature]; dynatemp 0; top_p 1, min_p 0, typical_p 1, top_n_sigma -1, xtc 0, adaptive off, mirostat 0; penalties, dry off; logit_bias [], no grammar, no stop strings; raw top-K log-probabilities (post_sampling_probs false)"
        }
        ServerKind::Vllm => {
            "vLLM /v1/completions v2: top_k K, top_p 1, min_p 0, penalties neutral, min_tokens 0, no stop strings or bad words; raw top-K log-probabilities (raw_logprobs mode)"
        }
        ServerKind::Sglang => {
            "SGLang /generate v1: top_k K, top_p 1, min_p 0, penalties neutral, min_new_tokens 0, no stop strings; original top-K log-probabilities (SGLANG_RETURN_ORIGINAL_LOGPROB)"
        }
    }
}
