//! The datasets an operator registered with `serve --dataset NAME=PATH`: the only datasets whose
//! graders may run code on a token holder's behalf. A graded run over the API names one
//! (`"bench": {"dataset": "humaneval"}`) instead of carrying records; `GET /v1/datasets` lists
//! them. Each file is read and checked once, when `serve` starts, so a dataset that cannot be
//! used keeps the API from starting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use powerfleet_datasets::{DatasetError, DatasetFormat, SizeCap};
use powerfleet_jobs::{Grader, ReferenceKind};
use serde::{Deserialize, Serialize};

use crate::producer::GradedProblem;
use crate::request::{RequestError, SubmitRequest, quote};

/// One registered dataset: its problems as loaded at start.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisteredDataset {
    /// The name requests use.
    pub name: String,
    /// The file it was read from (never shown to callers).
    pub path: PathBuf,
    /// Its format, as detected.
    pub format: DatasetFormat,
    /// Its problems, as a graded run holds them: every request naming the dataset shares
    /// them ([`crate::producer::GradedRun::problems`]), none copies them.
    pub problems: Arc<[GradedProblem]>,
}

impl RegisteredDataset {
    /// The grader its problems get unless a request chooses another: `humaneval` for
    /// programming problems, `choice` for multiple choice, else `math`.
    pub fn default_grader(&self) -> &'static str {
        let kind = self.problems.first().map_or(ReferenceKind::Text, |p| {
            crate::producer::reference_kind(&p.problem.answer)
        });
        Grader::default_for(kind).name()
    }
}

/// What `GET /v1/datasets` says of one dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The name to give as `bench.dataset`.
    pub name: String,
    /// Its format: `jsonl`, `math500`, `multiple-choice` or `code`.
    pub format: String,
    /// How many problems it holds.
    pub problems: usize,
    /// The grader its problems get by default.
    pub grader: String,
}

/// The datasets a request may name (`serve --dataset NAME=PATH`, repeatable); empty by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Datasets {
    by_name: BTreeMap<String, RegisteredDataset>,
}

/// A `serve --dataset` value that cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum DatasetFlagError {
    /// Not `NAME=PATH`, or a name with white space, control characters, `=` or `/`.
    #[error(
        "--dataset must be NAME=PATH with a name of letters, digits, '-', '_', '.' or ':' (such as humaneval=/data/HumanEval.jsonl.gz), got {}",
        quote(.entry)
    )]
    Syntax {
        /// The value as given.
        entry: String,
    },
    /// Two values with one name.
    #[error("--dataset {name} is given twice; give each dataset one name")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// The file cannot be read or holds broken records.
    #[error("--dataset {name}: {source}")]
    Load {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: DatasetError,
    },
}

impl Datasets {
    /// Reads every `NAME=PATH` of `serve --dataset`, each file at most `cap` bytes.
    pub fn load(entries: &[String], cap: SizeCap) -> Result<Datasets, DatasetFlagError> {
        let mut by_name = BTreeMap::new();
        for entry in entries {
            let Some((name, path)) = entry.split_once('=') else {
                return Err(DatasetFlagError::Syntax {
                    entry: entry.clone(),
                });
            };
            let name_ok = !name.is_empty()
                && name.len() <= 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
            if !name_ok || path.is_empty() {
                return Err(DatasetFlagError::Syntax {
                    entry: entry.clone(),
                });
            }
            if by_name.contains_key(name) {
                return Err(DatasetFlagError::Duplicate { name: name.into() });
            }
            let (format, problems) =
                powerfleet_datasets::load_capped(path, None, cap).map_err(|source| {
                    DatasetFlagError::Load {
                        name: name.into(),
                        source,
                    }
                })?;
            by_name.insert(
                name.to_string(),
                RegisteredDataset {
                    name: name.to_string(),
                    path: PathBuf::from(path),
                    format,
                    problems: GradedProblem::many(problems),
                },
            );
        }
        Ok(Datasets { by_name })
    }

    /// The dataset called `name`.
    pub fn get(&self, name: &str) -> Option<&RegisteredDataset> {
        self.by_name.get(name)
    }

    /// Every dataset, by name, as `GET /v1/datasets` lists them.
    pub fn list(&self) -> Vec<DatasetInfo> {
        self.by_name
            .values()
            .map(|d| DatasetInfo {
                name: d.name.clone(),
                format: d.format.name().to_string(),
                problems: d.problems.len(),
                grader: d.default_grader().to_string(),
            })
            .collect()
    }

    /// The registered names, for messages.
    fn names(&self) -> String {
        if self.by_name.is_empty() {
            "none: this server was started without --dataset".to_string()
        } else {
            self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// Gives `request.bench.dataset` its problems (`GradedRunRequest::resolved`), so that
    /// [`SubmitRequest::into_submission`] can render them; 422 listing the registered names
    /// when it names none of them. A request without `bench.dataset` is left alone.
    pub fn resolve(&self, request: &mut SubmitRequest) -> Result<(), RequestError> {
        let Some(bench) = request.bench.as_mut() else {
            return Ok(());
        };
        let Some(name) = bench.dataset.as_deref() else {
            return Ok(());
        };
        match self.by_name.get(name) {
            Some(d) => {
                bench.resolved = Some(d.clone());
                Ok(())
            }
            None => Err(RequestError::Invalid(format!(
                "bench.dataset {} is not a dataset of this server; registered: {} (GET /v1/datasets lists them; the operator registers one with serve --dataset NAME=PATH)",
                quote(name),
                self.names()
            ))),
        }
    }
}
