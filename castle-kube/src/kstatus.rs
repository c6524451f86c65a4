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
///
/// A kind kstatus has its own rule for (a Deployment, a Pod, ...) is judged by that
/// rule alone ([`compute`]).
pub fn status(obj: &Value) -> Status {
    if kind_rule(obj).is_some() {
        let c = compute(obj);
        return match c.status {
            Kstatus::Current => Status::Current,
            Kstatus::InProgress => Status::InProgress(c.message),
            Kstatus::Failed => Status::Failed(c.explained()),
            Kstatus::Terminating => Status::Terminating,
        };
    }
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

/// Where an object stands by cli-utils' `status.Compute` (`pkg/kstatus/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kstatus {
    /// Not yet reconciled to what its spec asks.
    InProgress,
    /// Cannot get there without a change.
    Failed,
    /// Reconciled.
    Current,
    /// Being deleted.
    Terminating,
}

/// What [`compute`] found: kstatus's status and message, and the reason and message
/// of the condition kstatus adds (`Reconciling` when in progress, `Stalled` when
/// failed; empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    /// The status.
    pub status: Kstatus,
    /// kstatus's message (`Result.Message`).
    pub message: String,
    /// The reason of the Reconciling or Stalled condition.
    pub reason: String,
    /// That condition's message: for a Deployment past its deadline, the
    /// controller's own words.
    pub detail: String,
}

impl Computed {
    /// The message, and the condition's where it says more (a Deployment's
    /// `Progress deadline exceeded: ReplicaSet "web-5d4f" has timed out progressing.`).
    pub fn explained(&self) -> String {
        if self.detail.is_empty() || self.detail == self.message {
            self.message.clone()
        } else {
            format!("{}: {}", self.message, self.detail)
        }
    }

    fn current(message: impl Into<String>) -> Self {
        Self {
            status: Kstatus::Current,
            message: message.into(),
            reason: String::new(),
            detail: String::new(),
        }
    }

    fn in_progress(reason: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: Kstatus::InProgress,
            detail: message.clone(),
            message,
            reason: reason.into(),
        }
    }

    fn failed(reason: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: Kstatus::Failed,
            detail: message.clone(),
            message,
            reason: reason.into(),
        }
    }
}

/// A condition as kstatus reads it (`BasicCondition`): absent fields are empty.
struct Cond<'a> {
    kind: &'a str,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

fn field<'a>(c: &'a Value, name: &str) -> &'a str {
    c.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn conditions(obj: &Value) -> impl Iterator<Item = Cond<'_>> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| Cond {
            kind: field(c, "type"),
            status: field(c, "status"),
            reason: field(c, "reason"),
            message: field(c, "message"),
        })
}

/// `GetIntField`: an integer at `ptr`, else `default`.
fn int_or(obj: &Value, ptr: &str, default: i64) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(default)
}

/// `GetStringField`: a string at `ptr`, else `default`.
fn str_or<'a>(obj: &'a Value, ptr: &str, default: &'a str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or(default)
}

/// kstatus's status of any object, as cli-utils `status.Compute` computes it:
/// deletion, observedGeneration, Reconciling/Stalled conditions (`generic.go`), then
/// the built-in kind's own rule (`core.go`), else the Ready condition, else Current.
///
/// # Caveats
/// A Pod whose phase kstatus does not know is an error in Go; here it is in
/// progress with reason `UnknownPhase`.
pub fn compute(obj: &Value) -> Computed {
    if let Some(c) = generic(obj) {
        return c;
    }
    if let Some(rule) = kind_rule(obj) {
        return rule(obj);
    }
    for c in conditions(obj).filter(|c| c.kind == "Ready") {
        match c.status {
            "True" => return Computed::current("Resource is Ready"),
            "False" | "Unknown" => return Computed::in_progress(c.reason, c.message),
            _ => {}
        }
    }
    Computed::current("Resource is current")
}

/// kstatus's own rule for the object's kind (`core.go`, legacyTypes), if it has one.
fn kind_rule(obj: &Value) -> Option<fn(&Value) -> Computed> {
    let api_version = str_or(obj, "/apiVersion", "");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    Some(match (group, str_or(obj, "/kind", "")) {
        ("", "Service") => service,
        ("", "Pod") => pod,
        ("", "PersistentVolumeClaim") => pvc,
        ("", "Secret" | "ConfigMap") | ("batch", "CronJob") => {
            |_| Computed::current("Resource is always ready")
        }
        ("apps", "StatefulSet") => statefulset,
        ("apps" | "extensions", "DaemonSet") => daemonset,
        ("apps" | "extensions", "Deployment") => deployment,
        ("apps" | "extensions", "ReplicaSet") => replicaset,
        ("policy", "PodDisruptionBudget") => {
            |_| Computed::current("AllowedDisruptions has been computed.")
        }
        ("batch", "Job") => job,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd,
        _ => return None,
    })
}

