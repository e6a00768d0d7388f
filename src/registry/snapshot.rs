//! Capturing a registry's complete state through its REST API: every subject and version
//! (soft-deleted ones flagged), each version's global ID, type, schema text byte for byte,
//! references, metadata and rule set; the global and per-subject compatibility and modes; and a
//! restore order. Schema texts are returned apart, keyed by content ID, to be stored once each as
//! blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::client::{RegistryClient, RegistryError, path_segment as enc};
use super::graph::{Node, SubjectVersion, restore_order};
pub use crate::format::schema_registry::{
    ConfigState, GlobalState, KIND, Reference, RegistrySnapshot, SubjectState, VersionState,
    qualify,
};
use crate::format::{Hash, hex};

/// `GET /config` and `GET /config/{subject}` as Confluent serves them (`compatibilityLevel`;
/// some registries answer `compatibility`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReply {
    compatibility_level: Option<String>,
    compatibility: Option<String>,
    compatibility_group: Option<String>,
    alias: Option<String>,
    normalize: Option<bool>,
    validate_fields: Option<bool>,
    validate_rules: Option<bool>,
    default_metadata: Option<Value>,
    override_metadata: Option<Value>,
    default_rule_set: Option<Value>,
    override_rule_set: Option<Value>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

impl From<ConfigReply> for ConfigState {
    fn from(r: ConfigReply) -> Self {
        ConfigState {
            compatibility: r.compatibility_level.or(r.compatibility),
            compatibility_group: r.compatibility_group,
            alias: r.alias,
            normalize: r.normalize,
            validate_fields: r.validate_fields,
            validate_rules: r.validate_rules,
            default_metadata: r.default_metadata,
            override_metadata: r.override_metadata,
            default_rule_set: r.default_rule_set,
            override_rule_set: r.override_rule_set,
            // A null member says nothing.
            other: r.other.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        }
    }
}

impl ConfigState {
    /// The body of `PUT /config[/{subject}]` that sets exactly this configuration.
    pub fn request(&self) -> Value {
        let mut b = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                b.insert(k.to_string(), v);
            }
        };
        put(
            "compatibility",
            self.compatibility.clone().map(Value::String),
        );
        put(
            "compatibilityGroup",
            self.compatibility_group.clone().map(Value::String),
        );
        put("alias", self.alias.clone().map(Value::String));
        put("normalize", self.normalize.map(Value::Bool));
        put("validateFields", self.validate_fields.map(Value::Bool));
        put("validateRules", self.validate_rules.map(Value::Bool));
        put("defaultMetadata", self.default_metadata.clone());
        put("overrideMetadata", self.override_metadata.clone());
        put("defaultRuleSet", self.default_rule_set.clone());
        put("overrideRuleSet", self.override_rule_set.clone());
        for (k, v) in &self.other {
            b.insert(k.clone(), v.clone());
        }
        Value::Object(b)
    }

    /// What differs from another configuration, member by member, for a plan.
    pub fn differences(&self, other: &ConfigState) -> Vec<String> {
        let (a, b) = (self.request(), other.request());
        let (a, b) = (a.as_object(), b.as_object());
        let keys: BTreeSet<&String> = a.iter().chain(b.iter()).flat_map(|m| m.keys()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let x = a.and_then(|m| m.get(k));
                let y = b.and_then(|m| m.get(k));
                (x != y).then(|| {
                    let show = |v: Option<&Value>| v.map_or("unset".to_string(), |v| v.to_string());
                    format!("{k} {} (archive) vs {} (target)", show(x), show(y))
                })
            })
            .collect()
    }
}

/// A snapshot and the schema texts it names.
#[derive(Debug, Clone)]
pub struct Captured {
    pub snapshot: RegistrySnapshot,
    pub texts: BTreeMap<Hash, String>,
    pub requests: u64,
    /// `--subjects` patterns that matched no subject of the registry.
    pub unmatched: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SubjectFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl SubjectFilter {
    /// The include and exclude patterns, anchored. A pattern that does not compile is an error
    /// naming it and its flag (dropped, an include pattern would widen the selection to every
    /// subject).
    pub fn compile(&self) -> Result<(Vec<Regex>, Vec<Regex>), RegistryError> {
        let compile = |patterns: &[String], flag: &str| -> Result<Vec<Regex>, RegistryError> {
            patterns
                .iter()
                .map(|p| {
                    Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| RegistryError::Config(format!("{flag} pattern {p:?}: {e}")))
                })
                .collect()
        };
        Ok((
            compile(&self.include, "--subjects")?,
            compile(&self.exclude, "--exclude-subjects")?,
        ))
    }
}

