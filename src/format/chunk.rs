//! Record chunks: the records of one topic-partition, in offset order, as the raw (uncompressed)
//! content of a `RecordChunk` frame. The chunk is self-describing (topic, partition, offset and
//! time ranges, count), so the index can be rebuilt from the chunks alone.
//!
//! Chunk header (little-endian):
//!
//! | size | field |
//! |---|---|
//! | 2 | topic length T (u16, 1..=249) |
//! | T | topic name (UTF-8) |
//! | 4 | partition (i32, ≥ 0) |
//! | 4 | record count N (u32, ≥ 1) |
//! | 8 | first offset (i64) |
//! | 8 | last offset (i64) |
//! | 8 | covers from (i64): first offset the chunk accounts for, ≤ first offset |
//! | 8 | covers to (i64): end (exclusive) of the offsets it accounts for, > last offset |
//! | 8 | min timestamp (i64) |
//! | 8 | max timestamp (i64) |
//!
//! then N records, each:
//!
//! | encoding | field |
//! |---|---|
//! | varint | offset delta: offset − previous offset (the first record: offset − first offset = 0); ≥ 1 after the first |
//! | u8 | timestamp type: 0 none, 1 CreateTime, 2 LogAppendTime |
//! | varint | zigzag(timestamp − previous timestamp), wrapping; the first record's previous timestamp is 0 |
//! | varint | key length + 1, 0 = null key; then the key bytes |
//! | varint | value length + 1, 0 = null value; then the value bytes |
//! | varint | header count H; then H × (varint name length, name (UTF-8), varint value length + 1 (0 = null), value bytes) |
//!
//! Nothing may follow the last record.
//!
//! The coverage `covers_from..covers_to` says which source offsets the chunk speaks for: every
//! record of the source in that range is in the chunk, and an offset in it without a record is a
//! Kafka gap (compaction, a transaction marker, an aborted record). The chunks of a partition tile
//! its snapshot range, so a missing chunk is a hole any reader can see, without the manifest.

use super::frame::{Compression, FrameHeader, FrameKind};
use std::ops::Range;

use super::{Cursor, FormatError, MAX_FRAME_RAW_LEN, MAX_TOPIC_LEN, varint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampType {
    NotAvailable,
    CreateTime,
    LogAppendTime,
}

impl TimestampType {
    fn code(self) -> u8 {
        match self {
            TimestampType::NotAvailable => 0,
            TimestampType::CreateTime => 1,
            TimestampType::LogAppendTime => 2,
        }
    }
}

/// What a chunk says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    pub topic: String,
    pub partition: i32,
    pub record_count: u32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The source offsets the chunk accounts for: `covers_from..covers_to`.
    pub covers_from: i64,
    pub covers_to: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

impl ChunkHeader {
    /// The offsets the chunk accounts for.
    pub fn covers(&self) -> Range<i64> {
        self.covers_from..self.covers_to
    }
}

/// One record, borrowing its bytes from the decompressed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// The headers of a record, in order, duplicates and null values kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    count: u64,
    bytes: &'a [u8],
}

impl<'a> Headers<'a> {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            left: self.count,
            cur: Cursor::new(self.bytes, 0, "record header"),
        }
    }
}

pub struct HeaderIter<'a> {
    left: u64,
    cur: Cursor<'a>,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated when the record was decoded, so these cannot fail.
        let (name, value) = read_header(&mut self.cur).ok()?;
        Some((name, value))
    }
}

fn read_header<'a>(c: &mut Cursor<'a>) -> Result<(&'a str, Option<&'a [u8]>), FormatError> {
    let at = c.offset();
    let n = c.varint()?;
    let name = c.take(len_usize(c, n)?)?;
    let name = std::str::from_utf8(name).map_err(|_| c.corrupt(at, "header name is not UTF-8"))?;
    let value = read_nullable(c)?;
    Ok((name, value))
}

fn len_usize(c: &Cursor<'_>, n: u64) -> Result<usize, FormatError> {
    if n > c.remaining() as u64 {
        return Err(FormatError::Truncated {
            structure: "record",
            offset: c.offset(),
            needed: n,
            available: c.remaining() as u64,
        });
    }
    Ok(n as usize)
}

