//! Continuous mode across processes (`--group NAME`): the processes join one Kafka consumer
//! group (cooperative-sticky assignment) and Kafka spreads the partitions over them; each writes
//! its own chain of members over the partitions it holds. The group's consumer only holds the
//! membership (its partitions paused): each member reads with the backup's own consumers.
//!
//! Progress is in the archives: after a member is renamed into place, its partitions' ends are
//! committed to the group, so that whichever process holds a partition next starts where this
//! one ended; a process continuing its own chain starts at its own member's end when that is
//! later. A rebalance that takes partitions away closes the member being written first (the
//! revocation waits for it), so a partition's records end in one chain where they begin in the
//! next. A kill between a member's rename and its commit leaves the next holder to start at the
//! older commit: an overlap, which `kar chain --set` names; nothing is lost.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::continuous::{
    ContinuousOptions, ContinuousReport, GroupSettings, member, newest, retain,
};
use super::{Assignment, BackupError, BackupOptions, BackupReport};
use crate::runtime::Runtime;

/// What the group's consumer thread and the member loop share.
/// Topic and partition numbers.
type Partitions = BTreeSet<(String, i32)>;

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    assigned: Partitions,
    /// The roll flag of the member being written, if one is.
    writing: Option<Arc<AtomicBool>>,
    /// Members closed and committed so far.
    closed: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct GroupContext(Arc<Shared>);

impl ClientContext for GroupContext {}

/// How long a revocation waits for the member being written to close.
const CLOSE_WAIT: Duration = Duration::from_secs(240);

impl ConsumerContext for GroupContext {
    /// Partitions taken away: the member being written is closed (and its ends committed)
    /// before they are released.
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = r else { return };
        let mut st = self.0.lock();
        // Taken out first: a member begun from now on does not hold them.
        for e in tpl.elements() {
            st.assigned.remove(&(e.topic().to_string(), e.partition()));
        }
        if let Some(roll) = st.writing.clone() {
            roll.store(true, Ordering::SeqCst);
            let (seen, deadline) = (st.closed, Instant::now() + CLOSE_WAIT);
            while st.writing.is_some() && st.closed == seen && Instant::now() < deadline {
                st = self
                    .0
                    .changed
                    .wait_timeout(st, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        self.0.changed.notify_all();
    }

    /// Partitions given: paused (this consumer reads nothing); the member being written rolls so
    /// that the next takes them too.
    fn post_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = r else { return };
        if tpl.count() > 0
            && let Err(e) = c.pause(tpl)
        {
            tracing::debug!("pausing the group's partitions: {e}");
        }
        let mut st = self.0.lock();
        for e in tpl.elements() {
            st.assigned.insert((e.topic().to_string(), e.partition()));
        }
        // (The cooperative protocol also calls this with nothing new: no roll then.)
        if tpl.count() > 0
            && let Some(roll) = &st.writing
        {
            roll.store(true, Ordering::SeqCst);
        }
        self.0.changed.notify_all();
    }
}

/// Members over the partitions the group gives this process, until stopped.
pub(super) fn run(
    rt: &Runtime,
    base: &BackupOptions,
    c: &ContinuousOptions,
    g: &GroupSettings,
    report: &mut ContinuousReport,
    on_member: &dyn Fn(&BackupReport),
) -> Result<(), BackupError> {
    let shared = Arc::new(Shared::default());
    let consumer = Arc::new(join(base, g, shared.clone())?);
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let (consumer, polling) = (consumer.clone(), polling.clone());
        std::thread::spawn(move || {
            while polling.load(Ordering::SeqCst) {
                // Only rebalances and errors come: the partitions are paused.
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                    tracing::debug!("group consumer: {e}");
                }
            }
        })
    };
    let result = members(rt, base, c, g, &consumer, &shared, report, on_member);
    polling.store(false, Ordering::SeqCst);
    let _ = poller.join();
    // Leaving the group (the consumer's close) revokes what this process holds: nothing is
    // being written any more, so it returns at once.
    drop(consumer);
    result
}

/// The group's consumer: subscribed to the selected topics, committing only what members hold.
fn join(
    base: &BackupOptions,
    g: &GroupSettings,
    shared: Arc<Shared>,
) -> Result<BaseConsumer<GroupContext>, BackupError> {
    let bad = |what: &str, e: rdkafka::error::KafkaError| {
        BackupError::Invalid(format!("--group {}: {what}: {e}", g.name))
    };
    let session = g.session_timeout.as_millis().max(1000);
    let consumer: BaseConsumer<GroupContext> = base
        .kafka
        .client_config()
        .set("group.id", &g.name)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 3).to_string())
        .create_with_context(GroupContext(shared))
        .map_err(|e| bad("cannot create the group's consumer", e))?;
    // The topics kar's own patterns select, by name: librdkafka's subscription patterns are
    // POSIX regexes, which read some of kar's (Rust) patterns otherwise.
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| bad("cannot read the cluster's topics", e))?;
    let all: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
    let names = super::select_topics(&all, &base.topics, &base.exclude)?;
    if names.is_empty() {
        return Err(BackupError::Invalid(format!(
            "--group {}: no topic matches the selection ({}); nothing to back up",
            g.name,
            base.topics.join(", ")
        )));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|e| bad("cannot subscribe", e))?;
    Ok(consumer)
}

