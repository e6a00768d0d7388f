//! Chain of custody, encryption at rest (spec §15): archives encrypted to keys made by the real
//! `age-keygen` and `ssh-keygen` and to a passphrase, restored with each, checked without the key
//! (`verify --stored`), and the four failures told apart: no identity, a wrong key, a changed
//! ciphertext, a changed key envelope. What is on the stick in clear holds no record, name or
//! secret.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::{self, consume_all, kar_cli as kar};
use crate::stream::{PER_PARTITION, assert_restored, orders};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (scripts/build-deps installs it): {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// An age identity made by age-keygen: (identity file, recipient).
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    run("age-keygen", &["-o", s(&path)]);
    let recipient = run("age-keygen", &["-y", s(&path)]).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (path, recipient)
}

/// An unencrypted SSH key pair made by ssh-keygen: (private key, public key file).
fn ssh_key(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let path = dir.join(format!("id_{kind}"));
    let mut args = vec!["-q", "-t", kind, "-N", "", "-C", "kar-test", "-f", s(&path)];
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    run("ssh-keygen", &args);
    let public = dir.join(format!("id_{kind}.pub"));
    (path, public)
}

/// How a restore opens the archive: a name, its flags, its environment.
type Opener<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The frame at `at` of `bytes`: its decoded header and where its stored bytes are.
fn frame(
    bytes: &[u8],
    at: u64,
    id: kar::format::ArchiveId,
) -> (kar::format::frame::FrameHeader, usize) {
    let h = kar::format::frame::FrameHeader::decode(&bytes[at as usize..], at, Some(id)).unwrap();
    (h, at as usize + 96)
}

/// Changes one byte of the stored bytes of the frame at `at` and makes its stored hash and header
/// check agree again: what an attacker who knows the format, but not the key, can do.
fn tamper_sealed(bytes: &mut [u8], at: u64, id: kar::format::ArchiveId, byte: usize) {
    let (mut h, start) = frame(bytes, at, id);
    let end = start + h.stored_len as usize;
    bytes[start + byte] ^= 0x01;
    h.stored_hash = *blake3::hash(&bytes[start..end]).as_bytes();
    if !h.encrypted {
        // An unsealed frame stored as it is: its content ID is its stored hash.
        h.content_id = h.stored_hash;
    }
    bytes[at as usize..start].copy_from_slice(&h.encode(Some(id)));
}

