//! The producer: turns a submission (one prompt times chains, or a batch file times methods times
//! seeds) into jobs, checks every one before anything is enqueued, and enqueues them.

use std::collections::BTreeMap;

use powerfleet_datasets::{Answer, Template};
use powerfleet_jobs::{
    BatchId, ChatMessage, CorrelationId, Grader, Grading, JobId, JobSpec, Label, Prompt,
    ReasoningMarkers, ReferenceAnswer, ReferenceKind, StoredPrompt, now_ms,
};
use powerfleet_models::resolve_toy;
use powerfleet_queue::{Queue, QueueError};
use powerfleet_sampler::{Method, SamplerConfig, TokenId};
use serde::{Deserialize, Serialize};

/// Largest number of jobs one submission may create.
pub const MAX_JOBS_PER_SUBMISSION: usize = 100_000;
/// Longest line of a batch file, in bytes (newline excluded).
pub const MAX_BATCH_LINE_BYTES: usize = 1 << 20;
/// Default largest batch file, in bytes (`submit --max-batch-file-bytes`).
pub const DEFAULT_MAX_BATCH_FILE_BYTES: u64 = 256 << 20;
/// Jobs per enqueue round trip.
const ENQUEUE_CHUNK: usize = 500;

/// One line of a batch file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLine {
    /// The problem's id (default: the line number).
    #[serde(default)]
    pub id: Option<String>,
    /// Prompt text.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Prompt token ids.
    #[serde(default)]
    pub prompt_tokens: Option<Vec<TokenId>>,
    /// Chat messages, formatted through the model's chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
}

impl BatchLine {
    /// The line's prompt: exactly one of `prompt`, `prompt_tokens` and `messages`; the error says
    /// which were given.
    pub fn take_prompt(&mut self) -> Result<Prompt, &'static str> {
        match (
            self.prompt.take(),
            self.prompt_tokens.take(),
            self.messages.take(),
        ) {
            (Some(text), None, None) => Ok(Prompt::Text(text)),
            (None, Some(ids), None) => Ok(Prompt::Tokens(ids)),
            (None, None, Some(messages)) => Ok(Prompt::Messages(messages)),
            (Some(_), Some(_), None) => Err("give prompt or prompt_tokens, not both"),
            (None, None, None) => Err(
                "missing field `prompt` (text) or `prompt_tokens` (token ids) or `messages` (chat messages)",
            ),
            _ => Err("give only one of prompt, prompt_tokens and messages"),
        }
    }
}

/// A prompt a submission runs (one of its problems): its problem id and its prompt, without a
/// reference answer (a dataset problem with one is a [`GradedProblem`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SubmittedPrompt {
    /// Problem id within the batch.
    pub id: Option<String>,
    /// Its prompt.
    pub prompt: Prompt,
}

impl From<SubmittedPrompt> for BatchLine {
    fn from(p: SubmittedPrompt) -> BatchLine {
        let mut line = BatchLine {
            id: p.id,
            prompt: None,
            prompt_tokens: None,
            messages: None,
        };
        match p.prompt {
            Prompt::Text(text) => line.prompt = Some(text),
            Prompt::Tokens(ids) => line.prompt_tokens = Some(ids),
            Prompt::Messages(messages) => line.messages = Some(messages),
            // A reference has no line of its own: it is made when jobs are enqueued.
            Prompt::Stored(_) => {}
        }
        line
    }
}

/// What to submit.
#[derive(Clone, Debug)]
pub struct Submission {
    /// Model reference.
    pub model: String,
    /// Base sampler configuration; its method is replaced by each of `methods`.
    pub config: SamplerConfig,
    /// Methods to run every problem with.
    pub methods: Vec<Method>,
    /// The problems.
    pub problems: Vec<SubmittedPrompt>,
    /// Seeds per problem and method.
    pub seeds: Vec<u64>,
    /// Chains per (problem, method, seed): streams 0..chains of the seed.
    pub chains: u64,
    /// Correlation id (generated if absent).
    pub correlation_id: Option<CorrelationId>,
    /// Whether the jobs form a batch.
    pub batch: bool,
    /// Client key that makes resubmission idempotent.
    pub submission_key: Option<String>,
    /// Let MCMC jobs run as one sample where the backend cannot run MCMC (hosted chat APIs).
    pub fallback_single_sample: bool,
    /// Format text prompts through the backend's chat template.
    pub chat: bool,
    /// A graded run (the request's `bench`): its dataset problems replace `problems`.
    pub graded_run: Option<GradedRun>,
    /// Stop strings applied to every job's finished text ([`JobSpec::stop`]).
    pub stop: Vec<String>,
    /// The submission's label, copied onto every job and its result ([`JobSpec::label`]).
    pub label: Option<Label>,
}

/// A graded run (`submit --bench`): dataset problems with reference answers, the template that
/// renders them (per seed, so multiple-choice options are shuffled per seed) and the grader the
/// collector applies.
#[derive(Clone, Debug, PartialEq)]
pub struct GradedRun {
    /// The problems.
    pub problems: Vec<GradedProblem>,
    /// How a problem becomes a prompt.
    pub template: Template,
    /// How completions are graded; `None`: `choice` for multiple-choice problems, `humaneval`
    /// for programming problems, `math` for the others.
    pub grader: Option<Grader>,
    /// Price of generated tokens, US dollars per million, recorded in every job.
    pub price_per_mtok: Option<f64>,
    /// The markers of a reasoning trace, which grading skips; `None`: `<think>` and `</think>`.
    pub reasoning_markers: Option<ReasoningMarkers>,
}

/// The longest reasoning marker accepted.
pub const MAX_MARKER_BYTES: usize = 64;

