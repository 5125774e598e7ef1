//! `df2redis inspect`: a captured flow, one readable line per entry or record, then a summary.
//!
//! Users attach flow captures to bug reports; this is how they and we read them. Entries are
//! printed when their last piece arrives, with element and byte totals, so a chunked entry
//! interleaved with others still prints as one line.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::protocol::cursor::show;
use crate::protocol::flow::opcode_name;
use crate::protocol::{
    rdb_type, DecodeError, EntryHead, FlowDecoder, Item, Limits, Piece, RecordKind,
};

/// How the capture starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// A full-sync flow (`FULL`): RDB header first.
    Full,
    /// A partial-sync flow (`PARTIAL`): journal records from this LSN.
    Partial(u64),
    /// A snapshot file (`.dfs`, `.rdb`): RDB header first, EOF and checksum last.
    File,
}

/// Totals over a capture.
#[derive(Debug, Default)]
pub struct Summary {
    pub bytes: u64,
    pub entries_by_type: BTreeMap<u8, u64>,
    pub inline_records: BTreeMap<String, u64>,
    pub stable_records: BTreeMap<String, u64>,
    pub lsn_marks: u64,
    pub lsn_mismatches: u64,
    pub journal_offset: Option<u64>,
    pub next_lsn: Option<u64>,
    pub token: Option<String>,
    pub opcodes: Vec<(u8, u64)>,
}

#[derive(Default)]
struct Acc {
    elements: u64,
    bytes: u64,
    wire: u64,
}

/// Decode `input` and write one line per item to `out`, then the summary. A decode error is
/// returned after the lines decoded so far and the summary have been written.
pub fn inspect(
    mut input: impl Read,
    token: Option<Vec<u8>>,
    start: Start,
    out: &mut impl Write,
) -> io::Result<Result<Summary, DecodeError>> {
    let mut dec = match start {
        Start::Full => FlowDecoder::new(None, token, Limits::default()),
        Start::Partial(lsn) => FlowDecoder::partial(None, lsn, Limits::default()),
        Start::File => FlowDecoder::file(Limits::default()),
    };
    let mut sum = Summary::default();
    let mut open: HashMap<*const EntryHead, Acc> = HashMap::new();
    let mut items = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let result = loop {
        let n = input.read(&mut buf)?;
        let r = if n == 0 { dec.finish() } else { dec.feed(&buf[..n], &mut items) };
        sum.bytes += n as u64;
        for item in items.drain(..) {
            render(&item, &mut sum, &mut open, out)?;
        }
        if let Err(e) = r {
            break Err(e);
        }
        if n == 0 {
            break Ok(());
        }
    };
    sum.next_lsn = dec.next_lsn();
    sum.opcodes = (0..=255u8).map(|o| (o, dec.counts().0[o as usize])).filter(|&(_, c)| c > 0).collect();
    write_summary(&sum, out)?;
    if let Err(e) = &result {
        writeln!(out, "error: {e}")?;
    }
    Ok(result.map(|_| sum))
}

