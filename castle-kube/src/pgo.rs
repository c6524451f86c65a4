//! A stand-in for Crunchy's postgres-operator (PGO v5) in [`crate::MockCluster`]:
//! for each user of a `PostgresCluster` it creates the Secret PGO creates,
//! `<cluster>-pguser-<user>` in the cluster's namespace, labelled
//! `postgres-operator.crunchydata.com/cluster`, `.../pguser` and
//! `.../role: pguser`, with the keys `user`, `password`, `host`, `port`, `dbname`
//! (when the user names databases), `uri` and `verifier` (PGO's
//! `internal/controller/postgrescluster/postgres.go`, `reconcilePostgresUserSecrets`,
//! and `internal/naming/names.go`, `PostgresUserSecret`). The password is random and
//! generated once; an existing Secret is left alone, as PGO keeps a password it made.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

/// `postgres-operator.crunchydata.com/v1beta1`.
pub(crate) const API_VERSION: &str = "postgres-operator.crunchydata.com/v1beta1";

/// The user Secrets a PostgresCluster gets, by name; `exists` says which are there.
pub(crate) fn user_secrets(cluster: &Value, exists: impl Fn(&str) -> bool) -> Vec<Value> {
    let name = cluster
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = cluster
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    // Without `spec.users` PGO makes one user named after the cluster.
    let default_user = [json!({"name": name})];
    let users: Vec<Value> = cluster
        .pointer("/spec/users")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| default_user.to_vec());
    let host = format!("{name}-primary.{ns}.svc");
    let mut out = Vec::new();
    for u in users {
        let Some(user) = u.get("name").and_then(Value::as_str) else {
            continue;
        };
        let secret = format!("{name}-pguser-{user}");
        if exists(&secret) {
            continue;
        }
        let password = password();
        let dbname = u
            .pointer("/databases/0")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut data = serde_json::Map::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), json!(B64.encode(v)));
        };
        put("user", user);
        put("password", &password);
        put("host", &host);
        put("port", "5432");
        put(
            "verifier",
            &format!("SCRAM-SHA-256$4096:{}", B64.encode(password.as_bytes())),
        );
        match &dbname {
            Some(db) => {
                put("dbname", db);
                put(
                    "uri",
                    &format!("postgresql://{user}:{password}@{host}:5432/{db}"),
                );
            }
            None => put(
                "uri",
                &format!("postgresql://{user}:{password}@{host}:5432"),
            ),
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
            "type": "Opaque",
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

    #[test]
    fn each_user_gets_pgos_secret_once() {
        let cluster = json!({"apiVersion": API_VERSION, "kind": "PostgresCluster",
            "metadata": {"name": "tazlab-db", "namespace": "tazlab-db"},
            "spec": {"users": [{"name": "grafana", "databases": ["grafana"]}, {"name": "tazlab-admin"}]}});
        let made = user_secrets(&cluster, |_| false);
        let names: Vec<&str> = made
            .iter()
            .filter_map(|s| s.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        assert_eq!(
            names,
            ["tazlab-db-pguser-grafana", "tazlab-db-pguser-tazlab-admin"]
        );
        let decode = |k: &str| {
            String::from_utf8(
                B64.decode(made[0]["data"][k].as_str().unwrap_or_default())
                    .unwrap_or_default(),
            )
            .unwrap_or_default()
        };
        assert_eq!(decode("user"), "grafana");
        assert_eq!(decode("dbname"), "grafana");
        assert_eq!(decode("host"), "tazlab-db-primary.tazlab-db.svc");
        assert_eq!(decode("password").len(), 24);
        assert!(decode("uri").ends_with("@tazlab-db-primary.tazlab-db.svc:5432/grafana"));
        assert!(user_secrets(&cluster, |_| true).is_empty());
    }
}
