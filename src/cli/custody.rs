//! `kar keygen`, `kar sign`, and the flags of verify and restore that say which signing keys are
//! trusted; passphrases from the environment or the terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use age::secrecy::SecretString;
use clap::Args;

use super::out::outln;
use crate::archive::signing::{
    CountersignReport, KeygenReport, SignatureReport, SigningKey, TrustOptions, TrustedKey,
};

/// The environment variable a signing key's passphrase may come from.
pub const PASSPHRASE_ENV: &str = "KAR_SIGNING_PASSPHRASE";
/// The environment variable an encrypted archive's passphrase may come from.
pub const ARCHIVE_PASSPHRASE_ENV: &str = "KAR_ARCHIVE_PASSPHRASE";

/// What opens an encrypted archive (verify, inspect, restore, schemas).
#[derive(Debug, Clone, Default, Args)]
pub struct UnlockArgs {
    /// An identity that opens an encrypted archive (repeatable): an age identity file
    /// (AGE-SECRET-KEY-1...) or an unencrypted SSH private key (Ed25519, RSA); an archive
    /// encrypted to a passphrase takes it from KAR_ARCHIVE_PASSPHRASE or the terminal
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
}

impl UnlockArgs {
    pub fn unlock(&self) -> anyhow::Result<std::sync::Arc<crate::archive::crypt::Unlock>> {
        let mut u = crate::archive::crypt::Unlock::default();
        for p in &self.identities {
            u.add_identity_file(p)?;
        }
        u.passphrase = Some(Box::new(|| {
            archive_passphrase("Passphrase of the archive: ").map(SecretString::from)
        }));
        Ok(std::sync::Arc::new(u))
    }
}

/// The archive passphrase: KAR_ARCHIVE_PASSPHRASE, else asked on the terminal.
fn archive_passphrase(prompt: &str) -> Option<String> {
    if let Ok(p) = std::env::var(ARCHIVE_PASSPHRASE_ENV) {
        return Some(p);
    }
    rpassword::prompt_password(prompt).ok()
}

/// The sealing of a backup: `--encrypt-to` recipients and/or `--encrypt-passphrase`.
pub fn sealing(
    recipients: &[String],
    with_passphrase: bool,
) -> anyhow::Result<Option<std::sync::Arc<crate::archive::crypt::Sealing>>> {
    if recipients.is_empty() && !with_passphrase {
        return Ok(None);
    }
    let mut rs = Vec::new();
    for r in recipients {
        rs.extend(crate::archive::crypt::parse_recipients(r)?);
    }
    let pw = if with_passphrase {
        let pw = match std::env::var(ARCHIVE_PASSPHRASE_ENV) {
            Ok(p) => p,
            Err(_) => {
                let first = rpassword::prompt_password("Passphrase for the archive: ").map_err(|e| {
                    anyhow::anyhow!("no passphrase: set {ARCHIVE_PASSPHRASE_ENV} or answer on a terminal ({e})")
                })?;
                let again = rpassword::prompt_password("The same passphrase again: ")?;
                anyhow::ensure!(
                    first == again,
                    "the passphrases differ; nothing was written"
                );
                first
            }
        };
        anyhow::ensure!(!pw.is_empty(), "an empty archive passphrase");
        Some(SecretString::from(pw))
    } else {
        None
    };
    Ok(Some(std::sync::Arc::new(crate::archive::crypt::seal_new(
        &rs, pw,
    )?)))
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Writes NAME.key (the secret key, mode 0600) and NAME.pub (the public key), minisign's
    /// formats; neither may exist
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
    /// Store the secret key unencrypted (as `minisign -G -W`); by default it is encrypted with a
    /// passphrase from KAR_SIGNING_PASSPHRASE or asked for twice on the terminal
    #[arg(long)]
    pub unencrypted: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The archive (a file, a set's first volume, or every volume of a set)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The signer's minisign secret key (passphrase from KAR_SIGNING_PASSPHRASE or the terminal)
    #[arg(long = "with", value_name = "KEY")]
    pub with: PathBuf,
    /// The countersignature file [default: FILE.<key ID>.minisig beside the archive]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Which signers a reader trusts (verify, restore).
#[derive(Debug, Clone, Default, Args)]
pub struct TrustArgs {
    /// A minisign public key (NAME.pub) whose signature is trusted (repeatable): the archive
    /// must carry a valid signature by one of them over its root
    #[arg(long = "trusted-key", value_name = "PUB")]
    pub trusted_keys: Vec<PathBuf>,
    /// A detached signature file to check besides FILE.minisig and FILE.*.minisig, which are
    /// found beside the archive (repeatable)
    #[arg(long = "signature", value_name = "FILE")]
    pub signatures: Vec<PathBuf>,
}

impl TrustArgs {
    /// The trust options; `require` when trusted keys are given or `required` says so.
    pub fn options(&self, required: bool) -> anyhow::Result<Option<TrustOptions>> {
        if self.trusted_keys.is_empty() && self.signatures.is_empty() && !required {
            return Ok(None);
        }
        anyhow::ensure!(
            !(required && self.trusted_keys.is_empty()),
            "--require-signature needs the signers' public keys: --trusted-key PUB"
        );
        let trusted = self
            .trusted_keys
            .iter()
            .map(|p| TrustedKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(TrustOptions {
            require: !trusted.is_empty(),
            trusted,
            signature_files: self.signatures.clone(),
        }))
    }
}

/// A passphrase from the environment, else asked on the terminal (never echoed); `None` when
/// there is neither.
fn passphrase(prompt: &str) -> Option<String> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return Some(p);
    }
    rpassword::prompt_password(prompt).ok()
}

