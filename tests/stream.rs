//! `kar restore -`: a restore from an archive read once, front to back, as it arrives on a pipe
//! (the receiving end of a data diode, a tape drive): against the real broker and registries.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::archive::Rec;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

use crate::common::{self, Registry, avro_string, consume_all, import, producer};
use crate::restore::wire_value;

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"kar.stream","fields":[{"name":"id","type":"string"}]}"#;

/// Records per partition of the topics below.
pub(crate) const PER_PARTITION: i64 = 400;

/// A topic of 3 partitions of Avro records in Confluent's wire format, their schema registered on
/// the source registry under a subject of the prefix `p`, and a consumer group with committed
/// offsets: `(topic, group, schema id)`.
pub(crate) async fn orders(p: &str) -> (String, String, u32) {
    let id = common::unique_id() as u32;
    import(
        &Registry::source(),
        &format!("{p}-orders-value"),
        id,
        1,
        ORDER,
    )
    .await;
    let topic = format!("{p}-orders");
    common::create_topic(&topic, 3, &[]).await;
    // Recent timestamps: the target's 7-day retention keeps them.
    let now = kar::archive::writer::now_ms();
    let prod = producer(&[]);
    for part in 0..3 {
        for i in 0..PER_PARTITION {
            let value = wire_value(id, &avro_string(&format!("{part}-{i}-{}", "x".repeat(40))));
            let key = format!("k{i}");
            let headers = OwnedHeaders::new().insert(Header {
                key: "h",
                value: Some(b"v"),
            });
            let record = BaseRecord::to(&topic)
                .partition(part)
                .timestamp(now + i)
                .key(key.as_bytes())
                .payload(&value[..])
                .headers(headers);
            prod.send(record).map_err(|(e, _)| e).unwrap();
            prod.poll(std::time::Duration::ZERO);
        }
    }
    prod.flush(std::time::Duration::from_secs(30)).unwrap();
    let group = format!("{p}-readers");
    common::commit(
        &group,
        &[
            (&topic, 0, 150, "m0"),
            (&topic, 1, 0, ""),
            (&topic, 2, 400, "end"),
        ],
    );
    (topic, group, id)
}

/// `kar backup` of `topic` (with the registry's subjects and the groups of prefix `p`) to stdout,
/// as the arguments of a shell pipeline.
fn backup_cmd(p: &str, topic: &str) -> String {
    format!(
        "{} backup --chunk-size 4096 --bootstrap {} --topics {topic} --registry {} --subjects '{p}-.*' --groups '{p}-.*' --out -",
        env!("CARGO_BIN_EXE_kar"),
        common::bootstrap(),
        common::source_registry()
    )
}

/// `kar restore -` of the stream into `to`, with new schema IDs on the target registry.
/// Runs `kar ARGS` with `input` on its standard input: exit code and the JSON it printed.
fn kar_fed(args: &[String], input: &[u8]) -> (Option<i32>, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let json = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code(), json, stderr)
}

/// The restored records are the source's, record by record, but for the schema ID in the value's
/// wire header, which is the target's.
pub(crate) fn assert_restored(
    source: &BTreeMap<i32, Vec<Rec>>,
    restored: &BTreeMap<i32, Vec<Rec>>,
    target_id: u32,
) {
    for part in 0..3 {
        let (s, r) = (&source[&part], &restored[&part]);
        assert_eq!(r.len(), s.len(), "partition {part}");
        for (a, b) in s.iter().zip(r) {
            assert_eq!(
                (&a.key, a.timestamp, &a.headers),
                (&b.key, b.timestamp, &b.headers)
            );
            let (av, bv) = (a.value.as_ref().unwrap(), b.value.as_ref().unwrap());
            assert_eq!(bv[0], 0);
            assert_eq!(u32::from_be_bytes(bv[1..5].try_into().unwrap()), target_id);
            assert_eq!(av[5..], bv[5..], "partition {part} offset {}", a.offset);
        }
    }
}

/// The data-diode drill: `kar backup --out - | kar restore -`. The restore plans from the
/// stream's head, registers the schema on the target (a new ID), writes every record with the
/// ID rewritten, checks the root at the end and only then commits the consumer group; Confluent's
/// own client decodes every restored record against the target registry.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_piped_into_a_stream_restore_is_read_by_confluents_client() {
    common::require_kafka();
    let p = common::unique("pipe");
    let (topic, group, source_id) = orders(&p).await;
    let source = consume_all(&topic, 3);
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{topic}-restored");
    let restore = common::restore_args("-", &topic, &to, dir.path())
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} | {} {restore}",
            backup_cmd(&p, &topic),
            env!("CARGO_BIN_EXE_kar")
        ))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert!(
        o.status.success(),
        "{}\n{report}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(report["ok"], true);
    assert_eq!(report["plan"]["stream"], true);
    assert_eq!(report["records_written"], 3 * PER_PARTITION);
    let check = &report["stream_check"];
    assert_eq!(
        (&check["ok"], &check["records"]),
        (&json!(true), &json!(3 * PER_PARTITION))
    );
    assert!(
        check["chunks"].as_u64().unwrap() > 6,
        "several chunks a partition: {check}"
    );
    assert_eq!(report["plan"]["root_hash"], check["root_hash"]);
    let target_id = report["id_map"][source_id.to_string()].as_u64().unwrap() as u32;

    let restored = consume_all(&to, 3);
    assert_restored(&source, &restored, target_id);
    let decoded = common::decode_with_confluent(&to, &common::target_registry());
    let want: Vec<Value> = (0..3)
        .flat_map(|part| {
            (0..PER_PARTITION).map(move |i| json!({"id": format!("{part}-{i}-{}", "x".repeat(40))}))
        })
        .collect();
    assert_eq!(decoded, want);
    // The group's offsets, translated: the target offset of the record archived at each (the
    // restore's transaction markers take offsets too), or, past the last, where the records end.
    let end = restored[&2].last().unwrap().offset + 1;
    let at = |p: i32, i: usize| restored[&p][i].offset;
    for (part, offset, meta) in [(0, at(0, 150), "m0"), (1, at(1, 0), ""), (2, end, "end")] {
        let got = common::committed(&group, &to, part).await;
        assert_eq!(got, Some((offset, meta.to_string())), "partition {part}");
    }
}

