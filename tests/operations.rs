//! Operating kar at a site: JSON logs (`--log-format json`) that a collector parses line by line,
//! each event with its command and job, the run's summary an event too, no secret in any of them.

use std::process::Command;

use serde_json::Value;

use crate::common::{self, producer, send};

/// Runs a backup by examples/backup.yaml (the SASL_SSL listener) with JSON logs at debug level:
/// (exit code, every stderr line parsed, stdout and stderr as text).
fn backup_logged(
    topic: &str,
    out: &std::path::Path,
    password: &str,
) -> (Option<i32>, Vec<Value>, String) {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backup.yaml");
    let o = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(["backup", "--config", example, "--topics", topic, "--json"])
        .args(["--log-format", "json", "--job", "nightly", "--out"])
        .arg(out)
        .env("KAR_KAFKA_SASL_PASSWORD", password)
        .env("KAR_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let events = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let text = format!("{}{stderr}", String::from_utf8_lossy(&o.stdout));
    (o.status.code(), events, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse_line_by_line_carry_the_job_and_hold_no_secret() {
    let topic = common::unique("logs");
    common::create_topic(&topic, 1, &[]).await;
    send(
        &producer(&[]),
        &topic,
        0,
        &crate::backup::rec(0, 1, Some(b"k"), Some(b"v"), &[]),
    );
    let dir = tempfile::tempdir().unwrap();

    let (code, events, text) = tokio::task::block_in_place(|| {
        backup_logged(&topic, &dir.path().join("ok.kar"), common::SCRAM_PASSWORD)
    });
    assert_eq!(code, Some(0), "{text}");
    assert!(events.len() > 3, "debug events expected: {text}");
    for e in &events {
        assert_eq!(
            (e["command"].as_str(), e["job"].as_str()),
            (Some("backup"), Some("nightly")),
            "{e}"
        );
        assert!(e["timestamp"].is_string() && e["level"].is_string(), "{e}");
    }
    // The partition's end is an event of its own, with its topic and partition as fields.
    let ended: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "partition complete")
        .collect();
    assert_eq!(ended.len(), 1, "{text}");
    assert_eq!(
        (
            &ended[0]["topic"],
            &ended[0]["partition"],
            &ended[0]["records"]
        ),
        (
            &Value::from(topic.as_str()),
            &Value::from(0),
            &Value::from(1)
        ),
        "{text}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["target"], "kar::summary", "{summary}");
    assert_eq!(summary["exit_code"], 0);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    assert!(
        !text.contains(common::SCRAM_PASSWORD),
        "the password is in the output"
    );

    // A wrong password: the failure is an event too, and names no password either.
    let wrong = "not-the-password-logs-xyz";
    let (code, events, text) =
        tokio::task::block_in_place(|| backup_logged(&topic, &dir.path().join("no.kar"), wrong));
    assert_eq!(code, Some(2), "{text}");
    let error = events
        .iter()
        .find(|e| e["level"] == "ERROR")
        .expect("an error event");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&common::sasl_bootstrap()),
        "{error}"
    );
    assert_eq!(events.last().unwrap()["exit_code"], 2);
    assert!(
        !text.contains(wrong) && !text.contains(common::SCRAM_PASSWORD),
        "{text}"
    );
}
