//! Workers' registrations: who is alive and which model names each one serves. Each worker
//! writes its registration into one hash of the namespace every heartbeat; a registration not
//! renewed by its `expires_at_ms` is no longer live (a killed worker's), and readers drop it.

use std::collections::BTreeSet;

use super::*;

/// A model name a worker maps, with its reference as logs may show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedModel {
    /// The name jobs ask for.
    pub name: String,
    /// What the name maps to, credentials redacted.
    pub reference: String,
    /// The most tokens a prompt and its completion may hold together on the name's servers
    /// (their context, as the worker's probe of them learned it); `None` until the worker has
    /// probed them, and for models without one (toy models, hosted APIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u32>,
}

/// A live worker as it registers itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    /// The worker's consumer name, unique in the fleet.
    pub worker_id: String,
    /// The host it runs on.
    pub host: String,
    /// The powerfleet version it runs.
    pub version: String,
    /// The model names it maps (`--model NAME=REFERENCE`).
    pub models: Vec<ServedModel>,
    /// Chains it runs at once.
    pub concurrency: usize,
    /// Jobs it runs now.
    pub in_flight: usize,
    /// When it started, ms since the epoch.
    pub started_at_ms: u64,
    /// When it last renewed its registration, ms since the epoch.
    pub last_seen_ms: u64,
    /// When the registration lapses unless renewed, ms since the epoch.
    pub expires_at_ms: u64,
}

/// The most tokens a prompt and its completion may hold together on model `model` as the live
/// workers among `live` that map it know it: the smallest they report, `None` when none knows
/// (or `model` is a reference rather than a name).
pub fn context_tokens(live: &[WorkerRegistration], model: &str) -> Option<u32> {
    let ModelRoute::Name(name) = ModelRoute::of(model) else {
        return None;
    };
    live.iter()
        .flat_map(|w| &w.models)
        .filter(|m| m.name == name)
        .filter_map(|m| m.context_tokens)
        .min()
}

/// Whether a job of model `model` has a live worker among `live` to run it: a model name needs
/// a worker that maps it; a reference (`toy:…`, a server URL) is resolved by any worker.
pub fn served(live: &[WorkerRegistration], model: &str) -> bool {
    match ModelRoute::of(model) {
        ModelRoute::Reference => !live.is_empty(),
        ModelRoute::Name(name) => live.iter().any(|w| w.models.iter().any(|m| m.name == name)),
    }
}

impl Queue {
    /// Writes (or renews) a worker's registration.
    pub async fn register_worker(
        &self,
        registration: &WorkerRegistration,
    ) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(registration).expect("a registration serializes");
        let _: i64 = redis::cmd("HSET")
            .arg(self.keys.workers())
            .arg(&registration.worker_id)
            .arg(json)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Removes a worker's registration (it stops).
    pub async fn deregister_worker(&self, worker_id: &str) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let _: i64 = redis::cmd("HDEL")
            .arg(self.keys.workers())
            .arg(worker_id)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The live workers' registrations, by worker id. Lapsed ones are dropped from Redis as
    /// they are found; unreadable ones are skipped.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRegistration>, QueueError> {
        let mut c = self.conn().await?;
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys.workers())
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let now = powerfleet_jobs::now_ms();
        let mut live = Vec::new();
        let mut lapsed = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<WorkerRegistration>(&json) {
                Ok(r) if r.expires_at_ms > now => live.push(r),
                Ok(_) => lapsed.push(id),
                Err(_) => {}
            }
        }
        if !lapsed.is_empty() {
            let mut c = self.conn().await?;
            let _: i64 = redis::cmd("HDEL")
                .arg(self.keys.workers())
                .arg(&lapsed)
                .query_async(&mut c)
                .await
                .map_err(|e| self.err(e))?;
        }
        live.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(live)
    }

    /// The model names live workers serve, sorted.
    pub async fn served_names(&self) -> Result<BTreeSet<String>, QueueError> {
        Ok(self
            .live_workers()
            .await?
            .into_iter()
            .flat_map(|w| w.models.into_iter().map(|m| m.name))
            .collect())
    }
}
