//! df2redis: replicate a live DragonflyDB into Redis over Dragonfly's replication protocol.
//!
//! Layers, each usable on its own:
//! - [`protocol`]: pure decoders for one flow's byte stream (no I/O).
//! - [`replay`]: decoded items to Redis commands (types, TTLs, rewrites, policies).
//! - [`inspect`]: human-readable rendering of a captured flow.
//! - [`check`]: compare a source with its copy, key by key (`df2redis check`).
//! - [`tls`]: TLS connections (rustls) shared by a reader and a writer thread.

#[cfg(feature = "emulator")]
pub mod emulator;
pub mod affinity;
pub mod check;
pub mod checkpoint;
pub mod config;
pub mod console;
pub mod crc64;
pub mod inspect;
pub mod json;
pub mod lease;
pub mod metrics;
pub mod pipeline;
pub mod protocol;
pub mod replay;
pub mod signals;
pub mod source;
pub mod target;
pub mod tls;
