//! The machine API over gRPC: hand-written prost messages for the few calls Castle
//! makes, a TLS connector per connection mode, and status-code classification.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use tonic::codegen::http::Uri;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::error::Code;
use crate::{ApplyMode, Error, NodeConn, Result, ServiceHealth, TalosApi};

/// The Talos API port.
pub const APID_PORT: u16 = 50000;

/// How to reach the machine API: the os CA and the admin client certificate from a
/// talosconfig (for mutual TLS), plus timeouts.
#[derive(Clone)]
pub struct TalosEndpoint {
    /// The apid port.
    pub port: u16,
    /// The os CA certificate (PEM) that signs the nodes' API certificates.
    pub ca: Option<String>,
    /// The admin client certificate (PEM).
    pub client_crt: Option<String>,
    /// Its key (PEM).
    pub client_key: Option<SecretString>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Per-call timeout.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for TalosEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalosEndpoint")
            .field("port", &self.port)
            .field("ca", &self.ca.is_some())
            .field("client_crt", &self.client_crt.is_some())
            .field(
                "client_key",
                &self.client_key.as_ref().map(|_| "(redacted)"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl TalosEndpoint {
    /// Maintenance mode only: no credentials (mTLS calls fail with a clear error).
    pub fn maintenance_only() -> Self {
        Self {
            port: APID_PORT,
            ca: None,
            client_crt: None,
            client_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
        }
    }

    /// The credentials of a talosconfig's `context` (its current context if `None`).
    ///
    /// # Errors
    /// The text is not a talosconfig, or the context lacks `ca`, `crt` or `key`.
    pub fn from_talosconfig(text: &SecretString, context: Option<&str>) -> Result<Self> {
        let v: Value = serde_saphyr::from_str(text.expose_secret())
            .map_err(|_| Error::Config("not a talosconfig (YAML with contexts)".into()))?;
        let name = context
            .or_else(|| v.get("context").and_then(Value::as_str))
            .ok_or_else(|| Error::Config("talosconfig: no context named".into()))?;
        let ctx = v
            .get("contexts")
            .and_then(|c| c.get(name))
            .ok_or_else(|| Error::Config(format!("talosconfig: no context {name:?}")))?;
        let field = |k: &str| -> Result<String> {
            ctx.get(k)
                .and_then(Value::as_str)
                .and_then(|s| B64.decode(s).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "talosconfig context {name:?}: `{k}` is missing or not base64 of PEM"
                    ))
                })
        };
        Ok(Self {
            ca: Some(field("ca")?),
            client_crt: Some(field("crt")?),
            client_key: Some(SecretString::from(field("key")?)),
            ..Self::maintenance_only()
        })
    }
}

/// The gRPC client of `machine.MachineService`, one connection per node and mode.
#[derive(Clone)]
pub struct TalosClient {
    endpoint: TalosEndpoint,
    maintenance: Arc<rustls::ClientConfig>,
    mtls: Option<Arc<rustls::ClientConfig>>,
    channels: Arc<Mutex<HashMap<(String, bool), Channel>>>,
}

impl std::fmt::Debug for TalosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalosClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pki(e: impl std::fmt::Display) -> Error {
    Error::Pki(e.to_string())
}

