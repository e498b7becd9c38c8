//! The README's main command, `powerfleet demo`, end to end: with no Redis at the given URL it
//! starts a private redis-server, runs the fleet and prints a table per model and method.

use std::process::Command;

#[test]
fn demo_starts_its_own_redis_and_reports_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_powerfleet"))
        .args([
            "demo",
            "--redis",
            "redis://127.0.0.1:1/",
            "--chains",
            "5",
            "--seeds",
            "2",
            "--database-url",
            &db,
        ])
        .env_remove("POWERFLEET_REDIS_URL")
        .output()
        .expect("powerfleet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("started a private redis-server"),
        "{stderr}"
    );
    assert!(
        stderr.contains("submitted 250 jobs under correlation id",)
            && stderr.contains("100 for the exactness check")
            && stderr.contains(
                "150 for the built-in benchmark suite (5 problems x 3 methods x 2 seeds x 5 chains)"
            ),
        "{stderr}"
    );
    let (exactness, suite) = stdout
        .split_once("built-in benchmark suite")
        .expect("the suite's section follows the exactness check");
    for model in ["toy:pivot", "toy:eos-lengths"] {
        assert!(exactness.contains(model), "{stdout}");
    }
    for method in ["power", "max-swap", "low-temp", "standard", "power-smc"] {
        let rows = exactness
            .lines()
            .filter(|l| l.starts_with(&format!("{method} ")))
            .count();
        assert_eq!(rows, 2, "one {method} row per model:\n{stdout}");
        for line in exactness
            .lines()
            .filter(|l| l.starts_with(&format!("{method} ")))
        {
            let jobs: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(jobs, 10, "{line}");
        }
    }
    assert!(stdout.contains("250 jobs in"), "{stdout}");

    // The suite: power sampling ahead of low-temp and standard, each beside the exact probability
    // of a correct answer under its target, which ranks them the same way.
    let mean: Vec<f64> = suite
        .lines()
        .find(|l| l.starts_with("mean "))
        .unwrap_or_else(|| panic!("a mean row:\n{suite}"))
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    let [
        power,
        power_exact,
        low_temp,
        low_temp_exact,
        standard,
        standard_exact,
    ] = mean[..]
    else {
        panic!("six numbers in the mean row: {mean:?}")
    };
    assert!(power > low_temp && power > standard, "{suite}");
    assert!(
        power_exact > standard_exact && standard_exact > low_temp_exact,
        "{suite}"
    );
    for problem in ["arith", "carry", "capital", "double-3", "double-4"] {
        assert!(
            suite.lines().any(|l| l.starts_with(&format!("{problem} "))),
            "{suite}"
        );
    }
    // Then the suite's report: a row per method with 10 jobs each.
    for method in ["power", "low-temp", "standard"] {
        let row = suite
            .lines()
            .find(|l| l.starts_with(&format!("{method} ")))
            .unwrap_or_else(|| panic!("a {method} row in the report:\n{suite}"));
        assert_eq!(row.split_whitespace().nth(1), Some("50"), "{row}");
    }
}
