//! `kar backup --compression none` and `kar compact`: an uncompressed backup of a real topic holds
//! every record and restores, and compacting it gives a smaller file with the same manifest, the
//! same records and the same root hash; a damaged archive is refused with the frame named and no
//! output left.

use std::process::Command;

use kar::archive::verify::{VerifyLevel, layout, verify};
use kar::archive::{Archive, Source};
use kar::format::frame::{self, FrameHeader};

use crate::archive::read_records;
use crate::common;

fn kar(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every record chunk's frame header, read from the file itself.
fn chunk_frames(a: &Archive) -> Vec<FrameHeader> {
    a.index_content()
        .unwrap()
        .chunks
        .iter()
        .map(|c| {
            let at = c.frame_offset as usize;
            FrameHeader::decode(&a.bytes()[at..], c.frame_offset, a.id()).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uncompressed_backup_compacts_to_the_same_records_and_root() {
    let topic = common::unique("uncompressed");
    common::create_topic(&topic, 3, &[]).await;
    common::fill(&topic, 3, 20_000, 200).await;
    let truth = common::consume_all(&topic, 3);

    let dir = tempfile::tempdir().unwrap();
    let (plain, small) = (dir.path().join("plain.kar"), dir.path().join("small.kar"));
    let bootstrap = common::bootstrap();
    // One consumer for the three partitions. Nothing may reach stderr: librdkafka logs routine
    // events (a partition's end met again while its consumer closes) as errors, kept off by default.
    let backup = kar(&[
        "backup",
        "--json",
        "--concurrency",
        "1",
        "--compression",
        "none",
        "--chunk-size",
        "262144",
        "--bootstrap",
        &bootstrap,
        "--topics",
        &topic,
        "--out",
        plain.to_str().unwrap(),
    ]);
    let report = json(&backup);
    assert!(
        backup.stderr.is_empty(),
        "nothing on stderr by default: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert_eq!(report["status"], "complete");
    assert_eq!(report["compression"], "none");
    let chunks = report["chunks"].as_u64().unwrap();
    assert!(chunks >= 3, "{report}");
    assert_eq!(report["chunks_uncompressed"].as_u64(), Some(chunks));

    let a = Archive::open(&plain).unwrap();
    let frames = chunk_frames(&a);
    assert_eq!(frames.len() as u64, chunks);
    for f in &frames {
        assert_eq!(f.compression, frame::Compression::None);
        assert_eq!(f.stored_len, f.raw_len);
    }
    assert!(verify(&plain, VerifyLevel::Full).unwrap().ok);
    for (p, want) in &truth {
        assert_eq!(&read_records(&a, &topic, *p), want, "partition {p}");
    }

    let compacted = json(&kar(&[
        "compact",
        "--json",
        "--zstd-level",
        "5",
        plain.to_str().unwrap(),
        "--out",
        small.to_str().unwrap(),
    ]));
    let b = Archive::open(&small).unwrap();
    assert_eq!(b.root(), a.root(), "same content, same root");
    assert_eq!(compacted["root_hash"], kar::format::hex(&a.root()));
    assert_eq!(compacted["chunks"].as_u64(), Some(chunks));
    assert_eq!(compacted["were_uncompressed"].as_u64(), Some(chunks));
    assert_eq!(b.manifest(), a.manifest(), "the manifest is carried over");
    assert_eq!(b.manifest_id(), a.manifest_id());
    let (before, after) = (
        std::fs::metadata(&plain).unwrap().len(),
        std::fs::metadata(&small).unwrap().len(),
    );
    assert!(
        after * 4 < before,
        "compacted {after} bytes is not much smaller than {before}"
    );
    for f in chunk_frames(&b) {
        assert_eq!(f.compression, frame::Compression::Zstd);
        assert!(f.stored_len < f.raw_len);
    }
    let v = verify(&small, VerifyLevel::Full).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    for (p, want) in &truth {
        assert_eq!(&read_records(&b, &topic, *p), want, "partition {p}");
    }
    // Both files answer the same index lookups.
    let (ia, ib) = (a.index_content().unwrap(), b.index_content().unwrap());
    assert_eq!(ia.schemas, ib.schemas);
    let ids = |i: &kar::archive::index::IndexContent| {
        let mut v: Vec<_> = i.content.keys().copied().collect();
        v.sort();
        v
    };
    assert_eq!(ids(&ia), ids(&ib));

    // The uncompressed archive restores like any other: every record back, in order.
    let restored = format!("{topic}-restored");
    let mut o = kar::restore::RestoreOptions::new(
        &plain,
        kar::kafka::KafkaConnection::plaintext(common::bootstrap()),
    );
    o.map = std::collections::BTreeMap::from([(topic.clone(), restored.clone())]);
    o.state_dir = Some(dir.path().to_path_buf());
    let r = tokio::task::spawn_blocking(move || kar::restore::restore(common::runtime(), &o))
        .await
        .unwrap()
        .unwrap();
    assert!(r.ok);
    let back = common::consume_all(&restored, 3);
    for (p, want) in &truth {
        let got = &back[p];
        assert_eq!(got.len(), want.len(), "partition {p}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (&g.key, &g.value, g.timestamp, &g.headers),
                (&w.key, &w.value, w.timestamp, &w.headers)
            );
        }
    }
}

#[test]
fn compact_refuses_a_damaged_archive_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = crate::verify::small_archive();
    let (hit, _) = layout(&bytes)
        .into_iter()
        .filter(|(_, s)| s == "record chunk")
        .nth(2)
        .unwrap();
    let mut damaged = bytes.clone();
    // `layout` gives the chunk's content; its frame header is just before it.
    damaged[(hit.start + 7) as usize] ^= 0x40;
    let input = dir.path().join("damaged.kar");
    std::fs::write(&input, &damaged).unwrap();
    let out = dir.path().join("out.kar");

    let r = kar(&[
        "compact",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(&format!("offset {}: record chunk", hit.start))
            && err.contains(&format!(
                "frame at offset {}",
                hit.start - frame::HEADER_LEN as u64
            )),
        "the message names the frame and where its content is: {err}"
    );
    assert!(err.contains("kar repair"), "and what to do: {err}");
    assert!(!out.exists(), "no half-written output is left");
    assert_eq!(std::fs::read(&input).unwrap(), damaged, "input untouched");

    // An existing output is never overwritten.
    let good = dir.path().join("good.kar");
    std::fs::write(&good, &bytes).unwrap();
    std::fs::write(&out, b"precious").unwrap();
    let r = kar(&[
        "compact",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    // Nor is a file at the output path touched when the input fails before anything is written.
    let (index, _) = layout(&bytes)
        .into_iter()
        .find(|(_, s)| s == "index")
        .unwrap();
    let mut bad_index = bytes.clone();
    bad_index[(index.start + 100) as usize] ^= 0x01;
    let bad = dir.path().join("bad-index.kar");
    std::fs::write(&bad, &bad_index).unwrap();
    let r = kar(&[
        "compact",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("index"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    // The intact archive compacts (already compressed: same root, still verifies).
    std::fs::remove_file(&out).unwrap();
    let report = json(&kar(&[
        "compact",
        "--json",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(report["were_uncompressed"], 0);
    let a = Archive::from_source(Source::Owned(bytes), "orig").unwrap();
    assert_eq!(report["root_hash"], kar::format::hex(&a.root()));
    assert!(verify(&out, VerifyLevel::Full).unwrap().ok);
    let b = Archive::open(&out).unwrap();
    assert_eq!(read_records(&b, "t", 0), read_records(&a, "t", 0));
    assert_eq!(b.manifest().metadata, a.manifest().metadata);
}

/// The content frames in file order: (kind, content ID).
fn frame_order(bytes: &[u8]) -> Vec<(String, [u8; 32])> {
    layout(bytes)
        .windows(2)
        .filter(|w| w[0].1 == "frame header" && w[1].1 != "manifest" && w[1].1 != "index")
        .map(|w| {
            let at = w[0].0.start;
            let id = crate::verify::id_of(bytes);
            let h = FrameHeader::decode(&bytes[at as usize..], at, id).unwrap();
            (w[1].1.clone(), h.content_id)
        })
        .collect()
}

/// Workers recompress frames in any order; the output keeps the input's (blobs and documents
/// first, each partition's chunks in offset order, which a stream restore relies on), the
/// archive ID and the root.
#[test]
fn compact_keeps_the_frame_order_and_the_archive_id() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.kar");
    // Many small chunks, so that four workers finish them out of order.
    let opts = kar::archive::WriterOptions {
        chunk_target_bytes: 512,
        ..Default::default()
    };
    let mut w = kar::archive::ArchiveWriter::new(Vec::new(), "mem", opts).unwrap();
    w.add_blob(b"schema").unwrap();
    for p in 0..3 {
        crate::archive::write_records(
            &mut w,
            "t",
            p,
            &crate::archive::sample_records(300, p as u64),
        );
    }
    for p in 0..3 {
        w.finish_partition("t", p).unwrap();
    }
    let bytes = w
        .finish(kar::format::manifest::ArchiveStatus::Complete, vec![])
        .unwrap()
        .0;
    std::fs::write(&input, &bytes).unwrap();
    let before = frame_order(&bytes);
    assert!(before.len() > 40, "{} frames", before.len());
    let out = dir.path().join("out.kar");
    kar::archive::compact::compact(&input, &out, 9, 4).unwrap();
    let after = std::fs::read(&out).unwrap();
    assert_eq!(frame_order(&after), before);
    assert_eq!(crate::verify::id_of(&after), crate::verify::id_of(&bytes));
}
