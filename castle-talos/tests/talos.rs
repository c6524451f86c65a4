//! Generated configs against the Talos 1.12 schema, patches, PKI, and the mock's rules.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use castle_talos::{
    ApplyMode, Latency, MachineConfigInput, MockTalos, NodeConn, NodeInput, Patch, Role,
    SecretsBundle, TailscaleExtension, TalosApi, apply_patch, talosconfig, write_private,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

fn input(role: Role, tailscale: bool) -> MachineConfigInput {
    MachineConfigInput {
        cluster_name: "lab".into(),
        endpoint: "https://192.168.1.210:6443".into(),
        kubernetes_version: "1.34.1".into(),
        install_disk: "/dev/sda".into(),
        installer_image: "factory.talos.dev/installer/abc:v1.12.0".into(),
        api_cert_sans: vec!["lab-k8s.tail0000.ts.net".into()],
        service_account_issuers: vec!["https://192.168.1.210:6443".into(), "https://kubernetes.default.svc".into()],
        api_audiences: vec!["vault".into()],
        jwks_uri: Some("https://192.168.1.210:6443/openid/v1/jwks".into()),
        node: NodeInput {
            hostname: if role == Role::Controlplane { "cp-1".into() } else { "worker-1".into() },
            role,
            address: "192.168.1.211/24".into(),
            gateway: "192.168.1.1".into(),
            nameservers: vec!["1.1.1.1".into()],
            link: "ens18".into(),
        },
        patches: vec![Patch::parse("machine:\n  kubelet:\n    extraArgs:\n      rotate-server-certificates: \"true\"\n").unwrap()],
        extra_documents: vec![],
        tailscale: tailscale.then(|| TailscaleExtension { auth_key: SecretString::from("tskey-auth-canary"), hostname: "lab-cp-1".into(), extra_args: vec!["--accept-routes".into()] }),
    }
}

fn schema() -> Option<Value> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/talos-v1.12-config.schema.json");
    match std::fs::read_to_string(&file) {
        Ok(t) => Some(serde_json::from_str(&t).unwrap()),
        Err(_) => {
            eprintln!("skipping the schema check: {} is absent", file.display());
            None
        }
    }
}

fn validate_against(schema: &Value, def: &str, doc: &Value) {
    let mut root = schema.clone();
    let obj = root.as_object_mut().unwrap();
    obj.remove("oneOf");
    obj.insert("$ref".into(), json!(format!("#/$defs/{def}")));
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{def}: {errors:#?}");
}

#[test]
fn every_generated_document_validates_against_the_talos_schema() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let Some(schema) = schema() else { return };
    for (role, ts) in [
        (Role::Controlplane, false),
        (Role::Worker, false),
        (Role::Controlplane, true),
        (Role::Worker, true),
    ] {
        let cfg = input(role, ts).render(&bundle).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(cfg.rendered.expose_secret()).unwrap();
        validate_against(&schema, "v1alpha1.Config", &docs[0]);
        validate_against(&schema, "network.HostnameConfigV1Alpha1", &docs[1]);
        validate_against(&schema, "network.LinkConfigV1Alpha1", &docs[2]);
        validate_against(&schema, "network.ResolverConfigV1Alpha1", &docs[3]);
        if ts {
            assert_eq!(docs.len(), 5);
            validate_against(&schema, "extensions.ServiceConfigV1Alpha1", &docs[4]);
        }
    }
}

#[test]
fn control_planes_carry_the_reference_settings_and_workers_no_ca_keys() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let cp = input(Role::Controlplane, true)
        .render(&bundle)
        .unwrap()
        .document;
    assert_eq!(cp.pointer("/cluster/coreDNS/disabled"), Some(&json!(true)));
    assert_eq!(
        cp.pointer("/cluster/apiServer/certSANs/0"),
        Some(&json!("lab-k8s.tail0000.ts.net"))
    );
    assert_eq!(
        cp.pointer("/machine/certSANs"),
        Some(&json!([])),
        "the Talos API SANs stay untouched"
    );
    assert_eq!(
        cp.pointer("/cluster/apiServer/extraArgs/service-account-issuer"),
        Some(&json!(
            "https://192.168.1.210:6443,https://kubernetes.default.svc"
        ))
    );
    assert_eq!(
        cp.pointer("/machine/kubelet/extraArgs/rotate-server-certificates"),
        Some(&json!("true")),
        "the patch applied"
    );
    let worker = input(Role::Worker, false).render(&bundle).unwrap().document;
    assert!(worker.pointer("/machine/ca/key").is_none());
    assert!(worker.pointer("/cluster/ca/key").is_none());
    assert!(worker.pointer("/cluster/serviceAccount").is_none());
}

