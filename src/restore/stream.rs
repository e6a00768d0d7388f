//! `kar restore -` (or a FIFO, or a tape device): a restore from an archive read once, front to
//! back, as the stream's one-pass verify checks it (`archive::stream`). The one restore that
//! cannot check every chunk before its first write, and its plan says so. What it can, it does
//! first: blobs and documents precede every record chunk (format §3), so the plan, the pre-flight
//! checks, the topics and the schemas are done before the first record; each chunk is then checked
//! whole (content ID, every record) and against its partition's order and the target's limits
//! before any of its records is produced; the root and the manifest are checked at the end, and
//! consumer-group offsets are committed only when they check out.
//!
//! Progress is named after the archive ID (a stream has it in its header; the root only comes at
//! the end), as a file restore of the same archive names it: a killed stream restore continues
//! from the same stream read again, or from the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::records::{self, PartitionJob, PartitionOutcome, UNKNOWN};
use super::stream_chunks::{Facts, StreamChunk, StreamChunks};
use super::topics::{Catalogue, KafkaOutcome, KafkaPlan};
use super::{
    ContextPlan, Head, RestoreError, RestoreOptions, RestorePlan, RestoreReport, dry_run_report,
    final_report, fingerprint_of, kafka_wanted, plan_contexts, plan_of, write_head,
};
use crate::archive::ArchiveError;
use crate::archive::reader::Contents;
use crate::archive::stream::{FrameSink, verify_stream_into};
use crate::archive::verify::VerifyReport;
use crate::format::chunk::ChunkHeader;
use crate::format::consumer_groups::{ConsumerGroupsDoc, GroupOffsets};
use crate::format::file_header::FileHeader;
use crate::format::frame::{FrameHeader, FrameKind};
use crate::format::kafka_topics::KafkaTopicsDoc;
use crate::format::{Hash, hex};
use crate::registry::snapshot::RegistrySnapshot;
use crate::restore::rewrite::IdMap;
use crate::restore::state::State;
use crate::runtime::{Context, Runtime};

/// Chunks queued for one partition's producer: the reader runs at most this far ahead of it.
const QUEUED_CHUNKS: usize = 4;

/// Restores the archive the stream `opts.archive` names, in one pass.
pub fn restore_stream(rt: &Runtime, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    opts.check()?;
    let started = Instant::now();
    let (reader, name) = crate::archive::source::open_stream(&opts.archive)?;
    let mut sink = Sink {
        rt: rt.context().clone(),
        opts: Arc::new(opts.clone()),
        started,
        name: name.clone(),
        key: None,
        blobs: Blobs::default(),
        docs: BTreeMap::new(),
        records_begun: false,
        planned: None,
        error: None,
    };
    let check = verify_stream_into(
        reader,
        name,
        None,
        &|_| {},
        &mut sink,
        opts.unlock.as_deref(),
    );
    sink.finish(check)
}

/// The blobs of the stream's head, by content ID.
#[derive(Default)]
struct Blobs(HashMap<Hash, Vec<u8>>);

impl Contents for Blobs {
    fn content(&self, id: &Hash) -> Result<Vec<u8>, ArchiveError> {
        self.0
            .get(id)
            .cloned()
            .ok_or_else(|| ArchiveError::Missing {
                path: PathBuf::from("(stream)"),
                what: format!(
                    "blob {} before the first record chunk (a stream restore has only those)",
                    hex(id)
                ),
            })
    }
}

/// What the record phase shares with each partition's producer thread.
struct Running {
    kafka: KafkaPlan,
    ids: IdMap,
    rewrite: bool,
    opts: Arc<RestoreOptions>,
}

struct Worker {
    /// Closed once the partition's last chunk is queued (or its producer stopped).
    tx: Option<Sender<StreamChunk>>,
    handle: JoinHandle<(PartitionOutcome, Facts)>,
}

