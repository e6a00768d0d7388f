//! The redb index stored inside the archive: built in memory by the writer (and by repair), stored
//! uncompressed as the `Index` frame, and opened in place from the memory map by the reader, with no
//! extraction step. It is derivable: every entry can be rebuilt from the chunks themselves.
//!
//! Tables (key → value):
//! - `chunks`: (topic `&str`, partition `i32`, first offset `i64`) → [`ChunkEntry`], 100 bytes LE
//! - `time`: (topic, partition, running max timestamp `i64`) → first offset `i64` of the chunk in
//!   which the partition's running maximum timestamp first reached that value. The first entry at
//!   or after (topic, partition, T) names the first chunk that holds a record with timestamp ≥ T,
//!   also when timestamps are out of order.
//! - `content`: content ID `[u8; 32]` → frame offset `u64`, for every record chunk, blob and
//!   metadata frame.
//! - `schemas`: Schema Registry schema ID `u32` → content ID of the blob holding its schema text.
//! - `signatures` (3.1, only in a signed archive): frame offset `u64` → content ID of each
//!   signature frame, so that a reader finds them without a scan.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use redb::{ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};

use crate::format::Hash;
use crate::format::chunk::ChunkHeader;

pub const CHUNKS: TableDefinition<(&str, i32, i64), &[u8]> = TableDefinition::new("chunks");
pub const TIME: TableDefinition<(&str, i32, i64), i64> = TableDefinition::new("time");
pub const CONTENT: TableDefinition<[u8; 32], u64> = TableDefinition::new("content");
pub const SCHEMAS: TableDefinition<u32, [u8; 32]> = TableDefinition::new("schemas");
pub const SIGNATURES: TableDefinition<u64, [u8; 32]> = TableDefinition::new("signatures");
pub const ENVELOPES: TableDefinition<u64, [u8; 32]> = TableDefinition::new("envelopes");

/// Where a chunk is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub record_count: u32,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// The source offsets the chunk accounts for (see [`ChunkHeader`]).
    pub covers_from: i64,
    pub covers_to: i64,
    /// File offset of the chunk's frame header.
    pub frame_offset: u64,
    pub chunk_id: Hash,
    pub raw_len: u64,
    pub stored_len: u64,
}

pub const ENTRY_LEN: usize = 100;

impl ChunkEntry {
    pub fn new(
        h: &ChunkHeader,
        frame_offset: u64,
        chunk_id: Hash,
        raw_len: u64,
        stored_len: u64,
    ) -> Self {
        ChunkEntry {
            topic: h.topic.clone(),
            partition: h.partition,
            first_offset: h.first_offset,
            last_offset: h.last_offset,
            record_count: h.record_count,
            min_timestamp: h.min_timestamp,
            max_timestamp: h.max_timestamp,
            covers_from: h.covers_from,
            covers_to: h.covers_to,
            frame_offset,
            chunk_id,
            raw_len,
            stored_len,
        }
    }

    /// The value stored in `chunks`: last offset i64, frame offset u64, record count u32, min and
    /// max timestamp i64, chunk ID 32 bytes, raw length u64, stored length u64, covers from i64,
    /// covers to i64.
    pub fn encode_value(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.last_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.frame_offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.record_count.to_le_bytes());
        b[20..28].copy_from_slice(&self.min_timestamp.to_le_bytes());
        b[28..36].copy_from_slice(&self.max_timestamp.to_le_bytes());
        b[36..68].copy_from_slice(&self.chunk_id);
        b[68..76].copy_from_slice(&self.raw_len.to_le_bytes());
        b[76..84].copy_from_slice(&self.stored_len.to_le_bytes());
        b[84..92].copy_from_slice(&self.covers_from.to_le_bytes());
        b[92..100].copy_from_slice(&self.covers_to.to_le_bytes());
        b
    }

    pub fn decode_value(topic: &str, partition: i32, first_offset: i64, b: &[u8]) -> Option<Self> {
        if b.len() != ENTRY_LEN {
            return None;
        }
        let i64_at = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        Some(ChunkEntry {
            topic: topic.to_string(),
            partition,
            first_offset,
            last_offset: i64_at(0),
            frame_offset: u64_at(8),
            record_count: u32::from_le_bytes(b[16..20].try_into().unwrap()),
            min_timestamp: i64_at(20),
            max_timestamp: i64_at(28),
            chunk_id: b[36..68].try_into().unwrap(),
            raw_len: u64_at(68),
            stored_len: u64_at(76),
            covers_from: i64_at(84),
            covers_to: i64_at(92),
        })
    }
}