fn read_nullable<'a>(c: &mut Cursor<'a>) -> Result<Option<&'a [u8]>, FormatError> {
    match c.varint()? {
        0 => Ok(None),
        n => {
            let len = len_usize(c, n - 1)?;
            Ok(Some(c.take(len)?))
        }
    }
}

fn write_nullable(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => varint::encode(0, out),
        Some(b) => {
            varint::encode(b.len() as u64 + 1, out);
            out.extend_from_slice(b);
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes of the chunk header for a topic name.
fn header_len(topic: &str) -> usize {
    2 + topic.len() + 4 + 4 + 8 * 6
}

/// Why a record could not be added to a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "offset {offset} does not follow offset {previous}: records must come in increasing offset order"
    )]
    OffsetOrder { previous: i64, offset: i64 },
    #[error("topic name of {0} bytes: it must be 1 to 249 bytes")]
    TopicName(usize),
    #[error("negative partition {0}")]
    Partition(i32),
    #[error("record at offset {offset} would make the chunk larger than {max} bytes")]
    TooLarge { offset: i64, max: u64 },
    #[error("coverage {from}..{to} does not contain the chunk's offsets {first}..={last}")]
    Coverage {
        from: i64,
        to: i64,
        first: i64,
        last: i64,
    },
}

/// Builds one chunk. Records are encoded as they are pushed; [`ChunkEncoder::finish`] puts the
/// header in front.
#[derive(Debug)]
pub struct ChunkEncoder {
    topic: String,
    partition: i32,
    records: Vec<u8>,
    count: u32,
    first_offset: i64,
    last_offset: i64,
    min_ts: i64,
    max_ts: i64,
    prev_ts: i64,
}

