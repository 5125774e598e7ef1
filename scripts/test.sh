#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs them.
#
#   scripts/test.sh [extra cargo test args]
#
# Needs: a Rust toolchain (cargo), and either redis-server on PATH or root for apt-get.
# Tests start their own redis-server processes on free 127.0.0.1 ports and read the real
# Dragonfly captures in ../shared/fixtures (override with DF2REDIS_FIXTURES=/path).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]} (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: ${need_apt[*]} missing and not root; install it: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 2
  fi
  # The packaged service would occupy 6379; tests use their own ports, so keep it off.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
fi

fixtures="${DF2REDIS_FIXTURES:-../shared/fixtures}"
if [ ! -d "$fixtures" ]; then
  echo "test.sh: fixtures not found at $fixtures (set DF2REDIS_FIXTURES)" >&2
  exit 2
fi

cargo test --locked --features emulator "$@"
