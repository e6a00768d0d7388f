//! Encryption at rest (spec §15): the file key, wrapped by age for each recipient (X25519 `age1…`,
//! SSH Ed25519 and RSA public keys) and/or for a passphrase, in key envelope frames; opening them
//! with identities (age identity files, unencrypted SSH private keys) or the passphrase.
//!
//! Each envelope is a whole age file (binary) whose plaintext is the 32-byte file key, so an
//! auditor can open it with the `age` tool. Four failures are kept apart: no identity given, a
//! wrong key (no identity matches a recipient), a changed envelope (age refuses its header or
//! payload), and, frame by frame, a changed ciphertext (`format::crypt`). None prints key
//! material.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::SecretString;
use thiserror::Error;

use crate::format::crypt::{FileKey, FrameKeys};

#[derive(Debug, Error)]
pub enum CryptError {
    #[error(
        "{0:?} is not a recipient: give an age public key (age1...), an SSH public key (ssh-ed25519 / ssh-rsa ...), or a file holding them"
    )]
    NotARecipient(String),
    #[error("{path}: not an identity: {detail}", path = .path.display())]
    NotAnIdentity { path: PathBuf, detail: String },
    #[error("{path}: the SSH private key is encrypted: kar reads unencrypted SSH keys (or give an age identity file)", path = .path.display())]
    EncryptedSshKey { path: PathBuf },
    #[error("making the key envelope failed: {0}")]
    Envelope(String),
    #[error(
        "the archive is encrypted: give an identity (--identity FILE: an age identity file or an SSH private key) or its passphrase (KAR_ARCHIVE_PASSPHRASE)"
    )]
    MissingIdentity,
    #[error(
        "wrong key: none of the identities given opens this archive ({detail}; or the envelope's recipient lines were changed, which reads the same)"
    )]
    WrongKey { detail: String },
    #[error("wrong passphrase: the archive's passphrase envelope does not open with it")]
    WrongPassphrase,
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    #[error(
        "the key envelope at offset {offset} has been changed or damaged (age refuses it: {detail})"
    )]
    TamperedEnvelope { offset: u64, detail: String },
}

/// How a backup encrypts: the file key's derived keys and the envelopes that carry it.
pub struct Sealing {
    pub keys: Arc<FrameKeys>,
    /// The first 16 bytes of every nonce: `None` (what a backup gives), a fresh random prefix
    /// drawn by each writer, so that no two writers seal under one key with one nonce; fixed
    /// only by the test vectors, whose bytes must not change.
    pub nonce_prefix: Option<[u8; 16]>,
    /// Each a whole age file whose plaintext is the file key: one for the recipients, one for
    /// the passphrase (age does not mix the two in one file).
    pub envelopes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealing({} envelope(s))", self.envelopes.len())
    }
}

/// A recipient the file key is wrapped for.
pub type Recipient = Box<dyn age::Recipient + Send>;

/// Parses `--encrypt-to`: an age or SSH public key, or a file of them (one a line, `#` comments).
pub fn parse_recipients(arg: &str) -> Result<Vec<Recipient>, CryptError> {
    if let Some(r) = parse_one(arg.trim()) {
        return Ok(vec![r]);
    }
    // A secret key given by mistake is not echoed.
    let named = if arg.contains("SECRET-KEY") || arg.contains("PRIVATE KEY") {
        "the value given (a secret key? give the public one)".to_string()
    } else {
        format!("{arg:?}")
    };
    let arg_shown = named;
    let path = Path::new(arg);
    let text =
        std::fs::read_to_string(path).map_err(|_| CryptError::NotARecipient(arg_shown.clone()))?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_one(line).ok_or_else(|| CryptError::NotARecipient(arg_shown.clone()))?);
    }
    if out.is_empty() {
        return Err(CryptError::NotARecipient(arg_shown));
    }
    Ok(out)
}

fn parse_one(s: &str) -> Option<Recipient> {
    if let Ok(r) = s.parse::<age::x25519::Recipient>() {
        return Some(Box::new(r));
    }
    s.parse::<age::ssh::Recipient>()
        .ok()
        .map(|r| Box::new(r) as Recipient)
}

/// A new file key wrapped for `recipients` and/or `passphrase`.
pub fn seal_new(
    recipients: &[Recipient],
    passphrase: Option<SecretString>,
) -> Result<Sealing, CryptError> {
    let mut key = FileKey([0; 32]);
    getrandom::fill(&mut key.0).map_err(|e| CryptError::Envelope(e.to_string()))?;
    let mut envelopes = Vec::new();
    if !recipients.is_empty() {
        let enc = age::Encryptor::with_recipients(
            recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| CryptError::Envelope(e.to_string()))?;
        envelopes.push(wrap(enc, &key)?);
    }
    if let Some(pw) = passphrase {
        envelopes.push(wrap(age::Encryptor::with_user_passphrase(pw), &key)?);
    }
    if envelopes.is_empty() {
        return Err(CryptError::Envelope(
            "no recipient and no passphrase".into(),
        ));
    }
    Ok(Sealing {
        keys: Arc::new(FrameKeys::derive(&key)),
        nonce_prefix: None,
        envelopes,
    })
}

fn wrap(enc: age::Encryptor, key: &FileKey) -> Result<Vec<u8>, CryptError> {
    let err = |e: std::io::Error| CryptError::Envelope(e.to_string());
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).map_err(err)?;
    w.write_all(&key.0).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(out)
}

