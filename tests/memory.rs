//! Memory stays bounded whatever a caller sends: the largest request the API accepts, the most
//! completions it serves at once, a listing of jobs with large prompts, and a batch file that
//! never ends, each measured as the peak resident set size of the real process (the kernel's
//! `VmHWM` of a running `serve`, `getrusage`'s `ru_maxrss` of a finished `submit`), and Redis's
//! growth per request as its `used_memory`. The bounds are those docs/operations.md states,
//! derived from the settings.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Fleet, PATIENCE};

/// What `serve` may hold at its peak besides its requests: the process, its runtimes and clients.
const SERVE_BASE_BYTES: u64 = 64 << 20;
/// What one job API request may hold at its peak at the default limits: its body parsed a few
/// times over (`max_body_bytes`, 1 MiB: 8 MiB), its stored prompts
/// (`max_request_prompt_bytes`, 16 MiB) and its job specifications as values and as the JSON
/// being enqueued (2 x `max_request_job_bytes`, 64 MiB).
const SERVE_BYTES_PER_JOB_REQUEST: u64 = (8 << 20) + (16 << 20) + 2 * (32 << 20);
/// What one OpenAI-compatible completion may hold at its peak, for the largest body
/// (`max_body_bytes`, 1 MiB) and `n` up to `openai_max_n` (64), answered with short
/// completions: the body, its prompts once and as stored, and its job specifications.
const SERVE_BYTES_PER_COMPLETION: u64 = 8 << 20;
/// What Redis holds per job besides its specification's two copies (its stream entry and its
/// state): the state's other fields, the entry's, and the job's place in its batch and
/// correlation sets.
const REDIS_BYTES_PER_JOB: u64 = 1 << 10;
/// The most Redis may grow for one request at the API's default limits: its prompts
/// (`max_request_prompt_bytes`), its job specifications twice (`max_request_job_bytes`) and the
/// per-job rest for the most jobs a request may make (`max_jobs_per_request`).
const REDIS_BYTES_PER_MAXIMAL_REQUEST: u64 =
    (16 << 20) + 2 * (32 << 20) + 10_000 * REDIS_BYTES_PER_JOB;
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
        .arg("--allow-model-references")
        .env("POWERFLEET_API_TOKENS", "memory-token")
        .env_remove("POWERFLEET_API_TOKENS_FILE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    while http.get(format!("{base}/v1/x")).send().await.is_err() {
        assert!(
            Instant::now() < deadline && serve.try_wait().unwrap().is_none(),
            "serve did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ways to the request-wide limits: the largest prompt (256 KiB) 256 times and a
    // 6.5 KiB prompt for the most jobs a request may make (10,000), each prompt stored once;
    // 10,000 jobs with 2 KB of stop strings each (near max_request_job_bytes, 32 MiB); and a
    // benchmark whose template renders each record 60 times, a prompt per record and seed
    // (near max_request_prompt_bytes, 16 MiB). (Prompts of the toy model are its words, `a`
    // and `b`, separated by spaces; the server reference is never called, as no worker runs.)
    let big_prompt = "a ".repeat(128 << 10);
    let small_prompt = "b ".repeat(64 * 1024 * 1024 / 10_000 / 2);
    let stop: Vec<String> = (0..2).map(|i| format!("{i}{}", "s".repeat(999))).collect();
    let records: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({"id": format!("r{i}"), "question": format!("{i} {}", "q".repeat(2000)), "choices": ["a", "b", "c", "d"], "answer": 1}))
        .collect();
    let requests = [
        serde_json::json!({"model": "toy:tiny", "prompt": big_prompt, "seeds": (0..256).collect::<Vec<u64>>()}),
        serde_json::json!({"model": "toy:tiny", "prompt": small_prompt, "methods": ["power", "low-temp"], "seeds": (0..5000).collect::<Vec<u64>>()}),
        serde_json::json!({"model": "toy:tiny", "prompt": "a", "stop": stop, "seeds": (0..10_000).collect::<Vec<u64>>()}),
        serde_json::json!({"model": "llamacpp+http://127.0.0.1:1", "methods": ["standard"], "seeds": [0, 1], "bench": {"records": records, "template_text": format!("{}{{choices}}", "{question}".repeat(60))}}),
    ];
    let mut jobs = 0;
    for body in requests {
        let redis_before = redis_used_memory(&fleet.redis.url()).await;
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
        let n = body["job_ids"].as_array().unwrap().len();
        jobs += n;
        let growth = redis_used_memory(&fleet.redis.url())
            .await
            .saturating_sub(redis_before);
        eprintln!(
            "Redis grew by {} KiB for a request of {n} jobs",
            growth >> 10
        );
        assert!(
            growth < REDIS_BYTES_PER_MAXIMAL_REQUEST,
            "Redis grew by {} MiB for one request, over the stated {} MiB",
            growth >> 20,
            REDIS_BYTES_PER_MAXIMAL_REQUEST >> 20
        );
    }
    assert_eq!(jobs, 256 + 10_000 + 10_000 + 128);
    // One more job than allowed, or one prompt byte too many, is refused before it is built; so
    // is a template that renders a 120 KB request into 8 x 2 x 60 MB (it was rendered per seed
    // before the sizes were checked, and took gigabytes).
    let many_slots = "{question}".repeat(2000);
    let amplifying: Vec<serde_json::Value> = (0..2)
        .map(|i| serde_json::json!({"id": format!("r{i}"), "question": "a ".repeat(15_000), "answer": "1"}))
        .collect();
    for refused in [
        serde_json::json!({"model": "toy:tiny", "prompt": "a", "seeds": (0..10_001).collect::<Vec<u64>>()}),
        serde_json::json!({"model": "toy:tiny", "seeds": (0..8).collect::<Vec<u64>>(), "bench": {"records": amplifying, "template_text": many_slots}}),
    ] {
        let reply = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth("memory-token")
            .json(&refused)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 422);
    }

    let peak = peak_rss(serve.id());
    let _ = serve.kill();
    let _ = serve.wait();
    eprintln!("serve peak RSS {} MiB for {jobs} jobs", peak >> 20);
    // The requests come one after another: the peak is the largest one's.
    let bound = SERVE_BASE_BYTES + SERVE_BYTES_PER_JOB_REQUEST;
    assert!(
        peak < bound,
        "serve peaked at {} MiB, over the stated {} MiB",
        peak >> 20,
        bound >> 20
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
                    .wait_for_results(receipt.batch_id.unwrap(), 4, PATIENCE)
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

/// `serve` on `fleet` with `extra` flags and the test token, up and listening; its base URL.
async fn start_serve(fleet: &Fleet, name: &str, extra: &[&str]) -> (common::Serve, String) {
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str()];
    args.extend(extra);
    let mut serve = common::Serve::start(fleet, name, &args, Some("memory-token"));
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    (serve, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_maximal_completions_stay_under_the_stated_bounds() {
    let mut fleet = Fleet::new(BIN, false);
    // A worker for the model name, whose every generation takes far longer than the test: the
    // completions wait until their timeout, then their jobs are cancelled.
    fleet.spawn_worker(&["--model", "slow=toy:tiny?delay_ms=600000"]);
    let (serve, base) = start_serve(
        &fleet,
        "serve",
        &["--model", "slow", "--completion-timeout", "5s"],
    )
    .await;
    // Generous: a worker on a loaded machine registers late, never not at all.
    let deadline = Instant::now() + PATIENCE;
    let queue = fleet.queue().await;
    while !powerfleet_queue::served(&queue.live_workers().await.unwrap(), "slow") {
        assert!(Instant::now() < deadline, "the worker did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let redis_before = redis_used_memory(&fleet.redis.url()).await;
    // 16 at once, each 4 prompts of 260 KB (one body of 1 MiB) with n = 64: 256 jobs a request.
    // Every request's prompts differ, so none is stored only once for all.
    const REQUESTS: usize = 16;
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|r| {
            let base = base.clone();
            tokio::spawn(async move {
                // Words of the model's vocabulary only (a prompt it cannot tokenize fails its
                // job at once); the last six spell the request and prompt in binary.
                let prompts: Vec<String> = (0..4)
                    .map(|p| {
                        let id = r * 4 + p;
                        let tail: String = (0..6)
                            .map(|bit| if id >> bit & 1 == 1 { "b " } else { "a " })
                            .collect();
                        format!("{}{}", "a ".repeat(130_000 - 6), tail.trim_end())
                    })
                    .collect();
                let body = serde_json::json!({"model": "slow", "prompt": prompts, "n": 64, "max_tokens": 4});
                let reply = reqwest::Client::new()
                    .post(format!("{base}/v1/completions"))
                    .bearer_auth("memory-token")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                reply.status().as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 408, "{}", serve.log());
    }
    let peak = peak_rss(serve.child.id());
    let redis_growth = redis_used_memory(&fleet.redis.url())
        .await
        .saturating_sub(redis_before);
    eprintln!(
        "serve peak RSS {} MiB for {REQUESTS} concurrent maximal completions; Redis grew by {} KiB per request",
        peak >> 20,
        (redis_growth / REQUESTS as u64) >> 10
    );
    let bound = SERVE_BASE_BYTES + REQUESTS as u64 * SERVE_BYTES_PER_COMPLETION;
    assert!(
        peak < bound,
        "serve peaked at {} MiB, over the stated {} MiB",
        peak >> 20,
        bound >> 20
    );
    // Each request stores its four prompts once (1 MiB) and 256 small jobs, each cancelled.
    let per_request = (1 << 20) + 256 * 4 * REDIS_BYTES_PER_JOB;
    assert!(
        redis_growth < REQUESTS as u64 * per_request,
        "Redis grew by {} KiB per request, over the stated {} KiB",
        (redis_growth / REQUESTS as u64) >> 10,
        per_request >> 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_is_stored_once_and_the_results_keep_it() {
    let mut fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let url = fleet.redis.url();
    // The namespace's streams, groups and scripts exist before the measurement.
    common::submit_batch(&queue, &common::batch("toy:tiny").problems(1).build()).await;
    let redis_before = redis_used_memory(&url).await;
    // 100 KiB of prompt, for 4 seeds x 2 methods x 4 chains: 32 jobs.
    let prompt = "a b ".repeat(25 << 10);
    let request: powerfleet_fleet::request::SubmitRequest = serde_json::from_value(serde_json::json!({
        "model": "toy:tiny", "prompt": prompt, "seeds": [0, 1, 2, 3], "methods": ["power", "low-temp"],
        "chains": 4, "config": {"method": "power", "max_new_tokens": 4, "block_size": 2, "n_mcmc": 2},
    }))
    .unwrap();
    let submission = request
        .into_submission(
            &powerfleet_fleet::request::RequestLimits::default(),
            &powerfleet_fleet::request::ModelPolicy::default(),
        )
        .unwrap();
    let receipt = common::submit_batch(&queue, &submission).await;
    let growth = redis_used_memory(&url).await.saturating_sub(redis_before);
    eprintln!(
        "Redis grew by {} KiB for 32 jobs of one {} KiB prompt",
        growth >> 10,
        prompt.len() >> 10
    );
    // Each job's specification copied the prompt twice before: 6.4 MB. Now the prompt is
    // stored once (and Redis keeps a connection's input buffer, which held it, for a while).
    assert!(
        growth < 2 * prompt.len() as u64 + 32 * 4 * REDIS_BYTES_PER_JOB,
        "Redis grew by {} KiB",
        growth >> 10
    );
    let (_, _, keys) = redis_footprint(&url).await;
    let stored: Vec<&String> = keys.iter().filter(|k| k.contains(":prompt:")).collect();
    assert_eq!(
        stored.len(),
        2,
        "the warm-up's prompt and this one: {stored:?}"
    );
    let state = queue.job_state(receipt.job_ids[0]).await.unwrap().unwrap();
    let spec = state.spec.unwrap();
    assert!(
        matches!(spec.prompt, powerfleet_jobs::Prompt::Stored(_)),
        "{:?}",
        spec.prompt
    );
    assert!(serde_json::to_vec(&spec).unwrap().len() < 1024);
    // A job of the previous format, its prompt inline, as an earlier version enqueued it.
    let old = common::spec()
        .text_prompt("a b a")
        .config(powerfleet_sampler::SamplerConfig {
            max_new_tokens: 4,
            block_size: 2,
            n_mcmc: 2,
            ..powerfleet_sampler::SamplerConfig::new(powerfleet_sampler::Method::Power)
        })
        .build();
    queue
        .enqueue(std::slice::from_ref(&old), None)
        .await
        .unwrap();

    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 32, PATIENCE)
        .await;
    for r in &results {
        assert_eq!(r.status, powerfleet_jobs::JobStatus::Completed, "{r:?}");
        assert_eq!(
            r.prompt,
            Some(powerfleet_jobs::Prompt::Text(prompt.clone())),
            "the database keeps each completed job's prompt"
        );
    }
    // `results --format sft` gives what it gave when every result carried its prompt.
    let batch = receipt.batch_id.unwrap().to_string();
    let sft = common::stdout_of(&fleet.cli(&["results", "--batch", &batch, "--format", "sft"]));
    let records: Vec<serde_json::Value> = sft
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 32);
    for record in &records {
        let job = results
            .iter()
            .find(|r| r.job_id.to_string() == record["job_id"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            record,
            &serde_json::to_value(job.sft_record().unwrap()).unwrap()
        );
        assert_eq!(
            record["messages"][0]["content"].as_str(),
            Some(prompt.as_str())
        );
    }
    let store = fleet.store().await;
    let deadline = Instant::now() + PATIENCE;
    let old_result = loop {
        if let Some(r) = store.job(old.job_id).await.unwrap() {
            break r;
        }
        assert!(Instant::now() < deadline, "{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(old_result.status, powerfleet_jobs::JobStatus::Completed);
    assert_eq!(old_result.prompt, Some(old.prompt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_page_is_bounded_in_bytes_and_its_pages_list_every_job() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    const PAGE_BYTES: usize = 1 << 20;
    let (_serve, base) = start_serve(
        &fleet,
        "serve",
        &["--max-page-bytes", &PAGE_BYTES.to_string()],
    )
    .await;
    // 30 jobs of 3 prompts of 200 KB: every stored result keeps its prompt, so a page of 1,000
    // jobs would be 6 MB.
    let correlation = powerfleet_jobs::CorrelationId::generate();
    let problems: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"id": format!("p{i}"), "prompt": format!("{}{}", "a ".repeat(100_000), if i == 0 { "a" } else { "b" })}))
        .collect();
    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth("memory-token")
        .json(&serde_json::json!({
            "model": "toy:tiny", "problems": problems, "seeds": (0..10).collect::<Vec<u64>>(),
            "correlation_id": correlation, "config": {"method": "power", "max_new_tokens": 4, "block_size": 2, "n_mcmc": 2},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let receipt: serde_json::Value = reply.json().await.unwrap();
    let batch: powerfleet_jobs::BatchId =
        serde_json::from_value(receipt["batch_id"].clone()).unwrap();
    fleet.wait_for_results(batch, 30, PATIENCE).await;
    for listing in [
        format!("{base}/v1/correlations/{correlation}"),
        format!("{base}/v1/batches/{batch}"),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = format!("{listing}?limit=1000");
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let body = http
                .get(url)
                .bearer_auth("memory-token")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let jobs = page["jobs"].as_array().unwrap();
            assert!(!jobs.is_empty());
            // The jobs stay within the budget; the rest of the answer is a few hundred bytes.
            assert!(
                body.len() < PAGE_BYTES + 4096,
                "a page of {} jobs took {} bytes",
                jobs.len(),
                body.len()
            );
            assert_eq!(page["total"], 30);
            for j in jobs {
                assert!(seen.insert(j["job_id"].as_str().unwrap().to_string()));
                assert_eq!(j["source"], "database");
            }
            pages += 1;
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 30, "every job listed once");
        assert!(
            pages >= 6,
            "{pages} pages of at most 1 MiB for 6 MB of jobs"
        );
    }
}
