//! The toy models that ship inside the binary, addressed as `toy:NAME`.

use crate::toy::{ToyModel, ToyModelError};

/// (name, JSON) of every built-in toy model.
pub const BUILTIN: &[(&str, &str)] = &[
    ("tiny", include_str!("builtin/tiny.json")),
    ("pivot", include_str!("builtin/pivot.json")),
    ("eos-lengths", include_str!("builtin/eos-lengths.json")),
    // The models of the built-in benchmark suite (powerfleet-datasets).
    ("suite-arith", include_str!("builtin/suite-arith.json")),
    ("suite-carry", include_str!("builtin/suite-carry.json")),
    ("suite-capital", include_str!("builtin/suite-capital.json")),
    ("suite-double", include_str!("builtin/suite-double.json")),
];

/// The names of the built-in models.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|&(name, _)| name)
}

/// Loads built-in model `name`, or `None` if there is none by that name.
pub fn load(name: &str) -> Option<Result<ToyModel, ToyModelError>> {
    BUILTIN
        .iter()
        .find(|&&(n, _)| n == name)
        .map(|&(n, json)| ToyModel::from_json(&format!("toy:{n}"), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_model_is_valid() {
        for name in names() {
            let model = load(name).unwrap().unwrap();
            assert_eq!(model.name(), format!("toy:{name}"));
            assert!(model.description().is_some(), "{name} has a description");
        }
    }
}
