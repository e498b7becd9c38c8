//! What Redis knows of jobs: their state, their batch's and correlation's sets and tallies,
//! cancellation, and each jobs stream's backlog.

use super::*;

/// Whose tally to read.
#[derive(Clone, Copy, Debug)]
pub enum TallyOf<'a> {
    /// A batch's.
    Batch(BatchId),
    /// A correlation id's.
    Correlation(&'a CorrelationId),
}

/// How many jobs a batch or correlation id has, and how many have finished.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Jobs enqueued.
    pub total: u64,
    /// Jobs finished (any final status).
    pub finished: u64,
    /// Finished jobs by status.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Per method: (finished, total).
    pub by_method: std::collections::BTreeMap<String, (u64, u64)>,
    /// Jobs enqueued per model (as submitted: a name or a reference).
    pub by_model: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn from_fields(map: &HashMap<String, u64>) -> Option<Tally> {
        let total = *map.get("total")?;
        let mut t = Tally {
            total,
            finished: map.get("final").copied().unwrap_or(0),
            ..Tally::default()
        };
        for (k, v) in map {
            if let Some(status) = k.strip_prefix("status:") {
                t.by_status.insert(status.to_string(), *v);
            } else if let Some(m) = k.strip_prefix("total:") {
                t.by_method.entry(m.to_string()).or_default().1 = *v;
            } else if let Some(m) = k.strip_prefix("final:") {
                t.by_method.entry(m.to_string()).or_default().0 = *v;
            } else if let Some(m) = k.strip_prefix("m:") {
                t.by_model.insert(m.to_string(), *v);
            }
        }
        Some(t)
    }

    /// Whether every job has finished.
    pub fn done(&self) -> bool {
        self.finished >= self.total
    }
}

/// What `cancel` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled,
    /// The job is running; its worker will stop it between MCMC steps.
    Requested,
    /// The job had already finished with this status.
    AlreadyFinal(JobStatus),
    /// No such job in Redis.
    Missing,
}

/// A job's live state in Redis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobState {
    /// The job.
    pub job_id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// The job specification.
    pub spec: Option<JobSpec>,
    /// Progress, while running.
    pub progress: Option<Progress>,
    /// Claims so far.
    pub deliveries: u32,
    /// The current owner, if running.
    pub owner: Option<String>,
    /// The final result, once finished.
    pub result: Option<JobResult>,
    /// Why it failed or died.
    pub error: Option<String>,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// Last update, ms since the epoch.
    pub updated_at_ms: Option<u64>,
    /// Why a queued job waits for its model, if it does.
    pub waiting: Option<String>,
    /// When a waiting job may run again, ms since the epoch.
    pub not_before_ms: Option<u64>,
}

/// One jobs stream's backlog: what autoscaling and the queue metrics read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamBacklog {
    /// The model name whose stream it is; `None` for the shared stream (model references).
    pub model: Option<String>,
    /// The stream's key (what KEDA's redis-streams scaler is given).
    pub stream: String,
    /// Entries never delivered yet.
    pub queued: u64,
    /// Entries delivered and not yet acknowledged (running, or read by a worker that died).
    pub pending: u64,
}

impl Queue {
    /// Cancels a job: at once if queued (publishing `queued_result`), else by flagging it for its
    /// worker.
    pub async fn cancel(
        &self,
        job_id: JobId,
        queued_result: &JobResult,
    ) -> Result<CancelOutcome, QueueError> {
        let job = self.keys.job(job_id);
        let stream = self.streams_of(std::slice::from_ref(&job)).await?.remove(0);
        let mut c = self.conn().await?;
        let outcome: String = self
            .scripts
            .cancel
            .key(job)
            .key(self.keys.results())
            .key(self.keys.checkpoint(job_id))
            .key(stream)
            .key(self.keys.correlation_tally(&queued_result.correlation_id))
            .key(
                queued_result
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            )
            .arg(powerfleet_jobs::now_ms())
            .arg(job_id.to_string())
            .arg(serde_json::to_string(queued_result).expect("results serialize"))
            .arg(self.options.retention_s)
            .arg(WORKER_GROUP)
            .arg(if queued_result.batch_id.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(queued_result.method.as_str())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        match outcome.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "requested" => Ok(CancelOutcome::Requested),
            "missing" => Ok(CancelOutcome::Missing),
            other => match other.strip_prefix("final:").map(str::parse::<JobStatus>) {
                Some(Ok(status)) => Ok(CancelOutcome::AlreadyFinal(status)),
                _ => Err(QueueError::Protocol {
                    op: "cancel",
                    detail: other.to_string(),
                }),
            },
        }
    }

