//! Grading one job's completion against the reference answer its job carries: the entry point
//! the results collector grades with before storing, and the report for results stored without
//! a grade.

use crate::{GradeError, index_of, letter};
use powerfleet_jobs::{
    GradeRecord, Grader, GraderMisfit, Grading, JobResult, JobStatus, ReferenceAnswer,
};

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
    /// The grader does not grade this kind of reference ([`Grader::fits`]).
    #[error(transparent)]
    Misfit(#[from] GraderMisfit),
    /// The grader is configured badly (an invalid pattern).
    #[error(transparent)]
    Grader(#[from] GradeError),
    /// The completion's text is missing, for the reason given.
    #[error("not graded: the completion has no text ({0})")]
    NoText(String),
    /// Grader `humaneval` runs the completion, which these pure graders never do: the collector
    /// grades such results in its sandbox (`powerfleet_sandbox`).
    #[error(
        "not graded: grader humaneval runs the completion, which only the collector's sandbox does"
    )]
    NeedsSandbox,
}

/// Checks a grader's own settings before any job carries it: a `regex` pattern must compile and
/// have a capture group. The producer checks a submission's grader with it.
pub fn check_grader(grader: &Grader) -> Result<(), GradeError> {
    match grader {
        Grader::Regex { pattern } => crate::extract_regex("", pattern).map(drop),
        Grader::Math | Grader::MathLenient | Grader::Choice | Grader::Exact | Grader::Humaneval => {
            Ok(())
        }
    }
}

