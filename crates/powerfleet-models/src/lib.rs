//! Language models for powerfleet: toy models with exact distributions, the exact p^α enumerator,
//! and the resolution of model references such as `toy:pivot` or `toy:models/mine.json`.

pub mod builtin;
pub mod exact;
pub mod toy;

use std::path::Path;

pub use toy::{TokenOutOfVocab, ToyModel, ToyModelError};

/// A model reference that cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The reference has no known scheme.
    #[error("model reference {0:?} is not understood; use toy:NAME (built-in: {names}) or toy:PATH to a JSON file", names = builtin_list())]
    UnknownScheme(String),
    /// `toy:NAME` names neither a built-in model nor a file.
    #[error("toy model {name:?} is neither a built-in model ({names}) nor a file", names = builtin_list())]
    UnknownToy {
        /// The name given.
        name: String,
    },
    /// The toy model file is malformed.
    #[error(transparent)]
    Toy(#[from] ToyModelError),
}

fn builtin_list() -> String {
    builtin::names().collect::<Vec<_>>().join(", ")
}

/// Resolves `toy:NAME` (a built-in model) or `toy:PATH` (a JSON file).
pub fn resolve_toy(reference: &str) -> Result<ToyModel, ResolveError> {
    let Some(rest) = reference.strip_prefix("toy:") else {
        return Err(ResolveError::UnknownScheme(reference.to_string()));
    };
    if let Some(model) = builtin::load(rest) {
        return Ok(model?);
    }
    let path = Path::new(rest);
    if path.is_file() {
        return Ok(ToyModel::from_path(path)?);
    }
    Err(ResolveError::UnknownToy {
        name: rest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_builtins_and_files_and_explains_failures() {
        assert_eq!(resolve_toy("toy:pivot").unwrap().name(), "toy:pivot");
        let dir = std::env::temp_dir().join(format!("pf-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.json");
        std::fs::write(
            &file,
            r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.5, 0.5]}"#,
        )
        .unwrap();
        let model = resolve_toy(&format!("toy:{}", file.display())).unwrap();
        assert_eq!(model.vocab().len(), 2);
        let err = resolve_toy("toy:nope").unwrap_err().to_string();
        assert!(
            err.contains("built-in model (tiny, pivot, eos-lengths, suite-arith, suite-carry, suite-capital, suite-double)"),
            "{err}"
        );
        let err = resolve_toy("gpt:4").unwrap_err().to_string();
        assert!(err.contains("use toy:NAME"), "{err}");
        std::fs::write(
            &file,
            r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.7, 0.5]}"#,
        )
        .unwrap();
        let err = resolve_toy(&format!("toy:{}", file.display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("default sums to 1.2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
