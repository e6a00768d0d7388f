//! Streaming records from the memory-mapped archive to the target: each target partition written
//! in archive order by a transactional producer that owns it (see [`super::progress`]), keys,
//! values, headers and timestamps exactly as archived, schema IDs rewritten in place where they
//! changed. Transactions end at chunk boundaries, so a chunk lands whole or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use super::progress::{Progress, ProgressError, transactional_id};
use super::rewrite::{IdMap, RewriteStats, rewrite_record};
use crate::archive::ArchiveError;
use crate::archive::view::View;
use crate::format::FormatError;
use crate::format::chunk::{ChunkRecords, Record, RecordPositions};
use crate::format::frame::ContentDecoder;
use crate::kafka::KafkaConnection;
use crate::kafka::sink::Target;
use crate::kafka::source::SourceError;
use crate::kafka::txn::{
    Batching, Compression, PartitionWriter, ProgressGroup, Read, WriteError, coordinator_timeout,
    first_committed, linger_for,
};
use crate::progress::Event;

/// A transaction is committed at the first chunk boundary after this long, whatever its size, so
/// that it stays far from the transaction timeout on a slow link.
const TXN_MAX_TIME: Duration = Duration::from_secs(5);

/// How long a stopped restore waits for its open transactions to abort.
const STOPPED_ABORT_WAIT: Duration = Duration::from_secs(10);

/// Why one partition's restore stopped. What it committed before stays committed, and a later run
/// continues from there.
#[derive(Debug, Error)]
pub enum PartitionError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Kafka(Box<SourceError>),
    #[error(transparent)]
    Progress(#[from] ProgressError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A chunk that fails its check when read (quick pre-flight): nothing of it was produced.
    #[error("{0}; nothing from this chunk was produced")]
    DamagedChunk(ArchiveError),
    #[error("{topic}/{partition}: a chunk of the archive: {source}")]
    Records {
        topic: String,
        partition: i32,
        source: FormatError,
    },
    #[error("zstd: {0}")]
    Zstd(std::io::Error),
    #[error(
        "{topic}/{partition} already holds {holds} records of this archive, more than the {planned} this run restores (a later --until than this one's?)"
    )]
    MoreThanPlanned {
        topic: String,
        partition: i32,
        holds: u64,
        planned: u64,
    },
    #[error(
        "{topic}/{partition} ends at offset {end}, but this restore committed records up to offset {from} there (group {group}): was the topic deleted and re-created, or truncated? Delete the group {group} to restore it from the start"
    )]
    Shortened {
        topic: String,
        partition: i32,
        end: i64,
        from: i64,
        group: String,
    },
    #[error(
        "{topic}/{partition}: offset {offset} holds a record this restore did not write (it expected nothing committed from offset {from}); nothing else may write to a partition being restored, unless --append"
    )]
    Foreign {
        topic: String,
        partition: i32,
        offset: i64,
        from: i64,
    },
    #[error(
        "{topic}/{partition} holds records of archived topic {found} from an earlier restore of this archive, not of {expected}"
    )]
    OtherSourceTopic {
        topic: String,
        partition: i32,
        found: String,
        expected: String,
    },
    #[error(
        "{topic}/{partition}: the records an earlier run restored there carry schema IDs {found}, this run would write them {this}: run it with the first run's --schema-ids and registry, or restore to another topic"
    )]
    OtherSchemaIds {
        topic: String,
        partition: i32,
        found: String,
        this: String,
    },
    #[error("the restore was stopped; run the same command again to continue")]
    Stopped,
    /// A stream's chunk that does not continue the partition where its last chunk ended (a chunk
    /// lost to damage, or a writer that broke the order): nothing of it was produced.
    #[error(
        "{topic}/{partition}: the stream's chunk at offset {at} covers offsets from {from}, but the partition's records so far end at {expected}: {why}; nothing from this chunk on was produced"
    )]
    StreamOrder {
        topic: String,
        partition: i32,
        at: u64,
        from: i64,
        expected: i64,
        why: &'static str,
    },
    /// A stream's chunk the target would not keep (retention) or take (timestamps).
    #[error("{0}; nothing from this chunk on was produced")]
    NotKept(String),
    #[error("{topic}/{partition}: a transaction with no record delivered")]
    NothingDelivered { topic: String, partition: i32 },
    #[error(
        "{topic}/{partition}: {restored} of {planned} records restored: the archive's chunks hold fewer than planned"
    )]
    FewerThanPlanned {
        topic: String,
        partition: i32,
        restored: u64,
        planned: u64,
    },
}

