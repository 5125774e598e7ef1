//! A TLS session used from two threads per side at once, over loopback, with the test
//! certificates in `testdata/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::PathBuf;
use std::thread;

use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/tls/testdata").join(name)
}

fn client(server_name: Option<&str>) -> TlsClient {
    let settings = ClientSettings { ca: Some(testdata("ca.crt")), server_name: server_name.map(str::to_string), ..Default::default() };
    TlsClient::load("target", settings).unwrap()
}

/// A listener whose one connection is handed, after the handshake, to `serve`.
fn server(serve: impl FnOnce(io::Result<Stream>) + Send + 'static) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cfg = server_config(&testdata("server.crt"), &testdata("server.key"), None).unwrap();
    let h = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        serve(accept(tcp, &cfg));
    });
    (addr, h)
}

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

const BULK: usize = 6 << 20;
const ACKS: usize = 3000;

#[test]
fn a_reader_and_a_writer_share_one_session_on_each_side() {
    // Server: one thread streams BULK bytes while another reads the client's ACK lines from a
    // clone of the same stream; then close_notify and FIN.
    let (addr, srv) = server(|s| {
        let mut s = s.unwrap();
        let reader = s.try_clone().unwrap();
        let acks = thread::spawn(move || {
            let mut lines = BufReader::with_capacity(100, reader).lines();
            for i in 0..ACKS {
                assert_eq!(lines.next().unwrap().unwrap(), format!("REPLCONF ACK {i}"));
            }
            assert!(lines.next().is_none(), "end of the client's stream");
        });
        let data: Vec<u8> = (0..BULK).map(pattern).collect();
        for chunk in data.chunks(100_000) {
            s.write_all(chunk).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        acks.join().unwrap();
    });
    let mut s = connect(&addr, Duration::from_secs(5), Some(&client(None))).unwrap();
    assert!(s.is_tls());
    let mut w = s.try_clone().unwrap();
    let acker = thread::spawn(move || {
        for i in 0..ACKS {
            w.write_all(format!("REPLCONF ACK {i}\n").as_bytes()).unwrap();
        }
        w
    });
    // Reads of varying sizes, some smaller than a TLS record.
    let mut got = 0usize;
    let mut buf = vec![0u8; 70_000];
    let mut size = 1;
    loop {
        size = size * 3 % 69_997 + 1;
        let n = s.read(&mut buf[..size]).unwrap();
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(got + k), "byte {}", got + k);
        }
        got += n;
    }
    assert_eq!(got, BULK);
    let w = acker.join().unwrap();
    w.shutdown(Shutdown::Write).unwrap();
    srv.join().unwrap();
}

#[test]
fn a_tcp_end_without_close_notify_reads_as_the_end() {
    let (addr, srv) = server(|s| {
        let mut s = s.unwrap();
        s.write_all(b"+OK\r\n").unwrap();
        // FIN with no close_notify, as many servers close.
        s.tcp().shutdown(Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let mut s = connect(&addr, Duration::from_secs(5), Some(&client(Some("localhost")))).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"+OK\r\n");
    drop(s);
    srv.join().unwrap();
}

#[test]
fn a_certificate_for_another_name_is_refused_and_the_flags_named() {
    let (addr, srv) = server(|s| assert!(s.is_err(), "the client refuses the handshake"));
    let e = connect(&addr, Duration::from_secs(5), Some(&client(Some("redis.example")))).err().expect("refused");
    srv.join().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with(AUTH_FAILED), "{msg}");
    assert!(msg.contains("redis.example") && msg.contains("--target-tls-server-name") && msg.contains("--target-tls-ca"), "{msg}");
}

#[test]
fn settings_errors_name_the_setting_and_the_file() {
    let e = TlsClient::load("source", ClientSettings { cert: Some(testdata("server.crt")), ..Default::default() }).unwrap_err();
    assert!(e.contains("--source-tls-cert") && e.contains("--source-tls-key"), "{e}");
    let settings = ClientSettings { ca: Some(testdata("server.key")), ..Default::default() };
    let e = TlsClient::load("source", settings).unwrap_err();
    assert!(e.contains("--source-tls-ca") && e.contains("server.key") && e.contains("no certificate"), "{e}");
    let settings = ClientSettings {
        ca: Some(testdata("ca.crt")),
        cert: Some(testdata("server.crt")),
        key: Some(testdata("ca.crt")),
        ..Default::default()
    };
    let e = TlsClient::load("target", settings).unwrap_err();
    assert!(e.contains("--target-tls-key") && e.contains("ca.crt") && e.contains("no private key"), "{e}");
    let e = server_config(&testdata("server.crt"), &testdata("missing.key"), None).unwrap_err();
    assert!(e.contains("--tls-key") && e.contains("missing.key"), "{e}");
}
