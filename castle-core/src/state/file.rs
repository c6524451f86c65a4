//! The default backend: `<cluster dir>/.castle/state.json` and a file lock.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Force, LockHolder, StateBackend, StateLock, Stored, this_host};
use crate::journal::{Journal, JournalError, io};

/// The journal as a file beside castle.toml, written atomically (temporary file,
/// synced, renamed), with an exclusive lock (`flock`) that frees itself when its
/// process ends, so there is never a lock file to delete.
#[derive(Debug, Clone)]
pub struct FileState {
    dir: PathBuf,
}

/// A held file lock: released when dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

#[async_trait]
impl StateLock for FileLock {
    fn notice(&self) -> Option<&str> {
        None
    }

    async fn release(self: Box<Self>) {}
}

impl FileState {
    /// The state of the cluster in `cluster_dir`.
    pub fn new(cluster_dir: &Path) -> Self {
        Self {
            dir: Journal::state_dir(cluster_dir),
        }
    }

    /// `<cluster dir>/.castle/state.json`.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Takes the lock now, writing this process's id into the lock file.
    pub(crate) fn lock_now(&self) -> Result<FileLock, JournalError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let lock_path = self.lock_path();
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
        Ok(FileLock { _file: lock })
    }

    /// The journal's text, if the file exists.
    pub(crate) fn read_now(&self) -> Result<Option<String>, JournalError> {
        let path = self.journal_path();
        super::read_if_there(&path)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|e| JournalError::Corrupt {
                    path,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }
}

#[async_trait]
impl StateBackend for FileState {
    fn location(&self) -> String {
        format!("file {}", self.journal_path().display())
    }

    async fn lock(&self, _command: &str) -> Result<Box<dyn StateLock>, JournalError> {
        Ok(Box::new(self.lock_now()?))
    }

    async fn read(&self) -> Result<Option<Stored>, JournalError> {
        Ok(self.read_now()?.map(|text| Stored {
            text,
            version: 0,
            notice: None,
        }))
    }

    /// The lock makes this the only writer: there is no version to check.
    async fn write(&self, text: &str, version: u64) -> Result<u64, JournalError> {
        super::write_atomically(&self.journal_path(), text.as_bytes())?;
        Ok(version + 1)
    }

    async fn peek(&self) -> Result<Option<String>, JournalError> {
        self.read_now()
    }

    async fn holder(&self) -> Result<Option<LockHolder>, JournalError> {
        match self.lock_now() {
            Ok(_free) => Ok(None),
            Err(JournalError::Locked { holder, .. }) => Ok(Some(LockHolder {
                holder: format!("pid {holder}"),
                host: this_host(),
                pid: holder.parse().unwrap_or_default(),
                command: "(a run on this machine)".into(),
                acquired_unix: 0,
                expires_unix: None,
            })),
            Err(e) => Err(e),
        }
    }

    async fn unlock(&self, _force: Force) -> Result<String, JournalError> {
        match self.lock_now() {
            Ok(_free) => Ok(format!("{} is not locked", self.location())),
            Err(JournalError::Locked { path, holder }) => Err(JournalError::Refused(format!(
                "{} is locked by pid {holder} on this machine; a file lock frees itself when its process ends (stop it: kill {holder}), so there is nothing to break",
                path.display()
            ))),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_lock_names_its_pid_and_is_never_broken_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let state = FileState::new(dir.path());
        assert!(state.holder().await.unwrap().is_none());
        assert!(
            state
                .unlock(Force::Live)
                .await
                .unwrap()
                .contains("not locked")
        );
        let held = state.lock("create").await.unwrap();
        let pid = std::process::id();
        assert_eq!(state.holder().await.unwrap().map(|h| h.pid), Some(pid));
        let refused = state.unlock(Force::Live).await.unwrap_err().to_string();
        assert!(
            refused.contains(&format!("kill {pid}")) && refused.contains("frees itself"),
            "{refused}"
        );
        held.release().await;
    }
}
