//! The one path from a request to jobs: [`SubmitRequest`], the body of `POST /v1/jobs`, which the
//! CLI's `submit` builds from its flags and the demo and benchmarks build directly, becomes a
//! [`Submission`] through [`SubmitRequest::into_submission`]. Every check of what a submission may
//! ask for (the models it names, one kind of prompt, complete problems, sizes, jobs and compute
//! per submission) happens here, under [`RequestLimits`] and a [`ModelPolicy`]: the API's for a token
//! holder, [`RequestLimits::operator`] and [`ModelPolicy::operator`] for the operator's own CLI.

use std::collections::BTreeSet;

use powerfleet_jobs::{CHAT_ROLES, ChatMessage, CorrelationId, Label, Prompt};
use powerfleet_sampler::{Family, Method, SamplerConfig, TokenId};
use serde::{Deserialize, Serialize};

use crate::producer::{self, BatchLine, Submission, SubmittedPrompt};

/// A request that cannot become a submission: the API answers 400 or 422 with the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// A field the request may not hold (a model outside the policy): 400.
    #[error("{0}")]
    BadRequest(String),
    /// A well-formed request asking for what cannot be done, a submission that fails
    /// validation as [`producer::InvalidSubmission`] does: 422.
    #[error("{0}")]
    Invalid(String),
}

/// Default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default largest number of jobs one request may create.
pub const DEFAULT_MAX_JOBS_PER_REQUEST: usize = 10_000;
/// Default largest prompt (text bytes, or 4 bytes per token id) or dataset record: 256 KiB.
pub const DEFAULT_MAX_PROMPT_BYTES: usize = 256 << 10;
/// Default most characters of a problem id, dataset record id or submission key.
pub const DEFAULT_MAX_ID_CHARS: usize = 200;
/// Default largest user template (`bench.template_text`): 64 KiB.
pub const DEFAULT_MAX_TEMPLATE_BYTES: usize = 64 << 10;
/// Default largest total of the prompts one request stores, as JSON (each distinct prompt once;
/// a benchmark's once per record and seed): 16 MiB.
pub const DEFAULT_MAX_REQUEST_PROMPT_BYTES: usize = 16 << 20;
/// Default largest total of the job specifications one request creates, as JSON (every job,
/// each with its prompt by reference): 32 MiB.
pub const DEFAULT_MAX_REQUEST_JOB_BYTES: usize = 32 << 20;
/// Default most bytes of the jobs one page of a listing shows (`GET /v1/batches/{id}`,
/// `GET /v1/correlations/{id}`): 4 MiB.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 4 << 20;
/// Default most proposal tokens one job may generate, `n_mcmc × max_new_tokens`: 10 million.
pub const DEFAULT_MAX_JOB_TOKENS: u64 = 10_000_000;
/// Default requests per minute per bearer token.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
/// Most problem errors reported for one request.
const MAX_REPORTED_PROBLEMS: usize = 20;
/// Most characters of one input value a client error quotes.
pub const MAX_QUOTED_CHARS: usize = 200;
/// Most characters of a client error message.
pub(crate) const MAX_MESSAGE_CHARS: usize = 4096;

/// RequestLimits on what one request may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest number of jobs (problems × methods × seeds × chains) one request may create.
    pub max_jobs_per_request: usize,
    /// Largest prompt in bytes (`prompt`, each `problems[i].prompt`, each `bench.records[i]` as
    /// JSON); token-id prompts count 4 bytes per id.
    pub max_prompt_bytes: usize,
    /// Most characters of a problem id (`problems[i].id`, a dataset record's id) and of
    /// `submission_key`. Correlation ids are held to [`powerfleet_jobs`]'s own limit.
    pub max_id_chars: usize,
    /// Largest `bench.template_text` in bytes.
    pub max_template_bytes: usize,
    /// Largest total of the prompts a request stores, as JSON: each distinct prompt once, a
    /// benchmark's rendered prompts once per record and seed (measured before rendering).
    pub max_request_prompt_bytes: usize,
    /// Largest total of the job specifications a request creates, as JSON: every job of every
    /// problem, method, seed and chain, each with its prompt by reference (measured before any
    /// job is built).
    pub max_request_job_bytes: usize,
    /// Most bytes of jobs one page of a listing holds; a page stops before the job that would
    /// pass it (but holds at least one job), and says where the next page starts.
    pub max_page_bytes: usize,
    /// Most proposal tokens one job may generate: `n_mcmc × max_new_tokens` for MCMC methods,
    /// `max_new_tokens` for the others.
    pub max_job_tokens: u64,
    /// Requests per minute per bearer token (with no tokens configured: for all callers
    /// together); 0 turns the limit off. Over it: 429 with `Retry-After`.
    pub rate_limit_per_minute: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_jobs_per_request: DEFAULT_MAX_JOBS_PER_REQUEST,
            max_prompt_bytes: DEFAULT_MAX_PROMPT_BYTES,
            max_id_chars: DEFAULT_MAX_ID_CHARS,
            max_template_bytes: DEFAULT_MAX_TEMPLATE_BYTES,
            max_request_prompt_bytes: DEFAULT_MAX_REQUEST_PROMPT_BYTES,
            max_request_job_bytes: DEFAULT_MAX_REQUEST_JOB_BYTES,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            max_job_tokens: DEFAULT_MAX_JOB_TOKENS,
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
        }
    }
}

