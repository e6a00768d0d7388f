//! A chain of archives (spec §16): a full base, then members, each naming its parent by archive
//! ID and root. Found among the files given (or the files of the folders given), ordered from
//! the newest member down to the base, and checked: every archive verified, every link (the
//! parent is there, its root is the one the member recorded), every inherited blob stored below,
//! every partition's ranges meeting from one archive to the next, each break named with what
//! explains it (a retention gap, a restarted log, a new partition) or as a problem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::index::ChunkEntry;
use super::verify::{VerifyLevel, verify};
use super::{Archive, ArchiveError};
use crate::format::manifest::{ChainChange, ChangeKind, Manifest, OffsetRange};
use crate::format::parse_hex;

/// What checking a chain found.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Every archive intact, every link and range in order, nothing lost between members.
    pub ok: bool,
    /// The chain's archives, base first.
    pub members: Vec<Member>,
    /// Per partition of the newest member, its ranges through the chain.
    pub partitions: Vec<Span>,
    /// Records lost between members (retention), by partition: the chain is not whole.
    pub lost: Vec<String>,
    /// Partitions the newest archive holding them did not get whole (a partial backup).
    pub incomplete: Vec<String>,
    /// What is wrong: broken links, damaged archives, ranges that do not meet.
    pub problems: Vec<String>,
    /// Files given that are not archives of this chain, with why.
    pub not_in_chain: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub path: PathBuf,
    pub archive_id: String,
    pub depth: u32,
    pub created_at_ms: i64,
    pub root: String,
    pub records: u64,
    /// Its own verification's verdict (at the level asked for).
    pub intact: bool,
    pub inherited_blobs: usize,
    pub changes: Vec<ChainChange>,
}

/// One partition's ranges through the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub topic: String,
    pub partition: i32,
    /// `(depth, start, covered to, records)` of every archive that holds the partition, from the
    /// one its current lineage starts in.
    pub ranges: Vec<(u32, i64, i64, u64)>,
    /// The depth of the member whose lineage restarted the partition, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<u32>,
    /// Offsets lost between members (retention).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<OffsetRange>,
    /// The newest range's declared end (its last range's third member is where its chunks'
    /// coverage ends, short of this when the newest archive holding it is partial).
    pub end: i64,
    /// Whether the newest archive holding it got its whole range.
    pub complete: bool,
}

/// One archive found among the files.
struct Found {
    path: PathBuf,
    archive: Archive,
    intact: bool,
    problems: Vec<String>,
    root: String,
}

/// A chain opened: its archives, base first, and what checking it found.
pub struct Chain {
    pub archives: Vec<Archive>,
    pub report: ChainReport,
}

/// One chunk of a partition read through a chain: the archive that holds it (an index into
/// [`Chain::archives`]), its index entry, and the source offsets it accounts for as a chunk of
/// one archive would (see [`Chain::tiles`]).
#[derive(Debug, Clone)]
pub struct Tile {
    pub member: usize,
    pub chunk: ChunkEntry,
    pub covers: Range<i64>,
}

impl Chain {
    /// A partition's chunks, archive after archive from the one its lineage starts in. Within one
    /// archive a backup's chunks tile its range; across archives a member whose range held no
    /// record (only transaction markers or aborted records) has no chunk, so the chunk before
    /// that range accounts for it, as a backup's writer does within one archive. Lost offsets
    /// (the span's gaps) stay holes; the end is accounted for only where the newest archive
    /// holding the partition got it whole.
    pub fn tiles(&self, s: &Span) -> Result<Vec<Tile>, ArchiveError> {
        let Some(&(_, start, ..)) = s.ranges.first() else {
            return Ok(Vec::new());
        };
        let mut m = Mender::new(start, &s.gaps);
        for &(depth, ..) in &s.ranges {
            let member = self
                .archives
                .iter()
                .position(|a| depth_of(a.manifest()) == depth)
                .expect("a span names archives of the chain");
            for c in self.archives[member].chunks_of(&s.topic, s.partition)? {
                let from = c.covers_from;
                m.push(member, c, from);
            }
        }
        Ok(m.finish(s.complete, s.end))
    }
}

