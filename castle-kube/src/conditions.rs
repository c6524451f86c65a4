//! What each wait watches and how it judges what it sees. The real client and the mock
//! share this, so a condition means the same thing against both.

use serde_json::Value;

use crate::kstatus::{self, Kstatus, Status};
use crate::{Condition, Error, ObjectRef};

/// A set of objects one wait watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    /// A kind the cluster may not serve at all (HelmRelease without helm-controller):
    /// then it simply has no objects.
    pub optional: bool,
}

impl Selection {
    fn of(api_version: &str, kind: &str) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: None,
            name: None,
            labels: Vec::new(),
            optional: false,
        }
    }

    fn object(r: &ObjectRef) -> Self {
        Self {
            namespace: r.namespace.clone(),
            name: Some(r.name.clone()),
            ..Self::of(&r.api_version, &r.kind)
        }
    }

    fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// `k=v,k2=v2`, the API's label selector syntax.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub fn label_selector(&self) -> Option<String> {
        (!self.labels.is_empty()).then(|| {
            self.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// Whether `obj` belongs to the selection (kind, group, namespace, name, labels).
    #[cfg_attr(not(feature = "mock"), allow(dead_code))]
    pub fn matches(&self, obj: &Value) -> bool {
        let r = ObjectRef::of(obj);
        let group = self.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        r.kind == self.kind
            && r.group() == group
            && (self.namespace.is_none() || r.namespace == self.namespace)
            && self.name.as_ref().is_none_or(|n| *n == r.name)
            && labels_match(obj.pointer("/metadata/labels"), &self.labels)
    }
}

pub(crate) fn labels_match(labels: Option<&Value>, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str()))
}

/// Where a wait stands.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Holds; the detail for the caller.
    Met(String),
    /// Not yet; what is missing.
    Missing(String),
    /// Can never hold by waiting.
    Failed(Error),
}

