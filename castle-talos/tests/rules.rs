//! Talos's own validation, rule by rule: each vector is a config a v1.12 node
//! refuses (or accepts), with the Talos source file (siderolabs/talos, tag v1.12.11)
//! the rule comes from. Castle's renderer must never produce a refused config, and
//! MockTalos refuses exactly these at apply time.

#![allow(clippy::unwrap_used)]

use castle_talos::{
    ApplyMode, MachineConfigInput, MockTalos, NodeConn, NodeInput, Role, RuntimeMode,
    SecretsBundle, TalosApi, validate_documents, validate_documents_in, validate_stream,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

fn input(role: Role) -> MachineConfigInput {
    MachineConfigInput {
        cluster_name: "lab".into(),
        endpoint: "https://192.168.1.210:6443".into(),
        kubernetes_version: "1.34.1".into(),
        install_disk: "/dev/sda".into(),
        installer_image: "ghcr.io/siderolabs/installer:v1.12.0".into(),
        api_cert_sans: vec![],
        service_account_issuers: vec!["https://192.168.1.210:6443".into()],
        api_audiences: vec![],
        jwks_uri: None,
        talos_version: "v1.12.0".into(),
        pod_subnets: vec!["10.244.0.0/16".into()],
        service_subnets: vec!["10.96.0.0/12".into()],
        vip: Some("192.168.1.210".into()),
        node: NodeInput {
            hostname: "cp-1".into(),
            role,
            address: "192.168.1.211/24".into(),
            gateway: "192.168.1.1".into(),
            nameservers: vec!["1.1.1.1".into()],
            mac: "02:1a:2b:3c:4d:5e".into(),
        },
        patches: vec![],
        extra_documents: vec![],
        tailscale: None,
    }
}

fn docs(role: Role) -> Vec<Value> {
    let bundle = SecretsBundle::generate(None).unwrap();
    input(role)
        .render(&bundle)
        .unwrap()
        .expose_documents()
        .unwrap()
}

fn doc_mut<'a>(docs: &'a mut [Value], kind: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

type Edit = fn(&mut Vec<Value>);

/// Configs a Talos v1.12 node refuses, each with the words of its refusal.
fn refused() -> Vec<(&'static str, Role, Edit, &'static str)> {
    vec![
        // network/link.go CommonLinkConfig.Validate: 0.0.0.0/0 is a valid prefix with
        // an unspecified address; a default route has no destination at all.
        (
            "default route written as 0.0.0.0/0",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["routes"] =
                    json!([{"destination": "0.0.0.0/0", "gateway": "192.168.1.1"}]);
            },
            "LinkConfig/net0: route 0 destination must be a valid IP prefix",
        ),
        (
            "IPv6 default route written as ::/0",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["routes"] =
                    json!([{"destination": "::/0", "gateway": "fe80::1"}]);
            },
            "route 0 destination must be a valid IP prefix",
        ),
        (
            "route gateway 0.0.0.0",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["routes"] = json!([{"gateway": "0.0.0.0"}]);
            },
            "route 0 gateway must be a valid IP address",
        ),
        (
            "route source not an address",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["routes"] =
                    json!([{"gateway": "192.168.1.1", "source": "me"}]);
            },
            "route 0 source must be a valid IP address",
        ),
        (
            "address without prefix",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["addresses"] = json!([{"address": "192.168.1.211"}]);
            },
            "address 0 must be a valid IP prefix",
        ),
        (
            "unspecified address",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["addresses"] = json!([{"address": "0.0.0.0/24"}]);
            },
            "address 0 must be a valid IP address",
        ),
        (
            "prefix longer than the family",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["addresses"] = json!([{"address": "192.168.1.211/33"}]);
            },
            "address 0 must be a valid IP prefix",
        ),
        (
            "link config without a name",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkConfig")["name"] = json!("");
            },
            "name must be specified",
        ),
        // network/hostname.go: `auto` other than off with a hostname, bad values, length.
        (
            "hostname with auto: stable",
            Role::Worker,
            |d| {
                doc_mut(d, "HostnameConfig")["auto"] = json!("stable");
            },
            "'auto' and 'hostname' cannot be set at the same time",
        ),
        (
            "auto: talos-addr",
            Role::Worker,
            |d| {
                let h = doc_mut(d, "HostnameConfig");
                h.as_object_mut().unwrap().remove("hostname");
                h["auto"] = json!("talos-addr");
            },
            "invalid value for 'auto': talos-addr",
        ),
        (
            "neither auto nor hostname",
            Role::Worker,
            |d| {
                doc_mut(d, "HostnameConfig")
                    .as_object_mut()
                    .unwrap()
                    .remove("hostname");
            },
            "either 'auto' or 'hostname' must be set",
        ),
        (
            "hostname label over 63",
            Role::Worker,
            |d| {
                doc_mut(d, "HostnameConfig")["hostname"] = json!("a".repeat(64));
            },
            "invalid hostname",
        ),
        // network/hostname.go V1Alpha1ConflictValidate.
        (
            "hostname in both documents",
            Role::Worker,
            |d| {
                d[0]["machine"]["network"] = json!({"hostname": "cp-1"});
            },
            "static hostname is already set in v1alpha1 config",
        ),
        // network/resolver.go V1Alpha1ConflictValidate.
        (
            "nameservers in both documents",
            Role::Worker,
            |d| {
                d[0]["machine"]["network"] = json!({"nameservers": ["9.9.9.9"]});
            },
            ".machine.network.nameservers is already set in v1alpha1 config",
        ),
        // network/layer2_vip.go.
        (
            "VIP named by a host name",
            Role::Controlplane,
            |d| {
                doc_mut(d, "Layer2VIPConfig")["name"] = json!("vip.lab");
            },
            "name must be a valid IP address",
        ),
        (
            "VIP without a link",
            Role::Controlplane,
            |d| {
                doc_mut(d, "Layer2VIPConfig")["link"] = json!("");
            },
            "link must be specified",
        ),
        // network/link_alias.go.
        (
            "alias without selector",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkAliasConfig")["selector"] = json!({"match": ""});
            },
            "link selector is required",
        ),
        (
            "alias selecting a malformed MAC",
            Role::Worker,
            |d| {
                doc_mut(d, "LinkAliasConfig")["selector"] =
                    json!({"match": "mac(link.permanent_addr) == \"02:1A:zz\""});
            },
            "link selector is invalid",
        ),
        // container/container.go New: duplicates and conflicting link kinds.
        (
            "duplicate document",
            Role::Worker,
            |d| {
                let h = doc_mut(d, "HostnameConfig").clone();
                d.push(h);
            },
            "duplicate document: HostnameConfig/",
        ),
        (
            "a link configured twice by two kinds",
            Role::Worker,
            |d| {
                d.push(
                    json!({"apiVersion": "v1alpha1", "kind": "DummyLinkConfig", "name": "net0"}),
                );
            },
            "conflicting documents: LinkConfig/net0 and DummyLinkConfig/net0",
        ),
        (
            "two v1alpha1 documents",
            Role::Worker,
            |d| {
                let main = d[0].clone();
                d.push(main);
            },
            "duplicate v1alpha1.Config",
        ),
        // v1alpha1/v1alpha1_validation.go Config.Validate and ClusterConfig.Validate.
        (
            "worker holding the os CA key",
            Role::Worker,
            |d| {
                d[0]["machine"]["ca"]["key"] = json!("a2V5");
            },
            "issuing Talos API CA key is not allowed on non-controlplane nodes",
        ),
        (
            "worker holding the Kubernetes CA key",
            Role::Worker,
            |d| {
                d[0]["cluster"]["ca"]["key"] = json!("a2V5");
            },
            "cluster CA key is not allowed on non-controlplane nodes (.cluster.ca)",
        ),
        (
            "control plane without the os CA key",
            Role::Controlplane,
            |d| {
                d[0]["machine"]["ca"].as_object_mut().unwrap().remove("key");
            },
            "issuing CA key is required for controlplane nodes (.machine.ca.key)",
        ),
        (
            "etcd section on a worker",
            Role::Worker,
            |d| {
                d[0]["cluster"]["etcd"] = json!({"advertisedSubnets": ["192.168.1.0/24"]});
            },
            "etcd config is only allowed on control plane machines",
        ),
        (
            "no install section in metal mode",
            Role::Worker,
            |d| {
                d[0]["machine"].as_object_mut().unwrap().remove("install");
            },
            "install instructions are required in \"metal\" mode",
        ),
        (
            "install without a disk",
            Role::Worker,
            |d| {
                d[0]["machine"]["install"]["disk"] = json!("");
            },
            "either install disk or diskSelector should be defined",
        ),
        (
            "persist: false",
            Role::Worker,
            |d| {
                d[0]["persist"] = json!(false);
            },
            ".persist should be enabled",
        ),
        (
            "unknown machine type",
            Role::Worker,
            |d| {
                d[0]["machine"]["type"] = json!("master");
            },
            "unknown machine type \"master\"",
        ),
        (
            "endpoint that is not a URL",
            Role::Worker,
            |d| {
                d[0]["cluster"]["controlPlane"]["endpoint"] = json!("192.168.1.210:6443");
            },
            "invalid controlplane endpoint",
        ),
        (
            "dnsDomain that is not a DNS name",
            Role::Worker,
            |d| {
                d[0]["cluster"]["network"]["dnsDomain"] = json!("-cluster.local");
            },
            "\"-cluster.local\" is not a valid DNS name",
        ),
        (
            "unknown CNI on a control plane",
            Role::Controlplane,
            |d| {
                d[0]["cluster"]["network"]["cni"] = json!({"name": "calico"});
            },
            "cni name should be one of",
        ),
        (
            "discovery without cluster id",
            Role::Worker,
            |d| {
                d[0]["cluster"]["id"] = json!("");
            },
            "cluster discovery service requires .cluster.id",
        ),
        // runtime/extensions/service_config.go.
        (
            "extension without environment or files",
            Role::Worker,
            |d| {
                d.push(json!({"apiVersion": "v1alpha1", "kind": "ExtensionServiceConfig", "name": "nut"}));
            },
            "no config files found for extension \"nut\"",
        ),
        (
            "extension file without mount path",
            Role::Worker,
            |d| {
                d.push(json!({"apiVersion": "v1alpha1", "kind": "ExtensionServiceConfig", "name": "nut", "configFiles": [{"content": "x"}]}));
            },
            "extension mount path is required for extension \"nut\"",
        ),
    ]
}

