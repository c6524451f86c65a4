#![doc = include_str!("../README.md")]
//!
//! Proxmox VE for Castle: the [`ProxmoxApi`] trait, an HTTP client with API-token
//! auth ([`ProxmoxClient`], feature `client`), a stateful, strict [`MockProxmox`]
//! (feature `mock`), and the idempotent operations the platform step calls
//! ([`ops`]: adopt-or-create a VM, destroy only what the [`ops::Fence`] says is ours),
//! and the read-only checks of `castle doctor` ([`ops::preflight`]: the token's
//! privileges per path, the template, the VMIDs, the storage, which CA to pin).
//!
//! ```no_run
//! # async fn platform() -> castle_proxmox::Result<()> {
//! use std::time::Duration;
//! use castle_proxmox::ops::{CloneLimiter, Fence, VmSpec, destroy_vm, ensure_vm};
//! use castle_proxmox::{ProxmoxClient, ProxmoxSettings};
//!
//! let token = secrecy::SecretString::from("uuid-from-a-secret-file");
//! let settings = ProxmoxSettings::new("https://pve.lan:8006", "castle@pve!rebirth", token)
//!     .with_ca_file("pve-ca.pem");
//! let api = ProxmoxClient::new(&settings)?;
//! let fence = Fence::new("castle", 400..=499);
//! let clones = CloneLimiter::new(2);
//! let spec = VmSpec {
//!     name: "cp-1".into(), vmid: 421, node: "pve".into(), template: 9000,
//!     cores: 4, memory_mib: 4096, disk_gib: 32, bridge: "vmbr0".into(), vlan: None,
//!     mac: Some("02:1a:2b:3c:4d:5e".into()),
//!     ip_cidr: "192.168.1.21/24".into(), gateway: Some("192.168.1.1".into()),
//!     tags: vec!["k8s".into()], description: "Castle node cp-1".into(),
//!     full_clone: false, storage: None, format: None, pool: None, target: None,
//! };
//! ensure_vm(&api, &spec, &fence, &clones).await?;
//! destroy_vm(&api, "pve", 421, &fence, Duration::from_secs(60)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Caveats
//! - Older Proxmox servers (libpve-http-server-perl before 5.2.0: PVE 7.x and
//!   unpatched 8.0-8.3) put error text only in the HTTP/1 reason phrase; the client
//!   reads it from hyper's `ReasonPhrase` extension, which reqwest keeps. Over HTTP/2
//!   there is no reason phrase; pveproxy speaks HTTP/1.1.
//! - Config changes to a running VM that Proxmox cannot hot-plug stay pending until
//!   the VM reboots; [`ops::ensure_vm`] does not reboot.

#![warn(missing_docs)]
mod api;
#[cfg(feature = "client")]
mod client;
mod error;
pub mod features;
#[cfg(feature = "mock")]
mod mock;
pub mod ops;
#[cfg(feature = "client")]
mod tls;
mod types;

pub use api::{ProxmoxApi, wait_task};
#[cfg(feature = "client")]
pub use client::{ProxmoxClient, ProxmoxSettings};
pub use error::{Error, Result};
#[cfg(feature = "mock")]
pub use mock::{Faults, Latency, MockProxmox, OPS, ServerProfile};
pub use types::{
    CLONE_FORMATS, CloneRequest, NodeInfo, NodeStatus, PeerCert, PowerState, PveVersion,
    StorageStatus, TaskExit, TaskStatus, Upid, VmConfig, VmInfo,
};
