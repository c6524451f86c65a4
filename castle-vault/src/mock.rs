use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result, VaultApi};

/// Modelled call durations (seconds) times `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// A read or list.
    pub read: f64,
    /// A configuration write or delete.
    pub write: f64,
    /// Enabling or disabling a secrets engine or auth method.
    pub mount: f64,
    /// Database credentials: Vault creates the user in PostgreSQL first.
    pub creds: f64,
    /// Real seconds per modelled second.
    pub scale: f64,
}

impl Latency {
    /// No delay.
    pub fn instant() -> Self {
        Self {
            read: 0.0,
            write: 0.0,
            mount: 0.0,
            creds: 0.0,
            scale: 0.0,
        }
    }

    /// Vault on a VM reached over the tailnet, as in the reference setup: reads
    /// ~50 ms, writes ~100 ms (storage sync), mounts ~300 ms (plugin start),
    /// database credentials ~250 ms (a round trip to PostgreSQL).
    pub fn lab() -> Self {
        Self {
            read: 0.05,
            write: 0.1,
            mount: 0.3,
            creds: 0.25,
            scale: 1.0,
        }
    }

    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    fn of(&self, method: &str, path: &str) -> Duration {
        let modelled = if path.contains("/creds/") {
            self.creds
        } else if (path.starts_with("sys/mounts/") || path.starts_with("sys/auth/"))
            && method != "GET"
        {
            self.mount
        } else if method == "GET" || method == "LIST" {
            self.read
        } else {
            self.write
        };
        Duration::from_secs_f64((modelled * self.scale).max(0.0))
    }
}

