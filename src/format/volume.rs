//! The volume header (§12): an archive cut into volumes (FAT32 sticks, tape cartridges) is a set
//! of files, each this header, zero-padded to [`HEADER_REGION`] bytes, then the next slice of the
//! archive's bytes. The archive's bytes are not changed by the cut: joined, the slices are the
//! archive, with the same root.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 4B 41 52 56 4F 4C 0A` ("\x89KARVOL\n") |
//! | 8 | 2 | volume format version (u16, 1) |
//! | 10 | 2 | flags (u16): bit 0 set in the last volume of the set |
//! | 12 | 4 | volume number (u32, from 1) |
//! | 16 | 16 | set ID: random, the same in every volume of the set |
//! | 32 | 8 | payload offset (u64): where this volume's slice begins in the archive |
//! | 40 | 8 | payload length (u64): the slice's length |
//! | 48 | 4 | volume count (u32): in the last volume, the number of volumes; else 0 |
//! | 52 | 4 | reserved, zero |
//! | 56 | 8 | check: first 8 bytes of blake3(bytes 0..56) |

use super::{Cursor, FormatError, check8};

pub const MAGIC: [u8; 8] = *b"\x89KARVOL\n";
pub const VERSION: u16 = 1;
pub const LEN: usize = 64;
/// Where each volume's slice begins in its file; also the unit every slice but the last is a
/// multiple of, so that a reader maps the slices of a set one after another into one span of
/// memory (64 KiB: a multiple of every page size kar runs on).
pub const HEADER_REGION: u64 = 64 * 1024;
const LAST: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeHeader {
    pub number: u32,
    pub set_id: [u8; 16],
    pub payload_offset: u64,
    pub payload_len: u64,
    /// In the last volume, the number of volumes; `None` in the others.
    pub count: Option<u32>,
}

impl VolumeHeader {
    /// The header and its zero padding: the first [`HEADER_REGION`] bytes of the volume.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_REGION as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.count.is_some() { LAST } else { 0 };
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.number.to_le_bytes());
        b[16..32].copy_from_slice(&self.set_id);
        b[32..40].copy_from_slice(&self.payload_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.payload_len.to_le_bytes());
        b[48..52].copy_from_slice(&self.count.unwrap_or(0).to_le_bytes());
        let c = check8(&b[..56]);
        b[56..64].copy_from_slice(&c);
        b
    }

    /// Whether `file` begins like a volume (its magic), not like an archive.
    pub fn is_volume(file: &[u8]) -> bool {
        file.starts_with(&MAGIC)
    }

    /// Decodes the header at the start of `file` (its first [`LEN`] bytes; the padding after it
    /// is not read).
    pub fn decode(file: &[u8]) -> Result<VolumeHeader, FormatError> {
        let mut c = Cursor::new(file, 0, "volume header");
        let b = c.take(LEN)?;
        if b[..8] != MAGIC {
            return Err(c.corrupt(0, "not a kar volume: wrong magic bytes"));
        }
        if b[56..64] != check8(&b[..56]) {
            return Err(c.corrupt(0, "volume header check does not match its contents"));
        }
        let mut c = Cursor::new(&b[8..56], 8, "volume header");
        let version = c.u16()?;
        if version != VERSION {
            return Err(c.corrupt(
                8,
                format!("volume format version {version}; this kar reads {VERSION}"),
            ));
        }
        let flags = c.u16()?;
        let number = c.u32()?;
        let set_id = c.array()?;
        let payload_offset = c.u64()?;
        let payload_len = c.u64()?;
        let count = c.u32()?;
        let last = flags & LAST != 0;
        if number == 0 || (last && count != number) || (!last && count != 0) {
            return Err(c.corrupt(
                12,
                format!("volume number {number}, count {count}, last {last}: inconsistent"),
            ));
        }
        Ok(VolumeHeader {
            number,
            set_id,
            payload_offset,
            payload_len,
            count: last.then_some(count),
        })
    }

    /// The set ID as 32 hex digits.
    pub fn set_hex(&self) -> String {
        self.set_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The file name of volume `number` of the set whose first volume is `first` (`NAME.kar`,
/// `NAME.kar.002`, ...).
pub fn volume_name(first: &str, number: u32) -> String {
    if number == 1 {
        first.to_string()
    } else {
        format!("{first}.{number:03}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_header_round_trips_and_checks_itself() {
        let h = VolumeHeader {
            number: 3,
            set_id: *b"0123456789abcdef",
            payload_offset: 2 << 20,
            payload_len: 12345,
            count: Some(3),
        };
        let b = h.encode();
        assert_eq!(b.len() as u64, HEADER_REGION);
        assert!(VolumeHeader::is_volume(&b));
        assert_eq!(VolumeHeader::decode(&b), Ok(h));
        let mut bad = b.clone();
        bad[40] ^= 1;
        assert!(VolumeHeader::decode(&bad).is_err());
        let not_last = VolumeHeader { count: None, ..h };
        assert_eq!(VolumeHeader::decode(&not_last.encode()), Ok(not_last));
        assert_eq!(volume_name("a.kar", 1), "a.kar");
        assert_eq!(volume_name("a.kar", 12), "a.kar.012");
        assert_eq!(volume_name("a.kar", 1234), "a.kar.1234");
    }
}
