//! The linear-time extraction and normalization steps of [`super`] against the straightforward
//! (quadratic) versions they replaced, kept here as oracles: equal on every small input
//! (proptest), and the adversarial inputs that made the old ones quadratic run once at full
//! size. No assertion is on time; these inputs must simply finish.

use std::cell::Cell;

use proptest::prelude::*;

use super::extract::last_boxed;
use super::grade_math;
use super::lenient::{math_equal_lenient, same_elements};
use super::normalize::{
    Units, canonical_tex, control_end, ends_like_quantity, group_end, is_unit_text,
    strip_outer_braces, strip_units, unwrap_text,
};
use super::number::MAX_DEPTH;
use super::reference::math_equal;
use super::structure::nesting_depth;

/// Byte index in `s` of the `}` that closes a group whose `{` came just before `s`. Escaped
/// braces (`\{`, `\}`) do not count.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The old `last_boxed`: a brace scan per box, from the last one back.
fn oracle_last_boxed(text: &str) -> Option<String> {
    let mut starts: Vec<(usize, usize)> = ["\\boxed", "\\fbox"]
        .iter()
        .flat_map(|command| text.match_indices(command).map(|(at, m)| (at, m.len())))
        .collect();
    starts.sort_unstable_by_key(|&(at, _)| std::cmp::Reverse(at));
    starts.into_iter().find_map(|(at, len)| {
        let rest = &text[at + len..];
        let trimmed = rest.trim_start();
        if let Some(inner) = trimmed.strip_prefix('{') {
            let end = closing_brace(inner)?;
            return Some(inner[..end].trim().to_string());
        }
        if trimmed.len() == rest.len() {
            return None;
        }
        let token: String = trimmed
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '$')
            .collect();
        let token = token.trim_end_matches(['.', ',']);
        (!token.is_empty()).then(|| token.to_string())
    })
}

/// The old `unwrap_text`: search from the start again after each removal.
fn oracle_unwrap_text(s: &str) -> String {
    let mut s = s.to_string();
    while let Some(start) = s.find("\\text{") {
        let inner = start + "\\text{".len();
        match closing_brace(&s[inner..]) {
            Some(len) => {
                s = format!(
                    "{}{}{}",
                    &s[..start],
                    &s[inner..inner + len],
                    &s[inner + len + 1..]
                );
            }
            None => s.replace_range(start..inner, ""),
        }
    }
    s
}

/// The old `strip_units`, on strings rebuilt at each step.
fn oracle_strip_units(s: &str, units: Units) -> String {
    fn text_unit(s: &str, units: Units) -> String {
        let Some(start) = s.rfind("\\text{") else {
            return s.to_string();
        };
        let inner_start = start + "\\text{".len();
        let Some(len) = closing_brace(&s[inner_start..]) else {
            return s.to_string();
        };
        let content = &s[inner_start..inner_start + len];
        let after: String = s[inner_start + len + 1..]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if !matches!(after.as_str(), "" | "^2" | "^3" | "^{2}" | "^{3}") {
            return s.to_string();
        }
        let before = s[..start].trim_end();
        let after_quantity = content.starts_with(char::is_whitespace) || ends_like_quantity(before);
        if !before.is_empty() && is_unit_text(content, units) && after_quantity {
            before.to_string()
        } else {
            s.to_string()
        }
    }
    fn unit_word(s: &str, units: Units) -> String {
        let mut head = s.trim_end();
        let mut peeled = false;
        while let Some(split) = head.rfind(char::is_whitespace) {
            let word = head[split..].trim();
            let core = ["^2", "^3", "^{2}", "^{3}"]
                .iter()
                .fold(word.trim_end_matches('.'), |w, e| w.trim_end_matches(e));
            if !units.is_unit(core) {
                break;
            }
            head = head[..split].trim_end();
            peeled = true;
        }
        if peeled && ends_like_quantity(head) {
            head.to_string()
        } else {
            s.to_string()
        }
    }
    let mut s = s.trim().to_string();
    loop {
        let stripped = unit_word(&text_unit(&s, units), units);
        if stripped == s {
            return s;
        }
        s = stripped;
    }
}

