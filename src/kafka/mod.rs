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

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};

/// How long [`close_consumer`] polls for a close before leaving it to rust-rdkafka's drop.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Closes `c`, if it is a group's consumer, before it is dropped. rust-rdkafka's drop closes it
/// too, polling in slices of 100 ms, and its poll returns at its deadline: each close took 100 or
/// 200 ms, which a restore paid at its end (its progress group) and `kar diff` for every
/// partition. The drop then finds the consumer closed (and says so at the `rdkafka` log target,
/// which kar's default filter leaves out).
pub fn close_consumer<C: ConsumerContext>(c: &BaseConsumer<C>) {
    // Not a group's consumer (nothing to close), or closed already.
    if c.close_queue().is_err() {
        return;
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    while !c.closed() && Instant::now() < deadline {
        if c.poll(Duration::ZERO).is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A consumer closed with [`close_consumer`] when dropped.
pub struct Closing<C: ConsumerContext + 'static>(pub BaseConsumer<C>);

impl<C: ConsumerContext + 'static> Drop for Closing<C> {
    fn drop(&mut self) {
        close_consumer(&self.0);
    }
}
