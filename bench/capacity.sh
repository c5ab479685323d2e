#!/usr/bin/env bash
# Capacity at one level: N concurrent real-time calls (`voxgate bench`, 3 turns each,
# opened over 10 s) against `voxgate serve --providers scripted` (instant STT, model
# and a 24 kHz tone voice) on a new SQLite database; prints the bench's summary
# (turns, overhead, response, reply-frame jitter, the server's CPU and memory).
#
#   bench/capacity.sh MODE CALLS
#
# MODE: pinned  the server on CPU 0, the load client on CPU 1 (what one core holds)
#       shared  no pinning: server and client share the machine
#       nginx   shared, through nginx (bench/capacity-nginx.conf.tmpl: the /agent
#               directives of deploy/nginx, one upstream; nginx from Debian); also
#               prints the nginx workers' CPU over the run
# Environment: VOXGATE_BIN [target/release/voxgate], VOXGATE_CLIENT_BIN [the same; set
# it to compare two servers under one load client], TURNS [3], RAMP [10].
# The run's folder (server log, full bench output) is printed and kept under
# ${TMPDIR:-/tmp}.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:?usage: bench/capacity.sh pinned|shared|nginx CALLS}
N=${2:?usage: bench/capacity.sh pinned|shared|nginx CALLS}
BIN=${VOXGATE_BIN:-$ROOT/target/release/voxgate}
CBIN=${VOXGATE_CLIENT_BIN:-$BIN}
PORT=${BENCH_PORT:-18095}
NPORT=$((PORT + 1))
[ -x "$BIN" ] || { echo "capacity.sh: no binary at $BIN (cargo build --release -p voxgate)" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/voxgate-capacity-$MODE-$N.XXXX")
ulimit -n "$(ulimit -Hn)"
export DATABASE_URL="sqlite://$T/v.db" VOXGATE_PROVIDERS=scripted LOG_LEVEL=warn DRAIN_TIMEOUT=5 \
    RATE_LIMIT_API=off RATE_LIMIT_API_IP=off RATE_LIMIT_CALLS=off RATE_LIMIT_CALLS_IP=off MAX_CALLS=0
: >"$T/v.db"
SP=()
CP=()
case "$MODE" in
    pinned) SP=(taskset -c 0); CP=(taskset -c 1) ;;
    shared | nginx) ;;
    *) echo "capacity.sh: MODE is pinned, shared or nginx" >&2; exit 2 ;;
esac
"${SP[@]}" "$BIN" serve --bind "127.0.0.1:$PORT" >"$T/server.log" 2>&1 &
SPID=$!
cleanup() {
    kill "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    if [ -f "$T/nginx.pid" ]; then kill "$(cat "$T/nginx.pid")" 2>/dev/null || true; fi
}
trap cleanup EXIT
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/health" 2>/dev/null && break; sleep 0.1; done
URL=http://127.0.0.1:$PORT
if [ "$MODE" = nginx ]; then
    mkdir -p "$T/tmp"
    sed "s|__DIR__|$T|g; s|__UP__|$PORT|g; s|__PORT__|$NPORT|g" bench/capacity-nginx.conf.tmpl >"$T/nginx.conf"
    nginx -c "$T/nginx.conf" -p "$T"
    URL=http://127.0.0.1:$NPORT
    sleep 0.5
fi
KEY=$("$BIN" keys create --name capacity </dev/null | tail -n1 | tr -d '\r\t ')
A=$(curl -fsS -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"name":"capacity","firstMessageMode":"user-speaks-first","endpointing":{"silenceMs":500}}' \
    "$URL/api/assistants" | grep -oE '"id":"[^"]*"' | head -n1 | cut -d'"' -f4)
# CPU ticks (user + system) of the nginx workers, from /proc (fields 14 and 15 of stat).
nginx_ticks() {
    local total=0 pid
    for pid in $(pgrep -P "$(cat "$T/nginx.pid")"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
[ "$MODE" = nginx ] && { NT0=$(nginx_ticks); NW0=$(date +%s%N); }
"${CP[@]}" "$CBIN" bench --url "$URL" --key "$KEY" --assistant "$A" --calls "$N" --turns "${TURNS:-3}" \
    --ramp "${RAMP:-10}" --server-pid "$SPID" >"$T/bench.txt" 2>"$T/bench.err" || true
echo "== $MODE $N ($T)"
grep -E "^calls|^turns|overhead|responseMs|jitter|client send lag|server   CPU|server   RSS|server   runtime|server   dropped|client   CPU|errors" "$T/bench.txt"
if [ "$MODE" = nginx ]; then
    NT1=$(nginx_ticks)
    NW1=$(date +%s%N)
    awk -v t=$((NT1 - NT0)) -v hz="$(getconf CLK_TCK)" -v ns=$((NW1 - NW0)) \
        'BEGIN { printf "nginx    CPU %.1f %% of a core over the run (its workers)\n", 100 * t / hz / (ns / 1e9) }'
fi
