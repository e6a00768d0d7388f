//! Restores into a registry already in use, as a standby is refreshed night after night: kept IDs
//! into subjects that already have versions, and pre-flight checks that leave the target exactly
//! as they found it.

use std::collections::BTreeMap;

use kar::archive::Archive;
use kar::registry::client::{RegistryClient, RegistrySettings};
use kar::restore::SchemaIds;
use kar::restore::schemas::SchemaRestore;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Registry, consume_all, producer, send};
use crate::common::{avro_string, import};
use crate::restore::{backup_to, rec, restore_to, run_restore, wire_value};

const V1: &str = r#"{"type":"record","name":"Order","namespace":"kar.s","fields":[{"name":"id","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","namespace":"kar.s","fields":[{"name":"id","type":"string"},{"name":"note","type":"string","default":""}]}"#;

/// Every record of `topic` on the target names, in its value, a schema ID that the target
/// registry serves with the text the source serves for it.
async fn every_value_resolves(topic: &str, target: &Registry, source: &Registry) -> usize {
    let got = consume_all(topic, 1);
    for r in &got[&0] {
        let id = kar::registry::wire::schema_id(r.value.as_deref().unwrap()).unwrap();
        let t = target.get(&format!("/schemas/ids/{id}")).await;
        let s = source.get(&format!("/schemas/ids/{id}")).await;
        assert_eq!(t["schema"], s["schema"], "ID {id}");
    }
    got[&0].len()
}

/// The nightly refresh of a standby registry: a kept-IDs restore into the target, a new version
/// at the source, a second backup and a second kept-IDs restore into the same target (the default
/// add-missing). Confluent and AxonOps refuse IMPORT on a subject that has versions unless forced
/// (`?force=true`): the second restore used to stop in pre-flight, naming mode.mutability.
#[tokio::test(flavor = "multi_thread")]
async fn a_nightly_refresh_with_kept_ids_restores_into_subjects_that_have_versions() {
    let p = common::unique("refresh");
    let (source, target) = (Registry::source(), Registry::target());
    // Explicit IDs apart from each other: a registry gives the next schema registered without an
    // ID the highest ID + 1, so other tests' schemas land right after ours.
    let (base, next) = (common::unique_id() as u32, common::unique_id() as u32);
    let subject = format!("{p}-orders-value");
    import(&source, &subject, base, 1, V1).await;
    let topic = format!("{p}-orders");
    common::create_topic(&topic, 1, &[]).await;
    let prod = producer(&[]);
    // Real Avro, so that Confluent's own deserializer can read the restored records.
    for i in 0..3 {
        let value = avro_string(&format!("o{i}"));
        send(
            &prod,
            &topic,
            0,
            &rec(i, None, Some(wire_value(base, &value)), &[]),
        );
    }

    let night1 = tempfile::tempdir().unwrap();
    let archive = backup_to(night1.path(), &topic, Some(&p)).await;
    let o = restore_to(
        &archive,
        &topic,
        &format!("{topic}-1"),
        night1.path(),
        Some(SchemaIds::Keep),
    );
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);
    assert_eq!(
        every_value_resolves(&format!("{topic}-1"), &target, &source).await,
        3
    );

    // The day's change at the source: a new version, records written with it.
    import(&source, &subject, next, 2, V2).await;
    for i in 3..6 {
        let value = [avro_string(&format!("o{i}")), avro_string("two")].concat();
        send(
            &prod,
            &topic,
            0,
            &rec(i, None, Some(wire_value(next, &value)), &[]),
        );
    }
    let night2 = tempfile::tempdir().unwrap();
    let archive = backup_to(night2.path(), &topic, Some(&p)).await;
    let o = restore_to(
        &archive,
        &topic,
        &format!("{topic}-2"),
        night2.path(),
        Some(SchemaIds::Keep),
    );
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);
    let actions: Vec<(&str, i32)> = report
        .schemas
        .iter()
        .map(|a| (a.action.name(), a.version))
        .collect();
    assert_eq!(actions, vec![("exists", 1), ("register", 2)]);
    for (version, id) in [(1, base), (2, next)] {
        let v = target
            .get(&format!("/subjects/{subject}/versions/{version}"))
            .await;
        assert_eq!(v["id"], json!(id), "{subject} v{version}");
    }
    assert_eq!(
        every_value_resolves(&format!("{topic}-2"), &target, &source).await,
        6
    );
    // Confluent's Python client decodes every restored record against the target registry.
    let decoded = common::decode_with_confluent(&format!("{topic}-2"), &common::target_registry());
    let want: Vec<Value> = (0..6)
        .map(|i| match i {
            0..3 => json!({"id": format!("o{i}")}),
            _ => json!({"id": format!("o{i}"), "note": "two"}),
        })
        .collect();
    assert_eq!(decoded, want);
    // The subject's own mode is the source's again (READWRITE, set there), not IMPORT.
    let path = format!("/mode/{subject}?defaultToGlobal=false");
    let on_target = target.get(&path).await["mode"].clone();
    assert_eq!(on_target, json!("READWRITE"));
    assert_eq!(on_target, source.get(&path).await["mode"]);
}

