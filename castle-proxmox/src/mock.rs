//! A stateful Proxmox VE node that refuses what the real one refuses: templates,
//! VMs, config locks, tasks that take modelled time, storage lock contention, and
//! linked clones only where pve-storage allows them ([`crate::features`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
pub use castle_sim::Faults;
use castle_sim::{Fault, FaultInjector, Scale};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::types::split_tags;
use crate::{
    CloneRequest, Error, NodeInfo, NodeStatus, PowerState, ProxmoxApi, PveVersion, Result,
    StorageStatus, TaskExit, TaskStatus, Upid, VmConfig, VmInfo,
};

/// Modelled durations in seconds, multiplied by `scale` (0 = instant).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Any API call's round trip.
    pub call: f64,
    /// A synchronous config change.
    pub config: f64,
    /// A disk resize task.
    pub resize: f64,
    /// A linked clone task.
    pub linked_clone: f64,
    /// A full clone task.
    pub full_clone: f64,
    /// How long a clone holds its storage's lock while it creates its volume
    /// (pve-storage `vdisk_clone` / `vdisk_alloc` under `cluster_lock_storage`); a
    /// clone that cannot have the lock within 10 s fails (pve-common
    /// `lock_file_full`'s default timeout).
    pub storage_lock: f64,
    /// A start task.
    pub start: f64,
    /// A guest's ACPI shutdown.
    pub shutdown: f64,
    /// A hard stop.
    pub stop: f64,
    /// A delete-with-purge task.
    pub delete: f64,
    /// Real seconds per modelled second.
    pub scale: Scale,
}

impl Latency {
    /// Everything takes no time (unit tests).
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            config: 0.0,
            resize: 0.0,
            linked_clone: 0.0,
            full_clone: 0.0,
            storage_lock: 0.0,
            start: 0.0,
            shutdown: 0.0,
            stop: 0.0,
            delete: 0.0,
            scale: Scale::INSTANT,
        }
    }

    /// Calibrated on the reference setup, whose platform layer took about two
    /// minutes for two VMs through Terraform: a linked clone 8-20 s (12 here), a
    /// full clone ~40 s, start ~5 s, a config change ~1 s, delete ~5 s; of a
    /// clone, 1 s under its storage's lock (an `lvcreate` of the new volume).
    pub fn lab() -> Self {
        Self {
            call: 0.05,
            config: 1.0,
            resize: 1.0,
            linked_clone: 12.0,
            full_clone: 40.0,
            storage_lock: 1.0,
            start: 5.0,
            shutdown: 6.0,
            stop: 2.0,
            delete: 5.0,
            scale: Scale::REAL,
        }
    }

    /// The same model on another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = Scale(scale);
        self
    }
}

/// How the modelled server writes an error answer (pve-http-server).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerProfile {
    /// libpve-http-server-perl 5.2.0 and later: the text in the body's `message`
    /// and, first line only, in the reason phrase.
    #[default]
    Current,
    /// Before 5.2.0 (PVE 7.x, unpatched 8.0-8.3): body `{"data":null}`, the text's
    /// first line only in the reason phrase.
    Older,
}

/// The operation names [`MockProxmox::fail_permanently`] accepts: the
/// [`ProxmoxApi`] method names.
pub const OPS: [&str; 14] = [
    "list_vms",
    "vm_status",
    "vm_config",
    "clone_vm",
    "configure",
    "resize_disk",
    "start",
    "shutdown",
    "stop",
    "delete_vm",
    "next_id",
    "vmid_free",
    "task_status",
    "task_log",
];

