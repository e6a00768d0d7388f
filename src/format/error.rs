//! Errors of the pure codec. Truncation (the bytes end too early: a torn write, a short copy) is kept
//! apart from corruption (the bytes are there but wrong), because an operator fixes them
//! differently.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    #[error(
        "truncated {structure} at offset {offset}: needs {needed} more bytes, {available} left"
    )]
    Truncated {
        structure: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },

    #[error("corrupt {structure} at offset {offset}: {detail}")]
    Corrupt {
        structure: &'static str,
        offset: u64,
        detail: String,
    },

    /// A sealed frame (§15) and no key to open it.
    #[error(
        "the frame at offset {offset} is encrypted and no key was given: the archive's identity (age or SSH private key) or its passphrase opens it"
    )]
    Encrypted { offset: u64 },

    #[error(
        "unsupported format version {found_major}.{found_minor} at offset {offset}: this kar reads major versions 2 to {supported_major}; use a kar release that reads version {found_major}"
    )]
    UnsupportedVersion {
        offset: u64,
        found_major: u16,
        found_minor: u16,
        supported_major: u16,
    },
}

impl FormatError {
    /// The offset the error names.
    pub fn offset(&self) -> u64 {
        match self {
            FormatError::Truncated { offset, .. }
            | FormatError::Corrupt { offset, .. }
            | FormatError::UnsupportedVersion { offset, .. }
            | FormatError::Encrypted { offset } => *offset,
        }
    }

    pub fn is_truncated(&self) -> bool {
        matches!(self, FormatError::Truncated { .. })
    }
}
