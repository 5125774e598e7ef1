//! A fake Dragonfly master that serves a fixture capture: it answers the handshake as the
//! transcript shows, streams each flow's bytes after `DFLY SYNC`, holds back everything from
//! `startstable_sent_at` until `DFLY STARTSTABLE`, records ACKs, and tears the session down
//! when any connection closes (as a real master does).

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use df2redis::target::resp::{read_reply, Reply};

use super::Fixture;

#[derive(Clone, Default)]
pub struct Faults {
    /// Write flow bytes in segments of this size (TCP_NODELAY), e.g. 1.
    pub segment: Option<usize>,
    /// Replace the token in the FLOW reply of every flow (the stream then carries another one).
    pub wrong_token: bool,
    /// Close this flow after this many bytes.
    pub close_flow_after: Option<(usize, usize)>,
}

#[derive(Default)]
struct State {
    synced: bool,
    stable: bool,
    acks: Vec<u64>,
    /// How the main connection ended: Some(true) clean EOF, Some(false) error.
    main_closed_cleanly: Option<bool>,
    flows_closed: Vec<Option<bool>>,
    torn_down: bool,
    commands: Vec<String>,
}

pub struct CaptureMaster {
    pub port: u16,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl CaptureMaster {
    pub fn start(fx: &Fixture, faults: Faults) -> CaptureMaster {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let n = fx.num_flows();
        let state = Arc::new((
            Mutex::new(State { acks: vec![0; n], flows_closed: vec![None; n], ..Default::default() }),
            Condvar::new(),
        ));
        let flows: Arc<Vec<Vec<u8>>> = Arc::new((0..n).map(|i| fx.flow_bytes(i)).collect());
        let session = fx.session.clone();
        // INFO KEYSPACE as the master answered it at the capture: keys per db at STARTSTABLE.
        let keyspace: Arc<Vec<(u32, usize)>> = Arc::new(
            fx.expected()["at_startstable"].as_object().unwrap().iter().map(|(db, keys)| (db.parse().unwrap(), keys.as_object().unwrap().len())).collect(),
        );
        let st = state.clone();
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                conn.set_nodelay(true).unwrap();
                sockets.lock().unwrap().push(conn.try_clone().unwrap());
                let (st, flows, session, faults, sockets, ks) =
                    (st.clone(), flows.clone(), session.clone(), faults.clone(), sockets.clone(), keyspace.clone());
                thread::spawn(move || serve(conn, st, flows, session, faults, sockets, ks));
            }
        });
        CaptureMaster { port, state }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Wait (bounded) until `pred` holds for the state.
    fn wait(&self, timeout: Duration, mut pred: impl FnMut(&State) -> bool) -> bool {
        let (m, cv) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut s = m.lock().unwrap();
        while !pred(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
        true
    }

    /// Wait until every flow acknowledged at least `lsns`.
    pub fn wait_acks(&self, lsns: &[u64], timeout: Duration) -> Result<(), String> {
        if self.wait(timeout, |s| s.acks.iter().zip(lsns).all(|(a, l)| a >= l)) {
            Ok(())
        } else {
            Err(format!("ACKs {:?} did not reach {lsns:?}", self.acks()))
        }
    }

    pub fn acks(&self) -> Vec<u64> {
        self.state.0.lock().unwrap().acks.clone()
    }

    /// Wait until the replica closed the main connection and every flow; report how.
    pub fn wait_closed(&self, timeout: Duration) -> Result<(bool, Vec<Option<bool>>), String> {
        if !self.wait(timeout, |s| s.main_closed_cleanly.is_some() && s.flows_closed.iter().all(Option::is_some)) {
            let s = self.state.0.lock().unwrap();
            return Err(format!("connections still open: main {:?}, flows {:?}", s.main_closed_cleanly, s.flows_closed));
        }
        let s = self.state.0.lock().unwrap();
        Ok((s.main_closed_cleanly.unwrap(), s.flows_closed.clone()))
    }

    pub fn commands(&self) -> Vec<String> {
        self.state.0.lock().unwrap().commands.clone()
    }
}

fn update(st: &(Mutex<State>, Condvar), f: impl FnOnce(&mut State)) {
    f(&mut st.0.lock().unwrap());
    st.1.notify_all();
}

