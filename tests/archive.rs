//! The archive writer and reader, without services: records of every shape go in and come out
//! exactly, with the index, manifest and root hash agreeing.

use kar::archive::{Archive, ArchiveWriter, WriterOptions};
use kar::format::chunk::TimestampType;
use kar::format::manifest::ArchiveStatus;

/// One record as written, to compare with what is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub offset: i64,
    pub timestamp: i64,
    pub ts_type: TimestampType,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

pub fn sample_records(n: usize, seed: u64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut offset = 5i64;
    let mut x = seed;
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        offset += 1 + (x >> 60) as i64 % 3; // gaps
        let key = match i % 7 {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(format!("key-{}", i % 13).into_bytes()),
        };
        let value = match i % 11 {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 300)).into_bytes()),
        };
        let headers = if i % 3 == 0 {
            vec![
                ("a".into(), Some(b"1".to_vec())),
                ("a".into(), None),
                ("b".into(), Some(Vec::new())),
            ]
        } else {
            Vec::new()
        };
        out.push(Rec {
            offset,
            timestamp: 1_700_000_000_000 + ((x >> 40) % 100_000) as i64 - 50_000,
            ts_type: if i % 5 == 0 {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            key,
            value,
            headers,
        });
    }
    out
}

pub fn write_records<W: std::io::Write>(
    w: &mut ArchiveWriter<W>,
    topic: &str,
    partition: i32,
    recs: &[Rec],
) {
    for r in recs {
        w.append(
            topic,
            partition,
            r.offset,
            r.timestamp,
            r.ts_type,
            r.key.as_deref(),
            r.value.as_deref(),
            r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        )
        .unwrap();
    }
}

pub fn read_records(a: &Archive, topic: &str, partition: i32) -> Vec<Rec> {
    let mut out = Vec::new();
    a.for_each_record(topic, partition, |r| {
        out.push(Rec {
            offset: r.offset,
            timestamp: r.timestamp,
            ts_type: r.timestamp_type,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                .collect(),
        })
    })
    .unwrap();
    out
}

#[test]
fn records_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.kar");
    let opts = WriterOptions {
        chunk_target_bytes: 16 * 1024,
        zstd_level: 3,
        created_at_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let mut w = ArchiveWriter::create(&path, opts).unwrap();
    let p0 = sample_records(2000, 1);
    let p1 = sample_records(10, 2);
    w.declare_partition("orders", 0, 0, p0.last().unwrap().offset + 1);
    w.declare_partition("orders", 1, 0, p1.last().unwrap().offset + 1);
    w.declare_partition("empty", 0, 0, 0);
    let blob = w.add_blob(b"{\"type\":\"string\"}").unwrap();
    assert_eq!(
        w.add_blob(b"{\"type\":\"string\"}").unwrap(),
        blob,
        "same blob, same id"
    );
    write_records(&mut w, "orders", 0, &p0);
    write_records(&mut w, "orders", 1, &p1);
    w.finish_partition("orders", 0).unwrap();
    w.finish_partition("orders", 1).unwrap();
    w.finish_partition("empty", 0).unwrap();
    let (out, summary) = w.finish(ArchiveStatus::Complete, vec![]).unwrap();
    kar::archive::writer::sync_file(out, &path).unwrap();
    assert_eq!(summary.records, 2010);
    assert_eq!(summary.deduplicated, 1);
    assert!(
        summary.chunks > 5,
        "2000 records of ~200 B in 16 KiB chunks: {}",
        summary.chunks
    );

    let a = Archive::open(&path).unwrap();
    assert_eq!(a.root(), summary.root);
    assert_eq!(read_records(&a, "orders", 0), p0);
    assert_eq!(read_records(&a, "orders", 1), p1);
    assert!(read_records(&a, "empty", 0).is_empty());
    assert_eq!(a.read_content(&blob).unwrap(), b"{\"type\":\"string\"}");

    let m = a.manifest();
    assert_eq!(m.status, ArchiveStatus::Complete);
    let e = m.partition("orders", 0).unwrap();
    assert_eq!(e.records, 2000);
    assert!(e.complete);
    assert_eq!(e.first_offset, Some(p0[0].offset));
    assert_eq!(e.last_offset, Some(p0.last().unwrap().offset));
    assert_eq!(e.min_timestamp, p0.iter().map(|r| r.timestamp).min());
    assert_eq!(e.max_timestamp, p0.iter().map(|r| r.timestamp).max());
    let empty = m.partition("empty", 0).unwrap();
    assert_eq!((empty.records, empty.chunks, empty.complete), (0, 0, true));

    // Point in time: the first chunk holding a record at or after T holds the first such record.
    let t = p0[1500].timestamp;
    let want = p0.iter().find(|r| r.timestamp >= t).unwrap().offset;
    let first = a.first_chunk_at_or_after("orders", 0, t).unwrap().unwrap();
    let chunks = a.chunks_of("orders", 0).unwrap();
    let c = chunks.iter().find(|c| c.first_offset == first).unwrap();
    assert!(
        c.first_offset <= want && want <= c.last_offset,
        "chunk {first} does not hold offset {want}"
    );
    assert!(
        chunks
            .iter()
            .filter(|c| c.first_offset < first)
            .all(|c| c.max_timestamp < t)
    );
}