impl TalosClient {
    /// A client; mutual TLS is available when the endpoint carries the os CA and a
    /// client certificate, the server then verified against that CA.
    ///
    /// # Errors
    /// A certificate or key does not parse.
    pub fn new(endpoint: TalosEndpoint) -> Result<Self> {
        let mut maintenance = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(pki)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(MaintenanceVerifier(provider())))
            .with_no_client_auth();
        maintenance.alpn_protocols = vec![b"h2".to_vec()];
        let mtls = match (&endpoint.ca, &endpoint.client_crt, &endpoint.client_key) {
            (Some(ca), Some(crt), Some(key)) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots
                        .add(c.map_err(|e| pki(format!("os CA: {e}")))?)
                        .map_err(|e| pki(format!("os CA: {e}")))?;
                }
                let chain = CertificateDer::pem_slice_iter(crt.as_bytes())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| pki(format!("client certificate: {e}")))?;
                // The parse error could quote the key: say only what failed.
                // talosctl (siderolabs/crypto `x509.NewEd25519Key`) labels a PKCS#8
                // Ed25519 key `ED25519 PRIVATE KEY`, a label rustls does not know.
                let pkcs8 = key
                    .expose_secret()
                    .replace("ED25519 PRIVATE KEY-----", "PRIVATE KEY-----");
                let key = PrivateKeyDer::from_pem_slice(pkcs8.as_bytes())
                    .map_err(|_| pki("client key: not a PEM private key"))?;
                let mut c = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(pki)?
                    .with_root_certificates(roots)
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| pki(format!("client certificate: {e}")))?;
                c.alpn_protocols = vec![b"h2".to_vec()];
                Some(Arc::new(c))
            }
            (None, None, None) => None,
            _ => {
                return Err(Error::Config(
                    "mutual TLS needs the os CA, the client certificate and its key".into(),
                ));
            }
        };
        Ok(Self {
            endpoint,
            maintenance: Arc::new(maintenance),
            mtls,
            channels: Arc::default(),
        })
    }

    fn channel(&self, node: &str, conn: NodeConn, call: &'static str) -> Result<Channel> {
        let mtls = conn == NodeConn::Mtls;
        let key = (node.to_string(), mtls);
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let config = if mtls {
            self.mtls.clone().ok_or_else(|| {
                Error::Config(format!(
                    "{call} on {node} needs mutual TLS: give the client a talosconfig"
                ))
            })?
        } else {
            Arc::clone(&self.maintenance)
        };
        let name = ServerName::try_from(node.to_string())
            .map_err(|_| Error::Config(format!("{node:?} is not an address or host name")))?;
        let host = match &name {
            ServerName::IpAddress(ip) if std::net::IpAddr::from(*ip).is_ipv6() => {
                format!("[{node}]")
            }
            _ => node.to_string(),
        };
        // The connector does TLS itself, so tonic sees plain h2 over an `http` URI.
        let ep = Endpoint::from_shared(format!("http://{host}:{}", self.endpoint.port))
            .map_err(|e| Error::Config(format!("{node}: {e}")))?
            .connect_timeout(self.endpoint.connect_timeout)
            .timeout(self.endpoint.request_timeout);
        let channel = ep.connect_with_connector_lazy(TlsConnect {
            tls: tokio_rustls::TlsConnector::from(config),
            name,
        });
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    async fn unary<Req, Resp>(
        &self,
        node: &str,
        conn: NodeConn,
        call: &'static str,
        path: &'static str,
        request: Req,
    ) -> Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel(node, conn, call)?);
        grpc.ready().await.map_err(|e| transport(node, call, &e))?;
        grpc.unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| status(node, call, &s))
    }
}

fn transport(node: &str, call: &'static str, e: &tonic::transport::Error) -> Error {
    use std::error::Error as _;
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    Error::Rpc {
        node: node.into(),
        call,
        code: Code::Unavailable,
        message,
    }
}

/// The status code of a failed call, as Castle distinguishes them.
pub fn code_of(code: tonic::Code) -> Code {
    match code {
        tonic::Code::Unavailable => Code::Unavailable,
        tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
        tonic::Code::FailedPrecondition => Code::FailedPrecondition,
        tonic::Code::AlreadyExists => Code::AlreadyExists,
        tonic::Code::InvalidArgument => Code::InvalidArgument,
        tonic::Code::PermissionDenied => Code::PermissionDenied,
        tonic::Code::Unauthenticated => Code::Unauthenticated,
        tonic::Code::ResourceExhausted => Code::ResourceExhausted,
        tonic::Code::Unimplemented => Code::Unimplemented,
        _ => Code::Unknown,
    }
}

fn status(node: &str, call: &'static str, s: &tonic::Status) -> Error {
    // A connection that never came up surfaces as Unknown with a transport source.
    let code = match s.code() {
        tonic::Code::Unknown if std::error::Error::source(s).is_some() => Code::Unavailable,
        c => code_of(c),
    };
    Error::Rpc {
        node: node.into(),
        call,
        code,
        message: s.message().to_string(),
    }
}

