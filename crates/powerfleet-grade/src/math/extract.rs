//! Finding the answer a MATH completion states: the last `\boxed{...}` (or `\fbox{...}`), braces
//! paired in one pass, or else what follows its last "final answer is".

use std::collections::HashMap;

/// The content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, with nested braces handled,
/// trimmed. `\boxed 5` (a space, then a token, no braces) gives `5`. A box whose braces never close
/// is skipped in favour of the one before it. `None` when there is no usable box.
///
/// Linear in `text`: the braces are matched in one pass ([`closing_braces`]), not once per box.
pub fn last_boxed(text: &str) -> Option<String> {
    let mut starts: Vec<(usize, usize)> = ["\\boxed", "\\fbox"]
        .iter()
        .flat_map(|command| text.match_indices(command).map(|(at, m)| (at, m.len())))
        .collect();
    starts.sort_unstable_by_key(|&(at, _)| std::cmp::Reverse(at));
    let mut closes = None;
    starts
        .into_iter()
        .find_map(|(at, len)| box_argument(text, at + len, &mut closes))
}

/// The argument of a box command whose name ends at byte `after` of `text`; `closes` is
/// `text`'s [`closing_braces`], computed when first needed.
fn box_argument(
    text: &str,
    after: usize,
    closes: &mut Option<HashMap<usize, usize>>,
) -> Option<String> {
    let rest = &text[after..];
    let trimmed = rest.trim_start();
    if trimmed.starts_with('{') {
        // Preceded by the command or white space, so never an escaped brace.
        let open = text.len() - trimmed.len();
        let close = *closes
            .get_or_insert_with(|| closing_braces(text))
            .get(&open)?;
        return Some(text[open + 1..close].trim().to_string());
    }
    if trimmed.len() == rest.len() {
        // `\boxedfoo` is another command; `\boxed` at the very end has no argument.
        return None;
    }
    let token: String = trimmed
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '$')
        .collect();
    let token = token.trim_end_matches(['.', ',']);
    (!token.is_empty()).then(|| token.to_string())
}

/// For every `{` of `s` that closes, its byte index and that of its `}`, in one pass. Escaped
/// braces (`\{`, `\}`) do not count. For an unescaped `{` at byte `i`, `closing_braces(s)[&i]`
/// is `i + 1 + closing_brace(&s[i + 1..])` of the old one-group scan (kept with the test
/// oracles), for all groups at once.
pub(super) fn closing_braces(s: &str) -> HashMap<usize, usize> {
    let mut closes = HashMap::new();
    let mut open = Vec::new();
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '{' => open.push(i),
            '}' => {
                if let Some(o) = open.pop() {
                    closes.insert(o, i);
                }
            }
            _ => {}
        }
    }
    closes
}

/// The answer a MATH completion states: the last `\boxed{...}`, or else the text after the last
/// "final answer is" (Minerva's "Final Answer: The final answer is $X$. I hope it is correct.").
pub fn extract_math_answer(completion: &str) -> Option<String> {
    if let Some(boxed) = last_boxed(completion) {
        return Some(boxed);
    }
    const PHRASE: &str = "final answer is";
    let lower = completion.to_ascii_lowercase();
    let at = lower.rfind(PHRASE)? + PHRASE.len();
    let rest = &completion[at..];
    let lower_rest = &lower[at..];
    let end = [lower_rest.find("i hope"), lower_rest.find('\n')]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    let answer = rest[..end]
        .trim()
        .trim_end_matches('.')
        .trim()
        .trim_matches('$')
        .trim();
    (!answer.is_empty()).then(|| answer.to_string())
}
