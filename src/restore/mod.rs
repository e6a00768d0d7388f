//! `kar restore`: topics (and a transaction tried on them), then schemas (original IDs in IMPORT
//! mode, or new IDs with a source → target mapping), then records streamed from the memory-mapped
//! archive with schema IDs rewritten in place where they changed, then consumer-group offsets
//! translated to the target's offsets. Pre-flight checks come before any write; a plan is printed (and is all a dry run
//! does). Records go in Kafka transactions that commit the restore's progress with them, so a
//! killed restore continues without duplicates and two restores of one partition fence each other;
//! the schema phase keeps its progress in a state file.

pub mod progress;
pub mod records;
pub mod rewrite;
pub mod schemas;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use regex::Regex;
use serde::Serialize;
use thiserror::Error;

use crate::archive::coverage;
use crate::archive::verify::{self, VerifyLevel, verify_source};
use crate::archive::{Archive, ArchiveError, Source};
use crate::format::hex;
use crate::format::manifest::ArchiveStatus;
use crate::kafka::KafkaConnection;
use crate::kafka::sink::Target;
use crate::kafka::source::SourceError;
use crate::kafka::txn::{PROGRESS_GROUP_PREFIX, ProgressGroup, Read, first_committed};
use crate::registry::client::{RegistryClient, RegistryError, RegistrySettings};
use crate::registry::snapshot::{RegistrySnapshot, read_from_archive};
use progress::{Progress, ids_tag, progress_group};
use records::{PartitionJob, PartitionOutcome, Shared};
use rewrite::IdMap;
use schemas::{SchemaAction, SchemaRestore};
use state::{State, StateError};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaIds {
    /// Register every schema under its original ID (IMPORT mode).
    Keep,
    /// Let the target assign IDs and rewrite the IDs in the records.
    Rewrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaPolicy {
    /// Add only versions the target lacks.
    AddMissing,
    /// Replace each subject's versions with the archive's.
    Overwrite,
    /// Leave any subject that already has versions alone.
    SkipExisting,
}

/// What pre-flight checks of the archive before any write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PreflightCheck {
    /// Footer, manifest, index and root hash, and every chunk to be restored: content against its
    /// ID, every record decoded.
    Full,
    /// Footer, manifest, index and root hash only; each chunk is checked as it is restored, so a
    /// damaged one stops its partition part-way.
    Quick,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub archive: PathBuf,
    pub kafka: KafkaConnection,
    pub registry: Option<RegistrySettings>,
    pub schema_ids: SchemaIds,
    pub schemas: SchemaPolicy,
    /// Source topics to restore (anchored regexes); empty = all in the archive.
    pub topics: Vec<String>,
    /// Source topic → target topic renames.
    pub map: BTreeMap<String, String>,
    /// Restore, per partition, the prefix that ends before the first record after this time.
    pub until: Option<i64>,
    /// Consumer groups to restore (anchored regex); `None` = all in the archive.
    pub groups: Option<String>,
    pub dry_run: bool,
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
    /// Each partition's records go in transactions of about this many bytes (ended at the first
    /// chunk boundary after it): what an interrupted run leaves aborted in the log is at most this
    /// much per partition being written.
    pub transaction_bytes: usize,
    pub cancel: Arc<AtomicBool>,
    pub progress: bool,
}

