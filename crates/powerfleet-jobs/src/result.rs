//! A finished job: [`JobResult`], what a worker publishes and the collector stores, with where a
//! stop string cut its text ([`StopHit`]) and why it failed where a front-end answers by cause
//! ([`ErrorCode`]).
//!
//! [`JobResult`] is the one format of a finished job: the Redis stream entry and the stored
//! `result_json` are its JSON, and the SQL row, the API bodies and the exports are derived from
//! it, each in one place that its documentation names.

use powerfleet_sampler::{Alpha, ChainStats, Method, SamplerConfig, TokenId};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    BatchId, CorrelationId, GradeRecord, Grading, JobId, JobSpec, JobStatus, Label, Pin, Prompt,
    now_ms, redact_http_url,
};

/// The version of powerfleet that wrote a result (the workspace's version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A finished job: what the worker publishes and the collector stores.
///
/// The one format of a finished job. Its JSON is the `result` field of a results-stream entry
/// (written by `powerfleet-queue`'s `Queue::finish`, for a cancelled job by `Queue::cancel`, for
/// a dead one by the `Queue::dead_letter_*` functions; decoded by its `ResultDelivery`) and the
/// `result_json` column the store keeps it in whole. Everything else that shows a result is
/// derived from it, each in one place:
///
/// - the SQL row: `powerfleet-store`'s `record.rs` (`ResultRow::new`) copies fields into the
///   `job_results` columns that queries, indexes and the batch aggregates use. Every read of the
///   store (`Store::job`, `Store::jobs_by_batch`, ...) decodes `result_json`, never the columns;
/// - the API bodies: `powerfleet-fleet`'s `status.rs` embeds it unchanged as a `JobView`'s
///   `result` (`GET /v1/jobs/{id}`, the batch and correlation pages, `powerfleet status`); the
///   OpenAI-compatible endpoint answers with a choice made from it (`openai/respond.rs`,
///   `Choice::of`);
/// - the exports: `powerfleet results --format jsonl` writes it unchanged; `--format csv` is
///   `powerfleet-store`'s `csv.rs` (`write_csv`, one column per `CSV_COLUMNS` entry);
///   `--format sft` is [`JobResult::sft_record`] (`sft.rs`); `powerfleet export`'s
///   `samples.jsonl` is the binary's `export.rs` (`Sample::of`).
///
/// A result outlives a deploy: a study written last month is read by this month's report. A new
/// field comes with a default that results written before it decode to, and
/// `tests/result_fixtures.rs` keeps results as earlier versions wrote them. A change that a
/// reader of the older JSON would misread takes a new [`ResultFormat`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The format the result is written in: [`ResultFormat::CURRENT`] for every result this
    /// version writes; `None` for results written before results named their format, which
    /// are format 1 all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ResultFormat>,
    /// The job's id.
    pub job_id: JobId,
    /// Its correlation id.
    pub correlation_id: CorrelationId,
    /// Its batch, if any.
    pub batch_id: Option<BatchId>,
    /// Its problem within the batch, if any.
    pub problem_id: Option<String>,
    /// Model reference as submitted.
    pub model: String,
    /// Sampling method.
    pub method: Method,
    /// Chain seed.
    pub seed: u64,
    /// Chain stream.
    pub stream: u64,
    /// Final status: completed, failed, cancelled or dead.
    pub status: JobStatus,
    /// Completion token ids (empty unless completed).
    pub tokens: Vec<TokenId>,
    /// Completion text, when the model can detokenize.
    pub text: Option<String>,
    /// log p of the completion under the base model.
    pub log_p: Option<f64>,
    /// Whether the completion ends with EOS.
    pub ends_with_eos: bool,
    /// Chain statistics (as far as the chain got).
    pub stats: ChainStats,
    /// How many times a worker claimed the job.
    pub attempts: u32,
    /// Why it failed, was cancelled or died.
    pub error: Option<String>,
    /// Submission time, ms since the Unix epoch.
    pub submitted_at_ms: u64,
    /// First claim by a worker, ms since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// When the result was published, ms since the Unix epoch.
    pub finished_at_ms: u64,
    /// Where the log-probabilities came from and how exact they are (backend and mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exactness: Option<crate::Exactness>,
    /// Set when the job ran as a single sample instead of its MCMC method, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// What the chain's numbers depended on besides its configuration: the backend it ran with
    /// (server kind, served model, K, terminal tokens, whether the server answered
    /// reproducibly; for a toy model its name). `None` for jobs that never reached their
    /// backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    /// Why a completed job has no text (the server could not detokenize it). Such a result is
    /// stored ungraded, never graded as wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_error: Option<String>,
    /// For a graded job: its reference and grader, as submitted.
    #[serde(rename = "bench", default, skip_serializing_if = "Option::is_none")]
    pub grading: Option<Grading>,
    /// For a graded job: the collector's verdict on the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grade: Option<GradeRecord>,
    /// For a graded job that could not be graded (the grading sandbox could not run it, a
    /// grader that does not fit its reference): why. Such a result has no `grade`; it is a
    /// grading failure, never a wrong answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grade_error: Option<String>,
    /// Per completion token, log p under the base model (empty unless completed; results
    /// written before this field have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_log_p: Vec<f64>,
    /// Tokens of the prompt as the model saw it (after tokenizing or chat formatting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Where a stop string of the job cut the completion's text, if one matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopHit>,
    /// The job's prompt (text, token ids or chat messages), kept with a completed result so a
    /// sample can be used as data (`powerfleet results --format sft`); `None` for other results
    /// and those written before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    /// The α the chain targeted, kept with a completed result beside its prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<Alpha>,
    /// For a failed job, the cause in a form a program branches on, where the worker knows it
    /// (the message is in `error`); `None` for other failures and results written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// The job's sampler configuration as validated, every default resolved and filled in
    /// (`ValidConfig::manifest`); `None` for a job whose configuration did not validate and for
    /// results written before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SamplerConfig>,
    /// The submission's label, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// The powerfleet version that wrote the result; `None` for results written before this
    /// field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The format of a [`JobResult`]'s JSON, its `format` field, as a
