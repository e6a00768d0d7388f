//! The archive reader: the file is memory-mapped once; the footer, manifest and index are read in
//! place, and chunks are decompressed one at a time into a reused buffer, with records handed out
//! as slices of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::chunk::ChunkRecords;
use crate::format::file_header::FileHeader;
use crate::format::footer::{self, Footer};
use crate::format::frame::{self, Compression, ContentDecoder, FrameHeader, FrameKind};
use crate::format::manifest::Manifest;
use crate::format::{ArchiveId, FormatError, Hash, hex};

use super::crypt::Unlock;
use super::error::ArchiveError;
use super::index::{self, ChunkEntry, IndexContent};
pub use super::source::Source;
use crate::format::crypt::FrameKeys;

/// See [`Archive::read_chunk`]: 64 chunks are ~128 MiB of records, ~25 MiB stored with zstd.
const RELEASE_ALL_EVERY: usize = 64;

/// Reads one frame at `offset` of `bytes`, an archive with the ID `id` (header checked, stored
/// bytes bounded by the file).
pub(crate) fn frame_at(
    bytes: &[u8],
    offset: u64,
    limit: u64,
    id: Option<ArchiveId>,
) -> Result<(FrameHeader, &[u8]), FormatError> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = (limit as usize).min(bytes.len());
    let h = FrameHeader::decode(&bytes[start..end.max(start)], offset, id)?;
    let data_start = start + frame::HEADER_LEN;
    let available = end.saturating_sub(data_start) as u64;
    if h.stored_len > available {
        return Err(FormatError::Truncated {
            structure: "frame content",
            offset: data_start as u64,
            needed: h.stored_len,
            available,
        });
    }
    Ok((h, &bytes[data_start..data_start + h.stored_len as usize]))
}

/// An encrypted archive's keys, from its envelopes and what `unlock` holds; `None` for a plain
/// archive.
fn open_keys(
    bytes: &[u8],
    header: &FileHeader,
    data_end: u64,
    unlock: Option<&Unlock>,
    path: &Path,
) -> Result<Option<Arc<FrameKeys>>, ArchiveError> {
    if !header.is_encrypted() {
        return Ok(None);
    }
    let envelopes = envelopes(bytes, header, data_end)
        .map_err(ArchiveError::format(path, " (a key envelope)"))?;
    super::crypt::open_envelopes(&envelopes, unlock.unwrap_or(&Unlock::default()))
        .map(Some)
        .map_err(|source| ArchiveError::Crypt {
            path: path.to_path_buf(),
            source,
        })
}

/// Opens the index frame `ih` (stored bytes `stored`) at `offset`: a plain index where it lies
/// in the map, a sealed one opened into memory.
fn open_index(
    source: &Arc<Source>,
    path: &Path,
    offset: u64,
    ih: &FrameHeader,
    stored: &[u8],
    dec: &mut ContentDecoder,
) -> Result<redb::ReadOnlyDatabase, ArchiveError> {
    let index_error = |detail: String| ArchiveError::Index {
        path: path.to_path_buf(),
        offset,
        detail,
    };
    let (index_source, start, len) = if ih.encrypted {
        let mut plain = Vec::new();
        dec.decode(ih, stored, offset, &mut plain)
            .map_err(ArchiveError::format(path, " (the index frame)"))?;
        let len = plain.len();
        (Arc::new(Source::Owned(plain)), 0, len)
    } else {
        let start = offset as usize + frame::HEADER_LEN;
        (source.clone(), start, ih.stored_len as usize)
    };
    index::guarded(
        || {
            index::open(index_source, start, len)
                .map_err(|e| index_error(format!("cannot open the redb index: {e}")))
        },
        index_error,
    )
}

