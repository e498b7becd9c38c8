//! The HTTP API against a real private redis-server and a SQLite file: the router driven
//! in-process with `oneshot`, and once over a real TCP socket with a graceful shutdown.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use powerfleet_fleet::api::{ApiState, ModelPolicy, RequestLimits, router, serve};
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_queue::{Queue, QueueOptions};
use powerfleet_store::Store;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// A private redis-server, a SQLite file in a temporary directory, and the API's state on them.
struct Env {
    redis: LocalRedis,
    _dir: tempfile::TempDir,
    state: ApiState,
}

impl Env {
    async fn new() -> Env {
        Env::with_limits(RequestLimits::default()).await
    }

    async fn with_limits(limits: RequestLimits) -> Env {
        let redis = LocalRedis::start(LocalRedisOptions::default()).unwrap_or_else(|e| {
            panic!("{e}; these tests need redis-server on PATH (scripts/test.sh installs it)")
        });
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("results.db").display());
        let store = Store::connect(&db_url).await.unwrap();
        let queue = Queue::connect(
            &redis.url(),
            QueueOptions {
                namespace: "api-test".into(),
                ..QueueOptions::default()
            },
        )
        .await
        .unwrap();
        Env {
            redis,
            _dir: dir,
            state: ApiState {
                queue,
                store,
                limits,
                tokens: Default::default(),
                models: Default::default(),
                datasets: Default::default(),
                openai: Default::default(),
            },
        }
    }

    fn app(&self) -> Router {
        router(self.state.clone())
    }

    /// The router with `models` as the model policy.
    fn app_with_models(&self, models: ModelPolicy) -> Router {
        router(ApiState {
            models: std::sync::Arc::new(models),
            ..self.state.clone()
        })
    }

    /// The router with `datasets` registered, as `serve --dataset NAME=PATH` does, and the
    /// model name `small` (whose vocabulary the workers know).
    fn app_with_datasets(&self, datasets: powerfleet_fleet::datasets::Datasets) -> Router {
        router(ApiState {
            datasets: std::sync::Arc::new(datasets),
            models: std::sync::Arc::new(ModelPolicy::from_flags(&["small".into()], false).unwrap()),
            ..self.state.clone()
        })
    }

    /// The router with bearer `tokens`.
    fn app_with_tokens(&self, tokens: &[&str]) -> Router {
        router(ApiState {
            tokens: std::sync::Arc::new(tokens.iter().map(|t| t.to_string()).collect()),
            ..self.state.clone()
        })
    }
}

