//! Writing one target partition in Kafka transactions, and the consumer group that holds a
//! restore's committed progress.
//!
//! A [`PartitionWriter`] owns its partition through a `transactional.id`: opening it fences any
//! older producer with the same ID (Kafka aborts that producer's open transaction and rejects its
//! late requests), so two writers never interleave records in a partition. Each transaction puts
//! records into the partition and commits an offset (with metadata) for the progress group
//! ([`ProgressGroup`]), atomically: readers with `isolation.level=read_committed` see the records
//! and the progress together or not at all.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use thiserror::Error;

use super::KafkaConnection;
use super::source::{SourceError, TIMEOUT};
use crate::format::chunk::{Record, TimestampType};

/// How the name of every restore's progress group begins. A backup leaves these groups out unless
/// `--groups` names them: restored on another cluster, they would tell a restore there that
/// records are in that are not.
pub const PROGRESS_GROUP_PREFIX: &str = "kar-restore.";

/// How long transaction calls (init, flush, commit, abort) may take before the restore gives up:
/// the transactions' own timeout.
pub const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a call to the transaction coordinator (taking the transactional ID, which waits for
/// an older producer's transaction to abort; adding the progress; committing) may take with a
/// stall timeout of `stall`: that, but at least 30 s, as a healthy coordinator under load may
/// take seconds, and a commit that times out may still complete (the next run reads it).
pub fn coordinator_timeout(stall: Duration) -> Duration {
    stall.max(Duration::from_secs(30)).min(TXN_CALL_TIMEOUT)
}

#[derive(Debug, Error)]
pub enum WriteError {
    #[error(
        "{topic}/{partition}: another restore took over this partition (Kafka fenced this run's producer, transactional ID {txn_id}; the other cause would be a transaction that outlived transaction.timeout.ms); what this run committed stays, and a newer run continues from it"
    )]
    Fenced {
        topic: String,
        partition: i32,
        txn_id: String,
    },
    #[error(
        "{topic}/{partition}: no record delivered for {waited:?} ({waiting} waiting, queued up to archived offset {offset}): the broker does not acknowledge them; what this run committed stays, and the next run continues from it"
    )]
    Stalled {
        topic: String,
        partition: i32,
        waited: Duration,
        waiting: i32,
        offset: i64,
    },
    /// Nothing delivered for the renewal time while the partition's leader answers a new
    /// connection: most likely this producer, not the broker, is stuck (see
    /// [`PartitionWriter::with_renewal`]). A broker that keeps refusing the records with a
    /// retriable error looks the same: librdkafka retries NOT_ENOUGH_REPLICAS (fewer in-sync
    /// replicas than `min.insync.replicas`) without a report until `message.timeout.ms`.
    #[error(
        "{topic}/{partition}: no record delivered for {waited:?} ({waiting} waiting, queued up to archived offset {offset}) although the partition's leader answers a new connection (a producer stuck, or a broker that keeps refusing its records: see the broker's log)"
    )]
    Unresponsive {
        topic: String,
        partition: i32,
        waited: Duration,
        waiting: i32,
        offset: i64,
    },
    /// A call to librdkafka outlived its own timeout: its requests to a group's coordinator are
    /// not timed (librdkafka issues 5456 and 5511), and after a broker fenced itself for a moment
    /// a progress commit has waited out the transaction's timeout (5 min). The caller replaces
    /// the producer; the new one aborts the transaction, and the call then returns on its own.
    #[error(
        "{topic}/{partition}: {what} did not return within {waited:?}, past its own timeout (librdkafka's requests to a group coordinator are not timed: librdkafka issues 5456 and 5511)"
    )]
    Hung {
        topic: String,
        partition: i32,
        what: String,
        waited: Duration,
    },
    #[error("{topic}/{partition}: {what}: {detail}")]
    Failed {
        topic: String,
        partition: i32,
        what: String,
        detail: String,
    },
}

/// Delivery reports of one partition's producer: failures (the first kept for the message), the
/// highest offset delivered (-1 before any), and the offsets of the records asked for.
pub struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<(Option<RDKafkaErrorCode>, String)>>,
    max_offset: AtomicI64,
    wanted: Mutex<Vec<(u64, i64)>>,
    /// Keys' and values' bytes of the records reported, delivered or not.
    reported_bytes: AtomicU64,
    /// Records reported, delivered or not.
    reports: AtomicU64,
}

