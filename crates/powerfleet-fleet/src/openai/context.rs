//! A request's prompts and token budget against the model's context, checked before any job
//! exists.

use super::Asked;
use super::OpenAiError;
use super::errors::context_length_exceeded;
use crate::producer::BatchLine;

/// Per-message tokens a chat template may add around a message's text (role markers and
/// separators), and tokens it may add to a whole conversation (a default system prompt, the
/// assistant's opening), for the bound on a chat prompt's tokens.
const CHAT_TOKENS_PER_MESSAGE: usize = 8;
const CHAT_TOKENS_PER_CONVERSATION: usize = 64;
/// Tokens a tokenizer may add to a text beyond one per byte: BOS, EOS and a leading space marker.
const TEXT_SPECIAL_TOKENS: usize = 3;

/// Bounds on the tokens of one prompt, before the model's tokenizer has seen it: token ids
/// exactly; a text at least none and at most one per byte (each token of a text covers at
/// least a byte) plus [`TEXT_SPECIAL_TOKENS`]; chat messages as their texts plus what a
/// template may add.
fn prompt_token_bounds(line: &BatchLine) -> (usize, usize) {
    if let Some(ids) = &line.prompt_tokens {
        return (ids.len(), ids.len());
    }
    if let Some(messages) = &line.messages {
        let text: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len() + CHAT_TOKENS_PER_MESSAGE)
            .sum();
        return (0, text + CHAT_TOKENS_PER_CONVERSATION);
    }
    let text = line.prompt.as_ref().map_or(0, String::len);
    (0, text + TEXT_SPECIAL_TOKENS)
}

/// Checks the request against the model's context of `context` tokens (prompt and completion
/// together, as the live workers' probes of its servers learned it), before any job exists.
/// A prompt and budget certain not to fit get 400 `context_length_exceeded`; without a budget
/// from the request, the budget becomes what fits beside the longest prompt's bound (capped
/// by the default). What only the tokenizer can tell is left to the worker, which fails such
/// a job at once, unretried, and the answer is the same 400.
pub(super) fn fit_context(asked: &mut Asked, context: u32) -> Result<(), OpenAiError> {
    let (least, most) = asked
        .prompts
        .iter()
        .map(prompt_token_bounds)
        .fold((0, 0), |(l, m), (pl, pm)| (l.max(pl), m.max(pm)));
    let budget = asked.config.max_new_tokens;
    let room = (context as usize).saturating_sub(least);
    if room == 0 || (asked.budget_given && budget as usize > room) {
        let field = if asked.budget_given && least < context as usize {
            "max_tokens"
        } else {
            asked.prompt_field
        };
        return Err(context_length_exceeded(
            field,
            format!(
                "the model's context holds {context} tokens of prompt and completion together, but the prompt has {least} tokens{}; shorten the prompt or lower max_tokens",
                if asked.budget_given {
                    format!(" and max_tokens asks for {budget} more")
                } else {
                    String::new()
                }
            ),
        ));
    }
    if !asked.budget_given {
        let fits = (context as usize).saturating_sub(most).max(1);
        asked.config.max_new_tokens = budget.min(u32::try_from(fits).unwrap_or(u32::MAX));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use powerfleet_sampler::{Method, SamplerConfig};
    use serde_json::{Value, json};

    use super::*;
    use crate::openai::OpenAiSettings;
    use crate::openai::translate::asked_completion;
    use crate::openai::wire::{CompletionRequest, parse_body};

    fn asked(body: Value) -> Asked {
        let body = body.to_string();
        let (common, request) = parse_body::<CompletionRequest>(body.as_bytes()).unwrap();
        asked_completion(&OpenAiSettings::default(), common, request).unwrap()
    }

    #[test]
    fn a_known_context_refuses_what_cannot_fit_and_fits_a_budget_left_out() {
        let default = SamplerConfig::new(Method::Power).max_new_tokens;
        // Without max_tokens: what fits beside the prompt's bound, capped by the default.
        let mut a = asked(json!({"model": "m", "prompt": vec![1u32; 10]}));
        fit_context(&mut a, 20).unwrap();
        assert_eq!(a.config.max_new_tokens, 10);
        let mut a = asked(json!({"model": "m", "prompt": ["hello", "hi"]}));
        fit_context(&mut a, 255).unwrap();
        assert_eq!(
            a.config.max_new_tokens,
            255 - 5 - 3,
            "the longest prompt's bound"
        );
        let mut a = asked(json!({"model": "m", "prompt": "hello"}));
        fit_context(&mut a, 1 << 20).unwrap();
        assert_eq!(a.config.max_new_tokens, default);
        // A budget the request sets is kept when it may fit: only the tokenizer can tell.
        let mut a = asked(json!({"model": "m", "prompt": "a ".repeat(200), "max_tokens": 100}));
        fit_context(&mut a, 255).unwrap();
        assert_eq!(a.config.max_new_tokens, 100);
        // Certain not to fit: 400 context_length_exceeded naming the field at fault.
        for (body, param) in [
            (
                json!({"model": "m", "prompt": "hi", "max_tokens": 300}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "prompt": vec![1u32; 10], "power_sampling": {"max_new_tokens": 16}}),
                "max_tokens",
            ),
            (json!({"model": "m", "prompt": vec![1u32; 20]}), "prompt"),
        ] {
            let mut a = asked(body.clone());
            let e = fit_context(&mut a, 20).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.code, Some("context_length_exceeded"), "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            assert!(e.message.contains("holds 20 tokens"), "{}", e.message);
        }
    }
}
