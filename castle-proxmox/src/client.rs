use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::{CloneRequest, Error, ProxmoxApi, Result, Upid, VmConfig, VmStatus, VmSummary};

/// How to reach Proxmox VE.
#[derive(Debug, Clone)]
pub struct ProxmoxSettings {
    /// `https://pve.example:8006`.
    pub endpoint: String,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    /// The token's secret.
    pub token: SecretString,
    /// A PEM CA to pin.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (only when the config says so).
    pub insecure: bool,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

impl ProxmoxSettings {
    /// Settings with verified TLS and 5 s / 60 s timeouts.
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
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The real Proxmox VE API client (API-token auth, no CSRF needed).
#[derive(Clone)]
pub struct ProxmoxClient {
    http: reqwest::Client,
    base: String,
    auth: SecretString,
}

impl std::fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("base", &self.base)
            .field("auth", &"PVEAPIToken=(redacted)")
            .finish()
    }
}

impl ProxmoxClient {
    /// A client from settings.
    ///
    /// # Errors
    /// The CA file cannot be read.
    pub fn new(settings: ProxmoxSettings) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Setup(format!("reading CA {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Error::Setup(format!("CA {}: {e}", ca.display())))?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        if settings.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Self::with_client(
            http,
            &settings.endpoint,
            &settings.token_id,
            &settings.token,
        ))
    }

    /// A client over an existing `reqwest::Client` (tests point it at wiremock).
    pub fn with_client(
        http: reqwest::Client,
        endpoint: &str,
        token_id: &str,
        token: &SecretString,
    ) -> Self {
        Self {
            http,
            base: format!("{}/api2/json", endpoint.trim_end_matches('/')),
            auth: SecretString::from(format!("PVEAPIToken={token_id}={}", token.expose_secret())),
        }
    }

    async fn call(
        &self,
        method: Method,
        name: &'static str,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("Authorization", self.auth.expose_secret());
        req = if method == Method::GET || method == Method::DELETE {
            req.query(params)
        } else {
            req.form(params)
        };
        let resp = req.send().await.map_err(|e| Error::Unreachable {
            endpoint: self.base.clone(),
            reason: reason(&e),
        })?;
        let status = resp.status();
        let phrase = status.canonical_reason().unwrap_or("error").to_string();
        let text = resp.text().await.map_err(|e| Error::Unreachable {
            endpoint: self.base.clone(),
            reason: reason(&e),
        })?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let params = body
                .get("errors")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (k.clone(), v.as_str().unwrap_or_default().trim().to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .map(|m| m.trim().to_string())
                .unwrap_or(phrase);
            return Err(Error::Api {
                method: name,
                path: path.to_string(),
                status: status.as_u16(),
                message,
                params,
            });
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    async fn upid(
        &self,
        method: Method,
        name: &'static str,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Upid> {
        let data = self.call(method, name, path, params).await?;
        let raw = data.as_str().ok_or_else(|| Error::Decode {
            path: path.into(),
            reason: format!("expected a UPID, got {data}"),
        })?;
        Upid::parse(raw)
    }
}

fn reason(e: &reqwest::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!("timed out: {detail}")
    } else {
        detail
    }
}

