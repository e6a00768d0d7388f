//! `kar backup` arguments, the YAML config file they can also come from, and the summary output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::connection::{KafkaSettings, RegistryFlags};
use super::out::{self, outln};
use super::settings::{Merge, settings};
use clap::Args;
use serde::Deserialize;

use crate::archive::writer::OutputKind;
use crate::backup::{BackupOptions, BackupReport, CompressionMode, backup};
use crate::config::load_yaml;
use crate::format::manifest::ArchiveStatus;
use crate::registry::snapshot::SubjectFilter;

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub settings: BackupSettings,
    /// YAML config file; command-line flags override it
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Back up until stopped: a chain of members in --out-dir, each read as records come and
    /// closed at its roll (--roll-every); SIGTERM closes the current member cleanly
    #[arg(
        long,
        requires = "out_dir",
        requires = "roll_every",
        conflicts_with = "out"
    )]
    pub continuous: bool,
    /// The folder of a continuous backup's chain: the newest complete member in it is continued
    #[arg(long, value_name = "DIR", requires = "continuous")]
    pub out_dir: Option<PathBuf>,
    /// When a member is closed: a time (90s, 30m, 1h, 1d) or a size of archive (512M, 2G);
    /// repeat for both, whichever comes first
    #[arg(long, value_name = "TIME|SIZE", requires = "continuous")]
    pub roll_every: Vec<crate::backup::continuous::Roll>,
    /// Keep this many newest members (and what their chains need), removing older ones; a new
    /// full base is taken every N members so that old chains can go
    #[arg(long, value_name = "N", requires = "continuous")]
    pub retain: Option<usize>,
    /// Stop after this many members
    #[arg(long, value_name = "N", requires = "continuous")]
    pub members: Option<usize>,
    /// Share the partitions with the other processes of this name (on any host) through Kafka's
    /// group protocol; each writes its own chain in its own --out-dir (needs --topics)
    #[arg(long, value_name = "NAME", requires = "continuous")]
    pub group: Option<String>,
    /// Seconds the group waits for a silent process before its partitions go to the others
    #[arg(long, value_name = "SECS", default_value_t = 45, requires = "group")]
    pub session_timeout: u64,
}

