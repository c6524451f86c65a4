use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{Error, Patch, Result, SecretsBundle, apply_patches};

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
    /// The hardware address of the node's NIC (lowercase, colon-separated): Talos
    /// selects the link by it, whatever name the kernel gives the interface.
    pub mac: String,
}

/// The name the node's NIC goes by in its config (a `LinkAliasConfig`), after the
/// Proxmox device it is.
pub const LINK_ALIAS: &str = "net0";

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
    /// The Talos version the nodes run (`v1.12.0`): what the config may say depends
    /// on it.
    pub talos_version: String,
    /// Pod network CIDRs.
    pub pod_subnets: Vec<String>,
    /// Service network CIDRs.
    pub service_subnets: Vec<String>,
    /// A shared control-plane address (`Layer2VIPConfig`), if the endpoint is one.
    pub vip: Option<String>,
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
        let docs = self.documents(bundle)?;
        let problems = crate::rules::validate_documents(&docs);
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "the config of {} would be refused by Talos: {}",
                self.node.hostname,
                problems.join("; ")
            )));
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

    /// `cluster.apiServer.extraArgs`. kube-apiserver takes `--service-account-issuer`
    /// once per issuer (a comma-joined value is one issuer). Talos 1.12 maps each
    /// flag to one string (`map[string]string` in v1alpha1_types.go at v1.12.11), so it
    /// can carry one issuer; from 1.13 a value may be a list (`Args`, v1.13.0), and
    /// the list replaces Talos's default issuer (the endpoint), first one signing.
    fn api_server_args(&self) -> Result<serde_json::Map<String, Value>> {
        let mut args = serde_json::Map::new();
        match self.service_account_issuers.as_slice() {
            [] => {}
            [one] => {
                args.insert("service-account-issuer".into(), json!(one));
            }
            many if supports_arg_lists(&self.talos_version) => {
                args.insert("service-account-issuer".into(), json!(many));
            }
            many => {
                return Err(Error::Config(format!(
                    "Talos {} takes one value per kube-apiserver flag, so it cannot carry {} service-account issuers; keep one, or use Talos v1.13 or later",
                    self.talos_version,
                    many.len()
                )));
            }
        }
        if !self.api_audiences.is_empty() {
            args.insert("api-audiences".into(), json!(self.api_audiences.join(",")));
        }
        if let Some(uri) = &self.jwks_uri {
            args.insert("service-account-jwks-uri".into(), json!(uri));
        }
        Ok(args)
    }

    /// Every document of the node's config, patches applied, before validation.
    fn documents(&self, bundle: &SecretsBundle) -> Result<Vec<Value>> {
        let cp = self.node.role == Role::Controlplane;
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
            "network": {
                "dnsDomain": "cluster.local",
                "podSubnets": self.pod_subnets,
                "serviceSubnets": self.service_subnets,
            },
            "token": bundle.bootstrap_token.expose_secret(),
            "ca": if cp { with_key(&bundle.k8s) } else { json!({ "crt": b64(&bundle.k8s.crt) }) },
            "discovery": { "enabled": true },
        });
        if cp {
            let image = |name: &str| format!("registry.k8s.io/{name}:v{}", self.kubernetes_version);
            let mut api_server = json!({
                "image": image("kube-apiserver"),
                "certSANs": self.api_cert_sans,
            });
            let args = self.api_server_args()?;
            if !args.is_empty() {
                api_server["extraArgs"] = Value::Object(args);
            }
            let c = cluster
                .as_object_mut()
                .ok_or_else(|| Error::Config("cluster is not a map".into()))?;
            let (key, secret) = bundle.encryption.config_field();
            c.insert(key.into(), json!(secret.expose_secret()));
            c.insert("aggregatorCA".into(), with_key(&bundle.aggregator));
            c.insert(
                "serviceAccount".into(),
                json!({ "key": b64(bundle.service_account_key.expose_secret()) }),
            );
            c.insert("apiServer".into(), api_server);
            c.insert(
                "controllerManager".into(),
                json!({ "image": image("kube-controller-manager") }),
            );
            c.insert(
                "scheduler".into(),
                json!({ "image": image("kube-scheduler") }),
            );
            c.insert("proxy".into(), json!({ "image": image("kube-proxy") }));
            c.insert("etcd".into(), json!({ "ca": with_key(&bundle.etcd) }));
            c.insert("coreDNS".into(), json!({ "disabled": true }));
        }
        let doc = json!({ "version": "v1alpha1", "debug": false, "machine": machine, "cluster": cluster });
        // Talos 1.12 configures networking with documents of their own. The NIC is
        // found by its hardware address, then called by its alias; a default route
        // has no destination (network/link.go refuses `0.0.0.0/0`).
        let mut docs = vec![
            doc,
            json!({ "apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": self.node.hostname }),
            json!({
                "apiVersion": "v1alpha1",
                "kind": "LinkAliasConfig",
                "name": LINK_ALIAS,
                "selector": { "match": format!("mac(link.permanent_addr) == \"{}\"", self.node.mac) },
            }),
            json!({
                "apiVersion": "v1alpha1",
                "kind": "LinkConfig",
                "name": LINK_ALIAS,
                "up": true,
                "addresses": [{ "address": self.node.address }],
                "routes": [{ "gateway": self.node.gateway }],
            }),
        ];
        if let (true, Some(vip)) = (cp, &self.vip) {
            docs.push(json!({ "apiVersion": "v1alpha1", "kind": "Layer2VIPConfig", "name": vip, "link": LINK_ALIAS }));
        }
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
        apply_patches(&mut docs, &self.patches)?;
        Ok(docs)
    }
}

/// A locally administered unicast hardware address (`02:` and five bytes of a hash
/// of `seed`), the same for the same seed: a NIC's address known before its VM
/// exists, so the node's config can select its link by it.
pub fn derived_mac(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    std::iter::once("02".to_string())
        .chain(h.iter().take(5).map(|b| format!("{b:02x}")))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether a Talos version (`v1.13.0`, `1.14`) takes list values in `extraArgs`.
fn supports_arg_lists(talos_version: &str) -> bool {
    parse_version(talos_version).is_some_and(|v| v >= (1, 13))
}

/// `(major, minor)` of a Talos version such as `v1.12.0`.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.strip_prefix('v').unwrap_or(v).split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
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
