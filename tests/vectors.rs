//! The test vectors in `format-spec/vectors/`: each committed archive decodes to exactly the
//! contents its `input.json` describes, verifies, and has the chunk IDs and root hash in its
//! `expected.json`; and our writer, given the same input, produces the same chunk IDs and root.
//!
//! `KAR_WRITE_VECTORS=1 cargo test vectors` rewrites the vector files from `input.json` (only when
//! the format changes on purpose: the spec changes in the same commit).

use std::path::{Path, PathBuf};

use kar::archive::verify::{VerifyLevel, verify};
use kar::archive::{Archive, ArchiveWriter, WriterOptions};
use kar::format::chunk::{ChunkEncoder, SealedChunk, TimestampType};
use kar::format::hex;
use kar::format::manifest::ArchiveStatus;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Bytes {
    Text { text: String },
    Hex { hex: String },
}

impl Bytes {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Bytes::Text { text } => text.as_bytes().to_vec(),
            Bytes::Hex { hex } => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    description: String,
    created_at_ms: i64,
    chunk_target_bytes: usize,
    partitions: Vec<PartitionIn>,
    #[serde(default)]
    blobs: Vec<Bytes>,
    #[serde(default)]
    metadata: Vec<serde_json::Value>,
    /// schema ID → index into `blobs`
    #[serde(default)]
    schemas: Vec<(u32, usize)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionIn {
    topic: String,
    partition: i32,
    start_offset: i64,
    end_offset: i64,
    /// `"none"` stores this partition's chunks uncompressed (frame compression 0); default zstd.
    #[serde(default)]
    compression: Option<String>,
    records: Vec<RecordIn>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    offset: i64,
    timestamp: i64,
    timestamp_type: TimestampType,
    key: Option<Bytes>,
    value: Option<Bytes>,
    #[serde(default)]
    headers: Vec<(String, Option<Bytes>)>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Expected {
    root_hash: String,
    manifest_id: String,
    /// (topic, partition, first offset, chunk ID), in index order.
    chunk_ids: Vec<(String, i32, i64, String)>,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors")
}

/// Replaces every string "blob:N" in a metadata document by the content ID of `blobs[N]`.
fn resolve_blobs(v: &serde_json::Value, input: &Input) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.starts_with("blob:") => {
            let i: usize = s[5..].parse().unwrap();
            Value::String(hex(blake3::hash(&input.blobs[i].bytes()).as_bytes()))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve_blobs(x, input)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), resolve_blobs(x, input)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The fixed file key of the encrypted vectors (§15), and its envelope: an age file made once by
/// the age tool for `encryption/identity.txt` (a test key, public here on purpose).
const FILE_KEY: &[u8; 32] = b"kar test vectors: the file key K";
const NONCE_PREFIX: &[u8; 16] = b"kar test nonces!";

fn sealing() -> std::sync::Arc<kar::archive::crypt::Sealing> {
    use kar::format::crypt::{FileKey, FrameKeys};
    let envelope = std::fs::read(vectors_dir().join("encryption/envelope.age")).unwrap();
    std::sync::Arc::new(kar::archive::crypt::Sealing {
        keys: std::sync::Arc::new(FrameKeys::derive(&FileKey(*FILE_KEY))),
        nonce_prefix: Some(*NONCE_PREFIX),
        envelopes: vec![envelope],
    })
}

fn unlock() -> kar::archive::crypt::Unlock {
    let mut u = kar::archive::crypt::Unlock::default();
    u.add_identity_file(&vectors_dir().join("encryption/identity.txt"))
        .unwrap();
    u
}

fn write_vector(
    input: &Input,
    sealing: Option<std::sync::Arc<kar::archive::crypt::Sealing>>,
) -> Vec<u8> {
    write_vector_as(input, sealing, None)
}

fn write_vector_as(
    input: &Input,
    sealing: Option<std::sync::Arc<kar::archive::crypt::Sealing>>,
    chain: Option<kar::archive::writer::ChainLink>,
) -> Vec<u8> {
    let member = chain.is_some();
    let opts = WriterOptions {
        chunk_target_bytes: input.chunk_target_bytes,
        zstd_level: 3,
        created_at_ms: input.created_at_ms,
        writer: "kar test vectors".into(),
        // A member is another archive than its parent: its own ID.
        archive_id: Some(kar::format::ArchiveId(if member {
            *b"kar test member!"
        } else {
            *b"kar test vectors"
        })),
        signer: None,
        sealing,
        chain,
    };
    let mut w = ArchiveWriter::new(Vec::new(), "vector", opts).unwrap();
    let blob_ids: Vec<_> = input
        .blobs
        .iter()
        .map(|b| w.add_blob(&b.bytes()).unwrap())
        .collect();
    for (id, i) in &input.schemas {
        w.index_schema(*id, blob_ids[*i]);
    }
    for m in &input.metadata {
        let kind = m["kind"].as_str().expect("metadata has a kind");
        w.add_metadata(kind, &serde_json::to_vec(&resolve_blobs(m, input)).unwrap())
            .unwrap();
    }
    for p in &input.partitions {
        w.declare_partition(&p.topic, p.partition, p.start_offset, p.end_offset);
        let uncompressed = match p.compression.as_deref() {
            None | Some("zstd") => false,
            Some("none") => true,
            Some(other) => panic!("unknown compression {other:?} in input.json"),
        };
        // Chunks close as the writer closes them: once their records reach the target size.
        let mut enc: Option<ChunkEncoder> = None;
        let mut from = p.start_offset;
        for r in &p.records {
            let headers: Vec<(String, Option<Vec<u8>>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(Bytes::bytes)))
                .collect();
            let (key, value) = (
                r.key.as_ref().map(Bytes::bytes),
                r.value.as_ref().map(Bytes::bytes),
            );
            let headers = headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
            if !uncompressed {
                w.append(
                    &p.topic,
                    p.partition,
                    r.offset,
                    r.timestamp,
                    r.timestamp_type,
                    key.as_deref(),
                    value.as_deref(),
                    headers,
                )
                .unwrap();
                continue;
            }
            // As the writer does: a full chunk is closed when the next record comes, each
            // chunk's coverage starting where the previous one's ended.
            if enc
                .as_ref()
                .is_some_and(|e| e.encoded_len() >= input.chunk_target_bytes)
            {
                let e = enc.take().unwrap();
                let (_, last) = e.offsets();
                let (h, raw) = e.finish(from..last + 1).unwrap();
                from = last + 1;
                write_plain_chunk(&mut w, h, raw);
            }
            let e = enc.get_or_insert_with(|| ChunkEncoder::new(&p.topic, p.partition).unwrap());
            e.push(
                r.offset,
                r.timestamp,
                r.timestamp_type,
                key.as_deref(),
                value.as_deref(),
                headers,
            )
            .unwrap();
        }
        if let Some(e) = enc.take() {
            let (_, last) = e.offsets();
            let (h, raw) = e.finish(from..p.end_offset.max(last + 1)).unwrap();
            write_plain_chunk(&mut w, h, raw);
        }
        w.finish_partition(&p.topic, p.partition).unwrap();
    }
    if member {
        let first = &input.partitions[0];
        w.add_change(kar::format::manifest::ChainChange {
            kind: kar::format::manifest::ChangeKind::PartitionsAdded,
            topic: first.topic.clone(),
            partition: Some(first.partition),
            from: None,
            to: None,
            detail: "a test vector's change".into(),
        });
        if let Some(last) = first.records.last() {
            w.set_lineage(
                &first.topic,
                first.partition,
                kar::format::manifest::Lineage {
                    offset: Some(last.offset),
                    timestamp: Some(last.timestamp),
                    digest: Some(hex(&kar::format::manifest::lineage_digest(
                        last.key.as_ref().map(Bytes::bytes).as_deref(),
                        last.value.as_ref().map(Bytes::bytes).as_deref(),
                    ))),
                    restarted: false,
                },
            );
        }
    }
    w.finish(ArchiveStatus::Complete, vec![]).unwrap().0
}

/// A chunk stored as it is (compression 0), sealed when the archive is encrypted.
fn write_plain_chunk(
    w: &mut ArchiveWriter<Vec<u8>>,
    h: kar::format::chunk::ChunkHeader,
    raw: Vec<u8>,
) {
    let c = match w.sealer() {
        Some(s) => SealedChunk::uncompressed(h, raw.clone()).sealed(&raw, s),
        None => SealedChunk::uncompressed(h, raw),
    };
    w.write_chunk(c).unwrap();
}

fn expected_of(a: &Archive) -> Expected {
    let ix = a.index_content().unwrap();
    let mut chunks = ix.chunks.clone();
    chunks.sort_by(|a, b| {
        (&a.topic, a.partition, a.first_offset).cmp(&(&b.topic, b.partition, b.first_offset))
    });
    Expected {
        root_hash: hex(&a.root()),
        manifest_id: hex(a.manifest_id()),
        chunk_ids: chunks
            .iter()
            .map(|c| {
                (
                    c.topic.clone(),
                    c.partition,
                    c.first_offset,
                    hex(&c.chunk_id),
                )
            })
            .collect(),
    }
}

fn check_contents(a: &Archive, input: &Input, name: &str) {
    for p in &input.partitions {
        let mut got = Vec::new();
        a.for_each_record(&p.topic, p.partition, |r| {
            got.push(RecordIn {
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type: r.timestamp_type,
                key: r.key.map(|k| Bytes::Hex {
                    hex: k.iter().map(|b| format!("{b:02x}")).collect(),
                }),
                value: r.value.map(|k| Bytes::Hex {
                    hex: k.iter().map(|b| format!("{b:02x}")).collect(),
                }),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            v.map(|v| Bytes::Hex {
                                hex: v.iter().map(|b| format!("{b:02x}")).collect(),
                            }),
                        )
                    })
                    .collect(),
            })
        })
        .unwrap();
        let norm = |r: &RecordIn| {
            (
                r.offset,
                r.timestamp,
                r.timestamp_type,
                r.key.as_ref().map(Bytes::bytes),
                r.value.as_ref().map(Bytes::bytes),
                r.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_ref().map(Bytes::bytes)))
                    .collect::<Vec<_>>(),
            )
        };
        let want: Vec<_> = p.records.iter().map(norm).collect();
        let got: Vec<_> = got.iter().map(norm).collect();
        assert_eq!(got, want, "{name}: records of {}/{}", p.topic, p.partition);
        let e = a
            .manifest()
            .partition(&p.topic, p.partition)
            .unwrap_or_else(|| panic!("{name}: {}/{} not in manifest", p.topic, p.partition));
        assert_eq!(
            (e.start_offset, e.end_offset, e.complete),
            (Some(p.start_offset), Some(p.end_offset), true)
        );
    }
    for (id, i) in &input.schemas {
        let blob = a
            .schema_blob(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: schema {id} not indexed"));
        assert_eq!(
            a.read_content(&blob).unwrap(),
            input.blobs[*i].bytes(),
            "{name}: schema {id}"
        );
    }
    assert_eq!(a.manifest().metadata.len(), input.metadata.len());
    for (m, want) in a.manifest().metadata.iter().zip(&input.metadata) {
        let id = kar::format::parse_hex(&m.id).unwrap();
        let got: serde_json::Value = serde_json::from_slice(&a.read_content(&id).unwrap()).unwrap();
        assert_eq!(
            got,
            resolve_blobs(want, input),
            "{name}: metadata {}",
            m.kind
        );
    }
    assert_eq!(a.manifest().blobs as usize, {
        let mut b: Vec<Vec<u8>> = input.blobs.iter().map(Bytes::bytes).collect();
        b.sort();
        b.dedup();
        b.len()
    });
}

