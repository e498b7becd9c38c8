//! Pinned results: the JSON of results as workers wrote them (and as the store keeps them in
//! `result_json`), kept verbatim under `tests/fixtures/`, must keep decoding, and re-encode to
//! the same fields. A stored result outlives a deploy: a study written last month is read by
//! this month's `powerfleet report`.
//!
//! Never regenerate, edit or delete an existing fixture: each is the record of what a version
//! wrote. Add a new one when the format grows.

use powerfleet_jobs::{JobResult, Pin, ResultFormat};
use serde_json::Value;

const FIXTURES: [&str; 5] = [
    "result-llamacpp-pin.json",
    "result-toy-pin.json",
    "result-without-pin.json",
    "result-null-pin.json",
    "result-format-1.json",
];

fn fixture(name: &str) -> (String, JobResult) {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let result = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    (text, result)
}

/// The fields a result of this version writes for an old one: the old ones, with a `null` pin
/// left out (the field is skipped when there is none).
fn without_null_pin(mut v: Value) -> Value {
    if v.get("pin") == Some(&Value::Null) {
        v.as_object_mut().unwrap().remove("pin");
    }
    v
}

#[test]
fn results_as_workers_wrote_them_decode_and_reencode_to_the_same_fields() {
    for name in FIXTURES {
        let (text, result) = fixture(name);
        let written: Value = serde_json::from_str(&text).unwrap();
        let again = serde_json::to_value(&result).unwrap();
        assert_eq!(again, without_null_pin(written), "{name}");
    }
}

#[test]
fn old_pins_read_as_the_backend_they_name_with_determinism_unknown() {
    let (_, server) = fixture("result-llamacpp-pin.json");
    let Some(Pin::Server(pin)) = server.pin else {
        panic!("a server pin: {:?}", server.pin)
    };
    assert_eq!(
        (pin.kind.as_str(), pin.k, &pin.terminal_tokens[..]),
        ("llamacpp", 98, &[2][..])
    );
    assert_eq!(pin.deterministic, None, "written before the probe checked");
    let (_, toy) = fixture("result-toy-pin.json");
    assert_eq!(
        toy.pin,
        Some(Pin::Toy {
            model: "toy:pivot".into()
        })
    );
    for name in ["result-without-pin.json", "result-null-pin.json"] {
        assert_eq!(fixture(name).1.pin, None, "{name}");
    }
}

#[test]
fn results_name_their_format_and_those_written_before_read_as_none() {
    assert_eq!(
        fixture("result-format-1.json").1.format,
        Some(ResultFormat::V1)
    );
    for name in FIXTURES.iter().filter(|n| **n != "result-format-1.json") {
        assert_eq!(fixture(name).1.format, None, "{name}");
    }
}

#[test]
fn a_result_in_a_format_this_version_does_not_know_is_refused_not_misread() {
    let (text, _) = fixture("result-format-1.json");
    let newer = text.replace(r#""format":"1""#, r#""format":"2""#);
    let err = serde_json::from_str::<JobResult>(&newer)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            r#"result format must be one of 1 (the formats this powerfleet reads), got "2""#
        ),
        "{err}"
    );
}
