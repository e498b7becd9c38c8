//! Request bodies and response parsing for llama.cpp's `llama-server`, vLLM and SGLang.
//!
//! Every request pins every server-side setting that can change the sampled distribution q, so
//! that q is the "top-K at temperature τ" the recipe assumes, whatever the server's own defaults.
//! Answers are checked before use; [`AnswerError`] says whether a retry can help.

use powerfleet_sampler::{OwnedRequest, TokenId};
use serde_json::{Value, json};

pub use crate::dialect::common::{
    AnswerError, RawGeneration, effective_k, parse_models, parse_tokens,
};
use crate::dialect::common::{check_terminal, field, token_id, user_message};
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

// ---------------------------------------------------------------------------------- seeds

/// llama.cpp's seed for a chain's 64-bit seed. llama-server's seed is a `uint32_t` and
/// 0xFFFFFFFF is `LLAMA_DEFAULT_SEED`, "a random seed" (`common/common.h`), which would make a
/// replayed request sample other tokens. The two halves are folded together and 0xFFFFFFFF
/// becomes 0xFFFFFFFE.
pub fn llamacpp_seed(seed: u64) -> u32 {
    let folded = (seed ^ (seed >> 32)) as u32;
    if folded == u32::MAX {
        u32::MAX - 1
    } else {
        folded
    }
}

/// vLLM's seed for a chain's 64-bit seed: `CompletionRequest.seed` must lie in
/// [-2^63, 2^63 - 1] (`_INT64_MIN`/`_INT64_MAX` in
/// `vllm/entrypoints/openai/completion/protocol.py` of vLLM 0.33; `_LONG_INFO` in
/// `vllm/entrypoints/openai/protocol.py` of earlier versions), so the top bit is dropped.
pub fn vllm_seed(seed: u64) -> u64 {
    seed & (i64::MAX as u64)
}

/// SGLang's `sampling_seed` for a chain's 64-bit seed. SGLang builds a tensor of the seeds,
/// `torch.int64` in recent versions and `torch.int32` in older ones
/// (`python/sglang/srt/sampling/sampling_batch_info.py`), so the seed is folded into 31 bits,
/// which both hold. SGLang honours the seed only when started with
/// `--enable-deterministic-inference`; otherwise a replayed request samples other tokens (from
/// the same q).
pub fn sglang_seed(seed: u64) -> u64 {
    (seed ^ (seed >> 31) ^ (seed >> 62)) & 0x7FFF_FFFF
}

// ------------------------------------------------------------------------------ llama.cpp

/// The sampler chain every llama.cpp request sends: top-k, then temperature, then the final
/// draw (`common_sampler_init` in `common/sampling.cpp` appends `dist`).
pub const LLAMACPP_SAMPLERS: [&str; 2] = ["top_k", "temperature"];

/// llama.cpp `/completion` body: token-array prompt, raw (pre-sampling) log-probabilities of the
/// top K, and every request field of `tools/server/server-schema.cpp` (llama.cpp as vendored in
/// llama-cpp-python 0.3.36) that can change the sampled distribution, set explicitly so that
/// the server's command-line defaults (`--top-p`, `--min-p`, `--dynatemp-range`,
/// `--logit-bias`, `--samplers`, `--cache-reuse`, ...) cannot apply:
///
/// - sampler chain `[top_k, temperature]` with `dynatemp_range` 0 (else the temperature sampler
///   becomes dynamic temperature); every other sampler's parameter neutral as well, in case a
///   server ignores `samplers`;
/// - `logit_bias` [] (clears the server's `--logit-bias`), `ignore_eos` false, `grammar` "",
///   `stop` [] (an empty list falls back to the server's `--reverse-prompt`, which the echoed
///   settings then show), `reasoning_budget_tokens` -1, `backend_sampling` false;
/// - `n_cache_reuse` 0 (KV shifting changes positions and so the logits), `n_keep` 0,
///   `n_indent` 0 and `t_max_predict_ms` 0 (both can end a generation early), `n_cmpl` 1.
///
/// The answer echoes the settings the server used (`generation_settings`);
/// [`check_llamacpp_settings`] compares them with these.
pub fn llamacpp_body(request: &OwnedRequest, k: u32) -> Value {
    let mut body = json!({
        "prompt": request.prefix,
        "n_predict": request.max_tokens,
        "n_probs": k,
        "post_sampling_probs": false,
        "return_tokens": true,
        "cache_prompt": true,
        "stream": false,
        "samplers": LLAMACPP_SAMPLERS,
        "top_k": k,
        "temperature": request.temperature,
        "dynatemp_range": 0.0,
        "dynatemp_exponent": 1.0,
        "top_p": 1.0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "top_n_sigma": -1.0,
        "xtc_probability": 0.0,
        "xtc_threshold": 0.1,
        "seed": llamacpp_seed(request.seed),
    });
    let neutral = json!({
        "repeat_penalty": 1.0,
        "repeat_last_n": 0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "dry_base": 1.75,
        "dry_allowed_length": 2,
        "dry_penalty_last_n": 0,
        "mirostat": 0,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
        "adaptive_target": -1.0,
        "adaptive_decay": 0.9,
        "min_keep": 0,
        "logit_bias": [],
        "ignore_eos": false,
        "grammar": "",
        "grammar_lazy": false,
        "stop": [],
    });
    let limits = json!({
        "reasoning_budget_tokens": -1,
        "reasoning_control": false,
        "backend_sampling": false,
        "n_cache_reuse": 0,
        "n_keep": 0,
        "n_discard": 0,
        "n_indent": 0,
        "t_max_predict_ms": 0,
        "n_cmpl": 1,
    });
    let map = body.as_object_mut().expect("an object");
    for part in [neutral, limits] {
        if let Value::Object(fields) = part {
            map.extend(fields);
        }
    }
    body
}

