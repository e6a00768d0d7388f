//! A chain (spec §16) merged into one full archive with the same content as of its newest
//! member: that member's documents (the `kafka-topics` ranges widened to the chain's), every
//! schema text it names wherever in the chain it is stored, and per partition every chunk from
//! the archive its lineage starts in up to the newest, copied frame by frame (no recompression,
//! each chunk's content ID unchanged). Offsets lost between members are the output's gaps (§5),
//! so it is whole only when the chain was. Reading only: no archive of the chain is changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::chain::{Chain, Span, open_chain};
use super::index::ChunkEntry;
use super::reader::frame_at;
use super::verify::VerifyLevel;
use super::writer::{ArchiveWriter, WriterOptions, sync_file};
use super::{Archive, ArchiveError};
use crate::format::chunk::{ChunkHeader, SealedChunk};
use crate::format::kafka_topics::{DeclaredRange, KafkaTopicsDoc};
use crate::format::manifest::ArchiveStatus;
use crate::format::{Hash, footer, hex, parse_hex};

#[derive(Debug, Clone, Serialize)]
pub struct ConsolidateReport {
    pub out: PathBuf,
    /// The chain's archives, base first.
    pub from: Vec<PathBuf>,
    pub archive_id: String,
    pub root_hash: String,
    pub status: ArchiveStatus,
    pub records: u64,
    pub chunks: u64,
    pub blobs: u64,
    /// Offsets lost between members, by partition: gaps of the output.
    pub gaps: Vec<String>,
    /// Partitions the newest archive holding them did not get whole: not complete in the
    /// output either.
    pub incomplete: Vec<String>,
}

