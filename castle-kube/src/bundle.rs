use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{ClusterApi, Condition, Error, ObjectRef, Result};

/// The objects of a multi-document manifest.
#[derive(Clone)]
pub struct Bundle {
    /// Where it came from.
    pub source: String,
    /// The objects, in file order.
    pub objects: Vec<Value>,
    /// sha256 of the file.
    pub sha256: String,
}

// Bundles may hold Secrets: Debug names the bundle, never its content.
impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("source", &self.source)
            .field("objects", &self.objects.len())
            .field("sha256", &self.sha256)
            .finish()
    }
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

    /// Downloads a manifest once into `cache_dir` (as `<sha256>.yaml`) and verifies it
    /// against `sha256`; later calls read the cached copy.
    ///
    /// # Errors
    /// The download fails (transient when the server is unreachable or answers 5xx),
    /// the content does not match the pin (naming both digests), or it is not YAML.
    #[cfg(feature = "client")]
    pub async fn fetch(url: &str, sha256: &str, cache_dir: &Path) -> Result<Self> {
        let bad = |message: String| Error::Bundle {
            source_name: url.into(),
            message,
        };
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "the pin {sha256:?} is not a sha256 (64 hex digits)"
            )));
        }
        let cached = cache_dir.join(format!("{}.yaml", sha256.to_ascii_lowercase()));
        if let Ok(text) = tokio::fs::read_to_string(&cached).await
            && let Ok(bundle) = Self::parse(&text, url, Some(sha256))
        {
            return Ok(bundle);
        }
        let response = reqwest::get(url)
            .await
            .map_err(|e| Error::Unreachable(format!("downloading {url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("downloading {url}: HTTP {status}");
            return Err(if status.is_server_error() {
                Error::Unreachable(message)
            } else {
                bad(message)
            });
        }
        let text = response
            .text()
            .await
            .map_err(|e| Error::Unreachable(format!("downloading {url}: {e}")))?;
        let bundle = Self::parse(&text, url, Some(sha256))?;
        let io = |e: std::io::Error| bad(format!("caching in {}: {e}", cache_dir.display()));
        tokio::fs::create_dir_all(cache_dir).await.map_err(io)?;
        // Write aside and rename, so a crash never leaves a truncated file under the pin's name.
        let partial = cached.with_extension("part");
        tokio::fs::write(&partial, text.as_bytes())
            .await
            .map_err(io)?;
        tokio::fs::rename(&partial, &cached).await.map_err(io)?;
        Ok(bundle)
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
                    "sha256 mismatch: expected {want}, actual {sha256}; the content changed: update the pin only if you trust the new content"
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

/// Applies a bundle in a safe order: CRDs, then (once every CRD is Established and its
/// kinds served by discovery) namespaces, then everything else in file order. Never
/// forces conflicts: a field another manager owns is an error to look at.
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
