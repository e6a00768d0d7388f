//! The command line: clap argument types, and the mapping from each subcommand to its library call,
//! its output (human or `--json`) and its exit code. Nothing here does work of its own.
//!
//! Exit codes: 0 success; 1 the command ran and found the archive damaged; 2 the command could not
//! run (bad arguments, unreadable or non-archive file).

#[cfg(feature = "kafka")]
mod backup;
mod cat;
mod chain;
mod connection;
mod custody;
#[cfg(feature = "kafka")]
mod diff;
#[cfg(feature = "kafka")]
mod drill;
mod logs;
mod metrics;
pub(crate) mod out;
mod progress;
#[cfg(feature = "kafka")]
mod restore;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use out::{out, outln};

use crate::archive::WriterOptions;
use crate::archive::compact::compact_with_progress;
use crate::archive::inspect::InspectReport;
use crate::archive::repair::{RepairOptions, repair_with_progress};
use crate::archive::verify::{VerifyLevel, VerifyReport};

/// Backup and restore for Apache Kafka and its Schema Registry, into one verifiable file.
#[derive(Debug, Parser)]
#[command(name = "kar", version, about, long_about = None)]
pub struct Cli {
    /// Diagnostics on stderr as text, or as JSON (one event a line, with "command" and "job")
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: logs::LogFormat,
    /// A name for this run, carried by every JSON log event
    #[arg(long, global = true, value_name = "NAME")]
    pub job: Option<String>,
    #[command(flatten)]
    pub metrics: metrics::MetricsArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up topics (every record), topic configs and consumer-group offsets into one archive
    #[cfg(feature = "kafka")]
    Backup(Box<backup::BackupArgs>),
    /// Restore schemas (IDs kept or remapped), topics, records and consumer-group offsets
    #[cfg(feature = "kafka")]
    Restore(Box<restore::RestoreArgs>),
    /// Check every hash in an archive, the index against the chunks, and the root hash
    Verify(VerifyArgs),
    /// Show what an archive holds: version, root hash, topics, partitions, offsets, times, sizes
    Inspect(InspectArgs),
    /// Recover an unfinished or damaged archive into a new file, keeping every intact chunk
    Repair(RepairArgs),
    /// Rewrite an archive with every frame compressed (same content, same root hash)
    Compact(CompactArgs),
    /// Compare a target cluster's topics with the archive, record by record
    #[cfg(feature = "kafka")]
    Diff(Box<diff::DiffArgs>),
    /// The restore drill in one command: restore into scratch topics, read back, decode through
    /// the target registry, diff, clean up
    #[cfg(feature = "kafka")]
    Drill(Box<drill::DrillArgs>),
    /// Print an archive's records, keys and values decoded with its schemas, no cluster needed
    Cat(cat::CatArgs),
    /// List a chain of incremental archives (a full base and its members) and check its links
    Chain(chain::ChainArgs),
    /// Merge a chain (a full base and its members) into one full archive
    Consolidate(chain::ConsolidateArgs),
    /// Remove the archives of a folder that no kept restore point needs
    Prune(chain::PruneArgs),
    /// List the Schema Registry snapshot in an archive, or export it as a plain folder tree
    Schemas(SchemasArgs),
    /// Print every structure of an archive with its offset, decoded fields and bytes (forensics)
    Dump(DumpArgs),
    /// Cut an archive into volumes of at most a size (FAT32 sticks, tape cartridges)
    Split(SplitArgs),
    /// Join a volume set back into the single archive file
    Join(JoinArgs),
    /// Make a minisign key pair for signing archives (NAME.key, NAME.pub)
    Keygen(custody::KeygenArgs),
    /// Countersign an archive: a detached minisign signature beside it (FILE.<key ID>.minisig)
    Sign(custody::SignArgs),
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The archive to cut (never modified)
    pub file: PathBuf,
    /// The first volume: NAME.kar, then NAME.kar.002, ... (none may exist)
    #[arg(long)]
    pub out: PathBuf,
    /// Each volume smaller than this: a number with k, M, G or T (powers of 1024), at least 1M;
    /// 4G fits FAT32
    #[arg(long, value_parser = parse_size)]
    pub volume_size: u64,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The first volume of the set, the others found next to it; or every volume, in any order,
    /// wherever each is (one per USB stick)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The single archive file to write (must not exist)
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// A size: a number, with k, M, G or T for powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" | "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => return Err(format!("unit {other:?}: use k, M, G or T")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4G"))?;
    n.checked_mul(1 << shift)
        .filter(|v| *v >= crate::archive::volume::MIN_VOLUME_SIZE)
        .ok_or_else(|| format!("{s}: a volume is at least 1M"))
}

