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
        get("CASTLE_TEST_PG_HOST"),
        get("CASTLE_TEST_PG_PORT"),
        get("CASTLE_TEST_PG_USER"),
        get("CASTLE_TEST_PG_PASSWORD"),
        get("CASTLE_TEST_PSQL"),
    );
    let (Some(h), Some(p), Some(u), Some(pw), Some(psql)) = pg else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but CASTLE_TEST_PG_* are not: scripts/test.sh starts PostgreSQL"
        );
        eprintln!("SKIPPED: CASTLE_TEST_PG_* unset (run scripts/services.sh, or scripts/test.sh)");
        return None;
    };
    let pg = (h, p, u, pw, psql);
    Some(Env { addr, token, pg })
}

impl Env {
    fn client(&self) -> VaultClient {
        VaultClient::new(VaultSettings::new(
            &self.addr,
            SecretString::from(self.token.clone()),
        ))
        .unwrap()
    }
}

/// A suffix of names of this run, so that runs against one server never collide.
fn run_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{:x}", nanos % 0xffff_ffff)
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
    let run = run_id("");
    let client = e.client();
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
    let run = run_id("r");
    let real = e.client();
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
    let run = run_id("s");
    let real = e.client();
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

/// What OpenBao answers to `PUT sys/policies/acl/:name` with a policy.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Stored,
    /// A 400 whose message holds this text.
    Refused(&'static str),
}

use Verdict::{Refused, Stored};

/// One policy of the corpus, the verdict OpenBao 2.7.2 gave it, and the rule behind
/// that verdict. Rules are in openbao/openbao at df6ce2ce (main after v2.6.2):
/// `internal/vault/policy/policy.go` (`ParseACLPolicyWithTemplating`, `parsePaths`),
/// `internal/vault/logical_system.go` (`handlePoliciesSet`),
/// `sdk/helper/hclutil/hcl.go` (`ParseConfig`, `CheckHCLKeys`),
/// `sdk/helper/identitytpl/templating.go` (`PopulateString`); and in hashicorp/hcl at
/// v1.0.1-vault-7, the HCL 1 OpenBao pins: `decoder.go` (`decodeSlice`,
/// `decodeString`, `decodeInt`, `decodeMap`), `hcl/parser/parser.go`,
/// `json/parser/flatten.go`. Control groups are checked as 2.7.2 answers (its
/// checks are newer than that source).
struct Case {
    name: &'static str,
    policy: String,
    verdict: Verdict,
    rule: &'static str,
}

fn case(name: &'static str, policy: &str, verdict: Verdict, rule: &'static str) -> Case {
    Case {
        name,
        policy: policy.to_string(),
        verdict,
        rule,
    }
}

const SYNTAX: Verdict = Refused("failed to parse policy: ");

