//! `kar repair`: a writer killed with SIGKILL mid-write loses no complete chunk; a damaged chunk
//! in a finished archive is dropped and named, everything else kept.

use std::process::Command;
use std::time::{Duration, Instant};

use kar::archive::repair::repair;
use kar::archive::verify::{VerifyLevel, layout, verify};
use kar::archive::{Archive, ArchiveWriter, WriterOptions};
use kar::format::chunk::TimestampType;
use kar::format::frame::{self, FrameHeader, FrameKind};
use kar::format::manifest::ArchiveStatus;

const CHILD_ENV: &str = "KAR_TEST_CHILD_WRITE";

/// Not a test on its own: the body of the child process the kill test starts (it writes an archive
/// forever, flushing every few records, until it is killed).
#[test]
fn writer_child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let opts = WriterOptions {
        chunk_target_bytes: 8 * 1024,
        zstd_level: 1,
        created_at_ms: 0,
        ..Default::default()
    };
    let mut w = ArchiveWriter::create(&path, opts).unwrap();
    w.add_metadata(
        "child",
        br#"{"kind":"child","note":"written before any record"}"#,
    )
    .unwrap();
    for i in 0i64.. {
        let value = format!(
            "{{\"i\":{i},\"pad\":\"{}\"}}",
            "p".repeat((i % 200) as usize)
        );
        w.append(
            "killed",
            (i % 2) as i32,
            i / 2,
            1_000 + i,
            TimestampType::CreateTime,
            Some(b"k"),
            Some(value.as_bytes()),
            [],
        )
        .unwrap();
        if i % 50 == 0 {
            w.flush().unwrap();
        }
    }
}

/// Content IDs of every record chunk whose bytes are wholly in `bytes` and intact.
fn complete_chunks(bytes: &[u8]) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let header = kar::format::file_header::FileHeader::decode(bytes).unwrap();
    let mut pos = header.size();
    while pos + frame::HEADER_LEN <= bytes.len() {
        let Ok(h) = FrameHeader::decode(&bytes[pos..], pos as u64, header.archive_id) else {
            break;
        };
        let end = pos + h.frame_len() as usize;
        if end > bytes.len() {
            break;
        }
        if h.kind == FrameKind::RecordChunk
            && frame::check_stored(&h, &bytes[pos + frame::HEADER_LEN..end])
        {
            out.push(h.content_id);
        }
        pos = end;
    }
    out
}

#[test]
fn a_writer_killed_mid_write_loses_no_complete_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.kar");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "repair::writer_child_process",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 3 * 1024 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the child writer did not write 3 MiB in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let bytes = std::fs::read(&path).unwrap();
    assert!(
        Archive::open(&path).is_err(),
        "an unfinished archive must not open"
    );
    let want = complete_chunks(&bytes);
    assert!(want.len() > 10, "only {} complete chunks", want.len());

    let out = dir.path().join("repaired.kar");
    let report = repair(&path, &out, Default::default()).unwrap();
    assert!(!report.input_finished);
    assert!(!report.manifest_recovered);
    assert_eq!(report.kept_chunks as usize, want.len());
    assert_eq!(report.kept_metadata, 1);

    let v = verify(&out, VerifyLevel::Full).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.manifest().status, ArchiveStatus::Repaired);
    assert_eq!(a.manifest().metadata[0].kind, "child");
    let mut have: Vec<[u8; 32]> = a
        .index_content()
        .unwrap()
        .chunks
        .iter()
        .map(|c| c.chunk_id)
        .collect();
    let mut want = want;
    have.sort();
    want.sort();
    assert_eq!(have, want, "every complete chunk and nothing else");

    // What was kept reads back as a gap-free prefix of what the child wrote.
    for p in 0..2 {
        let mut next = 0i64;
        a.for_each_record("killed", p, |r| {
            assert_eq!(r.offset, next);
            let i = r.offset * 2 + i64::from(p);
            assert_eq!(r.timestamp, 1_000 + i);
            let want = format!(
                "{{\"i\":{i},\"pad\":\"{}\"}}",
                "p".repeat((i % 200) as usize)
            );
            assert_eq!(r.value, Some(want.as_bytes()));
            next += 1;
        })
        .unwrap();
        assert!(next > 0);
    }
    assert_eq!(
        report.kept_records,
        a.manifest().topics[0]
            .partitions
            .iter()
            .map(|p| p.records)
            .sum::<u64>()
    );
}

