//! Signatures (spec §14): minisign keys, the signature frame a backup writes, the detached
//! `.minisig` files, and the checking of both against the keys a verifier trusts.
//!
//! Keys and signatures are minisign's own formats (the `minisign` crate), so an operator or an
//! auditor checks them with the `minisign` tool, without kar. A secret key never leaves this
//! module: [`SigningKey`] prints as its key ID only, and no error carries key material.

use std::fs::OpenOptions;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::format::frame::{ContentDecoder, FrameKind};
use crate::format::signature::{SignatureDocument, Statement, key_id_hex};
use crate::format::{ArchiveId, Hash, hex};

use super::inspect::utc;
use super::reader::{Archive, frame_at};

#[derive(Debug, Error)]
pub enum SignError {
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a minisign {what}: {detail}", path = .path.display())]
    NotAKey {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{path}: the secret key is encrypted: give its passphrase (KAR_SIGNING_PASSPHRASE, or at the prompt)", path = .path.display())]
    NeedsPassphrase { path: PathBuf },
    #[error("{path}: wrong passphrase for this secret key", path = .path.display())]
    WrongPassphrase { path: PathBuf },
    #[error("{path} already exists: choose another name or remove it first", path = .path.display())]
    Exists { path: PathBuf },
    #[error("signing failed: {0}")]
    Sign(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SignError {
    let path = path.to_path_buf();
    move |source| SignError::Io { op, path, source }
}

/// A minisign secret key, decrypted, with its public half. Never printed but by its key ID.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id_hex())
    }
}

/// The decoded length of a minisign secret key, and where its checksum begins: algorithm
/// fields 6, salt 32, limits 16, key number 8, secret key 64, checksum 32.
const UNENCRYPTED_LEN: usize = 158;
const CHK_AT: usize = 126;

fn keynum(bytes: &[u8]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k.copy_from_slice(&bytes[..8]);
    k
}

impl SigningKey {
    /// Reads a minisign secret key file (`minisign -G` or `kar keygen`); `passphrase` is asked
    /// for only when the key is encrypted.
    pub fn load(
        path: &Path,
        passphrase: impl FnOnce() -> Option<String>,
    ) -> Result<SigningKey, SignError> {
        let text = std::fs::read_to_string(path).map_err(io("read", path))?;
        let not_key = |detail: String| SignError::NotAKey {
            path: path.to_path_buf(),
            what: "secret key",
            detail,
        };
        let encoded = text
            .lines()
            .nth(1)
            .ok_or_else(|| not_key("no second line".into()))?;
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| not_key("its second line is not base64".into()))?;
        // Bytes 2..4 name the key derivation: zero for a key stored unencrypted (`minisign -W`).
        let encrypted = raw.get(2..4).ok_or_else(|| not_key("too short".into()))? != [0, 0];
        let sk_box =
            minisign::SecretKeyBox::from_string(&text).map_err(|e| not_key(e.to_string()))?;
        let sk = if encrypted {
            let pw = passphrase().ok_or_else(|| SignError::NeedsPassphrase {
                path: path.to_path_buf(),
            })?;
            minisign::SecretKey::from_box(sk_box, Some(pw)).map_err(|e| {
                if matches!(e.kind(), minisign::ErrorKind::Verify) {
                    SignError::WrongPassphrase {
                        path: path.to_path_buf(),
                    }
                } else {
                    not_key(e.to_string())
                }
            })?
        } else if raw.len() == UNENCRYPTED_LEN && raw[CHK_AT..].iter().all(|b| *b == 0) {
            // minisign 0.11's `-G -W` stores an unencrypted key without its checksum (zeros),
            // which the crate refuses as corrupted; the probe signature below checks the key
            // instead.
            minisign::SecretKey::from_bytes(&raw).map_err(|e| not_key(e.to_string()))?
        } else {
            minisign::SecretKey::from_unencrypted_box(sk_box).map_err(|e| not_key(e.to_string()))?
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| not_key(e.to_string()))?;
        let key = SigningKey { sk, pk };
        // A signature the public half checks: a damaged key is found here, not in an archive.
        key.sign_reader(Cursor::new(b"kar key check"), "kar key check")
            .map_err(|_| not_key("its secret and public halves do not match".into()))?;
        Ok(key)
    }