    /// The tally of a batch's or correlation id's jobs (how many, how many finished, by status and
    /// method), in one read; `None` when Redis holds none (jobs enqueued by an older version, or
    /// all expired).
    pub async fn tally(&self, of: TallyOf<'_>) -> Result<Option<Tally>, QueueError> {
        let key = match of {
            TallyOf::Batch(b) => self.keys.batch_tally(b),
            TallyOf::Correlation(c) => self.keys.correlation_tally(c),
        };
        let mut c = self.conn().await?;
        let map: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Tally::from_fields(&map))
    }

    /// The live state of a job, if Redis still holds it.
    pub async fn job_state(&self, job_id: JobId) -> Result<Option<JobState>, QueueError> {
        let mut c = self.conn().await?;
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.job(job_id))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        JobState::from_fields(job_id, &map)
    }

    /// The live state of each job in `ids`, read in pipelined batches like [`Queue::job_statuses`];
    /// `None` where Redis no longer holds it.
    pub async fn job_states(&self, ids: &[JobId]) -> Result<Vec<Option<JobState>>, QueueError> {
        let maps: Vec<HashMap<String, String>> = self
            .per_job(ids, |pipe, key| {
                pipe.cmd("HGETALL").arg(key);
            })
            .await?;
        ids.iter()
            .zip(&maps)
            .map(|(id, map)| JobState::from_fields(*id, map))
            .collect()
    }

    /// Job ids under a correlation id.
    pub async fn correlation_jobs(&self, id: &CorrelationId) -> Result<Vec<JobId>, QueueError> {
        self.members(self.keys.correlation(id)).await
    }

    /// Job ids of a batch.
    pub async fn batch_jobs(&self, id: BatchId) -> Result<Vec<JobId>, QueueError> {
        self.members(self.keys.batch(id)).await
    }

    pub(super) async fn members(&self, key: String) -> Result<Vec<JobId>, QueueError> {
        let mut c = self.conn().await?;
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let mut ids: Vec<JobId> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        ids.sort();
        Ok(ids)
    }

    /// Jobs queued (never delivered) and pending (delivered, not acknowledged) over every jobs
    /// stream.
    pub async fn job_backlog(&self) -> Result<(u64, u64), QueueError> {
        let streams = self.backlog_by_stream().await?;
        Ok((
            streams.iter().map(|s| s.queued).sum(),
            streams.iter().map(|s| s.pending).sum(),
        ))
    }

    /// Every jobs stream's backlog: the shared stream's, then each model name's, by name.
    /// Acknowledged entries are deleted from jobs streams, so a stream's length is what is
    /// queued plus what is pending. The consumer group's own `lag`, which the scripts that
    /// delete entries keep true (see `lua/lag.lua`), is not read here: Redis before 7.0 has
    /// none, and this count holds on every version.
    pub async fn backlog_by_stream(&self) -> Result<Vec<StreamBacklog>, QueueError> {
        let mut c = self.conn().await?;
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.model_streams())
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        names.sort();
        let mut out = Vec::with_capacity(names.len() + 1);
        let streams = std::iter::once((None, self.keys.jobs())).chain(names.into_iter().map(|n| {
            let key = self.keys.model_jobs(&n);
            (Some(n), key)
        }));
        for (model, stream) in streams {
            let mut pipe = redis::pipe();
            pipe.cmd("XLEN").arg(&stream);
            pipe.cmd("XPENDING").arg(&stream).arg(WORKER_GROUP);
            let mut c = self.conn().await?;
            let reply: redis::RedisResult<(u64, Vec<Value>)> = pipe.query_async(&mut c).await;
            let (len, pending) = match reply {
                Ok((len, summary)) => (
                    len,
                    summary
                        .first()
                        .and_then(text)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                ),
                // No group (nothing was ever enqueued there, or Redis lost it): nothing pending.
                Err(e) if e.to_string().contains("NOGROUP") => (0, 0),
                Err(e) => return Err(self.err(e)),
            };
            out.push(StreamBacklog {
                model,
                stream,
                queued: len.saturating_sub(pending),
                pending,
            });
        }
        Ok(out)
    }

    /// (lag, pending, last-delivered id) of a consumer group.
    pub(super) async fn group_info(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<(u64, u64, String), QueueError> {
        let mut c = self.conn().await?;
        let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let g = groups
            .iter()
            .find(|g| g.get("name").and_then(text).as_deref() == Some(group))
            .ok_or_else(|| QueueError::Protocol {
                op: "XINFO GROUPS",
                detail: format!("no group {group} on {stream}"),
            })?;
        let num = |k: &str| {
            g.get(k)
                .and_then(text)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            num("lag"),
            num("pending"),
            g.get("last-delivered-id")
                .and_then(text)
                .unwrap_or_default(),
        ))
    }

    /// The status of each job in `ids`, read in pipelined batches; `None` where the job's state
    /// is gone (expired after it finished, deleted, or evicted).
    pub async fn job_statuses(&self, ids: &[JobId]) -> Result<Vec<Option<JobStatus>>, QueueError> {
        let statuses: Vec<Option<String>> = self
            .per_job(ids, |pipe, key| {
                pipe.cmd("HGET").arg(key).arg("status");
            })
            .await?;
        Ok(statuses
            .into_iter()
            .map(|s| s.and_then(|s| s.parse().ok()))
            .collect())
    }

    /// One command per job of `ids` on its state key (`add` puts it into the pipeline), sent in
    /// pipelined batches of 1,000; the replies in the order of `ids`.
    pub(super) async fn per_job<T: redis::FromRedisValue>(
        &self,
        ids: &[JobId],
        add: impl Fn(&mut redis::Pipeline, String),
    ) -> Result<Vec<T>, QueueError> {
        let mut c = self.conn().await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                add(&mut pipe, self.keys.job(*id));
            }
            let replies: Vec<T> = pipe.query_async(&mut c).await.map_err(|e| self.err(e))?;
            out.extend(replies);
        }
        Ok(out)
    }
}

