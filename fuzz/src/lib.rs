//! Shared driver for the df2redis fuzz targets.
//!
//! Every input starts with a two-byte header that the targets interpret; the rest is the flow's
//! byte stream:
//!
//! ```text
//! byte 0  mode   bit 0     0 = full decoder (`FlowDecoder::new`, stream starts with "REDIS")
//!                          1 = partial decoder (`FlowDecoder::partial`, journal records only);
//!                          ignored by `journal_records`, which is always partial
//!                bit 1     1 = tiny piece limits (2 elements / 64 bytes / 16-byte string pieces),
//!                          so every value is cut into many pieces
//!                bits 2-7  start LSN of a partial decoder; for a full decoder, bit 2 = 1
//!                          makes it v1.34's partial resume (`FlowDecoder::partial_v134`,
//!                          an RDB-framed stream of journal blobs) from LSN bits 3-7
//! byte 1  split  0..=127   feed the stream in pieces of split+1 bytes (1..=128)
//!                128..=254 pieces of 129 + (split-128)*517 bytes (129..=65_271)
//!                255       the whole stream in one feed()
//! ```
//!
//! The decoder is fed piece by piece, every decoded snapshot value and journal record goes
//! through a `Replayer`, then `finish()` is called. Errors are expected; panics are bugs.
//!
//! `replay_items` puts one more byte in front of this layout (the replayer's policy, clock and
//! options; see `fuzz_targets/replay_items.rs`).

use df2redis::protocol::{FlowDecoder, Item, Limits};
use df2redis::replay::{Clock, Policy, Replayer};

/// Length of the control header in front of the stream bytes.
pub const HEADER_LEN: usize = 2;

/// Size of the pieces passed to `feed()` for a split byte.
pub fn split_size(split: u8, body_len: usize) -> usize {
    match split {
        0..=127 => split as usize + 1,
        128..=254 => 129 + (split as usize - 128) * 517,
        255 => body_len.max(1),
    }
}

/// Decoder limits for a mode byte (bit 1: tiny piece limits; bit 7: whole values of every
/// type the RESTORE path takes, bounded at 256 bytes so that both paths are reached).
pub fn limits(mode: u8) -> Limits {
    let mut l = if mode & 2 != 0 {
        Limits { batch_elems: 2, batch_bytes: 64, string_piece: 16, ..Limits::default() }
    } else {
        Limits::default()
    };
    if mode & 0x80 != 0 {
        l.whole = df2redis::protocol::whole::Whole::new(0..64, 256);
    }
    l
}

/// Decode `data` (header + stream) and replay what comes out. `force_partial` starts in the
/// journal phase whatever the mode byte says.
pub fn run(data: &[u8], force_partial: bool) {
    if data.len() < HEADER_LEN {
        return;
    }
    let (mode, split, body) = (data[0], data[1], &data[HEADER_LEN..]);
    let limits = limits(mode);
    let mut decoder = if force_partial || mode & 1 != 0 {
        FlowDecoder::partial(None, u64::from(mode >> 2), limits)
    } else if mode & 4 != 0 {
        FlowDecoder::partial_v134(None, None, u64::from(mode >> 3), limits)
    } else {
        FlowDecoder::new(None, None, limits)
    };
    let mut replayer = Replayer::new(Policy::default(), Clock::Fixed(1_700_000_000_000));
    let mut items: Vec<Item> = Vec::new();
    let mut cmds = Vec::new();

    for piece in body.chunks(split_size(split, body.len())) {
        let fed = decoder.feed(piece, &mut items);
        for item in items.drain(..) {
            match &item {
                Item::Value(v) => replayer.value(v, &mut cmds),
                Item::Journal(rec) => {
                    let _ = replayer.record(rec, &mut cmds);
                }
                _ => {}
            }
            cmds.clear();
        }
        if fed.is_err() {
            // A failed decoder must stay failed.
            assert!(decoder.feed(b"", &mut items).is_err(), "decoder recovered after an error");
            break;
        }
    }
    let _ = decoder.finish();
}
