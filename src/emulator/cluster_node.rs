//! A node of an emulated Dragonfly cluster: the slot ownership check on every key command,
//! layout pushes (`DFLYCLUSTER CONFIG`), slot flushes with their `DFLYCLUSTER FLUSHSLOTS`
//! journal records, and the scripted slot migration between two in-process nodes. Sequence and
//! sources: docs/protocol/dragonfly-cluster.md, section C.
//!
//! Where it is simpler than Dragonfly: the copy runs with the source's writes paused (Dragonfly
//! streams it concurrently, serializing a bucket before a write changes it), so the target's
//! journal holds each key's copy before any forwarded write of it, as Dragonfly's does.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::cluster::{self, owned_by, NodeInfo, ShardInfo, SlotRange, SlotSet};
use super::engine::{Core, Shard};
use super::migration::{self, Argv};
use super::{encode, Dialect};

/// One migration job of this node (Dragonfly's `OutgoingMigration`/`IncomingSlotMigration`).
#[derive(Clone, Debug)]
pub(super) struct Job {
    /// The other node's id.
    pub peer: String,
    pub slots: Vec<SlotRange>,
    pub finished: bool,
}

/// The writes of a migrating source that are forwarded to the target.
pub(super) struct Forward {
    pub target: Arc<Core>,
    pub peer: String,
    pub slots: SlotSet,
}

pub(super) struct ClusterState {
    pub me: String,
    /// As last pushed; empty = not configured.
    pub layout: Vec<ShardInfo>,
    /// The slots this node serves (`my_slots_`): the layout's, changed by finished migrations.
    pub mine: SlotSet,
    pub outgoing: Vec<Job>,
    pub incoming: Vec<Job>,
    pub forward: Option<Forward>,
    /// `total_migrated_keys` of `INFO cluster`.
    pub migrated_keys: u64,
}

impl ClusterState {
    pub fn new(me: String, layout: Vec<ShardInfo>) -> Self {
        let mine = owned_by(&layout, &me);
        let mut st = ClusterState { me, layout: Vec::new(), mine, outgoing: Vec::new(), incoming: Vec::new(), forward: None, migrated_keys: 0 };
        st.add_new_jobs(&layout);
        st.layout = layout;
        st
    }

    /// Jobs the layout lists: (outgoing from my shard, incoming to me).
    fn listed(&self, layout: &[ShardInfo]) -> (Vec<Job>, Vec<Job>) {
        let mut out = Vec::new();
        let mut inc = Vec::new();
        for sh in layout {
            for m in &sh.migrations {
                if sh.master.id == self.me {
                    out.push(Job { peer: m.target.id.clone(), slots: m.slots.clone(), finished: false });
                } else if m.target.id == self.me {
                    inc.push(Job { peer: sh.master.id.clone(), slots: m.slots.clone(), finished: false });
                }
            }
        }
        (out, inc)
    }

    fn add_new_jobs(&mut self, layout: &[ShardInfo]) {
        let (out, inc) = self.listed(layout);
        for j in out {
            if !self.outgoing.iter().any(|o| o.peer == j.peer && o.slots == j.slots) {
                self.outgoing.push(j);
            }
        }
        for j in inc {
            if !self.incoming.iter().any(|o| o.peer == j.peer && o.slots == j.slots) {
                self.incoming.push(j);
            }
        }
    }

    /// Refuse a key command as Dragonfly's `CheckKeysOwnership` does (reads too).
    pub fn check_keys(&self, db: u32, keys: &[&[u8]]) -> Result<(), String> {
        if db != 0 {
            return Err(cluster::SELECT_REFUSED.into());
        }
        let Some(first) = keys.first() else { return Ok(()) };
        let slot = cluster::key_slot(first);
        if keys.iter().any(|k| cluster::key_slot(k) != slot) {
            return Err(cluster::CROSSSLOT.into());
        }
        if self.layout.is_empty() {
            return Err(cluster::NOT_CONFIGURED.into());
        }
        if self.mine.contains(slot) {
            return Ok(());
        }
        match cluster::master_for_slot(&self.layout, &self.me, slot) {
            Some(n) => Err(cluster::moved(slot, n)),
            // Dragonfly DCHECKs here and redirects to an empty node.
            None => Err(cluster::moved(slot, &NodeInfo { id: String::new(), ip: String::new(), port: 0 })),
        }
    }
}

