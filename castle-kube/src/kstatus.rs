//! Readiness of an object by kstatus rules, as Flux reports it.

use serde_json::Value;

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Ready=True for the current generation.
    Current,
    /// Still working; the message says on what.
    InProgress(String),
    /// Stalled=True, or Ready=False for a reason waiting does not heal.
    Failed(String),
    /// Being deleted.
    Terminating,
    /// `spec.suspend: true`: never becomes ready on its own.
    Suspended,
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn is_true(c: Option<&Value>) -> bool {
    c.and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

fn message(c: Option<&Value>) -> String {
    c.and_then(|c| c.get("message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The Ready condition when it speaks for the current generation: its own
/// `observedGeneration` (Flux sets one on every condition, fluxcd/pkg
/// `runtime/conditions`) equals `metadata.generation`, or, where conditions carry
/// none, the status's does (or is absent, as kstatus reads it).
fn current_ready(obj: &Value) -> Option<&Value> {
    let ready = condition(obj, "Ready")?;
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let seen = ready
        .get("observedGeneration")
        .and_then(Value::as_i64)
        .or_else(|| {
            obj.pointer("/status/observedGeneration")
                .and_then(Value::as_i64)
        });
    match (generation, seen) {
        (Some(g), Some(s)) if g != s => None,
        _ => Some(ready),
    }
}

/// `; Ready=False Reason: message` for a Ready=False of the current generation,
/// so that a wait shows the controller's own words while it keeps trying.
fn ready_note(obj: &Value) -> String {
    match current_ready(obj) {
        Some(c)
            if c.get("status").and_then(Value::as_str) == Some("False")
                && !message(Some(c)).is_empty() =>
        {
            let reason = c.get("reason").and_then(Value::as_str).unwrap_or_default();
            format!("; Ready=False {reason}: {}", message(Some(c)))
        }
        _ => String::new(),
    }
}

/// kstatus order: deletion, observedGeneration, Reconciling, Stalled, Ready; a
/// Ready=False of the current generation whose reason does not heal by waiting
/// ([`does_not_heal`]) is a failure first, where kstatus would call it in progress
/// (helm-controller keeps `Reconciling=True` and the old `observedGeneration` while
/// it retries a release whose chart cannot be found).
pub fn status(obj: &Value) -> Status {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return Status::Terminating;
    }
    if obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return Status::Suspended;
    }
    // A Stalled object is judged by its Stalled condition, in kstatus order.
    if let Some(c) = current_ready(obj)
        && c.get("status").and_then(Value::as_str) == Some("False")
        && !is_true(condition(obj, "Stalled"))
    {
        let reason = c.get("reason").and_then(Value::as_str).unwrap_or_default();
        let text = message(Some(c));
        if does_not_heal(reason, &text) {
            return Status::Failed(format!("{reason}: {text}"));
        }
    }
    // A status without observedGeneration (External Secrets' stores keep none)
    // counts as observing the current generation, as kstatus reads it (cli-utils
    // `pkg/kstatus/status/generic.go`, checkGeneration: the field defaults to
    // metadata.generation); the Ready condition then decides.
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if let (Some(generation), Some(observed)) = (generation, observed)
        && observed != generation
    {
        return Status::InProgress(format!(
            "generation {generation} not yet observed (at {observed}){}",
            ready_note(obj)
        ));
    }
    if is_true(condition(obj, "Reconciling")) {
        return Status::InProgress(format!(
            "reconciling: {}{}",
            message(condition(obj, "Reconciling")),
            ready_note(obj)
        ));
    }
    if is_true(condition(obj, "Stalled")) {
        let stalled = message(condition(obj, "Stalled"));
        // helm-controller stalls with "Failed to install after 1 attempt(s)"; the
        // release's own failure is in Ready (internal/reconcile/atomic_release.go).
        let note = ready_note(obj);
        return Status::Failed(if note.is_empty() || note.ends_with(&stalled) {
            stalled
        } else {
            format!("{stalled}{note}")
        });
    }
    match condition(obj, "Ready") {
        Some(c) if is_true(Some(c)) => Status::Current,
        Some(c) if c.get("status").and_then(Value::as_str) == Some("False") => {
            Status::InProgress(format!("not ready: {}", message(Some(c))))
        }
        Some(c) => Status::InProgress(format!("not ready: {}", message(Some(c)))),
        None => Status::InProgress("no Ready condition yet".into()),
    }
}

/// Ready=False reasons that mean the object's own content is wrong: waiting does not
/// change it, only a new revision in Git does. From fluxcd/pkg `apis/meta/conditions.go`
/// (BuildFailed, InvalidPath, InvalidURL, InvalidCELExpression, FeatureGateDisabled,
/// UnsupportedConnectionType, InsecureConnectionsDisallowed).
const FAILED_FOR_GOOD: &[&str] = &[
    "BuildFailed",
    "InvalidPath",
    "InvalidURL",
    "InvalidCELExpression",
    "FeatureGateDisabled",
    "UnsupportedConnectionType",
    "InsecureConnectionsDisallowed",
];

/// Reasons that are final only when the message is the API server refusing a manifest
/// (kustomize-controller `internal/controller/kustomization_controller.go` marks any
/// apply error ReconciliationFailed; fluxcd/pkg `ssa/errors/errors.go` words it
/// `Kind/ns/name dry-run failed (Invalid): ...`; helm-controller `api/v2/condition_types.go`
/// has InstallFailed and UpgradeFailed), or a chart refusing its values. A webhook
/// not serving yet or a timeout stays a wait.
const FAILED_IF_REFUSED: &[&str] = &[
    "ReconciliationFailed",
    "InstallFailed",
    "UpgradeFailed",
    "PruneFailed",
];

/// What in a message says the API server refused the manifest itself, or Helm
/// refused the values (helm `pkg/chart/common/util/values.go`: the values against
/// the chart's `values.schema.json`).
const REFUSALS: &[&str] = &[
    "dry-run failed (Invalid)",
    "dry-run failed (BadRequest)",
    " is invalid: ",
    "failed to create typed patch object",
    "field is immutable",
    "illegal base64 data",
    "values don't meet the specifications of the schema(s)",
];

/// helm-controller's `SourceNotReady` (`internal/controller/helmrelease_controller.go`,
/// isReady: `HelmChart 'ns/name' is not ready: <its message>`) repeats the source's
/// failure. These say that the chart itself cannot be had, which waiting does not
/// change: source-controller stalls a HelmChart on an invalid chart reference
/// (`internal/helm/chart/errors.go`, IsPersistentBuildErrorReason: "invalid chart
/// reference", "chart metadata patch error", "values files merge error"), and a
/// registry answers a tag or repository it does not hold with MANIFEST_UNKNOWN or
/// NAME_UNKNOWN (OCI distribution-spec error codes).
const SOURCE_GONE: &[&str] = &[
    "invalid chart reference",
    "chart metadata patch error",
    "values files merge error",
    "MANIFEST_UNKNOWN",
    "NAME_UNKNOWN",
];

/// Whether a Ready=False condition will never turn True by waiting.
pub fn does_not_heal(reason: &str, message: &str) -> bool {
    FAILED_FOR_GOOD.contains(&reason)
        || (FAILED_IF_REFUSED.contains(&reason) && REFUSALS.iter().any(|r| message.contains(r)))
        || (reason == "SourceNotReady" && SOURCE_GONE.iter().any(|r| message.contains(r)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kstatus_rules_apply_in_order() {
        let ready = json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(status(&ready), Status::Current);
        let stale = json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(matches!(status(&stale), Status::InProgress(_)));
        let stalled = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Stalled", "status": "True", "message": "kustomize build failed"}, {"type": "Ready", "status": "False"}]}});
        assert_eq!(
            status(&stalled),
            Status::Failed("kustomize build failed".into())
        );
        let waiting = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "message": "dependency 'flux-system/infra' is not ready"}]}});
        assert_eq!(
            status(&waiting),
            Status::InProgress("not ready: dependency 'flux-system/infra' is not ready".into())
        );
        // Source: fluxcd/pkg ssa/errors/errors.go (the dry-run message) and
        // kustomize-controller's ReconciliationFailed on an apply error.
        let refused = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "ReconciliationFailed", "message": "Deployment/traefik/traefik dry-run failed (Invalid): Deployment.apps \"traefik\" is invalid: spec.template.spec.containers: Required value"}]}});
        assert!(
            matches!(status(&refused), Status::Failed(m) if m.starts_with("ReconciliationFailed: Deployment/traefik/traefik"))
        );
        let webhook = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "ReconciliationFailed", "message": "IPAddressPool/metallb-system/castle dry-run failed (InternalError): Internal error occurred: failed calling webhook"}]}});
        assert!(matches!(status(&webhook), Status::InProgress(_)));
        let build = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "BuildFailed", "message": "kustomization path not found"}]}});
        assert!(matches!(status(&build), Status::Failed(_)));
        let health = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "HealthCheckFailed", "message": "timeout waiting for: [Deployment/web/blog status: 'InProgress']"}]}});
        assert!(matches!(status(&health), Status::InProgress(_)));
        assert_eq!(
            status(&json!({"spec": {"suspend": true}})),
            Status::Suspended
        );
        assert_eq!(
            status(&json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})),
            Status::Terminating
        );
    }

    /// helm-controller keeps `Reconciling=True` and the previous observedGeneration
    /// while it retries (`internal/controller/helmrelease_controller.go`: the status's
    /// observedGeneration is patched only on success), but writes every condition
    /// with the object's generation (fluxcd/pkg `runtime/conditions`). A Ready=False
    /// of this generation that waiting cannot heal is a failure, in the release's
    /// own words; a stale one (an older generation) is not judged.
    #[test]
    fn a_release_that_cannot_be_had_fails_while_helm_controller_retries() {
        let hr = |generation: i64, reason: &str, message: &str| {
            json!({"metadata": {"generation": generation}, "status": {"observedGeneration": 1, "conditions": [
                {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "Fulfilling prerequisites", "observedGeneration": generation},
                {"type": "Ready", "status": "False", "reason": reason, "message": message, "observedGeneration": generation}]}})
        };
        // source-controller `internal/helm/chart/errors.go`: a persistent build error.
        let gone = "HelmChart 'metallb-system/metallb-system-metallb' is not ready: invalid chart reference: failed to get chart version for remote reference: no 'metallb' chart with version matching '9.9.9' found";
        assert_eq!(
            status(&hr(2, "SourceNotReady", gone)),
            Status::Failed(format!("SourceNotReady: {gone}"))
        );
        // helm `pkg/chart/common/util/values.go`: the chart's schema refused the values.
        let values = "Helm install failed for release metallb-system/metallb with chart metallb@0.15.2: values don't meet the specifications of the schema(s) in the following chart(s):\nmetallb:\n- at '/speaker/logLevel': value must be one of 'info'";
        assert!(
            matches!(status(&hr(1, "InstallFailed", values)), Status::Failed(m) if m.starts_with("InstallFailed: Helm install failed"))
        );
        // An index not fetched yet heals: still in progress, with the message.
        let fetching =
            "HelmChart 'a/a-b' is not ready: no artifact available for HelmRepository source 'b'";
        assert_eq!(
            status(&hr(2, "SourceNotReady", fetching)),
            Status::InProgress(format!(
                "generation 2 not yet observed (at 1); Ready=False SourceNotReady: {fetching}"
            ))
        );
        // A Ready=False of generation 1 on an object at generation 2 is stale.
        let mut stale = hr(1, "SourceNotReady", gone);
        stale["metadata"]["generation"] = json!(2);
        assert!(matches!(status(&stale), Status::InProgress(_)));
        // atomic_release.go: RetriesExceeded stalls; Ready holds the install's failure.
        let stalled = json!({"metadata": {"generation": 1}, "status": {"conditions": [
            {"type": "Stalled", "status": "True", "reason": "RetriesExceeded", "message": "Failed to install after 1 attempt(s)", "observedGeneration": 1},
            {"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "Helm install failed for release a/b with chart b@1.0.0: context deadline exceeded", "observedGeneration": 1}]}});
        assert_eq!(
            status(&stalled),
            Status::Failed("Failed to install after 1 attempt(s); Ready=False InstallFailed: Helm install failed for release a/b with chart b@1.0.0: context deadline exceeded".into())
        );
    }

    /// cli-utils `pkg/kstatus/status/generic.go`: an absent observedGeneration
    /// defaults to metadata.generation. External Secrets' stores have none
    /// (`apis/externalsecrets/v1` SecretStoreStatus: conditions, capabilities).
    #[test]
    fn a_status_without_observed_generation_is_judged_by_its_conditions() {
        let store = json!({"metadata": {"generation": 1}, "status": {"capabilities": "ReadWrite", "conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": "store validated"}]}});
        assert_eq!(status(&store), Status::Current);
        let refused = json!({"metadata": {"generation": 1}, "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "InvalidProviderConfig", "message": "unable to create client"}]}});
        assert_eq!(
            status(&refused),
            Status::InProgress("not ready: unable to create client".into())
        );
        assert!(matches!(
            status(&json!({"metadata": {"generation": 1}})),
            Status::InProgress(_)
        ));
    }
}
