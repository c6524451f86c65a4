use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::Result;

/// What a minted key may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    /// One key for several nodes.
    pub reusable: bool,
    /// Devices vanish after going offline.
    pub ephemeral: bool,
    /// No manual approval.
    pub preauthorized: bool,
    /// Tags the devices get (`tag:...`).
    pub tags: Vec<String>,
    /// Life of the key.
    pub expiry_seconds: u64,
    /// At most 50 characters.
    pub description: String,
}

/// A minted key: the value is shown once and lives only in memory.
#[derive(Clone)]
pub struct AuthKey {
    /// The key's id (not secret).
    pub id: String,
    /// `tskey-auth-...`.
    pub key: SecretString,
    /// RFC 3339 expiry.
    pub expires: String,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("id", &self.id)
            .field("key", &"(redacted)")
            .field("expires", &self.expires)
            .finish()
    }
}

/// A device of the tailnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `nodeId`: what DELETE /device takes.
    pub node_id: String,
    /// The hostname the device asked for.
    pub hostname: String,
    /// The MagicDNS name it got (`name-1.tailnet.ts.net` when taken).
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Ephemeral device.
    pub ephemeral: bool,
    /// Online now.
    pub connected: bool,
}

/// The Tailscale API v2 calls Castle makes.
#[async_trait]
pub trait TailscaleApi: Send + Sync + std::fmt::Debug {
    /// `POST /tailnet/{tailnet}/keys`. Not idempotent: never retried blindly.
    async fn create_key(&self, request: &KeyRequest) -> Result<AuthKey>;
    /// `GET /tailnet/{tailnet}/devices`.
    async fn list_devices(&self) -> Result<Vec<Device>>;
    /// `DELETE /device/{nodeId}`.
    async fn delete_device(&self, node_id: &str) -> Result<()>;
    /// `DELETE /tailnet/{tailnet}/keys/{id}`.
    async fn revoke_key(&self, id: &str) -> Result<()>;
}
