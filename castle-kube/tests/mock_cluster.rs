//! The ordering races of the reference setup, against MockCluster on a paused clock.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use castle_kube::{Bundle, ClusterApi, Condition, Latency, MockCluster, ObjectRef, apply_bundle};
use serde_json::json;

fn lab() -> MockCluster {
    let c = MockCluster::new().with_latency(Latency::lab());
    c.add_node("cp-1");
    c
}

fn manifest(name: &str) -> Bundle {
    Bundle::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/lab/manifests")
            .join(name),
        None,
    )
    .unwrap()
}

const T: Duration = Duration::from_secs(600);

#[tokio::test(start_paused = true)]
async fn custom_resources_wait_for_their_crd_and_the_bundle_orders_them() {
    let c = lab();
    let pool = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "lab", "namespace": "metallb-system"}, "spec": {"addresses": ["192.168.1.240-192.168.1.250"]}});
    let e = c.apply(&pool, false).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("no matches for kind \"IPAddressPool\""),
        "{e}"
    );
    let n = apply_bundle(&c, &manifest("metallb.yaml"), T)
        .await
        .unwrap();
    assert!(n > 5);
    // The CRD is served, but the webhook has no ready endpoint yet: refused, transiently.
    let e = c.apply(&pool, false).await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("connect: connection refused"),
        "{e}"
    );
    let start = tokio::time::Instant::now();
    c.wait(
        &Condition::EndpointsReady {
            namespace: "metallb-system".into(),
            service: "metallb-webhook-service".into(),
        },
        T,
    )
    .await
    .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(20),
        "the webhook serves only once the controller is ready: {:?}",
        start.elapsed()
    );
    c.apply(&pool, false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_selector_wait_survives_pods_that_do_not_exist_yet() {
    let c = lab();
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        false,
    )
    .await
    .unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.wait(
                &Condition::PodsReady {
                    namespace: "web".into(),
                    selector: vec![("app".into(), "blog".into())],
                    min: 2,
                },
                T,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "blog", "namespace": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "blog"}}, "template": {"metadata": {"labels": {"app": "blog"}}, "spec": {"containers": [{"name": "blog", "image": "ghcr.io/lab/blog:1"}]}}}});
    c.apply(&deploy, false).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), "2 pods");
    let e = c
        .wait(
            &Condition::Rollout(ObjectRef::new("apps/v1", "Deployment", Some("web"), "nope")),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("does not exist") && e.to_string().contains("5s"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn flux_fails_fast_with_the_stalled_message_and_reports_suspension() {
    let c = lab();
    apply_bundle(&c, &manifest("flux.yaml"), T).await.unwrap();
    c.apply(&json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "flux-system", "namespace": "flux-system"}, "spec": {"url": "https://x", "interval": "1m", "ref": {"branch": "main"}}}), false).await.unwrap();
    let ks = |name: &str, deps: &[&str]| json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": name, "namespace": "flux-system"}, "spec": {"interval": "1m", "path": "./x", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}, "dependsOn": deps.iter().map(|d| json!({"name": d})).collect::<Vec<_>>()}});
    let mut infra = ks("infra", &[]);
    infra["spec"].as_object_mut().unwrap().remove("dependsOn");
    c.set_git_tree("https://x", vec![infra, ks("apps", &["infra"])]);
    let mut root = ks("flux-system", &[]);
    root["spec"].as_object_mut().unwrap().remove("dependsOn");
    c.apply(&root, false).await.unwrap();
    c.fail_flux(
        "Kustomization",
        "flux-system",
        "apps",
        "kustomize build failed: accumulating resources",
    );
    let e = c.wait(&Condition::AllFluxReady, T).await.unwrap_err();
    assert!(e.to_string().contains("kustomize build failed"), "{e}");
    assert!(!e.is_transient());
    let mut suspended = ks("paused", &[]);
    suspended["spec"]["suspend"] = json!(true);
    c.apply(&suspended, false).await.unwrap();
    let e = c
        .wait(&Condition::FluxReady(ObjectRef::of(&suspended)), T)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("suspended"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn server_side_apply_conflicts_and_an_unreachable_server() {
    let c = lab();
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
        false,
    )
    .await
    .unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "a"}, "data": {"k": "1"}});
    c.apply(&cm, false).await.unwrap();
    c.apply(&cm, false).await.unwrap();
    let e = c.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "missing"}}), false).await.unwrap_err();
    assert!(e.to_string().contains("namespaces \"missing\" not found"));
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"}, "stringData": {"token": "canary-secret-value"}});
    c.apply(&secret, false).await.unwrap();
    assert!(
        !serde_json::to_string(&c.snapshot())
            .unwrap()
            .contains("canary-secret-value")
    );
    c.set_reachable(false);
    let e = c.get(&ObjectRef::of(&cm)).await.unwrap_err();
    assert!(e.is_transient());
}

