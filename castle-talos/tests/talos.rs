//! Generated configs against the Talos 1.12 schema, patches, PKI, and the mock's rules.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use castle_talos::{
    ApplyMode, Latency, MachineConfigInput, MockTalos, NodeConn, NodeInput, Patch, Role,
    SecretsBundle, TailscaleExtension, TalosApi, apply_patches, talosconfig, write_private,
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
        service_account_issuers: vec!["https://192.168.1.210:6443".into()],
        api_audiences: vec!["vault".into()],
        jwks_uri: Some("https://192.168.1.210:6443/openid/v1/jwks".into()),
        talos_version: "v1.12.0".into(),
        pod_subnets: vec!["10.244.0.0/16".into()],
        service_subnets: vec!["10.96.0.0/12".into()],
        vip: Some("192.168.1.210".into()),
        node: NodeInput {
            hostname: if role == Role::Controlplane { "cp-1".into() } else { "worker-1".into() },
            role,
            address: "192.168.1.211/24".into(),
            gateway: "192.168.1.1".into(),
            nameservers: vec!["1.1.1.1".into()],
            mac: "02:1a:2b:3c:4d:5e".into(),
        },
        patches: vec![Patch::parse("machine:\n  kubelet:\n    extraArgs:\n      rotate-server-certificates: \"true\"\n").unwrap()],
        extra_documents: vec![],
        tailscale: tailscale.then(|| TailscaleExtension { auth_key: SecretString::from("tskey-auth-fake-1"), hostname: "lab-cp-1".into(), extra_args: vec!["--accept-routes".into()] }),
    }
}

/// The Talos 1.12 schema from `../shared/reference`: required under CI, where its
/// absence fails the test; elsewhere the check says it skipped.
fn schema() -> Option<Value> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/talos-v1.12-config.schema.json");
    match std::fs::read_to_string(&file) {
        Ok(t) => Some(serde_json::from_str(&t).unwrap()),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set and {} is unreadable: {e}", file.display())
        }
        Err(_) => {
            eprintln!("SKIPPED the schema check: {} is absent", file.display());
            None
        }
    }
}

/// The schema definition of each document kind Castle writes.
fn def_of(doc: &Value) -> &'static str {
    match doc.get("kind").and_then(Value::as_str) {
        None => "v1alpha1.Config",
        Some("HostnameConfig") => "network.HostnameConfigV1Alpha1",
        Some("LinkAliasConfig") => "network.LinkAliasConfigV1Alpha1",
        Some("LinkConfig") => "network.LinkConfigV1Alpha1",
        Some("Layer2VIPConfig") => "network.Layer2VIPConfigV1Alpha1",
        Some("ResolverConfig") => "network.ResolverConfigV1Alpha1",
        Some("ExtensionServiceConfig") => "extensions.ServiceConfigV1Alpha1",
        Some(other) => panic!("no schema definition known for {other}"),
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
        let docs = cfg.expose_documents().unwrap();
        let kinds: Vec<&str> = docs
            .iter()
            .map(|d| d.get("kind").and_then(Value::as_str).unwrap_or("v1alpha1"))
            .collect();
        let mut want = vec![
            "v1alpha1",
            "HostnameConfig",
            "LinkAliasConfig",
            "LinkConfig",
        ];
        if role == Role::Controlplane {
            want.push("Layer2VIPConfig");
        }
        want.push("ResolverConfig");
        if ts {
            want.push("ExtensionServiceConfig");
        }
        assert_eq!(kinds, want);
        for d in &docs {
            validate_against(&schema, def_of(d), d);
        }
        assert!(castle_talos::validate_documents(&docs).is_empty());
    }
}

#[test]
fn control_planes_carry_the_reference_settings_and_workers_no_ca_keys() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let cp = input(Role::Controlplane, true)
        .render(&bundle)
        .unwrap()
        .expose_documents()
        .unwrap()
        .remove(0);
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
        Some(&json!("https://192.168.1.210:6443"))
    );
    assert_eq!(
        cp.pointer("/machine/kubelet/extraArgs/rotate-server-certificates"),
        Some(&json!("true")),
        "the patch applied"
    );
    let worker = input(Role::Worker, false)
        .render(&bundle)
        .unwrap()
        .expose_documents()
        .unwrap()
        .remove(0);
    assert!(
        worker.pointer("/machine/ca/crt").is_some(),
        "workers trust the os CA"
    );
    assert!(worker.pointer("/machine/ca/key").is_none());
    assert!(worker.pointer("/cluster/ca/key").is_none());
    assert!(worker.pointer("/cluster/serviceAccount").is_none());
}

