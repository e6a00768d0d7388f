//! Helpers for the benches (`benches/*.sh`), built in release mode:
//!
//! - `bench_tool seed BOOTSTRAP TOPIC PARTITIONS MEGABYTES` creates the topic (if missing) and fills
//!   it with 1 KiB JSON-like records (some repetition, as real payloads have).
//!   With a schema ID as a fifth argument, values are in the Confluent wire format with that ID.
//! - `bench_tool seed-orders BOOTSTRAP TOPIC PARTITIONS MEGABYTES json|avro:SCHEMA_ID` creates the
//!   topic and fills it with order events (`orders.rs`: every record different, compressing as
//!   real payloads do), JSON or Avro in the wire format; `bench_tool schema` prints their Avro
//!   schema; `bench_tool create BOOTSTRAP TOPIC PARTITIONS` creates an empty topic
//!   (`benches/compare.sh`); `bench_tool count BOOTSTRAP TOPIC` prints how many offsets its
//!   partitions hold (records, for a topic written without transactions).
//! - `bench_tool drain BOOTSTRAP TOPIC` is the backup baseline: a bare rdkafka consumer with the
//!   same settings kar's backup workers use, reading every partition from the start to its end
//!   and dropping the records. Prints records, bytes and seconds.
//! - `bench_tool produce BOOTSTRAP ARCHIVE SOURCE_TOPIC TARGET_TOPIC` is the restore baseline:
//!   loads the archived records into memory first, then times a bare producer with kar's restore
//!   producer settings writing them to the same partitions. Prints records and seconds.
//! - `bench_tool digest-archive ARCHIVE TOPIC [P=N,...]` and `bench_tool digest-topic BOOTSTRAP
//!   TOPIC [P=N,...]` print, per partition, the record count and a BLAKE3 hash of every record's
//!   key, value, headers and timestamp in order (offsets left out: a restore gives new ones); from
//!   the archive, or from Kafka with read_committed (with `P=N`, the first N records of partition
//!   P). `scripts/adversarial` compares the two. `bench_tool delete BOOTSTRAP TOPIC` deletes a
//!   topic it is done with.
//! - `bench_tool steady BOOTSTRAP TOPIC PARTITIONS RATE SECONDS` produces 1 KiB records at RATE
//!   a second for SECONDS (the load `benches/continuous.sh` measures under).
//! - `bench_tool lag BOOTSTRAP TOPIC PARTITIONS METRICS_ADDR DIR SECONDS` samples, every 250 ms,
//!   how far a continuous backup is behind the log end of a topic that began empty: records read
//!   (kar's `/metrics`, `kar_records_read_total`) and records in complete members (the newest
//!   `*.kar` in DIR); prints `read MEDIAN MAX durable MEDIAN MAX` in records.

