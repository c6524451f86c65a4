//! Where the journal and the cluster's lock live: one seam, two backends.
//!
//! - [`FileState`] (the default): `<cluster dir>/.castle/state.json`, written
//!   atomically, and an exclusive file lock that frees itself when its process ends.
//!   Safe on one machine.
//! - [`VaultState`] (`[state] backend = "vault"`): the journal in a KV v2 entry
//!   `<mount>/<path>/journal`, every write a check-and-set on the version it read,
//!   and a leased lock in `<mount>/<path>/lock` (holder, host, pid, command,
//!   expiry), taken by check-and-set and renewed by a heartbeat. Safe for a team
//!   or CI sharing a cluster.
//!
//! The [`Journal`](crate::journal::Journal) talks to a [`StateBackend`] only; the
//! executor talks to the journal only, so it does not know which backend it has.

mod file;
mod vault;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use file::FileState;
pub use vault::VaultState;

/// The file in `<cluster dir>/.castle` holding a journal this machine could not
/// write to its backend, until the next run writes it back.
pub const KEPT_FILE: &str = "state.kept.json";

use crate::backends::Backends;
use crate::config::{Config, StateBackendKind};
use crate::engine::Checkpoint;
use crate::journal::{JournalError, JournalState};

/// The journal's text as a backend keeps it, and the version a check-and-set
/// write must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The journal, as JSON text.
    pub text: String,
    /// Its version (0: never written).
    pub version: u64,
    /// What reading it did that the user should hear of.
    pub notice: Option<String>,
}

/// Who holds a cluster's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// A random id, one per run.
    pub holder: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process.
    pub pid: u32,
    /// What it does (`create`, `vault apply`, ...).
    pub command: String,
    /// When it took the lock (Unix seconds).
    pub acquired_unix: u64,
    /// When its lease ends unless renewed (Unix seconds); `None` for a file lock,
    /// which lives as long as its process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix: Option<u64>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`castle {}` (pid {} on {}, holder {})",
            self.command, self.pid, self.host, self.holder
        )
    }
}

impl LockHolder {
    /// This process, about to run `command`.
    pub(crate) fn this_process(command: &str) -> Self {
        Self {
            holder: format!("{:016x}", rand::random::<u64>()),
            host: this_host(),
            pid: std::process::id(),
            command: command.to_string(),
            acquired_unix: now_unix(),
            expires_unix: None,
        }
    }
}

/// How hard `castle unlock` pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    /// `--force`: release a lease that has expired or whose process is gone from
    /// this machine.
    Dead,
    /// `--force --force`: break a live lease too (its run, if still alive, stops at
    /// its next journal write).
    Live,
}

/// Where a cluster's journal and lock live. Every method names the cluster's state
/// by [`location`](Self::location) in its errors.
#[async_trait]
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// Where the state lives, for messages (`file /c/.castle/state.json`,
    /// `vault https://vault:8200 secret/castle/lab/state`).
    fn location(&self) -> String;

    /// Takes the cluster's lock for `command`; it holds until released.
    ///
    /// # Errors
    /// [`JournalError::Locked`] or [`JournalError::Leased`] naming the holder, or
    /// the backend cannot be asked.
    async fn lock(&self, command: &str) -> Result<Box<dyn StateLock>, JournalError>;

    /// The journal and its version, read under the lock; `None` when there is none
    /// yet. A backend that kept a journal locally because it could not write it
    /// writes that copy back first (and says so in [`Stored::notice`]).
    ///
    /// # Errors
    /// The backend cannot be asked, the journal is another cluster's, or a copy
    /// kept locally no longer follows the stored journal.
    async fn read(&self) -> Result<Option<Stored>, JournalError>;

    /// Writes the journal's text if the stored one is still at `version`, and
    /// returns the new version.
    ///
    /// # Errors
    /// Another writer changed it ([`JournalError::Conflict`], nothing is
    /// overwritten), the lock was lost, or the write did not happen; a backend
    /// that keeps state away from this machine then keeps `text` locally and the
    /// error says where.
    async fn write(&self, text: &str, version: u64) -> Result<u64, JournalError>;

    /// The journal as it is now, without the lock (`status`, `plan`).
    ///
    /// # Errors
    /// The backend cannot be asked.
    async fn peek(&self) -> Result<Option<String>, JournalError>;

    /// Who holds the lock, if anyone.
    ///
    /// # Errors
    /// The backend cannot be asked.
    async fn holder(&self) -> Result<Option<LockHolder>, JournalError>;

    /// Releases a lock its holder left behind; says what it did.
    ///
    /// # Errors
    /// [`JournalError::Refused`] when the lock is live and `force` is not
    /// [`Force::Live`], or when this backend's lock cannot be broken at all.
    async fn unlock(&self, force: Force) -> Result<String, JournalError>;
}

