//! Graders against answer pairs in the styles of MATH, GPQA and HumanEval runs, plus pinned
//! values (pass@k by hand, a fixed shuffle) that catch behaviour changes.

use powerfleet_grade::{
    Grade, correct_letter, extract_letter, grade_choice, grade_math, last_boxed, majority_vote,
    math_equal, math_equal_lenient, pass_at_k, shuffle_choices,
};
use proptest::prelude::*;

/// Pairs that must be equal: (predicted, reference).
const EQUAL: &[(&str, &str)] = &[
    // fractions
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac12", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\tfrac{1}{2}", ".5"),
    ("\\frac{3}{4}", "0.75"),
    ("\\frac{-1}{2}", "-\\frac{1}{2}"),
    ("\\frac{14}{3}", "4\\frac{2}{3}"),
    // radicals
    ("2\\sqrt{3}", "2\\sqrt3"),
    ("\\sqrt{12}", "2\\sqrt{3}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("3\\sqrt{2}", "3 \\sqrt 2"),
    // intervals and tuples
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\left( -\\infty, 3 \\right]", "(-\\infty,3]"),
    ("[2, \\infty)", "[2,\\infty)"),
    (
        "(-\\infty,-2)\\cup(2,\\infty)",
        "(-\\infty, -2) \\cup (2, \\infty)",
    ),
    ("(3, -1)", "(3,-1)"),
    ("(0.5, 2)", "\\left(\\frac{1}{2}, 2\\right)"),
    // sets and lists of solutions
    // units and degrees
    ("5\\text{ cm}", "5"),
    ("10 \\text{ cm}^2", "10"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("90 degrees", "90"),
    ("\\$18.90", "18.9"),
    ("25\\%", "25"),
    ("6 \\mbox{ inches}", "6"),
    // text answers
    ("\\text{Monday}", "Monday"),
    ("\\textbf{Monday}", "\\text{monday}"),
    ("\\text{(C)}", "(C)"),
    ("\\text{(C)}", "C"),
    // negatives and integers
    ("-5", "- 5"),
    ("-\\frac{3}{4}", "-0.75"),
    ("10,080", "10080"),
    ("1,000,000", "1000000"),
    ("10{,}080", "10080"),
    ("10,\\!080", "10080"),
    ("3.0", "3"),
    ("2.50", "2.5"),
    ("007", "7"),
    // assignments and wrappers
    ("x=2", "2"),
    ("k = -3", "-3"),
    ("y = 2x + 1", "2x+1"),
    ("$\\boxed{4}$", "4"),
    ("\\(7\\)", "7"),
    ("12.", "12"),
    // symbolic answers compared as strings
    ("\\pi r^2", "\\pi r^2"),
    ("\\frac{\\pi}{2}", "\\frac\\pi2"),
    ("2\\pi", "2 \\pi"),
    ("x^2+2x+1", "x^2 + 2x + 1"),
];

/// Pairs that must NOT be equal: (predicted, reference).
const NOT_EQUAL: &[(&str, &str)] = &[
    ("1/2", "2"),
    ("(1,2)", "(2,1)"),
    ("\\sqrt{2}", "2"),
    ("(1,2]", "(1,2)"),
    ("[1,2]", "(1,2)"),
    ("\\frac{1}{3}", "0.333"),
    ("-5", "5"),
    ("1234567", "1234568"),
    ("10080", "1008"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("(3,-1)", "(3,1)"),
    ("\\text{Monday}", "Tuesday"),
    ("2\\sqrt{3}", "3\\sqrt{2}"),
    ("x+1", "x-1"),
    ("", "0"),
    ("0", ""),
    ("(-\\infty,3]", "(-\\infty,3)"),
    ("\\pi", "3.14"),
];

#[test]
fn math_equal_accepts_equivalent_answers() {
    let failures: Vec<_> = EQUAL
        .iter()
        .filter(|(p, r)| !math_equal(p, r) || !math_equal(r, p))
        .collect();
    assert!(failures.is_empty(), "should be equal: {failures:?}");
}

proptest! {
    /// Model output is arbitrary text: no grader may panic on it, however malformed.
    #[test]
    fn graders_never_panic(text in r"[\\{}()\[\]$^_=,.0-9a-zA-Z \-+/*%°é]{0,60}") {
        let _ = powerfleet_grade::normalize(&text);
        let _ = powerfleet_grade::parse_number(&text);
        let _ = math_equal(&text, "\\frac{1}{2}");
        let _ = grade_math(&text, &text);
        let _ = extract_letter(&text, 4);
        let _ = majority_vote([Some(text.as_str()), Some("1")]);
    }
}

#[test]
fn deep_nesting_is_not_evaluated() {
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(powerfleet_grade::parse_number(&deep), None);
    assert_eq!(powerfleet_grade::parse_number("((1))"), Some(1.0));
    let fracs = format!("{}1{}", "\\frac{1}{".repeat(5000), "}".repeat(5000));
    assert!(math_equal(&fracs, &fracs));
    assert!(!math_equal(&fracs, "1"));
    let signs = format!("{}1", "-".repeat(5000));
    assert_eq!(powerfleet_grade::parse_number(&signs), None);
    let tuples = format!("{}1,2{}", "(".repeat(5000), ")".repeat(5000));
    assert!(!math_equal(&tuples, "(1,2)"));
}

/// Pairs the reference grader rejects and `math-lenient` accepts: (predicted, reference).
const LENIENT_ONLY: &[(&str, &str)] = &[
    ("\\frac{2}{4}", "\\frac{1}{2}"),
    ("\\{1,2\\}", "\\{2, 1\\}"),
    ("\\left\\{ -1, 3 \\right\\}", "\\{3,-1\\}"),
    ("1, -2", "-2, 1"),
    ("0.333333", "\\frac{1}{3}"),
    ("4.666667", "\\frac{14}{3}"),
    ("\\frac{6}{2}", "3"),
    // The reference reads a negative mixed number as -3 + 8/9.
    ("-3\\frac{8}{9}", "-\\frac{35}{9}"),
    // Units the reference does not know.
    ("5 students", "5"),
    ("12\\text{dollars}", "12"),
];

#[test]
fn the_lenient_grader_accepts_what_the_reference_rejects() {
    for (p, r) in LENIENT_ONLY {
        assert!(!math_equal(p, r), "math accepts {p:?} for {r:?}");
        assert!(
            math_equal_lenient(p, r),
            "math-lenient rejects {p:?} for {r:?}"
        );
    }
    for (p, r) in EQUAL {
        assert!(
            math_equal_lenient(p, r),
            "math-lenient rejects {p:?} for {r:?}"
        );
    }
}

#[test]
fn whitespace_inside_matrices_and_after_commands_does_not_matter() {
    let pairs = [
        (
            "\\begin{pmatrix}-1/3\\\\2/3\\end{pmatrix}",
            "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
        ),
        ("\\cotx", "\\cot x"),
        // A sum's terms in another order, as sympy would find.
        ("2+2k", "2k+2"),
        ("7i+-2", "-2 + 7i"),
    ];
    for (p, r) in pairs {
        assert!(math_equal(p, r) && math_equal(r, p), "{p:?} vs {r:?}");
    }
}

#[test]
fn math_equal_rejects_different_answers() {
    let failures: Vec<_> = NOT_EQUAL
        .iter()
        .filter(|(p, r)| math_equal(p, r) || math_equal(r, p))
        .collect();
    assert!(failures.is_empty(), "should differ: {failures:?}");
}

#[test]
fn last_boxed_handles_nesting_and_picks_the_last_box() {
    assert_eq!(
        last_boxed("so $\\boxed{\\frac{1}{\\sqrt{2}}}$.").as_deref(),
        Some("\\frac{1}{\\sqrt{2}}")
    );
    assert_eq!(
        last_boxed("first \\boxed{1}, then \\boxed{2}").as_deref(),
        Some("2")
    );
    assert_eq!(
        last_boxed("\\boxed{\\{1, 2\\}}").as_deref(),
        Some("\\{1, 2\\}")
    );
    assert_eq!(last_boxed("\\fbox{7}").as_deref(), Some("7"));
    assert_eq!(last_boxed("$\\boxed 5$").as_deref(), Some("5"));
    assert_eq!(last_boxed("\\boxed{3} and \\boxed{4").as_deref(), Some("3"));
    assert_eq!(last_boxed("the answer is 5"), None);
    assert_eq!(last_boxed("\\boxed"), None);
}

#[test]
fn grade_math_extracts_and_compares() {
    let grade = grade_math(
        "We get $x = \\dfrac12$, so the answer is $\\boxed{\\dfrac12}$.",
        "0.5",
    );
    assert_eq!(
        grade,
        Grade {
            extracted: Some("\\dfrac12".to_string()),
            correct: true
        }
    );
    // A full MATH solution as reference is reduced to its box.
    assert!(
        grade_math(
            "\\boxed{10080}",
            "Thus there are $\\boxed{10,\\!080}$ ways."
        )
        .correct
    );
    // Minerva format without a box.
    let grade = grade_math(
        "Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.",
        "0.75",
    );
    assert_eq!(grade.extracted.as_deref(), Some("\\frac{3}{4}"));
    assert!(grade.correct);
    let grade = grade_math("I could not solve it.", "3");
    assert_eq!(
        grade,
        Grade {
            extracted: None,
            correct: false
        }
    );
    assert!(!grade_math("\\boxed{2}", "1/2").correct);
}

#[test]
fn grade_serializes() {
    let grade = grade_math("\\boxed{1}", "1");
    let json = serde_json::to_string(&grade).unwrap();
    assert_eq!(json, r#"{"extracted":"1","correct":true}"#);
    assert_eq!(serde_json::from_str::<Grade>(&json).unwrap(), grade);
}

#[test]
fn pass_at_k_matches_hand_computed_values() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(pass_at_k(5, 2, 1), 0.4));
    assert!(close(pass_at_k(5, 2, 2), 0.7));
    assert!(close(pass_at_k(5, 2, 5), 1.0));
    assert!(close(pass_at_k(5, 0, 3), 0.0));
    assert!(close(pass_at_k(5, 5, 1), 1.0));
    // 1 - C(7,3)/C(10,3) = 1 - 35/120 = 85/120
    assert!(close(pass_at_k(10, 3, 3), 85.0 / 120.0));
    // k = 1 is the fraction correct
    assert!(close(pass_at_k(200, 37, 1), 37.0 / 200.0));
    assert!(close(pass_at_k(1, 1, 1), 1.0));
}

proptest! {
    #[test]
    fn pass_at_k_is_monotone_and_bounded(n in 1u64..60, c_frac in 0.0f64..=1.0, k_frac in 0.0f64..=1.0) {
        let c = ((n as f64) * c_frac) as u64;
        let k = (((n as f64) * k_frac) as u64).max(1);
        let p = pass_at_k(n, c, k);
        prop_assert!((0.0..=1.0).contains(&p), "pass@{k} = {p} for n={n}, c={c}");
        if k < n {
            prop_assert!(pass_at_k(n, c, k + 1) >= p, "not monotone in k at n={n} c={c} k={k}");
        }
        if c < n {
            prop_assert!(pass_at_k(n, c + 1, k) >= p, "not monotone in c at n={n} c={c} k={k}");
        }
    }

    #[test]
    fn shuffle_round_trips_through_grade_choice(n in 1usize..10, seed: u64, correct in 0usize..10) {
        let correct = correct % n;
        let perm = shuffle_choices(n, seed);
        let shown = correct_letter(&perm, correct).unwrap();
        prop_assert_eq!(perm[(shown as u8 - b'A') as usize], correct);
        for displayed in 0..n {
            let letter = char::from(b'A' + displayed as u8);
            let grade = grade_choice(&format!("The answer is ({letter})."), &perm, correct);
            prop_assert_eq!(grade.extracted, Some(letter.to_string()));
            prop_assert_eq!(grade.correct, letter == shown);
        }
    }
}

#[test]
fn majority_vote_counts_equivalent_answers_and_breaks_ties_by_first_seen() {
    assert_eq!(
        majority_vote([Some("2"), None, Some("\\frac12"), Some("0.5"), Some("2")]),
        Some("2".to_string())
    );
    // 0.5 and \frac12 together outvote 3.
    assert_eq!(
        majority_vote([Some("3"), Some("0.5"), Some("\\dfrac{1}{2}"), None]),
        Some("0.5".to_string())
    );
    // Tie: the answer seen first wins.
    assert_eq!(
        majority_vote([None, Some("7"), Some("x = 5"), Some("5"), Some("7.0")]),
        Some("7".to_string())
    );
    assert_eq!(majority_vote([Some("b"), Some("a")]), Some("b".to_string()));
    assert_eq!(majority_vote([None, None, Some("  ")]), None);
    assert_eq!(majority_vote(Vec::<Option<&str>>::new()), None);
}

#[test]
fn extract_letter_reads_typical_phrasings() {
    let cases: &[(&str, Option<char>)] = &[
        ("so the result is $\\boxed{B}$", Some('B')),
        ("\\boxed{(D)}", Some('D')),
        ("\\boxed{\\text{C}}", Some('C')),
        ("The answer is (C).", Some('C')),
        ("the correct answer is A", Some('A')),
        ("Answer: D", Some('D')),
        ("**Answer:** B", Some('B')),
        ("The correct option is C because ...", Some('C')),
        ("Option (A) is tempting.\nAnswer: (B)", Some('B')),
        // the last explicit statement wins
        (
            "The answer is (A). Wait, recheck. The answer is (C).",
            Some('C'),
        ),
        ("Answer: A\n... actually \\boxed{D}", Some('D')),
        // final standalone letter
        ("Reasoning...\n\n(B)", Some('B')),
        ("Reasoning...\n**C**", Some('C')),
        ("so I pick (A)", Some('A')),
        // out of range letters are ignored
        ("Answer: E", None),
        ("Answer: E\nAnswer: B", Some('B')),
        // not an answer letter
        ("The answer is Avogadro's number", None),
        ("I am not sure.", None),
        ("", None),
    ];
    for (completion, want) in cases {
        assert_eq!(
            extract_letter(completion, 4),
            *want,
            "extract_letter({completion:?}, 4)"
        );
    }
    assert_eq!(extract_letter("Answer: E", 5), Some('E'));
}

#[test]
fn shuffle_for_a_fixed_seed_never_changes() {
    // Pinned (computed independently with a Python splitmix64 + Fisher-Yates): changing these
    // breaks the letters of stored benchmark results.
    assert_eq!(shuffle_choices(4, 0), PINNED_4_SEED_0.to_vec());
    assert_eq!(shuffle_choices(4, 42), PINNED_4_SEED_42.to_vec());
    assert_eq!(shuffle_choices(10, 7), PINNED_10_SEED_7.to_vec());
    assert_eq!(shuffle_choices(0, 1), Vec::<usize>::new());
    assert_eq!(shuffle_choices(1, 1), vec![0]);
}

const PINNED_4_SEED_0: [usize; 4] = [2, 0, 1, 3];
const PINNED_4_SEED_42: [usize; 4] = [1, 3, 0, 2];
const PINNED_10_SEED_7: [usize; 10] = [9, 5, 8, 6, 1, 2, 4, 7, 0, 3];

#[test]
fn grade_choice_maps_displayed_letter_to_original() {
    // Displayed A..D show originals 2, 0, 3, 1.
    let perm = [2, 0, 3, 1];
    let grade = grade_choice("The answer is (D)", &perm, 1);
    assert_eq!(
        grade,
        Grade {
            extracted: Some("D".to_string()),
            correct: true
        }
    );
    assert!(!grade_choice("The answer is (A)", &perm, 1).correct);
    assert!(grade_choice("The answer is (A)", &perm, 2).correct);
    assert_eq!(correct_letter(&perm, 3), Some('C'));
    assert_eq!(correct_letter(&perm, 9), None);
    assert_eq!(
        grade_choice("no idea", &perm, 1),
        Grade {
            extracted: None,
            correct: false
        }
    );
}
