//! `kar verify` and the reader on good and bad input: every sampled flipped bit is found and
//! attributed to the structure it hit; truncated, empty, foreign and newer-version files get clear
//! errors and no panic.

use std::process::Command;

use kar::archive::verify::{VerifyLevel, layout, verify_source};
use kar::archive::{Archive, ArchiveError, ArchiveWriter, Source, WriterOptions};
use kar::format::manifest::ArchiveStatus;

use crate::archive::{sample_records, write_records};

/// A small archive with several chunks over two partitions, an empty partition, a blob and a
/// metadata document.
pub fn small_archive() -> Vec<u8> {
    let opts = WriterOptions {
        chunk_target_bytes: 4096,
        zstd_level: 3,
        created_at_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let mut w = ArchiveWriter::new(Vec::new(), "memory", opts).unwrap();
    w.declare_partition("t", 0, 0, 1000);
    w.declare_partition("t", 1, 0, 1000);
    w.declare_partition("empty", 0, 0, 0);
    // Blobs and documents before records, as the format asks (§3).
    w.add_blob(br#"{"type":"record","name":"A","fields":[]}"#)
        .unwrap();
    w.add_metadata("example", br#"{"hello":"world"}"#).unwrap();
    write_records(&mut w, "t", 0, &sample_records(120, 7));
    write_records(&mut w, "t", 1, &sample_records(30, 8));
    for (t, p) in [("t", 0), ("t", 1), ("empty", 0)] {
        w.finish_partition(t, p).unwrap();
    }
    w.finish(ArchiveStatus::Complete, vec![]).unwrap().0
}

#[test]
fn an_intact_archive_verifies_at_every_level() {
    let bytes = small_archive();
    for level in [VerifyLevel::Quick, VerifyLevel::Fast, VerifyLevel::Full] {
        let r = verify_source(Source::Owned(bytes.clone()), "small.kar", level);
        assert!(r.ok, "{level:?}: {:?}", r.problems);
        assert_eq!(r.records, 150, "{level:?}");
    }
}

#[test]
fn every_sampled_flipped_bit_is_found_in_the_right_structure() {
    let bytes = small_archive();
    let regions = layout(&bytes);
    let kinds: std::collections::BTreeSet<&str> = regions.iter().map(|(_, s)| s.as_str()).collect();
    for k in [
        "file header",
        "frame header",
        "record chunk",
        "blob",
        "metadata",
        "manifest",
        "index",
        "footer",
    ] {
        assert!(kinds.contains(k), "layout has no {k}: {kinds:?}");
    }
    assert_eq!(
        regions.last().unwrap().0.end,
        bytes.len() as u64,
        "layout covers the file"
    );

    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut tried = 0;
    for (range, structure) in &regions {
        let len = range.end - range.start;
        // Both ends and a few random places in every structure.
        let mut picks = vec![range.start, range.end - 1];
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            picks.push(range.start + x % len);
        }
        for at in picks {
            let mut damaged = bytes.clone();
            damaged[at as usize] ^= 1 << (x % 8);
            let r = verify_source(Source::Owned(damaged), "damaged.kar", VerifyLevel::Full);
            assert!(!r.ok, "flip at {at} in {structure} went unnoticed");
            let first = &r.problems[0];
            assert_eq!(
                &first.structure, structure,
                "flip at {at}: first problem {first} names the wrong structure"
            );
            assert!(
                range.contains(&first.offset),
                "flip at {at} in {structure} {range:?}: reported at offset {}",
                first.offset
            );
            tried += 1;
        }
    }
    assert!(tried > 100, "only {tried} flips");
}

#[test]
fn a_truncated_archive_is_reported_as_unfinished_with_the_torn_frame() {
    let bytes = small_archive();
    let regions = layout(&bytes);
    // Cut inside the third frame's stored bytes.
    let (cut_region, _) = regions
        .iter()
        .filter(|(_, s)| s == "record chunk")
        .nth(2)
        .unwrap();
    let cut = (cut_region.start + 10) as usize;
    let r = verify_source(
        Source::Owned(bytes[..cut].to_vec()),
        "cut.kar",
        VerifyLevel::Full,
    );
    assert!(!r.ok);
    assert_eq!(r.problems[0].structure, "footer");
    assert!(
        r.problems[0].message.contains("unfinished"),
        "{}",
        r.problems[0]
    );
    let torn = r
        .problems
        .iter()
        .find(|p| p.message.starts_with("truncated"))
        .expect("a truncation problem");
    assert_eq!(torn.offset, cut_region.start, "{torn}");

    let err = Archive::from_source(Source::Owned(bytes[..cut].to_vec()), "cut.kar").unwrap_err();
    assert!(err.to_string().contains("kar repair"), "{err}");
}

#[test]
fn bad_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.kar");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Archive::open(&empty),
        Err(ArchiveError::Empty { .. })
    ));
    assert!(matches!(
        Archive::open(dir.path()),
        Err(ArchiveError::NotAFile { .. })
    ));
    let missing = Archive::open(dir.path().join("nope.kar")).unwrap_err();
    assert!(missing.to_string().contains("nope.kar"), "{missing}");

    let foreign = verify_source(
        Source::Owned(b"PK\x03\x04 this is a zip file, not an archive".to_vec()),
        "x.zip",
        VerifyLevel::Full,
    );
    assert!(!foreign.ok);
    assert!(
        foreign.problems[0].message.contains("not a kar archive"),
        "{:?}",
        foreign.problems
    );

    for n in [1usize, 8, 31, 32, 100] {
        let bytes = small_archive();
        let r = verify_source(
            Source::Owned(bytes[..n].to_vec()),
            "short.kar",
            VerifyLevel::Full,
        );
        assert!(!r.ok, "{n} bytes");
    }
}

