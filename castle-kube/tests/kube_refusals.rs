//! How the client reads refusals, against in-process servers that answer exactly as
//! kube-apiserver does: a 500 with an empty reason for a field of the wrong type, a 403
//! on the list behind a watch, and a TLS server whose certificate the kubeconfig's CA
//! did not sign. Each must be final at once, and say what is wrong.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use castle_kube::{ClusterApi, Condition, Error, KubeClient, ObjectRef};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
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
        .mount(server)
        .await;
}

/// A Status as kube-apiserver writes it; `reason` empty is what the apply handler
/// sends for typed-patch failures (the StatusError it builds carries no reason).
fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}))
}

/// Source: kubernetes `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`
/// (applyPatcher: "failed to create typed patch object (%v/%v; %v)") and
/// sigs.k8s.io/structured-merge-diff `typed/validate.go` ("expected numeric (int or
/// float), got string"). Before the fix every 500 was transient: five retries over ten
/// minutes for a typo.
#[tokio::test]
async fn a_field_of_the_wrong_type_is_a_permanent_500_naming_object_and_field() {
    let server = MockServer::start().await;
    serve_resources(
        &server,
        "apps/v1",
        json!([{"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get", "list", "watch", "patch"]}]),
    )
    .await;
    serve_resources(
        &server,
        "v1",
        json!([{"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": ["get", "list", "watch", "patch"]}]),
    )
    .await;
    Mock::given(method("PATCH"))
        .and(path("/apis/apps/v1/namespaces/web/deployments/blog"))
        .respond_with(status(500, "", "failed to create typed patch object (web/blog; apps/v1, Kind=Deployment): .spec.replicas: expected numeric (int or float), got string"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/v1/namespaces/web/secrets/db"))
        .respond_with(status(500, "", "illegal base64 data at input byte 4"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "blog", "namespace": "web"}, "spec": {"replicas": "two"}});
    let e = c.apply(&deployment, false).await.unwrap_err();
    assert!(!e.is_transient(), "a typo does not heal: {e}");
    assert_eq!(e.status(), Some(500));
    let text = e.to_string();
    assert!(
        text.contains("Deployment web/blog") && text.contains(".spec.replicas"),
        "{text}"
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "web"}, "data": {"password": "not base64!"}});
    let e = c.apply(&secret, false).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("Secret web/db"), "{e}");
    assert!(!e.to_string().contains("not base64!"), "{e}");
}

/// Source: kubernetes `staging/src/k8s.io/apiserver/pkg/endpoints/filters/authorization.go`
/// (a denied list/watch is 403 Forbidden with the RBAC message); kube-runtime
/// `watcher.rs` surfaces it as InitialListFailed and would back off and retry forever.
#[tokio::test]
async fn a_forbidden_watch_fails_the_wait_at_once_with_the_api_message() {
    let forbidden = "deployments.apps \"controller\" is forbidden: User \"system:serviceaccount:castle:castle\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"metallb-system\"";
    for (code, reason, message) in [
        (403, "Forbidden", forbidden),
        (401, "Unauthorized", "Unauthorized"),
    ] {
        let server = MockServer::start().await;
        serve_resources(
            &server,
            "apps/v1",
            json!([{"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get", "list", "watch", "patch"]}]),
        )
        .await;
        Mock::given(method("GET"))
            .and(path("/apis/apps/v1/namespaces/metallb-system/deployments"))
            .respond_with(status(code, reason, message))
            .mount(&server)
            .await;
        let c = client(&server);
        let target = ObjectRef::new(
            "apps/v1",
            "Deployment",
            Some("metallb-system"),
            "controller",
        );
        let started = std::time::Instant::now();
        let e = tokio::time::timeout(
            Duration::from_secs(20),
            c.wait(&Condition::Rollout(target), Duration::from_secs(600)),
        )
        .await
        .expect("a refusal must end the wait, not its ten-minute budget")
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(e.status(), Some(code), "{e}");
        assert!(!e.is_transient());
        assert!(e.to_string().contains(message), "{e}");
    }
}

/// A TLS server with its own self-signed certificate, answering nothing.
async fn tls_server(
    client_auth: Option<rcgen::CertifiedKey<rcgen::KeyPair>>,
) -> (std::net::SocketAddr, rcgen::CertifiedKey<rcgen::KeyPair>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let own = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(own.signing_key.serialize_der().into());
    let builder = rustls::ServerConfig::builder();
    let builder = match &client_auth {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(vec![own.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .await;
                }
            });
        }
    });
    (addr, own)
}

