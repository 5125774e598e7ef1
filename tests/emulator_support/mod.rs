//! A minimal replica for driving the emulator in tests: a RESP client, the handshake, flow
//! readers that decode with `df2redis::protocol::FlowDecoder` as bytes arrive, and a model
//! replica that applies what was decoded so it can be compared with `Emulator::data()`.
//!
//! Nothing here sleeps: waits are channel receives and condition waits with deadlines, and a
//! failed wait says what it was waiting for.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use df2redis::emulator::commands;
use df2redis::emulator::data::{self as emu_data, Keyspace};
use df2redis::emulator::{Entry, Stream, StreamRecord, Value};
use df2redis::protocol::{EntryHead, FlowDecoder, Item, JournalRecord, Limits, Piece, RecordKind};

pub const WAIT: Duration = Duration::from_secs(20);

// ---- RESP client ------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) => "(nil)".into(),
            Reply::Array(a) => format!("{a:?}"),
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the emulator");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Send a command as a RESP array and read its reply.
    pub fn call(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        self.read_reply().unwrap_or_else(|e| panic!("reply to {args:?}: {e}"))
    }

    pub fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn read_reply(&mut self) -> Result<Reply, String> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let text = String::from_utf8_lossy(&line[1..line.len().saturating_sub(2)]).into_owned();
        Ok(match line[0] {
            b'+' => Reply::Simple(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(text.parse().map_err(|_| format!("bad integer {text}"))?),
            b'$' => {
                let len: i64 = text.parse().map_err(|_| format!("bad bulk length {text}"))?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut b).map_err(|e| e.to_string())?;
                    b.truncate(len as usize);
                    Reply::Bulk(Some(b))
                }
            }
            b'*' => {
                let n: i64 = text.parse().map_err(|_| format!("bad array length {text}"))?;
                let mut v = Vec::new();
                for _ in 0..n.max(0) {
                    v.push(self.read_reply()?);
                }
                Reply::Array(v)
            }
            other => return Err(format!("unexpected reply byte {:?}", other as char)),
        })
    }

    /// True if the server closed the connection (EOF) before the deadline.
    pub fn sees_eof(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

// ---- handshake -----------------------------------------------------------------------------------

pub struct Master {
    pub main: Client,
    pub replid: String,
    pub sync_id: String,
    pub num_flows: usize,
    pub capa: Vec<Reply>,
    addr: SocketAddr,
    password: Option<String>,
}

/// PING, REPLCONF listening-port / capa eof psync2 / capa dragonfly, as a Dragonfly replica.
pub fn handshake(addr: SocketAddr, password: Option<&str>) -> Master {
    let mut main = Client::connect(addr);
    if let Some(p) = password {
        assert_eq!(main.call(&["AUTH", p]), Reply::Simple("OK".into()));
    }
    assert_eq!(main.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(main.call(&["REPLCONF", "listening-port", "6380"]), Reply::Simple("OK".into()));
    assert_eq!(main.call(&["REPLCONF", "capa", "eof", "capa", "psync2"]), Reply::Simple("OK".into()));
    let Reply::Array(capa) = main.call(&["REPLCONF", "capa", "dragonfly"]) else {
        panic!("capa dragonfly reply is not an array")
    };
    let replid = capa[0].text();
    let sync_id = capa[1].text();
    let Reply::Int(n) = capa[2] else { panic!("num_flows {:?}", capa[2]) };
    Master { main, replid, sync_id, num_flows: n as usize, capa, addr, password: password.map(str::to_string) }
}

impl Master {
    /// Open every flow (`DFLY FLOW`, with `lsns[i]` for a partial attempt).
    pub fn open_flows(&self, lsns: Option<&[u64]>) -> Vec<Flow> {
        (0..self.num_flows).map(|i| self.open_flow(i, lsns.map(|l| l[i]))).collect()
    }

    pub fn open_flow(&self, i: usize, lsn: Option<u64>) -> Flow {
        self.open_flow_in(i, lsn, false)
    }

    /// Open every flow with `lsns[i]` against a v1.34 master: a PARTIAL flow's stream is
    /// decoded in that dialect (header, numbered journal blobs, FULLSYNC_END, ...).
    pub fn open_flows_v134(&self, lsns: &[u64]) -> Vec<Flow> {
        (0..self.num_flows).map(|i| self.open_flow_in(i, Some(lsns[i]), true)).collect()
    }

    fn open_flow_in(&self, i: usize, lsn: Option<u64>, v134: bool) -> Flow {
        let mut c = Client::connect(self.addr);
        if let Some(p) = &self.password {
            assert_eq!(c.call(&["AUTH", p]), Reply::Simple("OK".into()));
        }
        let idx = i.to_string();
        let lsn_s = lsn.map(|l| l.to_string());
        let mut args = vec!["DFLY", "FLOW", self.replid.as_str(), self.sync_id.as_str(), idx.as_str()];
        if let Some(l) = &lsn_s {
            args.push(l);
        }
        let reply = c.call(&args);
        let Reply::Array(r) = reply else { panic!("DFLY FLOW {i}: {reply:?}") };
        let (kind, token) = (r[0].text(), r[1].text());
        let decoder = match (kind.as_str(), lsn) {
            ("PARTIAL", Some(l)) if v134 => {
                FlowDecoder::partial_v134(Some(i as u32), Some(token.clone().into_bytes()), l, Limits::default())
            }
            ("PARTIAL", Some(l)) => FlowDecoder::partial(Some(i as u32), l, Limits::default()),
            _ => FlowDecoder::new(Some(i as u32), Some(token.clone().into_bytes()), Limits::default()),
        };
        Flow::start(i, kind, token, c, decoder)
    }

    pub fn sync(&mut self) -> Reply {
        let id = self.sync_id.clone();
        self.main.call(&["DFLY", "SYNC", &id])
    }

    pub fn startstable(&mut self) -> Reply {
        let id = self.sync_id.clone();
        self.main.call(&["DFLY", "STARTSTABLE", &id])
    }
}

// ---- flows ---------------------------------------------------------------------------------------

enum Event {
    Data {
        raw: Vec<u8>,
        items: Vec<Item>,
    },
    Failed(String),
    /// The master closed the flow (EOF); whether the decoder accepted the end.
    Closed(Result<(), String>),
}

/// One flow connection: a thread reads and decodes, the test consumes items in order.
pub struct Flow {
    pub index: usize,
    pub kind: String,
    pub token: String,
    sock: TcpStream,
    rx: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
    /// Everything received so far.
    pub raw: Vec<u8>,
    /// Everything decoded so far, in order.
    pub items: Vec<Item>,
    pub closed: Option<Result<(), String>>,
    pub failed: Option<String>,
    no_fin: bool,
}

impl Flow {
    fn start(index: usize, kind: String, token: String, c: Client, mut decoder: FlowDecoder) -> Flow {
        let sock = c.stream.try_clone().unwrap();
        sock.set_read_timeout(None).unwrap();
        let mut reader = c.reader;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("test-flow-{index}"))
            .spawn(move || loop {
                let n = match reader.fill_buf() {
                    Ok([]) => {
                        let _ = tx.send(Event::Closed(decoder.finish().map_err(|e| e.to_string())));
                        return;
                    }
                    Ok(b) => b.len(),
                    Err(e) => {
                        let _ = tx.send(Event::Failed(format!("read: {e}")));
                        return;
                    }
                };
                let raw = reader.buffer()[..n].to_vec();
                reader.consume(n);
                let mut items = Vec::new();
                let r = decoder.feed(&raw, &mut items);
                let _ = tx.send(Event::Data { raw, items });
                if let Err(e) = r {
                    let _ = tx.send(Event::Failed(format!("decode: {e}")));
                    // Keep draining so the master never blocks on us.
                    let mut sink = [0u8; 65536];
                    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                    let _ = tx.send(Event::Closed(Err("decoder failed earlier".into())));
                    return;
                }
            })
            .unwrap();
        Flow {
            index,
            kind,
            token,
            sock,
            rx,
            thread: Some(thread),
            raw: Vec::new(),
            items: Vec::new(),
            closed: None,
            failed: None,
            no_fin: false,
        }
    }

    fn absorb(&mut self, ev: Event) {
        match ev {
            Event::Data { raw, items } => {
                self.raw.extend(raw);
                self.items.extend(items);
            }
            Event::Failed(e) => self.failed = Some(e),
            Event::Closed(r) => self.closed = Some(r),
        }
    }

    /// Wait until an item satisfying `pred` has been decoded (searching from `from`); returns
    /// its index.
    pub fn wait_item(&mut self, from: usize, what: &str, pred: impl Fn(&Item) -> bool) -> usize {
        let deadline = Instant::now() + WAIT;
        let mut checked = from;
        loop {
            if let Some(i) = self.items[checked.min(self.items.len())..].iter().position(&pred) {
                return checked + i;
            }
            checked = checked.max(self.items.len());
            if let Some(e) = &self.failed {
                panic!("flow {}: {e} (while waiting for {what})", self.index);
            }
            if self.closed.is_some() {
                panic!("flow {}: closed by the master while waiting for {what}", self.index);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => self.absorb(ev),
                Err(RecvTimeoutError::Timeout) => panic!("flow {}: timed out waiting for {what}", self.index),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("flow {}: reader ended while waiting for {what}", self.index)
                }
            }
        }
    }

    pub fn wait_fullsync_end(&mut self) -> usize {
        self.wait_item(0, "FULLSYNC_END", |i| matches!(i, Item::FullSyncEnd))
    }

    pub fn wait_token(&mut self) -> usize {
        self.wait_item(0, "the eof token", |i| matches!(i, Item::Token(_)))
    }

    /// Wait for the stable-sync record with this LSN.
    pub fn wait_lsn(&mut self, lsn: u64) -> usize {
        self.wait_item(0, &format!("journal record LSN {lsn}"), |i| matches!(i, Item::Journal(r) if r.lsn == Some(lsn)))
    }

    /// Wait until the master closes the flow; returns the decoder's verdict on the end.
    pub fn wait_closed(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => self.absorb(ev),
                Err(e) => panic!("flow {}: waiting for the master to close it: {e:?}", self.index),
            }
        }
        self.closed.clone().unwrap()
    }

    /// Wait until the reader reported a decode failure; returns it.
    pub fn wait_failed(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        while self.failed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => self.absorb(ev),
                Err(e) => {
                    panic!("flow {}: waiting for a decode failure: {e:?} (items: {})", self.index, self.items.len())
                }
            }
        }
        self.failed.clone().unwrap()
    }

    pub fn ack(&mut self, lsn: u64) {
        let msg = format!("REPLCONF ACK {lsn}\r\n");
        self.sock.write_all(msg.as_bytes()).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    /// The decoder's next LSN after everything decoded (what an ACK would carry).
    pub fn next_lsn(&self) -> Option<u64> {
        let mut next = self.items.iter().find_map(|i| match i {
            Item::JournalOffset(l) => Some(*l),
            _ => None,
        });
        for i in &self.items {
            if let Item::Journal(JournalRecord { lsn: Some(l), .. }) = i {
                next = Some(l + 1);
            }
        }
        next
    }

    pub fn journal_offset(&self) -> Option<u64> {
        self.items.iter().find_map(|i| match i {
            Item::JournalOffset(l) => Some(*l),
            _ => None,
        })
    }

    /// Stable-sync records decoded so far.
    pub fn stable_records(&self) -> Vec<&JournalRecord> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Journal(r) if r.lsn.is_some() => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Close the flow abruptly with a TCP reset (SO_LINGER 0, close without FIN).
    pub fn reset(mut self) {
        socket2::SockRef::from(&self.sock).set_linger(Some(Duration::ZERO)).unwrap();
        // Unblock the reader thread so its handle on the socket goes away; then the last
        // close sends RST.
        let _ = self.sock.shutdown(Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.no_fin = true;
    }

    /// Read to the master's EOF, then close: the clean way out after the main connection
    /// closed.
    pub fn drain_and_close(mut self) {
        let _ = self.wait_closed();
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        if !self.no_fin {
            let _ = self.sock.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A full sync of every flow: FLOW, SYNC, wait for FULLSYNC_END, STARTSTABLE, wait for the
/// tokens.
pub fn full_sync(master: &mut Master) -> Vec<Flow> {
    let mut flows = master.open_flows(None);
    for f in &flows {
        assert_eq!(f.kind, "FULL", "flow {}", f.index);
    }
    assert_eq!(master.sync(), Reply::Simple("OK".into()));
    for f in flows.iter_mut() {
        f.wait_fullsync_end();
    }
    assert_eq!(master.startstable(), Reply::Simple("OK".into()));
    for f in flows.iter_mut() {
        f.wait_token();
    }
    flows
}

/// Graceful shutdown (protocol doc 10): FIN on main, drain every flow to EOF, close.
pub fn close_gracefully(master: Master, flows: Vec<Flow>) {
    master.main.stream.shutdown(Shutdown::Write).unwrap();
    for f in flows {
        f.drain_and_close();
    }
    drop(master);
}

// ---- a model replica -------------------------------------------------------------------------------

/// What a replica holds after applying decoded items: snapshot entries and journal records,
/// in stream order per flow.
#[derive(Default)]
pub struct Replica {
    pub dbs: BTreeMap<u32, Keyspace>,
    open: HashMap<*const EntryHead, (Arc<EntryHead>, Value)>,
}

impl Replica {
    pub fn apply_all(&mut self, items: &[Item]) {
        for i in items {
            self.apply(i);
        }
    }

    pub fn apply(&mut self, item: &Item) {
        match item {
            Item::Value(v) => {
                let key = Arc::as_ptr(&v.head);
                if v.first {
                    self.open.insert(key, (v.head.clone(), empty_value(v.head.rdb_type)));
                }
                let (_, val) = self.open.get_mut(&key).expect("first piece seen");
                add_piece(val, &v.piece, v.head.rdb_type);
                if v.last {
                    let (head, val) = self.open.remove(&key).unwrap();
                    let e = Entry { value: val, expire_at_ms: head.expire_at_ms, sticky: head.sticky };
                    self.dbs.entry(head.db).or_default().insert(head.key.clone(), e);
                }
            }
            Item::Journal(r) => self.record(r),
            _ => {}
        }
    }

    /// Apply one journal record with the emulator's own command semantics.
    pub fn record(&mut self, r: &JournalRecord) {
        if r.kind == RecordKind::Ping {
            return;
        }
        let args: Vec<&[u8]> = r.argv.iter().collect();
        let name = r.argv.name_upper();
        let ks = self.dbs.entry(r.db).or_default();
        match name.as_str() {
            "DEL" | "UNLINK" => {
                for k in &args[1..] {
                    ks.remove(*k);
                }
            }
            "MSET" => {
                for p in args[1..].chunks(2) {
                    ks.insert(p[0].to_vec(), Entry::new(Value::String(p[1].to_vec())));
                }
            }
            "FLUSHDB" => {
                ks.clear();
            }
            "FLUSHALL" => self.dbs.clear(),
            _ => {
                commands::apply(ks, emu_data::now_ms(), &args).unwrap_or_else(|e| panic!("applying {:?}: {e}", r.argv));
            }
        }
    }

    /// The dataset without expired keys and empty dbs, comparable with [`normalize`].
    pub fn data(&self) -> BTreeMap<u32, BTreeMap<Vec<u8>, Entry>> {
        let now = emu_data::now_ms();
        let mut out: BTreeMap<u32, BTreeMap<Vec<u8>, Entry>> = BTreeMap::new();
        for (db, ks) in &self.dbs {
            for (k, e) in ks {
                if !e.is_expired(now) {
                    out.entry(*db).or_default().insert(k.clone(), e.clone());
                }
            }
        }
        out.retain(|_, m| !m.is_empty());
        out
    }
}

fn empty_value(ty: u8) -> Value {
    use df2redis::protocol::rdb_type as t;
    match ty {
        t::STRING => Value::String(Vec::new()),
        t::LIST_QUICKLIST_2 => Value::List(Default::default()),
        t::SET | t::SET_INTSET => Value::Set(Default::default()),
        t::HASH | t::HASH_LISTPACK => Value::Hash(Default::default()),
        t::ZSET_2 | t::ZSET_LISTPACK => Value::Zset(Default::default()),
        t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3 => Value::Stream(Stream::default()),
        t::JSON => Value::Json(Vec::new()),
        t::HASH_WITH_EXPIRY => Value::HashTtl(Default::default()),
        t::SET_WITH_EXPIRY => Value::SetTtl(Default::default()),
        other => Value::Opaque { rdb_type: other, bytes: Vec::new() },
    }
}

fn add_piece(val: &mut Value, piece: &Piece, ty: u8) {
    match (val, piece) {
        (Value::String(s), Piece::String(p)) | (Value::Json(s), Piece::Json(p)) => s.extend_from_slice(p),
        (Value::List(l), Piece::ListElems(e)) => l.extend(e.iter().cloned()),
        (Value::Set(s), Piece::SetMembers(m)) => s.extend(m.iter().cloned()),
        (Value::Hash(h), Piece::HashFields(f)) => h.extend(f.iter().cloned()),
        (Value::Zset(z), Piece::ZsetMembers(m)) => z.extend(m.iter().cloned()),
        (Value::HashTtl(h), Piece::HashFieldsTtl(f)) => {
            h.extend(f.iter().map(|(k, v, t)| (k.clone(), (v.clone(), t.map(|s| s as u64)))))
        }
        (Value::SetTtl(s), Piece::SetMembersTtl(m)) => {
            s.extend(m.iter().map(|(k, t)| (k.clone(), t.map(|s| s as u64))))
        }
        (Value::Stream(s), Piece::StreamEntries(e)) => {
            for x in e {
                let fields = x.fields.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                s.entries.insert(x.id, StreamRecord { fields, deleted: false });
            }
        }
        (Value::Stream(s), Piece::StreamMeta(m)) => {
            s.last_id = m.last_id;
            s.max_deleted_id = m.max_deleted_id;
            s.entries_added = m.entries_added;
            assert_eq!(m.length, s.entries.len() as u64, "stream length in the metadata");
            assert_eq!(m.first_id, s.entries.keys().next().copied().unwrap_or_default(), "stream first id");
        }
        (Value::Stream(s), Piece::StreamGroup(g)) => {
            let pel = g
                .pending
                .iter()
                .map(|p| {
                    let consumer = p.consumer.clone().expect("every pending entry has a consumer");
                    (
                        p.id,
                        emu_data::Pending {
                            consumer,
                            delivery_time_ms: p.delivery_time_ms,
                            delivery_count: p.delivery_count,
                        },
                    )
                })
                .collect();
            let consumers = g
                .consumers
                .iter()
                .map(|c| emu_data::Consumer {
                    name: c.name.clone(),
                    seen_time_ms: c.seen_time_ms,
                    active_time_ms: c.active_time_ms.unwrap_or(0),
                })
                .collect();
            s.groups.push(emu_data::Group {
                name: g.name.clone(),
                last_id: g.last_id,
                entries_read: g.entries_read.map_or(-1, |v| v as i64),
                pel,
                consumers,
            });
        }
        (Value::Opaque { bytes, .. }, Piece::Opaque(n)) => bytes.resize(*n as usize, 0),
        (v, p) => panic!("piece {p:?} does not fit a value of RDB type {ty} ({})", v.type_name()),
    }
}

/// The master's data as a replica can see it: stream tombstones dropped (they are not
/// replicated as entries), opaque payloads reduced to their length (the decoder skips them).
pub fn normalize(data: BTreeMap<u32, BTreeMap<Vec<u8>, Entry>>) -> BTreeMap<u32, BTreeMap<Vec<u8>, Entry>> {
    let mut data = data;
    for ks in data.values_mut() {
        for e in ks.values_mut() {
            match &mut e.value {
                Value::Stream(s) => s.entries.retain(|_, r| !r.deleted),
                Value::Opaque { bytes, .. } => bytes.iter_mut().for_each(|b| *b = 0),
                _ => {}
            }
        }
    }
    data
}

/// Compare two datasets key by key, with a readable failure.
pub fn assert_same(
    what: &str,
    got: &BTreeMap<u32, BTreeMap<Vec<u8>, Entry>>,
    want: &BTreeMap<u32, BTreeMap<Vec<u8>, Entry>>,
) {
    let keys = |d: &BTreeMap<u32, BTreeMap<Vec<u8>, Entry>>| -> Vec<(u32, Vec<u8>)> {
        d.iter().flat_map(|(db, m)| m.keys().map(move |k| (*db, k.clone()))).collect()
    };
    let (gk, wk) = (keys(got), keys(want));
    let missing: Vec<_> =
        wk.iter().filter(|k| !gk.contains(k)).map(|(d, k)| format!("{d}:{}", String::from_utf8_lossy(k))).collect();
    let extra: Vec<_> =
        gk.iter().filter(|k| !wk.contains(k)).map(|(d, k)| format!("{d}:{}", String::from_utf8_lossy(k))).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing keys {missing:?}, unexpected keys {extra:?}");
    for (db, m) in want {
        for (k, e) in m {
            let g = &got[db][k];
            assert!(
                g == e,
                "{what}: db {db} key {:?} differs:\n got  {}\n want {}",
                String::from_utf8_lossy(k),
                short(g),
                short(e)
            );
        }
    }
}

fn short(e: &Entry) -> String {
    let s = format!("{e:?}");
    if s.len() > 600 {
        format!("{}... ({} chars)", &s[..600], s.len())
    } else {
        s
    }
}

/// Top-level opcode counts of a flow's raw bytes (decoded again from the start).
pub fn opcode_counts(f: &Flow) -> Vec<u64> {
    let mut d = match f.kind.as_str() {
        "FULL" => FlowDecoder::new(None, Some(f.token.clone().into_bytes()), Limits::default()),
        _ => return vec![0; 256],
    };
    let mut out = Vec::new();
    d.feed(&f.raw, &mut out).expect("raw bytes decode again");
    d.counts().0.to_vec()
}

/// Whether a second entry started while another was still open (interleaved tagged chunks).
pub fn saw_interleaved_entries(items: &[Item]) -> bool {
    let mut open: Vec<*const EntryHead> = Vec::new();
    for i in items {
        if let Item::Value(v) = i {
            let p = Arc::as_ptr(&v.head);
            if v.first && !v.last && !open.is_empty() {
                return true;
            }
            if v.first && !v.last {
                open.push(p);
            }
            if v.last {
                open.retain(|x| *x != p);
            }
        }
    }
    false
}

/// AUX field names in order.
pub fn aux_names(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Aux { name, .. } => Some(String::from_utf8_lossy(name).into_owned()),
            _ => None,
        })
        .collect()
}

pub fn aux_value(items: &[Item], name: &str) -> Option<String> {
    items.iter().find_map(|i| match i {
        Item::Aux { name: n, value } if n == name.as_bytes() => Some(String::from_utf8_lossy(value).into_owned()),
        _ => None,
    })
}
