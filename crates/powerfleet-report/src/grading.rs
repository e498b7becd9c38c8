//! Grading one result: the completion against the reference its job carries.

use powerfleet_grade::{GradeError, index_of, letter};
use powerfleet_jobs::{Bench, GradeRecord, Grader, JobResult, JobStatus, Reference};

/// Why a result cannot be graded.
#[derive(Debug, thiserror::Error)]
pub enum GradingError {
    /// The job shows another number of options than its reference has.
    #[error("the job shows {shown} options but its reference has {choices}")]
    OptionCount {
        /// Options shown (the permutation's length).
        shown: usize,
        /// Options in the reference.
        choices: usize,
    },
    /// Grader `choice` with a free-form reference.
    #[error(
        "grader choice needs a multiple-choice reference; use grader math, exact or regex for free-form answers"
    )]
    ChoiceWithoutChoices,
    /// A free-form grader with a multiple-choice reference.
    #[error("grader {grader} cannot grade a multiple-choice reference; use grader choice")]
    ChoicesNeedChoice {
        /// The grader's name.
        grader: &'static str,
    },
    /// The grader is configured badly (an invalid pattern).
    #[error(transparent)]
    Grader(#[from] GradeError),
    /// The completion's text is missing, for the reason given.
    #[error("not graded: the completion has no text ({0})")]
    NoText(String),
}

/// Grades `completion` as `bench` says. A grader that does not fit the reference (a multiple-choice
/// grader for a free-form answer) or an invalid pattern is a job that cannot be graded: `Err`
/// with the reason.
pub fn grade(bench: &Bench, completion: &str) -> Result<GradeRecord, GradingError> {
    let record = |g: powerfleet_grade::Grade, answer_key: Option<String>| GradeRecord {
        grader: bench.grader.name().to_string(),
        extracted: g.extracted,
        answer_key,
        correct: g.correct,
    };
    match (&bench.grader, &bench.reference) {
        (
            Grader::Choice,
            Reference::Choice {
                choices,
                correct,
                permutation,
            },
        ) => {
            if permutation.len() != choices.len() {
                return Err(GradingError::OptionCount {
                    shown: permutation.len(),
                    choices: choices.len(),
                });
            }
            let g = powerfleet_grade::grade_choice(completion, permutation, *correct);
            // The chosen option in the dataset's order, comparable across seeds.
            let key = g
                .extracted
                .as_deref()
                .and_then(|l| l.chars().next())
                .and_then(index_of)
                .and_then(|shown| permutation.get(shown))
                .and_then(|&original| letter(original))
                .map(String::from);
            Ok(record(g, key))
        }
        (Grader::Choice, Reference::Text(_)) => Err(GradingError::ChoiceWithoutChoices),
        (grader, Reference::Text(reference)) => {
            let g = match grader {
                Grader::Math => powerfleet_grade::grade_math(completion, reference),
                Grader::Exact => powerfleet_grade::grade_exact(completion, reference),
                Grader::Regex { pattern } => {
                    powerfleet_grade::grade_regex(completion, pattern, reference)?
                }
                Grader::Choice => unreachable!("matched above"),
            };
            let key = g.extracted.clone();
            Ok(record(g, key))
        }
        (grader, Reference::Choice { .. }) => Err(GradingError::ChoicesNeedChoice {
            grader: grader.name(),
        }),
    }
}

/// Grades a completed benchmark result against the reference it carries; `None` for any other
/// result (not completed, or not a benchmark job). The collector grades with it before storing,
/// and [`crate::build`] grades results that were stored without a grade.
pub fn grade_result(result: &JobResult) -> Option<Result<GradeRecord, GradingError>> {
    let bench = result.bench.as_ref()?;
    if result.status != JobStatus::Completed {
        return None;
    }
    // Text is never guessed: a completion whose text the server could not give stays ungraded.
    match (&result.text, &result.text_error) {
        (Some(text), _) => Some(grade(bench, text)),
        (None, Some(why)) => Some(Err(GradingError::NoText(why.clone()))),
        (None, None) => Some(grade(bench, "")),
    }
}

