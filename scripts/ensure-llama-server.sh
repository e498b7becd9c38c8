#!/usr/bin/env bash
# Ensure a working llama.cpp `llama-server` binary (and a small Python tool
# venv) exists in the powerfleet cache, building it from the llama.cpp sources
# vendored in the llama-cpp-python sdist if needed.
#
# Usage:
#   scripts/ensure-llama-server.sh            # last stdout line: path of llama-server
#   scripts/ensure-llama-server.sh --python   # last stdout line: path of the venv python
#                                             # (has gguf + numpy; for make-tiny-gguf.py)
#   scripts/ensure-llama-server.sh --help
#
# Environment:
#   POWERFLEET_CACHE            cache root (default: $HOME/.cache/powerfleet)
#   LLAMA_CPP_PYTHON_VERSION    llama-cpp-python sdist version to build from (default below)
#   POWERFLEET_BUILD_JOBS       parallel build jobs (default: 2)
#
# Everything except the final path goes to stderr. Nothing is written inside the
# repository: sources are downloaded and built in a temporary directory that is
# removed afterwards; the binary is cached at
#   $POWERFLEET_CACHE/llama-server-$LLAMA_CPP_PYTHON_VERSION/llama-server
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CMAKE_PIN="cmake==3.31.10"
GGUF_PIN="gguf==0.19.0"
NUMPY_PIN="numpy==2.2.6"
PIP_VENV_NAME=llama-server
VENV_DIR="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}/venv"
source "$(dirname "$0")/pip-venv.sh"
JOBS="${POWERFLEET_BUILD_JOBS:-2}"

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
}

MODE=server
case "${1:-}" in
  "") ;;
  --python) MODE=python ;;
  -h|--help) usage; exit 0 ;;
  *) usage; die "unknown argument: $1" ;;
esac

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null 2>&1 \
  || die "python3 not found. Install it, e.g.: apt-get install -y python3 python3-venv"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || die "python3 >= 3.9 required (found $(python3 --version 2>&1))"

pip_venv_lock

# ---------------------------------------------------------------- venv
PINS="$CMAKE_PIN $GGUF_PIN $NUMPY_PIN"

ensure_venv() {
  if pip_venv_ready && "$VENV_PY" -c 'import gguf, numpy' >/dev/null 2>&1 \
     && [[ -x "$VENV_DIR/bin/cmake" ]]; then
    return 0
  fi
  if [[ -e "$VENV_DIR" ]] && ! "$VENV_PY" -c '' >/dev/null 2>&1; then
    log "==> removing broken venv at $VENV_DIR"
    rm -rf "$VENV_DIR"
  fi
  if [[ ! -x "$VENV_PY" ]]; then
    log "==> creating Python venv at $VENV_DIR"
    rm -rf "$VENV_DIR"
    python3 -m venv "$VENV_DIR" >&2 \
      || die "'python3 -m venv' failed. Install the venv module, e.g.: apt-get install -y python3-venv"
  fi
  log "==> installing $PINS into $VENV_DIR"
  "$VENV_PY" -m pip install --disable-pip-version-check -q $PINS >&2 \
    || die "pip install of '$PINS' failed. Network access to PyPI (https://pypi.org) is required the first time (or set PIP_INDEX_URL to a mirror)."
  printf '%s' "$PINS" >"$MARKER"
}

ensure_venv

if [[ "$MODE" == python ]]; then
  echo "$VENV_PY"
  exit 0
fi

# ---------------------------------------------------------------- llama-server
OUT_DIR="$CACHE_DIR/llama-server-$LLAMA_CPP_PYTHON_VERSION"
BIN="$OUT_DIR/llama-server"

works() {
  [[ -x "$1" ]] || return 1
  "$1" --version >/dev/null 2>&1 || "$1" --help >/dev/null 2>&1
}

if works "$BIN"; then
  echo "$BIN"
  exit 0
fi

command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
  || die "no C++ compiler (g++) found. Install one, e.g.: apt-get install -y build-essential"
command -v make >/dev/null 2>&1 \
  || die "'make' not found. Install it, e.g.: apt-get install -y build-essential"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/powerfleet-llama-build.XXXXXX")"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

log "==> downloading llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sources"
"$VENV_PY" -m pip download --disable-pip-version-check -q --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$TMP/dl" >&2 \
  || die "could not download the llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist from PyPI (network access to https://pypi.org required; check LLAMA_CPP_PYTHON_VERSION)"
SDIST="$(ls "$TMP"/dl/llama_cpp_python-*.tar.gz 2>/dev/null | head -n1)"
[[ -n "$SDIST" ]] || die "sdist not found after download (expected $TMP/dl/llama_cpp_python-*.tar.gz)"
tar -xzf "$SDIST" -C "$TMP"
SRC="$(ls -d "$TMP"/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null | head -n1)"
[[ -n "$SRC" && -f "$SRC/CMakeLists.txt" ]] || die "vendor/llama.cpp not found in $SDIST"

# Option names drift between llama.cpp versions: only pass those that exist.
has_opt() { grep -rqs --include=CMakeLists.txt "option($1\b" "$SRC/CMakeLists.txt" "$SRC/tools" "$SRC/ggml/CMakeLists.txt"; }
CMAKE_ARGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=OFF          # cached binary must not SIGILL on another CPU
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF -DGGML_OPENCL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
)
has_opt LLAMA_CURL            && CMAKE_ARGS+=(-DLLAMA_CURL=OFF)
has_opt LLAMA_OPENSSL         && CMAKE_ARGS+=(-DLLAMA_OPENSSL=OFF)
has_opt LLAMA_BUILD_UI        && CMAKE_ARGS+=(-DLLAMA_BUILD_UI=OFF)
has_opt LLAMA_USE_PREBUILT_UI && CMAKE_ARGS+=(-DLLAMA_USE_PREBUILT_UI=OFF)
has_opt LLAMA_BUILD_WEBUI     && CMAKE_ARGS+=(-DLLAMA_BUILD_WEBUI=OFF)
has_opt LLAMA_BUILD_APP       && CMAKE_ARGS+=(-DLLAMA_BUILD_APP=OFF)

log "==> building llama-server (about 5 minutes on 2 cores)"
log "    cmake ${CMAKE_ARGS[*]}"
"$VENV_DIR/bin/cmake" -S "$SRC" -B "$TMP/build" "${CMAKE_ARGS[@]}" >"$TMP/configure.log" 2>&1 \
  || { tail -n 40 "$TMP/configure.log" >&2; die "cmake configure failed (log above)"; }
"$VENV_DIR/bin/cmake" --build "$TMP/build" --config Release --target llama-server -j "$JOBS" >"$TMP/build.log" 2>&1 \
  || { tail -n 60 "$TMP/build.log" >&2; die "build of llama-server failed (log above)"; }

BUILT="$(find "$TMP/build" -type f -name llama-server -perm -u+x | head -n1)"
[[ -n "$BUILT" ]] || die "llama-server binary not found in build tree"
mkdir -p "$OUT_DIR"
cp "$BUILT" "$OUT_DIR/llama-server.tmp.$$"
mv -f "$OUT_DIR/llama-server.tmp.$$" "$BIN"
works "$BIN" || die "built $BIN but it does not run ('--version' and '--help' both failed)"
log "==> cached $BIN"
echo "$BIN"
