//! `kar backup`: a consistent snapshot of topics, their configs and consumer-group offsets from a
//! live cluster, into one archive.
//!
//! At start, every selected partition's range `start..end` is fixed (log start and last stable
//! offset, or the `--from-time`/`--until-time` window); exactly that range is captured, whatever is
//! produced meanwhile. Partitions are consumed concurrently by worker threads, each with its own
//! consumer; workers encode chunks, a pool of compression threads seals them, and the one writer
//! writes them, all through bounded channels, so memory stays bounded whatever the topic size.

mod chain;
mod compress;
pub mod continuous;
mod group;
mod worker;
mod writing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;
use thiserror::Error;

use crate::archive::writer::{BackgroundSync, OutputKind, finish_output, now_ms};
use crate::archive::{ArchiveError, ArchiveWriter, WriterOptions};
use crate::format::consumer_groups::ConsumerGroupsDoc;
use crate::format::hex;
use crate::format::kafka_topics::{Broker, DeclaredRange, KafkaTopicsDoc};
use crate::format::manifest::ArchiveStatus;
use crate::format::manifest::{ChainChange, ParentRef};
use crate::format::provenance::Provenance;
use crate::format::schema_registry::RegistrySnapshot;
use crate::kafka::KafkaConnection;
use crate::kafka::source::{GroupOffsets, Source, SourceError, TopicInfo, is_internal};
use crate::progress::Event as ProgressEvent;
use crate::registry::client::{RegistryClient, RegistryError, RegistrySettings};
use crate::registry::snapshot::{Captured, SubjectFilter, capture, write_to_archive};
use crate::runtime::{Context, Runtime};

pub use compress::{AUTO_LEVELS, CompressionMode};
pub use worker::PartitionTask;
use writing::Collector;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error(transparent)]
    Kafka(Box<SourceError>),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Writing the archive failed part-way (a full disk): what was written is left in place.
    #[error(
        "{source}; the unfinished archive {path} keeps every chunk written before the error: once there is room, recover them with `kar repair {path}` (or remove it and back up again)",
        path = .path.display()
    )]
    WriteFailed {
        path: PathBuf,
        source: Box<ArchiveError>,
    },
    /// Writing the archive to a stream failed part-way (its reader went away): the reader has an
    /// unfinished archive.
    #[error(
        "{source}: the archive on {path} stops there, unfinished; its reader has every byte before the error (`kar verify -` there names where it ended, `kar repair` of what it kept recovers every complete chunk)",
        path = .path.display()
    )]
    StreamFailed {
        path: PathBuf,
        source: Box<ArchiveError>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no topic matches the selection ({0}); nothing to back up")]
    NothingSelected(String),
}

impl From<SourceError> for BackupError {
    fn from(e: SourceError) -> Self {
        BackupError::Kafka(Box::new(e))
    }
}

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub kafka: KafkaConnection,
    pub out: PathBuf,
    /// Cut the archive into volumes of at most this many bytes (`out`, `out.002`, ...).
    pub volume_size: Option<u64>,
    /// Topics to back up (anchored regexes); empty = every topic that is not internal.
    pub topics: Vec<String>,
    pub exclude: Vec<String>,
    /// Consumer groups whose offsets to capture (anchored regex); `None` = all but kar's own
    /// restore-progress groups (`kar-restore.*`), which belong to the cluster they were made on.
    pub groups: Option<String>,
    /// Capture only records from this time on (ms since the epoch), resolved per partition with
    /// offsets-for-times.
    pub from_time: Option<i64>,
    /// Capture only records before this time.
    pub until_time: Option<i64>,
    /// Continue a chain (§16): back up what is new since this archive (the chain's newest).
    pub incremental_from: Option<PathBuf>,
    pub writer: WriterOptions,
    /// Where the detached signature goes when `writer.signer` is set: by default `OUT.minisig`
    /// beside a file (or a volume set's first volume); a stream gets one only when this names
    /// the file.
    pub signature_out: Option<PathBuf>,
    /// How record chunks are stored: zstd at `writer.zstd_level`, or as they are.
    pub compression: CompressionMode,
    /// Compression threads (default: one per core).
    pub compression_threads: usize,
    /// Worker threads, each with its own consumer.
    pub concurrency: usize,
    /// Bytes each worker's consumer may prefetch and queue (librdkafka's queue and fetch sizes):
    /// with the chunk size, what bounds a backup's memory.
    pub fetch_buffer_bytes: usize,
    /// A partition that makes no progress for this long (broker lost, topic deleted) fails.
    pub stall_timeout: Duration,
    /// How long transactions open when the backup starts may take to end before their records
    /// are left out (and named in a warning).
    pub settle: Duration,
    /// The command line, secrets removed, for the provenance record.
    pub command_line: Vec<String>,
    /// The Schema Registry to capture into the same archive, if any.
    pub registry: Option<RegistrySettings>,
    /// Which subjects to capture (referenced subjects are pulled in).
    pub subjects: SubjectFilter,
    /// Set to stop early (Ctrl-C): the archive is finished as partial.
    pub cancel: Arc<AtomicBool>,
    /// Told of the offsets read, per topic, as the backup goes.
    pub progress: crate::progress::Progress,
    /// A continuous-mode member: read on past the log ends until told to roll.
    pub follow: Option<Follow>,
    /// A member of a continuous group (`--group`): only the partitions Kafka assigned this
    /// process, each from where the group's committed offset says its previous holder ended.
    pub assignment: Option<Assignment>,
}

