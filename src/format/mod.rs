//! The kar archive format v2 as a pure codec: bytes in, typed structures out, and back. One module
//! per on-disk structure, named as in `format-spec/kar-v3.md`. No I/O, no async, no Kafka, no redb:
//! fuzz targets and benches call this directly.
//!
//! Everything here is little-endian. Every length read from input is checked against the bytes
//! that are really there and against the limits below before anything is allocated.

pub mod chunk;
pub mod consumer_groups;
pub mod crypt;
pub mod error;
pub mod file_header;
pub mod footer;
pub mod frame;
pub mod kafka_topics;
pub mod manifest;
pub mod provenance;
pub mod root;
pub mod schema_registry;
pub mod signature;
pub mod varint;
pub mod volume;

pub use error::FormatError;

/// Major version written: a reader refuses a file with a major version it does not implement.
pub const VERSION_MAJOR: u16 = 3;
/// Minor version written: a reader reads a newer minor version, skipping optional structures it
/// does not know.
pub const VERSION_MINOR: u16 = 0;
/// Minor version of a signed archive (§14): 3.1 added the signature frame and the index's
/// `signatures` table. An unsigned archive is written as 3.0, byte for byte as before.
pub const VERSION_MINOR_SIGNED: u16 = 1;
/// Major version of an encrypted archive (§15): a 3.x reader would take its sealed frames for
/// damage, so it refuses the version by name instead.
pub const VERSION_MAJOR_ENCRYPTED: u16 = 4;
/// Major version of a chain member (§16), encrypted or not: a 3.x or 4.x reader would take its
/// inherited blobs for damage and its ranges for a whole backup, so it refuses it by name.
pub const VERSION_MAJOR_CHAIN: u16 = 5;
/// The major versions this code reads: 2.x (no archive ID), 3.x, 4.x (encrypted), 5.x (chain
/// members).
pub const READ_MAJORS: [u16; 4] = [2, 3, 4, 5];

/// The largest uncompressed size of one frame's content: bounds every allocation a reader makes
/// from a length field.
pub const MAX_FRAME_RAW_LEN: u64 = 256 * 1024 * 1024;
/// Kafka's own limit on topic names.
pub const MAX_TOPIC_LEN: usize = 249;

/// A blake3 hash: chunk IDs, blob IDs, the root hash.
pub type Hash = [u8; 32];

/// Lower-case hex of a hash, as printed and as stored in the manifest.
pub fn hex(h: &Hash) -> String {
    blake3::Hash::from_bytes(*h).to_hex().to_string()
}

/// Parses 64 hex digits (either case) into a hash; anything else is `None` (blake3's parser:
/// the hand-written one took a `+` sign as a digit).
pub fn parse_hex(s: &str) -> Option<Hash> {
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

/// The first 8 bytes of blake3 over `bytes`: the check field that closes each fixed-size header.
pub(crate) fn check8(bytes: &[u8]) -> [u8; 8] {
    bound_check8(None, bytes)
}

/// A 3.x archive's random 128-bit identity (§2). Every frame's and the footer's check covers it,
/// so a reader never takes a frame of another archive (one carried inside record bytes, one
/// spliced in) for one of this archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchiveId(pub [u8; 16]);

impl ArchiveId {
    /// 32 lower-case hex digits, as printed.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Display for ArchiveId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// The check of a frame header or footer: the first 8 bytes of blake3 over the archive ID (3.x;
/// `None` in 2.x) followed by `bytes`.
pub(crate) fn bound_check8(id: Option<ArchiveId>, bytes: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    if let Some(id) = id {
        h.update(&id.0);
    }
    h.update(bytes);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// A little-endian cursor over a byte slice that reports truncation with the absolute offset and
/// the structure being read.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in whatever the error should name (the file, or a chunk's content).
    base: u64,
    structure: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], base: u64, structure: &'static str) -> Self {
        Cursor {
            buf,
            pos: 0,
            base,
            structure,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated {
                structure: self.structure,
                offset: self.offset(),
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn varint(&mut self) -> Result<u64, FormatError> {
        let start = self.offset();
        let (v, n) = varint::decode(&self.buf[self.pos..]).map_err(|e| match e {
            varint::VarintError::Truncated => FormatError::Truncated {
                structure: self.structure,
                offset: start,
                needed: 1,
                available: 0,
            },
            varint::VarintError::Overlong => FormatError::Corrupt {
                structure: self.structure,
                offset: start,
                detail: "varint longer than 10 bytes or above 2^64".into(),
            },
        })?;
        self.pos += n;
        Ok(v)
    }

    pub(crate) fn corrupt(&self, at: u64, detail: impl Into<String>) -> FormatError {
        FormatError::Corrupt {
            structure: self.structure,
            offset: at,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ids_print_and_parse_as_64_hex_digits_only() {
        let h = *blake3::hash(b"kar").as_bytes();
        let text = hex(&h);
        assert_eq!(text.len(), 64);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(parse_hex(&text), Some(h));
        assert_eq!(parse_hex(&text.to_uppercase()), Some(h));
        assert_eq!(parse_hex(&"+f".repeat(32)), None, "a sign is not a digit");
        assert_eq!(parse_hex(&text[..63]), None);
        assert_eq!(parse_hex(&format!("{text}0")), None);
        assert_eq!(parse_hex(&"é".repeat(32)), None);
    }
}
