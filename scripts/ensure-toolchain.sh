#!/usr/bin/env bash
# Checks that the Rust toolchain powerfleet builds with is present; says what to install if not.
# Sourced by scripts/test.sh and scripts/demo.sh.

need_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    for dir in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
      if [ -x "$dir/cargo" ]; then
        export PATH="$dir:$PATH"
        break
      fi
    done
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed. Install Rust 1.88 or newer (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh), then run this again." >&2
    exit 1
  fi
  local version
  version=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n1.88.0\n' "$version" | sort -V | head -n1)" != "1.88.0" ]; then
    echo "error: rustc $version is too old; powerfleet needs 1.88 or newer (rustup update stable)." >&2
    exit 1
  fi
}

need_rust_component() {
  local sub=$1 component=$2
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    echo "error: cargo $sub is missing. Install it with: rustup component add $component" >&2
    exit 1
  fi
}

# A full test build takes about 4 GB under the target directory, and the caches of the test tools
# (llama-server, vLLM's protocol package, the eval clients) about 3 GB more on their first run.
# Fails early with what is free, instead of a linker's "No space left on device" mid-build.
need_disk() {
  local need_gb=$1 dir=${CARGO_TARGET_DIR:-target}
  mkdir -p "$dir"
  local free_kb
  free_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "error: $(cd "$dir" && pwd) has $((free_kb / 1024)) MB free; the build and tests need about ${need_gb} GB. Free some space (cargo clean in other checkouts, old caches), or point CARGO_TARGET_DIR at a larger disk, then run this again." >&2
    exit 1
  fi
}