impl ChunkEncoder {
    pub fn new(topic: &str, partition: i32) -> Result<Self, EncodeError> {
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
            return Err(EncodeError::TopicName(topic.len()));
        }
        if partition < 0 {
            return Err(EncodeError::Partition(partition));
        }
        Ok(ChunkEncoder {
            topic: topic.to_string(),
            partition,
            // Room for the header in front, filled in by `finish`: the records are never moved.
            records: vec![0; header_len(topic)],
            count: 0,
            first_offset: 0,
            last_offset: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            prev_ts: 0,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Makes room for `records` bytes of encoded records in all before the buffer grows again: a
    /// writer that closes chunks at a target size reserves about that once a chunk shows it will
    /// fill, so the chunk is not copied to ever larger buffers as it does (a 2 MiB chunk grown
    /// by doubling from empty is copied ~2 MiB over on the way).
    pub fn reserve(&mut self, records: usize) {
        let want = header_len(&self.topic) + records;
        self.records
            .reserve_exact(want.saturating_sub(self.records.len()));
    }

    /// Like [`ChunkEncoder::reserve`], but when the chunk lacks the room, moves it into `spare()`
    /// (a buffer of an earlier chunk, emptied) if that has the room: reusing buffers spares the
    /// allocator and the kernel a fresh 2 MiB of zeroed pages a chunk.
    pub fn reserve_in(&mut self, records: usize, spare: impl FnOnce() -> Option<Vec<u8>>) {
        let want = header_len(&self.topic) + records;
        if self.records.capacity() >= want {
            return;
        }
        match spare() {
            Some(mut buf) if buf.capacity() >= want => {
                buf.clear();
                buf.extend_from_slice(&self.records);
                self.records = buf;
            }
            _ => self.reserve(records),
        }
    }

    /// Bytes of encoded records so far (the chunk is this plus a small header).
    pub fn encoded_len(&self) -> usize {
        self.records.len() - header_len(&self.topic)
    }

    /// Appends a record. Offsets must increase; gaps are fine.
    #[allow(clippy::too_many_arguments)]
    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp: i64,
        timestamp_type: TimestampType,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<(), EncodeError> {
        let delta = if self.count == 0 {
            self.first_offset = offset;
            0
        } else if offset > self.last_offset {
            (offset as i128 - self.last_offset as i128) as u64
        } else {
            return Err(EncodeError::OffsetOrder {
                previous: self.last_offset,
                offset,
            });
        };
        let mark = self.records.len();
        let out = &mut self.records;
        varint::encode(delta, out);
        out.push(timestamp_type.code());
        varint::encode(zigzag(timestamp.wrapping_sub(self.prev_ts)), out);
        write_nullable(out, key);
        write_nullable(out, value);
        let count_at = out.len();
        let mut n = 0u64;
        let mut hbuf = Vec::new();
        for (name, v) in headers {
            varint::encode(name.len() as u64, &mut hbuf);
            hbuf.extend_from_slice(name.as_bytes());
            write_nullable(&mut hbuf, v);
            n += 1;
        }
        debug_assert_eq!(count_at, out.len());
        varint::encode(n, out);
        out.extend_from_slice(&hbuf);
        if self.records.len() as u64 > MAX_FRAME_RAW_LEN {
            self.records.truncate(mark);
            if self.count == 0 {
                self.first_offset = 0;
            }
            return Err(EncodeError::TooLarge {
                offset,
                max: MAX_FRAME_RAW_LEN,
            });
        }
        self.count += 1;
        self.last_offset = offset;
        self.prev_ts = timestamp;
        self.min_ts = self.min_ts.min(timestamp);
        self.max_ts = self.max_ts.max(timestamp);
        Ok(())
    }

    /// First and last offset of the records pushed so far (meaningless while empty).
    pub fn offsets(&self) -> (i64, i64) {
        (self.first_offset, self.last_offset)
    }

    /// The chunk's raw content: header, then the records; the chunk accounts for the source
    /// offsets `covers` (see the module comment), which must contain every record's offset.
    /// Panics if no record was pushed (a chunk holds at least one record; empty partitions live
    /// in the manifest).
    pub fn finish(self, covers: Range<i64>) -> Result<(ChunkHeader, Vec<u8>), EncodeError> {
        assert!(self.count > 0, "a chunk holds at least one record");
        if covers.start > self.first_offset || covers.end <= self.last_offset {
            return Err(EncodeError::Coverage {
                from: covers.start,
                to: covers.end,
                first: self.first_offset,
                last: self.last_offset,
            });
        }
        let header = ChunkHeader {
            topic: self.topic.clone(),
            partition: self.partition,
            record_count: self.count,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            covers_from: covers.start,
            covers_to: covers.end,
            min_timestamp: self.min_ts,
            max_timestamp: self.max_ts,
        };
        let mut head = Vec::with_capacity(header_len(&self.topic));
        head.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        head.extend_from_slice(self.topic.as_bytes());
        head.extend_from_slice(&self.partition.to_le_bytes());
        head.extend_from_slice(&self.count.to_le_bytes());
        head.extend_from_slice(&self.first_offset.to_le_bytes());
        head.extend_from_slice(&self.last_offset.to_le_bytes());
        head.extend_from_slice(&covers.start.to_le_bytes());
        head.extend_from_slice(&covers.end.to_le_bytes());
        head.extend_from_slice(&self.min_ts.to_le_bytes());
        head.extend_from_slice(&self.max_ts.to_le_bytes());
        let mut raw = self.records;
        raw[..head.len()].copy_from_slice(&head);
        Ok((header, raw))
    }
}

/// A finished chunk: its header, the frame header and the compressed bytes.
#[derive(Debug, Clone)]
pub struct SealedChunk {
    pub header: ChunkHeader,
    pub frame: FrameHeader,
    pub stored: Vec<u8>,
}

impl SealedChunk {
    pub fn from_raw(
        header: ChunkHeader,
        raw: &[u8],
        zstd_level: i32,
    ) -> std::io::Result<SealedChunk> {
        SealedChunk::compress_with(header, raw, &mut zstd::bulk::Compressor::new(zstd_level)?)
    }

    /// As [`SealedChunk::from_raw`], with a compression context kept by the caller: making a
    /// context per chunk allocates (and the kernel zeroes) a few MiB every time.
    pub fn compress_with(
        header: ChunkHeader,
        raw: &[u8],
        zstd: &mut zstd::bulk::Compressor<'_>,
    ) -> std::io::Result<SealedChunk> {
        let stored = zstd.compress(raw)?;
        let frame =
            FrameHeader::for_content(FrameKind::RecordChunk, Compression::Zstd, raw, &stored);
        Ok(SealedChunk {
            header,
            frame,
            stored,
        })
    }

    /// The chunk sealed (§15): its keyed content ID, its stored bytes encrypted. `raw` is its
    /// content, as given to [`SealedChunk::compress_with`] or [`SealedChunk::uncompressed`].
    pub fn sealed(self, raw: &[u8], sealer: &super::crypt::Sealer) -> SealedChunk {
        let (frame, stored) = sealer.seal_frame(
            FrameKind::RecordChunk,
            self.frame.compression,
            raw,
            &self.stored,
        );
        SealedChunk {
            header: self.header,
            frame,
            stored,
        }
    }

    /// A chunk stored as it is (compression 0): no CPU spent beyond hashing its content.
    pub fn uncompressed(header: ChunkHeader, raw: Vec<u8>) -> SealedChunk {
        let frame = FrameHeader::for_content(FrameKind::RecordChunk, Compression::None, &raw, &raw);
        SealedChunk {
            header,
            frame,
            stored: raw,
        }
    }
}

impl ChunkHeader {
    /// Decodes the header at the start of a chunk's raw content; returns it and the position of
    /// the first record. `base` is the offset errors name for `raw[0]`.
    pub fn decode(raw: &[u8], base: u64) -> Result<(ChunkHeader, usize), FormatError> {
        let mut c = Cursor::new(raw, base, "chunk header");
        let tlen = c.u16()? as usize;
        if tlen == 0 || tlen > MAX_TOPIC_LEN {
            return Err(c.corrupt(base, format!("topic name length {tlen} is not in 1..=249")));
        }
        let topic = std::str::from_utf8(c.take(tlen)?)
            .map_err(|_| c.corrupt(base + 2, "topic name is not UTF-8"))?
            .to_string();
        let partition = c.i32()?;
        let record_count = c.u32()?;
        let first_offset = c.i64()?;
        let last_offset = c.i64()?;
        let covers_from = c.i64()?;
        let covers_to = c.i64()?;
        let min_timestamp = c.i64()?;
        let max_timestamp = c.i64()?;
        let h = ChunkHeader {
            topic,
            partition,
            record_count,
            first_offset,
            last_offset,
            covers_from,
            covers_to,
            min_timestamp,
            max_timestamp,
        };
        if partition < 0 {
            return Err(c.corrupt(
                base + 2 + tlen as u64,
                format!("negative partition {partition}"),
            ));
        }
        if record_count == 0 {
            return Err(c.corrupt(base, "chunk with no records"));
        }
        if last_offset < first_offset
            || ((last_offset as i128 - first_offset as i128) < record_count as i128 - 1)
        {
            return Err(c.corrupt(
                base,
                format!(
                    "offset range {first_offset}..={last_offset} cannot hold {record_count} records"
                ),
            ));
        }
        if covers_from > first_offset || covers_to <= last_offset {
            return Err(c.corrupt(
                base,
                format!(
                    "coverage {covers_from}..{covers_to} does not contain the offsets {first_offset}..={last_offset}"
                ),
            ));
        }
        if max_timestamp < min_timestamp {
            return Err(c.corrupt(
                base,
                format!("min timestamp {min_timestamp} > max timestamp {max_timestamp}"),
            ));
        }
        // Each record takes at least 6 bytes: a count beyond that is corrupt, whatever follows.
        if record_count as u64 > c.remaining() as u64 / 6 {
            return Err(c.corrupt(
                base,
                format!(
                    "record count {record_count} does not fit in {} bytes",
                    c.remaining()
                ),
            ));
        }
        Ok((h, c.pos()))
    }
}

/// A record located by byte ranges in the chunk's raw content rather than borrowed from it, so
/// the caller may change those bytes (restore rewrites schema IDs in place) before reading the
/// record with [`RecordAt::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAt {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    headers: Range<usize>,
    header_count: u64,
}

impl RecordAt {
    /// The record, over the (possibly changed) chunk bytes it was located in.
    pub fn record<'a>(&self, raw: &'a [u8]) -> Record<'a> {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type,
            key: self.key.clone().map(|r| &raw[r]),
            value: self.value.clone().map(|r| &raw[r]),
            headers: Headers {
                count: self.header_count,
                bytes: &raw[self.headers.clone()],
            },
        }
    }
}