/// One entry of `GET /schemas` or `GET /subjects/{s}/versions/{v}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaEntry {
    subject: String,
    version: i32,
    id: u32,
    #[serde(default)]
    schema_type: Option<String>,
    schema: String,
    #[serde(default)]
    references: Vec<Reference>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    rule_set: Option<Value>,
    /// Content-derived (Confluent 8); absent where the registry has none.
    #[serde(default)]
    guid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ModeReply {
    mode: Option<String>,
}

/// Entries asked for a page of `GET /schemas`: Confluent serves at most
/// `schema.search.max.limit` (1,000 by default) and its default page for a larger ask.
const PAGE: usize = 1000;

/// Entries each page reads again from the page before. A page must hold the last entry of the
/// one before, which proves that nothing between them was skipped: offset paging over a registry
/// in use shifts entries when one is registered or deleted ahead of the offset. The margin covers
/// that many deletions ahead, and a registry whose order is not stable among entries of one
/// sort key (AxonOps sorts its listing by schema ID alone, and one ID is often under several
/// subjects) as long as no more than this many entries share a key.
const OVERLAP: usize = 32;

/// What paging through a bulk listing gave.
enum Paged {
    /// Every entry, each page shown to continue the one before.
    Whole(Vec<SchemaEntry>),
    /// The registry has no bulk listing.
    Absent,
    /// A page did not continue the one before: why.
    Broken(String),
}

/// Pages through `GET /schemas`, each page overlapping the one before (`OVERLAP`).
async fn bulk(
    client: &RegistryClient,
    deleted: bool,
    requests: &mut u64,
) -> Result<Paged, RegistryError> {
    let mut out = Vec::new();
    let mut seen: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut last: Option<(String, i32)> = None;
    let mut first = 0;
    let mut end: usize = 0;
    loop {
        let at = end.saturating_sub(OVERLAP);
        let path = format!("/schemas?deleted={deleted}&offset={at}&limit={PAGE}");
        *requests += 1;
        let Some(page) = client.get_list_opt::<SchemaEntry>(&path).await? else {
            return Ok(match last {
                None => Paged::Absent,
                Some(_) => Paged::Broken(format!("{path} answered 404 after earlier pages")),
            });
        };
        let n = page.len();
        let after = match &last {
            None => {
                first = n;
                0
            }
            Some((s, v)) => match page.iter().position(|e| e.subject == *s && e.version == *v) {
                Some(i) => i + 1,
                None => {
                    return Ok(Paged::Broken(format!(
                        "the page at offset {at} does not hold {s} v{v}, the last entry of the \
                         page before"
                    )));
                }
            },
        };
        if n == after {
            // Nothing after the last entry seen: the end, unless this page is as long as the first
            // and the first was not short (a registry that ignores offset serves its first page
            // again, and the rest would be lost).
            if last.is_none() || n < first || first < PAGE {
                return Ok(Paged::Whole(out));
            }
            return Ok(Paged::Broken(format!(
                "the page at offset {at} ends with the last entry of the page before: the \
                 registry seems to ignore offset"
            )));
        }
        last = page.last().map(|e| (e.subject.clone(), e.version));
        end = at + n;
        let mut new = 0;
        // Entries before the last one seen are kept too: registered since, or read already.
        for e in page {
            if seen.insert((e.subject.clone(), e.version)) {
                new += 1;
                out.push(e);
            }
        }
        if new == 0 {
            return Ok(Paged::Broken(format!(
                "the page at offset {at} holds no entry not seen before: the listing's order is \
                 not stable"
            )));
        }
    }
}

/// Whether a registry's bulk listing carries every member a version has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Members {
    /// Confluent's does: a listing entry is the same `Schema` entity a version read alone is.
    Listed,
    /// AxonOps' (0.2 to 0.4) leaves out `metadata` and `ruleSet`: every version is read alone.
    ReadAlone,
}

