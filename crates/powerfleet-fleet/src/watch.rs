//! One way to watch jobs until they are done: a job, a batch or a correlation id. A batch or
//! correlation id is read from its tally in Redis (one hash: how many jobs, how many finished, by
//! status and method) and, for what is stored, from SQL's per-batch aggregates, so a poll costs
//! the same for ten jobs as for a hundred thousand. Jobs enqueued before tallies existed are
//! counted from a status listing instead.
//!
//! A watch never gives up on a fixed clock while work moves: it waits for as long as jobs finish
//! or the collector stores results, however slowly. What it waits for is in each [`Poll`]. Only a
//! stall (nothing moved for the [`WatchPolicy`]'s limit) ends it early, with an error that names
//! what did not move and what to check.

use std::time::Duration;

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
    /// While jobs are unfinished: why the jobs of each model that no live worker serves wait
    /// ("no live worker serves model NAME: ...").
    pub unserved: Vec<String>,
}

impl Snapshot {
    /// Jobs not finished yet.
    pub fn unfinished(&self) -> u64 {
        self.tally.total.saturating_sub(self.tally.finished)
    }

    /// Jobs whose results the database does not hold yet.
    pub fn unstored(&self) -> u64 {
        self.tally.total.saturating_sub(self.stored)
    }

    /// What the watch waits for, with a database (`with_store`) or without.
    pub fn phase(&self, with_store: bool) -> Phase {
        if !self.tally.done() {
            Phase::Jobs
        } else if with_store && self.stored < self.tally.total {
            Phase::Storing
        } else {
            Phase::Done
        }
    }
}

/// What a watch waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Jobs to finish (queued, running or waiting for their model).
    Jobs,
    /// Every job has finished; the collector to store their results.
    Storing,
    /// Nothing: every job has finished and, with a database, is stored.
    Done,
}

/// One poll of a watch, as `on_poll` sees it.
#[derive(Clone, Copy, Debug)]
pub struct Poll<'a> {
    /// Where the jobs stand.
    pub snapshot: &'a Snapshot,
    /// What the watch waits for.
    pub phase: Phase,
    /// How long nothing has moved: no job finished, no result stored, no job added.
    pub unmoved_for: Duration,
}

impl Poll<'_> {
    /// What the watch waits for, in words: "waiting for 1,974 of 5,000 jobs to finish",
    /// "waiting for the collector to store 1,974 of 5,000 results".
    pub fn waiting_for(&self) -> String {
        let s = self.snapshot;
        match self.phase {
            Phase::Jobs => format!(
                "waiting for {} of {} jobs to finish",
                thousands(s.unfinished()),
                thousands(s.tally.total)
            ),
            Phase::Storing => format!(
                "waiting for the collector to store {} of {} results",
                thousands(s.unstored()),
                thousands(s.tally.total)
            ),
            Phase::Done => format!("all {} jobs done", thousands(s.tally.total)),
        }
    }
}

/// `n` with thousands separators: 1,974.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How a watch polls, and how long a stall it sits out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchPolicy {
    /// The first pause between two polls; it doubles up to `poll`.
    pub first_poll: Duration,
    /// The longest pause between two polls.
    pub poll: Duration,
    /// While jobs are unfinished: give up after this long without any job finishing (or any
    /// result being stored). `None`: never (a job waiting for its model has the worker's
    /// `--model-patience`, a stuck one the dead-letter limit; a watch need not guess).
    pub jobs_stall: Option<Duration>,
    /// Once every job has finished: give up after this long without the collector storing any
    /// result. `None`: never.
    pub store_stall: Option<Duration>,
}

/// How long a collector may store nothing, with results waiting, before a watch stops waiting
/// for it: far longer than any slow database takes for one result, short enough that a missing
/// collector is reported within a coffee break.
pub const STORE_STALL: Duration = Duration::from_secs(600);