/// Numeric settings whose echo must equal what was sent, when the server echoes them. The
/// first four must be echoed.
const LLAMACPP_ECHOED_NUMBERS: [&str; 28] = [
    "temperature",
    "top_k",
    "n_probs",
    "seed",
    "n_predict",
    "dynatemp_range",
    "dynatemp_exponent",
    "top_p",
    "min_p",
    "typical_p",
    "top_n_sigma",
    "xtc_probability",
    "xtc_threshold",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "adaptive_target",
    "adaptive_decay",
    "min_keep",
    "n_keep",
];

/// Whether `echoed` is what was `sent`: integers exactly, floats up to the server's `float`
/// (llama.cpp keeps sampler settings in 32-bit floats and echoes them widened).
fn same_number(sent: &Value, echoed: &Value) -> bool {
    if let (Some(a), Some(b)) = (sent.as_i64(), echoed.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (sent.as_u64(), echoed.as_u64()) {
        return a == b;
    }
    match (sent.as_f64(), echoed.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
        _ => false,
    }
}

/// Compares the settings a llama-server echoes in `generation_settings` with the request body
/// `sent` ([`llamacpp_body`]). Any difference means the server sampled from another q, and is
/// [`AnswerError::Refused`] naming the setting: it clamped or ignored a value, or a
/// command-line setting (`--reverse-prompt`, `--grammar`, a draft model for speculative
/// decoding) applies that a request cannot clear.
pub fn check_llamacpp_settings(sent: &Value, answer: &Value) -> Result<(), AnswerError> {
    let Some(echo) = answer.get("generation_settings").filter(|g| g.is_object()) else {
        return Err(AnswerError::Refused(
            "the llama-server answer has no `generation_settings`, so the sampler settings it used cannot be confirmed; use a llama-server that echoes them (any release since 2024)".into(),
        ));
    };
    let mismatch = |name: &str, asked: &Value, used: &Value, why: &str| {
        AnswerError::Refused(format!(
            "llama-server sampled with {name} = {used} where {asked} was asked{why}; its q is not the top-K proposal, so the answer is refused"
        ))
    };
    for (i, name) in LLAMACPP_ECHOED_NUMBERS.iter().enumerate() {
        let asked = &sent[*name];
        match echo.get(*name) {
            Some(used) if !same_number(asked, used) => {
                return Err(mismatch(name, asked, used, ""));
            }
            None if i < 4 => {
                return Err(AnswerError::Refused(format!(
                    "the llama-server answer's generation_settings lack `{name}`, so the sampler settings cannot be confirmed"
                )));
            }
            _ => {}
        }
    }
    match echo.get("samplers") {
        Some(used) if used == &sent["samplers"] => {}
        Some(used) => {
            return Err(mismatch(
                "samplers",
                &sent["samplers"],
                used,
                " (an unknown sampler name is dropped silently)",
            ));
        }
        None => {
            return Err(AnswerError::Refused(
                "the llama-server answer's generation_settings lack `samplers`, so the sampler chain cannot be confirmed".into(),
            ));
        }
    }
    for name in [
        "post_sampling_probs",
        "ignore_eos",
        "backend_sampling",
        "grammar_lazy",
    ] {
        if let Some(used) = echo.get(name)
            && used != &sent[name]
        {
            return Err(mismatch(name, &sent[name], used, ""));
        }
    }
    let empty = |v: &Value| {
        v.is_null()
            || v.as_str().is_some_and(str::is_empty)
            || v.as_array().is_some_and(Vec::is_empty)
    };
    for (name, why) in [
        (
            "stop",
            " (the server's --reverse-prompt applies when a request sends no stop strings; start it without -r)",
        ),
        (
            "logit_bias",
            " (a request's empty logit_bias clears the server's --logit-bias, so this one comes from elsewhere)",
        ),
        (
            "grammar",
            " (the server's --grammar, --grammar-file or --json-schema applies; start it without them)",
        ),
    ] {
        if let Some(used) = echo.get(name)
            && !empty(used)
        {
            return Err(mismatch(name, &sent[name], used, why));
        }
    }
    if let Some(used) = echo.get("speculative.types")
        && !(empty(used) || used.as_str() == Some("none"))
    {
        return Err(AnswerError::Refused(format!(
            "llama-server runs speculative decoding ({used}); exact sampling needs it off: start the server without a draft model (-md) or --spec-* options"
        )));
    }
    Ok(())
}

/// Parses a llama.cpp `/completion` response. `terminal` holds the model's end-of-generation
/// token ids (empty when unknown). llama-server stops at every end-of-generation token
/// (`llama_vocab_is_eog`, `stop_type: "eos"`) and keeps it, with its probabilities, as the
/// last entry.
pub fn parse_llamacpp(body: &Value, terminal: &[TokenId]) -> Result<RawGeneration, AnswerError> {
    if body.get("truncated").and_then(Value::as_bool) == Some(true) {
        return Err(AnswerError::Refused(
            "llama-server's context filled up during the generation (`truncated`): the prompt and the token budget do not fit the slot's context (n_ctx = -c / -np); start the server with a larger -c, fewer slots (-np), or use a smaller max_new_tokens".into(),
        ));
    }
    let probs = field(body, "completion_probabilities")?
        .as_array()
        .ok_or_else(|| {
            AnswerError::Unusable("`completion_probabilities` is not an array".into())
        })?;
    let mut tokens = Vec::with_capacity(probs.len());
    let mut top = Vec::with_capacity(probs.len());
    for (i, entry) in probs.iter().enumerate() {
        tokens.push(token_id(
            field(entry, "id")?,
            &format!("completion_probabilities[{i}].id"),
        )?);
        let list = entry
            .get("top_logprobs")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                AnswerError::Unusable(format!("completion_probabilities[{i}] has no `top_logprobs`; the server must return raw log-probabilities (post_sampling_probs false, n_probs > 0)"))
            })?;
        let mut pos = Vec::with_capacity(list.len());
        for (j, cand) in list.iter().enumerate() {
            let id = token_id(field(cand, "id")?, &format!("top_logprobs[{j}].id"))?;
            let lp = field(cand, "logprob")?.as_f64().ok_or_else(|| {
                AnswerError::Unusable(format!(
                    "completion_probabilities[{i}].top_logprobs[{j}].logprob is not a number"
                ))
            })?;
            pos.push((id, lp));
        }
        top.push(pos);
    }
    if let Some(returned) = body.get("tokens").and_then(Value::as_array)
        && !returned.is_empty()
    {
        let returned: Vec<TokenId> = returned
            .iter()
            .enumerate()
            .map(|(i, t)| token_id(t, &format!("tokens[{i}]")))
            .collect::<Result<_, _>>()?;
        if returned != tokens {
            return Err(AnswerError::Unusable(format!(
                "`tokens` ({} ids) disagree with `completion_probabilities` ({} entries); llama-server leaves out the probabilities of a token that ends inside a UTF-8 character, which byte-level tokens of non-ASCII text can do",
                returned.len(),
                tokens.len()
            )));
        }
    }
    let eos = match body.get("stop_type").and_then(Value::as_str) {
        Some("eos") => true,
        Some("limit") => false,
        Some("word") => {
            return Err(AnswerError::Refused(format!(
                "llama-server stopped at the stop string {:?}, which the request did not ask for (the server's --reverse-prompt?); start it without -r",
                body.get("stopping_word")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )));
        }
        // Servers before the `stop_type` field.
        None if body.get("stopped_eos").and_then(Value::as_bool) == Some(true) => true,
        None => false,
        Some(other) => {
            return Err(AnswerError::Unusable(format!(
                "unexpected stop_type {other:?}"
            )));
        }
    };
    if eos {
        check_terminal(&tokens, terminal)?;
    }
    Ok(RawGeneration { tokens, top, eos })
}

