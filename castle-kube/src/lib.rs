//! Kubernetes for Castle: server-side apply of manifest bundles in a safe order,
//! waits on the real readiness signals (CRD established, rollouts, EndpointSlices,
//! pods that exist and are ready, LoadBalancer IPs, Flux kstatus), and a stateful
//! [`MockCluster`] that is as strict as a real API server where Castle could go wrong.

mod api;
mod bundle;
mod error;
pub mod kstatus;
#[cfg(feature = "mock")]
mod mock;

pub use api::{ClusterApi, Condition, ObjectRef};
pub use bundle::{Bundle, apply_bundle};
pub use error::{Error, Result};
#[cfg(feature = "mock")]
pub use mock::{Faults, Latency, MockCluster};
