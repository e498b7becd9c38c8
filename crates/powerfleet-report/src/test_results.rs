//! Stored results for the unit tests: completed, graded jobs built field by field.

use powerfleet_jobs::{
    CorrelationId, GradeRecord, Grader, Grading, JobId, JobResult, JobStatus, ReferenceAnswer,
};
use powerfleet_sampler::{BlockStats, ChainStats, Method};

/// A completed, graded result of `problem` under `method` with `seed`.
pub(crate) fn result(
    method: Method,
    problem: &str,
    seed: u64,
    answer: &str,
    correct: bool,
) -> JobResult {
    JobResult {
        format: Some(powerfleet_jobs::ResultFormat::CURRENT),
        job_id: JobId::new(),
        correlation_id: CorrelationId::generate(),
        batch_id: None,
        problem_id: Some(problem.into()),
        model: "toy:m".into(),
        method,
        seed,
        stream: 0,
        status: JobStatus::Completed,
        tokens: vec![1, 2],
        text: Some(answer.into()),
        log_p: Some(-1.0),
        ends_with_eos: true,
        stats: ChainStats {
            proposals: 4,
            acceptances: 1 + seed % 2,
            blocks: vec![
                BlockStats {
                    proposals: 2,
                    acceptances: 1,
                },
                BlockStats {
                    proposals: 2,
                    acceptances: (seed % 2) as u32,
                },
            ],
            tokens_generated: 10,
            model_calls: 5,
            smc: None,
            lookahead: None,
        },
        attempts: 1,
        error: None,
        submitted_at_ms: 1_000,
        started_at_ms: Some(1_100),
        finished_at_ms: 1_000 + 100 * (seed + 1),
        exactness: None,
        fallback: None,
        pin: None,
        text_error: None,
        token_log_p: Vec::new(),
        prompt_tokens: None,
        stop: None,
        grading: Some(Grading {
            template: "plain".into(),
            grader: Grader::Exact,
            reference: ReferenceAnswer::Text("7".into()),
            price_per_mtok: Some(2.0),
            reasoning_markers: None,
        }),
        grade: Some(GradeRecord {
            grader: "exact".into(),
            extracted: Some(answer.into()),
            answer_key: Some(answer.into()),
            correct,
        }),
        prompt: None,
        alpha: None,
        grade_error: None,
        error_code: None,
        config: None,
        label: None,
        version: None,
    }
}

/// `result` that did not complete: failed, cancelled or dead, without completion or grade.
pub(crate) fn not_completed(
    method: Method,
    problem: &str,
    seed: u64,
    status: JobStatus,
) -> JobResult {
    let mut r = result(method, problem, seed, "", false);
    r.status = status;
    r.tokens.clear();
    r.text = None;
    r.grade = None;
    r.error = Some(format!("{} on purpose", status.as_str()));
    r
}
