//! A batch as it was submitted ([`SubmissionRecord`]) and what it asked for
//! ([`SubmissionRequest`], [`GradedRequest`]): the producer publishes one per batch, the store
//! keeps it, so a report knows how many results to expect and what made them.

use powerfleet_sampler::{Method, SamplerConfig};
use serde::{Deserialize, Serialize};

use crate::{BatchId, CorrelationId, Label};

/// A batch as it was submitted: how many jobs it scheduled, and what for. The producer publishes
/// one per batch once its jobs are enqueued; the collector stores it, so a report knows how many
/// results to expect after Redis has forgotten the batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmissionRecord {
    /// The batch.
    pub batch_id: BatchId,
    /// Its correlation id.
    pub correlation_id: CorrelationId,
    /// The submission's label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// The model names its jobs run on (redacted references), sorted.
    pub models: Vec<String>,
    /// The methods its jobs use, in the order tables list them.
    pub methods: Vec<Method>,
    /// How many jobs it scheduled.
    pub scheduled: u64,
    /// When it was submitted, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// What the submission asked for, redacted; `None` in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<SubmissionRequest>,
}

/// What a submission asked for, as kept with its record: every setting that shaped its jobs,
/// without secrets (model references are redacted, an idempotency key is only noted) and without
/// the problems' text (counted, and identified with the jobs by a fingerprint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmissionRequest {
    /// The base sampler configuration; each method of the record replaces its method.
    pub config: SamplerConfig,
    /// Seeds per problem and method, when there are at most [`MAX_KEPT_SEEDS`] (else empty;
    /// `seed_count` says how many).
    pub seeds: Vec<u64>,
    /// How many seeds per problem and method.
    #[serde(default)]
    pub seed_count: u64,
    /// Chains per problem, method and seed.
    pub chains: u64,
    /// How many problems (prompts) it had.
    pub problems: u64,
    /// A fingerprint of its jobs' specs (prompts, methods, seeds, settings; ids left out): two
    /// submissions with equal fingerprints scheduled the same work.
    pub jobs_fingerprint: String,
    /// Stop strings applied to every job's text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Text prompts formatted through the backend's chat template.
    #[serde(default)]
    pub chat: bool,
    /// MCMC jobs allowed to run as one sample on backends without log-probabilities.
    #[serde(default)]
    pub fallback_single_sample: bool,
    /// The graded run's settings, for a graded run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graded: Option<GradedRequest>,
    /// Whether it carried an idempotency key (the key itself is not kept).
    #[serde(default)]
    pub submission_key: bool,
}

/// The settings of a graded run, as kept with its submission record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradedRequest {
    /// The template's name: a built-in name or `user`.
    pub template: String,
    /// A user template's text, when it is at most [`MAX_KEPT_TEMPLATE_BYTES`] long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_text: Option<String>,
    /// The grader's name; `None`: each problem's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grader: Option<String>,
    /// Price of generated tokens, US dollars per million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_mtok: Option<f64>,
}

/// The longest user template kept whole in a submission record.
pub const MAX_KEPT_TEMPLATE_BYTES: usize = 64 << 10;

/// The most seeds listed in a submission record; with more, only their count is kept (so a
/// record stays far below a stream entry's limit).
pub const MAX_KEPT_SEEDS: usize = 4096;
