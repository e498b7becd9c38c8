//! SGLang as an exact backend, against a fake SGLang server of our own that answers in SGLang's
//! formats: `GET /v1/models` (`available_models` in `python/sglang/srt/entrypoints/http_server.py`),
//! `GET /get_model_info`, `GET /get_server_info` (server arguments such as
//! `speculative_algorithm`), `/tokenize` and `/detokenize` (`serving_tokenize.py`), and native
//! `/generate` answers (`output_ids`, `meta_info` with `[logprob, token_id, null]` triples and a
//! `finish_reason` object, `tokenizer_manager.py` and `schedule_batch.py`). The probe, the request
//! bodies, and every fault's class are checked.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use powerfleet_backends::{BackendError, HttpModel, ModelRef, ServerKind, parse, wire};
use powerfleet_sampler::OwnedRequest;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    /// Started without SGLANG_RETURN_ORIGINAL_LOGPROB: log_softmax(logits / temperature).
    Processed,
    /// `--speculative-algorithm EAGLE`.
    Speculative,
    /// `--preferred-sampling-params '{"regex": "[a-z]+"}'`.
    Preferred,
    /// Every generation stops at EOS (token 2).
    Eos,
    StopString,
    Abort,
    Status400,
    Status500,
    Status503,
}

/// Raw log-probabilities at every position: token 5, then 6, then EOS (2).
const TOP: [(u32, f64); 3] = [(5, -0.1), (6, -2.5), (2, -4.5)];

fn log_z(t: f64) -> f64 {
    crate::common::log_z(TOP.map(|(_, lp)| lp), t)
}

/// An SGLang `/generate` answer to `body` in `mode`.
fn generate(body: &Value, mode: Mode) -> Value {
    let params = &body["sampling_params"];
    let n = params["max_new_tokens"].as_u64().unwrap() as usize;
    let k = (body["top_logprobs_num"].as_u64().unwrap() as usize).min(TOP.len());
    let t = params["temperature"].as_f64().unwrap();
    let lp = |raw: f64| {
        if mode == Mode::Processed {
            raw / t - log_z(t)
        } else {
            raw
        }
    };
    let mut ids = vec![5u32; n];
    let finish = match mode {
        Mode::Eos => {
            ids[n - 1] = 2;
            json!({"type": "stop", "matched": 2})
        }
        Mode::StopString => json!({"type": "stop", "matched": "\n\n"}),
        Mode::Abort => {
            json!({"type": "abort", "message": "Abort in waiting queue", "status_code": 503})
        }
        _ => json!({"type": "length", "length": n}),
    };
    let (sampled, top) = crate::common::sglang_logprobs(&ids, &TOP, k, lp);
    json!({"text": "a".repeat(n), "output_ids": ids,
        "meta_info": {"id": "9f8e7d6c", "finish_reason": finish, "prompt_tokens": 3,
            "weight_version": "default", "completion_tokens": n, "cached_tokens": 0,
            "output_token_logprobs": sampled, "output_top_logprobs": top, "e2e_latency": 0.01}})
}

