//! Proxmox VE for Castle: the [`ProxmoxApi`] trait, an HTTP client with API-token
//! auth, a stateful [`MockProxmox`], and the idempotent operations the platform
//! step needs ([`ops`]).

mod api;
#[cfg(feature = "client")]
mod client;
mod error;
#[cfg(feature = "mock")]
mod mock;
pub mod ops;
mod types;

pub use api::{ProxmoxApi, wait_task};
#[cfg(feature = "client")]
pub use client::{ProxmoxClient, ProxmoxSettings};
pub use error::{Error, Result};
#[cfg(feature = "mock")]
pub use mock::{Faults, Latency, MockProxmox};
pub use types::{CloneRequest, Upid, VmConfig, VmStatus, VmSummary};
