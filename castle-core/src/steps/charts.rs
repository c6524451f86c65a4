//! Components as Flux installs them: a chart's source (`HelmRepository`, or
//! `OCIRepository` for `oci://`) and its `HelmRelease`, and the handover of every Flux
//! object Castle applies to the Flux that later reads the same objects from Git.
//!
//! Field names follow Flux's API: source-controller `api/v1/helmrepository_types.go`
//! (`spec.url`, `spec.interval`) and `ocirepository_types.go` (`spec.url`, `spec.ref.tag`,
//! `spec.layerSelector{mediaType, operation: copy}`); helm-controller
//! `api/v2/helmrelease_types.go` (`spec.chart.spec{chart, version, sourceRef}`,
//! `spec.chartRef{kind, name}`, `spec.interval`, `spec.values`).

use std::time::Duration;

use castle_kube::{ClusterApi, ObjectRef, apply_object};
use serde_json::{Value, json};

use super::fail;
use crate::config::Release;
use crate::engine::StepCtx;
use crate::error::StepError;

/// The field manager of every Flux object Castle applies (the Flux install, chart
/// sources and releases, the GitRepository and Kustomization): kustomize-controller's
/// own (its `main.go` controllerName). When Flux later applies the same object from
/// Git it applies as this manager, forcing ownership (fluxcd/pkg
/// `ssa/manager_apply.go`), so it owns every field Castle set and a field Git leaves
/// out goes away: nothing Castle set lingers to differ from Git.
pub(crate) const HANDOVER_MANAGER: &str = "kustomize-controller";

/// The label kustomize-controller sets on everything it applies (`SetOwnerLabels`,
/// group `kustomize.toolkit.fluxcd.io`).
const FLUX_OWNER: &str = "kustomize.toolkit.fluxcd.io/name";
const FLUX_OWNER_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// How often Flux looks at the source and the release again.
const SOURCE_INTERVAL: &str = "1h";
const RELEASE_INTERVAL: &str = "10m";

/// The HelmRelease of a release.
pub(crate) fn release_ref(r: &Release) -> ObjectRef {
    ObjectRef::new(
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        Some(&r.namespace),
        &r.name,
    )
}

/// `metallb 0.15.2 from https://metallb.github.io/metallb`.
pub(crate) fn describe(r: &Release) -> String {
    format!(
        "{} {} from {}",
        r.chart.name,
        r.chart.version.as_deref().unwrap_or("(no version)"),
        r.chart.repo
    )
}

/// The source and HelmRelease of a release, in the order Flux needs them.
pub(crate) fn release_objects(r: &Release) -> Vec<Value> {
    let version = r.chart.version.clone().unwrap_or_default();
    let meta = json!({"name": r.name, "namespace": r.namespace});
    let (source, chart) = if r.chart.is_oci() {
        (
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository", "metadata": meta,
                "spec": {"interval": SOURCE_INTERVAL,
                    "url": format!("{}/{}", r.chart.repo.trim_end_matches('/'), r.chart.name),
                    "ref": {"tag": version},
                    // The chart's own layer, as helm-controller loads it.
                    "layerSelector": {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "operation": "copy"}}}),
            json!({"chartRef": {"kind": "OCIRepository", "name": r.name}}),
        )
    } else {
        (
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository", "metadata": meta,
                "spec": {"interval": SOURCE_INTERVAL, "url": r.chart.repo}}),
            json!({"chart": {"spec": {"chart": r.chart.name, "version": version,
                "sourceRef": {"kind": "HelmRepository", "name": r.name}}}}),
        )
    };
    let mut spec = chart;
    spec["interval"] = json!(RELEASE_INTERVAL);
    if !r.values.is_empty() {
        spec["values"] = Value::Object(r.values.clone());
    }
    vec![
        source,
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": meta, "spec": spec}),
    ]
}

/// The Flux Kustomization that applies an object from Git, when one does.
fn flux_owner(obj: &Value) -> Option<String> {
    let labels = obj.pointer("/metadata/labels")?;
    let name = labels.get(FLUX_OWNER)?.as_str()?;
    let ns = labels
        .get(FLUX_OWNER_NAMESPACE)
        .and_then(Value::as_str)
        .unwrap_or("flux-system");
    Some(format!("{ns}/{name}"))
}

