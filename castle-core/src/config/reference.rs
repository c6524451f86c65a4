//! Container image references, checked by the grammar of distribution/reference
//! (`regexp.go` and `reference.go`, the package docker, containerd and Talos's
//! installer use):
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ domain "/" ] remote-name
//! domain           := host [ ":" port-number ]
//! host             := domain-name | "[" ipv6 "]"
//! domain-name      := domain-component [ "." domain-component ]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! port-number      := /[0-9]+/
//! remote-name      := path-component [ "/" path-component ]*
//! path-component   := alpha-numeric [ separator alpha-numeric ]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" /[0-9a-fA-F]{32,}/
//! algorithm        := /[A-Za-z][A-Za-z0-9]*/ [ /[-_+.]/ /[A-Za-z][A-Za-z0-9]*/ ]*
//! ```
//!
//! The name is at most 255 characters (`NameTotalLengthMax`), and a sha256 or
//! sha512 digest has exactly 64 or 128 hex digits (go-digest, which `Parse`
//! validates with).

/// Why `value` is not an image reference, in words that say what to write instead.
pub(crate) fn check(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("it is empty".into());
    }
    let (rest, digest) = match value.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (value, None),
    };
    // A `:` after the last `/` starts the tag; one before it is the registry's port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if name.is_empty() {
        return Err("has no repository name".into());
    }
    if name.len() > 255 {
        return Err(format!(
            "its name is {} characters long; at most 255 are allowed",
            name.len()
        ));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // As in distribution/reference: the first component is a registry only when
    // more follow and it looks like a host (a `.`, a `:port`, or `localhost`);
    // otherwise it is part of the repository path.
    if components.len() > 1 && is_domain(components[0]) {
        components.remove(0);
    }
    if let Some(bad) = components.iter().find(|c| !is_path_component(c)) {
        let hint = if bad.chars().any(|c| c.is_ascii_uppercase()) {
            "repository names are lowercase"
        } else {
            "repository path components are lowercase letters and digits joined by `.`, `_`, `__` or `-`"
        };
        let part = if *bad == name {
            String::new()
        } else {
            format!(" (in `{name}`)")
        };
        return Err(format!(
            "`{bad}`{part} is not a repository path component: {hint}"
        ));
    }
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Err(format!(
            "`{tag}` is not a tag (a letter, digit or `_`, then up to 127 of those, `.` or `-`)"
        ));
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    Ok(())
}

fn is_domain(value: &str) -> bool {
    // An IPv6 host is bracketed, so its colons are not the port's.
    let split_at = value.rfind(']').unwrap_or(0);
    let (host, port) = match value[split_at..].find(':') {
        Some(i) => (&value[..split_at + i], Some(&value[split_at + i + 1..])),
        None => (value, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let looks_like_host = port.is_some() || host.contains('.') || host == "localhost";
    let well_formed = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':'),
        None => host.split('.').all(is_domain_component),
    };
    looks_like_host && well_formed
}

fn is_domain_component(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// `alpha-numeric [separator alpha-numeric]*`, separator `.`, `_`, `__` or `-+`.
fn is_path_component(value: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = value.as_bytes();
    if !bytes.first().copied().is_some_and(alnum) || !bytes.last().copied().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &value[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_tag(value: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = value.as_bytes();
    bytes.first().copied().is_some_and(word)
        && bytes.len() <= 128
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || format!("`{digest}` is not a digest like sha256:<64 hex digits>");
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let want = match algorithm {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    if let Some(want) = want
        && hex.len() != want
    {
        return Err(format!(
            "the {algorithm} digest has {} hex digits, not {want}",
            hex.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn references_the_grammar_accepts() {
        let hex = "a".repeat(64);
        for ok in [
            "ghcr.io/siderolabs/installer:v1.12.0",
            "factory.talos.dev/installer/ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515:v1.12.0",
            "installer",
            "library/ubuntu",
            "localhost/installer:latest",
            "localhost:5000/installer",
            "registry.example:5000/a/b__c/d-e--f.g:tag_1.2-3",
            "[::1]:5000/installer:v1",
            "192.168.1.5:5000/talos/installer",
            &format!("ghcr.io/siderolabs/installer@sha256:{hex}"),
            &format!("ghcr.io/siderolabs/installer:v1.12.0@sha256:{hex}"),
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn references_the_grammar_refuses() {
        for bad in [
            "",
            "Not A Ref!!",
            "ghcr.io/SideroLabs/installer:v1",
            "ghcr.io/siderolabs/installer:",
            "ghcr.io/siderolabs/installer:-v1",
            "ghcr.io//installer",
            "ghcr.io/siderolabs/installer/",
            ":v1.12.0",
            "ghcr.io/siderolabs/installer@sha256:abc",
            "ghcr.io/siderolabs/installer@sha256",
            "ghcr.io/a..b",
            "ghcr.io/a___b",
            "https://ghcr.io/siderolabs/installer",
            &format!("ghcr.io/{}", "a".repeat(300)),
            &format!("ghcr.io/installer:{}", "t".repeat(129)),
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
