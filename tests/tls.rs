//! TLS and ACL on both sides. The source is the emulator's TLS listener (as a
//! Dragonfly master started with `--tls`, and with `--tls_ca_cert_file`: client certificates
//! required), the target a redis-server listening on TLS only (`--port 0 --tls-port`), and a
//! 3-master cluster with `tls-cluster yes`. Certificates are made by the test with the openssl
//! command line. The target is read back through a small TLS proxy built on df2redis's own
//! TLS code (the tests' Redis client speaks plain TCP).

mod common;

use std::collections::BTreeSet;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::emulator_model::expected;
use common::live::{journal_writer, wait_acked_beyond};
use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, free_port, read_all, spawn_ready, TempDir};
use common::run::{df2redis, terminate, text};
use df2redis::emulator::{datasets, Config, Emulator, TlsServerFiles};
use df2redis::tls::{ClientSettings, TlsClient};

const MINUTE: Duration = Duration::from_secs(60);

/// A CA, a server certificate it signed for 127.0.0.1 and localhost (also usable as a client
/// certificate, as Redis uses it on its cluster bus), a client certificate, and an unrelated CA.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: TempDir::new("tls-pki") };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (ca, cn) in [("ca", "df2redis test CA"), ("other-ca", "another CA")] {
            let (key, crt, subj) = (format!("{ca}.key"), format!("{ca}.crt"), format!("/CN={cn}"));
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            pki.openssl(&args);
        }
        let exts = [
            ("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
            ("client", "/CN=df2redis", "extendedKeyUsage=clientAuth\n"),
        ];
        for (name, subj, ext) in exts {
            let (key, csr, crt, extf) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
            std::fs::write(pki.dir.0.join(&extf), format!("{ext}basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")).unwrap();
            let mut args = vec!["req", "-new"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
            pki.openssl(&args);
            pki.openssl(&[
                "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", &crt, "-days", "2",
                "-extfile", &extf,
            ]);
        }
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(&self.dir.0).stdin(Stdio::null()).output().expect("the openssl command line");
        assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }

    fn path(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }

    fn emulator(&self, client_ca: bool) -> TlsServerFiles {
        TlsServerFiles {
            cert: self.path("server.crt").into(),
            key: self.path("server.key").into(),
            client_ca: client_ca.then(|| PathBuf::from(self.path("ca.crt"))),
        }
    }

    /// The TLS settings for the target as a client certificate holder.
    fn client(&self) -> TlsClient {
        let settings = ClientSettings {
            ca: Some(self.path("ca.crt").into()),
            cert: Some(self.path("client.crt").into()),
            key: Some(self.path("client.key").into()),
            server_name: None,
        };
        TlsClient::load("target", settings).unwrap()
    }

    /// df2redis flags presenting the client certificate to `side`, trusting `ca`.
    fn flags(&self, side: &str, ca: &str) -> Vec<String> {
        vec![
            format!("--{side}-tls-ca"),
            self.path(ca),
            format!("--{side}-tls-cert"),
            self.path("client.crt"),
            format!("--{side}-tls-key"),
            self.path("client.key"),
        ]
    }

    /// redis-server arguments for a TLS listener on `port` with these certificates.
    fn redis_args(&self, port: u16) -> Vec<String> {
        let mut v: Vec<String> = vec!["--tls-port".into(), port.to_string()];
        for (flag, file) in [("--tls-cert-file", "server.crt"), ("--tls-key-file", "server.key"), ("--tls-ca-cert-file", "ca.crt")] {
            v.push(flag.into());
            v.push(self.path(file));
        }
        v
    }
}

/// A redis-server listening on TLS only (`--port 0 --tls-port`), stopped by its PID on drop.
struct TlsRedis {
    port: u16,
    child: Child,
    _dir: TempDir,
}