/// `generic.go`, checkGenericProperties.
fn generic(obj: &Value) -> Option<Computed> {
    if !str_or(obj, "/metadata/deletionTimestamp", "").is_empty() {
        return Some(Computed {
            status: Kstatus::Terminating,
            message: "Resource scheduled for deletion".into(),
            reason: String::new(),
            detail: String::new(),
        });
    }
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if let (Some(generation), Some(observed)) = (generation, observed)
        && generation != observed
    {
        let kind = str_or(obj, "/kind", "");
        return Some(Computed::in_progress(
            "LatestGenerationNotObserved",
            format!(
                "{kind} generation is {generation}, but latest observed generation is {observed}"
            ),
        ));
    }
    conditions(obj).find_map(|c| match (c.kind, c.status) {
        ("Reconciling", "True") => Some(Computed::in_progress(c.reason, c.message)),
        ("Stalled", "True") => Some(Computed::failed(c.reason, c.message)),
        _ => None,
    })
}

fn in_progress_if(reason: &str, short: bool, message: impl FnOnce() -> String) -> Option<Computed> {
    short.then(|| Computed::in_progress(reason, message()))
}

fn statefulset(obj: &Value) -> Computed {
    if str_or(obj, "/spec/updateStrategy/type", "") == "OnDelete" {
        return Computed::current("StatefulSet is using the ondelete update strategy");
    }
    let spec = int_or(obj, "/spec/replicas", 1);
    let ready = int_or(obj, "/status/readyReplicas", 0);
    let current = int_or(obj, "/status/currentReplicas", 0);
    let updated = int_or(obj, "/status/updatedReplicas", 0);
    let replicas = int_or(obj, "/status/replicas", 0);
    let partition = int_or(obj, "/spec/updateStrategy/rollingUpdate/partition", -1);
    if let Some(c) = in_progress_if("LessReplicas", spec > replicas, || {
        format!("Replicas: {replicas}/{spec}")
    })
    .or_else(|| {
        in_progress_if("LessReady", spec > ready, || {
            format!("Ready: {ready}/{spec}")
        })
    })
    .or_else(|| {
        in_progress_if("ExtraPods", replicas > spec, || {
            format!("Pending termination: {}", replicas - spec)
        })
    }) {
        return c;
    }
    if partition != -1 {
        if updated < spec - partition {
            return Computed::in_progress(
                "PartitionRollout",
                format!("updated: {updated}/{}", spec - partition),
            );
        }
        return Computed::current(format!("Partition rollout complete. updated: {updated}"));
    }
    if spec > current {
        return Computed::in_progress("LessCurrent", format!("current: {current}/{spec}"));
    }
    if str_or(obj, "/status/currentRevision", "") != str_or(obj, "/status/updateRevision", "") {
        return Computed::in_progress(
            "RevisionMismatch",
            "Waiting for updated revision to match current",
        );
    }
    Computed::current(format!(
        "All replicas scheduled as expected. Replicas: {replicas}"
    ))
}

/// The deployment controller sets no Progressing condition without a deadline;
/// the API stores "none" as MaxInt32 (kubernetes `deployment_util.go`).
const NO_PROGRESS_DEADLINE: i64 = i32::MAX as i64;

