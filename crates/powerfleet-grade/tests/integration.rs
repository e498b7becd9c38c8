//! The integration tests of `powerfleet-grade`, one binary with a module per area.

mod graders;
mod math500;