/// [`Checkpoint`](powerfleet_sampler::Checkpoint)'s is its `version`: a change that a reader of
/// the older format would misread (a field renamed, or one whose meaning changes) takes a new
/// variant, and a reader that does not know a result's format refuses it rather than misread it.
/// A new field with a default that older results decode to is no new format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ResultFormat {
    /// Format 1: every result written so far, those without a `format` field included.
    #[serde(rename = "1")]
    V1,
}

impl ResultFormat {
    /// The format this version writes.
    pub const CURRENT: ResultFormat = ResultFormat::V1;

    /// Every format this version reads.
    pub const ALL: [ResultFormat; 1] = [ResultFormat::V1];

    /// The format's name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultFormat::V1 => "1",
        }
    }
}

impl<'de> Deserialize<'de> for ResultFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ResultFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = ResultFormat::ALL.iter().map(|f| f.as_str()).collect();
                serde::de::Error::custom(format!(
                    "result format must be one of {} (the formats this powerfleet reads), got {name:?}: a newer powerfleet wrote it, read it with that version",
                    known.join(", ")
                ))
            })
    }
}

/// Why a job failed, where a front-end answers differently by cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The prompt plus the job's `max_new_tokens` does not fit the server's context: the
    /// request's own fault, which no retry mends.
    ContextLengthExceeded,
    /// The model refused the job's own request (a prompt outside its vocabulary, a setting out
    /// of its range), or answered it the same failing way every time: no retry mends it.
    RequestRefused,
}

impl ErrorCode {
    /// The code as serialized (`context_length_exceeded`), OpenAI's name for the same cause.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ContextLengthExceeded => "context_length_exceeded",
            ErrorCode::RequestRefused => "request_refused",
        }
    }
}

