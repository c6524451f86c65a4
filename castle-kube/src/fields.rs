//! Server-side apply's field ownership, as [`crate::MockCluster`] keeps it.
//!
//! Learnt from sigs.k8s.io/structured-merge-diff `merge/update.go` (`Apply`: conflicts
//! are fields another manager owns with a different value; `force` takes them over;
//! fields the manager owned before and no longer applies are removed unless another
//! manager still owns them) and kubernetes
//! `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager` (the 409 text
//! `Apply failed with N conflict(s): conflict with "manager": .path`). Lists that the
//! built-in kinds' OpenAPI declares as maps (`x-kubernetes-list-type: map`: containers
//! and env by name, volumeMounts by mountPath, ports by port, conditions by type) are
//! merged element by element; every other list is atomic. One simplification: a list
//! is keyed by its field name, not by the kind's schema, and by one key where the
//! schema has two (ports: port and protocol).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// Leaf (as a JSON pointer) -> the managers that own it.
pub(crate) type Owners = BTreeMap<String, BTreeSet<String>>;

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The key a list named `field` is merged by, when every item has it once.
fn list_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let candidates: &[&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => &["name"],
        "volumeMounts" => &["mountPath"],
        "ports" => &["containerPort", "port"],
        "conditions" => &["type"],
        _ => return None,
    };
    candidates.iter().copied().find(|k| {
        let mut seen = BTreeSet::new();
        !items.is_empty()
            && items.iter().all(|i| {
                i.get(*k)
                    .filter(|v| v.is_string() || v.is_number())
                    .is_some_and(|v| seen.insert(scalar(v)))
            })
    })
}

fn scalar(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The path segment of a list item: `[name=web]`.
fn item_segment(key: &str, item: &Value) -> String {
    let v = item.get(key).map(scalar).unwrap_or_default();
    format!("[{key}={}]", escape(&v))
}

fn leaves_in(v: &Value, prefix: &str, field: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves_in(x, &format!("{prefix}/{}", escape(k)), k, out);
            }
        }
        Value::Array(items) if list_key(field, items).is_some() => {
            let key = list_key(field, items).unwrap_or_default();
            for item in items {
                leaves_in(
                    item,
                    &format!("{prefix}/{}", item_segment(key, item)),
                    "",
                    out,
                );
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    leaves_in(v, prefix, "", out);
}

/// The leaves an apply sets: everything but the object's identity, the server's
/// bookkeeping and status. A null is no value (apply drops it).
pub(crate) fn applied_leaves(obj: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(x) = v.get(field) {
                        leaves_in(x, &format!("/metadata/{field}"), field, &mut out);
                    }
                }
            }
            _ => leaves_in(v, &format!("/{}", escape(k)), k, &mut out),
        }
    }
    out.retain(|_, v| !v.is_null());
    out
}

/// A pointer as the API server prints a field path:
/// `.metadata.labels.app.kubernetes.io/name`, `.spec.containers[name="web"].image`.
pub(crate) fn dotted(pointer: &str) -> String {
    parts(pointer)
        .into_iter()
        .map(|p| match keyed(&p) {
            Some((k, v)) => format!("[{k}={v:?}]"),
            None => format!(".{p}"),
        })
        .collect()
}

fn parts(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Puts the items of keyed lists in the order the apply lists them, the items only
/// other managers own after them (an approximation of structured-merge-diff's merged
/// order, exact for a list one manager owns).
fn reorder(value: &mut Value, applied: &Value, field: &str) {
    match (value, applied) {
        (Value::Object(v), Value::Object(a)) => {
            for (k, x) in a {
                if let Some(target) = v.get_mut(k) {
                    reorder(target, x, k);
                }
            }
        }
        (Value::Array(v), Value::Array(a)) => {
            let Some(key) = list_key(field, a) else {
                return;
            };
            let id = |i: &Value| i.get(key).map(scalar);
            let mut ordered = Vec::with_capacity(v.len());
            for want in a {
                if let Some(pos) = v.iter().position(|i| id(i) == id(want)) {
                    let mut item = v.remove(pos);
                    reorder(&mut item, want, "");
                    ordered.push(item);
                }
            }
            ordered.append(v);
            *v = ordered;
        }
        _ => {}
    }
}

/// For the key field of a list item (`.../[name=web]/name`), the item's path.
fn key_leaf_of(path: &str) -> Option<&str> {
    let (item, field) = path.rsplit_once('/')?;
    let (_, segment) = item.rsplit_once('/')?;
    let (key, _) = keyed(segment)?;
    (key == field).then_some(item)
}

/// `[name=web]` as (key, value).
fn keyed(segment: &str) -> Option<(&str, &str)> {
    segment
        .strip_prefix('[')?
        .strip_suffix(']')?
        .split_once('=')
}

/// The item of a keyed list, created (with its key) when missing.
fn item_mut<'a>(list: &'a mut Vec<Value>, key: &str, value: &str) -> &'a mut Value {
    let at = list
        .iter()
        .position(|i| i.get(key).map(scalar).as_deref() == Some(value));
    let index = match at {
        Some(i) => i,
        None => {
            let typed = if matches!(key, "containerPort" | "port") {
                value
                    .parse::<i64>()
                    .map_or_else(|_| json!(value), Value::from)
            } else {
                json!(value)
            };
            let mut item = serde_json::Map::new();
            item.insert(key.into(), typed);
            list.push(Value::Object(item));
            list.len() - 1
        }
    };
    &mut list[index]
}

