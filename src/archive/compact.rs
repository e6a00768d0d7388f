//! `kar compact`: rewrites an archive with every content frame compressed with zstd at a chosen
//! level, e.g. after a `--compression none` backup taken when the CPU was short, or to squeeze an
//! archive harder before it goes to tape. Every frame is decompressed and checked against its
//! content ID on the way; the manifest is carried over byte for byte, so the new file has the same
//! content and the same root hash, which is checked before the file is kept. The input is never
//! modified; on any error the unfinished output is removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde::Serialize;

use crate::format::chunk::{ChunkHeader, SealedChunk};
use crate::format::frame::{Compression, ContentDecoder, FrameHeader, FrameKind, HEADER_LEN};
use crate::format::{FormatError, footer, hex};

use super::error::ArchiveError;
use super::reader::{Archive, frame_at};
use super::verify::{VerifyLevel, verify};
use super::writer::{ArchiveWriter, BackgroundSync, WriterOptions, sync_file};

#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub zstd_level: i32,
    /// Content frames rewritten (record chunks, blobs, metadata).
    pub frames: u64,
    pub chunks: u64,
    /// Of those, how many were stored uncompressed in the input.
    pub were_uncompressed: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// The same in both files.
    pub root_hash: String,
}

/// A content frame, decoded, checked and compressed again.
struct Redone {
    /// The frame's header in the input.
    old: FrameHeader,
    header: FrameHeader,
    stored: Vec<u8>,
    chunk: Option<ChunkHeader>,
}

pub fn compact(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    zstd_level: i32,
    threads: usize,
) -> Result<CompactReport, ArchiveError> {
    compact_with_progress(input, output, zstd_level, threads, &|_| {})
}

/// Like [`compact`], calling `progress` with the number of input bytes done so far.
pub fn compact_with_progress(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    zstd_level: i32,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CompactReport, ArchiveError> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let a = Archive::open(input)?;
    // Compact carries over what the index lists; what verify would refuse besides (frames the
    // index does not know, bytes between frames, a wrong frame count) must stop it too. The
    // content of every frame is checked below as it is decoded.
    let v = verify(input, VerifyLevel::Fast)?;
    if let Some(first) = v.problems.first() {
        return Err(ArchiveError::format(input, "")(FormatError::Corrupt {
            structure: "archive",
            offset: first.offset,
            detail: format!(
                "does not verify ({} problem(s), first: {first}); nothing was written: run `kar verify` for the list, `kar repair` to recover what is intact",
                v.problems.len()
            ),
        }));
    }
    let input = a.path().to_path_buf();
    let bytes = a.bytes();
    let data_end = bytes.len() as u64 - footer::LEN as u64;
    let index = a.index_content()?;

    // The manifest's exact bytes, checked against its content ID.
    let mut dec = ContentDecoder::new().map_err(ArchiveError::io("initialise zstd for", &input))?;
    let mut manifest = Vec::new();
    let at = a.footer().manifest_offset;
    let (mh, stored) = frame_at(bytes, at, data_end)
        .map_err(ArchiveError::format(&input, " (the manifest frame)"))?;
    dec.decode(&mh, stored, at, &mut manifest)
        .map_err(ArchiveError::format(&input, " (the manifest frame)"))?;

    let created_at_ms = a.manifest().created_at_ms;
    let mut w = ArchiveWriter::create(
        output,
        WriterOptions {
            zstd_level,
            created_at_ms,
            ..WriterOptions::default()
        },
    )?;
    // From here on the output is this call's own: on any error it is removed.
    let res = (|| {
        let mut offsets: Vec<u64> = index.content.values().copied().collect();
        offsets.sort_unstable();
        offsets.dedup();
        let mut syncer = BackgroundSync::start(w.get_ref().get_ref(), 64 << 20)
            .map_err(ArchiveError::io("sync", output))?;
        for (id, blob) in &index.schemas {
            w.index_schema(*id, *blob);
        }

        let threads = threads.max(1);
        let next = AtomicU64::new(0);
        let done_bytes = AtomicU64::new(0);
        let (tx, rx) = sync_channel::<Result<Redone, ArchiveError>>(threads * 2);
        let counts = std::thread::scope(|s| {
            for _ in 0..threads {
                let (tx, next, done_bytes, offsets, input) =
                    (tx.clone(), &next, &done_bytes, &offsets, &input);
                s.spawn(move || {
                    redo_frames(
                        bytes, data_end, offsets, next, zstd_level, input, &tx, done_bytes,
                        progress,
                    )
                });
            }
            drop(tx);
            collect(rx, &mut w, &mut syncer)
        })?;
        syncer.stop();

        let summary = w.finish_with_manifest_bytes(&manifest)?;
        if summary.root != a.root() {
            return Err(ArchiveError::Format {
                path: output.to_path_buf(),
                source: FormatError::Corrupt {
                    structure: "root hash",
                    offset: 0,
                    detail: format!(
                        "the compacted archive's root {} differs from the input's {}; the output was removed, the input is unchanged",
                        hex(&summary.root),
                        hex(&a.root())
                    ),
                },
                context: String::new(),
            });
        }
        sync_file(w.into_inner(), output)?;
        Ok(CompactReport {
            input: input.clone(),
            output: output.to_path_buf(),
            zstd_level,
            frames: counts.frames,
            chunks: counts.chunks,
            were_uncompressed: counts.were_uncompressed,
            input_bytes: bytes.len() as u64,
            output_bytes: summary.bytes,
            root_hash: hex(&summary.root),
        })
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(output);
    }
    res
}

/// Takes frame offsets from the shared list until it is exhausted or the collector stops.
#[allow(clippy::too_many_arguments)]
fn redo_frames(
    bytes: &[u8],
    data_end: u64,
    offsets: &[u64],
    next: &AtomicU64,
    level: i32,
    input: &Path,
    tx: &SyncSender<Result<Redone, ArchiveError>>,
    done_bytes: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
) {
    let setup = ContentDecoder::new().and_then(|d| Ok((d, zstd::bulk::Compressor::new(level)?)));
    let (mut dec, mut zstd) = match setup {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(Err(ArchiveError::io("initialise zstd for", input)(e)));
            return;
        }
    };
    let mut raw = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
        let Some(&offset) = offsets.get(i) else {
            return;
        };
        let res = redo(
            bytes, data_end, offset, &mut dec, &mut zstd, &mut raw, input,
        );
        if let Ok(r) = &res {
            let n = r.old.frame_len();
            progress(done_bytes.fetch_add(n, Ordering::Relaxed) + n);
        }
        if tx.send(res).is_err() {
            return;
        }
    }
}

