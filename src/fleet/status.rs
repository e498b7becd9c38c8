//! `powerfleet status`: a job's, a batch's or a correlation id's status, once or until done.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_fleet::status::{self, Page, StatusQuery, StatusReport};
use powerfleet_fleet::watch::Watched;
use powerfleet_jobs::JobId;
use powerfleet_queue::TallyOf;

use super::*;

/// Arguments of `powerfleet status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A job id, batch id or correlation id.
    pub id: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The results database the collector writes to (sqlite://FILE or postgres://...): finished
    /// jobs' results and a batch's aggregates come from it, and --wait lasts until every result
    /// is stored there. Without it, status reads the jobs' final states from Redis (which keeps
    /// them for --retention) and --wait follows the jobs in Redis only; no database is opened or
    /// created.
    #[arg(long, env = "POWERFLEET_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Output format. JSON lists every job unless --limit or --after is given.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
    /// Wait until every job is finished and stored, showing progress by method on stderr, then
    /// print the status.
    #[arg(long)]
    pub wait: bool,
    /// List every job of a batch or correlation id, one a line.
    #[arg(long, conflicts_with = "limit")]
    pub jobs: bool,
    /// List at most N jobs of a batch or correlation id.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// List the jobs after this job id (the previous listing's last).
    #[arg(long, value_name = "JOB_ID")]
    pub after: Option<String>,
}

pub async fn status_cmd(args: StatusArgs) -> Result<()> {
    let after = args
        .after
        .as_deref()
        .map(|a| a.parse::<JobId>().context("--after"))
        .transpose()?;
    let listed = args.jobs || args.limit.is_some() || after.is_some();
    let page = Page {
        after,
        limit: match (args.limit, args.format) {
            (Some(n), _) => n,
            (None, OutFormat::Json) => usize::MAX,
            (None, OutFormat::Text) if listed => usize::MAX,
            (None, OutFormat::Text) => 0,
        },
        max_bytes: usize::MAX,
    };
    let queue = args.redis.connect().await?;
    let store = super::optional_store(args.database_url.as_deref()).await?;
    let store = store.as_ref();
    if args.wait {
        let found = status::status(&queue, store, &args.id, Page::NONE.into()).await?;
        let watched = match &found {
            StatusReport::Job(j) => Watched::Job(j.job_id),
            StatusReport::Batch { batch_id, .. } => Watched::Batch(*batch_id),
            StatusReport::Correlation { correlation_id, .. } => {
                Watched::Correlation(correlation_id.clone())
            }
        };
        wait(&queue, store, &watched).await?;
    }
    let query = StatusQuery {
        page,
        problems: true,
    };
    let report = status::status(&queue, store, &args.id, query).await?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        OutFormat::Text => {
            let tally = match &report {
                StatusReport::Job(_) => None,
                StatusReport::Batch { batch_id, .. } => {
                    queue.tally(TallyOf::Batch(*batch_id)).await?
                }
                StatusReport::Correlation { correlation_id, .. } => {
                    queue.tally(TallyOf::Correlation(correlation_id)).await?
                }
            };
            crate::output::write_status(&mut out, &report, tally.as_ref())?
        }
    }
    Ok(())
}
