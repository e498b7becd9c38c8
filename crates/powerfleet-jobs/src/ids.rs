//! The ids a job is known by: [`JobId`] and [`BatchId`] (UUID v7, ordered by submission time),
//! the client-chosen [`CorrelationId`] and a submission's free-text [`Label`]; [`IdError`] says
//! why a value is none of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUID v7, so ids sort by submission time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

/// A batch's id: a UUID v7 made at submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(pub Uuid);

macro_rules! uuid_id {
    ($t:ident, $what:literal) => {
        impl $t {
            /// A new, time-ordered id.
            pub fn new() -> $t {
                $t(Uuid::now_v7())
            }
        }
        impl Default for $t {
            fn default() -> Self {
                Self::new()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s.trim()).map($t).map_err(|_| IdError {
                    what: $what,
                    got: s.to_string(),
                    allowed: "a UUID such as 01936b8e-7f5a-7cc2-9d1e-3f4a5b6c7d8e",
                })
            }
        }
    };
}
uuid_id!(JobId, "job id");
uuid_id!(BatchId, "batch id");

/// A client-chosen label that groups jobs across submissions (or a generated UUID).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CorrelationId(String);

/// Longest accepted correlation id.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

impl CorrelationId {
    /// A generated correlation id (a UUID v7).
    pub fn generate() -> CorrelationId {
        CorrelationId(Uuid::now_v7().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CorrelationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CORRELATION_ID_LEN
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if ok {
            Ok(CorrelationId(s.to_string()))
        } else {
            Err(IdError {
                what: "correlation id",
                got: s.to_string(),
                allowed: "1 to 128 characters of A-Z a-z 0-9 - _ . :",
            })
        }
    }
}

impl TryFrom<String> for CorrelationId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<CorrelationId> for String {
    fn from(c: CorrelationId) -> String {
        c.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A submission's free-text label (`submit --label`, the job API's `label`), copied onto each of
/// its jobs and results so a stored result says which experiment it belongs to. Printable text,
/// 1 to [`MAX_LABEL_LEN`] characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

/// Longest accepted label, in characters.
pub const MAX_LABEL_LEN: usize = 200;

impl Label {
    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Label {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.trim().is_empty()
            && s.chars().count() <= MAX_LABEL_LEN
            && !s.chars().any(char::is_control);
        if ok {
            Ok(Label(s.to_string()))
        } else {
            Err(IdError {
                what: "label",
                got: s.chars().take(MAX_LABEL_LEN + 8).collect(),
                allowed: "1 to 200 printable characters (no control characters, not only spaces)",
            })
        }
    }
}

impl TryFrom<String> for Label {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {allowed}, got {got:?}")]
pub struct IdError {
    /// Which kind of id.
    pub what: &'static str,
    /// What was given.
    pub got: String,
    /// What would be accepted.
    pub allowed: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_explain_failures() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        let err = "nope".parse::<JobId>().unwrap_err().to_string();
        assert!(err.starts_with("job id must be a UUID"), "{err}");
        assert!("exp-1.run:2".parse::<CorrelationId>().is_ok());
        let err = "has space"
            .parse::<CorrelationId>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 to 128 characters"), "{err}");
        assert!("".parse::<CorrelationId>().is_err());
        assert!("x".repeat(129).parse::<CorrelationId>().is_err());
    }

    #[test]
    fn job_ids_sort_by_creation() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
    }
}
