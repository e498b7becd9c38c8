//! What a completion or chat request asks the fleet for ([`Asked`]): its options checked
//! (refused, not ignored, where they would change what is sampled), its sampler resolved and its
//! prompts made problems.

use axum::http::StatusCode;
use powerfleet_jobs::{ChatMessage, CorrelationId, now_ms};
use powerfleet_sampler::{SamplerConfig, TokenId};
use serde_json::Value;

use super::wire::{ChatRequest, Common, CompletionRequest, ContentInput, PromptInput, StopInput};
use super::{OpenAiError, OpenAiSettings};
use crate::producer::BatchLine;
use crate::request::quote;

/// What a request asks the fleet for, whichever endpoint it came through.
#[derive(Debug)]
pub(super) struct Asked {
    pub(super) model: String,
    pub(super) prompts: Vec<BatchLine>,
    pub(super) config: SamplerConfig,
    pub(super) n: u32,
    pub(super) seed: u64,
    pub(super) stop: Vec<String>,
    pub(super) logprobs: bool,
    pub(super) token_ids: bool,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// From the request's `x-powerfleet-correlation-id` header; generated when absent.
    pub(super) correlation_id: Option<CorrelationId>,
    /// The field that holds the prompt (`prompt`, chat: `messages`), named when it does not
    /// fit the context.
    pub(super) prompt_field: &'static str,
    /// Whether the request set the token budget (`max_tokens`, or `power_sampling`'s
    /// `max_new_tokens`); when not, the budget is made to fit the model's context.
    pub(super) budget_given: bool,
    /// From `metadata.label`.
    pub(super) label: Option<powerfleet_jobs::Label>,
}

/// Checks the options both endpoints share and resolves the sampler; `max_tokens` is the budget.
fn asked_common(
    settings: &crate::openai::OpenAiSettings,
    common: Common,
    max_tokens: Option<u32>,
) -> Result<Asked, OpenAiError> {
    if common.model.is_empty() {
        return Err(OpenAiError::invalid(
            "model",
            "model must name a model; GET /v1/models lists them".into(),
        ));
    }
    for (field, value) in [("temperature", common.temperature), ("top_p", common.top_p)] {
        if let Some(v) = value
            && v != 1.0
        {
            return Err(OpenAiError::invalid(
                field,
                format!(
                    "{field} must be 1 (or absent), got {v}: power sampling targets p^alpha of the base model at temperature 1, and another {field} would silently change that target. Sharpen with power_sampling.alpha (method power, or low-temp for p^alpha token by token), or choose power_sampling.method standard for plain samples"
                ),
            ));
        }
    }
    for (field, value) in [
        ("presence_penalty", common.presence_penalty),
        ("frequency_penalty", common.frequency_penalty),
    ] {
        if let Some(v) = value
            && v != 0.0
        {
            return Err(OpenAiError::invalid(
                field,
                format!(
                    "{field} must be 0 (or absent), got {v}: a penalty would change the target distribution p^alpha"
                ),
            ));
        }
    }
    let n = common.n.unwrap_or(1);
    if n == 0 || n > settings.max_n {
        return Err(OpenAiError::invalid(
            "n",
            format!(
                "n must be between 1 and {} (serve --openai-max-n), got {n}",
                settings.max_n
            ),
        ));
    }
    let mut config = settings.config_for(&common.model, common.power_sampling.as_ref())?;
    if let Some(max) = max_tokens {
        if max == 0 {
            return Err(OpenAiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1: scoring a prompt without generating (loglikelihood requests) is not served; powerfleet only samples".into(),
            ));
        }
        config.max_new_tokens = max;
        config
            .validate()
            .map_err(|e| OpenAiError::invalid("max_tokens", format!("max_tokens: {e}")))?;
    }
    let budget_given = max_tokens.is_some()
        || common
            .power_sampling
            .as_ref()
            .is_some_and(|o| o.contains_key("max_new_tokens"));
    let seed = common.seed.unwrap_or_else(random_seed);
    let include_usage = common
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(user) = &common.user {
        tracing::debug!(user = %quote(user), "openai request");
    }
    let label = common
        .metadata
        .as_ref()
        .and_then(|m| m.get("label"))
        .map(|l| l.parse())
        .transpose()
        .map_err(|e| OpenAiError::invalid("metadata.label", format!("metadata.label: {e}")))?;
    Ok(Asked {
        model: common.model,
        prompts: Vec::new(),
        config,
        n,
        seed,
        stop: common.stop.map(StopInput::into_vec).unwrap_or_default(),
        logprobs: false,
        token_ids: common.return_token_ids.unwrap_or(false),
        stream: common.stream.unwrap_or(false),
        include_usage,
        correlation_id: None,
        prompt_field: "prompt",
        budget_given,
        label,
    })
}

