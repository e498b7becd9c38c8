//! The README's main command, `powerfleet demo`, end to end: with no Redis at the given URL it
//! starts a private redis-server, runs the fleet and prints a table per model and method; on a
//! busy machine too, where its collector stores results far slower than its workers finish them.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Runs `powerfleet demo` with `args`, a Redis URL nothing listens on (so the demo starts its
/// own) and an SQLite database in `dir`, and checks that it succeeds. The database's URL, the
/// standard output and the standard error.
fn run_demo(dir: &std::path::Path, args: &[&str]) -> (String, String, String) {
    let db = format!("sqlite://{}", dir.join("demo.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_powerfleet"))
        .args(["demo", "--redis", "redis://127.0.0.1:1/"])
        .args(args)
        .args(["--database-url", &db])
        .env_remove("POWERFLEET_REDIS_URL")
        .output()
        .expect("powerfleet runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    (db, stdout, stderr)
}

#[test]
fn demo_starts_its_own_redis_and_reports_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stdout, stderr) = run_demo(dir.path(), &["--chains", "5", "--seeds", "2"]);
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

/// Load on this machine while it lives: `spinners` processes that busy-loop on a CPU each, and a
/// writer that writes and fsyncs 200 MB files in a temporary directory, over and over. Each runs
/// in a process group of its own, killed whole on drop (so no `dd` outlives the test).
struct Load {
    groups: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Load {
    fn start(spinners: usize) -> Load {
        let dir = tempfile::tempdir().unwrap();
        let spawn = |script: &str| {
            Command::new("sh")
                .args(["-c", script])
                .process_group(0)
                .spawn()
                .expect("sh runs")
        };
        let mut groups: Vec<Child> = (0..spinners)
            .map(|_| spawn("while :; do :; done"))
            .collect();
        groups.push(spawn(&format!(
            "while :; do dd if=/dev/zero of={0}/load bs=1M count=200 conv=fsync status=none; rm -f {0}/load; done",
            dir.path().display()
        )));
        Load { groups, _dir: dir }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.groups {
            // The workspace forbids unsafe code, so kill(1) signals the group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_stores_every_job_on_a_busy_machine() {
    let load = Load::start(4);
    let dir = tempfile::tempdir().unwrap();
    // The demo as the README runs it (5,000 jobs), while the machine is busy.
    let (db, stdout, stderr) = run_demo(dir.path(), &[]);
    drop(load);
    assert!(stdout.contains("5000 jobs in"), "{stdout}");
    // Every job is in the results database.
    let correlation: powerfleet_jobs::CorrelationId = stderr
        .split("under correlation id ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("the demo names its correlation id:\n{stderr}"))
        .parse()
        .unwrap();
    let store = powerfleet_store::Store::connect(&db).await.unwrap();
    let stored = store.statuses_by_correlation(&correlation).await.unwrap();
    assert_eq!(stored.len(), 5000, "{stderr}");
}