/// One dataset problem of a graded run.
#[derive(Clone, Debug, PartialEq)]
pub struct GradedProblem {
    /// The problem.
    pub problem: powerfleet_datasets::Problem,
    /// Its model, when it is not the submission's (the built-in suite has one per problem).
    pub model: Option<String>,
}

impl Submission {
    /// What this submission asked for, as its record keeps it: settings, counts and the jobs'
    /// fingerprint, without secrets or the problems' text.
    fn request_record(&self, jobs: &[JobSpec]) -> powerfleet_jobs::SubmissionRequest {
        let graded = self.graded_run.as_ref().map(|run| {
            let template_text = match &run.template {
                Template::User(text) if text.len() <= powerfleet_jobs::MAX_KEPT_TEMPLATE_BYTES => {
                    Some(text.clone())
                }
                _ => None,
            };
            powerfleet_jobs::GradedRequest {
                template: run.template.name().to_string(),
                template_text,
                grader: run.grader.as_ref().map(|g| match g {
                    Grader::Regex { pattern } => format!("regex:{pattern}"),
                    g => g.name().to_string(),
                }),
                price_per_mtok: run.price_per_mtok,
            }
        });
        let problems = match &self.graded_run {
            Some(run) => run.problems.len(),
            None => self.problems.len(),
        };
        powerfleet_jobs::SubmissionRequest {
            config: self.config.clone(),
            seeds: if self.seeds.len() <= powerfleet_jobs::MAX_KEPT_SEEDS {
                self.seeds.clone()
            } else {
                Vec::new()
            },
            seed_count: self.seeds.len() as u64,
            chains: self.chains,
            problems: problems as u64,
            jobs_fingerprint: fingerprint(jobs),
            stop: self.stop.clone(),
            chat: self.chat,
            fallback_single_sample: self.fallback_single_sample,
            graded,
            submission_key: self.submission_key.is_some(),
        }
    }
}

impl GradedRun {
    /// Every problem of the built-in suite on its toy model, graded by its answer pattern.
    pub fn builtin_suite() -> GradedRun {
        GradedRun {
            problems: powerfleet_datasets::builtin_suite()
                .into_iter()
                .map(|item| GradedProblem {
                    model: Some(format!("toy:{}", item.model_name)),
                    problem: item.problem,
                })
                .collect(),
            template: Template::Plain,
            grader: Some(Grader::Regex {
                pattern: powerfleet_datasets::SUITE_ANSWER_PATTERN.to_string(),
            }),
            price_per_mtok: None,
            reasoning_markers: None,
        }
    }

    /// The prompt and grading data of `problem` for `seed`. Multiple-choice options are shuffled
    /// per problem and seed ([`powerfleet_grade::problem_shuffle_seed`]); the order is recorded.
    fn render(&self, problem: &GradedProblem, seed: u64) -> (Prompt, Grading) {
        let shuffle = powerfleet_grade::problem_shuffle_seed(&problem.problem.id, seed);
        let rendered = self.template.render(&problem.problem, shuffle);
        let grading = self.grading(problem, rendered.permutation);
        (Prompt::Text(rendered.prompt), grading)
    }

    /// The grading data of `problem` whose options were shown in `permutation` (`None`: in the
    /// dataset's order), without rendering its prompt.
    fn grading(&self, problem: &GradedProblem, permutation: Option<Vec<usize>>) -> Grading {
        let reference = match &problem.problem.answer {
            Answer::Text(t) => ReferenceAnswer::Text(t.clone()),
            Answer::Choice { choices, correct } => ReferenceAnswer::Choice {
                choices: choices.clone(),
                correct: *correct,
                permutation: permutation.unwrap_or_else(|| (0..choices.len()).collect()),
            },
            // The dataset's prompt, whatever the template: the completion continues it.
            Answer::Code { test, entry_point } => ReferenceAnswer::Code {
                prompt: problem.problem.question.clone(),
                test: test.clone(),
                entry_point: entry_point.clone(),
            },
        };
        let grader = self
            .grader
            .clone()
            .unwrap_or_else(|| Grader::default_for(reference.kind()));
        Grading {
            template: self.template.name().to_string(),
            grader,
            reference,
            price_per_mtok: self.price_per_mtok,
            reasoning_markers: self.reasoning_markers.clone(),
        }
    }

    /// Checks that the grader fits every problem and its pattern compiles.
    fn check(&self) -> Result<(), String> {
        if let Some(m) = &self.reasoning_markers {
            let fits = |s: &str| !s.trim().is_empty() && s.len() <= MAX_MARKER_BYTES;
            if !fits(&m.open) || !fits(&m.close) || m.open == m.close {
                return Err(format!(
                    "reasoning markers must be two different non-blank strings of at most {MAX_MARKER_BYTES} bytes, got {:?} and {:?}",
                    m.open, m.close
                ));
            }
        }
        if let Some(p) = self.price_per_mtok
            && !(p.is_finite() && p >= 0.0)
        {
            return Err(format!(
                "price_per_mtok (USD per million generated tokens) must be a number >= 0, got {p}"
            ));
        }
        if let Some(grader) = &self.grader {
            powerfleet_grade::check_grader(grader).map_err(|e| format!("grader: {e}"))?;
            for p in &self.problems {
                grader
                    .fits(reference_kind(&p.problem.answer))
                    .map_err(|e| format!("problem {}: {e}", p.problem.id))?;
            }
        }
        Ok(())
    }
}

/// The kind of reference a dataset answer becomes ([`GradedRun::grading`]), which decides the
/// graders that fit it.
pub(crate) fn reference_kind(answer: &Answer) -> ReferenceKind {
    match answer {
        Answer::Text(_) => ReferenceKind::Text,
        Answer::Choice { .. } => ReferenceKind::Choice,
        Answer::Code { .. } => ReferenceKind::Code,
    }
}

