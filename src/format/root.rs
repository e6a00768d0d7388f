//! The root hash: one line two people on either side of an air gap can compare. It covers content,
//! not stored bytes, so it does not change with the zstd version or level, nor with the order in
//! which a concurrent writer happened to write frames:
//!
//! `root = blake3("kar-root-v1" ‖ manifest content ID ‖ u64 LE count ‖ content IDs)`
//!
//! where the content IDs are those of every record chunk, blob and metadata frame, each once,
//! sorted in ascending byte order.

use super::Hash;

pub const DOMAIN: &[u8] = b"kar-root-v1";

/// Computes the root from the manifest's content ID and the content IDs (any order, duplicates
/// allowed: they are sorted and deduplicated here).
pub fn root_hash(manifest_id: &Hash, content_ids: impl IntoIterator<Item = Hash>) -> Hash {
    root_hash_keyed(None, manifest_id, content_ids)
}

/// [`root_hash`], keyed with the content ID key in an encrypted archive (§15).
pub fn root_hash_keyed(
    key: Option<&[u8; 32]>,
    manifest_id: &Hash,
    content_ids: impl IntoIterator<Item = Hash>,
) -> Hash {
    let mut ids: Vec<Hash> = content_ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h = match key {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    };
    h.update(DOMAIN);
    h.update(manifest_id);
    h.update(&(ids.len() as u64).to_le_bytes());
    for id in &ids {
        h.update(id);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_duplicates_do_not_matter_but_content_does() {
        let m = [9u8; 32];
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(root_hash(&m, [a, b]), root_hash(&m, [b, a, a]));
        assert_ne!(root_hash(&m, [a, b]), root_hash(&m, [a]));
        assert_ne!(root_hash(&m, [a, b]), root_hash(&[8u8; 32], [a, b]));
    }
}
