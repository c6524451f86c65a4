//! `castle.Castle` and `castle.Report`: the CLI's cluster commands, as methods.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use castle_core::castle::{Castle as CoreCastle, RunOptions, RunSummary};
use castle_core::engine::Cancel;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::config::Config;
use crate::errors::to_py;
use crate::runtime::{Steering, block_on, wait};
use crate::tailscale::AuthKey;

/// What a create or destroy did: step timings and the critical path.
#[pyclass(module = "castle._castle", frozen)]
pub(crate) struct Report {
    inner: castle_core::report::Report,
    run_dir: PathBuf,
}

#[pymethods]
impl Report {
    /// The run's id (also its directory's name).
    #[getter]
    fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// `create` or `destroy`.
    #[getter]
    fn action(&self) -> &str {
        &self.inner.action
    }

    /// The cluster's name.
    #[getter]
    fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// `succeeded`, `failed` or `cancelled`.
    #[getter]
    fn status(&self) -> &str {
        &self.inner.status
    }

    /// From the first step's start to the last step's end.
    #[getter]
    fn makespan_ms(&self) -> u64 {
        self.inner.makespan_ms
    }

    /// The chain of steps that decided the makespan, first to last.
    #[getter]
    fn critical_path(&self) -> Vec<String> {
        self.inner.critical_path.clone()
    }

    /// Where the run's files are: events.jsonl, report.json, timeline.txt, timeline.svg.
    #[getter]
    fn run_dir(&self) -> PathBuf {
        self.run_dir.clone()
    }

    /// Every step in graph order: id, deps, status, start_ms, end_ms, duration_ms,
    /// attempts, error, and (when it installed something) notes: a line per
    /// HelmRelease with its chart and version.
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::convert::to_py(py, &self.inner.steps)
    }

    /// The whole report as report.json holds it.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::convert::to_py(py, &self.inner)
    }

    /// The aligned timing table the CLI prints.
    fn table(&self) -> String {
        self.inner.table()
    }

    /// The timeline as an SVG document.
    fn svg(&self) -> String {
        self.inner.svg()
    }

    fn __repr__(&self) -> String {
        format!(
            "Report(action={:?}, status={:?}, makespan_ms={}, critical_path={:?})",
            self.inner.action, self.inner.status, self.inner.makespan_ms, self.inner.critical_path
        )
    }
}

/// One cluster: plan, create, destroy and status, as the CLI offers them. A config
/// with a `[lab]` section runs against the simulators.
#[pyclass(module = "castle._castle", frozen)]
pub(crate) struct Castle {
    inner: Arc<CoreCastle>,
}

#[pymethods]
impl Castle {
    #[new]
    fn new(py: Python<'_>, config: &Config) -> PyResult<Self> {
        let inner = CoreCastle::from_config(config.inner.clone()).map_err(|e| to_py(py, &e))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// One line about the cluster.
    fn summary(&self) -> String {
        self.inner.summary()
    }

    /// The step ids in graph order.
    fn steps(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.inner.step_ids().map_err(|e| to_py(py, &e))
    }

    /// Read-only checks of every system the config names: a dict with `ok` and
    /// `findings` (each `system`, `check`, `status` pass|warn|fail, `detail`, `fix`).
    fn doctor<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = Arc::clone(&self.inner);
        let findings = wait(py, async move { c.doctor().await })?;
        let value = serde_json::json!({
            "ok": !castle_probe::any_failed(&findings),
            "findings": findings,
        });
        crate::convert::to_py(py, &value)
    }

