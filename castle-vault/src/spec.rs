use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What must exist in Vault. Generic over the secret type: castle.toml holds
/// references (`S = SecretRef`), the apply holds values (`S = SecretString`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "S: Deserialize<'de>"))]
pub struct VaultSpec<S = secrecy::SecretString> {
    /// JWT auth mounts.
    #[serde(default)]
    pub jwt: Vec<JwtAuth>,
    /// ACL policies by name: inline HCL.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    /// ACL policies by name, read from HCL files when planning. Relative paths are
    /// taken from the working directory unless [`VaultSpec::with_policy_files_under`]
    /// anchored them.
    #[serde(default)]
    pub policy_files: BTreeMap<String, PathBuf>,
    /// KV version 2 mounts.
    #[serde(default)]
    pub kv: Vec<KvMount>,
    /// Database secrets engines.
    #[serde(default)]
    pub database: Vec<DatabaseMount<S>>,
    /// KV values generated once and kept.
    #[serde(default)]
    pub generated: Vec<Generated>,
    /// Delete policies and roles that exist in Vault but not in the spec.
    #[serde(default)]
    pub prune: bool,
}

/// A JWT auth mount.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// Mount path (default `jwt`).
    #[serde(default = "default_jwt_path")]
    pub path: String,
    /// The `iss` every token must carry (the cluster's API URL).
    pub bound_issuer: String,
    /// Literal PEM public keys.
    #[serde(default)]
    pub validation_pubkeys: Vec<String>,
    /// Names of `generated` ECDSA keypairs whose public keys validate tokens.
    #[serde(default)]
    pub pubkeys_from: Vec<String>,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, JwtRole>,
}

impl<S> Default for VaultSpec<S> {
    fn default() -> Self {
        Self {
            jwt: Vec::new(),
            policies: BTreeMap::new(),
            policy_files: BTreeMap::new(),
            kv: Vec::new(),
            database: Vec::new(),
            generated: Vec::new(),
            prune: false,
        }
    }
}

fn default_jwt_path() -> String {
    "jwt".into()
}

/// A JWT role: which tokens log in and what they get.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRole {
    /// The claim that names the user (required by Vault).
    pub user_claim: String,
    /// Accepted `aud` values.
    #[serde(default)]
    pub bound_audiences: Vec<String>,
    /// Required `sub`.
    #[serde(default)]
    pub bound_subject: Option<String>,
    /// Required claims, each with its accepted values.
    #[serde(default)]
    pub bound_claims: BTreeMap<String, Vec<String>>,
    /// Policies of the issued token.
    #[serde(default)]
    pub token_policies: Vec<String>,
    /// TTL of the issued token, seconds (0: the mount's default).
    #[serde(default)]
    pub token_ttl: u64,
    /// Longest TTL of the issued token, seconds (0: the mount's default).
    #[serde(default)]
    pub token_max_ttl: u64,
}

/// A KV version 2 mount.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KvMount {
    /// Mount path, e.g. `secret`.
    pub path: String,
}

/// A database secrets engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "S: Deserialize<'de>"))]
pub struct DatabaseMount<S> {
    /// Mount path (default `database`).
    #[serde(default = "default_db_path")]
    pub path: String,
    /// PostgreSQL connections by name.
    #[serde(default)]
    pub connections: BTreeMap<String, PgConnection<S>>,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, DbRole>,
}

fn default_db_path() -> String {
    "database".into()
}

/// A PostgreSQL connection of the database engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgConnection<S> {
    /// `postgresql://{{username}}:{{password}}@host:5432/db`.
    pub connection_url: String,
    /// The admin user Vault connects as.
    pub username: String,
    /// Its password (a secret reference in castle.toml).
    pub password: S,
    /// Whether Vault checks the connection on write; false before the database exists.
    #[serde(default)]
    pub verify_connection: bool,
    /// Roles allowed to use it.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
}

