//! The compression stage between the partition workers and the writer. Workers only consume and
//! encode; finished chunks go to a small pool of compression threads (one per core), each keeping
//! its zstd context, and from there to the writer. Whether chunks are compressed at all is the
//! operator's choice ([`CompressionMode`]): on a machine short of cores, compression is what
//! bounds a backup's speed, and `kar compact` can compress an archive later, elsewhere.

use std::str::FromStr;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

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
}

impl FromStr for CompressionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(CompressionMode::Zstd),
            "none" => Ok(CompressionMode::None),
            _ => Err(format!("compression {s:?} is neither zstd nor none")),
        }
    }
}

impl std::fmt::Display for CompressionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompressionMode::Zstd => "zstd",
            CompressionMode::None => "none",
        })
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
    ) -> (Stage, Vec<JoinHandle<()>>) {
        if mode == CompressionMode::None {
            return (
                Stage {
                    jobs: None,
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
        let handles = (0..threads)
            .map(|_| {
                let (rx, tx, sealer) = (rx.clone(), tx.clone(), sealer.clone());
                std::thread::Builder::new()
                    .name("kar-compress".into())
                    .spawn(move || compress_loop(level, &rx, &tx, sealer.as_ref()))
                    .expect("spawning a compression thread")
            })
            .collect();
        (
            Stage {
                jobs: Some(jobs),
                tx,
                sealer,
            },
            handles,
        )
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
    tx.send(Event::Chunk(sealed, job.bytes)).map_err(|_| ())
}

fn compress_loop(level: i32, rx: &Receiver<Job>, tx: &SyncSender<Event>, sealer: Option<&Sealer>) {
    let mut zstd = zstd::bulk::Compressor::new(level).ok();
    // Every thread takes the next job from one queue (crossbeam's channel has many receivers).
    while let Ok(job) = rx.recv() {
        let sealed = match zstd.as_mut() {
            Some(z) => SealedChunk::compress_with(job.header.clone(), &job.raw, z).ok(),
            None => None,
        };
        // zstd fails only when it cannot allocate its context or output; the chunk is then kept
        // as it is rather than lost.
        let res = match sealed {
            Some(s) => tx
                .send(Event::Chunk(seal(s, &job.raw, sealer), job.bytes))
                .map_err(|_| ()),
            None => store(job, tx, sealer),
        };
        if res.is_err() {
            return;
        }
    }
}
