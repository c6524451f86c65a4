//! The idempotent, multi-call operations of the platform step, over any
//! [`ProxmoxApi`]: make a VM exist as specified (adopting what an earlier run left),
//! and delete only what the [`Fence`] says is Castle's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{CloneRequest, Error, PowerState, ProxmoxApi, Result, VmConfig, VmInfo, wait_task};

mod preflight;

pub use preflight::{PlannedVm, Preflight, preflight};

/// A clone of a large disk may take many minutes on slow storage.
const CLONE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Start, stop, resize, delete.
const TASK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a lock left by someone else (an interrupted clone) may take to clear.
const UNLOCK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The shutdown task's own timeout is the deadline; this covers polling it.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(30);

/// A clone Castle was about to start, recorded (in the journal) before the POST:
/// until the clone ends, the new VM has no name, no tag and no config but
/// `lock: clone`, so only this record tells that it is Castle's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneIntent {
    /// The new VM's id.
    pub vmid: u32,
    /// The template it is cloned from.
    pub template: u32,
    /// The name the clone gives it.
    pub name: String,
}

/// Where clone intents are made durable before the clone is sent, and who hears
/// how long a clone waited for its slot.
#[async_trait]
pub trait IntentLog: Send + Sync + std::fmt::Debug {
    /// Records `intent`; returns only once it would survive a crash.
    ///
    /// # Errors
    /// A message saying why it could not be recorded (then nothing is cloned).
    async fn record(&self, intent: &CloneIntent) -> std::result::Result<(), String>;

    /// The clone of `vmid` is about to wait for a slot on `storage`, `held` of
    /// `capacity` being taken.
    fn waiting(&self, _vmid: u32, _storage: &str, _held: usize, _capacity: usize) {}

    /// The clone of `vmid` has its slot on `storage`, after `waited`.
    fn slot(&self, _vmid: u32, _storage: &str, _waited: Duration) {}
}

/// What Castle owns: VMs that carry `tag` and have a VMID inside `vmid_range`,
/// and, inside the range, the half-made clones its journal says it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The ownership tag.
    pub tag: String,
    /// The cluster's own tag (`castle-<cluster>`): a VM carrying `tag` but not this one
    /// belongs to another cluster Castle manages, and is never touched.
    pub identity: Option<String>,
    /// The VMIDs Castle may touch, inclusive.
    pub vmid_range: RangeInclusive<u32>,
    /// Clones recorded before they were sent (by this or an interrupted run).
    pub clones: Vec<CloneIntent>,
}

impl Fence {
    /// A fence from the config's `proxmox.tag` and `proxmox.vmid_range`.
    pub fn new(tag: impl Into<String>, vmid_range: RangeInclusive<u32>) -> Self {
        Self {
            tag: tag.into(),
            identity: None,
            vmid_range,
            clones: Vec::new(),
        }
    }

    /// The same fence, owning only VMs that also carry the cluster's tag `identity`.
    #[must_use]
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// The same fence, also owning the clones an earlier run recorded.
    #[must_use]
    pub fn with_clones(mut self, clones: Vec<CloneIntent>) -> Self {
        self.clones = clones;
        self
    }

    /// The recorded clone for `vmid`, if any.
    pub fn intent(&self, vmid: u32) -> Option<&CloneIntent> {
        self.clones.iter().rev().find(|c| c.vmid == vmid)
    }

    /// Whether `vm` is a clone Castle recorded and the clone has not finished (still
    /// locked `clone`), or finished under the recorded name but is not configured yet.
    fn is_recorded_clone(&self, vm: &VmInfo) -> bool {
        self.intent(vm.vmid).is_some_and(|i| {
            !vm.template && (vm.lock.as_deref() == Some("clone") || vm.name == i.name)
        })
    }

