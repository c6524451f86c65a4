//! A stand-in for Crunchy's postgres-operator (PGO v5) in [`crate::MockCluster`],
//! after PGO's `internal/controller/postgrescluster/postgres.go`
//! (`reconcilePostgresUserSecrets`, `generatePostgresUserSecret`), `internal/util/
//! secrets.go` (the password alphabets), `internal/postgres/password/scram.go` (the
//! verifier) and `internal/naming/selectors.go` (`ClusterPostgresUsers`), read at
//! CrunchyData/postgres-operator `0fbac3062`:
//!
//! - the users are `spec.users`, or when unset one named after the cluster with a
//!   database of that name;
//! - a user's existing Secret is found by its labels (`.../cluster: <cluster>` and
//!   `.../pguser: <user>`), not by its name: a Secret made beforehand without those
//!   labels is not adopted, and PGO's forced apply replaces its password;
//! - PGO applies `<cluster>-pguser-<user>` with `host` (`<cluster>-primary.<ns>.svc`),
//!   `port` and `user` from the spec, the adopted `password` and `verifier` or new
//!   ones (24 characters of printable ASCII, or letters and digits with
//!   `password.type: AlphaNumeric`; a SCRAM-SHA-256 verifier, 4096 iterations and a
//!   16-byte salt), and with a database `dbname`, `uri` and `jdbc-uri` encoded as
//!   Go's `net/url` encodes them.
//!
//! The stand-in applies a Secret only when it would change, where PGO applies on
//! every reconcile; the objects that result are the same.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

/// `postgres-operator.crunchydata.com/v1beta1`.
pub(crate) const API_VERSION: &str = "postgres-operator.crunchydata.com/v1beta1";

const LABEL_CLUSTER: &str = "postgres-operator.crunchydata.com/cluster";
const LABEL_USER: &str = "postgres-operator.crunchydata.com/pguser";
const LABEL_ROLE: &str = "postgres-operator.crunchydata.com/role";

/// `policyASCII` in PGO's `internal/util/secrets.go`.
const ASCII: &[u8] =
    b"()*+,-./:;<=>?@[]^_{|}ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// `randomAlphaNumeric` there.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The user Secrets a PostgresCluster's reconcile would change. `secrets` are the
/// Secrets in the cluster's namespace.
pub(crate) fn user_secrets<'a>(
    cluster: &Value,
    secrets: impl Iterator<Item = &'a Value> + Clone,
) -> Vec<Value> {
    let name = cluster
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = cluster
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let users: Vec<Value> = cluster
        .pointer("/spec/users")
        .and_then(Value::as_array)
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!({"name": name, "databases": [name]})]);
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
        // `ClusterPostgresUsers`: selected by the cluster label, indexed by the
        // pguser label's value. Among several, PGO prefers its own name.
        let mut adopted: Vec<&Value> = secrets
            .clone()
            .filter(|s| {
                let l = |k: &str| s.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1")));
                l(LABEL_CLUSTER).and_then(Value::as_str) == Some(name)
                    && l(LABEL_USER).and_then(Value::as_str) == Some(user)
            })
            .collect();
        adopted
            .sort_by_key(|s| s.pointer("/metadata/name").and_then(Value::as_str) == Some(&secret));
        let have = adopted
            .last()
            .and_then(|s| s.get("data"))
            .cloned()
            .unwrap_or(Value::Null);
        let current = secrets
            .clone()
            .find(|s| s.pointer("/metadata/name").and_then(Value::as_str) == Some(&secret))
            .and_then(|s| s.get("data"))
            .cloned()
            .unwrap_or(Value::Null);
        let decoded = |k: &str| {
            have.get(k)
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|v| !v.is_empty())
        };
        let (password, verifier) = match decoded("password") {
            Some(p) => {
                let v = decoded("verifier").unwrap_or_else(|| scram_verifier(&p, &salt()));
                (p, v)
            }
            None => {
                let alphanumeric =
                    u.pointer("/password/type").and_then(Value::as_str) == Some("AlphaNumeric");
                let p = generate(if alphanumeric { ALPHANUMERIC } else { ASCII });
                let v = scram_verifier(&p, &salt());
                (p, v)
            }
        };
        let hostport = format!("{host}:{port}");
        let mut data = serde_json::Map::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), json!(B64.encode(v)));
        };
        put("host", &host);
        put("port", &port);
        put("user", user);
        put("password", &password);
        put("verifier", &verifier);
        if let Some(db) = u.pointer("/databases/0").and_then(Value::as_str) {
            put("dbname", db);
            put(
                "uri",
                &format!(
                    "postgresql://{}:{}@{hostport}/{db}",
                    escape(user, Mode::UserPassword),
                    escape(&password, Mode::UserPassword)
                ),
            );
            put(
                "jdbc-uri",
                &format!(
                    "jdbc:postgresql://{hostport}/{db}?password={}&user={}",
                    escape(&password, Mode::Query),
                    escape(user, Mode::Query)
                ),
            );
        }
        if Value::Object(data.clone()) == current {
            continue;
        }
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret,
                "namespace": ns,
                "labels": {
                    LABEL_CLUSTER: name,
                    LABEL_USER: user,
                    LABEL_ROLE: "pguser",
                },
            },
            "data": data,
        }));
    }
    out
}

