//! The shared backend: the journal and a leased lock in Vault KV v2.
//!
//! - `<mount>/data/<path>/journal` holds `{"journal": "<the journal's JSON text>"}`,
//!   the same text the file backend writes, so `castle state push` and `pull` copy
//!   it byte for byte. Every write names the version it read (`options.cas`): a
//!   writer that lost a race is refused by Vault and stops; it never overwrites.
//! - `<mount>/data/<path>/lock` holds the lease: holder id, host, pid, command and
//!   expiry, taken by check-and-set, renewed by a heartbeat every third of its
//!   life, released (`released: true`, again by check-and-set) at the end. A lease
//!   past its expiry may be taken over.
//! - When a write cannot be made, the journal is kept in
//!   `<cluster dir>/.castle/state.kept.json` with the version it was meant to
//!   follow; the next run on this machine writes it back before anything else
//!   (unless the stored journal has moved on, which it then reports).
//!
//! Expiry compares Unix times of the machines involved: their clocks must agree to
//! well within a lease (NTP does).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use castle_vault::VaultApi;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Force, LockHolder, StateBackend, StateLock, Stored, now_unix, pid_alive, this_host};
use crate::engine::Checkpoint;
use crate::journal::{Journal, JournalError, io};

/// The lock entry as stored in Vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    #[serde(flatten)]
    holder: LockHolder,
    /// The lease's life; renewed every third of it.
    lease_seconds: u64,
    /// Its holder finished, or `castle unlock` released it.
    #[serde(default)]
    released: bool,
    /// Who released it when it was not its holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released_by: Option<String>,
}

impl LeaseRecord {
    fn expires(&self) -> u64 {
        self.holder.expires_unix.unwrap_or(0)
    }
}

/// A journal this machine could not write, kept until it can.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    /// Where it belongs.
    location: String,
    /// The stored version it follows.
    version: u64,
    /// The lease of the run that kept it: a run on this machine may take it over.
    #[serde(default)]
    holder: Option<String>,
    /// The journal's text.
    journal: String,
}

/// A write Vault did not take.
enum PutError {
    /// Another writer got there first.
    Cas,
    /// Anything else, explained.
    Other(String),
}

/// The two KV v2 entries and the client that reaches them.
struct Kv {
    api: Arc<dyn VaultApi>,
    address: String,
    mount: String,
    path: String,
    after_write: Option<Checkpoint>,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Kv {
    fn location(&self) -> String {
        format!("vault {} {}/{}", self.address, self.mount, self.path)
    }

    fn backend_error(&self, reason: String) -> JournalError {
        JournalError::Backend {
            location: self.location(),
            reason,
        }
    }

    /// Vault's error, with what to do when the mount is missing.
    fn explain(&self, e: &castle_vault::Error) -> String {
        if e.status() == Some(404) {
            format!(
                "{e} (is `{}` a KV v2 secrets engine? enable one with `bao secrets enable -path={} kv-v2`, or name another with [state] mount)",
                self.mount, self.mount
            )
        } else {
            e.to_string()
        }
    }

    /// An entry's data and version (0: never written; a deleted entry keeps its
    /// version, which the next write must name).
    async fn get(&self, key: &str) -> Result<(Option<Value>, u64), JournalError> {
        let data_path = format!("{}/data/{}/{key}", self.mount, self.path);
        let got = self
            .api
            .read(&data_path)
            .await
            .map_err(|e| self.backend_error(self.explain(&e)))?;
        if let Some(got) = got {
            let version = got
                .pointer("/metadata/version")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            return Ok((got.get("data").cloned().filter(Value::is_object), version));
        }
        let metadata = self
            .api
            .read(&format!("{}/metadata/{}/{key}", self.mount, self.path))
            .await
            .map_err(|e| self.backend_error(self.explain(&e)))?;
        Ok((
            None,
            metadata
                .and_then(|m| m.get("current_version").and_then(Value::as_u64))
                .unwrap_or(0),
        ))
    }

    /// Writes an entry if it is still at `cas`; the new version.
    async fn put(&self, key: &str, data: Value, cas: u64) -> Result<u64, PutError> {
        let data_path = format!("{}/data/{}/{key}", self.mount, self.path);
        let answer = self
            .api
            .write(
                &data_path,
                json!({ "data": data, "options": { "cas": cas } }),
            )
            .await
            .map_err(|e| {
                if e.is_cas_mismatch() {
                    PutError::Cas
                } else {
                    PutError::Other(self.explain(&e))
                }
            })?;
        if let Some(after_write) = &self.after_write {
            after_write();
        }
        answer
            .as_ref()
            .and_then(|a| a.get("version"))
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                PutError::Other(format!(
                    "writing {data_path} answered no version: `{}` is not a KV v2 secrets engine (check-and-set needs one)",
                    self.mount
                ))
            })
    }

    async fn lease(&self) -> Result<(Option<LeaseRecord>, u64), JournalError> {
        let (data, version) = self.get("lock").await?;
        let record = data
            .map(|d| {
                serde_json::from_value::<LeaseRecord>(d).map_err(|e| {
                    self.backend_error(format!(
                        "the lock entry {}/{}/lock is not Castle's ({e}); delete it (`bao kv metadata delete {}/{}/lock`) if nothing else uses it",
                        self.mount, self.path, self.mount, self.path
                    ))
                })
            })
            .transpose()?;
        Ok((record, version))
    }
}

