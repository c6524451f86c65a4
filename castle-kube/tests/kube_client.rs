//! The kube-rs client against a fake API server: the requests it sends and how its
//! watches end.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use castle_kube::{Bundle, ClusterApi, Condition, Error, KubeClient, ObjectRef, Propagation};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer) -> KubeClient {
    let config = kube::Config::new(server.uri().parse().unwrap());
    KubeClient::with_client(kube::Client::try_from(config).unwrap(), &server.uri())
}

async fn serve_resources(server: &MockServer, group_version: &str, resources: Value) {
    let p = if group_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group_version}")
    };
    Mock::given(method("GET"))
        .and(path(p))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})))
        .expect(1)
        .mount(server)
        .await;
}

fn pool() -> Value {
    json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "castle", "namespace": "metallb-system"}, "spec": {"addresses": ["192.168.1.240-192.168.1.250"]}})
}

const POOL_PATH: &str = "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/castle";

async fn serve_pools(server: &MockServer) {
    serve_resources(
        server,
        "metallb.io/v1beta1",
        json!([{"name": "ipaddresspools", "singularName": "ipaddresspool", "namespaced": true, "kind": "IPAddressPool", "verbs": ["get", "list", "watch", "patch", "delete"]}]),
    )
    .await;
}

#[tokio::test]
async fn server_side_apply_is_an_apply_patch_by_castle_forced_only_when_asked() {
    let server = MockServer::start().await;
    serve_pools(&server).await;
    Mock::given(method("PATCH"))
        .and(path(POOL_PATH))
        .and(header("content-type", "application/apply-patch+yaml"))
        .and(query_param("fieldManager", "castle"))
        .and(query_param_is_missing("force"))
        .and(body_json(pool()))
        .respond_with(ResponseTemplate::new(200).set_body_json(pool()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(POOL_PATH))
        .and(header("content-type", "application/apply-patch+yaml"))
        .and(query_param("fieldManager", "castle"))
        .and(query_param("force", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pool()))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let applied = c.apply(&pool(), false).await.unwrap();
    assert_eq!(applied["spec"], pool()["spec"]);
    c.apply(&pool(), true).await.unwrap();
}

#[tokio::test]
async fn api_errors_keep_status_and_reason_and_classify_themselves() {
    let server = MockServer::start().await;
    serve_pools(&server).await;
    Mock::given(method("PATCH"))
        .and(path(POOL_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "reason": "InternalError",
            "message": "Internal error occurred: failed calling webhook \"ipaddresspoolvalidationwebhook.metallb.io\": failed to call webhook: Post \"https://metallb-webhook-service.metallb-system.svc:443/validate-metallb-io-v1beta1-ipaddresspool?timeout=10s\": dial tcp 10.96.0.42:443: connect: connection refused"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/taken"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "Apply failed with 1 conflict: conflict with \"helm\": .spec.addresses"})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = c.apply(&pool(), false).await.unwrap_err();
    assert!(e.is_transient(), "a webhook not serving yet passes: {e}");
    assert!(
        e.to_string().contains("ipaddresspoolvalidationwebhook"),
        "{e}"
    );
    let mut taken = pool();
    taken["metadata"]["name"] = json!("taken");
    let e = c.apply(&taken, false).await.unwrap_err();
    assert!(
        matches!(e, Error::Api { status: 409, .. }) && !e.is_transient(),
        "{e}"
    );
}

#[tokio::test]
async fn an_unserved_kind_is_no_match_and_delete_sends_the_propagation() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/apis/metallb.io/v1beta1"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "the server could not find the requested resource"})))
        .expect(1)
        .mount(&server)
        .await;
    serve_resources(
        &server,
        "apps/v1",
        json!([{"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get", "list", "watch", "patch", "delete"]}]),
    )
    .await;
    Mock::given(method("DELETE"))
        .and(path("/apis/apps/v1/namespaces/web/deployments/blog"))
        .and(body_json(json!({"propagationPolicy": "Foreground"})))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "deployments.apps \"blog\" not found"})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = c.apply(&pool(), false).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("no matches for kind \"IPAddressPool\" in version \"metallb.io/v1beta1\""),
        "{e}"
    );
    // Already gone is what a delete wants.
    c.delete(
        &ObjectRef::new("apps/v1", "Deployment", Some("web"), "blog"),
        Propagation::Foreground,
    )
    .await
    .unwrap();
}

/// A Deployment as the deployment controller writes it, `available` of one
/// replica available (kubernetes `pkg/controller/deployment/util/deployment_util.go`).
fn deployment(rv: &str, available: u32) -> Value {
    let (status, reason, progress) = if available == 1 {
        ("True", "MinimumReplicasAvailable", "NewReplicaSetAvailable")
    } else {
        ("False", "MinimumReplicasUnavailable", "ReplicaSetUpdated")
    };
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "controller", "namespace": "metallb-system", "generation": 1, "resourceVersion": rv},
           "spec": {"replicas": 1, "progressDeadlineSeconds": 600},
           "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": available, "availableReplicas": available,
                      "conditions": [{"type": "Available", "status": status, "reason": reason},
                                     {"type": "Progressing", "status": "True", "reason": progress}]}})
}