mod orders;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["seed", bootstrap, topic, partitions, mb] => {
            seed(bootstrap, topic, partitions.parse()?, mb.parse()?, None)
        }
        ["seed", bootstrap, topic, partitions, mb, id] => seed(
            bootstrap,
            topic,
            partitions.parse()?,
            mb.parse()?,
            Some(id.parse()?),
        ),
        ["seed-orders", bootstrap, topic, partitions, mb, form] => {
            seed_orders(bootstrap, topic, partitions.parse()?, mb.parse()?, form)
        }
        ["create", bootstrap, topic, partitions] => {
            create_topic(bootstrap, topic, partitions.parse()?).map(|_| ())
        }
        ["count", bootstrap, topic] => count(bootstrap, topic),
        ["schema"] => {
            println!("{}", orders::SCHEMA);
            Ok(())
        }
        ["append", bootstrap, topic, partitions, kib] => {
            append(bootstrap, topic, partitions.parse()?, kib.parse()?)
        }
        ["drain", bootstrap, topic] => drain(bootstrap, topic),
        ["steady", bootstrap, topic, partitions, rate, seconds] => {
            let (rate, seconds): (f64, f64) = (rate.parse()?, seconds.parse()?);
            let count = (rate * seconds) as u64;
            produce_paced(
                bootstrap,
                topic,
                partitions.parse()?,
                count,
                None,
                Some(rate),
            )
        }
        ["lag", bootstrap, topic, partitions, metrics, dir, seconds] => lag(
            bootstrap,
            topic,
            partitions.parse()?,
            metrics,
            std::path::Path::new(dir),
            seconds.parse()?,
        ),
        ["produce", bootstrap, archive, source, target] => {
            produce(bootstrap, archive, source, target)
        }
        ["digest-archive", archive, topic] => digest_archive(archive, topic, ""),
        ["digest-archive", archive, topic, limits] => digest_archive(archive, topic, limits),
        ["delete", bootstrap, topic] => delete(bootstrap, topic),
        ["digest-topic", bootstrap, topic] => digest_topic(bootstrap, topic, ""),
        ["digest-topic", bootstrap, topic, limits] => digest_topic(bootstrap, topic, limits),
        _ => bail!(
            "usage: bench_tool seed BOOTSTRAP TOPIC PARTITIONS MEGABYTES [SCHEMA_ID] | seed-orders BOOTSTRAP TOPIC PARTITIONS MEGABYTES json|avro:SCHEMA_ID | create BOOTSTRAP TOPIC PARTITIONS | count BOOTSTRAP TOPIC | schema | append BOOTSTRAP TOPIC PARTITIONS KIBIBYTES | drain BOOTSTRAP TOPIC | steady BOOTSTRAP TOPIC PARTITIONS RATE SECONDS | lag BOOTSTRAP TOPIC PARTITIONS METRICS_ADDR DIR SECONDS | produce BOOTSTRAP ARCHIVE SOURCE_TOPIC TARGET_TOPIC | digest-archive ARCHIVE TOPIC [P=N,...] | digest-topic BOOTSTRAP TOPIC [P=N,...] | delete BOOTSTRAP TOPIC"
        ),
    }
}

fn seed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    mb: u64,
    schema_id: Option<u32>,
) -> Result<()> {
    if !create_topic(bootstrap, topic, partitions)? {
        println!("{topic} exists; not seeding again");
        return Ok(());
    }
    let started = Instant::now();
    let count = mb * 1024;
    produce_records(bootstrap, topic, partitions, count, schema_id)?;
    println!(
        "seeded {count} records ({mb} MiB of values) into {topic} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn count(bootstrap: &str, topic: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut total = 0;
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
        total += high - low;
    }
    println!("{total}");
    Ok(())
}

/// The producer that seeds topics: batched and lz4-compressed, as producers commonly send.
fn seeding_producer(bootstrap: &str) -> Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.kbytes", "262144")
        .create()?)
}

/// Sends a record, waiting while the producer's queue is full.
fn send(producer: &BaseProducer, mut rec: BaseRecord<'_, [u8], Vec<u8>>) -> Result<()> {
    loop {
        match producer.send(rec) {
            Ok(()) => break,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(5));
                rec = r;
            }
            Err((e, _)) => return Err(e).context("producing"),
        }
    }
    producer.poll(Duration::ZERO);
    Ok(())
}

/// An admin client, and a runtime to wait for its answers on.
fn admin(bootstrap: &str) -> Result<(AdminClient<DefaultClientContext>, tokio::runtime::Runtime)> {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((admin, rt))
}

/// Creates the topic; false when it exists already.
fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<bool> {
    let (admin, rt) = admin(bootstrap)?;
    let res = rt.block_on(admin.create_topics(
        [&NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(1),
        )],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    match res.into_iter().next() {
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((t, e))) => bail!("creating {t}: {e}"),
        _ => Ok(true),
    }
}

