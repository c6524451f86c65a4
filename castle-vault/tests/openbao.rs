//! Against a real OpenBao and PostgreSQL (started by scripts/services.sh; the test
//! command exports VAULT_ADDR, VAULT_TOKEN and CASTLE_TEST_PG_*). Each run uses
//! mounts of its own, so runs against the same server never collide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use castle_vault::{
    MockVault, VaultApi, VaultClient, VaultSettings, VaultSpec, apply, delete_kv, generated_value,
    plan, revoke_leases, rotate,
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
        // Under CI the test command starts OpenBao: its absence is a failure there.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but VAULT_ADDR/VAULT_TOKEN are not: scripts/test.sh starts OpenBao"
        );
        eprintln!(
            "SKIPPED: VAULT_ADDR/VAULT_TOKEN unset (run scripts/services.sh, or scripts/test.sh)"
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
    // `LIST sys/leases/lookup/...` sees the lease, on OpenBao as on the mock.
    let live = castle_vault::live_leases(&client, &spec).await.unwrap();
    assert_eq!(
        live,
        [creds["lease_id"].as_str().unwrap().to_string()],
        "live leases before revocation"
    );
    revoke_leases(&client, &spec).await.unwrap();
    assert!(
        castle_vault::live_leases(&client, &spec)
            .await
            .unwrap()
            .is_empty(),
        "none after revocation"
    );
    let left = psql(
        &e,
        &e.pg.2,
        &e.pg.3,
        &format!("select count(*) from pg_roles where rolname = '{user}'"),
    )
    .unwrap();
    assert_eq!(left, "0", "revocation drops the user");

    // Rotation on request: the jwt config follows the new key, the old key stops working.
    let claims = json!({"iss": "https://192.168.1.210:6443", "sub": "system:serviceaccount:external-secrets:external-secrets", "aud": ["vault"], "iat": now, "nbf": now - 5, "exp": now + 300});
    rotate(&client, &spec, "sa-key").await.unwrap();
    let stale = plan(&client, &spec).await.unwrap();
    assert!(
        stale
            .render()
            .contains(&format!("~ jwt config auth/jwt-{run}/config")),
        "{}",
        stale.render()
    );
    apply(&client, &spec, &stale).await.unwrap();
    let new_key = generated_value(&client, &spec, "sa-key", "private_key")
        .await
        .unwrap()
        .unwrap();
    let login = |key: &str| {
        let body = json!({"role": "external-secrets", "jwt": jwt(key, &claims)});
        let url = format!("{}/v1/auth/jwt-{run}/login", e.addr);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(login(new_key.expose_secret()).await.is_success());
    assert_eq!(login(key.expose_secret()).await.as_u16(), 400);

    // Wipe: generated material goes, then the run's mounts.
    delete_kv(&client, &format!("kv-{run}"), "castle/lab/grafana-admin")
        .await
        .unwrap();
    assert!(
        generated_value(&client, &spec, "grafana-admin", "password")
            .await
            .unwrap()
            .is_none()
    );
    for path in [
        format!("sys/mounts/db-{run}"),
        format!("sys/mounts/kv-{run}"),
        format!("sys/auth/jwt-{run}"),
        format!("sys/policies/acl/eso-{run}"),
    ] {
        client.delete(&path).await.unwrap();
    }
}

/// The mock's refusals are checked against the real server: the same writes, the
/// same status, the same words.
#[tokio::test]
async fn the_mock_refuses_what_openbao_refuses() {
    let Some(e) = env() else { return };
    let run = format!(
        "r{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 0xffff_ffff
    );
    let real = VaultClient::new(VaultSettings::new(
        &e.addr,
        SecretString::from(e.token.clone()),
    ))
    .unwrap();
    let mock = MockVault::new();
    let setup = [
        (
            format!("sys/mounts/kv-{run}"),
            json!({"type": "kv", "options": {"version": "2"}}),
        ),
        (format!("sys/mounts/db-{run}"), json!({"type": "database"})),
        (format!("sys/auth/jwt-{run}"), json!({"type": "jwt"})),
        (
            format!("kv-{run}/data/a"),
            json!({"data": {"x": "1"}, "options": {"cas": 0}}),
        ),
        (
            format!("db-{run}/roles/r"),
            json!({"db_name": "c", "creation_statements": ["x"]}),
        ),
    ];
    let refused = [
        (
            format!("sys/mounts/kv-{run}/sub"),
            json!({"type": "kv"}),
            "already in use",
        ),
        (
            "sys/policies/acl/root".to_string(),
            json!({"policy": "path \"x\" {}"}),
            "cannot update \"root\" policy",
        ),
        (
            format!("sys/policies/acl/bad-{run}"),
            json!({"policy": "path \"x\" { capabilities = [\"read\"] "}),
            "failed to parse policy",
        ),
        (
            format!("sys/policies/acl/bad-{run}"),
            json!({"policy": "foo"}),
            "failed to parse policy",
        ),
        (
            format!("sys/policies/acl/bad-{run}"),
            json!({"policy": ""}),
            "not supplied or empty",
        ),
        (
            format!("auth/jwt-{run}/config"),
            json!({"bound_issuer": "x"}),
            "exactly one of 'jwt_validation_pubkeys'",
        ),
        (
            format!("auth/jwt-{run}/config"),
            json!({"jwt_validation_pubkeys": ["not a pem"]}),
            "data does not contain any valid public keys",
        ),
        (
            format!("auth/jwt-{run}/role/x"),
            json!({"role_type": "jwt", "user_claim": "sub"}),
            "at least one bound constraint",
        ),
        (
            format!("auth/jwt-{run}/role/x"),
            json!({"role_type": "jwt", "bound_audiences": ["a"]}),
            "a user claim must be defined",
        ),
        (
            format!("kv-{run}/data/a"),
            json!({"data": {"x": "2"}, "options": {"cas": 0}}),
            "check-and-set parameter did not match the current version",
        ),
        (
            format!("kv-{run}/data/b"),
            json!({"options": {"cas": 0}}),
            "no data provided",
        ),
        (
            format!("db-{run}/roles/r2"),
            json!({"creation_statements": ["x"]}),
            "database name is required",
        ),
        (
            format!("db-{run}/config/c"),
            json!({"connection_url": "postgresql://127.0.0.1:1/x", "verify_connection": false}),
            "empty plugin name",
        ),
        (
            format!("db-{run}/config/c"),
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/x", "username": "u", "password": "p"}),
            "error verifying connection",
        ),
    ];
    for api in [&real as &dyn VaultApi, &mock] {
        for (path, body) in &setup {
            api.write(path, body.clone()).await.unwrap();
        }
        for (path, body, message) in &refused {
            let err = api.write(path, body.clone()).await.unwrap_err();
            assert_eq!(err.status(), Some(400), "{api:?} {path}: {err}");
            assert!(err.to_string().contains(message), "{api:?} {path}: {err}");
        }
        for (path, status, message) in [
            (format!("db-{run}/creds/none"), 400, "unknown role: none"),
            (
                format!("db-{run}/creds/r"),
                500,
                "failed to find entry for connection",
            ),
        ] {
            let err = api.read(&path).await.unwrap_err();
            assert_eq!(err.status(), Some(status), "{api:?} {path}: {err}");
            assert!(
                err.to_string().contains(message) && !err.is_transient(),
                "{api:?} {path}: {err}"
            );
        }
        for (path, message) in [
            (
                "sys/policies/acl/default".to_string(),
                "cannot delete default policy",
            ),
            (
                "sys/policies/acl/root".to_string(),
                "cannot delete \"root\" policy",
            ),
        ] {
            let err = api.delete(&path).await.unwrap_err();
            assert!(err.to_string().contains(message), "{api:?} {path}: {err}");
        }
        let err = api.delete(&format!("nomount-{run}/x")).await.unwrap_err();
        assert_eq!(err.status(), Some(404), "{api:?}: {err}");
        for path in [
            format!("sys/mounts/kv-{run}"),
            format!("sys/mounts/db-{run}"),
            format!("sys/auth/jwt-{run}"),
        ] {
            api.delete(&path).await.unwrap();
        }
    }
}

/// KV v2 as OpenBao keeps it: a soft delete (`DELETE data/...`) leaves the key's
/// versions in its metadata, so a `cas: 0` create fails until the metadata is
/// deleted, and a write at the current version succeeds. Castle's `destroy --wipe`
/// and its Talos bundle store rely on exactly this; MockVault must agree.
#[tokio::test]
async fn a_soft_deleted_kv_key_refuses_cas_zero_until_its_metadata_goes() {
    let Some(e) = env() else { return };
    let run = format!(
        "s{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 0xffff_ffff
    );
    let real = VaultClient::new(VaultSettings::new(
        &e.addr,
        SecretString::from(e.token.clone()),
    ))
    .unwrap();
    let mock = MockVault::new();
    for api in [&real as &dyn VaultApi, &mock as &dyn VaultApi] {
        let who = if std::ptr::addr_eq(api, &real as &dyn VaultApi) {
            "openbao"
        } else {
            "mock"
        };
        api.write(
            &format!("sys/mounts/kv-{run}"),
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await
        .unwrap();
        let data = format!("kv-{run}/data/castle/lab/talos-secrets");
        let meta = format!("kv-{run}/metadata/castle/lab/talos-secrets");
        api.write(
            &data,
            json!({"data": {"bundle": "one"}, "options": {"cas": 0}}),
        )
        .await
        .unwrap();
        api.delete(&data).await.unwrap();
        assert!(
            api.read(&data).await.unwrap().is_none(),
            "{who}: soft-deleted reads as absent"
        );
        let version = api.read(&meta).await.unwrap().expect("metadata stays")["current_version"]
            .as_u64()
            .unwrap();
        assert_eq!(version, 1, "{who}");
        let refused = api
            .write(
                &data,
                json!({"data": {"bundle": "two"}, "options": {"cas": 0}}),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(400), "{who}: {refused}");
        api.write(
            &data,
            json!({"data": {"bundle": "two"}, "options": {"cas": version}}),
        )
        .await
        .unwrap();
        delete_kv(api, &format!("kv-{run}"), "castle/lab/talos-secrets")
            .await
            .unwrap();
        assert!(
            api.read(&meta).await.unwrap().is_none(),
            "{who}: metadata deleted"
        );
        api.write(
            &data,
            json!({"data": {"bundle": "three"}, "options": {"cas": 0}}),
        )
        .await
        .unwrap();
    }
}
