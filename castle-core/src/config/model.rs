use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secrets::SecretRef;

/// One cluster's castle.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster itself.
    pub cluster: Cluster,
    /// Where secret files live.
    #[serde(default)]
    pub secrets: SecretsSection,
    /// The Proxmox VE host.
    pub proxmox: Proxmox,
    /// The VMs.
    pub nodes: Vec<Node>,
    /// Machine-config patches.
    #[serde(default)]
    pub talos: Talos,
    /// The tailnet the nodes join.
    #[serde(default)]
    pub tailscale: Option<Tailscale>,
    /// The persistent Vault.
    #[serde(default)]
    pub vault: Option<Vault>,
    /// In-cluster bootstrap objects.
    #[serde(default)]
    pub kubernetes: Kubernetes,
    /// Bundled components.
    #[serde(default)]
    pub components: Components,
    /// Secrets made inside the cluster, copied into Vault KV after gitops.
    #[serde(default)]
    pub sync: Vec<SyncEntry>,
    /// The final checks.
    #[serde(default)]
    pub verify: Option<Verify>,
    /// Present only in the built-in lab: run against the simulators.
    #[serde(default)]
    pub lab: Option<Lab>,
    /// Where the journal and the cluster lock live (default: files beside castle.toml).
    #[serde(default)]
    pub state: State,
    #[serde(skip)]
    pub(super) base_dir: PathBuf,
    #[serde(skip)]
    pub(super) source: super::Source,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// A DNS label.
    pub name: String,
    /// The Kubernetes API URL, e.g. `https://192.168.1.210:6443`.
    pub endpoint: String,
    /// Talos version of the template and installer.
    pub talos_version: String,
    /// Kubernetes version.
    pub kubernetes_version: String,
    /// Talos installer image.
    pub installer_image: String,
    /// Disk Talos installs to.
    #[serde(default = "default_disk")]
    pub install_disk: String,
    /// Extra names on the Kubernetes API certificate.
    #[serde(default)]
    pub api_cert_sans: Vec<String>,
    /// Service-account issuers; the first signs.
    #[serde(default)]
    pub service_account_issuers: Vec<String>,
    /// API audiences.
    #[serde(default)]
    pub api_audiences: Vec<String>,
    /// The JWKS URI published by the API server.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A shared control-plane address that Talos moves between the control planes
    /// (`Layer2VIPConfig`); the endpoint's host when set.
    #[serde(default)]
    pub vip: Option<String>,
    /// Pod network CIDRs.
    #[serde(default = "default_pod_subnets")]
    pub pod_subnets: Vec<String>,
    /// Service network CIDRs (the first address of the first is the API service).
    #[serde(default = "default_service_subnets")]
    pub service_subnets: Vec<String>,
    /// Default gateway of the node network.
    pub gateway: String,
    /// DNS servers of the nodes.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Where to write kubeconfig and talosconfig (mode 0600); absent: not written.
    #[serde(default)]
    pub configs_dir: Option<String>,
}

fn default_disk() -> String {
    "/dev/sda".into()
}
fn default_pod_subnets() -> Vec<String> {
    vec!["10.244.0.0/16".into()]
}
fn default_service_subnets() -> Vec<String> {
    vec!["10.96.0.0/12".into()]
}

/// `[secrets]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// Directory of secret files, relative to castle.toml.
    #[serde(default = "default_secrets_dir")]
    pub dir: String,
    /// A missing file falls back to its environment variable.
    #[serde(default = "yes")]
    pub env_fallback: bool,
}

impl Default for SecretsSection {
    fn default() -> Self {
        Self {
            dir: default_secrets_dir(),
            env_fallback: true,
        }
    }
}

fn default_secrets_dir() -> String {
    "secrets".into()
}
fn yes() -> bool {
    true
}