impl From<SourceError> for PartitionError {
    fn from(e: SourceError) -> Self {
        PartitionError::Kafka(Box::new(e))
    }
}

impl PartitionError {
    /// Kafka fenced this run's producer: another restore took the partition over.
    pub fn is_fenced(&self) -> bool {
        matches!(self, PartitionError::Write(WriteError::Fenced { .. }))
    }
}

/// A partition's record count before a stream has been read to its end.
pub const UNKNOWN: u64 = u64::MAX;

/// One partition to restore.
#[derive(Debug, Clone)]
pub struct PartitionJob {
    pub source_topic: String,
    pub target_topic: String,
    pub partition: i32,
    /// Records the restore puts in the partition (see [`planned_records`]), counted once, when
    /// planning.
    pub records: u64,
    /// Archived committed offsets of consumer groups on this partition → the index of the first
    /// restored record at or after each (`records` if none).
    pub group_offsets: BTreeMap<i64, u64>,
    /// Of those indexes, the ones below `records`: the records whose target offsets the
    /// consumer-group translation needs.
    pub wanted: BTreeSet<u64>,
    /// Where a restore that has committed nothing yet expects the partition to end: nothing
    /// committed may lie at or after it, unless `--append`.
    pub start: i64,
    /// What the producer compresses this partition's batches with.
    pub compression: Compression,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionOutcome {
    pub source_topic: String,
    pub target_topic: String,
    pub partition: i32,
    /// Records the restore puts in this partition (after `--until`).
    pub records: u64,
    /// Of those, committed by this run (the rest were committed by an earlier run, or by another
    /// restore that took the partition over).
    pub written: u64,
    pub rewritten_ids: u64,
    pub unknown_ids: u64,
    /// Schema ID headers (`__key_schema_id`, `__value_schema_id`) whose ID was rewritten.
    pub rewritten_header_ids: u64,
    /// Schema ID headers naming a schema by GUID: left as they are (a GUID is content-derived).
    pub guid_headers: u64,
    /// The distinct GUIDs they name (up to 1,000 a partition), checked on the target registry.
    #[serde(skip)]
    pub guids: std::collections::BTreeSet<[u8; 16]>,
    /// The target offset after the last restored record (where the progress is committed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_offset: Option<i64>,
    /// Target offsets `[from, to)` after the last commit of an earlier run that hold no committed
    /// record: its interrupted transaction, aborted, and transaction markers. `read_committed`
    /// consumers skip them; `read_uncommitted` ones see the aborted records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<(i64, i64)>,
    /// Kafka fenced this run's producer: another restore took the partition over (or, on a link
    /// too slow for it, a transaction outlived its timeout).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
    /// Producers replaced because they delivered nothing while the partition's leader answered
    /// (see [`restore_from`]); what each one's open transaction held was aborted and written again.
    #[serde(skip_serializing_if = "is_zero")]
    pub producers_replaced: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where a partition's chunks come from: the archive file, read as they are needed, or a stream,
/// handed over as each passes its check.
pub trait ChunkSource {
    /// The next chunk, the restore having come to record `index` of the partition, `already` of
    /// them committed by an earlier run: into `buf` when it holds a record to write, else only its
    /// record count. `None` at the partition's end.
    fn next(
        &mut self,
        buf: &mut Vec<u8>,
        index: u64,
        already: u64,
    ) -> Option<Result<Fed, PartitionError>>;
    /// The records the restore puts in the partition: exact for a file, [`UNKNOWN`] for a stream
    /// until it is known (the end, or `--until`'s cut).
    fn total(&self) -> u64;
    /// The indexes of the records whose target offsets the consumer-group translation needs.
    fn wanted(&self) -> &BTreeSet<u64>;
    /// Starts again from the partition's first chunk, if this source can (a file can, a stream
    /// cannot): what a replaced producer's open transaction held is written again.
    fn rewind(&mut self) -> bool {
        false
    }
}

/// What [`ChunkSource::next`] gave.
pub enum Fed {
    /// A chunk of this many records, all committed by an earlier run: not read.
    Skipped(u64),
    /// A chunk of this many records in the buffer, its content checked.
    Chunk(u64),
}

/// A partition's chunks in an archive file, by its index.
struct FileChunks<'a> {
    archive: &'a View,
    chunks: Vec<crate::archive::view::Located>,
    /// The next chunk's index in `chunks`.
    at: usize,
    dec: ContentDecoder,
    job: &'a PartitionJob,
}

impl ChunkSource for FileChunks<'_> {
    fn next(
        &mut self,
        buf: &mut Vec<u8>,
        index: u64,
        already: u64,
    ) -> Option<Result<Fed, PartitionError>> {
        if index >= self.job.records {
            return None;
        }
        let c = self.chunks.get(self.at)?;
        self.at += 1;
        let n = u64::from(c.records);
        if index + n <= already {
            return Some(Ok(Fed::Skipped(n)));
        }
        // The whole chunk is verified (content ID) before any of its records is produced.
        Some(
            self.archive
                .read_chunk(c, &mut self.dec, buf)
                .map(|()| Fed::Chunk(n))
                .map_err(PartitionError::DamagedChunk),
        )
    }

