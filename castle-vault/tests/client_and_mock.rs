//! The HTTP client against wiremock, and MockVault's rules, through plan and apply.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use castle_vault::{
    Error, Faults, Latency, MockVault, Op, VaultApi, VaultClient, VaultSettings, VaultSpec, apply,
    delete_kv, generated_value, plan, revoke_leases, revoke_prefix, rotate,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer) -> VaultClient {
    VaultClient::with_client(
        reqwest::Client::new(),
        &server.uri(),
        SecretString::from("canary-vault-token"),
    )
}

#[tokio::test]
async fn every_call_sends_the_token_and_errors_classify_themselves() {
    let server = MockServer::start().await;
    let token = header("X-Vault-Token", "canary-vault-token");
    Mock::given(method("GET"))
        .and(path("/v1/sys/auth"))
        .and(token)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"token/": {"type": "token"}}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/secret/data/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"errors": []})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/sys/policies/acl/eso"))
        .and(body_json(json!({"policy": "path \"x\" {}"})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("LIST"))
        .and(path("/v1/sys/policies/acl"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": {"keys": ["default", "eso"]}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/v1/database/creds/grafana"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"lease_id": "database/creds/grafana/abc", "lease_duration": 3600, "data": {"username": "v-x", "password": "p"}})))
        .expect(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1/sys/mounts"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(json!({"errors": ["Vault is sealed"]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/sys/policies/acl/root"))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"errors": ["permission denied"]})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let c = client(&server);
    assert!(c.read("sys/auth").await.unwrap().unwrap()["token/"].is_object());
    assert!(c.read("secret/data/missing").await.unwrap().is_none());
    c.write("sys/policies/acl/eso", json!({"policy": "path \"x\" {}"}))
        .await
        .unwrap();
    assert_eq!(
        c.list("sys/policies/acl").await.unwrap(),
        ["default", "eso"]
    );
    let creds = c.read("database/creds/grafana").await.unwrap().unwrap();
    assert_eq!(creds["lease_id"], "database/creds/grafana/abc");
    let sealed = c.read("sys/mounts").await.unwrap_err();
    assert!(
        sealed.is_transient() && sealed.to_string().contains("sealed"),
        "{sealed}"
    );
    let denied = c.delete("sys/policies/acl/root").await.unwrap_err();
    assert!(
        !denied.is_transient() && denied.to_string().contains("sys/policies/acl/root"),
        "{denied}"
    );
    for text in [sealed.to_string(), denied.to_string(), format!("{c:?}")] {
        assert!(!text.contains("canary-vault-token"), "{text}");
    }
    let down = VaultClient::with_client(
        reqwest::Client::new(),
        "http://127.0.0.1:9",
        SecretString::from("canary-vault-token"),
    );
    assert!(down.read("sys/auth").await.unwrap_err().is_transient());
}

const SPEC: &str = r#"
[[kv]]
path = "secret"

[[jwt]]
bound_issuer = "https://192.168.1.210:6443"
pubkeys_from = ["sa-key"]

[jwt.roles.eso]
user_claim = "sub"
bound_audiences = ["vault"]
token_policies = ["eso"]

[policies]
eso = 'path "secret/data/*" { capabilities = ["read"] }'

[[generated]]
name = "sa-key"
mount = "secret"
path = "castle/sa"
kind = "ecdsa-p256"
"#;

fn spec() -> VaultSpec {
    let s: VaultSpec<String> = toml::from_str(SPEC).unwrap();
    s.resolve_secrets(|p| Ok::<_, ()>(SecretString::from(p.clone())))
        .unwrap()
}