/// Lays a partition's chunks, from several archives in offset order, end to end: the offsets
/// between two chunks (a range that held no record: transaction markers, aborted records) are
/// accounted for by the chunk before them (or by the first chunk, from the partition's start),
/// as a backup's writer does within one archive; offsets lost (`gaps`) stay holes.
pub(crate) struct Mender<'g> {
    out: Vec<Tile>,
    next: i64,
    gaps: &'g [OffsetRange],
}

impl<'g> Mender<'g> {
    pub(crate) fn new(start: i64, gaps: &'g [OffsetRange]) -> Mender<'g> {
        Mender {
            out: Vec::new(),
            next: start,
            gaps,
        }
    }

    /// Adds a chunk accounting for offsets from `covers_from` (its own, or later where its
    /// first records are another archive's too).
    pub(crate) fn push(&mut self, member: usize, c: ChunkEntry, covers_from: i64) {
        let next = self.next;
        let lost = self
            .gaps
            .iter()
            .find(|g| g.from >= next && g.to <= covers_from);
        let (upto, resume) = lost.map_or((covers_from, covers_from), |g| (g.from, g.to));
        let mut from = covers_from.min(resume);
        match self.out.last_mut() {
            Some(p) if upto > p.covers.end => p.covers.end = upto,
            None if upto > next && lost.is_none() => from = next,
            _ => {}
        }
        self.next = c.covers_to;
        let covers = from..c.covers_to;
        self.out.push(Tile {
            member,
            chunk: c,
            covers,
        });
    }

    /// The tiles; the last accounts for the range's end when the partition was got whole.
    pub(crate) fn finish(mut self, complete: bool, end: i64) -> Vec<Tile> {
        if let Some(last) = self.out.last_mut().filter(|_| complete) {
            last.covers.end = last.covers.end.max(end);
        }
        self.out
    }
}

/// Checks the chain the files (or folders) hold: its newest member is the deepest archive.
pub fn check_chain(paths: &[PathBuf], level: VerifyLevel) -> Result<ChainReport, ArchiveError> {
    Ok(open_chain(paths, level)?.report)
}

/// Opens and checks the chain the files (or folders) hold.
pub fn open_chain(paths: &[PathBuf], level: VerifyLevel) -> Result<Chain, ArchiveError> {
    open_chain_to(paths, None, level)
}

/// Opens and checks the chain that ends at `head` (one of the files, or of the folders'), or at
/// the deepest archive when `head` is `None`: archives after `head` are not in the chain.
pub fn open_chain_to(
    paths: &[PathBuf],
    head: Option<&Path>,
    level: VerifyLevel,
) -> Result<Chain, ArchiveError> {
    let mut not_in_chain = Vec::new();
    let mut unopened = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    for (path, named) in expand(paths)? {
        match open(&path, level) {
            Ok(f) => found.push(f),
            // A file given by name, or one of a folder that begins as an archive does (an
            // unfinished member, a damaged one, one that needs a key): not left out unsaid.
            Err(e) if named || looks_like_an_archive(&path) => {
                unopened.push(format!("{}: does not open: {e}", path.display()))
            }
            Err(e) => not_in_chain.push(format!("{}: {e}", path.display())),
        }
    }
    let head = match head {
        None => None,
        Some(h) => Some(head_index(&found, h)?),
    };
    let order = order(&found, head, &mut not_in_chain)?;
    let chain: Vec<&Found> = order.iter().map(|&i| &found[i]).collect();
    let mut problems = unopened;
    problems.extend(links(&chain));
    for f in &chain {
        problems.extend(
            f.problems
                .iter()
                .map(|p| format!("{}: {p}", f.path.display())),
        );
    }
    problems.extend(inherited(&chain)?);
    let Spans {
        spans: partitions,
        lost,
        incomplete,
    } = spans(&chain, &mut problems)?;
    let members: Vec<Member> = chain.iter().map(|f| member(f)).collect();
    let report = ChainReport {
        ok: problems.is_empty()
            && lost.is_empty()
            && incomplete.is_empty()
            && members.iter().all(|m| m.intact),
        members,
        partitions,
        lost,
        incomplete,
        problems,
        not_in_chain,
    };
    let mut by_index: Vec<Option<Found>> = found.into_iter().map(Some).collect();
    let archives = order
        .iter()
        .map(|&i| by_index[i].take().expect("each once").archive)
        .collect();
    Ok(Chain { archives, report })
}

/// The files given (named: true), a folder's regular files (sorted) in its place, but detached
/// signatures and further volumes of a set (read with its first).
fn expand(paths: &[PathBuf]) -> Result<Vec<(PathBuf, bool)>, ArchiveError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(ArchiveError::io("read the folder", p))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_none_or(|e| e != "minisig"))
                .filter(|f| !is_later_volume(f) && !is_unfinished_member(f))
                .collect();
            files.sort();
            out.extend(files.into_iter().map(|f| (f, false)));
        } else {
            out.push((p.clone(), true));
        }
    }
    // A file named and also in a folder given (the newest member and its folder) is one archive.
    let mut seen = HashSet::new();
    let mut named: HashSet<PathBuf> = HashSet::new();
    for (p, n) in &out {
        if *n {
            named.insert(p.canonicalize().unwrap_or_else(|_| p.clone()));
        }
    }
    out.retain(|(p, n)| {
        let c = p.canonicalize().unwrap_or_else(|_| p.clone());
        (*n || !named.contains(&c)) && seen.insert(c)
    });
    Ok(out)
}