/// Merges the chain the files (or folders) hold into `out` (a new file). A broken chain (a
/// missing member, a link whose root differs, a damaged archive) is refused before `out` is
/// made.
pub fn consolidate(
    paths: &[PathBuf],
    out: &Path,
    opts: WriterOptions,
) -> Result<ConsolidateReport, ArchiveError> {
    let chain = open_chain(paths, VerifyLevel::Quick)?;
    let r = &chain.report;
    let broken: Vec<&str> = r
        .problems
        .iter()
        .map(String::as_str)
        .chain(
            r.members
                .iter()
                .filter(|m| !m.intact)
                .map(|_| "an archive does not verify"),
        )
        .collect();
    if !broken.is_empty() || chain.archives.is_empty() {
        return Err(ArchiveError::Chain(format!(
            "not consolidated, the chain is broken: {}",
            if broken.is_empty() {
                "no archive"
            } else {
                broken[0]
            }
        )));
    }
    let newest = chain.archives.last().expect("not empty");
    if chain.archives.iter().any(|a| a.header().is_encrypted()) {
        return Err(ArchiveError::Chain(
            "an encrypted chain is not consolidated yet".into(),
        ));
    }
    let opts = WriterOptions {
        created_at_ms: newest.manifest().created_at_ms,
        chain: None,
        ..opts
    };
    let mut w = ArchiveWriter::create(out, opts)?;
    let written = write_all(&chain, &mut w);
    let status = *written.as_ref().unwrap_or(&ArchiveStatus::Partial);
    let (file, summary) = match written.and_then(|status| {
        let notes = vec![format!(
            "consolidated by kar {} from a chain of {} archives, the newest {} (root {})",
            env!("CARGO_PKG_VERSION"),
            chain.archives.len(),
            newest.id().map(|i| i.hex()).unwrap_or_default(),
            hex(&newest.root())
        )];
        w.finish(status, notes)
    }) {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    sync_file(file, out)?;
    Ok(ConsolidateReport {
        out: out.to_path_buf(),
        from: chain
            .archives
            .iter()
            .map(|a| a.path().to_path_buf())
            .collect(),
        archive_id: summary.archive_id.map(|i| i.hex()).unwrap_or_default(),
        root_hash: hex(&summary.root),
        status,
        records: summary.records,
        chunks: summary.chunks,
        blobs: (newest.manifest().blobs as usize + newest.manifest().inherited_blobs.len()) as u64,
        gaps: r.lost.clone(),
        incomplete: r.incomplete.clone(),
    })
}

type Writer = ArchiveWriter<std::io::BufWriter<std::fs::File>>;

/// Blobs, documents, chunks, then provenance, as a backup writes them (§3).
fn write_all(chain: &Chain, w: &mut Writer) -> Result<ArchiveStatus, ArchiveError> {
    let newest = chain.archives.last().expect("not empty");
    // Each archive's content table read once, not once a blob.
    let contents = chain
        .archives
        .iter()
        .map(|a| a.index_content().map(|ix| ix.content))
        .collect::<Result<Vec<_>, _>>()?;
    for id in blobs_named(newest)? {
        copy_content(chain, &contents, &id, w)?;
    }
    for (id, blob) in newest.index_content()?.schemas {
        w.index_schema(id, blob);
    }
    let spans: BTreeMap<(&str, i32), &Span> = chain
        .report
        .partitions
        .iter()
        .map(|s| ((s.topic.as_str(), s.partition), s))
        .collect();
    let mut provenance = None;
    for m in &newest.manifest().metadata {
        let id = parse_hex(&m.id).ok_or_else(|| bad(newest, &m.id))?;
        match m.kind.as_str() {
            crate::format::provenance::KIND => provenance = Some(id),
            crate::format::kafka_topics::KIND => {
                let raw = widened(newest, &id, &spans)?;
                w.add_metadata(&m.kind, &raw)?;
            }
            kind => {
                w.add_metadata(kind, &newest.read_content(&id)?)?;
            }
        }
    }
    let mut whole = true;
    let level = w.options().zstd_level;
    for s in &chain.report.partitions {
        whole &= copy_partition(chain, s, w, level)?;
    }
    if let Some(id) = provenance {
        w.add_metadata(crate::format::provenance::KIND, &newest.read_content(&id)?)?;
    }
    Ok(if whole {
        ArchiveStatus::Complete
    } else {
        ArchiveStatus::Partial
    })
}

/// The blobs the newest member names: those it stores and those it inherits.
fn blobs_named(newest: &Archive) -> Result<Vec<Hash>, ArchiveError> {
    let m = newest.manifest();
    let mut ids: Vec<Hash> = Vec::new();
    for b in &m.inherited_blobs {
        ids.push(parse_hex(b).ok_or_else(|| bad(newest, b))?);
    }
    ids.extend(newest.blob_ids()?);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Copies the content frame `id` from the newest archive of the chain that stores it.
fn copy_content(
    chain: &Chain,
    contents: &[std::collections::BTreeMap<Hash, u64>],
    id: &Hash,
    w: &mut Writer,
) -> Result<(), ArchiveError> {
    for (a, content) in chain.archives.iter().zip(contents).rev() {
        let Some(at) = content.get(id).copied() else {
            continue;
        };
        let data_end = a.bytes().len() as u64 - footer::LEN as u64;
        let (h, stored) = frame_at(a.bytes(), at, data_end, a.id())
            .map_err(ArchiveError::format(a.path(), ""))?;
        if h.kind != crate::format::frame::FrameKind::Blob {
            continue;
        }
        checked(a, at, &h, stored)?;
        return w.copy_frame(&h, stored, None);
    }
    Err(ArchiveError::Chain(format!(
        "blob {} is named by the newest member but stored in no archive of the chain",
        hex(id)
    )))
}

/// The newest member's `kafka-topics` document with each partition's range the chain's.
fn widened(
    newest: &Archive,
    id: &Hash,
    spans: &BTreeMap<(&str, i32), &Span>,
) -> Result<Vec<u8>, ArchiveError> {
    let raw = newest.read_content(id)?;
    let mut doc: KafkaTopicsDoc = serde_json::from_slice(&raw).map_err(|e| {
        ArchiveError::Chain(format!(
            "{}: the kafka-topics document does not read: {e}",
            newest.path().display()
        ))
    })?;
    for r in &mut doc.partitions {
        if let Some((start, end)) = spans
            .get(&(r.topic.as_str(), r.partition))
            .and_then(|s| range(s))
        {
            *r = DeclaredRange {
                start_offset: start,
                end_offset: end,
                ..r.clone()
            };
        }
    }
    Ok(serde_json::to_vec(&doc).expect("json"))
}

/// The chain's range of a partition: from its lineage's first archive to the newest's declared
/// end.
fn range(s: &Span) -> Option<(i64, i64)> {
    Some((s.ranges.first()?.1, s.end))
}

/// Copies one partition's chunks, archive after archive ([`Chain::tiles`]); returns whether it
/// is whole. Lost offsets stay holes, recorded as gaps.
fn copy_partition(
    chain: &Chain,
    s: &Span,
    w: &mut Writer,
    level: i32,
) -> Result<bool, ArchiveError> {
    let Some((start, end)) = range(s) else {
        return Ok(true);
    };
    w.declare_partition(&s.topic, s.partition, start, end);
    for t in chain.tiles(s)? {
        Pending {
            a: &chain.archives[t.member],
            c: t.chunk,
            from: t.covers.start,
            to: t.covers.end,
        }
        .write(w, level)?;
    }
    for g in &s.gaps {
        w.record_gap(&s.topic, s.partition, g.from, g.to);
    }
    let whole = s.gaps.is_empty() && s.complete;
    if whole {
        w.finish_partition(&s.topic, s.partition)?;
    }
    Ok(whole)
}

/// A chunk to copy, with the coverage it is to have.
struct Pending<'a> {
    a: &'a Archive,
    c: ChunkEntry,
    from: i64,
    to: i64,
}

impl Pending<'_> {
    /// Copies the chunk's frame as it is, or, where its coverage grows, its records re-encoded
    /// under the wider coverage (a new chunk ID).
    fn write(self, w: &mut Writer, level: i32) -> Result<(), ArchiveError> {
        let (a, c) = (self.a, &self.c);
        if (self.from, self.to) == (c.covers_from, c.covers_to) {
            let data_end = a.bytes().len() as u64 - footer::LEN as u64;
            let (h, stored) = frame_at(a.bytes(), c.frame_offset, data_end, a.id())
                .map_err(ArchiveError::format(a.path(), ""))?;
            checked(a, c.frame_offset, &h, stored)?;
            return w.copy_frame(&h, stored, Some(header_of(c)));
        }
        let mut dec = a.decoder()?;
        let mut buf = Vec::new();
        a.read_chunk(c, &mut dec, &mut buf)?;
        let (header, raw) = super::reader::encode_again(a, c, &buf, i64::MIN, self.from..self.to)?;
        let sealed = SealedChunk::from_raw(header, &raw, level)
            .map_err(ArchiveError::io("compress a chunk for", a.path()))?;
        w.write_chunk(sealed)
    }
}

