//! `kar cat`: records decoded offline from the archive alone, compared with what Confluent's own
//! Python client serialized and what its deserializers make of the same records (Avro with a
//! referenced type, JSON Schema, Protobuf with an import and a nested message at message indexes
//! [1, 0]); undecodable records reported with their reason, never dropped; lookups by offset and
//! time reading only the chunks the index names.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use crate::common::{self, kar_cli};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The JSON lines `kar cat ARGS` printed (exit 0 asserted), and its `--stats` line.
fn cat(args: &[&str]) -> (Vec<Value>, Value) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kar"))
        .arg("cat")
        .args(args)
        .arg("--stats")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "kar cat {args:?}: {err}");
    let lines = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let stats = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    (lines, stats)
}

/// Writes the records of scripts/python/serialized.py with Confluent's serializers; its rows.
fn serialize_with_confluent(topic: &str, dir: &Path) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python/serialized.py");
    let o = std::process::Command::new(common::python())
        .args([
            script,
            &common::bootstrap(),
            topic,
            &common::source_registry(),
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "serialized.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

#[test]
fn cat_decodes_what_confluents_serializers_wrote() {
    common::require_kafka();
    let topic = common::unique("cat-serde");
    common::runtime()
        .context()
        .block_on(common::create_topic(&topic, 1, &[]));
    let dir = tempfile::tempdir().unwrap();
    let rows = serialize_with_confluent(&topic, dir.path());
    assert_eq!(rows.len(), 14);
    let file = dir.path().join("serde.kar");
    common::backup_cli(&topic, &format!("{topic}-.*"), &file, &[]);

    let (got, stats) = cat(&[s(&file)]);
    assert_eq!(got.len(), rows.len(), "every record printed, none dropped");
    assert_eq!(stats["fields_not_decoded"], 1, "{stats}: the unknown ID");
    for (row, rec) in rows.iter().zip(&got) {
        let kind = row["kind"].as_str().unwrap();
        assert_eq!(rec["topic"], json!(topic));
        assert_eq!(rec["offset"], row["offset"], "{kind}");
        if !row["sent"].is_null() {
            // kar's offline decoding equals what was serialized and what Confluent's
            // deserializer reads from the same bytes.
            assert_eq!(rec["value"], row["sent"], "{kind} at {}", row["offset"]);
            assert_eq!(rec["value"], row["decoded"], "{kind} at {}", row["offset"]);
            let want_type = match kind {
                k if k.starts_with("avro") => "AVRO",
                "json" => "JSON",
                _ => "PROTOBUF",
            };
            let schema = &rec["value_schema"];
            assert_eq!(schema["type"], want_type, "{rec}");
            assert!(
                schema["subject"].as_str().unwrap().starts_with(&topic),
                "{rec}"
            );
            assert_eq!(schema["version"], 1, "{rec}");
            assert!(rec.get("value_decoded").is_none(), "{rec}");
        }
        assert_eq!(rec["key_decoded"], false, "plain keys: {rec}");
    }
    let at = |o: u64| &got[o as usize];
    // The header form: the ID is the header's, the value its bare payload.
    assert_eq!(
        at(3)["headers"][0],
        json!({"name": "__value_schema_id", "value": {"schema_id": at(3)["value_schema"]["id"]}})
    );
    assert_eq!(at(3)["value_schema"], at(0)["value_schema"]);
    // Protobuf: the same schema ID for three messages of one file, told apart by their indexes.
    let proto_id = at(6)["value_schema"]["id"].as_u64().unwrap();
    for o in 6..=9 {
        assert_eq!(at(o)["value_schema"]["id"], proto_id);
    }
    assert_eq!(at(6)["value_schema"]["subject"], format!("{topic}-proto"));
    // Not decoded, each with its reason and its bytes.
    assert_eq!(at(10)["value_decoded"], false);
    assert_eq!(
        at(10)["value_reason"],
        "schema ID 2147483646 is not in the archive"
    );
    assert_eq!(b64(&at(10)["value"]), b64(&rows[10]["raw"]));
    assert_eq!(at(10)["value_base64"], true);
    assert_eq!(at(11)["value"], "plain text");
    assert!(
        at(11)["value_reason"]
            .as_str()
            .unwrap()
            .contains("not in the Confluent wire format")
    );
    assert_eq!(b64(&at(12)["value"]), vec![0xff, 0xfe, 0, 1]);
    assert_eq!(at(12)["value_base64"], true);
    assert!(at(13)["value"].is_null() && at(13).get("value_decoded").is_none());
    assert_eq!(at(13)["key"], "order-4700");

    // The filters: a schema ID, a key, one offset as raw bytes.
    let (by_id, _) = cat(&[s(&file), "--schema-id", &proto_id.to_string()]);
    let offsets: Vec<_> = by_id
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [6, 7, 8, 9]);
    let (by_key, _) = cat(&[s(&file), "--key-contains", "4711"]);
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0]["offset"], 3);
    let raw = std::process::Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(["cat", s(&file), "--offset", "11", "--format", "raw"])
        .output()
        .unwrap();
    assert_eq!(raw.stdout, b"plain text\n");
    let (code, _, text) = kar_cli(&["cat", s(&file), "--schema-id", "2147483646"], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("schema ID 2147483646 is not in"), "{text}");
}

