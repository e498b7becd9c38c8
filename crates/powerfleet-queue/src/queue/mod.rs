//! `Queue`: every Redis operation of the fleet, each fenced write a Lua script.
//!
//! One `impl Queue` per concern, each in its own file: `connect` (options, connecting, the
//! connections each operation takes, consumer groups, replication), `entries` (Redis replies and
//! stream entries decoded into deliveries), `jobs` (the jobs stream: submissions, reads, claims,
//! leases, checkpoints, results, hand-backs, waits), `lease` (a worker's claim and what the
//! fenced operations on it answer), `subscription` (the jobs streams a worker reads), `state`
//! (job state, sets, tallies, cancellation, backlogs), `results`, `dead`, `submissions`,
//! `prompts`, `workers` and `admin`. The scripts they run are loaded in `scripts`; the error
//! they return is in `error`.

use std::collections::HashMap;

use std::time::Duration;

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobSpec, JobStatus, ModelRoute};
use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use crate::keys::{COLLECTOR_GROUP, Keys, WORKER_GROUP};

mod admin;
mod connect;
mod dead;
mod entries;
mod error;
mod jobs;
mod lease;
mod prompts;
mod results;
mod scripts;
mod state;
mod submissions;
mod subscription;
mod workers;
pub use admin::TrimReport;
use connect::warn_recreated;
pub use connect::{MAX_BLOCK, QueueOptions};
pub use entries::{Delivery, MAX_ENTRY_BYTES, MAX_RESULT_BYTES, ResultDelivery};
use entries::{
    RawEntry, StreamEntry, StreamOf, bytes_of, parse_streams, payload_of, shape, shown, text,
};
pub use error::QueueError;
use error::is_nogroup;
pub use lease::{ClaimOutcome, Deferral, Lease, LeaseState, Progress, Wait};
pub use powerfleet_jobs::redact_url;
use scripts::Scripts;
pub use state::{CancelOutcome, JobState, StreamBacklog, Tally, TallyOf};
pub use submissions::SubmissionDelivery;
pub use subscription::Subscription;
pub use workers::{ServedModel, WorkerRegistration, context_tokens, served};

/// A client of one deployment's queue. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Queue {
    /// One auto-reconnecting multiplexed connection (per cluster node) for every non-blocking
    /// operation: one round trip each, no pool checkout.
    shared: crate::conn::Shared,
    /// Dedicated connections for blocking stream reads, which would stall a shared connection.
    pool: crate::conn::BlockingSource,
    /// Whether the server is a Redis Cluster.
    cluster: bool,
    /// The cluster slot of the namespace's keys (0 on a single server).
    slot: u16,
    /// Replicas a submission waits for (`WAIT`) before it is acknowledged.
    replicas: usize,
    /// Requests sent to Redis by this client and its clones.
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where the next XAUTOCLAIM scan starts, per stream: Redis looks at a bounded number of
    /// pending entries per call, so scans resume rather than restart.
    reclaim_cursors: std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>,
    keys: Keys,
    url: String,
    options: QueueOptions,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("url", &self.url)
            .field("namespace", &self.options.namespace)
            .finish()
    }
}
