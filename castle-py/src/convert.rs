//! Castle's data becomes plain Python data (dicts, lists, str, int, bool, None) by
//! way of its JSON form, which is also what `--json` prints and the run files hold.

use pyo3::prelude::*;

use crate::errors::CastleError;

/// Any serializable value as plain Python data.
pub(crate) fn to_py<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| CastleError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}