/// Seeded transient faults (503s at a rate).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rate: f64,
    seed: u64,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Transient 503s on `rate` of the calls, reproducibly for a seed.
    pub fn transient(seed: u64, rate: f64) -> Self {
        Self {
            rate: rate.clamp(0.0, 1.0),
            seed,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

/// The simulated server's state. KV values are kept as written: the lab's Vault
/// only ever holds values the lab generated itself, as a real Vault keeps them on
/// its disk. Passwords handed to Vault (database admin) are kept only as digests.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct World {
    /// sha256 of the one token the server knows, once set: a handle presenting
    /// another gets 403 "permission denied", as OpenBao answers an unknown token.
    #[serde(default)]
    token: Option<String>,
    /// `path/` -> {type, options}.
    auth: BTreeMap<String, Value>,
    mounts: BTreeMap<String, Value>,
    policies: BTreeMap<String, String>,
    /// Other logical objects by path (jwt config and roles, database config and roles).
    objects: BTreeMap<String, Value>,
    /// KV v2: `<mount>/data/<path>` -> versions, `null` for a deleted version.
    kv: BTreeMap<String, Vec<Value>>,
    /// lease id -> the creds path it came from.
    leases: BTreeMap<String, String>,
    next_lease: u64,
    #[serde(skip_serializing_if = "is_false")]
    sealed: bool,
}

#[derive(Debug)]
struct Inner {
    world: World,
    latency: Latency,
    faults: Faults,
    /// Path prefix -> message of a permanent 403.
    permanent: BTreeMap<String, String>,
    /// `host:port` of databases a verified connection reaches.
    databases: BTreeSet<String>,
    rng: StdRng,
    calls: u64,
}

/// A stateful Vault holding the rules Castle relies on: a path needs its mount, a
/// jwt role needs a user claim and a bound constraint, KV v2 check-and-set, policies
/// checked as OpenBao checks them (HCL read by a real parser; the few HCL 1 only
/// forms it cannot read are refused) and the built-in policies, database
/// credentials create leases that revoke-prefix removes, a database mount with live
/// leases is not disabled.
#[derive(Debug, Clone)]
pub struct MockVault {
    inner: Arc<Mutex<Inner>>,
    /// sha256 of the token this handle presents (`X-Vault-Token`); `None`: a handle
    /// for tests that do not model tokens.
    presented: Option<String>,
}

impl Default for MockVault {
    fn default() -> Self {
        Self::new()
    }
}

fn not_found(path: &str) -> Error {
    Error::api(
        "GET",
        path,
        404,
        vec![format!(
            "no handler for route \"{path}\". route entry not found."
        )],
    )
}

fn bad(method: &'static str, path: &str, msg: &str) -> Error {
    Error::api(method, path, 400, vec![msg.to_string()])
}

/// The database engine reports missing pieces at credential time as 500s.
fn db_failure(path: &str, msg: &str) -> Error {
    Error::api(
        "GET",
        path,
        500,
        vec![format!("1 error occurred:\n\t* {msg}\n\n")],
    )
}

const DEFAULT_POLICY: &str = "# Allow tokens to look up their own properties\npath \"auth/token/lookup-self\" {\n    capabilities = [\"read\"]\n}\n";

impl MockVault {
    /// An unsealed, empty Vault with the default mounts and the `default` and
    /// `root` policies.
    pub fn new() -> Self {
        let world = World {
            mounts: [
                ("sys/".to_string(), json!({"type": "system"})),
                ("cubbyhole/".to_string(), json!({"type": "cubbyhole"})),
                ("identity/".to_string(), json!({"type": "identity"})),
            ]
            .into(),
            auth: [("token/".to_string(), json!({"type": "token"}))].into(),
            policies: [
                ("default".to_string(), DEFAULT_POLICY.to_string()),
                ("root".to_string(), String::new()),
            ]
            .into(),
            ..World::default()
        };
        Self {
            inner: Arc::new(Mutex::new(Inner {
                world,
                latency: Latency::instant(),
                faults: Faults::none(),
                permanent: BTreeMap::new(),
                databases: BTreeSet::new(),
                rng: StdRng::seed_from_u64(0),
                calls: 0,
            })),
            presented: None,
        }
    }

    /// The server knows exactly `token` (its root token) from now on: a handle from
    /// [`with_presented_token`](Self::with_presented_token) must present it.
    pub fn set_token(&self, token: &secrecy::SecretString) {
        use secrecy::ExposeSecret as _;
        self.lock().world.token = Some(hex::encode(Sha256::digest(
            token.expose_secret().as_bytes(),
        )));
    }

    /// The same server, called with `token` as a client's `X-Vault-Token`.
    pub fn with_presented_token(&self, token: &secrecy::SecretString) -> Self {
        use secrecy::ExposeSecret as _;
        Self {
            inner: Arc::clone(&self.inner),
            presented: Some(hex::encode(Sha256::digest(
                token.expose_secret().as_bytes(),
            ))),
        }
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(self, latency: Latency) -> Self {
        self.lock().latency = latency;
        self
    }

    /// Sets the transient fault model.
    #[must_use]
    pub fn with_faults(self, faults: Faults) -> Self {
        {
            let mut inner = self.lock();
            inner.rng = StdRng::seed_from_u64(faults.seed);
            inner.faults = faults;
        }
        self
    }

    /// A PostgreSQL at `host:port` that database connections written with
    /// `verify_connection = true` reach; any other address is refused, as Vault
    /// refuses a connection it cannot verify.
    #[must_use]
    pub fn with_database(self, host_port: &str) -> Self {
        self.lock().databases.insert(host_port.to_string());
        self
    }

    /// Every call on a path starting with `prefix` (e.g. `database/config`,
    /// `sys/auth`) fails with a 403 and `message`, as a token lacking a policy would.
    pub fn fail_permanently(&self, prefix: &str, message: &str) {
        self.lock()
            .permanent
            .insert(prefix.to_string(), message.to_string());
    }

    /// Removes transient and permanent faults.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.faults = Faults::none();
        inner.permanent.clear();
    }

    /// Seals or unseals: a sealed Vault answers 503 to everything.
    pub fn set_sealed(&self, sealed: bool) {
        self.lock().world.sealed = sealed;
    }

    /// How many calls were made.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Live leases, by creds path (`database/creds/grafana`).
    pub fn leases(&self) -> Vec<String> {
        self.lock().world.leases.values().cloned().collect()
    }

    /// The world as JSON, for the lab's mode-0600 state file. It holds KV values
    /// the simulated Vault was given by the lab (generated there, as a real Vault
    /// keeps them on its disk) and only digests of database passwords.
    pub fn snapshot(&self) -> Value {
        serde_json::to_value(&self.lock().world).unwrap_or(Value::Null)
    }

    /// Restores a world saved by [`snapshot`](Self::snapshot).
    ///
    /// # Errors
    /// [`Error::Setup`] when the JSON is not a snapshot; the world is left unchanged.
    pub fn restore(&self, snapshot: &Value) -> Result<()> {
        let world: World = serde_json::from_value(snapshot.clone())
            .map_err(|e| Error::Setup(format!("not a vault mock snapshot: {e}")))?;
        if !world.mounts.contains_key("sys/") {
            return Err(Error::Setup(
                "not a vault mock snapshot: it has no sys/ mount".into(),
            ));
        }
        self.lock().world = world;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, method: &'static str, path: &str) -> Result<()> {
        let delay = self.lock().latency.of(method, path);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut inner = self.lock();
        inner.calls += 1;
        // An unknown token is refused before anything else but a sealed server,
        // with OpenBao's answer (403 "permission denied", checked by curl on 2.7.2).
        if !inner.world.sealed
            && let (Some(known), Some(presented)) = (&inner.world.token, &self.presented)
            && known != presented
        {
            return Err(Error::api(
                method,
                path,
                403,
                vec!["permission denied".into()],
            ));
        }
        if inner.world.sealed {
            return Err(Error::api(
                method,
                path,
                503,
                vec!["Vault is sealed".into()],
            ));
        }
        if let Some((_, msg)) = inner
            .permanent
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
        {
            return Err(Error::api(method, path, 403, vec![msg.clone()]));
        }
        let rate = inner.faults.rate;
        if rate > 0.0 && inner.rng.random_bool(rate) {
            return Err(Error::api(
                method,
                path,
                503,
                vec!["injected fault: service unavailable".into()],
            ));
        }
        Ok(())
    }
}

fn mount_of<'a>(table: &'a BTreeMap<String, Value>, path: &str) -> Option<(&'a String, &'a Value)> {
    table
        .iter()
        .filter(|(m, _)| path.starts_with(m.as_str()))
        .max_by_key(|(m, _)| m.len())
}

