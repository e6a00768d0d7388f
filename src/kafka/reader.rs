//! One partition of a topic read from its start to its end, committed records only, as a
//! consumer on the target reads it (`kar diff`, `kar drill`). Memory: librdkafka's fetch queue,
//! bounded here, and one record at a time.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Timestamp};
use rdkafka::types::RDKafkaErrorCode;

use super::connection::KafkaConnection;
use super::source::SourceError;
use crate::format::chunk::TimestampType;

/// A record read back, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl OwnedRecord {
    /// An archived record, owned.
    pub fn of(r: &crate::format::chunk::Record<'_>) -> Self {
        OwnedRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            timestamp_type: r.timestamp_type,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

/// Reads a partition from its first record to the end it has when the reader reaches it.
pub struct PartitionReader {
    consumer: BaseConsumer,
    bootstrap: String,
    topic: String,
    partition: i32,
    done: bool,
    /// Where the reading ends, fixed when the reader opened (the high watermark for [`open`],
    /// the last stable offset for [`open_at`]): records written after it are not this
    /// reading's, so a topic being written to does not keep it going.
    ///
    /// [`open`]: PartitionReader::open
    /// [`open_at`]: PartitionReader::open_at
    end: i64,
    /// How long a poll may go without a record or the partition's end before it is an error.
    idle: Duration,
}

impl Drop for PartitionReader {
    fn drop(&mut self) {
        super::close_consumer(&self.consumer);
    }
}

impl PartitionReader {
    /// A reader of the whole partition up to its high watermark now, as a consumer reading
    /// committed records sees it once the transactions now in it have ended. A transaction
    /// just committed may not be visible yet: its markers are written after the commit
    /// returns, and until then the last stable offset (where a read_committed consumer stops)
    /// lies before it. The reader waits up to `settle` for the last stable offset to reach the
    /// high watermark, and names the offsets still in a transaction when it does not.
    pub fn open(
        conn: &KafkaConnection,
        highs: &HighWatermarks,
        topic: &str,
        partition: i32,
        settle: Duration,
    ) -> Result<Self, SourceError> {
        let mut r = Self::unassigned(conn, topic, partition)?;
        let high = highs.of(topic, partition)?;
        let waited = Instant::now();
        // Assigned only once the transactions have ended: librdkafka signals a partition's end
        // once per offset, and one signalled at an earlier stable offset would end the reading.
        loop {
            let (low, stable) = r.stable_end()?;
            if stable >= high {
                (r.end, r.done) = (high, high <= low);
                r.assign(rdkafka::Offset::Beginning)?;
                return Ok(r);
            }
            if waited.elapsed() >= settle {
                return Err(SourceError::OpenTransaction {
                    bootstrap: conn.bootstrap.clone(),
                    topic: topic.to_string(),
                    partition,
                    stable,
                    high,
                    waited: settle,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A reader from `offset` on (the first record at or after it) to the partition's last
    /// stable offset now.
    pub fn open_at(
        conn: &KafkaConnection,
        topic: &str,
        partition: i32,
        offset: rdkafka::Offset,
    ) -> Result<Self, SourceError> {
        let mut r = Self::unassigned(conn, topic, partition)?;
        let (low, end) = r.stable_end()?;
        r.end = end;
        r.done = end <= low || matches!(offset, rdkafka::Offset::Offset(o) if o >= end);
        r.assign(offset)?;
        Ok(r)
    }

    fn unassigned(
        conn: &KafkaConnection,
        topic: &str,
        partition: i32,
    ) -> Result<Self, SourceError> {
        let consumer =
            Self::consumer(conn, "read_committed").map_err(|e| SourceError::Request {
                bootstrap: conn.bootstrap.clone(),
                what: format!("creating a consumer for {topic}/{partition}"),
                source: Box::new(e),
            })?;
        Ok(PartitionReader {
            consumer,
            bootstrap: conn.bootstrap.clone(),
            topic: topic.to_string(),
            partition,
            done: false,
            end: 0,
            idle: Duration::from_secs(60),
        })
    }

    fn assign(&self, offset: rdkafka::Offset) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, offset)
            .and_then(|()| self.consumer.assign(&tpl))
            .map_err(|e| self.error("assigning", e))
    }

    fn consumer(conn: &KafkaConnection, isolation: &str) -> Result<BaseConsumer, KafkaError> {
        conn.client_config()
            // No offset is committed: the group is only librdkafka's requirement.
            .set("group.id", "kar-read-back")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.wait.max.ms", "20")
            .create()
    }

    /// `(low, last stable offset)`: librdkafka lists offsets at the consumer's isolation level.
    fn stable_end(&self) -> Result<(i64, i64), SourceError> {
        self.consumer
            .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(30))
            .map_err(|e| self.error("reading the end of", e))
    }

    /// The next record, or `None` at the partition's end.
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>, SourceError> {
        let started = Instant::now();
        while !self.done {
            let Some(m) = self.consumer.poll(Duration::from_millis(100)) else {
                if started.elapsed() > self.idle {
                    return Err(self.error(
                        "reading",
                        KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
                    ));
                }
                continue;
            };
            match m {
                Ok(m) => {
                    // Past the last record it set out to read, the reading is done (the end may
                    // also be a transaction marker, after which the end of the partition says so;
                    // a record appended since the reader opened is not this reading's).
                    self.done = m.offset() >= self.end - 1;
                    if m.offset() >= self.end {
                        break;
                    }
                    return Ok(Some(owned(&m)));
                }
                Err(KafkaError::PartitionEOF(_)) => self.done = true,
                Err(e) => return Err(self.error("reading", e)),
            }
        }
        Ok(None)
    }

    fn error(&self, what: &str, e: KafkaError) -> SourceError {
        SourceError::Request {
            bootstrap: self.bootstrap.clone(),
            what: format!("{what} {}/{}", self.topic, self.partition),
            source: Box::new(e),
        }
    }
}

/// One client asking partitions' high watermarks (read_uncommitted: every record appended,
/// committed or not), for the readers of a whole diff: a client made and closed a partition
/// would cost a connection and its close each.
pub struct HighWatermarks {
    consumer: BaseConsumer,
    bootstrap: String,
}

impl Drop for HighWatermarks {
    fn drop(&mut self) {
        super::close_consumer(&self.consumer);
    }
}

impl HighWatermarks {
    pub fn new(conn: &KafkaConnection) -> Result<Self, SourceError> {
        let consumer = PartitionReader::consumer(conn, "read_uncommitted").map_err(|e| {
            SourceError::Request {
                bootstrap: conn.bootstrap.clone(),
                what: "creating a read_uncommitted client".into(),
                source: Box::new(e),
            }
        })?;
        Ok(HighWatermarks {
            consumer,
            bootstrap: conn.bootstrap.clone(),
        })
    }

    pub fn of(&self, topic: &str, partition: i32) -> Result<i64, SourceError> {
        self.consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .map(|(_, high)| high)
            .map_err(|e| SourceError::Request {
                bootstrap: self.bootstrap.clone(),
                what: format!("reading the high watermark of {topic}/{partition}"),
                source: Box::new(e),
            })
    }
}

fn owned(m: &rdkafka::message::BorrowedMessage<'_>) -> OwnedRecord {
    let (timestamp, timestamp_type) = match m.timestamp() {
        Timestamp::NotAvailable => (-1, TimestampType::NotAvailable),
        Timestamp::CreateTime(t) => (t, TimestampType::CreateTime),
        Timestamp::LogAppendTime(t) => (t, TimestampType::LogAppendTime),
    };
    OwnedRecord {
        offset: m.offset(),
        timestamp,
        timestamp_type,
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
