//! The semantic checks: everything serde's types cannot say. Each finding is a key
//! path and a message; `Config::validate` turns the path into a line and column.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::locate::Seg;
use super::{Component, Config};
use crate::secrets::SecretRef;

/// A key path: `at!["nodes", i, "vmid"]` is `nodes[i].vmid`.
macro_rules! at {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

type Findings = Vec<(Vec<Seg>, String)>;

/// What [`check`] found, unlocated, in no particular order.
pub(super) struct Checked {
    /// What is wrong with the file.
    pub found: Findings,
    /// Secret refs, well formed, whose file or variable is not there on this machine
    /// (`SecretError::Missing`). The file may be right and the machine not yet set
    /// up: whether that fails is the caller's choice.
    pub absent: Findings,
}

/// Every semantic issue, and every secret not provided here.
pub(super) fn check(config: &Config) -> Checked {
    let mut c = Checker {
        found: Findings::new(),
        absent: Findings::new(),
        secrets: config.secrets(),
        generated: config
            .vault
            .iter()
            .flat_map(|v| &v.spec.generated)
            .map(|g| (g.name.clone(), g.kind))
            .collect(),
    };
    c.cluster(config);
    c.proxmox(config);
    c.nodes(config);
    c.talos(config);
    c.talos_cluster(config);
    c.tailscale(config);
    c.vault(config);
    c.kubernetes(config);
    c.components(config);
    c.verify_and_lab(config);
    c.sync(config);
    c.state(config);
    // Last, and only for an otherwise valid file: what the nodes would be sent.
    if c.found.is_empty() {
        c.talos_render(config);
    }
    Checked {
        found: c.found,
        absent: c.absent,
    }
}

struct Checker {
    found: Findings,
    /// Secret refs that do not resolve because their file or variable is absent.
    absent: Findings,
    /// Where secret refs resolve, so a missing or unreadable one is found here.
    secrets: crate::secrets::Secrets,
    /// `[[vault.spec.generated]]` by name: what a `{ vault = ... }` ref may name.
    generated: BTreeMap<String, castle_vault::GeneratedKind>,
}

impl Checker {
    fn issue(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.found.push((path, message.into()));
    }

    fn url(&mut self, path: Vec<Seg>, value: &str, https_only: bool) {
        match url::Url::parse(value) {
            Ok(u) if https_only && u.scheme() != "https" => {
                self.issue(path, format!("`{value}` must be an https:// URL"));
            }
            Ok(u) if !matches!(u.scheme(), "https" | "http") => {
                self.issue(path, format!("`{value}` must be an http(s) URL"));
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                self.issue(path, format!("`{value}` has no host"));
            }
            Ok(_) => {}
            Err(e) => self.issue(path, format!("`{value}` is not a URL ({e})")),
        }
    }

    fn ip(&mut self, path: Vec<Seg>, value: &str) {
        if value.parse::<IpAddr>().is_err() {
            self.issue(path, format!("`{value}` is not an IP address"));
        }
    }

    /// A well-formed ref that resolves now: the value is read and dropped at once.
    /// Used where the value is needed before Castle has configured Vault, so a
    /// `{ vault = ... }` ref is refused here.
    fn secret(&mut self, path: Vec<Seg>, r: &SecretRef) {
        self.secret_ref(path, r, false);
    }

    /// A ref that resolves now, or names a password of `[[vault.spec.generated]]`
    /// (read from Vault by the step that uses it, after `vault-db` generated it).
    fn secret_or_generated(&mut self, path: Vec<Seg>, r: &SecretRef) {
        self.secret_ref(path, r, true);
    }

    fn secret_ref(&mut self, path: Vec<Seg>, r: &SecretRef, generated_ok: bool) {
        if let Err(problem) = r.check() {
            self.issue(path, problem);
            return;
        }
        let Some(name) = r.generated() else {
            match self.secrets.resolve(r) {
                Ok(_) => {}
                Err(e @ crate::secrets::SecretError::Missing { .. }) => {
                    self.absent.push((path, e.to_string()));
                }
                Err(e) => self.issue(path, e.to_string()),
            }
            return;
        };
        if !generated_ok {
            self.issue(
                path,
                format!(
                    "{r} names a password Castle generates in Vault during the rebirth, but this value is needed before Vault is configured; use `file` or `env` here (generated passwords serve kubernetes.secrets and vault.spec.database connection passwords)"
                ),
            );
            return;
        }
        match self.generated.get(name) {
            Some(castle_vault::GeneratedKind::Password) => {}
            Some(castle_vault::GeneratedKind::EcdsaP256) => self.issue(
                path,
                format!(
                    "`{name}` is an ecdsa-p256 keypair of vault.spec.generated; a secret ref names a generated password"
                ),
            ),
            None => {
                let known: Vec<String> = self
                    .generated
                    .iter()
                    .filter(|(_, k)| **k == castle_vault::GeneratedKind::Password)
                    .map(|(n, _)| format!("`{n}`"))
                    .collect();
                let known = if known.is_empty() {
                    String::from("none is declared")
                } else {
                    format!("declared: {}", known.join(", "))
                };
                self.issue(
                    path,
                    format!(
                        "`{name}` is not a generated password: add [[vault.spec.generated]] with name = \"{name}\" and kind = \"password\" ({known})"
                    ),
                );
            }
        }
    }

    /// A CA file the client will pin: it must read and hold a PEM certificate, as
    /// the Proxmox and Vault clients require when they start.
    fn ca_file(&mut self, cfg: &Config, path: Vec<Seg>, file: Option<&str>) {
        let Some(file) = file else { return };
        match std::fs::read(cfg.path(file)) {
            Err(e) => self.issue(path, format!("cannot read `{file}`: {e}")),
            Ok(pem) if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                self.issue(
                    path,
                    format!("`{file}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
                );
            }
            Ok(_) => {}
        }
    }

    fn label(&mut self, path: Vec<Seg>, value: &str) {
        if !is_label(value) {
            self.issue(
                path,
                format!(
                    "`{value}` is not a DNS label (lowercase letters, digits and `-`, at most 63)"
                ),
            );
        }
    }

    fn cluster(&mut self, cfg: &Config) {
        let k = &cfg.cluster;
        self.label(at!["cluster", "name"], &k.name);
        self.url(at!["cluster", "endpoint"], &k.endpoint, true);
        self.ip(at!["cluster", "gateway"], &k.gateway);
        if k.installer_image.is_empty() {
            self.issue(
                at!["cluster", "installer_image"],
                "is empty: name the Talos installer image, like ghcr.io/siderolabs/installer:v1.12.0",
            );
        } else if let Err(problem) = super::reference::check(&k.installer_image) {
            self.issue(
                at!["cluster", "installer_image"],
                format!(
                    "`{}` is not an image reference: {problem}; write it like ghcr.io/siderolabs/installer:v1.12.0",
                    k.installer_image
                ),
            );
        }
        for (i, ns) in k.nameservers.iter().enumerate() {
            self.ip(at!["cluster", "nameservers", i], ns);
        }
        for (i, san) in k.api_cert_sans.iter().enumerate() {
            if san.is_empty() || san.contains("://") || san.contains(char::is_whitespace) {
                self.issue(
                    at!["cluster", "api_cert_sans", i],
                    format!("`{san}` is not a host name or address"),
                );
            }
        }
        for (i, issuer) in k.service_account_issuers.iter().enumerate() {
            self.url(at!["cluster", "service_account_issuers", i], issuer, false);
        }
        if let Some(uri) = &k.jwks_uri {
            self.url(at!["cluster", "jwks_uri"], uri, false);
        }
    }

    fn proxmox(&mut self, cfg: &Config) {
        let p = &cfg.proxmox;
        self.url(at!["proxmox", "endpoint"], &p.endpoint, true);
        self.secret(at!["proxmox", "token"], &p.token);
        self.ca_file(cfg, at!["proxmox", "ca_file"], p.ca_file.as_deref());
        let well_formed = p.token_id.split_once('@').is_some_and(|(user, rest)| {
            !user.is_empty()
                && rest
                    .split_once('!')
                    .is_some_and(|(realm, id)| !realm.is_empty() && !id.is_empty())
        });
        if !well_formed {
            self.issue(
                at!["proxmox", "token_id"],
                format!("`{}` is not USER@REALM!TOKENID", p.token_id),
            );
        }
        let [lo, hi] = p.vmid_range;
        if lo > hi || !VMIDS.contains(&lo) || !VMIDS.contains(&hi) {
            self.issue(
                at!["proxmox", "vmid_range"],
                format!("[{lo}, {hi}] is not a range of VMIDs (100 to 999999999, min <= max)"),
            );
        }
        if !VMIDS.contains(&p.template_vmid) {
            self.issue(
                at!["proxmox", "template_vmid"],
                format!("{} is not a VMID (100 to 999999999)", p.template_vmid),
            );
        }
        if let Some(vlan) = p.vlan
            && !(1..=4094).contains(&vlan)
        {
            self.issue(
                at!["proxmox", "vlan"],
                format!("VLAN {vlan} is outside 1-4094 (802.1Q); leave `vlan` out for an untagged bridge"),
            );
        }
        if p.clone_concurrency == Some(0) {
            self.issue(at!["proxmox", "clone_concurrency"], "must be at least 1");
        }
        if let Some(f) = &p.format
            && !castle_proxmox::CLONE_FORMATS.contains(&f.as_str())
        {
            self.issue(
                at!["proxmox", "format"],
                format!(
                    "`{f}` is not a disk format Proxmox clones to ({})",
                    castle_proxmox::CLONE_FORMATS.join(", ")
                ),
            );
        }
        if p.tag.is_empty()
            || !p
                .tag
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
        {
            self.issue(
                at!["proxmox", "tag"],
                format!(
                    "`{}` is not a Proxmox tag (letters, digits, `-`, `_`)",
                    p.tag
                ),
            );
        }
    }

    fn nodes(&mut self, cfg: &Config) {
        let [lo, hi] = cfg.proxmox.vmid_range;
        // A broken range is reported once, at the range, not again at every node.
        let range_ok = lo <= hi && VMIDS.contains(&lo) && VMIDS.contains(&hi);
        if cfg.nodes.is_empty() {
            self.issue(at!["nodes"], "at least one node is needed");
        } else if cfg.control_planes().next().is_none() {
            self.issue(
                at!["nodes", 0, "role"],
                "no node has role = \"controlplane\": a cluster needs at least one control plane",
            );
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut vmids: BTreeMap<u32, usize> = BTreeMap::new();
        let mut ips: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (i, n) in cfg.nodes.iter().enumerate() {
            self.label(at!["nodes", i, "name"], &n.name);
            if let Some(&first) = names.get(n.name.as_str()) {
                self.issue(
                    at!["nodes", i, "name"],
                    format!("`{}` is already used by nodes[{first}]", n.name),
                );
            } else {
                names.insert(&n.name, i);
            }
            if let Some(&first) = vmids.get(&n.vmid) {
                self.issue(
                    at!["nodes", i, "vmid"],
                    format!(
                        "{} is already used by nodes[{first}] ({})",
                        n.vmid, cfg.nodes[first].name
                    ),
                );
            } else {
                vmids.insert(n.vmid, i);
            }
            if n.vmid == cfg.proxmox.template_vmid {
                self.issue(
                    at!["nodes", i, "vmid"],
                    format!("{} is the template's VMID", n.vmid),
                );
            } else if range_ok && !(lo..=hi).contains(&n.vmid) {
                self.issue(
                    at!["nodes", i, "vmid"],
                    format!("{} is outside proxmox.vmid_range [{lo}, {hi}]", n.vmid),
                );
            }
            match cidr(&n.ip) {
                Some((ip, _)) => {
                    if let Some(&first) = ips.get(&ip) {
                        self.issue(
                            at!["nodes", i, "ip"],
                            format!(
                                "{ip} is already used by nodes[{first}] ({})",
                                cfg.nodes[first].name
                            ),
                        );
                    } else {
                        ips.insert(ip, i);
                    }
                }
                None => self.issue(
                    at!["nodes", i, "ip"],
                    format!(
                        "`{}` is not an address with prefix, like 192.168.1.211/24",
                        n.ip
                    ),
                ),
            }
            if n.cores == 0 {
                self.issue(at!["nodes", i, "cores"], "must be at least 1");
            }
            if n.memory_mib < 1024 {
                self.issue(
                    at!["nodes", i, "memory_mib"],
                    format!(
                        "{} MiB is too little for Talos (at least 1024)",
                        n.memory_mib
                    ),
                );
            }
            if n.disk_gib < 10 {
                self.issue(
                    at!["nodes", i, "disk_gib"],
                    format!("{} GiB is too little for Talos (at least 10)", n.disk_gib),
                );
            }
        }
    }

    fn talos(&mut self, cfg: &Config) {
        for (i, patch) in cfg.talos.patches.iter().enumerate() {
            match (&patch.file, &patch.inline) {
                (Some(_), Some(_)) | (None, None) => {
                    self.issue(
                        at!["talos", "patches", i],
                        "a patch has either `file` or `inline`",
                    );
                }
                (Some(f), None) if f.is_empty() => {
                    self.issue(at!["talos", "patches", i, "file"], "is empty");
                }
                _ => {}
            }
        }
        for (i, doc) in cfg.talos.extra_documents.iter().enumerate() {
            if doc.is_empty() {
                self.issue(at!["talos", "extra_documents", i], "is empty");
            }
        }
    }

    /// What Talos itself would refuse, or what would make the cluster unreachable,
    /// said here rather than by a node after the VMs exist.
    fn talos_cluster(&mut self, cfg: &Config) {
        let k = &cfg.cluster;
        let version = castle_talos::parse_version(&k.talos_version);
        if version.is_none() {
            self.issue(
                at!["cluster", "talos_version"],
                format!("`{}` is not a Talos version like v1.12.0", k.talos_version),
            );
        }
        // kube-apiserver takes one --service-account-issuer per issuer; Talos 1.12's
        // extraArgs is one string per flag (v1alpha1_types.go, v1.12.11), lists
        // arrive in 1.13 (`Args`, v1.13.0).
        if version.is_some_and(|v| v < (1, 13)) && k.service_account_issuers.len() > 1 {
            self.issue(
                at!["cluster", "service_account_issuers", 1],
                format!(
                    "Talos {} passes one value per kube-apiserver flag, so only one service-account issuer reaches the API server; keep one (the first signs) or use Talos v1.13 or later",
                    k.talos_version
                ),
            );
        }
        let cp_ips: Vec<IpAddr> = cfg
            .control_planes()
            .filter_map(|n| n.address().parse().ok())
            .collect();
        let node_ips: Vec<IpAddr> = cfg
            .nodes
            .iter()
            .filter_map(|n| n.address().parse().ok())
            .collect();
        let vip: Option<IpAddr> = match &k.vip {
            None => None,
            Some(v) => {
                match v.parse::<IpAddr>() {
                    Err(_) => {
                        self.issue(at!["cluster", "vip"], format!("`{v}` is not an IP address"));
                        None
                    }
                    Ok(ip) if node_ips.contains(&ip) => {
                        self.issue(
                        at!["cluster", "vip"],
                        format!("{ip} is a node's own address; the shared address must be a free one"),
                    );
                        None
                    }
                    Ok(ip) => {
                        let same_link = cfg
                            .control_planes()
                            .filter_map(|n| cidr(&n.ip))
                            .all(|(net, bits)| in_prefix(ip, net, bits));
                        if !same_link {
                            self.issue(
                            at!["cluster", "vip"],
                            format!("{ip} is not in the control planes' network: a layer-2 shared address must be"),
                        );
                        }
                        Some(ip)
                    }
                }
            }
        };
        if let Ok(u) = url::Url::parse(&k.endpoint)
            && let Some(host) = u.host_str()
            && let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>()
            && !cp_ips.is_empty()
            && !cp_ips.contains(&ip)
            && vip != Some(ip)
        {
            self.issue(
                at!["cluster", "endpoint"],
                format!(
                    "{ip} is neither a control plane's address ({}) nor the shared address `cluster.vip`: nothing would answer there",
                    cp_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        let mut nets = Vec::new();
        for (key, list) in [
            ("pod_subnets", &k.pod_subnets),
            ("service_subnets", &k.service_subnets),
        ] {
            if list.is_empty() {
                self.issue(at!["cluster", key], "needs at least one CIDR");
            }
            for (i, s) in list.iter().enumerate() {
                match cidr(s) {
                    Some((ip, bits)) => {
                        if let Some((other, _, _)) =
                            nets.iter().find(|(_, n, b)| overlaps((ip, bits), (*n, *b)))
                        {
                            self.issue(at!["cluster", key, i], format!("{s} overlaps {other}"));
                        }
                        if let Some(n) = node_ips.iter().find(|n| in_prefix(**n, ip, bits)) {
                            self.issue(
                                at!["cluster", key, i],
                                format!("{s} holds the node address {n}: pods and services need their own ranges"),
                            );
                        }
                        nets.push((s.clone(), ip, bits));
                    }
                    None => self.issue(
                        at!["cluster", key, i],
                        format!("`{s}` is not a CIDR like 10.96.0.0/12"),
                    ),
                }
            }
        }
        for (i, n) in cfg.nodes.iter().enumerate() {
            if let Some(mac) = &n.mac {
                let bytes: Vec<Option<u8>> = mac
                    .split(':')
                    .map(|b| {
                        (b.len() == 2)
                            .then(|| u8::from_str_radix(b, 16).ok())
                            .flatten()
                    })
                    .collect();
                let ok = bytes.len() == 6 && bytes.iter().all(Option::is_some);
                if !ok {
                    self.issue(
                        at!["nodes", i, "mac"],
                        format!("`{mac}` is not a hardware address like 02:1a:2b:3c:4d:5e"),
                    );
                } else if bytes[0].is_some_and(|b| b & 1 == 1) {
                    // qemu-server's `mac-addr` format refuses multicast addresses.
                    self.issue(at!["nodes", i, "mac"], format!("`{mac}` is a multicast address: a NIC needs a unicast one (even first byte)"));
                }
            }
        }
    }

    /// Reads and parses every patch and extra document, then renders every node's
    /// machine config (with a throwaway secrets bundle) and checks it by Talos's own
    /// rules, so a patch that does not apply, or a config a node would refuse, is
    /// found here and blamed on the first patch that breaks it.
    fn talos_render(&mut self, cfg: &Config) {
        let mut patches = Vec::new();
        for (i, p) in cfg.talos.patches.iter().enumerate() {
            // Neither file nor inline is reported by `talos()` already.
            if p.file.is_none() && p.inline.is_none() {
                continue;
            }
            let text = match crate::steps::patch_text(cfg, p) {
                Ok(t) => t,
                Err(e) => {
                    self.issue(at!["talos", "patches", i, "file"], e);
                    continue;
                }
            };
            match castle_talos::Patch::parse(&text) {
                Ok(parsed) => patches.push((i, p.role, parsed)),
                Err(e) => self.issue(at!["talos", "patches", i], e.to_string()),
            }
        }
        let mut extra = Vec::new();
        for (i, f) in cfg.talos.extra_documents.iter().enumerate() {
            match std::fs::read_to_string(cfg.path(f)) {
                Ok(t) => extra.push(t),
                Err(e) => self.issue(
                    at!["talos", "extra_documents", i],
                    format!("cannot read `{f}`: {e}"),
                ),
            }
        }
        if !self.found.is_empty() {
            return;
        }
        let Ok(bundle) = castle_talos::SecretsBundle::generate(None) else {
            return;
        };
        let key = secrecy::SecretString::from(crate::castle::TAILNET_KEY_PLACEHOLDER);
        let mut blamed = std::collections::BTreeSet::new();
        for (n, node) in cfg.nodes.iter().enumerate() {
            // The shortest prefix of the patches that breaks this node's config.
            for upto in 0..=patches.len() {
                let some: Vec<_> = patches[..upto]
                    .iter()
                    .map(|(_, r, p)| (*r, p.clone()))
                    .collect();
                let input =
                    crate::steps::machine_input(cfg, node, &some, extra.clone(), Some(&key));
                let Err(e) = input.render(&bundle) else {
                    continue;
                };
                match upto.checked_sub(1).map(|k| patches[k].0) {
                    Some(i) if blamed.insert(i) => self.issue(
                        at!["talos", "patches", i],
                        format!("applied to {}'s config: {e}", node.name),
                    ),
                    Some(_) => {}
                    None => self.issue(at!["nodes", n], e.to_string()),
                }
                break;
            }
        }
    }

    fn tailscale(&mut self, cfg: &Config) {
        let Some(ts) = &cfg.tailscale else { return };
        self.secret(at!["tailscale", "oauth_client_id"], &ts.oauth_client_id);
        self.secret(
            at!["tailscale", "oauth_client_secret"],
            &ts.oauth_client_secret,
        );
        if ts.tags.is_empty() {
            self.issue(
                at!["tailscale", "tags"],
                "keys minted by an OAuth client must carry at least one tag",
            );
        }
        for (i, tag) in ts.tags.iter().enumerate() {
            // Tailscale's own rule (tailcfg `CheckTag`), as the key request meets it.
            if let Err(rule) = castle_tailscale::check_tag(tag) {
                self.issue(
                    at!["tailscale", "tags", i],
                    format!("`{tag}`: {rule} (like `tag:k8s`)"),
                );
            }
        }
        if !ts.hostname_pattern.contains("{node}") {
            self.issue(
                at!["tailscale", "hostname_pattern"],
                "must contain `{node}`, or every node gets the same hostname",
            );
        }
        if !(60..=90 * 86_400).contains(&ts.key_ttl_seconds) {
            self.issue(
                at!["tailscale", "key_ttl_seconds"],
                "must be between 60 and 7776000 (90 days)",
            );
        }
    }

    fn vault(&mut self, cfg: &Config) {
        let Some(v) = &cfg.vault else { return };
        self.url(at!["vault", "address"], &v.address, false);
        self.secret(at!["vault", "token"], &v.token);
        self.ca_file(cfg, at!["vault", "ca_file"], v.ca_file.as_deref());
        for (i, db) in v.spec.database.iter().enumerate() {
            for (name, conn) in &db.connections {
                self.secret_or_generated(
                    at![
                        "vault",
                        "spec",
                        "database",
                        i,
                        "connections",
                        name,
                        "password"
                    ],
                    &conn.password,
                );
            }
        }
        match v.spec.check() {
            Ok(()) => {}
            // The key already says `vault.spec`; the message need not say it again.
            Err(castle_vault::Error::Spec(problem)) => self.issue(at!["vault", "spec"], problem),
            Err(e) => self.issue(at!["vault", "spec"], e.to_string()),
        }
        // Vault compares a token's `iss` with bound_issuer exactly; the API server
        // signs with the first configured issuer, and Talos makes the cluster
        // endpoint the issuer when none is configured.
        let issuers: Vec<&str> = if cfg.cluster.service_account_issuers.is_empty() {
            vec![cfg.cluster.endpoint.as_str()]
        } else {
            cfg.cluster
                .service_account_issuers
                .iter()
                .map(String::as_str)
                .collect()
        };
        // A malformed issuer is reported at the issuer, not again at every mount.
        let issuers_ok = issuers.iter().all(|i| url::Url::parse(i).is_ok());
        for (i, jwt) in v.spec.jwt.iter().enumerate() {
            if issuers_ok && !issuers.contains(&jwt.bound_issuer.as_str()) {
                let whose = if cfg.cluster.service_account_issuers.is_empty() {
                    "the cluster endpoint, the issuer Talos uses when cluster.service_account_issuers is empty"
                } else {
                    "cluster.service_account_issuers"
                };
                self.issue(
                    at!["vault", "spec", "jwt", i, "bound_issuer"],
                    format!(
                        "`{}` is not an issuer of this cluster's service-account tokens, so Vault would refuse them all; use {} ({whose})",
                        jwt.bound_issuer,
                        issuers.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(" or ")
                    ),
                );
            }
        }
        for (name, text) in &v.spec.policies {
            if let Some(problem) = policy_syntax(text) {
                self.issue(
                    at!["vault", "spec", "policies", name],
                    format!("policy `{name}` does not parse: {problem}"),
                );
            }
        }
        for (name, file) in &v.spec.policy_files {
            let path = at!["vault", "spec", "policy_files", name];
            let text = match std::fs::read_to_string(cfg.base_dir().join(file)) {
                Ok(text) => text,
                Err(e) => {
                    self.issue(path, format!("cannot read `{}`: {e}", file.display()));
                    continue;
                }
            };
            if let Some(problem) = policy_syntax(&text) {
                self.issue(
                    path,
                    format!("`{}` does not parse: {problem}", file.display()),
                );
                continue;
            }
            // OpenBao's rules, as the spec check applies them to inline policies.
            let mut alone = castle_vault::VaultSpec::<SecretRef>::default();
            alone.policies.insert(name.clone(), text);
            if let Err(e) = alone.check() {
                let problem = match e {
                    castle_vault::Error::Spec(problem) => problem,
                    e => e.to_string(),
                };
                self.issue(path, format!("`{}`: {problem}", file.display()));
            }
        }
        // The generator builds the whole password in memory before one KV write.
        for (i, g) in v.spec.generated.iter().enumerate() {
            if g.kind == castle_vault::GeneratedKind::Password && g.length > MAX_PASSWORD {
                self.issue(
                    at!["vault", "spec", "generated", i, "length"],
                    format!(
                        "{} characters is more than a password needs; at most {MAX_PASSWORD}",
                        g.length
                    ),
                );
            }
        }
        if let Some(name) = &v.service_account_key {
            let declared = v
                .spec
                .generated
                .iter()
                .any(|g| &g.name == name && g.kind == castle_vault::GeneratedKind::EcdsaP256);
            if !declared {
                self.issue(
                    at!["vault", "service_account_key"],
                    format!("`{name}` is not an ecdsa-p256 entry of vault.spec.generated"),
                );
            }
        }
    }

    fn kubernetes(&mut self, cfg: &Config) {
        let k = &cfg.kubernetes;
        let mut namespaces: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, ns) in k.namespaces.iter().enumerate() {
            self.label(at!["kubernetes", "namespaces", i], ns);
            if let Some(first) = namespaces.insert(ns, i) {
                self.issue(
                    at!["kubernetes", "namespaces", i],
                    format!("`{ns}` is already listed at kubernetes.namespaces[{first}]"),
                );
            }
        }
        let mut secrets: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (i, s) in k.secrets.iter().enumerate() {
            if !is_subdomain(&s.name) {
                self.issue(
                    at!["kubernetes", "secrets", i, "name"],
                    format!(
                        "`{}` is not a Kubernetes object name (lowercase DNS name)",
                        s.name
                    ),
                );
            }
            self.label(at!["kubernetes", "secrets", i, "namespace"], &s.namespace);
            if let Some(&first) = secrets.get(&(s.namespace.as_str(), s.name.as_str())) {
                self.issue(
                    at!["kubernetes", "secrets", i, "name"],
                    format!(
                        "{}/{} is already declared by kubernetes.secrets[{first}]",
                        s.namespace, s.name
                    ),
                );
            } else {
                secrets.insert((&s.namespace, &s.name), i);
            }
            self.kube_secret(cfg, i, s);
        }
        let dns = &k.coredns;
        self.ip(at!["kubernetes", "coredns", "cluster_ip"], &dns.cluster_ip);
        if let Err(problem) = super::reference::check(&dns.image) {
            self.issue(
                at!["kubernetes", "coredns", "image"],
                format!(
                    "`{}` is not an image reference: {problem}; write it like {}",
                    dns.image,
                    super::DEFAULT_COREDNS_IMAGE
                ),
            );
        }
        if dns.replicas == 0 {
            self.issue(
                at!["kubernetes", "coredns", "replicas"],
                "must be at least 1: the cluster resolves no names without CoreDNS",
            );
        }
        for (i, f) in dns.forwards.iter().enumerate() {
            if f.zone.is_empty() {
                self.issue(
                    at!["kubernetes", "coredns", "forwards", i, "zone"],
                    "is empty",
                );
            }
            if f.to.is_empty() {
                self.issue(
                    at!["kubernetes", "coredns", "forwards", i, "to"],
                    "a forward needs at least one upstream",
                );
            }
            for (j, to) in f.to.iter().enumerate() {
                self.ip(at!["kubernetes", "coredns", "forwards", i, "to", j], to);
            }
        }
    }

    /// One `[[kubernetes.secrets]]`: its refs, its metadata, and the keys
    /// kube-apiserver requires of its type (`pkg/apis/core/validation/validation.go`
    /// `ValidateSecret`), so what the API server would refuse after the VMs exist is
    /// refused here.
    fn kube_secret(&mut self, cfg: &Config, i: usize, s: &super::KubeSecret) {
        let vault_token = cfg.vault.as_ref().map(|v| &v.token);
        for (key, r) in &s.data {
            let path = at!["kubernetes", "secrets", i, "data", key];
            if !is_config_key(key) {
                self.issue(
                    path.clone(),
                    format!(
                        "`{key}` is not a Secret key (letters, digits, `-`, `_`, `.`; not `.` or `..`)"
                    ),
                );
            }
            self.secret_or_generated(path, r);
        }
        if let Some(d) = &s.dockerconfigjson {
            let at_docker =
                |field: &str| at!["kubernetes", "secrets", i, "dockerconfigjson", field];
            if d.registry.is_empty() || d.registry.contains(char::is_whitespace) {
                self.issue(
                    at_docker("registry"),
                    format!(
                        "`{}` is not a registry: name it as image references do, like ghcr.io",
                        d.registry
                    ),
                );
            }
            // kubelet splits the decoded `auth` at its first colon into user and
            // password (pkg/credentialprovider/config.go, decodeDockerConfigFieldAuth).
            if d.username.is_empty() || d.username.contains(':') {
                self.issue(
                    at_docker("username"),
                    "a registry user is not empty and holds no `:` (kubelet splits `auth` at its first colon)",
                );
            }
            self.secret_or_generated(at_docker("token"), &d.token);
            if s.data.contains_key(".dockerconfigjson") {
                self.issue(
                    at!["kubernetes", "secrets", i, "data", ".dockerconfigjson"],
                    "`dockerconfigjson` composes this key; give one or the other",
                );
            }
            if let Some(t) = s
                .kind
                .as_deref()
                .filter(|t| *t != super::DOCKER_CONFIG_JSON)
            {
                self.issue(
                    at!["kubernetes", "secrets", i, "type"],
                    format!(
                        "`dockerconfigjson` makes a {} Secret, not `{t}`; leave `type` out",
                        super::DOCKER_CONFIG_JSON
                    ),
                );
            }
        }
        if s.data.is_empty() && s.dockerconfigjson.is_none() {
            self.issue(
                at!["kubernetes", "secrets", i, "data"],
                "a Secret needs at least one key (or `dockerconfigjson`)",
            );
        }
        if let Some(token) = vault_token {
            for (key, r) in s.refs() {
                if r == token {
                    let path = if key == ".dockerconfigjson" {
                        at!["kubernetes", "secrets", i, "dockerconfigjson", "token"]
                    } else {
                        at!["kubernetes", "secrets", i, "data", &key]
                    };
                    self.issue(
                        path,
                        format!(
                            "{r} is Castle's own Vault token (vault.token): no cluster may hold it; External Secrets logs in with the JWT role of [components.eso.store]"
                        ),
                    );
                }
            }
        }
        for (key, value) in &s.labels {
            let path = at!["kubernetes", "secrets", i, "labels", key];
            if let Some(problem) = qualified_name(key) {
                self.issue(path, format!("label `{key}`: {problem}"));
            } else if let Some(problem) = label_value(value) {
                self.issue(path, format!("label value `{value}`: {problem}"));
            }
        }
        for key in s.annotations.keys() {
            if let Some(problem) = qualified_name(key) {
                self.issue(
                    at!["kubernetes", "secrets", i, "annotations", key],
                    format!("annotation `{key}`: {problem}"),
                );
            }
        }
        // The keys each type requires, as ValidateSecret requires them.
        let has = |k: &str| {
            s.data.contains_key(k) || (k == ".dockerconfigjson" && s.dockerconfigjson.is_some())
        };
        let t = s.secret_type();
        let missing: Option<String> = match t {
            super::DOCKER_CONFIG_JSON if !has(".dockerconfigjson") => Some(
                "needs `dockerconfigjson = { registry, username, token }` (or a `.dockerconfigjson` key)".into(),
            ),
            "kubernetes.io/dockercfg" if !has(".dockercfg") => {
                Some("needs a `.dockercfg` key".into())
            }
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                Some("needs a `username` or `password` key".into())
            }
            "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
                Some("needs an `ssh-privatekey` key".into())
            }
            "kubernetes.io/tls" if !has("tls.crt") || !has("tls.key") => {
                Some("needs `tls.crt` and `tls.key` keys".into())
            }
            "kubernetes.io/service-account-token"
                if s
                    .annotations
                    .get("kubernetes.io/service-account.name")
                    .is_none_or(String::is_empty) =>
            {
                Some("needs the annotation `kubernetes.io/service-account.name`".into())
            }
            _ => None,
        };
        if let Some(what) = missing {
            self.issue(
                at!["kubernetes", "secrets", i, "type"],
                format!("a {t} Secret {what}: kube-apiserver refuses it otherwise"),
            );
        }
    }

    fn components(&mut self, cfg: &Config) {
        for (name, comp) in cfg.all_components() {
            if let Some(comp) = comp {
                self.component(cfg, name, comp);
            }
        }
    }

    fn component(&mut self, cfg: &Config, name: &str, comp: &Component) {
        let pin_ok = comp
            .sha256
            .as_ref()
            .is_none_or(|h| h.len() == 64 && h.chars().all(|ch| ch.is_ascii_hexdigit()));
        let flux = name == "flux";
        let given = [
            comp.manifest.is_some(),
            comp.url.is_some(),
            comp.chart.is_some() && !flux,
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            self.issue(
                at!["components", name],
                if flux {
                    "give either `manifest` (Flux's install.yaml, a local file) or `url` (the release asset), with its `sha256`"
                } else {
                    "give one of `manifest` (a local file), `url` with `sha256`, or `chart = { repo, name, version }`"
                },
            );
        }
        match (&comp.manifest, &comp.url) {
            (Some(m), _) if m.is_empty() => {
                self.issue(at!["components", name, "manifest"], "is empty")
            }
            // Read as the install step reads it, so what it would refuse after the
            // VMs exist is refused now. A disabled component is never read.
            (Some(m), None) if comp.enabled && pin_ok => {
                if let Err(e) = castle_kube::Bundle::load(&cfg.path(m), comp.sha256.as_deref()) {
                    // The YAML parser draws a snippet under its first line; the
                    // first line says what and where.
                    let e = e.to_string();
                    let first = e.lines().next().unwrap_or_default();
                    self.issue(at!["components", name, "manifest"], first);
                }
            }
            // Downloaded once, before anything is created (the `downloads` step),
            // and installed only if its digest matches.
            (None, Some(u)) => {
                self.url(at!["components", name, "url"], u, false);
                if comp.sha256.is_none() && !flux {
                    self.issue(
                        at!["components", name],
                        format!(
                            "`url` needs `sha256`: Castle downloads {u} once and installs it only if its digest is the one you pinned"
                        ),
                    );
                }
            }
            _ => {}
        }
        if flux && comp.sha256.is_none() {
            self.issue(
                at!["components", name],
                "Flux's release manifest needs `sha256`: pin the digest of the install.yaml you reviewed (`sha256sum install.yaml`)",
            );
        }
        if !pin_ok && let Some(h) = &comp.sha256 {
            self.issue(
                at!["components", name, "sha256"],
                format!("`{h}` is not 64 hex digits"),
            );
        }
        if let Some(chart) = &comp.chart {
            if flux {
                self.issue(
                    at!["components", name, "chart"],
                    "Flux installs itself from its release manifest: give `manifest` or `url` with `sha256`",
                );
            } else {
                self.chart(cfg, name, chart);
            }
        }
        if let Some(values) = &comp.values {
            if comp.chart.is_none() || flux {
                self.issue(
                    at!["components", name, "values"],
                    "`values` belongs to a `chart`: they become its HelmRelease's spec.values",
                );
            } else if let Some(at) = datetime_in(values) {
                let mut path = at!["components", name, "values"];
                path.extend(at.iter().map(Seg::from));
                self.issue(
                    path,
                    "is a TOML date-time, which Helm values cannot hold; quote it to pass a string",
                );
            }
        }
        for (i, r) in comp.readiness.iter().enumerate() {
            if !matches!(r.kind.as_str(), "Deployment" | "DaemonSet" | "StatefulSet") {
                self.issue(
                    at!["components", name, "readiness", i, "kind"],
                    format!("`{}` is not Deployment, DaemonSet or StatefulSet", r.kind),
                );
            }
        }
        // One struct carries every component's fields; these say which belong where,
        // so a flux setting under metallb is an error rather than silently ignored.
        let specific = [
            ("addresses", !comp.addresses.is_empty(), "metallb"),
            ("git_url", comp.git_url.is_some(), "flux"),
            ("branch", comp.branch.is_some(), "flux"),
            ("path", comp.path.is_some(), "flux"),
            ("token", comp.token.is_some(), "flux"),
            ("interval", comp.interval.is_some(), "flux"),
            ("store", comp.store.is_some(), "eso"),
        ];
        for (field, present, owner) in specific {
            if present && owner != name {
                self.issue(
                    at!["components", name, field],
                    format!("`{field}` belongs to components.{owner} only"),
                );
            }
        }
        match name {
            "eso" => {
                if let Some(store) = &comp.store {
                    self.secret_store(cfg, store);
                }
            }
            "metallb" => {
                if comp.addresses.is_empty() {
                    self.issue(
                        at!["components", name, "addresses"],
                        "MetalLB needs at least one address range",
                    );
                }
                // MetalLB would answer ARP for these: a node's or the gateway's
                // address among them takes that address away from its owner.
                let mut taken: Vec<(IpAddr, String)> = cfg
                    .nodes
                    .iter()
                    .filter_map(|n| Some((n.address().parse().ok()?, format!("node {}", n.name))))
                    .collect();
                taken.extend(
                    cfg.cluster
                        .gateway
                        .parse()
                        .ok()
                        .map(|g| (g, "the gateway".into())),
                );
                taken.extend(
                    cfg.cluster
                        .vip
                        .as_deref()
                        .and_then(|v| v.parse().ok())
                        .map(|v| (v, "the shared address `cluster.vip`".into())),
                );
                for (i, a) in comp.addresses.iter().enumerate() {
                    match address_range(a) {
                        None => self.issue(
                            at!["components", name, "addresses", i],
                            format!("`{a}` is not a range `a-b` (low to high) or a CIDR"),
                        ),
                        Some((low, high)) => {
                            let inside: Vec<String> = taken
                                .iter()
                                .filter(|(ip, _)| (low..=high).contains(ip))
                                .map(|(ip, who)| format!("{ip} ({who})"))
                                .collect();
                            if !inside.is_empty() {
                                self.issue(
                                    at!["components", name, "addresses", i],
                                    format!(
                                        "`{a}` holds {}: MetalLB would hand it to a Service; choose free addresses",
                                        inside.join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            "flux" => {
                match &comp.git_url {
                    Some(u) => self.url(at!["components", name, "git_url"], u, false),
                    None => self.issue(at!["components", name], "flux needs `git_url`"),
                }
                // The GitRepository and Kustomization CRDs take Go durations.
                if let Some(interval) = &comp.interval
                    && !is_flux_duration(interval)
                {
                    self.issue(
                        at!["components", name, "interval"],
                        format!(
                            "`{interval}` is not a duration like 1m, 30s or 1h30m (ms, s, m, h)"
                        ),
                    );
                }
                match &comp.token {
                    Some(t) => self.secret(at!["components", name, "token"], t),
                    None => {
                        self.issue(at!["components", name], "flux needs `token` (a secret ref)")
                    }
                }
            }
            _ => {}
        }
    }

    /// A chart Flux installs: a source Flux can read, a chart name, an exact
    /// version, names the API server takes, and Flux to install it.
    fn chart(&mut self, cfg: &Config, name: &str, chart: &super::Chart) {
        let at_chart = |field: &str| at!["components", name, "chart", field];
        match chart.repo.strip_prefix("oci://") {
            Some(path) => {
                let (host, rest) = path.split_once('/').unwrap_or((path, ""));
                if host.is_empty() || rest.is_empty() {
                    self.issue(
                        at_chart("repo"),
                        format!(
                            "`{}` is not an OCI repository: oci://<registry>/<path>, the chart being <path>/<name>",
                            chart.repo
                        ),
                    );
                }
            }
            None => self.url(at_chart("repo"), &chart.repo, false),
        }
        if chart.name.is_empty() || chart.name.contains('/') {
            self.issue(
                at_chart("name"),
                format!("`{}` is not a chart name", chart.name),
            );
        }
        match &chart.version {
            None => self.issue(
                at!["components", name, "chart"],
                "a chart needs a pinned `version` (e.g. version = \"0.15.2\"): without one Flux installs whatever the repository calls latest, a different cluster each rebirth",
            ),
            Some(v)
                if v.is_empty()
                    || v.chars().any(|c| {
                        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
                    })
                    || v == "x"
                    || v.split('.').any(|p| p == "x" || p == "X") =>
            {
                self.issue(
                    at_chart("version"),
                    format!(
                        "`{v}` is not an exact version: pin one (e.g. \"0.15.2\"), not a range"
                    ),
                );
            }
            Some(_) => {}
        }
        if let Some(release) = &chart.release {
            self.label(at_chart("release"), release);
        }
        if let Some(ns) = &chart.namespace {
            self.label(at_chart("namespace"), ns);
        }
        if cfg.component("flux").is_none() {
            self.issue(
                at!["components", name, "chart"],
                "a chart is installed by Flux: enable [components.flux]",
            );
        }
    }

    /// `[components.eso.store]`: everything it names is declared in `[vault.spec]`,
    /// and the role admits the token ESO will present for the service account
    /// (Vault's JWT login checks `sub` against `bound_subject` and `aud` against
    /// `bound_audiences`, openbao `builtin/credential/jwt/path_login.go`).
    fn secret_store(&mut self, cfg: &Config, store: &super::SecretStore) {
        let at_store = |field: &str| at!["components", "eso", "store", field];
        if !is_subdomain(&store.name) {
            self.issue(
                at_store("name"),
                format!(
                    "`{}` is not a Kubernetes object name (lowercase DNS name)",
                    store.name
                ),
            );
        }
        let (ns, account) = store.account();
        if !is_label(ns) || !is_subdomain(account) {
            self.issue(
                at_store("service_account"),
                format!(
                    "`{}` must be namespace/name of a service account",
                    store.service_account
                ),
            );
        }
        if let Some(server) = &store.server {
            self.url(at_store("server"), server, false);
        }
        let Some(v) = &cfg.vault else {
            self.issue(
                at!["components", "eso", "store"],
                "a ClusterSecretStore reads the [vault] Castle configures: add [vault]",
            );
            return;
        };
        if !v.spec.kv.iter().any(|k| k.path == store.mount) {
            self.issue(
                at_store("mount"),
                format!("`{}` is not a KV mount of [[vault.spec.kv]]", store.mount),
            );
        }
        let Some(jwt) = v.spec.jwt.iter().find(|j| j.path == store.jwt_path) else {
            self.issue(
                at_store("jwt_path"),
                format!(
                    "`{}` is not a JWT mount of [[vault.spec.jwt]] (its `path`)",
                    store.jwt_path
                ),
            );
            return;
        };
        let Some(role) = jwt.roles.get(&store.role) else {
            self.issue(
                at_store("role"),
                format!(
                    "`{}` is not a role of the JWT mount `{}` ([vault.spec.jwt.roles.NAME])",
                    store.role, jwt.path
                ),
            );
            return;
        };
        let subject = store.subject();
        if let Some(bound) = &role.bound_subject
            && !bound.is_empty()
            && *bound != subject
        {
            self.issue(
                at_store("service_account"),
                format!(
                    "the role `{}` is bound to the subject `{bound}`, but tokens of `{}` carry `{subject}`: Vault would refuse ESO's login",
                    store.role, store.service_account
                ),
            );
        }
        let audiences = cfg.store_audiences(store);
        if audiences.is_empty() {
            self.issue(
                at_store("audiences"),
                format!(
                    "the role `{}` binds no audience: name the token's audiences here",
                    store.role
                ),
            );
        } else if !role.bound_audiences.is_empty()
            && !audiences.iter().any(|a| role.bound_audiences.contains(a))
        {
            self.issue(
                at_store("audiences"),
                format!(
                    "none of {audiences:?} is among the role `{}`'s bound_audiences {:?}: Vault would refuse ESO's login",
                    store.role, role.bound_audiences
                ),
            );
        }
        if role.bound_claims.is_empty() && role.bound_subject.as_deref().is_none_or(str::is_empty) {
            self.issue(
                at_store("role"),
                format!(
                    "the role `{}` binds neither a subject nor claims: any service account of the cluster with a `{}` token could log in as ESO; set bound_subject = \"{subject}\"",
                    store.role,
                    audiences.join(",")
                ),
            );
        }
    }

    fn sync(&mut self, cfg: &Config) {
        let mounts: Vec<&str> = cfg
            .vault
            .iter()
            .flat_map(|v| &v.spec.kv)
            .map(|k| k.path.trim_matches('/'))
            .collect();
        for (i, s) in cfg.sync.iter().enumerate() {
            let parts: Vec<&str> = s.from.split('/').collect();
            if parts.len() != 2 || !parts.iter().all(|p| is_label(p)) {
                self.issue(
                    at!["sync", i, "from"],
                    format!("`{}` must be namespace/name of a Secret", s.from),
                );
            }
            let pairs = s.keys.pairs();
            if pairs.is_empty() {
                self.issue(
                    at!["sync", i, "keys"],
                    "name at least one key of the Secret",
                );
            }
            let mut fields = std::collections::BTreeSet::new();
            for (key, field) in &pairs {
                if key.is_empty() || field.is_empty() {
                    self.issue(at!["sync", i, "keys"], "a key or field name is empty");
                } else if !fields.insert(field.as_str()) {
                    self.issue(
                        at!["sync", i, "keys"],
                        format!("two keys land in the same KV field `{field}`"),
                    );
                }
            }
            if cfg.vault.is_none() {
                self.issue(at!["sync", i], "syncing into Vault needs a [vault] section");
            } else if !mounts.contains(&s.mount.trim_matches('/')) {
                self.issue(
                    at!["sync", i, "mount"],
                    format!(
                        "`{}` is not a KV mount of [[vault.spec.kv]] (those are: {}); add it there or sync to one of them",
                        s.mount,
                        if mounts.is_empty() { "none".to_string() } else { mounts.join(", ") }
                    ),
                );
            }
            if s.path.trim_matches('/').is_empty()
                || s.path.starts_with('/')
                || s.path.contains("//")
            {
                self.issue(
                    at!["sync", i, "path"],
                    format!(
                        "`{}` must be a path inside the mount, like apps/grafana",
                        s.path
                    ),
                );
            }
        }
    }

    fn verify_and_lab(&mut self, cfg: &Config) {
        if let Some(v) = &cfg.verify {
            let parts: Vec<&str> = v.service.split('/').collect();
            if parts.len() != 2 || !parts.iter().all(|p| is_label(p)) {
                self.issue(
                    at!["verify", "service"],
                    format!("`{}` must be namespace/name", v.service),
                );
            }
            if let Some(u) = &v.url {
                self.url(at!["verify", "url"], u, false);
            }
            if !(100..=599).contains(&v.expect_status) {
                self.issue(
                    at!["verify", "expect_status"],
                    format!("{} is not an HTTP status", v.expect_status),
                );
            }
        }
        if let Some(lab) = &cfg.lab {
            if lab.charts.is_some()
                && let Err(e) = cfg.lab_charts()
            {
                self.issue(at!["lab", "charts"], e);
            }
            // Real seconds per modelled second: above 10 a lab run takes hours, and
            // huge values overflow the simulators' durations.
            if !(lab.time_scale > 0.0 && lab.time_scale <= MAX_TIME_SCALE) {
                self.issue(
                    at!["lab", "time_scale"],
                    format!(
                        "must be a positive number, at most {MAX_TIME_SCALE} (0.02 is the usual)"
                    ),
                );
            }
            if !(0.0..=1.0).contains(&lab.transient_fault_rate) {
                self.issue(
                    at!["lab", "transient_fault_rate"],
                    "must be between 0 and 1",
                );
            }
        }
    }
}

impl Checker {
    /// `[state]`: a vault backend needs a Vault (`[vault]`'s or its own address and
    /// token, which go together); the vault keys mean nothing to the file backend.
    fn state(&mut self, cfg: &Config) {
        use super::StateBackendKind;
        let s = &cfg.state;
        if s.backend == StateBackendKind::File {
            let vault_only = [
                ("mount", s.mount.is_some()),
                ("path", s.path.is_some()),
                ("address", s.address.is_some()),
                ("ca_file", s.ca_file.is_some()),
                ("token", s.token.is_some()),
                ("lease_seconds", s.lease_seconds.is_some()),
            ];
            for (key, set) in vault_only {
                if set {
                    self.issue(
                        at!["state", key],
                        "is used only with backend = \"vault\"; remove it, or set backend = \"vault\"",
                    );
                }
            }
            return;
        }
        match (&s.address, &s.token) {
            (Some(address), Some(token)) => {
                self.url(at!["state", "address"], address, false);
                self.secret(at!["state", "token"], token);
            }
            (Some(_), None) => self.issue(
                at!["state", "address"],
                "needs `token` beside it (a secret ref): the state's own Vault takes its own token",
            ),
            (None, Some(_)) => self.issue(
                at!["state", "token"],
                "needs `address` beside it: without one the state uses [vault]'s address and token",
            ),
            (None, None) if cfg.vault.is_none() => self.issue(
                at!["state", "backend"],
                "\"vault\" needs a Vault: add a [vault] section, or name one here with `address` and `token`",
            ),
            (None, None) => {}
        }
        if s.ca_file.is_some() && s.address.is_none() {
            self.issue(
                at!["state", "ca_file"],
                "pins the CA of `address`, which is not set ([vault] has its own ca_file)",
            );
        } else {
            self.ca_file(cfg, at!["state", "ca_file"], s.ca_file.as_deref());
        }
        if let Some(mount) = &s.mount
            && !is_kv_path(mount)
        {
            self.issue(
                at!["state", "mount"],
                format!("`{mount}` is not a mount path: segments of letters, digits, `-`, `_` and `.` joined by `/`, like \"secret\""),
            );
        }
        if let Some(path) = &s.path
            && !is_kv_path(path)
        {
            self.issue(
                at!["state", "path"],
                format!("`{path}` is not a KV path: segments of letters, digits, `-`, `_` and `.` joined by `/`, like \"castle/lab/state\""),
            );
        }
        if let Some(lease) = s.lease_seconds
            && !LEASE_SECONDS.contains(&lease)
        {
            self.issue(
                at!["state", "lease_seconds"],
                format!(
                    "must be between {} and {} seconds (the heartbeat renews it every third)",
                    LEASE_SECONDS.start(),
                    LEASE_SECONDS.end()
                ),
            );
        }
    }
}

/// What `[state] lease_seconds` may be: a heartbeat every third of a second is too
/// tight for a round trip to Vault; an hour-long lease blocks a team for an hour.
const LEASE_SECONDS: std::ops::RangeInclusive<u64> = 3..=3600;

/// A Vault mount or KV path: non-empty segments of `[A-Za-z0-9._-]`, no leading,
/// trailing or doubled `/`, no `.` or `..` segment.
fn is_kv_path(value: &str) -> bool {
    !value.is_empty()
        && value.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// What Proxmox takes as a VMID (qemu-server's `pve-vmid` format).
const VMIDS: std::ops::RangeInclusive<u32> = 100..=999_999_999;

/// The longest generated password.
const MAX_PASSWORD: usize = 1024;

/// The slowest lab: ten real seconds for each modelled one.
const MAX_TIME_SCALE: f64 = 10.0;

/// Why policy text does not parse, if it does not: as JSON when it starts with `{`
/// (OpenBao's `hclutil.ParseConfig` does the same), else as HCL. The rules beyond
/// syntax are castle-vault's spec check.
///
/// # Caveats
/// The HCL parser reads HCL 2; the few HCL 1 forms it refuses (castle-vault's
/// `policy` module lists them) are refused here too, although OpenBao stores them.
fn policy_syntax(text: &str) -> Option<String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str::<serde_json::Value>(text)
            .err()
            .map(|e| format!("JSON {e}"));
    }
    hcl_edit::parser::parse_body(text).err().map(|e| {
        let at = e.location();
        format!(
            "HCL line {}, column {}: {}",
            at.line(),
            at.column(),
            e.message()
        )
    })
}

/// Flux's duration pattern: `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`.
fn is_flux_duration(value: &str) -> bool {
    let mut rest = value;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let whole = digits(rest);
        if whole == 0 {
            return false;
        }
        rest = &rest[whole..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let n = digits(fraction);
            if n == 0 {
                return false;
            }
            rest = &fraction[n..];
        }
        rest = match ["ms", "s", "m", "h"].iter().find(|u| rest.starts_with(**u)) {
            Some(unit) => &rest[unit.len()..],
            None => return false,
        };
    }
    true
}

/// The key path of the first TOML date-time in a values table (the TOML parser
/// hands one to serde as a one-key map).
fn datetime_in(values: &serde_json::Map<String, serde_json::Value>) -> Option<Vec<String>> {
    fn walk(v: &serde_json::Value, path: &mut Vec<String>) -> bool {
        match v {
            serde_json::Value::Object(m) if m.contains_key("$__toml_private_datetime") => true,
            serde_json::Value::Object(m) => m.iter().any(|(k, x)| {
                path.push(k.clone());
                let found = walk(x, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    walk(&serde_json::Value::Object(values.clone()), &mut path).then_some(path)
}

fn is_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn is_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_label)
}

/// A Secret or ConfigMap key (`IsConfigMapKey`, apimachinery
/// `pkg/util/validation/validation.go`).
fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && key != "."
        && key != ".."
        && !key.starts_with("..")
}

/// The name part of a qualified name, and a label value when not empty: at most
/// 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit
/// (apimachinery `pkg/util/validation/validation.go`, `qualifiedNameFmt`).
fn is_name_part(name: &str) -> bool {
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    name.len() <= 63
        && alnum(name.bytes().next())
        && alnum(name.bytes().last())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

const NAME_PART: &str =
    "at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit";

/// What is wrong with a label or annotation key (`IsQualifiedName`: an optional
/// DNS-subdomain prefix and `/`, then a name part).
fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_subdomain(p))
    {
        return Some(format!("the prefix `{p}` is not a lowercase DNS subdomain"));
    }
    (!is_name_part(name)).then(|| format!("the name must be {NAME_PART}"))
}

/// What is wrong with a label value (`IsValidLabelValue`: empty or a name part).
fn label_value(value: &str) -> Option<String> {
    (!value.is_empty() && !is_name_part(value)).then(|| format!("must be empty or {NAME_PART}"))
}

pub(crate) fn cidr(value: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = value.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

/// Whether `ip` lies in `net/bits`.
pub(crate) fn in_prefix(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether two prefixes share an address.
fn overlaps(a: (IpAddr, u8), b: (IpAddr, u8)) -> bool {
    let bits = a.1.min(b.1);
    in_prefix(a.0, b.0, bits)
}

/// The lowest and highest address of `a-b` (low to high) or a CIDR.
fn address_range(value: &str) -> Option<(IpAddr, IpAddr)> {
    if let Some((ip, bits)) = cidr(value) {
        return Some(match ip {
            IpAddr::V4(ip) => {
                let host = u32::MAX.checked_shr(u32::from(bits)).unwrap_or(0);
                let net = u32::from(ip) & !host;
                (
                    IpAddr::from(net.to_be_bytes()),
                    IpAddr::from((net | host).to_be_bytes()),
                )
            }
            IpAddr::V6(ip) => {
                let host = u128::MAX.checked_shr(u32::from(bits)).unwrap_or(0);
                let net = u128::from(ip) & !host;
                (
                    IpAddr::from(net.to_be_bytes()),
                    IpAddr::from((net | host).to_be_bytes()),
                )
            }
        });
    }
    let (a, b) = value.split_once('-')?;
    match (
        a.trim().parse::<IpAddr>().ok()?,
        b.trim().parse::<IpAddr>().ok()?,
    ) {
        (a @ IpAddr::V4(_), b @ IpAddr::V4(_)) | (a @ IpAddr::V6(_), b @ IpAddr::V6(_))
            if a <= b =>
        {
            Some((a, b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{is_flux_duration, policy_syntax};

    #[test]
    fn policies_parse_as_json_when_they_start_with_a_brace_else_as_hcl() {
        for ok in [
            r#"path "secret/*" { capabilities = ["read"] }"#,
            r#"{"path": {"secret/*": {"capabilities": ["read"]}}}"#,
            "# nothing yet\n",
        ] {
            assert_eq!(policy_syntax(ok), None, "{ok}");
        }
        for bad in [r#"path "secret/*" {"#, r#"{"path": "#] {
            assert!(policy_syntax(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn flux_durations_follow_the_crd_pattern() {
        for ok in ["1m", "30s", "1h30m", "1.5h", "500ms", "10m0s"] {
            assert!(is_flux_duration(ok), "{ok}");
        }
        for bad in ["", "1", "m", "1.h", ".5s", "1d", "1 m", "-1m", "1m!"] {
            assert!(!is_flux_duration(bad), "{bad}");
        }
    }
}
