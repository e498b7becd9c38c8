//! Memory stays bounded whatever a caller sends: the largest request the API accepts, and a batch
//! file that never ends, each measured as the peak resident set size of the real process (the
//! kernel's `VmHWM` of a running `serve`, `getrusage`'s `ru_maxrss` of a finished `submit`).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Fleet};

/// The most a `serve` process may hold at its peak while taking the largest requests.
const SERVE_PEAK_BYTES: u64 = 512 << 20;
/// The most Redis may grow for one request at the API's limits.
const REDIS_BYTES_PER_MAXIMAL_REQUEST: u64 = 192 << 20;
/// The most `submit --batch-file /dev/zero` may hold before it refuses the file.
const SUBMIT_PEAK_BYTES: u64 = 64 << 20;

/// The peak resident set size of a running process, from `/proc/PID/status`.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib * 1024
}

/// Redis's `used_memory`, in bytes.
async fn redis_used_memory(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_api_requests_stay_under_a_stated_peak_memory() {
    let fleet = Fleet::new(BIN, false);
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let log = fleet.dir.path().join("serve.log");
    let mut serve = Command::new(BIN)
        .args(["serve", "--redis", &fleet.redis.url()])
        .args(["--namespace", &fleet.namespace])
        .args(["--database-url", &fleet.db_url, "--listen", &listen])
        .env("POWERFLEET_API_TOKENS", "memory-token")
        .env_remove("POWERFLEET_API_TOKENS_FILE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/v1/x")).send().await.is_err() {
        assert!(
            Instant::now() < deadline && serve.try_wait().unwrap().is_none(),
            "serve did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let redis_before = redis_used_memory(&fleet.redis.url()).await;
    // The two ways to the request-wide limit of 64 MiB of prompt bytes: the largest prompt
    // (256 KiB) 256 times, and a 6.5 KiB prompt for the most jobs a request may make (10,000).
    // (Prompts of the toy model are its words, `a` and `b`, separated by spaces.)
    let big_prompt = "a ".repeat(128 << 10);
    let small_prompt = "b ".repeat(64 * 1024 * 1024 / 10_000 / 2);
    let requests = [
        serde_json::json!({"model": "toy:tiny", "prompt": big_prompt, "seeds": (0..256).collect::<Vec<u64>>()}),
        serde_json::json!({"model": "toy:tiny", "prompt": small_prompt, "methods": ["power", "low-temp"], "seeds": (0..5000).collect::<Vec<u64>>()}),
    ];
    let mut jobs = 0;
    for body in requests {
        let reply = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth("memory-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        jobs += body["job_ids"].as_array().unwrap().len();
    }
    assert_eq!(jobs, 256 + 10_000);
    // One more job than allowed, or one prompt byte too many, is refused before it is built.
    let too_many = serde_json::json!({"model": "toy:tiny", "prompt": "a", "seeds": (0..10_001).collect::<Vec<u64>>()});
    let reply = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth("memory-token")
        .json(&too_many)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 422);

    let peak = peak_rss(serve.id());
    let redis_growth = redis_used_memory(&fleet.redis.url())
        .await
        .saturating_sub(redis_before);
    let _ = serve.kill();
    let _ = serve.wait();
    eprintln!(
        "serve peak RSS {} MiB; Redis grew by {} MiB for {jobs} jobs",
        peak >> 20,
        redis_growth >> 20
    );
    assert!(
        peak < SERVE_PEAK_BYTES,
        "serve peaked at {} MiB, over the stated {} MiB",
        peak >> 20,
        SERVE_PEAK_BYTES >> 20
    );
    // Each job's specification is stored twice (its stream entry and its state), so each
    // maximal request (64 MiB of prompt bytes) may take 3 × 64 MiB with the overheads.
    assert!(
        redis_growth < REDIS_BYTES_PER_MAXIMAL_REQUEST * 2,
        "Redis grew by {} MiB for two maximal requests",
        redis_growth >> 20
    );
}

/// Runs the binary with `args` under Python's `resource.getrusage(RUSAGE_CHILDREN)`, the one
/// portable way to read the peak memory of a child that has exited; returns its exit code and
/// peak resident set size in bytes.
fn run_measuring_peak(args: &[&str], env: &[(&str, &str)]) -> (i32, u64) {
    const MEASURE: &str = "import resource, subprocess, sys\n\
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let out = Command::new("python3")
        .args(["-c", MEASURE, BIN])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 measures a child's peak memory here and cannot run ({e}); install python3 (scripts/test.sh needs it too)")
        });
    let report = String::from_utf8_lossy(&out.stdout);
    let mut words = report.split_whitespace();
    let code: i32 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from python3: {report} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // ru_maxrss is in KiB on Linux.
    let kib: u64 = words.next().and_then(|w| w.parse().ok()).unwrap();
    (code, kib * 1024)
}

