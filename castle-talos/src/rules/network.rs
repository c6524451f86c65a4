//! The legacy network section of the v1alpha1 document (`machine.network`):
//! interfaces with their bonds, bridges, VLANs, WireGuard, addresses and routes,
//! and KubeSpan. Ported from
//! pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (`Config.Validate`,
//! `ValidateNetworkDevices` and the checks it runs), siderolabs/talos v1.12.9.
//!
//! Talos parses with Go's `net` and `net/netip` and decodes keys with
//! `encoding/base64`; the helpers at the end accept and refuse what those do, so a
//! value Talos accepts is never refused here.

use std::net::IpAddr;

use serde_json::Value;

use super::{go_quote, parse_prefix, str_at};

/// `ErrMutuallyExclusive`.
const MUTUALLY_EXCLUSIVE: &str = "config sections are mutually exclusive";
/// `constants.KubeSpanLinkMTU`, the MTU when none is set.
const KUBESPAN_DEFAULT_MTU: u64 = 1420;
/// `constants.KubeSpanLinkMinimumMTU`.
const KUBESPAN_MINIMUM_MTU: u64 = 1280;

/// The `if c.MachineConfig.MachineNetwork != nil` block of `Config.Validate`: the
/// links bonds and bridges claim, each device's checks (`ValidateNetworkDevices`
/// with `CheckDeviceInterface`, `CheckDeviceAddressing`, `CheckDeviceRoutes`), and
/// the KubeSpan MTU.
pub(super) fn devices(machine: &Value, e: &mut Vec<String>) {
    let Some(network) = present(machine, "network") else {
        return;
    };
    let devices = list(network, "interfaces");
    // Each bonded or bridged link, and the device that claims it.
    let mut secondary: Vec<(&str, &str)> = Vec::new();
    for d in devices.iter().filter(|d| d.is_object()) {
        let name = str_at(d, "/interface");
        let bond = present(d, "bond");
        let bridge = present(d, "bridge");
        if bond.is_some() && bridge.is_some() {
            e.push(format!(
                "interface has both bridge and bond sections set {}: {MUTUALLY_EXCLUSIVE}",
                go_quote(name)
            ));
        }
        let mut mine = Vec::new();
        if let Some(bond) = bond {
            mine = strings(bond, "interfaces");
            if !mine.is_empty() && !list(bond, "deviceSelectors").is_empty() {
                e.push(format!(
                    "interface {} has both interfaces and selectors set: {MUTUALLY_EXCLUSIVE}",
                    go_quote(name)
                ));
            }
        }
        if let Some(bridge) = bridge {
            mine = strings(bridge, "interfaces");
        }
        for link in mine {
            match secondary.iter_mut().find(|(l, _)| *l == link) {
                Some((_, owner)) => {
                    if *owner != name {
                        e.push(format!(
                            "interface {} is declared as part of two separate links: {} and {}",
                            go_quote(link),
                            go_quote(owner),
                            go_quote(name)
                        ));
                    }
                    *owner = name;
                }
                None => secondary.push((link, name)),
            }
        }
    }
    for d in devices {
        if d.is_null() {
            e.push("empty device".into());
        } else if !flag(d, "ignore") {
            device_interface(d, e);
            device_addressing(d, &secondary, e);
            device_routes(d, e);
        }
    }
    if let Some(kubespan) = present(network, "kubespan").filter(|k| flag(k, "enabled")) {
        let mtu = match number(kubespan, "mtu") {
            0 => KUBESPAN_DEFAULT_MTU,
            mtu => mtu,
        };
        if mtu < KUBESPAN_MINIMUM_MTU {
            e.push(format!(
                "kubespan link MTU must be at least {KUBESPAN_MINIMUM_MTU}"
            ));
        }
    }
}

