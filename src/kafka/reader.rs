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
    /// The partition's end when the reader opened (high watermark): records written after it
    /// are not this reading's, so a topic being written to does not keep it going.
    end: i64,
    /// How long a poll may go without a record or the partition's end before it is an error.
    idle: Duration,
}

impl PartitionReader {
    pub fn open(conn: &KafkaConnection, topic: &str, partition: i32) -> Result<Self, SourceError> {
        Self::open_at(conn, topic, partition, rdkafka::Offset::Beginning)
    }

    /// A reader from `offset` on (the first record at or after it) to the partition's end.
    pub fn open_at(
        conn: &KafkaConnection,
        topic: &str,
        partition: i32,
        offset: rdkafka::Offset,
    ) -> Result<Self, SourceError> {
        let request = |what: &str| {
            let (bootstrap, what) = (conn.bootstrap.clone(), what.to_string());
            move |e: KafkaError| SourceError::Request {
                bootstrap,
                what,
                source: Box::new(e),
            }
        };
        let consumer: BaseConsumer = conn
            .client_config()
            // No offset is committed: the group is only librdkafka's requirement.
            .set("group.id", "kar-read-back")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.wait.max.ms", "20")
            .create()
            .map_err(request("creating a consumer"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, offset)
            .map_err(request("assigning"))?;
        consumer
            .assign(&tpl)
            .map_err(request(&format!("assigning {topic}/{partition}")))?;
        let (low, end) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .map_err(request(&format!("reading the end of {topic}/{partition}")))?;
        Ok(PartitionReader {
            consumer,
            bootstrap: conn.bootstrap.clone(),
            topic: topic.to_string(),
            partition,
            done: end <= low || matches!(offset, rdkafka::Offset::Offset(o) if o >= end),
            end,
            idle: Duration::from_secs(60),
        })
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
                    // also be a transaction marker, after which the end of the partition says so).
                    self.done = m.offset() >= self.end - 1;
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
