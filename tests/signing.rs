//! Chain of custody, signatures (spec §14): keys made by `kar keygen` and by the real `minisign`
//! tool (Debian's package, installed by scripts/build-deps), signed backups checked by minisign
//! and by `kar verify --trusted-key`, an auditor's countersignature, restores that require a
//! trusted signature, and nothing secret in what kar writes or prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::common::{self, consume_all};
use crate::stream::{PER_PARTITION, assert_restored, orders};

/// Runs `kar ARGS` with the signing passphrase `pw` (if any) in its environment.
fn kar(args: &[&str], pw: Option<&str>) -> (Option<i32>, Value, String) {
    match pw {
        Some(pw) => common::kar_cli(args, &[("KAR_SIGNING_PASSPHRASE", pw)]),
        None => common::kar_cli(args, &[]),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn minisign(args: &[&str]) -> Output {
    Command::new("minisign")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("minisign is installed (scripts/build-deps installs Debian's package)")
}

/// A key pair made by the real minisign tool, unencrypted (`-W`): `(secret, public)`.
fn minisign_keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (sk, pk) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    let o = minisign(&["-G", "-W", "-p", s(&pk), "-s", s(&sk)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (sk, pk)
}

/// The key ID a `.pub` file's comment names, spelt as kar spells it: 16 hex digits (the
/// minisign tool prints it without leading zeros).
fn key_id_of(public: &Path) -> String {
    let text = std::fs::read_to_string(public).unwrap();
    let first = text.lines().next().unwrap();
    let id = u64::from_str_radix(first.rsplit(' ').next().unwrap(), 16).unwrap();
    format!("{id:016X}")
}

fn backup_args<'a>(p: &'a str, topic: &'a str, out: &'a str) -> Vec<String> {
    [
        "backup",
        "--chunk-size",
        "4096",
        "--bootstrap",
        &common::bootstrap(),
        "--topics",
        topic,
        "--registry",
        &common::source_registry(),
        "--subjects",
        &format!("{p}-.*"),
        "--groups",
        &format!("{p}-.*"),
        "--out",
        out,
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `(kind, key ID, status)` of each signature a verify report lists, sorted.
fn signatures(report: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = report["signatures"]["signatures"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["key_id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The signatures expected, in the order `signatures` lists them.
fn sorted(mut v: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    v.sort();
    v
}

fn sig(kind: &str, key: &str, status: &str) -> (String, String, String) {
    (kind.into(), key.into(), status.into())
}

/// A signed backup, end to end: a key pair from `kar keygen` (encrypted), the backup signs its
/// archive (frame and detached file), the real minisign checks the detached signature over the
/// file as it is and the embedded statement alone (as an auditor without kar would), `kar
/// verify` trusts it with the right key only, an auditor countersigns with a key the minisign
/// tool made, and a restore that requires the signature writes every record, which Confluent's
/// client decodes on the target. The passphrase and the secret keys appear nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_backup_is_checked_by_minisign_trusted_by_kar_countersigned_and_restored() {
    common::require_kafka();
    let p = common::unique("signed");
    let (topic, _group, _source_id) = orders(&p).await;
    let source = consume_all(&topic, 3);
    let dir = tempfile::tempdir().unwrap();
    let pw = format!("pass-{}", common::unique("phrase"));
    let alice = dir.path().join("alice");
    let (code, made, out) = kar(&["keygen", "--out", s(&alice), "--json"], Some(&pw));
    assert_eq!(code, Some(0), "{out}");
    let alice_id = made["key_id"].as_str().unwrap().to_string();
    let (alice_key, alice_pub) = (dir.path().join("alice.key"), dir.path().join("alice.pub"));
    assert_eq!(key_id_of(&alice_pub), alice_id);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&alice_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (bob_key, bob_pub) = minisign_keypair(dir.path(), "bob");
    let bob_id = key_id_of(&bob_pub);
    let mut printed = vec![out];

    // Without the passphrase, or with a wrong one, nothing is written.
    let file = dir.path().join("a.kar");
    let mut args = backup_args(&p, &topic, s(&file));
    args.extend(["--sign-with".into(), s(&alice_key).into()]);
    let (code, _, out) = kar(&strs(&args), Some("not-the-passphrase"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("wrong passphrase"), "{out}");
    assert!(!file.exists());
    let (code, _, out) = kar(&strs(&args), None);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("passphrase"), "{out}");
    assert!(!file.exists());

    let (code, r, out) = kar(&strs(&args), Some(&pw));
    assert_eq!(code, Some(0), "{out}");
    printed.push(out);
    assert_eq!(r["signed_by"], json!(alice_id));
    let detached = dir.path().join("a.kar.minisig");
    assert_eq!(r["signature_file"], json!(s(&detached)));
    let a = kar::archive::Archive::open(&file).unwrap();
    assert_eq!((a.header().major, a.header().minor), (3, 1));
    let id = a.id().unwrap().hex();

    // The real minisign checks the detached signature over the file as it is.
    let o = minisign(&["-Vm", s(&file), "-p", s(&alice_pub)]);
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains(&format!("kar-archive:{id}")), "{said}");

    // The embedded statement, checked by minisign alone: statement and signature saved as files.
    let ix = a.index_content().unwrap();
    assert_eq!(ix.signatures.len(), 1);
    let (&at, _) = ix.signatures.iter().next().unwrap();
    let bytes = a.bytes();
    let len = u64::from_le_bytes(bytes[at as usize + 8..at as usize + 16].try_into().unwrap());
    let raw = &bytes[at as usize + 96..(at + 96 + len) as usize];
    let (doc, statement) = kar::format::signature::SignatureDocument::decode(raw, at).unwrap();
    assert_eq!(statement.archive_id.hex(), id);
    assert_eq!(statement.root, a.root());
    assert_eq!(statement.manifest_id, *a.manifest_id());
    let (st, st_sig) = (
        dir.path().join("statement"),
        dir.path().join("statement.minisig"),
    );
    std::fs::write(&st, &doc.statement).unwrap();
    std::fs::write(&st_sig, &doc.minisig).unwrap();
    let o = minisign(&["-Vm", s(&st), "-x", s(&st_sig), "-p", s(&alice_pub)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // kar verify: trusted with alice's key, not with bob's (named untrusted, not damage).
    let (code, v, out) = kar(
        &["verify", s(&file), "--trusted-key", s(&alice_pub), "--json"],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["format_version"], "3.1");
    assert_eq!(
        signatures(&v),
        sorted(vec![
            sig("detached", &alice_id, "trusted"),
            sig("embedded", &alice_id, "trusted")
        ])
    );
    for s in v["signatures"]["signatures"].as_array().unwrap() {
        assert!(s["signed_at"].as_str().unwrap().starts_with("20"), "{s}");
    }
    let (code, v, out) = kar(
        &["verify", s(&file), "--trusted-key", s(&bob_pub), "--json"],
        None,
    );
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["problems"], json!([]), "not damage");
    assert_eq!(v["signatures"]["trusted_signature"], false);
    assert_eq!(
        signatures(&v),
        sorted(vec![
            sig("detached", &alice_id, "untrusted"),
            sig("embedded", &alice_id, "untrusted")
        ])
    );

    // An auditor countersigns with a key the minisign tool made; minisign checks it, and the
    // auditor's key alone now makes the archive trusted.
    let (code, c, out) = kar(&["sign", s(&file), "--with", s(&bob_key), "--json"], None);
    assert_eq!(code, Some(0), "{out}");
    printed.push(out);
    let counter = dir.path().join(format!("a.kar.{bob_id}.minisig"));
    assert_eq!(c["signature_file"], json!(s(&counter)));
    let o = minisign(&["-Vm", s(&file), "-x", s(&counter), "-p", s(&bob_pub)]);
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains(&format!("kar-root:{}", kar::format::hex(&a.root()))),
        "{said}"
    );
    let (code, v, out) = kar(
        &["verify", s(&file), "--trusted-key", s(&bob_pub), "--json"],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        signatures(&v),
        sorted(vec![
            sig("detached", &alice_id, "untrusted"),
            sig("detached", &bob_id, "trusted"),
            sig("embedded", &alice_id, "untrusted")
        ])
    );

    // The drill: a restore that requires alice's signature, with new schema IDs; every record
    // compared, and decoded by Confluent's client on the target.
    let to = format!("{topic}-restored");
    let (code, r, out) = kar(
        &[
            "restore",
            s(&file),
            "--bootstrap",
            &common::bootstrap(),
            "--map",
            &format!("{topic}={to}"),
            "--registry",
            &common::target_registry(),
            "--schema-ids",
            "rewrite",
            "--require-signature",
            "--trusted-key",
            s(&alice_pub),
            "--state",
            s(dir.path()),
            "--json",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    printed.push(out);
    assert_eq!(r["records_written"], 3 * PER_PARTITION);
    let target_id = r["id_map"].as_object().unwrap().values().next().unwrap();
    assert_restored(
        &source,
        &consume_all(&to, 3),
        target_id.as_u64().unwrap() as u32,
    );
    let decoded = common::decode_with_confluent(&to, &common::target_registry());
    assert_eq!(decoded.len() as i64, 3 * PER_PARTITION);

    // Nothing secret landed: not the passphrase, not a secret key (alice's as stored, bob's
    // decoded), in the archive, its signatures, or anything kar printed.
    let alice_line = std::fs::read_to_string(&alice_key)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let bob_secret = secret_seed(&bob_key);
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("archive".into(), std::fs::read(&file).unwrap()),
        ("detached".into(), std::fs::read(&detached).unwrap()),
        ("countersignature".into(), std::fs::read(&counter).unwrap()),
    ];
    places.extend(
        printed
            .into_iter()
            .map(|o| ("output".to_string(), o.into_bytes())),
    );
    for (what, bytes) in &places {
        for (name, secret) in [
            ("passphrase", pw.as_bytes()),
            ("alice's secret key", alice_line.as_bytes()),
            ("bob's secret key", &bob_secret[..]),
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{name} found in the {what}"
            );
        }
    }
}

/// The 32-byte Ed25519 seed inside an unencrypted minisign secret key file.
fn secret_seed(key: &Path) -> Vec<u8> {
    use base64::Engine;
    let text = std::fs::read_to_string(key).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.lines().nth(1).unwrap())
        .unwrap();
    // sig_alg 2, kdf_alg 2, chk_alg 2, salt 32, opslimit 8, memlimit 8, key number 8, then the
    // secret key (seed, public key).
    assert_eq!(&raw[2..4], &[0, 0], "unencrypted");
    raw[54..86].to_vec()
}

/// What is not a trusted signature is named, and refused where one is required: a changed byte
/// (damage, and the detached signature no longer verifies; the statement still does, over the
/// root the index gives), a `.minisig` of other bytes put beside an intact archive, an unsigned
/// archive, an archive signed by a key not trusted. A restore that requires a signature writes
/// nothing for any of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_archive_a_wrong_signature_and_an_unsigned_archive_are_named_and_refused() {
    common::require_kafka();
    let p = common::unique("unsigned");
    let (topic, _, _) = orders(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let (bob_key, bob_pub) = minisign_keypair(dir.path(), "bob");
    let (_, carol_pub) = minisign_keypair(dir.path(), "carol");
    let bob_id = key_id_of(&bob_pub);
    let signed = dir.path().join("signed.kar");
    let mut args = backup_args(&p, &topic, s(&signed));
    args.extend(["--sign-with".into(), s(&bob_key).into()]);
    let (code, _, out) = kar(&strs(&args), None);
    assert_eq!(code, Some(0), "{out}");
    let plain = dir.path().join("plain.kar");
    let (code, _, out) = kar(&strs(&backup_args(&p, &topic, s(&plain))), None);
    assert_eq!(code, Some(0), "{out}");
    let a = kar::archive::Archive::open(&plain).unwrap();
    assert_eq!(
        (a.header().major, a.header().minor),
        (3, 0),
        "unsigned stays 3.0"
    );

    // A byte of a record chunk flipped in a copy (with its signatures beside it).
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    let bad = bad_dir.join("signed.kar");
    let mut bytes = std::fs::read(&signed).unwrap();
    let chunk = kar::archive::Archive::open(&signed)
        .unwrap()
        .index_content()
        .unwrap()
        .chunks[0]
        .frame_offset;
    bytes[chunk as usize + 96 + 20] ^= 0x40;
    std::fs::write(&bad, &bytes).unwrap();
    std::fs::copy(
        dir.path().join("signed.kar.minisig"),
        bad_dir.join("signed.kar.minisig"),
    )
    .unwrap();
    let (code, v, out) = kar(
        &["verify", s(&bad), "--trusted-key", s(&bob_pub), "--json"],
        None,
    );
    assert_eq!(code, Some(1), "{out}");
    let first = &v["problems"][0];
    assert_eq!(first["offset"], chunk + 96, "{v}");
    assert_eq!(
        signatures(&v),
        sorted(vec![
            sig("detached", &bob_id, "invalid"),
            sig("embedded", &bob_id, "trusted")
        ])
    );

    // A .minisig of other bytes (the damaged copy) beside an intact archive: named invalid.
    let wrong_dir = dir.path().join("wrong");
    std::fs::create_dir(&wrong_dir).unwrap();
    let wrong = wrong_dir.join("plain.kar");
    std::fs::copy(&plain, &wrong).unwrap();
    let o = minisign(&[
        "-S",
        "-s",
        s(&bob_key),
        "-m",
        s(&bad),
        "-x",
        s(&wrong_dir.join("plain.kar.minisig")),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, v, out) = kar(
        &["verify", s(&wrong), "--trusted-key", s(&bob_pub), "--json"],
        None,
    );
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["problems"], json!([]), "intact: {v}");
    assert_eq!(
        signatures(&v),
        sorted(vec![sig("detached", &bob_id, "invalid")])
    );
    let detail = v["signatures"]["signatures"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("does not verify"), "{detail}");

    // A .minisig whose global signature is cut short (anyone can write one; minisign's own
    // verify would slice past its end): named, not a crash.
    // Its signature over the data is bob's, valid: only the global one is cut.
    let text = std::fs::read_to_string(dir.path().join("signed.kar.minisig")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[3].truncate(20);
    let short = dir.path().join("signed.kar.short.minisig");
    std::fs::write(&short, lines.join("\n") + "\n").unwrap();
    let (code, v, out) = kar(&["verify", s(&signed), "--json"], None);
    assert!(!out.contains("panicked"), "{out}");
    assert_eq!(code, Some(0), "nothing required: {out}");
    let problems = v["signatures"]["problems"].to_string();
    assert!(
        problems.contains("signed.kar.short.minisig: not a minisign signature"),
        "{v}"
    );
    std::fs::remove_file(&short).unwrap();

    // Restores that require a signature refuse, in pre-flight, each but the trusted one.
    let to = format!("{topic}-refused");
    for (archive, key, why) in [
        (&plain, &bob_pub, "none"),
        (&signed, &carol_pub, "untrusted"),
        (&wrong, &bob_pub, "invalid"),
    ] {
        let (code, _, out) = kar(
            &[
                "restore",
                s(archive),
                "--bootstrap",
                &common::bootstrap(),
                "--map",
                &format!("{topic}={to}"),
                "--require-signature",
                "--trusted-key",
                s(key),
                "--state",
                s(dir.path()),
            ],
            None,
        );
        assert_eq!(code, Some(2), "{why}: {out}");
        assert!(
            out.contains("no valid signature by a trusted key"),
            "{why}: {out}"
        );
        assert!(out.to_lowercase().contains(why), "{why}: {out}");
    }
    let admin = common::admin();
    let md = admin
        .inner()
        .fetch_metadata(Some(&to), std::time::Duration::from_secs(10))
        .unwrap();
    assert!(
        md.topics()[0].partitions().is_empty(),
        "nothing was written: {to} exists"
    );
    // --require-signature without a key to trust is a usage error.
    let (code, _, out) = kar(
        &[
            "restore",
            s(&signed),
            "--bootstrap",
            &common::bootstrap(),
            "--require-signature",
        ],
        None,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--trusted-key"), "{out}");
}

/// A signed backup to standard output, the detached signature named by --signature-out: minisign
/// checks it over the bytes saved; `kar verify -` trusts the stream by its signature frame; a
/// stream restore that requires a signature is refused before it reads (the frame comes after
/// the records). A compaction keeps the embedded signature valid; a backup in volumes is signed
/// over the joined archive.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_stream_a_compacted_archive_and_a_signed_volume_set() {
    common::require_kafka();
    let p = common::unique("sigstream");
    let (topic, _, _) = orders(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let (bob_key, bob_pub) = minisign_keypair(dir.path(), "bob");
    let bob_id = key_id_of(&bob_pub);
    let saved = dir.path().join("s.kar");
    let sig_file = dir.path().join("s.sig");
    let mut args = backup_args(&p, &topic, "-");
    args.extend([
        "--sign-with".into(),
        s(&bob_key).into(),
        "--signature-out".into(),
        s(&sig_file).into(),
    ]);
    let o = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(&args[..args.len()])
        .stdout(std::fs::File::create(&saved).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = minisign(&["-Vm", s(&saved), "-x", s(&sig_file), "-p", s(&bob_pub)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let (ok, v, err) = common::kar_piped(
        &saved,
        &format!("verify - --trusted-key '{}' --json", s(&bob_pub)),
    );
    assert!(ok, "{v}{err}");
    assert_eq!(
        signatures(&v),
        sorted(vec![sig("embedded", &bob_id, "trusted")])
    );
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | {} restore - --bootstrap {} --require-signature --trusted-key '{}'",
            s(&saved),
            env!("CARGO_BIN_EXE_kar"),
            common::bootstrap(),
            s(&bob_pub)
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("a stream's signature comes at its end"),
        "{err}"
    );

    // Compaction: same ID, root and manifest, so the carried signature frame still holds.
    let compacted = dir.path().join("c.kar");
    let (code, _, out) = kar(&["compact", s(&saved), "--out", s(&compacted)], None);
    assert_eq!(code, Some(0), "{out}");
    let (code, v, out) = kar(
        &[
            "verify",
            s(&compacted),
            "--trusted-key",
            s(&bob_pub),
            "--json",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        signatures(&v),
        sorted(vec![sig("embedded", &bob_id, "trusted")])
    );

    // A signed backup in volumes: the detached signature is over the joined archive.
    let big = common::unique("sigvolumes");
    common::create_topic(&big, 2, &[]).await;
    common::fill(&big, 2, 3_000, 900).await;
    let first = dir.path().join("set.kar");
    let (code, r, out) = kar(
        &[
            "backup",
            "--bootstrap",
            &common::bootstrap(),
            "--topics",
            &big,
            "--compression",
            "none",
            "--volume-size",
            "1M",
            "--sign-with",
            s(&bob_key),
            "--out",
            s(&first),
            "--json",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(r["volumes"].as_array().unwrap().len() >= 3, "{r}");
    let set_sig = dir.path().join("set.kar.minisig");
    assert_eq!(r["signature_file"], json!(s(&set_sig)));
    let (code, v, out) = kar(
        &["verify", s(&first), "--trusted-key", s(&bob_pub), "--json"],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        signatures(&v),
        sorted(vec![
            sig("detached", &bob_id, "trusted"),
            sig("embedded", &bob_id, "trusted")
        ])
    );
    let joined = dir.path().join("joined.kar");
    let (code, _, out) = kar(&["join", s(&first), "--out", s(&joined)], None);
    assert_eq!(code, Some(0), "{out}");
    let o = minisign(&["-Vm", s(&joined), "-x", s(&set_sig), "-p", s(&bob_pub)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
