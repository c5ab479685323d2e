#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine.
# Idempotent: when everything is present it only checks and exits (well under 2 s).
# Runs as root, or through sudo otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

# What building needs (llama.cpp is compiled from source by llama-cpp-2: cmake,
# and clang for its bindings), then what the tests need. `--build-only`: just
# the first list (scripts/run.sh).
BUILD_PACKAGES=(build-essential pkg-config cmake clang libclang-dev ca-certificates python3 python3-pip)
TEST_PACKAGES=(postgresql wrk espeak-ng sox nginx curl chromium fonts-dejavu-core openssl python3-venv)
# Node and npm build the web app (ui/), which the binary embeds. A Node from
# elsewhere (e.g. NodeSource's nodejs, which bundles npm) is kept: Debian's npm
# would conflict with it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    BUILD_PACKAGES+=(nodejs npm)
fi
if [ "${1:-}" = --build-only ]; then
    APT_PACKAGES=("${BUILD_PACKAGES[@]}")
else
    APT_PACKAGES=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}")
fi

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi

# --- Debian packages: install only what is missing -------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
        log "missing packages (${missing[*]}) and neither root nor sudo available"
        exit 1
    fi
    log "installing: ${missing[*]}"
    # Without systemd (containers), keep apt from starting the packaged
    # services (system nginx / PostgreSQL cluster): tests start their own.
    policy_added=0
    if [ ! -d /run/systemd/system ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    cleanup_policy() {
        if [ "$policy_added" -eq 1 ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
    }
    trap cleanup_policy EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)
    if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
               --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        log "apt-get failed"
        rm -f "$apt_log"
        exit 1
    fi
    rm -f "$apt_log"
    cleanup_policy
    trap - EXIT
    log "installed: ${missing[*]}"
fi

# --- Rust tooling ------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found on PATH (the machine's Rust toolchain is expected)"
    exit 1
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi
