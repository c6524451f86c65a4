//! The gRPC client against an in-process tonic server speaking TLS like apid: the
//! server certificate is signed by the os CA, client certificates are checked
//! against it, and calls other than ApplyConfiguration and Version need one.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use castle_talos::pb;
use castle_talos::{
    ApplyMode, Code, NodeConn, SecretsBundle, TalosApi, TalosClient, TalosEndpoint, talosconfig,
};
use secrecy::{ExposeSecret as _, SecretString};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    applied: Vec<(String, i32, bool)>,
    bootstrapped: bool,
    time_synced: bool,
}

#[derive(Clone, Default)]
struct Apid(Arc<Mutex<State>>);

impl tonic::server::NamedService for Apid {
    const NAME: &'static str = "machine.MachineService";
}

/// A handler as a tower service, which tonic's server takes as a unary method.
#[derive(Clone)]
struct Handler<F>(F);

impl<F, Req, Resp, Fut> Service<Request<Req>> for Handler<F>
where
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Fut;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, r: Request<Req>) -> Fut {
        (self.0)(r)
    }
}

fn has_client_cert<T>(r: &Request<T>) -> bool {
    r.peer_certs().is_some_and(|c| !c.is_empty())
}

fn kubeconfig_archive() -> Vec<u8> {
    let body = b"apiVersion: v1\nkind: Config\n";
    let mut header = [0u8; 512];
    header[..10].copy_from_slice(b"kubeconfig");
    header[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(body);
    tar.resize(1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

impl Service<http::Request<tonic::body::Body>> for Apid {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let state = Arc::clone(&self.0);
        match req.uri().path() {
            "/machine.MachineService/ApplyConfiguration" => Box::pin(async move {
                let h = Handler(move |r: Request<pb::ApplyConfigurationRequest>| {
                    let state = Arc::clone(&state);
                    async move {
                        let mtls = has_client_cert(&r);
                        let r = r.into_inner();
                        let text = String::from_utf8(r.data)
                            .map_err(|_| Status::invalid_argument("config is not UTF-8"))?;
                        if !text.contains("machine:") {
                            return Err(Status::invalid_argument("failed to parse config"));
                        }
                        state.lock().unwrap().applied.push((text, r.mode, mtls));
                        Ok(Response::new(pb::ApplyConfigurationResponse {
                            messages: vec![pb::ApplyConfiguration::default()],
                        }))
                    }
                });
                Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(h, req)
                    .await)
            }),
            "/machine.MachineService/Bootstrap" => Box::pin(async move {
                let h = Handler(move |r: Request<pb::BootstrapRequest>| {
                    let state = Arc::clone(&state);
                    async move {
                        if !has_client_cert(&r) {
                            return Err(Status::unauthenticated("client certificate required"));
                        }
                        let mut s = state.lock().unwrap();
                        if !s.time_synced {
                            s.time_synced = true;
                            return Err(Status::failed_precondition("time is not in sync yet"));
                        }
                        if s.bootstrapped {
                            return Err(Status::already_exists("etcd data directory is not empty"));
                        }
                        s.bootstrapped = true;
                        Ok(Response::new(pb::BootstrapResponse {
                            messages: vec![pb::Bootstrap::default()],
                        }))
                    }
                });
                Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(h, req)
                    .await)
            }),
            "/machine.MachineService/Kubeconfig" => Box::pin(async move {
                let h = Handler(move |r: Request<pb::Empty>| {
                    let state = Arc::clone(&state);
                    async move {
                        if !has_client_cert(&r) || !state.lock().unwrap().bootstrapped {
                            return Err(Status::failed_precondition("not bootstrapped"));
                        }
                        // Two chunks, as a large archive would come.
                        let archive = kubeconfig_archive();
                        let (a, b) = archive.split_at(archive.len() / 2);
                        let chunks = [a.to_vec(), b.to_vec()].map(|bytes| {
                            Ok(pb::Data {
                                metadata: None,
                                bytes,
                            })
                        });
                        Ok(Response::new(tonic::codegen::tokio_stream::iter(chunks)))
                    }
                });
                Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .server_streaming(h, req)
                    .await)
            }),
            "/machine.MachineService/ServiceList" => Box::pin(async move {
                let h = Handler(move |_r: Request<pb::Empty>| async move {
                    let svc = |id: &str, healthy: bool| pb::ServiceInfo {
                        id: id.into(),
                        state: "Running".into(),
                        health: Some(pb::ServiceHealth {
                            unknown: false,
                            healthy,
                            last_message: String::new(),
                        }),
                    };
                    Ok(Response::new(pb::ServiceListResponse {
                        messages: vec![pb::ServiceList {
                            metadata: None,
                            services: vec![svc("etcd", true), svc("kubelet", false)],
                        }],
                    }))
                });
                Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(h, req)
                    .await)
            }),
            "/machine.MachineService/Version" => Box::pin(async move {
                let h = Handler(move |_r: Request<pb::Empty>| async move {
                    Ok(Response::new(pb::VersionResponse {
                        messages: vec![pb::Version {
                            metadata: None,
                            version: Some(pb::VersionInfo {
                                tag: "v1.12.0".into(),
                                ..Default::default()
                            }),
                        }],
                    }))
                });
                Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(h, req)
                    .await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

/// apid's certificate for 127.0.0.1, signed by the bundle's os CA.
fn server_identity(bundle: &SecretsBundle) -> Identity {
    let ca_key = rcgen::KeyPair::from_pem(bundle.os.key.expose_secret()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&bundle.os.crt, ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    Identity::from_pem(cert.pem(), key.serialize_pem())
}

/// How the test apid asks for client certificates.
#[derive(Clone, Copy)]
enum Apids {
    /// Optional: one server answers both kinds of call.
    Mixed,
    /// A node in maintenance mode (internal/app/maintenance at v1.12.11): never asks.
    Maintenance,
    /// A configured node: requires one at the handshake
    /// (`tls.RequireAndVerifyClientCert`, internal/app/apid at v1.12.11).
    Configured,
}

async fn serve(bundle: &SecretsBundle, apid: Apid) -> u16 {
    serve_as(bundle, apid, Apids::Mixed).await
}

async fn serve_as(bundle: &SecretsBundle, apid: Apid, mode: Apids) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = ServerTlsConfig::new().identity(server_identity(bundle));
    let tls = match mode {
        Apids::Maintenance => tls,
        Apids::Mixed | Apids::Configured => tls
            .client_ca_root(Certificate::from_pem(&bundle.os.crt))
            .client_auth_optional(matches!(mode, Apids::Mixed)),
    };
    let incoming = tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .serve_with_incoming(apid, incoming),
    );
    port
}

fn client(bundle: &SecretsBundle, port: u16) -> TalosClient {
    let tc = talosconfig(bundle, "lab", &["127.0.0.1".into()], &["127.0.0.1".into()]).unwrap();
    let mut ep = TalosEndpoint::from_talosconfig(&tc, None).unwrap();
    ep.port = port;
    TalosClient::new(ep).unwrap()
}

#[tokio::test]
async fn apply_bootstrap_kubeconfig_services_and_version_over_tls() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let apid = Apid::default();
    let port = serve(&bundle, apid.clone()).await;
    let c = client(&bundle, port);
    let config = SecretString::from("version: v1alpha1\nmachine:\n  type: worker\n".to_string());
    c.apply_configuration("127.0.0.1", &config, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap();
    c.apply_configuration("127.0.0.1", &config, ApplyMode::NoReboot, NodeConn::Mtls)
        .await
        .unwrap();
    {
        let s = apid.0.lock().unwrap();
        assert_eq!(s.applied.len(), 2);
        assert_eq!(
            (s.applied[0].1, s.applied[0].2),
            (1, false),
            "AUTO, no client cert"
        );
        assert_eq!(
            (s.applied[1].1, s.applied[1].2),
            (2, true),
            "NO_REBOOT over mTLS"
        );
        assert_eq!(s.applied[0].0, config.expose_secret());
    }
    let e = c
        .apply_configuration(
            "127.0.0.1",
            &SecretString::from("x".to_string()),
            ApplyMode::Auto,
            NodeConn::Maintenance,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    assert!(!e.is_transient());

    let e = c.bootstrap("127.0.0.1").await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("time is not in sync"),
        "{e}"
    );
    assert!(c.bootstrap("127.0.0.1").await.unwrap(), "bootstrapped now");
    assert!(
        !c.bootstrap("127.0.0.1").await.unwrap(),
        "AlreadyExists is done"
    );

    let kc = c.kubeconfig("127.0.0.1").await.unwrap();
    assert_eq!(kc.expose_secret(), "apiVersion: v1\nkind: Config\n");

    let services = c.services("127.0.0.1").await.unwrap();
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].healthy, Some(true));
    assert_eq!(services[1].healthy, Some(false));
    assert_eq!(
        c.version("127.0.0.1", NodeConn::Maintenance).await.unwrap(),
        "v1.12.0"
    );
    let e = c.reset("127.0.0.1", true).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unimplemented));
}

