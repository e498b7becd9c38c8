//! The integration tests of `powerfleet-fleet`, one binary with a module per area.

mod api;
mod code_problems;
