//! A backup that continues a chain (`--incremental-from PREV`, spec §16): PREV checked before
//! anything is read from Kafka, then, per partition, where the member starts: where PREV's
//! partition ended when the log is the one PREV read (its last record found again), the log's
//! start when the partition is new or its log restarted; and every change since PREV named.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::{BackupError, PartitionTask};
use crate::archive::verify::{VerifyLevel, verify};
use crate::archive::writer::ChainLink;
use crate::archive::{Archive, ArchiveError};
use crate::format::manifest::{
    ChainChange, ChangeKind, Lineage, Manifest, ParentRef, PartitionEntry, lineage_digest,
};
use crate::format::{Hash, hex, parse_hex};
use crate::kafka::KafkaConnection;
use crate::kafka::reader::PartitionReader;

/// The archive a member continues, checked, and what the member's writer needs of it.
pub struct Parent {
    pub archive: Archive,
    pub link: ChainLink,
}

/// Opens PREV and checks it as a quick verification does (footer, manifest, index, every
/// partition's coverage, the root recomputed from the index): a member vouches for its parent by
/// its root, so a damaged or unfinished PREV is refused. Its chunks are read later only where a
/// lineage check needs one, each checked against its content ID.
pub fn open_parent(path: &Path) -> Result<Parent, BackupError> {
    let report = verify(path, VerifyLevel::Quick)?;
    if !report.ok {
        let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        return Err(BackupError::Invalid(format!(
            "--incremental-from {}: the archive does not verify, so a member cannot vouch for it: {}{}",
            path.display(),
            problems.join("; "),
            if report.gaps.is_empty() {
                String::new()
            } else {
                format!("; lost offsets {}", report.gaps.join(", "))
            }
        )));
    }
    let archive = Archive::open(path)?;
    if archive.header().is_encrypted() {
        return Err(BackupError::Invalid(format!(
            "--incremental-from {}: the archive is encrypted; a chain over encrypted archives is not supported yet",
            path.display()
        )));
    }
    let m = archive.manifest();
    let id = archive.id().ok_or_else(|| {
        BackupError::Invalid(format!(
            "--incremental-from {}: a 2.x archive has no archive ID to link to; `kar compact` does not change that, back up in full",
            path.display()
        ))
    })?;
    let mut stored_below: HashSet<Hash> = archive.blob_ids()?;
    for b in &m.inherited_blobs {
        stored_below.insert(parse_hex(b).ok_or_else(|| {
            BackupError::Invalid(format!(
                "--incremental-from {}: its manifest names the inherited blob {b:?}, which is not a content ID",
                path.display()
            ))
        })?);
    }
    let link = ChainLink {
        parent: ParentRef {
            archive_id: id.hex(),
            root: hex(&archive.root()),
            created_at_ms: m.created_at_ms,
            depth: m.parent.as_ref().map_or(1, |p| p.depth + 1),
        },
        stored_below: Arc::new(stored_below),
    };
    Ok(Parent { archive, link })
}

/// How a member backs one partition up, beyond its task's range.
#[derive(Debug, Clone, Default)]
pub struct Continued {
    pub lineage: Option<Lineage>,
}

/// What a member changes in the backup's plan: the partitions' ranges (in the tasks), their
/// lineage, and the changes since the parent.
#[derive(Debug, Default)]
pub struct ChainPlan {
    pub partitions: BTreeMap<(String, i32), Continued>,
    pub changes: Vec<ChainChange>,
}

/// The record a partition's log ended with in the parent (or, where the parent holds no record
/// of it, the one the parent found its own parent's log continue from).
struct Anchor {
    offset: i64,
    timestamp: i64,
    digest: Hash,
}

