//! The start-up probe of vLLM servers, against a fake vLLM of our own answering in vLLM's
//! formats: `GET /v1/models` (`ModelCard` with `max_model_len`), `/tokenize`
//! (`TokenizeResponse`), `/v1/completions` with `return_tokens_as_token_ids`, and vLLM's 400 for
//! `logprobs` beyond `--max-logprobs` ("Requested sample logprobs of 64, which is greater than
//! max allowed: 20", `_validate_logprobs` in `vllm/sampling_params.py`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use powerfleet_backends::{BackendError, HttpModel, ModelRef, parse};
use powerfleet_sampler::OwnedRequest;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Raw log-probabilities, `--max-logprobs 20`.
    Ok,
    /// `--logprobs-mode processed_logprobs`: top-K renormalized at the temperature.
    Processed,
    /// Stops at 128008 (<|eom_id|>), a generation_config EOS id, with stop_reason 128008.
    StopToken,
}

/// Raw log-probabilities at every position.
const TOP: [(u32, f64); 3] = [(5, -0.1), (6, -2.5), (128008, -4.5)];
const MAX_LOGPROBS: u64 = 20;

fn completion(body: &Value, mode: Mode) -> Value {
    let n = body["max_tokens"].as_u64().unwrap() as usize;
    let k = (body["logprobs"].as_u64().unwrap() as usize).min(TOP.len());
    let t = body["temperature"].as_f64().unwrap();
    let z = TOP
        .iter()
        .take(k)
        .map(|&(_, lp)| (lp / t).exp())
        .sum::<f64>()
        .ln();
    let lp = |raw: f64| {
        if mode == Mode::Processed {
            raw / t - z
        } else {
            raw
        }
    };
    let mut ids = vec![5u32; n];
    let mut stop_reason = Value::Null;
    let mut finish = "length";
    if mode == Mode::StopToken && body["prompt"] != json!([791]) {
        ids[n - 1] = 128008;
        stop_reason = json!(128008);
        finish = "stop";
    }
    let top: Vec<Value> = ids
        .iter()
        .map(|_| {
            let mut map = Map::new();
            for &(id, raw) in TOP.iter().take(k) {
                map.insert(format!("token_id:{id}"), json!(lp(raw)));
            }
            Value::Object(map)
        })
        .collect();
    json!({"id": "cmpl-1", "object": "text_completion", "created": 1764000000, "model": "m",
        "choices": [{"index": 0, "text": "a",
            "logprobs": {"text_offset": vec![0; n], "token_logprobs": vec![-0.1; n],
                "tokens": ids.iter().map(|i| format!("token_id:{i}")).collect::<Vec<_>>(),
                "top_logprobs": top},
            "finish_reason": finish, "stop_reason": stop_reason}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1 + n, "completion_tokens": n}})
}

async fn fake(mode: Mode) -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let log = bodies.clone();
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "m", "object": "model",
                    "created": 1764000000, "owned_by": "vllm", "root": "/models/m", "parent": null,
                    "max_model_len": 2048, "permission": []}]}))
            }),
        )
        .route(
            "/tokenize",
            post(|| async {
                axum::Json(json!({"count": 1, "max_model_len": 2048, "tokens": [791], "token_strs": null}))
            }),
        )
        .route(
            "/v1/completions",
            post(move |body: axum::Json<Value>| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(body.0.clone());
                    let asked = body["logprobs"].as_u64().unwrap();
                    if asked > MAX_LOGPROBS {
                        let message = format!("Requested sample logprobs of {asked}, which is greater than max allowed: {MAX_LOGPROBS}");
                        let error = json!({"error": {"message": message, "type": "BadRequestError", "param": "logprobs", "code": 400}});
                        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
                    }
                    axum::Json(completion(&body, mode)).into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), bodies)
}

fn model(url: &str, options: &str) -> HttpModel {
    match parse(&format!("vllm+{url}/v1{options}")).unwrap() {
        ModelRef::Http(h) => HttpModel::new(h),
        other => panic!("{other:?}"),
    }
}

