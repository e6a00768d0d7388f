//! Streaming records from the memory-mapped archive to the target: one idempotent producer
//! (acks=all) per worker, each partition written in archive order, keys, values, headers and
//! timestamps exactly as archived, schema IDs rewritten in place where they changed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use super::rewrite::{IdMap, RewriteStats, rewrite_record};
use super::state::State;
use crate::archive::Archive;
use crate::format::chunk::{ChunkRecords, RecordPositions, TimestampType};
use crate::format::frame::ContentDecoder;
use crate::kafka::KafkaConnection;
use crate::kafka::sink::Target;

/// One partition to restore.
#[derive(Debug, Clone)]
pub struct PartitionJob {
    pub source_topic: String,
    pub target_topic: String,
    pub partition: i32,
    /// Records the restore puts in the partition (see [`planned_records`]), counted once, when
    /// planning.
    pub records: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionOutcome {
    pub source_topic: String,
    pub target_topic: String,
    pub partition: i32,
    /// Records the restore puts in this partition (after `--until`).
    pub records: u64,
    /// Of those, written by this run (the rest were there from an earlier, interrupted run).
    pub written: u64,
    pub rewritten_ids: u64,
    pub unknown_ids: u64,
    pub base_offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts delivery failures; the first one is kept for the message.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = r {
            use rdkafka::Message;
            self.failed.fetch_add(1, Ordering::SeqCst);
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(format!("{}/{}: {e}", m.topic(), m.partition()));
            }
        }
    }
}

pub fn producer(conn: &KafkaConnection) -> Result<BaseProducer<Deliveries>, KafkaError> {
    conn.client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "10")
        .set("batch.size", "1000000")
        .set("message.max.bytes", "16777216")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "300000")
        .create_with_context(Deliveries::default())
}

