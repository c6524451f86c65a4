//! The idempotent, multi-call operations of the platform step, over any
//! [`ProxmoxApi`]: make a VM exist as specified (adopting what an earlier run left),
//! and delete only what the [`Fence`] says is Castle's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{CloneRequest, Error, PowerState, ProxmoxApi, Result, VmConfig, VmInfo, wait_task};

/// A clone of a large disk may take many minutes on slow storage.
const CLONE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Start, stop, resize, delete.
const TASK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a lock left by someone else (an interrupted clone) may take to clear.
const UNLOCK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The shutdown task's own timeout is the deadline; this covers polling it.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(30);

/// What Castle owns: VMs that carry `tag` and have a VMID inside `vmid_range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The ownership tag.
    pub tag: String,
    /// The VMIDs Castle may touch, inclusive.
    pub vmid_range: RangeInclusive<u32>,
}

impl Fence {
    /// A fence from the config's `proxmox.tag` and `proxmox.vmid_range`.
    pub fn new(tag: impl Into<String>, vmid_range: RangeInclusive<u32>) -> Self {
        Self {
            tag: tag.into(),
            vmid_range,
        }
    }

    /// Why `vm` is not Castle's to touch, or `None` when it is.
    pub fn refusal(&self, vm: &VmInfo) -> Option<String> {
        if !self.vmid_range.contains(&vm.vmid) {
            return Some(self.range_text(vm.vmid));
        }
        if vm.template {
            return Some(format!("vm {} `{}` is a template", vm.vmid, vm.name));
        }
        if !vm.has_tag(&self.tag) {
            return Some(format!(
                "vm {} `{}` does not carry the tag `{}`",
                vm.vmid, vm.name, self.tag
            ));
        }
        None
    }

    /// Whether `vm` is Castle's.
    pub fn owns(&self, vm: &VmInfo) -> bool {
        self.refusal(vm).is_none()
    }

    fn range_text(&self, vmid: u32) -> String {
        format!(
            "vmid {vmid} is outside the range {}-{}",
            self.vmid_range.start(),
            self.vmid_range.end()
        )
    }
}

/// One VM of the cluster, as the config describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// VM name (the node's hostname, a DNS label).
    pub name: String,
    /// Its fixed VMID.
    pub vmid: u32,
    /// The Proxmox node it lives on.
    pub node: String,
    /// The template to clone.
    pub template: u32,
    /// vCPU cores.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Boot disk (`scsi0`) size in GiB; grown, never shrunk.
    pub disk_gib: u32,
    /// Network bridge, e.g. `vmbr0`.
    pub bridge: String,
    /// The NIC's hardware address (`02:..`); `None` keeps the one Proxmox gave the
    /// clone. Talos finds its link by it, so it must be known before the VM exists.
    pub mac: Option<String>,
    /// VLAN tag on the NIC.
    pub vlan: Option<u16>,
    /// Static address with prefix, e.g. `192.168.1.211/24`.
    pub ip_cidr: String,
    /// Default gateway.
    pub gateway: Option<String>,
    /// Tags besides the fence's ownership tag (which is always added).
    pub tags: Vec<String>,
    /// Description (the notes field).
    pub description: String,
    /// A full copy instead of a linked clone.
    pub full_clone: bool,
    /// Target storage of a full clone.
    pub storage: Option<String>,
}

/// What [`ensure_vm`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmOutcome {
    /// Cloned now.
    Created,
    /// Existed with our name and tag; brought to the spec.
    Adopted,
    /// A clone an earlier run started but did not finish (still locked `clone`,
    /// or stopped without our tag): waited for and configured.
    Resumed,
}

/// What [`destroy_vm`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum DestroyOutcome {
    /// Deleted now.
    Deleted,
    /// Was not there (already deleted): nothing to do.
    Gone,
    /// Not Castle's: left untouched.
    Skipped {
        /// Why.
        reason: String,
    },
}

type Gate = Arc<Semaphore>;

