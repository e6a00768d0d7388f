//! Errors of the archive layer: each names the file and, where it applies, the file offset and the
//! structure (and the topic/partition a chunk belongs to).

use std::path::PathBuf;

use thiserror::Error;

use crate::format::FormatError;
use crate::format::chunk::EncodeError;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is a directory, not an archive file", path = .path.display())]
    NotAFile { path: PathBuf },

    #[error("{path} is empty (0 bytes): not a kar archive", path = .path.display())]
    Empty { path: PathBuf },

    #[error("{path}: {source}{context}", path = .path.display())]
    Format {
        path: PathBuf,
        source: FormatError,
        context: String,
    },

    #[error("{path}: index frame at offset {offset}: {detail}", path = .path.display())]
    Index {
        path: PathBuf,
        offset: u64,
        detail: String,
    },

    #[error("{path}: {0}", path = .1.display())]
    Encode(EncodeError, PathBuf),

    #[error("{path} already exists: choose another output file or remove it first", path = .path.display())]
    Exists { path: PathBuf },

    #[error("{path}: {detail}", path = .path.display())]
    Order { path: PathBuf, detail: String },
    /// The files given do not make one chain (§16).
    #[error("chain: {0}")]
    Chain(String),

    /// A volume of a set that is missing, of another set, out of order or cut short.
    #[error("{path}: {detail}", path = .path.display())]
    Volume { path: PathBuf, detail: String },

    /// An encrypted archive that could not be opened, or an envelope that could not be made.
    #[error("{path}: {source}", path = .path.display())]
    Crypt {
        path: PathBuf,
        source: super::crypt::CryptError,
    },

    /// Signing the archive failed (the key, the signing thread).
    #[error("{path}: signing: {detail}", path = .path.display())]
    Sign { path: PathBuf, detail: String },

    #[error("{path}: no {what} in the archive", path = .path.display())]
    Missing { path: PathBuf, what: String },
}

impl ArchiveError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { op, path, source }
    }

    pub(crate) fn format(
        path: impl Into<PathBuf>,
        context: impl Into<String>,
    ) -> impl FnOnce(FormatError) -> ArchiveError {
        let (path, context) = (path.into(), context.into());
        move |source| ArchiveError::Format {
            path,
            source,
            context,
        }
    }

    /// Whether the archive ends early (a torn write or short copy) rather than being damaged.
    pub fn is_truncated(&self) -> bool {
        matches!(self, ArchiveError::Format { source, .. } if source.is_truncated())
    }
}
