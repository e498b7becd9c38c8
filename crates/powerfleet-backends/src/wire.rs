//! Request bodies and response parsing for llama.cpp's `llama-server`, vLLM and SGLang, at the
//! paths their callers know: each server's live in its file of `dialect/`.
//!
//! Every request pins every server-side setting that can change the sampled distribution q, so
//! that q is the "top-K at temperature τ" the recipe assumes, whatever the server's own defaults.
//! Answers are checked before use; [`AnswerError`] says whether a retry can help.

pub use crate::dialect::common::{
    AnswerError, RawGeneration, candidates_of, effective_k, parse_models, parse_tokens,
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