/// Why a HelmRelease has stalled, when it has.
fn stalled(obj: &Value) -> Option<String> {
    let c = obj
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")?;
    Some(c["message"].as_str().unwrap_or("Stalled").to_string())
}

/// Applies Flux objects as [`HANDOVER_MANAGER`]. One that a Flux Kustomization
/// already applies from Git is Flux's: Castle leaves it alone and says so, rather
/// than undo what Git says until Flux's next reconcile.
pub(crate) async fn apply_handover(
    step: &StepCtx,
    cluster: &dyn ClusterApi,
    objects: &[Value],
    wait: Duration,
) -> Result<(), StepError> {
    for o in objects {
        let r = ObjectRef::of(o);
        let existing = step
            .guard(async { cluster.get(&r).await.map_err(fail(format!("reading {r}"))) })
            .await?;
        if let Some(owner) = existing.as_ref().and_then(flux_owner) {
            step.progress(format!(
                "{r}: Flux's since the handover (Kustomization {owner}): left to Flux; change it in Git"
            ));
            continue;
        }
        let mut o = o.clone();
        if let Some(why) = existing.as_ref().and_then(stalled) {
            // A release that failed stays failed until its spec changes or a reset
            // is requested (helm-controller `api/v2/annotations.go`): a new run asks
            // for one, as `flux reconcile helmrelease --reset` does.
            let token = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| "castle".into());
            o["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] = json!(token);
            o["metadata"]["annotations"]["reconcile.fluxcd.io/resetAt"] = json!(token);
            step.progress(format!("{r} had stalled ({why}): requesting a reset"));
        }
        let o = &o;
        step.guard(async {
            apply_object(cluster, HANDOVER_MANAGER, o, wait)
                .await
                .map(|_| ())
                .map_err(fail(format!("applying {r}")))
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Chart;

    fn release(repo: &str) -> Release {
        Release {
            name: "metallb".into(),
            namespace: "metallb-system".into(),
            chart: Chart {
                repo: repo.into(),
                name: "metallb".into(),
                version: Some("0.15.2".into()),
                release: None,
                namespace: None,
            },
            values: serde_json::from_value(json!({"speaker": {"logLevel": "info"}}))
                .unwrap_or_default(),
        }
    }

    /// The shapes of Flux's own docs: a HelmRepository and `spec.chart.spec` for an
    /// https repository; an OCIRepository with the chart layer and `spec.chartRef`
    /// for an OCI one (helm-controller `api/v2/helmrelease_types.go`: exactly one of
    /// `chart` and `chartRef`).
    #[test]
    fn a_release_is_a_source_and_a_helm_release() {
        let https = release_objects(&release("https://metallb.github.io/metallb"));
        assert_eq!(https[0]["kind"], "HelmRepository");
        assert_eq!(https[0]["spec"]["url"], "https://metallb.github.io/metallb");
        assert_eq!(https[1]["spec"]["chart"]["spec"]["version"], "0.15.2");
        assert_eq!(
            https[1]["spec"]["chart"]["spec"]["sourceRef"],
            json!({"kind": "HelmRepository", "name": "metallb"})
        );
        assert_eq!(https[1]["spec"]["values"]["speaker"]["logLevel"], "info");
        assert!(https[1]["spec"].get("chartRef").is_none());

        let oci = release_objects(&release("oci://ghcr.io/metallb/charts"));
        assert_eq!(oci[0]["kind"], "OCIRepository");
        assert_eq!(
            oci[0]["spec"]["url"],
            "oci://ghcr.io/metallb/charts/metallb"
        );
        assert_eq!(oci[0]["spec"]["ref"]["tag"], "0.15.2");
        assert_eq!(oci[0]["spec"]["layerSelector"]["operation"], "copy");
        assert_eq!(
            oci[1]["spec"]["chartRef"],
            json!({"kind": "OCIRepository", "name": "metallb"})
        );
        assert!(oci[1]["spec"].get("chart").is_none());
    }
}
