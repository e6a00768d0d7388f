//! A *set* (spec §16): the chains the processes of one continuous group wrote, one each, read
//! together. Each partition's offsets must be covered exactly once from the first archive that
//! holds it on, across the chains: every break is a gap (records lost to retention between two
//! holders, when the later one names it; else records missing from the set) and every offset
//! held twice an overlap, both named with their offsets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::chain::{Chain, ChainReport, open_chain};
use super::verify::VerifyLevel;
use super::{Archive, ArchiveError};
use crate::format::manifest::{ChangeKind, OffsetRange};

/// One archive's range of a partition.
#[derive(Debug, Clone, Serialize)]
pub struct Piece {
    pub path: PathBuf,
    /// Which chain of the set (in the order given).
    pub chain: usize,
    pub start: i64,
    /// Where its records end: its end when complete, else its chunks' coverage.
    pub end: i64,
    pub records: u64,
    pub complete: bool,
    #[serde(skip)]
    pub(crate) created_at_ms: i64,
    #[serde(skip)]
    pub(crate) archive: (usize, usize),
}

#[derive(Debug, Clone, Serialize)]
pub struct SetPartition {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    pub pieces: Vec<Piece>,
    /// Offsets lost to retention between holders, named by the later one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<OffsetRange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    /// Whole: every chain intact and linked, every partition covered once, nothing lost.
    pub ok: bool,
    pub chains: Vec<ChainReport>,
    pub partitions: Vec<SetPartition>,
    pub lost: Vec<String>,
    pub gaps: Vec<String>,
    pub overlaps: Vec<String>,
    pub problems: Vec<String>,
    /// Folders given that hold no archive (a process that finished no member).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub empty: Vec<PathBuf>,
}

/// A set opened: its chains (in the order given) and what checking it found.
pub struct Set {
    pub chains: Vec<Chain>,
    pub report: SetReport,
}

/// Opens and checks the set whose chains the folders (or files) hold, one chain each.
pub fn open_set(chains: &[PathBuf], level: VerifyLevel) -> Result<Set, ArchiveError> {
    let (mut opened, mut given, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    for c in chains {
        let chain = open_chain(std::slice::from_ref(c), level)?;
        // A process that never finished a member leaves a folder without an archive (or with
        // its unfinished member only): it holds nothing of the set.
        if chain.archives.is_empty() && chain.report.problems.len() == 1 {
            empty.push(c.clone());
            continue;
        }
        opened.push(chain);
        given.push(c);
    }
    let mut problems = Vec::new();
    for (c, chain) in given.iter().zip(&opened) {
        problems.extend(
            chain
                .report
                .problems
                .iter()
                .map(|p| format!("chain {}: {p}", c.display())),
        );
    }
    let mut partitions = Vec::new();
    let (mut lost, mut gaps, mut overlaps) = (Vec::new(), Vec::new(), Vec::new());
    for ((topic, partition), pieces) in pieces(&opened)? {
        let p = tile(&opened, topic, partition, pieces, &mut gaps, &mut overlaps);
        lost.extend(
            p.lost
                .iter()
                .map(|g| format!("{}/{}: offsets {}..{}", p.topic, p.partition, g.from, g.to)),
        );
        partitions.push(p);
    }
    let report = SetReport {
        ok: problems.is_empty() && lost.is_empty() && gaps.is_empty() && overlaps.is_empty(),
        chains: opened.iter().map(|c| c.report.clone()).collect(),
        partitions,
        lost,
        gaps,
        overlaps,
        problems,
        empty,
    };
    Ok(Set {
        chains: opened,
        report,
    })
}

type Key = (String, i32);

/// Every archive's range of every partition, by partition.
fn pieces(chains: &[Chain]) -> Result<BTreeMap<Key, Vec<Piece>>, ArchiveError> {
    let mut out: BTreeMap<Key, Vec<Piece>> = BTreeMap::new();
    for (ci, chain) in chains.iter().enumerate() {
        for (ai, a) in chain.archives.iter().enumerate() {
            let m = a.manifest();
            for t in &m.topics {
                for p in &t.partitions {
                    let start = p.start_offset.unwrap_or(0);
                    let end = covered(a, &t.name, p)?;
                    out.entry((t.name.clone(), p.partition))
                        .or_default()
                        .push(Piece {
                            path: a.path().to_path_buf(),
                            chain: ci,
                            start,
                            end,
                            records: p.records,
                            complete: p.complete,
                            created_at_ms: m.created_at_ms,
                            archive: (ci, ai),
                        });
                }
            }
        }
    }
    Ok(out)
}

fn covered(
    a: &Archive,
    topic: &str,
    p: &crate::format::manifest::PartitionEntry,
) -> Result<i64, ArchiveError> {
    let start = p.start_offset.unwrap_or(0);
    match (p.complete, p.end_offset) {
        (true, Some(end)) => Ok(end),
        _ => Ok(a
            .chunks_of(topic, p.partition)?
            .iter()
            .map(|c| c.covers_to)
            .max()
            .unwrap_or(start)),
    }
}

/// One partition's pieces in offset order, from its newest lineage: each break a loss the later
/// archive names (a retention gap) or a gap, each offset held twice an overlap.
fn tile(
    chains: &[Chain],
    topic: String,
    partition: i32,
    mut pieces: Vec<Piece>,
    gaps: &mut Vec<String>,
    overlaps: &mut Vec<String>,
) -> SetPartition {
    let archive = |p: &Piece| &chains[p.archive.0].archives[p.archive.1];
    // A log that restarted (a new lineage) begins the partition again.
    let restarted = pieces
        .iter()
        .filter(|p| {
            archive(p)
                .manifest()
                .partition(&topic, partition)
                .and_then(|e| e.lineage.as_ref())
                .is_some_and(|l| l.restarted)
        })
        .map(|p| p.created_at_ms)
        .max();
    if let Some(at) = restarted {
        pieces.retain(|p| p.created_at_ms >= at);
    }
    pieces.sort_by_key(|p| (p.start, p.end, p.created_at_ms));
    let from = pieces.first().map_or(0, |p| p.start);
    let (mut at, mut lost) = (from, Vec::new());
    for p in pieces.iter().filter(|p| p.end > p.start) {
        if p.start > at {
            let named = archive(p).manifest().changes.iter().any(|c| {
                c.kind == ChangeKind::RetentionGap
                    && c.topic == topic
                    && c.partition == Some(partition)
                    && c.from.is_some_and(|f| f <= at)
                    && c.to == Some(p.start)
            });
            if named {
                lost.push(OffsetRange {
                    from: at,
                    to: p.start,
                });
            } else {
                gaps.push(format!(
                    "{topic}/{partition}: offsets {at}..{} are in no archive of the set (the next piece: {})",
                    p.start,
                    p.path.display()
                ));
            }
        } else if p.start < at {
            overlaps.push(format!(
                "{topic}/{partition}: offsets {}..{} are held twice ({} and an archive before it)",
                p.start,
                at.min(p.end),
                p.path.display()
            ));
        }
        at = at.max(p.end);
    }
    SetPartition {
        topic,
        partition,
        from,
        to: at,
        pieces,
        lost,
    }
}
