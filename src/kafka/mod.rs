//! Kafka, through librdkafka: connection settings (PLAINTEXT, SSL with mTLS, SASL PLAIN and SCRAM),
//! and the source side of a backup (cluster metadata, snapshot ranges, topic configs, consumer
//! group offsets, and partition consumers), and the target side of a restore (topics, transactional
//! partition writers, committed progress).

pub mod committed;
pub mod connection;
pub mod reader;
pub mod sink;
pub mod source;
pub mod txn;

pub use connection::{KafkaConnection, SaslMechanism, SecurityProtocol};
