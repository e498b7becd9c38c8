//! Dead letters: entries given up on, with the dead result of the job they name.

use super::*;

impl Queue {
    /// Moves an undecodable job entry to the dead-letter stream. When it names a job that this
    /// marks dead (or whose state is gone), the job's `dead` result is published too, so it
    /// reaches the results database like every other finished job.
    pub async fn dead_letter_job_entry(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), QueueError> {
        let job_id = delivery
            .fields
            .iter()
            .find(|(k, _)| k == b"job_id")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<JobId>().ok());
        let result = match job_id {
            Some(id) => {
                self.dead_result(id, delivery.spec.as_ref().ok(), reason)
                    .await?
            }
            None => None,
        };
        self.dead_letter(
            StreamOf::Jobs(&delivery.stream),
            job_id,
            &delivery.entry_id,
            reason,
            &delivery.fields,
            result.as_ref(),
        )
        .await
    }

    /// The `dead` result of job `id`, as JSON: made from the specification in its state, else
    /// from the entry's own (read leniently, so a newer producer's job still gets one); `None`
    /// when neither can be read.
    pub(super) async fn dead_result(
        &self,
        id: JobId,
        entry_spec: Option<&JobSpec>,
        reason: &str,
    ) -> Result<Option<JobResult>, QueueError> {
        let mut c = self.conn().await?;
        let (spec, deliveries): (Option<String>, Option<u32>) = redis::cmd("HMGET")
            .arg(self.keys.job(id))
            .arg("spec")
            .arg("deliveries")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let deliveries = deliveries.unwrap_or(0);
        let result = spec
            .and_then(|json| JobResult::dead_from_spec_json(&json, deliveries, reason))
            .or_else(|| {
                entry_spec.map(|spec| {
                    JobResult::for_spec(spec, JobStatus::Dead, deliveries, Some(reason.to_string()))
                })
            })
            .filter(|r| r.job_id == id);
        Ok(result)
    }

    /// Dead-letters the entry of a claimed job whose state vanished from Redis while it ran
    /// (deleted, or evicted under memory pressure), publishes its `dead` result, and lets its
    /// checkpoint expire: nobody can finish the job, and nothing of it should stay for good.
    pub async fn dead_letter_vanished(
        &self,
        lease: &Lease,
        spec: &JobSpec,
    ) -> Result<(), QueueError> {
        let reason = format!(
            "the state of job {} vanished from Redis while it ran (deleted, or evicted under memory pressure: use maxmemory-policy noeviction)",
            lease.job_id
        );
        let fields = [
            (b"job_id".to_vec(), lease.job_id.to_string().into_bytes()),
            (
                b"spec".to_vec(),
                serde_json::to_vec(spec).expect("a job spec serializes"),
            ),
        ];
        let result = self.dead_result(lease.job_id, Some(spec), &reason).await?;
        self.dead_letter(
            StreamOf::Jobs(&lease.stream),
            Some(lease.job_id),
            &lease.entry_id,
            &reason,
            &fields,
            result.as_ref(),
        )
        .await
    }

    /// Moves a result entry that cannot be stored (undecodable, or refused by the database
    /// however often it is tried) to the dead-letter stream, with its whole payload.
    pub async fn dead_letter_result_entry(
        &self,
        delivery: &ResultDelivery,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.dead_letter(
            StreamOf::Results,
            None,
            &delivery.entry_id,
            reason,
            &delivery.fields,
            None,
        )
        .await
    }
    pub(super) async fn dead_letter(
        &self,
        stream: StreamOf<'_>,
        job: Option<JobId>,
        entry_id: &str,
        reason: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        dead_result: Option<&JobResult>,
    ) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let mut payload = payload_of(fields);
        // A result is kept whole (it is the only copy of the work); a job entry's head is
        // enough (its job's state keeps the specification), which keeps the stream small.
        let keep = match stream {
            StreamOf::Jobs(_) => 64 * 1024,
            StreamOf::Results => 2 * MAX_RESULT_BYTES,
        };
        if payload.len() > keep {
            let mut cut = keep;
            while !payload.is_char_boundary(cut) {
                cut -= 1;
            }
            payload.truncate(cut);
            payload.push_str("...(truncated)");
        }
        let _: i64 = self
            .scripts
            .dead_letter
            .key(match stream {
                StreamOf::Jobs(s) => s.to_string(),
                StreamOf::Results => self.keys.results(),
            })
            .key(self.keys.dead())
            .key(job.map_or(self.keys.unused(), |id| self.keys.job(id)))
            .key(self.keys.results())
            .key(job.map_or(self.keys.unused(), |id| self.keys.checkpoint(id)))
            .key(dead_result.map_or(self.keys.unused(), |r| {
                self.keys.correlation_tally(&r.correlation_id)
            }))
            .key(
                dead_result
                    .and_then(|r| r.batch_id)
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            )
            .arg(match stream {
                StreamOf::Jobs(_) => WORKER_GROUP,
                StreamOf::Results => COLLECTOR_GROUP,
            })
            .arg(entry_id)
            .arg(reason)
            .arg(payload)
            .arg(powerfleet_jobs::now_ms())
            .arg(self.options.retention_s)
            .arg(dead_result.map_or(String::new(), |r| {
                serde_json::to_string(r).expect("a job result serializes")
            }))
            .arg(job.map(|id| id.to_string()).unwrap_or_default())
            .arg(if dead_result.is_some() { "1" } else { "0" })
            .arg(if dead_result.is_some_and(|r| r.batch_id.is_some()) {
                "1"
            } else {
                "0"
            })
            .arg(dead_result.map_or("", |r| r.method.as_str()))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Entries of the dead-letter stream, oldest first: (entry id, fields, shown as text).
    pub async fn dead_letters(
        &self,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, String>)>, QueueError> {
        let mut c = self.conn().await?;
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.keys.dead())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(RawEntry::parse_list("XRANGE", reply)?
            .into_iter()
            .map(|e| {
                let fields = e
                    .fields
                    .iter()
                    .map(|(k, v)| (shown(k).into_owned(), shown(v).into_owned()))
                    .collect();
                (e.id, fields)
            })
            .collect())
    }
}