/// Server facts from llama.cpp's `GET /props` (`get_res_props` in
/// `tools/server/server-context.cpp`).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaCppProps {
    /// `model_alias`: the `--alias`, else the model's name, else its file name.
    pub model: String,
    /// `default_generation_settings.n_ctx`: the context of one slot (`-c` divided by `-np`).
    pub n_ctx: Option<u32>,
    /// `eos_token`: the EOS token's text, special-token text included (empty when the model
    /// has none).
    pub eos_text: String,
}

/// Parses llama.cpp's `GET /props`.
pub fn parse_llamacpp_props(body: &Value) -> Result<LlamaCppProps, AnswerError> {
    let model = body
        .get("model_alias")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| body.get("model_path").and_then(Value::as_str))
        .ok_or_else(|| {
            AnswerError::Unusable("/props has neither `model_alias` nor `model_path`".into())
        })?
        .to_string();
    let n_ctx = body
        .pointer("/default_generation_settings/n_ctx")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    let eos_text = body
        .get("eos_token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(LlamaCppProps {
        model,
        n_ctx,
        eos_text,
    })
}

/// A one-token request that makes llama-server list the model's end-of-generation tokens: with
/// `ignore_eos` the server adds a −∞ bias for every token `llama_vocab_is_eog` accepts (EOS,
/// EOT, EOM, `<|im_end|>`, ...; `common_init_from_params` in `common/common.cpp` and the
/// `ignore_eos` field of `server-schema.cpp`), and the echoed `generation_settings.logit_bias`
/// shows them. See [`parse_llamacpp_eog`].
pub fn llamacpp_eog_body(prefix: &[TokenId]) -> Value {
    let request = OwnedRequest {
        prefix: prefix.to_vec(),
        prompt_len: prefix.len(),
        max_tokens: 1,
        temperature: 1.0,
        top_k: Some(1),
        seed: 0,
    };
    let mut body = llamacpp_body(&request, 1);
    body["ignore_eos"] = json!(true);
    body["n_probs"] = json!(0);
    body
}

/// The end-of-generation token ids in the answer to [`llamacpp_eog_body`], sorted; `None` when
/// the server does not echo its logit biases.
pub fn parse_llamacpp_eog(answer: &Value) -> Result<Option<Vec<TokenId>>, AnswerError> {
    let Some(biases) = answer.pointer("/generation_settings/logit_bias") else {
        return Ok(None);
    };
    let biases = biases.as_array().ok_or_else(|| {
        AnswerError::Unusable("generation_settings.logit_bias is not an array".into())
    })?;
    let mut ids = Vec::with_capacity(biases.len());
    for (i, b) in biases.iter().enumerate() {
        // `{"bias": -inf, "token": id}`; JSON has no -inf, so the bias comes as null.
        let bias = b.get("bias").and_then(Value::as_f64);
        if bias.is_none_or(|b| b == f64::NEG_INFINITY || b < -1e30) {
            ids.push(token_id(
                field(b, "token")?,
                &format!("generation_settings.logit_bias[{i}].token"),
            )?);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(Some(ids))
}

/// [`llamacpp_body`] asking for the probabilities after the sampler chain
/// (`post_sampling_probs: true`): `top_probs` then holds q itself, for the start-up check that
/// the server's q is the recipe's.
pub fn llamacpp_post_sampling_body(request: &OwnedRequest, k: u32) -> Value {
    let mut body = llamacpp_body(request, k);
    body["post_sampling_probs"] = json!(true);
    body
}

/// (token, q) at the first position of an answer to [`llamacpp_post_sampling_body`].
pub fn parse_llamacpp_post_sampling(answer: &Value) -> Result<Vec<(TokenId, f64)>, AnswerError> {
    let first = answer
        .pointer("/completion_probabilities/0")
        .ok_or_else(|| {
            AnswerError::Unusable("the answer has no completion_probabilities".into())
        })?;
    let list = first
        .get("top_probs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            AnswerError::Unusable(
                "completion_probabilities[0] has no `top_probs` (post_sampling_probs)".into(),
            )
        })?;
    list.iter()
        .enumerate()
        .map(|(j, c)| {
            let id = token_id(field(c, "id")?, &format!("top_probs[{j}].id"))?;
            let p = field(c, "prob")?.as_f64().ok_or_else(|| {
                AnswerError::Unusable(format!("top_probs[{j}].prob is not a number"))
            })?;
            Ok((id, p))
        })
        .collect()
}

