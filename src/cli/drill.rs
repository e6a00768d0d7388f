//! `kar drill`: arguments, the call, the report and its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::connection::{KafkaSettings, RegistryFlags};
use super::custody;
use super::out::outln;
use super::restore::SchemaIdsArg;
use crate::drill::{DrillOptions, DrillReport};
use crate::restore::SchemaIds;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The archive file
    pub file: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// The registry the drill restores schemas into and resolves IDs through (scratch or shared)
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub unlock: custody::UnlockArgs,
    #[command(flatten)]
    pub trust: custody::TrustArgs,
    /// Schema IDs: rewrite (new IDs on the target, records rewritten; safe in a registry in use)
    /// or keep (IMPORT mode, the original IDs)
    #[arg(long, value_enum, default_value = "rewrite")]
    pub schema_ids: SchemaIdsArg,
    /// Scratch topics are named PREFIX<topic>; the drill refuses if one exists
    #[arg(long, default_value = "drill-")]
    pub prefix: String,
    /// Archived topics to drill (anchored regular expression; repeatable) [default: all]
    #[arg(long = "topics", value_name = "REGEX")]
    pub topics: Vec<String>,
    /// Leave the scratch topics on the target
    #[arg(long)]
    pub keep_topics: bool,
    /// Delete (hard) the schema versions the drill registered, where the registry allows it
    #[arg(long)]
    pub clean_schemas: bool,
    /// Failures and differences listed (all are counted)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub show: usize,
    /// Print the report as JSON (for the auditor's file)
    #[arg(long)]
    pub json: bool,
}

pub fn options(a: DrillArgs) -> anyhow::Result<DrillOptions> {
    let kafka = a.kafka.connection();
    kafka.validate()?;
    let registry = a
        .registry
        .settings()?
        .ok_or_else(|| anyhow::anyhow!("a drill needs the target registry: --registry URL"))?;
    anyhow::ensure!(
        !a.prefix.is_empty(),
        "--prefix must not be empty: a drill never writes to the archive's own topic names"
    );
    Ok(DrillOptions {
        archive: a.file,
        unlock: Some(a.unlock.unlock()?),
        kafka,
        registry,
        schema_ids: SchemaIds::from(a.schema_ids),
        prefix: a.prefix,
        topics: a.topics,
        keep_topics: a.keep_topics,
        clean_schemas: a.clean_schemas,
        trust: a.trust.options(false)?,
        show: a.show,
    })
}

pub fn run(a: DrillArgs, rt: &crate::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let json = a.json;
    let r = crate::drill::drill(&options(a)?, rt)?;
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

fn print(r: &DrillReport) {
    outln!("archive   {} (root {})", r.archive.display(), r.root);
    match &r.signatures {
        Some(s) if s.trusted_signature => outln!("signature trusted"),
        Some(_) => outln!("signature NOT TRUSTED"),
        None => outln!("signature not checked (no --trusted-key)"),
    }
    outln!("topics    {}", r.scratch_topics.join(", "));
    outln!("records   {} in the archive", r.records_in_archive);
    outln!("          {} restored", r.records_restored);
    outln!("          {} read back", r.records_read_back);
    outln!("          {} equal to the archive's", r.records_equal);
    outln!(
        "fields    {} decoded with the target's schemas as the archive's read ({} not checked, {} failed)",
        r.fields_decoded,
        r.fields_not_checked,
        r.decode_failures
    );
    outln!(
        "schema IDs {} resolved through the target registry ({} not)",
        r.schema_ids_resolved,
        r.schema_ids_unresolved
    );
    for f in &r.first_decode_failures {
        outln!(
            "  {} (as {})/{} archive offset {} target offset {} {}: {}",
            f.topic,
            f.target_topic,
            f.partition,
            f.archive_offset,
            f.target_offset,
            f.field,
            f.detail
        );
    }
    let t = &r.diff.totals;
    outln!(
        "diff      {} equal, {} different, {} missing, {} extra",
        t.equal,
        t.different,
        t.missing,
        t.extra
    );
    for p in &r.problems {
        outln!("problem   {p}");
    }
    if !r.schemas_registered.is_empty() {
        outln!(
            "schemas   {} version(s) registered, {}",
            r.schemas_registered.len(),
            if r.schemas_removed {
                "removed"
            } else {
                "left on the target"
            }
        );
    }
    outln!(
        "scratch   topics {}",
        if r.topics_deleted { "deleted" } else { "kept" }
    );
    outln!(
        "{} in {:.1} s",
        if r.ok { "DRILL PASSED" } else { "DRILL FAILED" },
        r.seconds
    );
}
