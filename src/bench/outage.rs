//! `powerfleet bench outage`: what an inference-server restart costs. One batch runs twice
//! against a llama-server of the benchmark's own, behind a small HTTP proxy that passes one
//! generation request at a time: once as it is, and once with an outage that cuts a chosen
//! generation request (the server computes its answer, then stops before the answer leaves), so
//! the work the outage destroys is known exactly. A collector stores the results in SQLite; the
//! benchmark checks that every job reached SQL, completed with the tokens of the run without the
//! outage, and was delivered once, and reports the server's work redone beside the cut request's.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::collector::{self, CollectorConfig};
use powerfleet_fleet::producer;
use powerfleet_fleet::worker::{self, WorkerConfig};
use powerfleet_jobs::{JobStatus, Prompt};
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions, free_port};
use powerfleet_sampler::{Method, SamplerConfig};
use powerfleet_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::bench::{queue_on, submission};

/// Arguments of `powerfleet bench outage`.
#[derive(Args, Debug)]
pub struct OutageBenchArgs {
    /// The llama-server binary (scripts/ensure-llama-server.sh builds one).
    #[arg(long, env = "POWERFLEET_LLAMA_SERVER")]
    pub llama_server: String,
    /// The GGUF model it serves (scripts/make-tiny-gguf.py writes a tiny one).
    #[arg(long, env = "POWERFLEET_TINY_GGUF")]
    pub model_file: String,
    /// Jobs in the batch.
    #[arg(long, default_value_t = 8)]
    pub jobs: u64,
    /// Chains in flight in the worker.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// How long the server stays down, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub outage_s: f64,
    /// Token budget of a chain.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: u32,
    /// Block length in tokens.
    #[arg(long, default_value_t = 8)]
    pub block_size: u32,
    /// The generation request the outage cuts, counted from 1 over the requests the server
    /// answers (the worker's start-up probe included); by default the middle one of the run
    /// without the outage.
    #[arg(long)]
    pub cut_request: Option<u64>,
}

/// A llama-server's counters: decode steps, prompt tokens processed, tokens predicted.
type Counters = [f64; 3];

/// The counters of the llama-server at `base`.
async fn counters(http: &reqwest::Client, base: &str) -> Result<Counters> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading {base}/metrics"))?
        .text()
        .await?;
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow::anyhow!("llama-server's /metrics has no {name}"))
    };
    Ok([
        read("llamacpp:n_decode_total ")?,
        read("llamacpp:prompt_tokens_total ")?,
        read("llamacpp:tokens_predicted_total ")?,
    ])
}

/// How long a llama-server of the benchmark's own may take to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(300);

/// A llama-server of the benchmark's own: one slot (reproducible log-probabilities), with its
/// Prometheus metrics.
struct OwnServer {
    child: std::process::Child,
}

