//! Benchmark datasets for powerfleet studies: problems, their file formats, prompt templates and a
//! built-in suite on toy models whose right answers are known.
//!
//! - [`format`]: [`parse`] and [`load`] read JSONL, the MATH500 JSON array, multiple-choice
//!   JSONL and HumanEval's programming problems (JSONL, or `.jsonl.gz`) into [`Problem`]s, reporting every broken record (up to [`MAX_ERRORS`]) with its line
//!   or array index and field; [`DatasetFormat::detect`] picks the format from a file name and contents.
//! - [`template`]: [`Template`] turns a problem into a prompt (plain, the MATH chain-of-thought
//!   prompt, lettered multiple choice shuffled per seed, or a user file).
//! - [`suite`]: [`builtin_suite`], small questions on toy models where p^α finds the right answer
//!   and low-temperature sampling is led astray by a pivot token.
//!
//! Parsing and rendering are pure; [`load`] and [`Template::parse`] only read the file they are
//! given.

pub mod format;
pub mod suite;
pub mod template;

use serde::{Deserialize, Serialize};

pub use format::{
    DEFAULT_MAX_DATASET_BYTES, DatasetError, DatasetFormat, Location, MAX_ERRORS, RecordError,
    SizeCap, load, load_capped, load_detected, parse,
};
pub use suite::{CorrectMass, SUITE_ANSWER_PATTERN, SuiteError, SuiteItem, builtin_suite};
pub use template::{Rendered, Template, TemplateError};

/// One benchmark problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Its id in the dataset (given in the file, or the line number / array index).
    pub id: String,
    /// The question as written in the dataset, without any template.
    pub question: String,
    /// The reference answer.
    pub answer: Answer,
    /// Every other field of the record, kept as written.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The reference answer of a [`Problem`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// A free-form answer, graded MATH-style ([`powerfleet_grade::grade_math`]).
    Text(String),
    /// Multiple choice: the options in their original order and the index of the right one.
    Choice {
        /// The options, in the dataset's order.
        choices: Vec<String>,
        /// Index into `choices` of the right option.
        correct: usize,
    },
    /// A programming problem (HumanEval): the completion continues the problem's text (its
    /// function's signature and docstring) and must pass `test`.
    Code {
        /// The test code, which defines `check(candidate)`.
        test: String,
        /// The name of the function under test, passed to `check`.
        entry_point: String,
    },
}

impl Problem {
    /// Grades a completion of this problem. `permutation` is the one [`Template::render`]
    /// returned (`perm[displayed_position] = original_index`); multiple-choice problems rendered
    /// without one are graded as if shown in their original order. A programming problem is
    /// graded by running it, which this pure function never does: it is never correct here (the
    /// collector runs it in `powerfleet_sandbox`).
    pub fn grade(
        &self,
        completion: &str,
        permutation: Option<&[usize]>,
    ) -> powerfleet_grade::Grade {
        match &self.answer {
            Answer::Text(reference) => powerfleet_grade::grade_math(completion, reference),
            Answer::Choice { choices, correct } => match permutation {
                Some(perm) => powerfleet_grade::grade_choice(completion, perm, *correct),
                None => {
                    let identity: Vec<usize> = (0..choices.len()).collect();
                    powerfleet_grade::grade_choice(completion, &identity, *correct)
                }
            },
            Answer::Code { .. } => powerfleet_grade::Grade {
                extracted: None,
                correct: false,
            },
        }
    }
}
