//! The lenient grader's verdicts ([`math_equal_lenient`], grader `math-lenient`): what
//! [`math_equal`] accepts, and numbers within [`RELATIVE_TOLERANCE`] and sets in any order,
//! their items paired within a budget ([`PAIRING_BUDGET`]).

use std::cell::Cell;

use super::normalize::normalize;
use super::number::{ABSOLUTE_FLOOR, RELATIVE_TOLERANCE, canonical_integer, evaluate};
use super::reference::math_equal;
use super::structure::{
    bracketed, encloses_whole, settled_as_text, split_top_level, union_parts_equal,
};

/// Whether two answers are the same, more leniently than [`math_equal`] (the `math-lenient`
/// grader): after [`normalize`], equal as strings (plain words ignoring ASCII case); or both
/// integers with the same value; or both numbers within [`RELATIVE_TOLERANCE`] (so a decimal
/// rounded to six places matches a fraction, and `\frac{6}{2}` matches `3`); or unions (`\cup`)
/// part by part; or tuples and intervals with the same brackets, element by element
/// (`(1,2]` ≠ `(1,2)`, `(1,2)` ≠ `(2,1)`); or sets `\{...\}` and bare comma lists `1,2` with the
/// same elements in any order. Everything [`math_equal`] accepts, it accepts too. An empty
/// answer equals nothing.
pub fn math_equal_lenient(predicted: &str, reference: &str) -> bool {
    math_equal(predicted, reference)
        || equal_normalized(&normalize(predicted), &normalize(reference))
}

/// Most item comparisons [`same_elements`] makes while pairing the items of sets in any order,
/// over one comparison of two answers (nested sets included); past it, sets compare as multisets
/// of their normalized items. It keeps a comparison linear in its answers' size: pairing k items
/// of an answer of n bytes costs about min(k², budget) × n / k ≤ √budget × n.
pub const PAIRING_BUDGET: usize = 4096;

fn equal_normalized(p: &str, r: &str) -> bool {
    equal_normalized_within(p, r, &Cell::new(PAIRING_BUDGET))
}

/// [`equal_normalized`], drawing item comparisons of sets from `budget`.
fn equal_normalized_within(p: &str, r: &str, budget: &Cell<usize>) -> bool {
    let equal = |a: &str, b: &str| equal_normalized_within(a, b, budget);
    if let Some(verdict) = settled_as_text(p, r) {
        return verdict;
    }
    if let (Some(a), Some(b)) = (canonical_integer(p), canonical_integer(r)) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (evaluate(p), evaluate(r)) {
        let diff = (a - b).abs();
        return diff <= RELATIVE_TOLERANCE * a.abs().max(b.abs()) || diff <= ABSOLUTE_FLOOR;
    }
    if let Some(verdict) = union_parts_equal(p, r, equal) {
        return verdict;
    }
    if let (Some(a), Some(b)) = (bracketed(p), bracketed(r)) {
        return a.0 == b.0
            && a.2 == b.2
            && a.1.len() == b.1.len()
            && a.1.iter().zip(&b.1).all(|(x, y)| equal(x, y));
    }
    if let (Some(a), Some(b)) = (unordered_items(p), unordered_items(r)) {
        return a.len() == b.len() && same_elements(&a, &b, budget);
    }
    false
}

/// The items of a set `\{...\}` or of a bare comma list.
fn unordered_items(s: &str) -> Option<Vec<String>> {
    if let Some(inner) = s.strip_prefix("\\{").and_then(|t| t.strip_suffix("\\}"))
        && encloses_whole(&s[1..])
    {
        return Some(split_top_level(inner, ","));
    }
    let items = split_top_level(s, ",");
    (items.len() >= 2).then_some(items)
}

/// Whether every item of `a` pairs with a distinct equal item of `b` (same lengths assumed):
/// each item of `a` takes the first unused item of `b` it equals. Each comparison draws one from
/// `budget`; when it cannot pay for every pair, or once it is spent, the items compare as
/// strings instead (as sorted multisets when there are too many to pair).
pub(super) fn same_elements(a: &[String], b: &[String], budget: &Cell<usize>) -> bool {
    if a.len().saturating_mul(b.len()) > budget.get() {
        let (mut a, mut b): (Vec<&String>, Vec<&String>) = (a.iter().collect(), b.iter().collect());
        a.sort_unstable();
        b.sort_unstable();
        return a == b;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let found = (0..b.len()).find(|&j| {
            if used[j] {
                return false;
            }
            match budget.get().checked_sub(1) {
                Some(left) => {
                    budget.set(left);
                    equal_normalized_within(x, &b[j], budget)
                }
                None => x == &b[j],
            }
        });
        found.map(|j| used[j] = true).is_some()
    })
}

pub(crate) fn normalized_equal(p: &str, r: &str) -> bool {
    equal_normalized(p, r)
}
