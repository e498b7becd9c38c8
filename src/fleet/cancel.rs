//! `powerfleet cancel`: cancel a job, a batch or every job under a correlation id.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Args;
use powerfleet_fleet::control;
use powerfleet_jobs::{BatchId, CorrelationId, JobId};
use powerfleet_queue::CancelOutcome;

use super::*;

/// Arguments of `powerfleet cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The job to cancel.
    pub job_id: Option<String>,
    /// Cancel every job under this correlation id.
    #[arg(long, conflicts_with_all = ["job_id", "batch"])]
    pub correlation: Option<String>,
    /// Cancel every job of this batch.
    #[arg(long, conflicts_with = "job_id")]
    pub batch: Option<String>,
    /// With --batch or --correlation: a line per job before the summary.
    #[arg(long)]
    pub jobs: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
}

pub async fn cancel(args: CancelArgs) -> Result<()> {
    let queue = args.redis.connect().await?;
    let outcomes = match (&args.job_id, &args.correlation, &args.batch) {
        (Some(id), None, None) => {
            let id: JobId = id.parse().context("JOB_ID")?;
            vec![(id, control::cancel_job(&queue, id).await?)]
        }
        (None, Some(c), None) => {
            let c: CorrelationId = c.parse().context("--correlation")?;
            control::cancel_correlation(&queue, &c).await?
        }
        (None, None, Some(b)) => {
            let b: BatchId = b.parse().context("--batch")?;
            control::cancel_batch(&queue, b).await?
        }
        _ => bail!("give a JOB_ID, --correlation ID or --batch ID"),
    };
    if outcomes.is_empty() {
        bail!("no jobs found to cancel; check the id and --namespace");
    }
    {
        let mut out = std::io::stdout().lock();
        crate::output::write_cancel(&mut out, &outcomes, args.job_id.is_some(), args.jobs)?;
        out.flush()?;
    }
    if outcomes.iter().all(|(_, o)| *o == CancelOutcome::Missing) {
        bail!(
            "no such job in Redis (namespace {}); check the id",
            args.redis.namespace
        );
    }
    Ok(())
}
