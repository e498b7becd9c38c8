//! Logs and metrics of the long-running commands: the log format, the Prometheus recorder, and
//! the operations endpoints (`/metrics`, `/healthz`, `/readyz`) on their own port.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use powerfleet_fleet::ops::{self, OpsState};
use powerfleet_queue::Queue;
use powerfleet_store::Store;
use tokio_util::sync::CancellationToken;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the structured fields (job_id, correlation_id, ...).
    Json,
}

/// Flushes exported traces when dropped (at the end of `main`).
pub struct TracingGuard(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Logs to stderr at `default_level` unless `RUST_LOG` says otherwise; with `otlp_endpoint`,
/// also exports spans (with their fields: job_id, correlation_id, ...) over OTLP/HTTP.
pub fn init_tracing(
    format: LogFormat,
    default_level: &str,
    otlp_endpoint: Option<&str>,
) -> TracingGuard {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    };
    let (otel, provider) = match otlp_endpoint.map(otlp_provider) {
        Some(Ok(provider)) => {
            use opentelemetry::trace::TracerProvider;
            let tracer = provider.tracer("powerfleet");
            (
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(filter()),
                ),
                Some(provider),
            )
        }
        Some(Err(e)) => {
            eprintln!("warning: traces are not exported: {e}");
            (None, None)
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .init();
    TracingGuard(provider)
}

fn otlp_provider(endpoint: &str) -> Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .build()
        .with_context(|| format!("cannot export traces to --otlp-endpoint {url}"))?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("powerfleet")
                .build(),
        )
        .build())
}

/// Where a role serves its operations endpoints.
#[derive(Args, Debug, Clone)]
pub struct OpsArgs {
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9464); off when unset.
    #[arg(long, env = "POWERFLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Close an HTTP connection whose request headers have not all arrived this long after the
    /// server started waiting for them (new and idle keep-alive connections alike). Applies to
    /// --metrics-listen and to serve's --listen.
    #[arg(long, env = "POWERFLEET_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::options::parse_duration)]
    pub http_header_timeout: std::time::Duration,
    /// Answer 408 and close the connection when a request (its body included) has not been
    /// received and answered this long after its headers. Applies to --metrics-listen and to
    /// serve's --listen.
    #[arg(long, env = "POWERFLEET_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = crate::options::parse_duration)]
    pub http_request_timeout: std::time::Duration,
}

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
const BYTES_BUCKETS: &[f64] = &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

impl OpsArgs {
    /// The HTTP timeouts of --metrics-listen and of serve's --listen.
    pub fn http_timeouts(&self) -> ops::HttpTimeouts {
        ops::HttpTimeouts {
            header_read: self.http_header_timeout,
            request: self.http_request_timeout,
            ..ops::HttpTimeouts::default()
        }
    }

    /// Installs the metrics recorder and serves the endpoints until `stop` is cancelled.
    pub async fn start(
        &self,
        queue: &Queue,
        store: Option<&Store>,
        store_health: Option<&ops::StoreHealth>,
        models: Option<&Arc<powerfleet_fleet::ModelRegistry>>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let Some(addr) = &self.metrics_listen else {
            return Ok(());
        };
        let handle = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(powerfleet_fleet::metrics::CHECKPOINT_BYTES.name.to_string()),
                    BYTES_BUCKETS,
                )
            })
            .context("metric buckets")?
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        powerfleet_fleet::metrics::describe();
        let upkeep = handle.clone();
        let upkeep_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = upkeep_stop.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => upkeep.run_upkeep(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?;
        let state = OpsState {
            render: Arc::new(move || handle.render()),
            queue: queue.clone(),
            store: store.cloned(),
            store_health: store_health.cloned(),
            models: models.cloned(),
        };
        let stop = stop.clone();
        let timeouts = self.http_timeouts();
        tokio::spawn(async move {
            let shutdown = async move { stop.cancelled().await };
            if let Err(e) = ops::serve_with_timeouts(listener, state, timeouts, shutdown).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
        Ok(())
    }
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        t.cancel();
    });
    token
}
