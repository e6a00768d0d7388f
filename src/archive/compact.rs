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
    /// Its place in the output's order.
    seq: usize,
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
    let source = super::Source::map(input)?;
    if crate::format::file_header::FileHeader::decode(&source).is_ok_and(|h| h.is_encrypted()) {
        // Known limit: compaction re-seals every frame; it does not take a key yet.
        return Err(ArchiveError::Crypt {
            path: input.to_path_buf(),
            source: super::crypt::CryptError::Unsupported("kar compact of an encrypted archive"),
        });
    }
    let a = Archive::from_source(source, input)?;
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
    let (mh, stored) = frame_at(bytes, at, data_end, a.id())
        .map_err(ArchiveError::format(&input, " (the manifest frame)"))?;
    dec.decode(&mh, stored, at, &mut manifest)
        .map_err(ArchiveError::format(&input, " (the manifest frame)"))?;

    let created_at_ms = a.manifest().created_at_ms;
    // The same version and archive ID: the same archive, its stored bytes aside.
    let mut w = ArchiveWriter::create_as(
        output,
        WriterOptions {
            zstd_level,
            created_at_ms,
            ..WriterOptions::default()
        },
        *a.header(),
    )?;
    // From here on the output is this call's own: on any error it is removed.
    let res = (|| {
        let offsets = output_order(&index);
        let mut syncer = BackgroundSync::start(w.get_ref().get_ref(), 64 << 20, Default::default())
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
                let source = Input {
                    bytes,
                    data_end,
                    id: a.id(),
                    path: input,
                };
                s.spawn(move || {
                    redo_frames(
                        &source, offsets, next, zstd_level, &tx, done_bytes, progress,
                    )
                });
            }
            drop(tx);
            collect(rx, &mut w, &mut syncer)
        })?;
        syncer.stop().map_err(ArchiveError::io("sync", output))?;
        // Signature frames state the archive ID, the root and the manifest's content ID, which
        // compaction keeps: they hold for the output as they are, and are carried over byte for
        // byte (their stored hash was checked by the verify above).
        for off in index.signatures.keys() {
            let (h, stored) = frame_at(bytes, *off, data_end, a.id())
                .map_err(ArchiveError::format(&input, " (a signature frame)"))?;
            let mut raw = Vec::new();
            dec.decode(&h, stored, *off, &mut raw)
                .map_err(ArchiveError::format(&input, " (a signature frame)"))?;
            w.add_signature_frame(&raw, stored, h.compression)?;
        }

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

/// The content frames' offsets in the order the output takes them: blobs and metadata first (a
/// reader of a stream has them before any record, §3), then the chunks in file order, so that
/// each partition's chunks stay in offset order.
fn output_order(index: &super::index::IndexContent) -> Vec<u64> {
    let chunks: std::collections::HashSet<u64> =
        index.chunks.iter().map(|c| c.frame_offset).collect();
    let mut offsets: Vec<u64> = index.content.values().copied().collect();
    offsets.sort_unstable_by_key(|o| (chunks.contains(o), *o));
    offsets.dedup();
    offsets
}

/// The input archive as the workers read it.
struct Input<'a> {
    bytes: &'a [u8],
    data_end: u64,
    id: Option<crate::format::ArchiveId>,
    path: &'a Path,
}

/// Takes frame offsets from the shared list until it is exhausted or the collector stops.
fn redo_frames(
    source: &Input<'_>,
    offsets: &[u64],
    next: &AtomicU64,
    level: i32,
    tx: &SyncSender<Result<Redone, ArchiveError>>,
    done_bytes: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
) {
    let setup = ContentDecoder::new().and_then(|d| Ok((d, zstd::bulk::Compressor::new(level)?)));
    let (mut dec, mut zstd) = match setup {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(Err(ArchiveError::io("initialise zstd for", source.path)(e)));
            return;
        }
    };
    let mut raw = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
        let Some(&offset) = offsets.get(i) else {
            return;
        };
        let res =
            redo(source, offset, &mut dec, &mut zstd, &mut raw).map(|r| Redone { seq: i, ..r });
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
    source: &Input<'_>,
    offset: u64,
    dec: &mut ContentDecoder,
    zstd: &mut zstd::bulk::Compressor<'_>,
    raw: &mut Vec<u8>,
) -> Result<Redone, ArchiveError> {
    let input = source.path;
    let ctx = || {
        format!(
            " (content frame at offset {offset}; run `kar verify` for a full report and `kar repair` to keep what is intact)"
        )
    };
    let (h, stored) = frame_at(source.bytes, offset, source.data_end, source.id)
        .map_err(ArchiveError::format(input, ctx()))?;
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
        seq: 0,
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

/// Writes the frames in their order (workers finish them in any order). Returning early drops the
/// receiver: the workers' next send fails and they stop.
fn collect<W: std::io::Write>(
    rx: Receiver<Result<Redone, ArchiveError>>,
    w: &mut ArchiveWriter<W>,
    syncer: &mut BackgroundSync,
) -> Result<Counts, ArchiveError> {
    let mut n = Counts::default();
    let mut early = std::collections::BTreeMap::new();
    for r in rx {
        let r = r?;
        early.insert(r.seq, r);
        while let Some(r) = early.remove(&(n.frames as usize)) {
            write_redone(r, w, &mut n)?;
            syncer.written(w.position());
        }
    }
    Ok(n)
}

fn write_redone<W: std::io::Write>(
    r: Redone,
    w: &mut ArchiveWriter<W>,
    n: &mut Counts,
) -> Result<(), ArchiveError> {
    {
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
    }
    Ok(())
}