struct Fake {
    url: String,
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn fake(mode: Mode) -> Fake {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (log_g, log_t, log_d) = (bodies.clone(), bodies.clone(), bodies.clone());
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "qwen", "object": "model",
                    "created": 1764000000, "owned_by": "sglang", "root": "qwen", "max_model_len": 4096}]}))
            }),
        )
        .route(
            "/get_model_info",
            get(move || async move {
                let preferred = if mode == Mode::Preferred {
                    json!("{\"regex\": \"[a-z]+\", \"temperature\": 0.7}")
                } else {
                    Value::Null
                };
                axum::Json(json!({"model_path": "Qwen/Qwen2.5-0.5B-Instruct",
                    "tokenizer_path": "Qwen/Qwen2.5-0.5B-Instruct", "is_generation": true,
                    "preferred_sampling_params": preferred, "weight_version": "default"}))
            }),
        )
        .route(
            "/get_server_info",
            get(move || async move {
                let algorithm = if mode == Mode::Speculative { json!("EAGLE") } else { Value::Null };
                axum::Json(json!({"model_path": "Qwen/Qwen2.5-0.5B-Instruct", "context_length": null,
                    "speculative_algorithm": algorithm, "enable_deterministic_inference": true,
                    "max_total_num_tokens": 500000, "version": "0.5.4"}))
            }),
        )
        .route(
            "/tokenize",
            post(move |body: axum::Json<Value>| {
                let log = log_t.clone();
                async move {
                    log.lock().unwrap().push(("tokenize".into(), body.0));
                    axum::Json(json!({"tokens": [785], "count": 1, "max_model_len": 131072}))
                }
            }),
        )
        .route(
            "/detokenize",
            post(move |body: axum::Json<Value>| {
                let log = log_d.clone();
                async move {
                    log.lock().unwrap().push(("detokenize".into(), body.0));
                    axum::Json(json!({"text": "aa<|im_end|>"}))
                }
            }),
        )
        .route(
            "/generate",
            post(move |body: axum::Json<Value>| {
                let log = log_g.clone();
                async move {
                    let body = body.0;
                    let probe = body["input_ids"] == json!([785]);
                    log.lock().unwrap().push(("generate".into(), body.clone()));
                    let mode = match mode {
                        // Request faults start after the probe.
                        Mode::Eos | Mode::StopString | Mode::Abort | Mode::Status400
                        | Mode::Status500 | Mode::Status503
                            if probe =>
                        {
                            Mode::Ok
                        }
                        m => m,
                    };
                    match mode {
                        Mode::Status400 => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message":
                            "Requested token count exceeds the model's maximum context length of 4096 tokens."}}))).into_response(),
                        Mode::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response(),
                        Mode::Status503 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                        m => axum::Json(generate(&body, m)).into_response(),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fake {
        url: format!("http://{addr}"),
        bodies,
    }
}

fn model(url: &str, options: &str) -> HttpModel {
    match parse(&format!("sglang+{url}{options}")).unwrap() {
        ModelRef::Http(h) => HttpModel::new(h),
        other => panic!("{other:?}"),
    }
}

fn request(max_tokens: u32) -> OwnedRequest {
    OwnedRequest {
        prefix: vec![151644, 872, 198],
        prompt_len: 3,
        max_tokens,
        temperature: 0.5,
        top_k: Some(3),
        seed: 0xDEAD_BEEF_CAFE,
        candidates: 0,
    }
}

#[tokio::test]
async fn the_probe_learns_the_server_and_generations_are_exact() {
    let f = fake(Mode::Ok).await;
    let m = model(&f.url, "?eos=151645,151643");
    assert_eq!(m.reference().kind, ServerKind::Sglang);
    assert_eq!(m.reference().k, 64);
    let info = m.probe().await.unwrap();
    assert_eq!(info.served_model, "qwen");
    assert_eq!(info.context_len, Some(4096));
    assert_eq!(info.terminal_tokens, vec![151643, 151645]);
    m.check_fits(&info, 1000, 3095).unwrap();
    let err = m.check_fits(&info, 1000, 3096).unwrap_err();
    assert!(err.to_string().contains("context_length"), "{err}");

    let g = m.generate(&request(3), 0).await.unwrap();
    assert_eq!(g.tokens, vec![5, 5, 5]);
    assert!(!g.eos);
    assert_eq!(g.log_p, vec![-0.1; 3]);
    assert!((g.log_q[0] - (-0.1 / 0.5 - log_z(0.5))).abs() < 1e-12);

    let bodies = f.bodies.lock().unwrap();
    let (_, last) = bodies.last().unwrap();
    assert_eq!(*last, wire::sglang_body(&request(3), 3));
    assert_eq!(last["input_ids"], json!([151644, 872, 198]));
    assert_eq!(last["sampling_params"]["top_k"], 3);
    assert_eq!(last["sampling_params"]["temperature"], 0.5);
    assert_eq!(last["sampling_params"]["no_stop_trim"], true);
    assert_eq!(
        last["sampling_params"]["sampling_seed"],
        wire::sglang_seed(0xDEAD_BEEF_CAFE)
    );
    assert_eq!(last["top_logprobs_num"], 3);
    assert_eq!(last["logprob_start_len"], -1);
    // The probe asked for one token at temperature 1 and 0.5 with the same seed, then for one
    // token of one request six times over (the fake tokenizes every text alike).
    let generations: Vec<&Value> = bodies
        .iter()
        .filter(|(what, b)| {
            what == "generate"
                && b["input_ids"] == json!([785])
                && b["sampling_params"]["max_new_tokens"] == 1
        })
        .map(|(_, b)| b)
        .collect();
    assert_eq!(generations.len(), 8);
    let (probes, repeats) = generations.split_at(2);
    assert_eq!(probes[0]["sampling_params"]["temperature"], 1.0);
    assert_eq!(probes[1]["sampling_params"]["temperature"], 0.5);
    assert_eq!(
        probes[0]["sampling_params"]["sampling_seed"],
        probes[1]["sampling_params"]["sampling_seed"]
    );
    assert_eq!(probes[0]["top_logprobs_num"], 64);
    // Whose answers (the fake's are always the same) agree.
    assert!(repeats.iter().all(|b| *b == repeats[0]));
    assert!(info.deterministic());
    assert_eq!(m.pin(&info).deterministic, Some(true));
}

