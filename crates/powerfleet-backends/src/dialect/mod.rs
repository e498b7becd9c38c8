//! What differs between inference servers, one dialect per server.

pub mod common;
pub mod llamacpp;
pub mod vllm;

pub use common::{AnswerError, RawGeneration};
