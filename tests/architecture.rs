//! Architecture invariants of docs/ARCHITECTURE.md, checked.

use std::process::Command;

/// The workspace's crates in layer order, lowest first: each crate may depend only on crates
/// below it, that is listed before it here. Derived from the manifests; a new crate goes in at
/// its layer, and a new dependency that points up is a design change, not a list edit.
///
/// The sampler core and grading depend on nothing of ours; models and jobs only on the sampler;
/// the sandbox (which runs graded programs) on grading and jobs; datasets on grading and models;
/// backends on jobs and the sampler; reports on jobs, grading
/// and the sampler; the queue and the store on jobs (the store also on grading and the sampler);
/// the fleet's roles on all of those, and the binary on top. Above it the test kit, which only
/// tests use (as a dev-dependency) and which may use every crate but the binary.
const LAYERS: [&str; 14] = [
    "powerfleet-common",
    "powerfleet-sampler",
    "powerfleet-models",
    "powerfleet-jobs",
    "powerfleet-backends",
    "powerfleet-grade",
    "powerfleet-sandbox",
    "powerfleet-datasets",
    "powerfleet-report",
    "powerfleet-queue",
    "powerfleet-store",
    "powerfleet-fleet",
    "powerfleet",
    "powerfleet-testkit",
];

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

/// The workspace's crates and, for each, the workspace crates it depends on directly (normal and
/// build dependencies; dev-dependencies are left out: tests may use a higher layer), from
/// `cargo metadata`.
fn workspace_edges() -> Vec<(String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("a package name"))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().expect("a dependency name"))
                .filter(|d| names.contains(d))
                .map(str::to_string)
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

/// Every workspace crate has its place in [`LAYERS`] and depends only on crates below it.
#[test]
fn crates_depend_only_on_lower_layers() {
    let edges = workspace_edges();
    let layer = |name: &str| LAYERS.iter().position(|l| *l == name);

    let unlisted: Vec<&str> = edges
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| layer(name).is_none())
        .collect();
    assert!(
        unlisted.is_empty(),
        "workspace crates missing from LAYERS in tests/architecture.rs: {unlisted:?}"
    );
    let gone: Vec<&str> = LAYERS
        .iter()
        .copied()
        .filter(|l| !edges.iter().any(|(name, _)| name == l))
        .collect();
    assert!(
        gone.is_empty(),
        "LAYERS names crates that are not in the workspace: {gone:?}"
    );

    let mut upward = Vec::new();
    for (name, deps) in &edges {
        for dep in deps {
            if layer(dep) >= layer(name) {
                upward.push(format!("{name} -> {dep}"));
            }
        }
    }
    upward.sort();
    assert!(
        upward.is_empty(),
        "dependencies that do not point to a lower layer (LAYERS, lowest first: {}): {}",
        LAYERS.join(" < "),
        upward.join(", ")
    );
}

/// The store knows no Redis: no Redis client anywhere in its (transitive) normal dependencies.
#[test]
fn store_crate_knows_no_redis() {
    let crates = normal_dependencies("powerfleet-store");
    let redis: Vec<&String> = crates.iter().filter(|c| c.contains("redis")).collect();
    assert!(
        redis.is_empty(),
        "powerfleet-store depends on {redis:?}: {crates:?}"
    );
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What differs between inference servers lives in their dialects: no production code outside
/// `crates/powerfleet-backends/src/dialect/` names a server kind's variant (it asks the kind's
/// dialect instead), so a new server is its dialect file and its registration there.
#[test]
fn only_the_dialects_name_a_server_kind() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dialects = root.join("crates/powerfleet-backends/src/dialect");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut named = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&dialects)) {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests, at the end of a file, may name kinds.
        let production = text
            .split("\n#[cfg(test)]\nmod ")
            .next()
            .unwrap_or_default();
        for (i, line) in production.lines().enumerate() {
            if ["LlamaCpp", "Vllm", "Sglang"]
                .iter()
                .any(|v| line.contains(&format!("ServerKind::{v}")))
            {
                named.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        named.is_empty(),
        "server kinds named outside their dialects (ask `kind.dialect()` instead):\n{}",
        named.join("\n")
    );
}

/// The names in the first column of the markdown table under `heading` in `doc`, between its
/// first pair of backticks and up to a `:` (`regex:PATTERN` is `regex`).
fn table_names(doc: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(doc).unwrap();
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("{doc} has {heading}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cell = l.split('|').nth(1).unwrap();
            let name = cell.split('`').nth(1).unwrap();
            name.split(':').next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn the_grader_table_and_the_grader_help_list_every_grader() {
    let graders: Vec<String> = powerfleet_jobs::Grader::each()
        .iter()
        .map(|g| g.name().to_string())
        .collect();
    assert_eq!(table_names("docs/grading.md", "## Graders"), graders);
    let help = Command::new(crate::common::BIN)
        .args(["submit", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let grader_help = &help[help.find("--grader").expect("submit has --grader")..];
    let grader_help = &grader_help[..grader_help.find("\n  -").unwrap_or(grader_help.len())];
    for name in &graders {
        assert!(
            grader_help.contains(name.as_str()),
            "--grader's help names {name}: {grader_help}"
        );
    }
}

#[test]
fn the_readme_and_the_method_help_list_every_method() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `--method`"))
        .expect("README documents --method");
    let listed: Vec<&str> = row
        .split('|')
        .nth(2)
        .unwrap()
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    let methods: Vec<&str> = powerfleet_sampler::Method::ALL
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(listed, methods, "README's --method row");
    let help = Command::new(crate::common::BIN)
        .args(["sample", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let method_help = &help[help.find("--method").unwrap()..];
    let method_help = &method_help[..method_help.find("\n  -").unwrap()];
    for m in &methods {
        assert!(
            method_help.contains(m),
            "--method's help names {m}: {method_help}"
        );
    }
}
