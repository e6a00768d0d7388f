//! `kar drill`: the restore drill in one command, against the real broker and target registry.
//! A good archive passes (every record restored, read back, decoded through the target registry,
//! equal; the scratch topics gone; with `--clean-schemas`, the versions it registered gone); a
//! target registry that serves another schema for the restored ID (a proxy in front of the real
//! one answers `GET /schemas/ids/N` with it) fails the drill, naming the records.

use serde_json::{Value, json};

use crate::common::http_proxy::{Fault, http_proxy};
use crate::common::{self, kar_cli};
use crate::stream::{PER_PARTITION, orders};

fn drill(file: &str, registry: &str, prefix: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let bootstrap = common::bootstrap();
    let mut args = vec![
        "drill",
        file,
        "--bootstrap",
        &bootstrap,
        "--registry",
        registry,
        "--prefix",
        prefix,
        "--json",
    ];
    args.extend_from_slice(extra);
    kar_cli(&args, &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_passes_on_a_good_archive_and_leaves_nothing_behind() {
    common::require_kafka();
    let p = common::unique("drill");
    let (topic, _, _) = orders(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drill.kar");
    let file = file.to_str().unwrap();
    common::backup_cli(&topic, &format!("{p}-.*"), file.as_ref(), &[]);
    let total = 3 * PER_PARTITION;
    let prefix = format!("{p}-scratch-");
    let target = common::target_registry();
    // The target registry is in use: the subject has a version of its own, which the archive's
    // (compatible) version follows as v2, and which the clean-up leaves.
    let subject = format!("{p}-orders-value");
    let own = r#"{"type":"record","name":"Order","namespace":"kar.stream","fields":[{"name":"id","type":"string"},{"name":"note","type":"string","default":""}]}"#;
    common::Registry::target()
        .register(&subject, json!({"schema": own}))
        .await;
    let (code, r, out) = drill(file, &target, &prefix, &["--clean-schemas"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(r["ok"], true);
    for k in [
        "records_in_archive",
        "records_restored",
        "records_read_back",
        "records_equal",
        "fields_decoded",
    ] {
        assert_eq!(r[k], total, "{k}: {r}");
    }
    assert_eq!(r["schema_ids_resolved"], 1);
    assert_eq!(r["decode_failures"], 0);
    assert_eq!(r["scratch_topics"], json!([format!("{prefix}{topic}")]));
    assert_eq!(r["topics_deleted"], true);
    assert!(r["root"].as_str().unwrap().len() == 64);
    // The scratch topic is gone; the schema version it registered too.
    let scratch = format!("{prefix}{topic}");
    for _ in 0..50 {
        if !common::admin_topics().await.contains(&scratch) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!common::admin_topics().await.contains(&scratch));
    assert_eq!(r["schemas_registered"], json!([format!("{subject} v2")]));
    assert_eq!(r["schemas_removed"], true);
    let reg = common::Registry::target();
    assert_eq!(
        reg.get(&format!("/subjects/{subject}/versions")).await,
        json!([1])
    );
    let kept = reg.get(&format!("/subjects/{subject}/versions/1")).await;
    assert!(kept["schema"].as_str().unwrap().contains("note"), "{kept}");
    // A second drill with the same prefix runs (the first left nothing; the restore's progress
    // group, named after the archive, does not make it skip the new scratch topic) ...
    let (code, r, out) = drill(file, &target, &prefix, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(r["records_equal"], total);
    assert_eq!(r["fields_decoded"], total);
    // ... and one over an existing scratch topic is refused before anything is written.
    common::create_topic(&format!("{p}-taken-{topic}"), 1, &[]).await;
    let (code, _, out) = drill(file, &target, &format!("{p}-taken-"), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("scratch topic {p}-taken-{topic} exists")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_fails_naming_the_records_when_the_target_serves_another_schema() {
    common::require_kafka();
    let p = common::unique("drill-bad");
    let (topic, _, _) = orders(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drill.kar");
    let file = file.to_str().unwrap().to_string();
    common::backup_cli(&topic, &format!("{p}-.*"), file.as_ref(), &[]);
    // The restore goes through untouched; what a consumer asks by ID gets a schema of other
    // fields, which reads the same bytes as something else.
    let fake = json!({"schema": r#"{"type":"record","name":"Fake","fields":[{"name":"n","type":"long"}]}"#});
    let body = fake.to_string();
    let proxy = http_proxy(common::target_registry(), move |_, method, path, _| {
        let by_id = path.starts_with("/schemas/ids/") && !path.contains("/versions");
        (method == "GET" && by_id).then(|| Fault::Reply(200, body.clone()))
    })
    .await;
    let prefix = format!("{p}-scratch-");
    let addr = proxy.addr.clone();
    let (code, r, out) =
        tokio::task::spawn_blocking(move || drill(&file, &addr, &prefix, &["--show", "2"]))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(r["ok"], false);
    let total = 3 * PER_PARTITION;
    // The bytes are all there; they do not read as the archive's.
    assert_eq!(r["records_equal"], total, "{r}");
    assert_eq!(r["decode_failures"], total, "{r}");
    assert_eq!(r["fields_decoded"], 0, "{r}");
    let first = &r["first_decode_failures"][0];
    assert_eq!(first["topic"], topic);
    assert_eq!(first["target_topic"], format!("{p}-scratch-{topic}"));
    assert_eq!(first["partition"], 0);
    assert_eq!(first["archive_offset"], 0);
    assert_eq!(first["field"], "value");
    let detail = first["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"n\":") && detail.contains("0-0-xxx"),
        "{detail}"
    );
    assert_eq!(r["first_decode_failures"].as_array().unwrap().len(), 2);
    assert_eq!(r["topics_deleted"], true);
}
