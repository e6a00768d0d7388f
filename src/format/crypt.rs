//! Encryption at rest (§15), the pure part: the keys derived from an archive's file key, keyed
//! content IDs, and the sealing and opening of one frame's stored bytes with
//! XChaCha20-Poly1305. The file key itself travels in the key envelope frame, wrapped by age for
//! each recipient (`archive::crypt`); nonces are drawn by the caller (this layer does no I/O).

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

use super::{ArchiveId, Hash};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// What sealing adds to a frame's stored bytes: the nonce before them, the tag after.
pub const OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;

const FRAME_KEY_CONTEXT: &str = "kar 4 frame encryption key";
const ID_KEY_CONTEXT: &str = "kar 4 content ID key";
const AAD_DOMAIN: &[u8] = b"kar 4 frame";

/// An archive's random 256-bit file key. Wiped when dropped; never printed.
pub struct FileKey(pub [u8; 32]);

impl Drop for FileKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// The keys of one encrypted archive: the frames' AEAD key and the content ID key, both derived
/// from the file key with BLAKE3's key derivation.
pub struct FrameKeys {
    aead: XChaCha20Poly1305,
    id_key: [u8; 32],
}

impl Drop for FrameKeys {
    fn drop(&mut self) {
        self.id_key.zeroize();
    }
}

impl std::fmt::Debug for FrameKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameKeys(..)")
    }
}

