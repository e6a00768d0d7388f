//! `kar restore` arguments, its config-file section, and the plan and summary output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::out::{self, outln};
use super::settings::{Merge, settings};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::backup::parse_time;
use super::connection::{KafkaSettings, RegistryFlags};
use crate::config::load_yaml;
use crate::restore::schemas::GlobalAction;
use crate::restore::{
    GlobalConfigPolicy, PreflightCheck, RestoreOptions, RestorePlan, RestoreReport, SchemaIds,
    SchemaPolicy, restore,
};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive to restore: a file (or a set's first volume, or every volume of the set), or
    /// `-`, a FIFO or a tape device, read in one pass
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The archive is the newest member of an incremental chain: files or folders holding the
    /// rest of it (repeatable). The chain restores as one archive as of that member (with
    /// --until T, of the first member made at or after T)
    #[arg(long, value_name = "DIR|FILE")]
    pub chain: Vec<PathBuf>,
    /// The files are the chains (a folder each) of a continuous group's processes
    /// (`kar backup --continuous --group`), restored together as one archive
    #[arg(long, conflicts_with = "chain")]
    pub set: bool,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub settings: RestoreSettings,
    /// Refuse, before any write, an archive without a valid signature by a --trusted-key (a file
    /// only: a stream's signature comes at its end)
    #[arg(long)]
    pub require_signature: bool,
    #[command(flatten)]
    pub trust: super::custody::TrustArgs,
    #[command(flatten)]
    pub unlock: super::custody::UnlockArgs,
    /// YAML config file (kafka:, registry:, restore: sections); flags override it
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the plan and the summary as JSON
    #[arg(long)]
    pub json: bool,
}

settings! {
    /// What to restore and how: the flags, and the config file's `restore:` section.
    pub struct RestoreSettings {
        /// keep: register schemas under their original IDs (IMPORT mode); rewrite: let the target
        /// assign IDs and rewrite the IDs inside the records [default: keep]
        #[arg(long, value_enum)]
        pub schema_ids: Option<SchemaIdsArg>,
        /// What to do with subjects the target already has [default: add-missing]
        #[arg(long, value_enum)]
        pub schemas: Option<SchemaPolicyArg>,
        /// The target registry's global configuration and mode: `overwrite` sets the archive's,
        /// `keep` leaves the target's [default: the archive's into a registry without subjects,
        /// else keep and name what differs]
        #[arg(long, value_enum)]
        pub global_config: Option<GlobalConfigArg>,
        /// Restore the registry context SRC (e.g. .staging) into the context DST (repeatable);
        /// other contexts go to the context of the same name
        #[arg(long = "context-map", value_name = "SRC=DST")]
        pub context_map: Vec<String>,
        /// Source topics to restore (regular expressions on whole names; repeatable) [default:
        /// all]
        #[arg(long = "topics", value_name = "REGEX")]
        pub topics: Vec<String>,
        /// Restore topic SRC under the name DST (repeatable; in the config file a mapping
        /// SRC: DST)
        #[arg(long = "map", value_name = "SRC=DST")]
        #[serde(deserialize_with = "renames")]
        pub map: Vec<String>,
        /// Restore, per partition, the records before the first one stamped after TS (RFC 3339
        /// or ms)
        #[arg(long, value_name = "TS")]
        pub until: Option<String>,
        /// Consumer groups whose offsets to restore [default: all in the archive]
        #[arg(long, value_name = "REGEX")]
        pub groups: Option<String>,
        /// Print the plan and stop; nothing is written
        #[arg(long)]
        pub dry_run: bool,
        /// Allow adding records to target topics that already hold some
        #[arg(long)]
        pub append: bool,
        /// Restore the archive's Schema Registry snapshot alone, without Kafka (what happens
        /// anyway to an archive without topics when no --bootstrap is given)
        #[arg(long)]
        pub registry_only: bool,
        /// Folder for the restore's state file [default: next to the archive]
        #[arg(long, value_name = "DIR")]
        pub state: Option<PathBuf>,
        /// Partitions restored at once [default: 4]
        #[arg(long)]
        pub concurrency: Option<usize>,
        /// Size of each partition's transactions in MiB, 1 to 1024 (ended at a chunk boundary);
        /// an interrupted run leaves at most this much per partition being written as aborted
        /// records [default: 64]
        #[arg(long, value_name = "MIB")]
        pub transaction_size: Option<usize>,
        /// Seconds a partition's records may go undelivered (the broker lost or not answering)
        /// before it fails, naming where it stopped; a later run continues it [default: 60]
        #[arg(long, value_name = "SECONDS")]
        pub stall_timeout: Option<u64>,
        /// A config for the topics the restore creates, over the archived ones: KEY=VALUE for
        /// every one, TOPIC:KEY=VALUE for the target topic TOPIC (repeatable)
        #[arg(long = "topic-config", value_name = "[TOPIC:]KEY=VALUE")]
        pub topic_config: Vec<String>,
        /// Restore even where the target's retention.ms or retention.bytes would delete restored
        /// records soon after (named in the plan); without it, such a restore stops before any
        /// write
        #[arg(long)]
        pub accept_retention_loss: bool,
        /// Codec of the restore producer's batches [default: each archived topic's
        /// compression.type where it names a codec, else lz4]
        #[arg(long, value_name = "CODEC", value_parser = ["none", "lz4", "zstd", "snappy", "gzip"])]
        pub producer_compression: Option<String>,
        /// Restore schemas even when the archive's restore order is incomplete
        #[arg(long)]
        pub force: bool,
        /// Restore partitions whose archived offsets have a hole (records missing from the
        /// archive), around the hole
        #[arg(long)]
        pub allow_gaps: bool,
        /// What is checked before anything is written: `full` checks every chunk to restore,
        /// `quick` only footer, manifest, index and root (chunks are then checked as they are
        /// restored) [default: full]
        #[arg(long, value_enum)]
        pub verify: Option<PreflightArg>,
    }
}

