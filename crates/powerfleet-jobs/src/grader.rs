//! How a completion is graded: [`Grader`], the closed set of graders a job can name.

use serde::{Deserialize, Serialize};

/// How a completion is graded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Grader {
    /// The last `\boxed{}` answer, normalized and compared as text and as numbers, with the
    /// verdicts of the reference MATH grader (PRM800K's).
    Math,
    /// Like `math`, but lists and sets in any order, unreduced fractions and decimals within a
    /// relative 1e-6 of the reference (rounded decimals) are correct too. Tagged `math_lenient`.
    MathLenient,
    /// The chosen letter, mapped back through the shown order of the options.
    Choice,
    /// The whole completion, trimmed, equal to the reference.
    Exact,
    /// The first capture group of the pattern's last match, equal to the reference (trimmed).
    Regex {
        /// A regular expression with one capture group around the answer.
        pattern: String,
    },
    /// HumanEval: the completion continues the problem's prompt and is run, sandboxed, against
    /// the problem's tests (a [`crate::ReferenceAnswer::Code`] reference).
    Humaneval,
}

impl Grader {
    /// The grader's name: `math`, `math-lenient`, `choice`, `exact`, `regex` or `humaneval`.
    pub fn name(&self) -> &'static str {
        match self {
            Grader::Math => "math",
            Grader::MathLenient => "math-lenient",
            Grader::Choice => "choice",
            Grader::Exact => "exact",
            Grader::Regex { .. } => "regex",
            Grader::Humaneval => "humaneval",
        }
    }

    /// Whether grading runs the completion (in a sandbox, off the collector's main loop) rather
    /// than reading it.
    pub fn executes(&self) -> bool {
        matches!(self, Grader::Humaneval)
    }
}
