#!/usr/bin/env bash
# The main job: power sampling against its baselines on the built-in pivot toy model, on all cores,
# each beside the exact p^alpha distribution. Extra arguments go to every `powerfleet sample` call.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-toolchain.sh
need_rust

echo "==> building powerfleet (release)" >&2
cargo build --release --locked --quiet
bin=target/release/powerfleet
common=(--model toy:pivot --alpha 4 --n-mcmc 10 --block-size 4 --max-new-tokens 12 --chains 2000 --seed 7)
for method in power low-temp standard; do
  echo
  echo "==> powerfleet sample --method $method ${common[*]} $*"
  "$bin" sample --method "$method" "${common[@]}" "$@"
done
echo
echo "==> powerfleet sample --method max-swap (alpha = inf)"
"$bin" sample --method max-swap --model toy:pivot --n-mcmc 10 --block-size 4 --max-new-tokens 12 --chains 2000 --seed 7 "$@"
