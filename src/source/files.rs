//! Snapshot files as a source: what a path names (a Dragonfly `SAVE DF` snapshot, an `.rdb`
//! file) and each file read as a stream of decoded [`Item`]s.
//!
//! What the files look like (real Dragonfly v1.40.1 files, `tests/fixtures/snapshots`):
//! - `SAVE DF name` writes `name-summary.dfs` and one `name-NNNN.dfs` per shard. A shard file
//!   is the RDB serialization a flow sends in a full sync (header, AUX fields, compressed
//!   blobs, tagged chunks, Dragonfly types) ending with EOF (0xFF) and an 8-byte checksum,
//!   without FULLSYNC_END, journal or token. The summary holds only AUX fields (`snapshot-id`,
//!   `shard-count`, ...). Every file of one snapshot carries the same `snapshot-id`.
//! - `SAVE RDB name` writes `name.rdb`, the same serialization of every shard in one file.
//! - Dragonfly writes its files in 4 KiB blocks: after the checksum comes the rest of the last
//!   block, 0xAB bytes in a summary file and leftover bytes of the write buffer in the others.
//!   So up to 4095 bytes after the checksum are accepted when they end the file on a 4 KiB
//!   boundary; anything else after the checksum is an error.
//! - Dragonfly's checksum is always 0 (it computes none, like Redis with `rdbchecksum no`);
//!   Redis and Valkey write the CRC-64 (Jones, as `crc::CRC_64_REDIS`) of every byte up to and
//!   including EOF. A non-zero checksum is verified; a zero one is reported as absent.
//!
//! Files are streamed in bounded reads: memory does not depend on a file's size.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::protocol::cursor::show;
use crate::protocol::{FlowDecoder, Item, Limits};

/// Dragonfly's write block: the most a file may hold after its checksum.
const BLOCK: u64 = 4096;
/// Bytes read from a file at a time.
const READ_SIZE: usize = 1 << 20;

/// A snapshot file error: the file, the byte offset, and what was expected.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub offset: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{}: byte offset {o}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for FileError {}

fn err(path: &Path, offset: Option<u64>, message: impl Into<String>) -> FileError {
    FileError { path: path.to_path_buf(), offset, message: message.into() }
}

/// What a path names: the files to read, in order, and how they belong together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSet {
    /// The data files: a Dragonfly snapshot's shard files, or the one `.rdb` file.
    pub files: Vec<PathBuf>,
    /// The summary file of a Dragonfly snapshot.
    pub summary: Option<PathBuf>,
    /// The `snapshot-id` every file of a Dragonfly snapshot carries.
    pub snapshot_id: Option<Vec<u8>>,
}

impl SnapshotSet {
    /// Resolve `path`: a `*-summary.dfs` file, a folder holding exactly one, or a single RDB
    /// file (`.rdb`, or any file that is not a summary). The summary's `shard-count` says
    /// which shard files must exist beside it.
    pub fn open(path: &Path) -> Result<SnapshotSet, FileError> {
        let meta = std::fs::metadata(path).map_err(|e| err(path, None, format!("cannot read it: {e}")))?;
        if meta.is_dir() {
            let mut summaries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| err(path, None, format!("cannot list the folder: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-summary.dfs")))
                .collect();
            summaries.sort();
            return match summaries.len() {
                1 => Self::from_summary(&summaries[0]),
                0 => Err(err(path, None, "the folder holds no Dragonfly snapshot (no *-summary.dfs file); name an .rdb file or a summary file")),
                _ => Err(err(
                    path,
                    None,
                    format!(
                        "the folder holds {} snapshots ({}); name the summary file of the one to restore",
                        summaries.len(),
                        summaries.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    ),
                )),
            };
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with("-summary.dfs") {
            return Self::from_summary(path);
        }
        if name.ends_with(".dfs") {
            return Err(err(path, None, "a shard file of a Dragonfly snapshot: name its -summary.dfs file (or the folder), so every shard is restored"));
        }
        Ok(SnapshotSet { files: vec![path.to_path_buf()], summary: None, snapshot_id: None })
    }

    fn from_summary(summary: &Path) -> Result<SnapshotSet, FileError> {
        let aux = read_aux(summary)?;
        let field = |name: &str| aux.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v.clone());
        let count = field("shard-count")
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u32>().ok()))
            .ok_or_else(|| err(summary, None, "the summary file has no shard-count field (is it a Dragonfly summary file?)"))?;
        let snapshot_id = field("snapshot-id");
        let name = summary.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let base = name.strip_suffix("-summary.dfs").unwrap_or(name);
        let dir = summary.parent().unwrap_or(Path::new("."));
        let mut files = Vec::new();
        for i in 0..count {
            let f = dir.join(format!("{base}-{i:04}.dfs"));
            if !f.is_file() {
                return Err(err(
                    summary,
                    None,
                    format!("the summary names {count} shard files and {} is missing", f.display()),
                ));
            }
            files.push(f);
        }
        Ok(SnapshotSet { files, summary: Some(summary.to_path_buf()), snapshot_id })
    }

    /// The total size of the data files, for progress.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
    }
}

/// AUX fields: (name, value).
type AuxFields = Vec<(Vec<u8>, Vec<u8>)>;

/// The AUX fields of a file that holds only AUX fields (a summary); a summary that holds
/// anything else is refused.
fn read_aux(path: &Path) -> Result<AuxFields, FileError> {
    let mut aux = Vec::new();
    read_file(path, Limits::default(), |items| {
        for it in items.drain(..) {
            match it {
                Item::Aux { name, value } => aux.push((name, value)),
                Item::Eof { .. } => {}
                _ => return Err("a summary file holds only AUX fields; this one holds snapshot data".to_string()),
            }
        }
        Ok(())
    })?;
    Ok(aux)
}

