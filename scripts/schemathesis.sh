#!/usr/bin/env bash
# API contract test: schemathesis (pinned, from PyPI, in a virtualenv under the
# user's cache) generates requests from the served /api/openapi.json and checks
# every answer: no 5xx, the status is one the document lists, the body matches
# its schema, the content type and headers match, bad input is refused, and so on
# (`--checks all`). It runs against the real server binary on a free port, with a
# fresh SQLite database (and a fresh PostgreSQL database when
# VOXGATE_TEST_POSTGRES_URL is set), rate limits off and the scripted providers (no
# model is loaded), authenticated with a new private key.
#
# Settings (environment):
#   VOXGATE_BIN                 the binary (default target/debug/voxgate, built if missing)
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase (default 200: about 70 s
#                               per database on 2 cores)
#   SCHEMATHESIS_SEED           a seed, to replay a run
#   SCHEMATHESIS_PHASES         default examples,coverage,fuzzing,stateful
#   VOXGATE_TEST_POSTGRES_URL   also run against a fresh database on this server
#   SCHEMATHESIS_REPORT_DIR     where reports go (default: a temp folder, kept on failure)
# Extra arguments go to `schemathesis run`.
#
# Exit status: 0 when every run is clean, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5

log() { printf 'schemathesis.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# --- the tool ---------------------------------------------------------------
venv="${XDG_CACHE_HOME:-$HOME/.cache}/voxgate/schemathesis-venv"
st="$venv/bin/schemathesis"
if ! [ -x "$st" ] || [ "$("$st" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# --- the server -------------------------------------------------------------
BIN=${VOXGATE_BIN:-}
if [ -z "$BIN" ]; then
    BIN="$(cd "${CARGO_TARGET_DIR:-target}" 2>/dev/null && pwd || echo "$PWD/target")/debug/voxgate"
    if ! [ -x "$BIN" ]; then
        # The same build as scripts/test.sh (a `-p voxgate` build would unify
        # features differently and compile most dependencies again).
        log "cargo build --workspace --tests --bins"
        cargo build --workspace --tests --bins
    fi
fi
[ -x "$BIN" ] || die "no binary at $BIN"

MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-200}
PHASES=${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/voxgate-schemathesis.XXXXXX")
SERVER_PID=""
KEEP_TMP=0

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
cleanup() {
    stop_server
    if [ "$KEEP_TMP" = 1 ]; then
        log "kept server logs and reports in $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs schemathesis against a server on DATABASE_URL $2; $1 labels the run.
run_one() {
    local label=$1 db=$2 port base key key_id dir status=0
    dir="$TMP/$label"
    mkdir -p "$dir/files" "$dir/recordings" "$dir/models"
    port=$(free_port)
    base="http://127.0.0.1:$port"
    # Every setting the run depends on is set here, so the caller's environment
    # (a developer's .env, say) cannot change it.
    local server_env=(env
        DATABASE_URL="$db"
        VOXGATE_PROVIDERS=scripted
        VOXGATE_MODELS_DIR="$dir/models"
        VOXGATE_FETCH_MODELS=false
        FILES_DIR="$dir/files"
        RECORDINGS_DIR="$dir/recordings"
        RATE_LIMIT_API=off RATE_LIMIT_API_IP=off
        RATE_LIMIT_UPLOADS=off RATE_LIMIT_UPLOADS_IP=off
        RATE_LIMIT_CALLS=off RATE_LIMIT_CALLS_IP=off
        RUST_LOG="${RUST_LOG:-warn}")
    log "$label: starting $BIN serve on $base"
    "${server_env[@]}" "$BIN" serve --bind "127.0.0.1:$port" --providers scripted \
        </dev/null >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    local healthy=0
    for _ in $(seq 1 600); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 30 "$dir/server.log" >&2 || true
            die "$label: the server exited during startup"
        fi
        if curl -fsS -o /dev/null --max-time 1 "$base/api/health" 2>/dev/null; then
            healthy=1
            break
        fi
        sleep 0.1
    done
    [ "$healthy" = 1 ] || { tail -n 30 "$dir/server.log" >&2; die "$label: the server is not healthy after 60 s"; }

    key=$("${server_env[@]}" "$BIN" keys create --name schemathesis </dev/null | tail -n1) ||
        die "$label: 'voxgate keys create' failed"
    key=${key//[$'\r\t ']/}
    [ -n "$key" ] || die "$label: 'voxgate keys create' printed no key"

    key_id=$(curl -fsS --max-time 10 -H "Authorization: Bearer $key" "$base/api/me" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["keyId"])') ||
        die "$label: GET /api/me with the new key failed"

    log "$label: schemathesis run, $MAX_EXAMPLES examples per operation, phases $PHASES"
    # CPython 3.11 can raise "SystemError: AST constructor recursion depth mismatch"
    # inside hypothesis (describing a lambda): a crash of the tool, not a finding.
    # A run that ends on it, with no failure of the server's, is run once more.
    for attempt in 1 2; do
        status=0
        VOXGATE_SCHEMATHESIS_KEY_ID="$key_id" SCHEMATHESIS_HOOKS="$TMP/hooks.py" "$st" --config-file "$TMP/schemathesis.toml" run "$base/api/openapi.json" \
            --checks all \
            --max-examples "$MAX_EXAMPLES" \
            --phases "$PHASES" \
            --header "Authorization: Bearer $key" \
            --workers 2 \
            --request-timeout 30 \
            --suppress-health-check too_slow,filter_too_much \
            --warnings off \
            --no-color \
            --generation-database none \
            --output-sanitize true \
            --report junit,ndjson --report-dir "$dir/report" \
            ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
            "${EXTRA_ARGS[@]}" 2>&1 | tee "$dir/schemathesis.out" || status=$?
        if [ "$status" -ne 0 ] && [ "$attempt" -eq 1 ] &&
            grep -q 'AST constructor recursion depth mismatch' "$dir/schemathesis.out" &&
            ! grep -q '^=* FAILURES =*$' "$dir/schemathesis.out"; then
            log "$label: schemathesis itself crashed (CPython's AST recursion bug); running it again"
            continue
        fi
        break
    done

    # A panic is a bug even when the answer looked fine.
    if grep -q 'panicked at' "$dir/server.log"; then
        log "$label: the server panicked:"
        grep -A3 'panicked at' "$dir/server.log" | head -n 40 >&2
        status=1
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "$label: the server died during the run"
        tail -n 30 "$dir/server.log" >&2 || true
        status=1
    fi
    stop_server
    if [ "$status" -ne 0 ]; then
        KEEP_TMP=1
        log "$label: FAILED (server log: $dir/server.log, reports: $dir/report)"
    else
        log "$label: clean"
    fi
    return "$status"
}

# Hooks: the stateful phase follows GET /api/keys to DELETE /api/keys/{id} and
# would revoke the key the run authenticates with (every later answer a 401).
# That one request gets a fresh random id instead (a 404, still checked); every
# key the run creates itself is revoked for real.
cat >"$TMP/hooks.py" <<'EOF'
import os
import uuid

import schemathesis

OWN_KEY_ID = os.environ["VOXGATE_SCHEMATHESIS_KEY_ID"]


@schemathesis.hook
def before_call(context, case, kwargs):
    if (
        case.method.upper() == "DELETE"
        and case.path == "/api/keys/{id}"
        and str((case.path_parameters or {}).get("id", "")).lower() == OWN_KEY_ID.lower()
    ):
        case.path_parameters["id"] = str(uuid.uuid4())
EOF

# Per-operation settings. `positive_data_acceptance` expects every request the
# schema allows to succeed; these operations also refuse, with 422 (415 for an
# upload whose bytes are no supported document), requests that the schema cannot
# tell apart from good ones:
# - POST/PATCH /api/assistants: a first message when the assistant speaks first,
#   a url for function tools and a destination for transfer-call tools, distinct
#   tool names, http(s) URLs, existing knowledge-base files, metadata at most
#   16 KiB, names and phrases that are not blank and have no control characters;
# - POST /api/keys: a public key lists 1 to 100 existing assistants, a private
#   key none; the name is printable;
# - POST /api/calls: the assistant exists;
# - POST /api/calls/{id}/control: text that is not blank, has no NUL, at most
#   4000 bytes;
# - POST /api/files: the bytes are text, Markdown, CSV, HTML or PDF that can be read.
# Every other check, and this one on every other operation, keeps its defaults.
# No state kept between runs (it would go to ./.schemathesis): each run stands alone.
cat >"$TMP/schemathesis.toml" <<'EOF'
[cache]
enabled = false

[[operations]]
include-name = ["POST /api/assistants", "PATCH /api/assistants/{id}", "POST /api/keys", "POST /api/calls", "POST /api/calls/{id}/control"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-name = "POST /api/files"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "415", "422", "429", "5xx"]
EOF

EXTRA_ARGS=("$@")
overall=0

run_one sqlite "sqlite://$TMP/sqlite/voxgate.db?mode=rwc" || overall=1

if [ -n "${VOXGATE_TEST_POSTGRES_URL:-}" ]; then
    # A fresh database on that server, dropped afterwards.
    command -v psql >/dev/null 2>&1 || die "VOXGATE_TEST_POSTGRES_URL is set but psql is missing"
    pgdb="voxgate_schemathesis_$$_$RANDOM"
    psql "$VOXGATE_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $pgdb" >/dev/null ||
        die "cannot create database $pgdb"
    pgurl=$(python3 - "$VOXGATE_TEST_POSTGRES_URL" "$pgdb" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + sys.argv[2], u.query, u.fragment)))
EOF
)
    run_one postgres "$pgurl" || overall=1
    psql "$VOXGATE_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" >/dev/null 2>&1 ||
        log "could not drop database $pgdb"
fi

if [ "$overall" -eq 0 ]; then log "all clean"; else log "FAILED"; fi
exit "$overall"
