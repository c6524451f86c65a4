//! `castle doctor`: read-only checks of every system castle.toml names. The service
//! crates turn their read-only calls into findings; this gathers them, adds what
//! only the config can tell (addresses, the installer image), and never writes.

use std::net::IpAddr;
use std::sync::Arc;

use castle_probe::Finding;

use super::{Ctx, Platform, TailnetKey};
use crate::config::validate::{cidr, in_prefix};

/// Every finding, system by system, in a stable order.
pub(crate) async fn findings(ctx: &Arc<Ctx>) -> Vec<Finding> {
    let mut out = network(ctx);
    out.extend(image(ctx));
    out.extend(proxmox(ctx).await);
    out.extend(tailscale(ctx).await);
    out.extend(vault(ctx).await);
    out.extend(git(ctx).await);
    out
}

async fn proxmox(ctx: &Arc<Ctx>) -> Vec<Finding> {
    let api = match Platform(Arc::clone(ctx)).api() {
        Ok(api) => api,
        Err(e) => {
            return vec![Finding::fail(
                "proxmox",
                "client",
                e.message,
                "check proxmox.token (a secret file or env var) and proxmox.ca_file",
            )];
        }
    };
    let recorded = crate::state::peek(&ctx.config, &ctx.backends)
        .await
        .ok()
        .map(|j| super::journal_clones(&j))
        .unwrap_or_default();
    let want = Platform(Arc::clone(ctx)).preflight(&recorded);
    castle_proxmox::ops::preflight(api.as_ref(), &want).await
}

async fn tailscale(ctx: &Arc<Ctx>) -> Vec<Finding> {
    let Some(t) = &ctx.config.tailscale else {
        return Vec::new();
    };
    let api = match TailnetKey(Arc::clone(ctx)).api() {
        Ok(api) => api,
        Err(e) => {
            return vec![Finding::fail(
                "tailscale",
                "client",
                e.message,
                "check tailscale.oauth_client_id and oauth_client_secret (secret files or env vars)",
            )];
        }
    };
    let want = castle_tailscale::ops::Preflight {
        tags: t.tags.clone(),
    };
    castle_tailscale::ops::preflight(api.as_ref(), &want).await
}

async fn vault(ctx: &Arc<Ctx>) -> Vec<Finding> {
    let Some(v) = &ctx.config.vault else {
        return Vec::new();
    };
    let api = match super::vault::api(ctx) {
        Ok(api) => api,
        Err(e) => {
            return vec![Finding::fail(
                "vault",
                "client",
                e.message,
                "check vault.token (a secret file or env var) and vault.ca_file",
            )];
        }
    };
    let mut own = Vec::new();
    if let Some((mount, path)) = super::talos::bundle_location(&ctx.config) {
        own.push((mount, path, "keeping the Talos secrets bundle".to_string()));
    }
    for s in &ctx.config.sync {
        own.push((
            s.mount.clone(),
            s.path.clone(),
            format!("copying {} into Vault ([[sync]])", s.from),
        ));
    }
    let mut needs = castle_vault::doctor::needs(&v.spec, &own);
    needs.extend(crate::state::vault_needs(&ctx.config));
    castle_vault::doctor::preflight(api.as_ref(), &needs).await
}

async fn git(ctx: &Arc<Ctx>) -> Vec<Finding> {
    let Some(flux) = ctx.config.components.flux.as_ref().filter(|f| f.enabled) else {
        return Vec::new();
    };
    let Some(url) = &flux.git_url else {
        return Vec::new();
    };
    let branch = flux.branch.clone().unwrap_or_else(|| "main".into());
    let token = match flux.token.as_ref().map(|t| ctx.secret(t)).transpose() {
        Ok(t) => t,
        Err(e) => {
            return vec![Finding::fail(
                "git",
                "token",
                e.message,
                "components.flux.token must name a readable secret file or env var",
            )];
        }
    };
    let remote = match ctx.backends.git() {
        Ok(r) => r,
        Err(e) => {
            return vec![Finding::fail(
                "git",
                "client",
                e.message,
                "build with the `client` feature",
            )];
        }
    };
    match remote.refs(url, token.as_ref()).await {
        Err(e @ crate::git::GitError::Refused { .. }) => vec![Finding::fail(
            "git",
            "repository answers the token",
            e.to_string(),
            "components.flux.token needs read access to the repository (a GitHub token with `contents: read`)",
        )],
        Err(e) => vec![Finding::fail(
            "git",
            "repository answers the token",
            e.to_string(),
            "check components.flux.git_url (an https URL of the repository)",
        )],
        Ok(refs) => {
            let mut out = vec![Finding::pass(
                "git",
                "repository answers the token",
                format!("{url}: {} refs", refs.len()),
            )];
            let wanted = format!("refs/heads/{branch}");
            if refs.contains(&wanted) {
                out.push(Finding::pass("git", format!("branch {branch}"), "exists"));
            } else {
                let heads: Vec<&str> = refs
                    .iter()
                    .filter_map(|r| r.strip_prefix("refs/heads/"))
                    .collect();
                out.push(Finding::fail(
                    "git",
                    format!("branch {branch}"),
                    format!("not in the repository (branches: {})", heads.join(", ")),
                    "set components.flux.branch to an existing branch, or push it",
                ));
            }
            out
        }
    }
}

