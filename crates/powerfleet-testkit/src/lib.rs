//! Test helpers of the powerfleet workspace, for its integration tests only (a dev-dependency,
//! never a dependency):
//!
//! - [`Fleet`]: a private redis-server with worker and collector processes of the `powerfleet`
//!   binary on it and a SQLite results file, with [`submit_batch`], [`specs`],
//!   [`fault_free_tokens`], [`fault_free_output`], [`published_results`] and [`stdout_of`] to drive and read it;
//! - [`llama::LlamaServer`]: a real llama-server with the tiny test model;
//! - builders with defaults of the values tests make over and over: [`spec`] ([`JobSpec`]),
//!   [`result_for`] ([`JobResult`]) and [`batch`] (a [`Submission`] made the way every
//!   submission is, through [`SubmitRequest::into_submission`]);
//! - [`Serve`]: a `powerfleet serve` process on a fleet;
//! - [`redis_server`] and [`queue_on`]: a private redis-server and a queue client on it;
//! - [`StubServer`]: an HTTP server that records every request and answers with a closure;
//! - [`wait_until`] and [`PATIENCE`], the one deadline of every wait for a fleet's work;
//! - [`Watching`]: a command whose standard error a test reads while it runs.
//!
//! [`JobSpec`]: powerfleet_jobs::JobSpec
//! [`JobResult`]: powerfleet_jobs::JobResult
//! [`Submission`]: powerfleet_fleet::producer::Submission
//! [`SubmitRequest::into_submission`]: powerfleet_fleet::request::SubmitRequest::into_submission

mod builders;
mod fleet;
pub mod llama;
mod postgres;
mod redis;
mod serve;
mod stub;
mod wait;
mod watching;

pub use builders::{
    BatchBuilder, JobResultBuilder, JobSpecBuilder, batch, long_config, result, result_for, spec,
};
pub use fleet::{
    Fleet, fault_free_output, fault_free_tokens, job_spec, published_results, specs, stdout_of,
    submit_batch,
};
pub use postgres::{
    DEFAULT_POSTGRES_URL, INJECTED_DISK_FULL, execute_raw, postgres_admin, postgres_admin_url,
    with_database,
};
pub use redis::{queue_on, redis_server};
pub use serve::Serve;
pub use stub::{Recorded, StubServer};
pub use wait::{PATIENCE, wait_until};
pub use watching::Watching;
