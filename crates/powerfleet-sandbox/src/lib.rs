//! Running untrusted completions: a separate `python3` process per program, walled in by
//! bubblewrap.
//!
//! - [`Sandbox::run`] runs one Python program and says whether it finished without an exception
//!   ([`Verdict`]), or that the sandbox itself failed ([`SandboxError`]): a failure of the
//!   harness is never a wrong answer.
//! - [`Isolation`]: bubblewrap, probed once per process for each configuration; where it cannot
//!   run, programs are not run at all ([`IsolationError`], a grading failure) unless the
//!   operator accepted running them unisolated ([`SandboxConfig::unisolated`]).
//! - [`humaneval`]: HumanEval's program (prompt + completion + tests + `check(entry_point)`) and
//!   the `humaneval` grader over it.
//!
//! What contains a program (docs/grading.md has the whole list):
//! - new user, mount, PID, network, IPC, UTS and cgroup namespaces (`bwrap --unshare-all`): no
//!   host process visible, no network, no host socket; it cannot make user namespaces itself;
//! - a read-only root holding the Python runtime only (the interpreter, its standard library and
//!   `lib-dynload`, the loader and the shared libraries they link; no other host program, no
//!   shell), a private `/proc`, a minimal read-only `/dev`, and a tmpfs of
//!   [`SandboxConfig::tmpfs_bytes`] as `/tmp`, its working directory and `HOME`, gone with the
//!   namespace;
//! - its own user, never the collector's nor root, on the host as inside: run as root, bubblewrap
//!   itself runs as [`SandboxConfig::uid`] (65534); run as another user, it runs as the first
//!   subordinate id of that user's (`/etc/subuid`, mapped by `newuidmap` through util-linux
//!   `unshare`), and without one no program runs ([`IsolationError::NoOtherUser`]);
//! - the environment cleared (`PATH`, `HOME`, `LANG` only), a new session;
//! - rlimits set by a Python preamble before the program runs: address space per process
//!   (`RLIMIT_AS`), processes and threads of the namespace (`RLIMIT_NPROC`), CPU seconds, file
//!   size, open descriptors, no core files; and a seccomp filter that refuses memfd files,
//!   System V IPC, io_uring and sockets other than Unix ones (memory no rlimit counts); with the
//!   tmpfs, the program's memory stays within [`SandboxConfig::memory_bound_bytes`];
//! - a wall-clock limit, after which bubblewrap is killed, and with it (its init is the PID
//!   namespace's first process) every process of the program, daemons included;
//! - the program's stdout and stderr go to a pipe read up to
//!   [`SandboxConfig::max_output_bytes`] (the rest drained); the harness reports on a pipe of
//!   its own. No file of the program's is ever read.

pub mod humaneval;
mod isolation;
mod seccomp;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use humaneval::{
    HumanevalError, grade_humaneval, grade_result, humaneval_grading, humaneval_program,
};
pub use isolation::{Isolation, IsolationError};

/// The preamble run before every program (sets the limits, runs the program and reports on a
/// channel of its own).
const PREAMBLE: &str = include_str!("preamble.py");

/// The user (and group) programs run as by default: `nobody`.
pub const NOBODY: u32 = 65534;