/// Maintenance mode serves a self-signed certificate nobody can verify; the handshake
/// signature is still checked, so the peer holds the key it presents.
#[derive(Debug)]
struct MaintenanceVerifier(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for MaintenanceVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client-certificate resolver that only notes that the server asked for one: the
/// question itself tells a configured apid (`RequireAndVerifyClientCert`) from a node
/// in maintenance mode, which never asks.
#[derive(Debug, Default)]
struct NotesCertificateRequest(std::sync::atomic::AtomicBool);

impl rustls::client::ResolvesClientCert for NotesCertificateRequest {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        None
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl TalosClient {
    /// One TLS handshake without a client certificate: does the node ask for one?
    async fn probe_handshake(&self, node: &str) -> Result<NodeConn> {
        const CALL: &str = "connection";
        let asked = Arc::new(NotesCertificateRequest::default());
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(pki)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(MaintenanceVerifier(provider())))
            .with_client_cert_resolver(
                Arc::clone(&asked) as Arc<dyn rustls::client::ResolvesClientCert>
            );
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(node.to_string())
            .map_err(|_| Error::Config(format!("{node:?} is not an address or host name")))?;
        let unavailable = |message: String| Error::Rpc {
            node: node.into(),
            call: CALL,
            code: Code::Unavailable,
            message,
        };
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect((node, self.endpoint.port)).await?;
            // The server's CertificateRequest comes before the client's Finished, so
            // the resolver has been asked by the time the handshake returns.
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            std::io::Result::Ok(())
        };
        let outcome = tokio::time::timeout(self.endpoint.connect_timeout, handshake)
            .await
            .map_err(|_| unavailable(format!("TLS handshake with {node} timed out")))?;
        if asked.0.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(NodeConn::Mtls);
        }
        outcome.map_err(|e| unavailable(format!("TLS handshake with {node}: {e}")))?;
        Ok(NodeConn::Maintenance)
    }
}

/// TCP, then TLS with the mode's rustls config, for tonic's connector slot.
#[derive(Clone)]
struct TlsConnect {
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other("no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(APID_PORT);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// `machine.ApplyConfigurationRequest.Mode`.
fn mode_number(mode: ApplyMode) -> i32 {
    match mode {
        ApplyMode::Reboot => 0,
        ApplyMode::Auto => 1,
        ApplyMode::NoReboot => 2,
        ApplyMode::Staged => 3,
    }
}

/// The first error a multi-node response reports in its metadata (apid proxies
/// return per-node errors inside a successful call).
fn metadata_error<'a>(metas: impl IntoIterator<Item = Option<&'a pb::Metadata>>) -> Option<String> {
    metas
        .into_iter()
        .flatten()
        .find(|m| !m.error.is_empty())
        .map(|m| format!("{}: {}", m.hostname, m.error))
}

fn reported(node: &str, call: &'static str, message: String) -> Error {
    Error::Rpc {
        node: node.into(),
        call,
        code: Code::Unknown,
        message,
    }
}

/// Reads the first entry of a gzip'd tar: machined sends the kubeconfig without the
/// archive's trailer, so only the header and the entry's bytes are read.
fn first_tar_entry(gz: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut tar)
        .map_err(|e| format!("not gzip: {e}"))?;
    let header = tar.get(..512).ok_or("shorter than a tar header")?;
    let size_field = std::str::from_utf8(&header[124..136])
        .map_err(|_| "bad tar size field")?
        .trim_matches(|c: char| c == '\0' || c == ' ');
    let size = usize::from_str_radix(size_field, 8).map_err(|_| "bad tar size field")?;
    tar.get(512..512 + size)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "the tar entry is truncated".to_string())
}

#[async_trait]
impl TalosApi for TalosClient {
    async fn apply_configuration(
        &self,
        node: &str,
        config: &SecretString,
        mode: ApplyMode,
        conn: NodeConn,
    ) -> Result<()> {
        let request = pb::ApplyConfigurationRequest {
            data: config.expose_secret().as_bytes().to_vec(),
            mode: mode_number(mode),
            dry_run: false,
        };
        let r: pb::ApplyConfigurationResponse = self
            .unary(
                node,
                conn,
                "apply",
                "/machine.MachineService/ApplyConfiguration",
                request,
            )
            .await?;
        match metadata_error(r.messages.iter().map(|m| m.metadata.as_ref())) {
            Some(e) => Err(reported(node, "apply", e)),
            None => Ok(()),
        }
    }

