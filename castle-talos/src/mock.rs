use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
pub use castle_sim::Faults;
use castle_sim::{Fault, FaultInjector, Scale};
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
    pub scale: Scale,
}

impl Latency {
    /// No delays.
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            install: 0.0,
            etcd: 0.0,
            kubelet: 0.0,
            scale: Scale::INSTANT,
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
            scale: Scale::REAL,
        }
    }
    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = Scale(scale);
        self
    }
}

/// The calls of [`TalosApi`] by the names faults use.
pub const OPS: &[&str] = &[
    "connection",
    "apply",
    "bootstrap",
    "kubeconfig",
    "services",
    "version",
    "reset",
];

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
    /// sha256 of the v1alpha1 document without what Talos applies immediately: a
    /// change here needs a reboot.
    #[serde(default)]
    reboot_sha256: Option<String>,
    extensions: Vec<String>,
    bootstrapped: bool,
    /// The Kubernetes API URL and CA certificate (public) the config carried.
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    k8s_ca_crt: Option<String>,
    /// The os CA (public) whose client certificates the configured node accepts.
    #[serde(default)]
    os_ca_crt: Option<String>,
}

impl Record {
    fn fresh() -> Self {
        Self {
            powered: true,
            stage: Stage::Maintenance,
            role: None,
            hostname: None,
            config_sha256: None,
            reboot_sha256: None,
            extensions: vec![],
            bootstrapped: false,
            endpoint: None,
            cluster_name: None,
            k8s_ca_crt: None,
            os_ca_crt: None,
        }
    }
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
    /// Kubernetes CA keys of configured control planes: memory only, like `env`, so a
    /// restored world needs its configs applied again before it hands out kubeconfigs.
    k8s_ca_keys: BTreeMap<String, SecretString>,
    latency: Option<Latency>,
    /// A transient fault is an Unavailable "connection reset by peer".
    faults: FaultInjector,
}