/// The old `strip_outer_braces`: a brace scan per layer.
fn oracle_strip_outer_braces(s: &str) -> String {
    let mut s = s;
    while let Some(inner) = s.strip_prefix('{')
        && closing_brace(inner).is_some_and(|end| end + 1 == inner.len())
    {
        s = &inner[..inner.len() - 1];
    }
    s.to_string()
}

/// The old `canonical_tex`: a group scan per argument.
fn oracle_canonical_tex(s: &str) -> String {
    fn argument(chars: &[char], mut i: usize) -> Option<(String, usize)> {
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        match *chars.get(i)? {
            '{' => {
                let end = group_end(chars, i)?;
                Some((chars[i + 1..end].iter().collect(), end + 1))
            }
            '\\' => {
                let end = control_end(chars, i);
                Some((chars[i..end].iter().collect(), end))
            }
            '}' | ']' | '^' | '_' => None,
            c => Some((c.to_string(), i + 1)),
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '\\' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let end = control_end(&chars, i);
        let name: String = chars[i..end].iter().collect();
        i = end;
        match name.as_str() {
            "\\frac" => {
                if let Some((num, j)) = argument(&chars, i)
                    && let Some((den, k)) = argument(&chars, j)
                {
                    out.push_str(&format!(
                        "\\frac{{{}}}{{{}}}",
                        oracle_canonical_tex(&num),
                        oracle_canonical_tex(&den)
                    ));
                    i = k;
                    continue;
                }
                out.push_str(&name);
            }
            "\\sqrt" => {
                let mut j = i;
                let mut index = String::new();
                if chars.get(j) == Some(&'[')
                    && let Some(close) = group_end(&chars, j)
                {
                    let inner: String = chars[j + 1..close].iter().collect();
                    index = format!("[{}]", oracle_canonical_tex(&inner));
                    j = close + 1;
                }
                if let Some((radicand, k)) = argument(&chars, j) {
                    out.push_str(&format!(
                        "\\sqrt{index}{{{}}}",
                        oracle_canonical_tex(&radicand)
                    ));
                    i = k;
                    continue;
                }
                out.push_str(&name);
            }
            _ => out.push_str(&name),
        }
    }
    out
}

/// Answers made of the pieces that matter to these steps: commands, braces, brackets, escapes,
/// white space, units, digits, and the halves of `\text{` that removals can bring together.
fn tex() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "\\boxed", "\\fbox", "\\text{", "\\te", "xt{", "\\frac", "\\sqrt", "\\", "{", "}", "[",
        "]", " ", "  ", "$", ".", ",", "^2", "^{3}", "1", "5", "12", "x", "cm", "ways", "units",
        "degrees", "\\{", "\\}", "é",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn last_boxed_matches_the_per_box_scan(s in tex()) {
        prop_assert_eq!(last_boxed(&s), oracle_last_boxed(&s));
    }

    #[test]
    fn unwrap_text_matches_searching_again_after_each_removal(s in tex()) {
        prop_assert_eq!(unwrap_text(&s), oracle_unwrap_text(&s));
    }

    #[test]
    fn strip_units_matches_rebuilding_at_each_step(s in tex()) {
        for units in [Units::Lenient, Units::Reference] {
            prop_assert_eq!(strip_units(&s, units), oracle_strip_units(&s, units));
        }
    }

    #[test]
    fn strip_outer_braces_matches_a_scan_per_layer(s in tex()) {
        prop_assert_eq!(strip_outer_braces(&s), oracle_strip_outer_braces(&s));
    }

    #[test]
    fn canonical_tex_matches_a_scan_per_argument(s in tex()) {
        prop_assume!(nesting_depth(&s) <= MAX_DEPTH);
        prop_assert_eq!(canonical_tex(&s), oracle_canonical_tex(&s));
    }
}