/// What the heartbeat, the lock and the journal writes share about the lease.
#[derive(Debug)]
struct Lease {
    record: LeaseRecord,
    version: u64,
    /// Why the lease is no longer this run's.
    lost: Option<String>,
}

type SharedLease = Arc<Mutex<Lease>>;

fn lease_of(shared: &SharedLease) -> std::sync::MutexGuard<'_, Lease> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The journal and the lock of one cluster in Vault KV v2.
#[derive(Debug)]
pub struct VaultState {
    kv: Arc<Kv>,
    cluster: String,
    local: PathBuf,
    life: Duration,
    held: Mutex<Option<SharedLease>>,
}

impl VaultState {
    /// The state of `cluster` at `<mount>/<path>` of the Vault `api` reaches
    /// (`address` names it in messages); `cluster_dir` is where a journal that
    /// cannot be written is kept.
    pub fn new(
        api: Arc<dyn VaultApi>,
        address: &str,
        mount: &str,
        path: &str,
        cluster: &str,
        cluster_dir: &Path,
    ) -> Self {
        Self {
            kv: Arc::new(Kv {
                api,
                address: address.to_string(),
                mount: mount.trim_matches('/').to_string(),
                path: path.trim_matches('/').to_string(),
                after_write: None,
            }),
            cluster: cluster.to_string(),
            local: Journal::state_dir(cluster_dir),
            life: Duration::from_secs(crate::config::DEFAULT_LEASE_SECONDS),
            held: Mutex::new(None),
        }
    }

    /// Sets the lease's life (at least three seconds).
    #[must_use]
    pub fn with_lease(mut self, life: Duration) -> Self {
        self.life = life.max(Duration::from_secs(3));
        self
    }

    /// Runs `after_write` after every write Vault took (the lab saves its world).
    #[must_use]
    pub fn with_after_write(mut self, after_write: Checkpoint) -> Self {
        // Nothing shares the entries before the first lock: this always takes.
        if let Some(kv) = Arc::get_mut(&mut self.kv) {
            kv.after_write = Some(after_write);
        }
        self
    }

    /// Where a journal that could not be written is kept.
    pub fn kept_path(&self) -> PathBuf {
        self.local.join(super::KEPT_FILE)
    }

