//! [`Watching`]: a command that runs while a test reads what it writes to standard error, line by
//! line as it comes (the progress of `--wait`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::PATIENCE;

/// A running command whose standard error lines are collected as they are written, and whose
/// standard output is kept for the end; killed on drop.
pub struct Watching {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Option<JoinHandle<()>>,
    stdout: Option<JoinHandle<String>>,
}

impl Watching {
    /// Starts `command` with its standard output and error piped.
    pub fn start(mut command: Command) -> Watching {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            }
        });
        let mut stdout = child.stdout.take().expect("piped");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Watching {
            child,
            lines,
            stderr: Some(stderr),
            stdout: Some(stdout),
        }
    }

    /// The standard error lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until at least `n` lines of standard error satisfy `matches`, and returns them;
    /// panics, naming `what`, if the command exits first or hangs ([`PATIENCE`]).
    pub async fn wait_for_lines(
        &mut self,
        what: &str,
        n: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lines = self.lines();
            let found: Vec<String> = lines.iter().filter(|l| matches(l)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{n} lines of {what} expected, {} seen (exited: {exited:?}):\n{}",
                found.len(),
                lines.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the command to exit (panicking if it hangs, [`PATIENCE`]): its status, its
    /// standard output and every line of its standard error.
    pub async fn finish(mut self) -> (ExitStatus, String, Vec<String>) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not exit in {PATIENCE:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The pipes close with the process.
        self.stderr.take().unwrap().join().unwrap();
        let stdout = self.stdout.take().unwrap().join().unwrap();
        (status, stdout, self.lines())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
