//! One record as `kar cat` prints it: a JSON object whose key and value are decoded with the
//! archived schemas where they can be, and otherwise shown as text (or base64) with the reason.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};

use crate::format::chunk::{Record, TimestampType};
use crate::registry::wire;
use crate::schema::{Catalog, IdSource, NotDecoded, SchemaUsed, text_or_base64};

/// `key` or `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Key,
    Value,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Key => "key",
            Field::Value => "value",
        }
    }

    /// The Confluent 8 header that carries this field's schema ID, when it is not in the payload.
    pub fn id_header(self) -> &'static str {
        match self {
            Field::Key => wire::KEY_SCHEMA_ID_HEADER,
            Field::Value => wire::VALUE_SCHEMA_ID_HEADER,
        }
    }

    fn bytes<'a>(self, r: &Record<'a>) -> Option<&'a [u8]> {
        match self {
            Field::Key => r.key,
            Field::Value => r.value,
        }
    }
}

/// Where the schema ID of a record's field is: the last schema-ID header for it (Confluent's
/// deserializers read the last), else the field's prefix.
pub fn id_source<'a>(r: &Record<'a>, f: Field) -> IdSource<'a> {
    crate::schema::id_source(r.headers.iter(), f.id_header())
}

fn timestamp_type(t: TimestampType) -> &'static str {
    match t {
        TimestampType::NotAvailable => "NoTimestampType",
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

fn header_json(name: &str, value: Option<&[u8]>) -> Value {
    let Some(v) = value else {
        return json!({"name": name, "value": null});
    };
    if name == wire::KEY_SCHEMA_ID_HEADER || name == wire::VALUE_SCHEMA_ID_HEADER {
        if let Some(id) = wire::schema_id(v) {
            return json!({"name": name, "value": {"schema_id": id}});
        }
        if let Some(g) = wire::schema_guid(v) {
            return json!({"name": name, "value": {"schema_guid": wire::guid_text(&g)}});
        }
    }
    match text_or_base64(v) {
        (t, false) => json!({"name": name, "value": t}),
        (b, true) => json!({"name": name, "value": b, "base64": true}),
    }
}

/// A key or value as printed: its datum, or its bytes as text with why it was not decoded.
struct FieldOut {
    json: Value,
    schema: Option<SchemaUsed>,
    base64: bool,
    reason: Option<String>,
}

fn field_out(cat: &mut Catalog<'_>, r: &Record<'_>, f: Field, topic: &str) -> (FieldOut, bool) {
    let Some(bytes) = f.bytes(r) else {
        return (
            FieldOut {
                json: Value::Null,
                schema: None,
                base64: false,
                reason: None,
            },
            false,
        );
    };
    match cat.decode(bytes, id_source(r, f), &format!("{topic}-{}", f.name())) {
        Ok(d) => (
            FieldOut {
                json: d.json,
                schema: Some(d.schema),
                base64: false,
                reason: None,
            },
            false,
        ),
        Err(why) => {
            let (text, base64) = text_or_base64(bytes);
            let failed = !matches!(why, NotDecoded::NotWire);
            (
                FieldOut {
                    json: Value::String(text),
                    schema: None,
                    base64,
                    reason: Some(why.to_string()),
                },
                failed,
            )
        }
    }
}

/// One record as printed; its members in a fixed order (topic, partition, offset first).
pub struct CatRecord<'a> {
    topic: &'a str,
    partition: i32,
    r: &'a Record<'a>,
    headers: Vec<Value>,
    key: FieldOut,
    value: FieldOut,
}

impl CatRecord<'_> {
    fn put_field<M: SerializeMap>(m: &mut M, name: &str, f: &FieldOut) -> Result<(), M::Error> {
        m.serialize_entry(name, &f.json)?;
        if let Some(s) = &f.schema {
            m.serialize_entry(&format!("{name}_schema"), s)?;
        }
        if f.base64 {
            m.serialize_entry(&format!("{name}_base64"), &true)?;
        }
        if let Some(why) = &f.reason {
            m.serialize_entry(&format!("{name}_decoded"), &false)?;
            m.serialize_entry(&format!("{name}_reason"), why)?;
        }
        Ok(())
    }
}

impl Serialize for CatRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.r;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("topic", self.topic)?;
        m.serialize_entry("partition", &self.partition)?;
        m.serialize_entry("offset", &r.offset)?;
        m.serialize_entry("timestamp", &r.timestamp)?;
        m.serialize_entry("timestamp_type", timestamp_type(r.timestamp_type))?;
        if r.timestamp_type != TimestampType::NotAvailable {
            m.serialize_entry("time", &crate::archive::inspect::utc(r.timestamp))?;
        }
        m.serialize_entry("headers", &self.headers)?;
        Self::put_field(&mut m, "key", &self.key)?;
        Self::put_field(&mut m, "value", &self.value)?;
        m.end()
    }
}

/// One record to print, and how many of its fields carried a schema ID that did not decode.
pub fn decode<'a>(
    cat: &mut Catalog<'_>,
    topic: &'a str,
    partition: i32,
    r: &'a Record<'a>,
) -> (CatRecord<'a>, u32) {
    let (key, key_failed) = field_out(cat, r, Field::Key, topic);
    let (value, value_failed) = field_out(cat, r, Field::Value, topic);
    let rec = CatRecord {
        topic,
        partition,
        r,
        headers: r.headers.iter().map(|(n, v)| header_json(n, v)).collect(),
        key,
        value,
    };
    (rec, u32::from(key_failed) + u32::from(value_failed))
}
