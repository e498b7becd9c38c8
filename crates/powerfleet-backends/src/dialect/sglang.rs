//! SGLang's native API: `/generate` bodies and answers with original (raw) log-probabilities,
//! its seed range, `/tokenize` and `/detokenize`, and the start-up probe of an SGLang server.

use powerfleet_sampler::{OwnedRequest, TokenId};
use serde_json::{Value, json};

use super::common::{AnswerError, RawGeneration, check_terminal, field, token_id};
use super::{
    ChatTemplate, Dialect, DialectFacts, Exchange, ServerKind, optional_get, probe_prefix,
    probe_raw_logprobs, served_model,
};
use crate::error::BackendError;
use crate::probe::ServerInfo;
use crate::reference::ProposalError;

/// SGLang turns temperatures below `_SAMPLING_EPS` (1e-6) into greedy sampling (temperature 1,
/// top_k 1; `SamplingParams.__post_init__` in `python/sglang/srt/sampling/sampling_params.py`).
/// It has no upper limit.
pub const SGLANG_MIN_TEMPERATURE: f64 = 1e-6;

/// SGLang's native API (`/generate`, `/tokenize`, `/detokenize`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sglang;

impl Dialect for Sglang {
    fn facts(&self) -> &'static DialectFacts {
        &SGLANG_FACTS
    }

    /// At least 1e-6; smaller temperatures are greedy (`_SAMPLING_EPS` in
    /// `python/sglang/srt/sampling/sampling_params.py`).
    fn check_temperature(&self, temperature: f64) -> Result<(), ProposalError> {
        if temperature < SGLANG_MIN_TEMPERATURE {
            Err(ProposalError::BelowSglangMin { temperature })
        } else {
            Ok(())
        }
    }

    fn generation_body(&self, request: &OwnedRequest, k: u32, _model: Option<&str>) -> Value {
        sglang_body(request, k)
    }

    fn parse_generation(
        &self,
        _sent: &Value,
        answer: &Value,
        terminal: &[TokenId],
    ) -> Result<RawGeneration, AnswerError> {
        parse_sglang(answer, terminal)
    }

    fn tokenize_body(&self, model: Option<&str>, text: &str) -> Value {
        sglang_tokenize_body(model, text)
    }

    fn detokenize_body(&self, model: Option<&str>, tokens: &[TokenId]) -> Value {
        sglang_detokenize_body(model, tokens)
    }

    /// Refused: SGLang's `/tokenize` takes text only (`TokenizeRequest` in
    /// `python/sglang/srt/entrypoints/openai/protocol.py`) and no endpoint applies the chat
    /// template without generating.
    fn chat_template(
        &self,
        _model: Option<&str>,
        _messages: Value,
    ) -> Result<ChatTemplate, BackendError> {
        Err(BackendError::Rejected(
            "SGLang cannot format a chat prompt without generating (its /tokenize takes text only); submit without chat, or put the chat-formatted text in the prompt".into(),
        ))
    }
}

/// SGLang's names, limits, context rule and notes.
const SGLANG_FACTS: DialectFacts = DialectFacts {
    prefix: "sglang",
    name: "SGLang",
    reference_example: "sglang+http://HOST:PORT",
    requires_model: false,
    // 64: `top_logprobs_num` is limited only by the vocabulary size.
    default_k: 64,
    generation_path: "/generate",
    detokenized_field: "text",
    logprob_source: "SGLang /generate with original (raw) logprobs",
    sampler_recipe: "SGLang /generate v1: top_k K, top_p 1, min_p 0, penalties neutral, min_new_tokens 0, no stop strings; original top-K log-probabilities (SGLANG_RETURN_ORIGINAL_LOGPROB)",
    // 1: SGLang refuses (or, with `--allow-auto-truncate`, silently shortens) a request when
    // prompt + max_new_tokens >= its context length (`_validate_one_request` in
    // `python/sglang/srt/managers/tokenizer_manager.py`).
    context_reserve: 1,
    context_setting: "context_length",
    raw_logprobs_fix: "start SGLang with SGLANG_RETURN_ORIGINAL_LOGPROB=1 in its environment",
    determinism_fix: "start SGLang with --enable-deterministic-inference (docs/backends.md, \"Reproducibility\")",
    probe: |server| Box::pin(probe(server)),
};

/// The start-up probe of one SGLang server ([`Dialect::probe`]).
///
/// `GET /v1/models` (the `?model=` given, else the first); `eos_token_ids` and
/// `preferred_sampling_params` of `/get_model_info` (or `/model_info`), whose parameters
/// requests must override ([`SGLANG_PINNED_PARAMS`]); speculative decoding in
/// `/get_server_info` (or `/server_info`) refused; raw log-probabilities.
async fn probe(server: &dyn Exchange) -> Result<ServerInfo, BackendError> {
    let reference = server.reference();
    let (served_model, context_len) = served_model(
        server,
        reference.model.as_deref(),
        "set ?model= to the served model name (--served-model-name) or leave it out",
    )
    .await?;
    let mut terminal = reference.eos.clone();
    let mut model_info = optional_get(server, "/get_model_info").await?;
    if model_info.is_none() {
        model_info = optional_get(server, "/model_info").await?;
    }
    if let Some(info) = model_info {
        if let Some(ids) = info.get("eos_token_ids").and_then(Value::as_array) {
            terminal.extend(
                ids.iter()
                    .filter_map(Value::as_u64)
                    .filter_map(|t| TokenId::try_from(t).ok()),
            );
        }
        sglang_preferred_params(info.get("preferred_sampling_params"))
            .map_err(BackendError::Rejected)?;
    }
    terminal.sort_unstable();
    terminal.dedup();
    let mut server_info = optional_get(server, "/get_server_info").await?;
    if server_info.is_none() {
        server_info = optional_get(server, "/server_info").await?;
    }
    if let Some(algorithm) = server_info
        .as_ref()
        .and_then(|i| i.get("speculative_algorithm"))
        .filter(|a| !a.is_null() && a.as_str() != Some("NONE"))
    {
        return Err(BackendError::Rejected(format!(
            "SGLang runs speculative decoding (speculative_algorithm {algorithm}); exact sampling needs it off: start the server without --speculative-algorithm"
        )));
    }
    let prefix = probe_prefix(server).await?;
    probe_raw_logprobs(server, &prefix, &terminal).await?;
    Ok(ServerInfo {
        kind: ServerKind::Sglang,
        served_model,
        context_len,
        terminal_tokens: terminal,
        nondeterministic: Vec::new(),
    })
}

/// SGLang's `--preferred-sampling-params` (a JSON object, given as a string) fill in what a
/// request leaves out; they may only name parameters every request sets.
fn sglang_preferred_params(value: Option<&Value>) -> Result<(), String> {
    let parsed = match value {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        Some(other) => other.clone(),
    };
    let Some(map) = parsed.as_object() else {
        return Ok(());
    };
    let extra: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|key| !SGLANG_PINNED_PARAMS.contains(key))
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "SGLang runs with --preferred-sampling-params setting {extra:?}, which requests do not override and which can change the sampled distribution; start the server without them"
        ))
    }
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
