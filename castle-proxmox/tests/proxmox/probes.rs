//! The probes of the real client against wiremock: what they send is in the PVE
//! schema, they read the answers real servers give, the whole preflight sends
//! nothing but GETs, and a refused certificate names the CA to pin.

use std::sync::Arc;

use castle_probe::Status;
use castle_proxmox::ops::{Fence, PlannedVm, Preflight, preflight};
use castle_proxmox::{Error, NodeStatus, ProxmoxApi, ProxmoxClient, ProxmoxSettings, PveVersion};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::schema;

const TOKEN_ID: &str = "castle@pve!rebirth";

fn client(server: &MockServer) -> ProxmoxClient {
    ProxmoxClient::with_client(
        reqwest::Client::new(),
        &server.uri(),
        TOKEN_ID,
        &SecretString::from("canary-5ec2e7"),
    )
    .unwrap()
}

fn ok(data: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "data": data }))
}

async fn get(server: &MockServer, at: &str, data: serde_json::Value) {
    Mock::given(method("GET"))
        .and(path(format!("/api2/json{at}")))
        .respond_with(ok(data))
        .expect(1..)
        .mount(server)
        .await;
}

/// Answers as pve-manager 8.2 writes them: booleans as 0/1, `/access/permissions`
/// as `{path: {privilege: propagate}}` (pve-access-control `API2/AccessControl.pm`).
#[tokio::test]
async fn the_probes_read_what_the_server_writes() {
    let server = MockServer::start().await;
    get(
        &server,
        "/version",
        json!({"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/access/permissions"))
        .and(query_param("path", "/vms/9000"))
        .respond_with(ok(json!({"/vms/9000": {"VM.Clone": 1, "VM.Audit": 0}})))
        .expect(1)
        .mount(&server)
        .await;
    // A token without privileges there: the path maps to nothing.
    Mock::given(method("GET"))
        .and(path("/api2/json/access/permissions"))
        .and(query_param("path", "/pool/castle"))
        .respond_with(ok(json!({"/pool/castle": {}})))
        .expect(1)
        .mount(&server)
        .await;
    get(
        &server,
        "/nodes",
        json!([
            {"node": "pve", "status": "online", "cpu": 0.02, "maxcpu": 8, "ssl_fingerprint": "AA:BB"},
            {"node": "pve2", "status": "offline"},
            {"node": "pve3", "status": "unknown"}
        ]),
    )
    .await;
    get(
        &server,
        "/nodes/pve/storage/local-lvm/status",
        json!({"type": "lvmthin", "content": "rootdir,images", "total": 499_289_948_160u64,
               "used": 10_737_418_240u64, "avail": 488_552_529_920u64, "enabled": 1,
               "active": 1, "shared": 0}),
    )
    .await;
    let c = client(&server);
    let v = c.version().await.unwrap();
    assert_eq!(v.major_minor(), Some((8, 2)));
    let held = c.permissions("/vms/9000").await.unwrap();
    assert_eq!(
        held.into_iter().collect::<Vec<_>>(),
        [
            ("VM.Audit".to_string(), false),
            ("VM.Clone".to_string(), true)
        ]
    );
    assert!(c.permissions("/pool/castle").await.unwrap().is_empty());
    let nodes = c.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.status).collect::<Vec<_>>(),
        [NodeStatus::Online, NodeStatus::Offline, NodeStatus::Unknown]
    );
    let s = c.storage_status("pve", "local-lvm").await.unwrap();
    assert_eq!(s.kind, "lvmthin");
    assert_eq!(s.content, ["rootdir", "images"]);
    assert_eq!(s.avail, Some(488_552_529_920));
    assert_eq!(
        (s.enabled, s.active, s.shared),
        (Some(true), Some(true), Some(false))
    );
    if let Some(tree) = schema::load() {
        schema::check(&tree, &server.received_requests().await.unwrap());
    }
}

#[test]
fn versions_of_each_generation_parse() {
    let v = |version: &str, release: &str| PveVersion {
        version: version.into(),
        release: release.into(),
        repoid: "0".into(),
    };
    assert_eq!(v("7.4-17", "7.4").major_minor(), Some((7, 4)));
    assert_eq!(v("7.4-17", "").major_minor(), Some((7, 4)));
    assert_eq!(v("9.0.10", "9.0").major_minor(), Some((9, 0)));
    assert_eq!(v("", "").major_minor(), None);
}