/// The `if c.Machine().Network().KubeSpan().Enabled()` block of `Config.Validate`:
/// KubeSpan needs discovery, a cluster id and secret, and filters that parse.
pub(super) fn kubespan(c: &Value, e: &mut Vec<String>) {
    let Some(kubespan) = c
        .pointer("/machine/network/kubespan")
        .filter(|k| flag(k, "enabled"))
    else {
        return;
    };
    let cluster = present(c, "cluster").unwrap_or(&Value::Null);
    if !present(cluster, "discovery").is_some_and(|d| flag(d, "enabled")) {
        e.push(
            ".cluster.discovery should be enabled when .machine.network.kubespan is enabled".into(),
        );
    }
    if str_at(cluster, "/id").is_empty() {
        e.push(".cluster.id should be set when .machine.network.kubespan is enabled".into());
    }
    if str_at(cluster, "/secret").is_empty() {
        e.push(".cluster.secret should be set when .machine.network.kubespan is enabled".into());
    }
    let filters = present(kubespan, "filters").unwrap_or(&Value::Null);
    for cidr in strings(filters, "endpoints") {
        let cidr = cidr.strip_prefix('!').unwrap_or(cidr);
        if !is_subnet_or_address(cidr) {
            e.push(format!(
                "KubeSpan endpoint filter is not valid: {}",
                go_quote(cidr)
            ));
        }
    }
    for cidr in strings(filters, "excludeAdvertisedNetworks") {
        if go_parse_prefix(cidr).is_none() {
            e.push(format!(
                "KubeSpan exclude advertised networks filter is not valid: {}",
                go_quote(cidr)
            ));
        }
    }
}

/// `CheckDeviceInterface`: a device names its link or selects it (not both, and
/// not with an empty selector), then its bond, WireGuard and VLANs.
fn device_interface(d: &Value, e: &mut Vec<String>) {
    const PAIR: &str = "[networking.os.device.interface], [networking.os.device.deviceSelector]";
    let selector = present(d, "deviceSelector");
    let name = str_at(d, "/interface");
    if name.is_empty() && selector.is_none() {
        e.push(format!("{PAIR}: required either config section to be set"));
    } else if !name.is_empty() && selector.is_some() {
        e.push(format!("{PAIR}: {MUTUALLY_EXCLUSIVE}"));
    }
    if selector.is_some_and(is_zero) {
        e.push(
            "[networking.os.device.deviceSelector]: config section should contain at least one field"
                .into(),
        );
    }
    if let Some(bond) = present(d, "bond") {
        check_bond(bond, e);
    }
    if let Some(wireguard) = present(d, "wireguard") {
        check_wireguard(wireguard, e);
    }
    if present(d, "vlans").is_some() {
        check_vlans(d, e);
    }
}

/// Linux bonding modes (`nethelpers.BondMode`), by the names Talos parses and prints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BondMode {
    RoundRobin,
    ActiveBackup,
    Xor,
    Broadcast,
    Lacp,
    Tlb,
    Alb,
}

impl BondMode {
    /// `nethelpers.BondModeByName`: empty is round-robin.
    fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "" | "balance-rr" => Self::RoundRobin,
            "active-backup" => Self::ActiveBackup,
            "balance-xor" => Self::Xor,
            "broadcast" => Self::Broadcast,
            "802.3ad" => Self::Lacp,
            "balance-tlb" => Self::Tlb,
            "balance-alb" => Self::Alb,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "balance-rr",
            Self::ActiveBackup => "active-backup",
            Self::Xor => "balance-xor",
            Self::Broadcast => "broadcast",
            Self::Lacp => "802.3ad",
            Self::Tlb => "balance-tlb",
            Self::Alb => "balance-alb",
        }
    }
}

