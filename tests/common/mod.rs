//! What the end-to-end tests share that must be compiled into the integration-test binary: the
//! path of the `powerfleet` binary, which only an integration test of this package can name.
//! Everything else comes from `powerfleet-testkit`.

pub use powerfleet_testkit::*;

/// The `powerfleet` binary under test, for [`Fleet::new`] and direct runs.
pub const BIN: &str = env!("CARGO_BIN_EXE_powerfleet");