impl RestoreOptions {
    pub fn new(archive: impl Into<PathBuf>, kafka: KafkaConnection) -> Self {
        RestoreOptions {
            archive: archive.into(),
            kafka,
            registry: None,
            schema_ids: SchemaIds::Rewrite,
            schemas: SchemaPolicy::AddMissing,
            topics: Vec::new(),
            map: BTreeMap::new(),
            until: None,
            groups: None,
            dry_run: false,
            append: false,
            state_dir: None,
            concurrency: 4,
            force: false,
            allow_gaps: false,
            verify: PreflightCheck::Full,
            transaction_bytes: 64 << 20,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicPlan {
    pub source: String,
    pub target: String,
    /// `create` or `exists`.
    pub action: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub records: u64,
    /// Of `records`, those already in: committed by an earlier run of this restore.
    pub restored: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupOutcome {
    pub group: String,
    /// (target topic, partition, source offset, target offset)
    pub offsets: Vec<(String, i32, i64, i64)>,
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
    pub root_hash: String,
    pub schema_ids: SchemaIds,
    pub schemas: Vec<SchemaAction>,
    pub topics: Vec<TopicPlan>,
    pub groups: Vec<String>,
    pub state_file: PathBuf,
    /// The consumer group on the target that holds the records' progress.
    pub progress_group: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub plan: RestorePlan,
    pub dry_run: bool,
    pub schemas: Vec<SchemaAction>,
    /// Source schema ID → target schema ID.
    pub id_map: BTreeMap<u32, u32>,
    pub partitions: Vec<PartitionOutcome>,
    pub groups: Vec<GroupOutcome>,
    pub records_written: u64,
    pub seconds: f64,
    /// Of `seconds`, the record phase alone (what ID rewriting adds to).
    pub records_seconds: f64,
    pub ok: bool,
}

#[derive(serde::Deserialize)]
struct TopicsDoc {
    topics: Vec<crate::kafka::source::TopicInfo>,
}

#[derive(serde::Deserialize)]
struct GroupsDoc {
    groups: Vec<crate::kafka::source::GroupOffsets>,
}

fn doc<T: serde::de::DeserializeOwned>(a: &Archive, kind: &str) -> Result<Option<T>, RestoreError> {
    let Some(m) = a.manifest().metadata.iter().find(|m| m.kind == kind) else {
        return Ok(None);
    };
    let id = crate::format::parse_hex(&m.id)
        .ok_or_else(|| RestoreError::Invalid(format!("bad content ID for {kind}")))?;
    let bytes = a.read_content(&id)?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        RestoreError::Invalid(format!("the archive's {kind} document is unreadable: {e}"))
    })
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

/// Kafka's rule for topic names: 1 to 249 characters from `a-z A-Z 0-9 . _ -`, not `.` or `..`.
fn check_topic_name(name: &str, what: &str) -> Result<(), RestoreError> {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 249 || !legal || name == "." || name == ".." {
        return Err(RestoreError::Invalid(format!(
            "{what} {name:?} is not a valid Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, not . or ..)"
        )));
    }
    Ok(())
}

/// Every `--map` source must be a topic of the archive, every target a valid topic name.
fn check_map(opts: &RestoreOptions, archive: &Archive) -> Result<(), RestoreError> {
    for (src, dst) in &opts.map {
        if archive.manifest().topics.iter().all(|t| &t.name != src) {
            return Err(RestoreError::Invalid(format!(
                "--map {src}={dst}: the archive has no topic {src:?}"
            )));
        }
        check_topic_name(dst, &format!("--map {src}={dst}: target"))?;
    }
    Ok(())
}

pub fn restore(opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    // Pre-flight, before any write: the archive verifies (quick: footer, manifest, index, root;
    // each chunk is checked as it is read).
    let source = Source::map(&opts.archive)?;
    let v = verify_source(source, &opts.archive, VerifyLevel::Quick);
    // Gaps a repair recorded are not damage: the partitions' own check below decides on them.
    if !v.problems.is_empty() {
        let first = v
            .problems
            .first()
            .map(|p| p.to_string())
            .unwrap_or_default();
        return Err(RestoreError::Refused(format!(
            "{} does not verify ({} problem(s), first: {first}); run `kar verify` for the full list, `kar repair` to recover what is intact",
            opts.archive.display(),
            v.problems.len()
        )));
    }
    tracing::debug!(elapsed = ?started.elapsed(), "archive checked (quick)");
    let archive = Arc::new(Archive::open(&opts.archive)?);
    if archive.manifest().status == ArchiveStatus::Partial {
        tracing::warn!("the archive is partial: some partitions are incomplete");
    }
    let snap: Option<RegistrySnapshot> = read_from_archive(&archive)?;
    opts.kafka.validate().map_err(RestoreError::Invalid)?;
    let target = Target::connect(&opts.kafka)?;
    tracing::debug!(elapsed = ?started.elapsed(), "connected to the target cluster");

    // The state file, unless dry-running.
    let state_path = match &opts.state_dir {
        Some(d) => d.join(format!("{}.restore-state", hex(&archive.root()))),
        None => {
            let mut p = opts.archive.clone().into_os_string();
            p.push(".restore-state");
            PathBuf::from(p)
        }
    };

    // Topics to restore.
    check_map(opts, &archive)?;
    let inc = anchored(&opts.topics, "--topics")?;
    let topics_doc: Vec<crate::kafka::source::TopicInfo> =
        doc::<TopicsDoc>(&archive, "kafka-topics")?
            .map(|d| d.topics)
            .unwrap_or_default();
    let manifest_topics: Vec<String> = archive
        .manifest()
        .topics
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let chosen: Vec<String> = manifest_topics
        .iter()
        .filter(|t| inc.is_empty() || inc.iter().any(|r| r.is_match(t)))
        .cloned()
        .collect();
    if !opts.topics.is_empty() && chosen.is_empty() {
        return Err(RestoreError::Invalid(format!(
            "no topic in the archive matches {}",
            opts.topics.join(", ")
        )));
    }
    let existing = target.topics()?;
    let brokers = target.broker_count()?.max(1) as i32;
    let mut topic_plans = Vec::new();
    let mut jobs = Vec::new();
    for src in &chosen {
        let dst = opts.map.get(src).cloned().unwrap_or_else(|| src.clone());
        let info = topics_doc.iter().find(|t| &t.name == src);
        let entry = archive
            .manifest()
            .topics
            .iter()
            .find(|t| &t.name == src)
            .expect("chosen from the manifest");
        let partitions = info.map_or(entry.partitions.len() as i32, |i| i.partitions);
        let rf_wanted = info.map_or(1, |i| i.replication_factor.max(1));
        let mut warnings = Vec::new();
        let rf = if rf_wanted > brokers {
            warnings.push(format!(
                "replication factor {rf_wanted} capped at {brokers}, the number of brokers"
            ));
            brokers
        } else {
            rf_wanted
        };
        let mut records = 0;
        for p in &entry.partitions {
            let n = records::planned_records(&archive, src, p.partition, opts.until)?;
            records += n;
            jobs.push(PartitionJob {
                source_topic: src.clone(),
                target_topic: dst.clone(),
                partition: p.partition,
                records: n,
                group_offsets: BTreeMap::new(),
                wanted: BTreeSet::new(),
                start: 0,
            });
        }
        let action = match existing.get(&dst) {
            Some(t) => {
                if t.partitions < partitions {
                    return Err(RestoreError::Refused(format!(
                        "target topic {dst} has {} partitions, the archive needs {partitions}: restore to another name with --map {src}=NEW",
                        t.partitions
                    )));
                }
                "exists"
            }
            None => "create",
        };
        topic_plans.push(TopicPlan {
            source: src.clone(),
            target: dst,
            action: action.into(),
            partitions,
            replication_factor: rf,
            records,
            restored: 0,
            warnings,
        });
    }

    check_partitions(opts, &archive, &jobs)?;
    tracing::debug!(elapsed = ?started.elapsed(), "topics planned, chunks checked");
    // Schemas: reachability, clashes and IMPORT mode, before any write.
    let client = match (&opts.registry, &snap) {
        (Some(r), Some(_)) => Some(Arc::new(RegistryClient::new(r)?)),
        (Some(_), None) => {
            return Err(RestoreError::Invalid(
                "--registry was given but the archive holds no Schema Registry snapshot".into(),
            ));
        }
        (None, _) => None,
    };
    let texts: BTreeMap<String, String> = match &snap {
        Some(s) => s
            .subjects
            .iter()
            .flat_map(|st| &st.versions)
            .map(|v| {
                let id = crate::format::parse_hex(&v.schema).unwrap_or_default();
                Ok((
                    v.schema.clone(),
                    String::from_utf8_lossy(&archive.read_content(&id)?).into_owned(),
                ))
            })
            .collect::<Result<_, ArchiveError>>()?,
        None => BTreeMap::new(),
    };
    let prior_state = if state_path.exists() {
        Some(State::open(&state_path, &fingerprint(opts, &archive))?)
    } else {
        None
    };
    let done_versions: BTreeMap<(String, i32), i32> = match &prior_state {
        Some(s) => s.versions_done()?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    let mut schema_actions = Vec::new();
    let mut target_was_empty = false;
    if let (Some(c), Some(s)) = (&client, &snap) {
        if !s.order_complete && !opts.force {
            return Err(RestoreError::Refused(format!(
                "the archive's schema restore order is incomplete ({}); restore with --force to register what can be ordered",
                s.order_problems.join("; ")
            )));
        }
        let sr = SchemaRestore {
            client: c.clone(),
            snap: s,
            texts: &texts,
            ids: opts.schema_ids,
            policy: opts.schemas,
        };
        target_was_empty = c
            .get_list::<String>("/subjects")
            .await_blocking()?
            .is_empty();
        if opts.schema_ids == SchemaIds::Keep
            && opts.schemas != SchemaPolicy::Overwrite
            && done_versions.is_empty()
        {
            let clashes = block(sr.clashes())?;
            if !clashes.is_empty() {
                return Err(RestoreError::Refused(format!(
                    "schema IDs clash on the target; nothing was written:\n  {}",
                    clashes.join("\n  ")
                )));
            }
        }
        schema_actions = block(sr.plan(&done_versions))?;
        if opts.schema_ids == SchemaIds::Keep && !opts.dry_run && done_versions.is_empty() {
            block(sr.probe_import())?;
        }
    }

    let groups_doc = restorable_groups(
        doc::<GroupsDoc>(&archive, "consumer-groups")?
            .map(|d| d.groups)
            .unwrap_or_default(),
    );
    wanted_offsets(&archive, &groups_doc, &mut jobs)?;
    let progress = ProgressGroup::new(&opts.kafka, &progress_group(&hex(&archive.root())))?;
    // Planning reads what is committed now; each partition's own read, once its transactional
    // ID is taken, waits for whatever was in flight.
    let prior = read_progress(&progress, &jobs, Read::Now)?;
    for tp in topic_plans.iter_mut() {
        tp.restored = jobs
            .iter()
            .zip(&prior)
            .filter(|(j, _)| j.target_topic == tp.target)
            .filter_map(|(_, p)| p.as_ref().map(|(_, p)| p.records))
            .sum();
    }
    check_targets(opts, &target, &topic_plans, &mut jobs, &prior)?;

    let group_re = match &opts.groups {
        Some(g) => Some(anchored(std::slice::from_ref(g), "--groups")?.remove(0)),
        None => None,
    };
    let groups: Vec<&crate::kafka::source::GroupOffsets> = groups_doc
        .iter()
        .filter(|g| group_re.as_ref().is_none_or(|r| r.is_match(&g.group)))
        .collect();

    tracing::debug!(elapsed = ?started.elapsed(), "pre-flight done");
    let plan = RestorePlan {
        archive: opts.archive.clone(),
        root_hash: hex(&archive.root()),
        schema_ids: opts.schema_ids,
        schemas: schema_actions.clone(),
        topics: topic_plans.clone(),
        groups: groups.iter().map(|g| g.group.clone()).collect(),
        state_file: state_path.clone(),
        progress_group: progress.name().to_string(),
    };
    if opts.dry_run {
        return Ok(RestoreReport {
            plan,
            dry_run: true,
            schemas: schema_actions,
            id_map: BTreeMap::new(),
            partitions: Vec::new(),
            groups: Vec::new(),
            records_written: 0,
            seconds: started.elapsed().as_secs_f64(),
            records_seconds: 0.0,
            ok: true,
        });
    }

    // From here on, writes. Topics first: with them in place, a transaction like the records'
    // is tried (and aborted) before any schema is registered.
    let state = match prior_state {
        Some(s) => s,
        None => State::open(&state_path, &fingerprint(opts, &archive))?,
    };
    for tp in topic_plans.iter().filter(|t| t.action == "create") {
        let configs = topics_doc
            .iter()
            .find(|t| t.name == tp.source)
            .map(|t| t.configs.clone())
            .unwrap_or_default();
        target.create_topic(&tp.target, tp.partitions, tp.replication_factor, &configs)?;
    }
    probe_transactions(opts, &jobs, &progress)?;
    tracing::debug!(elapsed = ?started.elapsed(), "topics created, transactions tried");
    let mut taken = Vec::new();
    if let (Some(c), Some(s)) = (&client, &snap) {
        let sr = SchemaRestore {
            client: c.clone(),
            snap: s,
            texts: &texts,
            ids: opts.schema_ids,
            policy: opts.schemas,
        };
        taken = block(sr.run(&state, target_was_empty))?;
    }
    let id_map: BTreeMap<u32, u32> = state.id_map()?.into_iter().collect();
    let known: Vec<u32> = snap
        .iter()
        .flat_map(|s| {
            s.subjects
                .iter()
                .flat_map(|st| st.versions.iter().map(|v| v.id))
        })
        .collect();
    let ids = IdMap::new(id_map.clone(), known);

    tracing::debug!(elapsed = ?started.elapsed(), "schemas restored");
    let rewrite = opts.schema_ids == SchemaIds::Rewrite && ids.changes_anything();
    let pairs: Vec<(u32, u32)> = ids.pairs().collect();
    let shared = Shared {
        archive: &archive,
        conn: &opts.kafka,
        target: &target,
        progress: &progress,
        ids: &ids,
        rewrite,
        ids_tag: ids_tag(rewrite.then_some(&pairs[..])),
        append: opts.append,
        txn_bytes: opts.transaction_bytes.max(1),
        cancel: &opts.cancel,
    };
    let records_started = Instant::now();
    let mut outcomes = run_partitions(opts, &shared, jobs.clone())?;
    not_started(&jobs, &mut outcomes);
    let records_seconds = records_started.elapsed().as_secs_f64();
    let ok_partitions = outcomes.iter().all(|o| o.error.is_none());
    tracing::debug!(elapsed = ?started.elapsed(), "records written");

    // Consumer groups, once every partition is in: their offsets are read from the committed
    // progress, whichever run (or restore) wrote the records.
    let mut group_outcomes = Vec::new();
    if ok_partitions {
        let done = read_progress(&progress, &jobs, Read::Stable)?;
        for g in groups {
            group_outcomes.push(restore_group(&target, g, &jobs, &done)?);
        }
    }
    let records_written = outcomes.iter().map(|o| o.written).sum();
    let ok = ok_partitions && group_outcomes.iter().all(|g| !g.failed);
    tracing::debug!(elapsed = ?started.elapsed(), "consumer groups done");
    crate::kafka::closing::close_in_background(target);
    Ok(RestoreReport {
        plan,
        dry_run: false,
        schemas: taken,
        id_map,
        ok,
        partitions: outcomes,
        groups: group_outcomes,
        records_written,
        seconds: started.elapsed().as_secs_f64(),
        records_seconds,
    })
}

/// Pre-flight over the partitions to restore: none may have a hole in its offsets (unless
/// `allow_gaps`), and, unless asked for less, every chunk to restore must check out in full.
fn check_partitions(
    opts: &RestoreOptions,
    archive: &Archive,
    jobs: &[PartitionJob],
) -> Result<(), RestoreError> {
    let mut chunks = Vec::new();
    let mut holes = Vec::new();
    for j in jobs {
        let mine = archive.chunks_of(&j.source_topic, j.partition)?;
        let entry = archive.manifest().partition(&j.source_topic, j.partition);
        let cov = coverage::check(
            mine.iter().map(|c| c.covers_from..c.covers_to),
            entry.and_then(|e| e.start_offset),
            entry.and_then(|e| e.end_offset),
            entry.is_some_and(|e| e.complete),
        );
        if !cov.overlaps.is_empty() {
            return Err(RestoreError::Refused(format!(
                "{}/{}: chunks of the archive claim the same offsets ({}); run `kar verify`",
                j.source_topic,
                j.partition,
                coverage::describe(&cov.overlaps)
            )));
        }
        if !cov.holes.is_empty() {
            holes.push(format!(
                "{}/{}: offsets {}",
                j.source_topic,
                j.partition,
                coverage::describe(&cov.holes)
            ));
        }
        chunks.extend(mine);
    }
    if !holes.is_empty() && !opts.allow_gaps {
        return Err(RestoreError::Refused(format!(
            "records are missing from the archive, so these partitions would be restored with holes; nothing was written:\n  {}\nrestore them anyway with --allow-gaps, or leave them out with --topics",
            holes.join("\n  ")
        )));
    }
    for h in &holes {
        tracing::warn!("restoring around a hole: {h}");
    }
    if opts.verify == PreflightCheck::Full {
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let problems = verify::check_chunks(archive, &chunks, threads);
        if let Some(first) = problems.first() {
            return Err(RestoreError::Refused(format!(
                "{} does not verify: {} damaged chunk(s) among those to restore, first: {first}; nothing was written. Run `kar verify` for the full list, `kar repair` to recover what is intact",
                opts.archive.display(),
                problems.len()
            )));
        }
    }
    Ok(())
}

/// What makes two runs "the same restore": archive, target and the options that change what is
/// written.
fn fingerprint(opts: &RestoreOptions, a: &Archive) -> String {
    format!(
        "archive root {}, target {}, registry {}, schema ids {:?}, topics {:?}, map {:?}, until {:?}",
        hex(&a.root()),
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

fn block<T>(
    f: impl std::future::Future<Output = Result<T, RestoreError>>,
) -> Result<T, RestoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

trait AwaitBlocking<T> {
    fn await_blocking(self) -> Result<T, RestoreError>;
}

impl<T, F: std::future::Future<Output = Result<T, RegistryError>>> AwaitBlocking<T> for F {
    fn await_blocking(self) -> Result<T, RestoreError> {
        block(async { self.await.map_err(RestoreError::from) })
    }
}

fn run_partitions(
    opts: &RestoreOptions,
    shared: &Shared<'_>,
    jobs: Vec<PartitionJob>,
) -> Result<Vec<PartitionOutcome>, RestoreError> {
    let queue = Mutex::new(jobs);
    let results = Mutex::new(Vec::new());
    let workers = opts.concurrency.max(1);
    let bar = if opts.progress {
        let total: u64 = shared
            .archive
            .manifest()
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records)
            .sum();
        let b = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(s) = indicatif::ProgressStyle::with_template(
            "restore {bar:40} {pos}/{len} records {per_sec} {eta}",
        ) {
            b.set_style(s);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let job = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some(job) = job else { break };
                    let out = records::restore_partition(shared, &job, &|n| bar.inc(n));
                    results.lock().unwrap_or_else(|p| p.into_inner()).push(out);
                    if opts.cancel.load(Ordering::SeqCst) {
                        break;
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut out = results.into_inner().unwrap_or_else(|p| p.into_inner());
    out.sort_by(|a, b| (&a.target_topic, a.partition).cmp(&(&b.target_topic, b.partition)));
    Ok(out)
}

/// Before any schema or record is written (the topics exist by now), a transaction like the
/// records' is tried on the first partition to restore and aborted: taking its transactional ID,
/// adding the progress commit for the progress group. A cluster without a usable transaction log,
/// or a principal without the ACLs, is found here. Taking the partition fences an older restore
/// of it, which the restore would do moments later anyway; the aborted transaction leaves nothing
/// in the partition and no progress.
fn probe_transactions(
    opts: &RestoreOptions,
    jobs: &[PartitionJob],
    progress: &ProgressGroup,
) -> Result<(), RestoreError> {
    let Some(j) = jobs.first() else {
        return Ok(());
    };
    let id = progress::transactional_id(&j.target_topic, j.partition);
    let tried = crate::kafka::txn::PartitionWriter::open(
        &opts.kafka,
        &id,
        &j.target_topic,
        j.partition,
        std::time::Duration::from_secs(30),
    )
    .and_then(|w| {
        let r = w
            .begin()
            .and_then(|()| w.try_progress(progress, j.start.max(0)))
            .and_then(|()| w.abort());
        crate::kafka::closing::close_in_background(w);
        r
    });
    tried.map_err(|e| {
        RestoreError::Refused(format!(
            "the target cluster does not take the transactions a restore writes with ({e}); no schema or record was written. Kafka needs a transaction log it can create (transaction.state.log.replication.factor at most the number of brokers) and, with ACLs, WRITE and DESCRIBE on the transactional IDs kar-restore.*, READ on the group kar-restore.*, and READ (besides CREATE, WRITE, DESCRIBE) on the target topics"
        ))
    })
}

/// For each partition, the indexes of the records that archived consumer-group offsets point at
/// (every group of the archive, whatever `--groups` picks, so that any later run finds them).
fn wanted_offsets(
    archive: &Archive,
    groups: &[crate::kafka::source::GroupOffsets],
    jobs: &mut [PartitionJob],
) -> Result<(), RestoreError> {
    for j in jobs.iter_mut() {
        for o in groups.iter().flat_map(|g| &g.offsets) {
            if o.topic == j.source_topic
                && o.partition == j.partition
                && !j.group_offsets.contains_key(&o.offset)
            {
                let k =
                    records::restored_before(archive, &o.topic, o.partition, o.offset, j.records)?;
                j.group_offsets.insert(o.offset, k);
                if k < j.records {
                    j.wanted.insert(k);
                }
            }
        }
    }
    Ok(())
}

/// The committed progress of each job's target partition: `(end offset, document)`.
fn read_progress(
    progress: &ProgressGroup,
    jobs: &[PartitionJob],
    read: Read,
) -> Result<Vec<Option<(i64, Progress)>>, RestoreError> {
    let parts: Vec<(String, i32)> = jobs
        .iter()
        .map(|j| (j.target_topic.clone(), j.partition))
        .collect();
    progress
        .committed(&parts, read)?
        .into_iter()
        .zip(&parts)
        .map(|(c, (t, p))| {
            c.map(|(end, meta)| {
                Progress::decode(&meta, progress.name(), t, *p)
                    .map(|d| (end, d))
                    .map_err(|e| RestoreError::Refused(e.to_string()))
            })
            .transpose()
        })
        .collect()
}

/// Where each partition's records begin, refusing, unless `--append`, a target partition that
/// holds committed records no earlier run of this restore wrote (records of aborted transactions
/// do not count).
fn check_targets(
    opts: &RestoreOptions,
    target: &Target,
    plans: &[TopicPlan],
    jobs: &mut [PartitionJob],
    prior: &[Option<(i64, Progress)>],
) -> Result<(), RestoreError> {
    let mut seen = BTreeMap::new();
    for j in jobs.iter() {
        if let Some(other) = seen.insert((&j.target_topic, j.partition), &j.source_topic) {
            return Err(RestoreError::Invalid(format!(
                "archived topics {other} and {} would both be restored into {}: give one of them another --map",
                j.source_topic, j.target_topic
            )));
        }
    }
    for (j, prior) in jobs.iter_mut().zip(prior) {
        let exists = plans
            .iter()
            .any(|t| t.target == j.target_topic && t.action == "exists");
        if !exists {
            continue;
        }
        let (low, high) = target.watermarks(&j.target_topic, j.partition)?;
        j.start = if opts.append { high } else { low };
        if opts.append || prior.is_some() || high == low {
            continue;
        }
        if let Some(o) = first_committed(&opts.kafka, &j.target_topic, j.partition, low, high)? {
            return Err(RestoreError::Refused(format!(
                "target topic {} partition {} already holds records (offsets {low}..{high}, committed from {o}); give --append to add to it, or --map {}=NEW",
                j.target_topic, j.partition, j.source_topic
            )));
        }
    }
    Ok(())
}

/// A group's archived offsets as target offsets (the first restored record at or after each, the
/// end of the restored records if none), committed unless the group has members on the target.
fn restore_group(
    target: &Target,
    g: &crate::kafka::source::GroupOffsets,
    jobs: &[PartitionJob],
    done: &[Option<(i64, Progress)>],
) -> Result<GroupOutcome, RestoreError> {
    let mut offsets = Vec::new();
    let mut unknown = Vec::new();
    for o in &g.offsets {
        let Some((j, d)) = jobs
            .iter()
            .zip(done)
            .find(|(j, _)| j.source_topic == o.topic && j.partition == o.partition)
        else {
            continue;
        };
        let k = j.group_offsets[&o.offset];
        let at = match d {
            Some((end, _)) if k >= j.records => Some(*end),
            Some((_, p)) => p.offset_of(k),
            None if j.records == 0 => Some(target.watermarks(&j.target_topic, j.partition)?.1),
            None => None,
        };
        match at {
            Some(t) => offsets.push((
                j.target_topic.clone(),
                o.partition,
                o.offset,
                t,
                &o.metadata,
            )),
            None => unknown.push(format!(
                "{}/{} (restored record {k})",
                j.target_topic, j.partition
            )),
        }
    }
    let failed = !unknown.is_empty();
    let skipped = if failed {
        Some(format!(
            "the target offsets of {} are not in the restore's committed progress (it holds a limited number a partition); nothing committed",
            unknown.join(", ")
        ))
    } else if offsets.is_empty() {
        Some("none of its partitions was restored".to_string())
    } else if target.group_has_members(&g.group)? {
        Some("the group has active members on the target".to_string())
    } else {
        let commit: Vec<(String, i32, i64, String)> = offsets
            .iter()
            .map(|(t, p, _, o, m)| (t.clone(), *p, *o, m.to_string()))
            .collect();
        target.commit(&g.group, &commit)?;
        None
    };
    Ok(GroupOutcome {
        group: g.group.clone(),
        offsets: offsets
            .into_iter()
            .map(|(t, p, s, o, _)| (t, p, s, o))
            .collect(),
        skipped,
        failed,
    })
}

/// The archive's consumer groups but kar's own restore-progress groups: taken from another
/// cluster (by a backup with a --groups that named them), they would tell a restore here that
/// records are in that are not.
fn restorable_groups(
    groups: Vec<crate::kafka::source::GroupOffsets>,
) -> Vec<crate::kafka::source::GroupOffsets> {
    let (progress, groups): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|g| g.group.starts_with(PROGRESS_GROUP_PREFIX));
    for g in &progress {
        tracing::warn!(
            "the archive holds {}, a restore-progress group of the cluster it was taken from: not restored",
            g.group
        );
    }
    groups
}

/// A partition the run never began (it was stopped first) is reported, failed, so that the run
/// is not taken for whole.
fn not_started(jobs: &[PartitionJob], outcomes: &mut Vec<PartitionOutcome>) {
    for j in jobs {
        if !outcomes
            .iter()
            .any(|o| o.target_topic == j.target_topic && o.partition == j.partition)
        {
            outcomes.push(PartitionOutcome {
                source_topic: j.source_topic.clone(),
                target_topic: j.target_topic.clone(),
                partition: j.partition,
                records: j.records,
                error: Some(
                    "not begun: the restore was stopped; run the same command again to continue"
                        .into(),
                ),
                ..Default::default()
            });
        }
    }
    outcomes.sort_by(|a, b| (&a.target_topic, a.partition).cmp(&(&b.target_topic, b.partition)));
}