settings! {
    /// What to back up and how: the flags, and the config file's `backup:` section.
    pub struct BackupSettings {
        /// Subjects to capture, as regular expressions matching whole names (repeatable)
        /// [default: all]; subjects they reference are taken too, and a subject named literally
        /// that has a configuration but no version (an alias), which no registry listing shows
        #[arg(long = "subjects", value_name = "REGEX")]
        pub subjects: Vec<String>,
        /// Subjects to leave out (repeatable)
        #[arg(long = "exclude-subjects", value_name = "REGEX")]
        pub exclude_subjects: Vec<String>,
        /// The archive to write: a new file, or `-` for standard output, or an existing FIFO or
        /// character device (a tape drive); reports then go to standard error
        #[arg(long)]
        pub out: Option<PathBuf>,
        /// Topics to back up, as regular expressions matching whole names (repeatable) [default:
        /// all but internal topics]
        #[arg(long = "topics", value_name = "REGEX")]
        pub topics: Vec<String>,
        /// Topics to leave out (repeatable)
        #[arg(long = "exclude", value_name = "REGEX")]
        pub exclude: Vec<String>,
        /// Consumer groups whose offsets to capture [default: all but kar's restore-progress
        /// groups, kar-restore.*]
        #[arg(long, value_name = "REGEX")]
        pub groups: Option<String>,
        /// Back up only records from this time on (RFC 3339, or ms since the epoch)
        #[arg(long, value_name = "TS")]
        pub from_time: Option<String>,
        /// Back up only records before this time (RFC 3339, or ms since the epoch)
        #[arg(long, value_name = "TS")]
        pub until_time: Option<String>,
        /// Target uncompressed chunk size in bytes, 1 KiB to 64 MiB [default: 2097152]
        #[arg(long)]
        pub chunk_size: Option<usize>,
        /// Cut the archive into volumes, each smaller than this (k, M, G or T, powers of 1024;
        /// at least 1M; 4G fits FAT32): --out NAME.kar, then NAME.kar.002, ...
        #[arg(long, value_parser = crate::cli::parse_size)]
        pub volume_size: Option<u64>,
        /// Continue a chain: back up only what is new since this archive (the chain's newest,
        /// checked first), with the complete metadata and registry of now; schema texts the
        /// chain already holds are named, not stored again
        #[arg(long, value_name = "PREV")]
        pub incremental_from: Option<PathBuf>,
        /// Sign the archive with this minisign secret key (passphrase from
        /// KAR_SIGNING_PASSPHRASE or the terminal): a signature frame inside it, and a detached
        /// OUT.minisig beside it that `minisign -Vm OUT -p KEY.pub` checks
        #[arg(long, value_name = "KEY")]
        pub sign_with: Option<PathBuf>,
        /// Where the detached signature goes [default: OUT.minisig; none for a stream unless
        /// given]
        #[arg(long, value_name = "FILE")]
        pub signature_out: Option<PathBuf>,
        /// Encrypt the archive to this recipient (repeatable): an age public key (age1...), an
        /// SSH public key (ssh-ed25519, ssh-rsa), or a file of them (e.g. ~/.ssh/id_ed25519.pub)
        #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
        pub encrypt_to: Vec<String>,
        /// Encrypt the archive to a passphrase too (from KAR_ARCHIVE_PASSPHRASE, or asked twice
        /// on the terminal)
        #[arg(long)]
        pub encrypt_passphrase: bool,
        /// zstd level, 1 to 22 [default: 3]
        #[arg(long)]
        pub zstd_level: Option<i32>,
        /// How record chunks are stored: `zstd`; `auto`, zstd at a level from 1 to 9 that
        /// follows the backup's pace chunk by chunk (lower when compression holds the workers
        /// up, higher when it waits for them or for the disk); or `none` for the fastest backup
        /// when CPU is short (`kar compact` compresses the archive later) [default: zstd]
        #[arg(long, value_name = "MODE")]
        pub compression: Option<CompressionMode>,
        /// Partitions consumed at once, each worker with its own consumer [default: 4]
        #[arg(long)]
        pub concurrency: Option<usize>,
        /// Threads compressing record chunks [default: one per core]
        #[arg(long)]
        pub compression_threads: Option<usize>,
        /// Seconds a partition may make no progress before it fails [default: 60]
        #[arg(long)]
        pub stall_timeout: Option<u64>,
        /// Seconds to wait for transactions open at the start to end; the records of one still
        /// open are left out, with a warning [default: 10]
        #[arg(long, value_name = "SECONDS")]
        pub wait_for_transactions: Option<u64>,
        /// Bytes each worker's consumer may prefetch, at least 64 KiB [default: 8388608]
        #[arg(long)]
        pub fetch_buffer: Option<usize>,
    }
}

/// The config file: `kafka:` (connection), `registry:` and `backup:` (everything else).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub registry: RegistryFlags,
    #[serde(default)]
    pub backup: BackupSettings,
}

/// Parses RFC 3339 (`2026-11-27T10:00:00Z`) or milliseconds since the epoch.
pub fn parse_time(s: &str, what: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| anyhow::anyhow!("{what} {s:?} is neither RFC 3339 (2026-11-27T10:00:00Z) nor milliseconds since the epoch: {e}"))?;
    Ok(ts.as_millisecond())
}

/// The command line with the values of secret flags replaced, for the provenance record.
pub fn redacted_command_line() -> Vec<String> {
    let secret = [
        "--sasl-password",
        "--ssl-key-password",
        "--registry-password",
        "--registry-token",
    ];
    let mut out = Vec::new();
    let mut hide_next = false;
    for a in std::env::args() {
        if hide_next {
            out.push("***".into());
            hide_next = false;
        } else if secret.contains(&a.as_str()) {
            out.push(a);
            hide_next = true;
        } else if let Some(flag) = secret.iter().find(|f| a.starts_with(&format!("{f}="))) {
            out.push(format!("{flag}=***"));
        } else {
            out.push(without_url_credentials(&a));
        }
    }
    out
}

/// `scheme://user:password@host/…` → `scheme://***@host/…`, wherever it appears in an argument.
fn without_url_credentials(arg: &str) -> String {
    match (arg.find("://"), arg.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 && !arg[s + 3..at].contains('/') => {
            format!("{}***{}", &arg[..s + 3], &arg[at..])
        }
        _ => arg.to_string(),
    }
}

