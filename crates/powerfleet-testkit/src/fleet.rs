//! A fleet of real processes for end-to-end tests: a private redis-server, worker and collector
//! processes of the `powerfleet` binary on it, a SQLite results file, and helpers that read what
//! the fleet did.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use powerfleet_fleet::producer::{Receipt, Submission, submit};
use powerfleet_jobs::{BatchId, JobId, JobResult, JobSpec, Prompt};
use powerfleet_models::resolve_toy;
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_queue::{Queue, QueueOptions};
use powerfleet_sampler::{Chain, ChainOutput, TokenId, run};
use powerfleet_store::Store;

/// A private redis-server, the worker and collector processes started on it, and a results
/// database in a temporary directory (which also holds every process's log). Dropping it kills
/// the processes and the server.
pub struct Fleet {
    /// The `powerfleet` binary every role runs.
    pub bin: PathBuf,
    /// The private redis-server.
    pub redis: LocalRedis,
    /// The queue namespace of every role.
    pub namespace: String,
    /// The SQLite results database.
    pub db_url: String,
    /// Temporary directory of the database and the logs.
    pub dir: tempfile::TempDir,
    /// Worker processes by index; `None` once killed.
    pub workers: Vec<Option<Child>>,
    /// The arguments each worker was started with.
    pub worker_args: Vec<Vec<String>>,
    /// The collector process, once started.
    pub collector: Option<Child>,
    spawned: usize,
    worker_env: Vec<(String, String)>,
    /// The Redis every role uses when not `redis` (a Redis Cluster's nodes).
    url_override: Option<String>,
}

impl Fleet {
    /// A fleet of the binary `bin` (an integration test's `env!("CARGO_BIN_EXE_powerfleet")`) on
    /// a private redis-server, with append-only persistence when `aof`.
    pub fn new(bin: impl Into<PathBuf>, aof: bool) -> Fleet {
        Fleet::with_redis(
            bin,
            LocalRedisOptions {
                aof,
                ..LocalRedisOptions::default()
            },
        )
    }

