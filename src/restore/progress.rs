//! A restore's progress on one target partition, kept in Kafka itself: each transaction that puts
//! records into the partition also commits, for the consumer group named after the archive
//! ([`progress_group`]), the target offset after its last record, with this document as the
//! offset's metadata. Records and progress land together or not at all, so after any kill the
//! committed progress says exactly how many of the partition's records are in.
//!
//! The document is small JSON (Kafka caps offset metadata at `offset.metadata.max.bytes`, 4096 by
//! default); it is parsed into [`Progress`], never guessed at.

use serde::{Deserialize, Serialize};

use crate::kafka::txn::PROGRESS_GROUP_PREFIX;

/// The one version of the document this code writes and reads.
pub const VERSION: u32 = 1;

/// Kafka's default `offset.metadata.max.bytes`, less a margin: the document is kept under it by
/// leaving out offsets the consumer-group translation would need (and saying so).
pub const MAX_BYTES: usize = 4000;

/// The consumer group that holds the progress of every restore of the archive with this root.
pub fn progress_group(root_hex: &str) -> String {
    format!("{PROGRESS_GROUP_PREFIX}{root_hex}")
}

/// The transactional ID that owns a target partition: one per partition whatever the archive,
/// so that two restores into the same partition fence each other.
pub fn transactional_id(topic: &str, partition: i32) -> String {
    format!("kar-restore.{topic}.{partition}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Document version ([`VERSION`]).
    pub kar: u32,
    /// The archived topic whose records go to this partition.
    pub source: String,
    /// How the records' schema IDs are written: [`ids_tag`].
    pub ids: String,
    /// Records of the partition's plan (archive order) that are in, committed.
    pub records: u64,
    /// `[index, target offset]` of the records the consumer-group translation needs (the first
    /// restored record at or after each archived committed offset), those restored so far.
    pub at: Vec<(u64, i64)>,
    /// False when some of `at` was left out to keep under [`MAX_BYTES`].
    pub at_complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error(
        "the restore progress committed for {group} on {topic}/{partition} is not a kar progress document ({detail}): was the group used by something else?"
    )]
    Unreadable {
        group: String,
        topic: String,
        partition: i32,
        detail: String,
    },
    #[error(
        "the restore progress committed for {group} on {topic}/{partition} has version {found}; this kar reads version {VERSION}"
    )]
    Version {
        group: String,
        topic: String,
        partition: i32,
        found: u32,
    },
}

impl Progress {
    pub fn new(source: &str, ids: &str) -> Progress {
        Progress {
            kar: VERSION,
            source: source.to_string(),
            ids: ids.to_string(),
            records: 0,
            at: Vec::new(),
            at_complete: true,
        }
    }

    /// The metadata string, under [`MAX_BYTES`]: if the offsets do not all fit, the ones of the
    /// latest records are left out and `at_complete` says so.
    pub fn encode(&self) -> String {
        let mut p = self.clone();
        loop {
            let s = serde_json::to_string(&p).expect("a progress document serializes");
            if s.len() <= MAX_BYTES || p.at.is_empty() {
                return s;
            }
            let keep = p.at.len() * MAX_BYTES / s.len();
            p.at.truncate(keep.min(p.at.len() - 1));
            p.at_complete = false;
        }
    }

    pub fn decode(
        metadata: &str,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Progress, ProgressError> {
        #[derive(Deserialize)]
        struct Version {
            kar: u32,
        }
        let unreadable = |e: serde_json::Error| ProgressError::Unreadable {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            detail: e.to_string(),
        };
        let v: Version = serde_json::from_str(metadata).map_err(unreadable)?;
        if v.kar != VERSION {
            return Err(ProgressError::Version {
                group: group.to_string(),
                topic: topic.to_string(),
                partition,
                found: v.kar,
            });
        }
        serde_json::from_str(metadata).map_err(unreadable)
    }

    /// The target offset of restored record `index`, if it is one the document holds.
    pub fn offset_of(&self, index: u64) -> Option<i64> {
        self.at.iter().find(|(k, _)| *k == index).map(|(_, o)| *o)
    }
}

/// How a restore writes schema IDs into the records: `as-archived`, or `rewritten:` and the first
/// 16 hex digits of the BLAKE3 hash of the source → target ID pairs. A resumed restore must write
/// the same bytes as the run it continues.
pub fn ids_tag(rewrite: Option<&[(u32, u32)]>) -> String {
    let Some(pairs) = rewrite else {
        return "as-archived".to_string();
    };
    let mut pairs = pairs.to_vec();
    pairs.sort_unstable();
    let mut h = blake3::Hasher::new();
    for (s, t) in pairs {
        h.update(&s.to_le_bytes());
        h.update(&t.to_le_bytes());
    }
    format!("rewritten:{}", &h.finalize().to_hex()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reads_back_as_written() {
        let mut p = Progress::new("orders", &ids_tag(None));
        p.records = 1029;
        p.at = vec![(0, 0), (1029, 1031)];
        let s = p.encode();
        assert_eq!(
            s,
            r#"{"kar":1,"source":"orders","ids":"as-archived","records":1029,"at":[[0,0],[1029,1031]],"at_complete":true}"#
        );
        assert_eq!(Progress::decode(&s, "g", "t", 0).unwrap(), p);
        assert_eq!(p.offset_of(1029), Some(1031));
        assert_eq!(p.offset_of(5), None);
    }

    #[test]
    fn too_many_offsets_are_cut_and_the_cut_is_said() {
        let mut p = Progress::new("orders", "as-archived");
        p.at = (0..1000u64)
            .map(|k| (k * 1_000_003, k as i64 * 1_000_007))
            .collect();
        let s = p.encode();
        assert!(s.len() <= MAX_BYTES, "{}", s.len());
        let back = Progress::decode(&s, "g", "t", 0).unwrap();
        assert!(!back.at_complete);
        assert!(back.at.len() > 100, "{}", back.at.len());
        assert_eq!(back.at[..], p.at[..back.at.len()]);
    }

    #[test]
    fn foreign_metadata_and_other_versions_are_named() {
        let e = Progress::decode("", "kar-restore.ab", "t", 3).unwrap_err();
        assert!(e.to_string().contains("kar-restore.ab on t/3"), "{e}");
        let e = Progress::decode(r#"{"kar":2}"#, "g", "t", 0).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        let e = Progress::decode(r#"{"kar":1,"source":"x"}"#, "g", "t", 0).unwrap_err();
        assert!(matches!(e, ProgressError::Unreadable { .. }), "{e}");
    }

    #[test]
    fn the_ids_tag_follows_the_mapping_not_its_order() {
        let a = ids_tag(Some(&[(1, 2), (3, 4)]));
        assert_eq!(a, ids_tag(Some(&[(3, 4), (1, 2)])));
        assert_ne!(a, ids_tag(Some(&[(1, 2), (3, 5)])));
        assert!(a.starts_with("rewritten:"));
        assert_eq!(ids_tag(None), "as-archived");
    }
}
