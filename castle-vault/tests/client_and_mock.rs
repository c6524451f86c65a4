//! The HTTP client against wiremock, and MockVault's rules, through plan and apply.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use castle_vault::{MockVault, VaultApi, VaultClient, VaultSpec, apply, plan};
use secrecy::SecretString;
use serde_json::json;
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