/// Which models an API request may name. The CLI's `submit` takes any model reference (its user
/// is the operator); a request to the API is a token holder's, so it may name only
///
/// - a model name the operator configured (`serve --model NAME`, as the workers register it with
///   `--model NAME=REFERENCE`), or
/// - a built-in toy model `toy:NAME` (no file path, no `?` options).
///
/// Anything else (an inference-server URL, a toy model file, toy options) would let a token
/// holder choose where workers send requests and what the API reads, and is refused unless the
/// operator allows references (`serve --allow-model-references`). Credentials never come from a
/// request: a reference with `key_env`, and any hosted-API reference (which would send the
/// workers' API key to a URL of the request's choosing), is refused even then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    /// Model names the operator configured; the workers resolve them.
    pub names: BTreeSet<String>,
    /// Whether requests may also name inference-server references, toy model files and toy
    /// options.
    pub allow_references: bool,
    /// The operator's own submissions (the CLI's `submit`): any model reference, credentials
    /// included, and graded runs on any records, programming problems included (a token
    /// holder's records may carry no test code: [`check_caller_records`]).
    pub operator: bool,
    /// Model names whose reference (`serve --model NAME=REFERENCE`) is a hosted chat API, which
    /// runs no MCMC.
    pub hosted: BTreeSet<String>,
}

/// A `serve --model` value that [`ModelPolicy::from_flags`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelFlagError {
    /// `NAME=REFERENCE` with an empty name or reference.
    #[error(
        "--model must be NAME or NAME=REFERENCE with both parts non-empty, got {}",
        quote(.entry)
    )]
    EmptyPart {
        /// The value as given.
        entry: String,
    },
    /// The name is a model reference, or holds white space, control characters or `?`.
    #[error(
        "--model takes a model name as the workers register it (--model NAME=REFERENCE on the workers), such as qwen or qwen=vllm+http://gpu:8000?model=Qwen/Qwen2.5-7B; got {} (built-in toy models toy:NAME are always accepted; references are accepted with --allow-model-references)",
        quote(.entry)
    )]
    NotAName {
        /// The value as given.
        entry: String,
    },
}

