//! `powerfleet submit --batch-file` through the real binary: the file is streamed with a cap per
//! line and on the lines, so an endless file fails fast, and a UTF-8 byte order mark is accepted.
//! Both fail before Redis is contacted, so no server is needed.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `powerfleet submit --model toy:pivot --batch-file FILE`, killing it after 60 s.
fn submit_batch_file(file: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_powerfleet"))
        .args(["submit", "--model", "toy:pivot", "--batch-file", file])
        .env("POWERFLEET_REDIS_URL", "redis://127.0.0.1:1/")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the powerfleet binary runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("submit --batch-file {file} did not finish within 60 s");
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
        stderr.contains("--batch-file /dev/zero: line 1 is longer than 1048576 bytes"),
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
