# Shared by the benchmark scripts (sourced, not run): logging, CPU pinning, the
# release build, a temporary folder, and one voxgate server started and stopped.
#
# The sourcing script sets BIN, PORT, BASE_URL and (before start_server)
# SERVER_ENV, an `env VAR=... ` prefix, so that the backgrounded server is a plain
# command and $! is the server's own pid. `client` in messages is the load tool.

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Sets SERVER_PIN, CLIENT_PIN (taskset prefixes) and PINNING (a description):
# the server on CPU 0 and the load tool ($1, a name) on CPU 1, unless BENCH_PIN=0
# or there is one CPU.
choose_pins() {
    local client=$1
    if [ "${BENCH_PIN:-1}" = 0 ]; then
        SERVER_PIN=()
        CLIENT_PIN=()
        PINNING="none (server and $client share every CPU)"
    elif [ "$(nproc)" -ge 2 ]; then
        SERVER_PIN=(taskset -c 0)
        CLIENT_PIN=(taskset -c 1)
        PINNING="server on CPU 0, $client on CPU 1"
    else
        log "only one CPU: running without pinning (numbers are not comparable)"
        SERVER_PIN=()
        CLIENT_PIN=()
        PINNING="none (1 CPU)"
    fi
}

# Builds the release binary unless BENCH_SKIP_BUILD is set; checks BIN.
build_release() {
    if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
        log "cargo build --release -p voxgate"
        cargo build --release -p voxgate
    fi
    [ -x "$BIN" ] || die "no binary at $BIN"
}

# Makes TMP (removed at exit, with the server stopped); $1 names it.
make_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    SERVER_PID=""
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

stop_server() {
    [ -n "${SERVER_PID:-}" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

cleanup() { stop_server; rm -rf "$TMP"; }

# Starts the server with SERVER_ENV on PORT and waits until it is healthy; its
# log goes to $TMP/server-$1.log.
start_server() {   # $1 = label
    if curl -fsS -o /dev/null --max-time 1 "$BASE_URL/api/health" 2>/dev/null; then
        die "something already answers on $BASE_URL (set BENCH_PORT)"
    fi
    "${SERVER_ENV[@]}" "${SERVER_PIN[@]}" "$BIN" serve --bind "127.0.0.1:$PORT" \
        </dev/null >"$TMP/server-$1.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 30 "$TMP/server-$1.log" >&2 || true
            die "server exited during startup ($1)"
        fi
        curl -fsS -o /dev/null --max-time 1 "$BASE_URL/api/health" 2>/dev/null && return 0
        sleep 0.1
    done
    tail -n 30 "$TMP/server-$1.log" >&2 || true
    die "server not healthy after 60 s ($1)"
}

# A key (`voxgate keys create`, with SERVER_ENV's database) and an assistant made
# from the JSON $2 (POST /api/assistants); $1 labels errors. Sets KEY and ASSISTANT.
create_assistant() {
    local resp code body
    KEY=$("${SERVER_ENV[@]}" "$BIN" keys create --name bench </dev/null | tail -n1) ||
        die "$1: 'voxgate keys create --name bench' failed"
    KEY=${KEY//[$'\r\t ']/}
    [ -n "$KEY" ] || die "$1: 'voxgate keys create' printed no key"
    resp=$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST \
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "$2" "$BASE_URL/api/assistants")
    code=${resp##*$'\n'}
    body=${resp%$'\n'*}
    [ "$code" = 201 ] || die "$1: POST /api/assistants answered $code: $body"
    ASSISTANT=$(printf '%s' "$body" | grep -oE '"id"[[:space:]]*:[[:space:]]*"[^"]*"' | head -n1 |
        sed -E 's/^"id"[[:space:]]*:[[:space:]]*"([^"]*)"$/\1/')
    [ -n "$ASSISTANT" ] || die "$1: no \"id\" in POST answer: $body"
}

# Fields of a saved `voxgate bench` table.
#   row FILE NAME  ->  "n p50 p95 p99 max" of the row starting with NAME ("- - - - -" if absent)
row() {
    awk -v name="$2" '
        index($0, name) == 1 { rest = substr($0, length(name) + 1); split(rest, f, " ");
                               print f[1], f[2], f[3], f[4], f[5]; found = 1; exit }
        END { if (!found) print "- - - - -" }' "$1"
}
ratio() {   # a b -> a/b with 2 decimals, or "-"
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 <= 0) print "-"; else printf "%.2f", a / b }'
}
