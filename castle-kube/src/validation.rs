//! What kube-apiserver refuses, so that [`crate::MockCluster`] refuses it too.
//!
//! The rules are learnt from kube-apiserver's own validation (kubernetes v1.34-v1.36):
//! `staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go` (names, labels),
//! `staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go`,
//! `pkg/apis/core/validation/validation.go` (pods, services, config maps, secrets,
//! claims, quotas), `pkg/apis/apps/validation/validation.go`,
//! `pkg/apis/batch/validation/validation.go`, `pkg/apis/networking/validation/validation.go`,
//! `pkg/apis/autoscaling/validation/validation.go`, `pkg/apis/rbac/validation/validation.go`,
//! `pkg/apis/storage/validation/validation.go`, `pkg/apis/scheduling/validation/validation.go`,
//! `pkg/apis/policy/validation/validation.go`, `pkg/apis/discovery/validation/validation.go`,
//! `pkg/apis/admissionregistration/validation/validation.go`, and apiextensions'
//! `pkg/apis/apiextensions/validation/validation.go` plus the structural-schema rules in
//! `pkg/apiserver/schema/validation.go`. Messages are written the way `field.Error`
//! prints them, and the refusal is the 422 `Kind.group "name" is invalid: ...` that
//! `errors.NewInvalid` builds. Fields of the wrong type are refused earlier, by the
//! typed patch of server-side apply, with a 500 (sigs.k8s.io/structured-merge-diff
//! `typed/validate.go`): built-in kinds are type-checked against the k8s-openapi structs,
//! custom resources against their CRD's schema (with a JSON-schema validator).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::ObjectRef;

/// A built-in kind as discovery serves it.
#[derive(Debug)]
pub(crate) struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

macro_rules! kinds {
    ($(($g:literal, $v:literal, $k:literal, $p:literal, $ns:literal)),* $(,)?) => {
        &[$(Kind { group: $g, version: $v, kind: $k, plural: $p, namespaced: $ns }),*]
    };
}

/// The built-in kinds kube-apiserver v1.34 serves at their preferred versions (plus
/// autoscaling/v1), as `kubectl api-resources` lists them.
pub(crate) const KINDS: &[Kind] = kinds![
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "Node", "nodes", false),
    ("", "v1", "PersistentVolume", "persistentvolumes", false),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Endpoints", "endpoints", true),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true
    ),
    ("", "v1", "ResourceQuota", "resourcequotas", true),
    ("", "v1", "LimitRange", "limitranges", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    (
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true
    ),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true
    ),
    (
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true
    ),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false
    ),
    ("storage.k8s.io", "v1", "CSIDriver", "csidrivers", false),
    (
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        false
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false
    ),
];

/// The built-in kind `r` names, when its group, version and kind are all served.
pub(crate) fn builtin(r: &ObjectRef) -> Option<&'static Kind> {
    let version = r.api_version.rsplit('/').next().unwrap_or_default();
    KINDS
        .iter()
        .find(|k| k.group == r.group() && k.version == version && k.kind == r.kind)
}

/// Whether a group (or the core group) belongs to kube-apiserver itself.
pub(crate) fn is_builtin_group(group: &str) -> bool {
    KINDS.iter().any(|k| k.group == group)
}

/// The Service CIDR the mock's API server allocates from (Talos' default,
/// `cluster.network.serviceSubnets: [10.96.0.0/12]`).
pub(crate) const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);

/// A refusal: HTTP status, reason and message, as the Status body carries them.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

/// `field.ErrorList`, printed the way `field.Error.Error()` prints each.
#[derive(Debug, Default)]
pub(crate) struct Errs(Vec<String>);

