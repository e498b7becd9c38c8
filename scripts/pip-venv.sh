# Shared by the ensure-*.sh scripts that install pinned PyPI packages into a venv cached outside
# the repository. Source it after setting PIP_VENV_NAME (messages and the lock file), VENV_DIR
# and PINS (the marker's contents); then `pip_venv_ensure CHECK WHAT PIP_ARGS...`, or, for an
# install of its own, `pip_venv_lock` and `pip_venv_create WHAT`. Everything goes to stderr.

CACHE_DIR="${POWERFLEET_CACHE:-$HOME/.cache/powerfleet}"
VENV_PY="$VENV_DIR/bin/python"
MARKER="$VENV_DIR/.powerfleet-pins"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'ensure-%s: error: %s\n' "$PIP_VENV_NAME" "$*" >&2; exit 1; }

# Whether the venv holds exactly the pins (its marker is written last).
pip_venv_ready() {
  [[ -x "$VENV_PY" ]] && [[ "$(cat "$MARKER" 2>/dev/null || true)" == "$PINS" ]]
}

# Takes the cache's lock of PIP_VENV_NAME, so that concurrent callers (e.g. parallel test runs)
# wait for each other; without flock on the machine, no lock.
pip_venv_lock() {
  mkdir -p "$CACHE_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_DIR/.ensure-$PIP_VENV_NAME.lock"
    flock 9
  fi
}

# A new, empty venv at VENV_DIR; what was there (WHAT says what, in the log) is removed first.
pip_venv_create() {
  if [[ -e "$VENV_DIR" ]]; then
    log "==> removing $1 venv at $VENV_DIR"
    rm -rf "$VENV_DIR"
  fi
  log "==> creating Python venv at $VENV_DIR"
  python3 -m venv "$VENV_DIR" >&2 \
    || die "'python3 -m venv' failed. Install the venv module, e.g.: apt-get install -y python3-venv"
}

# Makes the venv unless it is ready: a fresh venv, `pip install PIP_ARGS...` (WHAT says what, in
# the log), then the Python code CHECK must run. Concurrent callers wait for each other (flock).
pip_venv_ensure() {
  local check=$1 what=$2
  shift 2
  pip_venv_ready && return 0
  command -v python3 >/dev/null 2>&1 \
    || die "python3 not found. Install Python 3.10 or later, e.g.: apt-get install -y python3 python3-venv"
  pip_venv_lock
  # Another caller may have made it while this one waited.
  pip_venv_ready && return 0
  pip_venv_create incomplete
  log "==> installing $what"
  local start=$SECONDS
  "$VENV_PY" -m pip install --disable-pip-version-check --no-cache-dir -q --prefer-binary "$@" >&2 \
    || die "pip install failed. Network access to PyPI (https://pypi.org) is required the first time (or set PIP_INDEX_URL to a mirror)."
  "$VENV_PY" -c "$check" >&2 || die "the installed packages do not import in $VENV_DIR"
  printf '%s' "$PINS" >"$MARKER"
  log "==> cached $PIP_VENV_NAME at $VENV_DIR in $((SECONDS - start)) s ($(du -sh "$VENV_DIR" | cut -f1))"
}