/// `GET /v1/metadata/version` as Confluent serves it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerVersion {
    #[serde(default)]
    commit_id: Option<String>,
}

/// Confluent's Schema Registry (which answers `GET /v1/metadata/version` with its `commitId`)
/// lists every member; any other registry has each version read alone, since a listing that
/// leaves members out cannot be told from versions that have none. A sample of latest versions
/// read alone still checks the first (`complete_members`).
async fn listing_members(client: &RegistryClient, requests: &mut u64) -> Members {
    *requests += 1;
    match client.get::<ServerVersion>("/v1/metadata/version").await {
        Ok(ServerVersion { commit_id: Some(_) }) => Members::Listed,
        Ok(_) => Members::ReadAlone,
        // Absent, guarded or failing: the endpoint serves nothing else, and reading each
        // version alone loses nothing.
        Err(e) => {
            tracing::debug!(
                "the registry's server version is not known ({e}): each version read alone"
            );
            Members::ReadAlone
        }
    }
}

/// `f` for every item, concurrently (the client bounds concurrency and rate); the results in
/// the order they came.
async fn each<I, T, Fut>(
    items: impl IntoIterator<Item = I>,
    f: impl Fn(I) -> Fut,
) -> Result<Vec<T>, RegistryError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, RegistryError>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for i in items {
        tasks.spawn(f(i));
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.map_err(|e| {
            RegistryError::Config(format!("a registry request task failed: {e}"))
        })??);
    }
    Ok(out)
}

/// Each version alone (`GET /subjects/{s}/versions/{v}?deleted=true`), by what was asked.
async fn fetch_versions(
    client: &Arc<RegistryClient>,
    which: Vec<(String, i32)>,
) -> Result<Vec<((String, i32), SchemaEntry)>, RegistryError> {
    each(which, |(s, v)| {
        let c = client.clone();
        async move {
            let e = c
                .get::<SchemaEntry>(&format!("/subjects/{}/versions/{v}?deleted=true", enc(&s)))
                .await?;
            Ok(((s, v), e))
        }
    })
    .await
}

/// Each subject's version numbers, all (soft-deleted too) and live.
async fn version_lists(
    client: &Arc<RegistryClient>,
    subjects: &BTreeSet<String>,
) -> Result<Vec<(String, Vec<i32>, Vec<i32>)>, RegistryError> {
    each(subjects.iter().cloned(), |s| {
        let c = client.clone();
        async move {
            let all: Vec<i32> = c
                .get_list_opt(&format!("/subjects/{}/versions?deleted=true", enc(&s)))
                .await?
                .unwrap_or_default();
            let live: Vec<i32> = c
                .get_list_opt(&format!("/subjects/{}/versions", enc(&s)))
                .await?
                .unwrap_or_default();
            Ok((s, all, live))
        }
    })
    .await
}

/// Latest versions read alone to check a listing taken to carry every member.
const SAMPLE: usize = 8;

/// Makes the listed versions of `subjects` whole where the listing leaves members out (AxonOps'
/// `GET /schemas` serves no `metadata` or `ruleSet`): every version read alone, or, from a
/// registry whose listing carries them (`Members::Listed`), a sample of latest versions read
/// alone and compared, and every version only where the sample finds a member missing. Returns
/// the requests made.
async fn complete_members(
    client: &Arc<RegistryClient>,
    members: Members,
    subjects: &BTreeSet<String>,
    entries: &mut BTreeMap<(String, i32), SchemaEntry>,
) -> Result<u64, RegistryError> {
    let mut latest: BTreeMap<&String, i32> = BTreeMap::new();
    for (s, v) in entries.keys().filter(|(s, _)| subjects.contains(s)) {
        let l = latest.entry(s).or_insert(*v);
        *l = (*l).max(*v);
    }
    let sample: BTreeSet<(String, i32)> = match members {
        Members::ReadAlone => BTreeSet::new(),
        Members::Listed => latest
            .into_iter()
            .take(SAMPLE)
            .map(|(s, v)| (s.clone(), v))
            .collect(),
    };
    let mut requests = sample.len() as u64;
    let mut lacking = members == Members::ReadAlone;
    for (key, e) in fetch_versions(client, sample.iter().cloned().collect()).await? {
        if let Some(b) = entries.get(&key) {
            lacking |= (!e.references.is_empty() && b.references.is_empty())
                || (e.metadata.is_some() && b.metadata.is_none())
                || (e.rule_set.is_some() && b.rule_set.is_none())
                || (e.guid.is_some() && b.guid.is_none());
        }
        entries.insert(key, e);
    }
    if !lacking {
        return Ok(requests);
    }
    if members == Members::Listed {
        tracing::warn!(
            "the registry's bulk listing leaves out members its versions have: reading each \
             version alone"
        );
    }
    let rest: Vec<(String, i32)> = entries
        .keys()
        .filter(|k| subjects.contains(&k.0) && !sample.contains(k))
        .cloned()
        .collect();
    requests += rest.len() as u64;
    entries.extend(fetch_versions(client, rest).await?);
    Ok(requests)
}