#[allow(clippy::too_many_lines)]
fn policy_corpus() -> Vec<Case> {
    let b64 = |p: &str| base64::engine::general_purpose::STANDARD.encode(p);
    vec![
        case(
            "the shape Castle writes",
            "path \"secret/data/*\" {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "parsePaths",
        ),
        case(
            "every capability",
            "path \"sys/*\" {\n  capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\", \"sudo\", \"scan\"]\n}\n",
            Stored,
            "parsePaths: cap2Int",
        ),
        case(
            "deny",
            "path \"secret/*\" {\n  capabilities = [\"deny\"]\n}\n",
            Stored,
            "parsePaths: DenyCapability",
        ),
        case(
            "deny ends the stanza before a bad capability",
            "path \"x\" {\n  capabilities = [\"deny\", \"bogus\"]\n}\n",
            Stored,
            "parsePaths: goto PathFinished",
        ),
        case(
            "deny ends the stanza before a bad TTL",
            "path \"x\" {\n  capabilities = [\"deny\"]\n  min_wrapping_ttl = \"soon\"\n}\n",
            Stored,
            "parsePaths: goto PathFinished",
        ),
        case(
            "+ segment and trailing glob",
            "path \"secret/+/x/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n",
            Stored,
            "parsePaths: HasSegmentWildcards",
        ),
        case(
            "a lone +",
            "path \"+\" {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "parsePaths: HasSegmentWildcards",
        ),
        case(
            "empty path",
            "path \"\" {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "parsePaths: no check on the key",
        ),
        case(
            "leading slash",
            "path \"/secret/x\" {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "parsePaths: strip a leading '/'",
        ),
        case(
            "policy = \"write\" shorthand",
            "path \"x\" {\n  policy = \"write\"\n}\n",
            Stored,
            "parsePaths: OldWritePathPolicy",
        ),
        case(
            "policy = \"deny\" replaces capabilities",
            "path \"x\" {\n  policy = \"deny\"\n  capabilities = [\"bogus\"]\n}\n",
            Stored,
            "parsePaths: OldDenyPathPolicy",
        ),
        case(
            "empty capabilities",
            "path \"x\" {\n  capabilities = []\n}\n",
            Stored,
            "parsePaths",
        ),
        case(
            "empty object as capabilities",
            "path \"x\" {\n  capabilities = {}\n}\n",
            Stored,
            "decoder.go decodeStruct: an empty object list",
        ),
        case("empty stanza", "path \"x\" {}\n", Stored, "parsePaths"),
        case(
            "top-level name",
            "name = \"foo\"\npath \"x\" {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "ParseACLPolicyWithTemplating: name, path",
        ),
        case(
            "a number as name",
            "name = 5\n",
            Stored,
            "decoder.go decodeString: NUMBER",
        ),
        case(
            "only a comment",
            "# nothing yet\n",
            Stored,
            "an empty object list",
        ),
        case(
            "whitespace only",
            "   \n",
            Stored,
            "handlePoliciesSet checks for \"\" only",
        ),
        case(
            "comments of every kind",
            "path \"x\" {\n  capabilities = [\n    \"read\", # why\n    \"list\", // why\n  ]\n  /* why */\n}\n",
            Stored,
            "hcl/parser",
        ),
        case(
            "escapes in strings",
            "path \"x\" {\n  capabilities = [\"re\\u0061d\"]\n}\n",
            Stored,
            "hcl strconv",
        ),
        case(
            "JSON form",
            r#"{"path": {"secret/*": {"capabilities": ["read"]}}}"#,
            Stored,
            "hclutil.ParseConfig: JSON when it starts with {",
        ),
        case(
            "JSON list of stanzas",
            r#"{"path": [{"secret/*": {"capabilities": ["read"]}}]}"#,
            Stored,
            "json/parser/flatten.go flattenListType",
        ),
        case(
            "JSON stanzas side by side",
            r#"{"path": {"a": {"capabilities": ["read"]}, "b": {"policy": "read"}}}"#,
            Stored,
            "json/parser/flatten.go flattenObjectType",
        ),
        case("empty JSON object", "{}", Stored, "an empty object list"),
        case(
            "parameters",
            "path \"x\" {\n  capabilities = [\"update\"]\n  allowed_parameters = {\n    \"*\" = []\n  }\n  denied_parameters = {\n    \"a\" = [\"b\", 1, true]\n  }\n  required_parameters = [\"a\"]\n}\n",
            Stored,
            "parsePaths: AllowedParametersHCL map[string][]any",
        ),
        case(
            "mfa_methods and pagination_limit",
            "path \"x\" {\n  capabilities = [\"list\"]\n  mfa_methods = [\"totp\"]\n  pagination_limit = \"10\"\n}\n",
            Stored,
            "decoder.go decodeInt: STRING",
        ),
        case(
            "wrapping TTLs in order",
            "path \"x\" {\n  capabilities = [\"read\"]\n  min_wrapping_ttl = \"1h\"\n  max_wrapping_ttl = 7200\n}\n",
            Stored,
            "parseutil.ParseDurationSecond",
        ),
        case(
            "wrapping TTL in days and floats",
            "path \"x\" {\n  capabilities = [\"read\"]\n  min_wrapping_ttl = 1.5\n  max_wrapping_ttl = \"2d\"\n}\n",
            Stored,
            "parseutil.ParseDurationSecond",
        ),
        case(
            "a comment of any type",
            "path \"x\" {\n  capabilities = [\"read\"]\n  comment = 5\n}\n",
            Stored,
            "parsePaths: comment is a valid key, no field",
        ),
        case(
            "future expiration",
            "path \"x\" {\n  capabilities = [\"read\"]\n  expiration = \"2099-01-01T00:00:00Z\"\n}\n",
            Stored,
            "parseutil.ParseAbsoluteTime",
        ),
        case(
            "an expired stanza goes unchecked",
            "path \"x\" {\n  capabilities = [\"bogus\"]\n  expiration = 5\n}\n",
            Stored,
            "parsePaths: skip the path because it has expired",
        ),
        case(
            "keys filter on a list path",
            "path \"x/*\" {\n  capabilities = [\"list\"]\n  list_scan_response_keys_filter_path = \"{{ .path }}/{{ .key }}\"\n}\n",
            Stored,
            "parsePaths: ResponseKeysFilterPath",
        ),
        case(
            "identity templating",
            "path \"secret/{{identity.entity.id}}/*\" {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "identitytpl.PopulateString",
        ),
        case(
            "repeated capabilities add up",
            "path \"x\" {\n  capabilities = [\"read\"]\n  capabilities = [\"list\"]\n}\n",
            Stored,
            "hclutil.ParseConfig: ParseDontErrorOnDuplicateKeys",
        ),
        case(
            "a repeated policy keeps the last",
            "path \"x\" {\n  policy = \"bogus\"\n  policy = \"read\"\n}\n",
            Stored,
            "decoder.go: the last scalar wins",
        ),
        case(
            "repeated parameter keys",
            "path \"x\" {\n  capabilities = [\"update\"]\n  allowed_parameters = {\n    \"a\" = []\n    \"a\" = [\"x\"]\n    b = []\n    b = [\"y\"]\n  }\n}\n",
            Stored,
            "decoder.go decodeMap: a repeated key decodes again",
        ),
        case(
            "one path in two stanzas and a repeated name",
            "name = \"a\"\nname = \"b\"\npath \"x\" {\n  capabilities = [\"read\"]\n}\npath \"x\" {\n  capabilities = [\"list\"]\n}\n",
            Stored,
            "parsePaths: every stanza",
        ),
        case(
            "a block with two labels",
            "path \"x\" \"y\" {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "parsePaths: item.Keys[0]",
        ),
        case(
            "a stanza without a label is path \"path\"",
            "path {\n  capabilities = [\"read\"]\n}\n",
            Stored,
            "parsePaths: key := \"path\"",
        ),
        case(
            "a control group",
            "path \"x\" {\n  capabilities = [\"update\"]\n  control_group {\n    ttl = \"4h\"\n    factor \"ops\" {\n      controlled_capabilities = [\"update\"]\n      identity {\n        group_names = [\"admins\"]\n        approvals = 1\n      }\n    }\n  }\n}\n",
            Stored,
            "parsePaths: control_group (2.7)",
        ),
        case(
            "a policy in base64",
            &b64("path \"x\" {\n  capabilities = [\"read\"]\n}\n"),
            Stored,
            "handlePoliciesSet: base64.StdEncoding.DecodeString",
        ),
        case(
            "empty policy",
            "",
            Refused("'policy' parameter not supplied or empty"),
            "handlePoliciesSet",
        ),
        case(
            "capabilities misspelt",
            "path \"secret/*\" {\n  capabilites = [\"read\"]\n}\n",
            Refused("invalid key \"capabilites\" on line 2"),
            "parsePaths: CheckHCLKeys",
        ),
        case(
            "a capability misspelt",
            "path \"secret/*\" {\n  capabilities = [\"reed\"]\n}\n",
            Refused("invalid capability \"reed\""),
            "parsePaths: default case",
        ),
        case(
            "capabilities as a string",
            "path \"secret/*\" {\n  capabilities = \"read\"\n}\n",
            Refused("unknown slice type"),
            "decoder.go decodeSlice",
        ),
        case(
            "an unknown key in a stanza",
            "path \"x\" {\n  capabilities = [\"read\"]\n  foo = 1\n}\n",
            Refused("invalid key \"foo\" on line 3"),
            "parsePaths: CheckHCLKeys",
        ),
        case(
            "an unknown block in a stanza",
            "path \"x\" {\n  capabilities = [\"read\"]\n  foo {}\n}\n",
            Refused("invalid key \"foo\" on line 0"),
            "CheckHCLKeys: a block has no '=' line",
        ),
        case(
            "name inside a stanza",
            "path \"x\" {\n  capabilities = [\"read\"]\n  name = \"y\"\n}\n",
            Refused("invalid key \"name\" on line 3"),
            "parsePaths: CheckHCLKeys",
        ),
        case(
            "subscribe is not OpenBao's",
            "path \"sys/*\" {\n  capabilities = [\"subscribe\"]\n}\n",
            Refused("invalid capability \"subscribe\""),
            "policy.go cap2Int",
        ),
        case(
            "root is no capability",
            "path \"sys/*\" {\n  capabilities = [\"root\"]\n}\n",
            Refused("invalid capability \"root\""),
            "parsePaths: RootCapability is not listed",
        ),
        case(
            "capabilities are lower case",
            "path \"x\" {\n  capabilities = [\"READ\"]\n}\n",
            Refused("invalid capability \"READ\""),
            "parsePaths",
        ),
        case(
            "keys are case-sensitive",
            "path \"x\" {\n  Capabilities = [\"read\"]\n}\n",
            Refused("invalid key \"Capabilities\""),
            "CheckHCLKeys",
        ),
        case(
            "a bad capability before deny",
            "path \"x\" {\n  capabilities = [\"bogus\", \"deny\"]\n}\n",
            Refused("invalid capability \"bogus\""),
            "parsePaths: in order",
        ),
        case(
            "+* is forbidden",
            "path \"secret/+*\" {\n  capabilities = [\"read\"]\n}\n",
            Refused("invalid use of wildcards ('+*' is forbidden)"),
            "parsePaths",
        ),
        case(
            "an unknown policy shorthand",
            "path \"x\" {\n  policy = \"admin\"\n}\n",
            Refused("invalid policy \"admin\""),
            "parsePaths: OldPathPolicy",
        ),
        case(
            "policy as a list",
            "path \"x\" {\n  policy = [\"read\"]\n}\n",
            Refused("unknown type for string"),
            "decoder.go decodeString",
        ),
        case(
            "the shorthand adds to bad capabilities",
            "path \"x\" {\n  policy = \"read\"\n  capabilities = [\"bogus\"]\n}\n",
            Refused("invalid capability \"bogus\""),
            "parsePaths: append",
        ),
        case(
            "an unknown top-level key",
            "foo = \"bar\"\n",
            Refused("invalid key \"foo\" on line 1"),
            "ParseACLPolicyWithTemplating: CheckHCLKeys",
        ),
        case(
            "path as a string",
            "path = \"x\"\n",
            Refused("cannot check HCL keys of type *ast.LiteralType"),
            "hclutil.CheckHCLKeys",
        ),
        case(
            "name as a bool",
            "name = true\n",
            Refused("unknown type for string"),
            "decoder.go decodeString",
        ),
        case(
            "a repeat with a bad capability",
            "path \"x\" {\n  capabilities = [\"read\"]\n  capabilities = [\"nope\"]\n}\n",
            Refused("invalid capability \"nope\""),
            "decoder.go decodeSlice appends every repeat",
        ),
        case(
            "a bad second stanza",
            "path \"x\" {\n  capabilities = [\"read\"]\n}\npath \"y\" {\n  capabilities = [\"nope\"]\n}\n",
            Refused("path \"y\": path \"y\": invalid capability \"nope\""),
            "parsePaths: every stanza",
        ),
        case(
            "an unclosed stanza",
            "path \"x\" { capabilities = [\"read\"] ",
            SYNTAX,
            "hcl/parser objectType",
        ),
        case(
            "a bare word in a list",
            "path \"x\" {\n  capabilities = [read]\n}\n",
            SYNTAX,
            "hcl/parser listType",
        ),
        case(
            "a missing comma",
            "path \"x\" {\n  capabilities = [\"read\" \"list\"]\n}\n",
            SYNTAX,
            "hcl/parser listType",
        ),
        case(
            "a stanza assigned",
            "path \"x\" = {\n  capabilities = [\"read\"]\n}\n",
            SYNTAX,
            "hcl/parser objectKey: nested object expected",
        ),
        case(
            "a stray closing brace",
            "path \"x\" {\n  capabilities = [\"read\"]\n}\n}\n",
            SYNTAX,
            "hcl/parser objectKey",
        ),
        case(
            "an unterminated comment",
            "path \"x\" {\n  capabilities = [\"read\"]\n}\n/* why",
            SYNTAX,
            "hcl/scanner",
        ),
        case(
            "an HCL 2 expression",
            "path \"x\" {\n  capabilities = [\"re\" + \"ad\"]\n}\n",
            SYNTAX,
            "HCL 1 has no operators",
        ),
        case(
            "HCL 2 null",
            "path \"x\" {\n  capabilities = null\n}\n",
            SYNTAX,
            "HCL 1 has no null",
        ),
        case("not even HCL", "abcd", SYNTAX, "hcl/scanner"),
        case(
            "a bool capability",
            "path \"x\" {\n  capabilities = [true]\n}\n",
            Refused("unknown type for string"),
            "decoder.go decodeString",
        ),
        case(
            "a number capability",
            "path \"x\" {\n  capabilities = [1]\n}\n",
            Refused("invalid capability \"1\""),
            "decoder.go decodeString: NUMBER",
        ),
        case(
            "a nested list",
            "path \"x\" {\n  capabilities = [[\"read\"]]\n}\n",
            Refused("unknown type for string"),
            "decoder.go decodeString",
        ),
        case(
            "a heredoc keeps its newline",
            "path \"x\" {\n  capabilities = [<<EOF\nread\nEOF\n  ]\n}\n",
            Refused("invalid capability \"read\\n\""),
            "hcl heredoc",
        ),
        case(
            "a parameter's values as a string",
            "path \"x\" {\n  capabilities = [\"read\"]\n  allowed_parameters = {\n    \"a\" = \"b\"\n  }\n}\n",
            Refused("unknown slice type"),
            "decoder.go decodeMap, decodeSlice",
        ),
        case(
            "parameters as a list",
            "path \"x\" {\n  capabilities = [\"read\"]\n  allowed_parameters = [\"a\"]\n}\n",
            Refused("not an object type for map"),
            "decoder.go decodeMap",
        ),
        case(
            "required_parameters as a string",
            "path \"x\" {\n  capabilities = [\"read\"]\n  required_parameters = \"a\"\n}\n",
            Refused("unknown slice type"),
            "decoder.go decodeSlice",
        ),
        case(
            "max_wrapping_ttl below min",
            "path \"x\" {\n  capabilities = [\"read\"]\n  min_wrapping_ttl = \"1d\"\n  max_wrapping_ttl = \"23h\"\n}\n",
            Refused("max_wrapping_ttl cannot be less than min_wrapping_ttl"),
            "parsePaths",
        ),
        case(
            "a TTL that is no duration",
            "path \"x\" {\n  capabilities = [\"read\"]\n  min_wrapping_ttl = \"soon\"\n}\n",
            Refused("error parsing min_wrapping_ttl: time: invalid duration \"soon\""),
            "parseutil.ParseDurationSecond",
        ),
        case(
            "a TTL in an unknown unit",
            "path \"x\" {\n  capabilities = [\"read\"]\n  max_wrapping_ttl = \"1x\"\n}\n",
            Refused("error parsing max_wrapping_ttl: time: unknown unit \"x\""),
            "time.ParseDuration",
        ),
        case(
            "a bool TTL",
            "path \"x\" {\n  capabilities = [\"read\"]\n  min_wrapping_ttl = true\n}\n",
            Refused("could not parse duration from input"),
            "parseutil.ParseDurationSecond",
        ),
        case(
            "a pagination limit in words",
            "path \"x\" {\n  capabilities = [\"read\"]\n  pagination_limit = \"ten\"\n}\n",
            Refused("strconv.ParseInt: parsing \"ten\": invalid syntax"),
            "decoder.go decodeInt",
        ),
        case(
            "a fractional pagination limit",
            "path \"x\" {\n  capabilities = [\"read\"]\n  pagination_limit = 1.5\n}\n",
            Refused("root.pagination_limit: unknown type"),
            "decoder.go decodeInt",
        ),
        case(
            "an expiration that is no time",
            "path \"x\" {\n  capabilities = [\"read\"]\n  expiration = \"tomorrow\"\n}\n",
            Refused("invalid expiration time: could not parse string as date and time"),
            "parseutil.ParseAbsoluteTime",
        ),
        case(
            "a keys filter without list",
            "path \"x/*\" {\n  capabilities = [\"read\"]\n  list_scan_response_keys_filter_path = \"{{ .path }}{{ .key }}\"\n}\n",
            Refused("needs to be used on a path with the list capability"),
            "parsePaths",
        ),
        case(
            "a keys filter without .key",
            "path \"x\" {\n  capabilities = [\"list\"]\n  list_scan_response_keys_filter_path = \"{{ .path }}\"\n}\n",
            Refused("resulted in same path for two different keys"),
            "parsePaths",
        ),
        case(
            "a keys filter calling no function",
            "path \"x\" {\n  capabilities = [\"list\"]\n  list_scan_response_keys_filter_path = \"{{ .key | bogusfn }}\"\n}\n",
            Refused("function \"bogusfn\" not defined"),
            "sdk/helper/template",
        ),
        case(
            "an unclosed keys filter",
            "path \"x\" {\n  capabilities = [\"list\"]\n  list_scan_response_keys_filter_path = \"{{ .key\"\n}\n",
            Refused("unclosed action"),
            "text/template",
        ),
        case(
            "unbalanced templating",
            "path \"secret/{{identity.entity.id}/*\" {\n  capabilities = [\"read\"]\n}\n",
            Refused("unbalanced templating characters"),
            "identitytpl.PopulateString",
        ),
        case(
            "JSON capabilities as a string",
            r#"{"path": {"secret/*": {"capabilities": "read"}}}"#,
            Refused("unknown slice type"),
            "decoder.go decodeSlice",
        ),
        case(
            "JSON with a misspelt key",
            r#"{"path": {"secret/*": {"capabilites": ["read"]}}}"#,
            Refused("invalid key \"capabilites\""),
            "CheckHCLKeys",
        ),
        case(
            "JSON null in a list",
            r#"{"path": {"x": {"capabilities": ["read"], "allowed_parameters": {"a": [null]}}}}"#,
            Refused("unexpected token while parsing list: NULL"),
            "json/parser",
        ),
        case(
            "JSON path as a string",
            r#"{"path": "x"}"#,
            Refused("cannot check HCL keys of type *ast.LiteralType"),
            "CheckHCLKeys",
        ),
        case(
            "a JSON list is not a policy",
            "[1, 2]",
            SYNTAX,
            "hclutil.ParseConfig: HCL unless it starts with {",
        ),
        case(
            "a bad policy in base64",
            &b64("path \"x\" { capabilities = [\"reed\"] }"),
            Refused("invalid capability \"reed\""),
            "handlePoliciesSet: base64",
        ),
        case(
            "a control group without factors",
            "path \"x\" {\n  capabilities = [\"read\"]\n  control_group {\n    ttl = \"4h\"\n  }\n}\n",
            Refused("requires at least one factor but had none"),
            "control_group (2.7)",
        ),
        case(
            "a control group's unknown key",
            "path \"x\" {\n  capabilities = [\"read\"]\n  control_group {\n    tll = \"4h\"\n  }\n}\n",
            Refused("invalid key \"tll\" on line 4"),
            "control_group: CheckHCLKeys",
        ),
        case(
            "a control group's bad operation",
            "path \"x\" {\n  capabilities = [\"read\"]\n  control_group {\n    factor \"ops\" {\n      controlled_capabilities = [\"bogus\"]\n      identity {\n        group_names = [\"a\"]\n        approvals = 1\n      }\n    }\n  }\n}\n",
            Refused("Operation(s) not valid: bogus"),
            "logical.ValidateOperation",
        ),
        case(
            "a control group without approvals",
            "path \"x\" {\n  capabilities = [\"read\"]\n  control_group {\n    factor \"ops\" {\n      controlled_capabilities = [\"update\"]\n    }\n  }\n}\n",
            Refused("factor 0: missing required approvals"),
            "control_group (2.7)",
        ),
        case(
            "a control group factor without a name",
            "path \"x\" {\n  capabilities = [\"read\"]\n  control_group {\n    factor {\n      controlled_capabilities = [\"update\"]\n    }\n  }\n}\n",
            Refused("require name key"),
            "control_group factor",
        ),
    ]
}