/// A self-signed CA with its own name (rcgen's default name is the same for all).
fn ca(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&signing_key).unwrap();
    rcgen::CertifiedKey { cert, signing_key }
}

fn b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

fn kubeconfig(addr: std::net::SocketAddr, ca_pem: &str, user: &str) -> SecretString {
    SecretString::from(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\ncurrent-context: t\n",
        b64(ca_pem)
    ))
}

/// Source: rustls `src/error.rs` (`InvalidCertificate(UnknownIssuer)` when no trust
/// anchor signed the chain; `AlertReceived` for the peer's refusal, RFC 8446 §6.2).
/// Before the fix both read "client error (Connect)", transient, like a closed port.
#[tokio::test]
async fn a_server_certificate_the_kubeconfig_ca_did_not_sign_is_a_permanent_tls_error() {
    let (addr, _own) = tls_server(None).await;
    // An unknown CA, and a CA of the same name with another key (the kubeconfig of a
    // previous incarnation of the cluster): UnknownIssuer and BadSignature.
    for (stranger, cause) in [
        (ca("someone else"), "UnknownIssuer"),
        (
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap(),
            "BadSignature",
        ),
    ] {
        let c = KubeClient::from_kubeconfig(&kubeconfig(
            addr,
            &stranger.cert.pem(),
            "    token: canary-token-value\n",
        ))
        .unwrap();
        let e = c
            .get(&ObjectRef::new("v1", "Namespace", None, "default"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Tls { .. }), "{e}");
        assert!(!e.is_transient(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("not signed by the kubeconfig's certificate-authority-data")
                && text.contains(cause),
            "{text}"
        );
        assert!(!text.contains("canary-token-value"));
    }
}

#[tokio::test]
async fn a_client_certificate_the_server_refuses_is_a_permanent_tls_error() {
    let (addr, own) = tls_server(Some(ca("kubernetes client CA"))).await;
    let ours = ca("another client CA");
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&ours.cert.pem()),
        b64(&ours.signing_key.serialize_pem())
    );
    let c = KubeClient::from_kubeconfig(&kubeconfig(addr, &own.cert.pem(), &user)).unwrap();
    let e = c
        .get(&ObjectRef::new("v1", "Namespace", None, "default"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    assert!(!e.is_transient(), "{e}");
    assert!(
        e.to_string()
            .contains("refused the kubeconfig's client certificate"),
        "{e}"
    );
}

#[tokio::test]
async fn a_refused_connection_stays_transient_and_keeps_its_cause() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let c = KubeClient::with_client(kube::Client::try_from(config).unwrap(), "dead");
    let e = c
        .get(&ObjectRef::new("v1", "Namespace", None, "default"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Unreachable(_)) && e.is_transient(),
        "{e}"
    );
    assert!(
        e.to_string().to_lowercase().contains("connection refused"),
        "the cause, not only \"client error (Connect)\": {e}"
    );
    let e = c
        .probe_http(&format!("http://{addr}/"), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().to_lowercase().contains("connection refused"),
        "{e}"
    );
}

/// Issue 14, defect 4, through the real client: kube-apiserver answers an apply onto
/// an object with finalizers that is being deleted with 200 and the object, its
/// `deletionTimestamp` set (kubernetes
/// `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`).
/// apply_object watches it go (a list that no longer holds it), then applies afresh.
#[tokio::test]
async fn apply_object_waits_out_a_deletion_through_the_watch_then_applies_again() {
    use wiremock::matchers::{query_param, query_param_is_missing};
    let server = MockServer::start().await;
    serve_resources(
        &server,
        "v1",
        json!([{"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": ["get", "list", "watch", "patch"]}]),
    )
    .await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "web"}, "data": {"a": "1"}});
    let mut deleting = cm.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-01T22:00:00Z");
    deleting["metadata"]["finalizers"] = json!(["lab.castle/cleanup"]);
    let cm_path = "/api/v1/namespaces/web/configmaps/settings";
    Mock::given(method("PATCH"))
        .and(path(cm_path))
        .respond_with(ResponseTemplate::new(200).set_body_json(deleting))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(cm_path))
        .respond_with(ResponseTemplate::new(200).set_body_json(cm.clone()))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/namespaces/web/configmaps"))
        .and(query_param_is_missing("watch"))
        .and(query_param("fieldSelector", "metadata.name=settings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "7"}, "items": []})))
        .expect(1..)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/namespaces/web/configmaps"))
        .and(query_param("watch", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_string(""))
        .mount(&server)
        .await;
    let c = client(&server);
    let applied = castle_kube::apply_object(&c, "castle", &cm, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        applied["metadata"].get("deletionTimestamp").is_none(),
        "{applied}"
    );
}
