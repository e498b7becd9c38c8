//! The jobs stream: submissions, reading and reclaiming job entries, claims with their leases,
//! heartbeats, checkpoints, results, hand-backs and waits for a model.

use super::*;

impl Queue {
    /// Records a client's submission key with the fingerprint of its request; returns the batch
    /// and correlation ids and the fingerprint of the first submission under that key (the given
    /// ones if it is new). A key recorded before fingerprints existed returns its own ids and the
    /// given fingerprint.
    pub async fn begin_submission(
        &self,
        key: &str,
        batch_id: BatchId,
        correlation_id: &CorrelationId,
        fingerprint: &str,
    ) -> Result<(BatchId, CorrelationId, String), QueueError> {
        let mut c = self.conn().await?;
        let (b, corr, first): (String, String, String) = self
            .scripts
            .begin_submission
            .key(self.keys.submission(key))
            .arg(batch_id.to_string())
            .arg(correlation_id.as_str())
            .arg(self.options.retention_s)
            .arg(fingerprint)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let parse_err = |detail: String| QueueError::Protocol {
            op: "begin_submission",
            detail,
        };
        Ok((
            b.parse()
                .map_err(|e: powerfleet_jobs::IdError| parse_err(e.to_string()))?,
            corr.parse()
                .map_err(|e: powerfleet_jobs::IdError| parse_err(e.to_string()))?,
            first,
        ))
    }

