//! Prompt templates: how a [`Problem`] becomes the prompt a model sees, with multiple-choice
//! options shuffled per seed and the shuffle returned so grading can map letters back.

use std::path::Path;

use powerfleet_grade::choice::shuffle_choices;

use crate::{Answer, Problem};

/// The placeholder every user template must hold.
pub const QUESTION: &str = "{question}";

/// The optional placeholder for the lettered (shuffled) options of a multiple-choice problem.
pub const CHOICES: &str = "{choices}";

/// The MATH prompt of the power-sampling reference, before the question.
pub const MATH_COT_BEFORE: &str = "Can you solve the following math problem? ";

/// The MATH prompt of the power-sampling reference, after the question.
pub const MATH_COT_AFTER: &str =
    " Please reason step by step, and put your final answer within \\boxed{}.";

/// The instruction after the options in [`Template::MultipleChoice`].
pub const CHOICE_INSTRUCTION: &str =
    "Answer with the letter of the correct choice, and put it within \\boxed{}.";

/// How a problem is turned into a prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Template {
    /// The question as written (the suite's toy-model prompts use this).
    Plain,
    /// The reference's MATH prompt: [`MATH_COT_BEFORE`], the question, [`MATH_COT_AFTER`].
    MathCot,
    /// The question, a blank line, the options lettered `(A) ...` one per line in the seed's
    /// shuffled order, a blank line, then [`CHOICE_INSTRUCTION`].
    MultipleChoice,
    /// A user template holding [`QUESTION`] and optionally [`CHOICES`].
    User(String),
}

/// A template that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The name is no built-in template and no readable file.
    #[error(
        "prompt template {name:?} is neither a built-in template (plain, math-cot, multiple-choice) nor a readable file: {source}"
    )]
    Read {
        /// The name or path given.
        name: String,
        /// Why the file could not be read.
        source: std::io::Error,
    },
    /// A user template without the `{question}` placeholder.
    #[error(
        "prompt template {origin} has no {{question}} placeholder; put {{question}} where the problem text goes (and optionally {{choices}} for the lettered options)"
    )]
    MissingQuestion {
        /// Where the template came from.
        origin: String,
    },
}

/// A rendered prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The prompt text.
    pub prompt: String,
    /// For multiple-choice problems, the order the options were shown in:
    /// `permutation[displayed_position] = original_index` (pass it to
    /// [`powerfleet_grade::grade_choice`] or [`Problem::grade`]). `None` for free-form answers.
    pub permutation: Option<Vec<usize>>,
}

/// The default largest prompt template file read: 1 MiB (`submit --max-template-bytes`).
pub const MAX_TEMPLATE_FILE_BYTES: u64 = 1 << 20;

impl Template {
    /// The names of the built-in templates.
    pub const BUILTIN: [&'static str; 3] = ["plain", "math-cot", "multiple-choice"];

    /// A built-in template by name (`plain`, `math-cot`, `multiple-choice`), else the template
    /// in the file at `name_or_path`, which must hold `{question}`.
    pub fn parse(name_or_path: &str) -> Result<Template, TemplateError> {
        Template::parse_capped(
            name_or_path,
            crate::SizeCap {
                bytes: MAX_TEMPLATE_FILE_BYTES,
                setting: "--max-template-bytes",
            },
        )
    }

    /// [`Template::parse`], reading a file of at most `cap` bytes (refused as soon as it passes
    /// the cap, with an error naming the cap and its setting).
    pub fn parse_capped(
        name_or_path: &str,
        cap: crate::SizeCap,
    ) -> Result<Template, TemplateError> {
        if let Some(builtin) = Template::builtin(name_or_path) {
            return Ok(builtin);
        }
        let text = crate::format::read_bounded(
            Path::new(name_or_path),
            cap,
            "(a prompt template is a short text with a {question} placeholder)",
        )
        .map_err(|source| TemplateError::Read {
            name: name_or_path.to_string(),
            source,
        })?;
        Template::user(name_or_path, text)
    }

    /// A built-in template by name (one of [`Template::BUILTIN`]), without looking for a file.
    pub fn builtin(name: &str) -> Option<Template> {
        match name {
            "plain" => Some(Template::Plain),
            "math-cot" => Some(Template::MathCot),
            "multiple-choice" => Some(Template::MultipleChoice),
            _ => None,
        }
    }

    /// The template a dataset of `format` is rendered with unless one is chosen: the MATH
    /// prompt for MATH500, lettered options for multiple choice, the question as written
    /// otherwise (for programming problems, the prompt itself, which the completion continues as
    /// in HumanEval).
    pub fn default_for(format: crate::DatasetFormat) -> Template {
        match format {
            crate::DatasetFormat::Math500 => Template::MathCot,
            crate::DatasetFormat::MultipleChoice => Template::MultipleChoice,
            crate::DatasetFormat::Jsonl | crate::DatasetFormat::Code => Template::Plain,
        }
    }

    /// A user template from its text; `origin` names it in errors.
    pub fn user(origin: &str, text: impl Into<String>) -> Result<Template, TemplateError> {
        let text = text.into();
        if !text.contains(QUESTION) {
            return Err(TemplateError::MissingQuestion {
                origin: origin.to_string(),
            });
        }
        Ok(Template::User(text))
    }

    /// The template's name: a built-in name, or `user` for a user template.
    pub fn name(&self) -> &'static str {
        match self {
            Template::Plain => "plain",
            Template::MathCot => "math-cot",
            Template::MultipleChoice => "multiple-choice",
            Template::User(_) => "user",
        }
    }

