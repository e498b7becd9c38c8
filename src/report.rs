//! `powerfleet report`: the report of a benchmark batch from the results database, as a table,
//! CSV, JSONL or Markdown, with figures on request.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use powerfleet_jobs::{BatchId, CorrelationId};
use powerfleet_queue::TallyOf;
use powerfleet_report::{Prices, ReportFormat};

use crate::fleet::{DatabaseArgs, RedisArgs};

/// Output formats of `report`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormatArg {
    /// Aligned columns.
    Table,
    /// Comma-separated values: method rows, then problem rows.
    Csv,
    /// One JSON object per line: the batch, its methods, its problems.
    Jsonl,
    /// Markdown tables.
    Markdown,
}

impl From<ReportFormatArg> for ReportFormat {
    fn from(f: ReportFormatArg) -> ReportFormat {
        match f {
            ReportFormatArg::Table => ReportFormat::Table,
            ReportFormatArg::Csv => ReportFormat::Csv,
            ReportFormatArg::Jsonl => ReportFormat::Jsonl,
            ReportFormatArg::Markdown => ReportFormat::Markdown,
        }
    }
}

/// Arguments of `powerfleet report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The batch id (or a correlation id) to report on.
    pub id: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormatArg,
    /// Also write figures (PNG and SVG) into this directory: pass@k by method, acceptance rate
    /// by block, cost multiplier against accuracy.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Price of generated tokens in US dollars per million: USD for every model, or MODEL=USD
    /// (repeatable). Default: the price given at submission, if any.
    #[arg(long = "price")]
    pub prices: Vec<String>,
    /// Exit with status 1 (after writing the report) when the report is partial: fewer results
    /// stored than jobs scheduled.
    #[arg(long)]
    pub require_complete: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Where to ask how many of the batch's jobs are still queued or running (skipped when
    /// Redis cannot be reached).
    #[command(flatten)]
    pub redis: RedisArgs,
}

pub async fn run(args: ReportArgs) -> Result<()> {
    let prices = Prices::parse(args.prices.iter().map(String::as_str))
        .map_err(|e| anyhow::anyhow!("--price: {e}"))?;
    let store = args.database.connect().await?;
    let (results, submissions, tally_of) = match args.id.parse::<BatchId>() {
        Ok(batch) => (
            store.jobs_by_batch(batch).await?,
            store
                .submission(batch)
                .await?
                .into_iter()
                .collect::<Vec<_>>(),
            Tally::Batch(batch),
        ),
        Err(_) => {
            let corr: CorrelationId = args
                .id
                .parse()
                .context("ID must be a batch id or a correlation id")?;
            (
                store.jobs_by_correlation(&corr).await?,
                store.submissions_by_correlation(&corr).await?,
                Tally::Correlation(corr),
            )
        }
    };
    let scheduled =
        (!submissions.is_empty()).then(|| submissions.iter().map(|s| s.scheduled).sum());
    if results.is_empty() && scheduled.is_none() {
        bail!(
            "no stored results for {} in {}; check the id (see `powerfleet status {}`) and that a collector writes to this --database-url",
            args.id,
            store.url(),
            args.id
        );
    }
    let batches: std::collections::BTreeSet<_> = results.iter().map(|r| r.batch_id).collect();
    if batches.len() > 1 {
        eprintln!(
            "note: {} spans {} batches; rows pool them by method and configuration (report on one batch id to keep the batches apart)",
            args.id,
            batches.len()
        );
    }
    let mut report = powerfleet_report::build(&args.id, &results, &prices);
    let unfinished = match scheduled {
        Some(s) if s > results.len() as u64 => unfinished(&args.redis, &tally_of).await,
        _ => None,
    };
    report.set_progress(scheduled, unfinished);
    let mut out = std::io::stdout().lock();
    powerfleet_report::write(&report, args.format.into(), &mut out)?;
    out.flush()?;
    if let Some(dir) = &args.plot {
        let files = powerfleet_report::write_figures(&report, dir)
            .map_err(|e| anyhow::anyhow!("--plot {}: {e}", dir.display()))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    if args.require_complete && !report.complete {
        bail!(
            "the report of {} is partial ({} of {} jobs stored); wait for the batch (`powerfleet status {} --wait`) or drop --require-complete",
            args.id,
            report.stored,
            report.scheduled.unwrap_or_default(),
            args.id
        );
    }
    Ok(())
}

/// Whose jobs the report covers, for the tally in Redis.
enum Tally {
    Batch(BatchId),
    Correlation(CorrelationId),
}

/// Jobs of the batch or correlation id not finished yet, from their tally in Redis; `None` when
/// Redis cannot be reached within a few seconds or has forgotten them.
async fn unfinished(redis: &RedisArgs, of: &Tally) -> Option<u64> {
    let ask = async {
        let queue = redis.connect().await.ok()?;
        let of = match of {
            Tally::Batch(b) => TallyOf::Batch(*b),
            Tally::Correlation(c) => TallyOf::Correlation(c),
        };
        let tally = queue.tally(of).await.ok()??;
        Some(tally.total.saturating_sub(tally.finished))
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}
