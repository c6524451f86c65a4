use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::kstatus::{self, Status};
use crate::{ClusterApi, Condition, Error, ObjectRef, Result};

/// Modelled durations (seconds), times `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// One API call.
    pub call: f64,
    /// CRD applied until Established.
    pub crd_established: f64,
    /// Established until discovery serves the kind.
    pub discovery: f64,
    /// A workload's rollout (pods created, then Ready).
    pub rollout: f64,
    /// A GitRepository fetch.
    pub source: f64,
    /// One Kustomization reconcile once its dependencies are ready.
    pub kustomization: f64,
    /// One HelmRelease install once its dependencies are ready.
    pub helmrelease: f64,
    /// Real seconds per modelled second.
    pub scale: f64,
}

impl Latency {
    /// No delays.
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            crd_established: 0.0,
            discovery: 0.0,
            rollout: 0.0,
            source: 0.0,
            kustomization: 0.0,
            helmrelease: 0.0,
            scale: 0.0,
        }
    }
    /// Calibrated from the reference setup (engine ~95 s, networking+gitops ~106 s,
    /// storage ~85 s).
    pub fn lab() -> Self {
        Self {
            call: 0.02,
            crd_established: 2.0,
            discovery: 2.0,
            rollout: 25.0,
            source: 8.0,
            kustomization: 12.0,
            helmrelease: 25.0,
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
    /// 503s on `rate` of the calls.
    pub fn transient(seed: u64, rate: f64) -> Self {
        Self { rate, seed }
    }
}

const MANAGER: &str = "castle";

/// Built-in kinds: (group, kind, namespaced).
const BUILTIN: &[(&str, &str, bool)] = &[
    ("", "Namespace", false),
    ("", "Secret", true),
    ("", "ConfigMap", true),
    ("", "ServiceAccount", true),
    ("", "Service", true),
    ("", "Pod", true),
    ("", "Node", false),
    ("apps", "Deployment", true),
    ("apps", "DaemonSet", true),
    ("apps", "StatefulSet", true),
    ("discovery.k8s.io", "EndpointSlice", true),
    ("rbac.authorization.k8s.io", "ClusterRole", false),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding", false),
    ("rbac.authorization.k8s.io", "Role", true),
    ("rbac.authorization.k8s.io", "RoleBinding", true),
    ("storage.k8s.io", "StorageClass", false),
    ("apiextensions.k8s.io", "CustomResourceDefinition", false),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        false,
    ),
];

fn key(r: &ObjectRef) -> String {
    format!(
        "{}/{}/{}/{}",
        r.group(),
        r.kind,
        r.namespace.as_deref().unwrap_or(""),
        r.name
    )
}

#[derive(Debug, Clone)]
struct Obj {
    value: Value,
    owners: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<String, Obj>,
    /// Event times: `crd:<name>`, `served:<name>`, `ready:<key>`, `flux:<key>`.
    timers: BTreeMap<String, Instant>,
    reachable: bool,
    latency: Option<Latency>,
    rate: f64,
    rng: Option<StdRng>,
    permanent: BTreeMap<String, String>,
    failing: BTreeMap<String, String>,
    git_tree: Vec<Value>,
    git_applied: bool,
    settle_all: bool,
    next_ip: u32,
}

/// An in-memory Kubernetes API server with the controllers Castle's steps depend on.
#[derive(Clone)]
pub struct MockCluster {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for MockCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockCluster")
            .field("objects", &self.lock().objects.len())
            .finish()
    }
}

impl Default for MockCluster {
    fn default() -> Self {
        Self::new()
    }
}

fn api_err(
    verb: &'static str,
    r: &ObjectRef,
    status: u16,
    reason: &str,
    message: impl Into<String>,
) -> Error {
    Error::Api {
        verb,
        object: r.to_string(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

/// Leaf paths of an object's content (what a field manager owns).
fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves(x, &format!("{prefix}.{k}"), out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn labels_match(labels: Option<&Value>, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str()))
}

fn selector_pairs(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn set_condition(obj: &mut Value, kind: &str, status: bool, reason: &str, message: &str) {
    let conds = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut);
    let c = json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason, "message": message});
    match conds {
        Some(list) => {
            list.retain(|x| x.get("type").and_then(Value::as_str) != Some(kind));
            list.push(c);
        }
        None => {
            if !obj.get("status").is_some_and(Value::is_object) {
                obj["status"] = json!({});
            }
            obj["status"]["conditions"] = json!([c]);
        }
    }
}

