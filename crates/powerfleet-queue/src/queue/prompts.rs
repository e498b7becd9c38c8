//! Stored prompts (one copy per distinct prompt, referenced by the jobs) and the claim of a
//! correlation id by the request that creates its jobs.

use powerfleet_jobs::{Prompt, PromptRef, ResolveError, StoredPrompt};

use super::*;

/// Most prompt bytes one round trip of [`Queue::store_prompts`] sends.
const STORE_CHUNK_BYTES: usize = 8 << 20;

impl Queue {
    /// Stores each prompt once under its content's hash, for the retention (a claim and a
    /// finish of a job that references it renew that); writing one that is stored already only
    /// renews it.
    pub async fn store_prompts(&self, prompts: &[StoredPrompt]) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let mut rest = prompts;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|p| {
                    let first = bytes == 0;
                    bytes += p.json.len();
                    first || bytes <= STORE_CHUNK_BYTES
                })
                .count();
            let mut pipe = redis::pipe();
            for p in &rest[..n] {
                pipe.cmd("SET")
                    .arg(self.keys.prompt(&p.reference.sha256))
                    .arg(&p.json)
                    .arg("EX")
                    .arg(self.options.retention_s)
                    .ignore();
            }
            let () = pipe.query_async(&mut c).await.map_err(|e| self.err(e))?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// The prompts `refs` name, in one pipelined read, each checked against its reference.
    pub async fn prompts(
        &self,
        refs: &[PromptRef],
    ) -> Result<Vec<Result<Prompt, ResolveError>>, QueueError> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for r in refs {
            pipe.cmd("GET").arg(self.keys.prompt(&r.sha256));
        }
        let stored: Vec<Option<Vec<u8>>> =
            pipe.query_async(&mut c).await.map_err(|e| self.err(e))?;
        Ok(refs
            .iter()
            .zip(stored)
            .map(|(r, json)| r.resolve(json.as_deref()))
            .collect())
    }

    /// Claims correlation id `id` for one request that creates all of its jobs: true for the
    /// first caller, while the id has no jobs and no other claim; false for every other (one
    /// atomic step, so two concurrent requests never both get it). The claim lasts the
    /// retention, like the correlation's own keys.
    pub async fn claim_correlation(&self, id: &CorrelationId) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        let claimed: i64 = self
            .scripts
            .claim_correlation
            .key(self.keys.correlation_claim(id))
            .key(self.keys.correlation_tally(id))
            .key(self.keys.correlation(id))
            .arg(powerfleet_jobs::now_ms())
            .arg(self.options.retention_s)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(claimed == 1)
    }

    /// Gives up a claim of [`Queue::claim_correlation`] whose request created no job.
    pub async fn release_correlation(&self, id: &CorrelationId) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.keys.correlation_claim(id))
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| self.err(e))
    }

    /// The result of each job in `ids` and nothing else of its state, read in pipelined
    /// batches; `None` where the job has no result (unfinished, or its state is gone).
    pub async fn job_results(&self, ids: &[JobId]) -> Result<Vec<Option<JobResult>>, QueueError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let raw: Vec<Option<String>> = self
                .per_job(chunk, |pipe, key| {
                    pipe.cmd("HGET").arg(key).arg("result");
                })
                .await?;
            out.extend(
                raw.into_iter()
                    .map(|r| r.and_then(|r| serde_json::from_str(&r).ok())),
            );
        }
        Ok(out)
    }
}
