use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{Condition, ObjectRef, Propagation, Result};

/// The Kubernetes calls Castle makes. Objects are plain JSON (`apiVersion`, `kind`,
/// `metadata`, ...), so one trait serves every kind, CRDs included.
///
/// # Errors
/// Every call may fail with [`crate::Error::Unreachable`] (transient) while the API
/// server does not answer: in the lab it exists only after the Talos bootstrap.
#[async_trait]
pub trait ClusterApi: Send + Sync + std::fmt::Debug {
    /// Server-side apply with field manager `castle`. A field another manager owns is
    /// a 409 conflict unless `force`, which takes the field over.
    async fn apply(&self, object: &Value, force: bool) -> Result<Value>;
    /// Reads an object; `None` when it does not exist.
    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>>;
    /// Deletes an object; a missing object is success.
    async fn delete(&self, object: &ObjectRef, propagation: Propagation) -> Result<()>;
    /// Lists objects of a kind in a namespace (or cluster-wide).
    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>>;
    /// Waits, by watching, until `condition` holds; returns a detail (the IP of a
    /// LoadBalancer, how many objects are ready).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] names what was still missing;
    /// [`crate::Error::Failed`] comes at once when the condition can never hold
    /// (a Stalled or suspended Flux object).
    async fn wait(&self, condition: &Condition, timeout: Duration) -> Result<String>;
    /// A plain HTTP GET of `url`: its status code.
    async fn probe_http(&self, url: &str, timeout: Duration) -> Result<u16>;
}
