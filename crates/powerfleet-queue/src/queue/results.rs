//! The results stream, read by the collectors.

use super::*;

impl Queue {
    /// Reads up to `count` new results for a collector.
    pub async fn read_results(
        &self,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<ResultDelivery>, QueueError> {
        self.read_entries(&self.keys.results(), consumer, count, block_ms)
            .await
    }

    /// Takes over results a dead collector left unacknowledged.
    pub async fn reclaim_results(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<ResultDelivery>, QueueError> {
        self.reclaim_entries(&self.keys.results(), consumer, min_idle_ms, count)
            .await
    }

    /// Acknowledges a stored result.
    pub async fn ack_result(&self, entry_id: &str) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let _: i64 = redis::cmd("XACK")
            .arg(self.keys.results())
            .arg(COLLECTOR_GROUP)
            .arg(entry_id)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl StreamEntry for ResultDelivery {
    type Decoded = JobResult;
    const GROUP: &'static str = COLLECTOR_GROUP;
    const MAX_BYTES: usize = MAX_RESULT_BYTES;

    fn decode(fields: &HashMap<&str, &str>) -> Result<JobResult, String> {
        match fields.get("result") {
            Some(r) => serde_json::from_str::<JobResult>(r)
                .map_err(|e| format!("result is not a valid job result: {e}")),
            None => Err("entry lacks the result field".to_string()),
        }
    }

    fn new(
        _stream: String,
        entry_id: String,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        result: Result<JobResult, String>,
    ) -> ResultDelivery {
        ResultDelivery {
            entry_id,
            fields,
            result,
        }
    }
}