fn planned() -> Preflight {
    Preflight {
        token_id: TOKEN_ID.into(),
        node: "pve".into(),
        target: None,
        template: 9000,
        storage: None,
        bridge: "vmbr0".into(),
        vlan: Some(20),
        pool: None,
        full_clone: false,
        vms: vec![PlannedVm {
            vmid: 421,
            name: "lab-cp-1".into(),
            disk_gib: 40,
        }],
        fence: Fence::new("castle", 420..=429).with_identity("castle-lab"),
    }
}

/// The whole preflight through the real client: every request is a GET, exists
/// in the PVE schema and allows API tokens; nothing else reaches the server.
#[tokio::test]
async fn the_preflight_sends_only_gets_the_schema_knows() {
    let server = MockServer::start().await;
    get(
        &server,
        "/version",
        json!({"version": "8.3.0", "release": "8.3", "repoid": "c1689ccb1065a83b"}),
    )
    .await;
    get(
        &server,
        "/nodes",
        json!([{"node": "pve", "status": "online"}]),
    )
    .await;
    get(
        &server,
        "/nodes/pve/qemu/9000/status/current",
        json!({"vmid": 9000, "name": "talos", "status": "stopped", "template": 1}),
    )
    .await;
    get(
        &server,
        "/nodes/pve/qemu/9000/config",
        json!({"name": "talos", "template": 1, "boot": "order=scsi0;ide2;net0",
               "scsi0": "local-lvm:base-9000-disk-0,size=10G", "ide2": "none,media=cdrom",
               "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"}),
    )
    .await;
    get(
        &server,
        "/cluster/resources",
        json!([{"id": "qemu/9000", "type": "qemu", "vmid": 9000, "node": "pve",
                "name": "talos", "status": "stopped", "template": 1}]),
    )
    .await;
    get(&server, "/cluster/nextid", json!("421")).await;
    let all: serde_json::Map<String, serde_json::Value> = [
        "VM.Allocate",
        "VM.Audit",
        "VM.Clone",
        "VM.Config.CPU",
        "VM.Config.Disk",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.Options",
        "VM.PowerMgmt",
        "Datastore.AllocateSpace",
        "SDN.Use",
    ]
    .into_iter()
    .map(|p| (p.to_string(), json!(1)))
    .collect();
    for acl in [
        "/vms/9000",
        "/vms/421",
        "/storage/local-lvm",
        "/sdn/zones/localnetwork/vmbr0",
        "/sdn/zones/localnetwork/vmbr0/20",
    ] {
        Mock::given(method("GET"))
            .and(path("/api2/json/access/permissions"))
            .and(query_param("path", acl))
            .respond_with(ok(json!({ acl: all })))
            .expect(1)
            .mount(&server)
            .await;
    }
    get(
        &server,
        "/nodes/pve/storage/local-lvm/status",
        json!({"type": "lvmthin", "content": "images,rootdir", "total": 549_755_813_888u64,
               "used": 10_737_418_240u64, "avail": 539_018_395_648u64, "enabled": 1, "active": 1}),
    )
    .await;
    let findings = preflight(&client(&server), &planned()).await;
    assert!(
        findings.iter().all(|f| f.status == Status::Pass),
        "{findings:#?}"
    );
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r.method.as_str() == "GET" && r.body.is_empty()),
        "only GETs: {:?}",
        requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.url))
            .collect::<Vec<_>>()
    );
    if let Some(tree) = schema::load() {
        schema::check(&tree, &requests);
    }
}

/// A 401 (pve-http-server: empty body, "authentication failure") ends the
/// preflight with the token's fix; nothing else is asked.
#[tokio::test]
async fn a_refused_token_is_one_failure_and_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let findings = preflight(&client(&server), &planned()).await;
    let failed: Vec<_> = findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .collect();
    assert_eq!(failed.len(), 1, "{findings:#?}");
    assert_eq!(failed[0].check, "token valid");
    let text = format!("{findings:?}");
    assert!(!text.contains("canary"), "the secret leaked: {text}");
}

#[tokio::test]
async fn an_unreachable_server_is_one_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = ProxmoxClient::with_client(
        reqwest::Client::new(),
        &format!("http://{addr}"),
        TOKEN_ID,
        &SecretString::from("canary"),
    )
    .unwrap();
    let findings = preflight(&c, &planned()).await;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(
        (findings[0].check.as_str(), findings[0].status),
        ("reachable", Status::Fail)
    );
    assert!(
        findings[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("proxmox.endpoint")
    );
}

