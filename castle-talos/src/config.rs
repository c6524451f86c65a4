use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{Error, Patch, Result, SecretsBundle, apply_patch};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// etcd and the API server.
    Controlplane,
    /// Workloads.
    Worker,
}

/// One node's own settings.
#[derive(Debug, Clone)]
pub struct NodeInput {
    /// Hostname.
    pub hostname: String,
    /// Role.
    pub role: Role,
    /// Address with prefix.
    pub address: String,
    /// Default gateway.
    pub gateway: String,
    /// DNS servers.
    pub nameservers: Vec<String>,
    /// The network link (`ens18` for a virtio NIC on Proxmox).
    pub link: String,
}

/// The Tailscale system extension's settings; the key lives only in memory.
#[derive(Clone)]
pub struct TailscaleExtension {
    /// TS_AUTHKEY.
    pub auth_key: SecretString,
    /// TS_HOSTNAME.
    pub hostname: String,
    /// TS_EXTRA_ARGS.
    pub extra_args: Vec<String>,
}

impl std::fmt::Debug for TailscaleExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailscaleExtension")
            .field("hostname", &self.hostname)
            .field("auth_key", &"(redacted)")
            .finish()
    }
}

/// Everything a machine config is made from.
#[derive(Debug, Clone)]
pub struct MachineConfigInput {
    /// Cluster name.
    pub cluster_name: String,
    /// Kubernetes API URL.
    pub endpoint: String,
    /// Kubernetes version (`1.34.1`).
    pub kubernetes_version: String,
    /// Install disk.
    pub install_disk: String,
    /// Installer image.
    pub installer_image: String,
    /// Kubernetes API certificate SANs (`cluster.apiServer.certSANs`).
    pub api_cert_sans: Vec<String>,
    /// Service-account issuers; the first signs.
    pub service_account_issuers: Vec<String>,
    /// API audiences.
    pub api_audiences: Vec<String>,
    /// JWKS URI.
    pub jwks_uri: Option<String>,
    /// The node.
    pub node: NodeInput,
    /// Patches, in order.
    pub patches: Vec<Patch>,
    /// Extra YAML documents appended to the stream.
    pub extra_documents: Vec<String>,
    /// The Tailscale extension, if the node joins a tailnet.
    pub tailscale: Option<TailscaleExtension>,
}

/// A rendered machine config: a multi-document YAML stream holding keys, so secret.
#[derive(Clone)]
pub struct MachineConfig {
    /// The YAML stream.
    pub rendered: SecretString,
    /// sha256 of the stream (safe to log and journal).
    pub digest: String,
}

impl std::fmt::Debug for MachineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineConfig")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl MachineConfig {
    /// Every document of the stream, the v1alpha1 config first. They hold key
    /// material in the clear: for checks and diagnostics, never for logging.
    ///
    /// # Errors
    /// The stream is not YAML (cannot happen for a rendered config).
    pub fn expose_documents(&self) -> Result<Vec<Value>> {
        serde_saphyr::from_multiple(self.rendered.expose_secret())
            .map_err(|e| Error::Config(format!("rendered config: {e}")))
    }
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