#[test]
fn cat_reads_only_the_chunks_an_offset_or_a_time_needs() {
    common::require_kafka();
    let topic = common::unique("cat-lookup");
    let base = 1_700_000_000_000_i64;
    common::runtime().context().block_on(async {
        common::create_topic(&topic, 2, &[]).await;
        // Partition p holds records i ≡ p (mod 2), at offset i / 2, timestamp base + i.
        common::fill(&topic, 2, 4000, 100).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lookup.kar");
    common::backup_cli(&topic, "^$", &file, &["--chunk-size", "16384"]);

    let (all, stats) = cat(&[s(&file), "--partition", "1"]);
    assert_eq!(all.len(), 2000);
    let chunks = stats["chunks_in_partitions"].as_u64().unwrap();
    assert!(chunks >= 10, "{stats}: small chunks wanted");
    assert_eq!(stats["chunks_read"], chunks, "no filter reads them all");

    let n_of = |r: &Value| {
        let v: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
        v["n"].as_i64().unwrap()
    };
    // One offset: one chunk.
    let (one, stats) = cat(&[s(&file), "--partition", "1", "--offset", "1000"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["offset"], 1000);
    assert_eq!(n_of(&one[0]), 2001);
    assert_eq!(one[0]["timestamp"], base + 2001);
    assert_eq!(stats["chunks_read"], 1, "{stats}");
    assert_eq!(stats["chunks_in_partitions"], chunks);

    // An offset range across a chunk boundary: at most two chunks.
    let (range, stats) = cat(&[s(&file), "--partition", "1", "--offset", "500..520"]);
    let offsets: Vec<_> = range
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, (500..=520).collect::<Vec<_>>());
    assert!(stats["chunks_read"].as_u64().unwrap() <= 2, "{stats}");

    // A time range (RFC 3339: base is 2023-11-14T22:13:20Z): partition 0's records with
    // timestamps base+2000 .. base+2038, offsets 1000..=1019, from the `time` table.
    let (times, stats) = cat(&[
        s(&file),
        "--partition",
        "0",
        "--from-time",
        "2023-11-14T22:13:22Z",
        "--until-time",
        &(base + 2040).to_string(),
    ]);
    let offsets: Vec<_> = times
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, (1000..=1019).collect::<Vec<_>>());
    assert!(
        times
            .iter()
            .all(|r| n_of(r) == 2 * r["offset"].as_i64().unwrap())
    );
    assert!(stats["chunks_read"].as_u64().unwrap() <= 2, "{stats}");
    assert_eq!(times[0]["time"], "2023-11-14T22:13:22.000Z");

    // Every topic and partition, cut short by the reader: quiet, exit 0.
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' cat '{}' | head -n 2",
            env!("CARGO_BIN_EXE_kar"),
            s(&file)
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
}
