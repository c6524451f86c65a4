//! Talos's own test cases for the machine and cluster rules, ported: `TestValidate`
//! (every case outside network devices and KubeSpan) and `TestValidateCNI` of
//! pkg/machinery/config/types/v1alpha1/v1alpha1_validation_test.go at v1.12.9.
//!
//! Each Go `v1alpha1.Config` struct is written as the v1alpha1 document it
//! marshals to (yaml tags of v1alpha1_types.go; PEM bytes in base64, `Zm9v` for
//! "foo", `YmFy` for "bar"). Talos's `expectedError` is kept verbatim, as
//! go-multierror prints it, and compared with our errors printed the same way (with
//! the container's `v1alpha1.Config: ` prefix taken off). The Go test's
//! `runtimeMode{requiresInstall}` is `RuntimeMode::Metal` when it requires an
//! install and `RuntimeMode::Cloud` otherwise (neither is a container).

#![allow(clippy::unwrap_used)]

use castle_talos::{
    RuntimeMode, validate_documents_in, validate_documents_strict, validate_documents_with_warnings,
};
use serde_json::{Value, json};

/// One case of Talos's table.
struct Case {
    name: &'static str,
    config: Value,
    requires_install: bool,
    strict: bool,
    warnings: &'static [&'static str],
    /// Talos's `expectedError`, verbatim; empty for none.
    error: &'static str,
}

/// Cases where we knowingly print something other than Talos's test expects:
/// the case, why, and exactly what we print instead.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[(
    "NoMachineInstallRequired",
    "the Go test's fake runtime mode prints itself as `runtimeMode(true)`; a real \
     metal node (and ours) prints its mode's name, `metal`",
    "1 error occurred:\n\t* install instructions are required in \"metal\" mode\n\n",
)];

const ENDPOINT: &str = "https://localhost:6443/";

fn cluster() -> Value {
    json!({"controlPlane": {"endpoint": ENDPOINT}})
}

/// `v1alpha1.Config{ConfigVersion: "v1alpha1", MachineConfig: machine,
/// ClusterConfig: cluster}`.
fn config(machine: Value, cluster: Value) -> Value {
    json!({"version": "v1alpha1", "machine": machine, "cluster": cluster})
}

/// A worker whose CA is `Crt: []byte("foo")`.
fn worker() -> Value {
    json!({"type": "worker", "ca": {"crt": "Zm9v"}})
}

/// A control plane whose CA is `Crt: "foo", Key: "bar"`.
fn controlplane() -> Value {
    json!({"type": "controlplane", "ca": {"crt": "Zm9v", "key": "YmFy"}})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn cluster_with(key: &str, value: Value) -> Value {
    with(cluster(), key, value)
}

fn case(name: &'static str, config: Value, error: &'static str) -> Case {
    Case {
        name,
        config,
        requires_install: false,
        strict: false,
        warnings: &[],
        error,
    }
}

fn metal(mut c: Case) -> Case {
    c.requires_install = true;
    c
}

fn strict(mut c: Case) -> Case {
    c.strict = true;
    c
}

fn warns(mut c: Case, warnings: &'static [&'static str]) -> Case {
    c.warnings = warnings;
    c
}

