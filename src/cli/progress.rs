//! Progress bars on standard error, drawn from what the workflows tell their
//! [`ProgressSink`](crate::progress::ProgressSink) (indicatif draws only on a terminal).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{Progress, ProgressSink};

/// A bar per topic with its records and bytes per second: a backup's offsets read.
#[derive(Default)]
pub struct TopicBars {
    drawn: OnceLock<Drawn>,
}

struct Drawn {
    multi: MultiProgress,
    bars: HashMap<String, TopicBar>,
    started: Instant,
}

/// One topic's bar, and the records and bytes moved so far, for the rates.
struct TopicBar {
    bar: ProgressBar,
    moved: Mutex<(u64, u64)>,
}

impl ProgressSink for TopicBars {
    fn begin(&self, parts: &[(String, u64)]) {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:<30} {bar:30} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars = parts
            .iter()
            .map(|(topic, total)| {
                let bar = ProgressBar::new((*total).max(1))
                    .with_style(style.clone())
                    .with_prefix(topic.clone());
                let bar = TopicBar {
                    bar: multi.add(bar),
                    moved: Mutex::default(),
                };
                (topic.clone(), bar)
            })
            .collect();
        let _ = self.drawn.set(Drawn {
            multi,
            bars,
            started: Instant::now(),
        });
    }

    fn advance(&self, part: &str, units: u64, records: u64, bytes: u64) {
        let Some(d) = self.drawn.get() else { return };
        let Some(t) = d.bars.get(part) else { return };
        t.bar.inc(units);
        let mut m = t.moved.lock().unwrap_or_else(|p| p.into_inner());
        m.0 += records;
        m.1 += bytes;
        let secs = d.started.elapsed().as_secs_f64().max(0.001);
        t.bar.set_message(format!(
            "{:.0} records/s {:.1} MB/s",
            m.0 as f64 / secs,
            m.1 as f64 / secs / 1e6
        ));
    }

    fn end(&self) {
        if let Some(d) = self.drawn.get() {
            for t in d.bars.values() {
                t.bar.finish();
            }
            let _ = d.multi.clear();
        }
    }
}

/// One bar of every part's units together: a restore's records written.
#[derive(Default)]
pub struct TotalBar {
    bar: OnceLock<ProgressBar>,
}

impl ProgressSink for TotalBar {
    fn begin(&self, parts: &[(String, u64)]) {
        let total = parts.iter().map(|(_, n)| n).sum();
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(s) =
            ProgressStyle::with_template("restore {bar:40} {pos}/{len} records {per_sec} {eta}")
        {
            bar.set_style(s);
        }
        let _ = self.bar.set(bar);
    }

    fn advance(&self, _part: &str, units: u64, _records: u64, _bytes: u64) {
        if let Some(b) = self.bar.get() {
            b.inc(units);
        }
    }

    fn end(&self) {
        if let Some(b) = self.bar.get() {
            b.finish_and_clear();
        }
    }
}

/// Bars unless the output is JSON (whose reader wants standard error quiet).
pub fn bars_unless(json: bool, sink: impl ProgressSink + 'static) -> Progress {
    if json {
        Progress::default()
    } else {
        Progress::to(sink)
    }
}
