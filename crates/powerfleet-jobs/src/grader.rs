//! How a completion is graded: [`Grader`], the closed set of graders a job can name, and all a
//! grader says of itself: its name and command-line form ([`fmt::Display`], parsed back by
//! [`FromStr`]), the kind of reference it grades ([`Grader::fits`]) and the grader a kind of
//! reference gets by default ([`Grader::default_for`]). The CLI, the producer, the collector and
//! the graders (`powerfleet_grade`, `powerfleet_sandbox`) all ask it; a new grader is a variant
//! here and its grading function in `powerfleet_grade` (dispatched in its `job.rs`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ReferenceAnswer;

/// How a completion is graded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Grader {
    /// The last `\boxed{}` answer, normalized and compared as text and as numbers, with the
    /// verdicts of the reference MATH grader (PRM800K's).
    Math,
    /// Like `math`, but lists and sets in any order, unreduced fractions and decimals within a
    /// relative 1e-6 of the reference (rounded decimals) are correct too. Tagged `math_lenient`.
    MathLenient,
    /// The chosen letter, mapped back through the shown order of the options.
    Choice,
    /// The whole completion, trimmed, equal to the reference.
    Exact,
    /// The first capture group of the pattern's last match, equal to the reference (trimmed).
    Regex {
        /// A regular expression with one capture group around the answer.
        pattern: String,
    },
    /// HumanEval: the completion continues the problem's prompt and is run, sandboxed, against
    /// the problem's tests (a [`ReferenceAnswer::Code`] reference).
    Humaneval,
}

/// The placeholder pattern of the `regex` grader in [`Grader::each`], as `--grader`'s help and
/// errors show it: `regex:PATTERN`.
const PATTERN_PLACEHOLDER: &str = "PATTERN";

impl Grader {
    /// One grader of each kind, in the order help and errors list them; `regex` with the
    /// placeholder pattern `PATTERN`. Parsing, the list of allowed values and the tests derive
    /// from it.
    pub fn each() -> [Grader; 6] {
        let each = [
            Grader::Math,
            Grader::MathLenient,
            Grader::Choice,
            Grader::Exact,
            Grader::Regex {
                pattern: PATTERN_PLACEHOLDER.to_string(),
            },
            Grader::Humaneval,
        ];
        // Exhaustive on purpose: a new variant fails to compile here until it is listed above.
        for grader in &each {
            match grader {
                Grader::Math
                | Grader::MathLenient
                | Grader::Choice
                | Grader::Exact
                | Grader::Regex { .. }
                | Grader::Humaneval => {}
            }
        }
        each
    }

    /// The grader's name, as a grade record stores it: `math`, `math-lenient`, `choice`,
    /// `exact`, `regex` (without its pattern) or `humaneval`. [`fmt::Display`] adds the pattern.
    pub fn name(&self) -> &'static str {
        match self {
            Grader::Math => "math",
            Grader::MathLenient => "math-lenient",
            Grader::Choice => "choice",
            Grader::Exact => "exact",
            Grader::Regex { .. } => "regex",
            Grader::Humaneval => "humaneval",
        }
    }

    /// Whether grading runs the completion (in a sandbox, off the collector's main loop) rather
    /// than reading it.
    pub fn executes(&self) -> bool {
        matches!(self, Grader::Humaneval)
    }

    /// The kind of reference this grader grades.
    pub fn grades(&self) -> ReferenceKind {
        match self {
            Grader::Math | Grader::MathLenient | Grader::Exact | Grader::Regex { .. } => {
                ReferenceKind::Text
            }
            Grader::Choice => ReferenceKind::Choice,
            Grader::Humaneval => ReferenceKind::Code,
        }
    }

    /// Whether this grader can grade a reference of kind `reference`: the one rule the producer
    /// checks a submission by and the graders check a job by. `Err` says what fits instead.
    pub fn fits(&self, reference: ReferenceKind) -> Result<(), GraderMisfit> {
        use ReferenceKind::{Choice, Code, Text};
        let grader = self.name();
        match (self.grades(), reference) {
            (Text, Text) | (Choice, Choice) | (Code, Code) => Ok(()),
            (Code, Text | Choice) => Err(GraderMisfit::NeedsCode),
            (Text | Choice, Code) => Err(GraderMisfit::CodeNeedsHumaneval { grader }),
            (Choice, Text) => Err(GraderMisfit::NeedsChoices),
            (Text, Choice) => Err(GraderMisfit::ChoicesNeedChoice { grader }),
        }
    }

    /// The grader a reference of kind `reference` gets when none is chosen: `math` for
    /// free-form answers, `choice` for multiple choice, `humaneval` for programming problems.
    pub fn default_for(reference: ReferenceKind) -> Grader {
        match reference {
            ReferenceKind::Text => Grader::Math,
            ReferenceKind::Choice => Grader::Choice,
            ReferenceKind::Code => Grader::Humaneval,
        }
    }
}