    fn kept(&self) -> Result<Option<Kept>, JournalError> {
        let path = self.kept_path();
        super::read_if_there(&path)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                    path,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// Keeps `text` on this machine, atomically, and says where.
    fn keep(&self, text: &str, version: u64) -> Result<PathBuf, JournalError> {
        let path = self.kept_path();
        let kept = Kept {
            location: self.kv.location(),
            version,
            holder: self
                .held_lease()
                .map(|l| lease_of(&l).record.holder.holder.clone()),
            journal: text.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&kept).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        super::write_atomically(&path, &bytes)?;
        Ok(path)
    }

    fn held_lease(&self) -> Option<SharedLease> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why this run may no longer write, if it holds a lease that is gone: taken
    /// over or broken, as the heartbeat saw or the lock says now. (The check-and-set
    /// on the journal is what guards it; this names the reason before a write.)
    async fn lease_problem(&self) -> Option<String> {
        let shared = self.held_lease()?;
        let mine = {
            let lease = lease_of(&shared);
            if let Some(lost) = &lease.lost {
                return Some(lost.clone());
            }
            lease.record.holder.holder.clone()
        };
        match self.kv.lease().await {
            Ok((Some(current), _)) if current.holder.holder == mine => {
                current.released.then(|| released_by(&current))
            }
            Ok((Some(current), _)) => Some(format!("{} took it over", current.holder)),
            Ok((None, _)) => Some("its lock entry was deleted".into()),
            // The journal write that follows fails the same way and says why.
            Err(_) => None,
        }
    }

    /// The journal's text in a stored entry.
    fn text_of(&self, data: &Value) -> Result<String, JournalError> {
        data.get("journal")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                self.kv.backend_error(format!(
                    "{}/{}/journal holds no `journal` text: it is not a Castle journal; name another [state] path",
                    self.kv.mount, self.kv.path
                ))
            })
    }

    fn same_cluster(&self, text: &str) -> Result<(), JournalError> {
        let found = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("cluster").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        if found.is_empty() || found == self.cluster {
            Ok(())
        } else {
            Err(JournalError::WrongCluster {
                location: self.kv.location(),
                found,
                expected: self.cluster.clone(),
            })
        }
    }

    fn start(&self, record: LeaseRecord, version: u64, notice: Option<String>) -> VaultLock {
        let shared = Arc::new(Mutex::new(Lease {
            record,
            version,
            lost: None,
        }));
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&shared));
        let heartbeat = tokio::spawn(heartbeat(
            Arc::clone(&self.kv),
            Arc::clone(&shared),
            self.life,
        ));
        VaultLock {
            kv: Arc::clone(&self.kv),
            lease: shared,
            heartbeat,
            notice,
        }
    }
}

fn released_by(record: &LeaseRecord) -> String {
    match &record.released_by {
        Some(by) => format!("its lease was released by {by}"),
        None => "its lease was released".into(),
    }
}

/// Renews the lease every third of its life until the lock is released, the
/// lease is lost, or the task is stopped. A renewal that cannot reach Vault is
/// tried again at the next beat; the journal write decides whether the run goes on.
async fn heartbeat(kv: Arc<Kv>, shared: SharedLease, life: Duration) {
    loop {
        tokio::time::sleep(life / 3).await;
        let (mut record, version) = {
            let lease = lease_of(&shared);
            if lease.lost.is_some() {
                return;
            }
            (lease.record.clone(), lease.version)
        };
        record.holder.expires_unix = Some(now_unix() + life.as_secs());
        let value = serde_json::to_value(&record).unwrap_or(Value::Null);
        match kv.put("lock", value, version).await {
            Ok(v) => {
                let mut lease = lease_of(&shared);
                lease.record = record;
                lease.version = v;
            }
            Err(PutError::Cas) => match kv.lease().await {
                // Our own renewal took effect behind a lost answer.
                Ok((Some(current), v))
                    if current.holder.holder == record.holder.holder && !current.released =>
                {
                    let mut lease = lease_of(&shared);
                    lease.record = current;
                    lease.version = v;
                }
                Ok((Some(current), _)) => {
                    lease_of(&shared).lost =
                        Some(if current.holder.holder == record.holder.holder {
                            released_by(&current)
                        } else {
                            format!("{} took it over", current.holder)
                        });
                    return;
                }
                Ok((None, _)) => {
                    lease_of(&shared).lost = Some("its lock entry was deleted".into());
                    return;
                }
                Err(_) => {}
            },
            Err(PutError::Other(_)) => {}
        }
    }
}