/// How a file ended: its checksum, and whether it was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEnd {
    /// The bytes the RDB data takes (to the end of the checksum).
    pub data_bytes: u64,
    /// The checksum was non-zero and matched (a zero checksum means the writer computed none).
    pub checksum_verified: bool,
    /// Bytes after the checksum (Dragonfly's block padding).
    pub trailing: u64,
}

/// Read `path` from its first byte to its end, handing each batch of decoded items to `sink`
/// (which drains it; an `Err` from it stops the read and is reported with the file and the
/// offset reached). The checksum is verified when the file carries one.
pub fn read_file(
    path: &Path,
    limits: Limits,
    mut sink: impl FnMut(&mut Vec<Item>) -> Result<(), String>,
) -> Result<FileEnd, FileError> {
    let mut file = File::open(path).map_err(|e| err(path, None, format!("cannot open it: {e}")))?;
    read_stream(path, &mut file, limits, &mut sink)
}

/// [`read_file`] over any reader (`path` names it in errors).
pub fn read_stream(
    path: &Path,
    input: &mut dyn Read,
    limits: Limits,
    sink: &mut dyn FnMut(&mut Vec<Item>) -> Result<(), String>,
) -> Result<FileEnd, FileError> {
    let mut dec = FlowDecoder::file(limits);
    let mut check = FileCheck::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut items = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(path, Some(check.read), format!("read failed: {e}"))),
        };
        let chunk = &buf[..n];
        check.header(chunk).map_err(|(o, m)| err(path, o, m))?;
        dec.feed(chunk, &mut items).map_err(|e| err(path, None, e.to_string()))?;
        check.fed(&dec, chunk, &items);
        if !items.is_empty() {
            sink(&mut items).map_err(|m| err(path, Some(dec.consumed()), m))?;
            items.clear();
        }
    }
    check.finish(&dec).map_err(|(o, m)| err(path, o, m))
}

/// The rules of a file's ends, checked as it is fed to a [`FlowDecoder::file`]: an RDB header
/// first; the checksum over exactly the bytes up to and including EOF; nothing after the
/// checksum but Dragonfly's block padding. Errors are (byte offset, what was expected).
pub struct FileCheck {
    /// The CRC-64 of the bytes hashed so far ([`crate::crc64`]).
    crc: u64,
    /// Bytes the decoder holds of an incomplete unit (at most one unit), not hashed until it
    /// is known which side of EOF they are on. Bytes consumed without meeting EOF are hashed
    /// at once.
    unhashed: Vec<u8>,
    hashed: u64,
    computed: Option<u64>,
    stored: Option<u64>,
    /// Bytes fed so far.
    pub read: u64,
}

impl Default for FileCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl FileCheck {
    pub fn new() -> Self {
        FileCheck { crc: 0, unhashed: Vec::new(), hashed: 0, computed: None, stored: None, read: 0 }
    }

    /// Before feeding `chunk`: a file that does not start as an RDB file is refused at once,
    /// with what it holds instead.
    pub fn header(&self, chunk: &[u8]) -> Result<(), (Option<u64>, String)> {
        if self.read == 0 && chunk.len() >= 5 && !chunk.starts_with(b"REDIS") {
            return Err((
                Some(0),
                format!(
                    "expected the RDB header (REDIS0009 ... REDIS0012), found {}: not an RDB or Dragonfly snapshot file",
                    show(&chunk[..chunk.len().min(9)])
                ),
            ));
        }
        Ok(())
    }

    /// After `dec.feed(chunk, items)`.
    pub fn fed(&mut self, dec: &FlowDecoder, chunk: &[u8], items: &[Item]) {
        self.read += chunk.len() as u64;
        if self.computed.is_none() {
            self.unhashed.extend_from_slice(chunk);
            let upto = match dec.eof_at() {
                Some(at) => at + 1,
                None => dec.consumed(),
            };
            let k = (upto - self.hashed) as usize;
            self.crc = crate::crc64::update(self.crc, &self.unhashed[..k]);
            self.unhashed.drain(..k);
            self.hashed = upto;
            if dec.eof_at().is_some() {
                self.computed = Some(self.crc);
                self.unhashed = Vec::new();
            }
        }
        if let Some(Item::Eof { checksum }) = items.iter().rev().find(|i| matches!(i, Item::Eof { .. })) {
            self.stored = Some(*checksum);
        }
    }

    /// At the end of the file: it ended after the checksum, what follows is padding, and a
    /// non-zero checksum matches.
    pub fn finish(&self, dec: &FlowDecoder) -> Result<FileEnd, (Option<u64>, String)> {
        dec.finish().map_err(|e| (None, format!("the file ends too early ({} bytes): {e}", self.read)))?;
        let eof_at = dec.eof_at().expect("a finished file decoder has read EOF");
        let data_bytes = eof_at + 9;
        let trailing = dec.trailing();
        if trailing > 0 && (trailing >= BLOCK || self.read % BLOCK != 0) {
            return Err((
                Some(data_bytes),
                format!(
                    "{trailing} bytes follow the checksum; expected the end of the file (or Dragonfly's padding to a {BLOCK}-byte boundary)"
                ),
            ));
        }
        let mut end = FileEnd { data_bytes, checksum_verified: false, trailing };
        match (self.stored, self.computed) {
            (Some(0), _) | (None, _) => Ok(end),
            (Some(s), Some(c)) if s == c => {
                end.checksum_verified = true;
                Ok(end)
            }
            (Some(s), c) => Err((
                Some(end.data_bytes - 8),
                format!(
                    "checksum mismatch: the file says {s:#018x}, its bytes give {:#018x} (the file is damaged)",
                    c.unwrap_or_default()
                ),
            )),
        }
    }
}