#[test]
fn a_pinned_bundle_refuses_changed_content() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n";
    let b = Bundle::parse(text, "ns.yaml", None).unwrap();
    assert!(Bundle::parse(text, "ns.yaml", Some(&b.sha256)).is_ok());
    let e = Bundle::parse(text, "ns.yaml", Some(&"0".repeat(64))).unwrap_err();
    assert!(e.to_string().contains("sha256 mismatch"), "{e}");
}

fn kustomization(name: &str, path: &str, deps: &[&str]) -> serde_json::Value {
    json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
           "metadata": {"name": name, "namespace": "flux-system", "annotations": {"castle.mock/path": "clusters/lab"}},
           "spec": {"interval": "1m", "path": path, "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                    "dependsOn": deps.iter().map(|d| json!({"name": d})).collect::<Vec<_>>()}})
}

/// The reference setup's chain, its ingress and the blog behind it.
fn reference_tree() -> Vec<serde_json::Value> {
    let chain = [
        "infra-bridge",
        "infra-namespaces",
        "infra-operators",
        "infra-configs",
        "infra-instances",
        "apps",
    ];
    let mut tree: Vec<_> = chain
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let deps: Vec<&str> = if n == 0 { vec![] } else { vec![chain[n - 1]] };
            kustomization(name, &format!("./infrastructure/{name}"), &deps)
        })
        .collect();
    tree.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "traefik", "annotations": {"castle.mock/path": "infrastructure/infra-namespaces"}}}));
    tree.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "traefik", "namespace": "traefik", "annotations": {"castle.mock/path": "infrastructure/infra-instances"}},
                     "spec": {"type": "LoadBalancer", "selector": {"app": "traefik"}, "ports": [{"port": 443}]}}));
    tree
}

async fn bootstrap_flux(c: &MockCluster) {
    apply_bundle(c, &manifest("flux.yaml"), T).await.unwrap();
    c.apply(&json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "flux-system", "namespace": "flux-system"},
                    "spec": {"url": "https://github.com/lab/castle.git", "interval": "1m", "ref": {"branch": "main"}}}), false).await.unwrap();
    c.apply(&json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "flux-system", "namespace": "flux-system"},
                    "spec": {"interval": "1m", "path": "./clusters/lab", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}}), false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_flux_tree_converges_in_dependency_order_and_then_the_blog_answers() {
    let c = lab();
    c.set_git_tree("https://github.com/lab/castle.git", reference_tree());
    apply_bundle(&c, &manifest("metallb.yaml"), T)
        .await
        .unwrap();
    bootstrap_flux(&c).await;
    let start = tokio::time::Instant::now();
    let e = c
        .probe_http("https://blog.lab.invalid/", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("connection refused"),
        "{e}"
    );
    let detail = c.wait(&Condition::AllFluxReady, T).await.unwrap();
    assert!(detail.starts_with("7 "), "{detail}");
    // Six reconciles one after another, each waiting for the one before it.
    assert!(
        start.elapsed() >= Duration::from_secs(6 * 6),
        "{:?}",
        start.elapsed()
    );
    let svc = Condition::LoadBalancerIp {
        namespace: "traefik".into(),
        name: "traefik".into(),
    };
    let e = c.wait(&svc, Duration::from_secs(30)).await.unwrap_err();
    assert!(
        e.to_string().contains("no LoadBalancer ingress IP"),
        "no pool yet: {e}"
    );
    c.wait(
        &Condition::EndpointsReady {
            namespace: "metallb-system".into(),
            service: "metallb-webhook-service".into(),
        },
        T,
    )
    .await
    .unwrap();
    c.apply(&json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "castle", "namespace": "metallb-system"}, "spec": {"addresses": ["192.168.1.240-192.168.1.250"]}}), false).await.unwrap();
    c.apply(&json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "castle", "namespace": "metallb-system"}, "spec": {"ipAddressPools": ["castle"]}}), false).await.unwrap();
    assert_eq!(c.wait(&svc, T).await.unwrap(), "192.168.1.240");
    assert_eq!(
        c.probe_http("https://blog.lab.invalid/", Duration::from_secs(10))
            .await
            .unwrap(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn two_managers_on_one_field_conflict_unless_forced() {
    let c = lab();
    c.set_git_tree("https://github.com/lab/castle.git", vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": "web"}, "data": {"title": "from git"}}),
    ]);
    bootstrap_flux(&c).await;
    c.wait(&Condition::AllFluxReady, T).await.unwrap();
    let mine = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": "web"}, "data": {"title": "from castle"}});
    let e = c.apply(&mine, false).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("conflict with \"kustomize-controller\": .data.title")
            && !e.is_transient(),
        "{e}"
    );
    // Agreeing on the value is no conflict; taking the field over needs force.
    let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": "web"}, "data": {"title": "from git"}});
    c.apply(&same, false).await.unwrap();
    let v = c.apply(&mine, true).await.unwrap();
    assert_eq!(v["data"]["title"], "from castle");
}