/// Talos nodes as the machine API shows them: unreachable until powered on, then
/// in maintenance mode until a config is applied, installing (with a reboot) for a
/// modelled while, then requiring mutual TLS. etcd can be bootstrapped once.
#[derive(Clone)]
pub struct MockTalos {
    inner: Arc<Mutex<Inner>>,
    /// The os CA certificate of the talosconfig this handle speaks with (the CA
    /// that signed its client certificate); `None`: a handle without one, which
    /// configured nodes refuse at the handshake.
    client_ca: Option<String>,
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
            client_ca: None,
        }
    }

    /// The same nodes, seen by a client holding `talosconfig` (its current
    /// context's CA and client certificate), as `TalosClient::new` would.
    ///
    /// # Errors
    /// The text is not a talosconfig with a `ca`.
    pub fn with_talosconfig(&self, talosconfig: &SecretString) -> Result<Self> {
        use base64::Engine as _;
        let v: Value = serde_saphyr::from_str(talosconfig.expose_secret())
            .map_err(|_| Error::Config("not a talosconfig (YAML with contexts)".into()))?;
        let name = v.get("context").and_then(Value::as_str).unwrap_or_default();
        let ca = v
            .pointer(&format!("/contexts/{name}/ca"))
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::Config(format!("talosconfig context {name:?}: no `ca`")))?;
        Ok(Self {
            inner: Arc::clone(&self.inner),
            client_ca: Some(ca),
        })
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
        self.lock().faults.set(faults);
        self
    }

    /// Every later call of `op` (one of [`OPS`]) fails with InvalidArgument and `message`.
    ///
    /// # Errors
    /// `op` is not an operation name.
    pub fn fail_permanently(&self, op: &str, message: &str) -> Result<()> {
        castle_sim::check_op(OPS, op).map_err(|e| Error::Config(format!("mock: {e}")))?;
        self.lock().faults.fail_permanently(op, message.into());
        Ok(())
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The VM at `ip` booted from the Talos image: maintenance mode, or its
    /// installed config if it had one.
    pub fn power_on(&self, ip: &str) {
        let mut i = self.lock();
        i.world
            .nodes
            .entry(ip.into())
            .or_insert_with(Record::fresh)
            .powered = true;
    }

    /// The VM at `ip` was deleted: the node and its disk are gone.
    pub fn power_off(&self, ip: &str) {
        let mut i = self.lock();
        i.world.nodes.remove(ip);
        i.timers.remove(ip);
        i.env.remove(ip);
        i.k8s_ca_keys.remove(ip);
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

    /// A restored control plane at `ip` has its Kubernetes CA's key again (the
    /// node's disk keeps its PKI; a snapshot keeps no key material), when `crt` is
    /// the CA it was configured with: it then serves a kubeconfig without a
    /// re-applied config.
    pub fn recover_k8s_ca_key(&self, ip: &str, crt: &str, key: &SecretString) {
        let mut i = self.lock();
        let same = i.world.nodes.get(ip).is_some_and(|r| {
            r.role.as_deref() == Some("controlplane")
                && r.k8s_ca_crt.as_deref().map(str::trim) == Some(crt.trim())
        });
        if same {
            i.k8s_ca_keys.insert(ip.into(), key.clone());
        }
    }

    /// Whether the node at `ip` runs a healthy kubelet (configured, and its
    /// kubelet's modelled start-up over), as `services` would say.
    pub fn kubelet_healthy(&self, ip: &str) -> bool {
        let mut i = self.lock();
        i.settle(ip);
        let lat = i.latency();
        let now = Instant::now();
        i.world.nodes.get(ip).is_some_and(|r| {
            r.powered
                && r.stage == Stage::Configured
                && i.timers
                    .get(ip)
                    .and_then(|t| t.installed_at)
                    .is_none_or(|at| at + lat.scale.of(lat.kubelet) <= now)
        })
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
    /// A node still installing is recorded as installed: the modelled clock does not
    /// survive the process.
    pub fn snapshot(&self) -> Value {
        let i = self.lock();
        let mut world = World {
            nodes: i.world.nodes.clone(),
            cluster_bootstrapped: i.world.cluster_bootstrapped,
        };
        for r in world.nodes.values_mut() {
            if r.stage == Stage::Installing {
                r.stage = Stage::Configured;
            }
        }
        serde_json::to_value(&world).unwrap_or(Value::Null)
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
        i.env.clear();
        i.k8s_ca_keys.clear();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One call's entry: its latency, then faults and reachability, under the lock.
    async fn enter(
        &self,
        node: &str,
        call: &'static str,
    ) -> Result<std::sync::MutexGuard<'_, Inner>> {
        let latency = self.lock().latency();
        latency.scale.sleep(latency.call).await;
        let mut i = self.lock();
        i.settle(node);
        match i.faults.draw([call]) {
            Some(Fault::Permanent(m)) => return Err(rpc(node, call, Code::InvalidArgument, m)),
            Some(Fault::Transient) => {
                return Err(rpc(
                    node,
                    call,
                    Code::Unavailable,
                    "injected fault: connection reset by peer",
                ));
            }
            None => {}
        }
        if !i.world.nodes.get(node).is_some_and(|n| n.powered) {
            return Err(rpc(
                node,
                call,
                Code::Unavailable,
                format!("dial tcp {node}:50000: connect: connection refused"),
            ));
        }
        Ok(i)
    }
}

impl MockTalos {
    /// The TLS handshake as apid and Castle's client would have it, before any call
    /// reaches machined:
    /// - a node in maintenance mode serves a self-signed certificate and asks for
    ///   no client certificate: a client verifying the os CA refuses it;
    /// - a configured (or installing) node asks for a client certificate and
    ///   refuses the handshake without one (apid's `RequireAndVerifyClientCert`,
    ///   internal/app/apid/main.go at v1.12.11): Unavailable, never Unauthenticated;
    /// - its certificate is signed by the os CA it was configured with: a client
    ///   holding another cluster's talosconfig refuses it.
    fn handshake(
        &self,
        node: &str,
        call: &'static str,
        rec: &Record,
        conn: NodeConn,
    ) -> Result<()> {
        let refuse = |m: String| Err(rpc(node, call, Code::Unavailable, m));
        match (rec.stage, conn) {
            (Stage::Maintenance, NodeConn::Maintenance) => Ok(()),
            (Stage::Maintenance, NodeConn::Mtls) => refuse(format!(
                "transport: authentication handshake failed: tls: {node} presented a certificate not signed by the os CA (invalid peer certificate: UnknownIssuer): the node is in maintenance mode"
            )),
            (_, NodeConn::Maintenance) => refuse(
                "connection error: desc = \"error reading server preface: remote error: tls: certificate required\"".into(),
            ),
            (_, NodeConn::Mtls) => match (&self.client_ca, &rec.os_ca_crt) {
                (None, _) => Err(Error::Config(format!(
                    "{call} on {node} needs mutual TLS: give the client a talosconfig"
                ))),
                (Some(client), Some(node_ca)) if client != node_ca => refuse(format!(
                    "transport: authentication handshake failed: tls: {node} presented a certificate not signed by the talosconfig's os CA (invalid peer certificate: UnknownIssuer): the node belongs to another secrets bundle"
                )),
                _ => Ok(()),
            },
        }
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

    fn record(&self, node: &str, call: &'static str) -> Result<Record> {
        self.world.nodes.get(node).cloned().ok_or_else(|| {
            rpc(
                node,
                call,
                Code::Unavailable,
                format!("dial tcp {node}:50000: connect: connection refused"),
            )
        })
    }
}

/// What the mock keeps of an accepted config.
struct Accepted {
    reboot_sha256: String,
    role: String,
    hostname: Option<String>,
    endpoint: String,
    cluster_name: Option<String>,
    k8s_ca: Option<(String, SecretString)>,
    os_ca: String,
    extensions: Vec<String>,
    env: Vec<(String, SecretString)>,
}

fn pem_field(main: &Value, ptr: &str, what: &str) -> std::result::Result<Option<String>, String> {
    use base64::Engine as _;
    let Some(v) = main.pointer(ptr) else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|p| p.starts_with("-----BEGIN "))
        .map(Some)
        .ok_or_else(|| format!("{what}: not base64-encoded PEM"))
}

/// Parses and checks a config stream as machined would before accepting it.
fn validate(config: &str) -> std::result::Result<Accepted, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(config).map_err(|e| format!("failed to parse config: {e}"))?;
    // A node cloned from the nocloud image runs in cloud mode (platform/nocloud
    // `Mode`): it accepts a config without `machine.install`, as the real one does.
    let problems = crate::rules::validate_documents_in(&docs, crate::rules::RuntimeMode::Cloud);
    if !problems.is_empty() {
        // internal/app/maintenance/server.go: the node's own validation, its words.
        return Err(format!(
            "configuration validation failed: {}",
            problems.join("; ")
        ));
    }
    let main = docs.first().ok_or("empty config")?;
    if main.get("version").and_then(Value::as_str) != Some("v1alpha1") {
        return Err("unknown config version".into());
    }
    let role = main
        .pointer("/machine/type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if role != "controlplane" && role != "worker" {
        return Err(format!("unknown machine type {role:?}"));
    }
    for (ptr, what) in [
        ("/machine/token", "machine.token"),
        ("/machine/ca/crt", "machine.ca"),
        (
            "/cluster/controlPlane/endpoint",
            "cluster.controlPlane.endpoint",
        ),
        ("/cluster/id", "cluster.id"),
        ("/cluster/secret", "cluster.secret"),
        ("/cluster/token", "cluster.token"),
        ("/cluster/ca/crt", "cluster.ca"),
    ] {
        if main
            .pointer(ptr)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("{what} is required"));
        }
    }
    let os_ca = pem_field(main, "/machine/ca/crt", "machine.ca.crt")?.unwrap_or_default();
    let k8s_crt = pem_field(main, "/cluster/ca/crt", "cluster.ca.crt")?;
    let k8s_key = pem_field(main, "/cluster/ca/key", "cluster.ca.key")?;
    if role == "controlplane" {
        for (ptr, what) in [
            ("/machine/ca/key", "machine.ca.key"),
            ("/cluster/ca/key", "cluster.ca.key"),
            ("/cluster/serviceAccount/key", "cluster.serviceAccount.key"),
            ("/cluster/etcd/ca/key", "cluster.etcd.ca.key"),
            ("/cluster/aggregatorCA/key", "cluster.aggregatorCA.key"),
        ] {
            pem_field(main, ptr, what)?
                .ok_or_else(|| format!("{what} is required on a control plane"))?;
        }
    }
    let endpoint = main
        .pointer("/cluster/controlPlane/endpoint")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !endpoint.starts_with("https://") {
        return Err(format!(
            "cluster.controlPlane.endpoint {endpoint:?}: must be an https URL"
        ));
    }
    let mut accepted = Accepted {
        reboot_sha256: reboot_digest(main),
        role: role.into(),
        hostname: None,
        endpoint: endpoint.into(),
        cluster_name: main
            .pointer("/cluster/clusterName")
            .and_then(Value::as_str)
            .map(str::to_string),
        k8s_ca: k8s_crt.zip(k8s_key.map(SecretString::from)),
        os_ca,
        extensions: vec![],
        env: vec![],
    };
    for d in &docs[1..] {
        let kind = d.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind.is_empty() || d.get("apiVersion").and_then(Value::as_str).is_none() {
            return Err("a document without apiVersion and kind".into());
        }
        match kind {
            "HostnameConfig" => {
                accepted.hostname = d
                    .get("hostname")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            "ExtensionServiceConfig" => {
                let name = d
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or("ExtensionServiceConfig: name is required")?;
                if accepted.extensions.iter().any(|e| e == name) {
                    return Err(format!("ExtensionServiceConfig {name}: duplicate document"));
                }
                for e in d
                    .get("environment")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (k, v) = e.as_str().and_then(|s| s.split_once('=')).ok_or_else(|| {
                        format!("ExtensionServiceConfig {name}: environment entries are KEY=value")
                    })?;
                    // Only the extension the lab couples keeps its environment.
                    if name == "tailscale" {
                        accepted
                            .env
                            .push((k.to_string(), SecretString::from(v.to_string())));
                    }
                }
                accepted.extensions.push(name.to_string());
            }
            _ => {}
        }
    }
    Ok(accepted)
}

