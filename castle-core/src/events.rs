//! The one typed event stream of a run: it feeds the CLI progress display, the
//! JSON-lines log, the Python callback and the report.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::StepError;

/// Something that happened during a run. `at_ms` counts from the run's start on the
/// runtime's clock, so runs on a paused clock report exact modelled times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The run begins with these steps, in graph order.
    RunStarted {
        /// The run's id (its directory name).
        run_id: String,
        /// What the run does: `create` or `destroy`.
        action: String,
        /// Every step of the graph.
        steps: Vec<String>,
    },
    /// A step was skipped: finished earlier with the same inputs (`--resume`) or not selected.
    StepSkipped {
        /// The step.
        step: String,
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// An attempt of a step began.
    StepStarted {
        /// The step.
        step: String,
        /// 1 for the first attempt.
        attempt: u32,
        /// When.
        at_ms: u64,
    },
    /// A step said what it is doing.
    StepProgress {
        /// The step.
        step: String,
        /// What it is doing (never a secret).
        message: String,
        /// When.
        at_ms: u64,
    },
    /// An attempt failed with a transient error; another follows after `delay_ms`.
    StepRetried {
        /// The step.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
        /// The wait before the next attempt.
        delay_ms: u64,
        /// When.
        at_ms: u64,
    },
    /// A step finished its work.
    StepFinished {
        /// The step.
        step: String,
        /// How long it took, attempts and waits included.
        duration_ms: u64,
        /// How many attempts it took.
        attempts: u32,
        /// When.
        at_ms: u64,
    },
    /// A step failed for good.
    StepFailed {
        /// The step.
        step: String,
        /// Its error.
        error: StepError,
        /// How many attempts it took.
        attempts: u32,
        /// When.
        at_ms: u64,
    },
    /// A step did not start because a dependency failed or the run was cancelled.
    StepBlocked {
        /// The step.
        step: String,
        /// What stopped it.
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// Something about the cluster's state the user should hear of: a lease taken
    /// over from a run that died, a journal kept locally written back.
    StateNotice {
        /// What happened (never a secret).
        message: String,
    },
    /// The run ended.
    RunFinished {
        /// `succeeded`, `failed` or `cancelled`.
        status: String,
        /// From the first step's start to the last step's end.
        makespan_ms: u64,
        /// When.
        at_ms: u64,
    },
}

impl Event {
    /// The step this event concerns, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepSkipped { step, .. }
            | Event::StepStarted { step, .. }
            | Event::StepProgress { step, .. }
            | Event::StepRetried { step, .. }
            | Event::StepFinished { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepBlocked { step, .. } => Some(step),
            Event::RunStarted { .. } | Event::StateNotice { .. } | Event::RunFinished { .. } => {
                None
            }
        }
    }
}

/// A consumer of events. Called from the executor's task: keep it quick.
pub trait EventSink: Send + Sync {
    /// Receives one event.
    fn emit(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: &Event) {
        self(event)
    }
}

/// Fans one event out to every sink.
#[derive(Clone, Default)]
pub struct Events {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Events {
    /// No sinks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    #[must_use]
    pub fn with(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Adds a sink in place.
    pub fn push(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Sends one event to every sink.
    pub fn emit(&self, event: &Event) {
        for sink in &self.sinks {
            sink.emit(event);
        }
    }
}

/// Writes each event as one JSON line.
#[derive(Debug)]
pub struct JsonLines {
    file: Mutex<std::fs::File>,
}

impl JsonLines {
    /// Creates (or truncates) the log file.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: Mutex::new(std::fs::File::create(path)?),
        })
    }
}

impl EventSink for JsonLines {
    fn emit(&self, event: &Event) {
        // A log line that cannot be written must not fail the run it describes.
        if let (Ok(line), Ok(mut file)) = (serde_json::to_string(event), self.file.lock()) {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Keeps every event in memory (tests, the report, the Python layer).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for Recorder {
    fn emit(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}