/// `TestValidate`, without the network-device and KubeSpan cases.
fn test_validate() -> Vec<Case> {
    vec![
        case(
            "NoMachine",
            json!({"version": "v1alpha1"}),
            "1 error occurred:\n\t* machine instructions are required\n\n",
        ),
        warns(
            case(
                "NoMachineType",
                config(json!({"ca": {"crt": "Zm9v"}}), cluster()),
                "",
            ),
            &[r#"use "worker" instead of "" for machine type"#],
        ),
        warns(
            case(
                "JoinMachineType",
                config(json!({"type": "join", "ca": {"crt": "Zm9v"}}), cluster()),
                "",
            ),
            &[r#"use "worker" instead of "join" for machine type"#],
        ),
        strict(case(
            "NoMachineTypeStrict",
            config(json!({"ca": {"crt": "Zm9v"}}), cluster()),
            "1 error occurred:\n\t* warning: use \"worker\" instead of \"\" for machine type\n\n",
        )),
        strict(case(
            "WorkerNoAcceptedCAs",
            config(json!({"type": "worker", "ca": {}}), cluster()),
            "1 error occurred:\n\t* trusted CA certificates are required on non-controlplane nodes (.machine.ca.crt, .machine.acceptedCAs)\n\n",
        )),
        strict(case(
            "WorkerOnlyAcceptedCAs",
            config(
                json!({"type": "worker", "acceptedCAs": [{"crt": "Zm9v"}]}),
                cluster(),
            ),
            "",
        )),
        strict(case(
            "ControlplaneNoCAKey",
            config(
                json!({"type": "controlplane", "ca": {"crt": "Zm9v"}}),
                cluster(),
            ),
            "1 error occurred:\n\t* issuing CA key is required for controlplane nodes (.machine.ca.key)\n\n",
        )),
        case("NoMachineInstall", config(worker(), cluster()), ""),
        metal(case(
            "NoMachineInstallRequired",
            config(worker(), cluster()),
            "1 error occurred:\n\t* install instructions are required in \"runtimeMode(true)\" mode\n\n",
        )),
        metal(case(
            "MachineInstallDisk",
            config(
                with(worker(), "install", json!({"disk": "/dev/vda"})),
                cluster(),
            ),
            "",
        )),
        warns(
            metal(case(
                "MachineInstallExtensionsDuplicate",
                config(
                    with(
                        worker(),
                        "install",
                        json!({
                            "disk": "/dev/vda",
                            "extensions": [{"image": "ghcr.io/siderolabs/gvisor:v0.1.0"}],
                        }),
                    ),
                    cluster(),
                ),
                "",
            )),
            &[
                ".machine.install.extensions is deprecated, please see https://www.talos.dev/latest/talos-guides/install/boot-assets/",
            ],
        ),
        metal(case(
            "MachineInstallExtraArgsAndGrubUseUKICmdline",
            config(
                with(
                    worker(),
                    "install",
                    json!({
                        "disk": "/dev/vda",
                        "extraKernelArgs": ["foo=bar"],
                        "grubUseUKICmdline": true,
                    }),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* install.extraKernelArgs and install.grubUseUKICmdline can't be used together\n\n",
        )),
        case(
            "ExternalCloudProviderEnabled",
            config(
                worker(),
                cluster_with(
                    "externalCloudProvider",
                    json!({
                        "enabled": true,
                        "manifests": [
                            "https://www.example.com/manifest1.yaml",
                            "https://www.example.com/manifest2.yaml",
                        ],
                    }),
                ),
            ),
            "",
        ),
        case(
            "ExternalCloudProviderEnabledNoManifests",
            config(
                worker(),
                cluster_with("externalCloudProvider", json!({"enabled": true})),
            ),
            "",
        ),
        case(
            "ExternalCloudProviderDisabled",
            config(worker(), cluster_with("externalCloudProvider", json!({}))),
            "",
        ),
        case(
            "ExternalCloudProviderExtraManifests",
            config(
                worker(),
                cluster_with(
                    "externalCloudProvider",
                    json!({
                        "manifests": [
                            "https://www.example.com/manifest1.yaml",
                            "https://www.example.com/manifest2.yaml",
                        ],
                    }),
                ),
            ),
            "1 error occurred:\n\t* external cloud provider is disabled, but manifests are provided\n\n",
        ),
        case(
            "ExternalCloudProviderInvalidManifests",
            config(
                worker(),
                cluster_with(
                    "externalCloudProvider",
                    json!({"enabled": true, "manifests": ["/manifest.yaml"]}),
                ),
            ),
            "1 error occurred:\n\t* invalid external cloud provider manifest url \"/manifest.yaml\": hostname must not be blank\n\n",
        ),
        case(
            "InlineManifests",
            config(
                controlplane(),
                cluster_with(
                    "inlineManifests",
                    json!([{"name": ""}, {"name": "foo"}, {"name": "bar"}, {"name": "foo"}]),
                ),
            ),
            "2 errors occurred:\n\t* inline manifest name can't be empty\n\t* inline manifest name \"foo\" is duplicate\n\n",
        ),
        case(
            "DNSDomainEmpty",
            config(controlplane(), cluster_with("network", json!({}))),
            "",
        ),
        case(
            "DiscoveryServiceEndpoint",
            config(
                controlplane(),
                with(
                    with(
                        cluster_with(
                            "discovery",
                            json!({
                                "enabled": true,
                                "registries": {"service": {"endpoint": "foo"}},
                            }),
                        ),
                        "id",
                        json!("foo"),
                    ),
                    "secret",
                    json!("bar"),
                ),
            ),
            "1 error occurred:\n\t* cluster discovery service registry endpoint is invalid: parse \"foo\": invalid URI for request\n\n",
        ),
        case(
            "DiscoveryServiceClusterIDSecret",
            config(
                controlplane(),
                cluster_with("discovery", json!({"enabled": true})),
            ),
            "2 errors occurred:\n\t* cluster discovery service requires .cluster.id\n\t* cluster discovery service requires .cluster.secret\n\n",
        ),
        case(
            "EtcdMissingCa",
            config(controlplane(), cluster_with("etcd", json!({}))),
            "1 error occurred:\n\t* key/cert combination should not be empty\n\n",
        ),
        case(
            "EtcdConfigProvidedForWorker",
            config(worker(), cluster_with("etcd", json!({}))),
            "1 error occurred:\n\t* etcd config is only allowed on control plane machines\n\n",
        ),
        case(
            "GoodEtcdSubnet",
            config(
                controlplane(),
                cluster_with(
                    "etcd",
                    json!({
                        "ca": {},
                        "advertisedSubnets": ["10.0.0.0/8", "!1.1.1.1/32"],
                        "listenSubnets": ["10.0.0.0/8", "1.1.1.1/32"],
                    }),
                ),
            ),
            "",
        ),
        case(
            "BadEtcdSubnet",
            config(
                controlplane(),
                cluster_with(
                    "etcd",
                    json!({"ca": {}, "advertisedSubnets": ["1234:"], "listenSubnets": ["10"]}),
                ),
            ),
            "2 errors occurred:\n\t* etcd advertised subnet is not valid: \"1234:\"\n\t* etcd listen subnet is not valid: \"10\"\n\n",
        ),
        case(
            "GoodKubeletSubnet",
            config(
                with(
                    worker(),
                    "kubelet",
                    json!({"nodeIP": {"validSubnets": [
                        "10.0.0.0/8",
                        "!10.0.0.3/32",
                        "!fd00::169:254:2:53/128",
                    ]}}),
                ),
                cluster(),
            ),
            "",
        ),
        case(
            "BadKubeletSubnet",
            config(
                with(
                    worker(),
                    "kubelet",
                    json!({"nodeIP": {"validSubnets": ["10.0.0.0.3", "[fd00::169:254:2:53]:344"]}}),
                ),
                cluster(),
            ),
            "2 errors occurred:\n\t* kubelet nodeIP subnet is not valid: \"10.0.0.0.3\"\n\t* kubelet nodeIP subnet is not valid: \"[fd00::169:254:2:53]:344\"\n\n",
        ),
        case(
            "BadKubeletExtraConfig",
            config(
                json!({
                    "type": "worker",
                    "acceptedCAs": [{"crt": "Zm9v"}],
                    "kubelet": {"extraConfig": {"port": 345}},
                }),
                cluster(),
            ),
            "1 error occurred:\n\t* kubelet configuration field \"port\" can't be overridden\n\n",
        ),
        case(
            "TalosAPIAccessWorker",
            config(
                with(
                    worker(),
                    "features",
                    json!({"rbac": true, "kubernetesTalosAPIAccess": {"enabled": true}}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* feature Kubernetes Talos API Access can only be enabled on control plane machines\n\n",
        ),
        case(
            "TalosAPIAccessInvalidRole",
            config(
                with(
                    controlplane(),
                    "features",
                    json!({"rbac": true, "kubernetesTalosAPIAccess": {
                        "enabled": true,
                        "allowedRoles": ["os:reader", "invalid:role1", "os:etcd:backup", "invalid:role2"],
                    }}),
                ),
                cluster(),
            ),
            "2 errors occurred:\n\t* invalid role \"invalid:role1\" in allowed roles for Kubernetes Talos API Access\n\t* invalid role \"invalid:role2\" in allowed roles for Kubernetes Talos API Access\n\n",
        ),
        case(
            "NodeLabels",
            config(
                with(
                    worker(),
                    "nodeLabels",
                    json!({
                        "/foo": "bar",
                        "key": "value",
                        "talos.dev/foo": "bar",
                        "@!": "#$",
                        "123@.dev/": "456",
                        "a/b/c": "a".repeat(64),
                    }),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* invalid machine node labels: 6 errors occurred:\n\t* prefix cannot be empty: \"/foo\"\n\t* prefix \"123@.dev\" is invalid: domain doesn't match required format: \"123@.dev\"\n\t* name \"@!\" is invalid\n\t* label value \"#$\" is invalid\n\t* invalid format: too many slashes: \"a/b/c\"\n\t* label value length exceeds limit of 63: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\n\n\n",
        ),
        case(
            "ControlPlanePodResources",
            config(
                controlplane(),
                with(
                    with(
                        cluster_with(
                            "apiServer",
                            json!({"resources": {"requests": {"cpu": "1m", "invalid1": "23"}}}),
                        ),
                        "controllerManager",
                        json!({"resources": {"limits": {"memory": "1m", "invalid2": "23"}}}),
                    ),
                    "scheduler",
                    json!({"resources": {
                        "requests": {"cpu": "1m"},
                        "limits": {"invalid3": "23"},
                    }}),
                ),
            ),
            "3 errors occurred:\n\t* apiserver resource validation failed: unsupported pod resource \"invalid1\"\n\t* controller-manager resource validation failed: unsupported pod resource \"invalid2\"\n\t* scheduler resource validation failed: unsupported pod resource \"invalid3\"\n\n",
        ),
        case(
            "ControlPlaneInvalidAuthorizationConfig",
            config(
                controlplane(),
                cluster_with(
                    "apiServer",
                    json!({"authorizationConfig": [{"name": "foo"}]}),
                ),
            ),
            "1 error occurred:\n\t* apiserver authorization config validation failed: authorizer type must be set\n\n",
        ),
        case(
            "ControlPlaneAuthorizationConfigWithAuthorizationModeFlag",
            config(
                controlplane(),
                cluster_with(
                    "apiServer",
                    json!({"authorizationConfig": [], "extraArgs": {"authorization-mode": "Node"}}),
                ),
            ),
            "1 error occurred:\n\t* authorization-mode cannot be used in conjunction with AuthorizationConfig, use eitherr AuthorizationConfig or authorization-mode\n\n",
        ),
        case(
            "ControlPlaneAuthorizationConfigWithAuthorizationWebhook",
            config(
                controlplane(),
                cluster_with(
                    "apiServer",
                    json!({"authorizationConfig": [], "extraArgs": {"authorization-webhook-version": "v1"}}),
                ),
            ),
            "1 error occurred:\n\t* authorization-webhook-* flags cannot be used in conjunction with AuthorizationConfig, use either AuthorizationConfig or authorization-webhook-* flags\n\n",
        ),
        case(
            "MachineBaseRuntimeSpecOverrides",
            config(
                with(
                    controlplane(),
                    "baseRuntimeSpecOverrides",
                    json!({"process": {"rlimits": [
                        {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                    ]}}),
                ),
                cluster(),
            ),
            "",
        ),
        case(
            "MachineFeaturesInvalidAddressSortingAlgorithm",
            config(
                with(
                    controlplane(),
                    "features",
                    json!({"nodeAddressSortAlgorithm": "xyz"}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* invalid node address sort algorithm: xyz does not belong to AddressSortAlgorithm values\n\n",
        ),
    ]
}

/// `TestValidateCNI`: each `CNIConfig` as `cluster.network.cni` of a control plane
/// (the only machine type Config.Validate runs ValidateCNI for); "Nil" leaves
/// `cluster.network` out.
fn test_validate_cni() -> Vec<Case> {
    let cni = |name: &'static str, cni: Option<Value>, error: &'static str| {
        let cluster = match cni {
            None => cluster(),
            Some(cni) => cluster_with("network", json!({"cni": cni})),
        };
        case(name, config(controlplane(), cluster), error)
    };
    let urls = json!(["https://host.test/quick-install.yaml"]);
    vec![
        cni("Nil", None, ""),
        cni(
            "Empty",
            Some(json!({})),
            "1 error occurred:\n\t* cni name should be one of [\"flannel\", \"custom\", \"none\"]\n\n",
        ),
        cni("FlannelNoManifests", Some(json!({"name": "flannel"})), ""),
        cni(
            "FlannelManifests",
            Some(json!({"name": "flannel", "urls": urls})),
            "1 error occurred:\n\t* \"urls\" field should be empty for \"flannel\" CNI\n\n",
        ),
        cni(
            "FlannelExtraArgs",
            Some(json!({"name": "flannel", "flannel": {"extraArgs": ["--foo"]}})),
            "",
        ),
        warns(
            cni("CustomNoManifests", Some(json!({"name": "custom"})), ""),
            &[r#""urls" field should not be empty for "custom" CNI"#],
        ),
        cni(
            "CustomFlannelExtraArgs",
            Some(json!({"name": "custom", "urls": urls, "flannel": {"extraArgs": ["--foo"]}})),
            "1 error occurred:\n\t* \"flanneldExtraArgs\" field should be empty for \"custom\" CNI\n\n",
        ),
        cni(
            "CustomManifests",
            Some(json!({"name": "custom", "urls": urls})),
            "",
        ),
        cni("NoneNoManifests", Some(json!({"name": "none"})), ""),
        cni(
            "NoneManifests",
            Some(json!({"name": "none", "urls": urls})),
            "1 error occurred:\n\t* \"urls\" field should be empty for \"none\" CNI\n\n",
        ),
    ]
}

/// What go-multierror prints for `errs`; empty for none.
fn multierror(errs: &[String]) -> String {
    let items: String = errs.iter().map(|e| format!("\t* {e}\n")).collect();
    match errs.len() {
        0 => String::new(),
        1 => format!("1 error occurred:\n{items}\n"),
        n => format!("{n} errors occurred:\n{items}\n"),
    }
}

/// Our errors and warnings for a case, errors as Talos prints them.
fn run(c: &Case) -> (String, Vec<String>) {
    let mode = if c.requires_install {
        RuntimeMode::Metal
    } else {
        RuntimeMode::Cloud
    };
    let docs = [c.config.clone()];
    let (errors, warnings) = if c.strict {
        (validate_documents_strict(&docs, mode), Vec::new())
    } else {
        let v = validate_documents_with_warnings(&docs, mode);
        assert_eq!(
            v.errors,
            validate_documents_in(&docs, mode),
            "{}: errors differ with and without warnings",
            c.name
        );
        (v.errors, v.warnings)
    };
    let errors: Vec<String> = errors
        .into_iter()
        .map(|e| {
            e.strip_prefix("v1alpha1.Config: ")
                .map_or(e.clone(), str::to_string)
        })
        .collect();
    (multierror(&errors), warnings)
}

fn check(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let (errors, warnings) = run(c);
        let want_warnings: Vec<String> = c.warnings.iter().map(|w| (*w).to_string()).collect();
        if warnings != want_warnings {
            failures.push(format!(
                "{}: warnings {warnings:?}, Talos {want_warnings:?}",
                c.name
            ));
        }
        match KNOWN_DIFFERENCES.iter().find(|(n, _, _)| *n == c.name) {
            Some((_, why, ours)) => {
                assert_ne!(
                    errors, c.error,
                    "{} now matches Talos: drop it from KNOWN_DIFFERENCES ({why})",
                    c.name
                );
                if errors != *ours {
                    failures.push(format!(
                        "{}: known difference changed: {errors:?}, expected {ours:?}",
                        c.name
                    ));
                }
            }
            None if errors != c.error => {
                failures.push(format!(
                    "{}:\n  ours  {errors:?}\n  Talos {:?}",
                    c.name, c.error
                ));
            }
            None => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn talos_test_validate_cases() {
    check(test_validate());
}

#[test]
fn talos_test_validate_cni_cases() {
    check(test_validate_cni());
}

/// `TestRuntimeValidate`. A node runs `RuntimeValidate` only once `Validate` has
/// passed, and so do we: each Go config gets the CA a node needs to pass
/// `Validate` (the Go test calls `RuntimeValidate` alone). `VERSION` is the Talos
/// release whose rules these are.
fn test_runtime_validate() -> Vec<Case> {
    let cp = |images: Value, kubelet: &str| {
        let machine = with(controlplane(), "kubelet", json!({"image": kubelet}));
        let mut cluster = cluster();
        for (k, v) in images.as_object().unwrap() {
            cluster[k] = json!({"image": v});
        }
        config(machine, cluster)
    };
    let current = "ghcr.io/siderolabs/kubelet:v1.35.4";
    vec![
        case("valid", config(controlplane(), cluster()), ""),
        case(
            "old kubelet version",
            config(
                with(
                    worker(),
                    "kubelet",
                    json!({"image": "ghcr.io/siderolabs/kubelet:v1.24.0"}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* kubelet image is not valid: version of Kubernetes 1.24.0 is too old to be used with Talos 1.12.9\n\n",
        ),
        case(
            "old api-server version",
            cp(
                json!({"apiServer": "registry.k8s.io/kube-apiserver:v1.24.0"}),
                current,
            ),
            "1 error occurred:\n\t* kube-apiserver image is not valid: version of Kubernetes 1.24.0 is too old to be used with Talos 1.12.9\n\n",
        ),
        case(
            "old controller-manager and scheduler version",
            cp(
                json!({
                    "apiServer": "registry.k8s.io/kube-apiserver:v1.35.4",
                    "controllerManager": "registry.k8s.io/kube-controller-manager:v1.24.0",
                    "scheduler": "registry.k8s.io/kube-scheduler:v1.24.0",
                }),
                current,
            ),
            "2 errors occurred:\n\t* kube-controller-manager image is not valid: version of Kubernetes 1.24.0 is too old to be used with Talos 1.12.9\n\t* kube-scheduler image is not valid: version of Kubernetes 1.24.0 is too old to be used with Talos 1.12.9\n\n",
        ),
    ]
}

#[test]
fn talos_test_runtime_validate_cases() {
    check(test_runtime_validate());
}

/// Rules of v1alpha1_validation.go and the files it calls that Talos's tables
/// leave untested, each with the words Talos's code would print.
fn untested_rules() -> Vec<Case> {
    vec![
        case(
            "machine.disks null entry (Config.Validate)",
            config(with(worker(), "disks", json!([null])), cluster()),
            "1 error occurred:\n\t* machine.disks[0] is null\n\n",
        ),
        case(
            "full-disk partition not last (Config.Validate)",
            config(
                with(
                    worker(),
                    "disks",
                    json!([{"device": "/dev/sdb", "partitions": [
                        {"mountpoint": "/var/a"},
                        {"size": 100, "mountpoint": "/var/b"},
                    ]}]),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* partition for disk \"/dev/sdb\" is set to occupy full disk, but it's not the last partition in the list\n\n",
        ),
        case(
            "VIPs on a worker's device and VLAN (Config.Validate)",
            config(
                with(
                    worker(),
                    "network",
                    json!({"interfaces": [{
                        "interface": "eth0",
                        "addresses": ["192.168.1.20/24"],
                        "vip": {"ip": "192.168.1.210"},
                        "vlans": [{"vlanId": 5, "addresses": ["10.5.0.2/24"], "vip": {"ip": "10.5.0.1"}}],
                    }]}),
                ),
                cluster(),
            ),
            "2 errors occurred:\n\t* virtual (shared) IP is not allowed on non-controlplane nodes\n\t* virtual (shared) IP is not allowed on non-controlplane nodes\n\n",
        ),
        case(
            "null registries (Config.Validate)",
            config(
                with(
                    worker(),
                    "registries",
                    json!({"mirrors": {"docker.io": null}, "config": {"r.example": null}}),
                ),
                cluster(),
            ),
            "2 errors occurred:\n\t* registries.config[\"r.example\"] is null\n\t* registries.mirrors[\"docker.io\"] is null\n\n",
        ),
        case(
            "taints (labels.ValidateTaints)",
            config(
                with(
                    worker(),
                    "nodeTaints",
                    json!({"a": "NoFly", "b": "x:NoSchedule", "c": "bad value:NoExecute", "d": "NoSchedule"}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* invalid machine node taints: 2 errors occurred:\n\t* invalid taint effect: \"NoFly\"\n\t* label value \"bad value\" is invalid\n\n\n\n",
        ),
        case(
            "label values written as numbers (labels.Validate)",
            config(
                with(worker(), "nodeLabels", json!({"ok": 1, "bad": -1})),
                cluster(),
            ),
            "1 error occurred:\n\t* invalid machine node labels: 1 error occurred:\n\t* label value \"-1\" is invalid\n\n\n\n",
        ),
        case(
            "reserved annotation (labels.ValidateAnnotations)",
            config(
                with(
                    worker(),
                    "nodeAnnotations",
                    json!({"talos.dev/owned-labels": "[]", "example.com/ok": "anything at all"}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* invalid machine node annotations: 1 error occurred:\n\t* annotation \"talos.dev/owned-labels\" is reserved\n\n\n\n",
        ),
        case(
            "disk encryption keys (Config.Validate)",
            config(
                with(
                    worker(),
                    "systemDiskEncryption",
                    json!({
                        "state": {"provider": "luks2", "keys": []},
                        "ephemeral": {"provider": "luks2", "keys": [
                            {"slot": 0, "nodeID": {}},
                            {"slot": 0},
                        ]},
                    }),
                ),
                cluster(),
            ),
            "3 errors occurred:\n\t* partition \"EPHEMERAL\": encryption key slot 0 is already in use\n\t* partition \"EPHEMERAL\": encryption key at slot 0 doesn't have the configuration parameters\n\t* partition \"STATE\": no encryption keys provided\n\n",
        ),
        case(
            "logging destination (LoggingConfig.Validate)",
            config(
                with(
                    worker(),
                    "logging",
                    json!({"destinations": [{"endpoint": "http://", "format": "text"}]}),
                ),
                cluster(),
            ),
            "3 errors occurred:\n\t* empty logging endpoint's host\n\t* unexpected logging endpoint scheme \"http\"\n\t* unknown logging format \"text\"\n\n",
        ),
        metal(case(
            "disk selector on name (InstallConfig.DiskMatchExpression)",
            config(
                with(
                    worker(),
                    "install",
                    json!({"diskSelector": {"name": "sda"}}),
                ),
                cluster(),
            ),
            "2 errors occurred:\n\t* install disk selector is invalid: selector on name is not supported\n\t* either install disk or diskSelector should be defined\n\n",
        )),
        metal(case(
            "disk selector by type (InstallConfig.DiskMatchExpression)",
            config(
                with(
                    worker(),
                    "install",
                    json!({"diskSelector": {"type": "ssd"}}),
                ),
                cluster(),
            ),
            "",
        )),
        case(
            "base runtime spec of the wrong type (Config.Validate)",
            config(
                with(
                    worker(),
                    "baseRuntimeSpecOverrides",
                    json!({"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "hard": "many"}]}}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* failed to unmarshal base runtime spec overrides: json: cannot unmarshal string into Go struct field POSIXRlimit.process.rlimits.hard of type uint64\n\n",
        ),
        case(
            "etcd subnet with advertised subnets (EtcdConfig.Validate)",
            config(
                controlplane(),
                cluster_with(
                    "etcd",
                    json!({"ca": {}, "subnet": "10.0.0.0/8", "advertisedSubnets": ["10.0.0.0/8"]}),
                ),
            ),
            "1 error occurred:\n\t* etcd subnet can't be set when advertised subnets are set\n\n",
        ),
        case(
            "discovery endpoint with a path (ClusterDiscoveryConfig.Validate)",
            config(
                controlplane(),
                with(
                    with(
                        cluster_with(
                            "discovery",
                            json!({"enabled": true, "registries": {"service": {
                                "endpoint": "https://discovery.example.com/path",
                            }}}),
                        ),
                        "id",
                        json!("foo"),
                    ),
                    "secret",
                    json!("bar"),
                ),
            ),
            "1 error occurred:\n\t* cluster discovery service path should be empty\n\n",
        ),
        case(
            "endpoint scheme is not checked (siderolabs/net ValidateEndpointURI)",
            config(
                worker(),
                json!({"controlPlane": {"endpoint": "tcp://192.168.1.210:6443"}}),
            ),
            "",
        ),
        case(
            "endpoint port out of range (siderolabs/net ValidateEndpointURI)",
            config(
                worker(),
                json!({"controlPlane": {"endpoint": "https://192.168.1.210:0"}}),
            ),
            "1 error occurred:\n\t* invalid controlplane endpoint: port number must be between 1 and 65535\n\n",
        ),
        case(
            "unbracketed IPv6 endpoint (siderolabs/net ValidateEndpointURI)",
            config(
                worker(),
                json!({"controlPlane": {"endpoint": "https://fd00::1:6443"}}),
            ),
            "1 error occurred:\n\t* invalid controlplane endpoint: IPv6 addresses MUST be enclosed by square brackets\n\n",
        ),
        case(
            "custom CNI manifest URL without host (ValidateCNI)",
            config(
                controlplane(),
                cluster_with(
                    "network",
                    json!({"cni": {"name": "custom", "urls": ["/cni.yaml"]}}),
                ),
            ),
            "1 error occurred:\n\t* hostname must not be blank\n\n",
        ),
        case(
            "address sort algorithm in upper case (nethelpers enumer)",
            config(
                with(
                    controlplane(),
                    "features",
                    json!({"nodeAddressSortAlgorithm": "V2"}),
                ),
                cluster(),
            ),
            "",
        ),
        case(
            "kubelet image without a version tag (KubernetesVersionFromImageRef)",
            config(
                with(
                    worker(),
                    "kubelet",
                    json!({"image": "ghcr.io/siderolabs/kubelet:latest"}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* kubelet image is not valid: failed to parse Kubernetes version from image reference \"ghcr.io/siderolabs/kubelet:latest\": invalid image reference: \"ghcr.io/siderolabs/kubelet:latest\"\n\n",
        ),
        case(
            "kubelet image too new, tag with digest (SupportedWith)",
            config(
                with(
                    worker(),
                    "kubelet",
                    json!({"image": "ghcr.io/siderolabs/kubelet:v1.36.0@sha256:0123"}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* kubelet image is not valid: version of Kubernetes 1.36.0 is too new to be used with Talos 1.12.9\n\n",
        ),
        case(
            "runtime checks wait for Validate to pass (maintenance ApplyConfiguration)",
            config(
                with(
                    json!({"type": "worker"}),
                    "kubelet",
                    json!({"image": "ghcr.io/siderolabs/kubelet:v1.24.0"}),
                ),
                cluster(),
            ),
            "1 error occurred:\n\t* issuing CA or some accepted CAs are required (.machine.ca, machine.acceptedCAs)\n\n",
        ),
    ]
}

#[test]
fn rules_talos_tables_leave_untested() {
    check(untested_rules());
}