/// Keys `PUT .../config` accepts (from the PVE API schema; `[n]` = any index).
#[rustfmt::skip]
const CONFIG_KEYS: &[&str] = &[
    "acpi",
    "affinity",
    "agent",
    "allow-ksm",
    "amd-sev",
    "arch",
    "args",
    "audio0",
    "autostart",
    "balloon",
    "bios",
    "boot",
    "bootdisk",
    "cdrom",
    "cicustom",
    "cipassword",
    "citype",
    "ciupgrade",
    "ciuser",
    "cores",
    "cpu",
    "cpulimit",
    "cpuunits",
    "delete",
    "description",
    "digest",
    "efidisk0",
    "force",
    "freeze",
    "hookscript",
    "hostpci[n]",
    "hotplug",
    "hugepages",
    "ide[n]",
    "intel-tdx",
    "ipconfig[n]",
    "ivshmem",
    "keephugepages",
    "keyboard",
    "kvm",
    "localtime",
    "lock",
    "machine",
    "memory",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "nameserver",
    "net[n]",
    "numa",
    "numa[n]",
    "onboot",
    "ostype",
    "parallel[n]",
    "protection",
    "reboot",
    "revert",
    "rng0",
    "sata[n]",
    "scsi[n]",
    "scsihw",
    "searchdomain",
    "serial[n]",
    "shares",
    "skiplock",
    "smbios1",
    "smp",
    "sockets",
    "spice_enhancements",
    "sshkeys",
    "startdate",
    "startup",
    "tablet",
    "tags",
    "tdf",
    "template",
    "tpmstate0",
    "unused[n]",
    "usb[n]",
    "vcpus",
    "vga",
    "virtio[n]",
    "virtiofs[n]",
    "vmgenid",
    "vmstatestorage",
    "watchdog",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MockVm {
    node: String,
    name: String,
    template: bool,
    running: bool,
    lock: Option<String>,
    /// Config keys as the server stores them (`tags` `;`-joined, `net0` with MAC),
    /// disks and the boot order included.
    config: BTreeMap<String, String>,
    /// Disk sizes in GiB by drive name (`scsi0`, `virtio0`, ...).
    disks: BTreeMap<String, u32>,
    /// The template whose base disk a linked clone uses.
    linked_from: Option<u32>,
    /// The storage its disks live on.
    #[serde(default = "disk_storage")]
    storage: String,
    /// A hung guest that ignores ACPI power-off.
    ignores_shutdown: bool,
    /// While a clone copies its first disk, qemu-server has written only
    /// `lock: clone` (API2/Qemu.pm clone_vm, "qmclone temporary file"); this is
    /// the config it writes after the first disk.
    staged: Option<Staged>,
    /// The resource pool it belongs to.
    pool: Option<String>,
    /// The pool a running clone joins when it ends (`add_vm_to_pool` is its last act).
    joins_pool: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Staged {
    name: String,
    config: BTreeMap<String, String>,
}

/// Where a VM's disks live unless it was put elsewhere.
const DISK_STORAGE: &str = "local-lvm";

fn disk_storage() -> String {
    DISK_STORAGE.to_string()
}

/// pve-common `PVE::Tools::lock_file_full`: `$timeout = 10 if !$timeout`, and
/// `cluster_lock_storage` passes none.
const STORAGE_LOCK_TIMEOUT: f64 = 10.0;

/// A storage of the modelled cluster (storage.cfg plus what it holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MockStorage {
    /// Storage type.
    kind: String,
    /// Content types it accepts.
    content: Vec<String>,
    /// Size in GiB.
    total_gib: u64,
    /// GiB taken by what the mock does not model (ISOs, other guests).
    other_gib: u64,
    /// Not disabled in storage.cfg.
    enabled: bool,
    /// Reachable (a disconnected NFS server makes it inactive).
    active: bool,
}

/// A fresh node's storages: LVM-thin `local-lvm` for disks, directory `local`.
fn default_storages() -> BTreeMap<String, MockStorage> {
    let storage = |kind: &str, content: &[&str], total_gib, other_gib| MockStorage {
        kind: kind.into(),
        content: content.iter().map(|c| (*c).to_string()).collect(),
        total_gib,
        other_gib,
        enabled: true,
        active: true,
    };
    BTreeMap::from([
        (
            DISK_STORAGE.to_string(),
            storage("lvmthin", &["images", "rootdir"], 512, 0),
        ),
        (
            "local".to_string(),
            storage("dir", &["backup", "iso", "vztmpl"], 100, 8),
        ),
    ])
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum Effect {
    Clone {
        source: u32,
        /// The clone could not have its storage's lock in time: the task fails and
        /// qemu-server removes what it made.
        #[serde(default)]
        lock_timeout: bool,
    },
    Resize,
    Start,
    /// `completes` is false for a guest that ignores ACPI or outlasts the timeout.
    Shutdown {
        completes: bool,
    },
    Stop,
    Destroy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MockTask {
    upid: String,
    vmid: u32,
    effect: Effect,
    /// `None` while running.
    exit: Option<String>,
    log: Vec<String>,
    /// Only meaningful in a snapshot: how long the task still had to run.
    remaining_ms: u64,
    #[serde(skip, default = "Instant::now")]
    ends_at: Instant,
    /// A clone: when its first disk is copied and the VM gets its name and config.
    #[serde(default)]
    named_remaining_ms: u64,
    #[serde(skip, default = "Instant::now")]
    named_at: Instant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct World {
    nodes: Vec<String>,
    vms: BTreeMap<u32, MockVm>,
    tasks: Vec<MockTask>,
    seq: u64,
    /// Resource pools that exist.
    #[serde(default)]
    pools: Vec<String>,
    /// Whether the template's storage is shared (a clone may then target another node).
    #[serde(default)]
    shared_storage: bool,
    /// sha256 of the one API token the server knows, once set.
    #[serde(default)]
    token: Option<String>,
    /// Cluster members that are down: `GET /nodes` says `offline`, calls
    /// proxied to them fail.
    #[serde(default)]
    offline_nodes: BTreeSet<String>,
    /// The storages by id.
    #[serde(default = "default_storages")]
    storages: BTreeMap<String, MockStorage>,
    /// When each storage's lock is free again (the clones that hold it, one after
    /// the other); a restored world starts with free locks.
    #[serde(skip)]
    storage_locks: BTreeMap<String, Instant>,
}

#[derive(Debug)]
struct Inner {
    world: World,
    latency: Latency,
    /// A transient fault is a `503 Service Unavailable` before any effect.
    faults: FaultInjector,
    calls: BTreeMap<&'static str, u64>,
    profile: ServerProfile,
    /// The token's rights come only from this pool (PVEVMAdmin on /pool/NAME).
    token_pool: Option<String>,
    /// Privileges taken from the token, by ACL path (see
    /// [`MockProxmox::revoke_privilege`]).
    revoked: BTreeSet<(String, String)>,
}

/// A stateful, strict Proxmox VE. `Clone` shares the same world.
///
/// Modelled rules: a clone to a taken id fails "VM N already exists"; a clone
/// holds its storage's lock while it creates its volume, and one that waits more
/// than 10 s for it fails its task with the transient "can't lock file
/// '/var/lock/pve-manager/pve-storage-ID' - got timeout"; a linked clone needs a
/// storage that can link the source's volumes (a template's, on lvmthin, zfs, rbd,
/// btrfs or a file storage, not plain LVM or iSCSI) and takes no `storage` or
/// `format`; a new clone is locked `clone` until its task ends; a
/// locked VM refuses changes; a running task holds the VM's config lock; a template
/// cannot be started; a running VM cannot be deleted; a template with linked
/// clones cannot be deleted; a disk cannot shrink; config keys outside the schema
/// and malformed values are refused with a 400 naming the parameter; a
/// delete-protected VM cannot be deleted; a new clone is nameless (`VM N`, config
/// `lock: clone` only, `unknown` in the cluster listing) until its first disk is
/// copied; a pool-scoped token sees and changes only its pool's VMs. Every call
/// checks the token's privileges as qemu-server does (per config key, storage
/// space for clones and resizes, `SDN.Use` on bridges from PVE 8), computed from
/// its ACL as pve-access-control does (inheritance, pool roles); a node can be
/// offline, a storage full, disabled or unknown. Errors are written as the chosen
/// [`ServerProfile`] writes them and read back by the same code the HTTP client
/// uses.
#[derive(Debug, Clone)]
pub struct MockProxmox {
    inner: Arc<Mutex<Inner>>,
    /// sha256 of the `USER@REALM!TOKENID=SECRET` this handle presents; `None`: a
    /// handle for tests that do not model tokens.
    presented: Option<String>,
}

impl Default for MockProxmox {
    fn default() -> Self {
        Self::new()
    }
}

fn token_digest(token_id: &str, secret: &secrecy::SecretString) -> String {
    use secrecy::ExposeSecret as _;
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(
        format!("{token_id}={}", secret.expose_secret()).as_bytes(),
    ))
}

fn api(method: &'static str, path: &str, status: u16, message: impl Into<String>) -> Error {
    Error::Api {
        method,
        path: path.to_string(),
        status,
        message: message.into(),
        params: BTreeMap::new(),
    }
}

fn bad_param(method: &'static str, path: &str, param: &str, message: impl Into<String>) -> Error {
    Error::Api {
        method,
        path: path.to_string(),
        status: 400,
        message: "Parameter verification failed.".into(),
        params: [(param.to_string(), message.into())].into(),
    }
}

fn lock_timeout(method: &'static str, path: &str, vmid: u32) -> Error {
    api(
        method,
        path,
        500,
        format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"),
    )
}

fn missing(method: &'static str, path: &str, node: &str, vmid: u32) -> Error {
    api(
        method,
        path,
        500,
        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
    )
}

impl MockProxmox {
    /// One node, `pve`, with nothing on it but its storages: `local-lvm`
    /// (lvmthin, VM disks) and `local` (dir, ISOs and backups).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                world: World {
                    nodes: vec!["pve".into()],
                    vms: BTreeMap::new(),
                    tasks: Vec::new(),
                    seq: 0,
                    pools: Vec::new(),
                    shared_storage: false,
                    token: None,
                    offline_nodes: BTreeSet::new(),
                    storages: default_storages(),
                    storage_locks: BTreeMap::new(),
                },
                latency: Latency::instant(),
                faults: FaultInjector::default(),
                calls: BTreeMap::new(),
                profile: ServerProfile::Current,
                token_pool: None,
                revoked: BTreeSet::new(),
            })),
            presented: None,
        }
    }

    /// The server knows exactly the API token `token_id` with `secret` from now on:
    /// a handle from [`with_presented_token`](Self::with_presented_token) must
    /// present it.
    pub fn set_api_token(&self, token_id: &str, secret: &secrecy::SecretString) {
        self.lock().world.token = Some(token_digest(token_id, secret));
    }

    /// The same server, called with `PVEAPIToken=token_id=secret`.
    pub fn with_presented_token(&self, token_id: &str, secret: &secrecy::SecretString) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            presented: Some(token_digest(token_id, secret)),
        }
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(self, latency: Latency) -> Self {
        self.lock().latency = latency;
        self
    }

    /// Sets the transient fault model (and reseeds its generator).
    #[must_use]
    pub fn with_faults(self, faults: Faults) -> Self {
        self.lock().faults.set(faults);
        self
    }

    /// How the server writes errors: [`ServerProfile::Older`] puts the text only
    /// in the reason phrase.
    #[must_use]
    pub fn with_profile(self, profile: ServerProfile) -> Self {
        self.lock().profile = profile;
        self
    }

    /// The API token's rights come only from `pool` (created if needed): it sees
    /// and changes only the pool's VMs, gets 403 on any other VMID (existing or
    /// not), and may clone only into the pool.
    #[must_use]
    pub fn with_pool_scoped_token(self, pool: &str) -> Self {
        {
            let mut inner = self.lock();
            if !inner.world.pools.iter().any(|p| p == pool) {
                inner.world.pools.push(pool.to_string());
            }
            inner.token_pool = Some(pool.to_string());
        }
        self
    }

    /// Adds another cluster node, and makes the template storage shared so that
    /// clones may target it.
    #[must_use]
    pub fn with_node(self, node: &str) -> Self {
        {
            let mut inner = self.lock();
            inner.world.nodes.push(node.to_string());
            inner.world.shared_storage = true;
        }
        self
    }

    /// Puts an existing VM or template into a pool (creating the pool).
    ///
    /// # Errors
    /// No such VM.
    pub fn add_to_pool(&self, vmid: u32, pool: &str) -> Result<()> {
        let mut inner = self.lock();
        let w = &mut inner.world;
        if !w.pools.iter().any(|p| p == pool) {
            w.pools.push(pool.to_string());
        }
        let node = w.nodes.first().cloned().unwrap_or_default();
        let vm = w
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| missing("POST", "/mock", &node, vmid))?;
        vm.pool = Some(pool.to_string());
        Ok(())
    }

    /// Sets or clears a VM's delete protection (`protection: 1`).
    ///
    /// # Errors
    /// No such VM.
    pub fn set_protection(&self, vmid: u32, on: bool) -> Result<()> {
        let mut inner = self.lock();
        let node = inner.world.nodes.first().cloned().unwrap_or_default();
        let vm = inner
            .world
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| missing("POST", "/mock", &node, vmid))?;
        if on {
            vm.config.insert("protection".into(), "1".into());
        } else {
            vm.config.remove("protection");
        }
        Ok(())
    }

    /// Sets a config key of a VM or template directly, as an admin would with
    /// `qm set` (e.g. `net0` options, `boot`).
    ///
    /// # Errors
    /// No such VM.
    pub fn set_config(&self, vmid: u32, key: &str, value: &str) -> Result<()> {
        let mut inner = self.lock();
        let node = inner.world.nodes.first().cloned().unwrap_or_default();
        let vm = inner
            .world
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| missing("POST", "/mock", &node, vmid))?;
        vm.config.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Every later call of `op` (one of [`OPS`]) fails with a 403 and `message`.
    ///
    /// # Errors
    /// [`Error::Setup`] when `op` is not an operation name.
    pub fn fail_permanently(&self, op: &str, message: &str) -> Result<()> {
        castle_sim::check_op(&OPS, op).map_err(|e| Error::Setup(format!("mock: {e}")))?;
        self.lock().faults.fail_permanently(op, message.to_string());
        Ok(())
    }

    /// Removes transient and permanent faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Adds a template (stopped, `template: 1`) with a Talos-like config.
    ///
    /// # Errors
    /// The id is taken.
    pub fn add_template(&self, vmid: u32, name: &str, disk_gib: u32) -> Result<()> {
        self.add_template_with_disks(
            vmid,
            name,
            &[("scsi0", disk_gib)],
            Some("order=scsi0;ide2;net0"),
        )
    }

    /// Adds a template with these disks (drive name, GiB) and `boot` value (`None`:
    /// no `boot` key, the legacy default).
    ///
    /// # Errors
    /// The id is taken.
    pub fn add_template_with_disks(
        &self,
        vmid: u32,
        name: &str,
        disks: &[(&str, u32)],
        boot: Option<&str>,
    ) -> Result<()> {
        self.insert(vmid, name, true, false, &[], disks, boot)
    }

    /// Adds a template whose disk lives on `storage` (one [`add_storage`](Self::add_storage)
    /// made, or a default one).
    ///
    /// # Errors
    /// The id is taken, or there is no such storage.
    pub fn add_template_on(
        &self,
        vmid: u32,
        name: &str,
        disk_gib: u32,
        storage: &str,
    ) -> Result<()> {
        self.add_template(vmid, name, disk_gib)?;
        self.move_disks(vmid, storage)
    }

    /// Puts a VM's (or template's) disks on `storage`, as `qm disk move` would.
    ///
    /// # Errors
    /// No such VM or storage.
    pub fn move_disks(&self, vmid: u32, storage: &str) -> Result<()> {
        let mut inner = self.lock();
        let w = &mut inner.world;
        if !w.storages.contains_key(storage) {
            return Err(Error::Setup(format!("mock: no storage `{storage}`")));
        }
        let node = w.nodes.first().cloned().unwrap_or_default();
        let vm = w
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| missing("POST", "/mock", &node, vmid))?;
        vm.storage = storage.to_string();
        Ok(())
    }

    /// Adds an ordinary VM, e.g. someone else's that Castle must not touch.
    ///
    /// # Errors
    /// The id is taken.
    pub fn add_vm(&self, vmid: u32, name: &str, tags: &[&str], running: bool) -> Result<()> {
        self.insert(
            vmid,
            name,
            false,
            running,
            tags,
            &[("scsi0", 8)],
            Some("order=scsi0;ide2;net0"),
        )
    }

    /// Makes a VM's guest ignore ACPI shutdown, as a hung guest does.
    ///
    /// # Errors
    /// No such VM.
    pub fn set_ignores_shutdown(&self, vmid: u32, ignores: bool) -> Result<()> {
        let mut inner = self.lock();
        let node = inner.world.nodes.first().cloned().unwrap_or_default();
        let vm = inner
            .world
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| missing("POST", "/mock", &node, vmid))?;
        vm.ignores_shutdown = ignores;
        Ok(())
    }

    /// How many times `op` was called (faulted calls included).
    pub fn calls(&self, op: &str) -> u64 {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// The world as JSON for the lab's state file: VMs, their configs, and tasks
    /// with the time they still had to run.
    pub fn snapshot(&self) -> Value {
        let inner = self.lock();
        let now = Instant::now();
        let mut world = inner.world.clone();
        for t in &mut world.tasks {
            let left = t.ends_at.saturating_duration_since(now).as_millis();
            t.remaining_ms = u64::try_from(left).unwrap_or(u64::MAX);
            let named = t.named_at.saturating_duration_since(now).as_millis();
            t.named_remaining_ms = u64::try_from(named).unwrap_or(u64::MAX);
        }
        serde_json::to_value(&world).unwrap_or(Value::Null)
    }

    /// Replaces the world with a [`MockProxmox::snapshot`]; running tasks resume
    /// with the time they had left.
    ///
    /// # Errors
    /// [`Error::Decode`] when `snapshot` is not one.
    pub fn restore(&self, snapshot: &Value) -> Result<()> {
        let mut world: World =
            serde_json::from_value(snapshot.clone()).map_err(|e| Error::Decode {
                path: "mock snapshot".into(),
                reason: e.to_string(),
            })?;
        let now = Instant::now();
        for t in &mut world.tasks {
            t.ends_at = now + Duration::from_millis(t.remaining_ms);
            t.named_at = now + Duration::from_millis(t.named_remaining_ms);
        }
        self.lock().world = world;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere leaves the world consistent: every change is one step.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(
        &self,
        vmid: u32,
        name: &str,
        template: bool,
        running: bool,
        tags: &[&str],
        disks: &[(&str, u32)],
        boot: Option<&str>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let w = &mut inner.world;
        let node = w.nodes.first().cloned().unwrap_or_default();
        if w.vms.contains_key(&vmid) {
            return Err(api(
                "POST",
                "/mock",
                500,
                format!("VM {vmid} already exists on node '{node}'"),
            ));
        }
        w.seq += 1;
        let mut config: BTreeMap<String, String> = [
            ("cores", "2".to_string()),
            ("memory", "2048".to_string()),
            ("net0", format!("virtio={},bridge=vmbr0", mac(w.seq))),
            ("ostype", "l26".to_string()),
            ("scsihw", "virtio-scsi-pci".to_string()),
            ("ide2", "none,media=cdrom".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if !tags.is_empty() {
            config.insert("tags".into(), tags.join(";"));
        }
        if let Some(boot) = boot {
            config.insert("boot".into(), boot.to_string());
        }
        w.vms.insert(
            vmid,
            MockVm {
                node,
                name: name.to_string(),
                template,
                running,
                lock: None,
                config,
                disks: disks.iter().map(|(d, g)| ((*d).to_string(), *g)).collect(),
                linked_from: None,
                storage: disk_storage(),
                ignores_shutdown: false,
                staged: None,
                pool: None,
                joins_pool: None,
            },
        );
        Ok(())
    }

    /// One API call: its round trip, then faults, then (under the lock) the world
    /// catches up with the clock.
    async fn enter(&self, op: &'static str, method: &'static str, path: &str) -> Result<()> {
        let latency = self.lock().latency;
        latency.scale.sleep(latency.call).await;
        // pve-http-server: an unknown token is a 401 "authentication failure" with
        // an empty body, after a delay of about 3 s.
        let refusal = {
            let inner = self.lock();
            let refused = matches!((&inner.world.token, &self.presented),
                (Some(known), Some(presented)) if known != presented);
            refused.then_some(inner.profile)
        };
        if let Some(profile) = refusal {
            latency.scale.sleep(3.0).await;
            return Err(on_the_wire(
                profile,
                api(method, path, 401, "authentication failure"),
            ));
        }
        let mut inner = self.lock();
        *inner.calls.entry(op).or_default() += 1;
        let profile = inner.profile;
        match inner.faults.draw([op]) {
            Some(Fault::Permanent(message)) => {
                Err(on_the_wire(profile, api(method, path, 403, message)))
            }
            Some(Fault::Transient) => Err(on_the_wire(
                profile,
                api(method, path, 503, "Service Unavailable"),
            )),
            None => Ok(()),
        }
    }

    /// Runs `f` on the world after finishing every task whose time has come; its
    /// error goes over the modelled wire.
    fn world<T>(&self, f: impl FnOnce(&mut World, &Access, &Latency) -> Result<T>) -> Result<T> {
        let mut inner = self.lock();
        let latency = inner.latency;
        let access = Access {
            pool: inner.token_pool.clone(),
            revoked: inner.revoked.clone(),
            sdn: inner.profile == ServerProfile::Current,
        };
        let profile = inner.profile;
        inner.world.advance(Instant::now());
        f(&mut inner.world, &access, &latency).map_err(|e| on_the_wire(profile, e))
    }
}

/// The probes' answers and the failures the lab injects into them. The
/// privileges are a property of the token, like
/// [`MockProxmox::with_pool_scoped_token`], and not part of
/// [`MockProxmox::snapshot`]: set them on every opening of a lab world. Nodes,
/// storages and VMs are the world's, and persist.
impl MockProxmox {
    /// The token loses `privilege` on the ACL path `path` and below it (for
    /// `/pool/NAME`, on the pool's members too), as when an admin narrows its
    /// role there. Calls that need it answer 403 `Permission check failed (PATH,
    /// PRIV)`, and `GET /access/permissions` no longer lists it.
    pub fn revoke_privilege(&self, path: &str, privilege: &str) {
        self.lock()
            .revoked
            .insert((normalize_acl_path(path), privilege.to_string()));
    }

    /// Gives back every privilege [`revoke_privilege`](Self::revoke_privilege) took.
    pub fn clear_revoked_privileges(&self) {
        self.lock().revoked.clear();
    }

    /// Takes a cluster node down or brings it back: `GET /nodes` reports it
    /// `offline`, and calls proxied to it fail with 595 `No route to host`.
    ///
    /// # Errors
    /// [`Error::Setup`] when the cluster has no such node.
    pub fn set_node_online(&self, node: &str, online: bool) -> Result<()> {
        let mut inner = self.lock();
        let w = &mut inner.world;
        if !w.nodes.iter().any(|n| n == node) {
            return Err(Error::Setup(format!(
                "mock: no node `{node}`; the cluster has {}",
                w.nodes.join(", ")
            )));
        }
        if online {
            w.offline_nodes.remove(node);
        } else {
            w.offline_nodes.insert(node.to_string());
        }
        Ok(())
    }

    /// Deletes a VM or template outright, as an admin's `qm destroy` would (a
    /// template with linked clones stays, as it does there).
    ///
    /// # Errors
    /// No such VM, or linked clones still use it.
    pub fn remove_vm(&self, vmid: u32) -> Result<()> {
        let mut inner = self.lock();
        let w = &mut inner.world;
        let node = w.nodes.first().cloned().unwrap_or_default();
        if !w.vms.contains_key(&vmid) {
            return Err(missing("DELETE", "/mock", &node, vmid));
        }
        if let Some((clone, _)) = w.vms.iter().find(|(_, v)| v.linked_from == Some(vmid)) {
            return Err(api(
                "DELETE",
                "/mock",
                500,
                format!("base volume of {vmid} is still in use by linked clone {clone}"),
            ));
        }
        w.vms.remove(&vmid);
        Ok(())
    }

    /// Makes a VM a template or a plain VM (`template: 1` in its config), as if
    /// the configured template id held something else.
    ///
    /// # Errors
    /// No such VM.
    pub fn set_template_flag(&self, vmid: u32, template: bool) -> Result<()> {
        let mut inner = self.lock();
        let node = inner.world.nodes.first().cloned().unwrap_or_default();
        let vm = inner
            .world
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| missing("POST", "/mock", &node, vmid))?;
        vm.template = template;
        Ok(())
    }

    /// Adds a storage (or replaces one's definition): type, content types and size.
    pub fn add_storage(&self, storage: &str, kind: &str, content: &[&str], total_gib: u64) {
        self.lock().world.storages.insert(
            storage.to_string(),
            MockStorage {
                kind: kind.to_string(),
                content: content.iter().map(|c| (*c).to_string()).collect(),
                total_gib,
                other_gib: 0,
                enabled: true,
                active: true,
            },
        );
    }

    /// Fills a storage with data the mock does not model until `free_gib` is left
    /// now (0 for a full one); later clones take from what is left.
    ///
    /// # Errors
    /// [`Error::Setup`] when there is no such storage.
    pub fn set_storage_free_gib(&self, storage: &str, free_gib: u64) -> Result<()> {
        let mut inner = self.lock();
        let w = &mut inner.world;
        let Some(s) = w.storages.get(storage).cloned() else {
            return Err(Error::Setup(format!("mock: no storage `{storage}`")));
        };
        let modelled = w.storage_used_gib(storage, &s) - s.other_gib;
        let other = s
            .total_gib
            .saturating_sub(free_gib)
            .saturating_sub(modelled);
        if let Some(s) = w.storages.get_mut(storage) {
            s.other_gib = other;
        }
        Ok(())
    }

    /// Takes back what [`set_storage_free_gib`](Self::set_storage_free_gib) filled
    /// the storage with (a lab healing an injected failure).
    ///
    /// # Errors
    /// [`Error::Setup`] when there is no such storage.
    pub fn clear_storage_fill(&self, storage: &str) -> Result<()> {
        let mut inner = self.lock();
        let s = inner
            .world
            .storages
            .get_mut(storage)
            .ok_or_else(|| Error::Setup(format!("mock: no storage `{storage}`")))?;
        s.other_gib = 0;
        Ok(())
    }

    /// Disables a storage in storage.cfg (`enabled: false`) or makes it
    /// unreachable (`active: false`).
    ///
    /// # Errors
    /// [`Error::Setup`] when there is no such storage.
    pub fn set_storage_state(&self, storage: &str, enabled: bool, active: bool) -> Result<()> {
        let mut inner = self.lock();
        let s = inner
            .world
            .storages
            .get_mut(storage)
            .ok_or_else(|| Error::Setup(format!("mock: no storage `{storage}`")))?;
        s.enabled = enabled;
        s.active = active;
        Ok(())
    }
}

/// `GET /version` of the modelled server: PVE 9.0, or 7.4 for the older profile.
fn modelled_version(profile: ServerProfile) -> PveVersion {
    match profile {
        ServerProfile::Current => PveVersion {
            version: "9.0.10".into(),
            release: "9.0".into(),
            repoid: "deb1ca707ec72a89".into(),
        },
        ServerProfile::Older => PveVersion {
            version: "7.4-17".into(),
            release: "7.4".into(),
            repoid: "513c62be".into(),
        },
    }
}

/// What the API token may do: its ACL (everything, or what an admin granted a
/// pool-scoped token) minus the privileges the lab took away. Permission
/// messages are pve-access-control `raise_perm_exc`'s: `Permission check failed
/// (PATH, PRIV)`.
#[derive(Debug)]
struct Access {
    pool: Option<String>,
    revoked: BTreeSet<(String, String)>,
    /// Whether bridges need `SDN.Use` (pve-guest-common `check_vnet_access`, PVE 8+;
    /// the older profile models PVE 7).
    sdn: bool,
}

impl Access {
    /// `VM.X` on `/vms/{vmid}` (`RPCEnvironment::check_vm_perm` without a pool).
    fn vm(
        &self,
        w: &World,
        method: &'static str,
        path: &str,
        vmid: u32,
        privilege: &str,
    ) -> Result<()> {
        self.check(w, method, path, &format!("/vms/{vmid}"), &[privilege])
    }

    /// `RPCEnvironment::check`: every privilege of `privs` on `acl_path`.
    fn check(
        &self,
        w: &World,
        method: &'static str,
        path: &str,
        acl_path: &str,
        privs: &[&str],
    ) -> Result<()> {
        let held = self.privileges(w, acl_path);
        match privs.iter().find(|p| !held.contains_key(**p)) {
            None => Ok(()),
            Some(missing) => Err(api(
                method,
                path,
                403,
                format!("Permission check failed ({acl_path}, {missing})"),
            )),
        }
    }

    /// `RPCEnvironment::check_any`: one of `privs` on `acl_path`.
    fn check_any(
        &self,
        w: &World,
        method: &'static str,
        path: &str,
        acl_path: &str,
        privs: &[&str],
    ) -> Result<()> {
        let held = self.privileges(w, acl_path);
        if privs.iter().any(|p| held.contains_key(*p)) {
            return Ok(());
        }
        Err(api(
            method,
            path,
            403,
            format!("Permission check failed ({acl_path}, {})", privs.join("|")),
        ))
    }

    /// `/cluster/resources` lists what the token may audit.
    fn sees(&self, w: &World, vmid: u32) -> bool {
        self.privileges(w, &format!("/vms/{vmid}"))
            .contains_key("VM.Audit")
    }

    /// The clone's check (qemu-server `clone_vm`): `VM.Allocate` on `/vms/{newid}`
    /// or, when the clone names a pool, on `/pool/{pool}`.
    fn allocate(
        &self,
        w: &World,
        method: &'static str,
        path: &str,
        newid: u32,
        pool: Option<&str>,
    ) -> Result<()> {
        let on_pool = pool.is_some_and(|p| {
            self.privileges(w, &format!("/pool/{p}"))
                .contains_key("VM.Allocate")
        });
        if on_pool {
            return Ok(());
        }
        self.vm(w, method, path, newid, "VM.Allocate")
    }

    /// The rest of the clone's checks on the template's config (qemu-server
    /// `check_storage_access_clone`, `check_bridge_access`): `Datastore.AllocateSpace`
    /// on the storage each disk goes to, `SDN.Use` on each NIC's bridge.
    fn clone_resources(
        &self,
        w: &World,
        method: &'static str,
        path: &str,
        source: &MockVm,
        storage: Option<&str>,
    ) -> Result<()> {
        if !source.disks.is_empty() {
            let sid = storage.unwrap_or(&source.storage);
            self.check(
                w,
                method,
                path,
                &format!("/storage/{sid}"),
                &["Datastore.AllocateSpace"],
            )?;
        }
        for (key, value) in &source.config {
            if is_net_key(key) {
                self.bridge(w, method, path, value)?;
            }
        }
        Ok(())
    }

    /// pve-guest-common `check_vnet_access` for one `netN` value: `SDN.Use` on
    /// `/sdn/zones/localnetwork/{bridge}[/{tag}]`.
    fn bridge(&self, w: &World, method: &'static str, path: &str, net: &str) -> Result<()> {
        if !self.sdn {
            return Ok(());
        }
        let (bridge, tag) = net_bridge(net);
        let Some(bridge) = bridge else {
            return Ok(());
        };
        let acl = match tag {
            Some(tag) => format!("/sdn/zones/localnetwork/{bridge}/{tag}"),
            None => format!("/sdn/zones/localnetwork/{bridge}"),
        };
        self.check(w, method, path, &acl, &["SDN.Use"])
    }

    /// qemu-server `check_vm_modify_config_perm` for each key `PUT .../config`
    /// sets or deletes, `assert_tag_permissions` for `tags` (with datacenter.cfg's
    /// default `user-tag-access: free`), and `check_bridge_access` on a NIC's new
    /// and old value.
    fn config_keys(
        &self,
        w: &World,
        method: &'static str,
        path: &str,
        vmid: u32,
        params: &[(String, String)],
    ) -> Result<()> {
        let acl = format!("/vms/{vmid}");
        let mut keys: Vec<&str> = Vec::new();
        for (k, v) in params {
            if k == "delete" {
                keys.extend(v.split([',', ';']).filter(|key| !key.is_empty()));
            } else if !World::CONTROL_KEYS.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        for key in keys {
            match config_privilege(key) {
                KeyPrivilege::Skipped => {}
                KeyPrivilege::All(privs) => self.check(w, method, path, &acl, privs)?,
                KeyPrivilege::Any(privs) => self.check_any(w, method, path, &acl, privs)?,
                KeyPrivilege::RootOnly => {
                    return Err(api(
                        method,
                        path,
                        500,
                        format!("only root can set '{key}' config"),
                    ));
                }
            }
            if key == "startup" {
                self.check(w, method, path, "/", &["Sys.Modify"])?;
            }
        }
        for (k, v) in params.iter().filter(|(k, _)| is_net_key(k)) {
            self.bridge(w, method, path, v)?;
            if let Some(old) = w.vms.get(&vmid).and_then(|vm| vm.config.get(k)) {
                self.bridge(w, method, path, old)?;
            }
        }
        Ok(())
    }

    /// The token's privileges on `path` as pve-access-control computes them
    /// (`AccessControl::roles`, `RPCEnvironment::compile_acl_path`): the deepest
    /// grant on the path wins, a grant reaches below only when it propagates; a VM
    /// also gets its pool's grant (never propagating). Then the lab's revocations:
    /// a privilege revoked on a path is gone there and below it (for a pool, on
    /// its members too).
    fn privileges(&self, w: &World, path: &str) -> BTreeMap<String, bool> {
        let path = normalize_acl_path(path);
        let grants = self.grants();
        let mut held = granted_on(&grants, &path);
        let pool = path
            .strip_prefix("/vms/")
            .and_then(|id| id.parse::<u32>().ok())
            .and_then(|vmid| w.vms.get(&vmid))
            .and_then(|vm| vm.pool.clone());
        if let Some(pool) = &pool {
            for privilege in granted_on(&grants, &format!("/pool/{pool}")).into_keys() {
                held.entry(privilege).or_insert(false);
            }
        }
        let pool_path = pool.map(|p| format!("/pool/{p}"));
        held.retain(|privilege, _| {
            !self.revoked.iter().any(|(at, revoked)| {
                revoked == privilege
                    && (covers(at, &path) || pool_path.as_deref().is_some_and(|pp| covers(at, pp)))
            })
        });
        held
    }

    /// The ACL entries of the token (privilege-separated, so its own): `/` with
    /// everything, or for a pool-scoped token PVEVMAdmin on its pool, the
    /// storage and bridge rights a clone needs (PVEDatastoreUser on `/storage`,
    /// PVESDNUser on `/sdn/zones`), all propagating.
    fn grants(&self) -> Vec<(String, &'static [&'static str])> {
        match &self.pool {
            None => vec![("/".to_string(), ADMINISTRATOR)],
            Some(pool) => vec![
                (format!("/pool/{pool}"), PVE_VM_ADMIN),
                ("/storage".to_string(), PVE_DATASTORE_USER),
                ("/sdn/zones".to_string(), PVE_SDN_USER),
            ],
        }
    }
}

/// Whether a grant or revocation on `at` reaches `path`.
fn covers(at: &str, path: &str) -> bool {
    at == "/" || at == path || path.starts_with(&format!("{at}/"))
}

/// `AccessControl::normalize_path`: one slash between segments, none at the end.
fn normalize_acl_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

/// The privileges propagating grants give `path` (all grants here propagate).
fn granted_on(grants: &[(String, &'static [&'static str])], path: &str) -> BTreeMap<String, bool> {
    grants
        .iter()
        .filter(|(at, _)| covers(at, path))
        .max_by_key(|(at, _)| at.len())
        .map(|(_, privs)| privs.iter().map(|p| ((*p).to_string(), true)).collect())
        .unwrap_or_default()
}

/// pve-access-control `AccessControl.pm` `$privgroups`: every privilege (the
/// Administrator role).
const ADMINISTRATOR: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// PVEVMAdmin: the VM group's admin, user and audit privileges.
const PVE_VM_ADMIN: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// PVEDatastoreUser.
const PVE_DATASTORE_USER: &[&str] = &["Datastore.AllocateSpace", "Datastore.Audit"];

/// PVESDNUser.
const PVE_SDN_USER: &[&str] = &["SDN.Audit", "SDN.Use"];

/// What changing one config key takes (qemu-server `check_vm_modify_config_perm`).
enum KeyPrivilege {
    /// Checked elsewhere (drives, by value) or not at all here.
    Skipped,
    /// All of these on `/vms/{vmid}`.
    All(&'static [&'static str]),
    /// One of these.
    Any(&'static [&'static str]),
    /// "only root can set '$opt' config".
    RootOnly,
}