impl ModelPolicy {
    /// A policy from the values of `serve --model`: `NAME`, or `NAME=REFERENCE` as given to the
    /// workers (only the name matters to the API; the workers resolve it).
    pub fn from_flags(
        entries: &[String],
        allow_references: bool,
    ) -> Result<ModelPolicy, ModelFlagError> {
        let mut names = BTreeSet::new();
        let mut hosted = BTreeSet::new();
        for entry in entries {
            let name = match entry.split_once('=') {
                Some((name, reference)) if name.is_empty() || reference.is_empty() => {
                    return Err(ModelFlagError::EmptyPart {
                        entry: entry.clone(),
                    });
                }
                Some((name, reference)) => {
                    let lower = reference.to_ascii_lowercase();
                    if ["openai+", "anthropic+", "gemini+"]
                        .iter()
                        .any(|p| lower.starts_with(p))
                    {
                        hosted.insert(name.to_string());
                    }
                    name
                }
                None => entry.as_str(),
            };
            if name.is_empty()
                || name.starts_with("toy:")
                || powerfleet_backends::is_remote_reference(name)
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '?')
            {
                return Err(ModelFlagError::NotAName {
                    entry: entry.clone(),
                });
            }
            names.insert(name.to_string());
        }
        Ok(ModelPolicy {
            names,
            allow_references,
            operator: false,
            hosted,
        })
    }

    /// The policy of the operator's own submissions: every model reference.
    pub fn operator() -> ModelPolicy {
        ModelPolicy {
            operator: true,
            ..ModelPolicy::default()
        }
    }

    /// Checks the model a request names in `field`; 400 naming the field and what is allowed.
    pub fn check(&self, field: &str, model: &str) -> Result<(), RequestError> {
        if self.operator || self.names.contains(model) {
            return Ok(());
        }
        if let Some(name) = model.strip_prefix("toy:")
            && powerfleet_models::builtin::names().any(|n| n == name)
        {
            return Ok(());
        }
        let lower = model.to_ascii_lowercase();
        if lower.contains("key_env") || lower.contains("key%5fenv") {
            return Err(RequestError::BadRequest(format!(
                "{field}: {} names a credential (key_env); credentials never come from a request. Name a model this API was started with ({})",
                quote(model),
                self.allowed()
            )));
        }
        if ["openai+", "anthropic+", "gemini+"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Err(RequestError::BadRequest(format!(
                "{field}: {} is a hosted-API reference, which would send the workers' API key to a URL of the request's choosing; the operator registers hosted models by name (serve --model NAME and the workers' --model NAME=REFERENCE). Allowed: {}",
                quote(model),
                self.allowed()
            )));
        }
        if self.allow_references {
            return Ok(());
        }
        Err(RequestError::BadRequest(format!(
            "{field}: {} is not allowed; name {}. Server URLs, toy model files and toy options are refused (the operator may allow them with serve --allow-model-references)",
            quote(model),
            self.allowed()
        )))
    }

    /// What a request may name, for error messages.
    fn allowed(&self) -> String {
        let toys = powerfleet_models::builtin::names()
            .map(|n| format!("toy:{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.names.is_empty() {
            format!(
                "a built-in toy model ({toys}); this API was started with no model names (serve --model NAME)"
            )
        } else {
            format!(
                "a model this API was started with ({}) or a built-in toy model ({toys})",
                self.names.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// `value` quoted, cut to its first [`MAX_QUOTED_CHARS`] characters: `"prefix"… (N characters)`.
pub fn quote(value: &str) -> String {
    let n = value.chars().count();
    if n <= MAX_QUOTED_CHARS {
        format!("{value:?}")
    } else {
        let prefix: String = value.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{prefix:?}… ({n} characters)")
    }
}

/// The body of `POST /v1/jobs`. Exactly one of `prompt`, `prompt_tokens` and `problems` is given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Model reference, such as `toy:pivot`.
    pub model: String,
    /// One prompt as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// One prompt as token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<Vec<TokenId>>,
    /// One prompt as chat messages, formatted through the model's chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Several problems, as the lines of a batch file (the id defaults to the 1-based index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<BatchLine>>,
    /// Base sampler configuration (default: every option at its default for method `power`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SamplerConfig>,
    /// Methods to run every problem with (default: the config's method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<Method>>,
    /// Seeds per problem and method (default: `[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    /// Chains per (problem, method, seed) (default: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<u64>,
    /// Correlation id (generated if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    /// Client key that makes resubmission idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_key: Option<String>,
    /// Let MCMC jobs run as one sample where the backend cannot run MCMC (default false).
    #[serde(default)]
    pub fallback_single_sample: bool,
    /// Format text prompts through the model's chat template (default false).
    #[serde(default)]
    pub chat: bool,
    /// A benchmark run instead of prompts: dataset records with reference answers, graded by the
    /// collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<GradedRunRequest>,
    /// Stop strings: each job's finished text is cut at the first match (outside the p^α
    /// target; the sampled tokens are kept and the cut is recorded in the result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// A label for the submission (1 to 200 printable characters), recorded with every result,
    /// such as the name of the experiment or comparison it is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
}

/// Most stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 1024;
/// Most messages of a chat prompt.
pub const MAX_CHAT_MESSAGES: usize = 1024;

/// The `bench` of a `POST /v1/jobs` request: a dataset the operator registered, the records of a
/// dataset, or the built-in suite; a template and a grader, as `powerfleet submit --bench` takes
/// them.
///
/// **Only operators choose code to run.** Records a request carries may not hold test code
/// (`test`), be of format `code`, or ask for a grader that runs the completion (`humaneval`):
/// such a request is refused with 422 ([`check_caller_records`]). Programming problems are
/// graded over the API only from a dataset the operator registered (`serve --dataset
/// NAME=PATH`, named here as `dataset`). The operator's CLI (`submit --bench FILE`) may grade
/// any file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradedRunRequest {
    /// A dataset the operator registered (`serve --dataset NAME=PATH`; `GET /v1/datasets` lists
    /// them), instead of `records` or `builtin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Dataset records, as the lines of a JSONL or multiple-choice dataset file (no test code:
    /// see above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<serde_json::Value>>,
    /// `suite` for the built-in suite on its toy models (instead of `records`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// `jsonl`, `multiple-choice` or `code` (default: `multiple-choice` when the first record
    /// has `choices`, `code` when it has `test` and `entry_point`, else `jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// A built-in template: `plain`, `math-cot`, `multiple-choice` (default: `multiple-choice`
    /// for multiple-choice records, else `plain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A user template holding `{question}` (instead of `template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_text: Option<String>,
    /// The grader, e.g. `{"kind": "math"}`, `{"kind": "math_lenient"}`,
    /// `{"kind": "regex", "pattern": "answer: (\\d+)"}` or `{"kind": "humaneval"}` (default:
    /// `choice` for multiple choice, `humaneval` for code, else `math`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grader: Option<powerfleet_jobs::Grader>,
    /// Price of generated tokens in US dollars per million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_mtok: Option<f64>,
    /// The markers of a reasoning trace, e.g. `{"open": "<think>", "close": "</think>"}` (the
    /// default): completions are graded on what follows the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_markers: Option<powerfleet_jobs::ReasoningMarkers>,
    /// A benchmark run the operator loaded from files (the CLI's `--bench FILE`, with its
    /// template file), instead of `records` or `builtin`. Never part of a request body.
    #[serde(skip)]
    pub loaded: Option<producer::GradedRun>,
    /// The registered dataset `dataset` names, put here by
    /// [`crate::datasets::Datasets::resolve`]. Never part of a request body.
    #[serde(skip)]
    pub resolved: Option<crate::datasets::RegisteredDataset>,
}

/// 422 when the records a caller sent would make a grader run code: a record holding `test`
/// (test code), format `code`, or an executing grader (`humaneval`). The message says why and
/// what to do instead. Only operators choose code to run: programming problems come from
/// datasets they registered (`serve --dataset`) or from their CLI.
pub fn check_caller_records(bench: &GradedRunRequest) -> Result<(), RequestError> {
    const INSTEAD: &str = "this API runs no code a request brings: graders that run completions (humaneval) grade only datasets the operator registered. Ask the operator to register the dataset (serve --dataset NAME=PATH) and send \"bench\": {\"dataset\": NAME} (GET /v1/datasets lists them), or run it from the CLI (powerfleet submit --bench FILE)";
    let Some(records) = &bench.records else {
        return Ok(());
    };
    if let Some(i) = records
        .iter()
        .position(|r| r.as_object().is_some_and(|o| o.contains_key("test")))
    {
        return Err(RequestError::Invalid(format!(
            "bench.records[{i}] holds test code (field test); {INSTEAD}"
        )));
    }
    if bench.format.as_deref() == Some("code") {
        return Err(RequestError::Invalid(format!(
            "bench.format code makes programming problems, graded by running their tests; {INSTEAD}"
        )));
    }
    if let Some(grader) = &bench.grader
        && grader.executes()
    {
        return Err(RequestError::Invalid(format!(
            "bench.grader {} runs the completion; {INSTEAD}",
            grader.name()
        )));
    }
    Ok(())
}

/// The benchmark run of a request; errors name the `bench` field and the record.
fn graded_run_of(bench: GradedRunRequest) -> Result<producer::GradedRun, RequestError> {
    use powerfleet_datasets::{DatasetFormat, Template};
    let bad = |m: String| RequestError::Invalid(m);
    const ONE_OF: &str = "bench needs exactly one of dataset (a registered dataset), records (dataset records) and builtin (\"suite\")";
    if let Some(run) = bench.loaded {
        if bench.records.is_some() || bench.builtin.is_some() || bench.dataset.is_some() {
            return Err(bad(ONE_OF.into()));
        }
        return Ok(run);
    }
    // A registered dataset's problems, or the records' (parsed), with their format.
    let parsed = match (bench.dataset, bench.records, bench.builtin.as_deref()) {
        (Some(name), None, None) => {
            let Some(dataset) = bench.resolved.filter(|d| d.name == name) else {
                return Err(bad(format!(
                    "bench.dataset {} is not a dataset of this server; registered: none (the operator registers one with serve --dataset NAME=PATH)",
                    quote(&name)
                )));
            };
            if bench.format.is_some() {
                return Err(bad(format!(
                    "bench.format: dataset {} has its own format ({}); drop bench.format",
                    quote(&name),
                    dataset.format.name()
                )));
            }
            // The registered problems themselves, shared: a request copies none of them.
            Some((dataset.format, std::sync::Arc::clone(&dataset.problems)))
        }
        (None, Some(records), None) => {
            let text: String = records.iter().map(|r| format!("{r}\n")).collect();
            let format = match bench.format.as_deref() {
                // From the first record (`choices`: multiple choice; `test` and `entry_point`:
                // code), as for files.
                None => DatasetFormat::detect(std::path::Path::new(""), &text),
                Some("jsonl") => DatasetFormat::Jsonl,
                Some("multiple-choice") => DatasetFormat::MultipleChoice,
                Some("code") => DatasetFormat::Code,
                Some(other) => {
                    return Err(bad(format!(
                        "bench.format must be jsonl, multiple-choice or code, got {}",
                        quote(other)
                    )));
                }
            };
            let problems = powerfleet_datasets::parse(&text, format).map_err(|e| {
                bad(format!(
                    "bench.records (line N is record N, counting from 1): {e}"
                ))
            })?;
            Some((format, producer::GradedProblem::many(problems)))
        }
        (None, None, _) => None,
        _ => return Err(bad(ONE_OF.into())),
    };
    let mut run = match (parsed, bench.builtin.as_deref()) {
        (None, Some("suite")) => {
            if bench.template.is_some() || bench.template_text.is_some() || bench.grader.is_some() {
                return Err(bad(
                    "bench.builtin suite has its own prompts and grader; drop bench.template, bench.template_text and bench.grader".into(),
                ));
            }
            producer::GradedRun::builtin_suite()
        }
        (None, Some(other)) => {
            return Err(bad(format!(
                "bench.builtin must be \"suite\", got {}",
                quote(other)
            )));
        }
        (Some((format, problems)), None) => {
            let template = match (bench.template.as_deref(), bench.template_text) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "give bench.template or bench.template_text, not both".into()
                    ));
                }
                (None, Some(text)) => {
                    Template::user("bench.template_text", text).map_err(|e| bad(e.to_string()))?
                }
                (Some(name), None) => Template::builtin(name).ok_or_else(|| {
                    bad(format!(
                        "bench.template must be one of plain, math-cot, multiple-choice (or give bench.template_text), got {}",
                        quote(name)
                    ))
                })?,
                (None, None) => Template::default_for(format),
            };
            producer::GradedRun {
                problems,
                template,
                grader: bench.grader,
                price_per_mtok: None,
                reasoning_markers: None,
            }
        }
        _ => return Err(bad(ONE_OF.into())),
    };
    run.price_per_mtok = bench.price_per_mtok;
    run.reasoning_markers = bench.reasoning_markers;
    Ok(run)
}

