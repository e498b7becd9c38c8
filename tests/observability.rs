//! Metrics, health and readiness endpoints, JSON logs and API bearer tokens, on real processes.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Fleet, PATIENCE, batch, submit_batch};
use powerfleet_sampler::{Method, SamplerConfig};

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

async fn wait_ok(url: &str) {
    let deadline = Instant::now() + PATIENCE;
    while get(url).await.0 != 200 {
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A label value that looks like a UUID (job, batch and correlation ids are UUIDs).
fn has_uuid_label(line: &str) -> bool {
    line.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .any(|(_, v)| v.len() == 36 && v.chars().filter(|c| *c == '-').count() == 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_export_metrics_health_and_readiness() {
    let mut fleet = Fleet::new(BIN, false);
    let (worker_addr, collector_addr) = (common::free_addr(), common::free_addr());
    fleet.spawn_worker(&["--metrics-listen", &worker_addr, "--log-format", "json"]);
    fleet.spawn_collector_with(&["--metrics-listen", &collector_addr]);
    wait_ok(&format!("http://{worker_addr}/healthz")).await;
    wait_ok(&format!("http://{collector_addr}/readyz")).await;
    let queue = fleet.queue().await;
    let config = common::short_power_config();
    let receipt = submit_batch(
        &queue,
        &batch("toy:tiny")
            .config(config)
            .methods(&[Method::Power, Method::Standard])
            .problems(3)
            .seeds(2)
            .build(),
    )
    .await;
    fleet
        .wait_for_results(receipt.batch_id.unwrap(), 12, PATIENCE)
        .await;
    // The worker counts a job once it has published its result, and the collector samples the
    // queue depth every 5 s: wait until both have caught up with the stored batch.
    let worker_names = [
        "powerfleet_jobs_started_total 12",
        "powerfleet_jobs_finished_total{status=\"completed\"} 12",
        "powerfleet_blocks_total",
        "powerfleet_mcmc_proposals_total",
        "powerfleet_mcmc_acceptances_total",
        "powerfleet_tokens_generated_total",
        "powerfleet_chains_in_flight 0",
        "powerfleet_block_duration_seconds_bucket{backend=\"toy\"",
        "powerfleet_model_call_duration_seconds_bucket{backend=\"toy\"",
        "powerfleet_checkpoint_write_duration_seconds_bucket",
        "powerfleet_checkpoint_size_bytes_bucket",
    ];
    let collector_names = [
        "powerfleet_results_stored_total 12",
        "powerfleet_queue_lag_jobs{model=\"_references\"} 0",
        "powerfleet_queue_pending_jobs{model=\"_references\"} 0",
    ];
    let scrape = async || {
        let (status, worker) = get(&format!("http://{worker_addr}/metrics")).await;
        assert_eq!(status, 200);
        let (_, collector) = get(&format!("http://{collector_addr}/metrics")).await;
        (worker, collector)
    };
    let deadline = Instant::now() + PATIENCE;
    let (worker, collector) = loop {
        let (worker, collector) = scrape().await;
        let caught_up = worker_names.iter().all(|n| worker.contains(n))
            && collector_names.iter().all(|n| collector.contains(n));
        if caught_up || Instant::now() >= deadline {
            break (worker, collector);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for name in worker_names {
        assert!(
            worker.contains(name),
            "worker metrics lack {name}:\n{worker}"
        );
    }
    for name in collector_names {
        assert!(
            collector.contains(name),
            "collector metrics lack {name}:\n{collector}"
        );
    }
    for line in worker.lines().chain(collector.lines()) {
        assert!(!has_uuid_label(line), "an id in a label: {line}");
    }
    // JSON logs carry the structured fields.
    let logs = fleet.logs();
    let job_line = logs
        .lines()
        .find(|l| l.contains("\"job finished\""))
        .unwrap_or_else(|| panic!("no JSON line about a finished job:\n{logs}"));
    let v: serde_json::Value = serde_json::from_str(job_line).expect("one JSON object per line");
    assert!(
        v["span"]["job_id"].as_str().is_some() && v["span"]["correlation_id"].as_str().is_some(),
        "{v}"
    );

    // Readiness follows Redis; liveness does not.
    fleet.redis.kill();
    let (status, body) = get(&format!("http://{collector_addr}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"redis\""), "{body}");
    assert_eq!(
        get(&format!("http://{collector_addr}/healthz")).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_bearer_token_and_never_logs_it() {
    let fleet = Fleet::new(BIN, false);
    const SECRET: &str = "pf-token-7c1e-planted";
    let port = powerfleet_queue::local::free_port().unwrap();
    let log = fleet.dir.path().join("serve.log");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--redis",
            &fleet.redis.url(),
            "--namespace",
            &fleet.namespace,
            "--database-url",
            &fleet.db_url,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("POWERFLEET_API_TOKENS", format!("other-token,{SECRET}"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/jobs");
    let body = serde_json::json!({"model": "toy:tiny", "prompt": "a"});
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    let mut anonymous = None;
    while anonymous.is_none() {
        anonymous = client.post(&url).json(&body).send().await.ok();
        assert!(Instant::now() < deadline, "the API did not start");
        if anonymous.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let anonymous = anonymous.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let text = anonymous.text().await.unwrap();
    assert!(
        text.contains("unauthorized") && !text.contains(SECRET),
        "{text}"
    );
    let wrong = client
        .post(&url)
        .bearer_auth("pf-token-7c1e-plantee")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client
        .post(&url)
        .bearer_auth(SECRET)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 201);
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("http request"),
        "requests are logged:\n{logged}"
    );
    assert!(!logged.contains(SECRET), "the token never appears in logs");
}

#[test]
fn token_comparison_accepts_only_exact_tokens() {
    use powerfleet_fleet::api::token_matches;
    let tokens = vec!["abc".to_string(), "secret-2".to_string()];
    assert!(token_matches(&tokens, "secret-2"));
    for bad in ["", "secret-", "secret-22", "Secret-2", "abcd"] {
        assert!(!token_matches(&tokens, bad), "{bad}");
    }
    assert!(!token_matches(&[], "anything"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp_with_the_job_fields() {
    use axum::http::{Method as HttpMethod, StatusCode};
    let otlp = common::StubServer::start(|r| {
        if r.method == HttpMethod::POST && r.path() == "/v1/traces" {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        }
    })
    .await;
    let endpoint = otlp.url.clone();

    let mut fleet = Fleet::new(BIN, false);
    let w = fleet.spawn_worker(&["--otlp-endpoint", &endpoint]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(&queue, &batch("toy:tiny").build()).await;
    fleet
        .wait_for_results(receipt.batch_id.unwrap(), 1, PATIENCE)
        .await;
    // SIGTERM: the worker stops and flushes its spans.
    fleet.signal_worker(w, 15);
    let mut child = fleet.workers[w].take().unwrap();
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let job = receipt.job_ids[0].to_string();
    loop {
        let bodies: Vec<Vec<u8>> = otlp
            .requests()
            .into_iter()
            .filter(|r| r.method == HttpMethod::POST && r.path() == "/v1/traces")
            .map(|r| r.body)
            .collect();
        let all: Vec<u8> = bodies.concat();
        let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
        if has(job.as_bytes()) && has(b"correlation_id") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span with the job id reached the collector ({} requests)",
            bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_inference_server_shows_an_open_circuit_and_waiting_jobs() {
    let mut fleet = Fleet::new(BIN, false);
    let dead = format!("http://{}", common::free_addr());
    let metrics = common::free_addr();
    let model = format!("dead=llamacpp+{dead}?timeout_s=1");
    let flags = [
        "--metrics-listen",
        &metrics,
        "--model",
        &model,
        "--model-attempts",
        "6",
    ];
    fleet.spawn_worker(&[flags.as_slice(), &common::IMPATIENT].concat());
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let submission = batch("dead")
        .config(SamplerConfig::new(Method::Standard))
        .problem("p0", powerfleet_jobs::Prompt::Tokens(vec![1]))
        .build();
    let receipt = submit_batch(&queue, &submission).await;
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 1, PATIENCE)
        .await;
    // The job waited for the server, and failed only past the patience, with the server's error.
    assert_eq!(results[0].status, powerfleet_jobs::JobStatus::Failed);
    let error = results[0].error.as_deref().unwrap();
    assert!(
        error.contains("longer than the worker's --model-patience of 3 s") && error.contains(&dead),
        "{error}"
    );
    let (_, scraped) = get(&format!("http://{metrics}/metrics")).await;
    let want = format!("powerfleet_backend_circuit_open{{server=\"{dead}\"}} 1");
    assert!(scraped.contains(&want), "{want} not in:\n{scraped}");
    for want in [
        "powerfleet_model_retries_total{backend=\"llamacpp\"}",
        "powerfleet_jobs_waiting_for_model_total{backend=\"llamacpp\",when=\"claimed\"}",
    ] {
        assert!(scraped.contains(want), "{want} not in:\n{scraped}");
    }
}

/// Waits until the collector's metrics at `metrics` show `n` jobs of `model` not delivered yet
/// (it samples the queue every 5 s), then checks that Redis reports that same lag for the
/// workers' group on the model's stream: what KEDA's redis-streams scaler reads.
async fn lag_is(fleet: &Fleet, metrics: &str, model: &str, n: u64) {
    let line = format!("powerfleet_queue_lag_jobs{{model=\"{model}\"}} {n}");
    fleet
        .wait_until(
            &format!("the collector's metrics show {line}"),
            Duration::from_secs(120),
            || async {
                get(&format!("http://{metrics}/metrics"))
                    .await
                    .1
                    .lines()
                    .any(|l| l == line)
            },
        )
        .await;
    let queue = fleet.queue().await;
    let stream = queue.keys().model_jobs(model);
    assert_eq!(
        queue.reported_lag(&stream).await.unwrap(),
        Some(n),
        "the lag XINFO GROUPS reports on {stream}"
    );
}

/// `powerfleet cancel` of queued jobs leaves the lag autoscalers read (`XINFO GROUPS`) and the
/// collector's `powerfleet_queue_lag_jobs` equal to the jobs still queued: those left when some
/// are, 0 when none are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_queued_jobs_leave_the_true_lag_for_autoscalers_and_metrics() {
    use powerfleet_fleet::request::{ModelPolicy, RequestLimits};
    use powerfleet_jobs::CorrelationId;

    let mut fleet = Fleet::new(BIN, false);
    let metrics = common::free_addr();
    fleet.spawn_collector_with(&["--metrics-listen", &metrics]);
    let queue = fleet.queue().await;
    // No worker serves either model name. Twenty jobs of `lagged`, two per submission,
    // alternately under two correlation ids, so that each id's jobs lie between the other's in
    // the stream; three of `bystander`.
    let (doomed, kept) = (CorrelationId::generate(), CorrelationId::generate());
    let mut kept_batches = Vec::new();
    for i in 0..10 {
        let mut request = batch("lagged").problems(2).request();
        request.correlation_id = Some(if i % 2 == 0 { &doomed } else { &kept }.clone());
        let submission = request
            .into_submission(&RequestLimits::operator(), &ModelPolicy::operator())
            .unwrap();
        let receipt = submit_batch(&queue, &submission).await;
        if i % 2 == 1 {
            kept_batches.push(receipt.batch_id.unwrap().to_string());
        }
    }
    submit_batch(&queue, &batch("bystander").problems(3).build()).await;
    lag_is(&fleet, &metrics, "lagged", 20).await;
    lag_is(&fleet, &metrics, "bystander", 3).await;

    // Cancelling one correlation id's jobs leaves the other's ten queued.
    let doomed = doomed.to_string();
    let out = common::stdout_of(&fleet.cli_without_database(&["cancel", "--correlation", &doomed]));
    assert!(out.contains("cancelled 10,"), "{out}");
    lag_is(&fleet, &metrics, "lagged", 10).await;
    lag_is(&fleet, &metrics, "bystander", 3).await;

    // Cancelling the rest, batch by batch, leaves none.
    for b in &kept_batches {
        let out = common::stdout_of(&fleet.cli_without_database(&["cancel", "--batch", b]));
        assert!(out.contains("cancelled 2,"), "{out}");
    }
    lag_is(&fleet, &metrics, "lagged", 0).await;
    lag_is(&fleet, &metrics, "bystander", 3).await;
}
