//! The archived registry's schemas by ID and GUID, compiled on first use and kept.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use super::{Decoded, IdSource, NotDecoded, SchemaUsed, avro, message_indexes, protobuf};
use crate::format::schema_registry::{RegistrySnapshot, SubjectVersion, VersionState};
use crate::registry::wire;

/// Where schema texts come from: the blob a version names (its content ID, hex).
pub trait SchemaTexts {
    fn text(&self, blob: &str) -> Result<String, String>;
}

/// An archive's blobs, read (and checked against their content IDs) as they are asked for.
impl SchemaTexts for crate::archive::Archive {
    fn text(&self, blob: &str) -> Result<String, String> {
        let id = crate::format::parse_hex(blob)
            .ok_or_else(|| format!("the snapshot names blob {blob:?}, not a content ID"))?;
        let bytes = self.read_content(&id).map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|_| format!("schema text {blob} is not UTF-8"))
    }
}

#[derive(Debug, Clone)]
struct Version {
    subject: String,
    deleted: bool,
    state: VersionState,
}

enum Compiled {
    Avro(avro::Compiled),
    Protobuf(protobuf::Compiled),
    Json,
}

/// The schemas of an archived registry (its default context: the IDs a serializer writes), and
/// the decoders made of them.
pub struct Catalog<'a> {
    texts: &'a dyn SchemaTexts,
    by_id: HashMap<u32, Vec<Version>>,
    by_version: HashMap<SubjectVersion, Version>,
    guids: HashMap<[u8; 16], u32>,
    compiled: HashMap<u32, Result<Rc<Compiled>, String>>,
}

impl<'a> Catalog<'a> {
    /// An empty catalog: every wire-format field is an unknown ID.
    pub fn empty(texts: &'a dyn SchemaTexts) -> Self {
        Catalog {
            texts,
            by_id: HashMap::new(),
            by_version: HashMap::new(),
            guids: HashMap::new(),
            compiled: HashMap::new(),
        }
    }

    /// The catalog of a snapshot, or an empty one where the archive holds none.
    pub fn of(snapshot: Option<&RegistrySnapshot>, texts: &'a dyn SchemaTexts) -> Self {
        match snapshot {
            Some(s) => Catalog::new(s, texts),
            None => Catalog::empty(texts),
        }
    }

    pub fn new(snapshot: &RegistrySnapshot, texts: &'a dyn SchemaTexts) -> Self {
        let mut c = Catalog::empty(texts);
        for s in &snapshot.subjects {
            for v in &s.versions {
                let version = Version {
                    subject: s.subject.clone(),
                    deleted: s.deleted || v.deleted,
                    state: v.clone(),
                };
                if let Some(g) = v.guid.as_deref().and_then(parse_guid) {
                    c.guids.insert(g, v.id);
                }
                c.by_id.entry(v.id).or_default().push(version.clone());
                c.by_version.insert(
                    SubjectVersion {
                        subject: s.subject.clone(),
                        version: v.version,
                    },
                    version,
                );
            }
        }
        // Live versions first, then by subject and version: the one a report names.
        for vs in c.by_id.values_mut() {
            vs.sort_by(|a, b| {
                (a.deleted, &a.subject, a.state.version).cmp(&(
                    b.deleted,
                    &b.subject,
                    b.state.version,
                ))
            });
        }
        c
    }

    /// Adds a version learnt elsewhere (a drill's target registry), its text reachable through
    /// the catalog's [`SchemaTexts`] under `state.schema`.
    pub fn add(&mut self, subject: &str, state: VersionState) {
        let v = Version {
            subject: subject.to_string(),
            deleted: state.deleted,
            state,
        };
        self.by_version.insert(
            SubjectVersion {
                subject: subject.to_string(),
                version: v.state.version,
            },
            v.clone(),
        );
        self.by_id.entry(v.state.id).or_default().push(v);
    }

    /// Whether the catalog holds version `version` of `subject`.
    pub fn has_version(&self, subject: &str, version: i32) -> bool {
        self.by_version.contains_key(&SubjectVersion {
            subject: subject.to_string(),
            version,
        })
    }

    /// The type and text of schema `id`, if the archive holds it.
    pub fn schema_text(&self, id: u32) -> Option<Result<(String, String), String>> {
        let v = self.by_id.get(&id)?.first()?;
        Some(
            self.texts
                .text(&v.state.schema)
                .map(|t| (v.state.schema_type.clone(), t)),
        )
    }

    /// The ID of the schema with this GUID (Confluent 8), if the archive holds it.
    pub fn id_of_guid(&self, guid: &[u8; 16]) -> Option<u32> {
        self.guids.get(guid).copied()
    }