/// Ids of what was submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The correlation id of every job.
    pub correlation_id: CorrelationId,
    /// The batch, if one was made.
    pub batch_id: Option<BatchId>,
    /// The jobs, in submission order.
    pub job_ids: Vec<JobId>,
}

/// A submission that cannot be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Invalid input; nothing was enqueued.
    #[error(transparent)]
    Invalid(#[from] InvalidSubmission),
    /// The submission key was used for a different request; nothing was enqueued.
    #[error("{0}")]
    Conflict(String),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A fingerprint of what a submission asks for: every job's spec without the ids and times that
/// differ between two sends of the same request (FNV-1a 64 over their JSON, with the count).
fn fingerprint(jobs: &[JobSpec]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&(jobs.len() as u64).to_le_bytes());
    for job in jobs {
        let mut v = serde_json::to_value(job).expect("a job spec serializes");
        if let Some(o) = v.as_object_mut() {
            for k in ["job_id", "correlation_id", "batch_id", "submitted_at_ms"] {
                o.remove(k);
            }
        }
        feed(v.to_string().as_bytes());
        feed(b"\n");
    }
    format!("fnv1a64:{h:016x}")
}

/// Why a batch file is refused ([`read_batch_file`]); messages name the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum BatchFileError {
    /// Reading the file failed.
    #[error("cannot read line {line}: {source}")]
    Read {
        /// The line being read, from 1.
        line: usize,
        /// The IO error.
        source: std::io::Error,
    },
    /// More lines than one submission may hold.
    #[error(
        "the batch file has more than {MAX_JOBS_PER_SUBMISSION} lines; at most {MAX_JOBS_PER_SUBMISSION} jobs are accepted at once, split it"
    )]
    TooManyLines,
    /// A line longer than [`MAX_BATCH_LINE_BYTES`].
    #[error(
        "line {line} is longer than {MAX_BATCH_LINE_BYTES} bytes (1 MiB, the most one problem's line may hold); is this a JSONL batch file (one JSON object per line)?"
    )]
    LineTooLong {
        /// The line, from 1.
        line: usize,
    },
    /// A file larger than its cap; nothing past the cap was read.
    #[error(
        "the batch file is larger than the limit of {cap}; raise the limit with {} or split the file",
        .cap.setting
    )]
    TooLarge {
        /// The cap.
        cap: powerfleet_datasets::SizeCap,
    },
    /// Lines that are not a prompt: one message per line (`line N: ...`), up to 20.
    #[error("{}", .0.join("\n"))]
    BadLines(Vec<String>),
    /// No line holds a prompt.
    #[error("the batch file holds no prompts")]
    Empty,
}

/// Parses a JSONL batch file; errors name the line and the field.
pub fn parse_batch_file(text: &str) -> Result<Vec<SubmittedPrompt>, BatchFileError> {
    read_batch_file(
        text.as_bytes(),
        powerfleet_datasets::SizeCap {
            bytes: u64::MAX - 1,
            setting: "",
        },
    )
}

/// Reads a JSONL batch file line by line, in memory bounded by [`MAX_BATCH_LINE_BYTES`] per line
/// and [`MAX_JOBS_PER_SUBMISSION`] lines (blank lines included), and at most `cap` bytes in all
/// (nothing past `cap + 1` bytes is read), so an endless or binary file fails fast. A UTF-8 byte
/// order mark at the start is skipped; errors name the line and field.
pub fn read_batch_file(
    mut reader: impl std::io::BufRead,
    cap: powerfleet_datasets::SizeCap,
) -> Result<Vec<SubmittedPrompt>, BatchFileError> {
    use std::io::{BufRead, Read};
    let mut problems = Vec::new();
    let mut errors = Vec::new();
    let mut buf = Vec::new();
    let mut total: u64 = 0;
    for n in 1.. {
        buf.clear();
        let left = (cap.bytes + 1).saturating_sub(total);
        let read = reader
            .by_ref()
            .take((MAX_BATCH_LINE_BYTES as u64 + 2).min(left))
            .read_until(b'\n', &mut buf)
            .map_err(|source| BatchFileError::Read { line: n, source })?;
        if read == 0 {
            break;
        }
        total += read as u64;
        if total > cap.bytes {
            return Err(BatchFileError::TooLarge { cap });
        }
        if n > MAX_JOBS_PER_SUBMISSION {
            return Err(BatchFileError::TooManyLines);
        }
        let mut bytes = buf.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if n == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if bytes.len() > MAX_BATCH_LINE_BYTES {
            return Err(BatchFileError::LineTooLong { line: n });
        }
        let Ok(raw) = std::str::from_utf8(bytes) else {
            errors.push(format!("line {n}: not UTF-8 text"));
            if errors.len() >= 20 {
                break;
            }
            continue;
        };
        if raw.trim().is_empty() {
            continue;
        }
        let mut line: BatchLine = match serde_json::from_str(raw) {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!("line {n}: {e}"));
                continue;
            }
        };
        let prompt = match line.take_prompt() {
            Ok(prompt) => prompt,
            Err(e) => {
                errors.push(format!("line {n}: {e}"));
                continue;
            }
        };
        problems.push(SubmittedPrompt {
            id: Some(line.id.unwrap_or_else(|| n.to_string())),
            prompt,
        });
        if errors.len() >= 20 {
            break;
        }
    }
    if !errors.is_empty() {
        return Err(BatchFileError::BadLines(errors));
    }
    if problems.is_empty() {
        return Err(BatchFileError::Empty);
    }
    Ok(problems)
}

