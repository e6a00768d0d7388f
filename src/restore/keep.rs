//! Whether the target keeps what is restored, checked before any write: each target topic's
//! effective retention (`retention.ms`, `retention.bytes` with `cleanup.policy` delete) against
//! the age and size of the records restored into it (the broker deletes records older than its
//! retention within minutes of their arrival), and its timestamp limits
//! (`message.timestamp.after.max.ms`, 1 h by default since Kafka 4.0, and `before.max.ms`) against
//! the records' timestamps (the broker refuses a batch with one out of bounds).

use std::collections::BTreeMap;

use crate::archive::index::ChunkEntry;
use crate::archive::inspect::utc;

/// The limits of one target topic, from its effective configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `retention.ms` where records are deleted by age (`cleanup.policy` has `delete`), and not
    /// -1 (unlimited).
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps records itself.
    pub log_append_time: bool,
    pub after_max_ms: Option<i64>,
    pub before_max_ms: Option<i64>,
}

/// Topic config → the broker config a topic created without it takes its value from.
const BROKER_DEFAULTS: [(&str, &str); 6] = [
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("cleanup.policy", "log.cleanup.policy"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
    ),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
    ),
];

/// The configs a topic the restore creates will have: those given, the rest from the broker.
pub fn created_configs(
    given: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = given.clone();
    for (topic_key, broker_key) in BROKER_DEFAULTS {
        if out.contains_key(topic_key) {
            continue;
        }
        let v = match topic_key {
            // log.retention.ms, else .minutes, else .hours (Kafka's precedence).
            "retention.ms" => broker.get(broker_key).cloned().or_else(|| {
                let minutes = broker
                    .get("log.retention.minutes")
                    .and_then(|m| m.parse::<i64>().ok())
                    .map(|m| m * 60_000);
                let hours = broker
                    .get("log.retention.hours")
                    .and_then(|h| h.parse::<i64>().ok())
                    .map(|h| h * 3_600_000);
                minutes.or(hours).map(|ms| ms.to_string())
            }),
            _ => broker.get(broker_key).cloned(),
        };
        if let Some(v) = v {
            out.insert(topic_key.to_string(), v);
        }
    }
    out
}

impl Limits {
    pub fn of(configs: &BTreeMap<String, String>) -> Limits {
        let num = |k: &str| configs.get(k).and_then(|v| v.trim().parse::<i64>().ok());
        let deletes = configs
            .get("cleanup.policy")
            .is_none_or(|p| p.split(',').any(|x| x.trim() == "delete"));
        let bounded = |v: Option<i64>| v.filter(|n| *n >= 0);
        Limits {
            retention_ms: bounded(num("retention.ms")).filter(|_| deletes),
            retention_bytes: bounded(num("retention.bytes")).filter(|_| deletes),
            log_append_time: configs
                .get("message.timestamp.type")
                .is_some_and(|t| t == "LogAppendTime"),
            after_max_ms: bounded(num("message.timestamp.after.max.ms")).filter(|n| *n < i64::MAX),
            before_max_ms: bounded(num("message.timestamp.before.max.ms"))
                .filter(|n| *n < i64::MAX),
        }
    }
}

/// What one target partition would not keep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Records the broker would delete soon after the restore (retention), named.
    pub losses: Vec<String>,
    /// Records the broker would refuse (timestamps out of bounds), named.
    pub refusals: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks the first `records` records of one partition (its chunks, in offset order) against the
/// target topic's limits at `now_ms`. Chunk timestamps bound the records': a count is "up to"
/// where a chunk straddles a limit.
pub fn check_partition(
    target: &str,
    partition: i32,
    chunks: &[ChunkEntry],
    records: u64,
    limits: &Limits,
    now_ms: i64,
) -> Findings {
    let mut f = Findings::default();
    let mut left = records;
    let taken: Vec<&ChunkEntry> = chunks
        .iter()
        .take_while(|c| {
            let go = left > 0;
            left = left.saturating_sub(c.record_count as u64);
            go
        })
        .collect();
    if taken.is_empty() {
        return f;
    }
    let at = format!("{target}/{partition}");
    if limits.log_append_time {
        f.warnings.push(format!(
            "{at}: the target topic has message.timestamp.type=LogAppendTime: the broker replaces every record's timestamp with the time it arrives"
        ));
        return f;
    }
    if let Some(ms) = limits.retention_ms {
        let cutoff = now_ms.saturating_sub(ms);
        let (sure, maybe) = count(
            &taken,
            |c| c.max_timestamp < cutoff,
            |c| c.min_timestamp < cutoff,
        );
        if sure + maybe > 0 {
            let oldest = taken.iter().map(|c| c.min_timestamp).min().unwrap_or(0);
            f.losses.push(format!(
                "{at}: {} records are older than the target's retention.ms={ms} (stamped before {}; the oldest {}): the broker deletes them within minutes of the restore",
                span(sure, maybe),
                utc(cutoff),
                utc(oldest)
            ));
        }
    }
    if let Some(limit) = limits.retention_bytes {
        let bytes: u64 = taken.iter().map(|c| c.raw_len).sum();
        if bytes > limit as u64 {
            f.losses.push(format!(
                "{at}: about {} of its {} of records (uncompressed) exceed the target's retention.bytes={limit}: the broker deletes the oldest of them",
                human(bytes - limit as u64),
                human(bytes)
            ));
        }
    }
    if let Some(ms) = limits.after_max_ms {
        let bound = now_ms.saturating_add(ms);
        let (sure, maybe) = count(
            &taken,
            |c| c.min_timestamp > bound,
            |c| c.max_timestamp > bound,
        );
        if sure + maybe > 0 {
            f.refusals.push(format!(
                "{at}: {} records are stamped after {} (now + the target's message.timestamp.after.max.ms={ms}): the broker refuses them",
                span(sure, maybe),
                utc(bound)
            ));
        }
    }
    if let Some(ms) = limits.before_max_ms {
        let bound = now_ms.saturating_sub(ms);
        let (sure, maybe) = count(
            &taken,
            |c| c.max_timestamp < bound,
            |c| c.min_timestamp < bound,
        );
        if sure + maybe > 0 {
            f.refusals.push(format!(
                "{at}: {} records are stamped before {} (now - the target's message.timestamp.before.max.ms={ms}): the broker refuses them",
                span(sure, maybe),
                utc(bound)
            ));
        }
    }
    f
}