/// The partitions Kafka's group protocol assigned a process of a continuous group, each with the
/// group's committed offset (`None`: none committed: the log's start).
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    pub group: String,
    pub partitions: BTreeMap<(String, i32), Option<i64>>,
}

/// How a continuous-mode member reads: each partition from its start on as records come, past
/// the end the log had when the member began, until `roll` is set (by the roll timer, by
/// `max_bytes` of archive written, or by SIGTERM); then each partition ends just after the last
/// record read of it, complete, and the next member starts there. The registry and the group
/// offsets are those at the member's start (documents precede records, §3).
#[derive(Debug, Clone, Default)]
pub struct Follow {
    pub roll: Arc<AtomicBool>,
    /// Roll once the archive holds this many bytes.
    pub max_bytes: Option<u64>,
    /// Roll once records have been read this long (timed from when reading begins, not from
    /// the member's start: planning a member reads the cluster and can take a second or more).
    pub every: Option<Duration>,
}

/// A group member's first archive (no parent): each assigned partition from the group's
/// committed offset; one below the log's start lost records between holders (warned).
fn assigned_starts(a: &Assignment, tasks: &mut [PartitionTask], warnings: &mut Vec<String>) {
    for t in tasks {
        if let Some(Some(c)) = a.partitions.get(&(t.topic.clone(), t.partition)) {
            if *c > t.end {
                warnings.push(format!(
                    "{}/{}: the group's committed offset {c} is past the log's end {}: a new log, backed up from its start {}",
                    t.topic, t.partition, t.end, t.start
                ));
                continue;
            }
            if *c < t.start {
                warnings.push(format!(
                    "{}/{}: offsets {c}..{} were deleted by retention before this process of group {} took the partition over",
                    t.topic, t.partition, t.start, a.group
                ));
            }
            t.start = t.start.max(*c).min(t.end.max(t.start));
        }
    }
}

