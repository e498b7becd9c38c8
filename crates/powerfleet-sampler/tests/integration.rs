//! The integration tests of `powerfleet-sampler`, one binary with a module per area.

mod checkpoint_fixtures;
mod hash_model;
mod resume;
