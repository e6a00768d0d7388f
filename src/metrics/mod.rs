//! Prometheus metrics of one run of kar: what the workflows tell their
//! [`ProgressSink`](crate::progress::ProgressSink) counted into `prometheus-client` families,
//! rendered as OpenMetrics text (for a scrape of [`serve`]) or as Prometheus' text format 0.0.4
//! (for node_exporter's textfile collector, [`textfile`]), and the run's own outcome: running,
//! duration, exit code, last success and failure.
//!
//! Every metric carries the constant labels `command` and, with `--job NAME`, `kar_job`: not
//! `job`, which Prometheus sets itself on every scraped series (a `job` label from the target is
//! renamed `exported_job`, or overrides the scrape's with `honor_labels`).

pub mod serve;
pub mod textfile;

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::progress::{Event, ProgressSink};

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;
/// A family without labels of its own: its one series exists only once set (an exit code is not
/// 0 while the run goes on; a last success is absent until there was one).
type Later = Family<Vec<(String, String)>, FloatGauge>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    endpoint: String,
    /// The HTTP status, or "none" when no answer came (refused, reset, timed out).
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    /// "into" IMPORT, or "back" to the subject's mode before.
    change: String,
}

/// The metrics of one run, and the registry they are rendered from.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    started_unix: f64,
    records_read: Family<PartitionLabels, Counter>,
    records_written: Family<PartitionLabels, Counter>,
    read_bytes: Family<PartitionLabels, Counter>,
    written_bytes: Family<PartitionLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    partitions_planned: Gauge,
    partitions_done: Gauge,
    partitions_failed: Gauge,
    chunk_write: Histogram,
    fsync: Histogram,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histogram,
    retries: Counter,
    retry_wait: FloatCounter,
    throttled: Counter,
    rate_limit_wait: FloatCounter,
    subjects_backed_up: Counter,
    versions_backed_up: Counter,
    versions_registered: Counter,
    import_changes: Family<ChangeLabels, Counter>,
    ids_rewritten: Family<TopicLabels, Counter>,
    ids_unknown: Family<TopicLabels, Counter>,
    verify_frames: Counter,
    members_closed: Counter,
    last_member: Later,
    verify_problems: Counter,
    running: Gauge,
    start_time: FloatGauge,
    duration: FloatGauge,
    exit_code: Later,
    archive_size: Later,
    last_success: Later,
    last_success_duration: Later,
    last_failure: Later,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Latency buckets from 100 µs to ~6.5 s: a chunk written to the page cache takes well under a
