//! The `kafka-topics` metadata document (§5.1): written before any record, so it survives a
//! killed backup. Only the members a reader of the archive itself relies on are typed here: the
//! snapshot range of every partition, which repair needs when the manifest was never written.

use serde::Deserialize;

use super::FormatError;

/// One partition's snapshot range `start_offset..end_offset`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeclaredRange {
    pub topic: String,
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
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