/// Plans a member: each task (a partition's full range now, `low..high`) starts where the parent
/// left off when its log is the same log; changes are named.
pub fn plan(
    parent: &Parent,
    conn: &KafkaConnection,
    tasks: &mut [PartitionTask],
    compacted: &BTreeSet<String>,
    group: Option<&super::Assignment>,
) -> Result<ChainPlan, BackupError> {
    let m = parent.archive.manifest();
    let mut plan = ChainPlan::default();
    match group {
        Some(g) => released(m, tasks, g, &mut plan),
        None => deleted(m, tasks, &mut plan),
    }
    let mut added_topics = BTreeSet::new();
    // What needs no broker first; the lineage checks then read the broker a few at a time.
    let mut checks: Vec<(usize, Anchor, i64)> = Vec::new();
    for (i, t) in tasks.iter_mut().enumerate() {
        let hint = group.and_then(|g| {
            g.partitions
                .get(&(t.topic.clone(), t.partition))
                .copied()
                .flatten()
        });
        let Some(pe) = m.partition(&t.topic, t.partition) else {
            match group {
                Some(g) => assigned(t, hint, None, g, &mut plan),
                None => added(m, t, &mut added_topics, &mut plan),
            }
            continue;
        };
        let ends_at = continues_at(&parent.archive, &t.topic, pe)?;
        if let (Some(g), Some(h)) = (group, hint)
            && h > ends_at
        {
            // Another process of the group held the partition after this chain's parent did,
            // up to `h`.
            assigned(t, hint, Some(ends_at), g, &mut plan);
            continue;
        }
        match decide(parent, t, ends_at, pe, &mut plan.changes)? {
            Decision::Decided(c) => {
                plan.partitions.insert((t.topic.clone(), t.partition), c);
            }
            Decision::Check(a) => checks.push((i, a, ends_at)),
        }
    }
    let found = found_all(conn, tasks, &checks)?;
    for ((i, a, ends_at), found) in checks.into_iter().zip(found) {
        let t = &mut tasks[i];
        // No record at the anchor's offset any more: compaction may remove one; on a topic that
        // does not compact, the log there is another log.
        let found = found.or((!compacted.contains(&t.topic)).then_some(false));
        let c = conclude(t, a, ends_at, found, &mut plan.changes);
        plan.partitions.insert((t.topic.clone(), t.partition), c);
    }
    plan.changes
        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(plan)
}

/// How a partition the parent holds continues: decided from the offsets alone, or to be checked
/// against the broker's record at the anchor's offset.
enum Decision {
    Decided(Continued),
    Check(Anchor),
}

/// Lineage checks read at once: each opens a consumer, which takes a round trip or two.
const CHECKS_AT_ONCE: usize = 8;

/// [`found`] for every check, a few at a time.
fn found_all(
    conn: &KafkaConnection,
    tasks: &[PartitionTask],
    checks: &[(usize, Anchor, i64)],
) -> Result<Vec<Option<bool>>, BackupError> {
    crate::runtime::try_at_once(checks, CHECKS_AT_ONCE, |(i, a, _)| {
        let t = &tasks[*i];
        found(conn, &t.topic, t.partition, a)
    })
}

/// Topics (and partitions) the parent holds that the member does not: deleted, or no longer
/// selected.
fn deleted(m: &Manifest, tasks: &[PartitionTask], plan: &mut ChainPlan) {
    let now: BTreeSet<(&str, i32)> = tasks
        .iter()
        .map(|t| (t.topic.as_str(), t.partition))
        .collect();
    for t in &m.topics {
        let gone: Vec<i32> = t
            .partitions
            .iter()
            .map(|p| p.partition)
            .filter(|p| !now.contains(&(t.name.as_str(), *p)))
            .collect();
        if gone.len() == t.partitions.len() {
            plan.changes.push(change(
                ChangeKind::TopicDeleted,
                &t.name,
                None,
                "in the parent, not in this backup (deleted, or no longer selected)".into(),
            ));
        } else {
            for p in gone {
                plan.changes.push(change(
                    ChangeKind::TopicDeleted,
                    &t.name,
                    Some(p),
                    "the partition is in the parent, not in this backup (the topic was re-created with fewer partitions)".into(),
                ));
            }
        }
    }
}

/// Partitions the parent holds that Kafka no longer assigns this process of the group.
fn released(m: &Manifest, tasks: &[PartitionTask], g: &super::Assignment, plan: &mut ChainPlan) {
    let now: BTreeSet<(&str, i32)> = tasks
        .iter()
        .map(|t| (t.topic.as_str(), t.partition))
        .collect();
    for t in &m.topics {
        for p in t
            .partitions
            .iter()
            .filter(|p| !now.contains(&(t.name.as_str(), p.partition)))
        {
            plan.changes.push(change(
                ChangeKind::PartitionReleased,
                &t.name,
                Some(p.partition),
                format!("no longer assigned to this process of group {}", g.group),
            ));
        }
    }
}