/// Where a stop string cut a completion: the text up to (not including) the match is the answer;
/// `tokens` is how many of the sampled tokens it took to produce the match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopHit {
    /// The stop string that matched first.
    pub stop: String,
    /// Byte offset in `text` where the match starts: the answer is `text[..text_bytes]`.
    pub text_bytes: usize,
    /// The fewest leading tokens whose text holds the whole match (all tokens when the
    /// backend could not say).
    pub tokens: usize,
}

impl StopHit {
    /// The first match in `text` of any of `stops` (the earliest start; the longest stop at a
    /// tie), or `None`.
    pub fn find(text: &str, stops: &[String]) -> Option<(String, usize)> {
        stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
            .min_by(|(a, s), (b, t)| a.cmp(b).then(t.len().cmp(&s.len())))
            .map(|(at, s)| (s.clone(), at))
    }
}

impl JobResult {
    /// The answer: the text cut at its stop string, when one matched.
    pub fn answer_text(&self) -> Option<&str> {
        let text = self.text.as_deref()?;
        Some(match &self.stop {
            Some(hit) => text.get(..hit.text_bytes).unwrap_or(text),
            None => text,
        })
    }
}

/// The parts of a job specification a `dead` result needs, read leniently: a specification this
/// version cannot decode in full (a newer producer's option) still yields its job's result.
#[derive(Deserialize)]
struct SpecOutline {
    job_id: JobId,
    correlation_id: CorrelationId,
    #[serde(default)]
    batch_id: Option<BatchId>,
    #[serde(default)]
    problem_id: Option<String>,
    model: String,
    config: ConfigOutline,
    seed: u64,
    #[serde(default)]
    stream: u64,
    submitted_at_ms: u64,
    #[serde(rename = "bench", default)]
    grading: Option<serde_json::Value>,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize)]
struct ConfigOutline {
    method: Method,
}

impl JobResult {
    /// The `dead` result of a job whose specification is `spec_json`: decoded in full when it
    /// can be, else leniently (unknown fields ignored). `None` when even its id, method or seed
    /// cannot be read.
    pub fn dead_from_spec_json(spec_json: &str, attempts: u32, reason: &str) -> Option<JobResult> {
        if let Ok(spec) = serde_json::from_str::<JobSpec>(spec_json) {
            return Some(JobResult::for_spec(
                &spec,
                JobStatus::Dead,
                attempts,
                Some(reason.to_string()),
            ));
        }
        let o: SpecOutline = serde_json::from_str(spec_json).ok()?;
        let spec = JobSpec {
            job_id: o.job_id,
            correlation_id: o.correlation_id,
            batch_id: o.batch_id,
            problem_id: o.problem_id,
            seed: o.seed,
            stream: o.stream,
            submitted_at_ms: o.submitted_at_ms,
            grading: o.grading.and_then(|g| serde_json::from_value(g).ok()),
            label: o.label.and_then(|l| l.parse().ok()),
            ..JobSpec::new(
                o.model,
                Prompt::Tokens(Vec::new()),
                SamplerConfig::new(o.config.method),
            )
        };
        let mut result =
            JobResult::for_spec(&spec, JobStatus::Dead, attempts, Some(reason.to_string()));
        // Only the method was read: the defaults above are not what the job asked for.
        result.config = None;
        Some(result)
    }

