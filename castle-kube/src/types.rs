use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Names one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// The reference of an object.
    pub fn of(obj: &Value) -> Self {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_string);
        Self {
            api_version: s("/apiVersion").unwrap_or_default(),
            kind: s("/kind").unwrap_or_default(),
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name").unwrap_or_default(),
        }
    }

    /// A reference by parts.
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    /// The API group (`""` for core).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What to wait for. Each is decided by watching the objects, never by sleeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// A CRD is Established and its kind served by discovery.
    CrdEstablished(String),
    /// A Deployment, DaemonSet or StatefulSet finished rolling out: Current by
    /// kstatus's rule for its kind ([`crate::kstatus::compute`]). Failed by that rule
    /// (a Deployment past its progress deadline) ends the wait with
    /// [`Error::Failed`](crate::Error::Failed).
    Rollout(ObjectRef),
    /// A Service's EndpointSlice has a ready endpoint (label `kubernetes.io/service-name`).
    EndpointsReady {
        /// Namespace.
        namespace: String,
        /// Service name.
        service: String,
    },
    /// At least `min` pods match the selector, and all matching pods are Ready.
    PodsReady {
        /// Namespace.
        namespace: String,
        /// `key=value` pairs.
        selector: Vec<(String, String)>,
        /// Pods that must exist.
        min: usize,
    },
    /// A LoadBalancer Service has an ingress IP.
    LoadBalancerIp {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// An object with a Ready condition (a Flux object, a ClusterSecretStore) is
    /// Ready by kstatus rules.
    FluxReady(ObjectRef),
    /// Every Flux Kustomization and HelmRelease in the cluster is Ready.
    AllFluxReady,
    /// `count` Nodes are Ready.
    NodesReady(usize),
    /// The Node of this name is registered and Ready.
    NodeReady(String),
    /// The object is gone: its deletion (finalizers, a namespace's content) finished.
    Deleted(ObjectRef),
    /// The object exists and is not being deleted (a Secret an operator creates).
    Exists(ObjectRef),
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::CrdEstablished(n) => write!(f, "CRD {n} established"),
            Condition::Rollout(r) => write!(f, "{r} rolled out"),
            Condition::EndpointsReady { namespace, service } => {
                write!(f, "a ready endpoint of service {namespace}/{service}")
            }
            Condition::PodsReady {
                namespace,
                selector,
                min,
            } => {
                let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "{min}+ ready pods {} in {namespace}", sel.join(","))
            }
            Condition::LoadBalancerIp { namespace, name } => {
                write!(f, "a LoadBalancer IP for {namespace}/{name}")
            }
            Condition::FluxReady(r) => write!(f, "{r} Ready"),
            Condition::AllFluxReady => write!(f, "every Flux Kustomization and HelmRelease Ready"),
            Condition::NodesReady(n) => write!(f, "{n} nodes Ready"),
            Condition::NodeReady(n) => write!(f, "node {n} Ready"),
            Condition::Deleted(r) => write!(f, "{r} deleted"),
            Condition::Exists(r) => write!(f, "{r} exists"),
        }
    }
}

/// How a delete treats the object's dependents (pods of a Deployment, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Propagation {
    /// The object goes at once; the garbage collector removes dependents afterwards.
    #[default]
    Background,
    /// Dependents go first; the object stays (with a deletionTimestamp) until they are gone.
    Foreground,
}
