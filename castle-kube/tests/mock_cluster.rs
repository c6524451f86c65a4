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
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "blog", "namespace": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "blog"}}, "template": {"metadata": {"labels": {"app": "blog"}}}}});
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
    c.set_git_tree(vec![ks("infra", &[]), ks("apps", &["infra"])]);
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
