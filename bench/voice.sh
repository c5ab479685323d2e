#!/usr/bin/env bash
# Voice pipeline benchmark: `voxgate bench` against `voxgate serve --providers
# scripted` at several numbers of concurrent calls.
#
#   bench/voice.sh                 1, 100 and 1000 calls, 3 turns each
#   BENCH_CALLS="1 50" bench/voice.sh
#
# Environment (defaults in brackets):
#   BENCH_CALLS ["1 100 1000"]  BENCH_TURNS [3]  BENCH_RAMP [5, seconds to open the calls]
#   BENCH_SILENCE_MS [500]      BENCH_PORT [18081]
#   BENCH_SKIP_BUILD [unset; 1 = use the existing binary]  VOXGATE_BIN [target/release/voxgate]
#   BENCH_PIN [1; 0 = no pinning: the server and the load client share the whole machine]
#   BENCH_WAV [unset: espeak-ng says "what time does the library open tomorrow"]
# The server runs on CPU 0 and the load client on CPU 1 (taskset); each level gets
# a fresh server on a fresh SQLite database. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

CALLS_LIST="${BENCH_CALLS:-1 100 1000}"
TURNS="${BENCH_TURNS:-3}"
RAMP="${BENCH_RAMP:-5}"
SILENCE_MS="${BENCH_SILENCE_MS:-500}"
PORT="${BENCH_PORT:-18081}"
BIN="${VOXGATE_BIN:-$ROOT/target/release/voxgate}"
BASE_URL="http://127.0.0.1:$PORT"

for n in $CALLS_LIST; do
    case "$n" in ''|*[!0-9]*) die "BENCH_CALLS: '$n' is not a number" ;; esac
done
for cmd in curl taskset; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (run scripts/setup.sh)"
done
if [ -z "${BENCH_WAV:-}" ]; then
    command -v espeak-ng >/dev/null 2>&1 || die "espeak-ng not found (run scripts/setup.sh) or set BENCH_WAV"
fi

# Each call is a socket in the server and one in the client, plus the database,
# the listener and the log: both processes need a file-descriptor limit above the
# largest number of calls. Raise the soft limit to the hard one.
max_calls=0
for n in $CALLS_LIST; do [ "$n" -gt "$max_calls" ] && max_calls=$n; done
need=$((max_calls + 256))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    die "the file-descriptor hard limit is $hard; $max_calls calls need $need (raise it: ulimit -Hn, /etc/security/limits.conf)"
fi
ulimit -n "$hard" 2>/dev/null || ulimit -n "$need" || die "cannot raise the file-descriptor limit to $need"

choose_pins "load client"
build_release
make_tmp voxgate-voice

# Rate limits off (a load test opens calls faster than any one customer may),
# scripted instant models, few logs. DRAIN_TIMEOUT short: the calls are over by then.
set_server_env() {   # $1 = DATABASE_URL
    SERVER_ENV=(env DATABASE_URL="$1" VOXGATE_PROVIDERS=scripted LOG_LEVEL=warn DRAIN_TIMEOUT=5
        RATE_LIMIT_API=off RATE_LIMIT_API_IP=off RATE_LIMIT_CALLS=off RATE_LIMIT_CALLS_IP=off)
}


# A key and an assistant that listens first, with the endpointing silence set.
setup_server() {   # $1 = label; sets KEY and ASSISTANT
    create_assistant "$1" "{\"name\":\"bench\",\"firstMessageMode\":\"user-speaks-first\",\"endpointing\":{\"silenceMs\":$SILENCE_MS}}"
}

# Fields of a saved `voxgate bench` table: `row` (lib.sh), and:
field() {   # FILE REGEX -> first capture of the first line matching (sed -E), or "-"
    local v
    v=$(sed -nE "s/$2/\1/p" "$1" | head -n1)
    printf '%s' "${v:--}"
}

ROWS=()
BASE_P50=""
BASE_P99=""
BASE_R50=""
BASE_R99=""
STATUS=0
WAV_ARGS=()
[ -n "${BENCH_WAV:-}" ] && WAV_ARGS=(--wav "$BENCH_WAV")