impl OwnServer {
    /// Starts it on `port` and waits until it is healthy.
    async fn start(args: &OutageBenchArgs, port: u16, http: &reqwest::Client) -> Result<OwnServer> {
        let child = std::process::Command::new(&args.llama_server)
            .args(["-m", &args.model_file, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "-np", "1", "-c", "2048"])
            .args([
                "-t",
                "1",
                "-fa",
                "off",
                "-ctk",
                "f32",
                "-ctv",
                "f32",
                "--metrics",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {}; build it with scripts/ensure-llama-server.sh",
                    args.llama_server
                )
            })?;
        let mut server = OwnServer { child };
        let health = format!("http://127.0.0.1:{port}/health");
        // Far off: a loaded machine loads the model slowly, and the loop ends at once if the
        // server exits; only a server that hangs is given up on.
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            let healthy = http
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!(
                    "llama-server exited with {status} before it became healthy; run {} -m {} --port {port} to see why",
                    args.llama_server,
                    args.model_file
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "llama-server on port {port} did not become healthy in {} s",
                HEALTHY_WITHIN.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What an outage cut.
#[derive(Clone, Copy, Debug)]
struct Cut {
    /// The generation request it cut, counted from 1.
    request: u64,
    /// The server's counters when it stopped, the cut request's work included.
    at_stop: Counters,
    /// The cut request's own decode steps and tokens predicted.
    work: [f64; 2],
}

/// One HTTP request as the proxy read it.
struct HttpRequest {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// The server's answer, passed on as it is.
struct HttpAnswer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// What the proxy's connections share.
struct ProxyState {
    /// The llama-server's base URL.
    upstream: String,
    /// A client that opens a new connection per request, so none outlives a server process.
    http: reqwest::Client,
    /// Held while a generation request is at the server: one at a time (the server has one
    /// slot), so the server is idle whenever the proxy holds none, and its counters then are
    /// exact.
    gate: tokio::sync::Mutex<Gate>,
    /// The running server process, once healthy; none while it is stopped or starting again.
    server: Mutex<Option<OwnServer>>,
    /// What the outage cut (or why the cut failed), once it did.
    cut: Mutex<Option<Result<Cut, String>>>,
    /// Notified when the outage stopped the server.
    stopped: tokio::sync::Notify,
}

/// The generation requests the proxy passed.
#[derive(Debug, Default)]
struct Gate {
    /// Generation requests the server answered, the cut one included.
    answered: u64,
    /// The generation request to cut, counted from 1, until it is cut.
    cut_at: Option<u64>,
}

impl ProxyState {
    /// Passes a request to the server; `None` when the server did not answer, or is stopped or
    /// not yet healthy again (a loading server's 503 is not an answer to count).
    async fn forward(&self, request: &HttpRequest) -> Option<HttpAnswer> {
        if self.server.lock().expect("server").is_none() {
            return None;
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).ok()?;
        let mut call = self
            .http
            .request(method, format!("{}{}", self.upstream, request.path))
            .body(request.body.clone());
        if let Some(t) = &request.content_type {
            call = call.header("content-type", t);
        }
        let response = call.send().await.ok()?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.ok()?.to_vec();
        Some(HttpAnswer {
            status,
            content_type,
            body,
        })
    }

    /// A generation request: passed on one at a time; the chosen one is cut.
    async fn generation(&self, request: &HttpRequest) -> Option<HttpAnswer> {
        let mut gate = self.gate.lock().await;
        if gate.cut_at != Some(gate.answered + 1) {
            let answer = self.forward(request).await?;
            gate.answered += 1;
            return Some(answer);
        }
        gate.answered += 1;
        gate.cut_at = None;
        let cut = self.cut(request, gate.answered).await;
        *self.cut.lock().expect("cut") = Some(cut.map_err(|e| format!("{e:#}")));
        self.stopped.notify_one();
        None
    }

    /// Lets the server compute the answer to `request`, then stops it before the answer leaves.
    async fn cut(&self, request: &HttpRequest, number: u64) -> Result<Cut> {
        let before = counters(&self.http, &self.upstream).await;
        let answered = self.forward(request).await;
        let at_stop = counters(&self.http, &self.upstream).await;
        if let Some(mut server) = self.server.lock().expect("server").take() {
            server.stop();
        }
        let (before, at_stop) = (before?, at_stop?);
        anyhow::ensure!(
            answered.is_some(),
            "the server did not answer generation request {number}, the one to cut"
        );
        Ok(Cut {
            request: number,
            at_stop,
            work: [at_stop[0] - before[0], at_stop[2] - before[2]],
        })
    }

    /// Answers one connection's requests in turn. A request the server does not answer (it is
    /// stopped, or the outage cut it) closes the connection without an answer, as the server's
    /// own would when it dies.
    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let mut reader = BufReader::new(stream);
        while let Ok(Some(request)) = read_request(&mut reader).await {
            let answer = if request.path == "/completion" {
                self.generation(&request).await
            } else {
                self.forward(&request).await
            };
            let Some(answer) = answer else { return };
            if write_answer(reader.get_mut(), &answer).await.is_err() {
                return;
            }
        }
    }
}

/// Reads one HTTP/1.1 request (a body only by Content-Length, as the worker's client sends);
/// `None` when the client closed the connection.
async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<HttpRequest>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(invalid("a request line without a method and path"));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let (mut length, mut content_type) = (0usize, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid("a header line without a colon"));
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid("a Content-Length that is not a number"))?;
            }
            "content-type" => content_type = Some(value.trim().to_string()),
            "transfer-encoding" => return Err(invalid("a chunked body")),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(HttpRequest {
        method,
        path,
        content_type,
        body,
    }))
}

