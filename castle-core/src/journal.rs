//! The journal: status, non-secret outputs, input fingerprints and timings of every
//! step, written after every transition, guarded by the cluster's lock: never a
//! secret. Where it lives is a [`StateBackend`]: by
//! default `<cluster dir>/.castle/state.json` with a file lock, or a Vault KV v2
//! entry with a leased lock (`[state] backend = "vault"`). Its shape is the same in
//! both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::StepError;
use crate::state::{FileState, StateBackend, StateLock};

/// 2: the platform and talos steps became per-node units (`platform/<node>`,
/// `talos/<node>`, `join/<node>`); a version 1 journal is migrated on reading
/// ([`JournalState::from_text`]).
const FORMAT_VERSION: u32 = 2;

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
    /// Another run holds the cluster's lease in Vault.
    #[error(
        "cluster state {location} is locked by {holder}; its lease runs {expires_in_s}s more and is renewed while that run lives: wait for it to finish. If that run is gone, the lease expires by itself and the next run takes it over; `castle unlock --force` releases it at once when its process is gone from this machine"
    )]
    Leased {
        /// Where the state lives.
        location: String,
        /// Who holds the lease.
        holder: String,
        /// Seconds the lease still runs.
        expires_in_s: u64,
    },
    /// Another writer changed the journal since this run read it: nothing was
    /// overwritten, the run stops.
    #[error(
        "the journal at {location} was changed by another writer ({other}) since this run read it; nothing was overwritten and this run stops here. Its own journal is kept in {}: compare the two (`castle status` shows the stored one), then delete that file to go on from the stored journal", kept.display()
    )]
    Conflict {
        /// Where the state lives.
        location: String,
        /// The other writer, as far as the lock names it.
        other: String,
        /// Where this run's journal is kept.
        kept: PathBuf,
    },
    /// The run's lease was taken over or broken: it stops before writing.
    #[error(
        "this run no longer holds the lock of {location}: {by}; nothing was overwritten and this run stops here. Its journal is kept in {}: see who works on the cluster now, then delete that file to go on from the stored journal", kept.display()
    )]
    LeaseLost {
        /// Where the state lives.
        location: String,
        /// Who took the lease, or who broke it.
        by: String,
        /// Where this run's journal is kept.
        kept: PathBuf,
    },
    /// A journal write did not reach the backend: the run stops, every step done
    /// so far recorded in a local file.
    #[error(
        "the journal could not be written to {location} ({reason}); the run stopped at this write, and every step done so far is recorded in {}. Once it can be written again, run the same command with --resume: it writes that file back first, then goes on", kept.display()
    )]
    NotWritten {
        /// Where the state lives.
        location: String,
        /// Why.
        reason: String,
        /// Where the journal is kept.
        kept: PathBuf,
    },
    /// A journal kept locally while the backend could not be written no longer
    /// follows the stored one: another run worked on the cluster since.
    #[error(
        "{} holds this machine's journal from when {location} could not be written (at version {kept_version}), but the stored journal has moved on to version {stored_version}: another run worked on the cluster since. Compare the two (`castle status` shows the stored one), then delete the file to go on from the stored journal", kept.display()
    )]
    Diverged {
        /// Where the state lives.
        location: String,
        /// The local file.
        kept: PathBuf,
        /// The version it was written on top of.
        kept_version: u64,
        /// The stored journal's version now.
        stored_version: u64,
    },
    /// The stored journal is another cluster's.
    #[error(
        "the journal at {location} belongs to cluster `{found}`, not `{expected}`: give each cluster its own [state] path"
    )]
    WrongCluster {
        /// Where the state lives.
        location: String,
        /// The cluster the journal names.
        found: String,
        /// This cluster.
        expected: String,
    },
    /// Vault refused or could not be asked (outside a journal write).
    #[error("cluster state {location}: {reason}")]
    Backend {
        /// Where the state lives.
        location: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// A state command refused to do what it was asked (it would lose something).
    #[error("{0}")]
    Refused(String),
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

impl JournalError {
    /// Whether a run stopped at a journal write it could not make: the steps done
    /// so far are kept, and `--resume` (once the cause is fixed) goes on. The other
    /// errors refuse to start.
    pub fn stopped_a_run(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. } | Self::LeaseLost { .. } | Self::NotWritten { .. }
        )
    }
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
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
    /// What reading an older format changed, for the run to say.
    #[serde(skip)]
    pub migrated: Option<String>,
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