/// Extensions the image must carry for what castle.toml turns on.
fn needed_extensions(ctx: &Ctx) -> Vec<&'static str> {
    let mut out = Vec::new();
    if ctx.config.tailscale.is_some() {
        out.push("siderolabs/tailscale");
    }
    if ctx
        .config
        .components
        .longhorn
        .as_ref()
        .is_some_and(|l| l.enabled)
    {
        out.extend(["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]);
    }
    out
}

fn image(ctx: &Ctx) -> Vec<Finding> {
    let image = &ctx.config.cluster.installer_image;
    let mut out = Vec::new();
    if let Err(problem) = crate::config::reference::check(image) {
        out.push(Finding::fail(
            "talos",
            "installer image",
            format!("`{image}` is not an image reference: {problem}"),
            "write it like factory.talos.dev/installer/<schematic id>:v1.12.0",
        ));
        return out;
    }
    out.push(Finding::pass("talos", "installer image", image.clone()));
    let needed = needed_extensions(ctx);
    if needed.is_empty() {
        return out;
    }
    let check = format!("image carries {}", needed.join(", "));
    let fix = format!(
        "build an Image Factory schematic with {} (https://factory.talos.dev) and use its installer",
        needed.join(", ")
    );
    let repo = image.split([':', '@']).next().unwrap_or(image);
    if repo.ends_with("siderolabs/installer") {
        out.push(Finding::fail(
            "talos",
            check,
            format!("{repo} is the plain installer: it has no system extensions"),
            fix,
        ));
        return out;
    }
    match ctx.backends.image_extensions(image) {
        Some(has) => {
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|n| !has.iter().any(|h| h == n))
                .collect();
            if missing.is_empty() {
                out.push(Finding::pass(
                    "talos",
                    check,
                    format!("schematic lists {}", has.join(", ")),
                ));
            } else {
                out.push(Finding::fail(
                    "talos",
                    check,
                    format!("the schematic lacks {}", missing.join(", ")),
                    fix,
                ));
            }
        }
        None => out.push(Finding::warn(
            "talos",
            check,
            "a schematic id cannot be read back without asking the Image Factory; not checked",
            format!(
                "make sure the schematic behind `{image}` lists {}",
                needed.join(", ")
            ),
        )),
    }
    out
}

fn network(ctx: &Ctx) -> Vec<Finding> {
    let c = &ctx.config;
    let mut out = Vec::new();
    let host = url::Url::parse(&c.cluster.endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let cps: Vec<&str> = c.control_planes().map(|n| n.address()).collect();
    match &c.cluster.vip {
        Some(vip) if host == *vip => out.push(Finding::pass(
            "network",
            "endpoint",
            format!(
                "{} is the shared VIP {vip} of the control planes",
                c.cluster.endpoint
            ),
        )),
        Some(vip) => out.push(Finding::warn(
            "network",
            "endpoint",
            format!("{} does not name the VIP {vip}", c.cluster.endpoint),
            format!(
                "point cluster.endpoint at https://{vip}:6443, or make sure `{host}` resolves to it"
            ),
        )),
        None if cps.contains(&host.as_str()) => out.push(Finding::warn(
            "network",
            "endpoint",
            format!(
                "{} is control plane {host}: the API goes when that node goes",
                c.cluster.endpoint
            ),
            "set cluster.vip to a free address for a shared endpoint",
        )),
        None => out.push(Finding::warn(
            "network",
            "endpoint",
            format!("`{host}` is no control-plane address and there is no VIP"),
            "a load balancer or DNS name must reach the control planes; or set cluster.vip",
        )),
    }
    let gateway: Option<IpAddr> = c.cluster.gateway.parse().ok();
    let vip: Option<IpAddr> = c.cluster.vip.as_deref().and_then(|v| v.parse().ok());
    for n in &c.nodes {
        let Some((ip, bits)) = cidr(&n.ip) else {
            out.push(Finding::warn(
                "network",
                format!("node {} subnet", n.name),
                format!(
                    "`{}` has no prefix length: the gateway cannot be checked",
                    n.ip
                ),
                "write the node's address with its prefix, like 192.168.1.211/24",
            ));
            continue;
        };
        if let Some(g) = gateway
            && !in_prefix(g, ip, bits)
        {
            out.push(Finding::fail(
                "network",
                format!("node {} gateway", n.name),
                format!("gateway {g} lies outside {}", n.ip),
                "Talos cannot install a default route through an off-link gateway: fix cluster.gateway or the node's prefix",
            ));
            continue;
        }
        if let Some(v) = vip
            && n.role == crate::config::Role::Controlplane
            && !in_prefix(v, ip, bits)
        {
            out.push(Finding::fail(
                "network",
                format!("node {} VIP", n.name),
                format!("VIP {v} lies outside {}", n.ip),
                "a Layer2 VIP must be in the control planes' subnet",
            ));
            continue;
        }
        out.push(Finding::pass(
            "network",
            format!("node {} addressing", n.name),
            format!("{} with gateway {}", n.ip, c.cluster.gateway),
        ));
    }
    if let Some(m) = c.components.metallb.as_ref().filter(|m| m.enabled) {
        // `castle validate` refuses a pool that holds a node, the gateway or the
        // VIP; a config that reached doctor has none.
        out.push(Finding::pass(
            "network",
            "MetalLB pool",
            format!(
                "{} holds no node, gateway or VIP address",
                m.addresses.join(", ")
            ),
        ));
    }
    out
}
