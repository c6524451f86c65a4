//! What a set of ACL policies grants on a path, computed as OpenBao computes it:
//! `internal/vault/policy/acl.go` (`NewACL` merges the stanzas of every policy,
//! `Capabilities` and `AllowOperation` look a path up: exact rule, then the exact
//! rule without a trailing `/` for a list, then the longest prefix rule and the
//! segment-wildcard rules ranked by `CheckAllowedFromNonExactPaths`) and
//! `internal/vault/policy/policy.go` (which stanzas are prefix or segment-wildcard
//! rules). Which paths also need `sudo` comes from the system backend's root paths
//! (`internal/vault/logical_system.go`, `PathsSpecial.Root`).

use std::collections::BTreeMap;

use crate::policy::{PathRule, path_rules};

const DENY: u32 = 1;
const CREATE: u32 = 1 << 1;
const READ: u32 = 1 << 2;
const UPDATE: u32 = 1 << 3;
const DELETE: u32 = 1 << 4;
const LIST: u32 = 1 << 5;
const SUDO: u32 = 1 << 6;
const PATCH: u32 = 1 << 7;
const SCAN: u32 = 1 << 8;

const NAMES: [(u32, &str); 8] = [
    (CREATE, "create"),
    (READ, "read"),
    (UPDATE, "update"),
    (DELETE, "delete"),
    (LIST, "list"),
    (SUDO, "sudo"),
    (PATCH, "patch"),
    (SCAN, "scan"),
];

/// Paths under `sys/` that need `sudo` besides their capability.
const SYS_ROOT_PATHS: [&str; 20] = [
    "auth/*",
    "remount",
    "audit",
    "audit/*",
    "raw",
    "raw/*",
    "rotate",
    "rotate/keyring",
    "rotate/root",
    "config/cors",
    "config/auditing/*",
    "config/ui/headers/*",
    "plugins/catalog/*",
    "revoke-prefix/*",
    "revoke-force/*",
    "leases/revoke-prefix/*",
    "leases/revoke-force/*",
    "leases/lookup/*",
    "leases",
    "internal/inspect/*",
];

/// Whether a request on `path` needs `sudo` as well as its capability.
pub fn needs_sudo(path: &str) -> bool {
    let Some(rest) = path.trim_start_matches('/').strip_prefix("sys/") else {
        return false;
    };
    SYS_ROOT_PATHS.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => rest.starts_with(prefix),
        None => rest == *p,
    })
}

fn bit(capability: &str) -> u32 {
    match capability {
        "deny" => DENY,
        other => NAMES
            .iter()
            .find(|(_, n)| *n == other)
            .map_or(0, |(b, _)| *b),
    }
}

/// The operation a request performs, for [`Acl::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A write to a path that does not exist yet (on a backend with an existence check).
    Create,
    /// `GET`.
    Read,
    /// A write to an existing path, or to a backend without an existence check.
    Update,
    /// `DELETE`.
    Delete,
    /// `LIST`.
    List,
}

impl Operation {
    fn bit(self) -> u32 {
        match self {
            Operation::Create => CREATE,
            Operation::Read => READ,
            Operation::Update => UPDATE,
            Operation::Delete => DELETE,
            Operation::List => LIST,
        }
    }
}

/// The merged rules of a token's policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    exact: BTreeMap<String, u32>,
    prefix: BTreeMap<String, u32>,
    segment: BTreeMap<String, u32>,
}

