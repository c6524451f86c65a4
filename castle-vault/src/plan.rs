use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::spec::{GeneratedKind, VaultSpec};
use crate::{Error, Result, VaultApi};

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Does not exist yet.
    Create,
    /// Exists with other values.
    Update,
    /// Exists but is not in the spec (only with `prune`).
    Delete,
}

/// One field that differs. Sensitive values are shown as `(sensitive)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    /// The field.
    pub field: String,
    /// The live value.
    pub old: Option<String>,
    /// The wanted value.
    pub new: Option<String>,
}

/// One object to create, update or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What happens.
    pub op: Op,
    /// What kind of object (`policy`, `jwt role`, ...).
    pub kind: String,
    /// Its Vault path.
    pub path: String,
    /// The fields that differ.
    pub fields: Vec<FieldDiff>,
}

/// The changes that bring Vault to the spec, in the order they must be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The changes.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Whether Vault already matches the spec.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Terraform-style text: `+` create, `~` update with field diffs, `-` delete.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            let sign = match c.op {
                Op::Create => '+',
                Op::Update => '~',
                Op::Delete => '-',
            };
            let _ = writeln!(out, "{sign} {} {}", c.kind, c.path);
            for f in &c.fields {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
                match c.op {
                    Op::Update => {
                        let _ =
                            writeln!(out, "    {}: {} -> {}", f.field, show(&f.old), show(&f.new));
                    }
                    Op::Create => {
                        let _ = writeln!(out, "    {}: {}", f.field, show(&f.new));
                    }
                    Op::Delete => {}
                }
            }
        }
        let count = |op| self.changes.iter().filter(|c| c.op == op).count();
        if self.changes.is_empty() {
            out.push_str("No changes. Vault matches the spec.\n");
        } else {
            let _ = writeln!(
                out,
                "Plan: {} to create, {} to update, {} to delete.",
                count(Op::Create),
                count(Op::Update),
                count(Op::Delete)
            );
        }
        out
    }
}

/// One object the spec wants, with the fields to compare and how to write it.
struct Desired {
    kind: &'static str,
    path: String,
    compare: BTreeMap<&'static str, Value>,
    sensitive: &'static [&'static str],
    /// How the current state is read and shaped for comparison.
    read: Read,
}