#[test]
fn a_damaged_chunk_is_dropped_and_named_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = crate::verify::small_archive();
    let regions = layout(&bytes);
    let (hit, _) = regions
        .iter()
        .filter(|(_, s)| s == "record chunk")
        .nth(1)
        .unwrap()
        .clone();
    let mut damaged = bytes.clone();
    damaged[(hit.start + 5) as usize] ^= 0xff;
    let input = dir.path().join("damaged.kar");
    std::fs::write(&input, &damaged).unwrap();

    let out = dir.path().join("fixed.kar");
    let kar = env!("CARGO_BIN_EXE_kar");
    let cli = Command::new(kar)
        .args(["repair", "--json", "--out"])
        .arg(&out)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(
        cli.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(report["manifest_recovered"], true);
    assert_eq!(report["problems"][0]["offset"], hit.start);
    assert_eq!(report["problems"][0]["structure"], "record chunk");
    assert_eq!(
        std::fs::read(&input).unwrap(),
        damaged,
        "the input is untouched"
    );

    let original = Archive::from_source(kar::archive::Source::Owned(bytes), "orig").unwrap();
    let orig = original.index_content().unwrap().chunks;
    let damaged_chunk = orig
        .iter()
        .find(|c| c.frame_offset + 96 == hit.start)
        .unwrap();
    // The chunks of that partition after the damaged one would leave a hole: dropped, and named.
    let after: Vec<_> = orig
        .iter()
        .filter(|c| c.topic == damaged_chunk.topic && c.partition == damaged_chunk.partition)
        .filter(|c| c.first_offset > damaged_chunk.first_offset)
        .collect();
    assert!(
        !after.is_empty(),
        "the test needs chunks after the damaged one"
    );
    let fixed = Archive::open(&out).unwrap();
    assert!(verify(&out, VerifyLevel::Full).unwrap().ok);
    assert_eq!(
        fixed.index_content().unwrap().chunks.len(),
        orig.len() - 1 - after.len()
    );
    let dropped = report["dropped_chunks"].as_array().unwrap();
    assert_eq!(dropped.len(), after.len(), "{report}");
    assert!(
        dropped[0].as_str().unwrap().contains(&format!(
            "offsets {}..{} before it are in no chunk",
            damaged_chunk.covers_from, damaged_chunk.covers_to
        )),
        "{report}"
    );
    assert_eq!(
        report["incomplete_partitions"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(fixed.manifest().metadata.len(), 1);
    assert_eq!(fixed.manifest().metadata[0].kind, "example");

    // With --keep-gaps everything intact is kept and the hole is recorded: the file verifies as
    // intact but not whole (exit 1), naming the lost offsets.
    let kept = dir.path().join("kept.kar");
    let cli = Command::new(kar)
        .args(["repair", "--keep-gaps", "--json", "--out"])
        .arg(&kept)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let hole = format!(
        "{}/{}: offsets {}..{} lost",
        damaged_chunk.topic,
        damaged_chunk.partition,
        damaged_chunk.covers_from,
        damaged_chunk.covers_to
    );
    assert_eq!(report["gaps"], serde_json::json!([hole]), "{report}");
    let a = Archive::open(&kept).unwrap();
    assert_eq!(a.index_content().unwrap().chunks.len(), orig.len() - 1);
    let p = a
        .manifest()
        .partition(&damaged_chunk.topic, damaged_chunk.partition)
        .unwrap();
    assert!(!p.complete);
    assert_eq!(
        p.gaps,
        vec![kar::format::manifest::OffsetRange {
            from: damaged_chunk.covers_from,
            to: damaged_chunk.covers_to
        }]
    );
    let v = verify(&kept, VerifyLevel::Full).unwrap();
    assert!(!v.ok && v.problems.is_empty(), "{v:?}");
    assert_eq!(v.gaps, vec![format!("{hole} (recorded by repair)")]);
    let cli = Command::new(kar).arg("verify").arg(&kept).output().unwrap();
    assert_eq!(cli.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cli.stdout).contains("NOT WHOLE"));
}

#[test]
fn a_damaged_file_header_does_not_stop_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = crate::verify::small_archive();
    let original = Archive::from_source(kar::archive::Source::Owned(bytes.clone()), "o").unwrap();
    let want: Vec<[u8; 32]> = original
        .index_content()
        .unwrap()
        .chunks
        .iter()
        .map(|c| c.chunk_id)
        .collect();
    // Every byte of the 32-byte header, flipped in turn.
    for i in 0..32 {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x10;
        let input = dir.path().join(format!("h{i}.kar"));
        std::fs::write(&input, &damaged).unwrap();
        let out = dir.path().join(format!("h{i}.repaired.kar"));
        let r =
            repair(&input, &out, Default::default()).unwrap_or_else(|e| panic!("byte {i}: {e}"));
        assert_eq!(r.problems[0].structure, "file header", "byte {i}");
        assert!(r.incomplete_partitions.is_empty(), "byte {i}: {r:?}");
        let a = Archive::open(&out).unwrap();
        let have: Vec<[u8; 32]> = a
            .index_content()
            .unwrap()
            .chunks
            .iter()
            .map(|c| c.chunk_id)
            .collect();
        assert_eq!(have, want, "byte {i}");
        assert!(verify(&out, VerifyLevel::Full).unwrap().ok);
    }
    // A file that is not kar at all is still refused.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let err = repair(&junk, dir.path().join("j.kar"), Default::default()).unwrap_err();
    assert!(err.to_string().contains("nothing to repair"), "{err}");
    assert!(!dir.path().join("j.kar").exists());
}

