//! What a report or an export covers: a batch id, a correlation id or `label=NAME`, with the
//! results and submission records stored for it.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use powerfleet_jobs::{BatchId, CorrelationId, JobResult, Label, SubmissionRecord};
use powerfleet_queue::TallyOf;
use powerfleet_store::Store;

use crate::fleet::RedisArgs;

/// One run named on the command line.
#[derive(Clone, Debug)]
pub enum Selection {
    /// One submitted batch.
    Batch(BatchId),
    /// Every batch submitted under a correlation id.
    Correlation(CorrelationId),
    /// Every batch submitted with a label (`label=NAME`).
    Label(Label),
}

impl FromStr for Selection {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Selection> {
        if let Some(label) = s.strip_prefix("label=") {
            return label
                .parse()
                .map(Selection::Label)
                .map_err(|e| anyhow::anyhow!("{s:?}: {e}"));
        }
        if let Ok(batch) = s.parse() {
            return Ok(Selection::Batch(batch));
        }
        s.parse().map(Selection::Correlation).map_err(|e| {
            anyhow::anyhow!(
                "{s:?} is not a batch id, a correlation id or label=NAME ({e}); `powerfleet status` lists a submission's ids"
            )
        })
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::Batch(b) => write!(f, "{b}"),
            Selection::Correlation(c) => write!(f, "{c}"),
            Selection::Label(l) => write!(f, "label={l}"),
        }
    }
}

/// The stored results of a selection and the records of its submitted batches.
pub struct Run {
    pub selection: Selection,
    pub results: Vec<JobResult>,
    pub submissions: Vec<SubmissionRecord>,
}

impl Run {
    /// Reads the selection's results and submissions; fails when neither exists, with what to
    /// check. A UUID that no stored batch has is read as a correlation id (generated ones are
    /// UUIDs too), and the run's `selection` says so.
    pub async fn load(store: &Store, selection: Selection) -> Result<Run> {
        let (mut results, mut submissions) = Self::read(store, &selection).await?;
        let mut selection = selection;
        // A generated correlation id is a UUID, as a batch id is: a UUID no batch has is tried
        // as a correlation id.
        if let Selection::Batch(b) = &selection
            && results.is_empty()
            && submissions.is_empty()
        {
            let correlation = Selection::Correlation(b.to_string().parse()?);
            (results, submissions) = Self::read(store, &correlation).await?;
            if !(results.is_empty() && submissions.is_empty()) {
                selection = correlation;
            }
        }
        if results.is_empty() && submissions.is_empty() {
            bail!(
                "no stored results or submissions for {selection} in {}; check the id (see `powerfleet status`) and that a collector writes to this --database-url",
                store.url(),
            );
        }
        Ok(Run {
            selection,
            results,
            submissions,
        })
    }

    /// The stored results and submission records of `selection`.
    async fn read(
        store: &Store,
        selection: &Selection,
    ) -> Result<(Vec<JobResult>, Vec<SubmissionRecord>)> {
        Ok(match selection {
            Selection::Batch(b) => (
                store.jobs_by_batch(*b).await?,
                store.submission(*b).await?.into_iter().collect(),
            ),
            Selection::Correlation(c) => (
                store.jobs_by_correlation(c).await?,
                store.submissions_by_correlation(c).await?,
            ),
            Selection::Label(l) => (
                store.jobs_by_label(l).await?,
                store.submissions_by_label(l).await?,
            ),
        })
    }

    /// How many jobs the run's submissions scheduled; `None` when no submission was recorded
    /// (batches submitted before the record existed).
    pub fn scheduled(&self) -> Option<u64> {
        (!self.submissions.is_empty()).then(|| self.submissions.iter().map(|s| s.scheduled).sum())
    }

    /// The label every submission of the run was made with, if they share one.
    pub fn label(&self) -> Option<String> {
        let mut labels = self.submissions.iter().map(|s| s.label.as_ref());
        let first = labels.next()??;
        labels
            .all(|l| l == Some(first))
            .then(|| first.as_str().to_string())
    }

    /// How many of the run's batches its stored results span.
    pub fn batches(&self) -> usize {
        let mut batches: std::collections::BTreeSet<BatchId> =
            self.results.iter().filter_map(|r| r.batch_id).collect();
        batches.extend(self.submissions.iter().map(|s| s.batch_id));
        batches.len()
    }

    /// Jobs of the run not finished yet, from their tallies in Redis; `None` when Redis cannot
    /// be reached within a few seconds or has forgotten them.
    pub async fn unfinished(&self, redis: &RedisArgs) -> Option<u64> {
        let ask = async {
            let queue = redis.connect().await.ok()?;
            match &self.selection {
                Selection::Batch(b) => {
                    let t = queue.tally(TallyOf::Batch(*b)).await.ok()??;
                    Some(t.total.saturating_sub(t.finished))
                }
                Selection::Correlation(c) => {
                    let t = queue.tally(TallyOf::Correlation(c)).await.ok()??;
                    Some(t.total.saturating_sub(t.finished))
                }
                Selection::Label(_) => {
                    let mut left = 0;
                    for s in &self.submissions {
                        let t = queue.tally(TallyOf::Batch(s.batch_id)).await.ok()??;
                        left += t.total.saturating_sub(t.finished);
                    }
                    Some(left)
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(3), ask)
            .await
            .ok()
            .flatten()
    }
}
