//! The `submissions` table: one row per submitted batch, with how many jobs it scheduled.

use powerfleet_jobs::{BatchId, CorrelationId, Label, SubmissionRecord};
use sqlx::Row;

use crate::{Pool, Store, StoreError, big, unbig};

impl Store {
    /// Stores the records of submitted batches; a batch stored before is left as it is (a
    /// record delivered twice, or a submission repeated with its key, counts once).
    pub async fn record_submissions(&self, records: &[SubmissionRecord]) -> Result<(), StoreError> {
        let action = "store a submission";
        for r in records {
            let models = serde_json::to_string(&r.models).expect("model names serialize");
            let methods = serde_json::to_string(&r.methods).expect("methods serialize");
            let request = r
                .request
                .as_ref()
                .map(|q| serde_json::to_string(q).expect("a submission request serializes"));
            on_pool!(self, |pool| {
                sqlx::query(
                    "INSERT INTO submissions (batch_id, correlation_id, label, models, methods, \
                     scheduled, created_at_ms, request_json) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                     $8) ON CONFLICT (batch_id) DO NOTHING",
                )
                .bind(r.batch_id.to_string())
                .bind(r.correlation_id.as_str())
                .bind(
                    r.label
                        .as_ref()
                        .map(|l| l.as_str().replace('\0', "\u{FFFD}")),
                )
                .bind(&models)
                .bind(&methods)
                .bind(big(r.scheduled))
                .bind(big(r.created_at_ms))
                .bind(request.as_deref())
                .execute(pool)
                .await
                .map_err(|e| self.query_err(action, e))?;
            });
        }
        Ok(())
    }

    /// The submission record of a batch, if one was stored (batches submitted before the table
    /// existed have none).
    pub async fn submission(&self, id: BatchId) -> Result<Option<SubmissionRecord>, StoreError> {
        let mut found = self.submissions_where("batch_id", &id.to_string()).await?;
        Ok(found.pop())
    }

    /// The stored submission records of a correlation id's batches, oldest first.
    pub async fn submissions_by_correlation(
        &self,
        id: &CorrelationId,
    ) -> Result<Vec<SubmissionRecord>, StoreError> {
        self.submissions_where("correlation_id", id.as_str()).await
    }

    /// The stored submission records of the batches submitted with a label, oldest first.
    pub async fn submissions_by_label(
        &self,
        label: &Label,
    ) -> Result<Vec<SubmissionRecord>, StoreError> {
        self.submissions_where("label", label.as_str()).await
    }

    async fn submissions_where(
        &self,
        column: &str,
        key: &str,
    ) -> Result<Vec<SubmissionRecord>, StoreError> {
        let action = "read submissions";
        let sql = format!(
            "SELECT batch_id, correlation_id, label, models, methods, scheduled, created_at_ms, \
             request_json FROM submissions WHERE {column} = $1"
        );
        let rows = on_pool!(self, |pool| {
            let rows = sqlx::query(&sql)
                .bind(key)
                .fetch_all(pool)
                .await
                .map_err(|e| self.query_err(action, e))?;
            rows.iter()
                .map(|row| {
                    let text =
                        |c: &str| row.try_get::<String, _>(c).map_err(|e| self.corrupt(c, e));
                    let int = |c: &str| row.try_get::<i64, _>(c).map_err(|e| self.corrupt(c, e));
                    let label = row
                        .try_get::<Option<String>, _>("label")
                        .map_err(|e| self.corrupt("label", e))?
                        .and_then(|l| l.parse().ok());
                    Ok(SubmissionRecord {
                        batch_id: text("batch_id")?
                            .parse()
                            .map_err(|e| self.corrupt("batch_id", e))?,
                        correlation_id: text("correlation_id")?
                            .parse()
                            .map_err(|e| self.corrupt("correlation_id", e))?,
                        label,
                        models: serde_json::from_str(&text("models")?)
                            .map_err(|e| self.corrupt("models", e))?,
                        methods: serde_json::from_str(&text("methods")?)
                            .map_err(|e| self.corrupt("methods", e))?,
                        scheduled: unbig(int("scheduled")?),
                        created_at_ms: unbig(int("created_at_ms")?),
                        request: row
                            .try_get::<Option<String>, _>("request_json")
                            .map_err(|e| self.corrupt("request_json", e))?
                            .map(|j| serde_json::from_str(&j))
                            .transpose()
                            .map_err(|e| self.corrupt("request_json", e))?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        let mut rows = rows;
        rows.sort_by_key(|r| r.created_at_ms);
        Ok(rows)
    }
}
