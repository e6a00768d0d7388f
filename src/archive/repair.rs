//! `kar repair`: recovers an archive whose writer was killed (no index, no footer, a torn last
//! chunk) or whose file was damaged. Every frame whose header, stored bytes and content check out
//! is copied, unchanged, into a new archive with a rebuilt manifest, index and footer; the report
//! says exactly what was kept and what was lost. The input is never modified.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::FormatError;
use crate::format::chunk::ChunkHeader;
use crate::format::file_header::FileHeader;
use crate::format::footer::{self, Footer};
use crate::format::frame::{ContentDecoder, FrameKind};
use crate::format::manifest::{ArchiveStatus, Manifest};
use crate::format::{hex, kafka_topics};

use super::error::ArchiveError;
use super::reader::{Source, frame_at};
use super::verify::{Problem, Scan, scan_frames};
use super::writer::{ArchiveWriter, WriterOptions, sync_file};

#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    pub writer: WriterOptions,
    /// Keep the chunks that follow a hole in a partition (recording the hole in the manifest as
    /// lost offsets) instead of dropping them.
    pub keep_gaps: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Whether the input had a footer (it was finished) before repair.
    pub input_finished: bool,
    /// Whether the input's manifest survived (declared ranges and metadata kinds come from it).
    pub manifest_recovered: bool,
    pub kept_chunks: u64,
    pub kept_records: u64,
    pub kept_blobs: u64,
    pub kept_metadata: u64,
    /// Bytes after the last intact frame that belonged to no intact frame (a torn tail).
    pub lost_tail_bytes: u64,
    pub problems: Vec<Problem>,
    /// Partitions that are not complete after the repair.
    pub incomplete_partitions: Vec<String>,
    /// Intact chunks left out because a hole lies between them and the snapshot start, or
    /// because they overlap another chunk.
    pub dropped_chunks: Vec<String>,
    /// Holes the output has (only with `keep_gaps`), as recorded in its manifest.
    pub gaps: Vec<String>,
    pub root_hash: String,
}

pub fn repair(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    opts: RepairOptions,
) -> Result<RepairReport, ArchiveError> {
    repair_with_progress(input, output, opts, &|_| {})
}

/// What the input says a partition was to hold: its snapshot range, and whether the manifest
/// said it was complete.
#[derive(Debug, Clone, Default)]
struct Declared {
    start: Option<i64>,
    end: Option<i64>,
    /// From the manifest: (complete, records); None when the manifest was lost.
    manifest: Option<(bool, u64)>,
}

