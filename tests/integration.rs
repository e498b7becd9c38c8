//! The end-to-end tests of the `powerfleet` binary, one binary with a module per area (a separate
//! binary per area would link the whole workspace once each). `common` is what they share.
//!
//! Run one area with `cargo test --test integration fleet::`, one test by its name.

mod common;

mod architecture;
mod bench;
mod cli_demo;
mod cli_input_files;
mod cli_sample;
mod cluster;
mod deploy;
mod fleet;
mod graded_runs;
mod hosted;
mod https;
mod humaneval;
mod llama_server;
mod memory;
mod models;
mod observability;
mod openai;
mod openai_clients;
mod secrets;
mod security;
mod store_faults;
mod timeouts;
