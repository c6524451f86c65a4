//! MockCluster against kube-apiserver's own rules: what the real server refuses, the
//! mock refuses with the same status and words; what it accepts, the mock accepts.
//! Each case names the source of its rule (kubernetes/kubernetes at v1.34, the paths
//! below; the same rules hold in v1.36).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use castle_kube::{ClusterApi, Condition, Error, MockCluster, ObjectRef, Propagation};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

const CORE: &str = "kubernetes pkg/apis/core/validation/validation.go";
const APPS: &str = "kubernetes pkg/apis/apps/validation/validation.go";
const BATCH: &str = "kubernetes pkg/apis/batch/validation/validation.go";
const NET: &str = "kubernetes pkg/apis/networking/validation/validation.go";
const HPA: &str = "kubernetes pkg/apis/autoscaling/validation/validation.go";
const RBAC: &str = "kubernetes pkg/apis/rbac/validation/validation.go";
const STORAGE: &str = "kubernetes pkg/apis/storage/validation/validation.go";
const SCHED: &str = "kubernetes pkg/apis/scheduling/validation/validation.go";
const POLICY: &str = "kubernetes pkg/apis/policy/validation/validation.go";
const DISC: &str = "kubernetes pkg/apis/discovery/validation/validation.go";
const ADM: &str = "kubernetes pkg/apis/admissionregistration/validation/validation.go";
const NAMES: &str = "kubernetes staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go (IsDNS1123Label/Subdomain, IsDNS1035Label, IsQualifiedName, IsValidLabelValue)";
const CRD: &str = "kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go";
const STRUCTURAL: &str =
    "kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/validation.go";
const CR: &str = "kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/validation (kube-openapi validate errors)";
const TYPED: &str = "kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (applyPatcher) + sigs.k8s.io/structured-merge-diff typed/validate.go";
const ALLOC: &str =
    "kubernetes pkg/registry/core/service/ipallocator (ErrNotInRange, ErrAllocated)";
const LIFECYCLE: &str =
    "kubernetes staging/src/k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go";
const DISCOVERY: &str = "kubernetes staging/src/k8s.io/apimachinery/pkg/api/meta (NoKindMatchError) via kube-rs discovery";
const SSA: &str = "sigs.k8s.io/structured-merge-diff merge/update.go (conflicts) + kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager";

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "blog"}},
                 "template": {"metadata": {"labels": {"app": "blog"}},
                              "spec": {"containers": [{"name": "blog", "image": "ghcr.io/lab/blog:1", "ports": [{"containerPort": 8080}]}]}}}})
}

fn with(mut v: Value, ptr: &str, x: Value) -> Value {
    let (parent, last) = ptr.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    if x.is_null() {
        target.as_object_mut().unwrap().remove(last);
    } else if let Some(a) = target.as_array_mut() {
        a[last.parse::<usize>().unwrap()] = x;
    } else {
        target[last] = x;
    }
    v
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "web"}, "spec": spec})
}

fn configmap(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "web"}, "data": data})
}

fn secret(kind: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": {"name": "db", "namespace": "web"}, "data": data})
}

fn job(restart: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "migrate", "image": "ghcr.io/lab/migrate:1"}]});
    if let Some(r) = restart {
        spec["restartPolicy"] = json!(r);
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "web"}, "spec": {"template": {"spec": spec}}})
}

fn pvc(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "web"}, "spec": spec})
}

fn pvc_spec() -> Value {
    json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn", "resources": {"requests": {"storage": "10Gi"}}})
}

fn hpa(spec: Value) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "blog", "namespace": "web"}, "spec": spec})
}

fn binding(kind: &str, role_kind: &str, role: &str, subjects: Value) -> Value {
    let mut b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": "blog-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}, "subjects": subjects});
    if kind == "RoleBinding" {
        b["metadata"]["namespace"] = json!("web");
    }
    b
}

fn storage_class(params: Value) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "longhorn"}, "provisioner": "driver.longhorn.io", "parameters": params})
}

fn webhook(name: &str, side_effects: Option<&str>) -> Value {
    let mut hook = json!({"name": name, "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": "metallb-webhook-service", "namespace": "metallb-system", "path": "/validate"}},
        "rules": [{"apiGroups": ["metallb.io"], "apiVersions": ["v1beta1"], "operations": ["CREATE"], "resources": ["ipaddresspools"]}]});
    if let Some(s) = side_effects {
        hook["sideEffects"] = json!(s);
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "metallb-webhook-configuration"}, "webhooks": [hook]})
}

/// A CRD in the shape MetalLB's IPAddressPool has, with a schema worth validating.
fn pool_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "ipaddresspools.metallb.io"},
        "spec": {"group": "metallb.io", "scope": "Namespaced",
                 "names": {"kind": "IPAddressPool", "listKind": "IPAddressPoolList", "plural": "ipaddresspools", "singular": "ipaddresspool"},
                 "versions": [{"name": "v1beta1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                     "type": "object",
                     "properties": {
                         "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                         "spec": {"type": "object", "required": ["addresses"], "properties": {
                             "addresses": {"type": "array", "items": {"type": "string"}},
                             "autoAssign": {"type": "boolean"},
                             "mode": {"type": "string", "enum": ["L2", "BGP"]},
                             "priority": {"type": "integer", "minimum": 0},
                             "owner": {"type": "string", "pattern": "^[a-z]+$"}}},
                         "status": {"type": "object"}}}}}]}})
}