fn args_of(r: Reply) -> Option<Vec<String>> {
    match r {
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(|i| match i {
                Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn teardown(st: &(Mutex<State>, Condvar), sockets: &Mutex<Vec<TcpStream>>) {
    update(st, |s| s.torn_down = true);
    // Like Dragonfly's StopReplication: shut the session's sockets down from our side. Only the
    // write side, so that we can still see how the replica closes.
    for s in sockets.lock().unwrap().iter() {
        let _ = s.shutdown(Shutdown::Write);
    }
}

fn serve(
    conn: TcpStream,
    st: Arc<(Mutex<State>, Condvar)>,
    flows: Arc<Vec<Vec<u8>>>,
    session: serde_json::Value,
    faults: Faults,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    keyspace: Arc<Vec<(u32, usize)>>,
) {
    let mut out = conn.try_clone().unwrap();
    let mut inp = BufReader::new(conn);
    // A connection becomes the session's main connection with its first REPLCONF; before
    // that it is a client (df2redis's cluster probe: CLUSTER MYID, refused as by a Dragonfly
    // outside cluster mode), whose close ends nothing.
    let mut main = false;
    loop {
        let r = match read_reply(&mut inp) {
            Ok(r) => r,
            Err(_) if !main => return,
            Err(e) => {
                // The main connection closed (or reset): the session ends.
                let clean = e.kind() == std::io::ErrorKind::UnexpectedEof;
                update(&st, |s| s.main_closed_cleanly = Some(clean));
                teardown(&st, &sockets);
                return;
            }
        };
        let Some(args) = args_of(r) else { return };
        let up: Vec<String> = args.iter().map(|a| a.to_ascii_uppercase()).collect();
        let up: Vec<&str> = up.iter().map(String::as_str).collect();
        main |= matches!(up.first(), Some(&"REPLCONF") | Some(&"DFLY"));
        if main {
            update(&st, |s| s.commands.push(args.join(" ")));
        }
        let reply: Vec<u8> = match up.as_slice() {
            ["CLUSTER", ..] => b"-ERR Cluster is disabled. Enabled via passing --cluster_mode=emulated|yes\r\n".to_vec(),
            ["PING"] => b"+PONG\r\n".to_vec(),
            ["INFO", "KEYSPACE"] => {
                let v: String = keyspace.iter().map(|(db, n)| format!("db{db}:keys={n},expires=0,avg_ttl=0\r\n")).collect();
                let v = format!("# Keyspace\r\n{v}");
                format!("${}\r\n{v}\r\n", v.len()).into_bytes()
            }
            ["INFO", ..] => {
                let v = format!("# Server\r\ndragonfly_version:{}\r\n", session["dragonfly_version"].as_str().unwrap());
                format!("${}\r\n{v}\r\n", v.len()).into_bytes()
            }
            ["REPLCONF", "CAPA", "DRAGONFLY"] => {
                let replid = session["master_replid"].as_str().unwrap();
                let n = session["num_flows"].as_u64().unwrap();
                let v = session["dfly_version_ordinal"].as_u64().unwrap();
                let mut r = format!(
                    "*{}\r\n+{replid}\r\n+{}\r\n:{n}\r\n:{v}\r\n",
                    session["capa_reply_len"].as_u64().unwrap(),
                    session["sync_id"].as_str().unwrap()
                );
                if session["capa_reply_len"].as_u64() == Some(5) {
                    r.push_str(&format!("+{replid}\r\n"));
                }
                r.into_bytes()
            }
            ["REPLCONF", ..] => b"+OK\r\n".to_vec(),
            ["DFLY", "FLOW", _, _, i] => {
                let i: usize = i.parse().unwrap();
                let mut token = session["flows"][i]["eof_token"].as_str().unwrap().to_string();
                if faults.wrong_token {
                    token = token.chars().rev().collect();
                }
                out.write_all(format!("*2\r\n+FULL\r\n+{token}\r\n").as_bytes()).unwrap();
                return flow(i, out, inp, st, flows, session, faults, sockets);
            }
            ["DFLY", "SYNC", _] => {
                update(&st, |s| s.synced = true);
                b"+OK\r\n".to_vec()
            }
            ["DFLY", "STARTSTABLE", _] => {
                update(&st, |s| s.stable = true);
                b"+OK\r\n".to_vec()
            }
            _ => format!("-ERR unknown command {:?}\r\n", args).into_bytes(),
        };
        // A failed write means the teardown shut our side down (a flow ended meanwhile): keep
        // reading, to see how the replica closes the main connection.
        let _ = out.write_all(&reply);
    }
}

#[allow(clippy::too_many_arguments)]
fn flow(
    i: usize,
    mut out: TcpStream,
    mut inp: BufReader<TcpStream>,
    st: Arc<(Mutex<State>, Condvar)>,
    flows: Arc<Vec<Vec<u8>>>,
    session: serde_json::Value,
    faults: Faults,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
) {
    // Reader side: ACKs, and how the replica closes.
    let st2 = st.clone();
    let sockets2 = sockets.clone();
    thread::spawn(move || loop {
        match read_reply(&mut inp) {
            Ok(r) => {
                let a = args_of(r).unwrap_or_default();
                if a.len() == 3 && a[0].eq_ignore_ascii_case("REPLCONF") && a[1].eq_ignore_ascii_case("ACK") {
                    let v: u64 = a[2].parse().unwrap();
                    update(&st2, |s| s.acks[i] = v);
                } else {
                    update(&st2, |s| s.commands.push(format!("VIOLATION on flow {i}: {a:?}")));
                }
            }
            Err(e) => {
                let clean = e.kind() == std::io::ErrorKind::UnexpectedEof;
                update(&st2, |s| s.flows_closed[i] = Some(clean));
                teardown(&st2, &sockets2);
                return;
            }
        }
    });
    let bytes = &flows[i];
    let hold = session["phases"]["startstable_sent_at"][i].as_u64().unwrap() as usize;
    let wait_for = |pred: &dyn Fn(&State) -> bool| {
        let (m, cv) = &*st;
        let mut s = m.lock().unwrap();
        while !pred(&s) && !s.torn_down {
            s = cv.wait(s).unwrap();
        }
        !s.torn_down
    };
    let mut send = |range: std::ops::Range<usize>| -> bool {
        let seg = faults.segment.unwrap_or(64 * 1024);
        let end = match faults.close_flow_after {
            Some((f, at)) if f == i => range.end.min(at),
            _ => range.end,
        };
        for chunk in bytes[range.start.min(end)..end].chunks(seg) {
            if out.write_all(chunk).is_err() {
                return false;
            }
        }
        if matches!(faults.close_flow_after, Some((f, at)) if f == i && at <= range.end) {
            let _ = out.shutdown(Shutdown::Both);
            return false;
        }
        true
    };
    if !wait_for(&|s| s.synced) || !send(0..hold) {
        return;
    }
    if !wait_for(&|s| s.stable) {
        return;
    }
    send(hold..bytes.len());
}