impl MachineConfigInput {
    /// Renders the node's config: the v1alpha1 document with patches applied, then
    /// the extension and extra documents.
    ///
    /// # Errors
    /// A patch does not apply, or an extra document is not YAML.
    pub fn render(&self, bundle: &SecretsBundle) -> Result<MachineConfig> {
        let cp = self.node.role == Role::Controlplane;
        let mut extra_args = serde_json::Map::new();
        if !self.service_account_issuers.is_empty() {
            extra_args.insert(
                "service-account-issuer".into(),
                json!(self.service_account_issuers.join(",")),
            );
        }
        if !self.api_audiences.is_empty() {
            extra_args.insert("api-audiences".into(), json!(self.api_audiences.join(",")));
        }
        if let Some(uri) = &self.jwks_uri {
            extra_args.insert("service-account-jwks-uri".into(), json!(uri));
        }
        let with_key =
            |c: &crate::CertKey| json!({ "crt": b64(&c.crt), "key": b64(c.key.expose_secret()) });
        let mut machine = json!({
            "type": if cp { "controlplane" } else { "worker" },
            "token": bundle.trustd_token.expose_secret(),
            "ca": if cp { with_key(&bundle.os) } else { json!({ "crt": b64(&bundle.os.crt) }) },
            "certSANs": [],
            "kubelet": {
                "image": format!("ghcr.io/siderolabs/kubelet:v{}", self.kubernetes_version),
                "defaultRuntimeSeccompProfileEnabled": true,
            },
            "install": { "disk": self.install_disk, "image": self.installer_image, "wipe": false },
            "features": { "kubePrism": { "enabled": true, "port": 7445 } },
        });
        if self.tailscale.is_some() {
            machine["kernel"] = json!({ "modules": [{ "name": "tun" }] });
        }
        let mut cluster = json!({
            "id": bundle.cluster_id,
            "secret": bundle.cluster_secret.expose_secret(),
            "controlPlane": { "endpoint": self.endpoint },
            "clusterName": self.cluster_name,
            "network": { "dnsDomain": "cluster.local", "podSubnets": ["10.244.0.0/16"], "serviceSubnets": ["10.96.0.0/12"] },
            "token": bundle.bootstrap_token.expose_secret(),
            "ca": if cp { with_key(&bundle.k8s) } else { json!({ "crt": b64(&bundle.k8s.crt) }) },
            "discovery": { "enabled": true },
        });
        if cp {
            let c = cluster
                .as_object_mut()
                .ok_or_else(|| Error::Config("cluster is not a map".into()))?;
            c.insert(
                "secretboxEncryptionSecret".into(),
                json!(bundle.secretbox_secret.expose_secret()),
            );
            c.insert("aggregatorCA".into(), with_key(&bundle.aggregator));
            c.insert(
                "serviceAccount".into(),
                json!({ "key": b64(bundle.service_account_key.expose_secret()) }),
            );
            c.insert(
                "apiServer".into(),
                json!({
                    "image": format!("registry.k8s.io/kube-apiserver:v{}", self.kubernetes_version),
                    "certSANs": self.api_cert_sans,
                    "extraArgs": extra_args,
                }),
            );
            c.insert("controllerManager".into(), json!({ "image": format!("registry.k8s.io/kube-controller-manager:v{}", self.kubernetes_version) }));
            c.insert("scheduler".into(), json!({ "image": format!("registry.k8s.io/kube-scheduler:v{}", self.kubernetes_version) }));
            c.insert("proxy".into(), json!({ "image": format!("registry.k8s.io/kube-proxy:v{}", self.kubernetes_version) }));
            c.insert("etcd".into(), json!({ "ca": with_key(&bundle.etcd) }));
            c.insert("coreDNS".into(), json!({ "disabled": true }));
        }
        let doc = json!({ "version": "v1alpha1", "debug": false, "machine": machine, "cluster": cluster });
        // Talos 1.12 configures networking with documents of their own.
        let mut docs = vec![
            doc,
            json!({ "apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "off", "hostname": self.node.hostname }),
            json!({
                "apiVersion": "v1alpha1",
                "kind": "LinkConfig",
                "name": self.node.link,
                "up": true,
                "addresses": [{ "address": self.node.address }],
                "routes": [{ "destination": "0.0.0.0/0", "gateway": self.node.gateway }],
            }),
        ];
        if !self.node.nameservers.is_empty() {
            let ns: Vec<Value> = self
                .node
                .nameservers
                .iter()
                .map(|a| json!({ "address": a }))
                .collect();
            docs.push(
                json!({ "apiVersion": "v1alpha1", "kind": "ResolverConfig", "nameservers": ns }),
            );
        }
        if let Some(ts) = &self.tailscale {
            let mut env = vec![
                format!("TS_AUTHKEY={}", ts.auth_key.expose_secret()),
                format!("TS_HOSTNAME={}", ts.hostname),
                "TS_STATE_DIR=/var/lib/tailscale".to_string(),
            ];
            if !ts.extra_args.is_empty() {
                env.push(format!("TS_EXTRA_ARGS={}", ts.extra_args.join(" ")));
            }
            docs.push(json!({ "apiVersion": "v1alpha1", "kind": "ExtensionServiceConfig", "name": "tailscale", "environment": env }));
        }
        for extra in &self.extra_documents {
            let v: Value = serde_saphyr::from_str(extra)
                .map_err(|e| Error::Config(format!("extra document is not YAML: {e}")))?;
            if v.get("kind").and_then(Value::as_str).is_none() {
                return Err(Error::Config(
                    "an extra document needs `apiVersion` and `kind`".into(),
                ));
            }
            docs.push(v);
        }
        for p in &self.patches {
            apply_patch(target(&mut docs, p)?, p)?;
        }
        let mut out = String::new();
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&serde_saphyr::to_string(d).map_err(|e| Error::Config(e.to_string()))?);
        }
        let digest = hex::encode(Sha256::digest(out.as_bytes()));
        Ok(MachineConfig {
            rendered: SecretString::from(out),
            digest,
        })
    }
}