pub(crate) fn is_true(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// Rollout of a Deployment, DaemonSet or StatefulSet by kstatus's rule for its kind
/// (cli-utils `pkg/kstatus/status/core.go`, as Flux's health checks judge it): a
/// Deployment past its progress deadline fails at once, in kstatus's and the
/// controller's words.
fn rollout(r: &ObjectRef, v: &Value) -> Verdict {
    let what = format!("{} {}", r.kind.to_lowercase(), ns_name(r));
    let c = kstatus::compute(v);
    match c.status {
        Kstatus::Current => Verdict::Met(c.message),
        Kstatus::Failed => Verdict::Failed(Error::Failed {
            object: r.to_string(),
            message: c.explained(),
        }),
        Kstatus::InProgress | Kstatus::Terminating => {
            Verdict::Missing(format!("{what}: {}", c.message))
        }
    }
}

fn ns_name(r: &ObjectRef) -> String {
    match &r.namespace {
        Some(ns) => format!("{ns}/{}", r.name),
        None => r.name.clone(),
    }
}

fn suspended(r: &ObjectRef) -> String {
    format!("{r} is suspended (spec.suspend: true) and never becomes Ready: resume it")
}

impl Condition {
    /// The objects this condition is decided on.
    pub(crate) fn selections(&self) -> Vec<Selection> {
        match self {
            Condition::CrdEstablished(name) => vec![Selection {
                name: Some(name.clone()),
                ..Selection::of("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            }],
            Condition::Rollout(r)
            | Condition::FluxReady(r)
            | Condition::Deleted(r)
            | Condition::Exists(r) => vec![Selection::object(r)],
            Condition::EndpointsReady { namespace, service } => vec![Selection {
                labels: vec![("kubernetes.io/service-name".into(), service.clone())],
                ..Selection::of("discovery.k8s.io/v1", "EndpointSlice").in_namespace(namespace)
            }],
            Condition::PodsReady {
                namespace,
                selector,
                ..
            } => vec![Selection {
                labels: selector.clone(),
                ..Selection::of("v1", "Pod").in_namespace(namespace)
            }],
            Condition::LoadBalancerIp { namespace, name } => vec![Selection::object(
                &ObjectRef::new("v1", "Service", Some(namespace), name),
            )],
            Condition::AllFluxReady => vec![
                Selection::of("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
                Selection {
                    optional: true,
                    ..Selection::of("helm.toolkit.fluxcd.io/v2", "HelmRelease")
                },
            ],
            Condition::NodesReady(_) => vec![Selection::of("v1", "Node")],
            Condition::NodeReady(name) => vec![Selection {
                name: Some(name.clone()),
                ..Selection::of("v1", "Node")
            }],
        }
    }

    /// Judges the objects seen, one list per selection. CRDs are judged on
    /// `Established` only: whether discovery serves the kind is asked separately.
    pub(crate) fn evaluate(&self, seen: &[Vec<&Value>]) -> Verdict {
        let first = seen.first().map(Vec::as_slice).unwrap_or_default();
        match self {
            Condition::CrdEstablished(name) => match first.first() {
                None => Verdict::Missing(format!("CRD {name} does not exist yet")),
                Some(crd) if !is_true(crd, "Established") => {
                    Verdict::Missing(format!("CRD {name} is not Established yet"))
                }
                Some(_) => Verdict::Met(String::new()),
            },
            Condition::Rollout(r) => match first.first() {
                None => Verdict::Missing(format!("{r} does not exist")),
                Some(v) => rollout(r, v),
            },
            Condition::EndpointsReady { namespace, service } => {
                let endpoints: Vec<&Value> = first
                    .iter()
                    .filter_map(|s| s.get("endpoints").and_then(Value::as_array))
                    .flatten()
                    .collect();
                let ready = endpoints
                    .iter()
                    .filter(|e| e.pointer("/conditions/ready") == Some(&Value::Bool(true)))
                    .count();
                if ready > 0 {
                    Verdict::Met(format!("{ready} ready endpoints"))
                } else if first.is_empty() {
                    Verdict::Missing(format!(
                        "service {namespace}/{service} has no EndpointSlice yet"
                    ))
                } else {
                    Verdict::Missing(format!(
                        "service {namespace}/{service}: 0/{} endpoints ready",
                        endpoints.len()
                    ))
                }
            }
            Condition::PodsReady { min, .. } => {
                let ready = first.iter().filter(|p| is_true(p, "Ready")).count();
                if first.len() >= *min && ready == first.len() && ready > 0 {
                    Verdict::Met(format!("{ready} pods"))
                } else {
                    Verdict::Missing(format!(
                        "{} matching pods exist (want at least {min}), {ready} Ready",
                        first.len()
                    ))
                }
            }
            Condition::LoadBalancerIp { namespace, name } => {
                let ingress = first
                    .first()
                    .and_then(|s| s.pointer("/status/loadBalancer/ingress/0"));
                match ingress
                    .and_then(|i| i.get("ip").or_else(|| i.get("hostname")))
                    .and_then(Value::as_str)
                {
                    Some(ip) => Verdict::Met(ip.to_string()),
                    None if first.is_empty() => {
                        Verdict::Missing(format!("service {namespace}/{name} does not exist yet"))
                    }
                    None => Verdict::Missing(format!(
                        "service {namespace}/{name} has no LoadBalancer ingress IP"
                    )),
                }
            }
            Condition::FluxReady(r) => match first.first() {
                None => Verdict::Missing(format!("{r} does not exist yet")),
                Some(v) => match kstatus::status(v) {
                    Status::Current => Verdict::Met(String::new()),
                    Status::Failed(message) => Verdict::Failed(Error::Failed {
                        object: r.to_string(),
                        message,
                    }),
                    Status::Suspended => Verdict::Failed(Error::Failed {
                        object: r.to_string(),
                        message: suspended(r),
                    }),
                    Status::InProgress(m) => Verdict::Missing(format!("{r}: {m}")),
                    Status::Terminating => Verdict::Missing(format!("{r} is terminating")),
                },
            },
            Condition::AllFluxReady => {
                let mut pending = Vec::new();
                let mut paused = Vec::new();
                let mut ready = 0;
                for v in seen.iter().flatten() {
                    let r = ObjectRef::of(v);
                    match kstatus::status(v) {
                        Status::Current => ready += 1,
                        Status::Failed(message) => {
                            return Verdict::Failed(Error::Failed {
                                object: r.to_string(),
                                message,
                            });
                        }
                        Status::Suspended => paused.push(r.to_string()),
                        Status::InProgress(m) => pending.push(format!("{r} ({m})")),
                        Status::Terminating => pending.push(format!("{r} (terminating)")),
                    }
                }
                if ready == 0 && pending.is_empty() {
                    Verdict::Missing("no Flux Kustomization exists yet".into())
                } else if pending.is_empty() {
                    let mut detail = format!("{ready} Kustomizations and HelmReleases Ready");
                    if !paused.is_empty() {
                        detail.push_str(&format!(
                            "; suspended, not waited on: {}",
                            paused.join(", ")
                        ));
                    }
                    Verdict::Met(detail)
                } else {
                    Verdict::Missing(format!(
                        "{} of {} not Ready: {}",
                        pending.len(),
                        pending.len() + ready,
                        pending.join("; ")
                    ))
                }
            }
            Condition::Exists(r) => match first.first() {
                None => Verdict::Missing(format!("{r} does not exist yet")),
                Some(v) if v.pointer("/metadata/deletionTimestamp").is_some() => {
                    Verdict::Missing(format!("{r} is being deleted"))
                }
                Some(_) => Verdict::Met(String::new()),
            },
            Condition::Deleted(r) => match first.first() {
                None => Verdict::Met(String::new()),
                Some(v) => {
                    let finalizers: Vec<&str> = v
                        .pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let phase = v.pointer("/status/phase").and_then(Value::as_str);
                    Verdict::Missing(if !finalizers.is_empty() {
                        format!(
                            "{r} is being deleted; finalizers left: {}",
                            finalizers.join(", ")
                        )
                    } else if phase == Some("Terminating") {
                        format!("{r} is Terminating: its content is being deleted")
                    } else {
                        format!("{r} is being deleted")
                    })
                }
            },
            Condition::NodesReady(n) => {
                let ready = first.iter().filter(|v| is_true(v, "Ready")).count();
                if ready >= *n {
                    Verdict::Met(format!("{ready} nodes Ready"))
                } else {
                    Verdict::Missing(format!(
                        "{ready}/{n} nodes Ready ({} registered)",
                        first.len()
                    ))
                }
            }
            Condition::NodeReady(name) => match first.first() {
                None => Verdict::Missing(format!("node {name} is not registered yet")),
                Some(v) if is_true(v, "Ready") => Verdict::Met(format!("node {name} Ready")),
                Some(_) => Verdict::Missing(format!("node {name} is registered, not Ready yet")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn judge(c: &Condition, objs: &[Value]) -> Verdict {
        c.evaluate(&[objs.iter().collect()])
    }

    #[test]
    fn one_node_is_ready_once_registered_with_ready_true() {
        let c = Condition::NodeReady("worker-1".into());
        assert!(matches!(judge(&c, &[]), Verdict::Missing(m) if m.contains("not registered")));
        let not_yet = json!({"metadata": {"name": "worker-1"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(
            matches!(judge(&c, &[not_yet]), Verdict::Missing(m) if m.contains("not Ready yet"))
        );
        let ready = json!({"metadata": {"name": "worker-1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(matches!(judge(&c, &[ready]), Verdict::Met(_)));
    }

    #[test]
    fn a_rollout_names_what_is_missing() {
        let r = ObjectRef::new(
            "apps/v1",
            "Deployment",
            Some("metallb-system"),
            "controller",
        );
        let d = |generation: i64, observed: i64, available: i64, progress: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "controller", "namespace": "metallb-system", "generation": generation},
                "spec": {"replicas": 1, "progressDeadlineSeconds": 600},
                "status": {"observedGeneration": observed, "replicas": 1, "updatedReplicas": 1, "readyReplicas": available, "availableReplicas": available,
                    "conditions": [{"type": "Available", "status": if available == 1 { "True" } else { "False" }}, progress]}})
        };
        let rolling =
            json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"});
        let done =
            json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"});
        match judge(&Condition::Rollout(r.clone()), &[d(1, 1, 0, rolling)]) {
            Verdict::Missing(m) => {
                assert_eq!(m, "deployment metallb-system/controller: Available: 0/1");
            }
            other => panic!("{other:?}"),
        }
        match judge(&Condition::Rollout(r.clone()), &[d(2, 1, 1, done.clone())]) {
            Verdict::Missing(m) => assert_eq!(
                m,
                "deployment metallb-system/controller: Deployment generation is 2, but latest observed generation is 1"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(&Condition::Rollout(r.clone()), &[d(2, 2, 1, done)]),
            Verdict::Met(m) if m == "Deployment is available. Replicas: 1"
        ));
        // kubernetes `pkg/controller/deployment/progress.go`: past the deadline the
        // controller says so, and kstatus calls it Failed.
        let stuck = json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"controller-5d4f\" has timed out progressing."});
        match judge(&Condition::Rollout(r), &[d(1, 1, 0, stuck)]) {
            Verdict::Failed(e) => assert_eq!(
                e.to_string(),
                "Deployment metallb-system/controller failed: Progress deadline exceeded: ReplicaSet \"controller-5d4f\" has timed out progressing."
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn endpoints_count_only_when_ready_is_true() {
        let c = Condition::EndpointsReady {
            namespace: "metallb-system".into(),
            service: "metallb-webhook-service".into(),
        };
        let slice = |ready: Value| json!({"endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": ready}}]});
        assert!(matches!(judge(&c, &[]), Verdict::Missing(m) if m.contains("no EndpointSlice")));
        assert!(matches!(
            judge(&c, &[slice(json!(false))]),
            Verdict::Missing(_)
        ));
        assert!(matches!(
            judge(&c, &[slice(json!(null))]),
            Verdict::Missing(_)
        ));
        assert!(matches!(judge(&c, &[slice(json!(true))]), Verdict::Met(_)));
    }

    #[test]
    fn no_pods_is_not_ready_pods() {
        let c = Condition::PodsReady {
            namespace: "web".into(),
            selector: vec![("app".into(), "blog".into())],
            min: 0,
        };
        assert!(matches!(judge(&c, &[]), Verdict::Missing(_)));
    }

    #[test]
    fn all_flux_reports_suspended_objects_without_waiting_on_them() {
        let ready = json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "apps", "namespace": "flux-system", "generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}});
        let paused = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "old", "namespace": "web", "generation": 1}, "spec": {"suspend": true}});
        match Condition::AllFluxReady.evaluate(&[vec![&ready], vec![&paused]]) {
            Verdict::Met(m) => assert!(
                m.contains("suspended, not waited on: HelmRelease web/old"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
