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