/// `[proxmox]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Proxmox {
    /// `https://pve.example:8006`.
    pub endpoint: String,
    /// The node VMs live on.
    pub node: String,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    /// The token's secret.
    pub token: SecretRef,
    /// A PEM CA to pin.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Skip TLS verification (only when you must).
    #[serde(default)]
    pub insecure: bool,
    /// The golden Talos template.
    pub template_vmid: u32,
    /// Storage for full clones (a linked clone's disks stay beside the
    /// template's).
    #[serde(default)]
    pub storage: Option<String>,
    /// Disk format of full clones: `raw`, `qcow2` or `vmdk` (Proxmox refuses it
    /// for linked clones).
    #[serde(default)]
    pub format: Option<String>,
    /// Network bridge.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// VLAN tag.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// The VMIDs Castle may touch, inclusive.
    #[serde(deserialize_with = "exactly_two")]
    pub vmid_range: [u32; 2],
    /// The ownership tag.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Full instead of linked clones (linked ones are made whenever the
    /// template's storage can link).
    #[serde(default)]
    pub full_clone: bool,
    /// Clones at once per storage; default [`Proxmox::clone_slots`].
    #[serde(default)]
    pub clone_concurrency: Option<usize>,
    /// Resource pool the VMs join. Needed when the API token's rights come from a
    /// pool (VM.Allocate on `/pool/NAME` instead of on each `/vms/ID`).
    #[serde(default)]
    pub pool: Option<String>,
    /// Node the VMs are cloned to when it is not `node` (the template must be on
    /// shared storage).
    #[serde(default)]
    pub target: Option<String>,
}

/// `[lo, hi]` and nothing more: a fixed-size array alone lets a third number through.
fn exactly_two<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u32; 2], D::Error> {
    let v: Vec<u32> = Vec::deserialize(d)?;
    <[u32; 2]>::try_from(v.as_slice()).map_err(|_| {
        serde::de::Error::custom(format!(
            "{} given; write exactly two numbers, the lowest and highest VMID: [400, 409]",
            match v.len() {
                1 => "1 number".to_string(),
                n => format!("{n} numbers"),
            }
        ))
    })
}

fn default_bridge() -> String {
    "vmbr0".into()
}
fn default_tag() -> String {
    "castle".into()
}
impl Proxmox {
    /// Clones at once per storage: `clone_concurrency`, else 8 for linked clones
    /// and 2 for full ones. A clone makes its volumes under the storage's lock,
    /// and one that waits for it more than 10 s fails (pve-common
    /// `lock_file_full`): a linked clone holds it for about a second (an
    /// `lvcreate` of a thin snapshot), so eight keep the queue well inside that;
    /// a full clone copies every block after it, and more than two at once only
    /// share the disks' bandwidth.
    pub fn clone_slots(&self, full: bool) -> usize {
        self.clone_concurrency
            .unwrap_or(if full { 2 } else { 8 })
            .max(1)
    }
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs etcd and the API server.
    Controlplane,
    /// Runs workloads.
    Worker,
}

/// `[[nodes]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// A DNS label, unique.
    pub name: String,
    /// Control plane or worker.
    pub role: Role,
    /// Proxmox VMID, unique, inside the range.
    pub vmid: u32,
    /// Address with prefix, e.g. `192.168.1.211/24`.
    pub ip: String,
    /// vCPUs.
    #[serde(default = "default_cores")]
    pub cores: u32,
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Disk in GiB.
    #[serde(default = "default_disk_gib")]
    pub disk_gib: u32,
    /// The NIC's hardware address; absent: derived from the cluster name and VMID,
    /// so it is known before the VM exists (Talos selects the link by it).
    #[serde(default)]
    pub mac: Option<String>,
}

fn default_cores() -> u32 {
    2
}
fn default_memory() -> u32 {
    4096
}
fn default_disk_gib() -> u32 {
    32
}

impl Node {
    /// The address without its prefix.
    pub fn address(&self) -> &str {
        self.ip.split('/').next().unwrap_or(&self.ip)
    }

    /// The NIC's hardware address, lowercase: the configured one, or a locally
    /// administered unicast address (`02:` + five bytes of a hash of the cluster
    /// name and VMID) that is the same on every run.
    pub fn mac(&self, cluster: &str) -> String {
        match &self.mac {
            Some(m) => m.to_ascii_lowercase(),
            None => castle_talos::derived_mac(&format!("castle/{cluster}/{}", self.vmid)),
        }
    }
}

