//! Status by id: a job id, a batch id or a correlation id. In-flight progress comes from Redis,
//! finished results from SQL (falling back to Redis while the collector catches up).

use std::collections::{BTreeMap, HashMap};

use powerfleet_backends::reference::redact_reference;
use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobStatus};
use powerfleet_queue::{Progress, Queue, QueueError, Tally, WorkerRegistration, served};
use powerfleet_store::{BatchSummary, Store, StoreError};
use serde::Serialize;

/// One job as status reports show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobView {
    /// The job.
    pub job_id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// Its method.
    pub method: Option<String>,
    /// Its problem within the batch.
    pub problem_id: Option<String>,
    /// Progress while running.
    pub progress: Option<Progress>,
    /// Claims so far.
    pub attempts: u32,
    /// Why it failed, was cancelled or died.
    pub error: Option<String>,
    /// Why a queued job waits for its model (the server is down, or this worker maps its model
    /// name to another backend than its checkpoint was made with), and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// When a waiting job is tried again, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// The result, once finished.
    pub result: Option<JobResult>,
    /// Where the answer came from: `redis` or `database`.
    pub source: &'static str,
}

/// The status of a job, a batch or a correlation id.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatusReport {
    /// One job.
    Job(Box<JobView>),
    /// Every job of a batch.
    Batch {
        /// The batch.
        batch_id: BatchId,
        /// Jobs by status.
        counts: BTreeMap<String, u64>,
        /// Aggregates of its finished jobs, from SQL.
        summary: Option<Box<BatchSummary>>,
        /// How many jobs it has.
        total: u64,
        /// The last job listed when more follow: ask again with `after` set to it.
        next_after: Option<JobId>,
        /// One page of its jobs, in submission order.
        jobs: Vec<JobView>,
        /// While jobs are unfinished: why those of a model no live worker serves wait.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        unserved: Vec<String>,
        /// What needs a look, when asked for ([`StatusQuery::problems`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        problems: Option<Problems>,
    },
    /// Every job under a correlation id.
    Correlation {
        /// The correlation id.
        correlation_id: CorrelationId,
        /// Jobs by status.
        counts: BTreeMap<String, u64>,
        /// How many jobs it has.
        total: u64,
        /// The last job listed when more follow: ask again with `after` set to it.
        next_after: Option<JobId>,
        /// One page of its jobs, in submission order.
        jobs: Vec<JobView>,
        /// While jobs are unfinished: why those of a model no live worker serves wait.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        unserved: Vec<String>,
        /// What needs a look, when asked for ([`StatusQuery::problems`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        problems: Option<Problems>,
    },
}

impl StatusReport {
    /// Jobs by status (a single job counts once).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        match self {
            StatusReport::Job(j) => BTreeMap::from([(j.status.to_string(), 1)]),
            StatusReport::Batch { counts, .. } | StatusReport::Correlation { counts, .. } => {
                counts.clone()
            }
        }
    }

    /// What needs a look, if it was gathered (never for a single job).
    pub fn problems(&self) -> Option<&Problems> {
        match self {
            StatusReport::Job(_) => None,
            StatusReport::Batch { problems, .. } | StatusReport::Correlation { problems, .. } => {
                problems.as_ref()
            }
        }
    }

    /// The jobs it covers.
    pub fn jobs(&self) -> Vec<&JobView> {
        match self {
            StatusReport::Job(j) => vec![j.as_ref()],
            StatusReport::Batch { jobs, .. } | StatusReport::Correlation { jobs, .. } => {
                jobs.iter().collect()
            }
        }
    }
}

/// A status query that failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Nothing is known under the id.
    #[error(
        "no job, batch or correlation id {0:?} is known to Redis (this namespace) or the results database; check the id, --namespace and --database-url"
    )]
    NotFound(String),
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// SQL failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn from_result(r: JobResult) -> JobView {
    JobView {
        job_id: r.job_id,
        status: r.status,
        method: Some(r.method.to_string()),
        problem_id: r.problem_id.clone(),
        progress: None,
        attempts: r.attempts,
        error: r.error.clone(),
        waiting: None,
        not_before_ms: None,
        result: Some(r),
        source: "database",
    }
}