/// A response: status, content type and JSON body.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Reply {
    /// Asserts an error response: the status, a JSON content type, and an `error` string that
    /// contains every one of `needles`; returns the message.
    fn error(&self, status: StatusCode, needles: &[&str]) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.content_type.starts_with("application/json"),
            "error responses must be JSON: {self:?}"
        );
        let message = self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" string in {self:?}"))
            .to_string();
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        message
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply {
        status,
        content_type,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_raw(app: &Router, uri: &str, body: impl Into<String>) -> Reply {
    let body = body.into();
    send(
        app,
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap(),
    )
    .await
}

async fn post(app: &Router, uri: &str, body: Value) -> Reply {
    post_raw(app, uri, body.to_string()).await
}

fn job_ids(reply: &Reply) -> Vec<String> {
    reply.body["job_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no job_ids in {reply:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn submit_prompt_times_methods_times_seeds_makes_a_batch_of_queued_jobs() {
    let env = Env::new().await;
    let app = env.app();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({
            "model": "toy:pivot",
            "prompt": "A",
            "config": {"method": "power", "alpha": 4, "n_mcmc": 2, "max_new_tokens": 4},
            "methods": ["power", "low-temp"],
            "seeds": [0, 1, 2],
            "correlation_id": "exp-1"
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert!(reply.content_type.starts_with("application/json"));
    let ids = job_ids(&reply);
    assert_eq!(ids.len(), 6);
    assert_eq!(reply.body["correlation_id"], "exp-1");
    let batch = reply.body["batch_id"].as_str().unwrap().to_string();

    let status = get(&app, &format!("/v1/batches/{batch}")).await;
    assert_eq!(status.status, StatusCode::OK, "{status:?}");
    assert_eq!(status.body["kind"], "batch");
    assert_eq!(status.body["counts"], json!({"queued": 6}));
    assert_eq!(status.body["jobs"].as_array().unwrap().len(), 6);

    let status = get(&app, "/v1/correlations/exp-1").await;
    assert_eq!(status.status, StatusCode::OK, "{status:?}");
    assert_eq!(status.body["kind"], "correlation");
    assert_eq!(status.body["counts"], json!({"queued": 6}));

    // The same with problems: ids default to the 1-based index.
    let reply = post(
        &app,
        "/v1/jobs",
        json!({
            "model": "toy:pivot",
            "problems": [{"id": "q1", "prompt": "A"}, {"prompt_tokens": [0, 1]}],
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let ids = job_ids(&reply);
    assert_eq!(ids.len(), 2);
    let second = get(&app, &format!("/v1/jobs/{}", ids[1])).await;
    assert_eq!(second.body["problem_id"], "2", "{second:?}");
}

#[tokio::test]
async fn a_submission_key_makes_resubmission_idempotent() {
    let env = Env::new().await;
    let app = env.app();
    let body = json!({
        "model": "toy:pivot",
        "prompt_tokens": [0, 1],
        "seeds": [0, 1],
        "chains": 2,
        "submission_key": "client-42"
    });
    let first = post(&app, "/v1/jobs", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let second = post(&app, "/v1/jobs", body.clone()).await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    assert_eq!(job_ids(&first).len(), 4);
    assert_eq!(job_ids(&first), job_ids(&second));
    assert_eq!(first.body["batch_id"], second.body["batch_id"]);
    assert_eq!(first.body["correlation_id"], second.body["correlation_id"]);
    // The same key with a different request (more seeds; another prompt) is a conflict, and
    // adds nothing to the first batch.
    for (field, value) in [
        ("seeds", json!([0, 1, 2])),
        ("prompt_tokens", json!([1, 0])),
    ] {
        let mut other = body.clone();
        other[field] = value;
        let reply = post(&app, "/v1/jobs", other).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{field}: {reply:?}");
        let error = reply.body["error"].as_str().unwrap();
        assert!(
            error.contains("\"client-42\" was used for a different request"),
            "{error}"
        );
    }
    let batch = first.body["batch_id"].as_str().unwrap();
    let status = get(&app, &format!("/v1/batches/{batch}")).await;
    assert_eq!(status.body["counts"], json!({"queued": 4}), "{status:?}");
}

#[tokio::test]
async fn get_and_cancel_a_job() {
    let env = Env::new().await;
    let app = env.app();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let id = job_ids(&reply).remove(0);

    let job = get(&app, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job.status, StatusCode::OK, "{job:?}");
    assert_eq!(job.body["job_id"], id.as_str());
    assert_eq!(job.body["status"], "queued");
    assert_eq!(job.body["method"], "power");
    assert_eq!(job.body["source"], "redis");

    let cancel = post_raw(&app, &format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(cancel.status, StatusCode::OK, "{cancel:?}");
    assert_eq!(cancel.body, json!({"job_id": id, "outcome": "cancelled"}));

    let job = get(&app, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job.body["status"], "cancelled", "{job:?}");

    let again = post_raw(&app, &format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["outcome"], "already_cancelled");
}

#[tokio::test]
async fn unknown_and_invalid_ids() {
    let env = Env::new().await;
    let app = env.app();
    let unknown = "01936b8e-7f5a-7cc2-9d1e-3f4a5b6c7d8e";
    get(&app, &format!("/v1/jobs/{unknown}"))
        .await
        .error(StatusCode::NOT_FOUND, &[unknown]);
    get(&app, &format!("/v1/batches/{unknown}"))
        .await
        .error(StatusCode::NOT_FOUND, &[unknown]);
    get(&app, "/v1/correlations/nobody")
        .await
        .error(StatusCode::NOT_FOUND, &["nobody"]);
    post_raw(&app, &format!("/v1/jobs/{unknown}/cancel"), "")
        .await
        .error(StatusCode::NOT_FOUND, &[unknown]);

    get(&app, "/v1/jobs/not-a-uuid").await.error(
        StatusCode::BAD_REQUEST,
        &["job id", "\"not-a-uuid\"", "UUID"],
    );
    get(&app, "/v1/batches/12345")
        .await
        .error(StatusCode::BAD_REQUEST, &["batch id", "\"12345\"", "UUID"]);
    post_raw(&app, "/v1/jobs/nope/cancel", "")
        .await
        .error(StatusCode::BAD_REQUEST, &["job id", "\"nope\"", "UUID"]);
    get(&app, "/v1/correlations/bad%20id!")
        .await
        .error(StatusCode::BAD_REQUEST, &["correlation id", "\"bad id!\""]);

    // No such route, wrong method: JSON too.
    get(&app, "/v2/jobs")
        .await
        .error(StatusCode::NOT_FOUND, &["/v2/jobs", "/v1/jobs"]);
    get(&app, "/v1/jobs")
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, &["GET", "POST"]);
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_field() {
    let env = Env::new().await;
    let app = env.app();
    post_raw(&app, "/v1/jobs", r#"{"model": "toy:pivot", "prompt": "#)
        .await
        .error(StatusCode::BAD_REQUEST, &["not valid JSON"]);
    post_raw(&app, "/v1/jobs", "")
        .await
        .error(StatusCode::BAD_REQUEST, &["not valid JSON"]);
    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "promt": "A"}),
    )
    .await
    .error(
        StatusCode::BAD_REQUEST,
        &["unknown field `promt`", "`prompt`"],
    );
    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "config": {"method": "power", "n_mcmc": "ten"}}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, &["config.n_mcmc", "invalid type"]);
    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "seeds": 3}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, &["seeds", "invalid type"]);
    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "methods": ["pow"]}),
    )
    .await
    .error(
        StatusCode::BAD_REQUEST,
        &["methods[0]", "unknown variant `pow`"],
    );
    post(&app, "/v1/jobs", json!({"prompt": "A"}))
        .await
        .error(StatusCode::BAD_REQUEST, &["missing field `model`"]);
}

