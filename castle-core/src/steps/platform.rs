use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use castle_proxmox::ops::{
    CloneIntent, CloneLimiter, CloneMode, Fence, IntentLog, VmSpec, clone_mode, destroy_vm,
    ensure_vm, list_owned,
};
use serde_json::json;

use super::{Ctx, fail};
use crate::config::Node;
use crate::engine::{Step, StepCtx};
use crate::error::StepError;

/// `platform`: how the VMs are cloned from the golden template (linked when its
/// storage can link, else full), decided once, read only, before any clone; its
/// destroy with `--wipe` removes Castle's VMs that no node of the config names.
/// The VMs themselves are the per-node units, [`NodeVm`].
pub(crate) struct Platform(pub(crate) Arc<Ctx>);

/// `platform/<node>`: one node's VM, cloned (in a slot of its storage), configured
/// and started, on its own: the node's Talos apply starts the moment it runs.
pub(crate) struct NodeVm {
    ctx: Arc<Ctx>,
    node: Node,
    id: String,
}

impl NodeVm {
    pub(crate) fn new(ctx: &Arc<Ctx>, node: &Node) -> Self {
        Self {
            ctx: Arc::clone(ctx),
            node: node.clone(),
            id: unit_id(node),
        }
    }
}

/// The id of a node's platform unit.
pub(crate) fn unit_id(node: &Node) -> String {
    format!("platform/{}", node.name)
}

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

    /// The fence, owning too the clones an earlier, interrupted run recorded
    /// (`recorded` holds them under `clones`).
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
        self.0
            .config
            .nodes
            .iter()
            .map(|n| spec(&self.0, n))
            .collect()
    }

    /// How clones are made, as this run decided it (or an earlier one recorded it).
    fn mode(ctx: &Ctx) -> Result<CloneMode, StepError> {
        Ctx::take(&ctx.shared.clone_mode).ok_or_else(|| {
            StepError::permanent("the platform step has not decided how to clone: run it too")
        })
    }

    /// Keeps the clone mode, and a limiter of its slots per storage, for the units.
    fn keep(&self, mode: CloneMode) {
        let slots = self.0.config.proxmox.clone_slots(mode.full);
        Ctx::put(&self.0.shared.clones, CloneLimiter::new(slots));
        Ctx::put(&self.0.shared.clone_mode, mode);
    }
}

/// One node's VM as the config describes it (`full_clone` as configured; the
/// platform step's [`CloneMode`] may make it full).
pub(crate) fn spec(ctx: &Ctx, n: &Node) -> VmSpec {
    let c = &ctx.config;
    let p = &c.proxmox;
    VmSpec {
        node: p.node.clone(),
        vmid: n.vmid,
        name: format!("{}-{}", c.cluster.name, n.name),
        template: p.template_vmid,
        full_clone: p.full_clone,
        storage: p.storage.clone(),
        format: p.format.clone(),
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
        let p = &self.0.config.proxmox;
        super::fingerprint(&[
            &p.endpoint,
            &p.node,
            &p.template_vmid,
            &p.full_clone,
            &p.storage,
            &p.clone_concurrency,
        ])
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let api = self.api()?;
        let p = &self.0.config.proxmox;
        let mode = clone_mode(
            api.as_ref(),
            &p.node,
            p.template_vmid,
            p.full_clone,
            p.storage.as_deref(),
        )
        .await
        .map_err(fail(format!("reading template {}", p.template_vmid)))?;
        let slots = p.clone_slots(mode.full);
        ctx.progress(format!("{}; {slots} at once per storage", mode.why));
        let out = json!({ "clone": mode, "slots": slots });
        self.keep(mode);
        Ok(out)
    }
    fn restore(&self, outputs: &serde_json::Value) {
        if let Some(mode) = outputs
            .get("clone")
            .and_then(|m| serde_json::from_value::<CloneMode>(m.clone()).ok())
        {
            self.keep(mode);
        }
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        if !self.0.wipe {
            ctx.progress("each node's VM goes with its own unit");
            return Ok(());
        }
        // `--wipe`: every VM the fence owns that no node names (its own unit
        // deleted those), all at once.
        let api = self.api()?;
        let fence = self.fence(ctx.recorded_outputs());
        let node = self.vm_node();
        let ours: Vec<u32> = self.0.config.nodes.iter().map(|n| n.vmid).collect();
        let left: Vec<u32> = list_owned(api.as_ref(), &fence)
            .await
            .map_err(fail("listing owned VMs"))?
            .into_iter()
            .map(|v| v.vmid)
            .filter(|id| !ours.contains(id))
            .collect();
        let results = futures_util::future::join_all(left.iter().map(|&id| {
            let (api, fence, node) = (Arc::clone(&api), &fence, &node);
            async move {
                (
                    id,
                    destroy_vm(api.as_ref(), node, id, fence, Duration::from_secs(60)).await,
                )
            }
        }))
        .await;
        for (id, outcome) in results {
            let outcome =
                outcome.map_err(|e| StepError::from_service(&e).on(format!("vm {id}")))?;
            ctx.progress(format!("vm {id}: {outcome:?}").to_lowercase());
        }
        Ok(())
    }
}

