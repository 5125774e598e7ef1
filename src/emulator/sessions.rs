//! Sync sessions (protocol doc 3-6, 9): `REPLCONF capa dragonfly` creates one, `DFLY FLOW`
//! registers its flows, `DFLY SYNC` starts the snapshots, `DFLY STARTSTABLE` the journal; any
//! close of one of its connections cancels it. Also what the tests ask about the latest
//! session (ACKs, FULLSYNC_END written, how each connection was closed).

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commands;
use super::engine::{Core, Feed, Shard, Stage};
use super::flow::Pipe;
use super::hash::random_hex;
use super::snapshot::{Serializer, Traversal};
use super::Dialect;
use crate::tls::Stream;

pub(crate) const ERR_INVALID_STATE: &str = "ERR invalid state";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncState {
    Preparation,
    FullSync,
    StableSync,
    Cancelled,
}

pub(crate) struct FlowReg {
    pub conn: u64,
    pub token: String,
    /// `Some(lsn)` when answered PARTIAL.
    pub partial: Option<u64>,
    pub pipe: Arc<Pipe>,
    pub sock: Stream,
    pub ack: u64,
    /// How the replica closed this connection: `Some(true)` EOF, `Some(false)` error.
    pub closed: Option<bool>,
}

pub(crate) struct Session {
    pub state: SyncState,
    pub flows: Vec<Option<FlowReg>>,
    pub main_closed: Option<bool>,
}

#[derive(Default)]
pub(crate) struct Sessions {
    created: u32,
    map: HashMap<u32, Session>,
    latest: Option<u32>,
}

/// What `DFLY FLOW` granted: the flow's session and index, the answer and its eof token, and
/// the pipe its writer drains.
pub(crate) struct FlowGrant {
    pub sid: u32,
    pub flow: usize,
    pub partial: bool,
    pub token: String,
    pub pipe: Arc<Pipe>,
}

impl Core {
    /// `REPLCONF capa dragonfly`: a new session `SYNC<k>`.
    pub fn new_session(&self) -> u32 {
        let mut ss = self.sessions.lock();
        ss.created += 1;
        let id = ss.created;
        ss.map.insert(
            id,
            Session {
                state: SyncState::Preparation,
                flows: (0..self.cfg.shards).map(|_| None).collect(),
                main_closed: None,
            },
        );
        ss.latest = Some(id);
        drop(ss);
        self.progress.bump();
        id
    }

    pub fn sessions_created(&self) -> u32 {
        self.sessions.lock().created
    }