/// The restore, planned from the stream's head.
struct Planned {
    plan: RestorePlan,
    contexts: Vec<ContextPlan>,
    /// `None` in a dry run, or without Kafka.
    run: Option<Arc<Running>>,
    kafka: Option<KafkaPlan>,
    head: Option<Head>,
    /// Held to the end: another restore of the same archive waits for it.
    _state: Option<State>,
    /// Each partition's declared range `start..end`.
    declared: BTreeMap<(String, i32), (i64, i64)>,
    /// The archive's committed consumer-group offsets on each partition.
    offsets: BTreeMap<(String, i32), BTreeSet<i64>>,
    workers: BTreeMap<(String, i32), Worker>,
    records_started: Instant,
}

struct Sink {
    rt: Context,
    opts: Arc<RestoreOptions>,
    started: Instant,
    name: PathBuf,
    /// The archive ID, hex: what the progress is named after.
    key: Option<String>,
    blobs: Blobs,
    /// Metadata documents by kind, as they came.
    docs: BTreeMap<String, Vec<u8>>,
    records_begun: bool,
    planned: Option<Planned>,
    error: Option<RestoreError>,
}

impl FrameSink for Sink {
    fn begin(&mut self, header: &FileHeader) -> bool {
        if header.is_chain_member() {
            self.error = Some(RestoreError::Refused(format!(
                "{} is a chain member (format {}.{}): it holds only what was new since its parent, so it is not restored alone; consolidate the chain (kar consolidate) and restore that; nothing was written",
                self.name.display(),
                header.major,
                header.minor
            )));
            return false;
        }
        match header.archive_id {
            Some(id) => self.key = Some(id.hex()),
            None => {
                self.error = Some(RestoreError::Refused(format!(
                    "{} is a {}.{} archive, which carries no archive ID to name a stream restore's progress after; restore it from a file",
                    self.name.display(),
                    header.major,
                    header.minor
                )));
            }
        }
        self.error.is_none()
    }

