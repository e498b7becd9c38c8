//! The OpenAI-compatible endpoints of `powerfleet serve`, end to end on the built-in toy models:
//! a real `serve`, worker and collector on a private Redis, driven over HTTP as an OpenAI client
//! drives them.

use crate::common;

use std::time::{Duration, Instant};

use common::{BIN, Fleet, PATIENCE, Serve};
use powerfleet_jobs::CorrelationId;
use serde_json::{Value, json};

const TOKEN: &str = "openai-test-token";

/// A fleet with two workers, a collector and `serve` (with `extra` flags) on a free port.
async fn fleet_with_api(extra: &[&str]) -> (Fleet, Serve, String) {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str()];
    args.extend(extra);
    let mut serve = Serve::start(&fleet, "serve", &args, Some(TOKEN));
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    (fleet, serve, base)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// POSTs `body` to `path` with the test token; the status, the correlation header and the JSON.
async fn post(base: &str, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    let response = client()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let correlation = response
        .headers()
        .get("x-powerfleet-correlation-id")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = response.json().await.unwrap();
    (status, correlation, body)
}

/// The stored view of job `id` from the job API.
async fn job(base: &str, id: &str) -> Value {
    common::get_json(&format!("{base}/v1/jobs/{id}"), Some(TOKEN)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_return_each_jobs_tokens_text_and_log_p_in_openai_shape() {
    let (fleet, serve, base) = fleet_with_api(&[]).await;
    let (status, correlation, body) = post(
        &base,
        "/v1/completions",
        &json!({
            "model": "toy:suite-double",
            "prompt": "double 3 ?",
            "n": 3,
            "seed": 7,
            "max_tokens": 6,
            "logprobs": 0,
            "return_token_ids": true,
            "power_sampling": {"n_mcmc": 3, "block_size": 2},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", serve.log());
    let correlation = correlation.expect("the correlation id header");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "toy:suite-double");
    assert_eq!(body["powerfleet"]["correlation_id"], correlation.as_str());
    assert_eq!(body["powerfleet"]["seed"], 7);
    assert_eq!(body["powerfleet"]["config"]["n_mcmc"], 3);
    assert_eq!(body["powerfleet"]["config"]["max_new_tokens"], 6);
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let job_ids = body["powerfleet"]["job_ids"].as_array().unwrap();
    let (mut completion_tokens, mut generated) = (0, 0);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        let stored = job(&base, job_ids[i].as_str().unwrap()).await;
        let result = &stored["result"];
        assert_eq!(stored["status"], "completed", "{stored}");
        assert_eq!(result["stream"], i, "choice {i} is chain {i}");
        assert_eq!(choice["token_ids"], result["tokens"], "choice {i}");
        assert_eq!(choice["text"], result["text"], "choice {i}");
        let finish = if result["ends_with_eos"] == true {
            "stop"
        } else {
            "length"
        };
        assert_eq!(choice["finish_reason"], finish);
        let token_logprobs: Vec<f64> = choice["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let tokens = result["tokens"].as_array().unwrap();
        assert_eq!(token_logprobs.len(), tokens.len());
        let sum: f64 = token_logprobs.iter().sum();
        let log_p = result["log_p"].as_f64().unwrap();
        assert!(
            (sum - log_p).abs() <= 1e-9 * log_p.abs().max(1.0),
            "{sum} != {log_p}"
        );
        assert_eq!(
            choice["logprobs"]["tokens"][0],
            format!("token_id:{}", tokens[0])
        );
        completion_tokens += tokens.len() as u64;
        generated += result["stats"]["tokens_generated"].as_u64().unwrap();
    }
    assert_eq!(body["usage"]["completion_tokens"], completion_tokens);
    assert_eq!(body["usage"]["generated_tokens"], generated);
    assert!(
        generated > completion_tokens,
        "MCMC generates more than it keeps"
    );
    // "double 3 ?" is three tokens, counted once for the three chains.
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 3 + completion_tokens);

    // The correlation id works with `powerfleet status`.
    let out = fleet.cli(&["status", &correlation]);
    let text = common::stdout_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("completed"), "{text}");
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_lookahead_completion_runs_its_chains_with_the_requests_options() {
    let (fleet, serve, base) = fleet_with_api(&[]).await;
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({
            "model": "toy:eos-lengths",
            "prompt": [0],
            "n": 3,
            "seed": 5,
            "max_tokens": 4,
            "return_token_ids": true,
            "power_sampling": {"method": "power-lookahead", "lookahead_candidates": 3,
                "lookahead_rollouts": 2, "lookahead_horizon": 2, "block_size": 2},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", serve.log());
    assert_eq!(body["powerfleet"]["method"], "power-lookahead");
    let config = &body["powerfleet"]["config"];
    assert_eq!(
        (
            &config["lookahead_candidates"],
            &config["lookahead_rollouts"],
            &config["lookahead_horizon"]
        ),
        (&json!(3), &json!(2), &json!(2)),
        "{config}"
    );
    let queue = fleet.queue().await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        let id = body["powerfleet"]["job_ids"][i].as_str().unwrap();
        let stored = job(&base, id).await;
        assert_eq!(stored["status"], "completed", "{stored}");
        assert_eq!(choice["token_ids"], stored["result"]["tokens"]);
        let lookahead = &stored["result"]["stats"]["lookahead"];
        assert!(lookahead["rollouts"].as_u64().unwrap() > 0, "{stored}");
        // The worker's chain is the one an in-process run of the job gives.
        let spec = common::job_spec(&queue, id.parse().unwrap()).await;
        assert_eq!(
            choice["token_ids"],
            json!(common::fault_free_tokens(&spec)),
            "choice {i}"
        );
    }
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_token_id_prompts_answers_in_prompt_then_chain_order() {
    let (_fleet, serve, base) = fleet_with_api(&[]).await;
    // toy:suite-double's "double 3 ?" and "double 4 ?" as token ids.
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({
            "model": "toy:suite-double",
            "prompt": [[0, 1, 3], [0, 2, 3]],
            "n": 2,
            "seed": 3,
            "return_token_ids": true,
            "power_sampling": {"method": "standard"},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", serve.log());
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert_eq!(body["powerfleet"]["method"], "standard");
    for (i, choice) in choices.iter().enumerate() {
        let id = body["powerfleet"]["job_ids"][i].as_str().unwrap();
        let stored = job(&base, id).await;
        assert_eq!(stored["result"]["problem_id"], (i / 2).to_string());
        assert_eq!(stored["result"]["stream"], i % 2);
        assert_eq!(choice["token_ids"], stored["result"]["tokens"]);
        // Each prompt's answer: 6 after "double 3 ?", 8 after "double 4 ?" (the model's only
        // continuations end with the right one or a wrong one, then EOS).
        assert_eq!(choice["finish_reason"], "stop");
    }
    assert_eq!(body["usage"]["prompt_tokens"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_text_after_sampling_and_the_result_records_it() {
    let (_fleet, serve, base) = fleet_with_api(&[]).await;
    // Every completion of "double 4 ?" starts with "ok", surely.
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({
            "model": "toy:suite-double",
            "prompt": "double 4 ?",
            "stop": ["slow", "fast"],
            "seed": 1,
            "logprobs": 0,
            "return_token_ids": true,
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", serve.log());
    let choice = &body["choices"][0];
    assert_eq!(choice["text"], "ok ", "{body}");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["powerfleet"]["stop_applied_after_sampling"], true);
    // "ok" and the pivot word: the stop string is in the second token.
    assert_eq!(choice["token_ids"].as_array().unwrap().len(), 2);
    assert_eq!(
        choice["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let id = body["powerfleet"]["job_ids"][0].as_str().unwrap();
    let stored = job(&base, id).await;
    let result = &stored["result"];
    let hit = &result["stop"];
    assert!(hit["stop"] == "slow" || hit["stop"] == "fast", "{result}");
    assert_eq!(hit["text_bytes"], 3);
    assert_eq!(hit["tokens"], 2);
    // The sample itself is kept whole: the chain's tokens, EOS included.
    assert!(result["tokens"].as_array().unwrap().len() > 2, "{result}");
    assert_eq!(result["ends_with_eos"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_after_redis_lost_its_data_is_answered() {
    let (fleet, serve, base) = fleet_with_api(&[]).await;
    let request = json!({"model": "toy:tiny", "prompt": "a", "max_tokens": 3, "seed": 1});
    let (status, _, body) = post(&base, "/v1/completions", &request).await;
    assert_eq!(status, 200, "{body}\n{}", serve.log());
    // Every stream and consumer group goes, with workers, collector and serve running.
    let client = redis::Client::open(fleet.redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    // The workers' registrations went too: until their next heartbeat registers them again, a
    // request is refused with 503 (no live worker serves the model) rather than left waiting.
    let deadline = Instant::now() + PATIENCE;
    let body = loop {
        let (status, _, body) = post(&base, "/v1/completions", &request).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}\n{}\n{}", serve.log(), fleet.logs());
        assert!(Instant::now() < deadline, "{body}\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["choices"].as_array().unwrap().len(), 1, "{body}");
    // The results go on being stored: the collector recreated its group.
    let id = body["powerfleet"]["job_ids"][0].as_str().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while job(&base, id).await["status"] != "completed"
        || fleet
            .store()
            .await
            .job(id.parse().unwrap())
            .await
            .unwrap()
            .is_none()
    {
        assert!(Instant::now() < deadline, "{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_the_whole_answer_as_one_chunk_then_done() {
    let (_fleet, _serve, base) = fleet_with_api(&[]).await;
    let response = client()
        .post(format!("{base}/v1/completions"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "model": "toy:pivot",
            "prompt": [],
            "seed": 2,
            "stream": true,
            "stream_options": {"include_usage": true},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    let first: Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(first["choices"].as_array().unwrap().len(), 1);
    let usage: Value = serde_json::from_str(events[1]).unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_be_served_get_a_4xx_in_openai_shape_naming_the_field() {
    let (_fleet, _serve, base) = fleet_with_api(&[]).await;
    let base_body = json!({"model": "toy:pivot", "prompt": "a"});
    let with = |extra: Value| {
        let mut body = base_body.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "/v1/completions",
            with(json!({"temperature": 0.5})),
            400,
            "temperature",
            "would silently change that target",
        ),
        (
            "/v1/completions",
            with(json!({"top_p": 0.9})),
            400,
            "top_p",
            "top_p must be 1",
        ),
        (
            "/v1/completions",
            with(json!({"echo": true, "max_tokens": 0, "logprobs": 1})),
            400,
            "echo",
            "loglikelihood",
        ),
        (
            "/v1/completions",
            with(json!({"max_tokens": 0})),
            400,
            "max_tokens",
            "loglikelihood",
        ),
        (
            "/v1/completions",
            with(json!({"logprobs": 5})),
            400,
            "logprobs",
            "logprobs must be 0",
        ),
        (
            "/v1/completions",
            with(json!({"n": 0})),
            400,
            "n",
            "n must be between 1 and 64",
        ),
        (
            "/v1/completions",
            with(json!({"best_of": 3})),
            400,
            "best_of",
            "best_of must equal n",
        ),
        (
            "/v1/completions",
            with(json!({"frobnicate": 1})),
            400,
            "frobnicate",
            "unknown field \"frobnicate\"",
        ),
        // Test code, or a dataset of programming problems, is refused for the code policy.
        (
            "/v1/completions",
            with(
                json!({"prompt": "def f():\n", "test": "import os\nos.system('touch /tmp/pwned')", "entry_point": "f"}),
            ),
            400,
            "entry_point",
            "runs no code a request brings",
        ),
        (
            "/v1/completions",
            with(json!({"test": "def check(c): pass"})),
            400,
            "test",
            "serve --dataset NAME=PATH",
        ),
        (
            "/v1/completions",
            with(
                json!({"bench": {"records": [{"task_id": "t", "prompt": "def f():\n", "test": "pass", "entry_point": "f"}]}}),
            ),
            400,
            "bench",
            "runs no code a request brings",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "toy:pivot", "messages": [{"role": "user", "content": "hi"}], "dataset": "humaneval"}),
            400,
            "dataset",
            "POST /v1/jobs",
        ),
        (
            "/v1/completions",
            with(json!({"power_sampling": {"alpha": -1}})),
            400,
            "power_sampling",
            "alpha",
        ),
        (
            "/v1/completions",
            with(json!({"power_sampling": {"n_mcmcs": 3}})),
            400,
            "power_sampling",
            "unknown field `n_mcmcs`",
        ),
        (
            "/v1/completions",
            with(json!({"n": "two"})),
            400,
            "n",
            "n: invalid type",
        ),
        (
            "/v1/completions",
            json!({"model": "toy:pivot"}),
            400,
            "prompt",
            "missing field `prompt`",
        ),
        (
            "/v1/completions",
            with(json!({"model": "http://elsewhere:8000"})),
            400,
            "model",
            "is not allowed",
        ),
        (
            "/v1/completions",
            with(json!({"model": "toy:tiny?delay_ms=1"})),
            400,
            "model",
            "is not allowed",
        ),
        (
            "/v1/completions",
            with(json!({"prompt": "no such words"})),
            422,
            "",
            "unknown token \"no\" in the prompt",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "toy:pivot", "messages": [{"role": "user", "content": "a"}]}),
            422,
            "model",
            "toy models have no chat template",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": [{"role": "wizard", "content": "a"}]}),
            422,
            "",
            "messages[0].role must be one of system, user, assistant",
        ),
    ];
    for (path, body, status, param, needle) in cases {
        let (got, _, answer) = post(&base, path, &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let error = &answer["error"];
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{body} -> {answer}"
        );
        assert!(error["type"].is_string(), "{answer}");
        if !param.is_empty() {
            assert_eq!(error["param"], param, "{body} -> {answer}");
        }
    }
    // Without the token: 401, in OpenAI's shape too.
    let response = client()
        .post(format!("{base}/v1/completions"))
        .json(&base_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcmc_on_a_hosted_model_and_oversized_bodies_are_refused_before_any_job_exists() {
    let (fleet, _serve, base) = fleet_with_api(&[
        "--model",
        "gpt=openai+https://api.openai.com/v1?model=gpt-4o-mini",
    ])
    .await;
    let (status, correlation, body) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["param"], "power_sampling.method");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hosted chat API"),
        "{body}"
    );
    assert!(correlation.is_none());
    let (status, _, body) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}],
            "power_sampling": {"method": "power-lookahead"}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["param"], "power_sampling.method");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("method power-lookahead cannot run on it"),
        "{body}"
    );
    let big = "a ".repeat(600_000);
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": "toy:pivot", "prompt": big}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes"),
        "{body}"
    );
    // Nothing reached the queue.
    let queue = fleet.queue().await;
    assert_eq!(queue.stream_lengths().await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_the_served_names_and_the_builtin_toys() {
    let (mut fleet, _serve, base) = fleet_with_api(&["--model", "qwen", "--model", "gemma"]).await;
    // A live worker serves qwen; gemma is configured but nobody serves it now.
    fleet.spawn_worker(&["--model", "qwen=toy:tiny"]);
    let body: Value = common::get_json(&format!("{base}/v1/models"), Some(TOKEN)).await;
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "qwen");
    assert!(!ids.contains(&"gemma"), "{ids:?}");
    for toy in powerfleet_models::builtin::names() {
        assert!(ids.contains(&format!("toy:{toy}").as_str()), "{ids:?}");
    }
}

/// Waits until every job under `id` has finished; their tally.
async fn settled(queue: &powerfleet_queue::Queue, id: &CorrelationId) -> powerfleet_queue::Tally {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(t) = queue
            .tally(powerfleet_queue::TallyOf::Correlation(id))
            .await
            .unwrap()
            && t.finished == t.total
        {
            return t;
        }
        assert!(Instant::now() < deadline, "jobs of {id} did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_or_times_out_cancels_its_jobs() {
    let (fleet, serve, base) =
        fleet_with_api(&["--allow-model-references", "--completion-timeout", "3s"]).await;
    let queue = fleet.queue().await;
    // Jobs of many slow steps: far longer than either wait below.
    let slow = json!({
        "model": "toy:tiny?delay_ms=20",
        "prompt": [],
        "n": 2,
        "power_sampling": {"n_mcmc": 1000, "block_size": 2, "max_new_tokens": 40, "finish_on_eos": false},
    });
    // 1. The client gives up after one second and closes the connection.
    let gone = CorrelationId::generate();
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .post(format!("{base}/v1/completions"))
        .bearer_auth(TOKEN)
        .header("x-powerfleet-correlation-id", gone.as_str())
        .json(&slow)
        .send()
        .await;
    if let Ok(early) = answer {
        let status = early.status();
        panic!(
            "the request was answered within the client's 1 s ({status}: {}):\n{}",
            early.text().await.unwrap_or_default(),
            serve.log()
        );
    }
    let tally = settled(&queue, &gone).await;
    assert_eq!(tally.total, 2, "{tally:?}");
    assert_eq!(
        tally.by_status.get("cancelled"),
        Some(&2),
        "{tally:?}\n{}",
        serve.log()
    );

    // 2. The server's completion timeout (3 s) passes: 408, and the jobs are cancelled.
    let waited = CorrelationId::generate();
    let started = Instant::now();
    let response = client()
        .post(format!("{base}/v1/completions"))
        .bearer_auth(TOKEN)
        .header("x-powerfleet-correlation-id", waited.as_str())
        .json(&slow)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    assert!(started.elapsed() >= Duration::from_secs(3));
    // In OpenAI's shape, naming the completion timeout rather than the body.
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], "completion_timeout", "{body}");
    assert!(
        error["type"].is_string() && error["param"].is_null(),
        "{body}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("completion timeout of 3 s") && !message.contains("body"),
        "{message}"
    );
    let tally = settled(&queue, &waited).await;
    assert_eq!(tally.by_status.get("cancelled"), Some(&2), "{tally:?}");

    // 3. A correlation id that already has jobs is refused.
    let response = client()
        .post(format!("{base}/v1/completions"))
        .bearer_auth(TOKEN)
        .header("x-powerfleet-correlation-id", waited.as_str())
        .json(&json!({"model": "toy:pivot", "prompt": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["param"], "x-powerfleet-correlation-id",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_are_all_answered() {
    let (_fleet, serve, base) = fleet_with_api(&[]).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                post(
                    &base,
                    "/v1/completions",
                    &json!({"model": "toy:pivot", "prompt": [], "seed": i, "power_sampling": {"n_mcmc": 2}}),
                )
                .await
            })
        })
        .collect();
    let mut correlations = std::collections::HashSet::new();
    for task in tasks {
        let (status, correlation, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", serve.log());
        assert_eq!(body["choices"].as_array().unwrap().len(), 1);
        correlations.insert(correlation.unwrap());
    }
    assert_eq!(correlations.len(), 50, "one correlation id per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_requests_naming_one_new_correlation_id_exactly_one_runs() {
    let (fleet, serve, base) = fleet_with_api(&[]).await;
    let queue = fleet.queue().await;
    for round in 0..3 {
        let id = CorrelationId::generate();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(12));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (base, id, barrier) = (base.clone(), id.clone(), barrier.clone());
                tokio::spawn(async move {
                    let request = client()
                        .post(format!("{base}/v1/completions"))
                        .bearer_auth(TOKEN)
                        .header("x-powerfleet-correlation-id", id.as_str())
                        .json(&json!({"model": "toy:pivot", "prompt": [], "n": 2, "power_sampling": {"n_mcmc": 2}}));
                    barrier.wait().await;
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            if status == 409 {
                assert_eq!(
                    body["error"]["param"], "x-powerfleet-correlation-id",
                    "{body}"
                );
            } else {
                assert_eq!(status, 200, "round {round}: {body}\n{}", serve.log());
                assert_eq!(body["choices"].as_array().unwrap().len(), 2, "{body}");
            }
            statuses.push(status);
        }
        assert_eq!(
            statuses.iter().filter(|&&s| s == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|&&s| s == 409).count(), 11);
        let tally = settled(&queue, &id).await;
        assert_eq!(tally.total, 2, "only the one request's jobs: {tally:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_own_jobs_and_no_others_of_its_correlation_id() {
    let (fleet, serve, base) = fleet_with_api(&["--allow-model-references"]).await;
    let queue = fleet.queue().await;
    let slow =
        json!({"n_mcmc": 1000, "block_size": 2, "max_new_tokens": 40, "finish_on_eos": false});
    let shared = CorrelationId::generate();
    // The completion takes the correlation id and waits; its client gives up after 3 s.
    let completion = {
        let (base, shared, slow) = (base.clone(), shared.clone(), slow.clone());
        tokio::spawn(async move {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap()
                .post(format!("{base}/v1/completions"))
                .bearer_auth(TOKEN)
                .header("x-powerfleet-correlation-id", shared.as_str())
                .json(&json!({"model": "toy:tiny?delay_ms=20", "prompt": [], "n": 2, "power_sampling": slow}))
                .send()
                .await
        })
    };
    // Meanwhile the job API adds jobs of its own under the same correlation id.
    let deadline = Instant::now() + PATIENCE;
    while queue.correlation_jobs(&shared).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the completion submitted nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, receipt) = post(
        &base,
        "/v1/jobs",
        &json!({"model": "toy:tiny?delay_ms=20", "prompt": "a", "chains": 2, "correlation_id": shared, "config": {"method": "power", "n_mcmc": 1000, "block_size": 2, "max_new_tokens": 40, "finish_on_eos": false}}),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    let others: Vec<powerfleet_jobs::JobId> =
        serde_json::from_value(receipt["job_ids"].clone()).unwrap();
    assert!(completion.await.unwrap().is_err(), "the client gave up");
    // The completion's two jobs are cancelled; the job API's two are not.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let t = queue
            .tally(powerfleet_queue::TallyOf::Correlation(&shared))
            .await
            .unwrap()
            .unwrap();
        if t.by_status.get("cancelled") == Some(&2) {
            break;
        }
        assert!(Instant::now() < deadline, "{t:?}\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &others {
        let state = queue.job_state(*id).await.unwrap().unwrap();
        assert!(
            !state.status.is_final() && !state.cancel_requested,
            "job {id} of the job API was touched: {:?}",
            state.status
        );
        powerfleet_fleet::control::cancel_job(&queue, *id)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_beyond_the_servers_slots_get_503_with_retry_after() {
    let (_fleet, serve, base) = fleet_with_api(&[
        "--allow-model-references",
        "--openai-max-waiting",
        "2",
        "--completion-timeout",
        "4s",
    ])
    .await;
    let slow = json!({"model": "toy:tiny?delay_ms=20", "prompt": [], "power_sampling": {"n_mcmc": 1000, "block_size": 2, "max_new_tokens": 40, "finish_on_eos": false}});
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (base, slow) = (base.clone(), slow.clone());
            tokio::spawn(async move { post(&base, "/v1/completions", &slow).await })
        })
        .collect();
    // Both slots are taken once both completions' jobs exist.
    let deadline = Instant::now() + PATIENCE;
    while serve.log().matches("openai completion submitted").count() < 2 {
        assert!(Instant::now() < deadline, "{}", serve.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = client()
        .post(format!("{base}/v1/completions"))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "toy:pivot", "prompt": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("2")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("(2, serve --openai-max-waiting)"),
        "{message}"
    );
    // The waiting ones end (408 at the completion timeout) and give their slots back.
    for task in waiting {
        assert_eq!(task.await.unwrap().0, 408);
    }
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": "toy:pivot", "prompt": []}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