fn config_privilege(key: &str) -> KeyPrivilege {
    let stem = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let indexed = stem.len() < key.len();
    match (stem, indexed) {
        ("ide" | "sata" | "scsi" | "virtio" | "efidisk" | "tpmstate", true)
        | ("unused" | "serial" | "usb" | "hostpci" | "virtiofs", true)
        | ("cdrom", false) => KeyPrivilege::Skipped,
        ("tags", false) => KeyPrivilege::All(&["VM.Config.Options"]),
        ("numa", true)
        | (
            "cores" | "cpu" | "runningcpu" | "cpulimit" | "cpuunits" | "numa" | "smp" | "sockets"
            | "vcpus",
            false,
        ) => KeyPrivilege::All(&["VM.Config.CPU"]),
        ("memory" | "balloon" | "shares" | "allow-ksm", false) => {
            KeyPrivilege::All(&["VM.Config.Memory"])
        }
        ("audio" | "rng", true)
        | (
            "acpi" | "hotplug" | "kvm" | "machine" | "runningmachine" | "scsihw" | "smbios"
            | "tablet" | "vga" | "watchdog",
            _,
        ) => KeyPrivilege::All(&["VM.Config.HWType"]),
        (
            "agent" | "autostart" | "bios" | "description" | "keyboard" | "localtime"
            | "migrate_downtime" | "migrate_speed" | "name" | "onboot" | "ostype" | "protection"
            | "reboot" | "startdate" | "startup" | "tdf" | "template",
            false,
        ) => KeyPrivilege::All(&["VM.Config.Options"]),
        ("freeze", false) => KeyPrivilege::All(&["VM.PowerMgmt"]),
        ("boot" | "bootdisk" | "vmstatestorage", false) => KeyPrivilege::All(&["VM.Config.Disk"]),
        ("net", true) | ("running-nets-host-mtu", false) => {
            KeyPrivilege::All(&["VM.Config.Network"])
        }
        ("ipconfig", true)
        | (
            "cicustom" | "cipassword" | "citype" | "ciuser" | "ciupgrade" | "nameserver"
            | "searchdomain" | "sshkeys",
            false,
        ) => KeyPrivilege::Any(&["VM.Config.Cloudinit", "VM.Config.Network"]),
        ("vmstate", false) => KeyPrivilege::All(&["VM.Config.Disk", "VM.PowerMgmt"]),
        _ => KeyPrivilege::RootOnly,
    }
}