/// Sets `roll` once `every` has passed (or returns when it is set otherwise).
fn roll_timer(roll: Arc<AtomicBool>, every: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while !roll.load(Ordering::SeqCst) {
            if started.elapsed() >= every {
                roll.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// A followed partition's end before the roll: none yet.
pub(crate) const FOLLOW_END: i64 = i64::MAX;

impl BackupOptions {
    /// Every numeric option within what works; the error names the flag.
    pub fn check_ranges(&self) -> Result<(), BackupError> {
        let w = &self.writer;
        let problems = [
            (
                !(1024..=64 << 20).contains(&w.chunk_target_bytes),
                format!(
                    "--chunk-size {} is not between 1 KiB and 64 MiB",
                    w.chunk_target_bytes
                ),
            ),
            (
                !(1..=22).contains(&w.zstd_level),
                format!("--zstd-level {} is not between 1 and 22", w.zstd_level),
            ),
            (
                self.concurrency < 1,
                "--concurrency must be at least 1".to_string(),
            ),
            (
                self.fetch_buffer_bytes < 64 * 1024,
                format!("--fetch-buffer {} is below 64 KiB", self.fetch_buffer_bytes),
            ),
            (
                self.stall_timeout.is_zero(),
                "--stall-timeout must be at least 1 second".to_string(),
            ),
        ];
        match problems.into_iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(BackupError::Invalid(why)),
            None => Ok(()),
        }
    }

    pub fn new(kafka: KafkaConnection, out: impl Into<PathBuf>) -> Self {
        BackupOptions {
            kafka,
            out: out.into(),
            volume_size: None,
            topics: Vec::new(),
            exclude: Vec::new(),
            groups: None,
            from_time: None,
            until_time: None,
            incremental_from: None,
            writer: WriterOptions::default(),
            signature_out: None,
            compression: CompressionMode::default(),
            compression_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            concurrency: 4,
            fetch_buffer_bytes: 8 * 1024 * 1024,
            stall_timeout: Duration::from_secs(60),
            settle: Duration::from_secs(10),
            command_line: Vec::new(),
            registry: None,
            subjects: SubjectFilter::default(),
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Default::default(),
            follow: None,
            assignment: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionResult {
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub records: u64,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicResult {
    pub name: String,
    pub partitions: Vec<PartitionResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub out: PathBuf,
    /// The volumes written, with `--volume-size`; empty for one file or a stream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<PathBuf>,
    /// The signing key's ID and the detached signature file, when signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_file: Option<PathBuf>,
    pub status: ArchiveStatus,
    pub root_hash: String,
    pub topics: Vec<TopicResult>,
    pub groups: usize,
    pub records: u64,
    /// Key, value and header bytes read from Kafka.
    pub record_bytes: u64,
    pub archive_bytes: u64,
    pub compression: CompressionMode,
    /// Record chunks written, and how many of them are stored uncompressed.
    pub chunks: u64,
    pub chunks_uncompressed: u64,
    /// Record chunks compressed at each zstd level (one level unless `--compression auto`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub zstd_levels: BTreeMap<i32, u64>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySummary>,
    /// Selections that took nothing (`--topics`, `--groups`, `--subjects` patterns), named; a
    /// chain member's losses and restarted logs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The archive this member continues (`--incremental-from`, §16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// A member's changes since its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<ChainChange>>,
    /// Schema texts named, not stored: the chain below holds them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inherited_blobs: Option<usize>,
}

impl BackupReport {
    /// Whether records were lost between the parent and this member: the chain is not whole.
    pub fn chain_lost_records(&self) -> bool {
        self.changes
            .iter()
            .flatten()
            .any(|c| c.kind == crate::format::manifest::ChangeKind::RetentionGap)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistrySummary {
    pub source: String,
    pub subjects: usize,
    pub versions: usize,
    pub schema_texts: usize,
    pub requests: u64,
    pub order_complete: bool,
    pub order_problems: Vec<String>,
    pub pulled_in: Vec<String>,
}

fn anchored(patterns: &[String], what: &str) -> Result<Vec<Regex>, BackupError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| BackupError::Invalid(format!("{what} pattern {p:?}: {e}")))
        })
        .collect()
}

/// Which topics a backup takes: matching an include pattern (or any, when there are none), no
/// exclude pattern, and not internal unless an include pattern is exactly the topic's name.
pub fn select_topics(
    all: &[String],
    include: &[String],
    exclude: &[String],
) -> Result<Vec<String>, BackupError> {
    let inc = anchored(include, "--topics")?;
    let exc = anchored(exclude, "--exclude")?;
    Ok(all
        .iter()
        .filter(|t| {
            let named = include.iter().any(|p| p == *t);
            let included = if include.is_empty() {
                true
            } else {
                inc.iter().any(|r| r.is_match(t))
            };
            included && !exc.iter().any(|r| r.is_match(t)) && (!is_internal(t) || named)
        })
        .cloned()
        .collect())
}

/// Messages from workers to the writer.
pub(crate) enum Event {
    /// A chunk, its records' key, value and header bytes, and the zstd level it was compressed
    /// at (`None`: stored as it is).
    Chunk(crate::format::chunk::SealedChunk, u64, Option<i32>),
    /// Every record of the partition was read, in `chunks` chunks (which may reach the writer
    /// after this, from the compression stage).
    Done {
        topic: String,
        partition: i32,
        records: u64,
        chunks: u64,
        /// Where a followed partition ended at the roll (`None`: its planned end).
        end: Option<i64>,
    },
    Failed {
        topic: String,
        partition: i32,
        records: u64,
        error: String,
    },
}

/// What the cluster looked like at the start of a backup.
#[derive(Default)]
struct KafkaSnapshot {
    topics: Vec<TopicInfo>,
    tasks: Vec<PartitionTask>,
    groups: Vec<GroupOffsets>,
    cluster_id: Option<String>,
    brokers: Vec<(i32, String)>,
    /// Selections that took nothing, named.
    warnings: Vec<String>,
}

/// Consumer groups whose committed offsets are read at the same time. Each read is a client of
/// its own and takes ~55 ms, mostly waiting (librdkafka retires the bootstrap connection once
/// metadata names the brokers, and the coordinator query that was on it is sent again after a
/// 50 ms pause), ~4 ms of it CPU: 79 groups took 575 ms 8 at a time, 250 ms 32 at a time.
const GROUP_READS_AT_ONCE: usize = 32;

/// Topics, ranges, configs and group offsets, all before any record is read.
fn snapshot_kafka(opts: &BackupOptions, rt: &Context) -> Result<KafkaSnapshot, BackupError> {
    let t0 = Instant::now();
    let source = Source::connect(&opts.kafka, rt)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "connected");
    let all = source.topics();
    tracing::debug!(elapsed = ?t0.elapsed(), "topics listed");
    let names: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
    let selected = select_topics(&names, &opts.topics, &opts.exclude)?;
    if selected.is_empty() && !opts.topics.is_empty() {
        return Err(BackupError::NothingSelected(opts.topics.join(", ")));
    }
    let mut warnings: Vec<String> = unmatched(&opts.topics, &names, "--topics")?
        .into_iter()
        .map(|p| format!("--topics {p:?} matches no topic on the cluster"))
        .collect();
    let mut topics: Vec<TopicInfo> = all
        .into_iter()
        .filter(|t| selected.contains(&t.name))
        .collect();
    source.describe_configs(&mut topics)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "configs described");

    let tasks = partition_ranges(opts, &source, &topics, &mut warnings)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "ranges fixed");
    let (groups, group_warnings) = group_offsets(opts, &source, &tasks)?;
    warnings.extend(group_warnings);
    tracing::debug!(elapsed = ?t0.elapsed(), "group offsets read");
    let cluster_id = source.cluster_id();
    tracing::debug!(elapsed = ?t0.elapsed(), "cluster id");
    let brokers = source.brokers();
    rt.close_in_background(source);
    Ok(KafkaSnapshot {
        topics,
        tasks,
        groups,
        cluster_id,
        brokers,
        warnings,
    })
}

/// Each selected partition's range: from its log start (or `--from-time`) to its high watermark
/// now, once the transactions open in it have ended (see [`settled_ends`]), or `--until-time`;
/// fixed now, whatever is produced meanwhile.
fn partition_ranges(
    opts: &BackupOptions,
    source: &Source,
    topics: &[TopicInfo],
    warnings: &mut Vec<String>,
) -> Result<Vec<PartitionTask>, BackupError> {
    let parts: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
        .collect();
    // A continuous member reads on past the ends; a group member backs up its assignment only.
    let settle = |(t, p): &(String, i32)| {
        opts.follow.is_none()
            && opts
                .assignment
                .as_ref()
                .is_none_or(|a| a.partitions.contains_key(&(t.clone(), *p)))
    };
    let ends = settled_ends(source, &parts, &settle, opts.settle, warnings)?;
    let mut tasks = Vec::new();
    let mut ends = ends.into_iter();
    for t in topics {
        let from = match opts.from_time {
            Some(ts) => Some(source.offsets_for_time(&t.name, t.partitions, ts)?),
            None => None,
        };
        let until = match opts.until_time {
            Some(ts) => Some(source.offsets_for_time(&t.name, t.partitions, ts)?),
            None => None,
        };
        for p in 0..t.partitions {
            let (low, high) = ends.next().expect("an end per partition");
            let mut start = low;
            let mut end = high;
            if let Some(f) = &from {
                start = f[p as usize].map_or(high, |o| o.max(low));
            }
            if let Some(u) = &until {
                end = u[p as usize].map_or(high, |o| o.min(high));
            }
            let end = end.max(start);
            tasks.push(PartitionTask {
                topic: t.name.clone(),
                partition: p,
                start,
                end,
            });
        }
    }
    Ok(tasks)
}

/// Each partition's `(log start, end)`: for those `wanted`, its high watermark now once every
/// transaction open in it now has ended, else its last stable offset. A committed
/// transaction's records become readable only once its markers are written, a moment after the
/// commit returns; a backup that took the last stable offset at once could leave out what its
/// producer had just committed. A transaction still open after `settle` keeps its records out,
/// named.
fn settled_ends(
    source: &Source,
    parts: &[(String, i32)],
    wanted: &dyn Fn(&(String, i32)) -> bool,
    settle: Duration,
    warnings: &mut Vec<String>,
) -> Result<Vec<(i64, i64)>, BackupError> {
    // The high watermarks first: a stable offset asked after them passes them when no
    // transaction is open, however fast records are appended.
    let highs = source.high_watermarks(parts, wanted)?;
    let mut ends = parts
        .iter()
        .map(|(t, p)| source.watermarks(t, *p))
        .collect::<Result<Vec<_>, _>>()?;
    // Those not wanted end at their stable offset, as if settled.
    let highs: Vec<i64> = highs
        .iter()
        .zip(&ends)
        .map(|(h, e)| h.unwrap_or(e.1))
        .collect();
    let started = Instant::now();
    loop {
        let open: Vec<usize> = (0..parts.len()).filter(|&i| ends[i].1 < highs[i]).collect();
        if open.is_empty() || started.elapsed() >= settle {
            for i in open {
                let ((t, p), stable) = (&parts[i], ends[i].1);
                warnings.push(format!(
                    "{t}/{p}: offsets {stable}..{} are in a transaction still open {settle:?} after the backup started: not in this archive (consumers reading committed records do not see them yet; a later backup takes them once the transaction ends)",
                    highs[i]
                ));
            }
            // Records appended after the start are not this backup's.
            for (e, h) in ends.iter_mut().zip(&highs) {
                e.1 = e.1.min(*h);
            }
            return Ok(ends);
        }
        std::thread::sleep(Duration::from_millis(50));
        for i in open {
            ends[i] = source.watermarks(&parts[i].0, parts[i].1)?;
        }
    }
}

/// The committed offsets of the selected groups (`--groups`, or every group but restores'
/// progress groups) on the partitions backed up, and warnings for a selection that took none.
fn group_offsets(
    opts: &BackupOptions,
    source: &Source,
    tasks: &[PartitionTask],
) -> Result<(Vec<GroupOffsets>, Vec<String>), BackupError> {
    let group_names = source.groups()?;
    let group_re = match &opts.groups {
        Some(g) => Some(anchored(std::slice::from_ref(g), "--groups")?.remove(0)),
        None => None,
    };
    let partitions: Vec<(String, i32)> = tasks
        .iter()
        .map(|t| (t.topic.clone(), t.partition))
        .collect();
    let mut groups: Vec<GroupOffsets> = Vec::new();
    let wanted: Vec<&String> = group_names
        .iter()
        .filter(|g| match &group_re {
            Some(r) => r.is_match(g),
            None => !g.starts_with(crate::kafka::txn::PROGRESS_GROUP_PREFIX),
        })
        .collect();
    if !partitions.is_empty() {
        // Each group's offsets take a client of its own (its coordinator may be any broker):
        // read several groups at once, so a cluster with hundreds of groups is not read one
        // round trip after another.
        let read = crate::runtime::try_at_once(&wanted, GROUP_READS_AT_ONCE, |g| {
            source.committed(g, &partitions)
        })?;
        groups.extend(read.into_iter().filter(|o| !o.offsets.is_empty()));
    }
    let mut warnings = Vec::new();
    if let Some(g) = &opts.groups {
        if wanted.is_empty() {
            warnings.push(format!(
                "--groups {g:?} matches no consumer group on the cluster"
            ));
        } else if groups.is_empty() {
            warnings.push(format!(
                "--groups {g:?} matches {} consumer group(s), none with offsets committed on the selected topics",
                wanted.len()
            ));
        }
    }
    Ok((groups, warnings))
}

/// The include patterns that match none of `names`.
fn unmatched<'a>(
    patterns: &'a [String],
    names: &[String],
    flag: &str,
) -> Result<Vec<&'a str>, BackupError> {
    let res = anchored(patterns, flag)?;
    Ok(patterns
        .iter()
        .zip(&res)
        .filter(|(_, r)| !names.iter().any(|n| r.is_match(n)))
        .map(|(p, _)| p.as_str())
        .collect())
}

