//! `kar diff`: a target cluster's topics against the archive, record by record, per partition in
//! order: key, value, headers, timestamp and its type. With the target registry, a schema ID that
//! differs is the same where both IDs name the same schema text (a restore that rewrote IDs diffs
//! clean), and the report lists the ID mapping it found. Memory: a chunk and a window of records a
//! side, whatever the size.

pub mod align;
pub mod same;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use regex::Regex;
use serde::Serialize;

use crate::archive::crypt::Unlock;
use crate::archive::index::ChunkEntry;
use crate::archive::{Archive, ArchiveError};
use crate::format::chunk::ChunkRecords;
use crate::format::hex;
use crate::kafka::connection::KafkaConnection;
use crate::kafka::reader::{HighWatermarks, OwnedRecord, PartitionReader};
use crate::kafka::sink::Target;
use crate::kafka::source::SourceError;
use crate::registry::client::{RegistryClient, RegistryError, RegistrySettings};
use crate::schema::Catalog;
use align::{Outcome, Records};
use same::{Sameness, TargetRegistry};

#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub archive: PathBuf,
    pub unlock: Option<Arc<Unlock>>,
    pub kafka: KafkaConnection,
    pub registry: Option<RegistrySettings>,
    /// Archive topic → target topic (others keep their names).
    pub map: BTreeMap<String, String>,
    pub topics: Option<Regex>,
    /// Differences listed per partition (all are counted).
    pub show: usize,
    /// How far ahead a record only on one side is looked for.
    pub window: usize,
    /// How long a target partition's transactions may take to end before the diff is an error
    /// naming the offsets still in one (a restore's last commit is visible only once its markers
    /// are written, a moment after it returns).
    pub settle: std::time::Duration,
}

impl DiffOptions {
    pub fn new(archive: PathBuf, kafka: KafkaConnection) -> Self {
        DiffOptions {
            archive,
            unlock: None,
            kafka,
            registry: None,
            map: BTreeMap::new(),
            topics: None,
            show: 5,
            window: 256,
            settle: std::time::Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub equal: u64,
    pub different: u64,
    pub missing: u64,
    pub extra: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.equal += o.equal;
        self.different += o.different;
        self.missing += o.missing;
        self.extra += o.extra;
    }

    pub fn clean(&self) -> bool {
        self.different + self.missing + self.extra == 0
    }
}

/// One difference, with the offsets on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `different`, `missing` (in the archive, not on the target) or `extra`.
    pub kind: &'static str,
    pub archive_offset: Option<i64>,
    pub target_offset: Option<i64>,
    /// The fields that differ (`different` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionDiff {
    pub topic: String,
    pub target_topic: String,
    pub partition: i32,
    #[serde(flatten)]
    pub counts: Counts,
    pub first_differences: Vec<Difference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub archive: PathBuf,
    pub root: String,
    pub partitions: Vec<PartitionDiff>,
    #[serde(flatten)]
    pub totals: Counts,
    /// Archive schema ID → target schema ID, where records differ in the ID only and both name
    /// the same schema text.
    pub id_map: BTreeMap<u32, u32>,
    pub ok: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Kafka(#[from] SourceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Failed(String),
}

/// An archived partition's records, a chunk at a time.
struct ArchiveSide<'a> {
    archive: &'a Archive,
    chunks: VecDeque<ChunkEntry>,
    dec: crate::format::frame::ContentDecoder,
    buf: Vec<u8>,
    records: VecDeque<OwnedRecord>,
}

impl Records<OwnedRecord, DiffError> for ArchiveSide<'_> {
    fn next_record(&mut self) -> Result<Option<OwnedRecord>, DiffError> {
        while self.records.is_empty() {
            let Some(c) = self.chunks.pop_front() else {
                return Ok(None);
            };
            self.archive.read_chunk(&c, &mut self.dec, &mut self.buf)?;
            let ctx = format!(
                " (record chunk {} of {}/{}, frame at offset {})",
                &hex(&c.chunk_id)[..16],
                c.topic,
                c.partition,
                c.frame_offset
            );
            let path = self.archive.path();
            let bad = |e| ArchiveError::format(path, ctx.clone())(e);
            for r in ChunkRecords::new(&self.buf, 0).map_err(bad)? {
                self.records.push_back(OwnedRecord::of(&r.map_err(bad)?));
            }
        }
        Ok(self.records.pop_front())
    }
}

struct TargetSide(Option<PartitionReader>);

impl Records<OwnedRecord, DiffError> for TargetSide {
    fn next_record(&mut self) -> Result<Option<OwnedRecord>, DiffError> {
        match &mut self.0 {
            Some(r) => Ok(r.next_record()?),
            None => Ok(None),
        }
    }
}

/// The fields in which an archived record and a target record differ (none: the same).
pub type Differ<'f> =
    dyn FnMut(&OwnedRecord, &OwnedRecord) -> Result<Vec<&'static str>, String> + 'f;