fn is_net_key(key: &str) -> bool {
    key.strip_prefix("net")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The `bridge` and `tag` of a `netN` value.
fn net_bridge(net: &str) -> (Option<&str>, Option<&str>) {
    let mut bridge = None;
    let mut tag = None;
    for part in net.split(',') {
        match part.split_once('=') {
            Some(("bridge", b)) => bridge = Some(b),
            Some(("tag", t)) => tag = Some(t),
            _ => {}
        }
    }
    (bridge, tag)
}

/// An error as the modelled pve-http-server writes it, read back by the client's
/// own decoder. The reason phrase carries the message's first line only
/// (AnyEvent.pm `response`: `m/^(.*)$/m`, and a phrase still holding CR or LF
/// becomes a plain 400); only current servers also put it in the body.
fn on_the_wire(profile: ServerProfile, e: Error) -> Error {
    let Error::Api {
        method,
        path,
        status,
        message,
        params,
    } = e
    else {
        return e;
    };
    let first = message.lines().next().unwrap_or_default().to_string();
    let (status, phrase) = if first.contains('\r') {
        (400, crate::error::canonical_reason(400).to_string())
    } else {
        (status, first)
    };
    let mut body = serde_json::json!({ "data": null });
    if !params.is_empty() {
        body["errors"] = serde_json::json!(params);
    }
    if profile == ServerProfile::Current {
        body["message"] = Value::String(format!("{message}\n"));
    }
    // hyper hands over only a phrase that is not the status's standard one.
    let custom = (phrase != crate::error::canonical_reason(status)).then_some(phrase);
    crate::error::from_answer(method, &path, status, custom.as_deref(), Some(&body))
}

fn mac(seq: u64) -> String {
    let b = seq.to_be_bytes();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[5], b[6], b[7])
}

