//! The request bodies of the OpenAI-compatible endpoints as they arrive, and how a body is
//! parsed: straight into the typed fields, refusing a field neither of its parts declares.

use std::collections::BTreeMap;

use powerfleet_sampler::TokenId;
use serde::Deserialize;
use serde_json::Value;

use super::OpenAiError;
use crate::request::quote;

/// `prompt` of a completion request: text, token ids, or a list of either (a batch of prompts).
/// `[]` is one empty token-id prompt (the toy models' usual prompt).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum PromptInput {
    Text(String),
    Tokens(Vec<TokenId>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<TokenId>>),
}

/// `stop`: one string or a list.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum StopInput {
    One(String),
    Many(Vec<String>),
}

impl StopInput {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            StopInput::One(s) => vec![s],
            StopInput::Many(v) => v,
        }
    }
}

/// The fields both request kinds share.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub(super) struct Common {
    pub(super) model: String,
    #[serde(default)]
    pub(super) n: Option<u32>,
    #[serde(default)]
    pub(super) seed: Option<u64>,
    #[serde(default)]
    pub(super) stop: Option<StopInput>,
    #[serde(default)]
    pub(super) temperature: Option<f64>,
    #[serde(default)]
    pub(super) top_p: Option<f64>,
    #[serde(default)]
    pub(super) presence_penalty: Option<f64>,
    #[serde(default)]
    pub(super) frequency_penalty: Option<f64>,
    #[serde(default)]
    pub(super) stream: Option<bool>,
    #[serde(default)]
    pub(super) stream_options: Option<Value>,
    #[serde(default)]
    pub(super) user: Option<String>,
    #[serde(default)]
    pub(super) power_sampling: Option<serde_json::Map<String, Value>>,
    /// vLLM's name: also return each choice's token ids.
    #[serde(default)]
    pub(super) return_token_ids: Option<bool>,
    /// OpenAI's string key-value pairs about the request; its `label` becomes the submission's
    /// label, recorded with every result. Other keys are ignored.
    #[serde(default)]
    pub(super) metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// The body of `POST /v1/completions` (unknown fields are refused by [`parse_body`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(super) struct CompletionRequest {
    pub(super) prompt: Option<PromptInput>,
    #[serde(default)]
    pub(super) max_tokens: Option<u32>,
    #[serde(default)]
    pub(super) logprobs: Option<u32>,
    #[serde(default)]
    pub(super) echo: Option<bool>,
    #[serde(default)]
    pub(super) best_of: Option<u32>,
    #[serde(default)]
    pub(super) suffix: Option<String>,
    #[serde(default)]
    pub(super) logit_bias: Option<serde_json::Map<String, Value>>,
}

/// One message of a chat request: `content` as text or as a list of text parts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(super) struct MessageInput {
    pub(super) role: String,
    pub(super) content: ContentInput,
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum ContentInput {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(super) struct ContentPart {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) text: Option<String>,
}

/// The body of `POST /v1/chat/completions` (unknown fields are refused by [`parse_body`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(super) struct ChatRequest {
    pub(super) messages: Option<Vec<MessageInput>>,
    #[serde(default)]
    pub(super) max_tokens: Option<u32>,
    #[serde(default)]
    pub(super) max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub(super) logprobs: Option<bool>,
    #[serde(default)]
    pub(super) top_logprobs: Option<u32>,
    #[serde(default)]
    pub(super) logit_bias: Option<serde_json::Map<String, Value>>,
}

/// Fields that would bring code to run or a dataset to grade (a HumanEval record's `test` and
/// `entry_point`, a graded run's `bench`, `records`, `dataset`, `grader`): refused with the
/// code policy's reason rather than as merely unknown.
const CODE_FIELDS: &[&str] = &[
    "test",
    "entry_point",
    "bench",
    "records",
    "dataset",
    "grader",
];

/// Why [`CODE_FIELDS`] are refused, and what to do instead.
const CODE_POLICY: &str = "this endpoint samples completions and grades nothing, and the API runs no code a request brings (test code, or records or a dataset to grade): graders that run completions (humaneval) grade only datasets the operator registered. Ask the operator to register the dataset (serve --dataset NAME=PATH) and submit a graded run with POST /v1/jobs and \"bench\": {\"dataset\": NAME} (GET /v1/datasets lists them), or run it from the CLI (powerfleet submit --bench FILE)";

