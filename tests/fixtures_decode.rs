//! Every capture in tests/fixtures decodes completely and exactly (no Redis needed).

mod common;

use std::collections::BTreeSet;

use common::*;
use df2redis::protocol::{FlowDecoder, Item, Limits, Phase, RecordKind};

#[test]
fn every_flow_decodes_with_matching_token_and_lsns() {
    for fx in fixtures() {
        for i in 0..fx.num_flows() {
            let items = fx.decode(i, 64 * 1024);
            let what = format!("{} flow {i}", fx.name);
            let token: Vec<&Vec<u8>> = items.iter().filter_map(|x| if let Item::Token(t) = x { Some(t) } else { None }).collect();
            assert_eq!(token, vec![&fx.token(i)], "{what}: token");
            let offset = items.iter().find_map(|x| if let Item::JournalOffset(o) = x { Some(*o) } else { None });
            let offset = offset.unwrap_or_else(|| panic!("{what}: no JOURNAL_OFFSET"));
            let stable: Vec<u64> = items
                .iter()
                .filter_map(|x| match x {
                    Item::Journal(r) => r.lsn,
                    _ => None,
                })
                .collect();
            assert_eq!(offset + stable.len() as u64, fx.lsn_at_end(i), "{what}: JOURNAL_OFFSET + stable records");
            // Records are numbered consecutively from JOURNAL_OFFSET, and every LSN marker
            // carries the LSN of the record just before it.
            assert!(stable.iter().enumerate().all(|(k, &l)| l == offset + k as u64), "{what}: LSN sequence");
            let mut last = None;
            let mut marks = 0;
            for x in &items {
                match x {
                    Item::Journal(r) if r.lsn.is_some() => last = r.lsn,
                    Item::LsnMark { announced, expected } => {
                        marks += 1;
                        assert_eq!(Some(*announced), last, "{what}: LSN marker");
                        assert_eq!(*expected, last, "{what}: decoder's own expectation");
                    }
                    _ => {}
                }
            }
            assert!(marks >= 1 || stable.is_empty(), "{what}: the first stable record is followed by an LSN marker");
        }
    }
}

#[test]
fn one_byte_at_a_time_gives_the_same_items() {
    for fx in fixtures() {
        for i in 0..fx.num_flows() {
            let whole = fx.decode(i, usize::MAX);
            let bytewise = fx.decode(i, 1);
            assert!(whole == bytewise, "{} flow {i}: 1-byte feeding decoded differently", fx.name);
            // Odd sizes cross every kind of boundary too.
            assert!(whole == fx.decode(i, 7919), "{} flow {i}: 7919-byte feeding", fx.name);
        }
    }
}

#[test]
fn partial_resume_streams_decode_from_the_resume_lsn() {
    for fx in fixtures() {
        let Some(partial) = fx.partial() else { continue };
        for i in 0..fx.num_flows() {
            let lsn = partial["resume_lsns"][i].as_u64().unwrap();
            let mut d = FlowDecoder::partial(Some(i as u32), lsn, Limits::default());
            let mut items = Vec::new();
            for b in fx.partial_bytes(i).chunks(3) {
                d.feed(b, &mut items).unwrap();
            }
            d.finish().unwrap();
            let lsns: Vec<u64> = items.iter().filter_map(|x| if let Item::Journal(r) = x { r.lsn } else { None }).collect();
            assert_eq!(lsns.first(), Some(&lsn), "{} partial flow {i}: first record", fx.name);
            assert!(matches!(items.get(1), Some(Item::LsnMark { announced, .. }) if *announced == lsn));
            assert_eq!(d.next_lsn(), Some(lsn + lsns.len() as u64));
        }
    }
}

