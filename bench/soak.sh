#!/usr/bin/env bash
# Soak test: does a server that runs for weeks leak per call? `voxgate bench`
# against `voxgate serve --providers scripted` (release build), in two phases:
#
#   A. SOAK_TOTAL calls, SOAK_SEQ_CONCURRENCY at a time, each place opening its
#      next call as soon as its last one has ended (thousands of calls in sequence);
#   B. SOAK_CONCURRENCY calls at a time for SOAK_MINUTES minutes.
#
# The server's resident memory, open file descriptors (/proc/<pid>/fd) and live
# tokio tasks (`voxgate_runtime_alive_tasks` on /api/metrics) are read after a
# warm-up (the baseline), every SOAK_SAMPLE_SECS during the phases, and after each
# phase once its calls have ended and the server has settled. The run fails when
# memory is not back within SOAK_RSS_PCT % of the baseline, or descriptors or tasks
# are not back to theirs (SOAK_FD_SLACK, SOAK_TASK_SLACK: default 0).
#
#   bench/soak.sh                          the full soak (about 40 minutes)
#   SOAK_MINUTES=10 SOAK_TOTAL=1000 bench/soak.sh
#
# Environment (defaults in brackets):
#   SOAK_MINUTES [30]  SOAK_CONCURRENCY [50]  SOAK_TOTAL [3000]  SOAK_SEQ_CONCURRENCY [10]
#   SOAK_WARMUP [200, calls at SOAK_CONCURRENCY]  SOAK_SAMPLE_SECS [30]
#   SOAK_RSS_PCT [10]  SOAK_FD_SLACK [0]  SOAK_TASK_SLACK [0]
#   BENCH_PORT [18083]  BENCH_SKIP_BUILD [unset; 1 = use the existing binary]
#   VOXGATE_BIN [target/release/voxgate]  BENCH_PIN [1; 0 = no CPU pinning]
# Each call is one turn: espeak-ng says "hello", 200 ms of endpointing silence, the
# scripted reply (a 1.7 s tone), then `end`. Results: bench/results/soak-<date>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

MINUTES="${SOAK_MINUTES:-30}"
CONC="${SOAK_CONCURRENCY:-50}"
TOTAL="${SOAK_TOTAL:-3000}"
SEQ_CONC="${SOAK_SEQ_CONCURRENCY:-10}"
WARMUP="${SOAK_WARMUP:-200}"
SAMPLE_SECS="${SOAK_SAMPLE_SECS:-30}"
RSS_PCT="${SOAK_RSS_PCT:-10}"
FD_SLACK="${SOAK_FD_SLACK:-0}"
TASK_SLACK="${SOAK_TASK_SLACK:-0}"
PORT="${BENCH_PORT:-18083}"
BIN="${VOXGATE_BIN:-$ROOT/target/release/voxgate}"
BASE_URL="http://127.0.0.1:$PORT"

for v in "$MINUTES" "$CONC" "$TOTAL" "$SEQ_CONC" "$WARMUP" "$SAMPLE_SECS" "$RSS_PCT" "$FD_SLACK" "$TASK_SLACK"; do
    case "$v" in ''|*[!0-9]*) die "'$v' is not a whole number (see the SOAK_ settings)" ;; esac
done
for cmd in curl espeak-ng awk; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (run scripts/setup.sh)"
done
need=$((CONC * 2 + 512))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n "$need" || die "cannot raise the file-descriptor limit to $need"

choose_pins "load client"
build_release
make_tmp voxgate-soak

: >"$TMP/voxgate.db"
# Rate limits off, scripted models, few logs; a database pool of a fixed size, so
# the count of open files does not depend on how many connections a phase needed.
SERVER_ENV=(env DATABASE_URL="sqlite://$TMP/voxgate.db" VOXGATE_PROVIDERS=scripted LOG_LEVEL=warn DRAIN_TIMEOUT=5
    RATE_LIMIT_API=off RATE_LIMIT_API_IP=off RATE_LIMIT_CALLS=off RATE_LIMIT_CALLS_IP=off
    DB_MIN_CONNECTIONS=8 DB_MAX_CONNECTIONS=8 RECORDINGS_DIR="$TMP/rec" FILES_DIR="$TMP/files")