/// A lease held in Vault, renewed until released.
#[derive(Debug)]
struct VaultLock {
    kv: Arc<Kv>,
    lease: SharedLease,
    heartbeat: tokio::task::JoinHandle<()>,
    notice: Option<String>,
}

impl Drop for VaultLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

#[async_trait]
impl StateLock for VaultLock {
    fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    async fn release(self: Box<Self>) {
        self.heartbeat.abort();
        let (mut record, version) = {
            let lease = lease_of(&self.lease);
            if lease.lost.is_some() {
                return;
            }
            (lease.record.clone(), lease.version)
        };
        record.released = true;
        let value = serde_json::to_value(&record).unwrap_or(Value::Null);
        // Refused: another run holds it now; unreachable: it expires by itself.
        let _ = self.kv.put("lock", value, version).await;
    }
}

#[async_trait]
impl StateBackend for VaultState {
    fn location(&self) -> String {
        self.kv.location()
    }

    async fn lock(&self, command: &str) -> Result<Box<dyn StateLock>, JournalError> {
        let kept_holder = self.kept()?.and_then(|k| k.holder);
        let me = LockHolder::this_process(command);
        for _ in 0..5 {
            let (current, version) = self.kv.lease().await?;
            let current = current.filter(|c| !c.released);
            let now = now_unix();
            let notice = match &current {
                // Our own write took effect behind a lost answer.
                Some(c) if c.holder.holder == me.holder => {
                    return Ok(Box::new(self.start(c.clone(), version, None)));
                }
                None => None,
                Some(c) if c.expires() <= now => Some(format!(
                    "took over the expired lease of {} (it expired {}s ago)",
                    c.holder,
                    now - c.expires()
                )),
                Some(c) if kept_holder.as_deref() == Some(c.holder.holder.as_str()) => {
                    Some(format!(
                        "took over the lease of {}: this machine keeps that run's journal ({}), so this run goes on from it",
                        c.holder,
                        self.kept_path().display()
                    ))
                }
                Some(c) => {
                    return Err(JournalError::Leased {
                        location: self.kv.location(),
                        holder: c.holder.to_string(),
                        expires_in_s: c.expires() - now,
                    });
                }
            };
            let mut holder = me.clone();
            holder.acquired_unix = now;
            holder.expires_unix = Some(now + self.life.as_secs());
            let record = LeaseRecord {
                holder,
                lease_seconds: self.life.as_secs(),
                released: false,
                released_by: None,
            };
            let value = serde_json::to_value(&record).unwrap_or(Value::Null);
            match self.kv.put("lock", value, version).await {
                Ok(v) => return Ok(Box::new(self.start(record, v, notice))),
                // Another run took it between our read and write: look again.
                Err(PutError::Cas) => {}
                Err(PutError::Other(reason)) => return Err(self.kv.backend_error(reason)),
            }
        }
        Err(self.kv.backend_error(
            "its lock changed under every attempt to take it: other runs are starting at the same moment; try again".into(),
        ))
    }

    async fn read(&self) -> Result<Option<Stored>, JournalError> {
        let (data, version) = self.kv.get("journal").await?;
        let stored = data.map(|d| self.text_of(&d)).transpose()?;
        if let Some(kept) = self.kept()? {
            let path = self.kept_path();
            let remove = || std::fs::remove_file(&path).map_err(io(&path));
            if stored.as_deref() == Some(kept.journal.as_str()) {
                // The write that failed had taken effect after all.
                remove()?;
            } else if kept.version == version {
                self.same_cluster(&kept.journal)?;
                let value = json!({ "journal": kept.journal });
                let written = match self.kv.put("journal", value, version).await {
                    Ok(v) => v,
                    Err(PutError::Cas) => {
                        return Err(JournalError::Diverged {
                            location: self.kv.location(),
                            kept: path.clone(),
                            kept_version: kept.version,
                            stored_version: version + 1,
                        });
                    }
                    Err(PutError::Other(reason)) => return Err(self.kv.backend_error(reason)),
                };
                remove()?;
                return Ok(Some(Stored {
                    text: kept.journal,
                    version: written,
                    notice: Some(format!(
                        "wrote the journal this machine kept ({}) back to {}",
                        path.display(),
                        self.kv.location()
                    )),
                }));
            } else {
                return Err(JournalError::Diverged {
                    location: self.kv.location(),
                    kept: path.clone(),
                    kept_version: kept.version,
                    stored_version: version,
                });
            }
        }
        if let Some(text) = &stored {
            self.same_cluster(text)?;
        }
        Ok(stored.map(|text| Stored {
            text,
            version,
            notice: None,
        }))
    }

