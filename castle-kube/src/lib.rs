#![doc = include_str!("../README.md")]
//!
//! Kubernetes for Castle: server-side apply of manifest bundles in a safe order,
//! waits on the real readiness signals (CRD established and served, rollouts,
//! EndpointSlices, pods that exist and are ready, LoadBalancer IPs, Flux kstatus), and a
//! stateful [`MockCluster`] that refuses what kube-apiserver refuses (its validation,
//! the typed patch of server-side apply, CRD schemas, field ownership, deletion that
//! takes time). [`KubeClient`] (feature `client`) is the kube-rs implementation.
//!
//! Errors classify themselves: a refusal that the same request would get again (a
//! 4xx, a 500 that names a field of the wrong type, a certificate that does not
//! verify) is permanent; an unreachable server, a 503 or a webhook not serving yet is
//! transient.

#![warn(missing_docs)]

mod api;
mod bundle;
#[cfg(feature = "client")]
mod client;
mod conditions;
#[cfg(feature = "mock")]
mod crash_loop;
mod error;
#[cfg(feature = "mock")]
mod fields;
pub mod kstatus;
#[cfg(feature = "mock")]
mod mock;
#[cfg(feature = "mock")]
mod pgo;
mod pull_secret;
#[cfg(feature = "mock")]
mod token_request;
mod types;
#[cfg(feature = "mock")]
mod validation;

pub use api::ClusterApi;
pub use bundle::{Bundle, apply_bundle, apply_object};
#[cfg(feature = "client")]
pub use client::KubeClient;
pub use error::{Error, Result};
#[cfg(feature = "mock")]
pub use mock::{CHART_LAYER, Chart, Faults, Latency, MockCluster};
pub use pull_secret::docker_config_json;
pub use types::{Condition, ObjectRef, Propagation};

/// The field manager of every apply Castle makes.
pub const FIELD_MANAGER: &str = "castle";
