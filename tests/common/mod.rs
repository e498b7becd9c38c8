//! What the end-to-end tests share that must be compiled into the integration-test binary: the
//! path of the `powerfleet` binary, which only an integration test of this package can name.
//! Everything else comes from `powerfleet-testkit`.

pub use powerfleet_testkit::*;

use powerfleet_sampler::{Method, SamplerConfig};

/// The `powerfleet` binary under test, for [`Fleet::new`] and direct runs.
pub const BIN: &str = env!("CARGO_BIN_EXE_powerfleet");

/// `GET url` (with `token` as its bearer token, if any), the answer's body as JSON.
pub async fn get_json(url: &str, token: Option<&str>) -> serde_json::Value {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// `POST url` with the JSON `body` (and `token` as its bearer token, if any), the answer's body
/// as JSON.
pub async fn post_json(
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> serde_json::Value {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// `127.0.0.1:PORT` on a free port, for a role's `--metrics-listen` or a server's address.
pub fn free_addr() -> String {
    format!(
        "127.0.0.1:{}",
        powerfleet_queue::local::free_port().unwrap()
    )
}

/// The metrics a role serves at `http://{addr}/metrics`, as text.
pub async fn metrics_text(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Submits `problems` problems on `toy:tiny` to `fleet` and waits for their results.
pub async fn run_tiny_batch(fleet: &Fleet, problems: usize) {
    let queue = fleet.queue().await;
    let receipt = submit_batch(&queue, &batch("toy:tiny").problems(problems).build()).await;
    fleet
        .wait_for_results(receipt.batch_id.unwrap(), problems, PATIENCE)
        .await;
}

/// A short power-sampling configuration: 3 MCMC steps over blocks of 2 tokens, at most 6 new
/// tokens.
pub fn short_power_config() -> SamplerConfig {
    SamplerConfig {
        n_mcmc: 3,
        block_size: 2,
        max_new_tokens: 6,
        ..SamplerConfig::new(Method::Power)
    }
}

/// Worker flags that give up on a model server soon: 3 s of patience, waits of at most 1 s.
pub const IMPATIENT: [&str; 4] = ["--model-patience", "3s", "--max-wait", "1s"];

/// `submit` flags for methods power and standard, 2 seeds and 2 MCMC steps, with blocks of
/// `block_size` tokens and at most `max_new_tokens` new tokens.
pub fn two_methods_two_seeds<'a>(block_size: &'a str, max_new_tokens: &'a str) -> [&'a str; 10] {
    [
        "--methods",
        "power,standard",
        "--seeds",
        "2",
        "--n-mcmc",
        "2",
        "--block-size",
        block_size,
        "--max-new-tokens",
        max_new_tokens,
    ]
}

/// The fields of a queued job's state hash as the earlier enqueue script wrote them: its
/// specification `spec_json`, status queued, fence 0, no delivery, its stream `entry` and its
/// correlation id, then `more`.
pub fn queued_job_state<'a>(
    spec_json: &'a str,
    entry: &'a str,
    correlation_id: &'a str,
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("spec", spec_json),
        ("status", "queued"),
        ("fence", "0"),
        ("deliveries", "0"),
        ("entry", entry),
        ("correlation_id", correlation_id),
    ];
    fields.extend_from_slice(more);
    fields
}
