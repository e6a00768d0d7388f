//! Keys and values decoded offline with the schemas an archive holds: the Confluent wire format
//! (magic byte, schema ID, payload; or the ID in a `__key_schema_id` / `__value_schema_id` header)
//! read against the archived Schema Registry state, as Confluent's deserializers read it against a
//! live registry. Avro by the `apache-avro` crate (named types from references resolved), Protobuf
//! by `protox` (the archived `.proto` texts and their references compiled in memory) and
//! `prost-reflect`, JSON Schema as the JSON payload it is.
//!
//! A field that does not decode is never an error of the caller's: it comes back as
//! [`NotDecoded`], saying why (not wire format, an ID the archive does not hold, a schema that does
//! not compile, a payload that does not decode at byte N).

mod avro;
mod catalog;
mod protobuf;

pub use catalog::{Catalog, SchemaTexts};

use serde::Serialize;

/// Which schema a field was decoded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaUsed {
    pub id: u32,
    pub subject: String,
    pub version: i32,
    #[serde(rename = "type")]
    pub schema_type: String,
}

/// A field decoded with an archived schema: the datum as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub json: serde_json::Value,
    pub schema: SchemaUsed,
}

/// Why a field was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDecoded {
    #[error("not in the Confluent wire format (no 0x00 magic byte and schema ID)")]
    NotWire,
    #[error("schema ID {0} is not in the archive")]
    UnknownId(u32),
    #[error("schema GUID {0} is not in the archive")]
    UnknownGuid(String),
    #[error("the schema ID header is malformed: {0}")]
    BadHeader(String),
    #[error("schema ID {id} ({schema_type}) cannot be used: {detail}")]
    Unusable {
        id: u32,
        schema_type: String,
        detail: String,
    },
    /// `at`: the byte of the field (counting the wire-format prefix) where decoding stopped.
    #[error("does not decode with schema ID {id} at byte {at}: {detail}")]
    Payload { id: u32, at: usize, detail: String },
}

/// Where a field's schema ID came from.
#[derive(Debug, Clone, Copy)]
pub enum IdSource<'a> {
    /// The field's own prefix: 0x00, the 4-byte ID, then (Protobuf) the message indexes.
    Prefix,
    /// A `__key_schema_id` / `__value_schema_id` header's value (Confluent 8): 0x00 and the ID or
    /// 0x01 and a 16-byte GUID, then (Protobuf) the message indexes; the field is the bare payload.
    Header(&'a [u8]),
}

/// Where a key's or value's schema ID is, given its record's headers: the last `header` (the
/// field's `__key_schema_id` / `__value_schema_id`) with a value, as Confluent's deserializers
/// read it, else the field's prefix.
pub fn id_source<'a>(
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    header: &str,
) -> IdSource<'a> {
    headers
        .filter(|(name, _)| *name == header)
        .filter_map(|(_, v)| v)
        .last()
        .map_or(IdSource::Prefix, IdSource::Header)
}

/// Reads a Protobuf message-index list as Confluent's serializers write it: a zig-zag varint
/// count, then that many zig-zag varint indexes; a count of 0 stands for `[0]`. Returns the
/// indexes and the bytes read.
pub fn message_indexes(b: &[u8]) -> Result<(Vec<i32>, usize), String> {
    let mut pos = 0;
    let count = zigzag_varint(b, &mut pos)?;
    if count == 0 {
        return Ok((vec![0], pos));
    }
    if count < 0 || count as usize > b.len() {
        return Err(format!("message index count {count} is impossible"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        out.push(zigzag_varint(b, &mut pos)?);
    }
    Ok((out, pos))
}

fn zigzag_varint(b: &[u8], pos: &mut usize) -> Result<i32, String> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b
            .get(*pos)
            .ok_or_else(|| format!("message indexes cut short at byte {pos}"))?;
        *pos += 1;
        v |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((v >> 1) as i32) ^ -((v & 1) as i32));
        }
    }
    Err(format!(
        "a message index varint runs past 5 bytes at byte {pos}"
    ))
}

/// A field's bytes as text: UTF-8 when valid, else base64. The flag says which.
pub fn text_or_base64(b: &[u8]) -> (String, bool) {
    use base64::Engine;
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(b), true),
    }
}

/// Avro's binary encoding of a string, for the tests.
#[cfg(test)]
pub(crate) fn tests_avro_string(s: &str) -> Vec<u8> {
    let mut out = vec![(s.len() as u8) << 1];
    out.extend_from_slice(s.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_indexes_as_confluent_writes_them() {
        // [0] is written as the single byte 0.
        assert_eq!(message_indexes(&[0, 0xaa]).unwrap(), (vec![0], 1));
        // [1]: count 1 (zig-zag 2), index 1 (zig-zag 2).
        assert_eq!(message_indexes(&[2, 2]).unwrap(), (vec![1], 2));
        // [0, 2]: count 2, indexes 0 and 2.
        assert_eq!(message_indexes(&[4, 0, 4]).unwrap(), (vec![0, 2], 3));
        // 200: zig-zag 400 = 0x190, two varint bytes.
        assert_eq!(message_indexes(&[2, 0x90, 0x03]).unwrap(), (vec![200], 3));
        assert!(message_indexes(&[4, 0]).is_err(), "cut short");
        assert!(message_indexes(&[]).is_err());
        assert!(message_indexes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
