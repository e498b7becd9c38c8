//! Pure graders for benchmark completions: no IO, no randomness beyond explicit seeds.
//!
//! - [`math`]: MATH-style answers. [`last_boxed`] pulls the last `\boxed{...}` out of a
//!   completion, [`normalize`] applies the Hendrycks (`strip_string`) and Minerva
//!   (`normalize_final_answer`) normalizations, and [`math_equal`] compares answers as strings,
//!   as numbers (relative tolerance 1e-6), element-wise as tuples and intervals, and
//!   order-insensitively as sets.
//! - [`choice`]: multiple choice (GPQA-style). [`extract_letter`] reads the chosen letter,
//!   [`shuffle_choices`] makes a seeded permutation that is stable across versions, and
//!   [`grade_choice`] maps the displayed letter back to the original option.
//! - [`extract`]: exact match after trimming and "first capture group of the last regex match".
//! - [`reasoning`]: [`split_reasoning`] cuts a completion's reasoning trace (`<think>...</think>`
//!   or the job's markers) off, so graders see only the answer after it.
//! - [`stats`]: the unbiased pass@k estimator, majority vote over equivalent answers, mean and
//!   standard error.
//! - [`job`]: [`grade`] a job's completion against the [`powerfleet_jobs::Grading`] it carries
//!   (the results collector's entry point), and [`grade_result`] a stored result.
//!
//! Every grader returns a [`Grade`]: what was extracted (as written) and whether it is correct.

pub mod choice;
pub mod extract;
pub mod job;
pub mod math;
pub mod reasoning;
pub mod stats;

use serde::{Deserialize, Serialize};

pub use choice::{
    correct_letter, extract_letter, grade_choice, index_of, letter, problem_shuffle_seed,
    shuffle_choices,
};
pub use extract::{extract_regex, grade_exact, grade_regex};
pub use job::{GradingError, check_grader, gradable_text, grade, grade_result, reference_display};
pub use math::{
    RELATIVE_TOLERANCE, extract_math_answer, grade_math, grade_math_lenient, hendrycks_normalize,
    last_boxed, math_equal, math_equal_lenient, normalize, parse_number,
};
pub use reasoning::{Reasoning, split_reasoning};
pub use stats::{majority_vote, mean_and_stderr, pass_at_k, percentile};

/// The outcome of grading one completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grade {
    /// The answer found in the completion, as written there (before normalization); `None` when
    /// the completion states no answer the grader recognizes.
    pub extracted: Option<String>,
    /// Whether the extracted answer matches the reference. Always `false` when nothing was
    /// extracted.
    pub correct: bool,
}

/// What can go wrong when a grader is configured badly (the completion itself never causes an
/// error: an unreadable completion is simply graded incorrect).
#[derive(Debug, thiserror::Error)]
pub enum GradeError {
    /// The answer pattern is not a valid regular expression.
    #[error(
        "answer pattern {pattern:?} is not a valid regex ({source}); expected a regex with one capture group around the answer"
    )]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why the regex crate rejected it.
        #[source]
        source: regex::Error,
    },
    /// The answer pattern has no capture group, so there is nothing to extract.
    #[error(
        "answer pattern {pattern:?} has no capture group; wrap the answer part in parentheses, e.g. \"answer: (\\d+)\""
    )]
    NoCaptureGroup {
        /// The pattern as given.
        pattern: String,
    },
}
