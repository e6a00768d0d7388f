//! `kar verify`: proves an archive intact, or says exactly what is wrong and where.
//!
//! - `Quick`: file header, footer, manifest and index (their hashes), the index's consistency with
//!   the manifest and the root hash recomputed from the index. No chunk is read.
//! - `Fast`: also every frame's stored bytes against its stored hash, front to back, at disk speed
//!   (no decompression).
//! - `Full`: also decompresses every frame, checks every content ID, decodes every record, and
//!   checks the index, the manifest and the root hash against what the scan found.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::format::chunk::ChunkRecords;
use crate::format::file_header::{self, FileHeader};
use crate::format::footer::{self, Footer};
use crate::format::frame::{self, ContentDecoder, FrameHeader, FrameKind};
use crate::format::manifest::Manifest;
use crate::format::{ArchiveId, FormatError, Hash, hex, root::root_hash_keyed};

use super::coverage;
use super::crypt::Unlock;
use super::error::ArchiveError;
use super::index::{ChunkEntry, IndexContent};
use super::reader::{Archive, Source, frame_at};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyLevel {
    Quick,
    Fast,
    Full,
    /// Every frame header and stored hash, the footer and the frame count: what can be checked
    /// of an encrypted archive without its key (§15), e.g. by a courier.
    Stored,
}

/// One thing found wrong: where, in which structure, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub offset: u64,
    pub structure: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "offset {}: {}: {}",
            self.offset, self.structure, self.message
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub level: VerifyLevel,
    pub ok: bool,
    pub format_version: Option<String>,
    /// The archive ID (3.x), 32 hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_id: Option<String>,
    /// The root hash the footer states.
    pub root_hash: Option<String>,
    pub file_bytes: u64,
    pub frames: u64,
    pub chunks: u64,
    pub records: u64,
    pub problems: Vec<Problem>,
    /// Offsets lost from partitions, as recorded by a repair that kept chunks beyond them
    /// (`t/p: a..b`). Not damage to the file, but the archive is not whole: `ok` is false.
    pub gaps: Vec<String>,
    /// The signatures found and checked (§14), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<super::signing::SignatureReport>,
    #[serde(skip)]
    pub(crate) archive_id_value: Option<ArchiveId>,
    /// A stream's signature frames, with what they must state, for the signature check.
    #[serde(skip)]
    pub(crate) stream_signatures: Option<super::signing::StreamSignatures>,
}

impl VerifyReport {
    /// A report on `path` with nothing checked yet (not OK).
    pub(super) fn new(path: PathBuf, level: VerifyLevel) -> VerifyReport {
        VerifyReport {
            path,
            level,
            ok: false,
            format_version: None,
            archive_id: None,
            root_hash: None,
            file_bytes: 0,
            frames: 0,
            chunks: 0,
            records: 0,
            problems: Vec::new(),
            gaps: Vec::new(),
            signatures: None,
            archive_id_value: None,
            stream_signatures: None,
        }
    }
}

/// The structure a problem names when an encrypted archive could not be opened: a key problem,
/// not damage.
pub const KEY: &str = "key";

/// Problems are capped so a badly damaged file gives a readable report.
const MAX_PROBLEMS: usize = 200;

#[derive(Default)]
pub(super) struct Ctx {
    pub(super) problems: Vec<Problem>,
    pub(super) truncated_problems: bool,
}

impl Ctx {
    pub(super) fn add(
        &mut self,
        offset: u64,
        structure: impl Into<String>,
        message: impl Into<String>,
    ) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem {
                offset,
                structure: structure.into(),
                message: message.into(),
            });
        } else {
            self.truncated_problems = true;
        }
    }

    /// Puts the problems into the report, noting a cut list, and decides whether it is OK.
    pub(super) fn finish(mut self, report: &mut VerifyReport) {
        if self.truncated_problems {
            self.add(
                0,
                "report",
                format!("more than {MAX_PROBLEMS} problems; the rest are not listed"),
            );
        }
        report.ok = self.problems.is_empty() && report.gaps.is_empty();
        report.problems = self.problems;
    }

    /// Whether a problem is already named inside the frame header at `off` (so that the index's
    /// view of that frame is not reported again).
    fn names_frame_at(&self, off: u64) -> bool {
        self.problems
            .iter()
            .any(|p| p.offset >= off && p.offset < off + frame::HEADER_LEN as u64)
    }

    pub(super) fn add_format(&mut self, e: &FormatError, suffix: &str) {
        let structure = match e {
            FormatError::Truncated { structure, .. } | FormatError::Corrupt { structure, .. } => {
                structure
            }
            FormatError::UnsupportedVersion { .. } => "file header",
            FormatError::Encrypted { .. } => "sealed frame",
        };
        self.add(e.offset(), structure.to_string(), format!("{e}{suffix}"));
    }
}

