//! The operations endpoints every long-running role serves on its own port: `/metrics`
//! (Prometheus text), `/healthz` (alive) and `/readyz` (Redis and the database reachable; for a
//! collector, results being stored; for a worker, the servers of each of its model names
//! answering).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use powerfleet_queue::Queue;
use powerfleet_store::Store;
use serde_json::json;

/// What the endpoints read.
#[derive(Clone)]
pub struct OpsState {
    /// Renders the metrics in the Prometheus text format.
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    /// The queue, checked by `/readyz`.
    pub queue: Queue,
    /// The results database, checked by `/readyz` where the role uses one.
    pub store: Option<Store>,
    /// Whether the role can write the results it must store (a collector's); `/readyz` is
    /// unready while it cannot, though the database answers.
    pub store_health: Option<StoreHealth>,
    /// A worker's model names; `/readyz` is unready, naming the model, until the servers of
    /// each have answered the start-up probe, and while every server of one is down.
    pub models: Option<Arc<crate::ModelRegistry>>,
}

/// The routes.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .with_state(state)
}

/// Whether results can be stored, shared by a collector (which sets it) and `/readyz` (which
/// reports it). The database may answer `SELECT 1` and still refuse every write (a read-only
/// standby after a failover, a full disk, a lock held by another writer): then the collector
/// keeps its results, retries, and is unready until a result is stored again.
#[derive(Clone, Debug, Default)]
pub struct StoreHealth(Arc<StoreHealthInner>);

#[derive(Debug, Default)]
struct StoreHealthInner {
    failure: Mutex<Option<String>>,
    failures: std::sync::atomic::AtomicU64,
}

impl StoreHealth {
    /// Records that storing a result failed for a reason that is not the result's own.
    pub fn failing(&self, error: impl std::fmt::Display) {
        self.0
            .failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.0.failure.lock().expect("store health") = Some(error.to_string());
    }

    /// Records that results are stored again.
    pub fn recovered(&self) {
        *self.0.failure.lock().expect("store health") = None;
    }

    /// Why results cannot be stored, while they cannot.
    pub fn failure(&self) -> Option<String> {
        self.0.failure.lock().expect("store health").clone()
    }

    /// How often storing a result has failed so far (each failure is retried).
    pub fn failures(&self) -> u64 {
        self.0.failures.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (state.render)(),
    )
}

async fn ready(State(state): State<OpsState>) -> impl IntoResponse {
    let check = Duration::from_secs(2);
    let redis = match tokio::time::timeout(check, state.queue.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 2 s".to_string(),
    };
    let database = match &state.store {
        None => "not used".to_string(),
        Some(store) => match tokio::time::timeout(check, store.ping()).await {
            Ok(Ok(())) => match state.store_health.as_ref().and_then(StoreHealth::failure) {
                None => "ok".to_string(),
                Some(e) => format!("cannot store results: {e}"),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 2 s".to_string(),
        },
    };
    let models: serde_json::Map<String, serde_json::Value> = state
        .models
        .as_ref()
        .map(|m| m.readiness())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, why)| (name, json!(why.unwrap_or_else(|| "ok".to_string()))))
        .collect();
    let ready = redis == "ok"
        && (database == "ok" || database == "not used")
        && models.values().all(|v| v == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "redis": redis, "database": database, "models": models})),
    )
}

/// Serves the endpoints on `listener` until `shutdown` resolves, with the default timeouts.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: OpsState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_timeouts(listener, state, HttpTimeouts::default(), shutdown).await
}

/// Serves the endpoints on `listener` until `shutdown` resolves, cutting slow clients off after
/// `timeouts`.
pub async fn serve_with_timeouts(
    listener: tokio::net::TcpListener,
    state: OpsState,
    timeouts: HttpTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics and health endpoints listening");
    serve_router(listener, router(state), timeouts, shutdown).await
}

/// How long an HTTP client may take before its connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// From the moment the server waits for a request (a new connection, or an idle keep-alive
    /// one) until its headers have arrived in full; past it the connection is closed.
    pub header_read: Duration,
    /// From the headers until the response is ready, the request body included; past it the
    /// client gets 408 and the connection is closed.
    pub request: Duration,
    /// In place of `request` for the OpenAI-compatible completions (`/v1/completions`,
    /// `/v1/chat/completions`), which wait for their jobs; their body must still arrive within
    /// `request`. Past it the client gets 408 and the jobs are cancelled.
    pub completion: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            completion: crate::openai::DEFAULT_COMPLETION_TIMEOUT,
        }
    }
}

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown` resolves, then lets open requests
/// finish (each bounded by `timeouts.request`).
///
/// `axum::serve` has no header-read or request timeout: a client that sends its headers (or its
/// body) a byte at a time, or opens connections and sends nothing, would hold a task and a socket
/// for as long as it likes. Here hyper's header-read timeout closes those connections, idle
/// keep-alive ones included, and every request must be answered within `timeouts.request`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let stop = tokio_util::sync::CancellationToken::new();
    // Every connection task holds a sender; once all are dropped, `recv` returns None.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _open = open;
            let request_timeout = timeouts.request;
            let completion_timeout = timeouts.completion;
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let method = request.method().clone();
                        let path = request.uri().path().to_string();
                        let waits =
                            matches!(path.as_str(), "/v1/completions" | "/v1/chat/completions");
                        let request_timeout = if waits {
                            completion_timeout
                        } else {
                            request_timeout
                        };
                        let answer = tokio::time::timeout(
                            request_timeout,
                            app.oneshot(request.map(axum::body::Body::new)),
                        )
                        .await;
                        Ok::<_, std::convert::Infallible>(match answer {
                            Ok(Ok(response)) => response,
                            Ok(Err(never)) => match never {},
                            Err(_) => {
                                tracing::warn!(%peer, %method, %path, timeout_ms = request_timeout.as_millis() as u64, "http request timed out");
                                if waits {
                                    completion_timed_out(request_timeout)
                                } else {
                                    request_timed_out(request_timeout)
                                }
                            }
                        })
                    }
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header_read)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection closed");
            }
        });
    }
    drop(listener);
    stop.cancel();
    drop(open);
    let _ = all_closed.recv().await;
    Ok(())
}

/// 408 for an OpenAI-compatible completion whose jobs outlived the server's completion timeout
/// (they are cancelled as the handler is dropped), in OpenAI's error shape, with
/// `Connection: close`.
fn completion_timed_out(timeout: Duration) -> axum::response::Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        axum::Json(json!({"error": {
            "message": format!(
                "the completion's jobs did not finish within the server's completion timeout of {} s (serve --completion-timeout), so they were cancelled; ask for fewer tokens (max_tokens), chains (n) or prompts, a cheaper power_sampling setting, or a longer timeout from the operator",
                timeout.as_secs_f64()
            ),
            "type": "server_error",
            "param": serde_json::Value::Null,
            "code": "completion_timeout",
        }})),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// 408 with a JSON error, and `Connection: close`: the rest of the body is not read.
fn request_timed_out(timeout: Duration) -> axum::response::Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        axum::Json(json!({
            "error": format!(
                "the request was not received and answered within {} ms (the server's request timeout); send the whole body at once",
                timeout.as_millis()
            )
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
