//! Issue 14: where MockCluster answered differently from a real kube-apiserver, each
//! defect with the test that failed before. Paused clock: modelled time is exact.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use castle_kube::{
    Bundle, ClusterApi, Condition, Error, Latency, MockCluster, ObjectRef, Propagation,
    apply_bundle, apply_object,
};
use serde_json::{Value, json};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(600);

fn lab() -> MockCluster {
    let c = MockCluster::new().with_latency(Latency::lab());
    c.add_node("cp-1");
    c
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// Defect 2, in the mock: RBAC refusing the list/watch behind a wait ends the wait at
/// once with the API's message (kubernetes
/// `staging/src/k8s.io/apiserver/pkg/endpoints/filters/authorization.go`).
#[tokio::test(start_paused = true)]
async fn a_forbidden_watch_ends_the_wait_at_once() {
    let c = lab();
    c.forbid(
        "watch",
        "deployments.apps is forbidden: User \"castle\" cannot watch resource \"deployments\" in API group \"apps\"",
    );
    let started = Instant::now();
    let e = c
        .wait(
            &Condition::Rollout(ObjectRef::new("apps/v1", "Deployment", Some("web"), "blog")),
            T,
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.status(), Some(403));
    assert!(!e.is_transient());
    assert!(e.to_string().contains("cannot watch resource"), "{e}");
}

/// Defect 4: deletion takes time. kube-apiserver's registry (kubernetes
/// `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`) only sets a
/// deletionTimestamp on an object with finalizers; an apply meanwhile succeeds and
/// returns it, and the object vanishes once the finalizers are done. apply_object
/// waits the deletion out and applies afresh.
#[tokio::test(start_paused = true)]
async fn an_apply_onto_an_object_being_deleted_waits_for_the_deletion_then_applies() {
    let c = lab();
    c.apply(&namespace("web", json!({})), false).await.unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "web", "finalizers": ["lab.castle/cleanup"]}, "data": {"a": "1"}});
    let r = ObjectRef::of(&cm);
    c.apply(&cm, false).await.unwrap();
    c.delete(&r, Propagation::Background).await.unwrap();
    let trap = c.apply(&cm, false).await.unwrap();
    assert!(
        trap["metadata"]["deletionTimestamp"].is_string(),
        "the server answers an apply onto a deleting object with Ok: {trap}"
    );
    let started = Instant::now();
    let applied = apply_object(&c, "castle", &cm, T).await.unwrap();
    let waited = started.elapsed();
    assert!(
        applied["metadata"].get("deletionTimestamp").is_none(),
        "{applied}"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "waited {waited:?} for the finalizer (modelled 2 s)"
    );
    let now = c.get(&r).await.unwrap().unwrap();
    assert!(now["metadata"].get("deletionTimestamp").is_none(), "{now}");
}

