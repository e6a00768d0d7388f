//! One partition's chunks as a stream restore hands them over: each checked by the stream's
//! verify, then here against the partition's order (it must continue where the last one ended)
//! and the target's limits, before any of its records is written. What a file restore plans
//! before its first write (the record count with `--until`, the records consumer-group offsets
//! point at) is found here as the chunks come.

use std::collections::{BTreeMap, BTreeSet};

use crossbeam_channel::Receiver;

use super::keep;
use super::records::{ChunkSource, Fed, PartitionError, PartitionJob, UNKNOWN};
use crate::archive::index::ChunkEntry;
use crate::format::chunk::{ChunkHeader, ChunkRecords};

/// A chunk of the stream: its frame offset and its checked content.
pub type StreamChunk = (u64, Vec<u8>);

/// What the chunks showed of the partition, for the consumer-group translation at the end.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Records the restore puts in the partition, as far as the chunks came.
    pub records: u64,
    /// Archived committed offset → index of the first restored record at or after it.
    pub located: BTreeMap<i64, u64>,
}

pub struct StreamChunks {
    rx: Receiver<StreamChunk>,
    job: PartitionJob,
    until: Option<i64>,
    allow_gaps: bool,
    limits: keep::Limits,
    accept_retention_loss: bool,
    /// Where the next chunk's coverage must start.
    covered_to: i64,
    /// Records seen so far (the index of the next chunk's first record), up to `--until`'s cut.
    seen: u64,
    total: u64,
    /// Committed offsets of the archive's consumer groups not yet located.
    pending: BTreeSet<i64>,
    located: BTreeMap<i64, u64>,
    wanted: BTreeSet<u64>,
}

impl StreamChunks {
    /// The chunks of `job` that will come on `rx`; `start` is where its declared range begins,
    /// `offsets` the archive's committed offsets on it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rx: Receiver<StreamChunk>,
        job: PartitionJob,
        start: i64,
        offsets: BTreeSet<i64>,
        until: Option<i64>,
        allow_gaps: bool,
        limits: keep::Limits,
        accept_retention_loss: bool,
    ) -> StreamChunks {
        StreamChunks {
            rx,
            job,
            until,
            allow_gaps,
            limits,
            accept_retention_loss,
            covered_to: start,
            seen: 0,
            total: UNKNOWN,
            pending: offsets,
            located: BTreeMap::new(),
            wanted: BTreeSet::new(),
        }
    }

    /// What the chunks showed; offsets no restored record reaches point at the end.
    pub fn facts(mut self) -> Facts {
        // Whatever is still queued counts too: a worker that stopped early reports no facts
        // anyone relies on, and one that ended at `--until` has its cut.
        let records = if self.total == UNKNOWN {
            self.seen
        } else {
            self.total
        };
        for c in std::mem::take(&mut self.pending) {
            self.located.insert(c, records);
        }
        Facts {
            records,
            located: self.located,
        }
    }

    fn error(&self, at: u64, h: &ChunkHeader, why: &'static str) -> PartitionError {
        PartitionError::StreamOrder {
            topic: self.job.source_topic.clone(),
            partition: self.job.partition,
            at,
            from: h.covers_from,
            expected: self.covered_to,
            why,
        }
    }

    /// The chunk continues the partition where the last one ended (a hole only with
    /// `--allow-gaps`), and the target keeps and takes its records.
    fn check(&mut self, at: u64, h: &ChunkHeader) -> Result<(), PartitionError> {
        if h.covers_from < self.covered_to {
            return Err(self.error(at, h, "it overlaps records that came before"));
        }
        if h.covers_from > self.covered_to {
            if !self.allow_gaps {
                return Err(self.error(
                    at,
                    h,
                    "records are missing in between (a chunk lost to damage?); --allow-gaps restores around the hole",
                ));
            }
            tracing::warn!(
                "{}/{}: restoring around a hole, offsets {}..{}",
                self.job.source_topic,
                self.job.partition,
                self.covered_to,
                h.covers_from
            );
        }
        self.covered_to = h.covers_to;
        let entry = ChunkEntry::new(h, at, [0; 32], 0, 0);
        let f = keep::check_partition(
            &self.job.target_topic,
            self.job.partition,
            std::slice::from_ref(&entry),
            u64::from(h.record_count),
            &self.limits,
            crate::archive::writer::now_ms(),
        );
        for w in f.warnings {
            tracing::warn!("{w}");
        }
        let mut stop = f.refusals;
        if !self.accept_retention_loss {
            stop.extend(f.losses);
        }
        match stop.first() {
            Some(why) => Err(PartitionError::NotKept(why.clone())),
            None => Ok(()),
        }
    }

    /// Finds in the chunk the records consumer-group offsets point at and `--until`'s cut.
    fn locate(&mut self, raw: &[u8], h: &ChunkHeader) -> Result<(), PartitionError> {
        let cut = self.until.is_some_and(|u| h.max_timestamp > u);
        let points = self.pending.range(..=h.last_offset).next().is_some();
        if !cut && !points {
            self.seen += u64::from(h.record_count);
            return Ok(());
        }
        let records = |source| PartitionError::Records {
            topic: self.job.source_topic.clone(),
            partition: self.job.partition,
            source,
        };
        for r in ChunkRecords::new(raw, 0).map_err(records)? {
            let r = r.map_err(records)?;
            if self.until.is_some_and(|u| r.timestamp > u) {
                self.total = self.seen;
                return Ok(());
            }
            let reached: Vec<i64> = self.pending.range(..=r.offset).copied().collect();
            for c in reached {
                self.pending.remove(&c);
                self.located.insert(c, self.seen);
                self.wanted.insert(self.seen);
            }
            self.seen += 1;
        }
        Ok(())
    }
}

impl ChunkSource for StreamChunks {
    fn next(
        &mut self,
        buf: &mut Vec<u8>,
        index: u64,
        already: u64,
    ) -> Option<Result<Fed, PartitionError>> {
        if index >= self.total {
            return None;
        }
        let (at, raw) = self.rx.recv().ok()?;
        let h = match ChunkHeader::decode(&raw, 0) {
            Ok((h, _)) => h,
            Err(source) => {
                return Some(Err(PartitionError::Records {
                    topic: self.job.source_topic.clone(),
                    partition: self.job.partition,
                    source,
                }));
            }
        };
        if let Err(e) = self.check(at, &h).and_then(|()| self.locate(&raw, &h)) {
            return Some(Err(e));
        }
        let n = u64::from(h.record_count);
        if index + n <= already {
            return Some(Ok(Fed::Skipped(n)));
        }
        *buf = raw;
        Some(Ok(Fed::Chunk(n)))
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn wanted(&self) -> &BTreeSet<u64> {
        &self.wanted
    }
}