#[tokio::test(start_paused = true)]
async fn a_secret_value_never_shows_in_errors_debug_or_the_snapshot() {
    let c = lab();
    let secret = |v: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"}, "stringData": {"token": v}});
    c.set_git_tree(
        "https://github.com/lab/castle.git",
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
            secret("canary-secret-value"),
        ],
    );
    bootstrap_flux(&c).await;
    c.wait(&Condition::AllFluxReady, T).await.unwrap();
    // Flux owns the field: the conflict names the path, never either value.
    let e = c
        .apply(&secret("canary-other-value"), false)
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains(".stringData.token") && !shown.contains("canary"),
        "{shown}"
    );
    let bundle = Bundle::parse(
        &serde_json::to_string(&secret("canary-secret-value")).unwrap(),
        "s.yaml",
        None,
    )
    .unwrap();
    assert!(!format!("{bundle:?} {c:?}").contains("canary"));
    assert!(!c.snapshot().to_string().contains("canary"));
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_restores_objects_owners_and_pending_timers() {
    let c = lab();
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        false,
    )
    .await
    .unwrap();
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "blog", "namespace": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "blog"}}, "template": {"metadata": {"labels": {"app": "blog"}}, "spec": {"containers": [{"name": "blog", "image": "ghcr.io/lab/blog:1"}]}}}});
    c.apply(&deploy, false).await.unwrap();
    let snap = c.snapshot();
    let other = MockCluster::new().with_latency(Latency::lab());
    other.restore(&snap).unwrap();
    let rollout = Condition::Rollout(ObjectRef::of(&deploy));
    let e = other
        .wait(&rollout, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("Available: 0/1"),
        "the rollout was still pending: {e}"
    );
    other.wait(&rollout, T).await.unwrap();
    assert!(other.restore(&json!({"nothing": true})).is_err());
}

#[tokio::test(start_paused = true)]
async fn delete_takes_the_pods_and_faults_are_injected_on_request() {
    let c = lab().with_faults(castle_kube::Faults::transient(7, 1.0));
    let e = c
        .get(&ObjectRef::new("v1", "Namespace", None, "x"))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    c.clear_faults();
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        false,
    )
    .await
    .unwrap();
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "blog", "namespace": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "blog"}}, "template": {"metadata": {"labels": {"app": "blog"}}, "spec": {"containers": [{"name": "blog", "image": "ghcr.io/lab/blog:1"}]}}}});
    c.apply(&deploy, false).await.unwrap();
    assert_eq!(c.list("v1", "Pod", Some("web")).await.unwrap().len(), 2);
    c.delete(
        &ObjectRef::of(&deploy),
        castle_kube::Propagation::Foreground,
    )
    .await
    .unwrap();
    assert!(c.list("v1", "Pod", Some("web")).await.unwrap().is_empty());
    c.delete(
        &ObjectRef::of(&deploy),
        castle_kube::Propagation::Background,
    )
    .await
    .unwrap();
    c.fail_permanently("apply:ConfigMap", "admission denied by policy");
    let e = c.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "web"}}), false).await.unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("admission denied"),
        "{e}"
    );
    c.set_reachable(false);
    let started = tokio::time::Instant::now();
    let e = c
        .delete(
            &ObjectRef::of(&deploy),
            castle_kube::Propagation::Background,
        )
        .await
        .unwrap_err();
    assert!(
        e.is_transient() && started.elapsed() < Duration::from_secs(1),
        "{e}"
    );
}