/// The document a patch applies to: a strategic merge naming a `kind` (and `name`)
/// patches that document, as talosctl does; anything else patches the v1alpha1 config.
fn target<'a>(docs: &'a mut [Value], patch: &Patch) -> Result<&'a mut Value> {
    let kind = match patch {
        Patch::StrategicMerge(p) => p.get("kind").and_then(Value::as_str),
        Patch::JsonPatch(_) => None,
    };
    let Some(kind) = kind else {
        return docs
            .first_mut()
            .ok_or_else(|| Error::Config("no v1alpha1 document".into()));
    };
    let name = match patch {
        Patch::StrategicMerge(p) => p.get("name").and_then(Value::as_str),
        Patch::JsonPatch(_) => None,
    };
    docs.iter_mut()
        .find(|d| {
            d.get("kind").and_then(Value::as_str) == Some(kind)
                && name.is_none_or(|n| d.get("name").and_then(Value::as_str) == Some(n))
        })
        .ok_or_else(|| {
            Error::Config(format!(
                "a patch for {kind}{} matches no document",
                name.map(|n| format!(" {n}")).unwrap_or_default()
            ))
        })
}

/// A talosconfig for the cluster: context `cluster`, its endpoints and nodes, the os
/// CA and a fresh admin client certificate.
///
/// # Errors
/// The client certificate cannot be signed.
pub fn talosconfig(
    bundle: &SecretsBundle,
    cluster: &str,
    endpoints: &[String],
    nodes: &[String],
) -> Result<SecretString> {
    let client = bundle.admin_client_cert()?;
    let v = json!({
        "context": cluster,
        "contexts": { cluster: {
            "endpoints": endpoints,
            "nodes": nodes,
            "ca": b64(&bundle.os.crt),
            "crt": b64(&client.crt),
            "key": b64(client.key.expose_secret()),
        } },
    });
    serde_saphyr::to_string(&v)
        .map(SecretString::from)
        .map_err(|e| Error::Config(e.to_string()))
}

/// Writes a credential file that is created with mode 0600 (never widened, then
/// narrowed), in a directory created with mode 0700, replacing the file atomically.
///
/// # Errors
/// The directory or file cannot be written.
pub fn write_private(path: &Path, content: &SecretString) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".castle-tmp");
    let tmp = path.with_file_name(name);
    // A leftover from a crash may carry other permissions: `mode` only applies to a
    // file this call creates, so start from none.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(content.expose_secret().as_bytes())
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes `kubeconfig` and `talosconfig` into `dir` with [`write_private`].
///
/// # Errors
/// A file cannot be written.
pub fn write_client_configs(
    dir: &Path,
    kubeconfig: &SecretString,
    talosconfig: &SecretString,
) -> Result<()> {
    write_private(&dir.join("kubeconfig"), kubeconfig)?;
    write_private(&dir.join("talosconfig"), talosconfig)
}
