#!/usr/bin/env bash
# A one-machine demo of df2redis: a Dragonfly-master emulator (every data type, 4 shards, a
# live journal of writes), a local redis-server, and `df2redis replicate` between them.
#
#   scripts/demo.sh [SECONDS]      (default 20 seconds of live replication)
#
# It builds df2redis and the emulator (release), starts both servers on free 127.0.0.1 ports,
# replicates, stops df2redis with SIGTERM (the clean shutdown path), then prints df2redis's
# summary, the target's key counts per db and a few keys with their types. Everything it starts
# is stopped on exit. Needs a Rust toolchain; installs redis-server with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
source scripts/ensure-redis.sh

echo "== building (release)"
cargo build --release --quiet --features emulator --bins
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # file pattern seconds
  for _ in $(seq $(( $3 * 10 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "$work/redis.log" "Ready to accept connections" 20

"$bin/dfly-emulator" --port 0 --shards 4 --dataset types --journal-rate 2000 >"$work/emu.log" 2>&1 &
pids+=($!)
wait_for "$work/emu.log" "^listening" 60
eport=$(sed -n 's/^listening 127.0.0.1:\([0-9]*\).*/\1/p' "$work/emu.log")
echo "== emulator on 127.0.0.1:$eport (4 shards, every type, ~2000 writes/s); redis-server on 127.0.0.1:$rport"

echo "== df2redis replicate for $seconds s"
"$bin/df2redis" replicate --source "127.0.0.1:$eport" --target "redis://127.0.0.1:$rport" --progress-secs 5 &
df=$!
pids+=($df)
sleep "$seconds"
kill -TERM "$df"
wait "$df" && rc=0 || rc=$?
echo "== df2redis exited with status $rc"

echo "== keys per db on the target"
redis-cli -p "$rport" INFO keyspace | grep '^db'
echo "== a few keys of db 0, with their types"
for _ in 1 2 3 4 5 6; do
  k=$(redis-cli -p "$rport" RANDOMKEY)
  printf '  %-28s %s\n' "$k" "$(redis-cli -p "$rport" TYPE "$k")"
done
exit "$rc"
