//! The castle.toml reference: every section and key, its type, default, an example
//! and the steps that use it, rendered by [`markdown`] into `docs/castle-toml.md`.
//!
//! It is a table kept beside the serde structs of the config model, and the tests
//! hold the two together: each section's keys are the fields serde expects there
//! (read from serde's own "unknown field, expected one of" answer), each enum's
//! values are the variants serde accepts, an example made of every key's example
//! parses, a key marked required is missing without it, and a documented default is
//! what serde fills in (the config parsed without the key equals the config parsed
//! with the default written out).

use std::fmt::Write as _;

/// One table of castle.toml.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// Its path as the reference names it: `proxmox`, `vault.spec.jwt.roles.<name>`.
    pub path: &'static str,
    /// The concrete path the example uses (`<name>` filled in).
    pub header: &'static str,
    /// An array of tables (`[[nodes]]`).
    pub array: bool,
    /// What it is for.
    pub about: &'static str,
    /// The steps (and commands) that read it.
    pub used_by: &'static str,
    /// Its keys, in the order the reference lists them.
    pub keys: &'static [Key],
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key.
    pub name: &'static str,
    /// Its type, in words.
    pub ty: &'static str,
    /// Whether it must be given, and what holds when it is not (`Optional("")`:
    /// nothing worth saying).
    pub given: Given,
    /// A TOML value for it; empty for a key whose value is a section of its own (the
    /// section with the path `<this section>.<key>`, or [`Key::table`]).
    pub example: &'static str,
    /// The values an enum accepts (empty for other types).
    pub one_of: &'static [&'static str],
    /// The section documenting the key's table type, when it has one.
    pub table: Option<&'static str>,
    /// What it means.
    pub about: &'static str,
}

/// Whether a key must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// Parsing fails without it.
    Required,
    /// Without it, serde fills in this TOML value.
    Default(&'static str),
    /// It may be left out; then this holds.
    Optional(&'static str),
}

const fn key(
    name: &'static str,
    ty: &'static str,
    given: Given,
    example: &'static str,
    about: &'static str,
) -> Key {
    Key {
        name,
        ty,
        given,
        example,
        one_of: &[],
        table: None,
        about,
    }
}

const fn choice(
    name: &'static str,
    one_of: &'static [&'static str],
    given: Given,
    example: &'static str,
    about: &'static str,
) -> Key {
    Key {
        name,
        ty: "string",
        given,
        example,
        one_of,
        table: None,
        about,
    }
}

/// A key whose value is a table documented as its own section.
const fn table(
    name: &'static str,
    ty: &'static str,
    section: &'static str,
    given: Given,
    example: &'static str,
    about: &'static str,
) -> Key {
    Key {
        name,
        ty,
        given,
        example,
        one_of: &[],
        table: Some(section),
        about,
    }
}

use Given::{Default as Def, Optional as Opt, Required as Req};

const SECRET_REF: &str = "secret ref";
const NONE: Given = Opt("");