// ----------------------------------------------------------------------------------- vLLM

/// vLLM `/v1/completions` body: token-id prompt, top-k and temperature, raw log-probabilities of
/// the top K (vLLM's default `raw_logprobs` mode), token ids instead of token strings. Every
/// `SamplingParams` field that can change q is set to its neutral value (`vllm/sampling_params.py`):
/// top_p 1, min_p 0, the three penalties, `min_tokens` 0 (which would mask EOS), no stop strings,
/// stop token ids or bad words, `ignore_eos` false. The seed is [`vllm_seed`].
pub fn vllm_body(request: &OwnedRequest, k: u32, model: &str) -> Value {
    json!({
        "model": model,
        "prompt": request.prefix,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_k": k,
        "top_p": 1.0,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "min_tokens": 0,
        "stop": [],
        "stop_token_ids": [],
        "bad_words": [],
        "logprobs": k,
        "seed": vllm_seed(request.seed),
        "n": 1,
        "return_tokens_as_token_ids": true,
        "skip_special_tokens": false,
        "ignore_eos": false,
        "stream": false,
    })
}

/// A vLLM token name, `token_id:N`, as its id; any other name is a malformed answer.
fn vllm_token(s: &str) -> Result<TokenId, AnswerError> {
    s.strip_prefix("token_id:")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            AnswerError::Unusable(format!(
                "token {s:?} is not of the form token_id:N (request return_tokens_as_token_ids)"
            ))
        })
}

/// Parses a vLLM `/v1/completions` response. `terminal` holds the model's terminal token ids
/// (empty when unknown).
///
/// How vLLM ends a completion (`check_stop` in `vllm/v1/core/sched/utils.py`):
/// - `finish_reason: "length"`: the token budget (or the context) ran out;
/// - `finish_reason: "stop"`, `stop_reason: null`: the model's EOS;
/// - `finish_reason: "stop"`, `stop_reason: ID`: a stop token id. This client sends none, so it
///   is one of the extra EOS ids of the model's `generation_config.json`, which vLLM adds to
///   `stop_token_ids` (`SamplingParams.update_from_generation_config`). It ends the completion
///   as EOS does. The detokenizer leaves the stop token out of the text but keeps it in the
///   token ids (`BaseIncrementalDetokenizer.update` in `vllm/v1/engine/detokenizer.py`), so it
///   is the last token, with its log-probabilities;
/// - a string `stop_reason` (a stop string, `"repetition_detected"`) is refused: the
///   completion did not end at a token the model chose to end with.
///
/// A stop must end with a terminal token: with a known terminal set, the last token must be in
/// it. Top-K entries of −9999.0 are vLLM's −∞ (see `recipe`).
pub fn parse_vllm(body: &Value, terminal: &[TokenId]) -> Result<RawGeneration, AnswerError> {
    let choice = field(body, "choices")?
        .as_array()
        .and_then(|c| c.first())
        .ok_or_else(|| AnswerError::Unusable("`choices` is empty".into()))?;
    let logprobs = choice
        .get("logprobs")
        .filter(|l| !l.is_null())
        .ok_or_else(|| {
            AnswerError::Unusable("the choice has no `logprobs`; request logprobs = K".into())
        })?;
    let names = field(logprobs, "tokens")?
        .as_array()
        .ok_or_else(|| AnswerError::Unusable("`logprobs.tokens` is not an array".into()))?;
    let tops = field(logprobs, "top_logprobs")?
        .as_array()
        .ok_or_else(|| AnswerError::Unusable("`logprobs.top_logprobs` is not an array".into()))?;
    let tokens: Vec<TokenId> = names
        .iter()
        .map(|n| {
            n.as_str()
                .ok_or_else(|| AnswerError::Unusable("a token is not a string".into()))
                .and_then(vllm_token)
        })
        .collect::<Result<_, _>>()?;
    let mut top = Vec::with_capacity(tops.len());
    for (i, t) in tops.iter().enumerate() {
        let map = t.as_object().ok_or_else(|| {
            AnswerError::Unusable(format!(
                "top_logprobs[{i}] is not an object (is it null? request logprobs = K)"
            ))
        })?;
        let mut pos = Vec::with_capacity(map.len());
        for (name, lp) in map {
            let lp = lp.as_f64().ok_or_else(|| {
                AnswerError::Unusable(format!("top_logprobs[{i}][{name}] is not a number"))
            })?;
            pos.push((vllm_token(name)?, lp));
        }
        top.push(pos);
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let stop_reason = choice.get("stop_reason").filter(|v| !v.is_null());
    let eos = match (finish, stop_reason) {
        (Some("length"), _) => false,
        (Some("stop"), None) => true,
        (Some("stop"), Some(reason)) => match reason.as_u64() {
            Some(id) => {
                if tokens.last().map(|&t| u64::from(t)) != Some(id) {
                    return Err(AnswerError::Unusable(format!(
                        "the server stopped at token {id} but the last token is {:?}",
                        tokens.last()
                    )));
                }
                true
            }
            None => {
                return Err(AnswerError::Refused(format!(
                    "the server stopped on {reason}, not on a terminal token; exactness needs no stop strings (check the server's generation config and --override-generation-config)"
                )));
            }
        },
        (other, _) => {
            return Err(AnswerError::Unusable(format!(
                "unexpected finish_reason {other:?}"
            )));
        }
    };
    if eos {
        check_terminal(&tokens, terminal)?;
    }
    Ok(RawGeneration { tokens, top, eos })
}

/// When a vLLM error says the requested `logprobs` exceed its `--max-logprobs` ("Requested
/// sample logprobs of 64, which is greater than max allowed: 20", `_validate_logprobs` in
/// `vllm/sampling_params.py`), the message that tells the operator what to do.
pub fn vllm_logprob_limit(error: &str, k: u32) -> Option<String> {
    let lower = error.to_ascii_lowercase();
    if !(lower.contains("logprobs")
        && (lower.contains("max allowed") || lower.contains("max_logprobs")))
    {
        return None;
    }
    let limit = lower.split("max allowed:").nth(1).and_then(|rest| {
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse::<u32>().ok())
    });
    let (limit_text, use_k) = match limit {
        Some(l) => (format!(" ({l})"), l.to_string()),
        None => (String::new(), "20".to_string()),
    };
    Some(format!(
        "K={k} exceeds the server's --max-logprobs{limit_text}; start vLLM with --max-logprobs {k} or use ?k={use_k} (the server said: {error})"
    ))
}