fn first_ip(range: &str) -> Option<std::net::Ipv4Addr> {
    let start = range.split(['-', '/']).next()?.trim();
    start.parse().ok()
}

impl MockCluster {
    /// An empty, reachable cluster.
    pub fn new() -> Self {
        let inner = Inner {
            reachable: true,
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            changed: Arc::new(Notify::new()),
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

    /// Applies of objects of `kind` fail with a 422 and `message`.
    pub fn fail_permanently(&self, kind: &str, message: &str) {
        self.lock().permanent.insert(kind.into(), message.into());
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut i = self.lock();
        i.permanent.clear();
        i.rate = 0.0;
    }

    /// Whether the API server answers (the lab's exists only after Talos bootstrap).
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().reachable = reachable;
        self.changed.notify_waiters();
    }

    /// A Ready node joins.
    pub fn add_node(&self, name: &str) {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        self.lock().objects.insert(
            key(&ObjectRef::of(&node)),
            Obj {
                value: node,
                owners: BTreeMap::new(),
            },
        );
        self.changed.notify_waiters();
    }

    /// What the Git repository holds: objects the root Kustomization applies when it
    /// reconciles (downstream Kustomizations, HelmReleases, Services...).
    pub fn set_git_tree(&self, objects: Vec<Value>) {
        self.lock().git_tree = objects;
    }

    /// The Flux object named `kind namespace/name` stalls with `message`.
    pub fn fail_flux(&self, kind: &str, namespace: &str, name: &str, message: &str) {
        self.lock()
            .failing
            .insert(format!("{kind}/{namespace}/{name}"), message.into());
        self.changed.notify_waiters();
    }

    /// Every object, settled, with Secret data replaced by digests: for the lab's
    /// state file, which must hold no credential.
    pub fn snapshot(&self) -> Value {
        let mut i = self.lock();
        i.settle_all = true;
        i.reconcile();
        i.settle_all = false;
        let objs: Vec<Value> = i
            .objects
            .values()
            .map(|o| {
                let mut v = o.value.clone();
                if v.get("kind").and_then(Value::as_str) == Some("Secret") {
                    for field in ["data", "stringData"] {
                        if let Some(Value::Object(m)) = v.get_mut(field) {
                            for val in m.values_mut() {
                                *val = json!(format!(
                                    "sha256:{}",
                                    hex::encode(Sha256::digest(val.to_string().as_bytes()))
                                ));
                            }
                        }
                    }
                }
                json!({"object": v, "owners": o.owners})
            })
            .collect();
        json!({"objects": objs, "git_applied": i.git_applied, "reachable": i.reachable, "next_ip": i.next_ip})
    }

    /// Restores a snapshot.
    ///
    /// # Errors
    /// The JSON is not a snapshot.
    pub fn restore(&self, v: &Value) -> Result<()> {
        let bad = || Error::Bundle {
            source_name: "kube snapshot".into(),
            message: "not a snapshot".into(),
        };
        let mut i = self.lock();
        i.objects.clear();
        i.timers.clear();
        for o in v.get("objects").and_then(Value::as_array).ok_or_else(bad)? {
            let value = o.get("object").cloned().ok_or_else(bad)?;
            let owners = serde_json::from_value(o.get("owners").cloned().unwrap_or(json!({})))
                .map_err(|_| bad())?;
            i.objects
                .insert(key(&ObjectRef::of(&value)), Obj { value, owners });
        }
        i.git_applied = v
            .get("git_applied")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        i.reachable = v.get("reachable").and_then(Value::as_bool).unwrap_or(false);
        i.next_ip = v
            .get("next_ip")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, verb: &'static str, r: &ObjectRef) -> Result<()> {
        let delay = self
            .lock()
            .latency
            .map(|l| l.of(l.call))
            .unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut i = self.lock();
        if !i.reachable {
            return Err(Error::Unreachable(
                "dial tcp 192.168.1.210:6443: connect: connection refused".into(),
            ));
        }
        let rate = i.rate;
        if rate > 0.0
            && let Some(rng) = i.rng.as_mut()
            && rng.random_bool(rate.clamp(0.0, 1.0))
        {
            return Err(api_err(
                verb,
                r,
                503,
                "ServiceUnavailable",
                "injected fault: the server is currently unable to handle the request",
            ));
        }
        i.reconcile();
        Ok(())
    }
}

impl Inner {
    fn latency(&self) -> Latency {
        self.latency.unwrap_or_else(Latency::instant)
    }