impl World {
    fn advance(&mut self, now: Instant) {
        self.prune();
        // A clone's first disk is copied: qemu-server writes the new config (name,
        // description, the template's keys), still locked `clone`.
        for t in &self.tasks {
            if t.exit.is_none()
                && t.named_at <= now
                && matches!(t.effect, Effect::Clone { .. })
                && let Some(vm) = self.vms.get_mut(&t.vmid)
            {
                vm.unstage();
            }
        }
        let mut due: Vec<usize> = (0..self.tasks.len())
            .filter(|i| self.tasks[*i].exit.is_none() && self.tasks[*i].ends_at <= now)
            .collect();
        due.sort_by_key(|i| self.tasks[*i].ends_at);
        for i in due {
            let (vmid, effect) = (self.tasks[i].vmid, self.tasks[i].effect);
            let outcome = self.finish(vmid, effect);
            let task = &mut self.tasks[i];
            match outcome {
                Ok(line) => {
                    task.log.push(line);
                    task.log.push("TASK OK".into());
                    task.exit = Some("OK".into());
                }
                Err(text) => {
                    task.log.push(format!("TASK ERROR: {text}"));
                    task.exit = Some(text);
                }
            }
        }
    }

    /// Forgets the oldest finished tasks so a long-lived lab world stays small.
    fn prune(&mut self) {
        const KEEP_FINISHED: usize = 1000;
        let finished = self.tasks.iter().filter(|t| t.exit.is_some()).count();
        let mut drop = finished.saturating_sub(KEEP_FINISHED);
        self.tasks.retain(|t| {
            let forget = drop > 0 && t.exit.is_some();
            if forget {
                drop -= 1;
            }
            !forget
        });
    }

    /// A task's effect when it ends: a log line, or the error it ends with.
    fn finish(&mut self, vmid: u32, effect: Effect) -> std::result::Result<String, String> {
        let Some(vm) = self.vms.get_mut(&vmid) else {
            return Err(format!("VM {vmid} vanished"));
        };
        match effect {
            Effect::Clone {
                lock_timeout: true, ..
            } => {
                // qemu-server `clone_vm`: "clone failed: $err", after it freed the
                // volumes and unlinked the temporary config.
                let storage = vm.storage.clone();
                self.vms.remove(&vmid);
                Err(format!(
                    "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-{storage}' - got timeout"
                ))
            }
            Effect::Clone {
                source,
                lock_timeout: false,
            } => {
                vm.unstage();
                vm.lock = None;
                if let Some(pool) = vm.joins_pool.take() {
                    vm.pool = Some(pool);
                }
                Ok(format!("clone of VM {source} to {vmid} finished"))
            }
            Effect::Resize => Ok(format!("resized VM {vmid}'s disk")),
            Effect::Start => {
                vm.running = true;
                Ok(format!("started VM {vmid}"))
            }
            Effect::Shutdown { completes: false } => {
                Err("VM quit/powerdown failed - got timeout".into())
            }
            Effect::Shutdown { completes: true } | Effect::Stop => {
                vm.running = false;
                Ok(format!("VM {vmid} is off"))
            }
            Effect::Destroy => {
                self.vms.remove(&vmid);
                Ok(format!("destroyed VM {vmid} and purged its volumes"))
            }
        }
    }

