//! The schema phase's progress, in a small redb file, so a killed restore continues where it
//! stopped: every version registered and the ID mapping are stored as they happen; registering
//! again what may have been registered just before a kill is harmless (the registry answers with
//! the same ID). The file is locked while a restore uses it, and refuses to serve another restore.
//!
//! The records' progress is not here: it is committed in Kafka with the records themselves (see
//! [`super::progress`]), so it is right whichever state file, or machine, the next run uses.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const ID_MAP: TableDefinition<u32, u32> = TableDefinition::new("id_map");
const VERSIONS: TableDefinition<(&str, i32), i32> = TableDefinition::new("versions_done");
const DONE: TableDefinition<&str, bool> = TableDefinition::new("done");

#[derive(Debug, Error)]
pub enum StateError {
    #[error("restore state {path}: {detail}", path = .path.display())]
    Db { path: PathBuf, detail: String },
    #[error(
        "another restore is running with the state file {path} (it is locked); wait for it to end, or stop it first",
        path = .path.display()
    )]
    Busy { path: PathBuf },
    #[error(
        "restore state {path} belongs to another restore ({detail}); remove it to start over, or give another --state",
        path = .path.display()
    )]
    Mismatch { path: PathBuf, detail: String },
    #[error(
        "restore state {path} is unreadable ({detail}); remove it and run again: it holds only the schema phase's progress, which the next run redoes harmlessly (the records' progress is in Kafka)",
        path = .path.display()
    )]
    Unreadable { path: PathBuf, detail: String },
}

/// Where a new state file is made before it is renamed into place.
fn making(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

/// Makes a new state file whole (database and fingerprint) under another name, then links it into
/// place: a kill while it is made never leaves, where the next run looks, a file that is not a
/// database; and of two first runs at once, one makes the file and the lock decides who uses it.
fn create(path: &Path, fingerprint: &str) -> Result<(), StateError> {
    let tmp = making(path);
    let err = |e: &dyn std::fmt::Display| StateError::Db {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let busy = || StateError::Busy {
        path: path.to_path_buf(),
    };
    // `--state DIR` may name a folder that is not there yet.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Db {
            path: path.to_path_buf(),
            detail: format!("making the folder {}: {e}", dir.display()),
        })?;
    }
    // A leftover of a run killed while making it, unless another run is making it now.
    if let Ok(f) = std::fs::File::open(&tmp) {
        f.try_lock().map_err(|_| busy())?;
        let _ = std::fs::remove_file(&tmp);
    }
    let db = Database::create(&tmp).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => busy(),
        e => err(&e),
    })?;
    // It names subjects and the target's configurations: readable by its owner only (an
    // encrypted archive's state file sits beside it on the stick by default).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            StateError::Db {
                path: path.to_path_buf(),
                detail: format!("making it private: {e}"),
            }
        })?;
    }
    let tx = db.begin_write().map_err(|e| err(&e))?;
    {
        let mut t = tx.open_table(META).map_err(|e| err(&e))?;
        t.insert("fingerprint", fingerprint).map_err(|e| err(&e))?;
    }
    tx.commit().map_err(|e| err(&e))?;
    drop(db);
    let linked = std::fs::hard_link(&tmp, path);
    if path.exists() {
        // Linked, or another run made it first: the lock decides which one uses it.
        let _ = std::fs::remove_file(&tmp);
        return Ok(());
    }
    // A file system without hard links (FAT, exFAT): a rename, which would replace a file another
    // run made in the same instant.
    linked
        .or_else(|_| std::fs::rename(&tmp, path))
        .map_err(|e| err(&e))
}

/// (subject, version) as a map key.
pub type SubjectVersionKey = (String, i32);

pub struct State {
    db: Database,
    path: PathBuf,
}

impl State {
    /// Opens or creates the state, checking it belongs to this restore (`fingerprint`).
    pub fn open(path: &Path, fingerprint: &str) -> Result<State, StateError> {
        if !path.exists() {
            create(path, fingerprint)?;
        }
        let db = Database::open(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StateError::Busy {
                path: path.to_path_buf(),
            },
            e => StateError::Unreadable {
                path: path.to_path_buf(),
                detail: e.to_string(),
            },
        })?;
        let s = State {
            db,
            path: path.to_path_buf(),
        };
        match s.meta("fingerprint")? {
            Some(f) if f != fingerprint => {
                return Err(StateError::Mismatch {
                    path: path.to_path_buf(),
                    detail: format!("it was made for {f}"),
                });
            }
            Some(_) => {}
            None => s.set_meta("fingerprint", fingerprint)?,
        }
        Ok(s)
    }

    #[cfg(test)]
    fn made_at(path: &Path) -> PathBuf {
        making(path)
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        Ok(t.get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string()))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(META)?.insert(key, value)?;
            Ok(())
        })
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn read_all<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        def: TableDefinition<K, V>,
        mut f: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> T,
    ) -> Result<Vec<T>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push(f(k.value(), v.value()));
        }
        Ok(out)
    }

    pub fn id_map(&self) -> Result<Vec<(u32, u32)>, StateError> {
        self.read_all(ID_MAP, |k, v| (k, v))
    }

    /// Records that source schema `source_id` is `target_id` on the target, and that the
    /// subject/version was restored as target version `target_version`.
    pub fn schema_done(
        &self,
        subject: &str,
        version: i32,
        target_version: i32,
        source_id: u32,
        target_id: u32,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(ID_MAP)?.insert(source_id, target_id)?;
            tx.open_table(VERSIONS)?
                .insert((subject, version), target_version)?;
            Ok(())
        })
    }

    /// Records that the subject/version was restored as target version `target_version`, its
    /// ID not going into the ID map (a version of another registry context).
    pub fn version_done(
        &self,
        subject: &str,
        version: i32,
        target_version: i32,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(VERSIONS)?
                .insert((subject, version), target_version)?;
            Ok(())
        })
    }

    /// Source subject/version → target version, for every version already restored.
    pub fn versions_done(&self) -> Result<Vec<(SubjectVersionKey, i32)>, StateError> {
        self.read_all(VERSIONS, |(s, v), t| ((s.to_string(), v), t))
    }

    /// What a subject's `kind` setting (`mode`, `config`) was on the target before this restore
    /// first changed it: `Some(None)` = it had none of its own; `None` = never changed.
    pub fn before(&self, kind: &str, subject: &str) -> Result<Option<Option<String>>, StateError> {
        Ok(self
            .meta(&format!("before:{kind}:{subject}"))?
            .map(|v| v.strip_prefix('=').map(str::to_string)))
    }

    /// Records what a setting was before the first change (later calls keep the first value), so
    /// that a resumed run puts back the target's own setting, not one an earlier run made.
    pub fn remember_before(
        &self,
        kind: &str,
        subject: &str,
        value: Option<&str>,
    ) -> Result<(), StateError> {
        let key = format!("before:{kind}:{subject}");
        if self.meta(&key)?.is_none() {
            // "=" + value; a bare "-" for none (a value may be empty, never starts with "-").
            let v = value.map_or("-".to_string(), |v| format!("={v}"));
            self.set_meta(&key, &v)?;
        }
        Ok(())
    }

    pub fn is_done(&self, step: &str) -> Result<bool, StateError> {
        Ok(self
            .read_all(DONE, |k, v| (k.to_string(), v))?
            .into_iter()
            .any(|(k, v)| k == step && v))
    }

    pub fn set_done(&self, step: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(DONE)?.insert(step, true)?;
            Ok(())
        })
    }
}