impl Deliveries {
    fn new() -> Deliveries {
        Deliveries {
            failed: AtomicU64::new(0),
            first: Mutex::new(None),
            max_offset: AtomicI64::new(-1),
            wanted: Mutex::new(Vec::new()),
            reported_bytes: AtomicU64::new(0),
            reports: AtomicU64::new(0),
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// 0, or 1 + the index of a record whose offset is wanted.
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, wanted: usize) {
        let m = match r {
            Ok(m) | Err((_, m)) => m,
        };
        let bytes = m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
        self.reported_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.reports.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(m) => {
                self.max_offset.fetch_max(m.offset(), Ordering::SeqCst);
                if wanted > 0 {
                    self.wanted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((wanted as u64 - 1, m.offset()));
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some((e.rdkafka_error_code(), e.to_string()));
                }
            }
        }
    }
}

/// What a flushed transaction delivered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The offset after the highest record delivered (None: nothing delivered yet).
    pub end: Option<i64>,
    /// `(index, offset)` of the records sent with an index to report.
    pub wanted: Vec<(u64, i64)>,
}

/// A transactional producer that owns one target partition.
pub struct PartitionWriter {
    /// Shared with a call left running past its timeout (see [`WriteError::Hung`]).
    producer: Arc<BaseProducer<Deliveries>>,
    topic: String,
    partition: i32,
    txn_id: String,
    /// Records sent, for polling every `POLL_EVERY`.
    sent: AtomicU32,
    /// Keys' and values' bytes of the records sent.
    sent_bytes: AtomicU64,
    /// The archived offset of the last record sent.
    last_offset: AtomicI64,
    /// How long a wait for deliveries may go without one before it is an error.
    stall: Duration,
    /// How long a wait may go without a delivery before the leader is asked, over a connection
    /// of its own, whether it answers (None: never).
    renew: Option<Duration>,
    /// The connection's settings, for that question.
    probe: ClientConfig,
    /// The longest wait that a delivery ended, in ms: a link slow for its batches, not a stuck
    /// producer, makes long waits from the start.
    longest_wait: AtomicU64,
}

/// A wait for delivery reports: an error once none has come for the writer's stall timeout.
/// librdkafka retries an unreachable broker until `message.timeout.ms` (the transaction timeout,
/// 5 min), and a producer caught in a broker's restart has been seen holding its records for all
/// of that. Only reports count: librdkafka's queue length also counts its other events (each
/// failed reconnection is one), which come and go while nothing is delivered.
struct StallWatch {
    seen: u64,
    since: Instant,
    /// When the leader was last asked (or the wait began).
    asked: Instant,
}

impl StallWatch {
    fn new(w: &PartitionWriter) -> StallWatch {
        let now = Instant::now();
        StallWatch {
            seen: w.delivery_state(),
            since: now,
            asked: now,
        }
    }

