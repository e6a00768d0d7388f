//! Seeds the demo: registers an Avro `Order` schema that references a `Money` schema on the source
//! Schema Registry, then produces orders in the Confluent wire format (0x00 + 4-byte schema ID +
//! Avro binary) to a 3-partition topic. Run by `scripts/demo`; re-running it recreates the topic.
//!
//! Usage: demo_seed BOOTSTRAP REGISTRY_URL TOPIC COUNT

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
    let [bootstrap, registry, topic, count] = args.as_slice() else {
        bail!("usage: demo_seed BOOTSTRAP REGISTRY_URL TOPIC COUNT");
    };
    let count: u32 = count.parse().context("COUNT must be a number")?;

    let http = reqwest::Client::new();
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
    for r in admin.delete_topics(&[topic.as_str()], &opts).await? {
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