fn digest(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

fn non_empty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        _ => false,
    }
}

/// `host:port` of a `postgresql://user:pass@host:port/db?...` URL.
fn host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next()
}

impl World {
    fn mount_kind(&self, path: &str) -> Option<(String, String)> {
        mount_of(&self.mounts, path).map(|(m, info)| {
            (
                m.clone(),
                info.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
    }

    fn read(&mut self, path: &str) -> Result<Option<Value>> {
        if path == "sys/auth" {
            return Ok(Some(json!(self.auth)));
        }
        if path == "sys/mounts" {
            return Ok(Some(json!(self.mounts)));
        }
        if let Some(name) = path.strip_prefix("sys/policies/acl/") {
            return Ok(self
                .policies
                .get(name)
                .map(|p| json!({"name": name, "policy": p})));
        }
        if let Some(rest) = path.strip_prefix("auth/") {
            if mount_of(&self.auth, rest).is_none() {
                return Err(not_found(path));
            }
            return Ok(self.objects.get(path).cloned());
        }
        let Some((mount, kind)) = self.mount_kind(path) else {
            return Err(not_found(path));
        };
        let sub = &path[mount.len()..];
        match kind.as_str() {
            "kv" => {
                if let Some(p) = sub.strip_prefix("data/") {
                    let versions = self.kv.get(&format!("{mount}data/{p}"));
                    return Ok(versions.and_then(|v| {
                        let data = v.last().filter(|d| !d.is_null())?;
                        Some(json!({"data": data, "metadata": {"version": v.len()}}))
                    }));
                }
                if let Some(p) = sub.strip_prefix("metadata/") {
                    let versions = self.kv.get(&format!("{mount}data/{p}"));
                    return Ok(versions.map(|v| {
                        let all: serde_json::Map<String, Value> = v
                            .iter()
                            .enumerate()
                            .map(|(i, d)| ((i + 1).to_string(), json!({"deleted": d.is_null()})))
                            .collect();
                        json!({"current_version": v.len(), "versions": all})
                    }));
                }
                Err(not_found(path))
            }
            "database" => {
                if let Some(role) = sub.strip_prefix("creds/") {
                    return self.creds(&mount, role, path).map(Some);
                }
                Ok(self.objects.get(path).cloned())
            }
            _ => Err(not_found(path)),
        }
    }

    fn creds(&mut self, mount: &str, role: &str, path: &str) -> Result<Value> {
        let Some(r) = self.objects.get(&format!("{mount}roles/{role}")) else {
            return Err(bad("GET", path, &format!("unknown role: {role}")));
        };
        let db = r.get("db_name").and_then(Value::as_str).unwrap_or_default();
        let Some(conn) = self.objects.get(&format!("{mount}config/{db}")) else {
            return Err(db_failure(
                path,
                &format!("failed to find entry for connection with name: \"{db}\""),
            ));
        };
        let allowed = conn
            .get("allowed_roles")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == role || x == "*"));
        if !allowed {
            return Err(db_failure(
                path,
                &format!("\"{role}\" is not an allowed role"),
            ));
        }
        if !non_empty(r.get("creation_statements")) {
            return Err(db_failure(path, "empty creation statements"));
        }
        self.next_lease += 1;
        let n = self.next_lease;
        let id = format!("{mount}creds/{role}/lease{n}");
        self.leases
            .insert(id.clone(), format!("{mount}creds/{role}"));
        let ttl = r.get("default_ttl").and_then(Value::as_u64).unwrap_or(3600);
        Ok(json!({
            "username": format!("v-token-{role}-{n}"),
            "password": format!("mock-{n}"),
            "lease_id": id,
            "lease_duration": ttl,
        }))
    }

    fn enable(&mut self, method: &'static str, path: &str, auth: bool, body: &Value) -> Result<()> {
        let name = path
            .trim_start_matches(if auth { "sys/auth/" } else { "sys/mounts/" })
            .trim_end_matches('/');
        let key = format!("{name}/");
        let table = if auth { &self.auth } else { &self.mounts };
        if let Some(taken) = table
            .keys()
            .find(|m| key.starts_with(m.as_str()) || m.starts_with(&key))
        {
            return Err(bad(
                method,
                path,
                &format!("path is already in use at {taken}"),
            ));
        }
        let kind = body.get("type").cloned().unwrap_or(Value::Null);
        let known: &[&str] = if auth { &["jwt"] } else { &["kv", "database"] };
        if !kind.as_str().is_some_and(|k| known.contains(&k)) {
            return Err(bad(
                method,
                path,
                &format!("plugin not found in the catalog: {kind}"),
            ));
        }
        let entry =
            json!({"type": kind, "options": body.get("options").cloned().unwrap_or(Value::Null)});
        if auth {
            self.auth.insert(key, entry);
        } else {
            self.mounts.insert(key, entry);
        }
        Ok(())
    }

    fn write(
        &mut self,
        path: &str,
        body: &Value,
        databases: &BTreeSet<String>,
    ) -> Result<Option<Value>> {
        let field = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
        if path.starts_with("sys/auth/") {
            self.enable("POST", path, true, body)?;
            return Ok(None);
        }
        if path.starts_with("sys/mounts/") {
            self.enable("POST", path, false, body)?;
            return Ok(None);
        }
        if let Some(name) = path.strip_prefix("sys/policies/acl/") {
            let Some(policy) = body
                .get("policy")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
            else {
                return Err(bad("PUT", path, "'policy' parameter not supplied or empty"));
            };
            // OpenBao parses the policy before it looks at the name.
            crate::policy::check_policy(policy).map_err(|e| bad("PUT", path, &e))?;
            if name == "root" {
                return Err(bad("PUT", path, "cannot update \"root\" policy"));
            }
            self.policies
                .insert(name.to_string(), crate::policy::stored_text(policy));
            return Ok(None);
        }
        if let Some(prefix) = path.strip_prefix("sys/leases/revoke-prefix/") {
            self.leases.retain(|id, _| !id.starts_with(prefix));
            return Ok(None);
        }
        if let Some(rest) = path.strip_prefix("auth/") {
            let Some((mount, _)) = mount_of(&self.auth, rest) else {
                return Err(not_found(path));
            };
            let sub = &rest[mount.len()..];
            if sub == "config" {
                return self.jwt_config(path, body).map(|()| None);
            }
            if sub == "login" {
                return self
                    .jwt_login(&format!("auth/{mount}"), path, body)
                    .map(Some);
            }
            if sub.starts_with("role/") && sub.len() > "role/".len() {
                if !non_empty(body.get("user_claim")) {
                    return Err(bad(
                        "POST",
                        path,
                        "a user claim must be defined on the role",
                    ));
                }
                let bound = [
                    "bound_audiences",
                    "bound_subject",
                    "bound_claims",
                    "bound_cidrs",
                ]
                .iter()
                .any(|k| non_empty(body.get(*k)));
                if !bound {
                    return Err(bad(
                        "POST",
                        path,
                        "must have at least one bound constraint when creating/updating a role",
                    ));
                }
                let mut stored = json!({"role_type": "jwt", "bound_subject": "", "bound_claims": null, "bound_audiences": [], "token_policies": [], "token_ttl": 0, "token_max_ttl": 0});
                for (k, v) in body.as_object().into_iter().flatten() {
                    stored[k] = v.clone();
                }
                self.objects.insert(path.to_string(), stored);
                return Ok(None);
            }
            return Err(not_found(path));
        }
        let Some((mount, kind)) = self.mount_kind(path) else {
            return Err(not_found(path));
        };
        let sub = &path[mount.len()..];
        match (kind.as_str(), sub) {
            ("kv", s) if s.starts_with("data/") && s.len() > "data/".len() => {
                let Some(data) = body.get("data").filter(|d| d.is_object()) else {
                    return Err(bad("POST", path, "no data provided"));
                };
                let current = self.kv.get(path).map_or(0, Vec::len) as u64;
                if let Some(cas) = body.pointer("/options/cas").and_then(Value::as_u64)
                    && cas != current
                {
                    return Err(bad(
                        "POST",
                        path,
                        "check-and-set parameter did not match the current version",
                    ));
                }
                let versions = self.kv.entry(path.to_string()).or_default();
                versions.push(data.clone());
                Ok(Some(json!({"version": versions.len()})))
            }
            ("database", s) if s.starts_with("config/") && s.len() > "config/".len() => {
                if !non_empty(body.get("plugin_name")) {
                    return Err(bad("POST", path, "empty plugin name"));
                }
                let url = field("connection_url");
                let Some(url) = url.as_str().filter(|u| !u.is_empty()) else {
                    return Err(bad(
                        "POST",
                        path,
                        "error creating database object: connection_url cannot be empty",
                    ));
                };
                // Vault verifies unless told not to.
                let verify = body
                    .get("verify_connection")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let target = host_port(url).unwrap_or_default();
                if verify && !databases.contains(target) {
                    return Err(bad(
                        "POST",
                        path,
                        &format!(
                            "error creating database object: error verifying connection: dial tcp {target}: connect: connection refused"
                        ),
                    ));
                }
                let password = body
                    .get("password")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.objects.insert(
                    path.to_string(),
                    json!({
                        "plugin_name": field("plugin_name"),
                        "connection_details": {"connection_url": url, "username": field("username")},
                        "allowed_roles": field("allowed_roles"),
                        "password_sha256": digest(password),
                    }),
                );
                Ok(None)
            }
            ("database", s) if s.starts_with("roles/") && s.len() > "roles/".len() => {
                if !non_empty(body.get("db_name")) {
                    return Err(bad("POST", path, "database name is required"));
                }
                let mut stored = json!({"creation_statements": [], "revocation_statements": [], "default_ttl": 0, "max_ttl": 0});
                for (k, v) in body.as_object().into_iter().flatten() {
                    stored[k] = v.clone();
                }
                self.objects.insert(path.to_string(), stored);
                Ok(None)
            }
            _ => Err(not_found(path)),
        }
    }

    /// `auth/<mount>/login` (`jwt_login.rs`): 400 with OpenBao's words on refusal.
    fn jwt_login(&self, mount: &str, path: &str, body: &Value) -> Result<Value> {
        let refuse = |m: &str| bad("PUT", path, m);
        let Some(config) = self.objects.get(&format!("{mount}config")) else {
            return Err(refuse("could not load configuration"));
        };
        let role_name = body
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        if role_name.is_empty() {
            return Err(refuse("missing role"));
        }
        let Some(role) = self.objects.get(&format!("{mount}role/{role_name}")) else {
            return Err(refuse(&format!("role {role_name:?} could not be found")));
        };
        let jwt = body.get("jwt").and_then(Value::as_str).unwrap_or_default();
        if jwt.is_empty() {
            return Err(refuse("missing token"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        crate::jwt_login::login(config, &role_name, role, jwt, now)
            .map(|auth| json!({ "auth": auth }))
            .map_err(|m| refuse(&m))
    }

    fn jwt_config(&mut self, path: &str, body: &Value) -> Result<()> {
        let keys = body
            .get("jwt_validation_pubkeys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let sources = usize::from(!keys.is_empty())
            + ["jwks_url", "oidc_discovery_url"]
                .iter()
                .filter(|k| non_empty(body.get(**k)))
                .count();
        if sources != 1 {
            return Err(bad(
                "POST",
                path,
                "exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs', 'oidc_discovery_url', or 'provider_config' must be set",
            ));
        }
        let pem = |k: &Value| {
            k.as_str().is_some_and(|s| {
                s.contains("-----BEGIN PUBLIC KEY-----")
                    || s.contains("-----BEGIN CERTIFICATE-----")
            })
        };
        if !keys.iter().all(pem) {
            return Err(bad(
                "POST",
                path,
                "error parsing public key: data does not contain any valid public keys",
            ));
        }
        self.objects.insert(
            path.to_string(),
            json!({"bound_issuer": body.get("bound_issuer").cloned().unwrap_or(json!("")), "jwt_validation_pubkeys": keys}),
        );
        Ok(())
    }

    fn delete(&mut self, path: &str) -> Result<()> {
        if let Some(name) = path.strip_prefix("sys/policies/acl/") {
            return match name {
                "default" => Err(bad("DELETE", path, "cannot delete default policy")),
                "root" => Err(bad("DELETE", path, "cannot delete \"root\" policy")),
                _ => {
                    self.policies.remove(name);
                    Ok(())
                }
            };
        }
        if let Some(m) = path.strip_prefix("sys/auth/") {
            let key = format!("{}/", m.trim_end_matches('/'));
            if self.auth.remove(&key).is_some() {
                let objects = format!("auth/{key}");
                self.objects.retain(|p, _| !p.starts_with(&objects));
            }
            return Ok(());
        }
        if let Some(m) = path.strip_prefix("sys/mounts/") {
            let key = format!("{}/", m.trim_end_matches('/'));
            if self.leases.keys().any(|l| l.starts_with(&key)) {
                return Err(bad(
                    "DELETE",
                    path,
                    &format!(
                        "failed to revoke leases under {key}: revoke them first (sys/leases/revoke-prefix/{key})"
                    ),
                ));
            }
            if self.mounts.remove(&key).is_some() {
                self.objects.retain(|p, _| !p.starts_with(&key));
                self.kv.retain(|p, _| !p.starts_with(&key));
            }
            return Ok(());
        }
        if let Some(rest) = path.strip_prefix("auth/") {
            if mount_of(&self.auth, rest).is_none() {
                return Err(not_found(path));
            }
            self.objects.remove(path);
            return Ok(());
        }
        let Some((mount, kind)) = self.mount_kind(path) else {
            return Err(not_found(path));
        };
        let sub = &path[mount.len()..];
        match kind.as_str() {
            "kv" => {
                if let Some(p) = sub.strip_prefix("data/") {
                    // A soft delete: the version stays counted, its data is gone.
                    if let Some(last) = self
                        .kv
                        .get_mut(&format!("{mount}data/{p}"))
                        .and_then(|v| v.last_mut())
                    {
                        *last = Value::Null;
                    }
                } else if let Some(p) = sub.strip_prefix("metadata/") {
                    self.kv.remove(&format!("{mount}data/{p}"));
                } else {
                    return Err(not_found(path));
                }
                Ok(())
            }
            "database" => {
                self.objects.remove(path);
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn list(&self, path: &str) -> Vec<String> {
        let path = path.trim_end_matches('/');
        if path == "sys/policies/acl" {
            return self.policies.keys().cloned().collect();
        }
        // `LIST sys/leases/lookup/<prefix>/`: one level of the lease ids under the
        // prefix, directories with a trailing `/` (OpenBao's vault/logical_system.go
        // handleLeaseLookupList; 404, an empty list here, when nothing matches).
        if let Some(rest) = path.strip_prefix("sys/leases/lookup") {
            let prefix = format!("{}/", rest.trim_start_matches('/'));
            let prefix = prefix.trim_start_matches('/');
            let keys: BTreeSet<String> = self
                .leases
                .keys()
                .filter_map(|id| id.strip_prefix(prefix))
                .map(|r| match r.split_once('/') {
                    Some((d, _)) => format!("{d}/"),
                    None => r.to_string(),
                })
                .collect();
            return keys.into_iter().collect();
        }
        let prefix = format!("{path}/");
        if let Some((mount, kind)) = self.mount_kind(&prefix)
            && kind == "kv"
            && let Some(dir) = prefix[mount.len()..].strip_prefix("metadata/")
        {
            let data = format!("{mount}data/{dir}");
            let keys: BTreeSet<String> = self
                .kv
                .keys()
                .filter_map(|p| p.strip_prefix(&data))
                .map(|r| match r.split_once('/') {
                    Some((d, _)) => format!("{d}/"),
                    None => r.to_string(),
                })
                .collect();
            return keys.into_iter().collect();
        }
        self.objects
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|r| !r.contains('/'))
            .map(str::to_string)
            .collect()
    }
}

#[async_trait]
impl VaultApi for MockVault {
    async fn read(&self, path: &str) -> Result<Option<Value>> {
        self.enter("GET", path).await?;
        // The HTTP client answers a 404 with `None`; so does the mock.
        match self.lock().world.read(path) {
            Err(e) if e.status() == Some(404) => Ok(None),
            other => other,
        }
    }

    async fn write(&self, path: &str, body: Value) -> Result<Option<Value>> {
        self.enter("POST", path).await?;
        let mut inner = self.lock();
        let Inner {
            world, databases, ..
        } = &mut *inner;
        world.write(path, &body, databases)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.enter("DELETE", path).await?;
        self.lock().world.delete(path)
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        self.enter("LIST", path).await?;
        Ok(self.lock().world.list(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_host() {
        assert_eq!(
            host_port("postgresql://{{username}}:{{password}}@db.svc:5432/app?sslmode=disable"),
            Some("db.svc:5432")
        );
        assert_eq!(host_port("postgres://h:1"), Some("h:1"));
    }
}
