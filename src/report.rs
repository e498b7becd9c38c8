//! `powerfleet report`: the report of a benchmark batch from the results database, as a table,
//! CSV, JSONL or Markdown, with figures on request.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use powerfleet_jobs::{BatchId, CorrelationId};
use powerfleet_report::{Prices, ReportFormat};

use crate::fleet::DatabaseArgs;

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
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn run(args: ReportArgs) -> Result<()> {
    let prices = Prices::parse(args.prices.iter().map(String::as_str))
        .map_err(|e| anyhow::anyhow!("--price: {e}"))?;
    let store = args.database.connect().await?;
    let results = match args.id.parse::<BatchId>() {
        Ok(batch) => store.jobs_by_batch(batch).await?,
        Err(_) => {
            let corr: CorrelationId = args
                .id
                .parse()
                .context("ID must be a batch id or a correlation id")?;
            store.jobs_by_correlation(&corr).await?
        }
    };
    if results.is_empty() {
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
            "note: {} spans {} batches; the report pools them (report on one batch id to keep them apart)",
            args.id,
            batches.len()
        );
    }
    let report = powerfleet_report::build(&args.id, &results, &prices);
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
    Ok(())
}
