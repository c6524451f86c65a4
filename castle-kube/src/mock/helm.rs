//! Flux's source-controller and helm-controller, as far as a chart installed through
//! Flux needs them: a `HelmRepository` serves an index, an `OCIRepository` a tagged
//! chart, a `HelmRelease` gets its `HelmChart`, Helm checks the values against the
//! chart's schema, applies what the chart renders and waits for its workloads.
//! Every condition, reason and message is the controllers' own:
//! - source-controller `internal/controller/{helmrepository,ocirepository,helmchart}_controller.go`,
//!   `internal/helm/chart/errors.go` (BuildError, persistent reasons stall),
//!   `internal/helm/repository/chart_repository.go` (`no '%s' chart with version
//!   matching '%s' found`), `internal/reconcile/reconcile.go` (a generic failure
//!   leaves `observedGeneration` alone, a stalling one records it);
//! - helm-controller `internal/controller/helmrelease_controller.go` (DependencyNotReady,
//!   ArtifactFailed, SourceNotReady with isReady's `Kind 'ns/name' is not ready: ...`,
//!   observedGeneration patched only on success), `internal/reconcile/install.go` and
//!   `upgrade.go` (`Helm install failed for release %s/%s with chart %s@%s: %s`),
//!   `atomic_release.go` (`Running 'install' action with timeout of 5m0s`, Stalled
//!   RetriesExceeded), `release.go` (summarize: Ready mirrors Released, with the
//!   object's generation), `helmchart_template.go` (the HelmChart `<ns>-<name>`,
//!   applied as `helm-controller` with the release's owner labels);
//! - Helm v4 `pkg/chart/common/util/values.go` and `jsonschema.go` (`values don't meet
//!   the specifications of the schema(s) in the following chart(s):`, one
//!   `- at '<pointer>': <message>` line per violation).
//!
//! Limits: a chart renders the same objects whatever its values (the values are
//! checked against its schema, not templated); versions match exactly or `*`/empty
//! for the latest; an upgrade applies the new version's objects and leaves those it
//! no longer renders.

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Inner, key, kind_of};
use crate::conditions::Verdict;
use crate::{Condition, Error, ObjectRef};

/// One version of a chart that a simulated Helm repository or OCI registry serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// `https://...` (a Helm repository's index) or `oci://host/path` (a registry;
    /// the chart is the artifact `<repo>/<name>`).
    pub repo: String,
    /// The chart's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it renders (at its default values): CRDs are applied first, as Helm
    /// installs a chart's `crds/` before its templates.
    pub objects: Vec<Value>,
    /// Its `values.schema.json`, when it has one.
    pub values_schema: Option<Value>,
}

/// The media type of a Helm chart's layer in an OCI artifact (Helm's
/// `registry.ChartLayerMediaType`).
pub const CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

const MANAGER: &str = "helm-controller";
const SOURCE_API: &str = "source.toolkit.fluxcd.io/v1";
/// Helm's default timeout (helm-controller `api/v2` GetTimeout: 300s).
const DEFAULT_TIMEOUT: f64 = 300.0;

