//! Pure decoding of Dragonfly's replication streams: bytes in, typed items out.
//!
//! Nothing in here touches a socket, a clock or Redis, so every decoder can be driven by the
//! fixtures, the fuzzer and the emulator alike. See `docs/protocol/dragonfly-replication.md`
//! for the wire format; section numbers in comments refer to it.

pub mod compress;
pub mod cursor;
pub mod entry;
pub mod error;
pub mod flow;
pub mod items;
pub mod journal;
pub mod listpack;
pub mod lzf;
pub mod whole;
pub mod ziplist;

pub use entry::{EntryParser, Limits};
pub use error::{DecodeError, Space};
pub use flow::{FlowDecoder, Phase};
pub use items::*;