/// What opens an encrypted archive: identities and/or a passphrase (asked for only when an
/// envelope is for a passphrase).
#[derive(Default)]
pub struct Unlock {
    pub identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    pub passphrase: Option<Box<dyn Fn() -> Option<SecretString> + Send + Sync>>,
    /// The passphrase once asked for: a command opens an archive more than once, and asks once.
    asked: std::sync::OnceLock<Option<SecretString>>,
    /// Keys already opened, by the BLAKE3 of the envelopes: scrypt takes a second each time.
    opened: std::sync::Mutex<Vec<([u8; 32], Arc<FrameKeys>)>>,
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Unlock({} identities, passphrase: {})",
            self.identities.len(),
            self.passphrase.is_some()
        )
    }
}

impl Unlock {
    /// Adds the identities of a file: an age identity file (`AGE-SECRET-KEY-1…` lines) or an
    /// unencrypted SSH private key (Ed25519 or RSA).
    pub fn add_identity_file(&mut self, path: &Path) -> Result<(), CryptError> {
        let not = |detail: String| CryptError::NotAnIdentity {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read(path).map_err(|e| not(e.to_string()))?;
        if let Ok(f) = age::IdentityFile::from_buffer(&text[..])
            && let Ok(ids) = f.into_identities()
            && !ids.is_empty()
        {
            self.identities.extend(ids);
            return Ok(());
        }
        let name = path.display().to_string();
        match age::ssh::Identity::from_buffer(&text[..], Some(name)) {
            Ok(age::ssh::Identity::Unencrypted(k)) => {
                self.identities
                    .push(Box::new(age::ssh::Identity::Unencrypted(k)));
                Ok(())
            }
            Ok(age::ssh::Identity::Encrypted(_)) => Err(CryptError::EncryptedSshKey {
                path: path.to_path_buf(),
            }),
            Ok(age::ssh::Identity::Unsupported(_)) => {
                Err(not("an SSH key of a type age does not support".into()))
            }
            Err(_) => Err(not(
                "neither an age identity file nor an SSH private key".into()
            )),
        }
    }
}

impl Unlock {
    fn passphrase(&self) -> Option<SecretString> {
        self.asked
            .get_or_init(|| self.passphrase.as_ref().and_then(|ask| ask()))
            .clone()
    }
}

/// Opens the envelopes (offset, bytes) with what `unlock` holds: the archive's frame keys.
pub fn open_envelopes(
    envelopes: &[(u64, &[u8])],
    unlock: &Unlock,
) -> Result<Arc<FrameKeys>, CryptError> {
    let mut h = blake3::Hasher::new();
    for (_, e) in envelopes {
        h.update(&(e.len() as u64).to_le_bytes());
        h.update(e);
    }
    let tag = *h.finalize().as_bytes();
    let cached = unlock
        .opened
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, k)| k.clone());
    if let Some(k) = cached {
        return Ok(k);
    }
    let keys = open_uncached(envelopes, unlock)?;
    unlock
        .opened
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((tag, keys.clone()));
    Ok(keys)
}

fn open_uncached(
    envelopes: &[(u64, &[u8])],
    unlock: &Unlock,
) -> Result<Arc<FrameKeys>, CryptError> {
    let mut failure = None;
    let mut asked = false;
    for (offset, bytes) in envelopes {
        let tampered = |e: age::DecryptError| CryptError::TamperedEnvelope {
            offset: *offset,
            detail: e.to_string(),
        };
        let d = age::Decryptor::new_buffered(*bytes).map_err(tampered)?;
        let reader = if d.is_scrypt() {
            let Some(pw) = unlock.passphrase() else {
                continue;
            };
            asked = true;
            let id = age::scrypt::Identity::new(pw);
            match d.decrypt(std::iter::once(&id as &dyn age::Identity)) {
                Ok(r) => r,
                Err(
                    age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed,
                ) => {
                    failure = Some(CryptError::WrongPassphrase);
                    continue;
                }
                Err(e) => return Err(tampered(e)),
            }
        } else {
            if unlock.identities.is_empty() {
                continue;
            }
            match d.decrypt(
                unlock
                    .identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            ) {
                Ok(r) => r,
                Err(age::DecryptError::NoMatchingKeys) => {
                    failure = Some(CryptError::WrongKey {
                        detail: format!(
                            "{} identit{} tried against the recipients' envelope at offset {offset}",
                            unlock.identities.len(),
                            if unlock.identities.len() == 1 {
                                "y"
                            } else {
                                "ies"
                            }
                        ),
                    });
                    continue;
                }
                Err(e) => return Err(tampered(e)),
            }
        };
        return read_key(reader, *offset).map(|k| Arc::new(FrameKeys::derive(&k)));
    }
    Err(failure.unwrap_or(if asked {
        CryptError::WrongPassphrase
    } else {
        CryptError::MissingIdentity
    }))
}

fn read_key(mut r: impl Read, offset: u64) -> Result<FileKey, CryptError> {
    let mut key = FileKey([0; 32]);
    let mut rest = Vec::new();
    let tampered = |detail: String| CryptError::TamperedEnvelope { offset, detail };
    r.read_exact(&mut key.0)
        .map_err(|e| tampered(e.to_string()))?;
    r.read_to_end(&mut rest)
        .map_err(|e| tampered(e.to_string()))?;
    if !rest.is_empty() {
        return Err(tampered("it holds more than a 32-byte file key".into()));
    }
    Ok(key)
}
