//! The footer: the last 80 bytes of a finished archive. It is written last, so its presence says
//! the writer finished; it points back to the index and manifest frames.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | index frame offset (u64, file offset of its frame header) |
//! | 8 | 8 | manifest frame offset (u64) |
//! | 16 | 8 | frame count (u64, every frame in the file, index and manifest included) |
//! | 24 | 32 | root hash |
//! | 56 | 2 | version major (u16) |
//! | 58 | 2 | version minor (u16) |
//! | 60 | 4 | reserved, zero |
//! | 64 | 8 | check: first 8 bytes of blake3(archive ID (3.x) ‖ bytes 0..64) |
//! | 72 | 8 | end magic "KAR\x00END\n" |

use super::{ArchiveId, Cursor, FormatError, Hash, bound_check8};

pub const MAGIC: [u8; 8] = *b"KAR\x00END\n";
pub const LEN: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub manifest_offset: u64,
    pub frame_count: u64,
    pub root: Hash,
    pub major: u16,
    pub minor: u16,
}

impl Footer {
    /// Encodes the footer of the archive `id` (`None`: 2.x).
    pub fn encode(&self, id: Option<ArchiveId>) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.manifest_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.frame_count.to_le_bytes());
        b[24..56].copy_from_slice(&self.root);
        b[56..58].copy_from_slice(&self.major.to_le_bytes());
        b[58..60].copy_from_slice(&self.minor.to_le_bytes());
        let c = bound_check8(id, &b[..64]);
        b[64..72].copy_from_slice(&c);
        b[72..80].copy_from_slice(&MAGIC);
        b
    }

    /// Decodes the footer at the end of `file` (the whole file, so offsets are file offsets) of
    /// an archive whose header says `major` and `id`: the footer must say the same version, and
    /// its check covers the ID.
    pub fn decode(file: &[u8], major: u16, id: Option<ArchiveId>) -> Result<Footer, FormatError> {
        let start = file.len().checked_sub(LEN).ok_or(FormatError::Truncated {
            structure: "footer",
            offset: 0,
            needed: LEN as u64,
            available: file.len() as u64,
        })?;
        Footer::decode_at(&file[start..], start as u64, major, id)
    }

    /// Decodes a footer's 80 bytes `b` that start at file offset `base` (a stream reader has no
    /// whole file).
    pub fn decode_at(
        b: &[u8],
        base: u64,
        header_major: u16,
        id: Option<ArchiveId>,
    ) -> Result<Footer, FormatError> {
        if b.len() != LEN {
            return Err(FormatError::Truncated {
                structure: "footer",
                offset: base,
                needed: LEN as u64,
                available: b.len() as u64,
            });
        }
        let mut c = Cursor::new(b, base, "footer");
        if b[72..80] != MAGIC {
            return Err(c.corrupt(
                base + 72,
                "no end magic: the archive is unfinished (its writer stopped before the end) or damaged; `kar repair` can recover its complete chunks",
            ));
        }
        if b[64..72] != bound_check8(id, &b[..64]) {
            return Err(c.corrupt(
                base,
                "footer check does not match its contents (or the footer is of another archive)",
            ));
        }
        let index_offset = c.u64()?;
        let manifest_offset = c.u64()?;
        let frame_count = c.u64()?;
        let root = c.array()?;
        let major = c.u16()?;
        let minor = c.u16()?;
        if major != header_major {
            return Err(c.corrupt(
                base + 56,
                format!(
                    "the footer says version {major}.{minor}, the file header major version {header_major}"
                ),
            ));
        }
        for (what, off) in [("index", index_offset), ("manifest", manifest_offset)] {
            if off >= base {
                return Err(c.corrupt(
                    base,
                    format!("{what} frame offset {off} points past the data (footer at {base})"),
                ));
            }
        }
        Ok(Footer {
            index_offset,
            manifest_offset,
            frame_count,
            root,
            major,
            minor,
        })
    }
}

/// Tape drives and `dd conv=sync` pad the last block with zeros: zero bytes after the footer up to
/// the next multiple of this, counted from the start of the file, are padding.
pub const PAD_TO: u64 = 1 << 20;

/// The length of the archive in `file`: all of it, or, where zero padding (up to the next
/// [`PAD_TO`] boundary) follows a footer's end magic, up to that end magic. Anything else is left
/// as it is (an unfinished or damaged file is no archive, padded or not).
pub fn archive_len(file: &[u8]) -> usize {
    if file.ends_with(&MAGIC) {
        return file.len();
    }
    let Some(last) = file.iter().rposition(|b| *b != 0) else {
        return file.len();
    };
    let end = last + 1;
    let padding_fits = (file.len() as u64) <= (end as u64).div_ceil(PAD_TO) * PAD_TO;
    if file[..end].ends_with(&MAGIC) && padding_fits {
        end
    } else {
        file.len()
    }
}

#[cfg(test)]
mod padding_tests {
    use super::{MAGIC, PAD_TO, archive_len};

    #[test]
    fn zero_padding_to_the_next_mib_is_left_out_and_nothing_else() {
        let mut file = vec![1u8; 1000];
        file.extend_from_slice(&MAGIC);
        let end = file.len();
        assert_eq!(archive_len(&file), end);
        let pad = |n: usize, b: u8| [&file[..], &vec![b; n][..]].concat();
        assert_eq!(archive_len(&pad(PAD_TO as usize - end, 0)), end);
        assert_eq!(archive_len(&pad(256 * 1024 - end, 0)), end);
        // Past the boundary, or not zeros, or no end magic before the zeros: not padding.
        let too_far = pad(PAD_TO as usize - end + 1, 0);
        assert_eq!(archive_len(&too_far), too_far.len());
        let other = pad(10, 9);
        assert_eq!(archive_len(&other), other.len());
        let unfinished = [&file[..end - 1], &[0u8; 100][..]].concat();
        assert_eq!(archive_len(&unfinished), unfinished.len());
        assert_eq!(archive_len(&[0u8; 64]), 64);
    }
}