/// Parses a body into `T`, naming the field at fault; a field that is neither [`Common`]'s nor
/// `T`'s ([`struct_fields`]) is refused rather than ignored, since it may change what is sampled. The body is
/// read straight into the typed fields, never into a JSON tree (which would take many times
/// the body's size for a list of token ids).
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<(Common, T), OpenAiError> {
    let (common, fields) = (struct_fields::<Common>(), struct_fields::<T>());
    use serde::de::IgnoredAny;
    serde_json::from_slice::<IgnoredAny>(body).map_err(|e| {
        OpenAiError::invalid(
            "body",
            crate::api::shorten_inputs(&format!("request body is not valid JSON: {e}")),
        )
    })?;
    let Ok(object) = serde_json::from_slice::<BTreeMap<String, IgnoredAny>>(body) else {
        return Err(OpenAiError::invalid(
            "body",
            "request body must be a JSON object".into(),
        ));
    };
    if let Some(code) = object.keys().find(|k| CODE_FIELDS.contains(&k.as_str())) {
        return Err(OpenAiError::invalid(
            code,
            format!("field {}: {CODE_POLICY}", quote(code)),
        ));
    }
    if let Some(unknown) = object
        .keys()
        .find(|k| !common.contains(&k.as_str()) && !fields.contains(&k.as_str()))
    {
        let mut known: Vec<&str> = common.iter().chain(fields).copied().collect();
        known.sort_unstable();
        return Err(OpenAiError::invalid(
            unknown,
            format!(
                "unknown field {}: this server does not serve it (refused rather than ignored, since it could change what is sampled); the fields are {}",
                quote(unknown),
                known.join(", ")
            ),
        ));
    }
    Ok((deserialize(body)?, deserialize(body)?))
}

/// `T` from the fields of the JSON object `body` (fields of the other part are skipped), naming
/// the field at fault.
fn deserialize<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, OpenAiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            format!("request body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        };
        OpenAiError::invalid(&path, crate::api::shorten_inputs(&message))
    })
}

/// The field names of the struct `T` as its derived `Deserialize` declares them (serde passes
/// them to `deserialize_struct`), so the fields a body may hold come from the wire types
/// themselves.
fn struct_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("only a struct's field names are read")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Stop {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields
        .0
        .expect("a request body type is a struct with named fields")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_a_body_may_hold_are_the_wire_types_fields() {
        let sorted = |f: &'static [&'static str]| {
            let mut v = f.to_vec();
            v.sort_unstable();
            v
        };
        assert_eq!(
            sorted(struct_fields::<Common>()),
            [
                "frequency_penalty",
                "metadata",
                "model",
                "n",
                "power_sampling",
                "presence_penalty",
                "return_token_ids",
                "seed",
                "stop",
                "stream",
                "stream_options",
                "temperature",
                "top_p",
                "user"
            ]
        );
        assert_eq!(
            sorted(struct_fields::<CompletionRequest>()),
            [
                "best_of",
                "echo",
                "logit_bias",
                "logprobs",
                "max_tokens",
                "prompt",
                "suffix"
            ]
        );
        assert_eq!(
            sorted(struct_fields::<ChatRequest>()),
            [
                "logit_bias",
                "logprobs",
                "max_completion_tokens",
                "max_tokens",
                "messages",
                "top_logprobs"
            ]
        );
        let unknown =
            parse_body::<ChatRequest>(br#"{"model": "m", "messages": [], "prompt": "x"}"#)
                .unwrap_err();
        assert!(
            format!("{unknown:?}").contains("unknown field"),
            "{unknown:?}"
        );
    }

    #[test]
    fn test_code_and_datasets_are_refused_for_the_code_policy() {
        for field in CODE_FIELDS {
            let body = format!(r#"{{"model": "m", "prompt": "def f():", "{field}": "x"}}"#);
            let e = parse_body::<CompletionRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), Some(*field));
            for needed in [
                "runs no code a request brings",
                "serve --dataset NAME=PATH",
                "POST /v1/jobs",
            ] {
                assert!(e.message.contains(needed), "{needed} not in {}", e.message);
            }
            assert!(!e.message.contains("unknown field"), "{}", e.message);
        }
    }
}