/// Turns a request into a submission (a batch), checking what the producer does not: the models
/// it names (`models`), exactly one kind of prompt, complete problems, and the limits.
fn build_submission(
    request: SubmitRequest,
    limits: &RequestLimits,
    models: &ModelPolicy,
) -> Result<Submission, RequestError> {
    models.check("model", &request.model)?;
    check_input_sizes(&request, limits)?;
    let graded_run = match request.bench {
        Some(b) => {
            if request.prompt.is_some()
                || request.prompt_tokens.is_some()
                || request.messages.is_some()
                || request.problems.is_some()
            {
                return Err(RequestError::Invalid(
                    "give bench or prompts (prompt, prompt_tokens, messages, problems), not both"
                        .into(),
                ));
            }
            if !models.operator {
                check_caller_records(&b)?;
            }
            let run = graded_run_of(b)?;
            // Each prompt's size once rendered, known before anything is rendered.
            for (i, p) in run.problems.iter().enumerate() {
                let rendered = run.template.rendered_size(&p.problem).bytes;
                if rendered > limits.max_prompt_bytes {
                    return Err(RequestError::Invalid(format!(
                        "bench.records[{i}] (record id {}) is {rendered} bytes once rendered with the {} template (each placeholder replaced by the record's text); at most {} bytes are accepted per prompt (max_prompt_bytes); shorten the record or use fewer placeholders",
                        quote(&p.problem.id),
                        run.template.name(),
                        limits.max_prompt_bytes
                    )));
                }
            }
            for p in run.problems.iter() {
                check_id(
                    &format!("bench.records: record id {}", quote(&p.problem.id)),
                    &p.problem.id,
                    limits,
                )?;
            }
            // The built-in suite names its own (toy) models, checked like the request's.
            for (i, p) in run.problems.iter().enumerate() {
                if let Some(model) = &p.model {
                    models.check(
                        &format!("bench problem {} (index {i}) model", quote(&p.problem.id)),
                        model,
                    )?;
                }
            }
            Some(run)
        }
        None => None,
    };
    let given: Vec<(&str, Option<Prompt>)> = vec![
        ("prompt", request.prompt.map(Prompt::Text)),
        ("prompt_tokens", request.prompt_tokens.map(Prompt::Tokens)),
        ("messages", request.messages.map(Prompt::Messages)),
    ];
    let mut given: Vec<(&str, Prompt)> = given
        .into_iter()
        .filter_map(|(name, prompt)| prompt.map(|p| (name, p)))
        .collect();
    let problems = match (given.len(), request.problems) {
        _ if graded_run.is_some() => Vec::new(),
        (1, None) => vec![SubmittedPrompt {
            id: None,
            prompt: given.pop().expect("one prompt").1,
        }],
        (0, Some(lines)) => problems_of(lines)?,
        (_, lines) => {
            let mut names: Vec<&str> = given.iter().map(|(name, _)| *name).collect();
            if lines.is_some() {
                names.push("problems");
            }
            let got = if names.is_empty() {
                "none of them".to_string()
            } else {
                names.join(" and ")
            };
            return Err(RequestError::Invalid(format!(
                "give exactly one of prompt (text), prompt_tokens (token ids), messages (chat messages) or problems (a list of {{\"id\", \"prompt\" or \"prompt_tokens\" or \"messages\"}}), got {got}"
            )));
        }
    };
    let config = request
        .config
        .unwrap_or_else(|| SamplerConfig::new(Method::Power));
    let methods = request.methods.unwrap_or_else(|| vec![config.method]);
    let seeds = request.seeds.unwrap_or_else(|| vec![0]);
    let chains = request.chains.unwrap_or(1);
    let n_problems = graded_run
        .as_ref()
        .map_or(problems.len(), |b| b.problems.len());
    let per_problem = methods.len() as u128 * seeds.len() as u128 * u128::from(chains);
    let total = n_problems as u128 * per_problem;
    if total > limits.max_jobs_per_request as u128 {
        return Err(RequestError::Invalid(format!(
            "this request makes {total} jobs (problems x methods x seeds x chains = {} x {} x {} x {chains}); at most {} are accepted per request (max_jobs_per_request), split it into several requests",
            n_problems,
            methods.len(),
            seeds.len(),
            limits.max_jobs_per_request
        )));
    }
    check_job_tokens(&config, &methods, limits)?;
    let submission = Submission {
        model: request.model,
        config,
        methods,
        problems,
        seeds,
        chains,
        correlation_id: request.correlation_id,
        batch: true,
        submission_key: request.submission_key,
        fallback_single_sample: request.fallback_single_sample,
        stop: request.stop.unwrap_or_default(),
        chat: request.chat,
        graded_run,
        label: request.label,
    };
    check_footprint(&submission, limits)?;
    Ok(submission)
}