fn request(max_tokens: u32) -> OwnedRequest {
    crate::common::request(max_tokens, None, u64::MAX)
}

#[tokio::test]
async fn the_probe_learns_model_and_context_with_the_default_k() {
    let (url, bodies) = fake(Mode::Ok).await;
    let m = model(&url, "?model=m&eos=128009,128008");
    let info = m.probe().await.unwrap();
    assert_eq!(info.served_model, "m");
    assert_eq!(info.context_len, Some(2048));
    assert_eq!(info.terminal_tokens, vec![128008, 128009]);
    assert_eq!(
        m.pin(&info).k,
        20,
        "vLLM's default K fits --max-logprobs 20"
    );
    m.check_fits(&info, 1000, 1048).unwrap();
    let err = m.check_fits(&info, 1000, 1049).unwrap_err();
    assert!(err.to_string().contains("max_model_len"), "{err}");
    let g = m.generate(&request(2), 0).await.unwrap();
    assert_eq!(g.tokens, vec![5, 5]);
    let bodies = bodies.lock().unwrap();
    assert_eq!(
        bodies.len(),
        9,
        "two probe requests, one request six times over, one generation"
    );
    assert_eq!(bodies[0]["temperature"], 1.0);
    assert_eq!(bodies[1]["temperature"], 0.5);
    assert_eq!(bodies[0]["seed"], bodies[1]["seed"]);
    assert!(bodies[2..8].iter().all(|b| *b == bodies[2]));
    assert_eq!(bodies[2]["max_tokens"], 1);
    assert!(info.deterministic(), "the fake answers alike every time");
    assert_eq!(bodies[8]["logprobs"], 20);
    assert_eq!(bodies[8]["seed"], i64::MAX, "the top bit is dropped");
}

#[tokio::test]
async fn a_k_beyond_max_logprobs_is_refused_with_the_fix() {
    let (url, _) = fake(Mode::Ok).await;
    let err = model(&url, "?model=m&k=64").probe().await.unwrap_err();
    assert!(matches!(err, BackendError::Rejected(_)), "{err}");
    assert!(
        err.to_string().contains(
            "K=64 exceeds the server's --max-logprobs (20); start vLLM with --max-logprobs 64 or use ?k=20"
        ),
        "{err}"
    );
    // A job's own top-k beyond the limit is refused the same way.
    let m = model(&url, "?model=m");
    let mut r = request(1);
    r.top_k = Some(50);
    let err = m.generate(&r, 0).await.unwrap_err();
    assert!(err.to_string().contains("K=50 exceeds"), "{err}");
}

#[tokio::test]
async fn processed_logprobs_and_an_unknown_model_are_refused() {
    let (url, _) = fake(Mode::Processed).await;
    let err = model(&url, "?model=m").probe().await.unwrap_err();
    assert!(matches!(err, BackendError::Rejected(_)), "{err}");
    assert!(
        err.to_string().contains("--logprobs-mode raw_logprobs"),
        "{err}"
    );
    let (url, _) = fake(Mode::Ok).await;
    let err = model(&url, "?model=other").probe().await.unwrap_err();
    assert!(matches!(err, BackendError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("serves [\"m\"]"), "{err}");
}

#[tokio::test]
async fn a_generation_config_stop_token_ends_the_completion() {
    let (url, _) = fake(Mode::StopToken).await;
    let g = model(&url, "?model=m&eos=128001,128008,128009")
        .generate(&request(3), 0)
        .await
        .unwrap();
    assert_eq!(g.tokens, vec![5, 5, 128008]);
    assert!(g.eos);
    assert_eq!(g.log_p[2], -4.5);
    // Not a terminal token of the reference: refused for good.
    let err = model(&url, "?model=m&eos=128009")
        .generate(&request(3), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Rejected(_)), "{err}");
}