fn pool(spec: Value) -> Value {
    json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "castle", "namespace": "web"}, "spec": spec})
}

fn crd_with(ptr: &str, x: Value) -> Value {
    with(pool_crd(), ptr, x)
}

struct Case {
    what: &'static str,
    source: &'static str,
    /// Applied first (by the same manager), when the rule is about an update.
    before: Vec<Value>,
    object: Value,
    /// `None`: accepted.
    refused: Option<(u16, &'static str)>,
}

fn refuse(
    what: &'static str,
    source: &'static str,
    object: Value,
    status: u16,
    says: &'static str,
) -> Case {
    Case {
        what,
        source,
        before: vec![],
        object,
        refused: Some((status, says)),
    }
}

fn refuse_update(
    what: &'static str,
    source: &'static str,
    before: Value,
    object: Value,
    says: &'static str,
) -> Case {
    Case {
        what,
        source,
        before: vec![before],
        object,
        refused: Some((422, says)),
    }
}

fn accept(what: &'static str, source: &'static str, object: Value) -> Case {
    Case {
        what,
        source,
        before: vec![],
        object,
        refused: None,
    }
}

/// A cluster with namespace `web` and the IPAddressPool CRD served.
async fn cluster() -> MockCluster {
    let c = MockCluster::new();
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        false,
    )
    .await
    .unwrap();
    c.apply(&pool_crd(), false).await.unwrap();
    c.wait(
        &Condition::CrdEstablished("ipaddresspools.metallb.io".into()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    c
}

fn refused_cases() -> Vec<Case> {
    let long = "a".repeat(64);
    vec![
        refuse(
            "a Deployment without containers",
            CORE,
            with(
                deployment("blog"),
                "/spec/template/spec/containers",
                json!([]),
            ),
            422,
            "Deployment.apps \"blog\" is invalid: spec.template.spec.containers: Required value",
        ),
        refuse(
            "a Deployment whose selector does not match its template",
            APPS,
            with(
                deployment("blog"),
                "/spec/selector/matchLabels/app",
                json!("web"),
            ),
            422,
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"blog\"}: `selector` does not match template `labels`",
        ),
        refuse(
            "a Deployment without a selector",
            APPS,
            with(deployment("blog"), "/spec/selector", Value::Null),
            422,
            "spec.selector: Required value",
        ),
        refuse(
            "a Deployment with an empty selector",
            APPS,
            with(deployment("blog"), "/spec/selector", json!({})),
            422,
            "empty selector is invalid for deployment",
        ),
        refuse(
            "a container without an image",
            CORE,
            with(
                deployment("blog"),
                "/spec/template/spec/containers/0/image",
                Value::Null,
            ),
            422,
            "spec.template.spec.containers[0].image: Required value",
        ),
        refuse(
            "two containers of one name",
            CORE,
            with(
                deployment("blog"),
                "/spec/template/spec/containers",
                json!([{"name": "blog", "image": "a"}, {"name": "blog", "image": "b"}]),
            ),
            422,
            "spec.template.spec.containers[1].name: Duplicate value: \"blog\"",
        ),
        refuse(
            "a Deployment pod that does not restart Always",
            APPS,
            with(
                deployment("blog"),
                "/spec/template/spec/restartPolicy",
                json!("Never"),
            ),
            422,
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ),
        refuse(
            "negative replicas",
            APPS,
            with(deployment("blog"), "/spec/replicas", json!(-1)),
            422,
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        refuse(
            "a container port above 65535",
            CORE,
            with(
                deployment("blog"),
                "/spec/template/spec/containers/0/ports/0/containerPort",
                json!(70000),
            ),
            422,
            "containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        refuse(
            "replicas: \"two\"",
            TYPED,
            with(deployment("blog"), "/spec/replicas", json!("two")),
            500,
            "failed to create typed patch object (web/blog; apps/v1, Kind=Deployment): .spec.replicas: expected numeric (int or float), got string",
        ),
        refuse(
            "a container list that is a map",
            TYPED,
            with(
                deployment("blog"),
                "/spec/template/spec/containers",
                json!({"name": "blog"}),
            ),
            500,
            ".spec.template.spec.containers: expected list, got map",
        ),
        refuse_update(
            "a changed Deployment selector",
            APPS,
            deployment("blog"),
            with(
                with(
                    deployment("blog"),
                    "/spec/selector/matchLabels/tier",
                    json!("web"),
                ),
                "/spec/template/metadata/labels/tier",
                json!("web"),
            ),
            "spec.selector: Invalid value",
        ),
        refuse(
            "an object name with capitals and underscores",
            NAMES,
            with(deployment("blog"), "/metadata/name", json!("Blog_1")),
            422,
            "metadata.name: Invalid value: \"Blog_1\": a lowercase RFC 1123 subdomain must consist of",
        ),
        refuse(
            "a namespace name with dots",
            NAMES,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web.prod"}}),
            422,
            "Namespace \"web.prod\" is invalid: metadata.name: Invalid value: \"web.prod\": a lowercase RFC 1123 label must consist of",
        ),
        refuse(
            "a namespace name of 64 characters",
            NAMES,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": long}}),
            422,
            "must be no more than 63 characters",
        ),
        refuse(
            "a Service name that starts with a digit",
            NAMES,
            service("1blog", json!({"ports": [{"port": 80}]})),
            422,
            "a DNS-1035 label must consist of",
        ),
        refuse(
            "a label value over 63 bytes",
            NAMES,
            with(
                deployment("blog"),
                "/metadata/labels",
                json!({"release": "x".repeat(64)}),
            ),
            422,
            "metadata.labels: Invalid value: \"xxxx",
        ),
        refuse(
            "a label key with a space",
            NAMES,
            with(
                deployment("blog"),
                "/metadata/labels",
                json!({"bad key": "x"}),
            ),
            422,
            "name part must consist of alphanumeric characters",
        ),
        refuse(
            "an annotation key with two slashes",
            NAMES,
            with(
                deployment("blog"),
                "/metadata/annotations",
                json!({"a/b/c": "x"}),
            ),
            422,
            "metadata.annotations: Invalid value: \"a/b/c\"",
        ),
        refuse(
            "a clusterIP outside the service range",
            ALLOC,
            service(
                "blog",
                json!({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}),
            ),
            422,
            "spec.clusterIPs: Invalid value: []string{\"10.0.0.5\"}: failed to allocate IP 10.0.0.5: the provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
        ),
        refuse(
            "two Service ports of one name",
            CORE,
            service(
                "blog",
                json!({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 8080}]}),
            ),
            422,
            "spec.ports[1].name: Duplicate value: \"http\"",
        ),
        refuse(
            "an unnamed port beside another",
            CORE,
            service(
                "blog",
                json!({"ports": [{"name": "http", "port": 80}, {"port": 8080}]}),
            ),
            422,
            "spec.ports[1].name: Required value",
        ),
        refuse(
            "a ClusterIP Service without ports",
            CORE,
            service("blog", json!({"selector": {"app": "blog"}})),
            422,
            "spec.ports: Required value",
        ),
        refuse(
            "a Service type that does not exist",
            CORE,
            service("blog", json!({"type": "Internal", "ports": [{"port": 80}]})),
            422,
            "spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ),
        refuse(
            "a port protocol HTTP",
            CORE,
            service("blog", json!({"ports": [{"port": 80, "protocol": "HTTP"}]})),
            422,
            "spec.ports[0].protocol: Unsupported value: \"HTTP\"",
        ),
        refuse_update(
            "a changed clusterIP",
            CORE,
            service(
                "blog",
                json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}),
            ),
            service(
                "blog",
                json!({"clusterIP": "10.96.0.21", "ports": [{"port": 80}]}),
            ),
            "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.21\"}: may not change once set",
        ),
        Case {
            what: "a clusterIP another Service holds",
            source: ALLOC,
            before: vec![service(
                "dns",
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}),
            )],
            object: service(
                "blog",
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
            ),
            refused: Some((
                422,
                "failed to allocate IP 10.96.0.10: provided IP is already allocated",
            )),
        },
        refuse(
            "a number in ConfigMap data",
            TYPED,
            configmap(json!({"count": 3})),
            500,
            ".data.count: expected string, got number",
        ),
        refuse(
            "a ConfigMap key with a space",
            CORE,
            configmap(json!({"bad key": "x"})),
            422,
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of",
        ),
        refuse_update(
            "a change to an immutable ConfigMap",
            CORE,
            with(configmap(json!({"a": "1"})), "/immutable", json!(true)),
            with(configmap(json!({"a": "2"})), "/immutable", json!(true)),
            "ConfigMap \"settings\" is invalid: data: Forbidden: field is immutable when `immutable` is set",
        ),
        refuse(
            "Secret data that is not base64",
            TYPED,
            secret("Opaque", json!({"password": "hunter2!"})),
            500,
            "illegal base64 data at input byte 7",
        ),
        refuse_update(
            "a changed Secret type",
            CORE,
            secret("Opaque", json!({"a": "YQ=="})),
            secret("kubernetes.io/basic-auth", json!({"username": "YQ=="})),
            "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
        ),
        refuse(
            "a TLS Secret without its key",
            CORE,
            secret("kubernetes.io/tls", json!({"tls.crt": "YQ=="})),
            422,
            "data[tls.key]: Required value",
        ),
        // ValidateSecret, case SecretTypeDockerConfigJSON: the key must exist and
        // json.Unmarshal into map[string]interface{} must succeed; the value is
        // never shown.
        refuse(
            "a dockerconfigjson Secret without .dockerconfigjson",
            CORE,
            secret("kubernetes.io/dockerconfigjson", json!({"token": "YQ=="})),
            422,
            "Secret \"db\" is invalid: data[.dockerconfigjson]: Required value",
        ),
        refuse(
            "a dockerconfigjson Secret whose value is not JSON",
            CORE,
            with(
                secret("kubernetes.io/dockerconfigjson", json!({})),
                "/stringData",
                json!({".dockerconfigjson": "auths: canary-token"}),
            ),
            422,
            "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character 'a' looking for beginning of value",
        ),
        refuse(
            "a dockerconfigjson Secret cut short",
            CORE,
            with(
                secret("kubernetes.io/dockerconfigjson", json!({})),
                "/stringData",
                json!({".dockerconfigjson": "{\"auths\": {"}),
            ),
            422,
            "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": unexpected end of JSON input",
        ),
        refuse(
            "a dockerconfigjson Secret holding a JSON list",
            CORE,
            with(
                secret("kubernetes.io/dockerconfigjson", json!({})),
                "/stringData",
                json!({".dockerconfigjson": "[]"}),
            ),
            422,
            "json: cannot unmarshal array into Go value of type map[string]interface {}",
        ),
        refuse(
            "a dockercfg Secret without .dockercfg",
            CORE,
            secret("kubernetes.io/dockercfg", json!({})),
            422,
            "data[.dockercfg]: Required value",
        ),
        refuse(
            "an ssh-auth Secret with an empty key",
            CORE,
            secret("kubernetes.io/ssh-auth", json!({"ssh-privatekey": ""})),
            422,
            "data[ssh-privatekey]: Required value",
        ),
        refuse(
            "a basic-auth Secret with neither username nor password",
            CORE,
            secret("kubernetes.io/basic-auth", json!({"token": "YQ=="})),
            422,
            "[data[username]: Required value, data[password]: Required value]",
        ),
        refuse(
            "a service-account-token Secret without its account",
            CORE,
            secret("kubernetes.io/service-account-token", json!({})),
            422,
            "metadata.annotations[kubernetes.io/service-account.name]: Required value",
        ),
        refuse(
            "a Secret over 1 MiB (core.MaxSecretSize)",
            CORE,
            with(
                secret("Opaque", json!({})),
                "/stringData",
                json!({"blob": "x".repeat(1024 * 1024 + 1)}),
            ),
            422,
            "data: Too long: may not be more than 1048576 bytes",
        ),
        refuse(
            "a Job without a restartPolicy (defaulted to Always, core/v1 SetDefaults_PodSpec)",
            BATCH,
            job(None),
            422,
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
        ),
        refuse(
            "a Job that restarts Always",
            BATCH,
            job(Some("Always")),
            422,
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\"",
        ),
        refuse_update(
            "a changed Job template",
            BATCH,
            job(Some("Never")),
            with(
                job(Some("Never")),
                "/spec/template/spec/containers/0/image",
                json!("ghcr.io/lab/migrate:2"),
            ),
            "spec.template: Invalid value",
        ),
        refuse(
            "a CronJob without a schedule",
            BATCH,
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup", "namespace": "web"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "b", "image": "b"}]}}}}}}),
            422,
            "spec.schedule: Required value",
        ),
        refuse(
            "an Ingress path without pathType",
            NET,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "blog", "namespace": "web"},
            "spec": {"rules": [{"host": "blog.lab.invalid", "http": {"paths": [{"path": "/", "backend": {"service": {"name": "blog", "port": {"number": 80}}}}]}}]}}),
            422,
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
        ),
        refuse(
            "an HPA with maxReplicas 0",
            HPA,
            hpa(
                json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "blog"}, "maxReplicas": 0}),
            ),
            422,
            "spec.maxReplicas: Invalid value: 0: must be greater than or equal to 1",
        ),
        refuse(
            "an HPA whose minimum exceeds its maximum",
            HPA,
            hpa(
                json!({"scaleTargetRef": {"kind": "Deployment", "name": "blog"}, "minReplicas": 5, "maxReplicas": 3}),
            ),
            422,
            "spec.maxReplicas: Invalid value: 3: must be greater than or equal to `minReplicas`",
        ),
        refuse(
            "a claim without access modes",
            CORE,
            pvc(with(pvc_spec(), "/accessModes", Value::Null)),
            422,
            "spec.accessModes: Required value: at least 1 access mode is required",
        ),
        refuse(
            "a claim without a storage request",
            CORE,
            pvc(with(pvc_spec(), "/resources", Value::Null)),
            422,
            "spec.resources[storage]: Required value",
        ),
        refuse_update(
            "a claim moved to another storage class",
            CORE,
            pvc(pvc_spec()),
            pvc(with(pvc_spec(), "/storageClassName", json!("local-path"))),
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ),
        refuse(
            "a quota that is not a quantity",
            CORE,
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "web"}, "spec": {"hard": {"cpu": "lots"}}}),
            422,
            "spec.hard[cpu]: Invalid value: \"lots\": quantities must match the regular expression",
        ),
        refuse(
            "a NetworkPolicy type Both",
            NET,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "web"}, "spec": {"podSelector": {}, "policyTypes": ["Both"]}}),
            422,
            "spec.policyTypes[0]: Unsupported value: \"Both\"",
        ),
        refuse(
            "a ClusterRoleBinding to a Role",
            RBAC,
            binding(
                "ClusterRoleBinding",
                "Role",
                "reader",
                json!([{"kind": "User", "name": "ana"}]),
            ),
            422,
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
        ),
        refuse_update(
            "a changed roleRef",
            RBAC,
            binding(
                "RoleBinding",
                "ClusterRole",
                "view",
                json!([{"kind": "User", "name": "ana"}]),
            ),
            binding(
                "RoleBinding",
                "ClusterRole",
                "edit",
                json!([{"kind": "User", "name": "ana"}]),
            ),
            "roleRef: Invalid value",
        ),
        refuse(
            "a ServiceAccount subject without a namespace",
            RBAC,
            binding(
                "ClusterRoleBinding",
                "ClusterRole",
                "view",
                json!([{"kind": "ServiceAccount", "name": "blog"}]),
            ),
            422,
            "subjects[0].namespace: Required value",
        ),
        refuse(
            "a rule without verbs",
            RBAC,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]}),
            422,
            "rules[0].verbs: Required value: verbs must contain at least one value",
        ),
        refuse(
            "a resource rule without api groups",
            RBAC,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"}, "rules": [{"apiGroups": [], "resources": ["pods"], "verbs": ["get"]}]}),
            422,
            "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
        ),
        refuse(
            "a StorageClass without a provisioner",
            STORAGE,
            with(storage_class(json!({})), "/provisioner", Value::Null),
            422,
            "provisioner: Required value",
        ),
        refuse_update(
            "changed StorageClass parameters",
            STORAGE,
            storage_class(json!({"numberOfReplicas": "3"})),
            storage_class(json!({"numberOfReplicas": "2"})),
            "parameters: Forbidden: updates to parameters are forbidden.",
        ),
        refuse_update(
            "a changed PriorityClass value",
            SCHED,
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 2000}),
            "value: Forbidden: may not be changed in an update.",
        ),
        refuse(
            "a PDB with minAvailable and maxUnavailable",
            POLICY,
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "blog", "namespace": "web"},
            "spec": {"minAvailable": 1, "maxUnavailable": 1, "selector": {"matchLabels": {"app": "blog"}}}}),
            422,
            "minAvailable and maxUnavailable cannot be both set",
        ),
        refuse_update(
            "a changed EndpointSlice addressType",
            DISC,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "blog-1", "namespace": "web"}, "addressType": "IPv4", "endpoints": []}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "blog-1", "namespace": "web"}, "addressType": "IPv6", "endpoints": []}),
            "addressType: Invalid value: \"IPv6\": field is immutable",
        ),
        refuse(
            "a webhook name without three segments",
            ADM,
            webhook("check", Some("None")),
            422,
            "webhooks[0].name: Invalid value: \"check\": should be a domain with at least three segments separated by dots",
        ),
        refuse(
            "a webhook without sideEffects",
            ADM,
            webhook("ipaddresspoolvalidationwebhook.metallb.io", None),
            422,
            "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        ),
        refuse(
            "a CRD version without a schema",
            CRD,
            crd_with("/spec/versions/0/schema", Value::Null),
            422,
            "CustomResourceDefinition.apiextensions.k8s.io \"ipaddresspools.metallb.io\" is invalid: spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required",
        ),
        refuse(
            "a CRD whose name is not plural.group",
            CRD,
            crd_with("/metadata/name", json!("pools.metallb.io")),
            422,
            "metadata.name: Invalid value: \"pools.metallb.io\": must be spec.names.plural+\".\"+spec.group",
        ),
        refuse(
            "a CRD property without a type",
            STRUCTURAL,
            crd_with(
                "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/autoAssign",
                json!({"description": "x"}),
            ),
            422,
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[autoAssign].type: Required value: must not be empty for specified object fields",
        ),
        refuse(
            "a CRD whose root is not an object",
            STRUCTURAL,
            crd_with(
                "/spec/versions/0/schema/openAPIV3Schema",
                json!({"type": "string"}),
            ),
            422,
            "spec.versions[0].schema.openAPIV3Schema.type: Invalid value: \"string\": must be object at the root",
        ),
        refuse(
            "a CRD with no storage version",
            CRD,
            crd_with("/spec/versions/0/storage", json!(false)),
            422,
            "must have exactly one version marked as storage version",
        ),
        refuse(
            "a CRD group without a dot",
            CRD,
            with(
                crd_with("/spec/group", json!("metallb")),
                "/metadata/name",
                json!("ipaddresspools.metallb"),
            ),
            422,
            "spec.group: Invalid value: \"metallb\": should be a domain with at least one dot",
        ),
        refuse_update(
            "a CRD that changes scope",
            CRD,
            pool_crd(),
            crd_with("/spec/scope", json!("Cluster")),
            "spec.scope: Invalid value: \"Cluster\": field is immutable",
        ),
        refuse(
            "a custom resource field of the wrong type",
            TYPED,
            pool(json!({"addresses": "192.168.1.240-192.168.1.250"})),
            500,
            "failed to create typed patch object (web/castle; metallb.io/v1beta1, Kind=IPAddressPool): .spec.addresses: expected list, got string",
        ),
        refuse(
            "a custom resource without a required field",
            CR,
            pool(json!({"autoAssign": true})),
            422,
            "IPAddressPool.metallb.io \"castle\" is invalid: spec.addresses: Required value",
        ),
        refuse(
            "a custom resource value outside its enum",
            CR,
            pool(json!({"addresses": ["10.0.0.0/24"], "mode": "ARP"})),
            422,
            "spec.mode: Unsupported value: \"ARP\": supported values: \"L2\", \"BGP\"",
        ),
        refuse(
            "a custom resource value under its minimum",
            CR,
            pool(json!({"addresses": ["10.0.0.0/24"], "priority": -1})),
            422,
            "spec.priority: Invalid value: -1: spec.priority in body should be greater than or equal to 0",
        ),
        refuse(
            "a custom resource value against its pattern",
            CR,
            pool(json!({"addresses": ["10.0.0.0/24"], "owner": "Castle"})),
            422,
            "spec.owner in body should match '^[a-z]+$'",
        ),
        refuse(
            "a kind at a version the server does not serve",
            DISCOVERY,
            with(deployment("blog"), "/apiVersion", json!("apps/v1beta1")),
            404,
            "no matches for kind \"Deployment\" in version \"apps/v1beta1\"",
        ),
        refuse(
            "a kind of kube-apiserver's group that does not exist",
            DISCOVERY,
            json!({"apiVersion": "apps/v1", "kind": "Rollout", "metadata": {"name": "x", "namespace": "web"}}),
            404,
            "no matches for kind \"Rollout\"",
        ),
        refuse(
            "an object in a namespace that does not exist",
            LIFECYCLE,
            with(deployment("blog"), "/metadata/namespace", json!("shop")),
            404,
            "namespaces \"shop\" not found",
        ),
        refuse(
            "a Pod without containers",
            CORE,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "web"}, "spec": {"containers": []}}),
            422,
            "Pod \"p\" is invalid: spec.containers: Required value",
        ),
    ]
}

