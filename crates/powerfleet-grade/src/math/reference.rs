//! The reference MATH grader's verdicts ([`math_equal`], grader `math`): PRM800K's `grade_answer`,
//! as the power-sampling paper's code grades, with the Hendrycks normalization
//! ([`hendrycks_normalize`]) that is its first test.

use super::normalize::{Units, normalize_with};
use super::number::{ABSOLUTE_FLOOR, canonical_integer, evaluate};
use super::structure::{bracketed, settled_as_text, split_top_level, union_parts_equal};

/// Whether `predicted` is the same answer as `reference`, with the verdicts of the reference
/// grader the MATH literature uses (PRM800K's `grade_answer`, as the power-sampling paper's
/// code grades): equal after the Hendrycks normalization ([`hendrycks_normalize`]); or equal
/// after [`normalize`](super::normalize); or, tuple and interval element by element (same
/// brackets, same order), union part by part, each element equal as follows:
///
/// - two plain fractions (`\frac{a}{b}`, `a/b`) must be the same fraction as written: `\frac{2}{4}`
///   is not `\frac{1}{2}` (an unreduced answer is wrong);
/// - an integer reference is only matched by an integer (`3`, `3.0`), never by `\frac{6}{2}`;
/// - otherwise both must evaluate to the same number exactly (up to float rounding, relative
///   1e-12): `0.5` equals `\frac{1}{2}` and `2\sqrt{3}` equals `\sqrt{12}`, but a rounded decimal
///   (`0.333333` for `\frac{1}{3}`) is wrong.
///
/// Lists and sets are compared in order, as the reference does: `1,2` is not `2,1`. See
/// [`math_equal_lenient`](super::math_equal_lenient) for the grader that accepts reordered sets
/// and rounded decimals. An empty answer equals nothing. `docs/grading.md` lists the known
/// differences.
pub fn math_equal(predicted: &str, reference: &str) -> bool {
    let (p, r) = (
        hendrycks_normalize(predicted),
        hendrycks_normalize(reference),
    );
    if !r.is_empty() && p == r {
        return true;
    }
    strict_equal(
        &normalize_with(predicted, Units::Reference),
        &normalize_with(reference, Units::Reference),
    )
}

/// Relative tolerance of [`math_equal`]'s numeric comparison: float rounding only.
const STRICT_TOLERANCE: f64 = 1e-12;

fn strict_equal(p: &str, r: &str) -> bool {
    if let Some(verdict) = settled_as_text(p, r) {
        return verdict;
    }
    if let Some(verdict) = union_parts_equal(p, r, strict_equal) {
        return verdict;
    }
    if let Some(b) = bracketed(r) {
        return bracketed(p).is_some_and(|a| {
            a.0 == b.0
                && a.2 == b.2
                && a.1.len() == b.1.len()
                && a.1.iter().zip(&b.1).all(|(x, y)| strict_element(x, y))
        });
    }
    if bracketed(p).is_some() {
        return false;
    }
    let (p_items, r_items) = (split_top_level(p, ","), split_top_level(r, ","));
    if p_items.len() > 1 || r_items.len() > 1 {
        return p_items.len() == r_items.len()
            && p_items
                .iter()
                .zip(&r_items)
                .all(|(x, y)| strict_element(x, y));
    }
    strict_element(p, r)
}

/// One element of [`math_equal`]'s comparison: the plain-fraction, integer and exact-number rules.
fn strict_element(p: &str, r: &str) -> bool {
    if p.is_empty() || r.is_empty() {
        return false;
    }
    if p == r {
        return true;
    }
    if let (Some(a), Some(b)) = (plain_fraction(p), plain_fraction(r)) {
        return a == b;
    }
    // The reference reads `-3\frac{8}{9}` as -3 + 8/9: a negative mixed number matches nothing
    // but itself.
    if negative_mixed_number(p) || negative_mixed_number(r) {
        return false;
    }
    if same_terms_reordered(p, r) {
        return true;
    }
    let (p_int, r_int) = (canonical_integer(p), canonical_integer(r));
    if let (Some(a), Some(b)) = (&p_int, &r_int) {
        return a == b;
    }
    if p_int.is_some() != r_int.is_some() {
        return false;
    }
    match (evaluate(p), evaluate(r)) {
        (Some(a), Some(b)) => {
            let diff = (a - b).abs();
            diff <= STRICT_TOLERANCE * a.abs().max(b.abs()) || diff <= ABSOLUTE_FLOOR
        }
        _ => false,
    }
}

/// Whether `s` is `-<digits>\frac{<digits>}{<digits>}`.
fn negative_mixed_number(s: &str) -> bool {
    let Some(body) = s.strip_prefix('-') else {
        return false;
    };
    let digits = body.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && plain_fraction(&body[digits..]).is_some_and(|(negative, ..)| !negative)
}

/// Whether `p` and `r` are the same sum with its terms in another order (`2k+2` and `2+2k`),
/// where the reference's symbolic check would run: at most two distinct letters, no exponent
/// of two or more digits and no `^(`.
fn same_terms_reordered(p: &str, r: &str) -> bool {
    let (Some(mut a), Some(mut b)) = (signed_terms(p), signed_terms(r)) else {
        return false;
    };
    if a.len() < 2 || a.len() != b.len() || !symbolic_check_runs(p) || !symbolic_check_runs(r) {
        return false;
    }
    a.sort();
    b.sort();
    a == b
}

