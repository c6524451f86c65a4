//! Against a real OpenBao and PostgreSQL (started by scripts/services.sh; the test
//! command exports VAULT_ADDR, VAULT_TOKEN and CASTLE_TEST_PG_*). Each run uses
//! mounts of its own, so runs against the same server never collide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use castle_vault::{
    VaultApi, VaultClient, VaultSettings, VaultSpec, apply, generated_value, plan, revoke_leases,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

struct Env {
    addr: String,
    token: String,
    pg: (String, String, String, String, String),
}

fn env() -> Option<Env> {
    let get = |k: &str| std::env::var(k).ok();
    let (Some(addr), Some(token)) = (get("VAULT_ADDR"), get("VAULT_TOKEN")) else {
        eprintln!(
            "skipping: VAULT_ADDR/VAULT_TOKEN unset (run scripts/services.sh, or scripts/test.sh)"
        );
        return None;
    };
    let pg = (
        get("CASTLE_TEST_PG_HOST")?,
        get("CASTLE_TEST_PG_PORT")?,
        get("CASTLE_TEST_PG_USER")?,
        get("CASTLE_TEST_PG_PASSWORD")?,
        get("CASTLE_TEST_PSQL")?,
    );
    Some(Env { addr, token, pg })
}

fn psql(e: &Env, user: &str, password: &str, sql: &str) -> Result<String, String> {
    let (host, port, _, _, bin) = &e.pg;
    let out = Command::new(bin)
        .args([
            "-h", host, "-p", port, "-U", user, "-d", "postgres", "-tAc", sql,
        ])
        .env("PGPASSWORD", password)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn spec_text(run: &str, e: &Env) -> String {
    let (host, port, user, _, _) = &e.pg;
    format!(
        r#"
[[kv]]
path = "kv-{run}"

[[jwt]]
path = "jwt-{run}"
bound_issuer = "https://192.168.1.210:6443"
pubkeys_from = ["sa-key"]

[jwt.roles.external-secrets]
user_claim = "sub"
bound_audiences = ["vault"]
bound_subject = "system:serviceaccount:external-secrets:external-secrets"
token_policies = ["eso-{run}"]
token_ttl = 3600

[policies]
eso-{run} = 'path "kv-{run}/data/*" {{ capabilities = ["read"] }}'

[[database]]
path = "db-{run}"

[database.connections.main]
connection_url = "postgresql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/postgres?sslmode=disable"
username = "{user}"
password = "(from env)"
verify_connection = true
allowed_roles = ["grafana"]

[database.roles.grafana]
db_name = "main"
creation_statements = ["CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}';"]
revocation_statements = ["DROP ROLE IF EXISTS \"{{{{name}}}}\";"]
default_ttl = 600
max_ttl = 3600

[[generated]]
name = "sa-key"
mount = "kv-{run}"
path = "castle/lab/service-account"
kind = "ecdsa-p256"

[[generated]]
name = "grafana-admin"
mount = "kv-{run}"
path = "castle/lab/grafana-admin"
kind = "password"
length = 24
"#
    )
}

/// An ES256 JWT signed with the PKCS#8 PEM key, as the cluster's API server would.
fn jwt(pem: &str, claims: &Value) -> String {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &rng,
    )
    .unwrap();
    let signing = format!(
        "{}.{}",
        B64URL.encode(json!({"alg": "ES256", "typ": "JWT"}).to_string()),
        B64URL.encode(claims.to_string())
    );
    let sig = key.sign(&rng, signing.as_bytes()).unwrap();
    format!("{signing}.{}", B64URL.encode(sig.as_ref()))
}

#[tokio::test]
async fn the_reference_spec_against_real_openbao_and_postgresql() {
    let Some(e) = env() else { return };
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 0xffff_ffff
    );
    let client = VaultClient::new(VaultSettings::new(
        &e.addr,
        SecretString::from(e.token.clone()),
    ))
    .unwrap();
    let spec: VaultSpec<String> = toml::from_str(&spec_text(&run, &e)).unwrap();
    let pg_password = e.pg.3.clone();
    let spec = spec
        .resolve_secrets(|_| Ok::<_, ()>(SecretString::from(pg_password.clone())))
        .unwrap();

    // First apply creates everything; a second plan is empty.
    let first = plan(&client, &spec).await.unwrap();
    assert!(first.changes.len() >= 9, "{}", first.render());
    assert!(
        !first.render().contains(&e.pg.3),
        "the plan never shows the database password"
    );
    apply(&client, &spec, &first).await.unwrap();
    let second = plan(&client, &spec).await.unwrap();
    assert!(
        second.is_empty(),
        "re-apply must be a no-op:\n{}",
        second.render()
    );

    // Generate-once: the password survives another apply.
    let pw = generated_value(&client, &spec, "grafana-admin", "password")
        .await
        .unwrap()
        .unwrap();
    apply(&client, &spec, &second).await.unwrap();
    assert_eq!(
        generated_value(&client, &spec, "grafana-admin", "password")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        pw.expose_secret()
    );

    // A JWT signed with the generated key logs in and gets the role's policies.
    let key = generated_value(&client, &spec, "sa-key", "private_key")
        .await
        .unwrap()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jwt(
        key.expose_secret(),
        &json!({"iss": "https://192.168.1.210:6443", "sub": "system:serviceaccount:external-secrets:external-secrets", "aud": ["vault"], "iat": now, "nbf": now - 5, "exp": now + 300}),
    );
    let login = reqwest::Client::new()
        .post(format!("{}/v1/auth/jwt-{run}/login", e.addr))
        .json(&json!({"role": "external-secrets", "jwt": token}))
        .send()
        .await
        .unwrap();
    let status = login.status();
    let body: Value = login.json().await.unwrap();
    assert!(status.is_success(), "{body}");
    let policies = body["auth"]["policies"].as_array().unwrap();
    assert!(
        policies.iter().any(|p| p == &json!(format!("eso-{run}"))),
        "{body}"
    );

    // Hand-made drift shows in the plan.
    client
        .write(
            &format!("sys/policies/acl/eso-{run}"),
            json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"}),
        )
        .await
        .unwrap();
    let drift = plan(&client, &spec).await.unwrap();
    assert_eq!(drift.changes.len(), 1, "{}", drift.render());
    assert!(
        drift
            .render()
            .contains(&format!("~ policy sys/policies/acl/eso-{run}")),
        "{}",
        drift.render()
    );

    // Database creds connect to PostgreSQL; revoking the leases drops the user.
    let creds = client
        .read(&format!("db-{run}/creds/grafana"))
        .await
        .unwrap()
        .unwrap();
    let user = creds["username"].as_str().unwrap().to_string();
    let password = creds["password"].as_str().unwrap().to_string();
    assert!(
        creds["lease_id"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("db-{run}/creds/grafana/")))
    );
    assert_eq!(
        psql(&e, &user, &password, "select current_user").unwrap(),
        user
    );
    revoke_leases(&client, &spec).await.unwrap();
    let left = psql(
        &e,
        &e.pg.2,
        &e.pg.3,
        &format!("select count(*) from pg_roles where rolname = '{user}'"),
    )
    .unwrap();
    assert_eq!(left, "0", "revocation drops the user");
}