impl RecordAt {
    /// Where the values of the headers named any of `names` lie in `raw` (the bytes the record
    /// was located in), in header order, in one pass; null values left out. Restore rewrites
    /// schema IDs there.
    pub fn header_values(&self, raw: &[u8], names: &[&str]) -> Vec<Range<usize>> {
        let start = self.headers.start;
        let mut c = Cursor::new(&raw[self.headers.clone()], 0, "record header");
        let mut out = Vec::new();
        for _ in 0..self.header_count {
            // Validated when the record was decoded, so these cannot fail.
            let Ok(n) = c.varint() else { break };
            let Ok(len) = len_usize(&c, n) else { break };
            let Ok(this) = c.take(len) else { break };
            let matches = names.iter().any(|n| n.as_bytes() == this);
            let Ok(range) = read_nullable_range(&mut c) else {
                break;
            };
            if let Some(r) = range.filter(|_| matches) {
                out.push(start + r.start..start + r.end);
            }
        }
        out
    }
}

fn read_nullable_range(c: &mut Cursor<'_>) -> Result<Option<Range<usize>>, FormatError> {
    match c.varint()? {
        0 => Ok(None),
        n => {
            let len = len_usize(c, n - 1)?;
            let start = c.pos();
            c.take(len)?;
            Ok(Some(start..start + len))
        }
    }
}

