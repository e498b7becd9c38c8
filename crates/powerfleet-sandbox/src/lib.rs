//! Running untrusted completions: a separate `python3` process per program, contained.
//!
//! - [`Sandbox::run`] runs one Python program and says whether it finished without an exception
//!   ([`Verdict`]), or that the sandbox itself failed ([`SandboxError`]): a failure of the
//!   harness is never a wrong answer.
//! - [`humaneval`]: HumanEval's program (prompt + completion + tests + `check(entry_point)`) and
//!   the `humaneval` grader over it.
//!
//! What contains a program (docs/grading.md has the whole list):
//! - an empty temporary directory as its working directory, removed afterwards;
//! - the environment cleared (`PATH`, `HOME` = the directory, `LANG` only);
//! - new network and PID namespaces (`unshare --net --pid --fork --kill-child`, with
//!   `--map-root-user` when not root) where the machine allows them, detected once: no network
//!   at all, and every process the program starts dies with it. Where they are unavailable the
//!   collector logs it and the preamble blocks Python's socket functions instead, as HumanEval's
//!   own `reliability_guard` blocks other functions;
//! - rlimits set by a Python preamble before the program runs: address space (`RLIMIT_AS`),
//!   CPU seconds, file size, processes (`RLIMIT_NPROC`, against fork bombs), no core files;
//! - run as root, the preamble becomes `nobody` before the program runs, so the program can
//!   change no file of the fleet's (and `RLIMIT_NPROC`, which root ignores, applies); run as
//!   another user, the preamble disables Python's file-deleting, process-spawning and signalling
//!   functions instead;
//! - a wall-clock limit, after which the whole process group is killed;
//! - the program's output goes to a file in its directory (bounded by the file-size limit), of
//!   which at most [`SandboxConfig::max_output_bytes`] are read back; the harness's own channel
//!   is bounded the same way.

pub mod humaneval;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use humaneval::{
    HumanevalError, grade_humaneval, grade_result, humaneval_grading, humaneval_program,
};

/// The preamble run before every program (sets the limits, drops privileges, runs the program
/// and reports on a channel of its own).
const PREAMBLE: &str = include_str!("preamble.py");

/// The user the preamble becomes when run as root.
const NOBODY: u32 = 65534;

/// How a [`Sandbox`] runs programs.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The Python interpreter. Run as root, it must be readable by `nobody` (a system python,
    /// not one under `/root`).
    pub python: PathBuf,
    /// Wall-clock limit of one program; the process group is killed after it.
    pub timeout: Duration,
    /// CPU seconds one program may use (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Address space of the program's process, bytes (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Largest file the program may write, bytes (`RLIMIT_FSIZE`), its output included.
    pub max_file_bytes: u64,
    /// Processes the program's user may have (`RLIMIT_NPROC`).
    pub max_processes: u64,
    /// Bytes of the program's output (and of the harness's channel) read back.
    pub max_output_bytes: usize,
    /// Use network and PID namespaces where the machine allows them; `false` forces the
    /// Python-level guards (for tests of the fallback).
    pub namespaces: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            python: default_python(),
            timeout: Duration::from_secs(10),
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            max_file_bytes: 16 << 20,
            max_processes: 64,
            max_output_bytes: 64 << 10,
            namespaces: true,
        }
    }
}

/// `/usr/bin/python3` where it exists (readable by every user), else `python3` from `PATH`.
pub fn default_python() -> PathBuf {
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        system.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It ran to its end without an exception.
    Passed,
    /// It raised, was killed by a limit, exited early, or ran out of time; why.
    Failed(String),
}

/// One program's run.
#[derive(Clone, Debug)]
pub struct Execution {
    /// How it ended.
    pub verdict: Verdict,
    /// The start of what it printed (stdout and stderr), at most
    /// [`SandboxConfig::max_output_bytes`].
    pub output: String,
    /// Wall-clock time from spawning to the end.
    pub elapsed: Duration,
}

/// The sandbox could not run the program: a failure of grading, never a wrong answer.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The interpreter (or `unshare`) could not be started.
    #[error(
        "the grading sandbox cannot start {program}: {source}; install python3 (e.g. apt-get install -y python3) or pass the interpreter's path"
    )]
    Spawn {
        /// What was started.
        program: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The temporary directory could not be made or prepared.
    #[error("the grading sandbox cannot prepare its temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// The harness ended before it ran the program (the interpreter failed to start, a limit
    /// could not be set).
    #[error("the grading sandbox's harness failed before running the program ({status}): {stderr}")]
    Harness {
        /// How the process ended.
        status: String,
        /// The start of its standard error.
        stderr: String,
    },
    /// The harness did not even start the program within the time limit (an overloaded host).
    #[error(
        "the grading sandbox's harness did not start the program within {0:?}; the host may be overloaded"
    )]
    HarnessTimeout(Duration),
}

/// What the machine allows, detected once per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    /// The `unshare` arguments that give the program new network and PID namespaces; `None`
    /// where the machine allows none.
    pub unshare: Option<Vec<&'static str>>,
    /// Whether this process runs as root (the preamble then becomes `nobody`).
    pub root: bool,
}