/// What a captured registry state holds, every context's together.
fn schemas_backed_up(snap: &RegistrySnapshot) -> ProgressEvent<'static> {
    let all = || std::iter::once(snap).chain(&snap.contexts);
    ProgressEvent::SchemasBackedUp {
        subjects: all().map(|c| c.subjects.len() as u64).sum(),
        versions: all()
            .flat_map(|c| &c.subjects)
            .map(|s| s.versions.len() as u64)
            .sum(),
    }
}

/// The registry's state, through its REST API.
fn snapshot_registry(
    opts: &BackupOptions,
    rt: &Context,
    at_ms: i64,
) -> Result<Option<Captured>, BackupError> {
    let Some(settings) = &opts.registry else {
        return Ok(None);
    };
    let client = Arc::new(RegistryClient::new(settings)?.observed_by(opts.progress.clone()));
    Ok(Some(rt.block_on(capture(client, &opts.subjects, at_ms))?))
}

/// A backup on the caller's runtime: [`BackupPlan::build`], then [`BackupPlan::execute`].
pub fn backup(rt: &Runtime, opts: &BackupOptions) -> Result<BackupReport, BackupError> {
    BackupPlan::build(rt, opts)?.execute(opts)
}

/// What a backup takes, fixed before the archive file is made: every selection checked, the
/// cluster's topics, partition ranges, configs and group offsets, and the registry's state.
pub struct BackupPlan {
    started: Instant,
    started_ms: i64,
    with_kafka: bool,
    kafka: KafkaSnapshot,
    registry: Option<Captured>,
    /// A chain member's parent and plan (§16).
    chain: Option<(chain::Parent, chain::ChainPlan)>,
    rt: Context,
    /// Selections that took nothing, named.
    pub warnings: Vec<String>,
}

