//! The integration tests of `powerfleet-backends`, one binary with a module per area.

mod common;
mod faults;
mod llama_probe;
mod sglang;
mod vllm_conformance;
mod vllm_probe;
mod wire;
