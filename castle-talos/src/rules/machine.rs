//! The machine and cluster rules of Talos's v1alpha1 document
//! (pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go at v1.12.9 and the
//! files it calls), outside network devices and KubeSpan.
//!
//! Talos checks typed Go structs; these read the same fields out of the YAML, with
//! the getters' defaults (an absent `cni` is flannel, an absent discovery endpoint
//! is `https://discovery.talos.dev/`, an absent kubelet image is the default one).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{parse_prefix, str_at};

/// The Talos release whose rules these are; RuntimeValidate names it when it
/// refuses a Kubernetes version.
const TALOS_VERSION: &str = "1.12.9";

/// `constants.DefaultKubernetesVersion` at v1.12.9: the tag of every default
/// Kubernetes image.
const DEFAULT_KUBERNETES_VERSION: &str = "1.35.4";

/// pkg/machinery/compatibility/talos112: Kubernetes 1.30.0 up to (not including)
/// 1.35.99.
const MIN_KUBERNETES: (u64, u64, u64) = (1, 30, 0);
const MAX_KUBERNETES: (u64, u64, u64) = (1, 35, 99);

fn is_set(v: Option<&Value>) -> bool {
    v.is_some_and(|v| !v.is_null())
}

fn is_true(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr) == Some(&Value::Bool(true))
}

fn list<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn object<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    v.pointer(ptr).and_then(Value::as_object)
}

fn strings<'a>(v: &'a Value, ptr: &str) -> impl Iterator<Item = &'a str> {
    list(v, ptr).iter().map(|s| s.as_str().unwrap_or_default())
}

/// Go's `%q` of a string.
fn quote(s: &str) -> String {
    super::go_quote(s)
}

/// The text go-multierror prints for `errs` when it is nested inside another error.
fn multierror(errs: &[String]) -> String {
    let items: String = errs.iter().map(|e| format!("\t* {e}\n")).collect();
    match errs.len() {
        1 => format!("1 error occurred:\n{items}\n"),
        n => format!("{n} errors occurred:\n{items}\n"),
    }
}

/// `machine.ParseType` (pkg/machinery/config/machine/machine.go): what `Type()`
/// makes of `machine.type`; `None` is `TypeUnknown`.
pub(super) fn machine_type(raw: &str) -> Option<&'static str> {
    match raw {
        "init" => Some("init"),
        "controlplane" => Some("controlplane"),
        "worker" | "join" | "" => Some("worker"),
        _ => None,
    }
}

/// `Config.Validate`, metal mode: the install section (`DiskMatchExpression` in
/// v1alpha1_provider.go refuses a selector on `name` and an unknown `type`).
pub(super) fn install(install: &Value, e: &mut Vec<String>) {
    let mut matcher = false;
    if let Some(sel) = install.get("diskSelector").filter(|s| !s.is_null()) {
        let ty = str_at(sel, "/type");
        if !str_at(sel, "/name").is_empty() {
            e.push("install disk selector is invalid: selector on name is not supported".into());
        } else if !ty.is_empty() && !matches!(ty, "nvme" | "sd" | "hdd" | "ssd") {
            e.push(format!(
                "install disk selector is invalid: unsupported disk type {}",
                quote(ty)
            ));
        } else {
            matcher = true;
        }
    }
    if str_at(install, "/disk").is_empty() && !matcher {
        e.push("either install disk or diskSelector should be defined".into());
    }
    if !list(install, "/extraKernelArgs").is_empty() && is_true(install, "/grubUseUKICmdline") {
        e.push(
            "install.extraKernelArgs and install.grubUseUKICmdline can't be used together".into(),
        );
    }
}

/// `Config.Validate`: a machine type written other than as Talos names it.
pub(super) fn type_warning(raw: &str, w: &mut Vec<String>) {
    if let Some(t) = machine_type(raw).filter(|t| *t != raw) {
        w.push(format!(
            "use {} instead of {} for machine type",
            quote(t),
            quote(raw)
        ));
    }
}