fn tags(v: &Value) -> Vec<String> {
    v.as_str()
        .map(|s| {
            s.split([';', ',', ' '])
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn flag(v: Option<&Value>) -> bool {
    v.is_some_and(|v| v.as_u64() == Some(1) || v.as_bool() == Some(true) || v.as_str() == Some("1"))
}

#[async_trait]
impl ProxmoxApi for ProxmoxClient {
    async fn list_vms(&self) -> Result<Vec<VmSummary>> {
        let data = self
            .call(
                Method::GET,
                "GET",
                "/cluster/resources",
                &[("type", "vm".into())],
            )
            .await?;
        let items = data.as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) == Some("qemu"))
            .filter_map(|v| {
                Some(VmSummary {
                    vmid: u32::try_from(v.get("vmid")?.as_u64()?).ok()?,
                    node: v.get("node")?.as_str()?.to_string(),
                    name: v
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    status: v
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    template: flag(v.get("template")),
                    tags: tags(v.get("tags").unwrap_or(&Value::Null)),
                    lock: v.get("lock").and_then(Value::as_str).map(str::to_string),
                })
            })
            .collect())
    }

    async fn vm_status(&self, node: &str, vmid: u32) -> Result<Option<VmStatus>> {
        let path = format!("/nodes/{node}/qemu/{vmid}/status/current");
        let data = match self.call(Method::GET, "GET", &path, &[]).await {
            Ok(d) => d,
            // Proxmox answers a missing VM with 500 "Configuration file ... does not exist".
            Err(Error::Api { message, .. }) if message.contains("does not exist") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(Some(VmStatus {
            status: data
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            name: data
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            tags: tags(data.get("tags").unwrap_or(&Value::Null)),
            lock: data.get("lock").and_then(Value::as_str).map(str::to_string),
            template: flag(data.get("template")),
        }))
    }

    async fn clone_vm(&self, node: &str, template: u32, r: &CloneRequest) -> Result<Upid> {
        let mut p = vec![
            ("newid", r.newid.to_string()),
            ("name", r.name.clone()),
            ("full", if r.full { "1" } else { "0" }.to_string()),
        ];
        if let Some(s) = &r.storage {
            p.push(("storage", s.clone()));
        }
        if let Some(d) = &r.description {
            p.push(("description", d.clone()));
        }
        self.upid(
            Method::POST,
            "POST",
            &format!("/nodes/{node}/qemu/{template}/clone"),
            &p,
        )
        .await
    }

    async fn configure(&self, node: &str, vmid: u32, c: &VmConfig) -> Result<()> {
        self.call(
            Method::PUT,
            "PUT",
            &format!("/nodes/{node}/qemu/{vmid}/config"),
            &c.params(),
        )
        .await
        .map(|_| ())
    }

    async fn resize_disk(&self, node: &str, vmid: u32, disk: &str, gib: u32) -> Result<()> {
        self.call(
            Method::PUT,
            "PUT",
            &format!("/nodes/{node}/qemu/{vmid}/resize"),
            &[("disk", disk.to_string()), ("size", format!("{gib}G"))],
        )
        .await
        .map(|_| ())
    }

    async fn start(&self, node: &str, vmid: u32) -> Result<Upid> {
        self.upid(
            Method::POST,
            "POST",
            &format!("/nodes/{node}/qemu/{vmid}/status/start"),
            &[],
        )
        .await
    }

    async fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<Upid> {
        self.upid(
            Method::POST,
            "POST",
            &format!("/nodes/{node}/qemu/{vmid}/status/shutdown"),
            &[("timeout", timeout.as_secs().to_string())],
        )
        .await
    }

    async fn stop(&self, node: &str, vmid: u32) -> Result<Upid> {
        self.upid(
            Method::POST,
            "POST",
            &format!("/nodes/{node}/qemu/{vmid}/status/stop"),
            &[],
        )
        .await
    }

    async fn delete(&self, node: &str, vmid: u32) -> Result<Upid> {
        self.upid(
            Method::DELETE,
            "DELETE",
            &format!("/nodes/{node}/qemu/{vmid}"),
            &[
                ("purge", "1".into()),
                ("destroy-unreferenced-disks", "1".into()),
            ],
        )
        .await
    }

    async fn next_id(&self) -> Result<u32> {
        let data = self
            .call(Method::GET, "GET", "/cluster/nextid", &[])
            .await?;
        data.as_u64()
            .or_else(|| data.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::Decode {
                path: "/cluster/nextid".into(),
                reason: format!("not an id: {data}"),
            })
    }

    async fn task_status(&self, upid: &Upid) -> Result<Option<String>> {
        let path = format!("/nodes/{}/tasks/{}/status", upid.node, encode(&upid.raw));
        let data = self.call(Method::GET, "GET", &path, &[]).await?;
        if data.get("status").and_then(Value::as_str) == Some("running") {
            return Ok(None);
        }
        Ok(Some(
            data.get("exitstatus")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
        ))
    }

    async fn task_log_tail(&self, upid: &Upid, lines: usize) -> Result<String> {
        let path = format!("/nodes/{}/tasks/{}/log", upid.node, encode(&upid.raw));
        let data = self
            .call(Method::GET, "GET", &path, &[("limit", "500".into())])
            .await?;
        let all: Vec<String> = data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("t").and_then(Value::as_str).map(str::to_string))
            .collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