/// Bounds how many clones run at once from one template on one node: Proxmox
/// holds the template's config lock during a clone, and others time out on it.
/// `Clone` shares the bound.
#[derive(Debug, Clone)]
pub struct CloneLimiter {
    per_template: usize,
    gates: Arc<Mutex<HashMap<(String, u32), Gate>>>,
}

impl CloneLimiter {
    /// At most `per_template` (at least 1) clones per template and node.
    pub fn new(per_template: usize) -> Self {
        Self {
            per_template: per_template.max(1),
            gates: Arc::default(),
        }
    }

    /// Waits for a slot to clone `template` on `node`; the slot frees on drop.
    pub async fn acquire(&self, node: &str, template: u32) -> OwnedSemaphorePermit {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                gates
                    .entry((node.to_string(), template))
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_template))),
            )
        };
        loop {
            // The semaphore is never closed, so acquiring only fails if it were.
            if let Ok(permit) = Arc::clone(&gate).acquire_owned().await {
                return permit;
            }
        }
    }
}

/// Makes the VM exist, configured as `spec` says and running. Idempotent:
/// - no VM at `spec.vmid`: clone it (bounded by `clones`);
/// - our name and our tag: adopt it;
/// - our name, locked `clone` or stopped without our tag: a clone an earlier run
///   left halfway; wait for its lock and finish it;
/// - anything else at that id: refuse, naming the holder.
///
/// Then only what differs from the spec is changed: config keys (the NIC keeps its
/// MAC), the disk grows if smaller, and the VM starts if stopped.
///
/// # Errors
/// [`Error::Fence`] for a VMID outside the fence, [`Error::NotOurs`] for an id held
/// by something else, or the first Proxmox error (ask it `is_transient()`; running
/// `ensure_vm` again is always safe).
pub async fn ensure_vm(
    api: &dyn ProxmoxApi,
    spec: &VmSpec,
    fence: &Fence,
    clones: &CloneLimiter,
) -> Result<VmOutcome> {
    if !fence.vmid_range.contains(&spec.vmid) {
        return Err(Error::Fence {
            vmid: spec.vmid,
            reason: fence.range_text(spec.vmid),
        });
    }
    let outcome = match api.vm_status(&spec.node, spec.vmid).await? {
        Some(vm) => classify(&vm, spec, fence)?,
        None => create(api, spec, fence, clones).await?,
    };
    let vm = wait_unlocked(api, &spec.node, spec.vmid).await?;
    converge_config(api, spec, fence).await?;
    let resize = if vm.maxdisk < u64::from(spec.disk_gib) << 30 {
        api.resize_disk(&spec.node, spec.vmid, "scsi0", spec.disk_gib)
            .await?
    } else {
        None
    };
    if let Some(upid) = resize {
        wait_task(api, &upid, TASK_TIMEOUT).await?;
    }
    if vm.status == PowerState::Stopped {
        let upid = api.start(&spec.node, spec.vmid).await?;
        wait_task(api, &upid, TASK_TIMEOUT).await?;
    }
    Ok(outcome)
}

fn classify(vm: &VmInfo, spec: &VmSpec, fence: &Fence) -> Result<VmOutcome> {
    let not_ours = |reason: String| Error::NotOurs {
        vmid: vm.vmid,
        owner: vm.name.clone(),
        reason,
    };
    if vm.template {
        return Err(not_ours("it is a template".into()));
    }
    if vm.name != spec.name {
        return Err(not_ours(format!(
            "this cluster expects `{}` there",
            spec.name
        )));
    }
    if vm.has_tag(&fence.tag) {
        return Ok(VmOutcome::Adopted);
    }
    // A clone carries the template's tags until configured; a running VM with our
    // name but not our tag was started by someone else.
    if vm.lock.as_deref() == Some("clone") || vm.status == PowerState::Stopped {
        return Ok(VmOutcome::Resumed);
    }
    Err(not_ours(format!("it runs without the tag `{}`", fence.tag)))
}

