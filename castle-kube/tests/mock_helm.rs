//! MockCluster's Flux source- and helm-controller, against the controllers' own
//! conditions, reasons and messages (each test names the source it pins).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use castle_kube::{
    Bundle, CHART_LAYER, Chart, ClusterApi, Condition, Error, Latency, MockCluster, ObjectRef,
    apply_bundle,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(600);
const REPO: &str = "https://metallb.github.io/metallb";

fn metallb_chart(version: &str) -> Chart {
    let labels =
        json!({"app.kubernetes.io/name": "metallb", "app.kubernetes.io/component": "controller"});
    Chart {
        repo: REPO.into(),
        name: "metallb".into(),
        version: version.into(),
        objects: vec![
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "ipaddresspools.metallb.io"},
                "spec": {"group": "metallb.io", "scope": "Namespaced", "names": {"kind": "IPAddressPool", "plural": "ipaddresspools", "singular": "ipaddresspool", "listKind": "IPAddressPoolList"},
                    "versions": [{"name": "v1beta1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "metallb-controller"},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "controller", "image": format!("quay.io/metallb/controller:v{version}")}]}}}}),
        ],
        // A part of the chart's values.schema.json.
        values_schema: Some(json!({"type": "object", "properties": {
            "controller": {"type": "object", "properties": {
                "logLevel": {"type": "string", "enum": ["all", "debug", "info", "warn", "error", "none"]}}},
            "speaker": {"type": "object", "properties": {"enabled": {"type": "boolean"}}}}})),
    }
}

/// A cluster with Flux's controllers (the lab's pinned install.yaml) and the chart
/// catalogue.
async fn flux() -> MockCluster {
    let c = MockCluster::new().with_latency(Latency::lab());
    c.add_node("cp-1");
    c.add_chart(metallb_chart("0.15.2"));
    c.add_chart(metallb_chart("0.15.3"));
    let install = Bundle::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/manifests/flux.yaml"),
        None,
    )
    .unwrap();
    apply_bundle(&c, &install, T).await.unwrap();
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "metallb-system"}}),
        false,
    )
    .await
    .unwrap();
    c
}

fn repository() -> Value {
    json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository", "metadata": {"name": "metallb", "namespace": "metallb-system"},
        "spec": {"interval": "1h", "url": REPO}})
}

fn release(version: &str, values: Value) -> Value {
    json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "metallb", "namespace": "metallb-system"},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": "metallb", "version": version, "sourceRef": {"kind": "HelmRepository", "name": "metallb"}}}, "values": values}})
}

fn hr() -> ObjectRef {
    ObjectRef::new(
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        Some("metallb-system"),
        "metallb",
    )
}

async fn get(c: &MockCluster, r: &ObjectRef) -> Value {
    c.get(r).await.unwrap().unwrap()
}

fn ready(v: &Value) -> (String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    (
        c["reason"].as_str().unwrap().into(),
        c["message"].as_str().unwrap().into(),
    )
}

