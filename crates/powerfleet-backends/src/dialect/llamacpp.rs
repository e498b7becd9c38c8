//! llama.cpp's `llama-server`: `/completion` bodies that set every sampler setting and the
//! check of the settings the server echoes, its answers, `/props`, the end-of-generation
//! tokens, post-sampling probabilities, `/tokenize` and `/apply-template`; and the start-up
//! probe of a llama-server.

use powerfleet_sampler::{OwnedRequest, TokenId};
use serde_json::{Value, json};

use super::common::{
    AnswerError, RawGeneration, check_terminal, field, token_id, tokens_of, user_message,
};
use super::{
    ChatTemplate, Dialect, DialectFacts, Exchange, ServerKind, probe_prefix, probe_raw_logprobs,
    probe_request,
};
use crate::error::BackendError;
use crate::probe::ServerInfo;
use crate::recipe::exact_log_p_q;

/// llama.cpp's `llama-server` (`/completion`, `/tokenize`, `/detokenize`, `/apply-template`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LlamaCpp;

impl Dialect for LlamaCpp {
    fn facts(&self) -> &'static DialectFacts {
        &LLAMACPP_FACTS
    }

    fn generation_body(&self, request: &OwnedRequest, k: u32, _model: Option<&str>) -> Value {
        llamacpp_body(request, k)
    }

    /// The echoed settings are checked against the body first ([`check_llamacpp_settings`]).
    fn parse_generation(
        &self,
        sent: &Value,
        answer: &Value,
        terminal: &[TokenId],
    ) -> Result<RawGeneration, AnswerError> {
        check_llamacpp_settings(sent, answer).and_then(|()| parse_llamacpp(answer, terminal))
    }

    fn tokenize_body(&self, _model: Option<&str>, text: &str) -> Value {
        llamacpp_tokenize_body(text)
    }

    fn detokenize_body(&self, _model: Option<&str>, tokens: &[TokenId]) -> Value {
        json!({ "tokens": tokens })
    }

    /// `POST /apply-template`, then `/tokenize` of its text with `add_special`, as
    /// `/v1/chat/completions` does. The server strips a BOS text the template writes at the
    /// start when its tokenizer adds BOS, so BOS is not doubled. A model without a template gets
    /// llama-server's ChatML fallback (docs/llama-server.md).
    fn chat_template(
        &self,
        _model: Option<&str>,
        messages: Value,
    ) -> Result<ChatTemplate, BackendError> {
        Ok(ChatTemplate::Text {
            path: "/apply-template",
            body: llamacpp_apply_template_messages_body(messages),
            text: parse_llamacpp_template,
        })
    }
}

/// llama-server's names, limits, context rule and notes.
const LLAMACPP_FACTS: DialectFacts = DialectFacts {
    prefix: "llamacpp",
    name: "llama.cpp",
    reference_example: "llamacpp+http://HOST:PORT",
    requires_model: false,
    // 64: `n_probs` has no limit beyond the vocabulary.
    default_k: 64,
    generation_path: "/completion",
    detokenized_field: "content",
    logprob_source: "llama.cpp /completion with raw n_probs",
    sampler_recipe: "llama.cpp /completion v2: samplers [top_k, temperature]; dynatemp 0; top_p 1, min_p 0, typical_p 1, top_n_sigma -1, xtc 0, adaptive off, mirostat 0; penalties, dry off; logit_bias [], no grammar, no stop strings; raw top-K log-probabilities (post_sampling_probs false)",
    // 1: llama-server stops with `truncated` once the slot holds n_ctx - 1 tokens and another
    // is sampled (`process_token` in `tools/server/server-context.cpp`), so prompt + generated
    // must stay below n_ctx.
    context_reserve: 1,
    context_setting: "n_ctx per slot, -c divided by -np",
    raw_logprobs_fix: "llama-server must get post_sampling_probs: false, which this client sends; is a proxy rewriting requests?",
    determinism_fix: "start llama-server with -np 1 -ub 1 (one slot, one-token micro-batches: each token is computed the same way whatever the prompt cache holds; docs/llama-server.md, \"Determinism\") and serve more chains with more servers per reference, not more slots",
    probe: |server| Box::pin(probe(server)),
};

