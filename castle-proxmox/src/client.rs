//! The Proxmox VE HTTP client: API-token auth, rustls, a pinned CA.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::types::split_tags;
use crate::{
    CloneRequest, Error, NodeInfo, NodeStatus, PowerState, ProxmoxApi, PveVersion, Result,
    StorageStatus, TaskExit, TaskStatus, Upid, VmConfig, VmInfo,
};

/// How to reach Proxmox VE. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct ProxmoxSettings {
    /// `https://pve.example:8006` (`/api2/json` is added).
    pub endpoint: String,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    /// The token's secret (a UUID).
    pub token: SecretString,
    /// A PEM file with the CA(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification; only when the config asks for it.
    pub insecure: bool,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

impl ProxmoxSettings {
    /// Verified TLS against the system roots, 10 s to connect, 60 s per request.
    pub fn new(
        endpoint: impl Into<String>,
        token_id: impl Into<String>,
        token: SecretString,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            token_id: token_id.into(),
            token,
            ca_file: None,
            insecure: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }

    /// Trusts only the CA(s) in this PEM file.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Skips certificate verification.
    #[must_use]
    pub fn with_insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Sets the connect and request timeouts.
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }
}

/// The real Proxmox VE client. API tokens need no CSRF ticket.
#[derive(Clone)]
pub struct ProxmoxClient {
    http: reqwest::Client,
    base: String,
    token_id: String,
    /// The whole `Authorization` value; it embeds the secret.
    auth: SecretString,
    /// How long the second look at a refused certificate chain may take.
    tls_look: Duration,
}

impl std::fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("base", &self.base)
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

