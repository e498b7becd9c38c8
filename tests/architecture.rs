//! Architecture invariants of docs/ARCHITECTURE.md, checked.

use std::process::Command;

/// The crates `cargo tree` lists among the (transitive) normal dependencies of `package`.
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
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
    let crates: Vec<String> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(crates.iter().any(|c| c == package), "{tree}");
    crates
}

/// Crates that do IO: an async runtime, Redis, HTTP, SQL, metrics.
const IO_CRATES: [&str; 9] = [
    "tokio",
    "redis",
    "reqwest",
    "sqlx",
    "hyper",
    "axum",
    "deadpool-redis",
    "metrics",
    "mio",
];

/// The sampler core does no IO: no async runtime, Redis, HTTP or SQL anywhere in its
/// (transitive) normal dependencies.
#[test]
fn sampler_crate_depends_on_no_io_crates() {
    let crates = normal_dependencies("powerfleet-sampler");
    for forbidden in IO_CRATES {
        assert!(
            !crates.iter().any(|c| c == forbidden),
            "powerfleet-sampler depends on {forbidden}: {crates:?}"
        );
    }
}

/// Grading, datasets and reports are pure: the collector, the CLI and the HTTP API share them
/// without dragging IO into them.
#[test]
fn grading_datasets_and_reports_depend_on_no_io_crates() {
    for package in [
        "powerfleet-grade",
        "powerfleet-datasets",
        "powerfleet-report",
    ] {
        let crates = normal_dependencies(package);
        for forbidden in IO_CRATES {
            assert!(
                !crates.iter().any(|c| c == forbidden),
                "{package} depends on {forbidden}: {crates:?}"
            );
        }
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
