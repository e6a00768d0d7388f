//! Avro: a schema and the named types its references bring, and a datum decoded to JSON as Avro's
//! JSON encoding shows it, without union wrappers: a record an object, an enum its symbol, bytes
//! and fixed as ISO-8859-1 strings (each byte one code point), a union its branch's value; a
//! logical type as the type it annotates (a date an int, a decimal its bytes, a UUID its string).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, Name, ResolvedSchema, UuidSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;

pub(super) struct Compiled {
    schema: Schema,
    named: Vec<Schema>,
    /// An order of `named` and then the schema itself (index `named.len()`) in which each
    /// defines its names before another refers to them: apache-avro resolves a list in order,
    /// and references' texts come in whatever order the registry listed them.
    order: Vec<usize>,
    /// Whether a named type contains itself (a linked list, a tree): its data can nest as deep
    /// as its bytes allow.
    recursive: bool,
}

/// How deep a datum of a recursive schema may nest (records, unions, arrays, maps): the limit
/// serde_json puts on JSON. apache-avro decodes by recursion without a limit of its own, so a
/// crafted record of a few kilobytes would exhaust the stack, an abort rather than an error.
const MAX_DEPTH: usize = 128;

/// Parses `text` with the texts of its references (direct and transitive), which define the named
/// types it uses.
pub(super) fn compile(text: &str, references: &[String]) -> Result<Compiled, String> {
    // A length prefix is believed up to this much (apache-avro allocates before it reads; its
    // default is 512 MiB): more than any Kafka record holds.
    apache_avro::util::max_allocation_bytes(64 << 20);
    let (schema, named) = if references.is_empty() {
        (
            Schema::parse_str(text).map_err(|e| e.to_string())?,
            Vec::new(),
        )
    } else {
        Schema::parse_str_with_list(text, references).map_err(|e| e.to_string())?
    };
    let mut c = Compiled {
        schema,
        named,
        order: Vec::new(),
        recursive: false,
    };
    c.order = resolution_order(&c)?;
    c.recursive = {
        let names = names(&c)?;
        contains_itself(&c.schema, &names, &mut Vec::new())
    };
    Ok(c)
}

type Names<'s> = HashMap<Name, &'s Schema>;

fn all(c: &Compiled) -> Vec<&Schema> {
    c.named.iter().chain(std::iter::once(&c.schema)).collect()
}

/// Resolves the schemas one at a time against the names of those resolved before, taking each
/// round whichever now resolve, until all have: the order they were taken in.
fn resolution_order(c: &Compiled) -> Result<Vec<usize>, String> {
    let all = all(c);
    let mut names: Names<'_> = HashMap::new();
    let (mut order, mut left): (Vec<usize>, Vec<usize>) = (Vec::new(), (0..all.len()).collect());
    while !left.is_empty() {
        let mut last_error = String::new();
        let before = left.len();
        left.retain(|&i| {
            match ResolvedSchema::new_with_known_schemata(vec![all[i]], None, &names) {
                Ok(r) => {
                    let found = r.get_names().clone();
                    names.extend(found);
                    order.push(i);
                    false
                }
                Err(e) => {
                    last_error = e.to_string();
                    true
                }
            }
        });
        if left.len() == before {
            return Err(last_error);
        }
    }
    Ok(order)
}

fn ordered(c: &Compiled) -> Vec<&Schema> {
    let all = all(c);
    c.order.iter().map(|&i| all[i]).collect()
}

fn names(c: &Compiled) -> Result<Names<'_>, String> {
    let resolved = ResolvedSchema::new_with_schemata(ordered(c)).map_err(|e| e.to_string())?;
    Ok(resolved.get_names().clone())
}

/// Whether a named type refers to itself, through `path` (the named types being walked).
fn contains_itself<'s>(s: &'s Schema, names: &Names<'s>, path: &mut Vec<&'s Name>) -> bool {
    let inner = |s: &'s Schema, path: &mut Vec<&'s Name>| contains_itself(s, names, path);
    match s {
        Schema::Ref { name } => {
            path.contains(&name)
                || names.get(name).is_some_and(|t| {
                    path.push(name);
                    let r = inner(t, path);
                    path.pop();
                    r
                })
        }
        Schema::Record(r) => {
            path.push(&r.name);
            let found = r.fields.iter().any(|f| inner(&f.schema, path));
            path.pop();
            found
        }
        Schema::Array(a) => inner(&a.items, path),
        Schema::Map(m) => inner(&m.types, path),
        Schema::Union(u) => u.variants().iter().any(|v| inner(v, path)),
        _ => false,
    }
}