impl JournalState {
    /// An empty journal of `cluster`.
    pub fn empty(cluster: &str) -> Self {
        Self {
            version: FORMAT_VERSION,
            cluster: cluster.to_string(),
            ..Self::default()
        }
    }

    /// The journal's text: pretty JSON, the same in every backend.
    ///
    /// # Errors
    /// Never in practice (the state is plain data); `Corrupt` naming `path` otherwise.
    pub fn to_text(&self, path: &Path) -> Result<String, JournalError> {
        serde_json::to_string_pretty(self).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Parses a journal's text; `path` names where it came from in the error.
    ///
    /// # Errors
    /// `Corrupt` when it is not a journal.
    /// A version 1 journal is migrated: what it recorded of the whole `platform`
    /// and `talos` steps goes to each node's unit, so that a resume finds every
    /// clone intent where the unit looks for it (no VM is cloned twice) and every
    /// node's VM and config as done. The units' fingerprints are left empty: each
    /// unit runs once more, adopting what exists and changing nothing.
    pub fn from_text(text: &str, path: &Path) -> Result<Self, JournalError> {
        let mut state: Self = serde_json::from_str(text).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if state.version < 2 && !state.steps.is_empty() {
            state.migrated = Some(state.split_per_node());
        }
        state.version = state.version.max(FORMAT_VERSION);
        Ok(state)
    }

    /// Version 1 -> 2: `platform.outputs.clones` (intents `{vmid, template, name}`,
    /// name `<cluster>-<node>`) and `.vms`, and `talos.outputs.configs` (node ->
    /// digest), become `platform/<node>` and `talos/<node>` records.
    fn split_per_node(&mut self) -> String {
        let node_of = |vm_name: &str| {
            vm_name
                .strip_prefix(&format!("{}-", self.cluster))
                .unwrap_or(vm_name)
                .to_string()
        };
        let unit = |from: &StepRecord, status: StepStatus, outputs: serde_json::Value| StepRecord {
            status,
            fingerprint: String::new(),
            outputs,
            attempts: 0,
            run_id: from.run_id.clone(),
            duration_ms: 0,
            error: None,
        };
        let mut units: BTreeMap<String, StepRecord> = BTreeMap::new();
        let mut intents = 0;
        if let Some(platform) = self.steps.get_mut("platform") {
            let clones = platform
                .outputs
                .as_object_mut()
                .and_then(|o| o.remove("clones"))
                .and_then(|c| c.as_array().cloned())
                .unwrap_or_default();
            let vms = platform
                .outputs
                .get("vms")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            let platform = platform.clone();
            for vm in &vms {
                let Some(name) = vm.get("name").and_then(serde_json::Value::as_str) else {
                    continue;
                };
                units.insert(
                    format!("platform/{}", node_of(name)),
                    unit(&platform, platform.status, vm.clone()),
                );
            }
            for intent in clones {
                let Some(name) = intent.get("name").and_then(serde_json::Value::as_str) else {
                    continue;
                };
                intents += 1;
                let record = units
                    .entry(format!("platform/{}", node_of(name)))
                    .or_insert_with(|| unit(&platform, StepStatus::Running, serde_json::json!({})));
                if !record.outputs.is_object() {
                    record.outputs = serde_json::json!({});
                }
                record.outputs["clones"] = serde_json::json!([intent]);
            }
        }
        if let Some(talos) = self.steps.get("talos").cloned()
            && let Some(configs) = talos.outputs.get("configs").and_then(|c| c.as_object())
        {
            for (node, digest) in configs {
                units.insert(
                    format!("talos/{node}"),
                    unit(
                        &talos,
                        talos.status,
                        serde_json::json!({ "digest": digest }),
                    ),
                );
            }
        }
        let made = units.len();
        for (id, record) in units {
            self.steps.entry(id).or_insert(record);
        }
        format!(
            "journal of format 1 read: the platform and talos steps' records moved to {made} per-node units ({intents} clone intents kept); each unit runs once more, adopting what exists"
        )
    }
}

/// An open journal holding the cluster's lock, in whichever backend keeps it. The
/// lock is released by [`close`](Self::close) (a file lock also when this value is
/// dropped; a Vault lease then expires by itself).
#[derive(Debug)]
pub struct Journal {
    backend: Arc<dyn StateBackend>,
    lock: Option<Box<dyn StateLock>>,
    state: JournalState,
    version: u64,
    notices: Vec<String>,
}

impl Journal {
    /// The state directory of a cluster: `<cluster dir>/.castle`.
    pub fn state_dir(cluster_dir: &Path) -> PathBuf {
        cluster_dir.join(".castle")
    }