/// 422 unless what `submission` would make the queue hold, measured before anything is
/// rendered or built ([`Submission::footprint`]), is within the request-wide limits: the
/// prompts it stores and the specifications of all of its jobs.
fn check_footprint(submission: &Submission, limits: &RequestLimits) -> Result<(), RequestError> {
    let f = submission.footprint();
    let problems = submission
        .graded_run
        .as_ref()
        .map_or(submission.problems.len(), |r| r.problems.len());
    if f.prompt_bytes > limits.max_request_prompt_bytes as u128 {
        let how = if submission.graded_run.is_some() {
            format!(
                "a benchmark's prompts are rendered per seed: {problems} records x {} seeds",
                submission.seeds.len()
            )
        } else {
            format!("{problems} prompts")
        };
        return Err(RequestError::Invalid(format!(
            "this request stores {} bytes of prompts as JSON ({how}); at most {} bytes are accepted per request (max_request_prompt_bytes, serve --max-request-prompt-bytes); send fewer seeds or shorter prompts, records or templates, or split it",
            f.prompt_bytes, limits.max_request_prompt_bytes
        )));
    }
    if f.job_bytes > limits.max_request_job_bytes as u128 {
        return Err(RequestError::Invalid(format!(
            "this request's {} jobs (problems x methods x seeds x chains = {problems} x {} x {} x {}) take {} bytes of job specifications (each with its problem id, settings, stop strings and grading reference; prompts are stored once, not per job); at most {} bytes are accepted per request (max_request_job_bytes, serve --max-request-job-bytes); send fewer seeds, methods or chains, or shorter stop strings or records, or split it",
            f.jobs,
            submission.methods.len(),
            submission.seeds.len(),
            submission.chains,
            f.job_bytes,
            limits.max_request_job_bytes
        )));
    }
    Ok(())
}