#[test]
fn an_endless_batch_file_is_refused_in_bounded_memory() {
    let (code, peak) = run_measuring_peak(
        &[
            "submit",
            "--model",
            "toy:pivot",
            "--batch-file",
            "/dev/zero",
        ],
        &[("POWERFLEET_REDIS_URL", "redis://127.0.0.1:1/")],
    );
    assert_eq!(code, 1, "submit --batch-file /dev/zero must fail");
    eprintln!("submit --batch-file /dev/zero peaked at {} MiB", peak >> 20);
    assert!(
        peak < SUBMIT_PEAK_BYTES,
        "submit --batch-file /dev/zero peaked at {} MiB, over the stated {} MiB",
        peak >> 20,
        SUBMIT_PEAK_BYTES >> 20
    );
}

/// Keys and `used_memory` of a Redis, after an active expiry pass.
async fn redis_footprint(url: &str) -> (u64, u64, Vec<String>) {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    (keys.len() as u64, redis_used_memory(url).await, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_memory_is_flat_after_many_batches() {
    use common::{batch, submit_batch};
    use powerfleet_sampler::{Method, SamplerConfig};

    const RETENTION: &str = "2";
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&["--retention-secs", RETENTION]);
    fleet.spawn_collector_with(&["--retention-secs", RETENTION]);
    let queue = powerfleet_queue::Queue::connect(
        &fleet.redis.url(),
        powerfleet_queue::QueueOptions {
            namespace: fleet.namespace.clone(),
            retention_s: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let config = SamplerConfig {
        max_new_tokens: 4,
        block_size: 2,
        n_mcmc: 2,
        ..SamplerConfig::new(Method::Power)
    };
    let run = |n: usize| {
        let queue = queue.clone();
        let fleet = &fleet;
        let config = config.clone();
        async move {
            for _ in 0..n {
                let mut submission = batch("toy:tiny").config(config.clone()).problems(4).build();
                submission.submission_key = Some(powerfleet_jobs::JobId::new().to_string());
                let receipt = submit_batch(&queue, &submission).await;
                fleet
                    .wait_for_results(receipt.batch_id.unwrap(), 4, Duration::from_secs(60))
                    .await;
            }
            // Past the retention, with the streams trimmed as the collector does every minute.
            tokio::time::sleep(Duration::from_millis(3000)).await;
            queue.trim_streams().await.unwrap();
        }
    };
    run(1).await;
    let (keys_before, memory_before, names_before) = redis_footprint(&fleet.redis.url()).await;
    run(25).await;
    let (keys_after, memory_after, names_after) = redis_footprint(&fleet.redis.url()).await;
    eprintln!(
        "after 1 batch: {keys_before} keys, {memory_before} bytes; after 26: {keys_after} keys, {memory_after} bytes"
    );
    assert_eq!(
        keys_after, keys_before,
        "keys left behind: before {names_before:?}, after {names_after:?}"
    );
    assert!(
        memory_after <= memory_before + (256 << 10),
        "Redis grew from {memory_before} to {memory_after} bytes over 25 batches"
    );
}