impl TlsRedis {
    fn start(pki: &Pki, extra: &[&str]) -> TlsRedis {
        for _attempt in 0..5 {
            let port = free_port();
            let dir = TempDir::new("redis-tls");
            let mut args = vec!["--port".to_string(), "0".into()];
            args.extend(pki.redis_args(port));
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // spawn_ready's own --port is overridden by the --port 0 that follows it.
            if let Some(child) = spawn_ready(port, &dir.0, &args) {
                return TlsRedis { port, child, _dir: dir };
            }
        }
        panic!("redis-server did not start with TLS on a free port after 5 attempts");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-TCP loopback port that forwards each connection to a TLS server through
/// df2redis's TLS code (two threads per connection, one session: the design under test).
struct TlsProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    fn start(to: String, tls: TlsClient) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let h = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(plain) = conn else { continue };
                let server = df2redis::tls::connect(&to, Duration::from_secs(10), Some(&tls)).unwrap();
                let (mut p_in, mut p_out) = (plain.try_clone().unwrap(), plain);
                let (mut s_in, mut s_out) = (server.try_clone().unwrap(), server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut p_in, &mut s_out);
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_in, &mut p_out);
                    let _ = p_out.shutdown(Shutdown::Write);
                });
            }
        });
        TlsProxy { port, stop, listener: Some(h) }
    }

    /// A plain Redis connection through the proxy, authenticated with `password` if given.
    fn conn(&self, password: Option<&str>) -> redis::Connection {
        let auth = password.map_or(String::new(), |p| format!(":{p}@"));
        redis::Client::open(format!("redis://{auth}127.0.0.1:{}/", self.port)).unwrap().get_connection().unwrap()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
    }
}

fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    df2redis(&args).wait_with_output().unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The target holds the emulator's data (keys of Redis types; TTLs within 1 s).
fn assert_copy(emu: &Emulator, c: &mut redis::Connection, at_least: usize, log: &str) {
    let exp = expected(emu);
    let not_judged: BTreeSet<(u32, Vec<u8>)> = exp
        .iter()
        .flat_map(|(db, keys)| keys.iter().filter(|(_, k)| k.ty == "dragonfly-only").map(move |(k, _)| (*db, k.clone())))
        .collect();
    let (diffs, compared, _) = compare(&exp, &read_all(c), c, 1000, &not_judged);
    assert!(diffs.is_empty(), "{} differences:\n{}\n---- log:\n{log}", diffs.len(), diffs.join("\n"));
    assert!(compared >= at_least, "{compared} keys compared\n{log}");
}

