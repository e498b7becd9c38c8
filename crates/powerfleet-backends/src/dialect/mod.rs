//! What differs between inference servers, one dialect per server.

pub mod common;

pub use common::{AnswerError, RawGeneration};