/// A patch source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// A YAML file relative to castle.toml.
    #[serde(default)]
    pub file: Option<String>,
    /// Inline YAML.
    #[serde(default)]
    pub inline: Option<String>,
    /// Only for this role.
    #[serde(default)]
    pub role: Option<Role>,
}

/// `[talos]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Talos {
    /// Patches, strategic merge or RFC 6902.
    #[serde(default)]
    pub patches: Vec<Patch>,
    /// Extra YAML documents appended to every machine config.
    #[serde(default)]
    pub extra_documents: Vec<String>,
}

/// `[tailscale]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tailscale {
    /// The tailnet (`-` = the credential's own).
    #[serde(default = "default_tailnet")]
    pub tailnet: String,
    /// OAuth client id.
    pub oauth_client_id: SecretRef,
    /// OAuth client secret.
    pub oauth_client_secret: SecretRef,
    /// Tags the nodes get (`tag:...`).
    pub tags: Vec<String>,
    /// Life of the auth key.
    #[serde(default = "default_ttl")]
    pub key_ttl_seconds: u64,
    /// `{cluster}` and `{node}` are replaced.
    #[serde(default = "default_pattern")]
    pub hostname_pattern: String,
    /// Extra `tailscale up` arguments.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

fn default_tailnet() -> String {
    "-".into()
}
fn default_ttl() -> u64 {
    3600
}

/// Tailnet hostnames when `[tailscale]` does not say.
pub(super) const DEFAULT_HOSTNAME_PATTERN: &str = "{cluster}-{node}";

fn default_pattern() -> String {
    DEFAULT_HOSTNAME_PATTERN.into()
}

/// `[vault]`: connection plus the declarative spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vault {
    /// `https://vault.example:8200`.
    pub address: String,
    /// A PEM CA to pin.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The token.
    pub token: SecretRef,
    /// What must exist (`[vault.spec]`).
    #[serde(default)]
    pub spec: castle_vault::VaultSpec<SecretRef>,
    /// The generated keypair that signs the cluster's service-account tokens.
    #[serde(default)]
    pub service_account_key: Option<String>,
}

/// A Kubernetes Secret created from secret refs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSecret {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Secret type; absent: `kubernetes.io/dockerconfigjson` with `dockerconfigjson`,
    /// else `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Labels (e.g. the ones an operator adopts a Secret by).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Keys and where their values come from.
    #[serde(default)]
    pub data: BTreeMap<String, SecretRef>,
    /// An image pull secret composed from a registry, a user and a token: the
    /// `.dockerconfigjson` key kubelet reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerconfigjson: Option<DockerConfigJson>,
}

/// The Secret type of an image pull secret.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";

impl KubeSecret {
    /// The Secret's `type`: the one given, else what its content implies.
    pub fn secret_type(&self) -> &str {
        match (&self.kind, &self.dockerconfigjson) {
            (Some(t), _) => t,
            (None, Some(_)) => DOCKER_CONFIG_JSON,
            (None, None) => "Opaque",
        }
    }

    /// Every secret ref the Secret's values come from, with the key each fills.
    pub fn refs(&self) -> Vec<(String, &SecretRef)> {
        let mut out: Vec<(String, &SecretRef)> =
            self.data.iter().map(|(k, r)| (k.clone(), r)).collect();
        if let Some(d) = &self.dockerconfigjson {
            out.push((".dockerconfigjson".into(), &d.token));
        }
        out
    }
}

/// `dockerconfigjson = { registry, username, token }` of a `[[kubernetes.secrets]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfigJson {
    /// The registry as image references name it, e.g. `ghcr.io`.
    pub registry: String,
    /// The registry user (not a secret).
    pub username: String,
    /// The token or password.
    pub token: SecretRef,
}