/// The config file's `map:`, a mapping `SRC: DST`, as the flag's `SRC=DST` values.
fn renames<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let m: BTreeMap<String, String> = Deserialize::deserialize(d)?;
    Ok(m.into_iter().map(|(s, t)| format!("{s}={t}")).collect())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    kafka: KafkaSettings,
    #[serde(default)]
    registry: RegistryFlags,
    #[serde(default)]
    restore: RestoreSettings,
}

// The flags' and the config file's values for the library's enums: clap and serde names live
// here, in the CLI layer; the library's types stay free of both.

#[derive(Debug, Clone, Copy, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaIdsArg {
    /// Register every schema under its original ID (IMPORT mode)
    Keep,
    /// Let the target assign IDs and rewrite the IDs in the records
    Rewrite,
}

#[derive(Debug, Clone, Copy, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaPolicyArg {
    /// Add only versions the target lacks
    AddMissing,
    /// Replace each subject's versions with the archive's
    Overwrite,
    /// Leave any subject that already has versions alone
    SkipExisting,
}

#[derive(Debug, Clone, Copy, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GlobalConfigArg {
    /// Leave the target's global configuration and mode as they are
    Keep,
    /// Set the archive's global configuration and mode on the target
    Overwrite,
}

#[derive(Debug, Clone, Copy, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PreflightArg {
    /// Footer, manifest, index and root hash, and every chunk to be restored
    Full,
    /// Footer, manifest, index and root hash only; each chunk checked as it is restored
    Quick,
}

impl From<SchemaIdsArg> for SchemaIds {
    fn from(a: SchemaIdsArg) -> Self {
        match a {
            SchemaIdsArg::Keep => SchemaIds::Keep,
            SchemaIdsArg::Rewrite => SchemaIds::Rewrite,
        }
    }
}

impl From<SchemaPolicyArg> for SchemaPolicy {
    fn from(a: SchemaPolicyArg) -> Self {
        match a {
            SchemaPolicyArg::AddMissing => SchemaPolicy::AddMissing,
            SchemaPolicyArg::Overwrite => SchemaPolicy::Overwrite,
            SchemaPolicyArg::SkipExisting => SchemaPolicy::SkipExisting,
        }
    }
}

impl From<GlobalConfigArg> for GlobalConfigPolicy {
    fn from(a: GlobalConfigArg) -> Self {
        match a {
            GlobalConfigArg::Keep => GlobalConfigPolicy::Keep,
            GlobalConfigArg::Overwrite => GlobalConfigPolicy::Overwrite,
        }
    }
}

impl From<PreflightArg> for PreflightCheck {
    fn from(a: PreflightArg) -> Self {
        match a {
            PreflightArg::Full => PreflightCheck::Full,
            PreflightArg::Quick => PreflightCheck::Quick,
        }
    }
}