/// Every section, in the reference's order.
pub const SECTIONS: &[Section] = &[
    Section {
        path: "",
        header: "",
        array: false,
        about: "The file's top level holds only sections. Paths in any of them are relative to the directory holding castle.toml (the cluster directory).",
        used_by: "every command",
        keys: &[
            table(
                "cluster",
                "table",
                "cluster",
                Req,
                "",
                "The cluster itself.",
            ),
            table(
                "secrets",
                "table",
                "secrets",
                NONE,
                "",
                "Where secret files live.",
            ),
            table(
                "proxmox",
                "table",
                "proxmox",
                Req,
                "",
                "The Proxmox VE host.",
            ),
            table(
                "nodes",
                "array of tables",
                "nodes",
                Req,
                "",
                "The VMs, one table each.",
            ),
            table(
                "talos",
                "table",
                "talos",
                NONE,
                "",
                "Machine-config patches.",
            ),
            table(
                "tailscale",
                "table",
                "tailscale",
                Opt("the nodes join no tailnet"),
                "",
                "The tailnet the nodes join.",
            ),
            table(
                "vault",
                "table",
                "vault",
                Opt("no Vault steps"),
                "",
                "The persistent Vault and what must exist in it.",
            ),
            table(
                "kubernetes",
                "table",
                "kubernetes",
                NONE,
                "",
                "Objects the `engine` step creates in the new cluster.",
            ),
            table(
                "components",
                "table",
                "components",
                NONE,
                "",
                "ESO, MetalLB, Longhorn and Flux.",
            ),
            table(
                "sync",
                "array of tables",
                "sync",
                NONE,
                "",
                "Secrets made inside the cluster, copied into Vault KV.",
            ),
            table(
                "verify",
                "table",
                "verify",
                Opt("no `verify` step"),
                "",
                "The final checks.",
            ),
            table(
                "lab",
                "table",
                "lab",
                Opt("a real cluster"),
                "",
                "Present only in the built-in lab: run against the simulators.",
            ),
            table(
                "state",
                "table",
                "state",
                Opt("files in `.castle/`"),
                "",
                "Where the journal and the cluster lock live.",
            ),
        ],
    },
    Section {
        path: SECRET_REF,
        header: "proxmox.token",
        array: false,
        about: "Not a section: the value of every key of type *secret ref*, written inline, e.g. `token = { file = \"proxmox-token\" }`. Exactly one of the three keys. castle.toml never holds a secret value. `castle validate` checks each ref's shape and reads each one present on the machine; one whose file or variable is absent there is listed, not failed. `castle create`, `plan` and `doctor` refuse to start until every ref resolves.",
        used_by: "`secrets` (file and env refs, resolved into memory), `vault-db` and `engine` (vault refs)",
        keys: &[
            key(
                "file",
                "string",
                NONE,
                "\"proxmox-token\"",
                "A file inside `[secrets] dir` (mode 0600); with `env_fallback`, a missing file falls back to the variable named after it (`proxmox-token` -> `PROXMOX_TOKEN`).",
            ),
            key(
                "env",
                "string",
                NONE,
                "\"PROXMOX_TOKEN\"",
                "An environment variable.",
            ),
            key(
                "vault",
                "string",
                NONE,
                "\"app-admin\"",
                "The `name` of a `[[vault.spec.generated]]` password: generated once into Vault KV and read from there (only for `[[kubernetes.secrets]]` values and Vault database connection passwords).",
            ),
        ],
    },
    Section {
        path: "cluster",
        header: "cluster",
        array: false,
        about: "The cluster: its name, versions, addresses and networks.",
        used_by: "`talos` (machine configs, kubeconfig), `platform` (the gateway in each VM's `ipconfig0`), `vault-jwt` (the issuer Vault trusts), `castle doctor`",
        keys: &[
            key(
                "name",
                "string",
                Req,
                "\"lab\"",
                "A DNS label; names the VMs' tag `castle-<name>`, tailnet hostnames and Vault paths.",
            ),
            key(
                "endpoint",
                "string (URL)",
                Req,
                "\"https://192.168.1.210:6443\"",
                "The Kubernetes API URL: a control plane's address, or the `vip`.",
            ),
            key(
                "talos_version",
                "string",
                Req,
                "\"v1.12.0\"",
                "Talos version of the template and installer.",
            ),
            key(
                "kubernetes_version",
                "string",
                Req,
                "\"1.34.1\"",
                "Kubernetes version.",
            ),
            key(
                "installer_image",
                "string (image reference)",
                Req,
                "\"factory.talos.dev/installer/<schematic id>:v1.12.0\"",
                "Talos installer image: your Image Factory schematic's, with `siderolabs/tailscale` (and `iscsi-tools`, `util-linux-tools` for Longhorn).",
            ),
            key(
                "install_disk",
                "string",
                Def("\"/dev/sda\""),
                "\"/dev/vda\"",
                "Disk Talos installs to.",
            ),
            key(
                "api_cert_sans",
                "array of strings",
                Def("[]"),
                "[\"lab-k8s.tail0000.ts.net\", \"192.168.1.210\"]",
                "Extra names on the Kubernetes API certificate.",
            ),
            key(
                "service_account_issuers",
                "array of strings",
                Def("[]"),
                "[\"https://192.168.1.210:6443\"]",
                "Service-account issuers; the first signs (empty: the endpoint). Vault's `bound_issuer` must equal the first.",
            ),
            key(
                "api_audiences",
                "array of strings",
                Def("[]"),
                "[\"https://kubernetes.default.svc.cluster.local\", \"vault\"]",
                "API audiences.",
            ),
            key(
                "jwks_uri",
                "string (URL)",
                Opt("the API server's default"),
                "\"https://192.168.1.210:6443/openid/v1/jwks\"",
                "The JWKS URI the API server publishes.",
            ),
            key(
                "vip",
                "string (IP)",
                Opt("no shared address"),
                "\"192.168.1.210\"",
                "A shared control-plane address Talos moves between the control planes (`Layer2VIPConfig`); the endpoint's host when set.",
            ),
            key(
                "pod_subnets",
                "array of CIDRs",
                Def("[\"10.244.0.0/16\"]"),
                "[\"10.244.0.0/16\"]",
                "Pod network CIDRs.",
            ),
            key(
                "service_subnets",
                "array of CIDRs",
                Def("[\"10.96.0.0/12\"]"),
                "[\"10.96.0.0/12\"]",
                "Service network CIDRs (the first address of the first is the API service).",
            ),
            key(
                "gateway",
                "string (IP)",
                Req,
                "\"192.168.1.1\"",
                "Default gateway of the node network; inside each node's subnet.",
            ),
            key(
                "nameservers",
                "array of IPs",
                Def("[]"),
                "[\"192.168.1.1\", \"1.1.1.1\"]",
                "DNS servers of the nodes.",
            ),
            key(
                "configs_dir",
                "string (path)",
                Opt("kubeconfig and talosconfig are not written"),
                "\"configs\"",
                "Where `talos` writes kubeconfig and talosconfig (mode 0600).",
            ),
        ],
    },
    Section {
        path: "secrets",
        header: "secrets",
        array: false,
        about: "Where the files of `{ file = ... }` refs live.",
        used_by: "`secrets`, `castle validate`",
        keys: &[
            key(
                "dir",
                "string (path)",
                Def("\"secrets\""),
                "\"secrets\"",
                "Directory of secret files (keep it mode 0700 and out of git).",
            ),
            key(
                "env_fallback",
                "bool",
                Def("true"),
                "false",
                "A missing file falls back to its environment variable (`github-token` -> `GITHUB_TOKEN`).",
            ),
        ],
    },
    Section {
        path: "proxmox",
        header: "proxmox",
        array: false,
        about: "The Proxmox VE host, its API token and the VMIDs Castle may touch. See docs/first-real-run.md for the token's privileges.",
        used_by: "`platform`, `castle destroy`, `castle status`, `castle plan`, `castle doctor`",
        keys: &[
            key(
                "endpoint",
                "string (URL)",
                Req,
                "\"https://pve.example.internal:8006\"",
                "The API's URL.",
            ),
            key(
                "node",
                "string",
                Req,
                "\"pve\"",
                "The node the VMs live on.",
            ),
            key(
                "token_id",
                "string",
                Req,
                "\"castle@pve!castle\"",
                "The API token's id, `USER@REALM!TOKENID`.",
            ),
            table(
                "token",
                "secret ref",
                SECRET_REF,
                Req,
                "",
                "The API token's secret.",
            ),
            key(
                "ca_file",
                "string (path)",
                Opt("the system's trust store"),
                "\"pve-ca.pem\"",
                "A PEM CA to pin (`castle doctor` names the one to pin, with its fingerprint).",
            ),
            key(
                "insecure",
                "bool",
                Def("false"),
                "true",
                "Skip TLS verification (only when you must).",
            ),
            key(
                "template_vmid",
                "integer",
                Req,
                "9000",
                "The golden Talos template (a VM template with a boot disk).",
            ),
            key(
                "storage",
                "string",
                Opt("the template's storage"),
                "\"local-lvm\"",
                "Storage for full clones (a linked clone's disks stay beside the template's; Proxmox refuses `storage` for one).",
            ),
            key(
                "format",
                "string",
                Opt("the storage's default"),
                "\"qcow2\"",
                "Disk format of full clones: `raw`, `qcow2` or `vmdk` (Proxmox refuses it for linked clones).",
            ),
            key(
                "bridge",
                "string",
                Def("\"vmbr0\""),
                "\"vmbr1\"",
                "Network bridge.",
            ),
            key("vlan", "integer", Opt("untagged"), "20", "VLAN tag."),
            key(
                "vmid_range",
                "[integer, integer]",
                Req,
                "[400, 409]",
                "The VMIDs Castle may touch, inclusive: it never touches a VM outside them.",
            ),
            key(
                "tag",
                "string",
                Def("\"castle\""),
                "\"castle\"",
                "The ownership tag: Castle touches only VMs with it (and `castle-<cluster>`).",
            ),
            key(
                "full_clone",
                "bool",
                Def("false"),
                "true",
                "Full instead of linked clones; linked ones are made whenever the template's storage can link (lvmthin, zfspool, rbd, btrfs, directory storages; not plain LVM or iSCSI).",
            ),
            key(
                "clone_concurrency",
                "integer",
                Opt("8 for linked clones, 2 for full ones"),
                "4",
                "Clones at once per storage (a clone makes its volume under the storage's lock, which a waiting clone gives up after 10 s).",
            ),
            key(
                "pool",
                "string",
                Opt("no pool"),
                "\"castle\"",
                "Resource pool the VMs join; needed when the token's rights come from a pool (privileges on `/pool/NAME`).",
            ),
            key(
                "target",
                "string",
                Opt("`node`"),
                "\"pve2\"",
                "Node the VMs are cloned to when it is not `node` (the template on shared storage).",
            ),
        ],
    },
    Section {
        path: "nodes",
        header: "nodes",
        array: true,
        about: "One table per VM.",
        used_by: "`platform` (VMs), `talos` (machine configs), `tailnet-key` (hostnames), `castle doctor`",
        keys: &[
            key("name", "string", Req, "\"cp-1\"", "A DNS label, unique."),
            choice(
                "role",
                &["controlplane", "worker"],
                Req,
                "\"controlplane\"",
                "Control plane (etcd, the API server) or worker.",
            ),
            key(
                "vmid",
                "integer",
                Req,
                "421",
                "Proxmox VMID, unique, inside `proxmox.vmid_range`.",
            ),
            key(
                "ip",
                "string (IP/prefix)",
                Req,
                "\"192.168.1.211/24\"",
                "The node's address with prefix; Castle sets it as the VM's `ipconfig0` (a cloud-init drive on the template) and in its machine config.",
            ),
            key("cores", "integer", Def("2"), "4", "vCPUs."),
            key(
                "memory_mib",
                "integer",
                Def("4096"),
                "8192",
                "Memory in MiB.",
            ),
            key(
                "disk_gib",
                "integer",
                Def("32"),
                "40",
                "Disk in GiB (the clone's disk is grown to it).",
            ),
            key(
                "mac",
                "string",
                Opt("derived from the cluster name and VMID"),
                "\"02:1a:2b:3c:4d:5e\"",
                "The NIC's hardware address (for DHCP reservations); the derived one is the same on every run.",
            ),
        ],
    },
    Section {
        path: "talos",
        header: "talos",
        array: false,
        about: "Changes to the machine configs Castle renders.",
        used_by: "`talos`, `castle talos render`",
        keys: &[
            table(
                "patches",
                "array of tables",
                "talos.patches",
                Def("[]"),
                "",
                "Patches, strategic merge or RFC 6902, in order.",
            ),
            key(
                "extra_documents",
                "array of strings (YAML)",
                Def("[]"),
                "[\"apiVersion: v1alpha1\\nkind: ExtensionServiceConfig\\nname: example\\n\"]",
                "Extra YAML documents appended to every machine config.",
            ),
        ],
    },
    Section {
        path: "talos.patches",
        header: "talos.patches",
        array: true,
        about: "One patch: a file or inline YAML (exactly one), for every node or one role.",
        used_by: "`talos`",
        keys: &[
            key(
                "file",
                "string (path)",
                NONE,
                "\"patches/kubelet.yaml\"",
                "A YAML file.",
            ),
            key(
                "inline",
                "string (YAML)",
                NONE,
                "\"machine:\\n  kubelet:\\n    extraArgs:\\n      rotate-server-certificates: \\\"true\\\"\\n\"",
                "Inline YAML.",
            ),
            choice(
                "role",
                &["controlplane", "worker"],
                Opt("every node"),
                "\"worker\"",
                "Only nodes of this role.",
            ),
        ],
    },
    Section {
        path: "tailscale",
        header: "tailscale",
        array: false,
        about: "The tailnet the nodes join through Talos's tailscale extension. Castle mints one reusable, ephemeral, preauthorized, tagged auth key per run (kept in memory only) and deletes the previous incarnation's devices.",
        used_by: "`tailnet-key`, `talos` (the extension's config), `castle destroy`, `castle tailscale mint-key`, `castle doctor`",
        keys: &[
            key(
                "tailnet",
                "string",
                Def("\"-\""),
                "\"example.com\"",
                "The tailnet (`-`: the OAuth client's own).",
            ),
            table(
                "oauth_client_id",
                "secret ref",
                SECRET_REF,
                Req,
                "{ file = \"tailscale-client-id\" }",
                "OAuth client id (scopes `auth_keys` and `devices:core`).",
            ),
            table(
                "oauth_client_secret",
                "secret ref",
                SECRET_REF,
                Req,
                "{ file = \"tailscale-client-secret\" }",
                "OAuth client secret.",
            ),
            key(
                "tags",
                "array of strings",
                Req,
                "[\"tag:lab-k8s\"]",
                "Tags the nodes get (`tag:...`); the OAuth client must be allowed to assign them.",
            ),
            key(
                "key_ttl_seconds",
                "integer",
                Def("3600"),
                "3600",
                "Life of the auth key.",
            ),
            key(
                "hostname_pattern",
                "string",
                Def("\"{cluster}-{node}\""),
                "\"{cluster}-{node}\"",
                "Tailnet hostnames; `{cluster}` and `{node}` are replaced.",
            ),
            key(
                "extra_args",
                "array of strings",
                Def("[]"),
                "[\"--accept-routes\"]",
                "Extra `tailscale up` arguments.",
            ),
        ],
    },
    Section {
        path: "vault",
        header: "vault",
        array: false,
        about: "The persistent Vault (or OpenBao) Castle configures before the cluster exists. The token is Castle's own and never reaches the cluster; its policy is in docs/first-real-run.md.",
        used_by: "`vault-jwt`, `vault-db`, `engine` (generated passwords), `sync`, `castle vault plan|apply`, `castle destroy` (leases), `castle doctor`",
        keys: &[
            key(
                "address",
                "string (URL)",
                Req,
                "\"https://vault.example.internal:8200\"",
                "Vault's address.",
            ),
            key(
                "ca_file",
                "string (path)",
                Opt("the system's trust store"),
                "\"vault-ca.pem\"",
                "A PEM CA to pin; also the ClusterSecretStore's `caBundle`.",
            ),
            table(
                "token",
                "secret ref",
                SECRET_REF,
                Req,
                "{ file = \"vault-token\" }",
                "Castle's token.",
            ),
            table(
                "spec",
                "table",
                "vault.spec",
                NONE,
                "",
                "What must exist in Vault.",
            ),
            key(
                "service_account_key",
                "string",
                Opt("Talos generates the key"),
                "\"sa-signing-key\"",
                "The name of a `[[vault.spec.generated]]` ecdsa-p256 keypair that signs the cluster's service-account tokens (kept across rebirths, so Vault's JWT mount keeps trusting them).",
            ),
        ],
    },
    Section {
        path: "vault.spec",
        header: "vault.spec",
        array: false,
        about: "The declarative Vault configuration: `castle vault plan` diffs it against the live Vault, `castle vault apply` (and the vault steps) make exactly that plan.",
        used_by: "`vault-jwt`, `vault-db`, `castle vault plan|apply`",
        keys: &[
            table(
                "jwt",
                "array of tables",
                "vault.spec.jwt",
                Def("[]"),
                "",
                "JWT auth mounts.",
            ),
            key(
                "policies",
                "table of strings (HCL)",
                Def("{}"),
                "{ external-secrets = 'path \"secret/data/lab/*\" { capabilities = [\"read\"] }' }",
                "ACL policies by name, inline HCL.",
            ),
            key(
                "policy_files",
                "table of strings (paths)",
                Def("{}"),
                "{ ops = \"policies/ops.hcl\" }",
                "ACL policies by name, read from HCL files.",
            ),
            table(
                "kv",
                "array of tables",
                "vault.spec.kv",
                Def("[]"),
                "",
                "KV version 2 mounts.",
            ),
            table(
                "database",
                "array of tables",
                "vault.spec.database",
                Def("[]"),
                "",
                "Database secrets engines.",
            ),
            table(
                "generated",
                "array of tables",
                "vault.spec.generated",
                Def("[]"),
                "",
                "KV values generated once and kept.",
            ),
            key(
                "prune",
                "bool",
                Def("false"),
                "true",
                "Delete policies and roles that exist in Vault but not here.",
            ),
        ],
    },
    Section {
        path: "vault.spec.jwt",
        header: "vault.spec.jwt",
        array: true,
        about: "A JWT auth mount the cluster's service accounts log in with (ESO's ClusterSecretStore among them).",
        used_by: "`vault-jwt`",
        keys: &[
            key("path", "string", Def("\"jwt\""), "\"jwt\"", "Mount path."),
            key(
                "bound_issuer",
                "string (URL)",
                Req,
                "\"https://192.168.1.210:6443\"",
                "The `iss` every token must carry: the first `cluster.service_account_issuers` (or the endpoint).",
            ),
            key(
                "validation_pubkeys",
                "array of strings (PEM)",
                Def("[]"),
                "[\"-----BEGIN PUBLIC KEY-----\\n...\\n-----END PUBLIC KEY-----\\n\"]",
                "Literal PEM public keys.",
            ),
            key(
                "pubkeys_from",
                "array of strings",
                Def("[]"),
                "[\"sa-signing-key\"]",
                "Names of `[[vault.spec.generated]]` ecdsa-p256 keypairs whose public keys validate tokens.",
            ),
            table(
                "roles",
                "table of tables",
                "vault.spec.jwt.roles.<name>",
                Def("{}"),
                "",
                "Roles by name.",
            ),
        ],
    },
    Section {
        path: "vault.spec.jwt.roles.<name>",
        header: "vault.spec.jwt.roles.external-secrets",
        array: false,
        about: "A JWT role: which tokens log in and what they get.",
        used_by: "`vault-jwt`; `[components.eso.store] role`",
        keys: &[
            key(
                "user_claim",
                "string",
                Req,
                "\"sub\"",
                "The claim that names the user.",
            ),
            key(
                "bound_audiences",
                "array of strings",
                Def("[]"),
                "[\"vault\"]",
                "Accepted `aud` values.",
            ),
            key(
                "bound_subject",
                "string",
                NONE,
                "\"system:serviceaccount:external-secrets:external-secrets\"",
                "Required `sub`.",
            ),
            key(
                "bound_claims",
                "table of arrays of strings",
                Def("{}"),
                "{ \"kubernetes.io/namespace\" = [\"external-secrets\"] }",
                "Required claims, each with its accepted values.",
            ),
            key(
                "token_policies",
                "array of strings",
                Def("[]"),
                "[\"external-secrets\"]",
                "Policies of the issued token.",
            ),
            key(
                "token_ttl",
                "integer (seconds)",
                Def("0"),
                "3600",
                "TTL of the issued token (0: the mount's default).",
            ),
            key(
                "token_max_ttl",
                "integer (seconds)",
                Def("0"),
                "86400",
                "Longest TTL of the issued token (0: the mount's default).",
            ),
        ],
    },
    Section {
        path: "vault.spec.kv",
        header: "vault.spec.kv",
        array: true,
        about: "A KV version 2 mount.",
        used_by: "`vault-jwt`, `vault-db`; generated values, `[[sync]]`, the ESO store and `[state]` name one",
        keys: &[key("path", "string", Req, "\"secret\"", "Mount path.")],
    },
    Section {
        path: "vault.spec.database",
        header: "vault.spec.database",
        array: true,
        about: "A database secrets engine with PostgreSQL connections and dynamic roles.",
        used_by: "`vault-db`, `castle destroy` (revokes its leases)",
        keys: &[
            key(
                "path",
                "string",
                Def("\"database\""),
                "\"database\"",
                "Mount path.",
            ),
            table(
                "connections",
                "table of tables",
                "vault.spec.database.connections.<name>",
                Def("{}"),
                "",
                "PostgreSQL connections by name.",
            ),
            table(
                "roles",
                "table of tables",
                "vault.spec.database.roles.<name>",
                Def("{}"),
                "",
                "Roles by name.",
            ),
        ],
    },
    Section {
        path: "vault.spec.database.connections.<name>",
        header: "vault.spec.database.connections.app-db",
        array: false,
        about: "A PostgreSQL connection of the database engine.",
        used_by: "`vault-db`",
        keys: &[
            key(
                "connection_url",
                "string",
                Req,
                "\"postgresql://{{username}}:{{password}}@app-db-primary.app-db.svc:5432/app\"",
                "Where Vault connects; `{{username}}` and `{{password}}` are Vault's placeholders.",
            ),
            key(
                "username",
                "string",
                Req,
                "\"app-admin\"",
                "The admin user Vault connects as.",
            ),
            table(
                "password",
                "secret ref",
                SECRET_REF,
                Req,
                "{ vault = \"app-admin\" }",
                "Its password (a `vault` ref: the generated one, also given to the database's bootstrap Secret).",
            ),
            key(
                "verify_connection",
                "bool",
                Def("false"),
                "true",
                "Whether Vault checks the connection on write (false while the database does not exist yet).",
            ),
            key(
                "allowed_roles",
                "array of strings",
                Def("[]"),
                "[\"reader\"]",
                "Roles allowed to use it.",
            ),
        ],
    },
    Section {
        path: "vault.spec.database.roles.<name>",
        header: "vault.spec.database.roles.reader",
        array: false,
        about: "A dynamic database role.",
        used_by: "`vault-db`",
        keys: &[
            key(
                "db_name",
                "string",
                Req,
                "\"app-db\"",
                "The connection it uses.",
            ),
            key(
                "creation_statements",
                "array of strings (SQL)",
                Req,
                "[\"CREATE ROLE \\\"{{name}}\\\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'\"]",
                "SQL run to create a user.",
            ),
            key(
                "revocation_statements",
                "array of strings (SQL)",
                Def("[]"),
                "[\"DROP ROLE \\\"{{name}}\\\"\"]",
                "SQL run on revocation.",
            ),
            key(
                "default_ttl",
                "integer (seconds)",
                Def("3600"),
                "3600",
                "Default lease.",
            ),
            key(
                "max_ttl",
                "integer (seconds)",
                Def("86400"),
                "86400",
                "Longest lease.",
            ),
        ],
    },
    Section {
        path: "vault.spec.generated",
        header: "vault.spec.generated",
        array: true,
        about: "A KV v2 value generated once (check-and-set) and never regenerated: a password that `{ vault = \"name\" }` refs read, or the keypair that signs service-account tokens.",
        used_by: "`vault-jwt`, `vault-db`, `engine`, `castle destroy --wipe` (deletes them)",
        keys: &[
            key(
                "name",
                "string",
                Req,
                "\"app-admin\"",
                "The name refs and `pubkeys_from` use.",
            ),
            key("mount", "string", Req, "\"secret\"", "The KV v2 mount."),
            key(
                "path",
                "string",
                Req,
                "\"castle/lab/app-admin\"",
                "The path inside the mount.",
            ),
            choice(
                "kind",
                &["password", "ecdsa-p256"],
                Req,
                "\"password\"",
                "A password (key `password`) or an ECDSA P-256 keypair (`private_key`, `public_key`, PEM).",
            ),
            key("length", "integer", Def("32"), "32", "Password length."),
            key(
                "alphabet",
                "string",
                Opt("letters and digits"),
                "\"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~\"",
                "The characters a password draws from.",
            ),
        ],
    },
    Section {
        path: "kubernetes",
        header: "kubernetes",
        array: false,
        about: "Objects the `engine` step creates once the API answers, before Flux takes over.",
        used_by: "`engine`",
        keys: &[
            key(
                "namespaces",
                "array of strings",
                Def("[]"),
                "[\"app-db\", \"monitoring\"]",
                "Namespaces to create.",
            ),
            table(
                "secrets",
                "array of tables",
                "kubernetes.secrets",
                Def("[]"),
                "",
                "Bootstrap Secrets.",
            ),
            table(
                "coredns",
                "table",
                "kubernetes.coredns",
                NONE,
                "",
                "The user-managed CoreDNS.",
            ),
        ],
    },
    Section {
        path: "kubernetes.secrets",
        header: "kubernetes.secrets",
        array: true,
        about: "A Secret made from secret refs (values never touch disk).",
        used_by: "`engine`",
        keys: &[
            key(
                "name",
                "string",
                Req,
                "\"app-db-pguser-app-admin\"",
                "Name.",
            ),
            key("namespace", "string", Req, "\"app-db\"", "Namespace."),
            key(
                "type",
                "string",
                Opt("`kubernetes.io/dockerconfigjson` with `dockerconfigjson`, else `Opaque`"),
                "\"Opaque\"",
                "The Secret's type; `castle validate` checks the keys each well-known type requires.",
            ),
            key(
                "labels",
                "table of strings",
                Def("{}"),
                "{ \"postgres-operator.crunchydata.com/cluster\" = \"app-db\" }",
                "Labels (e.g. the ones an operator adopts a Secret by).",
            ),
            key(
                "annotations",
                "table of strings",
                Def("{}"),
                "{ \"example.com/owner\" = \"castle\" }",
                "Annotations.",
            ),
            key(
                "data",
                "table of secret refs",
                Def("{}"),
                "{ password = { vault = \"app-admin\" } }",
                "Keys and where their values come from.",
            ),
            table(
                "dockerconfigjson",
                "table",
                "kubernetes.secrets.dockerconfigjson",
                NONE,
                "",
                "An image pull secret.",
            ),
        ],
    },
    Section {
        path: "kubernetes.secrets.dockerconfigjson",
        header: "kubernetes.secrets.dockerconfigjson",
        array: false,
        about: "An image pull secret's `.dockerconfigjson`, composed as kubelet reads it: `{\"auths\":{\"<registry>\":{\"username\",\"password\",\"auth\"}}}`.",
        used_by: "`engine`",
        keys: &[
            key(
                "registry",
                "string",
                Req,
                "\"ghcr.io\"",
                "The registry as image references name it.",
            ),
            key(
                "username",
                "string",
                Req,
                "\"lab-bot\"",
                "The registry user (not a secret).",
            ),
            table(
                "token",
                "secret ref",
                SECRET_REF,
                Req,
                "{ file = \"github-token\" }",
                "The token or password.",
            ),
        ],
    },
    Section {
        path: "kubernetes.coredns",
        header: "kubernetes.coredns",
        array: false,
        about: "CoreDNS as Talos deploys its own, managed by Castle so it can forward zones (the tailnet's `ts.net`).",
        used_by: "`talos` (turns Talos's CoreDNS off), `engine`",
        keys: &[
            key(
                "enabled",
                "bool",
                Def("true"),
                "true",
                "Deploy the user-managed CoreDNS.",
            ),
            key("replicas", "integer", Def("2"), "2", "Replicas."),
            key(
                "cluster_ip",
                "string (IP)",
                Def("\"10.96.0.10\""),
                "\"10.96.0.10\"",
                "The ClusterIP of kube-dns.",
            ),
            table(
                "forwards",
                "array of tables",
                "kubernetes.coredns.forwards",
                Def("[]"),
                "",
                "Zone forwards.",
            ),
            key(
                "image",
                "string (image reference)",
                Def("\"registry.k8s.io/coredns/coredns:v1.14.2\""),
                "\"registry.k8s.io/coredns/coredns:v1.14.2\"",
                "The CoreDNS image (the default is what Talos v1.12 deploys).",
            ),
        ],
    },
    Section {
        path: "kubernetes.coredns.forwards",
        header: "kubernetes.coredns.forwards",
        array: true,
        about: "A zone CoreDNS forwards elsewhere.",
        used_by: "`engine`",
        keys: &[
            key("zone", "string", Req, "\"ts.net\"", "The zone."),
            key(
                "to",
                "array of IPs",
                Req,
                "[\"100.100.100.100\"]",
                "Upstream servers.",
            ),
        ],
    },
    Section {
        path: "components",
        header: "components",
        array: false,
        about: "The components Castle installs before handing over to Flux. Each is a `[components.<name>]` table.",
        used_by: "see each component",
        keys: &[
            table(
                "eso",
                "table",
                "components.<name>",
                NONE,
                "",
                "External Secrets Operator (`eso` step); its `store` is the ClusterSecretStore.",
            ),
            table(
                "metallb",
                "table",
                "components.<name>",
                NONE,
                "",
                "MetalLB (`networking` step); `addresses` is its pool.",
            ),
            table(
                "longhorn",
                "table",
                "components.<name>",
                NONE,
                "",
                "Longhorn (`storage` step); needs `iscsi-tools` and `util-linux-tools` in the Talos image.",
            ),
            table(
                "flux",
                "table",
                "components.<name>",
                NONE,
                "",
                "Flux (`flux` step from its release manifest; `gitops` hands over with `git_url`, `branch`, `path`, `token`).",
            ),
        ],
    },
    Section {
        path: "components.<name>",
        header: "components.eso",
        array: false,
        about: "One component: from a Helm chart Flux installs (`chart`, with `values`), or from a manifest (`manifest`, a local file, or `url` with `sha256`, fetched once into `.castle/downloads/`). Flux itself needs `manifest` or `url`, with `sha256`. The keys marked for one component are only read there.",
        used_by: "`downloads` (a `url`), `flux`, `eso`, `networking`, `storage`, `gitops`",
        keys: &[
            key("enabled", "bool", Def("true"), "true", "Install it."),
            key(
                "manifest",
                "string (path)",
                NONE,
                "\"manifests/flux.yaml\"",
                "A local manifest file.",
            ),
            key(
                "url",
                "string (URL)",
                NONE,
                "\"https://github.com/fluxcd/flux2/releases/download/v2.6.4/install.yaml\"",
                "A manifest URL, fetched once by the `downloads` step and checked against `sha256`.",
            ),
            key(
                "sha256",
                "string (64 hex digits)",
                NONE,
                "\"b981e0101ae8e0781bb85d3cc4108ee89863c946faffe4759a01172fb5c741d5\"",
                "The manifest's digest (required for Flux and for a `url`).",
            ),
            table(
                "chart",
                "table",
                "components.<name>.chart",
                NONE,
                "",
                "A Helm chart Flux installs, instead of a manifest.",
            ),
            key(
                "values",
                "table",
                NONE,
                "{ installCRDs = true }",
                "The chart's values, given to the HelmRelease as `spec.values`.",
            ),
            table(
                "readiness",
                "array of tables",
                "components.<name>.readiness",
                Def("[]"),
                "",
                "Workloads that must be ready.",
            ),
            key(
                "addresses",
                "array of strings",
                Def("[]"),
                "[\"192.168.1.240-192.168.1.250\"]",
                "MetalLB: address ranges (`a-b` or CIDR).",
            ),
            key(
                "git_url",
                "string (URL)",
                NONE,
                "\"https://github.com/you/your-cluster.git\"",
                "Flux: the Git repository.",
            ),
            key("branch", "string", NONE, "\"main\"", "Flux: branch."),
            key(
                "path",
                "string",
                NONE,
                "\"clusters/lab\"",
                "Flux: path in the repository.",
            ),
            table(
                "token",
                "secret ref",
                SECRET_REF,
                NONE,
                "{ file = \"github-token\" }",
                "Flux: a Git token that can read the repository.",
            ),
            key(
                "interval",
                "string (duration)",
                NONE,
                "\"1m\"",
                "Flux: reconcile interval.",
            ),
            table(
                "store",
                "table",
                "components.eso.store",
                NONE,
                "",
                "ESO: the ClusterSecretStore Castle applies once ESO's CRDs are served.",
            ),
        ],
    },
    Section {
        path: "components.<name>.chart",
        header: "components.eso.chart",
        array: false,
        about: "A Helm chart: Castle applies its source (a `HelmRepository`, or an `OCIRepository` for `oci://`) and a `HelmRelease` as Flux's own field manager, and waits for it to be Ready.",
        used_by: "`eso`, `networking`, `storage`",
        keys: &[
            key(
                "repo",
                "string (URL)",
                Req,
                "\"https://charts.external-secrets.io\"",
                "The Helm repository (`https://...`) or OCI registry path (`oci://host/path`).",
            ),
            key(
                "name",
                "string",
                Req,
                "\"external-secrets\"",
                "The chart's name.",
            ),
            key(
                "version",
                "string",
                Opt("refused by `castle validate`: pin one"),
                "\"0.19.2\"",
                "The exact version.",
            ),
            key(
                "release",
                "string",
                Opt("`external-secrets`, `metallb` or `longhorn`"),
                "\"external-secrets\"",
                "The HelmRelease's and Helm release's name.",
            ),
            key(
                "namespace",
                "string",
                Opt("`external-secrets`, `metallb-system` or `longhorn-system`"),
                "\"external-secrets\"",
                "The namespace of the HelmRelease, its source and the release.",
            ),
        ],
    },
    Section {
        path: "components.<name>.readiness",
        header: "components.eso.readiness",
        array: true,
        about: "A workload the component's step waits for.",
        used_by: "`eso`, `networking`, `storage`",
        keys: &[
            key(
                "kind",
                "string",
                Req,
                "\"Deployment\"",
                "Deployment, DaemonSet or StatefulSet.",
            ),
            key(
                "namespace",
                "string",
                Req,
                "\"external-secrets\"",
                "Namespace.",
            ),
            key("name", "string", Req, "\"external-secrets\"", "Name."),
        ],
    },
    Section {
        path: "components.eso.store",
        header: "components.eso.store",
        array: false,
        about: "The ClusterSecretStore (`external-secrets.io/v1`) that reads Vault KV, logging in with a JWT role Castle configured before the cluster existed: no Secret holds a Vault token.",
        used_by: "`eso`, `verify` (the store Ready)",
        keys: &[
            key(
                "name",
                "string",
                Req,
                "\"vault\"",
                "The ClusterSecretStore's name.",
            ),
            key(
                "mount",
                "string",
                Req,
                "\"secret\"",
                "The KV v2 mount it reads (one of `[[vault.spec.kv]]`).",
            ),
            key(
                "jwt_path",
                "string",
                Def("\"jwt\""),
                "\"jwt\"",
                "The JWT auth mount (one of `[[vault.spec.jwt]]`).",
            ),
            key(
                "role",
                "string",
                Req,
                "\"external-secrets\"",
                "The role of that mount ESO logs in with.",
            ),
            key(
                "service_account",
                "string",
                Def("\"external-secrets/external-secrets\""),
                "\"external-secrets/external-secrets\"",
                "`namespace/name` of the service account whose token ESO presents.",
            ),
            key(
                "audiences",
                "array of strings",
                Def("[]"),
                "[\"vault\"]",
                "The token's audiences (empty: the role's `bound_audiences`).",
            ),
            key(
                "server",
                "string (URL)",
                Opt("`[vault] address`"),
                "\"https://vault.example.internal:8200\"",
                "The Vault address as the cluster reaches it.",
            ),
        ],
    },
    Section {
        path: "sync",
        header: "sync",
        array: true,
        about: "A Secret made inside the cluster (a database operator's user Secret), watched until it exists and copied into Vault KV v2 (check-and-set, only when a value changed).",
        used_by: "`sync`, `castle destroy --wipe`",
        keys: &[
            key(
                "from",
                "string",
                Req,
                "\"app-db/app-db-pguser-reader\"",
                "`namespace/name` of the Secret.",
            ),
            key(
                "keys",
                "array of strings, or table of strings",
                Req,
                "{ password = \"APP_DB_PASSWORD\" }",
                "Its keys to copy: a list (the same names in Vault) or Secret key -> KV field.",
            ),
            key(
                "mount",
                "string",
                Req,
                "\"secret\"",
                "The KV v2 mount (one of `[[vault.spec.kv]]`).",
            ),
            key(
                "path",
                "string",
                Req,
                "\"apps/reader\"",
                "The path inside the mount.",
            ),
        ],
    },
    Section {
        path: "verify",
        header: "verify",
        array: false,
        about: "The last step's checks.",
        used_by: "`verify`",
        keys: &[
            key(
                "service",
                "string",
                Req,
                "\"traefik/traefik\"",
                "`namespace/name` of the LoadBalancer Service that must get an IP.",
            ),
            key(
                "url",
                "string (URL)",
                Opt("no HTTP probe"),
                "\"https://blog.example.internal/\"",
                "A URL to probe.",
            ),
            key(
                "expect_status",
                "integer",
                Def("200"),
                "200",
                "The status it must answer.",
            ),
        ],
    },
    Section {
        path: "lab",
        header: "lab",
        array: false,
        about: "Only in the built-in lab (`examples/lab`): every system is one of Castle's stateful simulators.",
        used_by: "every command, in the lab",
        keys: &[
            key(
                "time_scale",
                "float",
                Def("0.02"),
                "0.02",
                "Real seconds per modelled second.",
            ),
            key(
                "seed",
                "integer",
                Def("0"),
                "7",
                "Seed of the fault injection.",
            ),
            key(
                "transient_fault_rate",
                "float",
                Def("0.0"),
                "0.1",
                "Share of calls that fail transiently.",
            ),
            choice(
                "proxmox_server",
                &["current", "older"],
                Def("\"current\""),
                "\"older\"",
                "The Proxmox VE simulated: `older` puts error text only in the reason phrase (before libpve-http-server-perl 5.2.0).",
            ),
            key(
                "proxmox_token_pool",
                "string",
                Opt("a token with rights on each VMID"),
                "\"castle\"",
                "Simulate an API token whose rights come only from this pool (set `proxmox.pool` too).",
            ),
            Key {
                name: "inject",
                ty: "array of strings",
                given: Def("[]"),
                example: "[\"vault-sealed\"]",
                one_of: &[
                    "proxmox-missing-privilege",
                    "proxmox-missing-template",
                    "proxmox-node-offline",
                    "proxmox-storage-full",
                    "vault-sealed",
                    "vault-missing-capability",
                    "vault-short-token",
                    "tailscale-narrow-scopes",
                    "git-missing-branch",
                    "git-token-refused",
                ],
                table: None,
                about: "Failures the lab's systems show (for `castle doctor`), each for as long as it is listed.",
            },
            key(
                "charts",
                "string (path)",
                Opt("no chart catalogue"),
                "\"charts/catalogue.toml\"",
                "The chart catalogue of the lab's simulated Helm repositories and OCI registries.",
            ),
        ],
    },
    Section {
        path: "state",
        header: "state",
        array: false,
        about: "Where the journal and the cluster's lock live: files beside castle.toml (one machine), or Vault KV v2 with check-and-set and a leased lock (a team, CI). The token needs `create`, `read`, `update` on `<mount>/data/<path>/*` and `read` on `<mount>/metadata/<path>/*`.",
        used_by: "every command that reads or writes the journal; `castle state`, `castle unlock`",
        keys: &[
            choice(
                "backend",
                &["file", "vault"],
                Def("\"file\""),
                "\"vault\"",
                "`file`: `.castle/state.json` and a file lock. `vault`: `<mount>/<path>/journal` and `<mount>/<path>/lock`.",
            ),
            key(
                "mount",
                "string",
                Opt("`secret`"),
                "\"secret\"",
                "The KV v2 mount (vault backend).",
            ),
            key(
                "path",
                "string",
                Opt("`castle/<cluster>/state`"),
                "\"castle/lab/state\"",
                "The cluster's folder in the mount (vault backend).",
            ),
            key(
                "address",
                "string (URL)",
                Opt("`[vault] address`"),
                "\"https://vault.example.internal:8200\"",
                "Another Vault than `[vault]`'s (with `token`: both or neither).",
            ),
            key(
                "ca_file",
                "string (path)",
                Opt("`[vault] ca_file` when `address` is unset"),
                "\"vault-ca.pem\"",
                "A PEM CA to pin for `address`.",
            ),
            table(
                "token",
                "secret ref",
                SECRET_REF,
                Opt("`[vault] token`"),
                "{ env = \"STATE_TOKEN\" }",
                "The token for `address`.",
            ),
            key(
                "lease_seconds",
                "integer",
                Opt("60"),
                "60",
                "How long the lock's lease lives without a heartbeat (renewed every third of it).",
            ),
        ],
    },
];