    fn due(&self, timer: &str) -> bool {
        self.settle_all || self.timers.get(timer).is_some_and(|t| *t <= Instant::now())
    }

    fn start_timer(&mut self, timer: String, seconds: f64) {
        let at = Instant::now() + self.latency().of(seconds);
        self.timers.entry(timer).or_insert(at);
    }

    fn find_crd(&self, group: &str, kind: &str) -> Option<&Obj> {
        self.objects.values().find(|o| {
            o.value.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
                && o.value.pointer("/spec/group").and_then(Value::as_str) == Some(group)
                && o.value.pointer("/spec/names/kind").and_then(Value::as_str) == Some(kind)
        })
    }

    fn crd_served(&self, name: &str) -> bool {
        self.objects.values().any(|o| {
            o.value.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
                && o.value.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && o.value
                    .pointer("/metadata/annotations/castle.mock~1served")
                    .and_then(Value::as_str)
                    == Some("true")
        })
    }

    /// (known, namespaced, plural) of a kind, as discovery serves it.
    fn discover(&self, r: &ObjectRef) -> Option<(bool, String)> {
        if let Some((_, _, ns)) = BUILTIN
            .iter()
            .find(|(g, k, _)| *g == r.group() && *k == r.kind)
        {
            return Some((*ns, format!("{}s", r.kind.to_lowercase())));
        }
        let crd = self.find_crd(r.group(), &r.kind)?;
        let name = crd
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)?;
        if !self.crd_served(name) {
            return None;
        }
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        let served = crd
            .value
            .pointer("/spec/versions")
            .and_then(Value::as_array)?
            .iter()
            .any(|v| {
                v.get("name").and_then(Value::as_str) == Some(version)
                    && v.get("served").and_then(Value::as_bool) == Some(true)
            });
        if !served {
            return None;
        }
        let namespaced =
            crd.value.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced");
        let plural = crd
            .value
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)?
            .to_string();
        Some((namespaced, plural))
    }

    fn endpoints_ready(&self, namespace: &str, service: &str) -> bool {
        let Some(svc) = self.objects.get(&format!("/Service/{namespace}/{service}")) else {
            return false;
        };
        let selector = selector_pairs(svc.value.pointer("/spec/selector"));
        !selector.is_empty()
            && self.objects.values().any(|o| {
                o.value.get("kind").and_then(Value::as_str) == Some("Pod")
                    && o.value
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        == Some(namespace)
                    && labels_match(o.value.pointer("/metadata/labels"), &selector)
                    && kstatus_pod_ready(&o.value)
            })
    }

    /// A webhook that must answer before an object of `group`/`plural` is admitted.
    fn blocking_webhook(&self, group: &str, plural: &str) -> Option<String> {
        for o in self.objects.values().filter(|o| {
            o.value.get("kind").and_then(Value::as_str) == Some("ValidatingWebhookConfiguration")
        }) {
            for hook in o
                .value
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let applies = hook
                    .get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|rule| {
                        let has = |field: &str, want: &str| {
                            rule.get(field).and_then(Value::as_array).is_some_and(|a| {
                                a.iter()
                                    .any(|x| x.as_str() == Some(want) || x.as_str() == Some("*"))
                            })
                        };
                        has("apiGroups", group) && has("resources", plural)
                    });
                if !applies {
                    continue;
                }
                let svc = hook.pointer("/clientConfig/service");
                let (ns, name) = (
                    svc.and_then(|s| s.get("namespace"))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    svc.and_then(|s| s.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                );
                if !self.endpoints_ready(ns, name) {
                    let hook_name = hook
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("webhook");
                    let path = hook
                        .pointer("/clientConfig/service/path")
                        .and_then(Value::as_str)
                        .unwrap_or("/");
                    return Some(format!(
                        "Internal error occurred: failed calling webhook \"{hook_name}\": failed to call webhook: Post \"https://{name}.{ns}.svc:443{path}?timeout=10s\": dial tcp 10.96.0.42:443: connect: connection refused"
                    ));
                }
            }
        }
        None
    }

    fn apply(&mut self, obj: &Value, manager: &str, force: bool) -> Result<Value> {
        let r = ObjectRef::of(obj);
        if let Some(m) = self.permanent.get(&r.kind) {
            return Err(api_err("apply", &r, 422, "Invalid", m.clone()));
        }
        let Some((namespaced, plural)) = self.discover(&r) else {
            return Err(api_err(
                "apply",
                &r,
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource: no matches for kind \"{}\" in version \"{}\"",
                    r.kind, r.api_version
                ),
            ));
        };
        if namespaced {
            let ns = r.namespace.clone().ok_or_else(|| {
                api_err(
                    "apply",
                    &r,
                    400,
                    "BadRequest",
                    "the namespace of the object must be set",
                )
            })?;
            if !self.objects.contains_key(&format!("/Namespace//{ns}")) {
                return Err(api_err(
                    "apply",
                    &r,
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                ));
            }
        }
        if let Some(msg) = self.blocking_webhook(r.group(), &plural) {
            return Err(api_err("apply", &r, 500, "InternalError", msg));
        }
        let k = key(&r);
        let mut incoming = BTreeMap::new();
        for field in [
            "spec",
            "data",
            "stringData",
            "metadata.labels",
            "metadata.annotations",
            "webhooks",
            "rules",
            "subjects",
            "roleRef",
            "provisioner",
            "parameters",
        ] {
            let ptr = format!("/{}", field.replace('.', "/"));
            if let Some(v) = obj.pointer(&ptr) {
                leaves(v, &format!(".{field}"), &mut incoming);
            }
        }
        let existing = self.objects.get(&k).cloned();
        if let Some(old) = &existing
            && !force
        {
            let mut current = BTreeMap::new();
            leaves(&old.value, "", &mut current);
            let conflicts: Vec<String> = incoming
                .iter()
                .filter_map(|(path, v)| {
                    let owner = old.owners.get(path)?;
                    (owner != manager && current.get(path) != Some(v))
                        .then(|| format!("conflict with \"{owner}\": {path}"))
                })
                .collect();
            if !conflicts.is_empty() {
                return Err(api_err(
                    "apply",
                    &r,
                    409,
                    "Conflict",
                    format!(
                        "Apply failed with {} conflict(s): {}",
                        conflicts.len(),
                        conflicts.join("; ")
                    ),
                ));
            }
        }
        let mut value = existing
            .as_ref()
            .map(|o| o.value.clone())
            .unwrap_or_else(|| json!({}));
        let old_spec = value.get("spec").cloned();
        merge(&mut value, obj);
        let generation = value
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if existing.is_none() || old_spec != value.get("spec").cloned() {
            value["metadata"]["generation"] = json!(generation + 1);
        }
        let mut owners = existing.map(|o| o.owners).unwrap_or_default();
        for path in incoming.keys() {
            owners.insert(path.clone(), manager.to_string());
        }
        self.objects.insert(
            k.clone(),
            Obj {
                value: value.clone(),
                owners,
            },
        );
        self.on_applied(&r, &k);
        Ok(value)
    }

    /// Starts the controllers' clocks for a new or changed object.
    fn on_applied(&mut self, r: &ObjectRef, k: &str) {
        let lat = self.latency();
        match r.kind.as_str() {
            "CustomResourceDefinition" => {
                self.start_timer(format!("crd:{}", r.name), lat.crd_established);
                self.start_timer(
                    format!("served:{}", r.name),
                    lat.crd_established + lat.discovery,
                );
            }
            "Deployment" | "DaemonSet" | "StatefulSet" => {
                // Names vary the rollouts a little, deterministically.
                let spread = (r.name.len() % 5) as f64 * 3.0;
                self.timers.remove(&format!("ready:{k}"));
                self.start_timer(format!("ready:{k}"), lat.rollout + spread);
                self.create_pods(r, k);
            }
            "GitRepository" => self.start_timer(format!("flux:{k}"), lat.source),
            _ => {}
        }
    }

    fn create_pods(&mut self, r: &ObjectRef, k: &str) {
        let Some(obj) = self.objects.get(k).map(|o| o.value.clone()) else {
            return;
        };
        let replicas = if r.kind == "DaemonSet" {
            self.objects
                .values()
                .filter(|o| o.value.get("kind").and_then(Value::as_str) == Some("Node"))
                .count()
                .max(1)
        } else {
            obj.pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize
        };
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        let ns = r.namespace.clone().unwrap_or_default();
        for n in 0..replicas {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("{}-{n}", r.name), "namespace": ns, "labels": labels, "ownerReferences": [{"kind": r.kind, "name": r.name}]}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
            self.objects.insert(
                key(&ObjectRef::of(&pod)),
                Obj {
                    value: pod,
                    owners: BTreeMap::new(),
                },
            );
        }
    }

    /// Runs every controller once: whatever is due happens now.
    fn reconcile(&mut self) {
        for _ in 0..8 {
            if !self.reconcile_once() {
                break;
            }
        }
    }

    fn reconcile_once(&mut self) -> bool {
        let mut changed = false;
        let lat = self.latency();
        let keys: Vec<String> = self.objects.keys().cloned().collect();
        for k in &keys {
            let Some(obj) = self.objects.get(k).map(|o| o.value.clone()) else {
                continue;
            };
            let r = ObjectRef::of(&obj);
            match r.kind.as_str() {
                "CustomResourceDefinition" => {
                    if self.due(&format!("crd:{}", r.name)) && !is_true(&obj, "Established") {
                        let o = self.objects.get_mut(k).map(|o| &mut o.value);
                        if let Some(v) = o {
                            set_condition(
                                v,
                                "Established",
                                true,
                                "InitialNamesAccepted",
                                "the initial names have been accepted",
                            );
                        }
                        changed = true;
                    }
                    if self.due(&format!("served:{}", r.name))
                        && obj
                            .pointer("/metadata/annotations/castle.mock~1served")
                            .is_none()
                    {
                        if let Some(v) = self.objects.get_mut(k).map(|o| &mut o.value) {
                            v["metadata"]["annotations"]["castle.mock/served"] = json!("true");
                        }
                        changed = true;
                    }
                }
                "Deployment" | "DaemonSet" | "StatefulSet" => {
                    let generation = obj
                        .pointer("/metadata/generation")
                        .cloned()
                        .unwrap_or(json!(1));
                    if self.due(&format!("ready:{k}"))
                        && obj.pointer("/status/observedGeneration") != Some(&generation)
                    {
                        let pods: Vec<String> = self
                            .objects
                            .iter()
                            .filter(|(_, o)| {
                                o.value.get("kind").and_then(Value::as_str) == Some("Pod")
                                    && o.value
                                        .pointer("/metadata/ownerReferences/0/name")
                                        .and_then(Value::as_str)
                                        == Some(r.name.as_str())
                                    && o.value.pointer("/metadata/namespace")
                                        == obj.pointer("/metadata/namespace")
                            })
                            .map(|(k, _)| k.clone())
                            .collect();
                        for p in &pods {
                            if let Some(v) = self.objects.get_mut(p).map(|o| &mut o.value) {
                                set_condition(v, "Ready", true, "", "");
                            }
                        }
                        let n = pods.len();
                        if let Some(v) = self.objects.get_mut(k).map(|o| &mut o.value) {
                            v["status"] = if r.kind == "DaemonSet" {
                                json!({"observedGeneration": generation, "desiredNumberScheduled": n, "numberReady": n, "updatedNumberScheduled": n, "numberAvailable": n})
                            } else {
                                json!({"observedGeneration": generation, "replicas": n, "readyReplicas": n, "availableReplicas": n, "updatedReplicas": n})
                            };
                        }
                        changed = true;
                    }
                }
                "Service"
                    if obj.pointer("/spec/type").and_then(Value::as_str)
                        == Some("LoadBalancer")
                        && obj.pointer("/status/loadBalancer/ingress/0/ip").is_none() =>
                {
                    let pool = self
                        .objects
                        .values()
                        .find(|o| {
                            o.value.get("kind").and_then(Value::as_str) == Some("IPAddressPool")
                        })
                        .map(|o| o.value.clone());
                    let l2 = self.objects.values().any(|o| {
                        o.value.get("kind").and_then(Value::as_str) == Some("L2Advertisement")
                    });
                    if let (Some(pool), true) = (pool, l2)
                        && let Some(start) = pool
                            .pointer("/spec/addresses/0")
                            .and_then(Value::as_str)
                            .and_then(first_ip)
                    {
                        let ip = std::net::Ipv4Addr::from(u32::from(start) + self.next_ip);
                        self.next_ip += 1;
                        if let Some(v) = self.objects.get_mut(k).map(|o| &mut o.value) {
                            v["status"] =
                                json!({"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}});
                        }
                        changed = true;
                    }
                }
                "GitRepository" | "Kustomization" | "HelmRelease" => {
                    changed |= self.reconcile_flux(k, &r, &obj, lat)
                }
                _ => {}
            }
        }
        changed
    }

    fn flux_ready(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let group = match kind {
            "GitRepository" => "source.toolkit.fluxcd.io",
            "Kustomization" => "kustomize.toolkit.fluxcd.io",
            _ => "helm.toolkit.fluxcd.io",
        };
        self.objects
            .get(&format!("{group}/{kind}/{namespace}/{name}"))
            .is_some_and(|o| kstatus::status(&o.value) == Status::Current)
    }

    fn reconcile_flux(&mut self, k: &str, r: &ObjectRef, obj: &Value, lat: Latency) -> bool {
        let ns = r.namespace.clone().unwrap_or_default();
        let generation = obj
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        if kstatus::status(obj) == Status::Current
            || obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
        {
            return false;
        }
        if let Some(msg) = self
            .failing
            .get(&format!("{}/{ns}/{}", r.kind, r.name))
            .cloned()
        {
            if is_true(obj, "Stalled") {
                return false;
            }
            if let Some(v) = self.objects.get_mut(k).map(|o| &mut o.value) {
                v["status"]["observedGeneration"] = generation;
                set_condition(v, "Stalled", true, "BuildFailed", &msg);
                set_condition(v, "Ready", false, "BuildFailed", &msg);
            }
            return true;
        }
        let mut waiting_for = Vec::new();
        if r.kind == "Kustomization"
            && let Some(src) = obj.pointer("/spec/sourceRef/name").and_then(Value::as_str)
        {
            let src_ns = obj
                .pointer("/spec/sourceRef/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&ns)
                .to_string();
            if !self.flux_ready("GitRepository", &src_ns, src) {
                waiting_for.push(format!("source '{src_ns}/{src}'"));
            }
        }
        for dep in obj
            .pointer("/spec/dependsOn")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = dep.get("name").and_then(Value::as_str).unwrap_or_default();
            let dep_ns = dep.get("namespace").and_then(Value::as_str).unwrap_or(&ns);
            if !self.flux_ready(&r.kind, dep_ns, name) {
                waiting_for.push(format!("dependency '{dep_ns}/{name}'"));
            }
        }
        let timer = format!("flux:{k}");
        if !waiting_for.is_empty() {
            let msg = format!("{} is not ready", waiting_for.join(", "));
            let current = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str())
                .map(str::to_string);
            if current.as_deref() != Some(msg.as_str())
                && let Some(v) = self.objects.get_mut(k).map(|o| &mut o.value)
            {
                v["status"]["observedGeneration"] = generation;
                set_condition(v, "Ready", false, "DependencyNotReady", &msg);
                return true;
            }
            return false;
        }
        let secs = match r.kind.as_str() {
            "GitRepository" => lat.source,
            "Kustomization" => lat.kustomization,
            _ => lat.helmrelease,
        };
        self.start_timer(timer.clone(), secs);
        if !self.due(&timer) {
            return false;
        }
        if let Some(v) = self.objects.get_mut(k).map(|o| &mut o.value) {
            v["status"]["observedGeneration"] = generation;
            set_condition(
                v,
                "Ready",
                true,
                "ReconciliationSucceeded",
                "Applied revision: main@sha1:5b2e1f0",
            );
        }
        if r.kind == "Kustomization"
            && !self.git_applied
            && obj.pointer("/spec/dependsOn").is_none()
        {
            self.git_applied = true;
            for o in self.git_tree.clone() {
                // The tree's namespaces come first, as kustomize orders them.
                let _ = self.apply(&o, "kustomize-controller", true);
            }
        }
        true
    }

    /// Evaluates a condition: `Ok(Some(detail))` when met, `Ok(None)` with the
    /// missing part in `missing`, `Err` when it can never be met.
    fn check(&self, c: &Condition, missing: &mut String) -> Result<Option<String>> {
        match c {
            Condition::CrdEstablished(name) => {
                let crd = self.objects.get(&format!(
                    "apiextensions.k8s.io/CustomResourceDefinition//{name}"
                ));
                match crd {
                    None => *missing = format!("CRD {name} does not exist yet"),
                    Some(o) if !is_true(&o.value, "Established") => {
                        *missing = format!("CRD {name} not Established")
                    }
                    Some(_) if !self.crd_served(name) => {
                        *missing = format!("CRD {name} Established but not yet served by discovery")
                    }
                    Some(_) => return Ok(Some(String::new())),
                }
            }
            Condition::Rollout(r) => match self.objects.get(&key(r)) {
                None => *missing = format!("{r} does not exist"),
                Some(o) => {
                    let v = &o.value;
                    let generation = v.pointer("/metadata/generation");
                    let observed = v.pointer("/status/observedGeneration");
                    let want = v
                        .pointer("/spec/replicas")
                        .and_then(Value::as_u64)
                        .unwrap_or(1);
                    let (ready, desired) = if r.kind == "DaemonSet" {
                        (
                            v.pointer("/status/numberReady")
                                .and_then(Value::as_u64)
                                .unwrap_or(0),
                            v.pointer("/status/desiredNumberScheduled")
                                .and_then(Value::as_u64)
                                .unwrap_or(1),
                        )
                    } else {
                        (
                            v.pointer("/status/availableReplicas")
                                .and_then(Value::as_u64)
                                .unwrap_or(0),
                            want,
                        )
                    };
                    if observed.is_some() && observed == generation && ready >= desired {
                        return Ok(Some(String::new()));
                    }
                    *missing = format!("{r}: {ready}/{desired} replicas available");
                }
            },
            Condition::EndpointsReady { namespace, service } => {
                if self.endpoints_ready(namespace, service) {
                    return Ok(Some(String::new()));
                }
                *missing =
                    format!("EndpointSlice of service {namespace}/{service} has no ready endpoint");
            }
            Condition::PodsReady {
                namespace,
                selector,
                min,
            } => {
                let pods: Vec<&Value> = self
                    .objects
                    .values()
                    .map(|o| &o.value)
                    .filter(|v| {
                        v.get("kind").and_then(Value::as_str) == Some("Pod")
                            && v.pointer("/metadata/namespace").and_then(Value::as_str)
                                == Some(namespace)
                    })
                    .filter(|v| labels_match(v.pointer("/metadata/labels"), selector))
                    .collect();
                let ready = pods.iter().filter(|p| kstatus_pod_ready(p)).count();
                if pods.len() >= *min && ready == pods.len() {
                    return Ok(Some(format!("{ready} pods")));
                }
                *missing = format!(
                    "{} matching pods exist, {ready} ready (want {min})",
                    pods.len()
                );
            }
            Condition::LoadBalancerIp { namespace, name } => {
                let svc = self.objects.get(&format!("/Service/{namespace}/{name}"));
                match svc
                    .and_then(|o| o.value.pointer("/status/loadBalancer/ingress/0/ip"))
                    .and_then(Value::as_str)
                {
                    Some(ip) => return Ok(Some(ip.to_string())),
                    None if svc.is_none() => {
                        *missing = format!("service {namespace}/{name} does not exist yet")
                    }
                    None => *missing = format!("service {namespace}/{name} has no ingress IP"),
                }
            }
            Condition::FluxReady(r) => match self.objects.get(&key(r)) {
                None => *missing = format!("{r} does not exist yet"),
                Some(o) => match kstatus::status(&o.value) {
                    Status::Current => return Ok(Some(String::new())),
                    Status::Failed(m) => {
                        return Err(Error::Failed {
                            object: r.to_string(),
                            message: m,
                        });
                    }
                    Status::Suspended => {
                        return Err(Error::Failed {
                            object: r.to_string(),
                            message: "suspended: resume it (flux resume) or remove it".into(),
                        });
                    }
                    Status::InProgress(m) => *missing = format!("{r}: {m}"),
                    Status::Terminating => *missing = format!("{r} is terminating"),
                },
            },
            Condition::AllFluxReady => {
                let mut pending = Vec::new();
                let mut count = 0;
                for o in self.objects.values() {
                    let kind = o
                        .value
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if kind != "Kustomization" && kind != "HelmRelease" {
                        continue;
                    }
                    count += 1;
                    let r = ObjectRef::of(&o.value);
                    match kstatus::status(&o.value) {
                        Status::Current => {}
                        Status::Failed(m) => {
                            return Err(Error::Failed {
                                object: r.to_string(),
                                message: m,
                            });
                        }
                        Status::Suspended => {
                            return Err(Error::Failed {
                                object: r.to_string(),
                                message: "suspended: it will never become Ready".into(),
                            });
                        }
                        Status::InProgress(m) => pending.push(format!("{r} ({m})")),
                        Status::Terminating => pending.push(format!("{r} (terminating)")),
                    }
                }
                if pending.is_empty() && count > 0 && self.git_applied {
                    return Ok(Some(format!("{count} ready")));
                }
                *missing = if count == 0 {
                    "no Flux Kustomization exists yet".into()
                } else {
                    format!(
                        "{} of {count} not Ready: {}",
                        pending.len(),
                        pending.join("; ")
                    )
                };
            }
            Condition::NodesReady(n) => {
                let ready = self
                    .objects
                    .values()
                    .filter(|o| {
                        o.value.get("kind").and_then(Value::as_str) == Some("Node")
                            && is_true(&o.value, "Ready")
                    })
                    .count();
                if ready >= *n {
                    return Ok(Some(format!("{ready} nodes")));
                }
                *missing = format!("{ready}/{n} nodes Ready");
            }
        }
        Ok(None)
    }

    fn next_timer(&self) -> Option<Instant> {
        let now = Instant::now();
        self.timers.values().filter(|t| **t > now).min().copied()
    }
}

