//! TCP side: the listener, one thread per connection, and the control-plane commands
//! (PING, AUTH, INFO, SELECT, REPLCONF, DFLY, and the write commands for demo clients).
//!
//! A connection becomes a *flow* connection with `DFLY FLOW`: its thread then only reads
//! `REPLCONF ACK` (never answered) and starts the flow's writer thread. Any close of a
//! session's connection cancels the session; how the replica closed each connection (EOF or
//! error) is recorded for the tests.
//!
//! With TLS configured ([`super::Config::tls`]) the listener is TLS only, as a Dragonfly
//! master started with `--tls` is: each connection thread runs the handshake first. The
//! flow sockets are then read by their connection thread and written by the flow's writer
//! thread through one shared session (`tls::Stream`).

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::commands::{self, NOT_INT, SYNTAX};
use super::engine::Core;
use super::flow::{self, Pipe};
use super::reads;
use super::resp::{self, ReadError};
use super::sessions::FlowGrant;
use super::{cluster, data, Dialect};
use crate::tls::Stream;

pub(crate) struct Server {
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Every open connection, to shut it down on stop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_conn: AtomicU64,
}

impl Server {
    pub fn start(core: Arc<Core>, port: u16) -> std::io::Result<Server> {
        let tls = match &core.cfg.tls {
            None => None,
            Some(f) => Some(crate::tls::server_config(&f.cert, &f.key, f.client_ca.as_deref()).map_err(std::io::Error::other)?),
        };
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let handle = std::thread::Builder::new().name("emu-listen".into()).spawn(move || {
            for conn in listener.incoming() {
                if core.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let id = sh.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
                let Ok(clone) = stream.try_clone() else { continue };
                sh.conns.lock().insert(id, clone);
                let (core, sh2, tls) = (core.clone(), sh.clone(), tls.clone());
                let spawned = std::thread::Builder::new().name(format!("emu-conn-{id}")).spawn(move || {
                    let stream = match &tls {
                        None => Ok(Stream::Plain(stream)),
                        Some(cfg) => crate::tls::accept(stream, cfg),
                    };
                    match stream {
                        Ok(stream) => Conn::new(core, id, stream).serve(),
                        Err(e) => log::info!("connection {id}: {e}"),
                    }
                    sh2.conns.lock().remove(&id);
                });
                match spawned {
                    Ok(h) => sh.threads.lock().push(h),
                    Err(e) => log::error!("cannot start a connection thread: {e}"),
                }
            }
        })?;
        Ok(Server { addr, listener: Some(handle), shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, cancel every session, shut every socket down, join every thread.
    pub fn stop(mut self, core: &Core) {
        core.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the listener sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        core.cancel_all();
        for s in self.shared.conns.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        loop {
            let batch: Vec<JoinHandle<()>> = std::mem::take(&mut *self.shared.threads.lock());
            if batch.is_empty() {
                break;
            }
            for h in batch {
                let _ = h.join();
            }
        }
    }
}

/// What the connection is to the replication protocol.
enum Role {
    Client,
    /// After `DFLY FLOW`: (session, flow index, the flow's pipe, its writer thread).
    Flow {
        sid: u32,
        flow: usize,
        pipe: Arc<Pipe>,
        writer: Option<JoinHandle<()>>,
    },
}

enum Outcome {
    Reply(Vec<u8>),
    Silent,
    /// Reply, then close the connection.
    Close(Vec<u8>),
}

struct Conn {
    core: Arc<Core>,
    id: u64,
    stream: Stream,
    authed: bool,
    db: u32,
    /// Sessions created by `capa dragonfly` on this connection.
    sessions: Vec<u32>,
    role: Role,
}

impl Conn {
    fn new(core: Arc<Core>, id: u64, stream: Stream) -> Self {
        let authed = core.cfg.password.is_none();
        Conn { core, id, stream, authed, db: 0, sessions: Vec::new(), role: Role::Client }
    }

    fn serve(mut self) {
        let Ok(read_half) = self.stream.try_clone() else { return };
        let mut reader = BufReader::with_capacity(16 * 1024, read_half);
        let clean = loop {
            let args = match resp::read_command(&mut reader) {
                Ok(Some(a)) => a,
                Ok(None) => break true,
                Err(ReadError::Io(e)) => {
                    log::debug!("connection {}: read error: {e}", self.id);
                    break false;
                }
                Err(ReadError::Protocol(m)) => {
                    let reply = resp::error(&format!("Protocol error: {m}"));
                    match &self.role {
                        Role::Flow { pipe, .. } => {
                            self.core.violation(format!("malformed bytes on a flow connection: {m}"));
                            pipe.push(&reply);
                        }
                        Role::Client => self.send(&reply),
                    }
                    break false;
                }
            };
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            if let Role::Flow { .. } = self.role {
                self.flow_command(&args);
                continue;
            }
            match self.command(&args) {
                Outcome::Reply(r) => self.send(&r),
                Outcome::Silent => {}
                Outcome::Close(r) => {
                    self.send(&r);
                    let _ = self.stream.shutdown(Shutdown::Both);
                    break true;
                }
            }
        };
        self.closed(clean);
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            log::debug!("connection {}: write error: {e}", self.id);
        }
    }

    /// The connection ended: cancel its sessions, wait for its flow writer.
    fn closed(self, clean: bool) {
        if !self.sessions.is_empty() {
            self.core.main_closed(&self.sessions, clean);
        }
        if let Role::Flow { sid, flow, writer, .. } = self.role {
            self.core.flow_closed(sid, flow, self.id, clean);
            if let Some(w) = writer {
                let _ = w.join();
            }
        }
    }

    /// After `DFLY FLOW` the replica may send nothing but `REPLCONF ACK <lsn>`, and gets no
    /// reply; anything else is answered into the data stream, as Dragonfly would.
    fn flow_command(&mut self, args: &[&[u8]]) {
        let Role::Flow { sid, flow, pipe, .. } = &self.role else { return };
        let is_ack =
            args.len() >= 2 && args[0].eq_ignore_ascii_case(b"REPLCONF") && args[1].eq_ignore_ascii_case(b"ACK");
        if is_ack && args.len() == 3 {
            match std::str::from_utf8(args[2]).ok().and_then(|s| s.parse::<u64>().ok()) {
                Some(lsn) => self.core.ack(*sid, *flow, self.id, lsn),
                None => self.core.violation(format!(
                    "flow {flow}: REPLCONF ACK with a non-numeric LSN {:?}",
                    String::from_utf8_lossy(args[2])
                )),
            }
            return;
        }
        let shown: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        self.core.violation(format!(
            "flow {flow}: {:?} sent on a flow connection (only REPLCONF ACK <lsn> is allowed)",
            shown.join(" ")
        ));
        let reply =
            if is_ack { resp::error(SYNTAX) } else { resp::error("ERR command not allowed on a replication flow") };
        pipe.push(&reply);
    }

    fn command(&mut self, args: &[&[u8]]) -> Outcome {
        let name = String::from_utf8_lossy(args[0]).to_ascii_uppercase();
        if !self.authed && name != "AUTH" && name != "QUIT" {
            return Outcome::Reply(resp::error("NOAUTH Authentication required."));
        }
        match name.as_str() {
            "PING" => Outcome::Reply(match args.get(1) {
                Some(m) => resp::bulk(m),
                None => resp::simple("PONG"),
            }),
            "QUIT" => Outcome::Close(resp::simple("OK")),
            "AUTH" => Outcome::Reply(self.auth(args)),
            "INFO" => Outcome::Reply(resp::bulk(self.info(args.get(1).copied()).as_bytes())),
            "SELECT" => {
                let n = args.get(1).and_then(|a| data::parse_i64(a));
                if self.core.cluster.is_some() && n.is_some_and(|n| n != 0) {
                    return Outcome::Reply(resp::error(cluster::SELECT_REFUSED));
                }
                Outcome::Reply(match n.and_then(|d| u32::try_from(d).ok()) {
                    Some(db) if args.len() == 2 => {
                        self.db = db;
                        resp::simple("OK")
                    }
                    _ => resp::error("ERR DB index is out of range"),
                })
            }
            "REPLCONF" => self.replconf(args),
            "DFLY" => self.dfly(args),
            "CLUSTER" => Outcome::Reply(self.cluster(args)),
            "DFLYCLUSTER" => Outcome::Reply(resp::error(match self.core.cluster {
                None => cluster::DFLYCLUSTER_DISABLED,
                Some(_) => "ERR the emulator takes layouts from Emulator::push_cluster_layout, not DFLYCLUSTER",
            })),
            _ if reads::is_read(&name) => {
                if let Some(st) = self.core.cluster_state() {
                    if let Err(e) = st.check_keys(self.db, &reads::keys(&name, args)) {
                        return Outcome::Reply(resp::error(&e));
                    }
                }
                Outcome::Reply(reads::execute(&self.core, self.db, args))
            }
            _ if commands::shape(&name).is_some() => Outcome::Reply(match self.core.write(self.db, args) {
                Ok(()) => resp::simple("OK"),
                Err(e) => resp::error(&e),
            }),
            _ => Outcome::Reply(resp::error(&format!("ERR unknown command '{}'", String::from_utf8_lossy(args[0])))),
        }
    }

    /// `CLUSTER <sub>` (`ClusterFamily::Cluster`).
    fn cluster(&self, args: &[&[u8]]) -> Vec<u8> {
        let Some(st) = self.core.cluster_state() else { return resp::error(cluster::DISABLED) };
        let Some(sub) = args.get(1) else {
            return resp::error("ERR wrong number of arguments for 'cluster' command");
        };
        let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
        if sub == "KEYSLOT" {
            return match args.len() {
                3 => resp::int(cluster::key_slot(args[2]) as i64),
                _ => resp::error("ERR wrong number of arguments for 'cluster keyslot' command"),
            };
        }
        if args.len() > 2 {
            return resp::error(&format!("ERR wrong number of arguments for 'cluster {}' command", sub.to_lowercase()));
        }
        let configured = !st.layout.is_empty();
        match sub.as_str() {
            "HELP" => cluster::help_reply(),
            "MYID" => resp::simple(&st.me),
            "SHARDS" if configured => cluster::shards_reply(&st.layout),
            "SLOTS" if configured => cluster::slots_reply(&st.layout),
            "NODES" if configured => cluster::nodes_reply(&st.layout, &st.me),
            "SHARDS" | "SLOTS" | "NODES" => resp::error(cluster::NOT_CONFIGURED),
            "INFO" => cluster::info_reply(&st.layout),
            _ => resp::error(&format!("ERR Unknown subcommand or wrong number of arguments for '{sub}'. Try CLUSTER HELP.")),
        }
    }

    fn auth(&mut self, args: &[&[u8]]) -> Vec<u8> {
        let Some(pass) = &self.core.cfg.password else {
            return resp::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        };
        let ok = match args.len() {
            2 => args[1] == pass.as_bytes(),
            3 => args[1] == b"default" && args[2] == pass.as_bytes(),
            _ => return resp::error(SYNTAX),
        };
        if ok {
            self.authed = true;
            resp::simple("OK")
        } else {
            resp::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    fn info(&self, section: Option<&[u8]>) -> String {
        let section = section.map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        let mut out = String::new();
        if section.as_deref().is_none_or(|s| s == "server" || s == "all") {
            out.push_str(&format!(
                "# Server\r\nredis_version:7.4.0\r\ndragonfly_version:{}\r\nredis_mode:standalone\r\narch_bits:64\r\ntcp_port:{}\r\n\r\n",
                self.core.cfg.dialect.version(),
                self.stream.local_addr().map_or(0, |a| a.port())
            ));
        }
        if section.as_deref().is_none_or(|s| s == "replication" || s == "all") {
            out.push_str(&format!(
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_replid:{}\r\n\r\n",
                self.core.replid
            ));
        }
        let wants = |name: &str| section.as_deref().is_none_or(|s| s == name || s == "all");
        if wants("memory") || wants("keyspace") {
            let (dbs, memory) = self.core.keyspace_stats();
            if wants("memory") {
                out.push_str(&format!("# Memory\r\nused_memory:{memory}\r\nused_memory_human:{:.2}M\r\n\r\n", memory as f64 / 1048576.0));
            }
            if wants("keyspace") {
                out.push_str("# Keyspace\r\n");
                for (db, (keys, expires)) in dbs {
                    out.push_str(&format!("db{db}:keys={keys},expires={expires},avg_ttl=0\r\n"));
                }
                out.push_str("\r\n");
            }
        }
        // Printed in every mode (`ServerFamily::FormatInfoMetrics`).
        if wants("cluster") {
            let st = self.core.cluster_state();
            out.push_str(&format!(
                "# Cluster\r\ncluster_enabled:{}\r\nmigration_errors_total:0\r\ntotal_migrated_keys:{}\r\n\r\n",
                u8::from(st.is_some()),
                st.map_or(0, |s| s.migrated_keys)
            ));
        }
        out
    }

    /// `REPLCONF <key> <value> ...` (protocol doc 3).
    fn replconf(&mut self, args: &[&[u8]]) -> Outcome {
        let kv = &args[1..];
        if kv.is_empty() || kv.len() % 2 != 0 {
            return Outcome::Reply(resp::error(SYNTAX));
        }
        if kv.len() == 2 && kv[0].eq_ignore_ascii_case(b"capa") && kv[1] == b"dragonfly" {
            let sid = self.core.new_session();
            self.sessions.push(sid);
            let cfg = &self.core.cfg;
            let mut reply = vec![
                resp::simple(&self.core.replid),
                resp::simple(&format!("SYNC{sid}")),
                resp::int(cfg.shards as i64),
            ];
            match cfg.dialect {
                Dialect::V1_40 => {
                    reply.push(resp::int(5));
                    reply.push(resp::simple(&self.core.replid));
                }
                Dialect::V1_34 | Dialect::V1_36 => reply.push(resp::int(4)),
            }
            return Outcome::Reply(resp::array(&reply));
        }
        for pair in kv.chunks(2) {
            let key = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
            match key.as_str() {
                "listening-port" => {
                    if data::parse_i64(pair[1]).is_none_or(|p| !(0..=65535).contains(&p)) {
                        return Outcome::Reply(resp::error(NOT_INT));
                    }
                }
                "ip-address" | "capa" | "client-id" => {}
                "client-version" => {
                    if self.sessions.is_empty() {
                        // A real master dereferences a null session here and crashes.
                        self.core.violation(
                            "REPLCONF CLIENT-VERSION before REPLCONF capa dragonfly: a real master crashes (null session)".into(),
                        );
                        return Outcome::Close(Vec::new());
                    }
                    if data::parse_i64(pair[1]).is_none() {
                        return Outcome::Reply(resp::error(NOT_INT));
                    }
                }
                "ack" => {
                    self.core.violation(
                        "REPLCONF ACK on the main connection: a real master never replies (the client hangs)".into(),
                    );
                    return Outcome::Silent;
                }
                _ => return Outcome::Reply(resp::error(SYNTAX)),
            }
        }
        Outcome::Reply(resp::simple("OK"))
    }

    /// `DFLY FLOW | SYNC | STARTSTABLE | REPLICAOFFSET | EXPIRE`.
    fn dfly(&mut self, args: &[&[u8]]) -> Outcome {
        let sub = args.get(1).map(|s| String::from_utf8_lossy(s).to_ascii_uppercase()).unwrap_or_default();
        let reply = |r: Result<(), String>| match r {
            Ok(()) => resp::simple("OK"),
            Err(e) => resp::error(&e),
        };
        match (sub.as_str(), args.len()) {
            ("FLOW", _) => self.start_flow(&args[2..]),
            ("SYNC", 3) => Outcome::Reply(reply(self.core.sync(args[2]))),
            ("STARTSTABLE", 3) => Outcome::Reply(reply(self.core.startstable(args[2]))),
            ("REPLICAOFFSET", 2) => {
                Outcome::Reply(resp::array(&self.core.lsns().iter().map(|l| resp::int(*l as i64)).collect::<Vec<_>>()))
            }
            ("EXPIRE", 2) => {
                self.core.expire_now();
                Outcome::Reply(resp::simple("OK"))
            }
            _ => Outcome::Reply(resp::error(&format!(
                "ERR Unknown subcommand or wrong number of arguments for '{sub}'. Try DFLY HELP."
            ))),
        }
    }

    /// `DFLY FLOW`: register the flow, answer `*2 +FULL|+PARTIAL +<token>`, start its writer.
    fn start_flow(&mut self, args: &[&[u8]]) -> Outcome {
        let FlowGrant { sid, flow, partial, token, pipe } = match self.core.register_flow(self.id, &self.stream, args) {
            Ok(g) => g,
            Err(e) => return Outcome::Reply(resp::error(&e)),
        };
        let kind = if partial { "PARTIAL" } else { "FULL" };
        self.send(&resp::array(&[resp::simple(kind), resp::simple(&token)]));
        // Without a writer the flow never gets data; the replica's wait will say so.
        let writer = self
            .stream
            .try_clone()
            .and_then(|sock| {
                let (core, p) = (self.core.clone(), pipe.clone());
                std::thread::Builder::new()
                    .name(format!("emu-flow-{flow}"))
                    .spawn(move || flow::run_writer(core, sid, flow, p, sock))
            })
            .map_err(|e| log::error!("cannot start the writer of flow {flow}: {e}"))
            .ok();
        self.role = Role::Flow { sid, flow, pipe, writer };
        Outcome::Silent
    }
}
