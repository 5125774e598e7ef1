//! The `df2redis` command line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use df2redis::inspect::{self, Start};

/// Replicate a live DragonflyDB into Redis over Dragonfly's own replication protocol.
///
/// Exit codes: 0 success; 1 runtime failure (the message names the flow, key or node and the
/// cause); 2 usage or configuration error (the message names the flag or key).
#[derive(Parser)]
#[command(name = "df2redis", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a captured flow file and print its items, one line each, then a summary.
    ///
    /// A flow file holds the bytes one flow connection received after its `DFLY FLOW` reply:
    /// the RDB header, snapshot entries, inline journal blobs, FULLSYNC_END, JOURNAL_OFFSET,
    /// EOF, the eof token and the stable-sync journal. Each entry is printed as
    /// `entry db=.. key=.. type=.. elements=.. bytes=.. wire=.. expire_at=..`, each journal
    /// record as `journal lsn=.. db=.. txid=.. COMMAND args...` (lsn=inline for records inside
    /// the snapshot). The summary counts items by opcode, entries by type and records by
    /// command. Exit code 1 and the byte offset of the damage if the file does not decode.
    Inspect {
        /// The capture to read (`-` for standard input).
        flow_file: PathBuf,
        /// The eof token from the flow's `DFLY FLOW` reply; the token in the stream must match.
        #[arg(long, value_name = "T")]
        token: Option<String>,
        /// The capture is a partial-sync flow (answered PARTIAL) starting at this LSN: it holds
        /// journal records only.
        #[arg(long, value_name = "LSN")]
        partial_from: Option<u64>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { flow_file, token, partial_from } => run_inspect(flow_file, token, partial_from),
    }
}

fn run_inspect(path: PathBuf, token: Option<String>, partial_from: Option<u64>) -> ExitCode {
    if let Some(t) = &token {
        if t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            eprintln!("error: --token must be the 40 hex digits of the FLOW reply, got {t:?}");
            return ExitCode::from(2);
        }
    }
    let input: Box<dyn io::Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        match File::open(&path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: cannot open flow file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    };
    let start = partial_from.map_or(Start::Full, Start::Partial);
    let mut out = BufWriter::new(io::stdout().lock());
    let r = inspect::inspect(input, token.map(String::into_bytes), start, &mut out);
    let _ = out.flush();
    match r {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::from(1)
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: reading {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}