/// 422 if `id` (named by `field`) is longer than `max_id_chars`.
fn check_id(field: &str, id: &str, limits: &RequestLimits) -> Result<(), RequestError> {
    let n = id.chars().count();
    if n > limits.max_id_chars {
        return Err(RequestError::Invalid(format!(
            "{field} is {n} characters long ({}); at most {} are accepted (max_id_chars)",
            quote(id),
            limits.max_id_chars
        )));
    }
    Ok(())
}

/// 422 if a prompt named by `field` is larger than `max_prompt_bytes`.
fn check_prompt_size(
    field: &str,
    bytes: usize,
    limits: &RequestLimits,
) -> Result<(), RequestError> {
    if bytes > limits.max_prompt_bytes {
        return Err(RequestError::Invalid(format!(
            "{field} is {bytes} bytes (token ids count 4 bytes each); at most {} bytes are accepted (max_prompt_bytes)",
            limits.max_prompt_bytes
        )));
    }
    Ok(())
}

/// 422 unless `messages` (named by `field`) is a non-empty conversation of at most
/// [`MAX_CHAT_MESSAGES`] messages with known roles, within `max_prompt_bytes`.
pub fn check_messages(
    field: &str,
    messages: &[ChatMessage],
    limits: &RequestLimits,
) -> Result<(), RequestError> {
    let bad = RequestError::Invalid;
    if messages.is_empty() {
        return Err(bad(format!(
            "{field} must hold at least one message, got an empty list"
        )));
    }
    if messages.len() > MAX_CHAT_MESSAGES {
        return Err(bad(format!(
            "{field} holds {} messages; at most {MAX_CHAT_MESSAGES} are accepted",
            messages.len()
        )));
    }
    check_roles(field, messages)?;
    check_prompt_size(field, powerfleet_jobs::messages_byte_len(messages), limits)
}

/// 422 unless every message of `messages` (named by `field`) has one of [`CHAT_ROLES`].
pub fn check_roles(field: &str, messages: &[ChatMessage]) -> Result<(), RequestError> {
    match messages
        .iter()
        .enumerate()
        .find(|(_, m)| !CHAT_ROLES.contains(&m.role.as_str()))
    {
        Some((i, m)) => Err(RequestError::Invalid(format!(
            "{field}[{i}].role must be one of {}, got {}",
            CHAT_ROLES.join(", "),
            quote(&m.role)
        ))),
        None => Ok(()),
    }
}

/// 422 unless `stop` holds at most [`MAX_STOP_STRINGS`] non-empty strings of at most
/// [`MAX_STOP_BYTES`] bytes each.
pub fn check_stop(stop: &[String]) -> Result<(), RequestError> {
    let bad = RequestError::Invalid;
    if stop.len() > MAX_STOP_STRINGS {
        return Err(bad(format!(
            "stop holds {} strings; at most {MAX_STOP_STRINGS} are accepted",
            stop.len()
        )));
    }
    if let Some((i, s)) = stop
        .iter()
        .enumerate()
        .find(|(_, s)| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(bad(format!(
            "stop[{i}] must be 1 to {MAX_STOP_BYTES} bytes long, got {} bytes",
            s.len()
        )));
    }
    Ok(())
}

/// Checks the size of every input of a request before anything is built from it: prompts,
/// problem ids, the submission key, dataset records and the template text.
fn check_input_sizes(request: &SubmitRequest, limits: &RequestLimits) -> Result<(), RequestError> {
    if let Some(text) = &request.prompt {
        check_prompt_size("prompt", text.len(), limits)?;
    }
    if let Some(ids) = &request.prompt_tokens {
        check_prompt_size("prompt_tokens", ids.len().saturating_mul(4), limits)?;
    }
    if let Some(messages) = &request.messages {
        check_messages("messages", messages, limits)?;
    }
    check_stop(request.stop.as_deref().unwrap_or_default())?;
    for (i, line) in request.problems.iter().flatten().enumerate() {
        if let Some(id) = &line.id {
            check_id(&format!("problems[{i}].id"), id, limits)?;
        }
        if let Some(text) = &line.prompt {
            check_prompt_size(&format!("problems[{i}].prompt"), text.len(), limits)?;
        }
        if let Some(ids) = &line.prompt_tokens {
            check_prompt_size(
                &format!("problems[{i}].prompt_tokens"),
                ids.len().saturating_mul(4),
                limits,
            )?;
        }
        if let Some(messages) = &line.messages {
            check_messages(&format!("problems[{i}].messages"), messages, limits)?;
        }
    }
    if let Some(key) = &request.submission_key {
        check_id("submission_key", key, limits)?;
    }
    if let Some(bench) = &request.bench {
        if let Some(text) = &bench.template_text
            && text.len() > limits.max_template_bytes
        {
            return Err(RequestError::Invalid(format!(
                "bench.template_text is {} bytes; at most {} bytes are accepted (max_template_bytes)",
                text.len(),
                limits.max_template_bytes
            )));
        }
        for (i, record) in bench.records.iter().flatten().enumerate() {
            check_prompt_size(
                &format!("bench.records[{i}]"),
                producer::json_len(record),
                limits,
            )?;
        }
    }
    Ok(())
}

