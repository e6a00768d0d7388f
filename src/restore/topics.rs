//! The Kafka side of a restore: which archived partitions go to which target partitions and what
//! the target already holds (planned before any write), then the topics, the records and the
//! consumer-group offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::keep;
use super::progress::{self, Progress, ids_tag, progress_group};
use super::records::{self, PartitionJob, PartitionOutcome, Shared};
use super::rewrite::IdMap;
use super::{
    GroupOutcome, PreflightCheck, RestoreError, RestoreOptions, TopicAction, TopicPlan, anchored,
};
use crate::archive::coverage;
use crate::archive::view::View;
use crate::format::consumer_groups::{ConsumerGroupsDoc, GroupOffsets};
use crate::format::kafka_topics::{KafkaTopicsDoc, TopicInfo};
use crate::kafka::sink::{CommitOffset, Target};
use crate::kafka::txn::{Compression, PROGRESS_GROUP_PREFIX, ProgressGroup, Read, first_committed};
use crate::runtime::Context;

/// What the Kafka side plans from: the archived topics and their partitions, from the manifest (a
/// file) or from the `kafka-topics` document (a stream, whose manifest comes last).
pub struct Catalogue<'a> {
    /// Source topic → its partitions, each with the records the restore puts in it
    /// ([`records::UNKNOWN`] before the end of a stream).
    pub topics: Vec<(String, Vec<(i32, u64)>)>,
    pub topics_doc: Vec<TopicInfo>,
    pub groups: Vec<GroupOffsets>,
    /// The archive file, for what only a file allows before the first write: every chunk's
    /// coverage and content, retention against the records' timestamps, the records
    /// consumer-group offsets point at. `None` for a stream.
    pub file: Option<&'a View>,
    /// What the restore's progress is named after (see [`super::archive_key`]).
    pub key: String,
}

impl<'a> Catalogue<'a> {
    /// The archive file's topics (its manifest), with the records each partition gets.
    pub fn of_file(a: &'a View, until: Option<i64>) -> Result<Catalogue<'a>, RestoreError> {
        let mut topics = Vec::new();
        for t in &a.manifest().topics {
            let mut parts = Vec::new();
            for p in &t.partitions {
                parts.push((
                    p.partition,
                    records::planned_records(a, &t.name, p.partition, until)?,
                ));
            }
            topics.push((t.name.clone(), parts));
        }
        Ok(Catalogue {
            topics,
            topics_doc: a
                .document::<KafkaTopicsDoc>(crate::format::kafka_topics::KIND)?
                .map(|d| d.topics)
                .unwrap_or_default(),
            groups: a
                .document::<ConsumerGroupsDoc>(crate::format::consumer_groups::KIND)?
                .map(|d| d.groups)
                .unwrap_or_default(),
            file: Some(a),
            key: super::archive_key(a.id(), &a.root()),
        })
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|(t, _)| t.as_str())
    }
}

/// What a restore will do on the Kafka side, and the clients it does it with.
pub struct KafkaPlan {
    target: Target,
    topics_doc: Vec<TopicInfo>,
    /// Each target topic's limits (retention, timestamps): a stream restore checks each chunk
    /// against them before it writes its records.
    pub(super) limits: BTreeMap<String, keep::Limits>,
    pub topics: Vec<TopicPlan>,
    jobs: Vec<PartitionJob>,
    progress: ProgressGroup,
    /// The archived consumer groups to restore (`--groups`).
    pub groups: Vec<GroupOffsets>,
    /// Selections that took nothing (`--topics`, `--groups` patterns), named.
    pub warnings: Vec<String>,
    /// Set when a partition stalled (the broker stopped acknowledging): the partitions not yet
    /// started, in this run, are not. One for the run: a stream restore makes a [`Shared`] for
    /// each partition.
    broker_lost: AtomicBool,
}

/// What the Kafka side of a restore did.
#[derive(Debug, Default)]
pub struct KafkaOutcome {
    pub partitions: Vec<PartitionOutcome>,
    pub groups: Vec<GroupOutcome>,
    /// The record phase alone.
    pub records_seconds: f64,
}

