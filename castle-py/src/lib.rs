//! `castle._castle`: the native half of the `castle` Python package. It only
//! connects: every call goes to castle-core (or a service crate) on one static tokio
//! runtime, through `runtime::block_on`, which releases the GIL and turns Ctrl-C
//! into the run's cancellation. The Python package (`python/castle`) arranges these
//! names into `castle`, `castle.talos`, `castle.vault`, `castle.tailscale` and
//! `castle.proxmox`.

#![warn(missing_docs)]

mod cluster;
mod config;
mod convert;
mod errors;
mod proxmox;
mod runtime;
mod tailscale;
mod talos;
mod vault;

use pyo3::prelude::*;

#[pymodule]
fn _castle(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<config::Config>()?;
    m.add_class::<cluster::Castle>()?;
    m.add_class::<cluster::Report>()?;
    talos::register(m)?;
    vault::register(m)?;
    tailscale::register(m)?;
    proxmox::register(m)?;
    Ok(())
}