    fn total(&self) -> u64 {
        self.job.records
    }

    fn wanted(&self) -> &BTreeSet<u64> {
        &self.job.wanted
    }

    fn rewind(&mut self) -> bool {
        self.at = 0;
        true
    }
}

/// What every partition of a restore shares.
pub struct Shared<'a> {
    pub conn: &'a KafkaConnection,
    pub target: &'a Target,
    pub progress: &'a ProgressGroup,
    pub ids: &'a IdMap,
    /// Whether schema IDs are rewritten (the mapping changes some).
    pub rewrite: bool,
    /// [`super::progress::ids_tag`] of this run.
    pub ids_tag: String,
    pub append: bool,
    /// A transaction is committed at the first chunk boundary after this many bytes.
    pub txn_bytes: usize,
    /// How long a wait for deliveries may go without one before the partition fails.
    pub stall: Duration,
    /// Set when a partition stalled: the partitions not yet started are not.
    pub broker_lost: &'a AtomicBool,
    pub cancel: &'a AtomicBool,
}

/// How many records the restore puts in the partition: all, or with `--until`, the prefix that
/// ends before the first record whose timestamp is after `until`.
pub fn planned_records(
    a: &View,
    topic: &str,
    partition: i32,
    until: Option<i64>,
) -> Result<u64, crate::archive::ArchiveError> {
    let chunks = a.chunks_of(topic, partition)?;
    let Some(until) = until else {
        return Ok(chunks.iter().map(|c| u64::from(c.records)).sum());
    };
    let mut n = 0;
    let mut dec = a.decoder()?;
    let mut buf = Vec::new();
    for c in &chunks {
        if c.entry.max_timestamp <= until {
            n += u64::from(c.records);
            continue;
        }
        a.read_chunk(c, &mut dec, &mut buf)?;
        for r in ChunkRecords::new(&buf, 0)
            .map_err(crate::archive::ArchiveError::format(a.path(), ""))?
        {
            let r = r.map_err(crate::archive::ArchiveError::format(a.path(), ""))?;
            if r.timestamp > until {
                return Ok(n);
            }
            n += 1;
        }
    }
    Ok(n)
}