/// `checkBond`: every named option parses (the `nethelpers.*ByName` tables) and
/// fits the mode. An unknown mode is reported, then checked as round-robin (Go's
/// zero value).
fn check_bond(b: &Value, e: &mut Vec<String>) {
    let mode_name = str_at(b, "/mode");
    let mode = BondMode::by_name(mode_name).unwrap_or_else(|| {
        e.push(format!("invalid bond type {mode_name}"));
        BondMode::RoundRobin
    });
    let enums: [(&str, &[&str], &str); 7] = [
        (
            "/xmitHashPolicy",
            &["layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4"],
            "invalid xmit hash policy",
        ),
        ("/lacpRate", &["slow", "fast"], "invalid lacp rate"),
        (
            "/arpValidate",
            &[
                "none",
                "active",
                "backup",
                "all",
                "filter",
                "filter-active",
                "filter-backup",
            ],
            "invalid arp_validate mode",
        ),
        (
            "/arpAllTargets",
            &["any", "all"],
            "invalid arp_all_targets mode",
        ),
        (
            "/primaryReselect",
            &["always", "better", "failure"],
            "invalid primary_reselect mode",
        ),
        (
            "/failOverMac",
            &["none", "active", "follow"],
            "invalid fail_over_mac value",
        ),
        (
            "/adSelect",
            &["stable", "bandwidth", "count"],
            "invalid ad_select mode",
        ),
    ];
    for (key, names, what) in enums {
        let v = str_at(b, key);
        if !v.is_empty() && !names.contains(&v) {
            e.push(format!("{what} {v}"));
        }
    }
    let miimon = number(b, "miimon");
    let (up, down) = (number(b, "updelay"), number(b, "downdelay"));
    if miimon == 0 {
        if up != 0 {
            e.push("bond.upDelay can't be set if miiMon is zero".into());
        }
        if down != 0 {
            e.push("bond.downDelay can't be set if miiMon is zero".into());
        }
    } else {
        if up % miimon != 0 {
            e.push("bond.upDelay should be a multiple of miiMon".into());
        }
        if down % miimon != 0 {
            e.push("bond.downDelay should be a multiple of miiMon".into());
        }
    }
    if !list(b, "arpIPTarget").is_empty() {
        e.push("bond.arpIPTarget is not supported".into());
    }
    if !str_at(b, "/lacpRate").is_empty() && mode != BondMode::Lacp {
        e.push("bond.lacpRate is only available in 802.3ad mode".into());
    }
    if !str_at(b, "/adActorSystem").is_empty() {
        e.push("bond.adActorSystem is not supported".into());
    }
    let lacp_or_lb = matches!(mode, BondMode::Lacp | BondMode::Alb | BondMode::Tlb);
    let lb = matches!(mode, BondMode::Alb | BondMode::Tlb);
    let has_primary = lb || mode == BondMode::ActiveBackup;
    let name = mode.name();
    if lacp_or_lb && !str_at(b, "/arpValidate").is_empty() {
        e.push(format!("bond.arpValidate is not available in {name} mode"));
    }
    if !has_primary && !str_at(b, "/primary").is_empty() {
        e.push(format!("bond.primary is not available in {name} mode"));
    }
    if lacp_or_lb && number(b, "arpInterval") > 0 {
        e.push(format!("bond.arpInterval is not available in {name} mode"));
    }
    if mode != BondMode::RoundRobin && number(b, "packetsPerSlave") > 1 {
        e.push(format!(
            "bond.packetsPerSlave is not available in {name} mode"
        ));
    }
    if !lb && number(b, "tlbDynamicLb") > 0 {
        e.push(format!(
            "bond.tlbDynamicTLB is not available in {name} mode"
        ));
    }
    if mode != BondMode::Lacp && number(b, "adActorSysPrio") > 0 {
        e.push("bond.adActorSysPrio is only available in 802.3ad mode".into());
    }
    if mode != BondMode::Lacp && number(b, "adUserPortKey") > 0 {
        e.push("bond.adUserPortKey is only available in 802.3ad mode".into());
    }
}