impl BackupPlan {
    /// Checks the options and reads what the backup takes; nothing is written.
    pub fn build(rt: &Runtime, opts: &BackupOptions) -> Result<BackupPlan, BackupError> {
        let rt = rt.context();
        let started = Instant::now();
        let started_ms = now_ms();
        let with_kafka = check_options(opts)?;
        // The parent is checked before anything is read from Kafka.
        let parent = match &opts.incremental_from {
            Some(p) => Some(chain::open_parent(p)?),
            None => None,
        };
        let mut kafka = if with_kafka {
            snapshot_kafka(opts, rt)?
        } else {
            KafkaSnapshot::default()
        };
        if let Some(a) = &opts.assignment {
            kafka
                .tasks
                .retain(|t| a.partitions.contains_key(&(t.topic.clone(), t.partition)));
            if parent.is_none() {
                assigned_starts(a, &mut kafka.tasks, &mut kafka.warnings);
            }
        }
        let chain = match parent {
            Some(p) => {
                let compacted = kafka
                    .topics
                    .iter()
                    .filter(|t| {
                        t.configs
                            .get("cleanup.policy")
                            .is_some_and(|v| v.contains("compact"))
                    })
                    .map(|t| t.name.clone())
                    .collect();
                let plan = chain::plan(
                    &p,
                    &opts.kafka,
                    &mut kafka.tasks,
                    &compacted,
                    opts.assignment.as_ref(),
                )?;
                Some((p, plan))
            }
            None => None,
        };
        if opts.follow.is_some() {
            // Read on to the roll: no end is declared before it (the kafka-topics document says
            // FOLLOW_END, so a reader of the stream closes no partition early; the manifest has
            // each partition's end at the roll).
            for t in &mut kafka.tasks {
                t.end = FOLLOW_END;
            }
        }
        tracing::debug!(elapsed = ?started.elapsed(), "kafka snapshot taken");
        let registry = snapshot_registry(opts, rt, started_ms)?;
        tracing::debug!(elapsed = ?started.elapsed(), "registry captured");
        let mut warnings = kafka.warnings.clone();
        if let Some(r) = &registry {
            warnings.extend(r.unmatched.iter().map(|p| {
                format!(
                    "--subjects {p:?} matches no subject on the registry {}",
                    r.snapshot.source
                )
            }));
        }
        for w in &warnings {
            tracing::debug!("selection: {w}");
        }
        if let Some((_, plan)) = &chain {
            warnings.extend(
                plan.changes
                    .iter()
                    .filter(|c| c.kind.is_loss_or_restart())
                    .map(|c| match c.partition {
                        Some(p) => format!("{}/{p}: {}", c.topic, c.detail),
                        None => format!("{}: {}", c.topic, c.detail),
                    }),
            );
        }
        Ok(BackupPlan {
            started,
            started_ms,
            with_kafka,
            kafka,
            registry,
            chain,
            rt: rt.clone(),
            warnings,
        })
    }

