//! One way to watch jobs until they are done: a job, a batch or a correlation id. A batch or
//! correlation id is read from its tally in Redis (one hash: how many jobs, how many finished, by
//! status and method) and, for what is stored, from SQL's per-batch aggregates, so a poll costs
//! the same for ten jobs as for a hundred thousand. Jobs enqueued before tallies existed are
//! counted from a status listing instead.

use std::time::{Duration, Instant};

use powerfleet_jobs::{BatchId, CorrelationId, JobId};
use powerfleet_queue::{Queue, Tally, TallyOf};
use powerfleet_store::{BatchSummary, Store};

use crate::status::{self, Page, StatusError};

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// One job.
    Job(JobId),
    /// Every job of a batch.
    Batch(BatchId),
    /// Every job under a correlation id.
    Correlation(CorrelationId),
}

/// Where the watched jobs stand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// How many jobs, how many finished, by status and method.
    pub tally: Tally,
    /// How many finished jobs the results database holds (when one is given).
    pub stored: u64,
    /// The batch's aggregates from SQL (a batch only, when a database is given).
    pub summary: Option<BatchSummary>,
}

/// The watched jobs as they stand now, or `None` if nothing is known under the id.
pub async fn snapshot(
    queue: &Queue,
    store: Option<&Store>,
    watched: &Watched,
) -> Result<Option<Snapshot>, StatusError> {
    let mut snap = Snapshot::default();
    match watched {
        Watched::Job(id) => {
            let Some(view) = status::job_view(queue, store, *id).await? else {
                return Ok(None);
            };
            let finished = u64::from(view.status.is_final());
            snap.tally = Tally {
                total: 1,
                finished,
                ..Tally::default()
            };
            if finished == 1 {
                snap.tally.by_status.insert(view.status.to_string(), 1);
            }
            snap.stored = u64::from(view.source == "database");
            return Ok(Some(snap));
        }
        Watched::Batch(b) => {
            snap.tally = match queue.tally(TallyOf::Batch(*b)).await? {
                Some(t) => t,
                None => match status::batch_status(queue, store, *b, EMPTY_PAGE.into()).await? {
                    Some(report) => tally_of(&report),
                    None => return Ok(None),
                },
            };
            if let Some(store) = store {
                snap.summary = store.batch_summary(*b).await?;
                snap.stored = snap.summary.as_ref().map_or(0, |s| s.jobs);
            }
        }
        Watched::Correlation(c) => {
            snap.tally = match queue.tally(TallyOf::Correlation(c)).await? {
                Some(t) => t,
                None => match status::correlation_status(queue, store, c, EMPTY_PAGE.into()).await?
                {
                    Some(report) => tally_of(&report),
                    None => return Ok(None),
                },
            };
            if let Some(store) = store {
                snap.stored = store.statuses_by_correlation(c).await?.len() as u64;
            }
        }
    }
    Ok(Some(snap))
}

/// A listing of counts only.
const EMPTY_PAGE: Page = Page {
    after: None,
    limit: 0,
};

/// A tally from a status listing's counts (no per-method split).
fn tally_of(report: &status::StatusReport) -> Tally {
    let counts = report.counts();
    let mut t = Tally::default();
    for (status, n) in counts {
        t.total += n;
        if status
            .parse::<powerfleet_jobs::JobStatus>()
            .is_ok_and(|s| s.is_final())
        {
            t.finished += n;
            t.by_status.insert(status, n);
        }
    }
    t
}

/// How long [`watch`] waits for the collector to store finished jobs before it returns anyway
/// (jobs whose results never reach SQL must not hold it for good).
pub const STORE_GRACE: Duration = Duration::from_secs(10);

/// Polls the watched jobs every `every` until all have finished and (with a database) their
/// results are stored, or [`STORE_GRACE`] has passed since they finished; calls `on_poll` with
/// each snapshot. Errs if nothing is known under the id.
pub async fn watch(
    queue: &Queue,
    store: Option<&Store>,
    watched: &Watched,
    every: Duration,
    mut on_poll: impl FnMut(&Snapshot),
) -> Result<Snapshot, WatchError> {
    let mut finished_since: Option<Instant> = None;
    loop {
        let snap = snapshot(queue, store, watched)
            .await?
            .ok_or(WatchError::NotFound)?;
        on_poll(&snap);
        if snap.tally.done() {
            let since = *finished_since.get_or_insert_with(Instant::now);
            let stored = store.is_none() || snap.stored >= snap.tally.total;
            if stored || since.elapsed() > STORE_GRACE {
                return Ok(snap);
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Why watching stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Nothing is known under the id.
    #[error(
        "the watched jobs are not found (any more); were they submitted to another namespace, or did they expire?"
    )]
    NotFound,
    /// Redis or SQL failed.
    #[error(transparent)]
    Status(#[from] StatusError),
}