/// Why a sealed frame did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl FrameKeys {
    pub fn derive(file_key: &FileKey) -> FrameKeys {
        let mut k = blake3::derive_key(FRAME_KEY_CONTEXT, &file_key.0);
        let aead = XChaCha20Poly1305::new((&k).into());
        k.zeroize();
        FrameKeys {
            aead,
            id_key: blake3::derive_key(ID_KEY_CONTEXT, &file_key.0),
        }
    }

    /// The key that content IDs and the root are keyed with.
    pub fn id_key(&self) -> &[u8; 32] {
        &self.id_key
    }

    /// The keyed content ID of `raw`: BLAKE3 keyed with the content ID key.
    pub fn content_id(&self, raw: &[u8]) -> Hash {
        *blake3::keyed_hash(&self.id_key, raw).as_bytes()
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plain`, authenticating `aad` too. Encrypted in place in
    /// the output: one copy of the bytes, as the crate's own `encrypt` makes.
    pub fn seal(&self, aad: &[u8], nonce: [u8; NONCE_LEN], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
            .expect("XChaCha20-Poly1305 seals any length a frame can have");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens `stored` (`nonce ‖ ciphertext ‖ tag`) into `out`; Err if it does not authenticate
    /// (tampered, cut, or sealed under another key or header). Decrypted in place in `out`.
    pub fn open(&self, aad: &[u8], stored: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        if stored.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError);
        }
        let (nonce, rest) = stored.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        out.clear();
        out.extend_from_slice(ct);
        self.aead
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, out, Tag::from_slice(tag))
            .map_err(|_| {
                out.clear();
                OpenError
            })
    }
}

/// Seals frames of one archive: its keys, its ID (bound into every frame's associated data) and
/// its nonces: a random 128-bit prefix drawn once per archive, then a counter, so that no two
/// frames sealed under one key share a nonce, from any thread, with no call that can fail.
#[derive(Debug, Clone)]
pub struct Sealer {
    pub keys: std::sync::Arc<FrameKeys>,
    pub archive_id: ArchiveId,
    nonces: std::sync::Arc<(Nonce16, std::sync::atomic::AtomicU64)>,
}

type Nonce16 = [u8; 16];

impl Sealer {
    pub fn new(
        keys: std::sync::Arc<FrameKeys>,
        archive_id: ArchiveId,
        nonce_prefix: [u8; 16],
    ) -> Sealer {
        Sealer {
            keys,
            archive_id,
            nonces: std::sync::Arc::new((nonce_prefix, std::sync::atomic::AtomicU64::new(0))),
        }
    }

    fn next_nonce(&self) -> [u8; NONCE_LEN] {
        let n = self
            .nonces
            .1
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = [0u8; NONCE_LEN];
        out[..16].copy_from_slice(&self.nonces.0);
        out[16..].copy_from_slice(&n.to_le_bytes());
        out
    }

    /// The header and sealed stored bytes of `raw` content, `plain` being its stored form
    /// before sealing (zstd output, or `raw` itself with compression none).
    pub fn seal_frame(
        &self,
        kind: super::frame::FrameKind,
        compression: super::frame::Compression,
        raw: &[u8],
        plain: &[u8],
    ) -> (super::frame::FrameHeader, Vec<u8>) {
        let nonce = self.next_nonce();
        let content_id = self.keys.content_id(raw);
        let code = match compression {
            super::frame::Compression::None => 0,
            super::frame::Compression::Zstd => 1,
        };
        let aad = aad(
            self.archive_id,
            kind.code(),
            code,
            raw.len() as u64,
            &content_id,
        );
        let stored = self.keys.seal(&aad, nonce, plain);
        let h = super::frame::FrameHeader::for_sealed(
            kind,
            compression,
            raw.len() as u64,
            content_id,
            &stored,
        );
        (h, stored)
    }
}

/// The content ID of `raw`: keyed in an encrypted archive, plain BLAKE3 otherwise.
pub fn content_id(keys: Option<&FrameKeys>, raw: &[u8]) -> Hash {
    match keys {
        Some(k) => k.content_id(raw),
        None => *blake3::hash(raw).as_bytes(),
    }
}

/// The associated data of a sealed frame: its archive and the header fields that describe the
/// content (kind, compression, raw length, content ID), so that a frame cannot be taken for
/// another or moved into another archive.
pub fn aad(
    archive_id: ArchiveId,
    kind: u8,
    compression: u8,
    raw_len: u64,
    content_id: &Hash,
) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_DOMAIN.len() + 16 + 2 + 8 + 32);
    a.extend_from_slice(AAD_DOMAIN);
    a.extend_from_slice(&archive_id.0);
    a.push(kind);
    a.push(compression);
    a.extend_from_slice(&raw_len.to_le_bytes());
    a.extend_from_slice(content_id);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_a_changed_byte_key_or_header() {
        let keys = FrameKeys::derive(&FileKey([7; 32]));
        let aad1 = aad(ArchiveId([1; 16]), 1, 1, 5, &[2; 32]);
        let sealed = keys.seal(&aad1, [9; NONCE_LEN], b"hello");
        assert_eq!(sealed.len() as u64, 5 + OVERHEAD);
        let mut out = Vec::new();
        keys.open(&aad1, &sealed, &mut out).unwrap();
        assert_eq!(out, b"hello");
        let mut bad = sealed.clone();
        bad[NONCE_LEN + 1] ^= 1;
        assert!(keys.open(&aad1, &bad, &mut out).is_err());
        let other = FrameKeys::derive(&FileKey([8; 32]));
        assert!(other.open(&aad1, &sealed, &mut out).is_err());
        let aad2 = aad(ArchiveId([1; 16]), 2, 1, 5, &[2; 32]);
        assert!(keys.open(&aad2, &sealed, &mut out).is_err());
        assert!(keys.open(&aad1, &sealed[..20], &mut out).is_err());
    }

    #[test]
    fn content_ids_are_keyed_per_archive() {
        let (a, b) = (
            FrameKeys::derive(&FileKey([1; 32])),
            FrameKeys::derive(&FileKey([2; 32])),
        );
        assert_ne!(a.content_id(b"x"), b.content_id(b"x"));
        assert_ne!(a.content_id(b"x"), content_id(None, b"x"));
        assert_eq!(content_id(Some(&a), b"x"), a.content_id(b"x"));
    }
}
