//! The operations endpoints every long-running role serves on its own port: `/metrics`
//! (Prometheus text), `/healthz` (alive) and `/readyz` (Redis and the database reachable).

use std::future::Future;
use std::sync::Arc;
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
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 2 s".to_string(),
        },
    };
    let ready = redis == "ok" && (database == "ok" || database == "not used");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "redis": redis, "database": database})),
    )
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: OpsState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics and health endpoints listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
