//! What a worker needs to run one chain: [`JobSpec`], its [`Prompt`] (text, token ids, chat
//! messages, or a reference to one stored once per submission) and the checks a producer runs
//! before it enqueues it ([`JobSpec::validate`]).

use powerfleet_sampler::{ConfigError, Method, SamplerConfig, TokenId, ValidConfig};
use serde::{Deserialize, Serialize};

use crate::{BatchId, CorrelationId, Grading, JobId, Label, PromptRef};

/// The prompt of a job: text (tokenized once by the worker's model), token ids, or chat messages
/// (formatted through the model's chat template, then tokenized); or, in a job specification
/// or a result in Redis, a reference to one of those stored once per submission
/// ([`Prompt::Stored`]), which the worker resolves when it claims the job and the collector
/// before it stores the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Prompt {
    /// Text, tokenized by the model.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<TokenId>),
    /// A conversation, formatted through the model's chat template with the assistant turn's
    /// opening appended; for backends that have one (llama.cpp and vLLM servers).
    Messages(Vec<ChatMessage>),
    /// A prompt stored once under its content's hash ([`StoredPrompt`](crate::StoredPrompt))
    /// and referenced by every job of the submission that runs it. Specifications written
    /// before references existed carry their prompt inline and still run.
    Stored(PromptRef),
}

impl Prompt {
    /// Bytes of the prompt as it is stored: its text, 4 bytes per token id, or the messages'
    /// roles and contents (for a reference, those of the prompt it names).
    pub fn byte_len(&self) -> usize {
        match self {
            Prompt::Text(t) => t.len(),
            Prompt::Tokens(ids) => ids.len().saturating_mul(4),
            Prompt::Messages(messages) => messages_byte_len(messages),
            Prompt::Stored(r) => usize::try_from(r.bytes).unwrap_or(usize::MAX),
        }
    }

    /// The reference, when this is one.
    pub fn stored(&self) -> Option<&PromptRef> {
        match self {
            Prompt::Stored(r) => Some(r),
            _ => None,
        }
    }
}

/// Bytes of chat messages: their roles and contents.
pub fn messages_byte_len(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum()
}

/// One message of a chat prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message's text.
    pub content: String,
}

/// The roles a chat message may have.
pub const CHAT_ROLES: &[&str] = &["system", "user", "assistant"];

/// Everything a worker needs to run one chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's id.
    pub job_id: JobId,
    /// The correlation id it belongs to.
    pub correlation_id: CorrelationId,
    /// The batch it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    /// The problem within its batch, if any (a dataset row id or line number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_id: Option<String>,
    /// Model reference, resolved by the worker (`toy:NAME`, `toy:PATH`, or a registered name).
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// Sampler configuration (validated at submission and again by the worker).
    pub config: SamplerConfig,
    /// RNG seed of the chain.
    pub seed: u64,
    /// RNG stream of the chain (the chain's index within a `--chains N` submission).
    #[serde(default)]
    pub stream: u64,
    /// Submission time, milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    /// When the backend cannot run MCMC (a hosted chat API), run one sample at the proposal
    /// temperature instead of failing; the result records it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback_single_sample: bool,
    /// Format the text prompt through the backend's chat template (as one user message) before
    /// tokenizing it; for backends that have one (llama.cpp and vLLM servers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chat: bool,
    /// For a graded job (a dataset problem): the problem's reference answer and how to grade a
    /// completion.
    #[serde(rename = "bench", default, skip_serializing_if = "Option::is_none")]
    pub grading: Option<Grading>,
    /// Stop strings: once the chain has finished, its text is cut at the first match of any
    /// of them ([`StopHit`](crate::StopHit) in the result). Applied after sampling, so outside
    /// the p^α target: the tokens the chain sampled are kept whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The submission's label, copied into the job's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
}

impl JobSpec {
    /// A job of `model` sampling from `prompt` with `config`: fresh job and correlation ids, no
    /// batch, problem, grading, stop strings or label, seed 0 and stream 0, submitted at time 0,
    /// no fallback and no chat template. Set the other fields with struct update syntax.
    pub fn new(model: impl Into<String>, prompt: Prompt, config: SamplerConfig) -> JobSpec {
        JobSpec {
            job_id: JobId::new(),
            correlation_id: CorrelationId::generate(),
            batch_id: None,
            problem_id: None,
            model: model.into(),
            prompt,
            config,
            seed: 0,
            stream: 0,
            submitted_at_ms: 0,
            fallback_single_sample: false,
            chat: false,
            grading: None,
            stop: Vec::new(),
            label: None,
        }
    }

    /// Checks the parts a producer can check without the model.
    pub fn validate(&self) -> Result<ValidConfig, SpecError> {
        if self.model.trim().is_empty() {
            return Err(SpecError::NoModel);
        }
        Ok(self.config.validate()?)
    }

    /// The method of its chain.
    pub fn method(&self) -> Method {
        self.config.method
    }
}

/// Why [`JobSpec::validate`] refuses a job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The model reference is empty.
    #[error("model must name a model reference such as toy:pivot, got an empty string")]
    NoModel,
    /// The sampler configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Grader, ReferenceAnswer};

    #[test]
    fn spec_round_trips_through_json_and_rejects_unknown_fields() {
        let spec = JobSpec {
            job_id: JobId::new(),
            correlation_id: "c1".parse().unwrap(),
            batch_id: Some(BatchId::new()),
            problem_id: Some("p7".into()),
            model: "toy:pivot".into(),
            prompt: Prompt::Tokens(vec![0, 1]),
            config: SamplerConfig::new(Method::Power),
            seed: 3,
            stream: 2,
            submitted_at_ms: 1,
            fallback_single_sample: false,
            stop: Vec::new(),
            chat: true,
            grading: Some(Grading {
                template: "multiple-choice".into(),
                grader: Grader::Choice,
                reference: ReferenceAnswer::Choice {
                    choices: vec!["x".into(), "y".into()],
                    correct: 1,
                    permutation: vec![1, 0],
                },
                price_per_mtok: Some(0.5),
                reasoning_markers: None,
            }),
            label: None,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
        // The wire names: the grading travels as `bench`, its answer as `reference`.
        assert!(
            json.contains(r#""bench":{"template":"multiple-choice""#),
            "{json}"
        );
        assert!(json.contains(r#""reference":{"choice":{"#), "{json}");
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["sneaky"] = 1.into();
        assert!(serde_json::from_str::<JobSpec>(&v.to_string()).is_err());
        v.as_object_mut().unwrap().remove("sneaky");
        v["correlation_id"] = "bad id".into();
        let err = serde_json::from_str::<JobSpec>(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("correlation id must be"), "{err}");
    }
}