#[tokio::test]
async fn mutual_tls_verifies_both_sides_against_the_os_ca() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let port = serve(&bundle, Apid::default()).await;
    // Another cluster's talosconfig: its CA does not vouch for this server.
    let stranger = client(&SecretsBundle::generate(None).unwrap(), port);
    let e = stranger
        .version("127.0.0.1", NodeConn::Mtls)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    // Maintenance mode skips server verification, and calls needing a cert fail.
    let e = stranger.bootstrap("127.0.0.1").await.unwrap_err();
    assert!(e.code().is_some(), "{e}");
    assert_eq!(
        stranger
            .version("127.0.0.1", NodeConn::Maintenance)
            .await
            .unwrap(),
        "v1.12.0"
    );
    let anonymous = TalosClient::new(TalosEndpoint {
        port,
        ..TalosEndpoint::maintenance_only()
    })
    .unwrap();
    assert!(matches!(
        anonymous.bootstrap("127.0.0.1").await.unwrap_err(),
        castle_talos::Error::Config(_)
    ));
    // Nobody listens: transient.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nobody = TalosClient::new(TalosEndpoint {
        port: closed,
        ..TalosEndpoint::maintenance_only()
    })
    .unwrap();
    let e = nobody
        .version("127.0.0.1", NodeConn::Maintenance)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
}