/// The view of one job, or `None` if neither Redis nor SQL knows it.
pub async fn job_view(
    queue: &Queue,
    store: Option<&Store>,
    id: JobId,
) -> Result<Option<JobView>, StatusError> {
    let state = queue.job_state(id).await?;
    if let Some(s) = &state
        && !s.status.is_final()
    {
        let mut view = live_view(s.clone());
        if view.status == JobStatus::Queued
            && let Some(model) = s.spec.as_ref().map(|sp| sp.model.as_str())
        {
            let live = queue.live_workers().await?;
            mark_unserved(&mut view, model, &live);
        }
        return Ok(Some(view));
    }
    if let Some(store) = store
        && let Some(r) = store.job(id).await?
    {
        return Ok(Some(from_result(r)));
    }
    Ok(state.map(live_view))
}

/// What a job waits for when no live worker serves its model.
pub fn unserved_reason(model: &str) -> String {
    format!(
        "no live worker serves model {}: start a worker with --model {}=REFERENCE (powerfleet workers lists who serves what)",
        redact_reference(model),
        redact_reference(model)
    )
}

/// Says why a queued job waits when none of the `live` workers serves its model (and nothing
/// else is said already).
fn mark_unserved(view: &mut JobView, model: &str, live: &[WorkerRegistration]) {
    if view.status == JobStatus::Queued && view.waiting.is_none() && !served(live, model) {
        view.waiting = Some(unserved_reason(model));
    }
}

/// While `tally`'s jobs are unfinished, why those of each of its models that no live worker
/// serves wait ([`unserved_reason`]); one read of the registrations.
pub async fn unserved(queue: &Queue, tally: &Tally) -> Result<Vec<String>, QueueError> {
    if tally.done() || tally.by_model.is_empty() {
        return Ok(Vec::new());
    }
    let live = queue.live_workers().await?;
    Ok(tally
        .by_model
        .keys()
        .filter(|m| !served(&live, m))
        .map(|m| unserved_reason(m))
        .collect())
}

fn live_view(s: powerfleet_queue::JobState) -> JobView {
    JobView {
        job_id: s.job_id,
        status: s.status,
        method: s.spec.as_ref().map(|sp| sp.method().to_string()),
        problem_id: s.spec.as_ref().and_then(|sp| sp.problem_id.clone()),
        progress: s.progress.filter(|_| s.status == JobStatus::Running),
        attempts: s.deliveries,
        error: s
            .error
            .or_else(|| s.result.as_ref().and_then(|r| r.error.clone())),
        waiting: s.waiting,
        not_before_ms: s.not_before_ms,
        result: s.result,
        source: "redis",
    }
}

/// Which jobs of a batch or correlation id a status report lists: up to `limit` jobs after the
/// job id `after`, in job-id (that is, submission) order, and no more than `max_bytes` of them
/// as JSON (at least one job, however large). Counts always cover every job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// List jobs after this one.
    pub after: Option<JobId>,
    /// List at most this many.
    pub limit: usize,
    /// Stop before the job that would take the listed jobs past this many bytes of JSON.
    pub max_bytes: usize,
}

impl Page {
    /// Every job at once.
    pub const ALL: Page = Page {
        after: None,
        limit: usize::MAX,
        max_bytes: usize::MAX,
    };

    /// No job: counts only.
    pub const NONE: Page = Page {
        after: None,
        limit: 0,
        max_bytes: 0,
    };
}

/// Jobs whose views a listing reads per round trip: what a page holds at once beyond its byte
/// budget is at most this many jobs' views.
pub const PAGE_READ_CHUNK: usize = 16;

/// What a status report of a batch or correlation id holds besides its counts: a page of its
/// jobs, and (when asked) its [`Problems`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusQuery {
    /// Which jobs to list.
    pub page: Page,
    /// Whether to gather the [`Problems`] (a few more reads: up to [`FAILED_READ`] failed jobs,
    /// and the states of up to [`QUEUED_READ`] queued jobs).
    pub problems: bool,
}

impl From<Page> for StatusQuery {
    /// The page, without problems.
    fn from(page: Page) -> StatusQuery {
        StatusQuery {
            page,
            problems: false,
        }
    }
}

/// How many failed jobs [`Problems`] reads with their errors (all are counted).
pub const FAILED_READ: usize = 100;
/// How many queued jobs [`Problems`] reads for what they wait for.
pub const QUEUED_READ: usize = 1000;

/// What needs a look in a batch or correlation id: the jobs that failed or died, and what the
/// queued jobs wait for, per model.
///
/// This is the one place that gathers why jobs do not finish; a new reason (per job, or per model
/// such as whether any live worker serves it) belongs here, beside the others, and is rendered
/// where `Problems` is rendered (the CLI's `status` and `--wait`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Problems {
    /// Failed and dead jobs: how many.
    pub failed_total: u64,
    /// The first [`FAILED_READ`] of them in submission order, with their errors.
    pub failed: Vec<FailedJob>,
    /// Queued jobs: how many.
    pub queued_total: u64,
    /// How many of them were read for `models` (the first [`QUEUED_READ`] in submission order).
    pub queued_read: u64,
    /// The queued jobs read, per model (sorted by model).
    pub models: Vec<ModelQueue>,
}