pub fn verify(path: impl AsRef<Path>, level: VerifyLevel) -> Result<VerifyReport, ArchiveError> {
    verify_with_progress(path, level, &|_| {})
}

/// Like [`verify`], calling `progress` with the file offset reached as the scan goes.
pub fn verify_with_progress(
    path: impl AsRef<Path>,
    level: VerifyLevel,
    progress: &dyn Fn(u64),
) -> Result<VerifyReport, ArchiveError> {
    let path = path.as_ref();
    Ok(verify_source_with_progress(
        Source::map(path)?,
        path,
        level,
        progress,
    ))
}

/// Verifies archive bytes. Damage never makes this fail: it is reported in the result.
pub fn verify_source(source: Source, path: impl Into<PathBuf>, level: VerifyLevel) -> VerifyReport {
    verify_source_with_progress(source, path, level, &|_| {})
}

/// Like [`verify_source`], calling `progress` with the file offset reached as the scan goes.
pub fn verify_source_with_progress(
    source: Source,
    path: impl Into<PathBuf>,
    level: VerifyLevel,
    progress: &dyn Fn(u64),
) -> VerifyReport {
    verify_shared_with_progress(Arc::new(source), path, level, progress)
}

/// [`verify_source`] over bytes the caller keeps a handle to (a restore opens the archive from
/// the same map once it verified).
pub fn verify_shared(
    source: Arc<Source>,
    path: impl Into<PathBuf>,
    level: VerifyLevel,
) -> VerifyReport {
    verify_shared_with_progress(source, path, level, &|_| {})
}

/// [`verify_shared`], an encrypted archive opened with what `unlock` holds.
pub fn verify_shared_with(
    source: Arc<Source>,
    path: impl Into<PathBuf>,
    level: VerifyLevel,
    unlock: Option<&Unlock>,
    progress: &dyn Fn(u64),
) -> VerifyReport {
    let path = path.into();
    let opened = open_unless_stored(&source, &path, level, unlock);
    verify_opened(source, path, level, opened, progress).0
}

fn verify_shared_with_progress(
    source: Arc<Source>,
    path: impl Into<PathBuf>,
    level: VerifyLevel,
    progress: &dyn Fn(u64),
) -> VerifyReport {
    verify_shared_with(source, path, level, None, progress)
}

/// The reader's open of the archive, which checks the manifest and index hashes (and opens the
/// keys of an encrypted archive); the stored level reads no content.
fn open_unless_stored(
    source: &Arc<Source>,
    path: &Path,
    level: VerifyLevel,
    unlock: Option<&Unlock>,
) -> Option<Result<Archive, ArchiveError>> {
    (level != VerifyLevel::Stored).then(|| Archive::from_shared_with(source.clone(), path, unlock))
}