#[derive(Debug, Args)]
pub struct SchemasArgs {
    /// The archive file
    pub file: PathBuf,
    #[command(flatten)]
    pub unlock: custody::UnlockArgs,
    /// Write DIR/subjects/<subject>/v<N>.json, _metadata.json, _global_config.json, _manifest.json
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Print the snapshot as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The archive file (may be unfinished or damaged)
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The unfinished or damaged archive (never modified)
    pub file: PathBuf,
    /// Where to write the repaired archive [default: FILE.repaired]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the chunks after a hole in a partition too, recording the lost offsets in the
    /// manifest (by default a partition is kept only as far as it continues without a hole)
    #[arg(long)]
    pub keep_gaps: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The archive to compact (never modified)
    pub file: PathBuf,
    /// Where to write the compacted archive (must not exist)
    #[arg(long)]
    pub out: PathBuf,
    /// zstd level, 1 (fastest) to 22 (smallest)
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Compression threads [default: one per core]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive: a file (or a set's first volume, or every volume of the set), or `-` for
    /// standard input, or a FIFO or character device (a tape), verified fully in one forward pass
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// With a stream: write what is read to this new file as well, and say at the end whether it
    /// is a good archive
    #[arg(long, value_name = "FILE")]
    pub tee: Option<PathBuf>,
    /// Check only the footer, manifest, index and root hash (no chunk is read)
    #[arg(long, conflicts_with = "fast")]
    pub quick: bool,
    /// Check every frame's stored bytes against its hash without decompressing
    #[arg(long, conflicts_with = "stored")]
    pub fast: bool,
    /// Check what needs no key (an encrypted archive on a courier's machine): every frame
    /// header and stored hash, the footer and the frame count
    #[arg(long, conflicts_with = "quick")]
    pub stored: bool,
    /// The files (or folders) are a chain of incremental archives: verify each, and the links
    /// from the newest member down to the base (see `kar chain`)
    #[arg(long, conflicts_with_all = ["stored", "tee"])]
    pub chain: bool,
    #[command(flatten)]
    pub unlock: custody::UnlockArgs,
    #[command(flatten)]
    pub trust: custody::TrustArgs,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The archive file (or a set's first volume, or every volume of the set)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub unlock: custody::UnlockArgs,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs a command on the process's one runtime, made here at the edge. Dropping it waits for
/// every librdkafka client still closing: the process exits right after, and no client may be
/// torn down while librdkafka and OpenSSL clean up at exit.
#[cfg(feature = "kafka")]
fn on_runtime(
    f: impl FnOnce(&crate::runtime::Runtime) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let rt = crate::runtime::Runtime::new()?;
    f(&rt)
}

/// Runs the parsed command line; errors become a message on stderr and a non-zero exit code.
pub fn run(cli: Cli) -> ExitCode {
    let command = command_name(&cli.command);
    logs::init(cli.log_format, command, cli.job.as_deref());
    let started = std::time::Instant::now();
    let (metrics, ready) = metrics::RunMetrics::start(&cli.metrics, command, cli.job.as_deref());
    let result = ready.and_then(|()| dispatch(cli.command, &metrics.sink()));
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            logs::error(&error_chain(&e));
            ExitCode::from(2)
        }
    };
    // The report was not delivered (a full disk under a redirection, say): that is a failure.
    let code = match out::failure() {
        Some(e) => {
            logs::error(&format!("writing the output to stdout: {e}"));
            ExitCode::from(2)
        }
        None => code,
    };
    let exit_code = match code {
        c if c == ExitCode::SUCCESS => 0,
        c if c == ExitCode::from(1) => 1,
        _ => 2,
    };
    metrics.finish(exit_code);
    tracing::info!(
        target: "kar::summary",
        exit_code,
        seconds = started.elapsed().as_secs_f64(),
        "kar {command} ended with exit code {exit_code}"
    );
    code
}

/// Runs the command; `metrics` is the sink of the workflows that count into metrics.
fn dispatch(command: Command, metrics: &crate::progress::Progress) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "kafka")]
        Command::Backup(a) => on_runtime(|rt| backup::run(*a, rt, metrics)),
        #[cfg(feature = "kafka")]
        Command::Restore(a) => on_runtime(|rt| restore::run(*a, rt, metrics)),
        Command::Verify(a) => run_verify(a, metrics),
        Command::Inspect(a) => run_inspect(a),
        Command::Repair(a) => run_repair(a),
        Command::Compact(a) => run_compact(a),
        Command::Dump(a) => run_dump(a),
        Command::Split(a) => run_volumes(a.json, || {
            crate::archive::volume::split(&a.file, &a.out, a.volume_size)
        }),
        Command::Join(a) => run_volumes(a.json, || crate::archive::volume::join(&a.files, &a.out)),
        Command::Schemas(a) => run_schemas(a),
        Command::Cat(a) => cat::run(a),
        Command::Chain(a) => chain::run(a),
        Command::Consolidate(a) => chain::run_consolidate(a),
        Command::Prune(a) => chain::run_prune(a),
        #[cfg(feature = "kafka")]
        Command::Diff(a) => on_runtime(|rt| diff::run(*a, rt)),
        #[cfg(feature = "kafka")]
        Command::Drill(a) => on_runtime(|rt| drill::run(*a, rt)),
        Command::Keygen(a) => custody::run_keygen(a),
        Command::Sign(a) => custody::run_sign(a),
    }
}