/// A dynamic database role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DbRole {
    /// The connection it uses.
    pub db_name: String,
    /// SQL run to create a user (`{{name}}`, `{{password}}`, `{{expiration}}`).
    pub creation_statements: Vec<String>,
    /// SQL run on revocation.
    #[serde(default)]
    pub revocation_statements: Vec<String>,
    /// Default lease, seconds.
    #[serde(default = "default_ttl")]
    pub default_ttl: u64,
    /// Longest lease, seconds.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: u64,
}

fn default_ttl() -> u64 {
    3600
}
fn default_max_ttl() -> u64 {
    86400
}

/// A KV v2 value generated once: a password or a keypair.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Generated {
    /// Name other parts of the spec (and Castle's steps) refer to.
    pub name: String,
    /// The KV v2 mount.
    pub mount: String,
    /// The path inside the mount.
    pub path: String,
    /// What to generate.
    pub kind: GeneratedKind,
    /// Password length.
    #[serde(default = "default_len")]
    pub length: usize,
    /// The characters a password draws from (default: letters and digits).
    #[serde(default)]
    pub alphabet: Option<String>,
}

/// What a generated value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratedKind {
    /// A random password stored under key `password`.
    Password,
    /// An ECDSA P-256 keypair stored as `private_key` and `public_key` (PEM).
    EcdsaP256,
}

fn default_len() -> usize {
    32
}

impl<S> VaultSpec<S> {
    /// The same spec with every secret reference resolved.
    ///
    /// # Errors
    /// The first error `resolve` returns.
    pub fn resolve_secrets<T, E>(
        self,
        mut resolve: impl FnMut(&S) -> Result<T, E>,
    ) -> Result<VaultSpec<T>, E> {
        let mut database = Vec::with_capacity(self.database.len());
        for db in self.database {
            let mut connections = BTreeMap::new();
            for (name, c) in db.connections {
                let password = resolve(&c.password)?;
                connections.insert(
                    name,
                    PgConnection {
                        connection_url: c.connection_url,
                        username: c.username,
                        password,
                        verify_connection: c.verify_connection,
                        allowed_roles: c.allowed_roles,
                    },
                );
            }
            database.push(DatabaseMount {
                path: db.path,
                connections,
                roles: db.roles,
            });
        }
        Ok(VaultSpec {
            jwt: self.jwt,
            policies: self.policies,
            policy_files: self.policy_files,
            kv: self.kv,
            database,
            generated: self.generated,
            prune: self.prune,
        })
    }

