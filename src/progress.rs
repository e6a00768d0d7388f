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