fn accepted_cases() -> Vec<Case> {
    vec![
        accept("a Deployment", APPS, deployment("blog")),
        accept(
            "a selector by expression",
            APPS,
            with(
                deployment("blog"),
                "/spec/selector",
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["blog", "web"]}]}),
            ),
        ),
        accept(
            "a Service with named ports in the range",
            CORE,
            service(
                "blog",
                json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}),
            ),
        ),
        accept(
            "a headless Service without ports",
            CORE,
            service(
                "blog",
                json!({"clusterIP": "None", "selector": {"app": "blog"}}),
            ),
        ),
        accept(
            "an ExternalName Service",
            CORE,
            service(
                "upstream",
                json!({"type": "ExternalName", "externalName": "blog.example.com"}),
            ),
        ),
        accept(
            "a ConfigMap",
            CORE,
            configmap(json!({"app.yaml": "x: 1", "LOG_LEVEL": "info"})),
        ),
        accept(
            "a Secret with data and stringData",
            CORE,
            with(
                secret("Opaque", json!({"password": "aHVudGVyMg=="})),
                "/stringData",
                json!({"user": "blog"}),
            ),
        ),
        accept(
            "a TLS Secret",
            CORE,
            secret(
                "kubernetes.io/tls",
                json!({"tls.crt": "YQ==", "tls.key": "Yg=="}),
            ),
        ),
        accept(
            "a dockerconfigjson Secret as Castle composes it",
            CORE,
            with(
                secret("kubernetes.io/dockerconfigjson", json!({})),
                "/stringData",
                json!({".dockerconfigjson": castle_kube::docker_config_json("ghcr.io", "lab-bot", &secrecy::SecretString::from("canary-token")).expose_secret()}),
            ),
        ),
        accept(
            "a dockerconfigjson Secret holding JSON null (json.Unmarshal accepts it)",
            CORE,
            with(
                secret("kubernetes.io/dockerconfigjson", json!({})),
                "/stringData",
                json!({".dockerconfigjson": "null"}),
            ),
        ),
        accept(
            "a basic-auth Secret with an empty password",
            CORE,
            secret("kubernetes.io/basic-auth", json!({"password": ""})),
        ),
        accept(
            "a service-account-token Secret naming its account",
            CORE,
            with(
                secret("kubernetes.io/service-account-token", json!({})),
                "/metadata/annotations",
                json!({"kubernetes.io/service-account.name": "eso"}),
            ),
        ),
        accept(
            "a NetworkPolicy",
            NET,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "web"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        ),
        accept(
            "a ResourceQuota",
            CORE,
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "web"}, "spec": {"hard": {"cpu": "4", "memory": "8Gi", "requests.cpu": "500m", "pods": "20"}}}),
        ),
        accept(
            "a LimitRange",
            CORE,
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l", "namespace": "web"}, "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}),
        ),
        accept("a Job", BATCH, job(Some("Never"))),
        accept(
            "a CronJob",
            BATCH,
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup", "namespace": "web"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "b", "image": "b"}]}}}}}}),
        ),
        accept(
            "an Ingress",
            NET,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "blog", "namespace": "web"},
            "spec": {"ingressClassName": "traefik", "rules": [{"host": "blog.lab.invalid", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "blog", "port": {"number": 80}}}}]}}]}}),
        ),
        accept(
            "an IngressClass",
            NET,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "traefik"}, "spec": {"controller": "traefik.io/ingress-controller"}}),
        ),
        accept(
            "an autoscaling/v2 HPA",
            HPA,
            hpa(
                json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "blog"}, "minReplicas": 2, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}),
            ),
        ),
        accept("a PersistentVolumeClaim", CORE, pvc(pvc_spec())),
        accept(
            "a ClusterRole named with a colon",
            RBAC,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
            "rules": [{"apiGroups": [""], "resources": ["endpoints"], "verbs": ["list", "watch"]}]}),
        ),
        accept(
            "a ClusterRoleBinding",
            RBAC,
            binding(
                "ClusterRoleBinding",
                "ClusterRole",
                "view",
                json!([{"kind": "ServiceAccount", "name": "blog", "namespace": "web"}]),
            ),
        ),
        accept(
            "a StorageClass",
            STORAGE,
            storage_class(json!({"numberOfReplicas": "3"})),
        ),
        accept(
            "a PriorityClass",
            SCHED,
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000000}),
        ),
        accept(
            "a PodDisruptionBudget",
            POLICY,
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "blog", "namespace": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "blog"}}}}),
        ),
        accept(
            "a Lease",
            CORE,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader", "namespace": "web"}, "spec": {"holderIdentity": "a"}}),
        ),
        accept(
            "a webhook configuration",
            ADM,
            webhook("ipaddresspoolvalidationwebhook.metallb.io", Some("None")),
        ),
        accept(
            "a CRD with a structural schema",
            CRD,
            with(
                with(
                    with(
                        pool_crd(),
                        "/metadata/name",
                        json!("l2advertisements.metallb.io"),
                    ),
                    "/spec/names",
                    json!({"kind": "L2Advertisement", "plural": "l2advertisements"}),
                ),
                "/spec/versions/0/schema/openAPIV3Schema",
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            ),
        ),
        accept(
            "a custom resource its schema allows",
            CR,
            pool(
                json!({"addresses": ["192.168.1.240-192.168.1.250"], "autoAssign": true, "mode": "L2", "priority": 1, "owner": "castle"}),
            ),
        ),
        accept(
            "a label value of exactly 63 bytes",
            NAMES,
            with(
                deployment("blog"),
                "/metadata/labels",
                json!({"app.kubernetes.io/instance": "x".repeat(63)}),
            ),
        ),
        accept(
            "a clusterIP kept on update",
            CORE,
            service(
                "blog",
                json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
            ),
        ),
    ]
}

