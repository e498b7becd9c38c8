//! `powerfleet report`: the report of a benchmark batch from the results database, as a table,
//! CSV, JSONL or Markdown, with figures on request; given several runs, their comparison.

use std::io::Write;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use powerfleet_report::{Prices, Report, ReportFormat};

use crate::fleet::{DatabaseArgs, RedisArgs};
use crate::selection::{Run, Selection};

/// Output formats of `report`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormatArg {
    /// Aligned columns.
    Table,
    /// Comma-separated values: method rows, then problem rows (several runs: a row per run and
    /// method).
    Csv,
    /// One JSON object per line: the batch, its methods, its problems (several runs: the
    /// comparison, its runs, a row per run and method with every number).
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
    /// with that label). Several: the runs side by side, each compared with the first.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormatArg,
    /// Also write figures (PNG and SVG) into this directory: pass@k by method, acceptance rate
    /// by block, cost multiplier against accuracy. Several runs: each run's figures in a
    /// directory of its own, and accuracy against cost of every run.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Price of generated tokens in US dollars per million: USD for every model, or MODEL=USD
    /// (repeatable). Default: the price given at submission, if any.
    #[arg(long = "price")]
    pub prices: Vec<String>,
    /// Exit with status 1 (after writing the report) when the report (of any run) is partial:
    /// fewer results stored than jobs scheduled.
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
    let selections = args
        .ids
        .iter()
        .map(|id| id.parse())
        .collect::<Result<Vec<Selection>>>()?;
    for (i, id) in args.ids.iter().enumerate() {
        if args.ids[..i].contains(id) {
            bail!("{id} is given twice; name each run once");
        }
    }
    let store = args.database.connect().await?;
    let mut reports = Vec::new();
    for (id, selection) in args.ids.iter().zip(selections) {
        reports.push(load(id, selection, &store, &prices, &args.redis).await?);
    }
    let mut out = std::io::stdout().lock();
    if let [report] = &reports[..] {
        powerfleet_report::write(report, args.format.into(), &mut out)?;
        out.flush()?;
        if let Some(dir) = &args.plot {
            figures(report, dir)?;
        }
        if args.require_complete && !report.complete {
            bail!(
                "the report of {} is partial ({} of {} jobs stored); wait for the batch (`powerfleet status {} --wait`) or drop --require-complete",
                report.id,
                report.stored,
                report.scheduled.unwrap_or_default(),
                report.id
            );
        }
        return Ok(());
    }

    let names = powerfleet_report::name_runs(
        &args
            .ids
            .iter()
            .zip(&reports)
            .map(|(id, r)| (id.as_str(), r.label.as_deref()))
            .collect::<Vec<_>>(),
    );
    let comparison = powerfleet_report::compare(names.into_iter().zip(reports).collect());
    powerfleet_report::write_comparison(&comparison, args.format.into(), &mut out)?;
    out.flush()?;
    if let Some(dir) = &args.plot {
        for (run, sub) in comparison.runs.iter().zip(run_dirs(&comparison)) {
            figures(&run.report, &dir.join(sub))?;
        }
        let files = powerfleet_report::write_comparison_figure(&comparison, dir)
            .map_err(|e| anyhow::anyhow!("--plot {}: {e}", dir.display()))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    let partial: Vec<String> = comparison
        .runs
        .iter()
        .filter(|r| !r.report.complete)
        .map(|r| {
            format!(
                "{} ({} of {} jobs stored)",
                r.report.id,
                r.report.stored,
                r.report.scheduled.unwrap_or_default()
            )
        })
        .collect();
    if args.require_complete && !partial.is_empty() {
        bail!(
            "the reports of {} are partial; wait for them (`powerfleet status ID --wait`) or drop --require-complete",
            partial.join(", ")
        );
    }
    Ok(())
}

/// The report of one run, with how many of its jobs are scheduled and still running.
async fn load(
    id: &str,
    selection: Selection,
    store: &powerfleet_store::Store,
    prices: &Prices,
    redis: &RedisArgs,
) -> Result<Report> {
    let run = Run::load(store, selection).await?;
    if run.batches() > 1 {
        eprintln!(
            "note: {id} spans {} batches; rows pool them by method and configuration (report on one batch id to keep the batches apart)",
            run.batches()
        );
    }
    let mut report = powerfleet_report::build(id, &run.results, prices);
    if report.label.is_none() && run.results.is_empty() {
        report.label = run.label();
    }
    let scheduled = run.scheduled();
    let unfinished = match scheduled {
        Some(s) if s > run.results.len() as u64 => run.unfinished(redis).await,
        _ => None,
    };
    report.set_progress(scheduled, unfinished);
    Ok(report)
}

/// Writes the figures of `report` into `dir`, saying which.
fn figures(report: &Report, dir: &std::path::Path) -> Result<()> {
    let files = powerfleet_report::write_figures(report, dir)
        .map_err(|e| anyhow::anyhow!("--plot {}: {e}", dir.display()))?;
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

/// A directory name per run of a comparison: its name with anything but letters, digits, `.`,
/// `-` and `_` made `_`, numbered where two would be the same.
fn run_dirs(comparison: &powerfleet_report::Comparison) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for run in &comparison.runs {
        let base: String = run
            .name
            .chars()
            .take(80)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = match base.trim_start_matches('.') {
            "" => "run".to_string(),
            b => b.to_string(),
        };
        let mut dir = base.clone();
        let mut n = 1;
        while dirs.contains(&dir) {
            n += 1;
            dir = format!("{base}-{n}");
        }
        dirs.push(dir);
    }
    dirs
}
