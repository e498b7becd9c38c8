//! powerfleet's fleet roles. Each role is a `run(config, deps, shutdown)` function: it takes its
//! queue and store clients and a shutdown future, so tests and `powerfleet demo` run roles
//! in-process and the binary runs each as its own process.

pub mod api;
pub mod backoff;
pub mod collector;
pub mod control;
pub mod datasets;
pub mod driver;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod ops;
pub mod producer;
pub mod request;
pub mod status;
pub mod watch;
pub mod worker;

pub use models::{Backend, DeterminismError, ModelError, ModelRegistry, RegistryError};