for n in $CALLS_LIST; do
    label="calls-$n"
    mkdir -p "$TMP/$label"
    : >"$TMP/$label/voxgate.db"
    set_server_env "sqlite://$TMP/$label/voxgate.db"
    start_server "$label"
    setup_server "$label"
    sleep 1   # idle, for the baseline memory
    ramp=$RAMP
    [ "$n" -eq 1 ] && ramp=0
    log "$n call(s) x $TURNS turn(s), opened over ${ramp} s ($PINNING)"
    out="$TMP/$label/bench.txt"
    if ! "${CLIENT_PIN[@]}" "$BIN" bench --url "$BASE_URL" --key "$KEY" --assistant "$ASSISTANT" \
        --calls "$n" --turns "$TURNS" --ramp "$ramp" --server-pid "$SERVER_PID" "${WAV_ARGS[@]}" \
        >"$out" 2>"$TMP/$label/bench.err"; then
        STATUS=1
        log "WARNING: $n calls: $(tail -n1 "$TMP/$label/bench.err")"
    fi
    cat "$out" >&2
    stop_server

    read -r _ o50 _ o99 omax <<<"$(row "$out" "overhead (client)")"
    resp_name="responseMs (server)"
    read -r rn _ _ _ _ <<<"$(row "$out" "$resp_name")"
    if [ "$rn" = - ]; then resp_name="voiceToVoiceMs-endpointingMs (server)"; fi
    read -r _ r50 _ r99 _ <<<"$(row "$out" "$resp_name")"
    read -r _ j50 _ j99 _ <<<"$(row "$out" "reply frame jitter")"
    read -r _ _ _ l99 _ <<<"$(row "$out" "client send lag")"
    ok=$(field "$out" '^turns +([0-9]+) ok.*')
    failed=$(field "$out" '^turns +[0-9]+ ok, ([0-9]+) failed.*')
    cpu=$(field "$out" '^server +CPU .*, ([0-9.]+) % with .*')
    [ "$cpu" = - ] && cpu=$(field "$out" '^server +CPU ([0-9.]+) % .*')
    idle=$(field "$out" '^server +RSS ([0-9.]+) MiB idle.*')
    peak=$(field "$out" '^server +RSS .*, ([0-9.]+) MiB peak.*')
    percall=$(field "$out" '^server +RSS .*; ([0-9.]+) KiB per call.*')
    ccpu=$(field "$out" '^client +CPU ([0-9.]+) %.*')
    if [ -z "$BASE_P50" ]; then BASE_P50=$o50; BASE_P99=$o99; BASE_R50=$r50; BASE_R99=$r99; fi
    ROWS+=("$n|$ok/$failed|$o50|$o99|$omax|$(ratio "$o50" "$BASE_P50")|$(ratio "$o99" "$BASE_P99")|$r50|$r99|$(ratio "$r50" "$BASE_R50")|$(ratio "$r99" "$BASE_R99")|$j50|$j99|$l99|$cpu|$idle|$peak|$percall|$ccpu")
    {
        printf '===== %s calls\n' "$n"; cat "$out"; cat "$TMP/$label/bench.err"
        if [ -s "$TMP/server-$label.log" ]; then
            echo "-- server log (warnings and errors; last 40 lines of $(wc -l <"$TMP/server-$label.log"))"
            tail -n 40 "$TMP/server-$label.log"
        fi
        echo
    } >>"$TMP/raw.txt"
done

# --- report ----------------------------------------------------------------------
mkdir -p bench/results
RESULT="bench/results/voice-$(date +%Y-%m-%d-%H%M%S).txt"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then rev="$rev (dirty)"; fi
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)

report() {
    echo "voxgate voice benchmark, $(date '+%Y-%m-%d %H:%M:%S %z')"
    echo "commit: $rev"
    echo "machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}; pinning: $PINNING"
    echo "voxgate serve --providers scripted (instant STT/LLM/TTS), SQLite; $TURNS turns a call, calls opened over ${RAMP} s,"
    echo "endpointing silence $SILENCE_MS ms; a fresh server for each level"
    echo "overhead = first reply frame - (last voiced frame sent + $SILENCE_MS ms), client clock (PERFORMANCE.md's definition)"
    echo "response = the server's decision to its first reply frame (responseMs, or voiceToVoiceMs - endpointingMs)"
    echo "x1 = this level's value / the 1st level's (in-run baseline); jitter = |reply frame gap - 20 ms|;"
    echo "lag = how late the client sent its own frames (high: the client, not the server, is the bottleneck)"
    echo
    printf '%6s %9s | %8s %8s %8s %6s %6s | %7s %7s %6s %6s | %6s %6s | %7s | %6s %7s %7s %8s | %6s\n' \
        calls ok/fail ovh_p50 ovh_p99 ovh_max x1p50 x1p99 rsp_p50 rsp_p99 x1p50 x1p99 jit50 jit99 lag_p99 cpu% idleMiB peakMiB KiB/call cli%
    local r
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c d e f g h i j k l m n2 o p q s t <<<"$r"
        printf '%6s %9s | %8s %8s %8s %6s %6s | %7s %7s %6s %6s | %6s %6s | %7s | %6s %7s %7s %8s | %6s\n' \
            "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j" "$k" "$l" "$m" "$n2" "$o" "$p" "$q" "$s" "$t"
    done
}

report | tee "$RESULT"
{ echo; echo "---- voxgate bench output, each level"; cat "$TMP/raw.txt"; } >>"$RESULT"
log "results written to $RESULT"
[ "$STATUS" = 0 ] || log "WARNING: some calls or turns failed; see $RESULT"
exit "$STATUS"