    pub fn key_id(&self) -> [u8; 8] {
        keynum(self.pk.keynum())
    }

    pub fn key_id_hex(&self) -> String {
        key_id_hex(&self.key_id())
    }

    /// Signs the statement: the content of a signature frame.
    pub fn sign_statement(&self, statement: &Statement) -> Result<SignatureDocument, SignError> {
        let text = statement.encode();
        let comment = format!(
            "kar archive {} root {}",
            statement.archive_id,
            hex(&statement.root)
        );
        let sig = self.sign_reader(Cursor::new(text.as_bytes()), &comment)?;
        Ok(SignatureDocument {
            minisig: sig,
            public_key: self.pk.to_base64(),
            statement: text,
        })
    }

    /// A minisign signature (prehashed) over everything `data` yields, as `.minisig` text.
    pub fn sign_reader(
        &self,
        data: impl std::io::Read,
        trusted_comment: &str,
    ) -> Result<String, SignError> {
        let untrusted = format!("signature from kar, key {}", self.key_id_hex());
        minisign::sign(
            Some(&self.pk),
            &self.sk,
            data,
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map(|b| b.into_string())
        .map_err(|e| SignError::Sign(e.to_string()))
    }

    /// Starts signing bytes as they are written (a backup to a file or a stream): the bytes go
    /// through a channel to a thread that hashes them.
    pub fn stream_signer(&self, trusted_comment: String) -> Result<StreamSigner, SignError> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(8);
        let key = SigningKey {
            sk: self.sk.clone(),
            pk: self.pk.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("kar-sign".into())
            .spawn(move || key.sign_reader(ChannelReader::new(rx), &trusted_comment))
            .map_err(|e| SignError::Sign(format!("starting the signing thread: {e}")))?;
        Ok(StreamSigner {
            tx: Some(tx),
            handle: Some(handle),
        })
    }
}

/// Feeds the bytes written through it to a signing thread; [`StreamSigner::finish`] returns the
/// signature over all of them.
pub struct StreamSigner {
    tx: Option<crossbeam_channel::Sender<Vec<u8>>>,
    handle: Option<std::thread::JoinHandle<Result<String, SignError>>>,
}

impl StreamSigner {
    pub fn update(&mut self, bytes: &[u8]) {
        if let Some(tx) = &self.tx
            && tx.send(bytes.to_vec()).is_err()
        {
            // The thread stopped: finish() reports why.
            self.tx = None;
        }
    }

    pub fn finish(mut self) -> Result<String, SignError> {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(SignError::Sign("the signing thread failed".into())),
        }
    }
}

struct ChannelReader {
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: crossbeam_channel::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => (self.buf, self.at) = (b, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The trusted comment of a detached signature: minisign's own fields (`minisign -V` prints
/// it), then the archive's ID (and its root, when known before the bytes are hashed).
pub fn detached_comment(
    file: &Path,
    archive_id: Option<ArchiveId>,
    root: Option<&Hash>,
    what: &str,
) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = archive_id.map(|i| i.hex()).unwrap_or_else(|| "-".into());
    let root = root
        .map(|r| format!("\tkar-root:{}", hex(r)))
        .unwrap_or_default();
    format!("timestamp:{secs}\tfile:{name}\tkar-archive:{id}{root}\tkar-{what}")
}

/// Writes a new file (never overwrites), durable before this returns.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), SignError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SignError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                SignError::Io {
                    op: "create",
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write", path))
}

/// What `kar keygen` made.
#[derive(Debug, Clone, Serialize)]
pub struct KeygenReport {
    pub secret_key: PathBuf,
    pub public_key: PathBuf,
    pub key_id: String,
    pub encrypted: bool,
}