/// What of a v1alpha1 document needs a reboot to change: the document without the
/// fields Talos applies immediately (`Runtime.CanApplyImmediate`,
/// internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_runtime.go at v1.12.11), as a
/// digest. New-style documents (hostname, links, ...) always apply immediately.
fn reboot_digest(main: &Value) -> String {
    const MACHINE: &[&str] = &[
        "ca",
        "acceptedCAs",
        "time",
        "certSANs",
        "install",
        "network",
        "sysfs",
        "sysctls",
        "logging",
        "controlplane",
        "kubelet",
        "kernel",
        "registries",
        "pods",
        "seccompProfiles",
        "nodeAnnotations",
        "nodeLabels",
        "nodeTaints",
    ];
    const FEATURES: &[&str] = &[
        "kubernetesTalosAPIAccess",
        "kubePrism",
        "hostDNS",
        "imageCache",
        "nodeAddressSortAlgorithm",
    ];
    let mut rest = main.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("debug");
        o.remove("cluster");
    }
    if let Some(m) = rest.get_mut("machine").and_then(Value::as_object_mut) {
        MACHINE.iter().for_each(|k| {
            m.remove(*k);
        });
        if let Some(f) = m.get_mut("features").and_then(Value::as_object_mut) {
            FEATURES.iter().for_each(|k| {
                f.remove(*k);
            });
        }
    }
    hex::encode(Sha256::digest(rest.to_string().as_bytes()))
}