fn with_versions(mut bytes: Vec<u8>, major: u16, minor: u16) -> Vec<u8> {
    use kar::format::{file_header::FileHeader, footer::Footer};
    let h = FileHeader::decode(&bytes).unwrap();
    let id = h.archive_id;
    bytes[..64].copy_from_slice(&FileHeader { major, minor, ..h }.encode());
    let n = bytes.len();
    let f = Footer::decode(&bytes, 3, id).unwrap();
    bytes[n - 80..].copy_from_slice(&Footer { major, minor, ..f }.encode(id));
    bytes
}

/// The archive ID of the archive in `bytes`.
pub fn id_of(bytes: &[u8]) -> Option<kar::format::ArchiveId> {
    kar::format::file_header::FileHeader::decode(bytes)
        .unwrap()
        .archive_id
}

#[test]
fn a_newer_major_version_is_refused_and_a_newer_minor_read() {
    let bytes = small_archive();
    let newer_minor = with_versions(bytes.clone(), 3, 7);
    let a = Archive::from_source(Source::Owned(newer_minor.clone()), "minor.kar").unwrap();
    assert_eq!(a.manifest().topics.len(), 2);
    assert!(verify_source(Source::Owned(newer_minor), "minor.kar", VerifyLevel::Full).ok);

    let newer_major = with_versions(bytes, 6, 0);
    let err = Archive::from_source(Source::Owned(newer_major.clone()), "major.kar").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("6.0") && msg.contains("major versions 2 to 5"),
        "{msg}"
    );
    let r = verify_source(Source::Owned(newer_major), "major.kar", VerifyLevel::Full);
    assert!(
        !r.ok
            && r.problems[0]
                .message
                .contains("unsupported format version 6.0"),
        "{:?}",
        r.problems
    );
}

#[test]
fn the_cli_verifies_and_inspects_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.kar");
    std::fs::write(&good, small_archive()).unwrap();
    let kar = env!("CARGO_BIN_EXE_kar");

    let out = Command::new(kar)
        .args(["verify", "--json"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 150);
    let root = report["root_hash"].as_str().unwrap().to_string();
    assert_eq!(
        root,
        kar::format::hex(&Archive::open(&good).unwrap().root())
    );

    let out = Command::new(kar)
        .args(["inspect", "--json"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspect["root_hash"], root.as_str());
    assert_eq!(inspect["records"], 150);
    assert_eq!(inspect["topics"][1]["name"], "t");
    assert_eq!(inspect["topics"][1]["partitions"][1]["records"], 30);
    assert_eq!(
        inspect["topics"][0]["partitions"][0]["records"], 0,
        "empty topic listed"
    );

    let out = Command::new(kar)
        .arg("inspect")
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&root), "{text}");

    let mut damaged = small_archive();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x10;
    let bad = dir.path().join("bad.kar");
    std::fs::write(&bad, damaged).unwrap();
    let out = Command::new(kar).arg("verify").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("DAMAGED") && text.contains("offset"),
        "{text}"
    );

    let out = Command::new(kar)
        .arg("verify")
        .arg(dir.path().join("missing.kar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.kar"));
}

