//! The read side of a cluster: which topics and partitions exist, the offset range a snapshot
//! covers, topic configs that differ from the broker defaults, and consumer-group offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use thiserror::Error;

use super::KafkaConnection;
use crate::runtime::Context;

pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(
        "cannot reach Kafka at {bootstrap}: {source}; check the address, that the brokers run, and the security settings"
    )]
    Unreachable {
        bootstrap: String,
        source: Box<KafkaError>,
    },
    #[error("Kafka at {bootstrap}: {what}: {source}")]
    Request {
        bootstrap: String,
        what: String,
        source: Box<KafkaError>,
    },
    #[error(
        "Kafka at {bootstrap}: {topic}/{partition}: offsets {stable}..{high} are in a transaction still open after {waited:?}; a consumer reading committed records stops at offset {stable} until it ends"
    )]
    OpenTransaction {
        bootstrap: String,
        topic: String,
        partition: i32,
        stable: i64,
        high: i64,
        waited: std::time::Duration,
    },
    #[error("Kafka at {bootstrap}: describing configs of topic {topic}: {message}")]
    Configs {
        bootstrap: String,
        topic: String,
        message: String,
    },
}

pub use crate::format::consumer_groups::{CommittedOffset, GroupOffsets};
pub use crate::format::kafka_topics::TopicInfo;

/// Internal topics are left out of a backup unless named exactly.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("__") || topic == "_schemas" || topic.starts_with("_confluent")
}

pub struct Source {
    conn: KafkaConnection,
    consumer: BaseConsumer,
    /// Made with the consumer, so that it connects while the consumer fetches metadata.
    admin: AdminClient<DefaultClientContext>,
    /// Broker IDs and addresses, from the metadata fetched when connecting.
    brokers: Vec<(i32, String)>,
    /// Every topic, from the same metadata.
    topics: Vec<TopicInfo>,
    rt: Context,
}

