//! Request bodies and response parsing for llama.cpp's `llama-server` and vLLM.

use powerfleet_sampler::{Generation, OwnedRequest, TokenId};
use serde_json::{Value, json};

use crate::recipe::exact_log_p_q;

/// What a server answered, before the exactness recipe: tokens, the raw top-K list at each
/// position, and whether EOS ended the generation.
#[derive(Clone, Debug, PartialEq)]
pub struct RawGeneration {
    /// Generated token ids, EOS included when it ended the generation.
    pub tokens: Vec<TokenId>,
    /// Per position, (token, raw log-probability) of the top K.
    pub top: Vec<Vec<(TokenId, f64)>>,
    /// Whether EOS ended the generation.
    pub eos: bool,
}

impl RawGeneration {
    /// Exact log p and log q per token (see `recipe`).
    pub fn into_generation(self, temperature: f64) -> Result<Generation, String> {
        if self.top.len() != self.tokens.len() {
            return Err(format!(
                "the server returned {} tokens but log-probabilities for {}",
                self.tokens.len(),
                self.top.len()
            ));
        }
        let mut g = Generation {
            log_p: Vec::with_capacity(self.tokens.len()),
            log_q: Vec::with_capacity(self.tokens.len()),
            tokens: self.tokens,
            eos: self.eos,
        };
        for (i, (top, &t)) in self.top.iter().zip(&g.tokens).enumerate() {
            let (lp, lq) =
                exact_log_p_q(top, t, temperature).map_err(|e| format!("token {i}: {e}"))?;
            g.log_p.push(lp);
            g.log_q.push(lq);
        }
        Ok(g)
    }
}

/// The top-K used for a request: the job's proposal top-k, else the backend's default.
pub fn effective_k(request: &OwnedRequest, default_k: u32) -> u32 {
    request.top_k.unwrap_or(default_k)
}

/// llama.cpp `/completion` body: token-array prompt, only top-k and temperature in the sampler
/// chain, penalties and other samplers off, raw (pre-sampling) probabilities of the top K.
pub fn llamacpp_body(request: &OwnedRequest, k: u32) -> Value {
    json!({
        "prompt": request.prefix,
        "n_predict": request.max_tokens,
        "n_probs": k,
        "top_k": k,
        "temperature": request.temperature,
        "samplers": ["top_k", "temperature"],
        "top_p": 1.0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "repeat_last_n": 0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "xtc_probability": 0.0,
        "mirostat": 0,
        "seed": request.seed as u32,
        "cache_prompt": true,
        "return_tokens": true,
        "post_sampling_probs": false,
        "ignore_eos": false,
        "stream": false,
    })
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, String> {
    v.get(name)
        .ok_or_else(|| format!("the response lacks the `{name}` field"))
}

fn token_id(v: &Value, what: &str) -> Result<TokenId, String> {
    v.as_u64()
        .and_then(|t| TokenId::try_from(t).ok())
        .ok_or_else(|| format!("{what} is not a token id: {v}"))
}

/// Parses a llama.cpp `/completion` response.
pub fn parse_llamacpp(body: &Value) -> Result<RawGeneration, String> {
    let probs = field(body, "completion_probabilities")?
        .as_array()
        .ok_or("`completion_probabilities` is not an array")?;
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
                format!("completion_probabilities[{i}] has no `top_logprobs`; the server must return raw log-probabilities (post_sampling_probs false, n_probs > 0)")
            })?;
        let mut pos = Vec::with_capacity(list.len());
        for (j, cand) in list.iter().enumerate() {
            let id = token_id(field(cand, "id")?, &format!("top_logprobs[{j}].id"))?;
            let lp = field(cand, "logprob")?.as_f64().ok_or_else(|| {
                format!("completion_probabilities[{i}].top_logprobs[{j}].logprob is not a number")
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
        if returned != tokens[..returned.len().min(tokens.len())] || returned.len() > tokens.len() {
            return Err(format!(
                "`tokens` ({} ids) disagree with `completion_probabilities` ({} entries)",
                returned.len(),
                tokens.len()
            ));
        }
    }
    let eos = body.get("stop_type").and_then(Value::as_str) == Some("eos")
        || body.get("stopped_eos").and_then(Value::as_bool) == Some(true);
    Ok(RawGeneration { tokens, top, eos })
}

/// vLLM `/v1/completions` body: token-id prompt, top-k and temperature, raw log-probabilities of
/// the top K (vLLM's default `raw_logprobs` mode), token ids instead of token strings.
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
        "logprobs": k,
        "seed": request.seed,
        "return_tokens_as_token_ids": true,
        "skip_special_tokens": false,
        "ignore_eos": false,
        "stream": false,
    })
}