/// A held lock. Release it with [`release`](Self::release); dropping it without
/// stops its renewal, and a lease then expires by itself.
#[async_trait]
pub trait StateLock: Send + Sync + std::fmt::Debug {
    /// What taking it did that the user should hear of (a lease taken over).
    fn notice(&self) -> Option<&str>;

    /// Releases the lock. A release that cannot reach the backend leaves a lease
    /// to expire by itself.
    async fn release(self: Box<Self>);
}

/// The backend castle.toml's `[state]` names. `after_write` runs after every write
/// to `[vault]`'s Vault when it keeps the state (the lab saves its simulated world).
///
/// # Errors
/// A secret ref that does not resolve, or a Vault client that cannot be built.
pub fn backend_for(
    config: &Config,
    backends: &Arc<dyn Backends>,
    after_write: Option<Checkpoint>,
) -> crate::Result<Arc<dyn StateBackend>> {
    let s = &config.state;
    if s.backend == StateBackendKind::File {
        return Ok(Arc::new(FileState::new(config.base_dir())));
    }
    let secrets = config.secrets();
    let unbuilt = |e: crate::StepError| {
        crate::Error::Journal(JournalError::Backend {
            location: format!("vault {}/{}", s.mount(), s.path(&config.cluster.name)),
            reason: e.message,
        })
    };
    let (address, api, after_write) = match (&s.address, &s.token) {
        (Some(address), Some(token)) => {
            let token = secrets.resolve(token)?;
            let ca = s.ca_file.as_deref().map(|f| config.path(f));
            (
                address.clone(),
                own_vault(address, ca, &token).map_err(unbuilt)?,
                None,
            )
        }
        _ => {
            let v = config.vault.as_ref().ok_or_else(|| {
                crate::Error::Graph(
                    "[state] backend = \"vault\" needs a [vault] section, or its own `address` and `token`".into(),
                )
            })?;
            let token = secrets.resolve(&v.token)?;
            let ca = v.ca_file.as_deref().map(|f| config.path(f));
            (
                v.address.clone(),
                backends.vault(&v.address, ca, &token).map_err(unbuilt)?,
                after_write,
            )
        }
    };
    let mut state = VaultState::new(
        api,
        &address,
        s.mount(),
        &s.path(&config.cluster.name),
        &config.cluster.name,
        config.base_dir(),
    )
    .with_lease(s.lease());
    if let Some(after_write) = after_write {
        state = state.with_after_write(after_write);
    }
    Ok(Arc::new(state))
}

/// The cluster's journal as it is now, read without the lock from where `[state]`
/// keeps it; nothing is written.
///
/// # Errors
/// The journal is unreadable, or the backend cannot be built or asked.
pub async fn peek(config: &Config, backends: &Arc<dyn Backends>) -> crate::Result<JournalState> {
    match config.state.backend {
        // The file backend reads as it always did.
        StateBackendKind::File => Ok(crate::journal::Journal::peek(config.base_dir())?),
        StateBackendKind::Vault => Ok(crate::journal::Journal::peek_in(
            backend_for(config, backends, None)?.as_ref(),
        )
        .await?),
    }
}

