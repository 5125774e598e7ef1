//! Fuzz one flow's byte stream through `FlowDecoder` (full or partial, fed in pieces of a
//! fuzzer-chosen size) and every decoded value/record through a `Replayer`.
//! Input layout: see `fuzz/src/lib.rs` (2-byte header, then the stream).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    df2redis_fuzz::run(data, false);
});
