//! The file header: the first 32 bytes of every archive.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 4B 41 52 0D 0A 1A 0A` ("\x89KAR\r\n\x1a\n") |
//! | 8 | 2 | version major (u16) |
//! | 10 | 2 | version minor (u16) |
//! | 12 | 4 | flags (u32, 0 in v1.0; a reader ignores bits it does not know) |
//! | 16 | 8 | reserved, zero |
//! | 24 | 8 | check: first 8 bytes of blake3(bytes 0..24) |

use super::{Cursor, FormatError, VERSION_MAJOR, VERSION_MINOR, check8};

pub const MAGIC: [u8; 8] = *b"\x89KAR\r\n\x1a\n";
pub const LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub major: u16,
    pub minor: u16,
    pub flags: u32,
}

impl Default for FileHeader {
    fn default() -> Self {
        FileHeader {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            flags: 0,
        }
    }
}

impl FileHeader {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        let c = check8(&b[..24]);
        b[24..32].copy_from_slice(&c);
        b
    }

    /// Decodes the header at the start of `file`. A different major version is refused.
    pub fn decode(file: &[u8]) -> Result<FileHeader, FormatError> {
        let mut c = Cursor::new(file, 0, "file header");
        let bytes = c.take(LEN)?;
        if bytes[..8] != MAGIC {
            return Err(c.corrupt(
                0,
                "not a kar archive: wrong magic bytes at the start of the file",
            ));
        }
        let major = u16::from_le_bytes([bytes[8], bytes[9]]);
        let minor = u16::from_le_bytes([bytes[10], bytes[11]]);
        if bytes[24..32] != check8(&bytes[..24]) {
            return Err(c.corrupt(0, "header check does not match its contents"));
        }
        if major != VERSION_MAJOR {
            return Err(FormatError::UnsupportedVersion {
                offset: 8,
                found_major: major,
                found_minor: minor,
                supported_major: VERSION_MAJOR,
            });
        }
        let flags = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        Ok(FileHeader {
            major,
            minor,
            flags,
        })
    }
}
