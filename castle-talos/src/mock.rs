use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::error::Code;
use crate::{ApplyMode, Error, NodeConn, Result, ServiceHealth, TalosApi};

/// Modelled durations (seconds), times `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// One call.
    pub call: f64,
    /// Apply, install to disk and reboot.
    pub install: f64,
    /// Bootstrap until etcd is healthy.
    pub etcd: f64,
    /// Configured until kubelet is healthy.
    pub kubelet: f64,
    /// Real seconds per modelled second.
    pub scale: f64,
}

impl Latency {
    /// No delays.
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            install: 0.0,
            etcd: 0.0,
            kubelet: 0.0,
            scale: 0.0,
        }
    }
    /// Calibrated from the reference setup: install and reboot ~60 s, etcd ~40 s
    /// after bootstrap, kubelet ~30 s after install.
    pub fn lab() -> Self {
        Self {
            call: 0.05,
            install: 60.0,
            etcd: 40.0,
            kubelet: 30.0,
            scale: 1.0,
        }
    }
    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }
    fn of(&self, s: f64) -> Duration {
        Duration::from_secs_f64((s * self.scale).max(0.0))
    }
}

/// Seeded transient faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rate: f64,
    seed: u64,
}

impl Faults {
    /// Unavailable on `rate` of the calls.
    pub fn transient(seed: u64, rate: f64) -> Self {
        Self { rate, seed }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Stage {
    Maintenance,
    Installing,
    Configured,
}

/// What is persisted of a node: facts, never key material.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    powered: bool,
    stage: Stage,
    role: Option<String>,
    hostname: Option<String>,
    config_sha256: Option<String>,
    extensions: Vec<String>,
    bootstrapped: bool,
}

#[derive(Debug, Default)]
struct Timers {
    installed_at: Option<Instant>,
    etcd_at: Option<Instant>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct World {
    nodes: BTreeMap<String, Record>,
    cluster_bootstrapped: bool,
}

#[derive(Default)]
struct Inner {
    world: World,
    timers: BTreeMap<String, Timers>,
    env: BTreeMap<String, Vec<(String, SecretString)>>,
    latency: Option<Latency>,
    rate: f64,
    rng: Option<StdRng>,
    permanent: BTreeMap<String, String>,
}

/// Talos nodes as the machine API shows them: unreachable until powered on, then
/// in maintenance mode until a config is applied, installing (with a reboot) for a
/// modelled while, then requiring mutual TLS. etcd can be bootstrapped once.
#[derive(Clone)]
pub struct MockTalos {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MockTalos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockTalos")
            .field("nodes", &self.lock().world.nodes.len())
            .finish()
    }
}

impl Default for MockTalos {
    fn default() -> Self {
        Self::new()
    }
}

fn rpc(node: &str, call: &'static str, code: Code, message: impl Into<String>) -> Error {
    Error::Rpc {
        node: node.into(),
        call,
        code,
        message: message.into(),
    }
}

impl MockTalos {
    /// No nodes.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(self, latency: Latency) -> Self {
        self.lock().latency = Some(latency);
        self
    }

    /// Sets the fault model.
    #[must_use]
    pub fn with_faults(self, faults: Faults) -> Self {
        {
            let mut i = self.lock();
            i.rate = faults.rate;
            i.rng = Some(StdRng::seed_from_u64(faults.seed));
        }
        self
    }

    /// Call `call` (`apply`, `bootstrap`, `kubeconfig`, `services`) fails with InvalidArgument.
    pub fn fail_permanently(&self, call: &str, message: &str) {
        self.lock().permanent.insert(call.into(), message.into());
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut i = self.lock();
        i.permanent.clear();
        i.rate = 0.0;
    }

    /// The VM at `ip` booted from the Talos image: maintenance mode, or its
    /// installed config if it had one.
    pub fn power_on(&self, ip: &str) {
        let mut i = self.lock();
        let r = i.world.nodes.entry(ip.into()).or_insert(Record {
            powered: true,
            stage: Stage::Maintenance,
            role: None,
            hostname: None,
            config_sha256: None,
            extensions: vec![],
            bootstrapped: false,
        });
        r.powered = true;
    }

