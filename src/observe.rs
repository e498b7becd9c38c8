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

/// Logs to stderr at `default_level` unless `RUST_LOG` says otherwise.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Where a role serves its operations endpoints.
#[derive(Args, Debug, Clone)]
pub struct OpsArgs {
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9464); off when unset.
    #[arg(long, env = "POWERFLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
const BYTES_BUCKETS: &[f64] = &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

impl OpsArgs {
    /// Installs the metrics recorder and serves the endpoints until `stop` is cancelled.
    pub async fn start(
        &self,
        queue: &Queue,
        store: Option<&Store>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let Some(addr) = &self.metrics_listen else {
            return Ok(());
        };
        let handle = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(powerfleet_fleet::metrics::CHECKPOINT_BYTES.to_string()),
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
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = ops::serve(listener, state, async move { stop.cancelled().await }).await
            {
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
