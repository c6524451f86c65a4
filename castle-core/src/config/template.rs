//! The starter castle.toml that `castle init` writes, and the `.gitignore` beside it.
//!
//! Every section appears, the optional ones as commented examples: a line `# key =
//! ...` or `# [section]` is one to uncomment. A test uncomments them all and
//! validates the result, so every example is a valid one.

/// A commented castle.toml for a new cluster named `name`: fill in the addresses,
/// put the secret files in `secrets/`, then `castle validate`.
pub fn starter(name: &str) -> String {
    STARTER.replace("{name}", name)
}

/// What a cluster directory keeps out of git: secret files, the kubeconfig and
/// talosconfig, the journal and run logs.
pub const GITIGNORE: &str =
    "# Written by `castle init`: secret values, credentials and run state stay out of git.
/secrets/
/configs/
/.castle/
";

const STARTER: &str = r#"# castle.toml: one cluster, rebuilt from nothing by `castle create`.
# Reference of every key: docs/castle-toml.md. Check this file with `castle validate`,
# the systems it names with `castle doctor`, what a run would do with `castle plan`.
#
# Secret values never go here: refs point to files in [secrets].dir
# ({ file = "name" }), to environment variables ({ env = "NAME" }), or to a password
# Castle generates once into Vault KV ({ vault = "name" } of [[vault.spec.generated]]).
# Lines like `# key = ...` and `# [section]` are examples: uncomment what you need.
# (Only [lab], which turns a file into a run against Castle's simulators, is left out:
# see examples/lab/castle.toml.)

[cluster]
name = "{name}"                                  # a DNS label
endpoint = "https://192.168.1.211:6443"          # the Kubernetes API: a control plane's address, or the vip
# vip = "192.168.1.210"                          # a shared address Talos moves between control planes
talos_version = "v1.12.0"
kubernetes_version = "1.34.1"
# The installer of your Image Factory schematic (siderolabs/tailscale, plus
# iscsi-tools and util-linux-tools for Longhorn): factory.talos.dev/installer/<id>:v1.12.0
installer_image = "ghcr.io/siderolabs/installer:v1.12.0"
# install_disk = "/dev/sda"
api_cert_sans = ["192.168.1.211"]                # extra names on the Kubernetes API certificate
service_account_issuers = ["https://192.168.1.211:6443"]
# api_audiences = ["https://kubernetes.default.svc.cluster.local", "vault"]
gateway = "192.168.1.1"
nameservers = ["192.168.1.1"]
configs_dir = "configs"                          # kubeconfig and talosconfig land here, mode 0600

[secrets]
dir = "secrets"                                  # relative to this file; mode 0700
env_fallback = true                              # a missing file `proxmox-token` falls back to $PROXMOX_TOKEN

[proxmox]
endpoint = "https://pve.example.internal:8006"
node = "pve"
token_id = "castle@pve!castle"                   # USER@REALM!TOKENID
token = { file = "proxmox-token" }               # the token's secret: secrets/proxmox-token
# ca_file = "pve-ca.pem"                         # pin the server's CA (`castle doctor` names it)
template_vmid = 9000                             # the golden Talos template
vmid_range = [400, 409]                          # Castle never touches a VM outside this range
tag = "castle"                                   # ... nor one without this tag
# storage = "local-lvm"                          # where full clones go
# full_clone = true                              # linked clones otherwise, where the storage can link
# pool = "castle"                                # when the token's rights come from a resource pool

[[nodes]]
name = "cp-1"
role = "controlplane"
vmid = 401
ip = "192.168.1.211/24"
# cores = 4
# memory_mib = 8192
# disk_gib = 40

[[nodes]]
name = "worker-1"
role = "worker"
vmid = 402
ip = "192.168.1.212/24"

# [talos]
# patches = [{ inline = "machine:\n  kubelet:\n    extraArgs:\n      rotate-server-certificates: \"true\"\n" }]
# # patches = [{ file = "patches/kubelet.yaml", role = "worker" }]   # a file; role narrows it

# [tailscale]                                    # the nodes join the tailnet (Talos's tailscale extension)
# oauth_client_id = { file = "tailscale-client-id" }
# oauth_client_secret = { file = "tailscale-client-secret" }
# tags = ["tag:{name}"]                          # the OAuth client must own these tags