/// A submission that fails validation: its jobs cannot be built ([`Submission::jobs`]) or its
/// submission key is malformed. The message names the field, method or problem and what is
/// allowed. [`submit`] returns it as [`SubmitError::Invalid`], the request path's own checks as
/// [`crate::request::RequestError::Invalid`]; the API answers either with 422.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSubmission(pub String);

/// The jobs of a submission as they are enqueued: each job's specification references its
/// prompt, and each distinct prompt is stored once ([`Submission::stored_jobs`]).
#[derive(Clone, Debug)]
pub struct StoredJobs {
    /// The jobs, each with a [`Prompt::Stored`] prompt.
    pub specs: Vec<JobSpec>,
    /// The distinct prompts they reference.
    pub prompts: Vec<StoredPrompt>,
}

impl Submission {
    /// Builds and checks every job, each with its prompt inline; nothing touches the queue.
    pub fn jobs(
        &self,
        correlation_id: &CorrelationId,
        batch_id: Option<BatchId>,
    ) -> Result<Vec<JobSpec>, InvalidSubmission> {
        self.build_jobs(correlation_id, batch_id, false)
            .map(|jobs| jobs.specs)
            .map_err(InvalidSubmission)
    }

    /// Builds and checks every job as [`submit`] enqueues it: prompts by reference, each
    /// distinct prompt once. Nothing is copied per job but the reference.
    pub fn stored_jobs(
        &self,
        correlation_id: &CorrelationId,
        batch_id: Option<BatchId>,
    ) -> Result<StoredJobs, InvalidSubmission> {
        self.build_jobs(correlation_id, batch_id, true)
            .map_err(InvalidSubmission)
    }

    fn build_jobs(
        &self,
        correlation_id: &CorrelationId,
        batch_id: Option<BatchId>,
        by_reference: bool,
    ) -> Result<StoredJobs, String> {
        if self.methods.is_empty() {
            return Err(format!(
                "methods must name at least one of {}",
                Method::names()
            ));
        }
        if self.seeds.is_empty() {
            return Err("seeds must be >= 1, got 0".into());
        }
        if self.chains == 0 {
            return Err("chains must be >= 1, got 0".into());
        }
        let total = self
            .graded_run
            .as_ref()
            .map_or(self.problems.len(), |b| b.problems.len()) as u128
            * self.methods.len() as u128
            * self.seeds.len() as u128
            * u128::from(self.chains);
        if total > MAX_JOBS_PER_SUBMISSION as u128 {
            return Err(format!(
                "this submission makes {total} jobs; at most {MAX_JOBS_PER_SUBMISSION} are accepted at once, split it"
            ));
        }
        // Per-method configuration, checked once each.
        let mut configs = BTreeMap::new();
        for &method in &self.methods {
            let config = self.config.for_method(method, &self.methods);
            let valid = config
                .validate()
                .map_err(|e| format!("method {method}: {e}"))?;
            // A server that does not honour the proposal temperature exactly would make log q
            // wrong; refuse it here when the submission names the server (registered names are
            // checked by the worker).
            if let Ok(powerfleet_backends::ModelRef::Http(h)) =
                powerfleet_backends::parse(&self.model)
            {
                h.kind.check_proposal(valid.temperature()).map_err(|e| {
                    format!(
                        "method {method}: proposal temperature on {}: {e}",
                        h.kind.prefix()
                    )
                })?;
            }
            configs.insert(method.as_str(), config);
        }
        let problem_count = self
            .graded_run
            .as_ref()
            .map_or(self.problems.len(), |b| b.problems.len());
        if self.graded_run.is_some() && !self.problems.is_empty() {
            return Err("give a benchmark or prompts, not both".into());
        }
        if let Some(run) = &self.graded_run {
            run.check()?;
        }
        // Every model of the submission, checked once; toy models check prompts here, others at
        // the worker.
        let mut toys = BTreeMap::new();
        let models = std::iter::once(self.model.as_str()).chain(
            self.graded_run
                .iter()
                .flat_map(|b| b.problems.iter().filter_map(|p| p.model.as_deref())),
        );
        for model in models {
            if toys.contains_key(model) {
                continue;
            }
            toys.insert(model.to_string(), self.check_model(model)?);
        }
        let ids = self.problems.iter().filter_map(|p| p.id.as_deref()).chain(
            self.graded_run
                .iter()
                .flat_map(|b| b.problems.iter().map(|p| p.problem.id.as_str())),
        );
        if let Some(bad) = std::iter::once(self.model.as_str())
            .chain(ids)
            .find(|t| t.chars().any(char::is_control))
        {
            return Err(format!(
                "model and problem ids must not contain control characters, got {bad:?}"
            ));
        }
        let now = now_ms();
        let mut jobs = Vec::with_capacity(total as usize);
        let mut stored: BTreeMap<String, StoredPrompt> = BTreeMap::new();
        // The prompt a job carries: a reference to the one stored copy, or the prompt itself.
        let mut place = |prompt: Prompt| -> Prompt {
            if !by_reference {
                return prompt;
            }
            let s = StoredPrompt::of(&prompt);
            let reference = s.reference.clone();
            stored.entry(reference.sha256.clone()).or_insert(s);
            Prompt::Stored(reference)
        };
        for p_idx in 0..problem_count {
            let (id, model) = match &self.graded_run {
                Some(run) => {
                    let p = &run.problems[p_idx];
                    (
                        Some(p.problem.id.clone()),
                        p.model.as_deref().unwrap_or(&self.model),
                    )
                }
                None => (self.problems[p_idx].id.clone(), self.model.as_str()),
            };
            let where_ = id.as_ref().map_or(format!("prompt {}", p_idx + 1), |id| {
                format!("problem {id}")
            });
            // A problem's own prompt is checked and placed once, whatever the seed.
            let own = match &self.graded_run {
                Some(_) => None,
                None => {
                    let prompt = &self.problems[p_idx].prompt;
                    self.check_prompt(toys[model].as_ref(), prompt)
                        .map_err(|e| format!("{where_}: {e}"))?;
                    Some(place(prompt.clone()))
                }
            };
            for &seed in &self.seeds {
                let (prompt, grading) = match (&self.graded_run, &own) {
                    (Some(run), _) => {
                        let (prompt, grading) = run.render(&run.problems[p_idx], seed);
                        // Prompts that do not depend on the seed are checked once.
                        if seed == self.seeds[0]
                            || matches!(grading.reference, ReferenceAnswer::Choice { .. })
                        {
                            self.check_prompt(toys[model].as_ref(), &prompt)
                                .map_err(|e| format!("{where_}: {e}"))?;
                        }
                        (place(prompt), Some(grading))
                    }
                    (None, Some(own)) => (own.clone(), None),
                    (None, None) => unreachable!("a prompt's problem has its own prompt"),
                };
                for &method in &self.methods {
                    for stream in 0..self.chains {
                        jobs.push(JobSpec {
                            job_id: JobId::new(),
                            correlation_id: correlation_id.clone(),
                            batch_id,
                            problem_id: id.clone(),
                            model: model.to_string(),
                            prompt: prompt.clone(),
                            config: configs[method.as_str()].clone(),
                            seed,
                            stream,
                            submitted_at_ms: now,
                            fallback_single_sample: self.fallback_single_sample,
                            stop: self.stop.clone(),
                            chat: self.chat,
                            grading: grading.clone(),
                            label: self.label.clone(),
                        });
                    }
                }
            }
        }
        if let Some(big) = jobs.iter().find(|j| {
            serde_json::to_vec(j).map_or(0, |v| v.len()) > powerfleet_queue::MAX_ENTRY_BYTES / 2
        }) {
            return Err(format!(
                "the job for problem {} is larger than {} bytes; shorten its prompt",
                big.problem_id.as_deref().unwrap_or("1"),
                powerfleet_queue::MAX_ENTRY_BYTES / 2
            ));
        }
        Ok(StoredJobs {
            specs: jobs,
            prompts: stored.into_values().collect(),
        })
    }
}