    fn check(&mut self, w: &PartitionWriter) -> Result<(), WriteError> {
        let now = w.delivery_state();
        if now != self.seen {
            let waited = self.since.elapsed().as_millis() as u64;
            w.longest_wait.fetch_max(waited, Ordering::Relaxed);
            let at = Instant::now();
            (self.seen, self.since, self.asked) = (now, at, at);
            return Ok(());
        }
        let waited = self.since.elapsed();
        if waited >= w.stall {
            return Err(WriteError::Stalled {
                topic: w.topic.clone(),
                partition: w.partition,
                waited: w.stall,
                waiting: w.producer.in_flight_count(),
                offset: w.last_offset.load(Ordering::Relaxed),
            });
        }
        match w.renew_after() {
            Some(renew) if self.asked.elapsed() >= renew => {
                self.asked = Instant::now();
                let left = w.stall.saturating_sub(waited);
                if w.leader_answers(left.min(PROBE_TIMEOUT)) {
                    return Err(WriteError::Unresponsive {
                        topic: w.topic.clone(),
                        partition: w.partition,
                        waited,
                        waiting: w.producer.in_flight_count(),
                        offset: w.last_offset.load(Ordering::Relaxed),
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// How long a call to librdkafka is waited for past its own timeout before it counts as hung.
const HUNG_AFTER: Duration = Duration::from_secs(5);

/// How long the question to a partition's leader (see [`PartitionWriter::with_renewal`]) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Records sent between two polls of the producer for delivery reports. A poll per record (a
/// clock read for its deadline, the queue's lock) was ~10% of a restore's CPU; librdkafka keeps
/// the reports until polled, and a failed delivery shows ~this many records later, in the same
/// transaction, which is then aborted.
const POLL_EVERY: u32 = 64;

/// The codec a restore producer compresses its batches with. The broker keeps a producer's
/// batches as they come when the topic's `compression.type` is `producer` (the default), so
/// uncompressed batches take several times the disk and network of the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// A codec by its name (librdkafka's and the topic config's); `uncompressed` and `producer`
    /// (topic configs that name no codec) are not codecs.
    pub fn parse(name: &str) -> Option<Compression> {
        Some(match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// How a restore's producer batches: its codec and how long a batch may wait to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub compression: Compression,
    /// librdkafka's `linger.ms`: see [`linger_for`].
    pub linger: Duration,
}

/// The `linger.ms` of a restore whose transactions hold `transaction_bytes`: 1.5 ms a MiB, from
/// 10 to 100 ms (96 ms at the default 64 MiB).
///
/// An idempotent librdkafka producer (2.12) sends one ProduceRequest a partition at a time: it
/// caps a partition's requests in flight at 5 minus its *messages* in flight (librdkafka PR #4989,
/// open, would change that). While one is in flight and the first message queued behind it is
/// older than `linger.ms`, the broker thread's next wake-up is "now": it polls its sockets without
/// waiting until the response comes, a busy loop. With a producer a partition, each on a thread of
/// its own, the first restores after the broker started took 16-17 s and 24-30 CPU-seconds for
/// 1 GB instead of ~4.5 s and ~5, the spinning threads taking the cores from the broker. What
/// waits behind a request is kept to one batch ([`PACE_BYTES`]), so it is younger than a round
/// trip, and the linger is longer than one. What a longer linger costs is the last batch of each
/// transaction, not full, waiting up to `linger.ms` before it is sent (librdkafka sends at once
/// only inside its own flush, which cannot wait with the event API rust-rdkafka uses): a few
/// percent of a 64 MiB transaction (~1.6 s a partition here), but with 1 MiB transactions 100 ms
/// would have made the restore 2.6 times longer, hence the scale.
pub fn linger_for(transaction_bytes: usize) -> Duration {
    let ms = (transaction_bytes >> 20) as u64 * 3 / 2;
    Duration::from_millis(ms.clamp(10, 100))
}

/// Keys' and values' bytes a partition's producer may hold undelivered before more are queued:
/// the batch in flight and one behind it (two `batch.size`), so that a full batch is ready when
/// the response comes and what waits is younger than a round trip (see [`linger_for`]). librdkafka's
/// own bound, `queue.buffering.max.kbytes`, cannot be this small: a record larger than it is
/// refused for ever (QUEUE_FULL even when nothing else is queued). 1 GB, 4 rounds each, against
/// the 16 MiB queue alone with a linger of 10 ms: median 4.31 s against 4.75, 4.73 CPU-seconds
/// against 6.17, peak RSS 64 MB against 149; against 1.5 and 3 MB: 4.79 and 4.34 s.
pub const PACE_BYTES: u64 = 2_000_000;

/// A restore's producer settings but the transactions (which [`PartitionWriter`] adds): also
/// bench_tool's, so that it produces as a restore does.
pub fn producer_config(conn: &KafkaConnection, batching: Batching) -> ClientConfig {
    let mut c = conn.client_config();
    c.set("compression.type", batching.compression.name());
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", batching.linger.as_millis().to_string())
        .set("batch.size", "1000000")
        .set("message.max.bytes", "16777216")
        // At least the largest record (`message.max.bytes`): see `PACE_BYTES`, which keeps
        // what is queued far smaller, and close to what is delivered (a transaction's age is
        // checked as chunks are queued).
        .set("queue.buffering.max.kbytes", "16384")
        // At most the transaction timeout.
        .set("message.timeout.ms", "300000");
    c
}

fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::TransactionCoordinatorFenced
    )
}

impl PartitionWriter {
    /// The partition this writer owns.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Makes the producer and takes ownership of the partition: any older producer with the same
    /// transactional ID is fenced and its open transaction aborted before this returns.
    pub fn open(
        conn: &KafkaConnection,
        txn_id: &str,
        topic: &str,
        partition: i32,
        batching: Batching,
        timeout: Duration,
    ) -> Result<PartitionWriter, WriteError> {
        let failed = |what: &str, detail: String| WriteError::Failed {
            topic: topic.to_string(),
            partition,
            what: what.to_string(),
            detail,
        };
        let producer: BaseProducer<Deliveries> = producer_config(conn, batching)
            .set("transactional.id", txn_id)
            .set("transaction.timeout.ms", "300000")
            .create_with_context(Deliveries::new())
            .map_err(|e| failed("creating a transactional producer", e.to_string()))?;
        let w = PartitionWriter {
            producer: Arc::new(producer),
            topic: topic.to_string(),
            partition,
            txn_id: txn_id.to_string(),
            sent: AtomicU32::new(0),
            sent_bytes: AtomicU64::new(0),
            last_offset: AtomicI64::new(-1),
            stall: TXN_CALL_TIMEOUT,
            renew: None,
            probe: conn.client_config(),
            longest_wait: AtomicU64::new(0),
        };
        // librdkafka asks for the transaction coordinator through a connected broker and, when
        // none is up, asks again 500 ms later: init_transactions took ~510 ms for two to four of
        // a restore's six partitions. A first metadata request goes through the bootstrap
        // connection and names the brokers, and librdkafka then retires that connection; a
        // second waits for a connection to a broker it named, which the query can use.
        for _ in 0..2 {
            w.producer
                .client()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| w.error("connecting to the cluster (metadata)", e))?;
        }
        w.producer.init_transactions(timeout).map_err(|e| {
            w.error(
                &format!("taking the partition (init_transactions for transactional ID {txn_id}; the principal needs WRITE and DESCRIBE on it)"),
                e,
            )
        })?;
        Ok(w)
    }

    fn error(&self, what: &str, e: KafkaError) -> WriteError {
        let fatal = self.producer.client().fatal_error();
        let code = fatal
            .as_ref()
            .map(|(c, _)| *c)
            .or_else(|| e.rdkafka_error_code());
        if code.is_some_and(is_fencing) {
            return WriteError::Fenced {
                topic: self.topic.clone(),
                partition: self.partition,
                txn_id: self.txn_id.clone(),
            };
        }
        WriteError::Failed {
            topic: self.topic.clone(),
            partition: self.partition,
            what: what.to_string(),
            detail: match fatal {
                Some((_, m)) => format!("{e} ({m})"),
                None => e.to_string(),
            },
        }
    }

    /// How long a wait for deliveries may go without one before it is an error
    /// ([`WriteError::Stalled`]), and an abort may take; at most, and by default,
    /// [`TXN_CALL_TIMEOUT`]. Calls to the coordinator take [`coordinator_timeout`].
    pub fn with_stall_timeout(mut self, stall: Duration) -> Self {
        self.stall = stall.min(TXN_CALL_TIMEOUT);
        self
    }

    /// Makes a wait for deliveries that goes `after` without one ask the partition's leader, on
    /// a connection of its own, for the partition's end offset (every `after`): when it answers,
    /// the wait ends with [`WriteError::Unresponsive`], and the caller replaces this producer.
    /// `after` grows to 3 times the longest wait a delivery ended, so that a slow link is not
    /// taken for a stuck producer.
    ///
    /// A broker that left the cluster's metadata for a moment (fenced by its controller after a
    /// pause longer than its session timeout) has left librdkafka 2.12 producers with their
    /// records in flight stuck: the partition kept on librdkafka's internal broker, its leader
    /// asked again every second and never taken from the answers, nothing delivered until
    /// `message.timeout.ms`, while a new client wrote to the same partition at once. A connection
    /// that silently stops carrying data leaves a producer waiting out its request timeout
    /// (`socket.timeout.ms`, 60 s by librdkafka's documentation).
    pub fn with_renewal(mut self, after: Duration) -> Self {
        self.renew = Some(after);
        self
    }

    /// The renewal time, but at least 3 times the longest wait a delivery ended.
    fn renew_after(&self) -> Option<Duration> {
        let longest = Duration::from_millis(self.longest_wait.load(Ordering::Relaxed));
        self.renew.map(|r| r.max(longest * 3))
    }

    /// Whether the partition's leader answers a new client within `timeout`.
    fn leader_answers(&self, timeout: Duration) -> bool {
        let Ok(c) = self.probe.create::<BaseConsumer>() else {
            return false;
        };
        let answered = c
            .fetch_watermarks(&self.topic, self.partition, timeout)
            .is_ok();
        tracing::debug!(
            topic = self.topic,
            partition = self.partition,
            answered,
            "leader asked"
        );
        answered
    }

    fn delivery_state(&self) -> u64 {
        self.producer.context().reports.load(Ordering::Relaxed)
    }

    pub fn begin(&self) -> Result<(), WriteError> {
        self.producer
            .begin_transaction()
            .map_err(|e| self.error("beginning a transaction", e))
    }

    /// Queues one record (waiting while the queue is full); with `report`, its offset is kept
    /// for [`PartitionWriter::flush`] under that index.
    pub fn send(&self, r: &Record<'_>, report: Option<u64>) -> Result<(), WriteError> {
        let opaque = report.map_or(0, |k| k as usize + 1);
        let mut rec: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&self.topic, opaque).partition(self.partition);
        // Kafka does not tell no headers from an empty list; sparing the allocation matters on
        // this path.
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
        // A record goes at once when nothing is undelivered, whatever its size. The watch (a
        // clock read) starts only when a wait does: this is the record path.
        let mut watch: Option<StallWatch> = None;
        while self.undelivered_bytes() >= PACE_BYTES && self.producer.in_flight_count() > 0 {
            self.await_deliveries();
            watch
                .get_or_insert_with(|| StallWatch::new(self))
                .check(self)?;
        }
        self.last_offset.store(r.offset, Ordering::Relaxed);
        let bytes = r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
        loop {
            match self.producer.send(rec) {
                Ok(()) => {
                    self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                    break;
                }
                // With nothing queued, the record can never fit (librdkafka refuses a record
                // larger than its whole queue): an error, not a wait for ever.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if self.producer.in_flight_count() == 0 =>
                {
                    return Err(WriteError::Failed {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        what: format!("producing archived offset {}", r.offset),
                        detail: format!(
                            "a record of {bytes} bytes is larger than the producer's queue"
                        ),
                    });
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.await_deliveries();
                    watch
                        .get_or_insert_with(|| StallWatch::new(self))
                        .check(self)?;
                    rec = back;
                }
                Err((e, _)) => {
                    return Err(self.error(&format!("producing archived offset {}", r.offset), e));
                }
            }
        }
        if self
            .sent
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(POLL_EVERY)
        {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn undelivered_bytes(&self) -> u64 {
        let reported = self
            .producer
            .context()
            .reported_bytes
            .load(Ordering::Relaxed);
        self.sent_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(reported)
    }

    /// Whether a delivery has failed (the transaction can then only be aborted).
    pub fn failing(&self) -> bool {
        self.producer.context().failed.load(Ordering::SeqCst) > 0
    }

    /// Serves the delivery reports that came, or waits 1 ms when none had. rust-rdkafka's
    /// `BaseProducer::poll` (and its flush, which polls in slices of 100 ms) returns at its
    /// deadline, not at the first event, and spins through the deadline's last fraction of a
    /// millisecond (a wait of 0 ms): a flush took 100, 200 or 300 ms where the deliveries took
    /// less, its partition's producer idle the rest, and a wait for room in the queue spun. A
    /// non-blocking poll serves one event (a batch's reports).
    fn await_deliveries(&self) {
        let before = self.producer.in_flight_count();
        self.producer.poll(Duration::ZERO);
        if self.producer.in_flight_count() == before {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until every queued record is delivered, and says what was.
    pub fn flush(&self) -> Result<Delivered, WriteError> {
        let deadline = Instant::now() + TXN_CALL_TIMEOUT;
        let mut watch = StallWatch::new(self);
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            self.await_deliveries();
            watch.check(self)?;
        }
        // Finds nothing left by now, and returns at once.
        self.producer
            .flush(deadline.saturating_duration_since(Instant::now()))
            .map_err(|e| self.error("delivering records", e))?;
        let ctx = self.producer.context();
        if ctx.failed.load(Ordering::SeqCst) > 0 {
            let (code, msg) = ctx
                .first
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            if code.is_some_and(is_fencing) || self.producer.client().fatal_error().is_some() {
                return Err(self.error(
                    "delivering records",
                    KafkaError::MessageProduction(code.unwrap_or(RDKafkaErrorCode::Fatal)),
                ));
            }
            return Err(WriteError::Failed {
                topic: self.topic.clone(),
                partition: self.partition,
                what: "delivering records".into(),
                detail: msg,
            });
        }
        let max = ctx.max_offset.load(Ordering::SeqCst);
        let wanted = std::mem::take(&mut *ctx.wanted.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(Delivered {
            end: (max >= 0).then_some(max + 1),
            wanted,
        })
    }

    /// Commits the open transaction with the progress offset `end` and `metadata` for the
    /// progress group.
    pub fn commit(
        &self,
        progress: &ProgressGroup,
        end: i64,
        metadata: &str,
    ) -> Result<(), WriteError> {
        self.add_progress(progress, end, metadata)?;
        self.producer
            .commit_transaction(coordinator_timeout(self.stall))
            .map_err(|e| self.error("committing a transaction", e))
    }

    /// Adds a progress commit to the open transaction without committing it: what a restore
    /// tries before it writes anything (the transaction is then aborted).
    pub fn try_progress(&self, progress: &ProgressGroup, offset: i64) -> Result<(), WriteError> {
        self.add_progress(progress, offset, "")
    }

    fn add_progress(
        &self,
        progress: &ProgressGroup,
        offset: i64,
        metadata: &str,
    ) -> Result<(), WriteError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
            .map_err(|e| self.error("building the progress commit", e))?;
        if let Some(mut e) = tpl.find_partition(&self.topic, self.partition) {
            e.set_metadata(metadata);
        }
        let what = format!(
            "adding the progress of group {} to a transaction",
            progress.group
        );
        // On a thread of its own, as it may not return in time (see [`WriteError::Hung`]).
        let timeout = coordinator_timeout(self.stall);
        let (producer, cgm) = (self.producer.clone(), progress.cgm.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(producer.send_offsets_to_transaction(&tpl, &cgm, timeout));
        });
        match rx.recv_timeout(timeout + HUNG_AFTER) {
            Ok(r) => r.map_err(|e| self.error(&what, e)),
            Err(_) => Err(WriteError::Hung {
                topic: self.topic.clone(),
                partition: self.partition,
                what,
                waited: timeout + HUNG_AFTER,
            }),
        }
    }

    /// Aborts the open transaction (its records stay in the log, marked aborted), waiting at
    /// most the stall timeout: librdkafka's abort first waits for the records in flight.
    pub fn abort(&self) -> Result<(), WriteError> {
        self.abort_within(self.stall)
    }

    /// Like [`PartitionWriter::abort`], waiting at most `timeout`. A transaction left open is
    /// aborted by the coordinator when the next producer with this transactional ID starts (the
    /// next run of the restore), or after `transaction.timeout.ms`.
    pub fn abort_within(&self, timeout: Duration) -> Result<(), WriteError> {
        self.producer
            .abort_transaction(timeout)
            .map_err(|e| self.error("aborting a transaction", e))
    }
}

/// The consumer group holding a restore's progress, and the reads of it.
pub struct ProgressGroup {
    /// Reads waiting for stable offsets: a transactional commit still pending is waited for.
    stable: BaseConsumer,
    /// Reads of what is committed now, pending transactional commits left out.
    now: BaseConsumer,
    cgm: Arc<ConsumerGroupMetadata>,
    group: String,
    bootstrap: String,
}

impl Drop for ProgressGroup {
    fn drop(&mut self) {
        super::close_consumer(&self.stable);
        super::close_consumer(&self.now);
    }
}

/// Which committed progress a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Waits for transactional commits in flight: right once the partition's transactional ID is
    /// taken (its last transaction is then ended), and for partitions this restore wrote.
    Stable,
    /// What is committed now, without waiting: a run killed between adding its progress to a
    /// transaction and committing it leaves that commit pending until the transaction times out
    /// (minutes), and planning must not wait for it.
    Now,
}

impl ProgressGroup {
    pub fn new(conn: &KafkaConnection, group: &str) -> Result<ProgressGroup, SourceError> {
        let req = |source| SourceError::Request {
            bootstrap: conn.bootstrap.clone(),
            what: format!("making a client for group {group}"),
            source: Box::new(source),
        };
        // librdkafka asks the broker for stable offsets when the consumer reads committed.
        let consumer = |isolation: &str| -> Result<BaseConsumer, SourceError> {
            conn.client_config()
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("isolation.level", isolation)
                .create()
                .map_err(req)
        };
        let stable = consumer("read_committed")?;
        let now = consumer("read_uncommitted")?;
        let cgm = stable
            .group_metadata()
            .ok_or_else(|| req(KafkaError::MetadataFetch(RDKafkaErrorCode::InvalidGroupId)))?;
        Ok(ProgressGroup {
            stable,
            now,
            cgm: Arc::new(cgm),
            group: group.to_string(),
            bootstrap: conn.bootstrap.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.group
    }

    /// The committed offset and metadata of each partition, `None` where there is none.
    pub fn committed(
        &self,
        parts: &[(String, i32)],
        read: Read,
    ) -> Result<Vec<Option<Committed>>, SourceError> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            tpl.add_partition(t, *p);
        }
        let consumer = match read {
            Read::Stable => &self.stable,
            Read::Now => &self.now,
        };
        let got =
            super::committed::committed_offsets(consumer, &tpl, TIMEOUT).map_err(|source| {
                SourceError::Request {
                    bootstrap: self.bootstrap.clone(),
                    what: format!("reading the committed offsets of group {}", self.group),
                    source: Box::new(source),
                }
            })?;
        // A partition the broker could not answer for (an offset commit still pending, a
        // coordinator loading) is an error, never "no progress".
        parts
            .iter()
            .map(|(t, p)| match got.find_partition(t, *p) {
                None => Ok(None),
                Some(e) => {
                    e.error().map_err(|source| SourceError::Request {
                        bootstrap: self.bootstrap.clone(),
                        what: format!(
                            "reading the committed offset of group {} for {t}/{p}",
                            self.group
                        ),
                        source: Box::new(source),
                    })?;
                    Ok(match e.offset() {
                        Offset::Offset(offset) => Some(Committed {
                            offset,
                            metadata: e.metadata().to_string(),
                        }),
                        _ => None,
                    })
                }
            })
            .collect()
    }
}

/// What a group committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
}

/// The offset of the first record in `from..to` of a partition that a `read_committed` consumer
/// sees, if any: records of aborted transactions and transaction markers are not seen. The time
/// allowed grows with the offsets to read (a millisecond each on top of [`TIMEOUT`]), so that an
/// aborted transaction of many records is read through on a slow link.
pub fn first_committed(
    conn: &KafkaConnection,
    rt: &crate::runtime::Context,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Option<i64>, SourceError> {
    let req = |what: &str| {
        let what = format!("{what} {topic}/{partition} from offset {from}");
        move |source| SourceError::Request {
            bootstrap: conn.bootstrap.clone(),
            what,
            source: Box::new(source),
        }
    };
    // librdkafka wants a group even for assigned partitions; one under the progress groups'
    // prefix needs no ACL of its own. Nothing is ever committed for it.
    let consumer: BaseConsumer = conn
        .client_config()
        .set("group.id", format!("{PROGRESS_GROUP_PREFIX}check"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864")
        .create()
        .map_err(req("making a client to read"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(req("reading"))?;
    consumer.assign(&tpl).map_err(req("reading"))?;
    let allowed = TIMEOUT + Duration::from_millis((to - from).clamp(0, 3_600_000) as u64);
    let deadline = Instant::now() + allowed;
    let result = loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => break Ok((m.offset() < to).then_some(m.offset())),
            Some(Err(KafkaError::PartitionEOF(_))) => break Ok(None),
            Some(Err(e)) => break Err(req("reading")(e)),
            None => {}
        }
        if Instant::now() > deadline {
            break Err(req("reading")(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            )));
        }
    };
    rt.close_in_background(super::Closing(consumer));
    result
}
