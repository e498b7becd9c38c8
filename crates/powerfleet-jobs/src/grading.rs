//! What grading a job on a dataset problem needs and what it gives: the [`Grading`] a job and
//! its result carry (template, grader, [`ReferenceAnswer`], price, [`ReasoningMarkers`]), and the
//! collector's verdict, [`GradeRecord`].

use serde::{Deserialize, Serialize};

use crate::Grader;

/// What grading a job on a dataset problem needs: the reference answer, the grader, and how the
/// prompt was made. Travels with the job and its result, so the collector can grade without the
/// dataset. (Serialized as the job's and result's `bench` field.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grading {
    /// The prompt template the problem was rendered with (`plain`, `math-cot`,
    /// `multiple-choice`, `user`).
    pub template: String,
    /// How completions are graded.
    pub grader: Grader,
    /// The reference answer.
    pub reference: ReferenceAnswer,
    /// Price of the model's tokens in US dollars per million generated tokens, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_mtok: Option<f64>,
    /// The markers around a reasoning trace, which is not graded: the answer is what follows
    /// the trace, and a completion that never closes its trace has none. `None` (the default,
    /// and what specs written before this field decode to): `<think>` and `</think>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_markers: Option<ReasoningMarkers>,
}

/// The opening and closing markers of a reasoning trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningMarkers {
    /// Opens the trace, e.g. `<think>`.
    pub open: String,
    /// Closes the trace, e.g. `</think>`.
    pub close: String,
}

impl Default for ReasoningMarkers {
    fn default() -> Self {
        ReasoningMarkers {
            open: "<think>".to_string(),
            close: "</think>".to_string(),
        }
    }
}

/// A problem's reference answer, which a completion is graded against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReferenceAnswer {
    /// A free-form answer.
    Text(String),
    /// A multiple-choice answer.
    Choice {
        /// The options in the dataset's order.
        choices: Vec<String>,
        /// Index into `choices` of the right option.
        correct: usize,
        /// The order the options were shown in for this job:
        /// `permutation[shown_position] = original_index`.
        permutation: Vec<usize>,
    },
    /// A programming problem (HumanEval): what running a completion against the problem's tests
    /// needs. The program run is `prompt + completion + "\n" + test + "\n" + "check(entry_point)"`.
    Code {
        /// The problem's prompt as the dataset has it (the function's signature and docstring),
        /// which the completion continues.
        prompt: String,
        /// The test code, defining `check(candidate)`.
        test: String,
        /// The name of the function under test.
        entry_point: String,
    },
}

/// A graded completion, stored with the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeRecord {
    /// The grader that judged it.
    pub grader: String,
    /// The answer found in the completion as written; `None` when it states none.
    pub extracted: Option<String>,
    /// The answer in a form comparable across seeds, for majority votes: the extracted answer,
    /// or for multiple choice the chosen option's letter in the dataset's order.
    pub answer_key: Option<String>,
    /// Whether the answer is right.
    pub correct: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradings_written_before_reasoning_markers_still_decode() {
        let old = r#"{"template":"math-cot","grader":{"kind":"math"},"reference":{"text":"4"}}"#;
        let grading: Grading = serde_json::from_str(old).unwrap();
        assert_eq!(grading.reasoning_markers, None);
        assert_eq!(serde_json::to_string(&grading).unwrap(), old);
        let lenient: Grader = serde_json::from_str(r#"{"kind":"math_lenient"}"#).unwrap();
        assert_eq!(
            (lenient.clone(), lenient.name()),
            (Grader::MathLenient, "math-lenient")
        );
        let with: Grading = serde_json::from_str(
            r#"{"template":"plain","grader":{"kind":"math"},"reference":{"text":"4"},"reasoning_markers":{"open":"[","close":"]"}}"#,
        )
        .unwrap();
        assert_eq!(with.reasoning_markers.unwrap().close, "]");
    }
}
