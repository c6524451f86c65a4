//! One run of a graph against a cluster directory: the cluster's lock and journal
//! (in whichever [`StateBackend`] keeps them), the run directory
//! `<cluster dir>/.castle/runs/<run id>/` with its JSON-lines events,
//! `report.json`, `timeline.txt` and `timeline.svg`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{Action, Cancel, Checkpoint, ExecOptions, Executor, Graph, RunOutcome};
use crate::error::{Error, Result};
use crate::events::{Event, Events, JsonLines, Recorder};
use crate::journal::Journal;
use crate::report::Report;
use crate::state::StateBackend;

/// Where a cluster's runs live.
pub fn runs_dir(cluster_dir: &Path) -> PathBuf {
    Journal::state_dir(cluster_dir).join("runs")
}

/// A new run id: the UTC time, sortable, unique per second and process.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = now
        .format(&format)
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    format!("{stamp}-{}", std::process::id())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `graph` for `action` on the cluster in `cluster_dir`, its journal and lock
/// in `state`, logging events to the run directory as well as to `events`, and
/// writes the report files. The lock is released at the end, whatever happened.
///
/// # Errors
/// The lock is held by another run, the journal is unreadable or cannot be
/// written (the run then stops at that write), the run directory cannot be
/// written, or the graph selection is invalid. Step failures are in
/// [`RunOutcome::error`].
pub async fn execute(
    graph: Graph,
    cluster_dir: &Path,
    cluster: &str,
    state: Arc<dyn StateBackend>,
    action: Action,
    options: ExecOptions,
    events: Events,
    cancel: Cancel,
    checkpoint: Option<Checkpoint>,
) -> Result<(RunOutcome, PathBuf)> {
    let command = match action {
        Action::Create => "create",
        Action::Destroy => "destroy",
    };
    let mut journal = Journal::open_in(state, cluster, command).await?;
    let result = async {
        let run_id = new_run_id();
        let dir = runs_dir(cluster_dir).join(&run_id);
        std::fs::create_dir_all(&dir).map_err(io("creating the run directory", &dir))?;
        let log = dir.join("events.jsonl");
        // The report splits each step's time at its progress messages.
        let recorder = Recorder::new();
        let events = events
            .with(Arc::new(
                JsonLines::create(&log).map_err(io("creating", &log))?,
            ))
            .with(Arc::new(recorder.clone()));
        for message in journal.notices() {
            events.emit(&Event::StateNotice {
                message: message.clone(),
            });
        }
        let time_scale = options.time_scale;
        let mut executor = Executor::new(graph, options, events, cancel);
        if let Some(checkpoint) = checkpoint {
            executor = executor.with_checkpoint(checkpoint);
        }
        let mut outcome = executor.run(action, &mut journal, &run_id).await?;
        outcome.report.time_scale = time_scale;
        outcome.report.add_phases(&recorder.events());
        write_report(&dir, &outcome.report)?;
        Ok((outcome, dir))
    }
    .await;
    journal.close().await;
    result
}

/// Writes `report.json`, `timeline.txt` and `timeline.svg` into a run directory.
///
/// # Errors
/// When a file cannot be written.
pub fn write_report(dir: &Path, report: &Report) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| Error::Graph(format!("report: {e}")))?;
    for (name, bytes) in [
        ("report.json", json),
        ("timeline.txt", report.table().into_bytes()),
        ("timeline.svg", report.svg().into_bytes()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io("writing", &path))?;
    }
    Ok(())
}

/// The newest run directory of a cluster, if any.
pub fn latest_run(cluster_dir: &Path) -> Option<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(runs_dir(cluster_dir))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    runs.sort();
    runs.pop()
}

/// Reads the report of a run directory.
///
/// # Errors
/// When `report.json` is missing or malformed.
pub fn read_report(dir: &Path) -> Result<Report> {
    let path = dir.join("report.json");
    let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Graph(format!("{}: {e}", path.display())))
}