/// The reference as a user reads it: the text, or the right option's letter (in the dataset's
/// order) and its text.
pub fn reference_display(reference: &Reference) -> String {
    match reference {
        Reference::Text(t) => t.clone(),
        Reference::Choice {
            choices, correct, ..
        } => format!(
            "{} ({})",
            letter(*correct).unwrap_or('?'),
            choices.get(*correct).map_or("", String::as_str)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(grader: Grader, reference: Reference) -> Bench {
        Bench {
            template: "plain".into(),
            grader,
            reference,
            price_per_mtok: None,
        }
    }

    #[test]
    fn math_answers_are_extracted_and_compared() {
        let b = bench(Grader::Math, Reference::Text("\\frac{1}{2}".into()));
        let g = grade(&b, "so the answer is \\boxed{0.5}").unwrap();
        assert!(g.correct);
        assert_eq!(g.extracted.as_deref(), Some("0.5"));
        assert_eq!(g.answer_key.as_deref(), Some("0.5"));
        assert_eq!(g.grader, "math");
        assert!(!grade(&b, "\\boxed{2}").unwrap().correct);
    }

    #[test]
    fn choices_map_back_through_the_shown_order() {
        // Shown order: C, A, B (original indices 2, 0, 1); the right option is original B.
        let b = bench(
            Grader::Choice,
            Reference::Choice {
                choices: vec!["x".into(), "y".into(), "z".into()],
                correct: 1,
                permutation: vec![2, 0, 1],
            },
        );
        let right = grade(&b, "The answer is (C)").unwrap();
        assert!(right.correct);
        assert_eq!(right.extracted.as_deref(), Some("C"));
        assert_eq!(right.answer_key.as_deref(), Some("B"), "original letter");
        let wrong = grade(&b, "The answer is (A)").unwrap();
        assert!(!wrong.correct);
        assert_eq!(wrong.answer_key.as_deref(), Some("C"));
    }

    #[test]
    fn exact_and_regex_graders() {
        let b = bench(Grader::Exact, Reference::Text("paris".into()));
        assert!(grade(&b, "  paris\n").unwrap().correct);
        assert!(!grade(&b, "it is paris").unwrap().correct);
        let b = bench(
            Grader::Regex {
                pattern: r"answer: (\w+)".into(),
            },
            Reference::Text("paris".into()),
        );
        let g = grade(&b, "answer: rome. no wait, answer: paris").unwrap();
        assert!(g.correct);
        assert_eq!(g.extracted.as_deref(), Some("paris"));
        let bad = bench(
            Grader::Regex {
                pattern: "(".into(),
            },
            Reference::Text("x".into()),
        );
        assert!(
            grade(&bad, "x")
                .unwrap_err()
                .to_string()
                .contains("not a valid regex")
        );
    }

    #[test]
    fn a_grader_that_does_not_fit_the_reference_is_an_error() {
        let b = bench(Grader::Choice, Reference::Text("1".into()));
        assert!(
            grade(&b, "A")
                .unwrap_err()
                .to_string()
                .contains("multiple-choice reference")
        );
        let b = bench(
            Grader::Math,
            Reference::Choice {
                choices: vec!["x".into()],
                correct: 0,
                permutation: vec![0],
            },
        );
        assert!(
            grade(&b, "A")
                .unwrap_err()
                .to_string()
                .contains("use grader choice")
        );
    }

    #[test]
    fn a_completion_without_text_is_never_graded_as_wrong() {
        use powerfleet_jobs::{CorrelationId, JobId, JobResult, JobSpec, JobStatus, Prompt};
        use powerfleet_sampler::{Method, SamplerConfig};
        let spec = JobSpec {
            job_id: JobId::new(),
            correlation_id: CorrelationId::generate(),
            batch_id: None,
            problem_id: Some("p".into()),
            model: "m".into(),
            prompt: Prompt::Text("q".into()),
            config: SamplerConfig::new(Method::Power),
            seed: 0,
            stream: 0,
            submitted_at_ms: 0,
            fallback_single_sample: false,
            stop: Vec::new(),
            chat: false,
            bench: Some(bench(Grader::Exact, Reference::Text("".into()))),
        };
        let mut r = JobResult::for_spec(&spec, JobStatus::Completed, 1, None);
        r.text_error = Some("/detokenize answered 400: invalid token id".into());
        // An empty completion would match the empty reference; a missing one is not graded.
        let err = grade_result(&r).unwrap().unwrap_err().to_string();
        assert!(
            err.contains("not graded") && err.contains("invalid token id"),
            "{err}"
        );
        r.text = Some(String::new());
        assert!(grade_result(&r).unwrap().unwrap().correct);
    }
}
