//! Shared test support: service addresses, unique names so tests run in parallel, and small clients
//! for setting up state on the real broker and registries.

#![allow(dead_code)]

pub mod http_proxy;
pub mod own_registry;
pub mod proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::Value;

/// The tests' one kar runtime, made once (never dropped: the test process outlives every use).
pub fn runtime() -> &'static kar::runtime::Runtime {
    static RT: std::sync::OnceLock<kar::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| kar::runtime::Runtime::new().expect("a tokio runtime"))
}

pub fn bootstrap() -> String {
    std::env::var("KAR_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The SASL_SSL listener (SCRAM) and the mutual-TLS listener of the local broker, and the folder
/// with the CA and client certificate `scripts/services` made.
pub fn sasl_bootstrap() -> String {
    std::env::var("KAR_TEST_SASL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9094".into())
}

pub fn mtls_bootstrap() -> String {
    std::env::var("KAR_TEST_MTLS_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9095".into())
}

pub fn tls_dir() -> std::path::PathBuf {
    std::env::var("KAR_TEST_TLS_DIR")
        .unwrap_or_else(|_| "/tmp/kar-services/tls".into())
        .into()
}

pub const SCRAM_USER: &str = "kar";
pub const SCRAM_PASSWORD: &str = "kar-test-secret";

pub fn source_registry() -> String {
    std::env::var("KAR_TEST_REGISTRY_SOURCE").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

pub fn target_registry() -> String {
    std::env::var("KAR_TEST_REGISTRY_TARGET").unwrap_or_else(|_| "http://127.0.0.1:8082".into())
}

/// A name no other test (in this run or an earlier one against the same services) uses.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "kt-{what}-{}-{:x}-{n}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

/// A number unlikely to be used by an earlier run against the same registry: for explicit schema
/// IDs registered in IMPORT mode.
pub fn unique_id() -> i32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
    (100_000 + (nanos / 1000 + n * 7919) % 1_000_000_000) as i32
}

/// Fails the test with a message naming the service when Kafka does not answer: tests never skip.
pub fn require_kafka() {
    let addr = bootstrap();
    let sock: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("KAR_TEST_BOOTSTRAP={addr} is not HOST:PORT: {e}"));
    if std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(3)).is_err() {
        panic!("Kafka is not reachable at {addr}: start the services with `scripts/services up`");
    }
}

pub fn admin() -> AdminClient<DefaultClientContext> {
    require_kafka();
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client")
}

pub async fn create_topic(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let res = admin()
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create_topics request");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// A small JSON client for the Schema Registry REST API, for arranging test state. Failing calls
/// panic with the method, URL, status and body.
pub struct Registry {
    pub base: String,
    http: reqwest::Client,
}

impl Registry {
    pub fn new(base: impl Into<String>) -> Self {
        Registry {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    pub fn source() -> Self {
        Self::new(source_registry())
    }

    pub fn target() -> Self {
        Self::new(target_registry())
    }

    /// Sends a request and returns (status, body as JSON or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!(
                "{method} {url}: registry not reachable ({e}); start it with `scripts/services up`"
            )
        });
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, json)
    }

    /// Like `call`, but panics unless the status is 200.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, json) = self.call(method.clone(), path, body).await;
        assert_eq!(
            status, 200,
            "{method} {}{path} answered {status}: {json}",
            self.base
        );
        json
    }

    pub async fn get(&self, path: &str) -> Value {
        self.ok(reqwest::Method::GET, path, None).await
    }

    /// Registers a schema under `subject` and returns its global ID.
    pub async fn register(&self, subject: &str, body: Value) -> i32 {
        let res = self
            .ok(
                reqwest::Method::POST,
                &format!("/subjects/{subject}/versions"),
                Some(body),
            )
            .await;
        res["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {res}")) as i32
    }
}

/// Reads every record of the given partitions from Kafka (read_committed) up to their current
/// end: the ground truth a backup is compared with.
pub fn consume_all(topic: &str, partitions: i32) -> BTreeMap<i32, Vec<crate::archive::Rec>> {
    consume_all_as(topic, partitions, "read_committed")
}