fn set(target: &mut Value, pointer: &str, v: Value) {
    let mut at = target;
    for p in parts(pointer) {
        if let Some((key, value)) = keyed(&p) {
            if !at.is_array() {
                *at = json!([]);
            }
            let Some(list) = at.as_array_mut() else {
                return;
            };
            at = item_mut(list, key, value);
            continue;
        }
        if !at.is_object() {
            *at = json!({});
        }
        let Some(m) = at.as_object_mut() else { return };
        at = m.entry(p).or_insert(Value::Null);
    }
    // An empty map (or map-typed list) says the field exists; it does not take other
    // managers' keys away.
    let empty_map = v.as_object().is_some_and(serde_json::Map::is_empty) && at.is_object();
    let empty_list = v.as_array().is_some_and(Vec::is_empty) && at.is_array();
    if empty_map || empty_list {
        return;
    }
    *at = v;
}

/// Removes a leaf, and the maps and list items above it that it leaves empty (below
/// the top level).
fn remove(target: &mut Value, pointer: &str) {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    /// Removes below `at`; whether `at` is left empty.
    fn go(at: &mut Value, parts: &[String]) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return false;
        };
        if let Some((key, value)) = keyed(first) {
            let Some(list) = at.as_array_mut() else {
                return false;
            };
            let Some(i) = list
                .iter()
                .position(|x| x.get(key).map(scalar).as_deref() == Some(value))
            else {
                return false;
            };
            if rest.is_empty() || go(&mut list[i], rest) {
                list.remove(i);
            }
            return list.is_empty();
        }
        let Some(m) = at.as_object_mut() else {
            return false;
        };
        if rest.is_empty() {
            m.remove(first);
        } else if let Some(child) = m.get_mut(first)
            && go(child, rest)
        {
            m.remove(first);
        }
        m.is_empty()
    }
    let parts = parts(pointer);
    if let Some((top, rest)) = parts.split_first() {
        let drop_top = match target.get_mut(top.as_str()) {
            Some(child) => {
                rest.is_empty() || (go(child, rest) && top != "metadata" && empty(child))
            }
            None => false,
        };
        if drop_top && let Some(m) = target.as_object_mut() {
            m.remove(top);
        }
    }
}

/// Conflicts as structured-merge-diff `merge/conflict.go` prints them: one as
/// `conflict with "m": .path`, several grouped by sorted manager.
pub(crate) fn conflict_message(conflicts: &[(String, String)]) -> String {
    if let [(m, path)] = conflicts {
        return format!("conflict with {m:?}: {path}");
    }
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (m, p) in conflicts {
        by.entry(m).or_default().push(p);
    }
    let mut lines = Vec::new();
    for (m, paths) in by {
        lines.push(format!("conflicts with {m:?}:"));
        lines.extend(paths.into_iter().map(|p| format!("- {p}")));
    }
    lines.join("\n")
}

