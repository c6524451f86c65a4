use std::path::Path;

use super::*;

fn lab_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/castle.toml"),
    )
    .unwrap()
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, "castle.toml", Path::new("."))
}

#[test]
fn the_lab_config_and_the_starter_template_validate() {
    let lab = load(&lab_text()).unwrap();
    assert_eq!(lab.nodes.len(), 3);
    assert_eq!(lab.control_planes().count(), 1);
    assert_eq!(lab.hostname("worker-1"), "lab-worker-1");
    assert!(lab.vault.as_ref().unwrap().spec.check().is_ok());
    let starter = load(&template::starter("prod")).unwrap();
    assert_eq!(starter.cluster.name, "prod");
}

/// (what to replace, with what, the key the error names, words of its message)
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "vmid = 422",
        "vmid = 421",
        "nodes[1].vmid",
        "already used by nodes[0] (cp-1)",
    ),
    (
        "name = \"worker-1\"",
        "name = \"cp-1\"",
        "nodes[1].name",
        "already used",
    ),
    (
        "ip = \"192.168.1.213/24\"",
        "ip = \"192.168.1.211/24\"",
        "nodes[2].ip",
        "already used by nodes[0]",
    ),
    (
        "vmid = 423",
        "vmid = 499",
        "nodes[2].vmid",
        "outside proxmox.vmid_range",
    ),
    ("vmid = 423", "vmid = 9000", "nodes[2].vmid", "template"),
    (
        "ip = \"192.168.1.212/24\"",
        "ip = \"192.168.1.212\"",
        "nodes[1].ip",
        "with prefix",
    ),
    (
        "ip = \"192.168.1.212/24\"",
        "ip = \"192.168.1.999/24\"",
        "nodes[1].ip",
        "with prefix",
    ),
    (
        "ip = \"192.168.1.212/24\"",
        "ip = \"10.0.0.1/33\"",
        "nodes[1].ip",
        "with prefix",
    ),
    (
        "role = \"controlplane\"",
        "role = \"worker\"",
        "nodes[0].role",
        "control plane",
    ),
    (
        "role = \"controlplane\"",
        "role = \"boss\"",
        "nodes.role",
        "unknown variant",
    ),
    (
        "endpoint = \"https://192.168.1.210:6443\"",
        "endpoint = \"192.168.1.210:6443\"",
        "cluster.endpoint",
        "not a URL",
    ),
    (
        "endpoint = \"https://pve.lab.invalid:8006\"",
        "endpoint = \"http://pve.lab.invalid:8006\"",
        "proxmox.endpoint",
        "https",
    ),
    (
        "name = \"lab\"",
        "name = \"Lab_Cluster\"",
        "cluster.name",
        "DNS label",
    ),
    (
        "gateway = \"192.168.1.1\"",
        "gateway = \"gateway\"",
        "cluster.gateway",
        "IP address",
    ),
    (
        "nameservers = [\"192.168.1.1\", \"1.1.1.1\"]",
        "nameservers = [\"192.168.1.1\", \"one\"]",
        "cluster.nameservers[1]",
        "IP address",
    ),
    (
        "token_id = \"castle@pve!rebirth\"",
        "token_id = \"castle\"",
        "proxmox.token_id",
        "USER@REALM!TOKENID",
    ),
    (
        "vmid_range = [420, 429]",
        "vmid_range = [429, 420]",
        "proxmox.vmid_range",
        "range",
    ),
    (
        "clone_concurrency = 2",
        "clone_concurrency = 0",
        "proxmox.clone_concurrency",
        "at least 1",
    ),
    (
        "clone_concurrency = 2",
        "clone_concurency = 2",
        "proxmox.clone_concurency",
        "unknown field",
    ),
    (
        "template_vmid = 9000",
        "template_vmid = \"9000\"",
        "proxmox.template_vmid",
        "invalid type",
    ),
    (
        "token = { file = \"proxmox-token\" }",
        "token = { file = \"proxmox-token\", env = \"PVE\" }",
        "proxmox.token",
        "not both",
    ),
    (
        "token = { file = \"proxmox-token\" }",
        "token = { }",
        "proxmox.token",
        "needs `file",
    ),
    (
        "token = { file = \"proxmox-token\" }",
        "token = { path = \"x\" }",
        "proxmox.token",
        "unknown field",
    ),
    (
        "tags = [\"tag:lab-k8s\"]",
        "tags = [\"lab-k8s\"]",
        "tailscale.tags[0]",
        "tag:name",
    ),
    (
        "hostname_pattern = \"{cluster}-{node}\"",
        "hostname_pattern = \"{cluster}\"",
        "tailscale.hostname_pattern",
        "{node}",
    ),
    (
        "key_ttl_seconds = 3600",
        "key_ttl_seconds = 5",
        "tailscale.key_ttl_seconds",
        "between",
    ),
    (
        "addresses = [\"192.168.1.240-192.168.1.250\"]",
        "addresses = [\"192.168.1.250-192.168.1.240\"]",
        "components.metallb.addresses[0]",
        "range",
    ),
    (
        "manifest = \"manifests/flux.yaml\"",
        "url = \"https://example.invalid/flux.yaml\"",
        "components.flux.url",
        "sha256",
    ),
    (
        "manifest = \"manifests/longhorn.yaml\"",
        "url = \"https://example.invalid/l.yaml\"\nsha256 = \"abc\"",
        "components.longhorn.sha256",
        "64 hex",
    ),
    (
        "{ kind = \"Deployment\", namespace = \"metallb-system\", name = \"controller\" }",
        "{ kind = \"Pod\", namespace = \"metallb-system\", name = \"controller\" }",
        "components.metallb.readiness[0].kind",
        "not Deployment",
    ),
    (
        "service = \"traefik/traefik\"",
        "service = \"traefik\"",
        "verify.service",
        "namespace/name",
    ),
    (
        "time_scale = 0.02",
        "time_scale = 0.0",
        "lab.time_scale",
        "positive",
    ),
    (
        "transient_fault_rate = 0.0",
        "transient_fault_rate = 1.5",
        "lab.transient_fault_rate",
        "between 0 and 1",
    ),
    (
        "cluster_ip = \"10.96.0.10\"",
        "cluster_ip = \"10.96.0\"",
        "kubernetes.coredns.cluster_ip",
        "IP address",
    ),
    (
        "pubkeys_from = [\"sa-signing-key\"]",
        "pubkeys_from = [\"nope\"]",
        "vault.spec",
        "`nope`",
    ),
    (
        "bound_audiences = [\"vault\"]\nbound_subject = \"system:serviceaccount:external-secrets:external-secrets\"",
        "bound_audiences = []",
        "vault.spec",
        "bound",
    ),
    (
        "password = { file = \"db-admin-password\" }",
        "password = \"hunter2\"",
        "vault.spec.database.connections.tazlab-db.password",
        "invalid type",
    ),
    (
        "memory_mib = 8192\ndisk_gib = 40",
        "memory_mib = 512\ndisk_gib = 40",
        "nodes[0].memory_mib",
        "too little",
    ),
    ("\n[lab]\n", "\n[labs]\n", "labs", "unknown field"),
    (
        "name = \"lab\"\n",
        "name = \"lab\"\ncolour = \"blue\"\n",
        "cluster.colour",
        "unknown field",
    ),
];

