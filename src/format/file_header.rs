//! The file header: the first 32 bytes (2.x) or 64 bytes (3.x) of every archive.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 4B 41 52 0D 0A 1A 0A` ("\x89KAR\r\n\x1a\n") |
//! | 8 | 2 | version major (u16) |
//! | 10 | 2 | version minor (u16) |
//! | 12 | 4 | flags (u32, 0; a reader ignores bits it does not know) |
//! | 16 | 8 | reserved, zero |
//! | 24 | 8 | check: first 8 bytes of blake3(bytes 0..24) |
//! | 32 | 16 | 3.x: archive ID |
//! | 48 | 8 | 3.x: reserved, zero |
//! | 56 | 8 | 3.x: check: first 8 bytes of blake3(bytes 0..56) |
//!
//! The first 32 bytes are laid out as in 2.x, so a 2.x reader finds an intact header of version 3
//! and names the version, rather than a bad check.

use super::{ArchiveId, Cursor, FormatError, READ_MAJORS, VERSION_MAJOR, VERSION_MINOR, check8};

pub const MAGIC: [u8; 8] = *b"\x89KAR\r\n\x1a\n";
/// The length of a 2.x header, and of the part every version shares.
pub const LEN_V2: usize = 32;
/// The length of a 3.x header: where the first frame of a 3.x archive begins.
pub const LEN: usize = 64;
/// Flag bit 0 (4.x): the archive is encrypted (§15).
pub const FLAG_ENCRYPTED: u32 = 1;
/// Flag bit 1 (5.x): the archive is a chain member (§16).
pub const FLAG_CHAIN: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub major: u16,
    pub minor: u16,
    pub flags: u32,
    /// 3.x: the archive's identity, bound into every frame's and the footer's check. `None` in 2.x.
    pub archive_id: Option<ArchiveId>,
}

impl FileHeader {
    /// The header this code writes: the current version, with `id`.
    pub fn new(id: ArchiveId) -> FileHeader {
        FileHeader {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            flags: 0,
            archive_id: Some(id),
        }
    }

    /// Whether the archive is encrypted (§15): a 4.x or 5.x header with flag bit 0.
    pub fn is_encrypted(&self) -> bool {
        self.major >= 4 && self.flags & FLAG_ENCRYPTED != 0
    }

    /// Whether the archive is a chain member (§16): a 5.x header with flag bit 1.
    pub fn is_chain_member(&self) -> bool {
        self.major >= 5 && self.flags & FLAG_CHAIN != 0
    }

    /// The header's length: where the first frame begins.
    pub fn size(&self) -> usize {
        if self.major == 2 { LEN_V2 } else { LEN }
    }

    /// Encodes the header; a 2.x header (no archive ID) only for tests of the 2.x reader.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.size()];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        let c = check8(&b[..24]);
        b[24..32].copy_from_slice(&c);
        if let (LEN, Some(id)) = (b.len(), self.archive_id) {
            b[32..48].copy_from_slice(&id.0);
            let c = check8(&b[..56]);
            b[56..64].copy_from_slice(&c);
        }
        b
    }

    /// Decodes the header at the start of `file`. A major version other than 2 or 3 is refused.
    pub fn decode(file: &[u8]) -> Result<FileHeader, FormatError> {
        let mut c = Cursor::new(file, 0, "file header");
        let bytes = c.take(LEN_V2)?;
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
        if !READ_MAJORS.contains(&major) {
            return Err(FormatError::UnsupportedVersion {
                offset: 8,
                found_major: major,
                found_minor: minor,
                supported_major: super::VERSION_MAJOR_CHAIN,
            });
        }
        let flags = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        let archive_id = if major == 2 {
            None
        } else {
            let ext = c.take(LEN - LEN_V2)?;
            if ext[24..32] != check8(&file[..56]) {
                return Err(c.corrupt(32, "header check (of the archive ID) does not match"));
            }
            Some(ArchiveId(ext[..16].try_into().unwrap()))
        };
        Ok(FileHeader {
            major,
            minor,
            flags,
            archive_id,
        })
    }

    /// The header as far as `file` gives it: decoded, or, where it does not decode (a damaged
    /// byte), what its bytes say, their checks aside: version 2 when the major version field says
    /// 2, else 3 with the ID bytes as they are. Repair and verify read frames past a damaged
    /// header with this (the ID's own bytes may well be intact).
    pub fn salvage(file: &[u8]) -> FileHeader {
        if let Ok(h) = FileHeader::decode(file) {
            return h;
        }
        let field = |r: std::ops::Range<usize>| file.get(r).map(|b| b.to_vec());
        let major = field(8..10).map_or(VERSION_MAJOR, |b| u16::from_le_bytes([b[0], b[1]]));
        if major == 2 {
            return FileHeader {
                major,
                minor: 0,
                flags: 0,
                archive_id: None,
            };
        }
        let id = field(32..48).map(|b| ArchiveId(b.try_into().unwrap()));
        // An encrypted archive's or a chain member's version and flags are kept as they read (a
        // reader must not take its sealed frames or inherited blobs for a plain archive's).
        let (major, flags) = match field(12..16) {
            Some(f)
                if major == super::VERSION_MAJOR_ENCRYPTED
                    || major == super::VERSION_MAJOR_CHAIN =>
            {
                (major, u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
            }
            _ => (VERSION_MAJOR, 0),
        };
        FileHeader {
            major,
            flags,
            archive_id: Some(id.unwrap_or(ArchiveId([0; 16]))),
            ..FileHeader::new(ArchiveId([0; 16]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_3x_header_carries_its_id_and_a_2x_header_none() {
        let id = ArchiveId(*b"0123456789abcdef");
        let h = FileHeader::new(id);
        let b = h.encode();
        assert_eq!(b.len(), LEN);
        assert_eq!(FileHeader::decode(&b), Ok(h));
        assert_eq!(FileHeader::salvage(&b), h);
        let v2 = FileHeader {
            major: 2,
            minor: 1,
            flags: 0,
            archive_id: None,
        };
        assert_eq!(v2.encode().len(), LEN_V2);
        assert_eq!(FileHeader::decode(&v2.encode()), Ok(v2));
        // The ID is checked: one flipped bit of it is corrupt, not another archive.
        let mut bad = b.clone();
        bad[40] ^= 1;
        assert!(matches!(
            FileHeader::decode(&bad),
            Err(FormatError::Corrupt { offset: 32, .. })
        ));
        assert_eq!(FileHeader::salvage(&bad).archive_id.unwrap().0[8], b'8' ^ 1);
        let mut bad_check = b.clone();
        bad_check[60] ^= 1;
        assert_eq!(FileHeader::salvage(&bad_check), h);
        // A 3.x header cut after the part 2.x shares is truncated.
        assert!(FileHeader::decode(&b[..40]).unwrap_err().is_truncated());
    }
}