fn deployment(obj: &Value) -> Computed {
    let mut progressing =
        int_or(obj, "/spec/progressDeadlineSeconds", NO_PROGRESS_DEADLINE) == NO_PROGRESS_DEADLINE;
    let mut available = false;
    for c in conditions(obj) {
        match c.kind {
            "Progressing" if c.reason == "ProgressDeadlineExceeded" => {
                return Computed {
                    detail: c.message.into(),
                    ..Computed::failed(c.reason, "Progress deadline exceeded")
                };
            }
            "Progressing" if c.status == "True" && c.reason == "NewReplicaSetAvailable" => {
                progressing = true;
            }
            "Available" if c.status == "True" => available = true,
            _ => {}
        }
    }
    let spec = int_or(obj, "/spec/replicas", 1);
    let replicas = int_or(obj, "/status/replicas", 0);
    let updated = int_or(obj, "/status/updatedReplicas", 0);
    let ready = int_or(obj, "/status/readyReplicas", 0);
    let avail = int_or(obj, "/status/availableReplicas", 0);
    in_progress_if("LessReplicas", spec > replicas, || {
        format!("Replicas: {replicas}/{spec}")
    })
    .or_else(|| {
        in_progress_if("LessUpdated", spec > updated, || {
            format!("Updated: {updated}/{spec}")
        })
    })
    .or_else(|| {
        in_progress_if("ExtraPods", replicas > spec, || {
            format!("Pending termination: {}", replicas - spec)
        })
    })
    .or_else(|| {
        in_progress_if("LessAvailable", updated > avail, || {
            format!("Available: {avail}/{updated}")
        })
    })
    .or_else(|| {
        in_progress_if("LessReady", spec > ready, || {
            format!("Ready: {ready}/{spec}")
        })
    })
    .or_else(|| {
        in_progress_if("ReplicaSetNotAvailable", !progressing, || {
            "ReplicaSet not Available".into()
        })
    })
    .or_else(|| {
        in_progress_if("DeploymentNotAvailable", !available, || {
            "Deployment not Available".into()
        })
    })
    .unwrap_or_else(|| Computed::current(format!("Deployment is available. Replicas: {replicas}")))
}

fn replicaset(obj: &Value) -> Computed {
    if conditions(obj).any(|c| c.kind == "ReplicaFailure" && c.status == "True") {
        return Computed::in_progress("ReplicaFailure", "Replica Failure condition. Check Pods");
    }
    let spec = int_or(obj, "/spec/replicas", 1);
    let replicas = int_or(obj, "/status/replicas", 0);
    let ready = int_or(obj, "/status/readyReplicas", 0);
    let avail = int_or(obj, "/status/availableReplicas", 0);
    let labelled = int_or(obj, "/status/fullyLabeledReplicas", 0);
    in_progress_if("LessLabelled", spec > labelled, || {
        format!("Labelled: {labelled}/{spec}")
    })
    .or_else(|| {
        in_progress_if("LessAvailable", spec > avail, || {
            format!("Available: {avail}/{spec}")
        })
    })
    .or_else(|| {
        in_progress_if("LessReady", spec > ready, || {
            format!("Ready: {ready}/{spec}")
        })
    })
    .or_else(|| {
        in_progress_if("ExtraPods", replicas > spec, || {
            format!("Pending termination: {}", replicas - spec)
        })
    })
    .unwrap_or_else(|| Computed::current(format!("ReplicaSet is available. Replicas: {replicas}")))
}

fn daemonset(obj: &Value) -> Computed {
    // Once the controller has acted, both fields are set (`core.go`,
    // checkGenerationSet), so their absence means it has not.
    let kind = str_or(obj, "/kind", "");
    if obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .is_none()
    {
        let message = format!("{kind} metadata.generation not found");
        return Computed::in_progress("NoGeneration", message);
    }
    if obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
        .is_none()
    {
        let message = format!("{kind} status.observedGeneration not found");
        return Computed::in_progress("NoObservedGeneration", message);
    }
    let desired = int_or(obj, "/status/desiredNumberScheduled", -1);
    let current = int_or(obj, "/status/currentNumberScheduled", 0);
    let updated = int_or(obj, "/status/updatedNumberScheduled", 0);
    let avail = int_or(obj, "/status/numberAvailable", 0);
    let ready = int_or(obj, "/status/numberReady", 0);
    in_progress_if("NoDesiredNumber", desired == -1, || {
        "Missing .status.desiredNumberScheduled".into()
    })
    .or_else(|| {
        in_progress_if("LessCurrent", desired > current, || {
            format!("Current: {current}/{desired}")
        })
    })
    .or_else(|| {
        in_progress_if("LessUpdated", desired > updated, || {
            format!("Updated: {updated}/{desired}")
        })
    })
    .or_else(|| {
        in_progress_if("LessAvailable", desired > avail, || {
            format!("Available: {avail}/{desired}")
        })
    })
    .or_else(|| {
        in_progress_if("LessReady", desired > ready, || {
            format!("Ready: {ready}/{desired}")
        })
    })
    .unwrap_or_else(|| {
        Computed::current(format!(
            "All replicas scheduled as expected. Replicas: {desired}"
        ))
    })
}

