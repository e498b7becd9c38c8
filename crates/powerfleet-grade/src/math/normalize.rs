//! Normalizing a MATH answer so that equivalent ways of writing it become the same string: the
//! fuller normalization ([`normalize`]) and the one the reference grader's second test uses
//! (`normalize_with(.., Units::Reference)`), each step linear in its input.

use std::collections::{HashMap, HashSet};

use super::extract::{closing_braces, last_boxed};
use super::number::MAX_DEPTH;
use super::structure::nesting_depth;

/// Plain replacements applied before anything else (after `$` and `\\` handling).
const REPLACEMENTS: &[(&str, &str)] = &[
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\mbox", "\\text"),
    ("\\textnormal", "\\text"),
    ("\\textrm", "\\text"),
    ("\\textbf", "\\text"),
    ("\\textit", "\\text"),
    ("\\textup", "\\text"),
    ("\\mathrm", "\\text"),
    ("\\mathbf", "\\text"),
    ("\\lbrace", "\\{"),
    ("\\rbrace", "\\}"),
    ("\\varnothing", "\\emptyset"),
    ("{,}", ","),
    ("~", " "),
];

/// Commands that only change spacing or sizing and are removed outright.
const SPACING_COMMANDS: &[&str] = &[
    "\\left",
    "\\right",
    "\\displaystyle",
    "\\qquad",
    "\\quad",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
];

/// Unit words dropped from the end of an answer when a number precedes them (`5 mm`, `5 ways`),
/// besides [`REFERENCE_UNIT_WORDS`] (`5 cm`, `90 degrees`), by the lenient normalization.
const UNIT_WORDS: &[&str] = &[
    "mm",
    "m",
    "km",
    "in",
    "ft",
    "yd",
    "metre",
    "metres",
    "kilometer",
    "kilometers",
    "unit",
    "units",
    "square",
    "sq",
    "cubic",
    "dollar",
    "dollars",
    "cent",
    "cents",
    "mph",
    "pound",
    "pounds",
    "lb",
    "lbs",
    "kg",
    "g",
    "gram",
    "grams",
    "ways",
    "points",
    "students",
    "people",
];

/// Normalizes a MATH answer so that equivalent ways of writing it become the same string.
///
/// In order: drop newlines, `$`, `\$`, `\(`/`\)`/`\[`/`\]` around the answer; unwrap a
/// whole-answer `\boxed{}`; `\dfrac`/`\tfrac` → `\frac`; `\mbox`/`\textbf`/`\mathrm`/... → `\text`;
/// remove `\left`, `\right`, `\displaystyle`, `\!`, `\,`, `\;`, `\:`, `\quad`, `~`; remove
/// degrees (`^\circ`, `^{\circ}`, `°`, `\degree`) and percent signs (`\%`, `%`); a single
/// variable assignment `x = 5` → `5`; remove a trailing unit (`10\text{ cm}^2` → `10`,
/// `5 inches` → `5`); unwrap the remaining `\text{...}`; remove whitespace (except where it
/// separates a command from a letter, `\pi r`); remove trailing `.`; `\frac12` → `\frac{1}{2}`,
/// `\frac1b` → `\frac{1}{b}`, `\sqrt2` → `\sqrt{2}`; thousands separators `10,080` → `10080`
/// (only when the whole answer is one such number, so tuples are left alone); `.5` → `0.5`,
/// `2.50` → `2.5`, `3.0` → `3`; `1/2` → `\frac{1}{2}` for integers; outer braces `{5}` → `5`; `(C)` → `C`.
///
/// `0.5` and `\frac{1}{2}` stay different strings: [`math_equal`](super::math_equal) equates them
/// numerically.
pub fn normalize(answer: &str) -> String {
    normalize_with(answer, Units::Lenient)
}

/// Which trailing units [`normalize_with`] drops.
#[derive(Clone, Copy)]
pub(super) enum Units {
    /// Every word of [`REFERENCE_UNIT_WORDS`] and [`UNIT_WORDS`], and any word in a trailing
    /// `\text{}`.
    Lenient,
    /// Only what the reference grader drops: the words of [`REFERENCE_UNIT_WORDS`], and a
    /// trailing `\text{ ...}` whose content starts with a space.
    Reference,
}