    /// A result for `spec` with `status` and no completion yet; callers fill in the rest.
    pub fn for_spec(
        spec: &JobSpec,
        status: JobStatus,
        attempts: u32,
        error: Option<String>,
    ) -> JobResult {
        JobResult {
            format: Some(ResultFormat::CURRENT),
            job_id: spec.job_id,
            correlation_id: spec.correlation_id.clone(),
            batch_id: spec.batch_id,
            problem_id: spec.problem_id.clone(),
            // A result is shown and stored everywhere: a reference's credentials stay in the spec.
            model: redact_http_url(&spec.model),
            method: spec.method(),
            seed: spec.seed,
            stream: spec.stream,
            status,
            tokens: Vec::new(),
            text: None,
            log_p: None,
            ends_with_eos: false,
            stats: ChainStats::default(),
            attempts,
            error,
            submitted_at_ms: spec.submitted_at_ms,
            started_at_ms: None,
            finished_at_ms: now_ms(),
            exactness: None,
            fallback: None,
            pin: None,
            text_error: None,
            grading: spec.grading.clone(),
            grade: None,
            grade_error: None,
            token_log_p: Vec::new(),
            prompt_tokens: None,
            stop: None,
            prompt: None,
            alpha: None,
            error_code: None,
            config: spec.config.validate().ok().map(|c| c.manifest()),
            label: spec.label.clone(),
            version: Some(VERSION.to_string()),
        }
    }

    /// Tokens generated per final token.
    pub fn cost_multiplier(&self) -> Option<f64> {
        (!self.tokens.is_empty())
            .then(|| self.stats.tokens_generated as f64 / self.tokens.len() as f64)
    }