/// How many of the records the restore puts in the partition (its first `limit`) have a source
/// offset below `committed`: the index of the first restored record at or after it.
pub fn restored_before(
    a: &View,
    topic: &str,
    partition: i32,
    committed: i64,
    limit: u64,
) -> Result<u64, crate::archive::ArchiveError> {
    let mut k = 0u64;
    let mut dec = a.decoder()?;
    let mut buf = Vec::new();
    for c in a.chunks_of(topic, partition)? {
        if c.entry.last_offset < committed {
            k += u64::from(c.records);
            continue;
        }
        if c.entry.first_offset < committed {
            a.read_chunk(&c, &mut dec, &mut buf)?;
            for r in ChunkRecords::new(&buf, 0)
                .map_err(crate::archive::ArchiveError::format(a.path(), ""))?
            {
                let r = r.map_err(crate::archive::ArchiveError::format(a.path(), ""))?;
                if r.offset < committed {
                    k += 1;
                }
            }
        }
        break;
    }
    Ok(k.min(limit))
}

/// Restores one partition of an archive file.
pub fn restore_partition(
    s: &Shared<'_>,
    archive: &View,
    job: &PartitionJob,
    progress: &dyn Fn(&Produced),
) -> PartitionOutcome {
    let source = archive
        .chunks_of(&job.source_topic, job.partition)
        .map_err(PartitionError::from)
        .and_then(|chunks| {
            Ok(FileChunks {
                archive,
                chunks,
                at: 0,
                dec: archive.decoder().map_err(PartitionError::from)?,
                job,
            })
        });
    match source {
        Ok(mut src) => restore_from(s, job, &mut src, progress),
        Err(e) => PartitionOutcome {
            source_topic: job.source_topic.clone(),
            target_topic: job.target_topic.clone(),
            partition: job.partition,
            records: job.records,
            error: Some(e.to_string()),
            ..Default::default()
        },
    }
}

/// Restores one partition from `src`, in transactions of the producer that owns it.
pub fn restore_from(
    s: &Shared<'_>,
    job: &PartitionJob,
    src: &mut dyn ChunkSource,
    progress: &dyn Fn(&Produced),
) -> PartitionOutcome {
    let mut out = PartitionOutcome {
        source_topic: job.source_topic.clone(),
        target_topic: job.target_topic.clone(),
        partition: job.partition,
        records: job.records,
        ..Default::default()
    };
    let (t, p) = (job.target_topic.as_str(), job.partition);
    // Once a partition's records went undelivered for the stall timeout, the partitions not
    // started would each wait as long (and their progress reads longer): the run ends instead.
    if s.broker_lost.load(Ordering::SeqCst) {
        out.error = Some(format!(
            "{t}/{p}: not started: the broker stopped answering during this run (see the partitions that stalled); the next run restores it"
        ));
        return out;
    }
    // Nothing read yet: rewinding only asks whether the source can start again.
    let mut renew = src.rewind().then(|| renewal_after(s.stall));
    // Replacements stop once the partition has committed nothing for the stall timeout; those
    // of a producer whose call outlived its own timeout (which says nothing of the broker) after
    // a few.
    let (mut since, mut written, mut hung) = (Instant::now(), out.written, 0);
    let result = loop {
        match write_partition(s, job, src, progress, &mut out, renew) {
            Err(PartitionError::Write(
                e @ (WriteError::Unresponsive { .. } | WriteError::Hung { .. }),
            )) => {
                if out.written > written {
                    (since, written) = (Instant::now(), out.written);
                }
                let give_up = match e {
                    WriteError::Hung { .. } => {
                        hung += 1;
                        hung > MAX_HUNG_REPLACEMENTS
                    }
                    _ => since.elapsed() >= s.stall,
                };
                if give_up || !src.rewind() {
                    break Err(PartitionError::Write(e));
                }
                tracing::warn!(
                    topic = t,
                    partition = p,
                    "{e}; a new producer takes the partition over and continues from its last commit"
                );
                out.producers_replaced += 1;
                // Twice as patient each time: a link that acknowledges a batch only after the
                // renewal time is slow, not stuck, and the next producer's first wait ends.
                renew = renew.map(|r| r * 2);
            }
            r => break r,
        }
    };
    if let Err(e) = result {
        if matches!(e, PartitionError::Write(WriteError::Stalled { .. })) {
            s.broker_lost.store(true, Ordering::SeqCst);
        }
        out.fenced = e.is_fenced();
        out.error = Some(e.to_string());
    }
    out
}