    /// The VM at `ip` was deleted: the node and its disk are gone.
    pub fn power_off(&self, ip: &str) {
        let mut i = self.lock();
        i.world.nodes.remove(ip);
        i.timers.remove(ip);
        i.env.remove(ip);
        if !i.world.nodes.values().any(|n| n.bootstrapped) {
            i.world.cluster_bootstrapped = false;
        }
    }

    /// The environment the node's extension service `name` was given, in memory only
    /// (the lab uses it to join the simulated tailnet).
    pub fn applied_extension_env(
        &self,
        ip: &str,
        name: &str,
    ) -> Option<Vec<(String, SecretString)>> {
        let i = self.lock();
        i.world
            .nodes
            .get(ip)
            .filter(|n| n.extensions.iter().any(|e| e == name))?;
        i.env.get(ip).cloned()
    }

    /// Whether etcd was bootstrapped somewhere in this cluster.
    pub fn is_bootstrapped(&self) -> bool {
        self.lock().world.cluster_bootstrapped
    }

    /// The hostname a node was configured with.
    pub fn hostname_of(&self, ip: &str) -> Option<String> {
        self.lock()
            .world
            .nodes
            .get(ip)
            .and_then(|n| n.hostname.clone())
    }

    /// Facts of every node, as JSON (no key material: configs are kept as digests).
    pub fn snapshot(&self) -> Value {
        let mut i = self.lock();
        i.settle_all();
        serde_json::to_value(&i.world).unwrap_or(Value::Null)
    }

    /// Restores a snapshot; installed nodes come back configured and healthy.
    ///
    /// # Errors
    /// The JSON is not a snapshot.
    pub fn restore(&self, v: &Value) -> Result<()> {
        let w: World = serde_json::from_value(v.clone())
            .map_err(|e| Error::Config(format!("talos snapshot: {e}")))?;
        let mut i = self.lock();
        i.world = w;
        i.timers.clear();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, node: &str, call: &'static str) -> Result<()> {
        let delay = self
            .lock()
            .latency
            .map(|l| l.of(l.call))
            .unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut i = self.lock();
        i.settle(node);
        if let Some(m) = i.permanent.get(call) {
            return Err(rpc(node, call, Code::InvalidArgument, m.clone()));
        }
        let rate = i.rate;
        if rate > 0.0
            && let Some(rng) = i.rng.as_mut()
            && rng.random_bool(rate.clamp(0.0, 1.0))
        {
            return Err(rpc(
                node,
                call,
                Code::Unavailable,
                "injected fault: connection reset by peer",
            ));
        }
        if !i.world.nodes.get(node).is_some_and(|n| n.powered) {
            return Err(rpc(
                node,
                call,
                Code::Unavailable,
                format!("dial tcp {node}:50000: connect: connection refused"),
            ));
        }
        Ok(())
    }
}

impl Inner {
    fn latency(&self) -> Latency {
        self.latency.unwrap_or_else(Latency::instant)
    }

    /// Installing nodes whose time has come are configured.
    fn settle(&mut self, node: &str) {
        let now = Instant::now();
        let installed = self
            .timers
            .get(node)
            .and_then(|t| t.installed_at)
            .is_some_and(|t| t <= now);
        if let Some(r) = self.world.nodes.get_mut(node)
            && r.stage == Stage::Installing
            && (installed || !self.timers.contains_key(node))
        {
            r.stage = Stage::Configured;
        }
    }

    fn settle_all(&mut self) {
        let nodes: Vec<String> = self.world.nodes.keys().cloned().collect();
        for n in nodes {
            if let Some(r) = self.world.nodes.get_mut(&n)
                && r.stage == Stage::Installing
            {
                r.stage = Stage::Configured;
            }
        }
    }
}

