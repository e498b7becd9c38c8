//! Faults from a fake llama-server of our own: 5xx, timeouts, truncated or malformed JSON,
//! missing log-probabilities, inconsistent token counts, 4xx, a dead server among healthy ones,
//! sampler settings the server overrode, a context that filled up, server-side stop strings, and
//! the start-up probe's refusals. Every fault is a clear error of the right kind; nothing yields
//! a wrong generation.
//!
//! The fake answers like llama-server (docs/llama-server.md): `/props`, `/tokenize`, and
//! `/completion` echoing the request's sampler settings in `generation_settings`. Its faults are
//! armed after the start-up probe, which needs a healthy server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use powerfleet_backends::client::BREAKER_THRESHOLD;
use powerfleet_backends::{BackendError, HttpModel, ModelRef, parse};
use powerfleet_sampler::OwnedRequest;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Status500,
    Status503,
    Status400,
    Slow,
    Truncated,
    MissingLogprobs,
    TokenCountMismatch,
    /// Echoes top_p 0.95: the server's default won over the request.
    OverriddenSetting,
    /// `truncated: true`: the slot's context filled up.
    ContextFull,
    /// Stopped at a stop string the request did not ask for (`--reverse-prompt`).
    StopWord,
    /// No `generation_settings` in the answer.
    NoEcho,
    /// Log-probabilities of the tempered distribution (a proxy turning post_sampling_probs on).
    Processed,
    /// Samples from the top-K without the temperature (a sampler chain the request did not set).
    NoTemperature,
    /// Stops at EOS with token 7, which is not an end-of-generation token of the model.
    WrongEos,
    /// Log-probabilities that move by a few 1e-7 from one request to the next, as a server's
    /// batching moves them: the probe records the server as not deterministic.
    Noisy,
}

/// Raw log-probabilities the fake reports at every position: token 5, then 6, then EOS (2).
const TOP: [(u32, f64); 3] = [(5, -0.1), (6, -2.5), (2, -4.5)];

