//! Compressed blobs (protocol doc 5.6): `0xCA` carries one LZ4 *frame*, `0xC9` one zstd frame.
//!
//! Dragonfly always writes the frame content size and its own loader rejects frames without
//! it; we do the same, and check the expanded size against it, so a damaged frame is reported
//! at its blob rather than surfacing later as misaligned items.

use std::io::Read;

pub const OP_ZSTD: u8 = 0xC9;
pub const OP_LZ4: u8 = 0xCA;
pub const OP_BLOB_END: u8 = 0xCB;

const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Expand one compressed blob, refusing output larger than `max`.
pub fn decompress(opcode: u8, frame: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decompress_into(opcode, frame, max, &mut out)?;
    Ok(out)
}

/// Expand one compressed blob into `out` (cleared first), reusing its capacity: a flow expands
/// thousands of blobs of up to ~1 MiB, and a fresh buffer for each is a fresh mapping of
/// zeroed pages each time.
pub fn decompress_into(opcode: u8, frame: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    match opcode {
        OP_LZ4 => lz4(frame, max, out),
        OP_ZSTD => zstd(frame, max, out),
        _ => Err(format!("0x{opcode:02X} is not a compressed-blob opcode")),
    }
}

fn lz4(frame: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if frame.len() < 7 || frame[..4] != LZ4_MAGIC {
        return Err(format!("LZ4 blob does not start with an LZ4 frame magic (04 22 4D 18): {}", hex(frame)));
    }
    let flg = frame[4];
    if flg & 0x08 == 0 {
        return Err(format!("LZ4 frame without a content size (FLG 0x{flg:02X}); Dragonfly always sets it"));
    }
    if frame.len() < 14 {
        return Err("LZ4 frame header truncated".into());
    }
    let size = u64::from_le_bytes(frame[6..14].try_into().unwrap());
    if size > max as u64 {
        return Err(format!("LZ4 frame declares {size} bytes, more than the {max}-byte limit"));
    }
    out.reserve(size as usize);
    lz4_flex::frame::FrameDecoder::new(frame)
        .take(max as u64 + 1)
        .read_to_end(out)
        .map_err(|e| format!("LZ4 frame: {e}"))?;
    if out.len() as u64 != size {
        return Err(format!("LZ4 frame expanded to {} bytes, its header says {size}", out.len()));
    }
    Ok(())
}

fn zstd(frame: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if frame.len() < 5 || frame[..4] != ZSTD_MAGIC {
        return Err(format!("zstd blob does not start with a zstd frame magic (28 B5 2F FD): {}", hex(frame)));
    }
    let mut input = frame;
    let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut input).map_err(|e| format!("zstd frame header: {e}"))?;
    let declared = dec.decoder.content_size();
    if declared == 0 {
        // 0 is also what ruzstd reports for "not present"; Dragonfly never sends empty blobs.
        return Err("zstd frame without a content size; Dragonfly always sets it".into());
    }
    if declared > max as u64 {
        return Err(format!("zstd frame declares {declared} bytes, more than the {max}-byte limit"));
    }
    out.reserve(declared as usize);
    (&mut dec).take(max as u64 + 1).read_to_end(out).map_err(|e| format!("zstd frame: {e}"))?;
    drop(dec);
    if out.len() as u64 != declared {
        return Err(format!("zstd frame expanded to {} bytes, its header says {declared}", out.len()));
    }
    if !input.is_empty() {
        return Err(format!("{} bytes follow the zstd frame inside the blob", input.len()));
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().take(8).map(|c| format!("{c:02X} ")).collect::<String>().trim_end().to_string()
}