/// A failed or dead job, as [`Problems`] shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedJob {
    /// The job.
    pub job_id: JobId,
    /// `failed` or `dead`.
    pub status: JobStatus,
    /// Its method.
    pub method: Option<String>,
    /// Its problem within the batch.
    pub problem_id: Option<String>,
    /// Why.
    pub error: Option<String>,
}

/// The queued jobs of one model (among those read), and what they wait for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelQueue {
    /// The model reference as submitted, credentials hidden.
    pub model: String,
    /// Queued jobs of this model.
    pub queued: u64,
    /// Of those, jobs put back to wait for their model (it was unavailable, or the worker maps
    /// the name to another backend than their checkpoint was made with).
    pub waiting: u64,
    /// Why the most recently deferred of them waits, as its worker recorded it.
    pub reason: Option<String>,
    /// When the next of them is tried again, ms since the epoch.
    pub next_try_ms: Option<u64>,
}

impl Problems {
    /// Groups the live states of queued jobs by model.
    fn models_of(states: &[powerfleet_queue::JobState]) -> Vec<ModelQueue> {
        let mut by_model: BTreeMap<String, (ModelQueue, u64)> = BTreeMap::new();
        for s in states {
            let model = s.spec.as_ref().map_or_else(
                || "(unreadable spec)".to_string(),
                |sp| powerfleet_backends::reference::redact_reference(&sp.model),
            );
            let (entry, latest) = by_model.entry(model.clone()).or_insert_with(|| {
                (
                    ModelQueue {
                        model,
                        queued: 0,
                        waiting: 0,
                        reason: None,
                        next_try_ms: None,
                    },
                    0,
                )
            });
            entry.queued += 1;
            if let Some(why) = &s.waiting {
                entry.waiting += 1;
                let updated = s.updated_at_ms.unwrap_or(0);
                if entry.reason.is_none() || updated >= *latest {
                    entry.reason = Some(why.clone());
                    *latest = updated;
                }
                if let Some(t) = s.not_before_ms {
                    entry.next_try_ms = Some(entry.next_try_ms.map_or(t, |n| n.min(t)));
                }
            }
        }
        by_model.into_values().map(|(m, _)| m).collect()
    }
}

/// Why a job is listed without a state: it is in its batch's or correlation's set, but its
/// state is gone from Redis and no result reached the database.
pub const VANISHED: &str = "the job's state vanished from Redis (deleted, expired or evicted) and no result of it reached the results database; it will not run, and its entry is dead-lettered when a worker next reads it";

/// The counts over every job, the views of one page of them, and the problems when asked.
struct Listing {
    counts: BTreeMap<String, u64>,
    total: u64,
    jobs: Vec<JobView>,
    next_after: Option<JobId>,
    problems: Option<Problems>,
}