pub fn options(a: &BackupArgs, cancel: Arc<AtomicBool>) -> anyhow::Result<BackupOptions> {
    let file: ConfigFile = match &a.config {
        Some(p) => load_yaml(p)?,
        None => ConfigFile::default(),
    };
    let kafka = a.kafka.clone().over(file.kafka).connection();
    let b = a.settings.clone().over(file.backup);
    // A continuous backup names each member's file itself, in --out-dir.
    let out = b.out.or_else(|| a.out_dir.clone()).ok_or_else(|| {
        anyhow::anyhow!("no output file: give --out FILE (or backup.out in the config file)")
    })?;
    let mut o = BackupOptions::new(kafka, out);
    o.topics = b.topics;
    o.exclude = b.exclude;
    o.groups = b.groups;
    o.registry = a.registry.clone().over(file.registry).settings()?;
    o.subjects = SubjectFilter {
        include: b.subjects,
        exclude: b.exclude_subjects,
    };
    let time = |s: Option<String>, flag| s.map(|s| parse_time(&s, flag)).transpose();
    o.from_time = time(b.from_time, "--from-time")?;
    o.until_time = time(b.until_time, "--until-time")?;
    // Ranges are checked by the library (BackupOptions::check), for every caller.
    if let Some(v) = b.chunk_size {
        o.writer.chunk_target_bytes = v;
    }
    o.volume_size = b.volume_size;
    o.incremental_from = b.incremental_from;
    if let Some(k) = &b.sign_with {
        o.writer.signer = Some(Arc::new(super::custody::load_key(k)?));
    }
    o.signature_out = b.signature_out;
    o.writer.sealing = super::custody::sealing(&b.encrypt_to, b.encrypt_passphrase)?;
    if let Some(v) = b.zstd_level {
        o.writer.zstd_level = v;
    }
    if let Some(v) = b.compression {
        anyhow::ensure!(
            !(v == CompressionMode::Auto && b.zstd_level.is_some()),
            "--zstd-level does not go with --compression auto, which chooses the level itself"
        );
        o.compression = v;
    }
    if let Some(v) = b.concurrency {
        o.concurrency = v;
    }
    if let Some(v) = b.compression_threads {
        anyhow::ensure!(v >= 1, "--compression-threads must be at least 1");
        o.compression_threads = v;
    }
    if let Some(v) = b.stall_timeout {
        o.stall_timeout = Duration::from_secs(v);
    }
    if let Some(v) = b.wait_for_transactions {
        o.settle = Duration::from_secs(v);
    }
    if let Some(v) = b.fetch_buffer {
        o.fetch_buffer_bytes = v;
    }
    o.command_line = redacted_command_line();
    o.cancel = cancel;
    o.progress = super::progress::bars_unless(a.json, super::progress::TopicBars::default());
    Ok(o)
}

