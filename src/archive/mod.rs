//! The archive on disk: the front-to-back writer, the memory-mapped reader, the redb index inside
//! the file, and the operations on whole archives (verify, inspect, repair, compact). The byte layout itself
//! is `crate::format`'s.

pub mod chain;
pub mod compact;
pub mod consolidate;
pub mod coverage;
pub mod crypt;
pub mod dump;
pub mod error;
pub mod index;
pub mod inspect;
pub mod prune;
pub mod reader;
pub mod repair;
pub mod set;
pub mod signing;
pub mod source;
pub mod stream;
pub mod verify;
pub mod view;
pub mod volume;
pub mod writer;

pub use error::ArchiveError;
pub use reader::{Archive, Source};
pub use writer::{ArchiveWriter, WriteSummary, WriterOptions};
