//! Inference servers as exact power-sampling backends: llama.cpp's `llama-server`, vLLM and
//! SGLang over HTTP. Prompts are tokenized once by the server; every generation continues from
//! token ids; log p and log q come from the server's raw top-K log-probabilities (see `recipe`).
//! A start-up probe (`HttpModel::probe`) checks each server before the first chain runs.

pub mod client;
pub mod dialect;
pub mod error;
pub mod hosted;
pub mod metrics;
pub mod probe;
pub mod recipe;
mod redact;
pub mod reference;
pub mod wire;

pub use client::HttpModel;
pub use error::{BackendError, ReferenceError};
pub use hosted::{HostedModel, HostedReference, Provider};
pub use probe::ServerInfo;
pub use reference::{
    HOSTED_CHAT_REFUSAL, HttpReference, ModelRef, ProposalError, ServerKind, is_remote_reference,
    parse,
};

/// The process's one TLS crypto provider (`powerfleet-common`), here for the callers of this
/// crate's clients.
pub use powerfleet_common::install_tls_provider;
