//! Checks requests against `../shared/reference/proxmox-ve-api-schema.json`.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn schema_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/proxmox-ve-api-schema.json")
}

/// The schema tree, or `None` (with a message) when the reference folder is absent.
pub fn load() -> Option<Value> {
    let file = schema_file();
    match std::fs::read_to_string(&file) {
        Ok(text) => Some(serde_json::from_str(&text).expect("the PVE schema is JSON")),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {} cannot be read ({e}): the schema check must run in CI",
                file.display()
            );
            eprintln!(
                "SKIPPED: schema check: {} is absent (a plain clone has no ../shared)",
                file.display()
            );
            None
        }
    }
}

/// The schema node for concrete path segments; a literal child wins over `{param}`.
fn find<'a>(nodes: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    let (first, rest) = segments.split_first()?;
    let children = nodes.as_array()?;
    let last = |n: &Value| {
        n.get("path")
            .and_then(Value::as_str)
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string)
    };
    let literal = children
        .iter()
        .filter(|n| last(n).as_deref() == Some(*first));
    let placeholder = children
        .iter()
        .filter(|n| last(n).is_some_and(|l| l.starts_with('{')));
    for n in literal.chain(placeholder) {
        if rest.is_empty() {
            return Some(n);
        }
        if let Some(found) = n.get("children").and_then(|c| find(c, rest)) {
            return Some(found);
        }
    }
    None
}

/// The schema's name for a parameter: `net0` is declared as `net[n]`.
fn declared<'a>(props: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(p) = props.get(name) {
        return Some(p);
    }
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    (stem.len() < name.len())
        .then(|| props.get(&format!("{stem}[n]")))
        .flatten()
}

/// Panics unless every request's path, method and parameter names (and the
/// values of typed ones) exist in the schema and the endpoint allows API tokens.
pub fn check(tree: &Value, requests: &[wiremock::Request]) {
    assert!(!requests.is_empty(), "no requests to check");
    for r in requests {
        let full = r.url.path();
        let p = full
            .strip_prefix("/api2/json/")
            .unwrap_or_else(|| panic!("{full} is not under /api2/json"));
        let segments: Vec<&str> = p.split('/').collect();
        let node = find(tree, &segments).unwrap_or_else(|| panic!("/{p} is not in the PVE schema"));
        let method = r.method.as_str();
        let info = node
            .pointer(&format!("/info/{method}"))
            .unwrap_or_else(|| panic!("{method} /{p} is not defined in the schema"));
        assert_eq!(
            info.get("allowtoken").and_then(Value::as_u64),
            Some(1),
            "{method} /{p} does not allow API tokens"
        );
        let props = info
            .pointer("/parameters/properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut sent: Vec<(String, String)> = r
            .url
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        sent.extend(
            url::form_urlencoded::parse(&r.body).map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
        for (k, v) in sent {
            let prop = declared(&props, &k)
                .unwrap_or_else(|| panic!("{method} /{p}: parameter `{k}` is not in the schema"));
            match prop.get("type").and_then(Value::as_str) {
                Some("boolean") => assert!(
                    v == "0" || v == "1",
                    "{method} /{p}: `{k}`={v} is not a boolean"
                ),
                Some("integer") => assert!(
                    v.parse::<i64>().is_ok(),
                    "{method} /{p}: `{k}`={v} is not an integer"
                ),
                _ => {}
            }
            if let Some(enumeration) = prop.get("enum").and_then(Value::as_array) {
                assert!(
                    enumeration.iter().any(|e| e.as_str() == Some(&v)),
                    "{method} /{p}: `{k}`={v} is not one of {enumeration:?}"
                );
            }
        }
    }
}
