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

/// The largest prompt template file read: 1 MiB.
pub const MAX_TEMPLATE_FILE_BYTES: u64 = 1 << 20;

impl Template {
    /// The names of the built-in templates.
    pub const BUILTIN: [&'static str; 3] = ["plain", "math-cot", "multiple-choice"];

    /// A built-in template by name (`plain`, `math-cot`, `multiple-choice`), else the template
    /// in the file at `name_or_path`, which must hold `{question}`.
    pub fn parse(name_or_path: &str) -> Result<Template, TemplateError> {
        if let Some(builtin) = Template::builtin(name_or_path) {
            return Ok(builtin);
        }
        let text = crate::format::read_bounded(
            Path::new(name_or_path),
            MAX_TEMPLATE_FILE_BYTES,
            "a prompt template is a short text with a {question} placeholder",
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
    let mut out = String::with_capacity(template.len() + question.len() + choices.len());
    let mut rest = template;
    loop {
        let next = [(QUESTION, question), (CHOICES, choices)]
            .into_iter()
            .filter_map(|(slot, value)| rest.find(slot).map(|at| (at, slot, value)))
            .min_by_key(|&(at, _, _)| at);
        match next {
            Some((at, slot, value)) => {
                out.push_str(&rest[..at]);
                out.push_str(value);
                rest = &rest[at + slot.len()..];
            }
            None => {
                out.push_str(rest);
                return out;
            }
        }
    }
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
    }
}
