//! What a restore reads: one archive, or a chain (§16) read as one archive as of its newest
//! member, without writing a consolidated copy. The newest member gives the documents (its
//! manifest with each partition's range and chunk counts the chain's); each partition's chunks
//! come from the archive its lineage starts in up to the newest, read where they lie; a schema
//! text from the newest archive of the chain that stores it.

use std::collections::BTreeMap;
use std::ops::Range;

use super::chain::{Chain, Mender, Span};
use super::index::ChunkEntry;
use super::reader::Contents;
use super::verify::{self, Problem};
use super::{Archive, ArchiveError};
use crate::format::frame::ContentDecoder;
use crate::format::manifest::Manifest;
use crate::format::{ArchiveId, Hash};

/// One archive, or a chain read as one.
pub struct View {
    /// Base first; the last is the newest (the only one for a single archive).
    archives: Vec<Archive>,
    /// The newest archive's manifest; for a chain with each partition's range, counts and gaps
    /// the chain's.
    manifest: Manifest,
    /// A chain's partitions, by topic and partition; empty for a single archive.
    tiles: BTreeMap<(String, i32), Vec<Located>>,
}

/// A chunk and where it lies.
#[derive(Debug, Clone)]
pub struct Located {
    /// Index of the archive holding it, base first.
    pub member: usize,
    /// Its index entry in that archive.
    pub entry: ChunkEntry,
    /// The source offsets it accounts for in the view (wider than its own coverage where a
    /// chain member's range held no record).
    pub covers: Range<i64>,
    /// In a set: its records below this offset are another chain's too (an overlap) and are
    /// left out; `records` counts those kept.
    pub from_offset: Option<i64>,
    pub records: u32,
}

impl View {
    pub fn single(a: Archive) -> View {
        View {
            manifest: a.manifest().clone(),
            archives: vec![a],
            tiles: BTreeMap::new(),
        }
    }

    /// A whole, checked chain read as one archive. The caller refuses a broken chain first.
    pub fn chain(chain: Chain) -> Result<View, ArchiveError> {
        let spans: BTreeMap<(&str, i32), &Span> = chain
            .report
            .partitions
            .iter()
            .map(|s| ((s.topic.as_str(), s.partition), s))
            .collect();
        let newest = chain
            .archives
            .last()
            .ok_or_else(|| ArchiveError::Chain("no archive among the files".into()))?;
        let mut manifest = newest.manifest().clone();
        let mut tiles = BTreeMap::new();
        for t in &mut manifest.topics {
            for p in &mut t.partitions {
                let Some(s) = spans.get(&(t.name.as_str(), p.partition)) else {
                    continue;
                };
                let located: Vec<Located> = chain.tiles(s)?.into_iter().map(Located::of).collect();
                widen(p, s, &located);
                tiles.insert((t.name.clone(), p.partition), located);
            }
        }
        manifest.parent = None;
        Ok(View {
            archives: chain.archives,
            manifest,
            tiles,
        })
    }