/// The root hash of the archive in `source`: a plain archive opened whole (manifest and index
/// checked), an encrypted one by its header and footer (no key needed: split, join, countersign
/// handle its bytes, not its content).
pub fn root_of(source: Arc<Source>, path: &Path) -> Result<Hash, ArchiveError> {
    let header = FileHeader::decode(&source).map_err(ArchiveError::format(path, ""))?;
    if !header.is_encrypted() {
        return Ok(Archive::from_shared(source, path)?.root());
    }
    let bytes: &[u8] = &source;
    if bytes.len() < header.size() + footer::LEN {
        return Err(ArchiveError::format(path, "")(FormatError::Truncated {
            structure: "archive",
            offset: bytes.len() as u64,
            needed: (header.size() + footer::LEN - bytes.len()) as u64,
            available: 0,
        }));
    }
    let f = Footer::decode(bytes, header.major, header.archive_id)
        .map_err(ArchiveError::format(path, ""))?;
    Ok(f.root)
}

/// The key envelope frames (§15) at the start of an encrypted archive: offset and content, each
/// checked against its stored hash.
pub(crate) fn envelopes<'a>(
    bytes: &'a [u8],
    header: &FileHeader,
    data_end: u64,
) -> Result<Vec<(u64, &'a [u8])>, FormatError> {
    let mut out = Vec::new();
    let mut at = header.size() as u64;
    loop {
        let (h, stored) = frame_at(bytes, at, data_end, header.archive_id)?;
        if h.kind != FrameKind::Envelope {
            break;
        }
        if h.encrypted || h.compression != Compression::None {
            return Err(FormatError::Corrupt {
                structure: "key envelope",
                offset: at,
                detail: "a key envelope is stored as it is: neither sealed nor compressed".into(),
            });
        }
        if !frame::check_stored(&h, stored) {
            return Err(FormatError::Corrupt {
                structure: "key envelope",
                offset: at,
                detail: "its bytes do not match their hash".into(),
            });
        }
        out.push((at, stored));
        at += h.frame_len();
    }
    if out.is_empty() {
        return Err(FormatError::Corrupt {
            structure: "key envelope",
            offset: header.size() as u64,
            detail: "an encrypted archive begins with its key envelope frames; this one has none"
                .into(),
        });
    }
    Ok(out)
}

/// Blobs and metadata documents by content ID: read in place from a file, or kept from the head
/// of a stream (where they precede every record chunk).
pub trait Contents {
    fn content(&self, id: &Hash) -> Result<Vec<u8>, ArchiveError>;
}

impl Contents for Archive {
    fn content(&self, id: &Hash) -> Result<Vec<u8>, ArchiveError> {
        self.read_content(id)
    }
}

/// A chunk's records from offset `from` on (all: `i64::MIN`), read from its decoded content
/// `raw`, encoded again as a chunk accounting for `covers` (consolidation widening a chunk's
/// coverage, a set's view leaving out records another chain holds too).
pub(crate) fn encode_again(
    a: &Archive,
    e: &ChunkEntry,
    raw: &[u8],
    from: i64,
    covers: std::ops::Range<i64>,
) -> Result<(crate::format::chunk::ChunkHeader, Vec<u8>), ArchiveError> {
    let format = |err| ArchiveError::format(a.path(), "")(err);
    let encode = |err| ArchiveError::Encode(err, a.path().to_path_buf());
    let mut enc = crate::format::chunk::ChunkEncoder::new(&e.topic, e.partition).map_err(encode)?;
    for r in crate::format::chunk::ChunkRecords::new(raw, 0).map_err(format)? {
        let r = r.map_err(format)?;
        if r.offset >= from {
            enc.push(
                r.offset,
                r.timestamp,
                r.timestamp_type,
                r.key,
                r.value,
                r.headers.iter(),
            )
            .map_err(encode)?;
        }
    }
    enc.finish(covers).map_err(encode)
}

