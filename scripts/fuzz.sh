#!/usr/bin/env bash
# Run the df2redis libFuzzer targets (fuzz/, cargo-fuzz layout) for a bounded time.
#
# Usage:
#   scripts/fuzz.sh SECONDS [TARGET]
#
#   SECONDS  how long to fuzz each target (libFuzzer -max_total_time)
#   TARGET   flow_decoder, journal_records or replay_items; default: all three, one after
#            the other
#
# Works from any directory. What it does:
#   1. installs cargo-fuzz (`cargo install cargo-fuzz`) if `cargo fuzz` is missing;
#   2. sets RUSTC_BOOTSTRAP=1 unless the toolchain is nightly (cargo-fuzz needs -Z flags and
#      only a stable toolchain is assumed);
#   3. seeds fuzz/corpus/<target>/ from the real captures in tests/fixtures (every run:
#      seed files have fixed names, so re-seeding only rewrites them; what the fuzzer added stays);
#   4. fuzzes each target in a single process (no -jobs/-workers/-fork), one after the other;
#   5. exits 1 and prints the artifact path(s) if a crash, panic, timeout or OOM was found.
#
# Inputs are a 2-byte header (decoder mode, feed() split size; see fuzz/src/lib.rs) followed
# by the stream bytes; replay_items inputs have one more byte in front, the replayer's options
# (policies, clock; see fuzz/fuzz_targets/replay_items.rs). To replay one input (a crash, or a
# file in fuzz/regressions/):
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none TARGET PATH/TO/INPUT
#
# Environment:
#   FUZZ_SANITIZER    sanitizer passed to cargo fuzz (default: none; the crate is safe Rust,
#                     panics abort either way; set "address" for ASan)
#   FUZZ_TIMEOUT      per-input timeout in seconds (default 30)
#   FUZZ_MAX_LEN      largest input libFuzzer reads or builds, in bytes (default 1048576, so
#                     the whole captures, up to 560 KiB, are used as they are)
#   CARGO_BUILD_JOBS  limit build parallelism, as for any cargo command
set -euo pipefail