/// The registry's whole state: the default context, then every other context `GET /contexts`
/// names, each through its base path. `--subjects` patterns match qualified names
/// (`:.ctx:subject`) in other contexts.
pub async fn capture(
    client: Arc<RegistryClient>,
    filter: &SubjectFilter,
    captured_at_ms: i64,
) -> Result<Captured, RegistryError> {
    let mut requests = 0;
    let members = listing_members(&client, &mut requests).await;
    let mut top = capture_one(client.clone(), members, filter, captured_at_ms, None).await?;
    top.requests += requests;
    top.snapshot.dek_registry = super::dek::capture(&client, &mut top.requests).await?;
    top.requests += 1;
    let contexts: Vec<String> = client.get_list_opt("/contexts").await?.unwrap_or_default();
    for ctx in contexts.iter().filter(|c| c.as_str() != ".") {
        let c = Arc::new(client.in_context(ctx));
        let got = capture_one(c, members, filter, captured_at_ms, Some(ctx)).await?;
        top.requests += got.requests;
        top.texts.extend(got.texts);
        top.unmatched.retain(|p| got.unmatched.contains(p));
        if !got.snapshot.subjects.is_empty() {
            top.snapshot.contexts.push(got.snapshot);
        }
    }
    Ok(top)
}

async fn capture_one(
    client: Arc<RegistryClient>,
    members: Members,
    filter: &SubjectFilter,
    captured_at_ms: i64,
    context: Option<&str>,
) -> Result<Captured, RegistryError> {
    let mut requests = 0u64;
    let global = global_state(&client, &mut requests).await?;
    let mut listed = listings(&client, &mut requests).await?;
    let chosen = choose(&client, filter, context, &mut listed, &mut requests).await?;
    let Listed {
        all_subjects,
        live_subjects,
        mut entries,
        live_versions,
        bulk_listed,
    } = listed;
    entries.retain(|(s, _), _| chosen.selected.contains(s));
    if !bulk_listed.is_empty() {
        let listed: BTreeSet<String> = chosen
            .selected
            .intersection(&bulk_listed)
            .cloned()
            .collect();
        requests += complete_members(&client, members, &listed, &mut entries).await?;
    }
    let overridden: Vec<String> = chosen
        .selected
        .iter()
        .filter(|s| all_subjects.contains(s))
        .cloned()
        .collect();
    requests += 2 * overridden.len() as u64;
    let mut overrides = subject_overrides(&client, overridden).await?;

    let mut subjects: BTreeMap<String, SubjectState> = BTreeMap::new();
    for s in &chosen.selected {
        let (config, mode) = overrides.remove(s).unwrap_or_default();
        subjects.insert(
            s.clone(),
            SubjectState {
                subject: s.clone(),
                deleted: !live_subjects.contains(s) && !chosen.config_only.contains(s),
                compatibility: config.as_ref().and_then(|c| c.compatibility.clone()),
                mode,
                versions: Vec::new(),
                config,
            },
        );
    }
    let texts = add_versions(&mut subjects, entries, &live_versions);
    let subjects: Vec<SubjectState> = subjects.into_values().collect();
    let order = restore_order(&nodes(&subjects));
    Ok(Captured {
        unmatched: chosen.unmatched,
        snapshot: RegistrySnapshot {
            kind: KIND.into(),
            source: client.base_url().to_string(),
            captured_at_ms,
            global,
            subjects,
            restore_order: order.order,
            order_complete: order.complete,
            order_problems: order.problems,
            pulled_in: chosen.pulled_in.into_iter().collect(),
            context: context.map(str::to_string),
            contexts: Vec::new(),
            dek_registry: None,
        },
        texts,
        requests,
    })
}

