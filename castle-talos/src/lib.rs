#![doc = include_str!("../README.md")]
//!
//! Talos Linux for Castle: the secrets bundle and its PKI, machine configs with
//! patches and extra documents, talosconfig, the [`TalosApi`] trait, its gRPC client
//! `TalosClient` (feature `client`) and a stateful `MockTalos` (feature `mock`).
//!
//! Everything that holds key material is a [`secrecy::SecretString`] or redacts
//! itself in `Debug`; a rendered machine config (which carries the cluster's keys and
//! the Tailscale auth key) is a `SecretString` too.

#![warn(missing_docs)]

mod api;
mod bundle;
#[cfg(feature = "client")]
mod client;
mod config;
mod error;
#[cfg(feature = "mock")]
mod mock;
mod patch;
mod rules;

pub use api::{ApplyMode, NodeConn, ServiceHealth, TalosApi};
pub use bundle::{CertKey, EncryptionSecret, SecretsBundle};
#[cfg(feature = "client")]
pub use client::{APID_PORT, TalosClient, TalosEndpoint, code_of, pb};
pub use config::{
    LINK_ALIAS, MachineConfig, MachineConfigInput, NodeInput, Role, TailscaleExtension,
    derived_mac, parse_version, talosconfig, write_client_configs, write_private,
};
pub use error::{Code, Error, Result};
#[cfg(feature = "mock")]
pub use mock::{Faults, Latency, MockTalos, OPS};
pub use patch::{Patch, apply_patches};
pub use rules::{
    RuntimeMode, Validation, validate_documents, validate_documents_in, validate_documents_strict,
    validate_documents_with_warnings, validate_stream, validate_stream_in,
};
