//! The step graph and its executor.
//!
//! A [`Step`] names its dependencies; the [`Executor`] starts each step the moment
//! its dependencies are done (no layers), bounds concurrency, retries transient
//! failures with backoff, enforces per-step and overall timeouts, and stops at safe
//! points when cancelled. Every transition is written to the [`Journal`](crate::journal::Journal)
//! and sent as an [`Event`].

mod executor;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use executor::{Action, Checkpoint, ExecOptions, Executor, RetryPolicy, RunOutcome};

use crate::error::StepError;
use crate::events::{Event, Events};

/// One unit of the rebirth. Every step is idempotent: a second `apply` changes nothing.
#[async_trait]
pub trait Step: Send + Sync {
    /// The step's id, unique in its graph (`platform`, `talos`, ...).
    fn id(&self) -> &str;

    /// The ids of the steps that must be done before this one starts.
    fn deps(&self) -> Vec<String>;

    /// A digest of the step's non-secret inputs: `--resume` skips a done step only
    /// while this is unchanged.
    fn fingerprint(&self) -> String {
        String::new()
    }

    /// Whether the step hands results to later steps only in memory (a minted key,
    /// a kubeconfig): then `--resume` runs it again whenever a step after it runs.
    fn keeps_outputs_in_memory(&self) -> bool {
        false
    }

    /// This step's own time budget, overriding the executor's default.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// The node this step is one unit of, when it is part of a per-node flow
    /// (`platform/cp-1`, `talos/cp-1`, `join/cp-1`): the report draws it in that
    /// node's lane, and the executor's `concurrency` does not count it, since what
    /// bounds a node's work is the node's own resources (a clone slot, its boot).
    fn node(&self) -> Option<&str> {
        None
    }

    /// Does the step's work; returns non-secret outputs for the journal.
    ///
    /// # Errors
    /// A classified [`StepError`]: transient ones are retried by the executor.
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError>;

    /// Removes what the step created. Must finish (not hang) when the systems it
    /// talks to are already gone. `ctx.recorded_outputs()` holds what `apply` recorded.
    ///
    /// # Errors
    /// A classified [`StepError`].
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError>;

    /// Called instead of `apply` when `--resume` skips the step, with the outputs it
    /// recorded, so that later steps can read them.
    fn restore(&self, _outputs: &serde_json::Value) {}
}

/// Cancellation: once set, no new step starts and running steps stop at their next
/// safe point (a wait wrapped in [`StepCtx::guard`]).
#[derive(Debug, Clone)]
pub struct Cancel {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// Not cancelled.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Cancels with a reason (`interrupted (Ctrl-C)`, `overall timeout of 30m`).
    pub fn cancel(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Why the run was cancelled, if it was.
    pub fn reason(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Finishes once the run is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(Option::is_some).await;
    }
}

/// A step's request to write one of its outputs to the journal before it ends.
#[derive(Debug)]
pub(crate) struct Note {
    step: String,
    key: String,
    value: serde_json::Value,
    written: oneshot::Sender<Result<(), String>>,
}

/// What a running step can see and do.
#[derive(Debug, Clone)]
pub struct StepCtx {
    step: String,
    attempt: u32,
    events: Events,
    epoch: Instant,
    cancel: Cancel,
    recorded: serde_json::Value,
    notes: Option<mpsc::UnboundedSender<Note>>,
}

impl StepCtx {
    /// A context outside any executor (tests, the Python layer's piecemeal calls).
    pub fn detached(step: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            attempt: 1,
            events: Events::new(),
            epoch: Instant::now(),
            cancel: Cancel::new(),
            recorded: serde_json::Value::Null,
            notes: None,
        }
    }

    /// The step's id.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// 1 for the first attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// What `apply` recorded in the journal (for `destroy`), or null.
    pub fn recorded_outputs(&self) -> &serde_json::Value {
        &self.recorded
    }

    /// Writes `value` under `key` in this step's journal outputs now, and returns
    /// once the journal is on disk: for an intent that must survive a crash in the
    /// middle of the step (a clone about to be sent). A later `record` of the same
    /// key replaces it; the step's final outputs replace them all. Outside an
    /// executor there is no journal and nothing is written. Never pass a secret.
    ///
    /// # Errors
    /// [`StepError::permanent`] when the journal cannot be written: then the step
    /// must not do what it meant to record.
    pub async fn record(&self, key: &str, value: serde_json::Value) -> Result<(), StepError> {
        let Some(notes) = &self.notes else {
            return Ok(());
        };
        let (written, done) = oneshot::channel();
        let note = Note {
            step: self.step.clone(),
            key: key.to_string(),
            value,
            written,
        };
        let unrecorded =
            |why: String| StepError::permanent(format!("recording `{key}` in the journal: {why}"));
        notes
            .send(note)
            .map_err(|_| unrecorded("the run has ended".into()))?;
        done.await
            .map_err(|_| unrecorded("the run has ended".into()))?
            .map_err(unrecorded)
    }

