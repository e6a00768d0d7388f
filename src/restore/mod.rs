//! `kar restore`: topics (and a transaction tried on them), then schemas (original IDs in IMPORT
//! mode, or new IDs with a source → target mapping), then records streamed from the memory-mapped
//! archive with schema IDs rewritten in place where they changed, then consumer-group offsets
//! translated to the target's offsets. Pre-flight checks come before any write; a plan is printed (and is all a dry run
//! does). Records go in Kafka transactions that commit the restore's progress with them, so a
//! killed restore continues without duplicates and two restores of one partition fence each other;
//! the schema phase keeps its progress in a state file.

pub mod keep;
pub mod progress;
pub mod records;
pub mod rewrite;
pub mod schemas;
pub mod state;
pub mod stream;
pub mod stream_chunks;
pub mod topics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use regex::Regex;
use serde::Serialize;
use thiserror::Error;

use crate::archive::verify::VerifyLevel;
use crate::archive::view::View;
use crate::archive::{Archive, ArchiveError};
use crate::format::hex;
use crate::format::manifest::ArchiveStatus;
use crate::kafka::KafkaConnection;
use crate::kafka::source::SourceError;
use crate::registry::client::{RegistryError, RegistrySettings};
use crate::registry::snapshot::{RegistrySnapshot, read_from_archive};
use crate::runtime::{Context, Runtime};
use records::PartitionOutcome;
use rewrite::IdMap;
use schemas::{SchemaAction, SchemaPlan};
use state::{State, StateError};
use topics::{KafkaOutcome, KafkaPlan};

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Kafka(Box<SourceError>),
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    State(#[from] StateError),
    /// A pre-flight check failed: nothing was written.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    /// A stream restore stopped after it had begun writing: what it committed stays, named.
    #[error("{0}")]
    Stream(String),
}

impl From<SourceError> for RestoreError {
    fn from(e: SourceError) -> Self {
        RestoreError::Kafka(Box::new(e))
    }
}