/// Like [`repair`], calling `progress` with the input offset the scan has reached.
pub fn repair_with_progress(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    opts: RepairOptions,
    progress: &dyn Fn(u64),
) -> Result<RepairReport, ArchiveError> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let source = Source::map(input)?;
    let bytes: &[u8] = &source;
    let mut problems: Vec<Problem> = Vec::new();
    let header_ok = check_file_header(bytes, input, &mut problems)?;
    // A damaged header's ID bytes are tried all the same: frames of an archive carry its ID in
    // their checks, so with another ID no frame would be kept.
    let header = FileHeader::salvage(bytes);
    if header.is_encrypted() {
        // Known limit: a repair rewrites the manifest and the index, which are sealed, and
        // re-seals what it keeps; it does not take a key yet.
        return Err(ArchiveError::Crypt {
            path: input.to_path_buf(),
            source: super::crypt::CryptError::Unsupported("kar repair of an encrypted archive"),
        });
    }
    if header.is_chain_member() {
        // A member's link to its parent is in its manifest, written last: a repaired member
        // written as a full archive would restore as if it held everything.
        return Err(ArchiveError::Chain(format!(
            "{} is a chain member (format {}.{}): kar repair does not rebuild members; back up again with --incremental-from its parent (kar chain names it)",
            input.display(),
            header.major,
            header.minor
        )));
    }
    let id = header.archive_id;
    let footer = Footer::decode(bytes, header.major, id).ok();
    let data_end = match footer {
        Some(_) => bytes.len() as u64 - footer::LEN as u64,
        None => bytes.len() as u64,
    };

    let scan = scan_frames(
        bytes,
        header,
        data_end,
        Some(ContentDecoder::new().map_err(ArchiveError::io("initialise zstd for", input))?),
        &HashMap::new(),
        &mut problems,
        progress,
        &|from, len| source.release(from, len),
    );
    if !header_ok && scan.good.is_empty() {
        return Err(ArchiveError::format(input, "")(FormatError::Corrupt {
            structure: "file",
            offset: 0,
            detail: "neither an intact kar file header nor any intact kar frame: nothing to repair"
                .into(),
        }));
    }
    let chunks: HashMap<u64, ChunkHeader> = scan
        .chunks
        .iter()
        .map(|c| {
            let h = ChunkHeader {
                topic: c.topic.clone(),
                partition: c.partition,
                record_count: c.record_count,
                first_offset: c.first_offset,
                last_offset: c.last_offset,
                covers_from: c.covers_from,
                covers_to: c.covers_to,
                min_timestamp: c.min_timestamp,
                max_timestamp: c.max_timestamp,
            };
            (c.frame_offset, h)
        })
        .collect();

    let mut dec = ContentDecoder::new().map_err(ArchiveError::io("initialise zstd for", input))?;
    let old_manifest: Option<Manifest> = last_document(&scan, bytes, data_end, &mut dec, |k| {
        k == FrameKind::Manifest
    })
    .and_then(|(off, raw)| Manifest::decode(&raw, off).ok());
    let old_kinds: HashMap<String, String> = old_manifest
        .iter()
        .flat_map(|m| &m.metadata)
        .map(|r| (r.id.clone(), r.kind.clone()))
        .collect();
    let mut declared = declared_ranges(old_manifest.as_ref());

    let created_at_ms = old_manifest
        .as_ref()
        .map_or(opts.writer.created_at_ms, |m| m.created_at_ms);
    let mut w = ArchiveWriter::create(
        output,
        WriterOptions {
            created_at_ms,
            ..opts.writer.clone()
        },
    )?;
    // From here on the output is this call's own: on any error it is removed.
    let res = (|| {
        // Metadata and blobs first, in file order, as a backup writes them.
        let (mut kept_blobs, mut kept_metadata) = (0, 0);
        for (off, h) in &scan.good {
            if !matches!(h.kind, FrameKind::Blob | FrameKind::Metadata) {
                continue;
            }
            let (h, stored) =
                frame_at(bytes, *off, data_end, id).map_err(ArchiveError::format(input, ""))?;
            w.copy_frame(&h, stored, None)?;
            if h.kind == FrameKind::Blob {
                kept_blobs += 1;
                continue;
            }
            kept_metadata += 1;
            let mut raw = Vec::new();
            let kind = match dec.decode(&h, stored, *off, &mut raw) {
                Ok(()) => old_kinds
                    .get(&hex(&h.content_id))
                    .cloned()
                    .unwrap_or_else(|| metadata_kind(&raw)),
                Err(_) => "unknown".to_string(),
            };
            if kind == "kafka-topics" && old_manifest.is_none() {
                // The manifest was never written: the snapshot ranges come from here.
                for r in kafka_topics::declared_ranges(&raw, *off).unwrap_or_default() {
                    let d = declared.entry((r.topic, r.partition)).or_default();
                    d.start = Some(r.start_offset);
                    d.end = Some(r.end_offset);
                }
            }
            w.list_metadata(&kind, &h.content_id);
        }

        let plan = plan_chunks(&scan, &chunks, &declared, opts.keep_gaps);
        for ((t, p), d) in &declared {
            if let (Some(s), Some(e)) = (d.start, d.end) {
                w.declare_partition(t, *p, s, e);
            }
        }
        for off in &plan.keep {
            let (h, stored) =
                frame_at(bytes, *off, data_end, id).map_err(ArchiveError::format(input, ""))?;
            w.copy_frame(&h, stored, chunks.get(off).cloned())?;
        }
        for ((t, p), g) in &plan.gaps {
            for r in g {
                w.record_gap(t, *p, r.start, r.end);
            }
        }
        for (t, p) in &plan.complete {
            w.finish_partition(t, *p)?;
        }

        let lost_tail_bytes = data_end.saturating_sub(scan.good_end.max(last_good_end(&scan)));
        let mut notes = vec![format!(
            "repaired by kar {} from {}: {} problem(s), {} byte(s) of torn tail dropped",
            env!("CARGO_PKG_VERSION"),
            input.display(),
            problems.len(),
            lost_tail_bytes
        )];
        notes.extend(problems.iter().take(50).map(|p| format!("dropped: {p}")));
        notes.extend(
            plan.dropped
                .iter()
                .take(50)
                .map(|d| format!("dropped: {d}")),
        );
        let (out, summary) = w.finish(ArchiveStatus::Repaired, notes)?;
        sync_file(out, output)?;
        Ok(RepairReport {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
            input_finished: footer.is_some(),
            manifest_recovered: old_manifest.is_some(),
            kept_chunks: plan.keep.len() as u64,
            kept_records: plan.records,
            kept_blobs,
            kept_metadata,
            lost_tail_bytes,
            problems: problems.clone(),
            incomplete_partitions: plan.incomplete,
            dropped_chunks: plan.dropped,
            gaps: plan
                .gaps
                .iter()
                .flat_map(|((t, p), g)| {
                    g.iter()
                        .map(move |r| format!("{t}/{p}: offsets {}..{} lost", r.start, r.end))
                })
                .collect(),
            root_hash: hex(&summary.root),
        })
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(output);
    }
    res
}