/// A reader that goes away (`kar dump FILE | head`) ends the output quietly with the command's
/// own exit code (it used to panic: "failed printing to stdout: Broken pipe", exit 101); a stdout
/// that cannot take the report (a full device) is an error, exit 2, naming it.
#[test]
fn output_to_a_closed_pipe_ends_quietly_and_to_a_full_device_fails() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.kar");
    std::fs::write(&good, small_archive()).unwrap();
    let kar = env!("CARGO_BIN_EXE_kar");
    for args in [&["dump"][..], &["inspect", "--json"], &["verify"]] {
        let mut child = Command::new(kar)
            .args(args)
            .arg(&good)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before kar writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(kar)
        .arg("inspect")
        .arg(&good)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writing the output to stdout"), "{err}");
}

/// Builds a well-hashed archive around `index` as its index frame (what the `wrapped` fuzz target
/// does): hashes are not secrets, so a malicious archive can look intact frame by frame.
fn archive_with_index(index: &[u8]) -> Vec<u8> {
    use kar::format::file_header::FileHeader;
    use kar::format::footer::Footer;
    use kar::format::frame::{Compression, FrameHeader, FrameKind};
    use kar::format::manifest::Manifest;
    let manifest = Manifest {
        format_major: 3,
        format_minor: 0,
        created_at_ms: 0,
        writer: "test".into(),
        status: ArchiveStatus::Complete,
        topics: vec![],
        metadata: vec![],
        blobs: 0,
        notes: vec![],
        parent: None,
        inherited_blobs: vec![],
        changes: vec![],
    }
    .encode();
    let id = kar::format::ArchiveId([7; 16]);
    let mut out = FileHeader::new(id).encode();
    let mut frame = |kind, raw: &[u8]| {
        let at = out.len() as u64;
        out.extend_from_slice(
            &FrameHeader::for_content(kind, Compression::None, raw, raw).encode(Some(id)),
        );
        out.extend_from_slice(raw);
        at
    };
    let manifest_offset = frame(FrameKind::Manifest, &manifest);
    let index_offset = frame(FrameKind::Index, index);
    let root = kar::format::root::root_hash(blake3::hash(&manifest).as_bytes(), []);
    out.extend_from_slice(
        &Footer {
            index_offset,
            manifest_offset,
            frame_count: 2,
            root,
            major: 3,
            minor: 0,
        }
        .encode(Some(id)),
    );
    out
}

#[test]
fn a_malformed_index_with_valid_hashes_is_an_error_not_a_panic() {
    // Found by the `wrapped` fuzz target: redb hit `unreachable!()` on this index.
    let input = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/malformed-redb-index.bin"
    ))
    .unwrap();
    let bytes = archive_with_index(&input[1..]);
    let r = verify_source(Source::Owned(bytes.clone()), "evil.kar", VerifyLevel::Full);
    assert!(!r.ok);
    assert!(
        r.problems
            .iter()
            .any(|p| p.structure == "index" && p.message.contains("malformed")),
        "{:?}",
        r.problems
    );
    match Archive::from_source(Source::Owned(bytes), "evil.kar") {
        Ok(a) => assert!(a.index_content().is_err()),
        Err(e) => assert!(e.to_string().contains("index"), "{e}"),
    }
}

