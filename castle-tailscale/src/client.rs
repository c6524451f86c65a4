//! The real client: OAuth client credentials, then Bearer calls to API v2.

use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use std::collections::BTreeMap;

use crate::{
    AuthKey, Device, Error, Grant, KeyInfo, KeyRequest, OauthClientInfo, Op, Result, TailscaleApi,
};

/// Path segments keep only unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A token is renewed this long before it expires, so no call carries a token that
/// dies in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// How to reach the Tailscale API with an OAuth client.
#[derive(Debug, Clone)]
pub struct TailscaleSettings {
    /// `https://api.tailscale.com` (the public API: verified against the web PKI).
    pub base_url: String,
    /// The tailnet, `-` for the OAuth client's own.
    pub tailnet: String,
    /// OAuth client id.
    pub client_id: SecretString,
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// Scopes to ask for (space-joined into `scope`); empty asks for all the
    /// client's scopes.
    pub scopes: Vec<String>,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl TailscaleSettings {
    /// The public API, the client's own tailnet, all its scopes, 10 s to connect and
    /// 30 s per request.
    pub fn new(client_id: SecretString, client_secret: SecretString) -> Self {
        Self {
            base_url: "https://api.tailscale.com".into(),
            tailnet: "-".into(),
            client_id,
            client_secret,
            scopes: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

struct Token {
    value: SecretString,
    refresh_at: Instant,
}

/// The real client. Access tokens (1 h) are cached until a minute before they
/// expire; concurrent calls share one exchange.
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

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    /// The granted scopes, space-separated.
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct PolicyFile {
    #[serde(default, rename = "tagOwners")]
    tag_owners: Option<BTreeMap<String, Option<Vec<String>>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientRecord {
    #[serde(default)]
    key_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    scopes: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct KeyResponse {
    id: String,
    key: String,
    #[serde(default)]
    expires: String,
}

/// The API writes an empty list as `null` (Go's nil slice): read it as empty.
fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct DevicesResponse {
    #[serde(default, deserialize_with = "null_as_empty")]
    devices: Vec<WireDevice>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDevice {
    node_id: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    tags: Vec<String>,
    #[serde(default)]
    is_ephemeral: bool,
    /// Absent means unknown, not offline.
    #[serde(default)]
    connected_to_control: Option<bool>,
}

#[derive(Deserialize)]
struct KeysResponse {
    #[serde(default, deserialize_with = "null_as_empty")]
    keys: Vec<WireKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireKey {
    id: String,
    #[serde(default)]
    key_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    invalid: bool,
    #[serde(default)]
    revoked: Option<String>,
}

impl TailscaleClient {
    /// A client from settings: rustls, certificates verified, both timeouts set.
    ///
    /// # Errors
    /// [`Error::Setup`]: the HTTP client cannot be built.
    pub fn new(settings: TailscaleSettings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| Error::Setup { reason: reason(&e) })?;
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

    fn url(&self, path: &str) -> String {
        format!(
            "{}/api/v2{path}",
            self.settings.base_url.trim_end_matches('/')
        )
    }

    fn tailnet(&self) -> String {
        utf8_percent_encode(&self.settings.tailnet, SEGMENT).to_string()
    }

    /// The cached token, or a fresh one. The lock is held across the exchange so
    /// that concurrent callers wait for it instead of each minting a token.
    async fn token(&self) -> Result<SecretString> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let body = self.exchange(&self.settings.scopes.join(" ")).await?;
        let ttl = Duration::from_secs(body.expires_in.unwrap_or(3600));
        let value = SecretString::from(body.access_token);
        *cached = Some(Token {
            value: value.clone(),
            refresh_at: Instant::now() + ttl.saturating_sub(REFRESH_MARGIN.min(ttl / 2)),
        });
        Ok(value)
    }

    /// One client-credentials exchange asking for `scope` (empty: all of the
    /// client's scopes).
    async fn exchange(&self, scope: &str) -> Result<TokenResponse> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.settings.client_id.expose_secret()),
            ("client_secret", self.settings.client_secret.expose_secret()),
        ];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        let resp = self
            .http
            .post(self.url("/oauth/token"))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable(Op::Token, &e))?;
        decode(Op::Token, check(Op::Token, resp).await?)
    }

    async fn call(
        &self,
        op: Op,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let token = self.token().await?;
        let mut req = self
            .http
            .request(method, self.url(path))
            .header(reqwest::header::ACCEPT, "application/json")
            .bearer_auth(token.expose_secret());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| unreachable(op, &e))?;
        check(op, resp).await
    }
}

/// The innermost cause only: the outer layers of a reqwest error repeat the URL.
fn reason(e: &reqwest::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    detail
}

fn unreachable(op: Op, e: &reqwest::Error) -> Error {
    Error::Unreachable {
        op,
        reason: reason(e),
        // A connection that was never made carried no request.
        sent: !(e.is_connect() || e.is_builder()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(op: Op, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Decode {
        op,
        reason: e.to_string(),
    })
}

/// The body of a success, or the error the answer means.
async fn check(op: Op, resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.map_err(|e| Error::Unreachable {
        op,
        reason: reason(&e),
        sent: true,
    })?;
    let body: Option<Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return Ok(body.unwrap_or(Value::Null));
    }
    // API errors are `{"message"}`; the token endpoint may answer RFC 6749's
    // `{"error", "error_description"}` instead.
    let field = |k: &str| {
        body.as_ref()
            .and_then(|b| b.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let message = field("message")
        .or_else(|| field("error_description"))
        .or_else(|| field("error"))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    Err(Error::api(op, status.as_u16(), message, retry_after))
}

#[async_trait]
impl TailscaleApi for TailscaleClient {
    async fn create_key(&self, r: &KeyRequest) -> Result<AuthKey> {
        r.validate()?;
        let body = json!({
            "keyType": "auth",
            "capabilities": { "devices": { "create": {
                "reusable": r.reusable,
                "ephemeral": r.ephemeral,
                "preauthorized": r.preauthorized,
                "tags": r.tags,
            } } },
            "expirySeconds": r.expiry_seconds,
            "description": r.description,
        });
        let path = format!("/tailnet/{}/keys", self.tailnet());
        let v = self
            .call(Op::CreateKey, Method::POST, &path, Some(&body))
            .await?;
        let k: KeyResponse = decode(Op::CreateKey, v)?;
        Ok(AuthKey {
            id: k.id,
            key: SecretString::from(k.key),
            expires: k.expires,
        })
    }

    async fn list_devices(&self) -> Result<Vec<Device>> {
        let path = format!("/tailnet/{}/devices", self.tailnet());
        let v = self.call(Op::ListDevices, Method::GET, &path, None).await?;
        let list: DevicesResponse = decode(Op::ListDevices, v)?;
        Ok(list
            .devices
            .into_iter()
            .map(|d| Device {
                node_id: d.node_id,
                hostname: d.hostname,
                name: d.name,
                tags: d.tags,
                ephemeral: d.is_ephemeral,
                connected: d.connected_to_control,
            })
            .collect())
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let path = format!("/tailnet/{}/keys", self.tailnet());
        let v = self
            .call(Op::ListKeys, Method::GET, &format!("{path}?all=true"), None)
            .await?;
        let list: KeysResponse = decode(Op::ListKeys, v)?;
        let mut keys = Vec::with_capacity(list.keys.len());
        for k in list.keys {
            // Older answers list ids only (the Go client reads nothing else):
            // the details come from the key itself.
            let k = if k.description.is_none() {
                let one = format!("{path}/{}", utf8_percent_encode(&k.id, SEGMENT));
                decode(
                    Op::ListKeys,
                    self.call(Op::ListKeys, Method::GET, &one, None).await?,
                )?
            } else {
                k
            };
            keys.push(KeyInfo {
                id: k.id,
                key_type: k.key_type.unwrap_or_else(|| "auth".into()),
                description: k.description.unwrap_or_default(),
                invalid: k.invalid || k.revoked.is_some(),
            });
        }
        Ok(keys)
    }

    async fn delete_device(&self, node_id: &str) -> Result<()> {
        let path = format!("/device/{}", utf8_percent_encode(node_id, SEGMENT));
        self.call(Op::DeleteDevice, Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        let path = format!(
            "/tailnet/{}/keys/{}",
            self.tailnet(),
            utf8_percent_encode(id, SEGMENT)
        );
        self.call(Op::RevokeKey, Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    async fn grant(&self, scopes: &[String]) -> Result<Grant> {
        let body = self.exchange(&scopes.join(" ")).await?;
        // The access token goes out of scope here, unused.
        Ok(Grant {
            scopes: body
                .scope
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            expires_in: body.expires_in,
        })
    }

    async fn tag_owners(&self) -> Result<BTreeMap<String, Vec<String>>> {
        // `Accept: application/json` (set on every call) asks for JSON, not HuJSON.
        let path = format!("/tailnet/{}/acl", self.tailnet());
        let v = self.call(Op::ReadPolicy, Method::GET, &path, None).await?;
        let policy: PolicyFile = decode(Op::ReadPolicy, v)?;
        Ok(policy
            .tag_owners
            .unwrap_or_default()
            .into_iter()
            .map(|(tag, owners)| (tag, owners.unwrap_or_default()))
            .collect())
    }

    async fn oauth_client(&self) -> Result<OauthClientInfo> {
        let path = format!(
            "/tailnet/{}/keys/{}",
            self.tailnet(),
            utf8_percent_encode(self.settings.client_id.expose_secret(), SEGMENT)
        );
        let v = self.call(Op::ReadClient, Method::GET, &path, None).await?;
        let record: ClientRecord = decode(Op::ReadClient, v)?;
        if record.key_type.as_deref().is_some_and(|t| t != "client") {
            return Err(Error::Decode {
                op: Op::ReadClient,
                reason: format!(
                    "the record is a `{}` key, not the OAuth client",
                    record.key_type.unwrap_or_default()
                ),
            });
        }
        Ok(OauthClientInfo {
            scopes: record.scopes,
            tags: record.tags,
        })
    }
}
