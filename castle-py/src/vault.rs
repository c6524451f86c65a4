//! `castle.vault`: plan and apply a declarative Vault spec against an address and a
//! token, as `castle vault plan|apply` does with the cluster's spec.

use std::path::PathBuf;

use pyo3::prelude::*;
use secrecy::SecretString;

use crate::errors::{ConfigError, provider};
use crate::runtime::wait;

/// The spec (the `[vault.spec]` table's content, as TOML) with its secret values,
/// given inline, moved into secret strings at once.
fn spec(spec_toml: &str) -> PyResult<castle_vault::VaultSpec> {
    let spec: castle_vault::VaultSpec<String> =
        toml::from_str(spec_toml).map_err(|e| ConfigError::new_err(format!("vault spec: {e}")))?;
    spec.resolve_secrets(|s| Ok::<_, PyErr>(SecretString::from(s.clone())))
}

fn client(
    address: &str,
    token: String,
    ca_file: Option<PathBuf>,
) -> PyResult<castle_vault::VaultClient> {
    let mut settings = castle_vault::VaultSettings::new(address, SecretString::from(token));
    settings.ca_file = ca_file;
    castle_vault::VaultClient::new(settings).map_err(provider)
}

/// Diffs a Vault spec against a live Vault: `{"changes": [...]}`, in apply order.
#[pyfunction]
#[pyo3(name = "vault_plan", signature = (address, token, spec_toml, ca_file = None))]
fn plan<'py>(
    py: Python<'py>,
    address: &str,
    token: String,
    spec_toml: &str,
    ca_file: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let (client, spec) = (client(address, token, ca_file)?, spec(spec_toml)?);
    let plan =
        wait(py, async move { castle_vault::plan(&client, &spec).await })?.map_err(provider)?;
    crate::convert::to_py(py, &plan)
}

/// Applies a Vault spec and returns the plan it carried out.
#[pyfunction]
#[pyo3(name = "vault_apply", signature = (address, token, spec_toml, ca_file = None))]
fn apply<'py>(
    py: Python<'py>,
    address: &str,
    token: String,
    spec_toml: &str,
    ca_file: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let (client, spec) = (client(address, token, ca_file)?, spec(spec_toml)?);
    let plan = wait(py, async move {
        let plan = castle_vault::plan(&client, &spec).await?;
        castle_vault::apply(&client, &spec, &plan).await?;
        Ok::<_, castle_vault::Error>(plan)
    })?
    .map_err(provider)?;
    crate::convert::to_py(py, &plan)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(apply, m)?)?;
    Ok(())
}
