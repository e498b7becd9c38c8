//! What walls a program in: bubblewrap (`bwrap`), probed once per process for each
//! configuration, and the command line that starts a program inside it.
//!
//! Every program gets fresh user, mount, PID, network, IPC, UTS and cgroup namespaces
//! (`--unshare-all --unshare-user`), a read-only root holding only the Python runtime (the
//! interpreter, its standard library and `lib-dynload`, a venv's `pyvenv.cfg`, the loader and the
//! shared libraries they link), a private `/proc`, a minimal read-only
//! `/dev` (no `/dev/shm` to write to), and a size-limited tmpfs as `/tmp`, its working directory.
//! Nothing else of the host is mounted: no other program, no shell, no `/etc`, `/home`, `/root`,
//! `/var`, `/run`, no socket.
//!
//! The program never runs as the collector's host user, nor as root: run as root, the collector
//! starts bubblewrap as [`SandboxConfig::uid`] (nobody); run as another user, it starts
//! bubblewrap through util-linux `unshare` in a user namespace where that uid is the first
//! subordinate id of the collector's user (`/etc/subuid`, mapped by the setuid `newuidmap` of
//! Debian's `uidmap`). Without either, no program runs ([`IsolationError::NoOtherUser`]).

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
    /// The collector is not root and cannot give programs a host user other than its own.
    #[error(
        "the grading sandbox cannot run programs as a user other than the collector's (uid {uid}): {reason}; {NO_OTHER_USER_FIX}"
    )]
    NoOtherUser {
        /// The collector's uid.
        uid: u32,
        /// What is missing.
        reason: String,
    },
}

/// How to give programs a user of their own, said when the collector cannot.
const NO_OTHER_USER_FIX: &str = "either run the collector as root (it then runs programs as nobody; in a container: as root in a user-namespaced pod, hostUsers: false, with capabilities SETUID and SETGID, as deploy/k8s/collector-deployment.yaml does), or give the collector's user subordinate ids for programs to run as: apt-get install -y uidmap (the setuid newuidmap and newgidmap; not usable under no_new_privs, allowPrivilegeEscalation: false) and usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER (lines USER:100000:65536 in /etc/subuid and /etc/subgid; docs/grading.md, \"user\"); or, for models you trust only, collector --grading-unisolated";

/// Where `unshare` looks for `newuidmap` and `newgidmap`.
const ID_MAP_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A working bubblewrap set-up, probed once per process for each configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    /// Whether this process runs as root: bubblewrap is then started as the sandbox's user
    /// ([`SandboxConfig::uid`]), never as root.
    pub root: bool,
    /// The host uid programs run as: [`SandboxConfig::uid`] when this process is root, else the
    /// first subordinate uid of this process's user. Never this process's uid, never 0.
    pub host_uid: u32,
    /// The host gid programs run as, as [`Isolation::host_uid`].
    pub host_gid: u32,
    /// How bubblewrap is started as that user.
    switch: Switch,
    /// Whether bubblewrap accepts `--disable-userns` (0.8 and later): the program cannot make
    /// user namespaces of its own.
    pub userns_disabled: bool,
    /// The interpreter's absolute path.
    pub python: PathBuf,
    /// The bubblewrap command line up to the command: namespaces, user, environment,
    /// filesystem.
    args: Vec<OsString>,
}

/// How bubblewrap is started as a host user other than this process's.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Switch {
    /// This process is root: bubblewrap is started as [`SandboxConfig::uid`] and
    /// [`SandboxConfig::gid`], supplementary groups dropped.
    Root,
    /// util-linux `unshare` makes a user namespace whose [`SandboxConfig::uid`] and
    /// [`SandboxConfig::gid`] are the host's `uid` and `gid` (subordinate ids of this process's
    /// user, mapped by `newuidmap` and `newgidmap`), switches to them, drops the supplementary
    /// groups, and executes bubblewrap there.
    Subordinate {
        unshare: PathBuf,
        uid: u32,
        gid: u32,
    },
}

/// Whether this process runs as root.
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// This process's (effective) uid and gid: the owner of `/proc/self`.
fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or((u32::MAX, u32::MAX), |m| (m.uid(), m.gid()))
}