/// `checkWireguard`: keys are 32 bytes of standard base64, a peer's endpoint has a
/// port, its allowed IPs are CIDRs. A missing private key is an empty one.
fn check_wireguard(w: &Value, e: &mut Vec<String>) {
    if let Err(why) = wireguard_key(str_at(w, "/privateKey")) {
        e.push(format!("private key is invalid: {why}"));
    }
    for peer in list(w, "peers") {
        if let Err(why) = wireguard_key(str_at(peer, "/publicKey")) {
            e.push(format!("public key invalid: {why}"));
        }
        let endpoint = str_at(peer, "/endpoint");
        if !endpoint.is_empty() && !address_contains_port(endpoint) {
            e.push(format!("peer endpoint {} is invalid", go_quote(endpoint)));
        }
        for ip in strings(peer, "allowedIPs") {
            if !is_cidr(ip) {
                e.push(format!(
                    "peer allowed IP {} is invalid: invalid CIDR address: {ip}",
                    go_quote(ip)
                ));
            }
        }
    }
}

fn wireguard_key(key: &str) -> Result<(), String> {
    let len = go_base64_len(key)?;
    if len == 32 {
        Ok(())
    } else {
        Err(format!("wrong key {} length: {len}", go_quote(key)))
    }
}

/// `checkVlans`: each VLAN's addressing. The prefix names the link unquoted, dot,
/// the VLAN id.
fn check_vlans(d: &Value, e: &mut Vec<String>) {
    let link = str_at(d, "/interface");
    for vlan in list(d, "vlans") {
        let id = number(vlan, "vlanId");
        let cidr = str_at(vlan, "/cidr");
        let addresses = strings(vlan, "addresses");
        if !addresses.is_empty() && !cidr.is_empty() {
            e.push(format!(
                "[networking.os.device.vlan] {link}.{id}: vlan can't have both .cidr and .addresses set"
            ));
        }
        if !cidr.is_empty()
            && let Err(why) = ip_or_cidr(cidr)
        {
            e.push(format!(
                "[networking.os.device.vlan.CIDR] {link}.{id}: {why}"
            ));
        }
        for address in addresses {
            if let Err(why) = ip_or_cidr(address) {
                e.push(format!(
                    "[networking.os.device.vlan.addresses] {link}.{id}: {why}"
                ));
            }
        }
    }
}

/// `CheckDeviceAddressing`: a bonded or bridged link carries no addressing of its
/// own; `cidr` and `addresses` exclude each other and parse; a VIP is an address.
fn device_addressing(d: &Value, secondary: &[(&str, &str)], e: &mut Vec<String>) {
    let name = str_at(d, "/interface");
    let quoted = go_quote(name);
    let cidr = str_at(d, "/cidr");
    let addresses = strings(d, "addresses");
    let vip = present(d, "vip");
    if secondary.iter().any(|(link, _)| *link == name)
        && (flag(d, "dhcp") || !cidr.is_empty() || !addresses.is_empty() || vip.is_some())
    {
        e.push(format!(
            "[networking.os.device] {quoted}: bonded/bridged interface shouldn't have any addressing methods configured"
        ));
    }
    if !addresses.is_empty() && !cidr.is_empty() {
        e.push(format!(
            "[networking.os.device] {quoted}: interface can't have both .cidr and .addresses set"
        ));
    }
    if !cidr.is_empty()
        && let Err(why) = ip_or_cidr(cidr)
    {
        e.push(format!("[networking.os.device.CIDR] {quoted}: {why}"));
    }
    for address in addresses {
        if let Err(why) = ip_or_cidr(address) {
            e.push(format!("[networking.os.device.addresses] {quoted}: {why}"));
        }
    }
    if let Some(vip) = vip {
        let ip = str_at(vip, "/ip");
        if ip.parse::<IpAddr>().is_err() {
            e.push(format!(
                "[networking.os.device.vip] failed to parse {} as IP address",
                go_quote(ip)
            ));
        }
    }
}