/// Everything the index holds, in plain collections: what the writer and repair collect, and
/// what verify compares the stored index with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexContent {
    pub chunks: Vec<ChunkEntry>,
    /// content ID → frame offset (record chunks, blobs, metadata).
    pub content: BTreeMap<Hash, u64>,
    /// schema ID → blob ID of the schema text.
    pub schemas: BTreeMap<u32, Hash>,
    /// frame offset → content ID of each signature frame (§14).
    pub signatures: BTreeMap<u64, Hash>,
    /// frame offset → content ID of each key envelope frame (§15).
    pub envelopes: BTreeMap<u64, Hash>,
}

impl IndexContent {
    /// Builds the redb database and returns its bytes.
    pub fn to_redb_bytes(&self) -> Result<Vec<u8>, redb::Error> {
        let backend = MemoryBackend::default();
        let bytes = backend.0.clone();
        {
            let db = redb::Database::builder().create_with_backend(backend)?;
            let tx = db.begin_write()?;
            {
                let mut chunks = tx.open_table(CHUNKS)?;
                let mut time = tx.open_table(TIME)?;
                let mut content = tx.open_table(CONTENT)?;
                let mut schemas = tx.open_table(SCHEMAS)?;
                for (id, blob) in &self.schemas {
                    schemas.insert(*id, *blob)?;
                }
                let mut sorted: Vec<&ChunkEntry> = self.chunks.iter().collect();
                sorted.sort_by(|a, b| {
                    (&a.topic, a.partition, a.first_offset).cmp(&(
                        &b.topic,
                        b.partition,
                        b.first_offset,
                    ))
                });
                let mut running: Option<(&str, i32, i64)> = None;
                for e in sorted {
                    chunks.insert(
                        (e.topic.as_str(), e.partition, e.first_offset),
                        e.encode_value().as_slice(),
                    )?;
                    let raises = match running {
                        Some((t, p, max)) if t == e.topic && p == e.partition => {
                            e.max_timestamp > max
                        }
                        _ => true,
                    };
                    if raises {
                        time.insert(
                            (e.topic.as_str(), e.partition, e.max_timestamp),
                            e.first_offset,
                        )?;
                        running = Some((e.topic.as_str(), e.partition, e.max_timestamp));
                    }
                }
                for (id, off) in &self.content {
                    content.insert(*id, *off)?;
                }
                // Only a signed archive has the table: an unsigned one stays byte for byte 3.0.
                for (table, rows) in [(SIGNATURES, &self.signatures), (ENVELOPES, &self.envelopes)]
                {
                    if !rows.is_empty() {
                        let mut t = tx.open_table(table)?;
                        for (off, id) in rows {
                            t.insert(*off, *id)?;
                        }
                    }
                }
            }
            tx.commit()?;
        }
        let out = std::mem::take(&mut *bytes.write().unwrap_or_else(|e| e.into_inner()));
        Ok(out)
    }

