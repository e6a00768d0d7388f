//! The archive writer: strictly front to back (it never seeks, so it can write to a pipe, a tape
//! or a slow USB stick). Content frames go out as they are ready; the manifest, the index and the
//! footer are written at the end.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::format::chunk::{ChunkEncoder, SealedChunk, TimestampType};
use crate::format::crypt::Sealer;
use crate::format::frame::{Compression, FrameHeader, FrameKind};
use crate::format::manifest::{
    ArchiveStatus, ChainChange, Lineage, Manifest, MetadataRef, ParentRef, PartitionEntry,
    TopicEntry,
};
use crate::format::{ArchiveId, Hash, file_header::FileHeader, footer::Footer, hex};
use crate::progress::{Event, Progress};

use super::error::ArchiveError;
use super::index::{ChunkEntry, IndexContent};

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Sign the archive (§14): a signature frame before the manifest, format 3.1. Prints as its
    /// key ID only.
    pub signer: Option<std::sync::Arc<super::signing::SigningKey>>,
    /// Encrypt the archive (§15): format 4.0, the file key's envelopes first, every other frame
    /// but signatures sealed.
    pub sealing: Option<std::sync::Arc<super::crypt::Sealing>>,
    /// A chunk is closed once its encoded records reach this many bytes (uncompressed).
    pub chunk_target_bytes: usize,
    pub zstd_level: i32,
    /// When the backup started, milliseconds since the Unix epoch; goes into the manifest.
    pub created_at_ms: i64,
    /// Names the writing program in the manifest. Part of the manifest, so of the root hash: test
    /// vectors fix it so that the root does not change with kar's version.
    pub writer: String,
    /// The archive ID to write (§2); `None`: a new random one, as every backup takes. Test
    /// vectors fix it; compact keeps the input's.
    pub archive_id: Option<ArchiveId>,
    /// Write a chain member (§16): format 5.0, linked to this parent.
    pub chain: Option<ChainLink>,
}

/// What a chain member's writer knows of the chain below it (§16).
#[derive(Debug, Clone)]
pub struct ChainLink {
    pub parent: ParentRef,
    /// Content IDs the chain below stores (the parent's own and those it inherits): a blob with
    /// one of these IDs is named, not stored again.
    pub stored_below: std::sync::Arc<HashSet<Hash>>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_target_bytes: 2 * 1024 * 1024,
            zstd_level: 3,
            created_at_ms: now_ms(),
            writer: concat!("kar ", env!("CARGO_PKG_VERSION")).to_string(),
            archive_id: None,
            signer: None,
            sealing: None,
            chain: None,
        }
    }
}

/// A new random archive ID, from the operating system's generator.
pub fn random_archive_id() -> std::io::Result<ArchiveId> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    Ok(ArchiveId(b))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a finished archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    pub root: Hash,
    pub archive_id: Option<ArchiveId>,
    pub bytes: u64,
    pub frames: u64,
    pub chunks: u64,
    pub records: u64,
    /// Frames not written because identical content was already in the file.
    pub deduplicated: u64,
    /// Blobs named, not stored: a chain member's chain below holds them (§16).
    pub inherited_blobs: usize,
}

pub struct ArchiveWriter<W: Write> {
    out: W,
    path: PathBuf,
    header: FileHeader,
    pos: u64,
    frames: u64,
    opts: WriterOptions,
    index: IndexContent,
    written: HashSet<Hash>,
    deduplicated: u64,
    open: BTreeMap<(String, i32), ChunkEncoder>,
    /// Per partition fed through [`ArchiveWriter::append`]: where the next chunk's coverage
    /// starts (the end of the previous chunk's).
    covered_to: BTreeMap<(String, i32), i64>,
    partitions: BTreeMap<(String, i32), PartitionEntry>,
    metadata: Vec<MetadataRef>,
    blobs: u64,
    /// Seals frames in an encrypted archive.
    sealer: Option<Sealer>,
    /// A chain member's blobs stored below it and named here (§16).
    inherited: std::collections::BTreeSet<Hash>,
    /// A chain member's changes since its parent (§16).
    changes: Vec<ChainChange>,
}

/// Where an archive goes, by the path given: `-` or `/dev/stdout` is standard output, an existing
/// FIFO or character device (a tape drive, a data diode's sender) is a stream too, anything else
/// must be a new regular file (an existing one is never overwritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    File,
    Stdout,
    /// A FIFO or a character device.
    Device,
    /// A set of volume files (`--volume-size`).
    Volumes,
}

