//! The live part of `castle plan`: per step, what each real system would get, asked
//! of the systems read-only. A system that cannot be asked is a warning in the
//! plan, never an error.

use std::sync::Arc;

use castle_proxmox::ops::{VmPlan, plan_vm};
use serde::Serialize;

use super::{Ctx, Platform, TailnetKey};

/// One change a step would make to one system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedChange {
    /// `proxmox`, `vault`, `tailscale`, `talos`, `kubernetes`.
    pub system: String,
    /// `clone`, `update`, `create`, `delete`, `mint`, `configure`, `apply`, ...
    pub action: String,
    /// What it is done to (`vm 421 lab-cp-1`, `auth/jwt/role/eso`, `node cp-1`).
    pub target: String,
    /// The fields that change, `field: old -> new` (secrets shown as `(sensitive)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl PlannedChange {
    fn new(system: &str, action: &str, target: impl Into<String>, fields: Vec<String>) -> Self {
        PlannedChange {
            system: system.into(),
            action: action.into(),
            target: target.into(),
            fields,
        }
    }
}

/// What the systems say about one step: its changes, and warnings for systems
/// that could not be asked.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) changes: Vec<PlannedChange>,
    pub(crate) warnings: Vec<String>,
}

/// The live plan of step `id`, when it would run (`runs`) or not.
/// `recorded` is what the journal holds of the platform step (clones in flight).
pub(crate) async fn step(
    ctx: &Arc<Ctx>,
    id: &str,
    runs: bool,
    recorded: &serde_json::Value,
) -> Live {
    match id {
        "tailnet-key" => tailnet(ctx, runs).await,
        "vault-jwt" | "vault-db" => vault(ctx, id == "vault-jwt").await,
        "platform" => platform(ctx).await,
        "talos" if runs => talos_bundle(ctx).await.0,
        _ if id.starts_with("platform/") => {
            platform_vm(ctx, recorded, &id["platform/".len()..]).await
        }
        _ if runs && id.starts_with("talos/") => talos_node(ctx, &id["talos/".len()..]).await,
        "downloads" if runs => downloads(ctx),
        "flux" if runs => component(ctx, "flux"),
        "eso" if runs => component(ctx, "eso"),
        "networking" if runs => component(ctx, "metallb"),
        "storage" if runs => component(ctx, "longhorn"),
        "gitops" if runs => gitops(ctx),
        _ => Live::default(),
    }
}

/// The pinned manifests to fetch, or already kept.
fn downloads(ctx: &Ctx) -> Live {
    let mut live = Live::default();
    let dir = ctx.config.downloads_dir();
    for (name, url, sha256) in ctx.config.downloads() {
        let (action, how) = match castle_kube::Bundle::cached(url, sha256, &dir) {
            Some(b) => (
                "keep",
                format!("{} objects, kept in {}", b.objects.len(), dir.display()),
            ),
            None => ("fetch", format!("into {}", dir.display())),
        };
        live.changes.push(PlannedChange::new(
            "http",
            action,
            format!("components.{name}: {url}"),
            vec![format!("sha256: {sha256}"), how],
        ));
    }
    live
}

/// A component's objects (the cluster may not exist yet: read from castle.toml and
/// its manifests, not diffed against the API server): a chart's HelmRelease and
/// source, or a bundle's objects by kind.
fn component(ctx: &Ctx, name: &str) -> Live {
    let mut live = Live::default();
    let Some(comp) = ctx.config.component(name) else {
        return live;
    };
    if let Some(release) = ctx.config.release(name) {
        let objects = super::release_objects(&release);
        let source = castle_kube::ObjectRef::of(&objects[0]);
        let mut fields = vec![
            format!(
                "chart: {} {}",
                release.chart.name,
                release.chart.version.as_deref().unwrap_or("(no version)")
            ),
            format!("source: {source} ({})", release.chart.repo),
        ];
        if !release.values.is_empty() {
            let keys: Vec<&str> = release.values.keys().map(String::as_str).collect();
            fields.push(format!("values: {}", keys.join(", ")));
        }
        live.changes.push(PlannedChange::new(
            "kubernetes",
            "apply",
            format!("HelmRelease {}/{}", release.namespace, release.name),
            fields,
        ));
        return live;
    }
    let loaded = match (&comp.manifest, &comp.url, &comp.sha256) {
        (Some(file), _, pin) => castle_kube::Bundle::load(&ctx.config.path(file), pin.as_deref())
            .map(|b| (b, file.clone()))
            .map_err(|e| e.to_string()),
        (None, Some(url), Some(pin)) => {
            castle_kube::Bundle::cached(url, pin, &ctx.config.downloads_dir())
                .map(|b| (b, url.clone()))
                .ok_or_else(|| format!("{url} is fetched by the downloads step"))
        }
        _ => return live,
    };
    match loaded {
        Ok((bundle, from)) => {
            let mut kinds = std::collections::BTreeMap::<String, usize>::new();
            for o in &bundle.objects {
                let kind = o.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
                *kinds.entry(kind.to_string()).or_default() += 1;
            }
            live.changes.push(PlannedChange::new(
                "kubernetes",
                "apply",
                format!("{name}: {} objects from {from}", bundle.objects.len()),
                kinds.iter().map(|(k, n)| format!("{n} {k}")).collect(),
            ));
        }
        Err(e) => live.warnings.push(format!("kubernetes: {name}: {e}")),
    }
    live
}

