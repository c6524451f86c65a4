//! Talos's own validation of a machine config, rule by rule, as a node runs it
//! before accepting a config (maintenance `ApplyConfiguration` answers
//! InvalidArgument "configuration validation failed: ..." when one fails).
//!
//! The JSON schema says what a document may look like; these are the rules Talos
//! holds in Go that a schema cannot express. Each rule names the Talos v1.12 source
//! file it comes from (`siderolabs/talos`, tag v1.12.11). Messages keep Talos's own
//! wording so a user can search for them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

mod machine;
mod network;

/// The runtime mode a node validates a config in: what its platform says it is
/// (`internal/app/machined/pkg/runtime/mode.go`). Validation asks two things of it:
/// whether an install section is required (`metal` only) and whether the node runs
/// in a container (HostDNS must then be on and forward kube-dns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeMode {
    /// A cloud platform, `nocloud` included (`platform/nocloud/nocloud.go` `Mode`):
    /// the VMs Castle clones from the nocloud image. The disk image is the
    /// installed system, so `machine.install` may be left out.
    Cloud,
    /// Talos in a container (`talosctl cluster create` with docker).
    Container,
    /// Bare metal, or a VM booted from the ISO: Talos installs itself to a disk,
    /// so the config must say which. The strictest mode, and the default here.
    #[default]
    Metal,
    /// `metal` booted as an agent (Omni's hardware inventory).
    MetalAgent,
}

impl RuntimeMode {
    /// `Mode.RequiresInstall`.
    pub fn requires_install(self) -> bool {
        self == Self::Metal
    }

    /// `Mode.InContainer`.
    pub fn in_container(self) -> bool {
        self == Self::Container
    }
}

impl std::fmt::Display for RuntimeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cloud => "cloud",
            Self::Container => "container",
            Self::Metal => "metal",
            Self::MetalAgent => "metal-agent",
        })
    }
}

/// What Talos would refuse in a config stream, validated in `metal` mode (the
/// strictest): every problem, in Talos's words. Empty means a node accepts it.
///
/// `docs` is the stream: the v1alpha1 document (no `kind`) and the typed documents.
pub fn validate_documents(docs: &[Value]) -> Vec<String> {
    validate_documents_in(docs, RuntimeMode::Metal)
}

/// [`validate_documents`] as a node in `mode` runs it.
pub fn validate_documents_in(docs: &[Value], mode: RuntimeMode) -> Vec<String> {
    validate_documents_with_warnings(docs, mode).errors
}

/// What a node says of a config stream: the problems that make it refuse the
/// config, and the warnings it accepts it with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// Why the node refuses the config; empty if it accepts it.
    pub errors: Vec<String>,
    /// What the node warns about while accepting it (`talosctl apply` prints these).
    pub warnings: Vec<String>,
}

/// [`validate_documents_in`] with Talos's warnings as well as its errors.
pub fn validate_documents_with_warnings(docs: &[Value], mode: RuntimeMode) -> Validation {
    validate(docs, mode, false)
}

/// [`validate_documents_in`] with Talos's strict option (`validation.WithStrict`,
/// `talosctl validate --strict`): the v1alpha1 document's warnings are errors too,
/// each as `warning: ...`.
pub fn validate_documents_strict(docs: &[Value], mode: RuntimeMode) -> Vec<String> {
    validate(docs, mode, true).errors
}