/// How many times a partition's producer is replaced because a call to it outlived its timeout.
const MAX_HUNG_REPLACEMENTS: u32 = 2;

/// How long a partition's first producer may go without a delivery before its leader is asked
/// whether it answers a new connection, and the producer is replaced if it does: a quarter of the
/// stall timeout, from 1 to 10 s.
fn renewal_after(stall: Duration) -> Duration {
    (stall / 4).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Takes the partition with a new producer and writes it from its committed progress on.
fn write_partition(
    s: &Shared<'_>,
    job: &PartitionJob,
    src: &mut dyn ChunkSource,
    progress: &dyn Fn(&Produced),
    out: &mut PartitionOutcome,
    renew: Option<Duration>,
) -> Result<(), PartitionError> {
    let (t, p) = (job.target_topic.as_str(), job.partition);
    let t0 = Instant::now();
    PartitionWriter::open(
        s.conn,
        &transactional_id(t, p),
        t,
        p,
        Batching {
            compression: job.compression,
            linger: linger_for(s.txn_bytes),
        },
        // librdkafka's own timeout for taking the transactional ID (which waits for an older
        // producer's open transaction to abort).
        coordinator_timeout(s.stall),
    )
    .map(|w| {
        let w = w.with_stall_timeout(s.stall);
        match renew {
            Some(after) => w.with_renewal(after),
            None => w,
        }
    })
    .map_err(PartitionError::from)
    .and_then(|w| {
        tracing::debug!(topic = t, partition = p, elapsed = ?t0.elapsed(), "partition taken");
        let r = restore_inner(s, job, src, &w, progress, out);
        s.target.context().close_in_background(w);
        r
    })
}

/// The committed progress of the partition, read once this restore owns it, and checked: it is
/// this archive's topic, written with the same schema IDs, and, unless the partition is whole,
/// nothing committed follows it.
fn resume_point(
    s: &Shared<'_>,
    job: &PartitionJob,
    out: &mut PartitionOutcome,
) -> Result<Progress, PartitionError> {
    let (t, p) = (job.target_topic.as_str(), job.partition);
    let group = s.progress.name();
    let committed = s
        .progress
        .committed(&[(t.to_string(), p)], Read::Stable)?
        .pop()
        .flatten();
    let read_end = committed.as_ref().map(|c| c.offset);
    let (doc, from) = match committed {
        Some(c) => {
            let doc = Progress::decode(&c.metadata, group, t, p)?;
            check_same_restore(&doc, s, job)?;
            out.end_offset = Some(c.offset);
            (doc, c.offset)
        }
        None => (Progress::new(&job.source_topic, &s.ids_tag), job.start),
    };
    if doc.records > job.records {
        return Err(PartitionError::MoreThanPlanned {
            topic: t.to_string(),
            partition: p,
            holds: doc.records,
            planned: job.records,
        });
    }
    // A partition already whole is left alone, whatever was written to it since.
    if doc.records < job.records {
        check_nothing_follows(s, job, from, read_end, out)?;
    }
    Ok(doc)
}

/// Nothing committed may lie after `from` (where this restore's records end, or begin) unless
/// `--append`: records of aborted transactions and markers may, and are reported. `read_end` is
/// the committed progress this run read (None: none).
fn check_nothing_follows(
    s: &Shared<'_>,
    job: &PartitionJob,
    from: i64,
    read_end: Option<i64>,
    out: &mut PartitionOutcome,
) -> Result<(), PartitionError> {
    let (t, p) = (job.target_topic.as_str(), job.partition);
    let end = s.target.watermarks(t, p)?.1;
    if end < from {
        return Err(PartitionError::Shortened {
            topic: t.to_string(),
            partition: p,
            end,
            from,
            group: s.progress.name().to_string(),
        });
    }
    if end > from && !s.append {
        if let Some(o) = first_committed(s.conn, s.target.context(), t, p, from, end)? {
            // Another run of this restore may have taken the partition over since this one read
            // its progress (and committed that record): then this one is fenced, not wronged.
            let now = s
                .progress
                .committed(&[(t.to_string(), p)], Read::Stable)?
                .pop()
                .flatten();
            if now.map(|c| c.offset) != read_end {
                return Err(WriteError::Fenced {
                    topic: t.to_string(),
                    partition: p,
                    txn_id: transactional_id(t, p),
                }
                .into());
            }
            return Err(PartitionError::Foreign {
                topic: t.to_string(),
                partition: p,
                offset: o,
                from,
            });
        }
        // The last commit's marker sits at `from`; more than that is an interrupted run's.
        if end > from + i64::from(read_end.is_some()) {
            out.aborted = Some((from, end));
        }
    }
    Ok(())
}

fn check_same_restore(
    doc: &Progress,
    s: &Shared<'_>,
    job: &PartitionJob,
) -> Result<(), PartitionError> {
    let (topic, partition) = (job.target_topic.clone(), job.partition);
    if doc.source != job.source_topic {
        return Err(PartitionError::OtherSourceTopic {
            topic,
            partition,
            found: doc.source.clone(),
            expected: job.source_topic.clone(),
        });
    }
    if doc.ids != s.ids_tag {
        return Err(PartitionError::OtherSchemaIds {
            topic,
            partition,
            found: doc.ids.clone(),
            this: s.ids_tag.clone(),
        });
    }
    Ok(())
}

/// One open transaction: when it began, how many bytes of chunks it holds, and the key, value
/// and header bytes of the records sent in it.
struct Txn {
    began: Instant,
    bytes: usize,
    record_bytes: u64,
}

/// Commits the open transaction and tells `progress` what it made durable.
fn commit_told(
    w: &PartitionWriter,
    s: &Shared<'_>,
    doc: &mut Progress,
    index: u64,
    out: &mut PartitionOutcome,
    txn: &Txn,
    progress: &dyn Fn(&Produced),
) -> Result<(), PartitionError> {
    let before = out.written;
    commit(w, s, doc, index, out)?;
    progress(&Produced {
        committed: (out.written - before, txn.record_bytes),
        ..Produced::default()
    });
    Ok(())
}

fn restore_inner(
    s: &Shared<'_>,
    job: &PartitionJob,
    src: &mut dyn ChunkSource,
    w: &PartitionWriter,
    progress: &dyn Fn(&Produced),
    out: &mut PartitionOutcome,
) -> Result<(), PartitionError> {
    let t0 = Instant::now();
    let mut doc = resume_point(s, job, out)?;
    tracing::debug!(topic = job.target_topic, partition = job.partition, elapsed = ?t0.elapsed(), "progress read");
    let already = doc.records;
    if src.total() != UNKNOWN {
        // Where this run starts: an earlier run may have restored some or all of it.
        progress(&Produced {
            left: Some(src.total().saturating_sub(already)),
            ..Produced::default()
        });
    }
    if already == src.total() {
        return Ok(());
    }
    let mut buf = Vec::new();
    let mut index = 0u64;
    let mut txn: Option<Txn> = None;
    while let Some(fed) = src.next(&mut buf, index, already) {
        let e = match fed {
            Ok(Fed::Skipped(n)) => {
                index += n;
                continue;
            }
            Ok(Fed::Chunk(_)) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = e {
            return match txn.take() {
                // What came before the damaged chunk is committed.
                Some(t) => commit_told(w, s, &mut doc, index, out, &t, progress).and(Err(e)),
                None => Err(e),
            };
        }
        if txn.is_none() {
            w.begin()?;
            txn = Some(Txn {
                began: Instant::now(),
                bytes: 0,
                record_bytes: 0,
            });
        }
        let produced = match produce_chunk(s, job, src, w, &mut buf, &mut index, already, out) {
            Ok(n) => n,
            Err(e) => {
                // A stopped restore ends promptly. librdkafka's abort has been seen blocking for
                // its whole timeout (5 min) right after a stop; the next run's producer fences
                // this one, which aborts the open transaction anyway.
                // The producer that replaces a stuck one aborts its transaction.
                let _ = match e {
                    PartitionError::Stopped => w.abort_within(STOPPED_ABORT_WAIT),
                    PartitionError::Write(WriteError::Unresponsive { .. }) => Ok(()),
                    _ => w.abort(),
                };
                return Err(e);
            }
        };
        let produced = Produced {
            left: (src.total() != UNKNOWN).then(|| src.total().saturating_sub(index)),
            ..produced
        };
        progress(&produced);
        let t = txn.as_mut().expect("a transaction is open");
        t.bytes += buf.len();
        t.record_bytes += produced.bytes;
        if t.bytes >= s.txn_bytes || t.began.elapsed() >= TXN_MAX_TIME || index >= src.total() {
            let t = txn.take().expect("a transaction is open");
            commit_told(w, s, &mut doc, index, out, &t, progress)?;
        }
    }
    if let Some(t) = txn.take() {
        commit_told(w, s, &mut doc, index, out, &t, progress)?;
    }
    let total = match src.total() {
        UNKNOWN => index,
        n => n,
    };
    out.records = total;
    if doc.records != total {
        return Err(PartitionError::FewerThanPlanned {
            topic: job.target_topic.clone(),
            partition: job.partition,
            restored: doc.records,
            planned: total,
        });
    }
    Ok(())
}

/// What the records of one chunk did on the target: told to a restore's progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct Produced {
    pub records: u64,
    /// Their keys', values' and headers' bytes.
    pub bytes: u64,
    pub rewritten_ids: u64,
    pub unknown_ids: u64,
    /// Records of the partition left to restore, when known (not in a stream).
    pub left: Option<u64>,
    /// Records, and their bytes, of a transaction just committed: in the target for good.
    pub committed: (u64, u64),
}

impl Produced {
    /// Tells `progress` what one chunk of `job` produced.
    pub fn tell(&self, progress: &crate::progress::Progress, job: &PartitionJob) {
        let (topic, partition) = (job.target_topic.as_str(), job.partition);
        if self.records > 0 {
            progress.advance(topic, self.records, self.records, self.bytes);
        }
        if self.records > 0 || self.left.is_some() {
            progress.event(Event::Read {
                topic,
                partition,
                records: self.records,
                bytes: self.bytes,
                left: self.left,
            });
        }
        if self.committed.0 > 0 {
            progress.event(Event::Written {
                topic,
                partition,
                records: self.committed.0,
                bytes: self.committed.1,
            });
        }
        if self.rewritten_ids + self.unknown_ids > 0 {
            progress.event(Event::SchemaIds {
                topic,
                rewritten: self.rewritten_ids,
                unknown: self.unknown_ids,
            });
        }
    }
}

/// Tells `progress` that `job` is to be restored.
pub fn tell_planned(progress: &crate::progress::Progress, job: &PartitionJob) {
    progress.event(Event::PartitionPlanned {
        topic: &job.target_topic,
        partition: job.partition,
        total: (job.records != UNKNOWN).then_some(job.records),
    });
}

/// Tells `progress` how a partition's restore ended.
pub fn tell_ended(progress: &crate::progress::Progress, out: &PartitionOutcome) {
    progress.event(Event::PartitionEnded {
        topic: &out.target_topic,
        partition: out.partition,
        records: out.written,
        error: out.error.as_deref(),
    });
}

fn record_bytes(r: &Record<'_>) -> u64 {
    let headers: usize = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
        .sum();
    (r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len) + headers) as u64
}

