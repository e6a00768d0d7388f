//! Frames: every piece of content after the file header is a frame, a 96-byte header followed by
//! the stored (possibly compressed) bytes.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic "KARF" |
//! | 4 | 1 | kind (see [`FrameKind`]; bit 0x80 = optional, may be skipped by a reader that does not know the kind) |
//! | 5 | 1 | compression: 0 none, 1 zstd |
//! | 6 | 1 | encryption: 0 none, 1 sealed with XChaCha20-Poly1305 (§15, 4.x only) |
//! | 7 | 1 | reserved, zero |
//! | 8 | 8 | stored length (u64): bytes that follow the header |
//! | 16 | 8 | raw length (u64): bytes after decompression |
//! | 24 | 32 | content ID: blake3 of the raw (uncompressed) bytes |
//! | 56 | 32 | stored hash: blake3 of the stored bytes |
//! | 88 | 8 | check: first 8 bytes of blake3(archive ID (3.x) ‖ bytes 0..88) |

use super::{ArchiveId, Cursor, FormatError, Hash, MAX_FRAME_RAW_LEN, bound_check8};

pub const MAGIC: [u8; 4] = *b"KARF";
pub const HEADER_LEN: usize = 96;
pub const OPTIONAL: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    /// Records of one topic-partition ([`super::chunk`]), zstd.
    RecordChunk,
    /// Opaque content-addressed bytes (schema texts), zstd.
    Blob,
    /// A JSON document describing the backup (topic configs, groups, the registry snapshot), zstd.
    Metadata,
    /// The redb index, stored uncompressed so it can be opened in place.
    Index,
    /// The manifest (JSON), zstd.
    Manifest,
    /// A signed statement over the archive's root (§14), optional: outside the root.
    Signature,
    /// An age file holding the archive's file key (§15), the first frames of a 4.x archive.
    Envelope,
    /// A kind this reader does not know; `optional` says whether it may be skipped.
    Unknown(u8),
}

impl FrameKind {
    pub fn code(self) -> u8 {
        match self {
            FrameKind::RecordChunk => 0x01,
            FrameKind::Blob => 0x02,
            FrameKind::Metadata => 0x03,
            FrameKind::Index => 0x10,
            FrameKind::Manifest => 0x11,
            FrameKind::Signature => super::signature::FRAME_KIND,
            FrameKind::Envelope => 0x20,
            FrameKind::Unknown(c) => c,
        }
    }

    pub fn from_code(c: u8) -> FrameKind {
        match c {
            0x01 => FrameKind::RecordChunk,
            0x02 => FrameKind::Blob,
            0x03 => FrameKind::Metadata,
            0x10 => FrameKind::Index,
            0x11 => FrameKind::Manifest,
            super::signature::FRAME_KIND => FrameKind::Signature,
            0x20 => FrameKind::Envelope,
            other => FrameKind::Unknown(other),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameKind::RecordChunk => "record chunk",
            FrameKind::Blob => "blob",
            FrameKind::Metadata => "metadata",
            FrameKind::Index => "index",
            FrameKind::Manifest => "manifest",
            FrameKind::Signature => "signature",
            FrameKind::Envelope => "key envelope",
            FrameKind::Unknown(_) => "unknown frame",
        }
    }