/// `Container.Validate`, then, if it passed, `Container.RuntimeValidate` (what the
/// maintenance `ApplyConfiguration` runs, in that order).
fn validate(docs: &[Value], mode: RuntimeMode, strict: bool) -> Validation {
    let mut errs = Vec::new();
    let mut warnings = Vec::new();
    container(docs, &mut errs);
    let main = docs.iter().find(|d| is_v1alpha1(d));
    if let Some(main) = main {
        v1alpha1(main, mode, strict, &mut errs, &mut warnings);
    }
    for d in docs.iter().filter(|d| !is_v1alpha1(d)) {
        let kind = str_at(d, "/kind");
        let id = doc_id(d);
        let mut doc_errs = Vec::new();
        match kind {
            "LinkConfig" => link_config(d, &mut doc_errs),
            "HostnameConfig" => hostname_config(d, &mut doc_errs),
            "Layer2VIPConfig" => layer2_vip(d, &mut doc_errs),
            "LinkAliasConfig" => link_alias(d, &mut doc_errs),
            "ExtensionServiceConfig" => extension_service(d, &mut doc_errs),
            _ => {}
        }
        errs.extend(doc_errs.into_iter().map(|e| format!("{id}: {e}")));
        if let Some(main) = main {
            conflicts(kind, d, main, &mut errs);
        }
    }
    if errs.is_empty()
        && let Some(main) = main
    {
        let mut e = Vec::new();
        machine::runtime(main, &mut e);
        errs.extend(e.into_iter().map(|m| format!("v1alpha1.Config: {m}")));
    }
    Validation {
        errors: errs,
        warnings,
    }
}

/// [`validate_documents`] over a YAML stream.
///
/// # Errors
/// The problems, the first one saying the stream does not parse if it does not.
pub fn validate_stream(text: &str) -> Result<(), Vec<String>> {
    validate_stream_in(text, RuntimeMode::Metal)
}

