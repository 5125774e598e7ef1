//! Decode errors: every one says where (flow, byte offset) and what was being read.
//!
//! A flow's bytes are not always read straight off the socket: compressed blobs are expanded
//! first, and a tagged entry is reassembled from chunks. An offset into those derived byte
//! sequences would be useless to someone holding a capture, so an error names the *space* its
//! offset lives in together with the raw flow offset where that space begins.

use std::fmt;

/// Which byte sequence an error offset refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// The flow's raw byte stream, as received from the master.
    Stream,
    /// The decompressed content of the compressed blob whose opcode is at flow offset `at`.
    Blob { at: u64 },
    /// The reassembled bytes of a tagged (chunked) entry; `first_chunk_at` is the flow offset
    /// of its first chunk (or of the compressed blob holding it).
    Tagged { stream_id: u32, first_chunk_at: u64 },
    /// A stand-alone buffer, such as a RESTORE payload inside a journal record.
    Payload,
}

/// A malformed or unexpected byte sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The flow this decoder reads, when known.
    pub flow: Option<u32>,
    /// The byte sequence `offset` refers to.
    pub space: Space,
    /// Offset of the offending byte within `space`.
    pub offset: u64,
    /// What the decoder was in the middle of (opcode, entry type and key), when known.
    pub context: Option<String>,
    /// What was expected and what was found.
    pub message: String,
}

impl DecodeError {
    pub fn new(space: Space, offset: u64, message: impl Into<String>) -> Self {
        DecodeError { flow: None, space, offset, context: None, message: message.into() }
    }

    /// Attach a description of the enclosing item, unless a more specific one is set already.
    pub fn in_context(mut self, ctx: impl FnOnce() -> String) -> Self {
        if self.context.is_none() {
            self.context = Some(ctx());
        }
        self
    }

    /// The raw flow offset closest to the error: exact for `Space::Stream`, otherwise the
    /// start of the blob or tagged entry that contains it.
    pub fn stream_offset(&self) -> u64 {
        match self.space {
            Space::Stream | Space::Payload => self.offset,
            Space::Blob { at } => at,
            Space::Tagged { first_chunk_at, .. } => first_chunk_at,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(flow) = self.flow {
            write!(f, "flow {flow}: ")?;
        }
        match self.space {
            Space::Stream => write!(f, "byte offset {}", self.offset)?,
            Space::Blob { at } => write!(
                f,
                "byte {} of the compressed blob at byte offset {at}",
                self.offset
            )?,
            Space::Tagged { stream_id, first_chunk_at } => write!(
                f,
                "byte {} of tagged entry {stream_id} (first chunk at byte offset {first_chunk_at})",
                self.offset
            )?,
            Space::Payload => write!(f, "byte {} of the payload", self.offset)?,
        }
        if let Some(ctx) = &self.context {
            write!(f, ", reading {ctx}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DecodeError {}