/// Lists the jobs in `ids` (from Redis) and `stored` (from SQL): counts from a status read of
/// each, full views for the page only (one SQL read and one pipelined Redis read for the page).
async fn list(
    queue: &Queue,
    store: Option<&Store>,
    ids: Vec<JobId>,
    stored: Vec<(JobId, JobStatus)>,
    query: StatusQuery,
) -> Result<Listing, StatusError> {
    let page = query.page;
    let stored: HashMap<JobId, JobStatus> = stored.into_iter().collect();
    let mut all: Vec<JobId> = ids;
    all.extend(stored.keys().copied());
    all.sort();
    all.dedup();
    let live: Vec<JobId> = all
        .iter()
        .copied()
        .filter(|id| !stored.contains_key(id))
        .collect();
    let live_statuses: HashMap<JobId, Option<JobStatus>> = live
        .iter()
        .copied()
        .zip(queue.job_statuses(&live).await?)
        .collect();
    let mut counts = BTreeMap::new();
    let (mut failed, mut queued) = (Vec::new(), Vec::new());
    for id in &all {
        let status = stored
            .get(id)
            .copied()
            .or_else(|| live_statuses.get(id).copied().flatten())
            .unwrap_or(JobStatus::Dead);
        *counts.entry(status.to_string()).or_insert(0) += 1;
        match status {
            JobStatus::Failed | JobStatus::Dead => failed.push(*id),
            JobStatus::Queued => queued.push(*id),
            _ => {}
        }
    }
    let start = page
        .after
        .map_or(0, |after| all.partition_point(|id| *id <= after));
    let end = start.saturating_add(page.limit).min(all.len());
    // The page's views, a few jobs per read, until the page is full in jobs or in bytes.
    let mut jobs = Vec::new();
    let mut bytes = 0usize;
    'read: for chunk in all[start..end].chunks(PAGE_READ_CHUNK) {
        for view in views(queue, store, chunk, &stored).await? {
            let size = crate::producer::json_len(&view);
            if !jobs.is_empty() && bytes.saturating_add(size) > page.max_bytes {
                break 'read;
            }
            bytes = bytes.saturating_add(size);
            jobs.push(view);
        }
    }
    let shown = start + jobs.len();
    let next_after = (shown < all.len())
        .then(|| jobs.last().map(|v| v.job_id))
        .flatten();
    let problems = if query.problems {
        let failed_views = views(
            queue,
            store,
            &failed[..failed.len().min(FAILED_READ)],
            &stored,
        )
        .await?;
        let read = &queued[..queued.len().min(QUEUED_READ)];
        let states: Vec<powerfleet_queue::JobState> = queue
            .job_states(read)
            .await?
            .into_iter()
            .flatten()
            .collect();
        Some(Problems {
            failed_total: failed.len() as u64,
            failed: failed_views
                .into_iter()
                .map(|v| FailedJob {
                    job_id: v.job_id,
                    status: v.status,
                    method: v.method,
                    problem_id: v.problem_id,
                    error: v.error,
                })
                .collect(),
            queued_total: queued.len() as u64,
            queued_read: read.len() as u64,
            models: Problems::models_of(&states),
        })
    } else {
        None
    };
    Ok(Listing {
        counts,
        total: all.len() as u64,
        jobs,
        next_after,
        problems,
    })
}

/// The views of `ids`: stored results from SQL (one read), the others' live states from Redis
/// (one pipelined read).
async fn views(
    queue: &Queue,
    store: Option<&Store>,
    ids: &[JobId],
    stored: &HashMap<JobId, JobStatus>,
) -> Result<Vec<JobView>, StatusError> {
    let in_sql: Vec<JobId> = ids
        .iter()
        .copied()
        .filter(|id| stored.contains_key(id))
        .collect();
    let mut results: HashMap<JobId, JobResult> = match store {
        Some(store) if !in_sql.is_empty() => store
            .jobs_in(&in_sql)
            .await?
            .into_iter()
            .map(|r| (r.job_id, r))
            .collect(),
        _ => HashMap::new(),
    };
    let live: Vec<JobId> = ids
        .iter()
        .copied()
        .filter(|id| !results.contains_key(id))
        .collect();
    let mut states: HashMap<JobId, powerfleet_queue::JobState> = live
        .iter()
        .copied()
        .zip(queue.job_states(&live).await?)
        .filter_map(|(id, state)| Some((id, state?)))
        .collect();
    let live_workers = if states.values().any(|s| s.status == JobStatus::Queued) {
        queue.live_workers().await?
    } else {
        Vec::new()
    };
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = results.remove(id) {
            jobs.push(from_result(r));
        } else if let Some(s) = states.remove(id) {
            let model = s.spec.as_ref().map(|sp| sp.model.clone());
            let mut view = live_view(s);
            if let Some(model) = model {
                mark_unserved(&mut view, &model, &live_workers);
            }
            jobs.push(view);
        } else {
            jobs.push(vanished_view(*id));
        }
    }
    Ok(jobs)
}

fn vanished_view(job_id: JobId) -> JobView {
    JobView {
        job_id,
        status: JobStatus::Dead,
        method: None,
        problem_id: None,
        progress: None,
        attempts: 0,
        error: Some(VANISHED.to_string()),
        waiting: None,
        not_before_ms: None,
        result: None,
        source: "redis",
    }
}

/// The status of a batch, listing what `query` asks for, or `None` if unknown.
pub async fn batch_status(
    queue: &Queue,
    store: Option<&Store>,
    id: BatchId,
    query: StatusQuery,
) -> Result<Option<StatusReport>, StatusError> {
    let ids = queue.batch_jobs(id).await?;
    let (stored, summary) = match store {
        Some(s) => (s.statuses_by_batch(id).await?, s.batch_summary(id).await?),
        None => (Vec::new(), None),
    };
    if ids.is_empty() && stored.is_empty() {
        return Ok(None);
    }
    let listing = list(queue, store, ids, stored, query).await?;
    let unserved = unserved_of(queue, powerfleet_queue::TallyOf::Batch(id)).await?;
    Ok(Some(StatusReport::Batch {
        unserved,
        batch_id: id,
        counts: listing.counts,
        summary: summary.map(Box::new),
        total: listing.total,
        next_after: listing.next_after,
        jobs: listing.jobs,
        problems: listing.problems,
    }))
}