enum Read {
    /// `read(path)` and compare its fields.
    Object,
    /// An entry of `sys/auth` or `sys/mounts`, keyed `path/`.
    MountTable { table: &'static str, mount: String },
    /// A KV v2 value: exists or not, never compared.
    Generated,
    /// A database connection: the details live under `connection_details`.
    DbConnection,
}

fn strings(v: &[String]) -> Value {
    json!(v)
}

fn desired_objects(
    spec: &VaultSpec,
    generated_pubkeys: &BTreeMap<String, Option<String>>,
) -> Result<Vec<Desired>> {
    let mut out = Vec::new();
    for kv in &spec.kv {
        out.push(Desired {
            kind: "secrets engine",
            path: format!("sys/mounts/{}", kv.path),
            compare: [("type", json!("kv")), ("version", json!("2"))].into(),
            sensitive: &[],
            read: Read::MountTable {
                table: "sys/mounts",
                mount: kv.path.clone(),
            },
        });
    }
    for g in &spec.generated {
        let what = match g.kind {
            GeneratedKind::Password => format!("password, {} characters", g.length),
            GeneratedKind::EcdsaP256 => "ecdsa-p256 keypair".into(),
        };
        out.push(Desired {
            kind: "generated",
            path: format!("{}/data/{}", g.mount, g.path),
            compare: [("value", json!(what))].into(),
            sensitive: &[],
            read: Read::Generated,
        });
    }
    for jwt in &spec.jwt {
        out.push(Desired {
            kind: "auth mount",
            path: format!("sys/auth/{}", jwt.path),
            compare: [("type", json!("jwt"))].into(),
            sensitive: &[],
            read: Read::MountTable {
                table: "sys/auth",
                mount: jwt.path.clone(),
            },
        });
        let mut keys: Vec<Value> = jwt
            .validation_pubkeys
            .iter()
            .map(|k| json!(k.trim()))
            .collect();
        for name in &jwt.pubkeys_from {
            keys.push(match generated_pubkeys.get(name).cloned().flatten() {
                Some(pem) => json!(pem.trim()),
                None => json!(format!("(public key of `{name}`, known after apply)")),
            });
        }
        out.push(Desired {
            kind: "jwt config",
            path: format!("auth/{}/config", jwt.path),
            compare: [
                ("bound_issuer", json!(jwt.bound_issuer)),
                ("jwt_validation_pubkeys", Value::Array(keys)),
            ]
            .into(),
            sensitive: &[],
            read: Read::Object,
        });
    }
    for name in spec.policy_names() {
        let hcl = spec.policy_text(name)?;
        out.push(Desired {
            kind: "policy",
            path: format!("sys/policies/acl/{name}"),
            compare: [("policy", json!(hcl.trim()))].into(),
            sensitive: &[],
            read: Read::Object,
        });
    }
    for jwt in &spec.jwt {
        for (name, r) in &jwt.roles {
            out.push(Desired {
                kind: "jwt role",
                path: format!("auth/{}/role/{name}", jwt.path),
                compare: [
                    ("role_type", json!("jwt")),
                    ("user_claim", json!(r.user_claim)),
                    ("bound_audiences", strings(&r.bound_audiences)),
                    (
                        "bound_subject",
                        json!(r.bound_subject.clone().unwrap_or_default()),
                    ),
                    (
                        "bound_claims",
                        if r.bound_claims.is_empty() {
                            Value::Null
                        } else {
                            json!(r.bound_claims)
                        },
                    ),
                    ("token_policies", strings(&r.token_policies)),
                    ("token_ttl", json!(r.token_ttl)),
                    ("token_max_ttl", json!(r.token_max_ttl)),
                ]
                .into(),
                sensitive: &[],
                read: Read::Object,
            });
        }
    }
    for db in &spec.database {
        out.push(Desired {
            kind: "secrets engine",
            path: format!("sys/mounts/{}", db.path),
            compare: [("type", json!("database"))].into(),
            sensitive: &[],
            read: Read::MountTable {
                table: "sys/mounts",
                mount: db.path.clone(),
            },
        });
        for (name, c) in &db.connections {
            out.push(Desired {
                kind: "database connection",
                path: format!("{}/config/{name}", db.path),
                compare: [
                    ("plugin_name", json!("postgresql-database-plugin")),
                    ("connection_url", json!(c.connection_url)),
                    ("username", json!(c.username)),
                    ("allowed_roles", strings(&c.allowed_roles)),
                    ("password", json!("(sensitive)")),
                ]
                .into(),
                sensitive: &["password"],
                read: Read::DbConnection,
            });
        }
        for (name, r) in &db.roles {
            out.push(Desired {
                kind: "database role",
                path: format!("{}/roles/{name}", db.path),
                compare: [
                    ("db_name", json!(r.db_name)),
                    ("creation_statements", strings(&r.creation_statements)),
                    ("revocation_statements", strings(&r.revocation_statements)),
                    ("default_ttl", json!(r.default_ttl)),
                    ("max_ttl", json!(r.max_ttl)),
                ]
                .into(),
                sensitive: &[],
                read: Read::Object,
            });
        }
    }
    Ok(out)
}

/// Multi-line values (HCL, PEM keys) show as a line count and a short digest, so a
/// changed policy reads as changed without flooding the plan.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains('\n') => {
            let digest = hex::encode(Sha256::digest(s.trim().as_bytes()));
            format!("<{} lines, sha256:{}>", s.lines().count(), &digest[..12])
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// Vault leaves unset fields out, or answers `[]`, `""` or `{}`: all mean "none".
fn normalized(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::Object(o)) if o.is_empty() => Value::Null,
        Some(Value::String(s)) => Value::String(s.trim().to_string()),
        Some(Value::Array(a)) => Value::Array(a.iter().map(|x| normalized(Some(x))).collect()),
        Some(other) => other.clone(),
    }
}