/// The global (or the context's) configuration and mode.
async fn global_state(
    client: &RegistryClient,
    requests: &mut u64,
) -> Result<GlobalState, RegistryError> {
    *requests += 2;
    let config: Option<ConfigReply> = client.get_opt("/config").await?;
    let mode: Option<ModeReply> = client.get_opt("/mode").await?;
    let config: Option<ConfigState> = config.map(ConfigState::from);
    Ok(GlobalState {
        compatibility: config.as_ref().and_then(|c| c.compatibility.clone()),
        mode: mode.and_then(|m| m.mode),
        config,
    })
}

/// What the registry lists: its subjects, and every version of every subject.
struct Listed {
    /// Soft-deleted ones too.
    all_subjects: Vec<String>,
    live_subjects: BTreeSet<String>,
    entries: BTreeMap<(String, i32), SchemaEntry>,
    live_versions: BTreeSet<(String, i32)>,
    /// The subjects the bulk listing covered (the others were read subject by subject).
    bulk_listed: BTreeSet<String>,
}

/// Times a pair of bulk listings is read again when a page did not continue the one before,
/// before the capture reads subject by subject instead.
const LISTING_ATTEMPTS: u32 = 3;

/// Both bulk listings, with soft-deleted versions and without: `None` when the registry has
/// none, or when they could not be read whole (`LISTING_ATTEMPTS`).
async fn bulk_pair(
    client: &RegistryClient,
    requests: &mut u64,
) -> Result<Option<(Vec<SchemaEntry>, Vec<SchemaEntry>)>, RegistryError> {
    for attempt in 1..=LISTING_ATTEMPTS {
        let why = match bulk(client, true, requests).await? {
            Paged::Absent => return Ok(None),
            Paged::Broken(why) => why,
            Paged::Whole(all) => match bulk(client, false, requests).await? {
                Paged::Absent => return Ok(None),
                Paged::Broken(why) => why,
                Paged::Whole(live) => return Ok(Some((all, live))),
            },
        };
        tracing::warn!(
            attempt,
            "the registry's bulk listing moved while paged: {why}"
        );
    }
    tracing::warn!("reading the registry subject by subject instead of its bulk listing");
    Ok(None)
}

/// The subjects, and their versions: the bulk listings, with subject by subject reads for what
/// they do not cover (all of it from a registry without one).
async fn listings(
    client: &Arc<RegistryClient>,
    requests: &mut u64,
) -> Result<Listed, RegistryError> {
    *requests += 2;
    // A registry that lists other contexts' subjects here too, qualified (`:.ctx:subject`), has
    // them captured through their context's base path instead.
    let mut all_subjects: Vec<String> = client
        .get_list::<String>("/subjects?deleted=true")
        .await?
        .into_iter()
        .filter(|s| !s.starts_with(":."))
        .collect();
    let mut live_subjects: BTreeSet<String> = client
        .get_list::<String>("/subjects")
        .await?
        .into_iter()
        .collect();
    let mut entries: BTreeMap<(String, i32), SchemaEntry> = BTreeMap::new();
    let mut live_versions: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut bulk_listed: BTreeSet<String> = BTreeSet::new();
    let mut per_subject: BTreeSet<String> = all_subjects.iter().cloned().collect();
    if let Some((all, live)) = bulk_pair(client, requests).await? {
        for e in live {
            live_versions.insert((e.subject.clone(), e.version));
            live_subjects.insert(e.subject.clone());
            // Registered between the two listings.
            entries.entry((e.subject.clone(), e.version)).or_insert(e);
        }
        for e in all {
            entries.insert((e.subject.clone(), e.version), e);
        }
        entries.retain(|(s, _), _| !s.starts_with(":."));
        bulk_listed = entries.keys().map(|(s, _)| s.clone()).collect();
        // Registered since the subject listing.
        let known: BTreeSet<String> = all_subjects.iter().cloned().collect();
        all_subjects.extend(bulk_listed.difference(&known).cloned());
        // A subject the listings should hold and do not (or whose live versions they lack) is
        // read subject by subject: a registry whose order is not stable can skip entries no
        // overlap shows.
        let live_listed: BTreeSet<&String> = live_versions.iter().map(|(s, _)| s).collect();
        per_subject = all_subjects
            .iter()
            .filter(|s| {
                !bulk_listed.contains(*s)
                    || (live_subjects.contains(*s) && !live_listed.contains(s))
            })
            .cloned()
            .collect();
        if !per_subject.is_empty() {
            tracing::warn!(
                subjects = per_subject.len(),
                "subjects the bulk listing lacks: read subject by subject"
            );
        }
    }
    entries.retain(|(s, _), _| !per_subject.contains(s));
    live_versions.retain(|(s, _)| !per_subject.contains(s));
    bulk_listed.retain(|s| !per_subject.contains(s));
    *requests += 2 * per_subject.len() as u64;
    let mut wanted = Vec::new();
    for (s, all, live) in version_lists(client, &per_subject).await? {
        live_versions.extend(live.into_iter().map(|v| (s.clone(), v)));
        wanted.extend(all.into_iter().map(|v| (s.clone(), v)));
    }
    *requests += wanted.len() as u64;
    entries.extend(fetch_versions(client, wanted).await?);
    Ok(Listed {
        all_subjects,
        live_subjects,
        entries,
        live_versions,
        bulk_listed,
    })
}

