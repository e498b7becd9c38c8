#!/usr/bin/env bash
# End-to-end check of MATH500 grading on the real data set: the dataset loader (MATH500 format),
# the math-cot template and the `math` grader, over every problem. A completion boxing the gold
# answer must grade correct, one boxing the next problem's (different) answer must grade wrong.
#
#   scripts/check-math500.sh [PATH/TO/MATH500.json]   (default: /work/shared/data/MATH500.json)
#
# Prints the counts and every failure; exits non-zero on any failure. docs/grading.md records
# the last result.
set -euo pipefail
cd "$(dirname "$0")/.."
path="${1:-/work/shared/data/MATH500.json}"
exec cargo run --quiet --locked -p powerfleet-datasets --example check_math500 -- "$path"
