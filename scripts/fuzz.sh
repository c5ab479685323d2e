#!/usr/bin/env bash
# Fuzzes every parser of outside input (the targets in fuzz/, cargo-fuzz layout) for
# a bounded time each, one after the other, and says per target how many inputs ran
# and whether it crashed. Exits non-zero on any crash, hang, OOM or build failure.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Default 60 s a target; CI runs it briefly (e.g. `scripts/fuzz.sh 20`). Needs a nightly
# toolchain in rustup (`cargo +nightly`); installs cargo-fuzz when missing. Each run
# starts from the committed seeds (fuzz/corpus/<target>) and grows its own corpus in
# fuzz/work/corpus/<target> (ignored by git); a crashing input is written to
# fuzz/artifacts/<target>/ and its reproduction command printed.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2; exit 2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: no nightly toolchain in rustup (cargo fuzz needs one): rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Longest input per target: past every size limit the parser has, not much more.
max_len() {
  case "$1" in
    agent_session) echo 20000 ;;   # several messages; one may pass the 16 KiB text limit
    agent_text) echo 17000 ;;      # just past the 16 KiB text limit
    upload_extract) echo 65536 ;;  # a small PDF with streams
    upload_multipart) echo 10000 ;; # past the target's 4 KiB upload and 8 KiB body limits
    config_values) echo 2048 ;;
    *) echo 16384 ;;               # WAV, CT2, GGUF headers, vocabulary, assistant JSON
  esac
}

# Tokens of the input's language, so mutations reach past the syntax faster.
dict_for() {
  case "$1" in
    agent_session|agent_text|assistant_spec) echo "-dict=dict/json.dict" ;;
    upload_extract) echo "-dict=dict/pdf.dict" ;;
  esac
}

# FUZZ_DEV=1: build without optimisation (`cargo fuzz --dev`). The release build
# compiles candle, tokenizers and sqlx with the fuzzer's instrumentation (20-25 min
# on two idle cores); the dev build is several times quicker to build and slower to
# run, which suits a brief pass in CI.
profile=()
[ "${FUZZ_DEV:-0}" = 1 ] && profile=(--dev)

start=$(date +%s)
echo "== building the fuzz targets ${profile[*]}"
cargo +nightly fuzz build "${profile[@]}"
echo "== built in $(( $(date +%s) - start )) s"

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
mkdir -p work/logs
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "work/corpus/$t" "corpus/$t"
  log="work/logs/$t.log"
  echo "== $t: ${secs} s"
  rc=0
  # -timeout: one input taking this long is a hang; -rss_limit_mb: more memory is an OOM.
  cargo +nightly fuzz run "${profile[@]}" "$t" "work/corpus/$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=30 \
    -print_final_stats=1 $(dict_for "$t") >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
  execs=${execs:-$(grep -o '^#[0-9]*' "$log" | tail -n1 | tr -d '#')}
  if [ "$rc" -eq 0 ]; then
    summary+=("$(printf '%-18s %12s execs  ok' "$t" "${execs:-?}")")
  else
    failed+=("$t")
    summary+=("$(printf '%-18s %12s execs  FAILED (exit %s; log fuzz/%s)' "$t" "${execs:-?}" "$rc" "$log")")
    grep -E 'ERROR: |panicked at|SUMMARY|Test unit written|Reproduce with|cargo fuzz run' "$log" | head -n 20 || true
  fi
done

echo
echo "== fuzzing summary (${secs} s a target, $(( $(date +%s) - start )) s in all)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran, none crashed"