    /// Writes the archive: metadata first (so even a killed backup keeps it), then the records of
    /// every planned range, then provenance, index and manifest.
    pub fn execute(self, opts: &BackupOptions) -> Result<BackupReport, BackupError> {
        let writer_opts = WriterOptions {
            created_at_ms: self.started_ms,
            chain: self.chain.as_ref().map(|(p, _)| p.link.clone()),
            ..opts.writer.clone()
        };
        let detached = detached_path(opts);
        let (mut w, output) = ArchiveWriter::create_output(
            &opts.out,
            writer_opts,
            opts.volume_size,
            detached.is_some(),
        )?;
        let unfinished = |source: ArchiveError| {
            let (path, source) = (opts.out.clone(), Box::new(source));
            if output.is_stream() {
                BackupError::StreamFailed { path, source }
            } else {
                BackupError::WriteFailed { path, source }
            }
        };
        self.write_metadata(&mut w).map_err(unfinished)?;
        if let Some(r) = &self.registry {
            opts.progress.event(schemas_backed_up(&r.snapshot));
        }
        let mut read = self
            .read_records(opts, &mut w, output)
            .map_err(unfinished)?;
        let provenance = Provenance {
            kind: crate::format::provenance::KIND.into(),
            kar_version: env!("CARGO_PKG_VERSION").into(),
            command_line: opts.command_line.clone(),
            started_at_ms: self.started_ms,
            finished_at_ms: now_ms(),
            cluster_id: self.kafka.cluster_id.clone(),
            bootstrap: opts.kafka.bootstrap.clone(),
            interrupted: opts.cancel.load(Ordering::SeqCst),
        };
        w.add_metadata(
            "provenance",
            &serde_json::to_vec(&provenance).expect("json"),
        )
        .map_err(unfinished)?;
        let notes = read.notes();
        let status = if read.results.values().all(|r| r.complete) {
            ArchiveStatus::Complete
        } else {
            ArchiveStatus::Partial
        };
        let (out, summary) = w.finish(status, notes).map_err(unfinished)?;
        tracing::debug!(elapsed = ?self.started.elapsed(), "index and manifest written");
        let finished = finish_output(out, &opts.out, output, &opts.progress).map_err(unfinished)?;
        tracing::debug!(elapsed = ?self.started.elapsed(), "archive synced to disk");
        let mut report = self.report(opts, status, &summary, read);
        report.volumes = finished.volumes;
        opts.progress.event(ProgressEvent::ArchiveSize {
            bytes: report.archive_bytes,
        });
        if let (Some(path), Some(text)) = (detached, finished.detached) {
            crate::archive::signing::write_new(&path, &text, 0o644).map_err(|e| {
                BackupError::Invalid(format!(
                    "the archive is written and carries its signature frame, but the detached signature was not: {e} (`kar sign` makes one)"
                ))
            })?;
            report.signature_file = Some(path);
        }
        Ok(report)
    }