impl Acl {
    /// Merges `policies` (name, HCL or JSON text) as `NewACL` does: the same path in
    /// several policies unions its capabilities, `deny` wins.
    ///
    /// # Errors
    /// A policy OpenBao would not have stored.
    pub fn new<'a>(policies: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut acl = Acl::default();
        for (name, text) in policies {
            if name == "root" {
                acl.root = true;
                continue;
            }
            for rule in path_rules(text)? {
                acl.insert(&rule);
            }
        }
        Ok(acl)
    }

    fn insert(&mut self, rule: &PathRule) {
        // Templated paths resolve against the token's entity; tokens Castle uses
        // have none, and OpenBao drops a stanza whose template cannot resolve.
        if rule.path.contains("{{") {
            return;
        }
        let bits = rule.capabilities.iter().fold(0, |acc, c| acc | bit(c));
        let p = rule.path.as_str();
        let segmented = p == "+" || p.contains("/+") || p.starts_with("+/");
        let (tree, key) = if segmented {
            (&mut self.segment, p)
        } else if let Some(prefix) = p.strip_suffix('*') {
            (&mut self.prefix, prefix)
        } else {
            (&mut self.exact, p)
        };
        let entry = tree.entry(key.to_string()).or_insert(0);
        if *entry & DENY != 0 {
            return;
        }
        *entry = if bits & DENY != 0 {
            DENY
        } else {
            *entry | bits
        };
    }

    /// What `sys/capabilities-self` answers for `path`: sorted names, `["root"]`
    /// for a root token, `["deny"]` when nothing is granted.
    pub fn capabilities(&self, path: &str) -> Vec<String> {
        if self.root {
            return vec!["root".into()];
        }
        // `Capabilities` asks as a list operation, to model the list fallbacks.
        let bits = self.lookup(path, true).unwrap_or(0);
        let mut names: Vec<String> = NAMES
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| (*n).to_string())
            .collect();
        if bits & DENY != 0 || names.is_empty() {
            names = vec!["deny".into()];
        }
        names.sort();
        names
    }

    /// Whether a request may perform `op` on `path` (with `sudo` where the path
    /// needs it).
    pub fn allows(&self, op: Operation, path: &str) -> bool {
        if self.root {
            return true;
        }
        let bits = self
            .lookup(path.trim_start_matches('/'), op == Operation::List)
            .unwrap_or(0);
        bits & DENY == 0 && bits & op.bit() != 0 && (!needs_sudo(path) || bits & SUDO != 0)
    }

    fn lookup(&self, path: &str, list: bool) -> Option<u32> {
        let path = path.trim_start_matches('/');
        if let Some(b) = self.exact.get(path) {
            return Some(*b);
        }
        if list && let Some(b) = self.exact.get(path.strip_suffix('/').unwrap_or(path)) {
            return Some(*b);
        }
        if let Some(b) = self.non_exact(path) {
            return Some(b);
        }
        if list && let Some(trimmed) = path.strip_suffix('/') {
            return self.non_exact(trimmed);
        }
        None
    }

    /// `CheckAllowedFromNonExactPaths`: the longest prefix rule competes with the
    /// matching segment-wildcard rules; the highest-ranked wins.
    fn non_exact(&self, path: &str) -> Option<u32> {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Rank<'a> {
            first_wildcard: usize,
            not_prefix: bool,
            fewer_wildcards: std::cmp::Reverse<usize>,
            length: usize,
            text: &'a str,
        }
        let mut candidates: Vec<(Rank<'_>, u32)> = Vec::new();
        if let Some((prefix, bits)) = self
            .prefix
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
        {
            if self.segment.is_empty() {
                return Some(*bits);
            }
            candidates.push((
                Rank {
                    first_wildcard: prefix.len(),
                    not_prefix: false,
                    fewer_wildcards: std::cmp::Reverse(0),
                    length: prefix.len(),
                    text: prefix,
                },
                *bits,
            ));
        }
        let parts: Vec<&str> = path.split('/').collect();
        'rules: for (full, bits) in &self.segment {
            let first_wildcard = full.find('+').unwrap_or(0);
            let (pattern, is_prefix) = match full.strip_suffix('*') {
                Some(p) => (p, true),
                None => (full.as_str(), false),
            };
            let segments: Vec<&str> = pattern.split('/').collect();
            if parts.len() < segments.len() || (!is_prefix && parts.len() != segments.len()) {
                continue;
            }
            let mut wildcards = 0;
            for (i, seg) in segments.iter().enumerate() {
                let last = i == segments.len() - 1;
                if *seg == "+" {
                    wildcards += 1;
                } else if *seg == parts[i] || (is_prefix && last && parts[i].starts_with(seg)) {
                } else {
                    continue 'rules;
                }
            }
            candidates.push((
                Rank {
                    first_wildcard,
                    not_prefix: !is_prefix,
                    fewer_wildcards: std::cmp::Reverse(wildcards),
                    length: pattern.len(),
                    text: pattern,
                },
                *bits,
            ));
        }
        candidates
            .into_iter()
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, b)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::new([("p", text), ("default", crate::mock::DEFAULT_POLICY)]).unwrap()
    }

    #[test]
    fn exact_beats_prefix_and_policies_union_their_capabilities() {
        let a = Acl::new([
            ("a", r#"path "secret/*" { capabilities = ["read"] }"#),
            ("b", r#"path "secret/*" { capabilities = ["list"] }"#),
            ("c", r#"path "secret/data/x" { capabilities = ["update"] }"#),
        ])
        .unwrap();
        assert_eq!(a.capabilities("secret/data/y"), ["list", "read"]);
        assert_eq!(a.capabilities("secret/data/x"), ["update"]);
        assert_eq!(a.capabilities("other/x"), ["deny"]);
    }

    #[test]
    fn deny_wins_over_every_grant_of_the_same_path() {
        let a = Acl::new([
            (
                "a",
                r#"path "secret/*" { capabilities = ["read", "update"] }"#,
            ),
            ("b", r#"path "secret/*" { capabilities = ["deny"] }"#),
        ])
        .unwrap();
        assert_eq!(a.capabilities("secret/x"), ["deny"]);
        assert!(!a.allows(Operation::Read, "secret/x"));
    }

    /// The ranking of `CheckAllowedFromNonExactPaths` (acl.go): a later first
    /// wildcard wins, then a non-prefix rule, then fewer `+`, then length.
    #[test]
    fn segment_wildcards_rank_as_openbao_ranks_them() {
        let a = acl(r#"
path "secret/+/config" { capabilities = ["read"] }
path "secret/data/*" { capabilities = ["list"] }
path "secret/+/+" { capabilities = ["update"] }
path "kv/a*" { capabilities = ["create"] }
path "kv/+" { capabilities = ["delete"] }
"#);
        // `secret/data/` (first glob at 12) beats `secret/+/config` (first + at 7).
        assert_eq!(a.capabilities("secret/data/config"), ["list"]);
        // Only the segment rules match here: fewer wildcards wins.
        assert_eq!(a.capabilities("secret/meta/config"), ["read"]);
        assert_eq!(a.capabilities("secret/meta/other"), ["update"]);
        // `kv/a*` (glob at 4) and `kv/+` (+ at 3): the later one wins.
        assert_eq!(a.capabilities("kv/abc"), ["create"]);
        assert_eq!(a.capabilities("kv/xyz"), ["delete"]);
    }

    #[test]
    fn root_sees_root_and_sudo_is_needed_on_root_paths() {
        let root = Acl::new([("root", "")]).unwrap();
        assert_eq!(root.capabilities("anything"), ["root"]);
        let a = acl(r#"
path "sys/auth/*" { capabilities = ["create", "update"] }
path "sys/leases/revoke-prefix/*" { capabilities = ["update", "sudo"] }
path "sys/mounts/*" { capabilities = ["update"] }
"#);
        assert!(!a.allows(Operation::Update, "sys/auth/jwt"));
        assert!(a.allows(
            Operation::Update,
            "sys/leases/revoke-prefix/database/creds/"
        ));
        assert!(a.allows(Operation::Update, "sys/mounts/database"));
        assert!(needs_sudo("sys/leases/lookup/database/creds/x/"));
        assert!(!needs_sudo("sys/policies/acl/x"));
    }

    #[test]
    fn the_default_policy_lets_a_token_ask_its_own_capabilities() {
        let a = acl(r#"path "secret/*" { capabilities = ["read"] }"#);
        assert!(a.allows(Operation::Update, "sys/capabilities-self"));
        assert!(a.allows(Operation::Read, "auth/token/lookup-self"));
        // A list falls back to the rule without the trailing slash.
        let l = acl(r#"path "db/roles" { capabilities = ["list"] }"#);
        assert!(l.allows(Operation::List, "db/roles/"));
    }
}