#[test]
fn endpoint_and_client_debug_never_show_the_key() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let tc = talosconfig(&bundle, "lab", &["10.0.0.1".into()], &["10.0.0.1".into()]).unwrap();
    let ep = TalosEndpoint::from_talosconfig(&tc, None).unwrap();
    let key = ep.client_key.as_ref().unwrap().expose_secret().to_string();
    let c = TalosClient::new(ep.clone()).unwrap();
    let shown = format!("{ep:?} {c:?}");
    assert!(
        !shown.contains(&key) && !shown.contains("PRIVATE"),
        "{shown}"
    );
    let e = TalosEndpoint::from_talosconfig(&SecretString::from("context: x\n".to_string()), None)
        .unwrap_err();
    assert!(e.to_string().contains("no context"));
    let req = pb::ApplyConfigurationRequest {
        data: b"secret-stuff".to_vec(),
        mode: 1,
        dry_run: false,
    };
    assert!(!format!("{req:?}").contains("secret-stuff"));
}

/// Resume against a configured node: its apid refuses a handshake without a client
/// certificate, so a maintenance-mode call fails as Unavailable (never
/// Unauthenticated); the handshake probe tells the two kinds of node apart and the
/// apply goes over mTLS.
#[tokio::test]
async fn a_configured_node_refuses_the_handshake_without_a_certificate_and_the_probe_says_so() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let configured = Apid::default();
    let port = serve_as(&bundle, configured.clone(), Apids::Configured).await;
    let c = client(&bundle, port);
    let config = SecretString::from("version: v1alpha1\nmachine:\n  type: worker\n".to_string());
    let e = c
        .apply_configuration("127.0.0.1", &config, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert_eq!(c.connection("127.0.0.1").await.unwrap(), NodeConn::Mtls);
    c.apply_configuration("127.0.0.1", &config, ApplyMode::Auto, NodeConn::Mtls)
        .await
        .unwrap();
    assert_eq!(configured.0.lock().unwrap().applied.len(), 1);

    let fresh = serve_as(&bundle, Apid::default(), Apids::Maintenance).await;
    let c = client(&bundle, fresh);
    assert_eq!(
        c.connection("127.0.0.1").await.unwrap(),
        NodeConn::Maintenance
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = client(&bundle, closed)
        .connection("127.0.0.1")
        .await
        .unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("TLS handshake"),
        "{e}"
    );
}

/// talosctl writes the client key PEM as `ED25519 PRIVATE KEY` (siderolabs/crypto);
/// the fixture is a talosconfig in talosctl's own layout.
#[test]
fn a_talosconfig_written_by_talosctl_loads() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/talosctl-talosconfig.yaml"),
    )
    .unwrap();
    assert!(
        text.contains("key: LS0tLS1CRUdJTiBFRDI1NTE5IFBSSVZBVEUgS0VZ"),
        "the fixture's key is labelled as talosctl labels it"
    );
    let ep = TalosEndpoint::from_talosconfig(&SecretString::from(text), None).unwrap();
    assert!(
        ep.client_key
            .as_ref()
            .unwrap()
            .expose_secret()
            .contains("ED25519 PRIVATE KEY")
    );
    TalosClient::new(ep).unwrap();
}