/// Path segments: everything but unreserved characters is escaped (a UPID holds
/// `:`, `@` and `!`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl ProxmoxClient {
    /// A client from settings.
    ///
    /// # Errors
    /// [`Error::Setup`] when the endpoint is not https (unless `insecure`), the
    /// token id is malformed, or the CA file cannot be read.
    pub fn new(settings: &ProxmoxSettings) -> Result<Self> {
        if !settings.endpoint.starts_with("https://") && !settings.insecure {
            return Err(Error::Setup(format!(
                "endpoint `{}` is not https; Castle will not send the API token in clear text",
                settings.endpoint
            )));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout);
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Setup(format!("reading the CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Setup(format!("the CA file {} is not PEM: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(Error::Setup(format!(
                    "the CA file {} holds no certificate",
                    path.display()
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if settings.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Setup(format!("building the HTTP client: {e}")))?;
        let mut client = Self::with_client(
            http,
            &settings.endpoint,
            &settings.token_id,
            &settings.token,
        )?;
        client.tls_look = settings.connect_timeout;
        Ok(client)
    }

    /// A client over a given `reqwest::Client` (tests point it at wiremock).
    ///
    /// # Errors
    /// [`Error::Setup`] when the token id is not `USER@REALM!TOKENID` or the
    /// secret cannot go in an HTTP header.
    pub fn with_client(
        http: reqwest::Client,
        endpoint: &str,
        token_id: &str,
        token: &SecretString,
    ) -> Result<Self> {
        let well_formed = token_id
            .split_once('!')
            .is_some_and(|(user, id)| user.contains('@') && !id.is_empty());
        if !well_formed {
            return Err(Error::Setup(format!(
                "token id `{token_id}` is not USER@REALM!TOKENID"
            )));
        }
        let auth = SecretString::from(format!("PVEAPIToken={token_id}={}", token.expose_secret()));
        if HeaderValue::from_str(auth.expose_secret()).is_err() {
            return Err(Error::Setup(
                "the API token holds characters an HTTP header cannot carry".into(),
            ));
        }
        let trimmed = endpoint.trim_end_matches('/');
        let base = if trimmed.ends_with("/api2/json") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/api2/json")
        };
        Ok(Self {
            http,
            base,
            token_id: token_id.to_string(),
            auth,
            tls_look: Duration::from_secs(10),
        })
    }

    /// What a failed send means. A certificate the TLS layer refused is
    /// [`Error::Tls`], with the chain the server presents looked at again.
    async fn send_failed(&self, method: &'static str, path: &str, e: &reqwest::Error) -> Error {
        if let Some(reason) = crate::tls::certificate_problem(e) {
            let chain = match reqwest::Url::parse(&self.base) {
                Ok(url) => crate::tls::presented_chain(&url, self.tls_look).await,
                Err(_) => Vec::new(),
            };
            return Error::Tls {
                endpoint: self.base.clone(),
                reason,
                chain,
            };
        }
        if e.is_connect() {
            Error::Unreachable {
                endpoint: self.base.clone(),
                reason: reason(e),
            }
        } else {
            Error::NoAnswer {
                method,
                path: path.to_string(),
                reason: reason(e),
            }
        }
    }

    /// One call; returns the whole envelope.
    async fn envelope(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Value> {
        let name = method_name(&method);
        let mut auth = HeaderValue::from_str(self.auth.expose_secret())
            .map_err(|_| Error::Setup("the API token cannot go in a header".into()))?;
        auth.set_sensitive(true);
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header(AUTHORIZATION, auth);
        req = if method == Method::GET || method == Method::DELETE {
            req.query(params)
        } else {
            req.form(params)
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(self.send_failed(name, path, &e).await),
        };
        let status = resp.status();
        // hyper keeps a non-standard reason phrase in the response's extensions,
        // and reqwest hands them through: older servers put the error text there.
        let phrase = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        let text = resp.text().await.map_err(|e| Error::NoAnswer {
            method: name,
            path: path.to_string(),
            reason: reason(&e),
        })?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            return Err(crate::error::from_answer(
                name,
                path,
                status.as_u16(),
                phrase.as_deref(),
                body.as_ref(),
            ));
        }
        body.ok_or_else(|| Error::Decode {
            path: path.to_string(),
            reason: format!("the body is not JSON ({} bytes)", text.len()),
        })
    }

    async fn data(&self, method: Method, path: &str, params: &[(String, String)]) -> Result<Value> {
        let mut envelope = self.envelope(method, path, params).await?;
        Ok(envelope
            .get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    async fn task(&self, method: Method, path: &str, params: &[(String, String)]) -> Result<Upid> {
        let data = self.data(method, path, params).await?;
        let raw = data.as_str().ok_or_else(|| Error::Decode {
            path: path.to_string(),
            reason: format!("expected a task id, got {data}"),
        })?;
        Upid::parse(raw)
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// The innermost cause, which says what actually failed (refused, DNS, TLS).
fn reason(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    if e.is_timeout() {
        format!("timed out: {inner}")
    } else {
        inner.to_string()
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn flag(v: Option<&Value>) -> bool {
    v.is_some_and(|v| v.as_u64() == Some(1) || v.as_bool() == Some(true) || v.as_str() == Some("1"))
}

fn vm_info(path: &str, v: &Value, node: Option<&str>, vmid: Option<u32>) -> Result<VmInfo> {
    let listing = node.is_none();
    let decode = |reason: &str| Error::Decode {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let vmid = match vmid {
        Some(id) => id,
        None => v
            .get("vmid")
            .and_then(|id| id.as_u64().or_else(|| id.as_str()?.parse().ok()))
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| decode("a VM without a numeric vmid"))?,
    };
    let node = match node {
        Some(n) => n.to_string(),
        None => v
            .get("node")
            .and_then(Value::as_str)
            .ok_or_else(|| decode("a VM without a node"))?
            .to_string(),
    };
    let status = v.get("status").and_then(Value::as_str);
    let status = if listing {
        // One entry must not fail the whole inventory: the cluster reports
        // `unknown` (and no name) for a VM whose statistics do not exist yet.
        status.map_or(Ok(PowerState::Unknown), |s| {
            PowerState::parse(path, s).or(Ok(PowerState::Unknown))
        })
    } else {
        PowerState::parse(path, status.ok_or_else(|| decode("a VM without a status"))?)
    }?;
    Ok(VmInfo {
        vmid,
        node,
        name: v.get("name").map(text_of).unwrap_or_default(),
        status,
        template: flag(v.get("template")),
        tags: v
            .get("tags")
            .map(|t| split_tags(&text_of(t)))
            .unwrap_or_default(),
        lock: v
            .get("lock")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_string),
        maxdisk: v.get("maxdisk").and_then(Value::as_u64).unwrap_or(0),
    })
}

fn number(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        // Perl may hand a size over as a float or a string.
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .or_else(|| v.as_str()?.trim().parse().ok())
}

fn opt_flag(v: Option<&Value>) -> Option<bool> {
    v.filter(|v| !v.is_null()).map(|v| flag(Some(v)))
}

fn p(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[async_trait]
impl ProxmoxApi for ProxmoxClient {
    async fn list_vms(&self) -> Result<Vec<VmInfo>> {
        let path = "/cluster/resources";
        let data = self.data(Method::GET, path, &[p("type", "vm")]).await?;
        let items = data.as_array().ok_or_else(|| Error::Decode {
            path: path.into(),
            reason: "expected a list".into(),
        })?;
        items
            .iter()
            // `type=vm` lists containers too.
            .filter(|v| v.get("type").and_then(Value::as_str) == Some("qemu"))
            .map(|v| vm_info(path, v, None, None))
            .collect()
    }

    async fn vm_status(&self, node: &str, vmid: u32) -> Result<Option<VmInfo>> {
        let path = format!("/nodes/{}/qemu/{vmid}/status/current", seg(node));
        match self.data(Method::GET, &path, &[]).await {
            Ok(data) => vm_info(&path, &data, Some(node), Some(vmid)).map(Some),
            // Proxmox answers a missing VM with 500 "Configuration file ... does
            // not exist".
            Err(e) if e.is_missing_vm() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn vm_config(&self, node: &str, vmid: u32) -> Result<BTreeMap<String, String>> {
        let path = format!("/nodes/{}/qemu/{vmid}/config", seg(node));
        let data = self.data(Method::GET, &path, &[]).await?;
        let map = data.as_object().ok_or_else(|| Error::Decode {
            path: path.clone(),
            reason: "expected an object".into(),
        })?;
        Ok(map.iter().map(|(k, v)| (k.clone(), text_of(v))).collect())
    }

    async fn clone_vm(&self, node: &str, template: u32, request: &CloneRequest) -> Result<Upid> {
        let path = format!("/nodes/{}/qemu/{template}/clone", seg(node));
        request.check()?;
        let params: Vec<(String, String)> = request
            .params()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        self.task(Method::POST, &path, &params).await
    }

    async fn configure(&self, node: &str, vmid: u32, config: &VmConfig) -> Result<()> {
        let path = format!("/nodes/{}/qemu/{vmid}/config", seg(node));
        self.data(Method::PUT, &path, &config.params())
            .await
            .map(|_| ())
    }

    async fn resize_disk(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        gib: u32,
    ) -> Result<Option<Upid>> {
        let path = format!("/nodes/{}/qemu/{vmid}/resize", seg(node));
        let params = [p("disk", disk), p("size", format!("{gib}G"))];
        match self.data(Method::PUT, &path, &params).await? {
            Value::Null => Ok(None),
            Value::String(raw) => Upid::parse(&raw).map(Some),
            other => Err(Error::Decode {
                path,
                reason: format!("expected a task id or null, got {other}"),
            }),
        }
    }

    async fn start(&self, node: &str, vmid: u32) -> Result<Upid> {
        let path = format!("/nodes/{}/qemu/{vmid}/status/start", seg(node));
        self.task(Method::POST, &path, &[]).await
    }

    async fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<Upid> {
        let path = format!("/nodes/{}/qemu/{vmid}/status/shutdown", seg(node));
        let params = [p("timeout", timeout.as_secs().max(1))];
        self.task(Method::POST, &path, &params).await
    }

    async fn stop(&self, node: &str, vmid: u32) -> Result<Upid> {
        let path = format!("/nodes/{}/qemu/{vmid}/status/stop", seg(node));
        self.task(Method::POST, &path, &[]).await
    }

    async fn delete_vm(&self, node: &str, vmid: u32) -> Result<Upid> {
        let path = format!("/nodes/{}/qemu/{vmid}", seg(node));
        let params = [p("purge", 1), p("destroy-unreferenced-disks", 1)];
        self.task(Method::DELETE, &path, &params).await
    }

    async fn next_id(&self) -> Result<u32> {
        let path = "/cluster/nextid";
        let data = self.data(Method::GET, path, &[]).await?;
        // The schema says integer; servers send a string.
        data.as_u64()
            .or_else(|| data.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::Decode {
                path: path.into(),
                reason: format!("not a VMID: {data}"),
            })
    }

    async fn vmid_free(&self, vmid: u32) -> Result<bool> {
        let path = "/cluster/nextid";
        match self.data(Method::GET, path, &[p("vmid", vmid)]).await {
            Ok(_) => Ok(true),
            // pve-manager answers a taken id with 400 {errors: {vmid: "VM N already exists"}}.
            Err(Error::Api {
                status: 400,
                ref params,
                ..
            }) if params
                .get("vmid")
                .is_some_and(|m| m.contains("already exists")) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus> {
        let path = format!(
            "/nodes/{}/tasks/{}/status",
            seg(upid.node()),
            seg(upid.as_str())
        );
        let data = self.data(Method::GET, &path, &[]).await?;
        match data.get("status").and_then(Value::as_str) {
            Some("running") => Ok(TaskStatus::Running),
            Some("stopped") => Ok(TaskStatus::Stopped(TaskExit::parse(
                data.get("exitstatus")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown"),
            ))),
            other => Err(Error::Decode {
                path,
                reason: format!("unknown task status {other:?}"),
            }),
        }
    }

    async fn task_log(&self, upid: &Upid, lines: usize) -> Result<Vec<String>> {
        let path = format!(
            "/nodes/{}/tasks/{}/log",
            seg(upid.node()),
            seg(upid.as_str())
        );
        // The log reads from the head; its length comes with the first page.
        let head = self
            .envelope(Method::GET, &path, &[p("start", 0), p("limit", lines)])
            .await?;
        let total = head
            .get("total")
            .and_then(Value::as_u64)
            .and_then(|t| usize::try_from(t).ok());
        let page = match total {
            Some(total) if total > lines => {
                let start = total - lines;
                self.envelope(Method::GET, &path, &[p("start", start), p("limit", lines)])
                    .await?
            }
            _ => head,
        };
        Ok(page
            .get("data")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e.get("t").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn version(&self) -> Result<PveVersion> {
        let path = "/version";
        let data = self.data(Method::GET, path, &[]).await?;
        let text = |k: &str| data.get(k).map(text_of).unwrap_or_default();
        let version = PveVersion {
            version: text("version"),
            release: text("release"),
            repoid: text("repoid"),
        };
        if version.version.is_empty() && version.release.is_empty() {
            return Err(Error::Decode {
                path: path.into(),
                reason: format!("no version in {data}"),
            });
        }
        Ok(version)
    }

    async fn permissions(&self, acl_path: &str) -> Result<BTreeMap<String, bool>> {
        let path = "/access/permissions";
        let data = self.data(Method::GET, path, &[p("path", acl_path)]).await?;
        // `{path: {privilege: propagate}}`; a path without privileges may be
        // `{path: {}}` or absent.
        let Some(privileges) = data.get(acl_path) else {
            return Ok(BTreeMap::new());
        };
        let map = privileges.as_object().ok_or_else(|| Error::Decode {
            path: path.into(),
            reason: format!("expected privileges for {acl_path}, got {privileges}"),
        })?;
        Ok(map
            .iter()
            .map(|(privilege, propagate)| (privilege.clone(), flag(Some(propagate))))
            .collect())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let path = "/nodes";
        let data = self.data(Method::GET, path, &[]).await?;
        let items = data.as_array().ok_or_else(|| Error::Decode {
            path: path.into(),
            reason: "expected a list".into(),
        })?;
        items
            .iter()
            .map(|n| {
                let node = n
                    .get("node")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Decode {
                        path: path.into(),
                        reason: format!("a node without a name: {n}"),
                    })?;
                let status = match n.get("status").and_then(Value::as_str) {
                    Some("online") => NodeStatus::Online,
                    Some("offline") => NodeStatus::Offline,
                    _ => NodeStatus::Unknown,
                };
                Ok(NodeInfo {
                    node: node.to_string(),
                    status,
                })
            })
            .collect()
    }

    async fn storage_status(&self, node: &str, storage: &str) -> Result<StorageStatus> {
        let path = format!("/nodes/{}/storage/{}/status", seg(node), seg(storage));
        let data = self.data(Method::GET, &path, &[]).await?;
        if !data.is_object() {
            return Err(Error::Decode {
                path,
                reason: format!("expected an object, got {data}"),
            });
        }
        Ok(StorageStatus {
            storage: storage.to_string(),
            kind: data.get("type").map(text_of).unwrap_or_default(),
            content: data
                .get("content")
                .map(text_of)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            total: number(data.get("total")),
            used: number(data.get("used")),
            avail: number(data.get("avail")),
            enabled: opt_flag(data.get("enabled")),
            active: opt_flag(data.get("active")),
            shared: opt_flag(data.get("shared")),
        })
    }
}
