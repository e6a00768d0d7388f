//! The compression stage between the partition workers and the writer. Workers only consume and
//! encode; finished chunks go to a small pool of compression threads (one per core), each keeping
//! its zstd context, and from there to the writer. Whether chunks are compressed at all is the
//! operator's choice ([`CompressionMode`]): on a machine short of cores, compression is what
//! bounds a backup's speed, and `kar compact` can compress an archive later, elsewhere. With
//! `auto`, the level follows how busy the compression threads are ([`Adaptive`]).

use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use serde::{Deserialize, Serialize};

use super::Event;
use crate::format::chunk::{ChunkHeader, SealedChunk};
use crate::format::crypt::Sealer;

/// How record chunks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMode {
    /// Every chunk compressed with zstd; reading waits for compression when the CPU is short.
    #[default]
    Zstd,
    /// Every chunk stored as it is: the fastest backup, the largest archive.
    None,
    /// zstd at a level that follows the pace of the rest of the backup, from chunk to chunk,
    /// within [`AUTO_LEVELS`]: lower when the workers wait for compression, higher when the
    /// compression threads wait for the workers or the writer.
    Auto,
}

impl FromStr for CompressionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(CompressionMode::Zstd),
            "none" => Ok(CompressionMode::None),
            "auto" => Ok(CompressionMode::Auto),
            _ => Err(format!("compression {s:?} is not zstd, none or auto")),
        }
    }
}

impl std::fmt::Display for CompressionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompressionMode::Zstd => "zstd",
            CompressionMode::None => "none",
            CompressionMode::Auto => "auto",
        })
    }
}

/// The zstd levels `--compression auto` moves between. zstd -b over the bench's JSON order events,
/// one core here: level 1 542 MB/s (ratio 4.86), 3 392 MB/s (5.40), 5 138 MB/s (5.68), 9 61 MB/s
/// (6.53), 12 36 MB/s (6.77): above 9 a level costs far more time than it saves space, and zstd's
/// fast levels below 1 win little speed for much space (--fast=1: 641 MB/s, 3.59).
pub const AUTO_LEVELS: RangeInclusive<i32> = 1..=9;

/// How often `--compression auto` looks at how busy compression and the machine were.
const AUTO_WINDOW: Duration = Duration::from_secs(1);

/// The level the compression threads share with `--compression auto`, like `zstd --adapt`. Every
/// [`AUTO_WINDOW`], one thread looks at the window: compression busy under half of its threads'
/// time and a quarter of the machine's CPU time idle (the rest of the backup waits for Kafka or
/// the disk, not for cores), the level goes up one; chunks queued for compression (half its queue
/// or more) while it was busy over 70% of the time, in the window and over the last few (the
/// workers wait for it), down one. Windows, not chunks, are counted, and the last few weigh in,
/// so that a burst of chunks (a throttled client's fetches come in bursts between pauses of
/// seconds) does not outvote the pauses around it; a window is looked at when a chunk is done, so
/// one that spans a pause counts as the windows it spans.
struct Adaptive {
    level: AtomicI32,
    threads: usize,
    /// Nanoseconds spent compressing in the current window, by every thread.
    busy: AtomicU64,
    window: Mutex<Window>,
}

/// The current window of [`Adaptive`]: when it began, the machine's CPU time then, and the busy
/// share of the windows before, decaying by [`AUTO_DECAY`] a window.
struct Window {
    began: Instant,
    cpu: Option<CpuTimes>,
    long_share: f64,
}

/// How much of the long busy share a window keeps: a window's share weighs a quarter, one four
/// windows old a tenth.
const AUTO_DECAY: f64 = 0.75;

impl Adaptive {
    fn new(level: i32, threads: usize) -> Adaptive {
        Adaptive {
            level: AtomicI32::new(level.clamp(*AUTO_LEVELS.start(), *AUTO_LEVELS.end())),
            threads,
            busy: AtomicU64::new(0),
            // Taken as busy at first: a backup short of cores goes down from its first windows.
            window: Mutex::new(Window {
                began: Instant::now(),
                cpu: CpuTimes::now(),
                long_share: 1.0,
            }),
        }
    }