/// Grades `completion` as `grading` says. A grader that does not fit the reference (a multiple-choice
/// grader for a free-form answer) or an invalid pattern is a job that cannot be graded: `Err`
/// with the reason.
///
/// The completion's reasoning trace ([`crate::split_reasoning`] with the grading's markers) is
/// cut off first: the graders see what follows it, and a completion whose trace never closes is
/// graded as stating no answer.
pub fn grade(grading: &Grading, completion: &str) -> Result<GradeRecord, GradingError> {
    let completion = crate::split_reasoning(completion, grading.reasoning_markers.as_ref())
        .answer
        .unwrap_or("");
    let record = |g: crate::Grade, answer_key: Option<String>| GradeRecord {
        grader: grading.grader.name().to_string(),
        extracted: g.extracted,
        answer_key,
        correct: g.correct,
    };
    grading.grader.fits(grading.reference.kind())?;
    let text = |g: crate::Grade| {
        let key = g.extracted.clone();
        record(g, key)
    };
    // One arm per grader; `fits` has refused every other pairing above.
    match (&grading.grader, &grading.reference) {
        (Grader::Math, ReferenceAnswer::Text(reference)) => {
            Ok(text(crate::grade_math(completion, reference)))
        }
        (Grader::MathLenient, ReferenceAnswer::Text(reference)) => {
            Ok(text(crate::grade_math_lenient(completion, reference)))
        }
        (Grader::Exact, ReferenceAnswer::Text(reference)) => {
            Ok(text(crate::grade_exact(completion, reference)))
        }
        (Grader::Regex { pattern }, ReferenceAnswer::Text(reference)) => {
            Ok(text(crate::grade_regex(completion, pattern, reference)?))
        }
        (
            Grader::Choice,
            ReferenceAnswer::Choice {
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
            let g = crate::grade_choice(completion, permutation, *correct);
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
        (Grader::Humaneval, ReferenceAnswer::Code { .. }) => Err(GradingError::NeedsSandbox),
        (grader, reference) => unreachable!(
            "Grader::fits refuses grader {grader} on a {:?} reference",
            reference.kind()
        ),
    }
}

/// Grades a completed result of a graded job against the reference it carries; `None` for any
/// other result (not completed, or not a graded job). The collector grades with it before
/// storing, and the report (`powerfleet_report::build`) grades results that were stored without
/// a grade. A `humaneval` result is `Err(GradingError::NeedsSandbox)` here: the collector runs
/// it through [`gradable_text`] and its sandbox instead.
pub fn grade_result(result: &JobResult) -> Option<Result<GradeRecord, GradingError>> {
    let (grading, text) = gradable_text(result)?;
    Some(text.and_then(|text| grade(grading, text)))
}

/// The grading and the completion text a completed result of a graded job is graded with:
/// `None` for any other result, `Err` when the completion has no text. Executing graders take
/// the answer text (cut at the job's stop string, as HumanEval's stop sequences end a
/// completion); the others the whole text.
pub fn gradable_text(result: &JobResult) -> Option<(&Grading, Result<&str, GradingError>)> {
    let grading = result.grading.as_ref()?;
    if result.status != JobStatus::Completed {
        return None;
    }
    let text = if grading.grader.executes() {
        result.answer_text()
    } else {
        result.text.as_deref()
    };
    // Text is never guessed: a completion whose text the server could not give stays ungraded.
    let text = match (text, &result.text_error) {
        (Some(text), _) => Ok(text),
        (None, Some(why)) => Err(GradingError::NoText(why.clone())),
        (None, None) => Ok(""),
    };
    Some((grading, text))
}

/// The reference as a user reads it: the text, or the right option's letter (in the dataset's
/// order) and its text.
pub fn reference_display(reference: &ReferenceAnswer) -> String {
    match reference {
        ReferenceAnswer::Text(t) => t.clone(),
        ReferenceAnswer::Choice {
            choices, correct, ..
        } => format!(
            "{} ({})",
            letter(*correct).unwrap_or('?'),
            choices.get(*correct).map_or("", String::as_str)
        ),
        ReferenceAnswer::Code { entry_point, .. } => format!("tests of {entry_point}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grading(grader: Grader, reference: ReferenceAnswer) -> Grading {
        Grading {
            template: "plain".into(),
            grader,
            reference,
            price_per_mtok: None,
            reasoning_markers: None,
        }
    }

    #[test]
    fn math_answers_are_extracted_and_compared() {
        let b = grading(Grader::Math, ReferenceAnswer::Text("\\frac{1}{2}".into()));
        let g = grade(&b, "so the answer is \\boxed{0.5}").unwrap();
        assert!(g.correct);
        assert_eq!(g.extracted.as_deref(), Some("0.5"));
        assert_eq!(g.answer_key.as_deref(), Some("0.5"));
        assert_eq!(g.grader, "math");
        assert!(!grade(&b, "\\boxed{2}").unwrap().correct);
    }

    #[test]
    fn the_answer_is_read_after_the_reasoning_trace() {
        let mut b = grading(Grader::Math, ReferenceAnswer::Text("4".into()));
        // A box inside the trace is not the answer.
        let g = grade(&b, "<think>maybe \\boxed{3}</think> so \\boxed{4}").unwrap();
        assert!(g.correct);
        let g = grade(&b, "<think>surely \\boxed{4}</think> I give up").unwrap();
        assert_eq!((g.extracted, g.correct), (None, false));
        // A trace that never closes: no answer, whatever it boxes.
        let g = grade(&b, "<think>it is \\boxed{4}").unwrap();
        assert_eq!((g.extracted, g.correct), (None, false));
        // The opening marker in the prompt (the chat template's), the closing one in the text.
        assert!(
            grade(&b, "hmm \\boxed{3}</think>\\boxed{4}")
                .unwrap()
                .correct
        );
        // Other markers, given in the spec.
        b.reasoning_markers = Some(powerfleet_jobs::ReasoningMarkers {
            open: "<reasoning>".into(),
            close: "</reasoning>".into(),
        });
        let g = grade(&b, "<reasoning>\\boxed{3}</reasoning>\\boxed{4}").unwrap();
        assert!(g.correct);
        assert!(!grade(&b, "<reasoning>\\boxed{4}").unwrap().correct);
    }

    #[test]
    fn the_lenient_grader_takes_what_math_refuses() {
        let reference = ReferenceAnswer::Text("\\frac{1}{3}".into());
        let strict = grading(Grader::Math, reference.clone());
        let lenient = grading(Grader::MathLenient, reference);
        assert!(!grade(&strict, "\\boxed{0.333333}").unwrap().correct);
        let g = grade(&lenient, "\\boxed{0.333333}").unwrap();
        assert!(g.correct);
        assert_eq!(g.grader, "math-lenient");
    }

    #[test]
    fn choices_map_back_through_the_shown_order() {
        // Shown order: C, A, B (original indices 2, 0, 1); the right option is original B.
        let b = grading(
            Grader::Choice,
            ReferenceAnswer::Choice {
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
        let b = grading(Grader::Exact, ReferenceAnswer::Text("paris".into()));
        assert!(grade(&b, "  paris\n").unwrap().correct);
        assert!(!grade(&b, "it is paris").unwrap().correct);
        let b = grading(
            Grader::Regex {
                pattern: r"answer: (\w+)".into(),
            },
            ReferenceAnswer::Text("paris".into()),
        );
        let g = grade(&b, "answer: rome. no wait, answer: paris").unwrap();
        assert!(g.correct);
        assert_eq!(g.extracted.as_deref(), Some("paris"));
        let bad = grading(
            Grader::Regex {
                pattern: "(".into(),
            },
            ReferenceAnswer::Text("x".into()),
        );
        assert!(
            grade(&bad, "x")
                .unwrap_err()
                .to_string()
                .contains("not a valid regex")
        );
    }

    #[test]
    fn a_graders_settings_are_checked_before_any_job_carries_it() {
        for grader in Grader::each() {
            let placeholder = matches!(grader, Grader::Regex { .. });
            // The placeholder pattern `PATTERN` has no capture group.
            assert_eq!(check_grader(&grader).is_err(), placeholder, "{grader}");
        }
        let regex = |pattern: &str| Grader::Regex {
            pattern: pattern.into(),
        };
        assert!(check_grader(&regex(r"answer: (\d+)")).is_ok());
        let err = check_grader(&regex("(")).unwrap_err().to_string();
        assert!(err.contains("not a valid regex"), "{err}");
    }

    #[test]
    fn a_grader_that_does_not_fit_the_reference_is_an_error() {
        let b = grading(Grader::Choice, ReferenceAnswer::Text("1".into()));
        assert!(
            grade(&b, "A")
                .unwrap_err()
                .to_string()
                .contains("multiple-choice reference")
        );
        let b = grading(
            Grader::Math,
            ReferenceAnswer::Choice {
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
    fn every_grader_grades_the_references_it_fits_and_refuses_the_others() {
        let references = [
            ReferenceAnswer::Text("4".into()),
            ReferenceAnswer::Choice {
                choices: vec!["x".into(), "y".into()],
                correct: 0,
                permutation: vec![1, 0],
            },
            ReferenceAnswer::Code {
                prompt: "def f():".into(),
                test: "def check(c): pass".into(),
                entry_point: "f".into(),
            },
        ];
        for grader in Grader::each() {
            // A pattern with a capture group in place of the placeholder.
            let grader = match grader {
                Grader::Regex { .. } => Grader::Regex {
                    pattern: r"(\d)".into(),
                },
                other => other,
            };
            for reference in &references {
                let fits = grader.fits(reference.kind());
                let graded = grade(&grading(grader.clone(), reference.clone()), "(A) 4");
                match (fits, graded) {
                    (Err(misfit), Err(GradingError::Misfit(e))) => assert_eq!(e, misfit),
                    (Ok(()), Err(GradingError::NeedsSandbox)) => assert!(grader.executes()),
                    (Ok(()), Ok(record)) => assert_eq!(record.grader, grader.name()),
                    (fits, graded) => panic!("{grader} on {reference:?}: {fits:?}, {graded:?}"),
                }
            }
        }
    }

    #[test]
    fn a_completion_without_text_is_never_graded_as_wrong() {
        use powerfleet_jobs::{JobResult, JobSpec, JobStatus, Prompt};
        use powerfleet_sampler::{Method, SamplerConfig};
        let spec = JobSpec {
            problem_id: Some("p".into()),
            grading: Some(grading(Grader::Exact, ReferenceAnswer::Text("".into()))),
            ..JobSpec::new(
                "m",
                Prompt::Text("q".into()),
                SamplerConfig::new(Method::Power),
            )
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