/// `ValidateCNI`, given `cluster.network.cni` (`ClusterConfig.CNI` reads an absent
/// one as flannel).
pub(super) fn cni(c: &Value, e: &mut Vec<String>, w: &mut Vec<String>) {
    let Some(cni) = c.pointer("/cluster/network/cni").filter(|v| !v.is_null()) else {
        return;
    };
    let name = str_at(cni, "/name");
    let urls = list(cni, "/urls");
    let flannel_args = !list(cni, "/flannel/extraArgs").is_empty();
    match name {
        "flannel" | "none" | "custom" => {}
        _ => {
            e.push(r#"cni name should be one of ["flannel", "custom", "none"]"#.into());
            return;
        }
    }
    if name != "custom" && !urls.is_empty() {
        e.push(format!(
            r#""urls" field should be empty for {} CNI"#,
            quote(name)
        ));
    }
    if name == "custom" && urls.is_empty() {
        w.push(format!(
            r#""urls" field should not be empty for {} CNI"#,
            quote(name)
        ));
    }
    if name != "flannel" && flannel_args {
        e.push(format!(
            r#""flanneldExtraArgs" field should be empty for {} CNI"#,
            quote(name)
        ));
    }
    if name == "custom" {
        for u in urls {
            if let Err(why) = endpoint_uri(u.as_str().unwrap_or_default()) {
                e.push(why);
            }
        }
    }
}

/// The rules of `Config.Validate` between the network devices and KubeSpan:
/// `machine.disks`, the kubelet and system disk encryption.
pub(super) fn disks_kubelet_encryption(machine: &Value, e: &mut Vec<String>) {
    disks(machine, e);
    if let Some(kubelet) = machine.get("kubelet").filter(|k| !k.is_null()) {
        self::kubelet(kubelet, e);
    }
    encryption(machine, e);
}

/// What `Config.Validate` checks after KubeSpan: logging, extensions, node
/// metadata, features, `.persist`, the runtime spec and registries.
pub(super) fn rest(c: &Value, machine: &Value, cp: bool, e: &mut Vec<String>, w: &mut Vec<String>) {
    logging(machine, e);
    if let Some(install) = machine.get("install").filter(|i| !i.is_null()) {
        let mut seen = BTreeSet::new();
        for ext in list(install, "/extensions") {
            let image = str_at(ext, "/image");
            if !seen.insert(image) {
                e.push(format!("duplicate system extension {}", quote(image)));
            }
        }
        if !seen.is_empty() {
            w.push(".machine.install.extensions is deprecated, please see https://www.talos.dev/latest/talos-guides/install/boot-assets/".into());
        }
    }
    node_metadata(machine, e);
    if is_true(machine, "/features/kubernetesTalosAPIAccess/enabled") {
        if !cp {
            e.push(
                "feature Kubernetes Talos API Access can only be enabled on control plane machines"
                    .into(),
            );
        }
        const ROLES: &[&str] = &[
            "os:admin",
            "os:operator",
            "os:reader",
            "os:etcd:backup",
            "os:impersonator",
        ];
        for r in strings(machine, "/features/kubernetesTalosAPIAccess/allowedRoles") {
            if !ROLES.contains(&r) {
                e.push(format!(
                    "invalid role {} in allowed roles for Kubernetes Talos API Access",
                    quote(r)
                ));
            }
        }
    }
    // nethelpers' enumer accepts a name as written or in lower case.
    let sort = str_at(machine, "/features/nodeAddressSortAlgorithm");
    if !sort.is_empty() && !matches!(sort.to_ascii_lowercase().as_str(), "v1" | "v2") {
        e.push(format!(
            "invalid node address sort algorithm: {sort} does not belong to AddressSortAlgorithm values"
        ));
    }
    if c.get("persist") == Some(&Value::Bool(false)) {
        e.push(".persist should be enabled".into());
    }
    if let Some(spec) = object(machine, "/baseRuntimeSpecOverrides").filter(|o| !o.is_empty())
        && let Err(why) = oci::spec(spec)
    {
        e.push(format!(
            "failed to unmarshal base runtime spec overrides: {why}"
        ));
    }
    for section in ["config", "mirrors"] {
        if let Some(m) = object(machine, &format!("/registries/{section}")) {
            for (k, v) in m {
                if v.is_null() {
                    e.push(format!("registries.{section}[{}] is null", quote(k)));
                }
            }
        }
    }
}

/// `machine.disks`: null entries, and a partition without a size that is not last.
fn disks(machine: &Value, e: &mut Vec<String>) {
    for (i, disk) in list(machine, "/disks").iter().enumerate() {
        if disk.is_null() {
            e.push(format!("machine.disks[{i}] is null"));
            continue;
        }
        let parts = list(disk, "/partitions");
        for (j, p) in parts.iter().enumerate() {
            let size = p.get("size");
            let zero = size.is_none_or(|s| s.is_null() || s.as_u64() == Some(0) || s == "0");
            if zero && j != parts.len() - 1 {
                e.push(format!(
                    "partition for disk {} is set to occupy full disk, but it's not the last partition in the list",
                    quote(str_at(disk, "/device"))
                ));
            }
        }
    }
}

/// `KubeletConfig.Validate`: nodeIP subnets and the fields of `extraConfig` that
/// Talos sets itself (`kubelet.ProtectedConfigurationFields`).
fn kubelet(kubelet: &Value, e: &mut Vec<String>) {
    for cidr in strings(kubelet, "/nodeIP/validSubnets") {
        let cidr = cidr.strip_prefix('!').unwrap_or(cidr);
        if !is_subnet_or_address(cidr) {
            e.push(format!(
                "kubelet nodeIP subnet is not valid: {}",
                quote(cidr)
            ));
        }
    }
    const PROTECTED: &[&str] = &[
        "apiVersion",
        "authentication",
        "authorization",
        "cgroupRoot",
        "kind",
        "kubeletCgroups",
        "port",
        "protectKernelDefaults",
        "resolvConf",
        "rotateCertificates",
        "systemCgroups",
        "staticPodPath",
        "seccompDefault",
    ];
    if let Some(extra) = object(kubelet, "/extraConfig") {
        for field in PROTECTED.iter().filter(|f| extra.contains_key(**f)) {
            e.push(format!(
                "kubelet configuration field {} can't be overridden",
                quote(field)
            ));
        }
    }
}

/// `machine.systemDiskEncryption`: the ephemeral and state partitions' keys.
fn encryption(machine: &Value, e: &mut Vec<String>) {
    for label in ["EPHEMERAL", "STATE"] {
        let key = label.to_ascii_lowercase();
        let Some(cfg) = machine
            .pointer(&format!("/systemDiskEncryption/{key}"))
            .filter(|v| !v.is_null())
        else {
            continue;
        };
        let keys = list(cfg, "/keys");
        if keys.is_empty() {
            e.push(format!(
                "partition {}: no encryption keys provided",
                quote(label)
            ));
        }
        let mut slots = BTreeSet::new();
        for k in keys {
            let slot = k.get("slot").and_then(Value::as_i64).unwrap_or(0);
            if !slots.insert(slot) {
                e.push(format!(
                    "partition {}: encryption key slot {slot} is already in use",
                    quote(label)
                ));
            }
            if !["nodeID", "static", "kms", "tpm"]
                .iter()
                .any(|f| is_set(k.get(*f)))
            {
                e.push(format!(
                    "partition {}: encryption key at slot {slot} doesn't have the configuration parameters",
                    quote(label)
                ));
            }
        }
    }
}

/// `LoggingConfig.Validate` (v1alpha1_logging.go).
fn logging(machine: &Value, e: &mut Vec<String>) {
    for dest in list(machine, "/logging/destinations") {
        match dest.get("endpoint").and_then(Value::as_str) {
            None => e.push("empty logging endpoint".into()),
            Some(ep) => {
                // An endpoint that does not parse is refused when the config loads.
                if let Ok(u) = gourl::parse(ep) {
                    if u.host.is_empty() {
                        e.push("empty logging endpoint's host".into());
                    }
                    if u.scheme != "tcp" && u.scheme != "udp" {
                        e.push(format!(
                            "unexpected logging endpoint scheme {}",
                            quote(&u.scheme)
                        ));
                    }
                }
            }
        }
        let format = str_at(dest, "/format");
        if format != "json_lines" {
            e.push(format!("unknown logging format {}", quote(format)));
        }
    }
}

/// `labels.Validate`, `labels.ValidateAnnotations` and `labels.ValidateTaints`
/// (pkg/machinery/labels/validate.go), each over its keys in sorted order.
fn node_metadata(machine: &Value, e: &mut Vec<String>) {
    let sorted = |key: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = object(machine, &format!("/{key}"))
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect();
        v.sort();
        v
    };
    let mut errs = Vec::new();
    for (k, v) in sorted("nodeLabels") {
        errs.extend(qualified_name(&k).err());
        errs.extend(label_value(&v).err());
    }
    if !errs.is_empty() {
        e.push(format!(
            "invalid machine node labels: {}",
            multierror(&errs)
        ));
    }
    let mut errs = Vec::new();
    let mut size = 0;
    for (k, v) in sorted("nodeAnnotations") {
        errs.extend(qualified_name(&k).err());
        if matches!(
            k.as_str(),
            "talos.dev/owned-annotations" | "talos.dev/owned-labels" | "talos.dev/owned-taints"
        ) {
            errs.push(format!("annotation {} is reserved", quote(&k)));
        }
        size += k.len() + v.len();
    }
    if size > 256 * 1024 {
        errs.push(format!(
            "total annotation size exceeds limit of {} bytes",
            256 * 1024
        ));
    }
    if !errs.is_empty() {
        e.push(format!(
            "invalid machine node annotations: {}",
            multierror(&errs)
        ));
    }
    let mut errs = Vec::new();
    for (k, v) in sorted("nodeTaints") {
        if let Err(why) = qualified_name(&k) {
            errs.push(why);
            continue;
        }
        let (val, effect) = v.split_once(':').map_or(("", v.as_str()), |(a, b)| (a, b));
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            errs.push(format!("invalid taint effect: {}", quote(effect)));
            continue;
        }
        if v.contains(':') {
            errs.extend(label_value(val).err());
        }
    }
    if !errs.is_empty() {
        e.push(format!(
            "invalid machine node taints: {}",
            multierror(&errs)
        ));
    }
}

