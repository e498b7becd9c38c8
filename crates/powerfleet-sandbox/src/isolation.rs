//! What walls a program in: bubblewrap (`bwrap`), probed once per process for each
//! configuration, and the command line that starts a program inside it.
//!
//! Every program gets fresh user, mount, PID, network, IPC, UTS and cgroup namespaces
//! (`--unshare-all --unshare-user`), a read-only root holding only `/usr` (with `/bin`, `/lib`,
//! `/lib64` as on the host) and the interpreter's prefix, a private `/proc`, a minimal read-only
//! `/dev` (no `/dev/shm` to write to), and a size-limited tmpfs as `/tmp`, its working directory.
//! Nothing else of the host is mounted: no `/etc`, `/home`, `/root`, `/var`, `/run`, no socket.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::SandboxConfig;

/// How to make bubblewrap available, said in every error that finds it unusable.
const FIX: &str = "install bubblewrap (apt-get install -y bubblewrap) and run the collector where unprivileged user namespaces are allowed (in a container: seccomp and AppArmor profiles that allow them, docs/operations.md), or accept running untrusted code behind Python-level guards only with collector --grading-unisolated (POWERFLEET_GRADING_UNISOLATED=true)";

/// Programs cannot be isolated as configured: grading that runs code fails with this (a grading
/// failure, stored as `grade_error`) rather than running the program unisolated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    /// The interpreter cannot be found or asked for its prefix.
    #[error(
        "the grading sandbox cannot use the interpreter {python}: {reason}; install python3 (apt-get install -y python3) or pass collector --grading-python PATH"
    )]
    Interpreter {
        /// The configured interpreter.
        python: String,
        /// What went wrong.
        reason: String,
    },
    /// bubblewrap is missing, or fails to start a program as configured.
    #[error("the grading sandbox cannot isolate programs: {reason}; {FIX}")]
    Unavailable {
        /// What is missing or what bubblewrap said.
        reason: String,
    },
}

/// A working bubblewrap set-up, probed once per process for each configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    /// Whether this process runs as root: bubblewrap is then started as the sandbox's user
    /// ([`SandboxConfig::uid`]), never as root.
    pub root: bool,
    /// Whether bubblewrap accepts `--disable-userns` (0.8 and later): the program cannot make
    /// user namespaces of its own.
    pub userns_disabled: bool,
    /// The interpreter's absolute path.
    pub python: PathBuf,
    /// The bubblewrap command line up to the command: namespaces, user, environment,
    /// filesystem.
    args: Vec<OsString>,
}

/// Whether this process runs as root.
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Isolation {
    /// Probes (once per process for each bubblewrap path, interpreter, user and tmpfs size)
    /// whether bubblewrap starts the interpreter in its namespaces as `config` says, and says
    /// why not. The probe runs `python -I -c ...` inside the whole set-up and checks that it is
    /// not root there.
    pub fn detect(config: &SandboxConfig) -> Result<Arc<Isolation>, IsolationError> {
        type Probed = Result<Arc<Isolation>, IsolationError>;
        static PROBED: OnceLock<Mutex<HashMap<String, Probed>>> = OnceLock::new();
        let key = format!(
            "{:?}|{:?}|{}|{}|{}",
            config.bwrap, config.python, config.uid, config.gid, config.tmpfs_bytes
        );
        let probed = PROBED.get_or_init(Default::default);
        if let Some(known) = probed.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return known.clone();
        }
        // Probed outside the lock (it takes a process start); two threads probing at once both
        // find the same answer.
        let found = probe(config).map(Arc::new);
        probed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(found)
            .clone()
    }

    /// The command that runs `python` with `python_args` inside the sandbox: bubblewrap,
    /// started as the sandbox's user when this process is root.
    pub(crate) fn command(&self, config: &SandboxConfig, python_args: &[OsString]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&config.bwrap);
        command.args(&self.args).arg("--").arg(&self.python);
        command.args(python_args);
        if self.root {
            // std drops the supplementary groups when root sets the uid.
            command.uid(config.uid).gid(config.gid);
        }
        command.env_clear().current_dir("/");
        command
    }
}

/// Resolves the interpreter, lays out the filesystem, and starts the probe program.
fn probe(config: &SandboxConfig) -> Result<Isolation, IsolationError> {
    let root = running_as_root();
    let python = resolve_python(&config.python)?;
    let binds = interpreter_prefixes(&python)?;
    let bwrap_found = if config.bwrap.components().count() > 1 {
        config.bwrap.exists()
    } else {
        search_path(&config.bwrap).is_some()
    };
    if !bwrap_found {
        return Err(IsolationError::Unavailable {
            reason: format!("bubblewrap ({}) is not installed", config.bwrap.display()),
        });
    }
    let mut last = String::new();
    for userns_disabled in [true, false] {
        let iso = Isolation {
            root,
            userns_disabled,
            python: python.clone(),
            args: bwrap_args(config, &binds, userns_disabled),
        };
        match run_probe(config, &iso) {
            Ok(()) => return Ok(iso),
            // bubblewrap before 0.8 does not know --disable-userns: try again without it.
            Err(why) if userns_disabled && why.contains("disable-userns") => last = why,
            Err(why) => {
                last = why;
                break;
            }
        }
    }
    let user_hint = if root {
        format!(
            " (run as root, bubblewrap runs as uid {}: the interpreter and its prefix must be readable by that user)",
            config.uid
        )
    } else {
        String::new()
    };
    Err(IsolationError::Unavailable {
        reason: format!(
            "{} cannot start {} in its namespaces: {last}{user_hint}",
            config.bwrap.display(),
            python.display()
        ),
    })
}

