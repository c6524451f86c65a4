use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{CloneRequest, Error, ProxmoxApi, Result, Upid, VmConfig, VmStatus, VmSummary};

/// Modelled durations (seconds) of Proxmox tasks, times `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// One API call.
    pub call: f64,
    /// A linked clone.
    pub linked_clone: f64,
    /// A full clone.
    pub full_clone: f64,
    /// Start.
    pub start: f64,
    /// Stop or shutdown.
    pub stop: f64,
    /// Delete with purge.
    pub delete: f64,
    /// Real seconds per modelled second.
    pub scale: f64,
}

impl Latency {
    /// Everything instant.
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            linked_clone: 0.0,
            full_clone: 0.0,
            start: 0.0,
            stop: 0.0,
            delete: 0.0,
            scale: 0.0,
        }
    }
    /// Calibrated from the reference setup (its platform layer: ~2 min for 2 VMs
    /// through Terraform): linked clone 15 s, full clone 40 s, start 5 s.
    pub fn lab() -> Self {
        Self {
            call: 0.05,
            linked_clone: 15.0,
            full_clone: 40.0,
            start: 5.0,
            stop: 4.0,
            delete: 5.0,
            scale: 1.0,
        }
    }
    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }
    fn of(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64((seconds * self.scale).max(0.0))
    }
}

/// Seeded transient faults and permanent faults per operation.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rate: f64,
    seed: u64,
}