/// What a submission makes the queue hold, computed before any prompt is rendered or any job
/// is built ([`Submission::footprint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Jobs: problems x methods x seeds x chains.
    pub jobs: u128,
    /// Bytes of the prompts stored, each as JSON once: a prompt per problem, or a graded run's
    /// rendering per problem and seed.
    pub prompt_bytes: u128,
    /// Bytes of every job's specification as JSON, its prompt by reference.
    pub job_bytes: u128,
}

impl Submission {
    /// What the submission would make the queue hold, from the sizes of its parts: a graded
    /// run's prompts are measured with [`Template::rendered_size`], never rendered, and each
    /// job's specification is measured once per problem and method (with the largest seed and
    /// stream) and counted for every seed and chain.
    pub fn footprint(&self) -> Footprint {
        let seeds = self.seeds.len() as u128;
        let chains = u128::from(self.chains);
        let mut out = Footprint::default();
        let correlation_id = self
            .correlation_id
            .clone()
            .unwrap_or_else(CorrelationId::generate);
        let mut probe = JobSpec {
            job_id: JobId::new(),
            correlation_id,
            batch_id: self.batch.then(BatchId::new),
            problem_id: None,
            model: String::new(),
            prompt: Prompt::Stored(powerfleet_jobs::PromptRef {
                sha256: "0".repeat(64),
                bytes: u64::MAX,
            }),
            config: self.config.clone(),
            seed: self.seeds.iter().copied().max().unwrap_or(0),
            stream: self.chains.saturating_sub(1),
            submitted_at_ms: now_ms(),
            fallback_single_sample: self.fallback_single_sample,
            stop: self.stop.clone(),
            chat: self.chat,
            grading: None,
            label: self.label.clone(),
        };
        let mut add_jobs = |probe: &mut JobSpec| {
            for &method in &self.methods {
                probe.config.method = method;
                out.jobs += seeds * chains;
                out.job_bytes += json_len(&*probe) as u128 * seeds * chains;
            }
        };
        match &self.graded_run {
            None => {
                for p in &self.problems {
                    out.prompt_bytes += json_len(&p.prompt) as u128;
                    probe.problem_id = p.id.clone();
                    probe.model.clone_from(&self.model);
                    add_jobs(&mut probe);
                }
            }
            Some(run) => {
                for p in &run.problems {
                    // `{"text":"` and `"}` around the escaped text.
                    let json = 11 + run.template.rendered_size(&p.problem).json_bytes;
                    out.prompt_bytes += json as u128 * seeds;
                    probe.problem_id = Some(p.problem.id.clone());
                    probe.model = p.model.clone().unwrap_or_else(|| self.model.clone());
                    probe.grading = Some(run.grading(p, None));
                    add_jobs(&mut probe);
                }
            }
        }
        out
    }
}