/// Verifies archive bytes the caller already opened (`opened`: the reader's open of them, `None`
/// at the stored level), handing the opened archive back (with the report that says whether it
/// verified): a restore opens an
/// encrypted archive's keys and index once for both.
pub fn verify_opened(
    source: Arc<Source>,
    path: impl Into<PathBuf>,
    level: VerifyLevel,
    opened: Option<Result<Archive, ArchiveError>>,
    progress: &dyn Fn(u64),
) -> (VerifyReport, Option<Archive>) {
    let path = path.into();
    let mut cx = Ctx::default();
    let file_bytes = source.len() as u64;
    let mut report = VerifyReport::new(path.clone(), level);
    report.file_bytes = file_bytes;

    let bytes: &[u8] = &source;
    if !read_header(bytes, &mut report, &mut cx) {
        report.problems = cx.problems;
        return (report, None);
    }
    // Past a damaged header, frames are read with what its bytes say.
    let header = FileHeader::salvage(bytes);
    let footer = match Footer::decode(bytes, header.major, header.archive_id) {
        Ok(f) => {
            report.root_hash = Some(hex(&f.root));
            Some(f)
        }
        Err(e) => {
            cx.add_format(&e, "");
            None
        }
    };
    let data_end = match footer {
        Some(_) => file_bytes - footer::LEN as u64,
        None => file_bytes,
    };

    // Quick checks go through the reader, which checks manifest and index hashes on open.
    let archive = match opened {
        Some(opened) if footer.is_some() => open_for_verify(opened, &mut cx),
        _ => None,
    };
    let bytes: &[u8] = &source;

    let index = archive.as_ref().and_then(|a| match a.index_content() {
        Ok(ix) => Some(ix),
        Err(e) => {
            cx.add(a.footer().index_offset, "index", e.to_string());
            None
        }
    });

    if let (Some(a), Some(ix)) = (&archive, &index) {
        report.gaps = check_index(
            a.manifest(),
            a.manifest_id(),
            a.footer(),
            ix,
            data_end,
            a.keys().map(|k| k.id_key()),
            &mut cx,
        );
        report.chunks = ix.chunks.len() as u64;
        report.records = ix.chunks.iter().map(|c| u64::from(c.record_count)).sum();
        report.frames = a.footer().frame_count;
    }

    if level != VerifyLevel::Quick {
        let by_offset: HashMap<u64, &ChunkEntry> = index
            .iter()
            .flat_map(|ix| ix.chunks.iter())
            .map(|c| (c.frame_offset, c))
            .collect();
        let full = match (&archive, level) {
            (Some(a), VerifyLevel::Full) => a.decoder().ok(),
            (None, VerifyLevel::Full) if !header.is_encrypted() => ContentDecoder::new().ok(),
            _ => None,
        };
        let release = |from: usize, len: usize| source.release(from, len);
        let scan = scan_frames(
            bytes, header, data_end, full, &by_offset, &mut cx, progress, &release,
        );
        report.frames = scan.frames;
        if level == VerifyLevel::Full {
            report.chunks = scan.chunks.len() as u64;
            report.records = scan.chunks.iter().map(|c| u64::from(c.record_count)).sum();
        }
        let root_key = archive.as_ref().and_then(|a| a.keys()).map(|k| *k.id_key());
        match (&archive, &footer) {
            (Some(_), Some(f)) => check_scan(
                f,
                &scan,
                index.as_ref(),
                data_end,
                (level == VerifyLevel::Full).then_some(root_key.as_ref()),
                &mut cx,
            ),
            // The stored level, or an encrypted archive not opened: the footer against the
            // frames found, no index or manifest.
            (None, Some(f)) if level == VerifyLevel::Stored || header.is_encrypted() => {
                check_scan(f, &scan, None, data_end, None, &mut cx);
                check_tail_frames(f, &scan, data_end, &mut cx);
            }
            _ => {}
        }
    }

    cx.finish(&mut report);
    (report, archive)
}

/// The tail as §7 has it, from the frames a scan found (what the reader checks on open, for a
/// verify that does not open the archive): the index frame follows the manifest frame and ends
/// where the footer starts.
fn check_tail_frames(f: &Footer, scan: &Scan, data_end: u64, cx: &mut Ctx) {
    let end = |off: u64| scan.good.get(&off).map(|h| off + h.frame_len());
    if let (Some(m), Some(i)) = (end(f.manifest_offset), end(f.index_offset))
        && (m != f.index_offset || i != data_end)
    {
        cx.add(
            data_end,
            "footer",
            format!("the manifest frame ends at {m} and the index frame at {i}, but the index frame must follow the manifest frame and end where the footer starts ({data_end}): not one archive"),
        );
    }
}

/// Decodes the file header into the report; false when nothing further can be read (not a kar
/// file, or a version this reader does not implement).
fn read_header(bytes: &[u8], report: &mut VerifyReport, cx: &mut Ctx) -> bool {
    match FileHeader::decode(bytes) {
        Ok(h) => {
            report.format_version = Some(format!("{}.{}", h.major, h.minor));
            report.archive_id = h.archive_id.map(|id| id.hex());
            report.archive_id_value = h.archive_id;
            true
        }
        Err(e) => {
            let fatal = matches!(e, FormatError::UnsupportedVersion { .. })
                || bytes.len() < file_header::LEN_V2
                || bytes[..8] != file_header::MAGIC;
            cx.add_format(&e, "");
            !fatal
        }
    }
}

/// Opens the archive for the quick checks, turning a failure into a problem.
fn open_for_verify(opened: Result<Archive, ArchiveError>, cx: &mut Ctx) -> Option<Archive> {
    match opened {
        Ok(a) => Some(a),
        Err(e) => {
            match &e {
                ArchiveError::Format {
                    source: fe,
                    context,
                    ..
                } => cx.add_format(fe, context),
                ArchiveError::Index { offset, detail, .. } => {
                    cx.add(*offset, "index", detail.clone())
                }
                // Not damage: the archive is encrypted and not opened (no key, a wrong one).
                ArchiveError::Crypt { source, .. } => cx.add(0, KEY, source.to_string()),
                other => cx.add(0, "archive", other.to_string()),
            }
            None
        }
    }
}

