use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
pub use castle_sim::Faults;
use castle_sim::{Fault, FaultInjector, Scale};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::acl::{Acl, Operation};
use crate::{Error, Result, SealStatus, VaultApi};

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
    pub scale: Scale,
}

impl Latency {
    /// No delay.
    pub fn instant() -> Self {
        Self {
            read: 0.0,
            write: 0.0,
            mount: 0.0,
            creds: 0.0,
            scale: Scale::INSTANT,
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
            scale: Scale::REAL,
        }
    }

    /// Same model, another clock speed.
    #[must_use]
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = Scale(scale);
        self
    }

    /// The modelled seconds of one call.
    fn seconds(&self, method: &str, path: &str) -> f64 {
        if path.contains("/creds/") {
            self.creds
        } else if (path.starts_with("sys/mounts/") || path.starts_with("sys/auth/"))
            && method != "GET"
        {
            self.mount
        } else if method == "GET" || method == "LIST" {
            self.read
        } else {
            self.write
        }
    }
}

/// `path`'s prefixes, shortest first: permanent faults are set on path prefixes,
/// and the shortest one set answers.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices().map(|(at, _)| &path[..at]).chain([path])
}

fn is_false(b: &bool) -> bool {
    !b
}

/// How many versions of a KV v2 entry keep their data: KV v2 keeps ten when its
/// `max_versions` is not set.
const KV_MAX_VERSIONS: usize = 10;

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
    /// The policies of the known token when it is not a root token (`default` is
    /// added, as `auth/token/create` adds it); `None`: the root token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_policies: Option<Vec<String>>,
    /// Seconds the known token has left and whether it renews; `None`: no expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ttl: Option<(u64, bool)>,
}

#[derive(Debug)]
struct Inner {
    world: World,
    latency: Latency,
    /// By path prefix: a permanent fault is a 403, a transient one a 503.
    faults: FaultInjector,
    /// `host:port` of databases a verified connection reaches.
    databases: BTreeSet<String>,
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

/// OpenBao's built-in `default` policy, attached to every token created without
/// `no_default_policy` (`internal/vault/policy/policy_store.go`, `DefaultPolicy`).
pub(crate) const DEFAULT_POLICY: &str = r#"
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own entity by id or name
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}
path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}

path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

path "sys/leases/renew" {
    capabilities = ["update"]
}

path "sys/leases/lookup" {
    capabilities = ["update"]
}

path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
"#;

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
                faults: FaultInjector::default(),
                databases: BTreeSet::new(),
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
        self.lock().faults.set(faults);
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
            .faults
            .fail_permanently(prefix, message.to_string());
    }

    /// Removes transient and permanent faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The known token is no root token from now on: it carries `policies` (and
    /// `default`), which every call is checked against, and `ttl` seconds left
    /// (`None`: no expiry) that renew or not.
    pub fn set_token_policies(&self, policies: &[&str], ttl: Option<(u64, bool)>) {
        let mut names: Vec<String> = policies.iter().map(|p| (*p).to_string()).collect();
        if !names.iter().any(|n| n == "default") {
            names.push("default".into());
        }
        let mut inner = self.lock();
        inner.world.token_policies = Some(names);
        inner.world.token_ttl = ttl;
    }

    /// The known token is the root token again.
    pub fn set_root_token(&self) {
        let mut inner = self.lock();
        inner.world.token_policies = None;
        inner.world.token_ttl = None;
    }

    /// Stores a policy as `PUT sys/policies/acl/:name` would, without a call (for
    /// a lab setting up its world).
    ///
    /// # Errors
    /// The policy OpenBao would refuse.
    pub fn put_policy(&self, name: &str, text: &str) -> Result<()> {
        crate::policy::check_policy(text)
            .map_err(|e| bad("PUT", &format!("sys/policies/acl/{name}"), &e))?;
        self.lock()
            .world
            .policies
            .insert(name.to_string(), crate::policy::stored_text(text));
        Ok(())
    }

    /// Mounts a KV v2 engine at `path` without a call, as an operator did before
    /// Castle ran (for a lab setting up its world); a mount already there stays.
    pub fn enable_kv_v2(&self, path: &str) {
        let key = format!("{}/", path.trim_matches('/'));
        self.lock()
            .world
            .mounts
            .entry(key)
            .or_insert_with(|| json!({"type": "kv", "options": {"version": "2"}}));
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
        let latency = self.lock().latency;
        latency.scale.sleep(latency.seconds(method, path)).await;
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
        inner.world.authorize(method, path)?;
        match inner.faults.draw(prefixes(path)) {
            Some(Fault::Permanent(msg)) => Err(Error::api(method, path, 403, vec![msg])),
            Some(Fault::Transient) => Err(Error::api(
                method,
                path,
                503,
                vec!["injected fault: service unavailable".into()],
            )),
            None => Ok(()),
        }
    }
}

