//! `powerfleet report`: the report of a benchmark batch from the results database, as a table,
//! CSV, JSONL or Markdown, with figures on request.

use std::io::Write;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use powerfleet_report::{Prices, ReportFormat};

use crate::fleet::{DatabaseArgs, RedisArgs};
use crate::selection::{Run, Selection};

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
    /// What to report on: a batch id, a correlation id, or label=NAME (every batch submitted
    /// with that label).
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
    let selection: Selection = args.id.parse()?;
    let store = args.database.connect().await?;
    let run = Run::load(&store, selection).await?;
    if run.batches() > 1 {
        eprintln!(
            "note: {} spans {} batches; rows pool them by method and configuration (report on one batch id to keep the batches apart)",
            args.id,
            run.batches()
        );
    }
    let mut report = powerfleet_report::build(&args.id, &run.results, &prices);
    let scheduled = run.scheduled();
    let unfinished = match scheduled {
        Some(s) if s > run.results.len() as u64 => run.unfinished(&args.redis).await,
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
