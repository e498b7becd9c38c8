//! The shape of an answer, as both comparisons read it: its nesting depth, its parts at the top
//! level (unions, comma lists), tuples and intervals, and the verdicts the text alone settles.

use super::number::MAX_DEPTH;

/// The verdicts both comparisons reach from the text alone: an empty answer equals nothing,
/// equal strings are equal, plain words compare ignoring ASCII case, and answers nested deeper
/// than [`MAX_DEPTH`] are only equal as strings. `None`: compare further.
pub(super) fn settled_as_text(p: &str, r: &str) -> Option<bool> {
    if p.is_empty() || r.is_empty() {
        return Some(false);
    }
    if p == r {
        return Some(true);
    }
    if nesting_depth(p) > MAX_DEPTH || nesting_depth(r) > MAX_DEPTH {
        return Some(false);
    }
    let word = |s: &str| s.len() > 1 && s.chars().all(|c| c.is_ascii_alphabetic());
    (word(p) && word(r)).then(|| p.eq_ignore_ascii_case(r))
}

/// Unions (`\cup`) compared part by part with `equal`; `None` when neither side is a union.
pub(super) fn union_parts_equal(
    p: &str,
    r: &str,
    equal: impl Fn(&str, &str) -> bool,
) -> Option<bool> {
    let (p_parts, r_parts) = (split_top_level(p, "\\cup"), split_top_level(r, "\\cup"));
    (p_parts.len() > 1 || r_parts.len() > 1).then(|| {
        p_parts.len() == r_parts.len() && p_parts.iter().zip(&r_parts).all(|(a, b)| equal(a, b))
    })
}

/// The deepest bracket nesting in `s`, counting all kinds; deeper answers than [`MAX_DEPTH`] are
/// only compared as strings, so hostile input cannot overflow the stack.
pub(super) fn nesting_depth(s: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0;
    for b in s.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Splits at `separator` where no bracket of any kind is open.
pub(super) fn split_top_level(s: &str, separator: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && bytes[i..].starts_with(separator.as_bytes()) {
            parts.push(s[start..i].to_string());
            i += separator.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(s[start..].to_string());
    parts
}

/// Whether the bracket at byte 0 of `s` closes at its last byte (counting all bracket kinds).
pub(super) fn encloses_whole(s: &str) -> bool {
    let mut depth = 0i32;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return i == s.len() - 1;
        }
    }
    false
}

/// A tuple or interval: opening bracket, at least two items, closing bracket.
pub(super) fn bracketed(s: &str) -> Option<(char, Vec<String>, char)> {
    let open = s.chars().next()?;
    let close = s.chars().last()?;
    if !matches!(open, '(' | '[') || !matches!(close, ')' | ']') || !encloses_whole(s) {
        return None;
    }
    let items = split_top_level(&s[1..s.len() - 1], ",");
    (items.len() >= 2).then_some((open, items, close))
}