/// The quick checks of an index: against the manifest, each partition's coverage, the root it
/// gives and the frame count it implies. Returns the gaps a repair recorded.
pub(super) fn check_index(
    m: &Manifest,
    manifest_id: &Hash,
    f: &Footer,
    ix: &IndexContent,
    data_end: u64,
    root_key: Option<&[u8; 32]>,
    cx: &mut Ctx,
) -> Vec<String> {
    check_index_against_manifest(m, ix, data_end, cx);
    let gaps = check_coverage(m, ix, cx);
    let root = root_hash_keyed(root_key, manifest_id, ix.content.keys().copied());
    if root != f.root {
        cx.add(
            data_end + 24,
            "footer",
            format!(
                "root hash {} does not match the content the index lists ({})",
                hex(&f.root),
                hex(&root)
            ),
        );
    }
    // Every frame but the manifest and the index is a content or signature frame the index
    // lists.
    let frames = (ix.content.len() + ix.signatures.len() + ix.envelopes.len()) as u64 + 2;
    if f.frame_count != frames {
        cx.add(
            data_end + 16,
            "footer",
            format!(
                "footer counts {} frames, but the index lists {} content, {} signature and {} key envelope frames (+ manifest and index = {frames})",
                f.frame_count,
                ix.content.len(),
                ix.signatures.len(),
                ix.envelopes.len()
            ),
        );
    }
    gaps
}

fn check_index_against_manifest(m: &Manifest, ix: &IndexContent, data_end: u64, cx: &mut Ctx) {
    let mut sums: BTreeMap<(&str, i32), (u64, u64)> = BTreeMap::new();
    for c in &ix.chunks {
        if c.frame_offset < file_header::LEN_V2 as u64 || c.frame_offset >= data_end {
            cx.add(
                c.frame_offset,
                "index",
                format!(
                    "chunk {}/{}@{} points outside the data",
                    c.topic, c.partition, c.first_offset
                ),
            );
        }
        if ix.content.get(&c.chunk_id) != Some(&c.frame_offset) {
            cx.add(
                c.frame_offset,
                "index",
                format!(
                    "chunk {}/{}@{} is not in the content table at its offset",
                    c.topic, c.partition, c.first_offset
                ),
            );
        }
        let s = sums.entry((c.topic.as_str(), c.partition)).or_default();
        s.0 += u64::from(c.record_count);
        s.1 += 1;
    }
    // A chain member (5.x) names its parent; nothing else does, nor inherits blobs (§16).
    let member = m.format_major >= crate::format::VERSION_MAJOR_CHAIN;
    if member != m.parent.is_some() || (!member && !m.inherited_blobs.is_empty()) {
        cx.add(
            0,
            "manifest",
            format!(
                "format {}.{} with{} a parent and {} inherited blobs: only a chain member (5.x) continues a parent, and every one does",
                m.format_major,
                m.format_minor,
                if m.parent.is_some() { "" } else { "out" },
                m.inherited_blobs.len()
            ),
        );
    }
    // A chain member names blobs its ancestors store (§16); the chain's verification finds them.
    let inherited: std::collections::HashSet<String> = m.inherited_blobs.iter().cloned().collect();
    for (id, blob) in &ix.schemas {
        if !ix.content.contains_key(blob) && !inherited.contains(&hex(blob)) {
            cx.add(
                0,
                "index",
                format!(
                    "schema ID {id} points to blob {}, which the archive does not hold",
                    hex(blob)
                ),
            );
        }
    }
    for t in &m.topics {
        for p in &t.partitions {
            let (records, chunks) = sums
                .remove(&(t.name.as_str(), p.partition))
                .unwrap_or_default();
            if (records, chunks) != (p.records, p.chunks) {
                cx.add(
                    0,
                    "manifest",
                    format!(
                        "{}/{}: manifest says {} records in {} chunks, the index holds {records} in {chunks}",
                        t.name, p.partition, p.records, p.chunks
                    ),
                );
            }
        }
    }
    for ((t, p), (records, _)) in sums {
        cx.add(
            0,
            "manifest",
            format!(
                "{t}/{p}: {records} records in the index but the partition is not in the manifest"
            ),
        );
    }
}