/// The drill on an encrypted, signed archive: encrypted to an age key (age-keygen), an SSH
/// Ed25519 and an SSH RSA key (ssh-keygen) and a passphrase, signed with a minisign key; restored
/// with each of the four, the signature required, records compared one by one, and decoded by
/// Confluent's client on the target. Verified without the key as far as that goes (`--stored`);
/// the envelope opens with the `age` tool itself; nothing in clear names a topic, holds a record,
/// or a secret.
#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_signed_archive_is_restored_with_each_identity_and_the_passphrase() {
    common::require_kafka();
    let p = common::unique("sealed");
    let (topic, _group, _) = orders(&p).await;
    let source = consume_all(&topic, 3);
    let dir = tempfile::tempdir().unwrap();
    let (age_id, age_recipient) = age_key(dir.path(), "age.txt");
    let (ed, ed_pub) = ssh_key(dir.path(), "ed25519");
    let (rsa, rsa_pub) = ssh_key(dir.path(), "rsa");
    let (sk, pk) = (dir.path().join("ops.key"), dir.path().join("ops.pub"));
    run("minisign", &["-G", "-W", "-p", s(&pk), "-s", s(&sk)]);
    let pw = format!("pw-{}", common::unique("archive"));
    let file = dir.path().join("sealed.kar");
    let args = [
        "backup",
        "--chunk-size",
        "4096",
        "--bootstrap",
        &common::bootstrap(),
        "--topics",
        &topic,
        "--registry",
        &common::source_registry(),
        "--subjects",
        &format!("{p}-.*"),
        "--groups",
        &format!("{p}-.*"),
        "--encrypt-to",
        &age_recipient,
        "--encrypt-to",
        s(&ed_pub),
        "--encrypt-to",
        s(&rsa_pub),
        "--encrypt-passphrase",
        "--sign-with",
        s(&sk),
        "--out",
        s(&file),
        "--json",
    ];
    let (code, r, out) = kar(&args, &[("KAR_ARCHIVE_PASSPHRASE", &pw)]);
    assert_eq!(code, Some(0), "{out}");
    let mut printed = vec![out];
    let bytes = std::fs::read(&file).unwrap();
    let header = kar::format::file_header::FileHeader::decode(&bytes).unwrap();
    assert_eq!((header.major, header.minor, header.flags), (4, 0, 1));
    let id = header.archive_id.unwrap();

    // Nothing in clear: no topic or subject name, no record value, no secret.
    let secrets = [
        topic.clone(),
        format!("{p}-orders-value"),
        format!("0-7-{}", "x".repeat(40)),
        pw.clone(),
        std::fs::read_to_string(&age_id)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string(),
    ];
    for needle in &secrets {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle:?} is in the archive in clear"
        );
    }

    // The first frame is an age file: the age tool opens it with the age identity, to 32 bytes.
    let (h, start) = frame(&bytes, 64, id);
    assert_eq!(h.kind, kar::format::frame::FrameKind::Envelope);
    let envelope = dir.path().join("envelope.age");
    std::fs::write(&envelope, &bytes[start..start + h.stored_len as usize]).unwrap();
    let o = Command::new("age")
        .args(["-d", "-i", s(&age_id), s(&envelope)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout.len(), 32, "the file key");

    // Without a key: the stored bytes and the signature check out, nothing else can.
    let (code, v, out) = kar(
        &[
            "verify",
            s(&file),
            "--stored",
            "--trusted-key",
            s(&pk),
            "--json",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        (v["level"].as_str(), v["ok"].as_bool()),
        (Some("stored"), Some(true)),
        "{v}"
    );
    assert_eq!(v["signatures"]["trusted_signature"], true, "{v}");
    // That was the detached signature (over the bytes). The signature frame states the keyed
    // root, which nobody without the key can check against the content: alone, it does not make
    // the archive trusted.
    let aside = dir.path().join("aside.minisig");
    std::fs::rename(dir.path().join("sealed.kar.minisig"), &aside).unwrap();
    let stored_args = [
        "verify",
        s(&file),
        "--stored",
        "--trusted-key",
        s(&pk),
        "--json",
    ];
    let (code, v, out) = kar(&stored_args, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["problems"], json!([]), "{v}");
    let frame_sig = &v["signatures"]["signatures"][0];
    assert_eq!(
        (&frame_sig["status"], &frame_sig["binds_content"]),
        (&json!("trusted"), &json!(false)),
        "{v}"
    );
    std::fs::rename(&aside, dir.path().join("sealed.kar.minisig")).unwrap();
    let (code, _, out) = kar(&["verify", s(&file)], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the archive is encrypted: give an identity"),
        "{out}"
    );
    printed.push(out);

    // kar cat reads a record with the key, decoded with the archived (sealed) schema; not without.
    let (code, _, out) = kar(
        &[
            "cat",
            s(&file),
            "--partition",
            "1",
            "--offset",
            "5",
            "--identity",
            s(&age_id),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    let rec: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        rec["value"],
        json!({"id": format!("1-5-{}", "x".repeat(40))}),
        "{rec}"
    );
    assert_eq!(rec["value_schema"]["type"], "AVRO");
    let (code, _, out) = kar(&["cat", s(&file), "--limit", "1"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("the archive is encrypted: give an identity"),
        "{out}"
    );
    printed.push(out);

    // Each identity, and the passphrase, restores every record, the signature required.
    let ids: [Opener; 4] = [
        ("age", vec!["--identity", s(&age_id)], vec![]),
        ("ed25519", vec!["--identity", s(&ed)], vec![]),
        ("rsa", vec!["--identity", s(&rsa)], vec![]),
        (
            "passphrase",
            vec![],
            vec![("KAR_ARCHIVE_PASSPHRASE", pw.as_str())],
        ),
    ];
    for (what, extra, env) in &ids {
        let to = format!("{topic}-{what}");
        // A state folder each: every restore is its own (another target topic).
        let state = dir.path().join(format!("state-{what}"));
        std::fs::create_dir(&state).unwrap();
        let mut a = common::restore_args(s(&file), &topic, &to, &state);
        a.extend(["--schema-ids", "rewrite"].map(String::from));
        a.extend(extra.iter().map(|x| x.to_string()));
        a.extend(["--require-signature", "--trusted-key", s(&pk)].map(String::from));
        let (code, r, out) = kar(&strs(&a), env);
        assert_eq!(code, Some(0), "{what}: {out}");
        assert_eq!(r["records_written"], 3 * PER_PARTITION, "{what}");
        let target_id = r["id_map"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_u64()
            .unwrap();
        assert_restored(&source, &consume_all(&to, 3), target_id as u32);
        printed.push(out);
        if *what == "age" {
            let decoded = common::decode_with_confluent(&to, &common::target_registry());
            assert_eq!(decoded.len() as i64, 3 * PER_PARTITION);
            assert_eq!(decoded[7], json!({"id": format!("0-7-{}", "x".repeat(40))}));
        }
    }
    // The same archive through a pipe: verified and read as it streams, with the RSA key.
    let (ok, v, err) =
        common::kar_piped(&file, &format!("verify - --identity '{}' --json", s(&rsa)));
    assert!(ok, "{v}{err}");
    assert_eq!(v["records"], 3 * PER_PARTITION);
    assert_eq!(v["root_hash"], r["root_hash"]);

    for out in &printed {
        for needle in [&pw, &secrets[4]] {
            assert!(
                !out.contains(needle.as_str()),
                "a secret in kar's output: {out}"
            );
        }
    }
}

/// The four failures, each named as itself, none a panic: no identity, a wrong key (an age key
/// and an SSH key that are not recipients, a wrong passphrase), a sealed frame changed with its
/// hashes made to agree (only the tag finds it), and a changed key envelope.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_identity_a_wrong_key_a_changed_ciphertext_and_a_changed_envelope_differ() {
    common::require_kafka();
    let topic = common::unique("sealedfail");
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 500, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let (age_id, recipient) = age_key(dir.path(), "age.txt");
    let (other, _) = age_key(dir.path(), "other.txt");
    let (other_ssh, _) = ssh_key(dir.path(), "ed25519");
    let file = dir.path().join("a.kar");
    let (code, _, out) = kar(
        &[
            "backup",
            "--bootstrap",
            &common::bootstrap(),
            "--topics",
            &topic,
            "--chunk-size",
            "8192",
            "--encrypt-to",
            &recipient,
            "--encrypt-passphrase",
            "--out",
            s(&file),
        ],
        &[("KAR_ARCHIVE_PASSPHRASE", "right one")],
    );
    assert_eq!(code, Some(0), "{out}");
    let verify = |f: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["verify", s(f)];
        a.extend(extra);
        a.push("--json");
        let (code, v, out) = kar(&a, env);
        assert!(!out.contains("panicked"), "{out}");
        (code, v, out)
    };
    let (code, v, out) = verify(&file, &["--identity", s(&age_id)], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["level"], "full");

    let (code, _, out) = verify(&file, &[], &[]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("the archive is encrypted: give an identity"),
        "{out}"
    );
    for wrong in [&other, &other_ssh] {
        let (code, _, out) = verify(&file, &["--identity", s(wrong)], &[]);
        assert_eq!(code, Some(1));
        assert!(
            out.contains("wrong key: none of the identities given opens this archive"),
            "{out}"
        );
    }
    let (code, _, out) = verify(&file, &[], &[("KAR_ARCHIVE_PASSPHRASE", "wrong one")]);
    assert_eq!(code, Some(1));
    assert!(out.contains("wrong passphrase"), "{out}");

    // A sealed record chunk changed, its stored hash and header check recomputed.
    let bytes = std::fs::read(&file).unwrap();
    let id = kar::format::file_header::FileHeader::decode(&bytes)
        .unwrap()
        .archive_id
        .unwrap();
    let a = kar::archive::Archive::open_with(&file, Some(&unlock(&age_id))).unwrap();
    let chunk = a.index_content().unwrap().chunks[1].frame_offset;
    let changed = dir.path().join("changed.kar");
    let mut b = bytes.clone();
    tamper_sealed(&mut b, chunk, id, 40);
    std::fs::write(&changed, &b).unwrap();
    let (code, v, out) = verify(&changed, &["--stored"], &[]);
    assert_eq!(
        code,
        Some(0),
        "the hashes agree, as the attacker made them: {out}"
    );
    let (code, v2, out) = verify(&changed, &["--identity", s(&age_id)], &[]);
    assert_eq!(code, Some(1), "{out}");
    let p = &v2["problems"][0];
    assert_eq!(p["offset"], chunk + 96, "{v2}");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("does not authenticate"),
        "{v2}"
    );
    let _ = v;

    // The key envelope changed (its hashes made to agree): in its header's MAC, or in its
    // payload (the wrapped file key). age refuses it, named as such. (A changed recipient line
    // reads as a stanza for another key: a wrong key, which the message allows for.)
    let (h, start) = frame(&bytes, 64, id);
    let envelope = &bytes[start..start + h.stored_len as usize];
    let mac = envelope.windows(4).position(|w| w == b"--- ").unwrap() + 6;
    for (what, byte) in [("MAC", mac), ("payload", envelope.len() - 3)] {
        let mut b = bytes.clone();
        tamper_sealed(&mut b, 64, id, byte);
        let env_changed = dir.path().join(format!("envelope-{what}.kar"));
        std::fs::write(&env_changed, &b).unwrap();
        let (code, _, out) = verify(&env_changed, &["--identity", s(&age_id)], &[]);
        assert_eq!(code, Some(1));
        assert!(
            out.contains("key envelope at offset 64 has been changed or damaged"),
            "{what}: {out}"
        );
    }
}

fn unlock(identity: &Path) -> kar::archive::crypt::Unlock {
    let mut u = kar::archive::crypt::Unlock::default();
    u.add_identity_file(identity).unwrap();
    u
}

/// The committed encrypted vector and its identity (format-spec/vectors).
fn vector() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors");
    (
        dir.join("edge-cases/archive-4.0.kar"),
        dir.join("encryption/identity.txt"),
    )
}

