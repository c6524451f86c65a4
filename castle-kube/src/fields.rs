//! Server-side apply's field ownership, as [`crate::MockCluster`] keeps it.
//!
//! Learnt from sigs.k8s.io/structured-merge-diff `merge/update.go` (`Apply`: conflicts
//! are fields another manager owns with a different value; `force` takes them over;
//! fields the manager owned before and no longer applies are removed unless another
//! manager still owns them) and kubernetes
//! `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager` (the 409 text
//! `Apply failed with N conflict(s): conflict with "manager": .path`). One
//! simplification: lists are atomic (owned whole), where the real server merges
//! lists with merge keys (containers by name) element by element.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// Leaf (as a JSON pointer) -> the managers that own it.
pub(crate) type Owners = BTreeMap<String, BTreeSet<String>>;

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves(x, &format!("{prefix}/{}", escape(k)), out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
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
                        leaves(x, &format!("/metadata/{field}"), &mut out);
                    }
                }
            }
            _ => leaves(v, &format!("/{}", escape(k)), &mut out),
        }
    }
    out.retain(|_, v| !v.is_null());
    out
}

/// A pointer as the API server prints a field path: `.metadata.labels.app.kubernetes.io/name`.
pub(crate) fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|p| format!(".{}", p.replace("~1", "/").replace("~0", "~")))
        .collect()
}

fn parts(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn set(target: &mut Value, pointer: &str, v: Value) {
    let mut at = target;
    for p in parts(pointer) {
        if !at.is_object() {
            *at = json!({});
        }
        let Some(m) = at.as_object_mut() else { return };
        at = m.entry(p).or_insert(Value::Null);
    }
    // An empty map says the field exists; it does not take other managers' keys away.
    if v.as_object().is_some_and(serde_json::Map::is_empty) && at.is_object() {
        return;
    }
    *at = v;
}

/// Removes a leaf, and the maps above it that it leaves empty (below the top level).
fn remove(target: &mut Value, pointer: &str) {
    let parts = parts(pointer);
    fn go(at: &mut Value, parts: &[String]) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return false;
        };
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
    if let Some((top, rest)) = parts.split_first() {
        let drop_top = match target.get_mut(top.as_str()) {
            Some(child) => rest.is_empty() || (go(child, rest) && top != "metadata"),
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
    let dropped: Vec<String> = owners
        .iter()
        .filter(|(p, m)| m.contains(manager) && !incoming.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    for path in dropped {
        let orphan = owners.get_mut(&path).is_some_and(|m| {
            m.remove(manager);
            m.is_empty()
        });
        if orphan {
            owners.remove(&path);
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
}
