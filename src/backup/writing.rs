//! The writer's side of a backup's record phase. Chunks reach it from the compression threads,
//! and partition ends from the workers, in any order; chunks go into the file in offset order, and
//! a partition is marked complete once its last chunk is written.

use std::collections::BTreeMap;
use std::io::BufWriter;

use super::{Event, PartitionResult, PartitionTask};
use crate::archive::writer::BackgroundSync;
use crate::archive::{ArchiveError, ArchiveWriter};
use crate::format::chunk::SealedChunk;
use crate::progress::{Event as ProgressEvent, Progress};

type Writer = ArchiveWriter<BufWriter<crate::archive::writer::Output>>;

/// What the record phase gathers: each partition's result, and what was written.
pub(super) struct Collector {
    pub results: BTreeMap<(String, i32), PartitionResult>,
    completion: Completion,
    order: InOrder,
    /// Key, value and header bytes of the records read.
    pub record_bytes: u64,
    pub chunks: u64,
    pub uncompressed: u64,
    /// Chunks compressed at each zstd level.
    pub levels: BTreeMap<i32, u64>,
    progress: Progress,
    /// A followed member rolls once the archive holds this many bytes.
    roll_at: Option<(std::sync::Arc<std::sync::atomic::AtomicBool>, u64)>,
}

impl Collector {
    pub fn new(
        tasks: &[PartitionTask],
        progress: Progress,
        follow: Option<&super::Follow>,
    ) -> Collector {
        let results = tasks
            .iter()
            .map(|t| {
                let r = PartitionResult {
                    partition: t.partition,
                    start_offset: t.start,
                    end_offset: t.end,
                    records: 0,
                    complete: false,
                    error: None,
                };
                ((t.topic.clone(), t.partition), r)
            })
            .collect();
        Collector {
            results,
            completion: Completion::default(),
            order: InOrder::new(tasks),
            record_bytes: 0,
            chunks: 0,
            uncompressed: 0,
            levels: BTreeMap::new(),
            progress,
            roll_at: follow.and_then(|f| Some((f.roll.clone(), f.max_bytes?))),
        }
    }

