//! Where the steps' service clients come from: the real systems, or the lab.

use std::path::PathBuf;
use std::sync::Arc;

use castle_kube::ClusterApi;
use castle_proxmox::ProxmoxApi;
use castle_tailscale::TailscaleApi;
use castle_talos::TalosApi;
use castle_vault::VaultApi;
use secrecy::SecretString;

use crate::config::Proxmox;
use crate::error::StepError;

/// Builds the service clients once the secrets they need are resolved.
pub trait Backends: Send + Sync {
    /// Proxmox VE.
    ///
    /// # Errors
    /// The client cannot be built (a CA file that does not parse).
    fn proxmox(
        &self,
        settings: &Proxmox,
        token: &SecretString,
        ca_file: Option<PathBuf>,
    ) -> Result<Arc<dyn ProxmoxApi>, StepError>;
    /// Talos's machine API, with the cluster's talosconfig (maintenance-mode calls
    /// go without its client certificate, configured nodes with it).
    ///
    /// # Errors
    /// The client cannot be built.
    fn talos(&self, talosconfig: &SecretString) -> Result<Arc<dyn TalosApi>, StepError>;
    /// Vault.
    ///
    /// # Errors
    /// The client cannot be built.
    fn vault(
        &self,
        address: &str,
        ca_file: Option<PathBuf>,
        token: &SecretString,
    ) -> Result<Arc<dyn VaultApi>, StepError>;
    /// Tailscale, as an OAuth client.
    ///
    /// # Errors
    /// The client cannot be built.
    fn tailscale(
        &self,
        tailnet: &str,
        client_id: &SecretString,
        client_secret: &SecretString,
    ) -> Result<Arc<dyn TailscaleApi>, StepError>;
    /// The Kubernetes API of the new cluster.
    ///
    /// # Errors
    /// The kubeconfig is unusable.
    fn cluster(&self, kubeconfig: &SecretString) -> Result<Arc<dyn ClusterApi>, StepError>;
    /// The system extensions an installer image's Image Factory schematic lists,
    /// when they can be known without asking the factory; `None` otherwise.
    fn image_extensions(&self, _image: &str) -> Option<Vec<String>> {
        None
    }
    /// The git server Flux will pull from, asked read-only (`castle doctor`).
    ///
    /// # Errors
    /// The client cannot be built, or this build has no HTTP client.
    fn git(&self) -> Result<Arc<dyn crate::git::GitRemote>, StepError> {
        #[cfg(feature = "client")]
        {
            Ok(Arc::new(
                crate::git::HttpGit::new().map_err(|e| StepError::permanent(e.to_string()))?,
            ))
        }
        #[cfg(not(feature = "client"))]
        {
            Err(StepError::permanent(
                "this build of castle-core has no HTTP client (feature `client`)",
            ))
        }
    }
}

/// The real systems.
#[cfg(feature = "client")]
#[derive(Debug, Default)]
pub struct RealBackends;

#[cfg(feature = "client")]
impl Backends for RealBackends {
    fn proxmox(
        &self,
        p: &Proxmox,
        token: &SecretString,
        ca_file: Option<PathBuf>,
    ) -> Result<Arc<dyn ProxmoxApi>, StepError> {
        let mut settings = castle_proxmox::ProxmoxSettings::new(
            p.endpoint.clone(),
            p.token_id.clone(),
            token.clone(),
        );
        settings.ca_file = ca_file;
        settings.insecure = p.insecure;
        let client = castle_proxmox::ProxmoxClient::new(&settings)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        Ok(Arc::new(client))
    }

    fn talos(&self, talosconfig: &SecretString) -> Result<Arc<dyn TalosApi>, StepError> {
        let endpoint = castle_talos::TalosEndpoint::from_talosconfig(talosconfig, None)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        Ok(Arc::new(
            castle_talos::TalosClient::new(endpoint)
                .map_err(|e| StepError::permanent(e.to_string()))?,
        ))
    }

    fn vault(
        &self,
        address: &str,
        ca_file: Option<PathBuf>,
        token: &SecretString,
    ) -> Result<Arc<dyn VaultApi>, StepError> {
        let mut settings = castle_vault::VaultSettings::new(address, token.clone());
        settings.ca_file = ca_file;
        Ok(Arc::new(
            castle_vault::VaultClient::new(settings)
                .map_err(|e| StepError::permanent(e.to_string()))?,
        ))
    }

    fn tailscale(
        &self,
        tailnet: &str,
        client_id: &SecretString,
        client_secret: &SecretString,
    ) -> Result<Arc<dyn TailscaleApi>, StepError> {
        let mut settings =
            castle_tailscale::TailscaleSettings::new(client_id.clone(), client_secret.clone());
        settings.tailnet = tailnet.to_string();
        Ok(Arc::new(
            castle_tailscale::TailscaleClient::new(settings)
                .map_err(|e| StepError::permanent(e.to_string()))?,
        ))
    }

    fn cluster(&self, kubeconfig: &SecretString) -> Result<Arc<dyn ClusterApi>, StepError> {
        Ok(Arc::new(
            castle_kube::KubeClient::from_kubeconfig(kubeconfig)
                .map_err(|e| StepError::permanent(e.to_string()))?,
        ))
    }
}
