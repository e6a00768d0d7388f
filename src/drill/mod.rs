//! `kar drill`: the restore drill as one command. The archive restored into scratch topics
//! (`<prefix><topic>`, refused if one exists) and the given registry; every restored record read
//! back by a fresh consumer; every schema ID it carries resolved through the target registry over
//! HTTP, as a consumer resolves it, and its key and value decoded with the schema the target
//! serves, compared with what the archive's own schema decodes; the topics diffed against the
//! archive record by record; then the scratch topics deleted (unless kept). The report is the
//! auditor's: records restored, read back, decoded, equal; IDs resolved; time; the archive's root
//! and signature status. OK only when all hold.

pub mod resolve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use regex::Regex;
use serde::Serialize;

use crate::archive::Archive;
use crate::archive::crypt::Unlock;
use crate::archive::signing::{SignatureReport, TrustOptions};
use crate::diff::same::Sameness;
use crate::diff::{DiffError, DiffOptions, DiffReport};
use crate::format::hex;
use crate::kafka::connection::KafkaConnection;
use crate::kafka::reader::OwnedRecord;
use crate::kafka::sink::Target;
use crate::registry::client::{RegistryClient, RegistrySettings};
use crate::registry::wire;
use crate::restore::{RestoreError, RestoreOptions, SchemaIds};
use crate::schema::{Catalog, IdSource};
use resolve::{Resolver, ServedTexts};

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub archive: PathBuf,
    pub unlock: Option<Arc<Unlock>>,
    pub kafka: KafkaConnection,
    pub registry: RegistrySettings,
    pub schema_ids: SchemaIds,
    /// Scratch topics are named `<prefix><topic>`.
    pub prefix: String,
    /// Archived topics to drill (anchored regexes); empty: all.
    pub topics: Vec<String>,
    pub keep_topics: bool,
    /// Delete (hard) the schema versions the drill registered, where the registry allows it.
    pub clean_schemas: bool,
    pub trust: Option<TrustOptions>,
    /// Failures and differences listed (all are counted).
    pub show: usize,
}

/// A record whose key or value did not read back as the archive holds it.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeFailure {
    /// The archived topic, and the scratch topic it was restored to.
    pub topic: String,
    pub target_topic: String,
    pub partition: i32,
    pub archive_offset: i64,
    pub target_offset: i64,
    pub field: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub archive: PathBuf,
    pub root: String,
    /// The signature check, where trusted keys were given.
    pub signatures: Option<SignatureReport>,
    pub scratch_topics: Vec<String>,
    pub records_in_archive: u64,
    pub records_restored: u64,
    pub records_read_back: u64,
    /// Records the same as the archive's, byte for byte but for rewritten schema IDs.
    pub records_equal: u64,
    /// Keys and values decoded with the schema the target serves, equal to the archive's datum.
    pub fields_decoded: u64,
    /// Keys and values carrying a schema ID that the archive itself cannot decode (nothing to
    /// compare), or in the GUID form.
    pub fields_not_checked: u64,
    pub decode_failures: u64,
    pub first_decode_failures: Vec<DecodeFailure>,
    pub schema_ids_resolved: u64,
    pub schema_ids_unresolved: u64,
    pub id_map: BTreeMap<u32, u32>,
    pub diff: DiffReport,
    pub restore_ok: bool,
    /// Schema versions the restore registered (`subject vN`), left on the target unless removed.
    pub schemas_registered: Vec<String>,
    pub schemas_removed: bool,
    pub topics_deleted: bool,
    pub problems: Vec<String>,
    pub seconds: f64,
    pub ok: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::source::SourceError),
    #[error(transparent)]
    Registry(#[from] crate::registry::client::RegistryError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error("{0}")]
    Refused(String),
}