/// Walks the records of a chunk's raw content, checking each against the chunk header, and
/// yields where each lies. It borrows the bytes only for each step.
#[derive(Debug, Clone)]
pub struct RecordPositions {
    header: ChunkHeader,
    base: u64,
    pos: usize,
    left: u32,
    prev_offset: i64,
    prev_ts: i64,
    index: u32,
    failed: bool,
}

impl RecordPositions {
    /// `base` is the offset errors name for `raw[0]`.
    pub fn new(raw: &[u8], base: u64) -> Result<Self, FormatError> {
        let (header, start) = ChunkHeader::decode(raw, base)?;
        Ok(RecordPositions {
            left: header.record_count,
            prev_offset: header.first_offset,
            prev_ts: 0,
            header,
            base,
            pos: start,
            index: 0,
            failed: false,
        })
    }

    pub fn header(&self) -> &ChunkHeader {
        &self.header
    }

    /// The next record of `raw`, which must be the bytes `new` was given (their values may have
    /// changed, their framing may not).
    pub fn next_in(&mut self, raw: &[u8]) -> Option<Result<RecordAt, FormatError>> {
        if self.failed {
            return None;
        }
        let mut c = Cursor::new(raw, self.base, "record");
        if let Err(e) = c.take(self.pos) {
            self.failed = true;
            return Some(Err(e));
        }
        if self.left == 0 {
            self.failed = true;
            if c.remaining() != 0 {
                return Some(Err(c.corrupt(
                    c.offset(),
                    format!("{} bytes after the last record", c.remaining()),
                )));
            }
            if self.prev_offset != self.header.last_offset {
                return Some(Err(c.corrupt(
                    c.offset(),
                    format!(
                        "last record has offset {}, the header says {}",
                        self.prev_offset, self.header.last_offset
                    ),
                )));
            }
            return None;
        }
        self.left -= 1;
        let r = self.decode(&mut c);
        match &r {
            Ok(_) => self.pos = c.pos(),
            Err(_) => self.failed = true,
        }
        Some(r)
    }