    /// Why `vm` is not Castle's to touch, or `None` when it is.
    pub fn refusal(&self, vm: &VmInfo) -> Option<String> {
        if !self.vmid_range.contains(&vm.vmid) {
            return Some(self.range_text(vm.vmid));
        }
        if vm.template {
            return Some(format!("vm {} `{}` is a template", vm.vmid, vm.name));
        }
        if self.is_recorded_clone(vm) {
            return None;
        }
        if !vm.has_tag(&self.tag) {
            return Some(format!(
                "vm {} `{}` does not carry the tag `{}`",
                vm.vmid, vm.name, self.tag
            ));
        }
        match &self.identity {
            Some(id) if !vm.has_tag(id) => Some(format!(
                "vm {} `{}` carries `{}` but not `{id}`: it belongs to another cluster",
                vm.vmid, vm.name, self.tag
            )),
            _ => None,
        }
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
    /// Disk format of a full clone (`raw`, `qcow2`, `vmdk`).
    pub format: Option<String>,
    /// Resource pool the VM joins; a token whose rights come from that pool needs it.
    pub pool: Option<String>,
    /// Node the clone goes to (the template must be on shared storage); the VM then
    /// lives there. `None`: the template's node.
    pub target: Option<String>,
}

impl VmSpec {
    /// The node the VM lives on.
    pub fn vm_node(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.node)
    }

    fn intent(&self) -> CloneIntent {
        CloneIntent {
            vmid: self.vmid,
            template: self.template,
            name: self.name.clone(),
        }
    }
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

/// Bounds how many clones run at once on one storage of one node. A clone creates
/// its volumes under the storage's lock (pve-storage `vdisk_clone` and
/// `vdisk_alloc` take `cluster_lock_storage`, a file lock
/// `/var/lock/pve-manager/pve-storage-ID` on local storage, a cluster lock on
/// shared storage), which a waiting clone gives up on after 10 s: clones from
/// several templates onto one storage contend, clones onto two storages do not.
/// The template's own config lock is shared while it does not run (qemu-server
/// `clone_vm`: `lock_config_shared`), so it bounds nothing. `Clone` shares the
/// bound; [`with_intent_log`](Self::with_intent_log) gives a copy its own log.
/// It also records each clone's [`CloneIntent`] before the clone is sent, when
/// given an [`IntentLog`].
#[derive(Debug, Clone)]
pub struct CloneLimiter {
    per_storage: usize,
    gates: Arc<Mutex<HashMap<(String, String), Gate>>>,
    log: Option<Arc<dyn IntentLog>>,
}

impl CloneLimiter {
    /// At most `per_storage` (at least 1) clones per storage and node.
    pub fn new(per_storage: usize) -> Self {
        Self {
            per_storage: per_storage.max(1),
            gates: Arc::default(),
            log: None,
        }
    }

    /// How many clones may run at once on one storage.
    pub fn per_storage(&self) -> usize {
        self.per_storage
    }

    /// Records every clone's intent in `log` before sending it, and tells it of
    /// each wait for a slot.
    #[must_use]
    pub fn with_intent_log(mut self, log: Arc<dyn IntentLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Waits for a slot to clone onto `storage` of `node`; the slot frees on drop.
    pub async fn acquire(&self, node: &str, storage: &str) -> OwnedSemaphorePermit {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                gates
                    .entry((node.to_string(), storage.to_string()))
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_storage))),
            )
        };
        loop {
            // The semaphore is never closed, so acquiring only fails if it were.
            if let Ok(permit) = Arc::clone(&gate).acquire_owned().await {
                return permit;
            }
        }
    }

    /// [`acquire`](Self::acquire) for the clone of `vmid`, telling the log how long
    /// it waited.
    async fn slot_for(&self, vmid: u32, node: &str, storage: &str) -> OwnedSemaphorePermit {
        let started = tokio::time::Instant::now();
        if let Some(log) = &self.log {
            let held = {
                let gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
                gates
                    .get(&(node.to_string(), storage.to_string()))
                    .map_or(0, |g| self.per_storage - g.available_permits())
            };
            log.waiting(vmid, storage, held, self.per_storage);
        }
        let permit = self.acquire(node, storage).await;
        if let Some(log) = &self.log {
            log.slot(vmid, storage, started.elapsed());
        }
        permit
    }
}

/// Whether a clone of the template is linked or full, and the storages its
/// volumes are made on (the clone limiter's keys), as [`clone_mode`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneMode {
    /// A full copy instead of a linked clone.
    pub full: bool,
    /// Where the clones' volumes are made: a full clone's target storage, or the
    /// template's disks' storages (a linked clone lives beside its base volumes).
    pub storages: Vec<String>,
    /// Why, in a sentence (`castle plan` and `castle doctor` show it).
    pub why: String,
}

