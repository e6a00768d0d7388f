//! `kar restore` against the real broker and both registries: the drills (IDs rewritten, IDs
//! kept), topic re-creation, renames, point-in-time cuts, group offsets on a compacted topic, a
//! killed restore that resumes without duplicates, a dry run that writes nothing, and a corrupted
//! chunk that stops its partition.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kar::archive::{Archive, WriterOptions};
use kar::backup::{BackupOptions, backup};
use kar::kafka::KafkaConnection;
use kar::registry::client::RegistrySettings;
use kar::registry::snapshot::SubjectFilter;
use kar::registry::wire;
use kar::restore::{PreflightCheck, RestoreOptions, SchemaIds, restore};
use reqwest::Method;
use serde_json::{Value, json};

use crate::archive::{Rec, read_records};
use crate::common::{self, Registry, consume_all, producer, send};

pub(crate) fn rec(
    ts: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: &[(&str, Option<&[u8]>)],
) -> Rec {
    Rec {
        offset: 0,
        timestamp: ts,
        ts_type: kar::format::chunk::TimestampType::CreateTime,
        key,
        value,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

pub(crate) fn wire_value(id: u32, payload: &[u8]) -> Vec<u8> {
    [&wire::header(id)[..], payload].concat()
}

/// Backs up `topics` and the source registry's subjects under `prefix` into a new archive.
pub(crate) async fn backup_to(
    dir: &std::path::Path,
    topics: &str,
    prefix: Option<&str>,
) -> std::path::PathBuf {
    let out = dir.join("drill.kar");
    let mut o = BackupOptions::new(KafkaConnection::plaintext(common::bootstrap()), &out);
    o.topics = vec![topics.to_string()];
    o.writer = WriterOptions {
        chunk_target_bytes: 16 * 1024,
        ..Default::default()
    };
    if let Some(p) = prefix {
        o.registry = Some(RegistrySettings::new(common::source_registry()));
        o.subjects = SubjectFilter {
            include: vec![format!("{p}-.*")],
            exclude: vec![],
        };
        o.groups = Some(format!("{p}-.*"));
    }
    let r = tokio::task::spawn_blocking(move || backup(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, kar::format::manifest::ArchiveStatus::Complete);
    out
}

/// A restore of `archive` into the local broker with `topic` renamed to `to` and its state in
/// `state`; with `ids`, schemas go to the target registry with those ID semantics.
pub(crate) fn restore_to(
    archive: &std::path::Path,
    topic: &str,
    to: &str,
    state: &std::path::Path,
    ids: Option<SchemaIds>,
) -> RestoreOptions {
    let mut o = RestoreOptions::new(archive, KafkaConnection::plaintext(common::bootstrap()));
    if let Some(ids) = ids {
        o.registry = Some(RegistrySettings::new(common::target_registry()));
        o.schema_ids = ids;
    }
    o.map = BTreeMap::from([(topic.to_string(), to.to_string())]);
    std::fs::create_dir_all(state).unwrap();
    o.state_dir = Some(state.to_path_buf());
    o
}

pub(crate) async fn run_restore(o: RestoreOptions) -> kar::restore::RestoreReport {
    tokio::task::spawn_blocking(move || restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("restore: {e}"))
}

/// Registers, on the source, Avro Money and Address, an Order referencing both, and a JSON
/// Schema subject. Returns subject → id.
async fn seed_schemas(reg: &Registry, p: &str) -> BTreeMap<String, u32> {
    let mut ids = BTreeMap::new();
    let money = format!("{p}-common-money-value");
    let address = format!("{p}-common-address-value");
    ids.insert(money.clone(), reg.register(&money, json!({"schema": r#"{"type":"record","name":"Money","namespace":"kar.d","fields":[{"name":"units","type":"long"}]}"#})).await as u32);
    ids.insert(address.clone(), reg.register(&address, json!({"schema": r#"{"type":"record","name":"Address","namespace":"kar.d","fields":[{"name":"city","type":"string"}]}"#})).await as u32);
    let orders = format!("{p}-orders-value");
    let refs = json!([{"name": "kar.d.Money", "subject": money, "version": 1}, {"name": "kar.d.Address", "subject": address, "version": 1}]);
    ids.insert(
        orders.clone(),
        reg.register(&orders, json!({"schema": r#"{"type":"record","name":"Order","namespace":"kar.d","fields":[{"name":"total","type":"kar.d.Money"},{"name":"to","type":"kar.d.Address"}]}"#, "references": refs}))
            .await as u32,
    );
    let key = format!("{p}-orders-key");
    ids.insert(key.clone(), reg.register(&key, json!({"schemaType": "JSON", "schema": r#"{"type":"object","properties":{"order":{"type":"string"}}}"#})).await as u32);
    ids
}

/// Makes every given ID taken on the target registry by an unrelated schema.
async fn occupy(target: &Registry, ids: impl IntoIterator<Item = u32>) {
    for id in ids {
        let (status, _) = target
            .call(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await;
        if status == 200 {
            continue;
        }
        let subject = format!("{}-value", common::unique("squatter"));
        target
            .ok(
                Method::PUT,
                &format!("/mode/{subject}"),
                Some(json!({"mode": "IMPORT"})),
            )
            .await;
        let schema = format!(
            r#"{{"type":"record","name":"Squatter{id}","fields":[{{"name":"x","type":"int"}}]}}"#
        );
        target
            .register(&subject, json!({"schema": schema, "id": id, "version": 1}))
            .await;
        target
            .ok(
                Method::PUT,
                &format!("/mode/{subject}"),
                Some(json!({"mode": "READWRITE"})),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drill_with_rewritten_ids_makes_every_message_readable_on_the_target() {
    let p = common::unique("drill");
    let source = Registry::source();
    let target = Registry::target();
    let ids = seed_schemas(&source, &p).await;
    let order_id = ids[&format!("{p}-orders-value")];
    let key_id = ids[&format!("{p}-orders-key")];
    let unknown_id = 987_654_321u32;

    let topic = format!("{p}-orders");
    common::create_topic(&topic, 2, &[("retention.ms", "604800000")]).await;
    let prod = producer(&[]);
    // Recent timestamps: the topic keeps records 7 days, and the broker's retention check (every
    // 5 minutes) would delete older ones, here or on the target, in the middle of the test.
    let base = now_ms() - 60_000;
    for i in 0..300i64 {
        let part = (i % 2) as i32;
        let r = match i % 10 {
            3 => rec(base + i, Some(wire_value(key_id, b"k")), None, &[]), // tombstone
            7 => rec(
                base + i,
                None,
                Some(wire_value(unknown_id, format!("unknown-{i}").as_bytes())),
                &[("x", None)],
            ),
            8 => rec(
                base + i,
                Some(b"plain".to_vec()),
                Some(b"not wire format".to_vec()),
                &[],
            ),
            _ => rec(
                base + i,
                Some(wire_value(
                    key_id,
                    format!("{{\"order\":\"o{i}\"}}").as_bytes(),
                )),
                Some(wire_value(order_id, format!("avro-bytes-{i}").as_bytes())),
                &[("trace", Some(b"t")), ("trace", None)],
            ),
        };
        send(&prod, &topic, part, &r);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;

    // Every source ID is taken on the target by something else, so IDs must change.
    occupy(&target, ids.values().copied()).await;

    let restored = format!("{p}-restored");
    let o = restore_to(
        &archive,
        &topic,
        &restored,
        dir.path(),
        Some(SchemaIds::Rewrite),
    );
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);
    for (s, t) in &report.id_map {
        assert_ne!(
            s, t,
            "source ID {s} was taken on the target, so it must map elsewhere"
        );
    }
    assert_eq!(report.id_map.len(), 4);

    let src = consume_all(&topic, 2);
    let dst = consume_all(&restored, 2);
    let mut schema_of_target: BTreeMap<u32, Value> = BTreeMap::new();
    let (mut rewritten, mut unknown) = (0, 0);
    for part in 0..2 {
        assert_eq!(dst[&part].len(), src[&part].len(), "partition {part}");
        for (s, d) in src[&part].iter().zip(&dst[&part]) {
            assert_eq!(
                (d.timestamp, d.ts_type, &d.headers),
                (s.timestamp, s.ts_type, &s.headers),
                "offset {}",
                s.offset
            );
            for (sf, df) in [(&s.key, &d.key), (&s.value, &d.value)] {
                match (sf, df) {
                    (None, None) => {}
                    (Some(sb), Some(db)) => match wire::schema_id(sb) {
                        Some(sid) if ids.values().any(|v| *v == sid) => {
                            assert_eq!(sb[5..], db[5..], "payload after the prefix is unchanged");
                            let tid = wire::schema_id(db).unwrap();
                            assert_eq!(tid, report.id_map[&sid]);
                            // The target ID resolves, on the target registry, to the source schema.
                            if let std::collections::btree_map::Entry::Vacant(e) =
                                schema_of_target.entry(tid)
                            {
                                e.insert(target.get(&format!("/schemas/ids/{tid}")).await);
                            }
                            let want = source.get(&format!("/schemas/ids/{sid}")).await;
                            assert_eq!(
                                schema_of_target[&tid]["schema"], want["schema"],
                                "ID {sid} -> {tid}"
                            );
                            rewritten += 1;
                        }
                        Some(_) => {
                            assert_eq!(sb, db, "an ID the archive does not hold is left alone");
                            unknown += 1;
                        }
                        None => assert_eq!(sb, db),
                    },
                    other => panic!("null/non-null changed at offset {}: {other:?}", s.offset),
                }
            }
        }
    }
    assert!(
        rewritten > 400 && unknown == 30,
        "rewritten {rewritten}, unknown {unknown}"
    );
    let counted: u64 = report.partitions.iter().map(|p| p.unknown_ids).sum();
    assert_eq!(counted, 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drill_with_kept_ids_reproduces_ids_versions_configs_and_modes() {
    let p = common::unique("keep");
    let source = Registry::source();
    let target = Registry::target();
    // Source schemas with explicit IDs no other test uses, so they are free on the target, as
    // in a restore to an empty registry.
    // (Apart from each other: a registry gives a schema registered without an ID the highest
    // ID + 1, so other tests' schemas land right after any of ours.)
    let ids: Vec<u32> = (0..3).map(|_| common::unique_id() as u32).collect();
    let money = format!("{p}-money-value");
    let orders = format!("{p}-orders-value");
    for (subject, id, version, schema, refs) in [
        (
            &money,
            ids[0],
            1,
            r#"{"type":"record","name":"M","namespace":"kar.k","fields":[{"name":"u","type":"long"}]}"#,
            json!([]),
        ),
        (
            &money,
            ids[1],
            2,
            r#"{"type":"record","name":"M","namespace":"kar.k","fields":[{"name":"u","type":"long"},{"name":"c","type":"string","default":"EUR"}]}"#,
            json!([]),
        ),
        (
            &orders,
            ids[2],
            1,
            r#"{"type":"record","name":"O","namespace":"kar.k","fields":[{"name":"t","type":"kar.k.M"}]}"#,
            json!([{"name": "kar.k.M", "subject": money, "version": 2}]),
        ),
    ] {
        source
            .ok(
                Method::PUT,
                &format!("/mode/{subject}"),
                Some(json!({"mode": "IMPORT"})),
            )
            .await;
        source
            .register(
                subject,
                json!({"schema": schema, "id": id, "version": version, "references": refs}),
            )
            .await;
    }
    source
        .ok(
            Method::PUT,
            &format!("/mode/{money}"),
            Some(json!({"mode": "READWRITE"})),
        )
        .await;
    source
        .ok(
            Method::PUT,
            &format!("/mode/{orders}"),
            Some(json!({"mode": "READONLY"})),
        )
        .await;
    source
        .ok(
            Method::PUT,
            &format!("/config/{money}"),
            Some(json!({"compatibility": "FULL_TRANSITIVE"})),
        )
        .await;

    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    send(
        &producer(&[]),
        &topic,
        0,
        &rec(1, None, Some(wire_value(ids[2], b"x")), &[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;

    let o = restore_to(
        &archive,
        &topic,
        &format!("{topic}-restored"),
        dir.path(),
        Some(SchemaIds::Keep),
    );
    let report = run_restore(o).await;
    assert!(report.ok);
    for (s, t) in &report.id_map {
        assert_eq!(s, t);
    }
    for subject in [&money, &orders] {
        for v in source
            .get(&format!("/subjects/{subject}/versions"))
            .await
            .as_array()
            .unwrap()
        {
            let want = source
                .get(&format!("/subjects/{subject}/versions/{v}"))
                .await;
            let got = target
                .get(&format!("/subjects/{subject}/versions/{v}"))
                .await;
            assert_eq!(
                (
                    &got["id"],
                    &got["version"],
                    &got["schema"],
                    &got["references"]
                ),
                (
                    &want["id"],
                    &want["version"],
                    &want["schema"],
                    &want["references"]
                ),
                "{subject} v{v}"
            );
        }
        for (what, field) in [("mode", "mode"), ("config", "compatibilityLevel")] {
            let path = format!("/{what}/{subject}?defaultToGlobal=false");
            let got = target.call(Method::GET, &path, None).await.1[field].clone();
            let want = source.call(Method::GET, &path, None).await.1[field].clone();
            assert_eq!(got, want, "{subject} {what}");
        }
    }
    assert_eq!(
        target
            .get(&format!("/mode/{orders}?defaultToGlobal=false"))
            .await["mode"],
        "READONLY"
    );

    // A second restore with kept IDs into the same registry finds everything there already.
    let again = {
        let mut o = restore_to(
            &archive,
            &topic,
            &format!("{topic}-again"),
            &dir.path().join("second"),
            Some(SchemaIds::Keep),
        );
        o.dry_run = true;
        run_restore(o).await
    };
    assert!(
        again
            .plan
            .schemas
            .iter()
            .all(|s| s.action.name() == "exists"),
        "{:?}",
        again.plan.schemas
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keeping_ids_that_are_taken_stops_before_any_write_and_names_the_clash() {
    let p = common::unique("clash");
    let source = Registry::source();
    let ids = seed_schemas(&source, &p).await;
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    send(
        &producer(&[]),
        &topic,
        0,
        &rec(1, None, Some(b"v".to_vec()), &[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    occupy(&Registry::target(), ids.values().copied()).await;
    let restored = format!("{p}-restored");
    let o = restore_to(
        &archive,
        &topic,
        &restored,
        dir.path(),
        Some(SchemaIds::Keep),
    );
    let err = tokio::task::spawn_blocking(move || restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    let some_id = ids.values().next().unwrap();
    assert!(
        err.contains("clash") && err.contains(&format!("schema ID {some_id}")) && err.contains(&p),
        "{err}"
    );
    assert!(
        !common::admin_topics().await.contains(&restored),
        "no topic was created"
    );
    for s in ids.keys() {
        let (status, _) = Registry::target()
            .call(Method::GET, &format!("/subjects/{s}/versions"), None)
            .await;
        assert_eq!(status, 404, "{s} was not registered");
    }
}

/// A target topic already in use: refused without `--append`, nothing written; with it, the
/// topic keeps its own records and then holds every archived record once, the archived group's
/// offset pointing at the same record after them; the same restore run again adds nothing.
/// Groups are committed several at a time: each of 40 comes back on the target with its own
/// offset and metadata on each partition, and the report lists them in the archive's order.
#[tokio::test(flavor = "multi_thread")]
async fn forty_groups_come_back_each_with_its_own_offsets() {
    let p = common::unique("groups");
    let topic = format!("{p}-src");
    common::create_topic(&topic, 2, &[]).await;
    common::fill(&topic, 2, 400, 10).await;
    let want: Vec<(String, i64, i64)> = (0..40)
        .map(|i| (format!("{p}-g{i:02}"), i * 5, 199 - i * 3))
        .collect();
    for (g, o0, o1) in &want {
        common::commit(g, &[(&topic, 0, *o0, g), (&topic, 1, *o1, "")]);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;

    let renamed = format!("{p}-dst");
    let report = run_restore(restore_to(&archive, &topic, &renamed, dir.path(), None)).await;
    assert!(report.ok, "{:?}", report.partitions);
    let names: Vec<&str> = report.groups.iter().map(|g| g.group.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|(g, _, _)| g.as_str()).collect();
    assert_eq!(names, want_names);
    // The source offsets are contiguous from 0 in a new topic, so each target offset equals the
    // source's; the metadata is the group's name on partition 0 and empty on partition 1.
    for (g, o0, o1) in &want {
        assert_eq!(
            common::committed(g, &renamed, 0).await,
            Some((*o0, g.clone())),
            "{g} partition 0"
        );
        assert_eq!(
            common::committed(g, &renamed, 1).await,
            Some((*o1, String::new())),
            "{g} partition 1"
        );
    }
}

/// A group with a member on the target is left as it is, named with the reason, while the
/// groups committed at the same time beside it are committed; the restore is still whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_in_use_on_the_target_is_left_and_the_others_beside_it_committed() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let p = common::unique("busygroup");
    let topic = format!("{p}-src");
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 50, 10).await;
    let groups: Vec<String> = (0..3).map(|i| format!("{p}-g{i}")).collect();
    for (i, g) in groups.iter().enumerate() {
        common::commit(g, &[(&topic, 0, 10 + i as i64, "")]);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;

    // The middle group gets a live member (subscribed to another topic) until the restore ends.
    let elsewhere = format!("{p}-elsewhere");
    common::create_topic(&elsewhere, 1, &[]).await;
    let busy = groups[1].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let member = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let c: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", common::bootstrap())
                .set("group.id", &busy)
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            c.subscribe(&[&elsewhere]).unwrap();
            let mut told = false;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = c.poll(Duration::from_millis(100));
                if !told && c.assignment().is_ok_and(|a| a.count() > 0) {
                    joined_tx.send(()).unwrap();
                    told = true;
                }
            }
        })
    };
    joined_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the member did not join its group in 60 s");

    let renamed = format!("{p}-dst");
    let report = run_restore(restore_to(&archive, &topic, &renamed, dir.path(), None)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    member.join().unwrap();
    assert!(report.ok, "{:?}", report.groups);
    let outcome = |g: &str| report.groups.iter().find(|o| o.group == g).unwrap();
    let left = outcome(&groups[1]);
    assert!(
        left.skipped.as_deref() == Some("the group has active members on the target")
            && !left.failed,
        "{left:?}"
    );
    assert_eq!(common::committed(&groups[1], &renamed, 0).await, None);
    for i in [0, 2] {
        assert!(
            outcome(&groups[i]).skipped.is_none(),
            "{:?}",
            outcome(&groups[i])
        );
        assert_eq!(
            common::committed(&groups[i], &renamed, 0).await,
            Some((10 + i as i64, String::new())),
            "{}",
            groups[i]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_in_use_is_refused_or_appended_to_once() {
    let p = common::unique("append");
    let topic = format!("{p}-src");
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 3_000, 50).await;
    let group = format!("{p}-g");
    common::commit(&group, &[(&topic, 0, 1_000, "")]);
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    let used = format!("{p}-used");
    common::create_topic(&used, 1, &[]).await;
    common::fill(&used, 1, 500, 10).await;
    let before = consume_all(&used, 1);

    let o = restore_to(&archive, &topic, &used, dir.path(), None);
    let e = tokio::task::spawn_blocking(move || restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already holds records") && e.contains("--append"),
        "{e}"
    );
    assert_eq!(common::Watermarks::uncommitted().ends(&used, 1), vec![500]);

    for run in 0..2 {
        let mut o = restore_to(&archive, &topic, &used, dir.path(), None);
        o.append = true;
        let report = run_restore(o).await;
        assert!(report.ok, "{:?}", report.partitions);
        assert_eq!(report.records_written, if run == 0 { 3_000 } else { 0 });
    }
    let got = consume_all(&used, 1);
    let want = read_records(&Archive::open(&archive).unwrap(), &topic, 0);
    assert_eq!(got[&0].len(), 500 + 3_000);
    assert_eq!(got[&0][..500], before[&0][..]);
    for (g, w) in got[&0][500..].iter().zip(&want) {
        assert_eq!((&g.value, g.timestamp), (&w.value, w.timestamp));
    }
    let (dst, _) = common::committed(&group, &used, 0).await.unwrap();
    assert_eq!(dst, got[&0][500 + 1_000].offset);

    // A backup of the restored topic leaves the restore's progress group out, unless asked.
    let progress = format!(
        "kar-restore.{}",
        Archive::open(&archive).unwrap().id().unwrap()
    );
    assert!(common::committed(&progress, &used, 0).await.is_some());
    for (groups, with_progress) in [(None, false), (Some("kar-restore\\..*"), true)] {
        let out = dir.path().join(format!("again-{with_progress}.kar"));
        let mut o = BackupOptions::new(KafkaConnection::plaintext(common::bootstrap()), &out);
        o.topics = vec![used.clone()];
        o.groups = groups.map(str::to_string);
        tokio::task::spawn_blocking(move || backup(common::runtime(), &o))
            .await
            .unwrap()
            .unwrap();
        let a = Archive::open(&out).unwrap();
        let m = a
            .manifest()
            .metadata
            .iter()
            .find(|m| m.kind == "consumer-groups")
            .unwrap();
        let doc: Value = serde_json::from_slice(
            &a.read_content(&kar::format::parse_hex(&m.id).unwrap())
                .unwrap(),
        )
        .unwrap();
        let names: Vec<&str> = doc["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["group"].as_str().unwrap())
            .collect();
        assert_eq!(
            names.contains(&progress.as_str()),
            with_progress,
            "{names:?}"
        );
        assert_eq!(names.contains(&group.as_str()), !with_progress, "{names:?}");
    }
    // Restored elsewhere, an archived progress group is left out: it would say records are in.
    let elsewhere = format!("{p}-elsewhere");
    let again = dir.path().join("again-true.kar");
    let mut o = restore_to(&again, &used, &elsewhere, dir.path(), None);
    // Selections that take nothing are named.
    o.topics = vec![used.clone(), "kt-surely-no-such-topic".into()];
    o.groups = Some("kt-surely-no-such-group".into());
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);
    assert_eq!(report.records_written, 3_500);
    assert_eq!(
        report.plan.warnings,
        vec![
            "--topics \"kt-surely-no-such-topic\" matches no topic in the archive".to_string(),
            "--groups \"kt-surely-no-such-group\" matches no consumer group in the archive".into()
        ]
    );
    assert!(report.groups.iter().all(|g| g.group != progress));
    assert_eq!(common::committed(&progress, &elsewhere, 0).await, None);
}

/// A restore stopped (Ctrl-C) between two partitions reports the one it never began as not
/// restored, and is not OK; no group offset is committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_stopped_between_partitions_is_not_ok() {
    let p = common::unique("between");
    let topic = format!("{p}-t");
    common::create_topic(&topic, 2, &[]).await;
    // Partition 0 has records, partition 1 none (taken first: it finishes with nothing to do).
    common::fill(&topic, 1, 100, 10).await;
    let group = format!("{p}-g");
    common::commit(&group, &[(&topic, 0, 50, "")]);
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    let restored = format!("{p}-restored");
    let mut o = restore_to(&archive, &topic, &restored, dir.path(), None);
    o.concurrency = 1;
    o.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = run_restore(o).await;
    assert!(!report.ok);
    assert_eq!(report.partitions.len(), 2, "{:?}", report.partitions);
    let p0 = report.partitions.iter().find(|o| o.partition == 0).unwrap();
    assert!(
        p0.error.as_deref().unwrap_or("").contains("stopped"),
        "{p0:?}"
    );
    assert!(report.groups.is_empty());
    assert_eq!(common::committed(&group, &restored, 0).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_writes_nothing() {
    let p = common::unique("dry");
    let source = Registry::source();
    seed_schemas(&source, &p).await;
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    send(
        &producer(&[]),
        &topic,
        0,
        &rec(1, None, Some(b"v".to_vec()), &[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    let target = Registry::target();
    let subjects_before = target.get("/subjects").await;
    let restored = format!("{p}-restored");
    let out = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args([
            "restore",
            "--dry-run",
            "--json",
            "--schema-ids",
            "rewrite",
            "--bootstrap",
        ])
        .arg(common::bootstrap())
        .args([
            "--registry",
            &common::target_registry(),
            "--map",
            &format!("{topic}={restored}"),
            "--state",
        ])
        .arg(dir.path())
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["plan"]["topics"][0]["action"], "create");
    assert_eq!(report["plan"]["topics"][0]["records"], 1);
    assert_eq!(report["plan"]["schemas"].as_array().unwrap().len(), 4);
    assert_eq!(
        target.get("/subjects").await,
        subjects_before,
        "no subject registered"
    );
    assert!(
        !common::admin_topics().await.contains(&restored),
        "no topic created"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".restore-state")),
        "no state file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_come_back_with_configs_renamed_cut_at_a_time_and_groups_translated() {
    let p = common::unique("shape");
    let topic = format!("{p}-compacted");
    common::create_topic(
        &topic,
        3,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.001"),
            ("max.message.bytes", "2000000"),
        ],
    )
    .await;
    let prod = producer(&[]);
    let t = topic.clone();
    // A compacted topic with holes, so source and target offsets differ.
    let truth = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut i = 0i64;
        loop {
            for _ in 0..30 {
                let key = if i % 5 == 0 {
                    format!("once-{i}")
                } else {
                    format!("k{}", i % 2)
                };
                send(
                    &prod,
                    &t,
                    (i % 3) as i32,
                    &rec(
                        1_700_000_000_000 + i * 1000,
                        Some(key.into_bytes()),
                        Some(format!("v{i}").into_bytes()),
                        &[],
                    ),
                );
                i += 1;
            }
            std::thread::sleep(Duration::from_millis(300));
            let truth = consume_all(&t, 3);
            if truth
                .values()
                .all(|rs| rs.windows(2).any(|w| w[1].offset - w[0].offset > 1))
            {
                return truth;
            }
            assert!(Instant::now() < deadline, "no compaction in 90 s");
        }
    })
    .await
    .unwrap();
    // A group committed in the middle of partition 0, at an offset the cleaner removed.
    let p0: Vec<i64> = truth[&0].iter().map(|r| r.offset).collect();
    let hole = p0
        .windows(2)
        .find(|w| w[1] - w[0] > 1)
        .map(|w| w[0] + 1)
        .unwrap();
    let group = format!("{p}-group");
    common::commit(&group, &[(&topic, 0, hole, "meta"), (&topic, 1, 0, "")]);

    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    let a = Archive::open(&archive).unwrap();
    let archived: BTreeMap<i32, Vec<Rec>> = (0..3)
        .map(|part| (part, read_records(&a, &topic, part)))
        .collect();

    let renamed = format!("{p}-renamed");
    let cut = archived[&0][archived[&0].len() / 2].timestamp;
    let mut o = restore_to(&archive, &topic, &renamed, dir.path(), None);
    o.until = Some(cut);
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);

    // Configs and partition count re-created under the new name.
    let md = common::describe_topic_configs(&renamed).await;
    assert_eq!(
        md.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    assert_eq!(
        md.get("max.message.bytes").map(String::as_str),
        Some("2000000")
    );
    let restored = consume_all(&renamed, 3);
    for part in 0..3 {
        // The exact --until rule: each partition's records up to, not including, the first one
        // stamped after the cut.
        let want: Vec<&Rec> = archived[&part]
            .iter()
            .take_while(|r| r.timestamp <= cut)
            .collect();
        let got = &restored[&part];
        assert_eq!(got.len(), want.len(), "partition {part}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (&g.key, &g.value, g.timestamp),
                (&w.key, &w.value, w.timestamp)
            );
        }
    }
    // The group's offset is the first restored record at or after the committed one.
    let g = report.groups.iter().find(|g| g.group == group).unwrap();
    assert!(g.skipped.is_none());
    let kar::restore::TranslatedOffset {
        source: src,
        target: dst,
        ..
    } = g
        .offsets
        .iter()
        .find(|o| o.topic == renamed && o.partition == 0)
        .unwrap()
        .clone();
    assert_eq!(src, hole);
    let expect = archived[&0]
        .iter()
        .take_while(|r| r.timestamp <= cut)
        .position(|r| r.offset >= hole)
        .unwrap_or(restored[&0].len());
    // Target offsets are not indexes (each transaction ends with a marker that takes an offset):
    // the offset is that of the same record on the target, or the end after the last one.
    match restored[&0].get(expect) {
        Some(r) => assert_eq!(dst, r.offset),
        None => assert_eq!(dst, restored[&0].last().map_or(0, |r| r.offset + 1)),
    }
    assert_eq!(
        common::committed(&group, &renamed, 0).await,
        Some((dst, "meta".to_string()))
    );
}

/// `topic` made with `partitions` and filled with `count` records (`pad` bytes of padding), then
/// backed up (no registry, no groups of its own) into a new folder: the folder and the archive.
async fn filled_archive(
    topic: &str,
    partitions: i32,
    count: i64,
    pad: usize,
) -> (tempfile::TempDir, std::path::PathBuf) {
    common::create_topic(topic, partitions, &[]).await;
    common::fill(topic, partitions, count, pad).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), topic, None).await;
    (dir, archive)
}

/// Sends `signal` (a name `kill` knows: STOP, CONT, INT) to a process.
fn signal(pid: u32, signal: &str) {
    assert!(
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Freezes (SIGSTOP) a running restore into `topic` at a moment when one of its partitions has
/// records of an open transaction in the log after something committed, and returns that
/// partition. A stop that lands between two transactions is undone and tried again.
async fn stop_inside_a_transaction(
    child: &mut std::process::Child,
    topic: &str,
    partitions: i32,
) -> i32 {
    let (committed, appended) = (common::Watermarks::new(), common::Watermarks::uncommitted());
    let open = |p: Option<i32>| {
        let (c, a) = (
            committed.ends(topic, partitions),
            appended.ends(topic, partitions),
        );
        (0..partitions)
            .filter(|q| p.is_none_or(|p| p == *q))
            .find(|&q| c[q as usize] > 0 && a[q as usize] > c[q as usize])
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore finished before it could be stopped inside a transaction"
        );
        assert!(
            Instant::now() < deadline,
            "no open transaction seen in 90 s"
        );
        if let Some(p) = open(None) {
            signal(child.id(), "STOP");
            // Requests already on their way (a commit among them) land; then look again.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if open(Some(p)).is_some() {
                return p;
            }
            signal(child.id(), "CONT");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The partition entries of a `kar restore --json` report, by partition number.
fn partitions_of(report: &Value) -> BTreeMap<i64, Value> {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["partition"].as_i64().unwrap(), p.clone()))
        .collect()
}

/// `restored` holds, for read_committed consumers, exactly the archived records of `topic`, once
/// each, in order.
fn assert_restored_exactly(archive: &std::path::Path, topic: &str, restored: &str, parts: i32) {
    let a = Archive::open(archive).unwrap();
    let got = consume_all(restored, parts);
    for part in 0..parts {
        let want = read_records(&a, topic, part);
        assert_eq!(
            got[&part].len(),
            want.len(),
            "partition {part}: every record once"
        );
        for (i, (g, w)) in got[&part].iter().zip(&want).enumerate() {
            assert_eq!(
                (&g.key, &g.value, g.timestamp, &g.headers),
                (&w.key, &w.value, w.timestamp, &w.headers),
                "partition {part}, record {i}"
            );
        }
    }
}

/// `kar restore --json --concurrency 1 --transaction-size 1` of `archive`'s `topic` into
/// `restored`, with its state in `state`; stdout (the report) piped.
fn restore_cmd(
    archive: &std::path::Path,
    topic: &str,
    restored: &str,
    state: &std::path::Path,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kar"));
    c.args(["restore", "--json", "--concurrency", "1"])
        .args(["--transaction-size", "1", "--bootstrap"])
        .arg(common::bootstrap())
        .args(["--map", &format!("{topic}={restored}"), "--state"])
        .arg(state)
        .arg(archive)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

fn report_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A restore killed while a transaction holds records of a partition (frozen there first, so the
/// kill lands inside it) resumes from what was committed: read_committed consumers see every
/// record once, in order; the aborted records stay in the log, where read_uncommitted consumers
/// see them, and the resumed run names their offsets; consumer groups committed in the middle
/// and at the end of the partitions point at the same records on the target as at the source.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_inside_a_transaction_resumes_with_every_record_once() {
    let p = common::unique("resume");
    let topic = format!("{p}-big");
    common::create_topic(&topic, 2, &[]).await;
    common::fill(&topic, 2, 150_000, 200).await;
    let group = format!("{p}-late");
    common::commit(
        &group,
        &[(&topic, 0, 70_000, "m0"), (&topic, 1, 75_000, "m1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    let restored = format!("{p}-restored");

    let mut child = restore_cmd(&archive, &topic, &restored, dir.path())
        .spawn()
        .unwrap();
    let part = stop_inside_a_transaction(&mut child, &restored, 2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = common::Watermarks::new().ends(&restored, 2)[part as usize];
    let appended = common::Watermarks::uncommitted().ends(&restored, 2)[part as usize];
    assert!(
        appended > committed && committed > 0,
        "killed inside a transaction of partition {part}: {committed} committed, {appended} appended"
    );

    let out = restore_cmd(&archive, &topic, &restored, dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_restored_exactly(&archive, &topic, &restored, 2);

    // The killed transaction's records are still in the log, aborted, where the report says.
    let entry = &partitions_of(&report)[&i64::from(part)];
    let from = entry["aborted"][0].as_i64().unwrap();
    let to = entry["aborted"][1].as_i64().unwrap();
    assert!(from < to && to <= appended + 1, "{entry}");
    assert!(entry["written"].as_u64().unwrap() < 75_000, "{entry}");
    let visible = consume_all(&restored, 2);
    assert!(
        visible[&part]
            .iter()
            .all(|r| r.offset < from || r.offset >= to)
    );
    let raw = common::consume_all_as(&restored, 2, "read_uncommitted");
    let aborted = raw[&part]
        .iter()
        .filter(|r| (from..to).contains(&r.offset))
        .count();
    assert!(aborted > 0, "the aborted records are in the log");
    assert_eq!(raw[&part].len(), visible[&part].len() + aborted);

    // Group offsets: the record at source offset 70,000 of partition 0, the end of partition 1.
    let a = Archive::open(&archive).unwrap();
    let (dst, meta) = common::committed(&group, &restored, 0).await.unwrap();
    assert_eq!(meta, "m0");
    let at = visible[&0]
        .iter()
        .find(|r| r.offset == dst)
        .expect("the group's offset is a committed record");
    assert_eq!(at.value, read_records(&a, &topic, 0)[70_000].value);
    let (dst, meta) = common::committed(&group, &restored, 1).await.unwrap();
    assert_eq!(meta, "m1");
    assert_eq!(dst, visible[&1].last().unwrap().offset + 1);

    // An application writes to the restored topic; the restore run again leaves the whole
    // partitions alone and says all is in.
    let app = producer(&[]);
    send(
        &app,
        &restored,
        0,
        &rec(now_ms(), None, Some(b"new".to_vec()), &[]),
    );
    rdkafka::producer::Producer::flush(&app, Duration::from_secs(30)).unwrap();
    let again = restore_cmd(&archive, &topic, &restored, dir.path())
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(report_of(&again)["records_written"], 0);
    let after = common::Watermarks::uncommitted().ends(&restored, 2);
    assert!(
        after[0] > visible[&0].last().unwrap().offset + 2,
        "the new record is there"
    );
}

/// Now, in ms since the epoch: records stamped far in the future are refused by Kafka 4.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A run killed between adding its progress to a transaction and committing it leaves that
/// offset commit pending (until the transaction times out, minutes later), and a read of the
/// committed progress that waits for stable offsets waits for it. Played here by a transactional
/// producer of the test, with the restore's own transactional ID and progress group, left open:
/// the next run still plans, takes the partition (aborting that transaction) and restores
/// every record once.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_while_committing_its_progress_does_not_hold_up_the_next() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let p = common::unique("pending");
    let topic = format!("{p}-t");
    let (dir, archive) = filled_archive(&topic, 1, 2_000, 50).await;
    let restored = format!("{p}-restored");
    common::create_topic(&restored, 1, &[]).await;
    let group = format!(
        "kar-restore.{}",
        Archive::open(&archive).unwrap().id().unwrap()
    );
    let killed: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .set("transactional.id", format!("kar-restore.{restored}.0"))
        .set("transaction.timeout.ms", "300000")
        .create()
        .unwrap();
    killed.init_transactions(Duration::from_secs(30)).unwrap();
    killed.begin_transaction().unwrap();
    killed
        .send(
            BaseRecord::<[u8], [u8]>::to(&restored)
                .partition(0)
                .payload(b"half"),
        )
        .unwrap();
    killed.flush(Duration::from_secs(30)).unwrap();
    let cgm = ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .set("group.id", &group)
        .create::<BaseConsumer>()
        .unwrap()
        .group_metadata()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&restored, 0, Offset::Offset(1))
        .unwrap();
    killed
        .send_offsets_to_transaction(&tpl, &cgm, Duration::from_secs(30))
        .unwrap();
    // Neither committed nor aborted: the process "dies" here.
    std::mem::forget(killed);

    let started = Instant::now();
    let report = run_restore(restore_to(&archive, &topic, &restored, dir.path(), None)).await;
    assert!(report.ok, "{:?}", report.partitions);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_restored_exactly(&archive, &topic, &restored, 1);
    let raw = common::consume_all_as(&restored, 1, "read_uncommitted");
    assert_eq!(
        raw[&0][0].value.as_deref(),
        Some(&b"half"[..]),
        "aborted, still in the log"
    );
}

/// Two runs of the same restore at once, each with its own state folder (two operators, or a job
/// retried while the first still runs): Kafka fences all but one writer per partition, so every
/// record is committed once, by one of them; a run that lost a partition to the other says so and
/// exits 1; a third run finds everything in and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn two_restores_at_once_commit_every_record_once() {
    let p = common::unique("twice");
    let topic = format!("{p}-t");
    let (dir, archive) = filled_archive(&topic, 2, 60_000, 500).await;
    let restored = format!("{p}-restored");
    let states = [dir.path().join("a"), dir.path().join("b")];
    let runs: Vec<std::process::Child> = states
        .iter()
        .map(|s| {
            std::fs::create_dir_all(s).unwrap();
            restore_cmd(&archive, &topic, &restored, s).spawn().unwrap()
        })
        .collect();
    let outs: Vec<std::process::Output> = runs
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut written = [0u64; 2];
    let mut fenced = 0;
    for out in &outs {
        let report = report_of(out);
        // kar says what happened, in the report; librdkafka's own log of the fencing (errors by
        // its count) stays off stderr.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("librdkafka"), "{stderr}");
        let failed = partitions_of(&report)
            .values()
            .filter(|e| !e["error"].is_null())
            .count();
        assert_eq!(
            out.status.code(),
            Some(if failed > 0 { 1 } else { 0 }),
            "{report}"
        );
        for (part, e) in partitions_of(&report) {
            written[part as usize] += e["written"].as_u64().unwrap();
            if !e["error"].is_null() {
                assert_eq!(e["fenced"], true, "{e}");
                assert!(
                    e["error"]
                        .as_str()
                        .unwrap()
                        .contains("another restore took over"),
                    "{e}"
                );
                fenced += 1;
            }
        }
    }
    assert_eq!(
        written,
        [30_000, 30_000],
        "each record committed by one run"
    );
    eprintln!("two restores at once: {fenced} partition(s) taken over");
    assert_restored_exactly(&archive, &topic, &restored, 2);

    let third = restore_cmd(&archive, &topic, &restored, &states[0])
        .output()
        .unwrap();
    assert_eq!(third.status.code(), Some(0));
    for e in partitions_of(&report_of(&third)).values() {
        assert_eq!(e["written"], 0, "{e}");
    }
    assert_restored_exactly(&archive, &topic, &restored, 2);
}

/// A restore frozen inside a transaction (SIGSTOP: a hung job): a restore of another archive into
/// the same topic is refused before it writes; a second run of the same restore, with its own
/// state folder, does the work, fencing the first; the first, woken, writes nothing more, says
/// another restore took its partition over, and exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_restore_is_fenced_by_the_next_run_and_writes_nothing_after_waking() {
    let p = common::unique("zombie");
    let topic = format!("{p}-t");
    let (dir, archive) = filled_archive(&topic, 2, 100_000, 200).await;
    let restored = format!("{p}-restored");
    let states = [dir.path().join("a"), dir.path().join("b")];
    for s in &states {
        std::fs::create_dir_all(s).unwrap();
    }
    let mut first = restore_cmd(&archive, &topic, &restored, &states[0])
        .spawn()
        .unwrap();
    let part = stop_inside_a_transaction(&mut first, &restored, 2).await;

    // A restore of another archive into the same topic is refused before it writes anything.
    let other_topic = format!("{p}-other");
    common::create_topic(&other_topic, 2, &[]).await;
    common::fill(&other_topic, 2, 1_000, 10).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = backup_to(other_dir.path(), &other_topic, None).await;
    let appended = common::Watermarks::uncommitted().ends(&restored, 2);
    let refused = restore_cmd(&other, &other_topic, &restored, other_dir.path())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("already holds records"), "{why}");
    assert_eq!(
        common::Watermarks::uncommitted().ends(&restored, 2),
        appended
    );

    let second = restore_cmd(&archive, &topic, &restored, &states[1])
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_restored_exactly(&archive, &topic, &restored, 2);
    let appended = common::Watermarks::uncommitted().ends(&restored, 2);

    signal(first.id(), "CONT");
    let out = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the woken restore ends")
        .unwrap();
    let report = report_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let entry = &partitions_of(&report)[&i64::from(part)];
    assert_eq!(entry["fenced"], true, "{entry}");

    assert_eq!(
        common::Watermarks::uncommitted().ends(&restored, 2),
        appended,
        "nothing written after waking"
    );
    assert_restored_exactly(&archive, &topic, &restored, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_chunk_is_refused_before_any_write_or_with_quick_stops_its_partition() {
    let p = common::unique("corrupt");
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    let prod = producer(&[]);
    for i in 0..400i64 {
        send(
            &prod,
            &topic,
            0,
            &rec(
                i,
                None,
                Some(format!("value-{i}-{}", "z".repeat(100)).into_bytes()),
                &[],
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, None).await;
    let a = Archive::open(&archive).unwrap();
    let chunks = a.chunks_of(&topic, 0).unwrap();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let bad = &chunks[1];
    drop(a);
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[(bad.frame_offset + 96 + 10) as usize] ^= 0x40;
    std::fs::write(&archive, &bytes).unwrap();

    let restored = format!("{p}-restored");
    // By default pre-flight checks every chunk to restore: the damage is found before any write,
    // with the same words in a dry run and a real one.
    for dry_run in [true, false] {
        let mut o = restore_to(&archive, &topic, &restored, dir.path(), None);
        o.dry_run = dry_run;
        let err = tokio::task::spawn_blocking(move || restore(common::runtime(), &o))
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 damaged chunk(s)")
                && err.contains(&format!(
                    "offsets {}..={}",
                    bad.first_offset, bad.last_offset
                ))
                && err.contains("nothing was written"),
            "{err}"
        );
    }
    assert!(
        !common::admin_topics().await.contains(&restored),
        "no topic was created"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".restore-state")),
        "no state file was written"
    );

    // `--verify quick` checks chunks only as it restores them: the damaged one stops its
    // partition, nothing of it produced.
    let mut o = restore_to(&archive, &topic, &restored, dir.path(), None);
    o.verify = PreflightCheck::Quick;
    let report = run_restore(o).await;
    assert!(!report.ok);
    let err = report.partitions[0].error.clone().unwrap();
    assert!(
        err.contains(&format!("frame at offset {}", bad.frame_offset))
            && err.contains("nothing from this chunk was produced"),
        "{err}"
    );
    let got = consume_all(&restored, 1);
    assert_eq!(
        got[&0].len() as u32,
        chunks[0].record_count,
        "only the chunk before the damaged one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_during_the_schema_phase_resumes_to_the_same_result() {
    let p = common::unique("schemakill");
    let source = Registry::source();
    let target = Registry::target();
    let ids = seed_schemas(&source, &p).await;
    let order_id = ids[&format!("{p}-orders-value")];
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    let prod = producer(&[]);
    for i in 0..50 {
        send(
            &prod,
            &topic,
            0,
            &rec(
                i,
                None,
                Some(wire_value(order_id, format!("o{i}").as_bytes())),
                &[],
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    occupy(&target, ids.values().copied()).await;
    let restored = format!("{p}-restored");
    let cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kar"));
        // Two registry requests a second: the schema phase takes several seconds.
        c.args([
            "restore",
            "--json",
            "--schema-ids",
            "rewrite",
            "--registry-rate-limit",
            "2",
            "--bootstrap",
        ])
        .arg(common::bootstrap())
        .args([
            "--registry",
            &common::target_registry(),
            "--map",
            &format!("{topic}={restored}"),
            "--state",
        ])
        .arg(dir.path())
        .arg(&archive);
        c
    };
    let mut child = cmd().stdout(std::process::Stdio::null()).spawn().unwrap();
    let money = format!("{p}-common-money-value");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Kill once the first subject is registered on the target, before the records.
    loop {
        let (status, _) = target
            .call(Method::GET, &format!("/subjects/{money}/versions"), None)
            .await;
        if status == 200 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "restore finished before it could be killed"
        );
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        common::end_offsets(&restored, 1).await,
        vec![0],
        "killed before any record"
    );

    let out = cmd().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let map: BTreeMap<String, u32> = serde_json::from_value(report["id_map"].clone()).unwrap();
    assert_eq!(map.len(), 4, "{map:?}");
    for (s, t) in &map {
        let want = source.get(&format!("/schemas/ids/{s}")).await;
        let got = target.get(&format!("/schemas/ids/{t}")).await;
        assert_eq!(got["schema"], want["schema"], "{s} -> {t}");
    }
    // Each subject registered once on the target, whatever the kill interrupted.
    for s in ids.keys() {
        assert_eq!(
            target.get(&format!("/subjects/{s}/versions")).await,
            json!([1]),
            "{s}"
        );
    }
    let got = consume_all(&restored, 1);
    assert_eq!(got[&0].len(), 50);
    let t = map[&order_id.to_string()];
    assert!(
        got[&0]
            .iter()
            .all(|r| wire::schema_id(r.value.as_deref().unwrap()) == Some(t))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_subjects_are_skipped_or_overwritten_as_asked() {
    use kar::restore::SchemaPolicy;
    let p = common::unique("policy");
    let source = Registry::source();
    let target = Registry::target();
    let subject = format!("{p}-value");
    let ours = r#"{"type":"record","name":"Ours","namespace":"kar.p","fields":[{"name":"a","type":"string"}]}"#;
    let theirs = r#"{"type":"record","name":"Theirs","namespace":"kar.p","fields":[{"name":"b","type":"int"}]}"#;
    source.register(&subject, json!({"schema": ours})).await;
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    send(
        &producer(&[]),
        &topic,
        0,
        &rec(1, None, Some(b"v".to_vec()), &[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    target.register(&subject, json!({"schema": theirs})).await;

    let run = |policy: SchemaPolicy, name: &str| {
        let mut o = restore_to(
            &archive,
            &topic,
            &format!("{p}-{name}"),
            &dir.path().join(name),
            Some(SchemaIds::Rewrite),
        );
        o.schemas = policy;
        o
    };

    let skipped = run_restore(run(SchemaPolicy::SkipExisting, "skip")).await;
    assert!(skipped.ok);
    assert_eq!(skipped.plan.schemas[0].action.name(), "skip");
    assert_eq!(
        target.get(&format!("/subjects/{subject}/versions")).await,
        json!([1])
    );
    assert_eq!(
        target.get(&format!("/subjects/{subject}/versions/1")).await["schema"]
            .as_str()
            .unwrap(),
        theirs,
        "left alone"
    );
    assert!(
        skipped.id_map.is_empty(),
        "no text matched, so nothing maps"
    );

    let overwritten = run_restore(run(SchemaPolicy::Overwrite, "over")).await;
    assert!(overwritten.ok);
    assert_eq!(overwritten.plan.schemas[0].action.name(), "overwrite");
    let versions = target.get(&format!("/subjects/{subject}/versions")).await;
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    let latest = target
        .get(&format!("/subjects/{subject}/versions/latest"))
        .await;
    assert_eq!(
        latest["schema"].as_str().unwrap(),
        ours,
        "replaced by the archive's version"
    );
    assert_eq!(overwritten.id_map.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_restore_that_the_same_command_then_completes() {
    let p = common::unique("intr");
    let topic = format!("{p}-big");
    let (dir, archive) = filled_archive(&topic, 1, 80_000, 200).await;
    let restored = format!("{p}-restored");
    let cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kar"));
        c.args([
            "restore",
            "--json",
            "--transaction-size",
            "1",
            "--bootstrap",
        ])
        .arg(common::bootstrap())
        .args(["--map", &format!("{topic}={restored}"), "--state"])
        .arg(dir.path())
        .arg(&archive)
        .stdout(std::process::Stdio::piped());
        c
    };
    let marks = common::Watermarks::new();
    let child = cmd().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while marks.ends(&restored, 1)[0] < 2_000 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let mid = common::end_offsets(&restored, 1).await[0];
    if mid < 80_000 {
        assert_eq!(
            out.status.code(),
            Some(1),
            "a stopped restore says it is incomplete"
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], false);
    }
    let again = cmd().output().unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let got = consume_all(&restored, 1);
    let want = read_records(&Archive::open(&archive).unwrap(), &topic, 0);
    assert_eq!(got[&0].len(), want.len(), "every record once");
    assert!(
        got[&0]
            .iter()
            .zip(&want)
            .all(|(g, w)| g.value == w.value && g.timestamp == w.timestamp)
    );
}

/// A target registry that refuses mode changes (Confluent with `mode.mutability=false`; a proxy in
/// front of the real target answers `PUT /mode` to IMPORT with 422/42205): a restore that keeps
/// IDs stops in pre-flight, naming the subject, the setting and the way out, with nothing written;
/// the way out (`--schema-ids rewrite`) then works through the same registry.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_refuses_import_stops_a_kept_ids_restore_before_any_write() {
    use crate::common::http_proxy::{Fault, http_proxy};
    let p = common::unique("noimport");
    let source = Registry::source();
    // An explicit ID no other test uses, so that no clash comes before the IMPORT probe.
    let id = common::unique_id() as u32;
    let subject = format!("{p}-value");
    let schema =
        r#"{"type":"record","name":"N","namespace":"kar.n","fields":[{"name":"x","type":"int"}]}"#;
    let mode = |m: &str| json!({ "mode": m });
    source
        .ok(
            Method::PUT,
            &format!("/mode/{subject}"),
            Some(mode("IMPORT")),
        )
        .await;
    source
        .register(&subject, json!({"schema": schema, "id": id, "version": 1}))
        .await;
    source
        .ok(
            Method::PUT,
            &format!("/mode/{subject}"),
            Some(mode("READWRITE")),
        )
        .await;
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    let pr = producer(&[]);
    for i in 0..3 {
        let payload = format!("payload-{i}");
        send(
            &pr,
            &topic,
            0,
            &rec(
                1_700_000_000_000 + i,
                None,
                Some(wire_value(id, payload.as_bytes())),
                &[],
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;

    let proxy = http_proxy(common::target_registry(), |_, method, path, body| {
        (method == "PUT"
            && path.starts_with("/mode")
            && String::from_utf8_lossy(body).contains("IMPORT"))
        .then(|| {
            Fault::Reply(
                422,
                r#"{"error_code":42205,"message":"Mode changes are not allowed"}"#.into(),
            )
        })
    })
    .await;
    let restored = format!("{p}-restored");
    let state = dir.path().join("state");
    let mut o = restore_to(&archive, &topic, &restored, &state, Some(SchemaIds::Keep));
    o.registry = Some(RegistrySettings::new(&proxy.addr));
    let err = tokio::task::spawn_blocking(move || restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("refuses IMPORT mode on subject {subject}"))
            && err.contains("422")
            && err.contains("mode.mutability")
            && err.contains("--schema-ids rewrite"),
        "{err}"
    );
    assert_eq!(proxy.faults.lock().unwrap().get("reply"), Some(&1));
    let (status, _) = Registry::target()
        .call(Method::GET, &format!("/subjects/{subject}/versions"), None)
        .await;
    assert_eq!(status, 404, "nothing registered");
    assert!(
        !common::admin_topics().await.contains(&restored),
        "no topic"
    );
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "no state file"
    );

    let mut o = restore_to(
        &archive,
        &topic,
        &restored,
        &state,
        Some(SchemaIds::Rewrite),
    );
    o.registry = Some(RegistrySettings::new(&proxy.addr));
    let r = run_restore(o).await;
    assert!(r.ok, "{r:?}");
    let new_id = r.id_map[&id];
    let got = consume_all(&restored, 1);
    let values: Vec<Vec<u8>> = got[&0].iter().map(|r| r.value.clone().unwrap()).collect();
    let want: Vec<Vec<u8>> = (0..3)
        .map(|i| wire_value(new_id, format!("payload-{i}").as_bytes()))
        .collect();
    assert_eq!(values, want);
    let served = Registry::target()
        .get(&format!("/schemas/ids/{new_id}"))
        .await;
    assert_eq!(served["schema"].as_str(), Some(schema));
    assert_eq!(
        proxy.faults.lock().unwrap().get("reply"),
        Some(&1),
        "rewrite needs no IMPORT"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_go_to_the_file_in_order_and_a_hole_is_refused_naming_its_offsets() {
    let p = common::unique("hole");
    let topic = format!("{p}-t");
    // zstd on two threads finishes chunks out of order; the file must not be.
    let (dir, archive) = filled_archive(&topic, 2, 6_000, 200).await;
    let a = Archive::open(&archive).unwrap();
    for part in 0..2 {
        let chunks = a.chunks_of(&topic, part).unwrap();
        assert!(chunks.len() >= 10, "{} chunks", chunks.len());
        assert!(
            chunks.windows(2).all(
                |w| w[0].frame_offset < w[1].frame_offset && w[0].covers_to == w[1].covers_from
            ),
            "partition {part}: chunks in offset order, each covering from where the last ended"
        );
    }
    let chunks = a.chunks_of(&topic, 0).unwrap();
    let cut = chunks[3].clone();
    drop(a);
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = cut.frame_offset as usize;
    bytes.drain(at..at + 96 + cut.stored_len as usize);
    let damaged = dir.path().join("cut.kar");
    std::fs::write(&damaged, &bytes).unwrap();
    let kept = dir.path().join("kept.kar");
    let opts = kar::archive::repair::RepairOptions {
        keep_gaps: true,
        ..Default::default()
    };
    let r = kar::archive::repair::repair(&damaged, &kept, opts).unwrap();
    assert_eq!(r.gaps.len(), 1, "{r:?}");

    let restored = format!("{p}-restored");
    let hole = format!("{topic}/0: offsets {}..{}", cut.covers_from, cut.covers_to);
    let o = restore_to(&kept, &topic, &restored, dir.path(), None);
    let err = tokio::task::spawn_blocking(move || restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&hole) && err.contains("--allow-gaps") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!common::admin_topics().await.contains(&restored));

    let mut o = restore_to(&kept, &topic, &restored, dir.path(), None);
    o.allow_gaps = true;
    let report = run_restore(o).await;
    assert!(report.ok);
    let truth = consume_all(&topic, 2);
    let got = consume_all(&restored, 2);
    let want0: Vec<&Rec> = truth[&0]
        .iter()
        .filter(|r| r.offset < cut.first_offset || r.offset > cut.last_offset)
        .collect();
    assert_eq!(got[&0].len(), want0.len());
    for (g, w) in got[&0].iter().zip(&want0) {
        assert_eq!((&g.value, g.timestamp), (&w.value, w.timestamp));
    }
    assert_eq!(got[&1].len(), truth[&1].len());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_maps_patterns_and_a_busy_state_file_are_refused_before_any_write_and_named() {
    let p = common::unique("args");
    let topic = format!("{p}-t");
    let (dir, archive) = filled_archive(&topic, 1, 20, 10).await;
    let state = dir.path().join("state");
    let (t, pp) = (topic.clone(), p.clone());
    tokio::task::spawn_blocking(move || checks(&archive, &t, &pp, &state))
        .await
        .unwrap();
    assert!(!common::admin_topics().await.contains(&format!("{p}-r")));
}

fn checks(archive: &std::path::Path, topic: &str, p: &str, state: &std::path::Path) {
    let topic = topic.to_string();
    let run = |edit: &dyn Fn(&mut RestoreOptions)| {
        let mut o = restore_to(archive, &topic, &format!("{p}-r"), state, None);
        edit(&mut o);
        restore(common::runtime(), &o).unwrap_err().to_string()
    };
    let e = run(&|o| {
        o.map.insert("no-such-topic".into(), "zzz".into());
    });
    assert!(
        e.contains("--map no-such-topic=zzz") && e.contains("no topic"),
        "{e}"
    );
    for dry_run in [true, false] {
        let e = run(&|o| {
            o.map.insert(topic.clone(), "bad name!".into());
            o.dry_run = dry_run;
        });
        assert!(e.contains("not a valid Kafka topic name"), "{e}");
    }
    let e = run(&|o| o.topics = vec!["(".into()]);
    assert!(e.contains("--topics pattern \"(\""), "{e}");
    let e = run(&|o| o.groups = Some("[".into()));
    assert!(e.contains("--groups pattern \"[\""), "{e}");
    assert!(
        std::fs::read_dir(state).unwrap().next().is_none(),
        "no state file was written"
    );

    // Another restore holds the state file.
    // Named after the archive ID, which a stream restore has from the start.
    let id = Archive::open(archive).unwrap().id().unwrap();
    let held = kar::restore::state::State::open(
        &state.join(format!("{id}.restore-state")),
        "another restore",
    )
    .unwrap();
    let e = run(&|_| {});
    assert!(
        e.contains("another restore is running with the state file"),
        "{e}"
    );
    drop(held);
}

/// Against the broker's ACLs (scripts/kafka/Acls.java), through SASL_SSL as accounts that are not
/// super users: one with what README lists for a restore restores every record; the same without
/// the transactional IDs is stopped before any record, naming them. (The list first lacked READ on
/// the topics, which the progress commit needs: this test found it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_needs_the_acls_readme_lists_and_names_the_missing_one() {
    use kar::config::Secret;
    use kar::kafka::{SaslMechanism, SecurityProtocol};
    let p = common::unique("acl");
    assert!(p.starts_with("kt-acl-"), "the ACLs cover kt-acl-*: {p}");
    let topic = format!("{p}-src");
    let (dir, archive) = filled_archive(&topic, 2, 2_000, 50).await;
    let restored = format!("{p}-restored");
    let as_user = |user: &str| {
        let mut c = KafkaConnection::plaintext(common::sasl_bootstrap());
        c.security_protocol = SecurityProtocol::SaslSsl;
        c.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        c.sasl_username = Some(user.into());
        c.sasl_password = Some(Secret::new(common::SCRAM_PASSWORD));
        c.ssl_ca_location = Some(common::tls_dir().join("ca.pem"));
        let mut o = RestoreOptions::new(&archive, c);
        o.map = BTreeMap::from([(topic.clone(), restored.clone())]);
        o.state_dir = Some(dir.path().to_path_buf());
        o
    };

    let o = as_user("kar-no-txn");
    let e = tokio::task::spawn_blocking(move || restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not take the transactions")
            && e.contains("transactional IDs kar-restore."),
        "{e}"
    );
    // The topic is made before the transaction is tried; no record went in.
    assert_eq!(
        common::Watermarks::uncommitted().ends(&restored, 2),
        vec![0, 0]
    );

    let report = run_restore(as_user("kar-restorer")).await;
    assert!(report.ok, "{:?}", report.partitions);
    assert_restored_exactly(&archive, &topic, &restored, 2);
}

/// Records whose schema ID is in a header (Confluent 8 serializers: `__value_schema_id` /
/// `__key_schema_id`, 0x00 + 4-byte ID or 0x01 + 16-byte GUID) and whose value is bare Avro:
/// with IDs rewritten, every ID-form header gets the target's ID (the value, the GUID-form
/// headers and every other header stay byte for byte), the summary counts both forms, and
/// Confluent's Python client decodes every restored value against the target registry through
/// the header. Before, the headers kept the source's IDs: the values did not decode, or decoded
/// with another schema.
#[tokio::test(flavor = "multi_thread")]
async fn schema_ids_in_record_headers_are_rewritten_and_confluent_reads_them() {
    common::require_kafka();
    let p = common::unique("hdrid");
    let (source, target) = (Registry::source(), Registry::target());
    let subject = format!("{p}-value");
    let schema = r#"{"type":"record","name":"Note","namespace":"kar.h","fields":[{"name":"text","type":"string"}]}"#;
    let src_id = common::unique_id() as u32;
    common::import(&source, &subject, src_id, 1, schema).await;
    let topic = format!("{p}-notes");
    common::create_topic(&topic, 1, &[]).await;
    let guid = [&[wire::GUID_MAGIC][..], &[0x5a; 16]].concat();
    let id_header = wire::header(src_id).to_vec();
    let records: Vec<Rec> = (0..12)
        .map(|i| {
            let text = format!("note {i}");
            let mut headers: Vec<(&str, Option<&[u8]>)> = vec![
                ("__value_schema_id", Some(&id_header[..])),
                ("trace", Some(b"t")),
            ];
            if i >= 10 {
                headers.push(("__key_schema_id", Some(&guid[..])));
            }
            rec(
                now_ms(),
                Some(format!("k{i}").into_bytes()),
                Some(common::avro_string(&text)),
                &headers,
            )
        })
        .collect();
    let prod = producer(&[]);
    for r in &records {
        send(&prod, &topic, 0, r);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    let to = format!("{topic}-restored");
    let o = restore_to(
        &archive,
        &topic,
        &to,
        &dir.path().join("state"),
        Some(SchemaIds::Rewrite),
    );
    let report = run_restore(o).await;
    // The GUID headers name no schema the target knows (made up here; AxonOps v0.2.1 serves no
    // GUIDs at all): named, and the run is not OK, the records all in.
    assert_eq!(
        report.unresolved_guids,
        vec!["5a5a5a5a-5a5a-5a5a-5a5a-5a5a5a5a5a5a".to_string()]
    );
    assert!(!report.ok, "{report:?}");
    assert!(report.partitions.iter().all(|p| p.error.is_none()));
    let tgt_id = report.id_map[&src_id];
    assert_ne!(tgt_id, src_id, "the target gave the schema another ID");
    let part = &report.partitions[0];
    assert_eq!(
        (
            part.rewritten_header_ids,
            part.guid_headers,
            part.rewritten_ids
        ),
        (12, 2, 0)
    );

    let got = &consume_all(&to, 1)[&0];
    assert_eq!(got.len(), 12);
    for (g, want) in got.iter().zip(&records) {
        assert_eq!(g.key, want.key);
        assert_eq!(g.value, want.value, "the value is not touched");
        let mut headers = want.headers.clone();
        headers[0].1 = Some(wire::header(tgt_id).to_vec());
        assert_eq!(g.headers, headers, "offset {}", g.offset);
    }
    let decoded = common::decode_with_confluent(&to, &common::target_registry());
    let want: Vec<Value> = (0..12)
        .map(|i| json!({"text": format!("note {i}")}))
        .collect();
    assert_eq!(decoded, want);
    // The target's ID names the schema there.
    assert_eq!(
        target.get(&format!("/schemas/ids/{tgt_id}")).await["schema"]
            .as_str()
            .map(|s| s.contains("kar.h")),
        Some(true)
    );
}

/// The restore producer compresses its batches: with the archived topic's `compression.type`
/// where it names a codec (zstd here), else lz4; `--producer-compression` chooses. Read back with
/// Apache Kafka's own DumpLogSegments from the target's log (on a topic whose
/// `compression.type` is `producer`, the broker keeps the batches as they come). Before, every
/// batch was uncompressed.
#[tokio::test(flavor = "multi_thread")]
async fn the_restore_producer_compresses_as_the_source_topic_did_or_with_lz4() {
    common::require_kafka();
    let p = common::unique("codec");
    let (zstd_topic, plain_topic) = (format!("{p}-zstd"), format!("{p}-plain"));
    common::create_topic(&zstd_topic, 1, &[("compression.type", "zstd")]).await;
    common::create_topic(&plain_topic, 1, &[]).await;
    let line = "kar compresses what it restores; ".repeat(30);
    let records: Vec<Rec> = (0..200)
        .map(|i| {
            rec(
                now_ms(),
                Some(format!("k{i}").into_bytes()),
                Some(format!("{i} {line}").into_bytes()),
                &[],
            )
        })
        .collect();
    let prod = producer(&[]);
    for r in &records {
        send(&prod, &zstd_topic, 0, r);
        send(&prod, &plain_topic, 0, r);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &format!("{p}-.*"), None).await;

    let restore =
        |map: &[(&str, &str)], codec: Option<kar::kafka::txn::Compression>, state: &str| {
            let mut o = restore_to(&archive, "-", "-", &dir.path().join(state), None);
            o.map = map
                .iter()
                .map(|(s, d)| (s.to_string(), d.to_string()))
                .collect();
            o.producer_compression = codec;
            o
        };
    let (z2, p2, p3) = (
        format!("{zstd_topic}-r"),
        format!("{plain_topic}-r"),
        format!("{plain_topic}-none"),
    );
    let report = run_restore(restore(
        &[(&zstd_topic, &z2), (&plain_topic, &p2)],
        None,
        "s1",
    ))
    .await;
    assert!(report.ok, "{report:?}");
    let codec = |t: &str| {
        report
            .plan
            .topics
            .iter()
            .find(|x| x.target == t)
            .map(|x| x.compression.name())
    };
    assert_eq!((codec(&z2), codec(&p2)), (Some("zstd"), Some("lz4")));
    assert_eq!(common::batch_codecs(&p2, 0), ["lz4".to_string()].into());
    assert_eq!(common::batch_codecs(&z2, 0), ["zstd".to_string()].into());

    let mut o = restore(
        &[(&plain_topic, &p3)],
        Some(kar::kafka::txn::Compression::None),
        "s2",
    );
    o.topics = vec![plain_topic.clone()];
    assert!(run_restore(o).await.ok);
    assert_eq!(common::batch_codecs(&p3, 0), ["none".to_string()].into());
    for t in [&z2, &p2, &p3] {
        let got = &consume_all(t, 1)[&0];
        assert_eq!(got.len(), 200, "{t}");
        for (g, w) in got.iter().zip(&records) {
            assert_eq!(
                (&g.key, &g.value),
                (&w.key, &w.value),
                "{t} offset {}",
                g.offset
            );
        }
    }
}

/// Records the target would delete or refuse are named before any write. Records 30 days old, kept
/// at the source (retention.ms=-1), restored into a topic created with retention.ms of one day:
/// refused, exit 2, naming topic, partition, config and count, nothing created; with
/// `--accept-retention-loss` restored, the loss named in the plan; with `--topic-config
/// TOPIC:retention.ms=-1` restored and kept. Records stamped two days ahead (the source allowed
/// it) into a topic created with the Kafka 4 default message.timestamp.after.max.ms (1 h):
/// refused before any write. Before, all of these started and the broker deleted or refused
/// records after the restore had begun.
#[tokio::test(flavor = "multi_thread")]
async fn records_the_target_would_delete_or_refuse_are_named_before_any_write() {
    common::require_kafka();
    let p = common::unique("keep");
    let (old, ahead) = (format!("{p}-old"), format!("{p}-ahead"));
    common::create_topic(&old, 1, &[("retention.ms", "-1")]).await;
    common::create_topic(
        &ahead,
        1,
        &[
            ("retention.ms", "-1"),
            ("message.timestamp.after.max.ms", "31536000000"),
        ],
    )
    .await;
    let day = 86_400_000;
    let prod = producer(&[]);
    for i in 0..20 {
        let r = rec(
            now_ms() - 30 * day + i,
            Some(b"k".to_vec()),
            Some(format!("old {i}").into_bytes()),
            &[],
        );
        send(&prod, &old, 0, &r);
    }
    for i in 0..5 {
        let r = rec(
            now_ms() + 2 * day + i,
            None,
            Some(format!("ahead {i}").into_bytes()),
            &[],
        );
        send(&prod, &ahead, 0, &r);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &format!("{p}-.*"), None).await;
    let run = |map: &str, extra: &[&str], state: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kar"));
        c.args([
            "restore",
            "--json",
            "--bootstrap",
            &common::bootstrap(),
            "--map",
            map,
            "--topics",
        ])
        .arg(map.split('=').next().unwrap())
        .arg("--state")
        .arg(dir.path().join(state))
        .args(extra)
        .arg(&archive);
        c.output().unwrap()
    };
    let to = format!("{old}-r");
    let map = format!("{old}={to}");
    let tc = format!("{to}:retention.ms={day}");
    let out = run(&map, &["--topic-config", &tc], "s1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{to}/0: 20 records are older than the target's retention.ms={day}"
        )),
        "{err}"
    );
    assert!(err.contains("--accept-retention-loss"), "{err}");
    assert!(
        !common::admin_topics().await.contains(&to),
        "nothing was created"
    );

    let out = run(
        &map,
        &["--topic-config", &tc, "--accept-retention-loss"],
        "s2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["plan"]["topics"][0]["warnings"].to_string();
    assert!(
        warnings.contains("accepted: ") && warnings.contains("retention.ms=86400000"),
        "{warnings}"
    );
    assert_eq!(
        common::describe_topic_configs(&to).await["retention.ms"],
        day.to_string()
    );

    let kept = format!("{old}-kept");
    let out = run(
        &format!("{old}={kept}"),
        &["--topic-config", &format!("{kept}:retention.ms=-1")],
        "s3",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(consume_all(&kept, 1)[&0].len(), 20);

    // A --topic-config for a topic the restore does not create is an error.
    let out = run(
        &format!("{old}={kept}"),
        &["--topic-config", &format!("{kept}:retention.ms=1")],
        "s4",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a topic this restore creates"));

    let to = format!("{ahead}-r");
    let out = run(
        &format!("{ahead}={to}"),
        &["--topic-config", "message.timestamp.after.max.ms=3600000"],
        "s5",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{to}/0: 5 records are stamped after")),
        "{err}"
    );
    assert!(
        err.contains("message.timestamp.after.max.ms=3600000"),
        "{err}"
    );
    assert!(
        !common::admin_topics().await.contains(&to),
        "nothing was created"
    );
}

/// `kar restore` through the broker's SASL_SSL listener (SCRAM-SHA-512) set up by a `--config`
/// file (the password from the environment through `${...}`, restore keys in the file: map, state,
/// producer compression, a topic config), and through its mutual-TLS listener set up by flags:
/// every record arrives, the file's settings hold, and the password is in neither the state
/// folder nor the output. (Only backups had been run through these listeners.)
#[tokio::test(flavor = "multi_thread")]
async fn restores_through_sasl_ssl_from_a_config_file_and_through_mutual_tls() {
    common::require_kafka();
    let topic = common::unique("secrestore");
    common::create_topic(&topic, 2, &[]).await;
    let prod = producer(&[]);
    let records: Vec<Rec> = (0..30)
        .map(|i| {
            rec(
                now_ms(),
                Some(format!("k{i}").into_bytes()),
                Some(format!("v{i}").into_bytes()),
                &[("h", Some(b"x"))],
            )
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        send(&prod, &topic, (i % 2) as i32, r);
    }
    let truth = consume_all(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, None).await;
    let tls = common::tls_dir();
    let (via_sasl, via_mtls) = (format!("{topic}-sasl"), format!("{topic}-mtls"));
    let state = dir.path().join("state");
    let config = dir.path().join("restore.yaml");
    std::fs::write(
        &config,
        format!(
            "kafka:\n  bootstrap: {}\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n  sasl_username: {}\n  sasl_password: ${{KAR_TEST_RESTORE_PASSWORD}}\n  ssl_ca_location: {}\nrestore:\n  map:\n    {topic}: {via_sasl}\n  state: {}\n  producer_compression: zstd\n  topic_config:\n    - retention.ms=-1\n",
            common::sasl_bootstrap(),
            common::SCRAM_USER,
            tls.join("ca.pem").display(),
            state.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(["restore", "--json", "--config"])
        .arg(&config)
        .arg(&archive)
        .env("KAR_TEST_RESTORE_PASSWORD", common::SCRAM_PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["plan"]["topics"][0]["target"], via_sasl.as_str());
    assert_eq!(report["plan"]["topics"][0]["compression"], "zstd");
    assert_eq!(
        common::describe_topic_configs(&via_sasl).await["retention.ms"],
        "-1"
    );
    let text = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(!String::from_utf8_lossy(&text).contains(common::SCRAM_PASSWORD));
    for f in std::fs::read_dir(&state).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(
            !bytes
                .windows(common::SCRAM_PASSWORD.len())
                .any(|w| w == common::SCRAM_PASSWORD.as_bytes())
        );
    }

    let out = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args([
            "restore",
            "--json",
            "--bootstrap",
            &common::mtls_bootstrap(),
            "--security-protocol",
            "SSL",
        ])
        .arg("--ssl-ca")
        .arg(tls.join("ca.pem"))
        .arg("--ssl-cert")
        .arg(tls.join("client.pem"))
        .arg("--ssl-key")
        .arg(tls.join("client.key"))
        .args(["--map", &format!("{topic}={via_mtls}"), "--state"])
        .arg(dir.path().join("state-mtls"))
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in [&via_sasl, &via_mtls] {
        let got = consume_all(t, 2);
        for p in 0..2 {
            let (g, w) = (&got[&p], &truth[&p]);
            assert_eq!(g.len(), w.len(), "{t}/{p}");
            for (a, b) in g.iter().zip(w) {
                assert_eq!(
                    (&a.key, &a.value, &a.headers, a.timestamp),
                    (&b.key, &b.value, &b.headers, b.timestamp),
                    "{t}/{p}"
                );
            }
        }
    }
}

/// Creating a topic that someone else made meanwhile with another partition count is an error
/// naming both counts; it was taken as created after a 10-second wait, and records went on to
/// partitions that do not exist.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_made_meanwhile_with_other_partitions_is_not_taken_as_created() {
    common::require_kafka();
    let topic = common::unique("raced");
    common::create_topic(&topic, 1, &[]).await;
    let t = topic.clone();
    let err = tokio::task::spawn_blocking(move || {
        let target = kar::kafka::sink::Target::connect(
            &KafkaConnection::plaintext(common::bootstrap()),
            common::runtime().context(),
        )
        .unwrap();
        target.create_topic(&t, 3, 1, &BTreeMap::new())
    })
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!(
            "creating topic {topic} with 3 partitions: the topic exists with 1"
        )),
        "{err}"
    );
}

/// What a sink passed in with the options was told, event by event.
#[derive(Default)]
struct Told {
    begun: std::sync::Mutex<Vec<Vec<(String, u64)>>>,
    /// part → (units, records)
    advanced: std::sync::Mutex<BTreeMap<String, (u64, u64)>>,
    ended: std::sync::atomic::AtomicUsize,
}

impl kar::progress::ProgressSink for Told {
    fn begin(&self, parts: &[(String, u64)]) {
        self.begun.lock().unwrap().push(parts.to_vec());
    }
    fn advance(&self, part: &str, units: u64, records: u64, _bytes: u64) {
        let mut a = self.advanced.lock().unwrap();
        let e = a.entry(part.to_string()).or_default();
        e.0 += units;
        e.1 += records;
    }
    fn end(&self) {
        self.ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_tell_their_progress_to_the_sink_passed_in() {
    let topic = common::unique("told");
    common::create_topic(&topic, 3, &[]).await;
    common::fill(&topic, 3, 300, 40).await;
    let dir = tempfile::tempdir().unwrap();

    let out = dir.path().join("told.kar");
    let mut o = BackupOptions::new(KafkaConnection::plaintext(common::bootstrap()), &out);
    o.topics = vec![topic.clone()];
    o.writer = WriterOptions {
        chunk_target_bytes: 2 * 1024,
        ..Default::default()
    };
    let told = std::sync::Arc::new(Told::default());
    o.progress = kar::progress::Progress::to(told.clone());
    tokio::task::spawn_blocking(move || backup(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*told.begun.lock().unwrap(), [vec![(topic.clone(), 300)]]);
    assert_eq!(told.advanced.lock().unwrap()[&topic], (300, 300));
    assert_eq!(told.ended.load(std::sync::atomic::Ordering::SeqCst), 1);

    let to = common::unique("told-back");
    let mut o = restore_to(&out, &topic, &to, &dir.path().join("state"), None);
    let told = std::sync::Arc::new(Told::default());
    o.progress = kar::progress::Progress::to(told.clone());
    let r = run_restore(o).await;
    assert!(r.ok);
    assert_eq!(*told.begun.lock().unwrap(), [vec![(to.clone(), 300)]]);
    assert_eq!(told.advanced.lock().unwrap()[&to], (300, 300));
    assert_eq!(told.ended.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A producer whose connection goes silent with its records in flight (the proxy in front of the
/// real broker stops carrying anything on the connection of the first Produce request, and keeps
/// it open) delivers nothing, while the partition's leader answers a new connection. librdkafka
/// would wait out its request timeout (`socket.timeout.ms`, 60 s by its documentation), past the
/// stall timeout (without the replacement the partition fails after 16 s); the restore instead asks
/// the leader after a quarter of the stall timeout, replaces the producer (which aborts the open
/// transaction) and writes the partition on from its last commit: the run ends OK, every record
/// once. The same replacement got restores through a broker fenced for a moment by its controller,
/// which left librdkafka 2.12 producers stuck for good (see `PartitionWriter::with_renewal`).
#[tokio::test(flavor = "multi_thread")]
async fn a_producer_whose_connection_goes_silent_is_replaced_and_the_restore_completes() {
    let r = restore_through_faults("silent", 2, 20_000, 1000, |f| f.silence_next_produce()).await;
    let (report, archive, topic, restored) = (&r.report, &r.archive, &r.topic, &r.restored);
    assert_eq!(
        r.faults.silenced(),
        1,
        "a producer's connection went silent"
    );
    assert!(report.ok, "{:?}", report.partitions);
    let replaced: Vec<u32> = report
        .partitions
        .iter()
        .map(|o| o.producers_replaced)
        .collect();
    assert_eq!(replaced, [1, 0], "partition 0's producer, the one silenced");
    assert_restored_exactly(archive, topic, restored, 2);
}

/// A link slower than the time a restore waits before it asks whether its producer is stuck (the
/// proxy holds every Produce request 6 s; the restore asks after 4 s) is not taken for a stuck
/// producer for good: the producer replaced once, the next one waits twice as long, its
/// deliveries come, and it waits 3 times the longest wait from then on. The run ends OK, every
/// record once, within the stall timeout of no commit (16 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_link_slower_than_the_renewal_time_is_waited_for() {
    let r = restore_through_faults("slowlink", 1, 3_000, 100, |f| {
        f.delay_produce(Duration::from_secs(6))
    })
    .await;
    assert!(r.report.ok, "{:?}", r.report.partitions);
    assert_eq!(r.report.partitions[0].producers_replaced, 1);
    assert_restored_exactly(&r.archive, &r.topic, &r.restored, 1);
}

/// librdkafka's send_offsets_to_transaction can outlive its own timeout (its requests to a
/// group's coordinator are not timed: librdkafka issues 5456 and 5511; seen here after a broker
/// fenced itself for a moment, a partition hung 5 minutes until Kafka aborted its transaction).
/// The proxy silences the
/// connection that carries the first progress commit of the records (TxnOffsetCommit; the one
/// before it is the pre-flight probe's): the producer is replaced once the call has gone past
/// its timeout, and the restore ends OK with every record once.
#[tokio::test(flavor = "multi_thread")]
async fn a_progress_commit_that_never_returns_is_left_and_its_producer_replaced() {
    restore_with_a_silent_progress_commit("txnoffset", 1, 1).await;
}

/// The same in the pre-flight probe's transaction: the cluster answered it, so the restore goes
/// on, and the partition's producer takes its transactional ID over. Before the fix this
/// restore waited 5 minutes, then refused the cluster.
#[tokio::test(flavor = "multi_thread")]
async fn a_probe_whose_progress_commit_never_returns_does_not_refuse_the_restore() {
    restore_with_a_silent_progress_commit("probehang", 0, 0).await;
}

/// Restores one partition with the connection of the TxnOffsetCommit after the first `skip`
/// silenced: OK, every record once, with `replaced` producers replaced.
async fn restore_with_a_silent_progress_commit(name: &str, skip: usize, replaced: u32) {
    use crate::common::proxy::TXN_OFFSET_COMMIT;
    let r = restore_through_faults(name, 1, 3_000, 100, |f| {
        f.silence_after(TXN_OFFSET_COMMIT, skip)
    })
    .await;
    let silenced = r.faults.silenced();
    assert_eq!(silenced, 1, "a progress commit's connection went silent");
    assert!(r.report.ok, "{:?}", r.report.partitions);
    assert_eq!(r.report.partitions[0].producers_replaced, replaced);
    assert_restored_exactly(&r.archive, &r.topic, &r.restored, 1);
}

/// The same from a stream, which cannot be read again: the partition fails, naming the call that
/// did not return, within the bound (not librdkafka's 5 minutes), with nothing committed; a run
/// from the file then restores every record once (its producer aborts the open transaction).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_restore_whose_progress_commit_never_returns_fails_and_a_rerun_completes() {
    use crate::common::proxy::TXN_OFFSET_COMMIT;
    let r = restore_through_faults_from(
        "streamhang",
        1,
        3_000,
        100,
        |f| f.silence_after(TXN_OFFSET_COMMIT, 1),
        true,
    )
    .await;
    assert_eq!(r.faults.silenced(), 1);
    assert!(!r.report.ok);
    let failed = &r.report.partitions[0];
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(error.contains("did not return within"), "{error}");
    assert_eq!((failed.written, failed.producers_replaced), (0, 0));
    assert!(
        consume_all(&r.restored, 1)
            .get(&0)
            .is_none_or(Vec::is_empty)
    );
    // Another state file: the first run's names the proxy's address as its target.
    let state = r.dir.path().join("state-direct");
    let rerun = run_restore(restore_to(&r.archive, &r.topic, &r.restored, &state, None)).await;
    assert!(rerun.ok, "{:?}", rerun.partitions);
    assert_restored_exactly(&r.archive, &r.topic, &r.restored, 1);
}

/// A restore through a proxy with faults, and what it restored.
struct FaultyRestore {
    report: kar::restore::RestoreReport,
    faults: crate::common::proxy::Faults,
    archive: std::path::PathBuf,
    topic: String,
    restored: String,
    dir: tempfile::TempDir,
}

/// Backs up a new topic (`parts` partitions of `records` records padded to `pad` bytes) and
/// restores it through a proxy in front of the real broker whose faults `arm` sets: a partition
/// at a time, in transactions of 1 MiB, with a stall timeout of 16 s (the leader is asked after
/// 4 s without a delivery).
async fn restore_through_faults(
    name: &str,
    parts: i32,
    records: i64,
    pad: usize,
    arm: impl FnOnce(&crate::common::proxy::Faults),
) -> FaultyRestore {
    restore_through_faults_from(name, parts, records, pad, arm, false).await
}

/// [`restore_through_faults`], reading the archive as a stream (from a FIFO) when `stream`.
async fn restore_through_faults_from(
    name: &str,
    parts: i32,
    records: i64,
    pad: usize,
    arm: impl FnOnce(&crate::common::proxy::Faults),
    stream: bool,
) -> FaultyRestore {
    use crate::common::proxy::{Faults, TcpProxy, outage_addresses, outage_port};

    let _port = outage_port().await;
    let p = common::unique(name);
    let topic = format!("{p}-t");
    common::create_topic(&topic, parts, &[]).await;
    common::fill(&topic, parts, records, pad).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, None).await;
    let (listener, proxy_at) = outage_addresses();
    let faults = Faults::default();
    let _proxy = TcpProxy::with_faults(proxy_at, listener, faults.clone()).await;
    arm(&faults);
    let restored = format!("{p}-restored");
    let mut o = restore_to(&archive, &topic, &restored, &dir.path().join("state"), None);
    o.kafka = KafkaConnection::plaintext(proxy_at.to_string());
    o.transaction_bytes = 1 << 20;
    o.concurrency = 1;
    o.stall_timeout = Duration::from_secs(16);
    if stream {
        let fifo = dir.path().join("archive.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let (from, to) = (archive.clone(), fifo.clone());
        std::thread::spawn(move || std::fs::copy(from, to));
        o.archive = fifo;
    }
    let report = run_restore(o).await;
    FaultyRestore {
        report,
        faults,
        archive,
        topic,
        restored,
        dir,
    }
}

/// Right after a broker starts, the coordinator of a group answers COORDINATOR_LOAD_IN_PROGRESS,
/// then NOT_COORDINATOR, until it has loaded the group's partition of `__consumer_offsets` (seen
/// here: the first restore after a broker restart failed on "Not coordinator" reading its
/// progress). A proxy in front of the real broker answers the first OffsetFetch requests so: the
/// backup still captures the group's offsets and the restore still restores every record once
/// and translates the group, instead of failing on the first answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_coordinator_still_loading_is_waited_for_by_backup_and_restore() {
    use crate::common::proxy::{
        COORDINATOR_LOAD_IN_PROGRESS, Faults, NOT_COORDINATOR, TcpProxy, outage_addresses,
        outage_port,
    };

    let _port = outage_port().await;
    let p = common::unique("loading");
    let topic = format!("{p}-t");
    common::create_topic(&topic, 2, &[]).await;
    common::fill(&topic, 2, 2_000, 100).await;
    let group = format!("{p}-group");
    common::commit(&group, &[(&topic, 0, 5, "meta")]);
    let (listener, proxy_at) = outage_addresses();
    let faults = Faults::default();
    let _proxy = TcpProxy::with_faults(proxy_at, listener, faults.clone()).await;
    let through_proxy = KafkaConnection::plaintext(proxy_at.to_string());

    faults.arm(&[COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("loading.kar");
    let mut o = BackupOptions::new(through_proxy.clone(), &archive);
    o.topics = vec![topic.clone()];
    o.groups = Some(format!("{p}-.*"));
    let report = tokio::task::spawn_blocking(move || backup(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("backup: {e}"));
    assert_eq!(faults.answered(), 2, "the backup's reads met both answers");
    assert_eq!(report.groups, 1);
    let doc: kar::format::consumer_groups::ConsumerGroupsDoc = Archive::open(&archive)
        .unwrap()
        .document("consumer-groups")
        .unwrap()
        .unwrap();
    let offsets: Vec<_> = doc.groups[0]
        .offsets
        .iter()
        .map(|o| (o.topic.as_str(), o.partition, o.offset, o.metadata.as_str()))
        .collect();
    assert_eq!(
        (doc.groups[0].group.as_str(), offsets),
        (group.as_str(), vec![(topic.as_str(), 0, 5, "meta")])
    );

    faults.arm(&[NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS]);
    let restored = format!("{p}-restored");
    let mut o = restore_to(&archive, &topic, &restored, dir.path(), None);
    o.kafka = through_proxy;
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);
    assert_eq!(faults.answered(), 4, "the restore's reads met both answers");
    assert_restored_exactly(&archive, &topic, &restored, 2);
    let on_target = consume_all(&restored, 1);
    assert_eq!(
        common::committed(&group, &restored, 0).await,
        Some((on_target[&0][5].offset, "meta".to_string()))
    );
}

/// Records larger than what a restore's producer holds undelivered (`PACE_BYTES`, 2 MB) and than
/// a small librdkafka queue would take (librdkafka refuses a record larger than
/// `queue.buffering.max.kbytes` for ever, even with nothing queued: a 4 MiB queue would hang on
/// the 6 and 9 MB ones), between small ones: each goes alone, and every record comes back
/// exactly.
#[tokio::test(flavor = "multi_thread")]
async fn records_larger_than_a_producers_pace_are_restored_exactly() {
    let p = common::unique("large");
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[("max.message.bytes", "12000000")]).await;
    let prod = producer(&[("message.max.bytes", "12000000")]);
    let sizes = [10usize, 6_000_000, 100, 2_500_000, 9_000_000, 50, 3_000_000];
    for (i, n) in sizes.iter().enumerate() {
        let value: Vec<u8> = (0..*n).map(|j| (j % 251) as u8 ^ i as u8).collect();
        let r = rec(
            now_ms(),
            Some(format!("k{i}").into_bytes()),
            Some(value),
            &[],
        );
        send(&prod, &topic, 0, &r);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, None).await;
    let restored = format!("{p}-restored");
    let o = restore_to(&archive, &topic, &restored, &dir.path().join("state"), None);
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);
    assert_restored_exactly(&archive, &topic, &restored, 1);
    let got: Vec<usize> = consume_all(&restored, 1)[&0]
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(got, sizes);
}

/// A broker that stops answering mid-restore (a proxy in front of the real one closes every
/// connection and refuses new ones): librdkafka would hold the records in flight and retry for
/// its message timeout (5 min), and its abort would then wait as long. The restore instead fails
/// each partition within `--stall-timeout`, naming it and where it stopped, and the next run,
/// the broker back, continues from what was committed: every record once.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_lost_mid_restore_fails_within_the_stall_timeout_and_the_next_run_continues() {
    use crate::common::proxy::{TcpProxy, outage_addresses, outage_port};

    let _port = outage_port().await;
    let p = common::unique("lost");
    let topic = format!("{p}-t");
    common::create_topic(&topic, 2, &[]).await;
    common::fill(&topic, 2, 60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, None).await;
    let (listener, proxy_at) = outage_addresses();
    let proxy = TcpProxy::start(proxy_at, listener).await;
    let restored = format!("{p}-restored");
    let state = dir.path().join("state");
    let options = || {
        let mut o = restore_to(&archive, &topic, &restored, &state, None);
        o.kafka = KafkaConnection::plaintext(proxy_at.to_string());
        // Small transactions, one partition at a time: the cut comes mid-way.
        o.transaction_bytes = 1 << 20;
        o.concurrency = 1;
        o.stall_timeout = Duration::from_secs(3);
        o
    };
    let o = options();
    let run = tokio::task::spawn_blocking(move || restore(common::runtime(), &o));
    let ends = common::Watermarks::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends.ends(&restored, 2).iter().sum::<i64>() == 0 {
        assert!(Instant::now() < deadline, "nothing restored in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.cut();
    let cut = Instant::now();
    let report = run
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("restore: {e}"));
    let took = cut.elapsed();
    assert!(!report.ok);
    assert!(
        took < Duration::from_secs(40),
        "ended {took:?} after the cut"
    );
    let errors: Vec<&str> = report
        .partitions
        .iter()
        .filter_map(|p| p.error.as_deref())
        .collect();
    // The partition being written when the cut came (the one after it, if any, is not
    // started).
    let stalled = |e: &&str| {
        (0..2).any(|p| e.starts_with(&format!("{restored}/{p}: no record delivered for 3s")))
    };
    assert!(errors.iter().any(stalled), "{errors:?}");
    // Partition 0 stalled: partition 1 was not started (it would have waited as long).
    if errors
        .first()
        .is_some_and(|e| e.starts_with(&format!("{restored}/0:")))
    {
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[1].starts_with(&format!(
                "{restored}/1: not started: the broker stopped answering"
            )),
            "{errors:?}"
        );
    }

    proxy.restore();
    let report = run_restore(options()).await;
    assert!(report.ok, "{:?}", report.partitions);
    assert_restored_exactly(&archive, &topic, &restored, 2);
}