/// The subcommand's name, as typed.
fn command_name(c: &Command) -> &'static str {
    match c {
        #[cfg(feature = "kafka")]
        Command::Backup(_) => "backup",
        #[cfg(feature = "kafka")]
        Command::Restore(_) => "restore",
        Command::Verify(_) => "verify",
        Command::Inspect(_) => "inspect",
        Command::Repair(_) => "repair",
        Command::Compact(_) => "compact",
        Command::Dump(_) => "dump",
        Command::Split(_) => "split",
        Command::Join(_) => "join",
        Command::Schemas(_) => "schemas",
        Command::Cat(_) => "cat",
        Command::Chain(_) => "chain",
        Command::Consolidate(_) => "consolidate",
        Command::Prune(_) => "prune",
        #[cfg(feature = "kafka")]
        Command::Diff(_) => "diff",
        #[cfg(feature = "kafka")]
        Command::Drill(_) => "drill",
        Command::Keygen(_) => "keygen",
        Command::Sign(_) => "sign",
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run_verify(a: VerifyArgs, metrics: &crate::progress::Progress) -> anyhow::Result<ExitCode> {
    let level = match (a.quick, a.fast, a.stored) {
        (true, _, _) => VerifyLevel::Quick,
        (_, true, _) => VerifyLevel::Fast,
        (_, _, true) => VerifyLevel::Stored,
        _ => VerifyLevel::Full,
    };
    if a.chain {
        let r = crate::archive::chain::check_chain(&a.files, level)?;
        return chain::report(&r, a.json);
    }
    let unlock = a.unlock.unlock()?;
    let file = &a.files[0];
    let report = if a.files.len() > 1 || !is_stream(file) {
        anyhow::ensure!(
            a.tee.is_none(),
            "--tee copies a stream; {} is a file",
            file.display()
        );
        let source = std::sync::Arc::new(crate::archive::source::map_list(&a.files)?);
        with_progress(file, "verify", a.json, |p| {
            Ok::<_, crate::archive::ArchiveError>(crate::archive::verify::verify_shared_with(
                source,
                file,
                level,
                Some(&unlock),
                p,
            ))
        })?
    } else {
        anyhow::ensure!(
            !a.quick && !a.fast && !a.stored,
            "a stream is verified fully in one pass: --quick, --fast and --stored need a file (`kar verify - --tee FILE` keeps one)"
        );
        verify_stream_arg(file, a.tee.as_deref(), &unlock)?
    };
    let mut report = report;
    let trust = a.trust.options(false)?;
    let signatures = if is_stream(file) {
        trust
            .as_ref()
            .map(|t| crate::archive::signing::check_stream(&report, t))
    } else {
        let t = trust.clone().unwrap_or_default();
        signatures_of(&a.files, &t, level != VerifyLevel::Stored)
            .filter(|r| trust.is_some() || !r.signatures.is_empty())
    };
    match signatures {
        Some(s) => {
            report.ok &= s.ok;
            report.signatures = Some(s);
        }
        // Signatures were required and could not be read: not trusted.
        None if trust.as_ref().is_some_and(|t| t.require) => report.ok = false,
        None => {}
    }
    if a.json {
        print_json(&report)?;
    } else {
        print_verify(&report);
    }
    metrics.event(crate::progress::Event::Verified {
        frames: report.frames,
        problems: report.problems.len() as u64,
    });
    metrics.event(crate::progress::Event::ArchiveSize {
        bytes: report.file_bytes,
    });
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

use crate::archive::source::is_stream;

/// The signatures of an archive file or volume set; `None` when it cannot be read (the verify
/// report says why).
fn signatures_of(
    files: &[PathBuf],
    trust: &crate::archive::signing::TrustOptions,
    root_checked: bool,
) -> Option<crate::archive::signing::SignatureReport> {
    let source = crate::archive::source::map_list(files).ok()?;
    Some(crate::archive::signing::check_bytes(
        &source,
        &files[0],
        trust,
        root_checked,
    ))
}

fn verify_stream_arg(
    path: &std::path::Path,
    tee: Option<&std::path::Path>,
    unlock: &crate::archive::crypt::Unlock,
) -> anyhow::Result<VerifyReport> {
    let mut copy = match tee {
        Some(t) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(t)
                .map_err(|e| anyhow::anyhow!("--tee {}: {e}", t.display()))?,
        )),
        None => None,
    };
    let (reader, name) = crate::archive::source::open_stream(path)?;
    let mut report = crate::archive::stream::verify_stream_unlocked(
        reader,
        name,
        copy.as_mut().map(|c| c as &mut dyn std::io::Write),
        &|_| {},
        Some(unlock),
    );
    if let (Some(mut c), Some(t)) = (copy, tee) {
        let synced = std::io::Write::flush(&mut c).and_then(|()| c.get_ref().sync_all());
        if let Err(e) = synced {
            report.ok = false;
            report.problems.push(crate::archive::verify::Problem {
                offset: report.file_bytes,
                structure: "tee".into(),
                message: format!("writing {} failed: {e}", t.display()),
            });
        }
    }
    Ok(report)
}

