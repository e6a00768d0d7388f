//! Reads of a group's committed offsets that wait for its coordinator.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;

/// How long a coordinator that cannot answer yet is waited for.
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(60);

/// Whether `code` says the group's coordinator cannot answer *yet*: it is loading the group's
/// partition of `__consumer_offsets` (a broker just started), is moving, or none is elected.
/// librdkafka sends an OffsetFetch once and hands these to the caller (its request has no
/// retries), so the first restore after a broker restart failed on "Not coordinator".
fn coordinator_not_ready(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
    )
}

/// `consumer`'s group's committed offsets of `tpl`, asked again (after 0.25, 0.5, 1, then every
/// 2 s) while the coordinator is not ready, for the whole answer or any partition of it, up to
/// [`COORDINATOR_PATIENCE`]; then its last answer, whatever it is.
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<TopicPartitionList> {
    let deadline = Instant::now() + COORDINATOR_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        let got = consumer.committed_offsets(tpl.clone(), timeout);
        let not_ready = match &got {
            Err(e) => e.rdkafka_error_code().is_some_and(coordinator_not_ready),
            Ok(list) => list.elements().iter().any(|e| {
                matches!(e.error(), Err(KafkaError::OffsetFetch(c)) if coordinator_not_ready(c))
            }),
        };
        if !not_ready || Instant::now() + pause > deadline {
            return got;
        }
        tracing::debug!("the group's coordinator is not ready; asking again in {pause:?}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