fn events(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| format!("{}\n", json!({"type": "MODIFIED", "object": o})))
        .collect()
}

const DEPLOY_PATH: &str = "/apis/apps/v1/namespaces/metallb-system/deployments";

/// Discovery, then the first list at resourceVersion 1 with the Deployment not ready.
async fn serve_controller_list(server: &MockServer) {
    serve_resources(
        server,
        "apps/v1",
        json!([{"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get", "list", "watch"]}]),
    )
    .await;
    Mock::given(method("GET"))
        .and(path(DEPLOY_PATH))
        .and(query_param_is_missing("watch"))
        .and(query_param("fieldSelector", "metadata.name=controller"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "1"},
            "items": [deployment("1", 0)]})))
        .expect(1)
        .mount(server)
        .await;
}

fn rollout() -> Condition {
    Condition::Rollout(ObjectRef::new(
        "apps/v1",
        "Deployment",
        Some("metallb-system"),
        "controller",
    ))
}

#[tokio::test]
async fn a_rollout_wait_finishes_on_the_watch_event_and_resumes_after_a_dropped_watch() {
    let server = MockServer::start().await;
    serve_controller_list(&server).await;
    // The first watch delivers a step that is not enough, then the connection ends.
    Mock::given(method("GET"))
        .and(path(DEPLOY_PATH))
        .and(query_param("watch", "true"))
        .and(query_param("resourceVersion", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(events(&[deployment("2", 0)])))
        .expect(1)
        .mount(&server)
        .await;
    // The watcher comes back from where it stopped, and the rollout completes.
    Mock::given(method("GET"))
        .and(path(DEPLOY_PATH))
        .and(query_param("watch", "true"))
        .and(query_param("resourceVersion", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_string(events(&[deployment("3", 1)])))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let detail = c.wait(&rollout(), Duration::from_secs(20)).await.unwrap();
    assert_eq!(detail, "Deployment is available. Replicas: 1");
}

#[tokio::test]
async fn a_wait_that_runs_out_says_what_was_missing() {
    let server = MockServer::start().await;
    serve_controller_list(&server).await;
    Mock::given(method("GET"))
        .and(path(DEPLOY_PATH))
        .and(query_param("watch", "true"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("")
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let e = c
        .wait(&rollout(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("deployment metallb-system/controller: Available: 0/1"),
        "{e}"
    );
    assert!(matches!(e, Error::Timeout { .. }));
}

#[tokio::test]
async fn an_api_server_that_is_not_there_is_a_transient_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let c = KubeClient::with_client(kube::Client::try_from(config).unwrap(), "dead");
    let e = c
        .get(&ObjectRef::new("v1", "Namespace", None, "default"))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    let e = c
        .probe_http(&format!("http://{addr}/"), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
}

#[tokio::test]
async fn probe_http_reports_the_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let status = c
        .probe_http(&format!("{}/", server.uri()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 503);
}

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://192.168.1.210:6443
users:
- name: admin@lab
  user:
    token: canary-token-value
contexts:
- name: admin@lab
  context:
    cluster: lab
    user: admin@lab
current-context: admin@lab
";

#[test]
fn a_kubeconfig_is_checked_up_front_and_never_printed() {
    let c = KubeClient::from_kubeconfig(&SecretString::from(KUBECONFIG)).unwrap();
    let shown = format!("{c:?}");
    assert!(shown.contains("https://192.168.1.210:6443") && !shown.contains("canary-token-value"));
    let no_server = KUBECONFIG.replace("    server: https://192.168.1.210:6443\n", "");
    let e = KubeClient::from_kubeconfig(&SecretString::from(no_server)).unwrap_err();
    assert!(e.to_string().contains("has no server"), "{e}");
    let e = KubeClient::from_kubeconfig(&SecretString::from("token: canary-token-value: ["))
        .unwrap_err();
    assert!(!e.to_string().contains("canary-token-value"), "{e}");
}

const MANIFEST: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: memberlist\n  namespace: metallb-system\nstringData:\n  secretkey: canary-secret-value\n";

#[tokio::test]
async fn a_url_bundle_is_downloaded_once_verified_and_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/metallb-native.yaml"))
        .respond_with(ResponseTemplate::new(200).set_body_string(MANIFEST))
        .expect(2)
        .mount(&server)
        .await;
    let cache = tempfile::tempdir().unwrap();
    let url = format!("{}/metallb-native.yaml", server.uri());
    let pin = Bundle::parse(MANIFEST, "x", None).unwrap().sha256;
    let b = Bundle::fetch(&url, &pin, cache.path()).await.unwrap();
    assert_eq!(b.objects.len(), 2);
    // The second time it comes from the cache: the server sees one request for it.
    Bundle::fetch(&url, &pin, cache.path()).await.unwrap();
    assert!(!format!("{b:?}").contains("canary-secret-value"));
    let wrong = "0".repeat(64);
    let e = Bundle::fetch(&url, &wrong, cache.path()).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("expected {wrong}")) && text.contains(&format!("actual {pin}")),
        "{text}"
    );
    assert!(!cache.path().join(format!("{wrong}.yaml")).exists());
}