#[test]
fn a_full_disk_is_a_clear_error_naming_the_path() {
    // /dev/full answers every write with ENOSPC, as a full disk does.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let opts = WriterOptions {
        chunk_target_bytes: 1024,
        ..Default::default()
    };
    let result = ArchiveWriter::new(file, "/dev/full", opts).and_then(|mut w| {
        let recs = sample_records(100, 3);
        for r in &recs {
            w.append(
                "t",
                0,
                r.offset,
                r.timestamp,
                r.ts_type,
                r.key.as_deref(),
                r.value.as_deref(),
                [],
            )?;
        }
        w.finish(ArchiveStatus::Complete, vec![]).map(|_| ())
    });
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("/dev/full") && err.contains("No space left on device"),
        "{err}"
    );
}

/// An index whose `content` entry for one blob names another blob's frame (hashes are not
/// secrets: such an archive looks intact frame by frame, and a quick verify does not read the
/// blobs) must not hand out the other blob's bytes as this one's: `read_content` checks the frame
/// it reads holds the content asked for. (It returned the other blob, so a restore could register
/// the wrong schema text.)
#[test]
fn an_index_that_points_a_content_id_at_another_frame_is_an_error() {
    use kar::format::footer::{Footer, LEN};
    use kar::format::frame::{Compression, FrameHeader, FrameKind};
    let mut w = kar::archive::ArchiveWriter::new(Vec::new(), "mem", Default::default()).unwrap();
    let a = w.add_blob(b"{\"type\":\"string\"}").unwrap();
    let b = w.add_blob(b"{\"type\":\"long\"}").unwrap();
    let bytes = w
        .finish(kar::format::manifest::ArchiveStatus::Complete, vec![])
        .unwrap()
        .0;
    let id = kar::format::file_header::FileHeader::decode(&bytes)
        .unwrap()
        .archive_id;
    let footer = Footer::decode(&bytes, 3, id).unwrap();
    let h = FrameHeader::decode(
        &bytes[footer.index_offset as usize..],
        footer.index_offset,
        id,
    )
    .unwrap();
    let start = footer.index_offset as usize + kar::format::frame::HEADER_LEN;
    let index = &bytes[start..bytes.len() - LEN];
    assert_eq!(index.len() as u64, h.stored_len);

    // The same index with a's entry pointing at b's frame.
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("index.redb");
    std::fs::write(&db_path, index).unwrap();
    {
        use redb::ReadableTable;
        let db = redb::Database::open(&db_path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(kar::archive::index::CONTENT).unwrap();
            let at_b = t.get(b).unwrap().unwrap().value();
            t.insert(a, at_b).unwrap();
        }
        tx.commit().unwrap();
    }
    let index = std::fs::read(&db_path).unwrap();
    let mut out = bytes[..footer.index_offset as usize].to_vec();
    out.extend_from_slice(
        &FrameHeader::for_content(FrameKind::Index, Compression::None, &index, &index).encode(id),
    );
    out.extend_from_slice(&index);
    out.extend_from_slice(&footer.encode(id));
    let path = dir.path().join("pointed.kar");
    std::fs::write(&path, &out).unwrap();

    let arch = Archive::open(&path).unwrap();
    assert_eq!(arch.read_content(&b).unwrap(), b"{\"type\":\"long\"}");
    let err = arch.read_content(&a).unwrap_err().to_string();
    assert!(
        err.contains("index") && err.contains(&kar::format::hex(&a)[..16]),
        "{err}"
    );
}

