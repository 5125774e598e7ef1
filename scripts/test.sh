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

source scripts/ensure-redis.sh

fixtures="${DF2REDIS_FIXTURES:-../shared/fixtures}"
if [ ! -d "$fixtures" ]; then
  echo "test.sh: fixtures not found at $fixtures (set DF2REDIS_FIXTURES)" >&2
  exit 2
fi

cargo test --locked --features emulator "$@"