fn print_verify(r: &VerifyReport) {
    let level = match r.level {
        VerifyLevel::Quick => "quick",
        VerifyLevel::Fast => "fast",
        VerifyLevel::Full => "full",
        VerifyLevel::Stored => "stored (no key: frame headers and stored hashes only)",
    };
    outln!("archive   {}", r.path.display());
    outln!("format    {}", r.format_version.as_deref().unwrap_or("?"));
    if let Some(id) = &r.archive_id {
        outln!("id        {id}");
    }
    outln!(
        "checked   {level}: {} frames, {} chunks, {} records, {} bytes",
        r.frames,
        r.chunks,
        r.records,
        r.file_bytes
    );
    outln!(
        "root      {}",
        r.root_hash.as_deref().unwrap_or("(no footer)")
    );
    if let Some(s) = &r.signatures {
        custody::print_signatures(s);
    }
    if r.ok {
        outln!("result    OK: intact");
        return;
    }
    if r.problems.is_empty() && r.gaps.is_empty() {
        outln!("result    NOT TRUSTED: intact, but not signed by a trusted key");
        return;
    }
    if !r.problems.is_empty()
        && r.problems
            .iter()
            .all(|p| p.structure == crate::archive::verify::KEY)
    {
        for p in &r.problems {
            outln!("result    NOT OPENED: {}", p.message);
        }
        outln!(
            "          (its stored bytes check out; `kar verify --stored` checks them without a key)"
        );
        return;
    }
    if r.problems.is_empty() {
        outln!(
            "result    NOT WHOLE: the file is intact, but {} offset range(s) are lost",
            r.gaps.len()
        );
    } else {
        outln!("result    DAMAGED: {} problem(s)", r.problems.len());
        for p in &r.problems {
            outln!("  - {p}");
        }
    }
    for g in &r.gaps {
        outln!("  - gap: {g}");
    }
}