#[tokio::test]
async fn the_mock_holds_vaults_rules_and_apply_converges() {
    let v = MockVault::new();
    let e = v
        .write(
            "auth/jwt/config",
            json!({"bound_issuer": "x", "jwt_validation_pubkeys": ["k"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "a path before its mount: {e}");
    let s = spec();
    let p = plan(&v, &s).await.unwrap();
    assert!(
        p.render().contains("+ generated secret/data/castle/sa"),
        "{}",
        p.render()
    );
    apply(&v, &s, &p).await.unwrap();
    assert!(plan(&v, &s).await.unwrap().is_empty());
    let e = v
        .write("auth/jwt/role/bad", json!({"user_claim": "sub"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bound constraint"), "{e}");
    let e = v
        .write(
            "secret/data/castle/sa",
            json!({"data": {"x": 1}, "options": {"cas": 0}}),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("check-and-set"),
        "generate-once refuses a second create: {e}"
    );
    v.set_sealed(true);
    assert!(plan(&v, &s).await.unwrap_err().is_transient());
}

#[tokio::test]
async fn a_400_surfaces_vaults_errors_and_stays_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/auth/jwt/role/eso"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"errors": ["a user claim must be defined on the role", "second"]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server)
        .write("auth/jwt/role/eso", json!({"bound_audiences": ["vault"]}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.contains("auth/jwt/role/eso")
            && text.contains("a user claim must be defined on the role; second"),
        "{text}"
    );
}

#[tokio::test]
async fn server_errors_retry_except_database_misconfiguration() {
    let server = MockServer::start().await;
    let cases = [
        ("a", 500, json!({"errors": ["internal error"]}), true),
        ("b", 502, json!(null), true),
        ("c", 429, json!({"errors": ["rate limited"]}), true),
        (
            "d",
            500,
            json!({"errors": ["1 error occurred:\n\t* \"grafana\" is not an allowed role\n\n"]}),
            false,
        ),
        ("e", 403, json!({"errors": ["permission denied"]}), false),
    ];
    for (p, status, body, _) in &cases {
        let reply = if body.is_null() {
            ResponseTemplate::new(*status)
        } else {
            ResponseTemplate::new(*status).set_body_json(body)
        };
        Mock::given(method("GET"))
            .and(path(format!("/v1/database/creds/{p}")))
            .respond_with(reply)
            .expect(1)
            .mount(&server)
            .await;
    }
    let c = client(&server);
    for (p, status, _, transient) in cases {
        let e = c.read(&format!("database/creds/{p}")).await.unwrap_err();
        assert_eq!(e.status(), Some(status));
        assert_eq!(e.is_transient(), transient, "{e}");
        assert_eq!(e.retry_after(), None);
    }
}

#[tokio::test]
async fn lease_revocation_and_kv_deletion_send_the_documented_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/sys/leases/revoke-prefix/database/creds/grafana"))
        .and(header("X-Vault-Token", "canary-vault-token"))
        .and(body_json(json!({})))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/secret/metadata/castle/lab/grafana-admin"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    revoke_prefix(&c, "database/creds/grafana").await.unwrap();
    let s = db_spec("canary-admin-pw");
    assert_eq!(
        revoke_leases(&c, &s).await.unwrap(),
        ["database/creds/grafana"]
    );
    delete_kv(&c, "secret", "castle/lab/grafana-admin")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_response_that_is_not_json_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/sys/auth"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy</html>"))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server).read("sys/auth").await.unwrap_err();
    assert!(
        matches!(e, Error::Decode { .. }) && !e.is_transient(),
        "{e}"
    );
}

#[test]
fn a_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |ca: &std::path::Path| {
        let mut s = VaultSettings::new("https://vault.lab.invalid:8200", SecretString::from("t"));
        s.ca_file = Some(ca.to_path_buf());
        s
    };
    let missing = VaultClient::new(settings(&dir.path().join("none.pem"))).unwrap_err();
    assert!(missing.to_string().contains("none.pem"), "{missing}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = VaultClient::new(settings(&empty)).unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    let ca = rcgen::generate_simple_self_signed(vec!["vault.lab.invalid".into()]).unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca.cert.pem()).unwrap();
    VaultClient::new(settings(&good)).unwrap();
}

const DB_SPEC: &str = r#"
prune = true

[[kv]]
path = "secret"

[[jwt]]
bound_issuer = "https://192.168.1.210:6443"
pubkeys_from = ["sa-key"]

[jwt.roles.eso]
user_claim = "sub"
bound_audiences = ["vault"]
bound_subject = "system:serviceaccount:external-secrets:external-secrets"
token_policies = ["eso"]
token_ttl = 3600

[policies]
eso = """
path "secret/data/castle/*" {
  capabilities = ["read"]
}
"""

[[database]]

[database.connections.tazlab-db]
connection_url = "postgresql://{{username}}:{{password}}@tazlab-db.svc:5432/tazlab"
username = "vault-admin"
password = "admin-ref"
allowed_roles = ["grafana"]

[database.roles.grafana]
db_name = "tazlab-db"
creation_statements = ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"]

[[generated]]
name = "sa-key"
mount = "secret"
path = "castle/lab/sa"
kind = "ecdsa-p256"

[[generated]]
name = "grafana-admin"
mount = "secret"
path = "castle/lab/grafana-admin"
kind = "password"
length = 24
alphabet = "abcdef0123456789"
"#;

/// The reference spec; the admin password reference resolves to `admin_password`.
fn db_spec(admin_password: &str) -> VaultSpec {
    let s: VaultSpec<String> = toml::from_str(DB_SPEC).unwrap();
    s.resolve_secrets(|r| {
        assert_eq!(r, "admin-ref");
        Ok::<_, ()>(SecretString::from(admin_password.to_string()))
    })
    .unwrap()
}

#[tokio::test]
async fn plan_shows_create_update_and_prune_and_a_second_apply_changes_nothing() {
    let v = MockVault::new();
    let s = db_spec("canary-admin-pw");
    let first = plan(&v, &s).await.unwrap();
    let text = first.render();
    for line in [
        "+ secrets engine sys/mounts/secret",
        "+ generated secret/data/castle/lab/sa",
        "+ auth mount sys/auth/jwt",
        "+ jwt config auth/jwt/config",
        "(public key of `sa-key`, known after apply)",
        "+ policy sys/policies/acl/eso",
        "+ jwt role auth/jwt/role/eso",
        "+ database connection database/config/tazlab-db",
        "password: (sensitive)",
        "+ database role database/roles/grafana",
        "Plan: 10 to create, 0 to update, 0 to delete.",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    apply(&v, &s, &first).await.unwrap();
    let again = plan(&v, &s).await.unwrap();
    assert!(again.is_empty(), "{}", again.render());
    assert!(again.render().contains("No changes"));

    // Hand-made drift and leftovers show up; prune deletes what the spec lacks.
    v.write(
        "sys/policies/acl/eso",
        json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"}),
    )
    .await
    .unwrap();
    v.write(
        "auth/jwt/role/eso",
        json!({"user_claim": "sub", "bound_audiences": ["other"], "token_policies": ["eso"], "token_ttl": 3600, "bound_subject": "system:serviceaccount:external-secrets:external-secrets"}),
    )
    .await
    .unwrap();
    v.write(
        "sys/policies/acl/by-hand",
        json!({"policy": "path \"x\" {}"}),
    )
    .await
    .unwrap();
    v.write(
        "database/roles/old",
        json!({"db_name": "tazlab-db", "creation_statements": ["x"]}),
    )
    .await
    .unwrap();
    let drift = plan(&v, &s).await.unwrap();
    let text = drift.render();
    assert!(text.contains("~ policy sys/policies/acl/eso"), "{text}");
    assert!(
        text.contains(
            "policy: \"path \\\"*\\\" { capabilities = [\\\"sudo\\\"] }\" -> <3 lines, sha256:"
        ),
        "{text}"
    );
    assert!(
        text.contains("bound_audiences: [\"other\"] -> [\"vault\"]"),
        "{text}"
    );
    assert!(text.contains("- policy sys/policies/acl/by-hand"), "{text}");
    assert!(
        text.contains("- database role database/roles/old"),
        "{text}"
    );
    assert!(!text.contains("sys/policies/acl/default") && !text.contains("acl/root"));
    let json = serde_json::to_value(&drift).unwrap();
    assert_eq!(json["changes"][0]["op"], "update");
    assert_eq!(
        drift.changes.iter().filter(|c| c.op == Op::Delete).count(),
        2
    );
    apply(&v, &s, &drift).await.unwrap();
    assert!(plan(&v, &s).await.unwrap().is_empty());
    assert!(v.read("database/roles/old").await.unwrap().is_none());
}

#[tokio::test]
async fn without_prune_nothing_is_deleted() {
    let v = MockVault::new();
    let mut s = db_spec("pw");
    s.prune = false;
    apply(&v, &s, &plan(&v, &s).await.unwrap()).await.unwrap();
    v.write(
        "sys/policies/acl/by-hand",
        json!({"policy": "path \"x\" {}"}),
    )
    .await
    .unwrap();
    assert!(plan(&v, &s).await.unwrap().is_empty());
}

#[tokio::test]
async fn generated_values_are_created_once_kept_and_rotated_only_on_request() {
    let v = MockVault::new();
    let s = db_spec("pw");
    let first = plan(&v, &s).await.unwrap();
    // A concurrent creator writes between our plan and our apply: theirs is kept.
    v.write(
        "sys/mounts/secret",
        json!({"type": "kv", "options": {"version": "2"}}),
    )
    .await
    .unwrap();
    v.write(
        "secret/data/castle/lab/grafana-admin",
        json!({"data": {"password": "theirs-0123456789abcdef"}, "options": {"cas": 0}}),
    )
    .await
    .unwrap();
    apply(&v, &s, &first).await.unwrap();
    let pw = generated_value(&v, &s, "grafana-admin", "password")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pw.expose_secret(), "theirs-0123456789abcdef");

    // A generated password follows length and alphabet.
    rotate(&v, &s, "grafana-admin").await.unwrap();
    let rotated = generated_value(&v, &s, "grafana-admin", "password")
        .await
        .unwrap()
        .unwrap();
    let rotated = rotated.expose_secret();
    assert_eq!(rotated.len(), 24);
    assert!(rotated.chars().all(|c| "abcdef0123456789".contains(c)));
    assert!(
        plan(&v, &s).await.unwrap().is_empty(),
        "a password feeds nothing else"
    );

    // Rotating the keypair makes the jwt config stale; plan shows it, apply fixes it.
    let old = generated_value(&v, &s, "sa-key", "public_key")
        .await
        .unwrap()
        .unwrap();
    rotate(&v, &s, "sa-key").await.unwrap();
    let stale = plan(&v, &s).await.unwrap();
    assert_eq!(stale.changes.len(), 1, "{}", stale.render());
    assert_eq!(stale.changes[0].path, "auth/jwt/config");
    apply(&v, &s, &stale).await.unwrap();
    let config = v.read("auth/jwt/config").await.unwrap().unwrap();
    let new = generated_value(&v, &s, "sa-key", "public_key")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(old.expose_secret(), new.expose_secret());
    assert_eq!(config["jwt_validation_pubkeys"][0], new.expose_secret());
    assert!(rotate(&v, &s, "nope").await.is_err());

    // Deleted by hand (a soft delete keeps the version count): generated afresh.
    v.delete("secret/data/castle/lab/grafana-admin")
        .await
        .unwrap();
    let gone = plan(&v, &s).await.unwrap();
    assert!(
        gone.render()
            .contains("+ generated secret/data/castle/lab/grafana-admin"),
        "{}",
        gone.render()
    );
    apply(&v, &s, &gone).await.unwrap();
    assert!(plan(&v, &s).await.unwrap().is_empty());

    // Destroy with --wipe: the value and its history go; the next apply makes a new one.
    delete_kv(&v, "secret", "castle/lab/grafana-admin")
        .await
        .unwrap();
    assert!(
        generated_value(&v, &s, "grafana-admin", "password")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn no_secret_reaches_debug_errors_plans_or_snapshots() {
    let v = MockVault::new();
    let s = db_spec("canary-admin-pw");
    let p = plan(&v, &s).await.unwrap();
    apply(&v, &s, &p).await.unwrap();
    let generated = generated_value(&v, &s, "grafana-admin", "password")
        .await
        .unwrap()
        .unwrap();
    let key = generated_value(&v, &s, "sa-key", "private_key")
        .await
        .unwrap()
        .unwrap();
    v.write(
        "database/config/tazlab-db",
        json!({"plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://x@h:5432/d", "username": "u", "password": "canary-by-hand", "verify_connection": false}),
    )
    .await
    .unwrap();
    let drift = plan(&v, &s).await.unwrap();
    let http = VaultClient::with_client(
        reqwest::Client::new(),
        "http://127.0.0.1:9",
        SecretString::from("canary-vault-token"),
    );
    let unreachable = http.read("sys/auth").await.unwrap_err();
    let outputs = [
        format!("{s:?}"),
        format!("{generated:?}"),
        format!("{http:?}"),
        p.render(),
        drift.render(),
        serde_json::to_string(&p).unwrap(),
        serde_json::to_string(&drift).unwrap(),
        format!("{unreachable} {unreachable:?}"),
    ];
    let snapshot = v.snapshot().to_string();
    for text in &outputs {
        for secret in [
            "canary-admin-pw",
            "canary-vault-token",
            "canary-by-hand",
            generated.expose_secret(),
            key.expose_secret().lines().nth(1).unwrap(),
        ] {
            assert!(!text.contains(secret), "a secret leaked into {text}");
        }
    }
    // The lab's file keeps values the lab generated, never the passwords it was given.
    assert!(!snapshot.contains("canary-admin-pw") && !snapshot.contains("canary-by-hand"));
}

#[tokio::test]
async fn database_credentials_follow_vaults_rules_and_leases_revoke() {
    let v = MockVault::new();
    let s = db_spec("pw");
    apply(&v, &s, &plan(&v, &s).await.unwrap()).await.unwrap();
    let e = v.read("database/creds/nope").await.unwrap_err();
    assert!(e.to_string().contains("unknown role: nope"), "{e}");
    v.write(
        "database/roles/reader",
        json!({"db_name": "tazlab-db", "creation_statements": ["x"]}),
    )
    .await
    .unwrap();
    let e = v.read("database/creds/reader").await.unwrap_err();
    assert!(
        e.to_string().contains("is not an allowed role") && !e.is_transient(),
        "{e}"
    );
    let e = v
        .write("database/roles/x", json!({"creation_statements": ["x"]}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("database name is required"), "{e}");

    let creds = v.read("database/creds/grafana").await.unwrap().unwrap();
    assert!(creds["username"].is_string() && creds["password"].is_string());
    assert!(
        creds["lease_id"]
            .as_str()
            .unwrap()
            .starts_with("database/creds/grafana/")
    );
    v.read("database/creds/grafana").await.unwrap();
    assert_eq!(v.leases().len(), 2);
    let e = v.delete("sys/mounts/database").await.unwrap_err();
    assert!(e.to_string().contains("revoke"), "{e}");
    revoke_leases(&v, &s).await.unwrap();
    assert!(v.leases().is_empty());
    v.delete("sys/mounts/database").await.unwrap();
    assert!(v.read("database/roles/grafana").await.unwrap().is_none());
}

#[tokio::test]
async fn the_mock_refuses_what_vault_refuses() {
    let v = MockVault::new();
    let refused = [
        (
            "sys/mounts/secret/sub",
            json!({"type": "kv"}),
            "already in use at secret/",
        ),
        (
            "sys/mounts/other",
            json!({"type": "nope"}),
            "plugin not found",
        ),
        (
            "sys/policies/acl/root",
            json!({"policy": "path \"x\" {}"}),
            "cannot update \"root\"",
        ),
        (
            "sys/policies/acl/bad",
            json!({"policy": "path \"x\" {"}),
            "failed to parse policy",
        ),
        (
            "sys/policies/acl/empty",
            json!({"policy": ""}),
            "not supplied or empty",
        ),
        (
            "auth/jwt/config",
            json!({"bound_issuer": "x"}),
            "exactly one of",
        ),
        (
            "auth/jwt/config",
            json!({"jwt_validation_pubkeys": ["not a pem"]}),
            "valid public keys",
        ),
        (
            "auth/jwt/role/r",
            json!({"bound_audiences": ["v"]}),
            "user claim",
        ),
        (
            "secret/data/a",
            json!({"options": {"cas": 0}}),
            "no data provided",
        ),
        (
            "secret/data/a",
            json!({"data": {"x": 1}, "options": {"cas": 3}}),
            "check-and-set",
        ),
        (
            "database/config/c",
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://h:5432/d"}),
            "error verifying connection",
        ),
        (
            "database/config/c",
            json!({"connection_url": "postgresql://h:5432/d", "verify_connection": false}),
            "empty plugin name",
        ),
    ];
    let s = db_spec("pw");
    apply(&v, &s, &plan(&v, &s).await.unwrap()).await.unwrap();
    for (p, body, message) in refused {
        let e = v.write(p, body).await.unwrap_err();
        assert!(
            e.to_string().contains(message) && e.status() == Some(400),
            "{p}: {e}"
        );
    }
    for (p, message) in [
        ("sys/policies/acl/default", "cannot delete default policy"),
        ("sys/policies/acl/root", "cannot delete \"root\" policy"),
    ] {
        assert!(v.delete(p).await.unwrap_err().to_string().contains(message));
    }
    let e = v.delete("nomount/x").await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("no handler for route"));
    // A database the lab serves can be verified.
    let served = MockVault::new().with_database("h:5432");
    served
        .write("sys/mounts/database", json!({"type": "database"}))
        .await
        .unwrap();
    served
        .write("database/config/c", json!({"plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://h:5432/d", "verify_connection": true}))
        .await
        .unwrap();
    // Disabling the auth method removes its roles and config.
    v.delete("sys/auth/jwt").await.unwrap();
    v.write("sys/auth/jwt", json!({"type": "jwt"}))
        .await
        .unwrap();
    assert!(v.read("auth/jwt/role/eso").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_lab_latency_is_modelled_per_operation() {
    let v = MockVault::new().with_latency(Latency::lab());
    let timed = async |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>| {
        let start = tokio::time::Instant::now();
        f.await;
        start.elapsed()
    };
    let mount = timed(Box::pin(async {
        v.write("sys/mounts/database", json!({"type": "database"}))
            .await
            .unwrap();
    }))
    .await;
    let read = timed(Box::pin(async {
        v.read("sys/mounts").await.unwrap();
    }))
    .await;
    assert_eq!(mount, Duration::from_millis(300));
    assert_eq!(read, Duration::from_millis(50));
    let fast = MockVault::new().with_latency(Latency::lab().scaled(0.1));
    let start = tokio::time::Instant::now();
    fast.read("sys/auth").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(5));
}

#[tokio::test]
async fn faults_are_seeded_and_clearable() {
    let outcomes = async |v: &MockVault| {
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(v.read("sys/auth").await.is_ok());
        }
        out
    };
    let a = MockVault::new().with_faults(Faults::transient(7, 0.3));
    let b = MockVault::new().with_faults(Faults::transient(7, 0.3));
    let (oa, ob) = (outcomes(&a).await, outcomes(&b).await);
    assert_eq!(oa, ob, "the same seed fails the same calls");
    assert!(oa.contains(&false) && oa.contains(&true));
    let e = loop {
        if let Err(e) = a.read("sys/auth").await {
            break e;
        }
    };
    assert!(e.is_transient() && e.status() == Some(503));
    a.clear_faults();
    a.fail_permanently("database/config", "permission denied");
    let e = a.write("database/config/x", json!({})).await.unwrap_err();
    assert!(!e.is_transient() && e.status() == Some(403), "{e}");
    assert!(a.read("sys/auth").await.is_ok());
    a.clear_faults();
    assert!(outcomes(&a).await.iter().all(|ok| *ok));
}

#[tokio::test]
async fn a_snapshot_restores_the_world() {
    let v = MockVault::new();
    let s = db_spec("canary-admin-pw");
    apply(&v, &s, &plan(&v, &s).await.unwrap()).await.unwrap();
    v.read("database/creds/grafana").await.unwrap();
    let snap = v.snapshot();
    let back = MockVault::new();
    back.restore(&snap).unwrap();
    assert!(plan(&back, &s).await.unwrap().is_empty());
    assert_eq!(back.leases(), ["database/creds/grafana"]);
    assert_eq!(
        generated_value(&back, &s, "grafana-admin", "password")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        generated_value(&v, &s, "grafana-admin", "password")
            .await
            .unwrap()
            .unwrap()
            .expose_secret()
    );
    assert!(back.restore(&json!({"mounts": {}})).is_err());
    assert!(back.restore(&json!([1, 2])).is_err());
    assert!(
        plan(&back, &s).await.unwrap().is_empty(),
        "a failed restore changes nothing"
    );
}

#[test]
fn the_spec_refuses_typos_and_dangling_references() {
    let typo = toml::from_str::<VaultSpec<String>>("[[kv]]\npath = \"secret\"\nversion = 1\n");
    assert!(typo.unwrap_err().to_string().contains("unknown field"));
    let broken = [
        (DB_SPEC.replace("pubkeys_from = [\"sa-key\"]", "pubkeys_from = [\"nope\"]"), "not in generated"),
        (DB_SPEC.replace("bound_audiences = [\"vault\"]\nbound_subject = \"system:serviceaccount:external-secrets:external-secrets\"", ""), "bound_audiences, bound_subject or bound_claims"),
        (DB_SPEC.replace("length = 24", "length = 4"), "length >= 8"),
        (DB_SPEC.replace("db_name = \"tazlab-db\"", "db_name = \"other\""), "connection `other`"),
        (DB_SPEC.replace("mount = \"secret\"\npath = \"castle/lab/sa\"", "mount = \"kv\"\npath = \"castle/lab/sa\""), "not a declared kv mount"),
        (format!("{DB_SPEC}\n[policy_files]\neso = \"eso.hcl\"\n"), "both inline and as a file"),
        (DB_SPEC.replace("capabilities = [\"read\"]", "capabilities = [\"reed\"]"), "invalid capability \"reed\""),
        (DB_SPEC.replace("capabilities = [\"read\"]", "capabilites = [\"read\"]"), "invalid key \"capabilites\""),
    ];
    for (text, message) in broken {
        let s: VaultSpec<String> = toml::from_str(&text).unwrap();
        let e = s.check().unwrap_err();
        assert!(e.to_string().contains(message), "{e}");
    }
    // HCL 1 syntax that the HCL 2 parser cannot read is OpenBao's to judge: OpenBao
    // stores this one, so the spec check lets it through.
    let hcl1 = DB_SPEC.replace(
        "capabilities = [\"read\"]\n}",
        "capabilities = [\"read\"], policy = \"read\"\n}",
    );
    assert_ne!(hcl1, DB_SPEC);
    let s: VaultSpec<String> = toml::from_str(&hcl1).unwrap();
    s.check().unwrap();
}

#[tokio::test]
async fn policies_may_live_in_files_beside_castle_toml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("eso.hcl"),
        "path \"secret/data/castle/*\" {\n  capabilities = [\"read\"]\n}\n",
    )
    .unwrap();
    let mut s: VaultSpec<String> = toml::from_str(DB_SPEC).unwrap();
    s.policies.clear();
    s.policy_files.insert("eso".into(), "eso.hcl".into());
    let s = s
        .with_policy_files_under(dir.path())
        .resolve_secrets(|_| Ok::<_, ()>(SecretString::from("pw")))
        .unwrap();
    let v = MockVault::new();
    apply(&v, &s, &plan(&v, &s).await.unwrap()).await.unwrap();
    let stored: Value = v.read("sys/policies/acl/eso").await.unwrap().unwrap();
    assert!(
        stored["policy"]
            .as_str()
            .unwrap()
            .contains("secret/data/castle/*")
    );
    assert!(plan(&v, &s).await.unwrap().is_empty());
    let mut lost = s.clone();
    lost.policy_files
        .insert("eso".into(), dir.path().join("gone.hcl"));
    let e = plan(&v, &lost).await.unwrap_err();
    assert!(e.to_string().contains("gone.hcl"), "{e}");
}

/// The doctor's whole conversation with a Vault, recorded: the unauthenticated
/// seal status, the token's own lookup and one `sys/capabilities-self` POST (which
/// only asks); nothing else, and the answers read as OpenBao 2.7.2 writes them.
#[tokio::test]
async fn the_doctor_only_reads_and_asks() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/sys/seal-status"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "type": "shamir", "initialized": true, "sealed": false, "t": 1, "n": 1,
            "progress": 0, "nonce": "", "version": "2.7.2", "storage_type": "inmem"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/auth/token/lookup-self"))
        .and(header("X-Vault-Token", "s.doctor"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"id": "s.doctor", "accessor": "acc", "policies": ["default", "castle"],
                     "ttl": 7200, "renewable": true, "display_name": "token"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/sys/capabilities-self"))
        .and(body_json(
            json!({"paths": ["sys/mounts/secret", "sys/leases/revoke-prefix/database/creds/app"]}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"sys/mounts/secret": ["create", "update"],
                     "sys/leases/revoke-prefix/database/creds/app": ["update"]}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = VaultClient::with_client(
        reqwest::Client::new(),
        &server.uri(),
        SecretString::from("s.doctor"),
    );
    let needs = vec![
        castle_vault::doctor::Need {
            path: "sys/mounts/secret".into(),
            capabilities: vec!["update"],
            why: "mounting KV".into(),
        },
        castle_vault::doctor::Need {
            path: "sys/leases/revoke-prefix/database/creds/app".into(),
            capabilities: vec!["update", "sudo"],
            why: "revoking leases".into(),
        },
    ];
    let findings = castle_vault::doctor::preflight(&client, &needs).await;
    let statuses: Vec<String> = findings.iter().map(|f| f.status.to_string()).collect();
    assert_eq!(statuses, ["pass", "pass", "pass", "fail"], "{findings:#?}");
    assert!(
        findings[1].detail.contains("2h00m, renewable"),
        "{:?}",
        findings[1]
    );
    assert!(findings[3].detail.contains("lacks sudo"));
    // The token's id, which lookup-self returns, reaches no finding.
    assert!(
        findings
            .iter()
            .all(|f| !format!("{f:?}").contains("s.doctor"))
    );
    let requests = server.received_requests().await.unwrap();
    let writes: Vec<String> = requests
        .iter()
        .filter(|r| r.method.as_str() != "GET")
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(writes, ["POST /v1/sys/capabilities-self"]);
}