#[test]
fn vectors_decode_verify_and_are_reproduced_by_the_writer() {
    let regenerate = std::env::var("KAR_WRITE_VECTORS").is_ok_and(|v| v == "1");
    let mut names: Vec<_> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("input.json").exists())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "vectors: {names:?}");
    for name in names {
        let dir = vectors_dir().join(&name);
        let input: Input =
            serde_json::from_slice(&std::fs::read(dir.join("input.json")).unwrap()).unwrap();
        assert!(!input.description.is_empty());
        let fresh = write_vector(&input, None);
        let fresh_archive =
            Archive::from_source(kar::archive::Source::Owned(fresh.clone()), &name).unwrap();
        if regenerate {
            std::fs::write(dir.join("archive.kar"), &fresh).unwrap();
            let e = expected_of(&fresh_archive);
            std::fs::write(
                dir.join("expected.json"),
                serde_json::to_string_pretty(&e).unwrap() + "\n",
            )
            .unwrap();
            std::fs::write(dir.join("dump.txt"), kar::archive::dump::dump(&fresh)).unwrap();
        }
        let expected: Expected =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();

        // Our writer reproduces the chunk IDs and the root hash (not necessarily the bytes: zstd
        // output may differ between versions).
        assert_eq!(
            expected_of(&fresh_archive),
            expected,
            "{name}: writer output differs from the vector"
        );

        // The committed file decodes to the input and verifies.
        let path = dir.join("archive.kar");
        let report = verify(&path, VerifyLevel::Full).unwrap();
        assert!(report.ok, "{name}: {:?}", report.problems);
        assert_eq!(
            report.root_hash.as_deref(),
            Some(expected.root_hash.as_str())
        );
        let committed = Archive::open(&path).unwrap();
        assert_eq!(
            expected_of(&committed),
            expected,
            "{name}: committed archive"
        );
        check_contents(&committed, &input, &name);

        // The 2.1 file of the same input, kept from before 3.0, still reads: it verifies,
        // decodes to the same input and has its own IDs (its manifest says 2.1, so its root is
        // another).
        let old = dir.join("archive-2.1.kar");
        let report = verify(&old, VerifyLevel::Full).unwrap();
        assert!(report.ok, "{name} 2.1: {:?}", report.problems);
        assert_eq!(report.format_version.as_deref(), Some("2.1"));
        let old = Archive::open(&old).unwrap();
        assert_eq!(old.id(), None);
        let old_expected: Expected =
            serde_json::from_slice(&std::fs::read(dir.join("expected-2.1.json")).unwrap()).unwrap();
        assert_eq!(expected_of(&old), old_expected, "{name}: 2.1 archive");
        assert_eq!(
            old_expected.chunk_ids, expected.chunk_ids,
            "{name}: chunk IDs"
        );
        check_contents(&old, &input, &name);

        check_encrypted(&dir, &name, &input, &expected, regenerate);
        check_member(&dir, &name, &input, &committed, regenerate);
    }
}