fn render(
    item: &Item,
    sum: &mut Summary,
    open: &mut HashMap<*const EntryHead, Acc>,
    out: &mut impl Write,
) -> io::Result<()> {
    match item {
        Item::Aux { name, value } => writeln!(out, "aux     {} = {}", show(name), show(value)),
        Item::Value(v) => {
            let acc = open.entry(Arc::as_ptr(&v.head)).or_default();
            acc.elements += v.piece.elements() as u64;
            acc.bytes += piece_bytes(&v.piece);
            acc.wire += v.wire_bytes;
            if !v.last {
                return Ok(());
            }
            let acc = open.remove(&Arc::as_ptr(&v.head)).unwrap_or_default();
            let h = &v.head;
            *sum.entries_by_type.entry(h.rdb_type).or_default() += 1;
            let ttl = match h.expire_at_ms {
                Some(ms) => format!("expire_at={} ({})", ms, utc(ms)),
                None => "ttl=none".to_string(),
            };
            let mut flags = String::new();
            if h.sticky {
                flags.push_str(" sticky");
            }
            if let Some(f) = h.mc_flags {
                flags.push_str(&format!(" mc_flags={f}"));
            }
            writeln!(
                out,
                "entry   db={} key={} type={}({}) elements={} bytes={} wire={} {ttl}{flags}",
                h.db,
                show(&h.key),
                rdb_type::name(h.rdb_type),
                h.rdb_type,
                acc.elements,
                acc.bytes,
                acc.wire
            )
        }
        Item::Journal(r) => {
            let name = match r.kind {
                RecordKind::Ping => "PING".to_string(),
                RecordKind::Expired => format!("EXPIRED:{}", r.argv.name_upper()),
                RecordKind::Command => r.argv.name_upper(),
            };
            let map = if r.lsn.is_some() { &mut sum.stable_records } else { &mut sum.inline_records };
            *map.entry(name.clone()).or_default() += 1;
            let lsn = r.lsn.map_or("inline".to_string(), |l| l.to_string());
            let args: Vec<String> = r.argv.iter().skip(1).take(8).map(show).collect();
            let more = if r.argv.len() > 9 { format!(" ... ({} args)", r.argv.len() - 1) } else { String::new() };
            writeln!(out, "journal lsn={lsn} db={} txid={} {name} {}{more}", r.db, r.txid, args.join(" "))
        }
        Item::LsnMark { announced, expected } => {
            sum.lsn_marks += 1;
            let ok = Some(*announced) == *expected;
            if !ok {
                sum.lsn_mismatches += 1;
            }
            let note = if ok { String::new() } else { format!(" (MISMATCH: last record had {expected:?})") };
            writeln!(out, "lsn     {announced}{note}")
        }
        Item::FullSyncEnd => writeln!(out, "FULLSYNC_END"),
        Item::JournalOffset(o) => {
            sum.journal_offset = Some(*o);
            writeln!(out, "JOURNAL_OFFSET {o}")
        }
        Item::Eof { checksum } => writeln!(out, "EOF checksum={checksum}"),
        Item::Token(t) => {
            sum.token = Some(String::from_utf8_lossy(t).into_owned());
            writeln!(out, "TOKEN {}", String::from_utf8_lossy(t))
        }
        Item::Skipped { opcode, bytes } => writeln!(out, "skipped {} ({bytes} bytes)", opcode_name(*opcode)),
    }
}

fn piece_bytes(p: &Piece) -> u64 {
    let n: usize = match p {
        Piece::String(s) | Piece::Json(s) => s.len(),
        Piece::ListElems(v) | Piece::SetMembers(v) => v.iter().map(Vec::len).sum(),
        Piece::SetMembersTtl(v) => v.iter().map(|(m, _)| m.len()).sum(),
        Piece::HashFields(v) => v.iter().map(|(f, x)| f.len() + x.len()).sum(),
        Piece::HashFieldsTtl(v) => v.iter().map(|(f, x, _)| f.len() + x.len()).sum(),
        Piece::ZsetMembers(v) => v.iter().map(|(m, _)| m.len() + 8).sum(),
        Piece::StreamEntries(v) => v.iter().flat_map(|e| e.fields.iter()).map(Vec::len).sum(),
        Piece::StreamMeta(_) | Piece::StreamGroup(_) => 0,
        Piece::Opaque(n) => return *n,
        Piece::Encoded { bytes, start } => (bytes.len() - start).saturating_sub(1),
    };
    n as u64
}

fn write_summary(s: &Summary, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "---- summary ----")?;
    writeln!(out, "bytes read: {}", s.bytes)?;
    writeln!(out, "top-level opcodes:")?;
    for (op, c) in &s.opcodes {
        writeln!(out, "  {:<36} {c}", opcode_name(*op))?;
    }
    let total: u64 = s.entries_by_type.values().sum();
    writeln!(out, "entries: {total}")?;
    for (t, c) in &s.entries_by_type {
        let note = if rdb_type::is_dragonfly_only(*t) { "  (Dragonfly-only)" } else { "" };
        writeln!(out, "  type {t:>2} {:<20} {c}{note}", rdb_type::name(*t))?;
    }
    for (label, map) in [("inline journal records (full sync)", &s.inline_records), ("stable-sync records", &s.stable_records)] {
        writeln!(out, "{label}: {}", map.values().sum::<u64>())?;
        for (name, c) in map {
            writeln!(out, "  {name:<20} {c}")?;
        }
    }
    if let Some(o) = s.journal_offset {
        writeln!(out, "journal offset: {o}")?;
    }
    if let Some(n) = s.next_lsn {
        writeln!(out, "next lsn (ACK value after the last record): {n}")?;
    }
    writeln!(out, "lsn markers: {} ({} mismatched)", s.lsn_marks, s.lsn_mismatches)?;
    if let Some(t) = &s.token {
        writeln!(out, "eof token: {t}")?;
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds (civil-from-days, no time-zone database).
pub fn utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_795_264_041_409), "2026-11-21T12:27:21.409Z");
    }
}