/// Makes a minisign key pair: `NAME.key` (mode 0600; encrypted with `passphrase`, or stored
/// unencrypted when it is `None`) and `NAME.pub`. Neither may exist.
pub fn keygen(name: &Path, passphrase: Option<String>) -> Result<KeygenReport, SignError> {
    let with = |ext: &str| {
        let mut s = name.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let (sk_path, pk_path) = (with(".key"), with(".pub"));
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            return Err(SignError::Exists { path: p.clone() });
        }
    }
    let encrypted = passphrase.is_some();
    let pair = match passphrase {
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| SignError::Sign(format!("generating a key pair: {e}")))?;
    let key_id = key_id_hex(&keynum(pair.pk.keynum()));
    let comment = format!(
        "minisign {}secret key {key_id} (kar keygen)",
        if encrypted { "encrypted " } else { "" }
    );
    let sk_text = pair
        .sk
        .to_box(Some(&comment))
        .map_err(|e| SignError::Sign(e.to_string()))?
        .into_string();
    let pk_text = pair
        .pk
        .to_box()
        .map_err(|e| SignError::Sign(e.to_string()))?
        .into_string();
    write_new(&sk_path, &sk_text, 0o600)?;
    write_new(&pk_path, &pk_text, 0o644)?;
    Ok(KeygenReport {
        secret_key: sk_path,
        public_key: pk_path,
        key_id,
        encrypted,
    })
}

/// A public key a verifier trusts, read from a minisign `.pub` file.
#[derive(Clone)]
pub struct TrustedKey {
    pub path: PathBuf,
    pk: minisign::PublicKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TrustedKey({}, {})",
            self.key_id_hex(),
            self.path.display()
        )
    }
}

impl TrustedKey {
    pub fn load(path: &Path) -> Result<TrustedKey, SignError> {
        let text = std::fs::read_to_string(path).map_err(io("read", path))?;
        let not_key = |detail: String| SignError::NotAKey {
            path: path.to_path_buf(),
            what: "public key",
            detail,
        };
        // A `.pub` file (comment line, key line), or the key line alone (`minisign -P`).
        let line = match text.lines().count() {
            1 => text.trim(),
            _ => text.lines().nth(1).unwrap_or_default().trim(),
        };
        let pk = minisign::PublicKey::from_base64(line).map_err(|e| not_key(e.to_string()))?;
        Ok(TrustedKey {
            path: path.to_path_buf(),
            pk,
        })
    }

    pub fn key_id_hex(&self) -> String {
        key_id_hex(&keynum(self.pk.keynum()))
    }
}

/// What a verifier trusts and where it looks for detached signatures.
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    pub trusted: Vec<TrustedKey>,
    /// Detached signature files named on the command line.
    pub signature_files: Vec<PathBuf>,
    /// Fail unless a trusted key signed the archive (set when `trusted` is not empty).
    pub require: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Valid, by a trusted key.
    Trusted,
    /// Valid under the public key the archive carries, which is not among the trusted ones: it
    /// proves the signature intact, not who made it.
    Untrusted,
    /// A detached signature by a key not given: it cannot be checked.
    Unchecked,
    /// The signature does not verify: the file or the signature was changed, or another key
    /// with the same ID made it.
    Invalid,
    /// A signature frame stating another archive (copied in from one).
    OtherArchive,
}

/// One signature found and what it proves.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureCheck {
    /// `embedded` (a frame of the archive) or `detached`.
    pub kind: &'static str,
    /// The frame's offset, or the file.
    pub location: String,
    pub key_id: String,
    /// When it was signed, by the signature's own (signed) statement or comment.
    pub signed_at: Option<String>,
    pub status: SignatureStatus,
    pub detail: String,
    /// Whether it binds what was checked: a detached signature binds the bytes; a frame binds
    /// the root it states, which only a check of the content proves (not `verify --stored`).
    pub binds_content: bool,
}