/// The same input as a chain member (§16) of `archive.kar`: 5.0, linked to it by ID and root,
/// every blob inherited (named, not stored), one change and one lineage anchor.
fn check_member(dir: &Path, name: &str, input: &Input, parent: &Archive, regenerate: bool) {
    let stored: std::collections::HashSet<_> = parent
        .index_content()
        .unwrap()
        .content
        .into_keys()
        .collect();
    let link = kar::archive::writer::ChainLink {
        parent: kar::format::manifest::ParentRef {
            archive_id: parent.id().unwrap().hex(),
            root: hex(&parent.root()),
            created_at_ms: input.created_at_ms,
            depth: 1,
        },
        stored_below: std::sync::Arc::new(stored),
    };
    let fresh = write_vector_as(input, None, Some(link.clone()));
    let fresh_archive =
        Archive::from_source(kar::archive::Source::Owned(fresh.clone()), name).unwrap();
    if regenerate {
        std::fs::write(dir.join("archive-5.0.kar"), &fresh).unwrap();
        let e = expected_of(&fresh_archive);
        std::fs::write(
            dir.join("expected-5.0.json"),
            serde_json::to_string_pretty(&e).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Expected =
        serde_json::from_slice(&std::fs::read(dir.join("expected-5.0.json")).unwrap()).unwrap();
    assert_eq!(expected_of(&fresh_archive), expected, "{name} 5.0: writer");
    let path = dir.join("archive-5.0.kar");
    let report = verify(&path, VerifyLevel::Full).unwrap();
    assert!(report.ok, "{name} 5.0: {:?}", report.problems);
    assert_eq!(report.format_version.as_deref(), Some("5.0"));
    let a = Archive::open(&path).unwrap();
    assert_eq!(expected_of(&a), expected, "{name} 5.0: committed");
    assert!(a.header().is_chain_member() && !a.header().is_encrypted());
    let m = a.manifest();
    assert_eq!(m.parent.as_ref(), Some(&link.parent));
    let mut blobs: Vec<String> = input
        .blobs
        .iter()
        .map(|b| hex(&blake3::hash(&b.bytes()).into()))
        .collect();
    blobs.sort();
    blobs.dedup();
    assert_eq!(m.inherited_blobs, blobs, "{name} 5.0: every blob inherited");
    assert_eq!(m.blobs, 0);
    let first = &input.partitions[0];
    assert_eq!(m.changes.len(), 1);
    let c = &m.changes[0];
    assert_eq!(
        (c.kind, c.topic.as_str(), c.partition),
        (
            kar::format::manifest::ChangeKind::PartitionsAdded,
            first.topic.as_str(),
            Some(first.partition)
        )
    );
    let lineage = m
        .partition(&first.topic, first.partition)
        .unwrap()
        .lineage
        .clone();
    match first.records.last() {
        Some(last) => {
            let l = lineage.expect("a lineage anchor");
            assert_eq!(
                (l.offset, l.timestamp, l.restarted),
                (Some(last.offset), Some(last.timestamp), false)
            );
            assert_eq!(l.digest.as_ref().map(String::len), Some(64));
        }
        None => assert!(lineage.is_none()),
    }
    for p in &input.partitions {
        let pe = m.partition(&p.topic, p.partition).unwrap();
        assert_eq!(pe.records as usize, p.records.len(), "{name} 5.0");
    }
}

/// The same input encrypted (4.0) with the fixed file key, nonce prefix and envelope: the
/// committed file opens with the vector identity, verifies, decodes to the input, has the keyed
/// IDs of `expected-4.0.json` (none equal to the plain ones), which the writer reproduces; and
/// its manifest frame opens by §15 alone (BLAKE3 and XChaCha20-Poly1305, not kar's code).
fn check_encrypted(dir: &Path, name: &str, input: &Input, plain: &Expected, regenerate: bool) {
    let fresh = write_vector(input, Some(sealing()));
    let u = unlock();
    let fresh_archive = Archive::from_shared_with(
        std::sync::Arc::new(kar::archive::Source::Owned(fresh.clone())),
        name,
        Some(&u),
    )
    .unwrap();
    if regenerate {
        std::fs::write(dir.join("archive-4.0.kar"), &fresh).unwrap();
        let e = expected_of(&fresh_archive);
        std::fs::write(
            dir.join("expected-4.0.json"),
            serde_json::to_string_pretty(&e).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Expected =
        serde_json::from_slice(&std::fs::read(dir.join("expected-4.0.json")).unwrap()).unwrap();
    assert_eq!(expected_of(&fresh_archive), expected, "{name} 4.0: writer");
    let path = dir.join("archive-4.0.kar");
    let report = kar::archive::verify::verify_shared_with(
        std::sync::Arc::new(kar::archive::Source::map(&path).unwrap()),
        &path,
        VerifyLevel::Full,
        Some(&u),
        &|_| {},
    );
    assert!(report.ok, "{name} 4.0: {:?}", report.problems);
    assert_eq!(report.format_version.as_deref(), Some("4.0"));
    let committed = Archive::open_with(&path, Some(&u)).unwrap();
    assert_eq!(expected_of(&committed), expected, "{name} 4.0: committed");
    check_contents(&committed, input, name);
    assert_ne!(expected.root_hash, plain.root_hash);
    for (a, b) in expected.chunk_ids.iter().zip(&plain.chunk_ids) {
        assert_eq!((&a.0, a.1, a.2), (&b.0, b.1, b.2));
        assert_ne!(a.3, b.3, "{name}: a keyed chunk ID equals the plain one");
    }
    manifest_by_the_spec(&std::fs::read(&path).unwrap(), &expected, name);
}

/// Opens the manifest frame of an encrypted vector as §15 says, with BLAKE3 and
/// XChaCha20-Poly1305 directly: the spec, not kar's code, is what is checked.
fn manifest_by_the_spec(bytes: &[u8], expected: &Expected, name: &str) {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let footer = bytes.len() - 80;
    let at = u64_at(footer + 8) as usize;
    let id = &bytes[32..48];
    let (kind, compression, encryption) = (bytes[at + 4], bytes[at + 5], bytes[at + 6]);
    assert_eq!((kind, compression, encryption), (0x11, 1, 1), "{name}");
    let (stored_len, raw_len) = (u64_at(at + 8) as usize, u64_at(at + 16));
    let content_id = &bytes[at + 24..at + 56];
    let stored = &bytes[at + 96..at + 96 + stored_len];
    let frame_key = blake3::derive_key("kar 4 frame encryption key", FILE_KEY);
    let id_key = blake3::derive_key("kar 4 content ID key", FILE_KEY);
    let mut aad = b"kar 4 frame".to_vec();
    aad.extend_from_slice(id);
    aad.extend_from_slice(&[kind, compression]);
    aad.extend_from_slice(&raw_len.to_le_bytes());
    aad.extend_from_slice(content_id);
    let cipher = chacha20poly1305::XChaCha20Poly1305::new((&frame_key).into());
    let plain = cipher
        .decrypt(
            chacha20poly1305::XNonce::from_slice(&stored[..24]),
            Payload {
                msg: &stored[24..],
                aad: &aad,
            },
        )
        .expect("the manifest frame opens by the spec");
    assert_eq!(&stored[..16], NONCE_PREFIX, "{name}: the nonce's prefix");
    let raw = zstd::bulk::decompress(&plain, raw_len as usize).unwrap();
    assert_eq!(blake3::keyed_hash(&id_key, &raw).as_bytes(), content_id);
    assert_eq!(hex(content_id.try_into().unwrap()), expected.manifest_id);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        (m["format_major"].as_u64(), m["format_minor"].as_u64()),
        (Some(4), Some(0))
    );
}

/// The `schemas` vector's registry document reads into kar's typed snapshot: the 2.1 members
/// (whole configurations, data-contract settings, a member kar does not know) arrive as written.
#[test]
fn the_schemas_vector_reads_into_a_typed_snapshot_with_its_configurations() {
    let a = Archive::open(vectors_dir().join("schemas/archive.kar")).unwrap();
    let snap = kar::registry::snapshot::read_from_archive(&a)
        .unwrap()
        .unwrap();
    let g = snap.global.own_config().unwrap();
    assert_eq!(g.compatibility.as_deref(), Some("BACKWARD"));
    assert_eq!(g.normalize, Some(true));
    assert_eq!(
        g.default_metadata,
        Some(serde_json::json!({"properties": {"owner": "platform"}}))
    );
    let money = snap
        .subjects
        .iter()
        .find(|s| s.subject == "common-money-value")
        .unwrap();
    let c = money.own_config().unwrap();
    assert_eq!(c.compatibility_group.as_deref(), Some("app.major"));
    assert_eq!(c.alias.as_deref(), Some("money"));
    assert_eq!(
        c.request()["futureMember"],
        serde_json::json!({"kept": true}),
        "a member kar does not know goes back to the registry as it came"
    );
    assert_eq!(
        c.request()["overrideRuleSet"]["domainRules"][0]["name"],
        "positive"
    );
    // A 2.0 subject (no `config`): the level alone.
    let orders = snap
        .subjects
        .iter()
        .find(|s| s.subject == "orders-value")
        .unwrap();
    assert_eq!(orders.own_config(), None);
    let v = &orders.versions[0];
    assert_eq!(v.metadata.as_ref().unwrap()["sensitive"][0], "units");
    assert_eq!(
        v.rule_set.as_ref().unwrap()["domainRules"][0]["name"],
        "positive"
    );
}