struct Fake {
    url: String,
    /// Generation requests answered while armed.
    hits: Arc<AtomicU64>,
    armed: Arc<AtomicBool>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Fake {
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

fn log_z(temperature: f64, k: usize) -> f64 {
    crate::common::log_z(TOP.iter().take(k).map(|&(_, lp)| lp), temperature)
}

/// The `/completion` answer of a healthy llama-server to `body`.
fn healthy(body: &Value) -> Value {
    let n = body["n_predict"].as_u64().unwrap_or(1) as usize;
    let k = (body["n_probs"].as_u64().unwrap_or(0) as usize).min(TOP.len());
    let temperature = body["temperature"].as_f64().unwrap_or(1.0);
    let post = body["post_sampling_probs"] == true;
    let list: Vec<Value> = TOP
        .iter()
        .take(k)
        .map(|&(id, lp)| {
            if post {
                json!({"id": id, "token": "x", "bytes": [120], "prob": (lp / temperature - log_z(temperature, k)).exp()})
            } else {
                json!({"id": id, "token": "x", "bytes": [120], "logprob": lp})
            }
        })
        .collect();
    let entry = if post {
        json!({"id": 5, "token": "a", "bytes": [97], "prob": 0.9, "top_probs": list})
    } else {
        json!({"id": 5, "token": "a", "bytes": [97], "logprob": -0.1, "top_logprobs": list})
    };
    let mut settings = json!({});
    for (key, value) in body.as_object().unwrap() {
        if !["prompt", "cache_prompt", "return_tokens", "n_cmpl"].contains(&key.as_str()) {
            settings[key] = value.clone();
        }
    }
    settings["stop"] = json!([]);
    settings["speculative.types"] = json!("none");
    if body["ignore_eos"] == true {
        settings["logit_bias"] = json!([{"bias": null, "token": 2}]);
    }
    let mut answer = json!({"content": "a".repeat(n), "tokens": vec![5; n], "stop": true,
        "model": "tiny", "truncated": false, "stop_type": "limit", "stopping_word": "",
        "generation_settings": settings});
    if k > 0 {
        answer["completion_probabilities"] = json!(vec![entry; n]);
    }
    answer
}

/// A fake llama-server answering `/completion` according to `mode` once armed.
async fn fake(mode: Mode) -> Fake {
    let hits = Arc::new(AtomicU64::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (counter, is_armed, log) = (hits.clone(), armed.clone(), bodies.clone());
    let answered = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/props",
            get(|| async {
                axum::Json(json!({"default_generation_settings": {"n_ctx": 256, "params": {}},
                    "total_slots": 4, "model_alias": "tiny", "model_path": "/models/tiny.gguf",
                    "bos_token": "<s>", "eos_token": "</s>", "build_info": "b1-fake"}))
            }),
        )
        .route(
            "/tokenize",
            post(|body: axum::Json<Value>| async move {
                let tokens = if body["content"] == "</s>" { vec![2] } else { vec![1, 55, 75, 72] };
                axum::Json(json!({"tokens": tokens}))
            }),
        )
        .route(
            "/completion",
            post(move |body: axum::Json<Value>| {
                let (counter, armed, log) = (counter.clone(), is_armed.clone(), log.clone());
                let nth = answered.fetch_add(1, Ordering::SeqCst);
                async move {
                    let body = body.0;
                    let mode = if armed.load(Ordering::SeqCst) {
                        counter.fetch_add(1, Ordering::SeqCst);
                        log.lock().unwrap().push(body.clone());
                        mode
                    } else {
                        match mode {
                            // Probe-time faults.
                            Mode::Processed | Mode::NoTemperature | Mode::Noisy => mode,
                            _ => Mode::Ok,
                        }
                    };
                    let mut ok = healthy(&body);
                    let t = body["temperature"].as_f64().unwrap_or(1.0);
                    match mode {
                        Mode::Ok => axum::Json(ok).into_response(),
                        Mode::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "unordered_map::at").into_response(),
                        Mode::Status503 => (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#).into_response(),
                        Mode::Status400 => (StatusCode::BAD_REQUEST, r#"{"error":{"message":"token id out of range"}}"#).into_response(),
                        Mode::Slow => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            axum::Json(ok).into_response()
                        }
                        Mode::Truncated => {
                            let text = ok.to_string();
                            (StatusCode::OK, text[..text.len() / 2].to_string()).into_response()
                        }
                        Mode::MissingLogprobs => {
                            for e in ok["completion_probabilities"].as_array_mut().unwrap() {
                                e.as_object_mut().unwrap().remove("top_logprobs");
                            }
                            axum::Json(ok).into_response()
                        }
                        Mode::TokenCountMismatch => {
                            ok["tokens"] = json!([5, 6, 7]);
                            axum::Json(ok).into_response()
                        }
                        Mode::OverriddenSetting => {
                            ok["generation_settings"]["top_p"] = json!(0.949999988079071);
                            axum::Json(ok).into_response()
                        }
                        Mode::ContextFull => {
                            ok["truncated"] = json!(true);
                            axum::Json(ok).into_response()
                        }
                        Mode::StopWord => {
                            ok["stop_type"] = json!("word");
                            ok["stopping_word"] = json!("User:");
                            axum::Json(ok).into_response()
                        }
                        Mode::NoEcho => {
                            ok.as_object_mut().unwrap().remove("generation_settings");
                            axum::Json(ok).into_response()
                        }
                        Mode::Noisy => {
                            let probs = ok["completion_probabilities"].as_array_mut();
                            for e in probs.into_iter().flatten() {
                                for c in e["top_logprobs"].as_array_mut().into_iter().flatten() {
                                    let lp = c["logprob"].as_f64().unwrap();
                                    c["logprob"] = json!(lp - (nth % 3) as f64 * 1e-7);
                                }
                            }
                            axum::Json(ok).into_response()
                        }
                        Mode::Processed => {
                            let probs = ok["completion_probabilities"].as_array_mut();
                            for e in probs.into_iter().flatten() {
                                for c in e["top_logprobs"].as_array_mut().into_iter().flatten() {
                                    let lp = c["logprob"].as_f64().unwrap();
                                    c["logprob"] = json!(lp / t - log_z(t, TOP.len()));
                                }
                            }
                            axum::Json(ok).into_response()
                        }
                        Mode::NoTemperature => {
                            if body["post_sampling_probs"] == true {
                                let probs = ok["completion_probabilities"].as_array_mut();
                                for e in probs.into_iter().flatten() {
                                    for c in e["top_probs"].as_array_mut().unwrap() {
                                        let id = c["id"].as_u64().unwrap() as u32;
                                        let lp = TOP.iter().find(|(t, _)| *t == id).unwrap().1;
                                        c["prob"] = json!(lp.exp() / TOP.iter().map(|(_, l)| l.exp()).sum::<f64>());
                                    }
                                }
                            }
                            axum::Json(ok).into_response()
                        }
                        Mode::WrongEos => {
                            let n = ok["tokens"].as_array().unwrap().len();
                            ok["tokens"][n - 1] = json!(7);
                            ok["completion_probabilities"][n - 1]["id"] = json!(7);
                            ok["completion_probabilities"][n - 1]["top_logprobs"][0]["id"] = json!(7);
                            ok["stop_type"] = json!("eos");
                            axum::Json(ok).into_response()
                        }
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fake {
        url: format!("http://{addr}"),
        hits,
        armed,
        bodies,
    }
}

fn model(urls: &[&str], options: &str) -> HttpModel {
    let reference = format!("llamacpp+{}{options}", urls.join(","));
    match parse(&reference).unwrap() {
        ModelRef::Http(h) => HttpModel::new(h),
        other => panic!("{other:?}"),
    }
}

/// A model of the fakes, probed while they are healthy; then their faults are armed.
async fn probed(fakes: &[&Fake], options: &str) -> HttpModel {
    let urls: Vec<&str> = fakes.iter().map(|f| f.url.as_str()).collect();
    let m = model(&urls, options);
    m.probe().await.expect("healthy fakes pass the probe");
    for f in fakes {
        f.arm();
    }
    m
}

fn request(max_tokens: u32) -> OwnedRequest {
    crate::common::request(max_tokens, Some(2), 7)
}

#[tokio::test]
async fn a_healthy_answer_becomes_an_exact_generation() {
    let f = fake(Mode::Ok).await;
    let m = probed(&[&f], "").await;
    let g = m.generate(&request(3), 0).await.unwrap();
    assert_eq!(g.tokens, vec![5, 5, 5]);
    assert_eq!(g.log_p, vec![-0.1; 3]);
    let z = (-0.1f64 / 0.5).exp() + (-2.5f64 / 0.5).exp();
    assert!((g.log_q[0] - ((-0.1f64 / 0.5).exp() / z).ln()).abs() < 1e-12);
    assert!(!g.eos);
    // The request pinned the sampler chain and the seed mapping.
    let body = f.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["samplers"], json!(["top_k", "temperature"]));
    assert_eq!(body["dynatemp_range"], 0.0);
    assert_eq!(body["seed"], 7);
}

#[tokio::test]
async fn the_probe_learns_model_context_and_terminal_tokens() {
    let f = fake(Mode::Ok).await;
    let m = model(&[&f.url], "?eos=32000");
    let info = m.probe().await.unwrap();
    assert_eq!(info.served_model, "tiny");
    assert_eq!(info.context_len, Some(256));
    // EOS from /props through /tokenize, the end-of-generation set from the echoed biases, and
    // the reference's eos=.
    assert_eq!(info.terminal_tokens, vec![2, 32000]);
    let pin = m.pin(&info);
    assert_eq!((pin.k, pin.served_model.as_str()), (64, "tiny"));
    assert!(pin.sampler.contains("[top_k, temperature]"));
    // Cached: the same Arc comes back.
    assert!(Arc::ptr_eq(&info, &m.probe().await.unwrap()));
    m.check_fits(&info, 6, 249).unwrap();
    let err = m.check_fits(&info, 900, 3072).unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("prompt of 900 tokens plus max_new_tokens 3072")
            && err.to_string().contains("context of 256 tokens"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_is_down_makes_the_probe_wait_and_is_probed_again() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let m = model(&[&url], "");
    let err = m.probe().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("start-up probe"), "{err}");
    assert!(m.server_info().is_none(), "failures are not cached");
    let err = m.generate(&request(1), 0).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn the_probe_refuses_processed_logprobs_and_a_foreign_sampler_chain() {
    for (mode, needle) in [
        (Mode::Processed, "processed log-probabilities"),
        (Mode::NoTemperature, "not top-K then temperature"),
    ] {
        let f = fake(mode).await;
        let err = model(&[&f.url], "").probe().await.unwrap_err();
        assert!(!err.is_transient(), "{mode:?}: {err}");
        assert!(err.to_string().contains(needle), "{mode:?}: {err}");
    }
}

#[tokio::test]
async fn the_probe_records_whether_the_same_request_gets_the_same_answer() {
    let steady = fake(Mode::Ok).await;
    let m = model(&[&steady.url], "");
    let info = m.probe().await.unwrap();
    assert!(info.deterministic(), "{:?}", info.nondeterministic);
    assert_eq!(m.pin(&info).deterministic, Some(true));
    // A server whose numbers move between requests still runs chains: it is recorded, not refused.
    let noisy = fake(Mode::Noisy).await;
    let m = model(&[&steady.url, &noisy.url], "");
    let info = m.probe().await.unwrap();
    assert!(!info.deterministic());
    assert_eq!(m.pin(&info).deterministic, Some(false));
    let [one] = &info.nondeterministic[..] else {
        panic!("only the noisy server: {:?}", info.nondeterministic)
    };
    assert_eq!(one.server, noisy.url);
    assert!(!one.seen.tokens_differ);
    assert!(
        one.seen.max_log_prob_delta > 0.5e-7 && one.seen.max_log_prob_delta < 3e-7,
        "{:?}",
        one.seen
    );
}

#[tokio::test]
async fn faults_are_errors_of_the_right_kind() {
    for (mode, transient, needle) in [
        (Mode::Status500, true, "500"),
        (Mode::Status503, true, "Loading model"),
        (Mode::Slow, true, "timed out"),
        (Mode::Truncated, true, "malformed JSON"),
        (Mode::MissingLogprobs, true, "no `top_logprobs`"),
        (Mode::TokenCountMismatch, true, "disagree"),
        (Mode::Status400, false, "400"),
        (Mode::OverriddenSetting, false, "top_p"),
        (Mode::ContextFull, false, "truncated"),
        (Mode::StopWord, false, "\"User:\""),
        (Mode::NoEcho, false, "generation_settings"),
        (Mode::WrongEos, false, "stopped at token 7"),
    ] {
        let f = fake(mode).await;
        let err = probed(&[&f], "?timeout_s=1")
            .await
            .generate(&request(2), 0)
            .await
            .unwrap_err();
        assert_eq!(err.is_transient(), transient, "{mode:?}: {err}");
        assert!(
            err.to_string().contains(needle),
            "{mode:?}: {needle:?} not in {err}"
        );
        // Only an outage or overload says the server is unavailable: a 500 answered to this
        // request, or an unusable answer, is about the request.
        let unavailable = matches!(mode, Mode::Status503 | Mode::Slow);
        assert_eq!(err.is_unavailable(), unavailable, "{mode:?}: {err}");
    }
}

#[tokio::test]
async fn errors_about_one_request_never_open_the_circuit() {
    let f = fake(Mode::Status500).await;
    let m = probed(&[&f], "").await;
    for _ in 0..3 * BREAKER_THRESHOLD {
        let err = m.generate(&request(1), 0).await.unwrap_err();
        assert!(matches!(err, BackendError::Transient(_)), "{err}");
    }
    assert_eq!(
        m.unavailable_for(),
        None,
        "the server answered every request"
    );
    assert_eq!(
        f.hits.load(Ordering::SeqCst),
        u64::from(3 * BREAKER_THRESHOLD)
    );
}

#[tokio::test]
async fn a_failing_server_is_skipped_and_chains_move_to_a_healthy_one() {
    let bad = fake(Mode::Status503).await;
    let good = fake(Mode::Ok).await;
    let m = probed(&[&bad, &good], "").await;
    // Affinity 0 prefers the bad server: its failures are unavailable errors until the breaker
    // trips.
    for _ in 0..BREAKER_THRESHOLD {
        assert!(matches!(
            m.generate(&request(1), 0).await,
            Err(BackendError::Unavailable(_))
        ));
    }
    for _ in 0..10 {
        m.generate(&request(1), 0)
            .await
            .expect("the healthy server answers");
    }
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        u64::from(BREAKER_THRESHOLD),
        "the open circuit skips it"
    );
    assert_eq!(good.hits.load(Ordering::SeqCst), 10);
    // Affinity 1 goes to the healthy server from the start.
    m.generate(&request(1), 1).await.unwrap();
    assert_eq!(good.hits.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn when_every_server_fails_the_error_says_so() {
    let bad = fake(Mode::Status503).await;
    let m = probed(&[&bad], "").await;
    for _ in 0..BREAKER_THRESHOLD {
        assert_eq!(m.unavailable_for(), None);
        let _ = m.generate(&request(1), 0).await;
    }
    let wait = m.unavailable_for().expect("every circuit is open");
    assert!(wait <= powerfleet_backends::client::BREAKER_COOLDOWN);
    let err = m.generate(&request(1), 0).await.unwrap_err();
    assert!(err.is_unavailable());
    assert!(err.to_string().contains("all 1 servers"), "{err}");
}
