//! `powerfleet bench openai`: the overhead of the OpenAI-compatible endpoint. The same
//! single-sample jobs go through `POST /v1/completions` (one request that waits for its job) and
//! through the job API (`POST /v1/jobs`, then `GET /v1/jobs/{id}` until it is done), against one
//! in-process API and worker on a private redis-server; and, given a llama-server, one sample at
//! a time through powerfleet's endpoint beside the same request sent to llama-server's own
//! `/v1/completions`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::api::{self, ApiState};
use powerfleet_fleet::worker::{self, WorkerConfig};
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Arguments of `powerfleet bench openai`.
#[derive(Args, Debug)]
pub struct OpenAiBenchArgs {
    /// Requests per measurement on the toy model.
    #[arg(long, default_value_t = 400)]
    pub requests: u64,
    /// Clients sending requests at once (and chains the worker runs at once).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Also compare single samples against llama-server's own /v1/completions.
    #[command(flatten)]
    pub llama: LlamaArgs,
    /// Sequential requests per side of the llama-server comparison.
    #[arg(long, default_value_t = 40)]
    pub server_requests: u64,
    /// Tokens per sample in the llama-server comparison.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
}

/// A llama-server of a benchmark's own, when both are given.
#[derive(Args, Debug)]
pub struct LlamaArgs {
    /// A llama-server binary.
    #[arg(long, env = "POWERFLEET_LLAMA_SERVER")]
    pub llama_server: Option<String>,
    /// The GGUF model file llama-server loads.
    #[arg(long, env = "POWERFLEET_TINY_GGUF")]
    pub model_file: Option<String>,
}

impl LlamaArgs {
    /// Starts llama-server with `slots` parallel slots on a free port and waits until it is
    /// healthy; the process (kill it when done) and its URL. `None` without both arguments.
    pub async fn start(&self, slots: u32) -> Result<Option<(std::process::Child, String)>> {
        let (Some(server), Some(model_file)) = (&self.llama_server, &self.model_file) else {
            return Ok(None);
        };
        let port = powerfleet_queue::local::free_port()?;
        let mut child = std::process::Command::new(server)
            .args(["-m", model_file, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args([
                "-np",
                &slots.to_string(),
                "-c",
                &(2048 * slots).to_string(),
                "-t",
                "2",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {server}; build it with scripts/ensure-llama-server.sh")
            })?;
        let url = format!("http://127.0.0.1:{port}");
        // Far off: a loaded machine loads the model slowly, and the loop ends at once if the
        // server exits; only a server that hangs is given up on.
        let within = Duration::from_secs(300);
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        while !http
            .get(format!("{url}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "llama-server exited with {status} before it became healthy; run {server} -m {model_file} --port {port} to see why"
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                anyhow::bail!(
                    "llama-server on port {port} did not become healthy in {} s",
                    within.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Some((child, url)))
    }

    /// Says why a benchmark skips its llama-server part.
    pub fn skipped() -> &'static str {
        "(no llama-server part: give --llama-server and --model-file, or set POWERFLEET_LLAMA_SERVER and POWERFLEET_TINY_GGUF)"
    }
}

/// Latencies of one measurement, in milliseconds, and its wall time.
struct Measured {
    latencies: Vec<f64>,
    wall: Duration,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i]
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            self.latencies.len(),
            self.per_second(),
            self.percentile(0.5),
            self.percentile(0.95)
        )
    }
}

/// Runs `requests` calls of `call(i)` with `concurrency` in flight; the latency of each.
async fn measure<F, Fut>(requests: u64, concurrency: usize, call: F) -> Result<Measured>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (call.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                call(i).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }));
    }
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    Ok(Measured {
        latencies,
        wall: start.elapsed(),
    })
}

/// POSTs `body` and returns the JSON answer; an error unless the status is `ok`.
async fn post(http: &reqwest::Client, url: &str, body: &Value, ok: u16) -> Result<Value> {
    let response = http.post(url).json(body).send().await?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await?;
    anyhow::ensure!(status == ok, "{url} answered {status}: {answer}");
    Ok(answer)
}