impl Faults {
    /// A transient 500 on `rate` of the calls, reproducible per seed.
    pub fn transient(seed: u64, rate: f64) -> Self {
        Self { rate, seed }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vm {
    node: String,
    name: String,
    running: bool,
    template: bool,
    tags: Vec<String>,
    lock: Option<String>,
    config: BTreeMap<String, String>,
    disk_gib: u32,
}

#[derive(Debug)]
struct Task {
    done_at: Instant,
    exit: String,
    effect: Effect,
    log: Vec<String>,
}

#[derive(Debug, Clone)]
enum Effect {
    Unlock(u32),
    Run(u32, bool),
    Remove(u32),
    Nothing,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct World {
    vms: BTreeMap<u32, Vm>,
    upids: u64,
}

#[derive(Debug)]
struct Inner {
    world: World,
    tasks: BTreeMap<String, Task>,
    latency: Latency,
    faults: Faults,
    permanent: BTreeMap<String, String>,
    rng: StdRng,
    max_parallel_clones: usize,
}

/// A stateful Proxmox VE node: templates, VMs, tasks that take modelled time, locks.
/// As strict as the real server where Castle could go wrong.
#[derive(Debug, Clone)]
pub struct MockProxmox {
    inner: Arc<Mutex<Inner>>,
}

fn api(method: &'static str, path: String, status: u16, message: impl Into<String>) -> Error {
    Error::Api {
        method,
        path,
        status,
        message: message.into(),
        params: Vec::new(),
    }
}

impl MockProxmox {
    /// A node with no VMs. At most 3 clones from one template run at once; a fourth
    /// meets the storage lock timeout, as on a real node.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                world: World::default(),
                tasks: BTreeMap::new(),
                latency: Latency::instant(),
                faults: Faults::default(),
                permanent: BTreeMap::new(),
                rng: StdRng::seed_from_u64(0),
                max_parallel_clones: 3,
            })),
        }
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(self, latency: Latency) -> Self {
        self.lock().latency = latency;
        self
    }

    /// Sets the fault model.
    #[must_use]
    pub fn with_faults(self, faults: Faults) -> Self {
        {
            let mut i = self.lock();
            i.rng = StdRng::seed_from_u64(faults.seed);
            i.faults = faults;
        }
        self
    }

    /// Operation `op` (`clone`, `start`, `configure`, `delete`, ...) fails with a 403 and `message`.
    pub fn fail_permanently(&self, op: &str, message: &str) {
        self.lock().permanent.insert(op.into(), message.into());
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut i = self.lock();
        i.permanent.clear();
        i.faults = Faults::default();
    }

    /// Adds a template VM.
    pub fn add_template(&self, node: &str, vmid: u32, name: &str) {
        self.lock().world.vms.insert(
            vmid,
            Vm {
                node: node.into(),
                name: name.into(),
                running: false,
                template: true,
                tags: vec![],
                lock: None,
                config: BTreeMap::new(),
                disk_gib: 10,
            },
        );
    }

    /// Adds an ordinary VM (a decoy that is not Castle's, in tests).
    pub fn add_vm(&self, node: &str, vmid: u32, name: &str, tags: &[&str], running: bool) {
        self.lock().world.vms.insert(
            vmid,
            Vm {
                node: node.into(),
                name: name.into(),
                running,
                template: false,
                tags: tags.iter().map(|t| t.to_string()).collect(),
                lock: None,
                config: BTreeMap::new(),
                disk_gib: 10,
            },
        );
    }

    /// A VM's configuration as the mock holds it.
    pub fn config_of(&self, vmid: u32) -> Option<BTreeMap<String, String>> {
        self.lock().world.vms.get(&vmid).map(|v| v.config.clone())
    }

    /// The world as JSON (no secrets in it), for the lab's state file. Running tasks
    /// are completed first: a real node finishes them whether or not we watch.
    pub fn snapshot(&self) -> serde_json::Value {
        let mut i = self.lock();
        let pending: Vec<Effect> = std::mem::take(&mut i.tasks)
            .into_values()
            .map(|t| t.effect)
            .collect();
        for e in pending {
            i.world.apply(&e);
        }
        serde_json::to_value(&i.world).unwrap_or(serde_json::Value::Null)
    }

    /// Restores a snapshot.
    ///
    /// # Errors
    /// When the JSON is not a snapshot.
    pub fn restore(&self, snapshot: &serde_json::Value) -> Result<()> {
        let world: World = serde_json::from_value(snapshot.clone())
            .map_err(|e| Error::Setup(format!("proxmox snapshot: {e}")))?;
        let mut i = self.lock();
        i.world = world;
        i.tasks.clear();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, op: &str, method: &'static str, path: String) -> Result<()> {
        let delay = {
            let i = self.lock();
            i.latency.of(i.latency.call)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut i = self.lock();
        i.tick();
        if let Some(msg) = i.permanent.get(op) {
            return Err(api(method, path, 403, msg.clone()));
        }
        let rate = i.faults.rate;
        if rate > 0.0 && i.rng.random_bool(rate.clamp(0.0, 1.0)) {
            return Err(api(
                method,
                path,
                500,
                "injected fault: proxy loop detected or backend busy",
            ));
        }
        Ok(())
    }
}

impl Default for MockProxmox {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Unlock(id) => {
                if let Some(vm) = self.vms.get_mut(id) {
                    vm.lock = None;
                }
            }
            Effect::Run(id, running) => {
                if let Some(vm) = self.vms.get_mut(id) {
                    vm.running = *running;
                }
            }
            Effect::Remove(id) => {
                self.vms.remove(id);
            }
            Effect::Nothing => {}
        }
    }
}

impl Inner {
    fn tick(&mut self) {
        let now = Instant::now();
        let done: Vec<Effect> = self
            .tasks
            .values_mut()
            .filter(|t| t.done_at <= now)
            .map(|t| std::mem::replace(&mut t.effect, Effect::Nothing))
            .collect();
        for e in done {
            self.world.apply(&e);
        }
    }