/// What OpenBao 2.7.2 answers a request its ACL refuses (checked with curl).
fn permission_denied(method: &'static str, path: &str) -> Error {
    Error::api(
        method,
        path,
        403,
        vec!["1 error occurred:\n\t* permission denied\n\n".into()],
    )
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

    /// The known token's ACL; `None` for the root token.
    fn acl(&self) -> Option<Result<Acl>> {
        let names = self.token_policies.as_ref()?;
        let texts: Vec<(&str, &str)> = names
            .iter()
            .filter_map(|n| self.policies.get(n).map(|t| (n.as_str(), t.as_str())))
            .collect();
        Some(Acl::new(texts).map_err(|e| Error::api("GET", "sys/policies/acl", 500, vec![e])))
    }

    /// Refuses what the token's policies do not allow, as OpenBao's ACL check does.
    /// A write is `create` or `update` by whether the object exists; paths without
    /// an existence check in OpenBao (`sys/*`, `.../config`, logins) are `update`.
    fn authorize(&self, method: &'static str, path: &str) -> Result<()> {
        let Some(acl) = self.acl() else {
            return Ok(());
        };
        let acl = acl?;
        let op = match method {
            "GET" => Operation::Read,
            "LIST" => Operation::List,
            "DELETE" => Operation::Delete,
            _ if path.starts_with("sys/")
                || path.ends_with("/config")
                || path.contains("/login")
                || self.exists(path) =>
            {
                Operation::Update
            }
            _ => Operation::Create,
        };
        if acl.allows(op, path) {
            Ok(())
        } else {
            Err(permission_denied(method, path))
        }
    }

    fn exists(&self, path: &str) -> bool {
        self.objects.contains_key(path)
            || self
                .kv
                .get(path)
                .and_then(|v| v.last())
                .is_some_and(|d| !d.is_null())
    }

    /// `auth/token/lookup-self` without the token's id and accessor (Castle never
    /// reads them).
    fn lookup_self(&self) -> Value {
        let (ttl, renewable) = self.token_ttl.unwrap_or((0, false));
        let policies = match &self.token_policies {
            None => vec!["root".to_string()],
            Some(p) => {
                let mut p = p.clone();
                p.sort();
                p
            }
        };
        json!({
            "display_name": "token",
            "policies": policies,
            "ttl": ttl,
            "renewable": renewable,
            "type": "service",
        })
    }

    /// `sys/capabilities-self`: each path's capabilities, and `capabilities` too
    /// when one path was asked (`handleCapabilities` in logical_system.go).
    fn capabilities_self(&self, body: &Value) -> Result<Option<Value>> {
        let paths: Vec<String> = body
            .get("paths")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(bad(
                "POST",
                "sys/capabilities-self",
                "paths must be supplied",
            ));
        }
        let acl = match self.acl() {
            None => {
                Acl::new([("root", "")]).map_err(|e| bad("POST", "sys/capabilities-self", &e))?
            }
            Some(a) => a?,
        };
        let mut data = serde_json::Map::new();
        for p in &paths {
            data.insert(p.clone(), json!(acl.capabilities(p)));
        }
        if paths.len() == 1 {
            data.insert("capabilities".into(), json!(acl.capabilities(&paths[0])));
        }
        Ok(Some(Value::Object(data)))
    }

    fn read(&mut self, path: &str) -> Result<Option<Value>> {
        if path == "auth/token/lookup-self" {
            return Ok(Some(self.lookup_self()));
        }
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
        if path == "sys/capabilities-self" {
            return self.capabilities_self(body);
        }
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
                // Older versions than the last ten are destroyed.
                let destroyed = versions.len().saturating_sub(KV_MAX_VERSIONS);
                for old in &mut versions[..destroyed] {
                    *old = Value::Null;
                }
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

    async fn seal_status(&self) -> Result<SealStatus> {
        let latency = self.lock().latency;
        latency
            .scale
            .sleep(latency.seconds("GET", "sys/seal-status"))
            .await;
        let mut inner = self.lock();
        inner.calls += 1;
        Ok(SealStatus {
            initialized: true,
            sealed: inner.world.sealed,
            version: "2.7.2".into(),
        })
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