/// Whether `path` is an unfinished continuous-mode member (`NAME.kar.part`, §16): never a member.
pub(crate) fn is_unfinished_member(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".kar.part")
}

/// Whether `path` begins with kar's magic bytes.
pub(crate) fn looks_like_an_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == crate::format::file_header::MAGIC)
}

/// Whether `path` is the second or a later volume of a set (`NAME.002`, ...), which opens with
/// its first.
pub(crate) fn is_later_volume(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.len() == 3 && e.bytes().all(|b| b.is_ascii_digit()) && e != "001")
}

fn open(path: &Path, level: VerifyLevel) -> Result<Found, ArchiveError> {
    let archive = Archive::open(path)?;
    let report = verify(path, level)?;
    Ok(Found {
        path: path.to_path_buf(),
        intact: report.ok,
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
        root: report.root_hash.unwrap_or_default(),
        archive,
    })
}

fn id_of(f: &Found) -> String {
    f.archive.id().map(|i| i.hex()).unwrap_or_default()
}

fn depth_of(m: &Manifest) -> u32 {
    m.parent.as_ref().map_or(0, |p| p.depth)
}

/// Which archive found is `head` (the same file, by its canonical path).
fn head_index(found: &[Found], head: &Path) -> Result<usize, ArchiveError> {
    let want = head
        .canonicalize()
        .map_err(ArchiveError::io("find", head))?;
    found
        .iter()
        .position(|f| f.path.canonicalize().is_ok_and(|p| p == want))
        .ok_or_else(|| {
            ArchiveError::Chain(format!(
                "{}: does not open as an archive of the chain",
                head.display()
            ))
        })
}