/// The command-line form: the name, and for `regex` its pattern (`regex:answer: (\d+)`).
impl fmt::Display for Grader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grader::Regex { pattern } => write!(f, "{}:{pattern}", self.name()),
            other => f.write_str(other.name()),
        }
    }
}

/// Parses the command-line form ([`fmt::Display`]'s): a grader's name, or `regex:PATTERN` with
/// a non-empty pattern.
impl FromStr for Grader {
    type Err = ParseGraderError;

    fn from_str(s: &str) -> Result<Grader, ParseGraderError> {
        let refused = || ParseGraderError { got: s.to_string() };
        Grader::each()
            .into_iter()
            .find_map(|grader| match grader {
                Grader::Regex { .. } => {
                    let pattern = s.strip_prefix(grader.name())?.strip_prefix(':')?;
                    (!pattern.is_empty()).then(|| Grader::Regex {
                        pattern: pattern.to_string(),
                    })
                }
                other => (other.name() == s).then_some(other),
            })
            .ok_or_else(refused)
    }
}

/// A `--grader` value that names no grader.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("grader must be one of {}, got {got:?}", allowed())]
pub struct ParseGraderError {
    /// The value as given.
    pub got: String,
}

/// Every grader's command-line form, comma-separated.
fn allowed() -> String {
    Grader::each()
        .iter()
        .map(Grader::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command-line forms of the graders of `kinds`, as `a, b or c`.
fn graders_of(kinds: &[ReferenceKind]) -> String {
    let forms: Vec<String> = Grader::each()
        .iter()
        .filter(|g| kinds.contains(&g.grades()))
        .map(Grader::to_string)
        .collect();
    match forms.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => forms.join(""),
    }
}

/// The kinds of reference answer ([`ReferenceAnswer`]'s variants), which decide the graders that
/// fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A free-form answer ([`ReferenceAnswer::Text`]).
    Text,
    /// A multiple-choice answer ([`ReferenceAnswer::Choice`]).
    Choice,
    /// A programming problem ([`ReferenceAnswer::Code`]).
    Code,
}

impl ReferenceAnswer {
    /// Its kind.
    pub fn kind(&self) -> ReferenceKind {
        match self {
            ReferenceAnswer::Text(_) => ReferenceKind::Text,
            ReferenceAnswer::Choice { .. } => ReferenceKind::Choice,
            ReferenceAnswer::Code { .. } => ReferenceKind::Code,
        }
    }
}