async fn current_fields(
    api: &dyn VaultApi,
    d: &Desired,
) -> Result<Option<BTreeMap<String, Value>>> {
    let to_map = |v: Value| -> BTreeMap<String, Value> {
        match v {
            Value::Object(o) => o.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    };
    Ok(match &d.read {
        Read::Object => api.read(&d.path).await?.map(to_map),
        Read::Generated => api.read(&d.path).await?.map(|_| {
            d.compare
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        }),
        Read::DbConnection => api.read(&d.path).await?.map(|v| {
            let mut m = to_map(v);
            if let Some(Value::Object(details)) = m.remove("connection_details") {
                m.extend(details);
            }
            m.insert("password".into(), json!("(sensitive)"));
            m
        }),
        Read::MountTable { table, mount } => {
            let all = api.read(table).await?.unwrap_or(Value::Null);
            all.get(format!("{mount}/")).map(|entry| {
                let mut m = BTreeMap::new();
                m.insert(
                    "type".to_string(),
                    entry.get("type").cloned().unwrap_or(Value::Null),
                );
                if let Some(v) = entry.pointer("/options/version") {
                    m.insert("version".to_string(), v.clone());
                }
                m
            })
        }
    })
}

async fn generated_pubkeys(
    api: &dyn VaultApi,
    spec: &VaultSpec,
) -> Result<BTreeMap<String, Option<String>>> {
    let mut keys = BTreeMap::new();
    for g in spec
        .generated
        .iter()
        .filter(|g| g.kind == GeneratedKind::EcdsaP256)
    {
        let public = read_kv(api, &g.mount, &g.path).await?.and_then(|data| {
            data.get("public_key")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        keys.insert(g.name.clone(), public);
    }
    Ok(keys)
}

async fn read_kv(api: &dyn VaultApi, mount: &str, path: &str) -> Result<Option<Value>> {
    Ok(api
        .read(&format!("{mount}/data/{path}"))
        .await?
        .and_then(|v| v.get("data").cloned()))
}

/// Reads Vault and diffs it against the spec.
///
/// # Errors
/// A read failed, or the spec is inconsistent.
pub async fn plan(api: &dyn VaultApi, spec: &VaultSpec) -> Result<Plan> {
    spec.check()?;
    let pubkeys = generated_pubkeys(api, spec).await?;
    let mut changes = Vec::new();
    for d in desired_objects(spec, &pubkeys)? {
        let current = current_fields(api, &d).await?;
        let field = |k: &str, old: Option<&Value>, new: Option<&Value>| {
            let masked = d.sensitive.contains(&k);
            FieldDiff {
                field: k.to_string(),
                old: old.filter(|v| !v.is_null()).map(|v| {
                    if masked {
                        "(sensitive)".into()
                    } else {
                        show(v)
                    }
                }),
                new: new.filter(|v| !v.is_null()).map(|v| {
                    if masked {
                        "(sensitive)".into()
                    } else {
                        show(v)
                    }
                }),
            }
        };
        match current {
            None => changes.push(Change {
                op: Op::Create,
                kind: d.kind.into(),
                path: d.path.clone(),
                fields: d
                    .compare
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| field(k, None, Some(v)))
                    .collect(),
            }),
            Some(cur) => {
                let fields: Vec<FieldDiff> = d
                    .compare
                    .iter()
                    .filter(|(k, v)| normalized(Some(v)) != normalized(cur.get(**k)))
                    .map(|(k, v)| field(k, cur.get(*k), Some(v)))
                    .collect();
                if !fields.is_empty() {
                    changes.push(Change {
                        op: Op::Update,
                        kind: d.kind.into(),
                        path: d.path.clone(),
                        fields,
                    });
                }
            }
        }
    }
    if spec.prune {
        let wanted: Vec<&String> = spec.policy_names().collect();
        for name in api.list("sys/policies/acl").await? {
            if name != "default" && name != "root" && !wanted.contains(&&name) {
                changes.push(Change {
                    op: Op::Delete,
                    kind: "policy".into(),
                    path: format!("sys/policies/acl/{name}"),
                    fields: vec![],
                });
            }
        }
        for jwt in &spec.jwt {
            for name in api.list(&format!("auth/{}/role", jwt.path)).await? {
                if !jwt.roles.contains_key(&name) {
                    changes.push(Change {
                        op: Op::Delete,
                        kind: "jwt role".into(),
                        path: format!("auth/{}/role/{name}", jwt.path),
                        fields: vec![],
                    });
                }
            }
        }
        for db in &spec.database {
            for name in api.list(&format!("{}/roles", db.path)).await? {
                if !db.roles.contains_key(&name) {
                    changes.push(Change {
                        op: Op::Delete,
                        kind: "database role".into(),
                        path: format!("{}/roles/{name}", db.path),
                        fields: vec![],
                    });
                }
            }
        }
    }
    Ok(Plan { changes })
}

/// A random password over `alphabet` (letters and digits by default).
fn random_password(length: usize, alphabet: Option<&str>) -> SecretString {
    const DEFAULT: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let chars: Vec<char> = alphabet
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT)
        .chars()
        .collect();
    let mut rng = rand::rng();
    let value: String = (0..length)
        .map(|_| chars[rng.random_range(0..chars.len())])
        .collect();
    SecretString::from(value)
}

fn generate(g: &crate::spec::Generated) -> Result<Value> {
    Ok(match g.kind {
        GeneratedKind::Password => {
            json!({ "password": random_password(g.length, g.alphabet.as_deref()).expose_secret() })
        }
        GeneratedKind::EcdsaP256 => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| Error::Spec(format!("generating an ECDSA P-256 key: {e}")))?;
            json!({ "private_key": key.serialize_pem(), "public_key": key.public_key_pem() })
        }
    })
}