async fn run(case: &Case) -> Result<Value, Error> {
    let c = cluster().await;
    for b in &case.before {
        c.apply(b, false)
            .await
            .unwrap_or_else(|e| panic!("{}: the object before: {e}", case.what));
    }
    c.apply(&case.object, false).await
}

#[tokio::test]
async fn mock_cluster_refuses_what_kube_apiserver_refuses() {
    let cases = refused_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let (status, says) = case.refused.unwrap();
        match run(case).await {
            Ok(_) => wrong.push(format!(
                "{} [{}]: accepted, the server answers {status}",
                case.what, case.source
            )),
            Err(e) => {
                let ok = e.status() == Some(status) && e.to_string().contains(says);
                if !ok {
                    wrong.push(format!(
                        "{} [{}]: want {status} \"{says}\", got {e}",
                        case.what, case.source
                    ));
                }
                // A manifest's mistake is never worth a retry.
                if e.is_transient() {
                    wrong.push(format!("{}: classified transient: {e}", case.what));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn mock_cluster_accepts_what_kube_apiserver_accepts() {
    let cases = accepted_cases();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        if let Err(e) = run(case).await {
            wrong.push(format!("{} [{}]: {e}", case.what, case.source));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// Source: kubernetes `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go`
/// (the request's namespace is the object's; kube-rs and kubectl send `default` when
/// the manifest has none) and the registry's cluster-scoped strategy, which clears a
/// namespace.
#[tokio::test]
async fn namespaces_are_defaulted_and_dropped_as_the_server_does() {
    let c = cluster().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}});
    let applied = c.apply(&cm, false).await.unwrap();
    assert_eq!(applied["metadata"]["namespace"], "default");
    assert!(
        c.get(&ObjectRef::new(
            "v1",
            "ConfigMap",
            Some("default"),
            "settings"
        ))
        .await
        .unwrap()
        .is_some()
    );
    let sc = with(
        storage_class(json!({})),
        "/metadata/namespace",
        json!("web"),
    );
    let applied = c.apply(&sc, false).await.unwrap();
    assert!(applied["metadata"].get("namespace").is_none(), "{applied}");
}

/// Source: kubernetes `staging/src/k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go`:
/// no new content in a Terminating namespace (403), updates still pass.
#[tokio::test]
async fn a_terminating_namespace_refuses_new_content_only() {
    let c = MockCluster::new().with_latency(castle_kube::Latency::lab().scaled(0.0));
    let c = {
        // Namespaces take time to terminate: a model where that time is not zero.
        let mut lat = castle_kube::Latency::instant().scaled(1.0);
        lat.namespace_termination = 5.0;
        drop(c);
        MockCluster::new().with_latency(lat)
    };
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        false,
    )
    .await
    .unwrap();
    c.apply(&configmap(json!({"a": "1"})), false).await.unwrap();
    c.delete(
        &ObjectRef::new("v1", "Namespace", None, "web"),
        Propagation::Background,
    )
    .await
    .unwrap();
    let e = c.apply(&deployment("blog"), false).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(
        e.to_string().contains(
            "unable to create new content in namespace web because it is being terminated"
        ),
        "{e}"
    );
    c.apply(&configmap(json!({"a": "2"})), false).await.unwrap();
}

#[tokio::test]
async fn a_conflict_between_managers_is_a_409_naming_the_field() {
    let c = cluster().await;
    c.apply_as("helm", &configmap(json!({"a": "1"})), false)
        .await
        .unwrap();
    let e = c
        .apply_as("castle", &configmap(json!({"a": "2"})), false)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "[{SSA}] {e}");
    assert!(
        e.to_string()
            .contains("Apply failed with 1 conflict: conflict with \"helm\": .data.a"),
        "{e}"
    );
    let both = configmap(json!({"a": "1", "b": "1"}));
    c.apply_as("helm", &both, false).await.unwrap();
    let ours = configmap(json!({"a": "2", "b": "2"}));
    let e = c.apply_as("castle", &ours, false).await.unwrap_err();
    assert!(
        e.to_string().contains(
            "Apply failed with 2 conflicts: conflicts with \"helm\":\n- .data.a\n- .data.b"
        ),
        "{e}"
    );
    // Force takes the fields over; the same value from another manager is shared.
    c.apply_as("castle", &ours, true).await.unwrap();
    c.apply_as("flux", &configmap(json!({"a": "2"})), false)
        .await
        .unwrap();
}

/// A Service without a clusterIP gets one, above the band kept for static choices; the
/// `kubernetes` Service holds the range's first address (kubernetes
/// `pkg/registry/core/service/ipallocator`, KEP-3070; `pkg/controlplane/controller/kubernetesservice`).
#[tokio::test]
async fn cluster_ips_are_allocated_and_the_first_belongs_to_kubernetes() {
    let c = cluster().await;
    let svc = c
        .apply(
            &service("blog", json!({"ports": [{"name": "http", "port": 80}]})),
            false,
        )
        .await
        .unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "10.96.1.0");
    assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.1.0"]));
    // Re-applying without a clusterIP keeps the allocated one.
    let again = c
        .apply(
            &service("blog", json!({"ports": [{"name": "http", "port": 80}]})),
            false,
        )
        .await
        .unwrap();
    assert_eq!(again["spec"]["clusterIP"], "10.96.1.0");
    let e = c
        .apply(
            &service(
                "api",
                json!({"clusterIP": "10.96.0.1", "ports": [{"port": 443}]}),
            ),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("failed to allocate IP 10.96.0.1: provided IP is already allocated"),
        "{e}"
    );
}

