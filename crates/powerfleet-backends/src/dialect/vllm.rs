//! vLLM's OpenAI-compatible server: `/v1/completions` bodies and answers in raw-logprobs mode,
//! its seed range, its `--max-logprobs` refusal, chat `/tokenize`, and the start-up probe of a
//! vLLM server.

use powerfleet_sampler::{OwnedRequest, TokenId};
use serde_json::{Value, json};

use super::common::{AnswerError, RawGeneration, check_terminal, field, user_message};
use super::{
    ChatTemplate, Dialect, DialectFacts, Exchange, ServerKind, probe_prefix, probe_raw_logprobs,
    served_model,
};
use crate::error::BackendError;
use crate::probe::ServerInfo;
use crate::reference::ProposalError;

/// vLLM raises temperatures in (0, 0.01) to 0.01 (`_MAX_TEMP` in `vllm/sampling_params.py`,
/// `SamplingParams.__post_init__`, with a warning) and treats those below `_SAMPLING_EPS` (1e-5)
/// as greedy: below 0.01 it does not sample at the temperature asked for.
pub const VLLM_MIN_TEMPERATURE: f64 = 0.01;
/// vLLM refuses temperatures above 2 ("temperature must be in [0, 2]",
/// `SamplingParams._verify_args` in `vllm/sampling_params.py`).
pub const VLLM_MAX_TEMPERATURE: f64 = 2.0;

/// vLLM's OpenAI-compatible server (`/v1/completions`, `/tokenize`, `/detokenize`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Vllm;

impl Dialect for Vllm {
    fn facts(&self) -> &'static DialectFacts {
        &VLLM_FACTS
    }

    /// [0.01, 2]: vLLM raises smaller temperatures to 0.01 (greedy below 1e-5) and refuses
    /// larger ones (`vllm/sampling_params.py`: `_MAX_TEMP`, `_verify_args`).
    fn check_temperature(&self, temperature: f64) -> Result<(), ProposalError> {
        if temperature < VLLM_MIN_TEMPERATURE {
            Err(ProposalError::BelowVllmMin { temperature })
        } else if temperature > VLLM_MAX_TEMPERATURE {
            Err(ProposalError::AboveVllmMax { temperature })
        } else {
            Ok(())
        }
    }

    fn generation_body(&self, request: &OwnedRequest, k: u32, model: Option<&str>) -> Value {
        vllm_body(request, k, model.unwrap_or_default())
    }

    fn parse_generation(
        &self,
        _sent: &Value,
        answer: &Value,
        terminal: &[TokenId],
    ) -> Result<RawGeneration, AnswerError> {
        parse_vllm(answer, terminal)
    }

    /// A refusal of K beyond `--max-logprobs` says what to do ([`vllm_logprob_limit`]).
    fn explain_refusal(&self, message: &str, k: u32) -> Option<String> {
        vllm_logprob_limit(message, k)
    }

    /// A candidate request asks for `logprobs` of at least `n`: beyond `--max-logprobs`
    /// (default 20) the fix is a smaller `lookahead_candidates` or a larger limit, not `?k=`.
    fn explain_candidates(&self, message: &str, n: u32) -> String {
        if message.contains("--max-logprobs") {
            format!(
                "{message}; power-lookahead asks for {n} candidates: lower lookahead_candidates to \
                 the server's limit, or start vLLM with --max-logprobs {n} or more"
            )
        } else {
            format!("{message} (power-lookahead asked for {n} candidates, lookahead_candidates)")
        }
    }

    fn tokenize_body(&self, model: Option<&str>, text: &str) -> Value {
        json!({"model": model, "prompt": text, "add_special_tokens": true})
    }

    fn detokenize_body(&self, model: Option<&str>, tokens: &[TokenId]) -> Value {
        json!({"model": model, "tokens": tokens})
    }

    /// `POST /tokenize` with `messages`, `add_generation_prompt` true and `add_special_tokens`
    /// false (the template writes the special tokens), as vLLM's chat completions do. A model
    /// without a chat template is refused with the server's message.
    fn chat_template(
        &self,
        model: Option<&str>,
        messages: Value,
    ) -> Result<ChatTemplate, BackendError> {
        Ok(ChatTemplate::Tokens {
            path: "/tokenize",
            body: vllm_tokenize_messages_body(model.unwrap_or_default(), messages),
        })
    }
}