pub fn options(a: &RestoreArgs, cancel: Arc<AtomicBool>) -> anyhow::Result<RestoreOptions> {
    let file: ConfigFile = match &a.config {
        Some(p) => load_yaml(p)?,
        None => ConfigFile::default(),
    };
    let kafka = a.kafka.clone().over(file.kafka).connection();
    let r = a.settings.clone().over(file.restore);
    let mut o = RestoreOptions::new(&a.files[0], kafka);
    o.volumes = a.files[1..].to_vec();
    o.chain = a.chain.clone();
    o.set = a.set;
    o.trust = a.trust.options(a.require_signature)?;
    o.unlock = Some(a.unlock.unlock()?);
    o.registry = a.registry.clone().over(file.registry).settings()?;
    o.schema_ids = r.schema_ids.map_or(SchemaIds::Keep, SchemaIds::from);
    o.schemas = r
        .schemas
        .map_or(SchemaPolicy::AddMissing, SchemaPolicy::from);
    o.global_config = r.global_config.map(Into::into);
    for m in &r.context_map {
        let (s, d) = m.split_once('=').ok_or_else(|| {
            anyhow::anyhow!(
                "--context-map {m:?} is not SRC=DST with context names such as .staging"
            )
        })?;
        o.context_map.insert(s.to_string(), d.to_string());
    }
    o.topics = r.topics;
    for m in &r.map {
        let (s, d) = m
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--map {m:?} is not SRC=DST"))?;
        o.map.insert(s.to_string(), d.to_string());
    }
    o.until = r.until.map(|s| parse_time(&s, "--until")).transpose()?;
    o.groups = r.groups;
    o.state_dir = r.state;
    // Ranges and names are checked by the library (RestoreOptions::check), for every caller.
    if let Some(c) = r.concurrency {
        o.concurrency = c;
    }
    if let Some(m) = r.transaction_size {
        o.transaction_bytes = m.saturating_mul(1 << 20);
    }
    if let Some(v) = r.stall_timeout {
        o.stall_timeout = std::time::Duration::from_secs(v);
    }
    if let Some(c) = r.producer_compression.as_deref() {
        o.producer_compression =
            Some(crate::kafka::txn::Compression::parse(c).ok_or_else(|| {
                anyhow::anyhow!("producer compression {c:?} is not none, lz4, zstd, snappy or gzip")
            })?);
    }
    for c in &r.topic_config {
        o.topic_configs.push(c.parse()?);
    }
    o.accept_retention_loss = r.accept_retention_loss;
    o.dry_run = r.dry_run;
    o.append = r.append;
    o.force = r.force;
    o.allow_gaps = r.allow_gaps;
    o.registry_only = r.registry_only;
    o.verify = r.verify.map_or(PreflightCheck::Full, Into::into);
    o.cancel = cancel;
    o.progress = super::progress::bars_unless(a.json, super::progress::TotalBar::default());
    Ok(o)
}