/// How a [`Sandbox`] runs programs.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The Python interpreter. It and its prefix are mounted read-only in the sandbox; run as
    /// root, they must be readable by [`SandboxConfig::uid`] (a system python, not one under
    /// `/root`).
    pub python: PathBuf,
    /// bubblewrap (`bwrap`): a path, or a name looked up on `PATH`.
    pub bwrap: PathBuf,
    /// Wall-clock limit of one program; the sandbox is killed after it.
    pub timeout: Duration,
    /// CPU seconds one process of the program may use (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Address space of each process of the program, bytes (`RLIMIT_AS` and `RLIMIT_DATA`).
    pub memory_bytes: u64,
    /// Processes and threads the program may have at once, bubblewrap's init and the
    /// interpreter included (`RLIMIT_NPROC`, counted in the sandbox's user namespace).
    pub max_processes: u64,
    /// Size of the tmpfs that is the program's `/tmp` and working directory, bytes (its pages
    /// are memory).
    pub tmpfs_bytes: u64,
    /// Largest file the program may write, bytes (`RLIMIT_FSIZE`).
    pub max_file_bytes: u64,
    /// Descriptors each process of the program may hold open (`RLIMIT_NOFILE`): with the
    /// kernel's buffer limits, this bounds the pipe and socket buffers a program can fill
    /// ([`KERNEL_BUFFER_BYTES_PER_FILE`] each).
    pub max_open_files: u64,
    /// Bytes of the program's output (and of the harness's channel) read back.
    pub max_output_bytes: usize,
    /// The user and group bubblewrap runs as when this process is root, and the program's
    /// inside its user namespace.
    pub uid: u32,
    /// See [`SandboxConfig::uid`].
    pub gid: u32,
    /// util-linux `unshare`, which starts bubblewrap as a subordinate id of the collector's user
    /// when the collector is not root (`/usr/bin/unshare`).
    pub unshare: PathBuf,
    /// Run programs without bubblewrap, as plain `python3` processes behind Python-level guards
    /// (`collector --grading-unisolated`): for trusted models only, since a program can reach
    /// the host (docs/grading.md).
    pub unisolated: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            python: default_python(),
            bwrap: default_bwrap(),
            timeout: Duration::from_secs(10),
            cpu_seconds: 10,
            memory_bytes: 256 << 20,
            max_processes: 4,
            tmpfs_bytes: 64 << 20,
            max_file_bytes: 16 << 20,
            max_open_files: 32,
            max_output_bytes: 64 << 10,
            uid: NOBODY,
            gid: NOBODY,
            unshare: PathBuf::from("/usr/bin/unshare"),
            unisolated: false,
        }
    }
}

/// What one open descriptor can hold in kernel buffers, under the kernel's default limits: a pipe
/// of `fs.pipe-max-size` (1 MiB, for its two ends), a Unix socket's send buffer of at most
/// 2 x `net.core.wmem_max` (2 x 208 KiB). Other sockets, memfd files and System V IPC are refused
/// to programs (docs/grading.md).
pub const KERNEL_BUFFER_BYTES_PER_FILE: u64 = 1 << 20;