/// vLLM's names, limits, context rule and notes.
const VLLM_FACTS: DialectFacts = DialectFacts {
    prefix: "vllm",
    name: "vLLM",
    reference_example: "vllm+http://HOST:PORT?model=NAME",
    // Every request names the served model.
    requires_model: true,
    // 20, vLLM's default `--max-logprobs` (`ModelConfig.max_logprobs` in
    // `vllm/config/model.py`); a larger K needs the server started with `--max-logprobs K`.
    default_k: 20,
    generation_path: "/v1/completions",
    detokenized_field: "prompt",
    logprob_source: "vLLM /v1/completions in raw-logprobs mode",
    sampler_recipe: "vLLM /v1/completions v2: top_k K, top_p 1, min_p 0, penalties neutral, min_tokens 0, no stop strings or bad words; raw top-K log-probabilities (raw_logprobs mode)",
    // 0: vLLM refuses a request when prompt + max_tokens > max_model_len.
    context_reserve: 0,
    context_setting: "max_model_len",
    raw_logprobs_fix: "start vLLM with --logprobs-mode raw_logprobs (the default in recent vLLM)",
    determinism_fix: "start vLLM with VLLM_BATCH_INVARIANT=1 in its environment (docs/backends.md, \"Reproducibility\")",
    probe: |server| Box::pin(probe(server)),
};

/// The start-up probe of one vLLM server ([`Dialect::probe`]).
///
/// `GET /v1/models` must list `?model=` (with its `max_model_len`); raw log-probabilities,
/// a 400 for K beyond `--max-logprobs` refused with the fix. vLLM does not expose its
/// `generation_config` EOS ids over HTTP: the terminal tokens are the reference's `eos=`.
async fn probe(server: &dyn Exchange) -> Result<ServerInfo, BackendError> {
    let reference = server.reference();
    let model = reference.model.as_deref().unwrap_or_default();
    let (_, context_len) = served_model(
        server,
        Some(model),
        "set ?model= to the name the server was started with (--served-model-name)",
    )
    .await?;
    let prefix = probe_prefix(server).await?;
    let terminal = reference.eos.clone();
    probe_raw_logprobs(server, &prefix, &terminal).await?;
    Ok(ServerInfo {
        kind: ServerKind::Vllm,
        served_model: model.to_string(),
        context_len,
        terminal_tokens: terminal,
        nondeterministic: Vec::new(),
    })
}

/// vLLM's seed for a chain's 64-bit seed: `CompletionRequest.seed` must lie in
/// [-2^63, 2^63 - 1] (`_INT64_MIN`/`_INT64_MAX` in
/// `vllm/entrypoints/openai/completion/protocol.py` of vLLM 0.33; `_LONG_INFO` in
/// `vllm/entrypoints/openai/protocol.py` of earlier versions), so the top bit is dropped.
pub fn vllm_seed(seed: u64) -> u64 {
    seed & (i64::MAX as u64)
}

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
    use crate::dialect::common::parse_tokens;

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
    fn a_vllm_logprob_limit_error_says_what_to_do() {
        let error = r#"POST http://gpu1:8000/v1/completions answered 400 Bad Request: {"error":{"message":"Requested sample logprobs of 64, which is greater than max allowed: 20","type":"BadRequestError","param":"logprobs","code":400}}"#;
        let m = vllm_logprob_limit(error, 64).unwrap();
        assert!(
            m.starts_with("K=64 exceeds the server's --max-logprobs (20); start vLLM with --max-logprobs 64 or use ?k=20"),
            "{m}"
        );
        assert!(vllm_logprob_limit("400: token id out of range", 64).is_none());
    }

    #[test]
    fn a_candidate_request_beyond_the_logprob_limit_names_lookahead_candidates() {
        // lookahead_candidates 32 on a server with the default --max-logprobs 20: the body asks
        // for logprobs 32, and the refusal names both fixes.
        let mut request = crate::dialect::common::request(1);
        request.candidates = 32;
        let k = crate::dialect::common::effective_k(&request, crate::ServerKind::Vllm.default_k());
        assert_eq!(k, 32);
        assert_eq!(vllm_body(&request, k, "m")["logprobs"], 32);
        assert_eq!(vllm_body(&request, k, "m")["top_k"], 32);
        let error = r#"400 Bad Request: {"error":{"message":"Requested sample logprobs of 32, which is greater than max allowed: 20"}}"#;
        let explained = Vllm.explain_refusal(error, k).unwrap();
        let m = Vllm.explain_candidates(&explained, 32);
        assert!(m.contains("lower lookahead_candidates"), "{m}");
        assert!(m.contains("--max-logprobs 32 or more"), "{m}");
        assert!(m.contains("max allowed: 20"), "{m}");
        // A small K keeps the reference's.
        request.candidates = 4;
        assert_eq!(crate::dialect::common::effective_k(&request, 20), 20);
    }
}
