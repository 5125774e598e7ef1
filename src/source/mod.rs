//! The Dragonfly side: sockets, the main (control) connection and the handshake; and snapshot
//! files as a source of the same byte streams.

pub mod cluster;
pub mod files;
mod handshake;
pub mod release;
mod socket;

pub use handshake::{FlowConn, Master, MasterInfo, SyncReply};
pub use socket::{connect, SourceError};