    /// Opens (or starts) the file journal of the cluster in `cluster_dir`, taking
    /// its lock.
    ///
    /// # Errors
    /// [`JournalError::Locked`] when another run holds the lock; `Corrupt` or `Io`
    /// when the file cannot be read.
    pub fn open(cluster_dir: &Path, cluster: &str) -> Result<Self, JournalError> {
        let file = FileState::new(cluster_dir);
        let lock = file.lock_now()?;
        let state = match file.read_now()? {
            Some(text) => JournalState::from_text(&text, &file.journal_path())?,
            None => JournalState::empty(cluster),
        };
        Ok(Self {
            backend: Arc::new(file),
            lock: Some(Box::new(lock)),
            notices: state.migrated.clone().into_iter().collect(),
            state,
            version: 0,
        })
    }

    /// Opens (or starts) the journal `backend` keeps, taking the cluster's lock for
    /// `command` (`create`, `vault apply`, ...).
    ///
    /// # Errors
    /// The lock is held by another run ([`JournalError::Locked`] or `Leased`), the
    /// journal is unreadable or another cluster's, or the backend cannot be asked.
    pub async fn open_in(
        backend: Arc<dyn StateBackend>,
        cluster: &str,
        command: &str,
    ) -> Result<Self, JournalError> {
        let lock = backend.lock(command).await?;
        let mut notices: Vec<String> = lock.notice().into_iter().map(str::to_string).collect();
        let read = match backend.read().await {
            Ok(read) => read,
            Err(e) => {
                lock.release().await;
                return Err(e);
            }
        };
        let (state, version) = match read {
            Some(stored) => {
                notices.extend(stored.notice);
                match JournalState::from_text(&stored.text, Path::new(&backend.location())) {
                    Ok(state) => {
                        notices.extend(state.migrated.clone());
                        (state, stored.version)
                    }
                    Err(e) => {
                        lock.release().await;
                        return Err(e);
                    }
                }
            }
            None => (JournalState::empty(cluster), 0),
        };
        Ok(Self {
            backend,
            lock: Some(lock),
            state,
            version,
            notices,
        })
    }

    /// Reads a cluster's file journal without taking the lock (for `status` and
    /// `report`).
    ///
    /// # Errors
    /// `Corrupt` or `Io`; a missing journal reads as empty.
    pub fn peek(cluster_dir: &Path) -> Result<JournalState, JournalError> {
        let file = FileState::new(cluster_dir);
        match file.read_now()? {
            Some(text) => JournalState::from_text(&text, &file.journal_path()),
            None => Ok(JournalState::default()),
        }
    }

