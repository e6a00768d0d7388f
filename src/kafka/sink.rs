//! The write side of a restore: topics on the target (what exists, how full it is, creating what
//! is missing), and committing consumer-group offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaConnection;
use super::source::{SourceError, TIMEOUT};
use crate::runtime::Context;

pub struct Target {
    conn: KafkaConnection,
    consumer: BaseConsumer,
    admin: AdminClient<DefaultClientContext>,
    rt: Context,
}

/// A topic as it is on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTopic {
    pub partitions: i32,
}

impl Target {
    pub fn connect(conn: &KafkaConnection, rt: &Context) -> Result<Target, SourceError> {
        let unreachable = |source| SourceError::Unreachable {
            bootstrap: conn.bootstrap.clone(),
            source: Box::new(source),
        };
        let consumer: BaseConsumer = conn
            .client_config()
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(unreachable)?;
        consumer
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(unreachable)?;
        let admin = conn.client_config().create().map_err(unreachable)?;
        Ok(Target {
            conn: conn.clone(),
            consumer,
            admin,
            rt: rt.clone(),
        })
    }

    fn req(
        &self,
        what: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> SourceError {
        let (bootstrap, what) = (self.conn.bootstrap.clone(), what.into());
        move |source| SourceError::Request {
            bootstrap,
            what,
            source: Box::new(source),
        }
    }

    /// The runtime this target's requests run on.
    pub fn context(&self) -> &Context {
        &self.rt
    }

    pub fn broker_count(&self) -> Result<usize, SourceError> {
        let md = self
            .consumer
            .fetch_metadata(None, TIMEOUT)
            .map_err(self.req("fetching metadata"))?;
        Ok(md.brokers().len())
    }

    pub fn topics(&self) -> Result<BTreeMap<String, TargetTopic>, SourceError> {
        let md = self
            .consumer
            .fetch_metadata(None, TIMEOUT)
            .map_err(self.req("fetching metadata"))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                (
                    t.name().to_string(),
                    TargetTopic {
                        partitions: t.partitions().len() as i32,
                    },
                )
            })
            .collect())
    }

    /// `(low, high)` offsets of a target partition (read_uncommitted: every record appended).
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), SourceError> {
        use backon::{BlockingRetryable, ConstantBuilder};
        // A new topic's partitions have no leader for a moment: retry those answers for ~10 s.
        let leader_moves = ConstantBuilder::default()
            .with_delay(Duration::from_millis(200))
            .with_max_times(50);
        (|| self.consumer.fetch_watermarks(topic, partition, TIMEOUT))
            .retry(leader_moves)
            .when(transient)
            .call()
            .map_err(self.req(format!("reading the offsets of {topic}/{partition}")))
    }

    /// Every config of each topic with the value in force (topic, broker or default), by name.
    pub fn topic_configs(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, SourceError> {
        let specs: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        self.describe(&specs, topics)
    }

    /// The configs of the first broker the metadata names, with the values in force: where a
    /// topic created without a config takes it from (`log.retention.ms` for `retention.ms`...).
    pub fn broker_configs(&self) -> Result<BTreeMap<String, String>, SourceError> {
        let md = self
            .consumer
            .fetch_metadata(None, TIMEOUT)
            .map_err(self.req("fetching metadata"))?;
        let Some(b) = md.brokers().first() else {
            return Ok(BTreeMap::new());
        };
        let name = format!("broker {}", b.id());
        Ok(self
            .describe(&[ResourceSpecifier::Broker(b.id())], &[name])?
            .into_values()
            .next()
            .unwrap_or_default())
    }

    fn describe(
        &self,
        specs: &[ResourceSpecifier<'_>],
        names: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, SourceError> {
        if specs.is_empty() {
            return Ok(BTreeMap::new());
        }
        let results = self
            .rt
            .block_on(
                self.admin
                    .describe_configs(specs, &AdminOptions::new().request_timeout(Some(TIMEOUT))),
            )
            .map_err(self.req("describing configs"))?;
        let mut out = BTreeMap::new();
        for (name, r) in names.iter().zip(results) {
            let r = r.map_err(|e| SourceError::Configs {
                bootstrap: self.conn.bootstrap.clone(),
                topic: name.clone(),
                message: e.to_string(),
            })?;
            let values = r
                .entries
                .into_iter()
                .filter(|e| !e.is_sensitive)
                .filter_map(|e| Some((e.name, e.value?)))
                .collect();
            out.insert(name.clone(), values);
        }
        Ok(out)
    }

    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), SourceError> {
        let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (k, v) in configs {
            t = t.set(k, v);
        }
        let res = self
            .rt
            .block_on(
                self.admin
                    .create_topics([&t], &AdminOptions::new().operation_timeout(Some(TIMEOUT))),
            )
            .map_err(self.req(format!("creating topic {name}")))?;
        for r in res {
            if let Err((_, code)) = r
                && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
            {
                return Err(SourceError::Request {
                    bootstrap: self.conn.bootstrap.clone(),
                    what: format!("creating topic {name}"),
                    source: Box::new(rdkafka::error::KafkaError::AdminOp(code)),
                });
            }
        }
        // Metadata is eventually consistent: wait until the topic is visible with its partitions.
        // One that shows another partition count (made meanwhile by someone else) or never shows
        // is an error: records would go to partitions that do not exist.
        use backon::{BlockingRetryable, ConstantBuilder};
        enum Seen {
            Failed(SourceError),
            Partitions(Option<i32>),
        }
        let visible = || match self.topics().map(|t| t.get(name).map(|t| t.partitions)) {
            Ok(Some(p)) if p == partitions => Ok(()),
            Ok(seen) => Err(Seen::Partitions(seen)),
            Err(e) => Err(Seen::Failed(e)),
        };
        let not_yet = |s: &Seen| matches!(s, Seen::Partitions(None | Some(0)));
        let up_to_10s = ConstantBuilder::default()
            .with_delay(Duration::from_millis(100))
            .with_max_times(100);
        let seen = match visible.retry(up_to_10s).when(not_yet).call() {
            Ok(()) => return Ok(()),
            Err(Seen::Failed(e)) => return Err(e),
            Err(Seen::Partitions(seen)) => seen,
        };
        Err(SourceError::Request {
            bootstrap: self.conn.bootstrap.clone(),
            what: format!(
                "creating topic {name} with {partitions} partitions: {}",
                match seen {
                    Some(p) => format!("the topic exists with {p}"),
                    None => "it does not appear in the cluster's metadata after 10 s".into(),
                }
            ),
            source: Box::new(rdkafka::error::KafkaError::AdminOp(
                rdkafka::types::RDKafkaErrorCode::InvalidPartitions,
            )),
        })
    }

    /// Deletes topics (a drill's scratch topics); one already gone is not an error.
    pub fn delete_topics(&self, names: &[&str]) -> Result<(), SourceError> {
        if names.is_empty() {
            return Ok(());
        }
        let res = self
            .rt
            .block_on(
                self.admin
                    .delete_topics(names, &AdminOptions::new().operation_timeout(Some(TIMEOUT))),
            )
            .map_err(self.req(format!("deleting topics {names:?}")))?;
        for r in res {
            if let Err((name, code)) = r
                && code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
            {
                return Err(SourceError::Request {
                    bootstrap: self.conn.bootstrap.clone(),
                    what: format!("deleting topic {name}"),
                    source: Box::new(rdkafka::error::KafkaError::AdminOp(code)),
                });
            }
        }
        Ok(())
    }

    /// Whether a consumer group has members on the target.
    pub fn group_has_members(&self, group: &str) -> Result<bool, SourceError> {
        let list = self
            .consumer
            .fetch_group_list(Some(group), TIMEOUT)
            .map_err(self.req(format!("describing group {group}")))?;
        Ok(list
            .groups()
            .iter()
            .any(|g| g.name() == group && !g.members().is_empty()))
    }

    /// Commits offsets (with metadata) for a group.
    pub fn commit(&self, group: &str, offsets: &[CommitOffset]) -> Result<(), SourceError> {
        let c: BaseConsumer = self
            .conn
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(self.req(format!("creating a client for group {group}")))?;
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.offset))
                .map_err(self.req("building a commit"))?;
            if let Some(mut e) = tpl.find_partition(&o.topic, o.partition) {
                e.set_metadata(o.metadata.as_str());
            }
        }
        let committed = c
            .commit(&tpl, CommitMode::Sync)
            .map_err(self.req(format!("committing offsets for group {group}")));
        super::close_consumer(&c);
        committed
    }
}

/// One partition's offset to commit for a group, with its metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

fn transient(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::UnknownTopicOrPartition
                | C::OperationTimedOut
                | C::RequestTimedOut
        )
    )
}