/// A partition Kafka assigned this process of the group that the parent does not continue
/// (`parent_end`: where the parent's records of it end, when it holds it): from the group's
/// committed offset, or the log's start; a committed offset below the log's start lost records
/// to retention between holders (a gap, named).
fn assigned(
    t: &mut PartitionTask,
    hint: Option<i64>,
    parent_end: Option<i64>,
    g: &super::Assignment,
    plan: &mut ChainPlan,
) {
    let from = hint.unwrap_or(t.start);
    if from > t.end {
        // The group's commit lies past the log's end: the log is not the one its holder read
        // (truncated, or the topic re-created): a new lineage, from the log's start.
        let mut c = change(
            ChangeKind::EndWentBack,
            &t.topic,
            Some(t.partition),
            format!(
                "the group's committed offset {from} is past the log's end {}: a new log, backed up from its start {}",
                t.end, t.start
            ),
        );
        (c.from, c.to) = (Some(from), Some(t.end));
        plan.changes.push(c);
        plan.partitions.insert(
            (t.topic.clone(), t.partition),
            Continued {
                lineage: Some(Lineage {
                    restarted: true,
                    ..Default::default()
                }),
            },
        );
        return;
    }
    if from < t.start {
        let mut c = change(
            ChangeKind::RetentionGap,
            &t.topic,
            Some(t.partition),
            format!(
                "offsets {from}..{} were deleted by retention before this process of group {} took the partition over",
                t.start, g.group
            ),
        );
        (c.from, c.to) = (Some(from), Some(t.start));
        plan.changes.push(c);
    }
    t.start = t.start.max(from).min(t.end.max(t.start));
    let mut c = change(
        ChangeKind::PartitionAssigned,
        &t.topic,
        Some(t.partition),
        match parent_end {
            Some(e) => format!(
                "assigned to this process of group {} again; offsets {e}..{} are in another process's chain",
                g.group, t.start
            ),
            None => format!("assigned to this process of group {}", g.group),
        },
    );
    c.from = Some(t.start);
    plan.changes.push(c);
    plan.partitions
        .insert((t.topic.clone(), t.partition), Continued { lineage: None });
}

fn added(
    m: &Manifest,
    t: &PartitionTask,
    added_topics: &mut BTreeSet<String>,
    plan: &mut ChainPlan,
) {
    if m.topics.iter().any(|x| x.name == t.topic) {
        plan.changes.push(change(
            ChangeKind::PartitionsAdded,
            &t.topic,
            Some(t.partition),
            format!("a new partition, backed up from its start {}", t.start),
        ));
    } else if added_topics.insert(t.topic.clone()) {
        plan.changes.push(change(
            ChangeKind::TopicAdded,
            &t.topic,
            None,
            "a topic the parent does not hold, backed up from its start".into(),
        ));
    }
}

/// Where the parent's records of a partition end: its snapshot end when it got the whole range,
/// else where its chunks stop (a partial parent: the member takes over from there).
fn continues_at(archive: &Archive, topic: &str, pe: &PartitionEntry) -> Result<i64, ArchiveError> {
    let start = pe.start_offset.unwrap_or(0);
    match (pe.complete, pe.end_offset) {
        (true, Some(end)) => Ok(end),
        _ => Ok(archive
            .chunks_of(topic, pe.partition)?
            .iter()
            .map(|c| c.covers_to)
            .max()
            .unwrap_or(start)),
    }
}

