//! Avro: a schema and the named types its references bring, and a datum decoded to JSON as Avro's
//! JSON encoding shows it, without union wrappers: a record an object, an enum its symbol, bytes
//! and fixed as ISO-8859-1 strings (each byte one code point), a union its branch's value; a
//! logical type as the type it annotates (a date an int, a decimal its bytes, a UUID its string).

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::Value as Json;

pub(super) struct Compiled {
    schema: Schema,
    named: Vec<Schema>,
}

/// Parses `text` with the texts of its references (direct and transitive), which define the named
/// types it uses.
pub(super) fn compile(text: &str, references: &[String]) -> Result<Compiled, String> {
    if references.is_empty() {
        return Schema::parse_str(text)
            .map(|schema| Compiled {
                schema,
                named: Vec::new(),
            })
            .map_err(|e| e.to_string());
    }
    let (schema, named) =
        Schema::parse_str_with_list(text, references).map_err(|e| e.to_string())?;
    Ok(Compiled { schema, named })
}

/// Decodes one datum; on failure, the byte of `payload` where the reader stood and why.
pub(super) fn decode(c: &Compiled, payload: &[u8]) -> Result<Json, (usize, String)> {
    let mut reader = payload;
    let v = apache_avro::reader::datum::GenericDatumReader::builder(&c.schema)
        .writer_schemata(c.named.iter().collect())
        .and_then(|b| b.build())
        .and_then(|r| r.read_value(&mut reader))
        .map_err(|e| (payload.len() - reader.len(), e.to_string()))?;
    Ok(to_json(v))
}

fn latin1(b: &[u8]) -> Json {
    Json::String(b.iter().map(|&c| char::from(c)).collect())
}

fn float(f: f64) -> Json {
    // JSON has no NaN or infinity; Avro's JSON encoding spells them as strings.
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(f.to_string()))
}

fn to_json(v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Json::from(i),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => Json::from(i),
        Value::Float(f) => float(f64::from(f)),
        Value::Double(f) => float(f),
        Value::Bytes(b) | Value::Fixed(_, b) => latin1(&b),
        Value::String(s) | Value::Enum(_, s) => Json::String(s),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Decimal(d) => match Vec::<u8>::try_from(&d) {
            Ok(b) => latin1(&b),
            Err(e) => Json::String(format!("(decimal: {e})")),
        },
        Value::BigDecimal(d) => Json::String(d.to_string()),
        Value::Duration(d) => latin1(&<[u8; 12]>::from(d)),
        Value::Union(_, inner) => to_json(*inner),
        Value::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Value::Record(fields) => {
            Json::Object(fields.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_a_referenced_type_decodes_to_an_object() {
        let address = r#"{"type":"record","name":"Address","namespace":"shop","fields":[{"name":"city","type":"string"}]}"#;
        let order = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
            {"name":"id","type":"long"},
            {"name":"to","type":"Address"},
            {"name":"note","type":["null","string"]},
            {"name":"raw","type":"bytes"}]}"#;
        let c = compile(order, &[address.to_string()]).unwrap();
        // id 4711 (zig-zag varint 9422), "Köln" (5 bytes), union branch 1 "hi", bytes [0, 255].
        let mut b = vec![0xce, 0x49, 10];
        b.extend_from_slice("Köln".as_bytes());
        b.extend_from_slice(&[2, 4, b'h', b'i', 4, 0, 255]);
        let v = decode(&c, &b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": 4711, "to": {"city": "Köln"}, "note": "hi", "raw": "\u{0}\u{ff}"})
        );
        let err = decode(&c, &b[..4]).unwrap_err();
        assert_eq!(err.0, 4, "ran out at the end of the field: {err:?}");
    }
}