    async fn write(&self, text: &str, version: u64) -> Result<u64, JournalError> {
        // `castle state push` could bring another cluster's file.
        self.same_cluster(text)?;
        if let Some(by) = self.lease_problem().await {
            return Err(JournalError::LeaseLost {
                location: self.kv.location(),
                by,
                kept: self.keep(text, version)?,
            });
        }
        match self
            .kv
            .put("journal", json!({ "journal": text }), version)
            .await
        {
            Ok(v) => Ok(v),
            Err(PutError::Cas) => {
                // Our own write took effect behind a lost answer: nothing to refuse.
                if let Ok((Some(data), v)) = self.kv.get("journal").await
                    && data.get("journal").and_then(Value::as_str) == Some(text)
                {
                    return Ok(v);
                }
                let other = match self.kv.lease().await {
                    Ok((Some(c), _)) if !c.released => c.holder.to_string(),
                    Ok((Some(c), _)) => format!("last held by {}", c.holder),
                    _ => "unknown: no run holds the lock".into(),
                };
                Err(JournalError::Conflict {
                    location: self.kv.location(),
                    other,
                    kept: self.keep(text, version)?,
                })
            }
            Err(PutError::Other(reason)) => Err(JournalError::NotWritten {
                location: self.kv.location(),
                reason,
                kept: self.keep(text, version)?,
            }),
        }
    }

    async fn peek(&self) -> Result<Option<String>, JournalError> {
        let (data, version) = self.kv.get("journal").await?;
        let stored = data.map(|d| self.text_of(&d)).transpose()?;
        // A journal kept here on top of the stored one is the newest there is.
        Ok(match self.kept()? {
            Some(kept) if kept.version == version => Some(kept.journal),
            _ => stored,
        })
    }

    async fn holder(&self) -> Result<Option<LockHolder>, JournalError> {
        let (current, _) = self.kv.lease().await?;
        Ok(current.filter(|c| !c.released).map(|c| c.holder))
    }

    async fn unlock(&self, force: Force) -> Result<String, JournalError> {
        let (current, version) = self.kv.lease().await?;
        let Some(mut record) = current.filter(|c| !c.released) else {
            return Ok(format!("{} is not locked", self.kv.location()));
        };
        let now = now_unix();
        let holder = record.holder.clone();
        let here = holder.host == this_host();
        let done = if record.expires() <= now {
            format!("released the expired lease of {holder}")
        } else if here && !pid_alive(holder.pid) {
            format!("released the lease of {holder}: its process is gone")
        } else if force == Force::Live {
            format!(
                "broke the live lease of {holder}; if that run still works, it stops at its next journal write and overwrites nothing"
            )
        } else {
            return Err(JournalError::Refused(format!(
                "the lease of {holder} on {} is live for {}s more and {}: wait for that run to finish, or pass --force twice to break it anyway (that run, if alive, stops at its next journal write and overwrites nothing)",
                self.kv.location(),
                record.expires() - now,
                if here {
                    "its process runs on this machine"
                } else {
                    "it was taken on another machine"
                },
            )));
        };
        record.released = true;
        record.released_by = Some(format!(
            "`castle unlock --force` (pid {} on {})",
            std::process::id(),
            this_host()
        ));
        let value = serde_json::to_value(&record).unwrap_or(Value::Null);
        match self.kv.put("lock", value, version).await {
            Ok(_) => Ok(done),
            Err(PutError::Cas) => Err(JournalError::Refused(format!(
                "the lock of {} changed while it was being released; run `castle unlock` again to see who holds it now",
                self.kv.location()
            ))),
            Err(PutError::Other(reason)) => Err(self.kv.backend_error(reason)),
        }
    }
}