#[async_trait]
impl Step for NodeVm {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> Vec<String> {
        vec!["platform".into()]
    }
    fn node(&self) -> Option<&str> {
        Some(&self.node.name)
    }
    fn fingerprint(&self) -> String {
        super::fingerprint(&[
            &format!("{:?}", spec(&self.ctx, &self.node)),
            &self.ctx.config.proxmox.endpoint,
        ])
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        let platform = Platform(Arc::clone(&self.ctx));
        let api = platform.api()?;
        let mode = Platform::mode(&self.ctx)?;
        let limiter = Ctx::take(&self.ctx.shared.clones).ok_or_else(|| {
            StepError::permanent("the platform step has not set up the clone slots: run it too")
        })?;
        let fence = platform.fence(ctx.recorded_outputs());
        let log = Arc::new(UnitLog {
            ctx: ctx.clone(),
            slots: limiter.per_storage(),
            waited: Mutex::new(None),
        });
        let clones = limiter.with_intent_log(Arc::clone(&log) as Arc<dyn IntentLog>);
        let mut spec = spec(&self.ctx, &self.node);
        spec.full_clone = mode.full;
        let outcome = ensure_vm(api.as_ref(), &spec, &fence, &clones)
            .await
            .map_err(|e| {
                StepError::from_service(&e).on(format!("vm {} ({})", spec.vmid, spec.name))
            })?;
        ctx.progress(format!("vm {} {} {:?}", spec.vmid, spec.name, outcome).to_lowercase());
        let mut out = json!({ "vmid": spec.vmid, "name": spec.name, "outcome": outcome });
        if let Some((storage, waited)) = log
            .waited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            out["slot"] = json!({
                "name": format!("clone slot on {}/{storage}", spec.node),
                "capacity": log.slots,
                "waited_ms": crate::engine::millis(waited),
            });
        }
        Ok(out)
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let platform = Platform(Arc::clone(&self.ctx));
        let api = platform.api()?;
        let fence = platform.fence(ctx.recorded_outputs());
        let id = self.node.vmid;
        let outcome = destroy_vm(
            api.as_ref(),
            &platform.vm_node(),
            id,
            &fence,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| StepError::from_service(&e).on(format!("vm {id}")))?;
        ctx.progress(format!("vm {id}: {outcome:?}").to_lowercase());
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
pub(crate) const CLONES: &str = "clones";

fn recorded_clones(outputs: &serde_json::Value) -> Vec<CloneIntent> {
    outputs
        .get(CLONES)
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// Every clone intent the journal holds, of the platform step and of each node's
/// unit, as `{"clones": [...]}` for [`Platform::fence`].
pub(crate) fn journal_clones(journal: &crate::journal::JournalState) -> serde_json::Value {
    let clones: Vec<CloneIntent> = journal
        .steps
        .iter()
        .filter(|(id, _)| *id == "platform" || id.starts_with("platform/"))
        .flat_map(|(_, r)| recorded_clones(&r.outputs))
        .collect();
    json!({ CLONES: clones })
}

/// A unit's clone intent goes to its journal record (`platform/<node>.outputs.clones`)
/// before the clone is sent, so that a resume or a destroy after a crash
/// recognises a half-made VM; its wait for a clone slot goes to its progress.
#[derive(Debug)]
struct UnitLog {
    ctx: StepCtx,
    slots: usize,
    waited: Mutex<Option<(String, Duration)>>,
}

#[async_trait]
impl IntentLog for UnitLog {
    async fn record(&self, intent: &CloneIntent) -> Result<(), String> {
        self.ctx
            .record(CLONES, json!([intent]))
            .await
            .map_err(|e| e.message)
    }
    fn waiting(&self, _vmid: u32, storage: &str, held: usize, capacity: usize) {
        if held >= capacity {
            self.ctx.progress(format!(
                "waiting for a clone slot on {storage} ({capacity} at once, all taken)"
            ));
        }
    }
    fn slot(&self, _vmid: u32, storage: &str, waited: Duration) {
        if !waited.is_zero() {
            self.ctx.progress(format!(
                "clone slot on {storage} after {:.1}s",
                waited.as_secs_f64()
            ));
        }
        *self.waited.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((storage.to_string(), waited));
    }
}