    /// The documents of the cluster's and the registry's state, and the partitions' ranges.
    fn write_metadata(&self, w: &mut Writer) -> Result<(), ArchiveError> {
        let k = &self.kafka;
        if self.with_kafka {
            let topics = KafkaTopicsDoc {
                kind: crate::format::kafka_topics::KIND.into(),
                cluster_id: k.cluster_id.clone(),
                brokers: k
                    .brokers
                    .iter()
                    .map(|(id, address)| Broker {
                        id: *id,
                        address: address.clone(),
                    })
                    .collect(),
                captured_at_ms: self.started_ms,
                topics: k.topics.clone(),
                partitions: k
                    .tasks
                    .iter()
                    .map(|t| DeclaredRange {
                        topic: t.topic.clone(),
                        partition: t.partition,
                        start_offset: t.start,
                        end_offset: t.end,
                    })
                    .collect(),
            };
            w.add_metadata("kafka-topics", &serde_json::to_vec(&topics).expect("json"))?;
            let groups = ConsumerGroupsDoc {
                kind: crate::format::consumer_groups::KIND.into(),
                captured_at_ms: self.started_ms,
                groups: k.groups.clone(),
            };
            w.add_metadata(
                "consumer-groups",
                &serde_json::to_vec(&groups).expect("json"),
            )?;
        }
        if let Some(r) = &self.registry {
            write_to_archive(r, w)?;
        }
        for t in &k.tasks {
            w.declare_partition(&t.topic, t.partition, t.start, t.end);
        }
        if let Some((_, plan)) = &self.chain {
            for ((topic, p), c) in &plan.partitions {
                if let Some(l) = &c.lineage {
                    w.set_lineage(topic, *p, l.clone());
                }
            }
            for c in &plan.changes {
                w.add_change(c.clone());
            }
        }
        Ok(())
    }

    /// Reads every planned range with the workers, through the compression stage, into `w`.
    /// Err (a full disk) stops the workers; what was written stays, repairable.
    fn read_records(
        &self,
        opts: &BackupOptions,
        w: &mut Writer,
        output: OutputKind,
    ) -> Result<Collector, ArchiveError> {
        let tasks = &self.kafka.tasks;
        let mut syncer = match w.get_ref().get_ref().file() {
            Some(f) if !output.is_stream() => {
                BackgroundSync::start(f, 64 << 20, opts.progress.clone())
                    .map_err(ArchiveError::io("sync", &opts.out))?
            }
            _ => BackgroundSync::disabled(),
        };
        let follow = opts.follow.is_some();
        if !follow {
            opts.progress.begin(&worker::offsets_per_topic(tasks));
        }
        for t in tasks {
            opts.progress.event(ProgressEvent::PartitionPlanned {
                topic: &t.topic,
                partition: t.partition,
                total: (!follow).then(|| (t.end - t.start).max(0) as u64),
            });
        }
        let (tx, rx) = mpsc::sync_channel::<Event>(opts.concurrency.max(1) * 2);
        let (stage, compressors) = compress::Stage::start(
            opts.compression,
            opts.writer.zstd_level,
            opts.compression_threads,
            tx.clone(),
            w.sealer().cloned(),
            // What a worker reserves for a chunk (see worker::push), and its header.
            opts.writer.chunk_target_bytes + 64 * 1024 + 4096,
        );
        let timer = opts
            .follow
            .as_ref()
            .and_then(|f| Some(roll_timer(f.roll.clone(), f.every?)));
        let workers = worker::spawn(opts, tasks, tx, stage, &self.rt);
        let mut collector = Collector::new(tasks, opts.progress.clone(), opts.follow.as_ref());
        let mut write_error = None;
        for ev in rx {
            if let Err(e) = collector.take(ev, w, &mut syncer) {
                opts.cancel.store(true, Ordering::SeqCst);
                write_error = Some(e);
                break;
            }
        }
        for h in workers.into_iter().chain(compressors).chain(timer) {
            let _ = h.join();
        }
        // A sync that failed on the way: the archive did not reach the device whole.
        if let Err(e) = syncer.stop() {
            write_error.get_or_insert(ArchiveError::io("sync", &opts.out)(e));
        }
        tracing::debug!(
            elapsed = ?self.started.elapsed(),
            chunks = collector.chunks,
            uncompressed = collector.uncompressed,
            "records read"
        );
        opts.progress.end();
        match write_error {
            Some(e) => Err(e),
            None => Ok(collector),
        }
    }