    /// The spec with relative `policy_files` taken from `base` (castle.toml's folder).
    #[must_use]
    pub fn with_policy_files_under(mut self, base: &Path) -> Self {
        for file in self.policy_files.values_mut() {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        self
    }

    /// The HCL of policy `name`, inline or read from its file.
    ///
    /// # Errors
    /// [`crate::Error::Spec`] when no such policy is declared, [`crate::Error::Setup`]
    /// when its file cannot be read.
    pub fn policy_text(&self, name: &str) -> crate::Result<String> {
        if let Some(hcl) = self.policies.get(name) {
            return Ok(hcl.clone());
        }
        let file = self
            .policy_files
            .get(name)
            .ok_or_else(|| crate::Error::Spec(format!("policy `{name}` is not declared")))?;
        std::fs::read_to_string(file).map_err(|e| {
            crate::Error::Setup(format!("policy `{name}` file {}: {e}", file.display()))
        })
    }

    /// Names of every declared policy, inline or from a file.
    pub fn policy_names(&self) -> impl Iterator<Item = &String> {
        self.policies.keys().chain(self.policy_files.keys())
    }

    /// Every secret reference in the spec.
    pub fn secret_refs(&self) -> Vec<&S> {
        self.database
            .iter()
            .flat_map(|d| d.connections.values().map(|c| &c.password))
            .collect()
    }

    /// Checks internal references: `pubkeys_from` names a generated keypair, each
    /// generated value sits in a declared KV mount, each jwt role has a bound field;
    /// and that no inline policy breaks a rule OpenBao applies to policies (an
    /// unknown key, a misspelt capability, a string where a list belongs).
    ///
    /// # Errors
    /// [`crate::Error::Spec`] naming the first inconsistency.
    pub fn check(&self) -> crate::Result<()> {
        if let Some(name) = self
            .policy_files
            .keys()
            .find(|n| self.policies.contains_key(*n))
        {
            return Err(crate::Error::Spec(format!(
                "policy `{name}` is declared both inline and as a file"
            )));
        }
        for (name, hcl) in &self.policies {
            if let Some(rule) = crate::policy::broken_rule(hcl) {
                return Err(crate::Error::Spec(format!(
                    "policy `{name}`: OpenBao would refuse it: {rule}"
                )));
            }
        }
        for jwt in &self.jwt {
            for name in &jwt.pubkeys_from {
                match self.generated.iter().find(|g| &g.name == name) {
                    Some(g) if g.kind == GeneratedKind::EcdsaP256 => {}
                    Some(_) => {
                        return Err(crate::Error::Spec(format!(
                            "jwt `{}`: `{name}` is not an ecdsa-p256 keypair",
                            jwt.path
                        )));
                    }
                    None => {
                        return Err(crate::Error::Spec(format!(
                            "jwt `{}`: pubkeys_from names `{name}`, which is not in generated",
                            jwt.path
                        )));
                    }
                }
            }
            for (role, r) in &jwt.roles {
                if r.bound_audiences.is_empty()
                    && r.bound_subject.is_none()
                    && r.bound_claims.is_empty()
                {
                    return Err(crate::Error::Spec(format!(
                        "jwt role `{role}` needs bound_audiences, bound_subject or bound_claims (Vault refuses a role bound to nothing)"
                    )));
                }
            }
        }
        for (i, g) in self.generated.iter().enumerate() {
            if self.generated[..i].iter().any(|o| o.name == g.name) {
                return Err(crate::Error::Spec(format!(
                    "generated `{}` is declared twice",
                    g.name
                )));
            }
            if g.kind == GeneratedKind::Password
                && (g.length < 8 || g.alphabet.as_deref().is_some_and(|a| a.chars().count() < 2))
            {
                return Err(crate::Error::Spec(format!(
                    "generated password `{}` needs length >= 8 and an alphabet of 2 characters or more",
                    g.name
                )));
            }
            if !self.kv.iter().any(|k| k.path == g.mount) {
                return Err(crate::Error::Spec(format!(
                    "generated `{}` uses mount `{}`, which is not a declared kv mount",
                    g.name, g.mount
                )));
            }
        }
        for db in &self.database {
            for (role, r) in &db.roles {
                if !db.connections.contains_key(&r.db_name) {
                    return Err(crate::Error::Spec(format!(
                        "database role `{role}` uses connection `{}`, which is not declared",
                        r.db_name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The spec restricted to what the `vault-jwt` step owns (auth, policies, kv, keypairs).
    pub fn auth_part(&self) -> VaultSpec<S>
    where
        S: Clone,
    {
        VaultSpec {
            jwt: self.jwt.clone(),
            policies: self.policies.clone(),
            policy_files: self.policy_files.clone(),
            kv: self.kv.clone(),
            database: Vec::new(),
            generated: self
                .generated
                .iter()
                .filter(|g| g.kind == GeneratedKind::EcdsaP256)
                .cloned()
                .collect(),
            prune: self.prune,
        }
    }

    /// Only the KV mounts and the generated values: what must exist before anything
    /// that names a generated value (a connection password) is resolved.
    pub fn generated_part(&self) -> VaultSpec<S> {
        VaultSpec {
            kv: self.kv.clone(),
            generated: self.generated.clone(),
            ..VaultSpec::default()
        }
    }

    /// The spec restricted to what the `vault-db` step owns (database engines, passwords).
    pub fn database_part(&self) -> VaultSpec<S>
    where
        S: Clone,
    {
        VaultSpec {
            jwt: Vec::new(),
            policies: BTreeMap::new(),
            policy_files: BTreeMap::new(),
            kv: self.kv.clone(),
            database: self.database.clone(),
            generated: self
                .generated
                .iter()
                .filter(|g| g.kind != GeneratedKind::EcdsaP256)
                .cloned()
                .collect(),
            prune: false,
        }
    }
}