/// Decides, reading only, whether clones of `template` on `node` are linked or
/// full, as qemu-server `clone_vm` would judge them (`src/PVE/API2/Qemu.pm` at
/// e6352be6): only a template has base volumes to link to, and every disk's
/// storage must have pve-storage's `clone` feature for them
/// ([`crate::features`]); otherwise, or with `full_clone`, a full clone (onto
/// `storage` when given).
///
/// # Errors
/// [`Error::Template`] when the template is a plain VM and `full_clone` is not
/// set (Proxmox would refuse the linked clone), or a read that failed.
pub async fn clone_mode(
    api: &dyn ProxmoxApi,
    node: &str,
    template: u32,
    full_clone: bool,
    storage: Option<&str>,
) -> Result<CloneMode> {
    let vm = api
        .vm_status(node, template)
        .await?
        .ok_or_else(|| Error::Template {
            vmid: template,
            reason: format!("there is no VM {template} on node {node} to clone"),
        })?;
    let config = api.vm_config(node, template).await?;
    let disks = template_volumes(&config);
    let mut disk_storages: Vec<String> = Vec::new();
    for (_, sid, _) in &disks {
        if !disk_storages.contains(sid) {
            disk_storages.push(sid.clone());
        }
    }
    let full = |why: String| CloneMode {
        full: true,
        storages: storage.map_or_else(|| disk_storages.clone(), |s| vec![s.to_string()]),
        why,
    };
    if full_clone {
        return Ok(full("full clones: proxmox.full_clone = true".into()));
    }
    if !vm.template {
        return Err(Error::Template {
            vmid: template,
            reason: format!(
                "`{}` is a plain VM: Proxmox makes linked clones only of templates; make it one (`qm template {template}` while it is stopped), or set proxmox.full_clone = true",
                vm.name
            ),
        });
    }
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    for sid in &disk_storages {
        kinds.insert(sid.clone(), api.storage_status(node, sid).await?.kind);
    }
    for (drive, sid, volname) in &disks {
        let kind = kinds.get(sid).map_or("", String::as_str);
        if !crate::features::volume_has_feature(kind, crate::features::Feature::Clone, volname) {
            return Ok(full(format!(
                "full clones: storage {sid} ({kind}) of the template's {drive} cannot make linked clones (pve-storage volume_has_feature 'clone')"
            )));
        }
    }
    let on: Vec<String> = disk_storages
        .iter()
        .map(|sid| format!("{sid} ({})", kinds.get(sid).map_or("", String::as_str)))
        .collect();
    Ok(CloneMode {
        full: false,
        storages: disk_storages,
        why: format!("linked clones on {}", on.join(", ")),
    })
}

/// The template's disks a clone copies or links: (drive, storage, volume name),
/// in key order as qemu-server walks them; cdroms are not cloned, and a cloud-init
/// drive is always copied (never linked), so neither decides.
fn template_volumes(config: &BTreeMap<String, String>) -> Vec<(String, String, String)> {
    config
        .iter()
        .filter(|(k, v)| is_drive_name(k) && !v.contains("media=cdrom") && !v.contains("cloudinit"))
        .filter_map(|(k, v)| {
            crate::features::storage_of(v)
                .map(|(sid, name)| (k.clone(), sid.to_string(), name.to_string()))
        })
        .filter(|(k, _, _)| k != "tpmstate0")
        .collect()
}