/// A damaged file header does not stop a repair (the frames carry everything); an intact header
/// of another format version does. Ok(false) when the header is damaged.
fn check_file_header(
    bytes: &[u8],
    input: &Path,
    problems: &mut Vec<Problem>,
) -> Result<bool, ArchiveError> {
    match FileHeader::decode(bytes) {
        Ok(_) => Ok(true),
        Err(e @ FormatError::UnsupportedVersion { .. }) => Err(ArchiveError::format(
            input,
            " (repair reads only this format version)",
        )(e)),
        Err(e) => {
            problems.push(Problem {
                offset: e.offset(),
                structure: "file header".into(),
                message: format!("{e}; the frames are scanned all the same"),
            });
            Ok(false)
        }
    }
}

/// Snapshot ranges and completeness by partition, from the manifest when it survived.
fn declared_ranges(m: Option<&Manifest>) -> BTreeMap<(String, i32), Declared> {
    let mut out = BTreeMap::new();
    for t in m.iter().flat_map(|m| &m.topics) {
        for p in &t.partitions {
            out.insert(
                (t.name.clone(), p.partition),
                Declared {
                    start: p.start_offset,
                    end: p.end_offset,
                    manifest: Some((p.complete, p.records)),
                },
            );
        }
    }
    out
}

/// Which chunks a repair writes, and what it can say of each partition.
#[derive(Debug, Default)]
struct ChunkPlan {
    /// Frame offsets of the chunks to keep, per partition in offset order.
    keep: Vec<u64>,
    records: u64,
    complete: Vec<(String, i32)>,
    incomplete: Vec<String>,
    dropped: Vec<String>,
    gaps: BTreeMap<(String, i32), Vec<std::ops::Range<i64>>>,
}