/// Defect 4, namespaces: a Terminating namespace (kubernetes
/// `pkg/controller/namespace/deletion`) refuses new content (403 from
/// `plugin/namespace/lifecycle/admission.go`) until its content is gone; a bundle
/// applied meanwhile waits for it and lands in the new namespace.
#[tokio::test(start_paused = true)]
async fn a_bundle_applied_into_a_terminating_namespace_waits_for_it_to_go() {
    let c = lab();
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: web\ndata:\n  a: \"1\"\n";
    let bundle = Bundle::parse(text, "web.yaml", None).unwrap();
    apply_bundle(&c, &bundle, T).await.unwrap();
    c.delete(
        &ObjectRef::new("v1", "Namespace", None, "web"),
        Propagation::Background,
    )
    .await
    .unwrap();
    let ns = c
        .get(&ObjectRef::new("v1", "Namespace", None, "web"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    let started = Instant::now();
    apply_bundle(&c, &bundle, T).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "namespaces terminate for seconds: {waited:?}"
    );
    let ns = c
        .get(&ObjectRef::new("v1", "Namespace", None, "web"))
        .await
        .unwrap()
        .unwrap();
    assert!(ns["metadata"].get("deletionTimestamp").is_none(), "{ns}");
    let cm = c
        .get(&ObjectRef::new("v1", "ConfigMap", Some("web"), "settings"))
        .await
        .unwrap();
    assert!(cm.is_some(), "the content came back with the namespace");
}

/// Defect 5: server-side apply removes a field its manager stops applying
/// (sigs.k8s.io/structured-merge-diff `merge/update.go`), so the ESO or Flux bundle's
/// Namespace, applied by the same manager as Castle's labelled one, removed the label.
/// Each bundle has its own manager now, and Castle's label stays.
#[tokio::test(start_paused = true)]
async fn each_bundle_applies_as_its_own_manager_so_castle_labels_stay() {
    let c = lab();
    let label = json!({"app.kubernetes.io/managed-by": "castle"});
    let label_of = |v: &Value| {
        v.pointer("/metadata/labels/app.kubernetes.io~1managed-by")
            .cloned()
    };
    // The server's behaviour: one manager dropping its own field removes it.
    c.apply(&namespace("external-secrets", label.clone()), false)
        .await
        .unwrap();
    let same = c
        .apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "external-secrets"}}), false)
        .await
        .unwrap();
    assert_eq!(label_of(&same), None, "{same}");
    // Castle's steps: castle's Namespace, then the Flux bundle as `castle-flux`.
    c.apply(&namespace("flux-system", label.clone()), false)
        .await
        .unwrap();
    let flux = Bundle::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/manifests/flux.yaml"),
        None,
    )
    .unwrap()
    .with_field_manager("castle-flux");
    apply_bundle(&c, &flux, T).await.unwrap();
    let ns = c
        .get(&ObjectRef::new("v1", "Namespace", None, "flux-system"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(label_of(&ns), Some(json!("castle")), "{ns}");
    // A second run changes nothing.
    apply_bundle(&c, &flux, T).await.unwrap();
    let again = c
        .get(&ObjectRef::new("v1", "Namespace", None, "flux-system"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(label_of(&again), Some(json!("castle")));
}

/// The real server serves a new CRD's kind in about 0.1 s (measured against
/// kube-apiserver v1.36); the lab model had 4 s.
#[tokio::test(start_paused = true)]
async fn a_crd_is_served_in_about_a_tenth_of_a_second() {
    let c = lab();
    let flux = Bundle::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/manifests/flux.yaml"),
        None,
    )
    .unwrap();
    let crd = flux
        .objects
        .iter()
        .find(|o| o["kind"] == "CustomResourceDefinition")
        .unwrap();
    c.apply(crd, false).await.unwrap();
    let started = Instant::now();
    c.wait(
        &Condition::CrdEstablished(crd["metadata"]["name"].as_str().unwrap().into()),
        T,
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() <= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

/// Defect 6: a Kustomization the API server refuses is Ready=False,
/// ReconciliationFailed (kustomize-controller `internal/controller/kustomization_controller.go`)
/// with fluxcd/pkg's `Kind/ns/name dry-run failed (Invalid): ...`; the wait ends at
/// once with that message, where it waited for its whole budget before.
#[tokio::test(start_paused = true)]
async fn a_refused_flux_apply_ends_the_wait_with_the_objects_message() {
    let c = lab();
    apply_bundle(
        &c,
        &Bundle::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/manifests/flux.yaml"),
            None,
        )
        .unwrap(),
        T,
    )
    .await
    .unwrap();
    c.set_git_tree(
        "https://github.com/lab/castle.git",
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "traefik"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "traefik", "namespace": "traefik"},
                   "spec": {"type": "LoadBalancer", "ports": [{"name": "web", "port": 80}, {"name": "web", "port": 443}]}}),
        ],
    );
    c.apply(&json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "flux-system", "namespace": "flux-system"},
                    "spec": {"url": "https://github.com/lab/castle.git", "interval": "1m", "ref": {"branch": "main"}}}), false).await.unwrap();
    c.apply(&json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "flux-system", "namespace": "flux-system"},
                    "spec": {"interval": "1m", "path": "./clusters/lab", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}}), false).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let report = move |m: &str| log.lock().unwrap().push(m.to_string());
    let started = Instant::now();
    let e = c
        .wait_reporting(
            &Condition::AllFluxReady,
            Duration::from_secs(25 * 60),
            &report,
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(e, Error::Failed { .. }) && !e.is_transient(),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("Kustomization flux-system/flux-system")
            && text.contains("Service/traefik/traefik dry-run failed (Invalid): Service \"traefik\" is invalid: spec.ports[1].name: Duplicate value: \"web\""),
        "{text}"
    );
    assert!(
        !seen.lock().unwrap().is_empty(),
        "progress was reported while waiting"
    );
}