    fn report(
        self,
        opts: &BackupOptions,
        status: ArchiveStatus,
        summary: &crate::archive::writer::WriteSummary,
        read: Collector,
    ) -> BackupReport {
        let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
        for ((t, _), r) in read.results {
            by_topic.entry(t).or_default().push(r);
        }
        BackupReport {
            out: opts.out.clone(),
            volumes: Vec::new(),
            signed_by: opts.writer.signer.as_ref().map(|k| k.key_id_hex()),
            signature_file: None,
            status,
            root_hash: hex(&summary.root),
            topics: by_topic
                .into_iter()
                .map(|(name, partitions)| TopicResult { name, partitions })
                .collect(),
            groups: self.kafka.groups.len(),
            records: summary.records,
            record_bytes: read.record_bytes,
            archive_bytes: summary.bytes,
            compression: opts.compression,
            chunks: read.chunks,
            chunks_uncompressed: read.uncompressed,
            zstd_levels: read.levels,
            seconds: self.started.elapsed().as_secs_f64(),
            registry: self.registry.map(|r| RegistrySummary {
                source: r.snapshot.source.clone(),
                subjects: r.snapshot.subjects.len(),
                versions: r.snapshot.version_count(),
                schema_texts: r.texts.len(),
                requests: r.requests,
                order_complete: r.snapshot.order_complete,
                order_problems: r.snapshot.order_problems.clone(),
                pulled_in: r.snapshot.pulled_in.clone(),
            }),
            warnings: self.warnings,
            parent: self.chain.as_ref().map(|(p, _)| p.link.parent.clone()),
            changes: self.chain.map(|(_, plan)| plan.changes),
            inherited_blobs: opts
                .incremental_from
                .as_ref()
                .map(|_| summary.inherited_blobs),
        }
    }
}

type Writer = ArchiveWriter<std::io::BufWriter<crate::archive::writer::Output>>;

/// Every check of the options before anything is read; whether the backup reads Kafka.
fn check_options(opts: &BackupOptions) -> Result<bool, BackupError> {
    opts.check_ranges()?;
    let with_kafka = !opts.kafka.bootstrap.trim().is_empty();
    if !with_kafka && opts.registry.is_none() {
        return Err(BackupError::Invalid(
            "nothing to back up: give --bootstrap (Kafka) and/or --registry (Schema Registry)"
                .into(),
        ));
    }
    if with_kafka {
        opts.kafka
            .validate()
            .map_err(|e| BackupError::Invalid(e.to_string()))?;
    }
    anchored(&opts.topics, "--topics")?;
    anchored(&opts.exclude, "--exclude")?;
    if let Some(g) = &opts.groups {
        anchored(std::slice::from_ref(g), "--groups")?;
    }
    opts.subjects.compile()?;
    // An existing regular file is never overwritten; a stream (stdout, a FIFO, a tape) is fine.
    OutputKind::of(&opts.out)?;
    if opts.signature_out.is_some() && opts.writer.signer.is_none() {
        return Err(BackupError::Invalid(
            "--signature-out names the detached signature of --sign-with".into(),
        ));
    }
    if let Some(p) = detached_path(opts)
        && p.exists()
    {
        return Err(BackupError::Invalid(format!(
            "{} already exists: the detached signature would overwrite it",
            p.display()
        )));
    }
    if opts.incremental_from.is_some()
        && (!with_kafka || opts.from_time.is_some() || opts.until_time.is_some())
    {
        return Err(BackupError::Invalid(
            "--incremental-from continues every partition where its archive ended up to the log's end now: it needs --bootstrap, and takes no --from-time or --until-time".into(),
        ));
    }
    Ok(with_kafka)
}

/// Where a signed backup's detached signature goes: `--signature-out`, else `OUT.minisig` beside
/// a file or a volume set; a stream has none unless named.
fn detached_path(opts: &BackupOptions) -> Option<PathBuf> {
    opts.writer.signer.as_ref()?;
    if let Some(p) = &opts.signature_out {
        return Some(p.clone());
    }
    if matches!(OutputKind::of(&opts.out), Ok(k) if k.is_stream()) {
        return None;
    }
    let mut s = opts.out.as_os_str().to_owned();
    s.push(".minisig");
    Some(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_library_caller_gets_the_flags_checks() {
        let ok = super::BackupOptions::new(crate::kafka::KafkaConnection::default(), "o.kar");
        assert!(ok.check_ranges().is_ok());
        let err = |f: &dyn Fn(&mut super::BackupOptions)| {
            let mut o = ok.clone();
            f(&mut o);
            o.check_ranges().unwrap_err().to_string()
        };
        assert!(err(&|o| o.writer.chunk_target_bytes = 100).contains("--chunk-size"));
        assert!(err(&|o| o.writer.zstd_level = 23).contains("--zstd-level"));
        assert!(err(&|o| o.concurrency = 0).contains("--concurrency"));
        assert!(err(&|o| o.fetch_buffer_bytes = 1000).contains("--fetch-buffer"));
        assert!(err(&|o| o.stall_timeout = std::time::Duration::ZERO).contains("--stall-timeout"));
    }
}
