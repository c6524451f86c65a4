use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::{Error, Result, VaultApi};

/// How to reach Vault.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// `https://vault.example:8200`.
    pub address: String,
    /// A token with the policies Castle needs.
    pub token: SecretString,
    /// A PEM CA (or bundle) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification; only for a lab Vault whose certificate cannot be pinned.
    pub insecure: bool,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

impl VaultSettings {
    /// Settings with 5 s connect and 30 s request timeouts.
    pub fn new(address: impl Into<String>, token: SecretString) -> Self {
        Self {
            address: address.into(),
            token,
            ca_file: None,
            insecure: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The real Vault/OpenBao HTTP client.
#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("base", &self.base)
            .field("token", &"(redacted)")
            .finish()
    }
}

impl VaultClient {
    /// A client from settings: TLS verified (against `ca_file` alone when given),
    /// unverified only with `insecure`.
    ///
    /// # Errors
    /// The CA file cannot be read or parsed.
    pub fn new(settings: VaultSettings) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Setup(format!("reading CA {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Setup(format!("CA {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(Error::Setup(format!(
                    "CA {} holds no PEM certificate",
                    ca.display()
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
        let http = builder.build().map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Self::with_client(http, &settings.address, settings.token))
    }

    /// A client over an existing `reqwest::Client` (tests point it at wiremock).
    pub fn with_client(http: reqwest::Client, address: &str, token: SecretString) -> Self {
        Self {
            http,
            base: format!("{}/v1/", address.trim_end_matches('/')),
            token,
        }
    }

    async fn call(
        &self,
        method: Method,
        name: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Vault-Token", self.token.expose_secret());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| Error::Unreachable {
            address: self.base.clone(),
            reason: without_url(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| Error::Unreachable {
            address: self.base.clone(),
            reason: without_url(&e),
        })?;
        if status == StatusCode::NOT_FOUND && (name == "GET" || name == "LIST") {
            return Ok(None);
        }
        if !status.is_success() {
            let errors = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").and_then(Value::as_array).cloned())
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_else(|| vec![status.canonical_reason().unwrap_or("error").to_string()]);
            return Err(Error::api(name, path, status.as_u16(), errors));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let mut data = v.get("data").cloned().unwrap_or(Value::Null);
        if let (Some(lease), Value::Object(map)) = (
            v.get("lease_id")
                .filter(|l| l.as_str().is_some_and(|s| !s.is_empty())),
            &mut data,
        ) {
            map.insert("lease_id".into(), lease.clone());
            map.insert(
                "lease_duration".into(),
                v.get("lease_duration").cloned().unwrap_or(Value::Null),
            );
        }
        Ok(if data.is_null() { None } else { Some(data) })
    }
}

/// reqwest errors print the URL; ours never carries secrets, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[async_trait]
impl VaultApi for VaultClient {
    async fn read(&self, path: &str) -> Result<Option<Value>> {
        self.call(Method::GET, "GET", path, None).await
    }

    async fn write(&self, path: &str, body: Value) -> Result<Option<Value>> {
        self.call(Method::POST, "POST", path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, "DELETE", path, None)
            .await
            .map(|_| ())
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let list = Method::from_bytes(b"LIST").map_err(|e| Error::Setup(e.to_string()))?;
        let data = self.call(list, "LIST", path, None).await?;
        Ok(data
            .and_then(|d| d.get("keys").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect())
    }

    async fn seal_status(&self) -> Result<crate::SealStatus> {
        let path = "sys/seal-status";
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            address: self.base.clone(),
            reason: without_url(&e),
        };
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(Error::api(
                "GET",
                path,
                status.as_u16(),
                vec![status.canonical_reason().unwrap_or("error").to_string()],
            ));
        }
        serde_json::from_str(&text).map_err(|e| Error::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }
}