    /// The run's cancellation.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Says what the step is doing. Never pass a secret.
    pub fn progress(&self, message: impl Into<String>) {
        self.events.emit(&Event::StepProgress {
            step: self.step.clone(),
            message: message.into(),
            at_ms: millis(self.epoch.elapsed()),
        });
    }

    /// Runs `work` unless the run is cancelled first: wrap waits that are safe to
    /// abandon (a readiness watch, a task poll), never a half-sent write.
    ///
    /// # Errors
    /// [`StepError::cancelled`] when the run is cancelled first.
    pub async fn guard<T>(
        &self,
        work: impl Future<Output = Result<T, StepError>>,
    ) -> Result<T, StepError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(StepError::cancelled()),
            result = work => result,
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A validated step graph: every dependency exists and there is no cycle.
#[derive(Clone)]
pub struct Graph {
    steps: Vec<Arc<dyn Step>>,
    deps: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("deps", &self.deps).finish()
    }
}

impl Graph {
    /// Checks the steps and orders them topologically (ties keep the given order).
    ///
    /// # Errors
    /// A duplicate id, a dependency on a step that is not in the graph, or a cycle.
    pub fn new(steps: Vec<Arc<dyn Step>>) -> Result<Self, crate::Error> {
        let mut deps = BTreeMap::new();
        for step in &steps {
            if deps.insert(step.id().to_string(), step.deps()).is_some() {
                return Err(crate::Error::Graph(format!(
                    "step `{}` appears twice",
                    step.id()
                )));
            }
        }
        for (id, ds) in &deps {
            if let Some(missing) = ds.iter().find(|d| !deps.contains_key(*d)) {
                return Err(crate::Error::Graph(format!(
                    "step `{id}` depends on `{missing}`, which is not in the graph"
                )));
            }
        }
        let mut ordered: Vec<Arc<dyn Step>> = Vec::with_capacity(steps.len());
        let mut placed = BTreeSet::new();
        let mut remaining = steps;
        while !remaining.is_empty() {
            let before = remaining.len();
            let mut rest = Vec::new();
            for step in remaining {
                if deps[step.id()].iter().all(|d| placed.contains(d)) {
                    placed.insert(step.id().to_string());
                    ordered.push(step);
                } else {
                    rest.push(step);
                }
            }
            if rest.len() == before {
                let names: Vec<_> = rest.iter().map(|s| s.id().to_string()).collect();
                return Err(crate::Error::Graph(format!(
                    "dependency cycle among {}",
                    names.join(", ")
                )));
            }
            remaining = rest;
        }
        Ok(Self {
            steps: ordered,
            deps,
        })
    }

    /// The steps in topological order.
    pub fn steps(&self) -> &[Arc<dyn Step>] {
        &self.steps
    }

    /// The direct dependencies of a step.
    pub fn deps_of(&self, id: &str) -> &[String] {
        self.deps.get(id).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every step that depends on `id`, directly or not.
    pub fn downstream_of(&self, id: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut frontier = vec![id.to_string()];
        while let Some(current) = frontier.pop() {
            for (other, ds) in &self.deps {
                if ds.contains(&current) && found.insert(other.clone()) {
                    frontier.push(other.clone());
                }
            }
        }
        found
    }

    /// Every step that `id` depends on, directly or not.
    pub fn upstream_of(&self, id: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut frontier = vec![id.to_string()];
        while let Some(current) = frontier.pop() {
            for d in self.deps_of(&current) {
                if found.insert(d.clone()) {
                    frontier.push(d.clone());
                }
            }
        }
        found
    }

    /// The graph as text: one line per step with its dependencies.
    pub fn describe(&self) -> String {
        self.steps
            .iter()
            .map(|s| {
                let ds = self.deps_of(s.id());
                if ds.is_empty() {
                    format!("{}\n", s.id())
                } else {
                    format!("{} <- {}\n", s.id(), ds.join(", "))
                }
            })
            .collect()
    }
}