    /// Reads every table of an opened index.
    pub fn read(db: &redb::ReadOnlyDatabase) -> Result<IndexContent, redb::Error> {
        let tx = db.begin_read()?;
        let mut out = IndexContent::default();
        let chunks = tx.open_table(CHUNKS)?;
        for row in chunks.iter()? {
            let (k, v) = row?;
            let (topic, partition, first) = k.value();
            let e = ChunkEntry::decode_value(topic, partition, first, v.value()).ok_or_else(|| {
                redb::Error::Corrupted(format!("chunks entry for {topic}/{partition}@{first} has {} bytes, not {ENTRY_LEN}", v.value().len()))
            })?;
            out.chunks.push(e);
        }
        let content = tx.open_table(CONTENT)?;
        for row in content.iter()? {
            let (k, v) = row?;
            out.content.insert(k.value(), v.value());
        }
        let schemas = tx.open_table(SCHEMAS)?;
        for row in schemas.iter()? {
            let (k, v) = row?;
            out.schemas.insert(k.value(), v.value());
        }
        for (table, rows) in [
            (SIGNATURES, &mut out.signatures),
            (ENVELOPES, &mut out.envelopes),
        ] {
            match tx.open_table(table) {
                Ok(t) => {
                    for row in t.iter()? {
                        let (k, v) = row?;
                        rows.insert(k.value(), v.value());
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

/// A growable in-memory redb backend whose bytes the writer takes afterwards.
#[derive(Default)]
struct MemoryBackend(Arc<RwLock<Vec<u8>>>);

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryBackend")
    }
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("index buffer lock poisoned")
}

impl StorageBackend for MemoryBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.read().map_err(|_| poisoned())?.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let v = self.0.read().map_err(|_| poisoned())?;
        let start = offset as usize;
        let src = v.get(start..start + out.len()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past end of index")
        })?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0
            .write()
            .map_err(|_| poisoned())?
            .resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut v = self.0.write().map_err(|_| poisoned())?;
        let start = offset as usize;
        let end = start + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[start..end].copy_from_slice(data);
        Ok(())
    }
}

/// A read-only redb backend over a range of the archive's memory map: the index is used where it
/// lies in the file.
pub struct SliceBackend {
    map: Arc<super::source::Source>,
    start: usize,
    len: usize,
}

impl SliceBackend {
    pub fn new(map: Arc<super::source::Source>, start: usize, len: usize) -> Self {
        assert!(start + len <= map.len());
        SliceBackend { map, start, len }
    }
}

impl fmt::Debug for SliceBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SliceBackend({}..{})", self.start, self.start + self.len)
    }
}

fn read_only() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "the archive's index is read-only",
    )
}

impl StorageBackend for SliceBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.len as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|e| *e <= self.len as u64)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "index read past the end of the index frame",
                )
            })?;
        out.copy_from_slice(&self.map[self.start + offset as usize..self.start + end as usize]);
        Ok(())
    }

    fn set_len(&self, _len: u64) -> Result<(), std::io::Error> {
        Err(read_only())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, _offset: u64, _data: &[u8]) -> Result<(), std::io::Error> {
        Err(read_only())
    }
}

/// Opens the index that lies at `start..start + len` of the map.
pub fn open(
    map: Arc<super::source::Source>,
    start: usize,
    len: usize,
) -> Result<redb::ReadOnlyDatabase, redb::DatabaseError> {
    redb::Database::builder().open_read_only_with_backend(SliceBackend::new(map, start, len))
}

/// The first offset of the first chunk of `topic`/`partition` that holds a record with timestamp
/// ≥ `ts`, or `None` if no record has.
pub fn first_chunk_at_or_after(
    db: &redb::ReadOnlyDatabase,
    topic: &str,
    partition: i32,
    ts: i64,
) -> Result<Option<i64>, redb::Error> {
    let tx = db.begin_read()?;
    let time = tx.open_table(TIME)?;
    let mut range = time.range((topic, partition, ts)..=(topic, partition, i64::MAX))?;
    Ok(match range.next() {
        Some(row) => Some(row?.1.value()),
        None => None,
    })
}

/// Runs `f`, turning a panic into an error. redb trusts its file and may panic on a malformed one,
/// and an archive's index can be malformed (or malicious) although its hash matches: a hash proves
/// only that the bytes are the ones written.
pub fn guarded<T, E>(
    f: impl FnOnce() -> Result<T, E>,
    to_err: impl FnOnce(String) -> E,
) -> Result<T, E> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            Err(to_err(format!(
                "the index is malformed (redb failed reading it: {msg}); the chunks themselves can still be verified and repaired"
            )))
        }
    }
}
