//! Prometheus metrics: a backup and a restore scraped over HTTP while they run, the textfile
//! node_exporter's collector reads after a run and after a failure, every text parsed by the
//! Prometheus project's own Python client (scripts/python/metrics.py), as a scraper would.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::common::http_proxy::{Fault, http_proxy};
use crate::common::{self, Registry, producer, send};

/// The samples a parser read: `format` is "openmetrics" or "text" (0.0.4). Panics with the
/// parser's error when it refuses the text.
struct Samples(Vec<Value>);

impl Samples {
    fn parse(text: &str, format: &str) -> Samples {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python/metrics.py");
        let mut child = Command::new(common::python())
            .args([script, format])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "Prometheus' {format} parser refused the metrics: {}\n{text}",
            String::from_utf8_lossy(&o.stderr)
        );
        Samples(serde_json::from_slice(&o.stdout).unwrap())
    }

    /// The samples named `name` whose labels include `labels`.
    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> Vec<&'a Value> {
        self.0
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .collect()
    }

    /// The one sample named `name` with `labels`.
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let m = self.matching(name, labels);
        assert_eq!(m.len(), 1, "{name} {labels:?}: {m:?}");
        m[0]["value"].as_f64().unwrap()
    }

    /// The sum of the samples named `name` with `labels` (0 when there is none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .iter()
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        !self.matching(name, &[]).is_empty()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What a run scraped while it went on left: its exit code, its JSON report, its stderr, the
/// first scrape asked for without `Accept` (text 0.0.4) and the OpenMetrics scrapes taken while
/// the process still ran.
struct Scraped {
    code: Option<i32>,
    report: Value,
    stderr: String,
    plain: Option<String>,
    live: Vec<String>,
}

