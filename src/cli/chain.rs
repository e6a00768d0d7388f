//! `kar chain FILES|DIR...` and `kar verify --chain`: a chain of archives listed and checked.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::out::outln;
use crate::archive::chain::{ChainReport, check_chain};
use crate::archive::verify::VerifyLevel;

#[derive(Debug, Args)]
pub struct ChainArgs {
    /// The chain's archives, or folders holding them (any order): the deepest member is the
    /// newest, and the chain is followed from it down to its base
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Verify every archive fully (every chunk decoded) instead of quickly (footer, manifest,
    /// index, root)
    #[arg(long)]
    pub full: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// The arguments are the chains of a continuous group's processes (a folder or archive of
    /// each): checked together, every partition's offsets covered exactly once across them
    #[arg(long)]
    pub set: bool,
}

#[derive(Debug, Args)]
pub struct ConsolidateArgs {
    /// The chain's archives, or folders holding them (any order)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The full archive to write (must not exist)
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `kar consolidate`: exit 0 when the output is whole, 1 when the chain lost records (they are
/// the output's gaps) or its newest archive of a partition is partial.
pub fn run_consolidate(a: ConsolidateArgs) -> anyhow::Result<ExitCode> {
    let r = crate::archive::consolidate::consolidate(
        &a.files,
        &a.out,
        crate::archive::WriterOptions::default(),
    )?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        outln!(
            "consolidated {} archives into {}",
            r.from.len(),
            r.out.display()
        );
        outln!(
            "records   {} in {} chunks, {} schema texts",
            r.records,
            r.chunks,
            r.blobs
        );
        outln!("id        {}", r.archive_id);
        outln!("root      {}", r.root_hash);
        super::out::list("LOST     ", &r.gaps);
        super::out::list("INCOMPLETE", &r.incomplete);
        outln!("status    {:?}", r.status);
    }
    Ok(
        if r.status == crate::format::manifest::ArchiveStatus::Complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The folder of archives (full backups and chain members)
    pub dir: PathBuf,
    /// Keep the newest N restore points (every archive is one, as of its backup's time)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: usize,
    /// Keep the newest restore point of each of the newest D days that have one (UTC)
    #[arg(long, value_name = "D", default_value_t = 0)]
    pub keep_daily: usize,
    /// Say what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `kar prune`: exit 0, or 1 when a kept point's chain is missing an archive.
pub fn run_prune(a: PruneArgs) -> anyhow::Result<ExitCode> {
    let opts = crate::archive::prune::PruneOptions {
        keep_last: a.keep_last,
        keep_daily: a.keep_daily,
        dry_run: a.dry_run,
    };
    let r = crate::archive::prune::prune(&a.dir, &opts)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for k in &r.kept {
            outln!("keep      {} ({})", k.path.display(), k.why.join(", "));
        }
        let verb = if r.dry_run || r.refused {
            "would remove"
        } else {
            "removed"
        };
        for p in &r.removed {
            outln!("{verb} {}", p.display());
        }
        super::out::list("BROKEN   ", &r.broken);
        if r.refused {
            outln!("nothing removed: a kept restore point's chain is incomplete");
        }
        super::out::list("not an archive, left alone:", &r.other_files);
    }
    Ok(if r.broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn run(a: ChainArgs) -> anyhow::Result<ExitCode> {
    let level = if a.full {
        VerifyLevel::Full
    } else {
        VerifyLevel::Quick
    };
    if a.set {
        let set = crate::archive::set::open_set(&a.files, level)?;
        return set_report(&set.report, a.json);
    }
    report(&check_chain(&a.files, level)?, a.json)
}

/// Prints a set's report; exit 0 when it is whole, 1 when not.
fn set_report(r: &crate::archive::set::SetReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
    } else {
        for (i, c) in r.chains.iter().enumerate() {
            outln!(
                "chain {i}: {} archives, {} records{}",
                c.members.len(),
                c.members.iter().map(|m| m.records).sum::<u64>(),
                c.members
                    .first()
                    .map(|m| format!(", base {}", m.path.display()))
                    .unwrap_or_default()
            );
        }
        let mut table = super::out::table(
            &["topic", "partition", "from", "to", "pieces"],
            &[1, 2, 3, 4],
        );
        for p in &r.partitions {
            table.add_row(vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.from.to_string(),
                p.to.to_string(),
                p.pieces.len().to_string(),
            ]);
        }
        super::out::print_table(&table, "");
        for e in &r.empty {
            outln!(
                "empty     {}: no archive (a process that finished no member)",
                e.display()
            );
        }
        super::out::list("PROBLEM ", &r.problems);
        super::out::list("GAP     ", &r.gaps);
        super::out::list("OVERLAP ", &r.overlaps);
        super::out::list("LOST    ", &r.lost);
        outln!(
            "result    {}",
            if r.ok {
                "OK: every chain intact, every partition covered exactly once"
            } else {
                "NOT WHOLE"
            }
        );
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints a chain's report; exit 0 when it is whole, 1 when not.
pub fn report(r: &ChainReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print(r);
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(r: &ChainReport) {
    let mut table = super::out::table(
        &[
            "depth",
            "archive",
            "id",
            "created",
            "records",
            "inherited",
            "intact",
        ],
        &[0, 4, 5],
    );
    for m in &r.members {
        table.add_row(vec![
            m.depth.to_string(),
            m.path.display().to_string(),
            m.archive_id.clone(),
            jiff::Timestamp::from_millisecond(m.created_at_ms)
                .map_or_else(|_| m.created_at_ms.to_string(), |t| t.to_string()),
            m.records.to_string(),
            m.inherited_blobs.to_string(),
            if m.intact { "yes" } else { "NO" }.to_string(),
        ]);
    }
    super::out::print_table(&table, "");
    for m in &r.members {
        for c in &m.changes {
            let at = c.partition.map_or(String::new(), |p| format!("/{p}"));
            outln!(
                "member {}: {:?} {}{at}: {}",
                m.depth,
                c.kind,
                c.topic,
                c.detail
            );
        }
    }
    for s in r.partitions.iter().filter(|s| s.restarted_at.is_some()) {
        outln!(
            "{}/{}: a new lineage from member {}",
            s.topic,
            s.partition,
            s.restarted_at.unwrap_or(0)
        );
    }
    super::out::list("LOST     ", &r.lost);
    super::out::list("INCOMPLETE", &r.incomplete);
    super::out::list("PROBLEM  ", &r.problems);
    super::out::list("not in the chain:", &r.not_in_chain);
    outln!(
        "result    {}",
        if r.ok {
            "OK: every archive intact, every link and range in order"
        } else if r.problems.is_empty() && r.members.iter().all(|m| m.intact) {
            "NOT WHOLE: records were lost between members, or the newest archive is partial"
        } else {
            "BROKEN"
        }
    );
}