/// Every partition's chunks must tile its snapshot range: a hole is a missing chunk (Kafka's own
/// gaps lie inside chunks' coverage). Holes a repair recorded in the manifest are returned as
/// gaps; any other hole, and overlapping chunks, are problems.
fn check_coverage(m: &Manifest, ix: &IndexContent, cx: &mut Ctx) -> Vec<String> {
    let mut gaps = Vec::new();
    let mut by_partition: BTreeMap<(&str, i32), Vec<&ChunkEntry>> = BTreeMap::new();
    for c in &ix.chunks {
        by_partition
            .entry((c.topic.as_str(), c.partition))
            .or_default()
            .push(c);
    }
    for t in &m.topics {
        for p in &t.partitions {
            let chunks = by_partition
                .remove(&(t.name.as_str(), p.partition))
                .unwrap_or_default();
            let cov = coverage::check(
                chunks.iter().map(|c| c.covers_from..c.covers_to),
                p.start_offset,
                p.end_offset,
                p.complete,
            );
            // The file offset named is that of the chunk after the hole, where the missing one
            // would have been found.
            let at = |offset: i64| {
                chunks
                    .iter()
                    .filter(|c| c.covers_from >= offset)
                    .map(|c| c.frame_offset)
                    .min()
                    .unwrap_or(0)
            };
            for h in &cov.holes {
                let recorded = p.gaps.iter().any(|g| g.from == h.start && g.to == h.end);
                if recorded {
                    gaps.push(format!(
                        "{}/{}: offsets {}..{} lost (recorded by repair)",
                        t.name, p.partition, h.start, h.end
                    ));
                } else {
                    cx.add(
                        at(h.end),
                        "coverage",
                        format!(
                            "{}/{}: offsets {}..{} are in no chunk: a chunk is missing (Kafka's own gaps lie inside a chunk's coverage)",
                            t.name, p.partition, h.start, h.end
                        ),
                    );
                }
            }
            for o in &cov.overlaps {
                cx.add(
                    at(o.start),
                    "coverage",
                    format!(
                        "{}/{}: a chunk covers offsets {}..{}, which another chunk or the snapshot range {}..{} does not leave to it",
                        t.name,
                        p.partition,
                        o.start,
                        o.end,
                        p.start_offset.map_or("?".into(), |v| v.to_string()),
                        p.end_offset.map_or("?".into(), |v| v.to_string()),
                    ),
                );
            }
        }
    }
    gaps
}

/// What a front-to-back scan of the frames found.
#[derive(Debug, Default)]
pub struct Scan {
    pub frames: u64,
    /// Frames whose header and stored bytes are intact (and content, in a full scan), by offset.
    pub good: BTreeMap<u64, FrameHeader>,
    pub chunks: Vec<ChunkEntry>,
    /// Where the intact frames end: everything after is damaged or torn.
    pub good_end: u64,
}

fn describe(offset: u64, by_offset: &HashMap<u64, &ChunkEntry>) -> String {
    match by_offset.get(&offset) {
        Some(c) => format!(
            " (record chunk of {}/{} offsets {}..={})",
            c.topic, c.partition, c.first_offset, c.last_offset
        ),
        None => String::new(),
    }
}

/// Scans frames from the end of the file header to `data_end`. Damaged frames are reported; the
/// scan resynchronises on the next intact frame header. With a decoder, a full scan: every
/// frame's content decoded (opened, in an encrypted archive) and checked, on as many threads as
/// there are cores (at most 4), a batch of frames at a time; what it finds is reported in file
/// order, as one thread would. `release(from, len)` is told each batch's bytes once they are
/// checked: the map's pages they occupy need not stay resident (see [`Source::release`]).
#[allow(clippy::too_many_arguments)]
pub fn scan_frames(
    bytes: &[u8],
    header: FileHeader,
    data_end: u64,
    full: Option<ContentDecoder>,
    by_offset: &HashMap<u64, &ChunkEntry>,
    cx_out: &mut impl ProblemSink,
    progress: &dyn Fn(u64),
    release: &dyn Fn(usize, usize),
) -> Scan {
    let mut scan = Scan::default();
    let mut decoders = decoders(full);
    let (mut pos, id) = (header.size() as u64, header.archive_id);
    scan.good_end = pos;
    let mut batch: Vec<Walked<'_>> = Vec::new();
    let mut batch_from = pos;
    while pos < data_end {
        match frame_at(bytes, pos, data_end, id) {
            Ok((h, stored)) => {
                batch.push(Walked::Frame { pos, h, stored });
                pos += h.frame_len();
            }
            Err(e) => {
                batch.push(Walked::Damage { pos, e: e.clone() });
                match resync(bytes, pos + 1, data_end, id) {
                    Some(p) => pos = p,
                    None => pos = data_end,
                }
            }
        }
        if batch.len() >= SCAN_BATCH || pos >= data_end {
            let outcomes = check_batch(&batch, &mut decoders);
            settle(batch.drain(..), outcomes, &mut scan, by_offset, cx_out);
            // A full verify of a 2 GB archive otherwise ends with 2 GB of it resident.
            release(batch_from as usize, (pos - batch_from) as usize);
            batch_from = pos;
            progress(pos);
        }
    }
    scan
}

