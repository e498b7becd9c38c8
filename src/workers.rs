//! `powerfleet workers`: the live workers and the model names each one serves.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use powerfleet_jobs::now_ms;
use powerfleet_queue::WorkerRegistration;

use crate::fleet::{OutFormat, RedisArgs};

/// Arguments of `powerfleet workers`.
#[derive(Args, Debug)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
}

pub async fn workers(args: WorkersArgs) -> Result<()> {
    let queue = args.redis.connect().await?;
    let live = queue.live_workers().await?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&live)?)?,
        OutFormat::Text => write_table(&mut out, &live, now_ms())?,
    }
    Ok(())
}

/// The live workers as a table: one line each, with the names it serves and their references.
fn write_table(out: &mut impl Write, live: &[WorkerRegistration], now: u64) -> Result<()> {
    if live.is_empty() {
        writeln!(
            out,
            "no live workers: jobs wait until a worker starts (powerfleet worker --model NAME=REFERENCE)"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:<20} {:>8} {:>9} {:>10}  models",
        "worker", "host", "version", "in flight", "last seen"
    )?;
    for w in live {
        let models = if w.models.is_empty() {
            "(model references only: toy:..., server URLs)".to_string()
        } else {
            w.models
                .iter()
                .map(|m| format!("{}={}", m.name, m.reference))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            out,
            "{:<28} {:<20} {:>8} {:>9} {:>10}  {models}",
            w.worker_id,
            w.host,
            w.version,
            format!("{}/{}", w.in_flight, w.concurrency),
            format!(
                "{:.1}s ago",
                now.saturating_sub(w.last_seen_ms) as f64 / 1000.0
            ),
        )?;
    }
    let names: std::collections::BTreeSet<&str> = live
        .iter()
        .flat_map(|w| w.models.iter().map(|m| m.name.as_str()))
        .collect();
    writeln!(
        out,
        "{} live worker(s); model names served: {}; every worker also runs model references (toy:..., server URLs)",
        live.len(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.into_iter().collect::<Vec<_>>().join(", ")
        }
    )?;
    Ok(())
}