    fn task(
        &mut self,
        node: &str,
        kind: &str,
        vmid: u32,
        seconds: f64,
        effect: Effect,
        exit: &str,
    ) -> Upid {
        self.world.upids += 1;
        let raw = format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:{kind}:{vmid}:castle@pve!rebirth:",
            4000 + self.world.upids,
            100_000 + self.world.upids,
            1_700_000_000 + self.world.upids
        );
        let done_at = Instant::now() + self.latency.of(seconds);
        if seconds <= 0.0 || self.latency.scale <= 0.0 {
            self.world.apply(&effect);
            self.tasks.insert(
                raw.clone(),
                Task {
                    done_at,
                    exit: exit.into(),
                    effect: Effect::Nothing,
                    log: vec![format!("TASK {exit}")],
                },
            );
        } else {
            self.tasks.insert(
                raw.clone(),
                Task {
                    done_at,
                    exit: exit.into(),
                    effect,
                    log: vec![format!("starting {kind} of {vmid}"), format!("TASK {exit}")],
                },
            );
        }
        Upid {
            raw,
            node: node.into(),
            kind: kind.into(),
            id: vmid.to_string(),
        }
    }

    fn vm(&self, node: &str, vmid: u32, method: &'static str, path: &str) -> Result<&Vm> {
        self.world
            .vms
            .get(&vmid)
            .filter(|v| v.node == node)
            .ok_or_else(|| {
                api(
                    method,
                    path.to_string(),
                    500,
                    format!(
                        "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
                    ),
                )
            })
    }
}

fn check_net0(v: &str) -> bool {
    let mut parts = v.split(',');
    parts
        .next()
        .is_some_and(|m| m == "virtio" || m.starts_with("virtio="))
        && v.contains("bridge=")
}

fn check_ipconfig(v: &str) -> bool {
    v.split(',').all(|kv| match kv.split_once('=') {
        Some(("ip", ip)) => ip == "dhcp" || ip.contains('/'),
        Some(("gw", gw)) => gw.parse::<std::net::IpAddr>().is_ok(),
        _ => false,
    })
}

#[async_trait]
impl ProxmoxApi for MockProxmox {
    async fn list_vms(&self) -> Result<Vec<VmSummary>> {
        self.enter("list", "GET", "/cluster/resources".into())
            .await?;
        let i = self.lock();
        Ok(i.world
            .vms
            .iter()
            .map(|(id, v)| VmSummary {
                vmid: *id,
                node: v.node.clone(),
                name: v.name.clone(),
                status: if v.running { "running" } else { "stopped" }.into(),
                template: v.template,
                tags: v.tags.clone(),
                lock: v.lock.clone(),
            })
            .collect())
    }

    async fn vm_status(&self, node: &str, vmid: u32) -> Result<Option<VmStatus>> {
        self.enter(
            "status",
            "GET",
            format!("/nodes/{node}/qemu/{vmid}/status/current"),
        )
        .await?;
        let i = self.lock();
        Ok(i.world
            .vms
            .get(&vmid)
            .filter(|v| v.node == node)
            .map(|v| VmStatus {
                status: if v.running { "running" } else { "stopped" }.into(),
                name: v.name.clone(),
                tags: v.tags.clone(),
                lock: v.lock.clone(),
                template: v.template,
            }))
    }