/// A CoreDNS forward.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// The zone, e.g. `ts.net`.
    pub zone: String,
    /// Upstream servers.
    pub to: Vec<String>,
}

/// `[kubernetes.coredns]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CoreDns {
    /// Deploy the user-managed CoreDNS.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Replicas.
    #[serde(default = "two")]
    pub replicas: u32,
    /// The ClusterIP of kube-dns.
    #[serde(default = "default_dns_ip")]
    pub cluster_ip: String,
    /// Zone forwards.
    #[serde(default)]
    pub forwards: Vec<Forward>,
    /// The CoreDNS image; pinned by default to the version Talos v1.12 deploys.
    #[serde(default = "default_coredns_image")]
    pub image: String,
}

impl Default for CoreDns {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: 2,
            cluster_ip: default_dns_ip(),
            forwards: Vec::new(),
            image: default_coredns_image(),
        }
    }
}

/// What Talos v1.12 deploys as its own CoreDNS (`pkg/machinery/constants`
/// `CoreDNSImage` and `DefaultCoreDNSVersion`, v1.12.11).
pub const DEFAULT_COREDNS_IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.14.2";

fn default_coredns_image() -> String {
    DEFAULT_COREDNS_IMAGE.into()
}

fn two() -> u32 {
    2
}
fn default_dns_ip() -> String {
    "10.96.0.10".into()
}

/// `[kubernetes]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// Namespaces to create.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Bootstrap Secrets.
    #[serde(default)]
    pub secrets: Vec<KubeSecret>,
    /// User-managed CoreDNS.
    #[serde(default)]
    pub coredns: CoreDns,
}

/// A readiness rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// Deployment, DaemonSet or StatefulSet.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A Helm chart that Flux installs (`chart = { repo, name, version }`): Castle
/// applies its source (a `HelmRepository`, or an `OCIRepository` for `oci://`) and a
/// `HelmRelease`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    /// The Helm repository (`https://...`) or the OCI registry path (`oci://host/path`,
    /// the chart being `<repo>/<name>`).
    pub repo: String,
    /// The chart's name.
    pub name: String,
    /// The exact version; required (`castle validate` refuses a chart without one).
    #[serde(default)]
    pub version: Option<String>,
    /// The HelmRelease's and the Helm release's name; default per component
    /// (`external-secrets`, `metallb`, `longhorn`).
    #[serde(default)]
    pub release: Option<String>,
    /// The namespace of the HelmRelease, its source and the release; default per
    /// component (`external-secrets`, `metallb-system`, `longhorn-system`).
    #[serde(default)]
    pub namespace: Option<String>,
}

impl Chart {
    /// Whether the chart comes from an OCI registry.
    pub fn is_oci(&self) -> bool {
        self.repo.starts_with("oci://")
    }
}

/// A chart component as Flux installs it (see [`crate::config::Config::release`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    /// The HelmRelease's (and Helm release's) name.
    pub name: String,
    /// Its namespace, and its source's.
    pub namespace: String,
    /// The chart.
    pub chart: Chart,
    /// `spec.values`.
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// A component's manifests and readiness.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Install it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A local manifest file.
    #[serde(default)]
    pub manifest: Option<String>,
    /// A URL, pinned by `sha256`: fetched once into `.castle/downloads/`.
    #[serde(default)]
    pub url: Option<String>,
    /// Hex sha256 of the manifest's content (required for Flux and for a `url`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// A Helm chart Flux installs, instead of a manifest.
    #[serde(default)]
    pub chart: Option<Chart>,
    /// The chart's values (a TOML table, given to the HelmRelease as `spec.values`).
    #[serde(default)]
    pub values: Option<serde_json::Map<String, serde_json::Value>>,
    /// Workloads that must be ready.
    #[serde(default)]
    pub readiness: Vec<Readiness>,
    /// MetalLB: address ranges (`a-b` or CIDR).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Flux: the Git repository.
    #[serde(default)]
    pub git_url: Option<String>,
    /// Flux: branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// Flux: path in the repository.
    #[serde(default)]
    pub path: Option<String>,
    /// Flux: Git token.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// Flux: reconcile interval.
    #[serde(default)]
    pub interval: Option<String>,
    /// ESO: the ClusterSecretStore Castle applies once ESO's CRDs are served.
    #[serde(default)]
    pub store: Option<SecretStore>,
}

