#!/usr/bin/env bash
# The main job: `powerfleet demo`, the whole fleet on this machine. It uses the Redis at
# $POWERFLEET_REDIS_URL (default redis://127.0.0.1:6379/) or starts a private redis-server, runs
# workers and a collector, submits a batch on the built-in toy models (power, max-swap, low-temp,
# standard; several seeds) and prints a table per method beside the exact p^alpha.
# Extra arguments go to `powerfleet demo` (see `powerfleet demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-toolchain.sh
source scripts/ensure-services.sh
need_rust
need_redis_server

echo "==> building powerfleet (release)" >&2
cargo build --release --locked --quiet
exec target/release/powerfleet demo "$@"
