//! The integration tests of `powerfleet-models`, one binary with a module per area.

mod exactness;
mod lookahead_consistency;
mod smc_consistency;
mod support;