/// Runs `kar args --metrics-addr 127.0.0.1:PORT`, scraping `/metrics` every 50 ms until it exits.
async fn run_scraped(args: &[String], dir: &Path) -> Scraped {
    let port = free_port();
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(args)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let http = reqwest::Client::new();
    let (mut plain, mut live) = (None, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "kar ran for 120 s");
        if plain.is_none() {
            if let Ok(r) = http.get(&url).send().await {
                let kind = r.headers()["content-type"].to_str().unwrap().to_string();
                assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
                plain = Some(r.text().await.unwrap());
            }
        } else if let Ok(r) = http
            .get(&url)
            .header("Accept", "application/openmetrics-text; version=1.0.0")
            .send()
            .await
        {
            let kind = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
            let body = r.text().await.unwrap();
            // Taken while it ran: the process had not exited after the answer came.
            if child.try_wait().unwrap().is_none() {
                live.push(body);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    Scraped {
        code: status.code(),
        report: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: format!("{stdout}{}", std::fs::read_to_string(&err).unwrap()),
        plain,
        live,
    }
}

/// Whether a scrape was taken before the run ended (it ends by setting `kar_run_running` to 0,
/// then writes its last textfile, then exits).
fn running(body: &str) -> bool {
    body.lines()
        .any(|l| l.starts_with("kar_run_running{") && l.ends_with(" 1"))
}

/// A scrape taken while the run went on that shows some of `total` records written but not all
/// yet, parsed. The pick is made on the text, and the pick parsed by Prometheus' parser.
fn mid_run(s: &Scraped, total: i64) -> Samples {
    let written = |body: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with("kar_records_written_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let body = s
        .live
        .iter()
        .filter(|b| running(b))
        .find(|b| (1.0..total as f64).contains(&written(b)))
        .unwrap_or_else(|| {
            panic!(
                "no scrape while it ran showed some records written ({} live scrapes): {}",
                s.live.len(),
                s.stderr
            )
        });
    Samples::parse(body, "openmetrics")
}

/// A subject in the source registry under an ID of its own (so that a target registry gives it
/// another): (subject, ID).
async fn subject_with_unique_id(what: &str) -> (String, u32) {
    let subject = common::unique(what);
    let id = common::unique_id() as u32;
    let name = format!("M{}", id);
    let schema =
        json!({"type": "record", "name": name, "fields": [{"name": "s", "type": "string"}]});
    common::import(&Registry::source(), &subject, id, 1, &schema.to_string()).await;
    (subject, id)
}

/// A value in Confluent's wire format: magic byte, schema ID, Avro string.
fn framed(id: u32, s: &str) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&common::avro_string(s));
    v
}

/// A registry behind a proxy whose first two answers are 429 with `Retry-After: 1`.
async fn throttled(registry: String) -> crate::common::http_proxy::HttpProxy {
    http_proxy(registry, |n, _, _, _| (n < 2).then_some(Fault::TooMany)).await
}

fn backup_args(topic: &str, subject: &str, registry: &str, out: &Path, prom: &Path) -> Vec<String> {
    [
        "backup",
        "--bootstrap",
        &common::bootstrap(),
        "--topics",
        topic,
        "--registry",
        registry,
        "--subjects",
        subject,
        "--out",
        out.to_str().unwrap(),
        // Slow enough to be scraped mid-way on any machine: zstd 19 on small chunks, one reader,
        // one compressing thread.
        "--zstd-level",
        "19",
        "--chunk-size",
        "16384",
        "--concurrency",
        "1",
        "--compression-threads",
        "1",
        "--metrics-textfile",
        prom.to_str().unwrap(),
        "--job",
        "nightly",
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_backup_is_scraped_and_its_textfile_tells_the_run_and_a_failure() {
    let topic = common::unique("metrics-backup");
    common::create_topic(&topic, 3, &[]).await;
    common::fill(&topic, 3, 60_000, 200).await;
    let (subject, _) = subject_with_unique_id("metrics-backup-value").await;
    let ends = common::end_offsets(&topic, 3).await;
    let proxy = throttled(common::source_registry()).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, prom) = (dir.path().join("a.kar"), dir.path().join("kar-backup.prom"));
    let args = backup_args(&topic, &subject, &proxy.addr, &out, &prom);

    let s = run_scraped(&args, dir.path()).await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let job = [("command", "backup"), ("kar_job", "nightly")];

    // Scraped without Accept: the text format 0.0.4, which Prometheus' text parser reads.
    let plain = Samples::parse(s.plain.as_deref().expect("a first scrape"), "text");
    assert_eq!(plain.one("kar_run_running", &job), 1.0);

    // Mid-way: running, some records written but not all, the registry's 429s already counted.
    let total: i64 = ends.iter().sum();
    let mid = mid_run(&s, total);
    let written = mid.sum("kar_records_written_total", &job);
    assert!(
        written > 0.0 && written < total as f64,
        "{written} of {total}"
    );
    assert!(mid.sum("kar_records_read_total", &job) >= written);
    assert_eq!(mid.one("kar_run_running", &job), 1.0);
    assert!(!mid.has("kar_run_exit_code"), "no exit code while running");
    assert_eq!(mid.one("kar_registry_throttled_total", &job), 2.0);
    assert_eq!(mid.one("kar_partitions_planned", &job), 3.0);

    // The textfile after the run: every count exact.
    let t = Samples::parse(&std::fs::read_to_string(&prom).unwrap(), "text");
    assert!(
        t.0.iter()
            .all(|x| x["labels"]["command"] == "backup" && x["labels"]["kar_job"] == "nightly")
    );
    for (p, end) in ends.iter().enumerate() {
        let part = p.to_string();
        let at = [("topic", topic.as_str()), ("partition", part.as_str())];
        assert_eq!(
            t.one("kar_records_read_total", &at),
            *end as f64,
            "partition {p}"
        );
        assert_eq!(
            t.one("kar_records_written_total", &at),
            *end as f64,
            "partition {p}"
        );
        assert_eq!(t.one("kar_partition_lag", &at), 0.0, "partition {p}");
        assert!(t.one("kar_written_bytes_total", &at) > 0.0);
    }
    let r = &s.report;
    assert_eq!(
        t.sum("kar_read_bytes_total", &[]),
        r["record_bytes"].as_f64().unwrap(),
        "{r}"
    );
    assert_eq!(
        t.one("kar_chunk_write_seconds_count", &[]),
        r["chunks"].as_f64().unwrap()
    );
    assert!(t.one("kar_fsync_seconds_count", &[]) >= 1.0);
    assert_eq!(t.one("kar_partitions_planned", &[]), 3.0);
    assert_eq!(t.one("kar_partitions_done", &[]), 3.0);
    assert_eq!(t.one("kar_partitions_failed", &[]), 0.0);
    assert_eq!(t.one("kar_registry_throttled_total", &[]), 2.0);
    assert_eq!(t.one("kar_registry_retries_total", &[]), 2.0);
    assert!(t.one("kar_registry_retry_wait_seconds_total", &[]) >= 2.0);
    assert_eq!(
        t.sum("kar_registry_requests_total", &[("status", "429")]),
        2.0
    );
    assert!(t.sum("kar_registry_requests_total", &[("status", "200")]) > 2.0);
    assert_eq!(t.one("kar_subjects_backed_up_total", &[]), 1.0);
    assert_eq!(t.one("kar_schema_versions_backed_up_total", &[]), 1.0);
    let size = std::fs::metadata(&out).unwrap().len();
    assert_eq!(t.one("kar_archive_size_bytes", &[]), size as f64);
    assert_eq!(t.one("kar_run_exit_code", &[]), 0.0);
    assert_eq!(t.one("kar_run_running", &[]), 0.0);
    let success = t.one("kar_last_success_timestamp_seconds", &[]);
    assert!((unix_now() - success).abs() < 120.0, "{success}");
    assert!(t.one("kar_last_success_duration_seconds", &[]) > 0.0);
    assert!(!t.has("kar_last_failure_timestamp_seconds"));

    // The same job fails (its archive exists): the file says so, and still when it last
    // succeeded.
    let (code, _, text) =
        common::kar_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, Some(2), "{text}");
    let t = Samples::parse(&std::fs::read_to_string(&prom).unwrap(), "text");
    assert_eq!(t.one("kar_run_exit_code", &[]), 2.0);
    assert_eq!(t.one("kar_last_success_timestamp_seconds", &[]), success);
    assert!(t.one("kar_last_failure_timestamp_seconds", &[]) >= success);
    assert_eq!(t.sum("kar_records_read_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_restore_is_scraped_and_counts_ids_rewritten_and_left() {
    let topic = common::unique("metrics-restore");
    common::create_topic(&topic, 2, &[]).await;
    let (subject, id) = subject_with_unique_id("metrics-restore-value").await;
    let p = producer(&[]);
    for i in 0..30 {
        let v = framed(id, &format!("known {i}"));
        send(
            &p,
            &topic,
            0,
            &crate::backup::rec(0, i, None, Some(&v), &[]),
        );
    }
    for i in 0..5 {
        let v = framed(0x7fff_fff0, &format!("unknown {i}"));
        send(
            &p,
            &topic,
            1,
            &crate::backup::rec(1, i, None, Some(&v), &[]),
        );
    }
    common::fill(&topic, 2, 20_000, 100).await;
    let ends = common::end_offsets(&topic, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("r.kar");
    common::backup_cli(&topic, &subject, &archive, &[]);

    let proxy = throttled(common::target_registry()).await;
    let to = common::unique("metrics-restored");
    let prom = dir.path().join("kar-restore.prom");
    let mut args = common::restore_args(
        archive.to_str().unwrap(),
        &topic,
        &to,
        &dir.path().join("state"),
    );
    let registry = args.iter().position(|a| a == "--registry").unwrap() + 1;
    args[registry] = proxy.addr.clone();
    args.extend(
        [
            "--schema-ids",
            "rewrite",
            "--metrics-textfile",
            prom.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let s = run_scraped(&args, dir.path()).await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);

    // While it ran (its pre-flight waits out the two 429s): running, the 429s counted.
    let throttled = s
        .live
        .iter()
        .filter(|b| running(b))
        .find(|b| b.contains(r#"kar_registry_throttled_total{command="restore"} 2"#))
        .unwrap_or_else(|| panic!("no live scrape showed the 429s: {}", s.stderr));
    let live = Samples::parse(throttled, "openmetrics");
    assert_eq!(live.one("kar_run_running", &[("command", "restore")]), 1.0);
    assert!(!live.has("kar_run_exit_code"));

    let t = Samples::parse(&std::fs::read_to_string(&prom).unwrap(), "text");
    for (p, end) in ends.iter().enumerate() {
        let part = p.to_string();
        let at = [("topic", to.as_str()), ("partition", part.as_str())];
        assert_eq!(
            t.one("kar_records_written_total", &at),
            *end as f64,
            "partition {p}"
        );
        assert_eq!(t.one("kar_partition_lag", &at), 0.0, "partition {p}");
    }
    let at = [("topic", to.as_str())];
    assert_eq!(t.one("kar_schema_ids_rewritten_total", &at), 30.0);
    assert_eq!(t.one("kar_schema_ids_unknown_total", &at), 5.0);
    assert_eq!(t.one("kar_schema_versions_registered_total", &[]), 1.0);
    assert_eq!(t.one("kar_registry_throttled_total", &[]), 2.0);
    assert_eq!(t.one("kar_partitions_done", &[]), 2.0);
    assert_eq!(t.one("kar_run_exit_code", &[]), 0.0);
    assert!(
        !t.has("kar_import_mode_changes_total"),
        "no IMPORT when rewriting"
    );

    // Run again: everything was restored; nothing is written, nothing is left.
    let again = dir.path().join("kar-restore-again.prom");
    let n = args.len();
    args[n - 1] = again.to_str().unwrap().to_string();
    let (code, _, text) =
        common::kar_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, Some(0), "{text}");
    let t = Samples::parse(&std::fs::read_to_string(&again).unwrap(), "text");
    for p in 0..ends.len() {
        let part = p.to_string();
        let at = [("topic", to.as_str()), ("partition", part.as_str())];
        assert_eq!(t.one("kar_partition_lag", &at), 0.0, "partition {p}");
    }
    assert_eq!(t.sum("kar_records_written_total", &[]), 0.0);
    assert_eq!(t.one("kar_partitions_done", &[]), 2.0);
    assert_eq!(t.one("kar_run_exit_code", &[]), 0.0);
}

/// Kept IDs put the subject into IMPORT mode and back: in the pre-flight's probe and for the
/// registration, each counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_keeping_ids_counts_its_import_mode_changes() {
    let topic = common::unique("metrics-keep");
    common::create_topic(&topic, 1, &[]).await;
    let (subject, id) = subject_with_unique_id("metrics-keep-value").await;
    // Archived in IMPORT mode (a registry that is itself a migration target): the restore sets
    // that mode at the end, and that is the way out of its own IMPORT, not into it.
    Registry::source()
        .ok(
            reqwest::Method::PUT,
            &format!("/mode/{subject}?force=true"),
            Some(json!({"mode": "IMPORT"})),
        )
        .await;
    let v = framed(id, "kept");
    send(
        &producer(&[]),
        &topic,
        0,
        &crate::backup::rec(0, 0, None, Some(&v), &[]),
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("k.kar");
    common::backup_cli(&topic, &subject, &archive, &[]);
    let prom = dir.path().join("kar-keep.prom");
    let to = common::unique("metrics-kept");
    let mut args = common::restore_args(
        archive.to_str().unwrap(),
        &topic,
        &to,
        &dir.path().join("state"),
    );
    args.extend(["--metrics-textfile", prom.to_str().unwrap()].map(String::from));
    let (code, _, text) =
        common::kar_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, Some(0), "{text}");
    let t = Samples::parse(&std::fs::read_to_string(&prom).unwrap(), "text");
    // Into IMPORT and back in the pre-flight's probe, and for the registration.
    assert_eq!(
        t.one("kar_import_mode_changes_total", &[("change", "into")]),
        2.0
    );
    assert_eq!(
        t.one("kar_import_mode_changes_total", &[("change", "back")]),
        2.0
    );
    assert_eq!(t.one("kar_schema_versions_registered_total", &[]), 1.0);
    assert_eq!(t.sum("kar_schema_ids_rewritten_total", &[]), 0.0);
}

/// What the metrics need is checked before the command does anything: a port in use, a textfile
/// that cannot be written. Exit 2, the address or path named, nothing done; a textfile that could
/// be written says the run failed.
#[test]
fn a_port_in_use_or_an_unwritable_textfile_stops_the_command_first() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let key = dir.path().join("k");
    let prom = dir.path().join("kar.prom");
    let keygen = |extra: &[&str]| {
        let mut args = vec!["keygen", "--unencrypted", "--out", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        common::kar_cli(&args, &[])
    };
    let prom_arg = prom.to_str().unwrap();
    let (code, _, text) = keygen(&["--metrics-addr", &addr, "--metrics-textfile", prom_arg]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("serving metrics on {addr}")),
        "{text}"
    );
    assert!(!dir.path().join("k.pub").exists(), "no key was made");
    let t = Samples::parse(&std::fs::read_to_string(&prom).unwrap(), "text");
    assert_eq!(t.one("kar_run_exit_code", &[("command", "keygen")]), 2.0);
    assert!(t.has("kar_last_failure_timestamp_seconds"));

    let nowhere = dir.path().join("no-such-dir/kar.prom");
    let (code, _, text) = keygen(&["--metrics-textfile", nowhere.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "writing the metrics textfile {}",
            nowhere.display()
        )),
        "{text}"
    );
    assert!(!dir.path().join("k.pub").exists(), "no key was made");

    // The same command with what it needs: it runs.
    let (code, _, text) = keygen(&["--metrics-textfile", prom_arg]);
    assert_eq!(code, Some(0), "{text}");
    assert!(dir.path().join("k.pub").exists());
}
