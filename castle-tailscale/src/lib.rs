#![doc = include_str!("../README.md")]
//!
//! Tailscale for Castle: OAuth client credentials, RAM-only auth keys, devices.
//!
//! [`TailscaleApi`] is the narrow trait the core drives; [`TailscaleClient`] speaks
//! the real API v2 (feature `client`), [`MockTailscale`] is a strict, stateful control
//! plane (feature `mock`), and [`ops`] holds the tailnet-key step's operations and
//! the read-only checks of `castle doctor` ([`ops::preflight`]: credentials,
//! scopes, tags).
//!
//! ```no_run
//! # async fn rebirth() -> castle_tailscale::Result<()> {
//! use castle_tailscale::ops::{mint_rebirth_key, remove_stale_devices};
//! use castle_tailscale::{KeyRequest, TailscaleClient, TailscaleSettings};
//! use secrecy::SecretString;
//!
//! let settings = TailscaleSettings::new(
//!     SecretString::from("client-id"),
//!     SecretString::from("client-secret"),
//! );
//! let api = TailscaleClient::new(settings)?;
//! let (hostnames, tags) = (vec!["lab-cp-1".to_string()], vec!["tag:lab-k8s".to_string()]);
//! remove_stale_devices(&api, &hostnames, &tags).await?;
//! let key = mint_rebirth_key(&api, &KeyRequest {
//!     reusable: true,
//!     ephemeral: true,
//!     preauthorized: true,
//!     tags,
//!     expiry_seconds: 3600,
//!     description: "castle rebirth of lab".into(),
//! })
//! .await?;
//! # drop(key);
//! # Ok(())
//! # }
//! ```
//!
//! Keys, client secrets and access tokens are [`secrecy::SecretString`] from the
//! moment they exist and never appear in `Debug`, errors, logs or mock snapshots.

#![warn(missing_docs)]

mod api;
#[cfg(feature = "client")]
mod client;
mod error;
#[cfg(feature = "mock")]
mod mock;
pub mod ops;
mod types;

pub use api::TailscaleApi;
#[cfg(feature = "client")]
pub use client::{TailscaleClient, TailscaleSettings};
pub use error::{Error, Op, Result};
#[cfg(feature = "mock")]
pub use mock::{Faults, Latency, MockTailscale, OPS};
pub use types::{
    AuthKey, Device, Grant, KeyInfo, KeyRequest, MAX_DESCRIPTION, MAX_EXPIRY_SECONDS,
    OauthClientInfo, check_tag,
};