fn kar_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn two_archives_joined_are_refused_by_every_command_that_reads_one() {
    let dir = tempfile::tempdir().unwrap();
    let one = small_archive();
    let joined = dir.path().join("joined.kar");
    std::fs::write(&joined, [one.clone(), one].concat()).unwrap();
    let path = joined.to_str().unwrap();
    let out = dir.path().join("out.kar");
    for args in [
        vec!["verify", "--quick", path],
        vec!["verify", "--fast", path],
        vec!["verify", path],
        vec!["inspect", path],
        vec!["compact", path, "--out", out.to_str().unwrap()],
        vec!["restore", path, "--bootstrap", "127.0.0.1:1", "--dry-run"],
    ] {
        let r = kar_cli(&args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        assert_ne!(r.status.code(), Some(0), "{args:?}: {all}");
        assert!(
            all.contains("not one archive") || all.contains("DAMAGED"),
            "{args:?}: {all}"
        );
    }
    assert!(!out.exists());
}

#[test]
fn a_footer_whose_frame_count_is_wrong_fails_the_quick_verify() {
    let mut bytes = small_archive();
    let n = bytes.len();
    let id = id_of(&bytes);
    let f = kar::format::footer::Footer::decode(&bytes, 3, id).unwrap();
    for count in [f.frame_count + 1, u64::MAX / 2] {
        bytes[n - 80..].copy_from_slice(
            &kar::format::footer::Footer {
                frame_count: count,
                ..f
            }
            .encode(id),
        );
        let r = verify_source(
            Source::Owned(bytes.clone()),
            "count.kar",
            VerifyLevel::Quick,
        );
        assert!(!r.ok);
        assert!(
            r.problems[0]
                .message
                .contains(&format!("footer counts {count} frames"))
                && r.problems[0].offset == (n - 80 + 16) as u64,
            "{:?}",
            r.problems
        );
    }
}

fn stream(bytes: &[u8]) -> kar::archive::verify::VerifyReport {
    kar::archive::stream::verify_stream(bytes, "stream", None, &|_| {})
}

/// The one-pass stream verify agrees with the file verify: the same counts and root on an intact
/// archive (and a byte-for-byte copy through `tee`); every sampled flipped bit found, with a
/// problem inside the structure hit; a stream cut anywhere is unfinished, at the offset it ended;
/// zero padding to the next MiB is a tape's, anything more or non-zero after the footer is not.
#[test]
fn a_stream_is_verified_in_one_pass_as_a_file_is() {
    let bytes = small_archive();
    let file = verify_source(Source::Owned(bytes.clone()), "small.kar", VerifyLevel::Full);
    let mut copy = Vec::new();
    let s = kar::archive::stream::verify_stream(&bytes[..], "stream", Some(&mut copy), &|_| {});
    assert!(s.ok, "{:?}", s.problems);
    assert_eq!(copy, bytes, "tee copies every byte");
    assert_eq!(
        (s.frames, s.chunks, s.records, s.file_bytes, &s.root_hash),
        (
            file.frames,
            file.chunks,
            file.records,
            file.file_bytes,
            &file.root_hash
        )
    );

    let regions = layout(&bytes);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for (range, structure) in &regions {
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = range.start + x % (range.end - range.start);
            let mut damaged = bytes.clone();
            damaged[at as usize] ^= 1 << (x % 8);
            let r = stream(&damaged);
            assert!(!r.ok, "flip at {at} in {structure} went unnoticed");
            assert!(
                r.problems.iter().any(|p| range.contains(&p.offset)),
                "flip at {at} in {structure} {range:?}: {:?}",
                r.problems
            );
        }
    }

    for (range, _) in &regions {
        for cut in [range.start, range.start + 1, range.end - 1] {
            let r = stream(&bytes[..cut as usize]);
            assert!(!r.ok, "cut at {cut}");
            assert!(
                r.problems[0]
                    .message
                    .contains(&format!("the stream ended at offset {cut}")),
                "cut at {cut}: {:?}",
                r.problems
            );
        }
    }

    let mib = 1 << 20;
    let padded = |n: usize, b: u8| [&bytes[..], &vec![b; n][..]].concat();
    assert!(
        stream(&padded(mib - bytes.len(), 0)).ok,
        "zeros to the next MiB"
    );
    assert!(
        !stream(&padded(mib - bytes.len() + 1, 0)).ok,
        "a zero past it"
    );
    let r = stream(&padded(10, 7));
    assert!(!r.ok);
    assert_eq!(r.problems[0].offset, bytes.len() as u64);
}