    async fn clone_vm(&self, node: &str, template: u32, r: &CloneRequest) -> Result<Upid> {
        let path = format!("/nodes/{node}/qemu/{template}/clone");
        self.enter("clone", "POST", path.clone()).await?;
        let mut i = self.lock();
        let src = i.vm(node, template, "POST", &path)?.clone();
        if i.world.vms.contains_key(&r.newid) {
            return Err(Error::Api {
                method: "POST",
                path,
                status: 400,
                message: "Parameter verification failed.".into(),
                params: vec![(
                    "newid".into(),
                    format!("VM {} already exists on node '{node}'", r.newid),
                )],
            });
        }
        if r.newid < 100 {
            return Err(Error::Api {
                method: "POST",
                path,
                status: 400,
                message: "Parameter verification failed.".into(),
                params: vec![(
                    "newid".into(),
                    "value must have a minimum value of 100".into(),
                )],
            });
        }
        if r.storage.is_some() && !r.full {
            return Err(Error::Api {
                method: "POST",
                path,
                status: 400,
                message: "Parameter verification failed.".into(),
                params: vec![("storage".into(), "is only allowed for full clones".into())],
            });
        }
        if !src.template && !r.full {
            return Err(api(
                "POST",
                path,
                500,
                "linked clone feature is not supported for non-template VMs",
            ));
        }
        let cloning = i
            .world
            .vms
            .values()
            .filter(|v| v.lock.as_deref() == Some("clone"))
            .count();
        if cloning >= i.max_parallel_clones {
            return Err(api(
                "POST",
                path,
                500,
                format!(
                    "clone failed: can't lock file '/var/lock/qemu-server/lock-{template}.conf' - got timeout"
                ),
            ));
        }
        i.world.vms.insert(
            r.newid,
            Vm {
                node: node.into(),
                name: r.name.clone(),
                running: false,
                template: false,
                tags: vec![],
                lock: Some("clone".into()),
                config: BTreeMap::new(),
                disk_gib: src.disk_gib,
            },
        );
        let secs = if r.full {
            i.latency.full_clone
        } else {
            i.latency.linked_clone
        };
        Ok(i.task(
            node,
            "qmclone",
            r.newid,
            secs,
            Effect::Unlock(r.newid),
            "OK",
        ))
    }