/// The two ways Go's `net/url` escapes what PGO puts in a URI (`shouldEscape`):
/// userinfo keeps `$&+,;=` and the unreserved marks; a query component keeps only
/// the unreserved marks, and a space becomes `+`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    UserPassword,
    Query,
}

fn escape(s: &str, mode: Mode) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (mode == Mode::UserPassword && matches!(b, b'$' | b'&' | b'+' | b',' | b';' | b'='));
        if keep {
            out.push(char::from(b));
        } else if mode == Mode::Query && b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// 24 characters of `class`, uniformly (`DefaultGeneratedPasswordLength`).
fn generate(class: &[u8]) -> String {
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(24);
    while out.len() < 24 {
        let mut b = [0u8; 1];
        // The system's generator does not fail on Linux; should it, the draw is
        // simply repeated with the zeroed byte, which is still in range.
        let _ = rng.fill(&mut b);
        // Rejection sampling keeps the draw uniform, as Go's `rand.Int` does.
        let limit = 256 - 256 % class.len();
        if usize::from(b[0]) < limit {
            out.push(char::from(class[usize::from(b[0]) % class.len()]));
        }
    }
    out
}

fn salt() -> [u8; 16] {
    let mut s = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut s);
    s
}

/// A PostgreSQL SCRAM-SHA-256 verifier (RFC 5802/7677, as PostgreSQL stores it):
/// `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`. PGO's passwords are ASCII,
/// which SASLprep leaves as it is.
fn scram_verifier(password: &str, salt: &[u8]) -> String {
    use ring::{digest, hmac, pbkdf2};
    const ITERATIONS: u32 = 4096;
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::MIN.saturating_add(ITERATIONS - 1),
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key.as_ref()),
        B64.encode(server_key.as_ref())
    )
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

    fn made_by(cluster: &Value, secrets: &[Value]) -> Vec<Value> {
        user_secrets(cluster, secrets.iter())
    }

    /// `generatePostgresUserSecret`: libpq keys, a verifier, and with a database
    /// its URIs; a reconcile over its own Secrets changes nothing.
    #[test]
    fn each_user_gets_pgos_secret_and_a_second_reconcile_changes_nothing() {
        let cluster = json!({"apiVersion": API_VERSION, "kind": "PostgresCluster",
            "metadata": {"name": "tazlab-db", "namespace": "tazlab-db"},
            "spec": {"users": [{"name": "grafana", "databases": ["grafana"]}, {"name": "ops"}]}});
        let made = made_by(&cluster, &[]);
        let names: Vec<&str> = made
            .iter()
            .filter_map(|s| s.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        assert_eq!(names, ["tazlab-db-pguser-grafana", "tazlab-db-pguser-ops"]);
        assert_eq!(decode(&made[0], "user"), "grafana");
        assert_eq!(decode(&made[0], "dbname"), "grafana");
        assert_eq!(decode(&made[0], "host"), "tazlab-db-primary.tazlab-db.svc");
        assert_eq!(decode(&made[0], "port"), "5432");
        let password = decode(&made[0], "password");
        assert_eq!(password.len(), 24);
        assert!(password.bytes().all(|b| ASCII.contains(&b)), "{password}");
        assert!(decode(&made[0], "verifier").starts_with("SCRAM-SHA-256$4096:"));
        let uri = decode(&made[0], "uri");
        assert!(uri.starts_with("postgresql://grafana:"), "{uri}");
        assert!(
            uri.ends_with("@tazlab-db-primary.tazlab-db.svc:5432/grafana"),
            "{uri}"
        );
        assert!(decode(&made[0], "jdbc-uri").starts_with(
            "jdbc:postgresql://tazlab-db-primary.tazlab-db.svc:5432/grafana?password="
        ));
        // No database: no dbname and no URIs.
        assert!(made[1]["data"].get("uri").is_none() && made[1]["data"].get("dbname").is_none());
        assert!(made_by(&cluster, &made).is_empty());
    }

    /// `reconcilePostgresUserSecrets` finds a user's Secret by the
    /// `ClusterPostgresUsers` selector and the pguser label: a labelled Secret made
    /// beforehand keeps its password (the reference setup's bootstrap user); one
    /// without the labels is not adopted and PGO's forced apply replaces it.
    #[test]
    fn only_a_labelled_secret_made_beforehand_keeps_its_password() {
        let cluster = json!({"metadata": {"name": "db", "namespace": "apps"}, "spec": {}});
        let before = |labels: Value| {
            json!({"metadata": {"name": "db-pguser-db", "namespace": "apps", "labels": labels},
                   "data": {"password": B64.encode("chosen")}})
        };
        let labelled = before(json!({LABEL_CLUSTER: "db", LABEL_USER: "db"}));
        let made = made_by(&cluster, &[labelled]);
        assert_eq!(made.len(), 1);
        assert_eq!(decode(&made[0], "password"), "chosen");
        assert_eq!(
            decode(&made[0], "dbname"),
            "db",
            "the default user has a database"
        );
        assert!(
            decode(&made[0], "uri")
                .starts_with("postgresql://db:chosen@db-primary.apps.svc:5432/db")
        );
        assert!(decode(&made[0], "verifier").starts_with("SCRAM-SHA-256$4096:"));

        let unlabelled = before(json!({}));
        let made = made_by(&cluster, &[unlabelled]);
        assert_ne!(decode(&made[0], "password"), "chosen");
        assert_eq!(made[0]["metadata"]["labels"][LABEL_ROLE], "pguser");
    }

    /// `password.type: AlphaNumeric` switches PGO's generator to letters and digits.
    #[test]
    fn an_alphanumeric_user_gets_letters_and_digits() {
        let cluster = json!({"metadata": {"name": "db", "namespace": "apps"},
            "spec": {"users": [{"name": "app", "password": {"type": "AlphaNumeric"}}]}});
        for _ in 0..20 {
            let p = decode(&made_by(&cluster, &[])[0], "password");
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
        }
    }

    /// Go's `net/url` (`shouldEscape`): userinfo escapes `@ / ? :` and keeps
    /// `$&+,;=`; `url.Values.Encode` escapes every reserved character.
    #[test]
    fn uris_escape_the_password_as_gos_net_url_does() {
        let p = "a@b:c/d?e$f&g+h,i;j=k(l)*m[n]{o}|p<q>^";
        assert_eq!(
            escape(p, Mode::UserPassword),
            "a%40b%3Ac%2Fd%3Fe$f&g+h,i;j=k%28l%29%2Am%5Bn%5D%7Bo%7D%7Cp%3Cq%3E%5E"
        );
        assert_eq!(escape("a b&c=d+e", Mode::Query), "a+b%26c%3Dd%2Be");
    }

    /// The verifier is one PostgreSQL accepts: a role whose password is set to it
    /// logs in with the plain password and is refused with another (pg_hba uses
    /// scram-sha-256 in scripts/services.sh). Needs the test command's PostgreSQL.
    #[test]
    fn postgresql_accepts_the_verifier_for_its_password() {
        let get = |k: &str| std::env::var(k).ok();
        let (Some(host), Some(port), Some(admin), Some(admin_pw), Some(psql)) = (
            get("CASTLE_TEST_PG_HOST"),
            get("CASTLE_TEST_PG_PORT"),
            get("CASTLE_TEST_PG_USER"),
            get("CASTLE_TEST_PG_PASSWORD"),
            get("CASTLE_TEST_PSQL"),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but CASTLE_TEST_PG_* are not: scripts/test.sh starts PostgreSQL"
            );
            eprintln!(
                "SKIPPED: CASTLE_TEST_PG_* unset (run scripts/services.sh, or scripts/test.sh)"
            );
            return;
        };
        let run = |user: &str, pw: &str, sql: &str| {
            std::process::Command::new(&psql)
                .args([
                    "-h", &host, "-p", &port, "-U", user, "-d", "postgres", "-tAc", sql,
                ])
                .env("PGPASSWORD", pw)
                .output()
                .map(|o| {
                    (
                        o.status.success(),
                        String::from_utf8_lossy(&o.stderr).to_string(),
                    )
                })
                .map_err(|e| e.to_string())
        };
        let role = format!("castle_pgo_{}", std::process::id());
        let password = generate(ASCII);
        let verifier = scram_verifier(&password, &salt());
        let (ok, err) = run(
            &admin,
            &admin_pw,
            &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{verifier}'"),
        )
        .unwrap();
        assert!(ok, "{err}");
        let right = run(&role, &password, "SELECT 1").unwrap();
        let wrong = run(&role, "not-the-password", "SELECT 1").unwrap();
        let _ = run(&admin, &admin_pw, &format!("DROP ROLE {role}"));
        assert!(
            right.0,
            "PostgreSQL refused the verifier's password: {}",
            right.1
        );
        assert!(
            !wrong.0 && wrong.1.contains("password authentication failed"),
            "{}",
            wrong.1
        );
    }
}
