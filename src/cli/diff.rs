//! `kar diff`: arguments, the call, the report and its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::connection::{KafkaSettings, RegistryFlags};
use super::custody;
use super::out::outln;
use crate::diff::{DiffOptions, DiffReport};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The archive file
    pub file: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// The target's Schema Registry: records whose schema IDs differ are the same where both IDs
    /// name the same schema text
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub unlock: custody::UnlockArgs,
    /// Compare archive topic SRC with target topic DST (repeatable)
    #[arg(long = "map", value_name = "SRC=DST")]
    pub map: Vec<String>,
    /// Archive topics whose name this regular expression matches (whole name)
    #[arg(long, value_name = "REGEX")]
    pub topics: Option<String>,
    /// Differences listed per partition (all are counted)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub show: usize,
    /// Seconds to wait for transactions open in a target partition to end: records in one are
    /// not yet what a consumer reads
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub wait_for_transactions: u64,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn options(a: DiffArgs) -> anyhow::Result<DiffOptions> {
    let mut o = DiffOptions::new(a.file, a.kafka.connection());
    o.kafka.validate()?;
    o.unlock = Some(a.unlock.unlock()?);
    o.registry = a.registry.settings()?;
    for m in &a.map {
        let (s, d) = m
            .split_once('=')
            .filter(|(s, d)| !s.is_empty() && !d.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--map {m:?} is not SRC=DST"))?;
        o.map.insert(s.to_string(), d.to_string());
    }
    o.topics = a
        .topics
        .as_deref()
        .map(|t| regex::Regex::new(&format!("^(?:{t})$")))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--topics: {e}"))?;
    o.show = a.show;
    o.settle = std::time::Duration::from_secs(a.wait_for_transactions);
    Ok(o)
}

pub fn run(a: DiffArgs, rt: &crate::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let json = a.json;
    let opts = options(a)?;
    let r = crate::diff::diff(&opts, rt)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print(&r);
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(r: &DiffReport) {
    outln!("archive {} (root {})", r.archive.display(), r.root);
    for p in &r.partitions {
        let c = &p.counts;
        outln!(
            "{}/{} -> {}: {} equal, {} different, {} missing, {} extra",
            p.topic,
            p.partition,
            p.target_topic,
            c.equal,
            c.different,
            c.missing,
            c.extra
        );
        for d in &p.first_differences {
            let off = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
            outln!(
                "  {} archive offset {} target offset {}{}",
                d.kind,
                off(d.archive_offset),
                off(d.target_offset),
                if d.fields.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", d.fields.join(", "))
                }
            );
        }
    }
    if !r.id_map.is_empty() {
        let pairs: Vec<String> = r.id_map.iter().map(|(a, t)| format!("{a}->{t}")).collect();
        outln!("schema IDs, archive -> target: {}", pairs.join(", "));
    }
    let t = &r.totals;
    outln!(
        "{}: {} equal, {} different, {} missing, {} extra",
        if r.ok { "SAME" } else { "DIFFERENT" },
        t.equal,
        t.different,
        t.missing,
        t.extra
    );
}