/// helm-controller: the HelmChart `<namespace>-<name>` from the template
/// (`internal/reconcile/helmchart_template.go`), Ready after the source's fetch, the
/// chart's pull and Helm's install and wait, with `install.go`'s
/// "Helm install succeeded for release %s with chart %s" (`Snapshot.FullReleaseName`
/// `ns/name.vN`, `VersionedChartName` `name@version`) at the object's generation.
#[tokio::test(start_paused = true)]
async fn a_release_is_ready_after_the_modelled_install_and_its_workloads_run() {
    let c = flux().await;
    let start = tokio::time::Instant::now();
    c.apply(&repository(), false).await.unwrap();
    c.apply(
        &release("0.15.2", json!({"controller": {"logLevel": "info"}})),
        false,
    )
    .await
    .unwrap();
    c.wait(&Condition::FluxReady(hr()), T).await.unwrap();
    let took = start.elapsed();
    let lat = Latency::lab();
    // Source 5 s, chart 2 s, install 15 s, then the Deployment's rollout (25 s + its
    // name's spread) before Helm's wait is over.
    assert!(
        took >= Duration::from_secs_f64(lat.source + lat.chart + lat.helmrelease + lat.rollout),
        "{took:?}"
    );
    let v = get(&c, &hr()).await;
    assert_eq!(
        ready(&v),
        (
            "InstallSucceeded".into(),
            "Helm install succeeded for release metallb-system/metallb.v1 with chart metallb@0.15.2".into()
        )
    );
    assert_eq!(
        v["status"]["observedGeneration"],
        v["metadata"]["generation"]
    );
    assert_eq!(v["status"]["history"][0]["chartVersion"], "0.15.2");
    let chart = get(
        &c,
        &ObjectRef::new(
            "source.toolkit.fluxcd.io/v1",
            "HelmChart",
            Some("metallb-system"),
            "metallb-system-metallb",
        ),
    )
    .await;
    assert_eq!(
        chart["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"],
        "metallb"
    );
    assert_eq!(chart["status"]["artifact"]["revision"], "0.15.2");
    // The chart's workload, in the release's namespace, with Helm's ownership marks.
    let d = get(
        &c,
        &ObjectRef::new(
            "apps/v1",
            "Deployment",
            Some("metallb-system"),
            "metallb-controller",
        ),
    )
    .await;
    assert_eq!(
        d["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "metallb"
    );
    assert_eq!(d["status"]["availableReplicas"], 1);
    // Its CRD is served: the chart's kinds can be applied.
    c.wait(
        &Condition::CrdEstablished("ipaddresspools.metallb.io".into()),
        T,
    )
    .await
    .unwrap();

    // A new version is an upgrade, `upgrade.go`'s message, release v2.
    c.apply(&release("0.15.3", json!({})), false).await.unwrap();
    c.wait(&Condition::FluxReady(hr()), T).await.unwrap();
    assert_eq!(
        ready(&get(&c, &hr()).await).1,
        "Helm upgrade succeeded for release metallb-system/metallb.v2 with chart metallb@0.15.3"
    );
}

/// source-controller: an unknown version stalls the HelmChart with
/// `internal/helm/repository/chart_repository.go`'s "no '%s' chart with version
/// matching '%s' found" under BuildError's "invalid chart reference"
/// (`internal/helm/chart/errors.go`, a persistent reason); helm-controller reports
/// it as SourceNotReady, "HelmChart 'ns/name' is not ready: <the Stalled message>"
/// (`helmrelease_controller.go`, isReady). Waiting fails at once with that message.
#[tokio::test(start_paused = true)]
async fn an_unknown_version_or_chart_fails_with_the_controllers_own_words() {
    let c = flux().await;
    c.apply(&repository(), false).await.unwrap();
    c.apply(&release("9.9.9", json!({})), false).await.unwrap();
    let e = c.wait(&Condition::FluxReady(hr()), T).await.unwrap_err();
    let want = "HelmChart 'metallb-system/metallb-system-metallb' is not ready: invalid chart reference: failed to get chart version for remote reference: no 'metallb' chart with version matching '9.9.9' found";
    assert!(
        matches!(&e, Error::Failed { message, .. } if message == &format!("SourceNotReady: {want}")),
        "{e}"
    );
    assert_eq!(
        ready(&get(&c, &hr()).await),
        ("SourceNotReady".into(), want.into())
    );
    let chart = get(
        &c,
        &ObjectRef::new(
            "source.toolkit.fluxcd.io/v1",
            "HelmChart",
            Some("metallb-system"),
            "metallb-system-metallb",
        ),
    )
    .await;
    assert_eq!(ready(&chart).0, "InvalidChartReference");
    assert_eq!(
        chart["status"]["observedGeneration"], 1,
        "a stalling error records the generation (internal/reconcile/reconcile.go)"
    );

    // Helm's `repo.ErrNoChartName`: "no chart name found".
    let mut other = release("1.0.0", json!({}));
    other["spec"]["chart"]["spec"]["chart"] = json!("metallb-typo");
    c.apply(&other, false).await.unwrap();
    let e = c.wait(&Condition::FluxReady(hr()), T).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("failed to get chart version for remote reference: no chart name found"),
        "{e}"
    );
}

/// Helm v4 `pkg/chart/common/util/values.go`: values against the chart's schema,
/// "values don't meet the specifications of the schema(s) in the following
/// chart(s):", then `<chart>:` and one `- at '<pointer>': <message>` per violation
/// (`pkg/cmd/testdata/output/schema-negative.txt`); helm-controller wraps it in
/// `install.go`'s "Helm install failed for release %s/%s with chart %s@%s: %s",
/// reason InstallFailed. Nothing is applied.
#[tokio::test(start_paused = true)]
async fn values_the_chart_schema_refuses_fail_the_install_as_helm_says() {
    let c = flux().await;
    c.apply(&repository(), false).await.unwrap();
    c.apply(
        &release(
            "0.15.2",
            json!({"controller": {"logLevel": "loud"}, "speaker": {"enabled": "yes"}}),
        ),
        false,
    )
    .await
    .unwrap();
    let e = c.wait(&Condition::FluxReady(hr()), T).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("InstallFailed: Helm install failed for release metallb-system/metallb with chart metallb@0.15.2: values don't meet the specifications of the schema(s) in the following chart(s):\nmetallb:\n- at '/controller/logLevel': value must be one of 'all', 'debug', 'info', 'warn', 'error', 'none'\n- at '/speaker/enabled': got string, want boolean"),
        "{text}"
    );
    assert!(
        c.get(&ObjectRef::new(
            "apps/v1",
            "Deployment",
            Some("metallb-system"),
            "metallb-controller"
        ))
        .await
        .unwrap()
        .is_none()
    );
}

