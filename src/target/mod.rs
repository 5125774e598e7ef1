//! The Redis side: connections that apply [`Cmd`](crate::replay::Cmd)s in pipelines.

pub mod resp;
mod standalone;

pub use standalone::{Standalone, TargetError};
