#!/usr/bin/env bash
# Runs every check and test of powerfleet: formatting, clippy, then unit, property, statistical and
# end-to-end tests of the whole workspace. Installs or reports what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-toolchain.sh
source scripts/ensure-services.sh
need_rust
need_rust_component fmt rustfmt
need_rust_component clippy clippy
need_redis_server
need_postgres

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test --workspace"
cargo test --workspace --locked
