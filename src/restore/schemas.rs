//! Putting the registry snapshot back: in the archive's stored dependency order, with original
//! IDs (IMPORT mode) or with IDs the target assigns (recording source → target), adding only what
//! is missing, overwriting, or leaving existing subjects alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::state::Scoped;
use super::{GlobalConfigPolicy, RestoreError, RestoreOptions, SchemaIds, SchemaPolicy};
use crate::archive::reader::Contents;
use crate::progress::Event;
use crate::registry::client::{
    RegistryClient, RegistryError, RegistrySettings, path_segment as enc,
};
use crate::registry::snapshot::{ConfigReply, ConfigState, RegistrySnapshot, VersionState};
use crate::runtime::Context;

/// What will happen, or happened, to one schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaAction {
    pub subject: String,
    pub version: i32,
    pub source_id: u32,
    pub action: VersionAction,
    /// Known before registering for `exists` and with kept IDs.
    pub target_id: Option<u32>,
    /// The version number the target gave it (known once registered or found): not always the
    /// archive's, in a subject that has other versions on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_version: Option<i32>,
}

/// What a restore does with one archived schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionAction {
    /// Registered (under its original ID when IDs are kept).
    Register,
    /// An identical schema is in the subject already: its ID is used.
    Exists,
    /// The subject has versions on the target and `--schemas skip-existing` leaves it alone.
    Skip,
    /// The subject's versions on the target are deleted and the archive's registered.
    Overwrite,
}

impl VersionAction {
    pub fn name(self) -> &'static str {
        match self {
            VersionAction::Register => "register",
            VersionAction::Exists => "exists",
            VersionAction::Skip => "skip",
            VersionAction::Overwrite => "overwrite",
        }
    }
}

/// `POST /subjects/{s}/versions`: a reply without an ID is an error naming the endpoint (it
/// became ID 0 in the mapping the records are rewritten with).
#[derive(Deserialize)]
struct Registered {
    id: u32,
}

#[derive(Deserialize)]
struct Lookup {
    id: u32,
    version: i32,
}

#[derive(Deserialize)]
struct ById {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

pub struct SchemaRestore<'a> {
    pub client: Arc<RegistryClient>,
    pub snap: &'a RegistrySnapshot,
    /// Content ID (hex) → schema text.
    pub texts: &'a BTreeMap<String, String>,
    pub ids: SchemaIds,
    pub policy: SchemaPolicy,
    pub global: GlobalPlan,
    /// Versions only: none of the archive's subject configurations, modes or deletions (what
    /// the restore itself changed is still put back).
    pub versions_only: bool,
}

