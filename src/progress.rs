//! Progress of a long-running workflow (backup, restore), told to a sink its caller passes in
//! with the options: the CLI draws bars from it, a library caller may count it or ignore it. The
//! workflows never draw anything themselves.

use std::fmt;
use std::sync::Arc;

/// What a workflow tells of its progress. Called from worker threads, often: keep it cheap.
pub trait ProgressSink: Send + Sync {
    /// The work is known: each part (a topic) with its total (offsets a backup reads, records a
    /// restore writes).
    fn begin(&self, _parts: &[(String, u64)]) {}
    /// `units` more of `part`'s total are done, moving `records` records of `bytes` bytes.
    fn advance(&self, _part: &str, _units: u64, _records: u64, _bytes: u64) {}
    /// The work is over: done, failed or stopped.
    fn end(&self) {}
    /// Something done on the way (see [`Event`]).
    fn event(&self, _e: &Event<'_>) {}
}

/// One thing a workflow did, beyond its progress: what metrics count and logs may tell. Each is
/// about one thing, borrowed, and cheap to make; a sink ignores what it has no use for.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A partition's work is known: `total` offsets to read (backup) or records to write
    /// (restore), when known (not in a stream restore).
    PartitionPlanned {
        topic: &'a str,
        partition: i32,
        total: Option<u64>,
    },
    /// Records read from the source: Kafka in a backup, the archive in a restore. `left`: what
    /// remains to the snapshot end (offsets in a backup, records in a restore), when known (not
    /// in a stream restore).
    Read {
        topic: &'a str,
        partition: i32,
        records: u64,
        bytes: u64,
        left: Option<u64>,
    },
    /// Records written to the target: the archive in a backup (`bytes` as stored in it), Kafka
    /// in a restore (keys, values and headers).
    Written {
        topic: &'a str,
        partition: i32,
        records: u64,
        bytes: u64,
    },
    /// A partition is over: complete, or failed with `error`; `records` read (backup) or
    /// restored (restore).
    PartitionEnded {
        topic: &'a str,
        partition: i32,
        records: u64,
        error: Option<&'a str>,
    },
    /// A record chunk's frame was written to the archive.
    ChunkWritten { seconds: f64 },
    /// The archive file was synced to its device.
    Synced { seconds: f64 },
    /// A registry request's attempt ended: with an HTTP status, or none (no answer).
    RegistryAnswer {
        method: &'a str,
        /// The path with names and numbers replaced (`/subjects/{subject}/versions/{version}`).
        endpoint: &'a str,
        status: Option<u16>,
        seconds: f64,
    },
    /// A registry request is tried again after waiting this long.
    RegistryRetry { wait_seconds: f64 },
    /// Time a registry request waited on the client's own rate limit.
    RateLimited { seconds: f64 },
    /// The registry's subjects and versions captured into the archive.
    SchemasBackedUp { subjects: u64, versions: u64 },
    /// A schema version registered on the target: the archive's subject and version, the ID the
    /// target gave it.
    SchemaRegistered {
        subject: &'a str,
        version: i32,
        id: u32,
    },
    /// A subject's mode set on the target by a restore keeping IDs: into IMPORT (`into`), or
    /// out of it, back to what it was or to the archived mode (`None`: its own mode removed).
    ModeSet {
        subject: &'a str,
        mode: Option<&'a str>,
        into: bool,
    },
    /// Schema IDs in records of a partition: rewritten in place, or unknown and left.
    SchemaIds {
        topic: &'a str,
        rewritten: u64,
        unknown: u64,
    },
    /// The archive written (backup) or verified is this big, in bytes.
    ArchiveSize { bytes: u64 },
    /// A verification checked frames and found problems.
    Verified { frames: u64, problems: u64 },
    /// A continuous backup's member was renamed into place, complete and synced.
    MemberClosed {
        path: &'a std::path::Path,
        records: u64,
        bytes: u64,
    },
}

/// A sink shared with the caller, who reads what it was told afterwards.
impl<S: ProgressSink + ?Sized> ProgressSink for Arc<S> {
    fn begin(&self, parts: &[(String, u64)]) {
        (**self).begin(parts);
    }

    fn advance(&self, part: &str, units: u64, records: u64, bytes: u64) {
        (**self).advance(part, units, records, bytes);
    }

    fn end(&self) {
        (**self).end();
    }

    fn event(&self, e: &Event<'_>) {
        (**self).event(e);
    }
}

/// The progress sink of a workflow's options: none by default.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn ProgressSink>>);

impl Progress {
    pub fn to(sink: impl ProgressSink + 'static) -> Progress {
        Progress(Some(Arc::new(sink)))
    }

    pub fn begin(&self, parts: &[(String, u64)]) {
        if let Some(s) = &self.0 {
            s.begin(parts);
        }
    }

    pub fn advance(&self, part: &str, units: u64, records: u64, bytes: u64) {
        if let Some(s) = &self.0 {
            s.advance(part, units, records, bytes);
        }
    }

    pub fn end(&self) {
        if let Some(s) = &self.0 {
            s.end();
        }
    }

    pub fn event(&self, e: Event<'_>) {
        if let Some(s) = &self.0 {
            s.event(&e);
        }
    }

    /// Whether anyone is told: a caller may skip measuring what nobody reads.
    pub fn is_told(&self) -> bool {
        self.0.is_some()
    }

    /// This sink and `other` both told everything.
    pub fn and(self, other: Progress) -> Progress {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Progress::to(Both(a, b)),
            (a, b) => Progress(a.or(b)),
        }
    }
}

/// Two sinks told the same.
struct Both(Arc<dyn ProgressSink>, Arc<dyn ProgressSink>);

impl ProgressSink for Both {
    fn begin(&self, parts: &[(String, u64)]) {
        self.0.begin(parts);
        self.1.begin(parts);
    }

    fn advance(&self, part: &str, units: u64, records: u64, bytes: u64) {
        self.0.advance(part, units, records, bytes);
        self.1.advance(part, units, records, bytes);
    }

    fn end(&self) {
        self.0.end();
        self.1.end();
    }

    fn event(&self, e: &Event<'_>) {
        self.0.event(e);
        self.1.event(e);
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(sink)"
        } else {
            "Progress(none)"
        })
    }
}
