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
    assert!(stderr.contains("submitted 80 jobs"), "{stderr}");
    for model in ["toy:pivot", "toy:eos-lengths"] {
        assert!(stdout.contains(model), "{stdout}");
    }
    for method in ["power", "max-swap", "low-temp", "standard"] {
        let rows = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{method} ")))
            .count();
        assert_eq!(rows, 2, "one {method} row per model:\n{stdout}");
        for line in stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{method} ")))
        {
            let jobs: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(jobs, 10, "{line}");
        }
    }
    assert!(stdout.contains("80 jobs in"), "{stdout}");
}