/// Every signature of an archive, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    pub signatures: Vec<SignatureCheck>,
    pub trusted_keys: Vec<String>,
    pub required: bool,
    /// Some signature by a trusted key verified over this archive (false when none is trusted).
    pub trusted_signature: bool,
    /// Not required, or required and met.
    pub ok: bool,
    /// Problems finding or reading signatures (an unreadable `.minisig`, a malformed frame).
    pub problems: Vec<String>,
}

/// The signature frames a stream verify kept (offset, content), with what they must state.
pub type StreamSignatures = (Expected, Vec<(u64, Vec<u8>)>);

/// What an embedded statement must state: this archive.
#[derive(Debug, Clone)]
pub struct Expected {
    pub archive_id: Option<ArchiveId>,
    pub root: Hash,
    pub manifest_id: Hash,
}

fn key_for<'a>(trust: &'a TrustOptions, keynum: &[u8]) -> Option<&'a TrustedKey> {
    trust.trusted.iter().find(|k| k.pk.keynum() == keynum)
}

/// Parses a `.minisig` text whose two signatures have their lengths (64 bytes of Ed25519 and the
/// 10 bytes before it; 64 for the global one): minisign 0.10 slices the global signature without
/// checking its length, so a short one, which anyone can write into a frame, would panic.
fn parse_minisig(text: &str) -> Result<minisign::SignatureBox, String> {
    use base64::Engine;
    let b64 = |line: Option<&str>| {
        line.and_then(|l| {
            base64::engine::general_purpose::STANDARD
                .decode(l.trim())
                .ok()
        })
        .map(|b| b.len())
    };
    let mut lines = text.lines();
    let (sig, global) = (b64(lines.nth(1)), b64(lines.nth(1)));
    if sig != Some(74) || global != Some(64) {
        return Err(
            "its signature lines are not a signature and a global signature of the right lengths"
                .into(),
        );
    }
    minisign::SignatureBox::from_string(text).map_err(|e| e.to_string())
}

/// minisign's verify, a panic inside it (malformed input it did not check) made an error.
fn verify_guarded(
    pk: &minisign::PublicKey,
    sig: &minisign::SignatureBox,
    data: impl std::io::Read + std::io::Seek,
) -> Result<(), String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        minisign::verify(pk, sig, data, true, false, false)
    })) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the signature is malformed".into()),
    }
}

/// Checks one signature document (a signature frame's content) against the archive it is in.
pub fn check_embedded(
    raw: &[u8],
    offset: u64,
    expect: &Expected,
    trust: &TrustOptions,
) -> SignatureCheck {
    let mut c = SignatureCheck {
        kind: "embedded",
        location: format!("frame at offset {offset}"),
        key_id: "?".into(),
        signed_at: None,
        status: SignatureStatus::Invalid,
        detail: String::new(),
        binds_content: true,
    };
    let (doc, st) = match SignatureDocument::decode(raw, offset) {
        Ok(v) => v,
        Err(e) => {
            c.detail = e.to_string();
            return c;
        }
    };
    c.key_id = key_id_hex(&st.key_id);
    c.signed_at = Some(utc(st.signed_ms));
    if Some(st.archive_id) != expect.archive_id
        || st.root != expect.root
        || st.manifest_id != expect.manifest_id
    {
        c.status = SignatureStatus::OtherArchive;
        c.detail = format!(
            "it states archive {} with root {}, not this archive",
            st.archive_id,
            hex(&st.root)
        );
        return c;
    }
    let sig = match parse_minisig(&doc.minisig) {
        Ok(s) => s,
        Err(e) => {
            c.detail = format!("not a minisign signature: {e}");
            return c;
        }
    };
    if sig.keynum() != st.key_id {
        c.detail = "its signature names another key than its statement".into();
        return c;
    }
    let (pk, trusted) = match key_for(trust, &st.key_id) {
        Some(k) => (k.pk.clone(), Some(k)),
        None => match minisign::PublicKey::from_base64(&doc.public_key) {
            Ok(pk) => (pk, None),
            Err(e) => {
                c.detail = format!("its public key is malformed: {e}");
                return c;
            }
        },
    };
    let data = Cursor::new(doc.statement.as_bytes());
    match verify_guarded(&pk, &sig, data) {
        Err(e) => {
            c.detail = format!("the signature does not verify: {e}");
        }
        Ok(()) => match trusted {
            Some(k) => {
                c.status = SignatureStatus::Trusted;
                c.detail = format!("valid, by the trusted key in {}", k.path.display());
            }
            None => {
                c.status = SignatureStatus::Untrusted;
                c.detail = "valid under the key the archive carries, which is not trusted".into();
            }
        },
    }
    c
}

