#!/usr/bin/env bash
# Private PostgreSQL server for the tests, on loopback, without systemd.
#
#   scripts/pg.sh          start (or reuse) the server; last stdout line is its URL
#   scripts/pg.sh stop     stop it
#   scripts/pg.sh status   say whether it runs (exit 0 if it does)
#
# Environment:
#   VOXGATE_PG_PORT   TCP port on 127.0.0.1 (default 55432)
#   VOXGATE_PG_DIR    cluster directory (default <repo>/target/pg)
#   VOXGATE_PG_BIN    PostgreSQL bin dir (default newest /usr/lib/postgresql/*/bin)
#
# Everything but the URL goes to stderr.
set -euo pipefail
case "${VOXGATE_PG_DIR:-}" in
    ''|/*) ;;
    *) VOXGATE_PG_DIR="$PWD/$VOXGATE_PG_DIR" ;;   # relative to the caller's cwd
esac
cd "$(dirname "$0")/.."

PORT="${VOXGATE_PG_PORT:-55432}"
BASE="${VOXGATE_PG_DIR:-$PWD/target/pg}"
DB=voxgate_test
APP_ROLE=voxgate

log() { printf 'pg: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if [ -n "${VOXGATE_PG_BIN:-}" ]; then
    BIN="$VOXGATE_PG_BIN"
else
    BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi
if [ ! -x "$BIN/pg_ctl" ]; then
    die "PostgreSQL server binaries not found (run scripts/setup.sh)"
fi

# initdb refuses to run as root: run the server as the postgres OS user then.
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (run scripts/setup.sh)"
    as_pg() { (cd / && runuser -u postgres -- "$@"); }
    # The postgres user must be able to reach the cluster directory; a repo
    # under a private home (e.g. /root) is not reachable, so fall back to /tmp.
    if [ -z "${VOXGATE_PG_DIR:-}" ]; then
        parent=$(dirname "$BASE")
        mkdir -p "$parent"
        if ! runuser -u postgres -- test -x "$parent"; then
            BASE="/tmp/voxgate-pg-$(printf '%s' "$PWD" | cksum | cut -d' ' -f1)"
            log "postgres user cannot reach $parent; using $BASE"
        fi
    fi
else
    as_pg() { "$@"; }
fi

DATA="$BASE/data"
LOGFILE="$BASE/postgres.log"

running() { [ -f "$DATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres; }
psql_admin() {
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres "${@:2}"
}

cmd="${1:-start}"
case "$cmd" in
    stop)
        if running; then
            as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
            log "stopped ($DATA)"
        else
            log "not running ($DATA)"
        fi
        exit 0
        ;;
    status)
        if running; then
            log "running ($DATA, port $(sed -n 4p "$DATA/postmaster.pid"))"
            exit 0
        fi
        log "not running ($DATA)"
        exit 3
        ;;
    start) ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac

mkdir -p "$BASE"
# One pg.sh at a time per cluster (parallel test runs starting it together).
exec 9>"$BASE.lock"
flock 9

if running; then
    actual=$(sed -n 4p "$DATA/postmaster.pid")
    if [ "$actual" != "$PORT" ]; then
        log "already running on port $actual (asked for $PORT); reusing it"
        PORT="$actual"
    else
        log "reusing running server ($DATA)"
    fi
elif ready "$PORT"; then
    # Something else answers on the port: reuse it if it lets us in as postgres.
    psql_admin "$PORT" -c 'select 1' >/dev/null 2>&1 ||
        die "port $PORT is taken by a server we cannot use; set VOXGATE_PG_PORT"
    log "reusing the server already listening on 127.0.0.1:$PORT"
else
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$BASE"
    fi
    chmod 700 "$BASE"
    if [ ! -s "$DATA/PG_VERSION" ]; then
        log "initdb $DATA"
        rm -rf "$DATA"
        as_pg "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
            -A trust --no-sync >"$BASE/initdb.log" 2>&1 ||
            { cat "$BASE/initdb.log" >&2; die "initdb failed"; }
        as_pg tee "$DATA/pg_hba.conf" >/dev/null <<'HBA'
# voxgate test cluster: trust on loopback only
local   all  all                 trust
host    all  all  127.0.0.1/32   trust
host    all  all  ::1/128        trust
host    replication all 127.0.0.1/32 trust
HBA
        as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<'CONF'

# --- voxgate test settings (scripts/pg.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
CONF
    fi
    # Port on the command line so VOXGATE_PG_PORT also applies to an existing
    # cluster; 9>&- keeps the lock's fd out of the long-lived server.
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -o "-p $PORT" -w -t 60 start >/dev/null 9>&- ||
        { tail -n 30 "$LOGFILE" >&2 || true; die "server did not start (log: $LOGFILE)"; }
    log "started on 127.0.0.1:$PORT ($DATA)"
fi

for _ in $(seq 1 100); do
    ready "$PORT" && break
    sleep 0.2
done
ready "$PORT" || die "server on 127.0.0.1:$PORT not ready (log: $LOGFILE)"

# Database and an application role (idempotent).
psql_admin "$PORT" <<SQL
SELECT 'CREATE DATABASE $DB' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB')\gexec
SELECT 'CREATE ROLE $APP_ROLE LOGIN CREATEDB' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_ROLE')\gexec
GRANT ALL PRIVILEGES ON DATABASE $DB TO $APP_ROLE;
SQL

echo "postgres://postgres@127.0.0.1:$PORT/$DB"