#[tokio::test]
async fn invalid_submissions_get_422_and_enqueue_nothing() {
    let env = Env::with_limits(RequestLimits {
        max_jobs_per_request: 10,
        ..RequestLimits::default()
    })
    .await;
    let app = env.app();
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "rejected", "model": "toy:pivot", "prompt": "A", "config": {"method": "power", "n_mcmc": 0}}),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["n_mcmc must be >= 1, got 0"]);
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "rejected", "model": "toy:pivot", "prompt": "A", "prompt_tokens": [0]}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["exactly one of prompt", "got prompt and prompt_tokens"],
    );
    post(&app, "/v1/jobs", json!({"model": "toy:pivot"}))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, &["got none of them"]);
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "rejected", "model": "toy:pivot", "problems": [{"id": "q1", "prompt": "A zz"}]}),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["problem q1", "zz"]);
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "rejected", "model": "toy:pivot", "prompt": "A", "methods": ["power", "standard"], "seeds": [0, 1, 2], "chains": 2}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["12 jobs", "at most 10", "max_jobs_per_request"],
    );
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "rejected", "model": "toy:pivot", "prompt": "A", "chains": u64::MAX}),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["max_jobs_per_request"]);
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "rejected", "model": "toy:pivot", "prompt": "A", "submission_key": "has space"}),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["submission key"]);
    // Nothing reached the queue.
    get(&app, "/v1/correlations/rejected")
        .await
        .error(StatusCode::NOT_FOUND, &["rejected"]);
}

