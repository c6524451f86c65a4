use std::collections::BTreeMap;
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
    /// One API call.
    pub call: f64,
    /// Real seconds per modelled second.
    pub scale: f64,
}

impl Latency {
    /// No delay.
    pub fn instant() -> Self {
        Self {
            call: 0.0,
            scale: 0.0,
        }
    }
    /// A Vault VM over the tailnet, as in the reference setup: ~150 ms per call.
    pub fn lab() -> Self {
        Self {
            call: 0.15,
            scale: 1.0,
        }
    }
    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }
}

/// Seeded transient faults and permanent faults on a path prefix.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rate: f64,
    seed: u64,
    permanent: Vec<(String, String)>,
}

impl Faults {
    /// Transient 503s on `rate` of the calls, reproducibly for a seed.
    pub fn transient(seed: u64, rate: f64) -> Self {
        Self {
            rate,
            seed,
            permanent: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct World {
    /// `path/` -> {type, options}.
    auth: BTreeMap<String, Value>,
    mounts: BTreeMap<String, Value>,
    policies: BTreeMap<String, String>,
    /// Other logical objects by path (jwt config and roles, database config and roles).
    objects: BTreeMap<String, Value>,
    /// KV v2: full data path -> versions (the lab's generated values; see `restore`).
    kv: BTreeMap<String, Vec<Value>>,
    /// lease id -> the creds path it came from.
    leases: BTreeMap<String, String>,
    next_lease: u64,
    sealed: bool,
}

#[derive(Debug)]
struct Inner {
    world: World,
    latency: Latency,
    faults: Faults,
    rng: StdRng,
    calls: u64,
}

/// A stateful Vault: mounts before paths, jwt roles need a bound field, KV v2
/// check-and-set, database leases. Database passwords are kept only as digests.
#[derive(Debug, Clone)]
pub struct MockVault {
    inner: Arc<Mutex<Inner>>,
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

fn default_mounts() -> BTreeMap<String, Value> {
    [
        ("sys/".to_string(), json!({"type": "system"})),
        ("cubbyhole/".to_string(), json!({"type": "cubbyhole"})),
        ("identity/".to_string(), json!({"type": "identity"})),
    ]
    .into()
}

impl MockVault {
    /// An unsealed, empty Vault with the default mounts and the `default` policy.
    pub fn new() -> Self {
        let world = World {
            mounts: default_mounts(),
            auth: [("token/".to_string(), json!({"type": "token"}))].into(),
            policies: [("default".to_string(), "# default".to_string())].into(),
            ..World::default()
        };
        Self {
            inner: Arc::new(Mutex::new(Inner {
                world,
                latency: Latency::instant(),
                faults: Faults::default(),
                rng: StdRng::seed_from_u64(0),
                calls: 0,
            })),
        }
    }

    /// Sets the latency model.
    #[must_use]
    pub fn with_latency(self, latency: Latency) -> Self {
        self.lock().latency = latency;
        self
    }

    /// Sets the fault model.
    #[must_use]
    pub fn with_faults(self, faults: Faults) -> Self {
        {
            let mut inner = self.lock();
            inner.rng = StdRng::seed_from_u64(faults.seed);
            inner.faults = faults;
        }
        self
    }

    /// Every call on a path starting with `prefix` fails with a 403 and `message`.
    pub fn fail_permanently(&self, prefix: &str, message: &str) {
        self.lock()
            .faults
            .permanent
            .push((prefix.to_string(), message.to_string()));
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.faults = Faults::default();
    }

    /// Seals or unseals: a sealed Vault answers 503 to everything.
    pub fn set_sealed(&self, sealed: bool) {
        self.lock().world.sealed = sealed;
    }

    /// How many calls were made.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Live leases, by creds path.
    pub fn leases(&self) -> Vec<String> {
        self.lock().world.leases.values().cloned().collect()
    }

    /// The world as JSON, for the lab's state file. It holds KV values that the
    /// simulated Vault generated itself (as a real Vault keeps them on its disk),
    /// and only digests of passwords it was given.
    pub fn snapshot(&self) -> Value {
        serde_json::to_value(&self.lock().world).unwrap_or(Value::Null)
    }

    /// Restores a world saved by [`snapshot`](Self::snapshot).
    ///
    /// # Errors
    /// The JSON is not a snapshot.
    pub fn restore(&self, snapshot: &Value) -> Result<()> {
        let world: World = serde_json::from_value(snapshot.clone())
            .map_err(|e| Error::Setup(format!("vault snapshot: {e}")))?;
        self.lock().world = world;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, method: &'static str, path: &str) -> Result<()> {
        let delay = {
            let inner = self.lock();
            inner.latency.call * inner.latency.scale
        };
        if delay > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
        }
        let mut inner = self.lock();
        inner.calls += 1;
        if inner.world.sealed {
            return Err(Error::api(
                method,
                path,
                503,
                vec!["Vault is sealed".into()],
            ));
        }
        if let Some((_, msg)) = inner
            .faults
            .permanent
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
        {
            return Err(Error::api(method, path, 403, vec![msg.clone()]));
        }
        let rate = inner.faults.rate;
        if rate > 0.0 && inner.rng.random_bool(rate.clamp(0.0, 1.0)) {
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

impl World {
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
        let Some((mount, info)) = mount_of(&self.mounts, path) else {
            return Err(not_found(path));
        };
        let (mount, kind) = (
            mount.clone(),
            info.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
        let sub = &path[mount.len()..];
        match kind.as_str() {
            "kv" => {
                let Some(p) = sub.strip_prefix("data/") else {
                    return Err(not_found(path));
                };
                let key = format!("{mount}data/{p}");
                Ok(self.kv.get(&key).and_then(|v| v.last()).map(|data| {
                    let version = self.kv[&key].len();
                    json!({"data": data, "metadata": {"version": version}})
                }))
            }
            "database" => {
                if let Some(role) = sub.strip_prefix("creds/") {
                    if !self.objects.contains_key(&format!("{mount}roles/{role}")) {
                        return Err(bad("GET", path, &format!("unknown role: {role}")));
                    }
                    self.next_lease += 1;
                    let id = format!("{mount}creds/{role}/lease{}", self.next_lease);
                    self.leases
                        .insert(id.clone(), format!("{mount}creds/{role}"));
                    return Ok(Some(json!({
                        "username": format!("v-castle-{role}-{}", self.next_lease),
                        "password": format!("mock-{}", self.next_lease),
                        "lease_id": id,
                        "lease_duration": 3600,
                    })));
                }
                Ok(self.objects.get(path).cloned())
            }
            _ => Err(not_found(path)),
        }
    }

    fn write(&mut self, path: &str, body: Value) -> Result<Option<Value>> {
        let field = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
        if let Some(mount) = path.strip_prefix("sys/auth/") {
            let key = format!("{mount}/");
            if self.auth.contains_key(&key) {
                return Err(bad(
                    "POST",
                    path,
                    &format!("path is already in use at {key}"),
                ));
            }
            let kind = field("type");
            if kind.as_str() != Some("jwt") {
                return Err(bad("POST", path, &format!("unknown auth type: {kind}")));
            }
            self.auth.insert(key, json!({"type": kind}));
            return Ok(None);
        }
        if let Some(mount) = path.strip_prefix("sys/mounts/") {
            let key = format!("{mount}/");
            if self.mounts.contains_key(&key) {
                return Err(bad(
                    "POST",
                    path,
                    &format!("path is already in use at {key}"),
                ));
            }
            let kind = field("type");
            match kind.as_str() {
                Some("kv") | Some("database") => {}
                _ => {
                    return Err(bad(
                        "POST",
                        path,
                        &format!("plugin not found in the catalog: {kind}"),
                    ));
                }
            }
            self.mounts
                .insert(key, json!({"type": kind, "options": field("options")}));
            return Ok(None);
        }
        if let Some(name) = path.strip_prefix("sys/policies/acl/") {
            let Some(policy) = body.get("policy").and_then(Value::as_str) else {
                return Err(bad("PUT", path, "'policy' parameter not supplied or empty"));
            };
            self.policies.insert(name.to_string(), policy.to_string());
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
                let keys = body
                    .get("jwt_validation_pubkeys")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let urls = ["jwks_url", "oidc_discovery_url"]
                    .iter()
                    .filter(|k| body.get(**k).is_some())
                    .count();
                if keys + urls == 0 || (keys > 0 && urls > 0) || urls > 1 {
                    return Err(bad(
                        "POST",
                        path,
                        "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set",
                    ));
                }
                self.objects.insert(path.to_string(), json!({"bound_issuer": field("bound_issuer"), "jwt_validation_pubkeys": field("jwt_validation_pubkeys")}));
                return Ok(None);
            }
            if sub.starts_with("role/") {
                if body
                    .get("user_claim")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
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
                .any(|k| match body.get(*k) {
                    Some(Value::Array(a)) => !a.is_empty(),
                    Some(Value::String(s)) => !s.is_empty(),
                    Some(Value::Object(o)) => !o.is_empty(),
                    _ => false,
                });
                if !bound {
                    return Err(bad(
                        "POST",
                        path,
                        "must have at least one bound constraint when creating/updating a role",
                    ));
                }
                let mut stored = json!({"role_type": "jwt", "bound_subject": "", "bound_claims": null, "bound_audiences": [], "token_policies": [], "token_ttl": 0});
                for (k, v) in body.as_object().into_iter().flatten() {
                    stored[k] = v.clone();
                }
                self.objects.insert(path.to_string(), stored);
                return Ok(None);
            }
            return Err(not_found(path));
        }
        let Some((mount, info)) = mount_of(&self.mounts, path) else {
            return Err(not_found(path));
        };
        let (mount, kind) = (
            mount.clone(),
            info.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
        let sub = &path[mount.len()..];
        match (kind.as_str(), sub) {
            ("kv", s) if s.starts_with("data/") => {
                let versions = self.kv.entry(path.to_string()).or_default();
                if let Some(cas) = body.pointer("/options/cas").and_then(Value::as_u64)
                    && cas != versions.len() as u64
                {
                    if versions.is_empty() {
                        self.kv.remove(path);
                    }
                    return Err(bad(
                        "POST",
                        path,
                        "check-and-set parameter did not match the current version",
                    ));
                }
                let Some(data) = body.get("data").filter(|d| d.is_object()) else {
                    return Err(bad("POST", path, "no data provided"));
                };
                versions.push(data.clone());
                Ok(Some(json!({"version": versions.len()})))
            }
            ("database", s) if s.starts_with("config/") => {
                if field("plugin_name").as_str() != Some("postgresql-database-plugin") {
                    return Err(bad("POST", path, "plugin_name must be provided"));
                }
                let password = body
                    .get("password")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.objects.insert(
                    path.to_string(),
                    json!({
                        "plugin_name": field("plugin_name"),
                        "connection_details": {"connection_url": field("connection_url"), "username": field("username")},
                        "allowed_roles": field("allowed_roles"),
                        "verify_connection": field("verify_connection"),
                        "password_sha256": digest(password),
                    }),
                );
                Ok(None)
            }
            ("database", s) if s.starts_with("roles/") => {
                let db = field("db_name");
                let conn = format!("{mount}config/{}", db.as_str().unwrap_or_default());
                if !self.objects.contains_key(&conn) {
                    return Err(bad(
                        "POST",
                        path,
                        &format!("database connection {db} does not exist"),
                    ));
                }
                if body
                    .get("creation_statements")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
                {
                    return Err(bad("POST", path, "creation_statements are required"));
                }
                self.objects.insert(path.to_string(), body.clone());
                Ok(None)
            }
            _ => Err(not_found(path)),
        }
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
        self.lock().world.write(path, body)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.enter("DELETE", path).await?;
        let mut inner = self.lock();
        let w = &mut inner.world;
        if let Some(name) = path.strip_prefix("sys/policies/acl/") {
            w.policies.remove(name);
        } else if path.contains("/data/") {
            w.kv.remove(path);
        } else if let Some(m) = path.strip_prefix("sys/mounts/") {
            let key = format!("{m}/");
            if w.leases.keys().any(|l| l.starts_with(&key)) {
                return Err(Error::api(
                    "DELETE",
                    path,
                    400,
                    vec!["failed to revoke leases: mount has live leases".into()],
                ));
            }
            w.mounts.remove(&key);
            w.objects.retain(|p, _| !p.starts_with(&key));
        } else {
            w.objects.remove(path);
        }
        Ok(())
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        self.enter("LIST", path).await?;
        let inner = self.lock();
        let w = &inner.world;
        if path == "sys/policies/acl" {
            return Ok(w.policies.keys().cloned().collect());
        }
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(w.objects
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|r| !r.contains('/'))
            .map(str::to_string)
            .collect())
    }
}
