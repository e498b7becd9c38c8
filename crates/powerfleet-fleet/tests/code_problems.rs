//! Programming problems (HumanEval's records) through the one submission path: the `code` format
//! is detected, the prompt is used as it is, and every job carries what grading needs.

use powerfleet_fleet::request::{ModelPolicy, RequestLimits, SubmitRequest};
use powerfleet_jobs::{CorrelationId, Grader, ReferenceAnswer};
use serde_json::json;

fn request(bench: serde_json::Value) -> Result<Vec<powerfleet_jobs::JobSpec>, String> {
    let request: SubmitRequest = serde_json::from_value(json!({
        "model": "qwen", "methods": ["power", "standard"], "seeds": [0, 1], "bench": bench
    }))
    .map_err(|e| e.to_string())?;
    let submission = request
        .into_submission(&RequestLimits::operator(), &ModelPolicy::operator())
        .map_err(|e| e.to_string())?;
    submission
        .jobs(&CorrelationId::generate(), None)
        .map_err(|e| e.to_string())
}

#[test]
fn code_records_become_humaneval_jobs_that_carry_their_tests() {
    let prompt = "def add(a, b):\n    \"\"\"Adds.\"\"\"\n";
    let record = json!({
        "task_id": "toy/0", "prompt": prompt, "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"
    });
    let jobs = request(json!({"records": [record.clone()]})).unwrap();
    assert_eq!(jobs.len(), 4);
    for job in &jobs {
        assert_eq!(job.problem_id.as_deref(), Some("toy/0"));
        assert_eq!(job.prompt, powerfleet_jobs::Prompt::Text(prompt.into()));
        let grading = job.grading.as_ref().unwrap();
        assert_eq!(grading.grader, Grader::Humaneval);
        let ReferenceAnswer::Code {
            prompt: p,
            test,
            entry_point,
        } = &grading.reference
        else {
            panic!("{:?}", grading.reference)
        };
        assert_eq!((p.as_str(), entry_point.as_str()), (prompt, "add"));
        assert!(test.contains("def check"));
    }
    // The reference keeps the dataset's prompt under a user template too.
    let jobs =
        request(json!({"records": [record.clone()], "template_text": "Complete:\n{question}"}))
            .unwrap();
    let ReferenceAnswer::Code { prompt: p, .. } = &jobs[0].grading.as_ref().unwrap().reference
    else {
        panic!()
    };
    assert_eq!(p, prompt);
    // A grader that reads answers cannot grade code, nor humaneval free-form answers.
    let err = request(json!({"records": [record], "grader": {"kind": "math"}})).unwrap_err();
    assert!(err.contains("graded by running it"), "{err}");
    let err = request(
        json!({"records": [{"prompt": "1+1?", "answer": "2"}], "grader": {"kind": "humaneval"}}),
    )
    .unwrap_err();
    assert!(err.contains("needs a programming problem"), "{err}");
    let err = request(json!({"records": [{"prompt": "x"}], "format": "code"})).unwrap_err();
    assert!(
        err.contains("missing `test`") && err.contains("entry_point"),
        "{err}"
    );
}