/// Produces the records of one decompressed chunk from `*index` on (skipping those an earlier
/// run committed), rewriting schema IDs in place; returns how many it produced.
#[allow(clippy::too_many_arguments)]
fn produce_chunk(
    s: &Shared<'_>,
    job: &PartitionJob,
    src: &dyn ChunkSource,
    w: &PartitionWriter,
    buf: &mut [u8],
    index: &mut u64,
    already: u64,
    out: &mut PartitionOutcome,
) -> Result<Produced, PartitionError> {
    let records = |source| PartitionError::Records {
        topic: job.source_topic.clone(),
        partition: job.partition,
        source,
    };
    let mut positions = RecordPositions::new(buf, 0).map_err(records)?;
    let mut stats = RewriteStats::default();
    let mut produced = Produced::default();
    while let Some(at) = positions.next_in(buf) {
        let at = at.map_err(records)?;
        if *index >= src.total() {
            break;
        }
        if *index < already {
            *index += 1;
            continue;
        }
        if s.cancel.load(Ordering::SeqCst) {
            return Err(PartitionError::Stopped);
        }
        if s.rewrite {
            rewrite_record(buf, &at, s.ids, &mut stats);
        }
        let report = src.wanted().contains(index).then_some(*index);
        let record = at.record(buf);
        w.send(&record, report)?;
        *index += 1;
        produced.records += 1;
        produced.bytes += record_bytes(&record);
        if w.failing() {
            break;
        }
    }
    produced.rewritten_ids = stats.rewritten + stats.header_rewritten;
    produced.unknown_ids = stats.unknown_ids;
    out.rewritten_ids += stats.rewritten;
    out.unknown_ids += stats.unknown_ids;
    out.rewritten_header_ids += stats.header_rewritten;
    out.guid_headers += stats.header_guids;
    out.guids.extend(stats.guids);
    Ok(produced)
}