    fn content(&mut self, at: u64, h: &FrameHeader, raw: &[u8]) -> bool {
        if self.opts.cancel.load(Ordering::SeqCst) {
            self.error = Some(RestoreError::Stream(
                "the restore was stopped; run the same command again to continue".into(),
            ));
            return false;
        }
        let r = match h.kind {
            FrameKind::Blob => self.head_frame(at, "blob").map(|()| {
                self.blobs.0.insert(h.content_id, raw.to_vec());
            }),
            FrameKind::Metadata => self.document(at, raw),
            FrameKind::RecordChunk => self.chunk(at, raw),
            _ => Ok(()),
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

impl Sink {
    /// Blobs and documents (but provenance) must come before the first record chunk (§3).
    fn head_frame(&self, at: u64, what: &str) -> Result<(), RestoreError> {
        if !self.records_begun {
            return Ok(());
        }
        Err(RestoreError::Stream(format!(
            "{}: the {what} at offset {at} follows record chunks, against the order the format asks of a writer (blobs and documents first) and a stream restore needs; nothing more was written, what was committed stays; restore this archive from a file",
            self.name.display()
        )))
    }

    fn document(&mut self, at: u64, raw: &[u8]) -> Result<(), RestoreError> {
        #[derive(serde::Deserialize)]
        struct Kind {
            kind: String,
        }
        let kind = serde_json::from_slice::<Kind>(raw)
            .map(|k| k.kind)
            .map_err(|e| {
                RestoreError::Refused(format!(
                    "{}: the metadata document at offset {at} has no kind ({e})",
                    self.name.display()
                ))
            })?;
        if kind != crate::format::provenance::KIND {
            self.head_frame(at, &format!("{kind} document"))?;
        }
        self.docs.insert(kind, raw.to_vec());
        Ok(())
    }

    fn doc<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<Option<T>, RestoreError> {
        let Some(raw) = self.docs.get(kind) else {
            return Ok(None);
        };
        serde_json::from_slice(raw).map(Some).map_err(|e| {
            RestoreError::Refused(format!(
                "{}: the {kind} document does not read ({e})",
                self.name.display()
            ))
        })
    }

    fn chunk(&mut self, at: u64, raw: &[u8]) -> Result<(), RestoreError> {
        if !self.records_begun {
            self.records_begun = true;
            self.planned = Some(self.plan()?);
        }
        let p = self.planned.as_mut().expect("planned at the first chunk");
        let Some(run) = p.run.clone() else {
            return Ok(());
        };
        let (h, _) = ChunkHeader::decode(raw, 0).map_err(|e| ArchiveError::Format {
            path: self.name.clone(),
            source: e,
            context: format!(" (the chunk at offset {at})"),
        })?;
        let key = (h.topic.clone(), h.partition);
        let Some(job) = run
            .kafka
            .jobs()
            .iter()
            .find(|j| j.source_topic == h.topic && j.partition == h.partition)
        else {
            return Ok(());
        };
        let (start, end) = p.declared.get(&key).copied().unwrap_or((0, i64::MAX));
        let offsets = p.offsets.get(&key).cloned().unwrap_or_default();
        let w = p
            .workers
            .entry(key)
            .or_insert_with(|| spawn(run.clone(), job.clone(), start, offsets));
        if let Some(tx) = &w.tx
            && tx.send((at, raw.to_vec())).is_err()
        {
            // Its producer stopped (its error is in its outcome); its chunks go nowhere.
            w.tx = None;
        }
        if h.covers_to >= end {
            // The partition is whole: its producer commits and ends now, not at the stream's end.
            w.tx = None;
        }
        Ok(())
    }

    /// The plan from the head's documents, and, unless a dry run, everything before the records:
    /// topics, the transaction probe, schemas.
    fn plan(&self) -> Result<Planned, RestoreError> {
        let opts = &self.opts;
        let key = self.key.clone().expect("the header gave the archive ID");
        let topics_doc: Option<KafkaTopicsDoc> = self.doc(crate::format::kafka_topics::KIND)?;
        let groups: Vec<GroupOffsets> = self
            .doc::<ConsumerGroupsDoc>(crate::format::consumer_groups::KIND)?
            .map(|d| d.groups)
            .unwrap_or_default();
        let snap: Option<RegistrySnapshot> = self.doc(crate::format::schema_registry::KIND)?;
        let (declared, offsets, topics) = catalogue(topics_doc.as_ref(), &groups);
        let holds = format!("{} topic(s)", topics.len());
        let with_kafka = kafka_wanted(opts, &self.name, topics.len(), &holds, snap.is_some())?;
        let state_file = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(format!("{key}.restore-state"));
        let fingerprint = fingerprint_of(opts, &key);
        let prior = if state_file.exists() {
            Some(State::open(&state_file, &fingerprint)?)
        } else {
            None
        };
        let kafka = if with_kafka {
            let cat = Catalogue {
                topics,
                topics_doc: topics_doc.map(|d| d.topics).unwrap_or_default(),
                groups,
                file: None,
                key: key.clone(),
            };
            Some(KafkaPlan::prepare(&self.rt, opts, cat)?)
        } else {
            None
        };
        let known_ids: Vec<u32> = snap
            .iter()
            .flat_map(|s| &s.subjects)
            .flat_map(|s| s.versions.iter().map(|v| v.id))
            .collect();
        let contexts = match (&opts.registry, snap) {
            (Some(r), Some(s)) => plan_contexts(&self.rt, opts, r, &self.blobs, s, prior.as_ref())?,
            (Some(_), None) => {
                return Err(RestoreError::Invalid(
                    "--registry was given but the archive holds no Schema Registry snapshot".into(),
                ));
            }
            (None, _) => Vec::new(),
        };
        let mut plan = plan_of(opts, kafka.as_ref(), &contexts, state_file.clone());
        plan.archive_id = Some(key);
        plan.stream = true;
        plan.warnings.push(
            "restoring from a stream: each chunk is checked just before its records are written, not every chunk before the first write (restore from a file for that); the root is checked at the end, and consumer-group offsets are committed only after it checks out".into(),
        );
        let mut planned = Planned {
            plan,
            contexts,
            run: None,
            kafka,
            head: None,
            _state: None,
            declared,
            offsets,
            workers: BTreeMap::new(),
            records_started: Instant::now(),
        };
        if opts.dry_run {
            return Ok(planned);
        }
        let state = match prior {
            Some(s) => s,
            None => State::open(&state_file, &fingerprint)?,
        };
        self.begin_records(&mut planned, state, known_ids)?;
        Ok(planned)
    }

    /// Everything before the records (topics, the transaction probe, schemas), then the record
    /// phase's shared state.
    fn begin_records(
        &self,
        planned: &mut Planned,
        state: State,
        known_ids: Vec<u32>,
    ) -> Result<(), RestoreError> {
        let opts = &self.opts;
        let mut head = write_head(
            planned.kafka.as_ref(),
            &planned.contexts,
            known_ids,
            opts,
            &state,
        )?;
        planned._state = Some(state);
        if let Some(k) = planned.kafka.take() {
            let totals = totals(k.jobs(), &planned.declared);
            opts.progress.begin(&totals);
            planned.run = Some(Arc::new(Running {
                kafka: k,
                ids: std::mem::take(&mut head.ids),
                rewrite: head.rewrite,
                opts: self.opts.clone(),
            }));
        }
        planned.head = Some(head);
        planned.records_started = Instant::now();
        Ok(())
    }

    /// After the stream: every producer ends, then, with the stream whole and every partition
    /// restored, the consumer groups; the report says what the stream's verify found.
    fn finish(mut self, check: VerifyReport) -> Result<RestoreReport, RestoreError> {
        if self.planned.is_none() && self.error.is_none() {
            // No record chunk: the plan comes at the end, once the stream checked out.
            if !check.ok {
                return Err(refused(&check));
            }
            self.records_begun = true;
            match self.plan() {
                Ok(p) => self.planned = Some(p),
                Err(e) => self.error = Some(e),
            }
        }
        let Some(mut p) = self.planned.take() else {
            return Err(self.error.unwrap_or_else(|| refused(&check)));
        };
        let outcomes = join_all(&mut p);
        if let Some(e) = self.error {
            return Err(e);
        }
        p.plan.root_hash = check.root_hash.clone().unwrap_or_default();
        let Some(head) = p.head.take() else {
            let mut r = dry_run_report(p.plan, self.started);
            r.ok = check.ok;
            r.stream_check = Some(check);
            return Ok(r);
        };
        let outcome = match p.run.take() {
            Some(run) => {
                let o = records_outcome(&run, &p, outcomes, check.ok)?;
                if let Ok(run) = Arc::try_unwrap(run) {
                    run.kafka.close();
                }
                self.opts.progress.end();
                o
            }
            None => KafkaOutcome::default(),
        };
        let mut r = final_report(p.plan, self.started, &p.contexts, head, outcome)?;
        r.ok &= check.ok;
        r.stream_check = Some(check);
        Ok(r)
    }
}

/// Each partition's declared range, the consumer groups' committed offsets on each, and the
/// topics with their partitions, from the stream's documents.
#[allow(clippy::type_complexity)]
fn catalogue(
    topics_doc: Option<&KafkaTopicsDoc>,
    groups: &[GroupOffsets],
) -> (
    BTreeMap<(String, i32), (i64, i64)>,
    BTreeMap<(String, i32), BTreeSet<i64>>,
    Vec<(String, Vec<(i32, u64)>)>,
) {
    let declared: BTreeMap<(String, i32), (i64, i64)> = topics_doc
        .iter()
        .flat_map(|d| &d.partitions)
        .map(|r| {
            (
                (r.topic.clone(), r.partition),
                (r.start_offset, r.end_offset),
            )
        })
        .collect();
    let mut offsets: BTreeMap<(String, i32), BTreeSet<i64>> = BTreeMap::new();
    for o in groups.iter().flat_map(|g| &g.offsets) {
        offsets
            .entry((o.topic.clone(), o.partition))
            .or_default()
            .insert(o.offset);
    }
    let mut topics: Vec<(String, Vec<(i32, u64)>)> = Vec::new();
    for (t, p) in declared.keys() {
        match topics.last_mut() {
            Some((name, parts)) if name == t => parts.push((*p, UNKNOWN)),
            _ => topics.push((t.clone(), vec![(*p, UNKNOWN)])),
        }
    }
    (declared, offsets, topics)
}

/// Nothing was written: the stream did not verify before its first record chunk.
fn refused(check: &VerifyReport) -> RestoreError {
    let first = check
        .problems
        .first()
        .map_or_else(|| "no archive".to_string(), ToString::to_string);
    RestoreError::Refused(format!(
        "{} does not verify ({} problem(s), first: {first}); nothing was written",
        check.path.display(),
        check.problems.len()
    ))
}

/// The partitions' outcomes and, with the stream whole and every partition restored, the
/// consumer groups', translated with what the chunks showed.
fn records_outcome(
    run: &Running,
    p: &Planned,
    mut outcomes: BTreeMap<(String, i32), (PartitionOutcome, Facts)>,
    stream_ok: bool,
) -> Result<KafkaOutcome, RestoreError> {
    let mut jobs = Vec::new();
    let mut partitions = Vec::new();
    for j in run.kafka.jobs() {
        let key = (j.source_topic.clone(), j.partition);
        let (outcome, facts) = outcomes.remove(&key).unwrap_or_else(|| {
            // No chunk of it came: an empty partition (the verify says whether it should be).
            let located = p.offsets.get(&key).into_iter().flatten().map(|c| (*c, 0));
            let o = PartitionOutcome {
                source_topic: j.source_topic.clone(),
                target_topic: j.target_topic.clone(),
                partition: j.partition,
                ..Default::default()
            };
            (
                o,
                Facts {
                    records: 0,
                    located: located.collect(),
                },
            )
        });
        jobs.push(PartitionJob {
            records: facts.records,
            group_offsets: facts.located,
            ..j.clone()
        });
        partitions.push(outcome);
    }
    let groups = if stream_ok && partitions.iter().all(|o| o.error.is_none()) {
        run.kafka.restore_groups(&jobs)?
    } else {
        Vec::new()
    };
    partitions.sort_by(|a, b| (&a.target_topic, a.partition).cmp(&(&b.target_topic, b.partition)));
    Ok(KafkaOutcome {
        partitions,
        groups,
        records_seconds: p.records_started.elapsed().as_secs_f64(),
    })
}

/// Closes every producer's queue and waits for each to commit and end.
fn join_all(p: &mut Planned) -> BTreeMap<(String, i32), (PartitionOutcome, Facts)> {
    std::mem::take(&mut p.workers)
        .into_iter()
        .map(|(k, mut w)| {
            w.tx = None;
            let r = w.handle.join().unwrap_or_else(|_| {
                let o = PartitionOutcome {
                    source_topic: k.0.clone(),
                    partition: k.1,
                    error: Some("the partition's producer thread panicked".into()),
                    ..Default::default()
                };
                (o, Facts::default())
            });
            (k, r)
        })
        .collect()
}

/// Each target topic's records as far as the backup set out to capture: a bound, not a count
/// (a stream's counts come at its end).
fn totals(
    jobs: &[PartitionJob],
    declared: &BTreeMap<(String, i32), (i64, i64)>,
) -> Vec<(String, u64)> {
    let mut t: BTreeMap<String, u64> = BTreeMap::new();
    for j in jobs {
        let (s, e) = declared
            .get(&(j.source_topic.clone(), j.partition))
            .copied()
            .unwrap_or((0, 0));
        *t.entry(j.target_topic.clone()).or_default() += e.saturating_sub(s).max(0) as u64;
    }
    t.into_iter().collect()
}

/// A producer thread for one partition, fed the partition's chunks as they come.
fn spawn(run: Arc<Running>, job: PartitionJob, start: i64, offsets: BTreeSet<i64>) -> Worker {
    let (tx, rx) = crossbeam_channel::bounded(QUEUED_CHUNKS);
    let handle = std::thread::spawn(move || {
        let o = &run.opts;
        let limits = run
            .kafka
            .limits
            .get(&job.target_topic)
            .cloned()
            .unwrap_or_else(|| super::keep::Limits::of(&BTreeMap::new()));
        let mut src = StreamChunks::new(
            rx,
            job.clone(),
            start,
            offsets,
            o.until,
            o.allow_gaps,
            limits,
            o.accept_retention_loss,
        );
        let shared = run.kafka.shared(o, &run.ids, run.rewrite);
        let wrote = |p: &records::Produced| p.tell(&o.progress, &job);
        records::tell_planned(&o.progress, &job);
        let out = records::restore_from(&shared, &job, &mut src, &wrote);
        records::tell_ended(&o.progress, &out);
        (out, src.facts())
    });
    Worker {
        tx: Some(tx),
        handle,
    }
}