    fn level(&self) -> i32 {
        self.level.load(Ordering::Relaxed)
    }

    /// Counts `busy` time compressing; at the end of a window, moves the level by what it saw,
    /// `queued` chunks waiting for compression of at most `capacity`.
    fn compressed(&self, busy: Duration, queued: usize, capacity: usize) {
        self.busy
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        let Ok(mut w) = self.window.try_lock() else {
            return;
        };
        let elapsed = w.began.elapsed();
        if elapsed < AUTO_WINDOW {
            return;
        }
        let busy = self.busy.swap(0, Ordering::Relaxed) as f64 / 1e9;
        let share = busy / (elapsed.as_secs_f64() * self.threads as f64);
        let cpu = CpuTimes::now();
        let idle = match (&w.cpu, &cpu) {
            (Some(a), Some(b)) => b.idle_share_since(a),
            // Without /proc/stat, the level does not rise on idle cores it cannot see.
            _ => 0.0,
        };
        // A window that ended after a pause with no chunk at all (Kafka holding back a throttled
        // client's fetches for seconds) counts once for every window it spans.
        let windows = (elapsed.as_secs_f64() / AUTO_WINDOW.as_secs_f64()) as i32;
        let kept = AUTO_DECAY.powi(windows.max(1));
        let long_share = w.long_share * kept + share * (1.0 - kept);
        *w = Window {
            began: Instant::now(),
            cpu,
            long_share,
        };
        let step = match auto_step(share, long_share, idle, queued, capacity) {
            0 => return,
            1 => windows.max(1),
            down => down,
        };
        let (low, high) = (*AUTO_LEVELS.start(), *AUTO_LEVELS.end());
        let _ = self
            .level
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some((l + step).clamp(low, high))
            });
        tracing::debug!(
            level = self.level(),
            busy_share = share,
            long_busy_share = long_share,
            idle_share = idle,
            queued,
            "zstd level"
        );
    }
}

/// How `--compression auto` moves the level after a window in which compression was busy
/// `share` of its threads' time (`long_share` over the last windows) and the machine idle `idle`
/// of its CPU time, `queued` chunks of at most `capacity` waiting for compression at its end (see
/// [`Adaptive`]).
fn auto_step(share: f64, long_share: f64, idle: f64, queued: usize, capacity: usize) -> i32 {
    if queued * 2 >= capacity && share > 0.7 && long_share > 0.7 {
        -1
    } else if share < 0.5 && idle >= 0.25 {
        1
    } else {
        0
    }
}

/// The machine's CPU time (Linux `/proc/stat`, in clock ticks): all of it, and the idle part.
struct CpuTimes {
    total: u64,
    idle: u64,
}

impl CpuTimes {
    fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal ...: idle and iowait are idle.
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some(CpuTimes {
            total: fields.iter().take(8).sum(),
            idle,
        })
    }

    fn idle_share_since(&self, before: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(before.total);
        let idle = self.idle.saturating_sub(before.idle);
        if total == 0 {
            0.0
        } else {
            idle as f64 / total as f64
        }
    }
}

struct Job {
    header: ChunkHeader,
    raw: Vec<u8>,
    /// Key, value and header bytes of the chunk's records, for the report.
    bytes: u64,
}

/// The workers' handle on the stage.
#[derive(Clone)]
pub(crate) struct Stage {
    jobs: Option<Sender<Job>>,
    /// Chunk buffers the compression threads are done with, for the workers' next chunks.
    spare: Option<Receiver<Vec<u8>>>,
    tx: SyncSender<Event>,
    /// Seals each chunk in an encrypted archive, where it is compressed (in parallel).
    sealer: Option<Sealer>,
}

