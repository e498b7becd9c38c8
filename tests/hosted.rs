//! Hosted chat APIs against a fake OpenAI-compatible server: single-sample methods run with the
//! method's temperature, MCMC methods only with the explicit fallback (recorded in the result),
//! and the API key never appears in a log.

use crate::common;

use axum::http::{Method as HttpMethod, StatusCode};
use axum::response::IntoResponse;
use common::{BIN, Fleet, PATIENCE, StubServer, batch};
use powerfleet_fleet::producer::{Submission, submit};
use powerfleet_jobs::{JobStatus, Prompt};
use powerfleet_sampler::{Method, SamplerConfig};
use serde_json::json;

const KEY: &str = "sk-test-planted-secret-4f2a";

async fn fake_openai() -> String {
    let server = StubServer::start(|r| {
        if r.method != HttpMethod::POST || r.path() != "/v1/chat/completions" {
            return StatusCode::NOT_FOUND.into_response();
        }
        if r.header("authorization") != Some(format!("Bearer {KEY}").as_str()) {
            return (StatusCode::UNAUTHORIZED, "bad key").into_response();
        }
        let Some(body) = r.json() else {
            return (StatusCode::BAD_REQUEST, "not JSON").into_response();
        };
        let t = body["temperature"].as_f64().unwrap();
        axum::Json(
            json!({"choices": [{"index": 0, "message": {"role": "assistant",
            "content": format!("sampled at temperature {t}")}, "finish_reason": "stop"}]}),
        )
        .into_response()
    })
    .await;
    format!(
        "openai+http://{}/v1?model=fake-chat&key_env=PF_TEST_OPENAI_KEY",
        server.addr
    )
}

fn submission(model: &str, methods: &[Method], fallback: bool) -> Submission {
    batch(model)
        .config(SamplerConfig {
            max_new_tokens: 64,
            ..SamplerConfig::new(Method::Power)
        })
        .methods(methods)
        .problem("q1", Prompt::Text("What is 2+2?".into()))
        .fallback_single_sample(fallback)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_samples_and_the_explicit_fallback_on_a_hosted_api() {
    let model = fake_openai().await;
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker_env(&[], &[("PF_TEST_OPENAI_KEY", KEY)]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;

    let err = submit(&queue, &submission(&model, &[Method::Power], false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot continue a completion from a token prefix"),
        "{err}"
    );
    assert!(err.contains("--fallback-single-sample"), "{err}");

    let singles = submit(
        &queue,
        &submission(&model, &[Method::Standard, Method::LowTemp], false),
    )
    .await
    .unwrap();
    let fallback = submit(&queue, &submission(&model, &[Method::Power], true))
        .await
        .unwrap();
    let results = fleet
        .wait_for_results(singles.batch_id.unwrap(), 2, PATIENCE)
        .await;
    for r in &results {
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        let want = if r.method == Method::Standard {
            "sampled at temperature 1"
        } else {
            "sampled at temperature 0.25"
        };
        assert_eq!(r.text.as_deref(), Some(want));
        assert!(
            r.tokens.is_empty() && r.log_p.is_none(),
            "a hosted API gives no tokens or log p"
        );
        assert!(
            matches!(
                &r.exactness,
                Some(powerfleet_jobs::Exactness::Hosted { .. })
            ),
            "{:?}",
            r.exactness
        );
        assert!(
            r.exactness
                .as_ref()
                .unwrap()
                .to_string()
                .contains("no log-probabilities")
        );
        assert!(r.fallback.is_none());
    }
    let fell_back = fleet
        .wait_for_results(fallback.batch_id.unwrap(), 1, PATIENCE)
        .await;
    assert_eq!(fell_back[0].status, JobStatus::Completed);
    assert_eq!(
        fell_back[0].text.as_deref(),
        Some("sampled at temperature 0.25")
    );
    assert!(
        fell_back[0]
            .fallback
            .as_deref()
            .unwrap()
            .contains("ran as one sample at the proposal temperature 0.25")
    );
    assert!(
        !fleet.logs().contains(KEY),
        "the API key never appears in a log"
    );
}
