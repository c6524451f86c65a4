//! `castle.proxmox`: look at a Proxmox VE cluster with an API token.

use std::path::PathBuf;

use pyo3::prelude::*;
use secrecy::SecretString;

use crate::errors::provider;
use crate::runtime::wait;

/// Lists the VMs of a Proxmox VE cluster, as dicts. The endpoint must be https; its
/// certificate is checked against the system roots, or against `ca_file` (a PEM) when
/// given; `insecure` skips the check.
#[pyfunction]
#[pyo3(name = "proxmox_list_vms", signature = (endpoint, token_id, token, ca_file = None, insecure = false))]
fn list_vms<'py>(
    py: Python<'py>,
    endpoint: String,
    token_id: String,
    token: String,
    ca_file: Option<PathBuf>,
    insecure: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mut settings =
        castle_proxmox::ProxmoxSettings::new(endpoint, token_id, SecretString::from(token))
            .with_insecure(insecure);
    if let Some(ca_file) = ca_file {
        settings = settings.with_ca_file(ca_file);
    }
    let client = castle_proxmox::ProxmoxClient::new(&settings).map_err(provider)?;
    let vms = wait(py, async move {
        castle_proxmox::ProxmoxApi::list_vms(&client).await
    })?
    .map_err(provider)?;
    crate::convert::to_py(py, &vms)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(list_vms, m)?)?;
    Ok(())
}