impl SchemaRestore<'_> {
    fn text(&self, v: &VersionState) -> &str {
        self.texts
            .get(&v.schema)
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn body(&self, v: &VersionState, versions: &BTreeMap<(String, i32), i32>) -> Value {
        let refs: Vec<Value> = v
            .references
            .iter()
            .map(|r| {
                let target = versions
                    .get(&(r.subject.clone(), r.version))
                    .copied()
                    .unwrap_or(r.version);
                json!({"name": r.name, "subject": r.subject, "version": target})
            })
            .collect();
        let mut b = json!({"schema": self.text(v), "schemaType": v.schema_type});
        if !refs.is_empty() {
            b["references"] = Value::Array(refs);
        }
        if let Some(m) = &v.metadata {
            b["metadata"] = m.clone();
        }
        if let Some(r) = &v.rule_set {
            b["ruleSet"] = r.clone();
        }
        b
    }

    /// An identical schema under the subject on the target, if any (read-only).
    async fn lookup(&self, subject: &str, body: &Value) -> Result<Option<Lookup>, RegistryError> {
        match self
            .client
            .request::<Lookup>(
                Method::POST,
                &format!("/subjects/{}?deleted=true", enc(subject)),
                Some(body),
            )
            .await
        {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn subject_has_versions(&self, subject: &str) -> Result<bool, RegistryError> {
        Ok(self
            .client
            .get_list_opt::<i32>(&format!("/subjects/{}/versions", enc(subject)))
            .await?
            .is_some_and(|v| !v.is_empty()))
    }

    /// The versions in restore order.
    fn ordered(&self) -> Vec<(&str, &VersionState)> {
        self.snap
            .restore_order
            .iter()
            .filter_map(|sv| Some((sv.subject.as_str(), self.snap.version(sv)?)))
            .collect()
    }

    /// IDs taken on the target by a different schema: with kept IDs, restoring would clash.
    pub async fn clashes(&self) -> Result<Vec<String>, RestoreError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (subject, v) in self.ordered() {
            if !seen.insert(v.id) {
                continue;
            }
            if let Some(t) = self
                .client
                .get_opt::<ById>(&format!("/schemas/ids/{}", v.id))
                .await?
            {
                let same = t.schema == self.text(v)
                    && t.schema_type.as_deref().unwrap_or("AVRO") == v.schema_type;
                if !same {
                    let users: Vec<Value> = self
                        .client
                        .get_list_opt(&format!("/schemas/ids/{}/versions", v.id))
                        .await?
                        .unwrap_or_default();
                    let users: Vec<String> = users
                        .iter()
                        .map(|u| {
                            format!("{} v{}", u["subject"].as_str().unwrap_or("?"), u["version"])
                        })
                        .collect();
                    out.push(format!(
                        "schema ID {} ({subject} v{} in the archive) is taken on the target by a different schema{}",
                        v.id,
                        v.version,
                        if users.is_empty() { String::new() } else { format!(" ({})", users.join(", ")) }
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Checks that the target accepts IMPORT mode on each subject, putting every mode back: the
    /// target ends as it was (see [`Self::import_mode`] for why forced).
    pub async fn probe_import(&self) -> Result<(), RestoreError> {
        let subjects: BTreeSet<&str> = self.ordered().into_iter().map(|(s, _)| s).collect();
        for s in subjects {
            let before = self.own_mode(s).await?;
            self.import_mode(s).await?;
            self.put_back_mode(s, before.as_deref()).await?;
        }
        Ok(())
    }

    /// The subject's own mode on the target, if it has one.
    async fn own_mode(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        let m: Option<Value> = self
            .client
            .get_opt(&format!("/mode/{}?defaultToGlobal=false", enc(subject)))
            .await?;
        Ok(m.and_then(|b| b["mode"].as_str().map(str::to_string)))
    }

    /// Puts the subject in IMPORT mode, forced: Confluent (`KafkaSchemaRegistry.setMode`) and
    /// AxonOps refuse IMPORT on a subject with live versions unless `force=true`, and Confluent,
    /// unforced, clears the versions of a subject whose versions are all soft-deleted. Forced,
    /// neither happens; an ID the subject's versions hold is still refused at registration.
    async fn import_mode(&self, subject: &str) -> Result<(), RestoreError> {
        self.client
            .request::<Value>(
                Method::PUT,
                &format!("/mode/{}?force=true", enc(subject)),
                Some(&json!({"mode": "IMPORT"})),
            )
            .await
            .map_err(|e| import_refused(subject, &e))?;
        self.client.observer().event(Event::ModeSet {
            subject,
            mode: Some("IMPORT"),
            into: true,
        });
        Ok(())
    }

    async fn put_back_mode(&self, subject: &str, mode: Option<&str>) -> Result<(), RegistryError> {
        match mode {
            Some(m) => {
                self.client
                    .request::<Value>(
                        Method::PUT,
                        &format!("/mode/{}", enc(subject)),
                        Some(&json!({"mode": m})),
                    )
                    .await?;
            }
            None => {
                if self
                    .client
                    .request::<Value>(Method::DELETE, &format!("/mode/{}", enc(subject)), None)
                    .await
                    .is_err()
                {
                    self.client
                        .request::<Value>(
                            Method::PUT,
                            &format!("/mode/{}", enc(subject)),
                            Some(&json!({"mode": "READWRITE"})),
                        )
                        .await?;
                }
            }
        }
        self.client.observer().event(Event::ModeSet {
            subject,
            mode,
            into: false,
        });
        Ok(())
    }

    /// The compatibility level the subject's versions were registered under at the source: its
    /// own, else the source's global one.
    fn archived_level(&self, subject: &str) -> Option<&str> {
        self.archived_subject(subject)
            .and_then(|s| s.compatibility.as_deref())
            .or(self.snap.global.compatibility.as_deref())
    }

    fn archived_subject(&self, subject: &str) -> Option<&crate::registry::snapshot::SubjectState> {
        self.snap.subjects.iter().find(|s| s.subject == subject)
    }

    /// What the source checked the subject's versions under: the level and the compatibility
    /// group (versions whose metadata property named by the group differs are not checked
    /// against each other), each the subject's own, else the global one.
    fn archived_checks(&self, subject: &str) -> ConfigState {
        let own = self.archived_subject(subject).and_then(|s| s.own_config());
        let global = self.snap.global.own_config();
        let group = own
            .as_ref()
            .and_then(|c| c.compatibility_group.clone())
            .or_else(|| global.as_ref().and_then(|g| g.compatibility_group.clone()));
        ConfigState {
            compatibility: self.archived_level(subject).map(str::to_string),
            compatibility_group: group,
            ..ConfigState::default()
        }
    }

    /// What the target checks a version registered under the subject against now (its own
    /// settings, else the global ones).
    async fn target_checks(&self, subject: &str) -> Result<ConfigState, RegistryError> {
        let c: Option<ConfigReply> = self
            .client
            .get_opt(&format!("/config/{}?defaultToGlobal=true", enc(subject)))
            .await?;
        let c = c.map(ConfigState::from).unwrap_or_default();
        Ok(ConfigState {
            compatibility: c.compatibility,
            compatibility_group: c.compatibility_group,
            ..ConfigState::default()
        })
    }

    /// Sets the subject to the level and group its versions were registered under at the
    /// source, where the target would check them under others (the final configuration is set
    /// with the other settings, at the end: its default and override metadata and rule sets
    /// would change the versions registered after them): a target stricter than the source
    /// would refuse versions the source took. The target's own configuration is recorded first,
    /// to be put back.
    async fn archived_compatibility(
        &self,
        subject: &str,
        state: &Scoped<'_>,
    ) -> Result<(), RestoreError> {
        let want = self.archived_checks(subject);
        if want.compatibility.is_none() || self.target_checks(subject).await? == want {
            return Ok(());
        }
        let path = format!("/config/{}", enc(subject));
        let own = self.own_config(&path).await?;
        let own = own.map(|c| serde_json::to_string(&c).expect("a config serializes"));
        state.remember_before("config", subject, own.as_deref())?;
        self.client
            .request::<Value>(Method::PUT, &path, Some(&want.request()))
            .await?;
        Ok(())
    }

    /// Puts back the subject's own configuration as recorded before this restore changed it:
    /// none (removed), or the whole of it (a level alone from a state file of an older kar).
    async fn put_back_config(
        &self,
        subject: &str,
        before: Option<&str>,
    ) -> Result<(), RegistryError> {
        let path = format!("/config/{}", enc(subject));
        match before {
            Some(b) => {
                let c = serde_json::from_str::<ConfigState>(b).unwrap_or_else(|_| ConfigState {
                    compatibility: Some(b.to_string()),
                    ..ConfigState::default()
                });
                self.put_whole_config(&path, &c).await
            }
            None => match self
                .client
                .request::<Value>(Method::DELETE, &path, None)
                .await
            {
                Err(e) if e.status() != Some(404) => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Versions the target would refuse, named, before anything is written: for each subject the
    /// target already has versions of, the first archived version the restore would register,
    /// checked against the target's latest (`POST /compatibility/subjects/{s}/versions/latest`)
    /// when the target's level is the one the version is registered under (checked only then: the
    /// answer is exact); with kept IDs none (IMPORT mode registers without checks).
    pub async fn refusals(
        &self,
        actions: &[SchemaAction],
        done: &BTreeMap<(String, i32), i32>,
    ) -> Result<Vec<String>, RestoreError> {
        let mut out = Vec::new();
        if self.ids == SchemaIds::Keep {
            return Ok(out);
        }
        let mut seen = BTreeSet::new();
        for a in actions
            .iter()
            .filter(|a| a.action == VersionAction::Register)
        {
            if !seen.insert(a.subject.clone()) || !self.subject_has_versions(&a.subject).await? {
                continue;
            }
            let level = match self.archived_level(&a.subject) {
                Some(l) if l != "NONE" => l,
                _ => continue,
            };
            if self.target_checks(&a.subject).await? != self.archived_checks(&a.subject) {
                continue;
            }
            let Some(v) = self.snap.version(&crate::registry::graph::SubjectVersion {
                subject: a.subject.clone(),
                version: a.version,
            }) else {
                continue;
            };
            let path = format!(
                "/compatibility/subjects/{}/versions/latest?verbose=true",
                enc(&a.subject)
            );
            let answer: Value = match self
                .client
                .request(Method::POST, &path, Some(&self.body(v, done)))
                .await
            {
                Ok(a) => a,
                Err(e) if e.status() == Some(404) => continue,
                Err(e) => return Err(e.into()),
            };
            if answer["is_compatible"] == Value::Bool(false) {
                let why: Vec<&str> = answer["messages"]
                    .as_array()
                    .map(|m| m.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push(format!(
                    "{} v{}: the target's latest version of {} is not {level}-compatible with it ({})",
                    a.subject,
                    a.version,
                    a.subject,
                    if why.is_empty() { "no reason given".to_string() } else { why.join("; ") }
                ));
            }
        }
        Ok(out)
    }

    /// What each version will get, without writing anything.
    pub async fn plan(
        &self,
        state_versions: &BTreeMap<(String, i32), i32>,
    ) -> Result<Vec<SchemaAction>, RestoreError> {
        let mut out = Vec::new();
        let mut existing_subjects: BTreeMap<String, bool> = BTreeMap::new();
        for (subject, v) in self.ordered() {
            let has = match existing_subjects.get(subject) {
                Some(h) => *h,
                None => {
                    let h = self.subject_has_versions(subject).await?;
                    existing_subjects.insert(subject.to_string(), h);
                    h
                }
            };
            let found = self.lookup(subject, &self.body(v, state_versions)).await?;
            let (action, target_id) = match (self.policy, has, &found) {
                (SchemaPolicy::SkipExisting, true, _) => {
                    (VersionAction::Skip, found.as_ref().map(|l| l.id))
                }
                (SchemaPolicy::Overwrite, true, _) => (
                    VersionAction::Overwrite,
                    (self.ids == SchemaIds::Keep).then_some(v.id),
                ),
                (_, _, Some(l)) => (VersionAction::Exists, Some(l.id)),
                _ => (
                    VersionAction::Register,
                    (self.ids == SchemaIds::Keep).then_some(v.id),
                ),
            };
            out.push(SchemaAction {
                subject: subject.to_string(),
                version: v.version,
                source_id: v.id,
                action,
                target_id,
                target_version: None,
            });
        }
        Ok(out)
    }

    /// Restores every version (skipping those the state says are done), then configs, modes and
    /// soft deletions. Returns the actions taken.
    pub async fn run(
        &self,
        state: &Scoped<'_>,
    ) -> Result<(Vec<SchemaAction>, Vec<String>), RestoreError> {
        let mut versions: BTreeMap<(String, i32), i32> =
            state.versions_done()?.into_iter().collect();
        let mut actions = Vec::new();
        let mut prepared: BTreeSet<String> = BTreeSet::new();
        let mut skipped: BTreeSet<String> = BTreeSet::new();
        for (subject, v) in self.ordered() {
            let key = (subject.to_string(), v.version);
            if versions.contains_key(&key) {
                continue;
            }
            if prepared.insert(subject.to_string()) && !self.prepare_subject(subject, state).await?
            {
                skipped.insert(subject.to_string());
            }
            let body = self.body(v, &versions);
            let found = if self.policy == SchemaPolicy::Overwrite && !skipped.contains(subject) {
                None
            } else {
                self.lookup(subject, &body).await?
            };
            let (action, target_id, target_version) = if let Some(l) = found {
                (VersionAction::Exists, l.id, l.version)
            } else if skipped.contains(subject) {
                actions.push(SchemaAction {
                    subject: subject.into(),
                    version: v.version,
                    source_id: v.id,
                    action: VersionAction::Skip,
                    target_id: None,
                    target_version: None,
                });
                continue;
            } else {
                let (id, version) = self.register(subject, v, body).await?;
                (VersionAction::Register, id, version)
            };
            state.schema_done(subject, v.version, target_version, v.id, target_id)?;
            versions.insert(key, target_version);
            actions.push(SchemaAction {
                subject: subject.into(),
                version: v.version,
                source_id: v.id,
                action,
                target_id: Some(target_id),
                target_version: Some(target_version),
            });
        }
        if !state.is_done("schema-settings")? {
            self.settings(&versions, &skipped, state).await?;
            state.set_done("schema-settings")?;
        }
        let problems = self.members_kept(&versions, &skipped).await?;
        Ok((actions, problems))
    }

    /// Before a subject's first version: with `--schemas overwrite`, its versions on the target
    /// go; its archived compatibility is set; with kept IDs, it goes into IMPORT mode (its own
    /// mode remembered, to put back). False: `--schemas skip-existing` leaves it alone.
    async fn prepare_subject(
        &self,
        subject: &str,
        state: &Scoped<'_>,
    ) -> Result<bool, RestoreError> {
        let has = self.subject_has_versions(subject).await?;
        if has && self.policy == SchemaPolicy::SkipExisting {
            return Ok(false);
        }
        if has && self.policy == SchemaPolicy::Overwrite {
            for path in [
                format!("/subjects/{}", enc(subject)),
                format!("/subjects/{}?permanent=true", enc(subject)),
            ] {
                self.client
                    .request::<Value>(Method::DELETE, &path, None)
                    .await?;
            }
        }
        self.archived_compatibility(subject, state).await?;
        if self.ids == SchemaIds::Keep {
            let own = self.own_mode(subject).await?;
            state.remember_before("mode", subject, own.as_deref())?;
            self.import_mode(subject).await?;
        }
        Ok(true)
    }

    /// Registers one archived version: under its original ID and version with kept IDs
    /// (refused if the registry gives another), else as the target assigns. Returns the target's
    /// ID and version.
    async fn register(
        &self,
        subject: &str,
        v: &VersionState,
        mut body: Value,
    ) -> Result<(u32, i32), RestoreError> {
        let path = format!("/subjects/{}/versions", enc(subject));
        if self.ids == SchemaIds::Keep {
            body["id"] = json!(v.id);
            body["version"] = json!(v.version);
        }
        let Registered { id } = self
            .client
            .request(Method::POST, &path, Some(&body))
            .await?;
        self.client.observer().event(Event::SchemaRegistered {
            subject,
            version: v.version,
            id,
        });
        if self.ids == SchemaIds::Keep {
            if id != v.id {
                return Err(RestoreError::Refused(format!(
                    "{subject} v{} was registered with ID {id}, not its original {}",
                    v.version, v.id
                )));
            }
            return Ok((id, v.version));
        }
        let l = self.lookup(subject, &body).await?.ok_or_else(|| {
            RestoreError::Refused(format!(
                "{subject} v{} was registered (ID {id}) but the registry cannot find it again",
                v.version
            ))
        })?;
        Ok((id, l.version))
    }

    /// Whether `GET /schemas/guids/{guid}` finds a schema on the target.
    async fn guid_resolves(&self, guid: &str) -> Result<bool, RegistryError> {
        Ok(self
            .client
            .get_opt::<Value>(&format!("/schemas/guids/{}", enc(guid)))
            .await?
            .is_some())
    }

    /// Every restored version whose archived metadata or rule set the target does not hold (a
    /// registry may drop them: AxonOps v0.2.1 does for a version registered in IMPORT mode with
    /// its ID), named: checked on every run, a resumed one too.
    async fn members_kept(
        &self,
        versions: &BTreeMap<(String, i32), i32>,
        skipped: &BTreeSet<String>,
    ) -> Result<Vec<String>, RestoreError> {
        let mut out = Vec::new();
        for (subject, v) in self.ordered() {
            if (v.metadata.is_none() && v.rule_set.is_none() && v.guid.is_none())
                || skipped.contains(subject)
            {
                continue;
            }
            let Some(t) = versions.get(&(subject.to_string(), v.version)) else {
                continue;
            };
            let got: Value = self
                .client
                .get(&format!(
                    "/subjects/{}/versions/{t}?deleted=true",
                    enc(subject)
                ))
                .await?;
            let mut lost = Vec::new();
            if !metadata_kept(v.metadata.as_ref(), got.get("metadata")) {
                lost.push("metadata");
            }
            if v.rule_set.is_some() && v.rule_set.as_ref() != got.get("ruleSet") {
                lost.push("rule set");
            }
            if let Some(g) = &v.guid
                && !self.guid_resolves(g).await?
            {
                lost.push("GUID (it does not resolve there)");
            }
            if !lost.is_empty() {
                out.push(format!(
                    "{subject} v{} (ID {}): the target holds its version {t} without the archived {}{}",
                    v.version,
                    v.id,
                    lost.join(" and "),
                    if self.ids == SchemaIds::Keep {
                        " (AxonOps v0.2.1 drops them from versions registered in IMPORT mode; --schema-ids rewrite registers them)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(out)
    }

    /// Soft deletions, compatibility and modes, after every version is in.
    async fn settings(
        &self,
        versions: &BTreeMap<(String, i32), i32>,
        skipped: &BTreeSet<String>,
        state: &Scoped<'_>,
    ) -> Result<(), RestoreError> {
        let restored: BTreeSet<&str> = self.ordered().into_iter().map(|(s, _)| s).collect();
        for st in self.snap.subjects.iter().filter(|s| {
            // A subject without versions (an alias) has its configuration and mode alone.
            (restored.contains(s.subject.as_str()) || s.versions.is_empty())
                && !skipped.contains(&s.subject)
        }) {
            let s = enc(&st.subject);
            let archived = !self.versions_only;
            for v in st.versions.iter().filter(|v| v.deleted && archived) {
                if let Some(t) = versions.get(&(st.subject.clone(), v.version)) {
                    let _ = self
                        .client
                        .request::<Value>(
                            Method::DELETE,
                            &format!("/subjects/{s}/versions/{t}"),
                            None,
                        )
                        .await;
                }
            }
            // The archive's own settings; where it has none, the target's own, if this restore
            // changed them (recorded in the state before the first change, whichever run).
            match (
                st.own_config().filter(|_| archived),
                state.before("config", &st.subject)?,
            ) {
                (Some(c), _) => self.put_whole_config(&format!("/config/{s}"), &c).await?,
                (None, Some(before)) => {
                    self.put_back_config(&st.subject, before.as_deref()).await?
                }
                (None, None) => {}
            }
            match (
                st.mode.as_ref().filter(|_| archived),
                state.before("mode", &st.subject)?,
            ) {
                (Some(m), changed) => {
                    self.client
                        .request::<Value>(
                            Method::PUT,
                            &format!("/mode/{s}"),
                            Some(&json!({"mode": m})),
                        )
                        .await?;
                    if changed.is_some() {
                        // Out of the IMPORT mode the registration took.
                        self.client.observer().event(Event::ModeSet {
                            subject: &st.subject,
                            mode: Some(m),
                            into: false,
                        });
                    }
                }
                (None, Some(before)) => self.put_back_mode(&st.subject, before.as_deref()).await?,
                (None, None) => {}
            }
            if st.deleted && archived {
                let _ = self
                    .client
                    .request::<Value>(Method::DELETE, &format!("/subjects/{s}"), None)
                    .await;
            }
        }
        if self.global.apply && !self.versions_only {
            if let Some(c) = self.snap.global.own_config() {
                self.put_whole_config("/config", &c).await?;
            }
            if let Some(m) = &self.snap.global.mode {
                self.client
                    .request::<Value>(Method::PUT, "/mode?force=true", Some(&json!({"mode": m})))
                    .await?;
            }
        }
        Ok(())
    }

    /// Sets a configuration (global or a subject's) to exactly the archived one: a registry
    /// merges a `PUT` into what it had (Confluent's `ConfigUpdateRequest`, AxonOps likewise), so
    /// where a member the archive lacks stays set, the configuration is removed and set again.
    async fn put_whole_config(&self, path: &str, c: &ConfigState) -> Result<(), RegistryError> {
        let body = c.request();
        self.client
            .request::<Value>(Method::PUT, path, Some(&body))
            .await?;
        let now = self.own_config(path).await?;
        if now.as_ref().is_some_and(|n| n.differences(c).is_empty()) {
            return Ok(());
        }
        if let Err(e) = self
            .client
            .request::<Value>(Method::DELETE, path, None)
            .await
            && e.status() != Some(404)
        {
            return Err(e);
        }
        self.client
            .request::<Value>(Method::PUT, path, Some(&body))
            .await?;
        Ok(())
    }

    /// A configuration as the target holds it (`path`: `/config` or `/config/{subject}`), the
    /// subject's own only.
    async fn own_config(&self, path: &str) -> Result<Option<ConfigState>, RegistryError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r: Option<ConfigReply> = self
            .client
            .get_opt(&format!("{path}{sep}defaultToGlobal=false"))
            .await?;
        Ok(r.map(ConfigState::from))
    }

    /// The target's global configuration and mode against the archive's, and whether the
    /// restore sets the archive's: with `--global-config overwrite`, or by default into a target
    /// that had no subject (a registry in use keeps its own, and the plan names what differs).
    pub async fn global_plan(
        &self,
        policy: Option<GlobalConfigPolicy>,
        target_was_empty: bool,
    ) -> Result<GlobalPlan, RestoreError> {
        let target = self.own_config("/config").await?.unwrap_or_default();
        let mode: Option<Value> = self.client.get_opt("/mode").await?;
        let target_mode = mode.and_then(|m| m["mode"].as_str().map(str::to_string));
        let mut differences = match self.snap.global.own_config() {
            Some(a) => a.differences(&target),
            None => Vec::new(),
        };
        if let Some(m) = &self.snap.global.mode
            && target_mode.as_ref() != Some(m)
        {
            differences.push(format!(
                "mode {m:?} (archive) vs {} (target)",
                target_mode.map_or("unset".to_string(), |t| format!("{t:?}"))
            ));
        }
        let apply = match policy {
            Some(GlobalConfigPolicy::Overwrite) => true,
            Some(GlobalConfigPolicy::Keep) => false,
            None => target_was_empty,
        } && !differences.is_empty();
        Ok(GlobalPlan {
            action: if differences.is_empty() {
                GlobalAction::Same
            } else if apply {
                GlobalAction::Set
            } else {
                GlobalAction::Keep
            },
            apply,
            differences,
        })
    }
}

/// What the restore does with the target's global configuration and mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GlobalAction {
    /// Nothing differs.
    #[default]
    Same,
    /// The archive's are set, at the end of the schema phase.
    Set,
    /// The target's stay; `differences` names what the archive's would change.
    Keep,
}

/// What the restore does to the target's global configuration and mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GlobalPlan {
    pub action: GlobalAction,
    #[serde(skip)]
    pub apply: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// The schema side of a restore, planned: a client of the target registry, the archived schema
/// texts, and what will happen to each version.
pub struct SchemaPlan {
    rt: Context,
    client: Arc<RegistryClient>,
    /// Content ID (hex) → schema text.
    texts: BTreeMap<String, String>,
    pub actions: Vec<SchemaAction>,
    pub global: GlobalPlan,
    /// KEKs and DEKs to create (none where the archive holds no DEK registry).
    pub deks: Option<crate::registry::dek::DekPlan>,
}

impl SchemaPlan {
    /// Everything before a schema is written: the registry answers, the stored order is complete
    /// (or `--force`), with kept IDs no archived ID is taken by another schema, the plan; last,
    /// with kept IDs, that IMPORT mode is taken (tried and put back).
    pub fn prepare(
        rt: &Context,
        opts: &RestoreOptions,
        settings: &RegistrySettings,
        archive: &dyn Contents,
        snap: &RegistrySnapshot,
        done: &BTreeMap<(String, i32), i32>,
    ) -> Result<SchemaPlan, RestoreError> {
        if !snap.order_complete && !opts.force {
            return Err(RestoreError::Refused(format!(
                "the archive's schema restore order is incomplete ({}); restore with --force to register what can be ordered",
                snap.order_problems.join("; ")
            )));
        }
        let client = Arc::new(RegistryClient::new(settings)?.observed_by(opts.progress.clone()));
        let texts = texts(archive, snap)?;
        let mut sr = SchemaRestore {
            client: client.clone(),
            snap,
            texts: &texts,
            ids: opts.schema_ids,
            policy: opts.schemas,
            global: GlobalPlan::default(),
            versions_only: opts.schema_versions_only,
        };
        let target_was_empty = rt.block_on(async {
            Ok::<_, RestoreError>(client.get_list::<String>("/subjects").await?.is_empty())
        })?;
        sr.global = rt.block_on(sr.global_plan(opts.global_config, target_was_empty))?;
        let keep = opts.schema_ids == SchemaIds::Keep;
        if keep && opts.schemas != SchemaPolicy::Overwrite && done.is_empty() {
            let clashes = rt.block_on(sr.clashes())?;
            if !clashes.is_empty() {
                return Err(RestoreError::Refused(format!(
                    "schema IDs clash on the target; nothing was written:\n  {}",
                    clashes.join("\n  ")
                )));
            }
        }
        let actions = rt.block_on(sr.plan(done))?;
        if opts.schemas != SchemaPolicy::Overwrite {
            let refused = rt.block_on(sr.refusals(&actions, done))?;
            if !refused.is_empty() {
                return Err(RestoreError::Refused(format!(
                    "the target registry would refuse {} schema version(s); nothing was written:\n  {}\nrestore to a registry without these subjects, with --schemas skip-existing, or with --schemas overwrite",
                    refused.len(),
                    refused.join("\n  ")
                )));
            }
        }
        let deks = match &snap.dek_registry {
            Some(keks) => {
                let (plan, conflicts) = rt.block_on(async {
                    Ok::<_, RestoreError>(crate::registry::dek::plan(&client, keks).await?)
                })?;
                if !conflicts.is_empty() {
                    return Err(RestoreError::Refused(format!(
                        "the target's DEK registry holds other keys under the archive's names; nothing was written:\n  {}",
                        conflicts.join("\n  ")
                    )));
                }
                Some(plan)
            }
            None => None,
        };
        if keep && !opts.dry_run && done.is_empty() {
            rt.block_on(sr.probe_import())?;
        }
        let global = sr.global;
        Ok(SchemaPlan {
            rt: rt.clone(),
            client,
            texts,
            actions,
            global,
            deks,
        })
    }

    /// Registers what the plan says, then configs, modes and soft deletions; returns what was
    /// done and every archived member the target does not hold.
    pub fn run(
        &self,
        opts: &RestoreOptions,
        snap: &RegistrySnapshot,
        state: &Scoped<'_>,
    ) -> Result<(Vec<SchemaAction>, Vec<String>), RestoreError> {
        let sr = SchemaRestore {
            client: self.client.clone(),
            snap,
            texts: &self.texts,
            ids: opts.schema_ids,
            policy: opts.schemas,
            global: self.global.clone(),
            versions_only: opts.schema_versions_only,
        };
        if let Some(keks) = snap
            .dek_registry
            .as_ref()
            .filter(|_| !opts.schema_versions_only)
            && !state.is_done("dek-registry")?
        {
            self.rt.block_on(async {
                Ok::<_, RestoreError>(crate::registry::dek::restore(&self.client, keks).await?)
            })?;
            state.set_done("dek-registry")?;
        }
        self.rt.block_on(sr.run(state))
    }
}

/// Every archived schema text, by content ID.
fn texts(
    archive: &dyn Contents,
    snap: &RegistrySnapshot,
) -> Result<BTreeMap<String, String>, RestoreError> {
    let mut out = BTreeMap::new();
    for v in snap.subjects.iter().flat_map(|st| &st.versions) {
        let id = crate::format::parse_hex(&v.schema).ok_or_else(|| {
            RestoreError::Invalid(format!(
                "the archive's schema-registry document names schema content {:?}, not a content ID",
                v.schema
            ))
        })?;
        let text = String::from_utf8_lossy(&archive.content(&id)?).into_owned();
        out.insert(v.schema.clone(), text);
    }
    Ok(out)
}

/// Why the target refused IMPORT mode on a subject, in words that name the cause: mode changes
/// disabled (Confluent's `mode.mutability=false`: "Mode changes are not allowed"), or a registry
/// that refuses IMPORT on a subject with versions even when forced (one that ignores `force`).
fn import_refused(subject: &str, e: &RegistryError) -> RestoreError {
    let text = e.to_string();
    let cause = if text.contains("not allowed") {
        "it does not allow mode changes (Confluent: mode.mutability=false)"
    } else if text.contains("existing subjects") {
        "it refuses IMPORT on a subject that has versions even when forced (force=true), which Confluent and AxonOps accept"
    } else {
        "its answer is below"
    };
    RestoreError::Refused(format!(
        "the target registry refuses IMPORT mode on subject {subject}: {cause} ({e}); keeping schema IDs needs IMPORT mode, or restore with --schema-ids rewrite"
    ))
}

impl SchemaPlan {
    /// A registry in use keeps its global configuration; where the archive's differs, say so.
    pub fn global_warning(&self) -> Option<String> {
        (self.global.action == GlobalAction::Keep).then(|| {
            format!(
                "the target registry keeps its global configuration, which differs from the archive's: {}; --global-config overwrite sets the archive's",
                self.global.differences.join(", ")
            )
        })
    }
}

/// Whether the target's metadata holds every archived member: the property `confluent:version`
/// apart (a registry sets it to the version it assigned).
fn metadata_kept(archived: Option<&Value>, target: Option<&Value>) -> bool {
    let Some(a) = archived else {
        return true;
    };
    let strip = |v: Option<&Value>| {
        let mut v = v.cloned().unwrap_or(Value::Null);
        if let Some(p) = v.get_mut("properties").and_then(Value::as_object_mut) {
            p.remove("confluent:version");
            if p.is_empty() {
                v.as_object_mut().map(|o| o.remove("properties"));
            }
        }
        v
    };
    let (a, t) = (strip(Some(a)), strip(target));
    match (a.as_object(), t.as_object()) {
        (Some(a), Some(t)) => a.iter().all(|(k, v)| t.get(k) == Some(v)),
        (Some(a), None) => a.is_empty(),
        _ => a == t,
    }
}

impl SchemaPlan {
    /// The GUIDs (of schema ID headers) the target does not resolve (`GET /schemas/guids/{guid}`),
    /// as text.
    pub fn unresolved_guids(
        &self,
        guids: &BTreeSet<[u8; 16]>,
    ) -> Result<Vec<String>, RestoreError> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for g in guids {
                let g = crate::registry::wire::guid_text(g);
                let found: Option<Value> =
                    self.client.get_opt(&format!("/schemas/guids/{g}")).await?;
                if found.is_none() {
                    out.push(g);
                }
            }
            Ok(out)
        })
    }
}