/// Checks a detached signature over `bytes` (the archive's).
pub fn check_detached(
    sig_path: &Path,
    bytes: &[u8],
    embedded_keys: &[minisign::PublicKey],
    trust: &TrustOptions,
) -> Result<SignatureCheck, String> {
    let text =
        std::fs::read_to_string(sig_path).map_err(|e| format!("{}: {e}", sig_path.display()))?;
    let sig = parse_minisig(&text)
        .map_err(|e| format!("{}: not a minisign signature: {e}", sig_path.display()))?;
    let key_id = keynum(sig.keynum());
    let signed_at = sig.trusted_comment().ok().and_then(|t| {
        let secs: i64 = t
            .strip_prefix("timestamp:")?
            .split('\t')
            .next()?
            .parse()
            .ok()?;
        Some(utc(secs.saturating_mul(1000)))
    });
    let mut c = SignatureCheck {
        kind: "detached",
        location: sig_path.display().to_string(),
        key_id: key_id_hex(&key_id),
        signed_at,
        status: SignatureStatus::Unchecked,
        detail: String::new(),
        binds_content: true,
    };
    let trusted = key_for(trust, &key_id);
    let pk = match trusted {
        Some(k) => k.pk.clone(),
        None => match embedded_keys.iter().find(|k| k.keynum() == key_id) {
            Some(k) => k.clone(),
            None => {
                c.detail = "by a key not given (--trusted-key) and not the archive's signer".into();
                return Ok(c);
            }
        },
    };
    match verify_guarded(&pk, &sig, Cursor::new(bytes)) {
        Err(e) => {
            c.status = SignatureStatus::Invalid;
            c.detail = format!("does not verify over the archive's bytes: {e}");
        }
        Ok(()) if trusted.is_some() => {
            c.status = SignatureStatus::Trusted;
            c.detail = format!(
                "valid over the archive's bytes, by the trusted key in {}",
                trusted
                    .map(|k| k.path.display().to_string())
                    .unwrap_or_default()
            );
        }
        Ok(()) => {
            c.status = SignatureStatus::Untrusted;
            c.detail =
                "valid over the archive's bytes, by the archive's signer, who is not trusted"
                    .into();
        }
    }
    Ok(c)
}