/// A value the way Go's `%#v`/`%q` shows it in `Invalid value: ...`.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", show(v)))
                .collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let items: Vec<String> = a.iter().map(show).collect();
            format!("[]string{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

impl Errs {
    fn push(&mut self, path: &str, body: String) {
        self.0.push(format!("{path}: {body}"));
    }
    pub fn required(&mut self, path: &str, detail: &str) {
        self.push(path, with_detail("Required value".into(), detail));
    }
    pub fn invalid(&mut self, path: &str, value: &Value, detail: &str) {
        self.push(
            path,
            with_detail(format!("Invalid value: {}", show(value)), detail),
        );
    }
    pub fn duplicate(&mut self, path: &str, value: &Value) {
        self.push(path, format!("Duplicate value: {}", show(value)));
    }
    pub fn forbidden(&mut self, path: &str, detail: &str) {
        self.push(path, with_detail("Forbidden".into(), detail));
    }
    pub fn unsupported(&mut self, path: &str, value: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.push(
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                list.join(", ")
            ),
        );
    }
    pub fn too_long(&mut self, path: &str, max: usize) {
        self.push(path, format!("Too long: may not be more than {max} bytes"));
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// `Kind.group` as `errors.NewInvalid` names a kind (`Secret` for the core group).
fn qualified(r: &ObjectRef) -> String {
    match r.group() {
        "" => r.kind.clone(),
        g => format!("{}.{g}", r.kind),
    }
}

/// The 422 of a list of field errors.
pub(crate) fn invalid(r: &ObjectRef, errs: Errs) -> Result<(), Refusal> {
    if errs.is_empty() {
        return Ok(());
    }
    let list = if errs.0.len() == 1 {
        errs.0.join("")
    } else {
        format!("[{}]", errs.0.join(", "))
    };
    Err(Refusal {
        status: 422,
        reason: "Invalid",
        message: format!("{} {:?} is invalid: {list}", qualified(r), r.name),
    })
}

// ---------------------------------------------------------------------------------
// Names and labels (apimachinery util/validation/validation.go).

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn is_label(s: &str, first: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && first(b[0])
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

pub(crate) fn dns1123_label(s: &str) -> Vec<String> {
    let mut m = Vec::new();
    if s.len() > 63 {
        m.push("must be no more than 63 characters".to_string());
    }
    if !is_label(s, lower_alnum) {
        m.push(DNS1123_LABEL.to_string());
    }
    m
}

pub(crate) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut m = Vec::new();
    if s.len() > 253 {
        m.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(|part| is_label(part, lower_alnum)) {
        m.push(DNS1123_SUBDOMAIN.to_string());
    }
    m
}

fn dns1035_label(s: &str) -> Vec<String> {
    let mut m = Vec::new();
    if s.len() > 63 {
        m.push("must be no more than 63 characters".to_string());
    }
    if !is_label(s, |c| c.is_ascii_lowercase()) {
        m.push(DNS1035_LABEL.to_string());
    }
    m
}

/// RBAC names are path segments (`system:coredns` is valid).
fn path_segment(s: &str) -> Vec<String> {
    let mut m = Vec::new();
    if s == "." || s == ".." {
        m.push(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            m.push(format!("may not contain '{bad}'"));
        }
    }
    m
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn qualified_name(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut m = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            m.push("prefix part must be non-empty".into());
        } else {
            m.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        m.push("name part must be non-empty".into());
    } else {
        if name.len() > 63 {
            m.push("name part must be no more than 63 characters".into());
        }
        if !is_qualified_part(name) {
            m.push(QUALIFIED_NAME.into());
        }
    }
    m
}

fn label_value(s: &str) -> Vec<String> {
    let mut m = Vec::new();
    if s.len() > 63 {
        m.push("must be no more than 63 characters".to_string());
    }
    if !s.is_empty() && !is_qualified_part(s) {
        m.push(LABEL_VALUE.to_string());
    }
    m
}

fn each(errs: &mut Errs, path: &str, value: &str, msgs: Vec<String>) {
    for m in msgs {
        errs.invalid(path, &Value::String(value.into()), &m);
    }
}

fn meta(errs: &mut Errs, r: &ObjectRef, obj: &Value) {
    let name_rule: fn(&str) -> Vec<String> = match (r.group(), r.kind.as_str()) {
        ("", "Namespace") => dns1123_label,
        ("", "Service") => dns1035_label,
        ("rbac.authorization.k8s.io", _) => path_segment,
        _ => dns1123_subdomain,
    };
    each(errs, "metadata.name", &r.name, name_rule(&r.name));
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            each(errs, "metadata.labels", k, qualified_name(k));
            if let Some(v) = v.as_str() {
                each(errs, "metadata.labels", v, label_value(v));
            }
        }
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in ann {
            each(errs, "metadata.annotations", k, qualified_name(k));
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.too_long("metadata.annotations", 256 * 1024);
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers over JSON.

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn obj<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    v.pointer(ptr).and_then(Value::as_object)
}

fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        _ => false,
    }
}

/// `field is immutable` when `ptr` changed from an old object that set it.
fn immutable(errs: &mut Errs, old: Option<&Value>, new: &Value, ptr: &str, path: &str) {
    if let Some(old) = old {
        let (was, now) = (old.pointer(ptr), new.pointer(ptr));
        if was != now {
            errs.invalid(path, now.unwrap_or(&Value::Null), "field is immutable");
        }
    }
}

fn port_range(errs: &mut Errs, path: &str, v: Option<&Value>) {
    if let Some(n) = v.and_then(Value::as_i64)
        && !(1..=65535).contains(&n)
    {
        errs.invalid(
            path,
            &Value::from(n),
            "must be between 1 and 65535, inclusive",
        );
    }
}

// ---------------------------------------------------------------------------------
// Pods and the workloads that template them (core and apps validation).

/// A pod spec as core validation judges it, after defaulting (`SetDefaults_PodSpec`
/// makes an absent restartPolicy `Always`, also inside a Job's template: a Job
/// without one is refused for "Always").
fn pod_spec(errs: &mut Errs, spec: &Value, path: &str, restart: &[&str]) {
    let containers = arr(spec, "/containers");
    if containers.is_empty() {
        errs.required(&format!("{path}.containers"), "");
    }
    let mut names = BTreeSet::new();
    let init = arr(spec, "/initContainers");
    for (list, field) in [(init, "initContainers"), (containers, "containers")] {
        for (i, c) in list.iter().enumerate() {
            let cp = format!("{path}.{field}[{i}]");
            match s(c, "/name") {
                None | Some("") => errs.required(&format!("{cp}.name"), ""),
                Some(n) => {
                    each(errs, &format!("{cp}.name"), n, dns1123_label(n));
                    if !names.insert(n.to_string()) {
                        errs.duplicate(&format!("{cp}.name"), &Value::String(n.into()));
                    }
                }
            }
            if empty(c.get("image")) {
                errs.required(&format!("{cp}.image"), "");
            }
            for (j, p) in arr(c, "/ports").iter().enumerate() {
                let pp = format!("{cp}.ports[{j}]");
                port_range(errs, &format!("{pp}.containerPort"), p.get("containerPort"));
                if let Some(proto) = s(p, "/protocol")
                    && !["SCTP", "TCP", "UDP"].contains(&proto)
                {
                    errs.unsupported(
                        &format!("{pp}.protocol"),
                        &Value::String(proto.into()),
                        &["SCTP", "TCP", "UDP"],
                    );
                }
            }
        }
    }
    let policy = s(spec, "/restartPolicy").unwrap_or("Always");
    if !restart.contains(&policy) {
        errs.unsupported(
            &format!("{path}.restartPolicy"),
            &Value::String(policy.into()),
            restart,
        );
    }
}

/// Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`.
fn selects(selector: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let by_labels = obj(selector, "/matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let by_expressions = arr(selector, "/matchExpressions").iter().all(|e| {
        let key = s(e, "/key").unwrap_or_default();
        let values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        match s(e, "/operator") {
            Some("In") => get(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => get(key).is_some(),
            Some("DoesNotExist") => get(key).is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

fn workload(errs: &mut Errs, kind: &str, new: &Value, old: Option<&Value>) {
    if let Some(n) = new.pointer("/spec/replicas").and_then(Value::as_i64)
        && n < 0
    {
        errs.invalid(
            "spec.replicas",
            &Value::from(n),
            "must be greater than or equal to 0",
        );
    }
    match new.pointer("/spec/selector") {
        None | Some(Value::Null) => errs.required("spec.selector", ""),
        Some(sel) if empty(sel.get("matchLabels")) && empty(sel.get("matchExpressions")) => {
            errs.invalid(
                "spec.selector",
                sel,
                &format!("empty selector is invalid for {}", kind.to_lowercase()),
            );
        }
        Some(sel) => {
            let labels = obj(new, "/spec/template/metadata/labels");
            if !selects(sel, labels) {
                errs.invalid(
                    "spec.template.metadata.labels",
                    &labels.map_or(Value::Null, |l| Value::Object(l.clone())),
                    "`selector` does not match template `labels`",
                );
            }
        }
    }
    immutable(errs, old, new, "/spec/selector", "spec.selector");
    let spec = new
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    pod_spec(errs, &spec, "spec.template.spec", &["Always"]);
}

fn job(errs: &mut Errs, new: &Value, old: Option<&Value>, path: &str) {
    let spec = new
        .pointer(&format!("/{}/template/spec", path.replace('.', "/")))
        .cloned()
        .unwrap_or(Value::Null);
    pod_spec(
        errs,
        &spec,
        &format!("{path}.template.spec"),
        &["OnFailure", "Never"],
    );
    if let Some(old) = old
        && old.pointer("/spec/template") != new.pointer("/spec/template")
        && path == "spec"
    {
        errs.invalid(
            "spec.template",
            &Value::String("core.PodTemplateSpec{...}".into()),
            "field is immutable",
        );
    }
}

// ---------------------------------------------------------------------------------
// Services (core validation; the ClusterIP allocator of pkg/registry/core/service).

fn in_cidr(ip: Ipv4Addr, (net, bits): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn service(errs: &mut Errs, new: &Value, old: Option<&Value>, taken: &BTreeSet<String>) {
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    let kind = s(new, "/spec/type").unwrap_or("ClusterIP");
    if !TYPES.contains(&kind) {
        errs.unsupported("spec.type", &Value::String(kind.into()), TYPES);
    }
    let cluster_ip = s(new, "/spec/clusterIP");
    let ports = arr(new, "/spec/ports");
    if ports.is_empty() && kind != "ExternalName" && cluster_ip != Some("None") {
        errs.required("spec.ports", "");
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        match s(p, "/name") {
            None | Some("") if ports.len() > 1 => errs.required(&format!("{pp}.name"), ""),
            None | Some("") => {}
            Some(n) => {
                each(errs, &format!("{pp}.name"), n, dns1123_label(n));
                if !names.insert(n.to_string()) {
                    errs.duplicate(&format!("{pp}.name"), &Value::String(n.into()));
                }
            }
        }
        port_range(errs, &format!("{pp}.port"), p.get("port"));
        if p.get("port").is_none() {
            port_range(errs, &format!("{pp}.port"), Some(&Value::from(0)));
        }
        if let Some(proto) = s(p, "/protocol")
            && !["SCTP", "TCP", "UDP"].contains(&proto)
        {
            errs.unsupported(
                &format!("{pp}.protocol"),
                &Value::String(proto.into()),
                &["SCTP", "TCP", "UDP"],
            );
        }
    }
    if let Some(ip) = cluster_ip.filter(|ip| !ip.is_empty() && *ip != "None") {
        let was = old.and_then(|o| s(o, "/spec/clusterIP"));
        let shown = Value::Array(vec![Value::String(ip.into())]);
        match ip.parse::<Ipv4Addr>() {
            Err(_) => errs.invalid(
                "spec.clusterIPs[0]",
                &Value::String(ip.into()),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ),
            Ok(_) if was.is_some_and(|w| w != ip) => {
                errs.invalid("spec.clusterIPs[0]", &shown, "may not change once set");
            }
            Ok(addr) if !in_cidr(addr, SERVICE_CIDR) => errs.invalid(
                "spec.clusterIPs",
                &shown,
                &format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                    SERVICE_CIDR.0, SERVICE_CIDR.1
                ),
            ),
            Ok(_) if was.is_none() && taken.contains(ip) => errs.invalid(
                "spec.clusterIPs",
                &shown,
                &format!("failed to allocate IP {ip}: provided IP is already allocated"),
            ),
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------
// ConfigMaps and Secrets.

fn config_keys(errs: &mut Errs, new: &Value, field: &str) {
    for key in obj(new, &format!("/{field}"))
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        let ok = !key.is_empty()
            && key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            errs.invalid(
                &format!("{field}[{key}]"),
                &Value::String(key.clone()),
                CONFIG_KEY,
            );
        }
    }
}

fn immutable_data(errs: &mut Errs, new: &Value, old: Option<&Value>, fields: &[&str]) {
    let Some(old) = old else { return };
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return;
    }
    if new.get("immutable") != Some(&Value::Bool(true)) {
        errs.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for f in fields {
        if old.get(*f) != new.get(*f) {
            errs.forbidden(f, "field is immutable when `immutable` is set");
        }
    }
}

/// `core.MaxSecretSize`: the most bytes a Secret's values may hold together.
const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// What a Secret's value must not show in an error (`ValidateSecret`'s `Invalid`).
const REDACTED: &str = "<secret contents redacted>";

/// `ValidateSecret` and `ValidateSecretUpdate` (kubernetes
/// `pkg/apis/core/validation/validation.go`): key names, the 1 MiB total, and the
/// keys each well-known type requires. The v1 conversion has folded `stringData`
/// into `data` already, so values are read decoded from `data`.
fn secret(errs: &mut Errs, new: &Value, old: Option<&Value>) {
    use base64::Engine as _;
    config_keys(errs, new, "data");
    config_keys(errs, new, "stringData");
    let value = |k: &str| -> Option<Vec<u8>> {
        let text = new.pointer(&format!(
            "/data/{}",
            k.replace('~', "~0").replace('/', "~1")
        ))?;
        // Undecodable data was refused earlier, by the typed patch.
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(text.as_str().unwrap_or_default())
                .unwrap_or_default(),
        )
    };
    let total: usize = obj(new, "/data")
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| value(k))
        .map(|v| v.len())
        .sum();
    if total > MAX_SECRET_SIZE {
        errs.too_long("data", MAX_SECRET_SIZE);
    }
    let redacted = Value::String(REDACTED.into());
    match s(new, "/type") {
        Some("kubernetes.io/service-account-token") => {
            let annotation = "kubernetes.io/service-account.name";
            if s(
                new,
                &format!("/metadata/annotations/{}", annotation.replace('/', "~1")),
            )
            .is_none_or(str::is_empty)
            {
                errs.required(&format!("metadata.annotations[{annotation}]"), "");
            }
        }
        Some(t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson")) => {
            let key = if t == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match value(key) {
                None => errs.required(&format!("data[{key}]"), ""),
                Some(bytes) => {
                    if let Some(problem) = go_json_object(&bytes) {
                        errs.invalid(&format!("data[{key}]"), &redacted, &problem);
                    }
                }
            }
        }
        Some("kubernetes.io/basic-auth")
            if value("username").is_none() && value("password").is_none() =>
        {
            errs.required("data[username]", "");
            errs.required("data[password]", "");
        }
        Some("kubernetes.io/ssh-auth") if value("ssh-privatekey").is_none_or(|v| v.is_empty()) => {
            errs.required("data[ssh-privatekey]", "");
        }
        Some("kubernetes.io/tls") => {
            for k in ["tls.crt", "tls.key"] {
                if value(k).is_none() {
                    errs.required(&format!("data[{k}]"), "");
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let t = |v: &Value| s(v, "/type").unwrap_or("Opaque").to_string();
        if t(old) != t(new) {
            errs.invalid("type", &Value::String(t(new)), "field is immutable");
        }
    }
    immutable_data(errs, new, old, &["data"]);
}

/// Why Go's `json.Unmarshal(b, &map[string]interface{}{})` fails, in its words, or
/// `None` when it succeeds (an object, or `null`). Messages follow `encoding/json`
/// (`scanner.go`: `invalid character 'x' <context>`, `unexpected end of JSON input`;
/// `decode.go`: `json: cannot unmarshal <kind> into Go value of type ...`).
fn go_json_object(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_) | Value::Null) => None,
        Ok(v) => {
            let kind = match v {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            Some(format!(
                "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
            ))
        }
        Err(e) if e.is_eof() => Some("unexpected end of JSON input".into()),
        Err(e) => {
            // The offending byte: serde counts lines and columns from 1.
            let offset: usize = bytes
                .split(|b| *b == b'\n')
                .take(e.line().saturating_sub(1))
                .map(|l| l.len() + 1)
                .sum::<usize>()
                + e.column().saturating_sub(1);
            let c = bytes.get(offset).copied().unwrap_or(b' ');
            let shown = match c {
                b'\'' => "'\\''".to_string(),
                b'"' => "'\"'".to_string(),
                c if c.is_ascii_graphic() || c == b' ' => format!("'{}'", char::from(c)),
                c => format!("'\\x{c:02x}'"),
            };
            let text = e.to_string();
            let context = if text.starts_with("expected `:`") {
                "after object key"
            } else if text.starts_with("expected `,` or `}`") {
                "after object key:value pair"
            } else if text.starts_with("expected `,` or `]`") {
                "after array element"
            } else if text.starts_with("key must be a string") {
                "looking for beginning of object key string"
            } else if text.starts_with("trailing characters") {
                "after top-level value"
            } else if text.starts_with("control character") {
                "in string literal"
            } else {
                "looking for beginning of value"
            };
            Some(format!("invalid character {shown} {context}"))
        }
    }
}

// ---------------------------------------------------------------------------------
// The other built-in kinds.

fn quantity_ok(q: &str) -> bool {
    let num_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(num_end);
    !num.is_empty()
        && num.parse::<f64>().is_ok()
        && ([
            "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
        ]
        .contains(&suffix)
            || suffix
                .strip_prefix(['e', 'E'])
                .is_some_and(|e| e.parse::<i32>().is_ok()))
}

const QUANTITY: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

fn pvc(errs: &mut Errs, new: &Value, old: Option<&Value>) {
    if arr(new, "/spec/accessModes").is_empty() {
        errs.required("spec.accessModes", "at least 1 access mode is required");
    }
    match s(new, "/spec/resources/requests/storage") {
        None => errs.required("spec.resources[storage]", ""),
        Some(q) if !quantity_ok(q) => errs.invalid(
            "spec.resources.requests[storage]",
            &Value::String(q.into()),
            QUANTITY,
        ),
        Some(_) => {}
    }
    if let Some(old) = old {
        let strip = |v: &Value| {
            let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = spec.as_object_mut() {
                m.remove("resources");
                m.remove("volumeAttributesClassName");
                m.remove("volumeName");
            }
            spec
        };
        if strip(old) != strip(new) {
            errs.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            );
        }
    }
}

fn ingress(errs: &mut Errs, new: &Value) {
    const TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
    for (i, rule) in arr(new, "/spec/rules").iter().enumerate() {
        for (j, p) in arr(rule, "/http/paths").iter().enumerate() {
            let pp = format!("spec.rules[{i}].http.paths[{j}]");
            match s(p, "/pathType") {
                None => errs.required(&format!("{pp}.pathType"), "pathType must be specified"),
                Some(t) if !TYPES.contains(&t) => {
                    errs.unsupported(&format!("{pp}.pathType"), &Value::String(t.into()), TYPES);
                }
                Some(_) => {}
            }
            if p.pointer("/backend/service").is_none() && p.pointer("/backend/resource").is_none() {
                errs.invalid(
                    &format!("{pp}.backend"),
                    &Value::String(String::new()),
                    "must specify a service or a resource",
                );
            }
        }
    }
}

fn hpa(errs: &mut Errs, new: &Value) {
    for f in ["kind", "name"] {
        if empty(new.pointer(&format!("/spec/scaleTargetRef/{f}"))) {
            errs.required(&format!("spec.scaleTargetRef.{f}"), "");
        }
    }
    let max = new
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if max < 1 {
        errs.invalid(
            "spec.maxReplicas",
            &Value::from(max),
            "must be greater than or equal to 1",
        );
    }
    if let Some(min) = new.pointer("/spec/minReplicas").and_then(Value::as_i64) {
        if min < 1 {
            errs.invalid(
                "spec.minReplicas",
                &Value::from(min),
                "must be greater than or equal to 1",
            );
        }
        if min > max {
            errs.invalid(
                "spec.maxReplicas",
                &Value::from(max),
                "must be greater than or equal to `minReplicas`",
            );
        }
    }
}

fn rbac_binding(errs: &mut Errs, kind: &str, new: &Value, old: Option<&Value>) {
    let allowed: &[&str] = if kind == "ClusterRoleBinding" {
        &["ClusterRole"]
    } else {
        &["ClusterRole", "Role"]
    };
    match s(new, "/roleRef/kind") {
        Some(k) if allowed.contains(&k) => {}
        Some(k) => errs.unsupported("roleRef.kind", &Value::String(k.into()), allowed),
        None => errs.required("roleRef.kind", ""),
    }
    if empty(new.pointer("/roleRef/name")) {
        errs.required("roleRef.name", "");
    }
    if let Some(old) = old
        && old.get("roleRef") != new.get("roleRef")
    {
        errs.invalid(
            "roleRef",
            new.get("roleRef").unwrap_or(&Value::Null),
            "cannot change roleRef",
        );
    }
    for (i, sub) in arr(new, "/subjects").iter().enumerate() {
        let sp = format!("subjects[{i}]");
        match s(sub, "/kind") {
            Some("ServiceAccount") => {
                if empty(sub.get("namespace")) && kind == "ClusterRoleBinding" {
                    errs.required(&format!("{sp}.namespace"), "");
                }
            }
            Some("User" | "Group") => {}
            Some(k) => errs.unsupported(
                &format!("{sp}.kind"),
                &Value::String(k.into()),
                &["ServiceAccount", "User", "Group"],
            ),
            None => errs.required(&format!("{sp}.kind"), ""),
        }
        if empty(sub.get("name")) {
            errs.required(&format!("{sp}.name"), "");
        }
    }
}

fn rbac_rules(errs: &mut Errs, new: &Value) {
    for (i, rule) in arr(new, "/rules").iter().enumerate() {
        if arr(rule, "/verbs").is_empty() {
            errs.required(
                &format!("rules[{i}].verbs"),
                "verbs must contain at least one value",
            );
        }
        let non_resource = !arr(rule, "/nonResourceURLs").is_empty();
        if !non_resource && arr(rule, "/apiGroups").is_empty() {
            errs.required(
                &format!("rules[{i}].apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if !non_resource && arr(rule, "/resources").is_empty() {
            errs.required(
                &format!("rules[{i}].resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
}

fn webhooks(errs: &mut Errs, new: &Value) {
    let mut names = BTreeSet::new();
    for (i, hook) in arr(new, "/webhooks").iter().enumerate() {
        let hp = format!("webhooks[{i}]");
        let name = s(hook, "/name").unwrap_or_default();
        if name.split('.').count() < 3 {
            errs.invalid(
                &format!("{hp}.name"),
                &Value::String(name.into()),
                "should be a domain with at least three segments separated by dots",
            );
        } else if !names.insert(name.to_string()) {
            errs.duplicate(&format!("{hp}.name"), &Value::String(name.into()));
        }
        match s(hook, "/sideEffects") {
            Some("None" | "NoneOnDryRun") => {}
            Some(v) => errs.unsupported(
                &format!("{hp}.sideEffects"),
                &Value::String(v.into()),
                &["None", "NoneOnDryRun"],
            ),
            None => errs.required(
                &format!("{hp}.sideEffects"),
                "must specify one of None, NoneOnDryRun",
            ),
        }
        if arr(hook, "/admissionReviewVersions").is_empty() {
            errs.required(
                &format!("{hp}.admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            );
        }
        let url = hook.pointer("/clientConfig/url").is_some();
        let svc = hook.pointer("/clientConfig/service").is_some();
        if url == svc {
            errs.required(
                &format!("{hp}.clientConfig"),
                "exactly one of url or service is required",
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// CustomResourceDefinitions (apiextensions validation and structural schemas).

fn structural(errs: &mut Errs, schema: &Value, path: &str, level: u8) {
    let ext = |k: &str| schema.get(k) == Some(&Value::Bool(true));
    let ty = s(schema, "/type").unwrap_or_default();
    if ty.is_empty()
        && !ext("x-kubernetes-int-or-string")
        && !ext("x-kubernetes-preserve-unknown-fields")
    {
        let detail = match level {
            0 => "must not be empty at the root",
            1 => "must not be empty for specified object fields",
            _ => "must not be empty for specified array items",
        };
        errs.required(&format!("{path}.type"), detail);
    }
    if level == 0 && !ty.is_empty() && ty != "object" {
        errs.invalid(
            &format!("{path}.type"),
            &Value::String(ty.into()),
            "must be object at the root",
        );
    }
    if schema.get("$ref").is_some() {
        errs.forbidden(&format!("{path}.$ref"), "$ref is not supported");
    }
    if schema.get("properties").is_some() && schema.get("additionalProperties").is_some() {
        errs.forbidden(
            &format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        );
    }
    for (name, sub) in obj(schema, "/properties").into_iter().flatten() {
        structural(errs, sub, &format!("{path}.properties[{name}]"), 1);
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        structural(errs, items, &format!("{path}.items"), 2);
    }
}

fn crd(errs: &mut Errs, r: &ObjectRef, new: &Value, old: Option<&Value>) {
    let group = s(new, "/spec/group").unwrap_or_default();
    let plural = s(new, "/spec/names/plural").unwrap_or_default();
    if r.name != format!("{plural}.{group}") {
        errs.invalid(
            "metadata.name",
            &Value::String(r.name.clone()),
            "must be spec.names.plural+\".\"+spec.group",
        );
    }
    if group.is_empty() {
        errs.required("spec.group", "");
    } else if !group.contains('.') {
        errs.invalid(
            "spec.group",
            &Value::String(group.into()),
            "should be a domain with at least one dot",
        );
    }
    for f in ["plural", "kind"] {
        if empty(new.pointer(&format!("/spec/names/{f}"))) {
            errs.required(&format!("spec.names.{f}"), "");
        }
    }
    match s(new, "/spec/scope") {
        Some("Cluster" | "Namespaced") => {}
        Some(v) => errs.unsupported(
            "spec.scope",
            &Value::String(v.into()),
            &["Cluster", "Namespaced"],
        ),
        None => errs.required("spec.scope", ""),
    }
    immutable(errs, old, new, "/spec/scope", "spec.scope");
    let versions = arr(new, "/spec/versions");
    let storage = versions
        .iter()
        .filter(|v| v.get("storage") == Some(&Value::Bool(true)))
        .count();
    if storage != 1 {
        errs.invalid(
            "spec.versions",
            &Value::String(format!("{} versions", versions.len())),
            "must have exactly one version marked as storage version",
        );
    }
    for (i, v) in versions.iter().enumerate() {
        let vp = format!("spec.versions[{i}]");
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => errs.required(
                &format!("{vp}.schema.openAPIV3Schema"),
                "schemas are required",
            ),
            Some(schema) => structural(errs, schema, &format!("{vp}.schema.openAPIV3Schema"), 0),
        }
    }
}

// ---------------------------------------------------------------------------------
// Custom resources against their CRD's schema (kube-openapi validate errors).

/// The schema of `version` in a CRD.
pub(crate) fn crd_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    arr(crd, "/spec/versions")
        .iter()
        .find(|v| s(v, "/name") == Some(version))?
        .pointer("/schema/openAPIV3Schema")
}

/// A JSON pointer as the API server's field path (`spec.ports[0].name`).
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

/// Wrong types in a custom resource: the typed patch's 500.
pub(crate) fn custom_types(r: &ObjectRef, schema: &Value, obj: &Value) -> Result<(), Refusal> {
    let Ok(v) = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(schema)
    else {
        return Ok(());
    };
    let body = without_meta(obj);
    for e in v.iter_errors(&body) {
        if let jsonschema::error::ValidationErrorKind::Type { .. } = e.kind {
            let want = schema
                .pointer(&e.schema_path.to_string())
                .and_then(Value::as_str)
                .unwrap_or("object");
            let want = match want {
                "integer" | "number" => "numeric (int or float)",
                "array" => "list",
                "object" => "map",
                other => other,
            };
            return Err(typed_patch(
                r,
                &format!(".{}", field_path(e.instance_path.as_str())),
                &format!("expected {want}, got {}", json_kind(&e.instance)),
            ));
        }
    }
    Ok(())
}

/// Everything else a CRD's schema says: required, enum, bounds, patterns (422).
pub(crate) fn custom(r: &ObjectRef, schema: &Value, obj: &Value) -> Result<(), Refusal> {
    let mut errs = Errs::default();
    meta(&mut errs, r, obj);
    if let Ok(v) = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(schema)
    {
        use jsonschema::error::ValidationErrorKind as K;
        let body = without_meta(obj);
        for e in v.iter_errors(&body) {
            let path = field_path(e.instance_path.as_str());
            let at = |p: &str| {
                if path.is_empty() {
                    p.to_string()
                } else {
                    format!("{path}.{p}")
                }
            };
            let shown = e.instance.clone().into_owned();
            match &e.kind {
                K::Type { .. } => {}
                K::Required { property } => {
                    errs.required(&at(property.as_str().unwrap_or_default()), "");
                }
                K::Enum { options } => {
                    let opts: Vec<String> = options
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                        .collect();
                    let refs: Vec<&str> = opts.iter().map(String::as_str).collect();
                    errs.unsupported(&path, &shown, &refs);
                }
                K::Minimum { limit } => errs.invalid(
                    &path,
                    &shown,
                    &format!("{path} in body should be greater than or equal to {limit}"),
                ),
                K::Maximum { limit } => errs.invalid(
                    &path,
                    &shown,
                    &format!("{path} in body should be less than or equal to {limit}"),
                ),
                K::MinLength { limit } => errs.invalid(
                    &path,
                    &shown,
                    &format!("{path} in body should be at least {limit} chars long"),
                ),
                K::MaxLength { limit } => errs.push(
                    &path,
                    format!("Too long: may not be more than {limit} bytes"),
                ),
                K::MinItems { limit } => errs.invalid(
                    &path,
                    &shown,
                    &format!("{path} in body should have at least {limit} items"),
                ),
                K::MaxItems { limit } => {
                    errs.push(&path, format!("Too many: must have at most {limit} items"));
                }
                K::Pattern { pattern } => errs.invalid(
                    &path,
                    &shown,
                    &format!("{path} in body should match '{pattern}'"),
                ),
                other => errs.invalid(&path, &shown, &format!("{other:?}")),
            }
        }
    }
    invalid(r, errs)
}

/// The object as a schema sees it: apiVersion, kind and metadata are the server's.
fn without_meta(obj: &Value) -> Value {
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    body
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
        Value::Null => "null",
    }
}

// ---------------------------------------------------------------------------------
// Types of built-in kinds: the typed patch of server-side apply.

fn typed_patch(r: &ObjectRef, path: &str, what: &str) -> Refusal {
    let ns = r.namespace.as_deref().unwrap_or_default();
    let gv = if r.group().is_empty() {
        format!("/{}", r.api_version)
    } else {
        r.api_version.clone()
    };
    Refusal {
        status: 500,
        reason: "",
        message: format!(
            "failed to create typed patch object ({ns}/{}; {gv}, Kind={}): {path}: {what}",
            r.name, r.kind
        ),
    }
}

/// What serde's "invalid type: X, expected Y" means in structured-merge-diff's words;
/// never the value itself (it may be a Secret's).
fn type_words(inner: &str) -> Option<String> {
    let rest = inner.strip_prefix("invalid type: ")?;
    let (got, expected) = rest.split_once(", expected ")?;
    let got = got.split([' ', '`']).next().unwrap_or(got);
    let got = match got {
        "integer" | "floating" => "number",
        "sequence" => "list",
        "map" => "map",
        "boolean" => "boolean",
        "string" => "string",
        _ => "null",
    };
    let e = expected;
    let want = if [
        "i32", "i64", "u16", "u32", "u64", "f64", "number", "integer",
    ]
    .iter()
    .any(|n| e.contains(n))
    {
        "numeric (int or float)"
    } else if e.contains("bool") {
        "boolean"
    } else if e.contains("sequence") || e.contains("Vec") || e.contains("list") {
        "list"
    } else if e.contains("string") || e.contains("base64") {
        "string"
    } else {
        "map"
    };
    Some(format!("expected {want}, got {got}"))
}

/// The fields of `input` that the typed object kept: what the API server stores when
/// it decodes into its Go struct (unknown fields are dropped, with a warning, under
/// the default `fieldValidation=Warn`; kubernetes
/// `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`). Never adds a
/// field the input did not have.
fn keep_known(input: &Value, typed: &Value) -> Value {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => Value::Object(
            i.iter()
                .filter_map(|(k, v)| t.get(k).map(|tv| (k.clone(), keep_known(v, tv))))
                .collect(),
        ),
        (Value::Array(i), Value::Array(t)) if i.len() == t.len() => {
            Value::Array(i.iter().zip(t).map(|(a, b)| keep_known(a, b)).collect())
        }
        _ => input.clone(),
    }
}

fn check<T: serde::de::DeserializeOwned + serde::Serialize>(
    r: &ObjectRef,
    obj: &Value,
) -> Result<Value, Refusal> {
    match serde_path_to_error::deserialize::<_, T>(obj.clone()) {
        Ok(typed) => {
            Ok(serde_json::to_value(typed).map_or_else(|_| obj.clone(), |t| keep_known(obj, &t)))
        }
        Err(e) => {
            let path = format!(".{}", e.path());
            let inner = e.inner().to_string();
            match type_words(&inner) {
                Some(what) => Err(typed_patch(r, &path, &what)),
                // Not a type mismatch: a value the type cannot hold.
                None => Err(typed_patch(r, &path, "invalid value")),
            }
        }
    }
}

/// Structural pruning of a custom resource: fields its schema does not declare go,
/// unless `x-kubernetes-preserve-unknown-fields` keeps them (kubernetes
/// `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go`).
/// apiVersion, kind and metadata always stay.
pub(crate) fn prune(obj: &Value, schema: &Value) -> Value {
    fn walk(v: &Value, schema: &Value) -> Value {
        let preserve =
            schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        match v {
            Value::Object(m) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                let mut out = Map::new();
                for (k, x) in m {
                    if let Some(sub) = props.and_then(|p| p.get(k)) {
                        out.insert(k.clone(), walk(x, sub));
                    } else if let Some(sub) = additional {
                        out.insert(k.clone(), walk(x, sub));
                    } else if preserve
                        || schema.get("additionalProperties") == Some(&Value::Bool(true))
                    {
                        out.insert(k.clone(), x.clone());
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => match schema.get("items").filter(|i| i.is_object()) {
                Some(items) => Value::Array(a.iter().map(|x| walk(x, items)).collect()),
                None => v.clone(),
            },
            other => other.clone(),
        }
    }
    let mut out = walk(obj, schema);
    if let (Some(m), Some(src)) = (out.as_object_mut(), obj.as_object()) {
        for k in ["apiVersion", "kind", "metadata"] {
            if let Some(v) = src.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
    }
    out
}

/// Go's base64 decoder refuses with the offset of the first bad byte.
fn base64_data(obj: &Value) -> Result<(), Refusal> {
    for v in obj
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
    {
        let Some(text) = v.as_str() else { continue };
        if let Err(e) = base64::engine::general_purpose::STANDARD.decode(text) {
            let at = match e {
                base64::DecodeError::InvalidByte(at, _)
                | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                base64::DecodeError::InvalidLength(len) => len,
                base64::DecodeError::InvalidPadding => text.len(),
            };
            return Err(Refusal {
                status: 500,
                reason: "",
                message: format!("illegal base64 data at input byte {at}"),
            });
        }
    }
    Ok(())
}

/// Type-checks a built-in object as its k8s-openapi struct (500 like the typed patch)
/// and returns it without the fields the struct does not know.
pub(crate) fn builtin_types(r: &ObjectRef, obj: &Value) -> Result<Value, Refusal> {
    use k8s_openapi::api::{
        admissionregistration::v1 as adm, apps::v1 as apps, autoscaling, batch::v1 as batch,
        coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, networking::v1 as net,
        policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as sched, storage::v1 as storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    if r.kind == "Secret" {
        // Types first (a number in data), then the decoding of the bytes.
        let mut shallow = obj.clone();
        if let Some(data) = shallow.get_mut("data").and_then(Value::as_object_mut) {
            for (k, v) in data.iter_mut() {
                if !v.is_string() {
                    return Err(typed_patch(
                        r,
                        &format!(".data.{k}"),
                        &format!("expected string, got {}", json_kind(v)),
                    ));
                }
                *v = Value::String(String::new());
            }
        }
        let known = check::<core::Secret>(r, &shallow)?;
        base64_data(obj)?;
        return Ok(keep_known(obj, &known));
    }
    let version = r.api_version.rsplit('/').next().unwrap_or_default();
    match (r.group(), version, r.kind.as_str()) {
        ("", _, "Namespace") => check::<core::Namespace>(r, obj),
        ("", _, "Node") => check::<core::Node>(r, obj),
        ("", _, "PersistentVolume") => check::<core::PersistentVolume>(r, obj),
        ("", _, "ConfigMap") => check::<core::ConfigMap>(r, obj),
        ("", _, "ServiceAccount") => check::<core::ServiceAccount>(r, obj),
        ("", _, "Service") => check::<core::Service>(r, obj),
        ("", _, "Pod") => check::<core::Pod>(r, obj),
        ("", _, "Endpoints") => check::<core::Endpoints>(r, obj),
        ("", _, "PersistentVolumeClaim") => check::<core::PersistentVolumeClaim>(r, obj),
        ("", _, "ResourceQuota") => check::<core::ResourceQuota>(r, obj),
        ("", _, "LimitRange") => check::<core::LimitRange>(r, obj),
        ("apps", _, "Deployment") => check::<apps::Deployment>(r, obj),
        ("apps", _, "DaemonSet") => check::<apps::DaemonSet>(r, obj),
        ("apps", _, "StatefulSet") => check::<apps::StatefulSet>(r, obj),
        ("apps", _, "ReplicaSet") => check::<apps::ReplicaSet>(r, obj),
        ("batch", _, "Job") => check::<batch::Job>(r, obj),
        ("batch", _, "CronJob") => check::<batch::CronJob>(r, obj),
        ("networking.k8s.io", _, "Ingress") => check::<net::Ingress>(r, obj),
        ("networking.k8s.io", _, "IngressClass") => check::<net::IngressClass>(r, obj),
        ("networking.k8s.io", _, "NetworkPolicy") => check::<net::NetworkPolicy>(r, obj),
        ("autoscaling", "v2", _) => check::<autoscaling::v2::HorizontalPodAutoscaler>(r, obj),
        ("autoscaling", _, _) => check::<autoscaling::v1::HorizontalPodAutoscaler>(r, obj),
        ("policy", _, _) => check::<policy::PodDisruptionBudget>(r, obj),
        ("discovery.k8s.io", _, _) => check::<disc::EndpointSlice>(r, obj),
        ("coordination.k8s.io", _, _) => check::<coord::Lease>(r, obj),
        ("rbac.authorization.k8s.io", _, "ClusterRole") => check::<rbac::ClusterRole>(r, obj),
        ("rbac.authorization.k8s.io", _, "ClusterRoleBinding") => {
            check::<rbac::ClusterRoleBinding>(r, obj)
        }
        ("rbac.authorization.k8s.io", _, "Role") => check::<rbac::Role>(r, obj),
        ("rbac.authorization.k8s.io", _, "RoleBinding") => check::<rbac::RoleBinding>(r, obj),
        ("storage.k8s.io", _, "StorageClass") => check::<storage::StorageClass>(r, obj),
        ("storage.k8s.io", _, "CSIDriver") => check::<storage::CSIDriver>(r, obj),
        ("scheduling.k8s.io", _, _) => check::<sched::PriorityClass>(r, obj),
        ("apiextensions.k8s.io", _, _) => check::<ext::CustomResourceDefinition>(r, obj),
        ("admissionregistration.k8s.io", _, "ValidatingWebhookConfiguration") => {
            check::<adm::ValidatingWebhookConfiguration>(r, obj)
        }
        ("admissionregistration.k8s.io", _, "MutatingWebhookConfiguration") => {
            check::<adm::MutatingWebhookConfiguration>(r, obj)
        }
        _ => Ok(obj.clone()),
    }
}

/// Validation of a built-in object after the apply merged it (`old` on update);
/// `cluster_ips` are those other Services hold.
pub(crate) fn builtin_object(
    r: &ObjectRef,
    new: &Value,
    old: Option<&Value>,
    cluster_ips: &BTreeSet<String>,
) -> Result<(), Refusal> {
    let mut errs = Errs::default();
    meta(&mut errs, r, new);
    match (r.group(), r.kind.as_str()) {
        ("apps", k @ ("Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet")) => {
            workload(&mut errs, k, new, old);
        }
        ("", "Pod") => {
            let spec = new.get("spec").cloned().unwrap_or(Value::Null);
            pod_spec(&mut errs, &spec, "spec", &["Always", "OnFailure", "Never"]);
        }
        ("batch", "Job") => job(&mut errs, new, old, "spec"),
        ("batch", "CronJob") => {
            if empty(new.pointer("/spec/schedule")) {
                errs.required("spec.schedule", "");
            }
            job(&mut errs, new, None, "spec.jobTemplate.spec");
        }
        ("", "Service") => service(&mut errs, new, old, cluster_ips),
        ("", "ConfigMap") => {
            config_keys(&mut errs, new, "data");
            config_keys(&mut errs, new, "binaryData");
            immutable_data(&mut errs, new, old, &["data", "binaryData"]);
        }
        ("", "Secret") => secret(&mut errs, new, old),
        ("", "PersistentVolumeClaim") => pvc(&mut errs, new, old),
        ("", "ResourceQuota") => {
            for (k, v) in obj(new, "/spec/hard").into_iter().flatten() {
                let q = v.as_str().unwrap_or_default();
                if !quantity_ok(q) {
                    errs.invalid(&format!("spec.hard[{k}]"), v, QUANTITY);
                }
            }
        }
        ("networking.k8s.io", "Ingress") => ingress(&mut errs, new),
        ("networking.k8s.io", "NetworkPolicy") => {
            for (i, t) in arr(new, "/spec/policyTypes").iter().enumerate() {
                if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
                    errs.unsupported(&format!("spec.policyTypes[{i}]"), t, &["Egress", "Ingress"]);
                }
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(&mut errs, new),
        ("policy", "PodDisruptionBudget")
            if new.pointer("/spec/minAvailable").is_some()
                && new.pointer("/spec/maxUnavailable").is_some() =>
        {
            errs.invalid(
                "spec",
                &Value::String("policy.PodDisruptionBudgetSpec{...}".into()),
                "minAvailable and maxUnavailable cannot be both set",
            );
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            match s(new, "/addressType") {
                Some("IPv4" | "IPv6" | "FQDN") => {}
                Some(t) => errs.unsupported(
                    "addressType",
                    &Value::String(t.into()),
                    &["FQDN", "IPv4", "IPv6"],
                ),
                None => errs.required("addressType", ""),
            }
            immutable(&mut errs, old, new, "/addressType", "addressType");
        }
        ("rbac.authorization.k8s.io", k @ ("ClusterRoleBinding" | "RoleBinding")) => {
            rbac_binding(&mut errs, k, new, old);
        }
        ("rbac.authorization.k8s.io", "ClusterRole" | "Role") => rbac_rules(&mut errs, new),
        ("storage.k8s.io", "StorageClass") => {
            if empty(new.get("provisioner")) {
                errs.required("provisioner", "");
            }
            if let Some(old) = old {
                if old.get("parameters") != new.get("parameters") {
                    errs.forbidden("parameters", "updates to parameters are forbidden.");
                }
                if old.get("provisioner") != new.get("provisioner") {
                    errs.forbidden("provisioner", "updates to provisioner are forbidden.");
                }
            }
            if let Some(p) = s(new, "/reclaimPolicy")
                && !["Delete", "Retain"].contains(&p)
            {
                errs.unsupported(
                    "reclaimPolicy",
                    &Value::String(p.into()),
                    &["Delete", "Retain"],
                );
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(old) = old
                && old.get("value") != new.get("value")
            {
                errs.forbidden("value", "may not be changed in an update.");
            }
        }
        ("apiextensions.k8s.io", _) => crd(&mut errs, r, new, old),
        ("admissionregistration.k8s.io", _) => webhooks(&mut errs, new),
        _ => {}
    }
    invalid(r, errs)
}