/// Records in chunks wholly beyond a limit, and in chunks that straddle it.
fn count(
    chunks: &[&ChunkEntry],
    all: impl Fn(&ChunkEntry) -> bool,
    some: impl Fn(&ChunkEntry) -> bool,
) -> (u64, u64) {
    let mut out = (0, 0);
    for c in chunks {
        if all(c) {
            out.0 += c.record_count as u64;
        } else if some(c) {
            out.1 += c.record_count as u64;
        }
    }
    out
}

fn span(sure: u64, maybe: u64) -> String {
    match (sure, maybe) {
        (s, 0) => s.to_string(),
        (0, m) => format!("up to {m}"),
        (s, m) => format!("{s} to {}", s + m),
    }
}

fn human(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{b} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(min: i64, max: i64, n: u32) -> ChunkEntry {
        ChunkEntry {
            topic: "t".into(),
            partition: 0,
            first_offset: 0,
            last_offset: n as i64 - 1,
            record_count: n,
            min_timestamp: min,
            max_timestamp: max,
            covers_from: 0,
            covers_to: n as i64,
            frame_offset: 0,
            chunk_id: [0; 32],
            raw_len: 1000,
            stored_len: 100,
        }
    }

    fn configs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_topic_created_takes_the_broker_defaults_kafka_s_way() {
        let broker = configs(&[
            ("log.retention.hours", "168"),
            ("log.cleanup.policy", "delete"),
        ]);
        let c = created_configs(&configs(&[("cleanup.policy", "compact")]), &broker);
        assert_eq!(c["retention.ms"], "604800000");
        assert_eq!(c["cleanup.policy"], "compact", "what is given stays");
        let l = Limits::of(&c);
        assert_eq!(
            l.retention_ms, None,
            "a compacted topic deletes nothing by age"
        );
        let minutes = configs(&[
            ("log.retention.minutes", "10"),
            ("log.retention.hours", "1"),
        ]);
        assert_eq!(
            created_configs(&BTreeMap::new(), &minutes)["retention.ms"],
            "600000"
        );
    }

    #[test]
    fn records_older_than_retention_and_out_of_timestamp_bounds_are_named() {
        let now = 10_000_000;
        let limits = Limits::of(&configs(&[
            ("retention.ms", "1000000"),
            ("retention.bytes", "-1"),
            ("message.timestamp.after.max.ms", "3600000"),
            ("message.timestamp.before.max.ms", "9223372036854775807"),
        ]));
        let chunks = [
            chunk(1, 2, 10),
            chunk(8_900_000, 9_100_000, 5),
            chunk(9_500_000, 9_600_000, 7),
        ];
        let f = check_partition("t", 0, &chunks, 22, &limits, now);
        assert_eq!(f.losses.len(), 1, "{f:?}");
        assert!(
            f.losses[0].starts_with(
                "t/0: 10 to 15 records are older than the target's retention.ms=1000000"
            ),
            "{f:?}"
        );
        assert!(f.refusals.is_empty());
        // --until: only the first 10 records.
        let f = check_partition("t", 0, &chunks, 10, &limits, now);
        assert!(f.losses[0].starts_with("t/0: 10 records"), "{f:?}");
        let future = [chunk(now, now + 7_200_000, 3)];
        let f = check_partition("t", 0, &future, 3, &limits, now);
        assert!(
            f.refusals[0].starts_with("t/0: up to 3 records are stamped after"),
            "{f:?}"
        );
        let unlimited = Limits::of(&configs(&[
            ("retention.ms", "-1"),
            ("retention.bytes", "1500"),
        ]));
        let f = check_partition("t", 0, &chunks, 22, &unlimited, now);
        assert_eq!(f.losses.len(), 1);
        assert!(
            f.losses[0].contains("about 1500 bytes of its 3000 bytes"),
            "{f:?}"
        );
        let append = Limits::of(&configs(&[
            ("message.timestamp.type", "LogAppendTime"),
            ("retention.ms", "1"),
        ]));
        let f = check_partition("t", 0, &chunks, 22, &append, now);
        assert!(f.losses.is_empty() && f.warnings.len() == 1, "{f:?}");
    }
}