/// The unit words the reference grader removes (PRM800K's list, singular and plural).
pub(super) const REFERENCE_UNIT_WORDS: &[&str] = &[
    "degree",
    "degrees",
    "cm",
    "centimeter",
    "centimeters",
    "meter",
    "meters",
    "mile",
    "miles",
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "foot",
    "feet",
    "inch",
    "inches",
    "yard",
    "yards",
];

impl Units {
    pub(super) fn is_unit(self, word: &str) -> bool {
        let known = |words: &[&str]| words.iter().any(|u| u.eq_ignore_ascii_case(word));
        known(REFERENCE_UNIT_WORDS) || matches!(self, Units::Lenient) && known(UNIT_WORDS)
    }
}

pub(super) fn normalize_with(answer: &str, units: Units) -> String {
    let mut s = answer.replace(['\n', '\r', '\t'], " ");
    s = s.replace("\\\\", "\\");
    s = s.replace("\\$", "").replace('$', "");
    s = strip_math_delimiters(&s);
    if (s.starts_with("\\boxed") || s.starts_with("\\fbox"))
        && let Some(inner) = last_boxed(&s)
    {
        s = inner;
    }
    for (from, to) in REPLACEMENTS {
        s = s.replace(from, to);
    }
    for command in SPACING_COMMANDS {
        s = remove_command(&s, command);
    }
    s = remove_degrees(&s);
    s = s.replace("\\%", "").replace('%', "");
    s = strip_variable_assignment(&s);
    s = strip_units(&s, units);
    s = unwrap_text(&s);
    s = remove_whitespace(&s);
    s = remove_degrees(&s);
    while s.ends_with('.') && !s.ends_with("\\.") {
        s.pop();
    }
    if nesting_depth(&s) <= MAX_DEPTH {
        s = canonical_tex(&s);
    }
    s = strip_thousands_separators(&s);
    s = canonical_decimals(&s);
    s = slash_to_frac(&s);
    s = strip_outer_braces(&s);
    unparenthesize_letter(&s)
}

/// `(C)` → `C`: a multiple-choice letter in parentheses, as MATH writes `\text{(C)}`.
fn unparenthesize_letter(s: &str) -> String {
    match s.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        Some(inner) if inner.len() == 1 && inner.starts_with(|c: char| c.is_ascii_uppercase()) => {
            inner.to_string()
        }
        _ => s.to_string(),
    }
}

/// Removes `\(...\)` and `\[...\]` around the whole answer.
fn strip_math_delimiters(s: &str) -> String {
    let t = s.trim();
    for (open, close) in [("\\(", "\\)"), ("\\[", "\\]")] {
        if let Some(inner) = t.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
            return inner.trim().to_string();
        }
    }
    t.to_string()
}

/// Removes every occurrence of `command`; a command ending in a letter is only removed when no
/// letter follows (so `\right` goes but `\rightarrow` stays).
fn remove_command(s: &str, command: &str) -> String {
    let word = command.ends_with(|c: char| c.is_ascii_alphabetic());
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(command) {
        let after = &rest[at + command.len()..];
        out.push_str(&rest[..at]);
        if word && after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(command);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn remove_degrees(s: &str) -> String {
    let s = s
        .replace("^{\\circ}", "")
        .replace("^\\circ", "")
        .replace('°', "");
    remove_command(&s, "\\degree")
}

/// `x = 5` → `5` when the left side is a single variable (`x`, `k`, `a_1`, `\theta`, `f(x)`, or
/// at most two letters as in Hendrycks' `len(lhs) <= 2`).
fn strip_variable_assignment(s: &str) -> String {
    if let Some((lhs, rhs)) = s.split_once('=')
        && !rhs.contains('=')
        && !rhs.trim().is_empty()
        && is_variable(lhs)
    {
        return rhs.trim().to_string();
    }
    s.to_string()
}

fn is_variable(lhs: &str) -> bool {
    let lhs: String = lhs.chars().filter(|c| !c.is_whitespace()).collect();
    let base = match lhs.split_once('_') {
        Some((base, sub)) => {
            let sub = sub
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or(sub);
            if sub.is_empty() || !sub.chars().all(|c| c.is_ascii_alphanumeric()) {
                return false;
            }
            base
        }
        None => lhs.as_str(),
    };
    let letters = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic());
    if let Some(name) = base.strip_prefix('\\') {
        return letters(name);
    }
    if let Some((f, arg)) = base.split_once('(') {
        return f.len() == 1 && letters(f) && arg.strip_suffix(')').is_some_and(letters);
    }
    base.len() <= 2 && letters(base)
}

/// Drops trailing units, repeatedly: `\text{...}` units and plain unit words.
///
/// Every step keeps a prefix of the trimmed answer, so the steps work on its length, with the
/// `\text{` groups, their braces and the white space found once: linear in `s`.
pub(super) fn strip_units(s: &str, units: Units) -> String {
    let s = s.trim();
    let text = Prefixes::new(s);
    let mut end = s.len();
    loop {
        let stripped =
            strip_trailing_unit_word(&text, strip_trailing_text_unit(&text, end, units), units);
        if stripped == end {
            return s[..end].to_string();
        }
        end = stripped;
    }
}

/// What [`strip_units`] looks up in the prefixes of an answer: where its `\text{` groups start
/// and close, and where its white space is.
struct Prefixes<'a> {
    s: &'a str,
    /// Byte index of every `\text{`, in order.
    texts: Vec<usize>,
    /// [`closing_braces`] of `s`.
    closes: HashMap<usize, usize>,
    /// Byte index of every white-space character, in order.
    spaces: Vec<usize>,
}