#[test]
fn patches_merge_append_delete_and_json_patch() {
    let mut docs = vec![
        json!({"machine": {"certSANs": ["a"], "kubelet": {"image": "x", "extraArgs": {"v": "1"}}}, "cluster": {"coreDNS": {"disabled": false}}}),
    ];
    let merge = Patch::parse(
        "machine:\n  certSANs: [b]\n  kubelet:\n    extraArgs:\n      $patch: delete\n",
    )
    .unwrap();
    apply_patches(&mut docs, &[merge]).unwrap();
    let doc = &docs[0];
    assert_eq!(doc.pointer("/machine/certSANs"), Some(&json!(["a", "b"])));
    assert!(doc.pointer("/machine/kubelet/extraArgs").is_none());
    assert_eq!(doc.pointer("/machine/kubelet/image"), Some(&json!("x")));
    let ops = "- op: replace\n  path: /cluster/coreDNS/disabled\n  value: true\n- op: add\n  path: /machine/certSANs/-\n  value: c\n- op: test\n  path: /machine/kubelet/image\n  value: x\n- op: remove\n  path: /machine/certSANs/0\n";
    apply_patches(&mut docs, &[Patch::parse(ops).unwrap()]).unwrap();
    assert_eq!(
        docs[0].pointer("/cluster/coreDNS/disabled"),
        Some(&json!(true))
    );
    assert_eq!(
        docs[0].pointer("/machine/certSANs"),
        Some(&json!(["b", "c"]))
    );
    let failing = Patch::parse("- op: test\n  path: /machine/kubelet/image\n  value: y\n").unwrap();
    assert!(
        apply_patches(&mut docs, &[failing])
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
    let bundle = SecretsBundle::generate(None).unwrap();
    let talos = MockTalos::new()
        .with_latency(Latency::lab())
        .with_talosconfig(&talosconfig(&bundle, "lab", &[], &[]).unwrap())
        .unwrap();
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
    // Installing, the node's apid asks for a client certificate: refused at the
    // handshake (Unavailable), not Unauthenticated (internal/app/apid/main.go).
    assert!(
        e.is_transient() && e.to_string().contains("tls: certificate required"),
        "{e}"
    );
    assert_eq!(talos.connection(ip).await.unwrap(), NodeConn::Mtls);
    let e = talos
        .apply_configuration(ip, &cfg.rendered, ApplyMode::Auto, NodeConn::Mtls)
        .await
        .unwrap_err();
    // v1alpha1_server.go: a node rebooting into its config takes no other.
    assert!(
        e.is_transient() && e.to_string().contains("node is rebooting"),
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
            .any(|(k, v)| k == "TS_AUTHKEY" && v.expose_secret() == "tskey-auth-fake-1")
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

#[test]
fn patched_configs_with_extra_documents_still_validate_and_patches_reach_documents_by_kind() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let mut i = input(Role::Controlplane, true);
    i.extra_documents = vec![
        "apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: nut-client\nenvironment: [UPS=ups@10.0.0.2]\n".into(),
    ];
    i.patches.push(
        Patch::parse("apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: nut-client\nenvironment: [MODE=netclient]\n").unwrap(),
    );
    i.patches.push(
        Patch::parse(
            "machine:\n  install:\n    wipe: true\ncluster:\n  discovery:\n    $patch: delete\n",
        )
        .unwrap(),
    );
    let docs = i.render(&bundle).unwrap().expose_documents().unwrap();
    assert_eq!(docs[0].pointer("/machine/install/wipe"), Some(&json!(true)));
    assert!(docs[0].pointer("/cluster/discovery").is_none());
    let nut = docs.iter().find(|d| d["name"] == "nut-client").unwrap();
    assert_eq!(
        nut["environment"],
        json!(["UPS=ups@10.0.0.2", "MODE=netclient"])
    );
    let ts = docs.iter().find(|d| d["name"] == "tailscale").unwrap();
    let env: Vec<&str> = ts["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "TS_AUTHKEY=tskey-auth-fake-1",
            "TS_HOSTNAME=lab-cp-1",
            "TS_STATE_DIR=/var/lib/tailscale",
            "TS_EXTRA_ARGS=--accept-routes"
        ]
    );
    if let Some(schema) = schema() {
        for d in &docs {
            validate_against(&schema, def_of(d), d);
        }
    }
    let mut bad = input(Role::Worker, false);
    bad.patches = vec![
        Patch::parse("apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: absent\n").unwrap(),
    ];
    // A patch for a document the config lacks appends it (configpatcher/strategic.go),
    // and then Talos's own check refuses an extension with nothing in it.
    let e = bad.render(&bundle).unwrap_err().to_string();
    assert!(
        e.contains("would be refused by Talos")
            && e.contains("no config files found for extension \"absent\""),
        "{e}"
    );
    // configpatcher/json6902.go: RFC 6902 patches need a single-document config,
    // and a node's config is always several documents.
    let mut bad = input(Role::Worker, false);
    bad.patches =
        vec![Patch::parse("- op: add\n  path: /machine/install/wipe\n  value: true\n").unwrap()];
    let e = bad.render(&bundle).unwrap_err().to_string();
    assert!(e.contains("not supported for multi-document"), "{e}");
    let mut bad = input(Role::Worker, false);
    bad.extra_documents = vec!["just: a map\n".into()];
    assert!(
        bad.render(&bundle).is_err(),
        "an extra document needs a kind"
    );
}

#[test]
fn json_patch_errors_name_the_operation() {
    let mut docs = vec![json!({"machine": {"certSANs": []}})];
    for (ops, why) in [
        (
            "- op: replace\n  path: /machine/absent\n  value: 1\n",
            "no such path",
        ),
        (
            "- op: remove\n  path: /machine/certSANs/0\n",
            "index out of range",
        ),
        (
            "- op: add\n  path: /nowhere/deep\n  value: 1\n",
            "parent does not exist",
        ),
    ] {
        let e = apply_patches(&mut docs, &[Patch::parse(ops).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
    assert!(Patch::parse("- just\n- strings\n").is_err());
}

fn der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

#[test]
fn the_admin_certificate_is_ed25519_os_admin_client_auth_signed_by_the_os_ca() {
    use x509_parser::prelude::*;
    let bundle = SecretsBundle::generate(None).unwrap();
    let os_der = der(&bundle.os.crt);
    let (_, os) = X509Certificate::from_der(&os_der).unwrap();
    let org = |c: &X509Certificate| {
        c.subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_string)
    };
    assert_eq!(org(&os).as_deref(), Some("talos"));
    assert!(os.is_ca());
    assert_eq!(
        os.signature_algorithm.algorithm,
        x509_parser::oid_registry::OID_SIG_ED25519
    );
    for ca in [&bundle.etcd, &bundle.k8s, &bundle.aggregator] {
        let d = der(&ca.crt);
        let (_, c) = X509Certificate::from_der(&d).unwrap();
        assert!(c.is_ca());
        assert_eq!(
            c.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        let days =
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400;
        assert!(days >= 3650, "CAs live ten years, got {days} days");
        c.verify_signature(None).unwrap();
    }
    let client = bundle.admin_client_cert().unwrap();
    let cd = der(&client.crt);
    let (_, c) = X509Certificate::from_der(&cd).unwrap();
    assert_eq!(org(&c).as_deref(), Some("os:admin"));
    assert_eq!(c.issuer(), os.subject());
    let eku = c.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(!c.is_ca());
    c.verify_signature(Some(os.public_key())).unwrap();
    let other = SecretsBundle::generate(None).unwrap();
    let od = der(&other.os.crt);
    let (_, o) = X509Certificate::from_der(&od).unwrap();
    assert!(
        c.verify_signature(Some(o.public_key())).is_err(),
        "another cluster's CA does not vouch for it"
    );
    assert!(!format!("{client:?}").contains("PRIVATE"));
}

#[test]
fn a_bundle_loaded_from_yaml_signs_chaining_client_certificates() {
    use x509_parser::prelude::*;
    let bundle = SecretsBundle::generate(None).unwrap();
    let back = SecretsBundle::from_yaml(&bundle.to_yaml().unwrap()).unwrap();
    let client = back.admin_client_cert().unwrap();
    let (cd, od) = (der(&client.crt), der(&bundle.os.crt));
    let (_, c) = X509Certificate::from_der(&cd).unwrap();
    let (_, os) = X509Certificate::from_der(&od).unwrap();
    c.verify_signature(Some(os.public_key())).unwrap();
    let e = SecretsBundle::from_yaml(&SecretString::from(
        "cluster: 1
"
        .to_string(),
    ))
    .unwrap_err();
    assert!(!e.to_string().contains("cluster: 1"));
}

#[test]
fn a_stale_temporary_file_with_wide_permissions_does_not_leak_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let configs = dir.path().join("configs");
    std::fs::create_dir(&configs).unwrap();
    let stale = configs.join("kubeconfig.castle-tmp");
    std::fs::write(&stale, "old").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    castle_talos::write_client_configs(
        &configs,
        &SecretString::from("kind: Config\n"),
        &SecretString::from("context: lab\n"),
    )
    .unwrap();
    for f in ["kubeconfig", "talosconfig"] {
        let m = std::fs::metadata(configs.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600, "{f}");
    }
    assert!(!stale.exists());
}

#[tokio::test(start_paused = true)]
async fn the_mock_validates_configs_and_models_workers_resets_and_restores() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let talos = MockTalos::new()
        .with_latency(Latency::lab())
        .with_talosconfig(&talosconfig(&bundle, "lab", &[], &[]).unwrap())
        .unwrap();
    let (cp, w) = ("10.0.0.1", "10.0.0.2");
    talos.power_on(cp);
    talos.power_on(w);
    let cp_cfg = input(Role::Controlplane, true).render(&bundle).unwrap();
    let w_cfg = input(Role::Worker, false).render(&bundle).unwrap();
    // Malformed: not YAML, a worker config with a key stripped, a bad extension doc.
    let stripped = w_cfg
        .rendered
        .expose_secret()
        .replace("controlPlane:", "controlPlaneX:");
    let bad_ext = format!(
        "{}---\napiVersion: v1alpha1\nkind: ExtensionServiceConfig\nenvironment: [A=1]\n",
        w_cfg.rendered.expose_secret()
    );
    for bad in ["{ not yaml", stripped.as_str(), bad_ext.as_str()] {
        let e = talos
            .apply_configuration(
                w,
                &SecretString::from(bad.to_string()),
                ApplyMode::Auto,
                NodeConn::Maintenance,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(castle_talos::Code::InvalidArgument), "{e}");
    }
    let e = talos
        .apply_configuration(w, &w_cfg.rendered, ApplyMode::Auto, NodeConn::Mtls)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "no mTLS in maintenance mode: {e}");
    talos
        .apply_configuration(w, &w_cfg.rendered, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap();
    talos
        .apply_configuration(cp, &cp_cfg.rendered, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let e = talos.kubeconfig(cp).await.unwrap_err();
    assert!(e.is_transient(), "no kubeconfig before bootstrap: {e}");
    let e = talos.bootstrap(w).await.unwrap_err();
    assert!(e.to_string().contains("control plane"), "{e}");
    let e = talos
        .apply_configuration(w, &w_cfg.rendered, ApplyMode::Auto, NodeConn::Maintenance)
        .await
        .unwrap_err();
    // A configured apid refuses the handshake without a client certificate.
    assert_eq!(e.code(), Some(castle_talos::Code::Unavailable));
    assert!(e.to_string().contains("certificate required"), "{e}");
    // v1alpha1_runtime.go CanApplyImmediate: a new machine type is not among the
    // changes applied without a reboot.
    let e = talos
        .apply_configuration(w, &cp_cfg.rendered, ApplyMode::NoReboot, NodeConn::Mtls)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(castle_talos::Code::InvalidArgument), "{e}");
    assert!(
        e.to_string().contains("can't be applied in immediate mode"),
        "{e}"
    );
    let kubelet = |s: Vec<castle_talos::ServiceHealth>| {
        s.into_iter()
            .find(|s| s.id == "kubelet")
            .and_then(|s| s.healthy)
    };
    assert_eq!(kubelet(talos.services(w).await.unwrap()), Some(false));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(kubelet(talos.services(w).await.unwrap()), Some(true));
    assert!(talos.bootstrap(cp).await.unwrap());
    let kc = talos.kubeconfig(cp).await.unwrap();
    let kv: Value = serde_saphyr::from_str(kc.expose_secret()).unwrap();
    assert_eq!(
        kv["clusters"][0]["cluster"]["server"],
        "https://192.168.1.210:6443"
    );
    assert!(kv["users"][0]["user"]["client-certificate-data"].is_string());
    assert!(talos.applied_extension_env(w, "tailscale").is_none());

    // Across processes only facts survive; re-applying the same config restores the rest.
    let snap = talos.snapshot();
    let text = serde_json::to_string(&snap).unwrap();
    assert!(
        !text.contains("tskey")
            && !text.contains("PRIVATE")
            && !text.contains(bundle.cluster_secret.expose_secret()),
        "{text}"
    );
    let again = MockTalos::new();
    again.restore(&snap).unwrap();
    assert!(again.is_bootstrapped());
    assert_eq!(again.hostname_of(cp).as_deref(), Some("cp-1"));
    // The node trusts the os CA it was configured with: a handle without a
    // talosconfig cannot speak mTLS, one of another bundle is refused.
    assert!(matches!(
        again.kubeconfig(cp).await.unwrap_err(),
        castle_talos::Error::Config(_)
    ));
    let other = SecretsBundle::generate(None).unwrap();
    let stranger = again
        .with_talosconfig(&talosconfig(&other, "other", &[], &[]).unwrap())
        .unwrap();
    let e = stranger.services(cp).await.unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let again = again
        .with_talosconfig(&talosconfig(&bundle, "lab", &[], &[]).unwrap())
        .unwrap();
    assert!(again.kubeconfig(cp).await.unwrap_err().is_transient());
    again
        .apply_configuration(cp, &cp_cfg.rendered, ApplyMode::Auto, NodeConn::Mtls)
        .await
        .unwrap();
    assert!(again.kubeconfig(cp).await.is_ok());
    assert!(again.applied_extension_env(cp, "tailscale").is_some());
    assert!(!again.bootstrap(cp).await.unwrap(), "bootstrap is once");

    assert_eq!(again.version(cp, NodeConn::Mtls).await.unwrap(), "v1.12.0");
    again.reset(cp, true).await.unwrap();
    // maintenance/server.go: Version needs the admin role, which a plain client
    // lacks; NO_REBOOT and STAGED are not served before a node has a config.
    let e = again.version(cp, NodeConn::Maintenance).await.unwrap_err();
    assert_eq!(e.code(), Some(castle_talos::Code::Unimplemented), "{e}");
    assert_eq!(again.connection(cp).await.unwrap(), NodeConn::Maintenance);
    for (mode, name) in [
        (ApplyMode::NoReboot, "no-reboot"),
        (ApplyMode::Staged, "staged"),
    ] {
        let e = again
            .apply_configuration(cp, &cp_cfg.rendered, mode, NodeConn::Maintenance)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(castle_talos::Code::Unimplemented), "{e}");
        assert!(e.to_string().contains(&format!("--mode='{name}'")), "{e}");
    }
    assert!(!again.is_bootstrapped());
    again.power_off(w);
    assert!(
        again
            .services(w)
            .await
            .unwrap_err()
            .to_string()
            .contains("connection refused")
    );
}

#[tokio::test]
async fn mock_faults_are_seeded_and_permanent_faults_name_an_operation() {
    let talos = MockTalos::new().with_faults(castle_talos::Faults::transient(7, 0.5));
    talos.power_on("10.0.0.9");
    let mut outcomes = vec![];
    for _ in 0..20 {
        outcomes.push(talos.connection("10.0.0.9").await.is_ok());
    }
    assert!(outcomes.iter().any(|o| *o) && outcomes.iter().any(|o| !*o));
    talos.clear_faults();
    assert!(talos.fail_permanently("nonsense", "x").is_err());
    talos.fail_permanently("connection", "boom").unwrap();
    let e = talos.connection("10.0.0.9").await.unwrap_err();
    assert!(!e.is_transient() && e.to_string().contains("boom"));
    talos.clear_faults();
    assert_eq!(
        talos.connection("10.0.0.9").await.unwrap(),
        NodeConn::Maintenance
    );
}

fn fixture(name: &str) -> SecretString {
    SecretString::from(
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap(),
    )
}

/// generate/secrets/bundle.go (v1.12.11): a bundle holds exactly one of the
/// secretbox and AES-CBC secrets; older talosctl releases wrote AES-CBC, and keys
/// labelled `EC PRIVATE KEY` / `ED25519 PRIVATE KEY`.
#[test]
fn an_older_talosctl_bundle_with_aescbc_loads_signs_and_renders() {
    let bundle = SecretsBundle::from_yaml(&fixture("talosctl-secrets-aescbc.yaml")).unwrap();
    assert!(matches!(
        bundle.encryption,
        castle_talos::EncryptionSecret::AesCbc(_)
    ));
    let client = bundle.admin_client_cert().unwrap();
    let (ca_der, c_der) = (der(&bundle.os.crt), der(&client.crt));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(&c_der).unwrap();
    c.verify_signature(Some(ca.public_key())).unwrap();
    let main = input(Role::Controlplane, false)
        .render(&bundle)
        .unwrap()
        .expose_documents()
        .unwrap()
        .remove(0);
    assert!(main.pointer("/cluster/aescbcEncryptionSecret").is_some());
    assert!(main.pointer("/cluster/secretboxEncryptionSecret").is_none());
    let again = SecretsBundle::from_yaml(&bundle.to_yaml().unwrap()).unwrap();
    assert!(matches!(
        again.encryption,
        castle_talos::EncryptionSecret::AesCbc(_)
    ));

    let text = fixture("talosctl-secrets-aescbc.yaml");
    let both = text.expose_secret().replace(
        "    aescbcencryptionsecret:",
        "    secretboxencryptionsecret: c2VjcmV0\n    aescbcencryptionsecret:",
    );
    let e = SecretsBundle::from_yaml(&SecretString::from(both)).unwrap_err();
    assert!(e.to_string().contains("only one of"), "{e}");
}

/// generate/secrets/bundle.go and ca.go (v1.12.11): the cluster id is URL-safe
/// base64 of 32 bytes; etcd and Kubernetes CAs are named by organization, the
/// aggregator CA by common name `front-proxy`, the os CA O=talos.
#[test]
fn a_generated_bundle_looks_like_talosctls() {
    use base64::Engine as _;
    use x509_parser::prelude::*;
    let bundle = SecretsBundle::generate(None).unwrap();
    let id = base64::engine::general_purpose::URL_SAFE
        .decode(&bundle.cluster_id)
        .unwrap();
    assert_eq!(id.len(), 32);
    for (crt, want) in [
        (&bundle.etcd.crt, "O=etcd"),
        (&bundle.k8s.crt, "O=kubernetes"),
        (&bundle.aggregator.crt, "CN=front-proxy"),
        (&bundle.os.crt, "O=talos"),
    ] {
        let d = der(crt);
        let (_, c) = X509Certificate::from_der(&d).unwrap();
        assert_eq!(c.subject().to_string(), want);
    }
}

/// v1alpha1_runtime.go `CanApplyImmediate` (v1.12.11): on a configured node AUTO
/// applies without a reboot when only immediate fields (kubelet, network, new-style
/// documents, ...) change, and reboots otherwise; NO_REBOOT refuses the latter.
#[tokio::test(start_paused = true)]
async fn auto_mode_reboots_only_for_changes_talos_cannot_apply_immediately() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let talos = MockTalos::new()
        .with_latency(Latency::lab())
        .with_talosconfig(&talosconfig(&bundle, "lab", &[], &[]).unwrap())
        .unwrap();
    let ip = "10.0.0.7";
    talos.power_on(ip);
    let base = input(Role::Worker, false);
    talos
        .apply_configuration(
            ip,
            &base.render(&bundle).unwrap().rendered,
            ApplyMode::Auto,
            NodeConn::Maintenance,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let mut renamed = input(Role::Worker, false);
    renamed.node.hostname = "worker-9".into();
    renamed.patches.push(
        Patch::parse("machine:\n  kubelet:\n    extraArgs:\n      max-pods: \"200\"\n").unwrap(),
    );
    let immediate = renamed.render(&bundle).unwrap().rendered;
    talos
        .apply_configuration(ip, &immediate, ApplyMode::NoReboot, NodeConn::Mtls)
        .await
        .unwrap();
    assert_eq!(talos.hostname_of(ip).as_deref(), Some("worker-9"));
    let mut files = input(Role::Worker, false);
    files.patches.push(
        Patch::parse("machine:\n  files:\n    - path: /var/etc/x\n      content: x\n      op: create\n      permissions: 420\n").unwrap(),
    );
    let needs_reboot = files.render(&bundle).unwrap().rendered;
    let e = talos
        .apply_configuration(ip, &needs_reboot, ApplyMode::NoReboot, NodeConn::Mtls)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("can't be applied in immediate mode"),
        "{e}"
    );
    talos
        .apply_configuration(ip, &needs_reboot, ApplyMode::Auto, NodeConn::Mtls)
        .await
        .unwrap();
    let e = talos
        .apply_configuration(ip, &immediate, ApplyMode::Auto, NodeConn::Mtls)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("node is rebooting"),
        "AUTO chose a reboot: {e}"
    );
}