/// The status of a correlation id, listing what `query` asks for, or `None` if unknown.
pub async fn correlation_status(
    queue: &Queue,
    store: Option<&Store>,
    id: &CorrelationId,
    query: StatusQuery,
) -> Result<Option<StatusReport>, StatusError> {
    let ids = queue.correlation_jobs(id).await?;
    let stored = match store {
        Some(s) => s.statuses_by_correlation(id).await?,
        None => Vec::new(),
    };
    if ids.is_empty() && stored.is_empty() {
        return Ok(None);
    }
    let listing = list(queue, store, ids, stored, query).await?;
    let unserved = unserved_of(queue, powerfleet_queue::TallyOf::Correlation(id)).await?;
    Ok(Some(StatusReport::Correlation {
        unserved,
        correlation_id: id.clone(),
        counts: listing.counts,
        total: listing.total,
        next_after: listing.next_after,
        jobs: listing.jobs,
        problems: listing.problems,
    }))
}

/// While a batch's or correlation's jobs are unfinished, why those of each model that no live
/// worker serves wait ([`unserved_reason`]).
async fn unserved_of(
    queue: &Queue,
    of: powerfleet_queue::TallyOf<'_>,
) -> Result<Vec<String>, QueueError> {
    match queue.tally(of).await? {
        Some(t) => unserved(queue, &t).await,
        None => Ok(Vec::new()),
    }
}

/// The status of whatever `id` names: a job, then a batch, then a correlation id (listing what
/// `query` asks for).
pub async fn status(
    queue: &Queue,
    store: Option<&Store>,
    id: &str,
    query: StatusQuery,
) -> Result<StatusReport, StatusError> {
    let id = id.trim();
    if let Ok(job) = id.parse::<JobId>() {
        if let Some(v) = job_view(queue, store, job).await? {
            return Ok(StatusReport::Job(Box::new(v)));
        }
        if let Some(r) = batch_status(queue, store, BatchId(job.0), query).await? {
            return Ok(r);
        }
    }
    if let Ok(corr) = id.parse::<CorrelationId>()
        && let Some(r) = correlation_status(queue, store, &corr, query).await?
    {
        return Ok(r);
    }
    Err(StatusError::NotFound(id.to_string()))
}

#[cfg(test)]
mod tests {
    use powerfleet_jobs::{JobSpec, Prompt};
    use powerfleet_queue::JobState;
    use powerfleet_sampler::{Method, SamplerConfig};

    use super::*;

    /// A queued job of `model`, waiting for it (`why`, deferred at `at_ms` until `until_ms`) or not.
    fn queued(model: &str, waiting: Option<(&str, u64, u64)>) -> JobState {
        let job_id = JobId::new();
        JobState {
            job_id,
            status: JobStatus::Queued,
            spec: Some(JobSpec {
                job_id,
                ..JobSpec::new(
                    model,
                    Prompt::Text(String::new()),
                    SamplerConfig::new(Method::Power),
                )
            }),
            progress: None,
            deliveries: 1,
            owner: None,
            result: None,
            error: None,
            cancel_requested: false,
            updated_at_ms: waiting.map(|(_, at, _)| at),
            waiting: waiting.map(|(why, _, _)| why.to_string()),
            not_before_ms: waiting.map(|(_, _, until)| until),
        }
    }

    #[test]
    fn queued_jobs_are_grouped_by_model_with_the_latest_reason_and_the_next_try() {
        let url = "vllm+http://user:secret@gpu1:8000";
        let models = Problems::models_of(&[
            queued(url, Some(("down since 10 s", 1_000, 9_000))),
            queued(url, Some(("down since 40 s", 4_000, 7_000))),
            queued(url, None),
            queued("toy:pivot", None),
        ]);
        assert_eq!(models.len(), 2, "{models:?}");
        let toy = models.iter().find(|m| m.model == "toy:pivot").unwrap();
        assert_eq!((toy.queued, toy.waiting, &toy.reason), (1, 0, &None));
        let server = models.iter().find(|m| m.model != "toy:pivot").unwrap();
        assert!(
            !server.model.contains("secret"),
            "credentials hidden: {}",
            server.model
        );
        assert_eq!((server.queued, server.waiting), (3, 2));
        assert_eq!(server.reason.as_deref(), Some("down since 40 s"));
        assert_eq!(server.next_try_ms, Some(7_000));
    }
}