#[test]
fn replicate_over_tls_with_client_certificates_and_acl_users_on_both_sides() {
    let pki = Pki::new();
    // The master demands TLS, a client certificate and a password.
    let cfg = Config { shards: 4, password: Some("src-secret".into()), tls: Some(pki.emulator(true)), ..Config::default() };
    let emu = Arc::new(Emulator::start(cfg).unwrap());
    datasets::small(&emu, 2000);
    // Redis: TLS only, client certificates required (its default), and an ACL user for
    // df2redis besides the default user's password.
    let acl = ["--tls-auth-clients", "yes", "--requirepass", "admin-secret", "--user", "df2redis", "on", ">tgt-secret", "~*", "&*", "+@all"];
    let srv = TlsRedis::start(&pki, &acl);
    let source = emu.addr().to_string();
    let target = format!("rediss://df2redis:tgt-secret@{}", srv.addr());
    let mut args = strings(&["replicate", "--source", &source, "--source-tls", "--source-user", "default", "--source-password", "src-secret"]);
    args.extend(pki.flags("source", "ca.crt"));
    args.extend(strings(&["--target", &target, "--progress-secs", "1"]));
    args.extend(pki.flags("target", "ca.crt"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = df2redis(&argv);

    // A live journal of non-idempotent commands while the copy runs, then SIGTERM.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = journal_writer(emu.clone(), stop.clone());
    let flowing = wait_acked_beyond(&emu, 0, 3000, MINUTE);
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    let acked = emu.wait_acked_all(MINUTE);
    let out = terminate(child);
    let log = text(&out);
    assert!(flowing && acked, "journal not acknowledged: {:?} vs {:?}\n{log}", emu.acked(), emu.lsns());
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(written >= 3000, "{written} journal writes");
    // The clean shutdown holds over TLS: close_notify and FIN on the main connection, every
    // flow read to its end.
    assert!(emu.wait_session_closed(Duration::from_secs(30)), "a connection is still open\n{log}");
    assert_eq!(emu.main_closed_cleanly(), Some(true), "main connection\n{log}");
    assert_eq!(emu.flow_closed_cleanly(), vec![Some(true); 4], "flows\n{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());

    let proxy = TlsProxy::start(srv.addr(), pki.client());
    assert_copy(&emu, &mut proxy.conn(Some("admin-secret")), 2000 + 97, &log);

    // check and cleanup over TLS on both sides, with the same flags.
    let mut check = strings(&["check", "--source", &source, "--source-tls", "--source-password", "src-secret"]);
    check.extend(pki.flags("source", "ca.crt"));
    check.extend(strings(&["--target", &target]));
    check.extend(pki.flags("target", "ca.crt"));
    let out = run(&check);
    assert_eq!(out.status.code(), Some(0), "check:\n{}", text(&out));
    assert!(text(&out).contains("result: consistent"), "check:\n{}", text(&out));
    let mut cleanup = strings(&["cleanup", "--target", &target]);
    cleanup.extend(pki.flags("target", "ca.crt"));
    let out = run(&cleanup);
    assert_eq!(out.status.code(), Some(0), "cleanup:\n{}", text(&out));
    assert!(text(&out).contains("removed 4 checkpoint marker keys"), "cleanup:\n{}", text(&out));
}

#[test]
fn migrate_every_type_into_a_tls_only_target_by_server_name() {
    let pki = Pki::new();
    let emu = Emulator::start(Config { shards: 4, tls: Some(pki.emulator(false)), ..Config::default() }).unwrap();
    // Every type and encoding, a 5 MB string and a 10 MB list: many TLS records per read.
    datasets::type_coverage(&emu);
    let srv = TlsRedis::start(&pki, &["--tls-auth-clients", "no"]);
    let source = emu.addr().to_string();
    let target = format!("rediss://{}", srv.addr());
    let ca = pki.path("ca.crt");
    let args = strings(&[
        "migrate", "--source", &source, "--source-tls", "--source-tls-ca", &ca, "--source-tls-server-name", "localhost", "--target", &target,
        "--target-tls-ca", &ca, "--target-tls-server-name", "localhost",
    ]);
    let out = run(&args);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let proxy = TlsProxy::start(srv.addr(), pki.client());
    assert_copy(&emu, &mut proxy.conn(None), 50, &log);
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[test]
fn certificate_and_settings_errors_name_the_problem_and_the_flag() {
    let pki = Pki::new();
    let emu = Emulator::start(Config { shards: 2, tls: Some(pki.emulator(true)), ..Config::default() }).unwrap();
    datasets::small(&emu, 10);
    let srv = TlsRedis::start(&pki, &["--tls-auth-clients", "yes"]);
    let source = emu.addr().to_string();
    let target = format!("rediss://{}", srv.addr());
    let good = |side: &str| pki.flags(side, "ca.crt");
    let attempt = |source_flags: Vec<String>, target_flags: Vec<String>| {
        let mut args = strings(&["migrate", "--source", &source, "--source-tls"]);
        args.extend(source_flags);
        args.extend(strings(&["--target", &target]));
        args.extend(target_flags);
        let started = Instant::now();
        let out = run(&args);
        // Never retried: a certificate refused now is refused in a minute.
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}\n{}", started.elapsed(), text(&out));
        (out.status.code(), text(&out))
    };

    // The target's certificate is signed by a CA we do not trust.
    let (code, log) = attempt(good("source"), pki.flags("target", "other-ca.crt"));
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("UnknownIssuer") && log.contains("--target-tls-ca") && log.contains(&srv.addr()), "{log}");
    // The same on the source side.
    let (code, log) = attempt(pki.flags("source", "other-ca.crt"), good("target"));
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("UnknownIssuer") && log.contains("--source-tls-ca") && log.contains("main connection"), "{log}");
    // No client certificate where both sides demand one.
    let (code, log) = attempt(strings(&["--source-tls-ca", &pki.path("ca.crt")]), good("target"));
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("CertificateRequired") && log.contains("--source-tls-cert"), "{log}");
    let (code, log) = attempt(good("source"), strings(&["--target-tls-ca", &pki.path("ca.crt")]));
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("CertificateRequired") && log.contains("--target-tls-cert"), "{log}");
    // A name the certificate was not issued for.
    let mut flags = good("target");
    flags.extend(strings(&["--target-tls-server-name", "redis.example"]));
    let (code, log) = attempt(good("source"), flags);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("redis.example") && log.contains("--target-tls-server-name"), "{log}");

    // Usage errors (exit 2) name the flag and the file.
    let missing = pki.path("no-such.key");
    let mut flags = good("target");
    let at = flags.iter().position(|f| f == "--target-tls-key").unwrap();
    flags[at + 1] = missing.clone();
    let (code, log) = attempt(good("source"), flags);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--target-tls-key") && log.contains(&missing), "{log}");
    let (code, log) = attempt(good("source"), strings(&["--target-tls-cert", &pki.path("client.crt")]));
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--target-tls-cert") && log.contains("--target-tls-key"), "{log}");
    let args = strings(&["migrate", "--source", &source, "--target", &format!("redis://{}", srv.addr()), "--target-tls-ca", &pki.path("ca.crt")]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--target-tls-ca") && text(&out).contains("rediss://"), "{}", text(&out));
    // Nothing reached the target.
    let proxy = TlsProxy::start(srv.addr(), pki.client());
    let n: u64 = redis::cmd("DBSIZE").query(&mut proxy.conn(None)).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn migrate_into_a_tls_cluster_reaches_every_node_over_tls() {
    let pki = Pki::new();
    let emu = Emulator::start(Config { shards: 3, tls: Some(pki.emulator(false)), ..Config::default() }).unwrap();
    datasets::small(&emu, 3000);
    datasets::hashes(&emu, 300, 5);
    // Each node also listens on TLS, and the cluster bus is TLS: CLUSTER SLOTS then answers a
    // TLS client with the TLS ports (the harness keeps managing it over the plain ports).
    let cluster = RedisCluster::start_with(|| {
        let mut v = pki.redis_args(free_port());
        v.extend(strings(&["--tls-cluster", "yes", "--tls-auth-clients", "no"]));
        v
    });
    let tls_ports: Vec<u16> = (0..3)
        .map(|i| {
            let kv: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("tls-port").query(&mut cluster.conn(i)).unwrap();
            kv[1].parse().unwrap()
        })
        .collect();
    let target = format!("rediss://127.0.0.1:{}", tls_ports[0]);
    let ca = pki.path("ca.crt");
    let args = strings(&["migrate", "--source", &emu.addr().to_string(), "--source-tls", "--source-tls-ca", &ca, "--target", &target, "--target-tls-ca", &ca]);
    let out = run(&args);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    // Writes went to every master, each by its TLS port.
    for p in &tls_ports {
        assert!(log.contains(&format!("node 127.0.0.1:{p}: ")), "no writes to the TLS port {p}:\n{log}");
    }
    let exp = expected(&emu);
    let (diffs, compared, _) = compare(&exp, &cluster.read_all(), &mut cluster.conn(0), 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}\n{log}", diffs.len(), diffs.join("\n"));
    assert_eq!(compared, 3300);
}
