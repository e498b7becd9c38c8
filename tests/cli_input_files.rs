//! The files the CLI and `serve` read, through the real binary: batch files (`submit
//! --batch-file`, streamed with a cap per line, on the lines and on the whole file), datasets
//! (`submit --bench`, `serve --dataset`), templates (`submit --template`) and the tokens file
//! (`serve --api-tokens-file`). Each is refused at its cap before anything past it is read, so
//! `/dev/zero` fails at once, with an error naming the cap and the flag that raises it. All fail
//! before Redis is contacted, so no server is needed.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;

/// Runs `powerfleet submit --model toy:pivot --batch-file FILE`, killing it if it hangs
/// ([`PATIENCE`]).
fn submit_batch_file(file: &str) -> Output {
    powerfleet(&["submit", "--model", "toy:pivot", "--batch-file", file])
}

/// Runs `powerfleet ARGS` against a Redis that is not there, killing it if it hangs ([`PATIENCE`]).
fn powerfleet(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_powerfleet"))
        .args(args)
        .env("POWERFLEET_REDIS_URL", "redis://127.0.0.1:1/")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the powerfleet binary runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > PATIENCE {
            child.kill().unwrap();
            panic!("powerfleet {args:?} did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_endless_batch_file_fails_fast_naming_the_line() {
    let out = submit_batch_file("/dev/zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--batch-file /dev/zero: line 1 is longer than 1048576 bytes (1 MiB"),
        "{stderr}"
    );
}

/// The exit code 1 and the standard error of `out`, asserting both.
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn a_batch_file_over_its_cap_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch.jsonl");
    std::fs::write(&file, "{\"prompt\": \"A\"}\n".repeat(10)).unwrap();
    let path = file.to_str().unwrap();
    let stderr = failure(&powerfleet(&[
        "submit",
        "--batch-file",
        path,
        "--max-batch-file-bytes",
        "100",
    ]));
    assert!(
        stderr.contains(
            "the batch file is larger than the limit of 100 bytes; raise the limit with --max-batch-file-bytes"
        ),
        "{stderr}"
    );
}

#[test]
fn endless_datasets_and_templates_are_refused_at_their_cap_naming_the_flag() {
    let stderr = failure(&powerfleet(&["submit", "--bench", "/dev/zero"]));
    assert!(
        stderr.contains("/dev/zero")
            && stderr.contains(
                "larger than the limit of 67108864 bytes (64 MiB); raise the limit with --max-dataset-bytes"
            ),
        "{stderr}"
    );
    let stderr = failure(&powerfleet(&[
        "submit",
        "--bench",
        "/dev/zero",
        "--max-dataset-bytes",
        "4096",
    ]));
    assert!(stderr.contains("4096 bytes (4 KiB)"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("sums.jsonl");
    std::fs::write(&dataset, "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n").unwrap();
    let stderr = failure(&powerfleet(&[
        "submit",
        "--bench",
        dataset.to_str().unwrap(),
        "--template",
        "/dev/zero",
    ]));
    assert!(
        stderr.contains("--template")
            && stderr.contains(
                "larger than the limit of 1048576 bytes (1 MiB); raise the limit with --max-template-bytes"
            ),
        "{stderr}"
    );
    // serve reads its datasets and its tokens file before it connects to anything.
    let stderr = failure(&powerfleet(&[
        "serve",
        "--insecure-no-auth",
        "--dataset",
        "zeros=/dev/zero",
    ]));
    assert!(
        stderr.contains("--dataset zeros: cannot read dataset file /dev/zero")
            && stderr.contains("raise the limit with --max-dataset-bytes"),
        "{stderr}"
    );
    let stderr = failure(&powerfleet(&["serve", "--api-tokens-file", "/dev/zero"]));
    assert!(
        stderr.contains("--api-tokens-file /dev/zero is larger than 1048576 bytes (1 MiB)"),
        "{stderr}"
    );
}

#[test]
fn a_batch_file_may_start_with_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch.jsonl");
    // Line 1 (after the mark) is valid; line 2 is not, so submit stops before Redis.
    std::fs::write(&file, "\u{feff}{\"prompt\": \"A\"}\r\n{\"promt\": \"A\"}\n").unwrap();
    let out = submit_batch_file(file.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2: unknown field `promt`"), "{stderr}");
    assert!(!stderr.contains("line 1:"), "{stderr}");
}
