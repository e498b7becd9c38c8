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

/// The live workers as a table: one line each, with when it started (UTC), the names it serves
/// and their references (credentials redacted, as the worker registered them).
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
        "{:<28} {:<20} {:>8} {:>9} {:>10}  {:<20}  models",
        "worker", "host", "version", "in flight", "last seen", "started at"
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
            "{:<28} {:<20} {:>8} {:>9} {:>10}  {:<20}  {models}",
            w.worker_id,
            w.host,
            w.version,
            format!("{}/{}", w.in_flight, w.concurrency),
            format!(
                "{:.1}s ago",
                now.saturating_sub(w.last_seen_ms) as f64 / 1000.0
            ),
            utc(w.started_at_ms),
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

/// Milliseconds since the epoch as a UTC time to the second, in RFC 3339:
/// `2025-12-07T03:29:05Z`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerfleet_queue::ServedModel;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_765_078_145_999), "2025-12-07T03:29:05Z");
        assert_eq!(utc(4_107_542_399_000), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn the_table_lists_each_worker_with_when_it_started_and_what_it_serves() {
        let worker = WorkerRegistration {
            worker_id: "worker-a-1".into(),
            host: "gpu-7".into(),
            version: "0.1.0".into(),
            models: vec![ServedModel {
                name: "m".into(),
                reference: "llamacpp+http://user:***@10.0.0.1:8080".into(),
                context_tokens: Some(4096),
            }],
            concurrency: 4,
            in_flight: 3,
            started_at_ms: 1_765_078_145_000,
            last_seen_ms: 1_765_078_200_000,
            expires_at_ms: 1_765_078_210_000,
        };
        let mut out = Vec::new();
        write_table(&mut out, &[worker], 1_765_078_201_500).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut at = 0;
        for column in [
            "worker",
            "host",
            "version",
            "in flight",
            "last seen",
            "started at",
            "models",
        ] {
            let found = lines[0][at..]
                .find(column)
                .unwrap_or_else(|| panic!("no column {column:?} after {at}: {text}"));
            at += found + column.len();
        }
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "worker-a-1",
                "gpu-7",
                "0.1.0",
                "3/4",
                "1.5s",
                "ago",
                "2025-12-07T03:29:05Z",
                "m=llamacpp+http://user:***@10.0.0.1:8080"
            ],
            "{text}"
        );
        assert_eq!(
            lines[2],
            "1 live worker(s); model names served: m; every worker also runs model references (toy:..., server URLs)"
        );
    }
}