fn redo(
    bytes: &[u8],
    data_end: u64,
    offset: u64,
    dec: &mut ContentDecoder,
    zstd: &mut zstd::bulk::Compressor<'_>,
    raw: &mut Vec<u8>,
    input: &Path,
) -> Result<Redone, ArchiveError> {
    let ctx = || {
        format!(
            " (content frame at offset {offset}; run `kar verify` for a full report and `kar repair` to keep what is intact)"
        )
    };
    let (h, stored) =
        frame_at(bytes, offset, data_end).map_err(ArchiveError::format(input, ctx()))?;
    dec.decode(&h, stored, offset, raw)
        .map_err(ArchiveError::format(input, ctx()))?;
    let chunk = match h.kind {
        FrameKind::RecordChunk => Some(
            ChunkHeader::decode(raw, offset + HEADER_LEN as u64)
                .map_err(ArchiveError::format(input, ctx()))?
                .0,
        ),
        _ => None,
    };
    let new_stored = zstd
        .compress(raw)
        .map_err(ArchiveError::io("compress a frame of", input))?;
    // `decode` has just checked the content against its ID: only the new stored bytes need
    // hashing.
    let header = FrameHeader {
        compression: Compression::Zstd,
        stored_len: new_stored.len() as u64,
        stored_hash: *blake3::hash(&new_stored).as_bytes(),
        ..h
    };
    Ok(Redone {
        old: h,
        header,
        stored: new_stored,
        chunk,
    })
}

#[derive(Default)]
struct Counts {
    frames: u64,
    chunks: u64,
    were_uncompressed: u64,
}

/// Writes the frames as they come. Returning early drops the receiver: the workers' next send
/// fails and they stop.
fn collect<W: std::io::Write>(
    rx: Receiver<Result<Redone, ArchiveError>>,
    w: &mut ArchiveWriter<W>,
    syncer: &mut BackgroundSync,
) -> Result<Counts, ArchiveError> {
    let mut n = Counts::default();
    for r in rx {
        let r = r?;
        n.frames += 1;
        n.were_uncompressed += u64::from(r.old.compression == Compression::None);
        match r.chunk {
            Some(header) => {
                n.chunks += 1;
                w.write_chunk(SealedChunk {
                    header,
                    frame: r.header,
                    stored: r.stored,
                })?;
            }
            None => w.copy_frame(&r.header, &r.stored, None)?,
        }
        syncer.written(w.position());
    }
    Ok(n)
}