/// A `consumer-groups` document that does not read is an error of `inspect`, naming the document;
/// it was shown as "no groups".
#[test]
fn an_unreadable_groups_document_is_an_error_not_no_groups() {
    let mut w = kar::archive::ArchiveWriter::new(Vec::new(), "mem", Default::default()).unwrap();
    w.add_metadata(
        "consumer-groups",
        br#"{"kind":"consumer-groups","groups":"none"}"#,
    )
    .unwrap();
    let bytes = w.finish(ArchiveStatus::Complete, vec![]).unwrap().0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("groups.kar");
    std::fs::write(&path, bytes).unwrap();
    let err = kar::archive::inspect::inspect(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("consumer-groups document"), "{err}");
}

/// Blobs and documents come before every record chunk (§3: a stream restore needs the schemas
/// and topics before the first record); only `provenance`, written when the backup ends, may
/// follow. The writer refuses the rest, naming it, and the archive can still be finished.
#[test]
fn a_blob_or_document_after_records_is_refused_but_provenance() {
    let mut w = ArchiveWriter::new(Vec::new(), "mem", Default::default()).unwrap();
    w.add_blob(b"before").unwrap();
    w.add_metadata("kafka-topics", b"{}").unwrap();
    write_records(&mut w, "t", 0, &sample_records(5, 1));
    w.flush_chunk("t", 0).unwrap();
    let e = w.add_blob(b"after").unwrap_err().to_string();
    assert!(e.contains("a blob after record chunks"), "{e}");
    let e = w
        .add_metadata("consumer-groups", b"{}")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the consumer-groups document after record chunks"),
        "{e}"
    );
    w.add_metadata("provenance", b"{}").unwrap();
    w.finish_partition("t", 0).unwrap();
    let bytes = w.finish(ArchiveStatus::Complete, vec![]).unwrap().0;
    let a = Archive::from_source(kar::archive::Source::Owned(bytes), "mem").unwrap();
    assert_eq!(a.manifest().metadata.len(), 2);
    assert_eq!(a.manifest().blobs, 1);
}

/// Every frame's check covers the archive ID: a frame header of one archive does not decode as
/// one of another, though its bytes and hashes are intact.
#[test]
fn a_frame_of_another_archive_fails_its_check() {
    use kar::format::frame::FrameHeader;
    let a = crate::verify::small_archive();
    let b = crate::verify::small_archive();
    let (ia, ib) = (crate::verify::id_of(&a), crate::verify::id_of(&b));
    assert!(ia.is_some() && ia != ib, "each archive draws its own ID");
    let h = &a[64..64 + kar::format::frame::HEADER_LEN];
    assert!(FrameHeader::decode(h, 64, ia).is_ok());
    let e = FrameHeader::decode(h, 64, ib).unwrap_err().to_string();
    assert!(e.contains("of another archive"), "{e}");
    assert!(FrameHeader::decode(h, 64, None).is_err());
    // The footer too: b's footer on a's frames is refused when the file opens.
    let mut spliced = a[..a.len() - 80].to_vec();
    spliced.extend_from_slice(&b[b.len() - 80..]);
    let e = Archive::from_source(kar::archive::Source::Owned(spliced), "spliced")
        .unwrap_err()
        .to_string();
    assert!(e.contains("footer check"), "{e}");
}

/// Resident kilobytes of the mapping of this process that holds `addr` (from /proc/self/smaps).
fn mapping_rss_kib(addr: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((from, to)) = first.split_once('-')
            && let (Ok(from), Ok(to)) = (
                usize::from_str_radix(from, 16),
                usize::from_str_radix(to, 16),
            )
        {
            inside = (from..to).contains(&addr);
        } else if inside && let Some(kib) = line.strip_prefix("Rss:") {
            return kib.trim().trim_end_matches(" kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping holds {addr:#x}")
}

/// An archive of 24 MiB of values zstd cannot shrink (so the file is as large), in chunks of
/// `chunk` bytes: its records.
fn incompressible_archive(path: &std::path::Path, chunk: usize) -> Vec<Rec> {
    let opts = WriterOptions {
        chunk_target_bytes: chunk,
        created_at_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let mut w = ArchiveWriter::create(path, opts).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let records: Vec<Rec> = (0..6144)
        .map(|i| Rec {
            offset: i,
            timestamp: 1_700_000_000_000 + i,
            ts_type: TimestampType::CreateTime,
            key: None,
            value: Some(
                (0..512)
                    .flat_map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x.to_le_bytes()
                    })
                    .collect(),
            ),
            headers: Vec::new(),
        })
        .collect();
    w.declare_partition("big", 0, 0, 6144);
    write_records(&mut w, "big", 0, &records);
    w.finish_partition("big", 0).unwrap();
    let (out, _) = w.finish(ArchiveStatus::Complete, vec![]).unwrap();
    kar::archive::writer::sync_file(out, path).unwrap();
    assert!(std::fs::metadata(path).unwrap().len() > 24 << 20);
    records
}

