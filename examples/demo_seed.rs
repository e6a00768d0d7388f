//! The demo's data and its proof, for `scripts/demo`:
//!
//! - `demo_seed BOOTSTRAP REGISTRY_URL TOPIC COUNT [TARGET_REGISTRY_URL]` registers an Avro `Order` schema that
//!   references a `Money` schema on the source registry, then produces orders in the Confluent
//!   wire format (0x00 + 4-byte schema ID + Avro binary) to a 3-partition topic and commits a
//!   consumer group halfway. Re-running it recreates the topic and deletes `TOPIC-restored`.
//!   With a target registry, it first registers an unrelated schema there, so that the restore
//!   must give the demo schemas new IDs.
//! - `demo_seed check BOOTSTRAP SOURCE_REGISTRY TARGET_REGISTRY TOPIC RESTORED_TOPIC` reads both
//!   topics and checks that every restored record's schema ID resolves, on the target registry, to
//!   the schema its original ID named on the source, with the rest of the record unchanged.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

const MONEY: &str = r#"{"type":"record","name":"Money","namespace":"kar.demo","fields":[{"name":"units","type":"long"},{"name":"currency","type":"string"}]}"#;
const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"kar.demo","fields":[{"name":"id","type":"string"},{"name":"customer","type":"string"},{"name":"total","type":"kar.demo.Money"}]}"#;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, bootstrap, source, target, topic, restored] = args.as_slice()
        && cmd == "check"
    {
        return check(bootstrap, source, target, topic, restored).await;
    }
    let (bootstrap, registry, topic, count, target) = match args.as_slice() {
        [b, r, t, c] => (b, r, t, c, None),
        [b, r, t, c, target] => (b, r, t, c, Some(target)),
        _ => bail!("usage: demo_seed BOOTSTRAP REGISTRY_URL TOPIC COUNT [TARGET_REGISTRY_URL]"),
    };
    let count: u32 = count.parse().context("COUNT must be a number")?;

    let http = reqwest::Client::new();
    if let Some(target) = target {
        // Something already on the target registry, so the restore has to give the demo's
        // schemas other IDs than on the source, and rewrite them in the records.
        let other = r#"{"type":"record","name":"Unrelated","namespace":"kar.demo","fields":[{"name":"x","type":"int"}]}"#;
        let id = register(
            &http,
            target,
            "kar-demo-unrelated-value",
            json!({"schema": other}),
        )
        .await?;
        println!("the target registry {target} already holds kar-demo-unrelated-value (id {id})");
    }
    let money_subject = "kar-demo-common-money-value";
    let order_subject = format!("{topic}-value");
    let money_id = register(&http, registry, money_subject, json!({"schema": MONEY})).await?;
    let refs = json!([{"name": "kar.demo.Money", "subject": money_subject, "version": 1}]);
    let order_id = register(
        &http,
        registry,
        &order_subject,
        json!({"schema": ORDER, "references": refs}),
    )
    .await?;
    println!(
        "registered {money_subject} (id {money_id}) and {order_subject} (id {order_id}, references {money_subject} v1) on {registry}"
    );

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let restored = format!("{topic}-restored");
    for r in admin
        .delete_topics(&[topic.as_str(), restored.as_str()], &opts)
        .await?
    {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, e)) => bail!("deleting old demo topic {t}: {e}"),
        }
    }
    // Topic deletion completes asynchronously; retry creation until the old one is gone.
    let new_topic = NewTopic::new(topic, 3, TopicReplication::Fixed(1));
    for attempt in 0.. {
        match admin.create_topics([&new_topic], &opts).await?.remove(0) {
            Ok(_) => break,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if attempt < 50 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err((t, e)) => bail!("creating demo topic {t}: {e}"),
        }
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let currencies = ["EUR", "USD", "GBP", "CHF"];
    let mut sends = Vec::new();
    for i in 0..count {
        let mut value = kar::registry::wire::header(order_id as u32).to_vec();
        avro_string(&mut value, &format!("order-{i:06}"));
        avro_string(&mut value, &format!("customer-{}", i % 17));
        avro_long(&mut value, i64::from(i) * 125 + 99);
        avro_string(&mut value, currencies[i as usize % currencies.len()]);
        let key = format!("customer-{}", i % 17);
        let headers = OwnedHeaders::new().insert(Header {
            key: "source",
            value: Some("kar-demo"),
        });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        sends.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    let mut ends = [0i64; 3];
    for s in sends {
        let d = s
            .await?
            .map_err(|(e, _)| e)
            .context("producing a demo record")?;
        let p = d.partition as usize;
        ends[p] = ends[p].max(d.offset + 1);
    }
    println!(
        "produced {count} wire-format records (value schema id {order_id}) to {topic} (3 partitions) on {bootstrap}"
    );

    // A consumer group halfway through each partition, so the backup has offsets to capture.
    let group = "kar-demo-billing";
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, end) in ends.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(end / 2))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .context("committing the demo group's offsets")?;
    println!(
        "committed offsets {:?} for consumer group {group}",
        ends.map(|e| e / 2)
    );
    Ok(())
}

