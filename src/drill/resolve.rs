//! Schemas resolved through the target registry over HTTP, as a consumer resolves them: the ID a
//! record carries asked of `GET /schemas/ids/{id}`, its references of
//! `GET /subjects/{subject}/versions/{version}`, each once.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::format::schema_registry::{Reference, VersionState};
use crate::registry::client::{RegistryClient, path_segment};
use crate::runtime::Context;
use crate::schema::{Catalog, SchemaTexts};

/// The texts the target served, under the keys the catalog's versions name.
#[derive(Default)]
pub struct ServedTexts(RefCell<HashMap<String, String>>);

impl SchemaTexts for ServedTexts {
    fn text(&self, key: &str) -> Result<String, String> {
        self.0
            .borrow()
            .get(key)
            .cloned()
            .ok_or_else(|| format!("the target registry served no text for {key}"))
    }
}

#[derive(Deserialize)]
struct ById {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// `GET /subjects/{subject}/versions/{version}`: the schema's text, type and references, as
/// `GET /schemas/ids/{id}` gives them, with where it stands.
#[derive(Deserialize)]
struct SubjectVersionReply {
    subject: String,
    version: i32,
    id: u32,
    #[serde(flatten)]
    body: ById,
}

#[derive(Deserialize)]
struct Usage {
    subject: String,
    version: i32,
}

pub struct Resolver<'c> {
    pub client: RegistryClient,
    pub rt: &'c Context,
    pub texts: &'c ServedTexts,
    asked: HashMap<u32, Result<(), String>>,
}

impl<'c> Resolver<'c> {
    pub fn new(client: RegistryClient, rt: &'c Context, texts: &'c ServedTexts) -> Self {
        Resolver {
            client,
            rt,
            texts,
            asked: HashMap::new(),
        }
    }

    /// The IDs resolved so far, and those the registry could not serve.
    pub fn counts(&self) -> (u64, u64) {
        let ok = self.asked.values().filter(|r| r.is_ok()).count() as u64;
        (ok, self.asked.len() as u64 - ok)
    }

    /// Makes sure `catalog` holds target schema `id` and what it references.
    pub fn resolve(&mut self, catalog: &mut Catalog<'_>, id: u32) -> Result<(), String> {
        if !self.asked.contains_key(&id) {
            let r = self.fetch(catalog, id);
            self.asked.insert(id, r);
        }
        self.asked[&id].clone()
    }

    fn fetch(&self, catalog: &mut Catalog<'_>, id: u32) -> Result<(), String> {
        let ask = |e: crate::registry::client::RegistryError| {
            format!("the target registry, asked for schema ID {id}: {e}")
        };
        let s: ById = self
            .rt
            .block_on(self.client.get(&format!("/schemas/ids/{id}")))
            .map_err(ask)?;
        let used: Vec<Usage> = self
            .rt
            .block_on(self.client.get_list(&format!("/schemas/ids/{id}/versions")))
            .map_err(ask)?;
        let (subject, version) = used.first().map_or((format!("(schema {id})"), 0), |u| {
            (u.subject.clone(), u.version)
        });
        let mut seen = HashSet::new();
        for r in &s.references {
            self.reference(catalog, r, &mut seen)?;
        }
        let key = format!("id {id}");
        self.texts.0.borrow_mut().insert(key.clone(), s.schema);
        catalog.add(
            &subject,
            state(version, id, s.schema_type, key, s.references),
        );
        Ok(())
    }

    /// A referenced subject version, and what it references, into the catalog.
    fn reference(
        &self,
        catalog: &mut Catalog<'_>,
        r: &Reference,
        seen: &mut HashSet<(String, i32)>,
    ) -> Result<(), String> {
        if catalog.has_version(&r.subject, r.version)
            || !seen.insert((r.subject.clone(), r.version))
        {
            return Ok(());
        }
        let path = format!(
            "/subjects/{}/versions/{}",
            path_segment(&r.subject),
            r.version
        );
        let v: SubjectVersionReply = self.rt.block_on(self.client.get(&path)).map_err(|e| {
            format!(
                "the target registry, asked for reference {:?} ({} v{}): {e}",
                r.name, r.subject, r.version
            )
        })?;
        for inner in &v.body.references {
            self.reference(catalog, inner, seen)?;
        }
        let key = format!("{} v{}", v.subject, v.version);
        self.texts.0.borrow_mut().insert(key.clone(), v.body.schema);
        catalog.add(
            &v.subject,
            state(v.version, v.id, v.body.schema_type, key, v.body.references),
        );
        Ok(())
    }
}

fn state(
    version: i32,
    id: u32,
    schema_type: Option<String>,
    key: String,
    references: Vec<Reference>,
) -> VersionState {
    VersionState {
        version,
        id,
        // The registry leaves the type out for Avro.
        schema_type: schema_type.unwrap_or_else(|| "AVRO".into()),
        schema: key,
        references,
        deleted: false,
        metadata: None,
        rule_set: None,
        guid: None,
    }
}