impl Stage {
    /// Starts the stage: `threads` compression threads (none for [`CompressionMode::None`]).
    /// Chunks leave it, in whatever order they are done, as [`Event::Chunk`] on `tx`. The threads
    /// end once every `Stage` clone is dropped and the queue is empty.
    pub(crate) fn start(
        mode: CompressionMode,
        level: i32,
        threads: usize,
        tx: SyncSender<Event>,
        sealer: Option<Sealer>,
        spare_max: usize,
    ) -> (Stage, Vec<JoinHandle<()>>) {
        if mode == CompressionMode::None {
            return (
                Stage {
                    jobs: None,
                    spare: None,
                    tx,
                    sealer,
                },
                Vec::new(),
            );
        }
        let threads = threads.max(1);
        // Two waiting chunks per thread: enough that a thread never waits for a worker, small
        // enough that memory stays a few chunk sizes.
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(threads * 2);
        // As many spare buffers as chunks can wait: what a full pipeline holds anyway.
        let (give, spare) = crossbeam_channel::bounded::<Vec<u8>>(threads * 2);
        let adaptive =
            (mode == CompressionMode::Auto).then(|| Arc::new(Adaptive::new(level, threads)));
        let handles = (0..threads)
            .map(|_| {
                let (rx, tx, sealer) = (rx.clone(), tx.clone(), sealer.clone());
                let give = give.clone();
                let adaptive = adaptive.clone();
                std::thread::Builder::new()
                    .name("kar-compress".into())
                    .spawn(move || {
                        compress_loop(
                            level,
                            adaptive.as_deref(),
                            (&rx, &give, spare_max),
                            &tx,
                            sealer.as_ref(),
                        )
                    })
                    .expect("spawning a compression thread")
            })
            .collect();
        (
            Stage {
                jobs: Some(jobs),
                spare: Some(spare),
                tx,
                sealer,
            },
            handles,
        )
    }

    /// A buffer of a chunk already compressed, if one is spare.
    pub(crate) fn spare_buffer(&self) -> Option<Vec<u8>> {
        self.spare.as_ref()?.try_recv().ok()
    }

    /// Hands a finished chunk on. Err when the writer has gone away.
    pub(crate) fn submit(&self, header: ChunkHeader, raw: Vec<u8>, bytes: u64) -> Result<(), ()> {
        let job = Job { header, raw, bytes };
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| ()),
            None => store(job, &self.tx, self.sealer.as_ref()),
        }
    }
}

/// Seals a chunk (§15) when the archive is encrypted.
fn seal(chunk: SealedChunk, raw: &[u8], sealer: Option<&Sealer>) -> SealedChunk {
    match sealer {
        Some(s) => chunk.sealed(raw, s),
        None => chunk,
    }
}

fn store(job: Job, tx: &SyncSender<Event>, sealer: Option<&Sealer>) -> Result<(), ()> {
    let sealed = match sealer {
        Some(_) => {
            let plain = SealedChunk::uncompressed(job.header, job.raw.clone());
            seal(plain, &job.raw, sealer)
        }
        None => SealedChunk::uncompressed(job.header, job.raw),
    };
    tx.send(Event::Chunk(sealed, job.bytes, None))
        .map_err(|_| ())
}