    async fn bootstrap(&self, node: &str) -> Result<bool> {
        let request = pb::BootstrapRequest {
            recover_etcd: false,
            recover_skip_hash_check: false,
        };
        let r: Result<pb::BootstrapResponse> = self
            .unary(
                node,
                NodeConn::Mtls,
                "bootstrap",
                "/machine.MachineService/Bootstrap",
                request,
            )
            .await;
        match r {
            Ok(r) => match metadata_error(r.messages.iter().map(|m| m.metadata.as_ref())) {
                Some(e) => Err(reported(node, "bootstrap", e)),
                None => Ok(true),
            },
            // "etcd data directory is not empty": bootstrapped before.
            Err(e) if e.code() == Some(Code::AlreadyExists) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn kubeconfig(&self, node: &str) -> Result<SecretString> {
        const CALL: &str = "kubeconfig";
        let mut grpc = tonic::client::Grpc::new(self.channel(node, NodeConn::Mtls, CALL)?);
        grpc.ready().await.map_err(|e| transport(node, CALL, &e))?;
        let mut stream = grpc
            .server_streaming(
                tonic::Request::new(pb::Empty {}),
                PathAndQuery::from_static("/machine.MachineService/Kubeconfig"),
                tonic_prost::ProstCodec::<pb::Empty, pb::Data>::default(),
            )
            .await
            .map_err(|s| status(node, CALL, &s))?
            .into_inner();
        let mut archive = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(|s| status(node, CALL, &s))? {
            if let Some(e) = metadata_error([chunk.metadata.as_ref()]) {
                return Err(reported(node, CALL, e));
            }
            archive.extend_from_slice(&chunk.bytes);
        }
        let bytes = first_tar_entry(&archive)
            .map_err(|m| reported(node, CALL, format!("kubeconfig archive: {m}")))?;
        String::from_utf8(bytes)
            .map(SecretString::from)
            .map_err(|_| reported(node, CALL, "the kubeconfig is not UTF-8".into()))
    }

    async fn services(&self, node: &str) -> Result<Vec<ServiceHealth>> {
        let r: pb::ServiceListResponse = self
            .unary(
                node,
                NodeConn::Mtls,
                "services",
                "/machine.MachineService/ServiceList",
                pb::Empty {},
            )
            .await?;
        if let Some(e) = metadata_error(r.messages.iter().map(|m| m.metadata.as_ref())) {
            return Err(reported(node, "services", e));
        }
        Ok(r.messages
            .into_iter()
            .flat_map(|m| m.services)
            .map(|s| {
                let h = s.health.unwrap_or_default();
                ServiceHealth {
                    id: s.id,
                    state: s.state,
                    healthy: (!h.unknown).then_some(h.healthy),
                    message: h.last_message,
                }
            })
            .collect())
    }

    async fn version(&self, node: &str, conn: NodeConn) -> Result<String> {
        let r: pb::VersionResponse = self
            .unary(
                node,
                conn,
                "version",
                "/machine.MachineService/Version",
                pb::Empty {},
            )
            .await?;
        if let Some(e) = metadata_error(r.messages.iter().map(|m| m.metadata.as_ref())) {
            return Err(reported(node, "version", e));
        }
        r.messages
            .into_iter()
            .find_map(|m| m.version.map(|v| v.tag))
            .ok_or_else(|| reported(node, "version", "the answer holds no version".into()))
    }

    async fn connection(&self, node: &str) -> Result<NodeConn> {
        self.probe_handshake(node).await
    }

    async fn reset(&self, node: &str, graceful: bool) -> Result<()> {
        let request = pb::ResetRequest {
            graceful,
            reboot: true,
        };
        let r: pb::ResetResponse = self
            .unary(
                node,
                NodeConn::Mtls,
                "reset",
                "/machine.MachineService/Reset",
                request,
            )
            .await?;
        match metadata_error(r.messages.iter().map(|m| m.metadata.as_ref())) {
            Some(e) => Err(reported(node, "reset", e)),
            None => Ok(()),
        }
    }
}

/// The messages of `machine/machine.proto` and `common/common.proto` that Castle
/// uses, written by hand (field numbers from the proto files); unknown fields are
/// skipped by prost.
#[allow(missing_docs)]
pub mod pb {
    /// `google.protobuf.Empty`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    /// `common.Metadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(string, tag = "1")]
        pub hostname: String,
        #[prost(string, tag = "2")]
        pub error: String,
    }

    /// `common.Data`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Data {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<Metadata>,
        #[prost(bytes = "vec", tag = "2")]
        pub bytes: Vec<u8>,
    }