#[test]
fn patches_merge_append_delete_and_json_patch() {
    let mut doc = json!({"machine": {"certSANs": ["a"], "kubelet": {"image": "x", "extraArgs": {"v": "1"}}}, "cluster": {"coreDNS": {"disabled": false}}});
    apply_patch(
        &mut doc,
        &Patch::parse(
            "machine:\n  certSANs: [b]\n  kubelet:\n    extraArgs:\n      $patch: delete\n",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(doc.pointer("/machine/certSANs"), Some(&json!(["a", "b"])));
    assert!(doc.pointer("/machine/kubelet/extraArgs").is_none());
    assert_eq!(doc.pointer("/machine/kubelet/image"), Some(&json!("x")));
    let ops = "- op: replace\n  path: /cluster/coreDNS/disabled\n  value: true\n- op: add\n  path: /machine/certSANs/-\n  value: c\n- op: test\n  path: /machine/kubelet/image\n  value: x\n- op: remove\n  path: /machine/certSANs/0\n";
    apply_patch(&mut doc, &Patch::parse(ops).unwrap()).unwrap();
    assert_eq!(doc.pointer("/cluster/coreDNS/disabled"), Some(&json!(true)));
    assert_eq!(doc.pointer("/machine/certSANs"), Some(&json!(["b", "c"])));
    let failing = Patch::parse("- op: test\n  path: /machine/kubelet/image\n  value: y\n").unwrap();
    assert!(
        apply_patch(&mut doc, &failing)
            .unwrap_err()
            .to_string()
            .contains("test failed")
    );
}

#[test]
fn the_bundle_round_trips_and_never_prints_keys() {
    let sa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let bundle = SecretsBundle::generate(Some(SecretString::from(sa.clone()))).unwrap();
    let token = bundle.bootstrap_token.expose_secret().to_string();
    let (a, b) = token.split_once('.').unwrap();
    assert!(
        a.len() == 6
            && b.len() == 16
            && token
                .chars()
                .all(|c| c == '.' || c.is_ascii_digit() || c.is_ascii_lowercase())
    );
    let yaml = bundle.to_yaml().unwrap();
    let back = SecretsBundle::from_yaml(&yaml).unwrap();
    assert_eq!(back.cluster_id, bundle.cluster_id);
    assert_eq!(back.service_account_key.expose_secret(), sa);
    let debug = format!(
        "{bundle:?} {:?}",
        input(Role::Controlplane, true).render(&bundle).unwrap()
    );
    assert!(
        !debug.contains("PRIVATE KEY") && !debug.contains(&token) && !debug.contains("tskey"),
        "{debug}"
    );
    assert!(SecretsBundle::generate(Some(SecretString::from("not a key"))).is_err());
}

#[test]
fn talosconfig_carries_an_admin_client_cert_signed_by_the_os_ca_and_files_are_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let bundle = SecretsBundle::generate(None).unwrap();
    let tc = talosconfig(
        &bundle,
        "lab",
        &["192.168.1.211".into()],
        &["192.168.1.211".into()],
    )
    .unwrap();
    let v: Value = serde_saphyr::from_str(tc.expose_secret()).unwrap();
    assert_eq!(v["context"], "lab");
    let ctx = &v["contexts"]["lab"];
    for k in ["ca", "crt", "key"] {
        assert!(ctx[k].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    }
    let client = bundle.admin_client_cert().unwrap();
    assert!(client.crt.contains("BEGIN CERTIFICATE"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configs/talosconfig");
    write_private(&path, &tc).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(start_paused = true)]
async fn the_mock_follows_the_node_lifecycle() {
    let talos = MockTalos::new().with_latency(Latency::lab());
    let bundle = SecretsBundle::generate(None).unwrap();
    let cfg = input(Role::Controlplane, true).render(&bundle).unwrap();
    let ip = "192.168.1.211";
    let e = talos
        .apply_configuration(ip, &cfg.rendered, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "not powered yet: {e}");
    talos.power_on(ip);
    let e = talos
        .apply_configuration(
            ip,
            &SecretString::from("version: v1alpha1\nmachine: {type: worker}\n"),
            ApplyMode::Auto,
            NodeConn::Maintenance,
        )
        .await
        .unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("required"),
        "{e}"
    );
    talos
        .apply_configuration(ip, &cfg.rendered, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap();
    let e = talos
        .apply_configuration(ip, &cfg.rendered, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("in progress"),
        "{e}"
    );
    let e = talos.bootstrap(ip).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(talos.bootstrap(ip).await.unwrap());
    assert!(
        !talos.bootstrap(ip).await.unwrap(),
        "AlreadyExists means done"
    );
    let etcd = |s: Vec<castle_talos::ServiceHealth>| {
        s.into_iter()
            .find(|s| s.id == "etcd")
            .and_then(|s| s.healthy)
    };
    assert_eq!(etcd(talos.services(ip).await.unwrap()), Some(false));
    tokio::time::sleep(Duration::from_secs(41)).await;
    assert_eq!(etcd(talos.services(ip).await.unwrap()), Some(true));
    let env = talos.applied_extension_env(ip, "tailscale").unwrap();
    assert!(
        env.iter()
            .any(|(k, v)| k == "TS_AUTHKEY" && v.expose_secret() == "tskey-auth-canary")
    );
    assert!(
        !serde_json::to_string(&talos.snapshot())
            .unwrap()
            .contains("tskey")
    );
    talos
        .apply_configuration(ip, &cfg.rendered, ApplyMode::Auto, NodeConn::Mtls)
        .await
        .unwrap();
    assert!(
        talos
            .kubeconfig(ip)
            .await
            .unwrap()
            .expose_secret()
            .contains("kind: Config")
    );
}