/// The terms of a sum at the top level, each with its sign (`+-` is `-`); `None` when a term is
/// empty.
fn signed_terms(s: &str) -> Option<Vec<(bool, String)>> {
    let mut terms = Vec::new();
    let (mut depth, mut negative, mut current) = (0i32, false, String::new());
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && matches!(c, '+' | '-') && !current.ends_with(['^', '_']) {
            if current.is_empty() {
                if c == '-' {
                    negative = !negative;
                }
                continue;
            }
            terms.push((negative, std::mem::take(&mut current)));
            negative = c == '-';
            continue;
        }
        current.push(c);
    }
    if current.is_empty() {
        return None;
    }
    terms.push((negative, current));
    Some(terms)
}

/// Whether the reference's symbolic comparison would evaluate `s`: at most two distinct letters
/// (command names count, as the reference turns `\pi` into `pi`; `\frac`, `\sqrt`, `\cdot`,
/// `\times` do not), no `^(` and no exponent of two or more digits.
fn symbolic_check_runs(s: &str) -> bool {
    let mut rest = s.to_string();
    for command in ["\\frac", "\\sqrt", "\\cdot", "\\times", "\\div"] {
        rest = rest.replace(command, "");
    }
    let letters: std::collections::BTreeSet<char> =
        rest.chars().filter(char::is_ascii_alphabetic).collect();
    let flat: String = rest.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    let long_exponent = flat
        .split('^')
        .skip(1)
        .any(|e| e.chars().take_while(char::is_ascii_digit).count() >= 2);
    letters.len() <= 2 && !flat.contains("^(") && !long_exponent
}

/// A plain fraction of integers as (negative, numerator, denominator), as written.
fn plain_fraction(s: &str) -> Option<(bool, String, String)> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (num, den) = body
        .strip_prefix("\\frac{")?
        .strip_suffix('}')?
        .split_once("}{")?;
    let (negative, num) = match num.strip_prefix('-') {
        Some(n) => (!negative, n),
        None => (negative, num),
    };
    let int = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    (int(num) && int(den)).then(|| (negative, num.to_string(), den.to_string()))
}

/// The Hendrycks MATH normalization (`strip_string` of the MATH release, behind
/// `normalize_answer`), the first test of the reference grader: a whole-answer `\text{...}` is
/// unwrapped; `\!` and newlines go, `\\` becomes `\`, `\tfrac`/`\dfrac` become `\frac`, `\left`,
/// `\right`, degrees, `\$` and percent signs go, everything after a `\text{ ` (a unit) goes, a
/// leading `.` gets a `0`, a short left side `x=` is dropped, `\sqrt2` → `\sqrt{2}`, all spaces
/// go, `\frac12` → `\frac{1}{2}`, `0.5` → `\frac{1}{2}` and `a/b` → `\frac{a}{b}` (whole answer).
pub fn hendrycks_normalize(answer: &str) -> String {
    let mut s = answer.trim();
    if let Some(inner) = s.strip_prefix("\\text{").and_then(|t| t.strip_suffix('}'))
        && !inner.is_empty()
        && !inner.contains('}')
    {
        s = inner.trim();
    }
    let mut s = s.replace('\n', "").replace("\\!", "").replace("\\\\", "\\");
    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s.replace("\\left", "").replace("\\right", "");
    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "");
    if let Some(at) = s.find("\\text{ ") {
        s.truncate(at);
    }
    s = s.replace("\\%", "").replace('%', "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    if s.is_empty() {
        return s;
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    if let Some((lhs, rhs)) = s.split_once('=')
        && !rhs.contains('=')
        && lhs.len() <= 2
    {
        s = rhs.to_string();
    }
    s = hendrycks_sqrt(&s);
    s.retain(|c| c != ' ');
    s = hendrycks_fracs(&s);
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    hendrycks_slash(&s)
}

/// `\sqrt2` → `\sqrt{2}`: one character after `\sqrt` that is not `{` is braced.
fn hendrycks_sqrt(s: &str) -> String {
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\sqrt");
        match part.chars().next() {
            Some(c) if c != '{' => {
                out.push('{');
                out.push(c);
                out.push('}');
                out.push_str(&part[c.len_utf8()..]);
            }
            _ => out.push_str(part),
        }
    }
    out
}

/// `\frac12` → `\frac{1}{2}`, `\frac1{2}` → `\frac{1}{2}`; a `\frac` with fewer than two
/// characters after it leaves the whole answer unchanged.
fn hendrycks_fracs(s: &str) -> String {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\frac");
        if part.starts_with('{') {
            out.push_str(part);
            continue;
        }
        let mut chars = part.chars();
        let (Some(a), Some(b)) = (chars.next(), chars.next()) else {
            return s.to_string();
        };
        let rest = chars.as_str();
        if b == '{' {
            out.push_str(&format!("{{{a}}}{b}{rest}"));
        } else {
            out.push_str(&format!("{{{a}}}{{{b}}}{rest}"));
        }
    }
    out
}

/// `a/b` → `\frac{a}{b}` when the whole answer is two integers around one slash.
fn hendrycks_slash(s: &str) -> String {
    let canonical_int = |t: &str| t.parse::<i128>().is_ok_and(|n| n.to_string() == t);
    match s.split_once('/') {
        Some((a, b)) if canonical_int(a) && canonical_int(b) => format!("\\frac{{{a}}}{{{b}}}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_integers_compare_exactly() {
        assert!(!math_equal("1234567", "1234568"));
        assert!(math_equal("0012", "12"));
    }
}
