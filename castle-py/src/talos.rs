//! `castle.talos`: a secrets bundle (as `talosctl gen secrets`) and the machine config
//! of one node, as the `talos` step renders them. Both hold key material, so neither
//! shows it unless asked with `reveal…()`.

use pyo3::prelude::*;
use secrecy::{ExposeSecret as _, SecretString};

use crate::errors::{ConfigError, provider};

/// A Talos secrets bundle; its repr never shows key material.
#[pyclass(module = "castle._castle", frozen)]
pub(crate) struct TalosSecrets {
    inner: castle_talos::SecretsBundle,
}

#[pymethods]
impl TalosSecrets {
    /// Reads a bundle in talosctl's secrets.yaml layout.
    #[staticmethod]
    fn from_yaml(text: String) -> PyResult<Self> {
        let inner =
            castle_talos::SecretsBundle::from_yaml(&SecretString::from(text)).map_err(provider)?;
        Ok(Self { inner })
    }

    /// The cluster id (not secret).
    #[getter]
    fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// The bundle in talosctl's secrets.yaml layout: every key, in the clear.
    fn reveal_yaml(&self) -> PyResult<String> {
        let yaml = self.inner.to_yaml().map_err(provider)?;
        Ok(yaml.expose_secret().to_string())
    }

    fn __repr__(&self) -> String {
        format!(
            "TalosSecrets(cluster_id={:?}, keys=<redacted>)",
            self.inner.cluster_id
        )
    }
}

/// One node's machine config; it embeds the cluster's keys, so its repr shows only
/// who it is for and its digest.
#[pyclass(module = "castle._castle", frozen)]
pub(crate) struct MachineConfig {
    hostname: String,
    role: String,
    digest: String,
    rendered: SecretString,
}

#[pymethods]
impl MachineConfig {
    /// The node's hostname.
    #[getter]
    fn hostname(&self) -> &str {
        &self.hostname
    }

    /// `controlplane` or `worker`.
    #[getter]
    fn role(&self) -> &str {
        &self.role
    }

    /// A digest of the rendered config: equal digests, equal configs.
    #[getter]
    fn digest(&self) -> &str {
        &self.digest
    }

    /// The config as a YAML stream, keys and tokens in the clear.
    fn reveal(&self) -> String {
        self.rendered.expose_secret().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "MachineConfig(hostname={:?}, role={:?}, digest={:?}, yaml=<redacted>)",
            self.hostname, self.role, self.digest
        )
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}

/// `talosctl gen secrets`: a new bundle (with a new service-account key, unless one
/// is given as PEM).
#[pyfunction]
#[pyo3(name = "talos_generate_secrets", signature = (service_account_key = None))]
fn generate_secrets(service_account_key: Option<String>) -> PyResult<TalosSecrets> {
    let inner = castle_talos::SecretsBundle::generate(service_account_key.map(SecretString::from))
        .map_err(provider)?;
    Ok(TalosSecrets { inner })
}

/// The machine config of one node. `patches` are YAML patches (strategic merge, or
/// a list of RFC 6902 operations), applied in order.
#[pyfunction]
#[pyo3(name = "talos_machine_config", signature = (
    secrets, cluster_name, endpoint, hostname, role, address, gateway, *,
    nameservers = vec![], patches = vec![], kubernetes_version = "1.34.1",
    installer_image = "ghcr.io/siderolabs/installer:v1.12.0", install_disk = "/dev/sda",
    mac = None, talos_version = "v1.12.0",
))]
#[allow(clippy::too_many_arguments)]
fn machine_config(
    secrets: &TalosSecrets,
    cluster_name: String,
    endpoint: String,
    hostname: String,
    role: &str,
    address: String,
    gateway: String,
    nameservers: Vec<String>,
    patches: Vec<String>,
    kubernetes_version: &str,
    installer_image: &str,
    install_disk: &str,
    mac: Option<String>,
    talos_version: &str,
) -> PyResult<MachineConfig> {
    // Without one, a stable locally administered address from the cluster and host.
    let mac = mac.map_or_else(
        || castle_talos::derived_mac(&format!("castle/{cluster_name}/{hostname}")),
        |m| m.to_ascii_lowercase(),
    );
    let parsed_role = match role {
        "controlplane" => castle_talos::Role::Controlplane,
        "worker" => castle_talos::Role::Worker,
        other => {
            return Err(ConfigError::new_err(format!(
                "role must be \"controlplane\" or \"worker\", not {other:?}"
            )));
        }
    };
    let patches = patches
        .iter()
        .enumerate()
        .map(|(i, p)| {
            castle_talos::Patch::parse(p)
                .map_err(|e| ConfigError::new_err(format!("patches[{i}]: {e}")))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let input = castle_talos::MachineConfigInput {
        cluster_name,
        endpoint,
        kubernetes_version: kubernetes_version.into(),
        install_disk: install_disk.into(),
        installer_image: installer_image.into(),
        api_cert_sans: vec![],
        service_account_issuers: vec![],
        api_audiences: vec![],
        jwks_uri: None,
        talos_version: talos_version.into(),
        pod_subnets: vec!["10.244.0.0/16".into()],
        service_subnets: vec!["10.96.0.0/12".into()],
        vip: None,
        node: castle_talos::NodeInput {
            hostname: hostname.clone(),
            role: parsed_role,
            address,
            gateway,
            nameservers,
            mac,
        },
        patches,
        extra_documents: vec![],
        tailscale: None,
    };
    let config = input.render(&secrets.inner).map_err(provider)?;
    Ok(MachineConfig {
        hostname,
        role: role.to_string(),
        digest: config.digest,
        rendered: config.rendered,
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TalosSecrets>()?;
    m.add_class::<MachineConfig>()?;
    m.add_function(wrap_pyfunction!(generate_secrets, m)?)?;
    m.add_function(wrap_pyfunction!(machine_config, m)?)?;
    Ok(())
}
