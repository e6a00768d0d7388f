//! Retention over a folder of archives (full backups and chain members, spec §16): every archive
//! is a restore point as of its backup's time; the points a policy keeps are kept with every
//! archive their chains need (a member needs its parent, down to its base); the rest are
//! removed, with the detached signatures beside them. Nothing a kept point needs is ever removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Archive, ArchiveError};

/// Which restore points to keep.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// The newest this many restore points.
    pub keep_last: usize,
    /// The newest restore point of each of the newest this many days that have one (UTC).
    pub keep_daily: usize,
    /// Say what would be removed; remove nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub kept: Vec<Kept>,
    pub removed: Vec<PathBuf>,
    pub dry_run: bool,
    /// Nothing was removed: a kept point's chain is incomplete (an archive it needs is not in
    /// the folder, perhaps moved away): removing more would leave less to mend it with.
    pub refused: bool,
    /// Kept points whose chain is incomplete among the files (a parent missing), and files that
    /// begin as archives but do not open (unfinished, damaged, encrypted: what they need is not
    /// known): named; nothing is removed while there is one.
    pub broken: Vec<String>,
    /// Files that are not archives, left alone.
    pub other_files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub path: PathBuf,
    pub created_at_ms: i64,
    /// Why: "last", "daily", or "needed by <file>".
    pub why: Vec<String>,
}

/// What a folder holds: archives, other files, files that begin as archives but do not open.
type Found = (Vec<Point>, Vec<String>, Vec<String>);

struct Point {
    path: PathBuf,
    id: String,
    parent: Option<String>,
    created_at_ms: i64,
}

/// Applies `opts` to the archives in `dir`.
pub fn prune(dir: &Path, opts: &PruneOptions) -> Result<PruneReport, ArchiveError> {
    if opts.keep_last == 0 && opts.keep_daily == 0 {
        return Err(ArchiveError::Chain(
            "prune keeps nothing unless told: give --keep-last and/or --keep-daily".into(),
        ));
    }
    let (points, other_files, unopened) = points(dir)?;
    let mut why: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for i in newest_first(&points).into_iter().take(opts.keep_last) {
        why.entry(i).or_default().push("last".into());
    }
    for i in daily(&points, opts.keep_daily) {
        why.entry(i).or_default().push("daily".into());
    }
    let mut broken = Vec::new();
    for i in why.keys().copied().collect::<Vec<_>>() {
        for (a, missing) in ancestors(&points, i) {
            match a {
                Some(a) if a != i => why
                    .entry(a)
                    .or_default()
                    .push(format!("needed by {}", points[i].path.display())),
                Some(_) => {}
                None => broken.push(format!(
                    "{}: its chain needs archive {missing}, which is not in {}",
                    points[i].path.display(),
                    dir.display()
                )),
            }
        }
    }
    let removed: Vec<PathBuf> = (0..points.len())
        .filter(|i| !why.contains_key(i))
        .map(|i| points[i].path.clone())
        .collect();
    broken.extend(unopened);
    let refused = !broken.is_empty();
    if !opts.dry_run && !refused {
        for p in &removed {
            remove_with_signatures(p)?;
        }
    }
    Ok(PruneReport {
        kept: why
            .into_iter()
            .map(|(i, why)| Kept {
                path: points[i].path.clone(),
                created_at_ms: points[i].created_at_ms,
                why,
            })
            .collect(),
        removed,
        dry_run: opts.dry_run,
        refused,
        broken,
        other_files,
    })
}