#[tokio::test]
async fn only_datasets_the_operator_registered_may_run_code() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("code.jsonl");
    std::fs::write(
        &code,
        r#"{"task_id": "t/0", "prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
{"task_id": "t/1", "prompt": "def g():\n", "test": "def check(c):\n    assert c() == 2\n", "entry_point": "g"}
"#,
    )
    .unwrap();
    let math = dir.path().join("math.jsonl");
    std::fs::write(&math, "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n").unwrap();
    let datasets = powerfleet_fleet::datasets::Datasets::load(
        &[
            format!("humaneval={}", code.display()),
            format!("sums={}", math.display()),
        ],
        powerfleet_datasets::SizeCap::DATASET,
    )
    .unwrap();
    let app = env.app_with_datasets(datasets);
    let listed = get(&app, "/v1/datasets").await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(
        listed.body,
        json!({"datasets": [
            {"name": "humaneval", "format": "code", "problems": 2, "grader": "humaneval"},
            {"name": "sums", "format": "jsonl", "problems": 1, "grader": "math"},
        ]})
    );
    let instead = [
        "serve --dataset NAME=PATH",
        "\"dataset\": NAME",
        "powerfleet submit --bench FILE",
    ];
    // The reported attack: a record whose test is the program (the stop string empties the
    // completion), graded by humaneval in the collector.
    let attack = |bench: Value| {
        json!({
            "correlation_id": "attack",
            "model": "toy:suite-arith",
            "methods": ["standard"],
            "stop": ["<eos>"],
            "bench": bench,
        })
    };
    let program = "import os\nos.system('touch /tmp/pwned')\n";
    let reply = post(
        &app,
        "/v1/jobs",
        attack(json!({"records": [{"task_id": "t", "prompt": "3", "test": program, "entry_point": "f"}]})),
    )
    .await;
    let message = reply.error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &[
            "bench.records[0] holds test code (field test)",
            "runs no code a request brings",
        ],
    );
    for needle in instead {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    // However it is dressed: as another format, or the test on a later record.
    post(
        &app,
        "/v1/jobs",
        attack(json!({"format": "jsonl", "records": [{"prompt": "3", "answer": "3"}, {"prompt": "3", "answer": "3", "test": program}]})),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["bench.records[1] holds test code"]);
    post(
        &app,
        "/v1/jobs",
        attack(json!({"format": "code", "records": [{"task_id": "t", "prompt": "3", "entry_point": "f"}]})),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["bench.format code", "serve --dataset"]);
    post(
        &app,
        "/v1/jobs",
        attack(
            json!({"records": [{"prompt": "3", "answer": "3"}], "grader": {"kind": "humaneval"}}),
        ),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["bench.grader humaneval runs the completion"],
    );
    // Nothing reached the queue.
    get(&app, "/v1/correlations/attack")
        .await
        .error(StatusCode::NOT_FOUND, &["attack"]);
    // Records with answers stay allowed: graders that read the answer run on them.
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:suite-arith", "methods": ["standard"], "bench": {"records": [{"prompt": "3", "answer": "3"}]}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:suite-arith", "methods": ["standard"], "bench": {"records": [{"prompt": "3", "answer": "3"}], "grader": {"kind": "regex", "pattern": "(\\d)"}}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    // A registered dataset runs its own tests, graded by humaneval.
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "small", "methods": ["standard"], "seeds": [0, 1], "stop": ["<eos>"], "bench": {"dataset": "humaneval"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(job_ids(&reply).len(), 4);
    let job = &job_ids(&reply)[0];
    let state = env
        .state
        .queue
        .job_state(job.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let grading = state.spec.unwrap().grading.expect("a graded job");
    assert_eq!(grading.grader, powerfleet_jobs::Grader::Humaneval);
    assert!(
        matches!(&grading.reference, powerfleet_jobs::ReferenceAnswer::Code { test, .. } if test.contains("assert c() == 1")),
        "{grading:?}"
    );
    // It keeps its format; the caller may choose a template and a fitting grader.
    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "bench": {"dataset": "sums", "format": "code"}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["bench.format", "drop bench.format"],
    );
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "small", "methods": ["standard"], "bench": {"dataset": "sums", "template": "math-cot", "grader": {"kind": "math_lenient"}}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    post(
        &app,
        "/v1/jobs",
        json!({"model": "small", "bench": {"dataset": "sums", "grader": {"kind": "humaneval"}}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["grader humaneval needs a programming problem"],
    );
    // An unknown name is refused with the registered ones; so is naming a dataset and records.
    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "bench": {"dataset": "mmlu"}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &[
            "bench.dataset \"mmlu\"",
            "registered: humaneval, sums",
            "GET /v1/datasets",
        ],
    );
    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "bench": {"dataset": "sums", "records": [{"prompt": "3", "answer": "3"}]}}),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["exactly one of dataset"]);
    // A server without datasets says so.
    post(
        &env.app(),
        "/v1/jobs",
        json!({"model": "toy:pivot", "bench": {"dataset": "humaneval"}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["registered: none", "--dataset"],
    );
    assert_eq!(
        get(&env.app(), "/v1/datasets").await.body,
        json!({"datasets": []})
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_json() {
    let env = Env::with_limits(RequestLimits {
        max_body_bytes: 64,
        ..RequestLimits::default()
    })
    .await;
    let app = env.app();
    let big = json!({"model": "toy:pivot", "prompt": "A ".repeat(100)}).to_string();
    // With a Content-Length: rejected before the body is read.
    post_raw(&app, "/v1/jobs", big.clone()).await.error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &["64 bytes", "max_body_bytes"],
    );
    // Without one (as if chunked): rejected while reading.
    let request = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    send(&app, request).await.error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &["64 bytes", "max_body_bytes"],
    );
    // A small body still passes.
    let ok = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
}

#[tokio::test]
async fn redis_down_gets_503_naming_redis() {
    let mut env = Env::new().await;
    let app = env.app();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let id = job_ids(&reply).remove(0);
    env.redis.kill();
    let message = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A"}),
    )
    .await
    .error(
        StatusCode::SERVICE_UNAVAILABLE,
        &["Redis", &env.redis.url()],
    );
    assert!(message.contains("check"), "{message}");
    get(&app, &format!("/v1/jobs/{id}"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, &["Redis"]);
    post_raw(&app, &format!("/v1/jobs/{id}/cancel"), "")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, &["Redis"]);
}

