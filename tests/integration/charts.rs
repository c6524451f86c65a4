//! Issue 17: components from Helm charts through Flux, and Flux from a pinned release.

use castle_core::castle::{Castle, RunOptions};
use castle_core::events::{Event, Events, Recorder};
use castle_tests::{lab_copy, paused};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn recorder() -> (Recorder, RunOptions) {
    let r = Recorder::new();
    let options = RunOptions {
        events: Events::new().with(Arc::new(r.clone())),
        ..RunOptions::default()
    };
    (r, options)
}

const METALLB_VALUES: &str = "values = { speaker = { logLevel = \"info\" } }";

/// The releases are applied as Flux applies them from Git (kustomize-controller,
/// fluxcd/pkg `ssa/manager_apply.go`), so when the lab's repository brings the same
/// HelmReleases Flux owns every field and the generation does not move; a later run
/// leaves what Flux owns to Flux.
#[tokio::test(start_paused = true)]
async fn the_releases_are_handed_to_flux_without_a_change_and_then_left_to_it() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let summary = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    let world = castle.lab().unwrap().cluster.snapshot();
    let objects = world["objects"].as_array().unwrap();
    for (kind, ns, name) in [
        ("HelmRelease", "metallb-system", "metallb"),
        ("HelmRepository", "metallb-system", "metallb"),
        ("HelmRelease", "external-secrets", "external-secrets"),
        ("HelmRelease", "longhorn-system", "longhorn"),
        ("GitRepository", "flux-system", "flux-system"),
    ] {
        let o = objects
            .iter()
            .find(|o| {
                o["object"]["kind"] == kind
                    && o["object"]["metadata"]["namespace"] == ns
                    && o["object"]["metadata"]["name"] == name
            })
            .unwrap_or_else(|| panic!("{kind} {ns}/{name}"));
        for (field, managers) in o["owners"].as_object().unwrap() {
            assert_eq!(
                managers,
                &serde_json::json!(["kustomize-controller"]),
                "{kind} {ns}/{name}: {field}"
            );
        }
        if kind != "GitRepository" {
            assert_eq!(
                o["object"]["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
                "flux-system",
                "{kind} {ns}/{name}: Flux applied it from Git"
            );
            assert_eq!(
                o["object"]["metadata"]["generation"], 1,
                "{kind} {ns}/{name}"
            );
        }
    }
    let (rec, options) = recorder();
    let again = castle
        .create(RunOptions {
            only: Some(["storage".to_string()].into()),
            ..options
        })
        .await
        .unwrap();
    assert!(
        again.error.is_none(),
        "{:?}",
        again.error.map(|e| e.to_string())
    );
    assert!(
        rec.events().iter().any(|e| matches!(e, Event::StepProgress { step, message, .. }
            if step == "storage" && message.starts_with("HelmRelease longhorn-system/longhorn: Flux's since the handover (Kustomization flux-system/flux-system)"))),
        "{:#?}",
        rec.events()
    );
}

/// Values the chart's schema refuses fail the install with Helm's own words
/// (helm `pkg/chart/common/util/values.go`, wrapped by helm-controller's
/// "Helm install failed for release ..."), at once, not after a timeout.
#[tokio::test(start_paused = true)]
async fn values_the_chart_refuses_fail_the_step_with_helms_message() {
    let (_dir, config) = lab_copy(|t| {
        paused(t).replace(
            METALLB_VALUES,
            "values = { speaker = { logLevel = \"loud\" } }",
        )
    });
    let castle = Castle::open(&config).unwrap();
    let (rec, options) = recorder();
    let summary = castle.create(options).await.unwrap();
    let err = summary.error.expect("networking fails").to_string();
    assert!(
        err.contains("`networking`")
            && err.contains("InstallFailed: Helm install failed for release metallb-system/metallb with chart metallb@0.15.2: values don't meet the specifications of the schema(s) in the following chart(s):\nmetallb:\n- at '/speaker/logLevel': value must be one of 'all', 'debug', 'info', 'warn', 'error', 'none'"),
        "{err}"
    );
    let events = rec.events();
    let at = |step_started: bool| {
        events.iter().find_map(|e| match e {
            Event::StepStarted { step, at_ms, .. } if step_started && step == "networking" => {
                Some(*at_ms)
            }
            Event::StepFailed {
                step,
                at_ms,
                attempts,
                ..
            } if !step_started && step == "networking" => {
                assert_eq!(*attempts, 1, "a refusal is not retried");
                Some(*at_ms)
            }
            _ => None,
        })
    };
    let took = at(false).unwrap() - at(true).unwrap();
    assert!(
        took < 60_000,
        "failed {took} ms (modelled) after it started"
    );
}

