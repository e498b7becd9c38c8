//! Faults from a fake llama-server of our own: 5xx, timeouts, truncated or malformed JSON,
//! missing log-probabilities, inconsistent token counts, 4xx, and a dead server among healthy ones.
//! Every fault is a clear error of the right kind; nothing yields a wrong generation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use powerfleet_backends::client::BREAKER_THRESHOLD;
use powerfleet_backends::{BackendError, HttpModel, Reference, parse};
use powerfleet_sampler::OwnedRequest;
use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Status500,
    Status400,
    Slow,
    Truncated,
    MissingLogprobs,
    TokenCountMismatch,
}

/// A fake llama-server answering `/completion` according to `mode`; counts requests.
async fn fake(mode: Mode) -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/completion",
        post(move |body: axum::Json<Value>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let n = body["n_predict"].as_u64().unwrap_or(1) as usize;
                let entry = json!({"id": 5, "token": "a", "logprob": -0.1,
                    "top_logprobs": [{"id": 5, "token": "a", "logprob": -0.1}, {"id": 6, "token": "b", "logprob": -2.4}]});
                let ok = json!({"content": "a".repeat(n), "tokens": vec![5; n],
                    "completion_probabilities": vec![entry.clone(); n], "stop_type": "limit"});
                match mode {
                    Mode::Ok => axum::Json(ok).into_response(),
                    Mode::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "slot unavailable").into_response(),
                    Mode::Status400 => (StatusCode::BAD_REQUEST, r#"{"error":{"message":"token id out of range"}}"#).into_response(),
                    Mode::Slow => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        axum::Json(ok).into_response()
                    }
                    Mode::Truncated => {
                        let text = ok.to_string();
                        (StatusCode::OK, text[..text.len() / 2].to_string()).into_response()
                    }
                    Mode::MissingLogprobs => axum::Json(json!({"content": "a", "tokens": [5],
                        "completion_probabilities": [{"id": 5, "token": "a"}], "stop_type": "limit"})).into_response(),
                    Mode::TokenCountMismatch => axum::Json(json!({"content": "aa", "tokens": [5, 6, 7],
                        "completion_probabilities": [entry], "stop_type": "limit"})).into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

fn model(urls: &[&str], options: &str) -> HttpModel {
    let reference = format!("llamacpp+{}{options}", urls.join(","));
    match parse(&reference).unwrap() {
        Reference::Http(h) => HttpModel::new(h),
        other => panic!("{other:?}"),
    }
}

fn request(max_tokens: u32) -> OwnedRequest {
    OwnedRequest {
        prefix: vec![1, 2, 3],
        prompt_len: 3,
        max_tokens,
        temperature: 0.5,
        top_k: Some(2),
        seed: 7,
    }
}

#[tokio::test]
async fn a_healthy_answer_becomes_an_exact_generation() {
    let (url, _) = fake(Mode::Ok).await;
    let g = model(&[&url], "").generate(&request(3), 0).await.unwrap();
    assert_eq!(g.tokens, vec![5, 5, 5]);
    assert_eq!(g.log_p, vec![-0.1; 3]);
    let z = (-0.1f64 / 0.5).exp() + (-2.4f64 / 0.5).exp();
    assert!((g.log_q[0] - ((-0.1f64 / 0.5).exp() / z).ln()).abs() < 1e-12);
    assert!(!g.eos);
}

#[tokio::test]
async fn faults_are_errors_of_the_right_kind() {
    for (mode, transient, needle) in [
        (Mode::Status500, true, "500"),
        (Mode::Slow, true, "timed out"),
        (Mode::Truncated, true, "malformed JSON"),
        (Mode::MissingLogprobs, true, "no `top_logprobs`"),
        (Mode::TokenCountMismatch, true, "disagree"),
        (Mode::Status400, false, "400"),
    ] {
        let (url, _) = fake(mode).await;
        let err = model(&[&url], "?timeout_s=1")
            .generate(&request(2), 0)
            .await
            .unwrap_err();
        assert_eq!(err.is_transient(), transient, "{err}");
        assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
    }
}

#[tokio::test]
async fn a_failing_server_is_skipped_and_chains_move_to_a_healthy_one() {
    let (bad, bad_hits) = fake(Mode::Status500).await;
    let (good, good_hits) = fake(Mode::Ok).await;
    let m = model(&[&bad, &good], "");
    // Affinity 0 prefers the bad server: its failures are transient errors until the breaker trips.
    for _ in 0..BREAKER_THRESHOLD {
        assert!(matches!(
            m.generate(&request(1), 0).await,
            Err(BackendError::Transient(_))
        ));
    }
    for _ in 0..10 {
        m.generate(&request(1), 0)
            .await
            .expect("the healthy server answers");
    }
    assert_eq!(
        bad_hits.load(Ordering::SeqCst),
        u64::from(BREAKER_THRESHOLD),
        "the open circuit skips it"
    );
    assert_eq!(good_hits.load(Ordering::SeqCst), 10);
    // Affinity 1 goes to the healthy server from the start.
    m.generate(&request(1), 1).await.unwrap();
    assert_eq!(good_hits.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn when_every_server_fails_the_error_says_so() {
    let (bad, _) = fake(Mode::Status500).await;
    let m = model(&[&bad], "");
    for _ in 0..BREAKER_THRESHOLD {
        let _ = m.generate(&request(1), 0).await;
    }
    let err = m.generate(&request(1), 0).await.unwrap_err();
    assert!(err.is_transient());
    assert!(err.to_string().contains("all 1 servers"), "{err}");
}
