#!/usr/bin/env bash
# Makes sure the services the tests use are present: redis-server on PATH (tests start their own on
# free ports), a PostgreSQL server the tests can create databases on, bubblewrap (the grading
# sandbox), and what the sandbox needs to run programs as a user other than a non-root
# collector's: newuidmap/newgidmap (Debian's uidmap) and, for the sandbox tests' unprivileged run,
# a user with uid 10001 that has subordinate ids. Installs them with apt-get (and makes the user)
# when missing and possible; otherwise says exactly what to install.
# Sourced by scripts/test.sh. Exports POWERFLEET_TEST_POSTGRES_URL.

: "${POWERFLEET_TEST_POSTGRES_URL:=postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export POWERFLEET_TEST_POSTGRES_URL

_apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing $* with apt-get" >&2
    if [ -z "${_PF_APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
      _PF_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    return 1
  fi
}

need_redis_server() {
  # redis-cli makes the private Redis Cluster of the cluster tests (redis-cli --cluster create).
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    _apt_install redis-server redis-tools || {
      echo "error: redis-server and redis-cli are not installed. Install them (Debian/Ubuntu: sudo apt-get install redis-server redis-tools; macOS: brew install redis) and run this again." >&2
      exit 1
    }
  fi
}

_pg_ready() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p 5432
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

need_postgres() {
  # Only the default local URL is managed here; a custom URL is the caller's to provide.
  case "$POWERFLEET_TEST_POSTGRES_URL" in
    *@127.0.0.1:5432/*|*@localhost:5432/*) ;;
    *) return 0 ;;
  esac
  _pg_ready && return 0
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    _apt_install postgresql || {
      echo "error: PostgreSQL is not running on 127.0.0.1:5432 and cannot be installed here. Install and start it (sudo apt-get install postgresql), or set POWERFLEET_TEST_POSTGRES_URL to a server where the user may create databases." >&2
      exit 1
    }
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1) || version=""
    if [ -z "$version" ] && command -v pg_createcluster >/dev/null 2>&1; then
      version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
      pg_createcluster "$version" main >&2
    fi
    echo "==> starting PostgreSQL $version" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  fi
  for _ in $(seq 1 30); do _pg_ready && break; sleep 1; done
  if ! _pg_ready; then
    echo "error: PostgreSQL did not come up on 127.0.0.1:5432; start it, or set POWERFLEET_TEST_POSTGRES_URL." >&2
    exit 1
  fi
  # A freshly installed server authenticates TCP clients by password: give the postgres user the one
  # in the default URL (harmless where trust authentication is configured).
  if command -v runuser >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 || true
  fi
}

need_openssl() {
  # The TLS tests make a throwaway CA and server certificate with the openssl command.
  if ! command -v openssl >/dev/null 2>&1; then
    _apt_install openssl || {
      echo "error: openssl is not installed; install it (Debian/Ubuntu: sudo apt-get install openssl; macOS: brew install openssl) and run this again." >&2
      exit 1
    }
  fi
}

need_subordinate_ids() {
  # A collector that is not root runs graded programs as a subordinate id of its user's
  # (docs/grading.md, "user"): unshare maps it with the setuid newuidmap and newgidmap. The sandbox
  # tests, run as root, run their suite again as uid 10001 (the image's collector user), which needs
  # a user with that uid and primary gid and subordinate ids in /etc/subuid and /etc/subgid.
  if ! command -v newuidmap >/dev/null 2>&1 || ! command -v newgidmap >/dev/null 2>&1; then
    _apt_install uidmap || {
      echo "error: newuidmap/newgidmap are not installed; a grading collector that is not root needs them to run programs as another user. Install them (Debian/Ubuntu: sudo apt-get install -y uidmap) and run this again." >&2
      exit 1
    }
  fi
  [ "$(id -u)" = 0 ] || return 0
  local user
  # getent exits 2 for an id nobody has, which pipefail would make this whole line's failure.
  user=$(getent passwd 10001 | cut -d: -f1) || user=""
  if [ -z "$user" ]; then
    user=powerfleet-test
    getent group 10001 >/dev/null || groupadd --system --gid 10001 "$user"
    useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin "$user" >&2
  fi
  if ! grep -qE "^($user|10001):" /etc/subuid 2>/dev/null || ! grep -qE "^($user|10001):" /etc/subgid 2>/dev/null; then
    usermod --add-subuids 200000-265535 --add-subgids 200000-265535 "$user"
  fi
}

need_bwrap() {
  # The grading sandbox walls every HumanEval program in with bubblewrap, run as an unprivileged
  # user: it needs bwrap and unprivileged user namespaces.
  if ! command -v bwrap >/dev/null 2>&1; then
    _apt_install bubblewrap || {
      echo "error: bubblewrap (bwrap) is not installed; the grading sandbox needs it. Install it (Debian/Ubuntu: sudo apt-get install -y bubblewrap; Fedora: sudo dnf install bubblewrap) and run this again." >&2
      exit 1
    }
  fi
  if ! bwrap --unshare-all --unshare-user --ro-bind / / --proc /proc --dev /dev -- true 2>/dev/null; then
    echo "error: bubblewrap is installed but cannot make its namespaces here ($(bwrap --unshare-all --unshare-user --ro-bind / / --proc /proc --dev /dev -- true 2>&1 | head -n1)). Allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 where it exists, user.max_user_namespaces > 0; in a container, seccomp and AppArmor unconfined and an unmasked /proc: docs/operations.md)." >&2
    exit 1
  fi
}