#[test]
fn configs_talos_refuses_are_refused_with_talos_words() {
    let mut failures = vec![];
    for (what, role, edit, words) in refused() {
        let mut d = docs(role);
        edit(&mut d);
        let errs = validate_documents(&d);
        if !errs.iter().any(|e| e.contains(words)) {
            failures.push(format!("{what}: want {words:?}, got {errs:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(refused().len() >= 30);
}

/// What Talos accepts must pass too: a check that refuses a valid config would
/// stop a real run as surely as a missing one.
#[test]
fn configs_talos_accepts_pass() {
    let accepted: Vec<(&str, Role, Edit)> = vec![
        ("the generated control plane", Role::Controlplane, |_| {}),
        ("the generated worker", Role::Worker, |_| {}),
        // link.go: a route with a destination and a gateway, an IPv6 address.
        ("a static route and an IPv6 address", Role::Worker, |d| {
            let l = doc_mut(d, "LinkConfig");
            l["routes"] = json!([{"destination": "10.3.5.0/24", "gateway": "10.3.5.1"}, {"gateway": "fe80::1"}]);
            l["addresses"] = json!([{"address": "192.168.1.100/24"}, {"address": "2001:db8::1/64", "routePriority": 100}]);
        }),
        // hostname.go: `auto: off` with a hostname; `auto: stable` alone.
        ("auto: off with a hostname", Role::Worker, |d| {
            doc_mut(d, "HostnameConfig")["auto"] = json!("off");
        }),
        ("auto: stable alone", Role::Worker, |d| {
            let h = doc_mut(d, "HostnameConfig");
            h.as_object_mut().unwrap().remove("hostname");
            h["auto"] = json!("stable");
        }),
        // container.go: same name, different non-link kinds do not conflict.
        ("an extension named like the link", Role::Worker, |d| {
            d.push(json!({"apiVersion": "v1alpha1", "kind": "ExtensionServiceConfig", "name": "net0", "environment": ["A=1"]}));
        }),
        ("an IPv6 VIP", Role::Controlplane, |d| {
            doc_mut(d, "Layer2VIPConfig")["name"] = json!("2001:db8::10");
        }),
        ("discovery off without id", Role::Worker, |d| {
            d[0]["cluster"]["id"] = json!("");
            d[0]["cluster"]["discovery"] = json!({"enabled": false});
        }),
        ("dnsDomain with a trailing dot", Role::Worker, |d| {
            d[0]["cluster"]["network"]["dnsDomain"] = json!("cluster.local.");
        }),
    ];
    for (what, role, edit) in accepted {
        let mut d = docs(role);
        edit(&mut d);
        let errs = validate_documents(&d);
        assert!(errs.is_empty(), "{what}: {errs:?}");
    }
}

/// The runtime mode decides two rules (v1alpha1_validation.go `Config.Validate`,
/// modes from internal/app/machined/pkg/runtime/mode.go): only `metal` requires
/// `machine.install`, naming the mode; only `container` requires HostDNS on and
/// forwarding kube-dns. A nocloud VM runs in `cloud` mode (platform/nocloud
/// `Mode`), which is how MockTalos validates.
#[test]
fn the_runtime_mode_decides_install_and_host_dns() {
    let mut no_install = docs(Role::Worker);
    no_install[0]["machine"]
        .as_object_mut()
        .unwrap()
        .remove("install");
    for (mode, refused) in [
        (RuntimeMode::Metal, true),
        (RuntimeMode::Cloud, false),
        (RuntimeMode::MetalAgent, false),
    ] {
        let errs = validate_documents_in(&no_install, mode);
        let want = format!("install instructions are required in \"{mode}\" mode");
        assert_eq!(
            errs.iter().any(|e| e.contains(&want)),
            refused,
            "{mode}: {errs:?}"
        );
        if !refused {
            assert!(errs.is_empty(), "{mode}: {errs:?}");
        }
    }
    assert_eq!(RuntimeMode::default(), RuntimeMode::Metal);

    let generated = docs(Role::Worker);
    let errs = validate_documents_in(&generated, RuntimeMode::Container);
    assert!(
        errs.iter()
            .any(|e| e.ends_with("feature HostDNS should be enabled in container mode (.machine.features.hostDNS.enabled)")),
        "{errs:?}"
    );
    let mut host_dns = generated.clone();
    host_dns[0]["machine"]["features"]["hostDNS"] =
        json!({"enabled": true, "forwardKubeDNSToHost": true});
    assert!(validate_documents_in(&host_dns, RuntimeMode::Container).is_empty());
    host_dns[0]["machine"]["features"]["hostDNS"]["forwardKubeDNSToHost"] = json!(false);
    let errs = validate_documents_in(&host_dns, RuntimeMode::Container);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("should forward kube-dns to host"),
        "{errs:?}"
    );
}

/// MockTalos is a nocloud node: it takes a config without an install section, as
/// a cloud-mode Talos does, and still refuses one that breaks another rule.
#[tokio::test]
async fn mock_talos_validates_as_a_nocloud_node() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let stream = |docs: &[Value]| {
        // JSON is YAML: one document per JSON object.
        SecretString::from(
            docs.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n---\n"),
        )
    };
    let mut no_install = input(Role::Worker)
        .render(&bundle)
        .unwrap()
        .expose_documents()
        .unwrap();
    no_install[0]["machine"]
        .as_object_mut()
        .unwrap()
        .remove("install");
    let talos = MockTalos::new();
    talos.power_on("192.168.1.212");
    talos
        .apply_configuration(
            "192.168.1.212",
            &stream(&no_install),
            ApplyMode::Auto,
            NodeConn::Maintenance,
        )
        .await
        .unwrap_or_else(|e| panic!("a cloud-mode node takes a config without install: {e}"));

    let mut no_ca = no_install;
    no_ca[0]["machine"].as_object_mut().unwrap().remove("ca");
    talos.power_on("192.168.1.213");
    let e = talos
        .apply_configuration(
            "192.168.1.213",
            &stream(&no_ca),
            ApplyMode::Auto,
            NodeConn::Maintenance,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(castle_talos::Code::InvalidArgument), "{e}");
    assert!(
        e.to_string()
            .contains("issuing CA or some accepted CAs are required"),
        "{e}"
    );
}

#[test]
fn a_stream_that_does_not_parse_is_refused_as_talos_says() {
    let e = validate_stream("version: v1alpha1\nmachine: [unclosed\n").unwrap_err();
    assert!(e[0].starts_with("failed to parse config"), "{e:?}");
}

/// maintenance/server.go ApplyConfiguration: a config failing validation is
/// InvalidArgument "configuration validation failed: ..." and the node stays in
/// maintenance mode.
#[tokio::test]
async fn the_mock_refuses_what_the_rules_refuse_at_apply_time() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let talos = MockTalos::new();
    talos.power_on("192.168.1.211");
    let good = input(Role::Worker).render(&bundle).unwrap();
    let bad = good.rendered.expose_secret().replace(
        "- gateway: \"192.168.1.1\"",
        "- destination: 0.0.0.0/0\n  gateway: \"192.168.1.1\"",
    );
    // Never print a config: it holds keys.
    assert!(
        bad.contains("destination: 0.0.0.0/0"),
        "the route was rewritten"
    );
    let e = talos
        .apply_configuration(
            "192.168.1.211",
            &SecretString::from(bad),
            ApplyMode::Auto,
            NodeConn::Maintenance,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(castle_talos::Code::InvalidArgument), "{e}");
    assert!(
        e.to_string().contains("configuration validation failed")
            && e.to_string()
                .contains("route 0 destination must be a valid IP prefix"),
        "{e}"
    );
    assert_eq!(
        talos.connection("192.168.1.211").await.unwrap(),
        NodeConn::Maintenance,
        "a refused config leaves the node in maintenance mode"
    );
    talos
        .apply_configuration(
            "192.168.1.211",
            &good.rendered,
            ApplyMode::Auto,
            NodeConn::Maintenance,
        )
        .await
        .unwrap();
}

/// kube-apiserver takes one `--service-account-issuer` per issuer; Talos 1.12's
/// extraArgs is `map[string]string` (v1alpha1_types.go at v1.12.11), 1.13's is
/// `Args` with list values (v1.13.0), which replace the endpoint default.
#[test]
fn issuers_are_emitted_as_the_talos_version_can_carry_them() {
    let bundle = SecretsBundle::generate(None).unwrap();
    let two = vec![
        "https://lab-k8s.tail0000.ts.net:6443".to_string(),
        "https://192.168.1.210:6443".to_string(),
    ];
    let mut i = input(Role::Controlplane);
    i.service_account_issuers = two.clone();
    let e = i.render(&bundle).unwrap_err().to_string();
    assert!(
        e.contains("Talos v1.12.0 takes one value per kube-apiserver flag"),
        "{e}"
    );
    i.talos_version = "v1.13.0".into();
    let main = i
        .render(&bundle)
        .unwrap()
        .expose_documents()
        .unwrap()
        .remove(0);
    assert_eq!(
        main.pointer("/cluster/apiServer/extraArgs/service-account-issuer"),
        Some(&json!(two)),
        "a list, first one signing, never comma-joined"
    );
    let mut one = input(Role::Controlplane);
    one.service_account_issuers = two[..1].to_vec();
    let main = one
        .render(&bundle)
        .unwrap()
        .expose_documents()
        .unwrap()
        .remove(0);
    assert_eq!(
        main.pointer("/cluster/apiServer/extraArgs/service-account-issuer"),
        Some(&json!(two[0]))
    );
}
