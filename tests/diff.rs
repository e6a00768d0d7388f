//! `kar diff`: the target cluster against the archive, record by record. Clean after a restore
//! that rewrote schema IDs (given the target registry, which serves the same texts under the new
//! IDs), and naming, with offsets on both sides, a record changed, one missing and one extra in a
//! copy of the topic produced with those faults.

use serde_json::{Value, json};

use crate::common::{self, kar_cli};
use crate::stream::{PER_PARTITION, orders};

fn diff(file: &str, map: &str, registry: Option<&str>) -> (Option<i32>, Value, String) {
    let bootstrap = common::bootstrap();
    let mut args = vec![
        "diff",
        file,
        "--bootstrap",
        &bootstrap,
        "--map",
        map,
        "--json",
    ];
    if let Some(r) = registry {
        args.extend(["--registry", r]);
    }
    kar_cli(&args, &[])
}

#[test]
fn diff_is_clean_after_a_rewrite_restore_and_names_each_fault() {
    common::require_kafka();
    let p = common::unique("diff");
    let (topic, _, id) = common::runtime().context().block_on(orders(&p));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diff.kar");
    let file = file.to_str().unwrap();
    common::backup_cli(&topic, &format!("{p}-.*"), file.as_ref(), &[]);
    let total = 3 * PER_PARTITION;

    // A restore with new IDs: bytes differ in the ID only.
    let to = format!("{topic}-restored");
    let mut args = common::restore_args(file, &topic, &to, dir.path());
    args.extend(["--schema-ids", "rewrite"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, restored, out) = kar_cli(&args, &[]);
    assert_eq!(code, Some(0), "{out}");
    let new_id = restored["id_map"][id.to_string()].as_u64().unwrap();
    assert_ne!(new_id, u64::from(id));
    let map = format!("{topic}={to}");

    let target = common::target_registry();
    let (code, r, out) = diff(file, &map, Some(&target));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        (r["ok"].clone(), r["equal"].clone()),
        (json!(true), json!(total))
    );
    assert_eq!(r["id_map"], json!({id.to_string(): new_id}), "{r}");
    assert_eq!(r["partitions"].as_array().unwrap().len(), 3);
    // Without the registry the IDs cannot be matched: every value differs, and it says so.
    let (code, r, _) = diff(file, &map, None);
    assert_eq!(code, Some(1));
    assert_eq!(r["different"], total);
    assert_eq!(
        r["partitions"][0]["first_differences"][0]["fields"],
        json!(["value"])
    );

    // A copy with faults in partition 1: index 3 left out, index 7's value changed, a record
    // added after index 10.
    let faulty = format!("{topic}-faulty");
    let source_records = common::consume_all(&topic, 3);
    common::runtime()
        .context()
        .block_on(common::create_topic(&faulty, 3, &[]));
    let prod = common::producer(&[]);
    for (part, recs) in &source_records {
        for (i, r) in recs.iter().enumerate() {
            let mut r = r.clone();
            if *part == 1 && i == 3 {
                continue;
            }
            if *part == 1 && i == 7 {
                *r.value.as_mut().unwrap().last_mut().unwrap() ^= 1;
            }
            common::send_queued(&prod, &faulty, *part, &r);
            if *part == 1 && i == 10 {
                r.key = Some(b"intruder".to_vec());
                common::send_queued(&prod, &faulty, *part, &r);
            }
        }
    }
    rdkafka::producer::Producer::flush(&prod, std::time::Duration::from_secs(30)).unwrap();
    let (code, r, out) = diff(file, &format!("{topic}={faulty}"), None);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(r["ok"], false);
    let counts =
        |v: &Value| ["equal", "different", "missing", "extra"].map(|k| v[k].as_i64().unwrap());
    assert_eq!(counts(&r), [total - 2, 1, 1, 1]);
    let p1 = &r["partitions"][1];
    assert_eq!(p1["partition"], 1);
    assert_eq!(counts(p1), [PER_PARTITION - 2, 1, 1, 1]);
    assert_eq!(
        p1["first_differences"],
        json!([
            {"kind": "missing", "archive_offset": 3, "target_offset": null},
            {"kind": "different", "archive_offset": 7, "target_offset": 6, "fields": ["value"]},
            {"kind": "extra", "archive_offset": null, "target_offset": 10},
        ])
    );
    for q in [0, 2] {
        assert_eq!(counts(&r["partitions"][q]), [PER_PARTITION, 0, 0, 0]);
    }
}

/// Records whose transaction has committed are visible to a read_committed consumer only once
/// the commit's markers are written, a moment after the commit returns. A diff that starts while
/// a transaction is open waits for it to end, and one that ends no transaction in time is an
/// error naming the partition and the offsets, not records "missing".
#[test]
fn a_diff_waits_for_a_transaction_to_end_and_names_one_left_open() {
    use rdkafka::producer::Producer;
    use std::time::Duration;
    common::require_kafka();
    let p = common::unique("diff-txn");
    let (topic, _, _) = common::runtime().context().block_on(orders(&p));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diff.kar");
    let file = file.to_str().unwrap().to_string();
    common::backup_cli(&topic, &format!("{p}-.*"), file.as_ref(), &[]);
    let copy = format!("{topic}-copy");
    common::runtime()
        .context()
        .block_on(common::create_topic(&copy, 3, &[]));
    let tp = common::producer(&[("transactional.id", &common::unique("diff-txid"))]);
    tp.init_transactions(Duration::from_secs(30)).unwrap();
    tp.begin_transaction().unwrap();
    for (part, recs) in common::consume_all(&topic, 3) {
        for r in &recs {
            common::send_queued(&tp, &copy, part, r);
        }
    }
    tp.flush(Duration::from_secs(30)).unwrap();
    let map = format!("{topic}={copy}");

    let bootstrap = common::bootstrap();
    let args = |wait: &'static str| {
        let (file, map, bootstrap) = (file.clone(), map.clone(), bootstrap.clone());
        move || {
            kar_cli(
                &[
                    "diff",
                    &file,
                    "--bootstrap",
                    &bootstrap,
                    "--map",
                    &map,
                    "--wait-for-transactions",
                    wait,
                    "--json",
                ],
                &[],
            )
        }
    };
    let (code, _, out) = args("1")();
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "{copy}/0: offsets 0..{PER_PARTITION} are in a transaction still open after 1s"
        )),
        "{out}"
    );

    // Committed while the diff waits: every record is there, none missing.
    let waiting = std::thread::spawn(args("60"));
    std::thread::sleep(Duration::from_millis(1500));
    tp.commit_transaction(Duration::from_secs(30)).unwrap();
    let (code, r, out) = waiting.join().unwrap();
    assert_eq!(code, Some(0), "{out}");
    let counts = ["equal", "different", "missing", "extra"].map(|k| r[k].as_i64().unwrap());
    assert_eq!(counts, [3 * PER_PARTITION, 0, 0, 0], "{r}");
}