/// millisecond, a sync to a USB stick seconds.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Metrics {
    /// The metrics of a run of `command`, labelled with `job` when given.
    pub fn new(command: &str, job: Option<&str>) -> Metrics {
        let mut labels: Vec<(Cow<'static, str>, Cow<'static, str>)> =
            vec![("command".into(), command.to_string().into())];
        if let Some(j) = job {
            labels.push(("kar_job".into(), j.to_string().into()));
        }
        let registry = Registry::with_prefix_and_labels("kar", labels.into_iter());
        let mut m = Metrics {
            registry,
            started: Instant::now(),
            started_unix: unix_now(),
            records_read: Family::default(),
            records_written: Family::default(),
            read_bytes: Family::default(),
            written_bytes: Family::default(),
            lag: Family::default(),
            partitions_planned: Gauge::default(),
            partitions_done: Gauge::default(),
            partitions_failed: Gauge::default(),
            chunk_write: latency_buckets(),
            fsync: latency_buckets(),
            requests: Family::default(),
            request_seconds: latency_buckets(),
            retries: Counter::default(),
            retry_wait: FloatCounter::default(),
            throttled: Counter::default(),
            rate_limit_wait: FloatCounter::default(),
            subjects_backed_up: Counter::default(),
            versions_backed_up: Counter::default(),
            versions_registered: Counter::default(),
            import_changes: Family::default(),
            ids_rewritten: Family::default(),
            ids_unknown: Family::default(),
            verify_frames: Counter::default(),
            members_closed: Counter::default(),
            last_member: Later::default(),
            verify_problems: Counter::default(),
            running: Gauge::default(),
            start_time: FloatGauge::default(),
            duration: FloatGauge::default(),
            exit_code: Later::default(),
            archive_size: Later::default(),
            last_success: Later::default(),
            last_success_duration: Later::default(),
            last_failure: Later::default(),
        };
        m.register();
        m.running.set(1);
        m.start_time.set(m.started_unix);
        m
    }

    fn register(&mut self) {
        self.register_records();
        self.register_registry();
        self.register_run();
    }

    fn register_records(&mut self) {
        let r = &mut self.registry;
        r.register(
            "records_read",
            "Records read from the source (Kafka in a backup, the archive in a restore)",
            self.records_read.clone(),
        );
        r.register(
            "records_written",
            "Records written to the target (the archive in a backup, Kafka in a restore)",
            self.records_written.clone(),
        );
        r.register_with_unit(
            "read",
            "Key, value and header bytes of the records read",
            Unit::Bytes,
            self.read_bytes.clone(),
        );
        r.register_with_unit(
            "written",
            "Bytes written: chunk frames as stored in the archive (backup), record keys, values and headers (restore)",
            Unit::Bytes,
            self.written_bytes.clone(),
        );
        r.register(
            "partition_lag",
            "What a partition has left to the snapshot end: offsets to read (backup), records to write (restore)",
            self.lag.clone(),
        );
        r.register(
            "partitions_planned",
            "Partitions this run is to back up or restore",
            self.partitions_planned.clone(),
        );
        r.register(
            "partitions_done",
            "Partitions complete",
            self.partitions_done.clone(),
        );
        r.register(
            "partitions_failed",
            "Partitions that failed or were stopped",
            self.partitions_failed.clone(),
        );
        r.register_with_unit(
            "chunk_write",
            "Time to write one record chunk's frame to the archive",
            Unit::Seconds,
            self.chunk_write.clone(),
        );
        r.register_with_unit(
            "fsync",
            "Time of one sync of the archive file to its device",
            Unit::Seconds,
            self.fsync.clone(),
        );
        r.register(
            "schema_ids_rewritten",
            "Schema IDs in records rewritten in place to the target's",
            self.ids_rewritten.clone(),
        );
        r.register(
            "schema_ids_unknown",
            "Schema IDs in records that the ID map does not know, left as they were",
            self.ids_unknown.clone(),
        );
        r.register(
            "verify_frames_checked",
            "Archive frames checked by a verification",
            self.verify_frames.clone(),
        );
        r.register(
            "verify_problems",
            "Problems a verification found",
            self.verify_problems.clone(),
        );
    }

    fn register_registry(&mut self) {
        let r = &mut self.registry;
        r.register(
            "registry_requests",
            "Schema Registry request attempts, by method, endpoint and HTTP status",
            self.requests.clone(),
        );
        r.register_with_unit(
            "registry_request",
            "Time of one Schema Registry request attempt, until its status and headers came",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        r.register(
            "registry_retries",
            "Schema Registry requests tried again (429, 5xx, 408, no answer)",
            self.retries.clone(),
        );
        r.register_with_unit(
            "registry_retry_wait",
            "Time waited before retrying Schema Registry requests (backoff, Retry-After)",
            Unit::Seconds,
            self.retry_wait.clone(),
        );
        r.register(
            "registry_throttled",
            "Schema Registry answers 429 Too Many Requests",
            self.throttled.clone(),
        );
        r.register_with_unit(
            "registry_rate_limit_wait",
            "Time Schema Registry requests waited on kar's own rate limit",
            Unit::Seconds,
            self.rate_limit_wait.clone(),
        );
        r.register(
            "subjects_backed_up",
            "Schema Registry subjects captured into the archive",
            self.subjects_backed_up.clone(),
        );
        r.register(
            "schema_versions_backed_up",
            "Schema versions captured into the archive",
            self.versions_backed_up.clone(),
        );
        r.register(
            "schema_versions_registered",
            "Schema versions registered on the target registry",
            self.versions_registered.clone(),
        );
        r.register(
            "import_mode_changes",
            "Subjects put into IMPORT mode on the target (change=into) and back (change=back)",
            self.import_changes.clone(),
        );
    }

    fn register_run(&mut self) {
        let r = &mut self.registry;
        r.register(
            "run_running",
            "1 while the run goes on",
            self.running.clone(),
        );
        r.register_with_unit(
            "run_start_timestamp",
            "When the run started, Unix time",
            Unit::Seconds,
            self.start_time.clone(),
        );
        r.register_with_unit(
            "run_duration",
            "How long the run has taken",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "run_exit_code",
            "The run's exit code once it ended: 0 success, 1 damage or difference found, 2 failure",
            self.exit_code.clone(),
        );
        r.register(
            "members_closed",
            "Members a continuous backup renamed into place (complete, synced)",
            self.members_closed.clone(),
        );
        r.register_with_unit(
            "last_member_timestamp",
            "When a continuous backup last renamed a member into place, Unix time: what is older than the roll interval and then some is a stuck backup",
            Unit::Seconds,
            self.last_member.clone(),
        );
        r.register_with_unit(
            "archive_size",
            "Size of the archive the run wrote or read",
            Unit::Bytes,
            self.archive_size.clone(),
        );
        r.register_with_unit(
            "last_success_timestamp",
            "When the last successful run of this command and job ended, Unix time",
            Unit::Seconds,
            self.last_success.clone(),
        );
        r.register_with_unit(
            "last_success_duration",
            "How long the last successful run took",
            Unit::Seconds,
            self.last_success_duration.clone(),
        );
        r.register_with_unit(
            "last_failure_timestamp",
            "When the last failed run of this command and job ended, Unix time",
            Unit::Seconds,
            self.last_failure.clone(),
        );
    }

    /// Records how the run ended: exit code, duration, last success or failure.
    pub fn finish(&self, exit_code: u8) {
        let now = unix_now();
        let seconds = self.started.elapsed().as_secs_f64();
        self.running.set(0);
        self.duration.set(seconds);
        set_later(&self.exit_code, f64::from(exit_code));
        if exit_code == 0 {
            set_later(&self.last_success, now);
            set_later(&self.last_success_duration, seconds);
        } else {
            set_later(&self.last_failure, now);
        }
    }

    /// Takes over what an earlier run left (its textfile) of the last success and failure, where
    /// this run has none of its own: a failed run does not erase when the job last succeeded.
    pub fn carry_over(&self, earlier: &textfile::Earlier) {
        for (g, v) in [
            (&self.last_success, earlier.last_success),
            (&self.last_success_duration, earlier.last_success_duration),
            (&self.last_failure, earlier.last_failure),
        ] {
            if let Some(v) = v
                && g.get(&Vec::new()).is_none()
            {
                set_later(g, v);
            }
        }
    }

    /// The metrics as OpenMetrics text (`application/openmetrics-text; version=1.0.0`).
    pub fn openmetrics(&self) -> String {
        if self.running.get() == 1 {
            self.duration.set(self.started.elapsed().as_secs_f64());
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// The metrics in Prometheus' text format 0.0.4 (node_exporter's textfile collector).
    pub fn text(&self) -> String {
        textfile::to_text_format(&self.openmetrics())
    }

    fn partition(&self, topic: &str, partition: i32) -> PartitionLabels {
        PartitionLabels {
            topic: topic.to_string(),
            partition,
        }
    }
}

fn set_later(g: &Later, v: f64) {
    g.get_or_create(&Vec::new()).set(v);
}

fn seconds(s: f64) -> f64 {
    s.max(0.0)
}

impl ProgressSink for Metrics {
    fn event(&self, e: &Event<'_>) {
        match *e {
            Event::PartitionPlanned {
                topic,
                partition,
                total,
            } => {
                self.partitions_planned.inc();
                if let Some(total) = total {
                    let l = self.partition(topic, partition);
                    self.lag.get_or_create(&l).set(total as i64);
                }
            }
            Event::Read {
                topic,
                partition,
                records,
                bytes,
                left,
            } => {
                let l = self.partition(topic, partition);
                self.records_read.get_or_create(&l).inc_by(records);
                self.read_bytes.get_or_create(&l).inc_by(bytes);
                if let Some(left) = left {
                    self.lag.get_or_create(&l).set(left as i64);
                }
            }
            Event::Written {
                topic,
                partition,
                records,
                bytes,
            } => {
                let l = self.partition(topic, partition);
                self.records_written.get_or_create(&l).inc_by(records);
                self.written_bytes.get_or_create(&l).inc_by(bytes);
            }
            Event::PartitionEnded { error, .. } => {
                if error.is_none() {
                    self.partitions_done.inc();
                } else {
                    self.partitions_failed.inc();
                }
            }
            Event::ChunkWritten { seconds: s } => self.chunk_write.observe(seconds(s)),
            Event::Synced { seconds: s } => self.fsync.observe(seconds(s)),
            _ => self.registry_event(e),
        }
    }
}

impl Metrics {
    fn registry_event(&self, e: &Event<'_>) {
        match *e {
            Event::RegistryAnswer {
                method,
                endpoint,
                status,
                seconds: s,
            } => {
                let l = RequestLabels {
                    method: method.to_string(),
                    endpoint: endpoint.to_string(),
                    status: status.map_or_else(|| "none".to_string(), |s| s.to_string()),
                };
                self.requests.get_or_create(&l).inc();
                self.request_seconds.observe(seconds(s));
                if status == Some(429) {
                    self.throttled.inc();
                }
            }
            Event::RegistryRetry { wait_seconds } => {
                self.retries.inc();
                self.retry_wait.inc_by(seconds(wait_seconds));
            }
            Event::RateLimited { seconds: s } => {
                self.rate_limit_wait.inc_by(seconds(s));
            }
            Event::SchemasBackedUp { subjects, versions } => {
                self.subjects_backed_up.inc_by(subjects);
                self.versions_backed_up.inc_by(versions);
            }
            Event::SchemaRegistered { .. } => {
                self.versions_registered.inc();
            }
            Event::ModeSet { into, .. } => {
                let change = if into { "into" } else { "back" };
                self.import_changes
                    .get_or_create(&ChangeLabels {
                        change: change.into(),
                    })
                    .inc();
            }
            Event::SchemaIds {
                topic,
                rewritten,
                unknown,
            } => {
                let l = TopicLabels {
                    topic: topic.to_string(),
                };
                self.ids_rewritten.get_or_create(&l).inc_by(rewritten);
                self.ids_unknown.get_or_create(&l).inc_by(unknown);
            }
            Event::ArchiveSize { bytes } => set_later(&self.archive_size, bytes as f64),
            Event::MemberClosed { .. } => {
                self.members_closed.inc();
                set_later(
                    &self.last_member,
                    crate::archive::writer::now_ms() as f64 / 1e3,
                );
            }
            Event::Verified { frames, problems } => {
                self.verify_frames.inc_by(frames);
                self.verify_problems.inc_by(problems);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn events_are_counted_under_their_names_and_labels() {
        let m = Metrics::new("backup", Some("nightly"));
        for e in [
            Event::PartitionPlanned {
                topic: "t",
                partition: 1,
                total: Some(10),
            },
            Event::Read {
                topic: "t",
                partition: 1,
                records: 4,
                bytes: 400,
                left: Some(6),
            },
            Event::RegistryAnswer {
                method: "GET",
                endpoint: "/subjects",
                status: Some(429),
                seconds: 0.01,
            },
            Event::RegistryAnswer {
                method: "GET",
                endpoint: "/subjects",
                status: None,
                seconds: 0.01,
            },
            Event::ModeSet {
                subject: "s",
                mode: Some("IMPORT"),
                into: true,
            },
            Event::ModeSet {
                subject: "s",
                mode: None,
                into: false,
            },
        ] {
            m.event(&e);
        }
        let om = m.openmetrics();
        let job = r#"command="backup",kar_job="nightly""#;
        for (prefix, want) in [
            (
                "kar_records_read_total{",
                format!("kar_records_read_total{{{job},topic=\"t\",partition=\"1\"}} 4"),
            ),
            (
                "kar_read_bytes_total{",
                format!("kar_read_bytes_total{{{job},topic=\"t\",partition=\"1\"}} 400"),
            ),
            (
                "kar_partition_lag{",
                format!("kar_partition_lag{{{job},topic=\"t\",partition=\"1\"}} 6"),
            ),
            (
                "kar_registry_throttled_total{",
                format!("kar_registry_throttled_total{{{job}}} 1"),
            ),
            ("kar_run_running{", format!("kar_run_running{{{job}}} 1")),
        ] {
            assert_eq!(sample(&om, prefix), [want.as_str()], "{om}");
        }
        assert_eq!(sample(&om, "kar_registry_requests_total{").len(), 2, "{om}");
        assert!(om.contains(r#"status="none"} 1"#), "{om}");
        assert!(om.contains(r#"change="into"} 1"#) && om.contains(r#"change="back"} 1"#));
        // Not while running: no exit code, no last success.
        assert!(sample(&om, "kar_run_exit_code{").is_empty(), "{om}");
        assert!(om.ends_with("# EOF\n"));

        m.finish(0);
        let text = m.text();
        assert_eq!(
            sample(&text, "kar_run_exit_code{"),
            [format!("kar_run_exit_code{{{job}}} 0.0")]
        );
        assert_eq!(
            sample(&text, "kar_run_running{"),
            [format!("kar_run_running{{{job}}} 0")]
        );
        assert_eq!(
            sample(&text, "kar_last_success_timestamp_seconds{").len(),
            1
        );
        assert!(sample(&text, "kar_last_failure_timestamp_seconds{").is_empty());
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    }

    #[test]
    fn the_next_run_finds_its_job_in_the_textfile_whatever_its_name() {
        for job in [Some("nightly"), Some(r#"odd "job" \ name"#), None] {
            let m = Metrics::new("backup", job);
            m.finish(0);
            let earlier = textfile::Earlier::parse(&m.text(), "backup", job);
            assert!(earlier.last_success.is_some(), "{job:?}: {}", m.text());
            assert!(earlier.last_success_duration.is_some());
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_it_is_told_of() {
        let m = Metrics::new("restore", None);
        m.carry_over(&textfile::Earlier {
            last_success: Some(1.5e9),
            last_success_duration: Some(3.0),
            last_failure: Some(1.0e9),
        });
        m.finish(2);
        let t = m.text();
        assert_eq!(
            sample(&t, "kar_last_success_timestamp_seconds{"),
            [r#"kar_last_success_timestamp_seconds{command="restore"} 1500000000.0"#]
        );
        assert_eq!(
            sample(&t, "kar_run_exit_code{"),
            [r#"kar_run_exit_code{command="restore"} 2.0"#]
        );
        let failed = sample(&t, "kar_last_failure_timestamp_seconds{");
        assert_eq!(failed.len(), 1);
        assert!(
            !failed[0].ends_with(" 1000000000.0"),
            "this run's failure, not the earlier one"
        );
    }
}