/// `[components.eso.store]`: the ClusterSecretStore that reads Vault KV, logging in
/// with the JWT role Castle configured in Vault before the cluster existed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretStore {
    /// The ClusterSecretStore's name.
    pub name: String,
    /// The KV v2 mount it reads (one of `[[vault.spec.kv]]`).
    pub mount: String,
    /// The JWT auth mount (one of `[[vault.spec.jwt]]`; default: `jwt`).
    #[serde(default = "default_jwt_mount")]
    pub jwt_path: String,
    /// The role of that mount ESO logs in with.
    pub role: String,
    /// `namespace/name` of the service account whose token ESO presents.
    #[serde(default = "default_eso_account")]
    pub service_account: String,
    /// The token's audiences; default: the role's `bound_audiences`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The Vault address as the cluster reaches it; default: `[vault] address`.
    #[serde(default)]
    pub server: Option<String>,
}

fn default_jwt_mount() -> String {
    "jwt".into()
}
fn default_eso_account() -> String {
    "external-secrets/external-secrets".into()
}

impl SecretStore {
    /// The service account's namespace and name.
    pub fn account(&self) -> (&str, &str) {
        self.service_account
            .split_once('/')
            .unwrap_or(("", &self.service_account))
    }

    /// The `sub` of the account's tokens, as kube-apiserver issues them
    /// (`system:serviceaccount:<namespace>:<name>`).
    pub fn subject(&self) -> String {
        let (ns, name) = self.account();
        format!("system:serviceaccount:{ns}:{name}")
    }
}

/// `[components.*]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Components {
    /// External Secrets Operator.
    #[serde(default)]
    pub eso: Option<Component>,
    /// MetalLB.
    #[serde(default)]
    pub metallb: Option<Component>,
    /// Longhorn.
    #[serde(default)]
    pub longhorn: Option<Component>,
    /// Flux.
    #[serde(default)]
    pub flux: Option<Component>,
}

/// `[verify]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// `namespace/name` of the LoadBalancer Service.
    pub service: String,
    /// A URL to probe.
    #[serde(default)]
    pub url: Option<String>,
    /// The status it must answer.
    #[serde(default = "ok_status")]
    pub expect_status: u16,
}

fn ok_status() -> u16 {
    200
}

/// `[lab]`: the built-in lab's simulators.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Lab {
    /// Real seconds per modelled second.
    #[serde(default = "default_scale")]
    pub time_scale: f64,
    /// Seed of the fault injection.
    #[serde(default)]
    pub seed: u64,
    /// Share of calls that fail transiently.
    #[serde(default)]
    pub transient_fault_rate: f64,
    /// Which Proxmox VE the lab simulates: `current` (errors in the body) or
    /// `older` (before libpve-http-server-perl 5.2.0: error text only in the
    /// reason phrase).
    #[serde(default)]
    pub proxmox_server: LabProxmoxServer,
    /// Simulate an API token whose rights come only from this resource pool (set
    /// `proxmox.pool` to the same name).
    #[serde(default)]
    pub proxmox_token_pool: Option<String>,
    /// Failures the lab's systems show (for `castle doctor`, and to see what a
    /// run does against them): each holds for as long as it is listed.
    #[serde(default)]
    pub inject: Vec<LabFault>,
    /// The chart catalogue of the lab's simulated Helm repositories and OCI
    /// registries (a TOML file of `[[chart]]` entries: `repo`, `name`, `version`,
    /// the `manifests` it renders, an optional `values_schema`).
    #[serde(default)]
    pub charts: Option<String>,
}

/// One chart version of the lab's catalogue (`[lab] charts`), read.
#[derive(Debug, Clone, PartialEq)]
pub struct LabChart {
    /// Its repository (`https://...` or `oci://...`).
    pub repo: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it renders.
    pub objects: Vec<serde_json::Value>,
    /// Its `values.schema.json`.
    pub values_schema: Option<serde_json::Value>,
}