impl From<RegistryError> for RestoreError {
    fn from(e: RegistryError) -> Self {
        RestoreError::Registry(Box::new(e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaIds {
    /// Register every schema under its original ID (IMPORT mode).
    Keep,
    /// Let the target assign IDs and rewrite the IDs in the records.
    Rewrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaPolicy {
    /// Add only versions the target lacks.
    AddMissing,
    /// Replace each subject's versions with the archive's.
    Overwrite,
    /// Leave any subject that already has versions alone.
    SkipExisting,
}

/// What a restore does with the target registry's global configuration and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GlobalConfigPolicy {
    /// Leave the target's global configuration and mode as they are.
    Keep,
    /// Set the archive's global configuration and mode on the target.
    Overwrite,
}

/// What pre-flight checks of the archive before any write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreflightCheck {
    /// Footer, manifest, index and root hash, and every chunk to be restored: content against its
    /// ID, every record decoded.
    Full,
    /// Footer, manifest, index and root hash only; each chunk is checked as it is restored, so a
    /// damaged one stops its partition part-way.
    Quick,
}

/// A config for the topics a restore creates (`--topic-config [TOPIC:]KEY=VALUE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// The target topic it is for; `None`: every topic the restore creates.
    pub topic: Option<String>,
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for TopicConfig {
    type Err = RestoreError;

    /// `[TOPIC:]KEY=VALUE`: topic names cannot hold `:`.
    fn from_str(c: &str) -> Result<TopicConfig, RestoreError> {
        let bad = |why: &str| RestoreError::Invalid(format!("--topic-config {c:?} {why}"));
        let (kv, topic) = match c.split_once(':') {
            Some((t, kv)) if !t.contains('=') => (kv, Some(t.to_string())),
            _ => (c, None),
        };
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| bad("is not [TOPIC:]KEY=VALUE"))?;
        if topic.as_ref().is_some_and(String::is_empty) {
            return Err(bad("names an empty topic"));
        }
        Ok(TopicConfig {
            topic,
            key: k.trim().to_string(),
            value: v.to_string(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The archive: a file, a set's first volume, or a stream (`-`, a FIFO, a tape device).
    pub archive: PathBuf,
    /// The other volumes of a set given as a list (any order, wherever each is); empty: the set's
    /// volumes are found next to `archive`.
    pub volumes: Vec<PathBuf>,
    /// `--chain`: files and folders holding the chain `archive` ends (§16), restored as one
    /// archive as of `archive` (or of the first member made at or after `until`).
    pub chain: Vec<PathBuf>,
    /// `--set`: `archive` and `volumes` are the chains (a folder each) of a continuous group's
    /// processes, restored as one archive (§16).
    pub set: bool,
    pub kafka: KafkaConnection,
    pub registry: Option<RegistrySettings>,
    pub schema_ids: SchemaIds,
    pub schemas: SchemaPolicy,
    /// Source registry context → target context (`--context-map SRC=DST`); others are restored
    /// into the context of the same name.
    pub context_map: BTreeMap<String, String>,
    /// The global configuration and mode; `None`: the archive's into a target registry without
    /// subjects, else the target's kept and what differs named in the plan.
    pub global_config: Option<GlobalConfigPolicy>,
    /// Source topics to restore (anchored regexes); empty = all in the archive.
    pub topics: Vec<String>,
    /// Source topic → target topic renames.
    pub map: BTreeMap<String, String>,
    /// Restore, per partition, the prefix that ends before the first record after this time.
    pub until: Option<i64>,
    /// Consumer groups to restore (anchored regex); `None` = all in the archive.
    pub groups: Option<String>,
    pub dry_run: bool,
    /// The signers trusted: with `require`, an archive without a valid signature by one of them
    /// is refused in pre-flight.
    pub trust: Option<crate::archive::signing::TrustOptions>,
    /// What opens an encrypted archive.
    pub unlock: Option<Arc<crate::archive::crypt::Unlock>>,
    /// Allow appending to target topics that already hold records.
    pub append: bool,
    /// Where the state file goes; default: next to the archive.
    pub state_dir: Option<PathBuf>,
    pub concurrency: usize,
    /// Restore schemas even if the archive's stored order is incomplete (cycles, missing refs).
    pub force: bool,
    /// Restore a partition whose chunks leave a hole in its offsets (records lost from the
    /// archive), around the hole.
    pub allow_gaps: bool,
    /// How much of the archive is checked before anything is written.
    pub verify: PreflightCheck,
    /// Configs for the topics the restore creates (`--topic-config [TOPIC:]KEY=VALUE`): for the
    /// target topic named, or (`None`) for every one; over the archived configs.
    pub topic_configs: Vec<TopicConfig>,
    /// Restore even where the target's retention would delete restored records soon after.
    pub accept_retention_loss: bool,
    /// The codec of the restore's producer batches; `None`: each archived topic's
    /// `compression.type` where it names a codec, else lz4.
    pub producer_compression: Option<crate::kafka::txn::Compression>,
    /// Restore the Schema Registry snapshot alone, even from an archive with records.
    pub registry_only: bool,
    /// Register the archived schema versions only: none of the archive's subject or global
    /// configurations, modes, deletions or DEK registry (what the restore itself changed, such as
    /// a subject put in IMPORT mode, is still put back). A drill into a registry in use.
    pub schema_versions_only: bool,
    /// Each partition's records go in transactions of about this many bytes (ended at the first
    /// chunk boundary after it): what an interrupted run leaves aborted in the log is at most this
    /// much per partition being written.
    pub transaction_bytes: usize,
    /// A partition whose records go undelivered this long (the broker lost or not answering)
    /// fails, naming where it stopped; a later run continues from what was committed.
    pub stall_timeout: std::time::Duration,
    pub cancel: Arc<AtomicBool>,
    /// Told of the records written, per target topic, as the restore goes.
    pub progress: crate::progress::Progress,
}

impl RestoreOptions {
    /// Every numeric option within what works, every name well formed; the error names the
    /// flag.
    pub fn check(&self) -> Result<(), RestoreError> {
        let bad = |why: String| Err(RestoreError::Invalid(why));
        if !self.volumes.is_empty() && crate::archive::source::is_stream(&self.archive) {
            return bad(format!(
                "{} is a stream: volumes on a stream come one after another on it, not as a list",
                self.archive.display()
            ));
        }
        if !self.chain.is_empty() && crate::archive::source::is_stream(&self.archive) {
            return bad(format!(
                "--chain: {} is a stream; a chain restores from its files",
                self.archive.display()
            ));
        }
        if self.set && (!self.chain.is_empty() || self.until.is_some()) {
            return bad(
                "--set restores the chains' newest state: --chain and --until do not apply".into(),
            );
        }
        if !self.chain.is_empty() && !self.volumes.is_empty() {
            return bad("--chain takes each member's first volume, not a list of volumes".into());
        }
        if self.concurrency < 1 {
            return bad("--concurrency must be at least 1".into());
        }
        if !(1 << 20..=1 << 30).contains(&self.transaction_bytes) {
            return bad("--transaction-size must be 1 to 1024 (MiB)".into());
        }
        if self.stall_timeout < std::time::Duration::from_secs(1) {
            return bad("--stall-timeout must be at least 1 second".into());
        }
        if let Some((s, d)) = self.map.iter().find(|(s, d)| s.is_empty() || d.is_empty()) {
            return bad(format!(
                "--map {s:?}={d:?} needs both a source and a target name"
            ));
        }
        let context = |c: &String| c.starts_with('.') && c.len() > 1;
        if let Some((s, d)) = self
            .context_map
            .iter()
            .find(|(s, d)| !context(s) || !context(d))
        {
            return bad(format!(
                "--context-map {s}={d} is not SRC=DST with context names such as .staging"
            ));
        }
        Ok(())
    }

    pub fn new(archive: impl Into<PathBuf>, kafka: KafkaConnection) -> Self {
        RestoreOptions {
            archive: archive.into(),
            volumes: Vec::new(),
            chain: Vec::new(),
            set: false,
            kafka,
            registry: None,
            schema_ids: SchemaIds::Rewrite,
            schemas: SchemaPolicy::AddMissing,
            global_config: None,
            context_map: BTreeMap::new(),
            topics: Vec::new(),
            map: BTreeMap::new(),
            until: None,
            groups: None,
            schema_versions_only: false,
            dry_run: false,
            trust: None,
            unlock: None,
            append: false,
            state_dir: None,
            concurrency: 4,
            force: false,
            allow_gaps: false,
            verify: PreflightCheck::Full,
            registry_only: false,
            producer_compression: None,
            topic_configs: Vec::new(),
            accept_retention_loss: false,
            transaction_bytes: 64 << 20,
            stall_timeout: std::time::Duration::from_secs(60),
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Default::default(),
        }
    }
}

/// What a restore does with a target topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicAction {
    /// Created with the archived partition count and configs.
    Create,
    /// Already on the target, with at least the archived partition count.
    Exists,
}

impl TopicAction {
    pub fn name(self) -> &'static str {
        match self {
            TopicAction::Create => "create",
            TopicAction::Exists => "exists",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicPlan {
    pub source: String,
    pub target: String,
    pub action: TopicAction,
    pub partitions: i32,
    pub replication_factor: i32,
    pub records: u64,
    /// Of `records`, those already in: committed by an earlier run of this restore.
    pub restored: u64,
    /// What the producer compresses the topic's batches with.
    pub compression: crate::kafka::txn::Compression,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An archived committed offset, translated to the target partition's offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranslatedOffset {
    /// The target topic.
    pub topic: String,
    pub partition: i32,
    /// The offset committed at the source.
    pub source: i64,
    /// Where the same record (the first restored at or after it) is on the target.
    pub target: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupOutcome {
    pub group: String,
    pub offsets: Vec<TranslatedOffset>,
    /// Why it was not committed, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Not committed for want of something the restore should have had: the run is not whole.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub archive: PathBuf,
    /// The archive ID (3.x), which names the restore's progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_id: Option<String>,
    /// The root hash: a file's from its footer; a stream's once the stream ended (empty if it
    /// did not get there).
    pub root_hash: String,
    /// Restored from a stream, in one pass: each chunk checked just before its records are
    /// written, not every chunk before the first write; the root checked at the end.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// The signatures checked in pre-flight, when signers are trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<crate::archive::signing::SignatureReport>,
    pub schema_ids: SchemaIds,
    pub schemas: Vec<SchemaAction>,
    /// The target registry's global configuration and mode (none without a registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_global: Option<schemas::GlobalPlan>,
    /// The KEKs and DEKs of the archive's DEK registry, each `create` or `exists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dek_registry: Option<crate::registry::dek::DekPlan>,
    pub topics: Vec<TopicPlan>,
    pub groups: Vec<String>,
    pub state_file: PathBuf,
    /// The consumer group on the target that holds the records' progress (none without Kafka).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_group: Option<String>,
    /// Selections that took nothing (`--topics`, `--groups` patterns), named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub plan: RestorePlan,
    pub dry_run: bool,
    pub schemas: Vec<SchemaAction>,
    /// Archived version members (metadata, rule sets) the target does not hold, named: the run
    /// is not OK.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_problems: Vec<String>,
    /// GUIDs named by records' schema ID headers that the target registry does not resolve: a
    /// consumer cannot read those records there; the run is not OK.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved_guids: Vec<String>,
    /// Source schema ID → target schema ID.
    pub id_map: BTreeMap<u32, u32>,
    pub partitions: Vec<PartitionOutcome>,
    pub groups: Vec<GroupOutcome>,
    pub records_written: u64,
    pub seconds: f64,
    /// Of `seconds`, the record phase alone (what ID rewriting adds to).
    pub records_seconds: f64,
    /// A stream restore's one-pass verify of the whole stream, root and manifest included, which
    /// ended the restore: consumer-group offsets are committed only when it is OK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_check: Option<crate::archive::verify::VerifyReport>,
    pub ok: bool,
}

fn anchored(patterns: &[String], flag: &str) -> Result<Vec<Regex>, RestoreError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| RestoreError::Invalid(format!("{flag} pattern {p:?}: {e}")))
        })
        .collect()
}

/// A restore on the caller's runtime: [`PlannedRestore::build`], then, unless a dry run,
/// [`PlannedRestore::execute`].
pub fn restore(rt: &Runtime, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    if crate::archive::source::is_stream(&opts.archive) {
        if opts.trust.as_ref().is_some_and(|t| t.require) {
            return Err(RestoreError::Refused(
                "--require-signature: a stream's signature comes at its end, after its records, so it cannot be checked before the first write; save the stream (`kar verify - --tee FILE --trusted-key ...`) and restore the file"
                    .into(),
            ));
        }
        return stream::restore_stream(rt, opts);
    }
    let planned = PlannedRestore::build(rt, opts)?;
    if opts.dry_run {
        return Ok(planned.report());
    }
    planned.execute(opts)
}

/// A restore checked and planned, nothing written yet: the archive (quick-verified, and with
/// `--verify full` every chunk to restore checked), the target cluster and registries read, every
/// refusal found. [`PlannedRestore::execute`] then writes.
pub struct PlannedRestore {
    /// What will be done, as reported.
    pub plan: RestorePlan,
    started: Instant,
    archive: View,
    /// The schema IDs of the archive's default context: records naming another one are counted
    /// as naming an unknown ID.
    known_ids: Vec<u32>,
    kafka: Option<KafkaPlan>,
    contexts: Vec<ContextPlan>,
    prior_state: Option<State>,
}

impl PlannedRestore {
    /// Every check before any write: the Kafka side first (read-only), then the schemas, whose
    /// last check (IMPORT mode, with kept IDs) is tried and put back.
    pub fn build(rt: &Runtime, opts: &RestoreOptions) -> Result<PlannedRestore, RestoreError> {
        let rt = rt.context();
        let started = Instant::now();
        opts.check()?;
        let (archive, signatures) = open_verified(opts)?;
        let snap: Option<RegistrySnapshot> = read_from_archive(archive.newest())?;
        let with_kafka = wants_kafka(opts, &archive, snap.is_some())?;
        let state_file = state_path(opts, &archive);
        let prior_state = if state_file.exists() {
            Some(State::open(&state_file, &fingerprint(opts, &archive))?)
        } else {
            None
        };
        let kafka = if with_kafka {
            let cat = topics::Catalogue::of_file(&archive, opts.until)?;
            Some(KafkaPlan::prepare(rt, opts, cat)?)
        } else {
            None
        };
        tracing::debug!(elapsed = ?started.elapsed(), "Kafka side planned, chunks checked");
        // The default context's IDs: those records name.
        let known_ids = snap
            .iter()
            .flat_map(|s| &s.subjects)
            .flat_map(|s| s.versions.iter().map(|v| v.id))
            .collect();
        let contexts = match (&opts.registry, snap) {
            (Some(r), Some(s)) => plan_contexts(rt, opts, r, &archive, s, prior_state.as_ref())?,
            (Some(_), None) => {
                return Err(RestoreError::Invalid(
                    "--registry was given but the archive holds no Schema Registry snapshot".into(),
                ));
            }
            (None, _) => Vec::new(),
        };
        tracing::debug!(elapsed = ?started.elapsed(), "pre-flight done");
        let mut plan = plan_of(opts, kafka.as_ref(), &contexts, state_file);
        plan.root_hash = hex(&archive.root());
        plan.archive_id = archive.id().map(|id| id.hex());
        plan.signatures = signatures;
        Ok(PlannedRestore {
            known_ids,
            plan,
            started,
            archive,
            kafka,
            contexts,
            prior_state,
        })
    }

    /// What a dry run reports: the plan, nothing done.
    pub fn report(self) -> RestoreReport {
        dry_run_report(self.plan, self.started)
    }

    /// Writes what the plan says. Topics first: with them in place, a transaction like the
    /// records' is tried (and aborted) before any schema is registered; then schemas, records and
    /// consumer-group offsets.
    pub fn execute(self, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
        let started = self.started;
        let state = match self.prior_state {
            Some(s) => s,
            None => State::open(&self.plan.state_file, &fingerprint(opts, &self.archive))?,
        };
        let head = write_head(
            self.kafka.as_ref(),
            &self.contexts,
            self.known_ids,
            opts,
            &state,
        )?;
        tracing::debug!(elapsed = ?started.elapsed(), "topics and schemas restored");
        let outcome = match self.kafka {
            Some(k) => {
                let o = k.run(opts, &self.archive, &head.ids, head.rewrite)?;
                k.close();
                o
            }
            None => KafkaOutcome::default(),
        };
        tracing::debug!(elapsed = ?started.elapsed(), "records and consumer groups done");
        final_report(self.plan, started, &self.contexts, head, outcome)
    }
}

/// The plan as reported, from what was planned.
fn plan_of(
    opts: &RestoreOptions,
    kafka: Option<&KafkaPlan>,
    contexts: &[ContextPlan],
    state_file: PathBuf,
) -> RestorePlan {
    RestorePlan {
        archive: opts.archive.clone(),
        archive_id: None,
        root_hash: String::new(),
        stream: false,
        signatures: None,
        schema_ids: opts.schema_ids,
        schemas: contexts.iter().flat_map(ContextPlan::actions).collect(),
        registry_global: contexts.first().map(|c| c.plan.global.clone()),
        dek_registry: contexts.first().and_then(|c| c.plan.deks.clone()),
        topics: kafka.map(|k| k.topics.clone()).unwrap_or_default(),
        groups: kafka
            .iter()
            .flat_map(|k| k.groups.iter().map(|g| g.group.clone()))
            .collect(),
        state_file,
        progress_group: kafka.map(|k| k.progress_group().to_string()),
        warnings: kafka
            .iter()
            .flat_map(|k| k.warnings.clone())
            .chain(contexts.iter().filter_map(ContextPlan::global_warning))
            .collect(),
    }
}

fn dry_run_report(plan: RestorePlan, started: Instant) -> RestoreReport {
    RestoreReport {
        schemas: plan.schemas.clone(),
        schema_problems: Vec::new(),
        unresolved_guids: Vec::new(),
        plan,
        dry_run: true,
        id_map: BTreeMap::new(),
        partitions: Vec::new(),
        groups: Vec::new(),
        records_written: 0,
        seconds: started.elapsed().as_secs_f64(),
        records_seconds: 0.0,
        stream_check: None,
        ok: true,
    }
}

/// What the restore wrote before the records: the schemas, and how record IDs are written.
struct Head {
    taken: Vec<SchemaAction>,
    schema_problems: Vec<String>,
    id_map: BTreeMap<u32, u32>,
    ids: IdMap,
    rewrite: bool,
}

/// Topics first: with them in place, a transaction like the records' is tried (and aborted)
/// before any schema is registered; then the schemas of every context.
fn write_head(
    kafka: Option<&KafkaPlan>,
    contexts: &[ContextPlan],
    known_ids: Vec<u32>,
    opts: &RestoreOptions,
    state: &State,
) -> Result<Head, RestoreError> {
    if let Some(k) = kafka {
        k.create_topics_and_probe(opts)?;
    }
    let (mut taken, mut schema_problems) = (Vec::new(), Vec::new());
    for c in contexts {
        let (t, p) = c.run(opts, state)?;
        taken.extend(t);
        schema_problems.extend(p);
    }
    let id_map: BTreeMap<u32, u32> = state.id_map()?.into_iter().collect();
    let ids = IdMap::new(id_map.clone(), known_ids);
    let rewrite = opts.schema_ids == SchemaIds::Rewrite && ids.changes_anything();
    Ok(Head {
        taken,
        schema_problems,
        id_map,
        ids,
        rewrite,
    })
}

/// The report of a restore that ran: OK when every partition, group and schema is.
fn final_report(
    plan: RestorePlan,
    started: Instant,
    contexts: &[ContextPlan],
    head: Head,
    outcome: KafkaOutcome,
) -> Result<RestoreReport, RestoreError> {
    let guids: std::collections::BTreeSet<[u8; 16]> = outcome
        .partitions
        .iter()
        .flat_map(|o| o.guids.iter().copied())
        .collect();
    let unresolved_guids = match contexts.first() {
        Some(c) if !guids.is_empty() => c.plan.unresolved_guids(&guids)?,
        _ => Vec::new(),
    };
    let ok = unresolved_guids.is_empty()
        && outcome.partitions.iter().all(|o| o.error.is_none())
        && outcome.groups.iter().all(|g| !g.failed)
        && head.schema_problems.is_empty();
    Ok(RestoreReport {
        plan,
        dry_run: false,
        schemas: head.taken,
        schema_problems: head.schema_problems,
        unresolved_guids,
        id_map: head.id_map,
        ok,
        records_written: outcome.partitions.iter().map(|o| o.written).sum(),
        partitions: outcome.partitions,
        groups: outcome.groups,
        seconds: started.elapsed().as_secs_f64(),
        records_seconds: outcome.records_seconds,
        stream_check: None,
    })
}

/// The schema side of one registry context: the default context's, then each other one's,
/// restored into the same context or the one `--context-map` names.
struct ContextPlan {
    /// The target context (`None`: the default one).
    target: Option<String>,
    snap: RegistrySnapshot,
    plan: SchemaPlan,
}

impl ContextPlan {
    fn qualified(&self, subject: &str) -> String {
        crate::registry::snapshot::qualify(self.target.as_deref(), subject)
    }

    fn actions(&self) -> Vec<SchemaAction> {
        let mut a = self.plan.actions.clone();
        for x in &mut a {
            x.subject = self.qualified(&x.subject);
        }
        a
    }

    fn global_warning(&self) -> Option<String> {
        let w = self.plan.global_warning()?;
        Some(match &self.target {
            None => w,
            Some(c) => format!("context {c}: {w}"),
        })
    }

    fn run(
        &self,
        opts: &RestoreOptions,
        state: &State,
    ) -> Result<(Vec<SchemaAction>, Vec<String>), RestoreError> {
        let scoped = state::Scoped::new(state, self.target.as_deref());
        let (mut taken, problems) = self.plan.run(opts, &self.snap, &scoped)?;
        for x in &mut taken {
            x.subject = self.qualified(&x.subject);
        }
        let problems = match &self.target {
            None => problems,
            Some(c) => problems
                .into_iter()
                .map(|p| format!("context {c}: {p}"))
                .collect(),
        };
        Ok((taken, problems))
    }
}

/// Every context's schema plan, each checked before anything is written.
fn plan_contexts(
    rt: &Context,
    opts: &RestoreOptions,
    settings: &RegistrySettings,
    archive: &dyn crate::archive::reader::Contents,
    mut snap: RegistrySnapshot,
    prior: Option<&State>,
) -> Result<Vec<ContextPlan>, RestoreError> {
    for src in opts.context_map.keys() {
        if !snap
            .contexts
            .iter()
            .any(|c| c.context.as_deref() == Some(src))
        {
            return Err(RestoreError::Invalid(format!(
                "--context-map {src}=…: the archive holds no context {src}"
            )));
        }
    }
    let mut out = Vec::new();
    let others = std::mem::take(&mut snap.contexts);
    for s in std::iter::once(snap).chain(others) {
        let target = s
            .context
            .as_ref()
            .map(|c| opts.context_map.get(c).unwrap_or(c).clone());
        let mut settings = settings.clone();
        if let Some(t) = &target {
            settings.url = format!(
                "{}/contexts/{}",
                settings.url.trim_end_matches('/'),
                crate::registry::client::path_segment(t)
            );
        }
        let done: BTreeMap<(String, i32), i32> = match prior {
            Some(p) => state::Scoped::new(p, target.as_deref())
                .versions_done()?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        let plan = SchemaPlan::prepare(rt, opts, &settings, archive, &s, &done)?;
        out.push(ContextPlan {
            target,
            snap: s,
            plan,
        });
    }
    Ok(out)
}

/// The archive, after the quick verify (footer, manifest, index, root); each chunk is checked
/// later, in pre-flight or as it is read.
fn open_verified(
    opts: &RestoreOptions,
) -> Result<(View, Option<crate::archive::signing::SignatureReport>), RestoreError> {
    if opts.set {
        return open_set(opts);
    }
    if !opts.chain.is_empty() {
        return open_chain(opts);
    }
    let path = opts.archive.as_path();
    let paths: Vec<PathBuf> = std::iter::once(opts.archive.clone())
        .chain(opts.volumes.iter().cloned())
        .collect();
    let source = Arc::new(crate::archive::source::map_list(&paths)?);
    // One open (an encrypted archive's keys and index opened once) serves the verify and the
    // restore. One that does not open for want of a key is said as such, not as damage.
    let opened = Archive::from_shared_with(source.clone(), path, opts.unlock.as_deref());
    if let Err(e @ ArchiveError::Crypt { .. }) = opened {
        return Err(e.into());
    }
    let (v, archive) = crate::archive::verify::verify_opened(
        source,
        path,
        VerifyLevel::Quick,
        Some(opened),
        &|_| {},
    );
    // Gaps a repair recorded are not damage: the partitions' own check decides on them.
    let archive = match (v.problems.first(), archive) {
        (None, Some(a)) => a,
        (first, _) => {
            return Err(RestoreError::Refused(format!(
                "{} does not verify ({} problem(s), first: {}); run `kar verify` for the full list, `kar repair` to recover what is intact",
                path.display(),
                v.problems.len(),
                first.map_or_else(|| "not opened".to_string(), ToString::to_string)
            )));
        }
    };
    let signatures = opts
        .trust
        .as_ref()
        .map(|t| crate::archive::signing::check_archive(&archive, t));
    if let Some(r) = signatures.as_ref().filter(|r| !r.ok) {
        return Err(RestoreError::Refused(format!(
            "{}: {}; nothing was written",
            path.display(),
            r.refusal()
        )));
    }
    if archive.manifest().status == ArchiveStatus::Partial {
        tracing::warn!("the archive is partial: some partitions are incomplete");
    }
    refuse_chain_member(&archive)?;
    Ok((View::single(archive), signatures))
}

/// `--set`: the chains of a continuous group's processes, each checked as `--chain` checks one,
/// and every partition covered across them; a gap is refused before anything is written
/// (records lost to retention between holders are holes, as in a chain), offsets held twice are
/// restored once.
fn open_set(
    opts: &RestoreOptions,
) -> Result<(View, Option<crate::archive::signing::SignatureReport>), RestoreError> {
    let paths: Vec<PathBuf> = std::iter::once(opts.archive.clone())
        .chain(opts.volumes.iter().cloned())
        .collect();
    let set = crate::archive::set::open_set(&paths, VerifyLevel::Quick)?;
    let r = &set.report;
    if let Some(first) = r.problems.iter().chain(&r.gaps).next() {
        return Err(RestoreError::Refused(format!(
            "the set does not restore: {first}; run `kar chain --set` for the whole list; nothing was written"
        )));
    }
    // Offsets two chains hold (a process killed between a member's rename and its commit) are
    // restored once, from the earlier archive.
    for o in &r.overlaps {
        tracing::warn!("restored once: {o}");
    }
    let signatures = check_members(opts, set.chains.iter().flat_map(|c| &c.archives))?;
    Ok((View::set(set)?, signatures))
}

/// `--chain`: the chain that ends at the archive named (with `--until T`, at the first member
/// made at or after T: the newest whose snapshot and records reach T), each archive
/// quick-verified and signature-checked, every link and partition range checked. A broken chain
/// (a member missing or damaged, a link whose root differs, a break no change explains) is
/// refused before anything is written; retention losses between members are holes, which the
/// partitions' own check decides on (`--allow-gaps`).
fn open_chain(
    opts: &RestoreOptions,
) -> Result<(View, Option<crate::archive::signing::SignatureReport>), RestoreError> {
    let mut paths = opts.chain.clone();
    paths.push(opts.archive.clone());
    let open =
        |head: &Path| crate::archive::chain::open_chain_to(&paths, Some(head), VerifyLevel::Quick);
    let mut chain = open(&opts.archive)?;
    if let Some(until) = opts.until {
        let at = chain
            .archives
            .iter()
            .position(|a| a.manifest().created_at_ms >= until);
        if let Some(at) = at.filter(|&i| i + 1 < chain.archives.len()) {
            let head = chain.archives[at].path().to_path_buf();
            chain = open(&head)?;
        }
    }
    let r = &chain.report;
    // Each archive's verification problems are among the chain's; gaps a repair recorded are
    // not damage (the partitions' own check decides on them, as for one archive).
    if let Some(first) = r.problems.first() {
        return Err(RestoreError::Refused(format!(
            "the chain of {} does not restore: {first}; run `kar chain` for the whole list; nothing was written",
            opts.archive.display()
        )));
    }
    let signatures = check_members(opts, &chain.archives)?;
    for i in &chain.report.incomplete {
        tracing::warn!("the chain's newest archive holding a partition is partial: {i}");
    }
    Ok((View::chain(chain)?, signatures))
}

/// The archives of a chain or a set: none encrypted (not restored yet), and with
/// `--trusted-key` each one's signature checked; the report of the last one checked.
fn check_members<'a>(
    opts: &RestoreOptions,
    archives: impl IntoIterator<Item = &'a Archive>,
) -> Result<Option<crate::archive::signing::SignatureReport>, RestoreError> {
    let mut last = None;
    for a in archives {
        if a.header().is_encrypted() {
            return Err(RestoreError::Refused(format!(
                "{}: an encrypted chain is not restored yet; nothing was written",
                a.path().display()
            )));
        }
        if let Some(t) = &opts.trust {
            let r = crate::archive::signing::check_archive(a, t);
            if !r.ok {
                return Err(RestoreError::Refused(format!(
                    "{}: {}; nothing was written",
                    a.path().display(),
                    r.refusal()
                )));
            }
            last = Some(r);
        }
    }
    Ok(last)
}

/// A chain member (§16) alone is not a backup: its partitions start where its parent's ended and
/// its schema texts may be in its ancestors. It restores with its chain (`--chain`).
fn refuse_chain_member(archive: &Archive) -> Result<(), RestoreError> {
    let parent = archive.manifest().parent.as_ref();
    if parent.is_none() && !archive.header().is_chain_member() {
        return Ok(());
    }
    Err(RestoreError::Refused(format!(
        "{} is member {} of a chain (it continues archive {}): a member holds only what was new since its parent, so it is not restored alone: give its chain's files or folder with --chain (or restore a consolidated copy, kar consolidate); nothing was written",
        archive.path().display(),
        parent.map_or_else(|| "?".to_string(), |p| p.depth.to_string()),
        parent.map_or("?", |p| p.archive_id.as_str())
    )))
}

/// Whether this restore writes to Kafka: not with `--registry-only`, nor without `--bootstrap`
/// for an archive that holds no topic; an archive with records and no `--bootstrap` is refused,
/// naming what is missing, as is a restore with nothing to do.
fn wants_kafka(opts: &RestoreOptions, a: &View, has_registry: bool) -> Result<bool, RestoreError> {
    let topics = &a.manifest().topics;
    let records: u64 = topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records)
        .sum();
    let holds = format!("{records} records of {} topic(s)", topics.len());
    kafka_wanted(opts, &opts.archive, topics.len(), &holds, has_registry)
}

/// [`wants_kafka`] from what the archive `name` holds: `topics`, described as `holds`.
fn kafka_wanted(
    opts: &RestoreOptions,
    name: &Path,
    topics: usize,
    holds: &str,
    has_registry: bool,
) -> Result<bool, RestoreError> {
    if !opts.registry_only && opts.kafka.bootstrap.trim().is_empty() && topics > 0 {
        return Err(RestoreError::Invalid(format!(
            "{} holds {holds}: give --bootstrap HOST:PORT to restore them, or --registry-only to restore the Schema Registry alone",
            name.display()
        )));
    }
    let with_kafka = !opts.registry_only && topics > 0;
    if !with_kafka && (opts.registry.is_none() || !has_registry) {
        return Err(RestoreError::Invalid(if has_registry {
            "nothing to restore without Kafka: give --registry URL to restore the archive's Schema Registry snapshot".into()
        } else {
            format!(
                "{} holds no Schema Registry snapshot and no topic to restore",
                name.display()
            )
        }));
    }
    Ok(with_kafka)
}

/// What a restore's progress (its state file, its progress group on the target) is named after:
/// the archive ID (3.x), which a stream has at its start, else the root hash (2.x). Compaction
/// keeps both.
pub fn archive_key(id: Option<crate::format::ArchiveId>, root: &crate::format::Hash) -> String {
    match id {
        Some(id) => id.hex(),
        None => hex(root),
    }
}

fn state_path(opts: &RestoreOptions, archive: &View) -> PathBuf {
    match &opts.state_dir {
        Some(d) => d.join(format!(
            "{}.restore-state",
            archive_key(archive.id(), &archive.root())
        )),
        None => {
            let mut p = opts.archive.clone().into_os_string();
            p.push(".restore-state");
            PathBuf::from(p)
        }
    }
}

/// What makes two runs "the same restore": archive, target and the options that change what is
/// written.
fn fingerprint(opts: &RestoreOptions, a: &View) -> String {
    fingerprint_of(opts, &archive_key(a.id(), &a.root()))
}

fn fingerprint_of(opts: &RestoreOptions, key: &str) -> String {
    let contexts = if opts.context_map.is_empty() {
        String::new()
    } else {
        format!(", contexts {:?}", opts.context_map)
    };
    format!(
        "archive {key}, target {}, registry {}, schema ids {:?}, topics {:?}, map {:?}, until {:?}{contexts}",
        opts.kafka.bootstrap,
        opts.registry
            .as_ref()
            .map(|r| r.url.as_str())
            .unwrap_or("-"),
        opts.schema_ids,
        opts.topics,
        opts.map,
        opts.until
    )
}

#[cfg(test)]
mod tests {
    use super::TopicConfig;

    #[test]
    fn topic_configs_parse_with_and_without_a_topic() {
        let c = |t: Option<&str>, k: &str, v: &str| TopicConfig {
            topic: t.map(str::to_string),
            key: k.into(),
            value: v.into(),
        };
        let p = |s: &str| s.parse::<TopicConfig>().map_err(|e| e.to_string());
        assert_eq!(p("retention.ms=-1"), Ok(c(None, "retention.ms", "-1")));
        assert_eq!(
            p("orders:cleanup.policy=compact"),
            Ok(c(Some("orders"), "cleanup.policy", "compact"))
        );
        // A value may hold ':' and '='.
        assert_eq!(p("k=a:b=c"), Ok(c(None, "k", "a:b=c")));
        assert_eq!(p(" k =v"), Ok(c(None, "k", "v")));
        for bad in ["novalue", "=v", "t:=v", ":k=v"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(p(":k=v").unwrap_err().contains("empty topic"));
    }

    #[test]
    fn a_library_caller_gets_the_flags_checks() {
        let ok = super::RestoreOptions::new("a.kar", crate::kafka::KafkaConnection::default());
        assert!(ok.check().is_ok());
        let err = |f: &dyn Fn(&mut super::RestoreOptions)| {
            let mut o = ok.clone();
            f(&mut o);
            o.check().unwrap_err().to_string()
        };
        assert!(err(&|o| o.concurrency = 0).contains("--concurrency"));
        assert!(err(&|o| o.stall_timeout = std::time::Duration::ZERO).contains("--stall-timeout"));
        assert!(err(&|o| o.transaction_bytes = 1 << 31).contains("--transaction-size"));
        assert!(
            err(&|o| {
                o.map.insert("a".into(), String::new());
            })
            .contains("--map")
        );
        assert!(
            err(&|o| {
                o.context_map.insert("staging".into(), ".b".into());
            })
            .contains("--context-map")
        );
    }
}
