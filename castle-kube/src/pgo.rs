//! A stand-in for Crunchy's postgres-operator (PGO v5) in [`crate::MockCluster`],
//! after PGO's `internal/controller/postgrescluster/postgres.go`
//! (`reconcilePostgresUserSecrets`, `generatePostgresUserSecret`, read on GitHub's
//! main branch): for each user of a `PostgresCluster` (one named after the cluster,
//! with a database of that name, when `spec.users` is unset) the Secret
//! `<cluster>-pguser-<user>` in the cluster's namespace, labelled
//! `postgres-operator.crunchydata.com/cluster`, `.../role: pguser` and
//! `.../pguser: <user>`, holding `host` (`<cluster>-primary.<ns>.svc`), `port`,
//! `user`, `password`, `verifier`, and with a database `dbname`, `uri` and
//! `jdbc-uri`. A Secret that already carries a password (one made before the
//! cluster, as the reference setup does for its admin user) keeps it: PGO fills in
//! the other keys around it. The stand-in writes only a Secret that lacks a key;
//! its verifier is a placeholder, not a SCRAM verifier.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

/// `postgres-operator.crunchydata.com/v1beta1`.
pub(crate) const API_VERSION: &str = "postgres-operator.crunchydata.com/v1beta1";

/// The user Secrets a PostgresCluster still needs written. `existing` gives a
/// Secret's current `data` by name.
pub(crate) fn user_secrets(
    cluster: &Value,
    existing: impl Fn(&str) -> Option<Value>,
) -> Vec<Value> {
    let name = cluster
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = cluster
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let default_user = [json!({"name": name, "databases": [name]})];
    let users: Vec<Value> = cluster
        .pointer("/spec/users")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| default_user.to_vec());
    let host = format!("{name}-primary.{ns}.svc");
    let port = cluster
        .pointer("/spec/port")
        .and_then(Value::as_u64)
        .unwrap_or(5432)
        .to_string();
    let mut out = Vec::new();
    for u in users {
        let Some(user) = u.get("name").and_then(Value::as_str) else {
            continue;
        };
        let secret = format!("{name}-pguser-{user}");
        let have = existing(&secret).unwrap_or(Value::Null);
        let decoded = |k: &str| {
            have.get(k)
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|v| !v.is_empty())
        };
        let password = decoded("password").unwrap_or_else(password);
        let database = u.pointer("/databases/0").and_then(Value::as_str);
        let mut keys = vec![
            ("host", host.clone()),
            ("port", port.clone()),
            ("user", user.to_string()),
            ("verifier", format!("SCRAM-SHA-256$4096:placeholder-{user}")),
        ];
        if let Some(db) = database {
            keys.push(("dbname", db.to_string()));
            keys.push((
                "uri",
                format!("postgresql://{user}:{password}@{host}:{port}/{db}"),
            ));
            keys.push((
                "jdbc-uri",
                format!("jdbc:postgresql://{host}:{port}/{db}?password={password}&user={user}"),
            ));
        }
        if keys.iter().all(|(k, _)| have.get(*k).is_some()) && have.get("password").is_some() {
            continue;
        }
        let mut data = serde_json::Map::new();
        data.insert("password".into(), json!(B64.encode(&password)));
        for (k, v) in keys {
            // What is there stays: PGO keeps an existing verifier with its password.
            let value = have.get(k).cloned().unwrap_or_else(|| json!(B64.encode(v)));
            data.insert(k.to_string(), value);
        }
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret,
                "namespace": ns,
                "labels": {
                    "postgres-operator.crunchydata.com/cluster": name,
                    "postgres-operator.crunchydata.com/pguser": user,
                    "postgres-operator.crunchydata.com/role": "pguser",
                },
            },
            "data": data,
        }));
    }
    out
}

/// 24 characters PGO's generator draws from (letters and digits here).
fn password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 24];
    // The system's generator does not fail on Linux; a zeroed buffer would still be
    // a valid (if weak) simulated password.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &Value, k: &str) -> String {
        s["data"][k]
            .as_str()
            .and_then(|b| B64.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// `generatePostgresUserSecret`: libpq keys, and with a database its URIs.
    #[test]
    fn each_user_gets_pgos_secret_until_it_holds_every_key() {
        let cluster = json!({"apiVersion": API_VERSION, "kind": "PostgresCluster",
            "metadata": {"name": "tazlab-db", "namespace": "tazlab-db"},
            "spec": {"users": [{"name": "grafana", "databases": ["grafana"]}, {"name": "ops"}]}});
        let made = user_secrets(&cluster, |_| None);
        let names: Vec<&str> = made
            .iter()
            .filter_map(|s| s.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        assert_eq!(names, ["tazlab-db-pguser-grafana", "tazlab-db-pguser-ops"]);
        assert_eq!(decode(&made[0], "user"), "grafana");
        assert_eq!(decode(&made[0], "dbname"), "grafana");
        assert_eq!(decode(&made[0], "host"), "tazlab-db-primary.tazlab-db.svc");
        assert_eq!(decode(&made[0], "password").len(), 24);
        assert!(decode(&made[0], "uri").ends_with("@tazlab-db-primary.tazlab-db.svc:5432/grafana"));
        assert!(decode(&made[0], "jdbc-uri").starts_with("jdbc:postgresql://"));
        // No database: no dbname and no URIs.
        assert!(made[1]["data"].get("uri").is_none() && made[1]["data"].get("dbname").is_none());
        // Complete Secrets are left alone.
        let again = user_secrets(&cluster, |n| {
            made.iter()
                .find(|s| s["metadata"]["name"] == n)
                .map(|s| s["data"].clone())
        });
        assert!(again.is_empty());
    }

    /// PGO keeps the password of a Secret made before it and fills in the rest;
    /// without `spec.users` the user and its database are named after the cluster.
    #[test]
    fn a_password_made_beforehand_is_kept_and_the_default_user_has_a_database() {
        let cluster = json!({"metadata": {"name": "db", "namespace": "apps"}, "spec": {}});
        let made = user_secrets(&cluster, |n| {
            (n == "db-pguser-db").then(|| json!({"password": B64.encode("chosen")}))
        });
        assert_eq!(made.len(), 1);
        assert_eq!(decode(&made[0], "password"), "chosen");
        assert_eq!(decode(&made[0], "dbname"), "db");
        assert!(
            decode(&made[0], "uri")
                .starts_with("postgresql://db:chosen@db-primary.apps.svc:5432/db")
        );
    }
}