impl<'a> Prefixes<'a> {
    fn new(s: &'a str) -> Prefixes<'a> {
        let texts: Vec<usize> = s.match_indices("\\text{").map(|(at, _)| at).collect();
        Prefixes {
            s,
            closes: if texts.is_empty() {
                HashMap::new()
            } else {
                closing_braces(s)
            },
            texts,
            spaces: s
                .char_indices()
                .filter(|(_, c)| c.is_whitespace())
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// `s[..end].rfind("\\text{")`.
    fn last_text(&self, end: usize) -> Option<usize> {
        let n = self
            .texts
            .partition_point(|&at| at + "\\text{".len() <= end);
        n.checked_sub(1).map(|i| self.texts[i])
    }

    /// `s[..end].rfind(char::is_whitespace)`.
    fn last_space(&self, end: usize) -> Option<usize> {
        let n = self.spaces.partition_point(|&at| at < end);
        n.checked_sub(1).map(|i| self.spaces[i])
    }
}

/// Whether the text of a trailing `\\text{...}` reads as a unit under `units`: lenient, letters
/// with unit punctuation and powers; reference, a leading space or one of the reference's unit
/// words.
pub(super) fn is_unit_text(content: &str, units: Units) -> bool {
    match units {
        Units::Lenient => {
            content.chars().any(char::is_alphabetic)
                && content.chars().all(|c| {
                    c.is_alphabetic()
                        || c.is_whitespace()
                        || matches!(c, '.' | '/' | '^' | '-' | '2' | '3')
                })
        }
        Units::Reference => {
            content.starts_with(' ')
                || REFERENCE_UNIT_WORDS.contains(&content.trim().to_ascii_lowercase().as_str())
        }
    }
}

/// Whether `before` (the answer left of a unit) ends like a quantity.
pub(super) fn ends_like_quantity(before: &str) -> bool {
    before.ends_with(|c: char| c.is_ascii_digit() || matches!(c, '}' | ')' | '.'))
}

/// `10\text{ cm}^2` → `10`: a last `\text{...}` group holding a unit-like word, after something.
/// Works on the prefix `text.s[..end]`; returns the length of the prefix it leaves.
fn strip_trailing_text_unit(text: &Prefixes<'_>, end: usize, units: Units) -> usize {
    let s = &text.s[..end];
    let Some(start) = text.last_text(end) else {
        return end;
    };
    let inner_start = start + "\\text{".len();
    // The `{` follows `\text`, so it is never escaped.
    let Some(close) = text
        .closes
        .get(&(inner_start - 1))
        .copied()
        .filter(|&c| c < end)
    else {
        return end;
    };
    let content = &s[inner_start..close];
    // At most five characters besides white space: longer tails are no exponent.
    let after: String = s[close + 1..]
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(5)
        .collect();
    if !matches!(after.as_str(), "" | "^2" | "^3" | "^{2}" | "^{3}") {
        return end;
    }
    let before = s[..start].trim_end();
    let after_quantity = content.starts_with(char::is_whitespace) || ends_like_quantity(before);
    if !before.is_empty() && is_unit_text(content, units) && after_quantity {
        before.len()
    } else {
        end
    }
}

/// `5 square units` → `5`: unit words at the end, after a quantity. Works on the prefix
/// `text.s[..end]`; returns the length of the prefix it leaves.
fn strip_trailing_unit_word(text: &Prefixes<'_>, end: usize, units: Units) -> usize {
    let mut head = text.s[..end].trim_end();
    let mut peeled = false;
    while let Some(split) = text.last_space(head.len()) {
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
        head.len()
    } else {
        end
    }
}

/// `\text{Monday}` → `Monday`, everywhere: the first `\text{` of the answer loses its command
/// and its closing brace (or only the command, when it never closes), and so on until none is
/// left, including those the removals bring together.
///
/// In one pass: the answer is copied out, and whenever the copy ends in `\text{`, that command
/// is cut off it and its closing brace (found once for all groups) is marked to be skipped.
/// Removing a group's braces changes no other group's pairing, so the result is that of
/// searching again from the start after each removal, in linear time.
pub(super) fn unwrap_text(s: &str) -> String {
    const COMMAND: &str = "\\text{";
    if !s.contains(COMMAND) {
        return s.to_string();
    }
    let closes = closing_braces(s);
    let mut skipped: HashSet<usize> = HashSet::new();
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        if skipped.remove(&i) {
            continue;
        }
        out.push(c);
        if c == '{' && out.ends_with(COMMAND) {
            out.truncate(out.len() - COMMAND.len());
            if let Some(&close) = closes.get(&i) {
                skipped.insert(close);
            }
        }
    }
    out
}

/// Removes whitespace, except one space where it separates a control word from a letter
/// (`\pi r` must not become the unknown command `\pir`).
fn remove_whitespace(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut in_control_word = false;
    let mut after_backslash = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if in_control_word && chars.get(i).is_some_and(|n| n.is_ascii_alphabetic()) {
                out.push(' ');
            }
            in_control_word = false;
            after_backslash = false;
            continue;
        }
        if c.is_ascii_alphabetic() {
            in_control_word = after_backslash || in_control_word;
            after_backslash = false;
        } else {
            in_control_word = false;
            after_backslash = c == '\\' && !after_backslash;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Index just after the control sequence starting at `chars[i] == '\\'`.
pub(super) fn control_end(chars: &[char], i: usize) -> usize {
    let mut end = i + 1;
    while end < chars.len() && chars[end].is_ascii_alphabetic() {
        end += 1;
    }
    if end == i + 1 && end < chars.len() {
        end += 1; // a control symbol such as `\{`
    }
    end
}

/// For every `{` and `[` of `chars` that closes, its index and that of its closer (each kind
/// paired on its own; a `\` skips the char after it), in one pass. At the indices
/// [`canonical_tex`] reads groups from, it is what [`group_end`] finds, for all groups at once.
fn group_ends(chars: &[char]) -> HashMap<usize, usize> {
    let mut ends = HashMap::new();
    let (mut braces, mut brackets) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                i += 2;
                continue;
            }
            '{' => braces.push(i),
            '[' => brackets.push(i),
            '}' => {
                if let Some(o) = braces.pop() {
                    ends.insert(o, i);
                }
            }
            ']' => {
                if let Some(o) = brackets.pop() {
                    ends.insert(o, i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    ends
}

/// Index of the char closing the group opened at `chars[open]` (`{` or `[`).
#[cfg(test)]
pub(super) fn group_end(chars: &[char], open: usize) -> Option<usize> {
    let (opener, closer) = match chars[open] {
        '{' => ('{', '}'),
        '[' => ('[', ']'),
        _ => return None,
    };
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            continue;
        }
        if c == opener {
            depth += 1;
        } else if c == closer {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// One TeX argument at `chars[i..]`: a brace group's content, a control sequence, or one char.
/// `ends` is `chars`' [`group_ends`].
fn read_argument(
    chars: &[char],
    ends: &HashMap<usize, usize>,
    mut i: usize,
) -> Option<(String, usize)> {
    while i < chars.len() && chars[i] == ' ' {
        i += 1;
    }
    match *chars.get(i)? {
        '{' => {
            let end = *ends.get(&i)?;
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

/// `\frac12` → `\frac{1}{2}`, `\sqrt2` → `\sqrt{2}`, `\sqrt[3]8` → `\sqrt[3]{8}`.
///
/// Its groups are paired once per call ([`group_ends`]); it recurses into arguments, whose
/// nesting its caller bounds by [`MAX_DEPTH`], so it is linear in `s` for a bounded depth.
pub(super) fn canonical_tex(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let ends = group_ends(&chars);
    let mut out = String::with_capacity(s.len() + 8);
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
                if let Some((num, j)) = read_argument(&chars, &ends, i)
                    && let Some((den, k)) = read_argument(&chars, &ends, j)
                {
                    out.push_str(&format!(
                        "\\frac{{{}}}{{{}}}",
                        canonical_tex(&num),
                        canonical_tex(&den)
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
                    && let Some(&close) = ends.get(&j)
                {
                    let inner: String = chars[j + 1..close].iter().collect();
                    index = format!("[{}]", canonical_tex(&inner));
                    j = close + 1;
                }
                if let Some((radicand, k)) = read_argument(&chars, &ends, j) {
                    out.push_str(&format!("\\sqrt{index}{{{}}}", canonical_tex(&radicand)));
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

/// `10,080` → `10080` when the whole answer is one number with thousands separators.
fn strip_thousands_separators(s: &str) -> String {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let groups: Vec<&str> = int.split(',').collect();
    let digits = |g: &str| g.chars().all(|c| c.is_ascii_digit());
    let separated = groups.len() >= 2
        && (1..=3).contains(&groups[0].len())
        && groups.iter().all(|g| digits(g))
        && groups[1..].iter().all(|g| g.len() == 3)
        && digits(frac);
    if separated {
        s.replace(',', "")
    } else {
        s.to_string()
    }
}

/// `.5` → `0.5`, `2.50` → `2.5`, `3.0` → `3`, for every decimal literal in the answer.
fn canonical_decimals(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 1);
    let mut i = 0;
    let is_digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    while i < chars.len() {
        if !(is_digit(i) || (chars[i] == '.' && is_digit(i + 1))) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let int_start = i;
        while is_digit(i) {
            i += 1;
        }
        let int: String = chars[int_start..i].iter().collect();
        if chars.get(i) == Some(&'.') && is_digit(i + 1) {
            i += 1;
            let frac_start = i;
            while is_digit(i) {
                i += 1;
            }
            let frac: String = chars[frac_start..i].iter().collect();
            let frac = frac.trim_end_matches('0');
            out.push_str(if int.is_empty() { "0" } else { &int });
            if !frac.is_empty() {
                out.push('.');
                out.push_str(frac);
            }
        } else {
            out.push_str(&int);
        }
    }
    out
}

/// `1/2` → `\frac{1}{2}` and `-3/4` → `-\frac{3}{4}` (integers only, as in Hendrycks).
fn slash_to_frac(s: &str) -> String {
    let (sign, body) = match s.strip_prefix('-') {
        Some(body) => ("-", body),
        None => ("", s),
    };
    if let Some((num, den)) = body.split_once('/') {
        let int = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
        if int(num) && int(den) {
            return format!("{sign}\\frac{{{num}}}{{{den}}}");
        }
    }
    s.to_string()
}

/// `{5}` → `5`, `{{5}}` → `5`: braces around the whole answer, paired once.
pub(super) fn strip_outer_braces(s: &str) -> String {
    if !s.starts_with('{') {
        return s.to_string();
    }
    let closes = closing_braces(s);
    let (mut start, mut end) = (0, s.len());
    // `s[start..end]` is the answer left; its `{` follows a `{` or nothing, so is never escaped.
    while s[start..end].starts_with('{') && closes.get(&start) == Some(&(end - 1)) {
        start += 1;
        end -= 1;
    }
    s[start..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_examples() {
        let cases = [
            ("\\dfrac12", "\\frac{1}{2}"),
            ("\\frac1b", "\\frac{1}{b}"),
            ("\\sqrt2", "\\sqrt{2}"),
            ("10\\text{ cm}", "10"),
            ("90^\\circ", "90"),
            ("90^{\\circ}", "90"),
            ("5.", "5"),
            (".5", "0.5"),
            ("x = 5", "5"),
            ("1,000", "1000"),
            ("(1,2)", "(1,2)"),
            ("2.50", "2.5"),
            ("3.0", "3"),
            ("50\\%", "50"),
            ("\\left( 1, 2 \\right)", "(1,2)"),
            ("$\\$5$", "5"),
            ("\\text{Monday}", "Monday"),
            ("5 square units", "5"),
            ("\\pi r^2", "\\pi r^2"),
            ("10{,}080", "10080"),
            ("-3/4", "-\\frac{3}{4}"),
            ("\\boxed{7}", "7"),
            ("{5}", "5"),
            ("\\sqrt[3]8", "\\sqrt[3]{8}"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), want, "normalize({raw:?})");
        }
    }
}