/// Runs the probe program; `Err` holds what went wrong (bubblewrap's own message).
fn run_probe(config: &SandboxConfig, iso: &Isolation) -> Result<(), String> {
    let check = "import os, sys\nif os.getuid() == 0 or os.path.exists('/etc'): sys.exit('the probe ran as root or saw the host')";
    let mut child = iso
        .command(
            config,
            &["-I".into(), "-B".into(), "-c".into(), check.into()],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", config.bwrap.display()))?;
    let stderr = crate::Capture::start(child.stderr.take(), 4096);
    let (status, timed_out) =
        crate::wait_until(&mut child, Instant::now() + Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let stderr = stderr.finish();
    match status {
        Some(s) if s.success() => Ok(()),
        _ if timed_out => Err("the probe did not end within 30 s".into()),
        status => Err(format!(
            "{} ({})",
            stderr.trim().replace('\n', "; "),
            crate::describe(status)
        )),
    }
}

/// The bubblewrap arguments for `config`, with `binds` (the interpreter's prefixes outside
/// `/usr`) mounted read-only.
fn bwrap_args(config: &SandboxConfig, binds: &[PathBuf], userns_disabled: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["--unshare-all", "--unshare-user"]);
    if userns_disabled {
        push(&["--disable-userns"]);
    }
    push(&["--die-with-parent", "--new-session"]);
    let (uid, gid) = (config.uid.to_string(), config.gid.to_string());
    push(&["--uid", &uid, "--gid", &gid, "--hostname", "sandbox"]);
    push(&["--clearenv"]);
    push(&["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"]);
    push(&["--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8"]);
    push(&["--ro-bind", "/usr", "/usr"]);
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let Ok(meta) = std::fs::symlink_metadata(top) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(top) {
                a.extend([
                    OsString::from("--symlink"),
                    target.into_os_string(),
                    top.into(),
                ]);
            }
        } else if meta.is_dir() {
            a.extend(["--ro-bind", top, top].map(OsString::from));
        }
    }
    let size = config.tmpfs_bytes.max(1 << 20).to_string();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["--proc", "/proc", "--dev", "/dev"]);
    push(&["--size", &size, "--tmpfs", "/tmp"]);
    // After the tmpfs, so that an interpreter under /tmp is not hidden by it.
    for bind in binds {
        a.extend([
            OsString::from("--ro-bind"),
            bind.clone().into_os_string(),
            bind.clone().into_os_string(),
        ]);
    }
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    // The root and /dev are tmpfs mounts bubblewrap made, unbounded: read-only once laid out
    // (so /dev/shm is an empty read-only directory). Only /tmp is writable.
    push(&["--remount-ro", "/dev", "--remount-ro", "/"]);
    push(&["--chdir", "/tmp"]);
    a
}

/// The interpreter's absolute path: `python` itself when it names a file, else the first
/// match on `PATH`.
fn resolve_python(python: &Path) -> Result<PathBuf, IsolationError> {
    let err = |reason: String| IsolationError::Interpreter {
        python: python.display().to_string(),
        reason,
    };
    let found = if python.components().count() > 1 {
        std::path::absolute(python).map_err(|e| err(e.to_string()))?
    } else {
        search_path(python).ok_or_else(|| err("not found on PATH".into()))?
    };
    if !found.is_file() {
        return Err(err("no such file".into()));
    }
    Ok(found)
}

/// `name` on this process's `PATH`.
fn search_path(name: &Path) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The directories outside `/usr` the interpreter needs: its own and its prefixes (a venv's and
/// the base installation's), asked of the interpreter itself (the operator's, not a program's).
fn interpreter_prefixes(python: &Path) -> Result<Vec<PathBuf>, IsolationError> {
    let err = |reason: String| IsolationError::Interpreter {
        python: python.display().to_string(),
        reason,
    };
    let real = std::fs::canonicalize(python).map_err(|e| err(e.to_string()))?;
    let under_usr = |p: &Path| p.starts_with("/usr");
    if under_usr(python) && under_usr(&real) {
        return Ok(Vec::new());
    }
    let out = Command::new(python)
        .args([
            "-I",
            "-c",
            "import sys; print('\\n'.join([sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]))",
        ])
        .env_clear()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot start it: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "it cannot tell its prefix ({})",
            crate::describe(Some(out.status))
        )));
    }
    let mut dirs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .chain(python.parent().map(Path::to_path_buf))
        .chain(real.parent().map(Path::to_path_buf))
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| !under_usr(p))
        .collect();
    dirs.sort();
    dirs.dedup();
    // A directory inside another one is mounted with it.
    let outer: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| !dirs.iter().any(|o| o != *d && d.starts_with(o)))
        .cloned()
        .collect();
    if outer.iter().any(|d| d.parent().is_none()) {
        return Err(err(
            "its prefix is / (mounting it would show the sandbox the whole host); use an interpreter under /usr or in a directory of its own".into(),
        ));
    }
    Ok(outer)
}