/// HCL 1 syntax OpenBao stores that the HCL 2 parser cannot read: MockVault refuses
/// these (see `castle-vault/src/policy.rs`), and the differential test checks that
/// OpenBao still stores them, so the list stays true.
fn hcl1_only() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "attributes on one line",
            "path \"x\" { capabilities = [\"read\"] policy = \"read\" }",
        ),
        (
            "attributes separated by a comma",
            "path \"x\" { capabilities = [\"read\"], policy = \"read\" }",
        ),
        (
            "a quoted attribute name",
            "path \"x\" {\n  \"capabilities\" = [\"read\"]\n}\n",
        ),
        (
            "parameters as a block",
            "path \"x\" {\n  capabilities = [\"read\"]\n  allowed_parameters {\n    \"*\" = []\n  }\n}\n",
        ),
        (
            "a block inside an object",
            "path \"x\" {\n  capabilities = [\"read\"]\n  control_group = {\n    factor \"ops\" {\n      controlled_capabilities = [\"update\"]\n      identity {\n        group_names = [\"a\"]\n        approvals = 1\n      }\n    }\n  }\n}\n",
        ),
        (
            "a hexadecimal number",
            "path \"x\" {\n  capabilities = [\"read\"]\n  pagination_limit = 0x10\n}\n",
        ),
        (
            "${ in a label",
            "path \"x${a}\" {\n  capabilities = [\"read\"]\n}\n",
        ),
        (
            "JSON missing its last brace",
            r#"{"path": {"secret/*": {"capabilities": ["read"]}}"#,
        ),
    ]
}