pub fn run(
    a: BackupArgs,
    rt: &crate::runtime::Runtime,
    metrics: &crate::progress::Progress,
) -> anyhow::Result<ExitCode> {
    if a.continuous {
        return run_continuous(a, rt, metrics);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C (and SIGTERM) stop the workers; the archive is finished as partial.
    signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone())?;
    let mut opts = options(&a, cancel)?;
    opts.progress = opts.progress.and(metrics.clone()).and(super::logs::sink());
    if matches!(OutputKind::of(&opts.out), Ok(OutputKind::Stdout)) {
        anyhow::ensure!(
            !std::io::IsTerminal::is_terminal(&std::io::stdout()),
            "--out {} writes the archive to standard output, which is a terminal: redirect it to a file, a pipe or a device",
            opts.out.display()
        );
        out::to_stderr();
    }
    let report = backup(rt, &opts)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    for w in &report.warnings {
        super::logs::warning(&w.to_string());
    }
    // Records lost between two members (retention outran the backups): the chain is not whole.
    Ok(
        if report.status == ArchiveStatus::Complete && !report.chain_lost_records() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

/// `--continuous`: members until stopped. Ctrl-C and SIGTERM close the current member cleanly
/// (complete, renamed into place) and end the run.
fn run_continuous(
    a: BackupArgs,
    rt: &crate::runtime::Runtime,
    metrics: &crate::progress::Progress,
) -> anyhow::Result<ExitCode> {
    use crate::backup::continuous::{ContinuousOptions, Roll};
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut opts = options(&a, Arc::new(AtomicBool::new(false)))?;
    opts.progress = crate::progress::Progress::default()
        .and(metrics.clone())
        .and(super::logs::sink());
    let roll = a.roll_every.iter().fold(Roll::default(), |r, x| Roll {
        every: r.every.or(x.every),
        bytes: r.bytes.or(x.bytes),
    });
    let c = ContinuousOptions {
        dir: a.out_dir.clone().expect("clap requires it"),
        roll,
        retain: a.retain,
        stop,
        members: a.members,
        group: a
            .group
            .clone()
            .map(|name| crate::backup::continuous::GroupSettings {
                name,
                session_timeout: Duration::from_secs(a.session_timeout),
            }),
    };
    let json = a.json;
    let report = crate::backup::continuous::run(rt, &opts, &c, &|r| {
        if !json {
            outln!(
                "{}: {} records, {} bytes, {}",
                r.out.display(),
                r.records,
                r.archive_bytes,
                if r.status == ArchiveStatus::Complete && !r.chain_lost_records() {
                    "complete"
                } else {
                    "NOT WHOLE"
                }
            );
        }
        for w in &r.warnings {
            super::logs::warning(&format!("{}: {w}", r.out.display()));
        }
    })?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(r: &BackupReport) {
    let mut table = out::table(&["topic", "partitions", "records", "complete"], &[1, 2, 3]);
    for t in &r.topics {
        let records: u64 = t.partitions.iter().map(|p| p.records).sum();
        let complete = t.partitions.iter().filter(|p| p.complete).count();
        table.add_row(vec![
            t.name.clone(),
            t.partitions.len().to_string(),
            records.to_string(),
            format!("{complete}/{}", t.partitions.len()),
        ]);
    }
    out::print_table(&table, "");
    for t in &r.topics {
        for p in t.partitions.iter().filter(|p| p.error.is_some()) {
            outln!(
                "{} partition {}: {}",
                t.name,
                p.partition,
                p.error.as_deref().unwrap_or_default()
            );
        }
    }
    let mb = r.record_bytes as f64 / 1e6;
    outln!(
        "\n{} records ({mb:.1} MB) from {} topics, {} consumer groups, in {:.1}s ({:.1} MB/s); archive {} bytes",
        r.records,
        r.topics.len(),
        r.groups,
        r.seconds,
        mb / r.seconds.max(0.001),
        r.archive_bytes
    );
    if r.compression == CompressionMode::Auto {
        let levels: Vec<String> = r
            .zstd_levels
            .iter()
            .map(|(l, n)| format!("{l}: {n}"))
            .collect();
        outln!("zstd levels chosen (level: chunks): {}", levels.join(", "));
    }
    if r.chunks_uncompressed > 0 {
        outln!(
            "{} of {} record chunks stored uncompressed; `kar compact` compresses them",
            r.chunks_uncompressed,
            r.chunks
        );
    }
    if let Some(g) = &r.registry {
        outln!(
            "schema registry {}: {} subjects, {} versions, {} distinct schema texts, {} requests",
            g.source,
            g.subjects,
            g.versions,
            g.schema_texts,
            g.requests
        );
        if !g.pulled_in.is_empty() {
            outln!("  taken because referenced: {}", g.pulled_in.join(", "));
        }
        if !g.order_complete {
            outln!("  WARNING: no complete restore order; restore will refuse it unless forced:");
        }
        for p in &g.order_problems {
            outln!("  - {p}");
        }
    }
    if let Some(p) = &r.parent {
        outln!(
            "chain member {} of parent {} (root {}): {} schema texts named, not stored again",
            p.depth,
            p.archive_id,
            p.root,
            r.inherited_blobs.unwrap_or(0)
        );
    }
    for c in r.changes.iter().flatten() {
        let at = c.partition.map_or(String::new(), |p| format!("/{p}"));
        outln!("  {:?} {}{at}: {}", c.kind, c.topic, c.detail);
    }
    outln!("status  {:?}", r.status);
    outln!("archive {}", r.out.display());
    for v in r.volumes.iter().skip(1) {
        outln!("volume  {}", v.display());
    }
    outln!("root    {}", r.root_hash);
    if let Some(k) = &r.signed_by {
        match &r.signature_file {
            Some(f) => outln!("signed  by key {k}; detached signature {}", f.display()),
            None => outln!(
                "signed  by key {k} (inside the archive; no detached signature for a stream without --signature-out)"
            ),
        }
    }
}