    /// Takes one message of the workers or the compression stage. Err when the archive could not
    /// be written (a full disk): the caller stops the backup.
    pub fn take(
        &mut self,
        ev: Event,
        w: &mut Writer,
        syncer: &mut BackgroundSync,
    ) -> Result<(), ArchiveError> {
        match ev {
            Event::Chunk(c, bytes, level) => {
                self.record_bytes += bytes;
                self.chunks += 1;
                if let Some(l) = level {
                    *self.levels.entry(l).or_default() += 1;
                }
                if c.frame.compression == crate::format::frame::Compression::None {
                    self.uncompressed += 1;
                }
                for c in self.order.arrive(c) {
                    let key = (c.header.topic.clone(), c.header.partition);
                    let (records, bytes) = (u64::from(c.header.record_count), c.frame.frame_len());
                    let started = std::time::Instant::now();
                    let written = w.write_chunk(c);
                    syncer.written(w.position());
                    written?;
                    self.progress.event(ProgressEvent::ChunkWritten {
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    self.progress.event(ProgressEvent::Written {
                        topic: &key.0,
                        partition: key.1,
                        records,
                        bytes,
                    });
                    if self.completion.chunk_written(&key) {
                        self.complete(w, &key)?;
                    }
                }
                if let Some((roll, max)) = &self.roll_at
                    && w.position() >= *max
                {
                    roll.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(())
            }
            Event::Done {
                topic,
                partition,
                records,
                chunks,
                end,
            } => {
                let key = (topic, partition);
                let r = self.results.get_mut(&key).expect("a task");
                r.records = records;
                if let Some(end) = end {
                    // A followed partition's range ends at the roll.
                    r.end_offset = end;
                    w.declare_partition(&key.0, key.1, r.start_offset, end);
                }
                if self.completion.all_read(&key, chunks) {
                    self.complete(w, &key)?;
                }
                Ok(())
            }
            Event::Failed {
                topic,
                partition,
                records,
                error,
            } => {
                self.progress.event(ProgressEvent::PartitionEnded {
                    topic: &topic,
                    partition,
                    records,
                    error: Some(&error),
                });
                let r = self.results.get_mut(&(topic, partition)).expect("a task");
                r.records = records;
                r.error = Some(error);
                Ok(())
            }
        }
    }

    fn complete(&mut self, w: &mut Writer, key: &(String, i32)) -> Result<(), ArchiveError> {
        let r = self.results.get_mut(key).expect("a task");
        r.complete = true;
        let records = r.records;
        w.finish_partition(&key.0, key.1)?;
        self.progress.event(ProgressEvent::PartitionEnded {
            topic: &key.0,
            partition: key.1,
            records,
            error: None,
        });
        Ok(())
    }

    /// Once every message is taken: each incomplete partition, named with why, for the manifest.
    pub fn notes(&mut self) -> Vec<String> {
        for (t, p, from) in self.order.stranded() {
            // Cannot happen while every chunk handed to the compression stage reaches the writer;
            // if one did not, what follows it stays out of the file rather than leave a hole.
            let r = self.results.get_mut(&(t, p)).expect("a task");
            r.complete = false;
            r.error.get_or_insert(format!(
                "the chunk covering offsets from {from} never reached the writer"
            ));
        }
        let mut notes = Vec::new();
        for ((t, p), r) in &self.results {
            if let Some(e) = &r.error {
                notes.push(format!("{t}/{p} incomplete: {e}"));
            } else if !r.complete {
                notes.push(format!("{t}/{p} incomplete: the backup was stopped"));
            }
        }
        notes
    }
}

/// When a partition is complete. Its chunks reach the writer from the compression threads in any
/// order, possibly after the worker said it read everything (in how many chunks): the partition
/// is complete when both are known and that many chunks are written.
#[derive(Debug, Default)]
struct Completion {
    written: BTreeMap<(String, i32), u64>,
    expected: BTreeMap<(String, i32), u64>,
}

impl Completion {
    /// A chunk of `key` was written; true when that completes the partition.
    fn chunk_written(&mut self, key: &(String, i32)) -> bool {
        let n = self.written.entry(key.clone()).or_default();
        *n += 1;
        if self.expected.get(key) == Some(n) {
            self.expected.remove(key);
            true
        } else {
            false
        }
    }

    /// Every record of `key` was read, in `chunks` chunks; true when all are written already.
    fn all_read(&mut self, key: &(String, i32), chunks: u64) -> bool {
        if self.written.get(key).copied().unwrap_or(0) >= chunks {
            true
        } else {
            self.expected.insert(key.clone(), chunks);
            false
        }
    }
}

/// Chunks of a partition reach the writer from the compression threads in any order, but must go
/// into the file in offset order: a backup killed between two chunks must never leave a later
/// chunk without the one before it. A chunk waits here until the chunk whose coverage ends where
/// its own starts is written.
struct InOrder {
    /// Per partition, where the next chunk to write starts (its `covers_from`).
    next: BTreeMap<(String, i32), i64>,
    waiting: BTreeMap<(String, i32, i64), SealedChunk>,
}

impl InOrder {
    fn new(tasks: &[PartitionTask]) -> InOrder {
        InOrder {
            next: tasks
                .iter()
                .map(|t| ((t.topic.clone(), t.partition), t.start))
                .collect(),
            waiting: BTreeMap::new(),
        }
    }

    /// Takes a chunk; returns the chunks that can now be written, in order.
    fn arrive(&mut self, c: SealedChunk) -> Vec<SealedChunk> {
        let (topic, partition) = (c.header.topic.clone(), c.header.partition);
        self.waiting
            .insert((topic.clone(), partition, c.header.covers_from), c);
        let mut ready = Vec::new();
        let key = (topic, partition);
        while let Some(next) = self.next.get(&key).copied()
            && let Some(c) = self.waiting.remove(&(key.0.clone(), key.1, next))
        {
            self.next.insert(key.clone(), c.header.covers_to);
            ready.push(c);
        }
        ready
    }

    /// Partitions with chunks still waiting (topic, partition, where the missing chunk starts).
    fn stranded(&self) -> Vec<(String, i32, i64)> {
        let mut out: Vec<(String, i32, i64)> = Vec::new();
        for (t, p, _) in self.waiting.keys() {
            if !out.iter().any(|(ot, op, _)| ot == t && op == p) {
                let from = self.next.get(&(t.clone(), *p)).copied().unwrap_or(0);
                out.push((t.clone(), *p, from));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{Completion, InOrder};
    use crate::backup::PartitionTask;
    use crate::format::chunk::{ChunkEncoder, SealedChunk, TimestampType};

    fn chunk(partition: i32, offsets: std::ops::Range<i64>) -> SealedChunk {
        let mut e = ChunkEncoder::new("t", partition).unwrap();
        e.push(offsets.start, 0, TimestampType::CreateTime, None, None, [])
            .unwrap();
        let (h, raw) = e.finish(offsets).unwrap();
        SealedChunk::uncompressed(h, raw)
    }

    #[test]
    fn a_later_chunk_waits_for_the_one_before_it() {
        let task = |partition| PartitionTask {
            topic: "t".into(),
            partition,
            start: 10,
            end: 40,
        };
        let mut o = InOrder::new(&[task(0), task(1)]);
        let covers = |v: Vec<SealedChunk>| -> Vec<(i32, i64)> {
            v.iter()
                .map(|c| (c.header.partition, c.header.covers_from))
                .collect()
        };
        assert!(o.arrive(chunk(0, 30..40)).is_empty());
        assert!(o.arrive(chunk(0, 20..30)).is_empty());
        // Another partition's chunks are not held up by partition 0's.
        assert_eq!(covers(o.arrive(chunk(1, 10..40))), vec![(1, 10)]);
        assert_eq!(o.stranded(), vec![("t".to_string(), 0, 10)]);
        assert_eq!(
            covers(o.arrive(chunk(0, 10..20))),
            vec![(0, 10), (0, 20), (0, 30)]
        );
        assert!(o.stranded().is_empty());
    }

    #[test]
    fn a_partition_completes_with_its_last_chunk_whatever_the_order() {
        let (a, b, e) = (
            ("t".to_string(), 0),
            ("t".to_string(), 1),
            ("u".to_string(), 0),
        );
        let mut c = Completion::default();
        // a: all chunks written before the worker's Done.
        assert!(!c.chunk_written(&a));
        assert!(!c.chunk_written(&a));
        assert!(c.all_read(&a, 2));
        // b: Done first, then its three chunks; only the last completes it.
        assert!(!c.all_read(&b, 3));
        assert!(!c.chunk_written(&b));
        assert!(!c.chunk_written(&b));
        assert!(c.chunk_written(&b));
        // An empty partition is complete at once; a partition's chunks do not count for another.
        assert!(c.all_read(&e, 0));
        assert!(!c.all_read(&("u".to_string(), 1), 1));
    }
}
