use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{Condition, FIELD_MANAGER, ObjectRef, Propagation, Result};

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
    async fn apply(&self, object: &Value, force: bool) -> Result<Value> {
        self.apply_as(FIELD_MANAGER, object, force).await
    }
    /// Server-side apply as `manager`. Each bundle Castle applies has its own manager,
    /// so that one apply never removes what another set (a field a manager stops
    /// applying is removed, unless another manager still owns it).
    async fn apply_as(&self, manager: &str, object: &Value, force: bool) -> Result<Value>;
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
    /// [`wait`](Self::wait), calling `report` with what is still missing each time that
    /// changes (a Flux object's failure message the moment it appears).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    async fn wait_reporting(
        &self,
        condition: &Condition,
        timeout: Duration,
        report: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> Result<String> {
        let _ = report;
        self.wait(condition, timeout).await
    }
    /// A plain HTTP GET of `url`: its status code.
    async fn probe_http(&self, url: &str, timeout: Duration) -> Result<u16>;
}
