//! The `schema-registry` metadata document (format-spec §5.1): the complete state of one Schema
//! Registry as a backup captured it, typed. Pure data: the registry adapter (`registry/`) fills
//! it from the REST API and puts it back; readers of an archive read it from here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const KIND: &str = "schema-registry";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
}

impl std::fmt::Display for SubjectVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}", self.subject, self.version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionState {
    pub version: i32,
    pub id: u32,
    pub schema_type: String,
    /// Content ID (hex) of the blob holding the schema text.
    pub schema: String,
    #[serde(default)]
    pub references: Vec<Reference>,
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<Value>,
    /// The schema's GUID (format 2.1), where the registry serves one (Confluent 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectState {
    pub subject: String,
    pub deleted: bool,
    /// The subject's own compatibility override; `None` = no override (distinct from an override
    /// equal to the global level).
    pub compatibility: Option<String>,
    pub mode: Option<String>,
    pub versions: Vec<VersionState>,
    /// The subject's own configuration, every member (format 2.1; `None` = no override, or an
    /// archive of 2.0, which held the level alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigState>,
}

impl SubjectState {
    /// The subject's own configuration: the whole of it, or, from a 2.0 archive, the level.
    pub fn own_config(&self) -> Option<ConfigState> {
        whole_or_level(&self.config, &self.compatibility)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GlobalState {
    pub compatibility: Option<String>,
    pub mode: Option<String>,
    /// The global configuration, every member (format 2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigState>,
}

impl GlobalState {
    pub fn own_config(&self) -> Option<ConfigState> {
        whole_or_level(&self.config, &self.compatibility)
    }
}

/// The configuration held whole (2.1), else the level alone (2.0).
fn whole_or_level(config: &Option<ConfigState>, level: &Option<String>) -> Option<ConfigState> {
    config.clone().or_else(|| {
        level.as_ref().map(|c| ConfigState {
            compatibility: Some(c.clone()),
            ..ConfigState::default()
        })
    })
}

/// A configuration (global, or a subject's own) as the registry served it: the compatibility
/// level and group, and the data-contract settings of Confluent's `ConfigValue`, which a
/// registry applies to every version registered after (default and override metadata and rule
/// sets) or to lookups (`normalize`, `alias`). Members this kar does not know are kept in
/// `other`, as served, and restored as they are: nothing a newer registry adds is dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_fields: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_rules: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rule_set: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_rule_set: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// The `schema-registry` metadata document (format-spec §5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    pub kind: String,
    pub source: String,
    pub captured_at_ms: i64,
    pub global: GlobalState,
    pub subjects: Vec<SubjectState>,
    pub restore_order: Vec<SubjectVersion>,
    pub order_complete: bool,
    #[serde(default)]
    pub order_problems: Vec<String>,
    /// Subjects outside the filter that were taken because a selected schema references them.
    #[serde(default)]
    pub pulled_in: Vec<String>,
    /// The context this snapshot is of (format 2.1): `None` for the default context (`.`), whose
    /// snapshot is the document itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Every other context (format 2.1), each a snapshot of its own: subjects, versions, IDs,
    /// configurations and modes are scoped per context; subject names are as the context's base
    /// path (`/contexts/{context}`) serves them, unqualified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<RegistrySnapshot>,
    /// The DEK registry (format 2.1): every KEK and its DEKs, soft-deleted ones too; `None` where
    /// the registry has none. Registry-wide: on the default context's snapshot only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dek_registry: Option<Vec<Kek>>,
}

impl RegistrySnapshot {
    pub fn version(&self, sv: &SubjectVersion) -> Option<&VersionState> {
        self.subjects
            .iter()
            .find(|s| s.subject == sv.subject)?
            .versions
            .iter()
            .find(|v| v.version == sv.version)
    }

    pub fn version_count(&self) -> usize {
        self.subjects.iter().map(|s| s.versions.len()).sum()
    }

    /// A subject's name qualified with this snapshot's context (`:.ctx:subject`), as patterns
    /// and reports name it.
    pub fn qualified(&self, subject: &str) -> String {
        qualify(self.context.as_deref(), subject)
    }
}

/// `subject` in `context` (`None` or `.`: the default context, unqualified).
pub fn qualify(context: Option<&str>, subject: &str) -> String {
    match context {
        None | Some(".") => subject.to_string(),
        Some(c) => format!(":{c}:{subject}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kek {
    pub name: String,
    pub kms_type: String,
    pub kms_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_props: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    pub shared: bool,
    pub deleted: bool,
    pub deks: Vec<Dek>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dek {
    pub subject: String,
    pub version: i32,
    pub algorithm: String,
    /// Base64, as served: the key wrapped by the KEK's KMS key. None where the registry holds
    /// none (a shared KEK whose registry makes the key on demand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_key_material: Option<String>,
    pub deleted: bool,
}