/// Frames handed to the checking threads at once: enough to keep them busy, few enough that the
/// progress moves.
const SCAN_BATCH: usize = 32;

/// What the walk found at one place: a frame whose header checks, or damage.
enum Walked<'a> {
    Frame {
        pos: u64,
        h: FrameHeader,
        stored: &'a [u8],
    },
    Damage {
        pos: u64,
        e: FormatError,
    },
}

/// What checking a frame's bytes found.
enum Outcome {
    StoredMismatch,
    /// Stored bytes intact; decoding (when asked) gave this.
    Checked(Result<Option<crate::format::chunk::ChunkHeader>, (u64, String)>),
}

/// The decoders of a full scan: the one given and fresh ones beside it, one a thread.
fn decoders(full: Option<ContentDecoder>) -> Vec<ContentDecoder> {
    let Some(first) = full else {
        return Vec::new();
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut v: Vec<ContentDecoder> = (1..threads).filter_map(|_| first.fresh().ok()).collect();
    v.insert(0, first);
    v
}

/// Checks a batch's frames (stored hash; with decoders, the content too) on one thread per
/// decoder; the outcomes in batch order (`None` for damage).
fn check_batch(batch: &[Walked<'_>], decoders: &mut [ContentDecoder]) -> Vec<Option<Outcome>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |dec: Option<&mut ContentDecoder>| {
        let mut dec = dec;
        let mut buf = Vec::new();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(w) = batch.get(i) else { break };
            done.push((i, check_one(w, dec.as_deref_mut(), &mut buf)));
        }
        done
    };
    let mut found: Vec<(usize, Option<Outcome>)> = if decoders.len() > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = decoders
                .iter_mut()
                .map(|d| s.spawn(|| work(Some(d))))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    } else {
        work(decoders.first_mut())
    };
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, o)| o).collect()
}

fn check_one(
    w: &Walked<'_>,
    dec: Option<&mut ContentDecoder>,
    buf: &mut Vec<u8>,
) -> Option<Outcome> {
    let Walked::Frame { pos, h, stored } = w else {
        return None;
    };
    if !frame::check_stored(h, stored) {
        return Some(Outcome::StoredMismatch);
    }
    let Some(dec) = dec.filter(|_| h.kind != FrameKind::Index) else {
        return Some(Outcome::Checked(Ok(None)));
    };
    let checked = match dec.decode(h, stored, *pos, buf) {
        Err(e) => Err((e.offset(), e.to_string())),
        Ok(()) if h.kind == FrameKind::RecordChunk => check_records(buf).map(Some).map_err(|e| {
            (
                *pos + frame::HEADER_LEN as u64,
                format!("{e} (in the decompressed chunk)"),
            )
        }),
        Ok(()) => Ok(None),
    };
    Some(Outcome::Checked(checked))
}

/// Reports a checked batch in file order, as the one-thread scan did, and keeps what is intact.
fn settle<'a>(
    batch: impl Iterator<Item = Walked<'a>>,
    outcomes: Vec<Option<Outcome>>,
    scan: &mut Scan,
    by_offset: &HashMap<u64, &ChunkEntry>,
    cx_out: &mut impl ProblemSink,
) {
    for (w, outcome) in batch.zip(outcomes) {
        let (pos, h) = match w {
            Walked::Damage { pos, e } => {
                let torn = e.is_truncated();
                cx_out.problem(
                    e.offset(),
                    if torn && e.offset() > pos {
                        "frame content"
                    } else {
                        "frame header"
                    },
                    format!("{e}{}", describe(pos, by_offset)),
                );
                continue;
            }
            Walked::Frame { pos, h, .. } => (pos, h),
        };
        scan.frames += 1;
        let what = h.kind.name();
        let checked = match outcome {
            Some(Outcome::Checked(c)) => c,
            _ => {
                cx_out.problem(
                    pos + frame::HEADER_LEN as u64,
                    what,
                    format!(
                        "stored bytes of the frame at offset {pos} do not match their hash{}",
                        describe(pos, by_offset)
                    ),
                );
                continue;
            }
        };
        if let FrameKind::Unknown(code) = h.kind
            && code & frame::OPTIONAL == 0
        {
            cx_out.problem(
                pos,
                "frame header",
                format!("frame kind 0x{code:02x} is unknown and not optional: this archive needs a newer kar to be read"),
            );
        }
        match checked {
            Err((offset, message)) => {
                cx_out.problem(
                    offset,
                    what,
                    format!("{message}{}", describe(pos, by_offset)),
                );
            }
            Ok(chunk) => {
                if let Some(ch) = chunk {
                    scan.chunks.push(ChunkEntry::new(
                        &ch,
                        pos,
                        h.content_id,
                        h.raw_len,
                        h.stored_len,
                    ));
                }
                scan.good.insert(pos, h);
                if scan.good_end == pos {
                    scan.good_end = pos + h.frame_len();
                }
            }
        }
    }
}

