//! `castle.Config`: a castle.toml, parsed and validated as `castle create` does
//! (every secret ref must resolve on this machine).

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::errors::config_error;

/// A cluster's castle.toml, loaded and validated. It holds secret references, never
/// secret values.
#[pyclass(module = "castle._castle", frozen)]
pub(crate) struct Config {
    pub(crate) inner: castle_core::config::Config,
    origin: String,
}

#[pymethods]
impl Config {
    /// Reads and validates castle.toml; its relative paths (and the journal) are
    /// relative to its directory.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = castle_core::config::Config::load(&path).map_err(|e| config_error(py, &e))?;
        Ok(Self {
            inner,
            origin: path.display().to_string(),
        })
    }

    /// What `castle validate` checks: the file, not the machine. Raises
    /// `ConfigError` with every defect; returns the secret refs whose file or
    /// variable is absent here (located issues, as `ConfigError.issues` lists
    /// them), which `Config.load` and a run require.
    #[staticmethod]
    fn validate(py: Python<'_>, path: PathBuf) -> PyResult<Vec<Bound<'_, pyo3::types::PyDict>>> {
        let (_, absent) = castle_core::config::Config::load_allowing_absent_secrets(&path)
            .map_err(|e| config_error(py, &e))?;
        absent
            .iter()
            .map(|i| crate::errors::issue_dict(py, i))
            .collect()
    }

    /// Parses castle.toml text; `base_dir` (default: the current directory) anchors
    /// its relative paths and the journal. Errors name the file `castle.toml`.
    #[staticmethod]
    #[pyo3(signature = (text, base_dir = None))]
    fn from_toml(py: Python<'_>, text: &str, base_dir: Option<PathBuf>) -> PyResult<Self> {
        let origin = "castle.toml".to_string();
        let base_dir = base_dir.unwrap_or_else(|| PathBuf::from("."));
        let inner = castle_core::config::Config::from_str(text, &origin, &base_dir)
            .map_err(|e| config_error(py, &e))?;
        Ok(Self { inner, origin })
    }

    /// The cluster's name.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.cluster.name
    }

    /// Whether it runs against the built-in lab's simulators (a `[lab]` section).
    #[getter]
    fn lab(&self) -> bool {
        self.inner.lab.is_some()
    }

    /// The cluster directory: relative paths and the journal live under it.
    #[getter]
    fn base_dir(&self) -> PathBuf {
        self.inner.base_dir().to_path_buf()
    }

    /// The node names, in file order.
    #[getter]
    fn nodes(&self) -> Vec<String> {
        self.inner.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "Config(name={:?}, origin={:?}, nodes={}, lab={})",
            self.inner.cluster.name,
            self.origin,
            self.inner.nodes.len(),
            if self.lab() { "True" } else { "False" }
        )
    }
}