/// `CheckDeviceRoutes`: a route has a network or a gateway, and what it has parses.
fn device_routes(d: &Value, e: &mut Vec<String>) {
    for (i, route) in list(d, "routes").iter().enumerate() {
        let prefix = format!("[networking.os.device.route[{i}]");
        let network = str_at(route, "/network");
        let gateway = str_at(route, "/gateway");
        let source = str_at(route, "/source");
        if !network.is_empty() && !is_cidr(network) {
            e.push(format!(
                "{prefix}.network] {}: invalid network address",
                go_quote(network)
            ));
        }
        if !gateway.is_empty() && gateway.parse::<IpAddr>().is_err() {
            e.push(format!(
                "{prefix}.gateway] {}: invalid network address",
                go_quote(gateway)
            ));
        }
        if gateway.is_empty() && network.is_empty() {
            e.push(format!(
                "{prefix}]: either network or gateway should be set"
            ));
        }
        if !source.is_empty() && source.parse::<IpAddr>().is_err() {
            e.push(format!(
                "{prefix}.source] {}: invalid network address",
                go_quote(source)
            ));
        }
    }
}

fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_default()
}

/// A `*bool` read as Talos does (`pointer.SafeDeref`): only `true` is true.
fn flag(v: &Value, key: &str) -> bool {
    v.get(key) == Some(&Value::Bool(true))
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strings<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    list(v, key).iter().filter_map(Value::as_str).collect()
}

/// Go's `reflect.Value.IsZero` on a decoded selector: no field set (an empty
/// string is unset; `physical: false` is a set pointer).
fn is_zero(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.values()
            .all(|x| x.is_null() || x.as_str().is_some_and(str::is_empty))
    })
}

/// `validateIPOrCIDR`: with a slash, `net.ParseCIDR`; without, `net.ParseIP`.
fn ip_or_cidr(address: &str) -> Result<(), String> {
    if address.contains('/') {
        if is_cidr(address) {
            Ok(())
        } else {
            Err(format!("invalid CIDR address: {address}"))
        }
    } else if address.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!("failed to parse IP address {}", go_quote(address)))
    }
}

/// Go's `net.ParseCIDR`: an address without zone, a slash, decimal bits (leading
/// zeros allowed) within the family. An IPv4-mapped IPv6 address counts 128 bits.
fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && bits.parse::<u32>().is_ok_and(|n| n <= max)
}

/// Go's `netip.ParsePrefix`: as [`parse_prefix`], and the bits are digits only
/// (Go refuses the sign that Rust's integer parser takes).
fn go_parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (_, bits) = s.rsplit_once('/')?;
    if !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_prefix(s)
}

/// Go's `netip.ParseAddr`: as Rust's parser, but an IPv6 address may carry a
/// non-empty zone (`fe80::1%eth0`).
fn go_parse_addr(s: &str) -> Option<IpAddr> {
    match s.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() => {
            addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        }
        Some(_) => None,
        None => s.parse().ok(),
    }
}

/// siderolabs/net `ParseSubnetOrAddress`: a prefix, or a bare address.
fn is_subnet_or_address(s: &str) -> bool {
    go_parse_prefix(s).is_some() || go_parse_addr(s).is_some()
}

/// siderolabs/net `AddressContainsPort`: Go's `net.SplitHostPort` succeeds, and a
/// host with a colon is an IPv6 address.
fn address_contains_port(addr: &str) -> bool {
    go_split_host(addr).is_some_and(|host| !host.contains(':') || go_parse_addr(host).is_some())
}

/// The host part of Go's `net.SplitHostPort(hostport)`, or `None` where it fails.
fn go_split_host(hostport: &str) -> Option<&str> {
    let last = hostport.rfind(':')?;
    let (host, rest_from) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        if end + 1 != last {
            return None;
        }
        (&hostport[1..end], end + 1)
    } else {
        let host = &hostport[..last];
        if host.contains(':') {
            return None;
        }
        (host, 0)
    };
    let start = if hostport.starts_with('[') { 1 } else { 0 };
    if hostport[start..].contains('[') || hostport[rest_from..].contains(']') {
        return None;
    }
    Some(host)
}