/// The topics a drill restores: the archive's that the filters choose.
fn chosen_topics(a: &Archive, filters: &[String]) -> Result<Vec<String>, DrillError> {
    let res: Vec<Regex> = filters
        .iter()
        .map(|f| Regex::new(&format!("^(?:{f})$")))
        .collect::<Result<_, _>>()
        .map_err(|e| DrillError::Refused(format!("--topics: {e}")))?;
    Ok(a.manifest()
        .topics
        .iter()
        .map(|t| t.name.clone())
        .filter(|n| res.is_empty() || res.iter().any(|r| r.is_match(n)))
        .collect())
}

/// Runs the drill.
pub fn drill(opts: &DrillOptions, rt: &crate::runtime::Runtime) -> Result<DrillReport, DrillError> {
    let started = Instant::now();
    let archive = Archive::open_with(&opts.archive, opts.unlock.as_deref())?;
    let topics = chosen_topics(&archive, &opts.topics)?;
    if topics.is_empty() {
        return Err(DrillError::Refused(format!(
            "{} holds no topic the filters choose: nothing to drill",
            opts.archive.display()
        )));
    }
    let map: BTreeMap<String, String> = topics
        .iter()
        .map(|t| (t.clone(), format!("{}{t}", opts.prefix)))
        .collect();
    let target = Target::connect(&opts.kafka, rt.context())?;
    let existing = target.topics()?;
    if let Some(t) = map.values().find(|t| existing.contains_key(*t)) {
        return Err(DrillError::Refused(format!(
            "scratch topic {t} exists on the target: a drill restores into topics of its own (delete it, or give another --prefix)"
        )));
    }
    let state = scratch_dir()?;
    let restored = crate::restore::restore(rt, &restore_options(opts, &topics, &map, &state));
    let _ = std::fs::remove_dir_all(&state);
    let scratch: Vec<&str> = map.values().map(String::as_str).collect();
    let restored = match restored {
        Ok(r) => r,
        Err(e) => {
            // What a failed restore created is not left behind.
            if !opts.keep_topics {
                let _ = target.delete_topics(&scratch);
            }
            return Err(e.into());
        }
    };
    let mut report = match read_back(opts, rt, &archive, &map, &restored.id_map) {
        Ok(r) => r,
        Err(e) => {
            if !opts.keep_topics {
                let _ = target.delete_topics(&scratch);
            }
            return Err(e);
        }
    };
    report.signatures = opts
        .trust
        .as_ref()
        .map(|t| crate::archive::signing::check_archive(&archive, t));
    report.records_in_archive = archive
        .manifest()
        .topics
        .iter()
        .filter(|t| map.contains_key(&t.name))
        .flat_map(|t| &t.partitions)
        .map(|p| p.records)
        .sum();
    report.records_restored = restored.records_written;
    report.restore_ok = restored.ok;
    report.schemas_registered = registered(&restored)
        .map(|(subject, version)| format!("{subject} v{version}"))
        .collect();
    report.scratch_topics = map.values().cloned().collect();
    clean_up(opts, rt, &target, &scratch, &restored, &mut report);
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = verdict(&report);
    Ok(report)
}

/// Every count holds: all restored, all read back, all equal, every ID resolved, no failure.
fn verdict(r: &DrillReport) -> bool {
    r.restore_ok
        && r.diff.ok
        && r.records_restored == r.records_in_archive
        && r.records_read_back == r.records_in_archive
        && r.records_equal == r.records_in_archive
        && r.decode_failures == 0
        && r.schema_ids_unresolved == 0
        && r.problems.is_empty()
        && r.signatures.as_ref().is_none_or(|s| s.ok)
}