/// A CA and a server certificate it issued, as Proxmox VE's cluster CA
/// (`/etc/pve/pve-root-ca.pem`) issues each node's `pve-ssl.pem`.
fn pve_like_chain() -> (rcgen::Certificate, rcgen::Certificate, rcgen::KeyPair) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Proxmox Virtual Environment");
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "0c4e1f0a-test");
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, "PVE Cluster Manager CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf =
        rcgen::CertificateParams::new(vec!["pve.lan".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "pve.lan");
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert, leaf_cert, leaf_key)
}

/// A TLS server presenting `chain`; it never gets to answer HTTP.
async fn tls_server(chain: Vec<rcgen::Certificate>, key: &rcgen::KeyPair) -> std::net::SocketAddr {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain.iter().map(|c| c.der().clone()).collect(), key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

fn sha256(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn settings(addr: std::net::SocketAddr) -> ProxmoxSettings {
    ProxmoxSettings::new(
        format!("https://{addr}"),
        TOKEN_ID,
        SecretString::from("canary"),
    )
}

/// rustls `InvalidCertificate(UnknownIssuer)`: the server's CA is not trusted.
/// The error is permanent and names the presented certificate and the CA to pin;
/// when the server sends the CA along, its fingerprint too.
#[tokio::test]
async fn an_untrusted_certificate_names_the_ca_to_pin() {
    let (ca, leaf, key) = pve_like_chain();
    let ca_subject = "CN=Proxmox Virtual Environment, OU=0c4e1f0a-test, O=PVE Cluster Manager CA";

    // pveproxy sends the node certificate alone.
    let addr = tls_server(vec![leaf.clone()], &key).await;
    let c = ProxmoxClient::new(&settings(addr)).unwrap();
    let e = c.version().await.unwrap_err();
    let Error::Tls { reason, chain, .. } = &e else {
        panic!("expected a TLS error, got {e:?}");
    };
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert!(!e.is_transient());
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].subject, "CN=pve.lan");
    assert_eq!(chain[0].issuer, ca_subject);
    assert_eq!(chain[0].names, ["pve.lan", "127.0.0.1"]);
    assert_eq!(chain[0].sha256, sha256(leaf.der()));
    let findings = preflight(&c, &planned()).await;
    let f = findings.iter().find(|f| f.check == "TLS trusted").unwrap();
    assert_eq!(f.status, Status::Fail);
    let fix = f.fix.as_deref().unwrap();
    assert!(
        fix.contains(&format!("pin the CA `{ca_subject}`"))
            && fix.contains("proxmox.ca_file")
            && fix.contains("/etc/pve/pve-root-ca.pem"),
        "{fix}"
    );

    // With the CA in the chain, its fingerprint is what to check the pinned file by.
    let addr = tls_server(vec![leaf, ca.clone()], &key).await;
    let e = ProxmoxClient::new(&settings(addr))
        .unwrap()
        .version()
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "pin the CA `{ca_subject}` (sha256 {})",
            sha256(ca.der())
        )),
        "{text}"
    );

    // Pinning that CA is the fix.
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("pve-root-ca.pem");
    std::fs::write(&pem, ca.pem()).unwrap();
    let pinned = ProxmoxClient::new(&settings(addr).with_ca_file(&pem)).unwrap();
    let e = pinned.version().await.unwrap_err();
    assert!(
        !matches!(e, Error::Tls { .. }),
        "the pinned CA is trusted; the test server just does not speak HTTP: {e}"
    );

    // Trusted, but not for the name in the endpoint: the fix is the endpoint.
    let by_name = ProxmoxSettings::new(
        format!("https://localhost:{}", addr.port()),
        TOKEN_ID,
        SecretString::from("canary"),
    )
    .with_ca_file(&pem);
    let c = ProxmoxClient::new(&by_name).unwrap();
    let findings = preflight(&c, &planned()).await;
    let f = findings.iter().find(|f| f.check == "TLS trusted").unwrap();
    assert!(
        f.detail.contains("NotValidForName") && f.detail.contains("valid for pve.lan, 127.0.0.1"),
        "{f}"
    );
    assert!(
        f.fix.as_deref().unwrap().contains("proxmox.endpoint"),
        "{f}"
    );
}