    /// What `create(resume=True)` would run, step by step, why, and what each
    /// system would get (asked read-only).
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = Arc::clone(&self.inner);
        let plan = wait(py, async move { c.plan().await })?.map_err(|e| to_py(py, &e))?;
        crate::convert::to_py(py, &plan)
    }

    /// Builds the cluster and returns its Report. `on_event` receives each event as a
    /// dict, on this thread. `only` runs just those steps. The GIL is released while
    /// Castle works; Ctrl-C cancels at the next safe point and raises `Cancelled`.
    #[pyo3(signature = (resume = false, on_event = None, only = None))]
    fn create(
        &self,
        py: Python<'_>,
        resume: bool,
        on_event: Option<&Bound<'_, PyAny>>,
        only: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Report> {
        let only = only.map(step_selection).transpose()?;
        let c = Arc::clone(&self.inner);
        run(py, on_event, move |mut options| async move {
            options.resume = resume;
            options.only = only;
            c.create(options).await
        })
    }

    /// Razes the cluster; `wipe` also deletes what is kept for rebirths.
    #[pyo3(signature = (wipe = false, on_event = None))]
    fn destroy(
        &self,
        py: Python<'_>,
        wipe: bool,
        on_event: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Report> {
        let c = Arc::clone(&self.inner);
        run(py, on_event, move |options| async move {
            c.destroy(options, wipe).await
        })
    }

    /// The journal and, in the lab, what still exists; `nothing_left` sums it up.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = Arc::clone(&self.inner);
        let status = wait(py, async move { c.status().await })?.map_err(|e| to_py(py, &e))?;
        let mut value = serde_json::to_value(&status)
            .map_err(|e| crate::errors::CastleError::new_err(e.to_string()))?;
        value["nothing_left"] = serde_json::Value::Bool(status.nothing_left());
        crate::convert::to_py(py, &value)
    }

    /// The newest run's Report, if there was a run.
    fn last_report(&self, py: Python<'_>) -> PyResult<Option<Report>> {
        let last = self.inner.last_report().map_err(|e| to_py(py, &e))?;
        Ok(last.map(|(run_dir, inner)| Report { inner, run_dir }))
    }

    /// What applying the `[vault]` spec would change (shows hand-made drift).
    fn vault_plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = Arc::clone(&self.inner);
        let plan = wait(py, async move { c.vault_plan().await })?.map_err(|e| to_py(py, &e))?;
        crate::convert::to_py(py, &plan)
    }

    /// Applies the `[vault]` spec and returns the plan it carried out.
    fn vault_apply<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = Arc::clone(&self.inner);
        let plan = wait(py, async move { c.vault_apply().await })?.map_err(|e| to_py(py, &e))?;
        crate::convert::to_py(py, &plan)
    }

    /// Mints one auth key with the cluster's `[tailscale]` policy.
    fn mint_key(&self, py: Python<'_>) -> PyResult<AuthKey> {
        let c = Arc::clone(&self.inner);
        let key = wait(py, async move { c.mint_key().await })?.map_err(|e| to_py(py, &e))?;
        Ok(AuthKey::new(key, None, None))
    }

    fn __repr__(&self) -> String {
        format!("Castle({:?})", self.inner.summary())
    }
}

/// The steps of `only=`: any iterable of step ids except a bare string, which would
/// otherwise select its letters.
fn step_selection(only: &Bound<'_, PyAny>) -> PyResult<BTreeSet<String>> {
    if only.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "only= takes a list of step ids, not one string",
        ));
    }
    only.try_iter()?.map(|id| id?.extract::<String>()).collect()
}

/// Runs a create or destroy with events and cancellation wired to Python, and turns
/// its outcome into a Report or an exception carrying the Report.
fn run<F>(
    py: Python<'_>,
    on_event: Option<&Bound<'_, PyAny>>,
    start: impl FnOnce(RunOptions) -> F,
) -> PyResult<Report>
where
    F: Future<Output = castle_core::Result<RunSummary>> + Send + 'static,
{
    let cancel = Cancel::new();
    let steering = Steering {
        cancel: Some(&cancel),
        on_event,
    };
    let summary = block_on(py, steering, |events| {
        start(RunOptions {
            events,
            cancel: cancel.clone(),
            ..RunOptions::default()
        })
    })?
    .map_err(|e| to_py(py, &e))?;
    let report = Report {
        inner: summary.report,
        run_dir: summary.run_dir,
    };
    match summary.error {
        None => Ok(report),
        Some(e) => {
            let err = to_py(py, &e);
            err.value(py).setattr("report", Py::new(py, report)?)?;
            Err(err)
        }
    }
}