impl KafkaPlan {
    /// Everything read-only: the target answers, the topics and partitions to restore, their
    /// chunks check out, the target partitions hold nothing they should not, the progress of
    /// earlier runs.
    pub fn prepare(
        rt: &Context,
        opts: &RestoreOptions,
        cat: Catalogue<'_>,
    ) -> Result<KafkaPlan, RestoreError> {
        opts.kafka
            .validate()
            .map_err(|e| RestoreError::Invalid(e.to_string()))?;
        let target = Target::connect(&opts.kafka, rt)?;
        check_map(opts, &cat)?;
        let (mut topics, mut jobs) = plan_topics(opts, &cat, &target)?;
        let groups_doc = restorable_groups(cat.groups.clone());
        if let Some(archive) = cat.file {
            check_partitions(opts, archive, &jobs)?;
            wanted_offsets(archive, &groups_doc, &mut jobs)?;
        }
        let progress = ProgressGroup::new(&opts.kafka, &progress_group(&cat.key))?;
        // Planning reads what is committed now; each partition's own read, once its
        // transactional ID is taken, waits for whatever was in flight.
        let prior = read_progress(&progress, &jobs, Read::Now)?;
        for tp in topics.iter_mut() {
            tp.restored = jobs
                .iter()
                .zip(&prior)
                .filter(|(j, _)| j.target_topic == tp.target)
                .filter_map(|(_, p)| p.as_ref().map(|p| p.doc.records))
                .sum();
        }
        check_targets(opts, &target, &topics, &mut jobs, &prior)?;
        let limits = check_kept(opts, &cat, &target, &mut topics, &jobs)?;
        let group_re = match &opts.groups {
            Some(g) => Some(anchored(std::slice::from_ref(g), "--groups")?.remove(0)),
            None => None,
        };
        let groups: Vec<GroupOffsets> = groups_doc
            .into_iter()
            .filter(|g| group_re.as_ref().is_none_or(|r| r.is_match(&g.group)))
            .collect();
        let mut warnings = unmatched_topics(opts, &cat)?;
        if let Some(g) = &opts.groups
            && groups.is_empty()
        {
            warnings.push(format!(
                "--groups {g:?} matches no consumer group in the archive"
            ));
        }
        Ok(KafkaPlan {
            warnings,
            target,
            topics_doc: cat.topics_doc,
            limits,
            topics,
            jobs,
            progress,
            groups,
            broker_lost: AtomicBool::new(false),
        })
    }

    pub fn progress_group(&self) -> &str {
        self.progress.name()
    }

    /// Creates the topics the target lacks, then tries a transaction like the records' (see
    /// [`probe_transactions`]).
    pub fn create_topics_and_probe(&self, opts: &RestoreOptions) -> Result<(), RestoreError> {
        for tp in self
            .topics
            .iter()
            .filter(|t| t.action == TopicAction::Create)
        {
            let configs = given_configs(opts, &self.topics_doc, tp);
            self.target
                .create_topic(&tp.target, tp.partitions, tp.replication_factor, &configs)?;
        }
        probe_transactions(opts, &self.jobs, &self.progress, self.target.context())
    }

    /// The records, then, if every partition is whole, the consumer groups' offsets.
    pub fn run(
        &self,
        opts: &RestoreOptions,
        archive: &View,
        ids: &IdMap,
        rewrite: bool,
    ) -> Result<KafkaOutcome, RestoreError> {
        let shared = self.shared(opts, ids, rewrite);
        let started = Instant::now();
        let mut partitions = run_partitions(opts, &shared, archive, self.jobs.clone())?;
        not_started(&self.jobs, &mut partitions, &opts.progress);
        let records_seconds = started.elapsed().as_secs_f64();
        let groups = if partitions.iter().all(|o| o.error.is_none()) {
            self.restore_groups(&self.jobs)?
        } else {
            Vec::new()
        };
        Ok(KafkaOutcome {
            partitions,
            groups,
            records_seconds,
        })
    }