/// A seed for a request that gives none: a different one per request, as OpenAI's servers do.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

fn line(i: usize) -> BatchLine {
    BatchLine {
        id: Some(i.to_string()),
        prompt: None,
        prompt_tokens: None,
        messages: None,
    }
}

pub(super) fn asked_completion(
    settings: &OpenAiSettings,
    common: Common,
    r: CompletionRequest,
) -> Result<Asked, OpenAiError> {
    if r.echo == Some(true) {
        return Err(OpenAiError::invalid(
            "echo",
            "echo is not served: scoring the prompt (loglikelihood requests) needs the prompt's log-probabilities, and powerfleet only samples completions; send echo false or leave it out".into(),
        ));
    }
    if let Some(k) = r.logprobs
        && k > 0
    {
        return Err(OpenAiError::invalid(
            "logprobs",
            format!(
                "logprobs must be 0 (the log-probability of each returned token under the base model), got {k}: the most likely alternatives are not computed"
            ),
        ));
    }
    if let Some(best_of) = r.best_of
        && Some(best_of) != common.n.or(Some(1))
    {
        return Err(OpenAiError::invalid(
            "best_of",
            format!(
                "best_of must equal n (or be absent), got {best_of}: powerfleet returns every chain it runs"
            ),
        ));
    }
    if r.suffix.is_some() {
        return Err(OpenAiError::invalid(
            "suffix",
            "suffix (insertion) is not served; leave it out".into(),
        ));
    }
    if r.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(OpenAiError::invalid(
            "logit_bias",
            "logit_bias must be empty: a bias would change the target distribution p^alpha".into(),
        ));
    }
    let prompts = match r.prompt {
        None => {
            return Err(OpenAiError::invalid(
                "prompt",
                "missing field `prompt`: text, a list of texts, token ids or a list of token-id lists".into(),
            ));
        }
        Some(PromptInput::Text(t)) => vec![t.into()],
        Some(PromptInput::Texts(ts)) => ts.into_iter().map(Into::into).collect(),
        Some(PromptInput::Tokens(ids)) => vec![ids.into()],
        Some(PromptInput::TokenLists(lists)) => lists.into_iter().map(Into::into).collect(),
    };
    if prompts.is_empty() {
        return Err(OpenAiError::invalid(
            "prompt",
            "prompt must hold at least one prompt, got an empty list".into(),
        ));
    }
    let mut asked = asked_common(settings, common, r.max_tokens)?;
    asked.logprobs = r.logprobs.is_some();
    asked.prompts = prompts
        .into_iter()
        .enumerate()
        .map(|(i, p): (usize, PromptOf)| {
            let mut l = line(i);
            match p {
                PromptOf::Text(t) => l.prompt = Some(t),
                PromptOf::Tokens(ids) => l.prompt_tokens = Some(ids),
            }
            l
        })
        .collect();
    Ok(asked)
}

/// One prompt of a completion request.
enum PromptOf {
    Text(String),
    Tokens(Vec<TokenId>),
}

impl From<String> for PromptOf {
    fn from(t: String) -> Self {
        PromptOf::Text(t)
    }
}

impl From<Vec<TokenId>> for PromptOf {
    fn from(ids: Vec<TokenId>) -> Self {
        PromptOf::Tokens(ids)
    }
}