/// 422 if a job of `methods` under `config` may generate more than `max_job_tokens` proposal
/// tokens ([`Method::job_tokens`]).
fn check_job_tokens(
    config: &SamplerConfig,
    methods: &[Method],
    limits: &RequestLimits,
) -> Result<(), RequestError> {
    for &m in methods {
        let (tokens, product) = m.job_tokens(&config.for_method(m, methods));
        if tokens > limits.max_job_tokens {
            let what = match m.family() {
                Family::Single => product,
                _ => format!("{product} = {tokens} proposal"),
            };
            let lower = m.family().job_token_settings();
            return Err(RequestError::Invalid(format!(
                "{what} tokens per job (method {m}); at most {} are accepted per job (max_job_tokens, serve --max-job-tokens); lower {lower}",
                limits.max_job_tokens,
            )));
        }
    }
    Ok(())
}

/// The problems of a request, with batch-file semantics: each has exactly one of `prompt` and
/// `prompt_tokens`; the id defaults to the 1-based index.
fn problems_of(lines: Vec<BatchLine>) -> Result<Vec<SubmittedPrompt>, RequestError> {
    if lines.is_empty() {
        return Err(RequestError::Invalid(
            "problems must hold at least one problem, got an empty list".into(),
        ));
    }
    let mut problems = Vec::with_capacity(lines.len());
    let mut errors = Vec::new();
    for (i, mut line) in lines.into_iter().enumerate() {
        let prompt = match line.take_prompt() {
            Ok(prompt) => prompt,
            Err(e) => {
                errors.push(format!("problems[{i}]: {e}"));
                continue;
            }
        };
        problems.push(SubmittedPrompt {
            id: Some(line.id.unwrap_or_else(|| (i + 1).to_string())),
            prompt,
        });
        if errors.len() >= MAX_REPORTED_PROBLEMS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(problems)
    } else {
        Err(RequestError::Invalid(errors.join("; ")))
    }
}

impl SubmitRequest {
    /// The submission this request asks for, under `limits` and `models`.
    pub fn into_submission(
        self,
        limits: &RequestLimits,
        models: &ModelPolicy,
    ) -> Result<Submission, RequestError> {
        build_submission(self, limits, models)
    }
}

