//! The manifest: a UTF-8 JSON document (the content of the `Manifest` frame) that says what the
//! archive holds and what "complete" means for it. Readers ignore fields they do not know, so a
//! newer minor version may add fields.

use serde::{Deserialize, Serialize};

use super::FormatError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveStatus {
    /// Every selected partition was captured over its whole snapshot range.
    Complete,
    /// The writer stopped early (an error, Ctrl-C); partitions say which are complete.
    Partial,
    /// Rebuilt by `kar repair` from the complete chunks of a damaged or unfinished archive.
    Repaired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_major: u16,
    pub format_minor: u16,
    /// When the backup started, milliseconds since the Unix epoch (UTC).
    pub created_at_ms: i64,
    /// The program that wrote the archive, e.g. "kar 0.1.0".
    pub writer: String,
    pub status: ArchiveStatus,
    #[serde(default)]
    pub topics: Vec<TopicEntry>,
    /// Metadata frames (topic configs, groups, registry snapshot) by kind.
    #[serde(default)]
    pub metadata: Vec<MetadataRef>,
    /// Number of blob frames.
    #[serde(default)]
    pub blobs: u64,
    /// Free-text remarks, e.g. what a repair dropped.
    #[serde(default)]
    pub notes: Vec<String>,
    /// A chain member's parent (§16); absent in a full archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Content IDs (64 hex digits, ascending) of the blobs this member names and an ancestor
    /// stores (§16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited_blobs: Vec<String>,
    /// What changed since the parent (§16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChainChange>,
}

/// The archive a chain member continues (§16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// 32 hex digits.
    pub archive_id: String,
    /// The parent's root hash, 64 hex digits.
    pub root: String,
    pub created_at_ms: i64,
    /// The parent's depth + 1: the base of a chain has depth 0.
    pub depth: u32,
}

/// One change between a chain member and its parent (§16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainChange {
    pub kind: ChangeKind,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    TopicAdded,
    TopicDeleted,
    PartitionsAdded,
    RetentionGap,
    EndWentBack,
    LogDiverged,
    /// A group member (continuous `--group`): Kafka assigned this process a partition its
    /// parent does not continue; the member takes it from `from` (where the group's previous
    /// holder's chain ended, by the group's committed offset).
    PartitionAssigned,
    /// A group member: the parent held the partition, this process no longer does.
    PartitionReleased,
}

impl ChangeKind {
    /// Records lost (a retention gap) or a log restarted: what an operator must hear of.
    pub fn is_loss_or_restart(self) -> bool {
        matches!(
            self,
            ChangeKind::RetentionGap | ChangeKind::EndWentBack | ChangeKind::LogDiverged
        )
    }
}

/// How a member's partition continues its parent's (§16): from the record it was found to
/// continue, or restarted on a new log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lineage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEntry {
    pub name: String,
    pub partitions: Vec<PartitionEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    pub partition: i32,
    /// The snapshot range the backup set out to capture: offsets `start_offset..end_offset`.
    #[serde(default)]
    pub start_offset: Option<i64>,
    #[serde(default)]
    pub end_offset: Option<i64>,
    /// Whether every record of that range is in the archive.
    pub complete: bool,
    pub records: u64,
    pub chunks: u64,
    #[serde(default)]
    pub first_offset: Option<i64>,
    #[serde(default)]
    pub last_offset: Option<i64>,
    #[serde(default)]
    pub min_timestamp: Option<i64>,
    #[serde(default)]
    pub max_timestamp: Option<i64>,
    /// Bytes of chunk content (uncompressed). How many bytes the chunks take in the file depends
    /// on compression, so it is in the index, not here: the manifest (and with it the root hash)
    /// describes content only, and stays the same when an archive is recompressed.
    pub raw_bytes: u64,
    /// Offset ranges of the snapshot range that no chunk covers and that a repair kept chunks
    /// beyond (`kar repair --keep-gaps`): records known to be lost. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<OffsetRange>,
    /// In a chain member: how it continues its parent's partition (§16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
}

/// Offsets `from..to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRef {
    pub kind: String,
    /// Content ID, 64 hex digits.
    pub id: String,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// `offset` is the file offset of the manifest content, for the error.
    pub fn decode(raw: &[u8], offset: u64) -> Result<Manifest, FormatError> {
        serde_json::from_slice(raw).map_err(|e| FormatError::Corrupt {
            structure: "manifest",
            offset,
            detail: format!("not a valid manifest: {e}"),
        })
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionEntry> {
        self.topics
            .iter()
            .find(|t| t.name == topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
    }
}

/// The digest a chain member's `lineage` names a record by (§16): BLAKE3 over the key and the
/// value, each a u32 length (`0xFFFFFFFF` for null, then no bytes) and its bytes.
pub fn lineage_digest(key: Option<&[u8]>, value: Option<&[u8]>) -> super::Hash {
    let mut h = blake3::Hasher::new();
    for field in [key, value] {
        match field {
            Some(b) => {
                h.update(&(b.len() as u32).to_le_bytes());
                h.update(b);
            }
            None => {
                h.update(&u32::MAX.to_le_bytes());
            }
        }
    }
    *h.finalize().as_bytes()
}
