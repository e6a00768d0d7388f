//! The `kafka-topics` metadata document (§5.1): the topics as the backup found them, written
//! before any record, so it survives a killed backup. Repair reads the snapshot range of every
//! partition from it when the manifest was never written; restore reads the topics.
//! Members are declared in name order: serialized, they are in the same order as a JSON object
//! with sorted keys, as documents were written before they were typed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::FormatError;

pub const KIND: &str = "kafka-topics";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaTopicsDoc {
    pub brokers: Vec<Broker>,
    pub captured_at_ms: i64,
    /// The cluster's ID, where it gave one.
    pub cluster_id: Option<String>,
    pub kind: String,
    pub partitions: Vec<DeclaredRange>,
    pub topics: Vec<TopicInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    pub address: String,
    pub id: i32,
}

/// A topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Configs set on the topic itself (not broker or static defaults).
    pub configs: BTreeMap<String, String>,
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Configs the broker marks sensitive: names only, values are never read.
    #[serde(default)]
    pub sensitive_configs: Vec<String>,
}

/// One partition's snapshot range `start_offset..end_offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredRange {
    pub end_offset: i64,
    pub partition: i32,
    pub start_offset: i64,
    pub topic: String,
}

#[derive(Debug, Deserialize)]
struct Doc {
    kind: String,
    partitions: Vec<DeclaredRange>,
}

/// The snapshot ranges of a `kafka-topics` document. `offset` names the document in errors.
pub fn declared_ranges(raw: &[u8], offset: u64) -> Result<Vec<DeclaredRange>, FormatError> {
    let corrupt = |detail: String| FormatError::Corrupt {
        structure: "kafka-topics document",
        offset,
        detail,
    };
    let doc: Doc = serde_json::from_slice(raw).map_err(|e| corrupt(format!("{e}")))?;
    if doc.kind != "kafka-topics" {
        return Err(corrupt(format!("kind is {:?}", doc.kind)));
    }
    Ok(doc.partitions)
}
