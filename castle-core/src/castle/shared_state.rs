//! The cluster's state as the facade exposes it: which backend keeps the journal
//! and the lock, the lock taken around every command that changes anything,
//! `castle state push|pull|show` and `castle unlock`.

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::Castle;
use crate::config::StateBackendKind;
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::journal::{Journal, JournalState};
use crate::state::{FileState, Force, LockHolder, StateBackend, StateLock, Transferred};

/// What `castle state show` says.
#[derive(Debug, Clone, Serialize)]
pub struct StateInfo {
    /// `file` or `vault`.
    pub backend: String,
    /// Where the journal and the lock live.
    pub location: String,
    /// Who holds the lock now, if anyone.
    pub holder: Option<LockHolder>,
    /// The journal's last run.
    pub last_run: Option<String>,
    /// A journal this machine kept because the backend could not be written,
    /// waiting to be written back by the next run.
    pub kept: Option<PathBuf>,
}

impl StateInfo {
    /// As text.
    pub fn render(&self) -> String {
        let mut out = format!("state: {}\n", self.location);
        let _ = writeln!(
            out,
            "last run: {}",
            self.last_run.as_deref().unwrap_or("none")
        );
        match &self.holder {
            None => out.push_str("lock: free\n"),
            Some(h) => {
                let _ = match h.expires_unix {
                    Some(at) => {
                        let now = crate::state::now_unix();
                        if at > now {
                            writeln!(out, "lock: held by {h}, lease runs {}s more", at - now)
                        } else {
                            writeln!(
                                out,
                                "lock: left by {h}, lease expired {}s ago (the next run takes it over)",
                                now - at
                            )
                        }
                    }
                    None => writeln!(out, "lock: held by {h}"),
                };
            }
        }
        if let Some(kept) = &self.kept {
            let _ = writeln!(
                out,
                "kept here: {} (the journal of a run that could not write it; the next run writes it back)",
                kept.display()
            );
        }
        out
    }
}

impl Castle {
    /// Where this cluster's journal and lock live (`[state]`).
    ///
    /// # Errors
    /// A secret ref that does not resolve, or a Vault client that cannot be built.
    pub fn state_backend(&self) -> Result<Arc<dyn StateBackend>> {
        crate::state::backend_for(&self.config, &self.backends, self.checkpoint())
    }

    /// Where commands that are no run (`vault apply`, `tailscale mint-key`, `state
    /// push`) say what the user should hear of, such as a lease taken over. A run
    /// says it in its own events.
    #[must_use]
    pub fn with_notices(mut self, notices: Events) -> Self {
        self.notices = notices;
        self
    }

    fn notify(&self, message: &str) {
        self.notices.emit(&Event::StateNotice {
            message: message.to_string(),
        });
    }

    /// The journal as it is now, without the lock.
    pub(crate) async fn peek_journal(&self) -> Result<JournalState> {
        crate::state::peek(&self.config, &self.backends).await
    }

    /// Runs `work` holding the cluster's lock for `command`, and releases it
    /// whatever `work` returns.
    pub(super) async fn while_locked<T>(
        &self,
        command: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let journal =
            Journal::open_in(self.state_backend()?, &self.config.cluster.name, command).await?;
        for message in journal.notices() {
            self.notify(message);
        }
        let result = work.await;
        journal.close().await;
        result
    }

    async fn both_locked(
        &self,
        command: &str,
    ) -> Result<(
        FileState,
        Box<dyn StateLock>,
        Arc<dyn StateBackend>,
        Box<dyn StateLock>,
    )> {
        if self.config.state.backend != StateBackendKind::Vault {
            return Err(Error::Graph(format!(
                "`castle {command}` moves the journal between this directory and Vault: set [state] backend = \"vault\" in castle.toml first"
            )));
        }
        let file = FileState::new(self.config.base_dir());
        let file_lock: Box<dyn StateLock> = Box::new(file.lock_now()?);
        let vault = self.state_backend()?;
        let vault_lock = vault.lock(command).await?;
        if let Some(message) = vault_lock.notice() {
            self.notify(message);
        }
        Ok((file, file_lock, vault, vault_lock))
    }

    /// `castle state push`: copies `<cluster dir>/.castle/state.json` to Vault, byte
    /// for byte, holding both locks; refuses to overwrite a journal in Vault that is
    /// not older unless `force`.
    ///
    /// # Errors
    /// `[state]` is not Vault, a lock is held, there is no file journal, Vault's is
    /// newer, or Vault cannot be written.
    pub async fn state_push(&self, force: bool) -> Result<Transferred> {
        let (file, file_lock, vault, vault_lock) = self.both_locked("state push").await?;
        let result = crate::state::transfer(&file, vault.as_ref(), force).await;
        vault_lock.release().await;
        file_lock.release().await;
        Ok(result?)
    }

    /// `castle state pull`: copies the journal in Vault to
    /// `<cluster dir>/.castle/state.json`, byte for byte, holding both locks;
    /// refuses to overwrite a file journal that is not older unless `force`.
    ///
    /// # Errors
    /// As for [`state_push`](Self::state_push), the other way round.
    pub async fn state_pull(&self, force: bool) -> Result<Transferred> {
        let (file, file_lock, vault, vault_lock) = self.both_locked("state pull").await?;
        let result = crate::state::transfer(vault.as_ref(), &file, force).await;
        vault_lock.release().await;
        file_lock.release().await;
        Ok(result?)
    }

    /// `castle unlock --force`: releases a lock its holder left behind (a lease
    /// that expired, or whose process is gone from this machine); with
    /// [`Force::Live`], a live lease too. Says what it did.
    ///
    /// # Errors
    /// A live lease without [`Force::Live`], a file lock (it frees itself), or the
    /// backend cannot be asked.
    pub async fn unlock(&self, force: Force) -> Result<String> {
        Ok(self.state_backend()?.unlock(force).await?)
    }

    /// `castle state show`: where the state lives, who holds the lock, and whether
    /// a journal waits here to be written back.
    ///
    /// # Errors
    /// The backend cannot be asked.
    pub async fn state_info(&self) -> Result<StateInfo> {
        let backend = self.state_backend()?;
        let journal = Journal::peek_in(backend.as_ref()).await?;
        let holder = backend.holder().await?;
        let kept = match self.config.state.backend {
            StateBackendKind::File => None,
            StateBackendKind::Vault => {
                Some(Journal::state_dir(self.config.base_dir()).join(crate::state::KEPT_FILE))
                    .filter(|p| p.exists())
            }
        };
        Ok(StateInfo {
            backend: match self.config.state.backend {
                StateBackendKind::File => "file".into(),
                StateBackendKind::Vault => "vault".into(),
            },
            location: backend.location(),
            holder,
            last_run: journal.last_run,
            kept,
        })
    }
}