/// How many records the restore puts in the partition: all, or with `--until`, the prefix that
/// ends before the first record whose timestamp is after `until`.
pub fn planned_records(
    a: &Archive,
    topic: &str,
    partition: i32,
    until: Option<i64>,
) -> Result<u64, crate::archive::ArchiveError> {
    let chunks = a.chunks_of(topic, partition)?;
    let Some(until) = until else {
        return Ok(chunks.iter().map(|c| u64::from(c.record_count)).sum());
    };
    let mut n = 0;
    let mut dec = ContentDecoder::new().map_err(crate::archive::ArchiveError::io(
        "initialise zstd for",
        a.path(),
    ))?;
    let mut buf = Vec::new();
    for c in &chunks {
        if c.max_timestamp <= until {
            n += u64::from(c.record_count);
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

/// Waits until the target partition's end offset stops moving (requests of a killed earlier
/// run may still be landing) and returns it.
fn settled_end(target: &Target, topic: &str, partition: i32) -> Result<i64, String> {
    let mut last = target
        .watermarks(topic, partition)
        .map_err(|e| e.to_string())?
        .1;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = target
            .watermarks(topic, partition)
            .map_err(|e| e.to_string())?
            .1;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

#[allow(clippy::too_many_arguments)]
pub fn restore_partition(
    a: &Archive,
    job: &PartitionJob,
    ids: &IdMap,
    rewrite: bool,
    target: &Target,
    producer: &BaseProducer<Deliveries>,
    state: &State,
    cancel: &AtomicBool,
    progress: &dyn Fn(u64),
) -> PartitionOutcome {
    let mut out = PartitionOutcome {
        source_topic: job.source_topic.clone(),
        target_topic: job.target_topic.clone(),
        partition: job.partition,
        ..Default::default()
    };
    if let Err(e) = restore_inner(
        a, job, ids, rewrite, target, producer, state, cancel, progress, &mut out,
    ) {
        out.error = Some(e);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn restore_inner(
    a: &Archive,
    job: &PartitionJob,
    ids: &IdMap,
    rewrite: bool,
    target: &Target,
    producer: &BaseProducer<Deliveries>,
    state: &State,
    cancel: &AtomicBool,
    progress: &dyn Fn(u64),
    out: &mut PartitionOutcome,
) -> Result<(), String> {
    let total = job.records;
    out.records = total;
    let (t, p) = (job.target_topic.as_str(), job.partition);
    let (base, already) = match state.base(t, p).map_err(|e| e.to_string())? {
        // An earlier run began this partition: what it got in is a prefix; count it.
        Some(b) => (b, (settled_end(target, t, p)? - b).max(0) as u64),
        None => {
            let b = target.watermarks(t, p).map_err(|e| e.to_string())?.1;
            state.set_base(t, p, b).map_err(|e| e.to_string())?;
            (b, 0)
        }
    };
    out.base_offset = base;
    if already > total {
        return Err(format!(
            "{t}/{p} holds {already} records since the restore began at offset {base}, more than the {total} it restores: something else writes to it"
        ));
    }
    if already == total {
        return Ok(());
    }
    let mut dec = ContentDecoder::new().map_err(|e| format!("zstd: {e}"))?;
    let mut buf = Vec::new();
    let mut index = 0u64;
    'chunks: for c in a
        .chunks_of(&job.source_topic, p)
        .map_err(|e| e.to_string())?
    {
        if index + u64::from(c.record_count) <= already {
            index += u64::from(c.record_count);
            continue;
        }
        // The whole chunk is verified (content ID) before any of its records is produced.
        if let Err(e) = a.read_chunk(&c, &mut dec, &mut buf) {
            // What came before the damaged chunk is delivered; nothing of the chunk is produced.
            producer
                .flush(Duration::from_secs(300))
                .map_err(|e| format!("flushing to {t}/{p}: {e}"))?;
            return Err(format!("{e}; nothing from this chunk was produced"));
        }
        // One pass: locate each record, rewrite its schema IDs in place in the decompressed
        // chunk, then produce it from those same bytes.
        let mut positions = RecordPositions::new(&buf, 0).map_err(|e| e.to_string())?;
        let mut stats = RewriteStats::default();
        while let Some(at) = positions.next_in(&buf) {
            let at = at.map_err(|e| e.to_string())?;
            if index >= total {
                out.rewritten_ids += stats.rewritten;
                out.unknown_ids += stats.unknown_ids;
                break 'chunks;
            }
            if index < already {
                index += 1;
                continue;
            }
            if rewrite {
                rewrite_record(&mut buf, &at, ids, &mut stats);
            }
            let r = at.record(&buf);
            if cancel.load(Ordering::SeqCst) {
                let _ = producer.flush(Duration::from_secs(60));
                return Err(
                    "the restore was stopped; run the same command again to continue".into(),
                );
            }
            let mut rec: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(t).partition(p);
            // Kafka does not tell no headers from an empty list; sparing the allocation matters
            // on this path.
            if !r.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for (k, v) in r.headers.iter() {
                    headers = headers.insert(Header { key: k, value: v });
                }
                rec = rec.headers(headers);
            }
            if r.timestamp_type != TimestampType::NotAvailable {
                rec = rec.timestamp(r.timestamp);
            }
            if let Some(k) = r.key {
                rec = rec.key(k);
            }
            if let Some(v) = r.value {
                rec = rec.payload(v);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(5));
                        rec = back;
                    }
                    Err((e, _)) => {
                        return Err(format!("producing offset {} to {t}/{p}: {e}", r.offset));
                    }
                }
            }
            producer.poll(Duration::ZERO);
            index += 1;
            out.written += 1;
        }
        out.rewritten_ids += stats.rewritten;
        out.unknown_ids += stats.unknown_ids;
        progress(u64::from(c.record_count));
        if producer.context().failed.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .map_err(|e| format!("flushing to {t}/{p}: {e}"))?;
    if producer.context().failed.load(Ordering::SeqCst) > 0 {
        let first = producer
            .context()
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(format!(
            "delivery failed ({first}); run the same restore again to continue"
        ));
    }
    let now = target.watermarks(t, p).map_err(|e| e.to_string())?.1;
    if (now - base) as u64 != total {
        return Err(format!(
            "{t}/{p} ends at offset {now}: {} records since offset {base}, expected {total}",
            now - base
        ));
    }
    Ok(())
}