/// Decodes every record of a chunk; returns its header.
pub(super) fn check_records(raw: &[u8]) -> Result<crate::format::chunk::ChunkHeader, FormatError> {
    let mut it = ChunkRecords::new(raw, 0)?;
    let header = it.header().clone();
    for r in &mut it {
        r?;
    }
    Ok(header)
}

/// The offset of the next intact frame header of the archive `id` at or after `from`.
pub fn resync(bytes: &[u8], from: u64, data_end: u64, id: Option<ArchiveId>) -> Option<u64> {
    let end = (data_end as usize).min(bytes.len());
    let mut i = from as usize;
    while i + frame::HEADER_LEN <= end {
        match bytes[i..end].windows(4).position(|w| w == frame::MAGIC) {
            None => return None,
            Some(p) => {
                let at = i + p;
                if FrameHeader::decode(&bytes[at..end], at as u64, id).is_ok() {
                    return Some(at as u64);
                }
                i = at + 1;
            }
        }
    }
    None
}

pub trait ProblemSink {
    fn problem(&mut self, offset: u64, structure: &str, message: String);
}

impl ProblemSink for Ctx {
    fn problem(&mut self, offset: u64, structure: &str, message: String) {
        self.add(offset, structure, message);
    }
}

/// Collects problems into a list (repair uses this).
impl ProblemSink for Vec<Problem> {
    fn problem(&mut self, offset: u64, structure: &str, message: String) {
        self.push(Problem {
            offset,
            structure: structure.to_string(),
            message,
        });
    }
}

pub(super) fn check_scan(
    f: &Footer,
    scan: &Scan,
    index: Option<&IndexContent>,
    data_end: u64,
    full: Option<Option<&[u8; 32]>>,
    cx: &mut Ctx,
) {
    if scan.frames != f.frame_count {
        cx.add(
            data_end + 16,
            "footer",
            format!(
                "footer counts {} frames, the file holds {}",
                f.frame_count, scan.frames
            ),
        );
    }
    for (what, off, kind) in [
        ("manifest", f.manifest_offset, FrameKind::Manifest),
        ("index", f.index_offset, FrameKind::Index),
    ] {
        if scan.good.get(&off).map(|h| h.kind) != Some(kind)
            && !cx
                .problems
                .iter()
                .any(|p| p.offset >= off && p.offset < off + 96 + 1)
        {
            cx.add(off, what, format!("the footer points to a {what} frame at offset {off} that the scan did not find intact"));
        }
    }
    let Some(ix) = index else { return };
    let scanned: BTreeMap<Hash, u64> = scan
        .good
        .iter()
        .filter(|(_, h)| h.kind.is_content())
        .map(|(o, h)| (h.content_id, *o))
        .collect();
    for (id, off) in &ix.content {
        if scanned.get(id) != Some(off) && scan.good_end > *off && !cx.names_frame_at(*off) {
            cx.add(
                *off,
                "index",
                format!(
                    "lists content {} at offset {off}, which the file does not hold there",
                    hex(id)
                ),
            );
        }
    }
    for (id, off) in &scanned {
        if ix.content.get(id) != Some(off) {
            cx.add(
                *off,
                "index",
                format!(
                    "content {} at offset {off} is missing from the index",
                    hex(id)
                ),
            );
        }
    }
    check_signature_frames(scan, ix, cx);
    if let Some(root_key) = full {
        let mut want: Vec<&ChunkEntry> = ix.chunks.iter().collect();
        let mut have: Vec<&ChunkEntry> = scan.chunks.iter().collect();
        want.sort_by_key(|c| c.frame_offset);
        have.sort_by_key(|c| c.frame_offset);
        for c in &have {
            match want.binary_search_by_key(&c.frame_offset, |w| w.frame_offset) {
                Ok(i) if want[i] == *c => {}
                Ok(_) => cx.add(
                    c.frame_offset,
                    "index",
                    format!(
                        "entry for the chunk at offset {} does not match the chunk",
                        c.frame_offset
                    ),
                ),
                Err(_) => {}
            }
        }
        if let Some(mh) = scan.good.get(&f.manifest_offset) {
            let root = root_hash_keyed(root_key, &mh.content_id, scanned.keys().copied());
            if root != f.root && cx.problems.is_empty() {
                cx.add(
                    data_end + 24,
                    "footer",
                    format!(
                        "root hash {} does not match the file's content ({})",
                        hex(&f.root),
                        hex(&root)
                    ),
                );
            }
        }
    }
}