    /// Reads the journal `backend` keeps without taking the lock.
    ///
    /// # Errors
    /// `Corrupt`, or the backend cannot be asked; a missing journal reads as empty.
    pub async fn peek_in(backend: &dyn StateBackend) -> Result<JournalState, JournalError> {
        match backend.peek().await? {
            Some(text) => JournalState::from_text(&text, Path::new(&backend.location())),
            None => Ok(JournalState::default()),
        }
    }

    /// What opening the journal did that the user should hear of (a lease taken
    /// over, a journal kept locally written back).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// The current content.
    pub fn state(&self) -> &JournalState {
        &self.state
    }

    /// Changes the content and writes it at once: a check-and-set on the version
    /// this journal last read or wrote.
    ///
    /// # Errors
    /// When it cannot be written; the stored journal is then intact, and a backend
    /// that keeps state elsewhere has kept this one locally (the error says where).
    pub async fn update(
        &mut self,
        change: impl FnOnce(&mut JournalState),
    ) -> Result<(), JournalError> {
        change(&mut self.state);
        let text = self.state.to_text(Path::new(&self.backend.location()))?;
        self.version = self.backend.write(&text, self.version).await?;
        Ok(())
    }

    /// Releases the cluster's lock.
    pub async fn close(mut self) {
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
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

    #[tokio::test]
    async fn updates_survive_a_reopen_and_leave_no_temporary_file() {
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
            .await
            .unwrap();
        journal.close().await;
        let state = Journal::peek(dir.path()).unwrap();
        assert!(state.is_done_with("platform", "abc"));
        assert!(!state.is_done_with("platform", "other"));
        assert!(!dir.path().join(".castle/state.json.tmp").exists());
    }

    /// Format 1 kept the whole platform step's clone intents and VMs, and the talos
    /// step's config digests, in one record each; format 2 keeps them per node.
    #[test]
    fn a_format_1_journal_is_split_into_per_node_units() {
        let v1 = serde_json::json!({
            "version": 1, "cluster": "lab", "last_run": "r1",
            "steps": {
                "platform": {"status": "running", "fingerprint": "f", "attempts": 1, "run_id": "r1", "duration_ms": 0,
                    "outputs": {
                        "vms": [{"vmid": 421, "name": "lab-cp-1", "outcome": "created"}],
                        "clones": [
                            {"vmid": 421, "template": 9000, "name": "lab-cp-1"},
                            {"vmid": 422, "template": 9000, "name": "lab-worker-1"}
                        ]}},
                "talos": {"status": "done", "fingerprint": "t", "attempts": 1, "run_id": "r1", "duration_ms": 9,
                    "outputs": {"configs": {"cp-1": "abc"}, "bootstrap_node": "192.168.1.211"}}
            }
        });
        let state = JournalState::from_text(&v1.to_string(), Path::new("state.json")).unwrap();
        assert_eq!(state.version, FORMAT_VERSION);
        let cp = &state.steps["platform/cp-1"];
        assert_eq!(cp.outputs["vmid"], 421);
        assert_eq!(cp.outputs["clones"][0]["vmid"], 421);
        assert_eq!(cp.fingerprint, "", "it runs once more, adopting");
        let w = &state.steps["platform/worker-1"];
        assert_eq!(w.status, StepStatus::Running);
        assert_eq!(w.outputs["clones"][0]["name"], "lab-worker-1");
        assert!(state.steps["platform"].outputs.get("clones").is_none());
        assert_eq!(state.steps["talos/cp-1"].outputs["digest"], "abc");
        assert_eq!(state.steps["talos/cp-1"].status, StepStatus::Done);
        assert!(
            state
                .migrated
                .as_deref()
                .unwrap()
                .contains("2 clone intents kept")
        );
        // Written back, it is format 2 and reads as it was.
        let again = JournalState::from_text(
            &state.to_text(Path::new("state.json")).unwrap(),
            Path::new("state.json"),
        )
        .unwrap();
        assert!(again.migrated.is_none());
        assert_eq!(again.steps.len(), state.steps.len());
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
