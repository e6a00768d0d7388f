//! Protobuf: the archived `.proto` text and the texts of its references compiled in memory by
//! `protox` (Google's well-known types built in, as Confluent's serializers assume them), a message
//! found by Confluent's message indexes, decoded by `prost-reflect` and shown in the proto3 JSON
//! mapping (lowerCamelCase names, 64-bit integers as strings, bytes as base64, enums by name,
//! fields at their default left out), as Protobuf's own `MessageToJson` shows it.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

pub(super) struct Compiled {
    pool: DescriptorPool,
    file: String,
}

/// The schema's own file name: one no import can name (an import is a reference's name).
const MAIN: &str = "kar-archived-schema.proto";

struct InMemory(HashMap<String, String>);

impl FileResolver for InMemory {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(text) => File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles `text` with its references (import name → text, direct and transitive).
pub(super) fn compile(text: &str, references: &[(String, String)]) -> Result<Compiled, String> {
    let mut files: HashMap<String, String> = references.iter().cloned().collect();
    files.insert(MAIN.to_string(), text.to_string());
    let mut chain = ChainFileResolver::new();
    chain.add(InMemory(files));
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.open_file(MAIN).map_err(|e| e.to_string())?;
    Ok(Compiled {
        pool: compiler.descriptor_pool(),
        file: MAIN.to_string(),
    })
}

/// The message the indexes name: the file's top-level message at the first, then nested messages
/// (in declaration order) at the rest.
fn message(c: &Compiled, indexes: &[i32]) -> Result<MessageDescriptor, String> {
    let file = c
        .pool
        .get_file_by_name(&c.file)
        .ok_or_else(|| "the compiled schema has no file".to_string())?;
    let pick = |mut it: Box<dyn Iterator<Item = MessageDescriptor>>, i: i32, what: &str| {
        usize::try_from(i)
            .ok()
            .and_then(|i| it.nth(i))
            .ok_or_else(|| format!("message index {i} is out of range of the {what}"))
    };
    let (first, rest) = indexes
        .split_first()
        .ok_or_else(|| "no message index".to_string())?;
    let mut m = pick(Box::new(file.messages()), *first, "file's messages")?;
    for i in rest {
        let what = format!("messages nested in {}", m.full_name());
        m = pick(Box::new(declared_children(&m).into_iter()), *i, &what)?;
    }
    Ok(m)
}

/// The messages declared inside `m`, in order, as Confluent's Java serializers count them (the
/// `.proto` text's message elements): not the map-entry types a compiler makes for `map<>` fields,
/// nor proto2 group types. (Confluent's Python client counts from compiled descriptors, map
/// entries included; kar follows the Java client and the registry.)
fn declared_children(m: &MessageDescriptor) -> Vec<MessageDescriptor> {
    let groups: Vec<String> = m
        .fields()
        .filter(|f| f.is_group())
        .filter_map(|f| f.kind().as_message().map(|g| g.full_name().to_string()))
        .collect();
    m.child_messages()
        .filter(|c| !c.is_map_entry() && !groups.iter().any(|g| g == c.full_name()))
        .collect()
}

/// Decodes `payload` as the message `indexes` name; the message's full name and its JSON.
pub(super) fn decode(
    c: &Compiled,
    indexes: &[i32],
    payload: &[u8],
) -> Result<(String, serde_json::Value), String> {
    let desc = message(c, indexes)?;
    let msg = DynamicMessage::decode(desc.clone(), payload).map_err(|e| e.to_string())?;
    let json = serde_json::to_value(&msg).map_err(|e| e.to_string())?;
    Ok((desc.full_name().to_string(), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_message_with_an_imported_type_decodes() {
        let money = "syntax = \"proto3\";\npackage shop;\nmessage Money { int64 cents = 1; string currency = 2; }\n";
        let order = "syntax = \"proto3\";\npackage shop;\nimport \"money.proto\";\n\
            message Other { string x = 1; }\n\
            message Order { message Line { string sku = 1; shop.Money price = 2; } int64 id = 1; repeated Line lines = 2; }\n";
        let c = compile(order, &[("money.proto".into(), money.into())]).unwrap();
        // Order.Line is [1, 0]: sku "a" (field 1), price {cents 250} (field 2).
        let line = [0x0a, 1, b'a', 0x12, 3, 0x08, 0xfa, 0x01];
        let (name, v) = decode(&c, &[1, 0], &line).unwrap();
        assert_eq!(name, "shop.Order.Line");
        assert_eq!(
            v,
            serde_json::json!({"sku": "a", "price": {"cents": "250"}})
        );
        assert!(
            decode(&c, &[2], &line)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(decode(&c, &[1, 0], &line[..4]).is_err(), "cut short");
    }

    #[test]
    fn map_entries_are_not_counted_as_nested_messages() {
        let text = "syntax = \"proto3\";\npackage m;\n\
            message Outer { map<string, string> labels = 1; message Inner { string x = 1; } }\n";
        let c = compile(text, &[]).unwrap();
        // Confluent's Java serializer writes Inner as [0, 0]: the map's entry type is skipped.
        let (name, v) = decode(&c, &[0, 0], &[0x0a, 1, b'y']).unwrap();
        assert_eq!(name, "m.Outer.Inner");
        assert_eq!(v, serde_json::json!({"x": "y"}));
        assert!(
            decode(&c, &[0, 1], &[]).is_err(),
            "only one declared nested message"
        );
    }
}
