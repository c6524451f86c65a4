//! Strategic-merge and RFC 6902 patches, rule by rule against Talos v1.12.11.
//!
//! Each test cites the Talos source (path under `pkg/machinery/config/` at tag
//! v1.12.11) whose behaviour it pins; the vectors are Castle's own, some mirroring the
//! scenarios of Talos's test data.

use castle_talos::{Error, Patch, apply_patches};

mod common;

use common::{apply, docs};

fn assert_applies(config: &str, patches: &[&str], expected: &str) {
    assert_eq!(
        apply(config, patches).expect("patch applies"),
        docs(expected)
    );
}

fn assert_fails(config: &str, patches: &[&str], expected_error: &str) {
    let err = apply(config, patches).expect_err("patch must fail");
    assert!(
        err.contains(expected_error),
        "error {err:?} does not contain {expected_error:?}"
    );
}

const NET: &str = "
version: v1alpha1
machine:
  network:
    hostname: node-1
    interfaces:
      - interface: eth0
        dhcp: true
        mtu: 1500
        addresses: [10.0.0.2/24]
      - deviceSelector:
          hardwareAddr: 'aa:bb:*'
        dhcp: true
";

// types/v1alpha1/v1alpha1_types.go: NetworkDeviceList.Merge matches by `interface`;
// configpatcher/testdata/multidoc (eth0 dhcp true -> false).
#[test]
fn interfaces_merge_by_interface_name() {
    assert_applies(
        NET,
        &["
machine:
  network:
    interfaces:
      - interface: eth0
        dhcp: false
        addresses: [10.0.0.3/24]
      - interface: eth1
        dhcp: true
"],
        "
version: v1alpha1
machine:
  network:
    hostname: node-1
    interfaces:
      - interface: eth0
        dhcp: false
        mtu: 1500
        addresses: [10.0.0.2/24, 10.0.0.3/24]
      - deviceSelector:
          hardwareAddr: 'aa:bb:*'
        dhcp: true
      - interface: eth1
        dhcp: true
",
    );
}

// types/v1alpha1/v1alpha1_types.go: NetworkDeviceList.mergeDevice, the `deviceSelector` case
// (no interface name: an equal selector merges, another one appends).
#[test]
fn interfaces_merge_by_device_selector() {
    assert_applies(
        NET,
        &["
machine:
  network:
    interfaces:
      - deviceSelector:
          hardwareAddr: 'aa:bb:*'
        mtu: 9000
      - deviceSelector:
          driver: virtio_net
        dhcp: true
"],
        "
version: v1alpha1
machine:
  network:
    hostname: node-1
    interfaces:
      - interface: eth0
        dhcp: true
        mtu: 1500
        addresses: [10.0.0.2/24]
      - deviceSelector:
          hardwareAddr: 'aa:bb:*'
        dhcp: true
        mtu: 9000
      - deviceSelector:
          driver: virtio_net
        dhcp: true
",
    );
}

// types/v1alpha1/v1alpha1_types.go: VlanList.Merge matches by `vlanId`, inside the
// interface matched by NetworkDeviceList.Merge.
#[test]
fn vlans_merge_by_vlan_id() {
    assert_applies(
        "
version: v1alpha1
machine:
  network:
    interfaces:
      - interface: eth0
        vlans:
          - vlanId: 10
            mtu: 1500
            addresses: [10.10.0.2/24]
          - vlanId: 20
            dhcp: true
",
        &["
machine:
  network:
    interfaces:
      - interface: eth0
        vlans:
          - vlanId: 10
            mtu: 1400
            addresses: [10.10.0.3/24]
          - vlanId: 30
            dhcp: true
"],
        "
version: v1alpha1
machine:
  network:
    interfaces:
      - interface: eth0
        vlans:
          - vlanId: 10
            mtu: 1400
            addresses: [10.10.0.2/24, 10.10.0.3/24]
          - vlanId: 20
            dhcp: true
          - vlanId: 30
            dhcp: true
",
    );
}

// types/v1alpha1/v1alpha1_types.go: AdmissionPluginConfigList.Merge matches by `name`;
// the free-form `configuration` maps merge key by key (merge/merge.go, map[string]any).
#[test]
fn admission_control_merges_by_name() {
    assert_applies(
        "
version: v1alpha1
cluster:
  apiServer:
    admissionControl:
      - name: PodSecurity
        configuration:
          defaults:
            enforce: baseline
            audit: restricted
          exemptions:
            namespaces: [kube-system]
",
        &["
cluster:
  apiServer:
    admissionControl:
      - name: PodSecurity
        configuration:
          defaults:
            enforce: privileged
          exemptions:
            namespaces: [castle]
      - name: EventRateLimit
        configuration:
          kind: Configuration
"],
        "
version: v1alpha1
cluster:
  apiServer:
    admissionControl:
      - name: PodSecurity
        configuration:
          defaults:
            enforce: privileged
            audit: restricted
          exemptions:
            namespaces: [kube-system, castle]
      - name: EventRateLimit
        configuration:
          kind: Configuration
",
    );
}

const EXT: &str = "
version: v1alpha1
machine: {}
---
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: tailscale
configFiles:
  - content: hello
    mountPath: /etc/foo
environment:
  - TS_AUTHKEY=fake
";

// types/runtime/extensions/service_config.go: ConfigFileList.Merge matches by
// `mountPath`; `environment` is a plain list and appends (configpatcher/testdata/multidoc).
#[test]
fn config_files_merge_by_mount_path() {
    assert_applies(
        EXT,
        &["
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: tailscale
configFiles:
  - content: hello world
    mountPath: /etc/foo
  - content: another hello
    mountPath: /etc/bar
environment:
  - TS_HOSTNAME=node-1
"],
        "
version: v1alpha1
machine: {}
---
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: tailscale
configFiles:
  - content: hello world
    mountPath: /etc/foo
  - content: another hello
    mountPath: /etc/bar
environment:
  - TS_AUTHKEY=fake
  - TS_HOSTNAME=node-1
",
    );
}

const CLUSTER: &str = "
version: v1alpha1
machine:
  certSANs: [10.0.0.1]
  install:
    disk: /dev/sda
    wipe: true
  kubelet:
    extraArgs:
      rotate-server-certificates: 'true'
  nodeLabels:
    castle.dev/pool: a
    node.kubernetes.io/exclude-from-external-load-balancers: ''
cluster:
  network:
    podSubnets: [10.244.0.0/16]
    serviceSubnets: [10.96.0.0/12]
  apiServer:
    certSANs: [10.0.0.1]
    auditPolicy:
      apiVersion: audit.k8s.io/v1
      kind: Policy
      rules:
        - level: Metadata
";

// types/v1alpha1/v1alpha1_types.go: `PodSubnet []string merge:\"replace\"`.
#[test]
fn pod_subnets_are_replaced() {
    let out = apply(
        CLUSTER,
        &["cluster: {network: {podSubnets: [10.200.0.0/16, fd00:10:244::/56]}}"],
    )
    .unwrap();
    assert_eq!(
        out[0]["cluster"]["network"]["podSubnets"],
        serde_json::json!(["10.200.0.0/16", "fd00:10:244::/56"])
    );
    assert_eq!(
        out[0]["cluster"]["network"]["serviceSubnets"],
        serde_json::json!(["10.96.0.0/12"])
    );
}

// types/v1alpha1/v1alpha1_types.go: `ServiceSubnet []string merge:\"replace\"`.
#[test]
fn service_subnets_are_replaced() {
    let out = apply(
        CLUSTER,
        &["cluster: {network: {serviceSubnets: [10.100.0.0/16]}}"],
    )
    .unwrap();
    assert_eq!(
        out[0]["cluster"]["network"]["serviceSubnets"],
        serde_json::json!(["10.100.0.0/16"])
    );
}

// types/v1alpha1/v1alpha1_types.go: `AuditPolicyConfig Unstructured merge:\"replace\"`;
// configpatcher/testdata/auditpolicy (rules replaced, not appended).
#[test]
fn audit_policy_is_replaced_whole() {
    let out = apply(
        CLUSTER,
        &["
cluster:
  apiServer:
    auditPolicy:
      apiVersion: audit.k8s.io/v1
      kind: Policy
      rules:
        - level: None
"],
    )
    .unwrap();
    assert_eq!(
        out[0]["cluster"]["apiServer"]["auditPolicy"],
        docs("{apiVersion: audit.k8s.io/v1, kind: Policy, rules: [{level: None}]}")[0]
    );
}

// merge/merge.go: slices are concatenated (machine.certSANs, cluster.apiServer.certSANs).
#[test]
fn plain_lists_append() {
    let out = apply(
        CLUSTER,
        &[
            "machine: {certSANs: [castle.example]}",
            "cluster: {apiServer: {certSANs: [10.0.0.1]}}",
        ],
    )
    .unwrap();
    assert_eq!(
        out[0]["machine"]["certSANs"],
        serde_json::json!(["10.0.0.1", "castle.example"])
    );
    // Concatenated, duplicates included, as Talos does.
    assert_eq!(
        out[0]["cluster"]["apiServer"]["certSANs"],
        serde_json::json!(["10.0.0.1", "10.0.0.1"])
    );
}

// merge/merge.go: a zero-valued scalar (empty string, 0) in the patch does not override;
// `null` is a nil pointer/map and changes nothing either.
#[test]
fn empty_string_zero_and_null_do_not_override() {
    let out = apply(
        NET,
        &["
machine:
  network:
    hostname: ''
    interfaces:
      - interface: eth0
        mtu: 0
        addresses: null
"],
    )
    .unwrap();
    assert_eq!(out, docs(NET));
}

// merge/merge.go: `merge(vl.Elem(), vr.Elem(), replace, true)` overwrites through a
// pointer; types/v1alpha1/v1alpha1_types.go `KubeSpanMTU *uint32`, so 0 does override it.
#[test]
fn zero_overrides_a_pointer_field() {
    let out = apply(
        "version: v1alpha1\nmachine: {network: {kubespan: {enabled: true, mtu: 1420}}}",
        &["machine: {network: {kubespan: {mtu: 0}}}"],
    )
    .unwrap();
    assert_eq!(out[0]["machine"]["network"]["kubespan"]["mtu"], 0);
}

// merge/merge.go: "boolean false is always merged".
#[test]
fn false_overrides_true() {
    let out = apply(CLUSTER, &["machine: {install: {wipe: false, disk: ''}}"]).unwrap();
    assert_eq!(out[0]["machine"]["install"]["wipe"], false);
    assert_eq!(out[0]["machine"]["install"]["disk"], "/dev/sda");
}

// merge/merge.go: "merge type mismatch left %v right %v".
#[test]
fn type_mismatch_is_an_error() {
    assert_fails(
        CLUSTER,
        &["machine: {install: {disk: [/dev/sda, /dev/sdb]}}"],
        "merge type mismatch at 'machine.install.disk' in document '/v1alpha1': the config has a string and the patch a list",
    );
}

// configloader/internal/decoder/delete.go + selector.go: `$patch: delete` on a map key
// zeroes the field (configpatcher/testdata/patchdelete/strategic1.yaml, hostname).
#[test]
fn delete_a_map_key() {
    let out = apply(NET, &["machine: {network: {hostname: {$patch: delete}}}"]).unwrap();
    assert!(out[0]["machine"]["network"].get("hostname").is_none());
    assert_eq!(
        out[0]["machine"]["network"]["interfaces"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

// configloader/internal/decoder/selector.go deleteForPath, reflect.Map: a key of a
// user-keyed map (nodeLabels) is deleted (configpatcher/testdata/patchdelete/strategic2.yaml),
// and one that is absent fails the lookup.
#[test]
fn delete_a_user_map_key() {
    let out = apply(
        CLUSTER,
        &["
machine:
  nodeLabels:
    node.kubernetes.io/exclude-from-external-load-balancers:
      $patch: delete
"],
    )
    .unwrap();
    assert_eq!(
        out[0]["machine"]["nodeLabels"],
        serde_json::json!({"castle.dev/pool": "a"})
    );
    assert_fails(
        CLUSTER,
        &["machine: {kubelet: {extraArgs: {node-ip: {$patch: delete}}}}"],
        "patch delete: path 'machine.kubelet.extraArgs.node-ip' in document '/v1alpha1': failed to delete path 'machine.kubelet.extraArgs.node-ip': lookup failed",
    );
}

// configloader/internal/decoder/selector.go deleteForPath, reflect.Struct: the last
// segment an unset struct field is zeroed without error (Castle: absent key, parent not a
// user-keyed map).
#[test]
fn delete_an_unset_struct_field_is_a_no_op() {
    let out = apply(CLUSTER, &["machine: {install: {image: {$patch: delete}}}"]).unwrap();
    assert_eq!(out, docs(CLUSTER));
}

// configloader/internal/decoder/selector.go deleteStructFrom: a list element is deleted by
// its first key's value; later elements of the same patch merge afterwards
// (configpatcher/testdata/patchdelete/strategic1.yaml: eth0 deleted, then re-added).
#[test]
fn delete_a_list_element_then_add_it_back() {
    assert_applies(
        NET,
        &["
machine:
  network:
    interfaces:
      - interface: eth0
        $patch: delete
      - interface: eth0
        dummy: true
"],
        "
version: v1alpha1
machine:
  network:
    hostname: node-1
    interfaces:
      - deviceSelector:
          hardwareAddr: 'aa:bb:*'
        dhcp: true
      - interface: eth0
        dummy: true
",
    );
}

// configloader/internal/decoder/delete.go makeSequenceSelector: the FIRST key other than
// `$patch` selects the element (here `content`, though `mountPath` is written too);
// configpatcher/testdata/patchdelete/strategic1.yaml (`- content: hello`).
#[test]
fn delete_a_list_element_by_its_first_key() {
    let config = "
version: v1alpha1
machine: {}
---
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: tailscale
configFiles:
  - content: hello
    mountPath: /etc/foo
  - content: bye
    mountPath: /etc/bar
";
    let out = apply(
        config,
        &["
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: tailscale
configFiles:
  - content: bye
    mountPath: /etc/no-such-path
    $patch: delete
"],
    )
    .unwrap();
    assert_eq!(
        out[1]["configFiles"],
        serde_json::json!([{"content": "hello", "mountPath": "/etc/foo"}])
    );
    // The other order selects by mountPath, which matches nothing.
    assert_fails(
        config,
        &["
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: tailscale
configFiles:
  - mountPath: /etc/no-such-path
    content: bye
    $patch: delete
"],
        "patch delete: path 'configFiles.[0]' in document 'v1alpha1/ExtensionServiceConfig/tailscale': failed to delete path 'configFiles.[0]': lookup failed",
    );
}

// configloader/internal/decoder/selector.go deleteStructFrom compares the field as a
// string; configpatcher/testdata/patchdelete/strategic2.yaml deletes PodSecurity by name.
#[test]
fn delete_an_admission_plugin_by_name() {
    let config = "
version: v1alpha1
cluster:
  apiServer:
    admissionControl:
      - name: PodSecurity
        configuration: {kind: PodSecurityConfiguration}
      - name: EventRateLimit
        configuration: {kind: Configuration}
";
    let out = apply(
        config,
        &["cluster: {apiServer: {admissionControl: [{name: PodSecurity, $patch: delete}]}}"],
    )
    .unwrap();
    assert_eq!(
        out[0]["cluster"]["apiServer"]["admissionControl"],
        serde_json::json!([{"name": "EventRateLimit", "configuration": {"kind": "Configuration"}}])
    );
}

// configloader/internal/decoder/selector.go deleteStructFrom uses the field's string form:
// a numeric field (`vlanId`, uint16) never equals the selector text, in Talos too.
#[test]
fn delete_a_list_element_by_a_number_fails_as_in_talos() {
    assert_fails(
        "version: v1alpha1\ncluster: {apiServer: {admissionControl: [{name: '7'}]}}\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nroutes: [{metric: 10}]",
        &[
            "apiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nroutes: [{metric: 10, $patch: delete}]",
        ],
        "failed to delete path 'routes.[0]': lookup failed",
    );
    // A quoted number is the string field's text and matches.
    let out = apply(
        "version: v1alpha1\ncluster: {apiServer: {admissionControl: [{name: '7'}]}}",
        &["cluster: {apiServer: {admissionControl: [{name: 7, $patch: delete}]}}"],
    )
    .unwrap();
    assert_eq!(
        out[0]["cluster"]["apiServer"]["admissionControl"],
        serde_json::json!([])
    );
}

// configloader/internal/decoder/delete.go (root `$patch: delete`) and
// configpatcher/strategic.go (ErrZeroedDocument removes the document);
// configpatcher/testdata/patchdelete/strategic1.yaml (SideroLinkConfig).
#[test]
fn delete_a_whole_document() {
    let config = "
version: v1alpha1
machine: {}
---
apiVersion: v1alpha1
kind: HostnameConfig
hostname: node-1
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth0
mtu: 1500
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth1
mtu: 9000
";
    assert_applies(
        config,
        &["
apiVersion: v1alpha1
kind: LinkConfig
name: eth1
$patch: delete
---
apiVersion: v1alpha1
kind: HostnameConfig
$patch: delete
"],
        "
version: v1alpha1
machine: {}
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth0
mtu: 1500
",
    );
}

// configloader/internal/decoder/delete.go makeSelector: a root delete needs apiVersion and
// kind ("missing apiVersion in document for which $patch: delete is used"); the v1alpha1
// document cannot be deleted (selector.go "can't delete the root of the legacy document").
#[test]
fn deleting_the_v1alpha1_document_is_refused() {
    assert_fails(
        CLUSTER,
        &["version: v1alpha1\n$patch: delete"],
        "can't delete the root of the legacy (v1alpha1) document",
    );
    assert_fails(
        CLUSTER,
        &["kind: HostnameConfig\n$patch: delete"],
        "missing apiVersion in document for which $patch: delete is used",
    );
}

// configpatcher/apply_test.go TestPatchDeleteMissing, testdata/patchdeletemissing:
// a missing intermediate (machine.network) fails the lookup, with Talos's message.
#[test]
fn delete_a_missing_path_is_an_error() {
    assert_fails(
        "version: v1alpha1\nmachine: {}",
        &["machine:\n  network:\n    hostname:\n      $patch: delete"],
        "patch delete: path 'machine.network.hostname' in document '/v1alpha1': failed to delete path 'machine.network.hostname': lookup failed",
    );
    // A list element that matches nothing fails the same way.
    assert_fails(
        NET,
        &["machine: {network: {interfaces: [{interface: eth9, $patch: delete}]}}"],
        "failed to delete path 'machine.network.interfaces.[0]': lookup failed",
    );
}

// configloader/internal/decoder/delete.go ensureNoSeqInChain: "cannot delete an inner key".
#[test]
fn delete_an_inner_key_of_a_list_element_is_an_error() {
    assert_fails(
        NET,
        &["
machine:
  network:
    interfaces:
      - interface: eth0
        addresses:
          $patch: delete
"],
        "cannot delete an inner key in 'machine.network.interfaces.[0].addresses'",
    );
}

// configpatcher/strategic.go: documents match by apiVersion/kind/name; an unmatched
// patch document is appended; decoder.go: a document with `machine:` is the v1alpha1 one.
#[test]
fn multi_document_patch_matches_by_kind_and_name_and_appends_the_rest() {
    let config = "
version: v1alpha1
machine:
  network:
    interfaces:
      - interface: eth0
        dhcp: true
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth0
mtu: 1500
addresses:
  - address: 10.0.42.136/24
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth1
mtu: 1500
";
    assert_applies(
        config,
        &["
apiVersion: v1alpha1
kind: LinkConfig
name: eth1
mtu: 9000
---
machine:
  network:
    interfaces:
      - interface: eth0
        dhcp: false
---
apiVersion: v1alpha1
kind: ResolverConfig
nameservers:
  - address: 1.1.1.1
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth0
addresses:
  - address: 10.0.42.136/24
    $patch: delete
  - address: 10.0.42.137/24
"],
        "
version: v1alpha1
machine:
  network:
    interfaces:
      - interface: eth0
        dhcp: false
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth0
mtu: 1500
addresses:
  - address: 10.0.42.137/24
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth1
mtu: 9000
---
apiVersion: v1alpha1
kind: ResolverConfig
nameservers:
  - address: 1.1.1.1
",
    );
}

// configpatcher/strategic.go documentID: the name is part of the identity, so a patch
// naming no document of that kind and name is appended, not merged into another one.
#[test]
fn a_patch_document_with_another_name_is_appended() {
    let out = apply(
        EXT,
        &["apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: other\nenvironment: [A=B]"],
    )
    .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[1], docs(EXT)[1]);
    assert_eq!(out[2]["name"], "other");
}

// configloader/internal/decoder/decoder.go: "duplicate document ... is not allowed".
#[test]
fn duplicate_documents_in_a_patch_are_an_error() {
    assert_fails(
        EXT,
        &[
            "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: a\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: b",
        ],
        "duplicate document v1alpha1/HostnameConfig is not allowed",
    );
}

// configpatcher/json6902.go: "JSON6902 patches are not supported for multi-document
// machine configuration" (apply_test.go TestApplyMultiDocFail).
#[test]
fn json_patch_is_refused_on_a_multi_document_config() {
    assert_fails(
        EXT,
        &["- op: add\n  path: /machine/network\n  value: {}"],
        "JSON6902 patches are not supported for multi-document machine configuration",
    );
}

// configpatcher/json6902.go on a single document; testdata/multidoc/jsonpatch.yaml's op.
// configpatcher/load.go LoadPatches concatenates consecutive JSON patches, which is the
// same as applying them one after the other.
#[test]
fn json_patch_applies_to_a_single_document_config() {
    let patch =
        "- op: add\n  path: /machine/network/interfaces/0/addresses\n  value:\n    - 10.1.2.3/24";
    assert!(matches!(Patch::parse(patch).unwrap(), Patch::JsonPatch(ops) if ops.len() == 1));
    let out = apply(
        "version: v1alpha1\nmachine: {network: {hostname: a, interfaces: [{interface: eth0, dhcp: true}]}}",
        &[
            patch,
            r#"[{"op": "test", "path": "/machine/network/hostname", "value": "a"},
               {"op": "move", "from": "/machine/network/hostname", "path": "/machine/hostnameMoved"},
               {"op": "copy", "from": "/machine/hostnameMoved", "path": "/machine/hostnameCopy"},
               {"op": "replace", "path": "/machine/network/interfaces/0/dhcp", "value": false}]"#,
        ],
    )
    .unwrap();
    assert_eq!(
        out,
        docs(
            "
version: v1alpha1
machine:
  hostnameMoved: a
  hostnameCopy: a
  network:
    interfaces:
      - interface: eth0
        dhcp: false
        addresses: [10.1.2.3/24]
"
        )
    );
}

// configpatcher/load.go: a patch file of several documents is one strategic merge patch;
// a list of {op, path} is a JSON patch; JSON is YAML.
#[test]
fn parse_tells_the_two_forms_apart() {
    let p =
        Patch::parse("machine: {}\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: a\n")
            .unwrap();
    match p {
        Patch::StrategicMerge(d) => {
            assert_eq!(d.len(), 2);
            assert_eq!(d[1]["hostname"], "a");
        }
        Patch::JsonPatch(_) => panic!("a map is a strategic merge"),
    }
    assert!(matches!(
        Patch::parse(r#"{"machine": {"network": {"hostname": "x"}}}"#).unwrap(),
        Patch::StrategicMerge(d) if d.len() == 1
    ));
    let err = Patch::parse("- op: frobnicate\n  path: /x").unwrap_err();
    assert!(matches!(err, Error::Config(m) if m.contains("needs `op`")));
    let err = Patch::parse("machine: {network: {$patch: replace}}").unwrap_err();
    assert!(matches!(err, Error::Config(m) if m.contains("Talos knows only `$patch: delete`")));
}

// network/rule_config.go: `Ingress IngressConfig merge:\"replace\"` and
// `Ports PortRanges merge:\"replace\"`; `protocol` merges as a scalar.
#[test]
fn network_rule_ingress_and_ports_are_replaced() {
    assert_applies(
        "
version: v1alpha1
machine: {}
---
apiVersion: v1alpha1
kind: NetworkRuleConfig
name: kubelet
portSelector:
  ports: [10250]
  protocol: tcp
ingress:
  - subnet: 10.0.0.0/8
",
        &["
apiVersion: v1alpha1
kind: NetworkRuleConfig
name: kubelet
portSelector:
  ports: [10250, 10255-10256]
ingress:
  - subnet: 192.168.0.0/16
"],
        "
version: v1alpha1
machine: {}
---
apiVersion: v1alpha1
kind: NetworkRuleConfig
name: kubelet
portSelector:
  ports: [10250, 10255-10256]
  protocol: tcp
ingress:
  - subnet: 192.168.0.0/16
",
    );
}

// configpatcher/apply.go: patches apply in order; Castle applies none if one fails.
#[test]
fn patches_apply_in_order_and_all_or_nothing() {
    let out = apply(
        NET,
        &[
            "machine: {network: {hostname: {$patch: delete}}}",
            "machine: {network: {hostname: node-2}}",
        ],
    )
    .unwrap();
    assert_eq!(out[0]["machine"]["network"]["hostname"], "node-2");

    let mut d = docs(NET);
    let patches = [
        Patch::parse("machine: {network: {hostname: node-3}}").unwrap(),
        Patch::parse("machine: {network: {hostname: [a]}}").unwrap(),
    ];
    assert!(apply_patches(&mut d, &patches).is_err());
    assert_eq!(d, docs(NET));
}

// configpatcher/strategic.go: a delete for a document the config lacks — Talos carries the
// selector along silently; Castle says so instead.
#[test]
fn delete_in_a_missing_document_is_an_error() {
    assert_fails(
        EXT,
        &[
            "apiVersion: v1alpha1\nkind: LinkConfig\nname: eth7\naddresses: [{address: 10.0.0.1/24, $patch: delete}]",
        ],
        "in document 'v1alpha1/LinkConfig/eth7': the machine config has no such document",
    );
}

// merge/merge.go map[string]any: free-form maps (kubelet extraConfig) merge key by key,
// and a key below them must exist to be deleted (selector.go, reflect.Map lookup).
#[test]
fn free_form_maps_merge_deeply_and_delete_only_what_exists() {
    let config = "version: v1alpha1\nmachine: {kubelet: {extraConfig: {serializeImagePulls: false, featureGates: {A: true}}}}";
    let out = apply(
        config,
        &[
            "machine: {kubelet: {extraConfig: {featureGates: {B: true}, maxPods: 250}}}",
            "machine: {kubelet: {extraConfig: {serializeImagePulls: {$patch: delete}}}}",
        ],
    )
    .unwrap();
    assert_eq!(
        out[0]["machine"]["kubelet"]["extraConfig"],
        serde_json::json!({"featureGates": {"A": true, "B": true}, "maxPods": 250})
    );
    assert_fails(
        config,
        &["machine: {kubelet: {extraConfig: {featureGates: {C: {$patch: delete}}}}}"],
        "failed to delete path 'machine.kubelet.extraConfig.featureGates.C': lookup failed",
    );
}

// configloader/internal/decoder/selector.go deleteStructFrom: "searching for complex
// paths in slices is not supported" (an element of a list inside a list element).
#[test]
fn delete_in_a_nested_list_is_an_error() {
    assert_fails(
        "version: v1alpha1\nmachine: {network: {interfaces: [{interface: eth0, vlans: [{vlanId: 10}]}]}}",
        &[
            "machine: {network: {interfaces: [{interface: eth0, vlans: [{vlanId: 10, $patch: delete}]}]}}",
        ],
        "failed to delete path 'machine.network.interfaces.[0].vlans.[0]': searching for complex paths in slices is not supported",
    );
}

// merge/merge.go: a zero scalar leaves an unset struct field unset (nothing to encode),
// while a map key is set to it (`vl.SetMapIndex(k, vr.MapIndex(k))`).
#[test]
fn zero_scalars_set_map_keys_but_not_struct_fields() {
    let out = apply(
        "version: v1alpha1\nmachine: {install: {disk: /dev/sda}, nodeLabels: {a: b}}",
        &["machine: {install: {image: '', extraKernelArgs: []}, nodeLabels: {castle.dev/empty: ''}}"],
    )
    .unwrap();
    assert_eq!(
        out,
        docs(
            "version: v1alpha1\nmachine: {install: {disk: /dev/sda, extraKernelArgs: []}, nodeLabels: {a: b, castle.dev/empty: ''}}"
        )
    );
}

// configloader/internal/decoder/decoder.go `decode`: without `kind`, `apiVersion:
// v1alpha1` (or `machine:`/`cluster:`) makes a document the v1alpha1 config; a document
// with neither `kind` nor those is refused ("missing kind").
#[test]
fn a_patch_document_without_kind_is_the_v1alpha1_config() {
    let out = apply(
        CLUSTER,
        &["apiVersion: v1alpha1\nmachine: {install: {disk: /dev/vda}}"],
    )
    .unwrap();
    assert_eq!(out[0]["machine"]["install"]["disk"], "/dev/vda");
    assert!(out[0].get("apiVersion").is_none());
    assert_fails(
        CLUSTER,
        &["hostname: node-9"],
        "patch document #1: missing kind",
    );
    assert_fails(
        CLUSTER,
        &["kind: HostnameConfig\nhostname: node-9"],
        "patch document #1 (kind HostnameConfig): missing apiVersion",
    );
}

// types/v1alpha1/v1alpha1_types.go: `Endpoint *Endpoint` wraps a `*url.URL`, which
// merge/merge.go merges field by field: the patch's empty parts (here the path) keep
// the config's; the boolean `ForceQuery` always takes the patch's
// (types/v1alpha1/testdata/strategic/001 is the Talos case).
#[test]
fn control_plane_endpoint_merges_part_by_part() {
    let endpoint = |config: &str, patch: &str| {
        let out = apply(
            &format!("version: v1alpha1\ncluster: {{controlPlane: {{endpoint: '{config}'}}}}"),
            &[&format!(
                "cluster: {{controlPlane: {{endpoint: '{patch}'}}}}"
            )],
        )
        .unwrap();
        out[0]["cluster"]["controlPlane"]["endpoint"].clone()
    };
    assert_eq!(
        endpoint("https://a:6443/", "https://b:6443"),
        "https://b:6443/"
    );
    assert_eq!(
        endpoint("https://u@a:6443/p?q=1#f", "http://b"),
        "http://u@b/p?q=1#f"
    );
    assert_eq!(endpoint("https://a:6443/", "https://b/x"), "https://b/x");
    assert_eq!(endpoint("https://a:6443/", ""), "https://a:6443/");
    // Another string field is replaced whole.
    let out = apply(
        "version: v1alpha1\ncluster: {clusterName: https://a/}",
        &["cluster: {clusterName: https://b}"],
    )
    .unwrap();
    assert_eq!(out[0]["cluster"]["clusterName"], "https://b");
}

// types/v1alpha1/v1alpha1_types.go `ClusterInlineManifests.UnmarshalYAML`: a patch's
// manifest contents lose leading tabs and line breaks, not spaces
// (configpatcher/apply_test.go TestApplyWithManifestNewline is the Talos case).
#[test]
fn inline_manifest_contents_lose_leading_line_breaks() {
    let out = apply(
        "version: v1alpha1\ncluster: {}",
        &["cluster:\n  inlineManifests:\n    - name: a\n      contents: \"\\n\\t\\r\\n  kind: A\\n\"\n    - name: b\n      contents: \"kind: B\\n\""],
    )
    .unwrap();
    assert_eq!(
        out[0]["cluster"]["inlineManifests"],
        serde_json::json!([{"name": "a", "contents": "  kind: A\n"}, {"name": "b", "contents": "kind: B\n"}])
    );
}