#[test]
fn chunks_read_leave_the_resident_set() {
    // A restore reads every chunk of a mapped archive once; the pages it has read must not stay
    // in the process's resident set, or a 100 GB archive shows 100 GB of RSS (issue 18).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.kar");
    let records = incompressible_archive(&path, 1 << 20);

    let a = Archive::open(&path).unwrap();
    let addr = a.bytes().as_ptr() as usize;
    let (mut dec, mut buf) = (a.decoder().unwrap(), Vec::new());
    let mut read = 0;
    for c in a.chunks_of("big", 0).unwrap() {
        a.read_chunk(&c, &mut dec, &mut buf).unwrap();
        read += buf.len();
    }
    assert!(read > 24 << 20, "every chunk read: {read} bytes");
    let rss = mapping_rss_kib(addr);
    assert!(
        rss < 2048,
        "{rss} KiB of the 24 MiB archive's map still resident after every chunk was read"
    );
    // Read again, the same bytes come back (the pages fault in from the file).
    let mut again = 0;
    for c in a.chunks_of("big", 0).unwrap() {
        a.read_chunk(&c, &mut dec, &mut buf).unwrap();
        again += buf.len();
    }
    assert_eq!(again, read);
    assert_eq!(read_records(&a, "big", 0), records);
}

/// A full verify scans every frame of the map once: what it has checked must not stay
/// resident either (a full verify of a 2 GB archive ended with 2 GB of it in the resident set).
/// Checked from the scan's progress, after its last batch (frames are checked 32 at a time: here
/// ~8 MiB).
#[test]
fn a_full_verify_leaves_the_resident_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.kar");
    incompressible_archive(&path, 256 << 10);
    let source = kar::archive::Source::map(&path).unwrap();
    let addr = source.as_ptr() as usize;
    let last = std::sync::Mutex::new((0u64, 0u64));
    let report = kar::archive::verify::verify_source_with_progress(
        source,
        &path,
        kar::archive::verify::VerifyLevel::Full,
        &|pos| *last.lock().unwrap() = (pos, mapping_rss_kib(addr)),
    );
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.records, 6144);
    let (pos, rss) = *last.lock().unwrap();
    assert!(pos > 24 << 20, "the scan reached {pos}");
    assert!(
        rss < 2048,
        "{rss} KiB of the 24 MiB archive's map still resident when the scan ended"
    );
}

/// What the background sync has written out is dropped from the page cache: a backup never reads
/// its chunks back, and a 100 GB archive would otherwise push every other file out of the cache
/// (and costs four times the CPU on a VM whose freed memory goes back to the host; issue 18).
/// Checked with util-linux's `fincore`; on disk, not tmpfs, whose pages are the file itself.
#[test]
fn written_out_pages_leave_the_page_cache() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("written.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut sync =
        kar::archive::writer::BackgroundSync::start(&file, 4 << 20, Default::default()).unwrap();
    let block = |i: u64| -> Vec<u8> {
        (0..1u64 << 20)
            .map(|j| (j.wrapping_mul(31) ^ i) as u8)
            .collect()
    };
    for i in 0..48u64 {
        file.write_all(&block(i)).unwrap();
        sync.written((i + 1) << 20);
    }
    sync.stop().unwrap();
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(&path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(out.status.success(), "{out:?}");
    let resident: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        resident <= 24 << 20,
        "{resident} bytes of the 48 MiB written still in the page cache"
    );
    // Nothing written is lost: every byte reads back.
    let mut back = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back.len(), 48 << 20);
    for i in 0..48u64 {
        assert!(
            back[(i as usize) << 20..][..1 << 20] == block(i)[..],
            "block {i}"
        );
    }
}

/// A sync that fails in the background is reported when the writer stops it: the kernel reports a
/// writeback error once per open file, to whichever sync comes first, and the background thread's
/// handle shares the writer's, so the final sync may find nothing wrong. /dev/null takes writes
/// and refuses syncs (EINVAL), as a failing device's file would.
#[test]
fn a_failed_background_sync_is_reported_when_stopped() {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let mut sync =
        kar::archive::writer::BackgroundSync::start(&null, 4 << 20, Default::default()).unwrap();
    sync.written(8 << 20);
    let err = sync.stop().expect_err("the failed sync is reported");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}