/// A stream cut short, the same stream again, then the file: the first run writes what came whole
/// and says the stream did not verify (exit 1, no group committed); the second continues where
/// it stopped, without a duplicate; a file restore of the same archive finds everything in (its
/// progress is named after the archive ID, which the stream carries at its start). A dry run on
/// the stream reads it through and plans; a 2.x archive, which has no ID, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stream_restore_continues_from_the_stream_again_and_the_file_finds_it_done() {
    common::require_kafka();
    let p = common::unique("recut");
    let (topic, group, _) = orders(&p).await;
    let source = consume_all(&topic, 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.kar");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("{} > {}", backup_cmd(&p, &topic), file.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&file).unwrap();
    let to = format!("{topic}-restored");
    let args = common::restore_args("-", &topic, &to, dir.path());

    // A dry run reads the whole stream and writes nothing.
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let (code, r, err) = kar_fed(&dry, &bytes);
    assert_eq!(code, Some(0), "{err}\n{r}");
    assert_eq!(
        (&r["dry_run"], &r["plan"]["stream"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(r["plan"]["topics"][0]["target"], to);
    assert_eq!(r["stream_check"]["ok"], true);
    assert!(!common::admin_topics().await.contains(&to));
    let id = r["plan"]["archive_id"].clone();
    assert_eq!(id.as_str().map(str::len), Some(32), "{id}");

    // Cut inside the middle record chunk (the tail, index and manifest, may be most of the file).
    let chunks: Vec<u64> = kar::archive::verify::layout(&bytes)
        .into_iter()
        .filter(|(_, what)| what == "record chunk")
        .map(|(r, _)| r.start)
        .collect();
    let cut = &bytes[..chunks[chunks.len() / 2] as usize + 10];
    let (code, r, err) = kar_fed(&args, cut);
    assert_eq!(code, Some(1), "{err}\n{r}");
    assert_eq!(r["ok"], false);
    let problem = r["stream_check"]["problems"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        problem.contains(&format!("the stream ended at offset {}", cut.len())),
        "{problem}"
    );
    let first = r["records_written"].as_u64().unwrap();
    assert!(first > 0 && first < 3 * PER_PARTITION as u64, "{first}");
    assert_eq!(
        r["groups"],
        json!([]),
        "no group is committed over a stream that did not verify"
    );
    assert_eq!(common::committed(&group, &to, 0).await, None);
    let partial = consume_all(&to, 3);
    for part in 0..3 {
        let got = partial.get(&part).map_or(0, Vec::len);
        assert_eq!(
            source[&part][..got]
                .iter()
                .map(|r| &r.key)
                .collect::<Vec<_>>(),
            partial
                .get(&part)
                .map_or(vec![], |v| v.iter().map(|r| &r.key).collect()),
            "a prefix of partition {part}"
        );
    }

    let (code, r, err) = kar_fed(&args, &bytes);
    assert_eq!(code, Some(0), "{err}\n{r}");
    assert_eq!(
        r["records_written"].as_u64().unwrap(),
        3 * PER_PARTITION as u64 - first
    );
    let target_id = r["id_map"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_u64()
        .unwrap() as u32;
    let restored = consume_all(&to, 3);
    assert_restored(&source, &restored, target_id);
    // The target offset of the record archived at 150: the first run's transaction markers took
    // offsets, so it need not be 150.
    assert_eq!(
        common::committed(&group, &to, 0).await,
        Some((restored[&0][150].offset, "m0".into()))
    );

    // The file restore of the same archive: the same progress, nothing left to write.
    let mut from_file = args.clone();
    from_file[1] = file.display().to_string();
    let (code, r, err) = kar_fed(&from_file, b"");
    assert_eq!(code, Some(0), "{err}\n{r}");
    assert_eq!(r["records_written"], 0);
    assert_eq!(r["plan"]["archive_id"], id);

    // A 2.1 archive carries no archive ID: refused before anything is read further.
    let old = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/format-spec/vectors/minimal/archive-2.1.kar"
    ))
    .unwrap();
    let (code, _, err) = kar_fed(
        &common::restore_args("-", "greetings", &format!("{p}-old"), dir.path()),
        &old,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("carries no archive ID") && err.contains("restore it from a file"),
        "{err}"
    );
}

/// The reader of a backup's stream goes away part-way (`| head -c`): the backup stops, exit 2,
/// and says the stream's reader has an unfinished archive, not that a file `-` should be
/// repaired.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_whose_stream_reader_goes_away_says_so() {
    common::require_kafka();
    let topic = common::unique("gone");
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 3_000, 900).await;
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} backup --compression none --bootstrap {} --topics {topic} --out - | head -c 100000 > /dev/null",
            env!("CARGO_BIN_EXE_kar"),
            common::bootstrap()
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Broken pipe") && err.contains("its reader has every byte before the error"),
        "{err}"
    );
    assert!(!err.contains("kar repair -"), "{err}");
}
