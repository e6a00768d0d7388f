//! When an archived record and a target record are the same: every field byte for byte, except
//! that a schema ID (a key's or value's wire-format prefix, a schema-ID header in the ID form) may
//! differ where both IDs name the same schema text, the archive's ID in the archive and the
//! target's in the target registry: what a restore that rewrote IDs leaves.

use std::collections::{BTreeMap, HashMap};

use crate::kafka::reader::OwnedRecord;
use crate::registry::client::RegistryClient;
use crate::registry::wire;
use crate::runtime::Context;
use crate::schema::Catalog;

/// The target registry, where the diff was given one.
pub struct TargetRegistry<'a> {
    pub client: RegistryClient,
    pub rt: &'a Context,
}

#[derive(serde::Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

/// Decides sameness, remembering what it asked.
pub struct Sameness<'a, 'c> {
    pub catalog: &'c Catalog<'a>,
    pub target: Option<TargetRegistry<'c>>,
    verdicts: HashMap<(u32, u32), Result<bool, String>>,
    /// Archive ID → target ID pairs known to be the same (a restore's own ID map), taken
    /// without asking the registry.
    pub known: BTreeMap<u32, u32>,
    /// Archive ID → target ID, for every pair found to name the same schema.
    pub id_map: BTreeMap<u32, u32>,
}

impl<'a, 'c> Sameness<'a, 'c> {
    pub fn new(catalog: &'c Catalog<'a>, target: Option<TargetRegistry<'c>>) -> Self {
        Sameness {
            catalog,
            target,
            verdicts: HashMap::new(),
            known: BTreeMap::new(),
            id_map: BTreeMap::new(),
        }
    }

    /// The fields in which the records differ; none when they are the same. Err: the target
    /// registry could not say.
    pub fn differences(
        &mut self,
        a: &OwnedRecord,
        t: &OwnedRecord,
    ) -> Result<Vec<&'static str>, String> {
        let mut out = Vec::new();
        if !self.field(a.key.as_deref(), t.key.as_deref())? {
            out.push("key");
        }
        if !self.field(a.value.as_deref(), t.value.as_deref())? {
            out.push("value");
        }
        if !self.headers(&a.headers, &t.headers)? {
            out.push("headers");
        }
        if a.timestamp != t.timestamp {
            out.push("timestamp");
        }
        if a.timestamp_type != t.timestamp_type {
            out.push("timestamp_type");
        }
        Ok(out)
    }

    /// Byte for byte, or the same after the 5-byte prefix with equivalent IDs.
    fn field(&mut self, a: Option<&[u8]>, t: Option<&[u8]>) -> Result<bool, String> {
        match (a, t) {
            (Some(a), Some(t)) if a != t => match (wire::schema_id(a), wire::schema_id(t)) {
                (Some(x), Some(y)) if a[wire::HEADER_LEN..] == t[wire::HEADER_LEN..] => {
                    self.same_schema(x, y)
                }
                _ => Ok(false),
            },
            _ => Ok(a == t),
        }
    }

    fn headers(
        &mut self,
        a: &[(String, Option<Vec<u8>>)],
        t: &[(String, Option<Vec<u8>>)],
    ) -> Result<bool, String> {
        if a.len() != t.len() {
            return Ok(false);
        }
        for ((an, av), (tn, tv)) in a.iter().zip(t) {
            let id_header = an == wire::KEY_SCHEMA_ID_HEADER || an == wire::VALUE_SCHEMA_ID_HEADER;
            let same = an == tn
                && if id_header {
                    self.field(av.as_deref(), tv.as_deref())?
                } else {
                    av == tv
                };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether archive ID `a` and target ID `t` name the same schema.
    fn same_schema(&mut self, a: u32, t: u32) -> Result<bool, String> {
        if !self.verdicts.contains_key(&(a, t)) {
            let v = self.ask(a, t);
            if v == Ok(true) {
                self.id_map.entry(a).or_insert(t);
            }
            self.verdicts.insert((a, t), v);
        }
        self.verdicts[&(a, t)].clone()
    }

    fn ask(&self, a: u32, t: u32) -> Result<bool, String> {
        if self.known.get(&a) == Some(&t) {
            return Ok(true);
        }
        let Some(target) = &self.target else {
            return Ok(false);
        };
        let Some(archived) = self.catalog.schema_text(a) else {
            return Ok(false);
        };
        let (a_type, a_text) = archived?;
        let served: Option<SchemaById> = target
            .rt
            .block_on(target.client.get_opt(&format!("/schemas/ids/{t}")))
            .map_err(|e| format!("asking the target registry for schema ID {t}: {e}"))?;
        let Some(served) = served else {
            return Ok(false);
        };
        let t_type = served.schema_type.unwrap_or_else(|| "AVRO".into());
        Ok(a_type == t_type && same_text(&a_type, &a_text, &served.schema))
    }
}

/// Avro and JSON Schema texts compare as JSON (a registry may re-serialize them); Protobuf as
/// text, line ends and surrounding space aside.
pub fn same_text(schema_type: &str, a: &str, b: &str) -> bool {
    if schema_type != "PROTOBUF"
        && let (Ok(x), Ok(y)) = (
            serde_json::from_str::<serde_json::Value>(a),
            serde_json::from_str::<serde_json::Value>(b),
        )
    {
        return x == y;
    }
    a.trim().replace("\r\n", "\n") == b.trim().replace("\r\n", "\n")
}