    /// What every partition of this restore shares.
    pub(super) fn shared<'a>(
        &'a self,
        opts: &'a RestoreOptions,
        ids: &'a IdMap,
        rewrite: bool,
    ) -> Shared<'a> {
        let pairs: Vec<(u32, u32)> = ids.pairs().collect();
        Shared {
            conn: &opts.kafka,
            target: &self.target,
            progress: &self.progress,
            ids,
            rewrite,
            ids_tag: ids_tag(rewrite.then_some(&pairs[..])),
            append: opts.append,
            txn_bytes: opts.transaction_bytes.max(1),
            stall: opts.stall_timeout,
            broker_lost: &self.broker_lost,
            cancel: &opts.cancel,
        }
    }

    /// The consumer groups' offsets, translated, from the committed progress, whichever run (or
    /// restore) wrote the records. `jobs` with their record counts and the group offsets' record
    /// indexes known.
    pub(super) fn restore_groups(
        &self,
        jobs: &[PartitionJob],
    ) -> Result<Vec<GroupOutcome>, RestoreError> {
        let done = read_progress(&self.progress, jobs, Read::Stable)?;
        // Each group takes a client of its own, mostly waiting on its coordinator: several at
        // once, so that a cluster's hundreds of groups are not committed one after another.
        crate::runtime::try_at_once(&self.groups, GROUP_COMMITS_AT_ONCE, |g| {
            restore_group(&self.target, g, jobs, &done)
        })
    }

    /// The partitions to restore.
    pub(super) fn jobs(&self) -> &[PartitionJob] {
        &self.jobs
    }

    /// Closes the clients off the critical path.
    pub fn close(self) {
        let rt = self.target.context().clone();
        rt.close_in_background(self.progress);
        rt.close_in_background(self.target);
    }
}

/// `--topics` patterns that match no topic of the archive, named.
fn unmatched_topics(
    opts: &RestoreOptions,
    cat: &Catalogue<'_>,
) -> Result<Vec<String>, RestoreError> {
    let res = anchored(&opts.topics, "--topics")?;
    Ok(opts
        .topics
        .iter()
        .zip(&res)
        .filter(|(_, r)| !cat.names().any(|t| r.is_match(t)))
        .map(|(p, _)| format!("--topics {p:?} matches no topic in the archive"))
        .collect())
}

/// The configs a topic the restore creates is given: the archived topic's, then `--topic-config`
/// for every topic, then for this one.
fn given_configs(
    opts: &RestoreOptions,
    topics_doc: &[TopicInfo],
    tp: &TopicPlan,
) -> BTreeMap<String, String> {
    let mut c = topics_doc
        .iter()
        .find(|t| t.name == tp.source)
        .map(|t| t.configs.clone())
        .unwrap_or_default();
    for only_this in [false, true] {
        for g in &opts.topic_configs {
            if g.topic.is_some() == only_this && g.topic.as_ref().is_none_or(|t| *t == tp.target) {
                c.insert(g.key.clone(), g.value.clone());
            }
        }
    }
    c
}

/// Whether the target keeps every record ([`super::keep`]), before any write: records its
/// timestamp limits refuse stop the restore; records its retention would delete soon after do
/// too, unless `--accept-retention-loss` (then each is a warning of its topic). A
/// `--topic-config` for a topic the restore does not create is an error.
fn check_kept(
    opts: &RestoreOptions,
    cat: &Catalogue<'_>,
    target: &Target,
    topics: &mut [TopicPlan],
    jobs: &[PartitionJob],
) -> Result<BTreeMap<String, keep::Limits>, RestoreError> {
    for g in &opts.topic_configs {
        if let Some(t) = &g.topic
            && !topics
                .iter()
                .any(|p| p.target == *t && p.action == TopicAction::Create)
        {
            return Err(RestoreError::Invalid(format!(
                "--topic-config {t}:{}: {t} is not a topic this restore creates (configs of topics that exist are left alone)",
                g.key
            )));
        }
    }
    let existing: Vec<String> = topics
        .iter()
        .filter(|t| t.action == TopicAction::Exists)
        .map(|t| t.target.clone())
        .collect();
    let mut effective = target.topic_configs(&existing)?;
    if topics.iter().any(|t| t.action == TopicAction::Create) {
        let broker = target.broker_configs()?;
        for tp in topics.iter().filter(|t| t.action == TopicAction::Create) {
            let given = given_configs(opts, &cat.topics_doc, tp);
            effective.insert(tp.target.clone(), keep::created_configs(&given, &broker));
        }
    }
    let limits: BTreeMap<String, keep::Limits> = topics
        .iter()
        .map(|t| {
            let c = effective.get(&t.target).cloned().unwrap_or_default();
            (t.target.clone(), keep::Limits::of(&c))
        })
        .collect();
    let Some(archive) = cat.file else {
        // A stream's records are checked chunk by chunk, as they come.
        return Ok(limits);
    };
    let now = crate::archive::writer::now_ms();
    let (mut losses, mut refusals) = (Vec::new(), Vec::new());
    for j in jobs {
        let limits = &limits[&j.target_topic];
        let chunks: Vec<_> = archive
            .chunks_of(&j.source_topic, j.partition)?
            .into_iter()
            .map(|c| c.entry)
            .collect();
        let f = keep::check_partition(
            &j.target_topic,
            j.partition,
            &chunks,
            j.records,
            limits,
            now,
        );
        let tp = topics.iter_mut().find(|t| t.target == j.target_topic);
        if let Some(tp) = tp {
            tp.warnings.extend(f.warnings);
            if opts.accept_retention_loss {
                tp.warnings
                    .extend(f.losses.iter().map(|l| format!("accepted: {l}")));
            }
        }
        losses.extend(f.losses);
        refusals.extend(f.refusals);
    }
    if !refusals.is_empty() {
        return Err(RestoreError::Refused(format!(
            "the target would refuse records for their timestamps; nothing was written:\n  {}\nfor a topic the restore creates, --topic-config [TOPIC:]message.timestamp.after.max.ms=N (or before.max.ms) widens the bound; a topic that exists needs its config changed",
            refusals.join("\n  ")
        )));
    }
    if !losses.is_empty() && !opts.accept_retention_loss {
        return Err(RestoreError::Refused(format!(
            "the target would delete restored records soon after the restore; nothing was written:\n  {}\nfor a topic the restore creates, --topic-config [TOPIC:]retention.ms=-1 (or a longer one) keeps them; --accept-retention-loss restores anyway",
            losses.join("\n  ")
        )));
    }
    Ok(limits)
}

