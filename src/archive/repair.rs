//! `kar repair`: recovers an archive whose writer was killed (no index, no footer, a torn last
//! chunk) or whose file was damaged. Every frame whose header, stored bytes and content check out
//! is copied, unchanged, into a new archive with a rebuilt manifest, index and footer; the report
//! says exactly what was kept and what was lost. The input is never modified.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::chunk::ChunkHeader;
use crate::format::file_header::FileHeader;
use crate::format::footer::{self, Footer};
use crate::format::frame::{ContentDecoder, FrameKind};
use crate::format::hex;
use crate::format::manifest::{ArchiveStatus, Manifest};

use super::error::ArchiveError;
use super::reader::{Source, frame_at};
use super::verify::{Problem, scan_frames};
use super::writer::{ArchiveWriter, WriterOptions, sync_file};

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
    pub root_hash: String,
}

pub fn repair(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    opts: WriterOptions,
) -> Result<RepairReport, ArchiveError> {
    repair_with_progress(input, output, opts, &|_| {})
}

/// Like [`repair`], calling `progress` with the input offset the scan has reached.
pub fn repair_with_progress(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    opts: WriterOptions,
    progress: &dyn Fn(u64),
) -> Result<RepairReport, ArchiveError> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let source = Source::map(input)?;
    let bytes: &[u8] = &source;
    FileHeader::decode(bytes).map_err(ArchiveError::format(
        input,
        " (a file without a kar header cannot be repaired)",
    ))?;
    let footer = Footer::decode(bytes).ok();
    let data_end = match footer {
        Some(_) => bytes.len() as u64 - footer::LEN as u64,
        None => bytes.len() as u64,
    };

    let mut problems: Vec<Problem> = Vec::new();
    let scan = scan_frames(
        bytes,
        data_end,
        true,
        &HashMap::new(),
        &mut problems,
        progress,
    );
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
                min_timestamp: c.min_timestamp,
                max_timestamp: c.max_timestamp,
            };
            (c.frame_offset, h)
        })
        .collect();

    let mut dec = ContentDecoder::new().map_err(ArchiveError::io("initialise zstd for", input))?;
    let mut buf = Vec::new();
    let old_manifest: Option<Manifest> = scan
        .good
        .iter()
        .filter(|(_, h)| h.kind == FrameKind::Manifest)
        .filter_map(|(off, _)| {
            let (h, stored) = frame_at(bytes, *off, data_end).ok()?;
            dec.decode(&h, stored, *off, &mut buf).ok()?;
            Manifest::decode(&buf, *off).ok()
        })
        .next_back();

    let created_at_ms = old_manifest
        .as_ref()
        .map_or(opts.created_at_ms, |m| m.created_at_ms);
    let mut w = ArchiveWriter::create(
        output,
        WriterOptions {
            created_at_ms,
            ..opts
        },
    )?;
    let old_kinds: HashMap<String, String> = old_manifest
        .iter()
        .flat_map(|m| &m.metadata)
        .map(|r| (r.id.clone(), r.kind.clone()))
        .collect();
    let (mut kept_blobs, mut kept_metadata) = (0, 0);
    let mut kept: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for (off, h) in &scan.good {
        if !h.kind.is_content() {
            continue;
        }
        let (h, stored) =
            frame_at(bytes, *off, data_end).map_err(ArchiveError::format(input, ""))?;
        match h.kind {
            FrameKind::RecordChunk => {
                let ch = chunks.get(off).cloned();
                if let Some(c) = &ch {
                    *kept.entry((c.topic.clone(), c.partition)).or_default() +=
                        u64::from(c.record_count);
                }
                w.copy_frame(&h, stored, ch)?;
            }
            FrameKind::Blob => {
                kept_blobs += 1;
                w.copy_frame(&h, stored, None)?;
            }
            FrameKind::Metadata => {
                kept_metadata += 1;
                w.copy_frame(&h, stored, None)?;
                let kind = old_kinds
                    .get(&hex(&h.content_id))
                    .cloned()
                    .unwrap_or_else(|| metadata_kind(&mut dec, &h, stored, *off));
                w.list_metadata(&kind, &h.content_id);
            }
            _ => {}
        }
    }

    let mut incomplete = Vec::new();
    if let Some(m) = &old_manifest {
        for t in &m.topics {
            for p in &t.partitions {
                if let (Some(s), Some(e)) = (p.start_offset, p.end_offset) {
                    w.declare_partition(&t.name, p.partition, s, e);
                }
                let have = kept
                    .get(&(t.name.clone(), p.partition))
                    .copied()
                    .unwrap_or(0);
                if p.complete && have == p.records {
                    w.finish_partition(&t.name, p.partition)?;
                } else {
                    incomplete.push(format!(
                        "{}/{}: {have} of {} records",
                        t.name, p.partition, p.records
                    ));
                }
            }
        }
    } else {
        for ((t, p), n) in &kept {
            incomplete.push(format!(
                "{t}/{p}: {n} records kept; the manifest was lost, so completeness is unknown"
            ));
        }
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
    let kept_chunks = scan.chunks.len() as u64;
    let kept_records = kept.values().sum();
    let (out, summary) = w.finish(ArchiveStatus::Repaired, notes)?;
    sync_file(out, output)?;
    Ok(RepairReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        input_finished: footer.is_some(),
        manifest_recovered: old_manifest.is_some(),
        kept_chunks,
        kept_records,
        kept_blobs,
        kept_metadata,
        lost_tail_bytes,
        problems,
        incomplete_partitions: incomplete,
        root_hash: hex(&summary.root),
    })
}

fn last_good_end(scan: &super::verify::Scan) -> u64 {
    scan.good
        .iter()
        .map(|(o, h)| o + h.frame_len())
        .max()
        .unwrap_or(0)
}

/// The `kind` member of a metadata document, when its manifest entry was lost.
fn metadata_kind(
    dec: &mut ContentDecoder,
    h: &crate::format::frame::FrameHeader,
    stored: &[u8],
    off: u64,
) -> String {
    let mut buf = Vec::new();
    if dec.decode(h, stored, off, &mut buf).is_ok()
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf)
        && let Some(k) = v.get("kind").and_then(|k| k.as_str())
    {
        return k.to_string();
    }
    "unknown".to_string()
}