    /// Submission to finish, in milliseconds.
    pub fn latency_ms(&self) -> u64 {
        self.finished_at_ms.saturating_sub(self.submitted_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_LABEL_LEN;

    #[test]
    fn a_result_names_the_format_it_is_written_in() {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "job_id": JobId::new(), "correlation_id": "c", "model": "toy:tiny",
            "prompt": {"tokens": []}, "config": {"method": "standard"}, "seed": 0,
            "submitted_at_ms": 0
        }))
        .unwrap();
        let r = JobResult::for_spec(&spec, JobStatus::Failed, 1, None);
        assert_eq!(r.format, Some(ResultFormat::CURRENT));
        assert_eq!(serde_json::to_value(&r).unwrap()["format"], "1");
    }

    #[test]
    fn labels_are_bounded_printable_text_and_travel_from_spec_to_result() {
        assert!("n_mcmc sweep, pivot — run 2".parse::<Label>().is_ok());
        for bad in [
            "",
            "   ",
            "two\nlines",
            "tab\there",
            &"x".repeat(MAX_LABEL_LEN + 1),
        ] {
            let err = bad.parse::<Label>().unwrap_err().to_string();
            assert!(
                err.starts_with("label must be 1 to 200 printable characters"),
                "{err}"
            );
        }
        // A job specification with a bad label does not decode.
        let spec = JobSpec {
            seed: 1,
            label: Some("sweep".parse().unwrap()),
            ..JobSpec::new(
                "toy:tiny",
                Prompt::Tokens(vec![]),
                SamplerConfig {
                    n_mcmc: 3,
                    ..SamplerConfig::new(Method::Power)
                },
            )
        };
        let mut json = serde_json::to_value(&spec).unwrap();
        json["label"] = "bad\u{7}".into();
        assert!(serde_json::from_value::<JobSpec>(json).is_err());
        // The result carries the label, the validated configuration in full and the version.
        let r = JobResult::for_spec(&spec, JobStatus::Failed, 1, None);
        assert_eq!(r.label, spec.label);
        assert_eq!(r.version.as_deref(), Some(VERSION));
        let config = r.config.unwrap();
        assert_eq!((config.n_mcmc, config.proposal_temp), (3, Some(0.25)));
        // A dead result read leniently from a specification this version cannot decode has
        // its label but no configuration: only the method was read.
        let mut json = serde_json::to_value(&spec).unwrap();
        json["newer_option"] = true.into();
        let dead = JobResult::dead_from_spec_json(&json.to_string(), 3, "gone").unwrap();
        assert_eq!((dead.label, dead.config), (spec.label.clone(), None));
    }

    #[test]
    fn a_dead_result_is_made_even_from_a_specification_with_unknown_fields() {
        let spec = JobSpec {
            correlation_id: "c1".parse().unwrap(),
            batch_id: Some(BatchId::new()),
            problem_id: Some("p3".into()),
            seed: 9,
            stream: 1,
            submitted_at_ms: 5,
            ..JobSpec::new(
                "toy:pivot",
                Prompt::Tokens(vec![0]),
                SamplerConfig::new(Method::LowTemp),
            )
        };
        let json = serde_json::to_string(&spec).unwrap();
        let full = JobResult::dead_from_spec_json(&json, 3, "why").unwrap();
        assert_eq!(
            full,
            JobResult {
                finished_at_ms: full.finished_at_ms,
                ..JobResult::for_spec(&spec, JobStatus::Dead, 3, Some("why".into()))
            }
        );
        let mut newer: serde_json::Value = serde_json::from_str(&json).unwrap();
        newer["new_option"] = 1.into();
        newer["config"]["new_knob"] = 2.into();
        let r = JobResult::dead_from_spec_json(&newer.to_string(), 2, "undecodable").unwrap();
        assert_eq!(
            (
                r.job_id,
                r.batch_id,
                r.problem_id.as_deref(),
                r.method,
                r.seed
            ),
            (spec.job_id, spec.batch_id, Some("p3"), Method::LowTemp, 9)
        );
        assert_eq!((r.status, r.attempts), (JobStatus::Dead, 2));
        assert_eq!(r.error.as_deref(), Some("undecodable"));
        assert!(JobResult::dead_from_spec_json("{\"job_id\": 1}", 1, "x").is_none());
    }

    #[test]
    fn a_result_never_carries_the_credentials_of_its_model_reference() {
        let spec = JobSpec {
            correlation_id: "c1".parse().unwrap(),
            submitted_at_ms: 1,
            ..JobSpec::new(
                "llamacpp+http://user:s3cret-pw@127.0.0.1:8080?k=20",
                Prompt::Tokens(vec![0]),
                SamplerConfig::new(Method::Power),
            )
        };
        let r = JobResult::for_spec(&spec, JobStatus::Failed, 1, None);
        assert_eq!(r.model, "llamacpp+http://user:***@127.0.0.1:8080?k=20");
        let token_only = JobSpec {
            model: "vllm+https://api-token-77@host/v1".into(),
            ..spec.clone()
        };
        let r = JobResult::for_spec(&token_only, JobStatus::Failed, 1, None);
        assert_eq!(r.model, "vllm+https://***@host/v1");
        let toy = JobSpec {
            model: "toy:pivot".into(),
            ..spec
        };
        assert_eq!(
            JobResult::for_spec(&toy, JobStatus::Failed, 1, None).model,
            "toy:pivot"
        );
    }

    #[test]
    fn the_first_stop_string_to_start_cuts_and_the_longest_wins_a_tie() {
        let stops = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            StopHit::find("ok slow 8", &stops(&["8", "slow"])),
            Some(("slow".to_string(), 3))
        );
        assert_eq!(
            StopHit::find("ok slow 8", &stops(&["s", "slow"])),
            Some(("slow".to_string(), 3))
        );
        assert_eq!(StopHit::find("ok", &stops(&["x", ""])), None);
        let mut r = JobResult::for_spec(
            &serde_json::from_value(serde_json::json!({
                "job_id": JobId::new(), "correlation_id": "c", "model": "toy:tiny",
                "prompt": {"tokens": []}, "config": {"method": "standard"}, "seed": 0,
                "submitted_at_ms": 0
            }))
            .unwrap(),
            JobStatus::Completed,
            1,
            None,
        );
        r.text = Some("ok slow 8".into());
        assert_eq!(r.answer_text(), Some("ok slow 8"));
        r.stop = Some(StopHit {
            stop: "slow".into(),
            text_bytes: 3,
            tokens: 2,
        });
        assert_eq!(r.answer_text(), Some("ok "));
    }
}