// --------------------------------------------------------------------------------- SGLang

/// SGLang native `/generate` body (`GenerateReqInput` in
/// `python/sglang/srt/managers/io_struct.py`): token-id prompt (`input_ids`), every
/// `SamplingParams` field that can change q explicit (`python/sglang/srt/sampling/sampling_params.py`):
/// top_k K, top_p 1, min_p 0, the three penalties neutral, `min_new_tokens` 0, no stop strings
/// or stop token ids, `ignore_eos` false; `no_stop_trim` true so a terminal token stays in the
/// output; the seed as `sampling_seed` ([`sglang_seed`]). `return_logprob` with
/// `top_logprobs_num` K and `logprob_start_len` -1 returns the top-K log-probabilities of the
/// output tokens only. They are raw (temperature 1, before top-k) only when the server runs
/// with `SGLANG_RETURN_ORIGINAL_LOGPROB=1`; the start-up probe checks.
pub fn sglang_body(request: &OwnedRequest, k: u32) -> Value {
    json!({
        "input_ids": request.prefix,
        "sampling_params": {
            "max_new_tokens": request.max_tokens,
            "min_new_tokens": 0,
            "temperature": request.temperature,
            "top_k": k,
            "top_p": 1.0,
            "min_p": 0.0,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "repetition_penalty": 1.0,
            "stop": [],
            "stop_token_ids": [],
            "ignore_eos": false,
            "no_stop_trim": true,
            "skip_special_tokens": false,
            "n": 1,
            "sampling_seed": sglang_seed(request.seed),
        },
        "return_logprob": true,
        "top_logprobs_num": k,
        "logprob_start_len": -1,
        "return_text_in_logprobs": false,
        "stream": false,
    })
}

/// The sampling parameters [`sglang_body`] sets: a server's `--preferred-sampling-params`
/// may only name these, which every request overrides.
pub const SGLANG_PINNED_PARAMS: [&str; 16] = [
    "max_new_tokens",
    "min_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "no_stop_trim",
    "skip_special_tokens",
    "n",
    "sampling_seed",
];

/// One `[logprob, token_id, text]` triple of SGLang's logprob lists.
fn sglang_entry(v: &Value, what: &str) -> Result<(TokenId, f64), AnswerError> {
    let triple = v.as_array().filter(|t| t.len() >= 2).ok_or_else(|| {
        AnswerError::Unusable(format!(
            "{what} is not a [logprob, token_id, text] triple: {v}"
        ))
    })?;
    let id = token_id(&triple[1], &format!("{what}[1]"))?;
    let lp = triple[0].as_f64().ok_or_else(|| {
        AnswerError::Unusable(format!("{what}[0] is not a number: {}", triple[0]))
    })?;
    Ok((id, lp))
}