/// Makes the VM exist, configured as `spec` says and running. Idempotent:
/// - no VM at `spec.vmid`: clone it (bounded by `clones`, its intent recorded first);
/// - our name and our tag: adopt it;
/// - a clone the fence's recorded intents name (even nameless, locked `clone`), or
///   our name and locked `clone` or stopped without our tag: a clone an earlier run
///   left halfway; wait for its lock and finish it;
/// - anything else at that id: refuse, naming the holder.
///
/// Then only what differs from the spec is changed: config keys (the NIC keeps its
/// MAC and the options Castle does not manage), the boot-order disk grows if
/// smaller, and the VM starts if stopped.
///
/// A token whose rights come from a pool may not read the status of a VMID outside
/// it (403): existence is then asked of `GET /cluster/nextid?vmid=N`, which any
/// token may call.
///
/// # Errors
/// [`Error::Fence`] for a VMID outside the fence, [`Error::NotOurs`] for an id held
/// by something else, [`Error::Template`] for a template without a boot disk, or
/// the first Proxmox error (ask it `is_transient()`; running `ensure_vm` again is
/// always safe).
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
    let node = spec.vm_node();
    let recorded = fence.intent(spec.vmid) == Some(&spec.intent());
    let outcome = match probe(api, node, spec.vmid, recorded).await? {
        Some(vm) => classify(&vm, spec, fence, recorded)?,
        None => create(api, spec, fence, clones).await?,
    };
    let vm = wait_unlocked(api, node, spec.vmid).await?;
    if vm.name != spec.name {
        // The clone ended but the VM is not what was asked for.
        return Err(Error::NotOurs {
            vmid: vm.vmid,
            owner: vm.name,
            reason: format!("this cluster expects `{}` there", spec.name),
        });
    }
    let config = api.vm_config(node, spec.vmid).await?;
    converge_config(api, spec, fence, &config).await?;
    let (disk, size) = boot_disk(&config).ok_or_else(|| no_boot_disk(spec.vmid, &config))?;
    if size < u64::from(spec.disk_gib) << 30
        && let Some(upid) = api
            .resize_disk(node, spec.vmid, &disk, spec.disk_gib)
            .await?
    {
        wait_task(api, &upid, TASK_TIMEOUT).await?;
    }
    if vm.status != PowerState::Running {
        let upid = api.start(node, spec.vmid).await?;
        wait_task(api, &upid, TASK_TIMEOUT).await?;
    }
    Ok(outcome)
}

