//! The `math` grader against the reference grader's verdicts on MATH500 answer pairs, and every
//! MATH500 gold answer graded correct against itself.
//!
//! The data under `tests/data/` holds only the 500 gold answers with their ids and the pairs made
//! from them (no problem text); `scripts/math-reference-pairs.py` made it and says how.

use powerfleet_grade::{grade_math, math_equal};
use serde::Deserialize;

#[derive(Deserialize)]
struct Gold {
    id: String,
    answer: String,
}

#[derive(Deserialize)]
struct Pair {
    id: String,
    kind: String,
    candidate: String,
    gold: String,
    reference: bool,
}

fn lines<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn every_math500_gold_answer_boxed_grades_correct() {
    let golds: Vec<Gold> = lines("math500_answers.jsonl");
    assert_eq!(golds.len(), 500);
    let wrong: Vec<&str> = golds
        .iter()
        .filter(|g| {
            let completion = format!("So the answer is $\\boxed{{{}}}$.", g.answer);
            !grade_math(&completion, &g.answer).correct
        })
        .map(|g| g.id.as_str())
        .collect();
    assert!(wrong.is_empty(), "graded wrong: {wrong:?}");
}

/// Agreement with the reference on one set of pairs; panics on any accept the reference refuses.
fn agreement(name: &str) -> f64 {
    let pairs: Vec<Pair> = lines(name);
    let mut disagreements = Vec::new();
    for pair in &pairs {
        let ours = math_equal(&pair.candidate, &pair.gold);
        if ours != pair.reference {
            disagreements.push((ours, pair));
        }
    }
    for (ours, p) in &disagreements {
        eprintln!(
            "{name}: {} [{}] ours={ours} reference={}: {:?} vs gold {:?}",
            p.id, p.kind, p.reference, p.candidate, p.gold
        );
    }
    let false_accepts = disagreements.iter().filter(|(ours, _)| *ours).count();
    assert_eq!(
        false_accepts, 0,
        "{name}: accepted what the reference rejects"
    );
    let agreed = pairs.len() - disagreements.len();
    let rate = agreed as f64 / pairs.len() as f64;
    eprintln!(
        "{name}: {agreed}/{} agree ({:.2}%)",
        pairs.len(),
        100.0 * rate
    );
    rate
}

#[test]
fn agrees_with_the_reference_on_the_development_pairs() {
    assert!(agreement("math_pairs_dev.jsonl") >= 0.995);
}

#[test]
fn agrees_with_the_reference_on_the_held_out_pairs() {
    assert!(agreement("math_pairs_heldout.jsonl") >= 0.995);
}