#[test]
fn every_malformed_config_is_refused_with_file_line_column_and_key() {
    let base = lab_text();
    assert!(CASES.len() >= 30);
    for (from, to, key, words) in CASES {
        assert!(
            base.contains(from),
            "case {key}: `{from}` is not in the lab config"
        );
        let text = base.replacen(from, to, 1);
        let err = load(&text).expect_err(key);
        let issue = err
            .issues
            .iter()
            .find(|i| i.key == *key && i.message.contains(words))
            .unwrap_or_else(|| panic!("case {key}: got {err}"));
        assert!(
            issue.message.contains(words),
            "case {key}: `{}` lacks `{words}`",
            issue.message
        );
        let changed_line = base[..base.find(from).unwrap()].matches('\n').count() + 1;
        let changed_lines = changed_line..=changed_line + to.matches('\n').count();
        // Section-level issues point at the section's header, above the changed line.
        assert!(
            changed_lines.contains(&issue.line) || issue.line < changed_line,
            "case {key}: line {} not at {changed_lines:?}",
            issue.line
        );
        assert!(issue.column >= 1);
        assert!(
            err.to_string().starts_with(&format!(
                "castle.toml:{}:{}: {key}: ",
                issue.line, issue.column
            )),
            "{err}"
        );
    }
}

#[test]
fn field_issues_point_at_the_exact_line_and_column() {
    let text = lab_text().replacen("vmid = 422", "vmid = 421", 1);
    let err = load(&text).unwrap_err();
    let line = text.lines().position(|l| l == "vmid = 421").unwrap() + 1;
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "vmid = 421")
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert_eq!(
        (err.issues[0].line, err.issues[0].column),
        (second, 1),
        "{err} (first at {line})"
    );
}

#[test]
fn validation_collects_every_issue() {
    let text = lab_text().replacen("vmid = 422", "vmid = 421", 1).replacen(
        "tags = [\"tag:lab-k8s\"]",
        "tags = [\"x\"]",
        1,
    );
    let err = load(&text).unwrap_err();
    assert_eq!(err.issues.len(), 2, "{err}");
}