/// A YAML scalar as a Go `map[string]string` receives it: numbers and booleans
/// as their text.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// Kubernetes's qualified-name grammar `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name_body(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `ValidateDNS1123Subdomain`.
fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!(
            "domain name length exceeds limit of 253: {}",
            quote(s)
        ));
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "domain doesn't match required format: {}",
            quote(s)
        ))
    }
}

/// `ValidateQualifiedName`.
fn qualified_name(value: &str) -> Result<(), String> {
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err(format!("prefix cannot be empty: {}", quote(value)));
            }
            if let Err(why) = dns1123_subdomain(prefix) {
                return Err(format!("prefix {} is invalid: {why}", quote(prefix)));
            }
            *name
        }
        _ => {
            return Err(format!(
                "invalid format: too many slashes: {}",
                quote(value)
            ));
        }
    };
    if name.is_empty() {
        Err(format!("name cannot be empty: {}", quote(value)))
    } else if name.len() > 63 {
        Err(format!("name is too long: {} (limit is 63)", quote(value)))
    } else if !is_qualified_name_body(name) {
        Err(format!("name {} is invalid", quote(name)))
    } else {
        Ok(())
    }
}

/// `ValidateLabelValue`.
fn label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        Err(format!(
            "label value length exceeds limit of 63: {}",
            quote(value)
        ))
    } else if !value.is_empty() && !is_qualified_name_body(value) {
        Err(format!("label value {} is invalid", quote(value)))
    } else {
        Ok(())
    }
}