pub(super) fn asked_chat(
    settings: &OpenAiSettings,
    common: Common,
    r: ChatRequest,
) -> Result<Asked, OpenAiError> {
    if let Some(k) = r.top_logprobs
        && k > 0
    {
        return Err(OpenAiError::invalid(
            "top_logprobs",
            format!(
                "top_logprobs must be 0 (or absent), got {k}: the most likely alternatives are not computed; logprobs true gives each returned token's log-probability under the base model"
            ),
        ));
    }
    if r.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(OpenAiError::invalid(
            "logit_bias",
            "logit_bias must be empty: a bias would change the target distribution p^alpha".into(),
        ));
    }
    let Some(input) = r.messages else {
        return Err(OpenAiError::invalid(
            "messages",
            "missing field `messages`: a list of {\"role\", \"content\"}".into(),
        ));
    };
    let mut messages = Vec::with_capacity(input.len());
    for (i, m) in input.into_iter().enumerate() {
        let content = match m.content {
            ContentInput::Text(t) => t,
            ContentInput::Parts(parts) => {
                let mut text = String::new();
                for (j, part) in parts.into_iter().enumerate() {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(OpenAiError::invalid(
                                &format!("messages[{i}].content[{j}]"),
                                format!(
                                    "messages[{i}].content[{j}]: only parts of type text with a text field are served, got type {}",
                                    quote(kind)
                                ),
                            ));
                        }
                    }
                }
                text
            }
        };
        // OpenAI's newer name for the system role.
        let role = if m.role == "developer" {
            "system".to_string()
        } else {
            m.role
        };
        messages.push(ChatMessage { role, content });
    }
    crate::request::check_roles("messages", &messages)?;
    let model = common.model.clone();
    if model.starts_with("toy:") {
        return Err(OpenAiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!(
                "model {}: toy models have no chat template; use POST /v1/completions with a text prompt",
                quote(&model)
            ),
            param: Some("model".into()),
            kind: "invalid_request_error",
            code: None,
        });
    }
    let mut asked = asked_common(settings, common, r.max_completion_tokens.or(r.max_tokens))?;
    asked.logprobs = r.logprobs.unwrap_or(false);
    asked.prompt_field = "messages";
    let mut l = line(0);
    l.messages = Some(messages);
    asked.prompts = vec![l];
    Ok(asked)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::openai::wire::parse_body;

    fn prompts(prompt: Value) -> Result<Vec<BatchLine>, OpenAiError> {
        let body = json!({"model": "toy:pivot", "prompt": prompt}).to_string();
        let (common, request) = parse_body::<CompletionRequest>(body.as_bytes())?;
        asked_completion(&OpenAiSettings::default(), common, request).map(|a| a.prompts)
    }

    #[test]
    fn metadata_label_becomes_the_submissions_label() {
        let asked = |metadata: Value| {
            let body =
                json!({"model": "toy:pivot", "prompt": "A", "metadata": metadata}).to_string();
            let (common, request) = parse_body::<CompletionRequest>(body.as_bytes())?;
            asked_completion(&OpenAiSettings::default(), common, request)
        };
        let a = asked(json!({"label": "sweep 1", "team": "x"})).unwrap();
        assert_eq!(a.label.as_ref().map(|l| l.as_str()), Some("sweep 1"));
        assert_eq!(asked(json!({"team": "x"})).unwrap().label, None);
        let e = asked(json!({"label": "bad\nlabel"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("metadata.label"));
        assert!(
            e.message.starts_with("metadata.label: label must be"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_prompt_is_text_token_ids_or_a_list_of_either_one_problem_each() {
        let text = |i: usize, t: &str| BatchLine {
            prompt: Some(t.into()),
            ..line(i)
        };
        let tokens = |i: usize, t: Vec<TokenId>| BatchLine {
            prompt_tokens: Some(t),
            ..line(i)
        };
        assert_eq!(prompts(json!("a b")).unwrap(), [text(0, "a b")]);
        assert_eq!(
            prompts(json!(["a", "b"])).unwrap(),
            [text(0, "a"), text(1, "b")]
        );
        assert_eq!(prompts(json!([1, 2])).unwrap(), [tokens(0, vec![1, 2])]);
        assert_eq!(prompts(json!([])).unwrap(), [tokens(0, vec![])]);
        assert_eq!(
            prompts(json!([[1], [2, 3]])).unwrap(),
            [tokens(0, vec![1]), tokens(1, vec![2, 3])]
        );
        let e = prompts(json!([["a"]])).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
