use castle_core::castle::{Castle, RunOptions};
use castle_core::events::{Events, Recorder};
use castle_tests::{files, lab_copy, paused};
use std::sync::Arc;

/// Canary values fed through every secret input must appear in no file under the
/// cluster directory (but the mode-0600 kubeconfig/talosconfig), and in no event.
#[tokio::test(start_paused = true)]
async fn no_canary_reaches_a_file_or_an_event_after_success_failure_and_destroy() {
    let (dir, config) = lab_copy(paused);
    let canaries: Vec<String> = std::fs::read_dir(dir.path().join("secrets"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let value = format!("canary-{}-7f3a9c", e.file_name().to_string_lossy());
            std::fs::write(e.path(), &value).unwrap();
            value
        })
        .collect();
    let castle = Castle::open(&config).unwrap();
    let rec = Recorder::new();
    let options = || RunOptions {
        events: Events::new().with(Arc::new(rec.clone())),
        ..RunOptions::default()
    };
    castle
        .lab()
        .unwrap()
        .cluster
        .fail_permanently("apply:Kustomization", "boom");
    let failed = castle.create(options()).await.unwrap();
    assert!(failed.error.is_some());
    castle.lab().unwrap().cluster.clear_faults();
    let resumed = castle
        .create(RunOptions {
            resume: true,
            ..options()
        })
        .await
        .unwrap();
    assert!(
        resumed.error.is_none(),
        "{:?}",
        resumed.error.map(|e| e.to_string())
    );
    assert!(
        castle
            .destroy(options(), false)
            .await
            .unwrap()
            .error
            .is_none()
    );

    let events = serde_json::to_string(&rec.events()).unwrap();
    for f in files(dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if f.starts_with(dir.path().join("secrets")) {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        for c in &canaries {
            assert!(
                !text.contains(c.as_str()),
                "{c} leaked into {}",
                f.display()
            );
        }
        if name == "kubeconfig" || name == "talosconfig" {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                f.display()
            );
        }
    }
    for c in &canaries {
        assert!(!events.contains(c.as_str()), "{c} leaked into the events");
    }
    // Minted tailnet keys are runtime secrets too: none in any file or event.
    assert!(
        !events.contains("tskey-auth"),
        "a minted key leaked into the events"
    );
    for f in files(dir.path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        assert!(
            !text.contains("tskey-auth"),
            "a minted key leaked into {}",
            f.display()
        );
    }
}

