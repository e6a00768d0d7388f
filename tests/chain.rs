//! Incremental chains (spec §16): a full backup, then members that carry only what is new, each
//! linked to its parent by ID and root, naming what changed: a new topic, a topic re-created, a
//! log that diverged, records lost to retention between two backups.

use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use kar::archive::Archive;
use kar::format::hex;
use kar::format::manifest::{ChangeKind, Manifest};
use serde_json::{Value, json};

use crate::archive::read_records;
use crate::common::{self, Registry, consume_all, producer, send};

/// `kar backup` of the topics `prefix-.*` and `subject` into `out`, continuing `parent` if given:
/// (exit code, JSON report, output).
fn backup(
    prefix: &str,
    subject: &str,
    out: &std::path::Path,
    parent: Option<&std::path::Path>,
) -> (Option<i32>, Value, String) {
    let (bootstrap, registry) = (common::bootstrap(), common::source_registry());
    let topics = format!("{prefix}-.*");
    let mut args = vec![
        "backup",
        "--bootstrap",
        &bootstrap,
        "--topics",
        &topics,
        "--registry",
        &registry,
        "--subjects",
        subject,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    if let Some(p) = parent {
        args.extend(["--incremental-from", p.to_str().unwrap()]);
    }
    common::kar_cli(&args, &[])
}

fn changes(m: &Manifest) -> Vec<(ChangeKind, String, Option<i32>)> {
    m.changes
        .iter()
        .map(|c| (c.kind, c.topic.clone(), c.partition))
        .collect()
}

async fn register(subject: &str, field: &str) {
    let schema = json!({"type": "record", "name": "Chained", "fields": [{"name": field, "type": "string", "default": ""}]});
    Registry::source()
        .register(subject, json!({"schema": schema.to_string()}))
        .await;
}

/// Deletes `topic` and makes it again (Kafka deletes asynchronously: creation is retried).
async fn recreate(topic: &str) {
    let admin = common::admin();
    let opts = rdkafka::admin::AdminOptions::new();
    for r in admin.delete_topics(&[topic], &opts).await.unwrap() {
        r.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(1));
        let r = admin.create_topics([&t], &opts).await.unwrap();
        if r.iter().all(|r| r.is_ok()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} not re-created in 60 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Produces `values` into a freshly re-created single-partition `topic`: a producer's first
/// sends after a re-creation may be refused while the broker settles, so the records are sent
/// until the topic holds them all.
async fn produce_after_recreate(topic: &str, values: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = producer(&[]);
        for (i, v) in values.iter().enumerate() {
            let r = crate::backup::rec(
                i as i64,
                1_700_000_500_000 + i as i64,
                None,
                Some(v.as_bytes()),
                &[],
            );
            send(&p, topic, 0, &r);
        }
        let end = common::end_offsets(topic, 1).await[0];
        if end == values.len() as i64 {
            return;
        }
        assert_eq!(end, 0, "{topic}: some of the records went, not all");
        assert!(Instant::now() < deadline, "{topic} took no record in 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_carry_only_what_is_new_and_name_every_change() {
    let prefix = common::unique("chain");
    let (a, b) = (format!("{prefix}-a"), format!("{prefix}-b"));
    let subject = format!("{prefix}-value");
    common::create_topic(&a, 2, &[]).await;
    common::fill(&a, 2, 100, 20).await;
    register(&subject, "one").await;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);

    // The base: a full backup.
    let (code, _, text) = backup(&prefix, &subject, &path("base.kar"), None);
    assert_eq!(code, Some(0), "{text}");
    let base = Archive::open(path("base.kar")).unwrap();

    // Member 1: 60 new records of a, a new topic b, a second schema version.
    common::fill(&a, 2, 60, 20).await;
    common::create_topic(&b, 1, &[]).await;
    common::fill(&b, 1, 10, 20).await;
    register(&subject, "two").await;
    let (code, r, text) = backup(&prefix, &subject, &path("m1.kar"), Some(&path("base.kar")));
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r["parent"]["depth"], 1, "{r}");
    assert_eq!(
        r["inherited_blobs"], 1,
        "the first version's text is the base's: {r}"
    );
    let m1 = Archive::open(path("m1.kar")).unwrap();
    assert_eq!(
        (m1.header().major, m1.header().is_chain_member()),
        (5, true)
    );
    let m = m1.manifest();
    let parent = m.parent.as_ref().unwrap();
    assert_eq!(parent.archive_id, base.id().unwrap().hex());
    assert_eq!(parent.root, hex(&base.root()));
    assert_eq!(changes(m), [(ChangeKind::TopicAdded, b.clone(), None)]);
    assert_eq!(m.blobs, 1, "only the new version's text is stored");
    assert_eq!(m.inherited_blobs.len(), 1);
    let truth = consume_all(&a, 2);
    for p in 0..2 {
        let before = base.manifest().partition(&a, p).unwrap();
        let now = m.partition(&a, p).unwrap();
        assert_eq!(
            now.start_offset, before.end_offset,
            "partition {p} continues"
        );
        let got = read_records(&m1, &a, p);
        assert_eq!(
            got[..],
            truth[&p][50..],
            "partition {p}: the 30 new records, exactly"
        );
        let l = now.lineage.as_ref().unwrap();
        assert_eq!(
            l.offset, before.last_offset,
            "anchored on the base's last record"
        );
        assert!(!l.restarted);
    }
    assert_eq!(read_records(&m1, &b, 0), consume_all(&b, 1)[&0]);
    let (code, _, text) = common::kar_cli(&["verify", path("m1.kar").to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "a member verifies: {text}");
    // Alone, a member is not a backup: restore refuses it, from a file and from a stream.
    let state = dir.path().join("state");
    let args = common::restore_args(path("m1.kar").to_str().unwrap(), &a, &a, &state);
    let (code, _, text) =
        common::kar_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("is member 1 of a chain"), "{text}");
    let (ok, _, text) = common::kar_piped(
        &path("m1.kar"),
        &format!(
            "restore - --bootstrap {} --map {a}=x --state {}",
            common::bootstrap(),
            state.display()
        ),
    );
    assert!(!ok && text.contains("is a chain member"), "{text}");

    // Member 2: nothing new; every schema text inherited, no record, no change.
    let (code, r, text) = backup(&prefix, &subject, &path("m2.kar"), Some(&path("m1.kar")));
    assert_eq!(code, Some(0), "{text}");
    let m2 = Archive::open(path("m2.kar")).unwrap();
    let m = m2.manifest();
    assert_eq!(m.parent.as_ref().unwrap().depth, 2);
    assert_eq!((m.blobs, m.inherited_blobs.len()), (0, 2), "{r}");
    assert!(m.changes.is_empty(), "{:?}", m.changes);
    assert_eq!(
        m.topics
            .iter()
            .map(|t| t.partitions.iter().map(|p| p.records).sum::<u64>())
            .sum::<u64>(),
        0
    );

    // Member 3: b deleted and re-created with other records, more of them than before: its log
    // diverged; a's first partition loses records to retention between the two backups.
    recreate(&b).await;
    let values: Vec<String> = (0..12).map(|i| format!("another life {i}")).collect();
    produce_after_recreate(&b, &values.iter().map(String::as_str).collect::<Vec<_>>()).await;
    common::fill(&a, 2, 20, 20).await;
    let ends = common::end_offsets(&a, 2).await;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&a, 0, rdkafka::Offset::Offset(ends[0] - 3))
        .unwrap();
    common::admin()
        .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    let (code, r, text) = backup(&prefix, &subject, &path("m3.kar"), Some(&path("m2.kar")));
    assert_eq!(
        code,
        Some(1),
        "records lost between members: not whole: {text}"
    );
    assert!(text.contains("deleted by retention"), "{text}");
    let m3 = Archive::open(path("m3.kar")).unwrap();
    let m = m3.manifest();
    let was = m2.manifest().partition(&a, 0).unwrap().end_offset.unwrap();
    assert_eq!(
        changes(m),
        [
            (ChangeKind::RetentionGap, a.clone(), Some(0)),
            (ChangeKind::LogDiverged, b.clone(), Some(0)),
        ],
        "{r}"
    );
    let gap = &m.changes[0];
    assert_eq!((gap.from, gap.to), (Some(was), Some(ends[0] - 3)));
    assert_eq!(m.partition(&a, 0).unwrap().start_offset, Some(ends[0] - 3));
    assert_eq!(read_records(&m3, &a, 0).len(), 3);
    assert_eq!(
        read_records(&m3, &a, 1).len(),
        10,
        "partition 1 continues whole"
    );
    let nb = m.partition(&b, 0).unwrap();
    assert!(nb.lineage.as_ref().unwrap().restarted);
    assert_eq!(
        (nb.start_offset, nb.records),
        (Some(0), 12),
        "the new log, from its start"
    );
    assert_eq!(read_records(&m3, &b, 0), consume_all(&b, 1)[&0]);

    // Member 4: b re-created again with fewer records than member 3 saw: its end went back.
    recreate(&b).await;
    produce_after_recreate(&b, &["short"]).await;
    let (code, _, text) = backup(&prefix, &subject, &path("m4.kar"), Some(&path("m3.kar")));
    assert_eq!(code, Some(0), "{text}");
    let m4 = Archive::open(path("m4.kar")).unwrap();
    assert_eq!(
        changes(m4.manifest()),
        [(ChangeKind::EndWentBack, b.clone(), Some(0))]
    );

    check_the_chain(dir.path(), &a, &b, was, ends[0] - 3);
    consolidated(dir.path(), &a, &b, &subject, &truth).await;
}

