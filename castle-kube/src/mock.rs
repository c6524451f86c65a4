use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
pub use castle_sim::Faults;
use castle_sim::{Fault, FaultInjector, Scale};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::conditions::{Selection, Verdict, is_true, labels_match};
use crate::fields::{self, Owners};
use crate::kstatus::{self, Status};
use crate::validation;
use crate::{ClusterApi, Condition, Error, ObjectRef, Propagation, Result};

mod helm;
pub use helm::{CHART_LAYER, Chart};

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
    /// One Kustomization reconcile once its source and dependencies are Ready.
    pub kustomization: f64,
    /// A HelmChart pulled from its ready HelmRepository.
    pub chart: f64,
    /// One Helm install or upgrade once its chart is pulled (then Helm waits for
    /// the release's workloads).
    pub helmrelease: f64,
    /// A deleted object with finalizers until its controllers remove them.
    pub finalizers: f64,
    /// A deleted Namespace, Terminating while its content is deleted.
    pub namespace_termination: f64,
    /// Real seconds per modelled second.
    pub scale: Scale,
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
            chart: 0.0,
            helmrelease: 0.0,
            finalizers: 0.0,
            namespace_termination: 0.0,
            scale: Scale::INSTANT,
        }
    }

    /// Calibrated from the reference setup's stage timings (engine ~95 s,
    /// networking+gitops ~106 s, storage ~85 s): a rollout takes 25-37 s, a CRD about
    /// 0.1 s to be Established and served (as measured against kube-apiserver v1.36),
    /// and Flux a source fetch plus 6 s per Kustomization in a dependsOn chain (about a
    /// minute for the lab's chain of nine); a chart is pulled in 2 s and Helm applies
    /// it 15 s later, then waits for its rollouts. A deleted object with finalizers
    /// goes after 2 s, a Namespace after 5 s.
    pub fn lab() -> Self {
        Self {
            call: 0.02,
            crd_established: 0.05,
            discovery: 0.05,
            rollout: 25.0,
            source: 5.0,
            kustomization: 6.0,
            chart: 2.0,
            helmrelease: 15.0,
            finalizers: 2.0,
            namespace_termination: 5.0,
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

/// Annotation on a Git tree object: the Kustomization `spec.path` that applies it.
const PATH_ANNOTATION: &str = "castle.mock/path";

fn key(r: &ObjectRef) -> String {
    format!(
        "{}/{}/{}/{}",
        r.group(),
        r.kind,
        r.namespace.as_deref().unwrap_or(""),
        r.name
    )
}

fn kind_of(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or_default()
}

#[derive(Debug, Clone)]
struct Obj {
    value: Value,
    /// Leaf -> the field managers that own it.
    owners: Owners,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<String, Obj>,
    /// When a controller acts: `crd:<name>`, `served:<name>`, `ready:<key>`,
    /// `flux:<key>@<generation>`.
    timers: BTreeMap<String, Instant>,
    /// CRDs whose kinds discovery serves.
    served: BTreeSet<String>,
    reachable: bool,
    latency: Option<Latency>,
    /// By operation (`apply`, or `apply:Kind`): a permanent fault is a status,
    /// reason and message; a transient one a 503.
    faults: FaultInjector<(u16, &'static str, String)>,
    /// `Kind/namespace/name` of Flux objects that stall -> message.
    failing: BTreeMap<String, String>,
    /// Repository URL -> its objects.
    git_trees: BTreeMap<String, Vec<Value>>,
    /// `<kustomization key>@<generation>` already applied from Git.
    applied: BTreeSet<String>,
    next_ip: u32,
    /// The service-account token signer; never in a snapshot.
    signer: Option<crate::token_request::Signer>,
    /// What the simulated Helm repositories and registries serve (a model, like
    /// the latency: never in a snapshot).
    charts: Vec<Arc<helm::Chart>>,
}

/// An in-memory Kubernetes API server with the controllers Castle's steps depend on:
/// CRD establishment and discovery, Deployments/DaemonSets/StatefulSets with their
/// pods, EndpointSlices, admission webhooks that refuse until their Service has a ready
/// endpoint, MetalLB handing out LoadBalancer IPs, and Flux reconciling a modelled Git
/// repository. Waits wake on every change; controllers act on the tokio clock.
///
/// It refuses what kube-apiserver refuses, with the same status and words: fields of
/// the wrong type (500 from the typed patch), objects its validation rejects (422
/// `Kind.group "name" is invalid: ...`, from built-in rules and each CRD's own
/// schema), conflicts between field managers (409), creations in a Terminating
/// namespace (403). Server-side apply keeps field ownership per manager, so a field a
/// manager stops applying is removed; unknown fields are dropped. Deletion takes time
/// where it does on a real server: objects with finalizers and Namespaces keep a
/// `deletionTimestamp` until their controllers are done.
#[derive(Clone)]
pub struct MockCluster {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for MockCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.lock();
        f.debug_struct("MockCluster")
            .field("objects", &i.objects.len())
            .field("reachable", &i.reachable)
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

/// Owners as a snapshot holds them; a state file from before shared ownership holds
/// one manager per field, as a string.
fn restore_owners(v: Option<&Value>) -> Option<Owners> {
    let mut owners = Owners::new();
    for (path, m) in v.and_then(Value::as_object).into_iter().flatten() {
        let set = owners.entry(path.clone()).or_default();
        match m {
            Value::String(one) => {
                set.insert(one.clone());
            }
            Value::Array(many) => {
                set.extend(many.iter().filter_map(Value::as_str).map(str::to_string))
            }
            _ => return None,
        }
    }
    Some(owners)
}

/// An apply error as kustomize-controller reports it in its Ready condition (fluxcd/pkg
/// `ssa/errors/errors.go`: `Kind/namespace/name dry-run failed (Reason): message`).
fn dry_run_failed(o: &Value, e: Error) -> String {
    let r = ObjectRef::of(o);
    let id = format!(
        "{}/{}/{}",
        r.kind,
        r.namespace.as_deref().unwrap_or_default(),
        r.name
    );
    match e {
        Error::Api {
            status: 404,
            message,
            ..
        } => format!("{id} not found: {message}"),
        Error::Api {
            reason, message, ..
        } if reason.is_empty() => format!("{id} dry-run failed: {message}"),
        Error::Api {
            reason, message, ..
        } => format!("{id} dry-run failed ({reason}): {message}"),
        other => format!("{id} dry-run failed: {other}"),
    }
}

/// A Secret's `stringData` is write-only: the v1 conversion folds it into `data`
/// (base64), where it wins over a `data` key of the same name, and the server stores
/// and returns `data` only (kubernetes `pkg/apis/core/v1/conversion.go`,
/// Convert_v1_Secret_To_core_Secret).
fn fold_string_data(v: &mut Value) {
    use base64::Engine as _;
    let Some(string_data) = v.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    for (k, x) in string_data.as_object().into_iter().flatten() {
        if let Some(text) = x.as_str() {
            v["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
}

/// Apply treats a null as no value.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn refused(r: &ObjectRef, f: validation::Refusal) -> Error {
    api_err("apply", r, f.status, f.reason, f.message)
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

fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if !obj["status"].get("conditions").is_some_and(Value::is_array) {
        obj["status"]["conditions"] = json!([]);
    }
    if let Some(list) = obj["status"]["conditions"].as_array_mut() {
        list.retain(|x| x.get("type").and_then(Value::as_str) != Some(kind));
        list.push(json!({"type": kind, "status": status, "reason": reason, "message": message}));
    }
}

fn remove_condition(obj: &mut Value, kind: &str) {
    if let Some(list) = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        list.retain(|x| x.get("type").and_then(Value::as_str) != Some(kind));
    }
}

fn first_ip(range: &str) -> Option<std::net::Ipv4Addr> {
    range.split(['-', '/']).next()?.trim().parse().ok()
}

fn pod_ip(name: &str) -> String {
    let h = Sha256::digest(name.as_bytes());
    format!("10.244.{}.{}", h[0], h[1].max(2))
}

fn normalize_path(p: &str) -> &str {
    p.trim_start_matches("./").trim_matches('/')
}

/// Field managers that are the simulator's own controllers: what they write was
/// generated inside the simulation.
const SIMULATED_CONTROLLERS: [&str; 1] = ["postgres-operator"];

/// Secret values replaced by digests: what may be written to disk or printed.
fn redact(v: &mut Value) {
    if kind_of(v) != "Secret" {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Object(m)) = v.get_mut(field) {
            for val in m.values_mut() {
                let digest = hex::encode(Sha256::digest(val.to_string().as_bytes()));
                *val = json!(format!("sha256:{digest}"));
            }
        }
    }
}

/// What kube-apiserver creates itself: the system namespaces and the `kubernetes`
/// Service on the first address of the Service CIDR.
fn insert_system_namespaces(inner: &mut Inner) {
    let mut system: Vec<Value> = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .iter()
        .map(|name| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .collect();
    system.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}));
    for value in system {
        inner.objects.insert(
            key(&ObjectRef::of(&value)),
            Obj {
                value,
                owners: Owners::new(),
            },
        );
    }
}

impl MockCluster {
    /// A reachable cluster without nodes, holding what every API server holds from
    /// its first second: the system namespaces.
    pub fn new() -> Self {
        let mut inner = Inner {
            reachable: true,
            ..Inner::default()
        };
        insert_system_namespaces(&mut inner);
        Self {
            inner: Arc::new(Mutex::new(inner)),
            changed: Arc::new(Notify::new()),
        }
    }

    /// The cluster is gone (its nodes were deleted): a fresh, unreachable API server
    /// replaces it; the models, faults and Git trees stay.
    pub fn reset(&self) {
        {
            let mut i = self.lock();
            i.objects.clear();
            i.timers.clear();
            i.served.clear();
            i.applied.clear();
            i.next_ip = 0;
            i.reachable = false;
            insert_system_namespaces(&mut i);
        }
        self.changed.notify_waiters();
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

    /// Every call of operation `op` fails with a 422 and `message`. `op` is a verb
    /// (`apply`, `get`, `delete`, `list`, `watch`, `probe`), optionally narrowed to a
    /// kind: `apply:IPAddressPool`.
    pub fn fail_permanently(&self, op: &str, message: &str) {
        self.lock()
            .faults
            .fail_permanently(op, (422, "Invalid", message.into()));
    }

    /// Every call of operation `op` (as for [`fail_permanently`](Self::fail_permanently))
    /// is refused by RBAC: 403 Forbidden with `message`, as kube-apiserver's
    /// authorization filter answers (kubernetes
    /// `staging/src/k8s.io/apiserver/pkg/endpoints/filters/authorization.go`).
    pub fn forbid(&self, op: &str, message: &str) {
        self.lock()
            .faults
            .fail_permanently(op, (403, "Forbidden", message.into()));
    }

    /// Removes every injected fault (transient and permanent).
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Whether the API server answers (the lab's exists only after Talos bootstrap).
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().reachable = reachable;
        self.changed.notify_waiters();
    }

    /// A Ready node joins (once: a node already there is left as it is).
    pub fn add_node(&self, name: &str) {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
        let k = key(&ObjectRef::of(&node));
        {
            let mut i = self.lock();
            if i.objects.contains_key(&k) {
                return;
            }
            i.objects.insert(
                k,
                Obj {
                    value: node,
                    owners: Owners::new(),
                },
            );
        }
        self.changed.notify_waiters();
    }

    /// What the Git repository at `url` holds. A Kustomization whose GitRepository has
    /// this URL applies, when it reconciles, the objects annotated
    /// `castle.mock/path: <its spec.path>`; objects without the annotation belong to
    /// the Kustomization named `flux-system` (the one `flux bootstrap` creates).
    pub fn set_git_tree(&self, url: &str, objects: Vec<Value>) {
        self.lock().git_trees.insert(url.into(), objects);
        self.changed.notify_waiters();
    }

    /// A chart version the simulated Helm repositories and OCI registries serve, for
    /// Flux's source- and helm-controller (`mock/helm.rs`). A model, like the
    /// latency: kept across [`reset`](Self::reset), never in a snapshot.
    pub fn add_chart(&self, chart: Chart) {
        {
            let mut i = self.lock();
            i.charts.retain(|c| {
                (c.repo.as_str(), c.name.as_str(), c.version.as_str())
                    != (
                        chart.repo.as_str(),
                        chart.name.as_str(),
                        chart.version.as_str(),
                    )
            });
            i.charts.push(Arc::new(chart));
        }
        self.changed.notify_waiters();
    }

    /// The API server signs service-account tokens with `key` (PKCS#8 PEM, ECDSA
    /// P-256) as `issuer`, as `--service-account-signing-key-file` and
    /// `--service-account-issuer` make it. Kept in memory only, never in a snapshot.
    ///
    /// # Errors
    /// [`Error::Failed`] when the key is not an ECDSA P-256 PKCS#8 key (kube-apiserver
    /// would not start).
    pub fn set_service_account_signer(
        &self,
        key: &secrecy::SecretString,
        issuer: &str,
    ) -> Result<()> {
        let signer =
            crate::token_request::Signer::new(key, issuer).map_err(|message| Error::Failed {
                object: "kube-apiserver --service-account-signing-key-file".into(),
                message,
            })?;
        self.lock().signer = Some(signer);
        Ok(())
    }

    /// TokenRequest (`POST /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token`):
    /// a signed token for an existing service account. kube-apiserver refuses a
    /// duration under ten minutes (`pkg/apis/authentication/validation`,
    /// ValidateTokenRequest) and an account that does not exist (404).
    ///
    /// # Errors
    /// As the API server answers; a 500 when no signer is set.
    pub async fn create_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration_seconds: u64,
    ) -> Result<secrecy::SecretString> {
        let account = ObjectRef::new("v1", "ServiceAccount", Some(namespace), name);
        self.enter("create", &account).await?;
        let i = self.lock();
        if expiration_seconds < 600 {
            return Err(api_err(
                "create",
                &account,
                422,
                "Invalid",
                format!(
                    "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {expiration_seconds}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        if !i.objects.contains_key(&key(&account)) {
            return Err(api_err(
                "create",
                &account,
                404,
                "NotFound",
                format!("serviceaccounts \"{name}\" not found"),
            ));
        }
        let internal = |m: String| api_err("create", &account, 500, "InternalError", m);
        let signer = i
            .signer
            .as_ref()
            .ok_or_else(|| internal("no service-account signing key is configured".into()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        signer
            .token(namespace, name, audiences, now, expiration_seconds)
            .map_err(internal)
    }

    /// Replaces an object's `status`, as its controller does through the status
    /// subresource (for controllers the mock does not run itself, such as ESO's).
    ///
    /// # Errors
    /// 404 when the object does not exist.
    pub fn set_status(&self, object: &ObjectRef, status: Value) -> Result<()> {
        {
            let mut i = self.lock();
            let Some(v) = i.value_mut(&key(object)) else {
                return Err(api_err(
                    "patch",
                    object,
                    404,
                    "NotFound",
                    format!(
                        "{} \"{}\" not found",
                        object.kind.to_lowercase(),
                        object.name
                    ),
                ));
            };
            v["status"] = status;
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// The Flux object `kind namespace/name` stalls with `message` when it reconciles.
    pub fn fail_flux(&self, kind: &str, namespace: &str, name: &str, message: &str) {
        self.lock()
            .failing
            .insert(format!("{kind}/{namespace}/{name}"), message.into());
        self.changed.notify_waiters();
    }

    /// The whole world for the lab's state file: objects, field owners and pending
    /// controller timers (as seconds still to go). Secret values are replaced by
    /// digests, so the file holds no credential given to the simulator; only what a
    /// simulated controller generated itself (the postgres-operator stand-in's
    /// passwords) is kept, as the simulated Vault keeps the values the lab made.
    pub fn snapshot(&self) -> Value {
        let i = self.lock();
        let now = Instant::now();
        let objects: Vec<Value> = i
            .objects
            .values()
            .map(|o| {
                let mut v = o.value.clone();
                let simulated = !o.owners.is_empty()
                    && o.owners
                        .values()
                        .flatten()
                        .all(|m| SIMULATED_CONTROLLERS.contains(&m.as_str()));
                if !simulated {
                    redact(&mut v);
                }
                json!({"object": v, "owners": o.owners})
            })
            .collect();
        let timers: BTreeMap<&String, f64> = i
            .timers
            .iter()
            .map(|(k, t)| (k, t.saturating_duration_since(now).as_secs_f64()))
            .collect();
        let git_trees: BTreeMap<&String, Vec<Value>> = i
            .git_trees
            .iter()
            .map(|(url, objects)| {
                let objects = objects
                    .iter()
                    .map(|o| {
                        let mut o = o.clone();
                        redact(&mut o);
                        o
                    })
                    .collect();
                (url, objects)
            })
            .collect();
        json!({
            "objects": objects,
            "timers": timers,
            "served": i.served,
            "failing": i.failing,
            "git_trees": git_trees,
            "applied": i.applied,
            "reachable": i.reachable,
            "next_ip": i.next_ip,
        })
    }

    /// Restores a [`snapshot`](Self::snapshot); pending timers resume from now.
    ///
    /// # Errors
    /// The JSON is not a snapshot; the cluster is left unchanged.
    pub fn restore(&self, v: &Value) -> Result<()> {
        let bad = |what: &str| Error::Bundle {
            source_name: "kube snapshot".into(),
            message: format!("not a MockCluster snapshot: {what}"),
        };
        let field = |name: &str| v.get(name).cloned().unwrap_or(json!({}));
        let mut objects = BTreeMap::new();
        for o in v
            .get("objects")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no objects"))?
        {
            let value = o.get("object").cloned().ok_or_else(|| bad("object"))?;
            let owners = restore_owners(o.get("owners")).ok_or_else(|| bad("owners"))?;
            objects.insert(key(&ObjectRef::of(&value)), Obj { value, owners });
        }
        let now = Instant::now();
        let timers: BTreeMap<String, f64> =
            serde_json::from_value(field("timers")).map_err(|_| bad("timers"))?;
        let served: BTreeSet<String> =
            serde_json::from_value(v.get("served").cloned().unwrap_or(json!([])))
                .map_err(|_| bad("served"))?;
        let applied: BTreeSet<String> =
            serde_json::from_value(v.get("applied").cloned().unwrap_or(json!([])))
                .map_err(|_| bad("applied"))?;
        let failing = serde_json::from_value(field("failing")).map_err(|_| bad("failing"))?;
        let git_trees = serde_json::from_value(field("git_trees")).map_err(|_| bad("git_trees"))?;
        let mut i = self.lock();
        i.objects = objects;
        i.timers = timers
            .into_iter()
            .map(|(k, s)| (k, now + Duration::from_secs_f64(s.max(0.0))))
            .collect();
        i.served = served;
        i.applied = applied;
        i.failing = failing;
        i.git_trees = git_trees;
        i.reachable = v.get("reachable").and_then(Value::as_bool).unwrap_or(false);
        i.next_ip = v
            .get("next_ip")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        drop(i);
        self.changed.notify_waiters();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The start of every call: latency, reachability, injected faults, then the
    /// controllers catch up with the clock.
    async fn enter(&self, verb: &'static str, r: &ObjectRef) -> Result<()> {
        let latency = self.lock().latency();
        latency.scale.sleep(latency.call).await;
        let mut i = self.lock();
        if !i.reachable {
            return Err(Error::Unreachable(
                "dial tcp 192.168.1.210:6443: connect: connection refused".into(),
            ));
        }
        let narrowed = format!("{verb}:{}", r.kind);
        match i.faults.draw([narrowed.as_str(), verb]) {
            Some(Fault::Permanent((status, reason, m))) => {
                return Err(api_err(verb, r, status, reason, m));
            }
            Some(Fault::Transient) => {
                return Err(api_err(
                    verb,
                    r,
                    503,
                    "ServiceUnavailable",
                    "injected fault: the server is currently unable to handle the request",
                ));
            }
            None => {}
        }
        if i.reconcile() {
            drop(i);
            self.changed.notify_waiters();
        }
        Ok(())
    }
}

impl Inner {
    fn latency(&self) -> Latency {
        self.latency.unwrap_or_else(Latency::instant)
    }

    fn due(&self, timer: &str) -> bool {
        self.timers.get(timer).is_some_and(|t| *t <= Instant::now())
    }

    fn start_timer(&mut self, timer: String, seconds: f64) {
        let at = Instant::now() + self.latency().scale.of(seconds);
        self.timers.entry(timer).or_insert(at);
    }

    /// An injected admission refusal (`fail_permanently("apply:Kind", ...)`) meets
    /// the controllers' applies too, as a real webhook refuses every client; an
    /// RBAC refusal (`forbid`) is the client's own and does not.
    fn admission(&self, o: &Value) -> Option<Error> {
        let r = ObjectRef::of(o);
        let narrowed = format!("apply:{}", r.kind);
        match self.faults.permanent([narrowed.as_str(), "apply"]) {
            Some((status, reason, message)) if *status != 403 => {
                Some(api_err("apply", &r, *status, reason, message.clone()))
            }
            _ => None,
        }
    }

    fn value_mut(&mut self, k: &str) -> Option<&mut Value> {
        self.objects.get_mut(k).map(|o| &mut o.value)
    }

    fn select(&self, s: &Selection) -> Vec<&Value> {
        self.objects
            .values()
            .map(|o| &o.value)
            .filter(|v| s.matches(v))
            .collect()
    }

    fn find_crd(&self, group: &str, kind: &str) -> Option<&Value> {
        self.objects.values().map(|o| &o.value).find(|v| {
            kind_of(v) == "CustomResourceDefinition"
                && v.pointer("/spec/group").and_then(Value::as_str) == Some(group)
                && v.pointer("/spec/names/kind").and_then(Value::as_str) == Some(kind)
        })
    }

    /// (namespaced, plural) of a kind, as discovery serves it.
    fn discover(&self, r: &ObjectRef) -> Option<(bool, String)> {
        if let Some(kind) = validation::builtin(r) {
            return Some((kind.namespaced, kind.plural.to_string()));
        }
        if validation::is_builtin_group(r.group()) {
            // kube-apiserver's own groups are never served by a CRD.
            return None;
        }
        let crd = self.find_crd(r.group(), &r.kind)?;
        let name = crd.pointer("/metadata/name").and_then(Value::as_str)?;
        if !self.served.contains(name) {
            return None;
        }
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        let served = crd
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
        let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced");
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)?
            .to_string();
        Some((namespaced, plural))
    }

    fn endpoints_ready(&self, namespace: &str, service: &str) -> bool {
        let c = Condition::EndpointsReady {
            namespace: namespace.into(),
            service: service.into(),
        };
        let seen: Vec<Vec<&Value>> = c.selections().iter().map(|s| self.select(s)).collect();
        matches!(c.evaluate(&seen), Verdict::Met(_))
    }

    /// The refusal of a validating webhook whose Service has no ready endpoint yet.
    fn blocking_webhook(&self, group: &str, plural: &str) -> Option<String> {
        let hooks = self
            .objects
            .values()
            .filter(|o| kind_of(&o.value) == "ValidatingWebhookConfiguration")
            .filter_map(|o| o.value.get("webhooks").and_then(Value::as_array))
            .flatten();
        for hook in hooks {
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
            let field = |f: &str| {
                svc.and_then(|s| s.get(f))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let (ns, name, path) = (field("namespace"), field("name"), field("path"));
            if !self.endpoints_ready(ns, name) {
                let hook_name = hook
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("webhook");
                return Some(format!(
                    "Internal error occurred: failed calling webhook \"{hook_name}\": failed to call webhook: Post \"https://{name}.{ns}.svc:443{path}?timeout=10s\": dial tcp 10.96.0.42:443: connect: connection refused"
                ));
            }
        }
        None
    }

    fn apply(&mut self, obj: &Value, manager: &str, force: bool) -> Result<Value> {
        let mut r = ObjectRef::of(obj);
        if r.api_version.is_empty() || r.kind.is_empty() || r.name.is_empty() {
            return Err(api_err(
                "apply",
                &r,
                400,
                "BadRequest",
                "apiVersion, kind and metadata.name must be set",
            ));
        }
        let Some((namespaced, plural)) = self.discover(&r) else {
            return Err(api_err(
                "apply",
                &r,
                404,
                "NotFound",
                format!(
                    "no matches for kind \"{}\" in version \"{}\"",
                    r.kind, r.api_version
                ),
            ));
        };
        let mut obj = obj.clone();
        strip_nulls(&mut obj);
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            if namespaced && r.namespace.is_none() {
                // The request's namespace: kubectl and kube-rs send `default`.
                m.insert("namespace".into(), json!("default"));
                r.namespace = Some("default".into());
            } else if !namespaced && r.namespace.is_some() {
                // The API server ignores a namespace on cluster-scoped kinds.
                m.remove("namespace");
                r.namespace = None;
            }
        }
        let k = key(&r);
        let existing = self.objects.get(&k).cloned();
        if let Some(ns) = r.namespace.clone() {
            let namespace = self.objects.get(&format!("/Namespace//{ns}"));
            if namespace.is_none() {
                return Err(api_err(
                    "apply",
                    &r,
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                ));
            }
            // The NamespaceLifecycle admission plugin refuses creations only.
            if existing.is_none() && namespace.is_some_and(|n| deleting(&n.value)) {
                return Err(api_err(
                    "apply",
                    &r,
                    403,
                    "Forbidden",
                    format!(
                        "{plural} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        r.name
                    ),
                ));
            }
        }
        // The typed patch comes first: a field of the wrong type is a 500.
        let schema = if validation::builtin(&r).is_some() {
            obj = validation::builtin_types(&r, &obj).map_err(|f| refused(&r, f))?;
            None
        } else {
            let version = r.api_version.rsplit('/').next().unwrap_or_default();
            let schema = self
                .find_crd(r.group(), &r.kind)
                .and_then(|crd| validation::crd_schema(crd, version))
                .cloned();
            if let Some(schema) = &schema {
                validation::custom_types(&r, schema, &obj).map_err(|f| refused(&r, f))?;
                obj = validation::prune(&obj, schema);
            }
            schema
        };
        if let Some(msg) = self.blocking_webhook(r.group(), &plural) {
            return Err(api_err("apply", &r, 500, "InternalError", msg));
        }
        let old = existing.as_ref().map(|o| (&o.value, &o.owners));
        let (mut value, owners) =
            fields::apply(old, &obj, manager, force).map_err(|conflicts| {
                api_err(
                    "apply",
                    &r,
                    409,
                    "Conflict",
                    format!(
                        "Apply failed with {} conflict{}: {}",
                        conflicts.len(),
                        if conflicts.len() == 1 { "" } else { "s" },
                        fields::conflict_message(&conflicts)
                    ),
                )
            })?;
        if r.group().is_empty() && r.kind == "Secret" {
            fold_string_data(&mut value);
        }
        let old_value = existing.as_ref().map(|o| &o.value);
        match &schema {
            Some(schema) => validation::custom(&r, schema, &value),
            None if validation::builtin(&r).is_some() => {
                let taken = self.cluster_ips(&k);
                validation::builtin_object(&r, &value, old_value, &taken)
            }
            None => Ok(()),
        }
        .map_err(|f| refused(&r, f))?;
        if r.group().is_empty()
            && r.kind == "Service"
            && value.pointer("/spec/clusterIP").is_none()
            && value.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
        {
            let ip = self.allocate_cluster_ip(&k);
            value["spec"]["clusterIP"] = json!(ip);
            value["spec"]["clusterIPs"] = json!([ip]);
        }
        let generation = value
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let content = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            v
        };
        let new_generation = old_value.is_none_or(|o| content(o) != content(&value));
        if new_generation {
            value["metadata"]["generation"] = json!(generation + 1);
        }
        self.objects.insert(
            k.clone(),
            Obj {
                value: value.clone(),
                owners,
            },
        );
        if new_generation {
            self.on_new_generation(&r, &k);
        }
        Ok(self.objects.get(&k).map_or(value, |o| o.value.clone()))
    }

    /// A delete as kube-apiserver does it (kubernetes
    /// `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`, Delete):
    /// an object without finalizers goes at once; one with finalizers, and a Namespace
    /// (the namespace controller empties it first, `pkg/controller/namespace`), only
    /// gets a `deletionTimestamp` and goes when its finalizers are done, which the
    /// latency model times. Deleting again changes nothing.
    fn delete(&mut self, object: &ObjectRef, propagation: Propagation) {
        let k = key(object);
        let Some(current) = self.objects.get(&k).map(|o| o.value.clone()) else {
            return;
        };
        // Both policies end with the dependents gone; the mock's garbage collector
        // is instant, so they differ only in order.
        if propagation == Propagation::Foreground || object.kind != "Namespace" {
            for pod in self.owned_pods(object) {
                self.objects.remove(&pod);
            }
        }
        let namespace = object.kind == "Namespace" && object.group().is_empty();
        let finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !namespace && !finalizers {
            self.remove_now(object, &k);
            return;
        }
        if deleting(&current) {
            return;
        }
        let lat = self.latency();
        let secs = if namespace {
            lat.namespace_termination
        } else {
            lat.finalizers
        };
        if let Some(v) = self.value_mut(&k) {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            if namespace {
                v["status"] = json!({"phase": "Terminating"});
            }
        }
        self.start_timer(format!("gone:{k}"), secs);
    }

    fn remove_now(&mut self, object: &ObjectRef, k: &str) {
        self.objects.remove(k);
        if object.kind == "CustomResourceDefinition" {
            self.served.remove(&object.name);
            self.timers.remove(&format!("crd:{}", object.name));
            self.timers.remove(&format!("served:{}", object.name));
        }
        self.timers.retain(|t, _| !t.contains(k));
    }

    /// Deletions whose finalizers are done; a Namespace takes its content with it.
    fn finish_deletions(&mut self) -> bool {
        let due: Vec<String> = self
            .timers
            .keys()
            .filter(|t| t.starts_with("gone:") && self.due(t))
            .cloned()
            .collect();
        for timer in &due {
            let k = timer.trim_start_matches("gone:").to_string();
            self.timers.remove(timer);
            let Some(v) = self.objects.get(&k).map(|o| o.value.clone()) else {
                continue;
            };
            let r = ObjectRef::of(&v);
            if r.kind == "Namespace" && r.group().is_empty() {
                let content: Vec<String> = self
                    .objects
                    .iter()
                    .filter(|(_, o)| ObjectRef::of(&o.value).namespace.as_deref() == Some(&r.name))
                    .map(|(k, _)| k.clone())
                    .collect();
                for c in content {
                    self.objects.remove(&c);
                    self.timers.retain(|t, _| !t.contains(&c));
                }
            }
            self.remove_now(&r, &k);
        }
        !due.is_empty()
    }

    /// A namespaced kind named without a namespace is in `default`, as kube-rs and
    /// kubectl address it.
    fn in_default_namespace(&self, r: &ObjectRef) -> ObjectRef {
        match self.discover(r) {
            Some((true, _)) if r.namespace.is_none() => {
                let mut r = r.clone();
                r.namespace = Some("default".into());
                r
            }
            _ => r.clone(),
        }
    }

    /// A cluster IP for a Service that asked for none. kube-apiserver allocates dynamic
    /// IPs from the upper part of the Service CIDR first, leaving the lower band to
    /// static choices such as CoreDNS' 10.96.0.10 (kubernetes
    /// `pkg/registry/core/service/ipallocator`, KEP-3070); the mock takes the first free
    /// address above that band, deterministically.
    fn allocate_cluster_ip(&self, k: &str) -> String {
        let taken = self.cluster_ips(k);
        let (net, _) = validation::SERVICE_CIDR;
        let mut ip = u32::from(net) + 256;
        while taken.contains(&std::net::Ipv4Addr::from(ip).to_string()) {
            ip += 1;
        }
        std::net::Ipv4Addr::from(ip).to_string()
    }

    /// The cluster IPs Services other than `except` hold.
    fn cluster_ips(&self, except: &str) -> BTreeSet<String> {
        self.objects
            .iter()
            .filter(|(k, o)| *k != except && kind_of(&o.value) == "Service")
            .filter_map(|(_, o)| o.value.pointer("/spec/clusterIP").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// Starts the controllers' clocks for a new or changed object.
    fn on_new_generation(&mut self, r: &ObjectRef, k: &str) {
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
                self.timers.remove(&format!("deadline:{k}"));
                if let Some(secs) = self
                    .objects
                    .get(k)
                    .and_then(|o| progress_deadline(&o.value))
                {
                    self.start_timer(format!("deadline:{k}"), secs);
                }
                self.create_pods(r, k);
            }
            _ => {}
        }
    }

    fn owned_pods(&self, r: &ObjectRef) -> Vec<String> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                kind_of(&o.value) == "Pod"
                    && o.value
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        == r.namespace.as_deref()
                    && o.value
                        .pointer("/metadata/ownerReferences/0")
                        .is_some_and(|o| {
                            o["kind"] == r.kind.as_str() && o["name"] == r.name.as_str()
                        })
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A new generation replaces the pods: they exist at once, Ready only later.
    fn create_pods(&mut self, r: &ObjectRef, k: &str) {
        let Some(obj) = self.objects.get(k).map(|o| o.value.clone()) else {
            return;
        };
        for old in self.owned_pods(r) {
            self.objects.remove(&old);
        }
        let replicas = if r.kind == "DaemonSet" {
            self.objects
                .values()
                .filter(|o| kind_of(&o.value) == "Node")
                .count()
        } else {
            obj.pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        let ns = r.namespace.clone().unwrap_or_default();
        for n in 0..replicas {
            let name = format!("{}-{n}", r.name);
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [{"kind": r.kind, "name": r.name}]}, "status": {"podIP": pod_ip(&format!("{ns}/{name}")), "phase": "Pending", "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]}});
            self.objects.insert(
                key(&ObjectRef::of(&pod)),
                Obj {
                    value: pod,
                    owners: Owners::new(),
                },
            );
        }
        if let Some(v) = self.value_mut(k) {
            v["status"] = workload_status(&obj, replicas, 0);
        }
    }

    /// Runs every controller until nothing more is due; whether anything changed.
    fn reconcile(&mut self) -> bool {
        let mut any = false;
        // Each pass can unblock the next (a Ready dependency, a served CRD); bounded so
        // a modelling mistake cannot spin.
        for _ in 0..32 {
            if !self.reconcile_once() {
                break;
            }
            any = true;
        }
        any
    }

    fn reconcile_once(&mut self) -> bool {
        let mut changed = self.finish_deletions();
        let keys: Vec<String> = self.objects.keys().cloned().collect();
        for k in &keys {
            let Some(obj) = self.objects.get(k).map(|o| o.value.clone()) else {
                continue;
            };
            let r = ObjectRef::of(&obj);
            changed |= match r.kind.as_str() {
                "CustomResourceDefinition" => self.reconcile_crd(k, &r, &obj),
                "Deployment" | "DaemonSet" | "StatefulSet" => self.reconcile_workload(k, &r, &obj),
                "Service" => self.reconcile_service(k, &r, &obj),
                "GitRepository" | "Kustomization" => self.reconcile_flux(k, &r, &obj),
                "HelmRepository" | "OCIRepository" | "HelmChart" | "HelmRelease"
                    if r.group().ends_with(".toolkit.fluxcd.io") =>
                {
                    self.reconcile_helm(k, &r, &obj)
                }
                "PostgresCluster" if r.api_version == crate::pgo::API_VERSION => {
                    self.reconcile_postgres(k, &obj)
                }
                _ => false,
            };
        }
        changed
    }

    /// The postgres-operator stand-in (`pgo.rs`): once the database is up (a
    /// rollout's time), each user's Secret.
    fn reconcile_postgres(&mut self, k: &str, obj: &Value) -> bool {
        let timer = format!("pgo:{k}");
        if !self.timers.contains_key(&timer) {
            let secs = self.latency().rollout;
            self.start_timer(timer, secs);
            return false;
        }
        if !self.due(&timer) {
            return false;
        }
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let prefix = format!("/Secret/{ns}/");
        let secrets = crate::pgo::user_secrets(
            obj,
            self.objects
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, o)| &o.value),
        );
        let mut changed = false;
        for s in secrets {
            changed |= self.apply(&s, "postgres-operator", true).is_ok();
        }
        changed
    }

    fn reconcile_crd(&mut self, k: &str, r: &ObjectRef, obj: &Value) -> bool {
        let mut changed = false;
        if self.due(&format!("crd:{}", r.name)) && !is_true(obj, "Established") {
            if let Some(v) = self.value_mut(k) {
                set_condition(
                    v,
                    "NamesAccepted",
                    "True",
                    "NoConflicts",
                    "no conflicts found",
                );
                set_condition(
                    v,
                    "Established",
                    "True",
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                );
            }
            changed = true;
        }
        if self.due(&format!("served:{}", r.name)) && self.served.insert(r.name.clone()) {
            changed = true;
        }
        changed
    }

    fn reconcile_workload(&mut self, k: &str, r: &ObjectRef, obj: &Value) -> bool {
        let pods = self.owned_pods(r);
        let available = if r.kind == "DaemonSet" {
            obj.pointer("/status/numberAvailable")
        } else {
            obj.pointer("/status/availableReplicas")
        }
        .and_then(Value::as_u64)
        .unwrap_or(0);
        if !self.due(&format!("ready:{k}")) || available as usize == pods.len() && !pods.is_empty()
        {
            return false;
        }
        if pods.is_empty() && obj.pointer("/status/observedGeneration").is_some() {
            return false;
        }
        if let Some(why) = self.crash_loop(r, obj) {
            let mut changed = self.crash_pods(&pods, &why);
            if self.due(&format!("deadline:{k}")) {
                self.timers.remove(&format!("deadline:{k}"));
                if let Some(v) = self.value_mut(k) {
                    exceed_progress_deadline(v);
                    changed = true;
                }
            }
            return changed;
        }
        for p in &pods {
            if let Some(v) = self.value_mut(p) {
                v["status"]["phase"] = json!("Running");
                set_condition(v, "Ready", "True", "", "");
            }
        }
        self.timers.remove(&format!("deadline:{k}"));
        if let Some(v) = self.value_mut(k) {
            v["status"] = workload_status(obj, pods.len(), pods.len());
        }
        true
    }

    /// Why the workload's pods would crash on a real node (`crash_loop.rs`).
    fn crash_loop(&self, r: &ObjectRef, obj: &Value) -> Option<String> {
        let pod = obj.pointer("/spec/template/spec")?;
        crate::crash_loop::crash_loop(pod, |name| {
            let map = ObjectRef::new("v1", "ConfigMap", r.namespace.as_deref(), name);
            self.objects.get(&key(&map)).map(|o| o.value.clone())
        })
    }

    /// Pods that run and crash: CrashLoopBackOff, never Ready. Whether any changed.
    fn crash_pods(&mut self, pods: &[String], why: &str) -> bool {
        let mut changed = false;
        for p in pods {
            if let Some(v) = self.value_mut(p)
                && v["status"]["phase"] != json!("Running")
            {
                v["status"]["phase"] = json!("Running");
                v["status"]["containerStatuses"] = json!([{"ready": false, "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": why}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]);
                changed = true;
            }
        }
        changed
    }

    /// The EndpointSlice controller, and MetalLB for LoadBalancer Services.
    fn reconcile_service(&mut self, k: &str, r: &ObjectRef, obj: &Value) -> bool {
        let mut changed = false;
        let ns = r.namespace.clone().unwrap_or_default();
        let selector = selector_pairs(obj.pointer("/spec/selector"));
        if !selector.is_empty() {
            let endpoints: Vec<Value> = self
                .objects
                .values()
                .map(|o| &o.value)
                .filter(|v| {
                    kind_of(v) == "Pod"
                        && v.pointer("/metadata/namespace").and_then(Value::as_str)
                            == Some(ns.as_str())
                        && labels_match(v.pointer("/metadata/labels"), &selector)
                })
                .map(|p| {
                    json!({"addresses": [p.pointer("/status/podIP").cloned().unwrap_or(json!("10.244.0.2"))],
                           "conditions": {"ready": is_true(p, "Ready")},
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": p.pointer("/metadata/name")}})
                })
                .collect();
            let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{}-mock", r.name), "namespace": ns,
                             "labels": {"kubernetes.io/service-name": r.name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                "addressType": "IPv4", "endpoints": endpoints, "ports": obj.pointer("/spec/ports").cloned().unwrap_or(json!([]))});
            let sk = key(&ObjectRef::of(&slice));
            if self.objects.get(&sk).map(|o| &o.value) != Some(&slice) {
                self.objects.insert(
                    sk,
                    Obj {
                        value: slice,
                        owners: Owners::new(),
                    },
                );
                changed = true;
            }
        }
        if obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
            && obj.pointer("/status/loadBalancer/ingress/0/ip").is_none()
        {
            let start = self
                .objects
                .values()
                .find(|o| kind_of(&o.value) == "IPAddressPool")
                .and_then(|o| o.value.pointer("/spec/addresses/0"))
                .and_then(Value::as_str)
                .and_then(first_ip);
            let announced = self
                .objects
                .values()
                .any(|o| kind_of(&o.value) == "L2Advertisement");
            if let (Some(start), true) = (start, announced) {
                let ip = std::net::Ipv4Addr::from(u32::from(start).saturating_add(self.next_ip));
                self.next_ip += 1;
                if let Some(v) = self.value_mut(k) {
                    v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}});
                }
                changed = true;
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

    /// Flux's controllers: a source becomes Ready, a Kustomization or HelmRelease once
    /// its source and `dependsOn` are Ready (the Kustomization applying its part of
    /// the Git tree), or Stalls when told to fail.
    fn reconcile_flux(&mut self, k: &str, r: &ObjectRef, obj: &Value) -> bool {
        let status = kstatus::status(obj);
        // A Ready=False failure is retried at the interval (a new Git revision heals
        // it); Stalled is final.
        if matches!(
            status,
            Status::Current | Status::Suspended | Status::Terminating
        ) || is_true(obj, "Stalled")
        {
            return false;
        }
        let ns = r.namespace.clone().unwrap_or_default();
        let generation = obj
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        if let Some(msg) = self
            .failing
            .get(&format!("{}/{ns}/{}", r.kind, r.name))
            .cloned()
        {
            if let Some(v) = self.value_mut(k) {
                v["status"]["observedGeneration"] = generation;
                remove_condition(v, "Reconciling");
                set_condition(v, "Stalled", "True", "BuildFailed", &msg);
                set_condition(v, "Ready", "False", "BuildFailed", &msg);
            }
            return true;
        }
        let mut waiting_for = Vec::new();
        let mut source_url = None;
        if r.kind == "Kustomization"
            && let Some(src) = obj.pointer("/spec/sourceRef/name").and_then(Value::as_str)
        {
            let src_ns = obj
                .pointer("/spec/sourceRef/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&ns)
                .to_string();
            if self.flux_ready("GitRepository", &src_ns, src) {
                source_url = self
                    .objects
                    .get(&format!(
                        "source.toolkit.fluxcd.io/GitRepository/{src_ns}/{src}"
                    ))
                    .and_then(|o| o.value.pointer("/spec/url"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
            } else {
                waiting_for.push(format!("source 'GitRepository/{src_ns}/{src}'"));
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
        if !waiting_for.is_empty() {
            let msg = format!("{} is not ready", waiting_for.join(", "));
            let ready_msg = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str());
            if ready_msg == Some(msg.as_str()) {
                return false;
            }
            if let Some(v) = self.value_mut(k) {
                v["status"]["observedGeneration"] = generation;
                remove_condition(v, "Reconciling");
                set_condition(v, "Ready", "False", "DependencyNotReady", &msg);
            }
            return true;
        }
        let lat = self.latency();
        let secs = match r.kind.as_str() {
            "GitRepository" => lat.source,
            "Kustomization" => lat.kustomization,
            _ => lat.helmrelease,
        };
        let timer = format!("flux:{k}@{generation}");
        if !self.timers.contains_key(&timer) {
            self.start_timer(timer.clone(), secs);
            if let Some(v) = self.value_mut(k) {
                v["status"]["observedGeneration"] = generation.clone();
                set_condition(
                    v,
                    "Reconciling",
                    "True",
                    "Progressing",
                    "reconciliation in progress",
                );
                set_condition(
                    v,
                    "Ready",
                    "Unknown",
                    "Progressing",
                    "reconciliation in progress",
                );
            }
            return true;
        }
        if !self.due(&timer) {
            return false;
        }
        if let Some(url) = source_url {
            let path = obj
                .pointer("/spec/path")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Err(e) = self.apply_tree(k, &r.name, &url, path, &generation) {
                // Flux reports the failure and tries again after its interval.
                self.timers.remove(&timer);
                self.start_timer(timer, secs);
                if let Some(v) = self.value_mut(k) {
                    remove_condition(v, "Reconciling");
                    set_condition(v, "Ready", "False", "ReconciliationFailed", &e);
                }
                return true;
            }
        }
        if let Some(v) = self.value_mut(k) {
            v["status"]["observedGeneration"] = generation;
            remove_condition(v, "Reconciling");
            set_condition(
                v,
                "Ready",
                "True",
                "ReconciliationSucceeded",
                "Applied revision: main@sha1:5b2e1f0",
            );
        }
        true
    }

    /// Applies the part of the Git tree at `path`, namespaces first, as kustomize does.
    fn apply_tree(
        &mut self,
        k: &str,
        name: &str,
        url: &str,
        path: &str,
        generation: &Value,
    ) -> std::result::Result<(), String> {
        let mark = format!("{k}@{generation}");
        if self.applied.contains(&mark) {
            return Ok(());
        }
        let mut objects: Vec<Value> = self
            .git_trees
            .get(url)
            .into_iter()
            .flatten()
            .filter(|o| {
                match o
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(PATH_ANNOTATION))
                    .and_then(Value::as_str)
                {
                    Some(p) => normalize_path(p) == normalize_path(path),
                    None => name == "flux-system",
                }
            })
            .cloned()
            .collect();
        objects.sort_by_key(|o| match kind_of(o) {
            "CustomResourceDefinition" => 0,
            "Namespace" => 1,
            _ => 2,
        });
        for mut o in objects {
            if let Some(a) = o
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                a.remove(PATH_ANNOTATION);
            }
            // kustomize-controller marks what it applies as its Kustomization's
            // (`resourceManager.SetOwnerLabels`) and applies as its own field
            // manager, forcing ownership (fluxcd/pkg `ssa/manager_apply.go`).
            let ns = k.split('/').nth(2).unwrap_or("flux-system");
            o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!(name);
            o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!(ns);
            if let Some(e) = self.admission(&o) {
                return Err(dry_run_failed(&o, e));
            }
            self.apply(&o, "kustomize-controller", true)
                .map_err(|e| dry_run_failed(&o, e))?;
        }
        self.applied.insert(mark);
        Ok(())
    }

    fn judge(&self, c: &Condition) -> Verdict {
        let seen: Vec<Vec<&Value>> = c.selections().iter().map(|s| self.select(s)).collect();
        match (c, c.evaluate(&seen)) {
            (Condition::CrdEstablished(name), Verdict::Met(_)) if !self.served.contains(name) => {
                Verdict::Missing(format!(
                    "CRD {name} is Established but discovery does not serve its kind yet"
                ))
            }
            (_, verdict) => verdict,
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let now = Instant::now();
        self.timers.values().filter(|t| **t > now).min().copied()
    }

    /// The `apps` Kustomization (or, without one, every Flux object) is Ready.
    fn apps_ready(&self) -> bool {
        let apps = self.objects.values().find(|o| {
            kind_of(&o.value) == "Kustomization" && ObjectRef::of(&o.value).name == "apps"
        });
        match apps {
            Some(o) => kstatus::status(&o.value) == Status::Current,
            None => matches!(self.judge(&Condition::AllFluxReady), Verdict::Met(_)),
        }
    }
}

/// The deployment controller's default `spec.progressDeadlineSeconds`, which the API
/// server writes into every Deployment (kubernetes `pkg/apis/apps/v1/defaults.go`).
const PROGRESS_DEADLINE_SECONDS: i64 = 600;

/// Seconds a Deployment may go without progress before its controller gives up
/// on it; none for other kinds, or a Deployment without a deadline (MaxInt32).
fn progress_deadline(obj: &Value) -> Option<f64> {
    if kind_of(obj) != "Deployment" {
        return None;
    }
    let secs = obj
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(PROGRESS_DEADLINE_SECONDS);
    (secs < i64::from(i32::MAX)).then_some(secs as f64)
}

/// `<name>-<hash of the pod template>`: the name the deployment controller gives
/// the new ReplicaSet (`pod-template-hash`) and the StatefulSet controller the
/// update revision (`controller-revision-hash`); the hash here is the template's
/// SHA-256, not Kubernetes' FNV, which nothing compares.
fn template_name(obj: &Value) -> String {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let template = obj
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let digest = Sha256::digest(template.to_string().as_bytes());
    format!("{name}-{}", &hex::encode(digest)[..10])
}

/// The status the workload controllers write for `n` pods of the current template,
/// `ready` of them Ready (and available: the mock's pods have no minReadySeconds).
/// Counters the API marks `omitempty` are left out at zero, as the real ones are.
/// Deployment: kubernetes `pkg/controller/deployment/sync.go` (syncRolloutStatus)
/// and `util/deployment_util.go` (MinimumReplicasAvailable/Unavailable,
/// ReplicaSetUpdated, NewReplicaSetAvailable); StatefulSet: `stateful_set_utils.go`
/// (currentRevision becomes updateRevision once every pod is updated and ready);
/// DaemonSet: `daemon_controller.go` (updateDaemonSetStatus).
fn workload_status(obj: &Value, n: usize, ready: usize) -> Value {
    let generation = obj
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let done = ready == n;
    let mut status = match kind_of(obj) {
        "DaemonSet" => json!({"observedGeneration": generation,
            "desiredNumberScheduled": n, "currentNumberScheduled": n, "numberMisscheduled": 0,
            "numberReady": ready, "updatedNumberScheduled": n, "numberAvailable": ready,
            "numberUnavailable": n.saturating_sub(ready)}),
        "StatefulSet" => {
            let update = template_name(obj);
            // The first revision is current from the start; a later one once rolled out.
            let previous = obj
                .pointer("/status/updateRevision")
                .and_then(Value::as_str)
                .unwrap_or(&update)
                .to_string();
            let current = if done { update.clone() } else { previous };
            let current_replicas = if current == update {
                n
            } else {
                n.saturating_sub(ready)
            };
            json!({"observedGeneration": generation, "replicas": n, "readyReplicas": ready,
                "currentReplicas": current_replicas, "updatedReplicas": n, "availableReplicas": ready,
                "currentRevision": current, "updateRevision": update, "collisionCount": 0})
        }
        _ => {
            let rs = template_name(obj);
            // maxUnavailable defaults to 25%, rounded down (deployment_util.go).
            let available = ready >= n - n / 4;
            let (a_status, a_reason, a_message) = if available {
                (
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                )
            } else {
                (
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                )
            };
            let (p_reason, p_message) = if done {
                (
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{rs}\" has successfully progressed."),
                )
            } else {
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs}\" is progressing."),
                )
            };
            json!({"observedGeneration": generation, "replicas": n, "updatedReplicas": n,
                "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": n.saturating_sub(ready),
                "conditions": [
                    {"type": "Available", "status": a_status, "reason": a_reason, "message": a_message},
                    {"type": "Progressing", "status": "True", "reason": p_reason, "message": p_message}]})
        }
    };
    let omitempty: &[&str] = match kind_of(obj) {
        "DaemonSet" => &[
            "updatedNumberScheduled",
            "numberAvailable",
            "numberUnavailable",
        ],
        "StatefulSet" => &[
            "readyReplicas",
            "currentReplicas",
            "updatedReplicas",
            "collisionCount",
        ],
        _ => &[
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ],
    };
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| !(omitempty.contains(&k.as_str()) && v.as_u64() == Some(0)));
    }
    status
}

/// What the deployment controller writes when a rollout has made no progress for
/// `progressDeadlineSeconds` (kubernetes `pkg/controller/deployment/progress.go`,
/// `util/deployment_util.go` TimedOutReason).
fn exceed_progress_deadline(deployment: &mut Value) {
    let rs = template_name(deployment);
    set_condition(
        deployment,
        "Progressing",
        "False",
        "ProgressDeadlineExceeded",
        &format!("ReplicaSet \"{rs}\" has timed out progressing."),
    );
}

#[async_trait]
impl ClusterApi for MockCluster {
    async fn apply_as(&self, manager: &str, object: &Value, force: bool) -> Result<Value> {
        let r = ObjectRef::of(object);
        self.enter("apply", &r).await?;
        let result = {
            let mut i = self.lock();
            let result = i.apply(object, manager, force);
            i.reconcile();
            result
        };
        self.changed.notify_waiters();
        result
    }

    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>> {
        self.enter("get", object).await?;
        let i = self.lock();
        if i.discover(object).is_none() {
            return Err(api_err(
                "get",
                object,
                404,
                "NotFound",
                format!(
                    "no matches for kind \"{}\" in version \"{}\"",
                    object.kind, object.api_version
                ),
            ));
        }
        Ok(i.objects
            .get(&key(&i.in_default_namespace(object)))
            .map(|o| o.value.clone()))
    }

    async fn delete(&self, object: &ObjectRef, propagation: Propagation) -> Result<()> {
        self.enter("delete", object).await?;
        {
            let mut i = self.lock();
            let object = i.in_default_namespace(object);
            i.delete(&object, propagation);
            i.reconcile();
        }
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
        if i.discover(&r).is_none() {
            return Err(api_err(
                "list",
                &r,
                404,
                "NotFound",
                format!("no matches for kind \"{kind}\" in version \"{api_version}\""),
            ));
        }
        let sel = Selection {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: None,
            labels: Vec::new(),
            optional: false,
        };
        Ok(i.select(&sel).into_iter().cloned().collect())
    }

    async fn wait(&self, condition: &Condition, timeout: Duration) -> Result<String> {
        self.wait_reporting(condition, timeout, &|_| {}).await
    }

    async fn wait_reporting(
        &self,
        condition: &Condition,
        timeout: Duration,
        report: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> Result<String> {
        let r = ObjectRef::new("v1", "watch", None, &condition.to_string());
        let mut reported = String::new();
        let deadline = Instant::now() + timeout;
        self.enter("watch", &r).await?;
        loop {
            // Register for changes before looking, so no change slips between.
            let changed = self.changed.notified();
            let (verdict, next) = {
                let mut i = self.lock();
                if i.reachable {
                    i.reconcile();
                    (i.judge(condition), i.next_timer())
                } else {
                    // A watch on a vanished server retries until its deadline.
                    (
                        Verdict::Missing("the API server stopped answering".into()),
                        None,
                    )
                }
            };
            let missing = match verdict {
                Verdict::Met(detail) => return Ok(detail),
                Verdict::Failed(e) => return Err(e),
                Verdict::Missing(m) => m,
            };
            if missing != reported {
                report(&missing);
                reported.clone_from(&missing);
            }
            // Controllers act on timers; a timer that came due without a visible
            // change must not leave the watch asleep until its deadline.
            let wake = next
                .map_or(deadline, |n| n.min(deadline))
                .min(Instant::now() + Duration::from_millis(250));
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

    async fn probe_http(&self, url: &str, timeout: Duration) -> Result<u16> {
        let r = ObjectRef::new("v1", "probe", None, url);
        tokio::time::timeout(timeout, self.enter("probe", &r))
            .await
            .map_err(|_| Error::Unreachable(format!("GET {url}: timed out")))??;
        let i = self.lock();
        let lb = i.objects.values().any(|o| {
            kind_of(&o.value) == "Service"
                && o.value
                    .pointer("/status/loadBalancer/ingress/0/ip")
                    .is_some()
        });
        if lb && i.apps_ready() {
            Ok(200)
        } else {
            Err(Error::Unreachable(format!(
                "GET {url}: dial tcp: connect: connection refused"
            )))
        }
    }
}