/// A fresh admin kubeconfig, as machined issues one on every call: a client
/// certificate (O=system:masters) signed by the cluster's Kubernetes CA.
fn admin_kubeconfig(
    name: &str,
    endpoint: &str,
    ca_crt: &str,
    ca_key: &SecretString,
) -> std::result::Result<SecretString, String> {
    use base64::Engine as _;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let e = |e: rcgen::Error| e.to_string();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        ca_crt,
        KeyPair::from_pem(ca_key.expose_secret()).map_err(e)?,
    )
    .map_err(e)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:masters");
    dn.push(DnType::CommonName, "admin");
    p.distinguished_name = dn;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365);
    let cert = p.signed_by(&key, &issuer).map_err(e)?;
    let ctx = format!("admin@{name}");
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": { "server": endpoint, "certificate-authority-data": b64(ca_crt) } }],
        "users": [{ "name": ctx, "user": {
            "client-certificate-data": b64(&cert.pem()),
            "client-key-data": b64(&key.serialize_pem()),
        } }],
        "contexts": [{ "name": ctx, "context": { "cluster": name, "namespace": "default", "user": ctx } }],
        "current-context": ctx,
    });
    serde_saphyr::to_string(&v)
        .map(SecretString::from)
        .map_err(|e| e.to_string())
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
        const CALL: &str = "apply";
        let mut i = self.enter(node, CALL).await?;
        let rec = i.record(node, CALL)?;
        self.handshake(node, CALL, &rec, conn)?;
        if rec.stage == Stage::Installing {
            // v1alpha1_server.go ApplyConfiguration (v1.12.11), after a reboot-mode
            // apply; the install from maintenance mode reboots the same way.
            return Err(rpc(
                node,
                CALL,
                Code::FailedPrecondition,
                "configuration was already applied and node is rebooting, cannot apply more configuration changes until next reboot",
            ));
        }
        // internal/app/maintenance/server.go (v1.12.11): only REBOOT, AUTO and TRY
        // are served before a node has a config.
        if rec.stage == Stage::Maintenance
            && matches!(mode, ApplyMode::NoReboot | ApplyMode::Staged)
        {
            let name = if mode == ApplyMode::NoReboot {
                "no-reboot"
            } else {
                "staged"
            };
            return Err(rpc(
                node,
                CALL,
                Code::Unimplemented,
                format!("apply configuration --mode='{name}' is not supported in maintenance mode"),
            ));
        }
        let a = validate(config.expose_secret()).map_err(|m| {
            // machined answers a configured node with the bare validation error.
            let m = match rec.stage {
                Stage::Configured => m.replacen("configuration validation failed: ", "", 1),
                _ => m,
            };
            rpc(node, CALL, Code::InvalidArgument, m)
        })?;
        let immediate = rec.reboot_sha256.as_deref() == Some(a.reboot_sha256.as_str());
        if rec.stage == Stage::Configured && mode == ApplyMode::NoReboot && !immediate {
            return Err(rpc(
                node,
                CALL,
                Code::InvalidArgument,
                "this config change can't be applied in immediate mode",
            ));
        }
        if rec.stage == Stage::Configured && mode == ApplyMode::Staged {
            // Persisted for the next boot; nothing changes now.
            return Ok(());
        }
        let digest = hex::encode(Sha256::digest(config.expose_secret().as_bytes()));
        // What lives only in memory is taken again, so a restored world recovers it by
        // re-applying the same config (a no-op for the node).
        i.env.insert(node.into(), a.env);
        match &a.k8s_ca {
            Some((_, key)) if a.role == "controlplane" => {
                i.k8s_ca_keys.insert(node.into(), key.clone());
            }
            _ => {
                i.k8s_ca_keys.remove(node);
            }
        }
        if rec.config_sha256.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        let lat = i.latency();
        let reboot = rec.stage == Stage::Maintenance
            || matches!(mode, ApplyMode::Reboot)
            || (mode == ApplyMode::Auto && !immediate);
        let r = i
            .world
            .nodes
            .get_mut(node)
            .ok_or_else(|| rpc(node, CALL, Code::Unavailable, "connection refused"))?;
        r.role = Some(a.role);
        r.hostname = a.hostname;
        r.config_sha256 = Some(digest);
        r.reboot_sha256 = Some(a.reboot_sha256);
        r.extensions = a.extensions;
        r.endpoint = Some(a.endpoint);
        r.cluster_name = a.cluster_name;
        r.k8s_ca_crt = a.k8s_ca.map(|(crt, _)| crt);
        r.os_ca_crt = Some(a.os_ca);
        if reboot {
            r.stage = Stage::Installing;
            i.timers.insert(
                node.into(),
                Timers {
                    installed_at: Some(Instant::now() + lat.scale.of(lat.install)),
                    etcd_at: None,
                },
            );
        }
        Ok(())
    }

    async fn bootstrap(&self, node: &str) -> Result<bool> {
        const CALL: &str = "bootstrap";
        let mut i = self.enter(node, CALL).await?;
        let lat = i.latency();
        let r = i.record(node, CALL)?;
        self.handshake(node, CALL, &r, NodeConn::Mtls)?;
        if r.stage != Stage::Configured {
            return Err(rpc(
                node,
                CALL,
                Code::FailedPrecondition,
                "bootstrap is not available yet",
            ));
        }
        if r.role.as_deref() != Some("controlplane") {
            return Err(rpc(
                node,
                CALL,
                Code::FailedPrecondition,
                "bootstrap can only be performed on a control plane node",
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
        let at = Instant::now() + lat.scale.of(lat.etcd);
        i.timers.entry(node.into()).or_default().etcd_at = Some(at);
        Ok(true)
    }

    async fn kubeconfig(&self, node: &str) -> Result<SecretString> {
        const CALL: &str = "kubeconfig";
        let i = self.enter(node, CALL).await?;
        let r = i.record(node, CALL)?;
        self.handshake(node, CALL, &r, NodeConn::Mtls)?;
        if r.stage != Stage::Configured {
            return Err(rpc(
                node,
                CALL,
                Code::Unavailable,
                "the node is not configured",
            ));
        }
        if r.role.as_deref() != Some("controlplane") {
            return Err(rpc(
                node,
                CALL,
                Code::Unknown,
                "kubeconfig is only served by control plane nodes",
            ));
        }
        if !i.world.cluster_bootstrapped {
            return Err(rpc(
                node,
                CALL,
                Code::FailedPrecondition,
                "kubeconfig is not available before bootstrap",
            ));
        }
        let (Some(endpoint), Some(crt), Some(key)) =
            (&r.endpoint, &r.k8s_ca_crt, i.k8s_ca_keys.get(node))
        else {
            return Err(rpc(
                node,
                CALL,
                Code::FailedPrecondition,
                "the mock was restored without the node's Kubernetes CA key: apply its config again",
            ));
        };
        admin_kubeconfig(
            r.cluster_name.as_deref().unwrap_or("talos"),
            endpoint,
            crt,
            key,
        )
        .map_err(|m| {
            rpc(
                node,
                CALL,
                Code::Unknown,
                format!("signing the admin certificate: {m}"),
            )
        })
    }

    async fn services(&self, node: &str) -> Result<Vec<ServiceHealth>> {
        const CALL: &str = "services";
        let i = self.enter(node, CALL).await?;
        let lat = i.latency();
        let r = i.record(node, CALL)?;
        self.handshake(node, CALL, &r, NodeConn::Mtls)?;
        let now = Instant::now();
        let t = i.timers.get(node);
        let configured = r.stage == Stage::Configured;
        let kubelet_ok = configured
            && t.and_then(|t| t.installed_at)
                .is_none_or(|at| at + lat.scale.of(lat.kubelet) <= now);
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
                // Bootstrapped once, on one control plane; the others join that
                // etcd once it is up (and they are installed).
                let cluster_up = i.world.cluster_bootstrapped
                    && i.timers
                        .values()
                        .filter_map(|t| t.etcd_at)
                        .all(|at| at <= now);
                let etcd_ok = cluster_up;
                out.push(ServiceHealth {
                    id: "etcd".into(),
                    state: if i.world.cluster_bootstrapped {
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
        const CALL: &str = "version";
        let i = self.enter(node, CALL).await?;
        let r = i.record(node, CALL)?;
        self.handshake(node, CALL, &r, conn)?;
        if r.stage == Stage::Maintenance {
            // maintenance/server.go `Version` asks for the admin role, which only a
            // SideroLink peer has: an ordinary client is told it is not there.
            return Err(rpc(
                node,
                CALL,
                Code::Unimplemented,
                "API is not implemented in maintenance mode",
            ));
        }
        Ok("v1.12.0".into())
    }

    async fn connection(&self, node: &str) -> Result<NodeConn> {
        const CALL: &str = "connection";
        let i = self.enter(node, CALL).await?;
        Ok(match i.record(node, CALL)?.stage {
            Stage::Maintenance => NodeConn::Maintenance,
            Stage::Installing | Stage::Configured => NodeConn::Mtls,
        })
    }

    async fn reset(&self, node: &str, _graceful: bool) -> Result<()> {
        const CALL: &str = "reset";
        let mut i = self.enter(node, CALL).await?;
        let r = i.record(node, CALL)?;
        self.handshake(node, CALL, &r, NodeConn::Mtls)?;
        if r.stage == Stage::Installing {
            return Err(rpc(
                node,
                CALL,
                Code::FailedPrecondition,
                "the node is installing: reset when it is up",
            ));
        }
        if let Some(r) = i.world.nodes.get_mut(node) {
            *r = Record::fresh();
        }
        i.timers.remove(node);
        i.env.remove(node);
        i.k8s_ca_keys.remove(node);
        if !i.world.nodes.values().any(|n| n.bootstrapped) {
            i.world.cluster_bootstrapped = false;
        }
        Ok(())
    }
}
