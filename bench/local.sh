#!/usr/bin/env bash
# Local models benchmark: spoken turns through `voxgate serve --providers local`
# (Whisper tiny.en, SmolLM2-135M, Piper), per stage and voice to voice, against
# the naive baseline in the same run (Whisper's full 30 s window, speech only
# after the whole reply: `VOXGATE_LOCAL_BASELINE=true`).
#
#   bench/local.sh
#
# Environment (defaults in brackets):
#   BENCH_TURNS [8]  BENCH_CALLS [1]  BENCH_SILENCE_MS [500]  BENCH_PORT [18083]
#   BENCH_QUESTION ["what is the capital of france"] (spoken by espeak-ng) or BENCH_WAV
#   BENCH_SKIP_BUILD [unset; 1 = use the existing binary]  VOXGATE_BIN [target/release/voxgate]
# No CPU pinning: the models use every core and the load client is light.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

TURNS="${BENCH_TURNS:-8}"
CALLS="${BENCH_CALLS:-1}"
SILENCE_MS="${BENCH_SILENCE_MS:-500}"
PORT="${BENCH_PORT:-18083}"
BIN="${VOXGATE_BIN:-$ROOT/target/release/voxgate}"
BASE_URL="http://127.0.0.1:$PORT"
SERVER_PIN=()
CLIENT_PIN=()

build_release
"$BIN" models fetch >&2
make_tmp voxgate-local

WAV="${BENCH_WAV:-}"
if [ -z "$WAV" ]; then
    command -v espeak-ng >/dev/null 2>&1 || die "espeak-ng not found (run scripts/setup.sh) or set BENCH_WAV"
    WAV="$TMP/question.wav"
    espeak-ng -w "$WAV" "${BENCH_QUESTION:-what is the capital of france}"
fi

ASSISTANT_JSON="{\"name\":\"bench\",\"firstMessageMode\":\"user-speaks-first\",
  \"systemPrompt\":\"You are a helpful voice assistant. Answer in one short sentence.\",
  \"model\":{\"temperature\":0,\"maxTokens\":60},\"endpointing\":{\"silenceMs\":$SILENCE_MS}}"

STAGES=(endpointingMs sttMs llmFirstTokenMs ttsFirstAudioMs queueWaitMs responseMs voiceToVoiceMs)
declare -A P50

for mode in streaming baseline; do
    mkdir -p "$TMP/$mode"
    baseline=false
    [ "$mode" = baseline ] && baseline=true
    SERVER_ENV=(env DATABASE_URL="sqlite://$TMP/$mode/voxgate.db" VOXGATE_PROVIDERS=local
        VOXGATE_LOCAL_BASELINE="$baseline" LOG_LEVEL=warn DRAIN_TIMEOUT=5
        RATE_LIMIT_CALLS=off RATE_LIMIT_CALLS_IP=off)
    : >"$TMP/$mode/voxgate.db"
    start_server "$mode"
    create_assistant "$mode" "$ASSISTANT_JSON"
    # One turn first: the models load and warm up outside the measurement.
    "$BIN" bench --url "$BASE_URL" --key "$KEY" --assistant "$ASSISTANT" --calls 1 --turns 1 \
        --wav "$WAV" --turn-timeout 60 >/dev/null 2>"$TMP/$mode/warm.err" ||
        die "$mode: the warm-up turn failed: $(tail -n1 "$TMP/$mode/warm.err")"
    log "$mode: $CALLS call(s) x $TURNS turns"
    out="$TMP/$mode/bench.txt"
    "$BIN" bench --url "$BASE_URL" --key "$KEY" --assistant "$ASSISTANT" --calls "$CALLS" --turns "$TURNS" \
        --wav "$WAV" --turn-timeout 30 --server-pid "$SERVER_PID" >"$out" 2>"$TMP/$mode/bench.err" ||
        log "WARNING: $mode: $(tail -n1 "$TMP/$mode/bench.err")"
    cat "$out" >&2
    stop_server
    for s in "${STAGES[@]}"; do
        read -r _ p50 _ _ _ <<<"$(row "$out" "$s (server)")"
        P50[$mode.$s]=$p50
    done
done

printf '\n%-18s %12s %12s %8s\n' "p50 (ms)" streaming baseline ratio
for s in "${STAGES[@]}"; do
    printf '%-18s %12s %12s %8s\n' "$s" "${P50[streaming.$s]}" "${P50[baseline.$s]}" \
        "$(ratio "${P50[baseline.$s]}" "${P50[streaming.$s]}")"
done
printf '(ratio = baseline / streaming; %s call(s), %s turns each, on %s CPUs)\n' "$CALLS" "$TURNS" "$(nproc)"
