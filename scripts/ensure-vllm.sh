#!/usr/bin/env bash
# Ensure a Python venv in the powerfleet cache that holds a pinned vLLM, enough of it to import its
# OpenAI-compatible completions protocol and response code on a CPU-only machine, for
# scripts/vllm-conformance.py and crates/powerfleet-backends/tests/vllm_conformance.rs.
#
# Usage:
#   scripts/ensure-vllm.sh            # last stdout line: path of the venv's python
#   scripts/ensure-vllm.sh --help
#
# Environment:
#   POWERFLEET_CACHE    cache root (default: $HOME/.cache/powerfleet)
#
# vLLM is installed with `pip install --no-deps`, together with exactly the packages that
# `vllm.entrypoints.openai.completion.protocol` and `...completion.serving` need to import
# (found by importing and adding what was missing), every one pinned below. torch is one of
# them, and torch's PyPI wheel links the CUDA libraries, so those come too (none is used: no
# GPU is needed). The venv takes 5.4 GB on disk, 3 GB of it CUDA libraries, 1.2 GB torch and
# 0.9 GB vLLM. It is cached at
#   $POWERFLEET_CACHE/vllm-venv-$VLLM_VERSION
# so this is paid once per machine: the first run took 2 min 48 s on a 2-core machine
# downloading from PyPI at about 40 MB/s (2 min 28 s for pip, 20 s for the import check);
# later runs compare the installed versions with the pins and exit in 0.2 s.
# Only PyPI is needed (or PIP_INDEX_URL pointing at a mirror of it); wheels only, nothing is
# compiled. Everything except the final path goes to stderr.
set -euo pipefail

# To move to another vLLM: change VLLM_VERSION, then redo the import loop (install with
# --no-deps, import the two modules, add what is missing) and the pins below with it.
VLLM_VERSION="0.33.0"
TORCH_PIN="torch==2.14.0"
# The CUDA libraries torch 2.14.0's libtorch_cuda.so / libtorch_python.so link (DT_NEEDED); without
# them `import torch` fails even on a CPU-only machine. Versions from torch's and
# cuda-toolkit 13.0.3's metadata.
CUDA_PINS="nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.1.3 nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35
  nvidia-cusparse==12.6.3.3 nvidia-nvjitlink==13.0.88 nvidia-cusparselt-cu13==0.8.1
  nvidia-cudnn-cu13==9.24.0.43 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.4.5"
# Pure-Python and small binary packages the imports need (torch's, vLLM's and theirs), within
# vLLM 0.33.0's declared ranges.
PY_PINS="typing_extensions==4.16.0 filelock==4.3.1 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1
  numpy==2.4.6 packaging==26.4 pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5
  annotated-types==0.8.0 annotated-doc==0.0.7 regex==2026.11.19 cbor2==6.3.0 psutil==7.2.2
  pyzmq==27.3.0 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1 requests==2.34.2
  transformers==5.20.2 tokenizers==0.23.3 safetensors==0.8.0 huggingface_hub==2.4.0 tqdm==4.70.1
  httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0 truststore==0.10.5 PyYAML==6.0.4
  aiohttp==3.14.5 multidict==7.2.1 attrs==26.1.0 yarl==1.25.1 propcache==0.5.4
  aiohappyeyeballs==2.7.1 aiosignal==1.4.0 frozenlist==1.8.0 oss-harmony==0.0.11 openai==3.57.0
  sniffio==1.3.1 anyio==4.16.0 fastapi==0.136.3 starlette==1.10.0 pillow==13.0.0 pybase64==1.5.1
  cachetools==8.0.2 prometheus_client==0.26.0 msgspec==0.23.0 cloudpickle==3.1.3 uvloop==0.23.0
  py-cpuinfo==9.0.0 xgrammar==0.2.8 apache-tvm-ffi==0.1.11 partial-json-parser==0.2.1.1.post7
  llguidance==1.7.6 orjson==3.13.0"
PINS="$(echo "vllm==$VLLM_VERSION $TORCH_PIN $CUDA_PINS $PY_PINS" | tr -s ' \n' '  ')"

PIP_VENV_NAME=vllm
VENV_DIR="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}/vllm-venv-$VLLM_VERSION"
source "$(dirname "$0")/pip-venv.sh"
IMPORTS="from vllm.entrypoints.openai.completion.protocol import CompletionRequest, CompletionResponse
from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion"

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
}

case "${1:-}" in
  "") ;;
  -h|--help) usage; exit 0 ;;
  *) usage; die "unknown argument: $1" ;;
esac

# Every pinned distribution installed at its pinned version (importlib.metadata, well under a
# second; the full import takes about 10 s, so it runs once, at install time).
pins_installed() {
  "$VENV_PY" - $PINS <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(f"{name} {version(name)} != {want}")
EOF
}

fast_path() {
  pip_venv_ready && pins_installed
}

if fast_path; then
  echo "$VENV_PY"
  exit 0
fi

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null 2>&1 \
  || die "python3 not found. Install Python 3.11 to 3.14, e.g.: apt-get install -y python3 python3-venv"
python3 -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)' \
  || die "vLLM $VLLM_VERSION needs Python 3.11 to 3.14 (python3 is $(python3 --version 2>&1))"

pip_venv_lock
# Another invocation may have finished the venv while this one waited.
if fast_path; then
  echo "$VENV_PY"
  exit 0
fi

# ---------------------------------------------------------------- venv
# No marker (or other pins): a missing, interrupted or outdated venv. Start from scratch, so
# that no package outside the pins stays behind.
pip_venv_create "incomplete or outdated"

log "==> installing vllm==$VLLM_VERSION, torch and the CUDA libraries torch links, and $(echo "$PY_PINS" | wc -w) small packages"
log "    (5.4 GB on disk, once per machine; about 3 minutes on a fast link)"
START=$SECONDS
# --no-deps: exactly the pinned set, nothing of vLLM's GPU serving stack.
# --only-binary: wheels only, nothing compiled. --no-cache-dir: do not keep a second copy of
# the wheels in pip's cache.
# shellcheck disable=SC2086
"$VENV_PY" -m pip install --disable-pip-version-check --no-cache-dir -q --no-deps \
    --only-binary=:all: $PINS >&2 \
  || die "pip install of the pinned packages failed. Network access to PyPI (https://pypi.org) is required the first time (or set PIP_INDEX_URL to a mirror)."
log "==> installed in $((SECONDS - START)) s ($(du -sh "$VENV_DIR" 2>/dev/null | cut -f1) on disk); checking the imports"
"$VENV_PY" -W ignore -c "$IMPORTS" >/dev/null 2>"$VENV_DIR/.import-check.log" \
  || { tail -n 30 "$VENV_DIR/.import-check.log" >&2; die "vLLM's completion protocol does not import in $VENV_DIR (log above)"; }
printf '%s' "$PINS" >"$MARKER"
log "==> cached vLLM $VLLM_VERSION at $VENV_DIR"
echo "$VENV_PY"