/// `[lab] inject`: one failure of a real system, as the lab shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabFault {
    /// The Proxmox token lacks `VM.Clone` on the template.
    ProxmoxMissingPrivilege,
    /// The template VMID does not exist.
    ProxmoxMissingTemplate,
    /// The Proxmox node is offline.
    ProxmoxNodeOffline,
    /// The clone storage has almost no room.
    ProxmoxStorageFull,
    /// Vault is sealed.
    VaultSealed,
    /// Vault's token lacks `sudo` on the lease paths.
    VaultMissingCapability,
    /// Vault's token expires in ten minutes and does not renew.
    VaultShortToken,
    /// The Tailscale OAuth client may only read devices.
    TailscaleNarrowScopes,
    /// The Flux branch does not exist in the repository.
    GitMissingBranch,
    /// The git server refuses the Flux token.
    GitTokenRefused,
}

impl LabFault {
    /// Its name in castle.toml.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// `[lab] proxmox_server`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LabProxmoxServer {
    /// libpve-http-server-perl 5.2.0 and later.
    #[default]
    Current,
    /// PVE 7.x and unpatched 8.0-8.3.
    Older,
}

fn default_scale() -> f64 {
    0.02
}

/// `[[sync]]`: a Secret made inside the cluster (a database operator's user
/// Secret), copied into Vault KV v2 for apps that read Vault.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEntry {
    /// `namespace/name` of the Secret.
    pub from: String,
    /// Its keys to copy: a list (same names in Vault) or a table from the Secret's
    /// key to the KV field (`{ password = "GRAFANA_DB_PASSWORD" }`).
    pub keys: SyncKeys,
    /// The KV v2 mount (one of `[[vault.spec.kv]]`).
    pub mount: String,
    /// The path inside the mount.
    pub path: String,
}

/// `[[sync]] keys`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SyncKeys {
    /// The same names in Vault.
    Same(Vec<String>),
    /// Secret key to KV field.
    Renamed(BTreeMap<String, String>),
}

impl SyncKeys {
    /// (Secret key, KV field) pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            SyncKeys::Same(keys) => keys.iter().map(|k| (k.clone(), k.clone())).collect(),
            SyncKeys::Renamed(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// `[state]`: where the journal and the cluster's lock live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// `file` (the default): `<cluster dir>/.castle/state.json` and a file lock, for
    /// one machine. `vault`: a KV v2 entry and a leased lock, for a team or CI.
    #[serde(default)]
    pub backend: StateBackendKind,
    /// The KV v2 mount (vault backend; default `secret`).
    #[serde(default)]
    pub mount: Option<String>,
    /// The cluster's folder in the mount (vault backend; default
    /// `castle/<cluster>/state`): it holds `journal` and `lock`.
    #[serde(default)]
    pub path: Option<String>,
    /// Another Vault than `[vault]`'s (with `token`).
    #[serde(default)]
    pub address: Option<String>,
    /// A PEM CA to pin for `address`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The token for `address`.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// How long the lock's lease lives without a heartbeat (default 60 s; it is
    /// renewed every third of it while the run lives).
    #[serde(default)]
    pub lease_seconds: Option<u64>,
}

/// `[state] backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    /// Files in the cluster directory.
    #[default]
    File,
    /// Vault KV v2.
    Vault,
}

/// `[state] mount` when unset.
pub const DEFAULT_STATE_MOUNT: &str = "secret";
/// `[state] lease_seconds` when unset.
pub const DEFAULT_LEASE_SECONDS: u64 = 60;

impl State {
    /// The KV v2 mount.
    pub fn mount(&self) -> &str {
        self.mount.as_deref().unwrap_or(DEFAULT_STATE_MOUNT)
    }

    /// The cluster's folder in the mount.
    pub fn path(&self, cluster: &str) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("castle/{cluster}/state"))
    }

    /// The lease's life.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS))
    }
}
