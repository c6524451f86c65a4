//! Runs a [`Graph`]: each step starts the moment its dependencies are done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Cancel, Graph, Note, Step, StepCtx, millis};
use crate::error::{ErrorKind, StepError};
use crate::events::{Event, Events};
use crate::journal::{Journal, JournalState, StepRecord, StepStatus};
use crate::report::{Report, StepTiming};

/// Backoff for transient failures: `initial`, doubled per attempt up to `max`, and at
/// least what the server asked for (Retry-After).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl RetryPolicy {
    /// Five attempts, 1 s doubling to 30 s.
    pub fn standard() -> Self {
        Self {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }

    /// A single attempt.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::standard()
        }
    }

    /// Sets the number of attempts.
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the first wait.
    #[must_use]
    pub fn with_initial(mut self, d: Duration) -> Self {
        self.initial = d;
        self
    }

    /// The wait after attempt `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let backoff = self.initial.saturating_mul(factor).min(self.max);
        asked.map_or(backoff, |a| a.max(backoff))
    }
}

/// The executor's knobs. Attempt, step and overall budgets are separate.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOptions {
    /// Steps running at once, not counting per-node units ([`Step::node`]).
    pub concurrency: usize,
    /// Default budget of one step, retries included.
    pub step_timeout: Duration,
    /// Budget of the whole run.
    pub overall_timeout: Duration,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// Skip steps that finished with unchanged inputs.
    pub resume: bool,
    /// Run only these steps (and what they need from memory).
    pub only: Option<BTreeSet<String>>,
    /// How long running steps get to reach a safe point after cancellation.
    pub cancel_grace: Duration,
    /// Real seconds per modelled second when the systems are the lab's simulators:
    /// the report shows modelled time beside the wall clock.
    pub time_scale: Option<f64>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            step_timeout: Duration::from_secs(20 * 60),
            overall_timeout: Duration::from_secs(60 * 60),
            retry: RetryPolicy::standard(),
            resume: false,
            only: None,
            cancel_grace: Duration::from_secs(30),
            time_scale: None,
        }
    }
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Apply every step in dependency order.
    Create,
    /// Destroy every step in reverse dependency order.
    Destroy,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Destroy => "destroy",
        }
    }
}

/// How a run ended, with its report.
#[derive(Debug)]
pub struct RunOutcome {
    /// Timings, status and critical path.
    pub report: Report,
    /// The first failure, or the cancellation.
    pub error: Option<crate::Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Skipped,
    Failed,
    Blocked,
    Cancelled,
}

struct Finished {
    id: String,
    result: Result<serde_json::Value, StepError>,
    attempts: u32,
    start: Duration,
    end: Duration,
}

/// Called before every journal write (see [`Executor::with_checkpoint`]).
pub type Checkpoint = Arc<dyn Fn() + Send + Sync>;

/// Runs a graph against a journal.
pub struct Executor {
    graph: Graph,
    options: ExecOptions,
    events: Events,
    cancel: Cancel,
    checkpoint: Option<Checkpoint>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("graph", &self.graph)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor for `graph`.
    pub fn new(graph: Graph, options: ExecOptions, events: Events, cancel: Cancel) -> Self {
        Self {
            graph,
            options,
            events,
            cancel,
            checkpoint: None,
        }
    }