    /// Keys that steer the request itself rather than being stored.
    const CONTROL_KEYS: [&'static str; 6] =
        ["digest", "skiplock", "force", "revert", "node", "vmid"];

    /// The API schema's verdict on `PUT .../config` parameters, which comes before
    /// any permission check: 400 naming each bad parameter.
    fn validate_config(path: &str, params: &[(String, String)]) -> Result<()> {
        let mut errors = BTreeMap::new();
        for (k, v) in params {
            let problem = if !known_key(k) {
                Some("property is not defined in schema and the schema does not allow additional properties".to_string())
            } else if k == "name" && !is_dns_name(v) {
                Some(format!("value '{v}' does not look like a valid DNS name"))
            } else if k == "delete" {
                v.split([',', ';'])
                    .find(|key| !known_key(key))
                    .map(|key| format!("invalid format - unknown key '{key}'"))
            } else {
                check_value(k, v).err()
            };
            if let Some(problem) = problem {
                errors.insert(k.clone(), problem);
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(Error::Api {
            method: "PUT",
            path: path.to_string(),
            status: 400,
            message: "Parameter verification failed.".into(),
            params: errors,
        })
    }

    /// `PUT .../config`: validates every parameter before changing anything.
    fn configure(
        &mut self,
        path: &str,
        node: &str,
        vmid: u32,
        params: Vec<(String, String)>,
    ) -> Result<()> {
        const M: &str = "PUT";
        Self::validate_config(path, &params)?;
        let mut seq = self.seq;
        let vm = self.vm_for_change(M, path, node, vmid)?;
        for (k, v) in params {
            match k.as_str() {
                "name" => vm.name = v,
                "delete" => {
                    for key in v.split([',', ';']) {
                        vm.config.remove(key);
                    }
                }
                c if Self::CONTROL_KEYS.contains(&c) => {}
                net if net.starts_with("net")
                    && !v.split(',').next().unwrap_or_default().contains('=') =>
                {
                    // Proxmox gives a NIC without a MAC a fresh one.
                    seq += 1;
                    vm.config.insert(k, with_mac(&v, seq));
                }
                _ => {
                    vm.config.insert(k, v);
                }
            }
        }
        self.seq = seq;
        Ok(())
    }

    /// GiB in use on `storage`: what the mock does not model, the templates' and
    /// full clones' disks, and 1 GiB per disk of a linked clone (a thin copy of
    /// the template's base volume holds only what the guest wrote).
    fn storage_used_gib(&self, storage: &str, s: &MockStorage) -> u64 {
        let disks: u64 = self
            .vms
            .values()
            .filter(|vm| vm.storage == storage)
            .map(|vm| match vm.linked_from {
                Some(_) => vm.disks.len() as u64,
                None => vm.disks.values().map(|g| u64::from(*g)).sum(),
            })
            .sum();
        s.other_gib + disks
    }

    /// The volume id of a VM's `index`th disk, named as its storage's plugin names
    /// it: `local-lvm:base-9000-disk-0` (a template), `local-lvm:base-9000-disk-0/vm-421-disk-0`
    /// (a linked clone), `local-lvm:vm-421-disk-0`; a file storage's in
    /// `<vmid>/<name>.qcow2` (pve-storage `Plugin.pm` `clone_image`:
    /// `$basevmid/$basename/$vmid/$name`).
    fn volume_id(&self, vmid: u32, vm: &MockVm, index: usize) -> String {
        let file = self
            .storages
            .get(&vm.storage)
            .is_some_and(|s| crate::features::is_file_based(&s.kind));
        let name = |kind: &str, id: u32| {
            if file {
                format!("{id}/{kind}-{id}-disk-{index}.qcow2")
            } else {
                format!("{kind}-{id}-disk-{index}")
            }
        };
        let volume = match (vm.template, vm.linked_from) {
            (true, _) => name("base", vmid),
            (false, Some(base)) => format!("{}/{}", name("base", base), name("vm", vmid)),
            (false, None) => name("vm", vmid),
        };
        format!("{}:{volume}", vm.storage)
    }

    /// pve-storage `storage_info` for one storage: a disabled or inactive one
    /// reports 0 for every size.
    fn storage_status(&self, storage: &str, s: &MockStorage) -> StorageStatus {
        let up = s.enabled && s.active;
        let gib = |g: u64| if up { Some(g << 30) } else { Some(0) };
        let used = self.storage_used_gib(storage, s).min(s.total_gib);
        StorageStatus {
            storage: storage.to_string(),
            kind: s.kind.clone(),
            content: s.content.clone(),
            total: gib(s.total_gib),
            used: gib(used),
            avail: gib(s.total_gib - used),
            enabled: Some(s.enabled),
            active: Some(up),
            shared: Some(storage == DISK_STORAGE && self.shared_storage),
        }
    }

    /// qemu-server `clone_vm`: a target storage must exist, be enabled and hold
    /// VM images (pve-storage `storage_check_enabled`).
    fn clone_storage_ok(
        &self,
        method: &'static str,
        path: &str,
        request: &CloneRequest,
    ) -> Result<()> {
        let Some(sid) = request.storage.as_deref() else {
            return Ok(());
        };
        match self.storages.get(sid) {
            None => Err(api(
                method,
                path,
                500,
                format!("storage '{sid}' does not exist"),
            )),
            Some(s) if !s.enabled => Err(api(
                method,
                path,
                500,
                format!("storage '{sid}' is disabled"),
            )),
            Some(s) if !s.content.iter().any(|c| c == "images") => Err(bad_param(
                method,
                path,
                "storage",
                format!("storage '{sid}' does not support vm images"),
            )),
            Some(_) => Ok(()),
        }
    }

    fn node_ok(&self, method: &'static str, path: &str, node: &str) -> Result<()> {
        if self.offline_nodes.contains(node) {
            // pveproxy proxies the call to the node and cannot reach it.
            return Err(api(method, path, 595, "No route to host"));
        }
        if self.nodes.iter().any(|n| n == node) {
            return Ok(());
        }
        Err(api(
            method,
            path,
            500,
            format!(
                "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
            ),
        ))
    }

    /// The VM at `node`/`vmid`, refusing when it is locked or a task holds it.
    fn vm_for_change(
        &mut self,
        method: &'static str,
        path: &str,
        node: &str,
        vmid: u32,
    ) -> Result<&mut MockVm> {
        self.node_ok(method, path, node)?;
        if self.busy(vmid) {
            return Err(lock_timeout(method, path, vmid));
        }
        let vm = self
            .vms
            .get_mut(&vmid)
            .filter(|vm| vm.node == node)
            .ok_or_else(|| missing(method, path, node, vmid))?;
        // pve-guest-common `check_lock`: "VM N is locked (clone)".
        if let Some(lock) = &vm.lock {
            return Err(api(
                method,
                path,
                500,
                format!("VM {vmid} is locked ({lock})"),
            ));
        }
        Ok(vm)
    }

    /// Whether a running task holds the VM's config file lock. A clone does not:
    /// it marks the new VM with the `clone` lock property instead.
    fn busy(&self, vmid: u32) -> bool {
        self.tasks.iter().any(|t| {
            t.vmid == vmid && t.exit.is_none() && !matches!(t.effect, Effect::Clone { .. })
        })
    }

    /// A task on `vmid`; its UPID names `id` (a clone's is the source VM's:
    /// qemu-server `fork_worker('qmclone', $vmid, ...)`).
    fn task(
        &mut self,
        node: &str,
        kind: &str,
        id: u32,
        vmid: u32,
        effect: Effect,
        ends_at: Instant,
    ) -> Result<Upid> {
        self.seq += 1;
        let raw = format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:{kind}:{id}:castle@pve!mock:",
            0x1000 + self.seq,
            0x0100_0000 + self.seq,
            0x6500_0000 + self.seq
        );
        self.tasks.push(MockTask {
            upid: raw.clone(),
            vmid,
            effect,
            exit: None,
            log: vec![format!("{kind} {vmid} started")],
            remaining_ms: 0,
            ends_at,
            named_remaining_ms: 0,
            named_at: ends_at,
        });
        Upid::parse(&raw)
    }

    /// `.../status/current`: a nameless clone is `VM N` (qemu-server
    /// `vmstatus`: `$conf->{name} || "VM $vmid"`).
    fn info(&self, vmid: u32, vm: &MockVm) -> VmInfo {
        let boot = vm.boot_disk_gib();
        VmInfo {
            vmid,
            node: vm.node.clone(),
            name: if vm.staged.is_some() {
                format!("VM {vmid}")
            } else {
                vm.name.clone()
            },
            status: if vm.running {
                PowerState::Running
            } else {
                PowerState::Stopped
            },
            template: vm.template,
            tags: if vm.staged.is_some() {
                Vec::new()
            } else {
                vm.config
                    .get("tags")
                    .map(|t| split_tags(t))
                    .unwrap_or_default()
            },
            lock: vm.lock.clone(),
            maxdisk: u64::from(boot) << 30,
        }
    }

    /// `/cluster/resources`: a VM without statistics yet (a clone still copying its
    /// first disk) is `status: unknown` with no name (pve-manager API2Tools
    /// `extract_vm_stats`); tags and lock come from the config either way.
    fn listed(&self, vmid: u32, vm: &MockVm) -> VmInfo {
        let mut info = self.info(vmid, vm);
        if vm.staged.is_some() {
            info.status = PowerState::Unknown;
            info.name = String::new();
            info.maxdisk = 0;
        }
        info
    }
}

impl MockVm {
    /// The clone's first disk is copied: its real config replaces the lock-only one.
    fn unstage(&mut self) {
        if let Some(staged) = self.staged.take() {
            self.name = staged.name;
            self.config = staged.config;
        }
    }

    /// The size of the first boot-order disk (qemu-server `bootdisk_size`), 0 when
    /// there is none.
    fn boot_disk_gib(&self) -> u32 {
        let boot = self
            .config
            .get("boot")
            .map(String::as_str)
            .unwrap_or_default();
        let order: Vec<&str> = match boot.strip_prefix("order=") {
            Some(list) => list.split([';', ',', ' ']).collect(),
            None => self
                .config
                .get("bootdisk")
                .map(String::as_str)
                .into_iter()
                .collect(),
        };
        order
            .into_iter()
            .find_map(|d| self.disks.get(d).copied())
            .unwrap_or(0)
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_tag(t: &str) -> bool {
    let mut bytes = t.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_-+.".contains(&b))
}

fn known_key(key: &str) -> bool {
    let stem = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let indexed = stem.len() < key.len();
    CONFIG_KEYS
        .iter()
        .any(|k| *k == key || (indexed && k.strip_suffix("[n]") == Some(stem)))
}

/// Checks one config value the way the server's schema does.
fn check_value(key: &str, value: &str) -> std::result::Result<(), String> {
    let int = |min: u64| match value.parse::<u64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("value must have a minimum value of {min}")),
        Err(_) => Err(format!("type check ('integer') failed - got '{value}'")),
    };
    match key {
        "cores" | "sockets" => int(1),
        "memory" => int(16),
        "onboot" if !matches!(value, "0" | "1") => {
            Err(format!("type check ('boolean') failed - got '{value}'"))
        }
        "description" if value.len() > 8192 => Err("value may only be 8192 characters long".into()),
        "tags" => split_tags(value)
            .iter()
            .find(|t| !is_tag(t))
            .map_or(Ok(()), |t| {
                Err(format!("invalid format - invalid tag '{t}'"))
            }),
        k if k.starts_with("net") => check_net(value),
        k if k.starts_with("ipconfig") => check_ipconfig(value),
        _ => Ok(()),
    }
}

fn check_net(value: &str) -> std::result::Result<(), String> {
    let mut parts = value.split(',');
    let model = parts.next().unwrap_or_default();
    let model = model.split('=').next().unwrap_or_default();
    if !["virtio", "e1000", "rtl8139", "vmxnet3"].contains(&model) {
        return Err(format!("invalid format - unknown network model '{model}'"));
    }
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("invalid format - missing '=' in '{part}'"))?;
        match k {
            "bridge" if v.is_empty() => return Err("invalid format - empty bridge".into()),
            "tag" if !v.parse::<u16>().is_ok_and(|t| (1..=4094).contains(&t)) => {
                return Err(format!(
                    "invalid format - tag: value must be 1-4094, got '{v}'"
                ));
            }
            "bridge" | "tag" | "firewall" | "mtu" | "queues" | "rate" | "link_down" | "macaddr"
            | "trunks" => {}
            other => {
                return Err(format!(
                    "invalid format - property '{other}' is not defined"
                ));
            }
        }
    }
    Ok(())
}

