//! The Dragonfly side: sockets, the main (control) connection and the handshake.

mod handshake;
pub mod release;
mod socket;

pub use handshake::{FlowConn, Master, MasterInfo, SyncReply};
pub use socket::{connect, SourceError};