fn scratch_dir() -> Result<PathBuf, DrillError> {
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| DrillError::Refused(format!("no randomness: {e}")))?;
    let dir = std::env::temp_dir().join(format!("kar-drill-{}", hex_bytes(&rnd)));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DrillError::Refused(format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn restore_options(
    opts: &DrillOptions,
    topics: &[String],
    map: &BTreeMap<String, String>,
    state: &std::path::Path,
) -> RestoreOptions {
    let mut r = RestoreOptions::new(&opts.archive, opts.kafka.clone());
    r.registry = Some(opts.registry.clone());
    r.schema_ids = opts.schema_ids;
    r.topics = topics.iter().map(|t| regex::escape(t)).collect();
    r.map = map.clone();
    // The drill proves records and schemas; the target's consumer groups are not touched.
    r.groups = Some(r"\A\z.".into());
    r.state_dir = Some(state.to_path_buf());
    // The registry may be one in use: the drill adds the versions it needs and changes no
    // subject's configuration or mode, deletes nothing.
    r.schema_versions_only = true;
    r.unlock = opts.unlock.clone();
    r.trust = opts.trust.clone();
    r
}

/// Where a key's or value's schema ID is: the last schema-ID header for it, else its prefix.
fn id_source<'r>(r: &'r OwnedRecord, header: &str) -> IdSource<'r> {
    let headers = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()));
    crate::schema::id_source(headers, header)
}

/// What the read-back found, counted.
#[derive(Default)]
struct Decoding {
    decoded: u64,
    not_checked: u64,
    failures: u64,
    first: Vec<DecodeFailure>,
}

/// Reads the scratch topics back and diffs them with the archive, decoding every field that
/// carries a schema ID with the schema the target serves for it.
fn read_back(
    opts: &DrillOptions,
    rt: &crate::runtime::Runtime,
    archive: &Archive,
    map: &BTreeMap<String, String>,
    id_map: &BTreeMap<u32, u32>,
) -> Result<DrillReport, DrillError> {
    let snapshot = crate::registry::snapshot::read_from_archive(archive)?;
    let (ids_of_archive, mut archived) = (
        Catalog::of(snapshot.as_ref(), archive),
        Catalog::of(snapshot.as_ref(), archive),
    );
    let served = ServedTexts::default();
    let mut on_target = Catalog::empty(&served);
    let client = RegistryClient::new(&opts.registry)?;
    let mut resolver = Resolver::new(client, rt.context(), &served);
    // The bytes are held against what the restore says it wrote (its ID map); whether the
    // target serves the right schema for each ID is the decoding's to find, as a consumer would.
    let mut same = Sameness::new(&ids_of_archive, None);
    same.known = id_map.clone();
    let mut dopts = DiffOptions::new(opts.archive.clone(), opts.kafka.clone());
    dopts.map = map.clone();
    let names: Vec<String> = map.keys().map(|t| regex::escape(t)).collect();
    dopts.topics = Some(Regex::new(&format!("^(?:{})$", names.join("|"))).expect("escaped names"));
    dopts.show = opts.show;
    let mut d = Decoding::default();
    let diff = crate::diff::diff_with(
        archive,
        &dopts,
        rt,
        &mut |a, t| same.differences(a, t),
        &mut |topic, partition, a, t| {
            check_decoding(
                (&mut archived, &mut on_target, &mut resolver),
                (topic, &map[topic], partition),
                (a, t),
                opts.show,
                &mut d,
            )
        },
    )?;
    let (resolved, unresolved) = resolver.counts();
    let c = diff.totals;
    Ok(DrillReport {
        archive: opts.archive.clone(),
        root: hex(&archive.root()),
        signatures: None,
        scratch_topics: Vec::new(),
        records_in_archive: 0,
        records_restored: 0,
        records_read_back: c.equal + c.different + c.extra,
        records_equal: c.equal,
        fields_decoded: d.decoded,
        fields_not_checked: d.not_checked,
        decode_failures: d.failures,
        first_decode_failures: d.first,
        schema_ids_resolved: resolved,
        schema_ids_unresolved: unresolved,
        id_map: same.id_map.clone(),
        diff,
        restore_ok: false,
        schemas_registered: Vec::new(),
        schemas_removed: false,
        topics_deleted: false,
        problems: Vec::new(),
        seconds: 0.0,
        ok: false,
    })
}