/// Parses an SGLang `/generate` answer: `{"text", "output_ids", "meta_info": {...}}`
/// (`_handle_batch_output` in `python/sglang/srt/managers/tokenizer_manager.py`).
///
/// - `meta_info.output_token_logprobs`: per generated token `[logprob, token_id, null]`
///   (`detokenize_logprob_tokens`, text null without `return_text_in_logprobs`);
/// - `meta_info.output_top_logprobs`: per generated token the top `top_logprobs_num` as such
///   triples (`detokenize_top_logprobs_tokens`);
/// - `meta_info.finish_reason` (`python/sglang/srt/managers/schedule_batch.py`):
///   `{"type": "length", "length": N}` (`FINISH_LENGTH`), `{"type": "stop", "matched": ID}`
///   (`FINISH_MATCHED_TOKEN`: one of the model's EOS ids, or a stop token id), `{"type":
///   "stop", "matched": "text"}` (`FINISH_MATCHED_STR`, refused), `{"type": "abort", ...}`.
///
/// With `no_stop_trim` the matched token stays the last of `output_ids`
/// (`trim_matched_stop` in `detokenizer_manager.py`), and logprob lists are never trimmed.
pub fn parse_sglang(body: &Value, terminal: &[TokenId]) -> Result<RawGeneration, AnswerError> {
    let meta = field(body, "meta_info")?;
    let sampled = meta
        .get("output_token_logprobs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            AnswerError::Unusable(
                "meta_info has no `output_token_logprobs`; request return_logprob".into(),
            )
        })?;
    let tops = meta
        .get("output_top_logprobs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            AnswerError::Unusable(
                "meta_info has no `output_top_logprobs`; request top_logprobs_num = K".into(),
            )
        })?;
    let mut tokens = Vec::with_capacity(sampled.len());
    for (i, e) in sampled.iter().enumerate() {
        tokens.push(sglang_entry(e, &format!("output_token_logprobs[{i}]"))?.0);
    }
    let mut top = Vec::with_capacity(tops.len());
    for (i, position) in tops.iter().enumerate() {
        let list = position.as_array().ok_or_else(|| {
            AnswerError::Unusable(format!(
                "output_top_logprobs[{i}] is not a list (request top_logprobs_num = K)"
            ))
        })?;
        top.push(
            list.iter()
                .enumerate()
                .map(|(j, e)| sglang_entry(e, &format!("output_top_logprobs[{i}][{j}]")))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    if let Some(ids) = body.get("output_ids").and_then(Value::as_array) {
        let ids: Vec<TokenId> = ids
            .iter()
            .enumerate()
            .map(|(i, t)| token_id(t, &format!("output_ids[{i}]")))
            .collect::<Result<_, _>>()?;
        if ids != tokens {
            return Err(AnswerError::Unusable(format!(
                "`output_ids` ({} ids) disagree with `output_token_logprobs` ({} entries)",
                ids.len(),
                tokens.len()
            )));
        }
    }
    let finish = field(meta, "finish_reason")?;
    let kind = finish.get("type").and_then(Value::as_str);
    let eos = match kind {
        Some("length") => false,
        Some("stop") => match finish.get("matched") {
            Some(m) if m.is_u64() => {
                let id = m.as_u64().unwrap_or_default();
                if tokens.last().map(|&t| u64::from(t)) != Some(id) {
                    return Err(AnswerError::Unusable(format!(
                        "the server stopped at token {id} but the last token is {:?} (is no_stop_trim set?)",
                        tokens.last()
                    )));
                }
                true
            }
            Some(m) if m.is_string() => {
                return Err(AnswerError::Refused(format!(
                    "the server stopped at the stop string {m}, which the request did not ask for; exactness needs no stop strings"
                )));
            }
            other => {
                return Err(AnswerError::Unusable(format!(
                    "a stop with an unexpected `matched` {other:?}"
                )));
            }
        },
        Some("abort") => {
            return Err(AnswerError::Unusable(format!(
                "the server aborted the request: {}",
                finish.get("message").unwrap_or(&Value::Null)
            )));
        }
        _ => {
            return Err(AnswerError::Unusable(format!(
                "unexpected finish_reason {finish}"
            )));
        }
    };
    if eos {
        check_terminal(&tokens, terminal)?;
    }
    Ok(RawGeneration { tokens, top, eos })
}

/// SGLang `/tokenize` body (`TokenizeRequest` in
/// `python/sglang/srt/entrypoints/openai/protocol.py`); the answer is `{"tokens": [...],
/// "count": N, "max_model_len": N}` (`serving_tokenize.py`).
pub fn sglang_tokenize_body(model: Option<&str>, text: &str) -> Value {
    let mut body = json!({"prompt": text, "add_special_tokens": true});
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    body
}

/// SGLang `/detokenize` body; the answer is `{"text": ...}` (`serving_tokenize.py`). Special
/// tokens are rendered, as llama.cpp renders them.
pub fn sglang_detokenize_body(model: Option<&str>, tokens: &[TokenId]) -> Value {
    let mut body = json!({"tokens": tokens, "skip_special_tokens": false});
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    body
}

/// llama.cpp `/tokenize` body. `add_special` adds BOS when the model's vocabulary asks for it,
/// as the server's own `/completion` (string prompts) and `/v1/chat/completions` do;
/// `parse_special` (on by default) turns special-token text such as `<s>` or `<|im_start|>`
/// into those tokens.
pub fn llamacpp_tokenize_body(text: &str) -> Value {
    json!({"content": text, "add_special": true})
}

/// llama.cpp `/apply-template` body: `user_text` as one user message, with the generation
/// prompt (the assistant turn's opening) appended. The answer is `{"prompt": TEXT}`, the text
/// `/v1/chat/completions` would tokenize (see docs/llama-server.md).
pub fn llamacpp_apply_template_body(user_text: &str) -> Value {
    llamacpp_apply_template_messages_body(user_message(user_text))
}

/// llama.cpp `/apply-template` body for a whole conversation (`[{"role", "content"}, ...]`).
pub fn llamacpp_apply_template_messages_body(messages: Value) -> Value {
    json!({"messages": messages, "add_generation_prompt": true})
}

/// The templated text of a llama.cpp `/apply-template` answer.
pub fn parse_llamacpp_template(body: &Value) -> Result<String, AnswerError> {
    field(body, "prompt")?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| AnswerError::Unusable("`prompt` is not a string".into()))
}

/// vLLM chat `/tokenize` body: `user_text` as one user message through the model's chat
/// template, generation prompt appended. `add_special_tokens` is false, as in vLLM's own chat
/// completions: the template writes the special tokens (BOS included) itself.
pub fn vllm_tokenize_chat_body(model: &str, user_text: &str) -> Value {
    vllm_tokenize_messages_body(model, user_message(user_text))
}

