use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Config, Issue, Role, line_col};
use crate::secrets::SecretRef;

/// A key path: `nodes`, 1, `vmid` is `nodes[1].vmid`.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

macro_rules! path {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

impl From<&str> for Seg {
    fn from(k: &str) -> Self {
        Seg::Key(k.to_string())
    }
}
impl From<String> for Seg {
    fn from(k: String) -> Self {
        Seg::Key(k)
    }
}
impl From<&String> for Seg {
    fn from(k: &String) -> Self {
        Seg::Key(k.clone())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Finds the byte offset of the item at `path` (or of its nearest existing parent).
fn locate(doc: &toml_edit::Document<&str>, path: &[Seg]) -> usize {
    let mut item: &toml_edit::Item = doc.as_item();
    let mut best = 0;
    for seg in path {
        let next = match seg {
            Seg::Key(k) => {
                if let Some(table) = item.as_table_like()
                    && let Some((key, _)) = table.get_key_value(k)
                    && let Some(span) = key.span()
                {
                    best = span.start;
                }
                item.get(k.as_str())
            }
            Seg::Index(i) => item.get(*i),
        };
        match next {
            Some(n) => {
                item = n;
                if let Some(span) = item
                    .span()
                    .or_else(|| item.as_table().and_then(toml_edit::Table::span))
                {
                    // Keep the key's own position for scalar values declared as `key = value`.
                    if matches!(seg, Seg::Index(_)) || best == 0 {
                        best = span.start;
                    }
                }
            }
            None => break,
        }
    }
    best
}

/// The dotted key at a byte offset, for parse errors (best effort: table header and key).
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let header = |l: &str| {
        l.trim()
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string()
    };
    if line.trim_start().starts_with('[') {
        return header(line);
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(header);
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => "(document)".into(),
    }
}

struct Checker<'a> {
    issues: Vec<(Vec<Seg>, String)>,
    config: &'a Config,
}

impl Checker<'_> {
    fn issue(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.issues.push((path, message.into()));
    }

    fn url(&mut self, path: Vec<Seg>, value: &str, https_only: bool) {
        match url::Url::parse(value) {
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                self.issue(path, format!("`{value}` has no host"))
            }
            Ok(u) if https_only && u.scheme() != "https" => {
                self.issue(path, format!("`{value}` must be an https:// URL"))
            }
            Ok(u) if !matches!(u.scheme(), "https" | "http") => {
                self.issue(path, format!("`{value}` must be an http(s) URL"))
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

    fn secret(&mut self, path: Vec<Seg>, r: &SecretRef) {
        if let Some(problem) = r.shape_problem() {
            self.issue(path, problem);
        }
    }

    fn label(&mut self, path: Vec<Seg>, value: &str) {
        let ok = !value.is_empty()
            && value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !value.starts_with('-')
            && !value.ends_with('-');
        if !ok {
            self.issue(
                path,
                format!(
                    "`{value}` is not a DNS label (lowercase letters, digits and `-`, at most 63)"
                ),
            );
        }
    }
}

fn cidr(value: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = value.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

fn address_range(value: &str) -> bool {
    if cidr(value).is_some() {
        return true;
    }
    match value.split_once('-') {
        Some((a, b)) => match (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
            (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) => a <= b,
            (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(b))) => a <= b,
            _ => false,
        },
        None => false,
    }
}

/// Every semantic issue, located.
pub(super) fn check(config: &Config, text: &str, origin: &str) -> Vec<Issue> {
    let mut c = Checker {
        issues: Vec::new(),
        config,
    };
    let cfg = c.config;

    c.label(path!["cluster", "name"], &cfg.cluster.name);
    c.url(path!["cluster", "endpoint"], &cfg.cluster.endpoint, true);
    c.ip(path!["cluster", "gateway"], &cfg.cluster.gateway);
    for (i, ns) in cfg.cluster.nameservers.iter().enumerate() {
        c.ip(path!["cluster", "nameservers", i], ns);
    }
    for (i, issuer) in cfg.cluster.service_account_issuers.iter().enumerate() {
        c.url(
            path!["cluster", "service_account_issuers", i],
            issuer,
            false,
        );
    }
    if let Some(uri) = &cfg.cluster.jwks_uri {
        c.url(path!["cluster", "jwks_uri"], uri, false);
    }

    let p = &cfg.proxmox;
    c.url(path!["proxmox", "endpoint"], &p.endpoint, true);
    c.secret(path!["proxmox", "token"], &p.token);
    if !(p.token_id.contains('@') && p.token_id.contains('!')) {
        c.issue(
            path!["proxmox", "token_id"],
            format!("`{}` is not USER@REALM!TOKENID", p.token_id),
        );
    }
    let [lo, hi] = p.vmid_range;
    if lo > hi || lo < 100 {
        c.issue(
            path!["proxmox", "vmid_range"],
            format!("[{lo}, {hi}] is not a range of VMIDs (100 or more, min <= max)"),
        );
    }
    if p.clone_concurrency == 0 {
        c.issue(path!["proxmox", "clone_concurrency"], "must be at least 1");
    }
    if !p
        .tag
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
        || p.tag.is_empty()
    {
        c.issue(
            path!["proxmox", "tag"],
            format!(
                "`{}` is not a Proxmox tag (letters, digits, `-`, `_`)",
                p.tag
            ),
        );
    }

    if cfg.nodes.is_empty() {
        c.issue(path!["nodes"], "at least one node is needed");
    }
    if !cfg.nodes.iter().any(|n| n.role == Role::Controlplane) && !cfg.nodes.is_empty() {
        c.issue(
            path!["nodes", 0, "role"],
            "no node has role = \"controlplane\": a cluster needs at least one control plane",
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut vmids: BTreeMap<u32, usize> = BTreeMap::new();
    let mut ips: BTreeMap<String, usize> = BTreeMap::new();
    for (i, n) in cfg.nodes.iter().enumerate() {
        c.label(path!["nodes", i, "name"], &n.name);
        if let Some(first) = names.insert(&n.name, i) {
            c.issue(
                path!["nodes", i, "name"],
                format!("`{}` is already used by nodes[{first}]", n.name),
            );
            names.insert(&cfg.nodes[first].name, first);
        }
        if let Some(first) = vmids.insert(n.vmid, i) {
            c.issue(
                path!["nodes", i, "vmid"],
                format!(
                    "{} is already used by nodes[{first}] ({})",
                    n.vmid, cfg.nodes[first].name
                ),
            );
            vmids.insert(n.vmid, first);
        }
        if n.vmid < lo || n.vmid > hi {
            c.issue(
                path!["nodes", i, "vmid"],
                format!("{} is outside proxmox.vmid_range [{lo}, {hi}]", n.vmid),
            );
        }
        if n.vmid == p.template_vmid {
            c.issue(
                path!["nodes", i, "vmid"],
                format!("{} is the template's VMID", n.vmid),
            );
        }
        match cidr(&n.ip) {
            Some((ip, _)) => {
                if let Some(first) = ips.insert(ip.to_string(), i) {
                    c.issue(
                        path!["nodes", i, "ip"],
                        format!(
                            "{ip} is already used by nodes[{first}] ({})",
                            cfg.nodes[first].name
                        ),
                    );
                    ips.insert(ip.to_string(), first);
                }
            }
            None => c.issue(
                path!["nodes", i, "ip"],
                format!(
                    "`{}` is not an address with prefix, like 192.168.1.211/24",
                    n.ip
                ),
            ),
        }
        if n.memory_mib < 1024 {
            c.issue(
                path!["nodes", i, "memory_mib"],
                format!(
                    "{} MiB is too little for Talos (at least 1024)",
                    n.memory_mib
                ),
            );
        }
        if n.cores == 0 {
            c.issue(path!["nodes", i, "cores"], "must be at least 1");
        }
    }

    for (i, patch) in cfg.talos.patches.iter().enumerate() {
        if patch.file.is_some() == patch.inline.is_some() {
            c.issue(
                path!["talos", "patches", i],
                "a patch has either `file` or `inline`",
            );
        }
    }

    if let Some(ts) = &cfg.tailscale {
        c.secret(path!["tailscale", "oauth_client_id"], &ts.oauth_client_id);
        c.secret(
            path!["tailscale", "oauth_client_secret"],
            &ts.oauth_client_secret,
        );
        if ts.tags.is_empty() {
            c.issue(
                path!["tailscale", "tags"],
                "keys minted by an OAuth client must carry at least one tag",
            );
        }
        for (i, tag) in ts.tags.iter().enumerate() {
            if !tag.starts_with("tag:") || tag.len() <= 4 {
                c.issue(
                    path!["tailscale", "tags", i],
                    format!("`{tag}` must look like `tag:name`"),
                );
            }
        }
        if !ts.hostname_pattern.contains("{node}") {
            c.issue(
                path!["tailscale", "hostname_pattern"],
                "must contain `{node}`, or every node gets the same hostname",
            );
        }
        if ts.key_ttl_seconds < 60 || ts.key_ttl_seconds > 90 * 86400 {
            c.issue(
                path!["tailscale", "key_ttl_seconds"],
                "must be between 60 and 7776000 (90 days)",
            );
        }
    }

    if let Some(v) = &cfg.vault {
        c.url(path!["vault", "address"], &v.address, false);
        c.secret(path!["vault", "token"], &v.token);
        for (i, db) in v.spec.database.iter().enumerate() {
            for (name, conn) in &db.connections {
                c.secret(
                    path![
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
        if let Err(e) = v.spec.check() {
            c.issue(path!["vault", "spec"], e.to_string());
        }
        if let Some(name) = &v.service_account_key
            && !v
                .spec
                .generated
                .iter()
                .any(|g| &g.name == name && g.kind == castle_vault::GeneratedKind::EcdsaP256)
        {
            c.issue(
                path!["vault", "service_account_key"],
                format!("`{name}` is not an ecdsa-p256 entry of vault.spec.generated"),
            );
        }
    }

    for (i, ns) in cfg.kubernetes.namespaces.iter().enumerate() {
        c.label(path!["kubernetes", "namespaces", i], ns);
    }
    for (i, s) in cfg.kubernetes.secrets.iter().enumerate() {
        c.label(path!["kubernetes", "secrets", i, "namespace"], &s.namespace);
        for (k, r) in &s.data {
            c.secret(path!["kubernetes", "secrets", i, "data", k], r);
        }
    }
    let dns = &cfg.kubernetes.coredns;
    c.ip(
        path!["kubernetes", "coredns", "cluster_ip"],
        &dns.cluster_ip,
    );
    for (i, f) in dns.forwards.iter().enumerate() {
        for (j, to) in f.to.iter().enumerate() {
            c.ip(path!["kubernetes", "coredns", "forwards", i, "to", j], to);
        }
    }

    for (name, comp) in [
        ("eso", &cfg.components.eso),
        ("metallb", &cfg.components.metallb),
        ("longhorn", &cfg.components.longhorn),
        ("flux", &cfg.components.flux),
    ] {
        let Some(comp) = comp else { continue };
        match (&comp.manifest, &comp.url) {
            (Some(_), Some(_)) | (None, None) => {
                c.issue(
                    path!["components", name],
                    "give either `manifest` (a local file) or `url` with `sha256`",
                );
            }
            (None, Some(u)) => {
                c.url(path!["components", name, "url"], u, false);
                match &comp.sha256 {
                    None => c.issue(
                        path!["components", name, "url"],
                        "a URL must be pinned: add `sha256`",
                    ),
                    Some(h) if h.len() != 64 || !h.chars().all(|ch| ch.is_ascii_hexdigit()) => {
                        c.issue(path!["components", name, "sha256"], "must be 64 hex digits")
                    }
                    Some(_) => {}
                }
            }
            (Some(_), None) => {}
        }
        for (i, r) in comp.readiness.iter().enumerate() {
            if !matches!(r.kind.as_str(), "Deployment" | "DaemonSet" | "StatefulSet") {
                c.issue(
                    path!["components", name, "readiness", i, "kind"],
                    format!("`{}` is not Deployment, DaemonSet or StatefulSet", r.kind),
                );
            }
        }
        if name == "metallb" {
            if comp.addresses.is_empty() {
                c.issue(
                    path!["components", name, "addresses"],
                    "MetalLB needs at least one address range",
                );
            }
            for (i, a) in comp.addresses.iter().enumerate() {
                if !address_range(a) {
                    c.issue(
                        path!["components", name, "addresses", i],
                        format!("`{a}` is not a range `a-b` or a CIDR"),
                    );
                }
            }
        }
        if name == "flux" {
            match &comp.git_url {
                Some(u) => c.url(path!["components", name, "git_url"], u, false),
                None => c.issue(path!["components", name], "flux needs `git_url`"),
            }
            match &comp.token {
                Some(t) => c.secret(path!["components", name, "token"], t),
                None => c.issue(
                    path!["components", name],
                    "flux needs `token` (a secret ref)",
                ),
            }
        }
    }

    if let Some(v) = &cfg.verify {
        if v.service.split('/').filter(|s| !s.is_empty()).count() != 2 {
            c.issue(
                path!["verify", "service"],
                format!("`{}` must be namespace/name", v.service),
            );
        }
        if let Some(u) = &v.url {
            c.url(path!["verify", "url"], u, false);
        }
    }
    if let Some(lab) = &cfg.lab {
        if !(lab.time_scale > 0.0 && lab.time_scale.is_finite()) {
            c.issue(path!["lab", "time_scale"], "must be a positive number");
        }
        if !(0.0..=1.0).contains(&lab.transient_fault_rate) {
            c.issue(
                path!["lab", "transient_fault_rate"],
                "must be between 0 and 1",
            );
        }
    }

    let doc = toml_edit::Document::parse(text).ok();
    let mut issues: Vec<Issue> = c
        .issues
        .into_iter()
        .map(|(path, message)| {
            let offset = doc.as_ref().map_or(0, |d| locate(d, &path));
            let (line, column) = line_col(text, offset);
            Issue {
                file: origin.to_string(),
                line,
                column,
                key: render(&path),
                message,
            }
        })
        .collect();
    issues.sort_by_key(|i| (i.line, i.column));
    issues
}
