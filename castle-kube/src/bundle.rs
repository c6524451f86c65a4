use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{ClusterApi, Condition, Error, FIELD_MANAGER, ObjectRef, Result};

/// The objects of a multi-document manifest.
#[derive(Clone)]
pub struct Bundle {
    /// Where it came from.
    pub source: String,
    /// The objects, in file order.
    pub objects: Vec<Value>,
    /// sha256 of the file.
    pub sha256: String,
    /// The field manager its objects are applied as (`castle` unless set).
    pub field_manager: String,
}

// Bundles may hold Secrets: Debug names the bundle, never its content.
impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("source", &self.source)
            .field("objects", &self.objects.len())
            .field("sha256", &self.sha256)
            .field("field_manager", &self.field_manager)
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

    /// The copy of a pinned download that [`fetch`](Self::fetch) kept in `cache_dir`
    /// (as `<sha256>.yaml`), when it is there and still matches the pin.
    pub fn cached(url: &str, sha256: &str, cache_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::cache_file(sha256, cache_dir)?).ok()?;
        Self::parse(&text, url, Some(sha256)).ok()
    }

    fn cache_file(sha256: &str, cache_dir: &Path) -> Option<std::path::PathBuf> {
        (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| cache_dir.join(format!("{}.yaml", sha256.to_ascii_lowercase())))
    }

    /// Downloads a manifest once into `cache_dir` (as `<sha256>.yaml`) and verifies it
    /// against `sha256`; later calls read the cached copy and send no request.
    /// Connecting may take 10 s, the whole download 2 min.
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
        let Some(cached) = Self::cache_file(sha256, cache_dir) else {
            return Err(bad(format!(
                "the pin {sha256:?} is not a sha256 (64 hex digits)"
            )));
        };
        if let Some(bundle) = Self::cached(url, sha256, cache_dir) {
            return Ok(bundle);
        }
        let unreachable = |e: reqwest::Error| {
            Error::Unreachable(format!("downloading {url}: {}", crate::client::chain(&e).0))
        };
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(unreachable)?;
        let response = client.get(url).send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("downloading {url}: HTTP {status}");
            return Err(if status.is_server_error() {
                Error::Unreachable(message)
            } else {
                bad(message)
            });
        }
        let text = response.text().await.map_err(unreachable)?;
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
            field_manager: FIELD_MANAGER.into(),
        })
    }

    /// The same bundle, applied as `manager`: give each bundle its own, so that a
    /// bundle that applies an object Castle also applies (a Namespace with Castle's
    /// labels) never removes what Castle set.
    #[must_use]
    pub fn with_field_manager(mut self, manager: &str) -> Self {
        self.field_manager = manager.into();
        self
    }
}

fn being_deleted(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// The namespace a NamespaceLifecycle refusal names: kube-apiserver answers a create
/// in a Terminating namespace with 403 "unable to create new content in namespace X
/// because it is being terminated" (kubernetes
/// `staging/src/k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go`).
fn terminating_namespace(e: &Error) -> Option<String> {
    let Error::Api {
        status: 403,
        message,
        ..
    } = e
    else {
        return None;
    };
    let rest = message
        .split("unable to create new content in namespace ")
        .nth(1)?;
    let ns = rest.split(" because it is being terminated").next()?;
    Some(ns.to_string())
}

/// Applies one object as `manager`, the way Castle applies everything:
/// - an object that is being deleted (an apply answers it with its `deletionTimestamp`
///   set and the object vanishes once its finalizers are done) is waited out, by
///   watching, and applied afresh;
/// - a namespace that is Terminating is waited out the same way (then the apply
///   answers 404 until the namespace is applied again: namespaces come first in a
///   bundle);
/// - transient refusals (a webhook not serving yet, a 503) are tried again with a
///   backoff from 200 ms to 5 s.
///
/// # Errors
/// A permanent refusal at once; a transient one or an unfinished deletion when
/// `timeout` runs out.
pub async fn apply_object(
    api: &dyn ClusterApi,
    manager: &str,
    object: &Value,
    timeout: Duration,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut pause = Duration::from_millis(200);
    loop {
        match api.apply_as(manager, object, false).await {
            Ok(applied) if being_deleted(&applied) => {
                let mut r = ObjectRef::of(&applied);
                if r.api_version.is_empty() {
                    r = ObjectRef::of(object);
                }
                api.wait(&Condition::Deleted(r), left()).await?;
            }
            Ok(applied) => return Ok(applied),
            Err(e) => {
                if let Some(ns) = terminating_namespace(&e) {
                    let namespace = ObjectRef::new("v1", "Namespace", None, &ns);
                    // Once it is gone the apply says "namespaces ... not found": the
                    // bundle that holds the Namespace applies it first.
                    api.wait(&Condition::Deleted(namespace), left()).await?;
                    continue;
                }
                if e.is_transient() && tokio::time::Instant::now() + pause < deadline {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// A wait that a transient refusal (the watch's 503) does not end.
async fn wait_through(
    api: &dyn ClusterApi,
    condition: &Condition,
    timeout: Duration,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(200);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match api.wait(condition, left).await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

fn rank(obj: &Value) -> u8 {
    match obj.get("kind").and_then(Value::as_str) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    }
}

/// Applies a bundle in a safe order, as its own field manager: CRDs, then (once every
/// CRD is Established and its kinds served by discovery) namespaces, then everything
/// else in file order, each with [`apply_object`]. Never forces conflicts: a field
/// another manager owns is an error to look at.
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
                wait_through(api, &Condition::CrdEstablished(name), timeout).await?;
            }
        }
        apply_object(api, &bundle.field_manager, obj, timeout).await?;
        if rank(obj) == 0 {
            crds.push(ObjectRef::of(obj).name);
        }
    }
    for name in crds {
        wait_through(api, &Condition::CrdEstablished(name), timeout).await?;
    }
    Ok(ordered.len())
}
