//! `kar schemas FILE --export DIR`: the registry snapshot as a plain tree an operator can read
//! without kar:
//!
//! ```text
//! DIR/_manifest.json                      restore order, ID → subject/version index, counts
//! DIR/_global_config.json                 global configuration (data contracts too) and mode
//! DIR/subjects/<subject>/_metadata.json   the subject's own configuration (whole), mode, deleted flag, versions
//! DIR/subjects/<subject>/v<N>.json        each version in full, schema text included
//! DIR/contexts/<context>/…                 every other registry context, the same tree
//! ```
//!
//! Subject names become file names reversibly and safely on FAT, NTFS and case-insensitive file
//! systems: ASCII letters in lower case, digits, `-` and `_` stay; an upper-case letter becomes `^`
//! and its lower case; every other byte (and a leading `.`) becomes `%xx` (lower-case hex), as does
//! the first letter of a name Windows reserves (`con`, `nul`, `com1`, …).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use thiserror::Error;

use super::snapshot::{RegistrySnapshot, SubjectState};
use crate::archive::{Archive, ArchiveError};

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists and is not empty: export into a new or empty folder", path = .path.display())]
    NotEmpty { path: PathBuf },
}

/// The file name for a subject (see the module docs).
pub fn file_name(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len() + 4);
    for (i, b) in subject.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(b as char),
            b'.' if i > 0 => out.push('.'),
            b'A'..=b'Z' => {
                out.push('^');
                out.push(b.to_ascii_lowercase() as char);
            }
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    // Windows reserves these names whatever the extension: escape the first letter.
    let stem = out.split('.').next().unwrap_or_default();
    let reserved = ["con", "prn", "aux", "nul"].contains(&stem)
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        out = format!("%{:02x}{}", out.as_bytes()[0], &out[1..]);
    }
    out
}

/// The subject a file name stands for.
pub fn subject_name(file: &str) -> Option<String> {
    let mut out = Vec::with_capacity(file.len());
    let b = file.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'^' => {
                out.push(b.get(i + 1)?.to_ascii_uppercase());
                i += 2;
            }
            b'%' => {
                out.push(u8::from_str_radix(file.get(i + 1..i + 3)?, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn write(path: PathBuf, v: &Value) -> Result<(), ExportError> {
    let mut text = serde_json::to_string_pretty(v).expect("json");
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| ExportError::Io { path, source })
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub subjects: usize,
    pub versions: usize,
    pub files: usize,
}

pub fn export(
    a: &Archive,
    snap: &RegistrySnapshot,
    dir: &Path,
) -> Result<ExportReport, ExportError> {
    refuse_non_empty(dir)?;
    let subjects_dir = dir.join("subjects");
    std::fs::create_dir_all(&subjects_dir).map_err(|source| ExportError::Io {
        path: subjects_dir.clone(),
        source,
    })?;
    let mut files = 0;
    // Schema ID → the subject versions that have it.
    let mut by_id: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    for s in &snap.subjects {
        files += export_subject(a, s, &subjects_dir, &mut by_id)?;
    }
    write(
        dir.join("_global_config.json"),
        &json!({
            "compatibility": snap.global.compatibility,
            "config": snap.global.own_config().map(|c| c.request()),
            "mode": snap.global.mode,
        }),
    )?;
    let manifest = json!({
        "source": snap.source,
        "captured_at_ms": snap.captured_at_ms,
        "archive_root_hash": crate::format::hex(&a.root()),
        "restore_order": snap.restore_order,
        "order_complete": snap.order_complete,
        "order_problems": snap.order_problems,
        "pulled_in": snap.pulled_in,
        "ids": by_id.iter().map(|(id, v)| (id.to_string(), Value::Array(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "counts": {"subjects": snap.subjects.len(), "versions": snap.version_count(), "ids": by_id.len()},
        "file_names": "subject names are encoded: see kar's registry::export docs (^x = upper-case X, %XX = byte XX)",
    });
    write(dir.join("_manifest.json"), &manifest)?;
    files += 2;
    let (mut subjects, mut versions) = (snap.subjects.len(), snap.version_count());
    // Every other context as a tree of its own: IDs are scoped per context.
    for c in &snap.contexts {
        let name = c.context.as_deref().unwrap_or(".");
        let r = export(a, c, &dir.join("contexts").join(file_name(name)))?;
        subjects += r.subjects;
        versions += r.versions;
        files += r.files;
    }
    Ok(ExportReport {
        dir: dir.to_path_buf(),
        subjects,
        versions,
        files,
    })
}

/// An export goes into a new or empty directory only: nothing is overwritten.
fn refuse_non_empty(dir: &Path) -> Result<(), ExportError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|source| ExportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if entries.next().is_some() {
            return Err(ExportError::NotEmpty {
                path: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// One subject's directory: a file per version with its schema text, and `_metadata.json`.
/// Returns the files written.
fn export_subject(
    a: &Archive,
    s: &SubjectState,
    subjects_dir: &Path,
    by_id: &mut BTreeMap<u32, Vec<Value>>,
) -> Result<usize, ExportError> {
    let sdir = subjects_dir.join(file_name(&s.subject));
    std::fs::create_dir_all(&sdir).map_err(|source| ExportError::Io {
        path: sdir.clone(),
        source,
    })?;
    for v in &s.versions {
        let id = crate::format::parse_hex(&v.schema).ok_or_else(|| ArchiveError::Missing {
            path: a.path().to_path_buf(),
            what: format!("a schema blob ID for {} v{}", s.subject, v.version),
        })?;
        let text = String::from_utf8_lossy(&a.read_content(&id)?).into_owned();
        let mut rec = json!({
            "subject": s.subject,
            "version": v.version,
            "id": v.id,
            "schemaType": v.schema_type,
            "schema": text,
            "references": v.references,
            "deleted": v.deleted,
        });
        if let Some(m) = &v.metadata {
            rec["metadata"] = m.clone();
        }
        if let Some(r) = &v.rule_set {
            rec["ruleSet"] = r.clone();
        }
        write(sdir.join(format!("v{}.json", v.version)), &rec)?;
        by_id
            .entry(v.id)
            .or_default()
            .push(json!({"subject": s.subject, "version": v.version}));
    }
    let meta = json!({
        "subject": s.subject,
        "deleted": s.deleted,
        "compatibility": s.compatibility,
        "config": s.own_config().map(|c| c.request()),
        "mode": s.mode,
        "versions": s.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        "deleted_versions": s.versions.iter().filter(|v| v.deleted).map(|v| v.version).collect::<Vec<_>>(),
    });
    write(sdir.join("_metadata.json"), &meta)?;
    Ok(s.versions.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_file_names_are_safe_and_reversible() {
        for s in [
            "orders-value",
            "Orders-Value",
            "a:b/c\\d",
            ".hidden",
            "x..y",
            "ü-topic",
            "con",
            "com1.x",
            "^%",
        ] {
            let f = file_name(s);
            assert!(
                f.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.^%".contains(&b)),
                "{f}"
            );
            assert!(!f.starts_with('.'), "{f}");
            assert_eq!(subject_name(&f).as_deref(), Some(s));
        }
        assert_ne!(file_name("Orders"), file_name("orders"));
        assert_eq!(file_name("con"), "%63on");
    }
}
