//! The answer in OpenAI's shape: a choice per finished job, `usage`, and the `powerfleet`
//! extension, as JSON or as a server-sent event stream.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use powerfleet_jobs::{CorrelationId, JobId, JobResult, now_ms};
use powerfleet_sampler::TokenId;
use serde_json::{Value, json};

use super::{Asked, CORRELATION_HEADER};

/// What a completion holds of one finished job to answer with it: the returned text and
/// tokens, and the counts of its usage.
pub(super) struct Choice {
    job_id: JobId,
    text: String,
    finish_reason: &'static str,
    /// The returned tokens, kept only when the request asks for them or their log p.
    tokens: Vec<TokenId>,
    /// Their log p, kept only when the request asks for log-probabilities.
    token_log_p: Vec<f64>,
    /// How many tokens the choice returns.
    completion_tokens: u64,
    prompt_tokens: u64,
    generated_tokens: u64,
}

impl Choice {
    /// The choice of a completed job's result, keeping what `asked` needs.
    pub(super) fn of(mut r: JobResult, asked: &Asked) -> Choice {
        let kept = r.stop.as_ref().map_or(r.tokens.len(), |hit| hit.tokens);
        let kept = kept.min(r.tokens.len());
        let finish_reason = if r.stop.is_some() || r.ends_with_eos {
            "stop"
        } else {
            "length"
        };
        let text = r.answer_text().unwrap_or_default().to_string();
        let mut tokens = Vec::new();
        let mut token_log_p = Vec::new();
        if asked.token_ids || asked.logprobs {
            r.tokens.truncate(kept);
            tokens = std::mem::take(&mut r.tokens);
        }
        if asked.logprobs {
            r.token_log_p.truncate(kept);
            token_log_p = std::mem::take(&mut r.token_log_p);
        }
        Choice {
            job_id: r.job_id,
            text,
            finish_reason,
            tokens,
            token_log_p,
            completion_tokens: kept as u64,
            prompt_tokens: r.prompt_tokens.unwrap_or(0),
            generated_tokens: r.stats.tokens_generated,
        }
    }
}

/// The finished jobs of a completion, in choice order.
pub(super) struct Finished {
    pub(super) correlation_id: CorrelationId,
    pub(super) choices: Vec<Choice>,
}

/// `usage`: prompt tokens once per prompt, the returned completion tokens, and (an extension)
/// the tokens the sampler really generated, its cost.
fn usage(f: &Finished, n: u32) -> Value {
    let prompt: u64 = f
        .choices
        .iter()
        .step_by(n.max(1) as usize)
        .map(|c| c.prompt_tokens)
        .sum();
    let completion: u64 = f.choices.iter().map(|c| c.completion_tokens).sum();
    let generated: u64 = f.choices.iter().map(|c| c.generated_tokens).sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "generated_tokens": generated,
    })
}

/// Extension fields every response carries: where the jobs can be looked up and what ran.
fn powerfleet_of(f: &Finished, asked: &Asked) -> Value {
    json!({
        "correlation_id": f.correlation_id,
        "job_ids": f.choices.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        "method": asked.config.method,
        "config": asked.config,
        "seed": asked.seed,
        "stop_applied_after_sampling": !asked.stop.is_empty(),
    })
}

fn token_strings(tokens: &[TokenId]) -> Vec<String> {
    tokens.iter().map(|t| format!("token_id:{t}")).collect()
}

fn completion_body(f: &Finished, asked: &Asked, created: u64) -> Value {
    let choices: Vec<Value> = f
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut choice = json!({
                "index": i,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": Value::Null,
            });
            if asked.logprobs {
                choice["logprobs"] = json!({
                    "tokens": token_strings(&c.tokens),
                    "token_logprobs": c.token_log_p,
                    "top_logprobs": Value::Null,
                    "text_offset": Value::Null,
                });
            }
            if asked.token_ids {
                choice["token_ids"] = json!(c.tokens);
            }
            choice
        })
        .collect();
    json!({
        "id": format!("cmpl-{}", f.correlation_id),
        "object": "text_completion",
        "created": created,
        "model": asked.model,
        "choices": choices,
        "usage": usage(f, asked.n),
        "powerfleet": powerfleet_of(f, asked),
    })
}

fn chat_logprobs(c: &Choice) -> Value {
    let content: Vec<Value> = c
        .tokens
        .iter()
        .zip(&c.token_log_p)
        .map(|(t, lp)| {
            json!({"token": format!("token_id:{t}"), "logprob": lp, "bytes": Value::Null, "top_logprobs": []})
        })
        .collect();
    json!({ "content": content })
}

fn chat_body(f: &Finished, asked: &Asked, created: u64, chunk: bool) -> Value {
    let choices: Vec<Value> = f
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let message = json!({"role": "assistant", "content": c.text});
            let mut choice = json!({
                "index": i,
                "finish_reason": c.finish_reason,
                "logprobs": if asked.logprobs { chat_logprobs(c) } else { Value::Null },
            });
            choice[if chunk { "delta" } else { "message" }] = message;
            if asked.token_ids {
                choice["token_ids"] = json!(c.tokens);
            }
            choice
        })
        .collect();
    let mut body = json!({
        "id": format!("chatcmpl-{}", f.correlation_id),
        "object": if chunk { "chat.completion.chunk" } else { "chat.completion" },
        "created": created,
        "model": asked.model,
        "choices": choices,
        "powerfleet": powerfleet_of(f, asked),
    });
    if !chunk {
        body["usage"] = usage(f, asked.n);
    }
    body
}

/// The answer: JSON, or with `stream` a server-sent event stream that sends the whole answer as
/// one chunk (then a usage chunk when `stream_options.include_usage`), then `[DONE]`.
pub(super) fn respond(f: &Finished, asked: &Asked, chat: bool) -> Response {
    let created = now_ms() / 1000;
    let mut response = if asked.stream {
        let mut events = String::new();
        let mut push = |v: &Value| {
            events.push_str("data: ");
            events.push_str(&v.to_string());
            events.push_str("\n\n");
        };
        let mut first = if chat {
            chat_body(f, asked, created, true)
        } else {
            completion_body(f, asked, created)
        };
        if let Some(o) = first.as_object_mut() {
            o.remove("usage");
        }
        push(&first);
        if asked.include_usage {
            let mut last = first.clone();
            last["choices"] = json!([]);
            last["usage"] = usage(f, asked.n);
            push(&last);
        }
        events.push_str("data: [DONE]\n\n");
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/event-stream")],
            events,
        )
            .into_response()
    } else if chat {
        Json(chat_body(f, asked, created, false)).into_response()
    } else {
        Json(completion_body(f, asked, created)).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(f.correlation_id.as_str()) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}
