//! Arbitrary content inside frames whose hashes are correct: what a malicious archive can hold,
//! since hashes are not secrets. The first byte picks what the rest becomes (a record chunk, a
//! manifest or a redb index); the target builds a well-formed file around it and opens, verifies
//! and iterates it.
#![no_main]

use kar::archive::verify::{VerifyLevel, verify_source};
use kar::archive::{Archive, Source};
use kar::format::file_header::FileHeader;
use kar::format::footer::Footer;
use kar::format::frame::{Compression, FrameHeader, FrameKind};
use kar::format::manifest::{ArchiveStatus, Manifest};
use kar::format::root::root_hash;
use kar::format::ArchiveId;
use libfuzzer_sys::fuzz_target;

/// The archive ID every file of this target carries.
const ID: ArchiveId = ArchiveId([0x5a; 16]);

fn frame(out: &mut Vec<u8>, kind: FrameKind, raw: &[u8]) -> u64 {
    let at = out.len() as u64;
    let h = FrameHeader::for_content(kind, Compression::None, raw, raw);
    out.extend_from_slice(&h.encode(Some(ID)));
    out.extend_from_slice(raw);
    at
}

/// kar catches redb's panics on a malformed index and reports them as errors; libfuzzer-sys's
/// hook would abort on them even so. Panics that escape kar still abort and count as crashes.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

fuzz_target!(|data: &[u8]| {
    quiet_caught_panics();
    let Some((&which, content)) = data.split_first() else { return };
    let manifest = Manifest {
        format_major: kar::format::VERSION_MAJOR,
        format_minor: 0,
        created_at_ms: 0,
        writer: "fuzz".into(),
        status: ArchiveStatus::Complete,
        topics: vec![],
        metadata: vec![],
        blobs: 0,
        notes: vec![],
    }
    .encode();
    let mut out = FileHeader::new(ID).encode();
    let mut ids = Vec::new();
    if which % 3 == 0 {
        frame(&mut out, FrameKind::RecordChunk, content);
        ids.push(*blake3::hash(content).as_bytes());
    }
    let manifest_raw: &[u8] = if which % 3 == 1 { content } else { &manifest };
    let manifest_offset = frame(&mut out, FrameKind::Manifest, manifest_raw);
    let index_raw: &[u8] = if which % 3 == 2 { content } else { &[] };
    let index_offset = frame(&mut out, FrameKind::Index, index_raw);
    let footer = Footer {
        index_offset,
        manifest_offset,
        frame_count: ids.len() as u64 + 2,
        root: root_hash(blake3::hash(manifest_raw).as_bytes(), ids),
        major: kar::format::VERSION_MAJOR,
        minor: 0,
    };
    out.extend_from_slice(&footer.encode(Some(ID)));

    let _ = verify_source(Source::Owned(out.clone()), "fuzz", VerifyLevel::Full);
    if let Ok(a) = Archive::from_source(Source::Owned(out.clone()), "fuzz") {
        if let Ok(ix) = a.index_content() {
            for c in ix.chunks.iter().take(16) {
                let _ = a.for_each_record(&c.topic, c.partition, |_| {});
            }
        }
    }
    let _ = kar::archive::dump::dump(&out);
});