impl Source {
    /// Connects and checks that the cluster answers a metadata request.
    pub fn connect(conn: &KafkaConnection, rt: &Context) -> Result<Source, SourceError> {
        let admin: AdminClient<DefaultClientContext> =
            conn.client_config()
                .create()
                .map_err(|source| SourceError::Unreachable {
                    bootstrap: conn.bootstrap.clone(),
                    source: Box::new(source),
                })?;
        let consumer: BaseConsumer = conn
            .client_config()
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|source| SourceError::Unreachable {
                bootstrap: conn.bootstrap.clone(),
                source: Box::new(source),
            })?;
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(|source| SourceError::Unreachable {
                bootstrap: conn.bootstrap.clone(),
                source: Box::new(source),
            })?;
        let brokers = md
            .brokers()
            .iter()
            .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
            .collect();
        let mut topics: Vec<TopicInfo> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| TopicInfo {
                name: t.name().to_string(),
                partitions: t.partitions().len() as i32,
                replication_factor: t
                    .partitions()
                    .first()
                    .map_or(0, |p| p.replicas().len() as i32),
                configs: BTreeMap::new(),
                sensitive_configs: Vec::new(),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Source {
            conn: conn.clone(),
            consumer,
            admin,
            brokers,
            topics,
            rt: rt.clone(),
        })
    }

    fn req(&self, what: impl Into<String>) -> impl FnOnce(KafkaError) -> SourceError {
        let (bootstrap, what) = (self.conn.bootstrap.clone(), what.into());
        move |source| SourceError::Request {
            bootstrap,
            what,
            source: Box::new(source),
        }
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.consumer.client().fetch_cluster_id(TIMEOUT)
    }

    /// Broker IDs and addresses, as the cluster described itself when we connected.
    pub fn brokers(&self) -> Vec<(i32, String)> {
        self.brokers.clone()
    }

    /// Every topic as the cluster described it when we connected: name, partition count,
    /// replication factor (configs not yet filled in).
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.topics.clone()
    }

    /// The offsets `low..high` a snapshot of the partition covers now. With read_committed,
    /// librdkafka asks for the last stable offset, so an open transaction's records are not in it.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), SourceError> {
        self.consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(self.req(format!("reading the offsets of {topic}/{partition}")))
    }

    /// The high watermark (the end of every record appended, committed or not) of each
    /// partition `wanted`, `None` for the others.
    pub fn high_watermarks(
        &self,
        parts: &[(String, i32)],
        wanted: &dyn Fn(&(String, i32)) -> bool,
    ) -> Result<Vec<Option<i64>>, SourceError> {
        if !parts.iter().any(wanted) {
            return Ok(vec![None; parts.len()]);
        }
        let highs = super::reader::HighWatermarks::new(&self.conn)?;
        let got = parts
            .iter()
            .map(|p| wanted(p).then(|| highs.of(&p.0, p.1)).transpose())
            .collect();
        self.rt.close_in_background(highs);
        got
    }

    /// For each partition, the first offset whose timestamp is at or after `ts` (Kafka's
    /// offsets-for-times), or `None` when there is none.
    pub fn offsets_for_time(
        &self,
        topic: &str,
        partitions: i32,
        ts: i64,
    ) -> Result<Vec<Option<i64>>, SourceError> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(ts))
                .map_err(self.req("building an offsets-for-times request"))?;
        }
        let res = self
            .consumer
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(self.req(format!("offsets for time {ts} in {topic}")))?;
        let mut out = vec![None; partitions as usize];
        for e in res.elements() {
            if let Offset::Offset(o) = e.offset() {
                out[e.partition() as usize] = Some(o);
            }
        }
        Ok(out)
    }

    /// Fills in the configs set on each topic (DescribeConfigs; only dynamic topic configs).
    pub fn describe_configs(&self, topics: &mut [TopicInfo]) -> Result<(), SourceError> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin = &self.admin;
        let specs: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .map(|t| ResourceSpecifier::Topic(&t.name))
            .collect();
        let results = self
            .rt
            .block_on(
                admin.describe_configs(&specs, &AdminOptions::new().request_timeout(Some(TIMEOUT))),
            )
            .map_err(self.req("describing topic configs"))?;
        for (t, r) in topics.iter_mut().zip(results) {
            let r = r.map_err(|e| SourceError::Configs {
                bootstrap: self.conn.bootstrap.clone(),
                topic: t.name.clone(),
                message: e.to_string(),
            })?;
            for e in r.entries {
                if e.source != ConfigSource::DynamicTopic {
                    continue;
                }
                if e.is_sensitive {
                    t.sensitive_configs.push(e.name);
                } else if let Some(v) = e.value {
                    t.configs.insert(e.name, v);
                }
            }
        }
        Ok(())
    }

    /// Every consumer group's name.
    pub fn groups(&self) -> Result<Vec<String>, SourceError> {
        let list = self
            .consumer
            .fetch_group_list(None, TIMEOUT)
            .map_err(self.req("listing consumer groups"))?;
        let mut names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
        names.sort();
        Ok(names)
    }

    /// The committed offsets of `group` for the given partitions (only those with a commit).
    pub fn committed(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<GroupOffsets, SourceError> {
        // A consumer that carries the group's ID but never joins: OffsetFetch goes to the group's
        // coordinator, found by librdkafka.
        let c: BaseConsumer = self
            .conn
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|source| SourceError::Unreachable {
                bootstrap: self.conn.bootstrap.clone(),
                source: Box::new(source),
            })?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let res = super::committed::committed_offsets(&c, &tpl, TIMEOUT);
        self.rt.close_in_background(super::Closing(c));
        let res = res.map_err(self.req(format!("reading committed offsets of group {group}")))?;
        let mut offsets = Vec::new();
        for e in res.elements() {
            if let Offset::Offset(o) = e.offset() {
                offsets.push(CommittedOffset {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    offset: o,
                    metadata: e.metadata().to_string(),
                });
            }
        }
        Ok(GroupOffsets {
            group: group.to_string(),
            offsets,
        })
    }
}