/// The chain's archives, base first: from `head` (else the deepest member) down its parents.
/// Archives off that path are named as not in the chain.
fn order(
    found: &[Found],
    head: Option<usize>,
    not_in_chain: &mut Vec<String>,
) -> Result<Vec<usize>, ArchiveError> {
    let Some(deepest) = found.iter().map(|f| depth_of(f.archive.manifest())).max() else {
        return Ok(Vec::new());
    };
    let heads: Vec<usize> = match head {
        Some(h) => vec![h],
        None => (0..found.len())
            .filter(|&i| depth_of(found[i].archive.manifest()) == deepest)
            .collect(),
    };
    if heads.len() > 1 {
        let names: Vec<String> = heads
            .iter()
            .map(|&i| found[i].path.display().to_string())
            .collect();
        return Err(ArchiveError::Chain(format!(
            "{} archives are the newest member at depth {deepest}: {}; give the files of one chain",
            heads.len(),
            names.join(", ")
        )));
    }
    let by_id: HashMap<String, usize> = (0..found.len()).map(|i| (id_of(&found[i]), i)).collect();
    let mut chain = vec![heads[0]];
    while let Some(p) = &found[*chain.last().expect("one")].archive.manifest().parent {
        match by_id.get(&p.archive_id) {
            Some(&i) if !chain.contains(&i) => chain.push(i),
            _ => break,
        }
    }
    chain.reverse();
    let on: HashSet<usize> = chain.iter().copied().collect();
    for (_, f) in found.iter().enumerate().filter(|(i, _)| !on.contains(i)) {
        not_in_chain.push(format!(
            "{}: archive {} at depth {} is not on the chain of the newest member",
            f.path.display(),
            id_of(f),
            depth_of(f.archive.manifest())
        ));
    }
    Ok(chain)
}

/// Each link: the first archive is a full base, every other names the one before it by ID and
/// root and is one deeper.
fn links(chain: &[&Found]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(first) = chain.first() else {
        return vec!["no archive among the files".into()];
    };
    if let Some(p) = &first.archive.manifest().parent {
        problems.push(format!(
            "{} is member {} of a chain, but its parent (archive {}, depth {}) is not among the files: the chain below it is missing",
            first.path.display(),
            p.depth,
            p.archive_id,
            p.depth.saturating_sub(1)
        ));
    }
    for w in chain.windows(2) {
        let (parent, child) = (w[0], w[1]);
        let link = child.archive.manifest().parent.as_ref().expect("a member");
        if link.root != parent.root {
            problems.push(format!(
                "{} continues archive {} with root {}, but {} has root {}: it is not the archive the member continued",
                child.path.display(),
                link.archive_id,
                link.root,
                parent.path.display(),
                parent.root
            ));
        }
        if link.depth != depth_of(parent.archive.manifest()) + 1 {
            problems.push(format!(
                "{} says depth {}, its parent {} depth {}",
                child.path.display(),
                link.depth,
                parent.path.display(),
                depth_of(parent.archive.manifest())
            ));
        }
    }
    problems
}

/// Every blob a member inherits is stored in an archive below it.
fn inherited(chain: &[&Found]) -> Result<Vec<String>, ArchiveError> {
    let mut problems = Vec::new();
    let mut below: HashSet<crate::format::Hash> = HashSet::new();
    for f in chain {
        for b in &f.archive.manifest().inherited_blobs {
            if !parse_hex(b).is_some_and(|h| below.contains(&h)) {
                problems.push(format!(
                    "{}: blob {b} is inherited, but no archive below it in the chain stores it",
                    f.path.display()
                ));
            }
        }
        below.extend(f.archive.blob_ids()?);
    }
    Ok(problems)
}

