//! Readiness of an object by kstatus rules, as Flux reports it.

use serde_json::Value;

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Ready=True for the current generation.
    Current,
    /// Still working; the message says on what.
    InProgress(String),
    /// Stalled=True: it will not get better by waiting.
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

/// kstatus order: deletion, observedGeneration, Reconciling, Stalled, Ready.
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
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if generation.is_some() && observed != generation {
        return Status::InProgress(format!(
            "generation {} not yet observed (at {})",
            generation.unwrap_or_default(),
            observed.map_or("none".into(), |o| o.to_string())
        ));
    }
    if is_true(condition(obj, "Reconciling")) {
        return Status::InProgress(format!(
            "reconciling: {}",
            message(condition(obj, "Reconciling"))
        ));
    }
    if is_true(condition(obj, "Stalled")) {
        return Status::Failed(message(condition(obj, "Stalled")));
    }
    match condition(obj, "Ready") {
        Some(c) if is_true(Some(c)) => Status::Current,
        Some(c) => Status::InProgress(format!("not ready: {}", message(Some(c)))),
        None => Status::InProgress("no Ready condition yet".into()),
    }
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
        assert_eq!(
            status(&json!({"spec": {"suspend": true}})),
            Status::Suspended
        );
        assert_eq!(
            status(&json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})),
            Status::Terminating
        );
    }
}