/// Why a grader cannot grade a kind of reference ([`Grader::fits`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraderMisfit {
    /// Grader `humaneval` with a reference that is not a programming problem.
    #[error(
        "grader humaneval needs a programming problem (dataset format code: prompt, test, entry_point); use grader {} for answers",
        graders_of(&[ReferenceKind::Text, ReferenceKind::Choice])
    )]
    NeedsCode,
    /// A programming problem with a grader that reads answers instead of running them.
    #[error(
        "a programming problem is graded by running it, with grader humaneval, not {grader}; humaneval runs the completion against the problem's tests"
    )]
    CodeNeedsHumaneval {
        /// The grader's name.
        grader: &'static str,
    },
    /// Grader `choice` with a free-form reference.
    #[error(
        "grader choice needs a multiple-choice answer (a multiple-choice reference: the options and the right one); use grader {} for free-form answers",
        graders_of(&[ReferenceKind::Text])
    )]
    NeedsChoices,
    /// A grader of free-form answers with a multiple-choice reference.
    #[error(
        "a multiple-choice answer is graded by grader choice, not {grader}; use grader choice, the default for multiple-choice answers"
    )]
    ChoicesNeedChoice {
        /// The grader's name.
        grader: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_inverts_display_for_every_grader() {
        for grader in Grader::each() {
            let shown = grader.to_string();
            assert_eq!(shown.parse::<Grader>(), Ok(grader.clone()), "{shown}");
        }
        let regex = Grader::Regex {
            pattern: r"answer: (\d+)".into(),
        };
        assert_eq!(regex.to_string(), r"regex:answer: (\d+)");
        assert_eq!(regex.to_string().parse::<Grader>(), Ok(regex));
        assert_eq!(
            "regex:a:b".parse::<Grader>(),
            Ok(Grader::Regex {
                pattern: "a:b".into()
            })
        );
    }

    #[test]
    fn a_value_that_names_no_grader_lists_the_allowed_ones() {
        for bad in ["fuzzy", "regex", "regex:", "Math", "math_lenient", ""] {
            let err = bad.parse::<Grader>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "grader must be one of math, math-lenient, choice, exact, regex:PATTERN, humaneval, got {bad:?}"
                )
            );
        }
    }

    #[test]
    fn each_grader_fits_its_own_kind_of_reference_and_is_told_what_fits_otherwise() {
        let kinds = [
            ReferenceKind::Text,
            ReferenceKind::Choice,
            ReferenceKind::Code,
        ];
        for grader in Grader::each() {
            for kind in kinds {
                assert_eq!(
                    grader.fits(kind).is_ok(),
                    grader.grades() == kind,
                    "{grader} on {kind:?}"
                );
            }
        }
        for kind in kinds {
            let default = Grader::default_for(kind);
            assert_eq!(default.grades(), kind);
        }
        assert_eq!(
            Grader::Math.fits(ReferenceKind::Choice),
            Err(GraderMisfit::ChoicesNeedChoice { grader: "math" })
        );
        assert_eq!(
            Grader::Humaneval.fits(ReferenceKind::Choice),
            Err(GraderMisfit::NeedsCode)
        );
        assert_eq!(
            Grader::Choice.fits(ReferenceKind::Code),
            Err(GraderMisfit::CodeNeedsHumaneval { grader: "choice" })
        );
        assert_eq!(
            Grader::Choice.fits(ReferenceKind::Text),
            Err(GraderMisfit::NeedsChoices)
        );
        assert!(GraderMisfit::NeedsChoices.to_string().ends_with(
            "use grader math, math-lenient, exact or regex:PATTERN for free-form answers"
        ));
        assert!(GraderMisfit::NeedsCode.to_string().ends_with(
            "use grader math, math-lenient, choice, exact or regex:PATTERN for answers"
        ));
    }

    #[test]
    fn graders_keep_their_wire_names() {
        // Job specs in Redis and results in SQL carry these: every grader's JSON is pinned.
        let fixtures = [
            (Grader::Math, r#"{"kind":"math"}"#),
            (Grader::MathLenient, r#"{"kind":"math_lenient"}"#),
            (Grader::Choice, r#"{"kind":"choice"}"#),
            (Grader::Exact, r#"{"kind":"exact"}"#),
            (
                Grader::Regex {
                    pattern: r"answer: (\d+)".into(),
                },
                r#"{"kind":"regex","pattern":"answer: (\\d+)"}"#,
            ),
            (Grader::Humaneval, r#"{"kind":"humaneval"}"#),
        ];
        for (grader, json) in fixtures {
            assert_eq!(serde_json::to_string(&grader).unwrap(), json);
            assert_eq!(serde_json::from_str::<Grader>(json).unwrap(), grader);
        }
        assert!(serde_json::from_str::<Grader>(r#"{"kind":"math-lenient"}"#).is_err());
    }
}
