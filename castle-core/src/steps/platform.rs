use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use castle_proxmox::ops::{
    CloneIntent, CloneLimiter, Fence, IntentLog, VmSpec, destroy_vm, ensure_vm, list_owned,
};
use serde_json::json;

use super::{Ctx, fail};
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

/// `platform`: the VMs, cloned from the golden template, configured, started.
pub(crate) struct Platform(pub(crate) Arc<Ctx>);

impl Platform {
    pub(crate) fn api(&self) -> Result<Arc<dyn castle_proxmox::ProxmoxApi>, StepError> {
        let p = &self.0.config.proxmox;
        let token = self.0.secret(&p.token)?;
        self.0.backends.proxmox(
            p,
            &token,
            p.ca_file.as_deref().map(|f| self.0.config.path(f)),
        )
    }

    /// The fence, owning too the clones an earlier, interrupted run recorded.
    pub(crate) fn fence(&self, recorded: &serde_json::Value) -> Fence {
        cluster_fence(&self.0.config).with_clones(recorded_clones(recorded))
    }

    /// The node the VMs live on.
    fn vm_node(&self) -> String {
        let p = &self.0.config.proxmox;
        p.target.clone().unwrap_or_else(|| p.node.clone())
    }

    /// What `castle doctor` checks on Proxmox for this config (the journal's
    /// recorded clones are this cluster's too).
    pub(crate) fn preflight(&self, recorded: &serde_json::Value) -> castle_proxmox::ops::Preflight {
        let c = &self.0.config;
        let p = &c.proxmox;
        castle_proxmox::ops::Preflight {
            token_id: p.token_id.clone(),
            node: p.node.clone(),
            target: p.target.clone(),
            template: p.template_vmid,
            storage: p.storage.clone(),
            bridge: p.bridge.clone(),
            vlan: p.vlan,
            pool: p.pool.clone(),
            full_clone: p.full_clone,
            vms: self
                .specs()
                .into_iter()
                .map(|s| castle_proxmox::ops::PlannedVm {
                    vmid: s.vmid,
                    name: s.name,
                    disk_gib: s.disk_gib,
                })
                .collect(),
            fence: self.fence(recorded),
        }
    }

    pub(crate) fn specs(&self) -> Vec<VmSpec> {
        let c = &self.0.config;
        let p = &c.proxmox;
        c.nodes
            .iter()
            .map(|n| VmSpec {
                node: p.node.clone(),
                vmid: n.vmid,
                name: format!("{}-{}", c.cluster.name, n.name),
                template: p.template_vmid,
                full_clone: p.full_clone,
                storage: p.storage.clone(),
                pool: p.pool.clone(),
                target: p.target.clone(),
                cores: n.cores,
                memory_mib: n.memory_mib,
                disk_gib: n.disk_gib,
                bridge: p.bridge.clone(),
                mac: Some(n.mac(&c.cluster.name)),
                vlan: p.vlan,
                ip_cidr: n.ip.clone(),
                gateway: Some(c.cluster.gateway.clone()),
                tags: vec![p.tag.clone(), identity_tag(c)],
                description: format!(
                    "castle cluster {} node {} ({:?})",
                    c.cluster.name, n.name, n.role
                ),
            })
            .collect()
    }
}

#[async_trait]
impl Step for Platform {
    fn id(&self) -> &str {
        "platform"
    }
    fn deps(&self) -> Vec<String> {
        let mut d = vec!["secrets".to_string()];
        if !self.0.config.downloads().is_empty() {
            d.push("downloads".into());
        }
        d
    }
    fn fingerprint(&self) -> String {
        super::fingerprint(&[
            &format!("{:?}", self.specs()),
            &self.0.config.proxmox.endpoint,
        ])
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let api = self.api()?;
        let fence = self.fence(ctx.recorded_outputs());
        let journal = Arc::new(JournalIntents {
            ctx: ctx.clone(),
            clones: tokio::sync::Mutex::new(fence.clones.clone()),
        });
        let clones = CloneLimiter::new(self.0.config.proxmox.clone_concurrency.max(1))
            .with_intent_log(journal);
        let results = futures_util::future::join_all(self.specs().into_iter().map(|spec| {
            let (api, clones, fence) = (Arc::clone(&api), &clones, &fence);
            async move {
                let outcome = ensure_vm(api.as_ref(), &spec, fence, clones)
                    .await
                    .map_err(|e| {
                        StepError::from_service(&e).on(format!("vm {} ({})", spec.vmid, spec.name))
                    });
                (spec, outcome)
            }
        }))
        .await;
        let mut vms = Vec::new();
        for (spec, outcome) in results {
            let outcome =
                outcome.map_err(|e| e.context(format!("vm {} ({})", spec.vmid, spec.name)))?;
            ctx.progress(format!("vm {} {} {:?}", spec.vmid, spec.name, outcome).to_lowercase());
            vms.push(json!({ "vmid": spec.vmid, "name": spec.name, "outcome": outcome }));
        }
        Ok(json!({ "vms": vms }))
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let api = self.api()?;
        let fence = self.fence(ctx.recorded_outputs());
        let node = self.vm_node();
        let mut ids: Vec<u32> = self.0.config.nodes.iter().map(|n| n.vmid).collect();
        if self.0.wipe {
            ids.extend(
                list_owned(api.as_ref(), &fence)
                    .await
                    .map_err(fail("listing owned VMs"))?
                    .into_iter()
                    .map(|v| v.vmid),
            );
            ids.sort_unstable();
            ids.dedup();
        }
        for id in ids {
            let outcome = destroy_vm(api.as_ref(), &node, id, &fence, Duration::from_secs(60))
                .await
                .map_err(|e| StepError::from_service(&e).on(format!("vm {id}")))?;
            ctx.progress(format!("vm {id}: {outcome:?}").to_lowercase());
        }
        Ok(())
    }
}

/// The cluster's own Proxmox tag, `<tag>-<cluster>`: with the VMID range and the
/// ownership tag, the one rule by which create, destroy and `--wipe` (and the
/// "nothing left" check) tell this cluster's VMs from anyone else's.
pub(crate) fn identity_tag(c: &crate::config::Config) -> String {
    format!("{}-{}", c.proxmox.tag, c.cluster.name)
}

/// The ownership fence of this cluster: range, tag and identity.
pub(crate) fn cluster_fence(c: &crate::config::Config) -> Fence {
    let p = &c.proxmox;
    Fence::new(p.tag.clone(), p.vmid_range[0]..=p.vmid_range[1]).with_identity(identity_tag(c))
}

/// The journal key under which clones are recorded before they are sent.
const CLONES: &str = "clones";

fn recorded_clones(outputs: &serde_json::Value) -> Vec<CloneIntent> {
    outputs
        .get(CLONES)
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// Clone intents go to the journal (`platform.outputs.clones`) before the clone is
/// sent, so that a resume or a destroy after a crash recognises a half-made VM.
#[derive(Debug)]
struct JournalIntents {
    ctx: StepCtx,
    /// Every intent so far; held across the write so that concurrent clones
    /// cannot write an older list over a newer one.
    clones: tokio::sync::Mutex<Vec<CloneIntent>>,
}

#[async_trait]
impl IntentLog for JournalIntents {
    async fn record(&self, intent: &CloneIntent) -> Result<(), String> {
        let mut clones = self.clones.lock().await;
        clones.retain(|c| c.vmid != intent.vmid);
        clones.push(intent.clone());
        self.ctx
            .record(CLONES, json!(*clones))
            .await
            .map_err(|e| e.message)
    }
}