impl RequestLimits {
    /// The operator's own submissions (the CLI, the demo, benchmarks): at most
    /// [`producer::MAX_JOBS_PER_SUBMISSION`] jobs, and no limit on sizes or compute.
    pub fn operator() -> RequestLimits {
        RequestLimits {
            max_body_bytes: usize::MAX,
            max_jobs_per_request: producer::MAX_JOBS_PER_SUBMISSION,
            max_prompt_bytes: usize::MAX,
            max_id_chars: usize::MAX,
            max_template_bytes: usize::MAX,
            max_request_prompt_bytes: usize::MAX,
            max_request_job_bytes: usize::MAX,
            max_page_bytes: usize::MAX,
            max_job_tokens: u64::MAX,
            rate_limit_per_minute: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerfleet_jobs::CorrelationId;

    fn submission(body: serde_json::Value) -> Result<Submission, RequestError> {
        serde_json::from_value::<SubmitRequest>(body)
            .unwrap()
            .into_submission(&RequestLimits::default(), &ModelPolicy::default())
    }

    #[test]
    fn a_template_that_multiplies_its_record_is_refused_before_it_is_rendered() {
        // 2,000 placeholders: each record renders to 2,000 copies of itself (60 KB each: 120 MB).
        let template = "{question}".repeat(2000);
        let records: Vec<serde_json::Value> = (0..2)
            .map(|i| serde_json::json!({"id": format!("r{i}"), "question": "a ".repeat(30_000), "answer": "1"}))
            .collect();
        let body = serde_json::json!({
            "model": "toy:tiny",
            "seeds": (0..8).collect::<Vec<u64>>(),
            "bench": {"records": records, "template_text": template},
        });
        let e = submission(body).unwrap_err().to_string();
        assert!(
            e.starts_with("bench.records[0] (record id \"r0\") is 120000000 bytes once rendered with the user template")
                && e.contains("(max_prompt_bytes)"),
            "{e}"
        );
        // Within the per-prompt limit, the renderings of every record and seed count together.
        let records: Vec<serde_json::Value> = (0..64)
            .map(|i| serde_json::json!({"id": format!("r{i}"), "question": "a ".repeat(2000), "answer": "1"}))
            .collect();
        let body = serde_json::json!({
            "model": "toy:tiny",
            "seeds": (0..100).collect::<Vec<u64>>(),
            "bench": {"records": records, "template_text": "{question}".repeat(60)},
        });
        let e = submission(body).unwrap_err().to_string();
        assert!(
            e.contains("64 records x 100 seeds")
                && e.contains("(max_request_prompt_bytes, serve --max-request-prompt-bytes)"),
            "{e}"
        );
    }

    #[test]
    fn every_job_a_request_would_create_counts_towards_its_job_bytes() {
        // 16 stop strings of 1 KiB travel in each of 10,000 jobs: 160 MB of specifications.
        let stop: Vec<String> = (0..16)
            .map(|i| format!("{i}{}", "x".repeat(1000)))
            .collect();
        let body = serde_json::json!({
            "model": "toy:tiny", "prompt": "a", "stop": stop,
            "seeds": (0..10_000).collect::<Vec<u64>>(),
        });
        let e = submission(body).unwrap_err().to_string();
        assert!(
            e.starts_with("this request's 10000 jobs (problems x methods x seeds x chains = 1 x 1 x 10000 x 1) take ")
                && e.contains("(max_request_job_bytes, serve --max-request-job-bytes)"),
            "{e}"
        );
        // A prompt sent with many jobs is stored once: 256 KiB with 1,000 seeds is accepted.
        let body = serde_json::json!({
            "model": "toy:tiny", "prompt": "a ".repeat(128 << 10),
            "seeds": (0..1000).collect::<Vec<u64>>(),
        });
        let s = submission(body).unwrap();
        let f = s.footprint();
        assert_eq!(f.jobs, 1000);
        assert!(f.prompt_bytes < (257 << 10), "{f:?}");
    }

    #[test]
    fn the_footprint_is_what_the_jobs_take_measured_before_they_are_built() {
        let records: Vec<serde_json::Value> = (0..5)
            .map(|i| serde_json::json!({"id": format!("q\"{i}"), "question": format!("pick\u{1} {i}"), "choices": ["a", "bb", "c\nc"], "answer": 1}))
            .collect();
        let bodies = [
            serde_json::json!({"model": "toy:tiny", "prompt": "a b", "seeds": [0, 7, 12345678901u64], "chains": 3, "stop": ["b"]}),
            serde_json::json!({"model": "toy:tiny", "problems": [{"prompt": "a"}, {"id": "x\"y", "prompt_tokens": [0, 1]}], "methods": ["power", "low-temp", "power-smc"]}),
            serde_json::json!({"model": "llamacpp+http://gpu:8080", "seeds": [0, 1, 2], "methods": ["power", "standard"], "bench": {"records": records, "template_text": "Q {question} {choices} {question}"}}),
        ];
        let references = ModelPolicy {
            allow_references: true,
            ..ModelPolicy::default()
        };
        for body in bodies {
            let s = serde_json::from_value::<SubmitRequest>(body.clone())
                .unwrap()
                .into_submission(&RequestLimits::default(), &references)
                .unwrap();
            let f = s.footprint();
            let built = s
                .stored_jobs(
                    &CorrelationId::generate(),
                    Some(powerfleet_jobs::BatchId::new()),
                )
                .unwrap();
            let job_bytes: u128 = built
                .specs
                .iter()
                .map(|j| serde_json::to_vec(j).unwrap().len() as u128)
                .sum();
            let prompt_bytes: u128 = built.prompts.iter().map(|p| p.json.len() as u128).sum();
            assert_eq!(f.jobs, built.specs.len() as u128, "{body}");
            // An upper bound, tight to the digits of the seeds and the prompts' sizes in the
            // stand-in reference (a graded run's seeds may render the same prompt).
            assert!(
                f.job_bytes >= job_bytes && f.job_bytes <= job_bytes + 40 * f.jobs,
                "{body}: {f:?} against {job_bytes}"
            );
            assert!(
                f.prompt_bytes >= prompt_bytes,
                "{body}: {f:?} against {prompt_bytes}"
            );
            if s.graded_run.is_none() {
                assert_eq!(f.prompt_bytes, prompt_bytes, "{body}");
            }
        }
    }

    #[test]
    fn a_request_naming_a_registered_dataset_shares_its_problems_and_copies_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sums.jsonl");
        let lines: String = (0..50)
            .map(|i| {
                format!(
                    "{{\"id\": \"s{i}\", \"prompt\": \"{i}+1\", \"answer\": \"{}\"}}\n",
                    i + 1
                )
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        let datasets = crate::datasets::Datasets::load(
            &[format!("sums={}", path.display())],
            powerfleet_datasets::SizeCap::DATASET,
        )
        .unwrap();
        let registered = std::sync::Arc::clone(&datasets.get("sums").unwrap().problems);
        let request = |seeds: u64| {
            let mut r = serde_json::from_value::<SubmitRequest>(serde_json::json!({
                "model": "toy:tiny",
                "seeds": (0..seeds).collect::<Vec<u64>>(),
                "bench": {"dataset": "sums"},
            }))
            .unwrap();
            datasets.resolve(&mut r).unwrap();
            r.into_submission(&RequestLimits::default(), &ModelPolicy::default())
        };
        // Accepted: the run holds the registered problems themselves.
        let s = request(2).unwrap();
        let run = s.graded_run.as_ref().unwrap();
        assert_eq!(run.problems.len(), 50);
        assert!(std::sync::Arc::ptr_eq(&run.problems, &registered));
        // Refused for its job count: still no copy left behind, the registration's the only
        // other holder.
        let e = request(1000).unwrap_err().to_string();
        assert!(e.contains("max_jobs_per_request"), "{e}");
        drop(s);
        assert_eq!(std::sync::Arc::strong_count(&registered), 2);
    }
}