/// siderolabs/net `ParseSubnetOrAddress`: a prefix, or a bare address (IPv6 with
/// a zone allowed, as `netip.ParseAddr` does).
fn is_subnet_or_address(s: &str) -> bool {
    if parse_prefix(s).is_some() {
        return true;
    }
    let addr = match s.split_once('%') {
        Some((a, zone)) if !zone.is_empty() && a.contains(':') => a,
        Some(_) => return false,
        None => s,
    };
    addr.parse::<std::net::IpAddr>().is_ok()
}

/// siderolabs/net `ValidateEndpointURI`: what Go's `url.Parse` accepts, with a
/// host, IPv6 in brackets, and a port in 1..=65535. The scheme is not checked.
pub(super) fn endpoint_uri(ep: &str) -> Result<(), String> {
    let u = gourl::parse(ep)?;
    if u.host.matches(':').count() > 2 && (!u.host.contains('[') || !u.host.contains(']')) {
        return Err("IPv6 addresses MUST be enclosed by square brackets".into());
    }
    let (hostname, port) = u.host_port();
    if hostname.is_empty() {
        return Err("hostname must not be blank".into());
    }
    if !port.is_empty() {
        match port.parse::<i64>() {
            Err(_) => return Err("port number must be numeric".into()),
            Ok(p) if !(1..=65535).contains(&p) => {
                return Err("port number must be between 1 and 65535".into());
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// `ExternalCloudProviderConfig.Validate`.
pub(super) fn external_cloud_provider(ecp: &Value, e: &mut Vec<String>) {
    let manifests: Vec<&str> = strings(ecp, "/manifests").collect();
    if !is_true(ecp, "/enabled") && !manifests.is_empty() {
        e.push("external cloud provider is disabled, but manifests are provided".into());
        return;
    }
    for url in manifests {
        if let Err(why) = endpoint_uri(url) {
            e.push(format!(
                "invalid external cloud provider manifest url {}: {why}",
                quote(url)
            ));
        }
    }
}

/// `EtcdConfig.Validate`, with the getters' fallbacks: `AdvertisedSubnets` falls
/// back to `subnet`, `ListenSubnets` to the advertised subnets.
pub(super) fn etcd(etcd: &Value, e: &mut Vec<String>) {
    if !is_set(etcd.get("ca")) {
        e.push("key/cert combination should not be empty".into());
    }
    let subnet = str_at(etcd, "/subnet");
    let advertised: Vec<&str> = strings(etcd, "/advertisedSubnets").collect();
    if !subnet.is_empty() && !advertised.is_empty() {
        e.push("etcd subnet can't be set when advertised subnets are set".into());
    }
    let advertised = if advertised.is_empty() && !subnet.is_empty() {
        vec![subnet]
    } else {
        advertised
    };
    let listen: Vec<&str> = strings(etcd, "/listenSubnets").collect();
    let listen = if listen.is_empty() {
        strings(etcd, "/advertisedSubnets").collect()
    } else {
        listen
    };
    for (what, cidrs) in [("advertised", advertised), ("listen", listen)] {
        for cidr in cidrs {
            let cidr = cidr.strip_prefix('!').unwrap_or(cidr);
            if !is_subnet_or_address(cidr) {
                e.push(format!("etcd {what} subnet is not valid: {}", quote(cidr)));
            }
        }
    }
}

/// `ClusterInlineManifests.Validate`.
pub(super) fn inline_manifests(cluster: &Value, e: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for m in list(cluster, "/inlineManifests") {
        let name = str_at(m, "/name");
        if name.trim().is_empty() {
            e.push("inline manifest name can't be empty".into());
        }
        if !seen.insert(name) {
            e.push(format!("inline manifest name {} is duplicate", quote(name)));
        }
    }
}

/// `ClusterDiscoveryConfig.Validate`.
pub(super) fn discovery(cluster: &Value, e: &mut Vec<String>) {
    if !is_true(cluster, "/discovery/enabled")
        || is_true(cluster, "/discovery/registries/service/disabled")
    {
        return;
    }
    let endpoint = match str_at(cluster, "/discovery/registries/service/endpoint") {
        "" => "https://discovery.talos.dev/",
        ep => ep,
    };
    match gourl::parse_request_uri(endpoint) {
        Err(why) => e.push(format!(
            "cluster discovery service registry endpoint is invalid: {why}"
        )),
        Ok(u) if !u.path.is_empty() && u.path != "/" => {
            e.push("cluster discovery service path should be empty".into());
        }
        Ok(_) => {}
    }
    if str_at(cluster, "/id").is_empty() {
        e.push("cluster discovery service requires .cluster.id".into());
    }
    if str_at(cluster, "/secret").is_empty() {
        e.push("cluster discovery service requires .cluster.secret".into());
    }
}

/// `APIServerConfig.Validate`, `ControllerManagerConfig.Validate` and
/// `SchedulerConfig.Validate`: authorization config against the flags it replaces,
/// each authorizer, and pod resources (v1alpha1_apiserverconfig.go,
/// v1alpha1_authorizaationconfigauthorizer.go, v1alpha1_resourcesconfig.go). Each
/// component stops at its first problem, as Talos does.
pub(super) fn control_plane_components(cluster: &Value, e: &mut Vec<String>) {
    if let Some(api) = cluster.get("apiServer").filter(|v| !v.is_null())
        && let Err(why) = api_server(api)
    {
        e.push(why);
    }
    for (key, what) in [
        ("controllerManager", "controller-manager"),
        ("scheduler", "scheduler"),
    ] {
        if let Some(r) = cluster.pointer(&format!("/{key}/resources"))
            && let Err(why) = resources(r)
        {
            e.push(format!("{what} resource validation failed: {why}"));
        }
    }
}

fn api_server(api: &Value) -> Result<(), String> {
    if is_set(api.get("authorizationConfig")) {
        for k in object(api, "/extraArgs")
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if k == "authorization-mode" {
                return Err("authorization-mode cannot be used in conjunction with AuthorizationConfig, use eitherr AuthorizationConfig or authorization-mode".into());
            }
            if k.starts_with("authorization-webhook-") {
                return Err("authorization-webhook-* flags cannot be used in conjunction with AuthorizationConfig, use either AuthorizationConfig or authorization-webhook-* flags".into());
            }
        }
    }
    for a in list(api, "/authorizationConfig") {
        let ty = str_at(a, "/type");
        let why = if ty.is_empty() {
            "authorizer type must be set".to_string()
        } else if str_at(a, "/name").is_empty() {
            "authorizer name must be set".to_string()
        } else if !matches!(ty, "Node" | "RBAC" | "Webhook") {
            format!("authorizer type {ty} is not allowed, allowed types are [Node RBAC Webhook]")
        } else {
            continue;
        };
        return Err(format!(
            "apiserver authorization config validation failed: {why}"
        ));
    }
    if let Some(r) = api.get("resources") {
        resources(r).map_err(|why| format!("apiserver resource validation failed: {why}"))?;
    }
    Ok(())
}

/// `ResourcesConfig.Validate`: only `cpu` and `memory`, requests then limits.
fn resources(r: &Value) -> Result<(), String> {
    for part in ["requests", "limits"] {
        for key in object(r, &format!("/{part}"))
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if key != "cpu" && key != "memory" {
                return Err(format!("unsupported pod resource {}", quote(key)));
            }
        }
    }
    Ok(())
}

/// `Config.RuntimeValidate`, the checks that need no node state: the Kubernetes
/// version in the kubelet image, and on control planes in the apiserver,
/// controller-manager and scheduler images, must be one this Talos supports.
pub(super) fn runtime(c: &Value, e: &mut Vec<String>) {
    let Some(machine) = c.get("machine").filter(|m| !m.is_null()) else {
        return;
    };
    let image = |v: &Value, ptr: &str, default: &str| match str_at(v, ptr) {
        "" => format!("{default}:v{DEFAULT_KUBERNETES_VERSION}"),
        i => i.to_string(),
    };
    let kubelet = image(machine, "/kubelet/image", "ghcr.io/siderolabs/kubelet");
    if let Err(why) = kubernetes_image_tag(&kubelet) {
        e.push(format!("kubelet image is not valid: {why}"));
    }
    let cp = matches!(
        machine_type(str_at(machine, "/type")),
        Some("init" | "controlplane")
    );
    if !cp || !is_set(c.get("cluster")) {
        return;
    }
    for (name, ptr, default) in [
        (
            "kube-apiserver",
            "/cluster/apiServer/image",
            "registry.k8s.io/kube-apiserver",
        ),
        (
            "kube-controller-manager",
            "/cluster/controllerManager/image",
            "registry.k8s.io/kube-controller-manager",
        ),
        (
            "kube-scheduler",
            "/cluster/scheduler/image",
            "registry.k8s.io/kube-scheduler",
        ),
    ] {
        if let Err(why) = kubernetes_image_tag(&image(c, ptr, default)) {
            e.push(format!("{name} image is not valid: {why}"));
        }
    }
}

/// `ValidateKubernetesImageTag` and `KubernetesVersionFromImageRef`: the version is
/// what follows the last `:v`, up to a digest.
fn kubernetes_image_tag(image: &str) -> Result<(), String> {
    let parsed = match image.rfind(":v") {
        None => Err(format!("invalid image reference: {}", quote(image))),
        Some(i) => {
            let v = &image[i + 2..];
            semver::parse_tolerant(v.split('@').next().unwrap_or_default())
        }
    };
    let v = parsed.map_err(|why| {
        format!(
            "failed to parse Kubernetes version from image reference {}: {why}",
            quote(image)
        )
    })?;
    let core = (v.major, v.minor, v.patch);
    if core < MIN_KUBERNETES {
        return Err(format!(
            "version of Kubernetes {v} is too old to be used with Talos {TALOS_VERSION}"
        ));
    }
    if core >= MAX_KUBERNETES {
        return Err(format!(
            "version of Kubernetes {v} is too new to be used with Talos {TALOS_VERSION}"
        ));
    }
    Ok(())
}

/// blang/semver v4 `ParseTolerant` and `Parse`, enough to read a Kubernetes tag.
mod semver {
    pub(super) struct Version {
        pub major: u64,
        pub minor: u64,
        pub patch: u64,
        suffix: String,
    }

    impl std::fmt::Display for Version {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{}.{}.{}{}",
                self.major, self.minor, self.patch, self.suffix
            )
        }
    }

    pub(super) fn parse_tolerant(s: &str) -> Result<Version, String> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts: Vec<String> = s
            .splitn(3, '.')
            .map(|p| {
                if p.len() > 1 {
                    let t = p.trim_start_matches('0');
                    if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_digit()) {
                        format!("0{t}")
                    } else {
                        t.to_string()
                    }
                } else {
                    p.to_string()
                }
            })
            .collect();
        if parts.len() < 3 {
            if parts.last().is_some_and(|p| p.contains(['+', '-'])) {
                return Err("Short version cannot contain PreRelease/Build meta data".into());
            }
            parts.resize(3, "0".into());
        }
        parse(&parts.join("."))
    }

    fn number(s: &str, what: &str) -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("Invalid character(s) found in {what} number {s:?}"));
        }
        if s.len() > 1 && s.starts_with('0') {
            let mut w = what.chars();
            let cap: String = w
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(w)
                .collect();
            return Err(format!(
                "{cap} number must not contain leading zeroes {s:?}"
            ));
        }
        s.parse()
            .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
    }

    fn parse(s: &str) -> Result<Version, String> {
        if s.is_empty() {
            return Err("Version string empty".into());
        }
        let parts: Vec<&str> = s.splitn(3, '.').collect();
        let [major, minor, rest] = parts.as_slice() else {
            return Err("No Major.Minor.Patch elements found".into());
        };
        let cut = rest.find(['-', '+']).unwrap_or(rest.len());
        let (patch, suffix) = rest.split_at(cut);
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+');
        if !suffix.chars().all(ok) || suffix.len() == 1 {
            return Err(format!(
                "Invalid character(s) found in prerelease {suffix:?}"
            ));
        }
        Ok(Version {
            major: number(major, "major")?,
            minor: number(minor, "minor")?,
            patch: number(patch, "patch")?,
            suffix: suffix.to_string(),
        })
    }
}

