//! Architecture invariants of docs/ARCHITECTURE.md, checked.

use std::process::Command;

/// The sampler core does no IO: no async runtime, Redis, HTTP or SQL anywhere in its
/// (transitive) normal dependencies.
#[test]
fn sampler_crate_depends_on_no_io_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "powerfleet-sampler",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"powerfleet-sampler"), "{tree}");
    for forbidden in [
        "tokio",
        "redis",
        "reqwest",
        "sqlx",
        "hyper",
        "axum",
        "deadpool-redis",
        "metrics",
        "mio",
    ] {
        assert!(
            !crates.contains(&forbidden),
            "powerfleet-sampler depends on {forbidden}:\n{tree}"
        );
    }
}

/// The model layer knows nothing of the queue or the store.
#[test]
fn models_crate_knows_no_queue_or_store() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/powerfleet-models/Cargo.toml"
    ))
    .unwrap();
    for forbidden in ["redis", "sqlx", "deadpool"] {
        assert!(
            !manifest.contains(forbidden),
            "powerfleet-models names {forbidden}"
        );
    }
}