/// Unknown fields are dropped, not refused: a built-in kind decodes into its Go struct
/// under the default `fieldValidation=Warn` (kubernetes
/// `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`), and a custom
/// resource is pruned to its structural schema (apiextensions-apiserver
/// `pkg/apiserver/schema/pruning/algorithm.go`) unless x-kubernetes-preserve-unknown-fields.
#[tokio::test]
async fn unknown_fields_are_dropped_as_the_server_drops_them() {
    let c = cluster().await;
    let typo = with(deployment("blog"), "/spec/replica", json!(3));
    let stored = c.apply(&typo, false).await.unwrap();
    assert!(stored["spec"].get("replica").is_none(), "{stored}");
    assert_eq!(stored["spec"]["replicas"], 2);
    let extra = pool(json!({"addresses": ["10.0.0.0/24"], "autoAsign": true}));
    let stored = c.apply(&extra, false).await.unwrap();
    assert!(stored["spec"].get("autoAsign").is_none(), "{stored}");
    assert_eq!(stored["spec"]["addresses"], json!(["10.0.0.0/24"]));
    assert_eq!(stored["metadata"]["name"], "castle");
}

/// stringData is write-only: folded into data as base64, winning over data's key of
/// the same name (kubernetes `pkg/apis/core/v1/conversion.go`,
/// Convert_v1_Secret_To_core_Secret).
#[tokio::test]
async fn string_data_is_folded_into_data() {
    let c = cluster().await;
    let s = with(
        secret("Opaque", json!({"user": "b2xk", "password": "b2xk"})),
        "/stringData",
        json!({"user": "blog"}),
    );
    let stored = c.apply(&s, false).await.unwrap();
    assert!(stored.get("stringData").is_none(), "{stored}");
    assert_eq!(stored["data"]["user"], "YmxvZw==");
    assert_eq!(stored["data"]["password"], "b2xk");
    // Applying the same again changes nothing.
    let again = c.apply(&s, false).await.unwrap();
    assert_eq!(again["data"], stored["data"]);
}