/// The result of one apply by `manager`: the new object and owners, or the conflicts.
///
/// # Errors
/// (manager, path) of each field another manager owns with a different value (paths
/// only: the values may be a Secret's).
pub(crate) fn apply(
    old: Option<(&Value, &Owners)>,
    obj: &Value,
    manager: &str,
    force: bool,
) -> Result<(Value, Owners), Vec<(String, String)>> {
    let incoming = applied_leaves(obj);
    let (mut value, mut owners) = match old {
        Some((v, o)) => (v.clone(), o.clone()),
        None => (json!({}), Owners::new()),
    };
    let mut current = BTreeMap::new();
    leaves(&value, "", &mut current);
    let mut conflicts = Vec::new();
    for (path, v) in &incoming {
        let same = current.get(path) == Some(v);
        let others: Vec<String> = owners
            .get(path)
            .into_iter()
            .flatten()
            .filter(|m| *m != manager)
            .cloned()
            .collect();
        if same || others.is_empty() {
            continue;
        }
        if force {
            if let Some(set) = owners.get_mut(path) {
                set.retain(|m| m == manager);
            }
        } else {
            conflicts.extend(others.into_iter().map(|o| (o, dotted(path))));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    // What this manager stops applying goes, unless another manager still owns it.
    let mut dropped: Vec<String> = owners
        .iter()
        .filter(|(p, m)| m.contains(manager) && !incoming.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    // A list item's key goes last, and only with the item's last owned field: an
    // item without its key could never be found again.
    dropped.sort_by_key(|p| key_leaf_of(p).is_some());
    for path in dropped {
        let orphan = owners.get_mut(&path).is_some_and(|m| {
            m.remove(manager);
            m.is_empty()
        });
        if !orphan {
            continue;
        }
        owners.remove(&path);
        let item_still_owned = key_leaf_of(&path).is_some_and(|item| {
            let prefix = format!("{item}/");
            owners.keys().any(|p| p.starts_with(&prefix))
        });
        if !item_still_owned {
            remove(&mut value, &path);
        }
    }
    for (path, v) in incoming {
        // A leaf replacing a map (or the other way) ends the old leaves' ownership.
        let prefix = format!("{path}/");
        owners.retain(|p, _| !p.starts_with(&prefix));
        set(&mut value, &path, v);
        owners.entry(path).or_default().insert(manager.to_string());
    }
    reorder(&mut value, obj, "");
    for f in ["apiVersion", "kind"] {
        if let Some(v) = obj.get(f) {
            value[f] = v.clone();
        }
    }
    for f in ["name", "namespace"] {
        if let Some(v) = obj.pointer(&format!("/metadata/{f}")) {
            value["metadata"][f] = v.clone();
        }
    }
    Ok((value, owners))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_field_goes_unless_another_manager_owns_it() {
        let first = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system", "labels": {"app.kubernetes.io/managed-by": "castle"}}});
        let (v, o) = apply(None, &first, "castle", false).unwrap_or_default();
        let bare =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}});
        let (same, _) = apply(Some((&v, &o)), &bare, "castle", false).unwrap_or_default();
        assert!(same.pointer("/metadata/labels").is_none(), "{same}");
        let (other, _) = apply(Some((&v, &o)), &bare, "castle-flux", false).unwrap_or_default();
        assert_eq!(
            other.pointer("/metadata/labels/app.kubernetes.io~1managed-by"),
            Some(&json!("castle"))
        );
        let empty = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system", "labels": {}}});
        let (kept, _) = apply(Some((&v, &o)), &empty, "castle-eso", false).unwrap_or_default();
        assert_eq!(
            kept.pointer("/metadata/labels/app.kubernetes.io~1managed-by"),
            Some(&json!("castle")),
            "an empty map is no claim on other managers' keys"
        );
    }

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "blog", "namespace": "web"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    }

    /// Source: the `x-kubernetes-list-type: map` / `x-kubernetes-list-map-keys: [name]`
    /// of PodSpec.containers in kubernetes `api/openapi-spec`; merge/update.go merges
    /// such lists item by item.
    #[test]
    fn containers_merge_by_name_and_conflict_per_field() {
        let app = deployment(json!([{"name": "blog", "image": "blog:1"}]));
        let (v, o) = apply(None, &app, "castle", false).unwrap_or_default();
        let sidecar = deployment(json!([{"name": "proxy", "image": "envoy:1"}]));
        let (v, o) = apply(Some((&v, &o)), &sidecar, "mesh", false).unwrap_or_default();
        let names: BTreeSet<&str> = v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, BTreeSet::from(["blog", "proxy"]));
        let bump = deployment(json!([{"name": "proxy", "image": "envoy:2"}]));
        let conflicts = apply(Some((&v, &o)), &bump, "castle", false)
            .err()
            .unwrap_or_default();
        assert_eq!(
            conflict_message(&conflicts),
            "conflict with \"mesh\": .spec.template.spec.containers[name=\"proxy\"].image"
        );
        // The mesh stops applying its sidecar: only the sidecar goes.
        let none = deployment(json!([]));
        let (v, _) = apply(Some((&v, &o)), &none, "mesh", false).unwrap_or_default();
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"],
            json!([{"name": "blog", "image": "blog:1"}])
        );
    }
}