/// Fills a new topic with order events ([`orders`]) until their values hold `mb` MiB: JSON, or
/// Avro in the Confluent wire format under a schema ID. Keyed by customer, partitioned by the
/// producer's default (a hash of the key), lz4-compressed as producers commonly send.
fn seed_orders(bootstrap: &str, topic: &str, partitions: i32, mb: u64, form: &str) -> Result<()> {
    let schema_id: Option<u32> = match form {
        "json" => None,
        f => Some(
            f.strip_prefix("avro:")
                .context("the form is json or avro:SCHEMA_ID")?
                .parse()?,
        ),
    };
    if !create_topic(bootstrap, topic, partitions)? {
        println!("{topic} exists; not seeding again");
        return Ok(());
    }
    let started = Instant::now();
    let producer = seeding_producer(bootstrap)?;
    let mut rng = orders::Rng::new(0x6b61_7220_6265_6e63);
    let (mut value, mut bytes, mut count) = (Vec::with_capacity(2048), 0u64, 0u64);
    while bytes < mb << 20 {
        let order = orders::Order::new(&mut rng, count);
        value.clear();
        match schema_id {
            None => order.json(&mut value),
            Some(id) => {
                value.extend_from_slice(&kar::registry::wire::header(id));
                order.avro(&mut value);
            }
        }
        bytes += value.len() as u64;
        count += 1;
        let rec = BaseRecord::to(topic)
            .key(order.customer_id.as_bytes())
            .payload(&value);
        send(&producer, rec)?;
    }
    producer.flush(Duration::from_secs(600))?;
    println!(
        "seeded {count} orders ({bytes} bytes of values, {form}) into {topic} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Adds `kib` KiB of 1 KiB records to an existing topic (an incremental backup's new data).
fn append(bootstrap: &str, topic: &str, partitions: i32, kib: u64) -> Result<()> {
    produce_records(bootstrap, topic, partitions, kib, None)?;
    println!("appended {kib} records to {topic}");
    Ok(())
}

/// `count` records of about 1 KiB (order-like JSON), spread over the partitions.
fn produce_records(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: u64,
    schema_id: Option<u32>,
) -> Result<()> {
    produce_paced(bootstrap, topic, partitions, count, schema_id, None)
}

/// [`produce_records`], at most `rate` records a second when given.
fn produce_paced(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: u64,
    schema_id: Option<u32>,
    rate: Option<f64>,
) -> Result<()> {
    let started = Instant::now();
    let producer = seeding_producer(bootstrap)?;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut value = Vec::with_capacity(1024);
    for i in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        value.clear();
        if let Some(id) = schema_id {
            value.extend_from_slice(&kar::registry::wire::header(id));
        }
        let head = format!(
            "{{\"order_id\":\"o-{i:010}\",\"customer\":\"c-{}\",\"amount\":{}.{:02},\"currency\":\"EUR\",\"items\":[",
            x % 5000,
            x % 100_000,
            x % 100
        );
        value.extend_from_slice(head.as_bytes());
        while value.len() < 1000 {
            let item = format!(
                "{{\"sku\":\"sku-{}\",\"qty\":{}}},",
                (x >> 8) % 700,
                (x >> 20) % 9 + 1
            );
            value.extend_from_slice(item.as_bytes());
            x = x.rotate_left(7);
        }
        value.truncate(1022);
        value.extend_from_slice(b"]}");
        let key = format!("c-{}", x % 5000);
        let rec = BaseRecord::to(topic)
            .partition((i % partitions as u64) as i32)
            .key(key.as_bytes())
            .payload(&value);
        send(&producer, rec)?;
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(())
}

/// Samples a continuous backup's lag behind the log end (see the module's text).
fn lag(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    metrics: &str,
    dir: &std::path::Path,
    seconds: f64,
) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let started = Instant::now();
    let (mut read, mut durable) = (Vec::new(), Vec::new());
    while started.elapsed().as_secs_f64() < seconds {
        let mut end = 0;
        for p in 0..partitions {
            end += consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))?
                .1;
        }
        read.push(end - records_read(metrics, topic)?);
        durable.push(end - in_members(dir, topic)?);
        std::thread::sleep(Duration::from_millis(250));
    }
    let stats = |v: &mut Vec<i64>| {
        v.sort_unstable();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let ((rm, rx), (dm, dx)) = (stats(&mut read), stats(&mut durable));
    println!("read {rm} {rx} durable {dm} {dx}");
    Ok(())
}

/// The sum of `kar_records_read_total` for `topic` on kar's `/metrics` (HTTP/1.0, by hand).
fn records_read(addr: &str, topic: &str) -> Result<i64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: kar\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let want = format!("topic=\"{topic}\"");
    Ok(body
        .lines()
        .filter(|l| l.starts_with("kar_records_read_total{") && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64)
}