/// Each partition of the newest member through the chain; a break between two archives is
/// explained by the later one's changes, or is a problem.
fn spans(chain: &[&Found], problems: &mut Vec<String>) -> Result<Spans, ArchiveError> {
    let mut spans: BTreeMap<(String, i32), Span> = BTreeMap::new();
    let mut lost = Vec::new();
    for f in chain {
        let m = f.archive.manifest();
        let depth = depth_of(m);
        let here: HashSet<(String, i32)> = m
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.partition)))
            .collect();
        // A partition an archive does not hold ends its span: if it comes back later, it is
        // backed up from its log's start then, and starts a new span.
        spans.retain(|k, _| here.contains(k));
        for t in &m.topics {
            for p in &t.partitions {
                let key = (t.name.clone(), p.partition);
                let span = spans.entry(key).or_insert_with(|| Span {
                    topic: t.name.clone(),
                    partition: p.partition,
                    ranges: Vec::new(),
                    restarted_at: None,
                    gaps: Vec::new(),
                    end: 0,
                    complete: true,
                });
                extend(f, depth, t, p, span, &mut lost, problems)?;
            }
        }
    }
    let incomplete = spans
        .values()
        .filter(|s| !s.complete)
        .map(|s| {
            let covered = s.ranges.last().map_or(s.end, |r| r.2);
            format!(
                "{}/{}: the newest archive holding it got offsets up to {covered} of {}",
                s.topic, s.partition, s.end
            )
        })
        .collect();
    Ok(Spans {
        spans: spans.into_values().collect(),
        lost,
        incomplete,
    })
}

/// What [`spans`] found.
struct Spans {
    spans: Vec<Span>,
    lost: Vec<String>,
    incomplete: Vec<String>,
}

/// Adds one archive's range of a partition to its span: a new lineage starts it again; a range
/// that does not begin where the span's coverage ends must be a retention gap the archive names.
/// A partial archive's range ends where its chunks' coverage does (the next member takes over
/// from there).
fn extend(
    f: &Found,
    depth: u32,
    t: &crate::format::manifest::TopicEntry,
    p: &crate::format::manifest::PartitionEntry,
    span: &mut Span,
    lost: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Result<(), ArchiveError> {
    let (start, end) = (p.start_offset.unwrap_or(0), p.end_offset.unwrap_or(0));
    let covered = if p.complete {
        end
    } else {
        f.archive
            .chunks_of(&t.name, p.partition)?
            .iter()
            .map(|c| c.covers_to)
            .max()
            .unwrap_or(start)
    };
    let assigned = f.archive.manifest().changes.iter().any(|c| {
        c.kind == ChangeKind::PartitionAssigned
            && c.topic == t.name
            && c.partition == Some(p.partition)
    });
    if p.lineage.as_ref().is_some_and(|l| l.restarted) {
        span.ranges.clear();
        span.gaps.clear();
        span.restarted_at = Some(depth);
    } else if assigned {
        // A group member took the partition over from another process's chain: this chain's
        // span of it begins again here (the set of the group's chains holds what lies between).
        span.ranges.clear();
        span.gaps.clear();
    } else if let Some(&(_, _, before, _)) = span.ranges.last()
        && before != start
    {
        let explained = f.archive.manifest().changes.iter().any(|c| {
            c.kind == ChangeKind::RetentionGap
                && c.topic == t.name
                && c.partition == Some(p.partition)
                && (c.from, c.to) == (Some(before), Some(start))
        });
        if explained {
            span.gaps.push(OffsetRange {
                from: before,
                to: start,
            });
            lost.push(format!(
                "{}/{}: offsets {before}..{start} (before member {depth})",
                t.name, p.partition
            ));
        } else {
            problems.push(format!(
                "{}/{}: member {depth} ({}) starts at {start}, but the chain before it ends at {before}, and no change of its explains it",
                t.name,
                p.partition,
                f.path.display()
            ));
        }
    }
    span.ranges.push((depth, start, covered, p.records));
    span.end = end;
    span.complete = p.complete;
    Ok(())
}

fn member(f: &Found) -> Member {
    let m = f.archive.manifest();
    Member {
        path: f.path.clone(),
        archive_id: id_of(f),
        depth: depth_of(m),
        created_at_ms: m.created_at_ms,
        root: f.root.clone(),
        records: m
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records)
            .sum(),
        intact: f.intact,
        inherited_blobs: m.inherited_blobs.len(),
        changes: m.changes.clone(),
    }
}
