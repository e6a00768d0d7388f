//! Volume sets: `kar backup --volume-size` cuts the archive into files for FAT32 sticks and tape
//! cartridges; every command reads the set from its first volume; `kar join` and `kar split`
//! convert, keeping the root; a missing, swapped or foreign volume is named.

use std::path::{Path, PathBuf};
use std::process::Command;

use kar::archive::Archive;
use serde_json::Value;

use crate::common::{self, consume_all};

fn kar(args: &[&str]) -> (Option<i32>, Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (
        o.status.code(),
        json,
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// `kar backup` of `topic`, uncompressed, in volumes of under 1 MiB, the first at `first`.
fn backup_in_volumes(topic: &str, first: &Path, chunk_size: &str) -> (Option<i32>, Value, String) {
    kar(&[
        "backup",
        "--bootstrap",
        &common::bootstrap(),
        "--topics",
        topic,
        "--chunk-size",
        chunk_size,
        "--compression",
        "none",
        "--volume-size",
        "1M",
        "--out",
        s(first),
        "--json",
    ])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn vol(first: &Path, n: u32) -> PathBuf {
    kar::archive::volume::volume_path(first, n)
}

/// A backup in volumes of under 1 MiB: each smaller than the size, the set verified, inspected
/// and restored from its first volume record by record, joined into the single file and split
/// again with the same root, and verified as one stream of volumes (`cat` of them).
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_in_volumes_is_verified_restored_joined_and_split_with_one_root() {
    common::require_kafka();
    let topic = common::unique("volumes");
    common::create_topic(&topic, 2, &[]).await;
    common::fill(&topic, 2, 3_000, 900).await;
    let truth = consume_all(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("set.kar");
    let (code, r, err) = backup_in_volumes(&topic, &first, "2097152");
    assert_eq!(code, Some(0), "{err}");
    let volumes: Vec<PathBuf> = r["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| PathBuf::from(v.as_str().unwrap()))
        .collect();
    assert!(volumes.len() >= 3, "{volumes:?}");
    assert_eq!(volumes[0], first);
    assert_eq!(volumes[2], dir.path().join("set.kar.003"));
    for v in &volumes {
        assert!(
            std::fs::metadata(v).unwrap().len() < 1 << 20,
            "{}",
            v.display()
        );
    }
    let root = r["root_hash"].as_str().unwrap().to_string();

    let (code, v, err) = kar(&["verify", s(&first), "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (v["ok"].as_bool(), v["root_hash"].as_str()),
        (Some(true), Some(root.as_str()))
    );
    assert_eq!(v["records"], 3_000);
    crate::backup::assert_same(&Archive::open(&first).unwrap(), &topic, &truth);
    let to = format!("{topic}-restored");
    crate::backup::restore_renamed(&first, &topic, &to, dir.path()).await;
    assert_eq!(consume_all(&to, 2), truth, "restored from the set");

    let joined = dir.path().join("joined.kar");
    let (code, j, err) = kar(&["join", s(&first), "--out", s(&joined), "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["root_hash"].as_str(), Some(root.as_str()));
    assert_eq!(j["volumes"].as_array().unwrap().len(), volumes.len());
    let single =
        kar::archive::verify::verify(&joined, kar::archive::verify::VerifyLevel::Full).unwrap();
    assert!(single.ok && single.root_hash.as_deref() == Some(root.as_str()));
    let again = dir.path().join("again.kar");
    let (code, sp, err) = kar(&[
        "split",
        s(&joined),
        "--volume-size",
        "1M",
        "--out",
        s(&again),
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(sp["root_hash"].as_str(), Some(root.as_str()));
    for (a, b) in volumes.iter().zip(sp["volumes"].as_array().unwrap()) {
        // The same cut; another set ID in each header.
        let (x, y) = (
            std::fs::read(a).unwrap(),
            std::fs::read(b.as_str().unwrap()).unwrap(),
        );
        assert_eq!(x.len(), y.len());
        assert_eq!(x[65536..], y[65536..]);
    }

    // Each volume on its own stick, named anyhow: join takes them as a list, in any order, and
    // names one given twice.
    let sticks: Vec<PathBuf> = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let stick = dir.path().join(format!("stick{i}"));
            std::fs::create_dir(&stick).unwrap();
            let to = stick.join(format!("part-{i}"));
            std::fs::copy(v, &to).unwrap();
            to
        })
        .collect();
    let mut list: Vec<&str> = sticks.iter().rev().map(|p| s(p)).collect();
    let from_sticks = dir.path().join("from-sticks.kar");
    let mut args = vec!["join"];
    args.extend(&list);
    args.extend(["--out", s(&from_sticks), "--json"]);
    let (code, j, err) = kar(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["root_hash"].as_str(), Some(root.as_str()));
    assert_eq!(
        std::fs::read(&from_sticks).unwrap(),
        std::fs::read(&joined).unwrap()
    );
    // Verified, inspected and restored from the list itself.
    let mut args = vec!["verify"];
    args.extend(&list);
    args.push("--json");
    let (code, v, err) = kar(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["root_hash"].as_str(), Some(root.as_str()));
    args[0] = "inspect";
    let (code, i, err) = kar(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(i["records"], 3_000);
    let to3 = format!("{topic}-from-sticks");
    let mut o = kar::restore::RestoreOptions::new(
        &sticks[0],
        kar::kafka::KafkaConnection::plaintext(common::bootstrap()),
    );
    o.volumes = sticks[1..].iter().rev().cloned().collect();
    o.map = [(topic.clone(), to3.clone())].into();
    o.state_dir = Some(dir.path().join("third"));
    let report = tokio::task::spawn_blocking(move || kar::restore::restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap();
    assert!(report.ok, "{:?}", report.partitions);
    assert_eq!(
        consume_all(&to3, 2),
        truth,
        "restored from the list of volumes"
    );
    list.push(s(&sticks[1]));
    let mut args = vec!["join"];
    args.extend(&list);
    let twice = dir.path().join("twice.kar");
    args.extend(["--out", s(&twice)]);
    let (code, _, err) = kar(&args);
    assert_eq!(code, Some(2));
    assert!(err.contains("is volume 2 of the set, given twice"), "{err}");

    // The volumes as one stream, as they come off a tape or through a diode.
    let cat = |order: &[&PathBuf]| {
        let files: Vec<&str> = order.iter().map(|p| s(p)).collect();
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat {} | {} verify - --json",
                files.join(" "),
                env!("CARGO_BIN_EXE_kar")
            ))
            .output()
            .unwrap();
        (
            o.status.code(),
            serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        )
    };
    let (code, v) = cat(&volumes.iter().collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["root_hash"].as_str(), Some(root.as_str()));
    // And restored from that stream, in one pass.
    let to2 = format!("{topic}-from-stream");
    let files: Vec<&str> = volumes.iter().map(|p| s(p)).collect();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {} | {} restore - --bootstrap {} --map {topic}={to2} --state {} --json",
            files.join(" "),
            env!("CARGO_BIN_EXE_kar"),
            common::bootstrap(),
            s(&dir.path().join("second"))
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        consume_all(&to2, 2),
        truth,
        "restored from the stream of volumes"
    );
    let mut swapped: Vec<&PathBuf> = volumes.iter().collect();
    swapped.swap(1, 2);
    let (code, v) = cat(&swapped);
    assert_eq!(code, Some(1), "{v}");
    let m = v["problems"][0]["message"].as_str().unwrap();
    assert!(
        m.contains("volume 3") && m.contains("where volume 2"),
        "{m}"
    );
}

/// A missing, a swapped and a foreign volume are each named, with the volume's file, and nothing
/// is read as an archive.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_swapped_or_foreign_volume_is_named() {
    common::require_kafka();
    let topic = common::unique("volbad");
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 2_500, 900).await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.kar");
    let (code, _, err) = backup_in_volumes(&topic, &first, "65536");
    assert_eq!(code, Some(0), "{err}");
    let other = dir.path().join("b.kar");
    let (code, _, err) = kar(&[
        "split",
        s(&first),
        "--volume-size",
        "1M",
        "--out",
        s(&other),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(vol(&first, 3).exists());

    let expect = |what: &str, needles: &[&str]| {
        let (code, _, err) = kar(&["verify", s(&first)]);
        assert_eq!(code, Some(2), "{what}: {err}");
        for n in needles {
            assert!(err.contains(n), "{what}: {err}");
        }
    };
    let (v2, v3) = (vol(&first, 2), vol(&first, 3));
    let aside = dir.path().join("aside");
    std::fs::rename(&v2, &aside).unwrap();
    expect("missing", &[s(&v2), "volume 2 of set", "is missing"]);
    std::fs::rename(&v3, &v2).unwrap();
    std::fs::rename(&aside, &v3).unwrap();
    expect("swapped", &[s(&v2), "holds volume 3", "where volume 2"]);
    std::fs::rename(&v2, &aside).unwrap();
    std::fs::rename(&v3, &v2).unwrap();
    std::fs::rename(&aside, &v3).unwrap();
    let (code, _, err) = kar(&["verify", s(&first)]);
    assert_eq!(code, Some(0), "back in order: {err}");
    let original = std::fs::read(&v2).unwrap();
    std::fs::copy(vol(&other, 2), &v2).unwrap();
    expect("foreign", &[s(&v2), "belongs to another set"]);
    std::fs::write(&v2, original).unwrap();
    let (code, _, err) = kar(&["inspect", s(&v3)]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not its first"), "{err}");

    // The set's writer stopped before its last volume: join takes what there is, unfinished,
    // and repair recovers its complete chunks.
    let mut n = 3;
    while vol(&first, n + 1).exists() {
        n += 1;
    }
    std::fs::remove_file(vol(&first, n)).unwrap();
    let joined = dir.path().join("joined.kar");
    let (code, j, err) = kar(&["join", s(&first), "--out", s(&joined), "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["root_hash"], "", "no root for an unfinished set");
    assert_eq!(j["volumes"].as_array().unwrap().len() as u32, n - 1);
    let fixed = dir.path().join("fixed.kar");
    let r = kar::archive::repair::repair(&joined, &fixed, Default::default()).unwrap();
    assert!(r.kept_chunks > 0 && !r.input_finished, "{r:?}");
}