/// The real client for a Vault `[state]` names itself (the lab's simulators stand
/// in only for `[vault]`), retrying its own transient failures like every client.
#[cfg(feature = "client")]
fn own_vault(
    address: &str,
    ca: Option<std::path::PathBuf>,
    token: &secrecy::SecretString,
) -> Result<Arc<dyn castle_vault::VaultApi>, crate::StepError> {
    crate::retry::Retrying::new(
        Arc::new(crate::backends::RealBackends),
        crate::retry::CallRetry::standard(),
    )
    .vault(address, ca, token)
}

#[cfg(not(feature = "client"))]
fn own_vault(
    _address: &str,
    _ca: Option<std::path::PathBuf>,
    _token: &secrecy::SecretString,
) -> Result<Arc<dyn castle_vault::VaultApi>, crate::StepError> {
    Err(crate::StepError::permanent(
        "this build has no HTTP client (feature `client`) for [state] address",
    ))
}

/// The capabilities the `[vault]` token needs when it also keeps the cluster's
/// state (`[state] backend = "vault"` without its own address), for `castle doctor`.
pub(crate) fn vault_needs(config: &Config) -> Vec<castle_vault::doctor::Need> {
    let s = &config.state;
    if s.backend != StateBackendKind::Vault || s.address.is_some() {
        return Vec::new();
    }
    let (mount, path) = (s.mount(), s.path(&config.cluster.name));
    ["journal", "lock"]
        .into_iter()
        .flat_map(|key| {
            [
                castle_vault::doctor::Need {
                    path: format!("{mount}/data/{path}/{key}"),
                    capabilities: vec!["create", "read", "update"],
                    why: format!("keeping the cluster's {key} ([state])"),
                },
                castle_vault::doctor::Need {
                    path: format!("{mount}/metadata/{path}/{key}"),
                    capabilities: vec!["read"],
                    why: format!("reading the version of the cluster's {key} ([state])"),
                },
            ]
        })
        .collect()
}

/// What [`transfer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transferred {
    /// The target held the same journal already.
    Same,
    /// The journal was copied.
    Copied {
        /// The source journal's last run.
        last_run: Option<String>,
    },
}

/// Copies the journal from one backend to another (`castle state push` and
/// `pull`), byte for byte. Both locks must be held. It refuses to overwrite a
/// newer journal (one whose last run is later, or the same run with other
/// content) unless `force`.
///
/// # Errors
/// No journal in `from`, a newer one in `to`, or either backend fails.
pub async fn transfer(
    from: &dyn StateBackend,
    to: &dyn StateBackend,
    force: bool,
) -> Result<Transferred, JournalError> {
    let source = from.read().await?.ok_or_else(|| {
        JournalError::Refused(format!(
            "{} holds no journal: there is nothing to copy",
            from.location()
        ))
    })?;
    let parsed = JournalState::from_text(&source.text, Path::new(&from.location()))?;
    let target = to.read().await?;
    let version = match &target {
        Some(t) if t.text == source.text => return Ok(Transferred::Same),
        Some(t) => {
            let theirs = JournalState::from_text(&t.text, Path::new(&to.location()))?;
            let newer = match (&theirs.last_run, &parsed.last_run) {
                (Some(a), Some(b)) => a >= b,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if newer && !force {
                return Err(JournalError::Refused(format!(
                    "the journal at {} (last run {}) is not older than the one at {} (last run {}): copying would lose what it holds. Copy the other way, or pass --force to overwrite it anyway",
                    to.location(),
                    theirs.last_run.as_deref().unwrap_or("none"),
                    from.location(),
                    parsed.last_run.as_deref().unwrap_or("none"),
                )));
            }
            t.version
        }
        None => 0,
    };
    to.write(&source.text, version).await?;
    Ok(Transferred::Copied {
        last_run: parsed.last_run,
    })
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one,
/// never half of one: a temporary file beside it (its folder made if missing),
/// synced, then renamed.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    use crate::journal::io;
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A file's bytes, or `None` when it does not exist.
pub(crate) fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::journal::io(path)(e)),
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This machine's name, as a lock names its holder's.
pub(crate) fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether process `pid` of this machine still runs; `true` where it cannot be told.
pub(crate) fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}