/// Go's `net/url` parser (`url.Parse`, `url.ParseRequestURI`), as far as Talos's
/// checks look at it: scheme, authority, host and port, path. Errors read as Go's:
/// `parse "<url>": <why>`.
mod gourl {
    pub(super) struct Url {
        pub scheme: String,
        pub host: String,
        pub path: String,
    }

    impl Url {
        /// `URL.Hostname` and `URL.Port`.
        pub(super) fn host_port(&self) -> (&str, &str) {
            let mut host = self.host.as_str();
            let mut port = "";
            if let Some(i) = host.rfind(':')
                && valid_optional_port(&host[i..])
            {
                port = &host[i + 1..];
                host = &host[..i];
            }
            if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                host = inner;
            }
            (host, port)
        }
    }

    /// `url.Parse`: the fragment is cut off first.
    pub(super) fn parse(raw: &str) -> Result<Url, String> {
        let (u, frag) = raw.split_once('#').unwrap_or((raw, ""));
        let url = parse_inner(u, false).map_err(|why| format!("parse {u:?}: {why}"))?;
        unescape(frag, false).map_err(|why| format!("parse {raw:?}: {why}"))?;
        Ok(url)
    }

    /// `url.ParseRequestURI`: an absolute URI or an absolute path, no fragment.
    pub(super) fn parse_request_uri(raw: &str) -> Result<Url, String> {
        parse_inner(raw, true).map_err(|why| format!("parse {raw:?}: {why}"))
    }

    fn valid_optional_port(port: &str) -> bool {
        port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
    }

    fn scheme(raw: &str) -> Result<(&str, &str), String> {
        for (i, c) in raw.bytes().enumerate() {
            match c {
                b'a'..=b'z' | b'A'..=b'Z' => {}
                b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
                b':' if i == 0 => return Err("missing protocol scheme".into()),
                b':' => return Ok((&raw[..i], &raw[i + 1..])),
                _ => return Ok(("", raw)),
            }
        }
        Ok(("", raw))
    }

    fn parse_inner(raw: &str, via_request: bool) -> Result<Url, String> {
        if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err("net/url: invalid control character in URL".into());
        }
        if raw.is_empty() && via_request {
            return Err("empty url".into());
        }
        let mut url = Url {
            scheme: String::new(),
            host: String::new(),
            path: String::new(),
        };
        if raw == "*" {
            url.path = "*".into();
            return Ok(url);
        }
        let (scheme, rest) = scheme(raw)?;
        url.scheme = scheme.to_ascii_lowercase();
        let mut rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
            &rest[..rest.len() - 1]
        } else {
            rest.split_once('?').map_or(rest, |(r, _)| r)
        };
        if !rest.starts_with('/') {
            if !url.scheme.is_empty() {
                return Ok(url);
            }
            if via_request {
                return Err("invalid URI for request".into());
            }
            if rest.split('/').next().is_some_and(|s| s.contains(':')) {
                return Err("first path segment in URL cannot contain colon".into());
            }
        }
        if (!url.scheme.is_empty() || !via_request && !rest.starts_with("///"))
            && rest.starts_with("//")
        {
            let after = &rest[2..];
            let (authority, path) = after
                .find('/')
                .map_or((after, ""), |i| (&after[..i], &after[i..]));
            url.host = authority_host(authority)?;
            rest = path;
        }
        url.path = unescape(rest, false)?;
        Ok(url)
    }

    fn authority_host(authority: &str) -> Result<String, String> {
        let (user, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let host = parse_host(host)?;
        let user_ok = |c: char| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c);
        if user.is_some_and(|u| !u.chars().all(user_ok)) {
            return Err("net/url: invalid userinfo".into());
        }
        Ok(host)
    }

    fn parse_host(host: &str) -> Result<String, String> {
        let colon_port = if host.starts_with('[') {
            let Some(i) = host.rfind(']') else {
                return Err("missing ']' in host".into());
            };
            &host[i + 1..]
        } else {
            host.rfind(':').map_or("", |i| &host[i..])
        };
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {colon_port:?} after host"));
        }
        unescape(host, true)
    }

    /// `unescape` in encodeHost mode (`host`) or a path/fragment mode: `%` must
    /// start a hex escape, and a host admits only its own characters.
    fn unescape(s: &str, host: bool) -> Result<String, String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'%' {
                let esc: String = s.get(i..(i + 3).min(s.len())).unwrap_or("%").to_string();
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(format!("invalid URL escape {esc:?}"));
                };
                if host && hi < 8 && esc != "%25" {
                    return Err(format!("invalid URL escape {esc:?}"));
                }
                out.push(u8::try_from(hi * 16 + lo).unwrap_or_default());
                i += 3;
                continue;
            }
            if host && c < 0x80 && !host_char(c) {
                return Err(format!(
                    "invalid character {:?} in host name",
                    (c as char).to_string()
                ));
            }
            out.push(c);
            i += 1;
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn host_char(c: u8) -> bool {
        c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c)
    }
}