    fn decode(&mut self, c: &mut Cursor<'_>) -> Result<RecordAt, FormatError> {
        let at = c.offset();
        let delta = c.varint()?;
        if self.index == 0 && delta != 0 {
            return Err(c.corrupt(
                at,
                format!("first record's offset delta is {delta}, must be 0"),
            ));
        }
        if self.index > 0 && delta == 0 {
            return Err(c.corrupt(
                at,
                format!("record {} repeats offset {}", self.index, self.prev_offset),
            ));
        }
        let offset = self.prev_offset as i128 + delta as i128;
        if offset > self.header.last_offset as i128 {
            return Err(c.corrupt(
                at,
                format!(
                    "record {} has offset {offset}, past the chunk's last offset {}",
                    self.index, self.header.last_offset
                ),
            ));
        }
        let offset = offset as i64;
        let timestamp_type = match c.u8()? {
            0 => TimestampType::NotAvailable,
            1 => TimestampType::CreateTime,
            2 => TimestampType::LogAppendTime,
            t => {
                return Err(c.corrupt(
                    at,
                    format!("record {} has unknown timestamp type {t}", self.index),
                ));
            }
        };
        let timestamp = self.prev_ts.wrapping_add(unzigzag(c.varint()?));
        if timestamp < self.header.min_timestamp || timestamp > self.header.max_timestamp {
            return Err(c.corrupt(
                at,
                format!(
                    "record {} has timestamp {timestamp} outside the chunk's range",
                    self.index
                ),
            ));
        }
        let key = read_nullable_range(c)?;
        let value = read_nullable_range(c)?;
        let header_count = c.varint()?;
        let hstart = c.pos();
        for _ in 0..header_count {
            read_header(c)?;
        }
        self.prev_offset = offset;
        self.prev_ts = timestamp;
        self.index += 1;
        Ok(RecordAt {
            offset,
            timestamp,
            timestamp_type,
            key,
            value,
            headers: hstart..c.pos(),
            header_count,
        })
    }
}

/// Iterates over the records of a chunk's raw content, checking each against the chunk header.
pub struct ChunkRecords<'a> {
    raw: &'a [u8],
    positions: RecordPositions,
}

impl<'a> ChunkRecords<'a> {
    /// `base` is the offset errors name for `raw[0]` (e.g. 0, with the chunk ID given by the caller).
    pub fn new(raw: &'a [u8], base: u64) -> Result<Self, FormatError> {
        Ok(ChunkRecords {
            raw,
            positions: RecordPositions::new(raw, base)?,
        })
    }

    pub fn header(&self) -> &ChunkHeader {
        self.positions.header()
    }
}

impl<'a> Iterator for ChunkRecords<'a> {
    type Item = Result<Record<'a>, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.raw;
        self.positions
            .next_in(raw)
            .map(|r| r.map(|at| at.record(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(enc: &mut ChunkEncoder, from: i64, n: i64) {
        for o in from..from + n {
            let value = format!("value {o}").repeat(8);
            enc.push(
                o,
                1_000 + o,
                TimestampType::CreateTime,
                Some(b"k"),
                Some(value.as_bytes()),
                [("h", Some(&b"v"[..]))],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_chunk_moved_into_a_spare_buffer_encodes_the_same() {
        let (mut plain, mut pooled) = (
            ChunkEncoder::new("t", 3).unwrap(),
            ChunkEncoder::new("t", 3).unwrap(),
        );
        fill(&mut plain, 10, 50);
        fill(&mut pooled, 10, 50);
        plain.reserve(1 << 20);
        // A spare buffer with old content and room: the chunk moves into it.
        let mut spare = Vec::with_capacity(2 << 20);
        spare.extend_from_slice(b"an earlier chunk's bytes");
        let at = spare.as_ptr();
        pooled.reserve_in(1 << 20, || Some(spare));
        assert_eq!(
            pooled.records.as_ptr(),
            at,
            "the spare buffer holds the chunk"
        );
        // Room enough already: no spare is taken.
        pooled.reserve_in(1 << 20, || panic!("a spare taken without need"));
        // A spare too small is not used.
        let mut other = ChunkEncoder::new("t", 3).unwrap();
        fill(&mut other, 10, 50);
        other.reserve_in(1 << 20, || Some(Vec::with_capacity(16)));
        assert!(other.records.capacity() >= header_len("t") + (1 << 20));
        fill(&mut plain, 60, 50);
        fill(&mut pooled, 60, 50);
        fill(&mut other, 60, 50);
        let (a, b, c) = (
            plain.finish(0..110).unwrap(),
            pooled.finish(0..110).unwrap(),
            other.finish(0..110).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
}
