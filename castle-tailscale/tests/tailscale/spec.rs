//! Requests checked against `../shared/reference/tailscale-api-v2-openapi.yaml`.

use std::path::Path;

use serde_json::Value;

/// The OpenAPI description, or `None` (with a note) where the reference folder is
/// absent, as in a plain clone of the project.
pub fn load() -> Option<Value> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/tailscale-api-v2-openapi.yaml");
    let Ok(text) = std::fs::read_to_string(&file) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {} is absent: the OpenAPI check must run in CI",
            file.display()
        );
        eprintln!(
            "skipping the OpenAPI check: {} is absent (it lives in ../shared/reference)",
            file.display()
        );
        return None;
    };
    Some(serde_saphyr::from_str(&text).unwrap())
}

/// The operation `method` on `path` (as the spec spells it, e.g. `/device/{deviceId}`).
pub fn operation<'a>(spec: &'a Value, path: &str, method: &str) -> &'a Value {
    spec.get("paths")
        .and_then(|p| p.get(path))
        .and_then(|p| p.get(method))
        .unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI description"))
}

/// Follows `$ref`s to `#/components/...`.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = spec
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(spec, target)
        }
        None => v,
    }
}

/// Every property of `body` exists in `schema` with the JSON type it declares,
/// recursively; `enum`s and `maxLength` are honoured.
pub fn conforms(spec: &Value, schema: &Value, body: &Value, at: &str) {
    let schema = resolve(spec, schema);
    let ty = schema.get("type").and_then(Value::as_str);
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        assert!(
            allowed.contains(body),
            "{at}: {body} is not one of {allowed:?}"
        );
    }
    match body {
        Value::Object(map) => {
            assert_eq!(
                ty,
                Some("object"),
                "{at}: an object where the schema says {ty:?}"
            );
            let props = schema
                .get("properties")
                .unwrap_or_else(|| panic!("{at}: the schema lists no properties"));
            for (k, v) in map {
                let sub = props
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} is not in the OpenAPI schema"));
                conforms(spec, sub, v, &format!("{at}.{k}"));
            }
        }
        Value::Array(items) => {
            assert_eq!(ty, Some("array"), "{at}");
            let item = schema.get("items").unwrap();
            for i in items {
                conforms(spec, item, i, &format!("{at}[]"));
            }
        }
        Value::Bool(_) => assert_eq!(ty, Some("boolean"), "{at}"),
        Value::Number(n) => {
            assert!(matches!(ty, Some("integer" | "number")), "{at}: {ty:?}");
            if ty == Some("integer") {
                assert!(n.is_u64() || n.is_i64(), "{at}: {n} is not an integer");
            }
        }
        Value::String(s) => {
            assert_eq!(ty, Some("string"), "{at}");
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                assert!(s.chars().count() as u64 <= max, "{at}: longer than {max}");
            }
        }
        Value::Null => panic!("{at}: null is never sent"),
    }
}