readonly TARGETS=(flow_decoder journal_records replay_items snapshot_file)
# Header bytes of the seeds (fuzz/src/lib.rs): mode 0 = full decoder, 1 = partial decoder,
# +2 = tiny piece limits; split N = pieces of N+1 bytes, 255 = one feed().
readonly FULL=0 PARTIAL=1 FULL_TINY=2 PARTIAL_TINY=3 WHOLE=255
# Options bytes of the replay_items seeds (fuzz_targets/replay_items.rs): defaults (JSON skipped,
# member TTLs dropped); JSON.SET + fresh target; member-TTL keys skipped + db map + a clock
# (2027) after the captures, so keys with TTLs arrive expired.
readonly REPLAY_OPTS=(0x00 0x05 0x2a)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
duration=$1
[[ $duration =~ ^[1-9][0-9]*$ ]] || { echo "SECONDS must be a positive integer, got '$duration'" >&2; exit 2; }
if [[ $# -eq 2 ]]; then
    [[ " ${TARGETS[*]} " == *" $2 "* ]] || { echo "unknown target '$2' (known: ${TARGETS[*]})" >&2; exit 2; }
    targets=("$2")
else
    targets=("${TARGETS[@]}")
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
fixtures=${DF2REDIS_FIXTURES:-$root/tests/fixtures}
# The repo keeps the large captures zstd-compressed (X.bin.zst): seed from a plain copy.
if compgen -G "$fixtures/*/*.zst" >/dev/null; then
    command -v zstd >/dev/null || { echo "the zstd command is needed to unpack $fixtures (apt-get install zstd)" >&2; exit 2; }
    plain=$(mktemp -d)
    trap 'rm -rf "$plain"' EXIT
    cp -r "$fixtures"/. "$plain"/
    find "$plain" -name '*.zst' -exec zstd -q -d --rm {} \;
    fixtures=$plain
fi

# --- toolchain ------------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it" >&2
    cargo install cargo-fuzz
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

# --- seed corpus ----------------------------------------------------------------------------
# seed FILE OUT MODE SPLIT [SKIP [COUNT]]: write the header bytes MODE and SPLIT (numbers),
# then COUNT bytes (default: all) of FILE from offset SKIP.
seed() {
    local file=$1 out=$2 mode=$3 split=$4 skip=${5:-0} count=${6:-}
    {
        printf "\\$(printf %03o "$mode")\\$(printf %03o "$split")"
        dd if="$file" iflag=skip_bytes,count_bytes skip="$skip" ${count:+count="$count"} status=none
    } >"$out"
}

# journal_started_at[FLOW] from a capture's session.json (empty if jq is missing).
journal_start() {
    command -v jq >/dev/null || return 0
    jq -r ".phases.journal_started_at[$2] // empty" "$1/session.json" 2>/dev/null || true
}

# seed_replay SEED DIR: the replay_items seeds for a flow_decoder/journal_records seed file, one
# per options byte in REPLAY_OPTS, written to DIR and named after SEED.
seed_replay() {
    local src=$1 dir=$2 base opts
    base=$(basename "$(dirname "$src")")-$(basename "$src")
    for opts in "${REPLAY_OPTS[@]}"; do
        { printf "\\$(printf %03o "$opts")"; cat "$src"; } >"$dir/$base-opts$opts"
    done
}

seed_corpus() {
    local fd=fuzz/corpus/flow_decoder jr=fuzz/corpus/journal_records ri=fuzz/corpus/replay_items sf=fuzz/corpus/snapshot_file
    mkdir -p "$fd" "$jr" "$ri" "$sf"
    if [[ ! -d $fixtures ]]; then
        echo "warning: $fixtures not found; fuzzing without seeds" >&2
        return
    fi
    local f dir name flow start
    for f in "$fixtures"/*/flow-*.bin; do
        [[ -e $f ]] || continue
        dir=$(dirname "$f")
        name=$(basename "$dir")-$(basename "$f" .bin)
        flow=${f##*/flow-}
        flow=${flow%.bin}
        # The whole capture, and its first 64 KiB fed in 7-byte pieces with tiny piece limits
        # (header, AUX fields, the first entries and blobs, with every unit straddling feed()
        # boundaries and every value cut into many pieces).
        seed "$f" "$fd/seed-$name-whole" "$FULL" "$WHOLE"
        seed "$f" "$fd/seed-$name-64k-split7-tiny" "$FULL_TINY" 6 0 65536
        seed_replay "$fd/seed-$name-whole" "$ri"
        seed_replay "$fd/seed-$name-64k-split7-tiny" "$ri"
        # The stable-sync records after the token, as a partial flow (mode 0x01) for the
        # decoder target and on their own for the journal target.
        start=$(journal_start "$dir" "$flow")
        if [[ -n $start ]]; then
            seed "$f" "$fd/seed-$name-journal" "$PARTIAL" 31 "$start"
            seed "$f" "$jr/seed-$name-journal" "$PARTIAL" "$WHOLE" "$start"
            seed_replay "$jr/seed-$name-journal" "$ri"
        fi
    done
    # Snapshot files: the first 64 KiB of each (the summaries whole, with their EOF, checksum
    # and padding), read whole and in 7-byte reads with tiny piece limits.
    for f in "$fixtures"/snapshots/*/*.dfs "$fixtures"/snapshots/*/*.rdb; do
        [[ -e $f ]] || continue
        name=$(basename "$(dirname "$f")")-$(basename "$f")
        seed "$f" "$sf/seed-$name-64k" "$FULL" "$WHOLE" 0 65536
        seed "$f" "$sf/seed-$name-64k-split7-tiny" "$FULL_TINY" 6 0 65536
    done
    for f in "$fixtures"/*/partial-flow-*.bin; do
        [[ -e $f ]] || continue
        name=$(basename "$(dirname "$f")")-$(basename "$f" .bin)
        seed "$f" "$jr/seed-$name" "$PARTIAL" "$WHOLE"
        seed "$f" "$jr/seed-$name-split3-tiny" "$PARTIAL_TINY" 2
        seed "$f" "$fd/seed-$name" "$PARTIAL" "$WHOLE"
        seed_replay "$jr/seed-$name-split3-tiny" "$ri"
        seed_replay "$fd/seed-$name" "$ri"
    done
}

# --- fuzz -----------------------------------------------------------------------------------
seed_corpus
sanitizer=${FUZZ_SANITIZER:-none}
failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/artifacts/$target"
    marker=$(mktemp)
    echo "=== fuzzing $target for ${duration}s (sanitizer: $sanitizer) ===" >&2
    status=0
    cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$duration" \
        -timeout="${FUZZ_TIMEOUT:-30}" \
        -max_len="${FUZZ_MAX_LEN:-1048576}" \
        -print_final_stats=1 || status=$?
    mapfile -t found < <(find "fuzz/artifacts/$target" -type f -newer "$marker")
    rm -f "$marker"
    if [[ $status -ne 0 || ${#found[@]} -gt 0 ]]; then
        echo "!!! $target: libFuzzer exited with status $status" >&2
        for a in "${found[@]}"; do
            echo "!!! $target: crashing input: $root/$a" >&2
        done
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashes found in: ${failed[*]} (reproduce: cargo fuzz run --sanitizer $sanitizer TARGET INPUT)" >&2
    exit 1
fi
echo "no crashes in: ${targets[*]}" >&2