#[test]
fn a_chunk_cut_out_of_the_middle_is_a_hole_verify_names_and_repair_does_not_keep_over() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = crate::verify::small_archive();
    let original = Archive::from_source(kar::archive::Source::Owned(bytes.clone()), "o").unwrap();
    let chunks = original.chunks_of("t", 0).unwrap();
    assert!(chunks.len() >= 3);
    let cut = &chunks[1];
    let mut file = bytes.clone();
    let at = cut.frame_offset as usize;
    file.drain(at..at + 96 + cut.stored_len as usize);
    let input = dir.path().join("cut.kar");
    std::fs::write(&input, &file).unwrap();
    let v = verify(&input, VerifyLevel::Full).unwrap();
    assert!(!v.ok);

    let out = dir.path().join("cut.repaired.kar");
    let r = repair(&input, &out, Default::default()).unwrap();
    let a = Archive::open(&out).unwrap();
    let kept = a.chunks_of("t", 0).unwrap();
    let ids =
        |v: &[kar::archive::index::ChunkEntry]| v.iter().map(|c| c.chunk_id).collect::<Vec<_>>();
    assert_eq!(ids(&kept), ids(&chunks[..1]), "only what precedes the hole");
    assert_eq!(r.dropped_chunks.len(), chunks.len() - 2, "{r:?}");
    assert!(!a.manifest().partition("t", 0).unwrap().complete);
    assert!(a.manifest().partition("t", 1).unwrap().complete);
    let v = verify(&out, VerifyLevel::Full).unwrap();
    assert!(v.ok, "{v:?}");
}

/// A topic that carries kar archives: with `--compression none` the inner archive's frames lie
/// whole inside the outer archive's chunk. When the outer chunk's frame header is damaged, repair
/// resynchronises through those bytes; the inner frames' checks cover another archive ID, so not
/// one of them is taken for a frame of the outer archive.
#[tokio::test(flavor = "multi_thread")]
async fn repair_keeps_no_frame_of_an_archive_carried_inside_a_record() {
    crate::common::require_kafka();
    let topic = crate::common::unique("nested");
    crate::common::create_topic(&topic, 1, &[]).await;
    let inner = crate::verify::small_archive();
    let inner_ids: Vec<[u8; 32]> =
        Archive::from_source(kar::archive::Source::Owned(inner.clone()), "inner")
            .unwrap()
            .index_content()
            .unwrap()
            .content
            .keys()
            .copied()
            .collect();
    let p = crate::common::producer(&[]);
    for i in 0..3i64 {
        let r = crate::archive::Rec {
            offset: i,
            timestamp: 1_700_000_000_000 + i,
            ts_type: TimestampType::CreateTime,
            key: Some(format!("inner-{i}").into_bytes()),
            value: Some(inner.clone()),
            headers: vec![],
        };
        crate::common::send(&p, &topic, 0, &r);
    }
    let dir = tempfile::tempdir().unwrap();
    let outer = dir.path().join("outer.kar");
    let kar = env!("CARGO_BIN_EXE_kar");
    let b = Command::new(kar)
        .args([
            "backup",
            "--bootstrap",
            &crate::common::bootstrap(),
            "--topics",
            &topic,
        ])
        .args(["--compression", "none", "--out"])
        .arg(&outer)
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let mut bytes = std::fs::read(&outer).unwrap();
    // The inner archive's frame headers are in the outer file, whole.
    let inner_header = &inner[64..64 + frame::HEADER_LEN];
    assert!(bytes.windows(frame::HEADER_LEN).any(|w| w == inner_header));

    let regions = layout(&bytes);
    let chunk = regions
        .iter()
        .position(|(_, s)| s == "record chunk")
        .unwrap();
    let header_at = regions[chunk - 1].0.start;
    bytes[header_at as usize + 30] ^= 0xff;
    let damaged = dir.path().join("damaged.kar");
    std::fs::write(&damaged, &bytes).unwrap();
    let fixed = dir.path().join("fixed.kar");
    let r = repair(&damaged, &fixed, Default::default()).unwrap();
    assert_eq!(r.problems[0].offset, header_at, "{:?}", r.problems);

    let a = Archive::open(&fixed).unwrap();
    let kept = a.index_content().unwrap();
    let adopted: Vec<_> = kept
        .content
        .keys()
        .filter(|id| inner_ids.contains(id))
        .collect();
    assert!(
        adopted.is_empty(),
        "frames of the inner archive kept: {adopted:?}"
    );
    assert!(kept.chunks.iter().all(|c| c.topic == topic));
    assert_ne!(
        a.id(),
        crate::verify::id_of(&bytes),
        "a repair is another archive"
    );
    assert!(verify(&fixed, VerifyLevel::Full).unwrap().ok);
}
