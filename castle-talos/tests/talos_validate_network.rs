//! Talos's own test cases for the network rules, ported: each network case of
//! `TestValidate` in pkg/machinery/config/types/v1alpha1/v1alpha1_validation_test.go
//! (siderolabs/talos, tag v1.12.9), its Go config written as the YAML document it
//! decodes from (yaml tags of v1alpha1_types.go; `[]byte("foo")` is `Zm9v`).
//!
//! The Go test validates with `runtimeMode{requiresInstall: false}`, not in a
//! container: `RuntimeMode::Cloud` answers both questions the same way. Each case
//! expects exactly the items of Talos's `expectedError`, in order; warnings
//! (`expectedWarnings`) are not refusals, so a case that only warns expects none.

#![allow(clippy::unwrap_used)]

use castle_talos::{RuntimeMode, validate_documents_in};
use serde_json::Value;

/// Cases whose errors differ from Talos's, and why. Each is asserted still to
/// differ, so a fix is noticed and the entry removed.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// A control plane machine with a CA and a key, the endpoint
/// `https://localhost:6443/`, and `network` as its `machine.network`.
fn controlplane(network: &str) -> String {
    format!(
        "version: v1alpha1\nmachine:\n  type: controlplane\n  ca:\n    crt: Zm9v\n    key: YmFy\n  network:\n{}cluster:\n  controlPlane:\n    endpoint: https://localhost:6443/\n",
        indent(network, 4)
    )
}

/// A worker with only a CA certificate, KubeSpan set as `kubespan`, and a cluster
/// with an id, a secret and discovery on.
fn worker_kubespan(kubespan: &str) -> String {
    format!(
        "version: v1alpha1\nmachine:\n  type: worker\n  ca:\n    crt: Zm9v\n  network:\n    kubespan:\n{}cluster:\n  controlPlane:\n    endpoint: https://localhost:6443/\n  id: test\n  secret: test\n  discovery:\n    enabled: true\n",
        indent(kubespan, 6)
    )
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{:by$}{l}\n", ""))
        .collect()
}