/// The detached signature files next to an archive: `FILE.minisig` and `FILE.*.minisig`.
pub fn detached_beside(archive: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (archive.parent(), archive.file_name()) else {
        return Vec::new();
    };
    let listed = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(listed) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix(name.as_str()).is_some_and(|rest| {
                rest == ".minisig"
                    || (rest.starts_with('.') && rest.ends_with(".minisig") && rest.len() > 9)
            })
        })
        .map(|e| dir.join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// The signature frames of the archive in `bytes` (they lie between the content frames and the
/// manifest), found by walking the frame headers: no key or index needed, so the signatures of
/// an encrypted archive are checked without its key. Also what their statements must state.
fn embedded_frames(bytes: &[u8], problems: &mut Vec<String>) -> Option<StreamSignatures> {
    use crate::format::{file_header::FileHeader, footer, footer::Footer};
    let mut fail = |e: String| problems.push(format!("signatures not read: {e}"));
    let header = FileHeader::decode(bytes)
        .map_err(|e| fail(e.to_string()))
        .ok()?;
    let id = header.archive_id;
    if bytes.len() < header.size() + footer::LEN {
        fail("the file is shorter than a header and a footer".into());
        return None;
    }
    let f = Footer::decode(bytes, header.major, id)
        .map_err(|e| fail(e.to_string()))
        .ok()?;
    let data_end = (bytes.len() - footer::LEN) as u64;
    let (mh, _) = frame_at(bytes, f.manifest_offset, data_end, id)
        .map_err(|e| fail(e.to_string()))
        .ok()?;
    let expect = Expected {
        archive_id: id,
        root: f.root,
        manifest_id: mh.content_id,
    };
    let mut dec = ContentDecoder::new()
        .map_err(|e| fail(e.to_string()))
        .ok()?;
    let (mut out, mut at) = (Vec::new(), header.size() as u64);
    while at < f.manifest_offset {
        let (h, stored) = match frame_at(bytes, at, f.manifest_offset, id) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("signatures not all read: {e}"));
                break;
            }
        };
        if h.kind == FrameKind::Signature {
            let mut raw = Vec::new();
            match dec.decode(&h, stored, at, &mut raw) {
                Ok(()) if crate::format::frame::check_stored(&h, stored) => out.push((at, raw)),
                Ok(()) => problems.push(format!(
                    "signature frame at offset {at}: its bytes do not match their hash"
                )),
                Err(e) => problems.push(format!("signature frame at offset {at}: {e}")),
            }
        }
        at += h.frame_len();
    }
    Some((expect, out))
}

/// Every signature of an archive file (its frames, the `.minisig` files beside it, the ones
/// named) checked against the trusted keys.
pub fn check_archive(a: &Archive, trust: &TrustOptions) -> SignatureReport {
    check_bytes(a.bytes(), a.path(), trust, true)
}

/// [`check_archive`] of an archive's bytes, `path` naming it (and where its `.minisig` files
/// are): it needs no key, so an encrypted archive's signatures are checked on a courier's
/// machine too.
///
/// `root_checked` says whether the caller checks the footer's root against the content (every
/// verify but `--stored`): a signature frame states that root, so without the check it proves
/// nothing about the content, and it does not meet a required signature.
pub fn check_bytes(
    bytes: &[u8],
    path: &Path,
    trust: &TrustOptions,
    root_checked: bool,
) -> SignatureReport {
    let mut problems = Vec::new();
    let mut signatures = Vec::new();
    let mut embedded_keys = Vec::new();
    if let Some((expect, frames)) = embedded_frames(bytes, &mut problems) {
        for (off, raw) in frames {
            let mut c = check_embedded(&raw, off, &expect, trust);
            if !root_checked {
                c.binds_content = false;
                c.detail.push_str(
                    "; the root it states was not checked against the content (no key): it does not vouch for it",
                );
            }
            if let Ok((doc, _)) = SignatureDocument::decode(&raw, off)
                && matches!(
                    c.status,
                    SignatureStatus::Trusted | SignatureStatus::Untrusted
                )
                && let Ok(pk) = minisign::PublicKey::from_base64(&doc.public_key)
            {
                embedded_keys.push(pk);
            }
            signatures.push(c);
        }
    }
    let mut files = detached_beside(path);
    for f in &trust.signature_files {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    for f in files {
        match check_detached(&f, bytes, &embedded_keys, trust) {
            Ok(c) => signatures.push(c),
            Err(e) => problems.push(e),
        }
    }
    verdict(signatures, trust, problems)
}

/// The verdict over the signatures found.
pub fn verdict(
    signatures: Vec<SignatureCheck>,
    trust: &TrustOptions,
    problems: Vec<String>,
) -> SignatureReport {
    let trusted_signature = signatures
        .iter()
        .any(|s| s.status == SignatureStatus::Trusted && s.binds_content);
    SignatureReport {
        trusted_keys: trust.trusted.iter().map(|k| k.key_id_hex()).collect(),
        required: trust.require,
        trusted_signature,
        ok: !trust.require || trusted_signature,
        problems,
        signatures,
    }
}

impl SignatureReport {
    /// One line on why a required signature is missing.
    pub fn refusal(&self) -> String {
        let found: Vec<String> = self
            .signatures
            .iter()
            .map(|s| {
                format!(
                    "{} {} by key {}: {:?}",
                    s.kind, s.location, s.key_id, s.status
                )
            })
            .collect();
        format!(
            "no valid signature by a trusted key ({}) over this archive; found: {}",
            self.trusted_keys.join(", "),
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join("; ")
            }
        )
    }
}

