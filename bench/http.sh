#!/usr/bin/env bash
# HTTP benchmark of the voxgate API server with wrk, on SQLite and PostgreSQL.
#
#   bench/http.sh                 both backends
#   bench/http.sh sqlite          one backend (sqlite | postgres)
#   bench/http.sh --parse-wrk F   print "req/s p99_ms non2xx socket_errors" of a saved wrk output
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10s]  BENCH_CONNECTIONS [32]  BENCH_WARMUP [2s, "0" for none]
#   BENCH_PORT [18080]    BENCH_SKIP_BUILD [unset; 1 = use the existing binary]
#   VOXGATE_BIN [target/release/voxgate]
#   BENCH_PIN [1; 0 = no pinning: the server and wrk share the whole machine]
# The server is pinned to CPU 0 and wrk to CPU 1 (taskset), so the numbers are
# for a one-core server. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# --- wrk output parsing --------------------------------------------------------
# Prints: requests/sec, p99 latency in ms, non-2xx/3xx count, socket errors.
parse_wrk() {
    awk '
        function to_ms(v,   num, unit) {
            num = v; sub(/[a-zA-Z]+$/, "", num); unit = substr(v, length(num) + 1)
            if (unit == "us") return num / 1000
            if (unit == "ms") return num + 0
            if (unit == "s")  return num * 1000
            if (unit == "m")  return num * 60000
            if (unit == "h")  return num * 3600000
            return -1
        }
        /^Requests\/sec:/             { rps = $2 }
        /^[ \t]+99%[ \t]/             { p99 = to_ms($2) }
        /Non-2xx or 3xx responses:/   { non2xx = $NF }
        /Socket errors:/              { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
        END {
            if (rps == "" || p99 == "") exit 1
            printf "%.2f %.3f %d %d\n", rps, p99, non2xx, sockerr
        }' "$1"
}

if [ "${1:-}" = --parse-wrk ]; then
    [ $# -eq 2 ] || die "usage: $0 --parse-wrk FILE"
    parse_wrk "$2" || die "no Requests/sec or 99% line in $2"
    exit 0
fi

# --- settings --------------------------------------------------------------------
DURATION="${BENCH_DURATION:-10s}"
CONNS="${BENCH_CONNECTIONS:-32}"
WARMUP="${BENCH_WARMUP:-2s}"
PORT="${BENCH_PORT:-18080}"
BIN="${VOXGATE_BIN:-$ROOT/target/release/voxgate}"
BASE_URL="http://127.0.0.1:$PORT"

if [ $# -gt 0 ]; then BACKENDS=("$@"); else BACKENDS=(sqlite postgres); fi
for b in "${BACKENDS[@]}"; do
    case "$b" in sqlite|postgres) ;; *) die "unknown backend '$b' (sqlite | postgres)" ;; esac
done

for cmd in wrk curl taskset; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (run scripts/setup.sh)"
done

choose_pins wrk
build_release
make_tmp voxgate-bench

# The server's environment for one backend (an `env` prefix, so that the
# backgrounded server is a plain command and $! is the server's own pid).
set_server_env() {   # $1 = DATABASE_URL
    SERVER_ENV=(env DATABASE_URL="$1" VOXGATE_PROVIDERS=scripted RATE_LIMIT_API=off RATE_LIMIT_API_IP=off LOG_LEVEL=warn)
}

# Runs wrk; $1 = output file, rest = extra wrk args and the URL.
run_wrk() {
    local out=$1; shift
    "${CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed"; }
}
warm_up() {
    [ "$WARMUP" = 0 ] && return 0
    "${CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"$WARMUP" "$@" >/dev/null 2>&1 || true
}

# POST body and headers for wrk; the key goes in with -H.
POST_LUA="$TMP/post.lua"
cat >"$POST_LUA" <<'LUA'
wrk.method = "POST"
wrk.body = '{"name":"bench"}'
wrk.headers["Content-Type"] = "application/json"
LUA

ROWS=()       # "backend|endpoint|rps|p99|ratio|non2xx|sockerr"
RAW="$TMP/raw.txt"
: >"$RAW"

record() {    # $1 backend, $2 endpoint, $3 wrk output file, $4 health rps (or "")
    local parsed rps p99 non2xx sockerr ratio
    parsed=$(parse_wrk "$3") || { cat "$3" >&2; die "could not parse wrk output ($1 $2)"; }
    read -r rps p99 non2xx sockerr <<<"$parsed"
    if [ -n "$4" ]; then
        ratio=$(awk -v a="$rps" -v b="$4" 'BEGIN { printf (b > 0 ? "%.3f" : "-"), (b > 0 ? a / b : 0) }')
    else
        ratio="1.000"
    fi
    ROWS+=("$1|$2|$rps|$p99|$ratio|$non2xx|$sockerr")
    if [ "$non2xx" != 0 ] || [ "$sockerr" != 0 ]; then
        log "WARNING: $1 $2: $non2xx non-2xx/3xx responses, $sockerr socket errors"
    fi
    { printf '===== %s %s\n' "$1" "$2"; cat "$3"; echo; } >>"$RAW"
}