    /// Whether the content of this kind counts towards the root hash.
    pub fn is_content(self) -> bool {
        matches!(
            self,
            FrameKind::RecordChunk | FrameKind::Blob | FrameKind::Metadata
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub compression: Compression,
    pub stored_len: u64,
    pub raw_len: u64,
    pub content_id: Hash,
    pub stored_hash: Hash,
    /// Sealed with the archive's frame key (byte 6 = 1, §15): the stored bytes are
    /// `nonce ‖ ciphertext ‖ tag` of what `compression` says.
    pub encrypted: bool,
}

impl FrameHeader {
    /// The header for `raw` content stored as `stored`.
    pub fn for_content(
        kind: FrameKind,
        compression: Compression,
        raw: &[u8],
        stored: &[u8],
    ) -> FrameHeader {
        let content_id = *blake3::hash(raw).as_bytes();
        let stored_hash = match compression {
            Compression::None => content_id,
            Compression::Zstd => *blake3::hash(stored).as_bytes(),
        };
        FrameHeader {
            kind,
            compression,
            stored_len: stored.len() as u64,
            raw_len: raw.len() as u64,
            content_id,
            stored_hash,
            encrypted: false,
        }
    }

    /// The header of content sealed (§15): `content_id` keyed, `stored` the sealed bytes.
    pub fn for_sealed(
        kind: FrameKind,
        compression: Compression,
        raw_len: u64,
        content_id: Hash,
        stored: &[u8],
    ) -> FrameHeader {
        FrameHeader {
            kind,
            compression,
            stored_len: stored.len() as u64,
            raw_len,
            content_id,
            stored_hash: *blake3::hash(stored).as_bytes(),
            encrypted: true,
        }
    }

    /// The code of the header's compression field.
    pub fn compression_code(&self) -> u8 {
        match self.compression {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    /// Encodes the header of a frame of the archive `id` (`None`: a 2.x archive).
    pub fn encode(&self, id: Option<ArchiveId>) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = self.kind.code();
        b[5] = self.compression_code();
        b[6] = u8::from(self.encrypted);
        b[8..16].copy_from_slice(&self.stored_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.raw_len.to_le_bytes());
        b[24..56].copy_from_slice(&self.content_id);
        b[56..88].copy_from_slice(&self.stored_hash);
        let c = bound_check8(id, &b[..88]);
        b[88..96].copy_from_slice(&c);
        b
    }

    /// Decodes the frame header at the start of `buf`, which sits at file offset `offset` of the
    /// archive `id` (`None`: 2.x). Checks the header's own check field and the limits; not the
    /// stored bytes. A frame of another 3.x archive fails the check.
    pub fn decode(
        buf: &[u8],
        offset: u64,
        id: Option<ArchiveId>,
    ) -> Result<FrameHeader, FormatError> {
        let mut c = Cursor::new(buf, offset, "frame header");
        let b = c.take(HEADER_LEN)?;
        if b[0..4] != MAGIC {
            return Err(c.corrupt(offset, "no frame magic \"KARF\""));
        }
        if b[88..96] != bound_check8(id, &b[..88]) {
            return Err(c.corrupt(
                offset,
                "frame header check does not match its contents (or the frame is of another archive)",
            ));
        }
        let mut c = Cursor::new(&b[4..88], offset + 4, "frame header");
        let kind = FrameKind::from_code(c.u8()?);
        let compression = match c.u8()? {
            0 => Compression::None,
            1 => Compression::Zstd,
            other => return Err(c.corrupt(offset + 5, format!("unknown compression code {other}"))),
        };
        let encrypted = match c.u8()? {
            0 => false,
            1 => true,
            other => return Err(c.corrupt(offset + 6, format!("unknown encryption code {other}"))),
        };
        c.take(1)?;
        let stored_len = c.u64()?;
        let raw_len = c.u64()?;
        let content_id = c.array()?;
        let stored_hash = c.array()?;
        if raw_len > MAX_FRAME_RAW_LEN {
            return Err(c.corrupt(
                offset + 16,
                format!("raw length {raw_len} exceeds the limit of {MAX_FRAME_RAW_LEN} bytes"),
            ));
        }
        // Sealing adds the nonce and the tag (§15).
        let overhead = if encrypted { super::crypt::OVERHEAD } else { 0 };
        if compression == Compression::None && stored_len != raw_len + overhead {
            return Err(c.corrupt(
                offset + 8,
                format!(
                    "uncompressed frame with stored length {stored_len} != raw length {raw_len}"
                ),
            ));
        }
        if compression == Compression::None && !encrypted && stored_hash != content_id {
            return Err(c.corrupt(
                offset + 56,
                "uncompressed frame whose stored hash differs from its content ID",
            ));
        }
        // zstd never expands beyond a small bound; a larger stored length is corrupt, and this also
        // caps what a reader may read for the frame.
        if stored_len > zstd_bound(raw_len) + overhead {
            return Err(c.corrupt(
                offset + 8,
                format!(
                    "stored length {stored_len} is larger than any encoding of {raw_len} bytes"
                ),
            ));
        }
        Ok(FrameHeader {
            kind,
            compression,
            stored_len,
            raw_len,
            content_id,
            stored_hash,
            encrypted,
        })
    }

    /// Total bytes of the frame, header included.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + self.stored_len
    }
}

/// An upper bound for zstd's output size for `raw` input bytes (ZSTD_COMPRESSBOUND plus slack).
pub fn zstd_bound(raw: u64) -> u64 {
    raw + (raw >> 8) + 1024
}

/// Checks the stored bytes against the header (the fast check: no decompression).
pub fn check_stored(h: &FrameHeader, stored: &[u8]) -> bool {
    stored.len() as u64 == h.stored_len && *blake3::hash(stored).as_bytes() == h.stored_hash
}

/// Turns stored frame bytes back into content and checks the content ID. Holds one zstd context
/// and reuses it across frames; in an encrypted archive also its keys, to open sealed frames.
pub struct ContentDecoder {
    zstd: zstd::bulk::Decompressor<'static>,
    keys: Option<(std::sync::Arc<super::crypt::FrameKeys>, ArchiveId)>,
    opened: Vec<u8>,
}

impl ContentDecoder {
    pub fn new() -> std::io::Result<Self> {
        Self::with_keys(None)
    }

    /// Another decoder with the same keys (its own zstd context), for another thread.
    pub fn fresh(&self) -> std::io::Result<Self> {
        Self::with_keys(self.keys.clone())
    }

    /// A decoder that opens the sealed frames of the archive `id` with `keys`.
    pub fn with_keys(
        keys: Option<(std::sync::Arc<super::crypt::FrameKeys>, ArchiveId)>,
    ) -> std::io::Result<Self> {
        Ok(ContentDecoder {
            zstd: zstd::bulk::Decompressor::new()?,
            keys,
            opened: Vec::new(),
        })
    }

    /// Decompresses (or copies) `stored` into `out` (reused; its length becomes the raw length)
    /// and checks it against the header's raw length and content ID. `offset` is the frame's file
    /// offset, for errors.
    pub fn decode(
        &mut self,
        h: &FrameHeader,
        stored: &[u8],
        offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let content_at = offset + HEADER_LEN as u64;
        out.clear();
        let mut opened = std::mem::take(&mut self.opened);
        // In an encrypted archive every frame that holds content is sealed (§15): one in
        // clear was put there by someone without the key.
        if self.keys.is_some()
            && !h.encrypted
            && !matches!(h.kind, FrameKind::Envelope | FrameKind::Signature)
        {
            self.opened = opened;
            return Err(FormatError::Corrupt {
                structure: "frame header",
                offset,
                detail: format!(
                    "a {} frame in clear in an encrypted archive: not written by its writer",
                    h.kind.name()
                ),
            });
        }
        let stored = if h.encrypted {
            let Some((keys, id)) = &self.keys else {
                return Err(FormatError::Encrypted { offset });
            };
            let aad = super::crypt::aad(
                *id,
                h.kind.code(),
                h.compression_code(),
                h.raw_len,
                &h.content_id,
            );
            if keys.open(&aad, stored, &mut opened).is_err() {
                self.opened = opened;
                return Err(FormatError::Corrupt {
                    structure: "sealed frame content",
                    offset: content_at,
                    detail: "does not authenticate: changed since it was written (or sealed for another archive)".into(),
                });
            }
            &opened[..]
        } else {
            stored
        };
        let decoded = self.decode_plain(h, stored, content_at, out);
        self.opened = opened;
        decoded
    }

    fn decode_plain(
        &mut self,
        h: &FrameHeader,
        stored: &[u8],
        content_at: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        match h.compression {
            Compression::None => out.extend_from_slice(stored),
            Compression::Zstd => {
                // raw_len was bounded by MAX_FRAME_RAW_LEN when the header was decoded, and zstd
                // writes only into the capacity reserved here.
                out.reserve(h.raw_len as usize);
                self.zstd
                    .decompress_to_buffer(stored, out)
                    .map_err(|e| FormatError::Corrupt {
                        structure: "frame content",
                        offset: content_at,
                        detail: format!("zstd data does not decode to {} bytes: {e}", h.raw_len),
                    })?;
            }
        }
        if out.len() as u64 != h.raw_len {
            return Err(FormatError::Corrupt {
                structure: "frame content",
                offset: content_at,
                detail: format!("decodes to {} bytes, header says {}", out.len(), h.raw_len),
            });
        }
        let keys = self
            .keys
            .as_ref()
            .filter(|_| h.encrypted)
            .map(|(k, _)| &**k);
        if super::crypt::content_id(keys, out) != h.content_id {
            return Err(FormatError::Corrupt {
                structure: "frame content",
                offset: content_at,
                detail: "content does not match its content ID (blake3)".into(),
            });
        }
        Ok(())
    }
}