/// The bytes a varint at `*at` takes, read as Avro's zig-zag long; `None` past the end.
fn long(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Some((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    None
}

enum Step<'s> {
    One(&'s Schema, usize),
    /// The items (or, `map`, the entries) left in an array's or map's current block.
    Block(&'s Schema, bool, i64, usize),
}

/// Walks a datum of a recursive schema without building it, to refuse one nesting deeper than
/// [`MAX_DEPTH`] before apache-avro recurses into it. Bytes that run out end the walk: what they
/// hold is then no deeper than what was walked, and the decoder says what is wrong with them.
fn check_depth(c: &Compiled, payload: &[u8]) -> Result<(), (usize, String)> {
    let names = names(c).map_err(|e| (0, e))?;
    let (mut at, mut todo) = (0usize, vec![Step::One(&c.schema, 0)]);
    let skip = |at: &mut usize, n: i64| {
        *at = at.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        *at <= payload.len()
    };
    while let Some(step) = todo.pop() {
        let ok = match step {
            Step::One(_, d) | Step::Block(_, _, _, d) if d > MAX_DEPTH => {
                return Err((
                    at,
                    format!("the datum nests deeper than {MAX_DEPTH} levels"),
                ));
            }
            Step::Block(items, map, left, d) => {
                let left = if left > 0 {
                    Some(left)
                } else {
                    long(payload, &mut at).and_then(|n| match n {
                        0 => None,
                        n if n < 0 => long(payload, &mut at).map(|_| n.saturating_neg()),
                        n => Some(n),
                    })
                };
                if let Some(left) = left {
                    todo.push(Step::Block(items, map, left - 1, d));
                    todo.push(Step::One(items, d));
                    if map {
                        let n = long(payload, &mut at).unwrap_or(i64::MAX);
                        skip(&mut at, n);
                    }
                }
                at <= payload.len()
            }
            Step::One(s, d) => one(s, d, payload, &mut at, &mut todo, &names),
        };
        if !ok {
            return Ok(());
        }
    }
    Ok(())
}

/// Walks one datum of `s` at depth `d`: skips its bytes, or queues what it holds. `false`: the
/// bytes ran out (or name a union branch or type that is not there).
fn one<'s>(
    s: &'s Schema,
    d: usize,
    payload: &[u8],
    at: &mut usize,
    todo: &mut Vec<Step<'s>>,
    names: &Names<'s>,
) -> bool {
    let skip = |at: &mut usize, n: i64| {
        *at = at.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        *at <= payload.len()
    };
    match s {
        Schema::Null => true,
        Schema::Boolean => skip(at, 1),
        Schema::Float => skip(at, 4),
        Schema::Double => skip(at, 8),
        Schema::Int
        | Schema::Long
        | Schema::Enum(_)
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => long(payload, at).is_some(),
        Schema::Bytes
        | Schema::String
        | Schema::BigDecimal
        | Schema::Uuid(UuidSchema::Bytes | UuidSchema::String) => {
            long(payload, at).is_some_and(|n| skip(at, n))
        }
        Schema::Decimal(x) => match &x.inner {
            InnerDecimalSchema::Fixed(f) => skip(at, f.size as i64),
            InnerDecimalSchema::Bytes => long(payload, at).is_some_and(|n| skip(at, n)),
        },
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            skip(at, f.size as i64)
        }
        Schema::Union(u) => {
            match long(payload, at).and_then(|i| u.variants().get(usize::try_from(i).ok()?)) {
                Some(v) => {
                    todo.push(Step::One(v, d + 1));
                    true
                }
                None => false,
            }
        }
        Schema::Array(a) => {
            todo.push(Step::Block(&a.items, false, 0, d + 1));
            true
        }
        Schema::Map(m) => {
            todo.push(Step::Block(&m.types, true, 0, d + 1));
            true
        }
        Schema::Record(r) => {
            todo.extend(r.fields.iter().rev().map(|f| Step::One(&f.schema, d + 1)));
            true
        }
        Schema::Ref { name } => match names.get(name) {
            Some(t) => {
                todo.push(Step::One(t, d));
                true
            }
            None => false,
        },
    }
}

/// Decodes one datum; on failure, the byte of `payload` where the reader stood and why.
pub(super) fn decode(c: &Compiled, payload: &[u8]) -> Result<Json, (usize, String)> {
    if !c.recursive {
        return decode_here(c, payload);
    }
    check_depth(c, payload)?;
    // Even within the limit, apache-avro's frames are large (tens of kilobytes a level in a debug
    // build): a recursive datum is decoded on a thread whose stack holds MAX_DEPTH of them.
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("kar-avro-deep".into())
            .stack_size(64 << 20)
            .spawn_scoped(s, || decode_here(c, payload))
            .map_err(|e| (0, format!("no thread to decode a recursive datum on: {e}")))?
            .join()
            .unwrap_or_else(|_| Err((0, "the Avro decoder failed".into())))
    })
}

fn decode_here(c: &Compiled, payload: &[u8]) -> Result<Json, (usize, String)> {
    let mut reader = payload;
    let v = apache_avro::reader::datum::GenericDatumReader::builder(&c.schema)
        .writer_schemata(ordered(c))
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
        assert!(!c.recursive);
    }

    #[test]
    fn a_recursive_datum_nesting_too_deep_is_refused_not_a_crash() {
        let list = r#"{"type":"record","name":"Node","fields":[
            {"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}"#;
        let c = compile(list, &[]).unwrap();
        assert!(c.recursive);
        // A list of n nodes: v (zig-zag 1 = 2), then the union's branch 1 (2), ..., then 0 (null).
        let nodes = |n: usize| {
            let mut b = Vec::new();
            for i in 0..n {
                b.extend_from_slice(&[2, if i + 1 < n { 2 } else { 0 }]);
            }
            b
        };
        let v = decode(&c, &nodes(40)).unwrap();
        assert_eq!(v["next"]["next"]["v"], 1);
        // A crafted payload a few kilobytes long would recurse once a byte pair: refused.
        let err = decode(&c, &nodes(20_000)).unwrap_err();
        assert!(err.1.contains("nests deeper than 128"), "{err:?}");
        // Through an array, and a map, too.
        let tree = r#"{"type":"record","name":"T","fields":[{"name":"kids","type":{"type":"array","items":"T"}}]}"#;
        let c = compile(tree, &[]).unwrap();
        let deep: Vec<u8> = std::iter::repeat_n(2u8, 5_000).collect();
        assert!(decode(&c, &deep).unwrap_err().1.contains("nests deeper"));
        assert_eq!(
            decode(&c, &[2, 0, 0]).unwrap(),
            serde_json::json!({"kids": [{"kids": []}]})
        );
    }
}