# [vault]                                        # the persistent Vault (or OpenBao)
# address = "https://vault.example.internal:8200"
# ca_file = "vault-ca.pem"                       # pinned by Castle, handed to the ClusterSecretStore
# token = { file = "vault-token" }               # Castle's own: never handed to the cluster
# service_account_key = "{name}-sa-key"          # the cluster signs its tokens with this generated key

# [vault.spec]                                   # what must exist in Vault; `castle vault plan` diffs it
# policies.external-secrets = 'path "secret/data/{name}/*" { capabilities = ["read"] }'

# [[vault.spec.kv]]
# path = "secret"                                # a KV v2 mount

# [[vault.spec.jwt]]                             # the cluster's service accounts log in to Vault
# path = "jwt"
# bound_issuer = "https://192.168.1.211:6443"    # = cluster.service_account_issuers[0]
# pubkeys_from = ["{name}-sa-key"]

# [vault.spec.jwt.roles.external-secrets]
# user_claim = "sub"
# bound_audiences = ["vault"]
# bound_subject = "system:serviceaccount:external-secrets:external-secrets"
# token_policies = ["external-secrets"]
# token_ttl = 3600

# [[vault.spec.database]]                        # dynamic PostgreSQL users
# path = "database"

# [vault.spec.database.connections.app-db]
# connection_url = "postgresql://{{username}}:{{password}}@app-db-primary.app-db.svc:5432/app"
# username = "app-admin"
# password = { vault = "app-admin" }             # the generated password below
# allowed_roles = ["reader"]

# [vault.spec.database.roles.reader]
# db_name = "app-db"
# creation_statements = ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"]

# [[vault.spec.generated]]                       # generated once, kept in Vault KV
# name = "{name}-sa-key"
# mount = "secret"
# path = "castle/{name}/service-account"
# kind = "ecdsa-p256"

# [[vault.spec.generated]]                       # one source of truth for a password
# name = "app-admin"
# mount = "secret"
# path = "castle/{name}/app-admin"
# kind = "password"

# [state]                                        # default: .castle/ beside this file
# backend = "vault"                              # journal and lock in Vault KV v2, for a team or CI
# path = "castle/{name}/state"                   # in the KV v2 mount `secret`

# [kubernetes]
# namespaces = ["app-db"]

# [[kubernetes.secrets]]                         # a bootstrap Secret an operator adopts
# name = "app-db-pguser-app-admin"
# namespace = "app-db"
# labels = { "postgres-operator.crunchydata.com/cluster" = "app-db" }
# data = { password = { vault = "app-admin" } }  # the generated password, read from Vault

# [[kubernetes.secrets]]                         # an image pull secret (kubernetes.io/dockerconfigjson)
# name = "ghcr-pull-secret"
# namespace = "flux-system"
# dockerconfigjson = { registry = "ghcr.io", username = "you", token = { file = "github-token" } }

[kubernetes.coredns]
forwards = [{ zone = "ts.net", to = ["100.100.100.100"] }]
# image = "registry.k8s.io/coredns/coredns:v1.14.2"   # the default: what Talos v1.12 deploys

# Components come from Helm charts that Flux installs (Castle applies each chart's
# HelmRepository, or OCIRepository for oci://, and a HelmRelease, then waits for it to
# be Ready), or from a pre-rendered `manifest = "file.yaml"` instead of `chart`.
# [components.eso]
# chart = { repo = "https://charts.external-secrets.io", name = "external-secrets", version = "0.19.2" }
# values = { installCRDs = true }                # the HelmRelease's spec.values, as a TOML table

# [components.eso.store]                         # ESO logs in to Vault with a JWT role, no token
# name = "vault"
# mount = "secret"                               # a [[vault.spec.kv]] mount
# role = "external-secrets"                      # a role of [[vault.spec.jwt]], bound to the account below
# service_account = "external-secrets/external-secrets"

# [components.metallb]
# chart = { repo = "https://metallb.github.io/metallb", name = "metallb", version = "0.15.2" }
# addresses = ["192.168.1.240-192.168.1.250"]
# readiness = [{ kind = "Deployment", namespace = "metallb-system", name = "metallb-controller" }]

# [components.longhorn]                          # needs iscsi-tools and util-linux-tools in the image
# chart = { repo = "https://charts.longhorn.io", name = "longhorn", version = "1.9.1" }
# # chart = { repo = "oci://registry.example.com/charts", name = "longhorn", version = "1.9.1" }   # an OCI registry

