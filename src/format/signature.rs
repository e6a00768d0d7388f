//! The signature frame (§14): a statement binding an archive's identity and content to a signing
//! key, and a minisign signature over the statement's bytes. Pure codec: the signing and the
//! checking of the signature are the archive layer's (`archive::signing`).
//!
//! The statement is a short text of fixed lines, so that an auditor can read what was signed and
//! check it with the `minisign` tool alone (`minisign -Vm statement -x sig -P KEY`):
//!
//! ```text
//! kar archive signature 1
//! archive-id: 32 hex digits
//! root: 64 hex digits
//! manifest: 64 hex digits
//! created-ms: milliseconds since the Unix epoch (the manifest's created_at_ms)
//! signed-ms: milliseconds since the Unix epoch
//! key-id: 16 upper-case hex digits (minisign's key ID)
//! ```

use serde::{Deserialize, Serialize};

use super::{ArchiveId, FormatError, Hash, hex, parse_hex};

/// The frame kind's code: optional (bit 0x80), so a reader that does not know it skips it.
pub const FRAME_KIND: u8 = 0x90;
const FIRST_LINE: &str = "kar archive signature 1";

/// What a signer states about an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub archive_id: ArchiveId,
    pub root: Hash,
    pub manifest_id: Hash,
    pub created_ms: i64,
    pub signed_ms: i64,
    /// minisign's key number, as stored (8 bytes); printed as the u64 they encode little-endian.
    pub key_id: [u8; 8],
}

/// minisign's spelling of a key number: the little-endian u64, 16 upper-case hex digits.
pub fn key_id_hex(key_id: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*key_id))
}

fn parse_key_id(s: &str) -> Option<[u8; 8]> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().map(u64::to_le_bytes)
}

fn parse_id(s: &str) -> Option<ArchiveId> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(ArchiveId(b))
}

impl Statement {
    /// The exact bytes that are signed.
    pub fn encode(&self) -> String {
        format!(
            "{FIRST_LINE}\narchive-id: {}\nroot: {}\nmanifest: {}\ncreated-ms: {}\nsigned-ms: {}\nkey-id: {}\n",
            self.archive_id.hex(),
            hex(&self.root),
            hex(&self.manifest_id),
            self.created_ms,
            self.signed_ms,
            key_id_hex(&self.key_id),
        )
    }

    /// Parses a statement; anything but the exact form [`Statement::encode`] writes is refused,
    /// so that one statement has one spelling.
    pub fn decode(text: &str, offset: u64) -> Result<Statement, FormatError> {
        let bad = |detail: String| FormatError::Corrupt {
            structure: "signature statement",
            offset,
            detail,
        };
        let mut lines = text.split_inclusive('\n');
        let mut field = |name: &str| -> Result<String, FormatError> {
            let line = lines
                .next()
                .ok_or_else(|| bad(format!("it ends before its {name} line")))?;
            let value = line
                .strip_suffix('\n')
                .and_then(|l| l.strip_prefix(name))
                .ok_or_else(|| bad(format!("expected the {name} line, found {line:?}")))?;
            Ok(value.to_string())
        };
        field(FIRST_LINE)?;
        let id = field("archive-id: ")?;
        let root = field("root: ")?;
        let manifest = field("manifest: ")?;
        let created = field("created-ms: ")?;
        let signed = field("signed-ms: ")?;
        let key = field("key-id: ")?;
        let s = Statement {
            archive_id: parse_id(&id).ok_or_else(|| bad(format!("archive ID {id:?}")))?,
            root: parse_hex(&root).ok_or_else(|| bad(format!("root {root:?}")))?,
            manifest_id: parse_hex(&manifest)
                .ok_or_else(|| bad(format!("manifest ID {manifest:?}")))?,
            created_ms: created
                .parse()
                .map_err(|_| bad(format!("created-ms {created:?}")))?,
            signed_ms: signed
                .parse()
                .map_err(|_| bad(format!("signed-ms {signed:?}")))?,
            key_id: parse_key_id(&key).ok_or_else(|| bad(format!("key ID {key:?}")))?,
        };
        if s.encode() != text {
            return Err(bad("it is not in its one canonical spelling".into()));
        }
        Ok(s)
    }
}

/// The content of a signature frame: UTF-8 JSON, members in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDocument {
    /// A minisign signature (the text of a `.minisig` file) over the statement's bytes.
    pub minisig: String,
    /// The signer's minisign public key, base64 as in the second line of a `.pub` file: lets a
    /// reader without the key check that the signature is intact, not who made it.
    pub public_key: String,
    /// [`Statement::encode`]'s text.
    pub statement: String,
}

impl SignatureDocument {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a signature document serialises")
    }

    pub fn decode(raw: &[u8], offset: u64) -> Result<(SignatureDocument, Statement), FormatError> {
        let doc: SignatureDocument =
            serde_json::from_slice(raw).map_err(|e| FormatError::Corrupt {
                structure: "signature frame",
                offset,
                detail: format!("not a signature document: {e}"),
            })?;
        let statement = Statement::decode(&doc.statement, offset)?;
        Ok((doc, statement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Statement {
        Statement {
            archive_id: ArchiveId(*b"kar test vectors"),
            root: [7; 32],
            manifest_id: [9; 32],
            created_ms: 1_700_000_000_000,
            signed_ms: 1_700_000_060_000,
            key_id: [1, 2, 3, 4, 5, 6, 7, 0xf8],
        }
    }

    #[test]
    fn statement_round_trips_and_has_one_spelling() {
        let s = sample();
        let text = s.encode();
        assert!(text.contains("key-id: F807060504030201\n"), "{text}");
        assert_eq!(Statement::decode(&text, 5).unwrap(), s);
        for bad in [
            text.replace("root: 07", "root: 7"),
            text.replace("archive-id: 6b", "archive-id: 6B"),
            text.replace("key-id: F8", "key-id: f8"),
            format!("{text}extra\n"),
            text.trim_end().to_string(),
            text.replace("signed-ms: 1", "signed-ms: +1"),
        ] {
            let e = Statement::decode(&bad, 5).unwrap_err();
            assert!(
                matches!(e, FormatError::Corrupt { offset: 5, .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn document_refuses_unknown_members() {
        let d = SignatureDocument {
            minisig: "m".into(),
            public_key: "p".into(),
            statement: sample().encode(),
        };
        let raw = d.encode();
        assert_eq!(SignatureDocument::decode(&raw, 0).unwrap().0, d);
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["x"] = 1.into();
        assert!(SignatureDocument::decode(v.to_string().as_bytes(), 0).is_err());
    }
}
