use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use castle_talos::{
    ApplyMode, MachineConfigInput, NodeConn, NodeInput, Patch, Role, SecretsBundle,
    TailscaleExtension, TalosApi,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;

use super::{Ctx, fail, until_ok};
use crate::config::Node;
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

/// `talos`: the cluster's secrets bundle (kept in Vault KV, else made for the run)
/// and a Talos client of its talosconfig, in memory for the per-node units:
/// [`NodeConfig`] applies each node's config, [`Bootstrap`] starts etcd on the first
/// control plane, [`Join`] waits for each node to be a Ready member.
pub(crate) struct TalosStep(pub(crate) Arc<Ctx>);

/// What the talos step hands the units, in memory only: the bundle holds keys.
#[derive(Clone)]
pub(crate) struct TalosSession {
    bundle: Arc<SecretsBundle>,
    api: Arc<dyn TalosApi>,
}

impl TalosSession {
    fn of(ctx: &Ctx) -> Result<Self, StepError> {
        Ctx::take(&ctx.shared.talos).ok_or_else(|| {
            StepError::permanent(
                "no Talos session in memory: the talos step must run in the same process",
            )
        })
    }
}

/// `talos/<node>`: the node's machine config, applied the moment its Talos API
/// answers (maintenance mode on a fresh VM; mutual TLS on a resumed one).
pub(crate) struct NodeConfig {
    ctx: Arc<Ctx>,
    node: Node,
    id: String,
}

/// `bootstrap`: etcd bootstrapped once, on the first control plane, as soon as its
/// install ends; that node healthy; the kubeconfig fetched (and written, with the
/// talosconfig, where the config asks).
pub(crate) struct Bootstrap(pub(crate) Arc<Ctx>);

/// `join/<node>`: the node healthy in Talos (kubelet; etcd on a control plane) and
/// Ready in Kubernetes.
pub(crate) struct Join {
    ctx: Arc<Ctx>,
    node: Node,
    id: String,
}

impl NodeConfig {
    pub(crate) fn new(ctx: &Arc<Ctx>, node: &Node) -> Self {
        Self {
            ctx: Arc::clone(ctx),
            node: node.clone(),
            id: format!("talos/{}", node.name),
        }
    }
}

impl Join {
    pub(crate) fn new(ctx: &Arc<Ctx>, node: &Node) -> Self {
        Self {
            ctx: Arc::clone(ctx),
            node: node.clone(),
            id: format!("join/{}", node.name),
        }
    }
}

/// What reaches a node's machine config: its cores, memory or disk do not.
fn node_fingerprint(c: &crate::config::Config, n: &Node) -> String {
    super::fingerprint(&[
        &c.cluster,
        &(&n.name, &n.role, &n.ip, n.mac(&c.cluster.name)),
        &c.talos,
    ])
}

/// The first control plane, where etcd is bootstrapped.
fn first_control_plane(c: &crate::config::Config) -> Result<&Node, StepError> {
    c.control_planes()
        .next()
        .ok_or_else(|| StepError::permanent("no control plane"))
}

/// Where the cluster's Talos bundle is kept in Vault KV (mount, path in the mount):
/// it must survive a crash between apply and bootstrap, and it is key material, so
/// never on disk.
pub(crate) fn bundle_location(c: &crate::config::Config) -> Option<(String, String)> {
    let v = c.vault.as_ref()?;
    let mount = v.spec.kv.first()?;
    Some((
        mount.path.clone(),
        format!("castle/{}/talos-secrets", c.cluster.name),
    ))
}

/// The KV v2 data path of the bundle.
pub(crate) fn bundle_path(ctx: &Ctx) -> Option<String> {
    bundle_location(&ctx.config).map(|(mount, path)| format!("{mount}/data/{path}"))
}

const INSTALL_BUDGET: Duration = Duration::from_secs(15 * 60);

impl TalosStep {
    /// The cluster's bundle as kept in Vault KV, if there is one (read only).
    pub(crate) async fn stored_bundle(&self) -> Result<Option<SecretsBundle>, StepError> {
        let (Some(path), Some(v)) = (bundle_path(&self.0), self.0.config.vault.as_ref()) else {
            return Ok(None);
        };
        let vault = self.0.backends.vault(
            &v.address,
            v.ca_file.as_deref().map(|f| self.0.config.path(f)),
            &self.0.secret(&v.token)?,
        )?;
        let existing = vault
            .read(&path)
            .await
            .map_err(fail("reading the talos bundle"))?;
        existing
            .as_ref()
            .and_then(|e| e.pointer("/data/bundle").and_then(|b| b.as_str()))
            .map(|yaml| {
                SecretsBundle::from_yaml(&SecretString::from(yaml.to_string()))
                    .map_err(fail("reading the talos bundle"))
            })
            .transpose()
    }

    async fn bundle(&self, ctx: &StepCtx) -> Result<SecretsBundle, StepError> {
        let sa = Ctx::take(&self.0.shared.service_account_key);
        let Some(path) = bundle_path(&self.0) else {
            return SecretsBundle::generate(sa)
                .map_err(fail("generating the talos secrets bundle"));
        };
        if let Some(bundle) = self.stored_bundle().await? {
            ctx.progress("reusing the talos secrets bundle kept in vault");
            return Ok(bundle);
        }
        let v = self
            .0
            .config
            .vault
            .as_ref()
            .ok_or_else(|| StepError::permanent("no [vault] section"))?;
        let vault = self.0.backends.vault(
            &v.address,
            v.ca_file.as_deref().map(|f| self.0.config.path(f)),
            &self.0.secret(&v.token)?,
        )?;
        let bundle =
            SecretsBundle::generate(sa).map_err(fail("generating the talos secrets bundle"))?;
        let yaml = bundle
            .to_yaml()
            .map_err(fail("serializing the talos bundle"))?;
        // Check-and-set on the version the key is at: 0 when it never existed, the
        // latest (deleted) version when a soft delete left its metadata behind, as a
        // `cas: 0` write would then fail for ever (KV v2 keeps versions until the
        // metadata is deleted).
        let metadata = path.replacen("/data/", "/metadata/", 1);
        let version = vault
            .read(&metadata)
            .await
            .map_err(fail("reading the talos bundle's metadata"))?
            .and_then(|m| m.get("current_version").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        match vault
            .write(
                &path,
                json!({ "data": { "bundle": yaml.expose_secret() }, "options": { "cas": version } }),
            )
            .await
        {
            Ok(_) => Ok(bundle),
            // Another run stored one between our read and write: use theirs.
            Err(e) if e.status() == Some(400) => match self.stored_bundle().await? {
                Some(theirs) => {
                    ctx.progress("another run stored the talos bundle first: using it");
                    Ok(theirs)
                }
                None => Err(StepError::permanent(format!(
                    "storing the talos bundle at {path}: {e}; another writer keeps changing it: check who else manages cluster {}",
                    self.0.config.cluster.name
                ))),
            },
            Err(e) => Err(fail("storing the talos bundle")(e)),
        }
    }

    fn patches(&self) -> Result<Vec<(Option<crate::config::Role>, Patch)>, StepError> {
        self.0
            .config
            .talos
            .patches
            .iter()
            .map(|p| {
                let text = patch_text(&self.0.config, p).map_err(StepError::permanent)?;
                Ok((
                    p.role,
                    Patch::parse(&text).map_err(fail("parsing a talos patch"))?,
                ))
            })
            .collect()
    }

    /// Every node's machine config (or only `only`'s), made as the step makes them;
    /// `key` stands in for the tailnet key.
    pub(crate) fn render_all(
        &self,
        bundle: &SecretsBundle,
        key: Option<&SecretString>,
        only: Option<&str>,
    ) -> Result<Vec<(crate::config::Node, castle_talos::MachineConfig)>, StepError> {
        let patches = self.patches()?;
        self.0
            .config
            .nodes
            .iter()
            .filter(|n| only.is_none_or(|o| o == n.name))
            .map(|n| {
                let cfg = self
                    .input(n, &patches, key)?
                    .render(bundle)
                    .map_err(fail(format!("rendering the config of {}", n.name)))?;
                Ok((n.clone(), cfg))
            })
            .collect()
    }

    fn input(
        &self,
        node: &crate::config::Node,
        patches: &[(Option<crate::config::Role>, Patch)],
        key: Option<&SecretString>,
    ) -> Result<MachineConfigInput, StepError> {
        let c = &self.0.config;
        let extra = c
            .talos
            .extra_documents
            .iter()
            .map(|f| {
                std::fs::read_to_string(c.path(f))
                    .map_err(|e| StepError::permanent(format!("extra document {f}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(machine_input(c, node, patches, extra, key))
    }

    /// Applies a node's config in the mode the node asks for: a node in maintenance
    /// mode takes it without a client certificate; a configured node (a resumed
    /// run) wants mutual TLS, where the same config changes nothing. Which one is
    /// found by a handshake, since a configured apid refuses the wrong one at the
    /// handshake, before any gRPC status could say why.
    async fn apply_node(
        api: &dyn TalosApi,
        ip: &str,
        config: &SecretString,
    ) -> Result<NodeConn, StepError> {
        let conn = api
            .connection(ip)
            .await
            .map_err(fail(format!("reaching the Talos API of {ip}")))?;
        api.apply_configuration(ip, config, ApplyMode::Auto, conn)
            .await
            .map_err(fail(format!("applying the machine config to {ip}")))?;
        Ok(conn)
    }
}

/// A patch's YAML: its file (relative to castle.toml) or its inline text.
pub(crate) fn patch_text(
    c: &crate::config::Config,
    p: &crate::config::Patch,
) -> Result<String, String> {
    match (&p.file, &p.inline) {
        (Some(f), _) => std::fs::read_to_string(c.path(f))
            .map_err(|e| format!("talos patch `{f}`: cannot read it: {e}")),
        (None, Some(t)) => Ok(t.clone()),
        (None, None) => Err("a talos patch has neither file nor inline".into()),
    }
}

/// What a node's machine config is made from: castle.toml's settings, the node,
/// the patches meant for its role, the extra documents' text and the tailnet key.
pub(crate) fn machine_input(
    c: &crate::config::Config,
    node: &crate::config::Node,
    patches: &[(Option<crate::config::Role>, Patch)],
    extra_documents: Vec<String>,
    key: Option<&SecretString>,
) -> MachineConfigInput {
    MachineConfigInput {
        cluster_name: c.cluster.name.clone(),
        endpoint: c.cluster.endpoint.clone(),
        kubernetes_version: c.cluster.kubernetes_version.clone(),
        install_disk: c.cluster.install_disk.clone(),
        installer_image: c.cluster.installer_image.clone(),
        api_cert_sans: c.cluster.api_cert_sans.clone(),
        service_account_issuers: c.cluster.service_account_issuers.clone(),
        api_audiences: c.cluster.api_audiences.clone(),
        jwks_uri: c.cluster.jwks_uri.clone(),
        talos_version: c.cluster.talos_version.clone(),
        pod_subnets: c.cluster.pod_subnets.clone(),
        service_subnets: c.cluster.service_subnets.clone(),
        vip: c.cluster.vip.clone(),
        node: NodeInput {
            hostname: node.name.clone(),
            role: if node.role == crate::config::Role::Controlplane {
                Role::Controlplane
            } else {
                Role::Worker
            },
            address: node.ip.clone(),
            gateway: c.cluster.gateway.clone(),
            nameservers: c.cluster.nameservers.clone(),
            mac: node.mac(&c.cluster.name),
        },
        patches: patches
            .iter()
            .filter(|(r, _)| r.is_none_or(|r| r == node.role))
            .map(|(_, p)| p.clone())
            .collect(),
        extra_documents,
        tailscale: match (key, &c.tailscale) {
            (Some(k), Some(t)) => Some(TailscaleExtension {
                auth_key: k.clone(),
                hostname: c.hostname(&node.name),
                extra_args: t.extra_args.clone(),
            }),
            _ => None,
        },
    }
}

#[async_trait]
impl Step for TalosStep {
    fn id(&self) -> &str {
        "talos"
    }
    fn deps(&self) -> Vec<String> {
        let mut d = vec!["secrets".to_string()];
        if self.0.config.vault.is_some() {
            d.push("vault-jwt".into());
        }
        d
    }
    fn fingerprint(&self) -> String {
        let c = &self.0.config;
        let ips: Vec<&str> = c.nodes.iter().map(Node::address).collect();
        super::fingerprint(&[&c.cluster.name, &ips])
    }
    fn keeps_outputs_in_memory(&self) -> bool {
        true
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let bundle = self.bundle(ctx).await?;
        let c = &self.0.config;
        let ips: Vec<String> = c.nodes.iter().map(|n| n.address().to_string()).collect();
        let cps: Vec<String> = c
            .control_planes()
            .map(|n| n.address().to_string())
            .collect();
        let talosconfig = castle_talos::talosconfig(&bundle, &c.cluster.name, &cps, &ips)
            .map_err(fail("building the talosconfig"))?;
        let api = self.0.backends.talos(&talosconfig)?;
        Ctx::put(
            &self.0.shared.talos,
            TalosSession {
                bundle: Arc::new(bundle),
                api,
            },
        );
        Ok(json!({ "nodes": ips.len() }))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        // The bundle stays in Vault for the next rebirth (`--wipe` removes it with
        // the vault steps); the nodes go with their VMs.
        Ok(())
    }
}

#[async_trait]
impl Step for NodeConfig {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> Vec<String> {
        let mut d = vec![super::platform::unit_id(&self.node), "talos".to_string()];
        if self.ctx.config.tailscale.is_some() {
            d.push("tailnet-key".into());
        }
        d
    }
    fn node(&self) -> Option<&str> {
        Some(&self.node.name)
    }
    fn fingerprint(&self) -> String {
        node_fingerprint(&self.ctx.config, &self.node)
    }
    fn timeout(&self) -> Option<Duration> {
        Some(INSTALL_BUDGET + Duration::from_secs(60))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let session = TalosSession::of(&self.ctx)?;
        let step = TalosStep(Arc::clone(&self.ctx));
        let patches = step.patches()?;
        let key = Ctx::take(&self.ctx.shared.tailnet_key);
        let node = &self.node;
        let cfg = step
            .input(node, &patches, key.as_ref())?
            .render(&session.bundle)
            .map_err(fail(format!("rendering the config of {}", node.name)))?;
        let ip = node.address().to_string();
        let conn = until_ok(
            ctx,
            &format!("applying the config to {}", node.name),
            INSTALL_BUDGET,
            || TalosStep::apply_node(session.api.as_ref(), &ip, &cfg.rendered),
        )
        .await?;
        ctx.progress(format!(
            "{} configured ({}{})",
            node.name,
            &cfg.digest[..12],
            if conn == NodeConn::Mtls {
                ", already installed: applied over mTLS"
            } else {
                ""
            }
        ));
        Ok(json!({ "digest": cfg.digest }))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        // The node goes with its VM.
        Ok(())
    }
}

/// Waits until Talos says `node` is healthy: kubelet, and etcd on a control plane.
async fn healthy(ctx: &StepCtx, api: &dyn TalosApi, node: &Node) -> Result<(), StepError> {
    let ip = node.address().to_string();
    let want_etcd = node.role == crate::config::Role::Controlplane;
    until_ok(
        ctx,
        &format!("waiting for {} to be healthy", node.name),
        INSTALL_BUDGET,
        || async {
            let services = api
                .services(&ip)
                .await
                .map_err(fail(format!("reading services of {ip}")))?;
            let unhealthy: Vec<String> = services
                .iter()
                .filter(|s| {
                    (s.id == "kubelet" || (want_etcd && s.id == "etcd")) && s.healthy != Some(true)
                })
                .map(|s| format!("{}: {}", s.id, s.message))
                .collect();
            let present = services.iter().any(|s| s.id == "kubelet");
            if unhealthy.is_empty() && present {
                Ok(())
            } else {
                Err(StepError::transient(format!(
                    "{ip} not healthy yet: {}",
                    unhealthy.join(", ")
                )))
            }
        },
    )
    .await
}

#[async_trait]
impl Step for Bootstrap {
    fn id(&self) -> &str {
        "bootstrap"
    }
    fn deps(&self) -> Vec<String> {
        first_control_plane(&self.0.config)
            .map(|n| vec![format!("talos/{}", n.name)])
            .unwrap_or_default()
    }
    fn fingerprint(&self) -> String {
        let c = &self.0.config;
        super::fingerprint(&[&c.cluster.name, &c.cluster.configs_dir])
    }
    fn keeps_outputs_in_memory(&self) -> bool {
        true
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(30 * 60))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let session = TalosSession::of(&self.0)?;
        let api = &session.api;
        let c = &self.0.config;
        let node = first_control_plane(c)?;
        let first = node.address().to_string();
        let now = until_ok(ctx, "bootstrapping etcd", INSTALL_BUDGET, || async {
            api.bootstrap(&first)
                .await
                .map_err(fail(format!("bootstrapping etcd on {first}")))
        })
        .await?;
        ctx.progress(if now {
            "etcd bootstrapped"
        } else {
            "etcd was already bootstrapped"
        });
        healthy(ctx, api.as_ref(), node).await?;
        ctx.progress(format!("{} healthy", node.name));
        let kubeconfig = until_ok(ctx, "fetching the kubeconfig", INSTALL_BUDGET, || async {
            api.kubeconfig(&first)
                .await
                .map_err(fail("fetching the kubeconfig"))
        })
        .await?;
        if let Some(dir) = &c.cluster.configs_dir {
            let dir = c.path(dir);
            let ips: Vec<String> = c.nodes.iter().map(|n| n.address().to_string()).collect();
            let cps: Vec<String> = c
                .control_planes()
                .map(|n| n.address().to_string())
                .collect();
            let tc = castle_talos::talosconfig(&session.bundle, &c.cluster.name, &cps, &ips)
                .map_err(fail("writing the talosconfig"))?;
            castle_talos::write_private(&dir.join("talosconfig"), &tc)
                .map_err(fail("writing the talosconfig"))?;
            castle_talos::write_private(&dir.join("kubeconfig"), &kubeconfig)
                .map_err(fail("writing the kubeconfig"))?;
            ctx.progress(format!(
                "kubeconfig and talosconfig written to {} (mode 0600)",
                dir.display()
            ));
        }
        Ctx::put(&self.0.shared.kubeconfig, kubeconfig);
        Ok(json!({ "bootstrap_node": first }))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        // etcd goes with the VMs; the written configs are the user's files.
        Ok(())
    }
}

#[async_trait]
impl Step for Join {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> Vec<String> {
        vec![format!("talos/{}", self.node.name), "bootstrap".to_string()]
    }
    fn node(&self) -> Option<&str> {
        Some(&self.node.name)
    }
    fn fingerprint(&self) -> String {
        node_fingerprint(&self.ctx.config, &self.node)
    }
    fn timeout(&self) -> Option<Duration> {
        Some(INSTALL_BUDGET + Duration::from_secs(60))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let session = TalosSession::of(&self.ctx)?;
        healthy(ctx, session.api.as_ref(), &self.node).await?;
        ctx.progress(format!("{} healthy", self.node.name));
        let cluster = self.ctx.cluster()?;
        let ready = castle_kube::Condition::NodeReady(self.node.name.clone());
        ctx.guard(async {
            until_ok(ctx, "reaching the API server", INSTALL_BUDGET, || async {
                cluster
                    .wait(&ready, INSTALL_BUDGET)
                    .await
                    .map_err(fail(format!("waiting for node {}", self.node.name)))
            })
            .await
        })
        .await?;
        ctx.progress(format!("node {} Ready", self.node.name));
        Ok(json!({}))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        // The node goes with its VM.
        Ok(())
    }
}
