//! What a job is: its ids, its specification, its status and its result. Shared by the queue, the
//! results store and the fleet roles; holds no IO.
//!
//! One file per concern, every public item re-exported here (`powerfleet_jobs::JobResult`):
//! `ids.rs` (the ids a job is known by), `spec.rs` (what a worker runs: [`JobSpec`], [`Prompt`]),
//! `stored.rs` (prompts stored once per submission), `grading.rs` (what a graded job carries and
//! its verdict), `grader.rs` (the closed set of graders), `exactness.rs` (where a result's numbers came from), `status.rs` ([`JobStatus`]),
//! `result.rs` ([`JobResult`], the one wire format of a finished job), `pin.rs` (what a chain's
//! numbers depend on), `submission.rs` (a batch as submitted), `sft.rs` (a sample as training
//! data), `route.rs` (which workers may run a job), `redact.rs` (passwords out of URLs) and
//! `csv.rs` (a CSV cell).

pub mod csv;
mod exactness;
pub mod grader;
mod grading;
mod ids;
pub mod pin;
mod redact;
mod result;
pub mod route;
mod sft;
mod spec;
mod status;
pub mod stored;
mod submission;

pub use exactness::Exactness;
pub use grader::{Grader, GraderMisfit, ParseGraderError, ReferenceKind};
pub use grading::{GradeRecord, Grading, ReasoningMarkers, ReferenceAnswer};
pub use ids::{
    BatchId, CorrelationId, IdError, JobId, Label, MAX_CORRELATION_ID_LEN, MAX_LABEL_LEN,
};
pub use pin::{Pin, ServerPin};
pub use redact::{redact_http_url, redact_url};
pub use result::{ErrorCode, JobResult, ResultFormat, StopHit, VERSION};
pub use route::{ModelRoute, is_remote_reference};
pub use sft::SftRecord;
pub use spec::{CHAT_ROLES, ChatMessage, JobSpec, Prompt, SpecError, messages_byte_len};
pub use status::{JobStatus, UnknownStatus};
pub use stored::{PromptRef, ResolveError, StoredPrompt};
pub use submission::{
    GradedRequest, MAX_KEPT_SEEDS, MAX_KEPT_TEMPLATE_BYTES, SubmissionRecord, SubmissionRequest,
};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
