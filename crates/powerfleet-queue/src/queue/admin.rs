//! Streams' upkeep and figures: lengths, server counters, trimming, and raw entries for tests.

use super::*;

/// What `trim_streams` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Entries trimmed from the jobs stream.
    pub jobs: u64,
    /// Entries trimmed from the results stream.
    pub results: u64,
}

impl Queue {
    /// Entries in the jobs and the results stream.
    pub async fn stream_lengths(&self) -> Result<(u64, u64), QueueError> {
        let mut c = self.conn().await?;
        let (jobs, results): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.keys.jobs())
            .cmd("XLEN")
            .arg(self.keys.results())
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok((jobs, results))
    }

    /// The server's `INFO stats` counters (commands processed, network bytes, ...).
    pub async fn server_stats(&self) -> Result<HashMap<String, u64>, QueueError> {
        let mut c = self.conn().await?;
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(info
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect())
    }

    /// Trims both streams up to the oldest entry that may still be needed: never past a pending
    /// entry, nor past the group's last-delivered entry.
    pub async fn trim_streams(&self) -> Result<TrimReport, QueueError> {
        Ok(TrimReport {
            jobs: self.trim(&self.keys.jobs(), WORKER_GROUP).await?,
            results: self.trim(&self.keys.results(), COLLECTOR_GROUP).await?,
        })
    }

    pub(super) async fn trim(&self, stream: &str, group: &str) -> Result<u64, QueueError> {
        let (_, pending, last_delivered) = match self.group_info(stream, group).await {
            Ok(info) => info,
            // The stream or its group is gone (Redis lost its data): nothing to trim until a
            // read creates them again.
            Err(QueueError::Redis { message, .. }) if message.contains("no such key") => {
                return Ok(0);
            }
            Err(QueueError::Protocol {
                op: "XINFO GROUPS", ..
            }) => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut min_id = last_delivered;
        if pending > 0 {
            let mut c = self.conn().await?;
            let summary: Vec<Value> = redis::cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .query_async(&mut c)
                .await
                .map_err(|e| self.err(e))?;
            if let Some(oldest) = summary.get(1).and_then(text) {
                min_id = oldest;
            }
        }
        if min_id.is_empty() || min_id == "0-0" {
            return Ok(0);
        }
        let mut c = self.conn().await?;
        let trimmed: i64 = redis::cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg(&min_id)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(trimmed as u64)
    }

    /// The lag of the workers' consumer group on the jobs stream `stream` as Redis itself reports
    /// it in `XINFO GROUPS`: what autoscalers such as KEDA's `redis-streams` scaler read (the
    /// queue's own figures are [`Queue::backlog_by_stream`]'s). `None` when Redis cannot count it
    /// (it replies nil), or the stream or its group does not exist.
    pub async fn reported_lag(&self, stream: &str) -> Result<Option<u64>, QueueError> {
        let mut c = self.conn().await?;
        let reply: redis::RedisResult<Vec<HashMap<String, Value>>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut c)
            .await;
        let groups = match reply {
            Ok(groups) => groups,
            Err(e) if e.to_string().contains("no such key") => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        Ok(groups
            .iter()
            .find(|g| g.get("name").and_then(text).as_deref() == Some(WORKER_GROUP))
            .and_then(|g| g.get("lag"))
            .and_then(text)
            .and_then(|lag| lag.parse().ok()))
    }

    /// Appends a raw entry to the jobs stream (for tests of undecodable input).
    pub async fn push_raw_job_entry(&self, fields: &[(&str, &str)]) -> Result<String, QueueError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.jobs()).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut c).await.map_err(|e| self.err(e))
    }

    /// Appends a raw entry to the results stream (for tests and for republishing).
    pub async fn push_raw_result_entry(
        &self,
        fields: &[(&str, &str)],
    ) -> Result<String, QueueError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.results()).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut c).await.map_err(|e| self.err(e))
    }
}