/// The OCI runtime spec (`specs.Spec` of opencontainers/runtime-spec) as Go's
/// `encoding/json` reads `baseRuntimeSpecOverrides` into it: unknown fields are
/// ignored, field names match case-insensitively, null is always accepted, and a
/// value of the wrong JSON kind is refused with the first such error. Checked to
/// the depth of the spec's top level and its `process`.
mod oci {
    use serde_json::{Map, Value};

    /// The Go type a field decodes into.
    enum Ty {
        Str,
        Bool,
        /// An integer Go type by name (`uint32`, `int`, ...).
        Int(&'static str),
        /// A struct by Go name, checked field by field.
        Struct(&'static str, &'static [(&'static str, Ty)]),
        /// A struct by Go name, not looked into.
        Opaque(&'static str),
        /// A slice of the element, by the slice's Go name.
        Slice(&'static str, &'static Ty),
        /// `map[string]string`.
        StrMap,
    }

    const RLIMIT: Ty = Ty::Struct(
        "POSIXRlimit",
        &[
            ("type", Ty::Str),
            ("hard", Ty::Int("uint64")),
            ("soft", Ty::Int("uint64")),
        ],
    );

    const PROCESS: Ty = Ty::Struct(
        "Process",
        &[
            ("terminal", Ty::Bool),
            ("consoleSize", Ty::Opaque("specs.Box")),
            ("user", Ty::Opaque("specs.User")),
            ("args", Ty::Slice("[]string", &Ty::Str)),
            ("commandLine", Ty::Str),
            ("env", Ty::Slice("[]string", &Ty::Str)),
            ("cwd", Ty::Str),
            ("capabilities", Ty::Opaque("specs.LinuxCapabilities")),
            ("rlimits", Ty::Slice("[]specs.POSIXRlimit", &RLIMIT)),
            ("noNewPrivileges", Ty::Bool),
            ("apparmorProfile", Ty::Str),
            ("oomScoreAdj", Ty::Int("int")),
            ("scheduler", Ty::Opaque("specs.Scheduler")),
            ("selinuxLabel", Ty::Str),
            ("ioPriority", Ty::Opaque("specs.LinuxIOPriority")),
            ("execCPUAffinity", Ty::Opaque("specs.CPUAffinity")),
        ],
    );

    const SPEC: &[(&str, Ty)] = &[
        ("ociVersion", Ty::Str),
        ("process", PROCESS),
        ("root", Ty::Opaque("specs.Root")),
        ("hostname", Ty::Str),
        ("domainname", Ty::Str),
        (
            "mounts",
            Ty::Slice("[]specs.Mount", &Ty::Opaque("specs.Mount")),
        ),
        ("hooks", Ty::Opaque("specs.Hooks")),
        ("annotations", Ty::StrMap),
        ("linux", Ty::Opaque("specs.Linux")),
        ("solaris", Ty::Opaque("specs.Solaris")),
        ("windows", Ty::Opaque("specs.Windows")),
        ("vm", Ty::Opaque("specs.VM")),
        ("zos", Ty::Opaque("specs.ZOS")),
    ];

    fn kind(v: &Value) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(_) => "bool".into(),
            Value::Number(n) => format!("number {n}"),
            Value::String(_) => "string".into(),
            Value::Array(_) => "array".into(),
            Value::Object(_) => "object".into(),
        }
    }

    fn go_name(ty: &Ty) -> String {
        match ty {
            Ty::Str => "string".into(),
            Ty::Bool => "bool".into(),
            Ty::Int(n) => (*n).into(),
            Ty::Struct(n, _) => format!("specs.{n}"),
            Ty::Opaque(n) | Ty::Slice(n, _) => (*n).into(),
            Ty::StrMap => "map[string]string".into(),
        }
    }

    fn int_fits(n: &serde_json::Number, ty: &str) -> bool {
        let (lo, hi): (i128, i128) = match ty {
            "uint64" => (0, i128::from(u64::MAX)),
            "uint32" => (0, i128::from(u32::MAX)),
            _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
        };
        let v = n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from));
        v.is_some_and(|v| (lo..=hi).contains(&v))
    }