async fn create(
    api: &dyn ProxmoxApi,
    spec: &VmSpec,
    fence: &Fence,
    clones: &CloneLimiter,
) -> Result<VmOutcome> {
    let _slot = clones.acquire(&spec.node, spec.template).await;
    let request = CloneRequest {
        newid: spec.vmid,
        name: spec.name.clone(),
        full: spec.full_clone,
        storage: spec.storage.clone().filter(|_| spec.full_clone),
        description: Some(spec.description.clone()),
    };
    let e = match api.clone_vm(&spec.node, spec.template, &request).await {
        Ok(upid) => {
            wait_task(api, &upid, CLONE_TIMEOUT).await?;
            return Ok(VmOutcome::Created);
        }
        Err(e) => e,
    };
    // Without an answer the clone may have happened; "already exists" means someone
    // raced us to the id. Either way, what is there now decides.
    let ambiguous = matches!(&e, Error::NoAnswer { .. })
        || matches!(&e, Error::Api { message, .. } if message.contains("already exists"));
    if !ambiguous {
        return Err(e);
    }
    match api.vm_status(&spec.node, spec.vmid).await? {
        Some(vm) => classify(&vm, spec, fence),
        None => Err(e),
    }
}

/// Polls the VM until it holds no lock; returns its state then.
async fn wait_unlocked(api: &dyn ProxmoxApi, node: &str, vmid: u32) -> Result<VmInfo> {
    let deadline = tokio::time::Instant::now() + UNLOCK_TIMEOUT;
    let mut delay = Duration::from_millis(250);
    loop {
        let lock = match api.vm_status(node, vmid).await {
            Ok(Some(vm)) => match vm.lock.clone() {
                None => return Ok(vm),
                Some(lock) => lock,
            },
            Ok(None) => {
                return Err(Error::Vanished {
                    vmid,
                    during: "Castle waited for its lock".into(),
                });
            }
            Err(e) if e.is_transient() => "unknown".into(),
            Err(e) => return Err(e),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("vm {vmid} to release its `{lock}` lock"),
                waited: UNLOCK_TIMEOUT,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Sends only the config keys that differ from the spec.
async fn converge_config(api: &dyn ProxmoxApi, spec: &VmSpec, fence: &Fence) -> Result<()> {
    let current = api.vm_config(&spec.node, spec.vmid).await?;
    let get = |k: &str| current.get(k).map(String::as_str).unwrap_or_default();
    let mut change = VmConfig::default();

    if get("cores") != spec.cores.to_string() {
        change.cores = Some(spec.cores);
    }
    if get("memory") != spec.memory_mib.to_string() {
        change.memory_mib = Some(spec.memory_mib);
    }
    let mut net = BTreeMap::from([("bridge", spec.bridge.clone())]);
    if let Some(vlan) = spec.vlan {
        net.insert("tag", vlan.to_string());
    }
    let (model, mac, current_net) = parse_net(get("net0"));
    let want_mac = spec.mac.as_deref().map(str::to_ascii_uppercase);
    let mac_differs = want_mac
        .as_deref()
        .is_some_and(|w| !mac.is_some_and(|m| m.eq_ignore_ascii_case(w)));
    if model != "virtio" || current_net != net || mac_differs {
        // Without a MAC of its own the NIC keeps the clone's, and with it DHCP
        // reservations and the guest's interface name.
        let head = want_mac
            .as_deref()
            .or(mac)
            .map_or_else(|| "virtio".to_string(), |m| format!("virtio={m}"));
        let rest: Vec<String> = net.iter().map(|(k, v)| format!("{k}={v}")).collect();
        change.net0 = Some(format!("{head},{}", rest.join(",")));
    }
    let mut ip = vec![format!("ip={}", spec.ip_cidr)];
    if let Some(gw) = &spec.gateway {
        ip.push(format!("gw={gw}"));
    }
    let want_ip: BTreeSet<&str> = ip.iter().map(String::as_str).collect();
    if get("ipconfig0").split(',').collect::<BTreeSet<_>>() != want_ip {
        change.ipconfig0 = Some(ip.join(","));
    }
    let mut tags = vec![fence.tag.clone()];
    for t in &spec.tags {
        if !tags.iter().any(|have| have.eq_ignore_ascii_case(t)) {
            tags.push(t.clone());
        }
    }
    let have_tags: BTreeSet<String> = crate::types::split_tags(get("tags"))
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    if have_tags != tags.iter().map(|t| t.to_ascii_lowercase()).collect() {
        change.tags = Some(tags);
    }
    if get("description").trim_end() != spec.description.trim_end() {
        change.description = Some(spec.description.clone());
    }
    if get("onboot") != "1" {
        change.onboot = Some(true);
    }
    if change.is_empty() {
        return Ok(());
    }
    api.configure(&spec.node, spec.vmid, &change).await
}

/// Splits `virtio=MAC,bridge=vmbr0,tag=5` into model, MAC and the other keys that
/// Castle manages.
fn parse_net(net0: &str) -> (&str, Option<&str>, BTreeMap<&'static str, String>) {
    let mut parts = net0.split(',');
    let first = parts.next().unwrap_or_default();
    let (model, mac) = match first.split_once('=') {
        Some((model, mac)) => (model, Some(mac)),
        None => (first, None),
    };
    let mut keys = BTreeMap::new();
    for part in parts {
        match part.split_once('=') {
            Some(("bridge", v)) => keys.insert("bridge", v.to_string()),
            Some(("tag", v)) => keys.insert("tag", v.to_string()),
            _ => None,
        };
    }
    (model, mac, keys)
}

/// Stops a VM: ACPI shutdown with `deadline`, then a hard stop if it is still up.
///
/// # Errors
/// The first Proxmox error of the hard stop.
pub async fn power_off(
    api: &dyn ProxmoxApi,
    node: &str,
    vmid: u32,
    deadline: Duration,
) -> Result<()> {
    // How the graceful attempt ended does not matter; the VM's state afterwards does.
    if let Ok(upid) = api.shutdown(node, vmid, deadline).await {
        let _graceful = wait_task(api, &upid, deadline + SHUTDOWN_SLACK).await;
    }
    let running = api
        .vm_status(node, vmid)
        .await?
        .is_some_and(|vm| vm.status == PowerState::Running);
    if !running {
        return Ok(());
    }
    let upid = api.stop(node, vmid).await?;
    wait_task(api, &upid, TASK_TIMEOUT).await.map(|_| ())
}

/// Deletes a VM if and only if `fence` says it is Castle's: shutdown with
/// `shutdown_deadline`, then stop, then delete with purge. A VM already gone is
/// success; a VM that is not Castle's is skipped with the reason.
///
/// # Errors
/// The first Proxmox error.
pub async fn destroy_vm(
    api: &dyn ProxmoxApi,
    node: &str,
    vmid: u32,
    fence: &Fence,
    shutdown_deadline: Duration,
) -> Result<DestroyOutcome> {
    if !fence.vmid_range.contains(&vmid) {
        return Ok(DestroyOutcome::Skipped {
            reason: fence.range_text(vmid),
        });
    }
    let Some(vm) = api.vm_status(node, vmid).await? else {
        return Ok(DestroyOutcome::Gone);
    };
    if let Some(reason) = fence.refusal(&vm) {
        return Ok(DestroyOutcome::Skipped { reason });
    }
    let vm = if vm.lock.is_some() {
        match wait_unlocked(api, node, vmid).await {
            Err(Error::Vanished { .. }) => return Ok(DestroyOutcome::Gone),
            other => other?,
        }
    } else {
        vm
    };
    if vm.status == PowerState::Running {
        power_off(api, node, vmid, shutdown_deadline).await?;
    }
    let upid = match api.delete_vm(node, vmid).await {
        Ok(upid) => upid,
        Err(e) if e.is_missing_vm() => return Ok(DestroyOutcome::Gone),
        Err(e) => return Err(e),
    };
    wait_task(api, &upid, TASK_TIMEOUT).await?;
    Ok(DestroyOutcome::Deleted)
}

/// Every VM the fence says is Castle's, for "nothing left" checks.
///
/// # Errors
/// The listing failed.
pub async fn list_owned(api: &dyn ProxmoxApi, fence: &Fence) -> Result<Vec<VmInfo>> {
    Ok(api
        .list_vms()
        .await?
        .into_iter()
        .filter(|vm| fence.owns(vm))
        .collect())
}