    /// A fleet of the binary `bin` on a private redis-server started with `options`.
    pub fn with_redis(bin: impl Into<PathBuf>, options: LocalRedisOptions) -> Fleet {
        // The test's own HTTP clients need a TLS provider even for plain http.
        powerfleet_backends::install_tls_provider();
        let redis = LocalRedis::start(options)
            .unwrap_or_else(|e| panic!("{e}; scripts/test.sh installs redis-server"));
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("results.db").display());
        Fleet {
            bin: bin.into(),
            redis,
            namespace: "test".into(),
            db_url,
            dir,
            workers: Vec::new(),
            worker_args: Vec::new(),
            collector: None,
            spawned: 0,
            worker_env: Vec::new(),
            url_override: None,
        }
    }

    /// A fleet of the binary `bin` on the Redis at `url` (a Redis Cluster's nodes,
    /// comma-separated) instead of its own private server.
    pub fn on_redis_url(bin: impl Into<PathBuf>, url: String) -> Fleet {
        let mut fleet = Fleet::new(bin, false);
        fleet.url_override = Some(url);
        fleet
    }

    /// The URL every role is given.
    pub fn redis_url(&self) -> String {
        self.url_override
            .clone()
            .unwrap_or_else(|| self.redis.url())
    }

    fn log(&mut self, role: &str) -> (Stdio, PathBuf) {
        self.spawned += 1;
        let path = self.dir.path().join(format!("{role}-{}.log", self.spawned));
        let file = std::fs::File::create(&path).unwrap();
        (Stdio::from(file), path)
    }

    fn common(&self) -> Vec<String> {
        vec![
            "--redis".into(),
            self.redis_url(),
            "--namespace".into(),
            self.namespace.clone(),
        ]
    }

    /// Runs the binary with `args` on this fleet's Redis, namespace and results database.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().unwrap()
    }

    /// The command [`Fleet::cli`] runs, to start rather than run (with [`crate::Watching`]).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .args(["--database-url", &self.db_url])
            .env("POWERFLEET_REDIS_URL", self.redis_url())
            .env("POWERFLEET_NAMESPACE", &self.namespace);
        command
    }

    /// Runs the binary with `args` on this fleet's Redis and namespace, without a database (for
    /// the subcommands that take none, such as `workers`).
    pub fn cli_without_database(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("POWERFLEET_REDIS_URL", self.redis_url())
            .env("POWERFLEET_NAMESPACE", &self.namespace)
            .output()
            .unwrap()
    }

    /// Starts a worker process with test-sized lease settings; `extra` flag pairs override them.
    /// Returns the worker's index.
    pub fn spawn_worker(&mut self, extra: &[&str]) -> usize {
        self.spawn_worker_env(extra, &[])
    }

    /// [`Fleet::spawn_worker`] with extra environment variables.
    pub fn spawn_worker_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let mut args: Vec<String> = vec!["worker".into()];
        args.extend(self.common());
        let defaults = [
            ("--concurrency", "4"),
            ("--lease", "1s"),
            ("--heartbeat", "200ms"),
            ("--grace", "5s"),
        ];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.worker_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = self.start_worker(&args);
        self.workers.push(Some(child));
        self.worker_args.push(args);
        self.workers.len() - 1
    }

    fn start(&mut self, args: &[String], role: &str) -> Child {
        let (log, _) = self.log(role);
        self.command(args)
            .stderr(log)
            .spawn()
            .expect("the powerfleet binary starts")
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .envs(
                self.worker_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null());
        command
    }

    /// SIGKILLs worker `i`.
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut c) = self.workers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts worker `i` again with its original flags.
    pub fn restart_worker(&mut self, i: usize) {
        self.kill_worker(i);
        let args = self.worker_args[i].clone();
        self.workers[i] = Some(self.start_worker(&args));
    }

    /// Starts a worker and waits until it says it started (it has registered with the fleet, so
    /// `powerfleet workers` and the OpenAI endpoint know what it serves), or until it exits.
    fn start_worker(&mut self, args: &[String]) -> Child {
        let (log, path) = self.log("worker");
        let mut child = self
            .command(args)
            .stderr(log)
            .spawn()
            .expect("the powerfleet binary starts");
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("worker started") || child.try_wait().ok().flatten().is_some() {
                return child;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not start in {:?}:\n{text}",
                crate::PATIENCE
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The index of the running worker named `consumer` in the fleet (a job state's `owner`):
    /// a worker's default name ends with its process id.
    pub fn worker_named(&self, consumer: &str) -> Option<usize> {
        self.workers.iter().position(|w| {
            w.as_ref()
                .is_some_and(|c| consumer.ends_with(&format!("-{}", c.id())))
        })
    }

    /// Sends `signal` (a number, as for kill(1)) to worker `i`.
    pub fn signal_worker(&self, i: usize, signal: i32) {
        let pid = self.workers[i].as_ref().expect("worker running").id() as i32;
        // SAFETY-free: libc::kill with a valid pid of our own child.
        let rc = unsafe_kill(pid, signal);
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Starts the collector.
    pub fn spawn_collector(&mut self) {
        self.spawn_collector_with(&[]);
    }

    /// Starts the collector with extra flags.
    pub fn spawn_collector_with(&mut self, extra: &[&str]) {
        let mut args: Vec<String> = vec!["collector".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.common());
        args.push("--database-url".into());
        args.push(self.db_url.clone());
        let child = self.start(&args, "collector");
        self.collector = Some(child);
    }

    /// A queue client on this fleet's Redis and namespace.
    pub async fn queue(&self) -> Queue {
        Queue::connect(
            &self.redis_url(),
            QueueOptions {
                namespace: self.namespace.clone(),
                ..QueueOptions::default()
            },
        )
        .await
        .unwrap()
    }

    /// A client of this fleet's results database.
    pub async fn store(&self) -> Store {
        Store::connect(&self.db_url).await.unwrap()
    }

    /// The whole of every worker's log so far (sorted by file name), for tests of what workers
    /// log.
    pub fn worker_logs(&self) -> String {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("worker-") && n.ends_with(".log"))
            })
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Every log written so far, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {}\n", e.path().display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until the results database holds `n` jobs of `batch`; panics with logs on timeout.
    pub async fn wait_for_results(
        &self,
        batch: BatchId,
        n: usize,
        timeout: Duration,
    ) -> Vec<JobResult> {
        let store = self.store().await;
        let deadline = Instant::now() + timeout;
        loop {
            let rows = store.jobs_by_batch(batch).await.unwrap();
            if rows.len() >= n {
                return rows;
            }
            if Instant::now() > deadline {
                panic!(
                    "only {} of {n} results after {timeout:?}\n{}",
                    rows.len(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in 0..self.workers.len() {
            if let Some(c) = self.workers[i].as_ref() {
                let _ = unsafe_kill(c.id() as i32, 18); // SIGCONT, in case a test stopped it
            }
            self.kill_worker(i);
        }
        if let Some(mut c) = self.collector.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: i32, signal: i32) -> i32 {
    // The workspace forbids unsafe code; the kill(1) utility sends the signal instead.
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    if status.success() { 0 } else { 1 }
}

/// Submits `submission` to `queue`; panics if it is refused.
pub async fn submit_batch(queue: &Queue, submission: &Submission) -> Receipt {
    submit(queue, submission).await.unwrap()
}

/// The tokens a fault-free, uninterrupted run of the job gives.
pub fn fault_free_tokens(spec: &JobSpec) -> Vec<TokenId> {
    fault_free_output(spec).tokens
}

/// What a fault-free, uninterrupted run of the job gives: its tokens and statistics (for
/// power-smc, the particles' weighted completions).
pub fn fault_free_output(spec: &JobSpec) -> ChainOutput {
    let base = spec.model.split('?').next().unwrap();
    let model = resolve_toy(base).unwrap();
    let prompt = match &spec.prompt {
        Prompt::Tokens(t) => t.clone(),
        Prompt::Text(t) => model.tokenize(t).unwrap(),
        Prompt::Messages(_) => panic!("toy models take no chat messages"),
        Prompt::Stored(_) => panic!("resolve the stored prompt first (specs() does)"),
    };
    let mut chain = Chain::new(
        spec.config.validate().unwrap(),
        &prompt,
        spec.seed,
        spec.stream,
    );
    run(&mut chain, &model).unwrap()
}

/// Job specs of a receipt, read back from Redis, each with its stored prompt resolved.
pub async fn specs(queue: &Queue, receipt: &Receipt) -> Vec<JobSpec> {
    let mut out = Vec::new();
    for id in &receipt.job_ids {
        out.push(job_spec(queue, *id).await);
    }
    out
}

/// The spec of job `id`, read back from Redis, with its stored prompt resolved.
pub async fn job_spec(queue: &Queue, id: JobId) -> JobSpec {
    let mut spec = queue.job_state(id).await.unwrap().unwrap().spec.unwrap();
    if let Some(reference) = spec.prompt.stored().cloned() {
        let mut prompts = queue.prompts(&[reference]).await.unwrap();
        spec.prompt = prompts.remove(0).expect("the job's prompt is stored");
    }
    spec
}

/// Number of entries in the results stream per job id.
pub async fn published_results(fleet: &Fleet) -> std::collections::HashMap<String, usize> {
    let client = redis::Client::open(fleet.redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("pf:{{{}}}:results", fleet.namespace);
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut counts = std::collections::HashMap::new();
    for id in reply.ids {
        let job: String = id.get("job_id").unwrap();
        *counts.entry(job).or_insert(0) += 1;
    }
    counts
}

/// The standard output of a command that must have succeeded; otherwise panics showing both of
/// its outputs.
pub fn stdout_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
