//! Journal records (protocol doc 7.1): the stable-sync stream and the payload of JOURNAL_BLOBs.
//!
//! Units are parsed one at a time; a SELECT is its own unit (it only moves the journal db
//! cursor), so nothing ever needs to look past the current record.

use super::cursor::{show, Cursor, PResult};
use super::items::{Argv, RecordKind};

pub const OP_SELECT: u64 = 6;
pub const OP_EXPIRED: u64 = 9;
pub const OP_COMMAND: u64 = 10;
pub const OP_PING: u64 = 13;
pub const OP_LSN: u64 = 15;

/// One unit of the journal stream.
#[derive(Debug)]
pub enum Unit {
    Select(u32),
    Record { kind: RecordKind, txid: u64, argv: Argv },
    Lsn(u64),
}

/// Parse one unit. On `Stop::More` the cursor position is unspecified; the caller rewinds.
pub fn parse_unit(cur: &mut Cursor) -> PResult<Unit> {
    let at = cur.pos();
    let op = cur.puint()?;
    match op {
        OP_SELECT => Ok(Unit::Select(cur.puint_max(u16::MAX as u64, "SELECT db index")? as u32)),
        OP_COMMAND | OP_EXPIRED => {
            let kind = if op == OP_COMMAND { RecordKind::Command } else { RecordKind::Expired };
            let txid = cur.puint()?;
            let _shard_cnt = cur.puint_max(u32::MAX as u64, "shard count")?;
            let argc = cur.puint_max(i32::MAX as u64, "argument count")? as usize;
            let total = cur.puint()?;
            if argc == 0 {
                return Err(cur.err_at(at, "journal command with no arguments"));
            }
            // Capacities are bounded by what is actually buffered, so a corrupt count cannot
            // make us allocate gigabytes up front.
            let mut argv = Argv::with_capacity(
                (total as usize).min(cur.remaining()),
                argc.min(cur.remaining()).min(1024),
            );
            let mut left = total;
            for i in 0..argc {
                let len_at = cur.pos();
                let len = cur.puint()?;
                if len > left {
                    return Err(cur.err_at(
                        len_at,
                        format!(
                            "argument {i} of {argc} is {len} bytes but only {left} of the \
                             record's declared {total} bytes remain"
                        ),
                    ));
                }
                left -= len;
                argv.push(cur.bytes(len as usize)?);
            }
            if left != 0 {
                return Err(cur.err_at(
                    at,
                    format!(
                        "record {} declares {total} argument bytes, its arguments hold {}",
                        show(argv.get(0).unwrap_or_default()),
                        total - left
                    ),
                ));
            }
            Ok(Unit::Record { kind, txid, argv })
        }
        OP_PING => Ok(Unit::Record { kind: RecordKind::Ping, txid: 0, argv: Argv::default() }),
        OP_LSN => Ok(Unit::Lsn(cur.puint()?)),
        other => Err(cur.err_at(
            at,
            format!(
                "unknown journal opcode {other} (expected SELECT 6, EXPIRED 9, COMMAND 10, \
                 PING 13 or LSN 15)"
            ),
        )),
    }
}