/// Told of each pair found the same: (topic, partition, archived record, target record).
pub type OnSame<'f> = dyn FnMut(&str, i32, &OwnedRecord, &OwnedRecord) + 'f;

/// Diffs the target against the archive.
pub fn diff(opts: &DiffOptions, rt: &crate::runtime::Runtime) -> Result<DiffReport, DiffError> {
    let archive = Archive::open_with(&opts.archive, opts.unlock.as_deref())?;
    let snapshot = crate::registry::snapshot::read_from_archive(&archive)?;
    let catalog = Catalog::of(snapshot.as_ref(), &archive);
    let target_registry = match &opts.registry {
        Some(s) => Some(TargetRegistry {
            client: RegistryClient::new(s)?,
            rt: rt.context(),
        }),
        None => None,
    };
    let mut same = Sameness::new(&catalog, target_registry);
    let mut report = diff_with(
        &archive,
        opts,
        rt,
        &mut |a, t| same.differences(a, t),
        &mut |_, _, _, _| {},
    )?;
    report.id_map = same.id_map.clone();
    Ok(report)
}

/// Diffs the target against an opened archive, records compared by `differ`.
pub fn diff_with(
    archive: &Archive,
    opts: &DiffOptions,
    rt: &crate::runtime::Runtime,
    differ: &mut Differ<'_>,
    on_same: &mut OnSame<'_>,
) -> Result<DiffReport, DiffError> {
    let target = Target::connect(&opts.kafka, rt.context())?;
    let target_topics = target.topics()?;
    let highs = HighWatermarks::new(&opts.kafka)?;
    let mut report = DiffReport {
        archive: opts.archive.clone(),
        root: hex(&archive.root()),
        partitions: Vec::new(),
        totals: Counts::default(),
        id_map: BTreeMap::new(),
        ok: false,
    };
    for t in &archive.manifest().topics {
        if opts.topics.as_ref().is_some_and(|re| !re.is_match(&t.name)) {
            continue;
        }
        let to = opts
            .map
            .get(&t.name)
            .cloned()
            .unwrap_or_else(|| t.name.clone());
        let on_target = target_topics.get(&to).map_or(0, |tt| tt.partitions);
        // The archive's partitions and every one the target has: a repaired archive may list
        // only some, and records in a target partition it lacks are extra.
        let partitions: std::collections::BTreeSet<i32> = t
            .partitions
            .iter()
            .map(|p| p.partition)
            .chain(0..on_target)
            .collect();
        for p in partitions {
            let reader = (p < on_target)
                .then(|| PartitionReader::open(&opts.kafka, &highs, &to, p, opts.settle))
                .transpose()?;
            let chunks = if t.partitions.iter().any(|e| e.partition == p) {
                archive.chunks_of(&t.name, p)?
            } else {
                Vec::new()
            };
            let side = ArchiveSide {
                archive,
                chunks: chunks.into(),
                dec: archive.decoder()?,
                buf: Vec::new(),
                records: VecDeque::new(),
            };
            let d = diff_partition(
                opts,
                (differ, on_same),
                side,
                TargetSide(reader),
                (&t.name, &to, p),
            )?;
            report.totals.add(&d.counts);
            report.partitions.push(d);
        }
    }
    report.ok = report.totals.clean();
    Ok(report)
}

fn diff_partition(
    opts: &DiffOptions,
    (differ, on_same): (&mut Differ<'_>, &mut OnSame<'_>),
    mut archive: ArchiveSide<'_>,
    mut target: TargetSide,
    (topic, to, partition): (&str, &str, i32),
) -> Result<PartitionDiff, DiffError> {
    let mut d = PartitionDiff {
        topic: topic.to_string(),
        target_topic: to.to_string(),
        partition,
        counts: Counts::default(),
        first_differences: Vec::new(),
    };
    let mut differences =
        |a: &OwnedRecord, t: &OwnedRecord| differ(a, t).map_err(DiffError::Failed);
    let mut found = |o: Outcome<OwnedRecord>| {
        let (kind, a, t, fields) = match o {
            Outcome::Equal { archive, target } => {
                d.counts.equal += 1;
                on_same(topic, partition, &archive, &target);
                return;
            }
            Outcome::Different {
                archive,
                target,
                fields,
            } => {
                d.counts.different += 1;
                (
                    "different",
                    Some(archive.offset),
                    Some(target.offset),
                    fields,
                )
            }
            Outcome::Missing(r) => {
                d.counts.missing += 1;
                ("missing", Some(r.offset), None, Vec::new())
            }
            Outcome::Extra(r) => {
                d.counts.extra += 1;
                ("extra", None, Some(r.offset), Vec::new())
            }
        };
        if d.first_differences.len() < opts.show {
            d.first_differences.push(Difference {
                kind,
                archive_offset: a,
                target_offset: t,
                fields,
            });
        }
    };
    align::align(
        &mut archive,
        &mut target,
        opts.window,
        &mut differences,
        &mut found,
    )?;
    Ok(d)
}