impl Default for WatchPolicy {
    /// Polls every 500 ms; waits for jobs however long they take, and for the collector until
    /// it has stored nothing for [`STORE_STALL`].
    fn default() -> Self {
        WatchPolicy {
            first_poll: Duration::from_millis(500),
            poll: Duration::from_millis(500),
            jobs_stall: None,
            store_stall: Some(STORE_STALL),
        }
    }
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
            snap.unserved = view
                .waiting
                .filter(|w| w.starts_with("no live worker serves model"))
                .into_iter()
                .collect();
            return Ok(Some(snap));
        }
        Watched::Batch(b) => {
            snap.tally = match queue.tally(TallyOf::Batch(*b)).await? {
                Some(t) => t,
                None => match status::batch_status(queue, store, *b, Page::NONE.into()).await? {
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
                None => match status::correlation_status(queue, store, c, Page::NONE.into()).await?
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
    snap.unserved = status::unserved(queue, &snap.tally).await?;
    Ok(Some(snap))
}

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

/// Polls the watched jobs until every one has finished and (with a database) its result is
/// stored, calling `on_poll` after each read. Waits as long as anything moves; errs on a stall
/// longer than `policy` allows, or if nothing is known under the id.
pub async fn watch(
    queue: &Queue,
    store: Option<&Store>,
    watched: &Watched,
    policy: &WatchPolicy,
    on_poll: impl FnMut(&Poll<'_>),
) -> Result<Snapshot, WatchError> {
    follow(
        || snapshot(queue, store, watched),
        store.is_some(),
        policy,
        on_poll,
    )
    .await
}

/// Whether the counts moved since the last poll, and since when they have not.
#[derive(Debug)]
struct Movement {
    counts: Option<(u64, u64, u64)>,
    since: tokio::time::Instant,
}

impl Movement {
    fn new(now: tokio::time::Instant) -> Movement {
        Movement {
            counts: None,
            since: now,
        }
    }

    /// How long the counts of `snap` have not moved, as of `now`.
    fn observe(&mut self, snap: &Snapshot, now: tokio::time::Instant) -> Duration {
        let counts = (snap.tally.total, snap.tally.finished, snap.stored);
        if self.counts != Some(counts) {
            self.counts = Some(counts);
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }
}

/// [`watch`] over any reader of snapshots (the tests give it a scripted one).
async fn follow<F, Fut>(
    mut read: F,
    with_store: bool,
    policy: &WatchPolicy,
    mut on_poll: impl FnMut(&Poll<'_>),
) -> Result<Snapshot, WatchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Snapshot>, StatusError>>,
{
    let mut movement = Movement::new(tokio::time::Instant::now());
    let mut pause = policy.first_poll.min(policy.poll);
    loop {
        let snap = read().await?.ok_or(WatchError::NotFound)?;
        let unmoved_for = movement.observe(&snap, tokio::time::Instant::now());
        let phase = snap.phase(with_store);
        on_poll(&Poll {
            snapshot: &snap,
            phase,
            unmoved_for,
        });
        let limit = match phase {
            Phase::Done => return Ok(snap),
            Phase::Jobs => policy.jobs_stall,
            Phase::Storing => policy.store_stall,
        };
        if limit.is_some_and(|limit| unmoved_for >= limit) {
            return Err(stalled(phase, &snap, unmoved_for));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(policy.poll);
    }
}

fn stalled(phase: Phase, snap: &Snapshot, unmoved_for: Duration) -> WatchError {
    let secs = unmoved_for.as_secs();
    if phase == Phase::Storing {
        WatchError::StoreStalled {
            secs,
            unstored: snap.unstored(),
            total: snap.tally.total,
        }
    } else {
        WatchError::JobsStalled {
            secs,
            unfinished: snap.unfinished(),
            total: snap.tally.total,
        }
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
    /// No job finished (and no result was stored) for the policy's `jobs_stall`.
    #[error(
        "no job finished for {secs} s ({} of {} jobs unfinished); are workers running on this namespace, serving the jobs' model? `powerfleet status` shows what the unfinished jobs wait for",
        thousands(*unfinished),
        thousands(*total)
    )]
    JobsStalled {
        /// How long nothing moved, in seconds.
        secs: u64,
        /// Jobs not finished.
        unfinished: u64,
        /// Jobs watched.
        total: u64,
    },
    /// Every job finished, but the collector stored no result for the policy's `store_stall`.
    #[error(
        "every job finished, but no result reached the results database for {secs} s ({} of {} missing); is a collector running on this namespace, writing to this database? (`powerfleet status` without the database shows the jobs' outcomes from Redis)",
        thousands(*unstored),
        thousands(*total)
    )]
    StoreStalled {
        /// How long nothing was stored, in seconds.
        secs: u64,
        /// Results not stored.
        unstored: u64,
        /// Jobs watched.
        total: u64,
    },
    /// Redis or SQL failed.
    #[error(transparent)]
    Status(#[from] StatusError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `total` jobs of which `finished` have finished and `stored` are in the database.
    fn snap(total: u64, finished: u64, stored: u64) -> Snapshot {
        Snapshot {
            tally: Tally {
                total,
                finished,
                ..Tally::default()
            },
            stored,
            summary: None,
            unserved: Vec::new(),
        }
    }

    const POLICY: WatchPolicy = WatchPolicy {
        first_poll: Duration::from_millis(500),
        poll: Duration::from_millis(500),
        jobs_stall: None,
        store_stall: Some(STORE_STALL),
    };

    #[tokio::test(start_paused = true)]
    async fn a_collector_that_keeps_storing_is_waited_for_however_slow() {
        // Every job has finished; the collector stores one result every 5 s (a loaded machine),
        // so storing all 30 takes 150 s, far longer than any fixed grace.
        let start = tokio::time::Instant::now();
        let read = || async move {
            let stored = (start.elapsed().as_secs() / 5).min(30);
            Ok(Some(snap(30, 30, stored)))
        };
        let mut said = Vec::new();
        let done = follow(read, true, &POLICY, |poll| said.push(poll.waiting_for()))
            .await
            .unwrap();
        assert_eq!(
            done.stored, 30,
            "returned before the collector stored everything"
        );
        assert_eq!(
            said[0],
            "waiting for the collector to store 30 of 30 results"
        );
        assert!(said.contains(&"waiting for the collector to store 1 of 30 results".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_that_keep_finishing_are_waited_for_however_slow() {
        // One job finishes every 20 minutes: each stretch is longer than the store's stall limit,
        // which does not apply while jobs are unfinished.
        let start = tokio::time::Instant::now();
        let read = || async move {
            let finished = (start.elapsed().as_secs() / 1200).min(3);
            Ok(Some(snap(3, finished, finished)))
        };
        let done = follow(read, true, &POLICY, |_| {}).await.unwrap();
        assert_eq!((done.tally.finished, done.stored), (3, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_that_stores_nothing_ends_the_watch_naming_it() {
        let read = || async { Ok(Some(snap(5000, 5000, 3026))) };
        let start = tokio::time::Instant::now();
        let err = follow(read, true, &POLICY, |_| {}).await.unwrap_err();
        assert!(start.elapsed() >= STORE_STALL);
        let message = err.to_string();
        assert!(
            matches!(
                err,
                WatchError::StoreStalled {
                    unstored: 1974,
                    total: 5000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains("1,974 of 5,000 missing")
                && message.contains("is a collector running"),
            "{message}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_database_the_watch_ends_when_every_job_has_finished() {
        // Nothing is ever stored, and no database is watched: the tally decides.
        let read = || async { Ok(Some(snap(4, 4, 0))) };
        let done = follow(read, false, &POLICY, |_| {}).await.unwrap();
        assert_eq!(done.tally.finished, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_limit_on_jobs_ends_a_standstill_and_says_what_to_check() {
        let policy = WatchPolicy {
            jobs_stall: Some(Duration::from_secs(60)),
            ..POLICY
        };
        let read = || async { Ok(Some(snap(10, 4, 4))) };
        let err = follow(read, true, &policy, |_| {}).await.unwrap_err();
        assert!(
            err.to_string().contains("6 of 10 jobs unfinished")
                && err.to_string().contains("are workers running"),
            "{err}"
        );
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1974), "1,974");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