/// vLLM chat `/tokenize` body for a whole conversation (`[{"role", "content"}, ...]`).
pub fn vllm_tokenize_messages_body(model: &str, messages: Value) -> Value {
    json!({
        "model": model,
        "messages": messages,
        "add_generation_prompt": true,
        "continue_final_message": false,
        "add_special_tokens": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::common::request;

    /// vLLM's `/tokenize` answer for a chat request (`TokenizeResponse`: `count`,
    /// `max_model_len`, `tokens`, and `token_strs` when `return_token_strs` was asked for), here
    /// for a ChatML template without a default system message on a Qwen2 vocabulary:
    /// `<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n`.
    const VLLM_CHAT_TOKENIZE: &str = r#"{"count": 9, "max_model_len": 4096,
        "tokens": [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198],
        "token_strs": null}"#;

    #[test]
    fn vllm_chat_tokenize_body_and_answer() {
        let body = vllm_tokenize_chat_body("Qwen/Qwen2.5-Math-7B-Instruct", "hi");
        assert_eq!(
            body,
            json!({"model": "Qwen/Qwen2.5-Math-7B-Instruct",
                "messages": [{"role": "user", "content": "hi"}],
                "add_generation_prompt": true, "continue_final_message": false,
                "add_special_tokens": false})
        );
        let answer: Value = serde_json::from_str(VLLM_CHAT_TOKENIZE).unwrap();
        assert_eq!(
            parse_tokens(&answer).unwrap(),
            vec![151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198]
        );
    }

    #[test]
    fn malformed_tokenize_and_template_answers_are_errors() {
        assert!(
            parse_tokens(&json!({"count": 1}))
                .unwrap_err()
                .to_string()
                .contains("`tokens`")
        );
        assert!(
            parse_tokens(&json!({"tokens": [1, -2]}))
                .unwrap_err()
                .to_string()
                .contains("tokens[1]")
        );
        assert!(parse_tokens(&json!({"tokens": [{"id": 1, "piece": "a"}]})).is_err());
        assert_eq!(
            parse_llamacpp_template(&json!({"prompt": "[user] hi</s>[assistant] "})).unwrap(),
            "[user] hi</s>[assistant] "
        );
        assert!(parse_llamacpp_template(&json!({"prompt": 3})).is_err());
        assert!(parse_llamacpp_template(&json!({})).is_err());
    }

    #[test]
    fn llamacpp_template_and_tokenize_bodies() {
        assert_eq!(
            llamacpp_apply_template_body("hi"),
            json!({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": true})
        );
        assert_eq!(
            llamacpp_tokenize_body("hi"),
            json!({"content": "hi", "add_special": true})
        );
    }

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
    fn llamacpp_body_pins_every_sampler_setting() {
        let body = llamacpp_body(&request(3), 64);
        for (key, value) in [
            ("samplers", json!(["top_k", "temperature"])),
            ("top_k", json!(64)),
            ("n_probs", json!(64)),
            ("temperature", json!(0.25)),
            ("dynatemp_range", json!(0.0)),
            ("dynatemp_exponent", json!(1.0)),
            ("top_p", json!(1.0)),
            ("min_p", json!(0.0)),
            ("top_n_sigma", json!(-1.0)),
            ("xtc_probability", json!(0.0)),
            ("dry_multiplier", json!(0.0)),
            ("mirostat", json!(0)),
            ("adaptive_target", json!(-1.0)),
            ("logit_bias", json!([])),
            ("grammar", json!("")),
            ("stop", json!([])),
            ("n_cache_reuse", json!(0)),
            ("n_indent", json!(0)),
            ("t_max_predict_ms", json!(0)),
            ("n_keep", json!(0)),
            ("post_sampling_probs", json!(false)),
            ("ignore_eos", json!(false)),
            ("backend_sampling", json!(false)),
            ("reasoning_budget_tokens", json!(-1)),
            ("n_predict", json!(8)),
        ] {
            assert_eq!(body[key], value, "{key}");
        }
    }

    /// What llama-server echoes for `sent`: its settings, 32-bit floats widened to f64.
    fn echo_of(sent: &Value) -> Value {
        let mut settings = sent.clone();
        for key in [
            "temperature",
            "dry_base",
            "mirostat_eta",
            "adaptive_decay",
            "xtc_threshold",
        ] {
            settings[key] = json!(sent[key].as_f64().unwrap() as f32 as f64);
        }
        settings["speculative.types"] = json!("none");
        json!({"generation_settings": settings})
    }

    #[test]
    fn echoed_llamacpp_settings_must_be_the_ones_asked_for() {
        let sent = llamacpp_body(&request(3), 16);
        check_llamacpp_settings(&sent, &echo_of(&sent)).unwrap();
        for (key, used, needle) in [
            ("top_p", json!(0.95), "top_p = 0.95"),
            ("min_p", json!(0.05), "min_p"),
            ("dynatemp_range", json!(0.5), "dynatemp_range"),
            ("samplers", json!(["temperature"]), "samplers"),
            ("seed", json!(4294967295u32), "seed"),
            ("stop", json!(["User:"]), "--reverse-prompt"),
            ("grammar", json!("root ::= \"a\""), "--grammar"),
            (
                "logit_bias",
                json!([{"bias": 1.0, "token": 3}]),
                "logit_bias",
            ),
            ("post_sampling_probs", json!(true), "post_sampling_probs"),
            (
                "speculative.types",
                json!("draft-simple"),
                "speculative decoding",
            ),
        ] {
            let mut answer = echo_of(&sent);
            answer["generation_settings"][key] = used;
            let err = check_llamacpp_settings(&sent, &answer).unwrap_err();
            assert!(err.is_permanent(), "{key}: {err}");
            assert!(err.message().contains(needle), "{key}: {err}");
        }
        let mut answer = echo_of(&sent);
        answer["generation_settings"]
            .as_object_mut()
            .unwrap()
            .remove("temperature");
        assert!(check_llamacpp_settings(&sent, &answer).is_err());
        assert!(check_llamacpp_settings(&sent, &json!({"content": ""})).is_err());
    }

    #[test]
    fn llamacpp_props_eog_and_post_sampling_answers() {
        let props = json!({"default_generation_settings": {"n_ctx": 256, "params": {}},
            "model_alias": "tiny", "model_path": "/tmp/pf/tiny.gguf", "eos_token": "</s>"});
        assert_eq!(
            parse_llamacpp_props(&props).unwrap(),
            LlamaCppProps {
                model: "tiny".into(),
                n_ctx: Some(256),
                eos_text: "</s>".into()
            }
        );
        let eog = llamacpp_eog_body(&[1, 2]);
        assert_eq!(
            (eog["ignore_eos"].clone(), eog["n_predict"].clone()),
            (json!(true), json!(1))
        );
        let answer = json!({"generation_settings": {"logit_bias": [
            {"bias": null, "token": 128009}, {"bias": null, "token": 128001}, {"bias": null, "token": 128008}]}});
        assert_eq!(
            parse_llamacpp_eog(&answer).unwrap(),
            Some(vec![128001, 128008, 128009])
        );
        assert_eq!(parse_llamacpp_eog(&json!({})).unwrap(), None);
        let post = json!({"completion_probabilities": [{"id": 71, "prob": 0.8,
            "top_probs": [{"id": 71, "token": "d", "bytes": [100], "prob": 0.8051687479019165},
                          {"id": 9, "token": "&", "bytes": [38], "prob": 0.05881}]}]});
        assert_eq!(
            parse_llamacpp_post_sampling(&post).unwrap(),
            vec![(71, 0.8051687479019165), (9, 0.05881)]
        );
    }

    #[test]
    fn llamacpp_stops_and_context_are_classified() {
        let entry = json!({"id": 2, "logprob": -0.5, "top_logprobs": [{"id": 2, "logprob": -0.5}, {"id": 5, "logprob": -1.2}]});
        let answer = json!({"tokens": [2], "completion_probabilities": [entry], "stop_type": "eos", "truncated": false});
        let raw = parse_llamacpp(&answer, &[2]).unwrap();
        assert!(raw.eos);
        // An EOS stop at a token outside the end-of-generation set.
        assert!(parse_llamacpp(&answer, &[7]).unwrap_err().is_permanent());
        let mut truncated = answer.clone();
        truncated["truncated"] = json!(true);
        let err = parse_llamacpp(&truncated, &[2]).unwrap_err();
        assert!(err.is_permanent() && err.message().contains("-np"), "{err}");
        let mut word = answer.clone();
        word["stop_type"] = json!("word");
        assert!(parse_llamacpp(&word, &[2]).unwrap_err().is_permanent());
        let mut odd = answer;
        odd["stop_type"] = json!("none");
        assert!(!parse_llamacpp(&odd, &[2]).unwrap_err().is_permanent());
    }

    #[test]
    fn each_answer_error_says_whether_a_retry_can_help() {
        let entry = json!({"id": 2, "logprob": -0.5, "top_logprobs": [{"id": 2, "logprob": -0.5}]});
        let answer =
            json!({"tokens": [2], "completion_probabilities": [entry], "stop_type": "eos"});
        let with = |pointer: &str, value: Value| {
            let mut a = answer.clone();
            *a.pointer_mut(pointer).unwrap() = value;
            a
        };
        // Malformed, incomplete or inconsistent answers: another attempt may succeed.
        for (unusable, needle) in [
            (json!({"stop_type": "eos"}), "completion_probabilities"),
            (with("/completion_probabilities", json!(3)), "not an array"),
            (
                with("/completion_probabilities/0/id", json!(-1)),
                "not a token id",
            ),
            (
                with("/completion_probabilities/0/top_logprobs", Value::Null),
                "top_logprobs",
            ),
            (
                with(
                    "/completion_probabilities/0/top_logprobs/0/logprob",
                    json!("x"),
                ),
                "not a number",
            ),
            (with("/tokens", json!([3])), "disagree"),
            (
                json!({"tokens": [], "completion_probabilities": [], "stop_type": "eos"}),
                "returned no token",
            ),
            (with("/stop_type", json!("none")), "stop_type"),
        ] {
            let err = parse_llamacpp(&unusable, &[2]).unwrap_err();
            assert!(matches!(err, AnswerError::Unusable(_)), "{err}");
            assert!(err.message().contains(needle), "{needle:?} not in {err}");
        }
        // What the server's configuration decides: every retry says the same.
        for refused in [
            with("/stop_type", json!("word")),
            json!({"truncated": true}),
        ] {
            let err = parse_llamacpp(&refused, &[2]).unwrap_err();
            assert!(matches!(err, AnswerError::Refused(_)), "{err}");
        }
        let err = parse_llamacpp(&answer, &[7]).unwrap_err();
        assert!(matches!(err, AnswerError::Refused(_)), "{err}");
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
    fn a_vllm_logprob_limit_error_says_what_to_do() {
        let error = r#"POST http://gpu1:8000/v1/completions answered 400 Bad Request: {"error":{"message":"Requested sample logprobs of 64, which is greater than max allowed: 20","type":"BadRequestError","param":"logprobs","code":400}}"#;
        let m = vllm_logprob_limit(error, 64).unwrap();
        assert!(
            m.starts_with("K=64 exceeds the server's --max-logprobs (20); start vLLM with --max-logprobs 64 or use ?k=20"),
            "{m}"
        );
        assert!(vllm_logprob_limit("400: token id out of range", 64).is_none());
    }
}