/// Decides one partition of the parent's from the offsets: restarted on a new log, continued
/// after a retention gap or unchecked, or to be checked against the broker.
fn decide(
    parent: &Parent,
    t: &mut PartitionTask,
    ends_at: i64,
    pe: &PartitionEntry,
    changes: &mut Vec<ChainChange>,
) -> Result<Decision, BackupError> {
    let (low, high) = (t.start, t.end);
    if high < ends_at {
        changes.push(change(
            ChangeKind::EndWentBack,
            &t.topic,
            Some(t.partition),
            format!(
                "the log ends at {high}, before the parent's end {ends_at} (truncated after an unclean leader election, or the topic re-created): a new lineage, backed up from {low}"
            ),
        ));
        return Ok(Decision::Decided(restarted()));
    }
    // The parent's last record is gone, so the log cannot be compared: a topic re-created and
    // written past the parent's end since reads as this too (said in the spec).
    if low > ends_at {
        let mut c = change(
            ChangeKind::RetentionGap,
            &t.topic,
            Some(t.partition),
            format!(
                "offsets {ends_at}..{low} were deleted by retention after the parent was taken: they are in no archive of the chain"
            ),
        );
        (c.from, c.to) = (Some(ends_at), Some(low));
        changes.push(c);
        return Ok(Decision::Decided(Continued::default()));
    }
    match anchor_of(&parent.archive, &t.topic, pe)? {
        Some(a) if a.offset >= low => Ok(Decision::Check(a)),
        // Nothing to compare: no record named, or deleted by retention since.
        _ => {
            t.start = ends_at;
            Ok(Decision::Decided(Continued::default()))
        }
    }
}

/// The partition after its lineage check: continued from the parent's end, or a new lineage.
fn conclude(
    t: &mut PartitionTask,
    a: Anchor,
    ends_at: i64,
    found: Option<bool>,
    changes: &mut Vec<ChainChange>,
) -> Continued {
    let lineage = match found {
        Some(true) => Some(Lineage {
            offset: Some(a.offset),
            timestamp: Some(a.timestamp),
            digest: Some(hex(&a.digest)),
            restarted: false,
        }),
        Some(false) => {
            changes.push(change(
                ChangeKind::LogDiverged,
                &t.topic,
                Some(t.partition),
                format!(
                    "the record at offset {} is not the one the parent holds there (the topic re-created, or the log rewritten): a new lineage, backed up from {}",
                    a.offset, t.start
                ),
            ));
            return restarted();
        }
        // Compacted away since: nothing to compare.
        None => None,
    };
    t.start = ends_at;
    Continued { lineage }
}

fn restarted() -> Continued {
    Continued {
        lineage: Some(Lineage {
            restarted: true,
            ..Lineage::default()
        }),
    }
}

/// The parent's last record of the partition, or the anchor its own lineage names.
fn anchor_of(
    archive: &Archive,
    topic: &str,
    pe: &PartitionEntry,
) -> Result<Option<Anchor>, BackupError> {
    let Some(last) = archive.chunks_of(topic, pe.partition)?.pop() else {
        return Ok(pe.lineage.as_ref().and_then(|l| {
            Some(Anchor {
                offset: l.offset?,
                timestamp: l.timestamp?,
                digest: parse_hex(l.digest.as_deref()?)?,
            })
        }));
    };
    let mut dec = archive.decoder()?;
    let mut buf = Vec::new();
    archive.read_chunk(&last, &mut dec, &mut buf)?;
    let mut anchor = None;
    for r in crate::format::chunk::ChunkRecords::new(&buf, 0)
        .map_err(ArchiveError::format(archive.path(), ""))?
    {
        let r = r.map_err(ArchiveError::format(archive.path(), ""))?;
        anchor = Some(Anchor {
            offset: r.offset,
            timestamp: r.timestamp,
            digest: lineage_digest(r.key, r.value),
        });
    }
    Ok(anchor)
}

/// Whether the log holds the anchor's record at its offset: `None` when no record is there (the
/// first committed record after it has another offset).
fn found(
    conn: &KafkaConnection,
    topic: &str,
    partition: i32,
    a: &Anchor,
) -> Result<Option<bool>, BackupError> {
    let mut reader =
        PartitionReader::open_at(conn, topic, partition, rdkafka::Offset::Offset(a.offset))?;
    Ok(match reader.next_record()? {
        Some(r) if r.offset == a.offset => Some(
            r.timestamp == a.timestamp
                && lineage_digest(r.key.as_deref(), r.value.as_deref()) == a.digest,
        ),
        _ => None,
    })
}

fn change(kind: ChangeKind, topic: &str, partition: Option<i32>, detail: String) -> ChainChange {
    ChainChange {
        kind,
        topic: topic.to_string(),
        partition,
        from: None,
        to: None,
        detail,
    }
}
