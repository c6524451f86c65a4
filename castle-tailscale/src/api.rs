use async_trait::async_trait;

use crate::{AuthKey, Device, KeyInfo, KeyRequest, Result};

/// The Tailscale API v2 calls Castle makes, as one OAuth client sees them.
#[async_trait]
pub trait TailscaleApi: Send + Sync + std::fmt::Debug {
    /// `POST /tailnet/{tailnet}/keys`: mints an auth key.
    ///
    /// # Errors
    /// An invalid request (nothing sent), or the API's error.
    ///
    /// # Caveats
    /// Not idempotent: two mints make two live keys. Retry only when
    /// [`crate::Error::is_safe_to_retry`] says so, else revoke what may exist first.
    async fn create_key(&self, request: &KeyRequest) -> Result<AuthKey>;
    /// `GET /tailnet/{tailnet}/devices`: every device of the tailnet (the API has no
    /// pagination); [`crate::ops::devices_of`] narrows it to the cluster's.
    ///
    /// # Errors
    /// The API's error.
    async fn list_devices(&self) -> Result<Vec<Device>>;
    /// `DELETE /device/{nodeId}`.
    ///
    /// # Errors
    /// The API's error; a device that is gone answers 404 ([`crate::Error::is_not_found`]).
    async fn delete_device(&self, node_id: &str) -> Result<()>;
    /// `GET /tailnet/{tailnet}/keys?all=true`: the tailnet's active keys, without
    /// their secrets; how Castle finds a key whose mint answer it never saw.
    ///
    /// # Errors
    /// The API's error.
    async fn list_keys(&self) -> Result<Vec<KeyInfo>>;
    /// `DELETE /tailnet/{tailnet}/keys/{id}`: the key admits no more devices.
    ///
    /// # Errors
    /// The API's error.
    async fn revoke_key(&self, id: &str) -> Result<()>;
}