fn pvc(obj: &Value) -> Computed {
    match str_or(obj, "/status/phase", "unknown") {
        "Bound" => Computed::current("PVC is Bound"),
        phase => Computed::in_progress("NotBound", format!("PVC is not Bound. phase: {phase}")),
    }
}

/// How long a pod may stay unscheduled before kstatus calls it unschedulable
/// (`core.go`, ScheduleWindow).
const SCHEDULE_WINDOW_SECS: i64 = 15;

fn pod(obj: &Value) -> Computed {
    match str_or(obj, "/status/phase", "") {
        "Succeeded" => Computed::current("Pod has completed successfully"),
        "Failed" => Computed::current("Pod has completed, but not successfully"),
        "Running" => {
            if conditions(obj).any(|c| c.kind == "Ready" && c.status == "True") {
                return Computed::current("Pod is Ready");
            }
            let crashing: Vec<&str> = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|s| {
                    s.pointer("/state/waiting/reason").and_then(Value::as_str)
                        == Some("CrashLoopBackOff")
                })
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect();
            if crashing.is_empty() {
                Computed::in_progress("PodRunningNotReady", "Pod is running but is not Ready")
            } else {
                Computed::failed(
                    "ContainerCrashLooping",
                    format!("Containers in CrashLoop state: {}", crashing.join(",")),
                )
            }
        }
        "Pending" => {
            let unschedulable = conditions(obj).any(|c| {
                c.kind == "PodScheduled" && c.status == "False" && c.reason == "Unschedulable"
            });
            if !unschedulable {
                return Computed::in_progress("PodPending", "Pod is in the Pending phase");
            }
            // An absent creationTimestamp is Go's zero time: long ago.
            let created = obj
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(unix_seconds)
                .unwrap_or(i64::MIN);
            if now_unix().saturating_sub(SCHEDULE_WINDOW_SECS) < created {
                Computed::in_progress("PodNotScheduled", "Pod has not been scheduled")
            } else {
                Computed::failed("PodUnschedulable", "Pod could not be scheduled")
            }
        }
        "" => Computed::in_progress("PodNotObserved", "Pod phase not available"),
        phase => Computed::in_progress("UnknownPhase", format!("unknown phase {phase}")),
    }
}

fn job(obj: &Value) -> Computed {
    let parallelism = int_or(obj, "/spec/parallelism", 1);
    let completions = int_or(obj, "/spec/completions", parallelism);
    let succeeded = int_or(obj, "/status/succeeded", 0);
    let active = int_or(obj, "/status/active", 0);
    let failed = int_or(obj, "/status/failed", 0);
    let suspended = obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    for c in conditions(obj).filter(|c| c.status == "True") {
        match c.kind {
            "Complete" => {
                return Computed::current(format!(
                    "Job Completed. succeeded: {succeeded}/{completions}"
                ));
            }
            "Failed" => {
                return Computed::failed(
                    "JobFailed",
                    format!("Job Failed. failed: {failed}/{completions}"),
                );
            }
            "Suspended" if suspended => return Computed::current("Job is suspended"),
            _ => {}
        }
    }
    if str_or(obj, "/status/startTime", "").is_empty() {
        return Computed::in_progress("JobNotStarted", "Job not started");
    }
    Computed::current(format!(
        "Job in progress. success:{succeeded}, active: {active}, failed: {failed}"
    ))
}

fn service(obj: &Value) -> Computed {
    if str_or(obj, "/spec/type", "ClusterIP") == "LoadBalancer"
        && str_or(obj, "/spec/clusterIP", "").is_empty()
    {
        return Computed::in_progress(
            "NoIPAssigned",
            "ClusterIP not set. Service type: LoadBalancer",
        );
    }
    Computed::current("Service is ready")
}

fn crd(obj: &Value) -> Computed {
    for c in conditions(obj) {
        match (c.kind, c.status) {
            ("NamesAccepted", "False") => return Computed::failed(c.reason, c.message),
            ("Established", "False") if c.reason != "Installing" => {
                return Computed::failed(c.reason, c.message);
            }
            ("Established", "True") => return Computed::current("CRD is established"),
            _ => {}
        }
    }
    Computed::in_progress("Installing", "Install in progress")
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Seconds since the epoch of a Kubernetes timestamp (`2019-06-04T01:17:13Z`, how
/// metav1.Time is written); `None` for anything else.
fn unix_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm), March-based years.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + s)
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
