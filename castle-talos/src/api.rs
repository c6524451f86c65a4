use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::Result;

/// How ApplyConfiguration applies (`machine.ApplyConfigurationRequest.Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyMode {
    /// Reboot to apply (0).
    Reboot,
    /// Let Talos decide (1).
    Auto,
    /// Without reboot, or fail (2).
    NoReboot,
    /// On next boot (3).
    Staged,
}

/// How to reach a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeConn {
    /// A fresh node: TLS without client certificate (apply and read-only calls only).
    Maintenance,
    /// A configured node: mutual TLS with the talosconfig's admin certificate.
    Mtls,
}

/// A service's state from ServiceList.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// `etcd`, `kubelet`, `apid`, ...
    pub id: String,
    /// `Running`, `Preparing`, ...
    pub state: String,
    /// Health, when the service reports one.
    pub healthy: Option<bool>,
    /// The last health message.
    pub message: String,
}

/// The machine API calls Castle makes (gRPC `machine.MachineService`, port 50000).
#[async_trait]
pub trait TalosApi: Send + Sync + std::fmt::Debug {
    /// ApplyConfiguration. A concurrent apply fails FailedPrecondition; a bad config
    /// InvalidArgument.
    async fn apply_configuration(
        &self,
        node: &str,
        config: &SecretString,
        mode: ApplyMode,
        conn: NodeConn,
    ) -> Result<()>;
    /// Bootstrap etcd on a control plane: `true` if it happened now, `false` if etcd
    /// was already bootstrapped (AlreadyExists).
    async fn bootstrap(&self, node: &str) -> Result<bool>;
    /// The admin kubeconfig.
    async fn kubeconfig(&self, node: &str) -> Result<SecretString>;
    /// ServiceList: every service with its health.
    async fn services(&self, node: &str) -> Result<Vec<ServiceHealth>>;
    /// Version: the Talos tag the node runs.
    async fn version(&self, node: &str, conn: NodeConn) -> Result<String>;
    /// Which handshake the node wants, found by a TLS handshake that offers no
    /// client certificate: a configured node's apid asks for one (and refuses the
    /// handshake without it, so a call in the wrong mode fails as Unavailable, not
    /// Unauthenticated); a node in maintenance mode does not ask.
    async fn connection(&self, node: &str) -> Result<NodeConn>;
    /// Reset: wipe and return to maintenance mode.
    async fn reset(&self, node: &str, graceful: bool) -> Result<()>;
}
