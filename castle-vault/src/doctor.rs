//! Read-only checks of a Vault before Castle writes to it: reachable and unsealed,
//! the token valid and long-lived enough, and `sys/capabilities-self` for every
//! path Castle reads or writes. Nothing here writes: `sys/capabilities-self` is a
//! POST that only asks.

use castle_probe::Finding;
use serde_json::{Value, json};

use crate::VaultApi;
use crate::acl::needs_sudo;
use crate::spec::VaultSpec;

const SYSTEM: &str = "vault";

/// Capabilities Castle needs on one path, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The logical path (`sys/auth/jwt`, `secret/data/app`).
    pub path: String,
    /// Capabilities, `sudo` included where the path needs it.
    pub capabilities: Vec<&'static str>,
    /// What Castle does there.
    pub why: String,
}

impl Need {
    fn new(path: String, capabilities: &[&'static str], why: impl Into<String>) -> Self {
        let mut capabilities = capabilities.to_vec();
        if needs_sudo(&path) && !capabilities.contains(&"sudo") {
            capabilities.push("sudo");
        }
        Need {
            path,
            capabilities,
            why: why.into(),
        }
    }
}

/// Every path `castle vault apply`, `create`, `destroy` and `destroy --wipe` touch
/// for `spec`, plus Castle's own KV entries under `kv_paths` (mount, path).
pub fn needs<S>(spec: &VaultSpec<S>, kv_paths: &[(String, String, String)]) -> Vec<Need> {
    let mut out = Vec::new();
    if !spec.jwt.is_empty() {
        out.push(Need::new(
            "sys/auth".into(),
            &["read"],
            "listing auth methods (plan)",
        ));
    }
    for jwt in &spec.jwt {
        let p = jwt.path.trim_matches('/');
        out.push(Need::new(
            format!("sys/auth/{p}"),
            &["update"],
            format!("enabling the JWT auth method at {p}/"),
        ));
        out.push(Need::new(
            format!("auth/{p}/config"),
            &["read", "update"],
            "writing the JWT validation keys and issuer",
        ));
        for role in jwt.roles.keys() {
            out.push(Need::new(
                format!("auth/{p}/role/{role}"),
                &["create", "read", "update"],
                format!("writing JWT role {role}"),
            ));
        }
    }
    for name in spec.policy_names() {
        out.push(Need::new(
            format!("sys/policies/acl/{name}"),
            &["read", "update"],
            format!("writing policy {name}"),
        ));
    }
    if !spec.kv.is_empty() || !spec.database.is_empty() {
        out.push(Need::new(
            "sys/mounts".into(),
            &["read"],
            "listing secrets engines (plan)",
        ));
    }
    for kv in &spec.kv {
        let p = kv.path.trim_matches('/');
        out.push(Need::new(
            format!("sys/mounts/{p}"),
            &["update"],
            format!("mounting KV v2 at {p}/"),
        ));
    }
    for g in &spec.generated {
        out.push(Need::new(
            format!("{}/data/{}", g.mount.trim_matches('/'), g.path),
            &["create", "read"],
            format!("keeping generated value {}", g.name),
        ));
    }
    for db in &spec.database {
        let p = db.path.trim_matches('/');
        out.push(Need::new(
            format!("sys/mounts/{p}"),
            &["update"],
            format!("mounting the database engine at {p}/"),
        ));
        for name in db.connections.keys() {
            out.push(Need::new(
                format!("{p}/config/{name}"),
                &["create", "read", "update"],
                format!("writing database connection {name}"),
            ));
        }
        for role in db.roles.keys() {
            out.push(Need::new(
                format!("{p}/roles/{role}"),
                &["create", "read", "update"],
                format!("writing database role {role}"),
            ));
            out.push(Need::new(
                format!("sys/leases/lookup/{p}/creds/{role}/"),
                &["list"],
                format!("finding live leases of {role} (status, destroy)"),
            ));
            out.push(Need::new(
                format!("sys/leases/revoke-prefix/{p}/creds/{role}"),
                &["update"],
                format!("revoking the leases of {role} on destroy"),
            ));
        }
    }
    for (mount, path, why) in kv_paths {
        let mount = mount.trim_matches('/');
        out.push(Need::new(
            format!("{mount}/data/{path}"),
            &["create", "read", "update"],
            why.clone(),
        ));
        out.push(Need::new(
            format!("{mount}/metadata/{path}"),
            &["delete"],
            format!("{why} (removed by destroy --wipe)"),
        ));
    }
    out
}

/// Seconds below which a token without renewal cannot see a rebirth through.
const TTL_FAIL: u64 = 15 * 60;
/// Seconds below which a token is worth a warning.
const TTL_WARN: u64 = 60 * 60;

/// Asks the server and the token, then every path of `needs` in one
/// `sys/capabilities-self` request. Stops after the first check that makes the
/// rest meaningless (unreachable, sealed, token refused).
pub async fn preflight(api: &dyn VaultApi, needs: &[Need]) -> Vec<Finding> {
    let mut out = Vec::new();
    match api.seal_status().await {
        Err(e) => {
            out.push(Finding::fail(
                SYSTEM,
                "reachable",
                e.to_string(),
                "check vault.address (and that the tailnet route to it is up) and vault.ca_file",
            ));
            return out;
        }
        Ok(s) if !s.initialized => {
            out.push(Finding::fail(
                SYSTEM,
                "initialized",
                format!("version {} is not initialized", s.version),
                "initialize it (`bao operator init`)",
            ));
            return out;
        }
        Ok(s) if s.sealed => {
            out.push(Finding::fail(
                SYSTEM,
                "unsealed",
                format!(
                    "version {} is sealed: every call would answer 503",
                    s.version
                ),
                "unseal it (`bao operator unseal`, or start its auto-unseal)",
            ));
            return out;
        }
        Ok(s) => out.push(Finding::pass(
            SYSTEM,
            "reachable and unsealed",
            format!("version {}", s.version),
        )),
    }
    match api.read("auth/token/lookup-self").await {
        Err(e) => {
            out.push(Finding::fail(
                SYSTEM,
                "token valid",
                format!("auth/token/lookup-self: {e}"),
                "vault.token must name a live token (check it with `bao token lookup`)",
            ));
            return out;
        }
        Ok(None) => {
            out.push(Finding::fail(
                SYSTEM,
                "token valid",
                "auth/token/lookup-self answered nothing",
                "vault.token must name a live token (check it with `bao token lookup`)",
            ));
            return out;
        }
        Ok(Some(info)) => out.push(token_finding(&info)),
    }
    if needs.is_empty() {
        return out;
    }
    let paths: Vec<&str> = needs.iter().map(|n| n.path.as_str()).collect();
    let granted = match api
        .write("sys/capabilities-self", json!({ "paths": paths }))
        .await
    {
        Ok(Some(v)) => v,
        Ok(None) => Value::Null,
        Err(e) => {
            out.push(Finding::fail(
                SYSTEM,
                "capabilities",
                format!("sys/capabilities-self: {e}"),
                "grant `update` on sys/capabilities-self (the built-in default policy does)",
            ));
            return out;
        }
    };
    for need in needs {
        out.push(capability_finding(need, &granted));
    }
    out
}

fn token_finding(info: &Value) -> Finding {
    let policies: Vec<&str> = info
        .get("policies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ttl = info.get("ttl").and_then(Value::as_u64).unwrap_or(0);
    let renewable = info
        .get("renewable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let policies = policies.join(", ");
    let renew = if renewable {
        "renewable"
    } else {
        "not renewable"
    };
    let detail = if ttl == 0 {
        format!("policies [{policies}], no expiry")
    } else {
        format!("policies [{policies}], expires in {}, {renew}", human(ttl))
    };
    let fix = "use a token whose TTL outlives a rebirth (`bao token create -ttl=8h -policy=...`)";
    if ttl != 0 && ttl < TTL_FAIL {
        Finding::fail(SYSTEM, "token valid", detail, fix)
    } else if ttl != 0 && ttl < TTL_WARN {
        Finding::warn(SYSTEM, "token valid", detail, fix)
    } else {
        Finding::pass(SYSTEM, "token valid", detail)
    }
}

fn human(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

fn capability_finding(need: &Need, granted: &Value) -> Finding {
    let has: Vec<&str> = granted
        .get(&need.path)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let check = format!("{} on {}", need.capabilities.join(", "), need.path);
    if has.contains(&"root") {
        return Finding::pass(SYSTEM, check, format!("root token; {}", need.why));
    }
    let missing: Vec<&str> = need
        .capabilities
        .iter()
        .copied()
        .filter(|c| !has.contains(c))
        .collect();
    if missing.is_empty() {
        return Finding::pass(SYSTEM, check, need.why.clone());
    }
    let quoted: Vec<String> = need
        .capabilities
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    Finding::fail(
        SYSTEM,
        check,
        format!(
            "the token lacks {} on {} (it has [{}]); needed for {}",
            missing.join(", "),
            need.path,
            has.join(", "),
            need.why
        ),
        format!(
            "add to the token's policy: path \"{}\" {{ capabilities = [{}] }}",
            need.path,
            quoted.join(", ")
        ),
    )
}

#[cfg(all(test, feature = "mock"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::MockVault;
    use castle_probe::Status;

    fn spec() -> VaultSpec<String> {
        toml::from_str(
            r#"
[[jwt]]
bound_issuer = "https://k8s:6443"
validation_pubkeys = ["x"]
[jwt.roles.eso]
user_claim = "sub"
bound_subject = "system:serviceaccount:eso:eso"
token_policies = ["eso"]
[policies]
eso = 'path "secret/*" { capabilities = ["read"] }'
[[kv]]
path = "secret"
[[database]]
[database.roles.app]
db_name = "pg"
creation_statements = ["CREATE ROLE"]
"#,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_root_token_passes_every_path_and_nothing_is_written() {
        let vault = MockVault::new();
        let before = vault.snapshot();
        let needs = needs(&spec(), &[]);
        let findings = preflight(&vault, &needs).await;
        assert!(
            findings.iter().all(|f| f.status == Status::Pass),
            "{findings:#?}"
        );
        assert_eq!(findings.len(), 2 + needs.len());
        assert_eq!(vault.snapshot(), before);
    }

    #[tokio::test]
    async fn a_narrow_token_is_told_which_path_and_capability_it_lacks() {
        let vault = MockVault::new();
        vault
            .write(
                "sys/policies/acl/narrow",
                json!({"policy": "path \"sys/*\" { capabilities = [\"read\", \"update\"] }\npath \"auth/*\" { capabilities = [\"create\", \"read\", \"update\"] }\npath \"database/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }"}),
            )
            .await
            .unwrap();
        vault.set_token_policies(&["narrow"], Some((600, false)));
        let findings = preflight(&vault, &needs(&spec(), &[])).await;
        let failed: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .collect();
        // The 10-minute token, sudo on the auth mount and on both lease paths.
        assert!(
            failed[0].check == "token valid" && failed[0].detail.contains("10m00s"),
            "{failed:#?}"
        );
        let sudo: Vec<&str> = failed[1..].iter().map(|f| f.check.as_str()).collect();
        assert_eq!(
            sudo,
            [
                "update, sudo on sys/auth/jwt",
                "list, sudo on sys/leases/lookup/database/creds/app/",
                "update, sudo on sys/leases/revoke-prefix/database/creds/app"
            ]
        );
        assert!(failed[1].detail.contains("lacks sudo"), "{:?}", failed[1]);
        assert!(failed[1].fix.as_deref().is_some_and(|f| {
            f.contains("path \"sys/auth/jwt\" { capabilities = [\"update\", \"sudo\"] }")
        }));
    }

    #[tokio::test]
    async fn a_sealed_vault_stops_the_checks_with_the_fix() {
        let vault = MockVault::new();
        vault.set_sealed(true);
        let findings = preflight(&vault, &needs(&spec(), &[])).await;
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].status, Status::Fail);
        assert!(findings[0].fix.as_deref().unwrap_or("").contains("unseal"));
    }
}