impl OutputKind {
    /// What `path` names; Err for an existing regular file or directory.
    pub fn of(path: &Path) -> Result<OutputKind, ArchiveError> {
        if path == Path::new("-") || path == Path::new("/dev/stdout") {
            Ok(OutputKind::Stdout)
        } else if super::source::is_device(path) {
            Ok(OutputKind::Device)
        } else if path.exists() {
            Err(ArchiveError::Exists {
                path: path.to_path_buf(),
            })
        } else {
            Ok(OutputKind::File)
        }
    }

    /// Written front to back and never synced (there is no file to sync).
    pub fn is_stream(self) -> bool {
        matches!(self, OutputKind::Stdout | OutputKind::Device)
    }
}

/// What a backup writes to: a file or a stream, or a set of volumes; with a signer, every byte
/// also goes to the detached signature (§14) as it is written.
pub struct Output {
    sink: Sink,
    signer: Option<super::signing::StreamSigner>,
}

enum Sink {
    File(File),
    Volumes(super::volume::VolumeWriter),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match &mut self.sink {
            Sink::File(f) => f.write(buf)?,
            Sink::Volumes(v) => v.write(buf)?,
        };
        if let Some(s) = &mut self.signer {
            s.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::File(f) => f.flush(),
            Sink::Volumes(v) => v.flush(),
        }
    }
}

impl Output {
    /// The file to sync in the background; volumes sync themselves as each one fills.
    pub fn file(&self) -> Option<&File> {
        match &self.sink {
            Sink::File(f) => Some(f),
            Sink::Volumes(_) => None,
        }
    }
}

/// What [`finish_output`] leaves: the volumes written, and the detached signature over every
/// byte of the archive (the text of a `.minisig` file) when it was signed.
#[derive(Debug, Default)]
pub struct Finished {
    pub volumes: Vec<PathBuf>,
    pub detached: Option<String>,
}

