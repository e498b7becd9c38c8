//! Inference servers as exact power-sampling backends: llama.cpp's `llama-server`, vLLM and
//! SGLang over HTTP. Prompts are tokenized once by the server; every generation continues from
//! token ids; log p and log q come from the server's raw top-K log-probabilities (see `recipe`).
//! A start-up probe (`HttpModel::probe`) checks each server before the first chain runs.

pub mod client;
pub mod error;
pub mod hosted;
pub mod probe;
pub mod recipe;
mod redact;
pub mod reference;
pub mod wire;

pub use client::HttpModel;
pub use error::BackendError;
pub use hosted::{HostedModel, HostedReference, Provider};
pub use probe::{BackendPin, ServerInfo};
pub use reference::{
    HOSTED_CHAT_REFUSAL, HttpReference, Reference, ServerKind, is_http_reference, parse,
};

/// Makes ring the process's TLS crypto provider (for `https://` servers), once. Clients are built
/// after it.
pub fn install_tls_provider() {
    // Fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
