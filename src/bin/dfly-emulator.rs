//! `dfly-emulator`: a Dragonfly master emulator for the demo and the benchmark.
//!
//! Loads a dataset, serves Dragonfly's replication protocol on 127.0.0.1, optionally writes a
//! live mix of commands at a fixed rate, and prints one line when ready:
//! `listening 127.0.0.1:<port> replid=<40 hex>`.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use df2redis::emulator::{cluster, datasets, Compression, Config, Dialect, Emulator, TlsServerFiles};

#[derive(Parser, Debug)]
#[command(
    name = "dfly-emulator",
    about = "Emulate a Dragonfly master (replication protocol v1.36/v1.40) for demos, tests and benchmarks",
    long_about = "Emulate a Dragonfly master for demos, tests and benchmarks.\n\n\
        Loads a dataset, listens on 127.0.0.1:<port> and answers the replication handshake \
        (REPLCONF, DFLY FLOW/SYNC/STARTSTABLE) like a real master: one flow per shard, a \
        point-in-time snapshot, the live journal, partial resume. Ordinary clients may also \
        send the supported write commands (SET, HSET, MSET, DEL, ...).\n\n\
        When ready it prints one line on stdout:\n  listening 127.0.0.1:<port> replid=<40 hex>\n\n\
        It stops, closing every connection and joining its threads, on SIGTERM or SIGINT \
        (`kill <pid>`, Ctrl-C); with --exit-on-stdin-eof also when its standard input reaches \
        end of file, which lets a parent process stop it by closing a pipe."
)]
struct Args {
    /// Port to listen on (127.0.0.1); 0 picks a free one (printed on the ready line).
    #[arg(long)]
    port: u16,
    /// Number of shards, i.e. replication flows.
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// The Dragonfly release to emulate.
    #[arg(long, value_enum, default_value_t = DialectArg::V1_40)]
    dialect: DialectArg,
    /// Snapshot compression (Dragonfly's --compression_mode: none=0, lzf=1, zstd=2, lz4=3).
    #[arg(long, value_enum, default_value_t = Compression::Lz4)]
    compression: Compression,
    /// Split values larger than this at element boundaries (--serialization_max_chunk_size).
    #[arg(long, default_value_t = 64 * 1024)]
    chunk_size: usize,
    /// Force tagged chunks on or off (default: on for v1.40, off for v1.36).
    #[arg(long)]
    tagged: Option<bool>,
    /// Require this password (AUTH) on every connection.
    #[arg(long)]
    password: Option<String>,
    /// Serve TLS only (as a Dragonfly master with --tls), with this PEM certificate (chain);
    /// needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// With TLS, require every client to present a certificate signed by this PEM CA (as a
    /// Dragonfly master with --tls_ca_cert_file does).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// Data to load before serving.
    #[arg(long, value_enum, default_value_t = DatasetArg::Types)]
    dataset: DatasetArg,
    /// Number of keys for the small/hashes/lists/big datasets.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Fields per hash (dataset `hashes`).
    #[arg(long, default_value_t = 10)]
    fields: usize,
    /// Elements per list (dataset `lists`).
    #[arg(long, default_value_t = 100)]
    elems: usize,
    /// Bytes per value (dataset `big`).
    #[arg(long, default_value_t = 1 << 20)]
    value_bytes: usize,
    /// Encode each shard's snapshot once, after loading the dataset, and stream those bytes to
    /// every replica that syncs (no serialization while a snapshot streams; writes made during
    /// it are sent after the snapshot's entries, before FULLSYNC_END). The benchmark's mode.
    #[arg(long)]
    pre_encode: bool,
    /// Write a live mix of commands at this many operations per second.
    #[arg(long)]
    journal_rate: Option<f64>,
    /// Stop the --journal-rate writes after SECS seconds and print `journal stopped after N
    /// writes` on stdout; the emulator keeps serving (so a copy can be checked against it).
    #[arg(long, value_name = "SECS", requires = "journal_rate")]
    journal_secs: Option<f64>,
    /// The command mix of --journal-rate.
    #[arg(long, value_enum, default_value_t = MixArg::Default)]
    journal_mix: MixArg,
    /// Also stop when standard input reaches end of file (besides SIGTERM/SIGINT). Off by
    /// default because a background job in a script gets /dev/null as stdin.
    #[arg(long)]
    exit_on_stdin_eof: bool,
    /// Run as a node of a Dragonfly cluster (`--cluster_mode=yes`): answer CLUSTER SHARDS,
    /// SLOTS, NODES, INFO, MYID as Dragonfly v1.40.1 does, refuse keys of other nodes' slots
    /// with MOVED, only db 0. Implied by --cluster-node-id and --cluster-shard. The dataset
    /// and the --journal-rate writes keep only this node's keys.
    #[arg(long)]
    cluster_mode: bool,
    /// This node's id (Dragonfly's --cluster_node_id); default: its replid.
    #[arg(long, value_name = "ID")]
    cluster_node_id: Option<String>,
    /// One shard of the cluster layout, repeated for every shard (the same list on every
    /// node): `<id>@<ip>:<port>=<start>-<end>[,<start>-<end>|<slot>...]`, e.g.
    /// `--cluster-shard a@127.0.0.1:7001=0-8191 --cluster-shard b@127.0.0.1:7002=8192-16383`.
    /// This node is the shard whose id is --cluster-node-id. Without any, the node is not
    /// configured yet (key commands fail with `Cluster is not yet configured`).
    #[arg(long, value_name = "SPEC", value_parser = cluster::parse_shard)]
    cluster_shard: Vec<cluster::ShardInfo>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DialectArg {
    #[value(name = "v1.40")]
    V1_40,
    #[value(name = "v1.36")]
    V1_36,
    #[value(name = "v1.34")]
    V1_34,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DatasetArg {
    /// Every type and encoding (about 16 MB, including a 5 MB string and a 10 MB list).
    Types,
    /// `--keys` strings, 16-byte keys and 32-byte values.
    Small,
    /// `--keys` hashes of `--fields` fields.
    Hashes,
    /// `--keys` lists of `--elems` elements.
    Lists,
    /// `--keys` strings of `--value-bytes` bytes.
    Big,
    /// Nothing.
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MixArg {
    /// SET, HSET, INCR, LPUSH, ZADD, DEL, cross-shard MSET and XADD in equal parts.
    Default,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let journal_for = match args.journal_secs.map(Duration::try_from_secs_f64) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("dfly-emulator: --journal-secs: {e}");
            std::process::exit(2);
        }
    };
    let cfg = Config {
        shards: args.shards,
        dialect: match args.dialect {
            DialectArg::V1_40 => Dialect::V1_40,
            DialectArg::V1_36 => Dialect::V1_36,
            DialectArg::V1_34 => Dialect::V1_34,
        },
        compression: args.compression,
        chunk_size: args.chunk_size,
        tagged_chunks: args.tagged,
        password: args.password.clone(),
        pre_encode: args.pre_encode,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsServerFiles { cert: cert.clone(), key: key.clone(), client_ca: args.tls_ca.clone() }),
            _ => None,
        },
        cluster: (args.cluster_mode || args.cluster_node_id.is_some() || !args.cluster_shard.is_empty()).then(|| {
            cluster::ClusterOptions { node_id: args.cluster_node_id.clone(), layout: args.cluster_shard.clone() }
        }),
        ..Config::default()
    };
    let emu = match Emulator::start_on(cfg, args.port) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("dfly-emulator: cannot serve on 127.0.0.1:{}: {e}", args.port);
            std::process::exit(1);
        }
    };
    match args.dataset {
        DatasetArg::Types => datasets::type_coverage(&emu),
        DatasetArg::Small => datasets::small(&emu, args.keys),
        DatasetArg::Hashes => datasets::hashes(&emu, args.keys, args.fields),
        DatasetArg::Lists => datasets::lists(&emu, args.keys, args.elems),
        DatasetArg::Big => datasets::big(&emu, args.keys, args.value_bytes),
        DatasetArg::None => {}
    }
    if args.pre_encode {
        let started = Instant::now();
        let bytes = emu.pre_encode();
        eprintln!(
            "dfly-emulator: pre-encoded {:.1} MB of snapshot in {:.1} s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    let emu = Arc::new(emu);

    let (stop_tx, stop_rx) = mpsc::channel::<&'static str>();
    stop_on_signals(stop_tx.clone());
    if args.exit_on_stdin_eof {
        let tx = stop_tx.clone();
        std::thread::Builder::new()
            .name("stdin-watch".into())
            .spawn(move || {
                let mut sink = [0u8; 4096];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                let _ = tx.send("end of standard input");
            })
            .expect("start the stdin watcher");
    }

    let running = Arc::new(AtomicBool::new(true));
    let generator = args.journal_rate.filter(|r| *r > 0.0).map(|rate| {
        let (emu, running) = (emu.clone(), running.clone());
        std::thread::Builder::new()
            .name("emu-journal".into())
            .spawn(move || generate(&emu, rate, journal_for, &running))
            .expect("start the journal generator")
    });

    println!("listening {} replid={}", emu.addr(), emu.master_replid());
    let _ = std::io::stdout().flush();

    let why = stop_rx.recv().unwrap_or("all stop sources closed");
    eprintln!("dfly-emulator: stopping ({why})");
    running.store(false, Ordering::SeqCst);
    if let Some(g) = generator {
        let _ = g.join();
    }
    match Arc::try_unwrap(emu) {
        Ok(e) => e.stop(),
        Err(_) => unreachable!("the generator, the only other owner, was joined"),
    }
}

/// The live write mix: one operation every `1/rate` seconds, paced against a start time so
/// the rate holds on average even when a write takes long; for `limit` if given.
fn generate(emu: &Emulator, rate: f64, limit: Option<Duration>, running: &AtomicBool) {
    let start = Instant::now();
    let mut rng = datasets::Rng::new(99);
    let mut n: u64 = 0;
    while running.load(Ordering::SeqCst) {
        if limit.is_some_and(|l| start.elapsed() >= l) {
            println!("journal stopped after {n} writes");
            let _ = std::io::stdout().flush();
            return;
        }
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        let now = Instant::now();
        if due > now {
            // Pacing, not synchronization: the generator is a rate limiter.
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
            continue;
        }
        let k = rng.below(10_000);
        let key = format!("live:{k}");
        let val = String::from_utf8(rng.text(16)).unwrap();
        let r = match n % 8 {
            0 => emu.write(0, &[b"SET", key.as_bytes(), val.as_bytes()]),
            1 => emu.write(0, &[b"HSET", format!("live:h:{}", k % 1000).as_bytes(), b"f", val.as_bytes()]),
            2 => emu.write(0, &[b"INCR", format!("live:n:{}", k % 1000).as_bytes()]),
            3 => emu.write(0, &[b"LPUSH", format!("live:l:{}", k % 100).as_bytes(), val.as_bytes()]),
            4 => emu.write(
                0,
                &[b"ZADD", format!("live:z:{}", k % 100).as_bytes(), (k % 1000).to_string().as_bytes(), val.as_bytes()],
            ),
            5 => emu.write(0, &[b"DEL", key.as_bytes(), format!("live:l:{}", k % 100).as_bytes()]),
            6 => {
                let (a, b) = (format!("live:m:{k}"), format!("live:m:{}", k + 1));
                emu.write(0, &[b"MSET", a.as_bytes(), val.as_bytes(), b.as_bytes(), val.as_bytes()])
            }
            _ => emu.write(
                0,
                &[b"XADD", format!("live:x:{}", k % 10).as_bytes(), b"MAXLEN", b"1000", b"*", b"v", val.as_bytes()],
            ),
        };
        // A cluster node refuses other nodes' keys: those writes are skipped.
        let foreign = matches!(&r, Err(e) if e.starts_with("MOVED") || e.starts_with("CROSSSLOT"));
        if let (Err(e), false) = (r, foreign) {
            log::warn!("journal generator: {e}");
        }
        n += 1;
    }
}

/// SIGINT/SIGTERM wake the main thread through a self-pipe: the handler only `write(2)`s one
/// byte (async-signal-safe); a thread blocked reading the pipe forwards it. Plain FFI to
/// libc (always linked) instead of a dependency.
fn stop_on_signals(tx: mpsc::Sender<&'static str>) {
    use std::os::fd::FromRawFd;
    static PIPE_WR: AtomicI32 = AtomicI32::new(-1);
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn pipe(fds: *mut i32) -> i32;
        fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    }
    extern "C" fn on_signal(sig: i32) {
        let b = sig as u8;
        // SAFETY: write(2) of one byte to a pipe is async-signal-safe.
        unsafe {
            write(PIPE_WR.load(Ordering::SeqCst), &b, 1);
        }
    }
    let mut fds = [-1i32; 2];
    // SAFETY: pipe(2) fills the two-element array.
    if unsafe { pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!(
            "dfly-emulator: no signal pipe ({}); SIGTERM/SIGINT will end it without cleanup",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: fds[0] is a fresh descriptor this function owns from here on.
    let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    PIPE_WR.store(fds[1], Ordering::SeqCst);
    // SAFETY: the handler only performs an atomic load and write(2).
    unsafe {
        signal(2, on_signal);
        signal(15, on_signal);
    }
    std::thread::Builder::new()
        .name("signal-watch".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            if rd.read_exact(&mut b).is_ok() {
                let _ = tx.send(if b[0] == 2 { "SIGINT" } else { "SIGTERM" });
            }
        })
        .expect("start the signal watcher");
}