    /// Enqueues jobs. With a submission key, job `i` of a repeated submission is not enqueued
    /// again: the id it got the first time is returned instead. All jobs of one call must share
    /// one correlation id and batch.
    pub async fn enqueue(
        &self,
        specs: &[JobSpec],
        submission: Option<(&str, usize)>,
    ) -> Result<Vec<JobId>, QueueError> {
        let Some(first) = specs.first() else {
            return Ok(Vec::new());
        };
        if specs
            .iter()
            .any(|s| s.correlation_id != first.correlation_id || s.batch_id != first.batch_id)
        {
            return Err(QueueError::Invalid(
                "all jobs of one enqueue call must share correlation id and batch".into(),
            ));
        }
        let mut c = self.conn().await?;
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(self.keys.model_streams())
            .key(self.keys.correlation(&first.correlation_id))
            .key(
                first
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch(b)),
            )
            .key(submission.map_or(self.keys.unused(), |(k, _)| self.keys.submission(k)))
            .key(self.keys.correlation_tally(&first.correlation_id))
            .key(
                first
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            );
        for s in specs {
            inv.key(self.keys.job(s.job_id))
                .key(self.keys.stream_for(&s.model));
        }
        inv.arg(powerfleet_jobs::now_ms())
            .arg(if first.batch_id.is_some() { "1" } else { "0" })
            .arg(if submission.is_some() { "1" } else { "0" })
            .arg(self.options.retention_s)
            .arg(WORKER_GROUP);
        let offset = submission.map_or(0, |(_, o)| o);
        for (i, s) in specs.iter().enumerate() {
            let spec = serde_json::to_string(s).expect("job specs serialize");
            let named = matches!(ModelRoute::of(&s.model), ModelRoute::Name(_));
            inv.arg(offset + i)
                .arg(s.job_id.to_string())
                .arg(spec)
                .arg(s.correlation_id.as_str())
                .arg(s.batch_id.map(|b| b.to_string()).unwrap_or_default())
                .arg(s.method().as_str())
                .arg(&s.model)
                .arg(if named { "1" } else { "0" });
        }
        let ids: Vec<String> = inv.invoke_async(&mut c).await.map_err(|e| self.err(e))?;
        ids.iter()
            .map(|s| {
                s.parse().map_err(|_| QueueError::Protocol {
                    op: "enqueue",
                    detail: format!("job id {s:?}"),
                })
            })
            .collect()
    }

    /// Reads up to `count` new jobs of the shared stream (model references) for `consumer`,
    /// waiting up to `block_ms` for one: [`Queue::read_subscribed`] with no model names.
    pub async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.read_subscribed(&self.subscription(&[]), consumer, count, block_ms)
            .await
    }

    /// Reads up to `count` new jobs for `consumer` from the streams of `sub`, waiting up to
    /// `block_ms` for one. Never more than `count`: what is there is taken in one script, from
    /// the streams in turn (each read starts at the next stream, so no model starves another);
    /// when nothing is, one blocking read waits on every stream, and an entry beyond `count`
    /// that it brings (several streams filled at once) goes back to the end of its stream.
    pub async fn read_subscribed(
        &self,
        sub: &Subscription,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<Delivery>, QueueError> {
        let count = count.max(1);
        let streams = sub.in_turn();
        let mut c = self.conn().await?;
        let mut invocation = self.scripts.read.prepare_invoke();
        for s in &streams {
            invocation.key(s);
        }
        let reply: Value = invocation
            .arg(WORKER_GROUP)
            .arg(consumer)
            .arg(count)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        // The entries read, and the streams whose group the script had to create.
        let (reply, created) = match reply {
            Value::Array(mut parts) if parts.len() == 2 => {
                let created = parts.pop().expect("two");
                (parts.pop().expect("two"), created)
            }
            other => {
                return Err(QueueError::Protocol {
                    op: "read",
                    detail: format!("a reply of shape {}", shape(&other)),
                });
            }
        };
        if let Value::Array(created) = created {
            for stream in created.into_iter().filter_map(bytes_of) {
                warn_recreated(&String::from_utf8_lossy(&stream), WORKER_GROUP);
            }
        }
        let ready = parse_streams("read", reply)?;
        if !ready.is_empty() || block_ms == 0 {
            return Ok(ready
                .into_iter()
                .map(|(s, e)| Delivery::from_raw(s, e))
                .collect());
        }
        let stream_refs: Vec<&str> = streams.iter().map(String::as_str).collect();
        let mut read: Vec<Delivery> = self
            .read_group(&stream_refs, WORKER_GROUP, consumer, count, block_ms)
            .await?
            .into_iter()
            .map(|(s, e)| Delivery::from_raw(s, e))
            .collect();
        if read.len() > count {
            // An undecodable extra stays pending: it is reclaimed after the lease and
            // dead-lettered then.
            for extra in read.split_off(count) {
                if let Ok(spec) = &extra.spec {
                    self.requeue(spec, &extra, &extra.stream).await?;
                }
            }
        }
        Ok(read)
    }

    /// Takes over up to `count` jobs of the streams of `sub` whose lease expired (idle longer
    /// than `min_idle_ms`).
    pub async fn reclaim_subscribed(
        &self,
        sub: &Subscription,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut out = Vec::new();
        for stream in sub.in_turn() {
            if out.len() >= count {
                break;
            }
            match self
                .reclaim_entries::<Delivery>(&stream, consumer, min_idle_ms, count - out.len())
                .await
            {
                Ok(d) => out.extend(d),
                // A stream no job was ever enqueued to has no group yet: nothing to take over.
                Err(QueueError::Redis { message, .. }) if message.contains("NOGROUP") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Takes over up to `count` jobs of the shared stream whose lease expired (idle longer than
    /// `min_idle_ms`).
    pub async fn reclaim_jobs(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.reclaim_subscribed(&self.subscription(&[]), consumer, min_idle_ms, count)
            .await
    }

    /// Puts a read, unclaimed queued job back at the end of `to` (its own stream, or its model
    /// name's for a job of the shared stream); returns whether it moved (false: the entry was
    /// stale and is only acknowledged).
    pub async fn requeue(
        &self,
        spec: &JobSpec,
        delivery: &Delivery,
        to: &str,
    ) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        let named =
            matches!(ModelRoute::of(&spec.model), ModelRoute::Name(_)) && to != self.keys.jobs();
        let moved: i64 = self
            .scripts
            .requeue
            .key(self.keys.job(spec.job_id))
            .key(&delivery.stream)
            .key(to)
            .key(self.keys.model_streams())
            .arg(WORKER_GROUP)
            .arg(&delivery.entry_id)
            .arg(spec.job_id.to_string())
            .arg(powerfleet_jobs::now_ms())
            .arg(&spec.model)
            .arg(if named { "1" } else { "0" })
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(moved == 1)
    }

    /// Reads up to `count` new entries of `streams` with one blocking `XREADGROUP`, as (stream,
    /// entry) pairs; up to `count` per stream.
    pub(super) async fn read_group(
        &self,
        streams: &[&str],
        group: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<(String, RawEntry)>, QueueError> {
        let mut c = self.blocking_conn().await?;
        // Read as raw values and decoded entry by entry: a typed reply would fail as a whole on
        // one bad entry, and the group would never get past it.
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block_ms.min(MAX_BLOCK.as_millis() as u64))
            .arg("STREAMS")
            .arg(streams);
        for _ in streams {
            cmd.arg(">");
        }
        let reply: Value = match cmd.query_async(&mut c).await.map_err(|e| self.err(e)) {
            // Redis lost a group (FLUSHALL, a new empty server): create it and read again.
            Err(e) if is_nogroup(&e) => {
                drop(c);
                for stream in streams {
                    self.recreate_group(stream, group).await?;
                }
                let mut c = self.blocking_conn().await?;
                cmd.query_async(&mut c).await.map_err(|e| self.err(e))?
            }
            other => other?,
        };
        parse_streams("XREADGROUP", reply)
    }

    pub(super) async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<RawEntry>, QueueError> {
        let mut c = self.conn().await?;
        let start = self
            .reclaim_cursors
            .lock()
            .expect("cursors")
            .get(stream)
            .cloned()
            .unwrap_or_else(|| "0-0".to_string());
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(&start)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        const OP: &str = "XAUTOCLAIM";
        // [next id, claimed entries, deleted ids (Redis 7)], decoded entry by entry.
        let mut items = match reply {
            Value::Array(items) if (2..=3).contains(&items.len()) => items.into_iter(),
            other => {
                return Err(QueueError::Protocol {
                    op: OP,
                    detail: format!("a reply of shape {}", shape(&other)),
                });
            }
        };
        let next = items
            .next()
            .and_then(bytes_of)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| QueueError::Protocol {
                op: OP,
                detail: "no next id".to_string(),
            })?;
        let claimed = RawEntry::parse_list(OP, items.next().unwrap_or(Value::Nil))?;
        // "0-0" means the scan went round: the next one starts from the beginning again.
        self.reclaim_cursors
            .lock()
            .expect("cursors")
            .insert(stream.to_string(), next);
        Ok(claimed)
    }

    /// Claims a delivered job: a new fencing token, the delivery count, and the checkpoint.
    pub async fn claim(
        &self,
        job_id: JobId,
        delivery: &Delivery,
        consumer: &str,
    ) -> Result<ClaimOutcome, QueueError> {
        let entry_id = delivery.entry_id.as_str();
        let token = JobId::new().0.simple().to_string();
        let prompt_key = match delivery.spec.as_ref().ok().and_then(|s| s.prompt.stored()) {
            Some(r) => self.keys.prompt(&r.sha256),
            None => self.keys.unused(),
        };
        let mut c = self.conn().await?;
        let reply: Vec<Value> = self
            .scripts
            .claim
            .key(self.keys.job(job_id))
            .key(self.keys.checkpoint(job_id))
            .key(&delivery.stream)
            .key(prompt_key)
            .arg(entry_id)
            .arg(consumer)
            .arg(powerfleet_jobs::now_ms())
            .arg(WORKER_GROUP)
            .arg(self.options.retention_s)
            .arg(&token)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let proto = |detail: String| QueueError::Protocol {
            op: "claim",
            detail,
        };
        let tag = reply.first().and_then(text).unwrap_or_default();
        match tag.as_str() {
            "missing" => Ok(ClaimOutcome::Missing),
            "stale" => Ok(ClaimOutcome::Stale),
            "final" => {
                let status = reply.get(1).and_then(text).unwrap_or_default();
                Ok(ClaimOutcome::AlreadyFinal(status.parse().map_err(
                    |e: powerfleet_jobs::UnknownStatus| proto(e.to_string()),
                )?))
            }
            "ok" => {
                let int = |i: usize| -> Result<u64, QueueError> {
                    reply
                        .get(i)
                        .and_then(text)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| proto(format!("field {i} of {reply:?}")))
                };
                let bulk = |i: usize| match reply.get(i) {
                    Some(Value::BulkString(b)) => Some(b.clone()),
                    _ => None,
                };
                let checkpoint = bulk(4);
                Ok(ClaimOutcome::Claimed {
                    lease: Lease {
                        job_id,
                        stream: delivery.stream.clone(),
                        entry_id: entry_id.to_string(),
                        fence: int(1)?,
                        token,
                        consumer: consumer.to_string(),
                    },
                    deliveries: int(2)? as u32,
                    cancel_requested: int(3)? == 1,
                    checkpoint,
                    started_at_ms: int(5)?,
                    waiting_since_ms: reply.get(6).and_then(text).and_then(|s| s.parse().ok()),
                    waits: reply
                        .get(7)
                        .and_then(text)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    prompt: bulk(8),
                })
            }
            other => Err(proto(format!("tag {other:?}"))),
        }
    }

    pub(super) fn lease_state(&self, reply: Vec<Value>) -> LeaseState {
        match reply.first().and_then(text).as_deref() {
            Some("1") => LeaseState::Owned {
                cancel: reply.get(1).and_then(text).as_deref() == Some("1"),
            },
            Some("-1") => LeaseState::Vanished,
            _ => LeaseState::Lost,
        }
    }

    /// Renews the lease and records progress, if the lease still holds.
    pub async fn heartbeat(
        &self,
        lease: &Lease,
        progress: &Progress,
    ) -> Result<LeaseState, QueueError> {
        self.renew(lease, progress, None).await
    }

    /// Stores a checkpoint (renewing the lease), if the lease still holds.
    pub async fn checkpoint(
        &self,
        lease: &Lease,
        progress: &Progress,
        checkpoint: &[u8],
    ) -> Result<LeaseState, QueueError> {
        self.renew(lease, progress, Some(checkpoint)).await
    }

    /// The one script behind [`Queue::heartbeat`] and [`Queue::checkpoint`].
    async fn renew(
        &self,
        lease: &Lease,
        progress: &Progress,
        checkpoint: Option<&[u8]>,
    ) -> Result<LeaseState, QueueError> {
        let mut c = self.conn().await?;
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation
            .key(self.keys.job(lease.job_id))
            .key(&lease.stream)
            .arg(lease.fenced())
            .arg(WORKER_GROUP)
            .arg(&lease.consumer)
            .arg(&lease.entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(serde_json::to_string(progress).expect("progress serializes"));
        if let Some(checkpoint) = checkpoint {
            invocation
                .key(self.keys.checkpoint(lease.job_id))
                .arg(checkpoint);
        }
        let reply: Vec<Value> = invocation
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(self.lease_state(reply))
    }

    /// Publishes the final result and acknowledges the entry, if the lease still holds.
    /// `dead_reason` also writes a dead-letter entry (for status `dead`). Returns whether it was
    /// published.
    pub async fn finish(
        &self,
        lease: &Lease,
        result: &JobResult,
        dead_reason: Option<&str>,
    ) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        let published: i64 = self
            .scripts
            .finish
            .key(self.keys.job(lease.job_id))
            .key(self.keys.checkpoint(lease.job_id))
            .key(&lease.stream)
            .key(self.keys.results())
            .key(self.keys.dead())
            .key(self.keys.correlation(&result.correlation_id))
            .key(
                result
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch(b)),
            )
            .key(self.keys.correlation_tally(&result.correlation_id))
            .key(
                result
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            )
            .key(
                result
                    .prompt
                    .as_ref()
                    .and_then(|p| p.stored())
                    .map_or(self.keys.unused(), |r| self.keys.prompt(&r.sha256)),
            )
            .arg(lease.fenced())
            .arg(WORKER_GROUP)
            .arg(&lease.entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(result.status.as_str())
            .arg(lease.job_id.to_string())
            .arg(serde_json::to_string(result).expect("results serialize"))
            .arg(dead_reason.unwrap_or(""))
            .arg(self.options.retention_s)
            .arg(if result.batch_id.is_some() { "1" } else { "0" })
            .arg(result.method.as_str())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(published == 1)
    }

    /// Gives the job back to the queue at once, keeping its checkpoint.
    pub async fn hand_back(&self, lease: &Lease) -> Result<bool, QueueError> {
        self.hand_back_to(lease, None).await
    }

    /// Gives the job back at once to the stream of model name `name` (its own stream when
    /// `None`), keeping its checkpoint: a worker that took over a shared-stream job of a name it
    /// does not map passes it on to the workers that map it. Not a delivery.
    pub async fn hand_back_to(
        &self,
        lease: &Lease,
        name: Option<&str>,
    ) -> Result<bool, QueueError> {
        let to = name.map_or_else(|| lease.stream.clone(), |n| self.keys.model_jobs(n));
        let mut c = self.conn().await?;
        let done: i64 = self
            .scripts
            .hand_back
            .key(self.keys.job(lease.job_id))
            .key(&lease.stream)
            .key(to)
            .key(self.keys.model_streams())
            .arg(lease.fenced())
            .arg(WORKER_GROUP)
            .arg(&lease.entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(lease.job_id.to_string())
            .arg(name.unwrap_or(""))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done == 1)
    }

    /// Puts a running job back to wait for its model until `wait.due_ms`, keeping its
    /// checkpoint: the claim is undone and does not count as a delivery. A job with a
    /// cancellation request is not deferred: its owner finishes it as cancelled.
    pub async fn defer(&self, lease: &Lease, wait: &Wait<'_>) -> Result<Deferral, QueueError> {
        let fence = lease.fenced();
        let done = self
            .defer_entry(lease.job_id, &fence, &lease.stream, &lease.entry_id, wait)
            .await?;
        Ok(match done {
            1 => Deferral::Deferred,
            2 => Deferral::CancelRequested,
            _ => Deferral::Lost,
        })
    }

    /// Puts a queued job whose entry this worker read, but did not claim, back to wait for its
    /// model until `due_ms`: while every server of a model is down, workers leave its jobs alone.
    /// Returns false when the entry is not the job's current one or the job is not queued (the
    /// caller then claims it as usual).
    pub async fn defer_unclaimed(
        &self,
        job_id: JobId,
        delivery: &Delivery,
        wait: &Wait<'_>,
    ) -> Result<bool, QueueError> {
        Ok(self
            .defer_entry(job_id, "", &delivery.stream, &delivery.entry_id, wait)
            .await?
            == 1)
    }

    pub(super) async fn defer_entry(
        &self,
        job_id: JobId,
        fence: &str,
        stream: &str,
        entry_id: &str,
        wait: &Wait<'_>,
    ) -> Result<i64, QueueError> {
        let mut c = self.conn().await?;
        let done: i64 = self
            .scripts
            .defer
            .key(self.keys.job(job_id))
            .key(stream)
            .key(self.keys.delayed())
            .arg(fence)
            .arg(WORKER_GROUP)
            .arg(entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(job_id.to_string())
            .arg(wait.due_ms)
            .arg(wait.reason)
            .arg(wait.since_ms.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done)
    }

    /// Moves up to `limit` jobs whose wait is over back to the jobs stream; returns how many.
    pub async fn promote_due(&self, limit: usize) -> Result<usize, QueueError> {
        let mut c = self.conn().await?;
        let now = powerfleet_jobs::now_ms();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.delayed())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        if due.is_empty() {
            return Ok(0);
        }
        let jobs: Vec<String> = due
            .iter()
            .map(|id| match id.parse::<JobId>() {
                Ok(j) => self.keys.job(j),
                Err(_) => self.keys.unused(),
            })
            .collect();
        let streams = self.streams_of(&jobs).await?;
        let mut moved = 0;
        for ((id, job), stream) in due.iter().zip(jobs).zip(streams) {
            let done: i64 = self
                .scripts
                .promote
                .key(self.keys.delayed())
                .key(stream)
                .key(job)
                .arg(now)
                .arg(id)
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.err(e))?;
            moved += done as usize;
        }
        Ok(moved)
    }

    /// The jobs stream of each job hash in `jobs`, in one pipelined read: its `stream` field,
    /// or the shared stream for a job enqueued before jobs were routed by model name.
    pub(super) async fn streams_of(&self, jobs: &[String]) -> Result<Vec<String>, QueueError> {
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd("HGET").arg(job).arg("stream");
        }
        let streams: Vec<Option<String>> =
            pipe.query_async(&mut c).await.map_err(|e| self.err(e))?;
        Ok(streams
            .into_iter()
            .map(|s| {
                s.filter(|s| !s.is_empty())
                    .unwrap_or_else(|| self.keys.jobs())
            })
            .collect())
    }

    /// How many jobs wait for their model.
    pub async fn delayed_len(&self) -> Result<u64, QueueError> {
        let mut c = self.conn().await?;
        redis::cmd("ZCARD")
            .arg(self.keys.delayed())
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))
    }
}

impl StreamEntry for Delivery {
    type Decoded = JobSpec;
    const GROUP: &'static str = WORKER_GROUP;
    const MAX_BYTES: usize = MAX_ENTRY_BYTES;

    fn decode(fields: &HashMap<&str, &str>) -> Result<JobSpec, String> {
        match (fields.get("job_id"), fields.get("spec")) {
            (Some(job_id), Some(spec)) => serde_json::from_str::<JobSpec>(spec)
                .map_err(|e| format!("spec is not a valid job: {e}"))
                .and_then(|s| {
                    if s.job_id.to_string() == *job_id {
                        Ok(s)
                    } else {
                        Err(format!(
                            "entry job_id {job_id} differs from spec job_id {}",
                            s.job_id
                        ))
                    }
                }),
            _ => Err("entry lacks the job_id and spec fields".to_string()),
        }
    }

    fn new(
        stream: String,
        entry_id: String,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        spec: Result<JobSpec, String>,
    ) -> Delivery {
        Delivery {
            stream,
            entry_id,
            fields,
            spec,
        }
    }
}