/// [`consume_all`] with the given `isolation.level`: read_uncommitted also returns the records of
/// aborted transactions, as the Java consumer does by default.
pub fn consume_all_as(
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> BTreeMap<i32, Vec<crate::archive::Rec>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, Timestamp, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("truth"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        // If the broker cannot answer where the beginning is (a fresh broker under load), the
        // fallback must be the beginning too, not librdkafka's default of the end.
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    if isolation == "read_committed" {
        settled(topic, partitions);
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<crate::archive::Rec>> =
        (0..partitions).map(|p| (p, Vec::new())).collect();
    let mut eof = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while eof.len() < partitions as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} back timed out"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let (timestamp, ts_type) = match m.timestamp() {
                    Timestamp::NotAvailable => {
                        (-1, kar::format::chunk::TimestampType::NotAvailable)
                    }
                    Timestamp::CreateTime(t) => (t, kar::format::chunk::TimestampType::CreateTime),
                    Timestamp::LogAppendTime(t) => {
                        (t, kar::format::chunk::TimestampType::LogAppendTime)
                    }
                };
                out.get_mut(&m.partition())
                    .unwrap()
                    .push(crate::archive::Rec {
                        offset: m.offset(),
                        timestamp,
                        ts_type,
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
                    });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Waits (up to 10 s) until a read_committed consumer can read every record appended now: a
/// transaction's markers are written a moment after its commit or abort returns, and until then
/// such a consumer stops before its records.
fn settled(topic: &str, partitions: i32) {
    let high = Watermarks::uncommitted().ends(topic, partitions);
    let stable = Watermarks::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline
        && stable
            .ends(topic, partitions)
            .iter()
            .zip(&high)
            .any(|(s, h)| s < h)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn producer(extra: &[(&str, &str)]) -> rdkafka::producer::BaseProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .set("message.max.bytes", "4000000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

/// Sends one record and waits until it is acknowledged.
pub fn send(
    p: &rdkafka::producer::BaseProducer,
    topic: &str,
    partition: i32,
    r: &crate::archive::Rec,
) {
    send_queued(p, topic, partition, r);
    rdkafka::producer::Producer::flush(p, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("flushing to {topic}: {e}"));
}

/// Queues one record (flush the producer to wait for them all).
pub fn send_queued(
    p: &rdkafka::producer::BaseProducer,
    topic: &str,
    partition: i32,
    r: &crate::archive::Rec,
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::BaseRecord;
    let mut headers = OwnedHeaders::new();
    for (k, v) in &r.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
        .partition(partition)
        .timestamp(r.timestamp)
        .headers(headers);
    if let Some(k) = &r.key {
        rec = rec.key(k.as_slice());
    }
    if let Some(v) = &r.value {
        rec = rec.payload(v.as_slice());
    }
    p.send(rec)
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("producing to {topic}/{partition}: {e}"));
    p.poll(Duration::ZERO);
}

/// Commits offsets (with metadata) for a consumer group.
pub fn commit(group: &str, offsets: &[(&str, i32, i64, &str)]) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p, o, m) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o)).unwrap();
        tpl.find_partition(t, *p).unwrap().set_metadata(*m);
    }
    c.commit(&tpl, CommitMode::Sync)
        .unwrap_or_else(|e| panic!("committing for {group}: {e}"));
}

/// Names of the topics on the broker.
pub async fn admin_topics() -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

/// The configs set on a topic.
pub async fn describe_topic_configs(topic: &str) -> BTreeMap<String, String> {
    use rdkafka::admin::{AdminOptions, ConfigSource, ResourceSpecifier};
    let res = admin()
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let r = res.into_iter().next().unwrap().unwrap();
    r.entries
        .into_iter()
        .filter(|e| e.source == ConfigSource::DynamicTopic)
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// End offsets of a topic's partitions (0 for a topic that does not exist yet).
pub async fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    Watermarks::new().ends(topic, partitions)
}

/// One client for asking end offsets again and again: a test that must act mid-way through a
/// fast operation cannot afford a new client (and ~100 ms to close it) per look. `new` asks with
/// read_committed (the last stable offset: an open transaction's records are not counted),
/// `uncommitted` with read_uncommitted (the high watermark: every record appended).
pub struct Watermarks(rdkafka::consumer::BaseConsumer);