/// Sends one hand-written HTTP/1.1 request and reads the whole answer (the server closes).
async fn http1(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // Far off: only a server that never answers fails here, however loaded the machine.
    tokio::time::timeout(Duration::from_secs(300), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers (it hung)")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tcp_and_shuts_down_gracefully() {
    let env = Env::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        env.state.clone(),
        Default::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let body = json!({"model": "toy:pivot", "prompt": "A", "seeds": [0, 1]}).to_string();
    let (status, text) = http1(addr, "POST", "/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    let receipt: Value = serde_json::from_str(&text).unwrap();
    let batch = receipt["batch_id"].as_str().unwrap();
    let (status, text) = http1(addr, "GET", &format!("/v1/batches/{batch}"), "").await;
    assert_eq!(status, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["counts"], json!({"queued": 2}));
    let (status, text) = http1(addr, "GET", "/v1/jobs/xyz", "").await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("\"xyz\""),
        "{text}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(300), server)
        .await
        .expect("serve returns after the shutdown signal (it hung)")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn requests_name_only_the_models_the_operator_configured() {
    let env = Env::new().await;
    let app = env.app_with_models(ModelPolicy::from_flags(&["small".into()], false).unwrap());
    let attacks = [
        // A worker would send the Redis URL as a bearer token to the attacker.
        "openai+http://127.0.0.1:9/v1?model=x&key_env=POWERFLEET_REDIS_URL",
        // Workers would POST wherever the caller says.
        "llamacpp+http://127.0.0.1:9",
        "vllm+http://127.0.0.1:9/v1?model=m",
        "sglang+http://127.0.0.1:9",
        "openai+http://127.0.0.1:9/v1?model=x",
        "anthropic+http://127.0.0.1:9?model=x",
        // The API would read a file and quote it.
        "toy:/etc/passwd",
        "toy:pivot?delay_ms=600000",
        "unknown-name",
    ];
    for model in attacks {
        let reply = post(
            &app,
            "/v1/jobs",
            json!({"correlation_id": "attack", "model": model, "prompt": "A", "methods": ["standard"]}),
        )
        .await;
        let message = reply.error(StatusCode::BAD_REQUEST, &["model: ", "toy:pivot"]);
        assert!(!message.contains("root:"), "{message}");
        let hosted = model.starts_with("openai+") || model.starts_with("anthropic+");
        if !hosted {
            assert!(
                message.contains("small") && message.contains("--allow-model-references"),
                "{message}"
            );
        }
    }
    // A benchmark names the model the same way; the built-in suite's own toy models pass.
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "attack", "model": "llamacpp+http://127.0.0.1:9", "bench": {"records": [{"prompt": "A", "answer": "1"}]}}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, &["model: "]);
    get(&app, "/v1/correlations/attack")
        .await
        .error(StatusCode::NOT_FOUND, &["attack"]);
    for body in [
        json!({"model": "small", "prompt": "A"}),
        json!({"model": "toy:tiny", "prompt": "a"}),
        json!({"model": "small", "bench": {"builtin": "suite"}, "methods": ["standard"]}),
    ] {
        let reply = post(&app, "/v1/jobs", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    }

    // The operator may allow references; credentials still never come from a request.
    let open = env.app_with_models(ModelPolicy::from_flags(&["small".into()], true).unwrap());
    let reply = post(
        &open,
        "/v1/jobs",
        json!({"model": "llamacpp+http://127.0.0.1:9", "prompt": "A"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    post(
        &open,
        "/v1/jobs",
        json!({"model": "openai+http://127.0.0.1:9/v1?model=x&key_env=POWERFLEET_REDIS_URL", "prompt": "A", "methods": ["standard"]}),
    )
    .await
    .error(
        StatusCode::BAD_REQUEST,
        &["model: ", "key_env", "credentials never come from a request"],
    );
    post(
        &open,
        "/v1/jobs",
        json!({"model": "openai+http://127.0.0.1:9/v1?model=x", "prompt": "A", "methods": ["standard"]}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, &["model: ", "hosted-API reference"]);
}

#[tokio::test]
async fn posts_need_a_json_content_type() {
    let env = Env::new().await;
    let app = env.app();
    let body = json!({"model": "toy:pivot", "prompt": "A"}).to_string();
    let with = |content_type: Option<&str>, uri: &str, body: &str| {
        let mut r = Request::post(uri);
        if let Some(t) = content_type {
            r = r.header(header::CONTENT_TYPE, t);
        }
        r.body(Body::from(body.to_string())).unwrap()
    };
    for content_type in [
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("text/plain"),
        Some("application/jsonx"),
        None,
    ] {
        send(&app, with(content_type, "/v1/jobs", &body))
            .await
            .error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &["Content-Type: application/json"],
            );
    }
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
    ] {
        let reply = send(&app, with(Some(content_type), "/v1/jobs", &body)).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{content_type}: {reply:?}"
        );
    }
    let reply = post_raw(&app, "/v1/jobs", body.clone()).await;
    let id = job_ids(&reply).remove(0);
    let cancel = format!("/v1/jobs/{id}/cancel");
    send(&app, with(Some("text/plain"), &cancel, ""))
        .await
        .error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &["Content-Type: application/json"],
        );
    send(&app, with(None, &cancel, "")).await.error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &["Content-Type: application/json"],
    );
    let job = get(&app, &format!("/v1/jobs/{id}")).await;
    assert_eq!(
        job.body["status"], "queued",
        "nothing was cancelled: {job:?}"
    );
    let reply = send(&app, with(Some("application/json"), &cancel, "")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    // GETs take no body, so no content type; other routes keep their own errors.
    assert_eq!(
        get(&app, &format!("/v1/jobs/{id}")).await.status,
        StatusCode::OK
    );
    send(&app, with(None, "/v1/nothing", ""))
        .await
        .error(StatusCode::NOT_FOUND, &["no route"]);
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let env = Env::new().await;
    let app = env.app_with_tokens(&["t0ken-a", "t0ken-b"]);
    let with = |authorization: &str| {
        Request::get("/v1/correlations/nobody")
            .header(header::AUTHORIZATION, authorization)
            .body(Body::empty())
            .unwrap()
    };
    for ok in [
        "Bearer t0ken-a",
        "bearer t0ken-b",
        "BEARER t0ken-a",
        "bEaReR  t0ken-b",
    ] {
        send(&app, with(ok))
            .await
            .error(StatusCode::NOT_FOUND, &["nobody"]);
    }
    for bad in [
        "Bearer t0ken-c",
        "bearer T0KEN-A",
        "Bearert0ken-a",
        "Basic t0ken-a",
        "t0ken-a",
        "bearer ",
    ] {
        send(&app, with(bad))
            .await
            .error(StatusCode::UNAUTHORIZED, &["unauthorized"]);
    }
    get(&app, "/v1/correlations/nobody")
        .await
        .error(StatusCode::UNAUTHORIZED, &["unauthorized"]);
}

#[tokio::test]
async fn client_errors_quote_only_a_prefix_of_the_input() {
    let env = Env::new().await;
    let app = env.app();
    let long = |c: char| c.to_string().repeat(20_000);
    let check = |reply: Reply, status: StatusCode, value: &str| {
        let message = reply.error(status, &[]);
        assert!(
            message.chars().count() < 1_000,
            "{} characters: {}",
            message.chars().count(),
            &message[..300]
        );
        assert!(
            message.contains(&value[..150]),
            "the prefix is quoted: {message}"
        );
        assert!(!message.contains(&value[..201]), "{message}");
    };
    let v = long('m');
    check(
        post(&app, "/v1/jobs", json!({"model": v, "prompt": "A"})).await,
        StatusCode::BAD_REQUEST,
        &v,
    );
    let v = long('f');
    check(
        post(
            &app,
            "/v1/jobs",
            json!({"model": "toy:pivot", v.clone(): 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &v,
    );
    let v = long('c');
    check(
        post(
            &app,
            "/v1/jobs",
            json!({"model": "toy:pivot", "prompt": "A", "correlation_id": format!("{v}!")}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &v,
    );
    let v = long('t');
    check(
        post(
            &app,
            "/v1/jobs",
            json!({"model": "toy:pivot", "prompt": "A", "methods": [v.clone()]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &v,
    );
    let v = long('i');
    check(
        post(
            &app,
            "/v1/jobs",
            json!({"model": "toy:pivot", "problems": [{"id": v.clone(), "prompt": "A zz"}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &v,
    );
    let v = long('p');
    check(
        post(
            &app,
            "/v1/jobs",
            json!({"model": "toy:pivot", "prompt": format!("A {v}")}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &v,
    );
    let v = long('b');
    check(
        post(
            &app,
            "/v1/jobs",
            json!({"model": "toy:pivot", "bench": {"builtin": v.clone()}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &v,
    );
    let v = long('j');
    check(
        get(&app, &format!("/v1/jobs/{v}")).await,
        StatusCode::BAD_REQUEST,
        &v,
    );
    check(
        get(&app, &format!("/v1/correlations/{v}")).await,
        StatusCode::BAD_REQUEST,
        &v,
    );
    check(
        get(&app, &format!("/v2/{v}")).await,
        StatusCode::NOT_FOUND,
        &v,
    );
    let v = long('q');
    check(
        get(
            &app,
            &format!("/v1/batches/01936b8e-7f5a-7cc2-9d1e-3f4a5b6c7d8e/report?{v}=1"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &v,
    );
}

#[tokio::test]
async fn every_input_is_bounded_before_it_is_multiplied() {
    let env = Env::new().await;
    let app = env.app();
    let limits = RequestLimits::default();
    // 16 KB of stop strings is fine alone, but not in each of 9,000 jobs: 144 MB for Redis.
    // (A prompt is stored once, whatever the number of jobs; each job references it.)
    let stop: Vec<String> = (0..16).map(|i| format!("{i}{}", "s".repeat(999))).collect();
    let seeds: Vec<u64> = (0..9_000).collect();
    let m = post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "too-big", "model": "toy:pivot", "prompt": "A", "stop": stop, "seeds": seeds}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &[
            "this request's 9000 jobs",
            "max_request_job_bytes",
            &limits.max_request_job_bytes.to_string(),
        ],
    );
    assert!(m.len() < 1000, "{m}");
    // One prompt over the limit.
    let big = "A".repeat(limits.max_prompt_bytes + 1);
    for body in [
        json!({"correlation_id": "too-big", "model": "toy:pivot", "prompt": big}),
        json!({"correlation_id": "too-big", "model": "toy:pivot", "problems": [{"prompt": "A"}, {"prompt": big}]}),
    ] {
        post(&app, "/v1/jobs", body).await.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &["prompt is 262145 bytes", "max_prompt_bytes", "262144"],
        );
    }
    let tokens = vec![0u32; limits.max_prompt_bytes / 4 + 1];
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "too-big", "model": "toy:pivot", "prompt_tokens": tokens}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["prompt_tokens is", "max_prompt_bytes"],
    );
    // Ids and keys.
    let long_id = "q".repeat(201);
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "too-big", "model": "toy:pivot", "problems": [{"id": long_id, "prompt": "A"}]}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["problems[0].id is 201 characters", "at most 200", "max_id_chars"],
    );
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "too-big", "model": "toy:pivot", "bench": {"records": [{"id": long_id, "prompt": "x", "answer": "1"}]}}),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, &["record id", "max_id_chars"]);
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "c".repeat(201), "model": "toy:pivot", "prompt": "A"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, &["correlation"]);
    // Templates and records.
    let template = format!("{{question}}{}", "t".repeat(limits.max_template_bytes));
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "too-big", "model": "toy:pivot", "bench": {"records": [{"prompt": "x", "answer": "1"}], "template_text": template}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["bench.template_text is", "max_template_bytes", "65536"],
    );
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "too-big", "model": "toy:pivot", "bench": {"records": [{"prompt": big, "answer": "1"}]}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["bench.records[0] is", "max_prompt_bytes"],
    );
    // Nothing reached the queue.
    get(&app, "/v1/correlations/too-big")
        .await
        .error(StatusCode::NOT_FOUND, &["too-big"]);
}

#[tokio::test]
async fn job_compute_is_bounded_by_max_job_tokens() {
    let env = Env::with_limits(RequestLimits {
        max_job_tokens: 1_000_000,
        ..RequestLimits::default()
    })
    .await;
    let app = env.app();
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "costly", "model": "toy:pivot", "prompt": "A", "config": {"method": "power", "n_mcmc": 1000, "max_new_tokens": 3072}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &[
            "n_mcmc x config.max_new_tokens = 1000 x 3072 = 3072000",
            "at most 1000000",
            "max_job_tokens",
        ],
    );
    // max_new_tokens alone, for a method without MCMC.
    post(
        &app,
        "/v1/jobs",
        json!({"correlation_id": "costly", "model": "toy:pivot", "prompt": "A", "config": {"method": "standard", "n_mcmc": 1000, "max_new_tokens": 2000000}}),
    )
    .await
    .error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &["max_new_tokens = 2000000", "max_job_tokens"],
    );
    get(&app, "/v1/correlations/costly")
        .await
        .error(StatusCode::NOT_FOUND, &["costly"]);
    // The default configuration (n_mcmc 10 x max_new_tokens 3072) passes the default limit.
    let default = powerfleet_sampler::SamplerConfig::new(powerfleet_sampler::Method::Power);
    assert!(
        u64::from(default.n_mcmc) * u64::from(default.max_new_tokens)
            <= RequestLimits::default().max_job_tokens
    );
    let env = Env::new().await;
    let app = env.app();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "config": default}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
}

#[tokio::test]
async fn each_token_is_rate_limited_with_429_and_retry_after() {
    let env = Env::with_limits(RequestLimits {
        rate_limit_per_minute: 2,
        ..RequestLimits::default()
    })
    .await;
    let app = env.app_with_tokens(&["alice", "bob"]);
    let request = |token: &str| {
        Request::get("/v1/jobs/not-an-id")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..2 {
        let reply = send(&app, request("alice")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    }
    let response = app.clone().oneshot(request("alice")).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let m = body["error"].as_str().unwrap();
    assert!(
        m.contains("at most 2 per minute per API token") && m.contains("--rate-limit-per-minute"),
        "{m}"
    );
    // Another token has its own budget; a wrong token is refused before it counts.
    let reply = send(&app, request("bob")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    for _ in 0..3 {
        let reply = send(&app, request("mallory")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    }
    // 0 turns the limit off.
    let env = Env::with_limits(RequestLimits {
        rate_limit_per_minute: 0,
        ..RequestLimits::default()
    })
    .await;
    let app = env.app_with_tokens(&["alice"]);
    for _ in 0..5 {
        let reply = send(&app, request("alice")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    }
}

#[tokio::test]
async fn batch_and_correlation_listings_are_paginated_and_count_every_job() {
    let env = Env::new().await;
    let app = env.app();
    let seeds: Vec<u64> = (0..250).collect();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "seeds": seeds, "correlation_id": "paged"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let submitted = job_ids(&reply);
    let batch = reply.body["batch_id"].as_str().unwrap().to_string();

    for base in [
        format!("/v1/batches/{batch}"),
        "/v1/correlations/paged".into(),
    ] {
        // The default page holds 100 jobs; counts and the total cover all 250.
        let first = get(&app, &base).await;
        assert_eq!(first.status, StatusCode::OK, "{first:?}");
        assert_eq!(first.body["jobs"].as_array().unwrap().len(), 100);
        assert_eq!(first.body["total"], 250);
        assert_eq!(first.body["counts"], json!({"queued": 250}));
        // Walking the pages with `after` lists every job once, in submission order.
        let mut listed: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let uri = match &after {
                Some(a) => format!("{base}?limit=70&after={a}"),
                None => format!("{base}?limit=70"),
            };
            let page = get(&app, &uri).await;
            assert_eq!(page.status, StatusCode::OK, "{page:?}");
            let jobs = page.body["jobs"].as_array().unwrap();
            assert!(jobs.len() <= 70);
            listed.extend(
                jobs.iter()
                    .map(|j| j["job_id"].as_str().unwrap().to_string()),
            );
            match page.body["next_after"].as_str() {
                Some(next) => {
                    assert_eq!(next, listed.last().unwrap());
                    after = Some(next.to_string());
                }
                None => break,
            }
        }
        assert_eq!(listed, submitted, "{base}");
        // Bad pages name the parameter and what it may be.
        for (query, needle) in [
            ("limit=0", "limit"),
            ("limit=1001", "from 1 to 1000"),
            ("limit=ten", "limit"),
            ("after=x", "after"),
            ("page=2", "the parameters are limit"),
        ] {
            let bad = get(&app, &format!("{base}?{query}")).await;
            assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}: {bad:?}");
            let error = bad.body["error"].as_str().unwrap();
            assert!(error.contains(needle), "{query}: {error}");
        }
    }
}

#[tokio::test]
async fn a_job_whose_state_vanished_is_reported_as_such() {
    let env = Env::new().await;
    let app = env.app();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "seeds": [0, 1, 2]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let ids = job_ids(&reply);
    let batch = reply.body["batch_id"].as_str().unwrap().to_string();
    // An operator deletes one job's state (or Redis evicts it under memory pressure).
    let client = redis::Client::open(env.redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("pf:{{api-test}}:job:{}", ids[1]))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let status = get(&app, &format!("/v1/batches/{batch}")).await;
    assert_eq!(status.status, StatusCode::OK, "{status:?}");
    assert_eq!(status.body["total"], 3);
    assert_eq!(status.body["counts"], json!({"queued": 2, "dead": 1}));
    let vanished = &status.body["jobs"][1];
    assert_eq!(vanished["job_id"], ids[1].as_str());
    assert_eq!(vanished["status"], "dead");
    assert!(
        vanished["error"]
            .as_str()
            .unwrap()
            .contains("vanished from Redis"),
        "{vanished}"
    );
}

#[tokio::test]
async fn watching_a_batch_costs_two_redis_reads_a_poll_whatever_its_size() {
    use powerfleet_fleet::watch::{Watched, snapshot};
    let env = Env::new().await;
    let app = env.app();
    let seeds: Vec<u64> = (0..2000).collect();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "seeds": seeds, "methods": ["power", "low-temp"], "correlation_id": "watched"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let ids = job_ids(&reply);
    let batch: powerfleet_jobs::BatchId = reply.body["batch_id"].as_str().unwrap().parse().unwrap();
    for id in &ids[..10] {
        let r = post_raw(&app, &format!("/v1/jobs/{id}/cancel"), "").await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let queue = &env.state.queue;
    for watched in [
        Watched::Batch(batch),
        Watched::Correlation("watched".parse().unwrap()),
    ] {
        let before = queue.requests();
        let snap = snapshot(queue, Some(&env.state.store), &watched)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            queue.requests() - before,
            2,
            "{watched:?}: one tally read, and one of the live workers (who serves its models)"
        );
        assert_eq!((snap.tally.total, snap.tally.finished), (4000, 10));
        assert_eq!(snap.tally.by_status.get("cancelled"), Some(&10));
        // The first ten jobs take the two methods in turn.
        assert_eq!(snap.tally.by_method.get("power"), Some(&(5, 2000)));
        assert_eq!(snap.tally.by_method.get("low-temp"), Some(&(5, 2000)));
        assert!(!snap.tally.done());
    }
    // One job is watched through its own state.
    let job: powerfleet_jobs::JobId = ids[0].parse().unwrap();
    let snap = snapshot(queue, None, &Watched::Job(job))
        .await
        .unwrap()
        .unwrap();
    assert!(snap.tally.done());
    assert_eq!(snap.tally.by_status.get("cancelled"), Some(&1));
}

/// The job API's `label` travels with the batch: its submission record has it, and the batch's
/// report knows how many jobs were scheduled while none is stored.
#[tokio::test]
async fn a_labelled_batch_is_recorded_and_its_report_says_partial() {
    let env = Env::new().await;
    let app = env.app();
    let reply = post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "methods": ["power", "low-temp"], "label": "api sweep"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let batch = reply.body["batch_id"].as_str().unwrap().to_string();
    // What a collector does with the submissions stream.
    let queue = &env.state.queue;
    queue.ensure_groups().await.unwrap();
    let read = queue.read_submissions("c", 60_000, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    let record = read[0].record.clone().unwrap();
    assert_eq!(record.batch_id.to_string(), batch);
    assert_eq!(record.label.as_ref().map(|l| l.as_str()), Some("api sweep"));
    assert_eq!(record.scheduled, 2);
    env.state
        .store
        .record_submissions(std::slice::from_ref(&record))
        .await
        .unwrap();
    queue
        .ack_submissions(&[read[0].entry_id.clone()])
        .await
        .unwrap();
    assert!(queue.read_submissions("c", 0, 10).await.unwrap().is_empty());

    let report = get(&app, &format!("/v1/batches/{batch}/report")).await;
    assert_eq!(report.status, StatusCode::OK, "{report:?}");
    assert_eq!(report.body["scheduled"], 2);
    assert_eq!(report.body["stored"], 0);
    assert_eq!(report.body["running"], 2);
    assert_eq!(report.body["complete"], false);

    post(
        &app,
        "/v1/jobs",
        json!({"model": "toy:pivot", "prompt": "A", "label": "two\nlines"}),
    )
    .await
    .error(
        StatusCode::BAD_REQUEST,
        &["label must be 1 to 200 printable characters"],
    );
}