/// What a source fetch ends in.
enum Fetch {
    /// Nothing to fetch from yet: marked at once, tried again on every pass.
    Waiting(&'static str, String),
    /// The artifact, after the fetch's time.
    Artifact {
        revision: String,
        reason: &'static str,
        message: String,
    },
    /// A failure the controller retries (observedGeneration stays).
    Failed(&'static str, String),
    /// A failure only a new generation can change.
    Stalled(&'static str, String),
}

fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn observed(obj: &Value) -> Option<i64> {
    obj.pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn holds(obj: &Value, kind: &str, status: &str) -> bool {
    condition(obj, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some(status)
}

/// A condition as fluxcd/pkg `runtime/conditions` writes it: with the generation it
/// speaks for.
fn mark(v: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    let generation = generation(v);
    if !v.get("status").is_some_and(Value::is_object) {
        v["status"] = json!({});
    }
    if !v["status"].get("conditions").is_some_and(Value::is_array) {
        v["status"]["conditions"] = json!([]);
    }
    if let Some(list) = v["status"]["conditions"].as_array_mut() {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
        list.push(json!({"type": kind, "status": status, "reason": reason, "message": message, "observedGeneration": generation}));
    }
}

fn unmark(v: &mut Value, kind: &str) {
    if let Some(list) = v
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    }
}

fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Versions compared by their numeric parts (`1.10.0` after `1.9.1`).
fn version_key(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The release's name and namespace (helm-controller `api/v2` GetReleaseName,
/// GetReleaseNamespace).
fn release_of(hr: &Value) -> (String, String) {
    let name = text(hr, "/metadata/name");
    let namespace = text(hr, "/metadata/namespace");
    let target = text(hr, "/spec/targetNamespace");
    let release = match (text(hr, "/spec/releaseName"), target) {
        ("", "") => name.to_string(),
        ("", t) => format!("{t}-{name}"),
        (r, _) => r.to_string(),
    };
    let namespace = if target.is_empty() { namespace } else { target };
    (release, namespace.to_string())
}

/// A Go duration of the forms Flux writes (`5m`, `300s`, `1h30m`), in seconds.
fn seconds(d: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut number = String::new();
    for ch in d.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            number.push(ch);
            continue;
        }
        let n: f64 = number.parse().ok()?;
        number.clear();
        total += n * match ch {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

/// Go's `time.Duration.String()` for whole seconds (`5m0s`).
fn go_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// The values against the chart's schema, in Helm's words.
fn check_values(chart: &Chart, values: &Value) -> Result<(), String> {
    let Some(schema) = &chart.values_schema else {
        return Ok(());
    };
    let validator = jsonschema::options()
        .should_validate_formats(false)
        .build(schema)
        .map_err(|e| format!("unable to validate schema: {e}"))?;
    let mut lines: Vec<String> = validator
        .iter_errors(values)
        .map(|e| format!("- at '{}': {}", e.instance_path.as_str(), violation(&e)))
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    lines.sort();
    Err(format!(
        "values don't meet the specifications of the schema(s) in the following chart(s):\n{}:\n{}\n",
        chart.name,
        lines.join("\n")
    ))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn quoted(items: impl IntoIterator<Item = String>) -> String {
    items
        .into_iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// santhosh-tekuri/jsonschema v6's English (`kind.go`), which Helm v4 prints.
fn violation(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let shown = |v: &Value| match v {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    };
    match &e.kind {
        K::Type { kind } => {
            let want = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("got {}, want {want}", json_type(&e.instance))
        }
        K::Required { property } => {
            format!("missing property {}", shown(property).replace('"', "'"))
        }
        K::AdditionalProperties { unexpected } => format!(
            "additional properties {} not allowed",
            quoted(unexpected.iter().cloned())
        ),
        K::Enum { options } => format!(
            "value must be one of {}",
            options
                .as_array()
                .map(|o| o.iter().map(shown).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
        K::Minimum { limit } => format!("minimum: got {}, want {limit}", e.instance),
        K::Maximum { limit } => format!("maximum: got {}, want {limit}", e.instance),
        _ => e.to_string(),
    }
}

impl Inner {
    /// A chart the simulated repositories serve: `version` exactly, or the latest
    /// for `*` or none. `Err(true)`: no such chart at all; `Err(false)`: not that version.
    fn find_chart(&self, repo: &str, name: &str, version: &str) -> Result<&Arc<Chart>, bool> {
        let repo = repo.trim_end_matches('/');
        let mut found: Vec<&Arc<Chart>> = self
            .charts
            .iter()
            .filter(|c| c.repo.trim_end_matches('/') == repo && c.name == name)
            .collect();
        if found.is_empty() {
            return Err(true);
        }
        if version.is_empty() || version == "*" {
            found.sort_by_key(|c| version_key(&c.version));
            return found.pop().ok_or(true);
        }
        found
            .into_iter()
            .find(|c| c.version == version)
            .ok_or(false)
    }

    /// Changes an object's value in place; whether anything changed.
    fn update(&mut self, k: &str, f: impl FnOnce(&mut Value)) -> bool {
        let Some(v) = self.value_mut(k) else {
            return false;
        };
        let before = v.clone();
        f(v);
        *v != before
    }

    pub(super) fn reconcile_helm(&mut self, k: &str, r: &ObjectRef, obj: &Value) -> bool {
        if super::deleting(obj)
            || obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
        {
            return false;
        }
        // A source that has its artifact, or stalled, for this generation is done
        // until the generation changes.
        let g = generation(obj);
        if r.kind != "HelmRelease"
            && observed(obj) == Some(g)
            && (holds(obj, "Ready", "True") || holds(obj, "Stalled", "True"))
        {
            return false;
        }
        match r.kind.as_str() {
            // A HelmRepository of type oci is static: source-controller gives it no
            // status, the HelmChart asks the registry itself.
            "HelmRepository" if text(obj, "/spec/type") == "oci" => false,
            "HelmRepository" => {
                let url = text(obj, "/spec/url").trim_end_matches('/').to_string();
                let served = self
                    .charts
                    .iter()
                    .any(|c| c.repo.trim_end_matches('/') == url);
                let fetch = if served {
                    let revision = format!("sha256:{}", digest(&url));
                    Fetch::Artifact {
                        message: format!("stored artifact: revision '{revision}'"),
                        revision,
                        reason: "Succeeded",
                    }
                } else {
                    Fetch::Failed(
                        "Failed",
                        format!(
                            "failed to fetch Helm repository index: failed to cache index to temporary file: failed to fetch {url}/index.yaml : 404 Not Found"
                        ),
                    )
                };
                let delay = self.latency().source;
                self.source(k, obj, delay, fetch)
            }
            "OCIRepository" => {
                let fetch = self.oci_fetch(obj);
                let delay = self.latency().source;
                self.source(k, obj, delay, fetch)
            }
            "HelmChart" => {
                let fetch = self.chart_fetch(r, obj);
                let delay = self.latency().chart;
                self.source(k, obj, delay, fetch)
            }
            _ => self.release(k, r, obj),
        }
    }

    fn oci_fetch(&self, obj: &Value) -> Fetch {
        let url = text(obj, "/spec/url");
        let tag = match text(obj, "/spec/ref/tag") {
            "" => "latest",
            t => t,
        };
        let path = url.trim_start_matches("oci://");
        let (host, repository) = path.split_once('/').unwrap_or((path, ""));
        let (repo, name) = url.rsplit_once('/').unwrap_or((url, ""));
        let manifest = format!("GET https://{host}/v2/{repository}/manifests/{tag}");
        match self.find_chart(repo, name, tag) {
            Ok(c) => {
                let revision = format!("{tag}@sha256:{}", digest(&format!("{url}:{}", c.version)));
                Fetch::Artifact {
                    message: format!("stored artifact for digest '{revision}'"),
                    revision,
                    reason: "Succeeded",
                }
            }
            Err(true) => Fetch::Failed(
                "OCIArtifactPullFailed",
                format!(
                    "failed to determine artifact digest: {manifest}: NAME_UNKNOWN: repository name not known to registry; map[name:{repository}]"
                ),
            ),
            Err(false) => Fetch::Failed(
                "OCIArtifactPullFailed",
                format!(
                    "failed to determine artifact digest: {manifest}: MANIFEST_UNKNOWN: manifest unknown; map[Tag:{tag}]"
                ),
            ),
        }
    }

    fn chart_fetch(&self, r: &ObjectRef, obj: &Value) -> Fetch {
        let ns = r.namespace.clone().unwrap_or_default();
        let kind = text(obj, "/spec/sourceRef/kind");
        let name = text(obj, "/spec/sourceRef/name");
        let chart = text(obj, "/spec/chart");
        let version = text(obj, "/spec/version");
        if kind != "HelmRepository" {
            return Fetch::Waiting(
                "NoSourceArtifact",
                format!("no artifact available for {kind} source '{name}'"),
            );
        }
        let Some(repo) = self
            .objects
            .get(&format!(
                "source.toolkit.fluxcd.io/HelmRepository/{ns}/{name}"
            ))
            .map(|o| o.value.clone())
        else {
            return Fetch::Waiting(
                "SourceUnavailable",
                format!(
                    "failed to get source: helmrepositories.source.toolkit.fluxcd.io \"{name}\" not found"
                ),
            );
        };
        let oci = text(&repo, "/spec/type") == "oci";
        if !oci && repo.pointer("/status/artifact").is_none() {
            return Fetch::Waiting(
                "NoSourceArtifact",
                format!("no artifact available for HelmRepository source '{name}'"),
            );
        }
        let prefix = "invalid chart reference: failed to get chart version for remote reference";
        match self.find_chart(text(&repo, "/spec/url"), chart, version) {
            Ok(c) => Fetch::Artifact {
                revision: c.version.clone(),
                reason: "ChartPullSucceeded",
                message: format!("pulled '{chart}' chart with version '{}'", c.version),
            },
            Err(true) => Fetch::Stalled(
                "InvalidChartReference",
                format!("{prefix}: no chart name found"),
            ),
            Err(false) => Fetch::Stalled(
                "InvalidChartReference",
                format!("{prefix}: no '{chart}' chart with version matching '{version}' found"),
            ),
        }
    }

    /// source-controller's reconcile of one source: `Reconciling` while it fetches
    /// (`delay` seconds on the clock), then its artifact or failure.
    fn source(&mut self, k: &str, obj: &Value, delay: f64, fetch: Fetch) -> bool {
        let g = generation(obj);
        if observed(obj) == Some(g)
            && (holds(obj, "Ready", "True") || holds(obj, "Stalled", "True"))
        {
            return false;
        }
        if let Fetch::Waiting(reason, message) = &fetch {
            return self.update(k, |v| {
                mark(v, "Reconciling", "True", "ProgressingWithRetry", message);
                mark(v, "FetchFailed", "True", reason, message);
                mark(v, "Ready", "False", reason, message);
            });
        }
        let timer = format!("source:{k}@{g}");
        if !self.timers.contains_key(&timer) {
            self.start_timer(timer, delay);
            let from = observed(obj).unwrap_or(0);
            let message = format!("processing object: new generation {from} -> {g}");
            return self.update(k, |v| {
                mark(v, "Reconciling", "True", "Progressing", &message);
                mark(v, "Ready", "Unknown", "Progressing", &message);
            });
        }
        if !self.due(&timer) {
            return false;
        }
        let kind = kind_of(obj).to_lowercase();
        let place = format!(
            "{}/{}",
            text(obj, "/metadata/namespace"),
            text(obj, "/metadata/name")
        );
        self.update(k, |v| match fetch {
            Fetch::Artifact {
                revision,
                reason,
                message,
            } => {
                v["status"]["observedGeneration"] = json!(g);
                v["status"]["artifact"] = json!({
                    "revision": revision,
                    "digest": format!("sha256:{}", digest(&revision)),
                    "path": format!("{kind}/{place}/{}.tar.gz", digest(&revision)),
                    "url": format!("http://source-controller.flux-system.svc.cluster.local./{kind}/{place}/{}.tar.gz", digest(&revision)),
                });
                unmark(v, "Reconciling");
                unmark(v, "FetchFailed");
                unmark(v, "Stalled");
                mark(v, "ArtifactInStorage", "True", reason, &message);
                mark(v, "Ready", "True", reason, &message);
            }
            Fetch::Failed(reason, message) => {
                mark(v, "Reconciling", "True", "ProgressingWithRetry", &message);
                mark(v, "FetchFailed", "True", reason, &message);
                mark(v, "Ready", "False", reason, &message);
            }
            Fetch::Stalled(reason, message) => {
                v["status"]["observedGeneration"] = json!(g);
                unmark(v, "Reconciling");
                mark(v, "FetchFailed", "True", reason, &message);
                mark(v, "Stalled", "True", reason, &message);
                mark(v, "Ready", "False", reason, &message);
            }
            Fetch::Waiting(..) => {}
        })
    }

    fn release_ready(&self, namespace: &str, name: &str) -> bool {
        self.objects
            .get(&format!(
                "helm.toolkit.fluxcd.io/HelmRelease/{namespace}/{name}"
            ))
            .is_some_and(|o| {
                holds(&o.value, "Ready", "True") && observed(&o.value) == Some(generation(&o.value))
            })
    }

    /// The HelmChart of a release's chart template (helm-controller
    /// `internal/reconcile/helmchart_template.go`), applied when it differs.
    fn chart_template(&mut self, hr: &Value) -> Result<String, (&'static str, String)> {
        let (name, ns) = (text(hr, "/metadata/name"), text(hr, "/metadata/namespace"));
        let spec = hr.pointer("/spec/chart/spec").cloned().unwrap_or(json!({}));
        let source_ns = spec
            .pointer("/sourceRef/namespace")
            .and_then(Value::as_str)
            .unwrap_or(ns)
            .to_string();
        let interval = spec
            .get("interval")
            .or_else(|| hr.pointer("/spec/interval"))
            .cloned()
            .unwrap_or(json!("10m"));
        let mut chart_spec = json!({
            "chart": spec.get("chart").cloned().unwrap_or(json!("")),
            "sourceRef": {"kind": text(&spec, "/sourceRef/kind"), "name": text(&spec, "/sourceRef/name")},
            "interval": interval,
            "reconcileStrategy": spec.get("reconcileStrategy").cloned().unwrap_or(json!("ChartVersion")),
        });
        if let Some(v) = spec.get("version") {
            chart_spec["version"] = v.clone();
        }
        let chart = json!({"apiVersion": SOURCE_API, "kind": "HelmChart",
            "metadata": {"name": format!("{ns}-{name}"), "namespace": source_ns,
                "labels": {"helm.toolkit.fluxcd.io/name": name, "helm.toolkit.fluxcd.io/namespace": ns}},
            "spec": chart_spec});
        let r = ObjectRef::of(&chart);
        let k = key(&r);
        let same = self
            .objects
            .get(&k)
            .is_some_and(|o| o.value.get("spec") == chart.get("spec"));
        if !same {
            self.apply(&chart, MANAGER, true).map_err(|e| {
                let detail = match e {
                    Error::Api { message, .. } => message,
                    other => other.to_string(),
                };
                (
                    "ArtifactFailed",
                    format!("could not get Source object: {detail}"),
                )
            })?;
        }
        Ok(k)
    }

    /// The source a release's chart comes from: its HelmChart, or `spec.chartRef`.
    fn release_source(&mut self, hr: &Value) -> Result<String, (&'static str, String)> {
        let template = hr.pointer("/spec/chart").is_some();
        let reference = hr.pointer("/spec/chartRef");
        match (template, reference) {
            (true, None) => self.chart_template(hr),
            (false, Some(c)) => {
                let kind = text(c, "/kind");
                let name = text(c, "/name");
                let ns = match text(c, "/namespace") {
                    "" => text(hr, "/metadata/namespace"),
                    n => n,
                };
                let k = format!("source.toolkit.fluxcd.io/{kind}/{ns}/{name}");
                if self.objects.contains_key(&k) {
                    Ok(k)
                } else {
                    Err((
                        "ArtifactFailed",
                        format!(
                            "could not get Source object: {}.source.toolkit.fluxcd.io \"{name}\" not found",
                            kind.to_lowercase() + "s"
                        ),
                    ))
                }
            }
            _ => Err((
                "InvalidChartReference",
                "invalid Chart reference".to_string(),
            )),
        }
    }

    /// helm-controller's isReady of a source: why it cannot be used yet.
    fn source_not_ready(source: &Value) -> Option<String> {
        let kind = kind_of(source);
        let place = format!(
            "{kind} '{}/{}'",
            text(source, "/metadata/namespace"),
            text(source, "/metadata/name")
        );
        let g = generation(source);
        if observed(source) != Some(g) {
            let message = if holds(source, "Ready", "False") {
                text(condition(source, "Ready")?, "/message").to_string()
            } else {
                "latest generation of object has not been reconciled".to_string()
            };
            return Some(format!("{place} is not ready: {message}"));
        }
        if holds(source, "Stalled", "True") {
            let message = condition(source, "Stalled").map_or("", |c| text(c, "/message"));
            return Some(format!("{place} is not ready: {message}"));
        }
        if source.pointer("/status/artifact").is_none() {
            return Some(format!("{place} is not ready: does not have an artifact"));
        }
        None
    }

    /// The chart a ready source holds.
    fn chart_of(&self, source: &Value) -> Option<Arc<Chart>> {
        match kind_of(source) {
            "OCIRepository" => {
                let url = text(source, "/spec/url");
                let (repo, name) = url.rsplit_once('/')?;
                let tag = text(source, "/status/artifact/revision")
                    .split('@')
                    .next()?;
                self.find_chart(repo, name, tag).ok().cloned()
            }
            _ => {
                let ns = text(source, "/metadata/namespace");
                let repo = self.objects.get(&format!(
                    "source.toolkit.fluxcd.io/HelmRepository/{ns}/{}",
                    text(source, "/spec/sourceRef/name")
                ))?;
                self.find_chart(
                    text(&repo.value, "/spec/url"),
                    text(source, "/spec/chart"),
                    text(source, "/status/artifact/revision"),
                )
                .ok()
                .cloned()
            }
        }
    }

    /// helm-controller's reconcile of a HelmRelease.
    fn release(&mut self, k: &str, r: &ObjectRef, obj: &Value) -> bool {
        let g = generation(obj);
        let ns = r.namespace.clone().unwrap_or_default();
        if let Some(message) = self
            .failing
            .get(&format!("HelmRelease/{ns}/{}", r.name))
            .cloned()
        {
            return self.update(k, |v| {
                v["status"]["observedGeneration"] = json!(g);
                unmark(v, "Reconciling");
                mark(v, "Stalled", "True", "BuildFailed", &message);
                mark(v, "Ready", "False", "BuildFailed", &message);
            });
        }
        // `reconcile.fluxcd.io/resetAt` equal to `requestedAt` (what `flux reconcile
        // helmrelease --reset` sets) clears the failures: the release is tried
        // again (helm-controller `api/v2/annotations.go`, ShouldHandleResetRequest).
        let reset = text(obj, "/metadata/annotations/reconcile.fluxcd.io~1resetAt");
        if !reset.is_empty()
            && reset
                == text(
                    obj,
                    "/metadata/annotations/reconcile.fluxcd.io~1requestedAt",
                )
            && text(obj, "/status/lastHandledResetAt") != reset
        {
            let reset = reset.to_string();
            for t in [format!("helm:{k}@{g}"), format!("helmwait:{k}@{g}")] {
                self.timers.remove(&t);
            }
            self.applied.remove(&format!("helm:{k}@{g}"));
            return self.update(k, |v| {
                v["status"]["lastHandledResetAt"] = json!(reset);
                v["status"]["lastHandledReconcileAt"] = json!(reset);
                unmark(v, "Stalled");
            });
        }
        if holds(obj, "Stalled", "True")
            && condition(obj, "Stalled").and_then(|c| c.get("observedGeneration"))
                == Some(&json!(g))
            || observed(obj) == Some(g) && holds(obj, "Ready", "True")
        {
            return false;
        }
        let waiting: Vec<String> = obj
            .pointer("/spec/dependsOn")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let name = text(d, "/name");
                let dep_ns = match text(d, "/namespace") {
                    "" => ns.as_str(),
                    n => n,
                };
                (!self.release_ready(dep_ns, name))
                    .then(|| format!("dependency '{dep_ns}/{name}' is not ready"))
            })
            .collect();
        if let Some(first) = waiting.first() {
            return self.update(k, |v| {
                mark(
                    v,
                    "Reconciling",
                    "True",
                    "Progressing",
                    "Fulfilling prerequisites",
                );
                mark(v, "Ready", "False", "DependencyNotReady", first);
            });
        }
        let source_key = match self.release_source(obj) {
            Ok(s) => s,
            Err((reason, message)) => {
                let stalls = reason == "InvalidChartReference";
                return self.update(k, |v| {
                    if stalls {
                        unmark(v, "Reconciling");
                        mark(v, "Stalled", "True", reason, &message);
                    } else {
                        mark(
                            v,
                            "Reconciling",
                            "True",
                            "Progressing",
                            "Fulfilling prerequisites",
                        );
                    }
                    mark(v, "Ready", "False", reason, &message);
                });
            }
        };
        let Some(source) = self.objects.get(&source_key).map(|o| o.value.clone()) else {
            return false;
        };
        if let Some(message) = Self::source_not_ready(&source) {
            return self.update(k, |v| {
                mark(
                    v,
                    "Reconciling",
                    "True",
                    "Progressing",
                    "Fulfilling prerequisites",
                );
                mark(v, "Ready", "False", "SourceNotReady", &message);
            });
        }
        let Some(chart) = self.chart_of(&source) else {
            return self.update(k, |v| {
                mark(
                    v,
                    "Ready",
                    "False",
                    "ArtifactFailed",
                    "Source not ready: artifact not found. Retrying in 5s",
                );
            });
        };
        let (release, release_ns) = release_of(obj);
        let history = obj
            .pointer("/status/history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (action, past) = if history.is_empty() {
            ("install", "Install")
        } else {
            ("upgrade", "Upgrade")
        };
        let failed = |detail: &str| {
            format!(
                "Helm {action} failed for release {release_ns}/{release} with chart {}@{}: {}",
                chart.name,
                chart.version,
                detail.trim()
            )
        };
        let values = obj.pointer("/spec/values").cloned().unwrap_or(json!({}));
        let timer = format!("helm:{k}@{g}");
        // Checked before each attempt starts (a new generation is a new attempt).
        if !self.timers.contains_key(&timer)
            && let Err(e) = check_values(&chart, &values)
        {
            let message = failed(&e);
            return self.update(k, |v| {
                mark(v, "Reconciling", "True", "ProgressingWithRetry", &message);
                mark(v, "Released", "False", &format!("{past}Failed"), &message);
                mark(v, "Ready", "False", &format!("{past}Failed"), &message);
            });
        }
        let timeout = [
            format!("/spec/{action}/timeout"),
            "/spec/timeout".to_string(),
        ]
        .iter()
        .find_map(|p| obj.pointer(p).and_then(Value::as_str).and_then(seconds))
        .unwrap_or(DEFAULT_TIMEOUT);
        if !self.timers.contains_key(&timer) {
            let delay = self.latency().helmrelease;
            self.start_timer(timer, delay);
            let running = format!(
                "Running '{action}' action with timeout of {}",
                go_duration(timeout)
            );
            return self.update(k, |v| {
                v["status"]["lastAttemptedGeneration"] = json!(g);
                v["status"]["lastAttemptedRevision"] = json!(chart.version);
                v["status"]["lastAttemptedReleaseAction"] = json!(action);
                v["status"]["storageNamespace"] = json!(ns);
                mark(v, "Reconciling", "True", "Progressing", &running);
                mark(v, "Ready", "Unknown", "Progressing", &running);
            });
        }
        if !self.due(&timer) {
            return false;
        }
        let applied_mark = format!("helm:{k}@{g}");
        let mut changed = false;
        if !self.applied.contains(&applied_mark) {
            match self.install(&chart, &release, &release_ns) {
                Ok((done, touched)) => {
                    changed |= touched;
                    if !done {
                        return changed;
                    }
                    self.applied.insert(applied_mark);
                    self.start_timer(format!("helmwait:{k}@{g}"), timeout);
                    changed = true;
                }
                Err(detail) => {
                    // Helm stored the release before it created the objects, so the
                    // failure counts; with no remediation retries (the default) the
                    // release stalls until its spec changes or a reset is requested.
                    let message = failed(&detail);
                    return self.update(k, |v| {
                        unmark(v, "Reconciling");
                        mark(v, "Released", "False", &format!("{past}Failed"), &message);
                        mark(v, "Ready", "False", &format!("{past}Failed"), &message);
                        mark(
                            v,
                            "Stalled",
                            "True",
                            "RetriesExceeded",
                            &format!("Failed to {action} after 1 attempt(s)"),
                        );
                    }) || changed;
                }
            }
        }
        match self.unready_workload(&chart, &release_ns) {
            Some(what) if self.due(&format!("helmwait:{k}@{g}")) => {
                let message = failed(&format!("{what}: context deadline exceeded"));
                self.update(k, |v| {
                    unmark(v, "Reconciling");
                    mark(v, "Released", "False", &format!("{past}Failed"), &message);
                    mark(v, "Ready", "False", &format!("{past}Failed"), &message);
                    mark(
                        v,
                        "Stalled",
                        "True",
                        "RetriesExceeded",
                        &format!("Failed to {action} after 1 attempt(s)"),
                    );
                }) || changed
            }
            Some(_) => changed,
            None => {
                let number = history.len() + 1;
                let message = format!(
                    "Helm {action} succeeded for release {release_ns}/{release}.v{number} with chart {}@{}",
                    chart.name, chart.version
                );
                let snapshot = json!({"name": release, "namespace": release_ns, "version": number,
                    "status": "deployed", "chartName": chart.name, "chartVersion": chart.version,
                    "configDigest": format!("sha256:{}", digest(&values.to_string()))});
                self.update(k, |v| {
                    let mut all = vec![snapshot];
                    all.extend(history);
                    v["status"]["history"] = json!(all);
                    v["status"]["observedGeneration"] = json!(g);
                    unmark(v, "Reconciling");
                    unmark(v, "Stalled");
                    mark(v, "Released", "True", &format!("{past}Succeeded"), &message);
                    mark(v, "Ready", "True", &format!("{past}Succeeded"), &message);
                }) || changed
            }
        }
    }

    /// Helm applies the chart: CRDs first, the rest once their kinds are served.
    /// `Ok((done, changed))`; `Err` with the API server's refusal.
    fn install(
        &mut self,
        chart: &Chart,
        release: &str,
        namespace: &str,
    ) -> Result<(bool, bool), String> {
        let mut ordered: Vec<Value> = chart.objects.clone();
        ordered.sort_by_key(|o| u8::from(kind_of(o) != "CustomResourceDefinition"));
        let mut changed = false;
        for mut o in ordered {
            let r = ObjectRef::of(&o);
            if r.kind != "CustomResourceDefinition" && self.discover(&r).is_none() {
                // A kind of the chart's own CRDs, not served yet: Helm waits for them.
                return Ok((false, changed));
            }
            if self.discover(&r).is_some_and(|(namespaced, _)| namespaced) && r.namespace.is_none()
            {
                o["metadata"]["namespace"] = json!(namespace);
            }
            // Helm's ownership marks (pkg/action: the release-name and -namespace
            // annotations and the managed-by label it checks before adopting).
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
            o["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(release);
            o["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(namespace);
            let k = key(&ObjectRef::of(&o));
            let before = self.objects.get(&k).map(|x| x.value.clone());
            let refused = |e: Error| match e {
                Error::Api { message, .. } => message,
                other => other.to_string(),
            };
            if let Some(e) = self.admission(&o) {
                return Err(refused(e));
            }
            let after = self.apply(&o, MANAGER, true).map_err(refused)?;
            changed |= before.as_ref() != Some(&after);
        }
        Ok((true, changed))
    }

    /// The first of the release's workloads that has not rolled out, as Helm's wait
    /// sees it.
    fn unready_workload(&self, chart: &Chart, namespace: &str) -> Option<String> {
        chart
            .objects
            .iter()
            .filter(|o| matches!(kind_of(o), "Deployment" | "DaemonSet" | "StatefulSet"))
            .find_map(|o| {
                let mut r = ObjectRef::of(o);
                if r.namespace.is_none() {
                    r.namespace = Some(namespace.to_string());
                }
                let current = self.objects.get(&key(&r)).map(|x| &x.value);
                let verdict =
                    Condition::Rollout(r.clone()).evaluate(&[current.into_iter().collect()]);
                match verdict {
                    Verdict::Met(_) => None,
                    Verdict::Missing(m) | Verdict::Failed(Error::Failed { message: m, .. }) => {
                        Some(format!("resource {} not ready: {m}", r))
                    }
                    Verdict::Failed(e) => Some(e.to_string()),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_as_go_does() {
        assert_eq!(seconds("5m"), Some(300.0));
        assert_eq!(seconds("1h30m"), Some(5400.0));
        assert_eq!(seconds("5x"), None);
        assert_eq!(go_duration(300.0), "5m0s");
        assert_eq!(go_duration(42.0), "42s");
    }

    /// helm-controller `api/v2` GetReleaseName: `[targetNamespace-]name` unless
    /// `releaseName` is set.
    #[test]
    fn the_release_name_follows_helm_controller() {
        let hr = |spec: Value| json!({"metadata": {"name": "metallb", "namespace": "flux-system"}, "spec": spec});
        assert_eq!(
            release_of(&hr(json!({}))),
            ("metallb".into(), "flux-system".into())
        );
        assert_eq!(
            release_of(&hr(json!({"targetNamespace": "metallb-system"}))),
            ("metallb-system-metallb".into(), "metallb-system".into())
        );
        assert_eq!(
            release_of(&hr(
                json!({"releaseName": "lb", "targetNamespace": "metallb-system"})
            )),
            ("lb".into(), "metallb-system".into())
        );
    }
}