/// Bytes of `value` as compact JSON, counted without writing it.
pub(crate) fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl Submission {
    /// Checks a model reference; returns the toy model it names, if it is one.
    fn check_model(&self, model: &str) -> Result<Option<powerfleet_models::ToyModel>, String> {
        if model.trim().is_empty() {
            return Err("model must name a model reference such as toy:pivot".into());
        }
        if powerfleet_backends::is_remote_reference(model) {
            match powerfleet_backends::parse(model) {
                Err(e) => return Err(format!("model: {e}")),
                Ok(powerfleet_backends::ModelRef::Hosted(h)) => {
                    if let Some(m) = self.methods.iter().find(|m| m.needs_log_probs())
                        && !self.fallback_single_sample
                    {
                        return Err(format!(
                            "model: method {m} on {:?} {}: {}; submit with --fallback-single-sample to run one sample at the proposal temperature instead (recorded in each result)",
                            h.provider,
                            h.model,
                            powerfleet_backends::HOSTED_CHAT_REFUSAL
                        ));
                    }
                    if self
                        .problems
                        .iter()
                        .any(|p| !matches!(p.prompt, Prompt::Text(_)))
                    {
                        return Err(
                            "model: hosted chat APIs take text prompts, not token ids or messages"
                                .to_string(),
                        );
                    }
                }
                Ok(powerfleet_backends::ModelRef::Http(_)) => {}
            }
        }
        if !model.starts_with("toy:") {
            return Ok(None);
        }
        if self.chat {
            return Err(format!(
                "chat: model {model} is a toy model, which has no chat template; submit without --chat"
            ));
        }
        let base = model.split('?').next().unwrap_or(model);
        resolve_toy(base)
            .map(Some)
            .map_err(|e| format!("model: {e}"))
    }

    /// Checks a prompt against its toy model (other models check it at the worker).
    fn check_prompt(
        &self,
        toy: Option<&powerfleet_models::ToyModel>,
        prompt: &Prompt,
    ) -> Result<(), String> {
        if self.chat && matches!(prompt, Prompt::Tokens(_)) {
            return Err(
                "chat formats text prompts through the model's template; give a text prompt, not token ids"
                    .into(),
            );
        }
        let Some(model) = toy else {
            return Ok(());
        };
        match prompt {
            Prompt::Text(t) => model.tokenize(t).map(|_| ()).map_err(|e| e.to_string()),
            Prompt::Tokens(ids) => model.check_tokens(ids).map_err(|e| e.to_string()),
            Prompt::Messages(_) => Err(format!(
                "messages: model {} is a toy model, which has no chat template; give a text prompt or token ids",
                model.name()
            )),
            Prompt::Stored(_) => Err(
                "a submission gives its prompts as text, token ids or messages, not as stored references"
                    .into(),
            ),
        }
    }
}

