//! Continuous mode (`kar backup --continuous --out-dir DIR --roll-every 1h|512M`): a chain of
//! members (spec §16), each read as records come ([`super::Follow`]) until its roll, then closed,
//! synced and renamed into place, so every `*.kar` in the folder is a complete, verifiable archive
//! the moment it has its name. A member is written as `NAME.kar.part`: after a crash the next
//! start removes it and continues from the last complete member, whose partition ends are where
//! the new member starts, so no record is missing or doubled across members.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::{BackupError, BackupOptions, BackupReport, Follow, backup};
use crate::archive::{Archive, ArchiveError};
use crate::runtime::Runtime;

/// When a member is closed: whichever comes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roll {
    pub every: Option<Duration>,
    pub bytes: Option<u64>,
}

impl std::str::FromStr for Roll {
    type Err = String;

    /// `1h`, `30m`, `90s` (a time) or `512M`, `2G`, `100K` (bytes of archive).
    fn from_str(s: &str) -> Result<Roll, String> {
        let bad = || format!("{s:?} is not a roll condition such as 1h, 30m, 90s, 512M or 2G");
        let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let n: u64 = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        let secs = |k: u64| Roll {
            every: Some(Duration::from_secs(n * k)),
            bytes: None,
        };
        let bytes = |k: u64| Roll {
            every: None,
            bytes: Some(n.saturating_mul(k)),
        };
        Ok(match unit {
            "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            "K" | "KiB" => bytes(1 << 10),
            "M" | "MiB" => bytes(1 << 20),
            "G" | "GiB" => bytes(1 << 30),
            _ => return Err(bad()),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ContinuousOptions {
    pub dir: PathBuf,
    pub roll: Roll,
    /// Keep this many newest restore points (and what their chains need); a new full base is
    /// taken every this many members, so that older chains can go.
    pub retain: Option<usize>,
    /// Set (SIGTERM, Ctrl-C) to close the current member at once, cleanly, and stop.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many members (tests, and a bounded run).
    pub members: Option<usize>,
    /// `--group NAME`: one of several processes sharing the partitions through Kafka's group
    /// protocol, each writing its own chain.
    pub group: Option<GroupSettings>,
}

#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub name: String,
    /// How long the group waits for a silent process before its partitions go to the others.
    pub session_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContinuousReport {
    /// Unfinished members of an earlier run, removed before this one began.
    pub discarded: Vec<PathBuf>,
    pub members: Vec<BackupReport>,
    /// Archives `--retain` removed.
    pub pruned: Vec<PathBuf>,
    /// Every member complete (no retention gap, no partition failed).
    pub ok: bool,
}

/// Runs members until stopped; `on_member` is told of each as it is renamed into place.
pub fn run(
    rt: &Runtime,
    base: &BackupOptions,
    c: &ContinuousOptions,
    on_member: &dyn Fn(&BackupReport),
) -> Result<ContinuousReport, BackupError> {
    check(base, c)?;
    std::fs::create_dir_all(&c.dir).map_err(|e| io_err("make the folder", &c.dir, e))?;
    let _lock = lock(&c.dir)?;
    let discarded = discard_unfinished(&c.dir)?;
    let mut report = ContinuousReport {
        discarded,
        members: Vec::new(),
        pruned: Vec::new(),
        ok: true,
    };
    if let Some(g) = &c.group {
        super::group::run(rt, base, c, g, &mut report, on_member)?;
        return Ok(report);
    }
    loop {
        let head = newest(&c.dir)?;
        let rebase = match (&head, c.retain) {
            (Some((_, depth)), Some(n)) => depth + 1 >= n as u32,
            _ => false,
        };
        let parent = head.filter(|_| !rebase).map(|(p, _)| p);
        let r = member(rt, base, c, parent, Arc::new(AtomicBool::new(false)))?;
        report.add(r, on_member);
        retain(c, &mut report)?;
        let enough = c.members.is_some_and(|n| report.members.len() >= n);
        if enough || c.stop.load(Ordering::SeqCst) || base.cancel.load(Ordering::SeqCst) {
            return Ok(report);
        }
    }
}

impl ContinuousReport {
    /// A member renamed into place: counted, told of.
    pub(super) fn add(&mut self, r: BackupReport, on_member: &dyn Fn(&BackupReport)) {
        self.ok &=
            r.status == crate::format::manifest::ArchiveStatus::Complete && !r.chain_lost_records();
        on_member(&r);
        self.members.push(r);
    }
}

/// `--retain`: the newest N restore points and what their chains need are kept.
pub(super) fn retain(
    c: &ContinuousOptions,
    report: &mut ContinuousReport,
) -> Result<(), BackupError> {
    let Some(n) = c.retain else {
        return Ok(());
    };
    let opts = crate::archive::prune::PruneOptions {
        keep_last: n,
        keep_daily: 0,
        dry_run: false,
    };
    let pruned = crate::archive::prune::prune(&c.dir, &opts)?;
    if pruned.refused {
        tracing::warn!(
            "--retain removed nothing: {}",
            pruned
                .broken
                .first()
                .map_or("a kept chain is incomplete", String::as_str)
        );
    } else {
        report.pruned.extend(pruned.removed);
    }
    Ok(())
}

fn check(base: &BackupOptions, c: &ContinuousOptions) -> Result<(), BackupError> {
    let bad = |why: &str| Err(BackupError::Invalid(why.into()));
    if c.roll.every.is_none() && c.roll.bytes.is_none() {
        return bad("--continuous needs --roll-every (a time such as 1h, or a size such as 512M)");
    }
    if base.from_time.is_some() || base.until_time.is_some() {
        return bad(
            "--continuous reads on as records come: --from-time and --until-time do not apply",
        );
    }
    if base.volume_size.is_some() {
        return bad("--continuous writes one file a member: --volume-size does not apply");
    }
    if base.incremental_from.is_some() {
        return bad(
            "--continuous continues the newest member in --out-dir: --incremental-from does not apply",
        );
    }
    if base.writer.sealing.is_some() {
        return bad("an encrypted chain cannot be continued yet: --continuous does not encrypt");
    }
    if c.group.is_some() && c.retain.is_some() {
        return bad(
            "--retain does not apply with --group yet: each process continues its own chain, which no new base ends; prune with kar prune per folder",
        );
    }
    if c.group.is_some() && base.topics.is_empty() {
        return bad(
            "--group subscribes to the topics --topics names (Kafka spreads their partitions over the group): give --topics",
        );
    }
    if c.retain == Some(0) {
        return bad("--retain must be at least 1");
    }
    Ok(())
}

/// One member: written as `NAME.kar.part` and read until its roll, then (synced by the backup)
/// renamed to `NAME.kar` and the folder synced.
pub(super) fn member(
    rt: &Runtime,
    base: &BackupOptions,
    c: &ContinuousOptions,
    parent: Option<PathBuf>,
    roll: Arc<AtomicBool>,
) -> Result<BackupReport, BackupError> {
    let name = member_name(&c.dir);
    let part = c.dir.join(format!("{name}.part"));
    let done = c.dir.join(&name);
    let mut opts = base.clone();
    opts.out = part.clone();
    opts.incremental_from = parent;
    opts.follow = Some(Follow {
        roll: roll.clone(),
        max_bytes: c.roll.bytes,
        every: c.roll.every,
    });
    let timer = timer(c, roll.clone());
    let result = backup(rt, &opts);
    roll.store(true, Ordering::SeqCst);
    let _ = timer.join();
    let mut r = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, &done).map_err(|e| io_err("rename into place", &part, e))?;
    sync_dir(&c.dir)?;
    base.progress.event(crate::progress::Event::MemberClosed {
        path: &done,
        records: r.records,
        bytes: r.archive_bytes,
    });
    r.out = done;
    Ok(r)
}

/// Sets `roll` at once when told to stop (the roll's time is the backup's, see
/// [`Follow::every`]).
fn timer(c: &ContinuousOptions, roll: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let stop = c.stop.clone();
    std::thread::spawn(move || {
        while !roll.load(Ordering::SeqCst) {
            if stop.load(Ordering::SeqCst) {
                roll.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// `kar-<UTC time to the millisecond>.kar`: names sort as the members were begun; a name
/// already taken (two in one millisecond) waits for the next.
fn member_name(dir: &Path) -> String {
    loop {
        let now = jiff::Timestamp::now();
        let name = format!("kar-{}.kar", now.strftime("%Y%m%dT%H%M%S%.3fZ"));
        if !dir.join(&name).exists() && !dir.join(format!("{name}.part")).exists() {
            return name;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Removes the `*.kar.part` files a killed run left: unfinished members. The member they began
/// continued the last complete one, which the next member continues again.
fn discard_unfinished(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err("read the folder", dir, e))? {
        let p = e.map_err(|e| io_err("read the folder", dir, e))?.path();
        if p.is_file() && p.to_string_lossy().ends_with(".kar.part") {
            tracing::warn!(
                "{}: an unfinished member of an earlier run, removed; this run continues from the last complete member",
                p.display()
            );
            std::fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))?;
            out.push(p);
        }
    }
    if !out.is_empty() {
        sync_dir(dir)?;
    }
    Ok(out)
}

/// The newest complete member in the folder (by when it was made) and its depth. A `*.kar`
/// that does not open is refused: the chain cannot be continued past what it does not know.
pub(super) fn newest(dir: &Path) -> Result<Option<(PathBuf, u32)>, BackupError> {
    let mut best: Option<(i64, PathBuf, u32)> = None;
    for e in std::fs::read_dir(dir).map_err(|e| io_err("read the folder", dir, e))? {
        let p = e.map_err(|e| io_err("read the folder", dir, e))?.path();
        if !p.is_file() || p.extension().is_none_or(|x| x != "kar") {
            continue;
        }
        let a = Archive::open(&p).map_err(|e| {
            BackupError::Invalid(format!(
                "{}: does not open ({e}); continuous mode continues the newest member of {} and cannot tell which it is: move the file away or mend it",
                p.display(),
                dir.display()
            ))
        })?;
        let m = a.manifest();
        let depth = m.parent.as_ref().map_or(0, |p| p.depth);
        if best.as_ref().is_none_or(|b| m.created_at_ms > b.0) {
            best = Some((m.created_at_ms, p, depth));
        }
    }
    Ok(best.map(|(_, p, d)| (p, d)))
}

/// One continuous backup a folder: a second would remove the first's member being written and
/// fork the chain. The lock (`flock` on `DIR/.kar-continuous.lock`) goes with the process, also
/// when it is killed.
fn lock(dir: &Path) -> Result<std::fs::File, BackupError> {
    let path = dir.join(".kar-continuous.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("open", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(BackupError::Invalid(format!(
            "another continuous backup is writing to {} (it holds {}); one a folder",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err("lock", &path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

fn io_err(what: &'static str, path: &Path, e: std::io::Error) -> BackupError {
    BackupError::from(ArchiveError::io(what, path)(e))
}

#[cfg(test)]
mod tests {
    use super::Roll;
    use std::time::Duration;

    #[test]
    fn roll_conditions_parse() {
        let t = |s: &str| s.parse::<Roll>();
        assert_eq!(t("90s").unwrap().every, Some(Duration::from_secs(90)));
        assert_eq!(t("1h").unwrap().every, Some(Duration::from_secs(3600)));
        assert_eq!(t("512M").unwrap().bytes, Some(512 << 20));
        assert_eq!(t("2G").unwrap().bytes, Some(2 << 30));
        for bad in ["", "h", "0s", "1x", "1.5h", "-1h"] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }
}