    /// Renders `problem`. Multiple-choice options are shown in the order
    /// [`shuffle_choices`]`(n, seed)` and lettered `(A)`, `(B)`, ...; the permutation is
    /// returned. Where a template has no [`CHOICES`] slot (all but [`Template::MultipleChoice`]
    /// and user templates holding it), the options follow the question after a blank line, so
    /// they are always shown. For a free-form problem, [`CHOICES`] renders empty and
    /// [`Template::MultipleChoice`] asks for the answer in `\boxed{}` instead of a letter.
    pub fn render(&self, problem: &Problem, seed: u64) -> Rendered {
        let (choices, permutation) = match &problem.answer {
            Answer::Text(_) | Answer::Code { .. } => (None, None),
            Answer::Choice { choices, .. } => {
                let perm = shuffle_choices(choices.len(), seed);
                (Some(lettered(choices, &perm)), Some(perm))
            }
        };
        let question = problem.question.as_str();
        let with_choices = || match &choices {
            Some(block) => format!("{question}\n\n{block}"),
            None => question.to_string(),
        };
        let prompt = match self {
            Template::Plain => with_choices(),
            Template::MathCot => format!("{MATH_COT_BEFORE}{}{MATH_COT_AFTER}", with_choices()),
            Template::MultipleChoice => match &choices {
                Some(block) => format!("{question}\n\n{block}\n\n{CHOICE_INSTRUCTION}"),
                None => format!("{question}\n\nPut your final answer within \\boxed{{}}."),
            },
            Template::User(text) => {
                let has_slot = text.contains(CHOICES);
                let question = if has_slot {
                    question.to_string()
                } else {
                    with_choices()
                };
                substitute(text, &question, choices.as_deref().unwrap_or(""))
            }
        };
        Rendered {
            prompt,
            permutation,
        }
    }
}

/// The size of a rendered prompt, computed without rendering it ([`Template::rendered_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderedSize {
    /// Bytes of the prompt's text (at most this many when a problem has more than 26 options,
    /// of which the shown ones depend on the seed).
    pub bytes: usize,
    /// Bytes of the text as a JSON string, quotes excluded (escapes counted), likewise.
    pub json_bytes: usize,
}

impl Template {
    /// The size of `problem` rendered with this template, for any seed, computed from the sizes
    /// of the template's literal text and of the values its placeholders take (each occurrence
    /// counted), so a prompt too large to accept is refused before it is built.
    pub fn rendered_size(&self, problem: &Problem) -> RenderedSize {
        let mut size = RenderedSize {
            bytes: 0,
            json_bytes: 0,
        };
        let mut add = |piece: &str| {
            size.bytes += piece.len();
            size.json_bytes += json_escaped_len(piece);
        };
        let question = problem.question.as_str();
        let choices: Option<&[String]> = match &problem.answer {
            Answer::Choice { choices, .. } => Some(choices),
            _ => None,
        };
        // The lettered block, piece by piece: `(X) option` lines joined by newlines.
        let block = |add: &mut dyn FnMut(&str)| {
            if let Some(choices) = choices {
                let shown = choices.len().min(26);
                // The longest options, in case fewer are shown than there are.
                let mut longest: Vec<&String> = choices.iter().collect();
                longest.sort_by_key(|c| std::cmp::Reverse(c.len()));
                for (i, c) in longest.into_iter().take(shown).enumerate() {
                    if i > 0 {
                        add("\n");
                    }
                    add("(A) ");
                    add(c);
                }
            }
        };
        let with_choices = |add: &mut dyn FnMut(&str)| {
            add(question);
            if choices.is_some() {
                add("\n\n");
                block(add);
            }
        };
        match self {
            Template::Plain => with_choices(&mut add),
            Template::MathCot => {
                add(MATH_COT_BEFORE);
                with_choices(&mut add);
                add(MATH_COT_AFTER);
            }
            Template::MultipleChoice => {
                add(question);
                add("\n\n");
                if choices.is_some() {
                    block(&mut add);
                    add("\n\n");
                    add(CHOICE_INSTRUCTION);
                } else {
                    add("Put your final answer within \\boxed{}.");
                }
            }
            Template::User(text) => {
                let has_slot = text.contains(CHOICES);
                for piece in pieces(text) {
                    match piece {
                        Piece::Literal(l) => add(l),
                        Piece::Question if has_slot => add(question),
                        Piece::Question => with_choices(&mut add),
                        Piece::Choices => block(&mut add),
                    }
                }
            }
        }
        size
    }
}