pub fn run(
    a: RestoreArgs,
    rt: &crate::runtime::Runtime,
    metrics: &crate::progress::Progress,
) -> anyhow::Result<ExitCode> {
    let cancel = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone())?;
    let mut opts = options(&a, cancel)?;
    opts.progress = opts.progress.and(metrics.clone()).and(super::logs::sink());
    let report = restore(rt, &opts)?;
    for w in &report.plan.warnings {
        super::logs::warning(&w.to_string());
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_plan(&report.plan);
        if !report.dry_run {
            print_summary(&report);
        } else {
            print_stream_check(&report);
            outln!("\ndry run: nothing was written");
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_plan(p: &RestorePlan) {
    let root = match (p.root_hash.get(..16), &p.archive_id) {
        (Some(r), _) => format!("root {r}"),
        (None, Some(id)) => format!("archive ID {id}, a stream: its root comes at its end"),
        (None, None) => "no root".into(),
    };
    outln!("plan for {} ({root})", p.archive.display());
    for s in p.signatures.iter().flat_map(|r| &r.signatures) {
        let trusted = s.status == crate::archive::signing::SignatureStatus::Trusted;
        if trusted {
            outln!(
                "signed by trusted key {} ({} signature, {})",
                s.key_id,
                s.kind,
                s.signed_at.as_deref().unwrap_or("time unknown")
            );
        }
    }
    if !p.schemas.is_empty() {
        outln!("\nschemas ({:?} IDs):", p.schema_ids);
        let mut table = out::table(
            &["action", "subject", "version", "id", "target id"],
            &[2, 3, 4],
        );
        for s in &p.schemas {
            table.add_row(vec![
                s.action.name().to_string(),
                s.subject.clone(),
                s.version.to_string(),
                s.source_id.to_string(),
                s.target_id.map_or("new".to_string(), |t| t.to_string()),
            ]);
        }
        out::print_table(&table, "  ");
    }
    if let Some(g) = &p.registry_global {
        let what = match g.action {
            GlobalAction::Set => "the archive's is set",
            GlobalAction::Keep => "the target's is kept",
            GlobalAction::Same => "the same on both",
        };
        outln!("\nglobal configuration and mode: {what}");
        for d in &g.differences {
            outln!("  {d}");
        }
    }
    if let Some(d) = &p.dek_registry {
        let (keks, deks) = d.to_create();
        outln!(
            "\nDEK registry: {} KEKs ({keks} to create), {} DEKs ({deks} to create)",
            d.keks.len(),
            d.deks.len(),
        );
    }
    outln!("\ntopics:");
    let mut table = out::table(
        &[
            "action",
            "topic",
            "partitions",
            "rf",
            "records",
            "already in",
            "batches",
        ],
        &[2, 3, 4, 5],
    );
    for t in &p.topics {
        let name = if t.source == t.target {
            t.target.clone()
        } else {
            format!("{} -> {}", t.source, t.target)
        };
        table.add_row(vec![
            t.action.name().to_string(),
            name,
            t.partitions.to_string(),
            t.replication_factor.to_string(),
            t.records.to_string(),
            t.restored.to_string(),
            t.compression.name().to_string(),
        ]);
    }
    out::print_table(&table, "  ");
    if p.topics.iter().any(|t| t.restored > 0) {
        outln!("  (already in: committed by an earlier run of this restore)");
    }
    for t in &p.topics {
        for w in &t.warnings {
            outln!("  warning: {}: {w}", t.target);
        }
    }
    if !p.groups.is_empty() {
        outln!("\nconsumer groups: {}", p.groups.join(", "));
    }
    outln!("\nstate file: {}", p.state_file.display());
    if let Some(g) = &p.progress_group {
        outln!("progress:   consumer group {g} on the target");
    }
}

fn print_summary(r: &RestoreReport) {
    outln!("\nrestored:");
    for o in &r.partitions {
        let status = match &o.error {
            Some(e) => format!("FAILED: {e}"),
            None => "ok".to_string(),
        };
        outln!(
            "  {}/{}: {} records ({} written now), {} schema IDs rewritten, {} unknown IDs left as they are{}: {status}",
            o.target_topic,
            o.partition,
            o.records,
            o.written,
            o.rewritten_ids,
            o.unknown_ids,
            header_ids(o)
        );
        if let Some((from, to)) = o.aborted {
            outln!(
                "    offsets {from}..{to} hold an interrupted run's aborted transaction: read_committed consumers skip it, read_uncommitted ones see it"
            );
        }
        if o.producers_replaced > 0 {
            outln!(
                "    its producer was replaced {} time(s), stuck (see the warnings above); its open transaction was aborted and written again",
                o.producers_replaced
            );
        }
    }
    for p in &r.schema_problems {
        outln!("  schema: NOT WHOLE: {p}");
    }
    if !r.unresolved_guids.is_empty() {
        outln!(
            "  NOT WHOLE: schema ID headers name {} GUID(s) the target registry does not resolve (its consumers cannot read those records): {}",
            r.unresolved_guids.len(),
            r.unresolved_guids.join(", ")
        );
    }
    if !r.id_map.is_empty() {
        let pairs: Vec<String> = r.id_map.iter().map(|(s, t)| format!("{s}->{t}")).collect();
        outln!("schema ID mapping: {}", pairs.join(", "));
    }
    for g in &r.groups {
        match &g.skipped {
            Some(why) => outln!("group {}: not restored ({why})", g.group),
            None => {
                let offs: Vec<String> = g
                    .offsets
                    .iter()
                    .map(|o| format!("{}/{} {}->{}", o.topic, o.partition, o.source, o.target))
                    .collect();
                outln!("group {}: {}", g.group, offs.join(", "));
            }
        }
    }
    print_stream_check(r);
    outln!(
        "{} records written in {:.1}s; {}",
        r.records_written,
        r.seconds,
        if r.ok {
            "OK"
        } else if r.stream_check.as_ref().is_some_and(|c| !c.ok) {
            "NOT WHOLE: the stream did not verify (above); consumer-group offsets were not committed"
        } else if r.partitions.iter().all(|o| o.error.is_none())
            && r.groups.iter().all(|g| !g.failed)
        {
            "NOT WHOLE: the target registry does not hold what is named above"
        } else {
            "INCOMPLETE: run the same command again to continue"
        }
    );
}

/// A stream restore's verify of the whole stream, which ended it.
fn print_stream_check(r: &RestoreReport) {
    let Some(c) = &r.stream_check else {
        return;
    };
    if c.ok {
        outln!(
            "stream verified whole at its end: {} frames, {} chunks, {} records, root {}",
            c.frames,
            c.chunks,
            c.records,
            c.root_hash.as_deref().unwrap_or("-")
        );
        return;
    }
    outln!("stream does NOT verify ({} problem(s)):", c.problems.len());
    for p in c.problems.iter().take(10) {
        outln!("  {p}");
    }
}

/// The schema ID headers of a partition, where it had any.
fn header_ids(o: &crate::restore::records::PartitionOutcome) -> String {
    if o.rewritten_header_ids == 0 && o.guid_headers == 0 {
        return String::new();
    }
    format!(
        ", {} schema ID headers rewritten, {} GUID headers as they are",
        o.rewritten_header_ids, o.guid_headers
    )
}
