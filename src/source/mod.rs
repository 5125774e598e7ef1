//! The Dragonfly side: sockets, the main (control) connection and the handshake.

mod handshake;
mod socket;

pub use handshake::{FlowConn, Master, MasterInfo, SyncReply};
pub use socket::{connect, SourceError};