/// Bytes of `s` as the inside of a JSON string: control characters, quotes and backslashes
/// escaped.
fn json_escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// A part of a user template: literal text or a placeholder.
enum Piece<'a> {
    Literal(&'a str),
    Question,
    Choices,
}

/// The parts of a user template in order, its placeholders found in one pass (each search
/// resumes where it stopped, so the pass is linear), and placeholder-like text inside a value is
/// never a placeholder.
fn pieces(template: &str) -> impl Iterator<Item = Piece<'_>> {
    let find = |slot: &str, from: usize| template[from..].find(slot).map(|i| from + i);
    let mut at = 0;
    let mut next_q = find(QUESTION, 0);
    let mut next_c = find(CHOICES, 0);
    let mut pending: Option<Piece<'_>> = None;
    std::iter::from_fn(move || {
        if let Some(p) = pending.take() {
            return Some(p);
        }
        if at >= template.len() {
            return None;
        }
        // A placeholder that starts inside the one just taken is no placeholder.
        if next_q.is_some_and(|q| q < at) {
            next_q = find(QUESTION, at);
        }
        if next_c.is_some_and(|c| c < at) {
            next_c = find(CHOICES, at);
        }
        let (start, slot, piece) = match (next_q, next_c) {
            (Some(q), Some(c)) if c < q => (c, CHOICES, Piece::Choices),
            (Some(q), _) => (q, QUESTION, Piece::Question),
            (None, Some(c)) => (c, CHOICES, Piece::Choices),
            (None, None) => {
                let literal = &template[at..];
                at = template.len();
                return Some(Piece::Literal(literal));
            }
        };
        let literal = &template[at..start];
        at = start + slot.len();
        match piece {
            Piece::Question => next_q = find(QUESTION, at),
            _ => next_c = find(CHOICES, at),
        }
        if literal.is_empty() {
            Some(piece)
        } else {
            pending = Some(piece);
            Some(Piece::Literal(literal))
        }
    })
}

/// `(A) first\n(B) second...` in displayed order.
fn lettered(choices: &[String], perm: &[usize]) -> String {
    perm.iter()
        .zip('A'..='Z')
        .map(|(&original, letter)| format!("({letter}) {}", choices[original]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces the placeholders in one pass, so placeholder-like text inside the question is kept.
fn substitute(template: &str, question: &str, choices: &str) -> String {
    let mut out = String::new();
    for piece in pieces(template) {
        out.push_str(match piece {
            Piece::Literal(l) => l,
            Piece::Question => question,
            Piece::Choices => choices,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_single_pass() {
        assert_eq!(
            substitute("Q: {question} / {choices} {question}", "a {choices}", "C"),
            "Q: a {choices} / C a {choices}"
        );
        assert_eq!(substitute("\\boxed{} {question}", "x", ""), "\\boxed{} x");
        assert_eq!(substitute("{question}{question}", "q", ""), "qq");
        assert_eq!(substitute("{choices}{question", "q", "C"), "C{question");
    }

    fn problem(question: &str, choices: Option<Vec<&str>>) -> Problem {
        Problem {
            id: "p".into(),
            question: question.into(),
            answer: match choices {
                Some(c) => Answer::Choice {
                    choices: c.into_iter().map(String::from).collect(),
                    correct: 0,
                },
                None => Answer::Text("1".into()),
            },
            extra: Default::default(),
        }
    }

    #[test]
    fn the_rendered_size_is_known_before_rendering() {
        let user = Template::user("t", "Q {question}\t{choices} {question} \"{x}\"").unwrap();
        let no_slot = Template::user("t", "{question}|{question}").unwrap();
        let templates = [
            Template::Plain,
            Template::MathCot,
            Template::MultipleChoice,
            user,
            no_slot,
        ];
        let problems = [
            problem("what is \"2\"\u{1}+2?", None),
            problem("pick one\n", Some(vec!["a", "bb\\", "ccc"])),
            problem("", Some(vec![])),
        ];
        for t in &templates {
            for p in &problems {
                for seed in 0..3 {
                    let rendered = t.render(p, seed).prompt;
                    let json = serde_json::to_string(&rendered).unwrap();
                    assert_eq!(
                        t.rendered_size(p),
                        RenderedSize {
                            bytes: rendered.len(),
                            json_bytes: json.len() - 2
                        },
                        "{t:?} {p:?}"
                    );
                }
            }
        }
        // Thousands of placeholders: the size is their count times the value, not rendered.
        let many = Template::user("t", "{question}".repeat(2000)).unwrap();
        let big = problem(&"x".repeat(60_000), None);
        assert_eq!(many.rendered_size(&big).bytes, 2000 * 60_000);
    }
}