/// The archives of `dir` (each opened: footer, manifest, index; a volume set by its first
/// volume), the files that are not archives, and those that begin as one but do not open.
fn points(dir: &Path) -> Result<Found, ArchiveError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(ArchiveError::io("read the folder", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !is_signature(p) && !super::chain::is_later_volume(p))
        // A continuous backup's member being written: not an archive yet, nor broken.
        .filter(|p| !super::chain::is_unfinished_member(p))
        .collect();
    files.sort();
    let (mut points, mut others, mut unopened) = (Vec::new(), Vec::new(), Vec::new());
    for path in files {
        match Archive::open(&path) {
            Ok(a) => points.push(Point {
                id: a.id().map(|i| i.hex()).unwrap_or_default(),
                parent: a.manifest().parent.as_ref().map(|p| p.archive_id.clone()),
                created_at_ms: a.manifest().created_at_ms,
                path,
            }),
            Err(e) if super::chain::looks_like_an_archive(&path) => unopened.push(format!(
                "{}: begins as an archive but does not open: {e}",
                path.display()
            )),
            Err(e) => others.push(format!("{}: {e}", path.display())),
        }
    }
    Ok((points, others, unopened))
}

fn is_signature(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "minisig")
}

fn newest_first(points: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((points[i].created_at_ms, points[i].path.clone())));
    order
}

/// The newest point of each of the newest `days` UTC days that have one.
fn daily(points: &[Point], days: usize) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for i in newest_first(points) {
        let day = points[i].created_at_ms.div_euclid(86_400_000);
        if seen.len() < days && seen.insert(day) {
            out.push(i);
        }
    }
    out
}

/// The archives point `i`'s chain needs, itself first: `(Some(index), _)` found, `(None, id)` a
/// parent not among the files (the walk stops there).
fn ancestors(points: &[Point], i: usize) -> Vec<(Option<usize>, String)> {
    let by_id: HashMap<&str, usize> = points
        .iter()
        .enumerate()
        .map(|(j, p)| (p.id.as_str(), j))
        .collect();
    let mut out = vec![(Some(i), points[i].id.clone())];
    let mut at = i;
    while let Some(parent) = &points[at].parent {
        match by_id.get(parent.as_str()) {
            Some(&j) if !out.iter().any(|(k, _)| *k == Some(j)) => {
                out.push((Some(j), parent.clone()));
                at = j;
            }
            Some(_) => break,
            None => {
                out.push((None, parent.clone()));
                break;
            }
        }
    }
    out
}

/// Removes an archive (every volume of a set), and the detached signatures beside it: exactly
/// `FILE.minisig` and `FILE.<16 hex digits: a key ID>.minisig`, the names kar writes.
fn remove_with_signatures(path: &Path) -> Result<(), ArchiveError> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    if let Some(dir) = path.parent() {
        for e in std::fs::read_dir(dir).map_err(ArchiveError::io("read the folder", dir))? {
            let p = e.map_err(ArchiveError::io("read the folder", dir))?.path();
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if is_signature_of(&n, &name) {
                std::fs::remove_file(&p).map_err(ArchiveError::io("remove", &p))?;
            }
        }
    }
    for number in 2.. {
        let v = super::volume::volume_path(path, number);
        if !v.is_file() {
            break;
        }
        std::fs::remove_file(&v).map_err(ArchiveError::io("remove", &v))?;
    }
    std::fs::remove_file(path).map_err(ArchiveError::io("remove", path))
}

/// Whether the file named `n` is a detached signature of the archive named `archive`.
fn is_signature_of(n: &str, archive: &str) -> bool {
    let Some(rest) = n
        .strip_prefix(archive)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix("minisig"))
    else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_suffix('.')
            .is_some_and(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_an_archives_own_signatures_are_its() {
        for (n, yes) in [
            ("a.kar.minisig", true),
            ("a.kar.0123456789abcdef.minisig", true),
            ("a.kar.2.kar.minisig", false),
            ("a.kar.old.kar.0123456789abcdef.minisig", false),
            ("a.kar.0123456789abcdeg.minisig", false),
            ("b.kar.minisig", false),
            ("a.karminisig", false),
        ] {
            assert_eq!(super::is_signature_of(n, "a.kar"), yes, "{n}");
        }
    }
}