#[tokio::test]
async fn tokenize_and_detokenize_use_sglangs_endpoints() {
    let f = fake(Mode::Ok).await;
    let m = model(&f.url, "?model=qwen");
    assert_eq!(m.tokenize("The").await.unwrap(), vec![785]);
    assert_eq!(m.detokenize(&[5, 5, 2]).await.unwrap(), "aa<|im_end|>");
    let bodies = f.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies[0],
        (
            "tokenize".to_string(),
            json!({"model": "qwen", "prompt": "The", "add_special_tokens": true})
        )
    );
    assert_eq!(
        bodies[1],
        (
            "detokenize".to_string(),
            json!({"model": "qwen", "tokens": [5, 5, 2], "skip_special_tokens": false})
        )
    );
    let err = m.tokenize_chat("hi").await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("without chat"), "{err}");
}

#[tokio::test]
async fn a_stop_at_eos_ends_the_generation() {
    let f = fake(Mode::Eos).await;
    let m = model(&f.url, "?eos=2");
    let g = m.generate(&request(2), 0).await.unwrap();
    assert_eq!(g.tokens, vec![5, 2]);
    assert!(g.eos);
    assert_eq!(g.log_p[1], -4.5);
    // A terminal set that lacks the matched token refuses it.
    let f = fake(Mode::Eos).await;
    let err = model(&f.url, "?eos=151645")
        .generate(&request(2), 0)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test]
async fn the_probe_refuses_servers_that_cannot_sample_exactly() {
    for (mode, options, needle) in [
        (Mode::Processed, "", "SGLANG_RETURN_ORIGINAL_LOGPROB=1"),
        (Mode::Speculative, "", "speculative decoding"),
        (Mode::Preferred, "", "\"regex\""),
        (Mode::Ok, "?model=llama", "serves [\"qwen\"]"),
    ] {
        let f = fake(mode).await;
        let err = model(&f.url, options).probe().await.unwrap_err();
        assert!(matches!(err, BackendError::Rejected(_)), "{mode:?}: {err}");
        assert!(err.to_string().contains(needle), "{mode:?}: {err}");
    }
}

#[tokio::test]
async fn faults_are_errors_of_the_right_kind() {
    for (mode, class, needle) in [
        (Mode::Status503, "unavailable", "503"),
        (Mode::Status500, "transient", "500"),
        (Mode::Abort, "transient", "aborted"),
        (Mode::Status400, "rejected", "maximum context length"),
        (Mode::StopString, "rejected", "stop string"),
    ] {
        let f = fake(mode).await;
        let m = model(&f.url, "");
        m.probe().await.unwrap();
        let err = m.generate(&request(2), 0).await.unwrap_err();
        let got = match err {
            BackendError::Unavailable(_) => "unavailable",
            BackendError::Transient(_) => "transient",
            BackendError::Rejected(_) => "rejected",
        };
        assert_eq!(got, class, "{mode:?}: {err}");
        assert!(err.to_string().contains(needle), "{mode:?}: {err}");
    }
}