    /// The version an ID is reported as: under `subject` where that subject has it (the topic's
    /// `<topic>-key` / `<topic>-value`), else the first live one.
    fn version_of(&self, id: u32, subject: &str) -> Option<&Version> {
        let vs = self.by_id.get(&id)?;
        vs.iter().find(|v| v.subject == subject).or(vs.first())
    }

    /// Decodes a key or value. `subject`: the subject a serializer with the default naming
    /// strategy would have used, preferred when an ID is under several.
    pub fn decode(
        &mut self,
        field: &[u8],
        src: IdSource<'_>,
        subject: &str,
    ) -> Result<Decoded, NotDecoded> {
        // `after_id`: the bytes after the ID (message indexes, and in the prefix form the payload).
        let (id, after_id, base) = match src {
            IdSource::Prefix => {
                let id = wire::schema_id(field).ok_or(NotDecoded::NotWire)?;
                (id, &field[wire::HEADER_LEN..], wire::HEADER_LEN)
            }
            IdSource::Header(h) => self.header_id(h)?,
        };
        let v = self
            .version_of(id, subject)
            .ok_or(NotDecoded::UnknownId(id))?
            .clone();
        let used = SchemaUsed {
            id,
            subject: v.subject.clone(),
            version: v.state.version,
            schema_type: v.state.schema_type.clone(),
        };
        let compiled = self.compiled(id, &v)?;
        let payload = match src {
            IdSource::Prefix => after_id,
            IdSource::Header(_) => field,
        };
        let json = match &*compiled {
            Compiled::Avro(c) => {
                avro::decode(c, payload).map_err(|(at, detail)| NotDecoded::Payload {
                    id,
                    at: base + at,
                    detail,
                })?
            }
            Compiled::Json => serde_json::from_slice(payload).map_err(|e| NotDecoded::Payload {
                id,
                at: base + json_error_byte(payload, &e),
                detail: e.to_string(),
            })?,
            Compiled::Protobuf(c) => {
                let (indexes, n) =
                    message_indexes(after_id).map_err(|detail| NotDecoded::Payload {
                        id,
                        at: base,
                        detail,
                    })?;
                let (payload, at) = match src {
                    IdSource::Prefix => (&after_id[n..], base + n),
                    IdSource::Header(_) => (field, 0),
                };
                protobuf::decode(c, &indexes, payload)
                    .map_err(|detail| NotDecoded::Payload { id, at, detail })?
                    .1
            }
        };
        Ok(Decoded { json, schema: used })
    }

    /// The ID a schema-ID header names, and the bytes after it.
    fn header_id<'h>(&self, h: &'h [u8]) -> Result<(u32, &'h [u8], usize), NotDecoded> {
        if let Some(id) = wire::schema_id(h) {
            return Ok((id, &h[wire::HEADER_LEN..], 0));
        }
        if let Some(g) = wire::schema_guid(h) {
            let id = *self
                .guids
                .get(&g)
                .ok_or_else(|| NotDecoded::UnknownGuid(wire::guid_text(&g)))?;
            return Ok((id, &h[17..], 0));
        }
        Err(NotDecoded::BadHeader(format!(
            "{} byte(s) starting {:02x?}; expected 0x00 and a 4-byte ID or 0x01 and a 16-byte GUID",
            h.len(),
            &h[..h.len().min(4)]
        )))
    }

    fn compiled(&mut self, id: u32, v: &Version) -> Result<Rc<Compiled>, NotDecoded> {
        if !self.compiled.contains_key(&id) {
            let made = self.compile(v).map(Rc::new);
            self.compiled.insert(id, made);
        }
        self.compiled[&id]
            .clone()
            .map_err(|detail| NotDecoded::Unusable {
                id,
                schema_type: v.state.schema_type.clone(),
                detail,
            })
    }

    fn compile(&self, v: &Version) -> Result<Compiled, String> {
        let text = self.texts.text(&v.state.schema)?;
        match v.state.schema_type.as_str() {
            "AVRO" => {
                let refs = self.references(v)?;
                avro::compile(&text, &refs.into_iter().map(|(_, t)| t).collect::<Vec<_>>())
                    .map(Compiled::Avro)
            }
            "PROTOBUF" => protobuf::compile(&text, &self.references(v)?).map(Compiled::Protobuf),
            "JSON" => Ok(Compiled::Json),
            other => Err(format!("schema type {other} is not one kar decodes")),
        }
    }

    /// The texts of a version's references, direct and transitive, each once: (name, text).
    fn references(&self, v: &Version) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<_> = v.state.references.iter().rev().cloned().collect();
        while let Some(r) = stack.pop() {
            let sv = SubjectVersion {
                subject: r.subject.clone(),
                version: r.version,
            };
            if !seen.insert(sv.clone()) {
                continue;
            }
            let target = self.by_version.get(&sv).ok_or_else(|| {
                format!(
                    "its reference {:?} names {sv}, which the archive does not hold",
                    r.name
                )
            })?;
            out.push((r.name.clone(), self.texts.text(&target.state.schema)?));
            stack.extend(target.state.references.iter().rev().cloned());
        }
        Ok(out)
    }
}

