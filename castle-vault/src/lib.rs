#![doc = include_str!("../README.md")]
//!
//! Declarative Vault/OpenBao configuration for Castle.
//!
//! A [`VaultSpec`] (part of castle.toml) says which auth mounts, roles, policies,
//! secrets engines and generate-once KV values must exist. [`plan`] reads the live
//! state through a [`VaultApi`] and diffs it against the spec; [`apply`] carries out
//! exactly that plan. Generate-once values are created with check-and-set and never
//! regenerated unless [`rotate`] is called. Destroy uses [`revoke_leases`] (or
//! [`revoke_prefix`]) to drop the database users Vault created, and [`delete_kv`] to
//! wipe generated material when asked.

#![warn(missing_docs)]

pub mod acl;
mod api;
#[cfg(feature = "client")]
mod client;
pub mod doctor;
mod error;
#[cfg(feature = "mock")]
mod jwt_login;
#[cfg(feature = "mock")]
mod mock;
mod plan;
mod policy;
mod spec;

pub use api::{SealStatus, VaultApi};
#[cfg(feature = "client")]
pub use client::{VaultClient, VaultSettings};
pub use error::{Error, Result};
#[cfg(feature = "mock")]
pub use mock::{Faults, Latency, MockVault};
pub use plan::{
    Change, FieldDiff, Op, Plan, apply, delete_kv, generated_value, live_leases, plan,
    revoke_leases, revoke_prefix, rotate,
};
pub use spec::{
    DatabaseMount, DbRole, Generated, GeneratedKind, JwtAuth, JwtRole, KvMount, PgConnection,
    VaultSpec,
};