/// Checks the whole submission, then enqueues it. With a submission key, a repeated submission
/// returns the ids of the first one and enqueues nothing new.
pub async fn submit(queue: &Queue, submission: &Submission) -> Result<Receipt, SubmitError> {
    let mut correlation_id = submission
        .correlation_id
        .clone()
        .unwrap_or_else(CorrelationId::generate);
    let mut batch_id = submission.batch.then(BatchId::new);
    // Build and check every job before anything is written.
    let StoredJobs {
        specs: mut jobs,
        prompts,
    } = submission.stored_jobs(&correlation_id, batch_id)?;
    if let Some(key) = &submission.submission_key {
        if key.is_empty() || key.len() > 200 || key.chars().any(char::is_whitespace) {
            return Err(InvalidSubmission(format!(
                "submission key must be 1 to 200 characters without white space, got {key:?}"
            ))
            .into());
        }
        let fingerprint = fingerprint(&jobs);
        let (b, c, first) = queue
            .begin_submission(
                key,
                batch_id.unwrap_or_default(),
                &correlation_id,
                &fingerprint,
            )
            .await?;
        if first != fingerprint {
            return Err(SubmitError::Conflict(format!(
                "submission key {key:?} was used for a different request (other jobs, prompts, methods, seeds or settings); resubmit the same request to get its ids, or use a new key"
            )));
        }
        correlation_id = c;
        if submission.batch {
            batch_id = Some(b);
        }
        // A repeated key keeps the first submission's ids.
        for job in &mut jobs {
            job.correlation_id = correlation_id.clone();
            job.batch_id = batch_id;
        }
    }
    // Each distinct prompt once, before any job that references it can be claimed.
    queue.store_prompts(&prompts).await?;
    drop(prompts);
    let mut job_ids = Vec::with_capacity(jobs.len());
    for (i, chunk) in jobs.chunks(ENQUEUE_CHUNK).enumerate() {
        let key = submission
            .submission_key
            .as_deref()
            .map(|k| (k, i * ENQUEUE_CHUNK));
        let ids = queue.enqueue(chunk, key).await?;
        crate::metrics::JOBS_SUBMITTED.increment(ids.len() as u64);
        job_ids.extend(ids);
    }
    // What the batch scheduled, for the report once Redis has forgotten it: published after
    // its jobs, so a record always has its jobs (a failure in between leaves a batch without
    // one, which the report shows as of unknown size, never as partial forever).
    if let Some(batch_id) = batch_id {
        let mut models: Vec<String> = jobs
            .iter()
            .map(|j| powerfleet_jobs::redact_http_url(&j.model))
            .collect();
        models.sort();
        models.dedup();
        queue
            .publish_submission(&powerfleet_jobs::SubmissionRecord {
                batch_id,
                correlation_id: correlation_id.clone(),
                label: submission.label.clone(),
                models,
                methods: submission.methods.clone(),
                scheduled: job_ids.len() as u64,
                created_at_ms: now_ms(),
                request: Some(submission.request_record(&jobs)),
            })
            .await?;
    }
    // The receipt promises these jobs: on a replicated Redis they must survive a failover.
    queue.confirm_replicated("submission").await?;
    Ok(Receipt {
        correlation_id,
        batch_id,
        job_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_files_are_read_in_bounded_memory_and_may_start_with_a_bom() {
        let ok = parse_batch_file("\u{feff}{\"prompt\": \"A\"}\r\n{\"prompt\": \"B\"}").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].prompt, Prompt::Text("A".into()));
        let cap = powerfleet_datasets::SizeCap {
            bytes: DEFAULT_MAX_BATCH_FILE_BYTES,
            setting: "--max-batch-file-bytes",
        };
        // An endless line (/dev/zero) fails after one line's worth.
        let zeros = std::io::BufReader::new(std::io::repeat(0));
        let err = read_batch_file(zeros, cap).unwrap_err().to_string();
        assert_eq!(
            err.split(';').next().unwrap(),
            "line 1 is longer than 1048576 bytes (1 MiB, the most one problem's line may hold)"
        );
        // Endless blank lines fail after MAX_JOBS_PER_SUBMISSION lines.
        let blank = std::io::BufReader::new(std::io::repeat(b'\n'));
        let err = read_batch_file(blank, cap).unwrap_err().to_string();
        assert!(err.contains("more than 100000 lines"), "{err}");
        // Endless short lines fail at the cap, having read one byte past it.
        let small = powerfleet_datasets::SizeCap {
            bytes: 1000,
            setting: "--max-batch-file-bytes",
        };
        let mut lines = std::io::BufReader::new(std::io::Read::chain(
            &b"{\"prompt\": \"A\"}\n"[..],
            std::io::repeat(b'\n'),
        ));
        let err = read_batch_file(&mut lines, small).unwrap_err().to_string();
        assert_eq!(
            err,
            "the batch file is larger than the limit of 1000 bytes; raise the limit with --max-batch-file-bytes or split the file"
        );
        // A line of exactly the limit is read.
        let line = format!(
            "{{\"prompt\": \"{}\"}}",
            "a".repeat(MAX_BATCH_LINE_BYTES - 14)
        );
        assert_eq!(line.len(), MAX_BATCH_LINE_BYTES);
        assert_eq!(parse_batch_file(&line).unwrap().len(), 1);
        let err = parse_batch_file(&format!("{line} \n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1 is longer"), "{err}");
        let err = read_batch_file(&b"{\"prompt\": \"A\"}\n\xff\n"[..], cap)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn batch_files_report_the_line_and_field() {
        let text = "{\"prompt\": \"A\"}\n\n{\"prompt_tokens\": [1, 2], \"id\": \"q2\"}\n{\"promt\": \"x\"}\n{}\nnot json\n{\"prompt\": \"a\", \"prompt_tokens\": [1]}\n";
        let err = parse_batch_file(text).unwrap_err().to_string();
        assert!(err.contains("line 4: unknown field `promt`"), "{err}");
        assert!(err.contains("line 5: missing field `prompt`"), "{err}");
        assert!(err.contains("line 6: expected"), "{err}");
        assert!(
            err.contains("line 7: give prompt or prompt_tokens, not both"),
            "{err}"
        );
        let ok = parse_batch_file("{\"prompt\": \"A\"}\n{\"prompt_tokens\": [1], \"id\": \"q2\"}")
            .unwrap();
        assert_eq!(ok[0].id.as_deref(), Some("1"));
        assert_eq!(ok[1].id.as_deref(), Some("q2"));
        assert!(
            parse_batch_file("\n")
                .unwrap_err()
                .to_string()
                .contains("no prompts")
        );
    }

    fn submission() -> Submission {
        Submission {
            model: "toy:pivot".into(),
            config: SamplerConfig::new(Method::Power),
            methods: vec![Method::Power, Method::MaxSwap, Method::LowTemp],
            problems: vec![
                SubmittedPrompt {
                    id: Some("a".into()),
                    prompt: Prompt::Text("".into()),
                },
                SubmittedPrompt {
                    id: Some("b".into()),
                    prompt: Prompt::Tokens(vec![0]),
                },
            ],
            seeds: vec![1, 2],
            chains: 1,
            correlation_id: None,
            batch: true,
            submission_key: None,
            fallback_single_sample: false,
            stop: Vec::new(),
            chat: false,
            graded_run: None,
            label: None,
        }
    }

    #[test]
    fn jobs_are_problems_times_methods_times_seeds() {
        let s = submission();
        let corr = CorrelationId::generate();
        let jobs = s.jobs(&corr, Some(BatchId::new())).unwrap();
        assert_eq!(jobs.len(), 2 * 3 * 2);
        let max_swap = jobs.iter().find(|j| j.method() == Method::MaxSwap).unwrap();
        assert!(max_swap.validate().unwrap().alpha().is_infinite());
        let ids: std::collections::HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
        assert_eq!(ids.len(), jobs.len());
    }

    #[test]
    fn proposal_temperatures_a_vllm_server_would_clamp_are_refused_at_submission() {
        let mut s = submission();
        s.methods = vec![Method::Power];
        s.problems.truncate(1);
        s.model = "vllm+http://127.0.0.1:9?model=m".into();
        let corr = CorrelationId::generate();
        s.config.proposal_temp = Some(0.001);
        let err = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(
            err.contains("method power: proposal temperature on vllm"),
            "{err}"
        );
        s.config.proposal_temp = Some(0.25);
        assert!(s.jobs(&corr, None).is_ok());
        s.model = "llamacpp+http://127.0.0.1:9".into();
        s.config.proposal_temp = Some(0.001);
        assert!(
            s.jobs(&corr, None).is_ok(),
            "llama.cpp honours any temperature > 0"
        );
    }

    #[test]
    fn invalid_submissions_name_the_problem() {
        let corr = CorrelationId::generate();
        let mut s = submission();
        s.problems[1].prompt = Prompt::Tokens(vec![42]);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("problem b: token id 42")
        );
        let mut s = submission();
        s.problems[0].prompt = Prompt::Text("A zz".into());
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("problem a: unknown token \"zz\"")
        );
        let mut s = submission();
        s.config.n_mcmc = 0;
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("method power: n_mcmc must be >= 1")
        );
        let mut s = submission();
        s.model = "toy:nope".into();
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .starts_with("model: ")
        );
        let mut s = submission();
        s.model = "anthropic+https://api.anthropic.com?model=claude".into();
        s.problems.truncate(1);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("cannot continue a completion from a token prefix")
        );
        s.fallback_single_sample = true;
        let jobs = s
            .jobs(&corr, None)
            .expect("with the fallback, MCMC jobs run as one sample");
        assert!(jobs.iter().all(|j| j.fallback_single_sample));
        s.methods = vec![Method::Standard];
        s.fallback_single_sample = false;
        assert!(
            s.jobs(&corr, None).is_ok(),
            "single-sample methods need no fallback"
        );
        s.problems[0].prompt = Prompt::Tokens(vec![1]);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("text prompts")
        );
        let mut s = submission();
        s.model = "vllm+http://gpu:8000".into();
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("need ?model=NAME")
        );
        let mut s = submission();
        s.model = "llamacpp+http://gpu:8080".into();
        assert!(
            s.jobs(&corr, None).is_ok(),
            "server prompts are checked by the worker"
        );
        let mut s = submission();
        s.chains = 100_000;
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("split it")
        );
    }

    fn choice_problem(id: &str) -> GradedProblem {
        GradedProblem {
            problem: powerfleet_datasets::Problem {
                id: id.into(),
                question: "A".into(),
                answer: Answer::Choice {
                    choices: vec!["A".into(), "B".into(), "C".into(), "D".into()],
                    correct: 2,
                },
                extra: Default::default(),
            },
            model: None,
        }
    }

    #[test]
    fn a_benchmark_makes_a_job_per_problem_method_and_seed_with_its_reference() {
        let mut s = submission();
        s.problems.clear();
        s.model = "llamacpp+http://gpu:8080".into();
        s.seeds = (0..8).collect();
        s.graded_run = Some(GradedRun {
            problems: vec![choice_problem("q1"), choice_problem("q2")],
            template: Template::Plain,
            grader: None,
            price_per_mtok: Some(0.25),
            reasoning_markers: None,
        });
        let corr = CorrelationId::generate();
        let batch = BatchId::new();
        let jobs = s.jobs(&corr, Some(batch)).unwrap();
        assert_eq!(jobs.len(), 2 * 3 * 8);
        assert!(
            jobs.iter()
                .all(|j| j.batch_id == Some(batch) && j.correlation_id == corr)
        );
        let mut permutations = std::collections::HashSet::new();
        for j in &jobs {
            let grading = j.grading.as_ref().unwrap();
            assert_eq!(
                grading.grader,
                Grader::Choice,
                "multiple choice grades by letter"
            );
            assert_eq!(grading.price_per_mtok, Some(0.25));
            let ReferenceAnswer::Choice {
                correct,
                permutation,
                ..
            } = &grading.reference
            else {
                panic!("a choice reference")
            };
            assert_eq!(*correct, 2);
            let problem = j.problem_id.as_deref().unwrap();
            let shuffle = powerfleet_grade::problem_shuffle_seed(problem, j.seed);
            assert_eq!(permutation, &powerfleet_grade::shuffle_choices(4, shuffle));
            // The prompt shows the options in the recorded order.
            let Prompt::Text(prompt) = &j.prompt else {
                panic!("rendered text")
            };
            let expected = Template::Plain
                .render(&choice_problem(problem).problem, shuffle)
                .prompt;
            assert_eq!(prompt, &expected);
            permutations.insert(permutation.clone());
        }
        assert!(permutations.len() > 1, "options are shuffled per seed");
    }

    #[test]
    fn benchmark_submissions_refuse_what_cannot_be_graded_or_run() {
        let corr = CorrelationId::generate();
        let mut s = submission();
        s.problems.clear();
        s.model = "toy:tiny".into();
        s.graded_run = Some(GradedRun {
            problems: vec![choice_problem("q1")],
            template: Template::Plain,
            grader: Some(Grader::Math),
            price_per_mtok: None,
            reasoning_markers: None,
        });
        let e = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(
            e.contains("problem q1: a multiple-choice answer is graded by grader choice"),
            "{e}"
        );
        s.graded_run.as_mut().unwrap().grader = Some(Grader::Regex {
            pattern: "no group".into(),
        });
        let e = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(
            e.contains("grader: ") && e.contains("no capture group"),
            "{e}"
        );
        s.graded_run.as_mut().unwrap().grader = None;
        s.graded_run.as_mut().unwrap().price_per_mtok = Some(-1.0);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("price_per_mtok (USD per million generated tokens)")
        );
        s.graded_run.as_mut().unwrap().price_per_mtok = None;
        s.chat = true;
        let e = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(e.contains("chat: model toy:tiny is a toy model"), "{e}");
        s.chat = false;
        s.problems = submission().problems;
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
    }

    #[test]
    fn the_builtin_suite_runs_each_problem_on_its_own_model() {
        let mut s = submission();
        s.problems.clear();
        s.graded_run = Some(GradedRun::builtin_suite());
        let jobs = s.jobs(&CorrelationId::generate(), None).unwrap();
        assert_eq!(
            jobs.len(),
            powerfleet_datasets::builtin_suite().len() * 3 * 2
        );
        for item in powerfleet_datasets::builtin_suite() {
            let job = jobs
                .iter()
                .find(|j| j.problem_id.as_deref() == Some(item.problem.id.as_str()))
                .unwrap();
            assert_eq!(job.model, format!("toy:{}", item.model_name));
            assert_eq!(job.prompt, Prompt::Text(item.prompt()));
        }
    }
}
