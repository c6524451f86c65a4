//! The starter castle.toml that `castle init` writes.

/// A commented castle.toml for a new cluster named `name`: fill in the addresses,
/// put the secret files in `secrets/`, then `castle validate`.
pub fn starter(name: &str) -> String {
    STARTER.replace("{name}", name)
}

const STARTER: &str = r#"# castle.toml: one cluster, rebuilt from nothing by `castle create`.
# Secret values never go here: refs point to files in [secrets].dir
# ({ file = "name" }), to environment variables ({ env = "NAME" }), or to a password
# Castle generates once into Vault KV ({ vault = "name" } of [[vault.spec.generated]]).

[cluster]
name = "{name}"                                  # a DNS label
endpoint = "https://192.168.1.211:6443"          # the Kubernetes API: a control plane's address, or `vip`
# vip = "192.168.1.210"                          # a shared address Talos moves between control planes
talos_version = "v1.12.0"
kubernetes_version = "1.34.1"
installer_image = "ghcr.io/siderolabs/installer:v1.12.0"
api_cert_sans = ["192.168.1.211"]                # extra names on the Kubernetes API certificate
service_account_issuers = ["https://192.168.1.211:6443"]
gateway = "192.168.1.1"
nameservers = ["192.168.1.1"]
configs_dir = "configs"                          # kubeconfig and talosconfig land here, mode 0600

[secrets]
dir = "secrets"                                  # relative to this file
env_fallback = true                              # a missing file `github-token` falls back to $GITHUB_TOKEN

[proxmox]
endpoint = "https://pve.example.internal:8006"
node = "pve"
token_id = "castle@pve!castle"
token = { file = "proxmox-token" }
# ca_file = "pve-ca.pem"                         # pin the server's CA
template_vmid = 9000                             # the golden Talos template
vmid_range = [400, 409]                          # Castle never touches a VM outside this range
tag = "castle"                                   # ... nor one without this tag

[[nodes]]
name = "cp-1"
role = "controlplane"
vmid = 401
ip = "192.168.1.211/24"

[[nodes]]
name = "worker-1"
role = "worker"
vmid = 402
ip = "192.168.1.212/24"

# [talos]
# patches = [{ file = "patches/kubelet.yaml" }]  # applied to every node; add role = "worker" to narrow

# [tailscale]
# oauth_client_id = { file = "tailscale-client-id" }
# oauth_client_secret = { file = "tailscale-client-secret" }
# tags = ["tag:{name}"]

# [vault]
# address = "https://vault.example.internal:8200"
# ca_file = "vault-ca.pem"                       # pinned by Castle, handed to the ClusterSecretStore
# token = { file = "vault-token" }               # Castle's own: never handed to the cluster
#
# [[vault.spec.generated]]                       # one source of truth for a password
# name = "db-admin"
# mount = "secret"
# path = "castle/{name}/db-admin"
# kind = "password"

# [[kubernetes.secrets]]                         # a bootstrap Secret an operator adopts
# name = "db-pguser-admin"
# namespace = "db"
# labels = { "postgres-operator.crunchydata.com/cluster" = "db" }
# data = { password = { vault = "db-admin" } }   # the generated password, read from Vault
#
# [[kubernetes.secrets]]                         # an image pull secret (kubernetes.io/dockerconfigjson)
# name = "ghcr-pull-secret"
# namespace = "flux-system"
# dockerconfigjson = { registry = "ghcr.io", username = "you", token = { file = "github-token" } }

# [state]                                       # default: .castle/ beside this file
# backend = "vault"                             # journal and lock in Vault KV v2, for a team or CI
# path = "castle/{name}/state"                  # in the KV v2 mount `secret`

[kubernetes.coredns]
forwards = [{ zone = "ts.net", to = ["100.100.100.100"] }]
# image = "registry.k8s.io/coredns/coredns:v1.14.2"   # the default: what Talos v1.12 deploys

# Components come from Helm charts that Flux installs (Castle applies each chart's
# HelmRepository, or OCIRepository for oci://, and a HelmRelease, then waits for it to
# be Ready), or from a pre-rendered `manifest = "file.yaml"` instead of `chart`.
# [components.eso]
# chart = { repo = "https://charts.external-secrets.io", name = "external-secrets", version = "0.19.2" }
# values = { installCRDs = true }               # the HelmRelease's spec.values, as a TOML table
# [components.eso.store]                         # ESO logs in to Vault with a JWT role, no token
# name = "vault"
# mount = "secret"                               # a [[vault.spec.kv]] mount
# role = "external-secrets"                      # a role of [[vault.spec.jwt]], bound to the account below
# service_account = "external-secrets/external-secrets"

# [components.metallb]
# chart = { repo = "https://metallb.github.io/metallb", name = "metallb", version = "0.15.2" }
# addresses = ["192.168.1.240-192.168.1.250"]
# readiness = [{ kind = "Deployment", namespace = "metallb-system", name = "metallb-controller" }]

# [components.longhorn]
# chart = { repo = "https://charts.longhorn.io", name = "longhorn", version = "1.9.1" }
# # chart = { repo = "oci://registry.example.com/charts", name = "longhorn", version = "1.9.1" }   # an OCI registry

# [components.flux]                              # Flux first, from a release pinned by sha256:
# url = "https://github.com/fluxcd/flux2/releases/download/v2.6.4/install.yaml"
# sha256 = "<64 hex digits of that file>"        # required; the download is checked and kept
# # manifest = "flux/install.yaml"               # or the same file, downloaded by you
# git_url = "https://github.com/you/your-cluster.git"
# branch = "main"
# path = "clusters/{name}"
# token = { file = "github-token" }

# A Secret made inside the cluster (a database operator's user Secret), copied
# into Vault KV once it exists: apps outside the cluster read it there.
# [[sync]]
# from = "db/db-pguser-grafana"                 # namespace/name of the Secret
# keys = { password = "GRAFANA_DB_PASSWORD" }    # Secret key -> KV field (or a list: same names)
# mount = "secret"                              # one of [[vault.spec.kv]]
# path = "apps/grafana"

# [verify]
# service = "traefik/traefik"                   # namespace/name of the LoadBalancer Service
# url = "https://blog.example.internal/"
"#;
