//! The `consumer-groups` metadata document (§5.1): every captured consumer group's committed
//! offsets, read by restore (translated to the target's offsets) and inspect. Members in name
//! order (see `kafka_topics`).

use serde::{Deserialize, Serialize};

pub const KIND: &str = "consumer-groups";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupsDoc {
    pub captured_at_ms: i64,
    pub groups: Vec<GroupOffsets>,
    pub kind: String,
}

/// The committed offsets of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    pub group: String,
    pub offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub metadata: String,
    pub offset: i64,
    pub partition: i32,
    pub topic: String,
}
