//! A completed sample as chat-format training data: [`SftRecord`], which
//! [`JobResult::sft_record`] makes for `powerfleet results --format sft`.

use powerfleet_sampler::{Alpha, Method};
use serde::{Deserialize, Serialize};

use crate::{ChatMessage, JobId, JobResult, JobStatus, Prompt};

/// A completed sample as chat-format training data (`powerfleet results --format sft`): the
/// prompt as a user message (or the job's chat messages) and the completion as the assistant's
/// message, with where it came from and its grade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftRecord {
    /// The conversation: the prompt's messages, then the completion as `assistant`.
    pub messages: Vec<ChatMessage>,
    /// The sampling method.
    pub method: Method,
    /// The α the chain targeted, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<Alpha>,
    /// The problem within its batch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_id: Option<String>,
    /// The job.
    pub job_id: JobId,
    /// The chain's seed.
    pub seed: u64,
    /// The grader's verdict, for a graded job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    /// The answer the grader read, for a graded job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<String>,
}

impl JobResult {
    /// This sample as an [`SftRecord`]: `None` unless it completed with text and its prompt is
    /// kept as text or messages (a token-id prompt has no text to train on).
    pub fn sft_record(&self) -> Option<SftRecord> {
        if self.status != JobStatus::Completed {
            return None;
        }
        let completion = self.answer_text()?;
        let mut messages = match self.prompt.as_ref()? {
            Prompt::Text(text) => vec![ChatMessage {
                role: "user".to_string(),
                content: text.clone(),
            }],
            Prompt::Messages(messages) => messages.clone(),
            // A token-id prompt has no text; a reference is resolved before results are stored.
            Prompt::Tokens(_) | Prompt::Stored(_) => return None,
        };
        messages.push(ChatMessage {
            role: "assistant".to_string(),
            content: completion.to_string(),
        });
        Some(SftRecord {
            messages,
            method: self.method,
            // A standard sample is drawn at temperature 1 whatever the job's α said.
            alpha: self.alpha.filter(|_| self.method != Method::Standard),
            problem_id: self.problem_id.clone(),
            job_id: self.job_id,
            seed: self.seed,
            correct: self.grade.as_ref().map(|g| g.correct),
            extracted: self.grade.as_ref().and_then(|g| g.extracted.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GradeRecord, JobSpec};

    #[test]
    fn completed_samples_become_chat_records() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"job_id":"01890f4e-6c5e-7000-8000-000000000001","correlation_id":"c","model":"toy:tiny","prompt":{"text":"2+2?"},"config":{"method":"power","alpha":4.0},"seed":7,"submitted_at_ms":1}"#,
        )
        .unwrap();
        let mut r = JobResult::for_spec(&spec, JobStatus::Completed, 1, None);
        r.text = Some("4".into());
        assert_eq!(r.sft_record(), None, "no prompt kept");
        r.prompt = Some(spec.prompt.clone());
        r.alpha = spec.config.validate().ok().map(|c| c.alpha());
        r.grade = Some(GradeRecord {
            grader: "math".into(),
            extracted: Some("4".into()),
            answer_key: Some("4".into()),
            correct: true,
        });
        let record = r.sft_record().unwrap();
        let roles: Vec<(&str, &str)> = record
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(roles, [("user", "2+2?"), ("assistant", "4")]);
        assert_eq!(
            (record.method, record.correct, record.seed),
            (Method::Power, Some(true), 7)
        );
        assert_eq!(record.alpha.map(|a| a.get()), Some(4.0));
        r.method = Method::Standard;
        assert_eq!(
            r.sft_record().unwrap().alpha,
            None,
            "standard samples target p itself"
        );
        r.method = Method::Power;
        r.prompt = Some(Prompt::Messages(vec![ChatMessage {
            role: "system".into(),
            content: "be brief".into(),
        }]));
        assert_eq!(r.sft_record().unwrap().messages.len(), 2);
        r.prompt = Some(Prompt::Tokens(vec![1, 2]));
        assert_eq!(r.sft_record(), None, "token prompts have no text");
        r.prompt = Some(spec.prompt.clone());
        r.status = JobStatus::Failed;
        assert_eq!(r.sft_record(), None);
    }
}