pub struct Archive {
    path: PathBuf,
    source: Arc<Source>,
    header: FileHeader,
    footer: Footer,
    manifest: Manifest,
    manifest_id: Hash,
    index: redb::ReadOnlyDatabase,
    /// An encrypted archive's frame keys (§15), opened from its key envelope.
    keys: Option<Arc<FrameKeys>>,
    /// Chunks read so far (see [`Archive::read_chunk`]).
    reads: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Archive({})", self.path.display())
    }
}

impl Archive {
    pub fn open(path: impl AsRef<Path>) -> Result<Archive, ArchiveError> {
        Archive::open_with(path, None)
    }

    /// Opens an archive, an encrypted one with what `unlock` holds.
    pub fn open_with(
        path: impl AsRef<Path>,
        unlock: Option<&Unlock>,
    ) -> Result<Archive, ArchiveError> {
        let path = path.as_ref();
        Archive::from_shared_with(Arc::new(Source::map(path)?), path, unlock)
    }

    /// Opens an archive from any bytes; `path` names it in errors. Checks the file header, the
    /// footer, the manifest (content ID) and the index frame (stored hash), not the chunks.
    pub fn from_source(source: Source, path: impl Into<PathBuf>) -> Result<Archive, ArchiveError> {
        Archive::from_shared(Arc::new(source), path)
    }

    /// Like [`Archive::from_source`], over bytes the caller keeps a handle to (verify scans them
    /// whether or not they open as an archive).
    pub fn from_shared(
        source: Arc<Source>,
        path: impl Into<PathBuf>,
    ) -> Result<Archive, ArchiveError> {
        Archive::from_shared_with(source, path, None)
    }

    /// Like [`Archive::from_shared`]; an encrypted archive's key envelope is opened with what
    /// `unlock` holds (none: the archive is refused as locked).
    pub fn from_shared_with(
        source: Arc<Source>,
        path: impl Into<PathBuf>,
        unlock: Option<&Unlock>,
    ) -> Result<Archive, ArchiveError> {
        let path = path.into();
        let bytes: &[u8] = &source;
        let header = FileHeader::decode(bytes).map_err(ArchiveError::format(&path, ""))?;
        let least = header.size() + footer::LEN;
        if bytes.len() < least {
            return Err(ArchiveError::format(&path, "")(FormatError::Truncated {
                structure: "archive",
                offset: bytes.len() as u64,
                needed: (least - bytes.len()) as u64,
                available: 0,
            }));
        }
        let id = header.archive_id;
        let footer =
            Footer::decode(bytes, header.major, id).map_err(ArchiveError::format(&path, ""))?;
        let data_end = (bytes.len() - footer::LEN) as u64;
        let keys = open_keys(bytes, &header, data_end, unlock, &path)?;
        let mut dec = ContentDecoder::with_keys(keys.clone().zip(id))
            .map_err(ArchiveError::io("initialise zstd for", &path))?;

        let (mh, stored) = frame_at(bytes, footer.manifest_offset, data_end, id).map_err(
            ArchiveError::format(&path, " (the manifest frame the footer points to)"),
        )?;
        if mh.kind != FrameKind::Manifest {
            return Err(ArchiveError::format(&path, "")(FormatError::Corrupt {
                structure: "footer",
                offset: data_end,
                detail: format!(
                    "manifest offset {} points to a {} frame",
                    footer.manifest_offset,
                    mh.kind.name()
                ),
            }));
        }
        if !frame::check_stored(&mh, stored) {
            return Err(ArchiveError::format(&path, "")(FormatError::Corrupt {
                structure: "manifest",
                offset: footer.manifest_offset + frame::HEADER_LEN as u64,
                detail: "manifest bytes do not match their hash".into(),
            }));
        }
        let mut raw = Vec::new();
        dec.decode(&mh, stored, footer.manifest_offset, &mut raw)
            .map_err(ArchiveError::format(&path, " (manifest)"))?;
        let manifest = Manifest::decode(&raw, footer.manifest_offset + frame::HEADER_LEN as u64)
            .map_err(ArchiveError::format(&path, ""))?;

        let (ih, istored) = frame_at(bytes, footer.index_offset, data_end, id).map_err(
            ArchiveError::format(&path, " (the index frame the footer points to)"),
        )?;
        if ih.kind != FrameKind::Index || ih.compression != Compression::None {
            return Err(ArchiveError::format(&path, "")(FormatError::Corrupt {
                structure: "footer",
                offset: data_end,
                detail: format!(
                    "index offset {} points to a {} frame",
                    footer.index_offset,
                    ih.kind.name()
                ),
            }));
        }
        if !frame::check_stored(&ih, istored) {
            return Err(ArchiveError::format(&path, "")(FormatError::Corrupt {
                structure: "index",
                offset: footer.index_offset + frame::HEADER_LEN as u64,
                detail: "index bytes do not match their hash".into(),
            }));
        }
        // The tail is written as one piece: manifest frame, index frame, footer. Anything else
        // (two archives concatenated, a footer from another file) is not one archive.
        let manifest_end = footer.manifest_offset + mh.frame_len();
        let index_end = footer.index_offset + ih.frame_len();
        if manifest_end != footer.index_offset || index_end != data_end {
            return Err(ArchiveError::format(&path, "")(FormatError::Corrupt {
                structure: "footer",
                offset: data_end,
                detail: format!(
                    "the manifest frame ends at {manifest_end} and the index frame at {index_end}, but the index frame must follow the manifest frame and end where the footer starts ({data_end}): not one archive (two files joined, or a footer from another file?)"
                ),
            }));
        }
        let index = open_index(&source, &path, footer.index_offset, &ih, istored, &mut dec)?;
        Ok(Archive {
            path,
            source,
            header,
            footer,
            manifest,
            manifest_id: mh.content_id,
            index,
            keys,
            reads: Default::default(),
        })
    }