# [components.flux]                              # Flux first, from a release pinned by sha256:
# url = "https://github.com/fluxcd/flux2/releases/download/v2.6.4/install.yaml"
# sha256 = "<64 hex digits: sha256sum install.yaml>"   # required; the download is checked and kept
# # manifest = "flux/install.yaml"               # or the same file, downloaded by you
# git_url = "https://github.com/you/your-cluster.git"
# branch = "main"
# path = "clusters/{name}"
# token = { file = "github-token" }

# A Secret made inside the cluster (a database operator's user Secret), copied
# into Vault KV once it exists: apps outside the cluster read it there.
# [[sync]]
# from = "app-db/app-db-pguser-reader"           # namespace/name of the Secret
# keys = { password = "APP_DB_PASSWORD" }        # Secret key -> KV field (or a list: same names)
# mount = "secret"                               # one of [[vault.spec.kv]]
# path = "apps/reader"

# [verify]
# service = "traefik/traefik"                    # namespace/name of the LoadBalancer Service
# url = "https://blog.example.internal/"
"#;

#[cfg(test)]
mod tests {
    use super::starter;
    use crate::config::Config;

    /// `# key = ...` and `# [section]` lines are examples; `# # ...` stays a comment.
    fn uncommented(text: &str) -> String {
        let example = |rest: &str| {
            rest.starts_with('[')
                || rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c))
                })
        };
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if example(rest) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn with_secrets(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("secrets")).expect("secrets/");
        for name in names {
            std::fs::write(dir.path().join("secrets").join(name), "not-a-real-secret")
                .expect("a secret file");
        }
        dir
    }

    #[test]
    fn the_starter_validates_once_its_one_secret_is_there() {
        let dir = with_secrets(&["proxmox-token"]);
        let config = Config::from_str(&starter("newc"), "castle.toml", dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.cluster.name, "newc");
        assert!(config.vault.is_none() && config.tailscale.is_none());
    }

    /// `castle init DIR && castle validate`: the starter as written, before the
    /// credential is there, is a valid file with one secret not provided yet.
    #[test]
    fn the_starter_validates_before_its_secret_is_there_naming_it() {
        let dir = with_secrets(&[]);
        let mut config = Config::parse(&starter("newc"), "castle.toml".into(), dir.path().into())
            .unwrap_or_else(|e| panic!("{e}"));
        // Not the variable of whoever runs the tests: the file alone.
        config.secrets.env_fallback = false;
        let absent = config
            .validate_allowing_absent_secrets()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(absent.len(), 1, "{absent:?}");
        assert_eq!(absent[0].key, "proxmox.token");
        assert!(absent[0].message.contains("proxmox-token"), "{}", absent[0]);
        let refused = config.validate().expect_err("create needs the token");
        assert_eq!(refused.issues, absent);
    }

    #[test]
    fn every_commented_example_validates_uncommented() {
        let text = uncommented(&starter("newc"));
        // The one value only the user can give: the digest of the Flux release they
        // reviewed.
        let placeholder = "<64 hex digits: sha256sum install.yaml>";
        assert!(text.contains(placeholder));
        let text = text.replace(placeholder, &"ab".repeat(32));
        let dir = with_secrets(&[
            "proxmox-token",
            "tailscale-client-id",
            "tailscale-client-secret",
            "vault-token",
            "github-token",
        ]);
        // Any PEM CA serves for the files the examples pin: the lab's.
        let Some(repo) = crate::config::schema::repository() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but the lab's CA is absent: this check must run from the repository"
            );
            eprintln!("skipped: the lab's CA is in the repository, not in the packaged crate");
            return;
        };
        let ca = repo.join("examples/lab/vault-ca.pem");
        for pinned in ["pve-ca.pem", "vault-ca.pem"] {
            std::fs::copy(&ca, dir.path().join(pinned)).expect("a CA file");
        }
        let config = Config::from_str(&text, "castle.toml", dir.path())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(config.vault.is_some() && config.tailscale.is_some());
        let c = &config.components;
        assert!(c.eso.is_some() && c.metallb.is_some() && c.longhorn.is_some() && c.flux.is_some());
        assert!(config.verify.is_some() && !config.sync.is_empty());
        assert!(!config.kubernetes.secrets.is_empty() && !config.talos.patches.is_empty());
    }
}