    /// `machine.ApplyConfigurationRequest`; `data` is the machine config, so its
    /// `Debug` shows only its size.
    #[derive(Clone, PartialEq, prost::Message)]
    #[prost(skip_debug)]
    pub struct ApplyConfigurationRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub data: Vec<u8>,
        #[prost(int32, tag = "4")]
        pub mode: i32,
        #[prost(bool, tag = "5")]
        pub dry_run: bool,
    }

    impl std::fmt::Debug for ApplyConfigurationRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ApplyConfigurationRequest")
                .field("data", &format_args!("({} bytes)", self.data.len()))
                .field("mode", &self.mode)
                .field("dry_run", &self.dry_run)
                .finish()
        }
    }

    /// `machine.ApplyConfiguration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ApplyConfiguration {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<Metadata>,
        #[prost(string, repeated, tag = "2")]
        pub warnings: Vec<String>,
        #[prost(int32, tag = "3")]
        pub mode: i32,
        #[prost(string, tag = "4")]
        pub mode_details: String,
    }

    /// `machine.ApplyConfigurationResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ApplyConfigurationResponse {
        #[prost(message, repeated, tag = "1")]
        pub messages: Vec<ApplyConfiguration>,
    }

    /// `machine.BootstrapRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BootstrapRequest {
        #[prost(bool, tag = "1")]
        pub recover_etcd: bool,
        #[prost(bool, tag = "2")]
        pub recover_skip_hash_check: bool,
    }

    /// `machine.Bootstrap`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bootstrap {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<Metadata>,
    }

    /// `machine.BootstrapResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BootstrapResponse {
        #[prost(message, repeated, tag = "1")]
        pub messages: Vec<Bootstrap>,
    }

    /// `machine.VersionInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VersionInfo {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(string, tag = "2")]
        pub sha: String,
        #[prost(string, tag = "3")]
        pub built: String,
        #[prost(string, tag = "4")]
        pub go_version: String,
        #[prost(string, tag = "5")]
        pub os: String,
        #[prost(string, tag = "6")]
        pub arch: String,
    }

    /// `machine.Version`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Version {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<Metadata>,
        #[prost(message, optional, tag = "2")]
        pub version: Option<VersionInfo>,
    }

    /// `machine.VersionResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VersionResponse {
        #[prost(message, repeated, tag = "1")]
        pub messages: Vec<Version>,
    }

    /// `machine.ServiceHealth`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServiceHealth {
        #[prost(bool, tag = "1")]
        pub unknown: bool,
        #[prost(bool, tag = "2")]
        pub healthy: bool,
        #[prost(string, tag = "3")]
        pub last_message: String,
    }

    /// `machine.ServiceInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServiceInfo {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub state: String,
        #[prost(message, optional, tag = "4")]
        pub health: Option<ServiceHealth>,
    }

    /// `machine.ServiceList`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServiceList {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<Metadata>,
        #[prost(message, repeated, tag = "2")]
        pub services: Vec<ServiceInfo>,
    }

    /// `machine.ServiceListResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServiceListResponse {
        #[prost(message, repeated, tag = "1")]
        pub messages: Vec<ServiceList>,
    }

    /// `machine.ResetRequest` (wipe everything, the default mode).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResetRequest {
        #[prost(bool, tag = "1")]
        pub graceful: bool,
        #[prost(bool, tag = "2")]
        pub reboot: bool,
    }

    /// `machine.Reset`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reset {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<Metadata>,
    }

    /// `machine.ResetResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResetResponse {
        #[prost(message, repeated, tag = "1")]
        pub messages: Vec<Reset>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tar_entry_is_read_without_a_trailer() {
        let body = b"apiVersion: v1\n";
        let mut header = [0u8; 512];
        header[..10].copy_from_slice(b"kubeconfig");
        header[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
        let mut tar = header.to_vec();
        tar.extend_from_slice(body);
        tar.resize(512 + 512, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(first_tar_entry(&gz).unwrap(), body);
        assert!(first_tar_entry(b"not gzip").is_err());
    }

    #[test]
    fn status_codes_classify() {
        let e = status(
            "n",
            "bootstrap",
            &tonic::Status::failed_precondition("time is not in sync yet"),
        );
        assert!(e.is_transient());
        let e = status("n", "apply", &tonic::Status::invalid_argument("bad"));
        assert!(!e.is_transient());
        let e = status("n", "apply", &tonic::Status::unauthenticated("no cert"));
        assert_eq!(e.code(), Some(Code::Unauthenticated));
        assert!(!e.is_transient());
    }
}
