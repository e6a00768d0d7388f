//! `kar restore LAST --chain DIR`: an incremental chain (spec §16) restored as one archive, read
//! where each member lies (no consolidated copy): schemas from the newest snapshot, records from
//! every member in order, `--until` across members, a resumed run across members, and a broken
//! chain (a damaged middle member, a missing one) refused, named, before anything is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kar::archive::Archive;
use serde_json::{Value, json};

use crate::archive::read_records;
use crate::common::{self, Registry, consume_all, producer};
use crate::restore::{rec, wire_value};

const V1: &str = r#"{"type":"record","name":"Note","namespace":"kar.chain","fields":[{"name":"text","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Note","namespace":"kar.chain","fields":[{"name":"text","type":"string"},{"name":"tag","type":"string","default":""}]}"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sends `n` Avro notes (`{label}-{i}`, each partition in turn) framed with schema `id`, v2's
/// with a tag; returns the values as Confluent's deserializer gives them, by partition.
fn notes(
    topic: &str,
    partitions: i32,
    id: u32,
    v2: bool,
    label: &str,
    n: usize,
) -> Vec<(i32, Value)> {
    let p = producer(&[]);
    let mut out = Vec::new();
    for i in 0..n {
        let part = (i as i32) % partitions;
        let text = format!("{label}-{i}");
        let mut payload = common::avro_string(&text);
        let mut want = json!({"text": text});
        if v2 {
            payload.extend(common::avro_string(label));
            want["tag"] = json!(label);
        }
        let r = rec(
            now_ms(),
            Some(format!("k{i}").into_bytes()),
            Some(wire_value(id, &payload)),
            &[],
        );
        common::send_queued(&p, topic, part, &r);
        out.push((part, want));
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    out
}

/// `kar backup` of `{prefix}-.*` and its subjects into `out`, continuing `parent`.
fn backup(prefix: &str, out: &Path, parent: Option<&Path>) -> (Option<i32>, String) {
    let (bootstrap, registry) = (common::bootstrap(), common::source_registry());
    let (topics, subjects) = (format!("{prefix}-.*"), format!("{prefix}-.*"));
    let mut args = vec![
        "backup",
        "--bootstrap",
        &bootstrap,
        "--topics",
        &topics,
        "--registry",
        &registry,
        "--subjects",
        &subjects,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(p) = parent {
        args.extend(["--incremental-from", p.to_str().unwrap()]);
    }
    let (code, _, text) = common::kar_cli(&args, &[]);
    (code, text)
}

/// `kar restore LAST --chain FROM...` into topics renamed `{to}-…`, IDs rewritten.
fn restore_chain(
    last: &Path,
    from: &[&Path],
    maps: &[(&str, String)],
    state: &Path,
    extra: &[&str],
) -> (Option<i32>, Value, String) {
    let mut args: Vec<String> = [
        "restore",
        last.to_str().unwrap(),
        "--bootstrap",
        &common::bootstrap(),
        "--registry",
        &common::target_registry(),
        "--schema-ids",
        "rewrite",
        "--state",
        state.to_str().unwrap(),
        "--json",
    ]
    .map(String::from)
    .to_vec();
    for f in from {
        args.extend(["--chain".to_string(), f.display().to_string()]);
    }
    for (src, dst) in maps {
        args.extend(["--map".to_string(), format!("{src}={dst}")]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    common::kar_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

/// Values in partition order, as `decode_with_confluent` lists them.
fn by_partition(rows: &[(i32, Value)], partitions: i32) -> Vec<Value> {
    (0..partitions)
        .flat_map(|p| rows.iter().filter(move |r| r.0 == p).map(|r| r.1.clone()))
        .collect()
}

/// Base, then a member with a second schema version, new records, a new topic and a topic
/// deleted, then a member after records were lost to retention: the chain restored from its
/// folder is what a full backup taken at the end holds (and the records before the loss), and
/// Confluent's deserializer reads every restored value against the target registry.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_restores_as_one_archive_that_confluent_reads() {
    let p = common::unique("chrest");
    let (a, old, new) = (format!("{p}-a"), format!("{p}-old"), format!("{p}-new"));
    let subject = format!("{p}-a-value");
    let source = Registry::source();
    common::create_topic(&a, 2, &[]).await;
    common::create_topic(&old, 1, &[]).await;
    let v1 = source.register(&subject, json!({"schema": V1})).await as u32;
    let mut rows_a = notes(&a, 2, v1, false, "base", 40);
    notes(&old, 1, v1, false, "old", 10);
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str| dir.path().join(n);
    let (code, text) = backup(&p, &f("base.kar"), None);
    assert_eq!(code, Some(0), "{text}");

    // Member 1: a second version; new records of a, written in two halves with a time between
    // them for --until; a new topic; the old topic deleted.
    let v2 = source.register(&subject, json!({"schema": V2})).await as u32;
    assert_ne!(v1, v2);
    rows_a.extend(notes(&a, 2, v2, true, "m1a", 10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let until = now_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later: Vec<_> = notes(&a, 2, v2, true, "m1b", 10);
    common::create_topic(&new, 1, &[]).await;
    let rows_new = notes(&new, 1, v2, true, "new", 15);
    common::admin()
        .delete_topics(&[&old], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    let (code, text) = backup(&p, &f("m1.kar"), Some(&f("base.kar")));
    assert_eq!(code, Some(0), "{text}");

    // Member 2: more records, then a/0 loses all but its last 3 to retention.
    let m2_rows = notes(&a, 2, v2, true, "m2", 10);
    let ends = common::end_offsets(&a, 2).await;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&a, 0, rdkafka::Offset::Offset(ends[0] - 3))
        .unwrap();
    common::admin()
        .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    let (code, text) = backup(&p, &f("m2.kar"), Some(&f("m1.kar")));
    assert_eq!(code, Some(1), "records lost between members: {text}");

    // A full backup at the end, elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let full_path = elsewhere.path().join("full.kar");
    let (code, text) = backup(&p, &full_path, None);
    assert_eq!(code, Some(0), "{text}");
    let full = Archive::open(&full_path).unwrap();

    // The chain from its folder: the gap is a hole, restored around only when asked.
    let to = common::unique("chrest-to");
    let maps = [
        (a.as_str(), format!("{to}-a")),
        (new.as_str(), format!("{to}-new")),
    ];
    let state = elsewhere.path().join("state");
    let (code, _, text) = restore_chain(&f("m2.kar"), &[dir.path()], &maps, &state, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("{a}/0: offsets")) && text.contains("--allow-gaps"),
        "{text}"
    );
    let (code, r, text) = restore_chain(
        &f("m2.kar"),
        &[dir.path()],
        &maps,
        &state,
        &["--allow-gaps"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        r["plan"]["archive_id"],
        json!(Archive::open(f("m2.kar")).unwrap().id().unwrap().hex())
    );
    let topics: Vec<&str> = r["plan"]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        [a.as_str(), new.as_str()],
        "the deleted topic is not in the newest: {r}"
    );

    // Partition 1 and the new topic equal the full backup record for record (IDs rewritten:
    // the bytes after the 5-byte prefix); a/0 ends as the full backup's and keeps what the chain
    // held before the gap.
    let restored = consume_all(&format!("{to}-a"), 2);
    let body = |v: &Option<Vec<u8>>| v.as_ref().map(|b| b[5..].to_vec());
    let strip = |v: &[crate::archive::Rec]| -> Vec<_> {
        v.iter()
            .map(|r| (r.key.clone(), body(&r.value), r.timestamp))
            .collect()
    };
    assert_eq!(strip(&restored[&1]), strip(&read_records(&full, &a, 1)));
    let tail = strip(&read_records(&full, &a, 0));
    let all = strip(&restored[&0]);
    assert_eq!(tail.len(), 3);
    assert_eq!(all[all.len() - 3..], tail[..]);
    let m1_end = Archive::open(f("m1.kar"))
        .unwrap()
        .manifest()
        .partition(&a, 0)
        .unwrap()
        .end_offset
        .unwrap() as usize;
    assert_eq!(
        all.len(),
        m1_end + 3,
        "the chain's records before the gap, then the tail"
    );
    assert_eq!(
        strip(&consume_all(&format!("{to}-new"), 1)[&0]),
        strip(&read_records(&full, &new, 0))
    );

    // Confluent's client reads every restored value against the target registry.
    let mut want_a: Vec<(i32, Value)> = rows_a.clone();
    want_a.extend(later.iter().cloned());
    want_a.extend(m2_rows.iter().cloned());
    let mut want = by_partition(&want_a, 2);
    // a/0 lost to retention what came between m1's end and its last 3 records.
    let p0 = want_a.iter().filter(|r| r.0 == 0).count();
    want.drain(m1_end..p0 - 3);
    assert_eq!(
        common::decode_with_confluent(&format!("{to}-a"), &common::target_registry()),
        want
    );
    assert_eq!(
        common::decode_with_confluent(&format!("{to}-new"), &common::target_registry()),
        by_partition(&rows_new, 1)
    );
    let versions = Registry::target()
        .get(&format!("/subjects/{subject}/versions"))
        .await;
    assert_eq!(
        versions,
        json!([1, 2]),
        "both versions, from the newest snapshot"
    );

    // --until across members: the base's records and m1's first half, from the chain cut at
    // m1 (the first member made after the time).
    let to2 = common::unique("chrest-until");
    let maps2 = [(a.as_str(), format!("{to2}-a"))];
    let (code, r, text) = restore_chain(
        &f("m2.kar"),
        &[dir.path()],
        &maps2,
        &elsewhere.path().join("state2"),
        &["--until", &until.to_string(), "--topics", &a],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        r["plan"]["archive_id"],
        json!(Archive::open(f("m1.kar")).unwrap().id().unwrap().hex())
    );
    assert_eq!(
        common::decode_with_confluent(&format!("{to2}-a"), &common::target_registry()),
        by_partition(&rows_a, 2)
    );

    // A damaged middle member: named, nothing written.
    let broken = tempfile::tempdir().unwrap();
    for n in ["base.kar", "m1.kar", "m2.kar"] {
        std::fs::copy(f(n), broken.path().join(n)).unwrap();
    }
    let m1 = Archive::open(f("m1.kar")).unwrap();
    let chunk = m1.chunks_of(&a, 0).unwrap()[0].clone();
    flip(
        &broken.path().join("m1.kar"),
        chunk.frame_offset + kar::format::frame::HEADER_LEN as u64 + 2,
    );
    let to3 = common::unique("chrest-broken");
    let maps3 = [(a.as_str(), format!("{to3}-a"))];
    let (code, _, text) = restore_chain(
        &broken.path().join("m2.kar"),
        &[broken.path()],
        &maps3,
        &elsewhere.path().join("state3"),
        &["--allow-gaps"],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("{}", broken.path().join("m1.kar").display()))
            && text.contains("damaged chunk"),
        "{text}"
    );
    assert!(
        common::end_offsets(&format!("{to3}-a"), 2)
            .await
            .iter()
            .all(|e| *e == 0),
        "nothing written"
    );

    // A missing member: named, nothing written.
    std::fs::remove_file(broken.path().join("m1.kar")).unwrap();
    let (code, _, text) = restore_chain(
        &broken.path().join("m2.kar"),
        &[broken.path()],
        &maps3,
        &elsewhere.path().join("state3"),
        &["--allow-gaps"],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("is member 2 of a chain, but its parent"),
        "{text}"
    );
}

/// Flips one byte of a file.
fn flip(path: &PathBuf, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

/// A chain restore killed inside a later member's records resumes from what was committed:
/// every record of every member once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_restore_killed_in_a_later_member_resumes_with_every_record_once() {
    let p = common::unique("chresume");
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str| dir.path().join(n);
    let mut parent: Option<PathBuf> = None;
    for n in ["base.kar", "m1.kar", "m2.kar"] {
        common::fill(&topic, 1, 30_000, 200).await;
        let (code, text) = backup(&p, &f(n), parent.as_deref());
        assert_eq!(code, Some(0), "{text}");
        parent = Some(f(n));
    }
    let restored = format!("{p}-restored");
    let state = dir.path().join("state");
    let cmd = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kar"));
        c.args(["restore", "--json", "--concurrency", "1"])
            .args(["--transaction-size", "1", "--bootstrap"])
            .arg(common::bootstrap())
            .args(["--map", &format!("{topic}={restored}"), "--state"])
            .arg(&state)
            .arg(f("m2.kar"))
            .arg("--chain")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let mut child = cmd().spawn().unwrap();
    let committed = common::Watermarks::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore finished before it reached the second member"
        );
        assert!(std::time::Instant::now() < deadline, "no progress in 120 s");
        let end = committed.ends(&restored, 1)[0];
        if end > 30_000 {
            assert!(end < 90_000, "{end}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = cmd().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["records_written"].as_u64().unwrap() < 60_000,
        "{report}"
    );
    let strip = |v: &[crate::archive::Rec]| -> Vec<_> {
        v.iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
            .collect()
    };
    let source = consume_all(&topic, 1);
    assert_eq!(source[&0].len(), 90_000);
    assert_eq!(strip(&consume_all(&restored, 1)[&0]), strip(&source[&0]));
}