/// The handover: what Flux is pointed at.
fn gitops(ctx: &Ctx) -> Live {
    let mut live = Live::default();
    let Some(flux) = ctx.config.component("flux") else {
        return live;
    };
    live.changes.push(PlannedChange::new(
        "kubernetes",
        "apply",
        "GitRepository flux-system/flux-system, Kustomization flux-system/flux-system",
        vec![
            format!("url: {}", flux.git_url.as_deref().unwrap_or("(unset)")),
            format!("branch: {}", flux.branch.as_deref().unwrap_or("main")),
            format!("path: {}", flux.path.as_deref().unwrap_or("./")),
        ],
    ));
    live
}

/// The cluster's Talos bundle: kept in Vault, or generated (and kept there).
async fn talos_bundle(ctx: &Arc<Ctx>) -> (Live, Option<castle_talos::SecretsBundle>) {
    let mut live = Live::default();
    let step = super::TalosStep(Arc::clone(ctx));
    let bundle = match step.stored_bundle().await {
        Ok(b) => b,
        Err(e) => {
            live.warnings.push(format!(
                "vault: the Talos bundle was not read: {}",
                e.message
            ));
            None
        }
    };
    if bundle.is_none() {
        let kept = super::talos::bundle_path(ctx)
            .map(|p| format!(", kept in Vault KV at {p}"))
            .unwrap_or_default();
        live.changes.push(PlannedChange::new(
            "talos",
            "generate",
            "secrets bundle",
            vec![format!("new CAs and tokens{kept}")],
        ));
    }
    (live, bundle)
}

/// A node in maintenance mode gets its first config; a configured node gets it
/// again over mutual TLS; a node not answering yet is configured once its VM boots.
async fn talos_node(ctx: &Arc<Ctx>, name: &str) -> Live {
    let c = &ctx.config;
    let Some(n) = c.nodes.iter().find(|n| n.name == name) else {
        return Live::default();
    };
    let target = format!("node {} ({})", n.name, n.address());
    let (mut live, bundle) = talos_bundle(ctx).await;
    // The bundle is the talos step's change; here only the node's.
    live.changes.clear();
    let Some(bundle) = bundle else {
        live.changes.push(PlannedChange::new(
            "talos",
            "configure",
            target,
            vec!["first config, in maintenance mode once its VM boots".into()],
        ));
        return live;
    };
    let ips: Vec<String> = c.nodes.iter().map(|n| n.address().to_string()).collect();
    let cps: Vec<String> = c
        .control_planes()
        .map(|n| n.address().to_string())
        .collect();
    let api = castle_talos::talosconfig(&bundle, &c.cluster.name, &cps, &ips)
        .map_err(|e| e.to_string())
        .and_then(|tc| ctx.backends.talos(&tc).map_err(|e| e.message));
    let api = match api {
        Ok(api) => api,
        Err(e) => {
            live.warnings.push(format!("talos: not asked: {e}"));
            return live;
        }
    };
    let (action, how) = match api.connection(n.address()).await {
        Ok(castle_talos::NodeConn::Maintenance) => {
            ("configure", "first config, in maintenance mode".to_string())
        }
        Ok(castle_talos::NodeConn::Mtls) => (
            "apply",
            "configured already: the config again over mutual TLS (a new tailnet key)".to_string(),
        ),
        Err(e) => (
            "configure",
            format!("not answering yet ({e}): configured once its VM boots"),
        ),
    };
    live.changes
        .push(PlannedChange::new("talos", action, target, vec![how]));
    live
}

/// How the VMs would be cloned: linked where the template's storage links.
async fn platform(ctx: &Arc<Ctx>) -> Live {
    let mut live = Live::default();
    let p = Platform(Arc::clone(ctx));
    let api = match p.api() {
        Ok(api) => api,
        Err(e) => {
            live.warnings
                .push(format!("proxmox: not asked: {}", e.message));
            return live;
        }
    };
    let px = &ctx.config.proxmox;
    match castle_proxmox::ops::clone_mode(
        api.as_ref(),
        &px.node,
        px.template_vmid,
        px.full_clone,
        px.storage.as_deref(),
    )
    .await
    {
        Ok(mode) => live.changes.push(PlannedChange::new(
            "proxmox",
            "read",
            format!("template {}", px.template_vmid),
            vec![
                mode.why.clone(),
                format!("{} clones at once per storage", px.clone_slots(mode.full)),
            ],
        )),
        Err(e) => live.warnings.push(format!(
            "proxmox: template {}: create would stop: {e}",
            px.template_vmid
        )),
    }
    live
}