/// Applies exactly `plan` (from [`plan`] on the same spec), in its order.
///
/// Generated values are written with check-and-set `cas = 0`: if someone created
/// the value meanwhile, Vault refuses and the existing value is kept.
///
/// # Errors
/// The first write that fails; earlier changes stay applied (a re-plan shows the rest).
pub async fn apply(api: &dyn VaultApi, spec: &VaultSpec, plan: &Plan) -> Result<()> {
    for change in &plan.changes {
        apply_one(api, spec, change).await?;
    }
    Ok(())
}

async fn apply_one(api: &dyn VaultApi, spec: &VaultSpec, change: &Change) -> Result<()> {
    let path = change.path.as_str();
    if change.op == Op::Delete {
        return api.delete(path).await;
    }
    let missing = || {
        Error::Spec(format!(
            "the plan names {path}, which the spec does not define"
        ))
    };
    match change.kind.as_str() {
        "secrets engine" => {
            let name = path.trim_start_matches("sys/mounts/");
            let body = if spec.kv.iter().any(|k| k.path == name) {
                json!({ "type": "kv", "options": { "version": "2" } })
            } else {
                json!({ "type": "database" })
            };
            if change.op == Op::Update {
                return Err(Error::Spec(format!(
                    "{path} exists with another type; remove it by hand (Castle never deletes a secrets engine)"
                )));
            }
            mount(api, path, body).await?;
        }
        "auth mount" => {
            if change.op == Op::Update {
                return Err(Error::Spec(format!(
                    "{path} exists with another type; remove it by hand"
                )));
            }
            mount(api, path, json!({ "type": "jwt" })).await?;
        }
        "generated" => {
            let g = spec
                .generated
                .iter()
                .find(|g| format!("{}/data/{}", g.mount, g.path) == path)
                .ok_or_else(missing)?;
            create_once(api, &g.mount, &g.path, generate(g)?).await?;
        }
        "jwt config" => {
            let jwt = spec
                .jwt
                .iter()
                .find(|j| format!("auth/{}/config", j.path) == path)
                .ok_or_else(missing)?;
            let mut keys: Vec<String> = jwt.validation_pubkeys.clone();
            let pubkeys = generated_pubkeys(api, spec).await?;
            for name in &jwt.pubkeys_from {
                keys.push(pubkeys.get(name).cloned().flatten().ok_or_else(|| {
                    Error::Spec(format!(
                        "generated keypair `{name}` is missing its public key"
                    ))
                })?);
            }
            api.write(
                path,
                json!({ "bound_issuer": jwt.bound_issuer, "jwt_validation_pubkeys": keys }),
            )
            .await?;
        }
        "policy" => {
            let name = path.trim_start_matches("sys/policies/acl/");
            let hcl = spec.policy_text(name)?;
            api.write(path, json!({ "policy": hcl })).await?;
        }
        "jwt role" => {
            let r = spec
                .jwt
                .iter()
                .find_map(|j| {
                    j.roles
                        .iter()
                        .find(|(n, _)| format!("auth/{}/role/{n}", j.path) == path)
                        .map(|(_, r)| r)
                })
                .ok_or_else(missing)?;
            let mut body = json!({
                "role_type": "jwt",
                "user_claim": r.user_claim,
                "bound_audiences": r.bound_audiences,
                "token_policies": r.token_policies,
                "token_ttl": r.token_ttl,
                "token_max_ttl": r.token_max_ttl,
            });
            if let Some(sub) = &r.bound_subject {
                body["bound_subject"] = json!(sub);
            }
            if !r.bound_claims.is_empty() {
                body["bound_claims"] = json!(r.bound_claims);
            }
            api.write(path, body).await?;
        }
        "database connection" => {
            let c = spec
                .database
                .iter()
                .find_map(|d| {
                    d.connections
                        .iter()
                        .find(|(n, _)| format!("{}/config/{n}", d.path) == path)
                        .map(|(_, c)| c)
                })
                .ok_or_else(missing)?;
            api.write(
                path,
                json!({
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": c.connection_url,
                    "username": c.username,
                    "password": c.password.expose_secret(),
                    "verify_connection": c.verify_connection,
                    "allowed_roles": c.allowed_roles,
                }),
            )
            .await?;
        }
        "database role" => {
            let r = spec
                .database
                .iter()
                .find_map(|d| {
                    d.roles
                        .iter()
                        .find(|(n, _)| format!("{}/roles/{n}", d.path) == path)
                        .map(|(_, r)| r)
                })
                .ok_or_else(missing)?;
            api.write(
                path,
                json!({
                    "db_name": r.db_name,
                    "creation_statements": r.creation_statements,
                    "revocation_statements": r.revocation_statements,
                    "default_ttl": r.default_ttl,
                    "max_ttl": r.max_ttl,
                }),
            )
            .await?;
        }
        other => {
            return Err(Error::Spec(format!(
                "unknown change kind `{other}` for {path}"
            )));
        }
    }
    Ok(())
}