/// A record chunk put in clear into an encrypted archive, with every hash and check of its own
/// right (its content ID the plain one, as a frame of a plain archive has): someone without the
/// key can write that. A stream reader, which hands each checked chunk on before the index and
/// root at the end, refuses it at its offset, so no record of it is written.
#[test]
fn a_chunk_in_clear_in_an_encrypted_archive_is_refused_where_it_is() {
    use kar::format::frame::{Compression, FrameHeader, FrameKind};
    let (path, identity) = vector();
    let u = unlock(&identity);
    let a = kar::archive::Archive::open_with(&path, Some(&u)).unwrap();
    let c = a.index_content().unwrap().chunks[0].clone();
    let mut dec = a.decoder().unwrap();
    let mut raw = Vec::new();
    a.read_chunk(&c, &mut dec, &mut raw).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let id = a.id().unwrap();
    let (h, start) = frame(&bytes, c.frame_offset, id);
    let stored = zstd::bulk::compress(&raw, 3).unwrap();
    let plain = FrameHeader::for_content(FrameKind::RecordChunk, Compression::Zstd, &raw, &stored);
    let mut forged = bytes[..c.frame_offset as usize].to_vec();
    forged.extend_from_slice(&plain.encode(Some(id)));
    forged.extend_from_slice(&stored);
    forged.extend_from_slice(&bytes[start + h.stored_len as usize..]);
    let r = kar::archive::stream::verify_stream_unlocked(
        &forged[..],
        "forged",
        None,
        &|_| {},
        Some(&u),
    );
    assert!(!r.ok);
    let first = &r.problems[0];
    assert_eq!(first.offset, c.frame_offset, "{:?}", r.problems);
    assert!(
        first.message.contains("in clear in an encrypted archive"),
        "{first}"
    );
}

/// An encrypted archive whose file header is damaged is still taken for encrypted (its version
/// and flags as they read): repair, which takes no key, refuses it and writes nothing, instead
/// of dropping every sealed frame into an empty "repaired" plain archive.
#[test]
fn a_damaged_header_does_not_hide_that_an_archive_is_encrypted() {
    let (path, _) = vector();
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.kar");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff; // a reserved byte: the header's checks fail
    std::fs::write(&damaged, &bytes).unwrap();
    let out = dir.path().join("repaired.kar");
    let (code, _, text) = kar(&["repair", s(&damaged), "--out", s(&out)], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("repair of an encrypted archive is not supported yet"),
        "{text}"
    );
    assert!(!out.exists());
}