fn decoded(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// One source of truth (issue 17, item 5): the password Castle generates once into
/// Vault KV is the one the operator's bootstrap Secret holds and the one Vault's
/// database connection was given, and it reaches no file, event or log: only Vault's
/// own storage (in the lab, the `kv` of the simulated Vault's state) holds it.
#[tokio::test(start_paused = true)]
async fn a_generated_password_reaches_the_secret_and_the_connection_and_nothing_else() {
    use sha2::Digest as _;
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let rec = Recorder::new();
    let options = || RunOptions {
        events: Events::new().with(Arc::new(rec.clone())),
        ..RunOptions::default()
    };
    let created = castle.create(options()).await.unwrap();
    assert!(
        created.error.is_none(),
        "{:?}",
        created.error.map(|e| e.to_string())
    );
    let lab = castle.lab().unwrap();
    let spec = &castle.config().vault.as_ref().unwrap().spec;
    let password = castle_vault::generated_value(&lab.vault, spec, "tazlab-admin", "password")
        .await
        .unwrap()
        .expect("vault-db generated it");
    let password = secrecy::ExposeSecret::expose_secret(&password).to_string();
    assert_eq!(password.len(), 32);

    // The Secret PGO adopts: the value, and the labels it adopts by.
    let secret = castle_kube::ClusterApi::get(
        &lab.cluster,
        &castle_kube::ObjectRef::new(
            "v1",
            "Secret",
            Some("tazlab-db"),
            "tazlab-db-pguser-tazlab-admin",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(decoded(&secret["data"]["password"]), password);
    assert_eq!(
        secret["metadata"]["labels"]["postgres-operator.crunchydata.com/pguser"],
        "tazlab-admin"
    );
    // The connection Vault keeps was given the same password (the mock keeps digests).
    let connection = castle_vault::VaultApi::read(&lab.vault, "database/config/tazlab-db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        connection["password_sha256"],
        hex::encode(sha2::Sha256::digest(password.as_bytes()))
    );
    assert_eq!(connection["connection_details"]["username"], "tazlab-admin");

    // A second run changes nothing: the value is generated once.
    let again = castle.create(options()).await.unwrap();
    assert!(again.error.is_none());
    let kept = castle_vault::generated_value(&lab.vault, spec, "tazlab-admin", "password")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&kept), password);
    assert!(
        castle
            .destroy(options(), false)
            .await
            .unwrap()
            .error
            .is_none()
    );

    let events = serde_json::to_string(&rec.events()).unwrap();
    assert!(
        !events.contains(&password),
        "the password leaked into an event"
    );
    let lab_state = dir.path().join(".castle/lab/state.json");
    let mut looked = 0;
    for f in files(dir.path()) {
        let mut text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        if f == lab_state {
            // The simulated Vault's own storage is where the value lives.
            let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
            state["vault"]
                .as_object_mut()
                .unwrap()
                .remove("kv")
                .expect("the simulated Vault keeps KV");
            text = state.to_string();
        }
        assert!(
            !text.contains(&password),
            "the password leaked into {}",
            f.display()
        );
        looked += 1;
    }
    assert!(looked > 5, "{looked} files");
}

/// Issue 17, item 7: no Kubernetes Secret holds Castle's own Vault token (a canary
/// audit over every Secret of the cluster, decoded, dockerconfigjson included), and
/// the ClusterSecretStore authenticates with the JWT role Castle configured in Vault
/// before the cluster existed, through a token the API server issues for ESO's
/// service account. The lab's ESO does what external-secrets does
/// (`pkg/provider/vault/auth.go` createServiceAccountToken, `auth_jwt.go`, and the
/// store conditions of `pkg/controllers/secretstore/common.go`); the login rules are
/// pinned against a real OpenBao in castle-vault's `openbao.rs`.
#[tokio::test(start_paused = true)]
async fn no_secret_holds_the_vault_token_and_the_store_logs_in_with_the_jwt_role() {
    let (dir, config) = lab_copy(paused);
    let vault_token = "canary-vault-token-31c4";
    std::fs::write(dir.path().join("secrets/vault-token"), vault_token).unwrap();
    let castle = Castle::open(&config).unwrap();
    let created = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        created.error.is_none(),
        "{:?}",
        created.error.map(|e| e.to_string())
    );
    let lab = castle.lab().unwrap();
    let secrets = castle_kube::ClusterApi::list(&lab.cluster, "v1", "Secret", None)
        .await
        .unwrap();
    assert!(secrets.len() >= 5, "{} Secrets", secrets.len());
    for s in &secrets {
        for (key, value) in s["data"].as_object().into_iter().flatten() {
            assert!(
                !decoded(value).contains(vault_token),
                "Secret {}/{} key {key} holds Castle's Vault token",
                s["metadata"]["namespace"],
                s["metadata"]["name"]
            );
        }
    }
    // The pull secret is the shape kubelet reads.
    let pull = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == "ghcr-pull-secret")
        .unwrap();
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    let config: serde_json::Value =
        serde_json::from_str(&decoded(&pull["data"][".dockerconfigjson"])).unwrap();
    assert_eq!(config["auths"]["ghcr.io"]["username"], "lab-bot");
    assert_eq!(
        config["auths"]["ghcr.io"]["password"],
        "lab-github-token-not-real"
    );

    let store = castle_kube::ClusterApi::get(
        &lab.cluster,
        &castle_kube::ObjectRef::new(
            "external-secrets.io/v1",
            "ClusterSecretStore",
            None,
            "lab-vault",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let vault = &store["spec"]["provider"]["vault"];
    assert_eq!(
        vault["auth"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["jwt"],
        "{store}"
    );
    assert_eq!(vault["auth"]["jwt"]["role"], "external-secrets");
    // Kept whole by upstream's CRD schema (the lab's API server prunes unknown fields).
    assert_eq!(
        vault["auth"]["jwt"]["kubernetesServiceAccountToken"],
        serde_json::json!({"serviceAccountRef": {"name": "external-secrets", "namespace": "external-secrets"}, "audiences": ["vault"]}),
        "{store}"
    );
    assert_eq!(vault["path"], "secret");
    assert!(vault["caBundle"].is_string(), "{store}");
    assert_eq!(
        store["status"]["conditions"][0],
        serde_json::json!({"type": "Ready", "status": "True", "reason": "Valid", "message": "store validated"})
    );

    // What ESO did, by hand: the account's token logs in as the role, another
    // account's is refused by the role's bound subject.
    let audiences = vec!["vault".to_string()];
    let login = |jwt: secrecy::SecretString| async move {
        castle_vault::VaultApi::write(
            &lab.vault,
            "auth/jwt/login",
            serde_json::json!({"role": "external-secrets", "jwt": secrecy::ExposeSecret::expose_secret(&jwt)}),
        )
        .await
    };
    let eso = lab
        .cluster
        .create_token("external-secrets", "external-secrets", &audiences, 600)
        .await
        .unwrap();
    let auth = login(eso).await.unwrap().unwrap();
    assert_eq!(
        auth["auth"]["policies"],
        serde_json::json!(["external-secrets"])
    );
    castle_kube::ClusterApi::apply(
        &lab.cluster,
        &serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "impostor", "namespace": "external-secrets"}}),
        false,
    )
    .await
    .unwrap();
    let impostor = lab
        .cluster
        .create_token("external-secrets", "impostor", &audiences, 600)
        .await
        .unwrap();
    let refused = login(impostor).await.unwrap_err();
    assert!(
        refused.to_string().contains("invalid subject (sub) claim"),
        "{refused}"
    );
}
