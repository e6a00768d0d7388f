//! Partition consumers for a backup. Each worker thread owns consumers whose partitions have
//! distinct partition numbers (librdkafka reports end-of-partition by number only), reads each
//! partition from its snapshot start to its snapshot end, encodes records into chunks and hands
//! finished chunks to the compression stage.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, Timestamp, TopicPartitionList};

use super::compress::Stage;
use super::{BackupOptions, Event};
use crate::format::chunk::{ChunkEncoder, TimestampType};
use crate::progress::{Event as ProgressEvent, Progress};
use crate::runtime::Context;

/// One partition's share of a snapshot: offsets `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTask {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// What a backup reads of each topic: its partitions' snapshot ranges, in offsets (a topic's
/// progress total).
pub(crate) fn offsets_per_topic(tasks: &[PartitionTask]) -> Vec<(String, u64)> {
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    for t in tasks {
        *totals.entry(t.topic.clone()).or_default() += (t.end - t.start).max(0) as u64;
    }
    totals.into_iter().collect()
}

/// Groups tasks so that no group holds two partitions with the same number; groups are spread
/// over `workers` threads.
fn plan(tasks: &[PartitionTask], workers: usize) -> Vec<Vec<Vec<PartitionTask>>> {
    let workers = workers.max(1);
    let mut groups: Vec<Vec<PartitionTask>> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        if groups.len() < workers {
            groups.push(vec![t.clone()]);
            continue;
        }
        let n = groups.len();
        match (0..n)
            .map(|k| (i + k) % n)
            .find(|&g| groups[g].iter().all(|x| x.partition != t.partition))
        {
            Some(g) => groups[g].push(t.clone()),
            None => groups.push(vec![t.clone()]),
        }
    }
    let mut threads: Vec<Vec<Vec<PartitionTask>>> =
        vec![Vec::new(); workers.min(groups.len()).max(1)];
    let n = threads.len();
    for (i, g) in groups.into_iter().enumerate() {
        threads[i % n].push(g);
    }
    threads
}