/// One node's VM: cloned, or adopted with the fields that change.
async fn platform_vm(ctx: &Arc<Ctx>, recorded: &serde_json::Value, name: &str) -> Live {
    let mut live = Live::default();
    let Some(n) = ctx.config.nodes.iter().find(|n| n.name == name) else {
        return live;
    };
    let p = Platform(Arc::clone(ctx));
    let api = match p.api() {
        Ok(api) => api,
        Err(e) => {
            live.warnings
                .push(format!("proxmox: not asked: {}", e.message));
            return live;
        }
    };
    let fence = p.fence(recorded);
    let spec = super::platform::spec(ctx, n);
    let target = format!("vm {} {}", spec.vmid, spec.name);
    match plan_vm(api.as_ref(), &spec, &fence).await {
        Ok(VmPlan::Clone) => live.changes.push(PlannedChange::new(
            "proxmox",
            "clone",
            target,
            vec![
                format!("from template {}", spec.template),
                format!("cores: {}", spec.cores),
                format!("memory: {}", spec.memory_mib),
                format!("disk: {}G", spec.disk_gib),
                format!("ipconfig0: ip={}", spec.ip_cidr),
            ],
        )),
        Ok(VmPlan::Adopt { changes }) if changes.is_empty() => {}
        Ok(VmPlan::Adopt { changes }) => live.changes.push(PlannedChange::new(
            "proxmox",
            "update",
            target,
            changes.iter().map(ToString::to_string).collect(),
        )),
        Ok(VmPlan::Foreign { reason }) => live.warnings.push(format!(
            "proxmox: {target}: not ours, create would stop: {reason}"
        )),
        Err(e) => live
            .warnings
            .push(format!("proxmox: {target}: not asked: {e}")),
    }
    live
}

async fn tailnet(ctx: &Arc<Ctx>, runs: bool) -> Live {
    let mut live = Live::default();
    let Some(t) = &ctx.config.tailscale else {
        return live;
    };
    if !runs {
        return live;
    }
    match TailnetKey(Arc::clone(ctx)).api() {
        Err(e) => live
            .warnings
            .push(format!("tailscale: not asked: {}", e.message)),
        Ok(api) => {
            let hostnames = TailnetKey::hostnames(ctx);
            match castle_tailscale::ops::devices_of(api.as_ref(), &hostnames, &t.tags).await {
                Ok(devices) => {
                    for d in devices {
                        if d.connected == Some(false) {
                            live.changes.push(PlannedChange::new(
                                "tailscale",
                                "delete",
                                format!("device {} (offline)", d.name),
                                vec![],
                            ));
                        }
                    }
                }
                Err(e) => live.warnings.push(format!("tailscale: not asked: {e}")),
            }
        }
    }
    live.changes.push(PlannedChange::new(
        "tailscale",
        "mint",
        "auth key",
        vec![
            format!("tags: {}", t.tags.join(", ")),
            "reusable, ephemeral, preauthorized".into(),
            format!("expiry: {}s", t.key_ttl_seconds),
        ],
    ));
    live
}

async fn vault(ctx: &Arc<Ctx>, auth: bool) -> Live {
    let mut live = Live::default();
    let Some(v) = &ctx.config.vault else {
        return live;
    };
    let part = if auth {
        v.spec.auth_part()
    } else {
        v.spec.database_part()
    };
    let plan = async {
        let spec = super::vault::resolved_for_plan(ctx, part)?;
        let api = super::vault::api(ctx)?;
        castle_vault::plan(api.as_ref(), &spec)
            .await
            .map_err(super::fail("reading vault"))
    };
    match plan.await {
        Ok(plan) => {
            for c in plan.changes {
                live.changes.push(PlannedChange::new(
                    "vault",
                    &format!("{:?}", c.op).to_lowercase(),
                    format!("{} {}", c.kind, c.path),
                    c.fields
                        .iter()
                        .map(|f| {
                            format!(
                                "{}: {} -> {}",
                                f.field,
                                f.old.as_deref().unwrap_or("(unset)"),
                                f.new.as_deref().unwrap_or("(unset)")
                            )
                        })
                        .collect(),
                ));
            }
        }
        Err(e) => live
            .warnings
            .push(format!("vault: not asked: {}", e.message)),
    }
    live
}
