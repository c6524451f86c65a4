//! The journal: `<cluster dir>/.castle/state.json`, written atomically after every
//! step, guarded by an exclusive lock. It holds status, non-secret outputs, input
//! fingerprints and timings: never a secret.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::StepError;

const FORMAT_VERSION: u32 = 1;

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Another run holds the cluster's lock.
    #[error(
        "another castle run (pid {holder}) is working on this cluster ({path}); wait for it to finish: the lock is held by that process and frees itself when it ends, so there is nothing to delete"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written by the holder, or `unknown`.
        holder: String,
    },
    /// The journal file is not valid JSON of the expected shape.
    #[error("journal {path} is corrupt ({reason}); move it away to start from an empty journal")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// A file operation failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Started, not yet finished (a crash leaves this behind).
    Running,
    /// Finished successfully with the recorded fingerprint.
    Done,
    /// Failed for good in the recorded run.
    Failed,
    /// Stopped by cancellation.
    Cancelled,
    /// Its resources were removed by `castle destroy`.
    Destroyed,
}

/// One step's entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// Where it stands.
    pub status: StepStatus,
    /// Digest of the inputs it ran with.
    pub fingerprint: String,
    /// Non-secret results that later steps or destroy need (VM ids, device names...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub outputs: serde_json::Value,
    /// Attempts in its last run.
    pub attempts: u32,
    /// The run that last touched it.
    pub run_id: String,
    /// How long its last run took.
    pub duration_ms: u64,
    /// Why it last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

/// The journal's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalState {
    /// Format version of this file.
    pub version: u32,
    /// The cluster this journal belongs to.
    pub cluster: String,
    /// The most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Every step that ever ran, by id.
    #[serde(default)]
    pub steps: BTreeMap<String, StepRecord>,
}

impl JournalState {
    /// Whether `step` finished with this exact fingerprint.
    pub fn is_done_with(&self, step: &str, fingerprint: &str) -> bool {
        self.steps
            .get(step)
            .is_some_and(|r| r.status == StepStatus::Done && r.fingerprint == fingerprint)
    }

    /// The outputs a step recorded, if it finished.
    pub fn outputs(&self, step: &str) -> Option<&serde_json::Value> {
        self.steps
            .get(step)
            .filter(|r| r.status == StepStatus::Done)
            .map(|r| &r.outputs)
    }
}

/// An open, locked journal. The lock is released when this value is dropped.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    _lock: File,
    state: JournalState,
}

impl Journal {
    /// The state directory of a cluster: `<cluster dir>/.castle`.
    pub fn state_dir(cluster_dir: &Path) -> PathBuf {
        cluster_dir.join(".castle")
    }

    /// Opens (or starts) the journal of the cluster in `cluster_dir`, taking its lock.
    ///
    /// # Errors
    /// [`JournalError::Locked`] when another run holds the lock; `Corrupt` or `Io`
    /// when the file cannot be read.
    pub fn open(cluster_dir: &Path, cluster: &str) -> Result<Self, JournalError> {
        let dir = Self::state_dir(cluster_dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("lock");
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(JournalError::Locked {
                    path: lock_path,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        lock.set_len(0).map_err(io(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;

        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JournalState {
                version: FORMAT_VERSION,
                cluster: cluster.to_string(),
                ..JournalState::default()
            },
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Self {
            path,
            _lock: lock,
            state,
        })
    }

    /// Reads a cluster's journal without taking the lock (for `status` and `report`).
    ///
    /// # Errors
    /// `Corrupt` or `Io`; a missing journal reads as empty.
    pub fn peek(cluster_dir: &Path) -> Result<JournalState, JournalError> {
        let path = Self::state_dir(cluster_dir).join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JournalState::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The current content.
    pub fn state(&self) -> &JournalState {
        &self.state
    }

    /// Changes the content and writes it at once.
    ///
    /// # Errors
    /// When the file cannot be written; the previous file is then intact.
    pub fn update(&mut self, change: impl FnOnce(&mut JournalState)) -> Result<(), JournalError> {
        change(&mut self.state);
        self.save()
    }

    /// Writes the journal atomically: a temporary file beside it, synced, then renamed.
    fn save(&self) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| JournalError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = Journal::open(dir.path(), "lab").unwrap();
        let err = Journal::open(dir.path(), "lab").unwrap_err();
        assert!(
            matches!(err, JournalError::Locked { ref holder, .. } if *holder == std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        Journal::open(dir.path(), "lab").unwrap();
    }

    #[test]
    fn updates_survive_a_reopen_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "lab").unwrap();
        journal
            .update(|s| {
                s.steps.insert(
                    "platform".into(),
                    StepRecord {
                        status: StepStatus::Done,
                        fingerprint: "abc".into(),
                        outputs: serde_json::json!({"vms": [421]}),
                        attempts: 1,
                        run_id: "r1".into(),
                        duration_ms: 5,
                        error: None,
                    },
                );
            })
            .unwrap();
        drop(journal);
        let state = Journal::peek(dir.path()).unwrap();
        assert!(state.is_done_with("platform", "abc"));
        assert!(!state.is_done_with("platform", "other"));
        assert!(!dir.path().join(".castle/state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_journal_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".castle")).unwrap();
        std::fs::write(dir.path().join(".castle/state.json"), "{not json").unwrap();
        let err = Journal::open(dir.path(), "lab").unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("move it away"),
            "{err}"
        );
    }
}