    /// An encrypted archive's frame keys.
    pub fn keys(&self) -> Option<&Arc<FrameKeys>> {
        self.keys.as_ref()
    }

    /// A content decoder for this archive's frames (opening sealed ones).
    pub fn decoder(&self) -> Result<ContentDecoder, ArchiveError> {
        ContentDecoder::with_keys(self.keys.clone().zip(self.id()))
            .map_err(ArchiveError::io("initialise zstd for", &self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        &self.source
    }

    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// The archive ID (3.x; `None` for a 2.x archive).
    pub fn id(&self) -> Option<ArchiveId> {
        self.header.archive_id
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn manifest_id(&self) -> &Hash {
        &self.manifest_id
    }

    pub fn root(&self) -> Hash {
        self.footer.root
    }

    pub fn index_db(&self) -> &redb::ReadOnlyDatabase {
        &self.index
    }

    fn index_err(&self, e: impl std::fmt::Display) -> ArchiveError {
        ArchiveError::Index {
            path: self.path.clone(),
            offset: self.footer.index_offset,
            detail: e.to_string(),
        }
    }

    /// Runs a read of the index, turning a failure of redb on a malformed index into an error.
    fn guard<T>(&self, f: impl FnOnce() -> Result<T, ArchiveError>) -> Result<T, ArchiveError> {
        index::guarded(f, |detail| self.index_err(detail))
    }

    /// Everything in the index.
    pub fn index_content(&self) -> Result<IndexContent, ArchiveError> {
        self.guard(|| IndexContent::read(&self.index).map_err(|e| self.index_err(e)))
    }

    /// The chunks of one partition, in offset order.
    pub fn chunks_of(&self, topic: &str, partition: i32) -> Result<Vec<ChunkEntry>, ArchiveError> {
        self.guard(|| self.chunks_of_unguarded(topic, partition))
    }

    fn chunks_of_unguarded(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ChunkEntry>, ArchiveError> {
        use redb::ReadableDatabase;
        let tx = self.index.begin_read().map_err(|e| self.index_err(e))?;
        let t = tx
            .open_table(index::CHUNKS)
            .map_err(|e| self.index_err(e))?;
        let mut out = Vec::new();
        for row in t
            .range((topic, partition, i64::MIN)..=(topic, partition, i64::MAX))
            .map_err(|e| self.index_err(e))?
        {
            let (k, v) = row.map_err(|e| self.index_err(e))?;
            let (_, _, first) = k.value();
            out.push(
                ChunkEntry::decode_value(topic, partition, first, v.value()).ok_or_else(|| {
                    self.index_err(format!("bad chunks entry for {topic}/{partition}@{first}"))
                })?,
            );
        }
        Ok(out)
    }

    /// The first offset of the first chunk holding a record with timestamp ≥ `ts`.
    pub fn first_chunk_at_or_after(
        &self,
        topic: &str,
        partition: i32,
        ts: i64,
    ) -> Result<Option<i64>, ArchiveError> {
        self.guard(|| {
            index::first_chunk_at_or_after(&self.index, topic, partition, ts)
                .map_err(|e| self.index_err(e))
        })
    }

    /// Decompresses a chunk into `buf` and checks it: the frame matches the index entry, and the
    /// content matches its chunk ID. Then `ChunkRecords::new(buf, 0)` iterates its records.
    pub fn read_chunk(
        &self,
        e: &ChunkEntry,
        dec: &mut ContentDecoder,
        buf: &mut Vec<u8>,
    ) -> Result<(), ArchiveError> {
        let ctx = format!(
            " (record chunk {} of {}/{} offsets {}..={}, frame at offset {})",
            &hex(&e.chunk_id)[..16],
            e.topic,
            e.partition,
            e.first_offset,
            e.last_offset,
            e.frame_offset
        );
        let data_end = self.bytes().len() as u64 - footer::LEN as u64;
        let (h, stored) = frame_at(self.bytes(), e.frame_offset, data_end, self.id())
            .map_err(ArchiveError::format(&self.path, ctx.clone()))?;
        if h.kind != FrameKind::RecordChunk || h.content_id != e.chunk_id {
            return Err(ArchiveError::format(&self.path, ctx)(
                FormatError::Corrupt {
                    structure: "index",
                    offset: e.frame_offset,
                    detail: "the index points to a frame that is not this chunk".into(),
                },
            ));
        }
        let decoded = dec
            .decode(&h, stored, e.frame_offset, buf)
            .map_err(ArchiveError::format(&self.path, ctx));
        // The chunk is in `buf` now (decoded: a copy even when stored uncompressed); its mapped
        // pages would otherwise stay resident for as long as the archive is open.
        self.source
            .release(e.frame_offset as usize, frame::HEADER_LEN + stored.len());
        // A read faults in more than its own pages (the kernel maps whole folios around the
        // fault, of the frames beside it), and a neighbour released by another thread before
        // this read is mapped again by it: so every so many chunks the whole map is released
        // (a walk of its page tables; what is still read faults back in from the page cache).
        // Measured on a 10 GB restore: ~140 MB stayed resident with per-chunk releases alone.
        let reads = self
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if reads % RELEASE_ALL_EVERY == RELEASE_ALL_EVERY - 1 {
            self.source.release(0, self.source.len());
        }
        decoded
    }

    /// The content IDs of the blob frames this archive stores (schema texts), from its index.
    pub fn blob_ids(&self) -> Result<std::collections::HashSet<Hash>, ArchiveError> {
        let data_end = self.bytes().len() as u64 - footer::LEN as u64;
        let mut out = std::collections::HashSet::new();
        for (id, at) in self.index_content()?.content {
            let (h, _) = frame_at(self.bytes(), at, data_end, self.id())
                .map_err(ArchiveError::format(&self.path, ""))?;
            if h.kind == FrameKind::Blob {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// The blob ID of the schema text for a Schema Registry schema ID.
    pub fn schema_blob(&self, id: u32) -> Result<Option<Hash>, ArchiveError> {
        use redb::ReadableDatabase;
        self.guard(|| {
            let tx = self.index.begin_read().map_err(|e| self.index_err(e))?;
            let t = tx
                .open_table(index::SCHEMAS)
                .map_err(|e| self.index_err(e))?;
            Ok(t.get(id).map_err(|e| self.index_err(e))?.map(|v| v.value()))
        })
    }

    /// Reads a blob or metadata document by content ID.
    pub fn read_content(&self, id: &Hash) -> Result<Vec<u8>, ArchiveError> {
        use redb::ReadableDatabase;
        let offset = self.guard(|| {
            let tx = self.index.begin_read().map_err(|e| self.index_err(e))?;
            let t = tx
                .open_table(index::CONTENT)
                .map_err(|e| self.index_err(e))?;
            Ok(t.get(*id)
                .map_err(|e| self.index_err(e))?
                .ok_or_else(|| ArchiveError::Missing {
                    path: self.path.clone(),
                    what: format!("content {}", hex(id)),
                })?
                .value())
        })?;
        let data_end = self.bytes().len() as u64 - footer::LEN as u64;
        let ctx = format!(" (content {})", hex(id));
        let (h, stored) = frame_at(self.bytes(), offset, data_end, self.id())
            .map_err(ArchiveError::format(&self.path, ctx.clone()))?;
        // The index is not covered by the root: the frame it names must hold this content, and
        // be a blob or a document (a chunk is read with `read_chunk`).
        if h.content_id != *id || !matches!(h.kind, FrameKind::Blob | FrameKind::Metadata) {
            return Err(ArchiveError::format(&self.path, ctx)(
                FormatError::Corrupt {
                    structure: "index",
                    offset,
                    detail: format!(
                        "the index points to a {} frame holding content {}, not this content",
                        h.kind.name(),
                        &hex(&h.content_id)[..16]
                    ),
                },
            ));
        }
        let mut out = Vec::new();
        self.decoder()?
            .decode(&h, stored, offset, &mut out)
            .map_err(ArchiveError::format(&self.path, ctx))?;
        Ok(out)
    }

    /// The metadata document of `kind` the manifest lists, typed; `None` when the archive has
    /// none. One that does not read as `T` is an error naming the document.
    pub fn document<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Option<T>, ArchiveError> {
        let Some(m) = self.manifest().metadata.iter().find(|m| m.kind == kind) else {
            return Ok(None);
        };
        let unreadable = |what: String| ArchiveError::Missing {
            path: self.path.clone(),
            what: format!("a readable {kind} document ({what})"),
        };
        let id = crate::format::parse_hex(&m.id)
            .ok_or_else(|| unreadable(format!("content ID {:?}", m.id)))?;
        let bytes = self.read_content(&id)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| unreadable(e.to_string()))
    }

    /// Calls `f` for every record of a partition, in offset order, chunk by chunk.
    pub fn for_each_record(
        &self,
        topic: &str,
        partition: i32,
        mut f: impl FnMut(&crate::format::chunk::Record<'_>),
    ) -> Result<u64, ArchiveError> {
        let mut dec = self.decoder()?;
        let mut buf = Vec::new();
        let mut n = 0;
        for e in self.chunks_of(topic, partition)? {
            self.read_chunk(&e, &mut dec, &mut buf)?;
            let ctx = format!(
                " (record chunk {} of {topic}/{partition}, frame at offset {})",
                &hex(&e.chunk_id)[..16],
                e.frame_offset
            );
            for r in
                ChunkRecords::new(&buf, 0).map_err(ArchiveError::format(&self.path, ctx.clone()))?
            {
                let r = r.map_err(ArchiveError::format(&self.path, ctx.clone()))?;
                f(&r);
                n += 1;
            }
        }
        Ok(n)
    }
}