/// `kar consolidate`: the whole chain up to member 2 becomes one full archive holding every
/// record a backup at that time held, which restores; the chain with its retention gap becomes
/// an archive with that gap, equal to a full backup taken now where the log still has records.
async fn consolidated(
    dir: &std::path::Path,
    a: &str,
    b: &str,
    subject: &str,
    truth: &std::collections::BTreeMap<i32, Vec<crate::archive::Rec>>,
) {
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (code, r, text) = common::kar_cli(
        &[
            "consolidate",
            &f("base.kar"),
            &f("m1.kar"),
            &f("m2.kar"),
            "--out",
            &f("c2.kar"),
            "--json",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r["status"], "complete", "{r}");
    let (code, _, text) = common::kar_cli(&["verify", &f("c2.kar")], &[]);
    assert_eq!(code, Some(0), "{text}");
    let c2 = Archive::open(f("c2.kar")).unwrap();
    assert_eq!(c2.header().major, 3, "a full archive");
    assert!(c2.manifest().parent.is_none() && c2.manifest().inherited_blobs.is_empty());
    assert_eq!(c2.manifest().blobs, 2, "both schema texts, stored");
    for p in 0..2 {
        assert_eq!(
            read_records(&c2, a, p),
            truth[&p],
            "partition {p}: every record"
        );
        let e = c2.manifest().partition(a, p).unwrap();
        assert_eq!((e.start_offset, e.complete), (Some(0), true));
    }
    // It restores: every record of a, its schema registered on the target.
    let to = common::unique("consolidated");
    let state = dir.join("c2-state");
    let mut args = common::restore_args(&f("c2.kar"), a, &to, &state);
    args.extend(["--schema-ids", "rewrite", "--topics", a].map(String::from));
    let (code, _, text) =
        common::kar_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, Some(0), "{text}");
    let restored = consume_all(&to, 2);
    for p in 0..2 {
        let strip = |v: &[crate::archive::Rec]| -> Vec<_> {
            v.iter()
                .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
                .collect()
        };
        assert_eq!(
            strip(&restored[&p]),
            strip(&truth[&p]),
            "restored partition {p}"
        );
    }
    let versions = Registry::target()
        .get(&format!("/subjects/{subject}/versions"))
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");

    // The whole chain, with its retention gap: the gap is the output's, and where the log still
    // holds records the output equals a full backup taken now.
    // Outside the chain's folder, which is given whole.
    let elsewhere = tempfile::tempdir().unwrap();
    let g = |n: &str| elsewhere.path().join(n);
    let c4_path = g("c4.kar").to_str().unwrap().to_string();
    let (code, r, text) = common::kar_cli(
        &[
            "consolidate",
            dir.to_str().unwrap(),
            "--out",
            &c4_path,
            "--json",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "records were lost: {text}");
    assert_eq!(r["status"], "partial", "{r}");
    let c4 = Archive::open(g("c4.kar")).unwrap();
    assert!(!c4.manifest().partition(a, 0).unwrap().gaps.is_empty());
    let prefix = a.trim_end_matches("-a");
    let (code, _, text) = backup(prefix, subject, &g("full.kar"), None);
    assert_eq!(code, Some(0), "{text}");
    let full = Archive::open(g("full.kar")).unwrap();
    assert_eq!(read_records(&c4, a, 1), read_records(&full, a, 1));
    assert_eq!(
        read_records(&c4, b, 0),
        read_records(&full, b, 0),
        "b's newest lineage only"
    );
    let now = read_records(&full, a, 0);
    let all = read_records(&c4, a, 0);
    assert_eq!(
        all[all.len() - now.len()..],
        now[..],
        "a/0 ends as the log does now"
    );
    assert!(
        all.len() > now.len(),
        "and keeps what the chain held before the gap"
    );
}

/// `kar chain` and `kar verify --chain` over the members the test above wrote: in order, linked,
/// the retention gap named as lost, b's new lineage named; a chain without its base is broken; a
/// chain up to member 2 is whole.
fn check_the_chain(dir: &std::path::Path, a: &str, b: &str, lost_from: i64, lost_to: i64) {
    let d = dir.to_str().unwrap();
    let (code, r, text) = common::kar_cli(&["chain", d, "--json"], &[]);
    assert_eq!(code, Some(1), "records were lost: not whole: {text}");
    let depths: Vec<u64> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [0, 1, 2, 3, 4], "{r}");
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(
        r["lost"],
        json!([format!(
            "{a}/0: offsets {lost_from}..{lost_to} (before member 3)"
        )])
    );
    let span = |t: &str, p: i64| {
        r["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["topic"] == t && s["partition"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(span(b, 0)["restarted_at"], 4, "{r}");
    assert_eq!(span(a, 1)["ranges"].as_array().unwrap().len(), 5, "{r}");
    let (code, v, text) = common::kar_cli(&["verify", "--chain", d, "--json"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(v["lost"], r["lost"]);
    assert!(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["intact"] == true)
    );

    // Without its base: broken, named.
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (code, _, text) = common::kar_cli(&["chain", &f("m1.kar"), &f("m2.kar")], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("is member 1 of a chain, but its parent"),
        "{text}"
    );

    // Base to member 2: whole.
    let (code, _, text) = common::kar_cli(
        &[
            "chain",
            &f("m2.kar"),
            &f("base.kar"),
            &f("m1.kar"),
            "--full",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("OK: every archive intact"), "{text}");
}

/// A damaged parent is refused before anything is read or written.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_parent_is_refused() {
    let prefix = common::unique("chain-bad");
    let a = format!("{prefix}-a");
    common::create_topic(&a, 1, &[]).await;
    common::fill(&a, 1, 50, 20).await;
    let subject = format!("{prefix}-value");
    register(&subject, "one").await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.kar");
    let (code, _, text) = backup(&prefix, &subject, &base, None);
    assert_eq!(code, Some(0), "{text}");
    let mut bytes = std::fs::read(&base).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    std::fs::write(&base, bytes).unwrap();
    let out = dir.path().join("m1.kar");
    let (code, _, text) = backup(&prefix, &subject, &out, Some(&base));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("does not verify"), "{text}");
    assert!(!out.exists());
}

/// Members whose ranges hold no record (an aborted transaction: its records and its marker take
/// offsets, none is a record) have no chunk; consolidated, the chain still accounts for every
/// offset, in the middle and at the end, and verifies.
#[tokio::test(flavor = "multi_thread")]
async fn members_without_records_leave_no_hole_when_consolidated() {
    let prefix = common::unique("chain-txn");
    let t = format!("{prefix}-t");
    let subject = format!("{prefix}-value");
    register(&subject, "one").await;
    common::create_topic(&t, 1, &[]).await;
    common::fill(&t, 1, 10, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let tp = producer(&[("transactional.id", &common::unique("chain-txid"))]);
    tp.init_transactions(Duration::from_secs(30)).unwrap();
    let aborted = || {
        tp.begin_transaction().unwrap();
        for i in 0..3 {
            send(
                &tp,
                &t,
                0,
                &crate::backup::rec(0, 1_700_000_000_000 + i, None, Some(b"gone"), &[]),
            );
        }
        tp.abort_transaction(Duration::from_secs(30)).unwrap();
    };

    let (code, _, text) = backup(&prefix, &subject, &path("base.kar"), None);
    assert_eq!(code, Some(0), "{text}");
    aborted();
    let (code, _, text) = backup(&prefix, &subject, &path("m1.kar"), Some(&path("base.kar")));
    assert_eq!(code, Some(0), "{text}");
    common::fill(&t, 1, 5, 20).await;
    let (code, _, text) = backup(&prefix, &subject, &path("m2.kar"), Some(&path("m1.kar")));
    assert_eq!(code, Some(0), "{text}");
    aborted();
    let (code, _, text) = backup(&prefix, &subject, &path("m3.kar"), Some(&path("m2.kar")));
    assert_eq!(code, Some(0), "{text}");
    let m1 = Archive::open(path("m1.kar")).unwrap();
    let e = m1.manifest().partition(&t, 0).unwrap();
    assert_eq!(
        (e.start_offset, e.end_offset, e.records),
        (Some(10), Some(14), 0)
    );

    let out = tempfile::tempdir().unwrap();
    let c = out.path().join("c.kar");
    let (code, _, text) = common::kar_cli(
        &[
            "consolidate",
            dir.path().to_str().unwrap(),
            "--out",
            c.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    let (code, _, text) = common::kar_cli(&["verify", c.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "no hole: {text}");
    let a = Archive::open(&c).unwrap();
    let e = a.manifest().partition(&t, 0).unwrap();
    let end = common::end_offsets(&t, 1).await[0];
    assert_eq!(
        (e.start_offset, e.end_offset, e.records, e.complete),
        (Some(0), Some(end), 15, true)
    );
    assert_eq!(read_records(&a, &t, 0), consume_all(&t, 1)[&0]);
}

/// A small archive written by the library: one record, made at `created_at_ms`, a member of
/// `parent`'s chain when given.
fn small(path: &std::path::Path, created_at_ms: i64, parent: Option<&Archive>) -> Archive {
    small_as(path, created_at_ms, parent, true)
}

/// Like [`small`]; not `whole`: a partial archive, its partition's range declared to 10 offsets
/// past its one record.
fn small_as(
    path: &std::path::Path,
    created_at_ms: i64,
    parent: Option<&Archive>,
    whole: bool,
) -> Archive {
    use kar::archive::writer::ChainLink;
    use kar::archive::{ArchiveWriter, WriterOptions};
    use kar::format::manifest::{ArchiveStatus, ParentRef};
    let chain = parent.map(|p| ChainLink {
        parent: ParentRef {
            archive_id: p.id().unwrap().hex(),
            root: hex(&p.root()),
            created_at_ms: p.manifest().created_at_ms,
            depth: p.manifest().parent.as_ref().map_or(1, |x| x.depth + 1),
        },
        stored_below: Default::default(),
    });
    let opts = WriterOptions {
        created_at_ms,
        chain,
        ..Default::default()
    };
    let mut w = ArchiveWriter::create(path, opts).unwrap();
    let start = parent.map_or(created_at_ms, |p| {
        p.manifest().partition("t", 0).unwrap().end_offset.unwrap()
    });
    let end = if whole { start + 1 } else { start + 11 };
    w.declare_partition("t", 0, start, end);
    w.append(
        "t",
        0,
        start,
        1,
        kar::format::chunk::TimestampType::CreateTime,
        None,
        Some(b"v"),
        std::iter::empty(),
    )
    .unwrap();
    let status = if whole {
        w.finish_partition("t", 0).unwrap();
        ArchiveStatus::Complete
    } else {
        w.flush_chunk("t", 0).unwrap();
        ArchiveStatus::Partial
    };
    let (out, _) = w.finish(status, vec![]).unwrap();
    kar::archive::writer::sync_file(out, path).unwrap();
    Archive::open(path).unwrap()
}

/// Retention keeps restore points and every archive their chains need; it removes the rest with
/// their detached signatures, and nothing while a kept point's chain is missing an archive.
#[test]
fn prune_keeps_what_kept_points_need() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let day = 86_400_000i64;
    let t0 = 1_764_000_000_000i64 - 1_764_000_000_000i64 % day;
    let f1 = small(&p("f1.kar"), t0 + 10 * 3_600_000, None);
    let f1a = small(&p("f1a.kar"), t0 + 18 * 3_600_000, Some(&f1));
    small(&p("f1b.kar"), t0 + day + 10 * 3_600_000, Some(&f1a));
    let f2 = small(&p("f2.kar"), t0 + 2 * day + 10 * 3_600_000, None);
    let f2a = small(&p("f2a.kar"), t0 + 2 * day + 18 * 3_600_000, Some(&f2));
    small(&p("f2b.kar"), t0 + 3 * day + 10 * 3_600_000, Some(&f2a));
    std::fs::write(p("f1.kar.minisig"), "a signature").unwrap();
    std::fs::write(p("notes.txt"), "not an archive").unwrap();
    let d = dir.path().to_str().unwrap();
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };

    let (code, r, text) = common::kar_cli(&["prune", d, "--keep-daily", "3", "--json"], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        r["removed"].as_array().unwrap().is_empty(),
        "day 2's f1b needs f1a and f1: {r}"
    );
    let (code, r, text) = common::kar_cli(
        &["prune", d, "--keep-daily", "2", "--dry-run", "--json"],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r["removed"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(names().len(), 8, "a dry run removes nothing");

    // f2b's chain misses f2a: nothing is removed.
    std::fs::rename(
        p("f2a.kar"),
        dir.path()
            .parent()
            .unwrap()
            .join(format!("{}-f2a.kar", std::process::id())),
    )
    .unwrap();
    let (code, r, text) = common::kar_cli(&["prune", d, "--keep-last", "1", "--json"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(r["refused"], true, "{r}");
    assert_eq!(names().len(), 7);
    std::fs::rename(
        dir.path()
            .parent()
            .unwrap()
            .join(format!("{}-f2a.kar", std::process::id())),
        p("f2a.kar"),
    )
    .unwrap();

    let (code, r, text) = common::kar_cli(&["prune", d, "--keep-last", "1", "--json"], &[]);
    assert_eq!(code, Some(0), "{text}");
    let why: Vec<String> = r["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["why"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(why.len(), 3, "f2b and the two it needs: {r}");
    assert_eq!(names(), ["f2.kar", "f2a.kar", "f2b.kar", "notes.txt"]);
}

/// A partial newest member (a partition it did not get whole) makes the chain not whole, and
/// consolidated, that partition is not complete either: nothing claims offsets nobody read. An
/// unfinished member among the files is a problem, not a file left out unsaid.
#[test]
fn a_partial_or_unfinished_member_is_not_taken_for_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let base = small(&p("base.kar"), 1_000, None);
    let m1 = small(&p("m1.kar"), 2_000, Some(&base));
    small_as(&p("m2.kar"), 3_000, Some(&m1), false);
    let d = dir.path().to_str().unwrap();
    let (code, r, text) = common::kar_cli(&["chain", d, "--json"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(r["incomplete"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");

    let out = tempfile::tempdir().unwrap();
    let c = out.path().join("c.kar");
    let (code, r, text) = common::kar_cli(
        &["consolidate", d, "--out", c.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(r["status"], "partial", "{r}");
    let a = Archive::open(&c).unwrap();
    let e = a.manifest().partition("t", 0).unwrap();
    assert!(!e.complete, "{e:?}");
    assert_eq!((e.records, e.end_offset), (3, Some(1_000 + 3 + 10)));
    let (code, _, text) = common::kar_cli(&["verify", c.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "a partial archive is intact: {text}");
    let covered = a
        .chunks_of("t", 0)
        .unwrap()
        .iter()
        .map(|c| c.covers_to)
        .max();
    assert_eq!(
        covered,
        Some(1_000 + 3),
        "no chunk claims the offsets nobody read"
    );

    // An unfinished member (killed before its footer) is named, and nothing is consolidated.
    let bytes = std::fs::read(p("m2.kar")).unwrap();
    std::fs::write(p("m3.kar"), &bytes[..bytes.len() / 2]).unwrap();
    let (code, r, text) = common::kar_cli(&["verify", "--chain", d, "--json"], &[]);
    assert_eq!(code, Some(1), "{text}");
    let problems = r["problems"].to_string();
    assert!(problems.contains("m3.kar: does not open"), "{r}");
    let c2 = out.path().join("c2.kar");
    let (code, _, text) = common::kar_cli(&["consolidate", d, "--out", c2.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(!c2.exists());
    // Nor does prune remove anything while it cannot tell what the unfinished file needs.
    let (code, r, text) = common::kar_cli(&["prune", d, "--keep-last", "1", "--json"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(r["refused"], true, "{r}");
    assert!(p("base.kar").exists());
}