/// Enables a mount; one enabled meanwhile by a concurrent apply (the vault-jwt and
/// vault-db steps share the KV mount) is success if its type is the one wanted.
async fn mount(api: &dyn VaultApi, path: &str, body: Value) -> Result<()> {
    match api.write(path, body.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(400) && e.to_string().contains("already in use") => {
            let (table, name) = if let Some(n) = path.strip_prefix("sys/auth/") {
                ("sys/auth", n)
            } else {
                ("sys/mounts", path.trim_start_matches("sys/mounts/"))
            };
            let current = api.read(table).await?.unwrap_or(Value::Null);
            if current.pointer(&format!("/{name}~1/type")) == body.get("type") {
                Ok(())
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads one field of a generated KV value (e.g. `private_key` of the cluster's
/// service-account keypair), or `None` while it does not exist.
///
/// # Errors
/// The read failed, or `name` is not a generated value of the spec.
pub async fn generated_value<S>(
    api: &dyn VaultApi,
    spec: &VaultSpec<S>,
    name: &str,
    field: &str,
) -> Result<Option<SecretString>> {
    let g = spec
        .generated
        .iter()
        .find(|g| g.name == name)
        .ok_or_else(|| Error::Spec(format!("`{name}` is not a generated value of the spec")))?;
    Ok(read_kv(api, &g.mount, &g.path).await?.and_then(|d| {
        d.get(field)
            .and_then(Value::as_str)
            .map(|s| SecretString::from(s.to_string()))
    }))
}

/// Revokes every lease issued for the given database roles (`<mount>/creds/<role>`),
/// so the users Vault created are dropped. Used by destroy.
///
/// # Errors
/// The first revocation that fails.
pub async fn revoke_leases<S>(api: &dyn VaultApi, spec: &VaultSpec<S>) -> Result<Vec<String>> {
    let mut revoked = Vec::new();
    for db in &spec.database {
        for role in db.roles.keys() {
            let prefix = format!("{}/creds/{role}", db.path);
            revoke_prefix(api, &prefix).await?;
            revoked.push(prefix);
        }
    }
    Ok(revoked)
}

/// The live leases of the given database roles, as `<mount>/creds/<role>/<id>`
/// (`LIST sys/leases/lookup/...`, which needs `sudo`): what destroy's revocation
/// should have left empty.
///
/// # Errors
/// The token may not list leases, or Vault failed.
pub async fn live_leases<S>(api: &dyn VaultApi, spec: &VaultSpec<S>) -> Result<Vec<String>> {
    let mut live = Vec::new();
    for db in &spec.database {
        for role in db.roles.keys() {
            let prefix = format!("{}/creds/{role}", db.path.trim_matches('/'));
            for id in api.list(&format!("sys/leases/lookup/{prefix}/")).await? {
                live.push(format!("{prefix}/{id}"));
            }
        }
    }
    Ok(live)
}

/// Revokes every lease under `prefix` (e.g. `database/creds/grafana`); the database
/// engine drops each lease's user. Vault answers success when nothing matched.
///
/// # Errors
/// The token lacks `sudo` on `sys/leases/revoke-prefix/<prefix>`, or Vault failed.
pub async fn revoke_prefix(api: &dyn VaultApi, prefix: &str) -> Result<()> {
    api.write(
        &format!("sys/leases/revoke-prefix/{}", prefix.trim_matches('/')),
        json!({}),
    )
    .await
    .map(|_| ())
}

/// Deletes a KV v2 value with every version and its metadata, so a later
/// generate-once creates it afresh. Deleting a missing value succeeds.
///
/// # Errors
/// The delete failed.
pub async fn delete_kv(api: &dyn VaultApi, mount: &str, path: &str) -> Result<()> {
    api.delete(&format!("{mount}/metadata/{path}")).await
}

/// Replaces the generated value `name` with a fresh one, whether or not it exists.
/// The write is check-and-set on the version read, so a concurrent rotation fails
/// instead of being overwritten. After rotating a keypair whose public key feeds a
/// jwt mount, [`plan`] shows the jwt config update that [`apply`] then makes.
///
/// # Errors
/// `name` is not a generated value of the spec, or Vault refused the write.
pub async fn rotate<S>(api: &dyn VaultApi, spec: &VaultSpec<S>, name: &str) -> Result<()> {
    let g = spec
        .generated
        .iter()
        .find(|g| g.name == name)
        .ok_or_else(|| Error::Spec(format!("`{name}` is not a generated value of the spec")))?;
    let version = current_version(api, &g.mount, &g.path).await?;
    api.write(
        &format!("{}/data/{}", g.mount, g.path),
        json!({ "data": generate(g)?, "options": { "cas": version } }),
    )
    .await
    .map(|_| ())
}

/// The latest version number of a KV v2 value, 0 when it never existed.
async fn current_version(api: &dyn VaultApi, mount: &str, path: &str) -> Result<u64> {
    Ok(api
        .read(&format!("{mount}/metadata/{path}"))
        .await?
        .and_then(|m| m.get("current_version").and_then(Value::as_u64))
        .unwrap_or(0))
}

/// Writes a generated value unless one exists. `cas = 0` makes Vault refuse when a
/// concurrent creator won: their value is kept. A value deleted by hand leaves its
/// version history behind, which also refuses `cas = 0`; it is recreated on top.
async fn create_once(api: &dyn VaultApi, mount: &str, path: &str, data: Value) -> Result<()> {
    let data_path = format!("{mount}/data/{path}");
    match api
        .write(&data_path, json!({ "data": data, "options": { "cas": 0 } }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_cas_mismatch() => {
            if read_kv(api, mount, path).await?.is_some() {
                return Ok(());
            }
            let version = current_version(api, mount, path).await?;
            api.write(
                &data_path,
                json!({ "data": data, "options": { "cas": version } }),
            )
            .await
            .map(|_| ())
        }
        Err(e) => Err(e),
    }
}