impl Watermarks {
    pub fn new() -> Self {
        Watermarks(
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap())
                .set("isolation.level", "read_committed")
                .create()
                .unwrap(),
        )
    }

    pub fn uncommitted() -> Self {
        Watermarks(
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap())
                .set("isolation.level", "read_uncommitted")
                .create()
                .unwrap(),
        )
    }

    pub fn ends(&self, topic: &str, partitions: i32) -> Vec<i64> {
        use rdkafka::consumer::Consumer;
        // Asking the watermarks of a topic that does not exist yet waits out the whole timeout;
        // metadata says at once whether it exists.
        let exists = self
            .0
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .is_ok_and(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            });
        if !exists {
            return vec![0; partitions as usize];
        }
        (0..partitions)
            .map(|p| {
                self.0
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .map(|w| w.1)
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// A group's committed offset and metadata for a partition.
pub async fn committed(group: &str, topic: &str, partition: i32) -> Option<(i64, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let res = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let e = res.find_partition(topic, partition)?;
    match e.offset() {
        Offset::Offset(o) => Some((o, e.metadata().to_string())),
        _ => None,
    }
}

/// The registry instance behind HTTPS that requires a client certificate and basic auth.
pub fn secure_registry() -> String {
    std::env::var("KAR_TEST_REGISTRY_SECURE").unwrap_or_else(|_| "https://127.0.0.1:8083".into())
}

/// Fills a topic with `count` JSON-like records of about `pad` bytes, spread round-robin over
/// `partitions`, record i stamped 1_700_000_000_000 + i: bulk data for tests that need a backup
/// or restore to take long enough to interrupt.
pub async fn fill(topic: &str, partitions: i32, count: i64, pad: usize) {
    use rdkafka::producer::{BaseRecord, Producer};
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let p = producer(&[("linger.ms", "50")]);
        for i in 0..count {
            let value = format!(
                "{{\"n\":{i},\"pad\":\"{}\"}}",
                "p".repeat(pad + (i % 7) as usize)
            );
            let rec = || {
                BaseRecord::<[u8], [u8]>::to(&topic)
                    .partition((i % i64::from(partitions)) as i32)
                    .payload(value.as_bytes())
                    .timestamp(1_700_000_000_000 + i)
            };
            while p.send(rec()).is_err() {
                p.poll(Duration::from_millis(10));
            }
        }
        p.flush(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("filling {topic}: {e}"));
    })
    .await
    .unwrap();
}

/// A real file system of `bytes` bytes (tmpfs), mounted on a fresh folder for as long as it
/// lives: a disk that fills. Needs root, as the tests run.
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn new(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a {bytes}-byte tmpfs failed (the tests run as root)"
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// The python of the environment scripts/python-deps makes (Confluent's Python client);
/// `KAR_TEST_PYTHON` names another.
pub fn python() -> String {
    let python = std::env::var("KAR_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/kar/venv/bin/python")
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "Confluent's Python client is not installed at {python}: run scripts/python-deps"
    );
    python
}

/// Reads every record of `topic` with Confluent's Python client (scripts/python/decode.py, in the
/// environment scripts/python-deps makes; `KAR_TEST_PYTHON` names its python) and decodes each
/// value with its AvroDeserializer against `registry`: the decoded values, in partition and
/// offset order. Panics, naming the record, if one does not decode.
pub fn decode_with_confluent(topic: &str, registry: &str) -> Vec<Value> {
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python/decode.py");
    let out = std::process::Command::new(&python)
        .args([script, &bootstrap(), topic, registry])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "decoding {topic} with Confluent's client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    rows.into_iter().map(|r| r["value"].clone()).collect()
}

