use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{ClusterApi, Condition, Error, ObjectRef, Result};

/// The objects of a multi-document manifest.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Where it came from.
    pub source: String,
    /// The objects, in file order.
    pub objects: Vec<Value>,
    /// sha256 of the file.
    pub sha256: String,
}

impl Bundle {
    /// Reads a manifest file; when `pin` is given, its sha256 must match.
    ///
    /// # Errors
    /// The file is unreadable, not YAML, or does not match the pin.
    pub fn load(path: &Path, pin: Option<&str>) -> Result<Self> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Bundle {
            source_name: source.clone(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &source, pin)
    }

    /// Parses manifest text.
    ///
    /// # Errors
    /// Not YAML, an object without kind or name, or a pin mismatch.
    pub fn parse(text: &str, source: &str, pin: Option<&str>) -> Result<Self> {
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        if let Some(want) = pin
            && !want.eq_ignore_ascii_case(&sha256)
        {
            return Err(Error::Bundle {
                source_name: source.into(),
                message: format!(
                    "sha256 mismatch: expected {want}, got {sha256}; the file changed, update the pin only if you trust the new content"
                ),
            });
        }
        let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| Error::Bundle {
            source_name: source.into(),
            message: format!("not YAML: {e}"),
        })?;
        let mut objects = Vec::new();
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            let r = ObjectRef::of(&d);
            if r.kind.is_empty() || r.name.is_empty() || r.api_version.is_empty() {
                return Err(Error::Bundle {
                    source_name: source.into(),
                    message: "a document lacks apiVersion, kind or metadata.name".into(),
                });
            }
            objects.push(d);
        }
        Ok(Self {
            source: source.into(),
            objects,
            sha256,
        })
    }
}

fn rank(obj: &Value) -> u8 {
    match obj.get("kind").and_then(Value::as_str) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    }
}

/// Applies a bundle in a safe order: CRDs (then waits until each is Established and
/// served), namespaces, then everything else.
///
/// # Errors
/// The first apply or wait that fails.
pub async fn apply_bundle(
    api: &dyn ClusterApi,
    bundle: &Bundle,
    timeout: Duration,
) -> Result<usize> {
    let mut ordered: Vec<&Value> = bundle.objects.iter().collect();
    ordered.sort_by_key(|o| rank(o));
    let mut crds = Vec::new();
    for obj in &ordered {
        if rank(obj) > 0 && !crds.is_empty() {
            for name in crds.drain(..) {
                api.wait(&Condition::CrdEstablished(name), timeout).await?;
            }
        }
        api.apply(obj, false).await?;
        if rank(obj) == 0 {
            crds.push(ObjectRef::of(obj).name);
        }
    }
    for name in crds {
        api.wait(&Condition::CrdEstablished(name), timeout).await?;
    }
    Ok(ordered.len())
}