    /// Checks `v` against `ty`; `owner` is the Go struct holding the field and
    /// `path` the JSON path to it, as Go's `UnmarshalTypeError` names them.
    fn check(v: &Value, ty: &Ty, owner: &str, path: &str) -> Result<(), String> {
        let wrong = || {
            Err(format!(
                "json: cannot unmarshal {} into Go struct field {owner}.{path} of type {}",
                match v {
                    Value::Number(_) => "number".to_string(),
                    _ => kind(v),
                },
                go_name(ty)
            ))
        };
        match (ty, v) {
            (_, Value::Null)
            | (Ty::Str, Value::String(_))
            | (Ty::Bool, Value::Bool(_))
            | (Ty::Opaque(_), Value::Object(_)) => Ok(()),
            (Ty::Int(name), Value::Number(n)) => {
                if int_fits(n, name) {
                    Ok(())
                } else {
                    Err(format!(
                        "json: cannot unmarshal {} into Go struct field {owner}.{path} of type {name}",
                        kind(v)
                    ))
                }
            }
            (Ty::Struct(name, fields), Value::Object(m)) => struct_fields(m, fields, name, path),
            (Ty::Slice(_, elem), Value::Array(items)) => {
                items.iter().try_for_each(|i| check(i, elem, owner, path))
            }
            (Ty::StrMap, Value::Object(m)) => {
                m.values().try_for_each(|s| check(s, &Ty::Str, owner, path))
            }
            _ => wrong(),
        }
    }

    fn struct_fields(
        m: &Map<String, Value>,
        fields: &[(&str, Ty)],
        owner: &str,
        path: &str,
    ) -> Result<(), String> {
        for (key, v) in m {
            let Some((name, ty)) = fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(key)) else {
                continue;
            };
            let p = if path.is_empty() {
                (*name).to_string()
            } else {
                format!("{path}.{name}")
            };
            check(v, ty, owner, &p)?;
        }
        Ok(())
    }

    /// The first error Go's `json.Unmarshal` into `specs.Spec` reports, if any.
    pub(super) fn spec(m: &Map<String, Value>) -> Result<(), String> {
        struct_fields(m, SPEC, "Spec", "")
    }
}
