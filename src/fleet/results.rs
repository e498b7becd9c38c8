//! `powerfleet results`: export finished jobs of a batch or correlation id.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use powerfleet_jobs::JobResult;

use super::*;

/// Export format of `results`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// One JSON result per line.
    Jsonl,
    /// Comma-separated values with a header.
    Csv,
    /// Completed samples as chat-format training data, one JSON record per line: `messages`
    /// (the prompt as a user message, or the job's chat messages, then the completion as the
    /// assistant's), `method`, `alpha`, `problem_id`, `job_id`, `seed`, and `correct` and
    /// `extracted` for graded jobs.
    Sft,
}

/// Arguments of `powerfleet results`.
#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// The batch to export.
    #[arg(long, conflicts_with = "correlation")]
    pub batch: Option<String>,
    /// Export every job under a correlation id instead.
    #[arg(long)]
    pub correlation: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// With --format sft: only samples graded correct.
    #[arg(long)]
    pub correct_only: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn results(args: ResultsArgs) -> Result<()> {
    if args.correct_only && !matches!(args.format, ExportFormat::Sft) {
        bail!("--correct-only needs --format sft");
    }
    let store = args.database.connect().await?;
    let rows = match (&args.batch, &args.correlation) {
        (Some(b), None) => store.jobs_by_batch(b.parse().context("--batch")?).await?,
        (None, Some(c)) => {
            store
                .jobs_by_correlation(&c.parse().context("--correlation")?)
                .await?
        }
        _ => bail!("give --batch ID or --correlation ID"),
    };
    if rows.is_empty() {
        let (flag, id) = match (&args.batch, &args.correlation) {
            (Some(b), _) => ("batch", b),
            (_, Some(c)) => ("correlation id", c),
            _ => unreachable!("one of --batch and --correlation is given"),
        };
        bail!(
            "no results stored for {flag} {id}: its jobs may not have finished yet or the collector has not stored them, or the id is wrong or in another database; see powerfleet status {id}"
        );
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        ExportFormat::Jsonl => {
            for r in &rows {
                serde_json::to_writer(&mut out, r)?;
                writeln!(out)?;
            }
        }
        ExportFormat::Csv => powerfleet_store::write_csv(&rows, &mut out)?,
        ExportFormat::Sft => {
            let records = rows
                .iter()
                .filter_map(JobResult::sft_record)
                .filter(|r| !args.correct_only || r.correct == Some(true));
            let mut written = 0usize;
            for record in records {
                serde_json::to_writer(&mut out, &record)?;
                writeln!(out)?;
                written += 1;
            }
            eprintln!(
                "{written} of {} results written as SFT records (completed, with text and a text or chat prompt{})",
                rows.len(),
                if args.correct_only {
                    ", graded correct"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
