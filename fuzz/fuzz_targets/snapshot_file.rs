//! Fuzz the snapshot-file reader (`source::files::read_stream`): the file decoder, the
//! checksum over exactly the bytes before it, and the padding rules, with the file handed over
//! in reads of a fuzzer-chosen size. Input layout: byte 0 = mode (bit 1: tiny piece limits),
//! byte 1 = read size (as `split` in `fuzz/src/lib.rs`), then the file's bytes. Errors are
//! expected; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A reader that hands out at most `step` bytes per read.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < df2redis_fuzz::HEADER_LEN {
        return;
    }
    let (mode, split, body) = (data[0], data[1], &data[df2redis_fuzz::HEADER_LEN..]);
    let mut input = Pieces { data: body, step: df2redis_fuzz::split_size(split, body.len()) };
    let mut sink = |items: &mut Vec<df2redis::protocol::Item>| {
        items.clear();
        Ok(())
    };
    let _ = df2redis::source::files::read_stream(
        std::path::Path::new("fuzz-input"),
        &mut input,
        df2redis_fuzz::limits(mode),
        &mut sink,
    );
});
