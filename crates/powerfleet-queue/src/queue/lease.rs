//! A worker's claim on a job and what the fenced operations on it answer: the lease, what a
//! claim found, whether the lease still holds, the progress a heartbeat stores, and a wait for
//! the model.

use super::*;

/// A worker's claim on a job: valid while its fence and token are the job's current lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The jobs stream of the entry.
    pub stream: String,
    /// The stream entry being processed.
    pub entry_id: String,
    /// The fencing token taken by the claim: one more than the job's previous claim.
    pub fence: u64,
    /// A random token unique to this claim. Fenced writes compare `fence:token`, so two claims
    /// never share a lease, even when a Redis failover loses a fence increment.
    pub token: String,
    /// The consumer (worker) name.
    pub consumer: String,
}

impl Lease {
    /// The lease as the scripts compare it.
    pub(super) fn fenced(&self) -> String {
        format!("{}:{}", self.fence, self.token)
    }
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// The caller now owns the job.
    Claimed {
        /// The lease.
        lease: Lease,
        /// Claims so far, this one included.
        deliveries: u32,
        /// Whether a user asked to cancel it.
        cancel_requested: bool,
        /// The latest checkpoint, if a previous owner wrote one.
        checkpoint: Option<Vec<u8>>,
        /// The job's first claim, ms since the epoch.
        started_at_ms: u64,
        /// Since when the job has been waiting for its model, if it was deferred before.
        waiting_since_ms: Option<u64>,
        /// How often the job was deferred so far.
        waits: u32,
        /// The JSON of the prompt the job's specification references ([`Prompt::Stored`]),
        /// `None` when it carries its prompt inline or nothing is stored any more.
        ///
        /// [`Prompt::Stored`]: powerfleet_jobs::Prompt::Stored
        prompt: Option<Vec<u8>>,
    },
    /// The job had already finished; its entry was acknowledged.
    AlreadyFinal(JobStatus),
    /// The entry is an old one of a job that was enqueued again; it was acknowledged.
    Stale,
    /// No state exists for the job.
    Missing,
}

/// Whether a lease still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Still the owner; `cancel` says whether a user asked to cancel.
    Owned {
        /// Cancellation requested.
        cancel: bool,
    },
    /// Another claim took the job: stop working on it.
    Lost,
    /// The job's state is gone from Redis (deleted, or evicted under memory pressure): nobody
    /// can finish it, so its entry is dead-lettered.
    Vanished,
}

/// Progress of a running chain, stored in the job's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Current block (0-based).
    pub block_idx: u32,
    /// Blocks in all.
    pub n_blocks: u32,
    /// Current MCMC step in the block.
    pub step_idx: u32,
    /// MCMC steps per block.
    pub n_mcmc: u32,
    /// Proposals so far.
    pub proposals: u64,
    /// Acceptances so far.
    pub acceptances: u64,
    /// Tokens generated so far.
    pub tokens_generated: u64,
}

/// Why and until when a job waits for its model.
#[derive(Clone, Copy, Debug)]
pub struct Wait<'a> {
    /// When it may run again, ms since the epoch.
    pub due_ms: u64,
    /// Why it waits (shown by `status`).
    pub reason: &'a str,
    /// Since when it has been waiting, ms since the epoch; `None` keeps the job's own (now,
    /// when it has none).
    pub since_ms: Option<u64>,
}

/// What `defer` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deferral {
    /// The job waits in the delayed set.
    Deferred,
    /// A cancellation was requested: the caller still owns the job and finishes it as cancelled.
    CancelRequested,
    /// The lease was lost; another worker owns the job.
    Lost,
}