/// Flushes what a backup wrote and makes it durable: a file synced, a stream flushed, a volume
/// set's last volume completed (its length, the count) and synced.
pub fn finish_output(
    out: BufWriter<Output>,
    path: &Path,
    kind: OutputKind,
    progress: &Progress,
) -> Result<Finished, ArchiveError> {
    let Output { sink, signer } = flush_out(out, path)?;
    let volumes = match sink {
        Sink::Volumes(v) => v.finish()?,
        // A stream has nothing to sync: flushed into the pipe or device, it is delivered.
        Sink::File(_) if kind.is_stream() => Vec::new(),
        Sink::File(f) => {
            let started = std::time::Instant::now();
            f.sync_all().map_err(ArchiveError::io("sync", path))?;
            progress.event(Event::Synced {
                seconds: started.elapsed().as_secs_f64(),
            });
            Vec::new()
        }
    };
    let detached = match signer {
        Some(s) => Some(s.finish().map_err(|e| ArchiveError::Sign {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?),
        None => None,
    };
    Ok(Finished { volumes, detached })
}

impl ArchiveWriter<BufWriter<Output>> {
    /// Opens what `path` names (see [`OutputKind`]) and writes an archive to it; with
    /// `volume_size`, a set of volumes of at most that many bytes, the first at `path`.
    /// With `detached`, a detached signature by `opts.signer` is made over every byte written
    /// (see [`finish_output`]).
    pub fn create_output(
        path: impl AsRef<Path>,
        opts: WriterOptions,
        volume_size: Option<u64>,
        detached: bool,
    ) -> Result<(Self, OutputKind), ArchiveError> {
        let path = path.as_ref();
        let kind = OutputKind::of(path)?;
        let id = match opts.archive_id {
            Some(id) => id,
            None => {
                random_archive_id().map_err(ArchiveError::io("draw an archive ID for", path))?
            }
        };
        let opts = WriterOptions {
            archive_id: Some(id),
            ..opts
        };
        let signer = match (&opts.signer, detached) {
            (Some(key), true) => Some(
                key.stream_signer(super::signing::detached_comment(
                    path,
                    Some(id),
                    None,
                    "backup",
                ))
                .map_err(|e| ArchiveError::Sign {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?,
            ),
            _ => None,
        };
        let mut signer = Some(signer);
        let mut out = |sink: Sink| {
            let signer = signer.take().flatten();
            BufWriter::with_capacity(1 << 20, Output { sink, signer })
        };
        if let Some(size) = volume_size {
            if kind.is_stream() {
                return Err(ArchiveError::Order {
                    path: path.to_path_buf(),
                    detail: "volumes are files: --volume-size needs a file name (to cut a stream, `kar split` its file)".into(),
                });
            }
            let v = super::volume::VolumeWriter::create(path, size)?;
            let w = ArchiveWriter::new(out(Sink::Volumes(v)), path, opts)?;
            return Ok((w, OutputKind::Volumes));
        }
        let file = match kind {
            OutputKind::File | OutputKind::Volumes => create_new(path)?,
            OutputKind::Stdout => {
                use std::os::fd::AsFd;
                let fd = std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(ArchiveError::io("open standard output as", path))?;
                File::from(fd)
            }
            OutputKind::Device => OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(ArchiveError::io("open", path))?,
        };
        let w = ArchiveWriter::new(out(Sink::File(file)), path, opts)?;
        Ok((w, kind))
    }
}

impl ArchiveWriter<BufWriter<File>> {
    /// Creates a new archive file; refuses to overwrite an existing one.
    pub fn create(path: impl AsRef<Path>, opts: WriterOptions) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let file = create_new(path)?;
        ArchiveWriter::new(BufWriter::with_capacity(1 << 20, file), path, opts)
    }

    /// Like [`ArchiveWriter::create`], with the given header (compact keeps the input's).
    pub(crate) fn create_as(
        path: impl AsRef<Path>,
        opts: WriterOptions,
        header: FileHeader,
    ) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let file = create_new(path)?;
        let out = BufWriter::with_capacity(1 << 20, file);
        ArchiveWriter::with_header(out, path.to_path_buf(), opts, header)
    }
}

/// A new file at `path`; an existing one is never overwritten.
pub(crate) fn create_new(path: &Path) -> Result<File, ArchiveError> {
    {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    ArchiveError::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    ArchiveError::Io {
                        op: "create",
                        path: path.to_path_buf(),
                        source: e,
                    }
                }
            })
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive on any byte sink; `path` names it in errors.
    pub fn new(
        out: W,
        path: impl Into<PathBuf>,
        opts: WriterOptions,
    ) -> Result<Self, ArchiveError> {
        let path = path.into();
        let id = match opts.archive_id {
            Some(id) => id,
            None => {
                random_archive_id().map_err(ArchiveError::io("draw an archive ID for", &path))?
            }
        };
        let mut header = FileHeader::new(id);
        if opts.signer.is_some() {
            header.minor = crate::format::VERSION_MINOR_SIGNED;
        }
        if opts.chain.is_some() {
            header.major = crate::format::VERSION_MAJOR_CHAIN;
            header.minor = 0;
            header.flags |= crate::format::file_header::FLAG_CHAIN;
        }
        let Some(sealing) = opts.sealing.clone() else {
            return Self::with_header(out, path, opts, header);
        };
        if opts.chain.is_none() {
            header.major = crate::format::VERSION_MAJOR_ENCRYPTED;
            header.minor = 0;
        }
        header.flags |= crate::format::file_header::FLAG_ENCRYPTED;
        let mut w = Self::with_header(out, path, opts, header)?;
        let prefix = match sealing.nonce_prefix {
            Some(p) => p,
            None => {
                let mut p = [0u8; 16];
                getrandom::fill(&mut p).map_err(|e| {
                    ArchiveError::io("draw a nonce prefix for", &w.path)(std::io::Error::other(e))
                })?;
                p
            }
        };
        w.sealer = Some(Sealer::new(sealing.keys.clone(), id, prefix));
        for e in &sealing.envelopes {
            let h = FrameHeader::for_content(FrameKind::Envelope, Compression::None, e, e);
            let at = w.write_frame(&h, e)?;
            w.index.envelopes.insert(at, h.content_id);
        }
        Ok(w)
    }

    /// Starts an archive with the given header: compact writes a 2.x input's version again.
    pub(crate) fn with_header(
        mut out: W,
        path: PathBuf,
        opts: WriterOptions,
        header: FileHeader,
    ) -> Result<Self, ArchiveError> {
        let bytes = header.encode();
        out.write_all(&bytes)
            .map_err(ArchiveError::io("write", &path))?;
        Ok(ArchiveWriter {
            out,
            path,
            header,
            pos: bytes.len() as u64,
            frames: 0,
            opts,
            index: IndexContent::default(),
            written: HashSet::new(),
            deduplicated: 0,
            open: BTreeMap::new(),
            covered_to: BTreeMap::new(),
            partitions: BTreeMap::new(),
            metadata: Vec::new(),
            blobs: 0,
            sealer: None,
            inherited: Default::default(),
            changes: Vec::new(),
        })
    }

    pub fn options(&self) -> &WriterOptions {
        &self.opts
    }

    /// The archive ID the file's header and every frame carry.
    pub fn archive_id(&self) -> Option<ArchiveId> {
        self.header.archive_id
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The sink, once the archive is finished (compact keeps it to sync it).
    pub(crate) fn into_inner(self) -> W {
        self.out
    }

    /// The sink, e.g. to hand a clone of the file to a [`BackgroundSync`].
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn write_frame(&mut self, h: &FrameHeader, stored: &[u8]) -> Result<u64, ArchiveError> {
        let at = self.pos;
        self.out
            .write_all(&h.encode(self.header.archive_id))
            .map_err(ArchiveError::io("write", &self.path))?;
        self.out
            .write_all(stored)
            .map_err(ArchiveError::io("write", &self.path))?;
        // Each finished frame goes to the OS at once: if the process is killed, every complete
        // frame is in the file for `kar repair`. Frames are large, so this costs little.
        self.out
            .flush()
            .map_err(ArchiveError::io("write", &self.path))?;
        self.pos += h.frame_len();
        self.frames += 1;
        Ok(at)
    }

    fn partition_entry(&mut self, topic: &str, partition: i32) -> &mut PartitionEntry {
        self.partitions
            .entry((topic.to_string(), partition))
            .or_insert_with(|| PartitionEntry {
                partition,
                ..Default::default()
            })
    }

    /// Records the snapshot range a partition is to be captured over (`start..end`), so that an
    /// empty partition is listed too and "complete" has a meaning.
    pub fn declare_partition(
        &mut self,
        topic: &str,
        partition: i32,
        start_offset: i64,
        end_offset: i64,
    ) {
        let e = self.partition_entry(topic, partition);
        e.start_offset = Some(start_offset);
        e.end_offset = Some(end_offset);
    }

    /// Appends one record to the open chunk of its partition. A full chunk is written when the
    /// next record comes (or the partition is finished), so that the last chunk of a finished
    /// partition can account for the snapshot range up to its end.
    #[allow(clippy::too_many_arguments)]
    pub fn append<'h>(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: i64,
        timestamp_type: TimestampType,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<(), ArchiveError> {
        let k = (topic.to_string(), partition);
        if self
            .open
            .get(&k)
            .is_some_and(|e| e.encoded_len() >= self.opts.chunk_target_bytes)
        {
            self.close_chunk(topic, partition, None)?;
        }
        if !self.open.contains_key(&k) {
            let enc = ChunkEncoder::new(topic, partition)
                .map_err(|e| ArchiveError::Encode(e, self.path.clone()))?;
            self.open.insert(k.clone(), enc);
        }
        let enc = self.open.get_mut(&k).expect("inserted above");
        enc.push(offset, timestamp, timestamp_type, key, value, headers)
            .map_err(|e| ArchiveError::Encode(e, self.path.clone()))
    }

    /// Writes the open chunk of a partition, if it has records, accounting for offsets up to its
    /// last record.
    pub fn flush_chunk(&mut self, topic: &str, partition: i32) -> Result<(), ArchiveError> {
        self.close_chunk(topic, partition, None)
    }

    /// Writes the open chunk; its coverage starts where the partition's previous chunk's ended
    /// (or at the declared snapshot start) and ends at `to`, or just after its last record.
    fn close_chunk(
        &mut self,
        topic: &str,
        partition: i32,
        to: Option<i64>,
    ) -> Result<(), ArchiveError> {
        let k = (topic.to_string(), partition);
        let Some(enc) = self.open.remove(&k) else {
            return Ok(());
        };
        if enc.is_empty() {
            return Ok(());
        }
        let (first, last) = enc.offsets();
        let declared = self.partitions.get(&k).and_then(|e| e.start_offset);
        let from = self
            .covered_to
            .get(&k)
            .copied()
            .or(declared)
            .map_or(first, |f| f.min(first));
        let to = to.map_or(last + 1, |t| t.max(last + 1));
        let (header, raw) = enc
            .finish(from..to)
            .map_err(|e| ArchiveError::Encode(e, self.path.clone()))?;
        self.covered_to.insert(k, to);
        let mut sealed = SealedChunk::from_raw(header, &raw, self.opts.zstd_level)
            .map_err(ArchiveError::io("compress a chunk for", &self.path))?;
        if let Some(s) = &self.sealer {
            sealed = sealed.sealed(&raw, s);
        }
        self.write_chunk(sealed)
    }

    /// Writes the partition's open chunk, accounting for the rest of its declared snapshot range,
    /// and marks the partition complete.
    pub fn finish_partition(&mut self, topic: &str, partition: i32) -> Result<(), ArchiveError> {
        let end = self
            .partitions
            .get(&(topic.to_string(), partition))
            .and_then(|e| e.end_offset);
        self.close_chunk(topic, partition, end)?;
        self.partition_entry(topic, partition).complete = true;
        Ok(())
    }

    /// Writes a chunk sealed elsewhere (e.g. on a consumer's own thread). A chunk whose content is
    /// already in the file is not written again.
    pub fn write_chunk(&mut self, c: SealedChunk) -> Result<(), ArchiveError> {
        if c.frame.encrypted != self.sealer.is_some() {
            return Err(ArchiveError::Order {
                path: self.path.clone(),
                detail: "a record chunk sealed otherwise than the archive (encrypted in a plain archive, or plain in an encrypted one)".into(),
            });
        }
        let id = c.frame.content_id;
        if !self.written.insert(id) {
            self.deduplicated += 1;
            return Ok(());
        }
        let at = self.write_frame(&c.frame, &c.stored)?;
        let h = &c.header;
        self.index.chunks.push(ChunkEntry::new(
            h,
            at,
            id,
            c.frame.raw_len,
            c.frame.stored_len,
        ));
        self.index.content.insert(id, at);
        let e = self.partition_entry(&h.topic, h.partition);
        e.records += u64::from(h.record_count);
        e.chunks += 1;
        e.raw_bytes += c.frame.raw_len;
        e.first_offset = Some(
            e.first_offset
                .map_or(h.first_offset, |f| f.min(h.first_offset)),
        );
        e.last_offset = Some(
            e.last_offset
                .map_or(h.last_offset, |l| l.max(h.last_offset)),
        );
        e.min_timestamp = Some(
            e.min_timestamp
                .map_or(h.min_timestamp, |m| m.min(h.min_timestamp)),
        );
        e.max_timestamp = Some(
            e.max_timestamp
                .map_or(h.max_timestamp, |m| m.max(h.max_timestamp)),
        );
        Ok(())
    }

    /// Copies an intact content frame from another archive as it is (repair): no recompression.
    /// `chunk` is the decoded header when the frame is a record chunk.
    pub(crate) fn copy_frame(
        &mut self,
        h: &FrameHeader,
        stored: &[u8],
        chunk: Option<crate::format::chunk::ChunkHeader>,
    ) -> Result<(), ArchiveError> {
        match chunk {
            Some(header) => self.write_chunk(SealedChunk {
                header,
                frame: *h,
                stored: stored.to_vec(),
            }),
            None => {
                if self.written.insert(h.content_id) {
                    let at = self.write_frame(h, stored)?;
                    self.index.content.insert(h.content_id, at);
                    if h.kind == FrameKind::Blob {
                        self.blobs += 1;
                    }
                } else {
                    self.deduplicated += 1;
                }
                Ok(())
            }
        }
    }

    /// Records in the manifest that a partition's offsets `from..to` are lost (repair keeping the
    /// chunks after a hole).
    pub(crate) fn record_gap(&mut self, topic: &str, partition: i32, from: i64, to: i64) {
        self.partition_entry(topic, partition)
            .gaps
            .push(crate::format::manifest::OffsetRange { from, to });
    }

    /// Lists an already written metadata frame in the manifest (repair).
    pub(crate) fn list_metadata(&mut self, kind: &str, id: &Hash) {
        self.metadata.push(MetadataRef {
            kind: kind.to_string(),
            id: hex(id),
        });
    }

    /// The header and stored bytes of `raw` content stored as `plain`: sealed in an encrypted
    /// archive.
    fn frame_of(
        &self,
        kind: FrameKind,
        compression: Compression,
        raw: &[u8],
        plain: Vec<u8>,
    ) -> Result<(FrameHeader, Vec<u8>), ArchiveError> {
        Ok(match &self.sealer {
            Some(s) => s.seal_frame(kind, compression, raw, &plain),
            None => (
                FrameHeader::for_content(kind, compression, raw, &plain),
                plain,
            ),
        })
    }

    /// The sealer, when the archive is encrypted (the backup's compression stage seals chunks).
    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    fn write_content(&mut self, kind: FrameKind, raw: &[u8]) -> Result<Hash, ArchiveError> {
        let stored = zstd::bulk::compress(raw, self.opts.zstd_level)
            .map_err(ArchiveError::io("compress", &self.path))?;
        let (h, stored) = self.frame_of(kind, Compression::Zstd, raw, stored)?;
        if self.written.insert(h.content_id) {
            let at = self.write_frame(&h, &stored)?;
            self.index.content.insert(h.content_id, at);
            if kind == FrameKind::Blob {
                self.blobs += 1;
            }
        } else {
            self.deduplicated += 1;
        }
        Ok(h.content_id)
    }

    /// Stores opaque bytes (a schema text) once, however often they are added; returns their ID.
    /// Only before the first record chunk (§3: a stream restore has every blob before any record).
    /// A chain member names, without storing it, a blob the chain below stores (§16): only when
    /// unencrypted, where a content ID is the same in every archive.
    pub fn add_blob(&mut self, raw: &[u8]) -> Result<Hash, ArchiveError> {
        self.before_records("a blob")?;
        if self.sealer.is_none()
            && let Some(link) = &self.opts.chain
        {
            let id = crate::format::crypt::content_id(None, raw);
            if link.stored_below.contains(&id) && !self.written.contains(&id) {
                self.inherited.insert(id);
                return Ok(id);
            }
        }
        self.write_content(FrameKind::Blob, raw)
    }

    /// Records a change since the parent, for a chain member's manifest (§16).
    pub fn add_change(&mut self, change: ChainChange) {
        self.changes.push(change);
    }

    /// Records how a chain member's partition continues its parent's (§16).
    pub fn set_lineage(&mut self, topic: &str, partition: i32, lineage: Lineage) {
        self.partition_entry(topic, partition).lineage = Some(lineage);
    }

    /// Blobs and metadata documents but `provenance` precede every record chunk (§3), so that a
    /// reader of a stream has them before the first record.
    fn before_records(&self, what: &str) -> Result<(), ArchiveError> {
        if self.index.chunks.is_empty() {
            return Ok(());
        }
        Err(ArchiveError::Order {
            path: self.path.clone(),
            detail: format!(
                "{what} after record chunks: blobs and metadata documents (but provenance) must precede every record chunk"
            ),
        })
    }

    /// Indexes a Schema Registry schema ID to the blob holding its schema text.
    pub fn index_schema(&mut self, id: u32, blob: Hash) {
        self.index.schemas.insert(id, blob);
    }

    /// Stores a JSON metadata document of the given kind and lists it in the manifest.
    /// Only `provenance` may follow record chunks (see [`ArchiveWriter::add_blob`]).
    pub fn add_metadata(&mut self, kind: &str, json: &[u8]) -> Result<Hash, ArchiveError> {
        if kind != crate::format::provenance::KIND {
            self.before_records(&format!("the {kind} document"))?;
        }
        let id = self.write_content(FrameKind::Metadata, json)?;
        self.metadata.push(MetadataRef {
            kind: kind.to_string(),
            id: hex(&id),
        });
        Ok(id)
    }

    /// Writes the open chunks, the manifest, the index and the footer, and flushes. `status` says
    /// whether the backup got everything it set out to.
    pub fn finish(
        mut self,
        status: ArchiveStatus,
        notes: Vec<String>,
    ) -> Result<(W, WriteSummary), ArchiveError> {
        let open: Vec<(String, i32)> = self.open.keys().cloned().collect();
        for (t, p) in open {
            self.flush_chunk(&t, p)?;
        }
        let mut topics: Vec<TopicEntry> = Vec::new();
        for ((topic, _), entry) in std::mem::take(&mut self.partitions) {
            match topics.last_mut() {
                Some(t) if t.name == topic => t.partitions.push(entry),
                _ => topics.push(TopicEntry {
                    name: topic,
                    partitions: vec![entry],
                }),
            }
        }
        let records = topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records)
            .sum();
        let manifest = Manifest {
            format_major: self.header.major,
            format_minor: self.header.minor,
            created_at_ms: self.opts.created_at_ms,
            writer: self.opts.writer.clone(),
            status,
            topics,
            metadata: std::mem::take(&mut self.metadata),
            blobs: self.blobs,
            notes,
            parent: self.opts.chain.as_ref().map(|c| c.parent.clone()),
            inherited_blobs: self.inherited.iter().map(hex).collect(),
            changes: std::mem::take(&mut self.changes),
        };
        let summary = self.finish_with_manifest(&manifest)?;
        Ok((self.out, WriteSummary { records, ..summary }))
    }

    /// The tail of the file: manifest frame, index frame, footer. Shared with repair.
    pub(crate) fn finish_with_manifest(
        &mut self,
        manifest: &Manifest,
    ) -> Result<WriteSummary, ArchiveError> {
        self.finish_with_manifest_bytes(&manifest.encode())
    }

    /// The tail of the file with a manifest given as its exact bytes (compact carries the
    /// original's over unchanged, so its content ID, and the root, stay the same).
    pub(crate) fn finish_with_manifest_bytes(
        &mut self,
        raw: &[u8],
    ) -> Result<WriteSummary, ArchiveError> {
        if let Some(key) = self.opts.signer.clone() {
            self.sign(&key, raw)?;
        }
        let stored = zstd::bulk::compress(raw, self.opts.zstd_level)
            .map_err(ArchiveError::io("compress", &self.path))?;
        let (mh, stored) = self.frame_of(FrameKind::Manifest, Compression::Zstd, raw, stored)?;
        let manifest_offset = self.write_frame(&mh, &stored)?;

        let index_bytes = self
            .index
            .to_redb_bytes()
            .map_err(|e| ArchiveError::Index {
                path: self.path.clone(),
                offset: self.pos,
                detail: format!("building the index: {e}"),
            })?;
        let (ih, index_stored) = self.frame_of(
            FrameKind::Index,
            Compression::None,
            &index_bytes,
            index_bytes.clone(),
        )?;
        let index_offset = self.write_frame(&ih, &index_stored)?;

        let root = self.root(&mh.content_id);
        let footer = Footer {
            index_offset,
            manifest_offset,
            frame_count: self.frames,
            root,
            major: self.header.major,
            minor: self.header.minor,
        };
        self.out
            .write_all(&footer.encode(self.header.archive_id))
            .map_err(ArchiveError::io("write", &self.path))?;
        self.pos += crate::format::footer::LEN as u64;
        self.out
            .flush()
            .map_err(ArchiveError::io("flush", &self.path))?;
        Ok(WriteSummary {
            root,
            archive_id: self.header.archive_id,
            bytes: self.pos,
            frames: self.frames,
            chunks: self.index.chunks.len() as u64,
            records: 0,
            deduplicated: self.deduplicated,
            inherited_blobs: self.inherited.len(),
        })
    }

    /// Writes the signature frame (§14): a statement of the archive's ID, its root and its
    /// manifest, signed, just before the manifest frame.
    fn sign(
        &mut self,
        key: &super::signing::SigningKey,
        manifest: &[u8],
    ) -> Result<(), ArchiveError> {
        let keys = self.sealer.as_ref().map(|s| &*s.keys);
        let manifest_id = crate::format::crypt::content_id(keys, manifest);
        let Some(archive_id) = self.header.archive_id else {
            return Err(ArchiveError::Order {
                path: self.path.clone(),
                detail: "a 2.x archive has no archive ID to sign".into(),
            });
        };
        let statement = crate::format::signature::Statement {
            archive_id,
            root: self.root(&manifest_id),
            manifest_id,
            created_ms: self.opts.created_at_ms,
            signed_ms: now_ms(),
            key_id: key.key_id(),
        };
        let doc = key
            .sign_statement(&statement)
            .map_err(|e| ArchiveError::Sign {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
        let raw = doc.encode();
        self.add_signature_frame(&raw, &raw, Compression::None)
    }

    /// The root hash over what is written (§8), keyed in an encrypted archive (§15).
    fn root(&self, manifest_id: &Hash) -> Hash {
        let key = self.sealer.as_ref().map(|s| s.keys.id_key());
        crate::format::root::root_hash_keyed(key, manifest_id, self.index.content.keys().copied())
    }

    /// Writes a signature frame (a new one, or one compact carries over) and lists it in the
    /// index.
    pub(crate) fn add_signature_frame(
        &mut self,
        raw: &[u8],
        stored: &[u8],
        compression: Compression,
    ) -> Result<(), ArchiveError> {
        let h = FrameHeader::for_content(FrameKind::Signature, compression, raw, stored);
        let at = self.write_frame(&h, stored)?;
        self.index.signatures.insert(at, h.content_id);
        Ok(())
    }

    /// Pushes buffered bytes to the sink (e.g. so a reader can see complete chunks of an archive
    /// still being written).
    pub fn flush(&mut self) -> Result<(), ArchiveError> {
        self.out
            .flush()
            .map_err(ArchiveError::io("flush", &self.path))
    }
}

/// Flushes the file's buffer and makes its data durable: what a backup must do before it says the
/// archive is written.
pub fn sync_file(out: BufWriter<File>, path: &Path) -> Result<(), ArchiveError> {
    let file = flush_out(out, path)?;
    file.sync_all().map_err(ArchiveError::io("sync", path))
}

/// Flushes the buffer into the file, stream or volumes beneath it.
pub fn flush_out<W: Write>(out: BufWriter<W>, path: &Path) -> Result<W, ArchiveError> {
    out.into_inner().map_err(|e| ArchiveError::Io {
        op: "flush",
        path: path.to_path_buf(),
        source: e.into_error(),
    })
}

/// Writes a file's data out to the device in the background while the writer goes on, every so
/// many bytes: the final sync then has little left to do, and the page cache never holds
/// gigabytes of dirty data on its way to a slow USB stick. Written pages are dropped from the
/// page cache every [`DROP_EVERY`] bytes (Linux; the kernel starts writing out dirty pages of the
/// range and drops the clean ones, without the device flush a sync costs): a backup never reads
/// its chunks back, and a 100 GB archive would otherwise push out the page cache of everything
/// else on the machine (the broker's, on a shared host). The next writes then reuse the freed
/// pages, which on a VM whose freed memory goes back to the host (virtio-balloon free page
/// reporting) costs a quarter of the CPU of writing into fresh ones (benches/NOTES.md).
/// A failed sync is kept and returned by [`BackgroundSync::stop`]; a page not yet written out is
/// never dropped.
pub struct BackgroundSync {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// How far the file has been written, as last told: the thread reads the newest when it wakes.
    latest: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The first failed sync: the thread's handle shares the writer's open file, so the kernel
    /// reports a writeback error once, to whichever sync comes first, and the final sync may not
    /// see it again.
    failed: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
    every: u64,
    next: u64,
}

/// How often written pages are dropped from the page cache. Measured on the 1.09 GB bench topic
/// (a 208 MB archive), 4-5 backups each: system CPU 0.64-0.84 s when dropped at each 64 MiB sync,
/// 0.47-0.73 s (median 0.55) every 8 MiB, and 0.45-0.51 s with a sync every 8 MiB, whose device
/// flushes a slow disk would pay.
pub const DROP_EVERY: u64 = 8 << 20;

impl BackgroundSync {
    /// One that never syncs: for a stream, which has no file to sync.
    pub fn disabled() -> BackgroundSync {
        BackgroundSync {
            tx: None,
            handle: None,
            latest: Default::default(),
            failed: Default::default(),
            every: u64::MAX,
            next: u64::MAX,
        }
    }

    /// Syncs `file` every `every` bytes written, telling `progress` how long each sync took.
    pub fn start(file: &File, every: u64, progress: Progress) -> std::io::Result<BackgroundSync> {
        let file = file.try_clone()?;
        let sync_every = every.max(1);
        let latest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        // One pending wake-up is enough: the thread then reads the newest position.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (at, first_error) = (latest.clone(), failed.clone());
        let handle = std::thread::Builder::new()
            .name("kar-sync".into())
            .spawn(move || {
                // Where the last sync reached: everything before it is clean, and was dropped.
                let mut synced = 0;
                for () in rx {
                    let written = at.load(std::sync::atomic::Ordering::SeqCst);
                    if written >= synced + sync_every {
                        let started = std::time::Instant::now();
                        if let Err(e) = file.sync_data() {
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert(e);
                            continue;
                        }
                        progress.event(Event::Synced {
                            seconds: started.elapsed().as_secs_f64(),
                        });
                        drop_cached(&file, synced, written);
                        synced = written;
                    } else {
                        drop_cached(&file, synced, written);
                    }
                }
            })?;
        let every = sync_every.min(DROP_EVERY);
        Ok(BackgroundSync {
            tx: Some(tx),
            handle: Some(handle),
            latest,
            failed,
            every,
            next: every,
        })
    }

    /// Tells it how far the file has been written; never blocks.
    pub fn written(&mut self, pos: u64) {
        if pos >= self.next {
            self.next = pos + self.every;
            self.latest.store(pos, std::sync::atomic::Ordering::SeqCst);
            if let Some(tx) = &self.tx {
                let _ = tx.try_send(());
            }
        }
    }

    /// Waits for a sync in progress to end; the first sync that failed, if one did (the file did
    /// not reach the device whole, whatever a later sync says).
    pub fn stop(mut self) -> std::io::Result<()> {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Drops `from..to` of `file` from the page cache: its clean pages go, and writing out its dirty
/// ones starts (they go with a later call).
fn drop_cached(file: &File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from))
        && let Err(e) = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed)
    {
        tracing::debug!("dropping written pages from the page cache: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}
