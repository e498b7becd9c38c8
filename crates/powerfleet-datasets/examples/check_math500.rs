//! End-to-end check of MATH500 grading: loads a MATH500 file with the dataset loader, renders
//! each problem with the `math-cot` template, and grades a completion that boxes the gold
//! answer (must be correct) and one that boxes another problem's answer (when it is a different one) (must be
//! wrong), with the `math` grader. Run by `scripts/check-math500.sh`.

use powerfleet_datasets::{Answer, DatasetFormat, Template, load};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check_math500 PATH/TO/MATH500.json");
        return ExitCode::from(2);
    };
    let problems = match load(&path, DatasetFormat::Math500) {
        Ok(problems) => problems,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let template = Template::builtin("math-cot").expect("math-cot is built in");
    let answers: Vec<&str> = problems
        .iter()
        .map(|p| match &p.answer {
            Answer::Text(text) => text.as_str(),
            Answer::Choice { .. } | Answer::Code { .. } => "",
        })
        .collect();
    let (mut right, mut rejected, mut wrong_pairs, mut failures) = (0, 0, 0, Vec::new());
    for (i, problem) in problems.iter().enumerate() {
        let rendered = template.render(problem, 0);
        if !rendered.prompt.contains(problem.question.trim()) {
            failures.push(format!("{}: the prompt lacks the question", problem.id));
        }
        let completion = |answer: &str| {
            format!("<think>Work it out.</think>\nSo the final answer is $\\boxed{{{answer}}}$.")
        };
        if problem.grade(&completion(answers[i]), None).correct {
            right += 1;
        } else {
            failures.push(format!(
                "{}: its gold answer {:?} graded wrong",
                problem.id, answers[i]
            ));
        }
        let other = answers[(i + 1) % answers.len()];
        // Another problem's answer, unless it is the same answer (`x=5` for `5`).
        let normalize = powerfleet_grade::hendrycks_normalize;
        if normalize(other) != normalize(answers[i]) {
            wrong_pairs += 1;
            if problem.grade(&completion(other), None).correct {
                failures.push(format!(
                    "{}: another problem's answer {other:?} graded correct for {:?}",
                    problem.id, answers[i]
                ));
            } else {
                rejected += 1;
            }
        }
    }
    println!(
        "{path}: {} problems; gold answers graded correct: {right}/{}; other problems' answers graded wrong: {rejected}/{wrong_pairs}",
        problems.len(),
        problems.len()
    );
    for failure in &failures {
        println!("FAIL {failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