/// Decodes the key and value of a restored record as a consumer on the target would, and holds
/// the datum against the archive's.
fn check_decoding(
    (archived, on_target, resolver): (&mut Catalog<'_>, &mut Catalog<'_>, &mut Resolver<'_>),
    (topic, target_topic, partition): (&str, &str, i32),
    (a, t): (&OwnedRecord, &OwnedRecord),
    show: usize,
    d: &mut Decoding,
) {
    let fields = [
        ("key", wire::KEY_SCHEMA_ID_HEADER, &a.key, &t.key),
        ("value", wire::VALUE_SCHEMA_ID_HEADER, &a.value, &t.value),
    ];
    for (field, header, av, tv) in fields {
        let (Some(av), Some(tv)) = (av.as_deref(), tv.as_deref()) else {
            continue;
        };
        let subject = format!("{topic}-{field}");
        let (a_src, t_src) = (id_source(a, header), id_source(t, header));
        let expected = match archived.decode(av, a_src, &subject) {
            Ok(x) => x,
            Err(crate::schema::NotDecoded::NotWire) => continue,
            Err(_) => {
                d.not_checked += 1;
                continue;
            }
        };
        let target_id = match t_src {
            IdSource::Prefix => wire::schema_id(tv),
            IdSource::Header(h) => wire::schema_id(h),
        };
        let Some(target_id) = target_id else {
            d.not_checked += 1;
            continue;
        };
        let outcome = resolver
            .resolve(on_target, target_id)
            .and_then(|()| on_target.decode(tv, t_src, &subject).map_err(|e| e.to_string()))
            .and_then(|got| {
                (got.json == expected.json).then_some(()).ok_or_else(|| {
                    format!(
                        "decoded with the target's schema ID {target_id} ({} v{}) it reads {}, the archive's schema ID {} reads {}",
                        got.schema.subject, got.schema.version, got.json, expected.schema.id, expected.json
                    )
                })
            });
        match outcome {
            Ok(()) => d.decoded += 1,
            Err(detail) => {
                d.failures += 1;
                if d.first.len() < show {
                    d.first.push(DecodeFailure {
                        topic: topic.to_string(),
                        target_topic: target_topic.to_string(),
                        partition,
                        archive_offset: a.offset,
                        target_offset: t.offset,
                        field,
                        detail,
                    });
                }
            }
        }
    }
}

/// The schema versions the restore registered: (subject, the version the target gave it).
fn registered(r: &crate::restore::RestoreReport) -> impl Iterator<Item = (&str, i32)> {
    r.schemas
        .iter()
        .filter(|s| s.action == crate::restore::schemas::VersionAction::Register)
        .filter_map(|s| Some((s.subject.as_str(), s.target_version?)))
}

/// Deletes the scratch topics (unless kept) and, if asked, the schema versions registered.
fn clean_up(
    opts: &DrillOptions,
    rt: &crate::runtime::Runtime,
    target: &Target,
    scratch: &[&str],
    restored: &crate::restore::RestoreReport,
    report: &mut DrillReport,
) {
    if !opts.keep_topics {
        match target.delete_topics(scratch) {
            Ok(()) => report.topics_deleted = true,
            Err(e) => report
                .problems
                .push(format!("deleting the scratch topics: {e}")),
        }
    }
    if !opts.clean_schemas {
        return;
    }
    let client = match RegistryClient::new(&opts.registry) {
        Ok(c) => c,
        Err(e) => return report.problems.push(e.to_string()),
    };
    let mut all = true;
    for (subject, version) in registered(restored) {
        let path = format!(
            "/subjects/{}/versions/{version}",
            crate::registry::client::path_segment(subject),
        );
        // A hard delete needs the soft one first (Confluent's rule).
        for p in [path.clone(), format!("{path}?permanent=true")] {
            let r: Result<serde_json::Value, _> =
                rt.context()
                    .block_on(client.request(reqwest::Method::DELETE, &p, None));
            if let Err(e) = r {
                all = false;
                report
                    .problems
                    .push(format!("removing {subject} v{version}: {e}"));
                break;
            }
        }
    }
    report.schemas_removed = all;
}