fn verdict_of(result: &castle_vault::Result<Option<Value>>) -> String {
    match result {
        Ok(_) => "stored".into(),
        Err(e) => format!("refused ({})", e.status().unwrap_or_default()),
    }
}

/// Whether `result` is `verdict`: a refusal is a 400 with the expected text.
fn matches(result: &castle_vault::Result<Option<Value>>, verdict: Verdict) -> bool {
    match (result, verdict) {
        (Ok(_), Stored) => true,
        (Err(e), Refused(text)) => e.status() == Some(400) && e.to_string().contains(text),
        _ => false,
    }
}

/// The corpus's pinned verdicts hold for MockVault with no server at all.
#[tokio::test]
async fn mockvault_gives_openbaos_verdict_on_every_policy_of_the_corpus() {
    let mock = MockVault::new();
    let corpus = policy_corpus();
    assert!(corpus.len() >= 30);
    for (i, c) in corpus.iter().enumerate() {
        let got = mock
            .write(
                &format!("sys/policies/acl/corpus-{i}"),
                json!({"policy": c.policy}),
            )
            .await;
        assert!(
            matches(&got, c.verdict),
            "{} ({}): expected {:?}, MockVault gave {got:?}",
            c.name,
            c.rule,
            c.verdict
        );
    }
    for (name, policy) in hcl1_only() {
        let got = mock
            .write("sys/policies/acl/hcl1", json!({"policy": policy}))
            .await;
        assert!(
            matches(&got, SYNTAX),
            "{name}: MockVault reads no HCL 1 only syntax, gave {got:?}"
        );
    }
}

