use async_trait::async_trait;
use serde_json::Value;

use crate::Result;

/// The Vault HTTP API as Castle uses it: logical paths under `/v1/`.
///
/// Paths never carry secrets; bodies may (passwords, keys) and are never logged.
#[async_trait]
pub trait VaultApi: Send + Sync + std::fmt::Debug {
    /// `GET /v1/{path}`: the response's `data`, or `None` on 404.
    async fn read(&self, path: &str) -> Result<Option<Value>>;
    /// `POST /v1/{path}` with a JSON body: the response's `data` (if any) with the
    /// top-level lease fields merged in as `lease_id`/`lease_duration`.
    async fn write(&self, path: &str, body: Value) -> Result<Option<Value>>;
    /// `DELETE /v1/{path}`.
    async fn delete(&self, path: &str) -> Result<()>;
    /// `LIST /v1/{path}`: the keys, empty on 404.
    async fn list(&self, path: &str) -> Result<Vec<String>>;
    /// `GET /v1/sys/seal-status`: unauthenticated, and it answers while sealed.
    async fn seal_status(&self) -> Result<SealStatus>;
}

/// What `sys/seal-status` says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct SealStatus {
    /// The server has been initialized.
    pub initialized: bool,
    /// It is sealed: every other call answers 503.
    pub sealed: bool,
    /// The server's version (`2.7.2`).
    #[serde(default)]
    pub version: String,
}
