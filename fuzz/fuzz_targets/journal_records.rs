//! Fuzz the journal grammar directly: a partial (journal-only) `FlowDecoder`, fed in pieces of
//! a fuzzer-chosen size, every record replayed. Input layout: see `fuzz/src/lib.rs` (2-byte
//! header, then journal records; bit 0 of the mode byte is ignored, the decoder is always
//! partial).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    df2redis_fuzz::run(data, true);
});