async fn register(
    http: &reqwest::Client,
    registry: &str,
    subject: &str,
    body: Value,
) -> Result<i64> {
    let url = format!("{registry}/subjects/{subject}/versions");
    let resp = http
        .post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let reply: Value = resp
        .json()
        .await
        .with_context(|| format!("POST {url}: reply is not JSON"))?;
    if !status.is_success() {
        bail!("POST {url} answered {status}: {reply}");
    }
    reply["id"]
        .as_i64()
        .with_context(|| format!("POST {url}: no id in {reply}"))
}

fn avro_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn avro_string(out: &mut Vec<u8>, s: &str) {
    avro_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// partition, key, value
type Seen = (i32, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record of `topic` (partition by partition, in offset order).
fn read_all(bootstrap: &str, topic: &str) -> Result<Vec<Seen>> {
    use rdkafka::Message;
    use rdkafka::error::KafkaError;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kar-demo-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // If the broker cannot answer where the beginning is (a fresh broker under load), the
        // fallback must be the beginning too, not librdkafka's default of the end.
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let (mut out, mut eof) = (Vec::new(), 0);
    while eof < n {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => eof += 1,
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|r| r.0);
    Ok(out)
}

async fn check(
    bootstrap: &str,
    source: &str,
    target: &str,
    topic: &str,
    restored: &str,
) -> Result<()> {
    let http = reqwest::Client::new();
    let (src, dst) = (read_all(bootstrap, topic)?, read_all(bootstrap, restored)?);
    if src.len() != dst.len() {
        bail!(
            "{topic} has {} records, {restored} {}",
            src.len(),
            dst.len()
        );
    }
    let mut resolved = std::collections::BTreeMap::new();
    for ((sp, sk, sv), (dp, dk, dv)) in src.iter().zip(&dst) {
        if sp != dp || sk != dk {
            bail!("records differ in partition or key");
        }
        let (Some(sv), Some(dv)) = (sv, dv) else {
            continue;
        };
        let (Some(sid), Some(did)) = (
            kar::registry::wire::schema_id(sv),
            kar::registry::wire::schema_id(dv),
        ) else {
            bail!("a record is not in the wire format");
        };
        if sv[5..] != dv[5..] {
            bail!("a payload changed");
        }
        if let std::collections::btree_map::Entry::Vacant(e) = resolved.entry((sid, did)) {
            let s: Value = http
                .get(format!("{source}/schemas/ids/{sid}"))
                .send()
                .await?
                .json()
                .await?;
            let t: Value = http
                .get(format!("{target}/schemas/ids/{did}"))
                .send()
                .await?
                .json()
                .await?;
            if s["schema"] != t["schema"] {
                bail!("ID {did} on the target is not the schema {sid} named on the source");
            }
            e.insert(());
        }
    }
    let pairs: Vec<String> = resolved
        .keys()
        .map(|(s, t)| format!("source {s} -> target {t}"))
        .collect();
    println!(
        "checked {} restored records: every schema ID resolves on the target to the source's schema ({}); payloads unchanged",
        dst.len(),
        pairs.join(", ")
    );
    Ok(())
}