#[allow(clippy::too_many_arguments)]
fn members(
    rt: &Runtime,
    base: &BackupOptions,
    c: &ContinuousOptions,
    g: &GroupSettings,
    consumer: &BaseConsumer<GroupContext>,
    shared: &Shared,
    report: &mut ContinuousReport,
    on_member: &dyn Fn(&BackupReport),
) -> Result<(), BackupError> {
    loop {
        if c.stop.load(Ordering::SeqCst) || c.members.is_some_and(|n| report.members.len() >= n) {
            return Ok(());
        }
        let Some((assigned, roll)) = wait_for_partitions(shared, &c.stop) else {
            return Ok(());
        };
        let written = write_member(rt, base, c, g, consumer, &assigned, roll);
        let mut st = shared.lock();
        st.writing = None;
        st.closed += 1;
        shared.changed.notify_all();
        drop(st);
        report.add(written?, on_member);
        retain(c, report)?;
    }
}

/// Waits for partitions to hold; returns them with the roll flag of the member about to be
/// written over them (set under the lock, so a revocation from now on waits for it).
fn wait_for_partitions(
    shared: &Shared,
    stop: &AtomicBool,
) -> Option<(Partitions, Arc<AtomicBool>)> {
    let mut st = shared.lock();
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        if !st.assigned.is_empty() {
            let roll = Arc::new(AtomicBool::new(false));
            st.writing = Some(roll.clone());
            return Some((st.assigned.clone(), roll));
        }
        st = shared
            .changed
            .wait_timeout(st, Duration::from_millis(200))
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

/// One member over `assigned`, from the group's committed offsets (or this chain's own ends);
/// once it is in place, its partitions' ends are committed.
fn write_member(
    rt: &Runtime,
    base: &BackupOptions,
    c: &ContinuousOptions,
    g: &GroupSettings,
    consumer: &BaseConsumer<GroupContext>,
    assigned: &Partitions,
    roll: Arc<AtomicBool>,
) -> Result<BackupReport, BackupError> {
    let bad = |what: &str, e: rdkafka::error::KafkaError| {
        BackupError::Invalid(format!("--group {}: {what}: {e}", g.name))
    };
    let mut tpl = TopicPartitionList::new();
    for (t, p) in assigned {
        tpl.add_partition(t, *p);
    }
    let committed = committed(consumer, tpl)
        .map_err(|e| bad("cannot read the group's committed offsets", e))?;
    let partitions = committed
        .elements()
        .iter()
        .map(|e| {
            let at = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_string(), e.partition()), at)
        })
        .collect();
    let mut opts = base.clone();
    opts.assignment = Some(Assignment {
        group: g.name.clone(),
        partitions,
    });
    let parent = newest(&c.dir)?.map(|(p, _)| p);
    let r = member(rt, &opts, c, parent, roll)?;
    let mut ends = TopicPartitionList::new();
    for t in &r.topics {
        for p in t.partitions.iter().filter(|p| p.complete) {
            ends.add_partition_offset(&t.name, p.partition, Offset::Offset(p.end_offset))
                .map_err(|e| bad("cannot name an offset to commit", e))?;
        }
    }
    if ends.count() > 0 {
        commit(consumer, &ends, g);
    }
    Ok(r)
}

/// The group's committed offsets of `tpl`, tried again for a minute (a coordinator moving, a
/// rebalance under way).
fn committed(
    consumer: &BaseConsumer<GroupContext>,
    tpl: TopicPartitionList,
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(30)) {
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("reading the group's committed offsets: {e}; trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Commits a member's ends, tried again while the group is between generations (a commit then
/// is refused: REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION): the partitions are still this
/// process's until the member is said closed, which a revocation waits for. One that cannot be
/// committed is warned of: the next holder starts at the older commit, an overlap `kar chain
/// --set` names; nothing is lost.
fn commit(consumer: &BaseConsumer<GroupContext>, ends: &TopicPartitionList, g: &GroupSettings) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.commit(ends, CommitMode::Sync) {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(
                    "group {}: committing a member's ends: {e}; trying again",
                    g.name
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => {
                tracing::warn!(
                    "group {}: a member's ends were not committed ({e}): the next holder of its partitions starts at the group's older commit, an overlap `kar chain --set` names",
                    g.name
                );
                return;
            }
        }
    }
}