/// The same corpus sent through `VaultApi` to MockVault and to the real OpenBao:
/// every policy gets the same verdict from both, and the pinned one.
#[tokio::test]
async fn mockvault_and_openbao_agree_on_every_policy_of_the_corpus() {
    let Some(e) = env() else { return };
    let run = run_id("p");
    let real = e.client();
    let mock = MockVault::new();
    let mut disagreements = Vec::new();
    let mut rows = Vec::new();
    let corpus = policy_corpus();
    let known: Vec<(&str, String, bool)> = hcl1_only()
        .into_iter()
        .map(|(n, p)| (n, p.to_string(), true))
        .collect();
    let entries = corpus
        .iter()
        .map(|c| (c.name, c.policy.clone(), false))
        .chain(known);
    for (i, (name, policy, hcl1)) in entries.enumerate() {
        let path = format!("sys/policies/acl/corpus-{run}-{i}");
        let openbao = real.write(&path, json!({"policy": policy})).await;
        let mocked = mock.write(&path, json!({"policy": policy})).await;
        if openbao.is_ok() {
            real.delete(&path).await.unwrap();
        }
        let agree = openbao.is_ok() == mocked.is_ok();
        let note = if hcl1 { "HCL 1 only" } else { "" };
        rows.push(format!(
            "{i:>3}  {name:<48} {:<13} {:<13} {}",
            verdict_of(&openbao),
            verdict_of(&mocked),
            if agree { "same" } else { "DIFFERENT" }.to_string() + " " + note
        ));
        let fine = if hcl1 {
            openbao.is_ok() && matches(&mocked, SYNTAX)
        } else {
            let pinned = corpus[i].verdict;
            agree && matches(&openbao, pinned) && matches(&mocked, pinned)
        };
        if !fine {
            disagreements.push(format!(
                "{name}: OpenBao {:?}, MockVault {:?}",
                openbao.err().map(|e| e.to_string()),
                mocked.err().map(|e| e.to_string())
            ));
        }
    }
    let same = rows.iter().filter(|r| r.contains(" same ")).count();
    println!("  #  policy{:<42} OpenBao       MockVault", "");
    for row in &rows {
        println!("{row}");
    }
    println!(
        "{same} of {} agree ({} known HCL 1 only differences)",
        rows.len(),
        hcl1_only().len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));

    // A policy sent in base64 is stored and read back decoded.
    let text = "path \"x\" {\n  capabilities = [\"read\"]\n}\n";
    let path = format!("sys/policies/acl/corpus-{run}-base64");
    for api in [&real as &dyn VaultApi, &mock] {
        let sent = base64::engine::general_purpose::STANDARD.encode(text);
        api.write(&path, json!({"policy": sent})).await.unwrap();
        let stored = api.read(&path).await.unwrap().unwrap();
        assert_eq!(stored["policy"], text, "{api:?}");
        api.delete(&path).await.unwrap();
    }
}