    /// Runs `checkpoint` before every journal write, so that whatever the journal
    /// says is done has been made durable first (the lab saves its simulated world).
    #[must_use]
    pub fn with_checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    async fn write(
        &self,
        journal: &mut Journal,
        change: impl FnOnce(&mut crate::journal::JournalState),
    ) -> Result<(), crate::Error> {
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint();
        }
        Ok(journal.update(change).await?)
    }

    /// Which steps a create run starts (the rest are skipped), in graph order.
    ///
    /// # Errors
    /// `--only` naming an unknown step, or a selected step whose dependency never ran.
    pub fn selection(&self, state: &JournalState) -> Result<Vec<String>, crate::Error> {
        let ids: Vec<String> = self
            .graph
            .steps()
            .iter()
            .map(|s| s.id().to_string())
            .collect();
        let mut run: BTreeSet<String> = match &self.options.only {
            Some(only) => {
                // `platform` names the step and its per-node units (`platform/cp-1`).
                let named = |o: &str, id: &str| {
                    id == o || id.strip_prefix(o).is_some_and(|r| r.starts_with('/'))
                };
                if let Some(unknown) = only
                    .iter()
                    .find(|o| !ids.iter().any(|id| named(o.as_str(), id)))
                {
                    return Err(crate::Error::Graph(format!(
                        "--only names `{unknown}`, which is not a step (steps: {})",
                        ids.join(", ")
                    )));
                }
                ids.iter()
                    .filter(|id| only.iter().any(|o| named(o, id)))
                    .cloned()
                    .collect()
            }
            None if self.options.resume => self
                .graph
                .steps()
                .iter()
                .filter(|s| !state.is_done_with(s.id(), &s.fingerprint()))
                .map(|s| s.id().to_string())
                .collect(),
            None => ids.iter().cloned().collect(),
        };
        // A step whose results live only in memory must run again for any later step
        // that runs; that may in turn pull in its own in-memory predecessors.
        loop {
            let before = run.len();
            for step in self.graph.steps() {
                if step.keeps_outputs_in_memory() && !run.contains(step.id()) {
                    let downstream = self.graph.downstream_of(step.id());
                    if downstream.iter().any(|d| run.contains(d)) {
                        run.insert(step.id().to_string());
                    }
                }
            }
            if run.len() == before {
                break;
            }
        }
        for id in &run {
            for dep in self.graph.upstream_of(id) {
                if !run.contains(&dep) && state.outputs(&dep).is_none() {
                    return Err(crate::Error::Graph(format!(
                        "step `{id}` needs `{dep}`, which has not finished; run it too (or run without --only)"
                    )));
                }
            }
        }
        Ok(ids.into_iter().filter(|id| run.contains(id)).collect())
    }

    /// Runs the action. The journal is written after every transition.
    ///
    /// # Errors
    /// Only when the graph selection is invalid or the journal cannot be written; a
    /// failed step is reported in [`RunOutcome::error`].
    pub async fn run(
        &self,
        action: Action,
        journal: &mut Journal,
        run_id: &str,
    ) -> Result<RunOutcome, crate::Error> {
        let epoch = Instant::now();
        let steps: BTreeMap<String, Arc<dyn Step>> = self
            .graph
            .steps()
            .iter()
            .map(|s| (s.id().to_string(), Arc::clone(s)))
            .collect();
        let order: Vec<String> = self
            .graph
            .steps()
            .iter()
            .map(|s| s.id().to_string())
            .collect();
        // For destroy, a step waits for every step that depended on it.
        let waits_for: BTreeMap<String, Vec<String>> = order
            .iter()
            .map(|id| {
                let ws = match action {
                    Action::Create => self.graph.deps_of(id).to_vec(),
                    Action::Destroy => order
                        .iter()
                        .filter(|o| self.graph.deps_of(o).contains(id))
                        .cloned()
                        .collect(),
                };
                (id.clone(), ws)
            })
            .collect();
        let selected: BTreeSet<String> = match action {
            Action::Create => self.selection(journal.state())?.into_iter().collect(),
            Action::Destroy => order.iter().cloned().collect(),
        };
        // A skipped step passes on nothing held in memory: a step that runs must also
        // wait for every in-memory producer upstream of it that runs again.
        let mut waits_for = waits_for;
        if action == Action::Create {
            for id in &order {
                let extra: Vec<String> = self
                    .graph
                    .upstream_of(id)
                    .into_iter()
                    .filter(|u| selected.contains(u) && steps[u].keeps_outputs_in_memory())
                    .collect();
                if let Some(w) = waits_for.get_mut(id) {
                    for u in extra {
                        if !w.contains(&u) {
                            w.push(u);
                        }
                    }
                }
            }
        }

        self.events.emit(&Event::RunStarted {
            run_id: run_id.to_string(),
            action: action.name().into(),
            steps: order.clone(),
        });
        self.write(journal, |s| s.last_run = Some(run_id.to_string()))
            .await?;

        let mut state: BTreeMap<String, State> = order
            .iter()
            .map(|id| (id.clone(), State::Pending))
            .collect();
        let mut timings: BTreeMap<String, StepTiming> = BTreeMap::new();
        for id in &order {
            let mut timing = StepTiming::new(id, &waits_for[id]);
            timing.node = steps[id].node().map(str::to_string);
            timings.insert(id.clone(), timing);
            if !selected.contains(id) {
                let reason = if self.options.only.is_some() {
                    "not selected by --only"
                } else {
                    "done earlier with the same inputs"
                };
                if let Some(outputs) = journal.state().outputs(id) {
                    steps[id].restore(outputs);
                    if let Some(t) = timings.get_mut(id) {
                        t.noting(outputs);
                    }
                }
                state.insert(id.clone(), State::Skipped);
                self.set_status(&mut timings, id, "skipped");
                self.events.emit(&Event::StepSkipped {
                    step: id.clone(),
                    reason: reason.into(),
                    at_ms: millis(epoch.elapsed()),
                });
            }
        }

        let mut running: JoinSet<Finished> = JoinSet::new();
        let (notes, mut noted) = tokio::sync::mpsc::unbounded_channel::<Note>();
        let mut first_error: Option<crate::Error> = None;
        let deadline = epoch + self.options.overall_timeout;
        let mut grace_deadline: Option<Instant> = None;

        loop {
            if !self.cancel.is_cancelled() {
                let ready: Vec<String> = order
                    .iter()
                    .filter(|id| state[*id] == State::Pending)
                    .filter(|id| {
                        waits_for[*id]
                            .iter()
                            .all(|d| matches!(state[d], State::Done | State::Skipped))
                    })
                    .cloned()
                    .collect();
                let mut shared = state
                    .iter()
                    .filter(|(id, st)| **st == State::Running && steps[*id].node().is_none())
                    .count();
                for id in ready {
                    let unit = steps[&id].node().is_some();
                    if !unit && shared >= self.options.concurrency.max(1) {
                        continue;
                    }
                    if !unit {
                        shared += 1;
                    }
                    state.insert(id.clone(), State::Running);
                    let recorded = journal
                        .state()
                        .steps
                        .get(&id)
                        .map(|r| r.outputs.clone())
                        .unwrap_or_default();
                    let fingerprint = steps[&id].fingerprint();
                    self.write(journal, |s| {
                        s.steps.insert(
                            id.clone(),
                            StepRecord {
                                status: StepStatus::Running,
                                fingerprint,
                                outputs: recorded.clone(),
                                attempts: 0,
                                run_id: run_id.to_string(),
                                duration_ms: 0,
                                error: None,
                            },
                        );
                    })
                    .await?;
                    running.spawn(attempts(
                        Arc::clone(&steps[&id]),
                        action,
                        self.options.clone(),
                        self.events.clone(),
                        self.cancel.clone(),
                        epoch,
                        recorded,
                        notes.clone(),
                    ));
                }
            }
            if running.is_empty() {
                break;
            }

            let joined = tokio::select! {
                joined = running.join_next() => joined,
                Some(note) = noted.recv() => {
                    let Note { step, key, value, written } = note;
                    let result = self
                        .write(journal, |s| {
                            if let Some(r) = s.steps.get_mut(&step) {
                                if !r.outputs.is_object() {
                                    r.outputs = serde_json::json!({});
                                }
                                r.outputs[key] = value;
                            }
                        })
                        .await
                        .map_err(|e| e.to_string());
                    // A step that stopped waiting no longer needs the answer.
                    let _ = written.send(result);
                    continue;
                }
                () = tokio::time::sleep_until(deadline), if !self.cancel.is_cancelled() => {
                    self.cancel.cancel(format!("overall timeout of {}s reached", self.options.overall_timeout.as_secs()));
                    continue;
                }
                () = self.cancel.cancelled(), if grace_deadline.is_none() => {
                    grace_deadline = Some(Instant::now() + self.options.cancel_grace);
                    continue;
                }
                () = sleep_until_opt(grace_deadline) => {
                    // Steps that ignored cancellation past the grace period are stopped hard.
                    running.abort_all();
                    while running.join_next().await.is_some() {}
                    for (id, st) in state.iter_mut().filter(|(_, st)| **st == State::Running) {
                        *st = State::Cancelled;
                        let err = StepError::cancelled();
                        self.record_failure(journal, id, run_id, &err, 0, 0, StepStatus::Cancelled).await?;
                        self.events.emit(&Event::StepFailed { step: id.clone(), error: err, attempts: 0, at_ms: millis(epoch.elapsed()) });
                    }
                    break;
                }
            };
            let Some(joined) = joined else { break };
            let finished = match joined {
                Ok(f) => f,
                Err(e) => {
                    // A panicking step is a bug; it must not take the run down silently.
                    return Err(crate::Error::Graph(format!(
                        "a step task stopped unexpectedly: {e}"
                    )));
                }
            };
            let id = finished.id.clone();
            let timing = timings.get_mut(&id).expect("every step has a timing");
            timing.start_ms = Some(millis(finished.start));
            timing.end_ms = Some(millis(finished.end));
            timing.duration_ms = millis(finished.end.saturating_sub(finished.start));
            timing.attempts = finished.attempts;
            match finished.result {
                Ok(outputs) => {
                    state.insert(id.clone(), State::Done);
                    timing.status = "done".into();
                    timing.noting(&outputs);
                    let duration_ms = timing.duration_ms;
                    self.write(journal, |s| match action {
                        Action::Create => {
                            if let Some(r) = s.steps.get_mut(&id) {
                                r.status = StepStatus::Done;
                                r.outputs = outputs;
                                r.attempts = finished.attempts;
                                r.duration_ms = duration_ms;
                                r.error = None;
                            }
                        }
                        Action::Destroy => {
                            s.steps.remove(&id);
                        }
                    })
                    .await?;
                    self.events.emit(&Event::StepFinished {
                        step: id,
                        duration_ms,
                        attempts: finished.attempts,
                        at_ms: millis(finished.end),
                    });
                }
                Err(error) => {
                    let (st, status) = match error.kind {
                        ErrorKind::Cancelled => (State::Cancelled, StepStatus::Cancelled),
                        _ => (State::Failed, StepStatus::Failed),
                    };
                    state.insert(id.clone(), st);
                    timing.status = if st == State::Cancelled {
                        "cancelled".into()
                    } else {
                        "failed".into()
                    };
                    timing.error = Some(error.message.clone());
                    self.record_failure(
                        journal,
                        &id,
                        run_id,
                        &error,
                        finished.attempts,
                        timing.duration_ms,
                        status,
                    )
                    .await?;
                    self.events.emit(&Event::StepFailed {
                        step: id.clone(),
                        error: error.clone(),
                        attempts: finished.attempts,
                        at_ms: millis(finished.end),
                    });
                    if st == State::Failed && first_error.is_none() {
                        first_error = Some(crate::Error::StepFailed { step: id, error });
                    }
                }
            }
        }

        let blocked_reason = |id: &str, state: &BTreeMap<String, State>| -> String {
            let bad: Vec<&String> = waits_for[id]
                .iter()
                .filter(|d| matches!(state[*d], State::Failed | State::Blocked | State::Cancelled))
                .collect();
            if let Some(reason) = self.cancel.reason() {
                format!("not started: run cancelled ({reason})")
            } else if bad.is_empty() {
                "not started".into()
            } else {
                format!(
                    "not started: `{}` did not finish",
                    bad.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("`, `")
                )
            }
        };
        for id in &order {
            if state[id] == State::Pending {
                let reason = blocked_reason(id, &state);
                state.insert(id.clone(), State::Blocked);
                self.set_status(&mut timings, id, "blocked");
                self.events.emit(&Event::StepBlocked {
                    step: id.clone(),
                    reason,
                    at_ms: millis(epoch.elapsed()),
                });
            }
        }

        let status = if first_error.is_some() {
            "failed"
        } else if self.cancel.is_cancelled() {
            "cancelled"
        } else {
            "succeeded"
        };
        if first_error.is_none()
            && let Some(reason) = self.cancel.reason()
        {
            first_error = Some(crate::Error::Cancelled { reason });
        }
        let report = Report::build(
            run_id,
            action.name(),
            &journal.state().cluster,
            status,
            order.iter().map(|id| timings[id].clone()).collect(),
        );
        self.events.emit(&Event::RunFinished {
            status: status.into(),
            makespan_ms: report.makespan_ms,
            at_ms: millis(epoch.elapsed()),
        });
        Ok(RunOutcome {
            report,
            error: first_error,
        })
    }

    fn set_status(&self, timings: &mut BTreeMap<String, StepTiming>, id: &str, status: &str) {
        if let Some(t) = timings.get_mut(id) {
            t.status = status.into();
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Executor {
    async fn record_failure(
        &self,
        journal: &mut Journal,
        id: &str,
        run_id: &str,
        error: &StepError,
        attempts: u32,
        duration_ms: u64,
        status: StepStatus,
    ) -> Result<(), crate::Error> {
        self.write(journal, |s| {
            let record = s.steps.entry(id.to_string()).or_insert_with(|| StepRecord {
                status,
                fingerprint: String::new(),
                outputs: serde_json::Value::Null,
                attempts,
                run_id: run_id.to_string(),
                duration_ms,
                error: None,
            });
            record.status = status;
            record.attempts = attempts;
            record.duration_ms = duration_ms;
            record.error = Some(error.clone());
        })
        .await
    }
}

/// One step, attempt after attempt, inside its time budget.
async fn attempts(
    step: Arc<dyn Step>,
    action: Action,
    options: ExecOptions,
    events: Events,
    cancel: Cancel,
    epoch: Instant,
    recorded: serde_json::Value,
    notes: tokio::sync::mpsc::UnboundedSender<Note>,
) -> Finished {
    let id = step.id().to_string();
    let start = epoch.elapsed();
    let budget = step.timeout().unwrap_or(options.step_timeout);
    let mut attempt = 0u32;
    let work = async {
        loop {
            attempt += 1;
            events.emit(&Event::StepStarted {
                step: id.clone(),
                attempt,
                at_ms: millis(epoch.elapsed()),
            });
            let ctx = StepCtx {
                step: id.clone(),
                attempt,
                events: events.clone(),
                epoch,
                cancel: cancel.clone(),
                recorded: recorded.clone(),
                notes: Some(notes.clone()),
            };
            let result = match action {
                Action::Create => step.apply(&ctx).await,
                Action::Destroy => step.destroy(&ctx).await.map(|()| serde_json::Value::Null),
            };
            match result {
                Err(e)
                    if e.is_retryable()
                        && attempt < options.retry.max_attempts
                        && !cancel.is_cancelled() =>
                {
                    let delay = options.retry.delay(attempt, e.retry_after);
                    events.emit(&Event::StepRetried {
                        step: id.clone(),
                        attempt,
                        error: e.message.clone(),
                        delay_ms: millis(delay),
                        at_ms: millis(epoch.elapsed()),
                    });
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return Err(StepError::cancelled()),
                    }
                }
                Err(e) if e.is_retryable() && attempt >= options.retry.max_attempts => {
                    return Err(e.context(format!("gave up after {attempt} attempts")));
                }
                Err(e) if e.is_transient() && e.unsafe_to_retry => {
                    return Err(e.context(
                        "not retried: the failed call may have taken effect and repeating it is not safe",
                    ));
                }
                other => return other,
            }
        }
    };
    let result = match tokio::time::timeout(budget, work).await {
        Ok(r) => r,
        Err(_) => Err(StepError::timeout(format!(
            "`{id}` did not finish within {}s; raise its timeout or look at what it was waiting for in the events log",
            budget.as_secs()
        ))),
    };
    Finished {
        id,
        result,
        attempts: attempt,
        start,
        end: epoch.elapsed(),
    }
}