impl SandboxConfig {
    /// The most memory one program can hold in the sandbox: every process at its address-space
    /// limit, every descriptor those processes (and, in flight between them, as many again as one
    /// process may hold) keep open at [`KERNEL_BUFFER_BYTES_PER_FILE`], plus a full tmpfs.
    pub fn memory_bound_bytes(&self) -> u64 {
        let descriptors = self
            .max_processes
            .saturating_add(1)
            .saturating_mul(self.max_open_files);
        self.max_processes
            .saturating_mul(self.memory_bytes)
            .saturating_add(descriptors.saturating_mul(KERNEL_BUFFER_BYTES_PER_FILE))
            .saturating_add(self.tmpfs_bytes)
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

/// `/usr/bin/bwrap` where it exists, else `bwrap` from `PATH`.
pub fn default_bwrap() -> PathBuf {
    let system = Path::new("/usr/bin/bwrap");
    if system.exists() {
        system.to_path_buf()
    } else {
        PathBuf::from("bwrap")
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
    /// Programs cannot be isolated as configured (bubblewrap missing or failing, the
    /// interpreter unusable), and running them unisolated was not accepted.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    /// The interpreter or bubblewrap could not be started.
    #[error(
        "the grading sandbox cannot start {program}: {source}; install python3 and bubblewrap (apt-get install -y python3 bubblewrap) or pass their paths"
    )]
    Spawn {
        /// What was started.
        program: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The temporary directory of an unisolated run could not be made or prepared.
    #[error("the grading sandbox cannot prepare its temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// The harness ended before it ran the program (bubblewrap or the interpreter failed to
    /// start, a limit could not be set).
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

/// Runs programs as its [`SandboxConfig`] says. Cheap to clone; one run per call, so run it on
/// as many threads as programs should run at once.
#[derive(Clone, Debug)]
pub struct Sandbox {
    config: SandboxConfig,
}

/// How the processes of a run are ended.
#[derive(Clone, Copy)]
enum Ending {
    /// Kill bubblewrap: its PID namespace, and every process in it, dies with it.
    Namespace,
    /// Kill the process group (unisolated; a process that left the group survives).
    Group,
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
    /// Without working isolation (and without [`SandboxConfig::unisolated`]) the program is not
    /// run: [`SandboxError::Isolation`].
    pub fn run(&self, program: &str) -> Result<Execution, SandboxError> {
        let c = &self.config;
        let limits = |mode: &str| -> Vec<OsString> {
            [
                "-I",
                "-B",
                "-c",
                PREAMBLE,
                &c.memory_bytes.to_string(),
                &c.cpu_seconds.max(1).to_string(),
                &c.max_file_bytes.to_string(),
                &c.max_processes.to_string(),
                &c.max_open_files.to_string(),
                &seccomp::filter_hex(),
                mode,
            ]
            .into_iter()
            .map(OsString::from)
            .collect()
        };
        if c.unisolated {
            let root = isolation::running_as_root();
            let dir = tempfile::Builder::new()
                .prefix("powerfleet-sandbox-")
                .tempdir()
                .map_err(SandboxError::TempDir)?;
            if root {
                std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))
                    .map_err(SandboxError::TempDir)?;
            }
            let mut command = Command::new(&c.python);
            command
                .args(limits(if root { "root" } else { "user" }))
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", dir.path())
                .env("LANG", "C.UTF-8")
                .process_group(0);
            let label = c.python.display().to_string();
            self.execute(command, Ending::Group, &label, program)
        } else {
            let iso = Isolation::detect(c)?;
            let command = iso.command(c, &limits("bwrap"));
            let label = format!("{} (for {})", c.bwrap.display(), iso.python.display());
            self.execute(command, Ending::Namespace, &label, program)
        }
    }

    /// Starts `command` (the preamble, inside its wall), feeds it the program, waits for it
    /// to its end or the time limit, ends every process of it, and reads the verdict.
    fn execute(
        &self,
        mut command: Command,
        ending: Ending,
        label: &str,
        program: &str,
    ) -> Result<Execution, SandboxError> {
        let c = &self.config;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| SandboxError::Spawn {
            program: label.to_string(),
            source,
        })?;
        let channel = Capture::start(child.stdout.take(), c.max_output_bytes);
        let output = Capture::start(child.stderr.take(), c.max_output_bytes);
        let nonce = uuid::Uuid::now_v7().simple().to_string();
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means the interpreter is gone already; its status tells why.
            let _ = stdin
                .write_all(nonce.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.write_all(program.as_bytes()));
        }
        let (status, timed_out) = wait_until(&mut child, started + c.timeout);
        if let Ending::Group = ending {
            kill_group(&child);
        }
        // SIGKILL, no `kill` binary needed. Inside bubblewrap, its init (the PID namespace's
        // first process) dies with it (--die-with-parent), and the kernel then kills every
        // process left in the namespace.
        let _ = child.kill();
        let _ = child.wait();
        let elapsed = started.elapsed();
        let channel = channel.finish();
        let output = output.finish();
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
                    stderr: output.trim().to_string(),
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

/// Kills the child's whole process group (an unisolated run's; best effort: it needs a `kill`
/// program on `PATH`).
fn kill_group(child: &Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
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

    /// What was read, waiting a moment for the pipe's end (in an unisolated run, a process that
    /// escaped the group could hold it open; it is not waited for).
    fn finish(self) -> String {
        let _ = self.done.recv_timeout(Duration::from_millis(500));
        let b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    }
}