/// [`validate_stream`] as a node in `mode` runs it.
///
/// # Errors
/// The problems, the first one saying the stream does not parse if it does not.
pub fn validate_stream_in(text: &str, mode: RuntimeMode) -> Result<(), Vec<String>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| vec![format!("failed to parse config: {e}")])?;
    let errs = validate_documents_in(&docs, mode);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn is_v1alpha1(d: &Value) -> bool {
    d.get("kind").is_none()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn doc_id(d: &Value) -> String {
    let name = str_at(d, "/name");
    format!("{}/{name}", str_at(d, "/kind"))
}

/// pkg/machinery/config/container/container.go `New`: one v1alpha1 document, no
/// duplicate kind+name, and no two link documents of different kinds for one link.
fn container(docs: &[Value], errs: &mut Vec<String>) {
    const LINK_KINDS: &[&str] = &[
        "BondConfig",
        "BridgeConfig",
        "DummyLinkConfig",
        "LinkConfig",
        "VLANConfig",
        "WireguardConfig",
    ];
    if docs.iter().filter(|d| is_v1alpha1(d)).count() > 1 {
        errs.push("duplicate v1alpha1.Config".into());
    }
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    for d in docs.iter().filter(|d| !is_v1alpha1(d)) {
        let id = doc_id(d);
        if seen.insert(id.clone(), ()).is_some() {
            errs.push(format!("duplicate document: {id}"));
            continue;
        }
        let kind = str_at(d, "/kind");
        if LINK_KINDS.contains(&kind) {
            let name = str_at(d, "/name").to_string();
            if let Some(other) = links.get(&name).filter(|k| k.as_str() != kind) {
                errs.push(format!("conflicting documents: {other}/{name} and {id}"));
            } else {
                links.insert(name, kind.to_string());
            }
        }
    }
}

/// pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go `Config.Validate` and
/// `ClusterConfig.Validate`, in `mode`. Castle checks its own configs in `metal`
/// mode, the strictest; a VM cloned from the nocloud image runs in `cloud` mode,
/// where a config without `machine.install` is accepted. Castle's configs always
/// carry one, so they pass in either mode. The rules after the network devices
/// live in [`machine`].
fn v1alpha1(
    c: &Value,
    mode: RuntimeMode,
    strict: bool,
    errs: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let mut e = Vec::new();
    let mut w = Vec::new();
    let Some(machine) = c.get("machine").filter(|m| !m.is_null()) else {
        errs.push("v1alpha1.Config: machine instructions are required".into());
        return;
    };
    let raw_type = str_at(machine, "/type");
    let cp = matches!(
        machine::machine_type(raw_type),
        Some("init" | "controlplane")
    );
    cluster(c, cp, &mut e);
    // Only metal mode requires an install section (RuntimeMode.RequiresInstall),
    // and only then is it checked.
    if mode.requires_install() {
        match machine.get("install").filter(|i| !i.is_null()) {
            None => e.push(format!(
                "install instructions are required in {:?} mode",
                mode.to_string()
            )),
            Some(i) => machine::install(i, &mut e),
        }
    }
    if mode.in_container() {
        // Container DNS passes through to kube-dns only with HostDNS on.
        if machine.pointer("/features/hostDNS/enabled") != Some(&Value::Bool(true)) {
            e.push("feature HostDNS should be enabled in container mode (.machine.features.hostDNS.enabled)".into());
        }
        if machine.pointer("/features/hostDNS/forwardKubeDNSToHost") != Some(&Value::Bool(true)) {
            e.push("feature HostDNS should forward kube-dns to host in container mode (.machine.features.hostDNS.forwardKubeDNSToHost)".into());
        }
    }
    machine::type_warning(raw_type, &mut w);
    let ca_crt = str_at(machine, "/ca/crt");
    let ca_key = str_at(machine, "/ca/key");
    let has_ca = machine.get("ca").is_some_and(|v| !v.is_null());
    let accepted = machine
        .get("acceptedCAs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_ca && !accepted {
        e.push(
            "issuing CA or some accepted CAs are required (.machine.ca, machine.acceptedCAs)"
                .into(),
        );
    }
    match machine::machine_type(raw_type) {
        Some("init" | "controlplane") => {
            machine::cni(c, &mut e, &mut w);
            if !has_ca {
                e.push("issuing CA is required (.machine.ca)".into());
            } else if ca_key.is_empty() {
                e.push(
                    "issuing CA key is required for controlplane nodes (.machine.ca.key)".into(),
                );
            }
        }
        Some(_) => {
            // One refusal per device, and per VLAN, that carries a VIP.
            let has_vip = |d: &Value| d.get("vip").is_some_and(|v| !v.is_null());
            for d in interfaces(machine) {
                let vlans = d
                    .get("vlans")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten();
                let vips = usize::from(has_vip(d)) + vlans.filter(|v| has_vip(v)).count();
                for _ in 0..vips {
                    e.push("virtual (shared) IP is not allowed on non-controlplane nodes".into());
                }
            }
            if has_ca {
                if !ca_key.is_empty() {
                    e.push("issuing Talos API CA key is not allowed on non-controlplane nodes (.machine.ca)".into());
                }
                if ca_crt.is_empty() && !accepted {
                    e.push("trusted CA certificates are required on non-controlplane nodes (.machine.ca.crt, .machine.acceptedCAs)".into());
                }
            }
            if !str_at(c, "/cluster/ca/key").is_empty() {
                e.push("issuing Kubernetes API CA key is not allowed on non-controlplane nodes (.cluster.ca)".into());
            }
        }
        None => e.push(format!("unknown machine type {raw_type:?}")),
    }
    // In Config.Validate's order: network devices, disks, kubelet, encryption,
    // KubeSpan, then the rest.
    network::devices(machine, &mut e);
    machine::disks_kubelet_encryption(machine, &mut e);
    network::kubespan(c, &mut e);
    machine::rest(c, machine, cp, &mut e, &mut w);
    if strict {
        e.extend(w.drain(..).map(|w| format!("warning: {w}")));
    }
    warnings.extend(w);
    errs.extend(e.into_iter().map(|m| format!("v1alpha1.Config: {m}")));
}

fn interfaces(machine: &Value) -> impl Iterator<Item = &Value> {
    machine
        .pointer("/network/interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `ClusterConfig.Validate` (same file).
fn cluster(c: &Value, cp: bool, e: &mut Vec<String>) {
    let Some(cluster) = c.get("cluster").filter(|v| !v.is_null()) else {
        e.push("cluster instructions are required".into());
        return;
    };
    let endpoint = str_at(cluster, "/controlPlane/endpoint");
    if endpoint.is_empty() {
        e.push("cluster controlplane endpoint is required".into());
        return;
    }
    if let Err(why) = machine::endpoint_uri(endpoint) {
        e.push(format!("invalid controlplane endpoint: {why}"));
    }
    let domain = str_at(cluster, "/network/dnsDomain");
    if !domain.is_empty() && !is_dns_name(domain) {
        e.push(format!("{domain:?} is not a valid DNS name"));
    }
    if let Some(ecp) = cluster
        .get("externalCloudProvider")
        .filter(|v| !v.is_null())
    {
        machine::external_cloud_provider(ecp, e);
    }
    if let Some(etcd) = cluster.get("etcd").filter(|v| !v.is_null()) {
        if cp {
            machine::etcd(etcd, e);
        } else {
            e.push("etcd config is only allowed on control plane machines".into());
        }
    }
    if !cp && !str_at(cluster, "/ca/key").is_empty() {
        e.push("cluster CA key is not allowed on non-controlplane nodes (.cluster.ca)".into());
    }
    machine::inline_manifests(cluster, e);
    machine::discovery(cluster, e);
    machine::control_plane_components(cluster, e);
}

/// `isValidDNSName` in v1alpha1_validation.go: labels of `[a-zA-Z0-9_-]` that start
/// with a letter, digit or `_`, at most 63 long, at most 255 characters in all.
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() - name.matches('.').count() > 255 {
        return false;
    }
    let body = name.strip_suffix(['.', '_']).unwrap_or(name);
    !body.is_empty()
        && body.split('.').all(|label| {
            let mut chars = label.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && label.len() <= 63
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Go's `netip.ParsePrefix`: `addr/bits`, bits within the family, no zone. The
/// address is returned as written (Talos does not mask it).
pub(crate) fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = s.split_once('/')?;
    if addr.contains('%') || bits.is_empty() || (bits.len() > 1 && bits.starts_with('0')) {
        return None;
    }
    let addr: IpAddr = addr.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

/// pkg/machinery/config/types/network/link.go `LinkConfigV1Alpha1.Validate` and
/// `CommonLinkConfig.Validate`. A default route leaves `destination` out:
/// `0.0.0.0/0` is a valid prefix whose address is unspecified, and refused.
fn link_config(d: &Value, e: &mut Vec<String>) {
    if str_at(d, "/name").is_empty() {
        e.push("name must be specified".into());
    }
    let list = |k: &str| {
        d.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (i, a) in list("addresses").iter().enumerate() {
        let text = str_at(a, "/address");
        match parse_prefix(text) {
            _ if text.is_empty() => e.push(format!("address {i} must be specified")),
            None => e.push(format!("address {i} must be a valid IP prefix")),
            Some((ip, _)) if ip.is_unspecified() => {
                e.push(format!("address {i} must be a valid IP address"));
            }
            Some(_) => {}
        }
    }
    for (i, r) in list("routes").iter().enumerate() {
        let dest = str_at(r, "/destination");
        if !dest.is_empty() && parse_prefix(dest).is_none_or(|(ip, _)| ip.is_unspecified()) {
            e.push(format!("route {i} destination must be a valid IP prefix"));
        }
        for (key, what) in [("gateway", "gateway"), ("source", "source")] {
            let v = str_at(r, &format!("/{key}"));
            if !v.is_empty()
                && v.parse::<IpAddr>()
                    .ok()
                    .is_none_or(|ip| ip.is_unspecified())
            {
                e.push(format!("route {i} {what} must be a valid IP address"));
            }
        }
    }
}

/// pkg/machinery/config/types/network/hostname.go `HostnameConfigV1Alpha1.Validate`.
fn hostname_config(d: &Value, e: &mut Vec<String>) {
    let auto = d.get("auto").and_then(Value::as_str);
    let hostname = str_at(d, "/hostname");
    if auto.is_none() && hostname.is_empty() {
        e.push("either 'auto' or 'hostname' must be set".into());
    }
    // An absent `auto` reads as its zero value, `off` (nethelpers' enum order).
    if auto.is_some_and(|a| a != "off") && !hostname.is_empty() {
        e.push("'auto' and 'hostname' cannot be set at the same time".into());
    }
    match auto {
        None | Some("off" | "stable") => {}
        Some(other) => e.push(format!("invalid value for 'auto': {other}")),
    }
    if !hostname.is_empty() {
        if hostname.len() > 253 {
            e.push(format!("fqdn is too long: {}", hostname.len()));
        }
        let short = hostname.split('.').next().unwrap_or_default();
        if short.is_empty() || short.len() > 63 {
            e.push(format!("invalid hostname {short:?}"));
        }
    }
}

/// pkg/machinery/config/types/network/layer2_vip.go `Layer2VIPConfigV1Alpha1.Validate`:
/// the document's name is the shared address.
fn layer2_vip(d: &Value, e: &mut Vec<String>) {
    let name = str_at(d, "/name");
    if name.is_empty() {
        e.push("name must be specified".into());
    } else if name.parse::<IpAddr>().is_err() {
        e.push(format!(
            "name must be a valid IP address: ParseAddr({name:?}): unable to parse IP"
        ));
    }
    if str_at(d, "/link").is_empty() {
        e.push("link must be specified".into());
    }
}

/// pkg/machinery/config/types/network/link_alias.go `LinkAliasConfigV1Alpha1.Validate`.
/// Talos compiles the selector as CEL; this checks the one form Castle writes
/// (`mac(link.permanent_addr) == "..."`) strictly and any other only for presence.
fn link_alias(d: &Value, e: &mut Vec<String>) {
    if str_at(d, "/name").is_empty() {
        e.push("name must be specified".into());
    }
    let expr = str_at(d, "/selector/match").trim();
    if expr.is_empty() {
        e.push("link selector is required".into());
    } else if let Some(rest) = expr.strip_prefix("mac(link.permanent_addr) == ") {
        let mac = rest.trim_matches('"');
        if !(rest.starts_with('"') && rest.ends_with('"') && is_mac(mac)) {
            e.push(format!(
                "link selector is invalid: {rest} is not a quoted hardware address"
            ));
        }
    }
}

/// A colon-separated 48-bit hardware address, as Talos prints `permanent_addr`
/// (lowercase hex).
pub(crate) fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| {
            p.len() == 2
                && p.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
}

/// pkg/machinery/config/types/runtime/extensions/service_config.go `Validate`.
fn extension_service(d: &Value, e: &mut Vec<String>) {
    let name = str_at(d, "/name");
    if name.is_empty() {
        e.push("name is required".into());
        return;
    }
    let files = d
        .get("configFiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let env = d
        .get("environment")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if files.is_empty() && env == 0 {
        e.push(format!("no config files found for extension {name:?}"));
        return;
    }
    for f in &files {
        if str_at(f, "/content").is_empty() {
            e.push(format!(
                "extension content is required for extension {name:?}"
            ));
        }
        if str_at(f, "/mountPath").is_empty() {
            e.push(format!(
                "extension mount path is required for extension {name:?}"
            ));
        }
    }
}

/// `V1Alpha1ConflictValidate` of network/hostname.go and network/resolver.go: the
/// new-style documents refuse to restate what the v1alpha1 document already says.
fn conflicts(kind: &str, _doc: &Value, main: &Value, errs: &mut Vec<String>) {
    let set = |ptr: &str| {
        main.pointer(ptr).is_some_and(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        })
    };
    match kind {
        "HostnameConfig" => {
            if set("/machine/network/hostname") {
                errs.push("static hostname is already set in v1alpha1 config".into());
            } else if main.pointer("/machine/features/stableHostname") == Some(&Value::Bool(true)) {
                errs.push("stable hostname is already set in v1alpha1 config".into());
            }
        }
        "ResolverConfig" => {
            if set("/machine/network/searchDomains") {
                errs.push(
                    ".machine.network.searchDomains is already set in v1alpha1 config".into(),
                );
            } else if set("/machine/network/nameservers") {
                errs.push(".machine.network.nameservers is already set in v1alpha1 config".into());
            } else if set("/machine/network/disableSearchDomain") {
                errs.push(
                    ".machine.network.disableSearchDomain is already set in v1alpha1 config".into(),
                );
            }
        }
        _ => {}
    }
}

/// Go's `%q` of a string: double-quoted, with Go's escapes for quotes,
/// backslashes and control characters.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