impl JobState {
    /// The state of `job_id` from the fields of its hash; `None` when the hash is gone (empty).
    fn from_fields(
        job_id: JobId,
        map: &HashMap<String, String>,
    ) -> Result<Option<JobState>, QueueError> {
        if map.is_empty() {
            return Ok(None);
        }
        let status = map
            .get("status")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| QueueError::Protocol {
                op: "job_state",
                detail: format!("job {job_id} has no valid status"),
            })?;
        let nonempty = |k: &str| map.get(k).filter(|s| !s.is_empty()).cloned();
        Ok(Some(JobState {
            job_id,
            status,
            spec: map.get("spec").and_then(|s| serde_json::from_str(s).ok()),
            progress: map
                .get("progress")
                .and_then(|s| serde_json::from_str(s).ok()),
            deliveries: map
                .get("deliveries")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            owner: nonempty("owner"),
            result: map.get("result").and_then(|s| serde_json::from_str(s).ok()),
            error: nonempty("error"),
            cancel_requested: map.get("cancel").map(String::as_str) == Some("1"),
            updated_at_ms: map.get("updated_at_ms").and_then(|s| s.parse().ok()),
            waiting: nonempty("waiting").filter(|_| status == JobStatus::Queued),
            not_before_ms: nonempty("not_before_ms")
                .filter(|_| status == JobStatus::Queued)
                .and_then(|s| s.parse().ok()),
        }))
    }
}