fn is_true(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

fn kstatus_pod_ready(pod: &Value) -> bool {
    is_true(pod, "Ready")
}

#[async_trait]
impl ClusterApi for MockCluster {
    async fn apply(&self, object: &Value, force: bool) -> Result<Value> {
        let r = ObjectRef::of(object);
        self.enter("apply", &r).await?;
        let result = self.lock().apply(object, MANAGER, force);
        self.changed.notify_waiters();
        result
    }

    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>> {
        self.enter("get", object).await?;
        Ok(self
            .lock()
            .objects
            .get(&key(object))
            .map(|o| o.value.clone()))
    }

    async fn delete(&self, object: &ObjectRef) -> Result<()> {
        self.enter("delete", object).await?;
        self.lock().objects.remove(&key(object));
        self.changed.notify_waiters();
        Ok(())
    }

    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        let r = ObjectRef::new(api_version, kind, namespace, "");
        self.enter("list", &r).await?;
        let i = self.lock();
        Ok(i.objects
            .values()
            .filter(|o| o.value.get("kind").and_then(Value::as_str) == Some(kind))
            .filter(|o| {
                namespace.is_none()
                    || o.value
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        == namespace
            })
            .map(|o| o.value.clone())
            .collect())
    }

    async fn wait(&self, condition: &Condition, timeout: Duration) -> Result<String> {
        let r = ObjectRef::new("v1", "wait", None, &condition.to_string());
        self.enter("watch", &r).await?;
        let deadline = Instant::now() + timeout;
        loop {
            // Register for changes before looking, so no change slips between.
            let changed = self.changed.notified();
            let mut missing = String::new();
            let next = {
                let mut i = self.lock();
                if !i.reachable {
                    return Err(Error::Unreachable("watch: connection refused".into()));
                }
                i.reconcile();
                if let Some(detail) = i.check(condition, &mut missing)? {
                    return Ok(detail);
                }
                i.next_timer()
            };
            let wake = next.map_or(deadline, |n| n.min(deadline));
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout { what: condition.to_string(), missing, seconds: timeout.as_secs() });
                    }
                }
            }
        }
    }

    async fn probe_http(&self, url: &str, _timeout: Duration) -> Result<u16> {
        let r = ObjectRef::new("v1", "probe", None, url);
        self.enter("probe", &r).await?;
        let i = self.lock();
        let mut missing = String::new();
        let lb = i.objects.values().any(|o| {
            o.value
                .pointer("/status/loadBalancer/ingress/0/ip")
                .is_some()
        });
        let flux = matches!(i.check(&Condition::AllFluxReady, &mut missing), Ok(Some(_)));
        if lb && flux {
            Ok(200)
        } else {
            Err(Error::Unreachable(format!(
                "GET {url}: connect: connection refused"
            )))
        }
    }
}