async fn write_answer(stream: &mut TcpStream, answer: &HttpAnswer) -> std::io::Result<()> {
    let reason = reqwest::StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-length: {}\r\n",
        answer.status,
        answer.body.len()
    );
    if let Some(t) = &answer.content_type {
        head.push_str(&format!("content-type: {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&answer.body);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// The proxy the worker's model reference points at, in front of the server.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port in front of `server`, which listens on `server_port`;
    /// cuts generation request `cut_at`, if given.
    async fn start(
        server: OwnServer,
        server_port: u16,
        cut_at: Option<u64>,
        http: reqwest::Client,
    ) -> Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the benchmark's proxy to a loopback port")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(ProxyState {
            upstream: format!("http://127.0.0.1:{server_port}"),
            http,
            gate: tokio::sync::Mutex::new(Gate {
                answered: 0,
                cut_at,
            }),
            server: Mutex::new(Some(server)),
            cut: Mutex::new(None),
            stopped: tokio::sync::Notify::new(),
        });
        let accepting = tokio::spawn({
            let state = state.clone();
            async move {
                // Dropped with the accepting task, so the connections end with it.
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            while connections.try_join_next().is_some() {}
                            connections.spawn(state.clone().serve(stream));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        });
        Ok(Proxy {
            port,
            state,
            accepting,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        if let Some(mut server) = self.state.server.lock().expect("server").take() {
            server.stop();
        }
    }
}

/// One run of the batch.
struct OutageRun {
    /// Results stored in SQL, per final status.
    by_status: BTreeMap<String, u64>,
    /// Each completed job's tokens, by chain.
    tokens: BTreeMap<u64, Vec<u32>>,
    /// The most deliveries of one job.
    most_deliveries: u32,
    /// The server's counters, summed over its processes.
    counters: Counters,
    /// Generation requests the server answered.
    answered: u64,
    /// What the outage cut.
    cut: Option<Cut>,
    /// From the server's restart to the last job in SQL.
    back_after: Option<Duration>,
    wall: Duration,
    waited: u64,
}

impl OutageRun {
    fn completed(&self) -> u64 {
        self.by_status
            .get(JobStatus::Completed.as_str())
            .copied()
            .unwrap_or(0)
    }
}

/// Runs the benchmark and prints its table and the work redone.
pub async fn run(args: OutageBenchArgs) -> Result<()> {
    anyhow::ensure!(args.jobs >= 1, "--jobs must be >= 1, got 0");
    anyhow::ensure!(
        args.outage_s >= 0.0 && args.outage_s.is_finite(),
        "--outage-s must be >= 0, got {}",
        args.outage_s
    );
    anyhow::ensure!(
        args.cut_request != Some(0),
        "--cut-request counts from 1, got 0"
    );
    let redis = LocalRedis::start(LocalRedisOptions::default())?;
    // The SQLite file lives in the redis-server's temporary directory, removed with it.
    let db = redis.dir().join("outage.db");
    let store = Store::connect(&format!("sqlite://{}", db.display())).await?;
    let server_port = free_port()?;
    let config = SamplerConfig {
        n_mcmc: 4,
        block_size: args.block_size,
        max_new_tokens: args.max_new_tokens,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::Power)
    };
    config.validate()?;
    eprintln!(
        "benchmark: {} jobs on a llama-server of its own (port {server_port}, one slot) behind a proxy, private redis-server on port {}, SQLite in {}",
        args.jobs,
        redis.port(),
        db.display()
    );
    let baseline = outage_run(&args, &redis, &store, server_port, &config, None).await?;
    let cut_at = args
        .cut_request
        .unwrap_or_else(|| baseline.answered.div_ceil(2).max(1));
    anyhow::ensure!(
        cut_at <= baseline.answered,
        "--cut-request {cut_at} is beyond the batch's {} generation requests",
        baseline.answered
    );
    eprintln!(
        "benchmark: baseline done in {:.1} s ({} generation requests); now with an outage of {} s that cuts request {cut_at}",
        baseline.wall.as_secs_f64(),
        baseline.answered,
        args.outage_s
    );
    let restarted = outage_run(&args, &redis, &store, server_port, &config, Some(cut_at)).await?;
    let cut = restarted
        .cut
        .context("the outage run ended without its outage")?;
    let identical = baseline
        .tokens
        .iter()
        .filter(|(k, v)| restarted.tokens.get(k) == Some(v))
        .count();
    println!(
        "| run | jobs in SQL | completed | identical to the baseline | most deliveries of a job | waits for the model | generation requests | server decode steps | prompt tokens processed | tokens predicted | wall s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("no outage", &baseline),
        ("server stopped mid-batch", &restarted),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} |",
            r.by_status.values().sum::<u64>(),
            r.completed(),
            if std::ptr::eq(r, &baseline) {
                "-".to_string()
            } else {
                format!("{identical} of {}", baseline.tokens.len())
            },
            r.most_deliveries,
            r.waited,
            r.answered,
            r.counters[0],
            r.counters[1],
            r.counters[2],
            r.wall.as_secs_f64()
        );
    }
    let redone = [
        restarted.counters[0] - baseline.counters[0],
        restarted.counters[2] - baseline.counters[2],
    ];
    println!();
    println!(
        "the request the outage cut: request {} of {}, {:.0} decode steps, {:.0} tokens predicted",
        cut.request, baseline.answered, cut.work[0], cut.work[1]
    );
    println!(
        "work redone: {:.0} decode steps, {:.0} tokens predicted, in {} generation request{}",
        redone[0],
        redone[1],
        restarted.answered as i64 - baseline.answered as i64,
        if restarted.answered == baseline.answered + 1 {
            ""
        } else {
            "s"
        }
    );
    if let Some(back) = restarted.back_after {
        println!(
            "server down {:.1} s; the last job reached SQL {:.1} s after it was back",
            args.outage_s,
            back.as_secs_f64()
        );
    }
    let problems: Vec<String> = [
        (restarted.by_status.values().sum::<u64>() != args.jobs)
            .then(|| "not every job reached SQL".to_string()),
        (restarted.completed() != args.jobs || baseline.completed() != args.jobs)
            .then(|| format!("jobs ended {:?}", restarted.by_status)),
        (identical != baseline.tokens.len())
            .then(|| "jobs differ from the run without the outage".to_string()),
        (restarted.most_deliveries > 1).then(|| {
            format!(
                "a job was delivered {} times: the outage counted a delivery",
                restarted.most_deliveries
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    anyhow::ensure!(
        problems.is_empty(),
        "the outage lost or changed jobs: {}",
        problems.join("; ")
    );
    Ok(())
}

/// How long no job may reach SQL (beyond the outage) before the run gives up.
const STALL: Duration = Duration::from_secs(300);

/// Runs the batch once on a new namespace, through a collector into `store`. With `cut_at`, the
/// proxy cuts that generation request and stops the server; it starts again on the same port
/// `--outage-s` later.
async fn outage_run(
    args: &OutageBenchArgs,
    redis: &LocalRedis,
    store: &Store,
    server_port: u16,
    config: &SamplerConfig,
    cut_at: Option<u64>,
) -> Result<OutageRun> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .context("building the benchmark's HTTP client")?;
    let server = OwnServer::start(args, server_port, &http).await?;
    let proxy = Proxy::start(server, server_port, cut_at, http.clone()).await?;
    let ns = if cut_at.is_some() {
        "outage-restart"
    } else {
        "outage-baseline"
    };
    let queue = queue_on(&redis.url(), ns).await?;
    queue.ensure_groups().await?;
    let stop = CancellationToken::new();
    let worker = {
        let mut wc = WorkerConfig::new(format!("bench-{ns}"));
        wc.concurrency = args.concurrency;
        wc.read_block = Duration::from_millis(100);
        wc.max_wait = Duration::from_secs(2);
        let name = format!("tiny=llamacpp+http://127.0.0.1:{}", proxy.port);
        let models = Arc::new(ModelRegistry::new(&[name]).map_err(anyhow::Error::msg)?);
        let (queue, stop) = (queue.clone(), stop.clone());
        tokio::spawn(async move { worker::run(wc, queue, models, stop.cancelled_owned()).await })
    };
    let collector = {
        let mut cc = CollectorConfig::new(format!("bench-{ns}"));
        cc.read_block = Duration::from_millis(50);
        let (queue, store, stop) = (queue.clone(), store.clone(), stop.clone());
        tokio::spawn(async move { collector::run(cc, queue, store, stop.cancelled_owned()).await })
    };
    let sub = submission(
        "tiny",
        config.clone(),
        args.jobs,
        Prompt::Text("hello".into()),
    );
    let start = Instant::now();
    let receipt = producer::submit(&queue, &sub).await?;
    let mut restarted_at = None;
    let (mut seen, mut seen_at) = (0, Instant::now());
    let stored = loop {
        let stored = store.jobs_in(&receipt.job_ids).await?;
        if stored.len() == receipt.job_ids.len() {
            break stored;
        }
        if stored.len() > seen {
            (seen, seen_at) = (stored.len(), Instant::now());
        }
        anyhow::ensure!(
            seen_at.elapsed() < STALL + Duration::from_secs_f64(args.outage_s),
            "{seen} of {} jobs reached SQL, and no more in {} s",
            receipt.job_ids.len(),
            seen_at.elapsed().as_secs()
        );
        tokio::select! {
            _ = proxy.state.stopped.notified(), if cut_at.is_some() && restarted_at.is_none() => {
                let cut = proxy.state.cut.lock().expect("cut").clone();
                let cut = cut.context("the proxy stopped the server without a cut")?;
                let cut = cut.map_err(anyhow::Error::msg)?;
                eprintln!(
                    "benchmark: cut generation request {}: the server stopped after {:.0} decode steps",
                    cut.request, cut.at_stop[0]
                );
                tokio::time::sleep(Duration::from_secs_f64(args.outage_s)).await;
                let server = OwnServer::start(args, server_port, &http).await?;
                *proxy.state.server.lock().expect("server") = Some(server);
                restarted_at = Some(Instant::now());
                eprintln!("benchmark: server started again on port {server_port}");
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    };
    let wall = start.elapsed();
    let back_after = restarted_at.map(|t: Instant| t.elapsed());
    stop.cancel();
    let waited = worker.await?.waited.load(Ordering::Relaxed);
    collector.await?;
    let cut = proxy.state.cut.lock().expect("cut").clone();
    let cut = cut.transpose().map_err(anyhow::Error::msg)?;
    let now = counters(&http, &proxy.state.upstream).await?;
    let before = cut.map_or([0.0; 3], |c| c.at_stop);
    let answered = proxy.state.gate.lock().await.answered;
    let mut run = OutageRun {
        by_status: BTreeMap::new(),
        tokens: BTreeMap::new(),
        most_deliveries: 0,
        counters: [0, 1, 2].map(|i| before[i] + now[i]),
        answered,
        cut,
        back_after,
        wall,
        waited,
    };
    for r in stored {
        if r.status != JobStatus::Completed {
            eprintln!("benchmark: a job ended {}: {:?}", r.status, r.error);
        }
        *run.by_status.entry(r.status.to_string()).or_default() += 1;
        run.most_deliveries = run.most_deliveries.max(r.attempts);
        if r.status == JobStatus::Completed {
            run.tokens.insert(r.stream, r.tokens);
        }
    }
    Ok(run)
}