/// An OCI chart: an OCIRepository (`source.toolkit.fluxcd.io/v1`, `ref.tag`,
/// `layerSelector` for the chart layer) and `spec.chartRef`. An unknown tag is the
/// registry's MANIFEST_UNKNOWN, which source-controller reports under
/// OCIArtifactPullFailed as "failed to determine artifact digest: ..."
/// (`ocirepository_controller.go`, getRevision) and retries; helm-controller's
/// SourceNotReady repeats it.
#[tokio::test(start_paused = true)]
async fn an_oci_chart_installs_and_an_unknown_tag_is_the_registrys_answer() {
    let c = flux().await;
    let mut chart = metallb_chart("0.15.2");
    chart.repo = "oci://registry.lab.invalid/charts".into();
    c.add_chart(chart);
    let source = |tag: &str| {
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository", "metadata": {"name": "metallb", "namespace": "metallb-system"},
        "spec": {"interval": "1h", "url": "oci://registry.lab.invalid/charts/metallb", "ref": {"tag": tag},
            "layerSelector": {"mediaType": CHART_LAYER, "operation": "copy"}}})
    };
    let oci_release = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "metallb", "namespace": "metallb-system"},
        "spec": {"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "metallb"}}});
    c.apply(&source("0.15.2"), false).await.unwrap();
    c.apply(&oci_release, false).await.unwrap();
    c.wait(&Condition::FluxReady(hr()), T).await.unwrap();
    c.apply(&source("9.9.9"), false).await.unwrap();
    let e = c
        .wait(
            &Condition::FluxReady(ObjectRef::new(
                "source.toolkit.fluxcd.io/v1",
                "OCIRepository",
                Some("metallb-system"),
                "metallb",
            )),
            T,
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("OCIArtifactPullFailed: failed to determine artifact digest: GET https://registry.lab.invalid/v2/charts/metallb/manifests/9.9.9: MANIFEST_UNKNOWN: manifest unknown"),
        "{e}"
    );
}

/// helm-controller `checkDependencies`: "dependency '%s' is not ready" under
/// DependencyNotReady until the release it depends on is Ready.
#[tokio::test(start_paused = true)]
async fn a_release_waits_for_the_releases_it_depends_on() {
    let c = flux().await;
    c.apply(&repository(), false).await.unwrap();
    let mut late = release("0.15.2", json!({}));
    late["metadata"]["name"] = json!("second");
    late["spec"]["dependsOn"] = json!([{"name": "metallb"}]);
    c.apply(&late, false).await.unwrap();
    let second = ObjectRef::new(
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        Some("metallb-system"),
        "second",
    );
    let e = c
        .wait(
            &Condition::FluxReady(second.clone()),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("dependency 'metallb-system/metallb' is not ready"),
        "{e}"
    );
    c.apply(&release("0.15.2", json!({})), false).await.unwrap();
    c.wait(&Condition::FluxReady(second), T).await.unwrap();
}

/// The Flux handover: kustomize-controller applies the same HelmRelease from Git as
/// its own field manager, forcing ownership (fluxcd/pkg `ssa/manager_apply.go`) and
/// labelling it its Kustomization's (`SetOwnerLabels`); an object Castle applied
/// under that manager changes no field and no generation, so nothing is reinstalled.
#[tokio::test(start_paused = true)]
async fn the_same_release_applied_by_flux_changes_nothing() {
    let c = flux().await;
    c.apply_as("kustomize-controller", &repository(), false)
        .await
        .unwrap();
    c.apply_as("kustomize-controller", &release("0.15.2", json!({})), false)
        .await
        .unwrap();
    c.wait(&Condition::FluxReady(hr()), T).await.unwrap();
    let before = get(&c, &hr()).await;
    let mut from_git = release("0.15.2", json!({}));
    from_git["metadata"]["labels"] = json!({"kustomize.toolkit.fluxcd.io/name": "infrastructure", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"});
    c.apply_as("kustomize-controller", &from_git, true)
        .await
        .unwrap();
    let after = get(&c, &hr()).await;
    assert_eq!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    assert_eq!(after["status"], before["status"]);
    // Castle's own manager would have kept fields Git dropped: values Git does not
    // set go with the one manager that set them.
    c.apply_as(
        "kustomize-controller",
        &release("0.15.2", json!({"speaker": {"enabled": true}})),
        true,
    )
    .await
    .unwrap();
    c.apply_as("kustomize-controller", &from_git, true)
        .await
        .unwrap();
    assert!(
        get(&c, &hr()).await["spec"]
            .get("values")
            .is_none_or(|v| v == &json!({}))
    );
}