/// The byte where serde_json stopped, from its line and column (1-based).
fn json_error_byte(payload: &[u8], e: &serde_json::Error) -> usize {
    let line_start: usize = payload
        .split(|&b| b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    line_start + e.column().saturating_sub(1)
}

fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|c| *c != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::wire;

    struct Texts(HashMap<String, String>);

    impl SchemaTexts for Texts {
        fn text(&self, blob: &str) -> Result<String, String> {
            self.0
                .get(blob)
                .cloned()
                .ok_or_else(|| format!("no blob {blob}"))
        }
    }

    const GUID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    /// Schema 7 (a string) under two subjects; schema 8 references a subject version the
    /// archive does not hold.
    fn snapshot() -> RegistrySnapshot {
        let v = |id: u32, blob: &str, refs: Value| {
            json!({"version": 1, "id": id, "schema_type": "AVRO", "schema": blob,
                   "references": refs, "deleted": false, "guid": GUID})
        };
        serde_json::from_value(json!({
            "kind": "schema-registry", "source": "test", "captured_at_ms": 0, "global": {},
            "restore_order": [], "order_complete": true,
            "subjects": [
                {"subject": "a-value", "deleted": false, "versions": [v(7, "s", json!([]))]},
                {"subject": "orders-value", "deleted": false, "versions": [v(7, "s", json!([]))]},
                {"subject": "broken", "deleted": false, "versions": [
                    {"version": 1, "id": 8, "schema_type": "AVRO", "schema": "s", "deleted": false,
                     "references": [{"name": "X", "subject": "gone", "version": 3}]}]}
            ]
        }))
        .unwrap()
    }

    use serde_json::{Value, json};

    #[test]
    fn ids_guids_and_subjects_as_a_consumer_would_find_them() {
        let texts = Texts(HashMap::from([("s".to_string(), "\"string\"".to_string())]));
        let snap = snapshot();
        let mut c = Catalog::new(&snap, &texts);
        let mut field = wire::header(7).to_vec();
        field.extend_from_slice(&crate::schema::tests_avro_string("hi"));
        // The topic's own subject is named where it holds the ID, else the first by name.
        let d = c.decode(&field, IdSource::Prefix, "orders-value").unwrap();
        assert_eq!(
            (d.json.clone(), d.schema.subject.as_str()),
            (json!("hi"), "orders-value")
        );
        let d = c.decode(&field, IdSource::Prefix, "other-value").unwrap();
        assert_eq!(d.schema.subject, "a-value");
        // The header forms: the ID, and the GUID (Confluent 8); the field is the bare payload.
        let bare = &field[5..];
        let by_id = c
            .decode(bare, IdSource::Header(&wire::header(7)), "x")
            .unwrap();
        assert_eq!(by_id.json, json!("hi"));
        let mut guid = vec![wire::GUID_MAGIC];
        guid.extend_from_slice(&parse_guid(GUID).unwrap());
        assert_eq!(wire::guid_text(&parse_guid(GUID).unwrap()), GUID);
        let by_guid = c.decode(bare, IdSource::Header(&guid), "x").unwrap();
        assert_eq!(by_guid.schema.id, 7);
        guid[16] ^= 1;
        assert!(matches!(
            c.decode(bare, IdSource::Header(&guid), "x"),
            Err(NotDecoded::UnknownGuid(_))
        ));
        assert!(matches!(
            c.decode(bare, IdSource::Header(&[9, 9]), "x"),
            Err(NotDecoded::BadHeader(_))
        ));
        // A schema that cannot be built says why, with its ID.
        let err = c
            .decode(&wire::header(8), IdSource::Prefix, "x")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("names gone v3, which the archive does not hold"),
            "{err}"
        );
        assert_eq!(
            c.decode(&wire::header(9), IdSource::Prefix, "x"),
            Err(NotDecoded::UnknownId(9))
        );
        assert_eq!(
            c.decode(b"abc", IdSource::Prefix, "x"),
            Err(NotDecoded::NotWire)
        );
    }
}
