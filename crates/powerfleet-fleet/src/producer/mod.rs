//! The producer: turns a submission (one prompt times chains, or a batch file times methods times
//! seeds) into jobs, checks every one before anything is enqueued, and enqueues them.
//!
//! Its parts: `batch_file` (a JSONL batch file of prompts, read in bounded memory), `graded`
//! (graded runs: dataset problems rendered per seed, with what the collector grades them by),
//! `expand` (a submission checked and expanded into its jobs), `footprint` (what a submission
//! would make the queue hold, measured before anything is built) and `submit` (enqueueing, with
//! the submission key, the batch's record and the receipt). This module holds what a submission
//! is.

mod batch_file;
mod expand;
mod footprint;
mod graded;
mod submit;

use powerfleet_jobs::{CorrelationId, Label, Prompt};
use powerfleet_sampler::{Method, SamplerConfig};

pub use batch_file::{
    BatchFileError, BatchLine, DEFAULT_MAX_BATCH_FILE_BYTES, MAX_BATCH_LINE_BYTES,
    parse_batch_file, read_batch_file,
};
pub use expand::{InvalidSubmission, StoredJobs};
pub use footprint::Footprint;
pub(crate) use footprint::json_len;
pub(crate) use graded::reference_kind;
pub use graded::{GradedProblem, GradedRun, MAX_MARKER_BYTES};
pub use submit::{Receipt, SubmitError, submit};

/// Largest number of jobs one submission may create.
pub const MAX_JOBS_PER_SUBMISSION: usize = 100_000;

/// A prompt a submission runs (one of its problems): its problem id and its prompt, without a
/// reference answer (a dataset problem with one is a [`GradedProblem`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SubmittedPrompt {
    /// Problem id within the batch.
    pub id: Option<String>,
    /// Its prompt.
    pub prompt: Prompt,
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
    ///
    /// [`JobSpec::stop`]: powerfleet_jobs::JobSpec::stop
    pub stop: Vec<String>,
    /// The submission's label, copied onto every job and its result ([`JobSpec::label`]).
    ///
    /// [`JobSpec::label`]: powerfleet_jobs::JobSpec::label
    pub label: Option<Label>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two toy problems (a text and a token-id prompt), three methods, two seeds, one chain.
    pub(super) fn submission() -> Submission {
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
}
