//! The integration tests of `powerfleet-queue`, one binary with a module per area.

mod cluster;
mod queue;
mod routing;