/// What `kar sign` made.
#[derive(Debug, Clone, Serialize)]
pub struct CountersignReport {
    pub archive: PathBuf,
    pub root_hash: String,
    pub key_id: String,
    pub signature_file: PathBuf,
}

/// Countersigns an archive (an auditor's signature): a detached minisign signature over its
/// bytes, `FILE.<key ID>.minisig` beside it unless `out` names the file. The archive must
/// verify first (every frame's stored hash): a signature vouches for what was checked.
pub fn countersign(
    files: &[PathBuf],
    key: &SigningKey,
    out: Option<&Path>,
) -> Result<CountersignReport, super::ArchiveError> {
    use super::ArchiveError;
    let first = files.first().ok_or_else(|| ArchiveError::Missing {
        path: PathBuf::from("-"),
        what: "archive named".into(),
    })?;
    let source = if files.len() > 1 {
        super::source::map_list(files)?
    } else {
        super::Source::map(first)?
    };
    let source = std::sync::Arc::new(source);
    // An encrypted archive is countersigned as the courier sees it: its stored bytes checked.
    let header = crate::format::file_header::FileHeader::decode(&source)
        .map_err(ArchiveError::format(first, ""))?;
    let level = if header.is_encrypted() {
        super::verify::VerifyLevel::Stored
    } else {
        super::verify::VerifyLevel::Fast
    };
    let v = super::verify::verify_shared(source.clone(), first, level);
    if let Some(p) = v.problems.first() {
        return Err(ArchiveError::Sign {
            path: first.clone(),
            detail: format!(
                "the archive does not verify ({} problem(s), first: {p}); nothing was signed",
                v.problems.len()
            ),
        });
    }
    let root = super::reader::root_of(source.clone(), first)?;
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => {
            let mut s = first.as_os_str().to_owned();
            s.push(format!(".{}.minisig", key.key_id_hex()));
            PathBuf::from(s)
        }
    };
    let sign_err = |e: SignError| ArchiveError::Sign {
        path: first.clone(),
        detail: e.to_string(),
    };
    if path.exists() {
        return Err(sign_err(SignError::Exists { path }));
    }
    // An encrypted archive's root is not checked here (no key): the comment does not state it.
    let checked_root = (!header.is_encrypted()).then_some(&root);
    let comment = detached_comment(first, header.archive_id, checked_root, "countersignature");
    let text = key
        .sign_reader(Cursor::new(&source[..]), &comment)
        .map_err(sign_err)?;
    write_new(&path, &text, 0o644).map_err(sign_err)?;
    Ok(CountersignReport {
        archive: first.clone(),
        root_hash: hex(&root),
        key_id: key.key_id_hex(),
        signature_file: path,
    })
}

/// The embedded signatures of a stream that was verified (`kar verify -`): the frames it kept,
/// checked against what its footer and manifest state. A stream has no file beside it, so
/// detached signatures are not looked for.
pub fn check_stream(report: &super::verify::VerifyReport, trust: &TrustOptions) -> SignatureReport {
    let mut problems = Vec::new();
    let mut signatures = Vec::new();
    match &report.stream_signatures {
        Some((expect, frames)) => {
            for (off, raw) in frames {
                signatures.push(check_embedded(raw, *off, expect, trust));
            }
        }
        None => problems
            .push("the stream did not verify to its end: its signatures were not checked".into()),
    }
    if !trust.signature_files.is_empty() {
        problems.push("a detached signature covers a file's bytes: save the stream (--tee) and verify the file with --signature".into());
    }
    verdict(signatures, trust, problems)
}
