#!/usr/bin/env bash
# Ensure a Python venv in the powerfleet cache that holds the clients the OpenAI-compatible
# endpoint is tested with: the official `openai` SDK and lm-evaluation-harness (`lm-eval`, with
# its `api` extra for the local-completions model), for tests/openai_clients.rs.
#
# Usage:
#   scripts/ensure-eval-clients.sh          # last stdout line: path of the venv's python
#   scripts/ensure-eval-clients.sh --help
#
# Environment:
#   POWERFLEET_CACHE    cache root (default: $HOME/.cache/powerfleet)
#
# The venv is cached at $POWERFLEET_CACHE/eval-clients-venv-$LM_EVAL_VERSION-$OPENAI_VERSION,
# so it is paid once per machine (52 s from PyPI on a 2-core machine; no torch: lm-eval's core
# and its api extra do not need it). Later runs find the marker and exit at once. A few of
# lm-eval's pure-Python dependencies (sqlitedict, word2number) ship as source only and are built
# by pip; everything else is a wheel. Only PyPI is needed (or PIP_INDEX_URL pointing at a mirror
# of it). Everything except the final path goes to stderr.
set -euo pipefail

LM_EVAL_VERSION="0.4.13"
OPENAI_VERSION="3.57.0"
PINS="lm-eval==$LM_EVAL_VERSION openai==$OPENAI_VERSION"

PIP_VENV_NAME=eval-clients
VENV_DIR="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}/eval-clients-venv-$LM_EVAL_VERSION-$OPENAI_VERSION"
source "$(dirname "$0")/pip-venv.sh"

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

pip_venv_ensure "import openai, lm_eval, lm_eval.models.openai_completions" \
  "lm-eval[api]==$LM_EVAL_VERSION and openai==$OPENAI_VERSION (once per machine, about a minute)" \
  "lm-eval[api]==$LM_EVAL_VERSION" "openai==$OPENAI_VERSION"
echo "$VENV_PY"