/// The largest dataset record (and so reference) the API accepts: 256 KiB.
const MAX_REFERENCE: usize = 256 << 10;

/// `piece` repeated to about `bytes`.
fn repeated(piece: &str, bytes: usize) -> String {
    piece.repeat(bytes / piece.len())
}

#[test]
fn adversarial_references_and_completions_grade_to_the_right_verdict() {
    // 32,700 unclosed boxes (the reported reference): no box, so the reference is compared as
    // written, and a completion with another answer is wrong.
    let boxes = "\\boxed{".repeat(32_700);
    assert_eq!(last_boxed(&boxes), None);
    let g = grade_math("\\boxed{1}", &boxes);
    assert_eq!((g.extracted.as_deref(), g.correct), (Some("1"), false));
    // The same as a completion, at several MiB, before a closed box: that box is the answer.
    let completion = format!("{}\\boxed{{7}}", repeated("\\boxed{", 4 << 20));
    assert_eq!(last_boxed(&completion).as_deref(), Some("7"));
    let completion = format!("\\boxed{{7}}{}", repeated("\\fbox {", 4 << 20));
    let g = grade_math(&completion, "7");
    assert_eq!(
        (g.extracted.as_deref(), g.correct),
        (Some("7"), true),
        "no later box closes"
    );
    // Deep nesting: a hundred thousand braces around an answer.
    let nested = format!("{}5{}", "{".repeat(100_000), "}".repeat(100_000));
    assert_eq!(strip_outer_braces(&nested), "5");
    assert_eq!(
        last_boxed(&format!("\\boxed{nested}")).as_deref(),
        Some(&nested[1..nested.len() - 1])
    );
    assert!(grade_math(&format!("\\boxed{{{nested}}}"), &nested).correct);
    // Many groups, each of which a scan used to search from the start or to the end.
    let texts = repeated("\\text{a}", MAX_REFERENCE);
    assert_eq!(unwrap_text(&texts), "a".repeat(texts.len() / 8));
    let units = format!("5{}", repeated("\\text{cm}", MAX_REFERENCE));
    assert_eq!(strip_units(&units, Units::Lenient), "5");
    for piece in ["\\sqrt[}", "\\frac{]", "\\frac{a}{", "\\text{ "] {
        let answer = repeated(piece, MAX_REFERENCE);
        assert!(!math_equal(&answer, "1"), "{piece}");
        assert!(!math_equal_lenient(&answer, "1"), "{piece}");
    }
    // Sets of tens of thousands of items: compared as multisets once pairing them would cost
    // more than the budget.
    let items: Vec<String> = (0..30_000).map(|i| i.to_string()).collect();
    let set = format!("\\{{{}\\}}", items.join(","));
    let reversed: Vec<&str> = items.iter().rev().map(String::as_str).collect();
    let reordered = format!("\\{{{}\\}}", reversed.join(","));
    assert!(math_equal_lenient(&reordered, &set));
    let fractions: Vec<String> = (0..30_000).map(|i| format!("\\frac{{{i}}}{{1}}")).collect();
    assert!(!math_equal_lenient(
        &format!("\\{{{}\\}}", fractions.join(",")),
        &set
    ));
}

#[test]
fn sets_pair_in_any_order_within_the_budget() {
    assert!(math_equal_lenient(
        "\\{\\frac{2}{1},1,0.5\\}",
        "\\{\\frac{1}{2},2,1\\}"
    ));
    assert!(!math_equal_lenient(
        "\\{3,1,0.5\\}",
        "\\{\\frac{1}{2},2,1\\}"
    ));
    // Nested sets draw from one budget.
    let budget = Cell::new(3);
    assert!(
        !same_elements(
            &["1".into(), "2".into()],
            &["2".into(), "\\frac{2}{2}".into()],
            &budget
        ),
        "over the budget, items compare as strings"
    );
}
