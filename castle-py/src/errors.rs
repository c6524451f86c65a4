//! The exception tree: every error Castle raises is a `CastleError`, and the subclass
//! says what kind of trouble it is. Messages are the CLI's, word for word.

use castle_core::{Error, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

create_exception!(
    castle,
    CastleError,
    PyException,
    "Every error Castle raises. After a failed create or destroy, `report` holds the run's Report."
);
create_exception!(
    castle,
    ConfigError,
    CastleError,
    "castle.toml is malformed: each line of the message, and each entry of `issues`, names file:line:column and key."
);
create_exception!(
    castle,
    SecretError,
    CastleError,
    "A secret reference could not be resolved."
);
create_exception!(
    castle,
    ProviderError,
    CastleError,
    "A system Castle drives (Proxmox, Talos, Vault, Tailscale, Kubernetes) failed."
);
create_exception!(
    castle,
    TimeoutError,
    CastleError,
    "A step or wait ran out of time."
);
create_exception!(
    castle,
    Cancelled,
    CastleError,
    "The run was cancelled (Ctrl-C); finish it with create(resume=True)."
);

/// The step that does nothing but resolve secret references: its failures are
/// secret failures, whatever their classification.
const SECRETS_STEP: &str = "secrets";

/// The Python exception for an engine error, with the same message the CLI prints.
pub(crate) fn to_py(py: Python<'_>, e: &Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Config(config) => config_error(py, config),
        Error::Secret(_) => SecretError::new_err(msg),
        Error::Cancelled { .. } => Cancelled::new_err(msg),
        Error::StepFailed { error, .. } if error.kind == ErrorKind::Cancelled => {
            Cancelled::new_err(msg)
        }
        Error::StepFailed { error, .. } if error.kind == ErrorKind::Timeout => {
            TimeoutError::new_err(msg)
        }
        Error::StepFailed { step, .. } if step == SECRETS_STEP => SecretError::new_err(msg),
        Error::StepFailed { .. } => ProviderError::new_err(msg),
        _ => CastleError::new_err(msg),
    }
}

/// A `ConfigError` whose `issues` lists each located problem as a dict.
pub(crate) fn config_error(py: Python<'_>, e: &castle_core::config::ConfigError) -> PyErr {
    let err = ConfigError::new_err(e.to_string());
    let issues = e
        .issues
        .iter()
        .map(|i| issue_dict(py, i))
        .collect::<PyResult<Vec<_>>>()
        .and_then(|issues| PyList::new(py, issues))
        .and_then(|issues| err.value(py).setattr("issues", issues));
    match issues {
        Ok(()) => err,
        Err(other) => other,
    }
}

/// One located castle.toml issue: `file`, `line`, `column`, `key`, `message`.
pub(crate) fn issue_dict<'py>(
    py: Python<'py>,
    i: &castle_core::config::Issue,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("file", &i.file)?;
    d.set_item("line", i.line)?;
    d.set_item("column", i.column)?;
    d.set_item("key", &i.key)?;
    d.set_item("message", &i.message)?;
    Ok(d)
}

/// A service crate's error, raised as a `ProviderError` with its own message.
pub(crate) fn provider(e: impl std::fmt::Display) -> PyErr {
    ProviderError::new_err(e.to_string())
}

/// Adds the tree to the native module, with the class defaults the stubs promise.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<CastleError>();
    base.setattr("report", py.None())?;
    let config = py.get_type::<ConfigError>();
    config.setattr("issues", PyList::empty(py))?;
    m.add("CastleError", base)?;
    m.add("ConfigError", config)?;
    m.add("SecretError", py.get_type::<SecretError>())?;
    m.add("ProviderError", py.get_type::<ProviderError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    Ok(())
}