start_server soak
create_assistant soak '{"name":"soak","firstMessageMode":"user-speaks-first","firstMessage":null,"endpointing":{"silenceMs":200}}'
espeak-ng -w "$TMP/hello.wav" hello

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"; }
fds() { find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
tasks() {
    curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" -H 'Connection: close' "$BASE_URL/api/metrics" |
        awk '$1 == "voxgate_runtime_alive_tasks" { print $2 }'
}
# "rss fds tasks" once fds and tasks have not changed for 2 s (at most 60 s): a
# closed connection's task and socket go a little after the client's.
settled() {
    local last="" now i
    for i in $(seq 1 30); do
        sleep 2
        now="$(fds) $(tasks)"
        [ "$now" = "$last" ] && break
        last=$now
    done
    echo "$(rss) $now"
}

SAMPLES="$TMP/samples.txt"
sampler() {   # $1 = phase; every SAMPLE_SECS: seconds, phase, rss KiB, fds, tasks
    local t0=$SECONDS
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        printf '%6d %-7s %8s %6s %6s\n' $((SECONDS - t0)) "$1" "$(rss)" "$(fds)" "$(tasks || echo -)" >>"$SAMPLES"
        sleep "$SAMPLE_SECS"
    done
}

bench() {   # $1 = label, then bench arguments
    local label=$1
    shift
    log "$label: voxgate bench $* ($PINNING)"
    if ! "${CLIENT_PIN[@]}" "$BIN" bench --url "$BASE_URL" --key "$KEY" --assistant "$ASSISTANT" --wav "$TMP/hello.wav" \
        --silence-ms 200 --gap-ms 100 --turns 1 --server-pid "$SERVER_PID" "$@" >"$TMP/$label.txt" 2>"$TMP/$label.err"; then
        STATUS=1
        log "WARNING: $label: $(tail -n1 "$TMP/$label.err")"
    fi
    cat "$TMP/$label.txt" >&2
}

STATUS=0
bench warmup --calls "$CONC" --total "$WARMUP"
read -r BASE_RSS BASE_FDS BASE_TASKS <<<"$(settled)"
log "baseline: RSS $BASE_RSS KiB, $BASE_FDS fds, $BASE_TASKS tasks"
printf '%6s %-7s %8s %6s %6s\n' secs phase rssKiB fds tasks >"$SAMPLES"

sampler A &
SAMPLER=$!
bench phaseA --calls "$SEQ_CONC" --total "$TOTAL"
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
read -r A_RSS A_FDS A_TASKS <<<"$(settled)"
log "after phase A: RSS $A_RSS KiB, $A_FDS fds, $A_TASKS tasks"

sampler B &
SAMPLER=$!
bench phaseB --calls "$CONC" --duration $((MINUTES * 60))
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
read -r B_RSS B_FDS B_TASKS <<<"$(settled)"
log "after phase B: RSS $B_RSS KiB, $B_FDS fds, $B_TASKS tasks"

verdicts=()
check() {   # label rss fds tasks
    local ok=1
    if [ "$2" -gt $((BASE_RSS * (100 + RSS_PCT) / 100)) ]; then ok=0; verdicts+=("$1: RSS $2 KiB is more than $RSS_PCT % over the baseline $BASE_RSS KiB"); fi
    if [ "$3" -gt $((BASE_FDS + FD_SLACK)) ]; then ok=0; verdicts+=("$1: $3 open fds, baseline $BASE_FDS"); fi
    if [ "${4%.*}" -gt $((${BASE_TASKS%.*} + TASK_SLACK)) ]; then ok=0; verdicts+=("$1: $4 live tasks, baseline $BASE_TASKS"); fi
    [ "$ok" = 1 ] || STATUS=1
}
check "after phase A" "$A_RSS" "$A_FDS" "$A_TASKS"
check "after phase B" "$B_RSS" "$B_FDS" "$B_TASKS"
stop_server

# --- report ----------------------------------------------------------------------
mkdir -p bench/results
RESULT="bench/results/soak-$(date +%Y-%m-%d-%H%M%S).txt"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then rev="$rev (dirty)"; fi
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
calls_of() { sed -nE 's/^voxgate bench: ([0-9]+) call.*/\1/p' "$1" | head -n1; }
turns_of() { sed -nE 's/^turns +([0-9]+ ok, [0-9]+ failed).*/\1/p' "$1" | head -n1; }
{
    echo "voxgate soak, $(date '+%Y-%m-%d %H:%M:%S %z')"
    echo "commit: $rev"
    echo "machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}; pinning: $PINNING"
    echo "voxgate serve --providers scripted (release), SQLite, DB pool fixed at 8; one-turn calls (\"hello\", 200 ms silence, 1.7 s reply)"
    echo
    printf '%-16s %8s %10s %6s %6s  %s\n' when calls rssKiB fds tasks turns
    printf '%-16s %8s %10s %6s %6s  %s\n' "warm-up" "$(calls_of "$TMP/warmup.txt")" - - - "$(turns_of "$TMP/warmup.txt")"
    printf '%-16s %8s %10s %6s %6s\n' "baseline" - "$BASE_RSS" "$BASE_FDS" "$BASE_TASKS"
    printf '%-16s %8s %10s %6s %6s  %s\n' "after A ($SEQ_CONC at once)" "$(calls_of "$TMP/phaseA.txt")" "$A_RSS" "$A_FDS" "$A_TASKS" "$(turns_of "$TMP/phaseA.txt")"
    printf '%-16s %8s %10s %6s %6s  %s\n' "after B ($CONC, ${MINUTES} min)" "$(calls_of "$TMP/phaseB.txt")" "$B_RSS" "$B_FDS" "$B_TASKS" "$(turns_of "$TMP/phaseB.txt")"
    echo
    echo "RSS after A: $(awk -v a="$A_RSS" -v b="$BASE_RSS" 'BEGIN { printf "%+.1f %%", (a - b) * 100 / b }') of the baseline; after B: $(awk -v a="$B_RSS" -v b="$BASE_RSS" 'BEGIN { printf "%+.1f %%", (a - b) * 100 / b }') (limit +$RSS_PCT %)"
    if [ "${#verdicts[@]}" = 0 ]; then
        echo "verdict: PASS (memory within $RSS_PCT %, fds and tasks back to the baseline)"
    else
        echo "verdict: FAIL"
        printf '  %s\n' "${verdicts[@]}"
    fi
    echo
    echo "---- samples during the phases (every ${SAMPLE_SECS} s)"
    cat "$SAMPLES"
    for label in warmup phaseA phaseB; do
        echo
        echo "---- voxgate bench, $label"
        cat "$TMP/$label.txt" "$TMP/$label.err"
    done
    if [ -s "$TMP/server-soak.log" ]; then
        echo
        echo "---- server log (warnings and errors; last 40 lines of $(wc -l <"$TMP/server-soak.log"))"
        tail -n 40 "$TMP/server-soak.log"
    fi
} >"$RESULT"
cat "$RESULT" | sed -n '1,20p'
log "results written to $RESULT"
exit "$STATUS"