    /// A checked set (§16: the chains of a continuous group's processes) read as one archive as
    /// of its newest archive: that archive's documents; the topics its `kafka-topics` document
    /// names, each partition from every archive of the set that holds a piece of it, in offset
    /// order. The caller refuses a set with gaps, overlaps or problems first.
    pub fn set(set: super::set::Set) -> Result<View, ArchiveError> {
        let mut order: Vec<(usize, usize)> = Vec::new();
        for (ci, c) in set.chains.iter().enumerate() {
            order.extend((0..c.archives.len()).map(|ai| (ci, ai)));
        }
        let created =
            |&(ci, ai): &(usize, usize)| set.chains[ci].archives[ai].manifest().created_at_ms;
        order.sort_by_key(created);
        let index: BTreeMap<(usize, usize), usize> =
            order.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let newest_key = *order
            .last()
            .ok_or_else(|| ArchiveError::Chain("no archive among the set's chains".into()))?;
        let newest = &set.chains[newest_key.0].archives[newest_key.1];
        let names: std::collections::BTreeSet<String> = newest
            .document::<crate::format::kafka_topics::KafkaTopicsDoc>(
                crate::format::kafka_topics::KIND,
            )?
            .map(|d| d.topics.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        let mut manifest = newest.manifest().clone();
        manifest.parent = None;
        manifest.topics = Vec::new();
        let mut tiles = BTreeMap::new();
        for sp in set
            .report
            .partitions
            .iter()
            .filter(|p| names.contains(&p.topic))
        {
            let mut m = Mender::new(sp.from, &sp.lost);
            // Each offset once: records an earlier piece holds (an overlap) are left out.
            let (mut at, mut trim) = (sp.from, BTreeMap::new());
            for piece in sp.pieces.iter().filter(|p| p.end > p.start) {
                let a = &set.chains[piece.archive.0].archives[piece.archive.1];
                for c in a.chunks_of(&sp.topic, sp.partition)? {
                    if c.last_offset < at {
                        continue;
                    }
                    let from = c.covers_from.max(at);
                    if c.first_offset < at {
                        trim.insert((index[&piece.archive], c.frame_offset), at);
                    }
                    m.push(index[&piece.archive], c, from);
                }
                at = at.max(piece.end);
            }
            let last = sp.pieces.iter().max_by_key(|p| (p.end, p.created_at_ms));
            let complete = last.is_none_or(|p| p.complete);
            let mut located: Vec<Located> = m
                .finish(complete, sp.to)
                .into_iter()
                .map(Located::of)
                .collect();
            for c in &mut located {
                if let Some(&from) = trim.get(&(c.member, c.entry.frame_offset)) {
                    let a = &set.chains[order[c.member].0].archives[order[c.member].1];
                    c.records = kept(a, &c.entry, from)?;
                    c.from_offset = Some(from);
                }
            }
            let mut entry = last
                .and_then(|p| {
                    set.chains[p.archive.0].archives[p.archive.1]
                        .manifest()
                        .partition(&sp.topic, sp.partition)
                        .cloned()
                })
                .unwrap_or_default();
            entry.partition = sp.partition;
            entry.start_offset = Some(sp.from);
            entry.end_offset = Some(sp.to);
            entry.complete = complete;
            entry.gaps = sp.lost.clone();
            counts(&mut entry, &located);
            match manifest.topics.iter_mut().find(|t| t.name == sp.topic) {
                Some(t) => t.partitions.push(entry),
                None => manifest.topics.push(crate::format::manifest::TopicEntry {
                    name: sp.topic.clone(),
                    partitions: vec![entry],
                }),
            }
            tiles.insert((sp.topic.clone(), sp.partition), located);
        }
        let mut slots: Vec<Option<Archive>> = Vec::new();
        let mut chains = set.chains;
        let mut taken: BTreeMap<(usize, usize), Archive> = BTreeMap::new();
        for (ci, c) in chains.iter_mut().enumerate() {
            for (ai, a) in std::mem::take(&mut c.archives).into_iter().enumerate() {
                taken.insert((ci, ai), a);
            }
        }
        for k in &order {
            slots.push(taken.remove(k));
        }
        Ok(View {
            archives: slots.into_iter().map(|a| a.expect("each once")).collect(),
            manifest,
            tiles,
        })
    }

    /// The newest archive: the one whose documents and snapshot the view restores.
    pub fn newest(&self) -> &Archive {
        self.archives.last().expect("a view holds an archive")
    }

    /// Every archive, base first.
    pub fn archives(&self) -> &[Archive] {
        &self.archives
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn path(&self) -> &std::path::Path {
        self.newest().path()
    }

    pub fn id(&self) -> Option<ArchiveId> {
        self.newest().id()
    }

    pub fn root(&self) -> Hash {
        self.newest().root()
    }

    pub fn decoder(&self) -> Result<ContentDecoder, ArchiveError> {
        self.newest().decoder()
    }

    /// The newest archive's document of `kind`.
    pub fn document<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Option<T>, ArchiveError> {
        self.newest().document(kind)
    }

    /// A partition's chunks in offset order, each with where it lies.
    pub fn chunks_of(&self, topic: &str, partition: i32) -> Result<Vec<Located>, ArchiveError> {
        if self.tiles.is_empty() {
            let a = self.newest();
            return Ok(a
                .chunks_of(topic, partition)?
                .into_iter()
                .map(|c| Located {
                    member: self.archives.len() - 1,
                    covers: c.covers_from..c.covers_to,
                    from_offset: None,
                    records: c.record_count,
                    entry: c,
                })
                .collect());
        }
        Ok(self
            .tiles
            .get(&(topic.to_string(), partition))
            .cloned()
            .unwrap_or_default())
    }

    /// Decompresses a chunk into `buf` and checks it (see [`Archive::read_chunk`]); a chunk
    /// whose first records another chain holds too comes without them (encoded again).
    pub fn read_chunk(
        &self,
        c: &Located,
        dec: &mut ContentDecoder,
        buf: &mut Vec<u8>,
    ) -> Result<(), ArchiveError> {
        let a = &self.archives[c.member];
        a.read_chunk(&c.entry, dec, buf)?;
        if let Some(from) = c.from_offset {
            *buf = without_below(a, &c.entry, buf, from)?;
        }
        Ok(())
    }

    /// Every chunk checked as a full verification checks it, each in its own archive.
    pub fn check_chunks(&self, chunks: &[Located], threads: usize) -> Vec<(usize, Problem)> {
        let mut out = Vec::new();
        for (i, a) in self.archives.iter().enumerate() {
            let mine: Vec<ChunkEntry> = chunks
                .iter()
                .filter(|c| c.member == i)
                .map(|c| c.entry.clone())
                .collect();
            if !mine.is_empty() {
                out.extend(
                    verify::check_chunks(a, &mine, threads)
                        .into_iter()
                        .map(|p| (i, p)),
                );
            }
        }
        out
    }
}

impl Located {
    fn of(t: super::chain::Tile) -> Located {
        Located {
            member: t.member,
            records: t.chunk.record_count,
            entry: t.chunk,
            covers: t.covers,
            from_offset: None,
        }
    }
}

/// How many of a chunk's records are at or after `from`.
fn kept(a: &Archive, e: &ChunkEntry, from: i64) -> Result<u32, ArchiveError> {
    let mut buf = Vec::new();
    a.read_chunk(e, &mut a.decoder()?, &mut buf)?;
    let format = |e| ArchiveError::format(a.path(), "")(e);
    let mut n = 0;
    for r in crate::format::chunk::ChunkRecords::new(&buf, 0).map_err(format)? {
        n += u32::from(r.map_err(format)?.offset >= from);
    }
    Ok(n)
}

/// A chunk's content with its records below `from` left out, encoded again (its coverage from
/// `from`).
fn without_below(
    a: &Archive,
    e: &ChunkEntry,
    raw: &[u8],
    from: i64,
) -> Result<Vec<u8>, ArchiveError> {
    Ok(super::reader::encode_again(a, e, raw, from, from.max(e.covers_from)..e.covers_to)?.1)
}

/// Content (schema texts, documents) from the newest archive of the view that stores it.
impl Contents for View {
    fn content(&self, id: &Hash) -> Result<Vec<u8>, ArchiveError> {
        let mut first = None;
        for a in self.archives.iter().rev() {
            match a.read_content(id) {
                Err(e @ ArchiveError::Missing { .. }) => {
                    first.get_or_insert(e);
                }
                other => return other,
            }
        }
        Err(first.expect("a view holds an archive"))
    }
}

/// A partition entry of the newest member made the chain's: its range from the lineage's start,
/// its gaps the chain's losses, its counts its chunks'.
fn widen(p: &mut crate::format::manifest::PartitionEntry, s: &Span, chunks: &[Located]) {
    p.start_offset = s.ranges.first().map(|r| r.1);
    p.end_offset = Some(s.end);
    p.complete = s.complete;
    p.gaps = s.gaps.clone();
    counts(p, chunks);
}

/// A partition entry's counts, from the chunks the view reads of it.
fn counts(p: &mut crate::format::manifest::PartitionEntry, chunks: &[Located]) {
    p.records = chunks.iter().map(|c| u64::from(c.records)).sum();
    p.chunks = chunks.len() as u64;
    p.raw_bytes = chunks.iter().map(|c| c.entry.raw_len).sum();
    p.first_offset = chunks.first().map(|c| c.entry.first_offset);
    p.last_offset = chunks.last().map(|c| c.entry.last_offset);
    p.min_timestamp = chunks.iter().map(|c| c.entry.min_timestamp).min();
    p.max_timestamp = chunks.iter().map(|c| c.entry.max_timestamp).max();
    p.lineage = None;
}
