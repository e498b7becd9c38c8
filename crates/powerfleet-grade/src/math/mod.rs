//! MATH-style grading: pull the last `\boxed{...}` out of a completion, normalize answers the way
//! Hendrycks et al. (`is_equiv`/`strip_string`) and Minerva (`normalize_final_answer`) do, and
//! compare them as strings, as numbers, element-wise as tuples and intervals, and as sets.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

mod extract;

use extract::closing_braces;
pub use extract::{extract_math_answer, last_boxed};

use crate::Grade;

/// Relative tolerance of numeric comparison in [`math_equal`]: `|a - b| <= 1e-6 * max(|a|, |b|)`
/// (plus an absolute floor of 1e-12 so that `0` equals a rounding error). Two plain integers are
/// always compared exactly instead.
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

const ABSOLUTE_FLOOR: f64 = 1e-12;

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
/// `0.5` and `\frac{1}{2}` stay different strings: [`math_equal`] equates them numerically.
pub fn normalize(answer: &str) -> String {
    normalize_with(answer, Units::Lenient)
}

/// Which trailing units [`normalize_with`] drops.
#[derive(Clone, Copy)]
enum Units {
    /// Every word of [`REFERENCE_UNIT_WORDS`] and [`UNIT_WORDS`], and any word in a trailing
    /// `\text{}`.
    Lenient,
    /// Only what the reference grader drops: the words of [`REFERENCE_UNIT_WORDS`], and a
    /// trailing `\text{ ...}` whose content starts with a space.
    Reference,
}

/// The unit words the reference grader removes (PRM800K's list, singular and plural).
const REFERENCE_UNIT_WORDS: &[&str] = &[
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
    fn is_unit(self, word: &str) -> bool {
        let known = |words: &[&str]| words.iter().any(|u| u.eq_ignore_ascii_case(word));
        known(REFERENCE_UNIT_WORDS) || matches!(self, Units::Lenient) && known(UNIT_WORDS)
    }
}