/// An unknown chart version: source-controller stalls the HelmChart ("invalid chart
/// reference: ... no 'metallb' chart with version matching '0.15.99' found") and the
/// HelmRelease reports SourceNotReady with it; the step fails with that message.
/// Fixing the version and resuming installs it (a new generation).
#[tokio::test(start_paused = true)]
async fn an_unknown_chart_version_fails_with_flux_s_message_and_a_fix_resumes() {
    let pinned = "name = \"metallb\", version = \"0.15.2\" }";
    let (_dir, config) =
        lab_copy(|t| paused(t).replace(pinned, "name = \"metallb\", version = \"0.15.99\" }"));
    let castle = Castle::open(&config).unwrap();
    let summary = castle.create(RunOptions::default()).await.unwrap();
    let err = summary.error.expect("networking fails").to_string();
    assert!(
        err.contains("SourceNotReady: HelmChart 'metallb-system/metallb-system-metallb' is not ready: invalid chart reference: failed to get chart version for remote reference: no 'metallb' chart with version matching '0.15.99' found"),
        "{err}"
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("version = \"0.15.99\"", "version = \"0.15.2\"");
    std::fs::write(&config, text).unwrap();
    let resumed = Castle::open(&config)
        .unwrap()
        .create(RunOptions {
            resume: true,
            ..RunOptions::default()
        })
        .await
        .unwrap();
    assert!(
        resumed.error.is_none(),
        "{:?}",
        resumed.error.map(|e| e.to_string())
    );
}

fn flux_release_file() -> (String, String) {
    let body = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/lab/manifests/flux.yaml"),
    )
    .unwrap();
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    (body, sha)
}

/// Flux from its release URL, pinned by sha256: the `downloads` step fetches it
/// once, before any VM, into `.castle/downloads/<sha256>.yaml`; a later run reads that
/// copy and sends no request (the server expects exactly one). A wrong pin stops the
/// run before anything is created, naming both digests. (Not on the paused clock:
/// the download is real I/O.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_from_a_pinned_url_is_fetched_once_before_any_vm_and_kept() {
    let (body, sha) = flux_release_file();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2.6.4/install.yaml"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body.clone()))
        .expect(1)
        .mount(&server)
        .await;
    let url = format!("{}/v2.6.4/install.yaml", server.uri());
    let (dir, config) = lab_copy(|t| {
        t.replace("time_scale = 0.02", "time_scale = 0.002")
            .replace(
                "manifest = \"manifests/flux.yaml\"",
                &format!("url = \"{url}\""),
            )
    });
    let castle = Castle::open(&config).unwrap();
    let ids = castle.step_ids().unwrap();
    assert_eq!(ids.first().map(String::as_str), Some("secrets"));
    assert!(ids.contains(&"downloads".to_string()), "{ids:?}");
    let summary = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    let platform = summary
        .report
        .steps
        .iter()
        .find(|s| s.id == "platform")
        .unwrap();
    assert!(
        platform.deps.contains(&"downloads".to_string()),
        "{platform:?}"
    );
    let kept = dir.path().join(format!(".castle/downloads/{sha}.yaml"));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), body);
    let d = castle.destroy(RunOptions::default(), false).await.unwrap();
    assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
    // A new process, a full create: the kept copy, no second request.
    let again = Castle::open(&config)
        .unwrap()
        .create(RunOptions::default())
        .await
        .unwrap();
    assert!(
        again.error.is_none(),
        "{:?}",
        again.error.map(|e| e.to_string())
    );

    let wrong_server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .expect(1)
        .mount(&wrong_server)
        .await;
    let zeros = "0".repeat(64);
    let (wrong_dir, wrong_config) = lab_copy(|t| {
        t.replace("time_scale = 0.02", "time_scale = 0.002")
            .replace(
                "manifest = \"manifests/flux.yaml\"",
                &format!("url = \"{}/install.yaml\"", wrong_server.uri()),
            )
            .replace(&sha, &zeros)
    });
    let castle = Castle::open(&wrong_config).unwrap();
    let summary = castle.create(RunOptions::default()).await.unwrap();
    let err = summary.error.expect("the pin does not match").to_string();
    assert!(
        err.contains("`downloads`")
            && err.contains(&format!("expected {zeros}"))
            && err.contains(&format!("actual {sha}")),
        "{err}"
    );
    let vms = castle_proxmox::ProxmoxApi::list_vms(&castle.lab().unwrap().proxmox)
        .await
        .unwrap();
    assert!(
        vms.iter().all(|v| v.template),
        "no VM before the download is checked"
    );
    assert!(
        !wrong_dir
            .path()
            .join(format!(".castle/downloads/{zeros}.yaml"))
            .exists()
    );
}