/// Secret values never reach an error: the typed patch's refusal of a Secret names the
/// field and the byte offset, a conflict names the path (never a value).
#[tokio::test(start_paused = true)]
async fn a_refused_secret_never_shows_its_value() {
    let c = lab();
    c.apply(&namespace("web", json!({})), false).await.unwrap();
    let canary = "canary-secret-value!";
    for data in [json!({"password": canary}), json!({"password": 12345})] {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "web"}, "data": data});
        let e = c.apply(&s, false).await.unwrap_err();
        assert_eq!(e.status(), Some(500), "{e}");
        assert!(!e.is_transient());
        let text = format!("{e} {e:?}");
        assert!(!text.contains(canary) && !text.contains("12345"), "{text}");
    }
    let ok = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "web"}, "stringData": {"password": canary}});
    c.apply_as("helm", &ok, false).await.unwrap();
    let other = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "web"}, "stringData": {"password": "another-canary"}});
    let e = c.apply(&other, false).await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains(".stringData.password"), "{text}");
    assert!(
        !text.contains(canary) && !text.contains("another-canary"),
        "{text}"
    );
}

/// The lab's manifests are valid Kubernetes: every object passes the stricter mock
/// (the lab's Git tree is checked by the lab rebirth, where a refused object fails
/// the gitops step).
#[tokio::test(start_paused = true)]
async fn the_lab_manifests_are_valid_kubernetes() {
    let c = lab();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/manifests");
    let mut applied = 0;
    for name in ["eso.yaml", "metallb.yaml", "longhorn.yaml", "flux.yaml"] {
        let bundle = Bundle::load(&dir.join(name), None)
            .unwrap()
            .with_field_manager(&format!("castle-{}", name.trim_end_matches(".yaml")));
        applied += apply_bundle(&c, &bundle, T)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(applied > 30, "{applied} objects");
}

/// Issue 17, item 8: CoreDNS that forwards to `/etc/resolv.conf` with the `loop`
/// plugin, in pods on the cluster's own resolver, crash-loops on a real cluster.
/// kubelet writes a `ClusterFirst` pod's resolv.conf with the cluster DNS Service
/// (kubernetes `pkg/kubelet/network/dns/dns.go`, `getPodDNSType`), which is CoreDNS
/// itself; the loop plugin's start-up probe comes back and CoreDNS halts (coredns
/// `plugin/loop/README.md`, `loop.go`). With `dnsPolicy: Default` (the node's
/// resolver, as Talos's `k8stemplates/coredns.go` deploys it) the same Corefile runs.
#[tokio::test(start_paused = true)]
async fn coredns_on_its_own_resolver_with_the_loop_plugin_never_becomes_ready() {
    let corefile = ".:53 {\n    errors\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n}\n";
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": {"Corefile": corefile}});
    let deployment = |dns_policy: Option<&str>| {
        let labels = json!({"k8s-app": "kube-dns"});
        let mut pod = json!({"serviceAccountName": "coredns",
            "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.14.2", "args": ["-conf", "/etc/coredns/Corefile"],
                "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}]}],
            "volumes": [{"name": "config-volume", "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}]});
        if let Some(p) = dns_policy {
            pod["dnsPolicy"] = json!(p);
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": "kube-system"},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}}})
    };
    let target = ObjectRef::new("apps/v1", "Deployment", Some("kube-system"), "coredns");

    let c = lab();
    c.apply(&config, false).await.unwrap();
    c.apply(&deployment(None), false).await.unwrap();
    let e = c
        .wait(
            &Condition::Rollout(target.clone()),
            Duration::from_secs(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("Available: 0/2"), "{e}");
    let pod = c
        .get(&ObjectRef::new(
            "v1",
            "Pod",
            Some("kube-system"),
            "coredns-0",
        ))
        .await
        .unwrap()
        .unwrap();
    let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "CrashLoopBackOff", "{pod}");
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("plugin/loop: Loop (127.0.0.1:53 -> :53) detected for zone \".\""),
        "{pod}"
    );

    // After progressDeadlineSeconds (600 s by default) without progress the
    // deployment controller marks it ProgressDeadlineExceeded (kubernetes
    // `pkg/controller/deployment/progress.go`), which kstatus calls Failed: the
    // wait ends there, naming the Deployment, instead of running out.
    let started = Instant::now();
    let e = c
        .wait(
            &Condition::Rollout(target.clone()),
            Duration::from_secs(3600),
        )
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("Deployment kube-system/coredns failed: Progress deadline exceeded: ReplicaSet \"coredns-")
            && shown.ends_with("\" has timed out progressing."),
        "{shown}"
    );
    assert!(matches!(e, Error::Failed { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(601),
        "{:?}",
        started.elapsed()
    );

    // The fix is the pod's DNS policy, not the Corefile: a new generation rolls out.
    c.apply(&deployment(Some("Default")), false).await.unwrap();
    c.wait(&Condition::Rollout(target), T).await.unwrap();
}

/// TokenRequest as kube-apiserver answers it: a token only for an existing service
/// account (404 otherwise), never for less than ten minutes (kubernetes
/// `pkg/apis/authentication/validation`), an ES256 JWS whose claims are those of
/// `pkg/serviceaccount/claims.go`, signed with the service-account key.
#[tokio::test]
async fn token_requests_are_signed_service_account_tokens() {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let c = lab();
    c.set_service_account_signer(
        &secrecy::SecretString::from(key.serialize_pem()),
        "https://192.168.1.210:6443",
    )
    .unwrap();
    c.apply(&namespace("external-secrets", json!({})), false)
        .await
        .unwrap();
    let audiences = vec!["vault".to_string()];
    let missing = c
        .create_token("external-secrets", "external-secrets", &audiences, 600)
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");
    assert!(
        missing
            .to_string()
            .contains("serviceaccounts \"external-secrets\" not found")
    );
    c.apply(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "external-secrets", "namespace": "external-secrets"}}), false)
        .await
        .unwrap();
    let short = c
        .create_token("external-secrets", "external-secrets", &audiences, 60)
        .await
        .unwrap_err();
    assert_eq!(short.status(), Some(422), "{short}");
    assert!(
        short
            .to_string()
            .contains("may not specify a duration less than 10 minutes")
    );

    let token = c
        .create_token("external-secrets", "external-secrets", &audiences, 600)
        .await
        .unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&token).to_string();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&engine.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string(), "{header}");
    assert_eq!(claims["iss"], "https://192.168.1.210:6443");
    assert_eq!(
        claims["sub"],
        "system:serviceaccount:external-secrets:external-secrets"
    );
    assert_eq!(claims["aud"], json!(["vault"]));
    assert_eq!(
        claims["kubernetes.io"]["serviceaccount"]["name"],
        "external-secrets"
    );
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(exp - claims["iat"].as_u64().unwrap(), 600);
    // The signature verifies with the public key Vault is given.
    let point = key.public_key_raw().to_vec();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &engine.decode(parts[2]).unwrap(),
        )
        .unwrap();
}