/// What `--subjects` takes.
struct Chosen {
    /// Matched, or referenced by what is, transitively.
    selected: BTreeSet<String>,
    /// Subjects with a configuration or mode and no version, named literally.
    config_only: Vec<String>,
    /// Include patterns that matched nothing.
    unmatched: Vec<String>,
    /// Taken only because a selected subject references them.
    pulled_in: BTreeSet<String>,
}

/// The selection, and what it references, transitively. Config-only subjects named literally
/// join `listed.all_subjects`.
async fn choose(
    client: &RegistryClient,
    filter: &SubjectFilter,
    context: Option<&str>,
    listed: &mut Listed,
    requests: &mut u64,
) -> Result<Chosen, RegistryError> {
    let (inc, exc) = filter.compile()?;
    let chosen = |s: &str| {
        let s = &qualify(context, s);
        (inc.is_empty() || inc.iter().any(|r| r.is_match(s))) && !exc.iter().any(|r| r.is_match(s))
    };
    let all_subjects = &mut listed.all_subjects;
    let mut selected: BTreeSet<String> =
        all_subjects.iter().filter(|s| chosen(s)).cloned().collect();
    // A subject with a configuration or mode and no version (an alias: `{"alias": "orders"}`)
    // is in no listing a registry serves: it is taken when named literally.
    let mut config_only = Vec::new();
    for p in filter.include.iter().filter(|_| context.is_none()) {
        if regex::escape(p) == *p && !all_subjects.contains(p) && chosen(p) {
            *requests += 2;
            let cfg: Option<ConfigReply> = client
                .get_opt(&format!("/config/{}?defaultToGlobal=false", enc(p)))
                .await?;
            let mode: Option<ModeReply> = client
                .get_opt(&format!("/mode/{}?defaultToGlobal=false", enc(p)))
                .await?;
            if cfg.is_some() || mode.is_some() {
                config_only.push(p.clone());
            }
        }
    }
    all_subjects.extend(config_only.iter().cloned());
    selected.extend(config_only.iter().cloned());
    let unmatched: Vec<String> = filter
        .include
        .iter()
        .zip(&inc)
        .filter(|(_, r)| {
            !all_subjects
                .iter()
                .any(|s| r.is_match(&qualify(context, s)))
        })
        .map(|(p, _)| p.clone())
        .collect();
    let mut pulled_in: BTreeSet<String> = BTreeSet::new();
    loop {
        let refs: BTreeSet<String> = listed
            .entries
            .values()
            .filter(|e| selected.contains(&e.subject))
            .flat_map(|e| e.references.iter().map(|r| r.subject.clone()))
            .filter(|s| !selected.contains(s))
            .collect();
        if refs.is_empty() {
            break;
        }
        pulled_in.extend(refs.iter().cloned());
        selected.extend(refs);
    }
    Ok(Chosen {
        selected,
        config_only,
        unmatched,
        pulled_in,
    })
}

