//! The local services behave as later features need: a Kafka broker that keeps every record field
//! (keys, values, null vs empty, ordered duplicate headers with null values, explicit timestamps)
//! across partitions, and Schema Registries that resolve references, serve schemas by subject,
//! version and ID, and accept explicit IDs in IMPORT mode.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Registry};

/// One record as produced, to compare with what comes back.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn records_for(partition: i32) -> Vec<Rec> {
    let base = 1_700_000_000_000 + i64::from(partition) * 1_000_000;
    let mut out = Vec::new();
    for i in 0..6i64 {
        let key = match i {
            1 => None,
            2 => Some(Vec::new()),
            _ => Some(format!("key-{partition}-{i}").into_bytes()),
        };
        let value = match i {
            3 => None,
            4 => Some(Vec::new()),
            // A Confluent wire-format-looking value with bytes that are not UTF-8.
            _ => Some(
                [
                    &[0u8, 0, 0, 0, 7][..],
                    &[0xff, 0xfe, i as u8],
                    format!("v{partition}").as_bytes(),
                ]
                .concat(),
            ),
        };
        let headers = vec![
            ("dup".to_string(), Some(b"first".to_vec())),
            ("null".to_string(), None),
            ("dup".to_string(), Some(format!("second-{i}").into_bytes())),
            ("empty".to_string(), Some(Vec::new())),
        ];
        // Out of order on purpose: timestamps are data, not an ordering.
        let timestamp = base + (i * 37) % 5 * 1000;
        out.push(Rec {
            key,
            value,
            headers,
            timestamp,
        });
    }
    out
}