/// The signature frames a scan found against the index's `signatures` table (§14).
fn check_signature_frames(scan: &Scan, ix: &IndexContent, cx: &mut Ctx) {
    let signed: BTreeMap<u64, Hash> = scan
        .good
        .iter()
        .filter(|(_, h)| h.kind == FrameKind::Signature)
        .map(|(o, h)| (*o, h.content_id))
        .collect();
    for (off, id) in &signed {
        if ix.signatures.get(off) != Some(id) {
            cx.add(
                *off,
                "index",
                format!("the signature frame at offset {off} is missing from the index"),
            );
        }
    }
    for off in ix.signatures.keys() {
        if !signed.contains_key(off) && !cx.names_frame_at(*off) {
            cx.add(
                *off,
                "index",
                format!(
                    "lists a signature frame at offset {off}, which the file does not hold there"
                ),
            );
        }
    }
}

/// The byte ranges of an archive's structures, front to back: what `kar inspect --layout` prints,
/// and what the damage tests use to know which structure a byte belongs to.
pub fn layout(bytes: &[u8]) -> Vec<(Range<u64>, String)> {
    let header = FileHeader::salvage(bytes);
    let (start, id) = (header.size() as u64, header.archive_id);
    let mut out = vec![(0..start, "file header".to_string())];
    let data_end = if Footer::decode(bytes, header.major, id).is_ok() {
        bytes.len() as u64 - footer::LEN as u64
    } else {
        bytes.len() as u64
    };
    let mut pos = start;
    while pos < data_end {
        let Ok((h, _)) = frame_at(bytes, pos, data_end, id) else {
            break;
        };
        let body = pos + frame::HEADER_LEN as u64;
        out.push((pos..body, "frame header".to_string()));
        out.push((body..body + h.stored_len, h.kind.name().to_string()));
        pos = body + h.stored_len;
    }
    if data_end < bytes.len() as u64 {
        out.push((data_end..bytes.len() as u64, "footer".to_string()));
    }
    out
}

/// Checks the given chunks of an open archive as a full verify would: each frame against its
/// index entry, its content against its chunk ID, every record decoded, and the chunk's own
/// header against the index. What a restore runs before it writes anything. Returns the problems
/// found, in file order; `threads` share the work.
pub fn check_chunks(a: &Archive, chunks: &[ChunkEntry], threads: usize) -> Vec<Problem> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let found: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, chunks.len().max(1)) {
            s.spawn(|| {
                let Ok(mut dec) = a.decoder() else {
                    let p = Problem {
                        offset: 0,
                        structure: "checker".into(),
                        message: "cannot initialise zstd: no chunk was checked".into(),
                    };
                    found.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                    return;
                };
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(c) = chunks.get(i) else { break };
                    if let Some(p) = check_chunk(a, c, &mut dec, &mut buf) {
                        found.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                    }
                }
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by_key(|p| p.offset);
    found
}

fn check_chunk(
    a: &Archive,
    c: &ChunkEntry,
    dec: &mut ContentDecoder,
    buf: &mut Vec<u8>,
) -> Option<Problem> {
    let what = format!(
        "record chunk of {}/{} offsets {}..={}",
        c.topic, c.partition, c.first_offset, c.last_offset
    );
    if let Err(e) = a.read_chunk(c, dec, buf) {
        let (offset, detail) = match &e {
            ArchiveError::Format { source, .. } => (source.offset(), source.to_string()),
            other => (c.frame_offset, other.to_string()),
        };
        return Some(Problem {
            offset,
            structure: what,
            message: detail,
        });
    }
    let problem = |message: String| Problem {
        offset: c.frame_offset + frame::HEADER_LEN as u64,
        structure: what.clone(),
        message,
    };
    match check_records(buf) {
        Err(e) => Some(problem(format!("{e} (in the decompressed chunk)"))),
        Ok(h) if ChunkEntry::new(&h, c.frame_offset, c.chunk_id, c.raw_len, c.stored_len) != *c => {
            Some(problem(
                "the chunk's header differs from its index entry".into(),
            ))
        }
        Ok(_) => None,
    }
}