bench_backend() {   # $1 = backend
    local backend=$1 key resp code body id health_rps
    case "$backend" in
        sqlite)
            mkdir -p "$TMP/sqlite"
            # An empty file is a valid empty SQLite database; having it there
            # means the server need not create the file itself.
            : >"$TMP/sqlite/voxgate.db"
            DB_URL="sqlite://$TMP/sqlite/voxgate.db"
            ;;
        postgres)
            local pg_url admin
            pg_url=$(bash scripts/pg.sh | tail -n1)
            admin="${pg_url%/*}/postgres"
            PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$admin" \
                -c 'DROP DATABASE IF EXISTS voxgate_bench WITH (FORCE)' \
                -c 'CREATE DATABASE voxgate_bench' >/dev/null
            DB_URL="${pg_url%/*}/voxgate_bench"
            ;;
    esac
    set_server_env "$DB_URL"
    log "$backend: $DB_URL"

    start_server "$backend"

    # Key after the server is up, so the schema exists whichever command migrates.
    key=$("${SERVER_ENV[@]}" "$BIN" keys create --name bench </dev/null | tail -n1) ||
        die "$backend: 'voxgate keys create --name bench' failed"
    key=${key//[$'\r\t ']/}
    [ -n "$key" ] || die "$backend: 'voxgate keys create' printed no key"

    resp=$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d '{"name":"bench"}' "$BASE_URL/api/assistants")
    code=${resp##*$'\n'}
    body=${resp%$'\n'*}
    [ "$code" = 201 ] || die "$backend: POST /api/assistants answered $code: $body"
    id=$(printf '%s' "$body" | grep -oE '"id"[[:space:]]*:[[:space:]]*("[^"]*"|[0-9]+)' |
        head -n1 | sed -E 's/^"id"[[:space:]]*:[[:space:]]*"?([^"]*)"?$/\1/')
    [ -n "$id" ] || die "$backend: no \"id\" in POST answer: $body"
    code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer $key" "$BASE_URL/api/assistants/$id")
    [ "$code" = 200 ] || die "$backend: GET /api/assistants/$id answered $code"

    local auth=(-H "Authorization: Bearer $key")

    log "$backend: GET /api/health"
    warm_up "$BASE_URL/api/health"
    run_wrk "$TMP/$backend-health.txt" "$BASE_URL/api/health"
    record "$backend" "GET /api/health" "$TMP/$backend-health.txt" ""
    health_rps=$(parse_wrk "$TMP/$backend-health.txt" | cut -d' ' -f1)

    log "$backend: GET /api/assistants/:id"
    warm_up "${auth[@]}" "$BASE_URL/api/assistants/$id"
    run_wrk "$TMP/$backend-get.txt" "${auth[@]}" "$BASE_URL/api/assistants/$id"
    record "$backend" "GET /api/assistants/:id" "$TMP/$backend-get.txt" "$health_rps"

    log "$backend: POST /api/assistants"
    warm_up -s "$POST_LUA" "${auth[@]}" "$BASE_URL/api/assistants"
    run_wrk "$TMP/$backend-post.txt" -s "$POST_LUA" "${auth[@]}" "$BASE_URL/api/assistants"
    record "$backend" "POST /api/assistants" "$TMP/$backend-post.txt" "$health_rps"

    stop_server
}

for backend in "${BACKENDS[@]}"; do
    bench_backend "$backend"
done

# --- report ----------------------------------------------------------------------
mkdir -p bench/results
RESULT="bench/results/http-$(date +%Y-%m-%d-%H%M%S).txt"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then rev="$rev (dirty)"; fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)

report() {
    echo "voxgate HTTP benchmark, $(date '+%Y-%m-%d %H:%M:%S %z')"
    echo "commit: $rev"
    echo "machine: $(nproc) CPUs, ${cpu:-unknown CPU}; pinning: $PINNING"
    echo "wrk: -t1 -c$CONNS -d$DURATION --latency (warm-up $WARMUP per endpoint)"
    echo "ratio = req/s / req/s of GET /api/health on the same server (in-run baseline)"
    echo
    printf '%-9s %-24s %11s %10s %8s %8s %7s\n' backend endpoint req/s p99_ms ratio non2xx sockerr
    local row
    for row in "${ROWS[@]}"; do
        IFS='|' read -r b e r p ra n s <<<"$row"
        printf '%-9s %-24s %11s %10s %8s %8s %7s\n' "$b" "$e" "$r" "$p" "$ra" "$n" "$s"
    done
}

report | tee "$RESULT"
{ echo; echo "---- raw wrk output"; cat "$RAW"; } >>"$RESULT"
log "results written to $RESULT"