/// JWT logins as OpenBao judges them (openbao `builtin/credential/jwt/path_login.go`,
/// hashicorp/cap `jwt/jwt.go` Validate and `jwt/keyset.go`): the same tokens, the same
/// verdicts and words from MockVault always, and from the real OpenBao when it runs.
/// The lab's External Secrets logs in to MockVault exactly this way.
#[tokio::test]
async fn mockvault_judges_jwt_logins_as_openbao_does() {
    let run = run_id("j");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = "https://192.168.1.210:6443";
    let subject = "system:serviceaccount:external-secrets:external-secrets";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |change: &dyn Fn(&mut Value)| {
        let mut c = json!({"iss": issuer, "sub": subject, "aud": ["vault"], "iat": now, "nbf": now, "exp": now + 600});
        change(&mut c);
        c
    };
    let signed = |c: Value| jwt(&key.serialize_pem(), &c);
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "a token as kube-apiserver issues it",
            json!({"role": "eso", "jwt": signed(claims(&|_| {}))}),
            None,
        ),
        (
            "another key's signature",
            json!({"role": "eso", "jwt": jwt(&other.serialize_pem(), &claims(&|_| {}))}),
            Some(
                "error validating token: error verifying token signature: no known key successfully validated the token signature",
            ),
        ),
        (
            "another issuer",
            json!({"role": "eso", "jwt": signed(claims(&|c| c["iss"] = json!("https://other:6443")))}),
            Some("error validating token: invalid issuer (iss) claim"),
        ),
        (
            "another service account",
            json!({"role": "eso", "jwt": signed(claims(&|c| c["sub"] = json!("system:serviceaccount:default:default")))}),
            Some("error validating token: invalid subject (sub) claim"),
        ),
        (
            "another audience",
            json!({"role": "eso", "jwt": signed(claims(&|c| c["aud"] = json!(["https://kubernetes.default.svc"])))}),
            Some(
                "error validating token: invalid audience (aud) claim: audience claim does not match any expected audience",
            ),
        ),
        (
            "an expired token",
            json!({"role": "eso", "jwt": signed(claims(&|c| { c["iat"] = json!(now - 4000); c["nbf"] = json!(now - 4000); c["exp"] = json!(now - 3000); }))}),
            Some("invalid expiration time (exp) claim: token is expired"),
        ),
        (
            "a token from the future",
            json!({"role": "eso", "jwt": signed(claims(&|c| { c["iat"] = json!(now + 3000); c["nbf"] = json!(now + 3000); c["exp"] = json!(now + 4000); }))}),
            Some("invalid not before (nbf) claim: token not yet valid"),
        ),
        (
            "a token without time claims",
            json!({"role": "eso", "jwt": signed(claims(&|c| { let o = c.as_object_mut().unwrap(); o.remove("iat"); o.remove("nbf"); o.remove("exp"); }))}),
            Some("no issued at (iat), not before (nbf), or expiration time (exp) claims in token"),
        ),
        (
            "an audience for a role bound to none",
            json!({"role": "by-subject", "jwt": signed(claims(&|_| {}))}),
            Some("audience claim found in JWT but no audiences bound to the role"),
        ),
        (
            "no role",
            json!({"jwt": signed(claims(&|_| {}))}),
            Some("missing role"),
        ),
        (
            "an unknown role",
            json!({"role": "nope", "jwt": signed(claims(&|_| {}))}),
            Some("role \"nope\" could not be found"),
        ),
        ("no token", json!({"role": "eso"}), Some("missing token")),
    ];
    let mock = MockVault::new();
    let real = env().map(|e| e.client());
    let mut servers: Vec<&dyn VaultApi> = vec![&mock];
    if let Some(real) = &real {
        servers.push(real);
    }
    for api in servers {
        api.write(&format!("sys/auth/jwt-{run}"), json!({"type": "jwt"}))
            .await
            .unwrap();
        api.write(
            &format!("auth/jwt-{run}/config"),
            json!({"bound_issuer": issuer, "jwt_validation_pubkeys": [key.public_key_pem()]}),
        )
        .await
        .unwrap();
        api.write(
            &format!("auth/jwt-{run}/role/eso"),
            json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["vault"], "bound_subject": subject, "token_policies": ["eso"]}),
        )
        .await
        .unwrap();
        api.write(
            &format!("auth/jwt-{run}/role/by-subject"),
            json!({"role_type": "jwt", "user_claim": "sub", "bound_subject": subject}),
        )
        .await
        .unwrap();
        for (what, body, refusal) in &cases {
            let got = api
                .write(&format!("auth/jwt-{run}/login"), body.clone())
                .await;
            match (refusal, got) {
                (None, Ok(_)) => {}
                (Some(words), Err(e)) => {
                    assert_eq!(e.status(), Some(400), "{api:?} {what}: {e}");
                    assert!(e.to_string().contains(words), "{api:?} {what}: {e}");
                }
                (want, got) => panic!("{api:?} {what}: want {want:?}, got {got:?}"),
            }
        }
        api.delete(&format!("sys/auth/jwt-{run}")).await.unwrap();
    }
}