impl Isolation {
    /// Detects (once per process) whether `unshare` can make network and PID namespaces, as
    /// root or in a new user namespace, and logs a warning when it cannot.
    pub fn detect() -> &'static Isolation {
        static DETECTED: OnceLock<Isolation> = OnceLock::new();
        DETECTED.get_or_init(|| {
            use std::os::unix::fs::MetadataExt;
            let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
            let plain = vec!["--net", "--pid", "--fork", "--kill-child"];
            let mut user = vec!["--map-root-user"];
            user.extend(plain.iter().copied());
            let works = |args: &[&str]| {
                Command::new("unshare")
                    .args(args)
                    .arg("true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let unshare = [plain, user].into_iter().find(|args| works(args));
            if unshare.is_none() {
                tracing::warn!(
                    "network and PID namespaces are unavailable (unshare --net --pid fails): graded programs run without them; Python's socket functions are blocked instead"
                );
            }
            Isolation { unshare, root }
        })
    }
}

/// Runs programs as its [`SandboxConfig`] says. Cheap to clone; one run per call, so run it on
/// as many threads as programs should run at once.
#[derive(Clone, Debug)]
pub struct Sandbox {
    config: SandboxConfig,
}

impl Sandbox {
    /// A sandbox with `config`.
    pub fn new(config: SandboxConfig) -> Sandbox {
        Sandbox { config }
    }

    /// Its configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Runs `program` (Python source) to its end or its limits. Blocks the calling thread.
    pub fn run(&self, program: &str) -> Result<Execution, SandboxError> {
        let c = &self.config;
        let isolation = Isolation::detect();
        let unshare = if c.namespaces {
            isolation.unshare.as_ref()
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("powerfleet-sandbox-")
            .tempdir()
            .map_err(SandboxError::TempDir)?;
        if isolation.root {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))
                .map_err(SandboxError::TempDir)?;
        }
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut command = match unshare {
            Some(args) => {
                let mut cmd = Command::new("unshare");
                cmd.args(args).arg("--").arg(&c.python);
                cmd
            }
            None => Command::new(&c.python),
        };
        command
            .args(["-I", "-B", "-c", PREAMBLE])
            .arg(c.memory_bytes.to_string())
            .arg(c.cpu_seconds.max(1).to_string())
            .arg(c.max_file_bytes.to_string())
            .arg(c.max_processes.to_string())
            .arg(flag(isolation.root))
            .arg(flag(unshare.is_none()))
            .arg(flag(!isolation.root))
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| SandboxError::Spawn {
            program: match unshare {
                Some(_) => format!("unshare (for {})", c.python.display()),
                None => c.python.display().to_string(),
            },
            source,
        })?;
        let channel = Capture::start(child.stdout.take(), c.max_output_bytes);
        let stderr = Capture::start(child.stderr.take(), c.max_output_bytes);
        let nonce = uuid::Uuid::now_v7().simple().to_string();
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means the interpreter is gone already; its status tells why.
            let _ = stdin
                .write_all(nonce.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.write_all(program.as_bytes()));
        }
        let (status, timed_out) = wait_until(&mut child, started + c.timeout);
        kill_group(&mut child);
        let elapsed = started.elapsed();
        let channel = channel.finish();
        let stderr = stderr.finish();
        let output = read_head(&dir.path().join("output.txt"), c.max_output_bytes);
        let mut ready = false;
        let mut verdict = None;
        for line in channel.lines() {
            let Some(rest) = line
                .strip_prefix(nonce.as_str())
                .and_then(|r| r.strip_prefix(' '))
            else {
                continue;
            };
            if rest == "ready" {
                ready = true;
            } else if rest == "passed" {
                verdict = Some(Verdict::Passed);
            } else if let Some(reason) = rest.strip_prefix("failed ") {
                verdict = Some(Verdict::Failed(reason.to_string()));
            }
        }
        let verdict = match (verdict, ready) {
            (Some(v), _) => v,
            (None, true) if timed_out => {
                Verdict::Failed(format!("timed out after {:.1} s", c.timeout.as_secs_f64()))
            }
            (None, true) => Verdict::Failed(format!(
                "ended before its tests finished ({})",
                describe(status)
            )),
            (None, false) if timed_out => return Err(SandboxError::HarnessTimeout(c.timeout)),
            (None, false) => {
                return Err(SandboxError::Harness {
                    status: describe(status),
                    stderr: stderr.trim().to_string(),
                });
            }
        };
        Ok(Execution {
            verdict,
            output,
            elapsed,
        })
    }
}

/// Waits for `child` until `deadline`; the status (if it ended) and whether the deadline passed.
fn wait_until(child: &mut Child, deadline: Instant) -> (Option<ExitStatus>, bool) {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), false),
            Ok(None) => {}
            Err(_) => return (None, false),
        }
        let now = Instant::now();
        if now >= deadline {
            return (None, true);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kills the child's whole process group (whatever it left behind) and reaps the child.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => s.to_string(),
        },
        None => "killed".to_string(),
    }
}

/// The first `limit` bytes of a file, as text; empty when it cannot be read.
fn read_head(path: &Path, limit: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(limit as u64).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A pipe read on a thread of its own: the first `limit` bytes are kept, the rest drained.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>, limit: usize) -> Capture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = std::sync::mpsc::channel();
        if let Some(mut pipe) = pipe {
            let shared = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut b = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let room = limit.saturating_sub(b.len());
                    b.extend_from_slice(&chunk[..n.min(room)]);
                }
                let _ = tx.send(());
            });
        }
        Capture { buf, done }
    }

    /// What was read, waiting a moment for the pipe's end (a process that escaped the group
    /// could hold it open; it is not waited for).
    fn finish(self) -> String {
        let _ = self.done.recv_timeout(Duration::from_millis(500));
        let b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    }
}