/// The VM at `vmid`, or `None` when there is none. A 403 (a token whose rights come
/// from a pool, asking about an id outside it) is settled by `nextid?vmid=N`: a free
/// id has no VM; a taken one is hidden from this token, which is an error unless it
/// is a clone this cluster recorded, still running (the clone joins the pool only
/// when it ends): then it waits for the VM to appear.
async fn probe(
    api: &dyn ProxmoxApi,
    node: &str,
    vmid: u32,
    recorded: bool,
) -> Result<Option<VmInfo>> {
    let hidden = match api.vm_status(node, vmid).await {
        Ok(found) => return Ok(found),
        Err(e) if e.is_forbidden() => e,
        Err(e) => return Err(e),
    };
    if api.vmid_free(vmid).await? {
        return Ok(None);
    }
    if !recorded {
        return Err(Error::NotOurs {
            vmid,
            owner: "(hidden from this token)".into(),
            reason: format!(
                "the id is taken and the token may not read it ({hidden}); \
                 give the token VM.Audit on /vms/{vmid} or choose a free id"
            ),
        });
    }
    let deadline = tokio::time::Instant::now() + CLONE_TIMEOUT;
    let mut delay = Duration::from_millis(250);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
        match api.vm_status(node, vmid).await {
            Ok(found) => return Ok(found),
            Err(e) if e.is_forbidden() || e.is_transient() => {
                if api.vmid_free(vmid).await? {
                    // The recorded clone failed and Proxmox removed it.
                    return Ok(None);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("the recorded clone {vmid} to finish and join the pool"),
                        waited: CLONE_TIMEOUT,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn classify(vm: &VmInfo, spec: &VmSpec, fence: &Fence, recorded: bool) -> Result<VmOutcome> {
    let not_ours = |reason: String| Error::NotOurs {
        vmid: vm.vmid,
        owner: vm.name.clone(),
        reason,
    };
    if vm.template {
        return Err(not_ours("it is a template".into()));
    }
    let cloning = vm.lock.as_deref() == Some("clone");
    // Until its first disk is copied a clone has no name (status says `VM N`):
    // only the recorded intent tells it is ours. Its name is checked once it ends.
    if recorded && cloning {
        return Ok(VmOutcome::Resumed);
    }
    if vm.name != spec.name {
        let hint = if cloning {
            "; it is a clone in progress that this cluster's journal does not record".into()
        } else if vm.has_tag(&fence.tag) {
            fence
                .refusal(vm)
                .map(|why| format!("; {why}"))
                .unwrap_or_default()
        } else {
            String::new()
        };
        return Err(not_ours(format!(
            "this cluster expects `{}` there{hint}",
            spec.name
        )));
    }
    if vm.has_tag(&fence.tag) {
        // The same rule as destroy's: Castle's tag and this cluster's own.
        return match fence.refusal(vm) {
            None => Ok(VmOutcome::Adopted),
            Some(why) => Err(not_ours(why)),
        };
    }
    // A clone carries the template's tags until configured; a running VM with our
    // name but not our tag was started by someone else.
    if recorded || cloning || vm.status == PowerState::Stopped {
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
    // A template without a boot disk would give a VM Castle cannot size: refuse
    // before cloning anything.
    let template = api.vm_config(&spec.node, spec.template).await?;
    let Some((boot, _)) = boot_disk(&template) else {
        return Err(no_boot_disk(spec.template, &template));
    };
    let request = CloneRequest {
        newid: spec.vmid,
        name: spec.name.clone(),
        full: spec.full_clone,
        storage: spec.storage.clone().filter(|_| spec.full_clone),
        format: spec.format.clone().filter(|_| spec.full_clone),
        description: Some(spec.description.clone()),
        pool: spec.pool.clone(),
        target: spec.target.clone(),
    };
    request.check()?;
    // The storage the new volumes are made on, whose lock the clone takes.
    let storage = request
        .storage
        .clone()
        .or_else(|| {
            template
                .get(&boot)
                .and_then(|v| crate::features::storage_of(v))
                .map(|(sid, _)| sid.to_string())
        })
        .unwrap_or_default();
    let _slot = clones.slot_for(spec.vmid, &spec.node, &storage).await;
    if let Some(log) = &clones.log {
        log.record(&spec.intent()).await.map_err(|reason| {
            Error::Setup(format!("recording the clone of vm {}: {reason}", spec.vmid))
        })?;
    }
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
    // Only a clone this call may have started counts as recorded.
    let recorded = matches!(&e, Error::NoAnswer { .. });
    match probe(api, spec.vm_node(), spec.vmid, recorded).await? {
        Some(vm) => classify(&vm, spec, fence, recorded),
        None => Err(e),
    }
}

/// The first disk of the boot order that holds a volume, and its size in bytes:
/// the disk Proxmox reports as `maxdisk` (qemu-server `Drive::bootdisk_size`).
/// `boot: order=a;b;c` lists devices; the legacy form (`boot: cdn`, or no `boot`)
/// names the disk in `bootdisk`.
pub fn boot_disk(config: &BTreeMap<String, String>) -> Option<(String, u64)> {
    let boot = config.get("boot").map(String::as_str).unwrap_or_default();
    let order: Vec<&str> = match boot
        .split(',')
        .find_map(|part| part.trim().strip_prefix("order="))
    {
        Some(list) => list
            .split([';', ',', ' '])
            .filter(|d| !d.is_empty())
            .collect(),
        None => config
            .get("bootdisk")
            .map(String::as_str)
            .into_iter()
            .collect(),
    };
    order.into_iter().find_map(|name| {
        if !is_drive_name(name) {
            return None;
        }
        let drive = config.get(name)?;
        let mut parts = drive.split(',');
        let volume = parts.next().unwrap_or_default();
        let volume = volume.strip_prefix("file=").unwrap_or(volume);
        let mut size = None;
        for part in parts {
            match part.split_once('=') {
                Some(("media", "cdrom")) => return None,
                Some(("size", v)) => size = parse_size(v),
                _ => {}
            }
        }
        if volume.is_empty() || volume == "none" || volume == "cdrom" {
            return None;
        }
        Some((name.to_string(), size.unwrap_or(0)))
    })
}

/// `ide0-3`, `sata0-5`, `scsi0-30`, `virtio0-15`, `efidisk0`, `tpmstate0`.
fn is_drive_name(name: &str) -> bool {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let Ok(index) = name[stem.len()..].parse::<u32>() else {
        return false;
    };
    match stem {
        "ide" => index <= 3,
        "sata" => index <= 5,
        "scsi" => index <= 30,
        "virtio" => index <= 15,
        "efidisk" | "tpmstate" => index == 0,
        _ => false,
    }
}

/// `32G`, `10240M`, `1T`, `512K` or bytes (qemu-server writes whole numbers, but
/// accepts fractions such as `1.5G`).
fn parse_size(v: &str) -> Option<u64> {
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    // Rounded to the byte: disk sizes are far below 2^53.
    Some((n * (1u64 << shift) as f64).round() as u64)
}

fn no_boot_disk(vmid: u32, config: &BTreeMap<String, String>) -> Error {
    let boot = config.get("boot").map_or("(none)", String::as_str);
    Error::Template {
        vmid,
        reason: format!(
            "no disk with a volume in its boot order (`boot: {boot}`); set one on the template, \
             e.g. `qm set {vmid} --boot order=scsi0`"
        ),
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
async fn converge_config(
    api: &dyn ProxmoxApi,
    spec: &VmSpec,
    fence: &Fence,
    current: &BTreeMap<String, String>,
) -> Result<()> {
    let change = config_change(spec, fence, current);
    if change.is_empty() {
        return Ok(());
    }
    api.configure(spec.vm_node(), spec.vmid, &change).await
}

/// The keys of `current` that differ from what `spec` wants, with their new values.
fn config_change(spec: &VmSpec, fence: &Fence, current: &BTreeMap<String, String>) -> VmConfig {
    let get = |k: &str| current.get(k).map(String::as_str).unwrap_or_default();
    let mut change = VmConfig::default();

    if get("cores") != spec.cores.to_string() {
        change.cores = Some(spec.cores);
    }
    if get("memory") != spec.memory_mib.to_string() {
        change.memory_mib = Some(spec.memory_mib);
    }
    if let Some(net0) = converge_net(get("net0"), spec) {
        change.net0 = Some(net0);
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
    change
}

/// The `net0` to send, or `None` when it already matches. Castle manages the model
/// (`virtio`), `bridge`, `tag` and, when the spec names one, the MAC (Talos selects
/// the node's link by it); otherwise the clone's MAC (DHCP reservations, the guest's
/// interface name) and every other option (`firewall`, `mtu`, `queues`, `rate`, ...)
/// stay.
fn converge_net(net0: &str, spec: &VmSpec) -> Option<String> {
    let mut parts = net0.split(',').filter(|p| !p.is_empty());
    let first = parts.next().unwrap_or_default();
    let (model, mac) = match first.split_once('=') {
        Some((model, mac)) => (model, Some(mac)),
        None => (first, None),
    };
    let mut bridge = None;
    let mut tag = None;
    let mut others = Vec::new();
    for part in parts {
        match part.split_once('=') {
            Some(("bridge", v)) => bridge = Some(v),
            Some(("tag", v)) => tag = Some(v),
            _ => others.push(part),
        }
    }
    let want_tag = spec.vlan.map(|v| v.to_string());
    // Proxmox keeps MACs upper-case (qemu-server's `mac-addr` format); compare without case.
    let want_mac = spec.mac.as_deref().map(str::to_ascii_uppercase);
    let mac_ok = want_mac
        .as_deref()
        .is_none_or(|w| mac.is_some_and(|m| m.eq_ignore_ascii_case(w)));
    if model == "virtio"
        && bridge == Some(spec.bridge.as_str())
        && tag == want_tag.as_deref()
        && mac_ok
    {
        return None;
    }
    let mac = want_mac.as_deref().or(mac);
    let mut out = vec![mac.map_or_else(|| "virtio".to_string(), |m| format!("virtio={m}"))];
    out.push(format!("bridge={}", spec.bridge));
    if let Some(t) = want_tag {
        out.push(format!("tag={t}"));
    }
    out.extend(others.into_iter().map(str::to_string));
    Some(out.join(","))
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
    let found = match probe(api, node, vmid, fence.intent(vmid).is_some()).await {
        Ok(found) => found,
        Err(Error::NotOurs { reason, .. }) => return Ok(DestroyOutcome::Skipped { reason }),
        Err(e) => return Err(e),
    };
    let Some(vm) = found else {
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
    // A recorded clone counted as ours while nameless; once it ends it must carry
    // the recorded name (or our tag).
    if let Some(reason) = fence.refusal(&vm) {
        return Ok(DestroyOutcome::Skipped { reason });
    }
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

/// The privileges Castle's API token needs, one line per ACL path, as qemu-server
/// checks them (the table [`preflight`] checks against the server). With `pool`,
/// the VM privileges sit on the pool and reach its members; `GET /cluster/nextid`
/// needs none.
pub fn required_privileges(
    template: u32,
    vmid_range: &RangeInclusive<u32>,
    pool: Option<&str>,
    storage: Option<&str>,
    bridge: &str,
) -> Vec<String> {
    let list = |privileges: &[(&str, &str)]| {
        privileges
            .iter()
            .map(|(privilege, _)| *privilege)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let vm = list(preflight::VM_PRIVILEGES);
    let vms = match pool {
        Some(pool) => format!("/pool/{pool}: {vm} (clones join the pool)"),
        None => format!(
            "/vms/{}..{} (each id): {vm}",
            vmid_range.start(),
            vmid_range.end()
        ),
    };
    vec![
        format!(
            "/vms/{template}: {} (the template)",
            list(preflight::TEMPLATE_PRIVILEGES)
        ),
        vms,
        format!(
            "/storage/{}: {} (clones and disk resizes)",
            storage.unwrap_or("<the template's storage>"),
            preflight::STORAGE_PRIVILEGE.0
        ),
        format!(
            "/sdn/zones/localnetwork/{bridge}: {} (the NIC's bridge, PVE 8+)",
            preflight::BRIDGE_PRIVILEGE
        ),
    ]
}

/// What [`ensure_vm`] would do to one VM, found by reading only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum VmPlan {
    /// No VM has the id: clone the template.
    Clone,
    /// The VM is this cluster's: these fields change (none: it is left alone).
    Adopt {
        /// `field: old -> new`, in Proxmox's key names.
        changes: Vec<FieldChange>,
    },
    /// Someone else's VM holds the id: `create` stops there.
    Foreign {
        /// Why it is not ours.
        reason: String,
    },
}

/// One field a plan changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Proxmox's key (`memory`, `net0`, `scsi0`, `status`).
    pub field: String,
    /// What it is now (empty when unset).
    pub from: String,
    /// What it becomes.
    pub to: String,
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = if self.from.is_empty() {
            "(unset)"
        } else {
            &self.from
        };
        write!(f, "{}: {from} -> {}", self.field, self.to)
    }
}

/// Plans one VM as [`ensure_vm`] would converge it: clone, adopt with the fields
/// that change (config keys, a disk grown, a start), or refuse a foreign VM.
/// Reads only.
///
/// # Errors
/// A read that failed.
pub async fn plan_vm(api: &dyn ProxmoxApi, spec: &VmSpec, fence: &Fence) -> Result<VmPlan> {
    if !fence.vmid_range.contains(&spec.vmid) {
        return Ok(VmPlan::Foreign {
            reason: fence.range_text(spec.vmid),
        });
    }
    let node = spec.vm_node();
    let recorded = fence.intent(spec.vmid) == Some(&spec.intent());
    let vm = match api.vm_status(node, spec.vmid).await {
        Ok(Some(vm)) => vm,
        Ok(None) => return Ok(VmPlan::Clone),
        Err(e) if e.is_forbidden() => {
            if api.vmid_free(spec.vmid).await? {
                return Ok(VmPlan::Clone);
            }
            return Ok(VmPlan::Foreign {
                reason: format!("the id is taken and the token may not read it ({e})"),
            });
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = classify(&vm, spec, fence, recorded) {
        return Ok(VmPlan::Foreign {
            reason: e.to_string(),
        });
    }
    let current = api.vm_config(node, spec.vmid).await?;
    let get = |k: &str| current.get(k).cloned().unwrap_or_default();
    let mut changes: Vec<FieldChange> = config_change(spec, fence, &current)
        .params()
        .into_iter()
        .map(|(field, to)| FieldChange {
            from: get(&field),
            field,
            to,
        })
        .collect();
    if let Some((disk, size)) = boot_disk(&current)
        && size < u64::from(spec.disk_gib) << 30
    {
        changes.push(FieldChange {
            field: disk,
            from: format!("{}G", size >> 30),
            to: format!("{}G", spec.disk_gib),
        });
    }
    if vm.status != PowerState::Running {
        changes.push(FieldChange {
            field: "status".into(),
            from: format!("{:?}", vm.status).to_lowercase(),
            to: "running".into(),
        });
    }
    Ok(VmPlan::Adopt { changes })
}