/// The start-up probe of one llama-server ([`Dialect::probe`]).
///
/// `GET /props` (`model_alias`, `default_generation_settings.n_ctx`); the terminal tokens:
/// EOS (`/props` `eos_token` through `/tokenize` with `parse_special`) and every
/// end-of-generation token ([`llamacpp_eog_body`]); raw log-probabilities, with the echoed
/// sampler settings checked; and the same request with `post_sampling_probs` must report
/// the recipe's q ([`check_post_sampling`]).
async fn probe(server: &dyn Exchange) -> Result<ServerInfo, BackendError> {
    let reference = server.reference();
    let props = server.get("/props").await?;
    let props = parse_llamacpp_props(&props)
        .map_err(|e| BackendError::Transient(format!("/props: {e}")))?;
    let prefix = probe_prefix(server).await?;
    let mut terminal = reference.eos.clone();
    if !props.eos_text.is_empty() {
        let body = json!({"content": props.eos_text, "add_special": false, "parse_special": true});
        let answer = server.post("/tokenize", &body).await?;
        if let [eos] = tokens_of(&answer, "/tokenize")?[..] {
            terminal.push(eos);
        }
    }
    let answer = server
        .post("/completion", &llamacpp_eog_body(&prefix))
        .await?;
    if let Some(eog) = parse_llamacpp_eog(&answer)
        .map_err(|e| BackendError::Transient(format!("/completion: {e}")))?
    {
        terminal.extend(eog);
    }
    terminal.sort_unstable();
    terminal.dedup();
    let k = reference.k;
    let [_, at_half] = probe_raw_logprobs(server, &prefix, &terminal).await?;
    let body = llamacpp_post_sampling_body(&probe_request(&prefix, 0.5, k), k);
    let answer = server.post("/completion", &body).await?;
    let reported = parse_llamacpp_post_sampling(&answer)
        .map_err(|e| BackendError::Transient(format!("/completion: {e}")))?;
    check_post_sampling(&at_half, &reported, 0.5)?;
    Ok(ServerInfo {
        kind: ServerKind::LlamaCpp,
        served_model: props.model,
        context_len: props.n_ctx,
        terminal_tokens: terminal,
        nondeterministic: Vec::new(),
    })
}

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

/// The start-up check that llama-server's q is the recipe's: `reported` are the probabilities
/// after the sampler chain (`post_sampling_probs`) at the first position, `raw` the raw top-K
/// list of the same prefix, `temperature` the request's. Every token's q must agree within
/// 0.005 + 1% (the noise between two requests); a token the chain drops (a model's
/// suppress-tokens list, a grammar, a logit bias) or keeps beyond the top K shows here.
pub fn check_post_sampling(
    raw: &[(TokenId, f64)],
    reported: &[(TokenId, f64)],
    temperature: f64,
) -> Result<(), BackendError> {
    let q = |id: TokenId| {
        exact_log_p_q(raw, id, temperature)
            .map(|(_, lq)| lq.exp())
            .unwrap_or(0.0)
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 0.005 + 0.01 * b;
    for &(id, p) in reported {
        let expected = q(id);
        if !close(p, expected) {
            return Err(BackendError::Rejected(format!(
                "llama-server sampled token {id} with probability {p:.6} where the top-{} recipe at temperature {temperature} gives {expected:.6}; its sampler chain is not top-K then temperature (a model suppress-tokens list, a grammar or a server sampler setting?)",
                raw.len()
            )));
        }
    }
    for &(id, _) in raw {
        let expected = q(id);
        if !reported.iter().any(|(t, _)| *t == id) && !close(0.0, expected) {
            return Err(BackendError::Rejected(format!(
                "llama-server never samples token {id}, which the top-{} recipe at temperature {temperature} gives probability {expected:.6}; its sampler chain is not top-K then temperature (a model suppress-tokens list, a grammar or a server sampler setting?)",
                raw.len()
            )));
        }
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
        candidates: 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::common::{parse_tokens, request};

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
    fn post_sampling_probabilities_must_be_the_recipes_q() {
        let raw = [(5, 0.5f64.ln()), (9, 0.3f64.ln()), (2, 0.1f64.ln())];
        let q = |p: f64| p * p / (0.25 + 0.09 + 0.01);
        let reported = [(5, q(0.5)), (9, q(0.3)), (2, q(0.1))];
        check_post_sampling(&raw, &reported, 0.5).unwrap();
        // A token the server never samples (suppressed) and renormalized others.
        let z = 0.25 + 0.09;
        let suppressed = [(5, 0.25 / z), (9, 0.09 / z)];
        let err = check_post_sampling(&raw, &suppressed, 0.5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("probability"), "{err}");
        // Temperature not applied.
        let untempered = [(5, 0.5 / 0.9), (9, 0.3 / 0.9), (2, 0.1 / 0.9)];
        assert!(check_post_sampling(&raw, &untempered, 0.5).is_err());
    }
}