fn normalize_with(answer: &str, units: Units) -> String {
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
fn strip_units(s: &str, units: Units) -> String {
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

/// Whether `before` (the answer left of a unit) ends like a quantity.
fn ends_like_quantity(before: &str) -> bool {
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
    let unit_like = match units {
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
    };
    let after_quantity = content.starts_with(char::is_whitespace) || ends_like_quantity(before);
    if !before.is_empty() && unit_like && after_quantity {
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
fn unwrap_text(s: &str) -> String {
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
fn control_end(chars: &[char], i: usize) -> usize {
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
fn group_end(chars: &[char], open: usize) -> Option<usize> {
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
fn canonical_tex(s: &str) -> String {
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
fn strip_outer_braces(s: &str) -> String {
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

/// The numeric value of an answer, or `None` when it is not a closed-form number.
///
/// The answer is [`normalize`]d first, then evaluated: integers, decimals, `-`, `+`, `*`, `/`,
/// `\cdot`, `\times`, `\div`, `^`, parentheses and brace groups, `\frac{a}{b}`, `a/b`,
/// `\sqrt{n}`, `\sqrt[k]{n}`, `\pi`, and implicit multiplication (`2\sqrt{3}`, `3\pi`). An
/// integer followed directly by an integer fraction is a mixed number (`2\frac{1}{2}` = 2.5), as
/// in MATH. Variables, `\infty` and non-finite results give `None`.
pub fn parse_number(s: &str) -> Option<f64> {
    evaluate(&normalize(s))
}

fn evaluate(normalized: &str) -> Option<f64> {
    let mut evaluator = Evaluator {
        chars: normalized.chars().collect(),
        pos: 0,
        depth: 0,
    };
    if evaluator.chars.is_empty() {
        return None;
    }
    let value = evaluator.expression()?;
    (evaluator.pos == evaluator.chars.len() && value.is_finite()).then_some(value)
}

/// A recursive-descent evaluator over a normalized answer.
struct Evaluator {
    chars: Vec<char>,
    pos: usize,
    /// Nesting of `expression` calls, bounded so hostile input cannot overflow the stack.
    depth: usize,
}

/// Deeper nesting than this is not a closed-form answer worth evaluating.
const MAX_DEPTH: usize = 64;

impl Evaluator {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// The letters of the control word at the cursor, if there is one.
    fn peek_command(&self) -> Option<String> {
        if self.peek()? != '\\' {
            return None;
        }
        let end = control_end(&self.chars, self.pos);
        Some(self.chars[self.pos + 1..end].iter().collect())
    }

    fn eat_command(&mut self, name: &str) -> bool {
        let found = self.peek_command().as_deref() == Some(name);
        if found {
            self.pos += 1 + name.len();
        }
        found
    }

    fn expression(&mut self) -> Option<f64> {
        self.nested(Self::sum)
    }

    /// Runs `parse` one nesting level deeper, or gives up past [`MAX_DEPTH`].
    fn nested(&mut self, parse: fn(&mut Self) -> Option<f64>) -> Option<f64> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let value = parse(self);
        self.depth -= 1;
        value
    }

    fn sum(&mut self) -> Option<f64> {
        let mut value = self.term()?;
        loop {
            if self.eat('+') {
                value += self.term()?;
            } else if self.eat('-') {
                value -= self.term()?;
            } else {
                return Some(value);
            }
        }
    }

    fn term(&mut self) -> Option<f64> {
        let start = self.pos;
        let mut value = self.signed()?;
        let mut mixed_number_allowed = is_integer_literal(&self.chars[start..self.pos]);
        loop {
            if self.eat('*') || self.eat_command("cdot") || self.eat_command("times") {
                value *= self.signed()?;
            } else if self.eat('/') || self.eat_command("div") {
                value /= self.signed()?;
            } else if self.starts_atom() {
                let factor_start = self.pos;
                let factor = self.power()?;
                if mixed_number_allowed && is_integer_fraction(&self.chars[factor_start..self.pos])
                {
                    value += factor.copysign(value);
                } else {
                    value *= factor;
                }
            } else {
                return Some(value);
            }
            mixed_number_allowed = false;
        }
    }

    fn signed(&mut self) -> Option<f64> {
        if self.eat('-') {
            Some(-self.nested(Self::signed)?)
        } else if self.eat('+') {
            self.nested(Self::signed)
        } else {
            self.power()
        }
    }

    fn power(&mut self) -> Option<f64> {
        let base = self.atom()?;
        if !self.eat('^') {
            return Some(base);
        }
        let exponent = match self.peek()? {
            '{' => self.group()?,
            c if c.is_ascii_digit() => {
                self.pos += 1;
                f64::from(c.to_digit(10)?)
            }
            _ => self.nested(Self::signed)?,
        };
        Some(base.powf(exponent))
    }

    fn group(&mut self) -> Option<f64> {
        if !self.eat('{') {
            return None;
        }
        let value = self.expression()?;
        self.eat('}').then_some(value)
    }

    fn starts_atom(&self) -> bool {
        match self.peek() {
            Some(c) if c.is_ascii_digit() || matches!(c, '.' | '(' | '{') => true,
            Some('\\') => matches!(self.peek_command().as_deref(), Some("frac" | "sqrt" | "pi")),
            _ => false,
        }
    }

    fn atom(&mut self) -> Option<f64> {
        match self.peek()? {
            c if c.is_ascii_digit() || c == '.' => self.number(),
            '(' => {
                self.pos += 1;
                let value = self.expression()?;
                self.eat(')').then_some(value)
            }
            '{' => self.group(),
            '\\' => {
                if self.eat_command("frac") {
                    let numerator = self.group()?;
                    let denominator = self.group()?;
                    Some(numerator / denominator)
                } else if self.eat_command("sqrt") {
                    let index = if self.eat('[') {
                        let index = self.expression()?;
                        if !self.eat(']') {
                            return None;
                        }
                        index
                    } else {
                        2.0
                    };
                    let radicand = self.group()?;
                    (radicand >= 0.0 && index > 0.0).then(|| radicand.powf(index.recip()))
                } else if self.eat_command("pi") {
                    Some(std::f64::consts::PI)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Option<f64> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.peek() == Some('.') {
            self.pos += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        let literal: String = self.chars[start..self.pos].iter().collect();
        literal.parse().ok()
    }
}

fn is_integer_literal(chars: &[char]) -> bool {
    let digits = chars.strip_prefix(&['-']).unwrap_or(chars);
    !digits.is_empty() && digits.iter().all(char::is_ascii_digit)
}

/// Whether `chars` is exactly `\frac{<digits>}{<digits>}`.
fn is_integer_fraction(chars: &[char]) -> bool {
    let s: String = chars.iter().collect();
    let Some(rest) = s.strip_prefix("\\frac{") else {
        return false;
    };
    let Some((num, den)) = rest.strip_suffix('}').and_then(|r| r.split_once("}{")) else {
        return false;
    };
    let int = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    int(num) && int(den)
}

/// Whether `predicted` is the same answer as `reference`, with the verdicts of the reference
/// grader the MATH literature uses (PRM800K's `grade_answer`, as the power-sampling paper's
/// code grades): equal after the Hendrycks normalization ([`hendrycks_normalize`]); or equal
/// after [`normalize`]; or, tuple and interval element by element (same brackets, same order),
/// union part by part, each element equal as follows:
///
/// - two plain fractions (`\frac{a}{b}`, `a/b`) must be the same fraction as written: `\frac{2}{4}`
///   is not `\frac{1}{2}` (an unreduced answer is wrong);
/// - an integer reference is only matched by an integer (`3`, `3.0`), never by `\frac{6}{2}`;
/// - otherwise both must evaluate to the same number exactly (up to float rounding, relative
///   1e-12): `0.5` equals `\frac{1}{2}` and `2\sqrt{3}` equals `\sqrt{12}`, but a rounded decimal
///   (`0.333333` for `\frac{1}{3}`) is wrong.
///
/// Lists and sets are compared in order, as the reference does: `1,2` is not `2,1`. See
/// [`math_equal_lenient`] for the grader that accepts reordered sets and rounded decimals.
/// An empty answer equals nothing. `docs/grading.md` lists the known differences.
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

/// The verdicts both comparisons reach from the text alone: an empty answer equals nothing,
/// equal strings are equal, plain words compare ignoring ASCII case, and answers nested deeper
/// than [`MAX_DEPTH`] are only equal as strings. `None`: compare further.
fn settled_as_text(p: &str, r: &str) -> Option<bool> {
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
fn union_parts_equal(p: &str, r: &str, equal: impl Fn(&str, &str) -> bool) -> Option<bool> {
    let (p_parts, r_parts) = (split_top_level(p, "\\cup"), split_top_level(r, "\\cup"));
    (p_parts.len() > 1 || r_parts.len() > 1).then(|| {
        p_parts.len() == r_parts.len() && p_parts.iter().zip(&r_parts).all(|(a, b)| equal(a, b))
    })
}

/// The deepest bracket nesting in `s`, counting all kinds; deeper answers than [`MAX_DEPTH`] are
/// only compared as strings, so hostile input cannot overflow the stack.
fn nesting_depth(s: &str) -> usize {
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

/// A plain integer as canonical digits (no leading zeros, no `-0`).
fn canonical_integer(s: &str) -> Option<String> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    Some(match (negative, digits.is_empty()) {
        (_, true) => "0".to_string(),
        (true, false) => format!("-{digits}"),
        (false, false) => digits.to_string(),
    })
}

/// Splits at `separator` where no bracket of any kind is open.
fn split_top_level(s: &str, separator: &str) -> Vec<String> {
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
fn encloses_whole(s: &str) -> bool {
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
fn bracketed(s: &str) -> Option<(char, Vec<String>, char)> {
    let open = s.chars().next()?;
    let close = s.chars().last()?;
    if !matches!(open, '(' | '[') || !matches!(close, ')' | ']') || !encloses_whole(s) {
        return None;
    }
    let items = split_top_level(&s[1..s.len() - 1], ",");
    (items.len() >= 2).then_some((open, items, close))
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
fn same_elements(a: &[String], b: &[String], budget: &Cell<usize>) -> bool {
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

/// Grades a MATH completion: extracts its answer with [`extract_math_answer`] and compares it
/// with [`math_equal`]. A `reference` that contains a `\boxed{}` (a full MATH solution) is
/// reduced to its last box first.
pub fn grade_math(completion: &str, reference: &str) -> Grade {
    grade_math_with(completion, reference, math_equal)
}

/// [`grade_math`] with [`math_equal_lenient`]: the `math-lenient` grader.
pub fn grade_math_lenient(completion: &str, reference: &str) -> Grade {
    grade_math_with(completion, reference, math_equal_lenient)
}

fn grade_math_with(completion: &str, reference: &str, equal: fn(&str, &str) -> bool) -> Grade {
    let extracted = extract_math_answer(completion);
    let reference = last_boxed(reference).unwrap_or_else(|| reference.to_string());
    let correct = extracted
        .as_deref()
        .is_some_and(|answer| equal(answer, &reference));
    Grade { extracted, correct }
}

#[cfg(test)]
mod linear_tests;

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

    #[test]
    fn evaluates_expressions() {
        let cases = [
            ("\\frac{1}{2}", 0.5),
            ("2\\sqrt{3}", 2.0 * 3f64.sqrt()),
            ("-\\frac{3}{4}", -0.75),
            ("2\\frac{1}{2}", 2.5),
            ("-2\\frac{1}{2}", -2.5),
            ("2^{10}", 1024.0),
            ("\\frac{\\pi}{2}", std::f64::consts::FRAC_PI_2),
            ("3\\cdot4+1", 13.0),
            ("\\sqrt[3]{8}", 2.0),
        ];
        for (raw, want) in cases {
            let got = parse_number(raw).unwrap_or_else(|| panic!("parse_number({raw:?})"));
            assert!((got - want).abs() < 1e-12, "parse_number({raw:?}) = {got}");
        }
        for raw in ["x+1", "\\infty", "(1,2)", "\\frac{1}{0}", ""] {
            assert_eq!(parse_number(raw), None, "parse_number({raw:?})");
        }
    }

    #[test]
    fn big_integers_compare_exactly() {
        assert!(!math_equal("1234567", "1234568"));
        assert!(math_equal("0012", "12"));
    }
}