/// Commits the open transaction: every record delivered, then the progress (records in, their
/// wanted offsets, the end offset) with them. On failure the transaction is aborted and nothing
/// of it counts.
fn commit(
    w: &PartitionWriter,
    s: &Shared<'_>,
    doc: &mut Progress,
    index: u64,
    out: &mut PartitionOutcome,
) -> Result<(), PartitionError> {
    let abort_with = |e: WriteError| {
        if !matches!(
            e,
            WriteError::Fenced { .. } | WriteError::Unresponsive { .. } | WriteError::Hung { .. }
        ) {
            let _ = w.abort();
        }
        Err(e.into())
    };
    let t0 = Instant::now();
    let d = match w.flush() {
        Ok(d) => d,
        Err(e) => return abort_with(e),
    };
    let flushed = t0.elapsed();
    let Some(end) = d.end else {
        let _ = w.abort();
        return Err(PartitionError::NothingDelivered {
            topic: w.topic().to_string(),
            partition: w.partition(),
        });
    };
    let mut next = doc.clone();
    next.records = index;
    next.at.extend(d.wanted);
    next.at.sort_unstable();
    if let Err(e) = w.commit(s.progress, end, &next.encode()) {
        return abort_with(e);
    }
    tracing::debug!(topic = w.topic(), partition = w.partition(), ?flushed, committed = ?t0.elapsed() - flushed, records = next.records - doc.records, "transaction committed");
    out.written += next.records - doc.records;
    *doc = next;
    out.end_offset = Some(end);
    Ok(())
}