fn vllm_token(s: &str) -> Result<TokenId, String> {
    s.strip_prefix("token_id:")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            format!(
                "token {s:?} is not of the form token_id:N (request return_tokens_as_token_ids)"
            )
        })
}

/// Parses a vLLM `/v1/completions` response. `eos_token` is the model's EOS id.
pub fn parse_vllm(body: &Value, eos_token: Option<TokenId>) -> Result<RawGeneration, String> {
    let choice = field(body, "choices")?
        .as_array()
        .and_then(|c| c.first())
        .ok_or("`choices` is empty")?;
    let logprobs = choice
        .get("logprobs")
        .filter(|l| !l.is_null())
        .ok_or("the choice has no `logprobs`; request logprobs = K")?;
    let names = field(logprobs, "tokens")?
        .as_array()
        .ok_or("`logprobs.tokens` is not an array")?;
    let tops = field(logprobs, "top_logprobs")?
        .as_array()
        .ok_or("`logprobs.top_logprobs` is not an array")?;
    let tokens: Vec<TokenId> = names
        .iter()
        .map(|n| {
            n.as_str()
                .ok_or("a token is not a string".to_string())
                .and_then(vllm_token)
        })
        .collect::<Result<_, _>>()?;
    let mut top = Vec::with_capacity(tops.len());
    for (i, t) in tops.iter().enumerate() {
        let map = t.as_object().ok_or_else(|| {
            format!("top_logprobs[{i}] is not an object (is it null? request logprobs = K)")
        })?;
        let mut pos = Vec::with_capacity(map.len());
        for (name, lp) in map {
            let lp = lp
                .as_f64()
                .ok_or_else(|| format!("top_logprobs[{i}][{name}] is not a number"))?;
            pos.push((vllm_token(name)?, lp));
        }
        top.push(pos);
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let stop_reason = choice.get("stop_reason").filter(|v| !v.is_null());
    let eos = match (finish, stop_reason) {
        (Some("length"), _) => false,
        (Some("stop"), None) => true,
        (Some("stop"), Some(reason)) => {
            return Err(format!(
                "the server stopped on {reason}, not on EOS; no stop strings or stop tokens may be configured"
            ));
        }
        (other, _) => return Err(format!("unexpected finish_reason {other:?}")),
    };
    if eos
        && let (Some(eos_id), Some(last)) = (eos_token, tokens.last())
        && *last != eos_id
    {
        return Err(format!(
            "the server reports a stop at EOS but the last token is {last}, not EOS {eos_id}; its log-probability is needed"
        ));
    }
    Ok(RawGeneration { tokens, top, eos })
}

/// llama.cpp `/tokenize` body. `add_special` adds BOS when the model's vocabulary asks for it,
/// as the server's own `/completion` (string prompts) and `/v1/chat/completions` do;
/// `parse_special` (on by default) turns special-token text such as `<s>` or `<|im_start|>`
/// into those tokens.
pub fn llamacpp_tokenize_body(text: &str) -> Value {
    json!({"content": text, "add_special": true})
}

/// One user message holding `user_text`.
fn user_message(user_text: &str) -> Value {
    json!([{"role": "user", "content": user_text}])
}

/// llama.cpp `/apply-template` body: `user_text` as one user message, with the generation
/// prompt (the assistant turn's opening) appended. The answer is `{"prompt": TEXT}`, the text
/// `/v1/chat/completions` would tokenize (see docs/llama-server.md).
pub fn llamacpp_apply_template_body(user_text: &str) -> Value {
    json!({"messages": user_message(user_text), "add_generation_prompt": true})
}

/// The templated text of a llama.cpp `/apply-template` answer.
pub fn parse_llamacpp_template(body: &Value) -> Result<String, String> {
    field(body, "prompt")?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "`prompt` is not a string".to_string())
}

/// vLLM chat `/tokenize` body: `user_text` as one user message through the model's chat
/// template, generation prompt appended. `add_special_tokens` is false, as in vLLM's own chat
/// completions: the template writes the special tokens (BOS included) itself.
pub fn vllm_tokenize_chat_body(model: &str, user_text: &str) -> Value {
    json!({
        "model": model,
        "messages": user_message(user_text),
        "add_generation_prompt": true,
        "continue_final_message": false,
        "add_special_tokens": false,
    })
}

/// The token ids of a `/tokenize` answer (llama.cpp and vLLM): `{"tokens": [ids], ...}`.
pub fn parse_tokens(body: &Value) -> Result<Vec<TokenId>, String> {
    field(body, "tokens")?
        .as_array()
        .ok_or("`tokens` is not an array")?
        .iter()
        .enumerate()
        .map(|(i, t)| token_id(t, &format!("tokens[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .contains("`tokens`")
        );
        assert!(
            parse_tokens(&json!({"tokens": [1, -2]}))
                .unwrap_err()
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
}