#[tokio::test]
async fn kafka_keeps_every_record_field_across_partitions() {
    let topic = common::unique("roundtrip");
    common::create_topic(&topic, 3, &[]).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let mut expected: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    for partition in 0..3 {
        for rec in records_for(partition) {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &rec.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
                .partition(partition)
                .timestamp(rec.timestamp)
                .headers(headers);
            if let Some(k) = &rec.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(v) = &rec.value {
                fr = fr.payload(v.as_slice());
            }
            let delivery = producer.send(fr, Duration::from_secs(30)).await;
            let (p, offset) = match delivery {
                Ok(d) => (d.partition, d.offset),
                Err((e, _)) => panic!("producing to {topic}/{partition}: {e}"),
            };
            assert_eq!(p, partition);
            assert_eq!(
                offset as usize,
                expected.get(&partition).map_or(0, Vec::len)
            );
            expected.entry(partition).or_default().push(rec);
        }
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .set("group.id", common::unique("roundtrip-group"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for partition in 0..3 {
        tpl.add_partition_offset(&topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");

    let total: usize = expected.values().map(Vec::len).sum();
    let mut got: BTreeMap<i32, Vec<(i64, Rec)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.values().map(Vec::len).sum::<usize>() < total {
        assert!(
            Instant::now() < deadline,
            "timed out consuming {topic}: got {got:?}"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap_or_else(|e| panic!("consuming {topic}: {e}"));
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let Timestamp::CreateTime(ts) = msg.timestamp() else {
            panic!(
                "record {}/{} has timestamp {:?}, expected CreateTime",
                msg.partition(),
                msg.offset(),
                msg.timestamp()
            )
        };
        let rec = Rec {
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: ts,
        };
        got.entry(msg.partition())
            .or_default()
            .push((msg.offset(), rec));
    }

    for (partition, want) in &expected {
        let have = &got[partition];
        assert_eq!(
            have.len(),
            want.len(),
            "record count of partition {partition}"
        );
        for (i, ((offset, rec), want)) in have.iter().zip(want).enumerate() {
            assert_eq!(
                *offset, i as i64,
                "offset of record {i} in partition {partition}"
            );
            assert_eq!(rec, want, "record {i} of partition {partition}");
        }
    }
    // The edge cases are really there, so the comparison above covers them.
    let p0 = &got[&0];
    assert_eq!(p0[1].1.key, None);
    assert_eq!(p0[2].1.key, Some(Vec::new()));
    assert_eq!(p0[3].1.value, None);
    assert_eq!(p0[4].1.value, Some(Vec::new()));
    assert_eq!(p0[0].1.headers[1], ("null".to_string(), None));
}

fn money_schema() -> String {
    json!({
        "type": "record", "name": "Money", "namespace": "kar.test",
        "fields": [{"name": "units", "type": "long"}, {"name": "currency", "type": "string"}]
    })
    .to_string()
}

fn order_schema() -> String {
    json!({
        "type": "record", "name": "Order", "namespace": "kar.test",
        "fields": [{"name": "id", "type": "string"}, {"name": "total", "type": "kar.test.Money"}]
    })
    .to_string()
}

fn parse(text: &Value) -> Value {
    serde_json::from_str(
        text.as_str()
            .unwrap_or_else(|| panic!("schema is not a string: {text}")),
    )
    .expect("schema text is JSON")
}

#[tokio::test]
async fn registry_resolves_references_by_subject_version_and_id() {
    let reg = Registry::source();
    let money_subject = format!("{}-value", common::unique("money"));
    let orders_subject = format!("{}-value", common::unique("orders"));

    let money_id = reg
        .register(&money_subject, json!({"schema": money_schema()}))
        .await;
    let reference = json!([{"name": "kar.test.Money", "subject": money_subject, "version": 1}]);
    let orders_id = reg
        .register(
            &orders_subject,
            json!({"schema": order_schema(), "references": reference}),
        )
        .await;
    assert_ne!(money_id, orders_id);

    let v1 = reg
        .get(&format!("/subjects/{orders_subject}/versions/1"))
        .await;
    assert_eq!(v1["subject"], json!(orders_subject));
    assert_eq!(v1["version"], json!(1));
    assert_eq!(v1["id"], json!(orders_id));
    assert_eq!(
        parse(&v1["schema"]),
        serde_json::from_str::<Value>(&order_schema()).unwrap()
    );
    assert_eq!(v1["references"], reference);

    let by_id = reg.get(&format!("/schemas/ids/{orders_id}")).await;
    assert_eq!(
        parse(&by_id["schema"]),
        serde_json::from_str::<Value>(&order_schema()).unwrap()
    );
    assert_eq!(by_id["references"], reference);

    let money_by_id = reg.get(&format!("/schemas/ids/{money_id}")).await;
    assert_eq!(
        parse(&money_by_id["schema"]),
        serde_json::from_str::<Value>(&money_schema()).unwrap()
    );
}

#[tokio::test]
async fn target_registry_accepts_explicit_ids_in_import_mode() {
    let reg = Registry::target();
    let subject = format!("{}-value", common::unique("import"));
    let id = common::unique_id();

    // Without IMPORT mode an explicit ID is refused, so the mode switch below is what allows it.
    let body = json!({"schema": money_schema(), "id": id, "version": 7});
    let (status, _) = reg
        .call(
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(body.clone()),
        )
        .await;
    assert_ne!(status, 200, "explicit id {id} accepted outside IMPORT mode");

    let mode = reg
        .ok(
            Method::PUT,
            &format!("/mode/{subject}"),
            Some(json!({"mode": "IMPORT"})),
        )
        .await;
    assert_eq!(mode["mode"], json!("IMPORT"));
    assert_eq!(
        reg.get(&format!("/mode/{subject}")).await["mode"],
        json!("IMPORT")
    );

    assert_eq!(reg.register(&subject, body).await, id);

    let by_id = reg.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(
        parse(&by_id["schema"]),
        serde_json::from_str::<Value>(&money_schema()).unwrap()
    );
    let v7 = reg.get(&format!("/subjects/{subject}/versions/7")).await;
    assert_eq!(v7["id"], json!(id));
    assert_eq!(v7["version"], json!(7));
    assert_eq!(
        reg.get(&format!("/subjects/{subject}/versions")).await,
        json!([7])
    );

    // The source registry is independent: the ID means nothing there.
    let (status, _) = Registry::source()
        .call(Method::GET, &format!("/schemas/ids/{id}"), None)
        .await;
    assert_eq!(
        status, 404,
        "schema id {id} registered on the target is visible on the source"
    );

    let mode = reg
        .ok(
            Method::PUT,
            &format!("/mode/{subject}"),
            Some(json!({"mode": "READWRITE"})),
        )
        .await;
    assert_eq!(mode["mode"], json!("READWRITE"));
}

/// The broker's cluster ID is what Kafka makes one: 16 random bytes in unpadded base64url, 22
/// characters (scripts/services once captured a log4j line with it).
#[test]
fn the_broker_has_a_real_cluster_id() {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .create()
        .unwrap();
    let id = c
        .client()
        .fetch_cluster_id(Duration::from_secs(10))
        .expect("a cluster ID");
    assert_eq!(id.len(), 22, "{id:?}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id:?}"
    );
}