impl Core {
    pub(super) fn cluster_state(&self) -> Option<parking_lot::RwLockReadGuard<'_, ClusterState>> {
        self.cluster.as_ref().map(|c| c.read())
    }

    /// A client's write in cluster mode: the ownership check, the write, then the forwarding of
    /// its journal records of migrating slots to the target. The read lock is the
    /// finalization pause: [`Core::finalize_migration`] takes it exclusively.
    pub(super) fn cluster_write(&self, st: &ClusterState, db: u32, args: &[&[u8]], keys: &[&[u8]]) -> Result<(), String> {
        st.check_keys(db, keys)?;
        let res = self.write_unchecked(db, args);
        self.forward(st);
        res
    }

    /// Journal forms of this node's writes, kept while a migration forwards (see
    /// [`Core::forward`]).
    pub(super) fn note_forward<T: AsRef<[u8]>>(&self, db: u32, args: &[T]) {
        if db == 0 && self.forwarding.load(Ordering::SeqCst) && args.len() > 1 {
            self.forward_buf.lock().push(args.iter().map(|a| a.as_ref().to_vec()).collect());
        }
    }

    /// Execute on the target, in journal order, the noted records of the moving slots.
    fn forward(&self, st: &ClusterState) {
        let mut buf = self.forward_buf.lock();
        let Some(f) = &st.forward else {
            buf.clear();
            return;
        };
        for rec in buf.drain(..) {
            if f.slots.contains(cluster::key_slot(&rec[1])) {
                let argv: Vec<&[u8]> = rec.iter().map(Vec::as_slice).collect();
                if let Err(e) = f.target.write_unchecked(0, &argv) {
                    log::warn!("migration to {}: forwarded {:?} failed: {e}", f.peer, String::from_utf8_lossy(&rec[0]));
                }
            }
        }
    }

    /// `DFLYCLUSTER CONFIG` (`ClusterFamily::DflyClusterConfig`): take the layout, drop the
    /// migrations it no longer lists, flush (and journal) the slots this node stops owning.
    pub(super) fn push_layout(&self, layout: Vec<ShardInfo>) -> Result<(), String> {
        let Some(cl) = &self.cluster else { return Err(cluster::DFLYCLUSTER_DISABLED.into()) };
        let mut st = cl.write();
        if !st.layout.is_empty() && st.layout == layout {
            return Ok(());
        }
        let before = if st.layout.is_empty() { SlotSet::full() } else { st.mine.clone() };
        let (out, inc) = st.listed(&layout);
        let mut flush = SlotSet::empty();
        // Outgoing migrations no longer listed (`TakeOutOutgoingMigrations`): their slots not
        // owned by the new layout are flushed.
        let mut gone_out = SlotSet::empty();
        st.outgoing.retain(|j| {
            let keep = out.iter().any(|o| o.peer == j.peer && o.slots == j.slots);
            if !keep {
                gone_out.set(&j.slots, true);
            }
            keep
        });
        flush.union(&gone_out.minus(&owned_by(&layout, &st.me)));
        // Incoming ones no longer listed (`RemoveIncomingMigrations`): the slots the node does
        // not own now are flushed.
        let mut gone_in = SlotSet::empty();
        st.incoming.retain(|j| {
            let keep = inc.iter().any(|o| o.peer == j.peer && o.slots == j.slots);
            if !keep {
                gone_in.set(&j.slots, true);
            }
            keep
        });
        flush.union(&gone_in.minus(&st.mine));
        if st.forward.as_ref().is_some_and(|f| !st.outgoing.iter().any(|j| j.peer == f.peer)) {
            st.forward = None;
            self.forwarding.store(false, Ordering::SeqCst);
        }
        let mut mine = owned_by(&layout, &st.me);
        for j in st.incoming.iter().filter(|j| j.finished) {
            mine.set(&j.slots, true);
        }
        for j in st.outgoing.iter().filter(|j| j.finished) {
            mine.set(&j.slots, false);
        }
        flush.union(&before.minus(&mine));
        st.mine = mine;
        st.add_new_jobs(&layout);
        st.layout = layout;
        self.flush_slots(&flush.ranges());
        Ok(())
    }

    /// `DeleteSlots` + v1.40.1's `WriteFlushSlotsToJournal`: delete db 0's keys of `ranges`
    /// on every shard (no per-key records), then one `DFLYCLUSTER FLUSHSLOTS <s> <e>…` record,
    /// txid 0, on every shard's journal.
    pub(super) fn flush_slots(&self, ranges: &[SlotRange]) {
        if ranges.is_empty() {
            return;
        }
        let set = SlotSet::of(ranges);
        let mut args: Vec<Vec<u8>> = vec![b"DFLYCLUSTER".to_vec(), b"FLUSHSLOTS".to_vec()];
        for r in ranges {
            args.push(r.start.to_string().into_bytes());
            args.push(r.end.to_string().into_bytes());
        }
        let shard_cnt = match self.cfg.dialect {
            Dialect::V1_40 => 1,
            Dialect::V1_34 | Dialect::V1_36 => self.shards.len() as u64,
        };
        // A global transaction: every shard locked while it runs.
        let mut guards: Vec<MutexGuard<'_, Shard>> = self.shards.iter().map(|s| s.lock()).collect();
        for sh in guards.iter_mut() {
            let doomed: Vec<Vec<u8>> = sh
                .dbs
                .get(&0)
                .map(|ks| ks.keys().filter(|k| set.contains(cluster::key_slot(k))).cloned().collect())
                .unwrap_or_default();
            for k in &doomed {
                self.touch(sh, 0, k);
                if let Some(ks) = sh.dbs.get_mut(&0) {
                    ks.remove(k);
                }
            }
            self.journal(sh, 0, encode::J_COMMAND, 0, shard_cnt, &args, &mut None);
        }
    }

    /// The copy phase of a migration from this node to `target` (which must list it as
    /// incoming): every db-0 key of the slots is executed on the target as the commands
    /// Dragonfly's `CmdSerializer` sends, and from now on this node's writes to those slots are
    /// forwarded. Returns the keys copied.
    pub(super) fn migrate_to(&self, target: &Arc<Core>) -> Result<usize, String> {
        let (Some(cl), Some(tcl)) = (&self.cluster, &target.cluster) else {
            return Err("both nodes must run in cluster mode".into());
        };
        let mut st = cl.write();
        let tid = tcl.read().me.clone();
        let Some(job) = st.outgoing.iter().find(|j| j.peer == tid && !j.finished).cloned() else {
            return Err(format!("this node's layout lists no unfinished migration to {tid}; push one first"));
        };
        if !tcl.read().incoming.iter().any(|j| j.peer == st.me && j.slots == job.slots && !j.finished) {
            // Dragonfly's target answers DFLYMIGRATE INIT with UNKNOWN_MIGRATION until it has the layout.
            return Err(format!("node {tid} does not list the incoming migration from {}; push the layout to it too", st.me));
        }
        if st.forward.is_some() {
            return Err("a migration from this node is already copying".into());
        }
        let slots = SlotSet::of(&job.slots);
        let mut cmds: Vec<Argv> = Vec::new();
        let mut keys = 0;
        for s in &self.shards {
            let sh = s.lock();
            let Some(ks) = sh.dbs.get(&0) else { continue };
            let now = super::data::now_ms();
            for (k, e) in ks.iter().filter(|(k, e)| slots.contains(cluster::key_slot(k)) && !e.is_expired(now)) {
                cmds.extend(migration::copy_commands(k, e, self.cfg.chunk_size)?);
                keys += 1;
            }
        }
        for c in &cmds {
            let argv: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            target.write_unchecked(0, &argv).map_err(|e| format!("the target refused {:?}: {e}", String::from_utf8_lossy(&c[0])))?;
        }
        st.migrated_keys += keys as u64;
        self.forward_buf.lock().clear();
        st.forward = Some(Forward { target: target.clone(), peer: tid, slots });
        self.forwarding.store(true, Ordering::SeqCst);
        Ok(keys)
    }

    /// Finalization (`OutgoingMigration::FinalizeMigration`, the target's
    /// `ApplyMigrationSlotRangeToConfig`): with this node's writes paused, the target takes the
    /// slots, this node drops them and stops forwarding. Nothing is journaled and the layout
    /// both report is unchanged; this node keeps the keys until the next layout push.
    pub(super) fn finalize_to(&self, target: &Arc<Core>) -> Result<(), String> {
        let (Some(cl), Some(tcl)) = (&self.cluster, &target.cluster) else {
            return Err("both nodes must run in cluster mode".into());
        };
        let mut st = cl.write();
        let mut tst = tcl.write();
        let (me, tid) = (st.me.clone(), tst.me.clone());
        if st.forward.as_ref().is_none_or(|f| f.peer != tid) {
            return Err(format!("no migration to {tid} is copying; run the copy first"));
        }
        let Some(job) = st.outgoing.iter_mut().find(|j| j.peer == tid && !j.finished) else {
            return Err(format!("no unfinished migration to {tid}"));
        };
        job.finished = true;
        let slots = job.slots.clone();
        if let Some(tj) = tst.incoming.iter_mut().find(|j| j.peer == me && j.slots == slots) {
            tj.finished = true;
        }
        tst.mine.set(&slots, true);
        st.mine.set(&slots, false);
        st.forward = None;
        self.forwarding.store(false, Ordering::SeqCst);
        self.forward_buf.lock().clear();
        Ok(())
    }
}