fn validate(config: &str) -> std::result::Result<(Value, Vec<(String, Value)>), String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(config).map_err(|e| format!("failed to parse config: {e}"))?;
    let main = docs.first().ok_or("empty config")?.clone();
    if main.get("version").and_then(Value::as_str) != Some("v1alpha1") {
        return Err("unknown config version".into());
    }
    let ty = main
        .pointer("/machine/type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ty != "controlplane" && ty != "worker" {
        return Err(format!("unknown machine type {ty:?}"));
    }
    for (ptr, what) in [
        ("/machine/token", "machine.token"),
        ("/machine/ca/crt", "machine.ca"),
        (
            "/cluster/controlPlane/endpoint",
            "cluster.controlPlane.endpoint",
        ),
        ("/cluster/secret", "cluster.secret"),
        ("/cluster/token", "cluster.token"),
        ("/machine/install/disk", "machine.install.disk"),
    ] {
        if main
            .pointer(ptr)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("{what} is required"));
        }
    }
    if ty == "controlplane" && main.pointer("/cluster/serviceAccount/key").is_none() {
        return Err("cluster.serviceAccount.key is required on a control plane".into());
    }
    let extras = docs[1..]
        .iter()
        .map(|d| {
            let kind = d
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (kind, d.clone())
        })
        .collect();
    Ok((main, extras))
}