    async fn configure(&self, node: &str, vmid: u32, c: &VmConfig) -> Result<()> {
        let path = format!("/nodes/{node}/qemu/{vmid}/config");
        self.enter("configure", "PUT", path.clone()).await?;
        let mut i = self.lock();
        let vm = i.vm(node, vmid, "PUT", &path)?;
        if let Some(lock) = &vm.lock {
            return Err(api("PUT", path, 500, format!("VM is locked ({lock})")));
        }
        let mut bad = Vec::new();
        if c.memory.is_some_and(|m| m < 16) {
            bad.push((
                "memory".to_string(),
                "value must have a minimum value of 16".to_string(),
            ));
        }
        if c.cores.is_some_and(|n| n == 0 || n > 128) {
            bad.push(("cores".into(), "value must be between 1 and 128".into()));
        }
        if c.net0.as_deref().is_some_and(|n| !check_net0(n)) {
            bad.push((
                "net0".into(),
                "invalid format - missing bridge or model".into(),
            ));
        }
        if c.ipconfig0.as_deref().is_some_and(|n| !check_ipconfig(n)) {
            bad.push(("ipconfig0".into(), "invalid format".into()));
        }
        if let Some(tags) = &c.tags
            && let Some(t) = tags.iter().find(|t| {
                t.is_empty()
                    || !t
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-_.+".contains(ch))
            })
        {
            bad.push(("tags".into(), format!("invalid tag '{t}'")));
        }
        if !bad.is_empty() {
            return Err(Error::Api {
                method: "PUT",
                path,
                status: 400,
                message: "Parameter verification failed.".into(),
                params: bad,
            });
        }
        let vm = i
            .world
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| Error::Refused(format!("vm {vmid} vanished")))?;
        for (k, v) in c.params() {
            vm.config.insert(k.into(), v.clone());
            if k == "tags" {
                vm.tags = v.split(';').map(str::to_string).collect();
            }
        }
        Ok(())
    }

    async fn resize_disk(&self, node: &str, vmid: u32, disk: &str, gib: u32) -> Result<()> {
        let path = format!("/nodes/{node}/qemu/{vmid}/resize");
        self.enter("resize", "PUT", path.clone()).await?;
        let mut i = self.lock();
        let vm = i.vm(node, vmid, "PUT", &path)?;
        if disk != "scsi0" {
            return Err(Error::Api {
                method: "PUT",
                path,
                status: 400,
                message: "Parameter verification failed.".into(),
                params: vec![("disk".into(), format!("no such disk '{disk}'"))],
            });
        }
        if gib < vm.disk_gib {
            return Err(api("PUT", path, 500, "shrinking disks is not supported"));
        }
        if let Some(vm) = i.world.vms.get_mut(&vmid) {
            vm.disk_gib = gib;
        }
        Ok(())
    }

    async fn start(&self, node: &str, vmid: u32) -> Result<Upid> {
        let path = format!("/nodes/{node}/qemu/{vmid}/status/start");
        self.enter("start", "POST", path.clone()).await?;
        let mut i = self.lock();
        let vm = i.vm(node, vmid, "POST", &path)?;
        if vm.template {
            return Err(api(
                "POST",
                path,
                500,
                "you can't start a vm if it's a template",
            ));
        }
        if let Some(lock) = &vm.lock {
            return Err(api("POST", path, 500, format!("VM is locked ({lock})")));
        }
        let (secs, exit) = if vm.running {
            (0.0, "OK")
        } else {
            (i.latency.start, "OK")
        };
        Ok(i.task(node, "qmstart", vmid, secs, Effect::Run(vmid, true), exit))
    }

    async fn shutdown(&self, node: &str, vmid: u32, _timeout: Duration) -> Result<Upid> {
        let path = format!("/nodes/{node}/qemu/{vmid}/status/shutdown");
        self.enter("shutdown", "POST", path.clone()).await?;
        let mut i = self.lock();
        i.vm(node, vmid, "POST", &path)?;
        let secs = i.latency.stop;
        Ok(i.task(
            node,
            "qmshutdown",
            vmid,
            secs,
            Effect::Run(vmid, false),
            "OK",
        ))
    }

    async fn stop(&self, node: &str, vmid: u32) -> Result<Upid> {
        let path = format!("/nodes/{node}/qemu/{vmid}/status/stop");
        self.enter("stop", "POST", path.clone()).await?;
        let mut i = self.lock();
        i.vm(node, vmid, "POST", &path)?;
        let secs = i.latency.stop / 4.0;
        Ok(i.task(node, "qmstop", vmid, secs, Effect::Run(vmid, false), "OK"))
    }

    async fn delete(&self, node: &str, vmid: u32) -> Result<Upid> {
        let path = format!("/nodes/{node}/qemu/{vmid}");
        self.enter("delete", "DELETE", path.clone()).await?;
        let mut i = self.lock();
        let vm = i.vm(node, vmid, "DELETE", &path)?;
        if vm.running {
            return Err(api(
                "DELETE",
                path,
                500,
                format!("VM {vmid} is running - destroy failed"),
            ));
        }
        if let Some(lock) = &vm.lock {
            return Err(api("DELETE", path, 500, format!("VM is locked ({lock})")));
        }
        let secs = i.latency.delete;
        if let Some(v) = i.world.vms.get_mut(&vmid) {
            v.lock = Some("destroyed".into());
        }
        Ok(i.task(node, "qmdestroy", vmid, secs, Effect::Remove(vmid), "OK"))
    }

    async fn next_id(&self) -> Result<u32> {
        self.enter("nextid", "GET", "/cluster/nextid".into())
            .await?;
        let i = self.lock();
        Ok((100..)
            .find(|id| !i.world.vms.contains_key(id))
            .unwrap_or(100))
    }

    async fn task_status(&self, upid: &Upid) -> Result<Option<String>> {
        let path = format!("/nodes/{}/tasks/{}/status", upid.node, upid.raw);
        self.enter("task", "GET", path.clone()).await?;
        let i = self.lock();
        let task = i
            .tasks
            .get(&upid.raw)
            .ok_or_else(|| api("GET", path, 500, "no such task"))?;
        Ok((task.done_at <= Instant::now()).then(|| task.exit.clone()))
    }

    async fn task_log_tail(&self, upid: &Upid, lines: usize) -> Result<String> {
        let i = self.lock();
        Ok(i.tasks
            .get(&upid.raw)
            .map(|t| {
                t.log
                    .iter()
                    .rev()
                    .take(lines)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default())
    }
}