/// An in-process API and worker on `redis`, in namespace `ns`, with `models` registered; the
/// API's base URL.
async fn fleet_on(
    redis: &LocalRedis,
    ns: &str,
    models: &[String],
    concurrency: usize,
    stop: &CancellationToken,
) -> Result<String> {
    let queue = crate::bench::queue_on(&redis.url(), ns).await?;
    let store = powerfleet_store::Store::connect(&format!(
        "sqlite://{}",
        redis.dir().join(format!("{ns}.db")).display()
    ))
    .await?;
    let names: Vec<String> = models
        .iter()
        .filter_map(|m| m.split_once('=').map(|(n, _)| n.to_string()))
        .collect();
    let state = ApiState {
        queue: queue.clone(),
        store,
        limits: api::RequestLimits {
            rate_limit_per_minute: 0,
            ..api::RequestLimits::default()
        },
        tokens: Arc::new(Vec::new()),
        models: Arc::new(api::ModelPolicy::from_flags(&names, false).map_err(anyhow::Error::msg)?),
        datasets: Default::default(),
        openai: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = stop.clone();
    tokio::spawn(api::serve(
        listener,
        state,
        Default::default(),
        shutdown.cancelled_owned(),
    ));
    let mut wc = WorkerConfig::new(format!("bench-{ns}"));
    wc.concurrency = concurrency;
    wc.read_block = Duration::from_millis(100);
    let registry = Arc::new(ModelRegistry::new(models).map_err(anyhow::Error::msg)?);
    let stop = stop.clone();
    tokio::spawn(async move { worker::run(wc, queue, registry, stop.cancelled_owned()).await });
    Ok(base)
}

/// The job API's way to the same answer: submit, then poll the job until it is finished, with the
/// same pauses the endpoint's wait uses.
async fn via_job_api(http: &reqwest::Client, base: &str, body: &Value) -> Result<()> {
    let receipt = post(http, &format!("{base}/v1/jobs"), body, 201).await?;
    let id = receipt["job_ids"][0]
        .as_str()
        .context("a receipt without job ids")?;
    let mut pause = Duration::from_millis(2);
    loop {
        let view: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        match view["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("queued" | "running") => {}
            other => anyhow::bail!("job {id} ended {other:?}: {view}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Runs the benchmark and prints its tables.
pub async fn run(args: OpenAiBenchArgs) -> Result<()> {
    anyhow::ensure!(args.requests >= 1, "--requests must be >= 1");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be >= 1");
    let redis = LocalRedis::start(LocalRedisOptions::default())?;
    let stop = CancellationToken::new();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    eprintln!(
        "benchmark: {} single-sample requests on toy:pivot, {} at once, one in-process API and worker, private redis-server on port {}",
        args.requests,
        args.concurrency,
        redis.port()
    );
    let base = fleet_on(&redis, "openai-bench", &[], args.concurrency, &stop).await?;
    let completion = |i: u64| json!({"model": "toy:pivot", "prompt": [], "seed": i, "power_sampling": {"method": "standard"}});
    let job = |i: u64| json!({"model": "toy:pivot", "prompt_tokens": [], "seeds": [i], "config": {"method": "standard"}});
    // Warm up both paths (connections, the worker's model, SQLite).
    post(
        &http,
        &format!("{base}/v1/completions"),
        &completion(u64::MAX),
        200,
    )
    .await?;
    via_job_api(&http, &base, &job(u64::MAX)).await?;
    let endpoint = {
        let (http, base) = (http.clone(), base.clone());
        measure(args.requests, args.concurrency, move |i| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                post(
                    &http,
                    &format!("{base}/v1/completions"),
                    &completion(i),
                    200,
                )
                .await?;
                Ok(())
            }
        })
        .await?
    };
    eprintln!(
        "benchmark: endpoint done in {:.1} s",
        endpoint.wall.as_secs_f64()
    );
    let jobs = {
        let (http, base) = (http.clone(), base.clone());
        measure(args.requests, args.concurrency, move |i| {
            let (http, base) = (http.clone(), base.clone());
            async move { via_job_api(&http, &base, &job(i)).await }
        })
        .await?
    };
    eprintln!(
        "benchmark: job API done in {:.1} s",
        jobs.wall.as_secs_f64()
    );
    println!("## The endpoint beside the job API (toy:pivot, one sample per request)\n");
    println!("| path | requests | requests/s | p50 ms | p95 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "{}",
        endpoint.row("POST /v1/completions (waits for the job)")
    );
    println!(
        "{}",
        jobs.row("POST /v1/jobs, then GET /v1/jobs/{id} until done")
    );
    println!(
        "\nRatio, endpoint / job API: {:.2}x the requests/s, {:.2}x the median latency.",
        endpoint.per_second() / jobs.per_second(),
        endpoint.percentile(0.5) / jobs.percentile(0.5)
    );

    match args.llama.start(1).await? {
        Some((child, url)) => server_comparison(&args, &redis, child, url, &http, &stop).await?,
        None => println!("\n{}", LlamaArgs::skipped()),
    }
    stop.cancel();
    Ok(())
}

/// One sample at a time through powerfleet's endpoint (method standard) against llama-server's
/// own `/v1/completions` with the same budget.
async fn server_comparison(
    args: &OpenAiBenchArgs,
    redis: &LocalRedis,
    mut child: std::process::Child,
    server_url: String,
    http: &reqwest::Client,
    stop: &CancellationToken,
) -> Result<()> {
    eprintln!(
        "benchmark: {} sequential single samples of {} tokens, llama-server at {server_url} (one slot)",
        args.server_requests, args.max_tokens
    );
    let reference = format!("tiny=llamacpp+{server_url}?k=98");
    let base = fleet_on(redis, "openai-bench-server", &[reference], 1, stop).await?;
    let max_tokens = args.max_tokens;
    let ours = move |i: u64| {
        json!({"model": "tiny", "prompt": "hello", "seed": i, "max_tokens": max_tokens,
               "power_sampling": {"method": "standard"}})
    };
    let plain = move |i: u64| json!({"prompt": "hello", "seed": i, "max_tokens": max_tokens, "temperature": 1.0});
    post(
        http,
        &format!("{base}/v1/completions"),
        &ours(u64::MAX),
        200,
    )
    .await?;
    post(
        http,
        &format!("{server_url}/v1/completions"),
        &plain(0),
        200,
    )
    .await?;
    let powerfleet = {
        let (http, base) = (http.clone(), base.clone());
        measure(args.server_requests, 1, move |i| {
            let (http, base, body) = (http.clone(), base.clone(), ours(i));
            async move {
                post(&http, &format!("{base}/v1/completions"), &body, 200).await?;
                Ok(())
            }
        })
        .await?
    };
    let direct = {
        let (http, url) = (http.clone(), server_url.clone());
        measure(args.server_requests, 1, move |i| {
            let (http, url, body) = (http.clone(), url.clone(), plain(i));
            async move {
                post(&http, &format!("{url}/v1/completions"), &body, 200).await?;
                Ok(())
            }
        })
        .await?
    };
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "\n## One sample through powerfleet beside llama-server's own /v1/completions ({} tokens, one at a time)\n",
        args.max_tokens
    );
    println!("| path | requests | requests/s | p50 ms | p95 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "{}",
        powerfleet.row("powerfleet POST /v1/completions, method standard")
    );
    println!("{}", direct.row("llama-server POST /v1/completions"));
    println!(
        "\nRatio, powerfleet / llama-server: {:.2}x the median latency.",
        powerfleet.percentile(0.5) / direct.percentile(0.5)
    );
    Ok(())
}