/// The first id of the first range `/etc/subuid` or `/etc/subgid` (`file`) grants to the user
/// named `name` or numbered `uid`.
fn first_subordinate_id(file: &str, name: Option<&str>, uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        let start: u32 = fields.next()?.trim().parse().ok()?;
        let count: u64 = fields.next()?.trim().parse().ok()?;
        let mine = Some(owner) == name || owner == uid.to_string();
        (mine && count > 0).then_some(start)
    })
}

/// The name `/etc/passwd` gives `uid`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 2 && fields[2] == uid.to_string()).then(|| fields[0].to_string())
    })
}

/// A program (`newuidmap`) on [`ID_MAP_PATH`].
fn on_id_map_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(ID_MAP_PATH)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Isolation {
    /// The first subordinate uid and gid (`/etc/subuid`, `/etc/subgid`) of this process's user,
    /// which programs run as when this process is not root; `None` without both.
    pub fn subordinate_ids() -> Option<(u32, u32)> {
        let (uid, _) = own_ids();
        let name = user_name(uid);
        Some((
            first_subordinate_id("/etc/subuid", name.as_deref(), uid)?,
            first_subordinate_id("/etc/subgid", name.as_deref(), uid)?,
        ))
    }

    /// Probes (once per process for each bubblewrap path, interpreter, user and tmpfs size)
    /// whether bubblewrap starts the interpreter in its namespaces as `config` says, and says
    /// why not. The probe runs `python -I -c ...` inside the whole set-up and checks that it is
    /// not root there.
    pub fn detect(config: &SandboxConfig) -> Result<Arc<Isolation>, IsolationError> {
        type Probed = Result<Arc<Isolation>, IsolationError>;
        static PROBED: OnceLock<Mutex<HashMap<String, Probed>>> = OnceLock::new();
        let key = format!(
            "{:?}|{:?}|{:?}|{}|{}|{}",
            config.bwrap, config.python, config.unshare, config.uid, config.gid, config.tmpfs_bytes
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
        let mut command = match &self.switch {
            Switch::Root => {
                let mut command = Command::new(&config.bwrap);
                // std drops the supplementary groups when root sets the uid.
                command.env_clear().uid(config.uid).gid(config.gid);
                command
            }
            Switch::Subordinate { unshare, uid, gid } => {
                // `outer,inner,count`: util-linux 2.38's order (2.39 and later read this comma
                // form the same way). --setgid drops the supplementary groups too.
                let mut command = Command::new(unshare);
                command
                    .env_clear()
                    .env("PATH", ID_MAP_PATH)
                    .arg(format!("--map-users={uid},{},1", config.uid))
                    .arg(format!("--map-groups={gid},{},1", config.gid))
                    .args(["--setuid", &config.uid.to_string()])
                    .args(["--setgid", &config.gid.to_string()])
                    .arg("--")
                    .arg(&config.bwrap);
                command
            }
        };
        command.args(&self.args).arg("--").arg(&self.python);
        command.args(python_args);
        command.current_dir("/");
        command
    }
}

/// How bubblewrap is to be started as a host user other than this process's, or why it cannot.
fn switch(config: &SandboxConfig, root: bool) -> Result<(Switch, u32, u32), IsolationError> {
    if root {
        return Ok((Switch::Root, config.uid, config.gid));
    }
    let (own_uid, own_gid) = own_ids();
    let refuse = |reason: String| IsolationError::NoOtherUser {
        uid: own_uid,
        reason,
    };
    let name = user_name(own_uid);
    let who = name.clone().unwrap_or_else(|| own_uid.to_string());
    let Some((uid, gid)) = Isolation::subordinate_ids() else {
        return Err(refuse(format!(
            "it is not root, and its user ({who}) has no subordinate ids in /etc/subuid and /etc/subgid"
        )));
    };
    if uid == own_uid || uid == 0 || gid == own_gid || gid == 0 {
        return Err(refuse(format!(
            "the first subordinate ids of its user ({who}), uid {uid} and gid {gid}, are its own or root's"
        )));
    }
    for tool in ["newuidmap", "newgidmap"] {
        if on_id_map_path(tool).is_none() {
            return Err(refuse(format!(
                "it is not root, and {tool} is not installed (it maps its user's subordinate ids)"
            )));
        }
    }
    if !config.unshare.is_file() {
        return Err(refuse(format!(
            "it is not root, and {} (util-linux unshare, which makes the user namespace) is missing",
            config.unshare.display()
        )));
    }
    Ok((
        Switch::Subordinate {
            unshare: config.unshare.clone(),
            uid,
            gid,
        },
        uid,
        gid,
    ))
}

/// Resolves the interpreter, lays out the filesystem, and starts the probe program.
fn probe(config: &SandboxConfig) -> Result<Isolation, IsolationError> {
    let root = running_as_root();
    let (switch, host_uid, host_gid) = switch(config, root)?;
    let python = resolve_python(&config.python)?;
    let runtime = runtime(&python)?;
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
            host_uid,
            host_gid,
            switch: switch.clone(),
            userns_disabled,
            python: runtime.exec.clone(),
            args: bwrap_args(config, &runtime, userns_disabled),
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
    let user_hint = match &switch {
        Switch::Root => format!(
            " (run as root, bubblewrap runs as uid {}: the interpreter and its runtime (standard library, shared libraries) must be readable by that user)",
            config.uid
        ),
        Switch::Subordinate { unshare, uid, gid } => format!(
            " (run as another user, {} starts bubblewrap as the subordinate uid {uid} and gid {gid}, which newuidmap and newgidmap map: they must be installed setuid and allowed to run (no no_new_privs), the ids must exist where the collector runs (inside a container's user namespace, within its mapped range), and the interpreter and its runtime (standard library, shared libraries) must be readable by that user)",
            unshare.display()
        ),
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

/// The bubblewrap arguments for `config`, with the interpreter's `runtime` (and nothing else of
/// the host) mounted read-only.
fn bwrap_args(config: &SandboxConfig, runtime: &Runtime, userns_disabled: bool) -> Vec<OsString> {
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
    // The host's top-level links (`/lib64 -> usr/lib64` on a merged /usr), by which the
    // interpreter names its loader: links only, to the little mounted below.
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let Ok(meta) = std::fs::symlink_metadata(top) else {
            continue;
        };
        if meta.file_type().is_symlink()
            && let Ok(target) = std::fs::read_link(top)
        {
            a.extend([
                OsString::from("--symlink"),
                target.into_os_string(),
                top.into(),
            ]);
        }
    }
    let size = config.tmpfs_bytes.max(1 << 20).to_string();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["--proc", "/proc", "--dev", "/dev"]);
    push(&["--size", &size, "--tmpfs", "/tmp"]);
    // After the tmpfs, so that an interpreter under /tmp is not hidden by it.
    for dir in &runtime.dirs {
        a.extend([
            OsString::from("--ro-bind"),
            dir.clone().into_os_string(),
            dir.clone().into_os_string(),
        ]);
    }
    for (source, dest) in &runtime.files {
        a.extend([
            OsString::from("--ro-bind"),
            source.clone().into_os_string(),
            dest.clone().into_os_string(),
        ]);
    }
    for (target, dest) in &runtime.links {
        a.extend([
            OsString::from("--symlink"),
            target.clone().into_os_string(),
            dest.clone().into_os_string(),
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

/// What of the host a program sees: the interpreter's runtime and nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Runtime {
    /// The path the interpreter is started by inside the sandbox: the configured one, its
    /// directory's symbolic links resolved.
    exec: PathBuf,
    /// Directories mounted read-only at the same place: the standard library and its
    /// extension modules (`lib-dynload`).
    dirs: Vec<PathBuf>,
    /// Files mounted read-only: `(host source, place inside)`: the interpreter, a venv's
    /// `pyvenv.cfg`, the dynamic loader and the shared libraries the interpreter and its
    /// extension modules link.
    files: Vec<(PathBuf, PathBuf)>,
    /// Symbolic links made inside: `(target, place)`, the links between the configured
    /// interpreter and its file.
    links: Vec<(PathBuf, PathBuf)>,
}

/// `path` with its directory's symbolic links resolved (the file name kept): where a mount of
/// it goes, since the sandbox's root has only the top-level links (`/lib -> usr/lib`).
fn real_dir(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(name),
        _ => path.to_path_buf(),
    }
}

/// The interpreter's runtime, asked of the interpreter itself (the operator's, not a
/// program's) and of `ldd`: the interpreter file (and the links leading to it), its standard
/// library and `lib-dynload` directories, a venv's `pyvenv.cfg`, and the loader and shared
/// libraries it and its extension modules link.
fn runtime(python: &Path) -> Result<Runtime, IsolationError> {
    let err = |reason: String| IsolationError::Interpreter {
        python: python.display().to_string(),
        reason,
    };
    let mut rt = Runtime {
        exec: real_dir(python),
        ..Runtime::default()
    };
    // The configured path is mounted as a file (so the sandbox's user must be able to read
    // it), every further link is made as a link, and the interpreter's file is mounted.
    let mut hop = python.to_path_buf();
    let mut real = None;
    for depth in 0..40 {
        let meta = std::fs::symlink_metadata(&hop).map_err(|e| err(e.to_string()))?;
        let dest = real_dir(&hop);
        if !meta.file_type().is_symlink() {
            rt.files.push((hop.clone(), dest.clone()));
            real = Some(dest);
            break;
        }
        let target = std::fs::read_link(&hop).map_err(|e| err(e.to_string()))?;
        if depth == 0 {
            rt.files.push((hop.clone(), dest.clone()));
        } else {
            rt.links.push((target.clone(), dest.clone()));
        }
        hop = match dest.parent() {
            Some(dir) if target.is_relative() => dir.join(&target),
            _ => target,
        };
    }
    let real = real.ok_or_else(|| err("too many symbolic links".into()))?;
    let out = Command::new(python)
        .args([
            "-I",
            "-c",
            "import sys, sysconfig\np = sysconfig.get_paths()\nprint(sys.prefix); print(sys.base_prefix); print(p['stdlib']); print(p['platstdlib'])\nfor e in sys.path:\n    if e.endswith('lib-dynload'): print(e)",
        ])
        .env_clear()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot start it: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "it cannot tell its prefix and standard library ({})",
            crate::describe(Some(out.status))
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let (prefix, base_prefix) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    if prefix != base_prefix {
        let cfg = Path::new(prefix).join("pyvenv.cfg");
        if cfg.is_file() {
            rt.files.push((cfg.clone(), real_dir(&cfg)));
        }
    }
    let mut dirs: Vec<PathBuf> = lines
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.dedup();
    // A directory inside another one is mounted with it.
    rt.dirs = dirs
        .iter()
        .filter(|d| !dirs.iter().any(|o| o != *d && d.starts_with(o)))
        .cloned()
        .collect();
    if rt.dirs.is_empty() {
        return Err(err("it names no standard library directory".into()));
    }
    if rt.dirs.iter().any(|d| d.parent().is_none()) {
        return Err(err(
            "its standard library is / (mounting it would show the sandbox the whole host); use an interpreter installed in a directory of its own".into(),
        ));
    }
    // The interpreter and every extension module: `ldd` lists the loader and the libraries
    // they link, the system's and the interpreter's own (a libpython under its prefix).
    let mut objects = vec![real.into_os_string()];
    for dir in &dirs {
        if dir.ends_with("lib-dynload") {
            let entries = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
            let mut modules: Vec<OsString> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "so"))
                .map(PathBuf::into_os_string)
                .collect();
            modules.sort();
            objects.extend(modules);
        }
    }
    let ldd = Command::new("ldd")
        .args(&objects)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| {
            err(format!(
                "cannot list the shared libraries it links with ldd ({e}); install libc-bin"
            ))
        })?;
    let mut libs: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=> ").map_or(line, |(_, after)| after);
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .filter(|p| p.is_file())
        .collect();
    if libs.is_empty() {
        return Err(err(
            "ldd lists no loader or shared library for it (a statically linked interpreter is not supported)".into(),
        ));
    }
    // glibc loads libgcc_s itself when a thread is cancelled or exits early.
    let gcc: Vec<PathBuf> = libs
        .iter()
        .filter(|l| l.file_name().is_some_and(|n| n == "libc.so.6"))
        .filter_map(|l| Some(l.parent()?.join("libgcc_s.so.1")))
        .filter(|l| l.is_file())
        .collect();
    libs.extend(gcc);
    for lib in libs {
        let dest = real_dir(&lib);
        let inside_dir = rt.dirs.iter().any(|d| dest.starts_with(d));
        if !inside_dir && !rt.files.iter().any(|(_, d)| *d == dest) {
            rt.files.push((lib, dest));
        }
    }
    Ok(rt)
}
