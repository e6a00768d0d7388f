//! `kar cat`: an archive's records, decoded offline with the schemas it holds, without a cluster.
//!
//! The index chooses what is read: a partition's chunks come from its `chunks` table, an offset
//! range keeps the chunks whose offsets meet it, a time range starts at the chunk the `time` table
//! names and keeps the chunks whose timestamps meet it; only those chunks are decompressed (each
//! checked against its content ID as it is). Output is streamed a record at a time, so memory stays
//! at a chunk whatever the archive's size.

pub mod record;

use std::io::Write;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

use regex::Regex;
use serde::Serialize;

use crate::archive::crypt::Unlock;
use crate::archive::index::ChunkEntry;
use crate::archive::{Archive, ArchiveError};
use crate::format::chunk::{ChunkRecords, Record};
use crate::registry::wire;
use crate::schema::{Catalog, IdSource};
use record::{Field, id_source};

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatFormat {
    /// One JSON object a line.
    #[default]
    JsonLines,
    /// One JSON array of the objects.
    Json,
    /// Each value's bytes as they are, then a newline (a null value: an empty line).
    Raw,
}

/// What to print. Every filter narrows; none set prints every record.
#[derive(Debug, Clone, Default)]
pub struct CatOptions {
    pub archive: PathBuf,
    pub unlock: Option<Arc<Unlock>>,
    pub topics: Option<Regex>,
    pub partition: Option<i32>,
    /// Offsets, both ends included.
    pub offsets: Option<RangeInclusive<i64>>,
    /// Timestamps (ms): records at or after `from`, before `until`.
    pub from_time: Option<i64>,
    pub until_time: Option<i64>,
    /// Records whose key holds these bytes, as stored or as decoded JSON.
    pub key_contains: Option<String>,
    /// Records whose key or value carries this schema ID.
    pub schema_id: Option<u32>,
    pub format: CatFormat,
    pub limit: Option<u64>,
}

/// What a cat read and printed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatReport {
    pub records_printed: u64,
    /// Records of the chunks read, whether they passed the filters or not.
    pub records_scanned: u64,
    pub chunks_read: u64,
    /// Chunks of the partitions the topic and partition filters chose.
    pub chunks_in_partitions: u64,
    /// Keys and values that carry a schema ID (prefix or header) and did not decode.
    pub fields_not_decoded: u64,
    /// Whether the reader closed the output before the end (`kar cat ... | head`).
    pub output_closed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{0}")]
    Invalid(String),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