/// `docs/castle-toml.md`: the reference, rendered from [`SECTIONS`].
pub fn markdown() -> String {
    let mut out = String::from(
        "<!-- Generated from castle-core/src/config/schema.rs by `cargo test -p castle-core --lib schema`\n     with CASTLE_UPDATE_DOCS=1; do not edit by hand. -->\n\n# castle.toml reference\n\n",
    );
    out.push_str(
        "Every section and key castle.toml accepts. A key the model does not know is an \
         error (`castle validate` names its file:line:column); *required* keys must be \
         given, the others take the default shown, or are left unset (the note says what \
         that means). `castle init DIR` writes a commented starter; the built-in lab, \
         `examples/lab/castle.toml`, uses most keys. Types are TOML's; a *secret ref* is \
         described [below](#secret-ref).\n\n## Sections\n\n",
    );
    for s in SECTIONS.iter().filter(|s| !s.path.is_empty()) {
        let _ = writeln!(out, "- {}", link(s));
    }
    for s in SECTIONS {
        let _ = write!(
            out,
            "\n## {}\n\n",
            if s.path.is_empty() {
                "Top level".to_string()
            } else {
                format!("`{}`", title(s))
            }
        );
        let _ = write!(out, "{}\n\nUsed by: {}.\n\n", s.about, s.used_by);
        out.push_str("| key | type | default | example | meaning |\n|---|---|---|---|---|\n");
        for k in s.keys {
            let ty = match (k.one_of.is_empty(), k.table) {
                (false, _) => format!(
                    "{}, one of {}",
                    k.ty,
                    k.one_of
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (true, Some(t)) => match SECTIONS.iter().find(|s| s.path == t) {
                    Some(target) => format!("{}, see {}", k.ty, link(target)),
                    None => k.ty.to_string(),
                },
                (true, None) => k.ty.to_string(),
            };
            let default = match k.given {
                Given::Required => "**required**".to_string(),
                Given::Default(v) => code(v),
                Given::Optional("") => "optional".to_string(),
                Given::Optional(meaning) => format!("unset: {meaning}"),
            };
            let example = if k.example.is_empty() {
                String::new()
            } else {
                code(k.example)
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                k.name,
                cell(&ty),
                cell(&default),
                cell(&example),
                cell(k.about)
            );
        }
    }
    out
}

fn title(s: &Section) -> String {
    match (s.path, s.array) {
        (SECRET_REF, _) => "secret ref".to_string(),
        (p, true) => format!("[[{p}]]"),
        (p, false) => format!("[{p}]"),
    }
}

fn anchor(path: &str) -> String {
    path.chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

fn link(s: &Section) -> String {
    format!("[`{}`](#{})", title(s), anchor(s.path))
}

fn code(value: &str) -> String {
    if value.contains('`') {
        format!("`` {value} ``")
    } else {
        format!("`{value}`")
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The repository's root when castle-core is built inside it (not from its
/// published `.crate`): where `docs/` and `examples/` are.
#[cfg(test)]
pub(crate) fn repository() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
    manifest.contains("[workspace]").then_some(root)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::{Given, SECTIONS, markdown};
    use crate::config::Config;

    /// What to change in the example `example_toml` writes.
    #[derive(Debug, Clone, Copy)]
    enum Edit<'a> {
        None,
        /// Leave a key out (a key whose value is a section: that section and those
        /// beneath it).
        Omit(&'a str, &'a str),
        /// Give a key this value (a key whose value is a section: instead of it).
        Set(&'a str, &'a str, &'a str),
        /// Add a key no struct has to a section.
        Unknown(&'a str),
    }

    const PROBE: &str = "castle_reference_probe";

    /// A castle.toml that gives every key its example (it parses; it need not validate).
    fn example_toml(edit: Edit<'_>) -> String {
        let mut out = String::new();
        if let Edit::Unknown("") = edit {
            let _ = writeln!(out, "{PROBE} = 0");
        }
        for s in SECTIONS.iter().filter(|s| !s.header.is_empty()) {
            let omitted = SECTIONS.iter().any(|parent| {
            parent.keys.iter().any(|k| {
                matches!(edit, Edit::Omit(p, key) | Edit::Set(p, key, _) if p == parent.path && key == k.name)
                    && k.example.is_empty()
                    && {
                        let child = join(parent.header, k.name);
                        s.header == child || s.header.starts_with(&format!("{child}."))
                    }
            })
        });
            if omitted {
                continue;
            }
            let _ = if s.array {
                writeln!(out, "\n[[{}]]", s.header)
            } else {
                writeln!(out, "\n[{}]", s.header)
            };
            if matches!(edit, Edit::Unknown(p) if p == s.path) {
                let _ = writeln!(out, "{PROBE} = 0");
            }
            for k in s.keys {
                let value = match edit {
                    Edit::Omit(p, key) if p == s.path && key == k.name => continue,
                    Edit::Set(p, key, value) if p == s.path && key == k.name => value,
                    _ => k.example,
                };
                if !value.is_empty() {
                    let _ = writeln!(out, "{} = {value}", k.name);
                }
            }
        }
        out
    }

    fn join(parent: &str, key: &str) -> String {
        if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        }
    }

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| e.message().to_string())
    }

    /// The names serde lists after "expected" in an unknown-field or -variant error.
    fn expected(message: &str) -> Vec<String> {
        let Some((_, list)) = message.split_once("expected") else {
            return Vec::new();
        };
        let mut names: Vec<String> = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_example_of_every_key_parses() {
        parse(&example_toml(Edit::None))
            .unwrap_or_else(|e| panic!("{e}\n{}", example_toml(Edit::None)));
    }

    #[test]
    fn each_section_lists_exactly_the_fields_serde_expects() {
        for s in SECTIONS {
            let err = parse(&example_toml(Edit::Unknown(s.path))).expect_err(s.path);
            let mut documented: Vec<String> = s.keys.iter().map(|k| k.name.to_string()).collect();
            documented.sort();
            assert_eq!(
                expected(&err),
                documented,
                "[{}]: serde said: {err}",
                s.path
            );
        }
    }

    #[test]
    fn each_enum_lists_exactly_the_values_serde_accepts() {
        for s in SECTIONS {
            for k in s.keys.iter().filter(|k| !k.one_of.is_empty()) {
                let probe = if k.example.starts_with('[') {
                    "[\"x-probe\"]"
                } else {
                    "\"x-probe\""
                };
                let err = parse(&example_toml(Edit::Set(s.path, k.name, probe))).expect_err(k.name);
                let mut documented: Vec<String> = k.one_of.iter().map(|v| v.to_string()).collect();
                documented.sort();
                assert_eq!(
                    expected(&err),
                    documented,
                    "{}.{}: serde said: {err}",
                    s.path,
                    k.name
                );
            }
        }
    }

    #[test]
    fn required_keys_are_required_and_defaults_are_serdes() {
        let debug = |text: &str| parse(text).map(|c| format!("{c:?}"));
        for s in SECTIONS {
            for k in s.keys {
                let without = debug(&example_toml(Edit::Omit(s.path, k.name)));
                match k.given {
                    Given::Required => {
                        let e = without.expect_err(k.name);
                        assert!(
                            e.contains(&format!("missing field `{}`", k.name)),
                            "{}.{}: {e}",
                            s.path,
                            k.name
                        );
                    }
                    Given::Optional(_) => {
                        without.unwrap_or_else(|e| {
                            panic!("{}.{} is optional, yet: {e}", s.path, k.name)
                        });
                    }
                    Given::Default(value) => {
                        let without =
                            without.unwrap_or_else(|e| panic!("{}.{}: {e}", s.path, k.name));
                        let given = debug(&example_toml(Edit::Set(s.path, k.name, value)));
                        // Not assert_eq: the two configs' Debug is long.
                        assert!(
                            given == Ok(without),
                            "{}.{}: the default is not {value}",
                            s.path,
                            k.name
                        );
                    }
                }
            }
        }
    }

    /// docs/castle-toml.md is what [`markdown`] renders.
    #[test]
    fn the_committed_reference_is_current() {
        let Some(repo) = super::repository() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but docs/ is absent: this check must run from the repository"
            );
            eprintln!("skipped: docs/ is in the repository, not in the packaged crate");
            return;
        };
        let path = repo.join("docs/castle-toml.md");
        let want = markdown();
        if std::env::var_os("CASTLE_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} does not match the config model (castle-core/src/config/schema.rs); regenerate it with\n  CASTLE_UPDATE_DOCS=1 cargo test -p castle-core --lib schema\nand commit it",
            path.display()
        );
    }
}
