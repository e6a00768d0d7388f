//! `kar inspect`: what an archive holds, from its manifest and index, without reading chunks.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::hex;
use std::collections::BTreeMap;

use crate::format::manifest::{ArchiveStatus, MetadataRef, PartitionEntry};

use super::error::ArchiveError;
use super::reader::Archive;

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: PathBuf,
    pub format_version: String,
    /// The archive ID (3.x), 32 hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_id: Option<String>,
    pub created_at_ms: i64,
    pub created_at: String,
    pub writer: String,
    pub status: ArchiveStatus,
    pub root_hash: String,
    pub file_bytes: u64,
    pub chunks: u64,
    pub records: u64,
    pub raw_bytes: u64,
    /// What the chunks take in the file, compressed (from the index).
    pub stored_bytes: u64,
    pub topics: Vec<TopicSummary>,
    pub metadata: Vec<MetadataRef>,
    pub blobs: u64,
    pub notes: Vec<String>,
    /// Consumer groups with committed offsets captured, from the `consumer-groups` document.
    pub groups: Vec<GroupSummary>,
    /// The Schema Registry snapshot's subjects, when the archive has one.
    pub schema_subjects: Vec<SubjectSummary>,
}

/// A topic as the manifest lists it, with the stored size of each partition from the index.
#[derive(Debug, Clone, Serialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: Vec<PartitionSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionSummary {
    #[serde(flatten)]
    pub entry: PartitionEntry,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubjectSummary {
    pub subject: String,
    pub versions: usize,
    pub ids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: String,
    pub partitions: usize,
}

pub fn inspect(path: impl AsRef<Path>) -> Result<InspectReport, ArchiveError> {
    inspect_opened(&Archive::open(path)?)
}

/// [`inspect`] of an archive given as a file, a set's first volume, or all of a set's volumes.
pub fn inspect_list(
    paths: &[std::path::PathBuf],
    unlock: Option<&super::crypt::Unlock>,
) -> Result<InspectReport, ArchiveError> {
    let source = super::source::map_list(paths)?;
    inspect_opened(&Archive::from_shared_with(
        std::sync::Arc::new(source),
        &paths[0],
        unlock,
    )?)
}

fn inspect_opened(a: &Archive) -> Result<InspectReport, ArchiveError> {
    let mut r = inspect_archive(a)?;
    r.groups = groups(a)?;
    let snap: Option<crate::format::schema_registry::RegistrySnapshot> =
        a.document(crate::format::schema_registry::KIND)?;
    if let Some(snap) = snap {
        r.schema_subjects = snap
            .subjects
            .iter()
            .map(|s| SubjectSummary {
                subject: s.subject.clone(),
                versions: s.versions.len(),
                ids: s.versions.iter().map(|v| v.id).collect(),
            })
            .collect();
    }
    Ok(r)
}

/// The groups listed in the archive's `consumer-groups` document (none when it has none; one
/// that does not read is an error, not "no groups").
fn groups(a: &Archive) -> Result<Vec<GroupSummary>, ArchiveError> {
    let Some(doc) = a.document::<crate::format::consumer_groups::ConsumerGroupsDoc>(
        crate::format::consumer_groups::KIND,
    )?
    else {
        return Ok(Vec::new());
    };
    Ok(doc
        .groups
        .into_iter()
        .map(|g| GroupSummary {
            group: g.group,
            partitions: g.offsets.len(),
        })
        .collect())
}

pub fn inspect_archive(a: &Archive) -> Result<InspectReport, ArchiveError> {
    let m = a.manifest();
    let parts = || m.topics.iter().flat_map(|t| &t.partitions);
    let mut stored: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    let index = a.index_content()?;
    for c in &index.chunks {
        *stored.entry((c.topic.as_str(), c.partition)).or_default() += c.stored_len;
    }
    let topics = m
        .topics
        .iter()
        .map(|t| TopicSummary {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionSummary {
                    entry: p.clone(),
                    stored_bytes: stored
                        .get(&(t.name.as_str(), p.partition))
                        .copied()
                        .unwrap_or(0),
                })
                .collect(),
        })
        .collect();
    Ok(InspectReport {
        path: a.path().to_path_buf(),
        format_version: format!("{}.{}", a.header().major, a.header().minor),
        archive_id: a.id().map(|id| id.hex()),
        created_at_ms: m.created_at_ms,
        created_at: utc(m.created_at_ms),
        writer: m.writer.clone(),
        status: m.status,
        root_hash: hex(&a.root()),
        file_bytes: a.bytes().len() as u64,
        chunks: parts().map(|p| p.chunks).sum(),
        records: parts().map(|p| p.records).sum(),
        raw_bytes: parts().map(|p| p.raw_bytes).sum(),
        stored_bytes: stored.values().sum(),
        topics,
        metadata: m.metadata.clone(),
        blobs: m.blobs,
        notes: m.notes.clone(),
        groups: Vec::new(),
        schema_subjects: Vec::new(),
    })
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, by jiff); a time outside
/// the years -9999..=9999 (a record may carry any i64) as the number itself.
pub fn utc(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(super::utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            super::utc(i64::MIN),
            format!("{} ms since the epoch", i64::MIN)
        );
    }
}