/// Prints the records `opts` choose to `out`.
pub fn cat(opts: &CatOptions, out: &mut dyn Write) -> Result<CatReport, CatError> {
    let archive = Archive::open_with(&opts.archive, opts.unlock.as_deref())?;
    let snapshot = crate::registry::snapshot::read_from_archive(&archive)?;
    let mut catalog = Catalog::of(snapshot.as_ref(), &archive);
    if let Some(id) = opts.schema_id
        && archive.schema_blob(id)?.is_none()
    {
        return Err(CatError::Invalid(format!(
            "schema ID {id} is not in {} (its index's schema table has no such ID)",
            opts.archive.display()
        )));
    }
    let mut printer = Printer::new(out, opts.format);
    let mut report = CatReport::default();
    let result = each_partition(
        &archive,
        opts,
        &mut report,
        |topic, partition, chunks, report| {
            read_chunks(
                &archive,
                opts,
                &mut catalog,
                &mut printer,
                (topic, partition),
                chunks,
                report,
            )
        },
    );
    match result.and_then(|()| printer.finish().map_err(CatError::Output)) {
        Err(CatError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            report.output_closed = true;
            Ok(report)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(report),
    }
}

/// Calls `f` with the chunks of each chosen partition that can hold a chosen record, in topic,
/// partition and offset order, until it says stop (`Ok(false)`).
fn each_partition(
    a: &Archive,
    opts: &CatOptions,
    report: &mut CatReport,
    mut f: impl FnMut(&str, i32, Vec<ChunkEntry>, &mut CatReport) -> Result<bool, CatError>,
) -> Result<(), CatError> {
    for t in &a.manifest().topics {
        if opts.topics.as_ref().is_some_and(|re| !re.is_match(&t.name)) {
            continue;
        }
        for p in &t.partitions {
            if opts.partition.is_some_and(|n| n != p.partition) {
                continue;
            }
            let all = a.chunks_of(&t.name, p.partition)?;
            report.chunks_in_partitions += all.len() as u64;
            let chosen = choose_chunks(a, opts, &t.name, p.partition, all)?;
            if !f(&t.name, p.partition, chosen, report)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The chunks that can hold a record in the offset and time ranges, from the index alone.
fn choose_chunks(
    a: &Archive,
    opts: &CatOptions,
    topic: &str,
    partition: i32,
    mut chunks: Vec<ChunkEntry>,
) -> Result<Vec<ChunkEntry>, CatError> {
    if let Some(r) = &opts.offsets {
        chunks.retain(|c| c.last_offset >= *r.start() && c.first_offset <= *r.end());
    }
    if let Some(from) = opts.from_time {
        // The `time` table names the first chunk holding a record at or after `from`, also when
        // timestamps are out of order; no chunk before it can.
        match a.first_chunk_at_or_after(topic, partition, from)? {
            Some(first) => chunks.retain(|c| c.first_offset >= first && c.max_timestamp >= from),
            None => chunks.clear(),
        }
    }
    if let Some(until) = opts.until_time {
        chunks.retain(|c| c.min_timestamp < until);
    }
    Ok(chunks)
}

fn read_chunks(
    a: &Archive,
    opts: &CatOptions,
    catalog: &mut Catalog<'_>,
    printer: &mut Printer<'_>,
    (topic, partition): (&str, i32),
    chunks: Vec<ChunkEntry>,
    report: &mut CatReport,
) -> Result<bool, CatError> {
    let mut dec = a.decoder()?;
    let mut buf = Vec::new();
    for c in chunks {
        a.read_chunk(&c, &mut dec, &mut buf)?;
        report.chunks_read += 1;
        let ctx = format!(
            " (record chunk of {topic}/{partition} offsets {}..={}, frame at offset {})",
            c.first_offset, c.last_offset, c.frame_offset
        );
        let records =
            ChunkRecords::new(&buf, 0).map_err(ArchiveError::format(a.path(), ctx.clone()))?;
        for r in records {
            let r = r.map_err(ArchiveError::format(a.path(), ctx.clone()))?;
            report.records_scanned += 1;
            if !wanted(opts, catalog, topic, &r) {
                continue;
            }
            if opts.limit.is_some_and(|n| report.records_printed >= n) {
                return Ok(false);
            }
            let failed = printer.print(catalog, topic, partition, &r)?;
            report.fields_not_decoded += u64::from(failed);
            report.records_printed += 1;
        }
    }
    Ok(opts.limit.is_none_or(|n| report.records_printed < n))
}

fn wanted(opts: &CatOptions, catalog: &mut Catalog<'_>, topic: &str, r: &Record<'_>) -> bool {
    if opts
        .offsets
        .as_ref()
        .is_some_and(|o| !o.contains(&r.offset))
        || opts.from_time.is_some_and(|t| r.timestamp < t)
        || opts.until_time.is_some_and(|t| r.timestamp >= t)
    {
        return false;
    }
    if let Some(id) = opts.schema_id
        && ![Field::Key, Field::Value]
            .into_iter()
            .any(|f| schema_id_of(catalog, r, f) == Some(id))
    {
        return false;
    }
    match &opts.key_contains {
        None => true,
        Some(needle) => key_holds(catalog, topic, r, needle),
    }
}

/// The schema ID a record's field carries, in its prefix or its schema-ID header.
fn schema_id_of(catalog: &Catalog<'_>, r: &Record<'_>, f: Field) -> Option<u32> {
    match id_source(r, f) {
        IdSource::Header(h) => {
            wire::schema_id(h).or_else(|| catalog.id_of_guid(&wire::schema_guid(h)?))
        }
        IdSource::Prefix => wire::schema_id(match f {
            Field::Key => r.key?,
            Field::Value => r.value?,
        }),
    }
}

/// Whether the key holds `needle`: in its bytes, or in the JSON of its decoded datum.
fn key_holds(catalog: &mut Catalog<'_>, topic: &str, r: &Record<'_>, needle: &str) -> bool {
    let Some(key) = r.key else { return false };
    if key
        .windows(needle.len().max(1))
        .any(|w| w == needle.as_bytes())
    {
        return true;
    }
    catalog
        .decode(key, id_source(r, Field::Key), &format!("{topic}-key"))
        .is_ok_and(|d| d.json.to_string().contains(needle))
}

/// Writes records in the chosen format.
struct Printer<'a> {
    out: std::io::BufWriter<&'a mut dyn Write>,
    format: CatFormat,
    first: bool,
}

impl<'a> Printer<'a> {
    fn new(out: &'a mut dyn Write, format: CatFormat) -> Self {
        Printer {
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            format,
            first: true,
        }
    }

    /// Prints a record; how many of its fields carried a schema ID and did not decode.
    fn print(
        &mut self,
        catalog: &mut Catalog<'_>,
        topic: &str,
        partition: i32,
        r: &Record<'_>,
    ) -> Result<u32, CatError> {
        let io = |e: std::io::Error| CatError::Output(e);
        if self.format == CatFormat::Raw {
            self.out
                .write_all(r.value.unwrap_or_default())
                .map_err(io)?;
            self.out.write_all(b"\n").map_err(io)?;
            return Ok(0);
        }
        let (v, failed) = record::decode(catalog, topic, partition, r);
        if self.format == CatFormat::Json {
            let sep: &[u8] = if self.first { b"[\n" } else { b",\n" };
            self.out.write_all(sep).map_err(io)?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, &v).map_err(|e| io(e.into()))?;
        if self.format == CatFormat::JsonLines {
            self.out.write_all(b"\n").map_err(io)?;
        }
        Ok(failed)
    }

    fn finish(mut self) -> std::io::Result<()> {
        if self.format == CatFormat::Json {
            self.out
                .write_all(if self.first { b"[]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()
    }
}
