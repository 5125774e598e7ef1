#!/usr/bin/env bash
# df2redis's benchmark (standalone and cluster figures), end to end on this machine.
#
#   scripts/bench.sh [flags for df2redis-bench]      full sizes: several minutes
#   scripts/bench.sh --smoke                         tiny sizes, well under a minute (CI)
#   scripts/bench.sh --only small,hashes --small-keys 500000
#   scripts/bench.sh --only journal --journal-secs 10 --journal-rates 50000,100000,200000
#   scripts/bench.sh --df2redis-arg=--inflight=16 --df2redis-arg=--batch-cmds=4000
#   scripts/bench.sh --redis-cpu shared              every process on every CPU (default: the
#                                                    standalone Redis on a CPU of its own)
#   scripts/bench.sh --help                          every flag (sizes, flows, rates, ...)
#
# It installs redis-server/redis-tools if missing, builds df2redis, the emulator and the bench
# driver (release), then runs target/release/df2redis-bench, which starts its own redis-server,
# a 3-master Redis Cluster and the Dragonfly-master emulator (in process, snapshots pre-encoded
# before the clock starts) on free 127.0.0.1 ports, and stops every one of them by PID.
#
# Output: a table, then one `FIGURE name=value` line per figure and one `TARGET` line per
# target (holds / MISSED / n/a). Exit status: 0 when every copy was verified, whether targets
# hold or not; 1 when a copy was wrong or a process failed; 3 with --strict when a target was
# missed; 2 for usage errors.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
if ! command -v redis-benchmark >/dev/null 2>&1; then
  echo "bench.sh: redis-benchmark missing (Debian package redis-tools)" >&2
  exit 2
fi

echo "== building (release)" >&2
cargo build --release --quiet --features emulator --bins
bin="${CARGO_TARGET_DIR:-target}/release"
exec "$bin/df2redis-bench" "$@"
