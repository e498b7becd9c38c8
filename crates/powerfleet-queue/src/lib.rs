//! powerfleet's queue on Redis Streams.
//!
//! Jobs wait in a stream read by the workers' consumer group. Claiming a delivered entry takes a
//! new fencing token. Every later write (heartbeat, checkpoint, result, acknowledgement, hand-back)
//! is a Lua script that first checks the token, so a worker that lost its lease can write nothing.
//! Results go to a second stream, read by the collectors' group. See `keys` for the schema.

mod conn;
pub mod keys;
pub mod local;
pub mod local_cluster;
mod queue;

pub use keys::{COLLECTOR_GROUP, InvalidNamespace, Keys, WORKER_GROUP, validate_namespace};
pub use queue::{
    CancelOutcome, ClaimOutcome, Deferral, Delivery, JobState, Lease, LeaseState, MAX_ENTRY_BYTES,
    Progress, Queue, QueueError, QueueOptions, ResultDelivery, ServedModel, StreamBacklog,
    SubmissionDelivery, Subscription, Tally, TallyOf, TrimReport, Wait, WorkerRegistration,
    context_tokens, redact_url, served,
};