/// A frame about to be copied, checked as a full verification checks it (stored hash, then the
/// content against its ID): a quick check of the chain reads no chunk, and a damaged frame must
/// not pass into the output unnoticed.
fn checked(
    a: &Archive,
    at: u64,
    h: &crate::format::frame::FrameHeader,
    stored: &[u8],
) -> Result<(), ArchiveError> {
    if !crate::format::frame::check_stored(h, stored) {
        return Err(ArchiveError::format(a.path(), "")(
            crate::format::FormatError::Corrupt {
                structure: "frame content",
                offset: at,
                detail: "the stored bytes do not match the frame's stored hash".into(),
            },
        ));
    }
    let mut buf = Vec::new();
    a.decoder()?
        .decode(h, stored, at, &mut buf)
        .map_err(ArchiveError::format(
            a.path(),
            " (a frame to copy into the consolidated archive)",
        ))
}

fn header_of(c: &ChunkEntry) -> ChunkHeader {
    ChunkHeader {
        topic: c.topic.clone(),
        partition: c.partition,
        record_count: c.record_count,
        first_offset: c.first_offset,
        last_offset: c.last_offset,
        covers_from: c.covers_from,
        covers_to: c.covers_to,
        min_timestamp: c.min_timestamp,
        max_timestamp: c.max_timestamp,
    }
}

fn bad(a: &Archive, what: &str) -> ArchiveError {
    ArchiveError::Chain(format!(
        "{}: the manifest names {what:?}, which is not a content ID",
        a.path().display()
    ))
}