/// Snapshot entries equal `at_startstable` for every native-type key that no inline journal
/// record touches (those are checked by the replay test); Dragonfly-only types decode and are
/// counted.
#[test]
fn snapshot_entries_equal_expected_at_startstable() {
    for fx in fixtures() {
        let expected = parse_dataset(&fx.expected()["at_startstable"]);
        let mut all = Vec::new();
        for i in 0..fx.num_flows() {
            all.extend(fx.decode(i, 1 << 20));
        }
        // Every argument of an inline record counts as a key it may touch.
        let touched: BTreeSet<Vec<u8>> = all
            .iter()
            .filter_map(|x| match x {
                Item::Journal(r) if r.lsn.is_none() && r.kind != RecordKind::Ping => Some(r.argv.iter().skip(1).map(<[u8]>::to_vec).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect();
        let decoded = assemble_snapshot(all.iter());
        let (compared, df_only) = assert_decoded_equal(&fx.name, &decoded, &expected, |k| touched.contains(k));
        // One key per Dragonfly-only type the master's release could create: the version facts
        // and the master's own data must agree, and the snapshot must hold each of them.
        let types = dragonfly_versions::dragonfly_only_types(&fx);
        let in_expected: BTreeSet<&str> =
            expected.values().flat_map(|m| m.values()).map(|k| k.ty.as_str()).filter(|t| !NATIVE.contains(t)).collect();
        assert_eq!(in_expected, types, "{}: Dragonfly-only types in expected.json vs Dragonfly {}", fx.name, dragonfly_versions::release(&fx));
        assert_eq!(df_only, types.len(), "{}: Dragonfly-only keys decoded, expected one each of {types:?}", fx.name);
        eprintln!("{}: {compared} native keys equal, {df_only} Dragonfly-only keys decoded", fx.name);
    }
}

/// XREADGROUP's effects are in the journal from v1.37.0 on and absent before: the v1.40.1
/// captures carry consumer carol's read as XCLAIM records, the v1.36.0 one (full sync and
/// partial resume alike) no record naming carol at all. That is why the replay tests compare
/// the v1.36.0 capture's data without that read (`dragonfly_versions::unjournaled_reads`).
#[test]
fn xreadgroup_deliveries_are_journaled_only_from_v1_37() {
    let read = dragonfly_versions::TYPES_JOURNAL_READ;
    let mut seen = 0;
    for fx in fixtures() {
        if fx.session["scenario"].as_str() != Some("types") {
            continue;
        }
        let mut items: Vec<Item> = (0..fx.num_flows()).flat_map(|i| fx.decode(i, 1 << 20)).collect();
        if let Some(partial) = fx.partial() {
            for i in 0..fx.num_flows() {
                let mut d = FlowDecoder::partial(Some(i as u32), partial["resume_lsns"][i].as_u64().unwrap(), Limits::default());
                d.feed(&fx.partial_bytes(i), &mut items).unwrap();
                d.finish().unwrap();
            }
        }
        let (mut mentions, mut claims) = (0, 0);
        for it in &items {
            let Item::Journal(r) = it else { continue };
            if r.argv.iter().any(|a| a == read.consumer) {
                mentions += 1;
                if r.argv.name_upper() == "XCLAIM" && r.argv.get(1) == Some(read.key) {
                    claims += 1;
                }
            }
        }
        let release = dragonfly_versions::release(&fx);
        if dragonfly_versions::journals_xreadgroup(&fx) {
            assert!(claims >= 2, "{}: Dragonfly {release} journals XREADGROUP, but only {claims} XCLAIM records name the consumer", fx.name);
            assert!(dragonfly_versions::unjournaled_reads(&fx).is_empty());
        } else {
            assert_eq!(mentions, 0, "{}: Dragonfly {release} journals no XREADGROUP, yet {mentions} records name the consumer", fx.name);
            assert_eq!(dragonfly_versions::unjournaled_reads(&fx).len(), 1, "{}", fx.name);
            seen += 1;
        }
    }
    assert!(seen > 0, "no capture from a master older than v1.37.0");
}

// ---------------------------------------------------------------------------------------------
// Damaged input: clear errors at the right offset, never a panic.

/// Flow offsets at which the next byte is a top-level opcode of the snapshot body, found by
/// feeding one byte at a time; and the offset where stable sync begins.
fn boundaries(bytes: &[u8], token: &[u8]) -> (Vec<u64>, u64) {
    let mut d = FlowDecoder::new(None, Some(token.to_vec()), Limits::default());
    let mut out = Vec::new();
    let mut b = vec![];
    let mut journal_at = None;
    for (i, byte) in bytes.iter().enumerate() {
        if d.phase() == Phase::Body && d.at_top_level() {
            b.push(i as u64);
        }
        if d.phase() == Phase::Journal && journal_at.is_none() {
            journal_at = Some(i as u64);
        }
        d.feed(std::slice::from_ref(byte), &mut out).unwrap();
    }
    (b, journal_at.unwrap())
}

fn must_fail<T>(r: Result<T, df2redis::protocol::DecodeError>, what: &str) -> df2redis::protocol::DecodeError {
    match r {
        Ok(_) => panic!("{what}: damaged input decoded without an error"),
        Err(e) => e,
    }
}

#[test]
fn truncation_at_every_boundary_is_reported_at_that_offset() {
    for fx in fixtures() {
        for i in 0..fx.num_flows() {
            let bytes = fx.flow_bytes(i);
            let token = fx.token(i);
            let mut d = FlowDecoder::new(Some(i as u32), Some(token.clone()), Limits::default());
            let mut out = Vec::new();
            let mut checked = 0;
            let mut journal_at = None;
            for (off, byte) in bytes.iter().enumerate() {
                // Truncating here: everything before the journal phase is an error naming this
                // offset; inside the journal a stream may end between records.
                let r = d.finish();
                if d.phase() == Phase::Journal {
                    journal_at.get_or_insert(off);
                    if d.buffered() == 0 {
                        assert!(r.is_ok(), "{} flow {i}: clean end at {off} rejected: {r:?}", fx.name);
                    } else {
                        assert!(r.is_err());
                    }
                } else {
                    let e = r.expect_err("truncated snapshot accepted");
                    assert_eq!(e.offset, off as u64, "{} flow {i}: {e}", fx.name);
                    assert_eq!(e.flow, Some(i as u32));
                    checked += 1;
                }
                d.feed(std::slice::from_ref(byte), &mut out).unwrap();
            }
            assert!(d.finish().is_ok());
            assert!(checked > 1000, "{} flow {i}: only {checked} truncation points", fx.name);
        }
    }
}

#[test]
fn flipped_opcode_is_reported_at_its_offset() {
    for fx in fixtures() {
        let bytes = fx.flow_bytes(0);
        let (tops, _) = boundaries(&bytes, &fx.token(0));
        // Every 50th top-level item, replaced by a byte that is no opcode (0x30 = 48).
        for &at in tops.iter().step_by(50) {
            let mut bad = bytes.clone();
            bad[at as usize] = 0x30;
            let e = must_fail(decode(&bad, Some(fx.token(0)), 4096), "flipped opcode");
            assert_eq!((e.space, e.offset), (df2redis::protocol::Space::Stream, at), "{}: {e}", fx.name);
            assert!(e.to_string().contains("0x30"), "{e}");
        }
    }
}

#[test]
fn wrong_token_is_reported_at_its_offset() {
    for fx in fixtures() {
        let bytes = fx.flow_bytes(0);
        let mut wrong = fx.token(0);
        wrong[0] ^= 1;
        let e = must_fail(decode(&bytes, Some(wrong), 100_000), "wrong token");
        let eof = bytes.windows(9).rposition(|w| w == [0xFF, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        // The token follows the last EOF marker before it (search from the token itself).
        let tok_at = bytes.windows(40).position(|w| w == fx.token(0).as_slice()).unwrap();
        assert!(tok_at <= eof + 9);
        assert_eq!(e.offset, tok_at as u64, "{}: {e}", fx.name);
        assert!(e.to_string().contains("eof token mismatch"), "{e}");
    }
}

#[test]
fn damaged_lz4_frame_is_reported_at_its_blob() {
    let fx = fixtures().into_iter().find(|f| f.name == "v1.40.1-default").unwrap();
    let bytes = fx.flow_bytes(0);
    let (tops, _) = boundaries(&bytes, &fx.token(0));
    let blobs: Vec<u64> = tops.into_iter().filter(|&o| bytes[o as usize] == 0xCA).collect();
    assert!(blobs.len() > 3);
    for &at in &blobs {
        let at = at as usize;
        // The RSTR length is 1, 2, 5 or 9 bytes; the frame magic follows it.
        let magic = at + 1 + bytes[at + 1..].windows(4).position(|w| w == [0x04, 0x22, 0x4D, 0x18]).unwrap();
        // Frame structure only: block contents carry no checksum in Dragonfly's frames, so a
        // flipped literal byte is indistinguishable from other data.
        let frame = [("magic", magic, 0x5A), ("FLG content-size bit", magic + 4, 0x08), ("content size", magic + 6, 0x01), ("block size", magic + 18, 0x40)];
        for (what, damage, flip) in frame {
            let mut bad = bytes.clone();
            bad[damage] ^= flip;
            let e = must_fail(decode(&bad, Some(fx.token(0)), 65536), what);
            assert_eq!(e.stream_offset(), at as u64, "damaged {what} at {damage}: {e}");
        }
    }
}

#[test]
fn random_damage_never_panics() {
    // A small deterministic xorshift: every fixture, many single-byte corruptions.
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for fx in fixtures() {
        let bytes = fx.flow_bytes(0);
        for _ in 0..200 {
            let mut bad = bytes.clone();
            let pos = (rnd() % bad.len() as u64) as usize;
            bad[pos] = rnd() as u8;
            let cut = (rnd() % bad.len() as u64) as usize;
            let _ = decode(&bad[..cut.max(pos + 1).min(bad.len())], None, 1 + (rnd() % 5000) as usize);
        }
    }
}

/// Large values never arrive whole: every piece holds at most the batch limit of elements, and
/// bytes up to the limit plus one element (the 8 000-element list, 5 000-member zset, 3 000-
/// field hash and the big stream all come in many pieces).
#[test]
fn collections_arrive_in_bounded_pieces() {
    let limits = Limits::default();
    for fx in fixtures() {
        for i in 0..fx.num_flows() {
            let mut pieces_per_key = std::collections::HashMap::new();
            for item in fx.decode(i, 1 << 16) {
                let Item::Value(v) = item else { continue };
                assert!(v.piece.elements() <= limits.batch_elems, "{}: {} elements in one piece", fx.name, v.piece.elements());
                *pieces_per_key.entry(v.head.key.clone()).or_insert(0) += 1;
            }
            for big in [&b"list:big"[..], b"zset:big", b"hash:big", b"set:big"] {
                if let Some(n) = pieces_per_key.get(big) {
                    assert!(*n >= 5, "{}: {} came in {n} pieces", fx.name, String::from_utf8_lossy(big));
                }
            }
        }
    }
}
