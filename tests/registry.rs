//! The Schema Registry snapshot against the real registry: every captured field equals what the
//! registry serves; referenced subjects are pulled in and ordered first; the export tree; and a
//! fault-injecting proxy in front of the registry (429 with Retry-After, 503, dropped
//! connections) changes nothing in the result while the request rate stays within the limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kar::archive::Archive;
use kar::backup::{BackupOptions, backup};
use kar::kafka::KafkaConnection;
use kar::registry::client::{RegistryClient, RegistrySettings};
use kar::registry::snapshot::{RegistrySnapshot, SubjectFilter, capture, read_from_archive};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::http_proxy::{Fault, http_proxy};
use crate::common::{self, Registry};

struct Seeded {
    prefix: String,
    money: String,
    address: String,
    orders: String,
    events: String,
    proto: String,
}

/// Avro with references and several versions, JSON Schema with a soft-deleted version, Protobuf,
/// and per-subject compatibility and mode overrides, under a unique prefix.
async fn seed(reg: &Registry) -> Seeded {
    let prefix = common::unique("sr");
    let money = format!("{prefix}-common-money-value");
    let address = format!("{prefix}-common-address-value");
    let orders = format!("{prefix}-orders-value");
    let events = format!("{prefix}-events-value");
    let proto = format!("{prefix}-proto-value");
    let money_v1 = r#"{"type":"record","name":"Money","namespace":"kar.t","fields":[{"name":"units","type":"long"}]}"#;
    let money_v2 = r#"{"type":"record","name":"Money","namespace":"kar.t","fields":[{"name":"units","type":"long"},{"name":"currency","type":"string","default":"EUR"}]}"#;
    reg.register(&money, json!({"schema": money_v1})).await;
    reg.register(&money, json!({"schema": money_v2})).await;
    reg.register(&address, json!({"schema": r#"{"type":"record","name":"Address","namespace":"kar.t","fields":[{"name":"city","type":"string"}]}"#})).await;
    let order = r#"{"type":"record","name":"Order","namespace":"kar.t","fields":[{"name":"total","type":"kar.t.Money"},{"name":"ship_to","type":"kar.t.Address"}]}"#;
    reg.register(
        &orders,
        json!({"schema": order, "references": [
            {"name": "kar.t.Money", "subject": money, "version": 2},
            {"name": "kar.t.Address", "subject": address, "version": 1}]}),
    )
    .await;
    reg.ok(
        Method::PUT,
        &format!("/config/{events}"),
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    reg.register(&events, json!({"schemaType": "JSON", "schema": r#"{"type":"object","properties":{"a":{"type":"string"}}}"#})).await;
    reg.register(&events, json!({"schemaType": "JSON", "schema": r#"{"type":"object","properties":{"b":{"type":"integer"}}}"#})).await;
    reg.ok(
        Method::DELETE,
        &format!("/subjects/{events}/versions/1"),
        None,
    )
    .await;
    reg.register(&proto, json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\npackage kar.t;\n\nmessage Ping {\n  string id = 1;\n}\n"})).await;
    reg.ok(
        Method::PUT,
        &format!("/config/{money}"),
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    reg.ok(
        Method::PUT,
        &format!("/mode/{address}"),
        Some(json!({"mode": "READONLY"})),
    )
    .await;
    Seeded {
        prefix,
        money,
        address,
        orders,
        events,
        proto,
    }
}

fn filter(s: &Seeded) -> SubjectFilter {
    // Money and address are not selected: they must be pulled in through orders' references.
    SubjectFilter {
        include: vec![s.orders.clone(), s.events.clone(), s.proto.clone()],
        exclude: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_holds_every_subject_version_config_and_mode_as_the_registry_serves_them() {
    let reg = Registry::source();
    let s = seed(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sr.kar");
    let mut o = BackupOptions::new(KafkaConnection::default(), &out);
    o.registry = Some(RegistrySettings::new(common::source_registry()));
    o.subjects = filter(&s);
    let report = tokio::task::spawn_blocking(move || backup(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap();
    let summary = report.registry.unwrap();
    assert_eq!(summary.subjects, 5);
    assert_eq!(summary.versions, 7);
    assert_eq!(summary.pulled_in, vec![s.address.clone(), s.money.clone()]);
    assert!(summary.order_complete, "{:?}", summary.order_problems);

    let a = Archive::open(&out).unwrap();
    assert!(
        kar::archive::verify::verify(&out, kar::archive::verify::VerifyLevel::Full)
            .unwrap()
            .ok
    );
    let snap = read_from_archive(&a).unwrap().unwrap();
    let inspected = kar::archive::inspect::inspect(&out).unwrap();
    assert_eq!(
        inspected
            .schema_subjects
            .iter()
            .map(|x| x.versions)
            .sum::<usize>(),
        7
    );
    let global = reg.get("/config").await;
    assert_eq!(
        snap.global.compatibility.as_deref(),
        global["compatibilityLevel"].as_str()
    );

    for st in &snap.subjects {
        assert!(
            st.subject.starts_with(&s.prefix),
            "{} leaked in",
            st.subject
        );
        let (status, cfg) = reg
            .call(
                Method::GET,
                &format!("/config/{}?defaultToGlobal=false", st.subject),
                None,
            )
            .await;
        let want_cfg = if status == 200 {
            cfg["compatibilityLevel"].as_str().map(str::to_string)
        } else {
            None
        };
        assert_eq!(st.compatibility, want_cfg, "{} compatibility", st.subject);
        let (status, mode) = reg
            .call(
                Method::GET,
                &format!("/mode/{}?defaultToGlobal=false", st.subject),
                None,
            )
            .await;
        let want_mode = if status == 200 {
            mode["mode"].as_str().map(str::to_string)
        } else {
            None
        };
        assert_eq!(st.mode, want_mode, "{} mode", st.subject);
        let live: Vec<i64> = reg
            .get(&format!("/subjects/{}/versions", st.subject))
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        for v in &st.versions {
            let want = reg
                .get(&format!(
                    "/subjects/{}/versions/{}?deleted=true",
                    st.subject, v.version
                ))
                .await;
            assert_eq!(
                i64::from(v.id),
                want["id"].as_i64().unwrap(),
                "{} v{} id",
                st.subject,
                v.version
            );
            assert_eq!(v.schema_type, want["schemaType"].as_str().unwrap_or("AVRO"));
            let text = a
                .read_content(&kar::format::parse_hex(&v.schema).unwrap())
                .unwrap();
            assert_eq!(
                text,
                want["schema"].as_str().unwrap().as_bytes(),
                "{} v{}: schema text byte for byte",
                st.subject,
                v.version
            );
            assert_eq!(
                serde_json::to_value(&v.references).unwrap(),
                want.get("references").cloned().unwrap_or(json!([]))
            );
            assert_eq!(
                v.deleted,
                !live.contains(&i64::from(v.version)),
                "{} v{} deleted flag",
                st.subject,
                v.version
            );
            // The index resolves the ID to the same text.
            let blob = a.schema_blob(v.id).unwrap().unwrap();
            assert_eq!(a.read_content(&blob).unwrap(), text);
        }
    }
    let find = |name: &str| snap.subjects.iter().find(|x| x.subject == name).unwrap();
    assert_eq!(find(&s.money).compatibility.as_deref(), Some("FULL"));
    assert_eq!(find(&s.address).mode.as_deref(), Some("READONLY"));
    assert_eq!(
        find(&s.events)
            .versions
            .iter()
            .map(|v| (v.version, v.deleted))
            .collect::<Vec<_>>(),
        vec![(1, true), (2, false)]
    );
    assert_eq!(find(&s.proto).versions[0].schema_type, "PROTOBUF");
    assert_eq!(find(&s.events).versions[0].schema_type, "JSON");

    // Referenced versions come before the versions that reference them.
    let pos = |subject: &str, version: i32| {
        snap.restore_order
            .iter()
            .position(|x| x.subject == subject && x.version == version)
            .unwrap()
    };
    assert_eq!(snap.restore_order.len(), 7);
    assert!(pos(&s.money, 2) < pos(&s.orders, 1));
    assert!(pos(&s.address, 1) < pos(&s.orders, 1));

    // The export tree, readable without kar.
    let exp = dir.path().join("export");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_kar"))
        .arg("schemas")
        .arg(&out)
        .arg("--export")
        .arg(&exp)
        .output()
        .unwrap();
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let read = |p: std::path::PathBuf| -> Value {
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    let sub = |name: &str| {
        exp.join("subjects")
            .join(kar::registry::export::file_name(name))
    };
    let v1 = read(sub(&s.orders).join("v1.json"));
    let want = reg.get(&format!("/subjects/{}/versions/1", s.orders)).await;
    assert_eq!(v1["schema"], want["schema"]);
    assert_eq!(v1["id"], want["id"]);
    assert_eq!(v1["references"], want["references"]);
    let meta = read(sub(&s.events).join("_metadata.json"));
    assert_eq!(meta["deleted_versions"], json!([1]));
    assert_eq!(meta["compatibility"], "NONE");
    let manifest = read(exp.join("_manifest.json"));
    assert_eq!(manifest["counts"]["versions"], 7);
    assert_eq!(
        manifest["ids"][want["id"].to_string()][0]["subject"],
        json!(s.orders)
    );
    assert_eq!(
        read(exp.join("_global_config.json"))["compatibility"],
        global["compatibilityLevel"]
    );
}

fn without_provenance(mut s: RegistrySnapshot) -> RegistrySnapshot {
    s.source = String::new();
    s.captured_at_ms = 0;
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_in_front_of_the_registry_change_nothing_and_the_rate_limit_holds() {
    let reg = Registry::source();
    let s = seed(&reg).await;
    let direct = capture(
        Arc::new(RegistryClient::new(&RegistrySettings::new(common::source_registry())).unwrap()),
        &filter(&s),
        0,
    )
    .await
    .unwrap();

    // Of every 10 requests, 2 get 429 with Retry-After, 1 gets 503 and 1 has its connection
    // dropped; the rest are forwarded.
    let proxy = http_proxy(common::source_registry(), |n, _, _, _| match n % 10 {
        1 | 6 => Some(Fault::TooMany),
        3 => Some(Fault::Unavailable),
        8 => Some(Fault::Drop),
        _ => None,
    })
    .await;
    let mut settings = RegistrySettings::new(&proxy.addr);
    settings.username = Some("kar-user".into());
    settings.password = Some(kar::config::Secret::new("kar-pass"));
    settings.rate_limit = 10;
    settings.deadline_secs = 60;
    let started = Instant::now();
    let through = capture(
        Arc::new(RegistryClient::new(&settings).unwrap()),
        &filter(&s),
        0,
    )
    .await
    .unwrap();
    let took = started.elapsed();

    assert_eq!(
        without_provenance(through.snapshot),
        without_provenance(direct.snapshot),
        "same content through the faults"
    );
    assert_eq!(through.texts, direct.texts);
    let faults = proxy.faults.lock().unwrap().clone();
    assert!(
        faults.get("429").copied().unwrap_or(0) >= 2
            && faults.contains_key("503")
            && faults.contains_key("drop"),
        "{faults:?}"
    );

    // Every request, retries included, carried the basic credentials.
    let auth = proxy.auth.lock().unwrap().clone();
    assert!(
        !auth.is_empty() && auth.iter().all(|a| a == "Basic a2FyLXVzZXI6a2FyLXBhc3M="),
        "{auth:?}"
    );

    // The proxy never saw more than the limit in any one-second window (plus the one token the
    // bucket starts with).
    let seen = proxy.seen.lock().unwrap().clone();
    for (i, t) in seen.iter().enumerate() {
        let in_window = seen[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 11,
            "{in_window} requests within one second from request {i} (limit 10/s)"
        );
    }
    assert!(took >= Duration::from_secs(1), "Retry-After was honoured");
}

#[tokio::test]
async fn a_registry_error_names_the_endpoint_status_and_code_without_credentials() {
    let mut settings = RegistrySettings::new(
        common::source_registry().replace("http://", "http://alice:s3cret-pw@"),
    );
    settings.max_attempts = 1;
    let client = RegistryClient::new(&settings).unwrap();
    let err = client
        .get::<Value>("/subjects/kar-surely-missing-subject/versions")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.error_code(), Some(40401));
    assert!(
        msg.contains("/subjects/kar-surely-missing-subject/versions") && msg.contains("40401"),
        "{msg}"
    );
    assert!(
        !msg.contains("s3cret-pw") && !client.base_url().contains("s3cret-pw"),
        "{msg}"
    );

    let mut dead = RegistrySettings::new("http://127.0.0.1:1");
    dead.max_attempts = 3;
    dead.deadline_secs = 10;
    let err = RegistryClient::new(&dead)
        .unwrap()
        .get::<Value>("/subjects")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GET http://127.0.0.1:1/subjects")
            && err.contains("gave up after 3 attempts")
            && err.contains("connect"),
        "{err}"
    );
}

#[test]
fn a_reference_cycle_is_stored_as_an_incomplete_order_and_shown() {
    // The registry refuses dangling references even in IMPORT mode, so the cycle is built here.
    use kar::registry::graph::{Node, SubjectVersion, restore_order};
    let sv = |s: &str| SubjectVersion {
        subject: s.into(),
        version: 1,
    };
    let order = restore_order(&[
        Node {
            at: sv("a-value"),
            id: 1,
            references: vec![sv("b-value")],
        },
        Node {
            at: sv("b-value"),
            id: 2,
            references: vec![sv("a-value")],
        },
        Node {
            at: sv("c-value"),
            id: 3,
            references: vec![],
        },
    ]);
    let snap = RegistrySnapshot {
        kind: "schema-registry".into(),
        source: "test".into(),
        captured_at_ms: 0,
        global: Default::default(),
        subjects: vec![],
        restore_order: order.order,
        order_complete: order.complete,
        order_problems: order.problems,
        pulled_in: vec![],
        context: None,
        contexts: vec![],
        dek_registry: None,
    };
    let mut w = kar::archive::ArchiveWriter::new(Vec::new(), "mem", Default::default()).unwrap();
    w.add_metadata("schema-registry", &serde_json::to_vec(&snap).unwrap())
        .unwrap();
    let bytes = w
        .finish(kar::format::manifest::ArchiveStatus::Complete, vec![])
        .unwrap()
        .0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycle.kar");
    std::fs::write(&path, bytes).unwrap();
    let back = read_from_archive(&Archive::open(&path).unwrap())
        .unwrap()
        .unwrap();
    assert!(!back.order_complete);
    assert_eq!(back.restore_order, vec![sv("c-value")]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kar"))
        .arg("schemas")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("INCOMPLETE")
            && text.contains("reference cycle: a-value v1 -> b-value v1 -> a-value v1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_speaks_tls_with_a_client_certificate_and_basic_auth() {
    use kar::config::Secret;
    let tls = common::tls_dir();
    let secure = |user: &str, password: &str, cert: bool| {
        let mut s = RegistrySettings::new(common::secure_registry());
        s.username = Some(user.into());
        s.password = Some(Secret::new(password));
        s.ssl_ca_location = Some(tls.join("ca.pem"));
        if cert {
            s.ssl_certificate_location = Some(tls.join("client.pem"));
            s.ssl_key_location = Some(tls.join("client.key"));
        }
        s.max_attempts = 2;
        s
    };
    let client =
        RegistryClient::new(&secure(common::SCRAM_USER, common::SCRAM_PASSWORD, true)).unwrap();
    let subject = format!("{}-value", common::unique("secure"));
    let schema = r#"{"type":"record","name":"Secure","fields":[{"name":"s","type":"string"}]}"#;
    let reply: Value = client
        .request(
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(&json!({"schema": schema})),
        )
        .await
        .unwrap();
    let id = reply["id"].as_u64().unwrap() as u32;

    // A registry-only backup through TLS, client certificate and basic auth.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("secure.kar");
    let mut o = BackupOptions::new(KafkaConnection::default(), &out);
    o.registry = Some(secure(common::SCRAM_USER, common::SCRAM_PASSWORD, true));
    o.subjects = SubjectFilter {
        include: vec![subject.clone()],
        exclude: vec![],
    };
    tokio::task::spawn_blocking(move || backup(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap();
    let a = Archive::open(&out).unwrap();
    let snap = read_from_archive(&a).unwrap().unwrap();
    assert_eq!(snap.subjects.len(), 1);
    assert_eq!(snap.subjects[0].versions[0].id, id);
    let text = a
        .read_content(&a.schema_blob(id).unwrap().unwrap())
        .unwrap();
    assert_eq!(text, schema.as_bytes());
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        !bytes
            .windows(common::SCRAM_PASSWORD.len())
            .any(|w| w == common::SCRAM_PASSWORD.as_bytes())
    );

    // A wrong password is a 401 naming the endpoint, not the password; no certificate, no TLS.
    let wrong = RegistryClient::new(&secure(common::SCRAM_USER, "not-it-4711", true)).unwrap();
    let err = wrong.get::<Value>("/subjects").await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        err.to_string()
            .contains("GET https://127.0.0.1:8083/subjects")
            && !err.to_string().contains("not-it-4711"),
        "{err}"
    );
    let anonymous =
        RegistryClient::new(&secure(common::SCRAM_USER, common::SCRAM_PASSWORD, false)).unwrap();
    let err = anonymous
        .get::<Value>("/subjects")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up after 2 attempts"), "{err}");
}

#[tokio::test]
async fn an_html_reply_names_the_registry_it_came_from() {
    // A captive portal or a misrouted proxy answering 200 with a web page.
    let proxy = http_proxy(common::source_registry(), |_, _, _, _| {
        Some(Fault::Reply(
            200,
            "<html><body>Sign in</body></html>".into(),
        ))
    })
    .await;
    let url = proxy.addr.clone();
    let client = RegistryClient::new(&RegistrySettings::new(&url)).unwrap();
    let err = client
        .get::<Value>("/subjects")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("GET {url}/subjects"))
            && err.contains("not what the Schema Registry API documents"),
        "{err}"
    );
}

/// The registry at `url` captured at 1,000 requests a second (the tests' proxies and own
/// registries are local).
async fn capture_fast(url: &str, filter: &SubjectFilter) -> kar::registry::snapshot::Captured {
    let mut settings = RegistrySettings::new(url);
    settings.rate_limit = 1000;
    capture(Arc::new(RegistryClient::new(&settings).unwrap()), filter, 0)
        .await
        .unwrap()
}

/// A registry that caps the pages of its bulk listing (Confluent: `schema.search.max.limit`,
/// 1,000 by default; here a proxy in front of the real registry caps them at 100) is paged until
/// an empty page: a subject with 1,050 versions comes out whole, none of them taken for
/// soft-deleted. (The listing stopped at the first page shorter than the 500 asked for: the
/// subject counted as covered, and every version after the first page was lost, silently.)
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_caps_its_pages_is_read_to_the_end() {
    let p = common::unique("pages");
    let reg = Registry::source();
    let subject = format!("{p}-many-value");
    reg.ok(
        Method::PUT,
        &format!("/config/{subject}"),
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    for k in 0..1050 {
        let schema = format!(
            r#"{{"type":"record","name":"R","fields":[{{"name":"n","type":"int","default":{k}}}]}}"#
        );
        reg.register(&subject, json!({ "schema": schema })).await;
    }
    let limit = regex::Regex::new(r"limit=\d+").unwrap();
    let proxy = http_proxy(common::source_registry(), move |_, method, path, _| {
        (method == "GET" && path.starts_with("/schemas?"))
            .then(|| Fault::Rewrite(limit.replace(path, "limit=100").into_owned()))
    })
    .await;
    let filter = SubjectFilter {
        include: vec![format!("{p}-.*")],
        exclude: vec![],
    };
    let got = capture_fast(&proxy.addr, &filter).await;
    assert!(proxy.faults.lock().unwrap()["rewrite"] > 20, "pages of 100");
    let s = &got.snapshot.subjects[0];
    assert_eq!(s.subject, subject);
    let versions: Vec<i32> = s.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, (1..=1050).collect::<Vec<_>>());
    assert!(s.versions.iter().all(|v| !v.deleted));
}

/// Captures a registry of the test's own holding one subject of 250 versions through a proxy
/// that caps listing pages at 50 and shifts each page after the first by `shift` entries, as
/// deletions ahead of the offset would; the paths the proxy saw.
async fn capture_shifted(shift: u64) -> (kar::registry::snapshot::Captured, Vec<String>) {
    let own = common::own_registry::OwnRegistry::start();
    let reg = Registry::new(&own.url);
    let subject = "shifting-value";
    reg.ok(
        Method::PUT,
        &format!("/config/{subject}"),
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    for k in 0..250 {
        let schema = format!(
            r#"{{"type":"record","name":"R","fields":[{{"name":"n","type":"int","default":{k}}}]}}"#
        );
        reg.register(subject, json!({ "schema": schema })).await;
    }
    let (limit, offset) = (
        regex::Regex::new(r"limit=\d+").unwrap(),
        regex::Regex::new(r"offset=(\d+)").unwrap(),
    );
    let paths = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = paths.clone();
    let proxy = http_proxy(own.url.clone(), move |_, method, path, _| {
        seen.lock().unwrap().push(path.to_string());
        if method != "GET" || !path.starts_with("/schemas?") {
            return None;
        }
        let at: u64 = offset.captures(path)?[1].parse().ok()?;
        let shifted = if at > 0 { at + shift } else { at };
        let path = offset.replace(path, format!("offset={shifted}"));
        Some(Fault::Rewrite(
            limit.replace(&path, "limit=50").into_owned(),
        ))
    })
    .await;
    let got = capture_fast(&proxy.addr, &SubjectFilter::default()).await;
    let s = &got.snapshot.subjects[0];
    let versions: Vec<i32> = s.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, (1..=250).collect::<Vec<_>>());
    let deleted: Vec<i32> = s
        .versions
        .iter()
        .filter(|v| v.deleted)
        .map(|v| v.version)
        .collect();
    assert_eq!(deleted, Vec::<i32>::new());
    let paths = paths.lock().unwrap().clone();
    (got, paths)
}

/// Offset paging over a registry in use skips entries: a subject deleted meanwhile that sorts
/// before the page shifts every later one back. Each page reads the end of the one before again
/// and must hold its last entry: a shift of one entry is within that overlap, and every one of
/// 250 versions is captured from the listing alone (no version list read), none taken for
/// soft-deleted. (The skipped versions were lost, silently, and a version missing from the live
/// listing was restored as soft-deleted.)
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_that_shifts_under_a_registry_in_use_loses_nothing() {
    let (_, paths) = capture_shifted(1).await;
    assert!(
        !paths.iter().any(|p| p.contains("/versions?")),
        "{paths:#?}"
    );
}

/// A shift wider than the overlap leaves a page that does not hold the last entry of the page
/// before: the listing is read again, and after three attempts the capture reads the subject's
/// version lists and each version alone instead. Nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_that_shifts_past_the_overlap_is_read_subject_by_subject() {
    let (_, paths) = capture_shifted(60).await;
    let firsts = paths.iter().filter(|p| p.contains("offset=0&")).count();
    assert_eq!(
        firsts, 3,
        "three attempts at the listing with deleted versions: {paths:#?}"
    );
    assert!(paths.iter().any(|p| p.contains("/versions?deleted=true")));
    assert_eq!(
        paths.iter().filter(|p| p.contains("/versions/")).count(),
        250
    );
}

/// `n` subjects of three versions each in a registry of the test's own, under `prefix`.
async fn seed_versions(reg: &Registry, prefix: &str, n: usize) {
    for s in 0..n {
        let subject = format!("{prefix}-{s:02}-value");
        for v in 0..3 {
            let fields: Vec<Value> = (0..=v)
                .map(|k| json!({"name": format!("f{k}"), "type": ["null", "string"], "default": null}))
                .collect();
            let schema = json!({"type": "record", "name": format!("R{s}"), "fields": fields});
            reg.register(&subject, json!({"schema": schema.to_string()}))
                .await;
        }
    }
}

/// What each version read alone serves, as `GET /schemas?deleted=true` of Confluent's registry
/// would list it (every member a version has), in AxonOps' order (by ID, then subject and
/// version).
async fn complete_listing(reg: &Registry) -> Vec<Value> {
    let mut out = Vec::new();
    for e in reg.get("/schemas?deleted=true").await.as_array().unwrap() {
        let (s, v) = (
            e["subject"].as_str().unwrap(),
            e["version"].as_i64().unwrap(),
        );
        out.push(reg.get(&format!("/subjects/{s}/versions/{v}")).await);
    }
    out.sort_by_key(|e| {
        (
            e["id"].as_i64().unwrap(),
            e["subject"].as_str().unwrap().to_string(),
            e["version"].as_i64().unwrap(),
        )
    });
    out
}

/// From Confluent's registry, whose bulk listing carries every member of a version, a snapshot
/// takes two requests a subject (its configuration and mode) and one a listing page, plus a few
/// of its own: no version list, no version read alone but a sample of eight. A proxy in front of
/// the real registry answers `GET /v1/metadata/version` as Confluent's does and serves the
/// listing Confluent's would (every version's members, pages of 50); the snapshot equals the
/// one taken directly, where AxonOps' listing (no metadata) has every version read alone.
/// (Every subject's version lists, latest version and, on AxonOps, every version were read:
/// 7 requests a subject.)
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_with_complete_listings_takes_two_requests_a_subject() {
    let own = common::own_registry::OwnRegistry::start();
    let reg = Registry::new(&own.url);
    seed_versions(&reg, "many", 40).await;
    let listing = Arc::new(complete_listing(&reg).await);
    assert_eq!(listing.len(), 120);
    let direct = capture_fast(&own.url, &SubjectFilter::default()).await;
    // AxonOps: every version read alone, besides each subject's configuration and mode.
    assert!(direct.requests >= 120 + 80, "{}", direct.requests);

    let paths = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (offset, seen) = (regex::Regex::new(r"offset=(\d+)").unwrap(), paths.clone());
    let proxy = http_proxy(own.url.clone(), move |_, _, path, _| {
        seen.lock().unwrap().push(path.to_string());
        if path == "/v1/metadata/version" {
            return Some(Fault::Reply(
                200,
                r#"{"version":"8.1.0","commitId":"0123456789abcdef"}"#.into(),
            ));
        }
        if path.starts_with("/schemas?deleted=") {
            // Nothing is soft-deleted: both listings are the same.
            let at: usize = offset.captures(path)?[1].parse().ok()?;
            let page: Vec<&Value> = listing.iter().skip(at).take(50).collect();
            return Some(Fault::Reply(200, serde_json::to_string(&page).unwrap()));
        }
        None
    })
    .await;
    let got = capture_fast(&proxy.addr, &SubjectFilter::default()).await;
    assert_eq!(
        without_provenance(got.snapshot),
        without_provenance(direct.snapshot)
    );
    assert_eq!(got.texts, direct.texts);
    let paths = paths.lock().unwrap().clone();
    assert_eq!(got.requests, paths.len() as u64, "{paths:#?}");
    let count = |f: &dyn Fn(&str) -> bool| paths.iter().filter(|p| f(p)).count();
    let pages = count(&|p| p.starts_with("/schemas?"));
    // 120 entries in pages of 50, each reading 32 of the page before again (offsets 0, 18, 36,
    // 54, 72, and 88, which shows the end), for both listings.
    assert_eq!(pages, 2 * 6, "{paths:#?}");
    assert_eq!(count(&|p| p.starts_with("/config/")), 40);
    assert_eq!(count(&|p| p.starts_with("/mode/")), 40);
    assert_eq!(count(&|p| p.contains("/versions/")), 8, "the sample");
    assert_eq!(count(&|p| p.contains("/versions?")), 0, "no version list");
    assert!(paths.len() <= 2 * 40 + pages + 16, "{paths:#?}");
}