/// The codec the restore compresses a topic's batches with: `--producer-compression`, else the
/// archived topic's `compression.type` where it names one, else lz4 (a topic set to `producer`,
/// the default, or `uncompressed` at the source: the broker keeps batches as produced).
fn producer_compression(opts: &RestoreOptions, info: Option<&TopicInfo>) -> Compression {
    opts.producer_compression
        .or_else(|| {
            info.and_then(|i| i.configs.get("compression.type"))
                .and_then(|c| Compression::parse(c))
                .filter(|c| *c != Compression::None)
        })
        .unwrap_or(Compression::Lz4)
}

/// The archived topics to restore (`--topics`), each with its target (`--map`) and whether the
/// target has it, and one job per partition.
fn plan_topics(
    opts: &RestoreOptions,
    cat: &Catalogue<'_>,
    target: &Target,
) -> Result<(Vec<TopicPlan>, Vec<PartitionJob>), RestoreError> {
    let inc = anchored(&opts.topics, "--topics")?;
    let chosen: Vec<&(String, Vec<(i32, u64)>)> = cat
        .topics
        .iter()
        .filter(|(t, _)| inc.is_empty() || inc.iter().any(|r| r.is_match(t)))
        .collect();
    if !opts.topics.is_empty() && chosen.is_empty() {
        return Err(RestoreError::Invalid(format!(
            "no topic in the archive matches {}",
            opts.topics.join(", ")
        )));
    }
    let existing = target.topics()?;
    let brokers = target.broker_count()?.max(1) as i32;
    let mut plans = Vec::new();
    let mut jobs = Vec::new();
    for (src, entry) in chosen {
        let dst = opts.map.get(src).cloned().unwrap_or_else(|| src.clone());
        let info = cat.topics_doc.iter().find(|t| &t.name == src);
        let partitions = info.map_or(entry.len() as i32, |i| i.partitions);
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
        let compression = producer_compression(opts, info);
        let mut records = 0u64;
        for &(partition, n) in entry {
            records = records.saturating_add(n);
            jobs.push(PartitionJob {
                source_topic: src.clone(),
                target_topic: dst.clone(),
                partition,
                records: n,
                group_offsets: BTreeMap::new(),
                wanted: BTreeSet::new(),
                start: 0,
                compression,
            });
        }
        let action = match existing.get(&dst) {
            Some(t) if t.partitions < partitions => {
                return Err(RestoreError::Refused(format!(
                    "target topic {dst} has {} partitions, the archive needs {partitions}: restore to another name with --map {src}=NEW",
                    t.partitions
                )));
            }
            Some(_) => TopicAction::Exists,
            None => TopicAction::Create,
        };
        plans.push(TopicPlan {
            source: src.clone(),
            target: dst,
            action,
            partitions,
            replication_factor: rf,
            records,
            restored: 0,
            compression,
            warnings,
        });
    }
    Ok((plans, jobs))
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
fn check_map(opts: &RestoreOptions, cat: &Catalogue<'_>) -> Result<(), RestoreError> {
    for (src, dst) in &opts.map {
        if cat.names().all(|t| t != src) {
            return Err(RestoreError::Invalid(format!(
                "--map {src}={dst}: the archive has no topic {src:?}"
            )));
        }
        check_topic_name(dst, &format!("--map {src}={dst}: target"))?;
    }
    Ok(())
}

/// Pre-flight over the partitions to restore: none may have a hole in its offsets (unless
/// `allow_gaps`), and, unless asked for less, every chunk to restore must check out in full.
fn check_partitions(
    opts: &RestoreOptions,
    archive: &View,
    jobs: &[PartitionJob],
) -> Result<(), RestoreError> {
    let mut chunks = Vec::new();
    let mut holes = Vec::new();
    for j in jobs {
        let mine = archive.chunks_of(&j.source_topic, j.partition)?;
        let entry = archive.manifest().partition(&j.source_topic, j.partition);
        let cov = coverage::check(
            mine.iter().map(|c| c.covers.clone()),
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
        let problems = archive.check_chunks(&chunks, threads);
        if let Some((member, first)) = problems.first() {
            return Err(RestoreError::Refused(format!(
                "{} does not verify: {} damaged chunk(s) among those to restore, first: {first}; nothing was written. Run `kar verify` for the full list, `kar repair` to recover what is intact",
                archive.archives()[*member].path().display(),
                problems.len()
            )));
        }
    }
    Ok(())
}

fn run_partitions(
    opts: &RestoreOptions,
    shared: &Shared<'_>,
    archive: &View,
    jobs: Vec<PartitionJob>,
) -> Result<Vec<PartitionOutcome>, RestoreError> {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for j in &jobs {
        *totals.entry(j.target_topic.clone()).or_default() += j.records;
    }
    opts.progress.begin(&totals.into_iter().collect::<Vec<_>>());
    let (queue, jobs_rx) = crossbeam_channel::unbounded();
    for j in jobs {
        records::tell_planned(&opts.progress, &j);
        let _ = queue.send(j);
    }
    drop(queue);
    let (results, done) = crossbeam_channel::unbounded();
    std::thread::scope(|scope| {
        for _ in 0..opts.concurrency.max(1) {
            let (jobs_rx, results) = (jobs_rx.clone(), results.clone());
            scope.spawn(move || {
                for job in jobs_rx {
                    let wrote = |p: &records::Produced| p.tell(&opts.progress, &job);
                    let out = records::restore_partition(shared, archive, &job, &wrote);
                    records::tell_ended(&opts.progress, &out);
                    let _ = results.send(out);
                    if opts.cancel.load(Ordering::SeqCst) {
                        break;
                    }
                }
            });
        }
    });
    drop(results);
    opts.progress.end();
    let mut out: Vec<PartitionOutcome> = done.into_iter().collect();
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
    rt: &Context,
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
        crate::kafka::txn::Batching {
            compression: j.compression,
            linger: crate::kafka::txn::linger_for(opts.transaction_bytes),
        },
        std::time::Duration::from_secs(30),
    )
    .map(|w| w.with_stall_timeout(opts.stall_timeout))
    .and_then(|w| {
        let r = w
            .begin()
            .and_then(|()| w.try_progress(progress, j.start.max(0)))
            .and_then(|()| w.abort());
        rt.close_in_background(w);
        r
    });
    match tried {
        // Another restore took the partition's transactional ID meanwhile (two restores at once):
        // the cluster takes transactions; which run keeps the partition is settled as it writes.
        // A progress commit that outlived its timeout is librdkafka's fault, not the cluster's:
        // the partition's producer takes the ID over and aborts the probe's transaction.
        Ok(())
        | Err(
            crate::kafka::txn::WriteError::Fenced { .. }
            | crate::kafka::txn::WriteError::Hung { .. },
        ) => Ok(()),
        Err(e) => Err(RestoreError::Refused(format!(
            "the target cluster does not take the transactions a restore writes with ({e}); no schema or record was written. Kafka needs a transaction log it can create (transaction.state.log.replication.factor at most the number of brokers) and, with ACLs, WRITE and DESCRIBE on the transactional IDs kar-restore.*, READ on the group kar-restore.*, and READ (besides CREATE, WRITE, DESCRIBE) on the target topics"
        ))),
    }
}

/// For each partition, the indexes of the records that archived consumer-group offsets point at
/// (every group of the archive, whatever `--groups` picks, so that any later run finds them).
fn wanted_offsets(
    archive: &View,
    groups: &[GroupOffsets],
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

/// A partition's progress committed by a run of this restore.
struct Resumed {
    /// The target offset after the last restored record.
    end: i64,
    doc: Progress,
}

/// The committed progress of each job's target partition.
fn read_progress(
    progress: &ProgressGroup,
    jobs: &[PartitionJob],
    read: Read,
) -> Result<Vec<Option<Resumed>>, RestoreError> {
    let parts: Vec<(String, i32)> = jobs
        .iter()
        .map(|j| (j.target_topic.clone(), j.partition))
        .collect();
    progress
        .committed(&parts, read)?
        .into_iter()
        .zip(&parts)
        .map(|(c, (t, p))| {
            c.map(|c| {
                Progress::decode(&c.metadata, progress.name(), t, *p)
                    .map(|doc| Resumed { end: c.offset, doc })
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
    prior: &[Option<Resumed>],
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
            .any(|t| t.target == j.target_topic && t.action == TopicAction::Exists);
        if !exists {
            continue;
        }
        let (low, high) = target.watermarks(&j.target_topic, j.partition)?;
        j.start = if opts.append { high } else { low };
        if opts.append || prior.is_some() || high == low {
            continue;
        }
        let rt = target.context();
        if let Some(o) = first_committed(&opts.kafka, rt, &j.target_topic, j.partition, low, high)?
        {
            return Err(RestoreError::Refused(format!(
                "target topic {} partition {} already holds records (offsets {low}..{high}, committed from {o}); give --append to add to it, or --map {}=NEW",
                j.target_topic, j.partition, j.source_topic
            )));
        }
    }
    Ok(())
}

/// Consumer groups committed at the same time. Each is a client of its own (DescribeGroups,
/// then FindCoordinator and OffsetCommit, then its close), ~60 ms and mostly waiting: one after
/// another, the 10 groups of a bench archive took 0.6 s of a 5.7 s restore, the cores idle.
const GROUP_COMMITS_AT_ONCE: usize = 16;

/// A group's archived offsets as target offsets (the first restored record at or after each, the
/// end of the restored records if none), committed unless the group has members on the target.
fn restore_group(
    target: &Target,
    g: &GroupOffsets,
    jobs: &[PartitionJob],
    done: &[Option<Resumed>],
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
            Some(r) if k >= j.records => Some(r.end),
            Some(r) => r.doc.offset_of(k),
            None if j.records == 0 => Some(target.watermarks(&j.target_topic, j.partition)?.1),
            None => None,
        };
        match at {
            Some(t) => offsets.push((
                super::TranslatedOffset {
                    topic: j.target_topic.clone(),
                    partition: o.partition,
                    source: o.offset,
                    target: t,
                },
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
        let commit: Vec<CommitOffset> = offsets
            .iter()
            .map(|(o, metadata)| CommitOffset {
                topic: o.topic.clone(),
                partition: o.partition,
                offset: o.target,
                metadata: metadata.to_string(),
            })
            .collect();
        target.commit(&g.group, &commit)?;
        None
    };
    Ok(GroupOutcome {
        group: g.group.clone(),
        offsets: offsets.into_iter().map(|(o, _)| o).collect(),
        skipped,
        failed,
    })
}

/// The archive's consumer groups but kar's own restore-progress groups: taken from another
/// cluster (by a backup with a --groups that named them), they would tell a restore here that
/// records are in that are not.
fn restorable_groups(groups: Vec<GroupOffsets>) -> Vec<GroupOffsets> {
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
fn not_started(
    jobs: &[PartitionJob],
    outcomes: &mut Vec<PartitionOutcome>,
    progress: &crate::progress::Progress,
) {
    for j in jobs {
        if !outcomes
            .iter()
            .any(|o| o.target_topic == j.target_topic && o.partition == j.partition)
        {
            let o = PartitionOutcome {
                source_topic: j.source_topic.clone(),
                target_topic: j.target_topic.clone(),
                partition: j.partition,
                records: j.records,
                error: Some(
                    "not begun: the restore was stopped; run the same command again to continue"
                        .into(),
                ),
                ..Default::default()
            };
            records::tell_ended(progress, &o);
            outcomes.push(o);
        }
    }
    outcomes.sort_by(|a, b| (&a.target_topic, a.partition).cmp(&(&b.target_topic, b.partition)));
}
