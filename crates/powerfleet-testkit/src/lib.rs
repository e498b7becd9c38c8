//! Test helpers of the powerfleet workspace, for its integration tests only (a dev-dependency,
//! never a dependency):
//!
//! - [`Fleet`]: a private redis-server with worker and collector processes of the `powerfleet`
//!   binary on it and a SQLite results file, with [`submit_batch`], [`specs`],
//!   [`fault_free_tokens`], [`published_results`] and [`stdout_of`] to drive and read it;
//! - [`llama::LlamaServer`]: a real llama-server with the tiny test model.

mod fleet;
pub mod llama;

pub use fleet::{Fleet, fault_free_tokens, published_results, specs, stdout_of, submit_batch};
