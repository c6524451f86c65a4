use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{AuthKey, Device, Error, KeyRequest, Result, TailscaleApi};

/// How to reach the Tailscale API with an OAuth client.
#[derive(Debug, Clone)]
pub struct TailscaleSettings {
    /// `https://api.tailscale.com`.
    pub base_url: String,
    /// The tailnet, `-` for the credential's own.
    pub tailnet: String,
    /// OAuth client id.
    pub client_id: SecretString,
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl TailscaleSettings {
    /// The public API, the credential's own tailnet, 30 s timeout.
    pub fn new(client_id: SecretString, client_secret: SecretString) -> Self {
        Self {
            base_url: "https://api.tailscale.com".into(),
            tailnet: "-".into(),
            client_id,
            client_secret,
            timeout: Duration::from_secs(30),
        }
    }
}

struct Token {
    value: SecretString,
    refresh_at: Instant,
}

/// The real client: exchanges the OAuth client for a 1 h access token, cached until
/// a minute before it expires.
pub struct TailscaleClient {
    http: reqwest::Client,
    settings: TailscaleSettings,
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for TailscaleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailscaleClient")
            .field("base_url", &self.settings.base_url)
            .field("tailnet", &self.settings.tailnet)
            .finish_non_exhaustive()
    }
}

impl TailscaleClient {
    /// A client from settings.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(settings: TailscaleSettings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Self::with_client(http, settings))
    }

    /// A client over an existing `reqwest::Client` (tests point `base_url` at wiremock).
    pub fn with_client(http: reqwest::Client, settings: TailscaleSettings) -> Self {
        Self {
            http,
            settings,
            token: Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<SecretString> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let url = format!(
            "{}/api/v2/oauth/token",
            self.settings.base_url.trim_end_matches('/')
        );
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.settings.client_id.expose_secret()),
            ("client_secret", self.settings.client_secret.expose_secret()),
        ];
        let resp = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::Unreachable(reason(&e)))?;
        let body = check("oauth token", resp).await?;
        let value = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Decode {
                op: "oauth token",
                reason: "no access_token".into(),
            })?;
        let ttl = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let token = SecretString::from(value.to_string());
        *cached = Some(Token {
            value: token.clone(),
            refresh_at: Instant::now() + Duration::from_secs(ttl.saturating_sub(60)),
        });
        Ok(token)
    }

    async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let token = self.token().await?;
        let url = format!(
            "{}/api/v2{path}",
            self.settings.base_url.trim_end_matches('/')
        );
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token.expose_secret());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Unreachable(reason(&e)))?;
        check(op, resp).await
    }
}

fn reason(e: &reqwest::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    detail
}

async fn check(op: &'static str, resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp
        .text()
        .await
        .map_err(|e| Error::Unreachable(reason(&e)))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        return Err(Error::api(op, status.as_u16(), message, retry_after));
    }
    if status == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    Ok(body)
}

fn tailnet_path(tailnet: &str) -> String {
    percent_encode(tailnet)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[async_trait]
impl TailscaleApi for TailscaleClient {
    async fn create_key(&self, r: &KeyRequest) -> Result<AuthKey> {
        let body = json!({
            "capabilities": { "devices": { "create": {
                "reusable": r.reusable, "ephemeral": r.ephemeral, "preauthorized": r.preauthorized, "tags": r.tags
            } } },
            "expirySeconds": r.expiry_seconds,
            "description": r.description,
        });
        let v = self
            .call(
                "create key",
                Method::POST,
                &format!("/tailnet/{}/keys", tailnet_path(&self.settings.tailnet)),
                Some(body),
            )
            .await?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(AuthKey {
            id: field("id").ok_or_else(|| Error::Decode {
                op: "create key",
                reason: "no id".into(),
            })?,
            key: SecretString::from(field("key").ok_or_else(|| Error::Decode {
                op: "create key",
                reason: "no key".into(),
            })?),
            expires: field("expires").unwrap_or_default(),
        })
    }

    async fn list_devices(&self) -> Result<Vec<Device>> {
        let v = self
            .call(
                "list devices",
                Method::GET,
                &format!("/tailnet/{}/devices", tailnet_path(&self.settings.tailnet)),
                None,
            )
            .await?;
        let devices = v
            .get("devices")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(devices
            .iter()
            .filter_map(|d| {
                Some(Device {
                    node_id: d.get("nodeId")?.as_str()?.to_string(),
                    hostname: d
                        .get("hostname")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    name: d
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    tags: d
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|t| {
                            t.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    ephemeral: d
                        .get("isEphemeral")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    connected: d
                        .get("connectedToControl")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            })
            .collect())
    }

    async fn delete_device(&self, node_id: &str) -> Result<()> {
        self.call(
            "delete device",
            Method::DELETE,
            &format!("/device/{}", percent_encode(node_id)),
            None,
        )
        .await
        .map(|_| ())
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        self.call(
            "revoke key",
            Method::DELETE,
            &format!(
                "/tailnet/{}/keys/{}",
                tailnet_path(&self.settings.tailnet),
                percent_encode(id)
            ),
            None,
        )
        .await
        .map(|_| ())
    }
}