fn compress_loop(
    level: i32,
    adaptive: Option<&Adaptive>,
    (rx, give, spare_max): (&Receiver<Job>, &Sender<Vec<u8>>, usize),
    tx: &SyncSender<Event>,
    sealer: Option<&Sealer>,
) {
    let mut level = adaptive.map_or(level, Adaptive::level);
    let mut zstd = zstd::bulk::Compressor::new(level).ok();
    loop {
        // Every thread takes the next job from one queue (crossbeam's channel has many receivers).
        let Ok(job) = rx.recv() else {
            return;
        };
        let took = Instant::now();
        // Read once: another thread may move it meanwhile, and the chunk reports the level used.
        if let (Some(want), Some(z)) = (adaptive.map(Adaptive::level), zstd.as_mut())
            && want != level
            && z.set_compression_level(want).is_ok()
        {
            level = want;
        }
        let sealed = match zstd.as_mut() {
            Some(z) => SealedChunk::compress_with(job.header.clone(), &job.raw, z).ok(),
            None => None,
        };
        let compressed = Instant::now();
        // zstd fails only when it cannot allocate its context or output; the chunk is then kept
        // as it is rather than lost.
        let res = match sealed {
            Some(s) => {
                let sent = tx
                    .send(Event::Chunk(
                        seal(s, &job.raw, sealer),
                        job.bytes,
                        Some(level),
                    ))
                    .map_err(|_| ());
                // Kept only at a chunk's size (a chunk of one large record's is not); when the
                // workers have buffers enough, it goes back to the allocator.
                if job.raw.capacity() <= spare_max {
                    let _ = give.try_send(job.raw);
                }
                sent
            }
            None => store(job, tx, sealer),
        };
        if res.is_err() {
            return;
        }
        if let Some(a) = adaptive {
            a.compressed(compressed - took, rx.len(), rx.capacity().unwrap_or(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_lowers_the_level_only_when_compression_holds_the_workers_up() {
        // Busy and the queue half full or more: the workers wait for compression.
        assert_eq!(auto_step(0.95, 0.9, 0.0, 4, 4), -1);
        assert_eq!(auto_step(0.75, 0.75, 0.5, 2, 4), -1);
        // Busy but nothing waiting: compression keeps up.
        assert_eq!(auto_step(0.95, 0.9, 0.0, 1, 4), 0);
        // A full queue behind a compression that is mostly idle: the writer holds it up.
        assert_eq!(auto_step(0.3, 0.9, 0.0, 4, 4), 0);
        // A burst after pauses: busy now, not over the last windows.
        assert_eq!(auto_step(0.95, 0.4, 0.0, 4, 4), 0);
    }

    #[test]
    fn auto_raises_the_level_only_with_idle_compression_threads_and_idle_cores() {
        assert_eq!(auto_step(0.2, 0.9, 0.6, 0, 4), 1);
        assert_eq!(auto_step(0.49, 0.2, 0.25, 1, 4), 1);
        // Compression idle, but the machine busy (consumers and broker share its cores): a
        // higher level would take cores from them.
        assert_eq!(auto_step(0.2, 0.2, 0.1, 0, 4), 0);
        // In between: held.
        assert_eq!(auto_step(0.6, 0.6, 0.9, 0, 4), 0);
    }

    #[test]
    fn auto_moves_one_level_a_window_within_its_bounds() {
        let a = Adaptive::new(3, 2);
        assert_eq!(a.level(), 3);
        // The first window is not over yet: nothing moves.
        a.compressed(Duration::from_secs(2), 4, 4);
        assert_eq!(a.level(), 3);
        // A window of 1 s, 2 threads busy 2 s between them, the queue full: down one.
        a.window.lock().unwrap().began = Instant::now() - AUTO_WINDOW;
        a.compressed(Duration::ZERO, 4, 4);
        assert_eq!(a.level(), 2);
        for _ in 0..3 {
            a.busy.store(2_000_000_000, Ordering::Relaxed);
            a.window.lock().unwrap().began = Instant::now() - AUTO_WINDOW;
            a.compressed(Duration::ZERO, 4, 4);
        }
        assert_eq!(a.level(), *AUTO_LEVELS.start());
        // Four idle seconds (no chunk came), the cores idle: up four, not one.
        *a.window.lock().unwrap() = Window {
            began: Instant::now() - 4 * AUTO_WINDOW,
            cpu: Some(CpuTimes { total: 0, idle: 0 }),
            long_share: 1.0,
        };
        a.compressed(Duration::from_millis(10), 0, 4);
        let idle_cores = CpuTimes::now().is_some_and(|c| c.idle * 4 >= c.total);
        if idle_cores {
            assert_eq!(a.level(), *AUTO_LEVELS.start() + 4);
            // A burst right after the pause, compression busy and its queue full: held, the
            // pause still weighs in.
            a.busy.store(2_000_000_000, Ordering::Relaxed);
            a.window.lock().unwrap().began = Instant::now() - AUTO_WINDOW;
            a.compressed(Duration::ZERO, 4, 4);
            assert_eq!(a.level(), *AUTO_LEVELS.start() + 4);
        }
        assert_eq!(Adaptive::new(22, 2).level(), *AUTO_LEVELS.end());
    }
}