/// Records of `topic` up to the end of the newest complete member in `dir` (the topic began
/// empty, so its offsets count its records).
fn in_members(dir: &std::path::Path, topic: &str) -> Result<i64> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "kar"))
        .collect();
    names.sort();
    let Some(newest) = names.last() else {
        return Ok(0);
    };
    let a = kar::archive::Archive::open(newest)?;
    Ok(a.manifest()
        .topics
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.end_offset)
        .sum())
}

fn drain(bootstrap: &str, topic: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kar-bench-drain")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // If the broker cannot answer where the beginning is (a fresh broker under load), the
        // fallback must be the beginning too, not librdkafka's default of the end.
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "32768")
        .set("fetch.max.bytes", "16777216")
        .set("max.partition.fetch.bytes", "1048576")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let (mut records, mut bytes, mut eof) = (0u64, 0u64, 0usize);
    while eof < partitions {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                records += 1;
                bytes +=
                    (m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len)) as u64;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => eof += 1,
            Some(Err(e)) => bail!("consuming {topic}: {e}"),
            None => {}
        }
    }
    println!("{records} {bytes} {:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

/// partition, key, value, timestamp, headers
type OwnedRecord = (
    i32,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    i64,
    Vec<(String, Option<Vec<u8>>)>,
);

fn produce(bootstrap: &str, archive: &str, source: &str, target: &str) -> Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    let a = kar::archive::Archive::open(archive)?;
    let parts: Vec<i32> = a
        .manifest()
        .topics
        .iter()
        .find(|t| t.name == source)
        .context("topic not in the archive")?
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect();
    // Everything in memory first: the baseline measures producing only.
    let mut recs: Vec<OwnedRecord> = Vec::new();
    for p in &parts {
        a.for_each_record(source, *p, |r| {
            recs.push((
                *p,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
                r.timestamp,
                r.headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                    .collect(),
            ))
        })?;
    }
    let conn = kar::kafka::KafkaConnection::plaintext(bootstrap);
    let rt = kar::runtime::Runtime::new()?;
    kar::kafka::sink::Target::connect(&conn, rt.context())?.create_topic(
        target,
        parts.len() as i32,
        1,
        &Default::default(),
    )?;
    // As many producers, each on its own thread with its own partitions, as kar's default
    // --concurrency: the same parallelism as the restore it is compared with.
    let threads = 4usize;
    // With the linger of a restore's default 64 MiB transactions.
    let batching = kar::kafka::txn::Batching {
        compression: kar::kafka::txn::Compression::Lz4,
        linger: kar::kafka::txn::linger_for(64 << 20),
    };
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (recs, conn) = (&recs, &conn);
            handles.push(scope.spawn(move || -> Result<()> {
                // kar's restore settings (lz4, its default for a topic without a codec),
                // without the transactions: the baseline is the
                // cheapest way to put the records in, and the ratio shows what exactly-once costs.
                let producer: BaseProducer =
                    kar::kafka::txn::producer_config(conn, batching).create()?;
                for (p, k, v, ts, hs) in recs.iter().filter(|r| r.0 as usize % threads == t) {
                    let mut headers = OwnedHeaders::new_with_capacity(hs.len());
                    for (hk, hv) in hs {
                        headers = headers.insert(Header {
                            key: hk,
                            value: hv.as_deref(),
                        });
                    }
                    let mut rec: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(target)
                        .partition(*p)
                        .timestamp(*ts)
                        .headers(headers);
                    if let Some(k) = k {
                        rec = rec.key(k);
                    }
                    if let Some(v) = v {
                        rec = rec.payload(v);
                    }
                    loop {
                        match producer.send(rec) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                producer.poll(Duration::from_millis(5));
                                rec = r;
                            }
                            Err((e, _)) => return Err(e).context("producing"),
                        }
                    }
                    producer.poll(Duration::ZERO);
                }
                producer.flush(Duration::from_secs(600))?;
                Ok(())
            }));
        }
        for h in handles {
            h.join().expect("producer thread")?;
        }
        Ok(())
    })?;
    println!("{} {:.3}", recs.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Per partition: record count and a running BLAKE3 hash of the records' contents.
#[derive(Default)]
struct Digest(std::collections::BTreeMap<i32, (u64, blake3::Hasher)>);

impl Digest {
    fn add(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp: i64,
    ) {
        let (n, h) = self.0.entry(partition).or_default();
        *n += 1;
        // Length-prefixed fields, a null apart from an empty value.
        let field = |h: &mut blake3::Hasher, f: Option<&[u8]>| match f {
            None => {
                h.update(&[0]);
            }
            Some(b) => {
                h.update(&[1]);
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(b);
            }
        };
        field(h, key);
        field(h, value);
        h.update(&(headers.len() as u64).to_le_bytes());
        for (k, v) in headers {
            field(h, Some(k.as_bytes()));
            field(h, *v);
        }
        h.update(&timestamp.to_le_bytes());
    }

    fn print(&self) {
        for (p, (n, h)) in &self.0 {
            println!("{p} {n} {}", h.finalize().to_hex());
        }
    }
}

fn parse_limits(limits: &str) -> Result<std::collections::BTreeMap<i32, u64>> {
    let mut limit = std::collections::BTreeMap::new();
    for l in limits.split(',').filter(|l| !l.is_empty()) {
        let (p, n) = l.split_once('=').context("a limit is P=N")?;
        limit.insert(p.parse::<i32>()?, n.parse::<u64>()?);
    }
    Ok(limit)
}

fn delete(bootstrap: &str, topic: &str) -> Result<()> {
    let (admin, rt) = admin(bootstrap)?;
    for r in rt.block_on(admin.delete_topics(
        &[topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))? {
        if let Err((t, e)) = r {
            bail!("deleting {t}: {e}");
        }
    }
    Ok(())
}

fn digest_archive(archive: &str, topic: &str, limits: &str) -> Result<()> {
    let limit = parse_limits(limits)?;
    let a = kar::archive::Archive::open(archive)?;
    let entry = a
        .manifest()
        .topics
        .iter()
        .find(|t| t.name == topic)
        .context("topic not in the archive")?;
    let mut d = Digest::default();
    for p in &entry.partitions {
        d.0.entry(p.partition).or_default();
        let max = limit.get(&p.partition).copied().unwrap_or(u64::MAX);
        a.for_each_record(topic, p.partition, |r| {
            if d.0[&p.partition].0 < max {
                let headers: Vec<(&str, Option<&[u8]>)> = r.headers.iter().collect();
                d.add(p.partition, r.key, r.value, &headers, r.timestamp);
            }
        })?;
        anyhow::ensure!(
            d.0[&p.partition].0 == max || max == u64::MAX,
            "partition {} has fewer than {max} records",
            p.partition
        );
    }
    d.print();
    Ok(())
}

fn digest_topic(bootstrap: &str, topic: &str, limits: &str) -> Result<()> {
    use rdkafka::message::Headers;
    let limit = parse_limits(limits)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kar-bench-digest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut d = Digest::default();
    for p in 0..partitions {
        d.0.entry(p).or_default();
        if limit.get(&p) != Some(&0) {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut open = tpl.count();
    let deadline = Instant::now() + Duration::from_secs(600);
    while open > 0 {
        anyhow::ensure!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let p = m.partition();
                if limit.get(&p).is_some_and(|n| d.0[&p].0 >= *n) {
                    continue;
                }
                let headers: Vec<(&str, Option<&[u8]>)> = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
                    .unwrap_or_default();
                let ts = m.timestamp().to_millis().unwrap_or(-1);
                d.add(p, m.key(), m.payload(), &headers, ts);
                if limit.get(&p).is_some_and(|n| d.0[&p].0 == *n) {
                    let mut one = TopicPartitionList::new();
                    one.add_partition(topic, p);
                    consumer.incremental_unassign(&one)?;
                    open -= 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p)))
                if limit.get(&p).is_none_or(|n| d.0[&p].0 < *n) =>
            {
                anyhow::ensure!(
                    !limit.contains_key(&p),
                    "partition {p} ends after {} records, fewer than asked",
                    d.0[&p].0
                );
                open -= 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => bail!("consuming {topic}: {e}"),
            None => {}
        }
    }
    d.print();
    Ok(())
}
