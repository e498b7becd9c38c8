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

CACHE_DIR="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}"
VENV_DIR="$CACHE_DIR/eval-clients-venv-$LM_EVAL_VERSION-$OPENAI_VERSION"
VENV_PY="$VENV_DIR/bin/python"
MARKER="$VENV_DIR/.powerfleet-pins"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'ensure-eval-clients: error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

fast_path() {
  [[ -x "$VENV_PY" ]] && [[ "$(cat "$MARKER" 2>/dev/null || true)" == "$PINS" ]]
}

if fast_path; then
  echo "$VENV_PY"
  exit 0
fi

command -v python3 >/dev/null 2>&1 \
  || die "python3 not found. Install Python 3.10 or later, e.g.: apt-get install -y python3 python3-venv"
mkdir -p "$CACHE_DIR"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_DIR/.ensure-eval-clients.lock"
  flock 9
  if fast_path; then
    echo "$VENV_PY"
    exit 0
  fi
fi

if [[ -e "$VENV_DIR" ]]; then
  log "==> removing incomplete venv at $VENV_DIR"
  rm -rf "$VENV_DIR"
fi
log "==> creating Python venv at $VENV_DIR"
python3 -m venv "$VENV_DIR" >&2 \
  || die "'python3 -m venv' failed. Install the venv module, e.g.: apt-get install -y python3-venv"
log "==> installing lm-eval[api]==$LM_EVAL_VERSION and openai==$OPENAI_VERSION (once per machine, about a minute)"
START=$SECONDS
"$VENV_PY" -m pip install --disable-pip-version-check --no-cache-dir -q --prefer-binary \
    "lm-eval[api]==$LM_EVAL_VERSION" "openai==$OPENAI_VERSION" >&2 \
  || die "pip install failed. Network access to PyPI (https://pypi.org) is required the first time (or set PIP_INDEX_URL to a mirror)."
"$VENV_PY" -c "import openai, lm_eval, lm_eval.models.openai_completions" >&2 \
  || die "the installed clients do not import in $VENV_DIR"
printf '%s' "$PINS" >"$MARKER"
log "==> cached the eval clients at $VENV_DIR in $((SECONDS - START)) s ($(du -sh "$VENV_DIR" | cut -f1))"
echo "$VENV_PY"