/// Policies whose rules compete for the same paths (exact, prefix, segment
/// wildcards, deny, list fallbacks), asked through `sys/capabilities-self` by a
/// token holding them: MockVault's ACL (internal/vault/policy/acl.go) must give
/// OpenBao's answer on every path.
#[tokio::test]
async fn mockvault_and_openbao_give_a_token_the_same_capabilities_on_every_path() {
    let Some(e) = env() else { return };
    let root = e.client();
    let run = run_id("acl");
    let policies = [
        format!(
            r#"
path "{run}/*" {{ capabilities = ["read"] }}
path "{run}/data/*" {{ capabilities = ["list", "create"] }}
path "{run}/data/exact" {{ capabilities = ["update"] }}
path "{run}/+/config" {{ capabilities = ["delete"] }}
path "{run}/+/+" {{ capabilities = ["sudo", "read"] }}
path "{run}/meta/a*" {{ capabilities = ["patch"] }}
path "{run}/roles" {{ capabilities = ["list"] }}
path "{run}/denied/*" {{ capabilities = ["deny"] }}
"#
        ),
        format!(
            r#"
path "{run}/*" {{ capabilities = ["list"] }}
path "{run}/denied/x" {{ capabilities = ["read"] }}
path "{run}/+/config" {{ capabilities = ["read"] }}
path "sys/auth/*" {{ capabilities = ["update"] }}
"#
        ),
    ];
    let names = [format!("{run}-a"), format!("{run}-b")];
    let mock = MockVault::new();
    for (name, text) in names.iter().zip(&policies) {
        for api in [&root as &dyn VaultApi, &mock] {
            api.write(
                &format!("sys/policies/acl/{name}"),
                json!({ "policy": text }),
            )
            .await
            .unwrap();
        }
    }
    // The new token sits in the response's `auth`, which the client does not
    // return: create it with a raw request.
    let token: String = reqwest::Client::new()
        .post(format!("{}/v1/auth/token/create", e.addr))
        .header("X-Vault-Token", &e.token)
        .json(&json!({"policies": names, "ttl": "10m"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let narrow = VaultClient::new(VaultSettings::new(&e.addr, SecretString::from(token))).unwrap();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    mock.set_token_policies(&refs, Some((600, true)));
    let paths: Vec<String> = [
        "x",
        "data/y",
        "data/exact",
        "data/exact/",
        "data/",
        "meta/config",
        "meta/other",
        "meta/abc",
        "meta/b/c",
        "roles/",
        "roles",
        "denied/x",
        "denied/y",
        "a/b/c/d",
    ]
    .iter()
    .map(|p| format!("{run}/{p}"))
    .chain([
        "sys/auth/jwt".to_string(),
        "sys/capabilities-self".to_string(),
        "other".to_string(),
    ])
    .collect();
    let ask = json!({ "paths": paths });
    let real = narrow
        .write("sys/capabilities-self", ask.clone())
        .await
        .unwrap()
        .unwrap();
    let simulated = mock
        .write("sys/capabilities-self", ask)
        .await
        .unwrap()
        .unwrap();
    for p in &paths {
        assert_eq!(simulated[p], real[p], "capabilities on {p}");
    }
    let distinct: std::collections::BTreeSet<String> =
        paths.iter().map(|p| real[p].to_string()).collect();
    assert!(
        distinct.len() >= 6,
        "the corpus must tell rules apart: {distinct:?}"
    );
    eprintln!(
        "{} paths, {} distinct answers: {distinct:?}",
        paths.len(),
        distinct.len()
    );
    // And the doctor's verdict on a Castle path is the same from both.
    let needs = vec![castle_vault::doctor::Need {
        path: "sys/auth/jwt".into(),
        capabilities: vec!["update", "sudo"],
        why: "enabling JWT auth".into(),
    }];
    let from_real = castle_vault::doctor::preflight(&narrow, &needs).await;
    let from_mock = castle_vault::doctor::preflight(&mock, &needs).await;
    assert_eq!(from_real[2], from_mock[2]);
    assert_eq!(from_real[2].status, castle_probe::Status::Fail);
    assert!(
        from_real[2].detail.contains("lacks sudo on sys/auth/jwt"),
        "{:?}",
        from_real[2]
    );
    // The real server refuses the write the doctor warned about, as the mock does.
    let refused = narrow
        .write(&format!("sys/auth/{run}"), json!({"type": "jwt"}))
        .await
        .unwrap_err();
    let simulated = mock
        .write(&format!("sys/auth/{run}"), json!({"type": "jwt"}))
        .await
        .unwrap_err();
    assert_eq!(refused.to_string(), simulated.to_string());
}
