#!/usr/bin/env bash
# A one-machine demo of df2redis: a Dragonfly-master emulator (every data type, 4 shards, a
# live journal of writes), a local redis-server, and `df2redis replicate` between them.
#
#   scripts/demo.sh [SECONDS]      (default 20 seconds of live writes)
#
# It builds df2redis and the emulator (release), starts both servers on free 127.0.0.1 ports,
# replicates while the emulator writes for SECONDS, waits until df2redis has applied every
# journal record (its /status against the master's DFLY REPLICAOFFSET), stops df2redis with
# SIGTERM (the clean shutdown path), prints its summary, the target's key counts per db and a
# few keys, then proves the copy with `df2redis check` between the emulator and the target.
# Exit status: the check's (0 when the target holds the same data, 1 when it found
# differences), or the first failure before it. Everything it starts is stopped on exit.
# Needs a Rust toolchain, curl and jq; installs redis-server with apt-get when missing.
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

"$bin/dfly-emulator" --port 0 --shards 4 --dataset types --journal-rate 2000 --journal-secs "$seconds" >"$work/emu.log" 2>&1 &
pids+=($!)
wait_for "$work/emu.log" "^listening" 60
eport=$(sed -n 's/^listening 127.0.0.1:\([0-9]*\).*/\1/p' "$work/emu.log")
echo "== emulator on 127.0.0.1:$eport (4 shards, every type, ~2000 writes/s for $seconds s); redis-server on 127.0.0.1:$rport"

echo "== df2redis replicate while the emulator writes"
mport=$(free_port)
"$bin/df2redis" replicate --source "127.0.0.1:$eport" --target "redis://127.0.0.1:$rport" --progress-secs 5 \
  --metrics-addr "127.0.0.1:$mport" 2> >(tee "$work/df2redis.log" >&2) &
df=$!
pids+=($df)
wait_for "$work/df2redis.log" "stable sync: applying the journal" 120
# The snapshot held keys Redis cannot hold (Dragonfly-only types; JSON without RedisJSON):
# replicate skipped them by policy, logged each and counts them in its summary. Deleted on the
# master now (the DELs replicate too), so that the check below compares what both can hold.
sed -n 's/.*skipped key "\(.*\)" in db \([0-9]*\): \(.*\)/\2 \1 \3/p' "$work/df2redis.log" |
  while read -r db key why; do
    echo "== deleting $key (db $db) on the master: skipped by policy ($why)"
    redis-cli -p "$eport" -n "$db" DEL "$key" >/dev/null
  done
wait_for "$work/emu.log" "^journal stopped" $(( seconds + 60 ))
echo "== the emulator $(grep '^journal stopped' "$work/emu.log"); waiting for df2redis to apply them all"
# Caught up: in stable sync, every flow's applied LSN (/status) is the master's next LSN.
caught_up() {
  local master applied
  master=$(redis-cli -p "$eport" DFLY REPLICAOFFSET | paste -sd, -)
  applied=$(curl -fsS "http://127.0.0.1:$mport/status" |
    jq -r 'select(.phase == "stable_sync") | [.flows[].applied_lsn] | map(tostring) | join(",")') || return 1
  [ -n "$applied" ] && [ "$applied" = "$master" ]
}
for _ in $(seq 600); do caught_up && break; sleep 0.1; done
caught_up || { echo "df2redis did not catch up with the master within 60 s" >&2; exit 1; }
kill -TERM "$df"
wait "$df" && rc=0 || rc=$?
echo "== df2redis exited with status $rc"
[ "$rc" -eq 0 ] || exit "$rc"

echo "== keys per db on the target"
redis-cli -p "$rport" INFO keyspace | grep '^db'
echo "== a few keys of db 0, with their types"
for _ in 1 2 3 4 5 6; do
  k=$(redis-cli -p "$rport" RANDOMKEY)
  printf '  %-28s %s\n' "$k" "$(redis-cli -p "$rport" TYPE "$k")"
done

echo "== df2redis check: the target against the emulator, key by key"
"$bin/df2redis" check --source "127.0.0.1:$eport" --target "redis://127.0.0.1:$rport" && rc=0 || rc=$?
if [ "$rc" -eq 0 ]; then
  echo "== verdict: the target holds the same data as the master"
else
  echo "== verdict: the check found differences or could not finish (status $rc)"
fi
exit "$rc"
