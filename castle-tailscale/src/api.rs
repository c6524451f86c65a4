use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{AuthKey, Device, Grant, KeyInfo, KeyRequest, OauthClientInfo, Result};

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

    /// `POST /api/v2/oauth/token` asking for exactly `scopes` (none: every scope
    /// the client holds), as a probe: the token is dropped at once and the cached
    /// one is left alone. An exchange changes nothing on the server.
    ///
    /// # Errors
    /// 401 `API token invalid` for credentials the server does not know; 403
    /// `OAuth client cannot grant scopes "..."` when the client lacks a scope.
    async fn grant(&self, scopes: &[String]) -> Result<Grant>;

    /// `GET /tailnet/{tailnet}/acl` (as JSON): the policy file's `tagOwners`, tag
    /// to owners. Needs the scope `policy_file:read`.
    ///
    /// # Errors
    /// The API's error (403 without the scope).
    async fn tag_owners(&self) -> Result<BTreeMap<String, Vec<String>>>;

    /// `GET /tailnet/{tailnet}/keys/{clientId}`: the OAuth client's own scopes and
    /// tags (an OAuth client's id is its key id). Needs the scope `oauth_keys:read`.
    ///
    /// # Errors
    /// The API's error (403 without the scope).
    async fn oauth_client(&self) -> Result<OauthClientInfo>;
}