/// One registry context's part of the state: its subjects are kept qualified (`:.ctx:subject`),
/// its steps suffixed with the context, and only the default context's IDs go into the ID map
/// the records are rewritten with (a record's ID names a schema of the default context).
pub struct Scoped<'a> {
    pub state: &'a State,
    context: Option<String>,
}

impl<'a> Scoped<'a> {
    pub fn new(state: &'a State, context: Option<&str>) -> Self {
        Scoped {
            state,
            context: context.map(str::to_string),
        }
    }

    fn key(&self, subject: &str) -> String {
        crate::registry::snapshot::qualify(self.context.as_deref(), subject)
    }

    pub fn schema_done(
        &self,
        subject: &str,
        version: i32,
        target_version: i32,
        source_id: u32,
        target_id: u32,
    ) -> Result<(), StateError> {
        match &self.context {
            None => self
                .state
                .schema_done(subject, version, target_version, source_id, target_id),
            Some(_) => self
                .state
                .version_done(&self.key(subject), version, target_version),
        }
    }

    /// This context's versions already restored, by unqualified subject.
    pub fn versions_done(&self) -> Result<Vec<(SubjectVersionKey, i32)>, StateError> {
        let all = self.state.versions_done()?;
        Ok(match &self.context {
            None => all
                .into_iter()
                .filter(|((s, _), _)| !s.starts_with(":."))
                .collect(),
            Some(c) => {
                let prefix = format!(":{c}:");
                all.into_iter()
                    .filter_map(|((s, v), t)| Some(((s.strip_prefix(&prefix)?.to_string(), v), t)))
                    .collect()
            }
        })
    }

    pub fn before(&self, kind: &str, subject: &str) -> Result<Option<Option<String>>, StateError> {
        self.state.before(kind, &self.key(subject))
    }

    pub fn remember_before(
        &self,
        kind: &str,
        subject: &str,
        value: Option<&str>,
    ) -> Result<(), StateError> {
        self.state.remember_before(kind, &self.key(subject), value)
    }

    fn step(&self, step: &str) -> String {
        match &self.context {
            None => step.to_string(),
            Some(c) => format!("{step}:{c}"),
        }
    }

    pub fn is_done(&self, step: &str) -> Result<bool, StateError> {
        self.state.is_done(&self.step(step))
    }

    pub fn set_done(&self, step: &str) -> Result<(), StateError> {
        self.state.set_done(&self.step(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_made_state_file_does_not_stop_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.restore-state");
        // A run killed while making the file leaves only the file it was making.
        std::fs::write(State::made_at(&path), b"not a database").unwrap();
        let s = State::open(&path, "fp").unwrap();
        assert_eq!(s.meta("fingerprint").unwrap().as_deref(), Some("fp"));
        assert!(!State::made_at(&path).exists());
        drop(s);
        assert!(State::open(&path, "fp").is_ok());
    }

    #[test]
    fn a_state_folder_that_is_not_there_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not/yet/there/x.restore-state");
        State::open(&path, "fp").unwrap();
        assert!(path.exists());
    }

    #[test]
    fn a_state_file_another_run_is_making_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.restore-state");
        let making = std::fs::File::create(State::made_at(&path)).unwrap();
        making.lock().unwrap();
        assert!(matches!(
            State::open(&path, "fp"),
            Err(StateError::Busy { .. })
        ));
        drop(making);
        assert!(State::open(&path, "fp").is_ok());
    }

    #[test]
    fn an_unreadable_state_file_is_named_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.restore-state");
        std::fs::write(&path, vec![7u8; 100]).unwrap();
        let e = State::open(&path, "fp").err().unwrap().to_string();
        assert!(
            e.contains("x.restore-state is unreadable") && e.contains("remove it"),
            "{e}"
        );
    }
}