/// Per partition, keeps the chunks that continue without a hole from the snapshot start (or from
/// the first chunk, when the start is unknown); with `keep_gaps`, also those after a hole, the
/// hole recorded. A partition is complete when its chunks reach the snapshot end, or when the
/// manifest said it was complete and held no records.
fn plan_chunks(
    scan: &Scan,
    chunks: &HashMap<u64, ChunkHeader>,
    declared: &BTreeMap<(String, i32), Declared>,
    keep_gaps: bool,
) -> ChunkPlan {
    let mut by_partition: BTreeMap<(String, i32), Vec<(u64, &ChunkHeader)>> = BTreeMap::new();
    for (off, h) in &scan.good {
        if h.kind == FrameKind::RecordChunk
            && let Some(c) = chunks.get(off)
        {
            by_partition
                .entry((c.topic.clone(), c.partition))
                .or_default()
                .push((*off, c));
        }
    }
    for key in declared.keys() {
        by_partition.entry(key.clone()).or_default();
    }
    let mut plan = ChunkPlan::default();
    for (key, mut list) in by_partition {
        let (t, p) = (&key.0, key.1);
        let d = declared.get(&key).cloned().unwrap_or_default();
        list.sort_by_key(|(_, c)| (c.covers_from, c.covers_to));
        let mut at = d.start.or(list.first().map(|(_, c)| c.covers_from));
        let mut gaps = Vec::new();
        let mut cut = false;
        let mut records = 0u64;
        for (off, c) in &list {
            let pos = at.expect("set from the first chunk");
            let what = format!(
                "chunk of {t}/{p} covering offsets {}..{} at file offset {off}",
                c.covers_from, c.covers_to
            );
            if cut {
                plan.dropped.push(format!("{what}: after a hole"));
                continue;
            }
            if c.covers_from < pos {
                plan.dropped
                    .push(format!("{what}: overlaps offsets already covered"));
                continue;
            }
            if c.covers_from > pos {
                if !keep_gaps {
                    cut = true;
                    plan.dropped.push(format!(
                        "{what}: offsets {pos}..{} before it are in no chunk (give --keep-gaps to keep it)",
                        c.covers_from
                    ));
                    continue;
                }
                gaps.push(pos..c.covers_from);
            }
            plan.keep.push(*off);
            records += u64::from(c.record_count);
            at = Some(c.covers_to);
        }
        plan.records += records;
        let reached_end = matches!((at, d.end), (Some(a), Some(e)) if a >= e);
        let complete = gaps.is_empty()
            && !cut
            && match d.manifest {
                Some((claimed, n)) => claimed && (reached_end || (n == 0 && list.is_empty())),
                None => reached_end || (list.is_empty() && d.start.is_some() && d.start == d.end),
            };
        if complete {
            plan.complete.push(key.clone());
        } else {
            let why = match (&d.manifest, d.start) {
                (Some((_, n)), _) => format!("{records} of {n} records"),
                (None, Some(_)) => format!(
                    "{records} records kept, offsets from {} on missing",
                    at.map_or("?".into(), |a| a.to_string())
                ),
                (None, None) => format!(
                    "{records} records kept; the snapshot range was lost, so completeness is unknown"
                ),
            };
            plan.incomplete.push(format!("{t}/{p}: {why}"));
        }
        if !gaps.is_empty() {
            plan.gaps.insert(key, gaps);
        }
    }
    plan
}

/// The decoded content of the last intact frame of a kind.
fn last_document(
    scan: &Scan,
    bytes: &[u8],
    data_end: u64,
    dec: &mut ContentDecoder,
    kind: impl Fn(FrameKind) -> bool,
) -> Option<(u64, Vec<u8>)> {
    let (off, _) = scan.good.iter().rfind(|(_, h)| kind(h.kind))?;
    let (h, stored) =
        frame_at(bytes, *off, data_end, FileHeader::salvage(bytes).archive_id).ok()?;
    let mut buf = Vec::new();
    dec.decode(&h, stored, *off, &mut buf).ok()?;
    Some((*off, buf))
}

fn last_good_end(scan: &super::verify::Scan) -> u64 {
    scan.good
        .iter()
        .map(|(o, h)| o + h.frame_len())
        .max()
        .unwrap_or(0)
}

/// The `kind` member of a metadata document, when its manifest entry was lost.
fn metadata_kind(raw: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: String,
    }
    serde_json::from_slice::<Kind>(raw).map_or_else(|_| "unknown".to_string(), |k| k.kind)
}
