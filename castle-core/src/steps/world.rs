//! What the real systems still hold of a cluster, asked of them rather than read
//! from the journal: Castle's VMs in the range (half-made clones the journal
//! recorded included), tailnet devices with the cluster's hostnames and tags, and
//! live Vault leases of the cluster's database roles.

use std::sync::Arc;

use super::{Ctx, Platform, TailnetKey};

/// Everything of the cluster still present, one line each. A system that cannot be
/// asked says so in a line of its own: "nothing left" is never claimed unchecked.
pub(crate) async fn leftovers(
    ctx: &Arc<Ctx>,
    recorded_platform: &serde_json::Value,
) -> Vec<String> {
    let mut left = Vec::new();
    let platform = Platform(Arc::clone(ctx));
    match platform.api() {
        Ok(api) => {
            let fence = platform.fence(recorded_platform);
            match castle_proxmox::ops::list_owned(api.as_ref(), &fence).await {
                Ok(vms) => {
                    left.extend(vms.into_iter().map(|v| format!("vm {} {}", v.vmid, v.name)))
                }
                Err(e) => left.push(format!("proxmox: could not check: {e}")),
            }
        }
        Err(e) => left.push(format!("proxmox: could not check: {}", e.message)),
    }
    if let Some(t) = &ctx.config.tailscale {
        match TailnetKey(Arc::clone(ctx)).api() {
            Ok(api) => {
                let hostnames = TailnetKey::hostnames(ctx);
                match castle_tailscale::ops::devices_of(api.as_ref(), &hostnames, &t.tags).await {
                    Ok(devices) => {
                        left.extend(
                            devices
                                .into_iter()
                                .map(|d| format!("tailnet device {}", d.name)),
                        );
                    }
                    Err(e) => left.push(format!("tailscale: could not check: {e}")),
                }
            }
            Err(e) => left.push(format!("tailscale: could not check: {}", e.message)),
        }
    }
    if let Some(v) = &ctx.config.vault {
        match super::vault::api(ctx) {
            Ok(api) => match castle_vault::live_leases(api.as_ref(), &v.spec).await {
                Ok(leases) => left.extend(leases.into_iter().map(|l| format!("vault lease {l}"))),
                Err(e) => left.push(format!("vault: could not check: {e}")),
            },
            Err(e) => left.push(format!("vault: could not check: {}", e.message)),
        }
    }
    left
}