fn check_ipconfig(value: &str) -> std::result::Result<(), String> {
    for part in value.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("invalid format - missing '=' in '{part}'"))?;
        let ok = match k {
            "ip" | "ip6" => v == "dhcp" || is_cidr(v),
            "gw" | "gw6" => v.parse::<std::net::IpAddr>().is_ok(),
            _ => false,
        };
        if !ok {
            return Err(format!("invalid format - bad {k} '{v}'"));
        }
    }
    Ok(())
}

fn is_cidr(v: &str) -> bool {
    v.split_once('/').is_some_and(|(ip, prefix)| {
        let max = if ip.contains(':') { 128 } else { 32 };
        ip.parse::<std::net::IpAddr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= max)
    })
}

#[async_trait]
impl ProxmoxApi for MockProxmox {
    async fn list_vms(&self) -> Result<Vec<VmInfo>> {
        let path = "/cluster/resources";
        self.enter("list_vms", "GET", path).await?;
        // pve-manager Cluster.pm `resources` lists only what the token may audit.
        self.world(|w, access, _| {
            Ok(w.vms
                .iter()
                .filter(|(id, _)| access.sees(w, **id))
                .map(|(id, vm)| w.listed(*id, vm))
                .collect())
        })
    }

    async fn vm_status(&self, node: &str, vmid: u32) -> Result<Option<VmInfo>> {
        let path = format!("/nodes/{node}/qemu/{vmid}/status/current");
        self.enter("vm_status", "GET", &path).await?;
        let found = self.world(|w, access, _| {
            access.vm(w, "GET", &path, vmid, "VM.Audit")?;
            w.node_ok("GET", &path, node)?;
            w.vms
                .get(&vmid)
                .filter(|vm| vm.node == node)
                .map(|vm| w.info(vmid, vm))
                .ok_or_else(|| missing("GET", &path, node, vmid))
        });
        // The same reading as the HTTP client's: only the VM's own config file
        // missing means "no such VM".
        match found {
            Ok(vm) => Ok(Some(vm)),
            Err(e) if e.is_missing_vm() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn vm_config(&self, node: &str, vmid: u32) -> Result<BTreeMap<String, String>> {
        let path = format!("/nodes/{node}/qemu/{vmid}/config");
        self.enter("vm_config", "GET", &path).await?;
        self.world(|w, access, _| {
            access.vm(w, "GET", &path, vmid, "VM.Audit")?;
            w.node_ok("GET", &path, node)?;
            let vm = w
                .vms
                .get(&vmid)
                .filter(|vm| vm.node == node)
                .ok_or_else(|| missing("GET", &path, node, vmid))?;
            if vm.staged.is_some() {
                // The "qmclone temporary file": nothing but the lock.
                return Ok(BTreeMap::from([("lock".to_string(), "clone".to_string())]));
            }
            let mut config = vm.config.clone();
            config.insert("name".into(), vm.name.clone());
            for (i, (drive, gib)) in vm.disks.iter().enumerate() {
                let volume = w.volume_id(vmid, vm, i);
                config.insert(drive.clone(), format!("{volume},size={gib}G"));
            }
            if vm.template {
                config.insert("template".into(), "1".into());
            }
            if let Some(lock) = &vm.lock {
                config.insert("lock".into(), lock.clone());
            }
            Ok(config)
        })
    }

    async fn clone_vm(&self, node: &str, template: u32, request: &CloneRequest) -> Result<Upid> {
        const M: &str = "POST";
        let path = format!("/nodes/{node}/qemu/{template}/clone");
        self.enter("clone_vm", M, &path).await?;
        self.world(|w, access, latency| {
            // The schema's permission check: VM.Clone on the template, and
            // VM.Allocate on /vms/{newid} or on /pool/{pool}.
            access.vm(w, M, &path, template, "VM.Clone")?;
            access.allocate(w, M, &path, request.newid, request.pool.as_deref())?;
            w.node_ok(M, &path, node)?;
            let newid = request.newid;
            if !(100..=999_999_999).contains(&newid) {
                return Err(bad_param(
                    M,
                    &path,
                    "newid",
                    "value must have a minimum value of 100",
                ));
            }
            if !is_dns_name(&request.name) {
                return Err(bad_param(
                    M,
                    &path,
                    "name",
                    format!(
                        "value '{}' does not look like a valid DNS name",
                        request.name
                    ),
                ));
            }
            // pve-access-control `RPCEnvironment::check_pool_exist`: raise_perm_exc.
            if let Some(pool) = &request.pool
                && !w.pools.contains(pool)
            {
                return Err(api(
                    M,
                    &path,
                    403,
                    format!("Permission check failed (pool '{pool}' does not exist)"),
                ));
            }
            let vm_node = request.target.as_deref().unwrap_or(node);
            if request.target.is_some() {
                if !w.nodes.iter().any(|n| n == vm_node) {
                    return Err(api(
                        M,
                        &path,
                        500,
                        format!("no such cluster node '{vm_node}'"),
                    ));
                }
                if !w.shared_storage {
                    return Err(api(
                        M,
                        &path,
                        500,
                        format!("can't clone VM to node '{vm_node}' (VM uses local storage)"),
                    ));
                }
            }
            if let Some(f) = request
                .format
                .as_deref()
                .filter(|f| !crate::CLONE_FORMATS.contains(f))
            {
                return Err(bad_param(
                    M,
                    &path,
                    "format",
                    format!(
                        "value '{f}' does not have a value in the enumeration '{}'",
                        crate::CLONE_FORMATS.join(", ")
                    ),
                ));
            }
            let source = w
                .vms
                .get(&template)
                .filter(|vm| vm.node == node)
                .cloned()
                .ok_or_else(|| missing(M, &path, node, template))?;
            w.clone_storage_ok(M, &path, request)?;
            // `$load_and_check`: `my $full = $param->{full} // !is_template($conf)`,
            // then these two dies (500, before the worker forks).
            for (param, given) in [
                ("storage", request.storage.is_some()),
                ("format", request.format.is_some()),
            ] {
                if given && !request.full {
                    return Err(api(
                        M,
                        &path,
                        500,
                        format!("parameter '{param}' not allowed for linked clones"),
                    ));
                }
            }
            access.clone_resources(
                w,
                M,
                &path,
                &source,
                request.storage.as_deref().filter(|_| request.full),
            )?;
            if w.vms.contains_key(&newid) {
                return Err(api(
                    M,
                    &path,
                    500,
                    format!("unable to create VM {newid}: config file already exists"),
                ));
            }
            // Each disk, in sorted key order: a linked clone asks its storage for
            // `clone`, a full one for `copy` (pve-storage `volume_has_feature`).
            let kind = w
                .storages
                .get(&source.storage)
                .map(|s| s.kind.clone())
                .unwrap_or_default();
            for (i, drive) in source.disks.keys().enumerate() {
                let volid = w.volume_id(template, &source, i);
                let volname = volid.split_once(':').map_or("", |(_, n)| n);
                let (feature, word) = if request.full {
                    (crate::features::Feature::Copy, "Full")
                } else {
                    (crate::features::Feature::Clone, "Linked")
                };
                if !crate::features::volume_has_feature(&kind, feature, volname) {
                    return Err(api(
                        M,
                        &path,
                        500,
                        format!("{word} clone feature is not supported for '{volid}' ({drive})"),
                    ));
                }
            }
            // The clone's volumes are made on the target storage (a full clone's
            // `storage`) or beside the source's, under that storage's lock.
            let target_storage = request
                .storage
                .clone()
                .filter(|_| request.full)
                .unwrap_or_else(|| source.storage.clone());
            let now = Instant::now();
            let hold = latency.scale.of(latency.storage_lock);
            let free_at = w
                .storage_locks
                .get(&target_storage)
                .copied()
                .unwrap_or(now)
                .max(now);
            let lock_timeout =
                free_at.saturating_duration_since(now) > latency.scale.of(STORAGE_LOCK_TIMEOUT);
            let locked_at = if lock_timeout {
                now
            } else {
                w.storage_locks
                    .insert(target_storage.clone(), free_at + hold);
                free_at
            };
            w.seq += 1;
            let mut config = source.config.clone();
            config.insert(
                "net0".into(),
                with_mac(
                    config.get("net0").map_or("virtio,bridge=vmbr0", |s| s),
                    w.seq,
                ),
            );
            if let Some(d) = &request.description {
                config.insert("description".into(), d.clone());
            }
            config.remove("protection");
            w.vms.insert(
                newid,
                MockVm {
                    node: vm_node.to_string(),
                    name: String::new(),
                    template: false,
                    running: false,
                    lock: Some("clone".into()),
                    config: BTreeMap::new(),
                    disks: source.disks.clone(),
                    linked_from: (!request.full).then_some(template),
                    storage: target_storage.clone(),
                    ignores_shutdown: false,
                    staged: Some(Staged {
                        name: request.name.clone(),
                        config,
                    }),
                    pool: None,
                    joins_pool: request.pool.clone(),
                },
            );
            let seconds = if request.full {
                latency.full_clone
            } else {
                latency.linked_clone
            };
            // A clone that never had the lock fails when the lock's wait times
            // out; the others run their modelled time once they have it.
            let ends = if lock_timeout {
                now + latency.scale.of(STORAGE_LOCK_TIMEOUT)
            } else {
                locked_at + latency.scale.of(seconds)
            };
            // The first of the template's disks is copied after a share of the time.
            let first_disk =
                (seconds / source.disks.len().max(1) as f64 / 2.0).max(latency.storage_lock);
            let named = if lock_timeout {
                ends
            } else {
                locked_at + latency.scale.of(first_disk)
            };
            let upid = w.task(
                node,
                "qmclone",
                template,
                newid,
                Effect::Clone {
                    source: template,
                    lock_timeout,
                },
                ends,
            )?;
            if let Some(t) = w.tasks.last_mut() {
                t.named_at = named;
            }
            Ok(upid)
        })
    }

    async fn configure(&self, node: &str, vmid: u32, config: &VmConfig) -> Result<()> {
        let path = format!("/nodes/{node}/qemu/{vmid}/config");
        self.enter("configure", "PUT", &path).await?;
        let latency = self.world(|w, access, latency| {
            let params = config.params();
            World::validate_config(&path, &params)?;
            access.config_keys(w, "PUT", &path, vmid, &params)?;
            w.configure(&path, node, vmid, params)?;
            Ok(*latency)
        })?;
        latency.scale.sleep(latency.config).await;
        Ok(())
    }

    async fn resize_disk(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        gib: u32,
    ) -> Result<Option<Upid>> {
        const M: &str = "PUT";
        let path = format!("/nodes/{node}/qemu/{vmid}/resize");
        self.enter("resize_disk", M, &path).await?;
        self.world(|w, access, latency| {
            access.vm(w, M, &path, vmid, "VM.Config.Disk")?;
            let vm = w.vm_for_change(M, &path, node, vmid)?;
            // qemu-server `resize_vm`: "disk '$disk' does not exist".
            let Some(&have) = vm.disks.get(disk) else {
                return Err(api(M, &path, 500, format!("disk '{disk}' does not exist")));
            };
            // Then Datastore.AllocateSpace on the disk's storage.
            access.check(
                w,
                M,
                &path,
                &format!("/storage/{DISK_STORAGE}"),
                &["Datastore.AllocateSpace"],
            )?;
            if gib < have {
                return Err(api(M, &path, 500, "shrinking disks is not supported"));
            }
            if let Some(size) = w.vms.get_mut(&vmid).and_then(|vm| vm.disks.get_mut(disk)) {
                *size = gib;
            }
            let ends = Instant::now() + latency.scale.of(latency.resize);
            w.task(node, "qmresize", vmid, vmid, Effect::Resize, ends)
                .map(Some)
        })
    }

    async fn start(&self, node: &str, vmid: u32) -> Result<Upid> {
        const M: &str = "POST";
        let path = format!("/nodes/{node}/qemu/{vmid}/status/start");
        self.enter("start", M, &path).await?;
        self.world(|w, access, latency| {
            access.vm(w, M, &path, vmid, "VM.PowerMgmt")?;
            let vm = w.vm_for_change(M, &path, node, vmid)?;
            if vm.template {
                return Err(api(
                    M,
                    &path,
                    500,
                    "you can't start a vm if it's a template",
                ));
            }
            if vm.running {
                return Err(api(M, &path, 500, format!("VM {vmid} already running")));
            }
            let ends = Instant::now() + latency.scale.of(latency.start);
            w.task(node, "qmstart", vmid, vmid, Effect::Start, ends)
        })
    }

    async fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<Upid> {
        const M: &str = "POST";
        let path = format!("/nodes/{node}/qemu/{vmid}/status/shutdown");
        self.enter("shutdown", M, &path).await?;
        self.world(|w, access, latency| {
            access.vm(w, M, &path, vmid, "VM.PowerMgmt")?;
            let vm = w.vm_for_change(M, &path, node, vmid)?;
            if !vm.running {
                return Err(api(M, &path, 500, format!("VM {vmid} not running")));
            }
            // A guest that ignores ACPI, or is slower than the timeout, fails the
            // task when the timeout runs out.
            let takes = latency.scale.of(latency.shutdown);
            let completes = !vm.ignores_shutdown && takes <= timeout;
            let ends = Instant::now() + if completes { takes } else { timeout };
            w.task(
                node,
                "qmshutdown",
                vmid,
                vmid,
                Effect::Shutdown { completes },
                ends,
            )
        })
    }

    async fn stop(&self, node: &str, vmid: u32) -> Result<Upid> {
        const M: &str = "POST";
        let path = format!("/nodes/{node}/qemu/{vmid}/status/stop");
        self.enter("stop", M, &path).await?;
        self.world(|w, access, latency| {
            access.vm(w, M, &path, vmid, "VM.PowerMgmt")?;
            w.vm_for_change(M, &path, node, vmid)?;
            let ends = Instant::now() + latency.scale.of(latency.stop);
            w.task(node, "qmstop", vmid, vmid, Effect::Stop, ends)
        })
    }

    async fn delete_vm(&self, node: &str, vmid: u32) -> Result<Upid> {
        const M: &str = "DELETE";
        let path = format!("/nodes/{node}/qemu/{vmid}");
        self.enter("delete_vm", M, &path).await?;
        self.world(|w, access, latency| {
            access.vm(w, M, &path, vmid, "VM.Allocate")?;
            let vm = w.vm_for_change(M, &path, node, vmid)?;
            // qemu-server destroy_vm: check_protection($conf, "can't remove VM $vmid").
            if vm.config.get("protection").is_some_and(|p| p == "1") {
                return Err(api(
                    M,
                    &path,
                    500,
                    format!("can't remove VM {vmid} - protection mode enabled"),
                ));
            }
            if vm.running {
                return Err(api(
                    M,
                    &path,
                    500,
                    format!("VM {vmid} is running - destroy failed"),
                ));
            }
            if let Some((id, clone)) = w.vms.iter().find(|(_, v)| v.linked_from == Some(vmid)) {
                return Err(api(
                    M,
                    &path,
                    500,
                    format!(
                        "base volume '{}' is still in use by linked clone '{}'",
                        w.vms
                            .get(&vmid)
                            .map(|base| w.volume_id(vmid, base, 0))
                            .unwrap_or_default(),
                        w.volume_id(*id, clone, 0)
                    ),
                ));
            }
            let ends = Instant::now() + latency.scale.of(latency.delete);
            w.task(node, "qmdestroy", vmid, vmid, Effect::Destroy, ends)
        })
    }

    async fn next_id(&self) -> Result<u32> {
        self.enter("next_id", "GET", "/cluster/nextid").await?;
        self.world(|w, _, _| {
            (100..=999_999_999)
                .find(|id| !w.vms.contains_key(id))
                .ok_or_else(|| api("GET", "/cluster/nextid", 500, "unable to get any free VMID"))
        })
    }

    async fn vmid_free(&self, vmid: u32) -> Result<bool> {
        let path = "/cluster/nextid";
        self.enter("vmid_free", "GET", path).await?;
        // pve-manager Cluster.pm `nextid`: `user => 'all'`, the cluster-wide vmlist,
        // a taken id answered with raise_param_exc({vmid => "VM N already exists"}).
        let taken = self.world(|w, _, _| {
            if w.vms.contains_key(&vmid) {
                Err(bad_param(
                    "GET",
                    path,
                    "vmid",
                    format!("VM {vmid} already exists"),
                ))
            } else {
                Ok(())
            }
        });
        match taken {
            Ok(()) => Ok(true),
            Err(Error::Api {
                status: 400,
                ref params,
                ..
            }) if params
                .get("vmid")
                .is_some_and(|m| m.contains("already exists")) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus> {
        let path = format!("/nodes/{}/tasks/{upid}/status", upid.node());
        self.enter("task_status", "GET", &path).await?;
        self.world(|w, _, _| {
            let task = w
                .tasks
                .iter()
                .find(|t| t.upid == upid.as_str())
                .ok_or_else(|| api("GET", &path, 500, "no such task"))?;
            Ok(match &task.exit {
                None => TaskStatus::Running,
                Some(exit) => TaskStatus::Stopped(TaskExit::parse(exit)),
            })
        })
    }

    async fn task_log(&self, upid: &Upid, lines: usize) -> Result<Vec<String>> {
        let path = format!("/nodes/{}/tasks/{upid}/log", upid.node());
        self.enter("task_log", "GET", &path).await?;
        self.world(|w, _, _| {
            let task = w
                .tasks
                .iter()
                .find(|t| t.upid == upid.as_str())
                .ok_or_else(|| api("GET", &path, 500, "no such task"))?;
            Ok(task.log[task.log.len().saturating_sub(lines)..].to_vec())
        })
    }

    async fn version(&self) -> Result<PveVersion> {
        self.enter("version", "GET", "/version").await?;
        Ok(modelled_version(self.lock().profile))
    }

    async fn permissions(&self, path: &str) -> Result<BTreeMap<String, bool>> {
        // pve-access-control `API2/AccessControl.pm` `permissions`: `user => 'all'`,
        // the token's own privileges on `path`.
        self.enter("permissions", "GET", "/access/permissions")
            .await?;
        self.world(|w, access, _| Ok(access.privileges(w, path)))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        // pve-manager `API2/Nodes.pm` `index`: `user => 'all'`.
        self.enter("nodes", "GET", "/nodes").await?;
        self.world(|w, _, _| {
            Ok(w.nodes
                .iter()
                .map(|n| NodeInfo {
                    node: n.clone(),
                    status: if w.offline_nodes.contains(n) {
                        NodeStatus::Offline
                    } else {
                        NodeStatus::Online
                    },
                })
                .collect())
        })
    }

    async fn storage_status(&self, node: &str, storage: &str) -> Result<StorageStatus> {
        const M: &str = "GET";
        let path = format!("/nodes/{node}/storage/{storage}/status");
        self.enter("storage_status", M, &path).await?;
        // pve-storage `API2/Storage/Status.pm` `read_status`: Datastore.Audit or
        // Datastore.AllocateSpace; an unknown id is `{storage: "No such storage."}`.
        self.world(|w, access, _| {
            access.check_any(
                w,
                M,
                &path,
                &format!("/storage/{storage}"),
                &["Datastore.Audit", "Datastore.AllocateSpace"],
            )?;
            w.node_ok(M, &path, node)?;
            let s = w
                .storages
                .get(storage)
                .ok_or_else(|| bad_param(M, &path, "storage", "No such storage."))?;
            Ok(w.storage_status(storage, s))
        })
    }
}

/// `model[=MAC],rest` with a fresh MAC, as Proxmox assigns one to every new NIC.
fn with_mac(net: &str, seq: u64) -> String {
    let (first, rest) = net.split_once(',').unwrap_or((net, ""));
    let model = first.split('=').next().unwrap_or("virtio");
    if rest.is_empty() {
        format!("{model}={}", mac(seq))
    } else {
        format!("{model}={},{rest}", mac(seq))
    }
}