#[async_trait]
impl TalosApi for MockTalos {
    async fn apply_configuration(
        &self,
        node: &str,
        config: &SecretString,
        mode: ApplyMode,
        conn: NodeConn,
    ) -> Result<()> {
        self.enter(node, "apply").await?;
        let (main, extras) = validate(config.expose_secret())
            .map_err(|m| rpc(node, "apply", Code::InvalidArgument, m))?;
        let mut i = self.lock();
        let lat = i.latency();
        let rec = i
            .world
            .nodes
            .get(node)
            .cloned()
            .ok_or_else(|| rpc(node, "apply", Code::Unavailable, "connection refused"))?;
        match (rec.stage, conn) {
            (Stage::Installing, _) => {
                return Err(rpc(
                    node,
                    "apply",
                    Code::FailedPrecondition,
                    "apply configuration is already in progress",
                ));
            }
            (Stage::Maintenance, NodeConn::Mtls) => {
                return Err(rpc(
                    node,
                    "apply",
                    Code::Unavailable,
                    "node is in maintenance mode: connect without a client certificate",
                ));
            }
            (Stage::Configured, NodeConn::Maintenance) => {
                return Err(rpc(
                    node,
                    "apply",
                    Code::Unauthenticated,
                    "node is configured: use the talosconfig client certificate",
                ));
            }
            _ => {}
        }
        if mode == ApplyMode::Staged && rec.stage == Stage::Maintenance {
            return Err(rpc(
                node,
                "apply",
                Code::InvalidArgument,
                "staged mode is not supported in maintenance mode",
            ));
        }
        let digest = hex::encode(Sha256::digest(config.expose_secret().as_bytes()));
        if rec.config_sha256.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        let mut env = Vec::new();
        let mut names = Vec::new();
        for (kind, d) in &extras {
            if kind == "ExtensionServiceConfig" {
                let name = d
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                for e in d
                    .get("environment")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some((k, v)) = e.as_str().and_then(|s| s.split_once('=')) {
                        env.push((k.to_string(), SecretString::from(v.to_string())));
                    }
                }
                names.push(name);
            }
        }
        let install = lat.of(lat.install);
        let r = i
            .world
            .nodes
            .get_mut(node)
            .ok_or_else(|| rpc(node, "apply", Code::Unavailable, "connection refused"))?;
        r.role = main
            .pointer("/machine/type")
            .and_then(Value::as_str)
            .map(str::to_string);
        r.hostname = extras
            .iter()
            .find(|(k, _)| k == "HostnameConfig")
            .and_then(|(_, d)| d.get("hostname"))
            .and_then(Value::as_str)
            .map(str::to_string);
        r.config_sha256 = Some(digest);
        r.extensions = names;
        r.stage = Stage::Installing;
        i.env.insert(node.into(), env);
        i.timers.insert(
            node.into(),
            Timers {
                installed_at: Some(Instant::now() + install),
                etcd_at: None,
            },
        );
        Ok(())
    }

    async fn bootstrap(&self, node: &str) -> Result<bool> {
        self.enter(node, "bootstrap").await?;
        let mut i = self.lock();
        let lat = i.latency();
        let r = i
            .world
            .nodes
            .get(node)
            .cloned()
            .ok_or_else(|| rpc(node, "bootstrap", Code::Unavailable, "connection refused"))?;
        if r.stage != Stage::Configured {
            return Err(rpc(
                node,
                "bootstrap",
                Code::FailedPrecondition,
                "bootstrap is not available yet",
            ));
        }
        if r.role.as_deref() != Some("controlplane") {
            return Err(rpc(
                node,
                "bootstrap",
                Code::FailedPrecondition,
                "bootstrap is only allowed on a control plane node",
            ));
        }
        if r.bootstrapped || i.world.cluster_bootstrapped {
            // The real API answers AlreadyExists ("etcd data directory is not empty"):
            // for Castle that means done.
            return Ok(false);
        }
        if let Some(n) = i.world.nodes.get_mut(node) {
            n.bootstrapped = true;
        }
        i.world.cluster_bootstrapped = true;
        let at = Instant::now() + lat.of(lat.etcd);
        i.timers.entry(node.into()).or_default().etcd_at = Some(at);
        Ok(true)
    }

    async fn kubeconfig(&self, node: &str) -> Result<SecretString> {
        self.enter(node, "kubeconfig").await?;
        let i = self.lock();
        let r = &i.world.nodes[node];
        if !r.bootstrapped {
            return Err(rpc(
                node,
                "kubeconfig",
                Code::FailedPrecondition,
                "kubeconfig is not available before bootstrap",
            ));
        }
        let token: String = (0..32)
            .map(|n| char::from(b'a' + ((n * 7 + node.len()) % 26) as u8))
            .collect();
        Ok(SecretString::from(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{node}:6443\ncontexts:\n- name: admin@lab\n  context:\n    cluster: lab\n    user: admin@lab\ncurrent-context: admin@lab\nusers:\n- name: admin@lab\n  user:\n    token: lab-{token}\n"
        )))
    }

    async fn services(&self, node: &str) -> Result<Vec<ServiceHealth>> {
        self.enter(node, "services").await?;
        let i = self.lock();
        let lat = i.latency();
        let r = &i.world.nodes[node];
        let now = Instant::now();
        let t = i.timers.get(node);
        let configured = r.stage == Stage::Configured;
        let kubelet_ok = configured
            && t.and_then(|t| t.installed_at)
                .is_none_or(|at| at + lat.of(lat.kubelet) <= now);
        let mut out = vec![ServiceHealth {
            id: "apid".into(),
            state: "Running".into(),
            healthy: Some(true),
            message: String::new(),
        }];
        if configured {
            out.push(ServiceHealth {
                id: "kubelet".into(),
                state: "Running".into(),
                healthy: Some(kubelet_ok),
                message: if kubelet_ok {
                    "Health check successful".into()
                } else {
                    "waiting for kubelet to become healthy".into()
                },
            });
            if r.role.as_deref() == Some("controlplane") {
                let etcd_ok =
                    r.bootstrapped && t.and_then(|t| t.etcd_at).is_none_or(|at| at <= now);
                out.push(ServiceHealth {
                    id: "etcd".into(),
                    state: if r.bootstrapped {
                        "Running".into()
                    } else {
                        "Preparing".into()
                    },
                    healthy: Some(etcd_ok),
                    message: if etcd_ok {
                        "Health check successful".into()
                    } else {
                        "etcd is waiting to join the cluster".into()
                    },
                });
            }
        }
        Ok(out)
    }

    async fn version(&self, node: &str, conn: NodeConn) -> Result<String> {
        self.enter(node, "version").await?;
        let i = self.lock();
        let r = &i.world.nodes[node];
        if r.stage == Stage::Configured && conn == NodeConn::Maintenance {
            return Err(rpc(
                node,
                "version",
                Code::Unauthenticated,
                "client certificate required",
            ));
        }
        Ok("v1.12.0".into())
    }

    async fn reset(&self, node: &str, _graceful: bool) -> Result<()> {
        self.enter(node, "reset").await?;
        let mut i = self.lock();
        if let Some(r) = i.world.nodes.get_mut(node) {
            *r = Record {
                powered: true,
                stage: Stage::Maintenance,
                role: None,
                hostname: None,
                config_sha256: None,
                extensions: vec![],
                bootstrapped: false,
            };
        }
        i.timers.remove(node);
        i.env.remove(node);
        Ok(())
    }
}