pub(crate) fn spawn(
    opts: &BackupOptions,
    tasks: &[PartitionTask],
    tx: SyncSender<Event>,
    stage: Stage,
    rt: &Context,
) -> Vec<JoinHandle<()>> {
    let (empty, work): (Vec<_>, Vec<_>) = tasks.iter().cloned().partition(|t| t.start >= t.end);
    let mut handles = Vec::new();
    {
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            for t in empty {
                if tx
                    .send(Event::Done {
                        topic: t.topic,
                        partition: t.partition,
                        records: 0,
                        chunks: 0,
                        end: None,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    for mut groups in plan(&work, opts.concurrency) {
        if groups.is_empty() {
            continue;
        }
        if opts.follow.is_some() {
            // A followed group reads until the roll, so a thread's groups cannot take turns:
            // one consumer takes them all (partition ends, which are told by partition number
            // alone, are not waited for when following).
            groups = vec![groups.concat()];
        }
        let (tx, stage, opts, rt) = (tx.clone(), stage.clone(), opts.clone(), rt.clone());
        handles.push(
            std::thread::Builder::new()
                .name("kar-backup-worker".into())
                .spawn(move || {
                    for g in groups {
                        if opts.cancel.load(Ordering::SeqCst) {
                            fail_all(
                                &g,
                                &tx,
                                "the backup was stopped before this partition was read",
                            );
                            continue;
                        }
                        consume_group(&opts, g, &tx, &stage, &rt);
                    }
                })
                .expect("spawning a backup worker"),
        );
    }
    handles
}

fn fail_all(g: &[PartitionTask], tx: &SyncSender<Event>, why: &str) {
    for t in g {
        let _ = tx.send(Event::Failed {
            topic: t.topic.clone(),
            partition: t.partition,
            records: 0,
            error: why.into(),
        });
    }
}

struct State {
    task: PartitionTask,
    enc: Option<ChunkEncoder>,
    records: u64,
    /// Chunks handed to the compression stage.
    chunks: u64,
    /// Where the next chunk's coverage starts: the end of the previous chunk's, at first the
    /// snapshot start.
    covered_to: i64,
    /// Offsets covered so far that the progress bar has not been told of.
    reported_to: i64,
    bytes: u64,
    /// Just after the last record read (at first the start): where a followed partition ends
    /// at the roll.
    next: i64,
    done: bool,
    last_progress: Instant,
    records_at_check: u64,
}

fn consume_group(
    opts: &BackupOptions,
    group: Vec<PartitionTask>,
    tx: &SyncSender<Event>,
    stage: &Stage,
    rt: &Context,
) {
    let consumer = match assigned_consumer(opts, &group) {
        Ok(c) => c,
        Err(e) => return fail_all(&group, tx, &e),
    };
    // Closing a consumer waits for librdkafka's threads (up to ~100 ms); the backup need not.
    let closer = Closer(Some(consumer), rt);
    let consumer = closer.0.as_ref().expect("set above");
    let mut g = Group {
        opts,
        tx,
        stage,
        left: group.len(),
        states: group
            .into_iter()
            .map(|task| State {
                covered_to: task.start,
                reported_to: task.start,
                next: task.start,
                task,
                enc: None,
                records: 0,
                chunks: 0,
                bytes: 0,
                done: false,
                last_progress: Instant::now(),
                records_at_check: 0,
            })
            .collect(),
        last_error: None,
    };
    let (mut polls, mut idle) = (0u64, false);
    let follow = opts.follow.as_ref();
    while g.left > 0 {
        if opts.cancel.load(Ordering::SeqCst) {
            return g.stop();
        }
        if follow.is_some_and(|f| f.roll.load(Ordering::SeqCst)) {
            return g.roll();
        }
        let went_on = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => g.record(&m),
            Some(Err(KafkaError::PartitionEOF(p))) => g.partition_end(p),
            Some(Err(e)) => {
                g.last_error = Some(e.to_string());
                Ok(())
            }
            None => {
                idle = true;
                Ok(())
            }
        };
        if went_on.is_err() {
            return;
        }
        // Stalls are looked for every so many records, or when the consumer is idle: reading the
        // clock for every record costs more than the check is worth.
        polls += 1;
        if !idle && polls % 4096 != 0 {
            continue;
        }
        idle = false;
        // A followed partition without new records is not stalled: it waits for them.
        if follow.is_none() && g.fail_stalled().is_err() {
            return;
        }
    }
}

/// A consumer for the group's partitions, each assigned at its snapshot start.
fn assigned_consumer(
    opts: &BackupOptions,
    group: &[PartitionTask],
) -> Result<BaseConsumer, String> {
    // librdkafka needs fetch.max.bytes ≤ its queue; records larger than it are still fetched.
    let fetch_bytes = (opts.fetch_buffer_bytes / 2).clamp(1024, 50 * 1024 * 1024);
    let consumer: BaseConsumer = opts
        .kafka
        .client_config()
        .set("group.id", "kar-backup")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error")
        .set(
            "queued.max.messages.kbytes",
            (opts.fetch_buffer_bytes / 1024).max(1).to_string(),
        )
        // Compressing makes a worker slower than its fetcher, so the queue fills; librdkafka then
        // waits fetch.queue.backoff.ms (1 s by default) before fetching again, and the worker
        // idles. A short backoff keeps the queue fed.
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.max.bytes", fetch_bytes.to_string())
        // Only a request-size limit on a consumer; librdkafka wants it ≤ fetch.max.bytes.
        .set("message.max.bytes", fetch_bytes.min(1_000_000).to_string())
        .set(
            "max.partition.fetch.bytes",
            fetch_bytes.min(1024 * 1024).to_string(),
        )
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for t in group {
        tpl.add_partition_offset(&t.topic, t.partition, Offset::Offset(t.start))
            .map_err(|e| format!("cannot assign: {e}"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot assign: {e}"))?;
    Ok(consumer)
}

/// One worker's partitions being read. Its methods return Err only when the writer has gone
/// away, which ends the worker.
struct Group<'a> {
    opts: &'a BackupOptions,
    tx: &'a SyncSender<Event>,
    stage: &'a Stage,
    states: Vec<State>,
    /// Partitions not done yet.
    left: usize,
    last_error: Option<String>,
}

impl Group<'_> {
    /// The backup was stopped: what was read is good and kept, but no partition left is complete.
    fn stop(&mut self) {
        for st in self.states.iter_mut().filter(|s| !s.done) {
            if flush(st, None, self.stage, &self.opts.progress).is_err() {
                return;
            }
            let _ = self.tx.send(Event::Failed {
                topic: st.task.topic.clone(),
                partition: st.task.partition,
                records: st.records,
                error: "the backup was stopped".into(),
            });
            st.done = true;
        }
    }

    /// The roll of a followed member: each partition ends just after the last record read of
    /// it, complete (the next member starts there).
    fn roll(&mut self) {
        if let Some(e) = &self.last_error {
            tracing::warn!(
                "the consumer reported an error while following {} partition(s) (the last: {e}); each ends at the roll after the last record it read",
                self.states.len()
            );
        }
        for st in self.states.iter_mut().filter(|s| !s.done) {
            st.task.end = st.next;
            if finish(st, self.tx, self.stage, &self.opts.progress).is_err() {
                return;
            }
        }
        self.left = 0;
    }

    fn record(&mut self, m: &BorrowedMessage<'_>) -> Result<(), ()> {
        let (progress, stage, tx) = (&self.opts.progress, self.stage, self.tx);
        let Some(st) = self
            .states
            .iter_mut()
            .find(|s| s.task.partition == m.partition() && s.task.topic == m.topic())
        else {
            return Ok(());
        };
        if st.done {
            return Ok(());
        }
        let offset = m.offset();
        if offset >= st.task.end {
            finish(st, tx, stage, progress)?;
            self.left -= 1;
            return Ok(());
        }
        // A full chunk is closed when the next record comes, not when it fills: the last chunk
        // of the partition then accounts for the snapshot range up to its end (transaction
        // markers there leave no record to close it on).
        if st
            .enc
            .as_ref()
            .is_some_and(|e| e.encoded_len() >= self.opts.writer.chunk_target_bytes)
        {
            flush(st, None, stage, progress)?;
        }
        if let Err(error) = push(st, m, self.opts.writer.chunk_target_bytes, stage) {
            let _ = tx.send(Event::Failed {
                topic: st.task.topic.clone(),
                partition: st.task.partition,
                records: st.records,
                error,
            });
            st.done = true;
            self.left -= 1;
            return Ok(());
        }
        if offset + 1 >= st.task.end {
            finish(st, tx, stage, progress)?;
            self.left -= 1;
        }
        Ok(())
    }

    /// Everything up to partition `p`'s current end was delivered, and that end is at or past
    /// the snapshot end: the partition is complete.
    fn partition_end(&mut self, p: i32) -> Result<(), ()> {
        if self.opts.follow.is_some() {
            return Ok(());
        }
        if let Some(st) = self
            .states
            .iter_mut()
            .find(|s| s.task.partition == p && !s.done)
        {
            finish(st, self.tx, self.stage, &self.opts.progress)?;
            self.left -= 1;
        }
        Ok(())
    }

    /// Fails each partition that made no progress for the stall timeout, keeping what it read.
    fn fail_stalled(&mut self) -> Result<(), ()> {
        let now = Instant::now();
        let timeout = self.opts.stall_timeout;
        for st in self.states.iter_mut().filter(|s| !s.done) {
            if st.records != st.records_at_check {
                st.records_at_check = st.records;
                st.last_progress = now;
                continue;
            }
            if now.duration_since(st.last_progress) <= timeout {
                continue;
            }
            flush(st, None, self.stage, &self.opts.progress)?;
            let why = format!(
                "no progress for {}s at offset {} of {}..{}{}",
                timeout.as_secs(),
                st.reported_to,
                st.task.start,
                st.task.end,
                self.last_error
                    .as_ref()
                    .map(|e| format!(" (last consumer error: {e})"))
                    .unwrap_or_default()
            );
            let _ = self.tx.send(Event::Failed {
                topic: st.task.topic.clone(),
                partition: st.task.partition,
                records: st.records,
                error: why,
            });
            st.done = true;
            self.left -= 1;
        }
        Ok(())
    }
}

/// See [`push`].
const RESERVE_AT: usize = 256 * 1024;

/// Adds a record to the partition's open chunk (opening one if none is). Err names what makes
/// the record unfit for a chunk.
fn push(
    st: &mut State,
    m: &BorrowedMessage<'_>,
    chunk_bytes: usize,
    stage: &Stage,
) -> Result<(), String> {
    let offset = m.offset();
    let (ts, ts_type) = match m.timestamp() {
        Timestamp::NotAvailable => (-1, TimestampType::NotAvailable),
        Timestamp::CreateTime(t) => (t, TimestampType::CreateTime),
        Timestamp::LogAppendTime(t) => (t, TimestampType::LogAppendTime),
    };
    let enc = match &mut st.enc {
        Some(e) => e,
        None => st.enc.insert(
            ChunkEncoder::new(&st.task.topic, st.task.partition).map_err(|e| e.to_string())?,
        ),
    };
    // A chunk that has grown to half its target (and at least 256 KiB) will likely fill: room
    // for all of it at once (it closes on the first record at or past the target, so a record
    // more), where doubling would overshoot the target anyway and copy it once more. A chunk of a
    // quiet partition, many of them open at once when following, stays small.
    let len = enc.encoded_len();
    if len >= RESERVE_AT.max(chunk_bytes / 2) && len < chunk_bytes {
        enc.reserve_in(chunk_bytes + 64 * 1024, || stage.spare_buffer());
    }
    let (key, value) = (m.key(), m.payload());
    let mut hbytes = 0;
    let pushed = match m.headers() {
        Some(h) => enc.push(
            offset,
            ts,
            ts_type,
            key,
            value,
            h.iter().map(|h| {
                hbytes += h.key.len() + h.value.map_or(0, <[u8]>::len);
                (h.key, h.value)
            }),
        ),
        None => enc.push(offset, ts, ts_type, key, value, std::iter::empty()),
    };
    pushed.map_err(|e| format!("record at offset {offset}: {e}"))?;
    st.records += 1;
    st.next = offset + 1;
    st.bytes += (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + hbytes) as u64;
    Ok(())
}

/// Closes the open chunk, if any, and hands it to the compression stage; the chunk accounts for
/// the offsets from the previous chunk's end to `to` (the snapshot end, once the partition is read
/// to it), or to just after its last record. Err when the writer has gone away.
fn flush(st: &mut State, to: Option<i64>, stage: &Stage, progress: &Progress) -> Result<(), ()> {
    if let Some(enc) = st.enc.take() {
        let n = u64::from(enc.len());
        let (_, last) = enc.offsets();
        let to = to.map_or(last + 1, |t| t.max(last + 1));
        // The consumer delivers offsets in order from the snapshot start, so this cannot fail.
        let (header, raw) = enc.finish(st.covered_to..to).map_err(|e| {
            tracing::error!("{}/{}: {e}", st.task.topic, st.task.partition);
        })?;
        st.covered_to = to;
        let bytes = st.bytes;
        st.bytes = 0;
        stage.submit(header, raw, bytes)?;
        st.chunks += 1;
        progress.advance(
            &st.task.topic,
            (last + 1 - st.reported_to).max(0) as u64,
            n,
            bytes,
        );
        st.reported_to = last + 1;
        progress.event(ProgressEvent::Read {
            topic: &st.task.topic,
            partition: st.task.partition,
            records: n,
            bytes,
            left: (st.task.end != super::FOLLOW_END)
                .then(|| (st.task.end - st.reported_to).max(0) as u64),
        });
    }
    Ok(())
}

fn finish(
    st: &mut State,
    tx: &SyncSender<Event>,
    stage: &Stage,
    progress: &Progress,
) -> Result<(), ()> {
    flush(st, Some(st.task.end), stage, progress)?;
    progress.advance(
        &st.task.topic,
        (st.task.end - st.reported_to).max(0) as u64,
        0,
        0,
    );
    progress.event(ProgressEvent::Read {
        topic: &st.task.topic,
        partition: st.task.partition,
        records: 0,
        bytes: 0,
        left: Some(0),
    });
    st.done = true;
    tx.send(Event::Done {
        topic: st.task.topic.clone(),
        partition: st.task.partition,
        records: st.records,
        chunks: st.chunks,
        end: Some(st.task.end),
    })
    .map_err(|_| ())
}

/// Drops a consumer on a thread of its own.
struct Closer<'a>(Option<BaseConsumer>, &'a Context);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            self.1.close_in_background(crate::kafka::Closing(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(topic: &str, partition: i32) -> PartitionTask {
        PartitionTask {
            topic: topic.into(),
            partition,
            start: 0,
            end: 1,
        }
    }

    #[test]
    fn no_group_holds_two_partitions_with_the_same_number() {
        let mut tasks = Vec::new();
        for topic in ["a", "b", "c", "d", "e"] {
            for p in 0..6 {
                tasks.push(t(topic, p));
            }
        }
        let threads = plan(&tasks, 4);
        assert_eq!(threads.len(), 4);
        let mut seen = 0;
        for groups in &threads {
            for g in groups {
                let mut nums: Vec<i32> = g.iter().map(|t| t.partition).collect();
                nums.sort();
                nums.dedup();
                assert_eq!(nums.len(), g.len(), "{g:?}");
                seen += g.len();
            }
        }
        assert_eq!(seen, tasks.len());
        assert_eq!(plan(&[t("x", 0)], 4).len(), 1);
    }
}