fn run_inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let unlock = a.unlock.unlock()?;
    let report = crate::archive::inspect::inspect_list(&a.files, Some(&unlock))?;
    if a.json {
        print_json(&report)?;
    } else {
        print_inspect(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn print_inspect(r: &InspectReport) {
    outln!("archive   {}", r.path.display());
    outln!("format    {}   written by {}", r.format_version, r.writer);
    if let Some(id) = &r.archive_id {
        outln!("id        {id}");
    }
    outln!("created   {}", r.created_at);
    outln!("status    {:?}", r.status);
    outln!("root      {}", r.root_hash);
    outln!(
        "content   {} records in {} chunks, {} bytes raw, {} stored, file {} bytes",
        r.records,
        r.chunks,
        r.raw_bytes,
        r.stored_bytes,
        r.file_bytes
    );
    if !r.topics.is_empty() {
        outln!();
        let mut table = out::table(
            &[
                "topic",
                "part",
                "records",
                "first offset",
                "last offset",
                "time range (ms)",
                "raw",
                "stored",
                "complete",
            ],
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        for t in &r.topics {
            for ps in &t.partitions {
                let p = &ps.entry;
                let times = match (p.min_timestamp, p.max_timestamp) {
                    (Some(a), Some(b)) => format!("{a}..{b}"),
                    _ => "-".into(),
                };
                table.add_row(vec![
                    t.name.clone(),
                    p.partition.to_string(),
                    p.records.to_string(),
                    opt(p.first_offset),
                    opt(p.last_offset),
                    times,
                    p.raw_bytes.to_string(),
                    ps.stored_bytes.to_string(),
                    if p.complete { "yes" } else { "NO" }.to_string(),
                ]);
            }
        }
        out::print_table(&table, "");
    }
    if !r.metadata.is_empty() || r.blobs > 0 {
        outln!();
        outln!(
            "metadata  {} document(s), {} blob(s)",
            r.metadata.len(),
            r.blobs
        );
        for m in &r.metadata {
            outln!("  {:<20} {}", m.kind, m.id);
        }
    }
    if !r.schema_subjects.is_empty() {
        outln!();
        let versions: usize = r.schema_subjects.iter().map(|s| s.versions).sum();
        outln!(
            "schema subjects: {} ({versions} versions; `kar schemas` lists them)",
            r.schema_subjects.len()
        );
        for s in &r.schema_subjects {
            let ids: Vec<String> = s.ids.iter().map(u32::to_string).collect();
            outln!(
                "  {:<40} {} versions, ids {}",
                s.subject,
                s.versions,
                ids.join(",")
            );
        }
    }
    if !r.groups.is_empty() {
        outln!();
        outln!("consumer groups: {}", r.groups.len());
        for g in &r.groups {
            outln!("  {:<40} {} partition offsets", g.group, g.partitions);
        }
    }
    for n in &r.notes {
        outln!("note      {n}");
    }
}

fn run_repair(a: RepairArgs) -> anyhow::Result<ExitCode> {
    let out = a.out.clone().unwrap_or_else(|| {
        let mut p = a.file.clone().into_os_string();
        p.push(".repaired");
        PathBuf::from(p)
    });
    let r = with_progress(&a.file, "repair", a.json, |p| {
        let opts = RepairOptions {
            writer: WriterOptions::default(),
            keep_gaps: a.keep_gaps,
        };
        repair_with_progress(&a.file, &out, opts, p)
    })?;
    if a.json {
        print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "input     {} ({})",
        r.input.display(),
        if r.input_finished {
            "finished"
        } else {
            "unfinished: no footer"
        }
    );
    outln!("output    {}", r.output.display());
    outln!(
        "kept      {} chunks ({} records), {} blobs, {} metadata documents; manifest {}",
        r.kept_chunks,
        r.kept_records,
        r.kept_blobs,
        r.kept_metadata,
        if r.manifest_recovered {
            "recovered"
        } else {
            "lost (rebuilt from the chunks)"
        }
    );
    outln!(
        "lost      {} bytes of torn tail, {} problem(s)",
        r.lost_tail_bytes,
        r.problems.len()
    );
    for p in &r.problems {
        outln!("  - {p}");
    }
    out::list("dropped  ", &r.dropped_chunks);
    for g in &r.gaps {
        outln!("gap       {g} (kept chunks after it: --keep-gaps)");
    }
    out::list("incomplete", &r.incomplete_partitions);
    outln!("root      {}", r.root_hash);
    Ok(ExitCode::SUCCESS)
}

fn run_volumes(
    json: bool,
    f: impl FnOnce() -> Result<crate::archive::volume::VolumesReport, crate::archive::ArchiveError>,
) -> anyhow::Result<ExitCode> {
    let r = f()?;
    if json {
        print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    for v in &r.volumes {
        outln!("volume    {}", v.display());
    }
    outln!("archive   {} ({} bytes)", r.output.display(), r.bytes);
    if r.root_hash.is_empty() {
        outln!(
            "unfinished: the set has no last volume (its writer stopped); `kar repair` the joined file"
        );
    } else {
        outln!("root      {}", r.root_hash);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_compact(a: CompactArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=22).contains(&a.zstd_level),
        "--zstd-level {} is not between 1 and 22",
        a.zstd_level
    );
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    let r = with_progress(&a.file, "compact", a.json, |p| {
        compact_with_progress(&a.file, &a.out, a.zstd_level, threads, p)
    })?;
    if a.json {
        print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("input     {} ({} bytes)", r.input.display(), r.input_bytes);
    outln!(
        "output    {} ({} bytes, {:.2}x smaller)",
        r.output.display(),
        r.output_bytes,
        r.input_bytes as f64 / r.output_bytes.max(1) as f64
    );
    outln!(
        "frames    {} ({} record chunks; {} were uncompressed), zstd level {}",
        r.frames,
        r.chunks,
        r.were_uncompressed,
        r.zstd_level
    );
    outln!("root      {} (unchanged)", r.root_hash);
    Ok(ExitCode::SUCCESS)
}

fn run_dump(a: DumpArgs) -> anyhow::Result<ExitCode> {
    let source = crate::archive::Source::map(&a.file)?;
    out!("{}", crate::archive::dump::dump(&source));
    Ok(ExitCode::SUCCESS)
}

/// The error and its causes, skipping a cause whose text the message already includes (our
/// errors often name their source inline, so that `to_string()` alone is complete).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// Runs `f` with a byte progress bar over `file` on stderr (hidden when stderr is not a terminal
/// or the output is JSON); `f` gets the callback to report the input offset reached.
fn with_progress<T>(
    file: &std::path::Path,
    what: &str,
    hidden: bool,
    f: impl FnOnce(&(dyn Fn(u64) + Sync)) -> Result<T, crate::archive::ArchiveError>,
) -> Result<T, crate::archive::ArchiveError> {
    let total = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(total, what, hidden);
    let r = f(&|at| bar.set_position(at));
    bar.finish_and_clear();
    r
}

fn progress_bar(total: u64, what: &str, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_string());
    bar
}

fn run_schemas(a: SchemasArgs) -> anyhow::Result<ExitCode> {
    let unlock = a.unlock.unlock()?;
    let archive = crate::archive::Archive::open_with(&a.file, Some(&unlock))?;
    let Some(snap) = crate::registry::snapshot::read_from_archive(&archive)? else {
        anyhow::bail!(
            "{} holds no Schema Registry snapshot (it was backed up without --registry)",
            a.file.display()
        );
    };
    if let Some(dir) = &a.export {
        let r = crate::registry::export::export(&archive, &snap, dir)?;
        if a.json {
            print_json(&r)?;
        } else {
            outln!(
                "exported {} subjects, {} versions into {} ({} files)",
                r.subjects,
                r.versions,
                r.dir.display(),
                r.files
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        print_json(&snap)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "registry  {} (captured {})",
        snap.source,
        crate::archive::inspect::utc(snap.captured_at_ms)
    );
    outln!(
        "global    compatibility {}, mode {}",
        snap.global.compatibility.as_deref().unwrap_or("-"),
        snap.global.mode.as_deref().unwrap_or("-")
    );
    if let Some(c) = snap.global.own_config().filter(data_contract) {
        outln!("          configuration {}", c.request());
    }
    outln!();
    for snap in std::iter::once(&snap).chain(&snap.contexts) {
        print_subjects(snap);
    }
    for k in snap.dek_registry.iter().flatten() {
        outln!(
            "\nKEK {}{}: KMS {} key {}, shared {}",
            k.name,
            if k.deleted { " (deleted)" } else { "" },
            k.kms_type,
            k.kms_key_id,
            k.shared
        );
        for d in &k.deks {
            outln!(
                "  DEK {} v{} {}{}",
                d.subject,
                d.version,
                d.algorithm,
                if d.deleted { "  [soft-deleted]" } else { "" }
            );
        }
    }
    outln!();
    let order: Vec<String> = snap.restore_order.iter().map(|sv| sv.to_string()).collect();
    outln!(
        "restore order ({}): {}",
        if snap.order_complete {
            "complete"
        } else {
            "INCOMPLETE"
        },
        order.join(", ")
    );
    for p in &snap.order_problems {
        outln!("  - {p}");
    }
    if !snap.pulled_in.is_empty() {
        outln!("taken because referenced: {}", snap.pulled_in.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// A configuration with more than a compatibility level: shown whole.
fn data_contract(c: &crate::registry::snapshot::ConfigState) -> bool {
    c.request().as_object().is_some_and(|m| m.len() > 1) || c.compatibility.is_none()
}

/// One context's subjects and versions (qualified names outside the default context).
fn print_subjects(snap: &crate::registry::snapshot::RegistrySnapshot) {
    if let Some(c) = &snap.context {
        outln!(
            "\ncontext {c}: compatibility {}, mode {}",
            snap.global.compatibility.as_deref().unwrap_or("-"),
            snap.global.mode.as_deref().unwrap_or("-")
        );
    }
    let mut table = out::table(
        &[
            "subject",
            "version",
            "id",
            "type",
            "compatibility",
            "mode",
            "references",
        ],
        &[1, 2],
    );
    for s in &snap.subjects {
        for v in &s.versions {
            let refs: Vec<String> = v
                .references
                .iter()
                .map(|r| format!("{} v{} as {}", r.subject, r.version, r.name))
                .collect();
            let mut refs = refs.join(", ");
            if v.deleted {
                refs.push_str("  [soft-deleted]");
            }
            table.add_row(vec![
                if s.deleted {
                    format!("{} (deleted)", snap.qualified(&s.subject))
                } else {
                    snap.qualified(&s.subject)
                },
                v.version.to_string(),
                v.id.to_string(),
                v.schema_type.to_string(),
                s.compatibility.as_deref().unwrap_or("-").to_string(),
                s.mode.as_deref().unwrap_or("-").to_string(),
                refs,
            ]);
        }
    }
    out::print_table(&table, "");
    for s in &snap.subjects {
        for v in &s.versions {
            if let Some(m) = &v.metadata {
                outln!("{} v{} metadata {m}", snap.qualified(&s.subject), v.version);
            }
            if let Some(r) = &v.rule_set {
                outln!("{} v{} rule set {r}", snap.qualified(&s.subject), v.version);
            }
        }
        if let Some(c) = s.own_config().filter(data_contract) {
            outln!(
                "{} configuration {}",
                snap.qualified(&s.subject),
                c.request()
            );
        }
    }
}
