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

/// LZ4 frame format (lz4_Frame_format.md), decoded here over lz4_flex's block decoder rather
/// than its `FrameDecoder`: that one allocates fresh buffers for every frame, and a flow
/// expands one frame per blob, tens of thousands per full sync. Each of those large
/// allocations made glibc consolidate the small chunks freed since, which showed up as 10%
/// of the cluster path's CPU. Blocks are expanded straight into `out`; a linked block's
/// back-references reach into the 64 KiB before it, which is where it sits in `out`.
fn lz4(frame: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), String> {
    const WINDOW: usize = 64 << 10;
    if frame.len() < 7 || frame[..4] != LZ4_MAGIC {
        return Err(format!("LZ4 blob does not start with an LZ4 frame magic (04 22 4D 18): {}", hex(frame)));
    }
    let (flg, bd) = (frame[4], frame[5]);
    if flg >> 6 != 0b01 {
        return Err(format!("LZ4 frame version {} (FLG 0x{flg:02X}); only version 1 exists", flg >> 6));
    }
    if flg & 0x08 == 0 {
        return Err(format!("LZ4 frame without a content size (FLG 0x{flg:02X}); Dragonfly always sets it"));
    }
    let (independent, block_sums, content_sum, dict_id) = (flg & 0x20 != 0, flg & 0x10 != 0, flg & 0x04 != 0, flg & 0x01 != 0);
    let block_max = match (bd >> 4) & 0x07 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        id => return Err(format!("LZ4 frame block size id {id} (BD 0x{bd:02X}) is not 4 to 7")),
    };
    let header_len = 6 + 8 + if dict_id { 4 } else { 0 };
    if frame.len() < header_len + 1 {
        return Err("LZ4 frame header truncated".into());
    }
    if dict_id {
        return Err("LZ4 frame uses a dictionary id; Dragonfly never sets one".into());
    }
    let hc = (twox_hash::XxHash32::oneshot(0, &frame[4..header_len]) >> 8) as u8;
    if frame[header_len] != hc {
        return Err(format!("LZ4 frame header checksum 0x{:02X}, expected 0x{hc:02X}", frame[header_len]));
    }
    let size = u64::from_le_bytes(frame[6..14].try_into().unwrap());
    if size > max as u64 {
        return Err(format!("LZ4 frame declares {size} bytes, more than the {max}-byte limit"));
    }
    let size = size as usize;
    out.resize(size, 0);
    let mut at = header_len + 1;
    let mut pos = 0;
    let mut block = 0;
    loop {
        let word = frame.get(at..at + 4).ok_or_else(|| format!("LZ4 frame truncated at block {block} (byte {at})"))?;
        let word = u32::from_le_bytes(word.try_into().unwrap());
        at += 4;
        if word == 0 {
            break; // EndMark
        }
        let (stored, len) = (word & 0x8000_0000 != 0, (word & 0x7FFF_FFFF) as usize);
        if len > block_max {
            return Err(format!("LZ4 frame block {block} is {len} bytes, more than the frame's {block_max}-byte blocks"));
        }
        let data = frame.get(at..at + len).ok_or_else(|| format!("LZ4 frame truncated in block {block} (byte {at})"))?;
        at += len;
        if block_sums {
            let sum = frame.get(at..at + 4).ok_or_else(|| format!("LZ4 frame truncated at block {block}'s checksum"))?;
            if u32::from_le_bytes(sum.try_into().unwrap()) != twox_hash::XxHash32::oneshot(0, data) {
                return Err(format!("LZ4 frame block {block} fails its checksum"));
            }
            at += 4;
        }
        let room = size - pos;
        let n = if stored {
            if len > room {
                return Err(format!("LZ4 frame expands past its declared {size} bytes (stored block {block})"));
            }
            out[pos..pos + len].copy_from_slice(data);
            len
        } else {
            let (before, rest) = out.split_at_mut(pos);
            let dst = &mut rest[..room.min(block_max)];
            let r = if independent || pos == 0 {
                lz4_flex::block::decompress_into(data, dst)
            } else {
                lz4_flex::block::decompress_into_with_dict(data, dst, &before[pos.saturating_sub(WINDOW)..])
            };
            r.map_err(|e| format!("LZ4 frame block {block}: {e} (or it expands past the declared {size} bytes)"))?
        };
        pos += n;
        block += 1;
    }
    if pos != size {
        return Err(format!("LZ4 frame expanded to {pos} bytes, its header says {size}"));
    }
    if content_sum {
        let sum = frame.get(at..at + 4).ok_or("LZ4 frame truncated at its content checksum")?;
        if u32::from_le_bytes(sum.try_into().unwrap()) != twox_hash::XxHash32::oneshot(0, out) {
            return Err("LZ4 frame content fails its checksum".into());
        }
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

    use super::*;

    /// Repetitive enough that linked blocks refer back across block boundaries, varied enough
    /// that some blocks are stored uncompressed.
    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x2545F4914F6CDD1Du64;
        (0..n)
            .map(|i| {
                if (i / 100_000) % 2 == 0 {
                    (i % 251) as u8 ^ (i / 7000) as u8
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    fn frame(d: &[u8], mode: BlockMode, size: BlockSize, sums: bool) -> Vec<u8> {
        let info = FrameInfo::new()
            .content_size(Some(d.len() as u64))
            .block_size(size)
            .block_mode(mode)
            .block_checksums(sums)
            .content_checksum(sums);
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(d).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn lz4_frames_of_every_shape_round_trip() {
        let mut out = vec![7u8; 3]; // reused and cleared
        for n in [1, 1000, 65_536, 65_537, 300_000, 1_100_000] {
            let d = data(n);
            for mode in [BlockMode::Linked, BlockMode::Independent] {
                for size in [BlockSize::Max64KB, BlockSize::Max256KB, BlockSize::Max1MB] {
                    for sums in [false, true] {
                        let f = frame(&d, mode, size, sums);
                        decompress_into(OP_LZ4, &f, 2 << 20, &mut out).unwrap();
                        assert!(out == d, "n={n} {mode:?} {size:?} sums={sums}");
                    }
                }
            }
        }
    }

    #[test]
    fn lz4_damage_is_an_error() {
        let d = data(200_000);
        let f = frame(&d, BlockMode::Linked, BlockSize::Max64KB, true);
        let mut out = Vec::new();
        assert!(decompress_into(OP_LZ4, &f, 100_000, &mut out).unwrap_err().contains("limit"));
        for cut in [5, 15, 20, f.len() / 2, f.len() - 1] {
            assert!(decompress_into(OP_LZ4, &f[..cut], 1 << 20, &mut out).is_err(), "cut at {cut}");
        }
        let mut bad = f.clone();
        bad[f.len() / 2] ^= 0x10;
        assert!(decompress_into(OP_LZ4, &bad, 1 << 20, &mut out).is_err());
        let mut bad = f.clone();
        bad[5] ^= 0x10; // BD: header checksum
        assert!(decompress_into(OP_LZ4, &bad, 1 << 20, &mut out).unwrap_err().contains("header checksum"));
    }
}