/// Each subject's own configuration and mode, concurrently (the client bounds concurrency and
/// rate).
async fn subject_overrides(
    client: &Arc<RegistryClient>,
    subjects: Vec<String>,
) -> Result<BTreeMap<String, (Option<ConfigState>, Option<String>)>, RegistryError> {
    let got = each(subjects, |s| {
        let c = client.clone();
        async move {
            let cfg: Option<ConfigReply> = c
                .get_opt(&format!("/config/{}?defaultToGlobal=false", enc(&s)))
                .await?;
            let mode: Option<ModeReply> = c
                .get_opt(&format!("/mode/{}?defaultToGlobal=false", enc(&s)))
                .await?;
            Ok((s, (cfg.map(ConfigState::from), mode.and_then(|m| m.mode))))
        }
    })
    .await?;
    Ok(got.into_iter().collect())
}

/// Puts each listed version into its subject; returns the schema texts by content ID.
fn add_versions(
    subjects: &mut BTreeMap<String, SubjectState>,
    entries: BTreeMap<(String, i32), SchemaEntry>,
    live_versions: &BTreeSet<(String, i32)>,
) -> BTreeMap<[u8; 32], String> {
    let mut texts = BTreeMap::new();
    for ((s, v), e) in entries {
        let Some(st) = subjects.get_mut(&s) else {
            continue;
        };
        let id = *blake3::hash(e.schema.as_bytes()).as_bytes();
        texts.insert(id, e.schema);
        st.versions.push(VersionState {
            version: v,
            id: e.id,
            schema_type: e.schema_type.unwrap_or_else(|| "AVRO".into()),
            schema: hex(&id),
            references: e.references,
            deleted: !live_versions.contains(&(s.clone(), v)),
            metadata: e.metadata,
            rule_set: e.rule_set,
            guid: e.guid,
        });
    }
    texts
}

/// The reference graph of every captured version, for the restore order.
fn nodes(subjects: &[SubjectState]) -> Vec<Node> {
    subjects
        .iter()
        .flat_map(|s| {
            s.versions.iter().map(move |v| Node {
                at: SubjectVersion {
                    subject: s.subject.clone(),
                    version: v.version,
                },
                id: v.id,
                references: v
                    .references
                    .iter()
                    .map(|r| SubjectVersion {
                        subject: r.subject.clone(),
                        version: r.version,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Writes a captured snapshot into an archive: each schema text once as a blob, the schemas
/// index (ID → blob), and the `schema-registry` metadata document.
pub fn write_to_archive<W: std::io::Write>(
    c: &Captured,
    w: &mut crate::archive::ArchiveWriter<W>,
) -> Result<(), crate::archive::ArchiveError> {
    // The texts were captured under their plain BLAKE3 IDs; an encrypted archive stores them
    // under keyed ones (§15), which the document then names.
    let mut ids = BTreeMap::new();
    for (plain, text) in &c.texts {
        ids.insert(*plain, w.add_blob(text.as_bytes())?);
    }
    let mut snapshot = c.snapshot.clone();
    name_blobs(&mut snapshot, &ids);
    for s in &snapshot.subjects {
        for v in &s.versions {
            if let Some(id) = crate::format::parse_hex(&v.schema) {
                w.index_schema(v.id, id);
            }
        }
    }
    let doc = serde_json::to_vec(&snapshot).expect("a snapshot serializes");
    w.add_metadata(KIND, &doc)?;
    Ok(())
}

/// Points every version of the snapshot (and of its contexts) at the ID its text was stored
/// under.
fn name_blobs(snapshot: &mut RegistrySnapshot, ids: &BTreeMap<[u8; 32], [u8; 32]>) {
    for v in snapshot
        .subjects
        .iter_mut()
        .flat_map(|s| s.versions.iter_mut())
    {
        if let Some(stored) = crate::format::parse_hex(&v.schema).and_then(|p| ids.get(&p)) {
            v.schema = hex(stored);
        }
    }
    for c in &mut snapshot.contexts {
        name_blobs(c, ids);
    }
}

/// Reads the snapshot back from an archive, if it has one.
pub fn read_from_archive(
    a: &crate::archive::Archive,
) -> Result<Option<RegistrySnapshot>, crate::archive::ArchiveError> {
    a.document(KIND)
}
