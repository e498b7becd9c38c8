//! A built-in benchmark suite on toy models whose right answers are known: in each, the right
//! answer's completion is the likeliest under p^α (α = [`SUITE_ALPHA`]), while sampling at
//! temperature 1/α is misled by a pivot token, a likely first step whose continuations spread
//! thin over wrong answers. A study on it should show power sampling beating low temperature.

use powerfleet_models::exact::TooManyCompletions;
use powerfleet_models::toy::UnknownToken;
use powerfleet_models::{ToyModel, ToyModelError};

use crate::{Answer, Problem, Template};

/// The α the suite is built for.
pub const SUITE_ALPHA: f64 = 4.0;

/// The low temperature it is compared with: 1/α.
pub const SUITE_TEMPERATURE: f64 = 1.0 / SUITE_ALPHA;

/// The token budget every suite completion fits in (answer and EOS included).
pub const SUITE_MAX_TOKENS: u32 = 6;

/// The EOS token text of every suite model.
pub const SUITE_EOS: &str = "<eos>";

/// Names of the suite's toy models, built into `powerfleet-models` (load one as `toy:NAME` with
/// [`powerfleet_models::builtin::load`] or [`SuiteItem::model`]).
pub const SUITE_MODELS: &[&str] = &[
    "suite-arith",
    "suite-carry",
    "suite-capital",
    "suite-double",
];

/// A regex that extracts a suite completion's answer: its last word before EOS (for
/// [`powerfleet_grade::grade_regex`]).
pub const SUITE_ANSWER_PATTERN: &str = r"(\S+)\s*(?:<eos>)?\s*$";

/// One question of the suite, on its toy model.
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteItem {
    /// The model's name in [`SUITE_MODELS`] (without the `toy:` prefix).
    pub model_name: &'static str,
    /// The model's JSON, valid for [`ToyModel::from_json`].
    pub model_json: &'static str,
    /// The question (white-space separated vocabulary words, rendered with
    /// [`Template::Plain`]) and its [`Answer::Text`] answer: the last word before EOS.
    pub problem: Problem,
}

impl SuiteItem {
    /// The toy model, named `toy:<model_name>`.
    pub fn model(&self) -> Result<ToyModel, ToyModelError> {
        ToyModel::from_json(&format!("toy:{}", self.model_name), self.model_json)
    }

    /// The prompt text: the question under [`Template::Plain`].
    pub fn prompt(&self) -> String {
        Template::Plain.render(&self.problem, 0).prompt
    }

    /// The answer a completion (as text, words separated by white space) gives: its last word
    /// other than [`SUITE_EOS`], if any.
    pub fn final_answer(completion: &str) -> Option<&str> {
        completion
            .split_whitespace()
            .rev()
            .find(|&word| word != SUITE_EOS)
    }

    /// The exact probability that a completion is correct, under p^[`SUITE_ALPHA`] (what
    /// `power` targets), under token-wise sampling at temperature 1/α (`low-temp`) and under the
    /// model itself (`standard`), by enumerating every completion within [`SUITE_MAX_TOKENS`].
    pub fn exact_correct_mass(&self) -> Result<CorrectMass, SuiteError> {
        let model = self.model()?;
        let prompt = model.tokenize(&self.prompt())?;
        let completions = powerfleet_models::exact::enumerate(&model, &prompt, SUITE_MAX_TOKENS)?;
        let power = completions.power(SUITE_ALPHA);
        let low_temp = completions.proposal(&model, &prompt, SUITE_TEMPERATURE, None);
        let standard = completions.proposal(&model, &prompt, 1.0, None);
        let mut mass = CorrectMass::default();
        for (i, c) in completions.entries.iter().enumerate() {
            if self.is_correct(&model.detokenize(&c.tokens)) {
                mass.power += power[i];
                mass.low_temp += low_temp[i];
                mass.standard += standard[i];
            }
        }
        Ok(mass)
    }

    /// Whether a completion's final answer is the reference answer.
    pub fn is_correct(&self, completion: &str) -> bool {
        let Answer::Text(reference) = &self.problem.answer else {
            return false;
        };
        SuiteItem::final_answer(completion) == Some(reference.as_str())
    }
}

/// Why [`SuiteItem::exact_correct_mass`] cannot enumerate an item.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// Its toy model does not load.
    #[error(transparent)]
    Model(#[from] ToyModelError),
    /// Its prompt has a word outside the model's vocabulary.
    #[error(transparent)]
    Prompt(#[from] UnknownToken),
    /// It has too many completions within the token budget.
    #[error(transparent)]
    Enumerate(#[from] TooManyCompletions),
}

/// Exact probabilities of a correct answer, per sampling distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CorrectMass {
    /// Under p^α, normalized over completions within the token budget.
    pub power: f64,
    /// Under token-wise sampling at temperature 1/α.
    pub low_temp: f64,
    /// Under the model at temperature 1.
    pub standard: f64,
}

/// The suite: five questions on four toy models.
pub fn builtin_suite() -> Vec<SuiteItem> {
    let item = |model_name: &'static str, id: &str, question: &str, answer: &str| {
        let model_json = powerfleet_models::builtin::BUILTIN
            .iter()
            .find(|&&(name, _)| name == model_name && SUITE_MODELS.contains(&name))
            .map(|&(_, json)| json)
            .expect("every suite item names a suite model");
        let mut extra = serde_json::Map::new();
        extra.insert(
            "model".to_string(),
            serde_json::Value::String(format!("toy:{model_name}")),
        );
        SuiteItem {
            model_name,
            model_json,
            problem: Problem {
                id: id.to_string(),
                question: question.to_string(),
                answer: Answer::Text(answer.to_string()),
                extra,
            },
        }
    };
    vec![
        item("suite-arith", "arith", "what is 3 + 4 ?", "7"),
        item("suite-carry", "carry", "what is 5 + 7 ?", "12"),
        item("suite-capital", "capital", "capital of france ?", "paris"),
        item("suite-double", "double-3", "double 3 ?", "6"),
        item("suite-double", "double-4", "double 4 ?", "8"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_model_is_valid_and_described() {
        for item in builtin_suite() {
            let model = item.model().unwrap();
            assert!(model.description().is_some(), "{}", item.model_name);
            assert_eq!(model.vocab()[model.eos() as usize], SUITE_EOS);
            model.tokenize(&item.prompt()).unwrap();
        }
    }

    #[test]
    fn the_answer_pattern_agrees_with_final_answer() {
        for item in builtin_suite() {
            let Answer::Text(reference) = &item.problem.answer else {
                unreachable!("suite answers are text")
            };
            for completion in [
                format!("so {reference} <eos>"),
                format!("so {reference}"),
                "so 0 <eos>".to_string(),
                "<eos>".to_string(),
            ] {
                let grade =
                    powerfleet_grade::grade_regex(&completion, SUITE_ANSWER_PATTERN, reference)
                        .unwrap();
                assert_eq!(
                    grade.correct,
                    item.is_correct(&completion),
                    "{completion:?}"
                );
            }
        }
    }

    #[test]
    fn final_answer_skips_eos() {
        assert_eq!(SuiteItem::final_answer("carry one 12 <eos>"), Some("12"));
        assert_eq!(SuiteItem::final_answer("so then"), Some("then"));
        assert_eq!(SuiteItem::final_answer("<eos>"), None);
    }
}