    /// `SYNC<k>` to k, with Dragonfly's errors for a malformed or unknown id.
    fn lookup<'a>(&self, ss: &'a mut Sessions, sync_id: &[u8]) -> Result<(u32, &'a mut Session), String> {
        let id = sync_id
            .strip_prefix(b"SYNC")
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u32>().ok())
            .ok_or("ERR bad sync id")?;
        match ss.map.get_mut(&id) {
            Some(s) if s.state != SyncState::Cancelled => Ok((id, s)),
            _ => Err("ERR syncid not found".into()),
        }
    }

    /// `DFLY FLOW <replid> <sync id> <flow> [<lsn> | <last master> <lsns>]` (protocol doc 4),
    /// with Dragonfly's checks in its order.
    pub fn register_flow(&self, conn: u64, sock: &Stream, args: &[&[u8]]) -> Result<FlowGrant, String> {
        if !(3..=5).contains(&args.len()) {
            return Err(commands::SYNTAX.into());
        }
        if args[0] != self.replid.as_bytes() {
            return Err("ERR bad master id".into());
        }
        let flow = std::str::from_utf8(args[2])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| *i < self.cfg.shards)
            .ok_or(commands::NOT_INT)?;
        let lsn = match args.len() {
            4 => Some(std::str::from_utf8(args[3]).ok().and_then(|s| s.parse::<u64>().ok()).ok_or(commands::NOT_INT)?),
            _ => None,
        };
        if args.len() == 5 && args[4].split(|b| *b == b'-').count() != self.cfg.shards {
            return Err(commands::SYNTAX.into());
        }
        let mut ss = self.sessions.lock();
        let (sid, s) = self.lookup(&mut ss, args[1])?;
        if s.state != SyncState::Preparation {
            return Err(ERR_INVALID_STATE.into());
        }
        self.journal_on.store(true, Ordering::SeqCst);
        // The 5-argument failover form needs a master this process replicated from: never.
        let partial = lsn.filter(|l| self.shard(flow).lsn_available(*l));
        let token = random_hex();
        let pipe = Arc::new(Pipe::new());
        let sock = sock.try_clone().map_err(|e| format!("ERR {e}"))?;
        let reg = FlowReg { conn, token: token.clone(), partial, pipe: pipe.clone(), sock, ack: 0, closed: None };
        if let Some(old) = s.flows[flow].replace(reg) {
            old.pipe.cancel();
        }
        drop(ss);
        self.progress.bump();
        Ok(FlowGrant { sid, flow, partial: partial.is_some(), token, pipe })
    }

    /// `DFLY SYNC <sync id>`: start every flow's snapshot; in v1.34 a PARTIAL flow's is
    /// incremental (protocol doc 8.3): its backlog from the requested LSN as journal blobs.
    pub fn sync(&self, sync_id: &[u8]) -> Result<(), String> {
        let mut ss = self.sessions.lock();
        let (sid, s) = self.lookup(&mut ss, sync_id)?;
        if s.state != SyncState::Preparation || s.flows.iter().any(Option::is_none) {
            return Err(ERR_INVALID_STATE.into());
        }
        if s.flows.iter().flatten().any(|f| f.partial.is_some()) {
            match self.cfg.dialect {
                // SYNC is the required next step for PARTIAL flows.
                Dialect::V1_34 => {}
                Dialect::V1_36 => {
                    self.violation(format!(
                        "DFLY SYNC after PARTIAL flows in session SYNC{sid}: v1.35-v1.39 masters would corrupt the stream"
                    ));
                    return Err(ERR_INVALID_STATE.into());
                }
                Dialect::V1_40 => return Err(ERR_INVALID_STATE.into()),
            }
        }
        s.state = SyncState::FullSync;
        let mut overrun = None;
        for (i, f) in s.flows.iter().flatten().enumerate() {
            let mut sh = self.shard(i);
            if f.pipe.is_cancelled() {
                continue;
            }
            let mut ser = Serializer::new(self.ser_opts());
            ser.header(&self.aux(i, &sh));
            if let Some(from) = f.partial {
                if !sh.lsn_available(from) {
                    overrun = Some(format!("flow {i}: LSN {from} fell out of the backlog (partial sync unsuccessful)"));
                    break;
                }
                self.incremental_snapshot(sid, &mut sh, &f.pipe, ser, from);
                continue;
            }
            let stage = if self.cfg.pre_encode {
                Stage::PreEncoded { body: self.pre_encoded(&mut sh), pos: 0 }
            } else {
                Stage::Snapshot(Traversal::new(&sh.dbs))
            };
            let mut feed = Feed { session: sid, pipe: f.pipe.clone(), stage, ser, last_mark: None };
            feed.drain();
            sh.feeds.push(feed);
            f.pipe.update(|st| st.snapshot_work = true);
        }
        drop(ss);
        if let Some(why) = overrun {
            // Dragonfly answers +OK and its snapshot fiber then fails the session.
            self.cancel_session(sid, &why);
        }
        self.progress.bump();
        Ok(())
    }

    /// v1.34's incremental snapshot of a PARTIAL flow (Dragonfly v1.34.2
    /// `SliceSnapshot::SwitchIncrementalFb`): after the header, one journal blob per backlog
    /// record from `from` to the current LSN (flushed at 8 KiB), FULLSYNC_END with the rest,
    /// then every new record as a held post-cut blob, as in a full sync after its cut. Done at
    /// once under the shard lock, so no write interleaves; Dragonfly's fiber may yield between
    /// flushes, and a record written meanwhile is then picked up from the ring buffer by the
    /// same loop: other flush boundaries, the same records in the same order.
    fn incremental_snapshot(&self, sid: u32, sh: &mut Shard, pipe: &Arc<Pipe>, mut ser: Serializer, from: u64) {
        for (_, rec) in sh.ring.iter().filter(|(l, _)| *l >= from) {
            ser.journal_blob(rec, true);
        }
        ser.incremental_cut();
        let mut feed = Feed { session: sid, pipe: pipe.clone(), stage: Stage::PostCut, ser, last_mark: None };
        feed.drain();
        sh.feeds.push(feed);
        pipe.update(|st| {
            st.snapshot_done = true;
            st.fse_at = Some(st.enqueued);
        });
    }

    /// `DFLY STARTSTABLE <sync id>`: after `DFLY SYNC`, end every flow's full sync (held
    /// journal blobs, JOURNAL_OFFSET, EOF, token) and start streaming the journal; directly
    /// after all-PARTIAL flows (v1.35+), stream each flow's backlog from its LSN on.
    pub fn startstable(&self, sync_id: &[u8]) -> Result<(), String> {
        let (sid, full_sync, pipes) = {
            let mut ss = self.sessions.lock();
            let (sid, s) = self.lookup(&mut ss, sync_id)?;
            let all_partial = s.flows.iter().all(|f| f.as_ref().is_some_and(|f| f.partial.is_some()));
            let v134 = self.cfg.dialect == Dialect::V1_34;
            if s.state == SyncState::Preparation && all_partial && v134 {
                self.violation(format!(
                    "DFLY STARTSTABLE after all-PARTIAL flows without DFLY SYNC in session SYNC{sid}: a v1.34 master \
                     accepts it only in full sync (protocol doc 8.3)"
                ));
            }
            let ok_state = s.state == SyncState::FullSync || (s.state == SyncState::Preparation && all_partial && !v134);
            if !ok_state || s.flows.iter().any(|f| f.as_ref().is_none_or(|f| f.closed.is_some())) {
                return Err(ERR_INVALID_STATE.into());
            }
            (sid, s.state == SyncState::FullSync, s.flows.iter().flatten().map(|f| f.pipe.clone()).collect::<Vec<_>>())
        };
        let live = || !self.stopping.load(Ordering::SeqCst) && self.session_state(sid) != Some(SyncState::Cancelled);
        if self.cfg.hold_startstable {
            self.progress.wait_until(None, || !live() || self.startstable_released.load(Ordering::SeqCst));
        }
        // Dragonfly joins the snapshot fibers here (under its global lock): wait for them.
        self.progress.wait_until(None, || !live() || !full_sync || pipes.iter().all(|p| p.lock().snapshot_done));
        let mut ss = self.sessions.lock();
        let Ok((_, s)) = self.lookup(&mut ss, sync_id) else { return Err(ERR_INVALID_STATE.into()) };
        let mut failed = None;
        for (i, f) in s.flows.iter().flatten().enumerate() {
            let mut sh = self.shard(i);
            let next_lsn = sh.next_lsn;
            match f.partial {
                // After DFLY SYNC every flow has a feed (v1.34's PARTIAL flows too).
                _ if full_sync => {
                    let Some(feed) = sh.feeds.iter_mut().find(|x| Arc::ptr_eq(&x.pipe, &f.pipe)) else { continue };
                    let token = if self.cfg.wrong_token { wrong(&f.token) } else { f.token.clone() };
                    feed.ser.finish(next_lsn, token.as_bytes());
                    feed.stage = Stage::Stable;
                    feed.drain();
                }
                Some(from) if sh.lsn_available(from) => {
                    let mut feed = Feed {
                        session: sid,
                        pipe: f.pipe.clone(),
                        stage: Stage::Stable,
                        ser: Serializer::new(self.ser_opts()),
                        last_mark: None,
                    };
                    for (lsn, rec) in sh.ring.iter().filter(|(l, _)| *l >= from) {
                        feed.record(*lsn, rec, self.cfg.lsn_marker_period);
                    }
                    if !f.pipe.is_cancelled() {
                        sh.feeds.push(feed);
                    }
                }
                Some(from) => {
                    failed = Some(format!("flow {i}: LSN {from} fell out of the backlog (partial sync unsuccessful)"));
                    break;
                }
                // Not reached: STARTSTABLE without SYNC needs every flow PARTIAL.
                None => {}
            }
        }
        if let Some(why) = failed {
            drop(ss);
            self.cancel_session(sid, &why);
            return Err(ERR_INVALID_STATE.into());
        }
        s.state = SyncState::StableSync;
        Ok(())
    }

    fn session_state(&self, sid: u32) -> Option<SyncState> {
        self.sessions.lock().map.get(&sid).map(|s| s.state)
    }

    /// `REPLCONF ACK <lsn>` on a flow connection.
    pub fn ack(&self, sid: u32, flow: usize, conn: u64, lsn: u64) {
        let mut ss = self.sessions.lock();
        if let Some(Some(f)) = ss.map.get_mut(&sid).map(|s| &mut s.flows[flow]) {
            if f.conn == conn {
                f.ack = lsn;
            }
        }
        drop(ss);
        self.progress.bump();
    }

    /// The replica closed (or broke) the main connection of these sessions.
    pub fn main_closed(&self, sessions: &[u32], clean: bool) {
        for sid in sessions {
            if let Some(s) = self.sessions.lock().map.get_mut(sid) {
                s.main_closed = Some(clean);
            }
            self.cancel_session(*sid, "the main connection closed");
        }
        // The session may have been cancelled already; waiters still need to see the close.
        self.progress.bump();
    }

    /// The replica closed (or broke) a flow connection.
    pub fn flow_closed(&self, sid: u32, flow: usize, conn: u64, clean: bool) {
        if let Some(Some(f)) = self.sessions.lock().map.get_mut(&sid).map(|s| &mut s.flows[flow]) {
            if f.conn == conn {
                f.closed = Some(clean);
            }
        }
        self.cancel_session(sid, &format!("flow {flow}'s connection closed"));
        self.progress.bump();
    }

    /// Cancel a session: detach its flows from the shards, stop their writers and send FIN
    /// on every flow socket (the connection threads keep reading until the replica closes).
    pub fn cancel_session(&self, sid: u32, why: &str) {
        let victims: Vec<(Arc<Pipe>, Option<Stream>)> = {
            let mut ss = self.sessions.lock();
            let Some(s) = ss.map.get_mut(&sid) else { return };
            if s.state == SyncState::Cancelled {
                return;
            }
            s.state = SyncState::Cancelled;
            s.flows.iter().flatten().map(|f| (f.pipe.clone(), f.sock.try_clone().ok())).collect()
        };
        log::info!("session SYNC{sid} cancelled: {why}");
        for (p, _) in &victims {
            p.cancel();
        }
        for s in &self.shards {
            s.lock().feeds.retain(|f| f.session != sid);
        }
        for (_, sock) in victims {
            if let Some(sock) = sock {
                let _ = sock.shutdown(Shutdown::Write);
            }
        }
        self.progress.bump();
    }

    /// Cancel every session (emulator stop).
    pub fn cancel_all(&self) {
        let ids: Vec<u32> = self.sessions.lock().map.keys().copied().collect();
        for id in ids {
            self.cancel_session(id, "the emulator stops");
        }
        self.progress.bump();
    }

    // ---- introspection for tests -----------------------------------------------------------------

    fn with_latest<T>(&self, f: impl FnOnce(&Session) -> T) -> Option<T> {
        let ss = self.sessions.lock();
        ss.latest.and_then(|id| ss.map.get(&id)).map(f)
    }

    pub fn acked(&self) -> Vec<u64> {
        self.with_latest(|s| s.flows.iter().map(|f| f.as_ref().map_or(0, |f| f.ack)).collect())
            .unwrap_or_else(|| vec![0; self.cfg.shards])
    }

    pub fn flow_closed_cleanly(&self) -> Vec<Option<bool>> {
        self.with_latest(|s| s.flows.iter().map(|f| f.as_ref().and_then(|f| f.closed)).collect())
            .unwrap_or_else(|| vec![None; self.cfg.shards])
    }

    pub fn wait_acked_all(&self, timeout: Duration) -> bool {
        self.progress.wait_until(Some(Instant::now() + timeout), || {
            let lsns = self.lsns();
            self.with_latest(|s| s.flows.iter().zip(&lsns).all(|(f, l)| f.as_ref().is_some_and(|f| f.ack == *l)))
                .unwrap_or(false)
        })
    }

    /// Every flow of the latest session is paused at `pause_snapshot_after` (or has finished
    /// its snapshot before reaching it).
    pub fn wait_snapshot_paused(&self, timeout: Duration) -> bool {
        self.progress.wait_until(Some(Instant::now() + timeout), || {
            self.with_latest(|s| {
                !s.flows.is_empty()
                    && s.flows.iter().all(|f| {
                        f.as_ref().is_some_and(|f| {
                            let st = f.pipe.lock();
                            st.paused || st.snapshot_done
                        })
                    })
            })
            .unwrap_or(false)
        })
    }

    pub fn wait_fullsync_end(&self, timeout: Duration) -> bool {
        self.progress.wait_until(Some(Instant::now() + timeout), || {
            self.with_latest(|s| {
                s.flows.iter().all(|f| {
                    f.as_ref().is_some_and(|f| {
                        let st = f.pipe.lock();
                        st.fse_at.is_some_and(|at| st.written >= at)
                    })
                })
            })
            .unwrap_or(false)
        })
    }

    pub fn main_closed_cleanly(&self) -> Option<bool> {
        self.with_latest(|s| s.main_closed).flatten()
    }

    /// Fault: cut flow `flow` of the latest session, as a network failure would (both
    /// directions shut down); the master then cancels the session. False if there is none.
    pub fn drop_flow(&self, flow: usize) -> bool {
        let sock = self.with_latest(|s| s.flows.get(flow).and_then(|f| f.as_ref()).and_then(|f| f.sock.try_clone().ok()));
        match sock.flatten() {
            Some(sock) => {
                log::info!("fault: dropping flow {flow} of the latest session");
                // The TCP socket itself (no TLS close_notify), as a network failure would.
                sock.tcp().shutdown(std::net::Shutdown::Both).is_ok()
            }
            None => false,
        }
    }

    pub fn wait_session_closed(&self, timeout: Duration) -> bool {
        self.progress.wait_until(Some(Instant::now() + timeout), || {
            self.with_latest(|s| s.main_closed.is_some() && s.flows.iter().flatten().all(|f| f.closed.is_some()))
                .unwrap_or(false)
        })
    }
}

/// A token that differs from `t` in every position (fault injection).
fn wrong(t: &str) -> String {
    t.chars().map(|c| if c == '0' { '1' } else { '0' }).collect()
}