/// `(test name, config, expected errors)`, in the order of `TestValidate`.
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        (
            "DeviceCIDRInvalid",
            controlplane(
                "
interfaces:
  - interface: eth0
    cidr: 10.3.x
",
            ),
            vec![r#"[networking.os.device.CIDR] "eth0": failed to parse IP address "10.3.x""#],
        ),
        (
            "DeviceAddressInvalid",
            controlplane(
                "
interfaces:
  - interface: eth0
    addresses: [192.168.0.5/24, 10.35.7.8, 10.3.x/24]
",
            ),
            vec![r#"[networking.os.device.addresses] "eth0": invalid CIDR address: 10.3.x/24"#],
        ),
        (
            "DeviceAddressAndCIDR",
            controlplane(
                "
interfaces:
  - interface: eth0
    cidr: 192.24.3.45
    addresses: [192.168.0.5/24]
",
            ),
            vec![
                r#"[networking.os.device] "eth0": interface can't have both .cidr and .addresses set"#,
            ],
        ),
        (
            "VlanCIDRInvalid",
            controlplane(
                "
interfaces:
  - interface: eth0
    vlans:
      - vlanId: 25
        cidr: 10.3.x
",
            ),
            vec![
                r#"[networking.os.device.vlan.CIDR] eth0.25: failed to parse IP address "10.3.x""#,
            ],
        ),
        (
            "VlanAddressInvalid",
            controlplane(
                "
interfaces:
  - interface: eth0
    vlans:
      - vlanId: 25
        addresses: [192.168.0.5/24, 10.35.7.8, 10.3.x/24]
",
            ),
            vec!["[networking.os.device.vlan.addresses] eth0.25: invalid CIDR address: 10.3.x/24"],
        ),
        (
            "VlanAddressAndCIDR",
            controlplane(
                "
interfaces:
  - interface: eth0
    vlans:
      - vlanId: 26
        cidr: 192.24.3.45
        addresses: [192.168.0.5/24]
",
            ),
            vec![
                "[networking.os.device.vlan] eth0.26: vlan can't have both .cidr and .addresses set",
            ],
        ),
        (
            "BondDefaultConfig",
            controlplane(
                "
interfaces:
  - interface: bond0
    bond: {}
",
            ),
            vec![],
        ),
        (
            "BondWrongMode",
            controlplane(
                "
interfaces:
  - interface: bond0
    bond:
      mode: roundrobin
      updelay: 100
      packetsPerSlave: 8
      adActorSysPrio: 48
      interfaces: [eth0, eth1]
",
            ),
            vec![
                "invalid bond type roundrobin",
                "bond.upDelay can't be set if miiMon is zero",
                "bond.adActorSysPrio is only available in 802.3ad mode",
            ],
        ),
        (
            "BondInterfacesAndSelectors",
            controlplane(
                "
interfaces:
  - interface: bond0
    bond:
      interfaces: [eth0, eth1]
      deviceSelectors:
        - driver: virtio
",
            ),
            vec![
                r#"interface "bond0" has both interfaces and selectors set: config sections are mutually exclusive"#,
            ],
        ),
        (
            "BondDoubleBond",
            controlplane(
                "
interfaces:
  - interface: bond0
    bond:
      interfaces: [eth0, eth1]
  - interface: bond1
    bond:
      interfaces: [eth1, eth2]
",
            ),
            vec![
                r#"interface "eth1" is declared as part of two separate links: "bond0" and "bond1""#,
            ],
        ),
        (
            "BondSlaveAddressing",
            controlplane(
                "
interfaces:
  - interface: bond0
    bond:
      interfaces: [eth0, eth1, eth2]
  - interface: eth0
    dhcp: true
  - interface: eth1
    addresses: [192.168.0.1/24]
  - interface: eth2
    cidr: 192.168.1.1/24
",
            ),
            vec![
                r#"[networking.os.device] "eth0": bonded/bridged interface shouldn't have any addressing methods configured"#,
                r#"[networking.os.device] "eth1": bonded/bridged interface shouldn't have any addressing methods configured"#,
                r#"[networking.os.device] "eth2": bonded/bridged interface shouldn't have any addressing methods configured"#,
            ],
        ),
        (
            "BridgeSlaveAddressing",
            controlplane(
                "
interfaces:
  - interface: br0
    bridge:
      interfaces: [eth0, eth1, eth2]
  - interface: eth0
    dhcp: true
  - interface: eth1
    addresses: [192.168.0.1/24]
  - interface: eth2
    cidr: 192.168.1.1/24
",
            ),
            vec![
                r#"[networking.os.device] "eth0": bonded/bridged interface shouldn't have any addressing methods configured"#,
                r#"[networking.os.device] "eth1": bonded/bridged interface shouldn't have any addressing methods configured"#,
                r#"[networking.os.device] "eth2": bonded/bridged interface shouldn't have any addressing methods configured"#,
            ],
        ),
        (
            "BridgeDoubleBridge",
            controlplane(
                "
interfaces:
  - interface: br0
    bridge:
      interfaces: [eth0, eth1]
  - interface: br1
    bridge:
      interfaces: [eth1, eth2]
",
            ),
            vec![r#"interface "eth1" is declared as part of two separate links: "br0" and "br1""#],
        ),
        (
            "InterfaceIsBothBridgeAndBond",
            controlplane(
                "
interfaces:
  - interface: bridgebond0
    bridge:
      interfaces: [eth0, eth1]
    bond:
      interfaces: [eth2, eth3]
",
            ),
            vec![
                r#"interface has both bridge and bond sections set "bridgebond0": config sections are mutually exclusive"#,
            ],
        ),
        (
            "InterfacePartOfBridgeAndBond",
            controlplane(
                "
interfaces:
  - interface: br0
    bridge:
      interfaces: [eth0, eth1]
  - interface: bond0
    bond:
      interfaces: [eth1, eth2]
",
            ),
            vec![
                r#"interface "eth1" is declared as part of two separate links: "br0" and "bond0""#,
            ],
        ),
        (
            "Wireguard",
            controlplane(
                r#"
interfaces:
  - interface: wireguard0
    wireguard:
      privateKey: "ONtS+jU1Q+ZHLgs7DbYvnF5Iyj+koxBtvknDigFsdG8="
      peers:
        - {}
        - publicKey: "4A3rogGVHuVjeZz5cbqryWXGkGBdIGC0E6+5mX2Iz1A="
          endpoint: "example.com:1234"
          allowedIPs: [10.2.0.5/31, 2.4.5.3/32]
        - publicKey: "4A3rogGVHuVjeZz5cbqryWXGkGBdIGC0E6+5mX2Iz1=="
          endpoint: "12.3.4.5"
          allowedIPs: [10.2.0]
"#,
            ),
            vec![
                r#"public key invalid: wrong key "" length: 0"#,
                r#"public key invalid: wrong key "4A3rogGVHuVjeZz5cbqryWXGkGBdIGC0E6+5mX2Iz1==" length: 31"#,
                r#"peer endpoint "12.3.4.5" is invalid"#,
                r#"peer allowed IP "10.2.0" is invalid: invalid CIDR address: 10.2.0"#,
            ],
        ),
        (
            "StaticRoutes",
            controlplane(
                r#"
interfaces:
  - interface: eth0
    routes:
      - gateway: 172.0.0.1
      - network: 10.0.0.0/24
        gateway: 10.0.0.1
      - network: 10.0.0.0/24
        gateway: 10.0.0.1
        source: 10.0.0.5
      - gateway: 172.0.0.x
      - network: 10.0.0.0
        gateway: 10.0.0.1
      - network: 10.0.0.0/24
        gateway: 10.0.0.1
        source: 10.0.0.3/32
      - network: 169.254.254.254/32
      - source: 10.0.0.3
"#,
            ),
            vec![
                r#"[networking.os.device.route[3].gateway] "172.0.0.x": invalid network address"#,
                r#"[networking.os.device.route[4].network] "10.0.0.0": invalid network address"#,
                r#"[networking.os.device.route[5].source] "10.0.0.3/32": invalid network address"#,
                "[networking.os.device.route[7]]: either network or gateway should be set",
            ],
        ),
        (
            "KubeSpanNoDiscovery",
            controlplane(
                "
kubespan:
  enabled: true
",
            ),
            vec![
                ".cluster.discovery should be enabled when .machine.network.kubespan is enabled",
                ".cluster.id should be set when .machine.network.kubespan is enabled",
                ".cluster.secret should be set when .machine.network.kubespan is enabled",
            ],
        ),
        (
            "DeviceInterfaceInvalid",
            controlplane(
                "
interfaces:
  - {}
",
            ),
            vec![
                "[networking.os.device.interface], [networking.os.device.deviceSelector]: required either config section to be set",
            ],
        ),
        (
            // The first of two cases Talos names DeviceSelectorAndInterfaceSet.
            "DeviceSelectorAndInterfaceSet",
            controlplane(
                r#"
interfaces:
  - interface: eth0
    deviceSelector:
      busPath: "00:01"
"#,
            ),
            vec![
                "[networking.os.device.interface], [networking.os.device.deviceSelector]: config sections are mutually exclusive",
            ],
        ),
        (
            // The second DeviceSelectorAndInterfaceSet: an empty selector alone.
            "DeviceSelectorAndInterfaceSet (empty selector)",
            controlplane(
                "
interfaces:
  - deviceSelector: {}
",
            ),
            vec![
                "[networking.os.device.deviceSelector]: config section should contain at least one field",
            ],
        ),
        (
            "GoodKubeSpanEndpointFilters",
            worker_kubespan(
                r#"
enabled: true
filters:
  endpoints: ["0.0.0.0/0", "::/0", "!192.168.0.0/16"]
"#,
            ),
            vec![],
        ),
        (
            "BadKubeSpanEndpointFilters",
            worker_kubespan(
                r#"
enabled: true
filters:
  endpoints: ["!10", "123::/456"]
"#,
            ),
            vec![
                r#"KubeSpan endpoint filter is not valid: "10""#,
                r#"KubeSpan endpoint filter is not valid: "123::/456""#,
            ],
        ),
        (
            "GoodKubeSpanAdvertisedNetworkFilters",
            worker_kubespan(
                r#"
enabled: true
filters:
  excludeAdvertisedNetworks: ["0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "::/0"]
"#,
            ),
            vec![],
        ),
        (
            "BadKubeSpanAdvertisedNetworkFilters",
            worker_kubespan(
                r#"
enabled: true
filters:
  excludeAdvertisedNetworks: [invalid, "123::/456"]
"#,
            ),
            vec![
                r#"KubeSpan exclude advertised networks filter is not valid: "invalid""#,
                r#"KubeSpan exclude advertised networks filter is not valid: "123::/456""#,
            ],
        ),
        (
            "KubeSpanSmallMTU",
            worker_kubespan(
                "
enabled: true
mtu: 576
",
            ),
            vec!["kubespan link MTU must be at least 1280"],
        ),
    ]
}

fn errors_of(yaml: &str) -> Vec<String> {
    let doc: Value = serde_saphyr::from_str(yaml).unwrap();
    validate_documents_in(&[doc], RuntimeMode::Cloud)
        .into_iter()
        .map(|e| {
            e.strip_prefix("v1alpha1.Config: ")
                .map_or(e.clone(), str::to_string)
        })
        .collect()
}

#[test]
fn talos_network_cases_fail_as_talos_fails_them() {
    let mut failures = Vec::new();
    for (name, yaml, expected) in cases() {
        let got = errors_of(&yaml);
        let known = KNOWN_DIFFERENCES.iter().find(|(n, _)| *n == name);
        match known {
            None if got != expected => failures.push(format!(
                "{name}:\n  expected {expected:?}\n  got      {got:?}\n  config:\n{yaml}"
            )),
            Some((_, why)) if got == expected => failures.push(format!(
                "{name} now matches Talos; remove it from KNOWN_DIFFERENCES ({why})"
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_known_difference_names_a_ported_case() {
    let names: Vec<_> = cases().into_iter().map(|(n, _, _)| n).collect();
    for (name, _) in KNOWN_DIFFERENCES {
        assert!(names.contains(name), "{name} is not a ported case");
    }
    assert_eq!(names.len(), 26);
}

/// What the source accepts must pass: a network section that uses every
/// structure the rules look at, each as v1alpha1_validation.go allows it (an
/// ignored device is not checked at all).
#[test]
fn a_network_section_talos_accepts_passes() {
    let yaml = controlplane(
        r#"
interfaces:
  - interface: bond0
    bond:
      mode: 802.3ad
      lacpRate: fast
      xmitHashPolicy: layer3+4
      miimon: 100
      updelay: 200
      downdelay: 200
      adActorSysPrio: 65535
      deviceSelectors:
        - hardwareAddr: "00:50:56:*"
          driver: virtio_net
    addresses: [192.168.1.10/24, "2001:db8::10/64"]
    routes:
      - network: 0.0.0.0/0
        gateway: 192.168.1.1
      - network: "::/0"
        gateway: "fe80::1"
        source: "2001:db8::10"
    vip:
      ip: 192.168.1.200
    vlans:
      - vlanId: 100
        addresses: [10.10.0.2/24]
        routes:
          - network: 10.20.0.0/16
            gateway: 10.10.0.1
        vip:
          ip: 10.10.0.200
  - interface: br0
    bridge:
      interfaces: [eth2, eth3]
      stp:
        enabled: true
    dhcp: true
  - deviceSelector:
      physical: false
    dhcp: true
  - interface: eth2
    mtu: 9000
  - interface: wg0
    addresses: [10.99.0.1/24]
    wireguard:
      privateKey: "ONtS+jU1Q+ZHLgs7DbYvnF5Iyj+koxBtvknDigFsdG8="
      listenPort: 51820
      peers:
        - publicKey: "4A3rogGVHuVjeZz5cbqryWXGkGBdIGC0E6+5mX2Iz1A="
          endpoint: "[2001:db8::1]:51820"
          allowedIPs: [10.99.0.0/24, "fd00::/8"]
  - interface: eth9
    ignore: true
    cidr: not-an-address
    bond:
      mode: nonsense
kubespan:
  enabled: true
  mtu: 1280
  filters:
    endpoints: ["!10.0.0.0/8", 192.168.1.1, "fe80::1%eth0"]
"#,
    )
    .replace(
        "cluster:\n",
        "cluster:\n  id: test\n  secret: test\n  discovery:\n    enabled: true\n",
    );
    assert_eq!(errors_of(&yaml), Vec::<String>::new());
}

/// Rules the Go test does not exercise, each read from v1alpha1_validation.go
/// (v1.12.9): the words a node answers with.
#[test]
fn rules_talos_tests_leave_out_answer_in_talos_words() {
    let cases = [
        (
            // checkBond: the option tables and the mode-bound options.
            "
interfaces:
  - interface: bond0
    bond:
      mode: 802.3ad
      primary: eth0
      arpValidate: all
      arpInterval: 100
      packetsPerSlave: 2
      tlbDynamicLb: 1
      miimon: 100
      updelay: 150
      failOverMac: sometimes
      arpIPTarget: [10.0.0.1]
      adActorSystem: 00:11:22:33:44:55
",
            vec![
                "invalid fail_over_mac value sometimes",
                "bond.upDelay should be a multiple of miiMon",
                "bond.arpIPTarget is not supported",
                "bond.adActorSystem is not supported",
                "bond.arpValidate is not available in 802.3ad mode",
                "bond.primary is not available in 802.3ad mode",
                "bond.arpInterval is not available in 802.3ad mode",
                "bond.packetsPerSlave is not available in 802.3ad mode",
                "bond.tlbDynamicTLB is not available in 802.3ad mode",
            ],
        ),
        (
            // CheckDeviceAddressing: the VIP; checkWireguard: the private key.
            r#"
interfaces:
  - interface: eth0
    vip:
      ip: 192.168.1.x
  - interface: wg0
    wireguard:
      privateKey: "not base64!"
"#,
            vec![
                r#"[networking.os.device.vip] failed to parse "192.168.1.x" as IP address"#,
                "private key is invalid: illegal base64 data at input byte 3",
            ],
        ),
    ];
    for (network, expected) in cases {
        assert_eq!(errors_of(&controlplane(network)), expected, "{network}");
    }
}
