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
        let ids = self
            .read_group(
                &self.keys.results(),
                COLLECTOR_GROUP,
                consumer,
                count,
                block_ms,
            )
            .await?;
        Ok(ids.into_iter().map(Self::result_delivery).collect())
    }

    /// Takes over results a dead collector left unacknowledged.
    pub async fn reclaim_results(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<ResultDelivery>, QueueError> {
        let ids = self
            .autoclaim(
                &self.keys.results(),
                COLLECTOR_GROUP,
                consumer,
                min_idle_ms,
                count,
            )
            .await?;
        Ok(ids.into_iter().map(Self::result_delivery).collect())
    }

    pub(super) fn result_delivery(entry: RawEntry) -> ResultDelivery {
        let result =
            entry
                .text_fields(MAX_RESULT_BYTES)
                .and_then(|fields| match fields.get("result") {
                    Some(r) => serde_json::from_str::<JobResult>(r)
                        .map_err(|e| format!("result is not a valid job result: {e}")),
                    None => Err("entry lacks the result field".to_string()),
                });
        ResultDelivery {
            entry_id: entry.id,
            fields: entry.fields,
            result,
        }
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
