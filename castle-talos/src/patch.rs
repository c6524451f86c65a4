use serde_json::Value;

use crate::{Error, Result};

/// A machine-config patch in one of Talos's two forms.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// Strategic merge: one or more documents.
    StrategicMerge(Vec<Value>),
    /// RFC 6902 operations (`add`, `remove`, `replace`, `test`).
    JsonPatch(Vec<Value>),
}

impl Patch {
    /// Parses a patch from YAML: a list of `{op, path}` objects is an RFC 6902 patch,
    /// anything else a strategic merge.
    ///
    /// # Errors
    /// The text is not YAML.
    pub fn parse(yaml: &str) -> Result<Self> {
        let v: Value = serde_saphyr::from_str(yaml)
            .map_err(|e| Error::Config(format!("patch is not YAML: {e}")))?;
        match &v {
            Value::Array(ops)
                if !ops.is_empty()
                    && ops
                        .iter()
                        .all(|o| o.get("op").is_some() && o.get("path").is_some()) =>
            {
                Ok(Patch::JsonPatch(ops.clone()))
            }
            Value::Object(_) => Ok(Patch::StrategicMerge(vec![v])),
            _ => Err(Error::Config(
                "a patch is a YAML map (strategic merge) or a list of {op, path} (RFC 6902)".into(),
            )),
        }
    }
}

/// Applies patches to a config's documents, in order.
///
/// # Errors
/// A JSON-patch operation whose path does not exist or whose `test` fails.
pub fn apply_patches(docs: &mut Vec<Value>, patches: &[Patch]) -> Result<()> {
    for patch in patches {
        match patch {
            Patch::StrategicMerge(ps) => {
                for p in ps {
                    let kind = p.get("kind").and_then(Value::as_str);
                    let name = p.get("name").and_then(Value::as_str);
                    let doc = docs
                        .iter_mut()
                        .find(|d| {
                            d.get("kind").and_then(Value::as_str) == kind
                                && name.is_none_or(|n| {
                                    d.get("name").and_then(Value::as_str) == Some(n)
                                })
                        })
                        .ok_or_else(|| Error::Config("a patch matches no document".into()))?;
                    merge(doc, p);
                }
            }
            Patch::JsonPatch(ops) => {
                let doc = docs
                    .first_mut()
                    .ok_or_else(|| Error::Config("no v1alpha1 document".into()))?;
                ops.iter().try_for_each(|op| json_patch_op(doc, op))?;
            }
        }
    }
    Ok(())
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    merge(existing, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (Value::Array(t), Value::Array(p)) => t.extend(p.iter().cloned()),
        (t, p) => *t = p.clone(),
    }
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn json_patch_op(doc: &mut Value, op: &Value) -> Result<()> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
    let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
    let bad = |why: &str| Error::Config(format!("json patch {kind} {path}: {why}"));
    let (parent_path, last) = path
        .rsplit_once('/')
        .ok_or_else(|| bad("path must start with /"))?;
    let last = unescape(last);
    match kind {
        "test" => {
            let cur = doc.pointer(path).ok_or_else(|| bad("no such path"))?;
            if Some(cur) != op.get("value") {
                return Err(bad("test failed"));
            }
            Ok(())
        }
        "add" | "replace" | "remove" => {
            let parent = if parent_path.is_empty() {
                Some(&mut *doc)
            } else {
                doc.pointer_mut(parent_path)
            };
            let parent = parent.ok_or_else(|| bad("parent does not exist"))?;
            let value = op.get("value").cloned();
            match parent {
                Value::Object(m) => match kind {
                    "add" => {
                        m.insert(last, value.ok_or_else(|| bad("needs a value"))?);
                    }
                    "replace" => {
                        let slot = m.get_mut(&last).ok_or_else(|| bad("no such path"))?;
                        *slot = value.ok_or_else(|| bad("needs a value"))?;
                    }
                    _ => {
                        m.remove(&last).ok_or_else(|| bad("no such path"))?;
                    }
                },
                Value::Array(a) => {
                    let index = if last == "-" {
                        a.len()
                    } else {
                        last.parse::<usize>().map_err(|_| bad("bad index"))?
                    };
                    match kind {
                        "add" if index <= a.len() => {
                            a.insert(index, value.ok_or_else(|| bad("needs a value"))?)
                        }
                        "replace" if index < a.len() => {
                            a[index] = value.ok_or_else(|| bad("needs a value"))?
                        }
                        "remove" if index < a.len() => {
                            a.remove(index);
                        }
                        _ => return Err(bad("index out of range")),
                    }
                }
                _ => return Err(bad("parent is not a map or list")),
            }
            Ok(())
        }
        other => Err(bad(&format!("unsupported op `{other}`"))),
    }
}