#[cfg(all(test, feature = "lab"))]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalState};
    use castle_vault::MockVault;

    fn vault() -> MockVault {
        let v = MockVault::new();
        v.enable_kv_v2("secret");
        v
    }

    fn state(v: &MockVault, dir: &Path) -> Arc<VaultState> {
        Arc::new(
            VaultState::new(
                Arc::new(v.clone()),
                "https://vault.test:8200",
                "secret",
                "castle/lab/state",
                "lab",
                dir,
            )
            .with_lease(Duration::from_secs(3)),
        )
    }

    async fn write_lock(v: &MockVault, record: Value) {
        let (_, version) = state(v, Path::new("/nonexistent"))
            .kv
            .get("lock")
            .await
            .expect("the lock reads");
        v.write(
            "secret/data/castle/lab/state/lock",
            json!({"data": record, "options": {"cas": version}}),
        )
        .await
        .expect("the lock is written");
    }

    fn other_holder(expires: u64) -> Value {
        json!({"holder": "0123456789abcdef", "host": "ci-runner-7", "pid": 4242,
               "command": "create", "acquired_unix": 1, "expires_unix": expires,
               "lease_seconds": 60, "released": false})
    }

    #[tokio::test]
    async fn a_second_run_is_refused_naming_the_holder_until_the_first_releases() {
        let v = vault();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = Journal::open_in(state(&v, a.path()), "lab", "create")
            .await
            .unwrap();
        let err = Journal::open_in(state(&v, b.path()), "lab", "destroy")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, JournalError::Leased { .. }), "{text}");
        assert!(
            text.contains("`castle create`")
                && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        first.close().await;
        let second = Journal::open_in(state(&v, b.path()), "lab", "destroy")
            .await
            .unwrap();
        assert!(second.notices().is_empty(), "{:?}", second.notices());
        second.close().await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_the_output_says_so() {
        let v = vault();
        write_lock(&v, other_holder(now_unix() - 5)).await;
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open_in(state(&v, dir.path()), "lab", "create")
            .await
            .unwrap();
        let notice = journal.notices().join("\n");
        assert!(
            notice.contains("took over the expired lease")
                && notice.contains("pid 4242 on ci-runner-7"),
            "{notice}"
        );
        journal.close().await;
    }

    #[tokio::test]
    async fn a_live_lease_elsewhere_needs_force_twice_and_its_run_then_stops_at_its_next_write() {
        let v = vault();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut first = Journal::open_in(state(&v, a.path()), "lab", "create")
            .await
            .unwrap();
        first
            .update(|s| s.last_run = Some("r1".into()))
            .await
            .unwrap();
        // Seen from another machine, the lease is live and its process unknown.
        let mut record: LeaseRecord = serde_json::from_value(
            v.read("secret/data/castle/lab/state/lock")
                .await
                .unwrap()
                .unwrap()["data"]
                .clone(),
        )
        .unwrap();
        record.holder.host = "another-host".into();
        write_lock(&v, serde_json::to_value(&record).unwrap()).await;
        let other = state(&v, b.path());
        let refused = other.unlock(Force::Dead).await.unwrap_err().to_string();
        assert!(
            refused.contains("live") && refused.contains("--force twice"),
            "{refused}"
        );
        let broke = other.unlock(Force::Live).await.unwrap();
        assert!(broke.contains("broke the live lease"), "{broke}");
        let err = first
            .update(|s| s.last_run = Some("r2".into()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, JournalError::LeaseLost { .. }), "{text}");
        assert!(a.path().join(".castle/state.kept.json").exists(), "{text}");
        // The write was refused: the stored journal is the one written before.
        let stored = Journal::peek_in(state(&v, b.path()).as_ref())
            .await
            .unwrap();
        assert_eq!(stored.last_run.as_deref(), Some("r1"));
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_heartbeat_saw_the_lease_broken_the_next_write_stops() {
        let v = vault();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut first = Journal::open_in(state(&v, a.path()), "lab", "create")
            .await
            .unwrap();
        state(&v, b.path()).unlock(Force::Live).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let err = first
            .update(|s| s.last_run = Some("r2".into()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, JournalError::LeaseLost { .. }), "{text}");
        assert!(text.contains("castle unlock --force"), "{text}");
    }

    #[tokio::test]
    async fn two_writers_on_one_version_one_wins_the_other_is_refused_and_keeps_its_journal() {
        let v = vault();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sa, sb) = (state(&v, a.path()), state(&v, b.path()));
        let text = |run: &str| {
            let mut j = JournalState::empty("lab");
            j.last_run = Some(run.into());
            j.to_text(Path::new("x")).unwrap()
        };
        let v1 = sa.write(&text("r0"), 0).await.unwrap();
        let v2 = sa.write(&text("a"), v1).await.unwrap();
        let err = sb.write(&text("b"), v1).await.unwrap_err();
        assert!(matches!(err, JournalError::Conflict { .. }), "{err}");
        assert_eq!(sa.read().await.unwrap().unwrap().text, text("a"));
        assert_eq!(sa.read().await.unwrap().unwrap().version, v2);
        // The loser's journal waits on its machine; it no longer follows Vault's.
        let diverged = sb.read().await.unwrap_err();
        assert!(
            matches!(diverged, JournalError::Diverged { kept_version, stored_version, .. } if kept_version == v1 && stored_version == v2),
            "{diverged}"
        );
        // The same text twice is no conflict: a retried write that took effect.
        assert_eq!(sa.write(&text("a"), v1).await.unwrap(), v2);
    }

    #[tokio::test]
    async fn a_write_vault_refuses_is_kept_locally_and_the_next_run_writes_it_back() {
        let v = vault();
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open_in(state(&v, dir.path()), "lab", "create")
            .await
            .unwrap();
        journal
            .update(|s| s.last_run = Some("r1".into()))
            .await
            .unwrap();
        v.set_sealed(true);
        let err = journal
            .update(|s| s.last_run = Some("r2".into()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(err.stopped_a_run(), "{text}");
        assert!(
            text.contains("state.kept.json") && text.contains("--resume"),
            "{text}"
        );
        journal.close().await;
        v.set_sealed(false);
        // The lease is still live (its release could not reach Vault): this
        // machine keeps that run's journal, so it may go on from it.
        let resumed = Journal::open_in(state(&v, dir.path()), "lab", "create")
            .await
            .unwrap();
        let notices = resumed.notices().join("\n");
        assert!(
            notices.contains("took over the lease") && notices.contains("wrote the journal"),
            "{notices}"
        );
        assert_eq!(resumed.state().last_run.as_deref(), Some("r2"));
        assert!(!dir.path().join(".castle/state.kept.json").exists());
        resumed.close().await;
        let stored = Journal::peek_in(state(&v, dir.path()).as_ref())
            .await
            .unwrap();
        assert_eq!(stored.last_run.as_deref(), Some("r2"));
    }

    #[tokio::test]
    async fn another_clusters_journal_is_refused_in_vault_and_from_a_file() {
        let v = vault();
        let dir = tempfile::tempdir().unwrap();
        let s = state(&v, dir.path());
        let text = JournalState::empty("other")
            .to_text(Path::new("x"))
            .unwrap();
        let pushed = s.write(&text, 0).await.unwrap_err();
        assert!(
            matches!(pushed, JournalError::WrongCluster { .. }),
            "{pushed}"
        );
        v.write(
            "secret/data/castle/lab/state/journal",
            json!({"data": {"journal": text}}),
        )
        .await
        .unwrap();
        let err = Journal::open_in(s, "lab", "create").await.unwrap_err();
        assert!(matches!(err, JournalError::WrongCluster { .. }), "{err}");
        // Refused before anything: the lock is free again.
        assert!(state(&v, dir.path()).holder().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_missing_mount_is_named_with_how_to_enable_it() {
        let v = MockVault::new();
        let dir = tempfile::tempdir().unwrap();
        let err = Journal::open_in(state(&v, dir.path()), "lab", "create")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets enable -path=secret kv-v2"), "{err}");
    }
}