/// What the target holds for a subject: every version with its ID and deletion flag, and the
/// subject's own mode and compatibility.
async fn subject_state(reg: &Registry, subject: &str) -> (Value, Value, u16, Value, u16, Value) {
    let all = reg
        .call(
            Method::GET,
            &format!("/subjects/{subject}/versions?deleted=true"),
            None,
        )
        .await
        .1;
    let live = reg
        .call(Method::GET, &format!("/subjects/{subject}/versions"), None)
        .await
        .1;
    let (ms, mode) = reg
        .call(
            Method::GET,
            &format!("/mode/{subject}?defaultToGlobal=false"),
            None,
        )
        .await;
    let (cs, config) = reg
        .call(
            Method::GET,
            &format!("/config/{subject}?defaultToGlobal=false"),
            None,
        )
        .await;
    (all, live, ms, mode, cs, config)
}

/// The pre-flight check that the target takes IMPORT mode leaves every subject as it found it:
/// on Confluent, switching a subject whose versions are all soft-deleted to IMPORT without
/// `force` clears those versions (a ClearSubject event); kar forces, and puts the mode back.
/// (AxonOps v0.2.1 never clears them, so here this guards the put-back and the deletions.)
#[tokio::test(flavor = "multi_thread")]
async fn the_import_probe_leaves_every_subject_as_it_was() {
    let p = common::unique("probe");
    let (source, target) = (Registry::source(), Registry::target());
    let base = common::unique_id() as u32;
    let subject = format!("{p}-orders-value");
    import(&source, &subject, base, 1, V1).await;
    let topic = format!("{p}-orders");
    common::create_topic(&topic, 1, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;

    // On the target the subject has only soft-deleted versions, and a compatibility of its own.
    target.register(&subject, json!({"schema": V2})).await;
    target
        .ok(
            Method::DELETE,
            &format!("/subjects/{subject}/versions/1"),
            None,
        )
        .await;
    target
        .ok(
            Method::PUT,
            &format!("/config/{subject}"),
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    let before = subject_state(&target, &subject).await;
    assert_eq!(before.0, json!([1]), "one soft-deleted version");

    let a = Archive::open(&archive).unwrap();
    let snap = kar::registry::snapshot::read_from_archive(&a)
        .unwrap()
        .unwrap();
    let client = RegistryClient::new(&RegistrySettings::new(common::target_registry())).unwrap();
    let probe = SchemaRestore {
        client: std::sync::Arc::new(client),
        snap: &snap,
        texts: &BTreeMap::new(),
        ids: SchemaIds::Keep,
        policy: kar::restore::SchemaPolicy::AddMissing,
        global: Default::default(),
        versions_only: false,
    };
    probe.probe_import().await.unwrap();
    assert_eq!(subject_state(&target, &subject).await, before);
}

fn kar(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(args)
        .output()
        .unwrap()
}

/// A registry-only archive (`kar backup --registry` without `--bootstrap`) restores with no Kafka
/// at all; an archive with records does too with `--registry-only` (an unreachable broker given
/// shows Kafka is not touched), and without it is refused, naming both ways.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_only_archive_restores_without_kafka() {
    let p = common::unique("regonly");
    let (source, target) = (Registry::source(), Registry::target());
    let (id1, id2) = (common::unique_id() as u32, common::unique_id() as u32);
    let (s1, s2) = (format!("{p}-a-value"), format!("{p}-b-value"));
    import(&source, &s1, id1, 1, V1).await;
    import(&source, &s2, id2, 1, V2).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("registry.kar");
    let subjects = format!("{p}-.*");
    let out = kar(&[
        "backup",
        "--registry",
        &common::source_registry(),
        "--subjects",
        &subjects,
        "--out",
        archive.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A --state folder that is not there yet is made.
    let state = dir.path().join("not/yet/there");
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            archive.to_str().unwrap(),
            "--schema-ids",
            "keep",
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        kar(&args)
    };
    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--registry"));
    let out = restore(&["--registry", &common::target_registry()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (subject, id) in [(&s1, id1), (&s2, id2)] {
        let v = target.get(&format!("/subjects/{subject}/versions/1")).await;
        assert_eq!(v["id"], json!(id), "{subject}");
    }

    // An archive with records: refused without Kafka, unless --registry-only.
    let topic = format!("{p}-t");
    common::create_topic(&topic, 1, &[]).await;
    send(
        &producer(&[]),
        &topic,
        0,
        &rec(1, None, Some(wire_value(id1, b"x")), &[]),
    );
    let with_records = tempfile::tempdir().unwrap();
    let archive = backup_to(with_records.path(), &topic, Some(&p)).await;
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "restore".to_string(),
            archive.to_str().unwrap().to_string(),
            "--registry".into(),
            common::target_registry(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kar"))
            .args(a)
            .output()
            .unwrap()
    };
    let out = run(args(&[]));
    assert_eq!(out.status.code(), Some(2));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("1 records of 1 topic")
            && why.contains("--bootstrap")
            && why.contains("--registry-only"),
        "{why}"
    );
    let out = run(args(&["--registry-only", "--bootstrap", "127.0.0.1:1"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const WITH_X: &str =
    r#"{"type":"record","name":"Order","namespace":"kar.s","fields":[{"name":"x","type":"int"}]}"#;

/// A subject whose archived compatibility (NONE) is looser than the target's (BACKWARD), with
/// versions the target's level would refuse: with rewritten IDs the restore registers them under
/// the archived level and leaves the subject at it (the second version was refused with HTTP 409
/// half-way through the restore, after the dry run said all was well).
#[tokio::test(flavor = "multi_thread")]
async fn versions_are_registered_under_the_archived_compatibility() {
    let p = common::unique("compat");
    let (source, target) = (Registry::source(), Registry::target());
    let subject = format!("{p}-orders-value");
    source
        .ok(
            Method::PUT,
            &format!("/config/{subject}"),
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    let v1 = source.register(&subject, json!({"schema": V1})).await as u32;
    let v2 = source.register(&subject, json!({"schema": WITH_X})).await as u32;
    let topic = format!("{p}-orders");
    common::create_topic(&topic, 1, &[]).await;
    let prod = producer(&[]);
    send(
        &prod,
        &topic,
        0,
        &rec(1, None, Some(wire_value(v1, b"a")), &[]),
    );
    send(
        &prod,
        &topic,
        0,
        &rec(2, None, Some(wire_value(v2, b"b")), &[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;
    assert_eq!(
        target.get("/config").await["compatibilityLevel"],
        "BACKWARD",
        "the target checks BACKWARD by default"
    );

    let restored = format!("{topic}-r");
    let o = restore_to(
        &archive,
        &topic,
        &restored,
        dir.path(),
        Some(SchemaIds::Rewrite),
    );
    let report = run_restore(o).await;
    assert!(report.ok, "{:?}", report.partitions);
    let versions = target.get(&format!("/subjects/{subject}/versions")).await;
    assert_eq!(versions, json!([1, 2]));
    let own = target
        .get(&format!("/config/{subject}?defaultToGlobal=false"))
        .await;
    assert_eq!(own["compatibilityLevel"], "NONE");
    // Every record's rewritten ID serves, on the target, the text its source ID served.
    let got = consume_all(&restored, 1);
    assert_eq!(got[&0].len(), 2);
    for (r, source_id) in got[&0].iter().zip([v1, v2]) {
        let id = kar::registry::wire::schema_id(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(report.id_map[&source_id], id);
        let t = target.get(&format!("/schemas/ids/{id}")).await;
        let s = source.get(&format!("/schemas/ids/{source_id}")).await;
        assert_eq!(t["schema"], s["schema"], "{source_id} -> {id}");
    }
}

/// A version the target would refuse (its subject there holds a schema the archived version is
/// not compatible with, under the level the restore registers at) is named in pre-flight, every
/// one of them, before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_the_target_would_refuse_is_named_before_any_write() {
    let p = common::unique("refuse");
    let (source, target) = (Registry::source(), Registry::target());
    let subject = format!("{p}-orders-value");
    source.register(&subject, json!({"schema": V1})).await;
    target.register(&subject, json!({"schema": WITH_X})).await;
    let topic = format!("{p}-orders");
    common::create_topic(&topic, 1, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = backup_to(dir.path(), &topic, Some(&p)).await;

    let restored = format!("{topic}-r");
    let o = restore_to(
        &archive,
        &topic,
        &restored,
        dir.path(),
        Some(SchemaIds::Rewrite),
    );
    let e = tokio::task::spawn_blocking(move || kar::restore::restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{subject} v1"))
            && e.contains("BACKWARD")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert_eq!(
        target.get(&format!("/subjects/{subject}/versions")).await,
        json!([1])
    );
    assert!(!common::admin_topics().await.contains(&restored));
}
