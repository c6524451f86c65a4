//! Tailscale for Castle: OAuth client credentials, RAM-only auth keys, devices.
//!
//! Keys, client secrets and access tokens are [`secrecy::SecretString`] from the
//! moment they exist and never appear in `Debug`, errors or logs.

mod api;
#[cfg(feature = "client")]
mod client;
mod error;
#[cfg(feature = "mock")]
mod mock;
pub mod ops;

pub use api::{AuthKey, Device, KeyRequest, TailscaleApi};
#[cfg(feature = "client")]
pub use client::{TailscaleClient, TailscaleSettings};
pub use error::{Error, Result};
#[cfg(feature = "mock")]
pub use mock::{Faults, Latency, MockTailscale};