/// The codecs of the record batches (control batches, the transaction markers, left out) of one
/// partition of the local broker, as Apache Kafka's own `DumpLogSegments` (kafka-dump-log.sh)
/// reads them from the broker's log directory.
pub fn batch_codecs(topic: &str, partition: i32) -> std::collections::BTreeSet<String> {
    let run = std::env::var("KAR_RUN_DIR").unwrap_or_else(|_| "/tmp/kar-services".into());
    let dir = std::path::PathBuf::from(run).join(format!("kafka/data/{topic}-{partition}"));
    let logs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| p.display().to_string())
        .collect();
    let home = std::env::var("KAR_CACHE_DIR")
        .unwrap_or_else(|_| format!("{}/.cache/kar", std::env::var("HOME").unwrap_or_default()));
    let pom = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/kafka/pom.xml"
    ))
    .unwrap();
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|v| v.split('<').next())
        .expect("scripts/kafka/pom.xml names the Kafka version")
        .to_string();
    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{home}/kafka-{version}/libs/*"))
        .arg(format!(
            "-Dlog4j2.configurationFile={}/scripts/kafka/log4j2-quiet.properties",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("kafka.tools.DumpLogSegments")
        .arg("--files")
        .arg(logs.join(","))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "DumpLogSegments: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("baseOffset:") && l.contains("isControl: false"))
        .filter_map(|l| l.split("compresscodec: ").nth(1))
        .map(|c| c.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Registers `schema` under `subject` with an explicit ID and version (IMPORT mode, forced, as the
/// subject may have versions), then puts the subject back in READWRITE.
pub async fn import(reg: &Registry, subject: &str, id: u32, version: i32, schema: &str) {
    reg.ok(
        reqwest::Method::PUT,
        &format!("/mode/{subject}?force=true"),
        Some(serde_json::json!({"mode": "IMPORT"})),
    )
    .await;
    reg.register(
        subject,
        serde_json::json!({"schema": schema, "id": id, "version": version}),
    )
    .await;
    reg.ok(
        reqwest::Method::PUT,
        &format!("/mode/{subject}"),
        Some(serde_json::json!({"mode": "READWRITE"})),
    )
    .await;
}

/// Avro's binary encoding of a string: zig-zag varint length, then the bytes.
pub fn avro_string(s: &str) -> Vec<u8> {
    let mut n = (s.len() as u64) << 1;
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(s.as_bytes());
    out
}

/// Runs the `kar` binary with `args`, `env` set and neither passphrase variable inherited (so a
/// test says which it gives), stdin closed: the exit code, the JSON it printed (or null), and
/// everything it printed, stdout then stderr.
pub fn kar_cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kar"));
    c.args(args)
        .env_remove("KAR_ARCHIVE_PASSPHRASE")
        .env_remove("KAR_SIGNING_PASSPHRASE")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let json = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), json, text)
}

/// `cat FILE | kar ARGS` (a stream as from a tape or a pipe): whether it succeeded, the JSON it
/// printed (or null), and its stderr.
/// `kar backup` of `topic` with the source registry's `subjects` (a regex) into `out`, exit 0
/// asserted.
pub fn backup_cli(topic: &str, subjects: &str, out: &std::path::Path, extra: &[&str]) {
    let (bootstrap, registry) = (bootstrap(), source_registry());
    let out = out.to_str().unwrap();
    let mut args = vec![
        "backup",
        "--bootstrap",
        &bootstrap,
        "--topics",
        topic,
        "--registry",
        &registry,
        "--subjects",
        subjects,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    let (code, _, text) = kar_cli(&args, &[]);
    assert_eq!(code, Some(0), "{text}");
}

/// `kar restore FILE` (`-`: a stream) of one topic as `to` into the target services, with its
/// state file at `state` and a JSON report.
pub fn restore_args(file: &str, topic: &str, to: &str, state: &std::path::Path) -> Vec<String> {
    [
        "restore",
        file,
        "--bootstrap",
        &bootstrap(),
        "--map",
        &format!("{topic}={to}"),
        "--registry",
        &target_registry(),
        "--state",
        &state.display().to_string(),
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

pub fn kar_piped(file: &std::path::Path, args: &str) -> (bool, Value, String) {
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | {} {args}",
            file.display(),
            env!("CARGO_BIN_EXE_kar")
        ))
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (
        o.status.success(),
        v,
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}
