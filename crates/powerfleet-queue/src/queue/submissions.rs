//! The submissions stream: one record per submitted batch (how many jobs it scheduled), published
//! by the producer and stored in SQL by the collectors, so a report knows what to expect after
//! Redis has forgotten the batch.

use super::*;
use powerfleet_jobs::SubmissionRecord;

/// A submission record read by a collector: its entry id, and the record or why it does not
/// decode.
#[derive(Clone, Debug)]
pub struct SubmissionDelivery {
    /// The stream entry id.
    pub entry_id: String,
    /// The decoded record, or why it could not be decoded.
    pub record: Result<SubmissionRecord, String>,
}

impl StreamEntry for SubmissionDelivery {
    type Decoded = SubmissionRecord;
    const GROUP: &'static str = COLLECTOR_GROUP;
    const MAX_BYTES: usize = MAX_ENTRY_BYTES;

    fn decode(fields: &HashMap<&str, &str>) -> Result<SubmissionRecord, String> {
        match fields.get("submission") {
            Some(r) => serde_json::from_str::<SubmissionRecord>(r)
                .map_err(|e| format!("submission is not a valid submission record: {e}")),
            None => Err("entry lacks the submission field".to_string()),
        }
    }

    fn new(
        _stream: String,
        entry_id: String,
        _fields: Vec<(Vec<u8>, Vec<u8>)>,
        record: Result<SubmissionRecord, String>,
    ) -> SubmissionDelivery {
        SubmissionDelivery { entry_id, record }
    }
}

impl Queue {
    /// Publishes the record of a submitted batch for the collectors.
    pub async fn publish_submission(&self, record: &SubmissionRecord) -> Result<(), QueueError> {
        let json = serde_json::to_string(record).expect("a submission record serializes");
        let mut c = self.conn().await?;
        let _: String = redis::cmd("XADD")
            .arg(self.keys.submissions())
            .arg("*")
            .arg("submission")
            .arg(json)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Reads, without waiting, up to `count` submission records: those another collector left
    /// unacknowledged for `min_idle_ms`, then new ones. A missing consumer group (Redis lost
    /// its data) is created again (`recreate_group` warns), and the read finds nothing this time.
    pub async fn read_submissions(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<SubmissionDelivery>, QueueError> {
        let stream = self.keys.submissions();
        match self
            .read_submissions_of(&stream, consumer, min_idle_ms, count)
            .await
        {
            Err(e) if is_nogroup(&e) => {
                self.recreate_group(&stream, COLLECTOR_GROUP).await?;
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn read_submissions_of(
        &self,
        stream: &str,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<SubmissionDelivery>, QueueError> {
        let stream = stream.to_string();
        let mut out: Vec<SubmissionDelivery> = self
            .reclaim_entries(&stream, consumer, min_idle_ms, count)
            .await?;
        if out.len() < count {
            let mut c = self.conn().await?;
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(COLLECTOR_GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(count - out.len())
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut c)
                .await
                .map_err(|e| self.err(e))?;
            out.extend(
                parse_streams("XREADGROUP", reply)?
                    .into_iter()
                    .map(|(s, e)| SubmissionDelivery::from_raw(s, e)),
            );
        }
        Ok(out)
    }

    /// Acknowledges and deletes stored (or undecodable) submission records.
    pub async fn ack_submissions(&self, entry_ids: &[String]) -> Result<(), QueueError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let stream = self.keys.submissions();
        let _: (i64, i64) = redis::pipe()
            .cmd("XACK")
            .arg(&stream)
            .arg(COLLECTOR_GROUP)
            .arg(entry_ids)
            .cmd("XDEL")
            .arg(&stream)
            .arg(entry_ids)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