/// How many bytes Go's `base64.StdEncoding.DecodeString` yields for `s`, or its
/// error (`illegal base64 data at input byte N`). Go's decoder is not strict: it
/// skips CR and LF and ignores non-zero bits after the last byte, which the
/// `base64` crate's standard engine refuses, hence this port.
fn go_base64_len(s: &str) -> Result<usize, String> {
    fn value(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
    }
    let corrupt = |at: usize| Err(format!("illegal base64 data at input byte {at}"));
    let src = s.as_bytes();
    let skip_newlines = |mut i: usize| {
        while i < src.len() && matches!(src[i], b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    let mut si = 0;
    let mut n = 0;
    while si < src.len() {
        // One quantum: up to four symbols, newlines skipped, padding ends it.
        let mut j = 0;
        let mut end = false;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(n);
                }
                return corrupt(si - j);
            }
            let c = src[si];
            si += 1;
            if value(c) {
                j += 1;
                continue;
            }
            if matches!(c, b'\n' | b'\r') {
                continue;
            }
            if c != b'=' || j < 2 {
                return corrupt(si - 1);
            }
            if j == 2 {
                // "==" is expected; the first "=" is consumed.
                si = skip_newlines(si);
                if si == src.len() {
                    return corrupt(src.len());
                }
                if src[si] != b'=' {
                    return corrupt(si - 1);
                }
                si += 1;
            }
            si = skip_newlines(si);
            if si < src.len() {
                return corrupt(si);
            }
            end = true;
            break;
        }
        // A full quantum is three bytes; "xx==" one, "xxx=" two.
        n += j - 1;
        if end {
            break;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lengths_and_errors_are_go_s() {
        assert_eq!(go_base64_len(""), Ok(0));
        assert_eq!(
            go_base64_len("ONtS+jU1Q+ZHLgs7DbYvnF5Iyj+koxBtvknDigFsdG8="),
            Ok(32)
        );
        // Non-zero trailing bits are accepted, as Go's non-strict decoder does.
        assert_eq!(
            go_base64_len("4A3rogGVHuVjeZz5cbqryWXGkGBdIGC0E6+5mX2Iz1=="),
            Ok(31)
        );
        assert_eq!(go_base64_len("Zm9v\nYmFy"), Ok(6));
        assert_eq!(
            go_base64_len("Zm9"),
            Err("illegal base64 data at input byte 0".into())
        );
        assert_eq!(
            go_base64_len("Zm9vY"),
            Err("illegal base64 data at input byte 4".into())
        );
        assert_eq!(
            go_base64_len("Zm!v"),
            Err("illegal base64 data at input byte 2".into())
        );
        assert_eq!(go_base64_len("Zg=="), Ok(1));
        assert_eq!(
            go_base64_len("Zg="),
            Err("illegal base64 data at input byte 3".into())
        );
        assert_eq!(
            go_base64_len("Zg==Zg=="),
            Err("illegal base64 data at input byte 4".into())
        );
        assert_eq!(
            go_base64_len("Z==="),
            Err("illegal base64 data at input byte 1".into())
        );
    }

    #[test]
    fn host_port_is_split_as_go_does() {
        assert!(address_contains_port("example.com:1234"));
        assert!(address_contains_port("[2001:db8::1]:51820"));
        assert!(address_contains_port("[fe80::1%eth0]:51820"));
        assert!(address_contains_port("10.0.0.1:"));
        assert!(!address_contains_port("12.3.4.5"));
        assert!(!address_contains_port("2001:db8::1:51820"));
        assert!(!address_contains_port("[2001:db8::1]"));
        assert!(!address_contains_port("[nothost:x]:1"));
        assert!(!address_contains_port("a[b:1"));
    }

    #[test]
    fn cidrs_parse_as_go_net_does() {
        assert!(is_cidr("10.0.0.0/024"));
        assert!(is_cidr("::ffff:10.0.0.0/120"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0/+8"));
        assert!(!is_cidr("10.0.0.0/"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(go_parse_prefix("10.0.0.0/+8").is_none());
        assert!(is_subnet_or_address("fe80::1%eth0"));
        assert!(!is_subnet_or_address("fe80::1%"));
    }
}