/// Loads a signing key, asking for its passphrase only if it is encrypted.
pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    Ok(SigningKey::load(path, || {
        passphrase(&format!("Passphrase for {}: ", path.display()))
    })?)
}

pub fn run_keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let pw = if a.unencrypted {
        None
    } else if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        Some(p)
    } else {
        let first = rpassword::prompt_password("Passphrase for the new secret key: ")
            .map_err(|e| anyhow::anyhow!("no passphrase: set {PASSPHRASE_ENV}, answer on a terminal, or give --unencrypted ({e})"))?;
        let again = rpassword::prompt_password("The same passphrase again: ")?;
        anyhow::ensure!(
            first == again,
            "the passphrases differ; nothing was written"
        );
        Some(first)
    };
    anyhow::ensure!(
        pw.as_deref() != Some(""),
        "an empty passphrase: give --unencrypted to store the key unencrypted"
    );
    let r = crate::archive::signing::keygen(&a.out, pw)?;
    if a.json {
        super::print_json(&r)?;
    } else {
        print_keygen(&r);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_keygen(r: &KeygenReport) {
    outln!("key ID      {}", r.key_id);
    outln!(
        "secret key  {}{}",
        r.secret_key.display(),
        if r.encrypted {
            " (encrypted)"
        } else {
            " (unencrypted: keep it offline)"
        }
    );
    outln!("public key  {}", r.public_key.display());
}

pub fn run_sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let key = load_key(&a.with)?;
    let r = crate::archive::signing::countersign(&a.files, &key, a.out.as_deref())?;
    if a.json {
        super::print_json(&r)?;
    } else {
        print_countersign(&r);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_countersign(r: &CountersignReport) {
    outln!("archive    {}", r.archive.display());
    outln!("root       {}", r.root_hash);
    outln!("signed by  {}", r.key_id);
    outln!("signature  {}", r.signature_file.display());
}

/// The signature lines of a verify report.
pub fn print_signatures(r: &SignatureReport) {
    for s in &r.signatures {
        outln!(
            "signature {} {} by key {} {}: {:?}: {}",
            s.kind,
            s.location,
            s.key_id,
            s.signed_at
                .as_deref()
                .map(|t| format!("at {t}"))
                .unwrap_or_default(),
            s.status,
            s.detail
        );
    }
    for p in &r.problems {
        outln!("signature problem: {p}");
    }
    if r.signatures.is_empty() {
        outln!("signature none found");
    }
    if r.required {
        if r.ok {
            outln!("trust     OK: signed by a trusted key");
        } else {
            outln!("trust     FAILED: {}", r.refusal());
        }
    }
}
